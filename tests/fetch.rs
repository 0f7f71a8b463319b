//! `rdbferry fetch`: a live server's snapshot, taken as a replica takes it, to a file or to
//! standard output. From 7.0, 6.2 and 6.0, sent from disk and diskless, a server started on
//! the fetched file holds the source's data ([`assert_same_data`]: digest, expiry times,
//! stream groups). A source that dies or stalls mid-transfer, never answers, only sends
//! keep-alives, refuses `PSYNC`/`SYNC` or the password, or a Ctrl-C: a clear error (or 130),
//! and no output file, partial or temporary, left behind.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::fake::{Cut, CutProxy, FakeServer, Hostile, Script};
use support::ferry::{Ferry, output_text as text, path_str, rdbferry};
use support::{
    RedisServer, TempDir, TestCerts, assert_same_data, dir_names, require_old_server, testdata,
};

/// A hang guard, never a timing.
const GUARD: Duration = Duration::from_secs(120);

/// `fetch --from FROM -o FILE EXTRA...`, which must fail (exit 1) saying `wants`.
fn fetch_fails(from: &str, file: &Path, extra: &[&str], wants: &str) -> Output {
    let mut args = vec!["fetch", "--from", from, "-o", path_str(file)];
    args.extend_from_slice(extra);
    let o = rdbferry(&args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(wants), "wanted {wants:?}: {}", text(&o));
    o
}

/// A server of `binary` that loaded `testdata/<dump>` (its copy lives in the returned dir).
fn source(binary: &Path, dump: &str, extra: &[&str]) -> (RedisServer, TempDir) {
    let dir = TempDir::new("fetch-src");
    fs::copy(testdata(dump), dir.path().join("source.rdb")).unwrap();
    let d = dir.path().display().to_string();
    let mut args = vec![
        "--dir",
        &d,
        "--dbfilename",
        "source.rdb",
        "--repl-diskless-sync-delay",
        "0",
    ];
    args.extend_from_slice(extra);
    (RedisServer::start_with(binary, &args), dir)
}

