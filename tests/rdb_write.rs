//! `convert --format rdb` (issue 12), against real servers: every dump in `testdata/`,
//! written for each version a test server exists for (6.0 and 6.2: RDB 9; 7.0: RDB 10), loads
//! in that server at start-up and holds what the original holds when the system 7.0 loads it
//! (`DEBUG DIGEST`, and key by key expiry times and stream groups: `support::Snapshot`).
//! What RDB 9 cannot hold (7.0's functions and stream lag metadata) is an error without
//! `--lossy` and a report with it. `rdb -> jsonl -> rdb` holds the same data.

mod support;

use std::path::{Path, PathBuf};

use rdbferry::rdb::{RdbReader, Record};
use support::ferry::{output_text, path_str, rdbferry};
use support::{RedisServer, Snapshot, TempDir, require_old_server, testdata};

const DUMPS: [&str; 3] = [
    "redis-6.0/all-types.rdb",
    "redis-6.2/all-types.rdb",
    "redis-7.0/all-types.rdb",
];

/// A server (`binary`, None: the system 7.0) that loaded `file` at start-up.
fn loading(binary: Option<&Path>, file: &Path) -> RedisServer {
    let (dir, name) = (file.parent().unwrap(), file.file_name().unwrap());
    let args = [
        "--dir",
        path_str(dir),
        "--dbfilename",
        name.to_str().unwrap(),
    ];
    let s = RedisServer::start_with(binary.unwrap_or(Path::new("redis-server")), &args);
    assert!(
        !s.log().contains("Short read") && !s.log().contains("Bad file format"),
        "{} did not load {}:\n{}",
        s.version(),
        file.display(),
        s.log()
    );
    s
}

/// `rdbferry convert INPUT --format rdb -o OUT ARGS...`; returns stderr and whether it
/// succeeded.
fn convert(input: &str, out: &Path, args: &[&str]) -> (bool, String) {
    let mut all = vec![
        "convert",
        input,
        "--format",
        "rdb",
        "-q",
        "-o",
        path_str(out),
    ];
    all.extend_from_slice(args);
    let o = rdbferry(&all);
    (o.status.success(), output_text(&o))
}

/// What the system 7.0 holds after loading `dump` (group reads left out: 6.x has none).
fn original(dump: &str) -> Snapshot {
    let tmp = TempDir::new("orig");
    let copy = tmp.path().join("orig.rdb");
    std::fs::copy(testdata(dump), &copy).unwrap();
    let s = loading(None, &copy);
    Snapshot::of(&s).without_group_reads()
}

fn servers() -> Vec<(&'static str, Option<PathBuf>, &'static str)> {
    let mut v = Vec::new();
    for (name, rdb) in [("6.0", "9"), ("6.2", "9")] {
        match require_old_server(name) {
            Some(b) => v.push((name, Some(b), rdb)),
            None => return Vec::new(),
        }
    }
    v.push(("7.0", None, "10"));
    v
}

#[test]
fn every_dump_loads_in_every_server_with_the_same_data() {
    let servers = servers();
    let mut loaded = 0;
    for dump in DUMPS {
        let want = original(dump);
        for (name, binary, rdb) in &servers {
            let tmp = TempDir::new("conv");
            let out = tmp.path().join("out.rdb");
            let (ok, err) = convert(&testdata(dump), &out, &["--rdb-version", rdb]);
            let lossy = !ok;
            assert_eq!(lossy, dump.starts_with("redis-7.0") && *rdb == "9", "{err}");
            if lossy {
                // 7.0's function and stream lag metadata: RDB 9 has no place for them.
                assert!(err.contains("--lossy leaves it out"), "{err}");
                assert!(!out.exists(), "a refused conversion left {}", out.display());
                let (ok, err) = convert(&testdata(dump), &out, &["--rdb-version", rdb, "--lossy"]);
                assert!(ok, "{dump} -> {rdb} --lossy: {err}");
                assert!(
                    err.contains("left out: function library rdbferrylib"),
                    "{err}"
                );
                assert!(err.contains("left out: key \"stream:s1\""), "{err}");
            }
            let s = loading(binary.as_deref(), &out);
            let got = Snapshot::of(&s).without_group_reads();
            want.assert_same(&got);
            if *name == "7.0" && dump.starts_with("redis-7.0") {
                assert!(s.cli(&["FUNCTION", "LIST"]).contains("rdbferrylib"));
            }
            loaded += 1;
        }
    }
    assert_eq!(loaded, DUMPS.len() * servers.len());
}

