//! The RDB reader: a pull iterator of borrowed [`Record`]s.
//!
//! Design: one decoder ([`Decoder::next_record`]) turns the bytes at the current position into
//! one record, or reports [`ErrorKind::Truncated`] when they hold no whole record. Two drivers
//! share it: [`RdbReader`] over a complete slice (a memory-mapped file), where truncation is
//! an error, and [`StreamReader`] over any `Read` (stdin, later a replication socket), which
//! refills its buffer and tries again. Pull rather than push so that callers set the pace
//! (batching for rayon, stopping early, zipping two sources); a visitor is a loop on top.

use std::io::Read;

use super::crc::{Crc64, crc64};
use super::cursor::{Cursor, RStr};
use super::error::{DecodeError, DecodeResult, Error, ErrorKind};
use super::module::{ModuleId, skip_module_data};
use super::spill::Buffer;
use super::types::{Dialect, Version, opcode};
use super::value::{Value, skip_value};

/// One item of an RDB file.
#[derive(Debug, Clone)]
pub enum Record<'a> {
    /// An AUX field (`redis-ver`, `ctime`, ...).
    Aux {
        /// Field name.
        name: RStr<'a>,
        /// Field value.
        value: RStr<'a>,
    },
    /// The following keys belong to this db.
    SelectDb(u64),
    /// Sizing hint for the current db.
    ResizeDb {
        /// Keys in the db.
        db_size: u64,
        /// Keys with a TTL.
        expires_size: u64,
    },
    /// Cluster slot sizing hint (7.4+).
    SlotInfo {
        /// Slot number.
        slot: u64,
        /// Keys in the slot.
        size: u64,
        /// Keys with a TTL in the slot.
        expires_size: u64,
    },
    /// Module auxiliary data, kept raw.
    ModuleAux {
        /// Module type id.
        id: ModuleId,
        /// 1 = before the keyspace, 2 = after.
        when: u64,
        /// The raw record bytes after the opcode.
        raw: &'a [u8],
    },
    /// A function library (its full source; the first line names engine and library).
    Function {
        /// Library code.
        code: RStr<'a>,
    },
    /// A key and its value.
    Key(KeyRecord<'a>),
    /// End of file; `checksum` is the stored trailer (None before v5, Some(0) = disabled).
    Eof {
        /// Stored checksum.
        checksum: Option<u64>,
    },
}

/// A key, its metadata, and its value both raw and as a lazy view.
#[derive(Debug, Clone)]
pub struct KeyRecord<'a> {
    /// Database index.
    pub db: u64,
    /// The key name.
    pub key: RStr<'a>,
    /// Absolute expiry, Unix ms.
    pub expire_ms: Option<i64>,
    /// LRU idle seconds.
    pub idle: Option<u64>,
    /// LFU counter.
    pub freq: Option<u8>,
    /// Value type id.
    pub type_id: u8,
    /// The serialized value exactly as stored (after the key), for RESTORE.
    pub raw: &'a [u8],
    /// Offset of the record (its first modifier or type byte) in the input.
    pub offset: u64,
    /// Offset of `raw` in the input.
    pub value_offset: u64,
    /// The file's version (decides the meaning of some type ids).
    pub version: Version,
    /// The value was encoded by rdbferry from another form (a JSONL line), not read from an
    /// RDB: `raw` decodes like any value, but it is not bytes a Redis server wrote, so `import`
    /// in auto mode rebuilds such keys with commands rather than RESTORE them.
    pub synthetic: bool,
}

impl<'a> KeyRecord<'a> {
    /// Open the lazy view of the value.
    pub fn value(&self) -> DecodeResult<Value<'a>> {
        Value::open(
            self.type_id,
            self.raw,
            self.value_offset,
            self.version.dialect,
        )
    }
    /// Walk the whole value to prove it well-formed; returns its element count (see
    /// [`Value::validate`]). Strings are checked without being copied.
    pub fn validate(&self) -> DecodeResult<u64> {
        if self.type_id == super::types::type_id::STRING {
            super::value::validate_string(self.raw, self.value_offset)?;
            return Ok(1);
        }
        self.value()?.validate()
    }

    /// The Redis type of the value.
    pub fn data_type(&self) -> super::types::DataType {
        super::types::DataType::of(self.type_id)
    }
    /// Size of the record in the file.
    pub fn serialized_len(&self) -> u64 {
        self.value_offset + self.raw.len() as u64 - self.offset
    }
}

