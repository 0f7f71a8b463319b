//! Ziplist blobs (types 10, 12, 13 and quicklist v1 nodes; Redis 2.6–6.2), FORMATS §5.2.

use super::cursor::Cursor;
use super::elem::Elem;
use super::error::{DecodeError, DecodeResult};

/// Iterator over the entries of one ziplist blob.
#[derive(Clone)]
pub struct ZiplistIter<'a> {
    cur: Cursor<'a>,
    done: bool,
    /// Entry count from the header (`u16::MAX` = unknown).
    declared: u16,
    seen: u64,
}

impl<'a> ZiplistIter<'a> {
    /// Check the header and start iterating. `base` is the blob's offset in the input.
    pub fn new(blob: &'a [u8], base: u64) -> DecodeResult<Self> {
        let mut cur = Cursor::blob(blob, base, "ziplist");
        let zlbytes = cur.u32_le()?;
        let _zltail = cur.u32_le()?;
        let declared = cur.u16_le()?;
        if zlbytes as usize != blob.len() {
            return Err(DecodeError::invalid(
                base,
                format!(
                    "ziplist header says {zlbytes} bytes, blob has {}",
                    blob.len()
                ),
            ));
        }
        if blob.last() != Some(&0xff) {
            return Err(DecodeError::invalid(base, "ziplist does not end with 0xFF"));
        }
        Ok(ZiplistIter {
            cur,
            done: false,
            declared,
            seen: 0,
        })
    }

    /// Entry count from the header, when it is known.
    pub fn declared_len(&self) -> Option<u64> {
        (self.declared != u16::MAX).then_some(self.declared as u64)
    }

    fn entry(&mut self) -> DecodeResult<Option<Elem<'a>>> {
        let c = &mut self.cur;
        let first = c.u8()?;
        if first == 0xff {
            if !c.is_empty() {
                return Err(c.invalid("ziplist end marker before the end of the blob"));
            }
            if self.declared != u16::MAX && self.seen != self.declared as u64 {
                return Err(c.invalid(format!(
                    "ziplist header says {} entries, found {}",
                    self.declared, self.seen
                )));
            }
            return Ok(None);
        }
        // prevlen
        if first == 0xfe {
            c.skip(4, "ziplist prevlen")?;
        }
        let enc = c.u8()?;
        let e = match enc >> 6 {
            0 => Elem::borrowed(c.take((enc & 0x3f) as u64, "ziplist string")?),
            1 => {
                let n = (((enc & 0x3f) as u64) << 8) | c.u8()? as u64;
                Elem::borrowed(c.take(n, "ziplist string")?)
            }
            2 => {
                if enc != 0x80 {
                    return Err(c.invalid(format!("bad ziplist encoding {enc:#04x}")));
                }
                let n = c.u32_be()? as u64;
                Elem::borrowed(c.take(n, "ziplist string")?)
            }
            _ => match enc {
                0xc0 => Elem::Int(c.u16_le()? as i16 as i64),
                0xd0 => Elem::Int(c.u32_le()? as i32 as i64),
                0xe0 => Elem::Int(c.u64_le()? as i64),
                0xf0 => {
                    let b = c.take(3, "int24")?;
                    let v = (b[0] as i32) | ((b[1] as i32) << 8) | ((b[2] as i32) << 16);
                    Elem::Int(((v << 8) >> 8) as i64)
                }
                0xfe => Elem::Int(c.u8()? as i8 as i64),
                0xf1..=0xfd => Elem::Int(((enc & 0x0f) as i64) - 1),
                _ => return Err(c.invalid(format!("bad ziplist encoding {enc:#04x}"))),
            },
        };
        self.seen += 1;
        Ok(Some(e))
    }
}

impl<'a> Iterator for ZiplistIter<'a> {
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
    fn format_example() {
        // FORMATS §5.2 example: the ziplist ["2","5"]
        let zl = [
            0x0f, 0, 0, 0, 0x0c, 0, 0, 0, 0x02, 0, 0x00, 0xf3, 0x02, 0xf6, 0xff,
        ];
        let v: Vec<_> = ZiplistIter::new(&zl, 0)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        assert_eq!(v, vec![Elem::Int(2), Elem::Int(5)]);
    }
    #[test]
    fn corrupt_is_error() {
        let zl = [
            0x0f, 0, 0, 0, 0x0c, 0, 0, 0, 0x02, 0, 0x00, 0x3f, 0x02, 0xf6, 0xff,
        ];
        assert!(ZiplistIter::new(&zl, 0).unwrap().any(|e| e.is_err()));
    }
}
