//! Checks of the test harness itself (`tests/support/`): that it starts real servers, that
//! they answer, that `DEBUG DIGEST` means what the other tests assume it means, and that
//! [`Snapshot`] catches what the digest does not (an expiry time, a stream's groups).

mod support;

use std::fs;

use support::{RedisServer, Snapshot, require_old_server};

/// The digest of an empty server.
const EMPTY_DIGEST: &str = "0000000000000000000000000000000000000000";

#[test]
fn system_server_set_get_and_digest() {
    let server = RedisServer::start();
    assert!(
        server.version().starts_with("7."),
        "got {}",
        server.version()
    );
    assert!(server.port() < 55535);
    assert_eq!(
        server.url(),
        format!("redis://127.0.0.1:{}/", server.port())
    );

    assert_eq!(server.digest(), EMPTY_DIGEST);
    assert_eq!(server.cli(&["SET", "greeting", "hello world"]), "OK");
    assert_eq!(server.cli(&["GET", "greeting"]), "hello world");
    let after_set = server.digest();
    assert_ne!(after_set, EMPTY_DIGEST);
    server.cli(&["PEXPIREAT", "greeting", "4102444800000"]);
    assert_ne!(server.digest(), after_set, "a TTL must change the digest");

    let dump = server.save_and_copy_dump();
    let bytes = fs::read(&dump).unwrap();
    assert!(bytes.starts_with(b"REDIS0010"), "{}", dump.display());
    assert!(server.dir().join("dump.rdb").is_file());
    let _ = fs::remove_file(dump);
}

#[test]
fn old_server_6_2_matches_7_0_digest() {
    let Some(binary) = require_old_server("6.2") else {
        return;
    };
    let old = RedisServer::start_with(&binary, &[]);
    assert!(old.version().starts_with("6.2."), "got {}", old.version());
    let new = RedisServer::start();
    assert_ne!(old.port(), new.port());

    for server in [&old, &new] {
        server.cli(&["SET", "k", "v"]);
        server.cli(&["RPUSH", "l", "1", "2", "three"]);
        server.cli(&["HSET", "h", "f", "v"]);
        assert_eq!(server.cli(&["GET", "k"]), "v");
    }
    // Same values, different encodings (ziplist vs listpack): the same digest.
    assert_ne!(old.digest(), EMPTY_DIGEST);
    assert_eq!(old.digest(), new.digest());

    let dump = old.save_and_copy_dump();
    assert!(fs::read(&dump).unwrap().starts_with(b"REDIS0009"));
    let _ = fs::remove_file(dump);
}

#[test]
#[should_panic(expected = "no-such-option")]
fn start_failure_reports_the_server_output() {
    RedisServer::start_with(
        std::path::Path::new("redis-server"),
        &["--no-such-option", "1"],
    );
}

/// A stream with a group, two consumers and pending entries, and keys with TTLs.
fn groups_and_ttls(s: &RedisServer) {
    for i in 1..=4 {
        s.cli(&["XADD", "st", &format!("{i}-0"), "f", "v"]);
    }
    s.cli(&["XGROUP", "CREATE", "st", "g", "0"]);
    s.cli(&[
        "XREADGROUP",
        "GROUP",
        "g",
        "alice",
        "COUNT",
        "2",
        "STREAMS",
        "st",
        ">",
    ]);
    s.cli(&[
        "XREADGROUP",
        "GROUP",
        "g",
        "bob",
        "COUNT",
        "1",
        "STREAMS",
        "st",
        ">",
    ]);
    s.cli(&["SET", "ttl", "v", "PXAT", "4102444800000"]);
    s.cli(&["-n", "3", "SET", "ttl3", "v", "PXAT", "4102444800000"]);
}

#[test]
fn snapshot_sees_what_the_digest_does_not() {
    let (a, b) = (RedisServer::start(), RedisServer::start());
    groups_and_ttls(&a);
    groups_and_ttls(&b);
    // Taken at different times: seen and delivery times differ, and do not count.
    std::thread::sleep(std::time::Duration::from_millis(5));
    b.cli(&["XCLAIM", "st", "g", "alice", "0", "3-0", "JUSTID"]);
    b.cli(&["XCLAIM", "st", "g", "bob", "0", "3-0", "JUSTID"]);
    Snapshot::of(&a).assert_same(&Snapshot::of(&b));

    // Each change below keeps the digest and is a difference.
    let changes: [&[&str]; 5] = [
        &["PEXPIREAT", "ttl", "4102444800001"],
        &["-n", "3", "PEXPIREAT", "ttl3", "4102444800001"],
        &["XGROUP", "SETID", "st", "g", "4-0"],
        &["XACK", "st", "g", "1-0"],
        &["XGROUP", "CREATECONSUMER", "st", "g", "carol"],
    ];
    for change in changes {
        let c = RedisServer::start();
        groups_and_ttls(&c);
        let before = c.digest();
        c.cli(change);
        assert_eq!(c.digest(), before, "{change:?} changed the digest");
        let d = Snapshot::of(&a).diff(&Snapshot::of(&c));
        assert!(!d.is_empty(), "{change:?} not seen");
        eprintln!("{change:?}: {d:?}");
    }
    // A listing's expiry times count too.
    let s = RedisServer::start();
    s.cli(&["SET", "k", "v", "PXAT", "4102444800000"]);
    let listing = support::TempDir::new("listing");
    let path = listing.path().join("x.expect.json");
    let text = format!(
        r#"{{"server_version": "{}", "debug_digest": "{}", "keys": [{{"db": 0, "key": "k",
        "type": "string", "pttl": 1, "pexpiretime": 4102444800001, "value": "v"}}]}}"#,
        s.version(),
        s.digest()
    );
    fs::write(&path, text).unwrap();
    let d = Snapshot::from_listing(&path).diff(&Snapshot::of(&s));
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].contains("4102444800001"), "{d:?}");
}

#[test]
fn snapshot_of_6_x_compares_ttls_with_a_tolerance() {
    let Some(binary) = require_old_server("6.0") else {
        return;
    };
    let old = RedisServer::start_with(&binary, &[]);
    let new = RedisServer::start();
    for s in [&old, &new] {
        s.cli(&["SET", "k", "v"]);
        s.cli(&["PEXPIREAT", "k", "4102444800000"]);
    }
    Snapshot::of(&new).assert_same(&Snapshot::of(&old));
    old.cli(&["PEXPIREAT", "k", "4102454800000"]);
    assert!(!Snapshot::of(&new).diff(&Snapshot::of(&old)).is_empty());
}

#[test]
fn cli_panics_on_any_error_reply() {
    let s = RedisServer::start();
    s.cli(&["ACL", "SETUSER", "u", "on", ">pw", "~*", "+get"]);
    for args in [
        &["FOO"][..],
        &[
            "--user",
            "u",
            "--pass",
            "pw",
            "--no-auth-warning",
            "SET",
            "a",
            "1",
        ],
        &["SET", "a", "1", "XX", "NX"],
    ] {
        let r = std::panic::catch_unwind(|| s.cli(args));
        assert!(r.is_err(), "{args:?}: {r:?}");
    }
    assert_eq!(s.cli(&["SET", "x", "ERR not an error"]), "OK");
    assert_eq!(s.cli(&["GET", "x"]), "ERR not an error");
}
