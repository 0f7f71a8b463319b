//! Zipmap blobs (type 9, Redis 2.4 hashes), FORMATS §5.1.

use super::cursor::Cursor;
use super::elem::Elem;
use super::error::DecodeResult;

/// Iterator over a zipmap: field, value, field, value, ...
#[derive(Clone)]
pub struct ZipmapIter<'a> {
    cur: Cursor<'a>,
    /// Whether the next item is a value.
    at_value: bool,
    done: bool,
}

impl<'a> ZipmapIter<'a> {
    /// Start iterating; the first byte is the (advisory) entry count.
    pub fn new(blob: &'a [u8], base: u64) -> DecodeResult<Self> {
        let mut cur = Cursor::blob(blob, base, "zipmap");
        cur.u8()?;
        Ok(ZipmapIter {
            cur,
            at_value: false,
            done: false,
        })
    }

    fn len_field(&mut self) -> DecodeResult<Option<u64>> {
        match self.cur.u8()? {
            0xff => Ok(None),
            0xfe => Ok(Some(self.cur.u32_le()? as u64)),
            n => Ok(Some(n as u64)),
        }
    }

    fn item(&mut self) -> DecodeResult<Option<Elem<'a>>> {
        let Some(n) = self.len_field()? else {
            if self.at_value {
                return Err(self
                    .cur
                    .invalid("zipmap ends between a field and its value"));
            }
            if !self.cur.is_empty() {
                return Err(self
                    .cur
                    .invalid("zipmap end marker before the end of the blob"));
            }
            return Ok(None);
        };
        let e = if self.at_value {
            let free = self.cur.u8()? as u64;
            let v = self.cur.take(n, "zipmap value")?;
            self.cur.skip(free, "zipmap free space")?;
            v
        } else {
            self.cur.take(n, "zipmap field")?
        };
        self.at_value = !self.at_value;
        Ok(Some(Elem::borrowed(e)))
    }
}

impl<'a> Iterator for ZipmapIter<'a> {
    type Item = DecodeResult<Elem<'a>>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let step = self.item();
        super::elem::end_after(&mut self.done, step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn format_example() {
        let b = b"\x02\x03foo\x03\x00bar\x05hello\x05\x00world\xff";
        let v: Vec<_> = ZipmapIter::new(b, 0).unwrap().map(|e| e.unwrap()).collect();
        assert_eq!(
            v,
            vec![
                Elem::borrowed(b"foo"),
                Elem::borrowed(b"bar"),
                Elem::borrowed(b"hello"),
                Elem::borrowed(b"world")
            ]
        );
    }
}
