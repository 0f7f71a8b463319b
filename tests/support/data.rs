//! What a server holds, compared beyond `DEBUG DIGEST`.
//!
//! `DEBUG DIGEST` covers values, types and dbs, but of a TTL only *whether* a key has one, and
//! of a stream only its entries: a wrong expiry, a lost consumer group, a pending entry or a
//! last-delivered id would pass it. A [`Snapshot`] therefore also records, for every key of
//! every db (each node of a Cluster), its type, its expiry time (`PEXPIRETIME`, exact; on 6.x,
//! which lacks it, `PTTL` turned into an absolute time, compared with a tolerance) and for
//! streams `XINFO STREAM key FULL` without what depends on when it is asked or how the stream
//! happens to be laid out (consumers' `seen-time`/`active-time`, delivery times of pending
//! entries, `radix-tree-*`; the entries themselves are the digest's). [`Snapshot::diff`] says
//! what differs, key by key.
//!
//! A snapshot can also come from a `testdata/*.expect.json` listing ([`Snapshot::listing`]):
//! the digest, every key's type and `pexpiretime` (where the listing has it, else whether there
//! is a TTL) and the stream's `xinfo_stream_full` as recorded (the server's default `COUNT`
//! of 10: longer PELs are compared on their first 10 entries, and on `pel-count`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value as Json};

use super::{RedisCluster, RedisServer, testdata};

/// How far two expiry times read with `PTTL` (6.x) may be apart: the time between the reads.
const PTTL_TOLERANCE_MS: i64 = 2_000;

/// At most this many differences are spelled out.
const SHOW: usize = 30;

/// Keys per pipelined batch.
const BATCH: usize = 1_000;

/// When a key expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expire {
    Never,
    /// `PEXPIRETIME`: exact.
    At(i64),
    /// Now + `PTTL` (servers before 7.0): within [`PTTL_TOLERANCE_MS`].
    About(i64),
    /// A listing that only says there is a TTL.
    Some,
}

impl Expire {
    fn matches(self, other: Expire) -> bool {
        use Expire::*;
        match (self, other) {
            (Never, Never) | (Some, Some) => true,
            (Never, _) | (_, Never) => false,
            (Some, _) | (_, Some) => true,
            (At(a), At(b)) => a == b,
            (At(a) | About(a), At(b) | About(b)) => (a - b).abs() <= PTTL_TOLERANCE_MS,
        }
    }
}

/// One key.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyState {
    pub ty: String,
    /// `DEBUG DIGEST-VALUE`, when the snapshot took it ([`Snapshot::with_values`]).
    pub value: Option<String>,
    pub expire: Expire,
    /// `XINFO STREAM key FULL`, normalised (see [`normalise_stream`]).
    pub stream: Option<Json>,
}

/// What a server (or a Cluster, or a listing) holds; see the module doc.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// For messages: which server or file.
    pub what: String,
    /// `major.minor` of the server (XINFO fields differ between versions).
    version: String,
    /// `DEBUG DIGEST` of the whole server, when it describes exactly these keys.
    digest: Option<String>,
    pub keys: BTreeMap<(u64, Vec<u8>), KeyState>,
    /// The `COUNT` its stream infos were cut at (a listing's 10), if any.
    stream_count: Option<usize>,
    /// Keys found on two Cluster nodes at once.
    doubled: Vec<String>,
}

