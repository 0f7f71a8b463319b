//! `sync --via scan`: a one-time copy of a source that refuses replication (`PSYNC` and
//! `SYNC` renamed or disabled, as many managed services do), read key by key with `SCAN`,
//! `DUMP` and `PEXPIRETIME` (`PTTL` before 7.0) by the reader `verify` uses for a live source
//! (`input::live`).
//!
//! Where it sits: the keys read become an RDB stream (`sink::rdb::RdbCopy`: each `DUMP`
//! payload's value bytes as they are, under their db, name and expiry) that goes into
//! `import`'s command path as a snapshot from a replication socket does, so filters, renames,
//! db mapping, `--mode`, `--on-conflict` and `--on-error` mean the same here.
//!
//! In parallel per db, or per master of a Cluster source: a reader thread per part (at most
//! [`MAX_READERS`], each on its own connection), one encoder, the import. Memory is bounded by the channels between them (a few
//! MB), plus one key's `DUMP` reply, held whole (a value of 1 GB takes that much memory).
//! `--scan-rate N` keeps all readers together under N keys a second, so as not to starve the
//! source.
//!
//! What it is not: a snapshot. A key written during the scan may be missed (`SCAN` had passed
//! it) or copied as it was before the write; one deleted between `SCAN` and `DUMP` is counted
//! (`vanished`), not copied. The report says so. Function libraries (not keys) come from the
//! seed's `FUNCTION DUMP` (7.0+), written first. No `--follow` (there is no stream to follow).

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::input::Input;
use crate::input::live::{LiveSource, Part, Reading, Scanned};
use crate::job::Common;
use crate::job::import::{self, ImportOptions, ImportReport, Precheck, Via};
use crate::net::{Conn, RedisUrl};
use crate::rdb::{Dialect, KeyRecord, Version};
use crate::resp::{Reply, unknown_command};
use crate::sink::rdb::RdbCopy;

/// The most dbs read at once.
pub const MAX_READERS: usize = 4;
/// Keys (or payload bytes) sent from a reader to the encoder at a time.
const BATCH_KEYS: usize = 512;
const BATCH_BYTES: usize = 256 << 10;

/// What the scan saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScanReport {
    /// Keys read (and handed to the import).
    pub keys: u64,
    /// Keys `SCAN` listed whose `DUMP` came back empty: deleted or expired meanwhile.
    pub vanished: u64,
    /// The dbs read (of a standalone source).
    pub dbs: Vec<u64>,
    /// The masters read (of a Cluster source: db 0 of each).
    pub masters: u64,
    /// Function libraries copied (`FUNCTION DUMP` of the seed).
    pub functions: u64,
    /// What a scan cannot promise, in words.
    pub warning: String,
}

/// The warning every scan's report carries.
pub const WARNING: &str = "a scan is no snapshot: keys written on the source during the \
                           scan may be missing on the target or hold an older value";

/// One key as a reader hands it to the encoder.
struct Owned {
    db: u64,
    key: Vec<u8>,
    expire_ms: Option<i64>,
    type_id: u8,
    raw: Vec<u8>,
    version: Version,
}

/// Copy the source in `from` into the target by commands (see the module doc), at most
/// `rate` keys a second.
pub fn copy(
    common: &Common,
    from: &RedisUrl,
    io: &ImportOptions,
    pre: &Precheck,
    rate: Option<u64>,
) -> Result<(ImportReport, ScanReport)> {
    let mut seed = LiveSource::open(from)?;
    let parts: Vec<Part> = seed
        .parts()?
        .into_iter()
        .filter(|p| match p {
            Part::Db(d) => common.map.filter.keep_db(*d),
            Part::Master(_) => common.map.filter.keep_db(0),
        })
        .collect();
    drop(seed);
    let functions = function_libraries(from, common.read.ignore_checksum)?;
    let n_functions = functions.as_ref().map_or(0, |(libs, _)| libs.len() as u64);
    let limiter = Limiter::new(rate);
    let (batch_tx, batch_rx) = sync_channel::<Vec<Owned>>(8);
    let (bytes_tx, bytes_rx) = sync_channel::<Vec<u8>>(4);
    let mut io = io.clone();
    io.via = Via::Commands;
    let (imported, read, encoded) = std::thread::scope(|sc| {
        let readers: Vec<_> = groups(&parts)
            .into_iter()
            .map(|group| {
                let tx = batch_tx.clone();
                let limiter = &limiter;
                sc.spawn(move || read_parts(common, from, &group, tx, limiter))
            })
            .collect();
        drop(batch_tx);
        let encoder = sc.spawn(move || encode(batch_rx, ChanWriter(bytes_tx), functions));
        let reader = ChanReader {
            rx: bytes_rx,
            cur: Vec::new(),
            pos: 0,
        };
        let input = Input::from_reader(&from.redacted(), Box::new(reader), None);
        let imported = import::import_input(input, common, &io, pre);
        let read: Vec<_> = readers.into_iter().map(join).collect();
        (imported, read, join(encoder))
    });
    let mut rep = ScanReport {
        warning: WARNING.into(),
        functions: n_functions,
        ..Default::default()
    };
    for p in &parts {
        match *p {
            Part::Db(d) => rep.dbs.push(d),
            Part::Master(_) => rep.masters += 1,
        }
    }
    // A reader's error is the cause; the import then only saw its stream end early.
    for r in read {
        let (keys, s) = r?;
        rep.keys += keys;
        rep.vanished += s.vanished;
    }
    // The import's error is the cause of the encoder's ("the import stopped").
    let imported = imported?;
    encoded?;
    Ok((imported, rep))
}

