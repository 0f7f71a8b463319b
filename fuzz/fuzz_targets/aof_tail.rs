//! The AOF tail `follow` reads (`input::tail`), over arbitrary bytes as a file that stopped
//! growing: no panic, no hang, positions only forward and within the file. The checks are
//! `drivers::aof_tail`, shared with `tests/fuzz_regressions.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../drivers.rs"]
mod drivers;

fuzz_target!(|data: &[u8]| {
    drivers::aof_tail(data);
});
