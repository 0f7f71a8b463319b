//! The AOF command reader on arbitrary bytes, iterated to the end.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rdbferry::aof::AofReader;

fuzz_target!(|data: &[u8]| {
    let mut reader = AofReader::new(data, 0, 0, "fuzz");
    for cmd in reader.by_ref() {
        if cmd.is_err() {
            break;
        }
    }
    let _ = reader.truncated_at();
});
