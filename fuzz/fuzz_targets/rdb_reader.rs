//! The slice RDB reader on arbitrary bytes: every record, every value opened and validated, and
//! every key written through the JSONL and RESP sinks. Only has to not panic, hang or allocate
//! without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rdbferry::rdb::{RdbReader, Record};
use rdbferry::sink::Sink;
use rdbferry::sink::jsonl::JsonlSink;
use rdbferry::sink::resp::RespSink;

fuzz_target!(|data: &[u8]| {
    let Ok(reader) = RdbReader::new(data, "fuzz") else {
        return;
    };
    let mut jsonl = JsonlSink::new(std::io::sink(), "fuzz");
    let mut resp = RespSink::new(std::io::sink(), "fuzz");
    for rec in reader {
        let Ok(rec) = rec else { break };
        match rec {
            Record::Key(k) => {
                // The fast structural walks and the general element iterators must agree on
                // whether a value is sound and how many items it holds.
                let fast = k.validate();
                let general = k.value().and_then(|v| v.validate_elements());
                assert_eq!(
                    fast.as_ref().ok(),
                    general.as_ref().ok(),
                    "fast {fast:?} vs general {general:?}"
                );
                let _ = jsonl.key(&k);
                let _ = resp.key(&k);
            }
            Record::Function { code } => {
                let _ = jsonl.function(&code);
                let _ = resp.function(&code);
            }
            _ => {}
        }
    }
    let _ = jsonl.finish();
    let _ = resp.finish();
});
