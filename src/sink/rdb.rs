//! An RDB writer over any `Write`: the file header, `SELECTDB` and `RESIZEDB`, key records
//! whose values are copied as raw bytes from the input, and the EOF opcode with the CRC-64 of
//! everything before it.
//!
//! Where it sits: `import` streams what it keeps of an input RDB through it to a target that
//! full-syncs from rdbferry (`repl::master`): filters, renames, db mapping and expired keys
//! change which records go and under which name and db, never the value bytes, so the target
//! loads them as fast as it loads its own dump.
//!
//! What it deliberately does not do: encode values (`rdb::encoder` builds values for the
//! encodings no server writes any more), or check them (the caller validates each value
//! before handing it over, since a loader may abort on a bad one).

use std::io::Write;

use crate::rdb::crc::Crc64;
use crate::rdb::encoder::{put_length, put_string};
use crate::rdb::types::opcode;
use crate::rdb::{KeyRecord, Version};

/// Writes one RDB stream; every byte goes through the CRC.
pub struct RdbCopy<W: Write> {
    out: W,
    crc: Crc64,
    version: Version,
    db: Option<u64>,
    scratch: Vec<u8>,
    /// Bytes not yet checksummed and written: the CRC and the writes go in big pieces.
    buf: Vec<u8>,
    written: u64,
}

/// What is gathered before a CRC update and a write.
const BUF: usize = 1 << 20;

