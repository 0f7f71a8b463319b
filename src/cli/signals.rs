//! The process's signal handlers, installed once at start-up (the front end owns the
//! signals; the library only keeps, in [`rdbferry::sigsafe`], what a handler needs to read).
//!
//! - SIGINT, SIGTERM, SIGHUP: remove the temporary files of outputs not yet committed, then
//!   die of the same signal, as without a handler (the parent sees the same status). A full
//!   sync replaces these with its own handler while the target is its replica (it writes no
//!   files).
//!
//! Everything a handler calls is async-signal-safe: atomics, `unlink(2)`, `signal(2)`,
//! `raise(3)`; no allocation, no lock, no formatting.

use std::os::raw::c_int;

use rdbferry::sigsafe;

/// Install the handlers. Failure leaves the default action (the signal still stops the
/// process; only the clean-up is lost), so it is not an error.
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: `on_terminate` is async-signal-safe; the sigaction struct is fully set.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_terminate as extern "C" fn(c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
    }
}

extern "C" fn on_terminate(sig: c_int) {
    sigsafe::remove_temp_files();
    // SAFETY: both are async-signal-safe. The signal is blocked while this handler runs, so it
    // is delivered, with its default action, when the handler returns.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}
