//! Errors of the RESP layer.
//!
//! A [`RespError`] says what is wrong and at which byte offset, relative to the start of the
//! buffer given to the parser. Layers that know the input's name and the buffer's position in
//! it (the AOF reader, the replication client) rebase the offset with [`RespError::rebase`] and
//! wrap the error into their own type.

/// What is wrong with the bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RespErrorKind {
    /// A type byte other than the one(s) allowed at this point.
    #[error("expected {expected}, found byte {found:#04x}")]
    UnexpectedByte {
        /// What was allowed, e.g. `'*'`.
        expected: &'static str,
        /// The byte found.
        found: u8,
    },
    /// A `\r` not followed by `\n`, or bulk data not followed by `\r\n`.
    #[error("missing CRLF after {after}")]
    MissingCrlf {
        /// What it should follow, e.g. `bulk string`.
        after: &'static str,
    },
    /// A header line with no CRLF within the longest length it may have.
    #[error("{what} line longer than {max} bytes")]
    LineTooLong {
        /// Which line.
        what: &'static str,
        /// The longest line accepted.
        max: usize,
    },
    /// A length or integer field that is not a decimal number.
    #[error("{what} is not a decimal integer: {text:?}")]
    BadInteger {
        /// What the number counts.
        what: &'static str,
        /// The field as read (lossy UTF-8, cut at 32 bytes).
        text: String,
    },
    /// A length outside the accepted range (negative, or above the cap).
    #[error("{what} {value} out of range (max {max})")]
    LengthOutOfRange {
        /// What the length counts.
        what: &'static str,
        /// The declared value.
        value: i64,
        /// The largest accepted value.
        max: u64,
    },
    /// A RESP3 double that does not parse.
    #[error("bad double {0:?}")]
    BadDouble(String),
    /// A RESP3 null with a payload, or a boolean other than `t` or `f`.
    #[error("bad RESP3 null or boolean {0:?}")]
    BadLiteral(String),
    /// A reply longer than the cap its command has (see `ReplyDecoder`).
    #[error("reply longer than {0} bytes")]
    ReplyTooLong(u64),
    /// Aggregates nested deeper than the parser accepts.
    #[error("replies nested deeper than {0} levels")]
    TooDeep(usize),
}

/// A RESP parse failure at a byte offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at byte {offset}")]
#[non_exhaustive]
pub struct RespError {
    /// Offset of the offending byte, from the start of the parsed buffer (see [`Self::rebase`]).
    pub offset: u64,
    /// What is wrong.
    pub kind: RespErrorKind,
}

impl RespError {
    /// A new error at `offset`.
    pub fn new(offset: u64, kind: RespErrorKind) -> Self {
        RespError { offset, kind }
    }

    /// The same error with `base` added to its offset: the parser saw a slice starting at
    /// `base` of a larger input.
    #[must_use]
    pub fn rebase(mut self, base: u64) -> Self {
        self.offset = self.offset.saturating_add(base);
        self
    }
}