fn major_minor(v: &str) -> String {
    v.split('.').take(2).collect::<Vec<_>>().join(".")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Snapshot {
    /// Every db of `s`: digest, and per key type, expiry and stream info.
    pub fn of(s: &RedisServer) -> Snapshot {
        Snapshot::take(s, false)
    }

    /// As [`Snapshot::of`], with each key's `DEBUG DIGEST-VALUE` too (to compare with a
    /// Cluster, which has no digest of its own).
    pub fn with_values(s: &RedisServer) -> Snapshot {
        Snapshot::take(s, true)
    }

    fn take(s: &RedisServer, values: bool) -> Snapshot {
        if s.is_tls() {
            // The `redis` crate here speaks plain TCP: read a copy loaded from its dump
            // (which holds everything a snapshot looks at, expiry times and PELs included).
            let dump = s.save_and_copy_dump();
            let keep = super::TempDir::new("tls-copy");
            let dir = keep.path().display().to_string();
            std::fs::copy(&dump, keep.path().join("dump.rdb")).unwrap();
            let copy = RedisServer::start_with(s.binary(), &["--dir", &dir]);
            let mut snap = Snapshot::take(&copy, values);
            snap.what = format!("TLS server on port {} (read from its dump)", s.port());
            return snap;
        }
        let mut c = connect(&s.url());
        let mut snap = Snapshot::empty(
            &format!("redis {} on port {}", s.version(), s.port()),
            s.version(),
        );
        snap.digest = Some(s.digest());
        for db in keyspace_dbs(&mut c) {
            snap.add_node(&mut c, db, values, s.version());
        }
        snap
    }

    /// The keys of several servers together (shards of one dataset): no digest; a key held
    /// by two of them is a difference.
    pub fn union(parts: &[Snapshot]) -> Snapshot {
        let mut all = Snapshot::empty("the union of the shards", &parts[0].version);
        for p in parts {
            for (k, v) in &p.keys {
                if all.keys.insert(k.clone(), v.clone()).is_some() {
                    all.doubled
                        .push(format!("db {} key \"{}\"", k.0, show(&k.1)));
                }
            }
        }
        all
    }

    /// Without the keys `drop` names (rdbferry's checkpoint keys on a target), and the digest
    /// (which covered them).
    pub fn without_keys(mut self, drop: impl Fn(&[u8]) -> bool) -> Snapshot {
        self.keys.retain(|(_, k), _| !drop(k));
        self.digest = None;
        self
    }

    /// The same keys, without the digest (to compare with a [`Snapshot::union`]).
    pub fn without_digest(mut self) -> Snapshot {
        self.digest = None;
        self
    }

    /// db 0 of every master of `cluster` (each node that says `role:master`), with values.
    pub fn of_cluster(cluster: &RedisCluster) -> Snapshot {
        let urls: Vec<String> = cluster
            .nodes()
            .iter()
            .filter(|n| n.cli(&["ROLE"]).starts_with("master"))
            .map(|n| n.url())
            .collect();
        let version = cluster.nodes()[0].version().to_string();
        Snapshot::of_nodes(&urls, &version)
    }

    /// db 0 of each of these Cluster nodes (`redis://host:port/`), with values.
    pub fn of_nodes(urls: &[String], version: &str) -> Snapshot {
        let mut snap = Snapshot::empty(&format!("Cluster nodes {urls:?}"), version);
        for url in urls {
            let mut c = connect(url);
            snap.add_node(&mut c, 0, true, version);
        }
        snap
    }

    /// What the server that wrote `testdata/<p>` listed in `<p>.expect.json`.
    pub fn listing(p: &str) -> Snapshot {
        let path = PathBuf::from(testdata(&format!("{p}.expect.json")));
        Snapshot::from_listing(&path)
    }

    /// A `*.expect.json` listing (see `testdata/README.md`).
    pub fn from_listing(path: &Path) -> Snapshot {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let j: Json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        let version = j["server_version"].as_str().unwrap_or("?");
        let mut snap = Snapshot::empty(&format!("listing {}", path.display()), version);
        snap.digest = j["debug_digest"].as_str().map(str::to_string);
        snap.stream_count = Some(10);
        for k in j["keys"].as_array().expect("keys") {
            let db = k["db"].as_u64().expect("db");
            let key = json_bytes(&k["key"]);
            let ty = k["type"].as_str().expect("type").to_string();
            let expire = match k["pexpiretime"].as_i64() {
                Some(-1) => Expire::Never,
                Some(at) => Expire::At(at),
                None if k["pttl"].as_i64().expect("pttl") >= 0 => Expire::Some,
                None => Expire::Never,
            };
            let stream =
                (ty == "stream").then(|| normalise_stream(&k["value"]["xinfo_stream_full"]));
            let state = KeyState {
                ty,
                value: None,
                expire,
                stream,
            };
            snap.keys.insert((db, key), state);
        }
        snap
    }

    fn empty(what: &str, version: &str) -> Snapshot {
        Snapshot {
            what: what.to_string(),
            version: major_minor(version),
            digest: None,
            keys: BTreeMap::new(),
            stream_count: None,
            doubled: Vec::new(),
        }
    }

    /// Only the keys of `db`, (the whole server's digest no longer applies).
    pub fn only_db(mut self, db: u64) -> Snapshot {
        self.keys.retain(|(d, _), _| *d == db);
        self.digest = None;
        self.what = format!("{} (db {db})", self.what);
        self
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Add the keys of `db` on the connection's server.
    fn add_node(&mut self, c: &mut redis::Connection, db: u64, values: bool, version: &str) {
        let _: () = redis::cmd("SELECT")
            .arg(db)
            .query(c)
            .unwrap_or_else(|e| panic!("SELECT {db}: {e}"));
        let exact = !version.starts_with('6');
        for batch in scan_keys(c).chunks(BATCH) {
            let mut p = redis::pipe();
            for k in batch {
                p.cmd("TYPE").arg(k);
                p.cmd(if exact { "PEXPIRETIME" } else { "PTTL" }).arg(k);
                if values {
                    p.cmd("DEBUG").arg("DIGEST-VALUE").arg(k);
                }
            }
            let now = now_ms();
            let replies: Vec<redis::Value> = p.query(c).unwrap_or_else(|e| {
                panic!("TYPE/expiry/DEBUG DIGEST-VALUE (DEBUG needs --enable-debug-command): {e}")
            });
            let per = if values { 3 } else { 2 };
            for (k, r) in batch.iter().zip(replies.chunks(per)) {
                let ty = match &r[0] {
                    redis::Value::SimpleString(s) => s.clone(),
                    other => panic!("TYPE: {other:?}"),
                };
                let t = match &r[1] {
                    redis::Value::Int(n) => *n,
                    other => panic!("expiry: {other:?}"),
                };
                let expire = match (t, exact) {
                    (-1, _) => Expire::Never,
                    (t, _) if t < 0 => panic!("key {:?} vanished", show(k)),
                    (t, true) => Expire::At(t),
                    (t, false) => Expire::About(now + t),
                };
                let value = values.then(|| match to_json(&r[2]) {
                    Json::Array(a) => a.iter().map(|x| x.to_string()).collect(),
                    other => other.to_string(),
                });
                let stream = (ty == "stream").then(|| {
                    let full: redis::Value = redis::cmd("XINFO")
                        .arg("STREAM")
                        .arg(k)
                        .arg("FULL")
                        .arg("COUNT")
                        .arg(0)
                        .query(c)
                        .unwrap_or_else(|e| panic!("XINFO STREAM {} FULL: {e}", show(k)));
                    normalise_stream(&to_json(&full))
                });
                let state = KeyState {
                    ty,
                    value,
                    expire,
                    stream,
                };
                if self.keys.insert((db, k.clone()), state).is_some() {
                    self.doubled.push(format!("db {db} key \"{}\"", show(k)));
                }
            }
        }
    }

    /// Every difference of `got` from `self` (the expected state), readable; empty if none.
    /// The same, without its stream groups' `entries-read` and `lag`: a replay of every
    /// command since a stream's group was created cannot know them where Redis 7.0 propagates
    /// `XREADGROUP` as `XCLAIM ... LASTID` (which moves the group without counting), while a
    /// server that loaded a rewritten base has them from its RDB. Compare a replay of the
    /// whole history with a load of the last rewrite through this.
    pub fn without_group_reads(mut self) -> Snapshot {
        for k in self.keys.values_mut() {
            let groups = k.stream.as_mut().and_then(|s| s.get_mut("groups"));
            for g in groups.and_then(Json::as_array_mut).into_iter().flatten() {
                if let Some(g) = g.as_object_mut() {
                    g.remove("entries-read");
                    g.remove("lag");
                }
            }
        }
        self
    }

    pub fn diff(&self, got: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        if let (Some(a), Some(b)) = (&self.digest, &got.digest)
            && a != b
        {
            out.push(format!("DEBUG DIGEST {b}, expected {a}"));
        }
        for d in &got.doubled {
            out.push(format!("{d}: on two nodes"));
        }
        let lenient = self.version != got.version;
        for ((db, key), want) in &self.keys {
            let at = format!("db {db} key \"{}\"", show(key));
            let Some(have) = got.keys.get(&(*db, key.clone())) else {
                out.push(format!("{at}: missing"));
                continue;
            };
            if want.ty != have.ty {
                out.push(format!("{at}: type {}, expected {}", have.ty, want.ty));
                continue;
            }
            if let (Some(a), Some(b)) = (&want.value, &have.value)
                && a != b
            {
                out.push(format!("{at}: value differs (DEBUG DIGEST-VALUE)"));
            }
            if !want.expire.matches(have.expire) {
                out.push(format!(
                    "{at}: expires {:?}, expected {:?}",
                    have.expire, want.expire
                ));
            }
            if let (Some(a), Some(b)) = (&want.stream, &have.stream) {
                let count = self.stream_count.or(got.stream_count);
                let (a, b) = (cut(a, count), cut(b, count));
                for d in json_diff(&a, &b, lenient, "") {
                    out.push(format!("{at}: stream {d}"));
                }
            }
        }
        for (db, key) in got.keys.keys().filter(|k| !self.keys.contains_key(*k)) {
            out.push(format!("db {db} key \"{}\": not expected", show(key)));
        }
        out
    }

    /// Panics, listing the differences, unless `got` holds what `self` does.
    pub fn assert_same(&self, got: &Snapshot) {
        let d = self.diff(got);
        if d.is_empty() {
            return;
        }
        let more = d.len().saturating_sub(SHOW);
        let mut text = d[..d.len().min(SHOW)].join("\n  ");
        if more > 0 {
            text += &format!("\n  ... and {more} more");
        }
        panic!(
            "{} differs from {} ({} keys expected, {} found):\n  {text}",
            got.what,
            self.what,
            self.keys.len(),
            got.keys.len()
        );
    }
}

/// `got` holds exactly what `want` holds: digest, expiry times, stream groups (every db).
pub fn assert_same_data(got: &RedisServer, want: &RedisServer) {
    Snapshot::of(want).assert_same(&Snapshot::of(got));
}

/// `got` holds what the server that wrote `testdata/<p>` listed (see [`Snapshot::listing`]).
pub fn assert_listing(got: &RedisServer, p: &str) {
    Snapshot::listing(p).assert_same(&Snapshot::of(got));
}

fn connect(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

/// The dbs `INFO keyspace` lists (those with keys).
fn keyspace_dbs(c: &mut redis::Connection) -> Vec<u64> {
    let info: String = redis::cmd("INFO")
        .arg("keyspace")
        .query(c)
        .unwrap_or_else(|e| panic!("INFO keyspace: {e}"));
    info.lines()
        .filter_map(|l| l.strip_prefix("db")?.split(':').next()?.parse().ok())
        .collect()
}

pub fn scan_keys(c: &mut redis::Connection) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(c)
            .unwrap_or_else(|e| panic!("SCAN: {e}"));
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).escape_debug().to_string()
}

/// Bytes as the listings write them: a JSON string if UTF-8, else `{"hex": ...}`.
fn bytes_json(b: &[u8]) -> Json {
    match std::str::from_utf8(b) {
        Ok(s) => Json::String(s.to_string()),
        Err(_) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            serde_json::json!({ "hex": hex })
        }
    }
}

