//! The commands a replica sends to rdbferry's full-sync listener (`repl::master`), read one
//! after the other from arbitrary bytes: no panic, no allocation beyond the bounds. The checks
//! are `drivers::replica_handshake`, shared with `tests/fuzz_regressions.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../drivers.rs"]
mod drivers;

fuzz_target!(|data: &[u8]| {
    drivers::replica_handshake(data);
});
