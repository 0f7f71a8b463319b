//! Inputs found by the fuzz targets in `fuzz/` (after `cargo fuzz tmin`), plus hand-made
//! tricky inputs derived from the seeds: each must end in a clean `Ok` or `Err`, never a panic,
//! a hang or an unbounded allocation. Tests are named after what they guard against.
//!
//! The `rdb_reader`, `jsonl_reader`, `replica_handshake`, `loadable` and `aof_tail` targets' checks are
//! `fuzz/drivers.rs`, included here as they are there; the others' drivers below do what
//! their targets do. So a failure here reproduces one there. Crash files that `cargo fuzz`
//! left in `fuzz/artifacts/<target>/` (not committed) are replayed too, when present.

use std::io::Read;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rdbferry::aof::{AofReader, Manifest};
use rdbferry::rdb::encoder::{RdbWriter, value};
use rdbferry::rdb::{StreamReader, intset, listpack, ziplist, zipmap};
use rdbferry::resp::{parse_command, parse_reply};

#[path = "../fuzz/drivers.rs"]
mod drivers;

/// What a reader made of an input: records decoded, and whether it stopped on an error.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    ok: usize,
    err: bool,
}

/// The `rdb_reader` fuzz target's checks; its outcome.
fn drain_rdb(data: &[u8]) -> Outcome {
    let run = drivers::rdb_reader(data);
    Outcome {
        ok: run.records,
        err: run.err,
    }
}

/// Run `f` on another thread and fail if it has not ended after `limit`: a hang guard (a
/// generous bound, not a timing), for inputs that once took super-linear time.
fn ends_within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("still running after {limit:?}: a hang"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the driver panicked"),
    }
}

/// The files `cargo fuzz` left for `target` (crashes, timeouts, OOMs), if any.
fn artifacts(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/artifacts")
        .join(target);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.path().is_file())
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect()
}

