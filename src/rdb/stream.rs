//! Stream values (types 15, 19, 21), FORMATS §4.6 and §5.5.
//!
//! The metadata and consumer groups are decoded when the value is opened (they are needed to
//! find the value's end anyway); entries are decoded node by node, on demand.

use std::fmt;

use super::cursor::{Cursor, RStr};
use super::elem::Elem;
use super::error::{DecodeError, DecodeResult};
use super::listpack::ListpackIter;
use super::types::type_id;

/// A stream entry id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl StreamId {
    fn raw(c: &mut Cursor<'_>) -> DecodeResult<StreamId> {
        Ok(StreamId {
            ms: c.u64_be()?,
            seq: c.u64_be()?,
        })
    }
    fn lengths(c: &mut Cursor<'_>) -> DecodeResult<StreamId> {
        Ok(StreamId {
            ms: c.length()?,
            seq: c.length()?,
        })
    }
}

/// One entry of a consumer group's pending entries list.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEntry {
    /// Entry id.
    pub id: StreamId,
    /// Last delivery time, Unix ms.
    pub delivery_time: i64,
    /// Times delivered.
    pub delivery_count: u64,
}

/// A consumer of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct Consumer<'a> {
    /// Consumer name.
    pub name: RStr<'a>,
    /// Last seen time, Unix ms.
    pub seen_time: i64,
    /// Last active time, Unix ms (v3 only).
    pub active_time: Option<i64>,
    /// Ids of pending entries this consumer owns.
    pub pending: Vec<StreamId>,
}

/// A consumer group.
#[derive(Debug, Clone, PartialEq)]
pub struct Group<'a> {
    /// Group name.
    pub name: RStr<'a>,
    /// Last delivered id.
    pub last_id: StreamId,
    /// Entries read (v2+), for lag.
    pub entries_read: Option<u64>,
    /// Pending entries list.
    pub pending: Vec<PendingEntry>,
    /// Consumers.
    pub consumers: Vec<Consumer<'a>>,
}

/// One stream entry, detached from the node it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEntry {
    /// Entry id.
    pub id: StreamId,
    /// Field/value pairs in order.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A decoded stream value.
#[derive(Debug, Clone)]
pub struct StreamValue<'a> {
    nodes: &'a [u8],
    node_count: u64,
    base: u64,
    /// Live entries.
    pub length: u64,
    /// Last id ever added.
    pub last_id: StreamId,
    /// First live id (v2+).
    pub first_id: Option<StreamId>,
    /// Highest deleted id (v2+).
    pub max_deleted_id: Option<StreamId>,
    /// Entries ever added (v2+).
    pub entries_added: Option<u64>,
    /// Consumer groups.
    pub groups: Vec<Group<'a>>,
}

impl<'a> StreamValue<'a> {
    /// Decode a stream of type `t` from the cursor (which is left after the value).
    pub fn parse(c: &mut Cursor<'a>, t: u8) -> DecodeResult<Self> {
        let base = c.offset();
        let start = c.pos();
        let node_count = c.count("stream node count", 2)?;
        for _ in 0..node_count {
            let k = c.offset();
            let key_len = c.skip_string()?;
            if key_len != 16 {
                return Err(DecodeError::invalid(
                    k,
                    format!("stream node key of {key_len} bytes, expected 16"),
                ));
            }
            c.skip_string()?;
        }
        let nodes = &c.data()[start..c.pos()];
        let length = c.length()?;
        let last_id = StreamId::lengths(c)?;
        let (mut first_id, mut max_deleted_id, mut entries_added) = (None, None, None);
        if t != type_id::STREAM_LISTPACKS {
            first_id = Some(StreamId::lengths(c)?);
            max_deleted_id = Some(StreamId::lengths(c)?);
            entries_added = Some(c.length()?);
        }
        let group_count = c.count("consumer group count", 3)?;
        let mut groups = Vec::new();
        for _ in 0..group_count {
            let name = c.string()?;
            let last = StreamId::lengths(c)?;
            let entries_read = if t != type_id::STREAM_LISTPACKS {
                Some(c.length()?)
            } else {
                None
            };
            let pel_n = c.count("group PEL size", 25)?;
            let mut pending = Vec::with_capacity(pel_n.min(1 << 16) as usize);
            for _ in 0..pel_n {
                pending.push(PendingEntry {
                    id: StreamId::raw(c)?,
                    delivery_time: c.i64_le()?,
                    delivery_count: c.length()?,
                });
            }
            let pel_ids: std::collections::HashSet<StreamId> =
                pending.iter().map(|p| p.id).collect();
            let consumer_n = c.count("consumer count", 10)?;
            let mut consumers = Vec::new();
            for _ in 0..consumer_n {
                let name = c.string()?;
                let seen_time = c.i64_le()?;
                let active_time = if t == type_id::STREAM_LISTPACKS_3 {
                    Some(c.i64_le()?)
                } else {
                    None
                };
                let n = c.count("consumer PEL size", 16)?;
                let mut own = Vec::with_capacity(n.min(1 << 16) as usize);
                for _ in 0..n {
                    let at = c.offset();
                    let id = StreamId::raw(c)?;
                    if !pel_ids.contains(&id) {
                        return Err(DecodeError::invalid(
                            at,
                            format!("consumer owns pending id {id} missing from the group PEL"),
                        ));
                    }
                    own.push(id);
                }
                consumers.push(Consumer {
                    name,
                    seen_time,
                    active_time,
                    pending: own,
                });
            }
            groups.push(Group {
                name,
                last_id: last,
                entries_read,
                pending,
                consumers,
            });
        }
        Ok(StreamValue {
            nodes,
            node_count,
            base,
            length,
            last_id,
            first_id,
            max_deleted_id,
            entries_added,
            groups,
        })
    }

