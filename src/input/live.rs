//! A live source read key by key: a Redis server (or every master of a Redis Cluster) read
//! with `SCAN`, then `DUMP` and the TTL of each key, in pipelined batches. Users: `verify` of a
//! live source, and `sync --via scan` (a source that refuses replication).
//!
//! Each `DUMP` payload is split ([`Dump::parse`]) and handed on as a [`KeyRecord`], exactly
//! as if it had been read from an RDB file: the comparison in `verify` (and the import of
//! `sync`) is one, whatever the source. The value is decoded by our own RDB decoder, so source and target may use
//! different encodings (and versions: a 6.2 source against a 7.0 target).
//!
//! - Databases: those `INFO keyspace` lists (a `/N` in the URL reads db N only); `--db`
//!   filters them before any `SCAN`, and key patterns filter the scanned names before any
//!   `DUMP`. `--type` is applied to the decoded record, like for files.
//! - TTLs: `PEXPIRETIME` on 7.0+, `PTTL` (made absolute with the local clock) before.
//! - Cluster (`cluster_enabled:1`, detected): every master of the slot map is scanned (db 0
//!   only); a key that a node redirects (`MOVED`/`ASK`, its slot migrated since `SCAN`) is
//!   read where the redirection says.
//! - A live source changes: a key whose value changed after `SCAN` is compared as `DUMP`
//!   returned it; a key gone by the time of `DUMP` (deleted, expired) is counted as
//!   vanished, not as a difference. `SCAN` may return a key twice (a rehash in between): it
//!   is then compared twice.
//!
//! Memory: one key's `DUMP` payload is held at a time (a reply is read whole, so a 1 GB value
//! takes 1 GB, about twice while it is parsed); the replies of the batch in flight wait in the
//! socket and in the server's output buffer. Big collections are not streamed with
//! `HSCAN`/`SSCAN`: `DUMP` is one reply.
//!
//! Not here: replicas, function libraries (not keys), and consistency between keys: this is
//! no snapshot.

use std::collections::HashMap;
use std::collections::VecDeque;

use crate::cancel::Cancel;
use crate::error::{Error, Result};
use crate::net::cluster::{NodeAddr, Redirect, SlotMap, is_cluster, parse_redirect};
use crate::net::{Conn, Pipe, RedisUrl, Version as Caps};
use crate::rdb::KeyRecord;
use crate::rdb::dump::Dump;
use crate::resp::Reply;
use crate::time::now_ms;
use crate::transform::Filter;

/// Keys asked for with one `SCAN`.
const SCAN_COUNT: &str = "1000";
/// Keys whose `DUMP` and TTL go in one pipelined batch; two batches are in flight.
const BATCH: usize = 512;
/// Redirections followed for one key.
const MAX_REDIRECTS: usize = 5;

/// What the walk saw besides the keys it handed on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scanned {
    /// Keys `SCAN` listed that were gone when read (deleted or expired meanwhile: `DUMP`
    /// came back empty).
    pub vanished: u64,
    /// Source keys read again elsewhere after `MOVED` or `ASK`.
    pub redirects: u64,
}

/// A part of a live source that may be read on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// A db of a standalone source.
    Db(u64),
    /// The `i`th master of a Cluster source (its db 0).
    Master(usize),
}

/// How a walk reads: which dbs and names (`--db`, key patterns: before any `DUMP`), the
/// run's stop token, and whether a `DUMP` checksum that does not match is let through.
#[derive(Clone, Copy)]
pub struct Reading<'a> {
    /// The filter (its db and name parts apply here; the type part is the caller's).
    pub filter: &'a Filter,
    /// Looked at before every `SCAN`.
    pub cancel: &'a Cancel,
    /// `--ignore-checksum`.
    pub ignore_checksum: bool,
}

/// A live source, connected.
pub struct LiveSource {
    url: RedisUrl,
    /// The URL, redacted: the name of the source in messages.
    pub name: String,
    /// The server version (the seed's, on a Cluster).
    pub version: String,
    caps: Caps,
    seed: Option<Conn>,
    /// Masters of a Cluster source; empty for a standalone one.
    masters: Vec<NodeAddr>,
    /// Connections for keys read after a redirection.
    side: HashMap<NodeAddr, Conn>,
}

