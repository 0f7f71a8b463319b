//! DUMP/RESTORE payloads (FORMATS §9): type byte + serialized value + u16 LE RDB version +
//! u64 LE CRC-64 of everything before it. Built from a record's raw bytes, without decoding
//! ([`payload`]), and split back into type, value bytes and version ([`Dump::parse`]) for a
//! `DUMP` reply read from a live server, so that its value decodes like a record of a file.

use super::crc::crc64;
use super::cursor::Cursor;
use super::error::DecodeError;
use super::types::{Dialect, Version, opcode};

/// A `DUMP` reply, split: the value's bytes are exactly what an RDB file holds after the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dump<'a> {
    /// Value type id.
    pub type_id: u8,
    /// The serialized value (offset 1 in the payload).
    pub raw: &'a [u8],
    /// The RDB version the server stamped (Valkey 9 stamps 80 and up).
    pub version: Version,
}

impl<'a> Dump<'a> {
    /// Split a payload; checks its length, its CRC-64 (unless `ignore_checksum`, or when the
    /// server wrote 0, as Redis does with `rdbchecksum no`) and that the version is one we read.
    pub fn parse(p: &'a [u8], ignore_checksum: bool) -> Result<Dump<'a>, DecodeError> {
        if p.len() < 11 {
            return Err(DecodeError::invalid(
                0,
                format!("DUMP payload of {} bytes is too short", p.len()),
            ));
        }
        let (value, version) = split_footer(p, ignore_checksum)?;
        let type_id = value[0];
        if !version.accepts_type(type_id) {
            return Err(DecodeError::invalid(
                0,
                format!("DUMP payload of unknown value type {type_id}"),
            ));
        }
        Ok(Dump {
            type_id,
            raw: &value[1..],
            version,
        })
    }
}

/// A payload's bytes before its footer (RDB version and CRC-64), and that version; checks the
/// CRC-64 (unless `ignore_checksum`, or 0 as `rdbchecksum no` writes) and the version.
fn split_footer(p: &[u8], ignore_checksum: bool) -> Result<(&[u8], Version), DecodeError> {
    let Some(at) = p.len().checked_sub(10) else {
        return Err(DecodeError::invalid(
            0,
            format!("payload of {} bytes is too short", p.len()),
        ));
    };
    let (body, crc) = p.split_at(at + 2);
    let mut c = [0u8; 8];
    c.copy_from_slice(crc);
    let want = u64::from_le_bytes(c);
    if !ignore_checksum && want != 0 && crc64(body) != want {
        return Err(DecodeError::invalid(
            body.len() as u64,
            "payload CRC-64 does not match",
        ));
    }
    let (value, ver) = body.split_at(at);
    let number = u16::from_le_bytes([ver[0], ver[1]]) as u32;
    let dialect = if number >= 80 {
        Dialect::Valkey
    } else {
        Dialect::Redis
    };
    let version = Version { dialect, number };
    if !version.is_supported() {
        return Err(DecodeError::invalid(
            value.len() as u64,
            format!("payload of RDB version {number}, which rdbferry does not read"),
        ));
    }
    Ok((value, version))
}

/// The libraries of a `FUNCTION DUMP` reply (FORMATS §9: `FUNCTION2` records, each the
/// opcode and the library's code as a string, then the DUMP footer), and the RDB version the
/// server stamped.
pub fn functions(p: &[u8], ignore_checksum: bool) -> Result<(Vec<Vec<u8>>, Version), DecodeError> {
    let (body, version) = split_footer(p, ignore_checksum)?;
    let mut c = Cursor::new(body, 0);
    let mut libs = Vec::new();
    while c.pos() < body.len() {
        let at = c.offset();
        match c.u8()? {
            opcode::FUNCTION2 => libs.push(c.string()?.into_owned()),
            op => {
                return Err(DecodeError::invalid(
                    at,
                    format!("FUNCTION DUMP payload: opcode {op} where a library was expected"),
                ));
            }
        }
    }
    Ok((libs, version))
}

/// Build the RESTORE payload of a value of type `type_id` serialized as `raw`, stamped with
/// RDB `version`.
pub fn payload(type_id: u8, raw: &[u8], version: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(raw.len() + 11);
    p.push(type_id);
    p.extend_from_slice(raw);
    p.extend_from_slice(&version.to_le_bytes());
    let crc = crc64(&p);
    p.extend_from_slice(&crc.to_le_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    /// `DUMP` of the string "bar" on Redis 7.0 (RDB 10).
    #[test]
    fn matches_redis_dump_of_a_string() {
        let p = payload(0, b"\x03bar", 10);
        assert_eq!(&p[..7], b"\x00\x03bar\x0a\x00");
        assert_eq!(crc64(&p[..p.len() - 8]).to_le_bytes(), p[p.len() - 8..]);
    }

    #[test]
    fn function_dump_payloads() {
        let code = b"#!lua name=l\nredis.register_function('f', function() return 1 end)";
        let mut body = Vec::new();
        for _ in 0..2 {
            body.push(opcode::FUNCTION2);
            // A 14-bit length (the code is over 63 bytes).
            body.extend_from_slice(&[0x40 | (code.len() >> 8) as u8, code.len() as u8]);
            body.extend_from_slice(code);
        }
        body.extend_from_slice(&10u16.to_le_bytes());
        let mut p = body.clone();
        p.extend_from_slice(&crc64(&body).to_le_bytes());
        let (libs, v) = functions(&p, false).unwrap();
        assert_eq!(libs, vec![code.to_vec(), code.to_vec()]);
        assert_eq!(v.number, 10);
        // No library: the footer alone.
        let mut empty = 10u16.to_le_bytes().to_vec();
        empty.extend_from_slice(&crc64(&empty.clone()).to_le_bytes());
        assert_eq!(functions(&empty, false).unwrap().0.len(), 0);
        // Damage: a CRC, a cut string, an opcode that is no library, a short payload.
        let mut bad = p.clone();
        bad[5] ^= 1;
        assert!(functions(&bad, false).is_err());
        let mut cut = body[..20].to_vec();
        cut.extend_from_slice(&10u16.to_le_bytes());
        let crc = crc64(&cut);
        cut.extend_from_slice(&crc.to_le_bytes());
        assert!(functions(&cut, false).is_err());
        let mut other = vec![0u8, 1, b'x'];
        other.extend_from_slice(&10u16.to_le_bytes());
        let crc = crc64(&other);
        other.extend_from_slice(&crc.to_le_bytes());
        assert!(functions(&other, false).is_err());
        assert!(functions(b"short", false).is_err());
    }

    #[test]
    fn parses_what_it_builds_and_refuses_damage() {
        let p = payload(0, b"\x03bar", 10);
        let d = Dump::parse(&p, false).unwrap();
        assert_eq!(
            (d.type_id, d.raw, d.version.number),
            (0, &b"\x03bar"[..], 10)
        );
        assert_eq!(d.version.dialect, Dialect::Redis);
        let mut bad = p.clone();
        bad[2] = b'c';
        assert!(Dump::parse(&bad, false).is_err());
        assert!(Dump::parse(&bad, true).is_ok());
        assert!(Dump::parse(&p[..10], true).is_err());
        assert!(Dump::parse(&payload(0, b"\x03bar", 99), false).is_err());
        assert!(Dump::parse(&payload(200, b"\x03bar", 10), false).is_err());
        let p = payload(0, b"\x03bar", 80);
        let v = Dump::parse(&p, false).unwrap();
        assert_eq!(v.version.dialect, Dialect::Valkey);
    }
}
