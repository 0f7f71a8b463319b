//! Errors of the RDB layer.
//!
//! Decoding functions return [`DecodeError`]: what went wrong and at which byte offset of the
//! input. The reader wraps it into [`Error`], adding the input's name and the key being read,
//! so that every message reads like
//! `corrupt RDB at dump.rdb+0x1f3a0 (key "user:42"): listpack entry length 9000 exceeds 512 remaining`.

use std::fmt;

/// What is wrong with the bytes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input ended before a complete item. On a stream this means "read more".
    #[error("unexpected end of input: needed {needed} more bytes")]
    Truncated {
        /// Bytes missing.
        needed: u64,
    },
    /// The first 9 bytes are not an RDB header.
    #[error("not an RDB file: bad magic {0:?}")]
    BadMagic(String),
    /// A version number no Redis or Valkey release writes.
    #[error("unsupported RDB version {0}")]
    UnsupportedVersion(String),
    /// A type byte not valid for this file's version.
    #[error("unknown value type {type_id} in RDB {dialect}")]
    UnknownType {
        /// The byte read.
        type_id: u8,
        /// The file's dialect, e.g. `v10` or `Valkey v80`.
        dialect: String,
    },
    /// A length field larger than the bytes that remain.
    #[error("{what} {len} exceeds the {remaining} bytes remaining")]
    LengthTooLarge {
        /// What the length counts.
        what: &'static str,
        /// The declared length.
        len: u64,
        /// Bytes left in the enclosing item.
        remaining: u64,
    },
    /// LZF data that does not decompress to its declared size.
    #[error("bad LZF string (compressed {compressed} bytes, declared {declared}): {reason}")]
    Lzf {
        /// Compressed length.
        compressed: u64,
        /// Declared original length.
        declared: u64,
        /// Why it failed.
        reason: String,
    },
    /// The trailing CRC-64 does not match the file.
    #[error("checksum mismatch: file says {stored:#018x}, computed {computed:#018x}")]
    ChecksumMismatch {
        /// Checksum stored in the file.
        stored: u64,
        /// Checksum computed over the file.
        computed: u64,
    },
    /// Any other structural inconsistency.
    #[error("{0}")]
    Invalid(String),
}

/// A decoding failure at a byte offset (relative to the start of the input).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError {
    /// Byte offset where the bad item starts.
    pub offset: u64,
    /// What is wrong.
    pub kind: ErrorKind,
}

impl DecodeError {
    /// A new error at `offset`.
    pub fn new(offset: u64, kind: ErrorKind) -> Self {
        DecodeError { offset, kind }
    }
    /// Shorthand for [`ErrorKind::Invalid`].
    pub fn invalid(offset: u64, msg: impl Into<String>) -> Self {
        DecodeError::new(offset, ErrorKind::Invalid(msg.into()))
    }
    /// Whether more input could make this decode succeed.
    pub fn is_truncated(&self) -> bool {
        matches!(self.kind, ErrorKind::Truncated { .. })
    }
}

/// Result of low-level decoders.
pub type DecodeResult<T> = Result<T, DecodeError>;

/// An RDB error with full context: input name, byte offset, key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input is corrupt (or of a kind we refuse).
    #[error("corrupt RDB at {source_name}+{offset:#x}{}: {kind}", KeyCtx(key.as_deref()))]
    Corrupt {
        /// Input name (path, `-`, or `host:port`).
        source_name: String,
        /// Byte offset in that input.
        offset: u64,
        /// The key being read, when known.
        key: Option<Vec<u8>>,
        /// What is wrong.
        kind: ErrorKind,
    },
    /// Reading the input failed.
    #[error("reading {source_name}: {err}")]
    Io {
        /// Input name.
        source_name: String,
        /// The I/O error.
        err: std::io::Error,
    },
}

impl Error {
    /// Attach the input name and key to a decode error.
    pub fn from_decode(source_name: &str, key: Option<&[u8]>, e: DecodeError) -> Self {
        Error::Corrupt {
            source_name: source_name.to_string(),
            offset: e.offset,
            key: key.map(|k| k.to_vec()),
            kind: e.kind,
        }
    }
    /// The error kind, when the input is corrupt.
    pub fn kind(&self) -> Option<&ErrorKind> {
        match self {
            Error::Corrupt { kind, .. } => Some(kind),
            Error::Io { .. } => None,
        }
    }
}

/// ` (key "...")` in an error message, when the key is known.
struct KeyCtx<'a>(Option<&'a [u8]>);

impl fmt::Display for KeyCtx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(k) => write!(f, " (key \"{}\")", crate::text::Printable(k)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn message_names_file_offset_and_key() {
        let e = Error::from_decode(
            "dump.rdb",
            Some(b"user:42\xff"),
            DecodeError::new(
                0x1f3a0,
                ErrorKind::LengthTooLarge {
                    what: "listpack entry length",
                    len: 9000,
                    remaining: 512,
                },
            ),
        );
        assert_eq!(
            e.to_string(),
            "corrupt RDB at dump.rdb+0x1f3a0 (key \"user:42\\xff\"): listpack entry length 9000 exceeds the 512 bytes remaining"
        );
    }
}
