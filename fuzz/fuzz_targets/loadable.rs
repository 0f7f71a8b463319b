//! The full sync's checks (`job::import::loadable`) on arbitrary bytes read as an RDB: for
//! every key record `check_value(k, 12)` and `Seen`. They must end on any input (no panic,
//! hang or unbounded allocation: they run on every key before a loader sees it) and agree
//! with simpler oracles (see `drivers::loadable`, shared with `tests/fuzz_regressions.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../drivers.rs"]
mod drivers;

fuzz_target!(|data: &[u8]| {
    drivers::loadable(data);
});
