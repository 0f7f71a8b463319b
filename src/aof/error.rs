//! Errors of the AOF layer.
//!
//! Every variant names the file it is about (the caller's `source_name`, usually a path) and,
//! for file contents, the byte offset or manifest line, so a message reads like
//! `corrupt AOF at appendonly.aof.3.incr.aof+0x1f3a: expected '$' (bulk string argument), found byte 0x3a`.

use std::path::PathBuf;

use crate::resp::RespErrorKind;

/// What is wrong with the commands of an AOF file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AofErrorKind {
    /// The RESP framing is broken.
    #[error("{0}")]
    Resp(RespErrorKind),
    /// `*0\r\n`: Redis refuses to load a command with no name.
    #[error("empty command (*0)")]
    EmptyCommand,
    /// `SELECT` without exactly one decimal db index.
    #[error("SELECT with an invalid db index {0:?}")]
    BadSelect(String),
    /// A `MULTI` whose commands exceed the transaction buffer before its `EXEC`.
    #[error("transaction longer than {commands} commands or {args} arguments before EXEC")]
    TransactionTooLarge {
        /// Command cap.
        commands: usize,
        /// Argument cap (over all buffered commands).
        args: usize,
    },
    /// The caller's start offset lies beyond the end of the data.
    #[error("start offset {start} beyond the end of the data ({len} bytes)")]
    StartBeyondEnd {
        /// Requested start.
        start: u64,
        /// Length of the data.
        len: u64,
    },
}

/// Why following a growing AOF (the tail `follow` reads) cannot go on from where it stands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TailErrorKind {
    /// The file is shorter than what was already read from it.
    #[error(
        "the file shrank to {len} bytes, below what was already read (truncated or replaced in place)"
    )]
    Shrank {
        /// Its length now.
        len: u64,
    },
    /// The bytes just before the position are no longer those that were read there.
    #[error(
        "the bytes before this position changed since they were read (the file was rewritten in place or replaced)"
    )]
    Changed,
    /// A checkpoint that does not name this AOF's file as it was.
    #[error("the checkpoint is not from this AOF: {0}")]
    ForeignCheckpoint(String),
    /// A file the tail needs no longer exists.
    #[error("{0}")]
    Gone(String),
    /// The file is neither RESP commands nor an RDB preamble followed by them.
    #[error(
        "not an AOF (starts with {0}; an AOF starts with '*', '#' or an RDB preamble \"REDIS\")"
    )]
    NotAof(String),
    /// The checkpoint's offset falls inside a command, a transaction or an RDB.
    #[error(
        "the checkpoint offset is not at a command boundary of this file (the file changed since?)"
    )]
    NotBoundary,
    /// A single-file AOF was rewritten and where the new file continues the old one cannot
    /// be proven from their bytes.
    #[error(
        "the AOF was rewritten and the join between the old and the new file is not proven: {0}"
    )]
    JoinNotProven(String),
    /// Starting over needs a base the caller can load over existing data: an RDB.
    #[error(
        "cannot start over from this file: it has no RDB preamble (aof-use-rdb-preamble no), and its commands would merge into existing keys"
    )]
    NoRdbBase,
    /// A pending command or transaction grew past the buffer cap.
    #[error("a command or transaction longer than {0} bytes")]
    TooLong(u64),
}

/// An AOF error with its context.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AofError {
    /// The file's contents are not a valid AOF.
    #[error("corrupt AOF at {source_name}+{offset:#x}: {kind}")]
    Corrupt {
        /// File name (or other input name).
        source_name: String,
        /// Byte offset in that file.
        offset: u64,
        /// What is wrong.
        kind: AofErrorKind,
    },
    /// A file that is not the last one to replay ends mid-command or inside a transaction
    /// (fatal in Redis too, FORMATS.md §10.5).
    #[error(
        "truncated AOF {source_name} at +{offset:#x} ({reason}), but it is not the last file to replay"
    )]
    Truncated {
        /// File name.
        source_name: String,
        /// Offset of the incomplete command or of the unterminated `MULTI`.
        offset: u64,
        /// `incomplete command` or `MULTI without EXEC`.
        reason: &'static str,
    },
    /// The multi-part manifest is invalid.
    #[error("bad AOF manifest {source_name} line {line} (+{offset:#x}): {what}")]
    Manifest {
        /// Manifest file name.
        source_name: String,
        /// 1-based line number (0: the file as a whole).
        line: usize,
        /// Byte offset of the line.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// A directory does not hold exactly one manifest.
    #[error("{}: expected exactly one *.manifest file, found {found}", dir.display())]
    ManifestNotFound {
        /// The directory searched.
        dir: PathBuf,
        /// How many candidates were found.
        found: usize,
    },
    /// Following a growing AOF cannot go on (see [`TailErrorKind`]).
    #[error("following AOF {source_name} at +{offset:#x}: {kind}")]
    Tail {
        /// The file (path).
        source_name: String,
        /// The byte offset concerned (the position, for most kinds).
        offset: u64,
        /// What is wrong.
        kind: TailErrorKind,
    },
    /// Reading a file or directory failed.
    #[error("reading {}: {err}", path.display())]
    Io {
        /// What was being read.
        path: PathBuf,
        /// The I/O error.
        err: std::io::Error,
    },
}

impl AofError {
    /// The error kind, when a file's commands are corrupt.
    pub fn kind(&self) -> Option<&AofErrorKind> {
        match self {
            AofError::Corrupt { kind, .. } => Some(kind),
            _ => None,
        }
    }

    /// What stopped a tail, for [`AofError::Tail`].
    pub fn tail_kind(&self) -> Option<&TailErrorKind> {
        match self {
            AofError::Tail { kind, .. } => Some(kind),
            _ => None,
        }
    }

    /// The byte offset the error points at, when it points into a file.
    pub fn offset(&self) -> Option<u64> {
        match self {
            AofError::Corrupt { offset, .. }
            | AofError::Truncated { offset, .. }
            | AofError::Manifest { offset, .. }
            | AofError::Tail { offset, .. } => Some(*offset),
            _ => None,
        }
    }
}
