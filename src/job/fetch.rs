//! `fetch`: take a live server's snapshot as a replica does and write it to a file (or to
//! standard output).
//!
//! The replica handshake ([`crate::repl::replica::psync`]: `REPLCONF listening-port` / `capa
//! eof psync2` / `rdb-only 1`, `PSYNC ? -1`, or `SYNC` on a server without `PSYNC`), then the
//! RDB, sent with a length or diskless with an end mark; the keep-alive newlines of a server
//! still saving are waited through for `--save-timeout`. The bytes go to an
//! [`AtomicFile`]: a temporary file next to the output, fsynced and renamed into place only
//! once the RDB is whole and its checksum verified; a transfer cut short, a bad checksum or a
//! signal leave no partial file behind (the temporary file is removed).
//!
//! What is checked as the bytes stream by, without decoding the records (so any value size
//! passes, in constant memory): the RDB header, the CRC-64 of every byte up to the checksum
//! (a zero checksum means the server has `rdbchecksum no`), and that the checksum follows the
//! EOF opcode (for versions before 5, which have no checksum: that the file ends with it).
//! The framing already proves the RDB arrived whole. Not done: counting keys (that would mean
//! decoding every record; `rdbferry check FILE` does it).

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Common;
use crate::error::{Error, Result};
use crate::net::{Conn, RedisUrl};
use crate::progress::Progress;
use crate::rdb::crc::Crc64;
use crate::rdb::{DecodeError, ErrorKind, Version};
use crate::repl::replica::{self, Framing, Handshake, ReplicaOptions, SyncStart};
use crate::sink::file::AtomicFile;

/// What to fetch, and where to.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The source (`--from`).
    pub from: RedisUrl,
    /// The output file; `-` for standard output.
    pub output: PathBuf,
    /// How long the source may take to start sending (`--save-timeout`).
    pub save_within: Duration,
    /// The command that asks for the sync (`--psync-command`).
    pub psync_command: Vec<u8>,
}

/// What `fetch` did.
#[derive(Debug, Clone, Serialize)]
pub struct FetchReport {
    /// The source, redacted.
    pub source: String,
    /// The output (`-` for standard output).
    pub output: String,
    /// Bytes of the RDB.
    pub bytes: u64,
    /// Its version, e.g. `v10`.
    pub rdb_version: String,
    /// `disk` (sent with its length) or `diskless` (with an end mark).
    pub transfer: &'static str,
    /// `verified`, `disabled` (a zero checksum: `rdbchecksum no`) or `none` (RDB < 5).
    pub checksum: &'static str,
    /// The replication id the snapshot belongs to (empty after a `SYNC` fallback).
    pub replid: String,
    /// The replication offset it is consistent with.
    pub offset: u64,
    /// Seconds from connecting to the end.
    pub elapsed_s: f64,
    /// Of which, waiting for the source to start sending (it saves first).
    pub wait_s: f64,
}

impl FetchReport {
    /// Throughput in MB/s over the whole run.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed_s.max(1e-9)
    }

    /// One line for the terminal.
    pub fn to_line(&self) -> String {
        let id = if self.replid.is_empty() {
            "no replication id (SYNC)".to_string()
        } else {
            format!("replid {} offset {}", self.replid, self.offset)
        };
        format!(
            "{} -> {}: {} bytes, RDB {}, checksum {}, {} transfer, {id}, {:.3} s ({:.3} s \
             waiting for the save), {:.1} MB/s",
            self.source,
            self.output,
            self.bytes,
            self.rdb_version,
            self.checksum,
            self.transfer,
            self.elapsed_s,
            self.wait_s,
            self.mb_per_s()
        )
    }
}

/// Where the bytes go.
enum Out {
    File(AtomicFile),
    Stdout(std::io::StdoutLock<'static>),
}

impl Out {
    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Out::File(f) => f.write_all(data),
            Out::Stdout(s) => s.write_all(data),
        }
    }
}

/// Fetch `opts.from`'s snapshot into `opts.output`; see the module doc.
pub fn fetch(common: &Common, opts: &FetchOptions) -> Result<FetchReport> {
    let start = Instant::now();
    let to_stdout = opts.output.as_os_str() == "-";
    let output = opts.output.display().to_string();
    // The output first: a directory that cannot take it costs the source no save.
    let mut out = if to_stdout {
        Out::Stdout(std::io::stdout().lock())
    } else {
        Out::File(AtomicFile::create(&opts.output)?)
    };
    let conn = Conn::open(&opts.from)?;
    let ropts = ReplicaOptions {
        psync_command: opts.psync_command.clone(),
        save_within: opts.save_within,
        cancel: common.cancel.clone(),
        rdb_only: true,
    };
    let (replid, offset, mut payload) = match replica::psync(conn, SyncStart::Full, &ropts) {
        Ok(Handshake::Full {
            replid,
            offset,
            payload,
        }) => (replid, offset, payload),
        Ok(Handshake::Continue { .. }) => {
            return Err(Error::Internal("+CONTINUE to PSYNC ? -1".into()));
        }
        Err(e) if matches!(e.kind, crate::net::NetErrorKind::Interrupted) => {
            return Err(Error::Cancelled);
        }
        Err(e) => return Err(e.into()),
    };
    let wait_s = start.elapsed().as_secs_f64();
    let source = payload.name().to_string();
    let (total, transfer) = match payload.framing() {
        Framing::Length(n) => (Some(n), "disk"),
        Framing::EofMark(_) => (None, "diskless"),
    };
    let mut progress = Progress::new(total, &source, common.quiet);
    let mut check = Integrity::default();
    let mut chunk = vec![0u8; 256 << 10];
    loop {
        common.cancel.check()?;
        let n = match payload.read_bytes(&mut chunk)? {
            0 => break,
            n => n,
        };
        check.update(&chunk[..n]);
        out.write(&chunk[..n])
            .map_err(|e| Error::io(output.clone(), e))?;
        progress.tick(check.bytes, 0);
    }
    progress.finish();
    let bytes = check.bytes;
    let (version, checksum) = check.finish(&source)?;
    match out {
        Out::File(f) => f.commit()?,
        Out::Stdout(mut s) => s.flush().map_err(|e| Error::io(output.clone(), e))?,
    }
    Ok(FetchReport {
        source,
        output,
        bytes,
        rdb_version: version.to_string(),
        transfer,
        checksum,
        replid,
        offset,
        elapsed_s: start.elapsed().as_secs_f64(),
        wait_s,
    })
}

