//! `rdbferry import` against real servers the tests start (issue 3, standalone slice):
//! every testdata dump and AOF reaches what the server that wrote it listed (digest, expiry
//! times, stream groups: `support::Snapshot`), through RESTORE and through the rewrite path; a 7.0 dump into Redis 6.2; conflicts; `--db-map` and
//! `--rename`; a value over a lowered `proto-max-bulk-len`; wrong password and unreachable host.
//! JSONL written by `convert` imports back (convert → edit → import), also from stdin.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{
    RedisServer, Snapshot, TempDir, TestCerts, assert_listing, assert_same_data, expect_digest,
    free_port, require_old_server, testdata,
};

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rdbferry"));
    c.arg("import")
        .args(args)
        .env_remove("RDBFERRY_TO_PASSWORD");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Run an import that must fail (exit 1) and return its stderr, checking that `secret` shows
/// in none of its output.
fn fails_without_showing(args: &[&str], env: &[(&str, &str)], secret: &str) -> String {
    let o = run(args, env);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        !out.contains(secret) && !err.contains(secret),
        "{secret} shown: {out}{err}"
    );
    err
}

/// Run an import with `--json -q` and return the summary, asserting the exit code.
fn import(input: &str, server: &RedisServer, extra: &[&str], code: i32) -> serde_json::Value {
    let url = server.url();
    let mut args = vec![input, "--to", &url, "--json", "-q"];
    args.extend_from_slice(extra);
    let o = run(&args, &[]);
    let (out, err) = text(&o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "import {args:?}\nstdout: {out}\nstderr: {err}"
    );
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("no JSON summary ({e}): {out}"))
}

const DUMPS: [&str; 3] = [
    "redis-7.0/all-types.rdb",
    "redis-6.2/all-types.rdb",
    "redis-6.0/all-types.rdb",
];

#[test]
fn every_dump_restores_into_7_0() {
    for dump in DUMPS {
        // (auto into an empty target is a full sync, tested in import_fullsync.rs; the
        // command path's auto is forced here.)
        for mode in ["auto", "restore"] {
            let s = RedisServer::start();
            let r = import(
                &testdata(dump),
                &s,
                &["--mode", mode, "--via", "commands"],
                0,
            );
            assert_eq!(r["via"], "commands");
            eprintln!("{dump} --mode {mode}");
            assert_listing(&s, dump);
            if mode == "restore" {
                assert_eq!(r["rewritten"], 0, "{dump}: {r}");
            }
            assert_eq!(r["errors"], 0);
        }
    }
}

#[test]
fn every_dump_rewrites_into_7_0() {
    for dump in DUMPS {
        let s = RedisServer::start();
        let r = import(&testdata(dump), &s, &["--mode", "rewrite"], 0);
        assert_eq!(r["via"], "commands", "{r}");
        eprintln!("{dump} --mode rewrite");
        assert_listing(&s, dump);
        assert_eq!(r["restored"], 0, "{dump}: {r}");
        // No temporary key is left behind.
        assert_eq!(s.cli(&["KEYS", "*rdbferry-tmp*"]), "");
    }
}

#[test]
fn one_connection_and_small_pipeline_give_the_same_digest() {
    let dump = "redis-7.0/all-types.rdb";
    let s = RedisServer::start();
    // (Into an empty target auto would take the full sync, which has no connections or
    // pipeline to size.)
    let r = import(
        &testdata(dump),
        &s,
        &["--connections", "1", "--pipeline", "3", "--via", "commands"],
        0,
    );
    assert_eq!(r["via"], "commands", "{r}");
    assert_listing(&s, dump);
}

#[test]
fn dump_7_0_into_6_2_through_auto() {
    let Some(bin) = require_old_server("6.2") else {
        return;
    };
    let s = RedisServer::start_with(&bin, &[]);
    // list:plain exists only in the 7.0 dump; the function library cannot go to 6.2 and is
    // the one (named) error.
    let r = import(
        &testdata("redis-7.0/all-types.rdb"),
        &s,
        &["--exclude-key", "list:plain", "--on-error", "skip"],
        1,
    );
    assert_eq!(r["errors"], 1, "{r}");
    assert!(
        r["error_messages"][0]
            .as_str()
            .unwrap()
            .contains("rdbferrylib"),
        "{r}"
    );
    assert!(r["rewritten"].as_u64().unwrap() > 0, "{r}");
    assert!(r["restored"].as_u64().unwrap() > 0, "{r}");
    assert_listing(&s, "redis-6.2/all-types.rdb");

    // --mode restore refuses the listpack encodings, by key name.
    let s = RedisServer::start_with(&bin, &[]);
    let o = run(
        &[
            &testdata("redis-7.0/all-types.rdb"),
            "--to",
            &s.url(),
            "--mode",
            "restore",
            "--force",
            "--on-error",
            "skip",
        ],
        &[],
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("key \"hash:small\" (db 0): the target (RDB 9) cannot load encoding"),
        "{err}"
    );
    assert_eq!(s.cli(&["GET", "string:raw"]).len(), 100);
}

