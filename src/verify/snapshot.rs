//! `verify --via snapshot`: compare a whole RDB file with a standalone target in one pass over
//! each, by an order-independent digest, instead of reading the target key by key.
//!
//! Why: reading 2 million keys back with pipelined commands costs the target about twice
//! what loading them did (the first lookup of each key alone is a cache miss), while asking
//! it for a snapshot costs a fork and a save in a child process. rdbferry connects as a
//! replica through the one replication client, `repl::replica` (`REPLCONF capa eof`,
//! `REPLCONF rdb-only 1`, `SYNC`: [`SyncStart::Sync`]), reads the RDB the target streams, and
//! decodes both sides with the same code.
//!
//! The digest of a key covers its target db, name, type, absolute expiry and its value as
//! `verify` decodes it for comparison (encodings may differ): strings, lists and stream entries
//! in order; set members, zset (member, score) pairs and hash (field, value, field expiry)
//! triples as sums, so that their order does not matter; for streams also the last id and every
//! group's name, last delivered id and pending entries per consumer. A side's digest is the
//! count of its keys and the wrapping sum of their 128-bit digests ([`crate::hash::Hash128`]).
//! Keys whose TTL has run out at the start are left out of both sides.
//!
//! Equal digests mean identical data (short of a 128-bit collision, or someone crafting one:
//! this is a check against mistakes, not an adversary). Different digests, or a target that
//! cannot be snapshotted (no `SYNC` rights, a Cluster, a value over the 64 MB record cap), send
//! the caller to the key-by-key comparison, which names the differences.
//!
//! What it deliberately does not do: AOF inputs (the commands would have to be replayed), live
//! sources, filters (the target may hold other keys), TTL tolerance (after an import the
//! absolute expiries are equal; when they are not, the key-by-key comparison applies it).

use std::sync::atomic::{AtomicBool, Ordering};

use super::{BIG, Chunk, StreamMeta, VerifyOptions, walk_chunks};
use crate::error::{Error, Result};
use crate::hash::Hash128;
use crate::input::{Event, Input};
use crate::job::Common;
use crate::job::changes::{self, Changed};
use crate::net::{Conn, NetErrorKind};
use crate::rdb::Elem;
use crate::rdb::value::{Tuples, zset_pairs};
use crate::rdb::{DataType, KeyRecord, Record, StreamReader, Value};
use crate::repl::replica::{self, Handshake, ReplicaOptions, SyncStart};

/// `--via` of `verify` (and, in its report, how it compared: never `Auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// A snapshot when the input and target allow it, key by key otherwise or on a difference.
    #[default]
    Auto,
    /// A snapshot (then key by key on a difference), or an error saying why not.
    Snapshot,
    /// Key by key.
    Commands,
}

/// The largest record of the target's snapshot held in memory: an input with a bigger value
/// is compared key by key (its values are read in chunks there).
pub const MAX_RECORD: usize = 16 << 20; // the message above says 16 MB

/// The keys of one side: how many, and the sum of their digests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    /// Keys (not expired at the start).
    pub keys: u64,
    /// Wrapping sum of their 128-bit digests.
    pub sum: u128,
    /// Keys left out because expired.
    pub expired: u64,
}

impl Digest {
    fn add(&mut self, d: Option<u128>) {
        match d {
            Some(d) => {
                self.keys += 1;
                self.sum = self.sum.wrapping_add(d);
            }
            None => self.expired += 1,
        }
    }
    /// Same keys, same values.
    pub fn same(&self, other: &Digest) -> bool {
        self.keys == other.keys && self.sum == other.sum
    }
}

fn type_code(t: DataType) -> u64 {
    match t {
        DataType::String => 1,
        DataType::List => 2,
        DataType::Set => 3,
        DataType::ZSet => 4,
        DataType::Hash => 5,
        DataType::Stream => 6,
        DataType::Module => 7,
    }
}

