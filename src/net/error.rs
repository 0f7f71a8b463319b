//! What can go wrong with a live Redis: typed, so that callers decide by kind (reconnect,
//! retry later, stop), never by reading message text. Every error names the server by its
//! redacted address and says what was awaited; none carries a password.

use std::io;
use std::time::Duration;

use crate::resp::RespError;

/// A failure talking to one server.
#[derive(Debug, thiserror::Error)]
#[error("{addr}: {kind}{}", .hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
#[non_exhaustive]
pub struct NetError {
    /// The server: its URL, redacted (never a password).
    pub addr: String,
    /// What went wrong.
    pub kind: NetErrorKind,
    /// What the user may do about it, when we can tell.
    pub hint: Option<String>,
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetErrorKind {
    /// The host name did not resolve.
    #[error("cannot resolve host: {0}")]
    Resolve(io::Error),
    /// No address accepted a TCP connection.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The TLS handshake or session failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// Nothing came (or nothing could be sent) within the deadline.
    #[error("timed out after {} s waiting for {awaited}", .after.as_secs_f64())]
    Timeout {
        /// What we waited for (`the reply to INFO`, `the replica's handshake`).
        awaited: String,
        /// The deadline.
        after: Duration,
    },
    /// The server closed the connection.
    #[error("connection closed by the server while waiting for {0}")]
    Closed(String),
    /// A socket read or write failed.
    #[error("{what} failed: {err}")]
    Io {
        /// `read` or `write`.
        what: &'static str,
        /// The error.
        err: io::Error,
    },
    /// The server sent bytes that are not RESP, or a reply over the command's size cap.
    #[error("bad data in {awaited}: {err}")]
    Protocol {
        /// What was being read (`the reply to INFO`, `the replies to 5 commands`).
        awaited: String,
        /// What is wrong.
        err: RespError,
    },
    /// `AUTH` was refused.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The server answered a command with an error where the caller needs it to succeed.
    #[error("{command}: {reply}")]
    Refused {
        /// The command.
        command: String,
        /// The error reply.
        reply: String,
    },
    /// The wait was given up because the run was interrupted.
    #[error("interrupted")]
    Interrupted,
    /// A reply of an unexpected shape.
    #[error("unexpected reply to {command}: {what}")]
    Unexpected {
        /// The command.
        command: String,
        /// What came.
        what: String,
    },
}

/// Error replies that mean "not now": the command did not run and may be sent again
/// (`NOMASTERLINK`: a replica asked for a sync while its own link to its master is down).
pub fn transient_reply(e: &[u8]) -> bool {
    let word = e.split(|&b| b == b' ').next().unwrap_or_default();
    matches!(
        word,
        b"LOADING" | b"BUSY" | b"TRYAGAIN" | b"MASTERDOWN" | b"CLUSTERDOWN" | b"NOMASTERLINK"
    )
}

impl NetError {
    /// An error of the server at `addr`.
    pub fn new(addr: impl Into<String>, kind: NetErrorKind) -> NetError {
        NetError {
            addr: addr.into(),
            kind,
            hint: None,
        }
    }

    /// The same error, with a hint for the user.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> NetError {
        self.hint = Some(hint.into());
        self
    }

    /// Whether the connection (not the request) failed, or the server said "not now": a
    /// caller that can resend safely reconnects and tries again.
    pub fn is_transient(&self) -> bool {
        match &self.kind {
            NetErrorKind::Resolve(_)
            | NetErrorKind::Connect(_)
            | NetErrorKind::Timeout { .. }
            | NetErrorKind::Closed(_)
            | NetErrorKind::Io { .. } => true,
            NetErrorKind::Refused { reply, .. } => transient_reply(reply.as_bytes()),
            _ => false,
        }
    }

    /// Whether a deadline passed.
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, NetErrorKind::Timeout { .. })
    }
}