#[test]
fn aof_inputs_reach_their_digest() {
    for aof in ["redis-7.0/appendonlydir", "redis-6.2/appendonly.aof"] {
        let s = RedisServer::start();
        let r = import(&testdata(aof), &s, &[], 0);
        assert!(r["commands"].as_u64().unwrap() > 0, "{r}");
        eprintln!("{aof}");
        assert_listing(&s, aof);
    }
    // --db-map applies to AOF commands too.
    let s = RedisServer::start();
    import(
        &testdata("redis-7.0/appendonlydir"),
        &s,
        &["--db-map", "2=4"],
        0,
    );
    assert_eq!(s.cli(&["-n", "2", "DBSIZE"]), "0");
    assert_eq!(s.cli(&["-n", "4", "DBSIZE"]), "2");
}

#[test]
fn stdin_input() {
    for input in ["redis-7.0/all-types.rdb", "redis-6.2/appendonly.aof"] {
        let s = RedisServer::start();
        let o = Command::new(env!("CARGO_BIN_EXE_rdbferry"))
            .args(["import", "-", "--to", &s.url(), "-q"])
            .stdin(std::fs::File::open(testdata(input)).unwrap())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
        eprintln!("{input}");
        assert_listing(&s, input);
    }
}

#[test]
fn on_conflict_fail_replace_skip() {
    let dump = testdata("redis-7.0/all-types.rdb");
    for mode in ["restore", "rewrite"] {
        // fail: the precheck stops before writing anything.
        let s = RedisServer::start();
        s.cli(&["SET", "string:raw", "already here"]);
        let o = run(&[&dump, "--to", &s.url(), "--mode", mode], &[]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("precheck failed"), "{err}");
        assert_eq!(s.cli(&["DBSIZE"]), "1");

        // fail with --force: the key is named, the rest is written (--on-error skip).
        let r = import(
            &dump,
            &s,
            &["--mode", mode, "--force", "--on-error", "skip"],
            1,
        );
        assert_eq!(r["errors"], 1, "{mode}: {r}");
        let msg = r["error_messages"][0].as_str().unwrap();
        assert!(
            msg.contains("string:raw") && msg.contains("exists"),
            "{msg}"
        );
        assert_eq!(s.cli(&["GET", "string:raw"]), "already here");
        assert_eq!(s.cli(&["DBSIZE"]), "50");

        // fail with --force and the default --on-error stop: stops, naming the key.
        let s = RedisServer::start();
        s.cli(&["SET", "string:raw", "already here"]);
        let o = run(&[&dump, "--to", &s.url(), "--mode", mode, "--force"], &[]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("key \"string:raw\" (db 0)"), "{err}");
        assert_eq!(s.cli(&["GET", "string:raw"]), "already here");

        // skip: counted, left alone.
        let s = RedisServer::start();
        s.cli(&["SET", "string:raw", "already here"]);
        let r = import(&dump, &s, &["--mode", mode, "--on-conflict", "skip"], 0);
        assert_eq!(r["conflicts"], 1, "{mode}: {r}");
        assert_eq!(s.cli(&["GET", "string:raw"]), "already here");
        assert_eq!(s.cli(&["KEYS", "*rdbferry-tmp*"]), "");

        // replace: the dump wins, even over a key of another type.
        let s = RedisServer::start();
        s.cli(&["RPUSH", "string:raw", "a", "b"]);
        s.cli(&["SET", "hash:small", "x"]);
        let r = import(&dump, &s, &["--mode", mode, "--on-conflict", "replace"], 0);
        assert_eq!(r["conflicts"], 0, "{mode}: {r}");
        eprintln!("{mode}");
        assert_listing(&s, "redis-7.0/all-types.rdb");
        // A second import over the first changes nothing (no doubled lists).
        import(&dump, &s, &["--mode", mode, "--on-conflict", "replace"], 0);
        eprintln!("{mode}");
        assert_listing(&s, "redis-7.0/all-types.rdb");
    }
}

#[test]
fn db_map_and_rename() {
    let dump = testdata("redis-7.0/all-types.rdb");
    // RESTORE and the rewrite path (the full sync's are in import_fullsync.rs).
    for mode in ["auto", "rewrite"] {
        let s = RedisServer::start();
        let r = import(
            &dump,
            &s,
            &[
                "--via",
                "commands",
                "--mode",
                mode,
                "--db-map",
                "5=7",
                "--db-map",
                "1=0",
                "--rename",
                "hash:=h2:",
                "--rename",
                "db5:=moved:",
            ],
            0,
        );
        assert_eq!(r["via"], "commands", "{r}");
        assert_eq!(s.cli(&["-n", "5", "DBSIZE"]), "0", "{mode}");
        assert_eq!(s.cli(&["-n", "1", "DBSIZE"]), "0", "{mode}");
        assert_eq!(s.cli(&["-n", "7", "DBSIZE"]), "3", "{mode}");
        assert_eq!(s.cli(&["-n", "0", "DBSIZE"]), "54", "{mode}");
        assert_eq!(s.cli(&["-n", "7", "TYPE", "moved:hash"]), "hash");
        assert_eq!(s.cli(&["EXISTS", "hash:big"]), "0");
        assert_ne!(s.cli(&["HLEN", "h2:big"]), "0");
        assert_eq!(s.cli(&["TYPE", "db1:zset"]), "zset");
        assert_ne!(s.cli(&["PEXPIRETIME", "db1:ttl"]), "-1");
    }
}

