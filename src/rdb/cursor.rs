//! Wire primitives of the RDB format: lengths, strings (plain, integer, LZF), doubles, times.
//!
//! A [`Cursor`] reads forward over a borrowed byte slice and never allocates except to
//! decompress LZF or to print an integer-encoded string. Every length is checked against the
//! bytes left before it is used. Running out of bytes is [`ErrorKind::Truncated`], which a
//! streaming reader takes as "read more"; inside a complete blob (`in_blob`) it is corruption.

use std::borrow::Cow;

use super::error::{DecodeError, DecodeResult, ErrorKind};

/// An RDB string: borrowed from the input, or owned when it had to be decoded.
pub type RStr<'a> = Cow<'a, [u8]>;

/// The largest expansion LZF can achieve: a 3-byte back-reference yields at most 264 bytes.
const LZF_MAX_RATIO: u64 = 88;

/// A forward reader over `data`, whose first byte is at `base` in the whole input.
#[derive(Clone, Debug)]
pub struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    base: u64,
    in_blob: Option<&'static str>,
}

/// A decoded length field: a count, or the "special encoding" marker of strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    /// A plain length.
    Len(u64),
    /// `11eeeeee`: special string encoding `e`.
    Special(u8),
}

impl<'a> Cursor<'a> {
    /// A cursor over `data`; `base` is the offset of `data[0]` in the input, for errors.
    pub fn new(data: &'a [u8], base: u64) -> Self {
        Cursor {
            data,
            pos: 0,
            base,
            in_blob: None,
        }
    }

    /// A cursor over a complete blob (listpack, ziplist...): running out is corruption.
    pub fn blob(data: &'a [u8], base: u64, what: &'static str) -> Self {
        Cursor {
            data,
            pos: 0,
            base,
            in_blob: Some(what),
        }
    }

