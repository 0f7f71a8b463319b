//! The key-by-key comparison: a [`Verifier`] queues each source key's check on the lane of
//! its target node, sends batches pipelined, judges the replies, and records differences.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

use super::check::*;
use super::chunk::*;
use super::route::{Dest, Router, find_redirect};
use super::*;
use crate::error::{Error, Result};
use crate::job::Common;
use crate::net::cluster::Redirect;
use crate::net::{Conn, Pipe, Version as Caps};
use crate::rdb::{DataType, DecodeError, KeyRecord, Value};
use crate::resp::Reply;
use crate::text::{excerpt, printable};
use crate::time::now_ms;

/// A batch is sent when it holds this many keys or command bytes.
pub(crate) const BATCH_KEYS: usize = 1024;

pub(crate) const BATCH_BYTES: usize = 4 << 20;

/// A batched key: its check, its single chunk, its item count, and whether a SELECT went
/// before it in the pipeline.
pub(crate) struct Queued {
    pub(crate) check: Check,
    /// Commands its chunk took in the pipeline.
    pub(crate) chunk_cmds: usize,
    pub(crate) chunk: Chunk,
    pub(crate) count: Count,
    pub(crate) selected: bool,
}

/// RDB-part keys that AOF commands mention, by hash of every command argument (a key name
/// colliding with some other argument is only skipped, never misreported).
#[derive(Default)]
pub(crate) struct Touched {
    pub(crate) args: HashSet<u64>,
    pub(crate) all: bool,
}

pub(crate) fn hash_of(b: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

impl Touched {
    pub(crate) fn add(&mut self, args: &[&[u8]]) {
        let Some(name) = args.first() else { return };
        if ["flushall", "flushdb", "swapdb"]
            .iter()
            .any(|c| name.eq_ignore_ascii_case(c.as_bytes()))
        {
            self.all = true;
        }
        for a in &args[1..] {
            self.args.insert(hash_of(a));
        }
    }
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        self.all || self.args.contains(&hash_of(key))
    }
}

/// A batch sent and not yet read.
pub(crate) struct Sent {
    pub(crate) queued: Vec<Queued>,
    pub(crate) count: usize,
}

/// One connection and its batches: the only one for a standalone target, one per master for
/// a Cluster.
pub(crate) struct Lane {
    pub(crate) conn: Conn,
    pub(crate) pipe: Pipe,
    pub(crate) pipe_db: u64,
    pub(crate) queued: Vec<Queued>,
    pub(crate) inflight: Option<Sent>,
}

impl Lane {
    pub(crate) fn new(conn: Conn) -> Lane {
        Lane {
            pipe_db: conn.db,
            conn,
            pipe: Pipe::default(),
            queued: Vec::new(),
            inflight: None,
        }
    }
}

pub(crate) struct Verifier<'o> {
    /// Lane 0 is the standalone target; on a Cluster, the lanes of [`Router`].
    pub(crate) lanes: Vec<Lane>,
    /// Set for a Cluster target.
    pub(crate) router: Option<Router>,
    /// What the target supports (the first node's, on a Cluster).
    pub(crate) caps: Caps,
    /// The target, redacted, for messages.
    pub(crate) target: String,
    pub(crate) opts: &'o VerifyOptions,
    pub(crate) name: String,
    pub(crate) rep: VerifyReport,
    pub(crate) touched: Option<Touched>,
    /// Keys of a sent batch that a Cluster node redirected: compared again, one at a time,
    /// where the redirection says.
    pub(crate) retry: Vec<(Queued, Redirect)>,
    /// Listed type differences whose actual type is looked up at the end: (index in the
    /// report's differences, target db, target key).
    pub(crate) type_lookups: Vec<(usize, u64, Vec<u8>)>,
}