fn err(name: &str, msg: String) -> Error {
    Error::Input {
        path: name.to_string(),
        msg,
    }
}

fn text(r: &Reply) -> String {
    match r {
        Reply::Error(b) | Reply::Bulk(b) | Reply::Simple(b) => String::from_utf8_lossy(b).into(),
        other => format!("{other:?}"),
    }
}

/// Dbs `INFO keyspace` lists, ascending.
fn keyspace_dbs(conn: &mut Conn) -> Result<Vec<u64>> {
    let mut p = Pipe::default();
    p.push(&[b"INFO", b"keyspace"]);
    let r = conn.exec(&p)?;
    let Some(Reply::Bulk(b)) = r.first() else {
        return Err(err(
            conn.name(),
            format!("INFO keyspace: {}", r.first().map(text).unwrap_or_default()),
        ));
    };
    let mut dbs: Vec<u64> = String::from_utf8_lossy(b)
        .lines()
        .filter_map(|l| l.split_once(':')?.0.strip_prefix("db")?.parse().ok())
        .collect();
    dbs.sort_unstable();
    Ok(dbs)
}

/// A TTL reply as an absolute expiry: `Ok(None)` without TTL, `Err(None)` when the key is
/// gone, `Err(Some(reply))` for an error.
fn expiry(r: &Reply, caps: Caps, now: i64) -> std::result::Result<Option<i64>, Option<String>> {
    match r {
        Reply::Integer(-2) => Err(None),
        Reply::Integer(-1) => Ok(None),
        Reply::Integer(t) if caps.has_pexpiretime() => Ok(Some(*t)),
        Reply::Integer(t) => Ok(Some(now + *t)),
        other => Err(Some(text(other))),
    }
}

impl LiveSource {
    /// Connect and authenticate (the first error names the source, never its password), and
    /// read the slot map of a Cluster source.
    pub fn open(url: &RedisUrl) -> Result<LiveSource> {
        let mut conn = Conn::open(url)?;
        let v = conn.version()?;
        let masters = if is_cluster(&mut conn)? {
            let map = SlotMap::discover(url)?;
            if map.masters().is_empty() {
                return Err(err(
                    conn.name(),
                    "the Cluster has no master serving a slot".into(),
                ));
            }
            map.masters().to_vec()
        } else {
            Vec::new()
        };
        Ok(LiveSource {
            url: url.clone(),
            name: conn.name().to_string(),
            version: v.to_string(),
            caps: v,
            seed: Some(conn),
            masters,
            side: HashMap::new(),
        })
    }

    /// Whether the source is a Cluster.
    pub fn is_cluster(&self) -> bool {
        !self.masters.is_empty()
    }

    /// What a walk reads, in parts that may be read apart (each on its own connection): the
    /// dbs of a standalone source that hold keys (`INFO keyspace`; only the URL's `/N` when
    /// it names one), ascending, or the masters of a Cluster.
    pub fn parts(&mut self) -> Result<Vec<Part>> {
        if self.is_cluster() {
            return Ok((0..self.masters.len()).map(Part::Master).collect());
        }
        let Some(conn) = self.seed.as_mut() else {
            return Ok(Vec::new());
        };
        let mut dbs = keyspace_dbs(conn)?;
        if let Some(d) = self.url.url_db() {
            dbs.retain(|x| *x == d);
        }
        Ok(dbs.into_iter().map(Part::Db).collect())
    }