    /// Position within `data`.
    pub fn pos(&self) -> usize {
        self.pos
    }
    /// Absolute offset in the input.
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }
    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    /// Whether all bytes were consumed.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }
    /// The whole underlying slice.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }
    /// Bytes from `start` (a previous `pos()`) up to the current position.
    pub fn since(&self, start: usize) -> &'a [u8] {
        &self.data[start..self.pos]
    }
    /// The rest, without consuming it.
    pub fn rest(&self) -> &'a [u8] {
        &self.data[self.pos..]
    }

    /// An error at the current position.
    pub fn err(&self, kind: ErrorKind) -> DecodeError {
        DecodeError::new(self.offset(), kind)
    }
    /// An [`ErrorKind::Invalid`] at the current position.
    pub fn invalid(&self, msg: impl Into<String>) -> DecodeError {
        DecodeError::invalid(self.offset(), msg)
    }

    #[cold]
    #[inline(never)]
    fn short(&self, what: &'static str, n: u64) -> DecodeError {
        match self.in_blob {
            Some(blob) => self.invalid(format!(
                "{blob}: {what} of {n} bytes overruns the {} bytes left",
                self.remaining()
            )),
            None => self.err(ErrorKind::Truncated {
                needed: n - self.remaining() as u64,
            }),
        }
    }

    /// Check that `n` items of at least `min_size` bytes each can fit in what remains.
    pub fn check_count(&self, what: &'static str, n: u64, min_size: u64) -> DecodeResult<()> {
        let need = n.saturating_mul(min_size);
        if need > self.remaining() as u64 {
            if self.in_blob.is_some() {
                return Err(self.err(ErrorKind::LengthTooLarge {
                    what,
                    len: n,
                    remaining: self.remaining() as u64,
                }));
            }
            return Err(self.err(ErrorKind::Truncated {
                needed: need - self.remaining() as u64,
            }));
        }
        Ok(())
    }

    /// Take `n` raw bytes.
    #[inline]
    pub fn take(&mut self, n: u64, what: &'static str) -> DecodeResult<&'a [u8]> {
        if n > self.remaining() as u64 {
            return Err(self.short(what, n));
        }
        let s = &self.data[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    /// Skip `n` bytes.
    #[inline]
    pub fn skip(&mut self, n: u64, what: &'static str) -> DecodeResult<()> {
        self.take(n, what).map(|_| ())
    }

    /// One byte.
    #[inline]
    pub fn u8(&mut self) -> DecodeResult<u8> {
        match self.data.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(self.short("byte", 1)),
        }
    }

    /// Peek one byte.
    pub fn peek(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> DecodeResult<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    /// u16 little-endian.
    pub fn u16_le(&mut self) -> DecodeResult<u16> {
        Ok(u16::from_le_bytes(self.array("u16")?))
    }
    /// u32 little-endian.
    pub fn u32_le(&mut self) -> DecodeResult<u32> {
        Ok(u32::from_le_bytes(self.array("u32")?))
    }
    /// u32 big-endian.
    pub fn u32_be(&mut self) -> DecodeResult<u32> {
        Ok(u32::from_be_bytes(self.array("u32")?))
    }
    /// u64 little-endian.
    pub fn u64_le(&mut self) -> DecodeResult<u64> {
        Ok(u64::from_le_bytes(self.array("u64")?))
    }
    /// u64 big-endian.
    pub fn u64_be(&mut self) -> DecodeResult<u64> {
        Ok(u64::from_be_bytes(self.array("u64")?))
    }
    /// i64 little-endian (ms times).
    pub fn i64_le(&mut self) -> DecodeResult<i64> {
        Ok(i64::from_le_bytes(self.array("i64")?))
    }
    /// f64 little-endian (binary doubles).
    pub fn f64_le(&mut self) -> DecodeResult<f64> {
        Ok(f64::from_le_bytes(self.array("double")?))
    }
    /// f32 little-endian.
    pub fn f32_le(&mut self) -> DecodeResult<f32> {
        Ok(f32::from_le_bytes(self.array("float")?))
    }

    /// An RDB length field or the special-encoding marker (FORMATS §3.1).
    ///
    /// Lengths under 16384 (one or two bytes) are read inline: they are nearly every length
    /// of nearly every file, and the walk of a record is mostly reading lengths.
    #[inline]
    pub fn length_or_special(&mut self) -> DecodeResult<Length> {
        match self.data.get(self.pos..self.pos + 2) {
            Some(&[b, b1]) if b < 0x80 => {
                if b < 0x40 {
                    self.pos += 1;
                    Ok(Length::Len(b as u64))
                } else {
                    self.pos += 2;
                    Ok(Length::Len((((b & 0x3f) as u64) << 8) | b1 as u64))
                }
            }
            _ => self.length_or_special_slow(),
        }
    }

    /// [`Cursor::length_or_special`] for the other forms, and near the end of the data.
    #[inline(never)]
    fn length_or_special_slow(&mut self) -> DecodeResult<Length> {
        let start = self.offset();
        let b = self.u8()?;
        match b >> 6 {
            0 => Ok(Length::Len((b & 0x3f) as u64)),
            1 => {
                let b1 = self.u8()?;
                Ok(Length::Len((((b & 0x3f) as u64) << 8) | b1 as u64))
            }
            2 => match b {
                0x80 => Ok(Length::Len(self.u32_be()? as u64)),
                0x81 => Ok(Length::Len(self.u64_be()?)),
                _ => Err(DecodeError::invalid(
                    start,
                    format!("bad length prefix byte {b:#04x}"),
                )),
            },
            _ => Ok(Length::Special(b & 0x3f)),
        }
    }

    /// An RDB length; a special-encoding marker here is corruption.
    #[inline]
    pub fn length(&mut self) -> DecodeResult<u64> {
        match self.length_or_special()? {
            Length::Len(n) => Ok(n),
            Length::Special(e) => Err(self.marker_not_length(e)),
        }
    }

    #[cold]
    #[inline(never)]
    fn marker_not_length(&self, e: u8) -> DecodeError {
        // The marker was one byte, just read.
        DecodeError::invalid(
            self.offset() - 1,
            format!(
                "string encoding marker {:#04x} where a length was expected",
                0xc0 | e
            ),
        )
    }

    /// An RDB length that counts items of at least `min_size` bytes still to come.
    pub fn count(&mut self, what: &'static str, min_size: u64) -> DecodeResult<u64> {
        let n = self.length()?;
        self.check_count(what, n, min_size)?;
        Ok(n)
    }

    /// An RDB string (FORMATS §3.2): borrowed when plain, owned when integer or LZF.
    #[inline]
    pub fn string(&mut self) -> DecodeResult<RStr<'a>> {
        let start = self.offset();
        match self.length_or_special()? {
            Length::Len(n) => Ok(Cow::Borrowed(self.take(n, "string")?)),
            Length::Special(e) => self.special_string(e, start),
        }
    }

    /// The rest of an integer or LZF string that started at `start` with marker `e`.
    #[inline(never)]
    fn special_string(&mut self, e: u8, start: u64) -> DecodeResult<RStr<'a>> {
        match e {
            0 => Ok(Cow::Owned(fmt_int(self.u8()? as i8 as i64))),
            1 => Ok(Cow::Owned(fmt_int(self.u16_le()? as i16 as i64))),
            2 => Ok(Cow::Owned(fmt_int(self.u32_le()? as i32 as i64))),
            3 => {
                let (compressed, declared) = self.lzf_header()?;
                let data = self.take(compressed, "LZF data")?;
                lzf_decompress(data, declared, start).map(Cow::Owned)
            }
            e => Err(DecodeError::invalid(
                start,
                format!("unknown string encoding {e}"),
            )),
        }
    }

    fn lzf_header(&mut self) -> DecodeResult<(u64, u64)> {
        let start = self.offset();
        let compressed = self.length()?;
        let declared = self.length()?;
        if compressed == 0 || declared > compressed.saturating_mul(LZF_MAX_RATIO) + 64 {
            return Err(DecodeError::new(
                start,
                ErrorKind::Lzf {
                    compressed,
                    declared,
                    reason: "declared size impossible for that input".into(),
                },
            ));
        }
        Ok((compressed, declared))
    }

    /// Skip a string without decoding it; returns the number of bytes it decodes to
    /// (LZF strings report their declared size).
    #[inline]
    pub fn skip_string(&mut self) -> DecodeResult<u64> {
        let start = self.offset();
        match self.length_or_special()? {
            Length::Len(n) => self.skip(n, "string").map(|_| n),
            Length::Special(e) => self.skip_special_string(e, start),
        }
    }

    /// The rest of [`Cursor::skip_string`] for an integer or LZF string.
    #[inline(never)]
    fn skip_special_string(&mut self, e: u8, start: u64) -> DecodeResult<u64> {
        match e {
            0 => self.skip(1, "int8").map(|_| 4),
            1 => self.skip(2, "int16").map(|_| 6),
            2 => self.skip(4, "int32").map(|_| 11),
            3 => {
                let (compressed, declared) = self.lzf_header()?;
                self.skip(compressed, "LZF data")?;
                Ok(declared)
            }
            e => Err(DecodeError::invalid(
                start,
                format!("unknown string encoding {e}"),
            )),
        }
    }

    /// Check a string without keeping it: plain strings are returned borrowed (`Some`), LZF
    /// ones are decompressed into `scratch` (`None`: read `scratch`), integers need no check.
    pub fn check_string(&mut self, scratch: &mut Vec<u8>) -> DecodeResult<Option<&'a [u8]>> {
        let start = self.offset();
        match self.length_or_special()? {
            Length::Len(n) => self.take(n, "string").map(Some),
            Length::Special(0) => self.skip(1, "int8").map(|_| Some(&[][..])),
            Length::Special(1) => self.skip(2, "int16").map(|_| Some(&[][..])),
            Length::Special(2) => self.skip(4, "int32").map(|_| Some(&[][..])),
            Length::Special(3) => {
                let (compressed, declared) = self.lzf_header()?;
                let data = self.take(compressed, "LZF data")?;
                if declared > BIG_STRING {
                    // Checked in bounded memory; the caller gets no bytes (nothing reads a
                    // blob this large: quicklist nodes and listpacks are small).
                    let big = LzfData {
                        data,
                        len: declared,
                        offset: start,
                    };
                    return match big.for_each_chunk(&mut |_| Ok(())) {
                        Ok(()) => Ok(Some(&[][..])),
                        Err(StreamError::Decode(e)) => Err(e),
                        Err(StreamError::Io(e)) => Err(DecodeError::invalid(start, e.to_string())),
                    };
                }
                lzf_decompress_into(data, declared, start, scratch)?;
                Ok(None)
            }
            Length::Special(e) => Err(DecodeError::invalid(
                start,
                format!("unknown string encoding {e}"),
            )),
        }
    }

    /// Check a string without decoding it: LZF data is followed for its structure only
    /// ([`lzf_check`]), so nothing is copied and no size needs a buffer.
    pub fn check_string_only(&mut self) -> DecodeResult<()> {
        let start = self.offset();
        match self.length_or_special()? {
            Length::Len(n) => self.skip(n, "string"),
            Length::Special(3) => {
                let (compressed, declared) = self.lzf_header()?;
                let data = self.take(compressed, "LZF data")?;
                lzf_check(data, declared, start)
            }
            Length::Special(0) => self.skip(1, "int8"),
            Length::Special(1) => self.skip(2, "int16"),
            Length::Special(2) => self.skip(4, "int32"),
            Length::Special(e) => Err(DecodeError::invalid(
                start,
                format!("unknown string encoding {e}"),
            )),
        }
    }

    /// A "string double" of type-3 zsets (FORMATS §3.3).
    pub fn string_double(&mut self) -> DecodeResult<f64> {
        let start = self.offset();
        let n = self.u8()?;
        match n {
            253 => Ok(f64::NAN),
            254 => Ok(f64::INFINITY),
            255 => Ok(f64::NEG_INFINITY),
            _ => {
                let s = self.take(n as u64, "double text")?;
                parse_double(s).ok_or_else(|| {
                    DecodeError::invalid(
                        start,
                        format!("bad double text {:?}", String::from_utf8_lossy(s)),
                    )
                })
            }
        }
    }
}