/// The digest of `rec` stored as `key` in `db`; `None` when its TTL has run out at `now`.
pub fn key_digest(db: u64, key: &[u8], rec: &KeyRecord<'_>, now: i64) -> Result<Option<u128>> {
    if rec.expire_ms.is_some_and(|ms| ms <= now) {
        return Ok(None);
    }
    let dec = |e: crate::rdb::DecodeError| {
        Error::from(crate::rdb::Error::from_decode("snapshot", Some(key), e))
    };
    let v = rec.value().map_err(dec)?;
    let mut h = Hash128::new(b'k');
    h.u64(db);
    h.bytes(key);
    h.u64(type_code(rec.data_type()));
    h.u64(rec.expire_ms.map_or(u64::MAX, |ms| ms as u64));
    let mut ordered = Hash128::new(b'o');
    let mut sum = 0u128;
    value_digest(&v, rec, now, &dec, &mut ordered, &mut sum)?;
    h.u128(ordered.finish());
    h.u128(sum);
    Ok(Some(h.finish()))
}

/// An element as the bytes a client sees (integers as decimal text), length-prefixed.
fn put(h: &mut Hash128, e: &Elem<'_>) {
    match e {
        Elem::Bytes(b) => h.bytes(b),
        Elem::Int(n) => h.bytes(itoa::Buffer::new().format(*n).as_bytes()),
        other => h.bytes(&other.to_bytes()),
    }
}

/// Feed a value into `ordered` (strings, lists, stream entries and metadata, module bytes)
/// and `sum` (members, pairs and fields, whose order does not count), without copying
/// elements.
fn value_digest(
    v: &Value<'_>,
    rec: &KeyRecord<'_>,
    now: i64,
    dec: &dyn Fn(crate::rdb::DecodeError) -> Error,
    ordered: &mut Hash128,
    sum: &mut u128,
) -> Result<()> {
    let mut add = |x: Hash128| *sum = sum.wrapping_add(x.finish());
    match v {
        Value::String(s) => ordered.raw(s),
        Value::BigString(l) => l
            .for_each_chunk(&mut |c| {
                ordered.raw(c);
                Ok(())
            })
            .map_err(|e| match e {
                crate::rdb::cursor::StreamError::Decode(e) => dec(e),
                crate::rdb::cursor::StreamError::Io(e) => Error::io("snapshot", e),
            })?,
        Value::Module(_) => ordered.bytes(rec.raw),
        Value::Coll(c) => {
            let elems = c.elements();
            match c.data_type() {
                DataType::List => {
                    for e in elems {
                        let e = e.map_err(dec)?;
                        put(ordered, &e);
                    }
                }
                DataType::Set => {
                    for e in elems {
                        let e = e.map_err(dec)?;
                        let mut x = Hash128::new(b's');
                        put(&mut x, &e);
                        add(x);
                    }
                }
                DataType::ZSet => {
                    for p in zset_pairs(elems) {
                        let (m, score) = p.map_err(dec)?;
                        let mut x = Hash128::new(b'z');
                        put(&mut x, &m);
                        x.u64(score.to_bits());
                        add(x);
                    }
                }
                _ if c.has_field_ttls() => {
                    for t in Tuples::<'_, 3>(elems) {
                        let [f, val, at] = t.map_err(dec)?;
                        let at = at.as_i64().filter(|&ms| ms > 0);
                        if at.is_some_and(|ms| ms <= now) {
                            continue;
                        }
                        let mut x = Hash128::new(b'h');
                        put(&mut x, &f);
                        put(&mut x, &val);
                        x.u64(at.map_or(u64::MAX, |ms| ms as u64));
                        add(x);
                    }
                }
                _ => {
                    for t in Tuples::<'_, 2>(elems) {
                        let [f, val] = t.map_err(dec)?;
                        let mut x = Hash128::new(b'h');
                        put(&mut x, &f);
                        put(&mut x, &val);
                        x.u64(u64::MAX);
                        add(x);
                    }
                }
            }
        }
        Value::Stream(s) => {
            walk_chunks(v, now, BIG, dec, &mut |c, _| {
                if let Chunk::Stream(entries) = c {
                    for e in entries {
                        ordered.u64(e.id.ms);
                        ordered.u64(e.id.seq);
                        ordered.u64(e.fields.len() as u64);
                        for (f, val) in &e.fields {
                            ordered.bytes(f);
                            ordered.bytes(val);
                        }
                    }
                }
                Ok(true)
            })?;
            let m = StreamMeta::of(s);
            ordered.u64(m.last_id.ms);
            ordered.u64(m.last_id.seq);
            let mut groups: Vec<_> = m.groups.iter().collect();
            groups.sort_by(|a, b| a.name.cmp(&b.name));
            for g in groups {
                ordered.bytes(&g.name);
                ordered.u64(g.last_id.ms);
                ordered.u64(g.last_id.seq);
                ordered.u64(g.pending);
                for (c, n) in &g.consumers {
                    ordered.bytes(c);
                    ordered.u64(*n);
                }
            }
        }
    }
    Ok(())
}

