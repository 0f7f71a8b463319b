//! CRC-64/REDIS ("Jones"), the checksum Redis appends to RDB files and DUMP payloads.
//!
//! A thin wrapper over `crc-fast` (SIMD). Kept in its own module so that every user (the file
//! checker, the DUMP payload builder, the encoder) goes through one definition, proved against
//! Redis's own test vector below.

use crc_fast::{CrcAlgorithm, Digest};

/// One-shot CRC-64/REDIS of `data`.
pub fn crc64(data: &[u8]) -> u64 {
    crc_fast::checksum(CrcAlgorithm::Crc64Redis, data)
}

/// Incremental CRC-64/REDIS, for inputs that arrive in pieces (stdin, sockets).
#[derive(Clone)]
pub struct Crc64 {
    digest: Digest,
}

impl Default for Crc64 {
    fn default() -> Self {
        Crc64 {
            digest: Digest::new(CrcAlgorithm::Crc64Redis),
        }
    }
}

impl Crc64 {
    /// A fresh digest (initial value 0, as Redis seeds it).
    pub fn new() -> Self {
        Self::default()
    }
    /// Feed more bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.digest.update(data);
    }
    /// The checksum of everything fed so far.
    pub fn value(&self) -> u64 {
        self.digest.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redis `src/crc64.c` test vector: crc64(0, "123456789") == 0xe9c6d914c4b8d9ca.
    #[test]
    fn redis_test_vector() {
        assert_eq!(crc64(b"123456789"), 0xe9c6d914c4b8d9ca);
        let mut d = Crc64::new();
        d.update(b"1234");
        d.update(b"56789");
        assert_eq!(d.value(), 0xe9c6d914c4b8d9ca);
    }

    /// The second vector in Redis's crc64 test: a 98-byte string.
    #[test]
    fn redis_long_vector() {
        let li = b"This is a test of the emergency broadcast system. \
                   This is only a test. Please remain calm.";
        // Bit-by-bit reference implementation (reflected Jones polynomial) to cross-check.
        let mut crc: u64 = 0;
        for &b in li.iter() {
            crc ^= b as u64;
            for _ in 0..8 {
                crc = (crc >> 1) ^ if crc & 1 == 1 { 0x95AC9329AC4BC9B5 } else { 0 };
            }
        }
        assert_eq!(crc64(li), crc);
    }
}
