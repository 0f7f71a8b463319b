//! The crate-level error: what a job reports to the user. Each layer keeps its own error type
//! (with input name, byte offset and key); this enum only gathers them.

/// Any failure of a job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A corrupt or unreadable RDB.
    #[error(transparent)]
    Rdb(#[from] crate::rdb::Error),
    /// A corrupt or unreadable AOF.
    #[error(transparent)]
    Aof(#[from] crate::aof::AofError),
    /// A live server failed, refused, stalled or could not be reached (named by its
    /// redacted address).
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    /// A JSON lines input with a line that is not what `convert --format jsonl` writes.
    #[error(transparent)]
    Jsonl(#[from] crate::input::jsonl::JsonlError),
    /// Reading or writing a file failed.
    #[error("{path}: {err}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        err: std::io::Error,
    },
    /// The input is of no kind we read.
    #[error("{path}: {msg}")]
    Input {
        /// The input.
        path: String,
        /// What is wrong.
        msg: String,
    },
    /// Stopped on request (Ctrl-C, SIGTERM, SIGHUP), after putting back what the run had
    /// changed on a server.
    #[error("interrupted")]
    Cancelled,
    /// `import --on-error stop` stopped after a refused entry (named in the report).
    #[error("import stopped after an error (--on-error stop)")]
    Stopped,
    /// A loop was left on purpose by its own sink (a full sync or a snapshot comparison
    /// given up); the caller knows why, and this never reaches the user.
    #[error("given up: {0}")]
    GivenUp(&'static str),
    /// An invariant of rdbferry's own did not hold (a bug), or a lock was poisoned by a
    /// panic in another thread.
    #[error("internal error: {0}")]
    Internal(String),
    /// Bad flags or arguments.
    #[error("{0}")]
    Usage(String),
    /// A Redis target refused, failed or could not be reached. `target` is the redacted
    /// address (never a password).
    #[error("{target}: {msg}")]
    Target {
        /// `host:port` of the target.
        target: String,
        /// What went wrong.
        msg: String,
    },
}

impl From<crate::cancel::Cancelled> for Error {
    fn from(_: crate::cancel::Cancelled) -> Self {
        Error::Cancelled
    }
}

impl Error {
    /// A failure about the server `target` (its redacted address) that is not a transport
    /// error: what the job found there.
    pub fn target(target: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Target {
            target: target.into(),
            msg: msg.into(),
        }
    }

    /// Whether a live server's connection failed or it said "not now" (see
    /// [`crate::net::NetError::is_transient`]).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Net(e) if e.is_transient())
    }

    /// The same error, naming the input `input` and (when given) the key as the input
    /// names it: for a decode error raised where only the value was at hand (a sink writing
    /// it under another name).
    #[must_use]
    pub fn in_input(self, input: &str, key: Option<&[u8]>) -> Error {
        match self {
            Error::Rdb(crate::rdb::Error::Corrupt {
                offset,
                key: k,
                kind,
                ..
            }) => Error::Rdb(crate::rdb::Error::Corrupt {
                source_name: input.to_string(),
                offset,
                key: key.map(<[u8]>::to_vec).or(k),
                kind,
            }),
            other => other,
        }
    }

    /// Wrap an I/O error with the path it concerns.
    pub fn io(path: impl Into<String>, err: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            err,
        }
    }
}

/// Result of jobs.
pub type Result<T, E = Error> = std::result::Result<T, E>;
