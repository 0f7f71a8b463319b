//! `rdbferry import --via full-sync|auto`: an empty standalone target loads the input itself
//! as a replica of rdbferry (`job::fullsync`). Every testdata dump reaches what its server
//! listed that way (digest, expiry times, stream groups); filters, renames, db mapping and expired keys give what the command path gives; a
//! duplicated key, a corrupt value, a non-empty target or a refused setting leave the target
//! as it was (alive, a master, empty) and auto mode then writes with commands; a target that
//! dies during the sync is an error, not a hang.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rdbferry::rdb::encoder::{RdbWriter, value};
use support::ferry::{Ferry, big_file, path_str, rdbferry, write_rdb};
use support::{RedisServer, assert_listing, assert_same_data, require_old_server, testdata};

/// `import INPUT --to URL --json -q EXTRA...`: the summary (if any), stderr, and the exit code.
fn import(input: &str, url: &str, extra: &[&str]) -> (serde_json::Value, String, Option<i32>) {
    let mut args = vec!["import", input, "--to", url, "--json", "-q"];
    args.extend_from_slice(extra);
    let o = rdbferry(&args);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let v = serde_json::from_str(out.trim()).unwrap_or(serde_json::Value::Null);
    (v, err, o.status.code())
}

/// The target is alive, a master again, and holds nothing.
fn untouched(s: &RedisServer) {
    assert_eq!(s.cli(&["PING"]), "PONG");
    assert!(s.cli(&["INFO", "replication"]).contains("role:master"));
    assert_eq!(s.cli(&["INFO", "keyspace"]).trim(), "# Keyspace");
    assert!(
        s.cli(&["CONFIG", "GET", "repl-diskless-load"])
            .ends_with("disabled")
    );
}

#[test]
fn every_dump_loads_by_full_sync() {
    for dump in [
        "redis-7.0/all-types.rdb",
        "redis-6.2/all-types.rdb",
        "redis-6.0/all-types.rdb",
    ] {
        let s = RedisServer::start();
        let (r, err, code) = import(&testdata(dump), &s.url(), &["--via", "full-sync"]);
        assert_eq!(code, Some(0), "{dump}: {err}");
        assert_eq!(r["via"], "full-sync", "{r}");
        assert_eq!(r["synced"], r["keys_read"], "{r}");
        eprintln!("{dump}");
        assert_listing(&s, dump);
        assert!(s.cli(&["INFO", "replication"]).contains("role:master"));
        // It loaded from the socket, and the setting is back.
        assert!(s.log().contains("to parser") || !s.log().contains("to disk"));
        assert!(
            s.cli(&["CONFIG", "GET", "repl-diskless-load"])
                .ends_with("disabled")
        );
        // The server takes writes again.
        s.cli(&["SET", "after", "1"]);
        s.cli(&["DEL", "after"]);
        let v = rdbferry(&["verify", &testdata(dump), "--to", &s.url(), "-q"]);
        assert_eq!(
            v.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&v.stderr)
        );
        if dump.starts_with("redis-7.0") {
            // Libraries go by FUNCTION LOAD after the load.
            assert_eq!(r["functions"], 1, "{r}");
            assert!(s.cli(&["FUNCTION", "LIST"]).contains("rdbferrylib"));
        }
    }
    // auto picks it for an empty target.
    let s = RedisServer::start();
    let (r, err, code) = import(&testdata("redis-7.0/all-types.rdb"), &s.url(), &[]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(r["via"], "full-sync", "{r}");
}

