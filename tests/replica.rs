//! rdbferry as a replica of real servers (`repl::replica`): the command stream after a full
//! sync (every kind of write, with its db and offset, the master's own count), a partial
//! resync from a point applied before (and the full sync when the backlog lost it), ACKs that
//! say what was applied (`WAIT`), a source that is itself a replica, and Sentinel, which must
//! never see rdbferry as a replica it could promote.
//!
//! What "the entries are right" means here: applied in order to a server started on the
//! snapshot, they give the source's data exactly ([`assert_same_data`]), and the offsets are
//! the source's `master_repl_offset`.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use rdbferry::cancel::Cancel;
use rdbferry::net::{Conn, RedisUrl};
use rdbferry::repl::replica::{self, Handshake, ReplEntry, ReplStream, ReplicaOptions, SyncStart};
use support::ferry::{conn, info_field};
use support::{RedisServer, Sentinel, TempDir, assert_same_data, require_old_server};

/// A hang guard, never a timing.
const GUARD: Duration = Duration::from_secs(60);

fn open(s: &RedisServer) -> Conn {
    let url = RedisUrl::parse(&format!("redis://127.0.0.1:{}", s.port()), None).unwrap();
    Conn::open(&url).unwrap()
}

fn opts() -> ReplicaOptions {
    ReplicaOptions::new(Duration::from_secs(60), Cancel::new())
}

fn master_offset(s: &RedisServer) -> u64 {
    info_field(&mut conn(s), "replication", "master_repl_offset")
        .parse()
        .unwrap()
}

/// A source that streams at once (no diskless delay) and sends no PING during a test (so
/// that its offset moves only with the test's writes).
fn source(binary: &std::path::Path, extra: &[&str]) -> RedisServer {
    let mut args = vec![
        "--repl-diskless-sync-delay",
        "0",
        "--repl-ping-replica-period",
        "3600",
    ];
    args.extend_from_slice(extra);
    RedisServer::start_with(binary, &args)
}

/// A full sync from `s`: the RDB written to `dir/snap.rdb`, and the stream after it.
fn full(s: &RedisServer, dir: &TempDir) -> (String, u64, ReplStream, PathBuf) {
    let Handshake::Full {
        replid,
        offset,
        mut payload,
    } = replica::psync(open(s), SyncStart::Full, &opts()).unwrap()
    else {
        panic!("a continue to PSYNC ? -1");
    };
    let path = dir.path().join("snap.rdb");
    let mut f = std::fs::File::create(&path).unwrap();
    std::io::copy(&mut payload, &mut f).unwrap();
    let stream = payload.into_stream(replid.clone(), offset).unwrap();
    assert_eq!(stream.offset(), offset);
    (replid, offset, stream, path)
}

/// Entries until the stream has everything the source counted (`master_repl_offset`), which
/// it then equals.
fn entries_until_caught_up(s: &mut ReplStream, source: &RedisServer) -> Vec<ReplEntry> {
    let start = Instant::now();
    let mut got = Vec::new();
    loop {
        let want = master_offset(source);
        match s.next(Duration::from_millis(100)).unwrap() {
            Some(e) => got.push(e),
            None if s.offset() >= want => {
                assert_eq!(s.offset(), want, "the stream's offset is the master's");
                return got;
            }
            None => {}
        }
        assert!(start.elapsed() < GUARD, "stream not caught up: {got:?}");
    }
}