#[test]
fn rdb_to_jsonl_to_rdb_holds_the_same_data() {
    for dump in ["redis-6.2/all-types.rdb", "redis-7.0/all-types.rdb"] {
        let tmp = TempDir::new("jsonl");
        let jsonl = tmp.path().join("out.jsonl");
        let o = rdbferry(&[
            "convert",
            &testdata(dump),
            "--format",
            "jsonl",
            "-q",
            "-o",
            path_str(&jsonl),
        ]);
        assert!(o.status.success(), "{}", output_text(&o));
        let back = tmp.path().join("back.rdb");
        let (ok, err) = convert(path_str(&jsonl), &back, &["--rdb-version", "10"]);
        assert!(ok, "{err}");
        let s = loading(None, &back);
        original(dump).assert_same(&Snapshot::of(&s).without_group_reads());
    }
}

/// The same version, no filter: every value is the input's bytes, and the file's CRC-64 holds.
#[test]
fn same_version_copies_values_byte_for_byte() {
    let tmp = TempDir::new("copy");
    let out = tmp.path().join("out.rdb");
    let input = testdata("redis-7.0/all-types.rdb");
    let (ok, err) = convert(&input, &out, &[]);
    assert!(ok, "{err}");
    let a = std::fs::read(&input).unwrap();
    let b = std::fs::read(&out).unwrap();
    type Values = Vec<(u64, Vec<u8>, u8, Vec<u8>, Option<i64>)>;
    let values = |data: &[u8]| -> Values {
        let mut r = RdbReader::new(data, "x").unwrap();
        let v = r
            .by_ref()
            .filter_map(|rec| match rec.unwrap() {
                Record::Key(k) => {
                    Some((k.db, k.key.to_vec(), k.type_id, k.raw.to_vec(), k.expire_ms))
                }
                _ => None,
            })
            .collect();
        assert_eq!(r.checksum_ok(), Some(true));
        v
    };
    assert_eq!(values(&a), values(&b));
    assert_eq!(&b[..9], b"REDIS0010");
}

#[test]
fn bad_versions_and_outputs_are_refused() {
    let tmp = TempDir::new("refuse");
    let out = tmp.path().join("out.rdb");
    let input = testdata("redis-7.0/all-types.rdb");
    for v in ["5", "13"] {
        let (ok, err) = convert(&input, &out, &["--rdb-version", v]);
        assert!(!ok && err.contains("rdbferry writes RDB 6 to 12"), "{err}");
    }
    let copy = tmp.path().join("in.rdb");
    std::fs::copy(&input, &copy).unwrap();
    let (ok, err) = convert(path_str(&copy), &copy, &[]);
    assert!(!ok, "{err}");
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        std::fs::read(&input).unwrap()
    );
    let o = rdbferry(&["convert", &input, "--format", "jsonl", "--lossy"]);
    assert!(!o.status.success());
}

const THIRDS: [(u16, u16); 3] = [(0, 5460), (5461, 10922), (10923, 16383)];

/// A split into three ranges: each file loads in its own server, holds only keys of its
/// slots, and the three together hold db 0 of the original.
#[test]
fn split_into_three_loads_in_three_servers() {
    let tmp = TempDir::new("split");
    let dir = tmp.path().join("out");
    let input = testdata("redis-7.0/all-types.rdb");
    let spec = "0-5460,5461-10922,10923-16383";
    let o = rdbferry(&["split", &input, "--by-slots", spec, "-o", path_str(&dir)]);
    assert!(!o.status.success());
    assert!(output_text(&o).contains("a Cluster node has only db 0"));
    assert!(!dir.join("slots-0-5460.rdb").exists());
    let o = rdbferry(&[
        "split",
        &input,
        "--by-slots",
        spec,
        "--db",
        "0",
        "-o",
        path_str(&dir),
    ]);
    assert!(o.status.success(), "{}", output_text(&o));
    let mut parts = Vec::new();
    for (lo, hi) in THIRDS {
        let s = loading(None, &dir.join(format!("slots-{lo}-{hi}.rdb")));
        let snap = Snapshot::of(&s);
        assert!(snap.len() > 0);
        for (db, key) in snap.keys.keys() {
            let slot = rdbferry::keyslot::key_slot(key);
            assert!(
                *db == 0 && (lo..=hi).contains(&slot),
                "{key:?} in {lo}-{hi}"
            );
        }
        assert!(s.cli(&["FUNCTION", "LIST"]).contains("rdbferrylib"));
        parts.push(snap.without_group_reads());
    }
    let want = original("redis-7.0/all-types.rdb").only_db(0);
    want.assert_same(&Snapshot::union(&parts));
}

