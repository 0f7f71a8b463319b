//! Test harness: private `redis-server` processes for integration tests.
//!
//! Each [`RedisServer`] runs on a free loopback port in its own temp dir, with persistence off
//! (`--save "" --appendonly no`), and is killed by pid when dropped. Tests talk to it with
//! `redis-cli` ([`RedisServer::cli`]) or with the `redis` crate through [`RedisServer::url`].
//! Modelled on redis-rs `redis-test/src/server.rs`.
//!
//! Use it from an integration test with `mod support;`. Not every test uses every helper, hence
//! the `dead_code` allowance.
//!
//! TLS: [`TestCerts`] makes a CA, a server certificate for 127.0.0.1 and a client certificate
//! with the `openssl` CLI (or a single self-signed certificate, [`TestCerts::self_signed`]); [`RedisServer::start_tls`] starts a server that listens on TLS only,
//! and the harness's own `PING` and [`RedisServer::cli`] then go through `redis-cli --tls`.
//!
//! Older servers (6.2, 6.0) come from `scripts/fetch-old-servers.sh`; see [`old_server`] and
//! [`require_old_server`]. This module deliberately knows nothing about rdbferry itself
//! (only where the repository keeps its `testdata/`).
#![allow(dead_code)]

mod data;
pub mod fake;
pub mod ferry;
pub mod writes;
#[allow(unused_imports)]
pub use data::*;

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a server gets to answer `PING` after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Cluster nodes listen on port + 10000, so test ports stay below this.
const MAX_PORT: u16 = 55535;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Server arguments that rename `PSYNC` and `SYNC` away, as managed services do.
pub const NO_REPLICATION: [&str; 6] = [
    "--rename-command",
    "PSYNC",
    "",
    "--rename-command",
    "SYNC",
    "",
];

/// `testdata/P` of this repository, as a path string.
pub fn testdata(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(p)
        .display()
        .to_string()
}

/// The `DEBUG DIGEST` the server that wrote `testdata/P` reported (from `P.expect.json`).
pub fn expect_digest(p: &str) -> String {
    let text = fs::read_to_string(testdata(&format!("{p}.expect.json"))).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["debug_digest"].as_str().unwrap().to_string()
}

/// The names of the entries of `dir`, sorted.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A directory under the system temp dir, removed on drop. (A few lines instead of a
/// `tempfile` dev-dependency.)
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "rdbferry-{prefix}-{}-{n}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create temp dir {}: {e}", path.display()));
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A `redis-server` child process on 127.0.0.1, stopped when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: TempDir,
    binary: PathBuf,
    version: String,
    /// The arguments it was started with (for [`RedisServer::restart`]).
    args: Vec<String>,
    /// `redis-cli` flags for a TLS-only server (certificates copied into `dir`), else empty.
    tls_cli: Vec<String>,
}

