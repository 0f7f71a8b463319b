//! How bytes from the data (keys, members, commands) appear in messages: printable ASCII as
//! is, `\"` and `\\` escaped, every other byte as `\xNN`, cut at [`MAX_SHOWN`] bytes with the
//! full length said. One rule for every layer, so a key reads the same in an RDB decode
//! error, an import refusal and a verify difference.

use std::fmt;

/// Bytes shown before a key is cut.
pub const MAX_SHOWN: usize = 200;

/// Key bytes as text, without quotes: `user:42\xff`, long keys cut (`...(N bytes)`).
pub fn printable(b: &[u8]) -> String {
    Printable(b).to_string()
}

/// Key bytes as text in double quotes: `"user:42"`.
pub fn quoted(b: &[u8]) -> String {
    format!("\"{}\"", Printable(b))
}

/// A value in a message: quoted like a key, but cut at 64 bytes (`"abc"...(1000 bytes)`).
pub fn excerpt(b: &[u8]) -> String {
    let p = printable(&b[..b.len().min(64)]);
    if b.len() > 64 {
        format!("\"{p}\"...({} bytes)", b.len())
    } else {
        format!("\"{p}\"")
    }
}

/// [`printable`] as a `Display` value (no allocation when formatted into a message).
pub struct Printable<'a>(pub &'a [u8]);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &c in self.0.iter().take(MAX_SHOWN) {
            match c {
                b'\\' => f.write_str("\\\\")?,
                b'"' => f.write_str("\\\"")?,
                0x20..0x7f => write!(f, "{}", c as char)?,
                _ => write!(f, "\\x{c:02x}")?,
            }
        }
        if self.0.len() > MAX_SHOWN {
            write!(f, "...({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_the_same_everywhere() {
        assert_eq!(quoted(b"user:42\xff\"\\"), "\"user:42\\xff\\\"\\\\\"");
        let long = vec![b'a'; 250];
        assert_eq!(
            printable(&long),
            format!("{}...(250 bytes)", "a".repeat(200))
        );
    }
}
