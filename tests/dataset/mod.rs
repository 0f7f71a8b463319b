//! Shared by `tests/corpus.rs` and `tests/expect.rs`: an input decoded with rdbferry's library
//! into plain, normalised values (sets and hashes as ordered maps, scores as `f64`), so that it
//! can be compared with what other tools and real servers say the same file holds.
//!
//! Also a small RESP replay ([`Model::apply`]) for the expected outputs that are commands
//! (rdb-rs `.protocol`, HDT3213/rdb `.aof`, redis-rdb-cli `.resp`): both sides are turned into
//! the same [`Model`], ours by applying each key as the commands would.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rdbferry::input::{Event, Input};
use rdbferry::rdb::stream::StreamId;
use rdbferry::rdb::{Elem, Error as RdbError, KeyRecord, ReadOptions, Record, Value};

/// Raw bytes.
pub type Bytes = Vec<u8>;

/// A decoded value.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Str(Bytes),
    List(Vec<Bytes>),
    Set(BTreeSet<Bytes>),
    ZSet(BTreeMap<Bytes, f64>),
    /// field -> (value, field expiry in Unix ms, 0 = none).
    Hash(BTreeMap<Bytes, (Bytes, i64)>),
    Stream(Stream),
    /// Module name (values are opaque).
    Module(String),
}

impl Val {
    pub fn type_name(&self) -> &'static str {
        match self {
            Val::Str(_) => "string",
            Val::List(_) => "list",
            Val::Set(_) => "set",
            Val::ZSet(_) => "zset",
            Val::Hash(_) => "hash",
            Val::Stream(_) => "stream",
            Val::Module(_) => "module",
        }
    }
}

/// A stream: live entries, last id, consumer groups.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Stream {
    pub entries: Vec<(String, Vec<(Bytes, Bytes)>)>,
    pub last_id: String,
    pub groups: Vec<Group>,
}

/// A consumer group.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: Bytes,
    pub last_id: String,
    /// (entry id, consumer, delivery count), in id order.
    pub pending: Vec<(String, Bytes, u64)>,
    pub consumers: BTreeSet<Bytes>,
}

/// One key as decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub db: u64,
    pub key: Bytes,
    pub expire_ms: Option<i64>,
    pub type_id: u8,
    /// The serialized value as stored (after the key), what DUMP payloads carry.
    pub raw: Bytes,
    /// A collection's elements flat and in file order (see `Coll::stride`); empty otherwise.
    pub flat: Vec<Bytes>,
    pub val: Val,
}

/// Everything decoded from one input.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Keys in file order (duplicates kept).
    pub keys: Vec<Key>,
    /// Function library codes.
    pub functions: Vec<Bytes>,
    /// AOF commands after the RDB part (db, args).
    pub commands: Vec<(u64, Vec<Bytes>)>,
    /// The stored CRC-64 trailer (None before v5 or without an RDB part).
    pub checksum: Option<u64>,
}

fn id(s: StreamId) -> String {
    s.to_string()
}

fn elem(e: &Elem<'_>) -> Bytes {
    e.to_bytes().into_owned()
}