#[test]
fn password_target_and_6_2() {
    let s = RedisServer::start();
    s.cli(&["CONFIG", "SET", "requirepass", "s3cret"]);
    let url = format!("redis://:s3cret@127.0.0.1:{}", s.port());
    let (r, err, code) = import(
        &testdata("redis-7.0/all-types.rdb"),
        &url,
        &["--via", "full-sync"],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(r["via"], "full-sync");
    assert!(!err.contains("s3cret") && !r.to_string().contains("s3cret"));
    let Some(bin) = require_old_server("6.2") else {
        return;
    };
    let s = RedisServer::start_with(&bin, &[]);
    let dump = "redis-6.2/all-types.rdb";
    let (r, err, code) = import(&testdata(dump), &s.url(), &["--via", "full-sync"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(r["via"], "full-sync");
    assert_listing(&s, dump);
    // A 7.0 file with functions: 6.2 cannot hold them, full-sync says why not.
    let s = RedisServer::start_with(&bin, &[]);
    let (_, err, code) = import(
        &testdata("redis-7.0/all-types.rdb"),
        &s.url(),
        &["--via", "full-sync", "--exclude-key", "list:plain"],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("the input has functions"), "{err}");
    untouched(&s);
}

/// Issue 12: a 7.0 dump (listpack hashes and zsets, quicklists of listpacks with several
/// nodes, a stream, intsets, TTLs) into an empty 6.2 goes by full sync, down-converted to
/// RDB 9 on the way, and the target then holds what the 7.0 server that wrote it holds (same
/// digest, key by key expiry). What RDB 9 cannot hold (a stream's lag metadata) rules the
/// full sync out: auto then takes commands, as before.
#[test]
fn issue12_a_newer_dump_goes_down_to_an_older_target_by_full_sync() {
    let src = RedisServer::start();
    let mut c = support::ferry::conn(&src);
    let mut q = redis::pipe();
    let long: Vec<String> = (0..3000).map(|i| format!("element-{i}")).collect();
    q.cmd("RPUSH").arg("list:long").arg(&long);
    q.cmd("RPUSH")
        .arg("list:short")
        .arg(&["a", "1", "-7", "300000"]);
    q.cmd("RPUSH")
        .arg("list:big")
        .arg(&["x".repeat(9000), "y".into()]);
    for i in 0..200 {
        q.cmd("HSET")
            .arg(format!("hash:{i}"))
            .arg(&["f", "v", "n", "42", "neg", "-12345"]);
        q.cmd("ZADD")
            .arg(format!("zset:{i}"))
            .arg(&["1", "a", "2.5", "b", "-3", "c"]);
        q.cmd("ZADD")
            .arg(format!("zset:{i}"))
            .arg(&["inf", "d", "-inf", "e", "0.1", "f"]);
        q.cmd("SADD")
            .arg(format!("set:{i}"))
            .arg(&[i, i + 1, 70000]);
        q.cmd("SET").arg(format!("string:{i}")).arg("x".repeat(i));
        q.cmd("PEXPIRE")
            .arg(format!("string:{i}"))
            .arg(3_600_000 + i);
    }
    let wide: Vec<String> = (0..600).map(|i| format!("f{i}")).collect();
    q.cmd("HSET")
        .arg("hash:wide")
        .arg(wide.iter().flat_map(|f| [f, f]).collect::<Vec<_>>());
    q.cmd("ZADD").arg("zset:wide").arg(
        wide.iter()
            .enumerate()
            .flat_map(|(i, f)| [i.to_string(), f.clone()])
            .collect::<Vec<_>>(),
    );
    q.cmd("XADD").arg("stream").arg("1-1").arg(&["f", "v"]);
    q.cmd("XADD").arg("stream").arg("2-1").arg(&["f", "w"]);
    let () = q.query(&mut c).unwrap();
    let dump = src.save_and_copy_dump();
    let want = support::Snapshot::of(&src).without_group_reads();
    let (Some(bin), Some(bin60)) = (require_old_server("6.2"), require_old_server("6.0")) else {
        return;
    };
    for b in [&bin, &bin60] {
        let s = RedisServer::start_with(b, &[]);
        let (r, err, code) = import(path_str(&dump), &s.url(), &[]);
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(r["via"], "full-sync", "{} {r}", s.version());
        want.assert_same(&support::Snapshot::of(&s).without_group_reads());
        assert!(s.cli(&["INFO", "replication"]).contains("role:master"));
        assert!(
            s.cli(&["CONFIG", "GET", "repl-diskless-load"])
                .ends_with("disabled")
        );
    }
    // 6.0, not empty: ruled out, and the target is left as it was.
    let s = RedisServer::start_with(&bin60, &[]);
    s.cli(&["-n", "3", "SET", "keep", "me"]);
    let (_, err, code) = import(path_str(&dump), &s.url(), &["--via", "full-sync"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(s.cli(&["-n", "3", "GET", "keep"]), "me");
    assert!(s.cli(&["INFO", "replication"]).contains("role:master"));

    // A consumer group's entries-read: RDB 9 has no place for it.
    src.cli(&["XGROUP", "CREATE", "stream", "g", "0"]);
    src.cli(&[
        "XREADGROUP",
        "GROUP",
        "g",
        "c",
        "COUNT",
        "1",
        "STREAMS",
        "stream",
        ">",
    ]);
    let dump = src.save_and_copy_dump();
    let s = RedisServer::start_with(&bin, &[]);
    let (_, err, code) = import(path_str(&dump), &s.url(), &["--via", "full-sync"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("RDB 9 cannot hold it"), "{err}");
    untouched(&s);
}

/// Keys in db 0 and 1, one already expired, one with a TTL to come.
fn mixed_file() -> PathBuf {
    let mut w = RdbWriter::new(9);
    w.select_db(0)
        .key(b"user:1", None, &value::string(b"alice", false))
        .key(
            b"user:2",
            Some(4_102_444_800_000),
            &value::string(b"bob", false),
        )
        .key(b"gone", Some(1_000), &value::string(b"old", false))
        .key(b"list", None, &value::list_ziplist(&[b"a", b"b", b"c"]))
        .select_db(1)
        .key(b"user:3", None, &value::hash_ziplist(&[(b"f", b"v")]))
        .key(b"other", None, &value::set_intset(&[1, 2, 3]));
    write_rdb("mixed.rdb", &w.finish())
}

#[test]
fn filters_renames_and_db_map_match_the_command_path() {
    let file = mixed_file();
    let file = file.to_str().unwrap();
    let flags = ["--key", "user:*", "--rename", "user:=u:", "--db-map", "1=3"];
    let by_sync = RedisServer::start();
    let mut extra = vec!["--via", "full-sync"];
    extra.extend_from_slice(&flags);
    let (r, err, code) = import(file, &by_sync.url(), &extra);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(r["via"], "full-sync");
    assert_eq!(r["synced"], 3, "{r}");
    assert_eq!(r["filtered"], 3, "{r}");
    let by_commands = RedisServer::start();
    let mut extra = vec!["--via", "commands"];
    extra.extend_from_slice(&flags);
    let (r, err, code) = import(file, &by_commands.url(), &extra);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(r["via"], "commands");
    assert_same_data(&by_sync, &by_commands);
    assert_eq!(by_sync.cli(&["-n", "3", "HGET", "u:3", "f"]), "v");
    assert_eq!(by_sync.cli(&["GET", "u:1"]), "alice");
    assert!(by_sync.cli(&["PEXPIRETIME", "u:2"]) == "4102444800000");

    // The expired key is counted, not loaded.
    let s = RedisServer::start();
    let (r, err, code) = import(file, &s.url(), &["--via", "full-sync"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(r["expired"], 1, "{r}");
    assert_eq!(r["synced"], 5, "{r}");
    assert_eq!(s.cli(&["EXISTS", "gone"]), "0");
    assert_eq!(s.cli(&["DBSIZE"]), "3");
}

#[test]
fn a_duplicated_key_never_reaches_the_loader() {
    let mut w = RdbWriter::new(9);
    w.select_db(0)
        .key(b"a", None, &value::string(b"1", false))
        .key(b"dup", None, &value::string(b"first", false))
        .key(b"b", None, &value::string(b"2", false))
        .key(b"dup", None, &value::string(b"second", false));
    let file = write_rdb("dup.rdb", &w.finish());
    let file = file.to_str().unwrap();
    let s = RedisServer::start();
    let (_, err, code) = import(file, &s.url(), &["--via", "full-sync"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("key \"dup\" (db 0): appears twice"), "{err}");
    untouched(&s);
    // auto falls back to commands, which report the second one as a conflict.
    let (r, err, code) = import(file, &s.url(), &[]);
    assert_eq!(r["via"], "commands", "{r} {err}");
    assert!(
        r["full_sync_declined"]
            .as_str()
            .unwrap()
            .contains("appears twice"),
        "{r}"
    );
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(
        r["conflicts"].as_u64().unwrap() + r["errors"].as_u64().unwrap(),
        1,
        "{r}"
    );
    // (Which of the two lands first is up to the connections they went by.)
    assert!(["first", "second"].contains(&s.cli(&["GET", "dup"]).as_str()));
    assert_eq!(s.cli(&["DBSIZE"]), "3");
}

#[test]
fn a_set_with_a_member_twice_never_reaches_the_loader() {
    // Plain encodings a loader rejects by stopping the server.
    let mut w = RdbWriter::new(9);
    w.select_db(0)
        .key(b"ok", None, &value::plain_list(2, &[b"a", b"b"]))
        .key(b"twice", None, &value::plain_list(2, &[b"a", b"b", b"a"]));
    let file = write_rdb("dupmember.rdb", &w.finish());
    let s = RedisServer::start();
    let (_, err, code) = import(file.to_str().unwrap(), &s.url(), &["--via", "full-sync"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("key \"twice\" (db 0): a member appears twice"),
        "{err}"
    );
    untouched(&s);
}

#[test]
fn values_a_loader_would_stop_on_never_reach_it() {
    // An old ziplist hash with a field twice (Redis 7.0 checks those deeply at load), and a
    // zipmap whose count byte is 255 (corpus: HDT3213 zipmap_big_len; Redis takes 254 only).
    let mut zipmap = value::hash_zipmap(&[(b"a", b"1"), (b"b", b"2")]);
    // bytes = blob length, then the zipmap: its first byte is the count.
    zipmap.bytes[1] = 255;
    for (name, v) in [
        ("twice", value::hash_ziplist(&[(b"f", b"1"), (b"f", b"2")])),
        ("zipmap", zipmap),
    ] {
        let mut w = RdbWriter::new(3);
        w.select_db(0)
            .key(b"ok", None, &value::string(b"1", false))
            .key(name.as_bytes(), None, &v);
        let file = write_rdb(&format!("{name}.rdb"), &w.finish());
        let s = RedisServer::start();
        let (_, err, code) = import(file.to_str().unwrap(), &s.url(), &["--via", "full-sync"]);
        assert_eq!(code, Some(1), "{name}");
        assert!(err.contains(&format!("key \"{name}\"")), "{err}");
        untouched(&s);
    }
}

#[test]
fn a_corrupt_value_never_reaches_the_loader() {
    // A ziplist whose header claims more bytes than it has, after a valid key.
    let mut bad = value::list_ziplist(&[b"x", b"y"]);
    // bytes = length prefix + ziplist; the ziplist's zlbytes field follows the length byte.
    bad.bytes[1] = bad.bytes[1].wrapping_add(7);
    let mut w = RdbWriter::new(9);
    w.select_db(0)
        .key(b"good", None, &value::string(b"ok", false))
        .key(b"broken", None, &bad);
    let file = write_rdb("corrupt.rdb", &w.finish());
    let file = file.to_str().unwrap();
    let s = RedisServer::start();
    let (_, err, code) = import(file, &s.url(), &["--via", "full-sync"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("key \"broken\""), "{err}");
    untouched(&s);
    // auto: commands, and the bad key is named; with --on-error skip the good one lands.
    let (r, err, code) = import(file, &s.url(), &["--on-error", "skip"]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(r["via"], "commands", "{r}");
    assert!(err.contains("broken"), "{err}");
    assert_eq!(s.cli(&["GET", "good"]), "ok");
    // Issue 9: a decode error names the file (it said "corrupt RDB at +0x..."), the byte
    // offset and the key.
    let t = RedisServer::start();
    let (_, err, code) = import(file, &t.url(), &["--mode", "rewrite", "--on-error", "skip"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("corrupt RDB at {file}+0x")) && err.contains("key \"broken\""),
        "{err}"
    );
}

#[test]
fn a_target_with_data_or_settings_it_needs_is_left_to_commands() {
    let dump = testdata("redis-7.0/all-types.rdb");
    // A key in a db the input does not even use: a full sync would flush it.
    let s = RedisServer::start();
    s.cli(&["-n", "9", "SET", "keep", "me"]);
    let (_, err, code) = import(&dump, &s.url(), &["--via", "full-sync"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("not empty"), "{err}");
    let (r, err, code) = import(&dump, &s.url(), &[]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(r["via"], "commands", "{r}");
    assert_eq!(s.cli(&["-n", "9", "GET", "keep"]), "me");

    // A function on the target would be dropped too.
    let s = RedisServer::start();
    s.cli(&[
        "FUNCTION",
        "LOAD",
        "#!lua name=mine\nredis.register_function('f', function() return 1 end)",
    ]);
    let (_, err, code) = import(&dump, &s.url(), &["--via", "full-sync"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("has functions"), "{err}");

    // A target that loads from the socket (swapdb) takes the sync too, and keeps its setting.
    let s = RedisServer::start_with(
        Path::new("redis-server"),
        &["--repl-diskless-load", "swapdb"],
    );
    let (r, err, code) = import(&dump, &s.url(), &["--via", "full-sync"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(r["via"], "full-sync");
    assert_listing(&s, "redis-7.0/all-types.rdb");
    assert!(
        s.cli(&["CONFIG", "GET", "repl-diskless-load"])
            .ends_with("swapdb")
    );

    // Explicit modes, a dry run, and AOF input take commands.
    let s = RedisServer::start();
    for extra in [&["--mode", "restore"][..], &["--dry-run"][..]] {
        let mut a = vec!["--via", "full-sync"];
        a.extend_from_slice(extra);
        let (_, err, code) = import(&dump, &s.url(), &a);
        assert_eq!(code, Some(1), "{extra:?}");
        assert!(err.contains("--via full-sync is ruled out"), "{err}");
    }
    let (_, err, code) = import(
        &testdata("redis-7.0/appendonlydir"),
        &s.url(),
        &["--via", "full-sync"],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("not an RDB file"), "{err}");
    untouched(&s);
}

#[test]
fn a_target_that_dies_during_the_sync_is_an_error() {
    let file = big_file("big-killed.rdb", 200_000, 400);
    let mut s = RedisServer::start();
    let mut run = spawn_sync(&file, &s);
    wait_replica(&s, &mut run);
    s.kill();
    let o = run.finish_within(Duration::from_secs(60));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{}", s.port())), "{err}");
}

/// Ctrl-C during the sync never leaves the target a replica of nobody.
#[test]
fn an_interrupted_sync_detaches_the_target() {
    let file = big_file("big-interrupted.rdb", 200_000, 400);
    let s = RedisServer::start();
    let mut run = spawn_sync(&file, &s);
    wait_replica(&s, &mut run);
    run.signal("INT");
    let o = run.finish_within(Duration::from_secs(60));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        s.cli(&["INFO", "replication"]).contains("role:master"),
        "{err}"
    );
    // Exit 130 (interrupted), the target detached and its settings back: either the stream
    // was abandoned (nothing written), or the load was already under way and was waited for
    // (everything there).
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    match s.cli(&["DBSIZE"]).as_str() {
        "0" => untouched(&s),
        n => assert_eq!(n, "200000"),
    }
    assert_eq!(s.cli(&["CONFIG", "GET", "masterauth"]), "masterauth\n");
}

fn spawn_sync(file: &Path, s: &RedisServer) -> Ferry {
    Ferry::spawn(&[
        "import",
        path_str(file),
        "--to",
        &s.url(),
        "-q",
        "--via",
        "full-sync",
    ])
}

/// Until the target is a replica of rdbferry.
fn wait_replica(s: &RedisServer, run: &mut Ferry) {
    run.wait_for(
        "the target became a replica",
        Duration::from_secs(20),
        || s.cli(&["INFO", "replication"]).contains("role:slave"),
    );
}