    /// The serialized nodes as stored (node count, then each node's key and listpack): the
    /// same bytes in every stream type, so a re-encoder copies them.
    pub fn nodes_raw(&self) -> &'a [u8] {
        self.nodes
    }

    /// Walk the live entries in order, node by node.
    pub fn for_each_entry(
        &self,
        mut f: impl FnMut(StreamEntry) -> DecodeResult<()>,
    ) -> DecodeResult<()> {
        let mut c = Cursor::new(self.nodes, self.base);
        c.length()?;
        let mut live = 0u64;
        for _ in 0..self.node_count {
            let key_at = c.offset();
            let key = c.string()?;
            let mut kc = Cursor::blob(&key, key_at, "stream node key");
            let master = StreamId::raw(&mut kc)?;
            let lp_at = c.offset();
            let lp = c.string()?;
            live += decode_node(&lp, lp_at, master, &mut f)?;
        }
        // `length` is not checked against the live entries: Redis 5.0-era files trimmed with
        // XTRIM can disagree, and Redis itself loads them (corpus: stream_listpacks_1.rdb).
        let _ = live;
        Ok(())
    }
}

fn int(e: Option<DecodeResult<Elem<'_>>>, at: u64, what: &str) -> DecodeResult<i64> {
    match e {
        Some(Ok(el)) => el.as_i64().ok_or_else(|| {
            DecodeError::invalid(at, format!("stream node: {what} is not an integer"))
        }),
        Some(Err(e)) => Err(e),
        None => Err(DecodeError::invalid(
            at,
            format!("stream node ends before {what}"),
        )),
    }
}

fn bytes(e: Option<DecodeResult<Elem<'_>>>, at: u64) -> DecodeResult<Vec<u8>> {
    match e {
        Some(Ok(el)) => Ok(el.to_bytes().into_owned()),
        Some(Err(e)) => Err(e),
        None => Err(DecodeError::invalid(at, "stream node ends inside an entry")),
    }
}

/// Decode one node listpack; returns the number of live entries.
fn decode_node(
    lp: &[u8],
    at: u64,
    master: StreamId,
    f: &mut impl FnMut(StreamEntry) -> DecodeResult<()>,
) -> DecodeResult<u64> {
    let mut it = ListpackIter::new(lp, at)?;
    let count = int(it.next(), at, "count")?;
    let deleted = int(it.next(), at, "deleted count")?;
    let nfields = int(it.next(), at, "master field count")?;
    if count < 0 || deleted < 0 || nfields < 0 || nfields as usize > lp.len() {
        return Err(DecodeError::invalid(at, "stream node: bad master entry"));
    }
    let mut master_fields = Vec::with_capacity(nfields as usize);
    for _ in 0..nfields {
        master_fields.push(bytes(it.next(), at)?);
    }
    if int(it.next(), at, "master terminator")? != 0 {
        return Err(DecodeError::invalid(
            at,
            "stream node: bad master entry terminator",
        ));
    }
    let mut live = 0u64;
    let total = count as u64 + deleted as u64;
    for _ in 0..total {
        let flags = int(it.next(), at, "entry flags")?;
        let ms = int(it.next(), at, "entry ms")?;
        let seq = int(it.next(), at, "entry seq")?;
        let id = StreamId {
            ms: master.ms.wrapping_add(ms as u64),
            seq: master.seq.wrapping_add(seq as u64),
        };
        let same = flags & 2 != 0;
        let n = if same {
            nfields
        } else {
            int(it.next(), at, "entry field count")?
        };
        if n < 0 || n as usize > lp.len() {
            return Err(DecodeError::invalid(at, "stream node: bad field count"));
        }
        let mut fields = Vec::with_capacity(n as usize);
        for i in 0..n as usize {
            let field = match master_fields.get(i) {
                Some(f) if same => f.clone(),
                _ => bytes(it.next(), at)?,
            };
            fields.push((field, bytes(it.next(), at)?));
        }
        int(it.next(), at, "entry lp-count")?;
        if flags & 1 == 0 {
            live += 1;
            f(StreamEntry { id, fields })?;
        }
    }
    match it.next() {
        None => {}
        Some(Err(e)) => return Err(e),
        Some(Ok(_)) => {
            return Err(DecodeError::invalid(
                at,
                "stream node holds more entries than its header counts",
            ));
        }
    }
    if live != count as u64 {
        return Err(DecodeError::invalid(at, "stream node: live count mismatch"));
    }
    Ok(live)
}