/// Decode one key record fully (every element walked).
pub fn decode_key(k: &KeyRecord<'_>, source: &str) -> Result<Key, RdbError> {
    let err = |e| RdbError::from_decode(source, Some(&k.key), e);
    let value = k.value().map_err(err)?;
    value.validate().map_err(err)?;
    let mut flat = Vec::new();
    let val = match &value {
        Value::String(s) => Val::Str(s.to_vec()),
        Value::BigString(l) => {
            let mut out = Vec::new();
            l.for_each_chunk(&mut |c| {
                out.extend_from_slice(c);
                Ok(())
            })
            .map_err(|e| match e {
                rdbferry::rdb::cursor::StreamError::Decode(e) => err(e),
                rdbferry::rdb::cursor::StreamError::Io(e) => {
                    err(rdbferry::rdb::DecodeError::invalid(l.offset, e.to_string()))
                }
            })?;
            Val::Str(out)
        }
        Value::Module(m) => Val::Module(m.id.name()),
        Value::Stream(s) => {
            let mut entries = Vec::new();
            s.for_each_entry(|e| {
                entries.push((id(e.id), e.fields));
                Ok(())
            })
            .map_err(err)?;
            let groups = s
                .groups
                .iter()
                .map(|g| {
                    let mut owner = BTreeMap::new();
                    for c in &g.consumers {
                        for p in &c.pending {
                            owner.insert(*p, c.name.to_vec());
                        }
                    }
                    let mut pending: Vec<_> = g
                        .pending
                        .iter()
                        .map(|p| {
                            let who = owner.get(&p.id).cloned().unwrap_or_default();
                            (p.id, who, p.delivery_count)
                        })
                        .collect();
                    pending.sort();
                    Group {
                        name: g.name.to_vec(),
                        last_id: id(g.last_id),
                        pending: pending.into_iter().map(|(i, w, n)| (id(i), w, n)).collect(),
                        consumers: g.consumers.iter().map(|c| c.name.to_vec()).collect(),
                    }
                })
                .collect();
            Val::Stream(Stream {
                entries,
                last_id: id(s.last_id),
                groups,
            })
        }
        Value::Coll(c) => {
            let elems: Vec<Elem<'_>> = c.elements().collect::<Result<_, _>>().map_err(err)?;
            let stride = c.stride() as usize;
            flat = elems.iter().map(elem).collect();
            match c.data_type().name() {
                "list" => Val::List(elems.iter().map(elem).collect()),
                "set" => Val::Set(elems.iter().map(elem).collect()),
                "zset" => Val::ZSet(
                    elems
                        .chunks(2)
                        .map(|p| (elem(&p[0]), p[1].as_f64().unwrap_or(f64::NAN)))
                        .collect(),
                ),
                "hash" => Val::Hash(
                    elems
                        .chunks(stride)
                        .map(|t| {
                            let ttl = if stride == 3 {
                                t[2].as_i64().unwrap_or(-1)
                            } else {
                                0
                            };
                            (elem(&t[0]), (elem(&t[1]), ttl))
                        })
                        .collect(),
                ),
                other => panic!("{source}: unexpected collection type {other}"),
            }
        }
    };
    Ok(Key {
        db: k.db,
        key: k.key.to_vec(),
        expire_ms: k.expire_ms,
        type_id: k.type_id,
        raw: k.raw.to_vec(),
        flat,
        val,
    })
}

/// Decode an input (RDB, AOF, appendonlydir) with `Input::walk`, every value in full.
pub fn decode_path(path: &Path) -> Result<Decoded, rdbferry::error::Error> {
    let name = path.to_string_lossy().into_owned();
    let input = Input::open(&name)?;
    let mut out = Decoded::default();
    input.walk(&ReadOptions::default(), &mut |ev, _pos| {
        match ev {
            Event::Rdb(Record::Key(k)) => out.keys.push(decode_key(k, &name)?),
            Event::Rdb(Record::Function { code }) => out.functions.push(code.to_vec()),
            Event::Rdb(Record::Eof { checksum }) => out.checksum = *checksum,
            Event::Rdb(_) => {}
            Event::Command { db, args } => out
                .commands
                .push((db, args.iter().map(|a| a.to_vec()).collect())),
        }
        Ok(())
    })?;
    Ok(out)
}