fn testdata(p: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(p);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A reader that hands out at most `chunk` bytes per call.
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

/// The streaming half of the `rdb_stream` fuzz target; records above `spill_at` bytes go
/// through the reader's temporary file.
fn drain_stream(data: &[u8], chunk: usize, spill_at: usize) -> Outcome {
    let mut r = StreamReader::new(Chunked { data, chunk }, "fuzz").spill_at(spill_at);
    let mut ok = 0;
    loop {
        match r.next_record() {
            Ok(Some(_)) => ok += 1,
            Ok(None) => return Outcome { ok, err: false },
            Err(_) => return Outcome { ok, err: true },
        }
    }
}

/// Both RDB readers on `data`: no panic, and the same outcome from the slice and the stream.
fn check_rdb(data: &[u8]) -> Outcome {
    let slice = drain_rdb(data);
    for (chunk, spill_at) in [(1, 1 << 24), (7, 1 << 24), (4096, 1 << 24), (7, 32)] {
        assert_eq!(
            drain_stream(data, chunk, spill_at),
            slice,
            "stream reader (chunks of {chunk}, spilled past {spill_at}) disagrees with the \
             slice reader on {data:02x?}"
        );
    }
    slice
}

/// A small RDB with one key of most encodings, made by our encoder.
fn small_rdb() -> Vec<u8> {
    let mut w = RdbWriter::new(12);
    w.aux("redis-ver", b"7.4.0")
        .select_db(0)
        .resize_db(8, 1)
        .key(
            b"s",
            Some(1_700_000_000_000),
            &value::string(b"hello", false),
        )
        .key(b"n", None, &value::string(b"12345", false))
        .key(b"z", None, &value::string(&[b'a'; 100], true))
        .key(b"l", None, &value::plain_list(1, &[b"a", b"bb"]))
        .key(b"h", None, &value::hash(&[(b"f", b"v")]))
        .key(b"zs", None, &value::zset(true, &[(b"m", 1.5)]))
        .key(b"zl", None, &value::list_ziplist(&[b"x", b"7"]))
        .key(b"is", None, &value::set_intset(&[1, 70000]))
        .key(b"hl", None, &value::hash_listpack(&[(b"f", b"v")]))
        .key(b"zm", None, &value::hash_zipmap(&[(b"f", b"v")]))
        .key(
            b"hx",
            None,
            &value::hash_listpack_ex(true, &[(b"f", b"v", 1_700_000_000_000)]),
        );
    w.finish()
}

#[test]
fn small_rdb_reads_whole() {
    let rdb = small_rdb();
    assert_eq!(check_rdb(&rdb), Outcome { ok: 15, err: false });
    // Every value is sound, by both walks.
    assert_eq!(drivers::rdb_reader(&rdb).invalid, 0);
    for dump in [
        "redis-7.0/all-types.rdb",
        "redis-6.2/all-types.rdb",
        "redis-6.0/all-types.rdb",
    ] {
        let run = drivers::rdb_reader(&testdata(dump));
        assert!(!run.err && run.records > 50, "{dump}: {run:?}");
        assert_eq!(run.invalid, 0, "{dump}: {run:?}");
    }
}

/// The `rdb_reencode` target's checks on every encoding we have: each key re-encoded for
/// every version decodes to the same items.
#[test]
fn reencode_keeps_every_item() {
    let mut checked = drivers::rdb_reencode(&small_rdb());
    assert!(checked > 10, "{checked}");
    for dump in [
        "redis-7.0/all-types.rdb",
        "redis-6.2/all-types.rdb",
        "redis-6.0/all-types.rdb",
    ] {
        checked += drivers::rdb_reencode(&testdata(dump));
    }
    assert!(checked > 80, "{checked}");
    for a in artifacts("rdb_reencode") {
        drivers::rdb_reencode(&a);
    }
}

#[test]
fn rdb_reader_artifacts_replay() {
    for a in artifacts("rdb_reader") {
        check_rdb(&a);
    }
}

#[test]
fn rdb_truncated_at_every_byte_is_a_clean_error() {
    let rdb = small_rdb();
    for n in 0..rdb.len() {
        let out = check_rdb(&rdb[..n]);
        assert!(out.err, "prefix of {n} bytes read as complete: {out:?}");
    }
}

#[test]
fn rdb_with_each_byte_flipped_does_not_panic() {
    let rdb = small_rdb();
    for i in 0..rdb.len() {
        for x in [0x01, 0x80, 0xff] {
            let mut d = rdb.clone();
            d[i] ^= x;
            check_rdb(&d);
        }
    }
}

#[test]
fn rdb_length_of_2_pow_40_is_an_error_not_an_allocation() {
    let huge = [0x81, 0, 0, 1, 0, 0, 0, 0, 0];
    // Every place a length can go: string key, string value, element counts, blob lengths.
    for t in [
        0u8, 1, 2, 3, 4, 5, 10, 11, 14, 15, 16, 18, 19, 21, 22, 24, 25,
    ] {
        let mut key_len = b"REDIS0012".to_vec();
        key_len.push(t);
        key_len.extend_from_slice(&huge);
        key_len.extend_from_slice(b"abc");
        assert!(check_rdb(&key_len).err, "type {t}, huge key length");

        let mut val_len = b"REDIS0012".to_vec();
        val_len.extend_from_slice(&[t, 1, b'k']);
        if t == 24 || t == 25 {
            val_len.extend_from_slice(&[0; 8]);
        }
        val_len.extend_from_slice(&huge);
        val_len.extend_from_slice(b"abc");
        assert!(check_rdb(&val_len).err, "type {t}, huge value length");
    }
}

#[test]
fn rdb_lzf_with_huge_declared_size_is_refused() {
    for declared in [
        &[0x81, 0, 0, 1, 0, 0, 0, 0, 0][..],
        &[0x80, 0x7f, 0xff, 0xff, 0xff],
        &[0x7f, 0xff],
    ] {
        // A string value: LZF of 2 compressed bytes claiming `declared` bytes.
        let mut d = b"REDIS0012\x00\x01k\xc3\x02".to_vec();
        d.extend_from_slice(declared);
        d.extend_from_slice(b"\x00a");
        assert!(check_rdb(&d).err, "declared {declared:02x?}");
        // The same as a ziplist blob, which is decompressed when the value is opened.
        d[9] = 10;
        assert!(check_rdb(&d).err, "declared {declared:02x?} (ziplist)");
    }
}

#[test]
fn rdb_huge_counts_in_streams_and_modules_are_errors() {
    // Stream: node count 2^40.
    let mut d = b"REDIS0012\x15\x01k".to_vec();
    d.extend_from_slice(&[0x81, 0, 0, 1, 0, 0, 0, 0, 0]);
    assert!(check_rdb(&d).err);
    // Module value: id, then a string sub-opcode of 2^40 bytes.
    let mut d = b"REDIS0012\x07\x01k\x01\x05".to_vec();
    d.extend_from_slice(&[0x81, 0, 0, 1, 0, 0, 0, 0, 0]);
    assert!(check_rdb(&d).err);
}

#[test]
fn aof_truncated_at_every_byte_does_not_panic() {
    let aof = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/redis-6.2/appendonly.aof"
    ))
    .unwrap();
    for n in 0..=aof.len() {
        for cmd in AofReader::new(&aof[..n], 0, 0, "fuzz") {
            if cmd.is_err() {
                break;
            }
        }
        let mut args = Vec::new();
        let mut rest = &aof[..n];
        while let Ok(Some(used)) = parse_command(rest, &mut args) {
            rest = &rest[used..];
        }
        let mut rest = &aof[..n];
        while let Ok(Some((_, used))) = parse_reply(rest) {
            rest = &rest[used..];
        }
    }
}

