//! The multi-part AOF manifest parser on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rdbferry::aof::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data, "fuzz") {
        let _ = m.base();
        let _ = m.replay_files();
        for e in m.entries() {
            let _ = e.name_lossy();
        }
    }
});
