//! `rdbferry sync` (issue 11) against real servers: a one-time copy of a live source (sent
//! from disk and diskless) equals it ([`assert_same_data`]); `--follow` while a client writes
//! during and after the snapshot (strings, counters, lists, hashes, streams, expiries,
//! deletes, MULTI, a script, a second db) ends with the source's digest; `kill -9` and
//! restarts from the checkpoint continue with `+CONTINUE` (the source's `sync_full` does not
//! move) and `--exactly-once` counters end exactly right; a link the source drops is
//! continued; a `--key` filter applies to the stream; a checkpoint the source can no longer
//! continue from is a clear error, or with `--resync-on-loss` a second full copy; a Cluster
//! target through kills, exactly once; 6.2 and 6.0 sources; a source restarted from its save
//! (continued); an ACL user and a wrong password; a renamed PSYNC, and both PSYNC and SYNC
//! renamed away (a clear error, or with `--via auto|scan` a copy by SCAN + DUMP, in several
//! dbs, at a `--scan-rate`, whose report says it is no snapshot); a Cluster source copied by
//! scan from every master (replicated: `tests/sync_cluster.rs`). Into an empty target the
//! snapshot goes by full sync (the target loads it as rdbferry's replica; the report says
//! so), and a non-empty one takes commands, saying why; a signal during the relay puts the
//! target back, and after a `kill -9` there `rdbferry recover` does.

mod support;

use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::ferry::{
    Ferry, assert_exit, config, conn, info_field, output_text, path_str, rdbferry, scrape,
};
use support::writes::{counting_writer, write_round};
use support::{RedisServer, Snapshot, TempDir, assert_same_data, testdata};

/// A hang guard, never a timing.
const GUARD: Duration = Duration::from_secs(120);

/// A source that starts its snapshot at once (`repl-diskless-sync-delay 0`), `extra` added.
fn source(extra: &[&str]) -> RedisServer {
    let mut args = vec!["--repl-diskless-sync-delay", "0"];
    args.extend_from_slice(extra);
    RedisServer::start_with(Path::new("redis-server"), &args)
}

/// `rdbferry sync --from SRC --to DST EXTRA...` to its end.
fn sync(src: &RedisServer, dst: &RedisServer, extra: &[&str]) -> Output {
    let (from, to) = (src.url(), dst.url());
    let mut args = vec!["sync", "--from", &from, "--to", &to];
    args.extend_from_slice(extra);
    rdbferry(&args)
}

/// A field of the source's `INFO stats`, as a number.
fn stat(s: &RedisServer, field: &str) -> u64 {
    info_field(&mut conn(s), "stats", field)
        .parse()
        .unwrap_or(0)
}

