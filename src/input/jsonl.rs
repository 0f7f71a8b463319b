//! JSON lines as an input: what `convert --format jsonl` writes ([`crate::sink::jsonl`]) read
//! back, so that convert → edit → import (or verify) round-trips.
//!
//! Lines, as the writer writes them:
//! - keys: `{"db", "key", "type", ["expire_at_ms"], "value"}`, with every value form the writer
//!   has (strings; list and set arrays; zset `[member, score]` pairs with `"inf"`/`"-inf"`;
//!   hash `[field, value]` or `[field, value, expire_at_ms]`; streams with entries, metadata,
//!   groups, PEL and consumers; modules as `{module, encver, raw}`). Bytes that are not UTF-8
//!   are `{"base64": "..."}`. Integers are also taken where a string is expected (`5` for `"5"`),
//!   a leniency for hand edits; anything else unknown (a field, a type) is an error.
//! - functions: `{"function", "engine", "library"}`;
//! - AOF commands: `{"db", "command": [...]}`.
//!
//! Design: a key line becomes an RDB [`KeyRecord`] whose value is encoded by
//! [`crate::rdb::encoder`] in the plainest encoding that holds it (string, linked list,
//! hashtable set and hash, binary-score zset, hash metadata when a field has a TTL, stream
//! listpacks, the module payload as written). Every stage downstream (filters, both import
//! paths, verify, convert, check, inspect) then reads JSONL exactly as it reads a dump, with no
//! second value model to keep in step. The cost is one encode per key, and that a line and its
//! encoded value are held whole; the file never is (it is read through `BufRead`, line by
//! line). Records are marked [`KeyRecord::synthetic`].
//!
//! Not here: LRU/LFU data (JSONL does not carry it). Errors name the input, the line and,
//! once it is known, the key.

use std::borrow::Cow;
use std::fmt;
use std::io::BufRead;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::{Event, Walked};
use crate::error::{Error, Result};
use crate::rdb::encoder::{Encoded, value};
use crate::rdb::stream::{Consumer, Group, PendingEntry, StreamEntry, StreamId};
use crate::rdb::types::type_id;
use crate::rdb::{Dialect, KeyRecord, Record, Version};

/// A line that is not what the writer writes: where, and which key when known.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonlError {
    /// The input.
    pub path: String,
    /// 1-based line number.
    pub line: u64,
    /// The key of a key line, when it could be read.
    pub key: Option<Vec<u8>>,
    /// What is wrong.
    pub msg: String,
}

impl fmt::Display for JsonlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: line {}", self.path, self.line)?;
        if let Some(k) = &self.key {
            write!(f, " (key {})", crate::text::quoted(k))?;
        }
        write!(f, ": {}", self.msg)
    }
}

impl std::error::Error for JsonlError {}

/// The version JSONL records claim: their encodings are all Redis RDB 12 knows.
pub const VERSION: Version = Version {
    dialect: Dialect::Redis,
    number: 12,
};

/// One key line, its value encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyLine {
    /// Database.
    pub db: u64,
    /// Key name.
    pub key: Vec<u8>,
    /// Absolute expiry, Unix ms.
    pub expire_ms: Option<i64>,
    /// The value, RDB-encoded.
    pub value: Encoded,
    /// Byte offset of the line in the input.
    pub offset: u64,
}

impl KeyLine {
    /// The line as an RDB key record (marked synthetic).
    pub fn record(&self) -> KeyRecord<'_> {
        KeyRecord {
            db: self.db,
            key: Cow::Borrowed(&self.key),
            expire_ms: self.expire_ms,
            idle: None,
            freq: None,
            type_id: self.value.type_id,
            raw: &self.value.bytes,
            offset: self.offset,
            value_offset: self.offset,
            version: VERSION,
            synthetic: true,
        }
    }
}