/// Certificates for TLS tests, made with the `openssl` CLI in a temp dir: a CA, a server
/// certificate for `IP:127.0.0.1` and a client certificate (both signed by the CA), and a
/// second CA that signed neither. Keys are P-256, unencrypted PEM.
#[derive(Debug)]
pub struct TestCerts {
    dir: TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCerts {
    pub fn new() -> TestCerts {
        let dir = TempDir::new("certs");
        let d = dir.path();
        let key = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let (k, c, subj) = (
                format!("{ca}.key"),
                format!("{ca}.crt"),
                format!("/CN=rdbferry test {ca}"),
            );
            let mut args = vec!["req", "-x509"];
            args.extend_from_slice(&key);
            args.extend_from_slice(&["-keyout", &k, "-out", &c, "-days", "2", "-subj", &subj]);
            args.extend_from_slice(&[
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
            openssl(d, &args);
        }
        for (name, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
            ),
            (
                "client",
                "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
            ),
        ] {
            let (k, csr, c, e) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
                format!("{name}.ext"),
            );
            fs::write(d.join(&e), ext).unwrap();
            let subj = format!("/CN=rdbferry test {name}");
            let mut args = vec!["req"];
            args.extend_from_slice(&key);
            args.extend_from_slice(&["-keyout", &k, "-out", &csr, "-subj", &subj]);
            openssl(d, &args);
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &c,
                    "-days",
                    "2",
                    "-extfile",
                    &e,
                ],
            );
        }
        TestCerts { dir }
    }

    /// A self-signed server certificate made the usual way, with exactly
    /// `openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=<cn> -addext subjectAltName=<san>`
    /// (OpenSSL marks it `CA:TRUE`). It is also [`TestCerts::ca`] (what a user gives to
    /// `--tls-ca`) and the client certificate; [`TestCerts::other_ca`] is a second certificate
    /// made by the same command (same names, another key).
    pub fn self_signed(cn: &str, san: &str) -> TestCerts {
        let dir = TempDir::new("certs");
        let d = dir.path();
        let subj = format!("/CN={cn}");
        let san = format!("subjectAltName={san}");
        for (key, cert) in [("server.key", "server.crt"), ("other.key", "other-ca.crt")] {
            let args = [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", &subj,
            ];
            let mut args = args.to_vec();
            args.extend_from_slice(&["-addext", &san, "-keyout", key, "-out", cert]);
            openssl(d, &args);
        }
        for (from, to) in [
            ("server.crt", "ca.crt"),
            ("server.crt", "client.crt"),
            ("server.key", "client.key"),
        ] {
            fs::copy(d.join(from), d.join(to)).unwrap();
        }
        TestCerts { dir }
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The CA that signed the server and client certificates.
    pub fn ca(&self) -> String {
        self.file("ca.crt")
    }

    /// A CA that signed nothing here: trusting only it must fail.
    pub fn other_ca(&self) -> String {
        self.file("other-ca.crt")
    }

    pub fn server_cert(&self) -> String {
        self.file("server.crt")
    }

    pub fn server_key(&self) -> String {
        self.file("server.key")
    }

    pub fn client_cert(&self) -> String {
        self.file("client.crt")
    }

    pub fn client_key(&self) -> String {
        self.file("client.key")
    }
}

impl RedisServer {
    /// Starts the system `redis-server` (Redis 7.0 on Debian) with `DEBUG` enabled.
    pub fn start() -> RedisServer {
        RedisServer::start_with(Path::new("redis-server"), &[])
    }

    /// Starts `binary` with the harness defaults followed by `extra_args`.
    ///
    /// `--enable-debug-command yes` is passed only to 7.0 and later: 6.x has `DEBUG` on
    /// without it and refuses unknown options at start-up.
    pub fn start_with(binary: &Path, extra_args: &[&str]) -> RedisServer {
        RedisServer::start_inner(binary, extra_args, None)
    }

    /// A 7.0 server that writes every command to its `appendonlydir` before answering, with
    /// `#TS:` annotations: a source for AOF tailing.
    pub fn aof_source() -> RedisServer {
        RedisServer::start_with(
            Path::new("redis-server"),
            &[
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--aof-timestamp-enabled",
                "yes",
            ],
        )
    }

    /// Starts the system `redis-server` listening on TLS only (`--port 0 --tls-port P`), with
    /// `certs`' server certificate, trusting their CA for client certificates, and not asking
    /// clients for one (`--tls-auth-clients no`; `extra_args` come later and may say `yes`).
    /// The certificates are copied into the server's dir, so `certs` may be dropped.
    pub fn start_tls(certs: &TestCerts, extra_args: &[&str]) -> RedisServer {
        RedisServer::start_inner(Path::new("redis-server"), extra_args, Some(certs))
    }

