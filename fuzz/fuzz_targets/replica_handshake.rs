//! The commands a replica sends to rdbferry's full-sync listener (`repl::master`), read one
//! after the other from arbitrary bytes: no panic, no allocation beyond the bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rdbferry::repl::master::read_command;

fuzz_target!(|data: &[u8]| {
    let mut r = data;
    while let Ok(args) = read_command(&mut r) {
        assert!(args.len() <= 32);
        assert!(args.iter().all(|a| a.len() <= 4096));
    }
});