/// The digest of an RDB input as the target should hold it (`--db-map`, `--rename`). Stops
/// when `cancel` is set, and sets it on a value too big for a snapshot.
pub fn source_digest(
    input: &Input,
    common: &Common,
    now: i64,
    cancel: &AtomicBool,
) -> Result<Digest> {
    let mut d = Digest::default();
    crate::job::batch::walk(
        input,
        common,
        |k| {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::GivenUp("snapshot comparison"));
            }
            if k.serialized_len() > MAX_RECORD as u64 {
                cancel.store(true, Ordering::Relaxed);
                return Err(Error::GivenUp(
                    "a value over 16 MB (compared in chunks instead)",
                ));
            }
            key_digest(common.map.db(k.db), &common.map.key(&k.key), k, now)
        },
        |ev, r, _| {
            if let (Event::Rdb(Record::Key(_)), Some(r)) = (ev, r) {
                d.add(r);
            }
            Ok(())
        },
    )?;
    Ok(d)
}

/// The digest of the target's snapshot. `Ok(Err(why))`: no snapshot could be had;
/// `Ok(Ok(None))`: given up because `cancel` or the run's token was set meanwhile.
pub fn target_digest(
    opts: &VerifyOptions,
    common: &Common,
    now: i64,
    cancel: &AtomicBool,
) -> Result<std::result::Result<Option<Digest>, String>> {
    let mut c = Conn::open(&opts.target)?;
    let info = c.info("server")?;
    if info.get("redis_mode").is_some_and(|m| m != "standalone") {
        return Ok(Err("a Cluster target".into()));
    }
    if let Some(why) = changes::stranded(&mut c)? {
        return Err(Error::target(
            opts.target.redacted(),
            format!(
                "{why}: run `rdbferry recover --to {}` first",
                opts.target.redacted()
            ),
        ));
    }
    let wanted = snapshot_settings(&mut c, &opts.target)?;
    let changed = Changed::set(&mut c, &opts.target, &wanted, &common.cancel)?;
    let r = read_snapshot(c, opts, common, now, cancel);
    // Back on every path: here, or by the guard if this thread unwinds.
    let back = changed.put_back();
    let r = r?;
    back?;
    Ok(r)
}

/// The settings that make the snapshot cheap for the target, each put back after: a diskless
/// sync waits `repl-diskless-sync-delay` (5 s by default) for more replicas, and none is
/// coming; LZF-compressing every value is most of what the save costs the target (about 40%
/// of this comparison on 2 million small keys). None when another run's journal says it has
/// changed settings here (its values are the ones to put back, not ours to take).
fn snapshot_settings(
    c: &mut Conn,
    url: &crate::net::RedisUrl,
) -> Result<Vec<(&'static str, &'static str)>> {
    if let Some((e, live)) = changes::Journal::of(url).other_run() {
        if !live {
            eprintln!(
                "rdbferry: warning: an earlier run (pid {}) changed settings on {} and did not put \
                 them back; run `rdbferry recover --to {}`",
                e.pid,
                url.redacted(),
                url.redacted()
            );
        }
        return Ok(Vec::new());
    }
    let mut wanted = vec![("rdbcompression", "no")];
    if c.config_get("repl-diskless-sync")?.as_deref() == Some("yes") {
        wanted.push(("repl-diskless-sync-delay", "0"));
    }
    Ok(wanted)
}