/// A thread's result, a panic turned into an error.
fn join<T>(h: std::thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    h.join()
        .unwrap_or_else(|_| Err(Error::Internal("a scan thread panicked".into())))
}

/// The parts split among at most [`MAX_READERS`] readers, round robin.
fn groups<T: Copy>(parts: &[T]) -> Vec<Vec<T>> {
    let n = parts.len().min(MAX_READERS);
    let mut g = vec![Vec::new(); n];
    for (i, &p) in parts.iter().enumerate() {
        g[i % n].push(p);
    }
    g
}

/// One reader: its parts (dbs or Cluster masters), each key to the encoder in batches; the keys sent and what the walk
/// saw. A closed channel (the import stopped) ends it quietly: the import's error tells.
fn read_parts(
    common: &Common,
    from: &RedisUrl,
    parts: &[Part],
    tx: SyncSender<Vec<Owned>>,
    limiter: &Limiter,
) -> Result<(u64, Scanned)> {
    let mut src = LiveSource::open(from)?;
    let how = Reading {
        filter: &common.map.filter,
        cancel: &common.cancel,
        ignore_checksum: common.read.ignore_checksum,
    };
    let (mut keys, mut seen) = (0u64, Scanned::default());
    let mut batch = Vec::new();
    let mut bytes = 0usize;
    for &part in parts {
        let walked = src.walk(how, Some(part), &mut |rec, _| {
            limiter.wait();
            bytes += rec.raw.len() + rec.key.len();
            batch.push(owned(rec));
            keys += 1;
            if batch.len() >= BATCH_KEYS || bytes >= BATCH_BYTES {
                bytes = 0;
                tx.send(std::mem::take(&mut batch))
                    .map_err(|_| Error::Stopped)?;
            }
            Ok(())
        });
        match walked {
            Ok(s) => {
                seen.vanished += s.vanished;
                seen.redirects += s.redirects;
            }
            Err(Error::Stopped) => return Ok((keys, seen)),
            Err(e) => return Err(e),
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(batch);
    }
    Ok((keys, seen))
}

fn owned(rec: &KeyRecord<'_>) -> Owned {
    Owned {
        db: rec.db,
        key: rec.key.to_vec(),
        expire_ms: rec.expire_ms,
        type_id: rec.type_id,
        raw: rec.raw.to_vec(),
        version: rec.version,
    }
}

/// The encoder: every batch as RDB records into `out`, then the end of the RDB. Its version
/// is the first payload's (every `DUMP` of one source has the same).
fn encode(rx: Receiver<Vec<Owned>>, out: ChanWriter, functions: Libraries) -> Result<()> {
    let stopped = |e: std::io::Error| Error::io("sync --via scan", e);
    let start = |o: ChanWriter, v: Version| -> Result<RdbCopy<ChanWriter>> {
        let mut w = RdbCopy::new(o, v).map_err(stopped)?;
        for code in functions.iter().flat_map(|(libs, _)| libs) {
            w.function(code).map_err(stopped)?;
        }
        Ok(w)
    };
    let mut w: Option<RdbCopy<ChanWriter>> = None;
    let mut out = Some(out);
    for batch in rx {
        for k in &batch {
            if w.is_none()
                && let Some(o) = out.take()
            {
                // Functions need RDB 10: a source that has them writes DUMPs of 10 or more.
                w = Some(start(o, k.version)?);
            }
            let Some(rdb) = w.as_mut() else {
                return Err(Error::Internal("no RDB writer".into()));
            };
            let rec = KeyRecord {
                db: k.db,
                key: std::borrow::Cow::Borrowed(&k.key),
                expire_ms: k.expire_ms,
                idle: None,
                freq: None,
                type_id: k.type_id,
                raw: &k.raw,
                offset: 0,
                value_offset: 1,
                version: k.version,
                synthetic: false,
            };
            rdb.select_db(k.db, None).map_err(stopped)?;
            rdb.key(&rec, &k.key).map_err(stopped)?;
        }
    }
    let w = match (w, out) {
        (Some(w), _) => w,
        (None, Some(o)) => {
            let v = functions.as_ref().map_or(
                Version {
                    dialect: Dialect::Redis,
                    number: 9,
                },
                |(_, v)| *v,
            );
            start(o, v)?
        }
        (None, None) => return Err(Error::Internal("no RDB writer".into())),
    };
    w.finish().map_err(stopped)?;
    Ok(())
}

/// The source's function libraries and the RDB version they came in, when it has any.
type Libraries = Option<(Vec<Vec<u8>>, Version)>;

/// `FUNCTION DUMP` of the source in `from`: none before 7.0 (an unknown command); refused (an
/// ACL), an error naming the source, as a library silently left out would be a loss.
fn function_libraries(from: &RedisUrl, ignore_checksum: bool) -> Result<Libraries> {
    let mut conn = Conn::open(from)?;
    let payload = match conn.call(&[b"FUNCTION", b"DUMP"])? {
        Reply::Bulk(p) => p,
        Reply::Nil => return Ok(None),
        Reply::Error(e) if unknown_command(&String::from_utf8_lossy(&e)) => return Ok(None),
        other => {
            return Err(Error::target(
                from.redacted(),
                format!(
                    "FUNCTION DUMP: {} (a scan copies function libraries too; allow the \
                     command, or filter the source's libraries out first)",
                    other
                        .error_text()
                        .unwrap_or_else(|| "an unexpected reply".into())
                ),
            ));
        }
    };
    let (libs, version) = crate::rdb::dump::functions(&payload, ignore_checksum).map_err(|e| {
        let what = format!("FUNCTION DUMP reply, byte {}: {}", e.offset, e.kind);
        Error::target(from.redacted(), what)
    })?;
    Ok((!libs.is_empty()).then_some((libs, version)))
}

/// The encoder's end of the byte channel.
struct ChanWriter(SyncSender<Vec<u8>>);

impl Write for ChanWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .send(b.to_vec())
            .map_err(|_| std::io::Error::other("the import stopped"))?;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The import's end of the byte channel: the end of the stream when the encoder is done.
struct ChanReader {
    rx: Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChanReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(v) => (self.cur, self.pos) = (v, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// `--scan-rate`: all readers together at most `rate` keys a second, on average since the
/// start.
struct Limiter {
    rate: Option<u64>,
    start: Instant,
    keys: AtomicU64,
}

impl Limiter {
    fn new(rate: Option<u64>) -> Limiter {
        Limiter {
            rate: rate.filter(|&r| r > 0),
            start: Instant::now(),
            keys: AtomicU64::new(0),
        }
    }

    /// Wait until one more key is within the rate.
    fn wait(&self) {
        let n = self.keys.fetch_add(1, Ordering::Relaxed) + 1;
        let due = self.start + self.due(n);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }

    /// When the `n`th key may go, after the start.
    fn due(&self, n: u64) -> Duration {
        match self.rate {
            Some(rate) => Duration::from_secs_f64(n as f64 / rate as f64),
            None => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dbs_are_spread_over_the_readers() {
        assert_eq!(groups::<u64>(&[]), Vec::<Vec<u64>>::new());
        assert_eq!(groups(&[0, 3]), vec![vec![0], vec![3]]);
        let g = groups(&[0, 1, 2, 3, 4, 5]);
        assert_eq!(g.len(), MAX_READERS);
        assert_eq!(g[0], vec![0, 4]);
    }

    #[test]
    fn the_limiter_spaces_keys_by_the_rate() {
        let l = Limiter::new(Some(1000));
        assert_eq!(l.due(50), Duration::from_millis(50));
        assert_eq!(Limiter::new(None).due(50), Duration::ZERO);
        assert_eq!(Limiter::new(Some(0)).due(50), Duration::ZERO);
    }
}
