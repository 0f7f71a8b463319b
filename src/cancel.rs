//! Cancellation: a token the binary sets on the first Ctrl-C, SIGTERM or SIGHUP, and every
//! long loop of the library checks (rayon workers between records, the writer's threads,
//! the full sync's waits), so a run stops within a second and still puts back what it
//! changed on a server. The library installs no signal handler: that is the binary's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A shared stop flag, and a count of the steps that must finish before the process may end
/// (a server left changed until they do: [`Cancel::hold`]).
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    holds: AtomicUsize,
}

/// A step that must finish (and put a server back) before the process may end; see
/// [`Cancel::hold`]. Released when dropped.
#[derive(Debug)]
pub struct Hold(Cancel);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.0.holds.fetch_sub(1, Ordering::SeqCst);
    }
}

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
        self.0.stop.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.0.stop.load(Ordering::Relaxed)
    }

    /// Mark a step that changed a server and must put it back before the process ends: the
    /// binary's signal handling waits for every hold to be released before it ends a
    /// process that does not stop by itself.
    pub fn hold(&self) -> Hold {
        self.0.holds.fetch_add(1, Ordering::SeqCst);
        Hold(self.clone())
    }

    /// Steps under way that must finish first.
    pub fn holds(&self) -> usize {
        self.0.holds.load(Ordering::SeqCst)
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
