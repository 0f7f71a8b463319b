//! Issue 8: SIGTERM in the middle of each long phase (the precheck's scan of the input, the
//! full sync's transfer, the target's load, an import by commands, verify by commands and
//! verify's snapshot). Each run exits 130 soon after the signal (a hang guard, no timing
//! assertion), the target is a master with its settings as before, and a full sync leaves it
//! empty or completely loaded. Each phase is found by watching what the run does (the
//! commands a proxy relays, what the target reports), not by sleeping.

mod support;

use std::time::Duration;

use support::RedisServer;
use support::fake::{FakeServer, Hostile, Script};
use support::ferry::{Ferry, big, big_digest, config, conn, info_field, loaded, path_str};

/// How long a phase may take to come, and a run to end after its signal, before the test
/// calls it a hang.
const GUARD: Duration = Duration::from_secs(60);

/// A proxy in front of `s` that only relays (and lists the commands it saw).
fn watcher(s: &RedisServer) -> FakeServer {
    FakeServer::start(Script::Proxy {
        upstream: s.port(),
        on: "NO SUCH COMMAND",
        then: Hostile::Stall,
        sticky: false,
    })
}

/// `rdbferry JOB BIG --to TO -q --via VIA`, running.
fn on_big(job: &str, to: &str, via: &str) -> Ferry {
    Ferry::spawn(&[job, path_str(big()), "--to", to, "-q", "--via", via])
}

/// SIGTERM, then the run must end with 130 and say it was interrupted.
fn interrupt(mut run: Ferry) -> String {
    run.signal("TERM");
    let o = run.finish_within(GUARD);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    err
}

/// The settings rdbferry may change, as they are now.
fn settings(s: &RedisServer) -> Vec<String> {
    [
        "masterauth",
        "repl-diskless-load",
        "repl-diskless-sync-delay",
        "rdbcompression",
    ]
    .iter()
    .map(|n| format!("{n}={}", config(s, n)))
    .collect()
}

/// A master with the settings it had before.
fn put_back(s: &RedisServer, before: &[String], err: &str) {
    assert!(
        s.cli(&["INFO", "replication"]).contains("role:master"),
        "{err}"
    );
    assert_eq!(settings(s), before, "{err}");
}

/// The scan of the input, before the target is touched: nothing more is sent to it.
#[test]
fn sigterm_in_the_precheck_scan() {
    let s = RedisServer::start();
    let before = settings(&s);
    let proxy = watcher(&s);
    let mut run = on_big("import", &proxy.url(), "auto");
    // The target's facts come before the scan, MODULE LIST after it.
    run.wait_for("the scan", GUARD, || {
        proxy.seen().iter().filter(|c| *c == "CONFIG GET").count() == 2
    });
    let err = interrupt(run);
    let seen = proxy.seen();
    assert!(!seen.iter().any(|c| c == "MODULE"), "{seen:?}");
    put_back(&s, &before, &err);
    assert_eq!(s.cli(&["DBSIZE"]), "0");
}

/// The full sync, interrupted early in the transfer and late in the target's load: detached,
/// settings back (an original masterauth too), and empty or complete.
#[test]
fn sigterm_in_the_full_sync_transfer_and_load() {
    for (phase, bytes) in [("transfer", 2u64 << 20), ("load", 60 << 20)] {
        let s = RedisServer::start();
        s.cli(&["CONFIG", "SET", "masterauth", "orig-secret"]);
        let before = settings(&s);
        let mut run = on_big("import", &s.url(), "full-sync");
        let mut c = conn(&s);
        run.wait_for(phase, GUARD, || {
            let n = info_field(&mut c, "persistence", "loading_loaded_bytes");
            n.parse::<u64>().is_ok_and(|n| n > bytes)
        });
        let err = interrupt(run);
        put_back(&s, &before, &err);
        match s.cli(&["DBSIZE"]).as_str() {
            "0" => {}
            _ => assert_eq!(s.digest(), big_digest(), "{phase}: {err}"),
        }
    }
}

/// An import by commands: stopped, nothing changed on the target but the keys written.
#[test]
fn sigterm_in_an_import_by_commands() {
    let s = RedisServer::start();
    let before = settings(&s);
    let mut run = on_big("import", &s.url(), "commands");
    let mut c = conn(&s);
    run.wait_for("keys written", GUARD, || {
        let n: u64 = redis::cmd("DBSIZE").query(&mut c).unwrap_or(0);
        n > 20_000
    });
    let err = interrupt(run);
    put_back(&s, &before, &err);
    let n: u64 = s.cli(&["DBSIZE"]).parse().unwrap();
    assert!(n < 200_000, "{n} keys: the import was not stopped");
}

/// Verify key by key (through a proxy that shows the reads under way).
#[test]
fn sigterm_in_verify_by_commands() {
    let s = loaded(big());
    let before = settings(&s);
    let proxy = watcher(&s);
    let mut run = on_big("verify", &proxy.url(), "commands");
    run.wait_for("keys read", GUARD, || proxy.seen().len() > 2000);
    let err = interrupt(run);
    put_back(&s, &before, &err);
}

/// Verify's snapshot, which changes `rdbcompression` (and `repl-diskless-sync-delay` for a
/// diskless one) while the target saves: interrupted while the target streams a slow
/// diskless snapshot, and while it saves to disk first (sending only keep-alive newlines);
/// the run stops and both are back.
#[test]
fn sigterm_in_verify_snapshot() {
    for diskless in ["yes", "no"] {
        let s = loaded(big());
        s.cli(&["CONFIG", "SET", "repl-diskless-sync", diskless]);
        // A save of 20 s: the signal always finds it under way.
        s.cli(&["CONFIG", "SET", "rdb-key-save-delay", "100"]);
        let before = settings(&s);
        let mut run = on_big("verify", &s.url(), "snapshot");
        let mut c = conn(&s);
        run.wait_for("the snapshot", GUARD, || {
            info_field(&mut c, "replication", "connected_slaves") == "1"
        });
        let err = interrupt(run);
        put_back(&s, &before, &err);
    }
}
