//! Intset blobs (type 11), FORMATS §5.4.

use super::cursor::Cursor;
use super::elem::Elem;
use super::error::{DecodeError, DecodeResult};

/// Iterator over the members of an intset.
#[derive(Clone)]
pub struct IntsetIter<'a> {
    cur: Cursor<'a>,
    width: u32,
    left: u32,
}

impl<'a> IntsetIter<'a> {
    /// Check the header (width 2/4/8 and exact size) and start iterating.
    pub fn new(blob: &'a [u8], base: u64) -> DecodeResult<Self> {
        let mut cur = Cursor::blob(blob, base, "intset");
        let width = cur.u32_le()?;
        let len = cur.u32_le()?;
        if !matches!(width, 2 | 4 | 8) {
            return Err(DecodeError::invalid(
                base,
                format!("bad intset width {width}"),
            ));
        }
        if 8 + width as u64 * len as u64 != blob.len() as u64 {
            return Err(DecodeError::invalid(
                base,
                format!(
                    "intset of {len} x {width} bytes in a {}-byte blob",
                    blob.len()
                ),
            ));
        }
        Ok(IntsetIter {
            cur,
            width,
            left: len,
        })
    }
    /// Number of members.
    pub fn len(&self) -> u64 {
        self.left as u64
    }
    /// Whether it has no members.
    pub fn is_empty(&self) -> bool {
        self.left == 0
    }
}

impl<'a> Iterator for IntsetIter<'a> {
    type Item = DecodeResult<Elem<'a>>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let c = &mut self.cur;
        let v = match self.width {
            2 => c.u16_le().map(|v| v as i16 as i64),
            4 => c.u32_le().map(|v| v as i32 as i64),
            _ => c.u64_le().map(|v| v as i64),
        };
        Some(v.map(Elem::Int))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn sixteen_bit() {
        let b = [2, 0, 0, 0, 2, 0, 0, 0, 0xff, 0xff, 0x10, 0x00];
        let v: Vec<_> = IntsetIter::new(&b, 0)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        assert_eq!(v, vec![Elem::Int(-1), Elem::Int(16)]);
        assert!(IntsetIter::new(&b[..10], 0).is_err());
    }
}
