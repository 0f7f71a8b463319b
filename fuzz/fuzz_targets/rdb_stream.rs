//! The streaming RDB reader against the slice reader. The first byte's low 7 bits set the size
//! of the chunks the stream hands out (1 to 128 bytes), its high bit makes every record above
//! 32 bytes go through the reader's temporary file (`rdb::spill`); the rest is the RDB. Both readers must agree
//! on how many records decode before the first error, and neither may panic.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use rdbferry::rdb::{RdbReader, StreamReader};

/// A reader that returns at most `chunk` bytes per call.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.chunk.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rdb)) = data.split_first() else {
        return;
    };
    let chunk = (first & 0x7f) as usize + 1;

    let mut slice_ok = 0usize;
    let mut slice_err = false;
    match RdbReader::new(rdb, "fuzz") {
        Ok(reader) => {
            for rec in reader {
                match rec {
                    Ok(_) => slice_ok += 1,
                    Err(_) => {
                        slice_err = true;
                        break;
                    }
                }
            }
        }
        Err(_) => slice_err = true,
    }

    let mut stream = StreamReader::new(Chunked { data: rdb, chunk }, "fuzz");
    if first & 0x80 != 0 {
        stream = stream.spill_at(32);
    }
    let mut stream_ok = 0usize;
    let mut stream_err = false;
    loop {
        match stream.next_record() {
            Ok(Some(_)) => stream_ok += 1,
            Ok(None) => break,
            Err(_) => {
                stream_err = true;
                break;
            }
        }
    }
    assert_eq!(
        (slice_ok, slice_err),
        (stream_ok, stream_err),
        "slice and stream readers disagree (ok records, stopped on error)"
    );
});
