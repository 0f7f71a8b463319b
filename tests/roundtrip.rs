//! End-to-end round trips against real servers: a dump loaded by `redis-server` and the same
//! dump converted by rdbferry to RESP and piped into an empty server must hold the same data:
//! the same `DEBUG DIGEST` (values, types, every db) and, key by key, the same expiry time and
//! stream groups, pending entries and last ids (`support::Snapshot`; the digest sees neither).
//! Also for AOF inputs, against what the writing server listed, and for files made by our encoder in encodings no installed server
//! writes any more (zipmap, ziplist, intset, quicklist v1, RDB v2–v9), which Redis 7.0 still
//! loads.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rdbferry::rdb::encoder::{RdbWriter, value};
use support::{
    RedisServer, Snapshot, TempDir, assert_listing, assert_same_data, require_old_server,
};

fn rdbferry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rdbferry"))
}

fn testdata(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(p)
}

/// Start `binary` (None: the system 7.0) loading a copy of `rdb`.
fn server_loading(binary: Option<&Path>, rdb: &Path, keep: &TempDir) -> RedisServer {
    let dst = keep.path().join("load.rdb");
    std::fs::copy(rdb, &dst).unwrap();
    let dir = keep.path().to_str().unwrap();
    let args = ["--dir", dir, "--dbfilename", "load.rdb"];
    match binary {
        Some(b) => RedisServer::start_with(b, &args),
        None => RedisServer::start_with(Path::new("redis-server"), &args),
    }
}

/// Convert `input` to RESP with rdbferry and pipe it into `server`; returns redis-cli's report.
fn pipe_resp(input: &Path, server: &RedisServer, extra: &[&str]) -> String {
    let tmp = TempDir::new("resp");
    let out = tmp.path().join("out.resp");
    let st = rdbferry()
        .arg("convert")
        .arg(input)
        .args(["--format", "resp", "-q", "-o"])
        .arg(&out)
        .args(extra)
        .status()
        .unwrap();
    assert!(st.success(), "convert {} failed", input.display());
    let o = Command::new("redis-cli")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &server.port().to_string(),
            "--pipe",
        ])
        .stdin(std::fs::File::open(&out).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let report =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "redis-cli --pipe failed: {report}");
    assert!(
        report.contains("errors: 0,"),
        "replies with errors: {report}"
    );
    report
}

fn round_trip_dump(binary: Option<&Path>, rdb: &Path) {
    let keep = TempDir::new("load");
    let loaded = server_loading(binary, rdb, &keep);
    assert_ne!(
        loaded.digest(),
        "0".repeat(40),
        "the server loaded nothing from {}",
        rdb.display()
    );
    let expect = PathBuf::from(format!("{}.expect.json", rdb.display()));
    if expect.is_file() {
        Snapshot::from_listing(&expect).assert_same(&Snapshot::of(&loaded));
    }
    // Into an empty server of the same version, and into 7.0.
    let fresh = match binary {
        Some(b) => RedisServer::start_with(b, &[]),
        None => RedisServer::start(),
    };
    pipe_resp(rdb, &fresh, &[]);
    assert_same_data(&fresh, &loaded);
    if loaded.version().starts_with('7') {
        assert_eq!(
            fresh.cli(&["FUNCTION", "LIST"]),
            loaded.cli(&["FUNCTION", "LIST"]),
            "functions of {}",
            rdb.display()
        );
    }
}

#[test]
fn redis_7_0_dump_round_trips_through_resp() {
    round_trip_dump(None, &testdata("redis-7.0/all-types.rdb"));
}

#[test]
fn redis_6_2_dump_round_trips_through_resp() {
    let Some(b) = require_old_server("6.2") else {
        return;
    };
    round_trip_dump(Some(&b), &testdata("redis-6.2/all-types.rdb"));
}

#[test]
fn redis_6_0_dump_round_trips_through_resp() {
    let Some(b) = require_old_server("6.0") else {
        return;
    };
    round_trip_dump(Some(&b), &testdata("redis-6.0/all-types.rdb"));
}

#[test]
fn redis_6_2_dump_replays_into_7_0() {
    let s = RedisServer::start();
    pipe_resp(&testdata("redis-6.2/all-types.rdb"), &s, &[]);
    assert_listing(&s, "redis-6.2/all-types.rdb");
}

#[test]
fn aof_inputs_replay_to_the_writers_state() {
    for (input, bin) in [
        ("redis-7.0/appendonlydir", None),
        ("redis-6.2/appendonly.aof", Some("6.2")),
    ] {
        let s = match bin {
            Some(v) => match require_old_server(v) {
                Some(b) => RedisServer::start_with(&b, &[]),
                None => continue,
            },
            None => RedisServer::start(),
        };
        pipe_resp(&testdata(input), &s, &[]);
        assert_listing(&s, input);
    }
}