/// One line of the input.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// A key and its value.
    Key(KeyLine),
    /// A function library's code.
    Function(Vec<u8>),
    /// An AOF command, applying to `db`.
    Command {
        /// Database.
        db: u64,
        /// Name and arguments.
        args: Vec<Vec<u8>>,
    },
}

/// Pulls [`Line`]s from JSON lines; blank lines are skipped. Stops after the first error.
///
/// ```
/// use rdbferry::input::jsonl::{JsonlReader, Line};
/// let text = b"{\"db\":0,\"key\":\"k\",\"type\":\"list\",\"value\":[\"a\",\"b\"]}\n";
/// let mut r = JsonlReader::new(&text[..], "example.jsonl");
/// let Some(Ok(Line::Key(k))) = r.next() else { panic!() };
/// assert_eq!(k.key, b"k");
/// assert_eq!(k.record().data_type().name(), "list");
/// assert!(r.next().is_none());
/// ```
pub struct JsonlReader<R> {
    r: R,
    name: String,
    line: u64,
    pos: u64,
    buf: Vec<u8>,
    done: bool,
}

impl<R: BufRead> JsonlReader<R> {
    /// Read from `r`; `name` names it in errors.
    pub fn new(r: R, name: &str) -> Self {
        JsonlReader {
            r,
            name: name.to_string(),
            line: 0,
            pos: 0,
            buf: Vec::new(),
            done: false,
        }
    }

    /// Bytes read so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn error(&self, key: Option<Vec<u8>>, msg: impl Into<String>) -> Error {
        Error::Jsonl(JsonlError {
            path: self.name.clone(),
            line: self.line,
            key,
            msg: msg.into(),
        })
    }

    fn next_line(&mut self) -> Result<Option<Line>> {
        loop {
            self.buf.clear();
            let n = self
                .r
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| Error::io(self.name.clone(), e))?;
            if n == 0 {
                return Ok(None);
            }
            let offset = self.pos;
            self.pos += n as u64;
            self.line += 1;
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return self.parse(offset).map(Some);
        }
    }

    fn parse(&self, offset: u64) -> Result<Line> {
        let text = self.buf.trim_ascii_end();
        if !looks_like_jsonl(text) {
            return Err(self.error(None, "not a JSON object"));
        }
        let raw: RawLine<'_> = match serde_json::from_slice(text) {
            Ok(l) => l,
            Err(e) => {
                // Name the key if it can be read before the error.
                let mut key = None;
                let mut d = serde_json::Deserializer::from_slice(text);
                let _ = de::DeserializeSeed::deserialize(FindKey(&mut key), &mut d);
                return Err(self.error(key, json_msg(&e, 0)));
            }
        };
        if let Some(key) = raw.key {
            let key = key.0;
            let fail = |msg: String| self.error(Some(key.clone()), msg);
            if raw.function.is_some() || raw.command.is_some() {
                return Err(fail("a key line has no \"function\" or \"command\"".into()));
            }
            let db = raw.db.ok_or_else(|| fail("missing field `db`".into()))?;
            let kind = raw
                .kind
                .ok_or_else(|| fail("missing field `type`".into()))?;
            let v = raw
                .value
                .ok_or_else(|| fail("missing field `value`".into()))?;
            // Column of the value in the line, so that messages point into the line.
            let col = (v.get().as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
            let value = encode(&kind, v).map_err(|e| {
                fail(match e {
                    Bad::Json(e) => json_msg(&e, col),
                    Bad::Value(m) => m,
                })
            })?;
            return Ok(Line::Key(KeyLine {
                db,
                key,
                expire_ms: raw.expire_at_ms,
                value,
                offset,
            }));
        }
        if raw.kind.is_some() || raw.value.is_some() || raw.expire_at_ms.is_some() {
            return Err(self.error(None, "missing field `key`"));
        }
        match (raw.function, raw.command) {
            (Some(code), None) => Ok(Line::Function(code.0)),
            (None, Some(args)) => {
                let db = raw
                    .db
                    .ok_or_else(|| self.error(None, "missing field `db`"))?;
                if args.is_empty() {
                    return Err(self.error(None, "empty command"));
                }
                Ok(Line::Command {
                    db,
                    args: args.into_iter().map(|a| a.0).collect(),
                })
            }
            _ => Err(self.error(
                None,
                "not a key, function or command line (no \"key\", \"function\" or \"command\")",
            )),
        }
    }
}