/// Wait until `target` holds what `source` holds (digest, then [`Snapshot`]: expiry times,
/// stream groups); the source must have stopped writing. A group's `entries-read` is left
/// out: Redis 7.0 propagates `XREADGROUP` as `XCLAIM ... LASTID`, which leaves it unknown on
/// a replica, a real one as rdbferry's target ([`Snapshot::without_group_reads`]).
fn wait_same(target: &RedisServer, source: &RedisServer, run: &mut Ferry) {
    let start = Instant::now();
    while target.digest() != source.digest() {
        assert!(!run.ended(), "sync ended: {}", run.stderr());
        if start.elapsed() > GUARD {
            let diff = Snapshot::of(source).diff(&Snapshot::of(target));
            panic!(
                "the target differs after {GUARD:?}: {:?}\n{}",
                &diff[..diff.len().min(10)],
                run.stderr()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let strip = |s: Snapshot| s.without_group_reads();
    strip(Snapshot::of(source)).assert_same(&strip(Snapshot::of(target)));
}

#[test]
fn a_one_time_sync_equals_the_source() {
    for (diskless, via) in [("no", "auto"), ("yes", "auto"), ("yes", "commands")] {
        let dir = TempDir::new("sync-src");
        std::fs::copy(
            testdata("redis-7.0/all-types.rdb"),
            dir.path().join("source.rdb"),
        )
        .unwrap();
        let d = path_str(dir.path());
        let src = source(&[
            "--dir",
            d,
            "--dbfilename",
            "source.rdb",
            "--repl-diskless-sync",
            diskless,
        ]);
        let dst = RedisServer::start();
        let spool = TempDir::new("sync-spool");
        let o = sync(
            &src,
            &dst,
            &["--spool", path_str(spool.path()), "--via", via, "-q"],
        );
        assert_exit(&o, 0);
        // Into an empty target, the snapshot is relayed as a full sync.
        let claimed = String::from_utf8_lossy(&o.stderr).contains("claiming");
        assert_eq!(claimed, via == "auto", "{}", output_text(&o));
        assert!(dst.cli(&["INFO", "replication"]).contains("role:master"));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains(&format!("rdbferry verify {}", src.url())),
            "{}",
            output_text(&o)
        );
        assert_same_data(&dst, &src);
        // The spooled copy is the whole RDB: `check` reads it to its checksum.
        let names = support::dir_names(spool.path());
        assert_eq!(names.len(), 1, "{names:?}");
        let spooled = spool.path().join(&names[0]);
        assert_exit(&rdbferry(&["check", path_str(&spooled)]), 0);
        // And the verify it suggests agrees.
        let v = rdbferry(&["verify", &src.url(), "--to", &dst.url()]);
        assert_exit(&v, 0);
    }
}

/// The JSON report of a run with `--json`.
fn report(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", output_text(o)))
}

#[test]
fn a_full_sync_is_reported_and_equal_and_a_non_empty_target_takes_commands() {
    let src = source(&[]);
    src.cli(&["DEBUG", "POPULATE", "20000", "k", "20"]);
    src.cli(&["SET", "ttl", "x", "EX", "1000"]);
    let dst = RedisServer::start();
    let o = sync(&src, &dst, &["--json", "-q"]);
    assert_exit(&o, 0);
    let r = report(&o);
    assert_eq!(r["snapshot"]["via"], "full-sync", "{r}");
    assert_eq!(r["snapshot"]["synced"], 20001, "{r}");
    assert_eq!(dst.digest(), src.digest());
    assert_eq!(config(&dst, "masterauth"), "");
    // Not empty: commands (--on-conflict replace lets the precheck pass), saying why.
    let full = RedisServer::start();
    full.cli(&["SET", "other", "1"]);
    let o = sync(&src, &full, &["--json", "-q", "--on-conflict", "replace"]);
    assert_exit(&o, 0);
    let r = report(&o);
    assert_eq!(r["snapshot"]["via"], "commands", "{r}");
    let why = r["snapshot"]["full_sync_declined"].as_str().unwrap_or("");
    assert!(why.contains("not empty"), "{r}");
    assert_eq!(full.cli(&["DBSIZE"]), "20002");
    // --via full-sync there: an error saying why, nothing copied.
    let o = sync(&src, &RedisServer::start(), &["--via", "full-sync", "-q"]);
    assert_exit(&o, 0);
    let o = sync(
        &src,
        &full,
        &["--via", "full-sync", "--on-conflict", "replace"],
    );
    assert_exit(&o, 1);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--via full-sync"),
        "{}",
        output_text(&o)
    );
}

/// A source whose snapshot takes about 20 s to stream (a save delay per key), and a `sync`
/// into an empty target caught in the middle of the relay.
fn relay_under_way(dst: &RedisServer, extra: &[&str]) -> (RedisServer, Ferry) {
    let src = source(&["--rdb-key-save-delay", "10000"]);
    src.cli(&["DEBUG", "POPULATE", "2000", "k", "10"]);
    let (from, to) = (src.url(), dst.url());
    // Not quiet: a run that ends before the relay says why (a declined full sync).
    let mut args = vec!["sync", "--from", &from, "--to", &to];
    args.extend_from_slice(extra);
    let mut run = Ferry::spawn(&args);
    let mut c = conn(dst);
    run.wait_for("the target loading the relay", GUARD, || {
        info_field(&mut c, "replication", "master_sync_in_progress") == "1"
    });
    (src, run)
}

/// The target as it was before the relay: a master, settings back, empty.
fn assert_put_back(dst: &RedisServer) {
    assert!(dst.cli(&["INFO", "replication"]).contains("role:master"));
    assert_eq!(config(dst, "masterauth"), "");
    assert_eq!(config(dst, "repl-diskless-load"), "disabled");
    assert_eq!(dst.cli(&["DBSIZE"]), "0");
}

#[test]
fn a_signal_or_kill_9_during_the_relay_leaves_the_target_put_back_or_recoverable() {
    let dst = RedisServer::start();
    let (_src, mut run) = relay_under_way(&dst, &[]);
    run.signal("INT");
    let o = run.finish_within(GUARD);
    assert_exit(&o, 130);
    assert_put_back(&dst);
    let (_src, mut run) = relay_under_way(&dst, &[]);
    run.signal("KILL");
    let _ = run.finish_within(GUARD);
    assert!(dst.cli(&["INFO", "replication"]).contains("role:slave"));
    let o = rdbferry(&["recover", "--to", &dst.url()]);
    assert_exit(&o, 0);
    assert_put_back(&dst);
}

#[test]
fn a_relay_the_source_cuts_is_put_back_and_taken_again_by_commands() {
    let dst = RedisServer::start();
    let (src, run) = relay_under_way(&dst, &["--json"]);
    // The next save is quick; the one under way is cut.
    src.cli(&["CONFIG", "SET", "rdb-key-save-delay", "0"]);
    src.cli(&["CLIENT", "KILL", "TYPE", "replica"]);
    let o = run.finish_within(GUARD);
    assert_exit(&o, 0);
    let r = report(&o);
    assert_eq!(r["snapshot"]["via"], "commands", "{r}");
    assert!(r["notes"].to_string().contains("abandoned"), "{r}");
    assert_eq!(dst.digest(), src.digest());
    assert!(dst.cli(&["INFO", "replication"]).contains("role:master"));
    assert_eq!(config(&dst, "masterauth"), "");
}

#[test]
fn a_target_that_is_not_empty_stops_before_the_snapshot() {
    let src = source(&[]);
    src.cli(&["SET", "a", "1"]);
    let dst = RedisServer::start();
    dst.cli(&["SET", "b", "2"]);
    let o = sync(&src, &dst, &[]);
    assert_exit(&o, 1);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("precheck failed"),
        "{}",
        output_text(&o)
    );
    assert_eq!(stat(&src, "sync_full"), 0, "the source saved for nothing");
}

