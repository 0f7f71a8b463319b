//! Listpack blobs (7.0+ hashes, zsets, sets, list nodes and stream nodes), FORMATS §5.3.

use super::cursor::Cursor;
use super::elem::Elem;
use super::error::{DecodeError, DecodeResult};

/// Iterator over the entries of one listpack blob.
#[derive(Clone)]
pub struct ListpackIter<'a> {
    cur: Cursor<'a>,
    done: bool,
    declared: u16,
    seen: u64,
}

/// Bytes of the backlen that follows an entry of `l` bytes (`lpEncodeBacklen`).
fn backlen_size(l: u64) -> u64 {
    match l {
        0..=127 => 1,
        128..=16382 => 2,
        16383..=2097150 => 3,
        2097151..=268435454 => 4,
        _ => 5,
    }
}

impl<'a> ListpackIter<'a> {
    /// Check the header and start iterating. `base` is the blob's offset in the input.
    pub fn new(blob: &'a [u8], base: u64) -> DecodeResult<Self> {
        let mut cur = Cursor::blob(blob, base, "listpack");
        let total = cur.u32_le()?;
        let declared = cur.u16_le()?;
        if total as usize != blob.len() {
            return Err(DecodeError::invalid(
                base,
                format!(
                    "listpack header says {total} bytes, blob has {}",
                    blob.len()
                ),
            ));
        }
        if blob.last() != Some(&0xff) {
            return Err(DecodeError::invalid(
                base,
                "listpack does not end with 0xFF",
            ));
        }
        Ok(ListpackIter {
            cur,
            done: false,
            declared,
            seen: 0,
        })
    }

    /// Element count from the header, when it is known.
    pub fn declared_len(&self) -> Option<u64> {
        (self.declared != u16::MAX).then_some(self.declared as u64)
    }

    fn entry(&mut self) -> DecodeResult<Option<Elem<'a>>> {
        let c = &mut self.cur;
        let start = c.pos();
        let b = c.u8()?;
        let e = if b & 0x80 == 0 {
            Elem::Int((b & 0x7f) as i64)
        } else if b & 0xc0 == 0x80 {
            Elem::borrowed(c.take((b & 0x3f) as u64, "listpack string")?)
        } else if b & 0xe0 == 0xc0 {
            let v = (((b & 0x1f) as i64) << 8) | c.u8()? as i64;
            Elem::Int(if v >= 1 << 12 { v - (1 << 13) } else { v })
        } else if b & 0xf0 == 0xe0 {
            let n = (((b & 0x0f) as u64) << 8) | c.u8()? as u64;
            Elem::borrowed(c.take(n, "listpack string")?)
        } else {
            match b {
                0xf0 => {
                    let n = c.u32_le()? as u64;
                    Elem::borrowed(c.take(n, "listpack string")?)
                }
                0xf1 => Elem::Int(c.u16_le()? as i16 as i64),
                0xf2 => {
                    let s = c.take(3, "int24")?;
                    let v = (s[0] as i32) | ((s[1] as i32) << 8) | ((s[2] as i32) << 16);
                    Elem::Int(((v << 8) >> 8) as i64)
                }
                0xf3 => Elem::Int(c.u32_le()? as i32 as i64),
                0xf4 => Elem::Int(c.u64_le()? as i64),
                0xff => {
                    if !c.is_empty() {
                        return Err(c.invalid("listpack end marker before the end of the blob"));
                    }
                    if self.declared != u16::MAX && self.seen != self.declared as u64 {
                        return Err(c.invalid(format!(
                            "listpack header says {} elements, found {}",
                            self.declared, self.seen
                        )));
                    }
                    return Ok(None);
                }
                _ => return Err(c.invalid(format!("bad listpack encoding byte {b:#04x}"))),
            }
        };
        let l = (c.pos() - start) as u64;
        c.skip(backlen_size(l), "listpack backlen")?;
        self.seen += 1;
        Ok(Some(e))
    }
}

impl<'a> Iterator for ListpackIter<'a> {
    type Item = DecodeResult<Elem<'a>>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let step = self.entry();
        super::elem::end_after(&mut self.done, step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn ints_and_strings() {
        // 7-bit 5, string "ab", 13-bit -1, int16 1000, terminator
        let mut lp = vec![0, 0, 0, 0, 4, 0];
        lp.extend_from_slice(&[0x05, 0x01]);
        lp.extend_from_slice(&[0x82, b'a', b'b', 0x03]);
        lp.extend_from_slice(&[0xdf, 0xff, 0x02]);
        lp.extend_from_slice(&[0xf1, 0xe8, 0x03, 0x03]);
        lp.push(0xff);
        let n = lp.len() as u32;
        lp[..4].copy_from_slice(&n.to_le_bytes());
        let v: Vec<_> = ListpackIter::new(&lp, 0)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        assert_eq!(
            v,
            vec![
                Elem::Int(5),
                Elem::borrowed(b"ab"),
                Elem::Int(-1),
                Elem::Int(1000)
            ]
        );
    }
}