impl Verifier<'_> {
    pub(crate) fn target_err(&self, msg: String) -> Error {
        Error::Input {
            path: self.target.clone(),
            msg,
        }
    }

    pub(crate) fn record(&mut self, c: &Check, diffs: Vec<(DiffKind, String)>) {
        if diffs.is_empty() {
            return;
        }
        self.rep.keys_differing += 1;
        let mut kinds: Vec<DiffKind> = Vec::new();
        for (kind, detail) in diffs {
            if !kinds.contains(&kind) {
                kinds.push(kind);
                match kind {
                    DiffKind::Missing => self.rep.missing += 1,
                    DiffKind::Type => self.rep.type_diffs += 1,
                    DiffKind::Value => self.rep.value_diffs += 1,
                    DiffKind::Ttl => self.rep.ttl_diffs += 1,
                }
            }
            if self.rep.differences.len() < self.opts.max_diffs {
                if kind == DiffKind::Type && detail.ends_with("found another type") {
                    self.type_lookups
                        .push((self.rep.differences.len(), c.db, c.key.clone()));
                }
                self.rep.differences.push(Difference {
                    db: c.src_db,
                    key: printable(&c.src_key),
                    target_db: c.db,
                    target_key: printable(&c.key),
                    kind,
                    detail,
                });
            } else {
                self.rep.more_differences += 1;
            }
        }
    }

    pub(crate) fn select(&mut self, lane: usize, db: u64) -> bool {
        let l = &mut self.lanes[lane];
        if db == l.pipe_db {
            return false;
        }
        let d = db.to_string();
        l.pipe.push(&[b"SELECT", d.as_bytes()]);
        l.pipe_db = db;
        true
    }

    pub(crate) fn check_select(&self, r: &Reply, db: u64) -> Result<()> {
        match r {
            Reply::Error(e) => {
                Err(self.target_err(format!("SELECT {db}: {}", String::from_utf8_lossy(e))))
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn size_diff(head: &Head, count: Count, ty: DataType) -> Option<String> {
        let size = head.size?;
        if ty == DataType::Module {
            return None;
        }
        let (lo, hi) = (count.n as i64, (count.n + count.slack) as i64);
        (size < lo || size > hi).then(|| format!("length: expected {lo}, found {size}"))
    }

    pub(crate) fn key(&mut self, k: &KeyRecord<'_>, common: &Common) -> Result<()> {
        if !common.map.keep(k.db, &k.key, k.data_type()) {
            return Ok(());
        }
        let now = now_ms();
        if k.expire_ms.is_some_and(|ms| ms <= now) {
            self.rep.expired_skipped += 1;
            return Ok(());
        }
        if self.touched.as_ref().is_some_and(|t| t.contains(&k.key)) {
            self.rep.aof_keys_skipped += 1;
            return Ok(());
        }
        let name = self.name.clone();
        let key_bytes = k.key.to_vec();
        let dec = move |e: DecodeError| -> Error {
            crate::rdb::Error::from_decode(&name, Some(&key_bytes), e).into()
        };
        let v = k.value().map_err(&dec)?;
        let check = Check {
            src_db: k.db,
            src_key: k.key.to_vec(),
            db: common.map.db(k.db),
            key: common.map.key(&k.key).into_owned(),
            expire_ms: k.expire_ms,
            ty: k.data_type(),
            module: match &v {
                Value::Module(m) => Some(m.id.name()),
                _ => None,
            },
            stream: match &v {
                Value::Stream(s) => Some(StreamMeta::of(s)),
                _ => None,
            },
            sized: true,
        };
        let mut check = check;
        self.rep.keys_checked += 1;
        if check.module.is_some() {
            self.rep.modules_type_only += 1;
        }
        if let Value::Coll(c) = &v
            && c.has_field_ttls()
            && !self.caps.has_field_ttls()
        {
            self.rep.field_ttls_unchecked += 1;
        }
        let mut small = None;
        let count = if matches!(v, Value::BigString(_)) {
            None
        } else {
            walk_chunks(&v, now, SMALL, &dec, &mut |c, last| {
                if last {
                    small = Some(c);
                }
                Ok(false)
            })?
        };
        match (small, count) {
            (Some(chunk), Some(count)) => {
                let chunk = match chunk {
                    Chunk::ZSet(items) => Chunk::ZSetWhole(items),
                    c => c,
                };
                check.sized = !matches!(chunk, Chunk::Str { whole: true, .. });
                let lane = self.route(&check)?;
                let selected = self.select(lane, check.db);
                let caps = self.caps;
                let l = &mut self.lanes[lane];
                check.push_head(&mut l.pipe, caps);
                let chunk_cmds = push_chunk(&mut l.pipe, &check.key, &chunk, caps);
                l.queued.push(Queued {
                    chunk_cmds,
                    check,
                    chunk,
                    count,
                    selected,
                });
                if l.queued.len() >= BATCH_KEYS || l.pipe.bytes() >= BATCH_BYTES {
                    self.flush(lane)?;
                }
                Ok(())
            }
            _ => {
                if self.router.is_some() {
                    self.route(&check)?;
                    return self.big_cluster(check, &v, now, &dec);
                }
                self.drain()?;
                self.big(check, &v, now, &dec, None).map(|_| ())
            }
        }
    }

    /// Send a lane's batch, then compare the keys of the batch sent before it: two batches
    /// are in flight per lane, so the server works on one while the next is built.
    pub(crate) fn flush(&mut self, lane: usize) -> Result<()> {
        let l = &mut self.lanes[lane];
        if l.pipe.is_empty() {
            return Ok(());
        }
        let pipe = std::mem::take(&mut l.pipe);
        l.conn.send_pipe(&pipe)?;
        l.conn.db = l.pipe_db;
        let sent = Sent {
            queued: std::mem::take(&mut l.queued),
            count: pipe.len(),
        };
        if let Some(prev) = l.inflight.replace(sent) {
            self.evaluate(lane, prev)?;
        }
        self.run_retries()
    }

    /// Send what is queued and compare everything in flight, on every lane.
    pub(crate) fn drain(&mut self) -> Result<()> {
        for lane in 0..self.lanes.len() {
            self.flush(lane)?;
            if let Some(prev) = self.lanes[lane].inflight.take() {
                self.evaluate(lane, prev)?;
            }
        }
        self.run_retries()
    }

    /// Fill in the actual type of the listed type differences (one round trip, at the end,
    /// when nothing else is in flight).
    pub(crate) fn resolve_types(&mut self) -> Result<()> {
        let lookups = std::mem::take(&mut self.type_lookups);
        if lookups.is_empty() {
            return Ok(());
        }
        if self.router.is_some() {
            // One key at a time, each on its slot's master.
            for (i, _, key) in &lookups {
                let (r, _) = self.exec_key(key, None, &|p: &mut Pipe| p.push(&[b"TYPE", key]))?;
                if let (Some(d), Some(t)) = (self.rep.differences.get_mut(*i), r.first()) {
                    d.detail = d.detail.replace("another type", &reply_text(t));
                }
            }
            return Ok(());
        }
        let mut slots = Vec::new();
        for (_, db, key) in &lookups {
            self.select(0, *db);
            let l = &mut self.lanes[0];
            slots.push(l.pipe.len());
            l.pipe.push(&[b"TYPE", key]);
        }
        let l = &mut self.lanes[0];
        let pipe = std::mem::take(&mut l.pipe);
        let r = l.conn.exec(&pipe)?;
        l.conn.db = l.pipe_db;
        for ((i, _, _), slot) in lookups.iter().zip(slots) {
            if let (Some(d), Some(t)) = (self.rep.differences.get_mut(*i), r.get(slot)) {
                d.detail = d.detail.replace("another type", &reply_text(t));
            }
        }
        Ok(())
    }

    /// Read a sent batch's replies and compare its keys. On a Cluster, a key that was
    /// redirected (`MOVED`, `ASK`) goes to [`Verifier::retry`] instead.
    pub(crate) fn evaluate(&mut self, lane: usize, sent: Sent) -> Result<()> {
        let replies = self.lanes[lane].conn.recv(sent.count)?;
        let mut at = 0usize;
        for q in sent.queued {
            if q.selected {
                self.check_select(&replies[at], q.check.db)?;
                at += 1;
            }
            let n = q.check.head_len() + q.chunk_cmds;
            let r = &replies[at..at + n];
            at += n;
            if self.router.is_some()
                && let Some(rd) = find_redirect(r)
            {
                self.retry.push((q, rd));
                continue;
            }
            self.eval_queued(&q, r)?;
        }
        Ok(())
    }

    /// Compare one batched key with its replies (head, then chunk).
    pub(crate) fn eval_queued(&mut self, q: &Queued, replies: &[Reply]) -> Result<()> {
        let tol = self.opts.ttl_tolerance_ms;
        let hl = q.check.head_len();
        let cl = q.chunk_cmds;
        let mut diffs = Vec::new();
        let head = q
            .check
            .eval_head(
                &replies[..hl],
                &replies[..hl + cl],
                self.caps,
                tol,
                &mut diffs,
            )
            .map_err(|e| self.key_err(&q.check, e))?;
        if head.comparable {
            let d = eval_chunk(&q.chunk, &replies[hl..hl + cl], tol)
                .map_err(|e| self.key_err(&q.check, e))?;
            if let Some(d) = d.or_else(|| Self::size_diff(&head, q.count, q.check.ty)) {
                diffs.push((DiffKind::Value, d));
            }
        }
        self.settle(&q.check, diffs);
        Ok(())
    }

    /// Record a key's differences, unless it is missing because its TTL ran out meanwhile.
    pub(crate) fn settle(&mut self, c: &Check, diffs: Vec<(DiffKind, String)>) {
        if diffs.iter().any(|(k, _)| *k == DiffKind::Missing)
            && c.expire_ms.is_some_and(|ms| ms <= now_ms())
        {
            self.rep.keys_checked -= 1;
            self.rep.expired_skipped += 1;
            return;
        }
        self.record(c, diffs);
    }

    pub(crate) fn key_err(&self, c: &Check, e: String) -> Error {
        self.target_err(format!("key {}: {e}", excerpt(&c.key)))
    }

    /// Compare a value too big for a batch: head first, then chunk by chunk. On a Cluster,
    /// `dest` is the node (its head replies already read, in `head`); a redirection of a
    /// chunk stops the comparison and is returned, the key not settled.
    pub(crate) fn big(
        &mut self,
        check: Check,
        v: &Value<'_>,
        now: i64,
        dec: &dyn Fn(DecodeError) -> Error,
        dest: Option<(Dest, Vec<Reply>)>,
    ) -> Result<Option<(Check, Redirect)>> {
        let caps = self.caps;
        let tol = self.opts.ttl_tolerance_ms;
        let (r, dest) = match dest {
            Some((d, head)) => (head, Some(d)),
            None => {
                let selected = self.select(0, check.db);
                let l = &mut self.lanes[0];
                check.push_head(&mut l.pipe, caps);
                let pipe = std::mem::take(&mut l.pipe);
                let mut r = l.conn.exec(&pipe)?;
                l.conn.db = l.pipe_db;
                if selected {
                    self.check_select(&r[0], check.db)?;
                    r.remove(0);
                }
                (r, None)
            }
        };
        let r = &r[..];
        let mut diffs = Vec::new();
        let head = check
            .eval_head(r, r, caps, tol, &mut diffs)
            .map_err(|e| self.key_err(&check, e))?;
        if head.comparable {
            // One chunk in flight while the next is decoded; a chunk's replies are always
            // read, even after a difference, so the connection stays in step.
            let mut found: Option<String> = None;
            let mut failed: Option<String> = None;
            let mut moved: Option<Redirect> = None;
            let mut prev: Option<(Chunk, usize)> = None;
            let asking = dest.as_ref().is_some_and(|d| d.asking);
            let conn = match &dest {
                Some(d) => self.side(&d.addr)?,
                None => &mut self.lanes[0].conn,
            };
            let key = check.key.clone();
            let cluster = dest.is_some();
            let mut settle_prev = |prev: Option<(Chunk, usize)>,
                                   conn: &mut Conn,
                                   found: &mut Option<String>,
                                   failed: &mut Option<String>|
             -> Result<()> {
                let Some((pc, n)) = prev else { return Ok(()) };
                if n == 0 {
                    return Ok(());
                }
                let r = conn.recv_replies(n, asking)?;
                if found.is_some() || failed.is_some() || moved.is_some() {
                    return Ok(());
                }
                if cluster && let Some(rd) = find_redirect(&r) {
                    moved = Some(rd);
                    // Stops the walk like a difference would; not reported as one.
                    *failed = Some(String::new());
                    return Ok(());
                }
                match eval_chunk(&pc, &r, tol) {
                    Ok(d) => *found = d,
                    Err(e) => *failed = Some(e),
                }
                Ok(())
            };
            let count = walk_chunks(v, now, BIG, dec, &mut |c: Chunk, _last: bool| {
                let mut p = if asking {
                    Pipe::asking()
                } else {
                    Pipe::default()
                };
                let n = push_chunk(&mut p, &key, &c, caps);
                if n > 0 {
                    conn.send_pipe(&p)?;
                }
                settle_prev(prev.replace((c, n)), conn, &mut found, &mut failed)?;
                Ok(found.is_none() && failed.is_none())
            });
            // Read what is still in flight before anything else, error or not.
            settle_prev(prev.take(), conn, &mut found, &mut failed)?;
            let count = count?;
            if let Some(rd) = moved {
                return Ok(Some((check, rd)));
            }
            if let Some(e) = failed {
                return Err(self.key_err(&check, e));
            }
            let d = found.or_else(|| count.and_then(|n| Self::size_diff(&head, n, check.ty)));
            if let Some(d) = d {
                diffs.push((DiffKind::Value, d));
            }
        }
        self.settle(&check, diffs);
        Ok(None)
    }
}
