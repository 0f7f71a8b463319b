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
}
