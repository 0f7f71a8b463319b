//! TLS with a self-signed server certificate, the kind most Redis TLS set-ups start with
//! (issue 8): given with `--tls-ca`, it is trusted when the server presents exactly that
//! certificate, as `redis-cli --tls --cacert` does, and its names are still checked.

mod support;

use support::ferry::rdbferry;
use support::{RedisServer, TestCerts, assert_listing, testdata};

/// The run's exit code and stderr.
fn run(args: &[&str]) -> (Option<i32>, String) {
    let o = rdbferry(args);
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

const DUMP: &str = "redis-7.0/all-types.rdb";

/// With `ca` for the server at `url`, import and verify to it, and verify from it as a live
/// source (`target_ok`: the target side's flags), fail with `want` in the message.
fn refused_everywhere(url: &str, ca: &str, target_ok: &[&str], want: &str) {
    let dump = testdata(DUMP);
    let mut live = vec!["verify", url, "--from-tls-ca", ca, "--to", url];
    live.extend_from_slice(target_ok);
    for args in [
        &["import", &dump, "--to", url, "--tls-ca", ca][..],
        &["verify", &dump, "--to", url, "--tls-ca", ca],
        &live,
    ] {
        let (code, err) = run(args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// Issue 8 ("TLS with the usual self-signed certificate fails"): a server certificate made by
/// `openssl req -x509 ... -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost`
/// and given with `--tls-ca` was refused ("CaUsedAsEndEntity"). Now import and verify reach
/// the server by its address and by its name, as target and as a live source; another
/// self-signed certificate with the same names is still refused.
#[test]
fn issue8_self_signed_server_certificate_given_with_tls_ca() {
    let certs = TestCerts::self_signed("localhost", "IP:127.0.0.1,DNS:localhost");
    let s = RedisServer::start_tls(&certs, &[]);
    let (dump, cert, port) = (testdata(DUMP), certs.server_cert(), s.port());
    for host in ["127.0.0.1", "localhost"] {
        s.cli(&["FLUSHALL"]);
        s.cli(&["FUNCTION", "FLUSH"]);
        let url = format!("rediss://{host}:{port}");
        let (code, err) = run(&["import", &dump, "--to", &url, "--tls-ca", &cert, "-q"]);
        assert_eq!(code, Some(0), "{url}: {err}");
        eprintln!("{url}");
        assert_listing(&s, DUMP);
        let (code, err) = run(&["verify", &dump, "--to", &url, "--tls-ca", &cert, "-q"]);
        assert_eq!(code, Some(0), "{url}: {err}");
        // The same server as a live source (--from-tls-ca) and as the target.
        let args = [
            "verify",
            &url,
            "--from-tls-ca",
            &cert,
            "--to",
            &url,
            "--tls-ca",
            &cert,
        ];
        let (code, err) = run(&args);
        assert_eq!(code, Some(0), "{url}: {err}");
    }

    let url = format!("rediss://127.0.0.1:{port}");
    let want = "not signed by a trusted CA";
    refused_everywhere(&url, &certs.other_ca(), &["--tls-ca", &cert], want);
}

/// Issue 8: trusting the self-signed certificate does not trust it for any host. A
/// certificate that names only `other.example` is refused at 127.0.0.1 with the usual "does
/// not name this host" message, for import and verify, target and live source.
#[test]
fn issue8_self_signed_certificate_still_checks_the_host_name() {
    let certs = TestCerts::self_signed("other.example", "DNS:other.example");
    let s = RedisServer::start_tls(&certs, &[]);
    let url = format!("rediss://127.0.0.1:{}", s.port());
    let cert = certs.server_cert();
    refused_everywhere(&url, &cert, &["--tls-insecure"], "does not name this host");
    assert_eq!(s.cli(&["DBSIZE"]), "0");
}