    fn start_inner(binary: &Path, extra_args: &[&str], tls: Option<&TestCerts>) -> RedisServer {
        let version = server_version(binary);
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        // Another process may take the port between the check and the server's bind; retry.
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_port();
            let dir = TempDir::new("redis");
            let log = dir.path().join("redis.log");
            let mut cmd = Command::new(binary);
            let mut tls_cli = Vec::new();
            let mut tls_args: Vec<String> = Vec::new();
            if let Some(certs) = tls {
                let copy = |from: String, name: &str| {
                    let to = dir.path().join(name);
                    fs::copy(&from, &to).unwrap_or_else(|e| panic!("cannot copy {from}: {e}"));
                    to.display().to_string()
                };
                let ca = copy(certs.ca(), "ca.crt");
                let (cert, key) = (
                    copy(certs.server_cert(), "server.crt"),
                    copy(certs.server_key(), "server.key"),
                );
                let (ccert, ckey) = (
                    copy(certs.client_cert(), "client.crt"),
                    copy(certs.client_key(), "client.key"),
                );
                // After the harness's `--port P`: the last one wins.
                tls_args = vec![
                    "--port".into(),
                    "0".into(),
                    "--tls-port".into(),
                    port.to_string(),
                    "--tls-cert-file".into(),
                    cert,
                    "--tls-key-file".into(),
                    key,
                    "--tls-ca-cert-file".into(),
                    ca.clone(),
                    "--tls-auth-clients".into(),
                    "no".into(),
                ];
                tls_cli = vec![
                    "--tls".into(),
                    "--cacert".into(),
                    ca,
                    "--cert".into(),
                    ccert,
                    "--key".into(),
                    ckey,
                ];
            }
            let extra: Vec<&str> = tls_args
                .iter()
                .map(|s| s.as_str())
                .chain(extra_args.iter().copied())
                .collect();
            let args = server_args(port, dir.path(), &log, major, &extra);
            cmd.args(&args);
            let child = spawn(cmd, dir.path(), binary);
            let mut server = RedisServer {
                child,
                port,
                dir,
                binary: binary.to_path_buf(),
                version: version.clone(),
                args,
                tls_cli,
            };
            match server.wait_for_ping() {
                Ok(()) => return server,
                Err(why) => {
                    last_log = server.log();
                    if !last_log.contains("Address already in use") {
                        panic!(
                            "redis-server {} ({}) on port {port} {why}; its log:\n{last_log}",
                            version,
                            binary.display()
                        );
                    }
                    // Dropping `server` kills it; try another port.
                }
            }
        }
        panic!("redis-server {version}: no free port after 5 tries; last log:\n{last_log}");
    }

    /// Kill the server (SIGKILL) and leave it down.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kill the server (SIGKILL: no chance to save), leave it down for `down`, then start it
    /// again on the same port, in the same directory, with the same arguments (a server with
    /// `--appendonly yes` reloads its AOF). Returns once it answers PING.
    pub fn kill_and_restart(&mut self, down: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down);
        self.start_again();
    }

    /// Stop the server (SIGKILL), put `rdb` in its directory as its `dump.rdb`, and start it
    /// again as before: it loads the file at start-up (a Cluster node keeps its
    /// `nodes.conf`, so its slots too). Returns once it answers PING.
    pub fn restart_loading(&mut self, rdb: &Path) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let to = self.dir.path().join("dump.rdb");
        fs::copy(rdb, &to).unwrap_or_else(|e| panic!("cannot copy {}: {e}", rdb.display()));
        self.start_again();
    }

    /// Start the server again on the same port, in the same directory, with the same
    /// arguments.
    fn start_again(&mut self) {
        let mut cmd = Command::new(&self.binary);
        cmd.args(&self.args);
        self.child = spawn(cmd, self.dir.path(), &self.binary);
        if let Err(why) = self.wait_for_ping() {
            panic!("restarted redis-server {why}; its log:\n{}", self.log());
        }
    }

    fn wait_for_ping(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status} before answering PING"));
            }
            let up = if self.tls_cli.is_empty() {
                ping(self.port)
            } else {
                self.try_cli(&["PING"]).is_some_and(|o| o == "PONG")
            };
            if up {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "did not answer PING within {}s",
                    START_TIMEOUT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/` (for the `redis` crate), or `rediss://` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.is_tls() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// Whether the server listens on TLS only ([`RedisServer::start_tls`]).
    pub fn is_tls(&self) -> bool {
        !self.tls_cli.is_empty()
    }

    /// The server's working directory (its `--dir`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The version the binary reported, e.g. `7.0.15`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The last part of the server's log file, after anything it printed to stdout/stderr.
    pub fn log(&self) -> String {
        let mut text = String::new();
        for name in ["console.log", "redis.log"] {
            if let Ok(part) = fs::read_to_string(self.dir.path().join(name)) {
                text.push_str(&part);
            }
        }
        let start = text.len().saturating_sub(4000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text[start..].to_string()
    }

    /// Runs `redis-cli -h 127.0.0.1 -p PORT ARGS...` and returns its stdout without the final
    /// newline. Panics if redis-cli fails or the reply is an error, whatever its code
    /// (`NOPERM`, `BUSY`, `MOVED`, `READONLY`...).
    pub fn cli(&self, args: &[&str]) -> String {
        // `-e`: exit 1 on an error reply (without it redis-cli exits 0 whenever stdout is not
        // a tty, and an error is text like any other).
        let out = Command::new("redis-cli")
            .args(["-e", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(&self.tls_cli)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "redis-cli {args:?} on port {} failed ({}): {stdout}{stderr}",
            self.port,
            out.status
        );
        stdout.strip_suffix('\n').unwrap_or(&stdout).to_string()
    }

    /// `redis-cli ARGS...`'s stdout, or `None` when it fails (for polling).
    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(&self.tls_cli)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
        out.status.success().then_some(text)
    }

    /// `DEBUG DIGEST`: a hash of all values and dbs, independent of encodings, which sees only
    /// *whether* a key has a TTL and no stream group: [`Snapshot`] compares those too.
    pub fn digest(&self) -> String {
        self.cli(&["DEBUG", "DIGEST"])
    }

    /// `SAVE`s and copies `dump.rdb` to a fresh path under the cargo target dir, which outlives
    /// the server; returns that path.
    pub fn save_and_copy_dump(&self) -> PathBuf {
        self.cli(&["SAVE"]);
        let src = self.dir.path().join("dump.rdb");
        let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dumps");
        fs::create_dir_all(&out_dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", out_dir.display()));
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dst = out_dir.join(format!(
            "redis-{}-{}-{}-{n}.rdb",
            self.version,
            std::process::id(),
            self.port
        ));
        fs::copy(&src, &dst)
            .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", src.display(), dst.display()));
        dst
    }
}

/// The command line of a test server.
fn server_args(port: u16, dir: &Path, log: &Path, major: u32, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        &dir.display().to_string(),
        "--logfile",
        &log.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if major >= 7 {
        args.extend(["--enable-debug-command".into(), "yes".into()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Start `cmd` with its console output appended to `dir/console.log` (config errors go there
/// before the log file is opened: kept for `log()`).
fn spawn(mut cmd: Command, dir: &Path, binary: &Path) -> Child {
    let console = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("console.log"))
        .unwrap_or_else(|e| panic!("cannot create console.log: {e}"));
    let console2 = console
        .try_clone()
        .unwrap_or_else(|e| panic!("cannot clone console.log: {e}"));
    cmd.stdin(Stdio::null())
        .stdout(console)
        .stderr(console2)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()))
}

/// A child process (an import under test) killed if the test fails before it ends, so no
/// orphan is left running.
pub struct Running(pub Option<Child>);

impl Running {
    /// The running child.
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("running process")
    }

    /// [`Running::finish`], failing the test (the child killed on drop) if `what` has not
    /// ended after `limit`: a hang guard with a generous bound, not a timing.
    pub fn finish_within(mut self, limit: Duration, what: &str) -> std::process::Output {
        let start = Instant::now();
        while self.child().try_wait().ok().flatten().is_none() {
            assert!(
                start.elapsed() < limit,
                "{what} still running after {limit:?}: a hang"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.finish()
    }

    /// Wait for it and take its output.
    pub fn finish(mut self) -> std::process::Output {
        self.0
            .take()
            .expect("running process")
            .wait_with_output()
            .unwrap_or_else(|e| panic!("cannot wait for the process: {e}"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL to this child's pid only, then reap it so no zombie is left.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The version `binary --version` reports (`Redis server v=7.0.15 sha=...`).
pub fn server_version(binary: &Path) -> String {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} --version: {e}", binary.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|t| t.strip_prefix("v="))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("{} --version printed no v=: {text}", binary.display()))
}

/// A port on 127.0.0.1 that is free now, below 55535, whose port + 10000 (the cluster bus) is
/// free too, and that is never 6379.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let Ok(listener) = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)) else {
            continue;
        };
        let Ok(addr) = listener.local_addr() else {
            continue;
        };
        let port = addr.port();
        drop(listener);
        if port >= MAX_PORT || port == 6379 {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port + 10000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair (p, p + 10000) with p < {MAX_PORT} found");
}

fn ping(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// The shared corpus of RDB and AOF files: `$RDBFERRY_CORPUS`, else `../shared/corpus` next
/// to the crate; `None` (with a note) when neither exists.
pub fn corpus_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("RDBFERRY_CORPUS") {
        return Some(PathBuf::from(d));
    }
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    if d.is_dir() {
        Some(d)
    } else {
        eprintln!("note: RDBFERRY_CORPUS is not set and ../shared/corpus is absent; skipping");
        None
    }
}

/// Every `*.rdb` under `dir` (the corpus), sorted.
pub fn corpus_rdbs(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rdb") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

/// Start `binary` loading `file` at start-up, for a file that may be refused: the server's
/// `DEBUG DIGEST` once it answers, or `Err(its log)` when it exits first. Killed on return.
pub fn try_load(binary: &Path, file: &Path) -> Result<String, String> {
    let port = free_port();
    let (dir, name) = (file.parent().unwrap(), file.file_name().unwrap());
    let log = dir.join(format!("{}.log", name.to_string_lossy()));
    let major = server_version(binary)
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(7);
    let name = name.to_str().unwrap();
    let args = server_args(port, dir, &log, major, &["--dbfilename", name]);
    let mut cmd = Command::new(binary);
    cmd.args(&args);
    let child = spawn(cmd, dir, binary);
    let port = port.to_string();
    let mut run = Running(Some(child));
    let start = Instant::now();
    loop {
        if run.child().try_wait().ok().flatten().is_some() {
            return Err(fs::read_to_string(&log).unwrap_or_default());
        }
        // PING answers only once the load is done (DEBUG would answer during it).
        let cli = |args: &[&str]| {
            let out = Command::new("redis-cli")
                .args(["-p", &port])
                .args(args)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        if cli(&["PING"]) == "PONG" {
            return Ok(cli(&["DEBUG", "DIGEST"]));
        }
        assert!(
            start.elapsed() < START_TIMEOUT * 6,
            "{} hangs loading {}",
            binary.display(),
            file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An older server fetched by `scripts/fetch-old-servers.sh`: `version` is `"6.2"` or `"6.0"`.
/// `RDBFERRY_REDIS_62` / `RDBFERRY_REDIS_60` override the default place,
/// `.cache/servers/redis-<version>/redis-server` in the crate.
/// A binary that reports another version is an error (a test meant for 6.0 would else
/// silently run against whatever was put there).
pub fn old_server(version: &str) -> Option<PathBuf> {
    let var = format!("RDBFERRY_REDIS_{}", version.replace('.', ""));
    fetched_server(&var, &format!("redis-{version}/redis-server"), version)
}

/// Valkey 9 (`valkey-server`), fetched by `scripts/fetch-old-servers.sh` into
/// `.cache/servers/valkey-9/`, or `RDBFERRY_VALKEY_9`.
pub fn valkey_server() -> Option<PathBuf> {
    fetched_server("RDBFERRY_VALKEY_9", "valkey-9/valkey-server", "9")
}

/// A server binary at `$var`, else at `.cache/servers/<path>` in the crate, that must report
/// version `version`.x.
fn fetched_server(var: &str, path: &str, version: &str) -> Option<PathBuf> {
    let p = match std::env::var_os(var) {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(".cache/servers")
            .join(path),
    };
    if !p.is_file() {
        return None;
    }
    let reported = server_version(&p);
    assert!(
        reported.starts_with(&format!("{version}.")),
        "{} reports version {reported}, not {version}.x",
        p.display()
    );
    Some(p)
}

/// [`old_server`] for a test: `None` (the test should return early) on a developer machine
/// without the binary, but a panic in CI (`CI` or `RDBFERRY_CORPUS` set), where
/// `scripts/test.sh` has fetched it and a skip would hide a broken setup.
pub fn require_old_server(version: &str) -> Option<PathBuf> {
    let var = format!("RDBFERRY_REDIS_{}", version.replace('.', ""));
    require(old_server(version), &format!("Redis {version}"), &var)
}

/// [`valkey_server`] for a test, as [`require_old_server`].
pub fn require_valkey_server() -> Option<PathBuf> {
    require(valkey_server(), "Valkey 9", "RDBFERRY_VALKEY_9")
}

fn require(found: Option<PathBuf>, what: &str, var: &str) -> Option<PathBuf> {
    if found.is_some() {
        return found;
    }
    let strict = std::env::var_os("CI").is_some() || std::env::var_os("RDBFERRY_CORPUS").is_some();
    assert!(
        !strict,
        "no {what} binary (CI or RDBFERRY_CORPUS is set, so this is an error): \
         run scripts/fetch-old-servers.sh or set {var}"
    );
    eprintln!("skipping: no {what} binary; run scripts/fetch-old-servers.sh");
    None
}

/// A Sentinel (`redis-server FILE --sentinel`, the Debian package has no `redis-sentinel`)
/// on a free loopback port, monitoring one master as `name` with quorum 1, in its own temp
/// dir; killed on drop.
pub struct Sentinel {
    run: Running,
    port: u16,
    dir: TempDir,
}

impl Sentinel {
    /// Monitor 127.0.0.1:`master_port` as `name`: down after `down_after_ms` without an
    /// answer, `failover_timeout_ms` for a failover.
    pub fn start(
        name: &str,
        master_port: u16,
        down_after_ms: u64,
        failover_timeout_ms: u64,
    ) -> Sentinel {
        let dir = TempDir::new("sentinel");
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        let text = format!(
            "port {port}\nbind 127.0.0.1\ndir {d}\nlogfile {d}/sentinel.log\n\
             sentinel monitor {name} 127.0.0.1 {master_port} 1\n\
             sentinel down-after-milliseconds {name} {down_after_ms}\n\
             sentinel failover-timeout {name} {failover_timeout_ms}\n",
            d = dir.path().display()
        );
        fs::write(&conf, text).unwrap();
        let mut cmd = Command::new("redis-server");
        cmd.arg(&conf).arg("--sentinel");
        let run = Running(Some(spawn(cmd, dir.path(), Path::new("redis-server"))));
        let s = Sentinel { run, port, dir };
        let deadline = Instant::now() + START_TIMEOUT;
        while !ping(port) {
            assert!(
                Instant::now() < deadline,
                "sentinel did not answer PING; its log:\n{}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis-cli -p PORT ARGS...` on the Sentinel.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    /// Its log so far (the `+sdown`, `+slave`, `+switch-master` ... events).
    pub fn log(&self) -> String {
        let mut text = fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default();
        text += &fs::read_to_string(self.dir.path().join("sentinel.log")).unwrap_or_default();
        text
    }

    /// Wait until `ready` holds (polled every 50 ms); a hang guard fails the test after
    /// `limit`, showing the log.
    pub fn wait_for(&self, what: &str, limit: Duration, mut ready: impl FnMut(&Sentinel) -> bool) {
        let start = Instant::now();
        while !ready(self) {
            assert!(
                start.elapsed() < limit,
                "no {what} within {limit:?}; sentinel log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A Redis Cluster of `n` masters (no replicas) on free loopback ports, each node a
/// [`RedisServer`] in its own temp dir, created with `redis-cli --cluster create` and ready
/// (`cluster_state:ok` on every node) when [`RedisCluster::start`] returns. Dropping it stops
/// every node by pid.
///
/// Slots can be moved one by one while a test runs ([`RedisCluster::start_migration`],
/// [`RedisCluster::migrate_keys`], [`RedisCluster::finish_migration`]), the steps
/// `redis-cli --cluster reshard` takes, so a test can stop half-way with a slot in the
/// MIGRATING/IMPORTING state.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

/// How long a fresh cluster gets to reach `cluster_state:ok`.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);

impl RedisCluster {
    /// Start `n` (at least 3) masters and join them into one cluster.
    pub fn start(n: usize) -> RedisCluster {
        RedisCluster::start_with_replicas(n, 0, 5000)
    }

    /// Start `masters` masters with `replicas` replicas each (nodes `masters..` are the
    /// replicas, as `redis-cli --cluster create` assigns them), and a node timeout of
    /// `timeout_ms` (how soon a replica takes over a failed master).
    pub fn start_with_replicas(masters: usize, replicas: usize, timeout_ms: u32) -> RedisCluster {
        RedisCluster::start_inner(Path::new("redis-server"), masters, replicas, timeout_ms)
    }

    /// [`RedisCluster::start`] with another server binary (an older Redis).
    pub fn start_on(binary: &Path, masters: usize) -> RedisCluster {
        RedisCluster::start_inner(binary, masters, 0, 5000)
    }

    fn start_inner(
        binary: &Path,
        masters: usize,
        replicas: usize,
        timeout_ms: u32,
    ) -> RedisCluster {
        let n = masters * (replicas + 1);
        assert!(
            masters >= 3,
            "redis-cli --cluster create wants 3 masters or more"
        );
        let timeout = timeout_ms.to_string();
        let nodes: Vec<RedisServer> = (0..n)
            .map(|_| {
                RedisServer::start_with(
                    binary,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        &timeout,
                        // Replicas sync at once, and may take over however long ago that was.
                        "--repl-diskless-sync-delay",
                        "0",
                        "--cluster-replica-validity-factor",
                        "0",
                    ],
                )
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli --cluster create: {e}"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create {addrs:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_ok();
        if replicas > 0 {
            cluster.wait_replicas_synced();
        }
        cluster
    }

    /// Wait until every node says `cluster_state:ok` and knows every other node.
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        let want = format!("cluster_known_nodes:{}", self.nodes.len());
        loop {
            let ready = self.nodes.iter().all(|s| {
                let info = s.cli(&["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains(&want)
            });
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cluster not ok after {}s: {}",
                CLUSTER_TIMEOUT.as_secs(),
                self.nodes[0].cli(&["CLUSTER", "INFO"])
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until every replica's link to its master is up (its first sync is done).
    pub fn wait_replicas_synced(&self) {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        loop {
            let ready = self.nodes.iter().all(|s| {
                let info = s.cli(&["INFO", "replication"]);
                !info.contains("role:slave") || info.contains("master_link_status:up")
            });
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "replicas not synced");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis://127.0.0.1:PORT/` of the first node: where a client starts.
    pub fn seed_url(&self) -> String {
        self.nodes[0].url()
    }

    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Kill node `i` (SIGKILL) and leave it down: its replica takes over after the node
    /// timeout.
    pub fn kill_node(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Node `i` loads `rdb` at start-up ([`RedisServer::restart_loading`]); returns once the
    /// cluster is ok again.
    pub fn restart_node_loading(&mut self, i: usize, rdb: &Path) {
        self.nodes[i].restart_loading(rdb);
        self.wait_ok();
    }

    /// [`RedisServer::cli`] on node `node`.
    pub fn cli_on(&self, node: usize, args: &[&str]) -> String {
        self.nodes[node].cli(args)
    }

    /// `CLUSTER MYID` of a node.
    pub fn node_id(&self, node: usize) -> String {
        self.cli_on(node, &["CLUSTER", "MYID"])
    }

    /// `CLUSTER KEYSLOT key`.
    pub fn key_slot(&self, key: &str) -> u16 {
        let s = self.cli_on(0, &["CLUSTER", "KEYSLOT", key]);
        s.trim()
            .parse()
            .unwrap_or_else(|_| panic!("CLUSTER KEYSLOT {key:?}: {s}"))
    }

    /// The node that owns `slot` (as node 0 sees it).
    pub fn owner(&self, slot: u16) -> usize {
        let mut c = self.conn(0);
        let ranges: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut c)
            .unwrap_or_else(|e| panic!("CLUSTER SLOTS: {e}"));
        for r in ranges {
            let redis::Value::Array(r) = r else { continue };
            let (
                Some(redis::Value::Int(a)),
                Some(redis::Value::Int(b)),
                Some(redis::Value::Array(m)),
            ) = (r.first(), r.get(1), r.get(2))
            else {
                continue;
            };
            if (*a..=*b).contains(&i64::from(slot))
                && let Some(redis::Value::Int(port)) = m.get(1)
                && let Some(i) = self.nodes.iter().position(|s| i64::from(s.port()) == *port)
            {
                return i;
            }
        }
        panic!("no node owns slot {slot}");
    }

    /// A plain connection to one node (the `redis` crate, no cluster routing).
    pub fn conn(&self, node: usize) -> redis::Connection {
        redis::Client::open(self.nodes[node].url())
            .and_then(|c| c.get_connection())
            .unwrap_or_else(|e| panic!("cannot connect to node {node}: {e}"))
    }

    /// Step 1 of moving `slot`: `IMPORTING` on `to`, then `MIGRATING` on `from`.
    pub fn start_migration(&self, slot: u16, from: usize, to: usize) {
        let s = slot.to_string();
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        self.cli_on(to, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id]);
        self.cli_on(from, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id]);
    }

    /// Step 2: `MIGRATE` up to `count` keys of `slot` from `from` to `to`; returns how many
    /// were moved (0 when the slot is empty on `from`).
    pub fn migrate_keys(&self, slot: u16, from: usize, to: usize, count: usize) -> usize {
        let mut c = self.conn(from);
        let keys: Vec<Vec<u8>> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(count)
            .query(&mut c)
            .unwrap_or_else(|e| panic!("CLUSTER GETKEYSINSLOT {slot}: {e}"));
        if keys.is_empty() {
            return 0;
        }
        self.migrate(from, to, &keys);
        keys.len()
    }

    /// `MIGRATE` the named keys (all in one slot) from `from` to `to`.
    pub fn migrate<K: redis::ToRedisArgs>(&self, from: usize, to: usize, keys: &[K]) {
        let mut c = self.conn(from);
        let mut cmd = redis::cmd("MIGRATE");
        cmd.arg("127.0.0.1")
            .arg(self.nodes[to].port())
            .arg("")
            .arg(0)
            .arg(10_000)
            .arg("REPLACE")
            .arg("KEYS")
            .arg(keys);
        let r: redis::RedisResult<String> = cmd.query(&mut c);
        r.unwrap_or_else(|e| {
            panic!(
                "MIGRATE of {} keys from node {from} to {to}: {e}",
                keys.len()
            )
        });
    }

    /// Step 3: `SETSLOT slot NODE to` on both nodes (and the rest), ending the migration.
    pub fn finish_migration(&self, slot: u16, from: usize, to: usize) {
        let s = slot.to_string();
        let to_id = self.node_id(to);
        // The importing node first, as redis-cli does, so the slot is never without owner.
        self.cli_on(to, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
        self.cli_on(from, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
        for i in 0..self.nodes.len() {
            if i != from && i != to {
                self.cli_on(i, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
            }
        }
    }

    /// Move `slot` and its keys from its owner to `to`, all three steps.
    pub fn move_slot(&self, slot: u16, to: usize) {
        let from = self.owner(slot);
        if from == to {
            return;
        }
        self.start_migration(slot, from, to);
        while self.migrate_keys(slot, from, to, 100) > 0 {}
        self.finish_migration(slot, from, to);
    }

    /// Copy every key of `src`'s db 0 into the cluster with `DUMP` / `RESTORE ... ABSTTL`
    /// (values, encodings and TTLs unchanged), each to the node that owns it; returns the
    /// number of keys.
    pub fn copy_from(&self, src: &RedisServer) -> usize {
        let mut s = redis::Client::open(src.url())
            .and_then(|c| c.get_connection())
            .unwrap_or_else(|e| panic!("cannot connect to the source: {e}"));
        let keys = data::scan_keys(&mut s);
        let mut conns: Vec<redis::Connection> =
            (0..self.nodes.len()).map(|i| self.conn(i)).collect();
        for k in &keys {
            let payload: Vec<u8> = redis::cmd("DUMP").arg(k).query(&mut s).unwrap();
            let at: i64 = redis::cmd("PEXPIRETIME").arg(k).query(&mut s).unwrap();
            let at = at.max(0);
            let slot = crc_slot_of(&mut conns[0], k);
            let i = self.owner(slot);
            let _: () = redis::cmd("RESTORE")
                .arg(k)
                .arg(at)
                .arg(&payload)
                .arg("REPLACE")
                .arg("ABSTTL")
                .query(&mut conns[i])
                .unwrap_or_else(|e| {
                    panic!("RESTORE {:?} on node {i}: {e}", String::from_utf8_lossy(k))
                });
        }
        keys.len()
    }
}

fn crc_slot_of(c: &mut redis::Connection, key: &[u8]) -> u16 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(c)
        .unwrap_or_else(|e| panic!("CLUSTER KEYSLOT: {e}"))
}