/// Start `sync --follow` into `dst` with the checkpoint in `ck`, `extra` added.
fn follow(src: &RedisServer, dst: &RedisServer, ck: &Path, extra: &[&str]) -> Ferry {
    let (from, to) = (src.url(), dst.url());
    let ck = path_str(ck);
    let mut args = vec!["sync", "--from", &from, "--to", &to, "--follow"];
    args.extend_from_slice(&["--checkpoint", ck, "-q"]);
    args.extend_from_slice(extra);
    Ferry::spawn(&args)
}

#[test]
fn follow_with_writes_during_and_after_the_snapshot() {
    let src = source(&[]);
    src.cli(&["DEBUG", "POPULATE", "100000", "pre", "100"]);
    let dst = RedisServer::start();
    let dir = TempDir::new("sync-follow");
    let ck = dir.path().join("ck.json");
    let mut c = conn(&src);
    for i in 1..=100 {
        write_round(&mut c, i);
    }
    let metrics = format!("127.0.0.1:{}", support::free_port());
    let mut run = follow(&src, &dst, &ck, &["--metrics-addr", &metrics]);
    // During the snapshot, then after it (the checkpoint exists once it is applied).
    let mut i = 100;
    while !ck.exists() {
        i += 1;
        write_round(&mut c, i);
        assert!(!run.ended(), "{}", run.stderr());
        assert!(i < 1_000_000, "no checkpoint: {}", run.stderr());
    }
    for j in 1..=300 {
        write_round(&mut c, i + j);
    }
    src.cli(&["FLUSHDB"]);
    write_round(&mut c, 1); // the consumer group again
    for j in 1..=50 {
        write_round(&mut c, 2_000_000 + j);
    }
    wait_same(&dst, &src, &mut run);
    // Caught up, the checkpoint reaches the source's offset (PINGs included).
    let offset = |c: &mut redis::Connection| -> u64 {
        info_field(c, "replication", "master_repl_offset")
            .parse()
            .unwrap()
    };
    let checkpointed = || -> u64 {
        let cp: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&ck).unwrap()).unwrap_or_default();
        cp["pos"]["offset"].as_u64().unwrap_or(0)
    };
    let before = offset(&mut c);
    run.wait_for("the checkpoint to catch up", GUARD, || {
        checkpointed() >= before
    });
    run.wait_for("a lag of 0 in the metrics", GUARD, || {
        let m = scrape(&metrics).unwrap_or_default();
        m.contains("rdbferry_sync_lag_bytes 0\n") && !m.contains("rdbferry_sync_applied_total 0\n")
    });
    run.signal("TERM");
    let o = run.finish_within(GUARD);
    assert_exit(&o, 0);
    assert!(String::from_utf8_lossy(&o.stderr).contains("claiming"));
    assert!((before..=offset(&mut c)).contains(&checkpointed()));
    assert_eq!(stat(&src, "sync_full"), 1);
}

