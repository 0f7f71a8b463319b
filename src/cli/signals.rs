//! The process's signal handlers, installed once at start-up (the front end owns the
//! signals; the library only keeps, in [`rdbferry::sigsafe`], what a handler needs to read).
//!
//! - SIGINT, SIGTERM, SIGHUP: remove the temporary files of outputs not yet committed, then
//!   die of the same signal, as without a handler (the parent sees the same status). A full
//!   sync replaces these with its own handler while the target is its replica (it writes no
//!   files).
//! - SIGBUS: an input file shrank while it was memory-mapped and read (see
//!   `rdbferry::input::Mapped`). The handler removes the temporary files, says which file
//!   changed (the mapped inputs are listed in [`sigsafe::MAPPED`]) and exits 1: an error
//!   with a message, never a silent death. The read cannot be resumed, so this is the end.
//!
//! Everything a handler calls is async-signal-safe: atomics, `unlink(2)`, `signal(2)`,
//! `raise(3)`, `write(2)`, `_exit(2)`; no allocation, no lock, no formatting.

use std::os::raw::{c_int, c_void};

use rdbferry::sigsafe::{self, MAPPED, TEXT_MAX};

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
    // SAFETY: as above; SA_SIGINFO because the handler needs the faulting address.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_sigbus as extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void)
            as libc::sighandler_t;
        act.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaction(libc::SIGBUS, &act, std::ptr::null_mut());
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

/// `write(2)` all of `bytes` to stderr, as far as it goes.
fn say(bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        // SAFETY: a valid buffer of `rest.len()` bytes.
        let n = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
        if n <= 0 {
            return;
        }
        rest = rest.get(n as usize..).unwrap_or_default();
    }
}

/// `0x` and `n` in hex, into `buf`; returns the used part.
fn hex(n: usize, buf: &mut [u8; 18]) -> &[u8] {
    let digits = (usize::BITS - n.leading_zeros()).div_ceil(4).max(1) as usize;
    buf[0] = b'0';
    buf[1] = b'x';
    for i in 0..digits {
        let d = (n >> (4 * (digits - 1 - i))) & 0xf;
        buf[2 + i] = b"0123456789abcdef"[d];
    }
    &buf[..2 + digits]
}

extern "C" fn on_sigbus(_sig: c_int, info: *mut libc::siginfo_t, _ctx: *mut c_void) {
    sigsafe::remove_temp_files();
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let addr = unsafe { info.as_ref().map_or(0, |i| i.si_addr() as usize) };
    let mut name = [0u8; TEXT_MAX];
    say(b"rdbferry: error: ");
    match MAPPED.find(addr, &mut name) {
        Some(c) => {
            say(&name[..c.text_len]);
            say(b": the file changed (shrank?) while it was being read");
        }
        None => say(b"an input file changed (shrank?) while it was being read"),
    }
    say(b" (SIGBUS at ");
    say(hex(addr, &mut [0; 18]));
    say(b")\n");
    // SAFETY: ends the process at once, running nothing else (no destructor, no atexit).
    unsafe { libc::_exit(1) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_digits() {
        let mut b = [0; 18];
        assert_eq!(super::hex(0, &mut b), b"0x0");
        assert_eq!(super::hex(0x7f3a_0000_1f00, &mut b), b"0x7f3a00001f00");
        assert_eq!(super::hex(usize::MAX, &mut b), b"0xffffffffffffffff");
    }
}
