//! One element of a decoded collection: bytes, or a number the encoding stored as such.
//!
//! Listpacks, ziplists and intsets store small integers as integers; Redis hands them to
//! clients as decimal text. [`Elem`] keeps them as numbers until a sink asks for text, so that
//! walking a collection allocates nothing.

use std::borrow::Cow;
use std::io::{self, Write};

/// An element of a list, set, hash or zset, or a score.
#[derive(Debug, Clone, PartialEq)]
pub enum Elem<'a> {
    /// A byte string (borrowed from the input when possible).
    Bytes(Cow<'a, [u8]>),
    /// An integer stored as such.
    Int(i64),
    /// A binary double (zset scores).
    Double(f64),
}

impl<'a> Elem<'a> {
    /// Borrowed bytes.
    pub fn borrowed(b: &'a [u8]) -> Self {
        Elem::Bytes(Cow::Borrowed(b))
    }

    /// Call `f` with the element as Redis would reply with it; numbers are formatted on the
    /// stack, so this never allocates (unlike [`Elem::to_bytes`]).
    pub fn with_text<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        match self {
            Elem::Bytes(b) => f(b),
            Elem::Int(i) => f(itoa::Buffer::new().format(*i).as_bytes()),
            Elem::Double(d) => f(double_text(*d, &mut ryu::Buffer::new()).as_bytes()),
        }
    }

    /// The element as Redis would reply with it.
    pub fn to_bytes(&self) -> Cow<'_, [u8]> {
        match self {
            Elem::Bytes(b) => Cow::Borrowed(b),
            Elem::Int(i) => Cow::Owned(itoa::Buffer::new().format(*i).as_bytes().to_vec()),
            Elem::Double(d) => Cow::Owned(format_double(*d).into_bytes()),
        }
    }

    /// Write the element's text.
    pub fn write_to<W: Write + ?Sized>(&self, w: &mut W) -> io::Result<()> {
        self.with_text(|t| w.write_all(t))
    }

    /// Length of the element's text.
    pub fn text_len(&self) -> usize {
        match self {
            Elem::Bytes(b) => b.len(),
            other => other.with_text(<[u8]>::len),
        }
    }

    /// The text of this zset score as [`double_text`] writes its double, when it can be had
    /// without going through the double: a listpack integer up to 2^53 (exact as a double,
    /// formatted into `num`), or text that is already the shortest form of its double
    /// ([`is_shortest_decimal`]). Also whether the double is integral (ryu alone writes `.0`
    /// after those). `None`: ask [`Elem::as_f64`].
    pub fn score_text<'s>(&'s self, num: &'s mut itoa::Buffer) -> Option<(&'s [u8], bool)> {
        match self {
            Elem::Int(i) if i.unsigned_abs() <= 1 << 53 => Some((num.format(*i).as_bytes(), true)),
            Elem::Bytes(b) if is_shortest_decimal(b) => Some((b, false)),
            _ => None,
        }
    }

    /// The element as a double (zset scores), if it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Elem::Double(d) => Some(*d),
            Elem::Int(i) => Some(*i as f64),
            Elem::Bytes(b) => super::cursor::parse_double(b),
        }
    }

    /// The element as an integer, if it is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Elem::Int(i) => Some(*i),
            Elem::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            Elem::Double(_) => None,
        }
    }

    /// Detach from the input.
    pub fn into_owned(self) -> Elem<'static> {
        match self {
            Elem::Bytes(b) => Elem::Bytes(Cow::Owned(b.into_owned())),
            Elem::Int(i) => Elem::Int(i),
            Elem::Double(d) => Elem::Double(d),
        }
    }
}

/// Turn one decoding step into an iterator item that ends the iteration after the end marker
/// or the first error (blob iterators share this: a corrupt blob yields one error, then stops).
pub(crate) fn end_after<'a>(
    done: &mut bool,
    step: super::error::DecodeResult<Option<Elem<'a>>>,
) -> Option<super::error::DecodeResult<Elem<'a>>> {
    match step {
        Ok(Some(e)) => Some(Ok(e)),
        Ok(None) => {
            *done = true;
            None
        }
        Err(e) => {
            *done = true;
            Some(Err(e))
        }
    }
}

/// Format a double so that Redis parses it back to the same value: shortest round-trip form,
/// `inf` / `-inf` for infinities.
pub fn format_double(d: f64) -> String {
    double_text(d, &mut ryu::Buffer::new()).to_string()
}