#[test]
fn resp_huge_lengths_and_deep_nesting_are_errors() {
    let mut args = Vec::new();
    assert!(parse_command(b"*99999999999999999999\r\n", &mut args).is_err());
    assert!(!matches!(
        parse_command(b"*1\r\n$1099511627776\r\nabc", &mut args),
        Ok(Some(_))
    ));
    assert!(parse_reply(&b"*1\r\n".repeat(100_000)).is_err());
    assert!(!matches!(
        parse_reply(b"$1099511627776\r\nabc"),
        Ok(Some(_))
    ));
}

#[test]
fn manifest_truncated_at_every_byte_does_not_panic() {
    let m = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/redis-7.0/appendonlydir/appendonly.aof.manifest"
    ))
    .unwrap();
    for n in 0..=m.len() {
        let _ = Manifest::parse(&m[..n], "fuzz");
    }
}

#[test]
fn blobs_with_lying_headers_are_errors() {
    // Listpack and ziplist claiming 2^32-1 bytes or entries; intset of 2^32-1 members.
    let lp = [
        0xff, 0xff, 0xff, 0xff, 0xfe, 0xff, 0xf0, 0xff, 0xff, 0xff, 0xff, 0xff,
    ];
    assert!(listpack::ListpackIter::new(&lp, 0).is_err());
    let zl = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0xfe, 0xff, 0xff];
    assert!(ziplist::ZiplistIter::new(&zl, 0).is_err());
    let is = [8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8];
    assert!(intset::IntsetIter::new(&is, 0).is_err());
    // A zipmap value with a 4-byte length of 2^32-1.
    let zm = [1, 1, b'f', 0xfe, 0xff, 0xff, 0xff, 0xff, 0, b'v', 0xff];
    assert!(zipmap::ZipmapIter::new(&zm, 0).unwrap().any(|e| e.is_err()));
    // A listpack string entry whose 32-bit length runs past the end.
    let mut lp = vec![0, 0, 0, 0, 1, 0, 0xf0, 0xff, 0xff, 0xff, 0x0f, b'a', 0xff];
    let n = lp.len() as u32;
    lp[..4].copy_from_slice(&n.to_le_bytes());
    assert!(
        listpack::ListpackIter::new(&lp, 0)
            .unwrap()
            .any(|e| e.is_err())
    );
}

/// `rdb_stream` timeout: the stream reader decoded a record again after every `read`, so a big
/// record handed out in small chunks cost time quadratic in its size (a 32 KB list read one
/// byte per call took over 10 s under the fuzzer).
#[test]
fn stream_reader_small_chunks_stay_linear() {
    // One list of 10 000 strings of 20 bytes (~210 KB), fed one byte per read. (Elements of
    // one byte would not do: the element count is checked against the bytes buffered, so
    // every attempt would stop at once until nearly the whole record is there.)
    let items: Vec<&[u8]> = vec![b"abcdefghijklmnopqrst"; 10_000];
    let mut w = RdbWriter::new(9);
    w.key(b"l", None, &value::plain_list(1, &items));
    let rdb = w.finish();
    // Linear: milliseconds. Quadratic: 10^10 element decodes, many minutes.
    let out = ends_within(Duration::from_secs(300), move || {
        drain_stream(&rdb, 1, 1 << 24)
    });
    assert_eq!(out, Outcome { ok: 2, err: false });
}