impl<W: Write> RdbCopy<W> {
    /// Start a stream of RDB `version` (the input's: type ids and encodings keep their
    /// meaning), writing the 9-byte header.
    pub fn new(out: W, version: Version) -> std::io::Result<Self> {
        let mut w = RdbCopy {
            out,
            crc: Crc64::new(),
            version,
            db: None,
            scratch: Vec::with_capacity(256),
            buf: Vec::with_capacity(BUF),
            written: 0,
        };
        let header = match version.dialect {
            crate::rdb::Dialect::Valkey => format!("VALKEY{:03}", version.number),
            _ => format!("REDIS{:04}", version.number),
        };
        w.put(header.as_bytes())?;
        Ok(w)
    }

    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.written += b.len() as u64;
        if self.buf.len() + b.len() <= BUF {
            self.buf.extend_from_slice(b);
            return Ok(());
        }
        self.drain()?;
        if b.len() >= BUF {
            self.crc.update(b);
            return self.out.write_all(b);
        }
        self.buf.extend_from_slice(b);
        Ok(())
    }

    fn drain(&mut self) -> std::io::Result<()> {
        self.crc.update(&self.buf);
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    fn put_scratch(&mut self) -> std::io::Result<()> {
        let s = std::mem::take(&mut self.scratch);
        let r = self.put(&s);
        self.scratch = s;
        self.scratch.clear();
        r
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Switch to `db`, with its sizing hint (keys, keys with a TTL) when known: the loader
    /// sizes its tables once instead of rehashing as they grow.
    pub fn select_db(&mut self, db: u64, hint: Option<(u64, u64)>) -> std::io::Result<()> {
        if self.db == Some(db) {
            return Ok(());
        }
        self.db = Some(db);
        self.scratch.push(opcode::SELECTDB);
        put_length(&mut self.scratch, db);
        // RESIZEDB came in RDB 7 (Redis 3.2).
        if let Some((keys, expires)) = hint.filter(|_| self.version.redis_equivalent() >= 7) {
            self.scratch.push(opcode::RESIZEDB);
            put_length(&mut self.scratch, keys);
            put_length(&mut self.scratch, expires);
        }
        self.put_scratch()
    }

    /// An AUX field.
    pub fn aux(&mut self, name: &[u8], value: &[u8]) -> std::io::Result<()> {
        self.scratch.push(opcode::AUX);
        put_string(&mut self.scratch, name, false);
        put_string(&mut self.scratch, value, false);
        self.put_scratch()
    }

    /// A key of the current db under the name `key`, with the record's expiry, LRU idle time
    /// and LFU counter, and its value bytes unchanged. Expiry is always written in
    /// milliseconds (a v1-v2 file's seconds are converted): every loader since RDB 3 reads it.
    pub fn key(&mut self, rec: &KeyRecord<'_>, key: &[u8]) -> std::io::Result<()> {
        self.key_raw(rec, key, rec.raw)
    }

    /// [`RdbCopy::key`] with the value bytes `raw` (a checked copy of `rec.raw`).
    pub fn key_raw(&mut self, rec: &KeyRecord<'_>, key: &[u8], raw: &[u8]) -> std::io::Result<()> {
        self.key_as(rec, key, rec.type_id, raw)
    }

    /// [`RdbCopy::key`] with the value bytes `raw` of type `type_id` (re-encoded for this
    /// stream's version by `rdb::reencode`, or a checked copy of `rec.raw`).
    pub fn key_as(
        &mut self,
        rec: &KeyRecord<'_>,
        key: &[u8],
        type_id: u8,
        raw: &[u8],
    ) -> std::io::Result<()> {
        self.key_head(rec, key, type_id)?;
        self.put(raw)
    }

    /// [`RdbCopy::key`] with a value re-encoded for this stream's version
    /// (`rdb::reencode`).
    pub fn key_encoded(
        &mut self,
        rec: &KeyRecord<'_>,
        key: &[u8],
        value: &crate::rdb::encoder::Encoded,
    ) -> std::io::Result<()> {
        self.key_as(rec, key, value.type_id, &value.bytes)
    }

    /// A function library (`FUNCTION2`, RDB 10+: the caller checks the version).
    pub fn function(&mut self, code: &[u8]) -> std::io::Result<()> {
        self.scratch.push(opcode::FUNCTION2);
        put_string(&mut self.scratch, code, false);
        self.put_scratch()
    }

    /// A module aux record, its bytes after the opcode as read (RDB 9+).
    pub fn module_aux(&mut self, raw: &[u8]) -> std::io::Result<()> {
        self.put(&[opcode::MODULE_AUX])?;
        self.put(raw)
    }

    /// [`RdbCopy::key`] for a value checked in place whose CRC-64 was `crc`: its bytes are
    /// copied out piece by piece as they are written, and the last piece is held back until
    /// the CRC of what was written proves them the same bytes. `Ok(false)`: they changed (the
    /// file was rewritten meanwhile); the last piece was not written, so the record is cut
    /// and the caller must abandon the stream.
    pub fn key_checked(
        &mut self,
        rec: &KeyRecord<'_>,
        key: &[u8],
        crc: u64,
    ) -> std::io::Result<bool> {
        self.key_head(rec, key, rec.type_id)?;
        let mut check = Crc64::new();
        let mut piece = Vec::with_capacity(BUF);
        let mut rest = rec.raw;
        while !rest.is_empty() {
            let (now, later) = rest.split_at(rest.len().min(BUF));
            piece.clear();
            piece.extend_from_slice(now);
            check.update(&piece);
            if later.is_empty() && check.value() != crc {
                return Ok(false);
            }
            self.put(&piece)?;
            rest = later;
        }
        Ok(true)
    }

    /// A key record's modifiers, type `type_id` and name (see [`put_key_head`]).
    fn key_head(&mut self, rec: &KeyRecord<'_>, key: &[u8], type_id: u8) -> std::io::Result<()> {
        put_key_head(&mut self.scratch, self.version, rec, key, type_id);
        self.put_scratch()
    }

    /// Whole key records of the current db (each as [`put_key_head`] and its value wrote
    /// it), back to back: workers encode them, the writing thread hands them on.
    pub fn key_records(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.put(bytes)
    }

    /// End the stream: the EOF opcode and, from RDB 5 on, the CRC-64 of everything before
    /// it. Returns the writer, flushed.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.put(&[opcode::EOF])?;
        self.drain()?;
        if self.version.has_checksum() {
            let crc = self.crc.value();
            self.out.write_all(&crc.to_le_bytes())?;
            self.written += 8;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Append a key record's modifiers, type `type_id` and name for a stream of `version`;
/// returns where the type byte is (a caller that learns the type only once it has written the
/// value sets it there). LRU and LFU hints only from RDB 9, whose loader first knows them.
pub fn put_key_head(
    out: &mut Vec<u8>,
    version: Version,
    rec: &KeyRecord<'_>,
    key: &[u8],
    type_id: u8,
) -> usize {
    let hints = version.redis_equivalent() >= 9;
    if let Some(ms) = rec.expire_ms {
        out.push(opcode::EXPIRETIME_MS);
        out.extend_from_slice(&ms.to_le_bytes());
    }
    if let Some(idle) = rec.idle.filter(|_| hints) {
        out.push(opcode::IDLE);
        put_length(out, idle);
    }
    if let Some(freq) = rec.freq.filter(|_| hints) {
        out.push(opcode::FREQ);
        out.push(freq);
    }
    let at = out.len();
    out.push(type_id);
    put_string(out, key, false);
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdb::{RdbReader, Record};

    /// Records copied through the writer, renamed and moved to another db, read back the same,
    /// and the checksum holds.
    #[test]
    fn copies_records_with_new_names_and_dbs() {
        use crate::rdb::encoder::{RdbWriter, value};
        let mut src = RdbWriter::new(9);
        src.select_db(0)
            .key(
                b"a",
                Some(4_102_444_800_000),
                &value::string(b"hello", false),
            )
            .key(b"b", None, &value::list_ziplist(&[b"x", b"y"]));
        let data = src.finish();
        let reader = RdbReader::new(&data, "src").unwrap();
        let mut w = RdbCopy::new(Vec::new(), reader.version()).unwrap();
        for rec in reader {
            if let Record::Key(k) = rec.unwrap() {
                w.select_db(3, Some((2, 1))).unwrap();
                let name = [b"new:".as_slice(), &k.key].concat();
                w.key(&k, &name).unwrap();
            }
        }
        let out = w.finish().unwrap();
        let mut back = RdbReader::new(&out, "out").unwrap();
        let keys: Vec<_> = back
            .by_ref()
            .filter_map(|r| match r.unwrap() {
                Record::Key(k) => Some((k.db, k.key.to_vec(), k.expire_ms, k.raw.to_vec())),
                _ => None,
            })
            .collect();
        assert_eq!(back.checksum_ok(), Some(true));
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].0, 3);
        assert_eq!(keys[0].1, b"new:a");
        assert_eq!(keys[0].2, Some(4_102_444_800_000));
        assert_eq!(keys[1].1, b"new:b");
        assert_eq!(keys[1].2, None);
    }
}