fn names(e: &ReplEntry) -> String {
    e.commands
        .iter()
        .map(|c| String::from_utf8_lossy(&c[0]).to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Apply `entries` in order to `target`, as a replica would.
fn apply(target: &RedisServer, entries: &[ReplEntry]) {
    let mut c = conn(target);
    for e in entries {
        redis::cmd("SELECT").arg(e.db).query::<()>(&mut c).unwrap();
        for args in &e.commands {
            let mut cmd = redis::cmd(&String::from_utf8_lossy(&args[0]));
            for a in &args[1..] {
                cmd.arg(a.as_slice());
            }
            cmd.query::<redis::Value>(&mut c)
                .unwrap_or_else(|err| panic!("{}: {err}", names(e)));
        }
    }
}

/// Writes of every kind the stream carries: plain, INCR, a MULTI block, a Lua script (its
/// effects come as a transaction), another db, a relative EXPIRE, a delete.
fn write_everything(s: &RedisServer) {
    let mut c = conn(s);
    let q = |c: &mut redis::Connection, args: &[&str]| {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query::<redis::Value>(c).unwrap();
    };
    q(&mut c, &["SET", "a", "1"]);
    q(&mut c, &["INCR", "n"]);
    redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("b")
        .arg("2")
        .cmd("INCR")
        .arg("n")
        .query::<redis::Value>(&mut c)
        .unwrap();
    let script = "redis.call('SET', 'lua', 'x'); return redis.call('INCR', 'n')";
    q(&mut c, &["EVAL", script, "0"]);
    q(&mut c, &["SELECT", "3"]);
    q(&mut c, &["SET", "c", "3"]);
    q(&mut c, &["EXPIRE", "c", "1000"]);
    q(&mut c, &["HSET", "h", "f", "v"]);
    q(&mut c, &["SELECT", "0"]);
    q(&mut c, &["DEL", "a"]);
}

#[test]
fn every_write_after_a_full_sync_arrives_in_its_db_at_the_masters_offset() {
    let mut binaries = vec![PathBuf::from("redis-server")];
    for v in ["6.2", "6.0"] {
        binaries.extend(require_old_server(v));
    }
    for bin in binaries {
        for diskless in ["no", "yes"] {
            let src = source(&bin, &["--repl-diskless-sync", diskless]);
            let what = format!("redis {} diskless {diskless}", src.version());
            src.cli(&["SET", "before", "0"]);
            let dir = TempDir::new("replica");
            let (_, offset, mut s, rdb) = full(&src, &dir);
            write_everything(&src);
            let got = entries_until_caught_up(&mut s, &src);
            let listing: Vec<(u64, String)> = got.iter().map(|e| (e.db, names(e))).collect();
            let expire = if got.get(5).is_some_and(|e| names(e) == "PEXPIREAT") {
                "PEXPIREAT" // 7.0 sends absolute times
            } else {
                "EXPIRE"
            };
            let want = [
                (0, "SET"),
                (0, "INCR"),
                (0, "MULTI SET INCR EXEC"),
                (0, "MULTI SET INCR EXEC"),
                (3, "SET"),
                (3, expire),
                (3, "HSET"),
                (0, "DEL"),
            ];
            let want: Vec<(u64, String)> = want.iter().map(|(d, n)| (*d, n.to_string())).collect();
            assert_eq!(listing, want, "{what}");
            assert!(got.windows(2).all(|w| w[0].offset < w[1].offset));
            assert!(got[0].offset > offset);
            assert_eq!(got.last().unwrap().offset, master_offset(&src), "{what}");
            // Applied to the snapshot, they give the source's data.
            let d = dir.path().display().to_string();
            let target = RedisServer::start_with(&bin, &["--dir", &d, "--dbfilename", "snap.rdb"]);
            assert_eq!(target.cli(&["GET", "before"]), "0", "{what}: {rdb:?}");
            apply(&target, &got);
            assert_same_data(&target, &src);
        }
    }
}

#[test]
fn continue_resumes_right_after_the_offset_applied_in_its_db() {
    let src = source(Path::new("redis-server"), &["--repl-backlog-size", "64mb"]);
    let dir = TempDir::new("replica");
    let (replid, _, mut s, _) = full(&src, &dir);
    let mut c = conn(&src);
    redis::cmd("SELECT").arg(3).query::<()>(&mut c).unwrap();
    for k in ["k1", "k2", "k3"] {
        redis::cmd("SET").arg(k).arg(1).query::<()>(&mut c).unwrap();
    }
    let before = entries_until_caught_up(&mut s, &src);
    assert_eq!(before.len(), 3);
    drop(s);
    // Still in db 3: the master sends no SELECT again, only the resume point says the db.
    for k in ["k4", "k5"] {
        redis::cmd("SET").arg(k).arg(1).query::<()>(&mut c).unwrap();
    }
    let point = &before[0];
    let start = SyncStart::Continue {
        replid: replid.clone(),
        offset: point.offset,
        db: point.db_after,
    };
    let Handshake::Continue {
        replid: now,
        offset,
        stream: mut s,
    } = replica::psync(open(&src), start, &opts()).unwrap()
    else {
        panic!("a full sync where the backlog holds the point");
    };
    assert_eq!((now.as_str(), offset), (replid.as_str(), point.offset));
    let after = entries_until_caught_up(&mut s, &src);
    let keys: Vec<(u64, String)> = after
        .iter()
        .map(|e| {
            (
                e.db,
                String::from_utf8_lossy(&e.commands[0][1]).into_owned(),
            )
        })
        .collect();
    let want: Vec<(u64, String)> = ["k2", "k3", "k4", "k5"]
        .iter()
        .map(|k| (3, k.to_string()))
        .collect();
    assert_eq!(keys, want, "only what follows the point, in db 3");
    assert_eq!(after[0].offset, before[1].offset);
    assert_eq!(after[1].offset, before[2].offset);
}

#[test]
fn continue_from_a_point_the_backlog_lost_or_another_replid_is_a_full_sync() {
    // The smallest backlog Redis keeps (16 KB): the writes below push the point out of it.
    let src = source(Path::new("redis-server"), &["--repl-backlog-size", "16384"]);
    let dir = TempDir::new("replica");
    let (replid, _, mut s, _) = full(&src, &dir);
    src.cli(&["SET", "x", "1"]);
    let point = entries_until_caught_up(&mut s, &src).pop().unwrap();
    drop(s);
    let value = "v".repeat(1000);
    for i in 0..100 {
        src.cli(&["SET", &format!("k{i}"), &value]);
    }
    for id in [replid.clone(), "0".repeat(40)] {
        let start = SyncStart::Continue {
            replid: id,
            offset: point.offset,
            db: point.db_after,
        };
        match replica::psync(open(&src), start, &opts()).unwrap() {
            Handshake::Full { offset, .. } => assert_eq!(offset, master_offset(&src)),
            Handshake::Continue { .. } => panic!("continued from a point the master lost"),
        }
    }
}

#[test]
fn acks_say_what_was_applied_and_getack_is_answered() {
    let src = source(Path::new("redis-server"), &[]);
    let dir = TempDir::new("replica");
    let (_, _, mut s, _) = full(&src, &dir);
    let (entries_tx, entries) = mpsc::channel();
    let (apply_tx, apply_rx) = mpsc::channel::<u64>();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let reader = std::thread::spawn(move || {
        while !stopped.load(Ordering::SeqCst) {
            if let Some(e) = s.next(Duration::from_millis(50)).unwrap() {
                entries_tx.send(e.offset).unwrap();
            }
            while let Ok(off) = apply_rx.try_recv() {
                s.set_applied(off);
            }
        }
    });
    let mut c = conn(&src);
    redis::cmd("SET")
        .arg("w")
        .arg(1)
        .query::<()>(&mut c)
        .unwrap();
    let offset = entries.recv_timeout(GUARD).unwrap();
    // Received, not applied: WAIT's GETACK gets an ACK below the write.
    let n: i64 = redis::cmd("WAIT").arg(1).arg(300).query(&mut c).unwrap();
    assert_eq!(n, 0, "an ACK for a write not applied");
    apply_tx.send(offset).unwrap();
    let n: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(GUARD.as_millis() as u64)
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 1, "no ACK for the write applied");
    let line = info_field(&mut c, "replication", "slave0");
    assert!(line.contains("port=-1,state=online"), "{line}");
    stop.store(true, Ordering::SeqCst);
    reader.join().unwrap();
}

#[test]
fn a_source_that_is_itself_a_replica() {
    let top = source(Path::new("redis-server"), &[]);
    let port = top.port().to_string();
    let mid = source(
        Path::new("redis-server"),
        &["--replicaof", "127.0.0.1", &port],
    );
    let start = Instant::now();
    while info_field(&mut conn(&mid), "replication", "master_link_status") != "up" {
        assert!(start.elapsed() < GUARD, "the replica never synced");
        std::thread::sleep(Duration::from_millis(20));
    }
    let dir = TempDir::new("replica");
    let (replid, _, mut s, _) = full(&mid, &dir);
    assert_eq!(
        replid,
        info_field(&mut conn(&top), "replication", "master_replid")
    );
    top.cli(&["SET", "z", "1"]);
    let got = loop {
        let got = entries_until_caught_up(&mut s, &mid);
        if !got.is_empty() {
            break got;
        }
        assert!(
            start.elapsed() < GUARD,
            "the write never came through the replica"
        );
    };
    assert_eq!(got.iter().map(names).collect::<Vec<_>>(), ["SET"]);
    assert_eq!(got[0].offset, master_offset(&top));
}

/// rdbferry attached to a master as a replica, its stream read (and ACKed) on a thread until
/// the link dies or this is dropped.
struct Attached {
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.reader.take() {
            let _ = t.join();
        }
    }
}