#[test]
fn kill_9_and_restarts_continue_and_count_exactly_once() {
    // A backlog that holds what the writer writes while rdbferry is down or behind.
    let src = source(&["--repl-backlog-size", "256mb"]);
    let dst = RedisServer::start();
    let dir = TempDir::new("sync-kill");
    let ck = dir.path().join("ck.json");
    let keys: Vec<String> = (0..5).map(|i| format!("counter:{i}")).collect();
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    std::thread::scope(|sc| {
        let w = counting_writer(sc, &src, &keys, &stop, &done);
        let mut seed = 0x9e37_79b9u64;
        for round in 0..6 {
            let partials = stat(&src, "sync_partial_ok");
            let mut run = follow(&src, &dst, &ck, &["--exactly-once"]);
            if round == 0 {
                // Killed only once the snapshot is applied (a snapshot cut short leaves a
                // target that is not empty and no checkpoint).
                run.wait_for("the first checkpoint", GUARD, || ck.exists());
            } else {
                // Killed only once it continued: on a loaded machine the start alone can
                // outlast the sleep below, and a run killed before its PSYNC proves nothing.
                run.wait_for("the continue", GUARD, || {
                    stat(&src, "sync_partial_ok") > partials
                });
            }
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            std::thread::sleep(Duration::from_millis(150 + (seed >> 33) % 400));
            run.signal("KILL");
            let _ = run.finish_within(GUARD);
        }
        stop.store(true, Ordering::Relaxed);
        w.join().unwrap();
    });
    assert!(done.load(Ordering::Relaxed) > 0);
    // Caught up once, without --follow: it stops when nothing more comes.
    let o = sync(
        &src,
        &dst,
        &["--checkpoint", path_str(&ck), "--exactly-once", "--json"],
    );
    assert_exit(&o, 0);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["stopped"], "caught-up", "{r}");
    assert_eq!(r["full_syncs"], 0, "{r}");
    for k in &keys {
        assert_eq!(dst.cli(&["GET", k]), src.cli(&["GET", k]), "{k}");
    }
    assert_eq!(stat(&src, "sync_full"), 1, "a second full copy was taken");
    assert!(stat(&src, "sync_partial_ok") >= 6);
}

#[test]
fn follow_a_6_2_and_a_6_0_source() {
    for v in ["6.2", "6.0"] {
        let Some(bin) = support::require_old_server(v) else {
            return;
        };
        let src = RedisServer::start_with(&bin, &["--repl-diskless-sync-delay", "0"]);
        let dst = RedisServer::start();
        let dir = TempDir::new("sync-old");
        let ck = dir.path().join("ck.json");
        let mut c = conn(&src);
        for i in 1..=100 {
            write_round(&mut c, i);
        }
        let mut run = follow(&src, &dst, &ck, &[]);
        run.wait_for("the first checkpoint", GUARD, || ck.exists());
        for i in 101..=300 {
            write_round(&mut c, i);
        }
        wait_same(&dst, &src, &mut run);
        run.signal("TERM");
        assert_exit(&run.finish_within(GUARD), 0);
        // A restart continues.
        write_round(&mut c, 301);
        let o = sync(&src, &dst, &["--checkpoint", path_str(&ck), "--json"]);
        assert_exit(&o, 0);
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            (r["continues"].as_u64(), r["full_syncs"].as_u64()),
            (Some(1), Some(0)),
            "{v}: {r}"
        );
        assert_eq!(
            dst.cli(&["GET", "counter"]),
            src.cli(&["GET", "counter"]),
            "{v}"
        );
    }
}

