//! Fast non-cryptographic hashes of bytes, for comparing and de-duplicating data rdbferry
//! reads: [`Hash128`] (streaming, 128 bits: `verify`'s snapshot digests) and [`hash64`] (one
//! call, 64 bits: `import`'s check for repeated members). Both take 8-byte words the way
//! murmur3 does (each word spread by multiply-rotate-multiply, then combined), finished with
//! murmur3's mixer [`fmix64`]. Marked `#[inline]`: they run per element on hot paths in other
//! modules. Good against mistakes (a different value, a repeat), not against someone
//! crafting a collision.

const K1: u64 = 0x9e37_79b9_7f4a_7c15;
const K2: u64 = 0xc2b2_ae3d_27d4_eb4f;

/// murmur3's 64-bit finalizer: every input bit moves every output bit.
#[inline]
pub fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// A word spread over all 64 bits before it is combined (murmur3's block step): a multiply
/// alone carries a difference only upwards, so differences in low bytes of one word could
/// cancel the high-byte ones of the word before.
#[inline]
fn premix(w: u64) -> u64 {
    w.wrapping_mul(K1).rotate_left(31).wrapping_mul(K2)
}

/// A whole 8-byte word (the hot path: a fixed-size load).
#[inline]
fn word8(c: &[u8]) -> u64 {
    u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
}

/// The last, partial word, zero-padded.
fn tail_word(c: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..c.len()].copy_from_slice(c);
    u64::from_le_bytes(w)
}

/// A 64-bit hash of `b`, never 0 (callers use 0 for a free table slot).
#[inline]
pub fn hash64(b: &[u8]) -> u64 {
    let mix = |h: u64, w: u64| {
        (h ^ premix(w))
            .rotate_left(27)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729)
    };
    let mut h = K1 ^ b.len() as u64;
    let mut words = b.chunks_exact(8);
    for c in &mut words {
        h = mix(h, word8(c));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        h = mix(h, tail_word(rest));
    }
    fmix64(h).max(1)
}

/// A streaming 128-bit hash: two lanes; bytes fed in several calls hash as if fed at once.
pub struct Hash128 {
    a: u64,
    b: u64,
    tail: [u8; 8],
    n: usize,
    len: u64,
}

impl Hash128 {
    /// A hash whose inputs are told apart from other hashes' by `tag`.
    #[inline]
    pub fn new(tag: u8) -> Hash128 {
        Hash128 {
            a: K1 ^ u64::from(tag),
            b: K2.rotate_left(u32::from(tag)),
            tail: [0; 8],
            n: 0,
            len: 0,
        }
    }
    #[inline]
    fn mix(&mut self, w: u64) {
        let k = premix(w);
        self.a = (self.a ^ k)
            .rotate_left(27)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729);
        self.b = (self.b ^ k.rotate_left(17))
            .rotate_left(31)
            .wrapping_mul(5)
            .wrapping_add(0x3849_5ab5)
            .wrapping_add(self.a);
    }
    /// Feed bytes, as a continuation of what was fed before.
    #[inline]
    pub fn raw(&mut self, mut x: &[u8]) {
        self.len += x.len() as u64;
        if self.n > 0 {
            let k = (8 - self.n).min(x.len());
            self.tail[self.n..self.n + k].copy_from_slice(&x[..k]);
            self.n += k;
            x = &x[k..];
            if self.n < 8 {
                return;
            }
            let w = u64::from_le_bytes(self.tail);
            self.mix(w);
            self.n = 0;
        }
        let mut words = x.chunks_exact(8);
        for c in &mut words {
            self.mix(word8(c));
        }
        let rest = words.remainder();
        self.tail[..rest.len()].copy_from_slice(rest);
        self.n = rest.len();
    }
    /// Feed a length-prefixed piece: ("ab", "c") differs from ("a", "bc").
    #[inline]
    pub fn bytes(&mut self, x: &[u8]) {
        self.u64(x.len() as u64);
        self.raw(x);
    }
    /// Feed a number.
    #[inline]
    pub fn u64(&mut self, x: u64) {
        self.raw(&x.to_le_bytes());
    }
    /// Feed a 128-bit number.
    #[inline]
    pub fn u128(&mut self, x: u128) {
        self.raw(&x.to_le_bytes());
    }
    /// The hash of everything fed.
    #[inline]
    pub fn finish(&self) -> u128 {
        let w = tail_word(&self.tail[..self.n]) ^ self.len.rotate_left(32);
        let a = fmix64(self.a ^ w.wrapping_mul(K2));
        let b = fmix64(self.b ^ w.wrapping_mul(K1) ^ a.rotate_left(17));
        (u128::from(a) << 64) | u128::from(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_does_not_depend_on_how_bytes_are_fed() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut whole = Hash128::new(1);
        whole.raw(&data);
        for cut in [0, 1, 7, 8, 9, 50, 99, 100] {
            let mut parts = Hash128::new(1);
            parts.raw(&data[..cut]);
            parts.raw(&data[cut..]);
            assert_eq!(parts.finish(), whole.finish(), "cut at {cut}");
        }
        let mut other = Hash128::new(1);
        other.raw(&data[..99]);
        assert_ne!(other.finish(), whole.finish());
        let mut tagged = Hash128::new(2);
        tagged.raw(&data);
        assert_ne!(tagged.finish(), whole.finish());
        // Length-prefixed pieces: ("ab", "c") is not ("a", "bc").
        let (mut x, mut y) = (Hash128::new(0), Hash128::new(0));
        x.bytes(b"ab");
        x.bytes(b"c");
        y.bytes(b"a");
        y.bytes(b"bc");
        assert_ne!(x.finish(), y.finish());
    }

    #[test]
    fn hash128_tells_structured_inputs_apart() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..300_000u32 {
            for s in [
                format!("element{i}"),
                format!("{i}"),
                format!("key:{i:012}"),
            ] {
                let mut h = Hash128::new(b's');
                h.bytes(s.as_bytes());
                let d = h.finish();
                assert!(seen.insert(d), "collision at {s}");
            }
        }
    }

    #[test]
    fn hash64_tells_short_inputs_apart_and_is_never_zero() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..100_000u32 {
            let h = hash64(i.to_string().as_bytes());
            assert_ne!(h, 0);
            assert!(seen.insert(h), "collision at {i}");
        }
        assert_ne!(hash64(b""), hash64(b"\0"));
        // The zset members of redis-replicator's dumpV10.rdb, on which the hash this one
        // replaced collided (a full sync was then declined for nothing).
        for pattern in [|i| format!("element{i}"), |i| format!("key:{i:012}")] {
            let members: std::collections::HashSet<u64> = (0..300_000u32)
                .map(|i| hash64(pattern(i).as_bytes()))
                .collect();
            assert_eq!(members.len(), 300_000);
        }
    }
}