/// A master with rdbferry attached, online.
fn master_with_rdbferry() -> (RedisServer, Attached) {
    let master = source(Path::new("redis-server"), &[]);
    let dir = TempDir::new("replica");
    let (_, _, mut s, _) = full(&master, &dir);
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let reader = std::thread::spawn(move || {
        while !stopped.load(Ordering::SeqCst) {
            if s.next(Duration::from_millis(50)).is_err() {
                return;
            }
        }
    });
    wait_online(&master, 1);
    let attached = Attached {
        stop,
        reader: Some(reader),
    };
    (master, attached)
}

fn online_replicas(s: &RedisServer) -> usize {
    let info = s.cli(&["INFO", "replication"]);
    info.lines()
        .filter(|l| l.starts_with("slave") && l.contains("state=online"))
        .count()
}

fn wait_online(s: &RedisServer, n: usize) {
    let start = Instant::now();
    while online_replicas(s) < n {
        assert!(start.elapsed() < GUARD, "{n} replicas never online");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sentinel_never_lists_rdbferry_and_promotes_the_real_replica() {
    let (mut master, _rdbferry) = master_with_rdbferry();
    let mport = master.port().to_string();
    let real = RedisServer::start_with(
        Path::new("redis-server"),
        &["--replicaof", "127.0.0.1", &mport],
    );
    wait_online(&master, 2);
    // Its first INFO of the master lists both links.
    let sentinel = Sentinel::start("m", master.port(), 1000, 5000);
    let real_port = real.port().to_string();
    sentinel.wait_for("the real replica listed", GUARD, |s| {
        s.cli(&["SENTINEL", "REPLICAS", "m"]).contains(&real_port)
    });
    let listed = sentinel.cli(&["SENTINEL", "REPLICAS", "m"]);
    let known = listed.lines().filter(|l| *l == "name").count();
    assert_eq!(
        known, 1,
        "Sentinel knows another replica than the real one:\n{listed}"
    );
    master.kill();
    sentinel.wait_for("a failover", GUARD, |s| s.log().contains("+switch-master"));
    let now = sentinel.cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "m"]);
    assert_eq!(
        now.lines().nth(1),
        Some(real_port.as_str()),
        "{}",
        sentinel.log()
    );
    let log = sentinel.log();
    // The replicas it found for the old master (after the failover it adds the old master
    // as a replica of the new one).
    let of_old = format!("@ m 127.0.0.1 {mport}");
    let added: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("+slave ") && l.ends_with(&of_old))
        .collect();
    assert_eq!(added.len(), 1, "{log}");
    assert!(added[0].contains(&format!(":{real_port} ")), "{log}");
}