/// A server of `binary` started on `file`.
fn loaded(binary: &Path, file: &Path) -> RedisServer {
    let (dir, name) = (file.parent().unwrap(), file.file_name().unwrap());
    RedisServer::start_with(
        binary,
        &[
            "--dir",
            path_str(dir),
            "--dbfilename",
            name.to_str().unwrap(),
        ],
    )
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

#[test]
fn from_each_version_from_disk_and_diskless() {
    let mut servers = vec![(PathBuf::from("redis-server"), "redis-7.0")];
    for (v, dir) in [("6.2", "redis-6.2"), ("6.0", "redis-6.0")] {
        if let Some(b) = require_old_server(v) {
            servers.push((b, dir));
        }
    }
    for (bin, data) in servers {
        for (diskless, transfer) in [("no", "disk"), ("yes", "diskless")] {
            let dump = format!("{data}/all-types.rdb");
            let (src, _keep) = source(&bin, &dump, &["--repl-diskless-sync", diskless]);
            let out = TempDir::new("fetch-out");
            let file = out.path().join("fetched.rdb");
            let o = rdbferry(&[
                "fetch",
                "--from",
                &src.url(),
                "-o",
                path_str(&file),
                "--json",
            ]);
            assert_eq!(o.status.code(), Some(0), "{data} {transfer}: {}", text(&o));
            let r = json(&o);
            assert_eq!(r["transfer"], transfer, "{r}");
            assert_eq!(r["checksum"], "verified", "{r}");
            assert_eq!(r["replid"].as_str().unwrap().len(), 40, "{r}");
            assert_eq!(
                r["bytes"].as_u64(),
                Some(fs::metadata(&file).unwrap().len())
            );
            assert_eq!(dir_names(out.path()), ["fetched.rdb"], "{data} {transfer}");
            let got = loaded(&bin, &file);
            assert_same_data(&got, &src);
        }
    }
}

#[test]
fn to_stdout_the_rdb_itself() {
    let (src, _keep) = source(Path::new("redis-server"), "redis-7.0/all-types.rdb", &[]);
    let o = rdbferry(&["fetch", "--from", &src.url(), "-o", "-"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // The summary went to stderr; stdout is the RDB: a server loads it.
    assert!(String::from_utf8_lossy(&o.stderr).contains("checksum verified"));
    let out = TempDir::new("fetch-out");
    let file = out.path().join("stdout.rdb");
    fs::write(&file, &o.stdout).unwrap();
    assert_same_data(&loaded(Path::new("redis-server"), &file), &src);
    // And `check -` takes it from a pipe.
    let mut fetch = Command::new(env!("CARGO_BIN_EXE_rdbferry"))
        .args(["fetch", "-q", "--from", &src.url(), "-o", "-"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_rdbferry"))
        .args(["check", "-"])
        .stdin(fetch.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(fetch.wait().unwrap().success());
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("-: OK"),
        "{}",
        text(&check)
    );
}

#[test]
fn tls_source() {
    let certs = TestCerts::new();
    let dir = TempDir::new("fetch-tls");
    fs::copy(
        testdata("redis-7.0/all-types.rdb"),
        dir.path().join("s.rdb"),
    )
    .unwrap();
    let d = dir.path().display().to_string();
    let src = RedisServer::start_tls(&certs, &["--dir", &d, "--dbfilename", "s.rdb"]);
    let file = dir.path().join("fetched.rdb");
    let o = rdbferry(&[
        "fetch",
        "--from",
        &src.url(),
        "--from-tls-ca",
        &certs.ca(),
        "-o",
        path_str(&file),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let want = loaded(Path::new("redis-server"), &dir.path().join("s.rdb"));
    assert_same_data(&loaded(Path::new("redis-server"), &file), &want);
}

/// A source big enough that its RDB is still coming when a proxy cuts it after 1 MB.
fn big_source(diskless: &str) -> RedisServer {
    let s = RedisServer::start_with(
        Path::new("redis-server"),
        &[
            "--repl-diskless-sync",
            diskless,
            "--repl-diskless-sync-delay",
            "0",
            "--rdbcompression",
            "no",
        ],
    );
    s.cli(&["DEBUG", "POPULATE", "50000", "key", "100"]);
    s
}

#[test]
fn a_source_closing_mid_rdb_leaves_no_file() {
    for diskless in ["no", "yes"] {
        let src = big_source(diskless);
        let proxy = CutProxy::start(src.port(), 1 << 20, Cut::Close);
        let out = TempDir::new("fetch-cut");
        let file = out.path().join("cut.rdb");
        let wants = "closed by the server while waiting for the rest of the snapshot";
        fetch_fails(&proxy.url(), &file, &[], wants);
        assert!(proxy.cut());
        assert!(
            dir_names(out.path()).is_empty(),
            "{:?}",
            dir_names(out.path())
        );
    }
}

#[test]
fn a_source_stalling_mid_rdb_times_out_and_ctrl_c_exits_130_leaving_no_file() {
    let src = big_source("no");
    let out = TempDir::new("fetch-stall");
    let file = out.path().join("stalled.rdb");
    // --timeout: the stalled read is an error.
    let proxy = CutProxy::start(src.port(), 1 << 20, Cut::Stall);
    fetch_fails(&proxy.url(), &file, &["--timeout", "1"], "timed out");
    assert!(dir_names(out.path()).is_empty());
    drop(proxy);
    // Ctrl-C while the temporary file is there.
    let proxy = CutProxy::start(src.port(), 1 << 20, Cut::Stall);
    let mut run = Ferry::spawn(&["fetch", "--from", &proxy.url(), "-o", path_str(&file)]);
    run.wait_for("the cut with a temporary file", GUARD, || {
        proxy.cut() && !dir_names(out.path()).is_empty()
    });
    run.signal("INT");
    let o = run.finish_within(GUARD);
    assert_eq!(o.status.code(), Some(130), "{}", text(&o));
    assert!(
        dir_names(out.path()).is_empty(),
        "{:?}",
        dir_names(out.path())
    );
}

#[test]
fn a_source_that_never_answers_or_only_keeps_alive_is_a_timeout() {
    let out = TempDir::new("fetch-silent");
    let file = out.path().join("never.rdb");
    let silent = FakeServer::start(Script::PingOnly);
    let o = fetch_fails(&silent.url(), &file, &["--timeout", "1"], "timed out");
    assert!(text(&o).contains(&silent.addr()), "{}", text(&o));
    // A source "saving" forever: newlines only, until --save-timeout.
    let src = RedisServer::start();
    let saving = FakeServer::start(Script::Proxy {
        upstream: src.port(),
        on: "PSYNC",
        then: Hostile::BlankLines,
        sticky: false,
    });
    let wants = "only keep-alive newlines";
    fetch_fails(&saving.url(), &file, &["--save-timeout", "1"], wants);
    assert!(dir_names(out.path()).is_empty());
}

#[test]
fn wrong_or_missing_password_is_clear_and_never_printed() {
    let src = RedisServer::start();
    // Set after start-up: the harness waits for an unauthenticated PING.
    src.cli(&["CONFIG", "SET", "requirepass", "s3cret-pw"]);
    let out = TempDir::new("fetch-auth");
    let file = out.path().join("auth.rdb");
    let bad = format!("redis://:wrong-pw-123@127.0.0.1:{}", src.port());
    let o = rdbferry(&["fetch", "--from", &bad, "-o", path_str(&file)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let all = text(&o);
    assert!(all.contains("authentication failed"), "{all}");
    assert!(!all.contains("wrong-pw-123"), "{all}");
    let plain = format!("redis://127.0.0.1:{}", src.port());
    let o = rdbferry(&["fetch", "--from", &plain, "-o", path_str(&file)]);
    assert!(text(&o).contains("RDBFERRY_FROM_PASSWORD"), "{}", text(&o));
    // The right one from the environment.
    let o = Command::new(env!("CARGO_BIN_EXE_rdbferry"))
        .args(["fetch", "--from", &plain, "-o", path_str(&file)])
        .env("RDBFERRY_FROM_PASSWORD", "s3cret-pw")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!text(&o).contains("s3cret-pw"));
    assert_eq!(dir_names(out.path()), ["auth.rdb"]);
}

#[test]
fn refused_psync_says_why_and_a_renamed_one_can_be_named() {
    let dump = "redis-7.0/all-types.rdb";
    let redis = Path::new("redis-server");
    let out = TempDir::new("fetch-refused");
    let file = out.path().join("r.rdb");
    let fetch = |url: &str, extra: &[&str]| {
        let mut args = vec!["fetch", "--from", url, "-o", path_str(&file), "--json"];
        args.extend_from_slice(extra);
        rdbferry(&args)
    };
    // Both disabled (as managed services do).
    let (src, _k1) = source(redis, dump, &support::NO_REPLICATION);
    let o = fetch(&src.url(), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("unknown command") && err.contains("--psync-command"),
        "{err}"
    );
    // PSYNC renamed: named, it works (Redis serves it as SYNC: no replication id).
    let renamed = [
        "--rename-command",
        "PSYNC",
        "MYPSYNC",
        "--rename-command",
        "SYNC",
        "",
    ];
    let (src, _k2) = source(redis, dump, &renamed);
    let o = fetch(&src.url(), &["--psync-command", "mypsync"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(json(&o)["replid"], "");
    assert_same_data(&loaded(redis, &file), &src);
    let o = fetch(&src.url(), &["--psync-command", "OTHER"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("is --psync-command the name"), "{err}");
    // PSYNC disabled, SYNC there: the fallback, without a replication id.
    let (src, _k3) = source(redis, dump, &["--rename-command", "PSYNC", ""]);
    let o = fetch(&src.url(), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(json(&o)["replid"], "");
    assert_same_data(&loaded(redis, &file), &src);
    // An ACL user without the rights of a replica.
    let (src, _k4) = source(redis, dump, &[]);
    src.cli(&[
        "ACL", "SETUSER", "reader", "on", ">pw", "~*", "+@all", "-psync", "-sync",
    ]);
    let url = format!("redis://reader:pw@127.0.0.1:{}", src.port());
    let o = fetch(&url, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("NOPERM") && err.contains("+psync"), "{err}");
    assert!(dir_names(out.path()).iter().all(|f| f == "r.rdb"));
}

#[test]
fn an_output_directory_is_refused() {
    let out = TempDir::new("fetch-dir");
    let o = rdbferry(&[
        "fetch",
        "--from",
        "redis://127.0.0.1:1",
        "-o",
        path_str(out.path()),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is a directory"));
}
