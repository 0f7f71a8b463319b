//! The JSONL reader on arbitrary bytes, iterated to the end. Beyond not panicking: every key
//! line it accepts must encode to a value the RDB decoder validates, and writing a line back
//! with the JSONL writer and reading that must give the same line (the reader mirrors the
//! writer).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rdbferry::input::jsonl::{JsonlReader, Line};
use rdbferry::sink::Sink;
use rdbferry::sink::jsonl::JsonlSink;

fn write_back(line: &Line) -> Vec<u8> {
    let mut s = JsonlSink::new(Vec::new(), "fuzz");
    match line {
        Line::Key(k) => s.key(&k.record()),
        Line::Function(code) => s.function(code),
        Line::Command { db, args } => {
            let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
            s.command(*db, &refs)
        }
    }
    .expect("the writer takes what the reader made");
    s.into_inner()
}

fuzz_target!(|data: &[u8]| {
    for line in JsonlReader::new(data, "fuzz") {
        let Ok(mut line) = line else { break };
        if let Line::Key(k) = &line {
            k.record().validate().expect("an accepted key line decodes");
        }
        let again = write_back(&line);
        let mut back = JsonlReader::new(&again[..], "again");
        let mut reread = match back.next() {
            Some(Ok(l)) => l,
            other => panic!(
                "written line not read back: {other:?}\n{}",
                String::from_utf8_lossy(&again)
            ),
        };
        if let (Line::Key(a), Line::Key(b)) = (&mut line, &mut reread) {
            b.offset = a.offset;
        }
        assert_eq!(line, reread, "{}", String::from_utf8_lossy(&again));
        assert!(back.next().is_none());
    }
});