/// `--shard I/N` on convert, import and verify: the three shards together are the whole.
#[test]
fn shards_together_equal_the_whole() {
    let input = testdata("redis-7.0/all-types.rdb");
    let want = original("redis-7.0/all-types.rdb").without_digest();
    let tmp = TempDir::new("shard");
    let (mut converted, mut imported) = (Vec::new(), Vec::new());
    for i in 0..3 {
        let shard = format!("{i}/3");
        let out = tmp.path().join(format!("shard{i}.rdb"));
        let (ok, err) = convert(&input, &out, &["--shard", &shard]);
        assert!(ok, "{err}");
        let s = loading(None, &out);
        converted.push(Snapshot::of(&s).without_group_reads());

        let target = RedisServer::start();
        let url = target.url();
        let o = rdbferry(&["import", &input, "--to", &url, "--shard", &shard, "-q"]);
        assert!(
            o.status.success(),
            "import --shard {shard}: {}",
            output_text(&o)
        );
        let o = rdbferry(&["verify", &input, "--to", &url, "--shard", &shard]);
        assert!(
            o.status.success(),
            "verify --shard {shard}: {}",
            output_text(&o)
        );
        let o = rdbferry(&["verify", &input, "--to", &url]);
        assert!(
            !o.status.success(),
            "verify without --shard passed on shard {shard}"
        );
        imported.push(Snapshot::of(&target).without_group_reads());
    }
    want.assert_same(&Snapshot::union(&converted));
    want.assert_same(&Snapshot::union(&imported));
}

