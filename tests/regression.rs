//! Regression tests for defects reported in issues, each named after its issue
//! (`issueN_...`). Each one failed on the code before its fix.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{RedisServer, Running};

/// Run rdbferry with `args`, killed (and the test failed) after `limit`: a hang is a failure,
/// not a stuck test run. Returns stdout, stderr and the exit code.
fn rdbferry_within(args: &[&str], limit: Duration) -> (String, String, Option<i32>) {
    let child = Command::new(env!("CARGO_BIN_EXE_rdbferry"))
        .args(args)
        .env_remove("RDBFERRY_TO_PASSWORD")
        .env_remove("RDBFERRY_FROM_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut run = Running(Some(child));
    let start = Instant::now();
    while run.child().try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < limit,
            "rdbferry {args:?} still running after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = run.finish();
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        o.status.code(),
    )
}

/// Issue 8, 1: a hash of 257 fields (2^8 + 1 members) filled the full sync's repeated-member
/// table, whose probe loop then never ended: the import spun forever.
#[test]
fn issue8_hash_of_257_fields_imports_by_full_sync() {
    let src = RedisServer::start();
    src.cli(&[
        "EVAL",
        "for i=1,257 do redis.call('HSET','h','f'..i,i) end return 1",
        "0",
    ]);
    let dump = src.save_and_copy_dump();
    let target = RedisServer::start();
    let (out, err, code) = rdbferry_within(
        &[
            "import",
            dump.to_str().unwrap(),
            "--to",
            &target.url(),
            "--via",
            "full-sync",
            "--json",
            "-q",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("\"via\":\"full-sync\""), "{out}");
    assert_eq!(target.digest(), src.digest());
}

/// A RESP-encoded AOF of `commands`, written under the cargo target dir.
fn aof_file(name: &str, commands: &[&[&str]]) -> std::path::PathBuf {
    let mut out = Vec::new();
    for c in commands {
        out.extend_from_slice(format!("*{}\r\n", c.len()).as_bytes());
        for a in *c {
            out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
    }
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("regression");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{}-{name}", std::process::id()));
    std::fs::write(&p, out).unwrap();
    p
}

/// Issue 9: `--key 'b*'` judged `MSET a 1 b 2` by `a` alone (the whole command was dropped);
/// a multi-key command is now split where it allows it, renamed key by key, and one that
/// cannot be split is reported.
#[test]
fn issue9_aof_commands_are_filtered_and_renamed_key_by_key() {
    let aof = aof_file(
        "multi-key.aof",
        &[
            &["SELECT", "0"],
            &["MSET", "a", "1", "b", "2", "c", "3"],
            &["DEL", "a", "c"],
            &["RPUSH", "blist", "x", "y"],
            &["DEL", "a", "bgone"],
        ],
    );
    let t = RedisServer::start();
    t.cli(&["SET", "Bgone", "still here until DEL"]);
    let (out, err, code) = rdbferry_within(
        &[
            "import",
            aof.to_str().unwrap(),
            "--to",
            &t.url(),
            "--key",
            "b*",
            "--rename",
            "b=B",
            "--on-conflict",
            "replace",
            "--json",
            "-q",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(0), "{err}{out}");
    assert_eq!(t.cli(&["GET", "B"]), "2");
    assert_eq!(t.cli(&["LRANGE", "Blist", "0", "-1"]), "x\ny");
    assert_eq!(t.cli(&["EXISTS", "a", "b", "c", "Bgone"]), "0");
    assert_eq!(t.cli(&["DBSIZE"]), "2");

    // RENAME from a kept key to a dropped one cannot be split: named, exit 1.
    let aof = aof_file(
        "rename.aof",
        &[&["SET", "b1", "v"], &["RENAME", "b1", "a1"]],
    );
    let t = RedisServer::start();
    let (out, err, code) = rdbferry_within(
        &[
            "import",
            aof.to_str().unwrap(),
            "--to",
            &t.url(),
            "--key",
            "b*",
            "-q",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(1), "{err}{out}");
    assert!(
        err.contains("RENAME") && err.contains("cannot be split"),
        "{err}"
    );
}