/// A decode failure, with the key when it happened inside a key record.
#[derive(Debug)]
pub struct RecordError {
    /// The failure.
    pub error: DecodeError,
    /// The key being read.
    pub key: Option<Vec<u8>>,
}

impl From<DecodeError> for RecordError {
    fn from(error: DecodeError) -> Self {
        RecordError { error, key: None }
    }
}

/// The state machine shared by every driver: version, current db, position.
#[derive(Debug, Clone)]
pub struct Decoder {
    version: Version,
    db: u64,
    offset: u64,
    finished: bool,
}

/// Size of the RDB header.
pub const HEADER_LEN: usize = 9;

impl Decoder {
    /// Read the 9-byte header at the start of `buf`.
    pub fn new(buf: &[u8]) -> DecodeResult<Decoder> {
        if buf.len() < HEADER_LEN {
            return Err(DecodeError::new(
                0,
                ErrorKind::Truncated {
                    needed: (HEADER_LEN - buf.len()) as u64,
                },
            ));
        }
        let version =
            Version::parse_header(buf).map_err(|m| DecodeError::new(0, ErrorKind::BadMagic(m)))?;
        if !version.is_supported() {
            return Err(DecodeError::new(
                0,
                ErrorKind::UnsupportedVersion(version.to_string()),
            ));
        }
        Ok(Decoder {
            version,
            db: 0,
            offset: HEADER_LEN as u64,
            finished: false,
        })
    }

    /// The file's version.
    pub fn version(&self) -> Version {
        self.version
    }
    /// Offset of the next record.
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// Whether EOF was read.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Decode the record at the start of `buf` (which is at `self.offset()` in the input).
    /// On success returns the record and the bytes it used, and advances.
    pub fn next_record<'a>(&mut self, buf: &'a [u8]) -> Result<(Record<'a>, usize), RecordError> {
        let mut c = Cursor::new(buf, self.offset);
        let rec = self.decode(&mut c)?;
        let used = c.pos();
        match &rec {
            Record::SelectDb(db) => self.db = *db,
            Record::Eof { .. } => self.finished = true,
            _ => {}
        }
        self.offset += used as u64;
        Ok((rec, used))
    }

    fn decode<'a>(&self, c: &mut Cursor<'a>) -> Result<Record<'a>, RecordError> {
        let v = self.version;
        let start = c.offset();
        let (mut expire_ms, mut idle, mut freq) = (None, None, None);
        loop {
            let at = c.offset();
            let op = c.u8()?;
            match op {
                opcode::EOF => {
                    let checksum = if v.has_checksum() {
                        Some(c.u64_le()?)
                    } else {
                        None
                    };
                    return Ok(Record::Eof { checksum });
                }
                opcode::SELECTDB => return Ok(Record::SelectDb(c.length()?)),
                opcode::RESIZEDB => {
                    return Ok(Record::ResizeDb {
                        db_size: c.length()?,
                        expires_size: c.length()?,
                    });
                }
                opcode::AUX => {
                    return Ok(Record::Aux {
                        name: c.string()?,
                        value: c.string()?,
                    });
                }
                opcode::EXPIRETIME_MS => expire_ms = Some(c.i64_le()?),
                opcode::EXPIRETIME => expire_ms = Some(c.u32_le()? as i32 as i64 * 1000),
                opcode::IDLE => idle = Some(c.length()?),
                opcode::FREQ => freq = Some(c.u8()?),
                opcode::MODULE_AUX => {
                    let body = c.pos();
                    let id = ModuleId(c.length()?);
                    let tag_at = c.offset();
                    if c.length()? != 2 {
                        return Err(DecodeError::invalid(
                            tag_at,
                            "MODULE_AUX without its 'when' field",
                        )
                        .into());
                    }
                    let when = c.length()?;
                    skip_module_data(c)?;
                    return Ok(Record::ModuleAux {
                        id,
                        when,
                        raw: c.since(body),
                    });
                }
                opcode::FUNCTION2 => return Ok(Record::Function { code: c.string()? }),
                opcode::FUNCTION_PRE_GA => {
                    // 7.0-rc1/rc2 only: name, engine, optional description, code.
                    c.skip_string()?;
                    c.skip_string()?;
                    if c.length()? != 0 {
                        c.skip_string()?;
                    }
                    return Ok(Record::Function { code: c.string()? });
                }
                opcode::SLOT_INFO if v.number >= 12 => {
                    return Ok(Record::SlotInfo {
                        slot: c.length()?,
                        size: c.length()?,
                        expires_size: c.length()?,
                    });
                }
                t if v.accepts_type(t) => {
                    if t == super::types::type_id::MODULE_PRE_GA {
                        return Err(DecodeError::invalid(
                            at,
                            "module value of pre-GA type 6 (Redis 4.0 RC) has no sub-opcodes and cannot be skipped without its module",
                        )
                        .into());
                    }
                    if v.dialect == Dialect::Valkey && t == 23 {
                        return Err(DecodeError::invalid(
                            at,
                            "Valkey PATH_HASH (type 23) is not supported",
                        )
                        .into());
                    }
                    let key = c.string()?;
                    let value_offset = c.offset();
                    let vstart = c.pos();
                    if let Err(e) = skip_value(c, t, v.dialect) {
                        return Err(RecordError {
                            error: e,
                            key: Some(key.into_owned()),
                        });
                    }
                    return Ok(Record::Key(KeyRecord {
                        db: self.db,
                        key,
                        expire_ms,
                        idle,
                        freq,
                        type_id: t,
                        raw: c.since(vstart),
                        offset: start,
                        value_offset,
                        version: v,
                        synthetic: false,
                    }));
                }
                t => {
                    return Err(DecodeError::new(
                        at,
                        ErrorKind::UnknownType {
                            type_id: t,
                            dialect: v.to_string(),
                        },
                    )
                    .into());
                }
            }
        }
    }
}