    /// Read every key that passes the db and name filters of `how` and hand it to `f`, with
    /// the payload bytes read so far (for progress); only part `only` when given.
    pub fn walk(
        &mut self,
        how: Reading<'_>,
        only: Option<Part>,
        f: &mut dyn FnMut(&KeyRecord<'_>, u64) -> Result<()>,
    ) -> Result<Scanned> {
        let mut w = Walk {
            how,
            f,
            scanned: Scanned::default(),
            bytes: 0,
        };
        let parts = match only {
            Some(p) => vec![p],
            None => self.parts()?,
        };
        for part in parts {
            match part {
                Part::Db(db) => {
                    let Some(mut conn) = self.seed.take() else {
                        continue;
                    };
                    let r = self.scan_db(&mut conn, db, &mut w);
                    self.seed = Some(conn);
                    r?;
                }
                Part::Master(i) => {
                    let Some(m) = self.masters.get(i).cloned() else {
                        continue;
                    };
                    let mut conn = Conn::open(&m.url(&self.url))?;
                    if keyspace_dbs(&mut conn)?.contains(&0) {
                        self.scan_db(&mut conn, 0, &mut w)?;
                    }
                }
            }
        }
        Ok(w.scanned)
    }

    /// `SCAN` one db of one node, and read its keys in batches (two in flight).
    fn scan_db(&mut self, conn: &mut Conn, db: u64, w: &mut Walk<'_, '_>) -> Result<()> {
        if !w.how.filter.keep_db(db) {
            return Ok(());
        }
        if conn.db != db {
            let d = db.to_string();
            let mut p = Pipe::default();
            p.push(&[b"SELECT", d.as_bytes()]);
            if let Some(Reply::Error(e)) = conn.exec(&p)?.first() {
                let e = String::from_utf8_lossy(e);
                return Err(err(conn.name(), format!("SELECT {db}: {e}")));
            }
            conn.db = db;
        }
        let mut cursor = b"0".to_vec();
        loop {
            w.how.cancel.check()?;
            let mut p = Pipe::default();
            p.push(&[b"SCAN", &cursor, b"COUNT", SCAN_COUNT.as_bytes()]);
            let r = conn.exec(&p)?;
            let (next, keys) = match r.first() {
                Some(Reply::Array(a)) => match (a.first(), a.get(1)) {
                    (Some(Reply::Bulk(c)), Some(Reply::Array(k))) => (c.clone(), k),
                    _ => return Err(err(conn.name(), format!("SCAN: unexpected reply {a:?}"))),
                },
                other => {
                    let t = other.map(text).unwrap_or_default();
                    return Err(err(conn.name(), format!("SCAN in db {db}: {t}")));
                }
            };
            let keys: Vec<&[u8]> = keys
                .iter()
                .filter_map(Reply::as_bytes)
                .filter(|k| w.how.filter.keep_name(k))
                .collect();
            let mut inflight: VecDeque<&[&[u8]]> = VecDeque::new();
            for batch in keys.chunks(BATCH) {
                self.send_batch(conn, batch)?;
                inflight.push_back(batch);
                if inflight.len() == 2
                    && let Some(b) = inflight.pop_front()
                {
                    self.read_batch(conn, db, b, w)?;
                }
            }
            while let Some(b) = inflight.pop_front() {
                self.read_batch(conn, db, b, w)?;
            }
            if next == b"0" {
                return Ok(());
            }
            cursor = next;
        }
    }

    fn push_key(&self, p: &mut Pipe, key: &[u8]) {
        p.push(&[b"DUMP", key]);
        if self.caps.has_pexpiretime() {
            p.push(&[b"PEXPIRETIME", key]);
        } else {
            p.push(&[b"PTTL", key]);
        }
    }

    fn send_batch(&self, conn: &mut Conn, keys: &[&[u8]]) -> Result<()> {
        let mut p = Pipe::default();
        for k in keys {
            self.push_key(&mut p, k);
        }
        Ok(conn.send_pipe(&p)?)
    }

    /// Read a batch's replies one key at a time (so one payload is held at a time).
    fn read_batch(
        &mut self,
        conn: &mut Conn,
        db: u64,
        keys: &[&[u8]],
        w: &mut Walk<'_, '_>,
    ) -> Result<()> {
        // Every reply of the batch is read, even after an error, so that the connection
        // stays in step; the first error is returned at the end.
        let mut failed = None;
        for key in keys {
            let mut r = conn.recv(2)?;
            if failed.is_some() {
                continue;
            }
            if let Some(rd) = r.iter().find_map(|x| match x {
                Reply::Error(e) => parse_redirect(e),
                _ => None,
            }) {
                w.scanned.redirects += 1;
                match self.follow(key, rd) {
                    Ok(again) => r = again,
                    Err(e) => {
                        failed = Some(e);
                        continue;
                    }
                }
            }
            let ttl = r.pop().unwrap_or(Reply::Nil);
            let dump = r.pop().unwrap_or(Reply::Nil);
            if let Err(e) = self.deliver(conn.name(), db, key, dump, &ttl, w) {
                failed = Some(e);
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Read a key again where a Cluster redirection says, following further ones.
    fn follow(&mut self, key: &[u8], first: Redirect) -> Result<Vec<Reply>> {
        let mut rd = first;
        for _ in 0..MAX_REDIRECTS {
            let asking = matches!(rd, Redirect::Ask { .. });
            let addr = rd.addr().clone();
            let addr = if addr.host.is_empty() || addr.host == "?" {
                NodeAddr::new(self.url.host.clone(), addr.port)
            } else {
                addr
            };
            let mut p = if asking {
                Pipe::asking()
            } else {
                Pipe::default()
            };
            self.push_key(&mut p, key);
            let conn = match self.side.entry(addr.clone()) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(Conn::open(&addr.url(&self.url))?)
                }
            };
            let r = conn.exec(&p)?;
            match r.iter().find_map(|x| match x {
                Reply::Error(e) => parse_redirect(e),
                _ => None,
            }) {
                None => return Ok(r),
                Some(next) => rd = next,
            }
        }
        Err(err(
            &self.name,
            format!(
                "key {}: still redirected after {MAX_REDIRECTS} tries",
                crate::text::excerpt(key)
            ),
        ))
    }

    /// Turn one key's `DUMP` and TTL replies into a record and hand it on.
    fn deliver(
        &self,
        node: &str,
        db: u64,
        key: &[u8],
        dump: Reply,
        ttl: &Reply,
        w: &mut Walk<'_, '_>,
    ) -> Result<()> {
        let payload = match dump {
            Reply::Bulk(b) => b,
            // Gone since SCAN listed it.
            Reply::Nil => {
                w.scanned.vanished += 1;
                return Ok(());
            }
            other => {
                let q = crate::text::excerpt(key);
                return Err(err(node, format!("DUMP {q} in db {db}: {}", text(&other))));
            }
        };
        let expire_ms = match expiry(ttl, self.caps, now_ms()) {
            Ok(x) => x,
            // Deleted or expired between DUMP and its TTL.
            Err(None) => {
                w.scanned.vanished += 1;
                return Ok(());
            }
            Err(Some(e)) => {
                let q = crate::text::excerpt(key);
                return Err(err(node, format!("TTL of {q} in db {db}: {e}")));
            }
        };
        let d = Dump::parse(&payload, w.how.ignore_checksum)
            .map_err(|e| Error::from(crate::rdb::Error::from_decode(&self.name, Some(key), e)))?;
        let rec = KeyRecord {
            db,
            key: std::borrow::Cow::Borrowed(key),
            expire_ms,
            idle: None,
            freq: None,
            type_id: d.type_id,
            raw: d.raw,
            offset: 0,
            value_offset: 1,
            version: d.version,
            synthetic: false,
        };
        w.bytes += payload.len() as u64;
        (w.f)(&rec, w.bytes)
    }
}

/// The state of one walk.
struct Walk<'c, 'f> {
    how: Reading<'c>,
    f: &'f mut dyn FnMut(&KeyRecord<'_>, u64) -> Result<()>,
    scanned: Scanned,
    bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_replies() {
        let new = Caps::parse("7.0.0");
        let old = Caps::parse("6.2.0");
        assert_eq!(expiry(&Reply::Integer(-1), new, 5), Ok(None));
        assert_eq!(expiry(&Reply::Integer(-2), old, 5), Err(None));
        assert_eq!(expiry(&Reply::Integer(900), new, 5), Ok(Some(900)));
        assert_eq!(expiry(&Reply::Integer(900), old, 5), Ok(Some(905)));
        assert!(matches!(
            expiry(&Reply::Error(b"NOPERM".to_vec()), new, 5),
            Err(Some(_))
        ));
    }
}
