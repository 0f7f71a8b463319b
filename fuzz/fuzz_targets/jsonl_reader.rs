//! The JSONL reader on arbitrary bytes, iterated to the end. Beyond not panicking: every key
//! line it accepts must encode to a value the RDB decoder validates, and writing a line back
//! with the JSONL writer and reading that must give the same line (the reader mirrors the
//! writer). The checks are `drivers::jsonl_reader`, shared with `tests/fuzz_regressions.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../drivers.rs"]
mod drivers;

fuzz_target!(|data: &[u8]| {
    drivers::jsonl_reader(data);
});
