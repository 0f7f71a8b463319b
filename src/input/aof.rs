//! Walking AOF inputs: the RESP part of a file (after an RDB preamble, if any), a multi-part
//! `appendonlydir`, and AOF bytes arriving on a stream (stdin).

use std::io::Read;
use std::path::Path;

use super::{Event, Mapped, Walked, walk_file};
use crate::aof::{AofError, AofErrorKind, AofReader, Manifest};
use crate::error::{Error, Result};
use crate::rdb::ReadOptions;
use crate::resp::parse_command;

fn is_select(args: &[&[u8]]) -> bool {
    args.first()
        .is_some_and(|a| a.eq_ignore_ascii_case(b"select"))
}

/// Walk the commands of one AOF file from `start` (the end of its RDB preamble, or 0).
/// Returns where a truncated tail was cut, when `last` allows cutting.
pub fn walk_commands(
    name: &str,
    data: &[u8],
    start: u64,
    db: u64,
    last: bool,
    base: u64,
    f: &mut dyn FnMut(Event<'_, '_>, u64) -> Result<()>,
) -> Result<(Option<u64>, u64)> {
    let mut r = AofReader::new(data, start, db, name).last_file(last);
    for cmd in r.by_ref() {
        let cmd = cmd?;
        if is_select(&cmd.args) {
            continue;
        }
        f(
            Event::Command {
                db: cmd.db,
                args: &cmd.args,
            },
            base + cmd.offset,
        )?;
    }
    Ok((r.truncated_at(), r.db()))
}

/// Walk a Redis 7 multi-part AOF directory: base (RDB or AOF), then incr files in manifest
/// order; history files are never replayed.
pub fn walk_dir(
    dir: &Path,
    name: &str,
    opts: &ReadOptions,
    f: &mut dyn FnMut(Event<'_, '_>, u64) -> Result<()>,
) -> Result<Walked> {
    let (manifest, _) = Manifest::load(dir)?;
    let files = manifest.replay_files();
    let mut out = Walked::default();
    let mut base = 0u64;
    for (i, e) in files.iter().enumerate() {
        let path = e.path(dir);
        let fname = path.display().to_string();
        let last = i + 1 == files.len();
        let map = match Mapped::open(&path, &fname) {
            Ok(m) => m,
            Err(Error::Io { err, .. }) => {
                return Err(Error::Input {
                    path: name.into(),
                    msg: format!("manifest lists {fname}, which cannot be read: {err}"),
                });
            }
            Err(e) => return Err(e),
        };
        let data: &[u8] = map.as_deref().unwrap_or_default();
        // Redis loads each file with a fresh client, so every file starts in db 0.
        let w = walk_file(&fname, data, opts, last, base, 0, f);
        let w = match &map {
            Some(m) => m.settle(w)?,
            None => w?,
        };
        if out.rdb_version.is_none() {
            out.rdb_version = w.rdb_version;
            out.redis_ver = w.redis_ver;
        }
        if w.truncated_at.is_some() {
            out.truncated_at = w.truncated_at;
        }
        base += data.len() as u64;
    }
    out.bytes = base;
    Ok(out)
}

/// Walk AOF commands arriving on a stream. `offset` is where the stream starts in the input
/// (after an RDB preamble). Returns (where a truncated tail was cut, bytes read in all).
pub fn walk_stream<R: Read>(
    name: &str,
    mut r: R,
    offset: u64,
    f: &mut dyn FnMut(Event<'_, '_>, u64) -> Result<()>,
) -> Result<(Option<u64>, u64)> {
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut start = 0usize;
    let mut pos = offset;
    let mut db = 0u64;
    // Commands of an open MULTI, held until EXEC so a cut-off transaction is never replayed.
    let mut tx: Option<(u64, Vec<Vec<Vec<u8>>>)> = None;
    let corrupt = |off: u64, kind: AofErrorKind| -> Error {
        Error::Aof(AofError::Corrupt {
            source_name: name.to_string(),
            offset: off,
            kind,
        })
    };
    loop {
        // Take every whole command (or annotation line) the buffer holds.
        loop {
            let rest = &buf[start..];
            if rest.first() == Some(&b'#') {
                let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                    break;
                };
                start += nl + 1;
                pos += nl as u64 + 1;
                continue;
            }
            let mut args = Vec::new();
            let used = match parse_command(rest, &mut args) {
                Ok(Some(used)) => used,
                Ok(None) => break,
                Err(e) => return Err(corrupt(pos + e.offset, AofErrorKind::Resp(e.kind))),
            };
            let at = pos;
            start += used;
            pos += used as u64;
            let name0 = args.first().copied().unwrap_or_default();
            if is_select(&args) {
                db = std::str::from_utf8(args.get(1).copied().unwrap_or_default())
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| corrupt(at, AofErrorKind::BadSelect("bad db index".into())))?;
            } else if name0.eq_ignore_ascii_case(b"multi") {
                tx = Some((at, vec![args.iter().map(|a| a.to_vec()).collect()]));
            } else if let Some((_, t)) = tx.as_mut() {
                t.push(args.iter().map(|a| a.to_vec()).collect());
                if t.len() > crate::aof::MAX_TRANSACTION_COMMANDS {
                    let commands = t.len();
                    return Err(corrupt(
                        at,
                        AofErrorKind::TransactionTooLarge { commands, args: 0 },
                    ));
                }
                if name0.eq_ignore_ascii_case(b"exec") || name0.eq_ignore_ascii_case(b"discard") {
                    for c in tx.take().map(|t| t.1).unwrap_or_default() {
                        let refs: Vec<&[u8]> = c.iter().map(|a| a.as_slice()).collect();
                        f(Event::Command { db, args: &refs }, at)?;
                    }
                }
            } else {
                f(Event::Command { db, args: &args }, at)?;
            }
        }
        // Refill: keep the unread tail, read more; at end of input, report a cut-off tail.
        buf.drain(..start);
        start = 0;
        let old = buf.len();
        buf.resize(old + (1 << 16).max(old), 0);
        let n = loop {
            match r.read(&mut buf[old..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(name, e)),
            }
        };
        buf.truncate(old + n);
        if n == 0 {
            // A transaction without EXEC is cut off at its MULTI, a partial command at its
            // start; a last annotation without its newline is a clean end (as in Redis).
            let cut = match &tx {
                Some((multi_at, _)) => Some(*multi_at),
                None if !buf.is_empty() && buf[0] != b'#' => Some(pos),
                None => None,
            };
            return Ok((cut, pos + buf.len() as u64));
        }
    }
}
