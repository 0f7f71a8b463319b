//! `rdbferry verify` against real servers: a server that loaded a dump at start-up is
//! identical to it; changed values, deleted keys and moved TTLs are found (so the command
//! cannot pass vacuously); filters, renames and db mapping; chunked big values; AOF inputs;
//! authentication errors that never show the password. Then a live `redis://` source read
//! with SCAN + DUMP: the same checks, a 6.2 source against a 7.0 target, Cluster sources
//! (with a slot half-migrated) and targets, source passwords and TLS.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::ferry::output_text as text;
use support::{RedisCluster, RedisServer, TempDir, TestCerts, require_old_server};

fn testdata(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(p)
}

fn rdbferry(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rdbferry"));
    c.args(args)
        .env_remove("RDBFERRY_TO_PASSWORD")
        .env_remove("RDBFERRY_FROM_PASSWORD");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// The run exited with `code` and printed each of `wants` (stdout or stderr).
fn says(o: &Output, code: i32, wants: &[&str]) {
    let all = text(o);
    assert_eq!(o.status.code(), Some(code), "{all}");
    for w in wants {
        assert!(all.contains(w), "{w:?} not in {all}");
    }
}

/// Run rdbferry: it must exit 1, print each of `wants`, and never print `secret`.
fn fails_saying(args: &[&str], env: &[(&str, &str)], wants: &[&str], secret: &str) {
    let o = rdbferry(args, env);
    says(&o, 1, wants);
    assert!(!text(&o).contains(secret), "{}", text(&o));
}

/// A server started on a copy of `dump` (an RDB file), so that it loads it at start-up.
/// The returned TempDir holds the copy and must outlive the server.
fn server_with_dump(binary: &Path, dump: &Path, extra: &[&str]) -> (RedisServer, TempDir) {
    let dir = TempDir::new("verify-src");
    fs::copy(dump, dir.path().join("source.rdb")).unwrap();
    let d = dir.path().display().to_string();
    let mut args = vec!["--dir", &d, "--dbfilename", "source.rdb"];
    args.extend_from_slice(extra);
    let server = RedisServer::start_with(binary, &args);
    (server, dir)
}

/// [`server_with_dump`] on a TLS-only port ([`RedisServer::start_tls`]).
fn tls_server_with_dump(certs: &TestCerts, dump: &Path) -> (RedisServer, TempDir) {
    let dir = TempDir::new("verify-tls");
    fs::copy(dump, dir.path().join("source.rdb")).unwrap();
    let d = dir.path().display().to_string();
    let server = RedisServer::start_tls(certs, &["--dir", &d, "--dbfilename", "source.rdb"]);
    (server, dir)
}

/// `verify SOURCE --to URL --json ARGS...`: exit code and the parsed report (`None` when the
/// command failed before reporting). SOURCE is a path or a `redis://` URL.
fn verify_json(
    source: &dyn AsRef<std::ffi::OsStr>,
    url: &str,
    args: &[&str],
) -> (i32, Option<serde_json::Value>, Output) {
    let src = source.as_ref().to_string_lossy().into_owned();
    let mut all = vec!["verify", &src, "--to", url, "--json", "--quiet"];
    all.extend_from_slice(args);
    let o = rdbferry(&all, &[]);
    let v = serde_json::from_slice(&o.stdout).ok();
    (o.status.code().unwrap_or(-1), v, o)
}

/// The listed differences as (key, kind), sorted.
fn diffs(v: &serde_json::Value) -> Vec<(String, String)> {
    let mut d: Vec<(String, String)> = v["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["key"].as_str().unwrap().to_string(),
                d["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    d.sort();
    d
}

#[test]
fn redis70_dump_is_identical_then_three_differences_are_found() {
    let dump = testdata("redis-7.0/all-types.rdb");
    let (server, _dir) = server_with_dump(Path::new("redis-server"), &dump, &[]);
    let url = server.url();
    let (code, rep, o) = verify_json(&dump, &url, &[]);
    let rep = rep.unwrap_or_else(|| panic!("{}", text(&o)));
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(rep["keys_checked"], 57, "{}", text(&o));
    assert_eq!(rep["keys_differing"], 0);

    // One changed value (deep inside a multi-node quicklist), one deleted key, one TTL moved.
    server.cli(&["LSET", "list:quicklist", "1500", "changed"]);
    server.cli(&["DEL", "zset:small"]);
    server.cli(&["PEXPIREAT", "ttl:string", "9999999999999"]);
    let (code, rep, o) = verify_json(&dump, &url, &[]);
    let rep = rep.unwrap_or_else(|| panic!("{}", text(&o)));
    assert_eq!(code, 1, "{}", text(&o));
    assert_eq!(rep["keys_differing"], 3, "{}", text(&o));
    assert_eq!(rep["missing"], 1);
    assert_eq!(rep["value_diffs"], 1);
    assert_eq!(rep["ttl_diffs"], 1);
    let mut d = diffs(&rep);
    d.sort();
    assert_eq!(
        d,
        [
            ("list:quicklist".to_string(), "value".to_string()),
            ("ttl:string".to_string(), "ttl".to_string()),
            ("zset:small".to_string(), "missing".to_string()),
        ]
    );
    let detail = rep["differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "value")
        .unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains("element 1500"), "{detail}");

    // The text report lists them and the summary; --max-diffs bounds the list.
    let src = dump.display().to_string();
    let o = rdbferry(&["verify", &src, "--to", &url, "--max-diffs", "1"], &[]);
    says(
        &o,
        1,
        &[
            "... and 2 more differences",
            "3 differing (1 missing, 0 type, 1 value, 1 ttl)",
        ],
    );
}

#[test]
fn every_type_is_compared_scores_members_fields_and_stream_groups() {
    let dump = testdata("redis-7.0/all-types.rdb");
    let (server, _dir) = server_with_dump(Path::new("redis-server"), &dump, &[]);
    let url = server.url();
    let member = server.cli(&["ZRANGE", "zset:big", "100", "100"]);
    server.cli(&["ZADD", "zset:big", "12345", &member]);
    let m = server.cli(&["SRANDMEMBER", "set:big"]);
    server.cli(&["SREM", "set:big", &m]);
    server.cli(&["HSET", "hash:small", "extra", "1"]);
    server.cli(&["SET", "string:embstr", "other"]);
    server.cli(&["-n", "5", "DEL", "db5:set"]);
    server.cli(&["-n", "5", "SET", "db5:set", "now a string"]);
    let id = server.cli(&["XPENDING", "stream:s1", "g1", "-", "+", "1"]);
    let id = id.lines().next().unwrap().to_string();
    server.cli(&["XACK", "stream:s1", "g1", &id]);
    let (code, rep, o) = verify_json(&dump, &url, &[]);
    let rep = rep.unwrap_or_else(|| panic!("{}", text(&o)));
    assert_eq!(code, 1);
    let mut d = diffs(&rep);
    d.sort();
    assert_eq!(
        d,
        [
            ("db5:set", "type"),
            ("hash:small", "value"),
            ("set:big", "value"),
            ("stream:s1", "value"),
            ("string:embstr", "value"),
            ("zset:big", "value"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string())),
        "{}",
        text(&o)
    ); // The actual type of a type difference is looked up.
    let t = rep["differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "type")
        .unwrap()["detail"]
        .clone();
    assert_eq!(t, "expected set, found string");
}

/// A 6.2 server that loaded a 6.2 dump is identical to it; as a live source (TTLs from
/// `PTTL`) it is identical to a 7.0 target filled by `import`; a moved TTL and a changed
/// value are found both ways.
#[test]
fn redis62_dump_against_a_62_server_and_as_a_source_against_70() {
    let Some(bin) = require_old_server("6.2") else {
        return;
    };
    let dump = testdata("redis-6.2/all-types.rdb");
    let (server, _dir) = server_with_dump(&bin, &dump, &[]);
    let dst = imported(&dump, &[]);
    let (file, live) = (dump.display().to_string(), server.url());
    let runs = [(&file, server.url()), (&live, dst.url())];
    for (src, to) in &runs {
        let (code, rep, o) = verify_json(src, to, &[]);
        let rep = rep.unwrap_or_else(|| panic!("{}", text(&o)));
        assert_eq!(code, 0, "{}", text(&o));
        assert_eq!(rep["keys_checked"], 56, "{}", text(&o));
    }
    let (_, rep, _) = verify_json(&file, &live, &[]);
    assert!(
        rep.unwrap()["target_version"]
            .as_str()
            .unwrap()
            .starts_with("6.2")
    );
    let (_, rep, _) = verify_json(&live, &dst.url(), &[]);
    let rep = rep.unwrap();
    assert!(rep["source_version"].as_str().unwrap().starts_with("6.2"));
    assert!(rep["target_version"].as_str().unwrap().starts_with("7."));
    // PTTL-derived TTLs on 6.2: a moved TTL is still found, on either side.
    server.cli(&["PEXPIREAT", "ttl:list", "9999999999999"]);
    server.cli(&["ZADD", "zset:small", "99", "newmember"]);
    for (src, to) in &runs {
        let (code, rep, o) = verify_json(src, to, &[]);
        let rep = rep.unwrap_or_else(|| panic!("{}", text(&o)));
        assert_eq!(code, 1, "{}", text(&o));
        assert_eq!(
            diffs(&rep),
            pairs(&[("ttl:list", "ttl"), ("zset:small", "value")])
        );
    }
    // And the other way: the 7.0 server as the source, the 6.2 one as the target.
    let (code, _, o) = verify_json(&dst.url(), &live, &["--key", "string:*"]);
    assert_eq!(code, 0, "{}", text(&o));
}

#[test]
fn redis60_target_without_multi_member_commands() {
    let Some(bin) = require_old_server("6.0") else {
        return;
    };
    let dump = testdata("redis-6.0/all-types.rdb");
    let (server, _dir) = server_with_dump(&bin, &dump, &[]);
    let (code, _, o) = verify_json(&dump, &server.url(), &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let m = server.cli(&["SRANDMEMBER", "set:small"]);
    server.cli(&["SREM", "set:small", &m]);
    let member = server.cli(&["ZRANGE", "zset:big", "3", "3"]);
    server.cli(&["ZADD", "zset:big", "-7.5", &member]);
    let (code, rep, o) = verify_json(&dump, &server.url(), &[]);
    assert_eq!(code, 1, "{}", text(&o));
    let mut d = diffs(&rep.unwrap());
    d.sort();
    assert_eq!(
        d,
        [("set:small", "value"), ("zset:big", "value")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
}

#[test]
fn filters_renames_and_db_map() {
    let dump = testdata("redis-7.0/all-types.rdb");
    let (server, _dir) = server_with_dump(Path::new("redis-server"), &dump, &[]);
    let url = server.url();
    server.cli(&["DEL", "zset:small"]);
    // Filtered out: the deleted key is not looked at.
    let (code, rep, o) = verify_json(&dump, &url, &["--key", "string:*"]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(rep.unwrap()["keys_checked"], 19);
    let (code, _, _) = verify_json(&dump, &url, &["--exclude-key", "zset:small"]);
    assert_eq!(code, 0);
    let (code, rep, _) = verify_json(&dump, &url, &["--type", "zset"]);
    assert_eq!(code, 1);
    assert_eq!(rep.unwrap()["missing"], 1);

    // db 5 checked in db 7: missing until the keys are moved there.
    let (code, rep, _) = verify_json(&dump, &url, &["--db", "5", "--db-map", "5=7"]);
    assert_eq!(code, 1);
    assert_eq!(rep.unwrap()["missing"], 3);
    for k in ["db5:hash", "db5:set", "db5:string"] {
        server.cli(&["-n", "5", "MOVE", k, "7"]);
    }
    let (code, rep, o) = verify_json(&dump, &url, &["--db", "5", "--db-map", "5=7"]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(rep.unwrap()["keys_checked"], 3);
    // The URL's db is where source db 0 goes.
    server.cli(&["MOVE", "string:empty", "7"]);
    let (code, _, o) = verify_json(&dump, &format!("{url}7"), &["--key", "string:empty"]);
    assert_eq!(code, 0, "{}", text(&o));
    let (code, _, _) = verify_json(&dump, &url, &["--key", "string:empty"]);
    assert_eq!(code, 1);

    // Renamed prefix.
    server.cli(&["RENAME", "hash:small", "moved:small"]);
    let (code, _, _) = verify_json(&dump, &url, &["--key", "hash:small"]);
    assert_eq!(code, 1);
    let (code, _, o) = verify_json(
        &dump,
        &url,
        &["--key", "hash:small", "--rename", "hash:=moved:"],
    );
    assert_eq!(code, 0, "{}", text(&o));
}

#[test]
fn big_values_are_compared_in_chunks() {
    let src = RedisServer::start();
    let n = 5000;
    let mut script = String::new();
    for i in 0..n {
        script += &format!(
            "RPUSH big:list item-{i}\nSADD big:set m-{i}\nZADD big:zset {i}.25 z-{i}\nHSET big:hash f-{i} v-{i}\nXADD big:stream {}-1 f v{i}\n",
            i + 1
        );
    }
    let p = src.dir().join("load.txt");
    fs::write(&p, script).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "redis-cli -p {} < {} > /dev/null",
            src.port(),
            p.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success());
    let big = "x".repeat(3 << 20);
    let q = src.dir().join("big.txt");
    fs::write(&q, &big).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "redis-cli -p {} -x SET big:string < {} > /dev/null",
            src.port(),
            q.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success());
    src.cli(&["XGROUP", "CREATE", "big:stream", "g", "0"]);
    src.cli(&[
        "XREADGROUP",
        "GROUP",
        "g",
        "c1",
        "COUNT",
        "3000",
        "STREAMS",
        "big:stream",
        ">",
    ]);
    let dump = src.save_and_copy_dump();
    drop(src);

    let (server, _dir) = server_with_dump(Path::new("redis-server"), &dump, &[]);
    let url = server.url();
    let (code, rep, o) = verify_json(&dump, &url, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(rep.unwrap()["keys_checked"], 6);

    server.cli(&["LSET", "big:list", "4321", "changed"]);
    server.cli(&["HSET", "big:hash", "f-4999", "changed"]);
    server.cli(&["ZADD", "big:zset", "1", "z-4500"]);
    server.cli(&["SREM", "big:set", "m-3333"]);
    server.cli(&["SETRANGE", "big:string", "2500000", "y"]);
    server.cli(&["XDEL", "big:stream", "4000-1"]);
    let (code, rep, o) = verify_json(&dump, &url, &[]);
    assert_eq!(code, 1, "{}", text(&o));
    let rep = rep.unwrap();
    assert_eq!(rep["value_diffs"], 6, "{}", text(&o));
    let details: Vec<String> = rep["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["detail"].as_str().unwrap().to_string())
        .collect();
    let all = details.join("\n");
    for want in [
        "element 4321",
        "field \"f-4999\"",
        "member \"z-4500\"",
        "member \"m-3333\" missing",
        "byte 2500000",
        "4000-1",
    ] {
        assert!(all.contains(want), "{want} not in\n{all}");
    }
    let _ = fs::remove_file(dump);
}

#[test]
fn expired_keys_are_not_differences() {
    let src = RedisServer::start();
    src.cli(&["SET", "stays", "1"]);
    src.cli(&["SET", "goes", "1", "PX", "1500"]);
    let dump = src.save_and_copy_dump();
    drop(src);
    let (server, _dir) = server_with_dump(Path::new("redis-server"), &dump, &[]);
    std::thread::sleep(std::time::Duration::from_millis(1700));
    // Present or not on the target, an expired key is counted, never reported.
    let (code, rep, o) = verify_json(&dump, &server.url(), &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let rep = rep.unwrap();
    assert_eq!(rep["keys_checked"], 1);
    assert_eq!(rep["expired_skipped"], 1);
    let _ = fs::remove_file(dump);
}

#[test]
fn appendonlydir_verifies_the_untouched_rdb_part_and_says_so() {
    let dir = TempDir::new("verify-aof");
    let aof = dir.path().join("appendonlydir");
    fs::create_dir_all(&aof).unwrap();
    for e in fs::read_dir(testdata("redis-7.0/appendonlydir")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), aof.join(e.file_name())).unwrap();
    }
    let d = dir.path().display().to_string();
    let server = RedisServer::start_with(
        Path::new("redis-server"),
        &[
            "--dir",
            &d,
            "--appendonly",
            "yes",
            "--dbfilename",
            "none.rdb",
        ],
    );
    let (code, rep, o) = verify_json(&testdata("redis-7.0/appendonlydir"), &server.url(), &[]);
    assert_eq!(code, 0, "{}", text(&o));
    let rep = rep.unwrap();
    assert!(rep["aof_commands"].as_u64().unwrap() > 0);
    assert!(rep["aof_keys_skipped"].as_u64().unwrap() > 0);
    assert!(rep["keys_checked"].as_u64().unwrap() > 0);
    let notes = rep["notes"].to_string();
    assert!(notes.contains("not replayed or verified"), "{notes}");
    drop(server);
}

#[test]
fn wrong_password_is_a_clear_error_and_never_printed() {
    let dump = testdata("redis-7.0/all-types.rdb");
    let (server, _dir) = server_with_dump(Path::new("redis-server"), &dump, &[]);
    // Set after start-up: the harness waits for an unauthenticated PING.
    server.cli(&["CONFIG", "SET", "requirepass", "Corr3ct-pw"]);
    let src = dump.display().to_string();
    let port = server.port();
    let url = format!("redis://:Wr0ng-pw-42@127.0.0.1:{port}");
    for json in [false, true] {
        let mut args = vec!["verify", &src, "--to", &url];
        if json {
            args.push("--json");
        }
        let redacted = format!("redis://:***@127.0.0.1:{port}");
        fails_saying(
            &args,
            &[],
            &["authentication failed", &redacted],
            "Wr0ng-pw-42",
        );
    }
    // From the environment, wrong then right.
    let bare = format!("redis://127.0.0.1:{port}");
    let o = rdbferry(
        &["verify", &src, "--to", &bare],
        &[("RDBFERRY_TO_PASSWORD", "Wr0ng-pw-42")],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(!text(&o).contains("Wr0ng-pw-42"));
    let o = rdbferry(&["verify", &src, "--to", &bare], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("RDBFERRY_TO_PASSWORD"), "{}", text(&o));
    let o = rdbferry(
        &["verify", &src, "--to", &bare],
        &[("RDBFERRY_TO_PASSWORD", "Corr3ct-pw")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!text(&o).contains("Corr3ct-pw"));
    // ACL user in the URL.
    server.cli(&[
        "-a",
        "Corr3ct-pw",
        "--no-auth-warning",
        "ACL",
        "SETUSER",
        "reader",
        "on",
        ">Us3r-pw",
        "~*",
        "+@read",
        "+info",
        "+select",
    ]);
    let url = format!("redis://reader:Us3r-pw@127.0.0.1:{port}");
    let o = rdbferry(&["verify", &src, "--to", &url], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!text(&o).contains("Us3r-pw"));
}

#[test]
fn unreachable_target_is_an_error() {
    let port = support::free_port();
    let src = testdata("redis-7.0/all-types.rdb").display().to_string();
    let o = rdbferry(
        &[
            "verify",
            &src,
            "--to",
            &format!("redis://u:Secr3t@127.0.0.1:{port}"),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    let all = text(&o);
    assert!(all.contains("cannot connect"), "{all}");
    assert!(!all.contains("Secr3t"), "{all}");
}

#[test]
fn rdb_on_stdin_is_verified_and_aof_on_stdin_is_refused() {
    let dump = testdata("redis-7.0/all-types.rdb");
    let (server, _dir) = server_with_dump(Path::new("redis-server"), &dump, &[]);
    let run = |file: &Path| {
        Command::new(env!("CARGO_BIN_EXE_rdbferry"))
            .args(["verify", "-", "--to", &server.url()])
            .stdin(fs::File::open(file).unwrap())
            .output()
            .unwrap()
    };
    let o = run(&dump);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("57 keys checked"));
    let o = run(&testdata("redis-6.2/appendonly.aof"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("give its path"), "{}", text(&o));
}

/// TLS: over rediss:// with the right CA the server is identical, and a changed value is
/// found (so the TLS path cannot pass vacuously); a CA that did not sign the server's
/// certificate is an error naming the certificate; --tls-insecure goes through with one
/// warning; a password in the URL works and is never printed, a wrong one neither.
#[test]
fn tls_target() {
    let certs = TestCerts::new();
    let dump = testdata("redis-7.0/all-types.rdb");
    let (server, _dir) = tls_server_with_dump(&certs, &dump);
    let (url, ca, other) = (server.url(), certs.ca(), certs.other_ca());
    assert!(url.starts_with("rediss://"), "{url}");

    let (code, rep, o) = verify_json(&dump, &url, &["--tls-ca", &ca]);
    let rep = rep.unwrap_or_else(|| panic!("{}", text(&o)));
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(rep["keys_checked"], 57, "{}", text(&o));

    let (code, _, o) = verify_json(&dump, &url, &["--tls-ca", &other]);
    assert_eq!(code, 1, "{}", text(&o));
    let all = text(&o);
    let port = server.port();
    assert!(
        all.contains(&format!("rediss://127.0.0.1:{port}")) && all.contains("certificate"),
        "{all}"
    );

    let (code, _, o) = verify_json(&dump, &url, &["--tls-ca", &other, "--tls-insecure"]);
    assert_eq!(code, 0, "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.matches("--tls-insecure").count(), 1, "{err}");

    server.cli(&["CONFIG", "SET", "requirepass", "Tls-pw-77"]);
    let wrong = format!("rediss://:Wr0ng-tls-pw@127.0.0.1:{port}");
    let (code, _, o) = verify_json(&dump, &wrong, &["--tls-ca", &ca]);
    assert_eq!(code, 1, "{}", text(&o));
    assert!(text(&o).contains("authentication failed"), "{}", text(&o));
    assert!(!text(&o).contains("Wr0ng-tls-pw"), "{}", text(&o));
    let right = format!("rediss://:Tls-pw-77@127.0.0.1:{port}");
    let (code, _, o) = verify_json(&dump, &right, &["--tls-ca", &ca]);
    assert_eq!(code, 0, "{}", text(&o));
    assert!(!text(&o).contains("Tls-pw-77"), "{}", text(&o));

    server.cli(&[
        "-a",
        "Tls-pw-77",
        "--no-auth-warning",
        "LSET",
        "list:quicklist",
        "1500",
        "changed",
    ]);
    let (code, rep, o) = verify_json(&dump, &right, &["--tls-ca", &ca]);
    let rep = rep.unwrap_or_else(|| panic!("{}", text(&o)));
    assert_eq!(code, 1, "{}", text(&o));
    assert_eq!(
        diffs(&rep),
        [("list:quicklist".to_string(), "value".to_string())]
    );
}

/// redis:// against a TLS-only port: an error that says to use rediss://.
#[test]
fn plain_url_against_a_tls_port_says_so() {
    let certs = TestCerts::new();
    let server = RedisServer::start_tls(&certs, &[]);
    let url = format!("redis://127.0.0.1:{}", server.port());
    let (code, _, o) = verify_json(&testdata("redis-7.0/all-types.rdb"), &url, &[]);
    assert_eq!(code, 1, "{}", text(&o));
    assert!(text(&o).contains("use rediss://"), "{}", text(&o));
}

// A live source: `verify redis://... --to ...`.

/// An empty Redis 7.0 into which `rdbferry import` loaded `dump` (the way users get there).
fn imported(dump: &Path, extra: &[&str]) -> RedisServer {
    let server = RedisServer::start();
    let d = dump.display().to_string();
    let url = server.url();
    let mut args = vec!["import", &d, "--to", &url, "--quiet"];
    args.extend_from_slice(extra);
    let o = rdbferry(&args, &[]);
    assert_eq!(o.status.code(), Some(0), "import: {}", text(&o));
    server
}

/// The source and target of a finished migration: a Redis 7.0 that loaded
/// `redis-7.0/all-types.rdb` at start-up (with the TempDir holding its copy), and an empty one
/// that `rdbferry import` filled from the same file.
fn live_pair() -> (RedisServer, TempDir, RedisServer) {
    let dump = testdata("redis-7.0/all-types.rdb");
    let (src, dir) = server_with_dump(Path::new("redis-server"), &dump, &[]);
    (src, dir, imported(&dump, &[]))
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn live_source_is_identical_then_a_value_a_key_and_a_ttl_are_found() {
    let (src, _dir, dst) = live_pair();
    let (code, rep, o) = verify_json(&src.url(), &dst.url(), &[]);
    let rep = rep.unwrap_or_else(|| panic!("{}", text(&o)));
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(rep["keys_checked"], 57, "{}", text(&o));
    assert_eq!(rep["source_version"], src.version());
    assert_eq!(rep["source_vanished"], 0);

    // On the target: a value changed deep inside a big list (compared in chunks), a key
    // deleted in db 5, a TTL moved.
    dst.cli(&["LSET", "list:quicklist", "1500", "changed"]);
    dst.cli(&["-n", "5", "DEL", "db5:hash"]);
    dst.cli(&["PEXPIREAT", "ttl:string", "9999999999999"]);
    // On the source: a key deleted since the migration is no longer compared.
    src.cli(&["DEL", "zset:small"]);
    let (code, rep, o) = verify_json(&src.url(), &dst.url(), &[]);
    let rep = rep.unwrap_or_else(|| panic!("{}", text(&o)));
    assert_eq!(code, 1, "{}", text(&o));
    assert_eq!(rep["keys_checked"], 56, "{}", text(&o));
    assert_eq!(
        diffs(&rep),
        pairs(&[
            ("db5:hash", "missing"),
            ("list:quicklist", "value"),
            ("ttl:string", "ttl"),
        ])
    );

    // The text report names each key.
    let o = rdbferry(&["verify", &src.url(), "--to", &dst.url()], &[]);
    says(
        &o,
        1,
        &[
            "db0 list:quicklist: value: element 1500",
            "db5 db5:hash: missing",
            "db0 ttl:string: ttl",
            "3 differing (1 missing, 0 type, 1 value, 1 ttl)",
        ],
    );
}

#[test]
fn changes_on_the_source_after_the_migration_are_found() {
    let (src, _dir, dst) = live_pair();
    src.cli(&["HSET", "hash:small", "extra", "1"]);
    src.cli(&["SET", "new:key", "v"]);
    src.cli(&["-n", "5", "SADD", "db5:set", "another"]);
    src.cli(&["PERSIST", "ttl:string"]);
    let (code, rep, o) = verify_json(&src.url(), &dst.url(), &[]);
    let rep = rep.unwrap_or_else(|| panic!("{}", text(&o)));
    assert_eq!(code, 1, "{}", text(&o));
    assert_eq!(
        diffs(&rep),
        pairs(&[
            ("db5:set", "value"),
            ("hash:small", "value"),
            ("new:key", "missing"),
            ("ttl:string", "ttl"),
        ])
    );
}

/// A Cluster source, with one slot half-migrated (its keys split between two nodes, the
/// importing node answering MOVED for them until asked with ASKING); a standalone source
/// against a Cluster target.
#[test]
fn cluster_source_and_cluster_target() {
    let dump = testdata("redis-7.0/all-types.rdb");
    let (plain, _dir) = server_with_dump(Path::new("redis-server"), &dump, &[]);
    let cluster = RedisCluster::start(3);
    for i in 0..20 {
        plain.cli(&["SET", &format!("{{tag}}:{i}"), &format!("v{i}")]);
    }
    let copied = cluster.copy_from(&plain);
    // db 0 of the dump holds 50 keys (db 1 and db 5 the rest).
    assert_eq!(copied, 50 + 20);
    let slot = cluster.key_slot("{tag}:0");
    let from = cluster.owner(slot);
    let to = (from + 1) % 3;
    cluster.start_migration(slot, from, to);
    let moved = cluster.migrate_keys(slot, from, to, 10);
    assert_eq!(moved, 10);

    let seed = cluster.seed_url();
    let (code, rep, o) = verify_json(&seed, &plain.url(), &[]);
    let rep = rep.unwrap_or_else(|| panic!("{}", text(&o)));
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(rep["keys_checked"], 70, "{}", text(&o));
    assert_eq!(rep["source_redirects"], 10, "{}", text(&o));

    // The other way, a Cluster target: only db 0 exists there.
    let (code, rep, o) = verify_json(&plain.url(), &seed, &["--db", "0"]);
    let rep = rep.unwrap_or_else(|| panic!("{}", text(&o)));
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(rep["keys_checked"], 70, "{}", text(&o));
    let (code, _, o) = verify_json(&plain.url(), &seed, &[]);
    assert_eq!(code, 1, "{}", text(&o));
    assert!(text(&o).contains("only db 0"), "{}", text(&o));

    // A change in the Cluster is found from both sides (one migrated key included).
    let node = cluster.owner(cluster.key_slot("hash:small"));
    cluster.cli_on(node, &["HSET", "hash:small", "extra", "1"]);
    plain.cli(&["SET", "{tag}:3", "changed"]);
    let (code, rep, o) = verify_json(&seed, &plain.url(), &[]);
    assert_eq!(code, 1, "{}", text(&o));
    assert_eq!(
        diffs(&rep.unwrap()),
        pairs(&[("hash:small", "value"), ("{tag}:3", "value")])
    );
    let (code, rep, o) = verify_json(&plain.url(), &seed, &["--db", "0"]);
    assert_eq!(code, 1, "{}", text(&o));
    assert_eq!(
        diffs(&rep.unwrap()),
        pairs(&[("hash:small", "value"), ("{tag}:3", "value")])
    );
}

#[test]
fn filters_db_map_and_renames_apply_to_a_live_source() {
    let (src, _dir, dst) = live_pair();
    let (s, d) = (src.url(), dst.url());
    dst.cli(&["DEL", "zset:small"]);
    let (code, rep, o) = verify_json(&s, &d, &["--key-regex", "^string:"]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(rep.unwrap()["keys_checked"], 19);
    let (code, rep, o) = verify_json(&s, &d, &["--key-regex", "^zset:"]);
    assert_eq!(code, 1, "{}", text(&o));
    assert_eq!(diffs(&rep.unwrap()), pairs(&[("zset:small", "missing")]));
    let (code, _, o) = verify_json(&s, &d, &["--exclude-key", "zset:small"]);
    assert_eq!(code, 0, "{}", text(&o));
    let (code, rep, _) = verify_json(&s, &d, &["--type", "zset"]);
    assert_eq!(code, 1);
    assert_eq!(rep.unwrap()["missing"], 1);

    // db 5 of the source checked in db 7 of the target.
    for k in ["db5:hash", "db5:set", "db5:string"] {
        dst.cli(&["-n", "5", "MOVE", k, "7"]);
    }
    let (code, rep, _) = verify_json(&s, &d, &["--db", "5"]);
    assert_eq!(code, 1);
    assert_eq!(rep.unwrap()["missing"], 3);
    let (code, rep, o) = verify_json(&s, &d, &["--db", "5", "--db-map", "5=7"]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(rep.unwrap()["keys_checked"], 3);
    // A /db in the source URL reads that db only.
    let (code, rep, o) = verify_json(&format!("{s}5"), &d, &["--db-map", "5=7"]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(rep.unwrap()["keys_checked"], 3);

    // A renamed prefix.
    dst.cli(&["RENAME", "hash:small", "moved:small"]);
    let (code, _, _) = verify_json(&s, &d, &["--key", "hash:small"]);
    assert_eq!(code, 1);
    let (code, _, o) = verify_json(&s, &d, &["--key", "hash:small", "--rename", "hash:=moved:"]);
    assert_eq!(code, 0, "{}", text(&o));
}

#[test]
fn source_password_errors_are_clear_and_never_print_it() {
    let (src, _dir, dst) = live_pair();
    src.cli(&["CONFIG", "SET", "requirepass", "Src-pw-91"]);
    let port = src.port();
    let wrong = format!("redis://:Wr0ng-src-pw@127.0.0.1:{port}");
    let redacted = format!("redis://:***@127.0.0.1:{port}");
    fails_saying(
        &["verify", &wrong, "--to", &dst.url()],
        &[],
        &["authentication failed", &redacted],
        "Wr0ng-src-pw",
    );

    // No password: the message names the source's variable, not the target's.
    let bare = format!("redis://127.0.0.1:{port}");
    let args = ["verify", &bare, "--to", &dst.url()];
    fails_saying(
        &args,
        &[("RDBFERRY_TO_PASSWORD", "Src-pw-91")],
        &["RDBFERRY_FROM_PASSWORD"],
        "Src-pw-91",
    );
    fails_saying(
        &args,
        &[("RDBFERRY_FROM_PASSWORD", "Wr0ng-src-pw")],
        &["authentication failed"],
        "Wr0ng-src-pw",
    );
    let o = rdbferry(
        &["verify", &bare, "--to", &dst.url()],
        &[("RDBFERRY_FROM_PASSWORD", "Src-pw-91")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!text(&o).contains("Src-pw-91"), "{}", text(&o));

    // An ACL user without DUMP: an error naming the key's command, not a pass.
    let acl = "-a Src-pw-91 --no-auth-warning ACL SETUSER nodump on >Us3r-pw ~* +@read +info +select -dump";
    src.cli(&acl.split(' ').collect::<Vec<_>>());
    let url = format!("redis://nodump:Us3r-pw@127.0.0.1:{port}");
    fails_saying(
        &["verify", &url, "--to", &dst.url()],
        &[],
        &["DUMP"],
        "Us3r-pw",
    );
}

#[test]
fn tls_source() {
    let certs = TestCerts::new();
    let dump = testdata("redis-7.0/all-types.rdb");
    let (src, _dir) = tls_server_with_dump(&certs, &dump);
    let dst = imported(&dump, &[]);
    let url = src.url();
    assert!(url.starts_with("rediss://"), "{url}");
    let (ca, other) = (certs.ca(), certs.other_ca());

    let (code, rep, o) = verify_json(&url, &dst.url(), &["--from-tls-ca", &ca]);
    let rep = rep.unwrap_or_else(|| panic!("{}", text(&o)));
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(rep["keys_checked"], 57);
    // --tls-ca is the target's: the source's certificate is then checked against the
    // system roots and refused.
    let (code, _, o) = verify_json(&url, &dst.url(), &["--from-tls-ca", &other]);
    assert_eq!(code, 1, "{}", text(&o));
    assert!(text(&o).contains("certificate"), "{}", text(&o));
    let (code, _, o) = verify_json(&url, &dst.url(), &["--from-tls-insecure"]);
    assert_eq!(code, 0, "{}", text(&o));
    assert!(text(&o).contains("--from-tls-insecure"), "{}", text(&o));
    // Source TLS flags for a file or a plain source are refused, not ignored.
    let file = dump.display().to_string();
    let (code, _, o) = verify_json(&file, &dst.url(), &["--from-tls-insecure"]);
    assert_eq!(code, 1, "{}", text(&o));
    assert!(text(&o).contains("--from-tls-"), "{}", text(&o));
    let plain = format!("redis://127.0.0.1:{}", src.port());
    let (code, _, o) = verify_json(&plain, &dst.url(), &["--from-tls-insecure"]);
    assert_eq!(code, 1, "{}", text(&o));
    assert!(text(&o).contains("rediss://"), "{}", text(&o));
}

#[test]
fn unreachable_source_is_an_error_naming_it() {
    let dst = RedisServer::start();
    let port = support::free_port();
    let url = format!("redis://u:Secr3t@127.0.0.1:{port}");
    let o = rdbferry(&["verify", &url, "--to", &dst.url()], &[]);
    assert_eq!(o.status.code(), Some(1));
    let all = text(&o);
    assert!(all.contains(&format!("127.0.0.1:{port}")), "{all}");
    assert!(all.contains("cannot connect"), "{all}");
    assert!(!all.contains("Secr3t"), "{all}");
}

// `--via snapshot`: the target's own RDB, compared by digest.

/// `verify --json` of `dump` against `s` with `extra`: the report and the exit code.
fn report(dump: &Path, s: &RedisServer, extra: &[&str]) -> (serde_json::Value, Option<i32>) {
    let (code, v, o) = verify_json(&dump, &s.url(), extra);
    (v.unwrap_or_else(|| panic!("{}", text(&o))), Some(code))
}

#[test]
fn snapshot_of_every_imported_dump_is_identical() {
    for dump in [
        "redis-7.0/all-types.rdb",
        "redis-6.2/all-types.rdb",
        "redis-6.0/all-types.rdb",
    ] {
        let dump = testdata(dump);
        // Both import paths: full sync, and commands (other encodings on the target).
        for via in ["full-sync", "commands"] {
            let s = imported(&dump, &["--via", via]);
            let (r, code) = report(&dump, &s, &["--via", "snapshot"]);
            assert_eq!(code, Some(0), "{r}");
            assert_eq!(r["via"], "snapshot", "{r}");
            assert!(r["keys_checked"].as_u64().unwrap() > 50, "{r}");
            // The settings changed for the snapshot are back.
            assert!(s.cli(&["CONFIG", "GET", "rdbcompression"]).ends_with("yes"));
            assert!(
                s.cli(&["CONFIG", "GET", "repl-diskless-sync-delay"])
                    .ends_with('5')
            );
        }
    }
}

#[test]
fn snapshot_differences_are_then_named_key_by_key() {
    let dump = testdata("redis-7.0/all-types.rdb");
    // One change of each kind; the snapshot differs, and the key-by-key pass names it.
    for (change, want) in [
        (&["SET", "string:raw", "changed"][..], "value_diffs"),
        (&["DEL", "hash:small"][..], "missing"),
        (&["SADD", "set:small", "extra-member"][..], "value_diffs"),
        (&["ZADD", "zset:small", "99", "a"][..], "value_diffs"),
        (
            &["PEXPIREAT", "string:raw", "4102444800000"][..],
            "ttl_diffs",
        ),
    ] {
        let s = imported(&dump, &[]);
        s.cli(change);
        let (r, code) = report(&dump, &s, &[]);
        assert_eq!(code, Some(1), "{change:?}: {r}");
        assert_eq!(r["via"], "commands", "{r}");
        assert!(r["snapshot"].as_str().unwrap().contains("differs"), "{r}");
        assert!(r[want].as_u64().unwrap() >= 1, "{change:?}: {r}");
    }
    // A TTL moved within the tolerance: the snapshot differs, the keys do not.
    let s = imported(&dump, &[]);
    let at: i64 = s.cli(&["PEXPIRETIME", "ttl:string"]).parse().unwrap();
    assert!(at > 0);
    s.cli(&["PEXPIREAT", "ttl:string", &(at + 1000).to_string()]);
    let (r, code) = report(&dump, &s, &[]);
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(r["via"], "commands", "{r}");
}

#[test]
fn snapshot_is_not_used_where_it_cannot_tell() {
    let dump = testdata("redis-7.0/all-types.rdb");
    let s = imported(&dump, &[]);
    // Filters: the target holds other keys too.
    let (r, code) = report(&dump, &s, &["--key", "string:*"]);
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(r["via"], "commands");
    assert!(r["snapshot"].as_str().unwrap().contains("filters"), "{r}");
    let o = rdbferry(
        &[
            "verify",
            &dump.display().to_string(),
            "--to",
            &s.url(),
            "--via",
            "snapshot",
            "--key",
            "x",
        ],
        &[],
    );
    says(&o, 1, &["--via snapshot: filters"]);
    // A user without SYNC rights: key by key.
    s.cli(&[
        "ACL", "SETUSER", "reader", "on", ">pw", "~*", "+@all", "-sync", "-psync",
    ]);
    let url = format!("redis://reader:pw@127.0.0.1:{}", s.port());
    let o = rdbferry(
        &[
            "verify",
            &dump.display().to_string(),
            "--to",
            &url,
            "--json",
            "-q",
        ],
        &[],
    );
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(o.status.code(), Some(0), "{r}");
    assert_eq!(r["via"], "commands", "{r}");
    assert!(!text(&o).contains(":pw@"), "{}", text(&o));
}
