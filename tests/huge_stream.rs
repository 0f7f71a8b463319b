//! A value of hundreds of MB read from a stream (standard input here; a replication socket in
//! `sync`, through the same reader) costs page cache, not the process's heap: the stream
//! reader holds a record larger than its heap buffer in an unlinked temporary file (issue 11:
//! "huge values are streamed in bounded memory"). Resident anonymous memory is sampled while
//! each command runs.

mod support;

use std::fs::File;
use std::process::Command;
use std::time::Duration;

use support::RedisServer;
use support::fake::watch_stdin;

/// The big value's size: far above the stream reader's heap buffer (16 MB).
const BIG: usize = 200 << 20;

/// Anonymous memory allowed to a run: half the value. A debug build idles at about 15 MB, and
/// import keeps a few 8 MB chunks of a big string in flight (about 70 MB measured); holding
/// the record on the heap took more than the value itself (the buffer doubles past it).
const MAX_ANON_KB: u64 = (BIG as u64 >> 10) / 2;

const GUARD: Duration = Duration::from_secs(240);

fn rdbferry(args: &[&str], stdin: &std::path::Path) -> support::fake::Watched {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rdbferry"));
    cmd.args(args);
    let w = watch_stdin(cmd, File::open(stdin).unwrap().into(), GUARD);
    assert_eq!(w.code, Some(0), "{args:?}: {}", w.stderr);
    w
}

#[test]
fn a_huge_string_from_standard_input_in_bounded_memory() {
    let source = RedisServer::start();
    source.cli(&["CONFIG", "SET", "rdbcompression", "no"]);
    source.cli(&["SETRANGE", "big", &(BIG - 1).to_string(), "x"]);
    source.cli(&["SET", "after", "small"]);
    source.cli(&["RPUSH", "list", "a", "b", "c"]);
    let dump = source.save_and_copy_dump();
    let size = std::fs::metadata(&dump).unwrap().len();
    assert!(size > BIG as u64, "the dump holds the value uncompressed");

    let w = rdbferry(&["check", "-"], &dump);
    assert!(
        w.peak_anon_kb < MAX_ANON_KB,
        "check -: {} kB of anonymous memory for a {} MB value",
        w.peak_anon_kb,
        BIG >> 20
    );

    let target = RedisServer::start();
    let w = rdbferry(
        &[
            "import",
            "-",
            "--to",
            &target.url(),
            "--via",
            "commands",
            "-q",
        ],
        &dump,
    );
    assert!(
        w.peak_anon_kb < MAX_ANON_KB,
        "import -: {} kB of anonymous memory for a {} MB value",
        w.peak_anon_kb,
        BIG >> 20
    );
    assert_eq!(target.cli(&["STRLEN", "big"]), BIG.to_string());
    assert_eq!(target.digest(), source.digest());
    let _ = std::fs::remove_file(&dump);
}