impl<R: BufRead> Iterator for JsonlReader<R> {
    type Item = Result<Line>;
    fn next(&mut self) -> Option<Result<Line>> {
        if self.done {
            return None;
        }
        let r = self.next_line();
        if !matches!(r, Ok(Some(_))) {
            self.done = true;
        }
        r.transpose()
    }
}

/// Walk JSON lines as events: keys as RDB key records, functions, AOF commands.
pub fn walk<R: BufRead>(
    name: &str,
    r: R,
    f: &mut dyn FnMut(Event<'_, '_>, u64) -> Result<()>,
) -> Result<Walked> {
    let mut reader = JsonlReader::new(r, name);
    while let Some(line) = reader.next() {
        let line = line?;
        let pos = reader.position();
        match &line {
            Line::Key(k) => f(Event::Rdb(&Record::Key(k.record())), pos)?,
            Line::Function(code) => f(
                Event::Rdb(&Record::Function {
                    code: Cow::Borrowed(code),
                }),
                pos,
            )?,
            Line::Command { db, args } => {
                let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
                f(
                    Event::Command {
                        db: *db,
                        args: &refs,
                    },
                    pos,
                )?
            }
        }
    }
    Ok(Walked {
        bytes: reader.position(),
        ..Default::default()
    })
}

/// Whether `data` looks like JSON lines: its first non-blank byte is `{` (RDB files start
/// with `REDIS`/`VALKEY`, AOF files with `*` or `#`).
pub fn looks_like_jsonl(data: &[u8]) -> bool {
    data.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// serde_json's message with its location turned into a column of the line.
fn json_msg(e: &serde_json::Error, col: usize) -> String {
    let s = e.to_string();
    let msg = s.rsplit_once(" at line ").map_or(s.as_str(), |(m, _)| m);
    if e.line() == 0 {
        return msg.to_string();
    }
    let at = if e.line() == 1 {
        col + e.column()
    } else {
        e.column()
    };
    format!("{msg} (column {at})")
}

/// The fields any line may have; which are present says what the line is.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine<'a> {
    db: Option<u64>,
    key: Option<Bytes>,
    #[serde(rename = "type")]
    kind: Option<String>,
    expire_at_ms: Option<i64>,
    #[serde(borrow)]
    value: Option<&'a RawValue>,
    function: Option<Bytes>,
    #[allow(dead_code)]
    engine: Option<IgnoredAny>,
    #[allow(dead_code)]
    library: Option<IgnoredAny>,
    command: Option<Vec<Bytes>>,
}

/// Reads a line's `"key"` into `.0` as soon as it comes, so that an error later in the line
/// (even a syntax error) can name it.
struct FindKey<'k>(&'k mut Option<Vec<u8>>);

