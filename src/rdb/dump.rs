//! DUMP/RESTORE payloads (FORMATS §9): type byte + serialized value + u16 LE RDB version +
//! u64 LE CRC-64 of everything before it. Built from a record's raw bytes, without decoding
//! ([`payload`]), and split back into type, value bytes and version ([`Dump::parse`]) for a
//! `DUMP` reply read from a live server, so that its value decodes like a record of a file.

use super::crc::crc64;
use super::error::DecodeError;
use super::types::{Dialect, Version};

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
        let (body, crc) = p.split_at(p.len() - 8);
        let mut c = [0u8; 8];
        c.copy_from_slice(crc);
        let want = u64::from_le_bytes(c);
        if !ignore_checksum && want != 0 && crc64(body) != want {
            return Err(DecodeError::invalid(
                body.len() as u64,
                "DUMP payload CRC-64 does not match",
            ));
        }
        let (value, ver) = body.split_at(body.len() - 2);
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
                format!("DUMP payload of RDB version {number}, which rdbferry does not read"),
            ));
        }
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