/// Reader options.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Go on past a checksum mismatch.
    pub ignore_checksum: bool,
}

/// Pull reader over a complete RDB in memory (usually a memory map).
///
/// ```
/// use rdbferry::rdb::{RdbReader, Record};
/// # fn main() -> Result<(), rdbferry::rdb::Error> {
/// let bytes = b"REDIS0006\xfe\x00\x00\x03foo\x03bar\xff\x00\x00\x00\x00\x00\x00\x00\x00";
/// let mut keys = 0;
/// for rec in RdbReader::new(bytes, "example.rdb")? {
///     if let Record::Key(k) = rec? {
///         assert_eq!(&*k.key, b"foo");
///         keys += 1;
///     }
/// }
/// assert_eq!(keys, 1);
/// # Ok(()) }
/// ```
pub struct RdbReader<'a> {
    data: &'a [u8],
    dec: Decoder,
    source: String,
    opts: ReadOptions,
    done: bool,
    checksum_ok: Option<bool>,
    /// The caller computes the checksum ([`RdbReader::defer_checksum`]); after EOF, the
    /// stored one and the length of the bytes it covers.
    deferred: Option<Option<(u64, u64)>>,
}

impl<'a> RdbReader<'a> {
    /// Start reading `data`; `source` names it in errors.
    pub fn new(data: &'a [u8], source: &str) -> Result<Self, Error> {
        Self::with_options(data, source, ReadOptions::default())
    }

    /// Start reading with options.
    pub fn with_options(data: &'a [u8], source: &str, opts: ReadOptions) -> Result<Self, Error> {
        let dec = Decoder::new(data).map_err(|e| Error::from_decode(source, None, e))?;
        Ok(RdbReader {
            data,
            dec,
            source: source.to_string(),
            opts,
            done: false,
            checksum_ok: None,
            deferred: None,
        })
    }

    /// Leave the checksum to the caller, who can compute it in pieces on several threads: at
    /// EOF the reader computes nothing, [`RdbReader::checksum_span`] says what to cover, and
    /// [`RdbReader::check_checksum`] compares.
    pub fn defer_checksum(mut self) -> Self {
        self.deferred = Some(None);
        self
    }