/// `rdb_stream` mismatch: an EOF opcode after key modifiers (`EXPIRETIME_MS`, `IDLE`, `FREQ`)
/// is the end of the file for the slice reader, as for Redis, but the stream reader only
/// recognised an EOF opcode in the record's first byte: it read on past the end and checked
/// the CRC over the wrong bytes.
#[test]
fn stream_reader_eof_after_key_modifiers_ends_the_file() {
    for prefix in [
        &b"\xfc\x00\x00\x00\x00\x00\x00\x00\x00"[..],
        b"\xf8\x05",
        b"\xf9\x07\xf8\x05",
    ] {
        let mut w = RdbWriter::new(9);
        w.key(b"k", None, &value::string(b"v", false)).raw(prefix);
        let rdb = w.finish();
        // Checksum verified: header, key, EOF.
        assert_eq!(
            check_rdb(&rdb),
            Outcome { ok: 2, err: false },
            "{prefix:02x?}"
        );
        // Followed by bytes that are not an RDB record (an AOF tail, say).
        let mut tail = rdb.clone();
        tail.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            check_rdb(&tail),
            Outcome { ok: 2, err: false },
            "{prefix:02x?}"
        );
    }
}

/// `jsonl_reader` on the JSONL of every testdata input, a few lines at a time as
/// `scripts/fuzz.sh` seeds it, whole, and cut at every byte of its first lines.
#[test]
fn jsonl_reader_on_seeds_and_their_prefixes() {
    for input in [
        "redis-7.0/all-types.rdb.jsonl",
        "redis-6.2/all-types.rdb.jsonl",
        "redis-6.0/all-types.rdb.jsonl",
        "redis-7.0/appendonlydir.jsonl",
        "redis-6.2/appendonly.aof.jsonl",
    ] {
        let text = testdata(input);
        let lines = text.split_inclusive(|&b| b == b'\n').count();
        assert_eq!(drivers::jsonl_reader(&text), lines, "{input}");
        for chunk in text
            .split_inclusive(|&b| b == b'\n')
            .collect::<Vec<_>>()
            .chunks(3)
        {
            drivers::jsonl_reader(&chunk.concat());
        }
        let head: Vec<u8> = text.iter().copied().take(4096).collect();
        for n in 0..head.len() {
            drivers::jsonl_reader(&head[..n]);
        }
    }
    for a in artifacts("jsonl_reader") {
        drivers::jsonl_reader(&a);
    }
}

/// What a Redis replica sends the full sync's listener (as `scripts/fuzz.sh` seeds it).
const HANDSHAKE: &[u8] = b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nAUTH\r\n$8\r\npassword\r\n\
    *3\r\n$8\r\nREPLCONF\r\n$14\r\nlistening-port\r\n$4\r\n6380\r\n\
    *5\r\n$8\r\nREPLCONF\r\n$4\r\ncapa\r\n$3\r\neof\r\n$4\r\ncapa\r\n$6\r\npsync2\r\n\
    *3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\n";

#[test]
fn replica_handshake_whole_cut_and_oversized() {
    let cmds = drivers::replica_handshake(HANDSHAKE);
    let names: Vec<&[u8]> = cmds.iter().map(|c| c[0].as_slice()).collect();
    assert_eq!(
        names,
        [&b"PING"[..], b"AUTH", b"REPLCONF", b"REPLCONF", b"PSYNC"]
    );
    assert_eq!(
        drivers::replica_handshake(b"PING\r\nREPLCONF capa eof\r\nSYNC\r\n").len(),
        3
    );
    // Cut anywhere: the whole commands before the cut, nothing more.
    for n in 0..HANDSHAKE.len() {
        assert!(drivers::replica_handshake(&HANDSHAKE[..n]).len() <= 5);
    }
    // Over the bounds: an error, not an allocation.
    for bad in [
        &b"*33\r\n"[..],
        b"*99999999999999999999\r\n",
        b"*1\r\n$4097\r\n",
        b"*1\r\n$1099511627776\r\nabc",
        b"*-1\r\n",
        b"*1\r\n:1\r\n",
    ] {
        assert!(drivers::replica_handshake(bad).is_empty(), "{bad:?}");
    }
    let long_line = vec![b'a'; 1 << 20];
    assert!(drivers::replica_handshake(&long_line).is_empty());
    for a in artifacts("replica_handshake") {
        drivers::replica_handshake(&a);
    }
}

