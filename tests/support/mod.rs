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
//! with the `openssl` CLI; [`RedisServer::start_tls`] starts a server that listens on TLS only,
//! and the harness's own `PING` and [`RedisServer::cli`] then go through `redis-cli --tls`.
//!
//! Older servers (6.2, 6.0) come from `scripts/fetch-old-servers.sh`; see [`old_server`] and
//! [`require_old_server`]. This module deliberately knows nothing about rdbferry itself.
#![allow(dead_code)]

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
                cmd.args(["--port", "0", "--tls-port", &port.to_string()])
                    .args(["--tls-cert-file", &cert, "--tls-key-file", &key])
                    .args(["--tls-ca-cert-file", &ca, "--tls-auth-clients", "no"]);
                tls_cli = vec![
                    "--tls".into(),
                    "--cacert".into(),
                    ca,
                    "--cert".into(),
                    ccert,
                    "--key".into(),
                    ckey,
                ];
            } else {
                cmd.arg("--port").arg(port.to_string());
            }
            cmd.args(["--bind", "127.0.0.1"])
                .args(["--save", ""])
                .args(["--appendonly", "no"])
                .args(["--daemonize", "no"])
                .arg("--dir")
                .arg(dir.path())
                .arg("--logfile")
                .arg(&log);
            if major >= 7 {
                cmd.args(["--enable-debug-command", "yes"]);
            }
            // Config errors go to stderr before the log file is opened: keep them for `log()`.
            let console = fs::File::create(dir.path().join("console.log"))
                .unwrap_or_else(|e| panic!("cannot create console.log: {e}"));
            let console2 = console
                .try_clone()
                .unwrap_or_else(|e| panic!("cannot clone console.log: {e}"));
            cmd.args(extra_args)
                .stdin(Stdio::null())
                .stdout(console)
                .stderr(console2);
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            let mut server = RedisServer {
                child,
                port,
                dir,
                binary: binary.to_path_buf(),
                version: version.clone(),
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
    /// newline. Panics if redis-cli fails or prints an error reply.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(&self.tls_cli)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // redis-cli exits 0 on an error reply when stdout is not a tty; catch those too.
        let is_error = ["ERR ", "WRONGTYPE ", "NOSCRIPT ", "(error)"]
            .iter()
            .any(|p| stdout.starts_with(p));
        assert!(
            out.status.success() && !is_error,
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

    /// `DEBUG DIGEST`: a hash of all values, TTLs and dbs, independent of encodings.
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

/// An older server fetched by `scripts/fetch-old-servers.sh`: `version` is `"6.2"` or `"6.0"`.
/// `RDBFERRY_REDIS_62` / `RDBFERRY_REDIS_60` override the default place,
/// `.cache/servers/redis-<version>/redis-server` in the crate.
pub fn old_server(version: &str) -> Option<PathBuf> {
    let var = format!("RDBFERRY_REDIS_{}", version.replace('.', ""));
    if let Some(p) = std::env::var_os(&var) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".cache/servers")
        .join(format!("redis-{version}"))
        .join("redis-server");
    p.is_file().then_some(p)
}

/// [`old_server`] for a test: `None` (the test should return early) on a developer machine
/// without the binary, but a panic in CI (`CI` or `RDBFERRY_CORPUS` set), where
/// `scripts/test.sh` has fetched it and a skip would hide a broken setup.
pub fn require_old_server(version: &str) -> Option<PathBuf> {
    if let Some(p) = old_server(version) {
        return Some(p);
    }
    let strict = std::env::var_os("CI").is_some() || std::env::var_os("RDBFERRY_CORPUS").is_some();
    assert!(
        !strict,
        "no Redis {version} binary (CI or RDBFERRY_CORPUS is set, so this is an error): \
         run scripts/fetch-old-servers.sh or set RDBFERRY_REDIS_{}",
        version.replace('.', "")
    );
    eprintln!("skipping: no Redis {version} binary; run scripts/fetch-old-servers.sh");
    None
}
