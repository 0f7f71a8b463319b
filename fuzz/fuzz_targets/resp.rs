//! The RESP command and reply parsers on arbitrary bytes, each item after the other.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rdbferry::resp::{parse_command, parse_reply};

fuzz_target!(|data: &[u8]| {
    let mut args = Vec::new();
    let mut rest = data;
    while let Ok(Some(used)) = parse_command(rest, &mut args) {
        assert!(used > 0 && used <= rest.len());
        rest = &rest[used..];
    }
    let mut rest = data;
    while let Ok(Some((_, used))) = parse_reply(rest) {
        assert!(used > 0 && used <= rest.len());
        rest = &rest[used..];
    }
});