/// Every RDB of the shared corpus that rdbferry reads, written for 7.0 (RDB 10) and for 6.2
/// (RDB 9, `--lossy`), loads in that server at start-up with the same digest, and with the
/// original's where 7.0 loads the original. Refused only: a file whose module values no
/// test server has the module for, and (by rdbferry, before any server) a file with a
/// duplicate key, which servers refuse too.
#[test]
fn corpus_dumps_load_after_conversion() {
    let Some(dir) = support::corpus_dir() else {
        return;
    };
    let Some(s62) = require_old_server("6.2") else {
        return;
    };
    let s70 = Path::new("redis-server");
    let files = support::corpus_rdbs(&dir);
    let mut seen = std::collections::HashSet::new();
    let (mut checked, mut failures) = (0, Vec::new());
    let tmp = TempDir::new("corpus");
    for (i, f) in files.iter().enumerate() {
        let data = std::fs::read(f).unwrap();
        if !seen.insert(data.clone()) || !rdbferry(&["check", "-q", path_str(f)]).status.success() {
            continue;
        }
        let name = f.strip_prefix(&dir).unwrap().display().to_string();
        let modules = RdbReader::new(&data, "x").unwrap().any(|r| match r {
            Ok(Record::Key(k)) => k.data_type() == rdbferry::rdb::DataType::Module,
            Ok(Record::ModuleAux { .. }) => true,
            _ => false,
        });
        let (o9, o10) = (
            tmp.path().join(format!("{i}.9.rdb")),
            tmp.path().join(format!("{i}.10.rdb")),
        );
        let (ok, err) = convert(path_str(f), &o10, &["--rdb-version", "10", "--lossy"]);
        if !ok {
            if !err.contains("appears twice") {
                failures.push(format!("{name}: convert: {err}"));
            }
            continue;
        }
        let (ok, err) = convert(path_str(f), &o9, &["--rdb-version", "9", "--lossy"]);
        if !ok {
            failures.push(format!("{name}: convert to 9: {err}"));
            continue;
        }
        let copy = tmp.path().join(format!("{i}.orig.rdb"));
        std::fs::write(&copy, &data).unwrap();
        let d0 = support::try_load(s70, &copy);
        let d10 = support::try_load(s70, &o10);
        let d9 = support::try_load(&s62, &o9);
        match (&d0, &d10, &d9) {
            (_, Err(_), _) | (_, _, Err(_)) if modules => {}
            (_, Err(log), _) => failures.push(format!("{name}: 7.0 refuses RDB 10: {log}")),
            (_, _, Err(log)) => failures.push(format!("{name}: 6.2 refuses RDB 9: {log}")),
            (Ok(a), Ok(b), Ok(c)) if a != b || b != c => {
                failures.push(format!("{name}: digests {a} (original), {b} (10), {c} (9)"));
            }
            (Err(_), Ok(b), Ok(c)) if b != c => {
                failures.push(format!("{name}: digests {b} (10), {c} (9)"));
            }
            _ => checked += 1,
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked > 50, "only {checked} corpus files checked");
}

/// `--merge`: shards written apart merge back into the whole; a key in two inputs is an
/// error unless `--on-conflict` says which one stays.
#[test]
fn merge_of_dumps() {
    let tmp = TempDir::new("merge");
    let input = testdata("redis-7.0/all-types.rdb");
    let mut shards = Vec::new();
    for i in 0..3 {
        let out = tmp.path().join(format!("shard{i}.rdb"));
        let (ok, err) = convert(&input, &out, &["--shard", &format!("{i}/3")]);
        assert!(ok, "{err}");
        shards.push(out.display().to_string());
    }
    let merged = tmp.path().join("merged.rdb");
    let mut args = vec!["convert"];
    args.extend(shards.iter().map(String::as_str));
    args.extend(["--format", "rdb", "--merge", "-q", "-o", path_str(&merged)]);
    let o = rdbferry(&args);
    assert!(o.status.success(), "{}", output_text(&o));
    let s = loading(None, &merged);
    original("redis-7.0/all-types.rdb").assert_same(&Snapshot::of(&s).without_group_reads());
    assert!(s.cli(&["FUNCTION", "LIST"]).contains("rdbferrylib"));

    let (old, new) = (testdata("redis-6.2/all-types.rdb"), input);
    let both = [
        "convert", &old, &new, "--format", "rdb", "--merge", "-q", "-o",
    ];
    let o = rdbferry(&[&both[..], &[path_str(&merged)]].concat());
    assert!(!o.status.success());
    assert!(
        output_text(&o).contains("--on-conflict"),
        "{}",
        output_text(&o)
    );
    for (conflict, wins) in [("replace", &new), ("skip", &old)] {
        let extra = [path_str(&merged), "--on-conflict", conflict];
        let o = rdbferry(&[&both[..], &extra[..]].concat());
        assert!(o.status.success(), "{}", output_text(&o));
        let got = Snapshot::with_values(&loading(None, &merged));
        let load = |p: &str| {
            let copy = tmp.path().join("one.rdb");
            std::fs::copy(p, &copy).unwrap();
            Snapshot::with_values(&loading(None, &copy))
        };
        let (a, b) = (load(&old), load(&new));
        let winner = if wins == &new { &b } else { &a };
        for (k, v) in &got.keys {
            let want = winner
                .keys
                .get(k)
                .or_else(|| a.keys.get(k).or(b.keys.get(k)));
            assert_eq!(want.map(|w| &w.value), Some(&v.value), "{conflict}: {k:?}");
        }
        assert!(got.keys.len() >= a.keys.len().max(b.keys.len()));
    }
}

/// A key twice in one input (a cut Cluster dump can hold one): an error naming the key and
/// both records, and no output, whatever the version written.
#[test]
fn a_key_twice_is_an_error_naming_it() {
    use rdbferry::rdb::encoder::{RdbWriter, value};
    let mut w = RdbWriter::new(10);
    w.select_db(0)
        .key(b"a", None, &value::string(b"1", false))
        .key(b"dup", None, &value::hash_listpack(&[(b"f", b"v")]))
        .key(b"dup", None, &value::string(b"y", false));
    let input = support::ferry::write_rdb("rdb-write-dup.rdb", &w.finish());
    let tmp = TempDir::new("dup");
    let out = tmp.path().join("out.rdb");
    for v in ["9", "10"] {
        let (ok, err) = convert(path_str(&input), &out, &["--rdb-version", v]);
        assert!(!ok, "{err}");
        assert!(err.contains("key \"dup\" (db 0) appears twice"), "{err}");
        assert!(err.contains("records at 0x"), "{err}");
        assert!(!out.exists(), "{}", out.display());
    }
}