#[test]
fn sentinel_with_only_rdbferry_attached_promotes_nothing() {
    let (mut master, _rdbferry) = master_with_rdbferry();
    let mport = master.port().to_string();
    let sentinel = Sentinel::start("m", master.port(), 1000, 5000);
    // The run id comes from the master's INFO, which lists rdbferry's link.
    sentinel.wait_for("the master's INFO read", GUARD, |s| {
        let fields = s.cli(&["SENTINEL", "MASTER", "m"]);
        let mut lines = fields.lines();
        lines.any(|l| l == "runid") && lines.next().is_some_and(|id| id.len() == 40)
    });
    assert_eq!(sentinel.cli(&["SENTINEL", "REPLICAS", "m"]), "");
    master.kill();
    // With no replica it may promote, a failover is tried and given up.
    sentinel.wait_for("a failover given up", GUARD, |s| {
        s.log().contains("-failover-abort-no-good-slave")
    });
    let now = sentinel.cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "m"]);
    assert_eq!(now.lines().nth(1), Some(mport.as_str()));
    assert!(!sentinel.log().contains("+slave "), "{}", sentinel.log());
}

/// A source with `min-replicas-to-write 1` refuses writes while no replica acknowledges;
/// `sync --follow` acknowledges what it applied every second, so it counts as that replica:
/// the source takes writes while it follows, and each reaches the target. A one-time `fetch`
/// (`rdb-only`) is no such replica, and its snapshot comes all the same.
#[test]
fn a_source_with_min_replicas_to_write() {
    use support::ferry::{Ferry, assert_exit, rdbferry};
    let src = source(
        Path::new("redis-server"),
        &[
            "--min-replicas-to-write",
            "1",
            "--min-replicas-max-lag",
            "10",
        ],
    );
    let mut c = conn(&src);
    let set = |c: &mut redis::Connection, k: &str| {
        redis::cmd("SET")
            .arg(k)
            .arg("1")
            .query::<()>(c)
            .map_err(|e| e.to_string())
    };
    let refused = set(&mut c, "before").unwrap_err();
    assert!(refused.contains("NOREPLICAS"), "{refused}");
    let dir = TempDir::new("min-replicas");
    let file = dir.path().join("snap.rdb");
    let (from, out) = (src.url(), file.display().to_string());
    assert_exit(&rdbferry(&["fetch", "--from", &from, "-o", &out, "-q"]), 0);
    assert!(file.exists());

    let dst = RedisServer::start();
    let to = dst.url();
    let mut run = Ferry::spawn(&["sync", "--from", &from, "--to", &to, "--follow", "-q"]);
    run.wait_for("the source to take writes", GUARD, || {
        set(&mut c, "during").is_ok()
    });
    run.wait_for("the write on the target", GUARD, || {
        dst.cli(&["GET", "during"]) == "1"
    });
    run.signal("TERM");
    assert_exit(&run.finish_within(GUARD), 0);
}
