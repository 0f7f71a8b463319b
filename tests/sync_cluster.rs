//! `rdbferry sync` from a 3-master Redis Cluster (issue 11): every master is synced, each
//! with its own checkpoint, into a standalone target; the copy equals the Cluster key for key,
//! `--follow` applies writes to every master, and a restart continues every master with
//! `+CONTINUE` (no master's `sync_full` moves).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::ferry::{Ferry, assert_exit, output_text, path_str, rdbferry};
use support::{RedisCluster, RedisServer, Snapshot, TempDir, testdata};

/// A hang guard, never a timing.
const GUARD: Duration = Duration::from_secs(120);

/// The testdata dumps hold keys in dbs 0, 1 and 5: a Cluster has db 0 only.
const DB_MAP: [&str; 4] = ["--db-map", "1=0", "--db-map", "5=0"];

/// A 3-master Cluster holding the 7.0 testdata dump, in every master's slots.
fn source() -> RedisCluster {
    let src = RedisCluster::start(3);
    let dump = testdata("redis-7.0/all-types.rdb");
    let mut args = vec!["import", &dump, "--to"];
    let seed = src.seed_url();
    args.extend_from_slice(&[&seed, "-q"]);
    args.extend_from_slice(&DB_MAP);
    assert_exit(&rdbferry(&args), 0);
    for i in 0..3 {
        let n: u64 = src.cli_on(i, &["DBSIZE"]).parse().unwrap();
        assert!(n > 0, "master {i} holds no key");
    }
    src
}

/// `INCRBY` of `n` counters on the masters that serve them.
fn write_counters(src: &RedisCluster, n: usize, by: u64) {
    for i in 0..n {
        let key = format!("counter:{i}");
        let node = src.owner(src.key_slot(&key));
        src.cli_on(node, &["INCRBY", &key, &by.to_string()]);
    }
}

/// `sync_full` of every master (the full copies each served).
fn full_syncs(src: &RedisCluster) -> Vec<u64> {
    (0..3)
        .map(|i| {
            let info = src.cli_on(i, &["INFO", "stats"]);
            info.lines()
                .find_map(|l| l.strip_prefix("sync_full:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        })
        .collect()
}

/// Wait until `target()` holds what the Cluster `src` holds, key for key.
fn wait_same(src: &RedisCluster, target: impl Fn() -> Snapshot, run: &mut Ferry) {
    let start = Instant::now();
    loop {
        let (want, got) = (Snapshot::of_cluster(src), target());
        if want.diff(&got).is_empty() {
            return;
        }
        assert!(!run.ended(), "sync ended: {}", run.stderr());
        if start.elapsed() > GUARD {
            want.assert_same(&got);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `sync --from SRC --to TO --follow --checkpoint CK -q EXTRA...`, running.
fn follow(src: &RedisCluster, to: &str, ck: &Path, extra: &[&str]) -> Ferry {
    let from = src.seed_url();
    let mut args = vec!["sync", "--from", &from, "--to", to, "--follow"];
    args.extend_from_slice(&["--checkpoint", path_str(ck), "-q"]);
    args.extend_from_slice(extra);
    Ferry::spawn(&args)
}

#[test]
fn a_cluster_source_every_master_copied_then_followed_and_continued() {
    let src = source();
    // One time: every master's snapshot, the sum equal to the Cluster.
    let dst = RedisServer::start();
    let (from, to) = (src.seed_url(), dst.url());
    let o = rdbferry(&["sync", "--from", &from, "--to", &to, "--json", "-q"]);
    assert_exit(&o, 0);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["full_syncs"], 3, "{}", output_text(&o));
    assert_eq!(r["masters"].as_array().map(Vec::len), Some(3), "{r}");
    Snapshot::of_cluster(&src).assert_same(&Snapshot::with_values(&dst));

    // Following: writes on every master during the run, a stop, writes while stopped, and
    // a restart that continues each master from its own checkpoint.
    let dst = RedisServer::start();
    let dir = TempDir::new("sync-cluster");
    let ck = dir.path().join("ck.json");
    let mut run = follow(&src, &dst.url(), &ck, &["--json"]);
    write_counters(&src, 30, 5);
    wait_same(&src, || Snapshot::with_values(&dst), &mut run);
    let before = full_syncs(&src);
    run.signal("TERM");
    let o = run.finish_within(GUARD);
    assert_exit(&o, 0);
    let files = support::dir_names(dir.path());
    assert_eq!(files.len(), 3, "one checkpoint per master: {files:?}");
    assert!(
        files.iter().all(|f| f.starts_with("ck.json.slots-")),
        "{files:?}"
    );

    write_counters(&src, 30, 7);
    let mut run = follow(&src, &dst.url(), &ck, &["--json"]);
    write_counters(&src, 30, 11);
    wait_same(&src, || Snapshot::with_values(&dst), &mut run);
    run.signal("TERM");
    let o = run.finish_within(GUARD);
    assert_exit(&o, 0);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["continues"], 3, "{}", output_text(&o));
    assert_eq!(r["full_syncs"], 0, "{}", output_text(&o));
    assert_eq!(
        full_syncs(&src),
        before,
        "a master served a second full copy"
    );
    assert_eq!(dst.cli(&["GET", "counter:0"]), "23");
}

#[test]
fn a_cluster_source_into_a_cluster_target_following_exactly_once() {
    let src = source();
    let dst = RedisCluster::start(3);
    let dir = TempDir::new("sync-cluster-cluster");
    let ck = dir.path().join("ck.json");
    let mut run = follow(&src, &dst.seed_url(), &ck, &["--exactly-once"]);
    write_counters(&src, 30, 3);
    // The target also holds the checkpoint keys, per master and slot written.
    let data = || {
        Snapshot::of_cluster(&dst)
            .without_keys(|k| k.windows(19).any(|w| w == b"rdbferry:checkpoint"))
    };
    wait_same(&src, data, &mut run);
    run.signal("TERM");
    assert_exit(&run.finish_within(GUARD), 0);
}
