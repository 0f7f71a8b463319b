//! The full sync against what can happen around it (issue 8, 2, 3 and 11): a stranger that
//! races the target to rdbferry's listener, `kill -9` in each phase and `rdbferry recover`
//! after it, and the precheck deciding as the run does.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::fake::{FakeServer, Hostile, Script};
use support::ferry::{
    Ferry, big, big_digest, config, conn, info_field, loaded, path_str, rdbferry,
};
use support::{RedisServer, expect_digest, testdata};

/// How long a phase or a run may take before the test calls it a hang.
const GUARD: Duration = Duration::from_secs(60);

fn full_sync(to: &str, extra: &[&str]) -> Ferry {
    let mut args = vec![
        "import",
        path_str(big()),
        "--to",
        to,
        "-q",
        "--via",
        "full-sync",
    ];
    args.extend_from_slice(extra);
    Ferry::spawn(&args)
}

/// The ports `pid` listens on (TCP, from `/proc`).
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address, ..., st (0A: LISTEN), ..., inode
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                let port = f[1].rsplit(':').next().unwrap_or_default();
                ports.extend(u16::from_str_radix(port, 16).ok());
            }
        }
    }
    ports
}

/// Everything `s` sends until it closes, or until nothing came for `quiet`.
fn drain(mut s: TcpStream, quiet: Duration) -> Vec<u8> {
    s.set_read_timeout(Some(quiet)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// Issue 8, 2: strangers reach rdbferry's listener before the target (its `REPLICAOF` is
/// held by a proxy on the control link until they are connected): one speaks the replica
/// handshake with a wrong secret, one says nothing. Neither gets a byte, and the import
/// completes.
#[test]
fn issue8_a_stranger_first_at_the_listener_gets_nothing() {
    let s = RedisServer::start();
    let fake = FakeServer::start(Script::Proxy {
        upstream: s.port(),
        on: "REPLICAOF",
        then: Hostile::Hold,
        sticky: false,
    });
    let mut run = full_sync(&fake.url(), &[]);
    run.wait_for("REPLICAOF", GUARD, || fake.triggered());
    let ports = listening_ports(run.pid());
    assert_eq!(ports.len(), 1, "{ports:?}");
    let port = ports[0];
    let mut speaker = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    speaker
        .write_all(
            b"*2\r\n$4\r\nAUTH\r\n$1\r\nx\r\n*3\r\n$8\r\nREPLCONF\r\n$4\r\ncapa\r\n$3\r\neof\r\n\
              *3\r\n$5\r\nPSYNC\r\n$1\r\n?\r\n$2\r\n-1\r\n",
        )
        .unwrap();
    fake.release();
    let speaker = std::thread::spawn(move || drain(speaker, GUARD));
    let silent = std::thread::spawn(move || drain(silent, Duration::from_secs(2)));
    let o = run.finish_within(GUARD);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let got = speaker.join().unwrap();
    assert!(
        got.is_empty(),
        "the stranger got {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(silent.join().unwrap().is_empty());
    assert_eq!(s.digest(), big_digest());
    assert!(s.cli(&["INFO", "replication"]).contains("role:master"));
}

/// What is left on a target after `kill -9`: a replica of a listener that is gone, which the
/// precheck refuses (naming `rdbferry recover`), and which `recover` puts back.
fn assert_stranded_then_recover(s: &RedisServer, masterauth: &str) {
    assert!(s.cli(&["INFO", "replication"]).contains("role:slave"));
    let o = rdbferry(&[
        "import",
        &testdata("redis-7.0/all-types.rdb"),
        "--to",
        &s.url(),
        "--precheck",
        "--json",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let row = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["check"] == "rdbferry")
        .unwrap_or_else(|| panic!("no rdbferry row: {out}"));
    assert_eq!(row["status"], "fail", "{row}");
    assert!(
        row["detail"].as_str().unwrap().contains("rdbferry recover"),
        "{row}"
    );
    let o = rdbferry(&["recover", "--to", &s.url()]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("REPLICAOF NO ONE"), "{out}");
    assert!(s.cli(&["INFO", "replication"]).contains("role:master"));
    assert_eq!(config(s, "masterauth"), masterauth);
    assert_eq!(config(s, "repl-diskless-load"), "disabled");
}

/// After `recover`, a target that holds nothing takes a normal import (by full sync).
fn import_works(s: &RedisServer) {
    let dump = "redis-7.0/all-types.rdb";
    let o = rdbferry(&["import", &testdata(dump), "--to", &s.url(), "-q", "--json"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("\"via\":\"full-sync\""), "{out}");
    assert_eq!(s.digest(), expect_digest(dump));
}

/// Issue 8, 3: `kill -9` once the target is claimed (a replica, before any data), and during
/// the transfer; each time the target is stranded, refused by the precheck, put back by
/// `recover` (an original masterauth included), empty, and takes an import again.
#[test]
fn issue8_kill_9_while_claimed_or_transferring_then_recover() {
    for phase in ["claimed", "transfer"] {
        let s = RedisServer::start();
        let masterauth = if phase == "claimed" {
            "orig-secret"
        } else {
            ""
        };
        s.cli(&["CONFIG", "SET", "masterauth", masterauth]);
        let mut run = full_sync(&s.url(), &[]);
        let mut c = conn(&s);
        if phase == "claimed" {
            // Stopped at once: the target is a replica that got nothing yet.
            run.wait_for("role:slave", GUARD, || {
                info_field(&mut c, "replication", "role") == "slave"
            });
            run.signal("STOP");
        } else {
            run.wait_for("a transfer under way", GUARD, || {
                let read = info_field(&mut c, "persistence", "loading_loaded_bytes");
                read.parse::<u64>().is_ok_and(|n| n > 4 << 20)
            });
        }
        run.signal("KILL");
        let o = run.finish_within(GUARD);
        assert_eq!(o.status.code(), None, "{phase}: killed by a signal");
        assert!(String::from_utf8_lossy(&o.stderr).contains("claiming"));
        assert_stranded_then_recover(&s, masterauth);
        assert_eq!(s.cli(&["DBSIZE"]), "0", "{phase}");
        if phase == "claimed" {
            // A second recover finds nothing more.
            let o = rdbferry(&["recover", "--to", &s.url()]);
            let out = String::from_utf8_lossy(&o.stdout);
            assert_eq!(o.status.code(), Some(0));
            assert!(out.contains("nothing of rdbferry's to put back"), "{out}");
        }
        import_works(&s);
    }
}

/// A full sync into `s` whose target has loaded everything, and that rdbferry (blocked on a
/// control link that stalls) has not detached yet: the proxy, the run, and a connection.
fn loaded_not_detached(s: &RedisServer) -> (FakeServer, Ferry, redis::Connection) {
    let fake = FakeServer::start(Script::Proxy {
        upstream: s.port(),
        on: "REPLICAOF>INFO",
        then: Hostile::Stall,
        sticky: true,
    });
    let mut run = full_sync(&fake.url(), &["--timeout", "60"]);
    let mut c = conn(s);
    run.wait_for("the load done", GUARD, || {
        info_field(&mut c, "replication", "master_link_status") == "up"
    });
    (fake, run, c)
}

/// Issue 8, 3: the target has loaded everything and rdbferry, blocked on a control link that
/// stalls, has not detached it yet: `recover` refuses (the sync is still running) unless
/// `--force`; after `kill -9` it puts the target back with all the data.
#[test]
fn issue8_kill_9_after_the_load_then_recover() {
    let s = RedisServer::start();
    let (_fake, mut run, mut c) = loaded_not_detached(&s);
    let o = rdbferry(&["recover", "--to", &s.url()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("still running") && err.contains("--force"),
        "{err}"
    );
    assert!(s.cli(&["INFO", "replication"]).contains("role:slave"));
    run.signal("KILL");
    run.finish_within(GUARD);
    let start = Instant::now();
    while info_field(&mut c, "replication", "master_link_status") == "up" {
        assert!(start.elapsed() < GUARD, "the link stays up");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_stranded_then_recover(&s, "");
    assert_eq!(s.digest(), big_digest());
    s.cli(&["FLUSHALL"]);
    import_works(&s);
}

/// `recover --force` detaches a target whose sync still runs.
#[test]
fn issue8_recover_force_detaches_a_running_sync() {
    let s = RedisServer::start();
    let (_fake, run, _) = loaded_not_detached(&s);
    let o = rdbferry(&["recover", "--to", &s.url(), "--force"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(s.cli(&["INFO", "replication"]).contains("role:master"));
    assert_eq!(config(&s, "masterauth"), "");
    assert_eq!(config(&s, "repl-diskless-load"), "disabled");
    drop(run);
}

/// Issue 8, 11: a target with a function library: the precheck says commands (and why), and
/// the run takes commands.
#[test]
fn issue8_precheck_and_run_agree_on_a_target_with_functions() {
    let s = RedisServer::start();
    s.cli(&[
        "FUNCTION",
        "LOAD",
        "#!lua name=mine\nredis.register_function('f', function() return 1 end)",
    ]);
    let dump = testdata("redis-7.0/all-types.rdb");
    let o = rdbferry(&["import", &dump, "--to", &s.url(), "--precheck", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let via = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["check"] == "via")
        .unwrap()
        .clone();
    assert_eq!(via["status"], "ok", "{via}");
    let detail = via["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("commands") && detail.contains("functions"),
        "{via}"
    );
    let o = rdbferry(&["import", &dump, "--to", &s.url(), "-q", "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(o.status.code(), Some(0), "{r}");
    assert_eq!(r["via"], "commands", "{r}");
    assert!(
        r["full_sync_declined"]
            .as_str()
            .unwrap()
            .contains("functions")
    );
    assert!(s.cli(&["INFO", "replication"]).contains("role:master"));
}

/// `kill -9` while verify's snapshot has the target's `rdbcompression` and
/// `repl-diskless-sync-delay` changed: `recover` puts them back from the journal.
#[test]
fn issue8_kill_9_in_verify_snapshot_then_recover() {
    let s = loaded(big());
    // A save of 20 s: the kill always finds it under way.
    s.cli(&["CONFIG", "SET", "rdb-key-save-delay", "100"]);
    let mut run = Ferry::spawn(&[
        "verify",
        path_str(big()),
        "--to",
        &s.url(),
        "-q",
        "--via",
        "snapshot",
    ]);
    let mut c = conn(&s);
    run.wait_for("the snapshot", GUARD, || {
        info_field(&mut c, "replication", "connected_slaves") == "1"
    });
    run.signal("KILL");
    run.finish_within(GUARD);
    assert_eq!(config(&s, "rdbcompression"), "no");
    assert_eq!(config(&s, "repl-diskless-sync-delay"), "0");
    let o = rdbferry(&["recover", "--to", &s.url()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("rdbcompression"), "{out}");
    assert_eq!(config(&s, "rdbcompression"), "yes");
    assert_eq!(config(&s, "repl-diskless-sync-delay"), "5");
    let o = rdbferry(&["recover", "--to", &s.url()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("nothing of rdbferry's to put back"), "{out}");
}
