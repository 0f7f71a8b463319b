//! One key's check: what the source says it is ([`Check`]: target db and name, type, TTL,
//! size, stream metadata), the commands that read the same from the target (its head), and
//! how the replies are judged.

use std::collections::BTreeMap;

use super::DiffKind;
use crate::net::{Pipe, Version as Caps};
use crate::rdb::DataType;
use crate::rdb::stream::{StreamId, StreamValue};
use crate::resp::Reply;
use crate::text::excerpt;
use crate::time::now_ms;

/// Expected stream metadata.
#[derive(Debug)]
pub(crate) struct GroupExp {
    pub(crate) name: Vec<u8>,
    pub(crate) last_id: StreamId,
    pub(crate) pending: u64,
    pub(crate) min: Option<StreamId>,
    pub(crate) max: Option<StreamId>,
    pub(crate) consumers: BTreeMap<Vec<u8>, u64>,
}

#[derive(Debug)]
pub(crate) struct StreamMeta {
    pub(crate) last_id: StreamId,
    pub(crate) groups: Vec<GroupExp>,
}

impl StreamMeta {
    pub(crate) fn of(s: &StreamValue<'_>) -> StreamMeta {
        let groups = s
            .groups
            .iter()
            .map(|g| GroupExp {
                name: g.name.to_vec(),
                last_id: g.last_id,
                pending: g.pending.len() as u64,
                min: g.pending.iter().map(|p| p.id).min(),
                max: g.pending.iter().map(|p| p.id).max(),
                consumers: g
                    .consumers
                    .iter()
                    .filter(|c| !c.pending.is_empty())
                    .map(|c| (c.name.to_vec(), c.pending.len() as u64))
                    .collect(),
            })
            .collect();
        StreamMeta {
            last_id: s.last_id,
            groups,
        }
    }
}

/// One key to compare.
#[derive(Debug)]
pub(crate) struct Check {
    pub(crate) src_db: u64,
    pub(crate) src_key: Vec<u8>,
    pub(crate) db: u64,
    pub(crate) key: Vec<u8>,
    pub(crate) expire_ms: Option<i64>,
    pub(crate) ty: DataType,
    /// Module type name, for module values.
    pub(crate) module: Option<String>,
    pub(crate) stream: Option<StreamMeta>,
    /// Whether the head asks for the size (not for a string read whole with `GET`).
    pub(crate) sized: bool,
}

/// What the head replies said.
pub(crate) struct Head {
    /// Present with the right type: the value can be compared.
    pub(crate) comparable: bool,
    pub(crate) size: Option<i64>,
}

pub(crate) fn reply_text(r: &Reply) -> String {
    match r {
        Reply::Simple(b) | Reply::Bulk(b) | Reply::Error(b) => String::from_utf8_lossy(b).into(),
        Reply::Integer(i) => i.to_string(),
        Reply::Nil => "nil".into(),
        other => format!("{other:?}"),
    }
}

/// Flat RESP2 key/value array (XINFO) as pairs.
pub(crate) fn kv(r: &Reply) -> Vec<(String, &Reply)> {
    match r {
        Reply::Array(a) => a
            .chunks(2)
            .filter_map(|p| match p {
                [k, v] => Some((reply_text(k), v)),
                _ => None,
            })
            .collect(),
        Reply::Map(m) => m.iter().map(|(k, v)| (reply_text(k), v)).collect(),
        _ => Vec::new(),
    }
}

pub(crate) fn field<'r>(pairs: &[(String, &'r Reply)], name: &str) -> Option<&'r Reply> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
}

pub(crate) fn show_ttl(ms: Option<i64>) -> String {
    match ms {
        None => "none".into(),
        Some(ms) => format!("expire at {ms} ms"),
    }
}

impl Check {
    pub(crate) fn type_name(&self) -> String {
        match &self.module {
            Some(m) => m.clone(),
            None => self.ty.name().to_string(),
        }
    }

    /// The head: the TTL (`-2` also says the key is missing), `TYPE` for module values only
    /// (other types show a mismatch as a `WRONGTYPE` error on their own commands, which saves a
    /// command per key), the size, and stream metadata.
    pub(crate) fn push_head(&self, p: &mut Pipe, caps: Caps) {
        let k = self.key.as_slice();
        if caps.has_pexpiretime() {
            p.push(&[b"PEXPIRETIME", k]);
        } else {
            p.push(&[b"PTTL", k]);
        }
        if self.module.is_some() {
            p.push(&[b"TYPE", k]);
            return;
        }
        let size: &[u8] = match self.ty {
            DataType::String => b"STRLEN",
            DataType::List => b"LLEN",
            DataType::Set => b"SCARD",
            DataType::ZSet => b"ZCARD",
            DataType::Hash => b"HLEN",
            DataType::Stream | DataType::Module => b"XLEN",
        };
        if self.sized {
            p.push(&[size, k]);
        }
        if let Some(m) = &self.stream {
            p.push(&[b"XINFO", b"STREAM", k]);
            p.push(&[b"XINFO", b"GROUPS", k]);
            for g in &m.groups {
                p.push(&[b"XPENDING", k, &g.name]);
            }
        }
    }

    pub(crate) fn head_len(&self) -> usize {
        if self.module.is_some() {
            return 2;
        }
        1 + usize::from(self.sized)
            + self
                .stream
                .as_ref()
                .map(|m| 2 + m.groups.len())
                .unwrap_or(0)
    }