    /// After EOF, with [`RdbReader::defer_checksum`]: the length of the bytes the stored
    /// checksum covers (from the start of the input). `None` before EOF, or when there is no
    /// checksum to verify (RDB before v5, or stored as 0: disabled).
    pub fn checksum_span(&self) -> Option<u64> {
        self.deferred.flatten().map(|(_, len)| len)
    }

    /// Compare `computed`, the CRC-64 of the bytes [`RdbReader::checksum_span`] names, with
    /// the stored checksum: a mismatch is an error unless the checksum is ignored.
    pub fn check_checksum(&mut self, computed: u64) -> Result<(), Error> {
        let Some((stored, len)) = self.deferred.flatten() else {
            return Ok(());
        };
        self.compare_checksum(stored, computed, len)
    }

    /// The file's version.
    pub fn version(&self) -> Version {
        self.dec.version()
    }
    /// The whole input.
    pub fn input(&self) -> &'a [u8] {
        self.data
    }
    /// Bytes consumed so far (after EOF: the whole RDB including its checksum).
    pub fn position(&self) -> u64 {
        self.dec.offset()
    }
    /// Total input size.
    pub fn len(&self) -> u64 {
        self.data.len() as u64
    }
    /// Whether the input is empty.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// After EOF: whether the checksum matched (None: absent or disabled).
    pub fn checksum_ok(&self) -> Option<bool> {
        self.checksum_ok
    }
    /// The input's name.
    pub fn source(&self) -> &str {
        &self.source
    }

    fn verify_checksum(&mut self, stored: Option<u64>, eof_end: usize) -> Result<(), Error> {
        let Some(stored) = stored else { return Ok(()) };
        if stored == 0 {
            return Ok(());
        }
        let covered = (eof_end - 8) as u64;
        if self.deferred.is_some() {
            self.deferred = Some(Some((stored, covered)));
            return Ok(());
        }
        let computed = crc64(&self.data[..eof_end - 8]);
        self.compare_checksum(stored, computed, covered)
    }

    fn compare_checksum(&mut self, stored: u64, computed: u64, covered: u64) -> Result<(), Error> {
        self.checksum_ok = Some(computed == stored);
        if computed != stored && !self.opts.ignore_checksum {
            return Err(Error::from_decode(
                &self.source,
                None,
                DecodeError::new(covered, ErrorKind::ChecksumMismatch { stored, computed }),
            ));
        }
        Ok(())
    }
}

impl<'a> Iterator for RdbReader<'a> {
    type Item = Result<Record<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let pos = self.dec.offset() as usize;
        let buf = &self.data[pos.min(self.data.len())..];
        match self.dec.next_record(buf) {
            Ok((rec, used)) => {
                if let Record::Eof { checksum } = rec {
                    self.done = true;
                    if let Err(e) = self.verify_checksum(checksum, pos + used) {
                        return Some(Err(e));
                    }
                }
                Some(Ok(rec))
            }
            Err(RecordError { error, key }) => {
                self.done = true;
                Some(Err(Error::from_decode(&self.source, key.as_deref(), error)))
            }
        }
    }
}

/// The stream reader's buffer while no record needs more.
const HEAP_BUF: usize = 1 << 16;

/// Pull reader over a byte stream. Records borrow the internal buffer until the next call.
///
/// The buffer grows only to hold one whole record, up to `max_record` bytes (then an error);
/// past [`super::spill::SPILL_AT`] it moves to an unlinked temporary file in
/// [`StreamReader::spill_dir`] (default: the system's), mapped, so that a huge value costs page
/// cache rather than anonymous memory (see [`super::spill`]).
/// When a record does not fit in what is buffered, it is decoded again after a refill that at
/// least doubles what is buffered; each attempt costs at most as much as the bytes it saw, so
/// the total stays linear however small the chunks the reader returns.
pub struct StreamReader<R: Read> {
    r: R,
    buf: Buffer,
    start: usize,
    end: usize,
    dec: Option<Decoder>,
    crc: Crc64,
    source: String,
    opts: ReadOptions,
    eof: bool,
    done: bool,
    max_record: usize,
    consumed_total: u64,
}