/// Whether `b` is exactly the text ryu (and [`double_text`]) make of the double it denotes, so
/// that a zset score stored as text in a listpack can be written out without parsing and
/// formatting it: a plain decimal with a fraction, no superfluous zero, at most 15 significant
/// digits, and at least 1e-5 and below 1e16 (where ryu writes no exponent).
///
/// Why 15 digits suffice: two different decimals of at most 15 significant digits never round
/// to the same double (`DBL_DIG`), so no shorter text denotes this double, and the shortest
/// text ryu picks is this one.
pub fn is_shortest_decimal(b: &[u8]) -> bool {
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    let Some(dot) = digits.iter().position(|&c| c == b'.') else {
        return false;
    };
    let (int, frac) = (&digits[..dot], &digits[dot + 1..]);
    if int.is_empty() || !int.iter().chain(frac).all(u8::is_ascii_digit) {
        return false;
    }
    match frac.last() {
        None | Some(b'0') => return false,
        _ => {}
    }
    let significant = if int == b"0" {
        let zeros = frac.iter().take_while(|&&c| c == b'0').count();
        if zeros > 4 {
            return false;
        }
        frac.len() - zeros
    } else if int[0] == b'0' {
        return false;
    } else {
        int.len() + frac.len()
    };
    significant <= 15
}

/// [`format_double`] into a buffer on the caller's stack.
pub fn double_text(d: f64, buf: &mut ryu::Buffer) -> &str {
    if d.is_infinite() {
        if d > 0.0 { "inf" } else { "-inf" }
    } else if d.is_nan() {
        "nan"
    } else {
        let s = buf.format_finite(d);
        s.strip_suffix(".0").unwrap_or(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn doubles_round_trip() {
        for d in [
            0.1,
            1.0,
            -3.0,
            2.5,
            1e-300,
            1.7976931348623157e308,
            123456789.123,
        ] {
            assert_eq!(format_double(d).parse::<f64>().unwrap(), d);
        }
        assert_eq!(format_double(1.0), "1");
        assert_eq!(format_double(f64::NEG_INFINITY), "-inf");
        assert_eq!(Elem::Int(-42).to_bytes().as_ref(), b"-42");
    }

    /// Text taken as shortest must be what ryu writes for its double, and the integers the
    /// fast path takes must print as ryu prints them.
    #[test]
    fn shortest_decimals_are_what_ryu_writes() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut taken = 0;
        for i in 0..200_000 {
            // Decimals of every shape: 1 to 17 digits, the dot anywhere, signs, zeros.
            let n = (next() % 17 + 1) as usize;
            let mut t: String = (0..n)
                .map(|_| (b'0' + (next() % 10) as u8) as char)
                .collect();
            let dot = (next() % (n as u64 + 1)) as usize;
            t.insert(dot, '.');
            if dot == 0 {
                t.insert(0, '0');
            }
            if i % 3 == 0 {
                t.insert(0, '-');
            }
            let d: f64 = t.parse().unwrap();
            let mut b = ryu::Buffer::new();
            let ryu = b.format_finite(d);
            if is_shortest_decimal(t.as_bytes()) {
                taken += 1;
                assert_eq!(ryu, t, "{t}");
                assert_eq!(double_text(d, &mut ryu::Buffer::new()), t);
            }
            // And ryu's own output, when it is a plain decimal of few digits, is taken.
            if !ryu.contains('e') && ryu.len() <= 12 && !ryu.ends_with(".0") && d.abs() >= 1e-5 {
                assert!(is_shortest_decimal(ryu.as_bytes()), "{ryu}");
            }
            let int = (next() as i64) >> (next() % 64);
            let mut num = itoa::Buffer::new();
            if let Some((t, integral)) = Elem::Int(int).score_text(&mut num) {
                let mut s = String::from_utf8(t.to_vec()).unwrap();
                if integral {
                    s.push_str(".0");
                }
                assert_eq!(s, ryu::Buffer::new().format_finite(int as f64), "{int}");
            }
        }
        assert!(taken > 10_000, "{taken}");
        for t in [
            "1.50", "01.5", "1.", ".5", "1e5", "0.000001", "5", "-", "1.2.3", "0.0",
        ] {
            assert!(!is_shortest_decimal(t.as_bytes()), "{t}");
        }
    }
}