/// Decimal text of an integer, as Redis prints it.
pub fn fmt_int(v: i64) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// Parse a Redis double as text (`strtod`-style; `inf`, `-inf`, `+inf`, `nan` in any case).
pub fn parse_double(s: &[u8]) -> Option<f64> {
    // Rust's parser takes the same forms Redis writes (digits, exponents, inf, infinity, nan,
    // any case); only surrounding spaces need trimming, which Redis never writes.
    let t = std::str::from_utf8(s).ok()?;
    match t.parse::<f64>() {
        Ok(d) => Some(d),
        Err(_) => t.trim().parse::<f64>().ok(),
    }
}

/// Decompress LZF data that must expand to exactly `declared` bytes into `out` (cleared
/// first), reusing its allocation. Back-references that do not overlap their output are
/// copied as one block.
pub fn lzf_decompress_into(
    data: &[u8],
    declared: u64,
    offset: u64,
    out: &mut Vec<u8>,
) -> DecodeResult<()> {
    out.clear();
    lzf_walk(data, declared, offset, out)
}

/// Check LZF data as [`lzf_decompress_into`] does (same errors), without writing its output:
/// only lengths and back-reference distances are followed. Validating a string value needs
/// no more, and skips copying every byte.
pub fn lzf_check(data: &[u8], declared: u64, offset: u64) -> DecodeResult<()> {
    lzf_walk(data, declared, offset, &mut LzfLen(0))
}

