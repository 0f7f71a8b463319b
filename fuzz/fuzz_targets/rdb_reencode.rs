//! The writer's re-encoder (`convert --format rdb --rdb-version N`) on what the RDB reader
//! accepts from arbitrary bytes: decode -> encode for each version 6 to 12 -> decode gives
//! the same items, in a type that version loads. The checks are `drivers::rdb_reencode`,
//! shared with `tests/fuzz_regressions.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../drivers.rs"]
mod drivers;

fuzz_target!(|data: &[u8]| {
    drivers::rdb_reencode(data);
});