/// The checks made as the RDB streams by: its header, and the CRC-64 of every byte but the
/// last 8 (the checksum), held back until the end.
#[derive(Default)]
struct Integrity {
    head: Vec<u8>,
    crc: Crc64,
    /// The last (up to) 9 bytes seen: the EOF opcode and the checksum, at the end.
    tail: Vec<u8>,
    bytes: u64,
}

/// The EOF opcode, then the 8-byte checksum (RDB 5+).
const TRAILER: usize = 9;

impl Integrity {
    fn update(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        if self.head.len() < 9 {
            let take = (9 - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
        }
        if data.len() >= TRAILER {
            self.crc.update(&self.tail);
            let (body, last) = data.split_at(data.len() - TRAILER);
            self.crc.update(body);
            self.tail.clear();
            self.tail.extend_from_slice(last);
        } else {
            self.tail.extend_from_slice(data);
            if self.tail.len() > TRAILER {
                let extra = self.tail.len() - TRAILER;
                self.crc.update(&self.tail[..extra]);
                self.tail.drain(..extra);
            }
        }
    }

    /// The version, and how the checksum was found (`verified`, `disabled`, `none`); an
    /// error names `source` and what is wrong.
    fn finish(mut self, source: &str) -> Result<(Version, &'static str)> {
        let corrupt = |offset: u64, kind| {
            Error::Rdb(crate::rdb::Error::from_decode(
                source,
                None,
                DecodeError::new(offset, kind),
            ))
        };
        let version = Version::parse_header(&self.head)
            .map_err(|magic| corrupt(0, ErrorKind::BadMagic(magic)))?;
        let no_eof = |at| {
            corrupt(
                at,
                ErrorKind::Invalid("the snapshot does not end with the EOF opcode".into()),
            )
        };
        if !version.has_checksum() {
            return match self.tail.last() {
                Some(0xFF) if self.bytes > 9 => Ok((version, "none")),
                _ => Err(no_eof(self.bytes.saturating_sub(1))),
            };
        }
        let at = self.bytes.saturating_sub(TRAILER as u64);
        if self.bytes < 9 + TRAILER as u64 || self.tail[0] != 0xFF {
            return Err(no_eof(at));
        }
        self.crc.update(&self.tail[..1]);
        let mut stored = [0u8; 8];
        stored.copy_from_slice(&self.tail[1..]);
        let stored = u64::from_le_bytes(stored);
        if stored == 0 {
            return Ok((version, "disabled"));
        }
        let computed = self.crc.value();
        if computed != stored {
            return Err(corrupt(
                at + 1,
                ErrorKind::ChecksumMismatch { stored, computed },
            ));
        }
        Ok((version, "verified"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdb::crc::crc64;

    fn rdb(version: &str, checksum: Option<u64>) -> Vec<u8> {
        let mut v = format!("REDIS{version}").into_bytes();
        v.extend_from_slice(b"\xfe\x00\x00\x01k\x01v\xff");
        if let Some(c) = checksum {
            let c = if c == 1 { crc64(&v) } else { c };
            v.extend_from_slice(&c.to_le_bytes());
        }
        v
    }

    fn run(data: &[u8], split: usize) -> Result<(Version, &'static str)> {
        let mut i = Integrity::default();
        for piece in data.chunks(split.max(1)) {
            i.update(piece);
        }
        i.finish("src")
    }

    #[test]
    fn checksums_in_any_split() {
        let good = rdb("0010", Some(1));
        for split in 1..good.len() + 1 {
            let (v, how) = run(&good, split).unwrap();
            assert_eq!((v.number, how), (10, "verified"));
        }
        assert_eq!(run(&rdb("0010", Some(0)), 3).unwrap().1, "disabled");
        assert_eq!(run(&rdb("0004", None), 2).unwrap().1, "none");
        let mut bad = good.clone();
        bad[12] ^= 1;
        let e = run(&bad, 5).unwrap_err().to_string();
        assert!(e.contains("checksum mismatch"), "{e}");
        let e = run(&good[..good.len() - 1], 7).unwrap_err().to_string();
        assert!(e.contains("EOF opcode"), "{e}");
        let e = run(b"HELLO0010", 4).unwrap_err().to_string();
        assert!(e.contains("bad magic"), "{e}");
    }
}