/// Where [`lzf_walk`] puts the output: bytes, or only their count.
trait LzfOut {
    fn len(&self) -> usize;
    fn reserve(&mut self, n: usize);
    fn literal(&mut self, b: &[u8]);
    /// `len` bytes from `back` bytes before the end (`back <= self.len()`).
    fn back_ref(&mut self, back: usize, len: usize);
}

/// An output that only counts.
struct LzfLen(usize);

impl LzfOut for LzfLen {
    fn len(&self) -> usize {
        self.0
    }
    fn reserve(&mut self, _: usize) {}
    fn literal(&mut self, b: &[u8]) {
        self.0 += b.len();
    }
    fn back_ref(&mut self, _: usize, len: usize) {
        self.0 += len;
    }
}

impl LzfOut for Vec<u8> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn reserve(&mut self, n: usize) {
        Vec::reserve(self, n);
    }
    fn literal(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
    fn back_ref(&mut self, back: usize, len: usize) {
        let from = Vec::len(self) - back;
        if back >= len {
            self.extend_from_within(from..from + len);
        } else {
            for k in 0..len {
                let b = self[from + k];
                self.push(b);
            }
        }
    }
}

/// The LZF decoder behind [`lzf_decompress_into`] and [`lzf_check`].
fn lzf_walk<O: LzfOut>(data: &[u8], declared: u64, offset: u64, out: &mut O) -> DecodeResult<()> {
    let bad = |reason: &str| {
        DecodeError::new(
            offset,
            ErrorKind::Lzf {
                compressed: data.len() as u64,
                declared,
                reason: reason.to_string(),
            },
        )
    };
    if declared == 0 || declared > data.len() as u64 * LZF_MAX_RATIO + 64 {
        return Err(bad("declared size impossible for that input"));
    }
    let declared = declared as usize;
    out.reserve(declared);
    let mut i = 0usize;
    while i < data.len() {
        let ctrl = data[i] as usize;
        i += 1;
        if ctrl < 32 {
            let n = ctrl + 1;
            let lit = data
                .get(i..i + n)
                .ok_or_else(|| bad("literal run past the end"))?;
            if out.len() + n > declared {
                return Err(bad("output longer than declared"));
            }
            out.literal(lit);
            i += n;
        } else {
            let mut n = ctrl >> 5;
            if n == 7 {
                n += *data.get(i).ok_or_else(|| bad("reference past the end"))? as usize;
                i += 1;
            }
            let lo = *data.get(i).ok_or_else(|| bad("reference past the end"))? as usize;
            i += 1;
            let back = ((ctrl & 0x1f) << 8) + lo + 1;
            let len = n + 2;
            if back > out.len() {
                return Err(bad("back-reference before the start of the output"));
            }
            if out.len() + len > declared {
                return Err(bad("output longer than declared"));
            }
            out.back_ref(back, len);
        }
    }
    if out.len() != declared {
        return Err(bad("output shorter than declared"));
    }
    Ok(())
}