#[test]
fn url_db_is_where_db_0_goes() {
    let s = RedisServer::start();
    let url = format!("redis://127.0.0.1:{}/3", s.port());
    let o = run(
        &[
            &testdata("redis-7.0/all-types.rdb"),
            "--to",
            &url,
            "--db-map",
            "1=4",
            "-q",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    assert_eq!(s.cli(&["-n", "3", "DBSIZE"]), "50");
    assert_eq!(s.cli(&["-n", "1", "DBSIZE"]), "0");
    assert_eq!(s.cli(&["-n", "4", "DBSIZE"]), "4");
    assert_eq!(s.cli(&["-n", "5", "DBSIZE"]), "3");
    assert_eq!(s.cli(&["-n", "0", "DBSIZE"]), "0");
}

#[test]
fn value_over_proto_max_bulk_len_goes_in_chunks() {
    // A source with a 3 MB string and a big list, saved to an RDB.
    let src = RedisServer::start();
    let client = redis::Client::open(src.url()).unwrap();
    let mut c = client.get_connection().unwrap();
    // Incompressible bytes (xorshift), so the RDB record stays over 1 MB.
    let mut x = 0x2545f4914f6cdd1du64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let big: Vec<u8> = (0..3_000_000).map(|_| rnd() as u8).collect();
    let _: () = redis::cmd("SET")
        .arg("big:string")
        .arg(&big)
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("PEXPIREAT")
        .arg("big:string")
        .arg(4102444800000i64)
        .query(&mut c)
        .unwrap();
    let items: Vec<String> = (0..20_000)
        .map(|i| {
            format!(
                "item-{i:06}-{:016x}{:016x}{:016x}{:016x}",
                rnd(),
                rnd(),
                rnd(),
                rnd()
            )
        })
        .collect();
    for part in items.chunks(1000) {
        let _: () = redis::cmd("RPUSH")
            .arg("big:list")
            .arg(part)
            .query(&mut c)
            .unwrap();
    }
    let _: () = redis::cmd("SET")
        .arg("small")
        .arg("v")
        .query(&mut c)
        .unwrap();
    let dump = src.save_and_copy_dump();
    let dump = dump.display().to_string();

    // The list (a 2 MB record) goes by the rewrite path in bounded RPUSHes. The string
    // cannot exist on this target at all (Redis checks APPEND and SETRANGE results against
    // proto-max-bulk-len too): a clear error naming the key, and no half-built key.
    let dst = RedisServer::start_with(Path::new("redis-server"), &["--proto-max-bulk-len", "1mb"]);
    // (A full sync would load the string: a loader does not check proto-max-bulk-len. The
    // command path is under test here.)
    let r = import(&dump, &dst, &["--on-error", "skip", "--via", "commands"], 1);
    assert_eq!(r["rewritten"], 2, "{r}");
    assert_eq!(dst.cli(&["EXISTS", "big:string"]), "0");
    assert_eq!(r["errors"], 1, "{r}");
    let msg = r["error_messages"][0].as_str().unwrap();
    assert!(
        msg.contains("big:string") && msg.contains("proto-max-bulk-len"),
        "{msg}"
    );
    assert_eq!(dst.cli(&["LLEN", "big:list"]), "20000");
    src.cli(&["DEL", "big:string"]);
    assert_same_data(&dst, &src);
    assert_eq!(dst.cli(&["KEYS", "*rdbferry-tmp*"]), "");

    // --mode restore cannot send the payloads: the precheck says so, and with --force each
    // key is named and nothing is broken.
    let dst = RedisServer::start_with(Path::new("redis-server"), &["--proto-max-bulk-len", "1mb"]);
    let args = [&dump[..], "--to", &dst.url(), "--mode", "restore", "-q"];
    let o = run(&args, &[]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("RESTORE cannot send it"), "{err}");
    let o = run(
        &[&args[..], &["--force", "--on-error", "skip"]].concat(),
        &[],
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("key \"big:string\"") && err.contains("key \"big:list\""),
        "{err}"
    );
    assert!(err.contains("proto-max-bulk-len"), "{err}");
    assert_eq!(dst.cli(&["GET", "small"]), "v");
    assert_eq!(dst.cli(&["DBSIZE"]), "1");
}

#[test]
fn wrong_password_is_clear_and_never_printed() {
    // Started without a password (the harness PINGs it), then locked.
    let s = RedisServer::start();
    s.cli(&["CONFIG", "SET", "requirepass", "s3cret-pw"]);
    let dump = testdata("redis-7.0/all-types.rdb");
    let port = s.port().to_string();
    let wrong = format!("redis://:hunter2-wrong@127.0.0.1:{port}");
    let err = fails_without_showing(&[&dump, "--to", &wrong], &[], "hunter2");
    assert!(err.contains("authentication failed"), "{err}");

    // Same through the environment, with a user name.
    let o = run(
        &[&dump, "--to", &format!("redis://default@127.0.0.1:{port}")],
        &[("RDBFERRY_TO_PASSWORD", "hunter2-wrong")],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        !out.contains("hunter2") && !err.contains("hunter2"),
        "{out}{err}"
    );

    // No password at all: says so.
    let o = run(&[&dump, "--to", &format!("redis://127.0.0.1:{port}")], &[]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("NOAUTH") && err.contains("RDBFERRY_TO_PASSWORD"),
        "{err}"
    );

    // The right password from the environment works, and is not printed either.
    let o = run(
        &[&dump, "--to", &format!("redis://127.0.0.1:{port}")],
        &[("RDBFERRY_TO_PASSWORD", "s3cret-pw")],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        !out.contains("s3cret") && !err.contains("s3cret"),
        "{out}{err}"
    );
    assert!(out.contains(":***@") || err.contains(":***@"), "{out}{err}");
}

#[test]
fn acl_user_without_rights() {
    let s = RedisServer::start();
    s.cli(&[
        "ACL",
        "SETUSER",
        "limited",
        "on",
        ">limited-pw-xyz",
        "~*",
        "+@all",
        "-@dangerous",
    ]);
    let dump = testdata("redis-7.0/all-types.rdb");
    let url = format!("redis://limited@127.0.0.1:{}", s.port());
    let env = [("RDBFERRY_TO_PASSWORD", "limited-pw-xyz")];

    // Named user, no password: says so.
    let o = run(&[&dump, "--to", &url], &[]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("WRONGPASS") && err.contains("no password given"),
        "{err}"
    );

    // RESTORE, INFO and CONFIG are @dangerous: the precheck warns, each refused key is named.
    let o = run(&[&dump, "--to", &url, "--on-error", "skip"], &env);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("INFO refused") && err.contains("CONFIG GET refused"),
        "{err}"
    );
    assert!(
        err.contains("key \"zset:small\" (db 0): NOPERM") && err.contains("'restore'"),
        "{err}"
    );
    assert!(!out.contains("limited-pw") && !err.contains("limited-pw"));

    // The rewrite path needs no dangerous command.
    let s = RedisServer::start();
    s.cli(&[
        "ACL",
        "SETUSER",
        "limited",
        "on",
        ">limited-pw-xyz",
        "~*",
        "+@all",
        "-@dangerous",
    ]);
    let url = format!("redis://limited@127.0.0.1:{}", s.port());
    let o = run(&[&dump, "--to", &url, "--mode", "rewrite", "-q"], &env);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    assert_listing(&s, "redis-7.0/all-types.rdb");
}

#[test]
fn unreachable_host_is_a_clear_error() {
    let port = free_port();
    let o = run(
        &[
            &testdata("redis-7.0/all-types.rdb"),
            "--to",
            &format!("redis://:pw-not-shown@127.0.0.1:{port}"),
        ],
        &[],
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("cannot connect"),
        "{err}"
    );
    assert!(!out.contains("pw-not-shown") && !err.contains("pw-not-shown"));
}

#[test]
fn dry_run_and_precheck_write_nothing() {
    let s = RedisServer::start();
    let dump = testdata("redis-7.0/all-types.rdb");
    let r = import(&dump, &s, &["--dry-run"], 0);
    assert_eq!(r["written"], 58, "{r}");
    assert_eq!(s.cli(&["DBSIZE"]), "0");
    let o = run(&[&dump, "--to", &s.url(), "--precheck"], &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        out.contains("proto-max-bulk-len") && out.contains("empty"),
        "{out}"
    );
    assert_eq!(s.cli(&["DBSIZE"]), "0");
    s.cli(&["SET", "x", "y"]);
    let o = run(&[&dump, "--to", &s.url(), "--precheck"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).0.contains("FAIL"));
}

/// Big collections are sent in parts as they are decoded, never held whole: through the
/// library with a tiny threshold and part size, every collection and stream goes that way.
#[test]
fn big_values_go_in_parts() {
    use rdbferry::job::Common;
    use rdbferry::job::import::{self, ImportOptions, Mode, OnConflict};
    use rdbferry::net::RedisUrl;
    for (dump, conflict) in [
        ("redis-7.0/all-types.rdb", OnConflict::Fail),
        ("redis-6.2/all-types.rdb", OnConflict::Replace),
    ] {
        let s = RedisServer::start();
        let opts = ImportOptions {
            to: RedisUrl::parse(&s.url(), None).unwrap(),
            mode: Mode::Rewrite,
            on_conflict: conflict,
            stop_on_error: true,
            dry_run: false,
            force: false,
            stream_min: 0,
            part_bytes: 256,
            connections: 2,
            pipeline: 50,
            retry_for: std::time::Duration::from_secs(10),
            via: import::Via::Commands,
            rdb_only: false,
        };
        let common = Common {
            quiet: true,
            ..Default::default()
        };
        let inputs = vec![testdata(dump)];
        let pre = import::precheck(&inputs, &common, &opts).unwrap();
        assert!(!pre.failed(), "{}", pre.to_table());
        let r = import::import(&inputs, &common, &opts, &pre).unwrap();
        assert_eq!(r.errors, 0, "{:?}", r.error_messages);
        eprintln!("{dump}");
        assert_listing(&s, dump);
        assert_eq!(s.cli(&["KEYS", "*rdbferry-tmp*"]), "");
        // A conflict on a key sent in parts: named, and the existing key is untouched.
        if conflict == OnConflict::Fail {
            let pre = import::precheck(&inputs, &common, &opts).unwrap();
            let r = import::import(&inputs, &common, &opts, &pre).unwrap();
            assert!(r.errors > 0 && r.error_messages[0].contains("already exists"));
            assert_eq!(s.cli(&["KEYS", "*rdbferry*"]), "");
            eprintln!("{dump}");
            assert_listing(&s, dump);
            assert_eq!(s.cli(&["KEYS", "*rdbferry-tmp*"]), "");
        }
    }
}

#[test]
fn keys_expired_at_import_time_are_counted_not_sent() {
    let src = RedisServer::start();
    src.cli(&["SET", "stays", "1"]);
    src.cli(&["SET", "goes", "1", "PX", "300"]);
    src.cli(&["RPUSH", "goes:list", "a", "b"]);
    src.cli(&["PEXPIRE", "goes:list", "300"]);
    let dump = src.save_and_copy_dump().display().to_string();
    std::thread::sleep(std::time::Duration::from_millis(600));
    // RESTORE and the rewrite path (the full sync's are in import_fullsync.rs).
    for mode in ["auto", "rewrite"] {
        let s = RedisServer::start();
        let r = import(&dump, &s, &["--mode", mode, "--via", "commands"], 0);
        assert_eq!(r["via"], "commands", "{r}");
        assert_eq!(r["expired"], 2, "{r}");
        assert_eq!(r["written"], 1, "{r}");
        assert_eq!(s.cli(&["DBSIZE"]), "1");
    }
}

/// `convert --format jsonl` of testdata `input` into `dir`; returns the JSONL's path.
fn to_jsonl(input: &str, dir: &Path) -> String {
    let out = dir.join(format!("{}.jsonl", input.replace('/', "_")));
    let o = Command::new(env!("CARGO_BIN_EXE_rdbferry"))
        .arg("convert")
        .arg(testdata(input))
        .args(["--format", "jsonl", "-q", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    out.display().to_string()
}

/// `rdbferry verify SOURCE --to URL -q --json`: exit code, stdout and stderr.
fn verify(source: &str, server: &RedisServer) -> (Option<i32>, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_rdbferry"))
        .args(["verify", source, "--to", &server.url(), "-q", "--json"])
        .env_remove("RDBFERRY_TO_PASSWORD")
        .output()
        .unwrap();
    let (out, err) = text(&o);
    (o.status.code(), out, err)
}

/// Issue 3: each dump → JSONL → import reaches the writer's digest, by the rewrite path in
/// auto mode and by RESTORE of the encoded payload in restore mode; verify of the JSONL
/// against the target then finds nothing.
#[test]
fn jsonl_of_every_dump_imports_to_its_digest() {
    let tmp = TempDir::new("jsonl");
    for dump in DUMPS {
        let jsonl = to_jsonl(dump, tmp.path());
        for mode in ["auto", "restore"] {
            let s = RedisServer::start();
            let r = import(&jsonl, &s, &["--mode", mode], 0);
            eprintln!("{dump} as JSONL, --mode {mode}");
            assert_listing(&s, dump);
            assert_eq!(r["errors"], 0, "{r}");
            let other = if mode == "auto" {
                "restored"
            } else {
                "rewritten"
            };
            assert_eq!(r[other], 0, "{dump} as JSONL, --mode {mode}: {r}");
            assert!(r["keys_read"].as_u64().unwrap() > 50, "{r}");
            assert_eq!(s.cli(&["KEYS", "*rdbferry-tmp*"]), "");
            let (code, out, err) = verify(&jsonl, &s);
            assert_eq!(code, Some(0), "verify {dump} as JSONL: {out}{err}");
        }
    }
    // JSONL of AOF inputs: keys, then the commands in order.
    for aof in ["redis-6.2/appendonly.aof", "redis-7.0/appendonlydir"] {
        let jsonl = to_jsonl(aof, tmp.path());
        let s = RedisServer::start();
        let r = import(&jsonl, &s, &[], 0);
        eprintln!("{aof} as JSONL");
        assert_listing(&s, aof);
        assert!(r["commands"].as_u64().unwrap() > 0, "{r}");
    }
}

/// convert → edit → import: values changed in the JSONL are what the target gets, and
/// verify tells the edited JSONL (identical) from the original (three values differ).
#[test]
fn edited_jsonl_imports_the_edited_values() {
    let tmp = TempDir::new("jsonl-edit");
    let jsonl = to_jsonl("redis-7.0/all-types.rdb", tmp.path());
    let mut edited = String::new();
    for line in std::fs::read_to_string(&jsonl).unwrap().lines() {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        match v["key"].as_str() {
            Some("string:embstr") => v["value"] = "edited by hand".into(),
            Some("hash:small") => v["value"][0][1] = "changed".into(),
            Some("zset:small") => {
                let one = v["value"]
                    .as_array_mut()
                    .unwrap()
                    .iter_mut()
                    .find(|p| p[0] == "one")
                    .unwrap();
                one[1] = 42.5.into();
            }
            _ => {}
        }
        edited += &serde_json::to_string(&v).unwrap();
        edited.push('\n');
    }
    // A key that expired long ago is counted, not sent.
    edited += r#"{"db":0,"key":"long:gone","type":"string","expire_at_ms":1000,"value":"x"}"#;
    edited.push('\n');
    let path = tmp.path().join("edited.jsonl");
    std::fs::write(&path, edited).unwrap();
    let path = path.display().to_string();
    let s = RedisServer::start();
    let r = import(&path, &s, &[], 0);
    assert_eq!(r["expired"], 1, "{r}");
    assert_eq!(s.cli(&["GET", "string:embstr"]), "edited by hand");
    assert_eq!(s.cli(&["HGET", "hash:small", "f1"]), "changed");
    assert_eq!(s.cli(&["ZSCORE", "zset:small", "one"]), "42.5");
    assert_eq!(s.cli(&["EXISTS", "long:gone"]), "0");
    assert_ne!(s.digest(), expect_digest("redis-7.0/all-types.rdb"));
    let (code, out, err) = verify(&path, &s);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = verify(&jsonl, &s);
    assert_eq!(code, Some(1), "{out}{err}");
    let rep: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rep["value_diffs"], 3, "{rep}");
}

#[test]
fn malformed_jsonl_is_a_clear_error_with_file_and_line() {
    let tmp = TempDir::new("jsonl-bad");
    let good = r#"{"db":0,"key":"fine","type":"string","value":"ok"}"#;
    for (bad, want) in [
        (
            r#"{"db":0,"key":"k2","type":"list","value":"not a list"}"#,
            "expected a sequence",
        ),
        (
            r#"{"db":0,"key":"k2","type":"lists","value":[]}"#,
            "unknown type \"lists\"",
        ),
        (
            r#"{"db":0,"key":"k2","type":"list"}"#,
            "missing field `value`",
        ),
        (
            r#"{"db":0,"key":"k2","type":"list","value":["a"]"#,
            "EOF while parsing",
        ),
    ] {
        let path = tmp.path().join("bad.jsonl");
        std::fs::write(&path, format!("{good}\n\n{bad}\n{good}\n")).unwrap();
        let path = path.display().to_string();
        let s = RedisServer::start();
        let o = run(&[&path, "--to", &s.url(), "-q"], &[]);
        let (_, err) = text(&o);
        assert!(!o.status.success(), "{bad}: {err}");
        let at = format!("{path}: line 3 (key \"k2\"): ");
        assert!(err.contains(&at) && err.contains(want), "{bad}: {err}");
        let (code, _, err) = verify(&path, &s);
        assert_ne!(code, Some(0), "{err}");
        assert!(err.contains(&at) && err.contains(want), "{bad}: {err}");
    }
}

#[test]
fn jsonl_on_stdin() {
    let tmp = TempDir::new("jsonl-stdin");
    let dump = "redis-6.2/all-types.rdb";
    let jsonl = to_jsonl(dump, tmp.path());
    let s = RedisServer::start();
    let o = Command::new(env!("CARGO_BIN_EXE_rdbferry"))
        .args(["import", "-", "--to", &s.url(), "-q"])
        .stdin(std::fs::File::open(&jsonl).unwrap())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    assert_listing(&s, dump);
    let o = Command::new(env!("CARGO_BIN_EXE_rdbferry"))
        .args(["verify", "-", "--to", &s.url(), "-q"])
        .stdin(std::fs::File::open(&jsonl).unwrap())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).0);
}