/// A file with every encoding Redis 7.0 can still load but no longer writes.
fn legacy_file(version: u32) -> Vec<u8> {
    let big: Vec<Vec<u8>> = (0..300)
        .map(|i| format!("member-{i}").into_bytes())
        .collect();
    let big_refs: Vec<&[u8]> = big.iter().map(|v| v.as_slice()).collect();
    let ints: Vec<&[u8]> = vec![
        b"0",
        b"12",
        b"13",
        b"-1",
        b"127",
        b"-128",
        b"32767",
        b"-32768",
        b"8388607",
        b"-8388608",
        b"2147483647",
        b"-2147483648",
        b"9223372036854775807",
        b"-9223372036854775808",
        b"007",
        b"x",
    ];
    let mut w = RdbWriter::new(version);
    if version >= 7 {
        w.aux("redis-ver", b"2.6.0-rdbferry-encoder");
    }
    w.select_db(0);
    w.key(b"s:plain", None, &value::string(b"hello", false));
    w.key(b"s:int", None, &value::string(b"-123456", false));
    w.key(
        b"s:lzf",
        None,
        &value::string(&b"abcabcabc".repeat(50), true),
    );
    w.key(b"s:ttl", Some(1893456000123), &value::string(b"v", false));
    w.key(b"l:plain", None, &value::plain_list(1, &big_refs));
    w.key(b"l:ziplist", None, &value::list_ziplist(&ints));
    w.key(b"set:plain", None, &value::plain_list(2, &big_refs));
    w.key(
        b"set:intset",
        None,
        &value::set_intset(&[1, -5, 70000, 1 << 40]),
    );
    w.key(
        b"z:strings",
        None,
        &value::zset(false, &[(b"a", 1.5), (b"b", f64::INFINITY), (b"c", -2.0)]),
    );
    w.key(
        b"z:ziplist",
        None,
        &value::zset_ziplist(&[(b"x", 3.0), (b"y", 0.25), (b"z", -7.0)]),
    );
    w.key(
        b"h:plain",
        None,
        &value::hash(&[(b"f1", b"v1"), (b"f2", b"2")]),
    );
    w.key(
        b"h:zipmap",
        None,
        &value::hash_zipmap(&[(b"name", b"ferry"), (b"n", b"1")]),
    );
    if version >= 4 {
        w.key(
            b"h:ziplist",
            Some(4102444800000),
            &value::hash_ziplist(&[(b"a", b"1"), (b"b", b"two")]),
        );
    }
    if version >= 7 {
        w.key(
            b"l:quicklist",
            None,
            &value::list_quicklist(&[ints.clone(), big_refs[..100].to_vec()], true),
        );
    }
    if version >= 8 {
        w.key(
            b"z:binary",
            None,
            &value::zset(true, &[(b"p", 0.1), (b"q", -1e300)]),
        );
    }
    w.select_db(3);
    w.key(b"db3:key", None, &value::string(b"in db 3", false));
    w.finish()
}

#[test]
fn legacy_encodings_load_in_redis_and_replay_the_same() {
    for version in [2u32, 4, 6, 7, 9] {
        let tmp = TempDir::new("legacy");
        let path = tmp.path().join(format!("legacy-v{version}.rdb"));
        std::fs::write(&path, legacy_file(version)).unwrap();
        // rdbferry accepts it...
        let st = rdbferry()
            .arg("check")
            .arg(&path)
            .arg("-q")
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "check v{version}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        // ...Redis 7.0 loads it...
        let loaded = server_loading(None, &path, &tmp);
        let db0_keys =
            12 + u32::from(version >= 4) + u32::from(version >= 7) + u32::from(version >= 8);
        assert_eq!(
            loaded.cli(&["DBSIZE"]),
            db0_keys.to_string(),
            "RDB v{version}"
        );
        assert_eq!(loaded.cli(&["HGET", "h:zipmap", "name"]), "ferry");
        // ...and our RESP rebuilds exactly what it loaded.
        let fresh = RedisServer::start();
        pipe_resp(&path, &fresh, &[]);
        assert_same_data(&fresh, &loaded);
    }
}

#[test]
fn stdin_gives_the_same_output_as_a_file() {
    for input in ["redis-7.0/all-types.rdb", "redis-6.2/appendonly.aof"] {
        let path = testdata(input);
        let from_file = rdbferry()
            .arg("convert")
            .arg(&path)
            .args(["--format", "jsonl", "-q"])
            .output()
            .unwrap();
        assert!(from_file.status.success());
        let from_stdin = rdbferry()
            .args(["convert", "-", "--format", "jsonl", "-q"])
            .stdin(std::fs::File::open(&path).unwrap())
            .output()
            .unwrap();
        assert!(
            from_stdin.status.success(),
            "{}",
            String::from_utf8_lossy(&from_stdin.stderr)
        );
        assert_eq!(from_file.stdout, from_stdin.stdout, "{input}");
        assert!(!from_file.stdout.is_empty());
    }
}