/// Decompress LZF data that must expand to exactly `declared` bytes.
pub fn lzf_decompress(data: &[u8], declared: u64, offset: u64) -> DecodeResult<Vec<u8>> {
    let mut out = Vec::new();
    lzf_decompress_into(data, declared, offset, &mut out)?;
    Ok(out)
}

/// The former implementation, kept to cross-check ours in tests.
#[cfg(test)]
fn lzf_decompress_crate(data: &[u8], declared: u64, offset: u64) -> DecodeResult<Vec<u8>> {
    let err = |reason: String| {
        DecodeError::new(
            offset,
            ErrorKind::Lzf {
                compressed: data.len() as u64,
                declared,
                reason,
            },
        )
    };
    if declared == 0 {
        return Err(err("declared size 0".into()));
    }
    if declared > data.len() as u64 * LZF_MAX_RATIO + 64 {
        return Err(err("declared size impossible for that input".into()));
    }
    let out = lzf::decompress(data, declared as usize).map_err(|e| err(format!("{e:?}")))?;
    if out.len() as u64 != declared {
        return Err(err(format!("decompressed to {} bytes", out.len())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_all_forms() {
        let bytes = [
            0x05, 0x41, 0x02, 0x80, 0, 1, 0, 0, 0x81, 0, 0, 0, 1, 0, 0, 0, 0,
        ];
        let mut c = Cursor::new(&bytes, 0);
        assert_eq!(c.length().unwrap(), 5);
        assert_eq!(c.length().unwrap(), 0x102);
        assert_eq!(c.length().unwrap(), 0x10000);
        assert_eq!(c.length().unwrap(), 1 << 32);
        assert!(c.is_empty());
        assert!(Cursor::new(&[0x82], 0).length().is_err());
        assert!(Cursor::new(&[0xc0], 0).length().is_err());
        assert!(
            Cursor::new(&[0x80, 0], 0)
                .length()
                .unwrap_err()
                .is_truncated()
        );
    }

    #[test]
    fn int_strings_are_little_endian_and_signed() {
        let bytes = [0xc0, 0xfe, 0xc1, 0x39, 0x30, 0xc2, 0xff, 0xff, 0xff, 0x7f];
        let mut c = Cursor::new(&bytes, 0);
        assert_eq!(&*c.string().unwrap(), b"-2");
        assert_eq!(&*c.string().unwrap(), b"12345");
        assert_eq!(&*c.string().unwrap(), b"2147483647");
    }

    #[test]
    fn lzf_round_trip_and_wrong_size() {
        let text = b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaabbbbbbbbbbbbbbbb"; // < 64 bytes
        let comp = lzf::compress(text).unwrap();
        let mut enc = vec![0xc3, comp.len() as u8, text.len() as u8];
        enc.extend_from_slice(&comp);
        assert_eq!(&*Cursor::new(&enc, 0).string().unwrap(), &text[..]);
        enc[2] = text.len() as u8 + 1;
        let e = Cursor::new(&enc, 0).string().unwrap_err();
        assert!(matches!(e.kind, ErrorKind::Lzf { .. }), "{e:?}");
    }

    #[test]
    fn lzf_huge_declared_size_is_refused_without_allocating() {
        // compressed 2 bytes, declared 2^40
        let enc = [0xc3, 0x02, 0x81, 0, 0, 1, 0, 0, 0, 0, 0, 0x00, b'a'];
        let e = Cursor::new(&enc, 0).string().unwrap_err();
        assert!(matches!(e.kind, ErrorKind::Lzf { .. }), "{e:?}");
    }

    #[test]
    fn huge_length_is_an_error_not_an_allocation() {
        let enc = [0x81, 0, 0, 1, 0, 0, 0, 0, 0, b'x'];
        let mut c = Cursor::new(&enc, 0);
        assert!(c.string().unwrap_err().is_truncated());
        let mut c = Cursor::blob(&enc, 0, "listpack");
        assert!(!c.string().unwrap_err().is_truncated());
    }

    #[test]
    fn our_lzf_matches_the_lzf_crate() {
        let mut text = Vec::new();
        for i in 0..5000u32 {
            text.extend_from_slice(format!("{} aaaa{}bbbb ", i % 37, i % 5).as_bytes());
        }
        let comp = lzf::compress(&text).unwrap();
        let ours = lzf_decompress(&comp, text.len() as u64, 0).unwrap();
        let theirs = lzf_decompress_crate(&comp, text.len() as u64, 0).unwrap();
        assert_eq!(ours, text);
        assert_eq!(theirs, text);
        assert!(lzf_decompress(&comp, text.len() as u64 - 1, 0).is_err());
        assert!(lzf_decompress(&comp, text.len() as u64 + 1, 0).is_err());
    }

    /// The check without output gives the same verdict, and the same error, as decompressing,
    /// on valid data, every truncation, every flipped byte and every wrong size.
    #[test]
    fn lzf_check_agrees_with_decompression() {
        let mut text = Vec::new();
        for i in 0..300u32 {
            text.extend_from_slice(format!("{} aaaa{}bbbb ", i % 37, i % 5).as_bytes());
        }
        let comp = lzf::compress(&text).unwrap();
        let same = |d: &[u8], n: u64| {
            let a = lzf_decompress(d, n, 7)
                .map(|_| ())
                .map_err(|e| format!("{e:?}"));
            let b = lzf_check(d, n, 7).map_err(|e| format!("{e:?}"));
            assert_eq!(a, b, "{n} bytes from {d:?}");
        };
        for n in [
            0,
            1,
            text.len() as u64 - 1,
            text.len() as u64,
            text.len() as u64 + 1,
        ] {
            same(&comp, n);
        }
        for cut in 0..comp.len() {
            same(&comp[..cut], text.len() as u64);
        }
        for i in 0..comp.len() {
            for x in [0x01, 0x20, 0x80, 0xff] {
                let mut d = comp.clone();
                d[i] ^= x;
                same(&d, text.len() as u64);
            }
        }
    }

    #[test]
    fn string_doubles() {
        let enc = [253, 254, 255, 3, b'1', b'.', b'5'];
        let mut c = Cursor::new(&enc, 0);
        assert!(c.string_double().unwrap().is_nan());
        assert_eq!(c.string_double().unwrap(), f64::INFINITY);
        assert_eq!(c.string_double().unwrap(), f64::NEG_INFINITY);
        assert_eq!(c.string_double().unwrap(), 1.5);
    }
}

/// A large LZF-compressed string, decoded on demand in bounded memory (an 8 KiB window plus a
/// 64 KiB output chunk) instead of into one buffer of its full size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LzfData<'a> {
    /// Compressed bytes.
    pub data: &'a [u8],
    /// Declared decompressed length.
    pub len: u64,
    /// Offset of the string in the input.
    pub offset: u64,
}

/// Why writing a value out stopped: the input is corrupt, or the output failed.
#[derive(Debug)]
pub enum StreamError {
    /// The input is corrupt.
    Decode(DecodeError),
    /// The consumer failed.
    Io(std::io::Error),
}

impl From<DecodeError> for StreamError {
    fn from(e: DecodeError) -> Self {
        StreamError::Decode(e)
    }
}

impl From<std::io::Error> for StreamError {
    fn from(e: std::io::Error) -> Self {
        StreamError::Io(e)
    }
}

/// LZF back-references reach at most this far back.
const LZF_WINDOW: usize = 8192;
const LZF_CHUNK: usize = 64 * 1024;

impl LzfData<'_> {
    /// Decompress, handing the output to `f` in chunks of at most 64 KiB, in order.
    pub fn for_each_chunk(
        &self,
        f: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<(), StreamError> {
        let bad = |reason: &str| {
            StreamError::Decode(DecodeError::new(
                self.offset,
                ErrorKind::Lzf {
                    compressed: self.data.len() as u64,
                    declared: self.len,
                    reason: reason.to_string(),
                },
            ))
        };
        let input = self.data;
        let mut buf: Vec<u8> = Vec::with_capacity(LZF_WINDOW + LZF_CHUNK + 300);
        let mut flushed: u64 = 0;
        let mut i = 0usize;
        while i < input.len() {
            let ctrl = input[i] as usize;
            i += 1;
            if ctrl < 32 {
                let n = ctrl + 1;
                let lit = input
                    .get(i..i + n)
                    .ok_or_else(|| bad("literal run past the end"))?;
                buf.extend_from_slice(lit);
                i += n;
            } else {
                let mut n = ctrl >> 5;
                if n == 7 {
                    n += *input.get(i).ok_or_else(|| bad("reference past the end"))? as usize;
                    i += 1;
                }
                let lo = *input.get(i).ok_or_else(|| bad("reference past the end"))? as usize;
                i += 1;
                let back = ((ctrl & 0x1f) << 8) + lo + 1;
                if back > buf.len() {
                    return Err(bad("back-reference before the start of the output"));
                }
                let from = buf.len() - back;
                for k in 0..n + 2 {
                    let b = buf[from + k];
                    buf.push(b);
                }
            }
            if flushed + buf.len() as u64 > self.len {
                return Err(bad("output longer than declared"));
            }
            if buf.len() >= LZF_WINDOW + LZF_CHUNK {
                let out = buf.len() - LZF_WINDOW;
                f(&buf[..out]).map_err(StreamError::Io)?;
                flushed += out as u64;
                buf.drain(..out);
            }
        }
        if flushed + buf.len() as u64 != self.len {
            return Err(bad("output shorter than declared"));
        }
        if !buf.is_empty() {
            f(&buf).map_err(StreamError::Io)?;
        }
        Ok(())
    }
}

/// Strings whose LZF form decodes to more than this are streamed ([`LzfData`]).
pub const BIG_STRING: u64 = 16 << 20;

impl<'a> Cursor<'a> {
    /// Like [`Cursor::string`], but a large LZF string is returned undecoded.
    pub fn string_or_big(&mut self) -> DecodeResult<Result<RStr<'a>, LzfData<'a>>> {
        let start = self.offset();
        let save = self.clone();
        if let Length::Special(3) = self.length_or_special()? {
            let (compressed, declared) = self.lzf_header()?;
            if declared > BIG_STRING {
                let data = self.take(compressed, "LZF data")?;
                return Ok(Err(LzfData {
                    data,
                    len: declared,
                    offset: start,
                }));
            }
        }
        *self = save;
        self.string().map(Ok)
    }
}

#[cfg(test)]
mod lzf_stream_tests {
    use super::*;
    #[test]
    fn streamed_equals_one_shot() {
        let mut text = Vec::new();
        for i in 0..40_000u32 {
            text.extend_from_slice(
                format!("line {} of a long repetitive text\n", i % 977).as_bytes(),
            );
        }
        let comp = lzf::compress(&text).unwrap();
        let l = LzfData {
            data: &comp,
            len: text.len() as u64,
            offset: 0,
        };
        let mut out = Vec::new();
        let mut chunks = 0;
        l.for_each_chunk(&mut |c| {
            assert!(c.len() <= LZF_CHUNK + 300);
            chunks += 1;
            out.extend_from_slice(c);
            Ok(())
        })
        .unwrap();
        assert!(chunks > 10);
        assert_eq!(out, text);
        let wrong = LzfData {
            len: text.len() as u64 + 1,
            ..l
        };
        assert!(matches!(
            wrong.for_each_chunk(&mut |_| Ok(())),
            Err(StreamError::Decode(_))
        ));
    }
}