#[test]
fn a_link_the_source_drops_is_continued() {
    let src = source(&[]);
    let dst = RedisServer::start();
    let dir = TempDir::new("sync-drop");
    let ck = dir.path().join("ck.json");
    let mut run = follow(&src, &dst, &ck, &[]);
    run.wait_for("the first checkpoint", GUARD, || ck.exists());
    let mut c = conn(&src);
    for round in 0..3u64 {
        for i in 1..=100 {
            write_round(&mut c, round * 1000 + i);
        }
        src.cli(&["CLIENT", "KILL", "TYPE", "replica"]);
    }
    wait_same(&dst, &src, &mut run);
    run.signal("TERM");
    let o = run.finish_within(GUARD);
    assert_exit(&o, 0);
    assert_eq!(stat(&src, "sync_full"), 1, "{}", output_text(&o));
}

#[test]
fn a_source_restarted_from_its_save_is_continued() {
    let mut src = source(&[]);
    let dst = RedisServer::start();
    let dir = TempDir::new("sync-restart");
    let ck = dir.path().join("ck.json");
    let mut run = follow(&src, &dst, &ck, &[]);
    run.wait_for("the first checkpoint", GUARD, || ck.exists());
    let mut c = conn(&src);
    for i in 1..=100 {
        write_round(&mut c, i);
    }
    // The save holds the replication id and offset: Redis 7 takes PSYNC after a restart.
    src.cli(&["SAVE"]);
    src.kill_and_restart(Duration::from_millis(500));
    let mut c = conn(&src);
    for i in 101..=200 {
        write_round(&mut c, i);
    }
    wait_same(&dst, &src, &mut run);
    run.signal("TERM");
    let o = run.finish_within(GUARD);
    assert_exit(&o, 0);
    assert_eq!(stat(&src, "sync_full"), 0, "{}", output_text(&o));
    assert_eq!(stat(&src, "sync_partial_ok"), 1, "{}", output_text(&o));
}

#[test]
fn a_key_filter_applies_to_the_stream() {
    let src = source(&[]);
    src.cli(&["SET", "keep:0", "x"]);
    src.cli(&["SET", "drop:0", "x"]);
    let dst = RedisServer::start();
    let dir = TempDir::new("sync-filter");
    let ck = dir.path().join("ck.json");
    let mut run = follow(&src, &dst, &ck, &["--key", "keep:*"]);
    run.wait_for("the first checkpoint", GUARD, || ck.exists());
    for i in 1..=50 {
        let n = i.to_string();
        src.cli(&["SET", &format!("keep:{i}"), &n]);
        src.cli(&["SET", &format!("drop:{i}"), &n]);
        src.cli(&["RPUSH", "keep:list", &n]);
        src.cli(&["DEL", "keep:0", "drop:0"]);
    }
    src.cli(&["SET", "keep:last", "end"]);
    run.wait_for("the last key", GUARD, || {
        dst.cli(&["GET", "keep:last"]) == "end"
    });
    run.signal("TERM");
    let o = run.finish_within(GUARD);
    assert_exit(&o, 0);
    let mut c = conn(&dst);
    let mut got = support::scan_keys(&mut c);
    got.sort();
    let mut want: Vec<Vec<u8>> = (1..=50).map(|i| format!("keep:{i}").into_bytes()).collect();
    want.push(b"keep:last".to_vec());
    want.push(b"keep:list".to_vec());
    want.sort();
    assert_eq!(got, want);
    assert_eq!(dst.cli(&["LLEN", "keep:list"]), "50");
}