/// `loadable` on the testdata dumps (every key passes), on our small RDB and files with a
/// repeated key or member (found), and on every prefix and byte flip of the small RDB.
#[test]
fn loadable_on_seeds_truncations_and_flips() {
    for dump in [
        "redis-7.0/all-types.rdb",
        "redis-6.2/all-types.rdb",
        "redis-6.0/all-types.rdb",
    ] {
        let run = drivers::loadable(&testdata(dump));
        assert!(run.passed > 50 && run.refused == 0, "{dump}: {run:?}");
        assert_eq!(run.repeated_keys, 0, "{dump}");
    }
    let rdb = small_rdb();
    let run = drivers::loadable(&rdb);
    assert_eq!(run.passed + run.refused, 11, "{run:?}");
    // An intset {1, 2} made {1, 1} (the encoder sorts and dedups).
    let mut ints = value::set_intset(&[1, 2]);
    let n = ints.bytes.len();
    ints.bytes[n - 2] = 1;
    let mut w = RdbWriter::new(9);
    w.select_db(0)
        .key(b"k", None, &value::string(b"1", false))
        .key(b"twice", None, &value::plain_list(2, &[b"a", b"b", b"a"]))
        .key(b"ints", None, &ints)
        .key(
            b"h",
            None,
            &value::hash_ziplist(&[(b"f", b"1"), (b"f", b"2")]),
        )
        .key(b"k", None, &value::string(b"2", false));
    let run = drivers::loadable(&w.finish());
    assert_eq!(run.refused, 3, "{run:?}");
    assert_eq!(run.repeated_keys, 1, "{run:?}");
    for n in 0..rdb.len() {
        drivers::loadable(&rdb[..n]);
    }
    for i in 0..rdb.len() {
        for x in [0x01, 0x80, 0xff] {
            let mut d = rdb.clone();
            d[i] ^= x;
            drivers::loadable(&d);
        }
    }
    for a in artifacts("loadable") {
        drivers::loadable(&a);
    }
}

/// The AOF tail on whole AOFs (a plain one, and a 7.0 incr file with `#TS:` annotations and
/// a preamble'd base), every prefix of them (a command cut anywhere is waited for, never
/// delivered half), each byte flipped, and whatever `cargo fuzz` left.
#[test]
fn aof_tail_on_seeds_prefixes_and_flips() {
    let plain = testdata("redis-6.2/appendonly.aof");
    let whole = drivers::aof_tail(&plain);
    assert!(!whole.err && whole.commands > 10, "{whole:?}");
    let mut seeds = vec![plain];
    for e in std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/redis-7.0/appendonlydir"
    ))
    .unwrap()
    {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "aof" || x == "rdb") {
            seeds.push(std::fs::read(p).unwrap());
        }
    }
    for seed in &seeds {
        let all = drivers::aof_tail(seed).commands;
        let head = &seed[..seed.len().min(1024)];
        for n in 0..=head.len() {
            let run = ends_within(Duration::from_secs(60), {
                let part = head[..n].to_vec();
                move || drivers::aof_tail(&part)
            });
            // A prefix delivers only commands that are whole in it: never more than the file.
            assert!(run.commands <= all, "prefix {n}: {run:?}, whole {all}");
        }
        for i in (0..head.len()).step_by(7) {
            let mut bad = head.to_vec();
            bad[i] ^= 0x5a;
            drivers::aof_tail(&bad);
        }
    }
    for a in artifacts("aof_tail") {
        drivers::aof_tail(&a);
    }
}