/// The bytes of a listing's string (JSON text or `{"hex": ...}`).
pub fn json_bytes(j: &Json) -> Vec<u8> {
    if let Some(s) = j.as_str() {
        return s.as_bytes().to_vec();
    }
    let h = j["hex"]
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {j}"));
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A RESP2 reply as the listings record one.
fn to_json(v: &redis::Value) -> Json {
    use redis::Value as V;
    match v {
        V::Nil => Json::Null,
        V::Int(n) => Json::from(*n),
        V::BulkString(b) => bytes_json(b),
        V::SimpleString(s) => Json::String(s.clone()),
        V::Okay => Json::String("OK".into()),
        V::Array(a) | V::Set(a) => Json::Array(a.iter().map(to_json).collect()),
        other => Json::String(format!("{other:?}")),
    }
}

/// A flat `[name, value, name, value...]` reply as a map, without the `drop` fields.
fn pairs(flat: &Json, drop: &[&str]) -> Map<String, Json> {
    let a = flat
        .as_array()
        .unwrap_or_else(|| panic!("not a field list: {flat}"));
    a.chunks(2)
        .filter_map(|p| {
            let name = p[0].as_str()?.to_string();
            (!drop.contains(&name.as_str())).then(|| (name, p.get(1).cloned().unwrap_or_default()))
        })
        .collect()
}

/// `XINFO STREAM key FULL` (flat, as the server or a listing gives it) without the fields that
/// depend on the time it is asked or on the stream's node layout, and without its entries
/// (the digest's): consumers' `seen-time` and `active-time`, the delivery time of each
/// pending entry (kept: id, consumer, delivery count), `radix-tree-keys`/`-nodes`.
pub fn normalise_stream(full: &Json) -> Json {
    let mut top = pairs(full, &["radix-tree-keys", "radix-tree-nodes", "entries"]);
    if let Some(groups) = top.get_mut("groups") {
        let gs: Vec<Json> = groups
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|g| {
                let mut g = pairs(g, &[]);
                // [id, consumer, delivery time, count] → [id, consumer, count]
                strip_time(&mut g, 2);
                if let Some(cs) = g.get_mut("consumers") {
                    let list: Vec<Json> = cs
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(|c| {
                            let mut c = pairs(c, &["seen-time", "active-time"]);
                            // [id, delivery time, count] → [id, count]
                            strip_time(&mut c, 1);
                            Json::Object(c)
                        })
                        .collect();
                    *cs = Json::Array(list);
                }
                Json::Object(g)
            })
            .collect();
        *groups = Json::Array(gs);
    }
    Json::Object(top)
}