#[test]
fn a_checkpoint_the_source_cannot_continue_is_an_error() {
    let src = source(&[]);
    let dst = RedisServer::start();
    let dir = TempDir::new("sync-lost");
    let ck = dir.path().join("ck.json");
    // The source's own replication id, at an offset it never reached.
    let replid = info_field(&mut conn(&src), "replication", "master_replid");
    let cp = serde_json::json!({
        "source": format!("127.0.0.1:{}", src.port()),
        "order": 7,
        "pos": { "replid": replid, "offset": 999_999_999u64, "db": 0 },
    });
    std::fs::write(&ck, cp.to_string()).unwrap();
    let o = sync(&src, &dst, &["--follow", "--checkpoint", path_str(&ck)]);
    assert_exit(&o, 1);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot continue") && err.contains("--resync-on-loss"),
        "{}",
        output_text(&o)
    );
    // With --resync-on-loss: a full copy over what the target holds, then the stream.
    src.cli(&["SET", "a", "1"]);
    dst.cli(&["SET", "a", "stale"]);
    let mut run = follow(&src, &dst, &ck, &["--resync-on-loss"]);
    run.wait_for("the copy", GUARD, || dst.cli(&["GET", "a"]) == "1");
    src.cli(&["SET", "b", "2"]);
    wait_same(&dst, &src, &mut run);
    run.signal("TERM");
    let o = run.finish_within(GUARD);
    assert_exit(&o, 0);
    assert_eq!(stat(&src, "sync_full"), 2, "{}", output_text(&o));
}

#[test]
fn into_a_cluster_exactly_once_through_kills() {
    let src = source(&["--repl-backlog-size", "256mb"]);
    let dst = support::RedisCluster::start(3);
    let dir = TempDir::new("sync-cluster");
    let ck = dir.path().join("ck.json");
    for i in 0..200 {
        src.cli(&["SET", &format!("pre:{i}"), &i.to_string()]);
    }
    let (from, to) = (src.url(), dst.seed_url());
    let ckp = path_str(&ck);
    let args = [
        "sync",
        "--from",
        &from,
        "--to",
        &to,
        "--follow",
        "--checkpoint",
        ckp,
        "--exactly-once",
        "-q",
    ];
    let keys: Vec<String> = (0..8).map(|i| format!("counter:{i}")).collect();
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    std::thread::scope(|sc| {
        let w = counting_writer(sc, &src, &keys, &stop, &done);
        for round in 0..4u64 {
            let mut run = Ferry::spawn(&args);
            if round == 0 {
                run.wait_for("the first checkpoint", GUARD, || ck.exists());
            }
            std::thread::sleep(Duration::from_millis(200 + 97 * round));
            run.signal("KILL");
            let _ = run.finish_within(GUARD);
        }
        stop.store(true, Ordering::Relaxed);
        w.join().unwrap();
    });
    let mut catch_up = args[..args.len() - 1].to_vec();
    catch_up.retain(|a| *a != "--follow");
    assert_exit(&rdbferry(&catch_up), 0);
    let got = |k: &str| {
        let slot = dst.key_slot(k);
        dst.cli_on(dst.owner(slot), &["GET", k])
    };
    for k in &keys {
        assert_eq!(got(k), src.cli(&["GET", k]), "{k}");
    }
    assert_eq!(got("pre:7"), "7");
    assert_eq!(stat(&src, "sync_full"), 1);
}

#[test]
fn a_renamed_psync() {
    let src = source(&["--rename-command", "PSYNC", "FERRYSYNC"]);
    src.cli(&["SET", "k", "v"]);
    let dst = RedisServer::start();
    // Without its name: the unknown PSYNC falls back to SYNC.
    let o = sync(&src, &dst, &["-q"]);
    assert_exit(&o, 0);
    assert_eq!(dst.cli(&["GET", "k"]), "v");
    let other = RedisServer::start();
    let o = sync(&src, &other, &["--psync-command", "FERRYSYNC", "-q"]);
    assert_exit(&o, 0);
    assert_eq!(other.cli(&["GET", "k"]), "v");
    // Both renamed away, as managed services do: an error that says so, nothing written
    // (with --via commands; --via auto copies it by scan: below).
    let closed = source(&support::NO_REPLICATION);
    let empty = RedisServer::start();
    let o = sync(&closed, &empty, &["--via", "commands"]);
    assert_exit(&o, 1);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--psync-command"), "{}", output_text(&o));
    assert_eq!(empty.cli(&["DBSIZE"]), "0");
}

