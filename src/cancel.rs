//! Cancellation: a token the binary sets on the first Ctrl-C, SIGTERM or SIGHUP, and every
//! long loop of the library checks (rayon workers between records, the writer's threads,
//! the full sync's waits), so a run stops within a second and still puts back what it
//! changed on a server. The library installs no signal handler: that is the binary's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A shared stop flag.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

/// The error of a loop that stopped because it was asked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("interrupted")]
pub struct Cancelled;

impl Cancel {
    /// A token nobody has set.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Ask every loop holding this token to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// `Err(Cancelled)` once a stop was asked for.
    pub fn check(&self) -> Result<(), Cancelled> {
        if self.is_cancelled() {
            Err(Cancelled)
        } else {
            Ok(())
        }
    }
}
