//! The slice RDB reader on arbitrary bytes: every record, every value opened and validated (the
//! fast structural walk and the general element iterators must agree), and every key written
//! through the JSONL and RESP sinks. Beyond that only has to not panic, hang or allocate
//! without bound. The checks are `drivers::rdb_reader`, shared with
//! `tests/fuzz_regressions.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../drivers.rs"]
mod drivers;

fuzz_target!(|data: &[u8]| {
    drivers::rdb_reader(data);
});
