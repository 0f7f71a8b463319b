//! DUMP/RESTORE payloads (FORMATS §9): type byte + serialized value + u16 LE RDB version +
//! u64 LE CRC-64 of everything before it. Built from a record's raw bytes, without decoding.

use super::crc::crc64;

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
}