fn read_snapshot(
    c: Conn,
    opts: &VerifyOptions,
    common: &Common,
    now: i64,
    cancel: &AtomicBool,
) -> Result<std::result::Result<Option<Digest>, String>> {
    let name = c.name().to_string();
    let ropts = ReplicaOptions {
        rdb_only: true,
        ..ReplicaOptions::new(opts.save_within, common.cancel.clone())
    };
    let payload = match replica::psync(c, SyncStart::Sync, &ropts) {
        Ok(Handshake::Full { payload, .. }) => payload,
        Ok(Handshake::Continue { .. }) => return Ok(Err("+CONTINUE to SYNC".into())),
        Err(e) if matches!(e.kind, NetErrorKind::Interrupted) => return Ok(Ok(None)),
        // A refusal (no SYNC rights, a server that says no) rules the snapshot out; a dead
        // or stalled link is the run's error.
        Err(e)
            if matches!(
                e.kind,
                NetErrorKind::Refused { .. } | NetErrorKind::Unexpected { .. }
            ) =>
        {
            return Ok(Err(e.to_string()));
        }
        Err(e) => return Err(e.into()),
    };
    let mut rdb = StreamReader::new(payload, &format!("{name} (snapshot)")).max_record(MAX_RECORD);
    let mut d = Digest::default();
    loop {
        common.cancel.check()?;
        if cancel.load(Ordering::Relaxed) {
            return Ok(Ok(None));
        }
        match rdb.next_record() {
            Ok(Some(Record::Key(k))) => d.add(key_digest(k.db, &k.key, &k, now)?),
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => return Ok(Err(e.to_string())),
        }
    }
    Ok(Ok(Some(d)))
}

/// What comparing the file with a snapshot of the target found.
pub enum Compared {
    /// Same keys, same values: the file's digest.
    Same(Digest),
    /// They differ (the caller compares key by key to say how).
    Differs(String),
    /// No comparison was possible, and why.
    Unavailable(String),
}

/// Compare an RDB input with a snapshot of the target: both digests are computed at once,
/// and whichever side fails first stops the other.
pub fn compare(input: &Input, common: &Common, opts: &VerifyOptions) -> Compared {
    if input.kind != crate::input::Kind::Rdb {
        return Compared::Unavailable("the input is not an RDB file".into());
    }
    if !common.map.filter.keeps_all() {
        return Compared::Unavailable("filters (the target may hold other keys)".into());
    }
    let now = super::now_ms();
    let cancel = AtomicBool::new(false);
    let stop = || cancel.store(true, Ordering::Relaxed);
    let (src, tgt) = std::thread::scope(|sc| {
        let t = sc.spawn(|| {
            let r = target_digest(opts, common, now, &cancel);
            if !matches!(r, Ok(Ok(Some(_)))) {
                stop();
            }
            r
        });
        let src = source_digest(input, common, now, &cancel);
        if src.is_err() {
            stop();
        }
        (src, t.join())
    });
    // The side that failed for its own reason says why (the other was only given up).
    match (src, tgt) {
        (_, Ok(Ok(Err(why)))) => Compared::Unavailable(why),
        (_, Ok(Err(e))) => Compared::Unavailable(e.to_string()),
        (_, Err(_)) => Compared::Unavailable("snapshot reader failed".into()),
        (Err(e), _) => Compared::Unavailable(e.to_string()),
        (Ok(_), Ok(Ok(Ok(None)))) => Compared::Unavailable("snapshot given up".into()),
        (Ok(src), Ok(Ok(Ok(Some(t))))) if t.same(&src) => Compared::Same(src),
        (Ok(src), Ok(Ok(Ok(Some(t))))) => Compared::Differs(format!(
            "the target's snapshot differs ({} keys there, {} in the file): compared key by key",
            t.keys, src.keys
        )),
    }
}