#[test]
fn a_source_that_refuses_replication_is_copied_by_scan() {
    let src = source(&support::NO_REPLICATION);
    let mut c = conn(&src);
    for i in 1..=100 {
        write_round(&mut c, i);
    }
    src.cli(&["DEBUG", "POPULATE", "5000", "k", "10"]);
    let lib = "#!lua name=scanlib\nredis.register_function('scanned', function() return 7 end)";
    src.cli(&["FUNCTION", "LOAD", lib]);
    for db in ["1", "2", "5"] {
        let mut c = conn(&src);
        let _: () = redis::cmd("SELECT").arg(db).query(&mut c).unwrap();
        write_round(&mut c, 1);
    }
    // --via scan, at a rate.
    let dst = RedisServer::start();
    let o = sync(
        &src,
        &dst,
        &["--via", "scan", "--scan-rate", "20000", "--json", "-q"],
    );
    assert_exit(&o, 0);
    let r = report(&o);
    assert_eq!(r["stopped"], "scan", "{r}");
    let keys = |s: &RedisServer| -> u64 {
        let ks = s.cli(&["INFO", "keyspace"]);
        ks.lines()
            .filter_map(|l| {
                l.split_once("keys=")?
                    .1
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    assert_eq!(r["scan"]["keys"].as_u64(), Some(keys(&src)), "{r}");
    assert_eq!(r["scan"]["vanished"], 0, "{r}");
    assert!(
        r["scan"]["warning"]
            .as_str()
            .unwrap()
            .contains("no snapshot")
    );
    assert_eq!(r["scan"]["dbs"], serde_json::json!([0, 1, 2, 5]), "{r}");
    assert_same_data(&dst, &src);
    // Function libraries too (no key: FUNCTION DUMP).
    assert_eq!(r["scan"]["functions"], 1, "{r}");
    assert_eq!(dst.cli(&["FCALL", "scanned", "0"]), "7");
    // --via auto falls back to it and says so.
    let dst = RedisServer::start();
    let o = sync(&src, &dst, &[]);
    assert_exit(&o, 0);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("refuses replication") && err.contains("no snapshot"),
        "{}",
        output_text(&o)
    );
    assert_same_data(&dst, &src);
    // A scan has nothing to follow.
    let o = sync(&src, &RedisServer::start(), &["--via", "scan", "--follow"]);
    assert_exit(&o, 2);
}

#[test]
fn a_cluster_source_is_copied_by_scan_from_every_master() {
    let src = support::RedisCluster::start(3);
    // A hash tag per master, of a slot it serves: its keys are its own.
    let mut tags = Vec::new();
    for i in 0..3 {
        let tag = (0..)
            .map(|t| format!("{{t{t}}}"))
            .find(|t| src.owner(src.key_slot(t)) == i)
            .unwrap();
        src.cli_on(i, &["DEBUG", "POPULATE", "1000", &tag, "10"]);
        tags.push(tag);
    }
    let dst = RedisServer::start();
    let from = src.seed_url();
    let o = rdbferry(&[
        "sync",
        "--from",
        &from,
        "--to",
        &dst.url(),
        "--via",
        "scan",
        "--json",
        "-q",
    ]);
    assert_exit(&o, 0);
    let r = report(&o);
    assert_eq!(r["scan"]["masters"], 3, "{r}");
    assert_eq!(r["scan"]["keys"], 3000, "{r}");
    assert_eq!(dst.cli(&["DBSIZE"]), "3000");
    for (i, tag) in tags.iter().enumerate() {
        let k = format!("{tag}:999");
        assert_eq!(dst.cli(&["GET", &k]), src.cli_on(i, &["GET", &k]), "{k}");
    }
}

#[test]
fn a_source_with_an_acl_user() {
    let src = source(&[]);
    src.cli(&["ACL", "SETUSER", "ferry", "on", ">s3cret", "+@all", "~*"]);
    src.cli(&["SET", "k", "v"]);
    let dst = RedisServer::start();
    let from = format!("redis://ferry:s3cret@127.0.0.1:{}/", src.port());
    let o = rdbferry(&["sync", "--from", &from, "--to", &dst.url()]);
    assert_exit(&o, 0);
    let out = output_text(&o);
    assert!(!out.contains("s3cret"), "{out}");
    assert_eq!(dst.cli(&["GET", "k"]), "v");
    let bad = format!("redis://ferry:wrong@127.0.0.1:{}/", src.port());
    let empty = RedisServer::start();
    let o = rdbferry(&["sync", "--from", &bad, "--to", &empty.url()]);
    assert_exit(&o, 1);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("authentication failed"), "{}", output_text(&o));
    assert_eq!(empty.cli(&["DBSIZE"]), "0");
}