/// Remove element `i` (a delivery time) from each entry of the map's `pending` list.
fn strip_time(m: &mut Map<String, Json>, i: usize) {
    if let Some(Json::Array(pel)) = m.get_mut("pending") {
        for e in pel.iter_mut() {
            if let Json::Array(e) = e
                && e.len() > i
            {
                e.remove(i);
            }
        }
    }
}

/// A normalised stream info with its `pending` lists cut at `count` (a listing's `COUNT`).
fn cut(j: &Json, count: Option<usize>) -> Json {
    let mut j = j.clone();
    let Some(n) = count else { return j };
    let cut_pel = |m: &mut Json| {
        if let Some(Json::Array(p)) = m.get_mut("pending") {
            p.truncate(n);
        }
    };
    if let Some(Json::Array(gs)) = j.get_mut("groups") {
        for g in gs.iter_mut() {
            cut_pel(g);
            if let Some(Json::Array(cs)) = g.get_mut("consumers") {
                cs.iter_mut().for_each(cut_pel);
            }
        }
    }
    j
}

/// Where two JSON values differ, as `path: got X, expected Y`. `lenient`: a field that only
/// one side has (servers of different versions) is not a difference.
fn json_diff(want: &Json, got: &Json, lenient: bool, path: &str) -> Vec<String> {
    match (want, got) {
        (Json::Object(a), Json::Object(b)) => {
            let mut out = Vec::new();
            for (k, va) in a {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    Some(vb) => out.extend(json_diff(va, vb, lenient, &p)),
                    None if !lenient => out.push(format!("{p}: missing, expected {va}")),
                    None => {}
                }
            }
            if !lenient {
                for (k, vb) in b.iter().filter(|(k, _)| !a.contains_key(*k)) {
                    out.push(format!("{path}.{k}: {vb}, not expected"));
                }
            }
            out
        }
        (Json::Array(a), Json::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .flat_map(|(i, (x, y))| json_diff(x, y, lenient, &format!("{path}[{i}]")))
            .collect(),
        (a, b) if a == b => Vec::new(),
        (a, b) => vec![format!(
            "{}: {}, expected {}",
            if path.is_empty() { "." } else { path },
            short(b),
            short(a)
        )],
    }
}

fn short(j: &Json) -> String {
    let s = j.to_string();
    if s.chars().count() > 200 {
        format!("{}...", s.chars().take(200).collect::<String>())
    } else {
        s
    }
}
