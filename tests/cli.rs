//! The command-line contract: exit codes, error messages that name the file, offset and key,
//! filters, and outputs for encodings only our encoder writes (set listpacks, hash field TTLs,
//! Valkey files).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rdbferry::rdb::encoder::{RdbWriter, value};
use rdbferry::rdb::{RdbReader, Record};

fn rdbferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rdbferry"))
        .args(args)
        .output()
        .unwrap()
}

fn testdata(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(p)
        .display()
        .to_string()
}

fn tmp(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn check_reports_version_keys_and_ttls() {
    let o = rdbferry(&["check", &testdata("redis-7.0/all-types.rdb")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    assert!(s.contains("RDB v10 (redis-ver 7.0.15)"), "{s}");
    assert!(s.contains("57 keys (db0: 50, db1: 4, db5: 3)"), "{s}");
    assert!(s.contains("6 with a TTL"), "{s}");
    assert!(s.contains("MB/s"), "{s}");
    let o = rdbferry(&["check", "--json", &testdata("redis-6.2/all-types.rdb")]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["keys"], 56);
    assert_eq!(v["rdb_version"], "v9");
}

#[test]
fn truncated_file_names_file_and_offset_and_exits_1() {
    let data = std::fs::read(testdata("redis-7.0/all-types.rdb")).unwrap();
    let p = tmp("truncated.rdb", &data[..data.len() / 2]);
    let o = rdbferry(&["check", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("truncated.rdb+0x"), "{e}");
    assert!(e.contains("unexpected end of input"), "{e}");
    assert!(e.contains("(key \""), "names the key being read: {e}");
}

#[test]
fn every_truncation_is_a_clean_error() {
    let data = std::fs::read(testdata("redis-6.2/all-types.rdb")).unwrap();
    let cuts = (0..2000).chain((2000..data.len()).step_by(97));
    for n in cuts {
        let res: Result<Vec<_>, _> = match RdbReader::new(&data[..n], "cut.rdb") {
            Ok(r) => r
                .map(|rec| {
                    rec.and_then(|rec| {
                        if let Record::Key(k) = &rec {
                            k.value().and_then(|v| v.validate()).map_err(|e| {
                                rdbferry::rdb::Error::from_decode("cut.rdb", Some(&k.key), e)
                            })?;
                        }
                        Ok(())
                    })
                })
                .collect(),
            Err(e) => Err(e),
        };
        let err = res.expect_err("a cut file must not pass");
        assert!(err.to_string().contains("cut.rdb+0x"), "{err}");
    }
}

#[test]
fn checksum_mismatch_and_ignore_checksum() {
    let mut data = std::fs::read(testdata("redis-7.0/all-types.rdb")).unwrap();
    let n = data.len();
    data[n - 1] ^= 0xff;
    let p = tmp("badsum.rdb", &data);
    let o = rdbferry(&["check", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("checksum mismatch"), "{}", stderr(&o));
    let o = rdbferry(&["check", "--ignore-checksum", p.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A zero checksum means "disabled".
    data[n - 8..].fill(0);
    let p = tmp("nosum.rdb", &data);
    assert!(rdbferry(&["check", p.to_str().unwrap()]).status.success());
}

#[test]
fn hostile_headers_and_lengths() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("magic.rdb", b"HELLO0009\xff".to_vec(), "not an RDB"),
        (
            "v13.rdb",
            b"REDIS0013\xff".to_vec(),
            "unsupported RDB version",
        ),
        (
            "v0.rdb",
            b"REDIS0000\xff".to_vec(),
            "unsupported RDB version",
        ),
        (
            // a list claiming 2^40 elements
            "huge.rdb",
            b"REDIS0009\xfe\x00\x01\x01k\x81\x00\x00\x01\x00\x00\x00\x00\x00\x01a\xff".to_vec(),
            "huge.rdb+0x",
        ),
        (
            "type.rdb",
            b"REDIS0009\xfe\x00\x1a\x01k\x00\xff".to_vec(),
            "unknown value type 26",
        ),
        (
            // LZF string that decompresses to the wrong size
            "lzf.rdb",
            b"REDIS0009\x00\x01k\xc3\x02\x05\x01ab\xff".to_vec(),
            "bad LZF string",
        ),
    ];
    for (name, bytes, want) in cases {
        let p = tmp(name, &bytes);
        let o = rdbferry(&["check", p.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{name}");
        assert!(stderr(&o).contains(want), "{name}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{name}");
    }
}

fn lines(o: &Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn filters() {
    let f = testdata("redis-7.0/all-types.rdb");
    let n = |args: &[&str]| {
        let mut a = vec!["convert", f.as_str(), "--format", "jsonl", "-q"];
        a.extend_from_slice(args);
        let o = rdbferry(&a);
        assert!(o.status.success(), "{}", stderr(&o));
        lines(&o)
            .into_iter()
            .filter(|v| v.get("key").is_some())
            .count()
    };
    assert_eq!(n(&[]), 57);
    assert_eq!(n(&["--db", "1"]), 4);
    assert_eq!(n(&["--db", "1", "--db", "5"]), 7);
    assert_eq!(n(&["--type", "stream"]), 5);
    assert_eq!(n(&["--key", "stream:*"]), 5);
    assert_eq!(n(&["--key", "stream:*", "--exclude-key", "stream:s1"]), 4);
    assert_eq!(n(&["--key-regex", "^zset:(small|big)$"]), 2);
    let o = rdbferry(&["convert", &f, "--format", "jsonl", "--type", "nope"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn new_encodings_and_skip_expired() {
    let mut w = RdbWriter::new(12);
    w.select_db(0);
    w.key(b"set:lp", None, &value::set_listpack(&[b"a", b"b", b"7"]));
    let items: &[(&[u8], &[u8], u64)] = &[
        (b"f1", b"v1", 0),
        (b"f2", b"v2", 4102444800000),
        (b"f3", b"3", 4102444800500),
    ];
    w.key(b"h:meta", None, &value::hash_metadata(true, items));
    w.key(b"h:lpex", None, &value::hash_listpack_ex(true, items));
    w.key(b"h:meta-pre", None, &value::hash_metadata(false, items));
    w.key(b"h:lpex-pre", None, &value::hash_listpack_ex(false, items));
    w.key(b"gone", Some(1000), &value::string(b"x", false));
    let p = tmp("v12.rdb", &w.finish());
    let o = rdbferry(&["convert", p.to_str().unwrap(), "--format", "jsonl"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = lines(&o);
    assert_eq!(v.len(), 6);
    assert_eq!(v[0]["value"], serde_json::json!(["a", "b", "7"]));
    let want = serde_json::json!([
        ["f1", "v1"],
        ["f2", "v2", 4102444800000u64],
        ["f3", "3", 4102444800500u64]
    ]);
    for line in &v[1..5] {
        assert_eq!(line["value"], want, "{}", line["key"]);
    }
    assert_eq!(v[5]["expire_at_ms"], 1000);
    let o = rdbferry(&[
        "convert",
        p.to_str().unwrap(),
        "--format",
        "jsonl",
        "--skip-expired",
    ]);
    assert_eq!(lines(&o).len(), 5);
    // RESP: HSET then HPEXPIREAT for fields with a TTL.
    let o = rdbferry(&[
        "convert",
        p.to_str().unwrap(),
        "--format",
        "resp",
        "--key",
        "h:meta",
    ]);
    let s = stdout(&o);
    assert!(s.contains("HPEXPIREAT\r\n$6\r\nh:meta\r\n$13\r\n4102444800000\r\n$6\r\nFIELDS\r\n$1\r\n1\r\n$2\r\nf2"), "{s}");
}

#[test]
fn valkey_9_file() {
    let mut w = RdbWriter::valkey(80);
    w.aux("valkey-ver", b"9.0.0");
    w.select_db(0);
    w.key(b"k", None, &value::string(b"v", false));
    let p = tmp("valkey.rdb", &w.finish());
    let o = rdbferry(&["check", p.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("Valkey v80 (redis-ver 9.0.0)"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn several_inputs_convert_in_parallel_to_a_directory() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("multi-out");
    let _ = std::fs::remove_dir_all(&dir);
    let o = rdbferry(&[
        "convert",
        &testdata("redis-7.0/all-types.rdb"),
        &testdata("redis-6.2/all-types.rdb"),
        &testdata("redis-7.0/appendonlydir"),
        "--format",
        "resp",
        "-q",
        "-o",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "all-types.rdb.1.resp",
            "all-types.rdb.resp",
            "appendonlydir.resp"
        ]
    );
    // several inputs without -o is a usage error
    let o = rdbferry(&[
        "convert",
        &testdata("redis-7.0/all-types.rdb"),
        &testdata("redis-6.2/all-types.rdb"),
        "--format",
        "jsonl",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("-o DIR"), "{}", stderr(&o));
}

#[test]
fn inspect_json_and_table() {
    let f = testdata("redis-7.0/all-types.rdb");
    let o = rdbferry(&["inspect", &f, "--json", "--top", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["keys"], 57);
    assert_eq!(v["keys_with_ttl"], 6);
    assert_eq!(v["dbs"]["1"]["keys"], 4);
    assert_eq!(v["top_by_bytes"].as_array().unwrap().len(), 3);
    assert_eq!(v["top_by_elements"][0]["key"], "list:quicklist");
    assert_eq!(v["top_by_elements"][0]["value"], 2000);
    assert_eq!(v["types"]["stream"]["keys"], 5);
    assert!(
        v["prefixes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["prefix"] == "stream:*" && p["keys"] == 5)
    );
    let o = rdbferry(&["inspect", &f]);
    let s = stdout(&o);
    assert!(s.contains("biggest keys by element count"), "{s}");
    assert!(s.contains("key prefixes"), "{s}");
}

#[test]
fn aof_commands_as_jsonl() {
    let o = rdbferry(&[
        "convert",
        &testdata("redis-6.2/appendonly.aof"),
        "--format",
        "jsonl",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = lines(&o);
    let cmds: Vec<&serde_json::Value> = v.iter().filter(|l| l.get("command").is_some()).collect();
    assert!(!cmds.is_empty());
    assert!(cmds.iter().all(|c| c["db"].is_u64()));
    assert!(!cmds.iter().any(|c| {
        c["command"][0]
            .as_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("select"))
    }));
}

#[test]
fn big_lzf_strings_are_streamed_and_exact() {
    // Over the 16 MiB streaming threshold, LZF-compressed as Redis would store them.
    let mut text = String::new();
    while text.len() < 17 << 20 {
        text.push_str("ferry ⛴ line \"quoted\" \\ 0123456789\n");
    }
    let mut binary = text.clone().into_bytes();
    binary[5] = 0xff;
    let mut w = RdbWriter::new(10);
    w.select_db(0);
    w.key(b"big:text", None, &value::string(text.as_bytes(), true));
    w.key(b"big:bin", None, &value::string(&binary, true));
    let file = w.finish();
    assert!(file.len() < 4 << 20, "the test file must be compressed");
    let p = tmp("bigstr.rdb", &file);
    let o = rdbferry(&["convert", p.to_str().unwrap(), "--format", "jsonl"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = lines(&o);
    assert_eq!(v[0]["value"].as_str().unwrap(), text);
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&binary);
    assert_eq!(v[1]["value"]["base64"].as_str().unwrap(), b64);
    let o = rdbferry(&["convert", p.to_str().unwrap(), "--format", "resp"]);
    let mut want =
        b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n*3\r\n$3\r\nSET\r\n$8\r\nbig:text\r\n".to_vec();
    want.extend_from_slice(format!("${}\r\n", text.len()).as_bytes());
    want.extend_from_slice(text.as_bytes());
    want.extend_from_slice(b"\r\n");
    assert!(o.stdout.starts_with(&want));
    assert!(rdbferry(&["check", p.to_str().unwrap()]).status.success());
}

#[test]
fn aof_from_stdin_matches_the_file_reader_even_when_cut() {
    let data = std::fs::read(testdata(
        "redis-7.0/appendonlydir/appendonly.aof.2.incr.aof",
    ))
    .unwrap();
    for cut in [data.len(), data.len() - 3, data.len() / 2, 1] {
        let p = tmp("cut.aof", &data[..cut]);
        let from_file = rdbferry(&["convert", p.to_str().unwrap(), "--format", "jsonl"]);
        let from_stdin = Command::new(env!("CARGO_BIN_EXE_rdbferry"))
            .args(["convert", "-", "--format", "jsonl"])
            .stdin(std::fs::File::open(&p).unwrap())
            .output()
            .unwrap();
        assert_eq!(
            from_file.status.code(),
            from_stdin.status.code(),
            "cut {cut}"
        );
        assert_eq!(stdout(&from_file), stdout(&from_stdin), "cut {cut}");
        let c1 = rdbferry(&["check", "--json", p.to_str().unwrap()]);
        let v: serde_json::Value = serde_json::from_slice(&c1.stdout).unwrap();
        if cut < data.len() {
            assert!(v["truncated_at"].is_u64(), "cut {cut}: {v}");
        }
    }
}