impl<R: Read> StreamReader<R> {
    /// Wrap a reader; `source` names it in errors.
    pub fn new(r: R, source: &str) -> Self {
        StreamReader {
            r,
            buf: Buffer::new(HEAP_BUF, std::env::temp_dir()),
            start: 0,
            end: 0,
            dec: None,
            crc: Crc64::new(),
            source: source.to_string(),
            opts: ReadOptions::default(),
            eof: false,
            done: false,
            max_record: 1 << 36,
            consumed_total: 0,
        }
    }

    /// Put records larger than the heap buffer in a temporary file in `dir`.
    pub fn spill_dir(mut self, dir: std::path::PathBuf) -> Self {
        self.buf.set_dir(dir);
        self
    }

    /// Records above `n` bytes go to the temporary file (tests; default
    /// [`super::spill::SPILL_AT`]).
    pub fn spill_at(mut self, n: usize) -> Self {
        self.buf.set_spill_at(n);
        self
    }

    /// Whether the record being read is held in a temporary file.
    pub fn spilled(&self) -> bool {
        self.buf.spilled()
    }

    /// Set reader options.
    pub fn options(mut self, opts: ReadOptions) -> Self {
        self.opts = opts;
        self
    }

    /// Limit the size of one record held in memory.
    pub fn max_record(mut self, n: usize) -> Self {
        self.max_record = n;
        self
    }

    /// The version, once the header was read.
    pub fn version(&self) -> Option<Version> {
        self.dec.as_ref().map(|d| d.version())
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.consumed_total
    }

    /// Bytes buffered after the RDB (e.g. the AOF tail after a preamble), and the reader.
    pub fn into_rest(self) -> (Vec<u8>, R) {
        (self.buf[self.start..self.end].to_vec(), self.r)
    }

    fn io_err(&self, err: std::io::Error) -> Error {
        Error::Io {
            source_name: self.source.clone(),
            err,
        }
    }

    /// Once the big record is consumed, back to the heap with what follows it.
    fn unspill(&mut self) {
        if self.buf.spilled() && self.end - self.start <= HEAP_BUF / 2 {
            self.buf.shrink(HEAP_BUF, self.start..self.end);
            self.end -= self.start;
            self.start = 0;
        }
    }

