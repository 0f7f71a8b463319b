//! Regression tests for defects reported in issues, each named after its issue
//! (`issueN_...`). Each one failed on the code before its fix.

mod support;

use std::time::Duration;

use support::ferry::Ferry;
use support::{RedisServer, assert_same_data};

/// Run rdbferry with `args`, killed (and the test failed) after `limit`: a hang is a failure,
/// not a stuck test run. Returns stdout, stderr and the exit code.
fn rdbferry_within(args: &[&str], limit: Duration) -> (String, String, Option<i32>) {
    let o = Ferry::spawn(args).finish_within(limit);
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

/// Issue 9: a function library already on the target with the same code is not a conflict
/// (it was refused as one under the default --on-conflict fail); another library of the
/// same name still is.
#[test]
fn issue9_the_same_function_library_is_no_conflict() {
    let dump = support::testdata("redis-7.0/all-types.rdb");
    let (jsonl, err, code) = rdbferry_within(
        &["convert", &dump, "--format", "jsonl"],
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(0), "{err}");
    let libs: Vec<String> = jsonl
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["function"].as_str().map(String::from))
        .collect();
    assert!(!libs.is_empty(), "the dump has function libraries");
    let t = RedisServer::start();
    for code in &libs {
        t.cli(&["FUNCTION", "LOAD", code]);
    }
    let args = ["import", dump.as_str(), "--to", &t.url(), "--json", "-q"];
    let (out, err, code) = rdbferry_within(&args, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{err}{out}");
    assert!(out.contains("\"via\":\"commands\""), "{out}");
    assert!(out.contains("\"errors\":0"), "{out}");

    // A different library under the same name is a conflict, named.
    let t = RedisServer::start();
    let first = &libs[0];
    let name = first
        .lines()
        .next()
        .and_then(|l| l.split("name=").nth(1))
        .map(|n| n.split_whitespace().next().unwrap_or(n).to_string())
        .unwrap();
    let other = format!(
        "#!lua name={name}\nredis.register_function('rdbferry_other_{name}', function() return 1 end)"
    );
    t.cli(&["FUNCTION", "LOAD", &other]);
    let url = t.url();
    let (_, err, code) = rdbferry_within(
        &["import", dump.as_str(), "--to", &url, "-q"],
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("already exists") && err.contains(&name),
        "{err}"
    );
}
