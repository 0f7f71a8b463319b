//! Checks of the test harness itself (`tests/support/`): that it starts real servers, that
//! they answer, and that `DEBUG DIGEST` means what the other tests assume it means.

mod support;

use std::fs;

use support::{RedisServer, require_old_server};

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