    fn fill(&mut self) -> Result<(), Error> {
        self.unspill();
        if self.start > 0 && (self.start > self.buf.len() / 2 || self.end == self.buf.len()) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            if self.buf.len() >= self.max_record {
                return Err(Error::from_decode(
                    &self.source,
                    None,
                    DecodeError::invalid(
                        self.consumed_total,
                        format!(
                            "record larger than the {} byte buffer limit",
                            self.max_record
                        ),
                    ),
                ));
            }
            let n = (self.buf.len() * 2).min(self.max_record);
            let end = self.end;
            self.buf.grow(n, end).map_err(|e| self.io_err(e))?;
        }
        loop {
            match self.r.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_err(e)),
            }
        }
    }

    /// Refill after a decode attempt ran out of bytes, before the next attempt.
    ///
    /// Each attempt decodes the record from its start, costing as much as the bytes buffered,
    /// so the buffered bytes must grow geometrically between attempts: at least double, or
    /// gain what the decoder said was missing if that is more. Retrying after every `read`
    /// instead was quadratic when the reader hands out small chunks (a socket, a pipe, a
    /// byte-at-a-time reader): a 32 KB list read one byte per call took over 10 s (found by
    /// the `rdb_stream` fuzz target). This may read past the end of the record, which only
    /// matters for a source that stalls mid-file; give such a source a length-limited reader.
    fn refill_for_retry(&mut self, e: &DecodeError) -> Result<(), Error> {
        let have = self.end - self.start;
        let needed = match e.kind {
            ErrorKind::Truncated { needed } => usize::try_from(needed).unwrap_or(usize::MAX),
            _ => 1,
        };
        let want = have
            .saturating_add(needed.max(have).max(1))
            .min(self.max_record);
        loop {
            // At least one read, so that a full buffer at `max_record` reports its error.
            self.fill()?;
            if self.eof || self.end - self.start >= want {
                return Ok(());
            }
        }
    }

    fn truncated(&self, e: DecodeError, key: Option<Vec<u8>>) -> Error {
        Error::from_decode(&self.source, key.as_deref(), e)
    }

    fn consume(&mut self, n: usize) {
        self.crc.update(&self.buf[self.start..self.start + n]);
        self.start += n;
        self.consumed_total += n as u64;
    }

    /// The next record, or `None` after EOF.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, Error> {
        if self.done {
            return Ok(None);
        }
        self.unspill();
        if self.dec.is_none() {
            loop {
                match Decoder::new(&self.buf[self.start..self.end]) {
                    Ok(d) => {
                        self.dec = Some(d);
                        self.consume(HEADER_LEN);
                        break;
                    }
                    Err(e) if e.is_truncated() && !self.eof => self.fill()?,
                    Err(e) => {
                        self.done = true;
                        return Err(Error::from_decode(&self.source, None, e));
                    }
                }
            }
        }
        // First pass: find the record's size, refilling until it is whole.
        let used = loop {
            let Some(dec) = self.dec.as_mut() else {
                return Ok(None);
            };
            let mut probe = dec.clone();
            match probe.next_record(&self.buf[self.start..self.end]) {
                Ok((_, used)) => break used,
                Err(RecordError { error, .. }) if error.is_truncated() && !self.eof => {
                    self.refill_for_retry(&error)?;
                }
                Err(RecordError { error, key }) => {
                    self.done = true;
                    return Err(self.truncated(error, key));
                }
            }
        };
        // The record is whole: account for it, then decode it for the caller.
        let before = self.start;
        let crc_before = self.crc.clone();
        self.consume(used);
        let Some(dec) = self.dec.as_mut() else {
            return Ok(None);
        };
        let (rec, _) = dec.next_record(&self.buf[before..before + used]).map_err(
            |RecordError { error, key }| Error::from_decode(&self.source, key.as_deref(), error),
        )?;
        // Key modifiers (EXPIRETIME_MS, IDLE, FREQ) may precede the EOF opcode, as Redis's
        // loader allows: the record, not its first byte, says whether this is the end.
        if let Record::Eof { checksum } = rec {
            self.done = true;
            if let Some(stored) = checksum {
                // The checksum covers everything before it, EOF opcode and modifiers included.
                let mut crc = crc_before;
                crc.update(&self.buf[before..before + used - 8]);
                let computed = crc.value();
                if stored != 0 && stored != computed && !self.opts.ignore_checksum {
                    return Err(Error::from_decode(
                        &self.source,
                        None,
                        DecodeError::new(
                            self.consumed_total - 8,
                            ErrorKind::ChecksumMismatch { stored, computed },
                        ),
                    ));
                }
            }
        }
        Ok(Some(rec))
    }
}

#[cfg(test)]
mod spill_tests {
    use super::*;
    use crate::rdb::encoder::{RdbWriter, value};

    /// Hands out at most `chunk` bytes per read, as a socket does.
    struct Chunked<'a> {
        data: &'a [u8],
        chunk: usize,
    }

    impl Read for Chunked<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.chunk.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// A record larger than the heap buffer is read from a temporary file, byte for byte, and
    /// the buffer is back on the heap for the records after it.
    #[test]
    fn a_huge_record_goes_through_a_file_and_back() {
        let big: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut w = RdbWriter::new(10);
        w.select_db(0);
        w.key(b"small:1", None, &value::string(b"one", false));
        w.key(b"big", Some(1_900_000_000_000), &value::string(&big, false));
        w.key(b"small:2", None, &value::string(b"two", false));
        let data = w.finish();
        let chunked = Chunked {
            data: &data,
            chunk: 60_000,
        };
        let mut r = StreamReader::new(chunked, "test").spill_at(1 << 20);
        let mut seen = Vec::new();
        while let Some(rec) = r.next_record().unwrap() {
            if let Record::Key(k) = rec {
                let v = k.value().unwrap();
                let Value::String(s) = v else {
                    panic!("not a string")
                };
                seen.push((k.key.to_vec(), s.to_vec(), r.spilled()));
            }
        }
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0], (b"small:1".to_vec(), b"one".to_vec(), false));
        assert_eq!(seen[1].0, b"big");
        assert!(seen[1].1 == big, "the big value differs");
        assert!(seen[1].2, "the big record was not in a file");
        assert_eq!(seen[2], (b"small:2".to_vec(), b"two".to_vec(), false));
    }
}
