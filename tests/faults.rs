//! Faults during `rdbferry import`, against real servers the tests start and kill: the target
//! killed mid-import and restarted (RDB input, and AOF input full of non-idempotent `INCR`
//! and `RPUSH`), a target that restarts without persistence, a target busy running a script,
//! and one loading its data (LOADING). In every case the import either finishes with exactly
//! the source's data (same `DEBUG DIGEST`, expiry times and stream groups: `support::Snapshot`;
//! nothing missing, nothing doubled, no temporary keys or markers left) or stops with an
//! error that says why.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{RedisServer, Running, Snapshot};

/// A server that fsyncs every write before answering, so nothing acknowledged is lost when
/// it is killed.
fn durable_target() -> RedisServer {
    RedisServer::start_with(
        Path::new("redis-server"),
        &["--appendonly", "yes", "--appendfsync", "always"],
    )
}

fn spawn_import(input: &Path, target: &RedisServer, extra: &[&str]) -> Running {
    let child = Command::new(env!("CARGO_BIN_EXE_rdbferry"))
        .arg("import")
        .arg(input)
        .args([
            "--to",
            &target.url(),
            "--json",
            "-q",
            "--retry-timeout",
            "60",
            // The writer's faults are under test: a full sync has its own test
            // (import_fullsync.rs).
            "--via",
            "commands",
        ])
        .args(extra)
        .env_remove("RDBFERRY_TO_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Running(Some(child))
}

fn finish(r: Running) -> (Option<i32>, String, String) {
    let o = r.finish();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn conn(s: &RedisServer) -> redis::Connection {
    redis::Client::open(s.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Wait until `probe` on the target says the import is under way (the child must not have
/// finished: that would make the test vacuous).
fn wait_for_progress(
    run: &mut Running,
    target: &RedisServer,
    probe: impl Fn(&mut redis::Connection) -> bool,
) {
    let mut c = conn(target);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            run.child().try_wait().unwrap().is_none(),
            "the import ended before the fault could be injected: make the data bigger"
        );
        if probe(&mut c) {
            return;
        }
        assert!(Instant::now() < deadline, "no import progress within 60 s");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn dbsize(c: &mut redis::Connection) -> i64 {
    redis::cmd("DBSIZE").query(c).unwrap_or(0)
}

/// A dump with small strings (SET), collections (RESTORE) and a list of ~12 MB that goes in
/// parts, and what the server that wrote it held.
fn make_dump() -> (PathBuf, Snapshot) {
    let src = RedisServer::start();
    src.cli(&["DEBUG", "POPULATE", "120000", "s", "64"]);
    src.cli(&[
        "EVAL",
        "for i = 1, 20000 do redis.call('RPUSH', 'list:' .. (i % 500), i) \
         redis.call('HSET', 'hash:' .. (i % 300), 'f' .. i, i) end",
        "0",
    ]);
    src.cli(&[
        "EVAL",
        "local v = string.rep('x', 200) for i = 1, 60000 do redis.call('RPUSH', 'big', v .. i) end",
        "0",
    ]);
    (src.save_and_copy_dump(), Snapshot::of(&src))
}

fn assert_clean(t: &RedisServer, want: &Snapshot) {
    assert_eq!(
        t.cli(&["KEYS", "*rdbferry*"]),
        "",
        "temporary keys or markers left"
    );
    want.assert_same(&Snapshot::of(t));
}

fn verify(input: &Path, t: &RedisServer) {
    let o = Command::new(env!("CARGO_BIN_EXE_rdbferry"))
        .arg("verify")
        .arg(input)
        .args(["--to", &t.url(), "-q"])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "verify: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn target_killed_mid_import_of_a_dump() {
    let (dump, want) = make_dump();
    // Default --on-conflict fail: keys sent again that already ran must not be conflicts.
    for extra in [
        &[][..],
        &["--on-conflict", "replace", "--mode", "rewrite"][..],
    ] {
        let mut t = durable_target();
        let mut child = spawn_import(&dump, &t, extra);
        wait_for_progress(&mut child, &t, |c| dbsize(c) > 30_000);
        t.kill_and_restart(Duration::from_millis(300));
        let (code, out, err) = finish(child);
        assert_eq!(code, Some(0), "{extra:?}\nstdout: {out}\nstderr: {err}");
        let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        eprintln!("{extra:?}: {r}");
        assert!(r["reconnects"].as_u64().unwrap() >= 1, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
        assert_eq!(r["written"], r["keys_read"], "{r}");
        assert_clean(&t, &want);
        verify(&dump, &t);
    }
}

/// An appendonlydir of non-idempotent commands (counters, list pushes, transactions), copied
/// out of the server that wrote it, and what that server held.
fn make_aof() -> (PathBuf, Snapshot) {
    let src = RedisServer::start_with(Path::new("redis-server"), &["--appendonly", "yes"]);
    let mut c = conn(&src);
    for round in 0..40 {
        let mut p = redis::pipe();
        for i in 0..1000u32 {
            let n = round * 1000 + i;
            p.cmd("INCR").arg(format!("counter:{}", n % 97)).ignore();
            p.cmd("RPUSH")
                .arg(format!("list:{}", n % 53))
                .arg(n)
                .ignore();
            if n % 10 == 0 {
                p.cmd("INCRBY").arg("total").arg(n).ignore();
            }
        }
        let () = p.query(&mut c).unwrap();
        // Some transactions too (MULTI/EXEC in the AOF).
        let () = redis::pipe()
            .atomic()
            .cmd("INCR")
            .arg("tx:a")
            .ignore()
            .cmd("LPUSH")
            .arg("tx:l")
            .arg(round)
            .ignore()
            .query(&mut c)
            .unwrap();
    }
    src.cli(&["PING"]);
    let want = Snapshot::of(&src);
    let from = src.dir().join("appendonlydir");
    let to = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "faults-aof-{}-{}",
        std::process::id(),
        src.port()
    ));
    let _ = std::fs::remove_dir_all(&to);
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(&from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    (to, want)
}

#[test]
fn target_killed_mid_import_of_an_aof() {
    let (aof, want) = make_aof();
    let mut t = durable_target();
    let mut child = spawn_import(&aof, &t, &["--pipeline", "300"]);
    wait_for_progress(&mut child, &t, |c| {
        redis::cmd("GET")
            .arg("total")
            .query::<Option<i64>>(c)
            .ok()
            .flatten()
            .is_some_and(|n| n > 10_000_000)
    });
    t.kill_and_restart(Duration::from_millis(300));
    let (code, out, err) = finish(child);
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(r["reconnects"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    // Counters and lists: nothing lost, nothing applied twice.
    assert_clean(&t, &want);
}

#[test]
fn target_restarting_without_persistence_stops_the_import() {
    let (dump, _) = make_dump();
    let mut t = RedisServer::start();
    let mut child = spawn_import(&dump, &t, &[]);
    wait_for_progress(&mut child, &t, |c| dbsize(c) > 30_000);
    t.kill_and_restart(Duration::from_millis(100));
    let (code, out, err) = finish(child);
    assert_eq!(code, Some(1), "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains("restarted") && err.contains("appendfsync"),
        "stderr: {err}"
    );
}

/// A target that answers LOADING for a while (`DEBUG RELOAD` of what the import wrote so far,
/// slowed by `key-load-delay`, events served between keys): the import waits, sends again
/// what was refused, and ends with exactly the source's data.
#[test]
fn loading_target_is_waited_for() {
    let (dump, want) = make_dump();
    let t = RedisServer::start_with(
        Path::new("redis-server"),
        &["--loading-process-events-interval-bytes", "1024"],
    );
    let mut child = spawn_import(&dump, &t, &[]);
    wait_for_progress(&mut child, &t, |c| dbsize(c) > 20_000);
    // 50 µs a key: a second or more of LOADING.
    t.cli(&["CONFIG", "SET", "key-load-delay", "50"]);
    t.cli(&["DEBUG", "RELOAD"]);
    t.cli(&["CONFIG", "SET", "key-load-delay", "0"]);
    let (code, out, err) = finish(child);
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    eprintln!("{r}");
    assert_eq!(r["errors"], 0, "{r}");
    let loading = t
        .cli(&["INFO", "errorstats"])
        .lines()
        .find_map(|l| l.strip_prefix("errorstat_LOADING:count="))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(loading > 0, "the target never answered LOADING: {r}");
    assert!(
        r["resent"].as_u64().unwrap() > 0,
        "nothing was sent again after LOADING: {r}"
    );
    assert_clean(&t, &want);
}

#[test]
fn busy_target_is_waited_for() {
    let (dump, want) = make_dump();
    let t = RedisServer::start_with(Path::new("redis-server"), &["--busy-reply-threshold", "20"]);
    let mut child = spawn_import(&dump, &t, &[]);
    wait_for_progress(&mut child, &t, |c| dbsize(c) > 5_000);
    // A script that keeps the server busy for 1.5 s: everything else gets BUSY meanwhile.
    let busy = Command::new("redis-cli")
        .args(["-p", &t.port().to_string()])
        .args([
            "EVAL",
            "local t = redis.call('TIME') local s = t[1] * 1000000 + t[2] \
             while true do local n = redis.call('TIME') \
             if n[1] * 1000000 + n[2] - s > 1500000 then break end end return 1",
            "0",
        ])
        .output()
        .unwrap();
    assert!(busy.status.success());
    let (code, out, err) = finish(child);
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["errors"], 0, "{r}");
    assert!(
        r["resent"].as_u64().unwrap() > 0,
        "nothing was refused as BUSY: {r}"
    );
    assert_clean(&t, &want);
}