/// JSONL of a 7.0 dump into Redis 6.2: the rewrite path with pre-7.0 stream commands.
#[test]
fn jsonl_of_a_7_0_dump_into_6_2() {
    let Some(bin) = require_old_server("6.2") else {
        return;
    };
    let tmp = TempDir::new("jsonl-62");
    let jsonl = to_jsonl("redis-7.0/all-types.rdb", tmp.path());
    let s = RedisServer::start_with(&bin, &[]);
    // As for the dump itself: list:plain exists only in 7.0, and the function library cannot
    // go to 6.2 (the one, named, error).
    let r = import(
        &jsonl,
        &s,
        &["--exclude-key", "list:plain", "--on-error", "skip"],
        1,
    );
    assert_eq!(r["errors"], 1, "{r}");
    assert_eq!(r["restored"], 0, "{r}");
    assert_listing(&s, "redis-6.2/all-types.rdb");
}

/// Run `rdbferry import ARGS...`, killing it if it has not finished within `limit` (so a hang
/// fails the test instead of blocking it).
fn run_within(args: &[&str], limit: std::time::Duration) -> Output {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_rdbferry"))
        .arg("import")
        .args(args)
        .env_remove("RDBFERRY_TO_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "import {args:?} still running after {limit:?}: {}",
                text(&o).1
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// TLS: over rediss:// with the CA that signed the server's certificate, a dump reaches its
/// digest; a CA that did not sign it, or the system's roots, are refused before anything is
/// written, naming the certificate problem; --tls-insecure goes through (warning once).
#[test]
fn tls_target_with_ca_wrong_ca_and_insecure() {
    let certs = TestCerts::new();
    let s = RedisServer::start_tls(&certs, &[]);
    let dump = testdata("redis-7.0/all-types.rdb");
    let url = s.url();
    assert!(url.starts_with("rediss://"), "{url}");
    let other = certs.other_ca();
    for bad in [&["--tls-ca", other.as_str()][..], &[]] {
        let mut args = vec![dump.as_str(), "--to", &url];
        args.extend_from_slice(bad);
        let o = run(&args, &[]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{bad:?}: {err}");
        assert!(
            err.contains(&format!("127.0.0.1:{}", s.port())) && err.contains("certificate"),
            "{bad:?}: {err}"
        );
        assert!(err.contains("--tls-ca"), "{bad:?}: {err}");
        assert_eq!(s.cli(&["DBSIZE"]), "0");
    }

    let r = import(
        &dump,
        &s,
        &["--tls-ca", &certs.ca(), "--connections", "3"],
        0,
    );
    assert_eq!(r["errors"], 0, "{r}");
    assert!(
        r["target"].as_str().unwrap().starts_with("rediss://"),
        "{r}"
    );
    assert_listing(&s, "redis-7.0/all-types.rdb");

    s.cli(&["FLUSHALL"]);
    s.cli(&["FUNCTION", "FLUSH"]);
    let o = run(
        &[
            &dump,
            "--to",
            &url,
            "--tls-ca",
            &other,
            "--tls-insecure",
            "-q",
        ],
        &[],
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(err.matches("--tls-insecure").count(), 1, "{err}");
    assert!(err.contains("not verified"), "{err}");
    assert_listing(&s, "redis-7.0/all-types.rdb");
}

/// TLS with a password in the URL: the right one works and is never printed; a wrong one is
/// an authentication error that does not show it. The server speaks TLS 1.2 only (the other
/// tests get 1.3).
#[test]
fn tls_target_with_password() {
    let certs = TestCerts::new();
    let s = RedisServer::start_tls(&certs, &["--tls-protocols", "TLSv1.2"]);
    s.cli(&["CONFIG", "SET", "requirepass", "tls-s3cret-pw"]);
    let dump = testdata("redis-7.0/all-types.rdb");
    let ca = certs.ca();
    let port = s.port();
    let wrong = format!("rediss://:hunter2-tls@127.0.0.1:{port}");
    let err = fails_without_showing(&[&dump, "--to", &wrong, "--tls-ca", &ca], &[], "hunter2");
    assert!(err.contains("authentication failed"), "{err}");

    let right = format!("rediss://default:tls-s3cret-pw@127.0.0.1:{port}");
    let o = run(&[&dump, "--to", &right, "--tls-ca", &ca], &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        !out.contains("s3cret") && !err.contains("s3cret"),
        "{out}{err}"
    );
    assert!(out.contains("rediss://default:***@"), "{out}");
    // The harness reads the server without a password.
    s.cli(&[
        "-a",
        "tls-s3cret-pw",
        "--no-auth-warning",
        "CONFIG",
        "SET",
        "requirepass",
        "",
    ]);
    assert_listing(&s, "redis-7.0/all-types.rdb");
}

/// A server that asks for client certificates: refused without one (the message says which
/// flags to give), accepted with --tls-cert/--tls-key.
#[test]
fn tls_client_certificate() {
    let certs = TestCerts::new();
    let s = RedisServer::start_tls(&certs, &["--tls-auth-clients", "yes"]);
    let dump = testdata("redis-7.0/all-types.rdb");
    let (url, ca) = (s.url(), certs.ca());
    let o = run(&[&dump, "--to", &url, "--tls-ca", &ca], &[]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("--tls-cert"), "{err}");
    assert_eq!(s.cli(&["DBSIZE"]), "0");

    let (cert, key) = (certs.client_cert(), certs.client_key());
    import(
        &dump,
        &s,
        &["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key],
        0,
    );
    assert_listing(&s, "redis-7.0/all-types.rdb");
}

/// redis:// against a TLS-only port: a clear error with the hint, not a hang.
#[test]
fn plain_url_against_a_tls_port_is_a_clear_error() {
    let certs = TestCerts::new();
    let s = RedisServer::start_tls(&certs, &[]);
    let dump = testdata("redis-7.0/all-types.rdb");
    for url in [
        format!("redis://127.0.0.1:{}", s.port()),
        format!("redis://:pw-not-shown@127.0.0.1:{}", s.port()),
    ] {
        let o = run_within(&[&dump, "--to", &url], std::time::Duration::from_secs(30));
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("127.0.0.1:{}", s.port())) && err.contains("use rediss://"),
            "{err}"
        );
        assert!(!out.contains("pw-not-shown") && !err.contains("pw-not-shown"));
    }
}

/// Over TLS, several connections each split into a writing and a reading thread sharing one
/// session: many keys, a list over the 8 MB that sends it in parts, a 3 MB string (writes of
/// megabytes while replies stream back) reach the source's digest, with no temporary key left;
/// verify over TLS finds them identical.
#[test]
fn tls_big_import_over_split_connections() {
    let src = RedisServer::start();
    src.cli(&["DEBUG", "POPULATE", "50000", "key", "64"]);
    src.cli(&[
        "EVAL",
        "for i = 1, 280000 do redis.call('RPUSH', 'big:list', redis.sha1hex(tostring(i))) end \
         for i = 1, 60000 do redis.call('HSET', 'big:hash', 'f' .. i, redis.sha1hex('h' .. i)) end \
         redis.call('SET', 'big:string', string.rep('s', 3000000)) return 1",
        "0",
    ]);
    let dump = src.save_and_copy_dump().display().to_string();
    let want = Snapshot::of(&src);
    let certs = TestCerts::new();
    for mode in ["auto", "rewrite"] {
        let s = RedisServer::start_tls(&certs, &[]);
        let r = import(
            &dump,
            &s,
            &[
                "--tls-ca",
                &certs.ca(),
                "--mode",
                mode,
                "--connections",
                "2",
            ],
            0,
        );
        assert_eq!(r["written"], 50003, "{r}");
        eprintln!("--mode {mode}");
        want.assert_same(&Snapshot::of(&s));
        assert_eq!(s.cli(&["KEYS", "*rdbferry-tmp*"]), "");
    }
    // Verify reads the big values back in chunks: replies of many TLS records per read.
    let s = RedisServer::start_tls(&certs, &[]);
    import(&dump, &s, &["--tls-ca", &certs.ca()], 0);
    let o = Command::new(env!("CARGO_BIN_EXE_rdbferry"))
        .args(["verify", &dump, "--to", &s.url(), "--tls-ca", &certs.ca()])
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("50003 keys checked, 0 differing"), "{out}");
}

/// Strings bigger than a part (8 MB) go by the rewrite path in parts (`SET` + `APPEND`s in
/// `MULTI`s with a marker), never built whole: a 30 MB incompressible string and a 40 MB
/// LZF-compressed one (decoded chunk by chunk), with a TTL.
#[test]
fn big_strings_go_in_parts() {
    let src = RedisServer::start();
    let mut c = redis::Client::open(src.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..30 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let _: () = redis::cmd("SET")
        .arg("noise")
        .arg(&noise)
        .query(&mut c)
        .unwrap();
    src.cli(&[
        "EVAL",
        "redis.call('SET', 'rep', string.rep('abcdefgh', 5 * 1024 * 1024))",
        "0",
    ]);
    src.cli(&["PEXPIRE", "rep", "3600000"]);
    let dump = src.save_and_copy_dump().display().to_string();
    for mode in ["auto", "rewrite"] {
        let s = RedisServer::start();
        let r = import(&dump, &s, &["--mode", mode, "--via", "commands"], 0);
        // The compressed one is a small record: RESTORE takes it as it is in auto mode.
        let want = if mode == "auto" { 1 } else { 2 };
        assert_eq!(r["rewritten"], want, "{r}");
        eprintln!("--mode {mode}");
        assert_same_data(&s, &src);
        assert_eq!(s.cli(&["KEYS", "*rdbferry*"]), "");
    }
}
