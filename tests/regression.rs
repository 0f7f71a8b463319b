//! Regression tests for defects reported in issues, each named after its issue
//! (`issueN_...`). Each one failed on the code before its fix.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::{RedisServer, Running, assert_same_data};

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
    let o = Running(Some(child)).finish_within(limit, &format!("rdbferry {args:?}"));
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
    assert_same_data(&target, &src);
}
