//! The process's signal handlers, installed once at start-up (the front end owns the
//! signals; the library only keeps, in [`rdbferry::sigsafe`], what a handler needs to read).
//!
//! - SIGINT, SIGTERM, SIGHUP ([`cancel_token`]): the first sets the run's cancel token, which
//!   every long loop of the library checks: the run stops within a second, puts back what it
//!   changed on a server, removes its temporary files and exits 130. A process that does not
//!   stop by itself (blocked reading stdin, say) is ended one second after the signal, once no
//!   step holds a server changed ([`Cancel::hold`]): its temporary files removed, exit 130. A
//!   second signal ends it at once (`rdbferry recover` then puts a server back).
//! - SIGBUS: an input file shrank while it was memory-mapped and read (see
//!   `rdbferry::input::Mapped`). The handler removes the temporary files, says which file
//!   changed (the mapped inputs are listed in [`sigsafe::MAPPED`]) and exits 1: an error
//!   with a message, never a silent death. The read cannot be resumed, so this is the end.
//!
//! Everything a handler calls is async-signal-safe: atomics, `unlink(2)`, `signal(2)`,
//! `raise(3)`, `write(2)`, `_exit(2)`; no allocation, no lock, no formatting.

use std::os::raw::{c_int, c_void};

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdbferry::cancel::Cancel;
use rdbferry::sigsafe::{self, MAPPED, TEXT_MAX};

/// How long a process may take to stop by itself after the first signal.
const GRACE: Duration = Duration::from_secs(1);

/// The run's cancel token, set by the first SIGINT, SIGTERM or SIGHUP (see the module doc).
/// The handlers (`ctrlc`, which runs them on a thread of its own, not in signal context) are
/// installed on the first call.
pub fn cancel_token() -> Cancel {
    static TOKEN: OnceLock<Cancel> = OnceLock::new();
    TOKEN
        .get_or_init(|| {
            let token = Cancel::new();
            let t = token.clone();
            let _ = ctrlc::set_handler(move || {
                if t.is_cancelled() {
                    end(130);
                }
                eprintln!(
                    "rdbferry: interrupted: stopping, and putting back what this run changed \
                     on a server (again to quit at once)"
                );
                t.cancel();
                let t = t.clone();
                std::thread::spawn(move || {
                    let since = Instant::now();
                    loop {
                        std::thread::sleep(Duration::from_millis(20));
                        if t.holds() == 0 && since.elapsed() >= GRACE {
                            end(130);
                        }
                    }
                });
            });
            token
        })
        .clone()
}

/// Remove the temporary files and exit with `code`.
fn end(code: i32) -> ! {
    sigsafe::remove_temp_files();
    std::process::exit(code)
}

/// Install the SIGBUS handler, and the SIGINT/SIGTERM/SIGHUP handling ([`cancel_token`]).
/// Failure leaves the default action (the signal still stops the process; only the clean-up
/// is lost), so it is not an error.
pub fn install() {
    cancel_token();
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