impl<'de> de::DeserializeSeed<'de> for FindKey<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FindKey<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> std::result::Result<(), A::Error> {
        while let Some(k) = m.next_key::<Cow<'de, str>>()? {
            if k == "key" {
                *self.0 = Some(m.next_value::<Bytes>()?.0);
                return Ok(());
            }
            m.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

/// Why a value could not be read.
enum Bad {
    Json(serde_json::Error),
    Value(String),
}

impl From<serde_json::Error> for Bad {
    fn from(e: serde_json::Error) -> Self {
        Bad::Json(e)
    }
}

fn parse<'a, T: Deserialize<'a>>(v: &'a RawValue) -> std::result::Result<T, Bad> {
    Ok(serde_json::from_str(v.get())?)
}

/// Encode a value of type `kind` (the writer's type names).
fn encode(kind: &str, v: &RawValue) -> std::result::Result<Encoded, Bad> {
    Ok(match kind {
        "string" => value::string(&parse::<Bytes>(v)?.0, false),
        "list" | "set" => {
            let items: Vec<Bytes> = parse(v)?;
            let refs: Vec<&[u8]> = items.iter().map(|b| b.0.as_slice()).collect();
            let t = if kind == "list" {
                type_id::LIST
            } else {
                type_id::SET
            };
            value::plain_list(t, &refs)
        }
        "zset" => {
            let items: Vec<(Bytes, Score)> = parse(v)?;
            let refs: Vec<(&[u8], f64)> = items.iter().map(|(m, s)| (&m.0[..], s.0)).collect();
            value::zset(true, &refs)
        }
        "hash" => {
            let fields: Vec<HashField> = parse(v)?;
            if fields.iter().any(|f| f.2.is_some()) {
                let items: Vec<(&[u8], &[u8], u64)> = fields
                    .iter()
                    .map(|f| (&f.0[..], &f.1[..], f.2.unwrap_or(0)))
                    .collect();
                value::hash_metadata(true, &items)
            } else {
                let pairs: Vec<(&[u8], &[u8])> =
                    fields.iter().map(|f| (&f.0[..], &f.1[..])).collect();
                value::hash(&pairs)
            }
        }
        "stream" => stream(parse(v)?)?,
        "module" => module(parse(v)?)?,
        other => {
            return Err(Bad::Value(format!(
                "unknown type {other:?} (expected string, list, set, zset, hash, stream or module)"
            )));
        }
    })
}

/// A binary-safe string: a JSON string, or `{"base64": "..."}` for bytes that are not UTF-8.
struct Bytes(Vec<u8>);

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or {\"base64\": \"...\"}")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Bytes, E> {
                Ok(Bytes(s.as_bytes().to_vec()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> std::result::Result<Bytes, E> {
                Ok(Bytes(s.into_bytes()))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> std::result::Result<Bytes, E> {
                Ok(Bytes(n.to_string().into_bytes()))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> std::result::Result<Bytes, E> {
                Ok(Bytes(n.to_string().into_bytes()))
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<Bytes, A::Error> {
                let mut out = None;
                while let Some(k) = m.next_key::<String>()? {
                    if k != "base64" {
                        return Err(de::Error::unknown_field(&k, &["base64"]));
                    }
                    if out.is_some() {
                        return Err(de::Error::duplicate_field("base64"));
                    }
                    let s: String = m.next_value()?;
                    let b = B64
                        .decode(s.as_bytes())
                        .map_err(|e| de::Error::custom(format!("bad base64: {e}")))?;
                    out = Some(b);
                }
                out.map(Bytes)
                    .ok_or_else(|| de::Error::missing_field("base64"))
            }
        }
        d.deserialize_any(V)
    }
}

/// A zset score: a number, or `"inf"`/`"-inf"` (any text Rust reads as a double). NaN is
/// refused, as Redis refuses it.
struct Score(f64);

impl<'de> Deserialize<'de> for Score {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Score;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number, \"inf\" or \"-inf\"")
            }
            fn visit_f64<E: de::Error>(self, d: f64) -> std::result::Result<Score, E> {
                Ok(Score(d))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> std::result::Result<Score, E> {
                Ok(Score(n as f64))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> std::result::Result<Score, E> {
                Ok(Score(n as f64))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Score, E> {
                match s.parse::<f64>() {
                    Ok(d) if !d.is_nan() => Ok(Score(d)),
                    Ok(_) => Err(E::custom("NaN is not a score Redis accepts")),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Str(s), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A hash field: `[field, value]` or `[field, value, expire_at_ms]`.
struct HashField(Vec<u8>, Vec<u8>, Option<u64>);

impl<'de> Deserialize<'de> for HashField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HashField;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("[field, value] or [field, value, expire_at_ms]")
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> std::result::Result<HashField, A::Error> {
                let f: Bytes = s
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let v: Bytes = s
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                let x: Option<i64> = s.next_element()?;
                if s.next_element::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(4, &self));
                }
                let x = match x {
                    Some(ms) if ms > 0 => Some(ms as u64),
                    Some(ms) => {
                        return Err(de::Error::custom(format!(
                            "field TTL {ms} is not a Unix time in ms"
                        )));
                    }
                    None => None,
                };
                Ok(HashField(f.0, v.0, x))
            }
        }
        d.deserialize_seq(V)
    }
}

/// A stream id, `"ms-seq"`.
struct Id(StreamId);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s: Cow<'de, str> = Deserialize::deserialize(d)?;
        let id = s
            .split_once('-')
            .and_then(|(ms, seq)| Some((ms.parse().ok()?, seq.parse().ok()?)));
        match id {
            Some((ms, seq)) => Ok(Id(StreamId { ms, seq })),
            None => Err(de::Error::custom(format!(
                "bad stream id {s:?} (expected \"ms-seq\")"
            ))),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JStream {
    entries: Vec<JEntry>,
    length: u64,
    last_id: Id,
    first_id: Option<Id>,
    max_deleted_id: Option<Id>,
    entries_added: Option<u64>,
    groups: Vec<JGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JEntry {
    id: Id,
    fields: Vec<(Bytes, Bytes)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JGroup {
    name: Bytes,
    last_id: Id,
    entries_read: Option<i64>,
    pending: Vec<JPending>,
    consumers: Vec<JConsumer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JPending {
    id: Id,
    delivery_time: i64,
    delivery_count: u64,
    consumer: Option<Bytes>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JConsumer {
    name: Bytes,
    seen_time: i64,
    active_time: Option<i64>,
    pending: Vec<Id>,
}

/// Check what Redis would refuse (or our decoder would call corrupt) and encode.
fn stream(s: JStream) -> std::result::Result<Encoded, Bad> {
    let bad = |m: String| Err(Bad::Value(m));
    let mut entries = Vec::with_capacity(s.entries.len());
    let mut prev: Option<StreamId> = None;
    for e in s.entries {
        let id = e.id.0;
        if prev.is_some_and(|p| p >= id) {
            return bad(format!(
                "stream entry {id} is not after the entry before it"
            ));
        }
        if e.fields.is_empty() {
            return bad(format!("stream entry {id} has no fields"));
        }
        prev = Some(id);
        entries.push(StreamEntry {
            id,
            fields: e.fields.into_iter().map(|(f, v)| (f.0, v.0)).collect(),
        });
    }
    if let Some(p) = prev
        && p > s.last_id.0
    {
        return bad(format!(
            "stream last_id {} is before its last entry {p}",
            s.last_id.0
        ));
    }
    let meta = match (s.first_id, s.max_deleted_id, s.entries_added) {
        (None, None, None) => None,
        (Some(f), Some(m), Some(n)) => Some(value::StreamMeta {
            first_id: f.0,
            max_deleted_id: m.0,
            entries_added: n,
        }),
        _ => {
            return bad(
                "first_id, max_deleted_id and entries_added go together (Redis 7.0+ streams)"
                    .into(),
            );
        }
    };
    let mut groups = Vec::with_capacity(s.groups.len());
    for g in s.groups {
        let name = String::from_utf8_lossy(&g.name.0).into_owned();
        let pel: std::collections::HashSet<StreamId> = g.pending.iter().map(|p| p.id.0).collect();
        let mut consumers = Vec::with_capacity(g.consumers.len());
        let mut owner = std::collections::HashMap::new();
        for c in g.consumers {
            let mut own = Vec::with_capacity(c.pending.len());
            for id in c.pending {
                if !pel.contains(&id.0) {
                    return bad(format!(
                        "group {name:?}: consumer {:?} owns {} which is not in the group's pending list",
                        String::from_utf8_lossy(&c.name.0),
                        id.0
                    ));
                }
                owner.insert(id.0, c.name.0.clone());
                own.push(id.0);
            }
            consumers.push(Consumer {
                name: Cow::Owned(c.name.0),
                seen_time: c.seen_time,
                active_time: c.active_time,
                pending: own,
            });
        }
        let mut pending = Vec::with_capacity(g.pending.len());
        for p in g.pending {
            if let Some(c) = &p.consumer
                && owner.get(&p.id.0) != Some(&c.0)
            {
                return bad(format!(
                    "group {name:?}: pending entry {} names consumer {:?}, whose pending list does not have it",
                    p.id.0,
                    String::from_utf8_lossy(&c.0)
                ));
            }
            pending.push(PendingEntry {
                id: p.id.0,
                delivery_time: p.delivery_time,
                delivery_count: p.delivery_count,
            });
        }
        groups.push(Group {
            name: Cow::Owned(g.name.0),
            last_id: g.last_id.0,
            // -1 ("unknown") is stored as u64::MAX, as the writer reads it.
            entries_read: g.entries_read.map(|n| n as u64),
            pending,
            consumers,
        });
    }
    Ok(value::stream(
        &entries,
        s.length,
        s.last_id.0,
        meta,
        &groups,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JModule {
    module: String,
    encver: u16,
    raw: String,
}

/// A module value: the payload as written, checked to be one whole value of the named module.
fn module(m: JModule) -> std::result::Result<Encoded, Bad> {
    let raw = B64
        .decode(m.raw.as_bytes())
        .map_err(|e| Bad::Value(format!("module raw: bad base64: {e}")))?;
    let mut c = crate::rdb::cursor::Cursor::new(&raw, 0);
    let ok = crate::rdb::value::skip_value(&mut c, type_id::MODULE_2, Dialect::Redis);
    if let Err(e) = ok {
        return Err(Bad::Value(format!(
            "module raw is not a module value: {} at byte {}",
            e.kind, e.offset
        )));
    }
    if c.pos() != raw.len() {
        return Err(Bad::Value(format!(
            "module raw has {} bytes after the value",
            raw.len() - c.pos()
        )));
    }
    let id = match crate::rdb::Value::open(type_id::MODULE_2, &raw, 0, Dialect::Redis) {
        Ok(crate::rdb::Value::Module(v)) => v.id,
        _ => return Err(Bad::Value("module raw is not a module value".into())),
    };
    if id.name() != m.module || id.encver() != m.encver {
        return Err(Bad::Value(format!(
            "module raw is {} encver {}, not {} encver {}",
            id.name(),
            id.encver(),
            m.module,
            m.encver
        )));
    }
    Ok(Encoded {
        type_id: type_id::MODULE_2,
        bytes: raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdb::Value;

    fn one(text: &str) -> Result<Line> {
        let mut r = JsonlReader::new(text.as_bytes(), "t.jsonl");
        r.next().unwrap()
    }

    fn key(text: &str) -> KeyLine {
        match one(text) {
            Ok(Line::Key(k)) => k,
            other => panic!("{other:?}"),
        }
    }

    /// The writer's output of what the reader made of `text`.
    fn rewrite(text: &str) -> String {
        use crate::sink::Sink;
        let k = key(text);
        let mut s = crate::sink::jsonl::JsonlSink::new(Vec::new(), "");
        s.key(&k.record()).unwrap();
        String::from_utf8(s.into_inner()).unwrap()
    }

    #[test]
    fn every_type_round_trips_through_the_writer() {
        for line in [
            r#"{"db":0,"key":"s","type":"string","expire_at_ms":4102444800000,"value":"x\u0000y"}"#,
            r#"{"db":0,"key":{"base64":"/w=="},"type":"string","value":{"base64":"AP8="}}"#,
            r#"{"db":3,"key":"l","type":"list","value":["a","1","-5","","007"]}"#,
            r#"{"db":0,"key":"set","type":"set","value":["x","2"]}"#,
            r#"{"db":0,"key":"z","type":"zset","value":[["a","-inf"],["b",0.1],["c",1e300],["d","inf"]]}"#,
            r#"{"db":0,"key":"h","type":"hash","value":[["f","v"],["n","7"]]}"#,
            r#"{"db":0,"key":"hx","type":"hash","value":[["f","v",4102444800000],["g","w"]]}"#,
            r#"{"db":0,"key":"st","type":"stream","value":{"entries":[{"id":"1-1","fields":[["a","1"],["b","2"]]},{"id":"1-2","fields":[["a","3"],["b","4"]]},{"id":"2-0","fields":[["c","5"]]}],"length":3,"last_id":"5-0","groups":[{"name":"g","last_id":"1-2","pending":[{"id":"1-1","delivery_time":1700000000000,"delivery_count":2,"consumer":"c1"},{"id":"1-2","delivery_time":1700000000001,"delivery_count":1}],"consumers":[{"name":"c1","seen_time":1700000000002,"pending":["1-1"]}]}]}}"#,
            r#"{"db":0,"key":"st2","type":"stream","value":{"entries":[],"length":0,"last_id":"5-2","first_id":"0-0","max_deleted_id":"5-2","entries_added":4,"groups":[{"name":"g","last_id":"0-0","entries_read":-1,"pending":[],"consumers":[{"name":"c","seen_time":1,"active_time":2,"pending":[]}]}]}}"#,
        ] {
            assert_eq!(rewrite(line).trim_end(), line);
        }
    }

    #[test]
    fn module_values_round_trip() {
        // Module id: 9 name characters of 6 bits each, then a 10-bit encoding version.
        const CHARSET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let id = b"ReJSON-RL".iter().fold(0u64, |id, c| {
            id << 6 | CHARSET.iter().position(|x| x == c).unwrap() as u64
        });
        let mut raw = Vec::new();
        crate::rdb::encoder::put_length(&mut raw, id << 10 | 3);
        raw.extend_from_slice(&[2, 5, 5, 3, b'a', b'b', b'c', 0]); // uint 5, string "abc", EOF
        let line = format!(
            r#"{{"db":0,"key":"m","type":"module","value":{{"module":"ReJSON-RL","encver":3,"raw":"{}"}}}}"#,
            B64.encode(&raw)
        );
        assert_eq!(rewrite(&line).trim_end(), line);
        assert_eq!(key(&line).value.bytes, raw);
        let wrong = line.replace("\"encver\":3", "\"encver\":4");
        let e = one(&wrong).unwrap_err().to_string();
        assert!(
            e.contains("module raw is ReJSON-RL encver 3, not ReJSON-RL encver 4"),
            "{e}"
        );
    }

    #[test]
    fn a_long_stream_spans_nodes() {
        let entries: Vec<String> = (1..=250)
            .map(|i| {
                if i % 7 == 0 {
                    format!(r#"{{"id":"{i}-0","fields":[["other","{i}"]]}}"#)
                } else {
                    format!(r#"{{"id":"{i}-0","fields":[["n","{i}"],["m","x"]]}}"#)
                }
            })
            .collect();
        let line = format!(
            r#"{{"db":0,"key":"s","type":"stream","value":{{"entries":[{}],"length":250,"last_id":"250-0","groups":[]}}}}"#,
            entries.join(",")
        );
        assert_eq!(rewrite(&line).trim_end(), line);
        let k = key(&line);
        let Value::Stream(s) = k.record().value().unwrap() else {
            panic!()
        };
        let mut n = 0;
        s.for_each_entry(|_| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 250);
    }

    #[test]
    fn functions_commands_and_blank_lines() {
        let text = "\n{\"function\":\"#!lua name=l\\nx\",\"engine\":\"lua\",\"library\":\"l\"}\n  \n{\"db\":2,\"command\":[\"SET\",\"k\",{\"base64\":\"AA==\"}]}";
        let lines: Vec<Line> = JsonlReader::new(text.as_bytes(), "t")
            .map(|l| l.unwrap())
            .collect();
        assert_eq!(
            lines,
            vec![
                Line::Function(b"#!lua name=l\nx".to_vec()),
                Line::Command {
                    db: 2,
                    args: vec![b"SET".to_vec(), b"k".to_vec(), vec![0]]
                }
            ]
        );
    }

    #[test]
    fn errors_name_line_and_key() {
        let text = "{\"db\":0,\"key\":\"a\",\"type\":\"string\",\"value\":\"x\"}\n{\"db\":0,\"key\":\"b\",\"type\":\"list\",\"value\":[1.5]}\n";
        let mut r = JsonlReader::new(text.as_bytes(), "in.jsonl");
        assert!(r.next().unwrap().is_ok());
        let e = r.next().unwrap().unwrap_err().to_string();
        assert!(
            e.starts_with("in.jsonl: line 2 (key \"b\"): invalid type"),
            "{e}"
        );
        assert!(r.next().is_none());
        for (text, want) in [
            (
                "{\"db\":0,\"key\":\"k\",\"type\":\"blob\",\"value\":1}",
                "unknown type \"blob\"",
            ),
            (
                "{\"db\":0,\"key\":\"k\",\"type\":\"string\"}",
                "missing field `value`",
            ),
            (
                "{\"key\":\"k\",\"type\":\"string\",\"value\":\"\"}",
                "missing field `db`",
            ),
            (
                "{\"db\":0,\"key\":\"k\",\"type\":\"string\",\"value\":\"\",\"ttl\":1}",
                "unknown field `ttl`",
            ),
            (
                "{\"db\":0,\"key\":\"k\",\"type\":\"string\",\"value\":\"x\"",
                "EOF while parsing",
            ),
            (
                "{\"db\":0,\"key\":\"k\",\"type\":\"zset\",\"value\":[[\"m\",\"nan\"]]}",
                "NaN",
            ),
            (
                "{\"db\":0,\"key\":\"k\",\"type\":\"hash\",\"value\":[[\"f\"]]}",
                "invalid length 1",
            ),
            (
                "{\"db\":0,\"key\":\"k\",\"type\":\"string\",\"value\":{\"base64\":\"!!\"}}",
                "bad base64",
            ),
            (
                "{\"db\":0,\"key\":\"k\",\"type\":\"stream\",\"value\":{\"entries\":[{\"id\":\"2-0\",\"fields\":[[\"a\",\"b\"]]},{\"id\":\"1-0\",\"fields\":[[\"a\",\"b\"]]}],\"length\":2,\"last_id\":\"2-0\",\"groups\":[]}}",
                "not after",
            ),
            (
                "{\"db\":0,\"key\":\"k\",\"type\":\"stream\",\"value\":{\"entries\":[],\"length\":0,\"last_id\":\"2-0\",\"groups\":[{\"name\":\"g\",\"last_id\":\"0-0\",\"pending\":[],\"consumers\":[{\"name\":\"c\",\"seen_time\":1,\"pending\":[\"1-1\"]}]}]}}",
                "not in the group's pending list",
            ),
            (
                "{\"db\":0,\"key\":\"k\",\"type\":\"module\",\"value\":{\"module\":\"x\",\"encver\":1,\"raw\":\"AA==\"}}",
                "module raw",
            ),
            ("[1]", "not a JSON object"),
            ("{\"db\":0}", "not a key, function or command line"),
        ] {
            let e = one(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
            assert!(e.starts_with("t.jsonl: line 1"), "{e}");
        }
    }

    #[test]
    fn detection() {
        assert!(looks_like_jsonl(b" \n{\"db\":0}"));
        assert!(!looks_like_jsonl(b"*1\r\n$4\r\nPING\r\n"));
        assert!(!looks_like_jsonl(b"REDIS0011"));
        assert!(!looks_like_jsonl(b"  "));
    }
}