    /// Read the head replies (`all` are every reply of the key, head and chunk, searched for
    /// `WRONGTYPE`); differences go to `out` as (kind, detail).
    pub(crate) fn eval_head(
        &self,
        r: &[Reply],
        all: &[Reply],
        caps: Caps,
        tol: i64,
        out: &mut Vec<(DiffKind, String)>,
    ) -> std::result::Result<Head, String> {
        let none = Head {
            comparable: false,
            size: None,
        };
        if let Some(Reply::Integer(-2)) = r.first() {
            out.push((DiffKind::Missing, String::new()));
            return Ok(none);
        }
        let want = self.type_name();
        let wrongtype = all
            .iter()
            .any(|x| matches!(x, Reply::Error(e) if e.starts_with(b"WRONGTYPE")));
        if wrongtype {
            // The actual type is looked up at the end, for the listed differences only.
            out.push((
                DiffKind::Type,
                format!("expected {want}, found another type"),
            ));
            return Ok(none);
        }
        if self.module.is_some() {
            let ty = r.get(1).map(reply_text).unwrap_or_default();
            if ty != want {
                out.push((DiffKind::Type, format!("expected {want}, found {ty}")));
                return Ok(none);
            }
        }
        let now = now_ms();
        let found = match r.first() {
            Some(Reply::Integer(-1)) => None,
            Some(Reply::Integer(t)) if caps.has_pexpiretime() => Some(*t),
            Some(Reply::Integer(t)) => Some(now + *t),
            other => {
                return Err(format!(
                    "TTL: {}",
                    other.map(reply_text).unwrap_or_default()
                ));
            }
        };
        let ttl_ok = match (self.expire_ms, found) {
            (None, None) => true,
            (Some(a), Some(b)) => (a - b).abs() <= tol,
            _ => false,
        };
        if !ttl_ok {
            out.push((
                DiffKind::Ttl,
                format!(
                    "expected {}, found {}",
                    show_ttl(self.expire_ms),
                    show_ttl(found)
                ),
            ));
        }
        let size = match r.get(1) {
            _ if !self.sized || self.module.is_some() => None,
            Some(Reply::Integer(n)) => Some(*n),
            Some(Reply::Error(e)) => return Err(String::from_utf8_lossy(e).into_owned()),
            _ => None,
        };
        if let Some(m) = &self.stream
            && let Some(d) = eval_stream_meta(m, &r[1 + usize::from(self.sized)..])
        {
            out.push((DiffKind::Value, d));
        }
        Ok(Head {
            comparable: true,
            size,
        })
    }
}

pub(crate) fn parse_id(r: Option<&Reply>) -> Option<String> {
    match r? {
        Reply::Bulk(b) | Reply::Simple(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

pub(crate) fn eval_stream_meta(m: &StreamMeta, r: &[Reply]) -> Option<String> {
    let info = kv(r.first()?);
    let last = parse_id(field(&info, "last-generated-id"));
    if last.as_deref() != Some(&m.last_id.to_string()) {
        return Some(format!(
            "stream last id: expected {}, found {}",
            m.last_id,
            last.unwrap_or_else(|| "none".into())
        ));
    }
    let groups: Vec<Vec<(String, &Reply)>> = match r.get(1) {
        Some(Reply::Array(a)) => a.iter().map(kv).collect(),
        other => {
            return Some(format!(
                "XINFO GROUPS: {}",
                other.map(reply_text).unwrap_or_default()
            ));
        }
    };
    if groups.len() != m.groups.len() {
        return Some(format!(
            "consumer groups: expected {}, found {}",
            m.groups.len(),
            groups.len()
        ));
    }
    for (i, g) in m.groups.iter().enumerate() {
        let name = excerpt(&g.name);
        let Some(t) = groups
            .iter()
            .find(|t| field(t, "name").and_then(Reply::as_bytes) == Some(&g.name[..]))
        else {
            return Some(format!("consumer group {name} missing"));
        };
        let last = parse_id(field(t, "last-delivered-id"));
        if last.as_deref() != Some(&g.last_id.to_string()) {
            return Some(format!(
                "group {name} last-delivered-id: expected {}, found {}",
                g.last_id,
                last.unwrap_or_default()
            ));
        }
        let pending = match field(t, "pending") {
            Some(Reply::Integer(n)) => *n,
            _ => -1,
        };
        if pending != g.pending as i64 {
            return Some(format!(
                "group {name} pending: expected {}, found {pending}",
                g.pending
            ));
        }
        // XPENDING summary: [count, min id, max id, [[consumer, count], ...]].
        let Some(Reply::Array(x)) = r.get(2 + i) else {
            return Some(format!(
                "XPENDING for group {name}: {}",
                r.get(2 + i).map(reply_text).unwrap_or_default()
            ));
        };
        let min = parse_id(x.get(1));
        let max = parse_id(x.get(2));
        if min != g.min.map(|i| i.to_string()) || max != g.max.map(|i| i.to_string()) {
            return Some(format!(
                "group {name} pending ids: expected {:?}..{:?}, found {min:?}..{max:?}",
                g.min.map(|i| i.to_string()),
                g.max.map(|i| i.to_string())
            ));
        }
        let mut found = BTreeMap::new();
        if let Some(Reply::Array(cs)) = x.get(3) {
            for c in cs {
                if let Reply::Array(p) = c
                    && let (Some(n), Some(k)) = (p.first().and_then(Reply::as_bytes), p.get(1))
                {
                    let k = reply_text(k).parse::<u64>().unwrap_or(0);
                    found.insert(n.to_vec(), k);
                }
            }
        }
        if found != g.consumers {
            return Some(format!("group {name}: pending entries per consumer differ"));
        }
    }
    None
}