/// Printable form of bytes for messages.
pub fn show(b: &[u8]) -> String {
    let mut s = String::new();
    for &c in b.iter().take(120) {
        match c {
            0x20..=0x7e if c != b'\\' => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    if b.len() > 120 {
        s.push_str("...");
    }
    s
}

/// The first `n` chars of `s`.
pub fn prefix(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Parse a float the way Redis prints them (`inf`, `-inf`, decimal).
pub fn parse_score(s: &str) -> f64 {
    match s {
        "inf" | "+inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        _ => s.parse().unwrap_or_else(|_| panic!("not a score: {s:?}")),
    }
}

/// The data set that a sequence of commands (or of our keys) builds, last write wins.
#[derive(Debug, Default, PartialEq)]
pub struct Model {
    /// (db, key) -> (value, expiry).
    pub keys: BTreeMap<(u64, Bytes), (Val, Option<i64>)>,
    /// Keys restored from an opaque payload (RESTORE): only their presence is known.
    pub opaque: BTreeSet<(u64, Bytes)>,
}

impl Model {
    /// Apply one of our keys as the RESP writers do: SET replaces, the others add to what is
    /// there (redis-rdb-cli does not DEL before re-creating a duplicate key).
    pub fn add_key(&mut self, k: &Key) {
        let id = (k.db, k.key.clone());
        let merged = match (self.keys.remove(&id), &k.val) {
            (Some((Val::List(mut a), _)), Val::List(b)) => {
                a.extend(b.iter().cloned());
                Val::List(a)
            }
            (Some((Val::Set(mut a), _)), Val::Set(b)) => {
                a.extend(b.iter().cloned());
                Val::Set(a)
            }
            (Some((Val::ZSet(mut a), _)), Val::ZSet(b)) => {
                a.extend(b.iter().map(|(m, s)| (m.clone(), *s)));
                Val::ZSet(a)
            }
            (Some((Val::Hash(mut a), _)), Val::Hash(b)) => {
                a.extend(b.iter().map(|(f, v)| (f.clone(), v.clone())));
                Val::Hash(a)
            }
            (_, v) => v.clone(),
        };
        let exp = k.expire_ms;
        self.keys.insert(id, (merged, exp));
    }

    /// Apply a command. Returns false for a command the model does not know.
    pub fn apply(&mut self, db: u64, args: &[Bytes]) -> bool {
        let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
        let key = || (db, args[1].clone());
        let text = |i: usize| String::from_utf8_lossy(&args[i]).into_owned();
        match name.as_str() {
            "SELECT" | "FUNCTION" | "MULTI" | "EXEC" => {}
            "SET" => {
                self.keys.insert(key(), (Val::Str(args[2].clone()), None));
            }
            "RPUSH" => {
                let e = self
                    .keys
                    .entry(key())
                    .or_insert((Val::List(Vec::new()), None));
                if let Val::List(l) = &mut e.0 {
                    l.extend(args[2..].iter().cloned());
                }
            }
            "SADD" => {
                let e = self
                    .keys
                    .entry(key())
                    .or_insert((Val::Set(BTreeSet::new()), None));
                if let Val::Set(s) = &mut e.0 {
                    s.extend(args[2..].iter().cloned());
                }
            }
            "ZADD" => {
                let e = self
                    .keys
                    .entry(key())
                    .or_insert((Val::ZSet(BTreeMap::new()), None));
                if let Val::ZSet(z) = &mut e.0 {
                    for p in args[2..].chunks(2) {
                        z.insert(p[1].clone(), parse_score(&String::from_utf8_lossy(&p[0])));
                    }
                }
            }
            "HSET" | "HMSET" => {
                let e = self
                    .keys
                    .entry(key())
                    .or_insert((Val::Hash(BTreeMap::new()), None));
                if let Val::Hash(h) = &mut e.0 {
                    for p in args[2..].chunks(2) {
                        h.insert(p[0].clone(), (p[1].clone(), 0));
                    }
                }
            }
            "PEXPIREAT" | "EXPIREAT" => {
                let mut t: i64 = text(2).parse().expect("expire time");
                if name == "EXPIREAT" {
                    t *= 1000;
                }
                if let Some(e) = self.keys.get_mut(&key()) {
                    e.1 = Some(t);
                }
            }
            // HPEXPIREAT key ms FIELDS n f...; HPERSIST key FIELDS n f...
            "HPEXPIREAT" | "HPERSIST" => {
                let (at, rest) = if name == "HPERSIST" {
                    (0, 4)
                } else {
                    (text(2).parse().expect("field expire time"), 5)
                };
                if let Some((Val::Hash(h), _)) = self.keys.get_mut(&key()) {
                    for f in &args[rest..] {
                        if let Some(v) = h.get_mut(f) {
                            v.1 = at;
                        }
                    }
                }
            }
            "RESTORE" => {
                self.opaque.insert(key());
            }
            _ => return false,
        }
        true
    }
}

/// Where two values differ, in words (first few differences of each kind).
pub fn describe_diff(want: &Val, got: &Val) -> String {
    fn few<I: Iterator<Item = String>>(what: &str, it: I) -> Option<String> {
        let v: Vec<String> = it.collect();
        if v.is_empty() {
            return None;
        }
        let more = if v.len() > 5 {
            format!(" (+{} more)", v.len() - 5)
        } else {
            String::new()
        };
        Some(format!("{what}: {}{more}", v[..v.len().min(5)].join(", ")))
    }
    fn maps<V: PartialEq + std::fmt::Debug>(
        a: &BTreeMap<Bytes, V>,
        b: &BTreeMap<Bytes, V>,
    ) -> Vec<String> {
        let q = |k: &Bytes| format!("\"{}\"", show(k));
        [
            few("missing", a.keys().filter(|k| !b.contains_key(*k)).map(q)),
            few("extra", b.keys().filter(|k| !a.contains_key(*k)).map(q)),
            few(
                "different",
                a.iter()
                    .filter_map(|(k, v)| Some((k, v, b.get(k)?)))
                    .filter(|(_, v, w)| v != w)
                    .map(|(k, v, w)| format!("\"{}\" {v:?} vs ours {w:?}", show(k))),
            ),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
    let parts: Vec<String> = match (want, got) {
        (Val::Str(a), Val::Str(b)) => vec![format!("\"{}\" vs ours \"{}\"", show(a), show(b))],
        (Val::List(a), Val::List(b)) => {
            let mut v = vec![format!("{} elements vs ours {}", a.len(), b.len())];
            if let Some(i) = a.iter().zip(b).position(|(x, y)| x != y) {
                v.push(format!(
                    "first difference at #{i}: \"{}\" vs ours \"{}\"",
                    show(&a[i]),
                    show(&b[i])
                ));
            }
            v
        }
        (Val::Set(a), Val::Set(b)) => {
            let q = |k: &Bytes| format!("\"{}\"", show(k));
            [
                few("missing", a.difference(b).map(q)),
                few("extra", b.difference(a).map(q)),
            ]
            .into_iter()
            .flatten()
            .collect()
        }
        (Val::ZSet(a), Val::ZSet(b)) => maps(a, b),
        (Val::Hash(a), Val::Hash(b)) => maps(a, b),
        (Val::Stream(a), Val::Stream(b)) => {
            let mut v = Vec::new();
            if a.entries.len() != b.entries.len() {
                v.push(format!(
                    "{} entries vs ours {}",
                    a.entries.len(),
                    b.entries.len()
                ));
            }
            if let Some(i) = a.entries.iter().zip(&b.entries).position(|(x, y)| x != y) {
                v.push(format!(
                    "entry #{i}: {} vs ours {}",
                    a.entries[i].0, b.entries[i].0
                ));
            }
            if a.last_id != b.last_id {
                v.push(format!("last id {} vs ours {}", a.last_id, b.last_id));
            }
            if a.groups.len() != b.groups.len() {
                v.push(format!(
                    "{} groups vs ours {}",
                    a.groups.len(),
                    b.groups.len()
                ));
            }
            for (x, y) in a.groups.iter().zip(&b.groups) {
                if x != y {
                    v.push(prefix(
                        &format!("group \"{}\": {x:?} vs ours {y:?}", show(&x.name)),
                        600,
                    ));
                }
            }
            v
        }
        (a, b) => vec![format!("type {} vs ours {}", a.type_name(), b.type_name())],
    };
    format!("{} differs: {}", want.type_name(), parts.join("; "))
}

/// A string of our JSON lines: text, or `{"base64": ...}`.
fn json_bytes(j: &serde_json::Value) -> Bytes {
    use base64::Engine;
    match j {
        serde_json::Value::String(s) => s.as_bytes().to_vec(),
        _ => base64::engine::general_purpose::STANDARD
            .decode(j["base64"].as_str().expect("string or {base64}"))
            .expect("base64"),
    }
}

fn json_val(ty: &str, v: &serde_json::Value) -> Val {
    let arr = |j: &serde_json::Value| j.as_array().cloned().unwrap_or_default();
    match ty {
        "string" => Val::Str(json_bytes(v)),
        "list" => Val::List(arr(v).iter().map(json_bytes).collect()),
        "set" => Val::Set(arr(v).iter().map(json_bytes).collect()),
        "zset" => Val::ZSet(
            arr(v)
                .iter()
                .map(|p| {
                    let s = match &p[1] {
                        serde_json::Value::String(s) => parse_score(s),
                        n => n.as_f64().expect("score"),
                    };
                    (json_bytes(&p[0]), s)
                })
                .collect(),
        ),
        "hash" => Val::Hash(
            arr(v)
                .iter()
                .map(|t| {
                    let exp = t.get(2).and_then(|x| x.as_i64()).unwrap_or(0);
                    (json_bytes(&t[0]), (json_bytes(&t[1]), exp))
                })
                .collect(),
        ),
        "stream" => Val::Stream(Stream {
            entries: arr(&v["entries"])
                .iter()
                .map(|e| {
                    let fields = arr(&e["fields"])
                        .iter()
                        .map(|p| (json_bytes(&p[0]), json_bytes(&p[1])))
                        .collect();
                    (e["id"].as_str().expect("id").to_string(), fields)
                })
                .collect(),
            last_id: v["last_id"].as_str().expect("last_id").to_string(),
            groups: arr(&v["groups"])
                .iter()
                .map(|g| Group {
                    name: json_bytes(&g["name"]),
                    last_id: g["last_id"].as_str().expect("group last_id").to_string(),
                    pending: arr(&g["pending"])
                        .iter()
                        .map(|p| {
                            (
                                p["id"].as_str().expect("pending id").to_string(),
                                p.get("consumer").map(json_bytes).unwrap_or_default(),
                                p["delivery_count"].as_u64().expect("delivery_count"),
                            )
                        })
                        .collect(),
                    consumers: arr(&g["consumers"])
                        .iter()
                        .map(|c| json_bytes(&c["name"]))
                        .collect(),
                })
                .collect(),
        }),
        "module" => Val::Module(v["module"].as_str().expect("module").to_string()),
        t => panic!("unknown type {t} in our JSON lines"),
    }
}

/// Decode an input through `rdbferry convert --format jsonl` (the binary), parsing its output
/// back: what a user of the JSON lines sees. Only keys, values, TTLs and functions are filled.
pub fn decode_via_jsonl(path: &Path) -> Result<Decoded, String> {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_rdbferry"))
        .arg("convert")
        .arg(path)
        .args(["--format", "jsonl", "-q"])
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    let mut out = Decoded::default();
    for line in o.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let j: serde_json::Value = serde_json::from_slice(line).map_err(|e| e.to_string())?;
        if let Some(code) = j.get("function") {
            out.functions.push(json_bytes(code));
        } else if let Some(cmd) = j.get("command") {
            let args = cmd
                .as_array()
                .expect("args")
                .iter()
                .map(json_bytes)
                .collect();
            out.commands.push((j["db"].as_u64().expect("db"), args));
        } else {
            let ty = j["type"].as_str().expect("type");
            out.keys.push(Key {
                db: j["db"].as_u64().expect("db"),
                key: json_bytes(&j["key"]),
                expire_ms: j.get("expire_at_ms").and_then(|x| x.as_i64()),
                type_id: 0,
                raw: Vec::new(),
                flat: Vec::new(),
                val: json_val(ty, &j["value"]),
            });
        }
    }
    Ok(out)
}
