//! Helpers for tests that run `rdbferry` as a process and act on it while it runs (signals,
//! `kill -9`, a stranger at its listener): input files made with our encoder, a spawned run
//! whose stderr is collected as it comes, waits on what a target reports, signals.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdbferry::rdb::encoder::{RdbWriter, value};

use super::{RedisServer, Running};

/// A file written under the cargo target dir (named after this process, so parallel test
/// binaries do not collide).
pub fn write_rdb(name: &str, data: &[u8]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fullsync");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{}-{name}", std::process::id()));
    std::fs::write(&p, data).unwrap();
    p
}

/// `keys` string keys of `value_len` bytes each in db 0 (200 000 of 400 bytes: about 80 MB,
/// so that a full sync or a scan takes a moment).
pub fn big_file(name: &str, keys: usize, value_len: usize) -> PathBuf {
    let mut w = RdbWriter::new(9);
    w.select_db(0);
    let v = vec![b'v'; value_len];
    for i in 0..keys {
        w.key(
            format!("key:{i}").as_bytes(),
            None,
            &value::string(&v, false),
        );
    }
    write_rdb(name, &w.finish())
}

/// [`big_file`] of 200 000 keys of 400 bytes (about 80 MB: a full sync of it takes
/// seconds in a debug build), made once per test binary.
pub fn big() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| big_file("big.rdb", 200_000, 400))
}

/// A server that loaded `file` at start-up.
pub fn loaded(file: &Path) -> RedisServer {
    let (dir, name) = (file.parent().unwrap(), file.file_name().unwrap());
    RedisServer::start_with(
        Path::new("redis-server"),
        &[
            "--dir",
            path_str(dir),
            "--dbfilename",
            name.to_str().unwrap(),
        ],
    )
}

/// The `DEBUG DIGEST` of [`big`] (from a server that loaded it).
pub fn big_digest() -> &'static str {
    static DIGEST: OnceLock<String> = OnceLock::new();
    DIGEST.get_or_init(|| {
        let s = loaded(big());
        assert_eq!(s.cli(&["DBSIZE"]), "200000");
        s.digest()
    })
}

/// A running `rdbferry`, its stdout and stderr gathered as they come.
pub struct Ferry {
    pub run: Running,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// Gather what `pipe` gives into a shared buffer, on a thread.
fn gather(
    mut pipe: impl Read + Send + 'static,
) -> (Arc<Mutex<Vec<u8>>>, std::thread::JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    let t = std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    (buf, t)
}

impl Ferry {
    /// Start `rdbferry ARGS...` (stdout and stderr piped, no password variables).
    pub fn spawn(args: &[&str]) -> Ferry {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rdbferry"))
            .args(args)
            .env_remove("RDBFERRY_TO_PASSWORD")
            .env_remove("RDBFERRY_FROM_PASSWORD")
            .env("RDBFERRY_STATE_DIR", state_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (out, t1) = gather(child.stdout.take().unwrap());
        let (err, t2) = gather(child.stderr.take().unwrap());
        Ferry {
            run: Running(Some(child)),
            out,
            err,
            readers: vec![t1, t2],
        }
    }

    pub fn pid(&mut self) -> u32 {
        self.run.child().id()
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().unwrap()).into_owned()
    }

    /// Whether it has ended.
    pub fn ended(&mut self) -> bool {
        self.run.child().try_wait().unwrap().is_some()
    }

    /// Send `signal` (`"TERM"`, `"KILL"`, `"STOP"`) to it.
    pub fn signal(&mut self, signal: &str) {
        let pid = self.pid().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} {pid}");
    }

    /// Wait until `ready` holds (polled every 2 ms); fails the test if the run ends first
    /// (the phase was missed: make the input bigger) or after `limit`.
    pub fn wait_for(&mut self, what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
        let start = Instant::now();
        loop {
            if ready() {
                return;
            }
            assert!(!self.ended(), "ended before {what}: {}", self.stderr());
            assert!(start.elapsed() < limit, "no {what} within {limit:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Wait for the end (a hang guard: failing after `limit`); its output, stderr
    /// included.
    pub fn finish_within(mut self, limit: Duration) -> Output {
        let start = Instant::now();
        while !self.ended() {
            assert!(
                start.elapsed() < limit,
                "still running {limit:?} after: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let mut o = self.run.finish();
        o.stdout = self.out.lock().unwrap().clone();
        o.stderr = self.err.lock().unwrap().clone();
        o
    }
}

/// `GET /metrics` from a `--metrics-addr` at `addr`: the body (`None` while nothing answers).
pub fn scrape(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// The value of `name` in a Prometheus text body.
pub fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Fails the test, with the run's stderr, unless it exited with `code`.
pub fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Where runs started here keep their journal of changed settings (not the user's).
pub fn state_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("state")
}

/// `rdbferry ARGS...` to its end.
pub fn rdbferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rdbferry"))
        .args(args)
        .env_remove("RDBFERRY_TO_PASSWORD")
        .env_remove("RDBFERRY_FROM_PASSWORD")
        .env("RDBFERRY_STATE_DIR", state_dir())
        .output()
        .unwrap()
}

/// A field of `INFO section` (`""` when absent).
pub fn info_field(c: &mut redis::Connection, section: &str, field: &str) -> String {
    let text: String = redis::cmd("INFO").arg(section).query(c).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// `CONFIG GET name`'s value.
pub fn config(s: &RedisServer, name: &str) -> String {
    let out = s.cli(&["CONFIG", "GET", name]);
    out.lines().nth(1).unwrap_or_default().to_string()
}

/// A plain connection to `s` (the `redis` crate), for polling.
pub fn conn(s: &RedisServer) -> redis::Connection {
    redis::Client::open(s.url())
        .and_then(|c| c.get_connection())
        .unwrap()
}

/// The path as a `&str`.
pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A finished run's exit code, stdout and stderr, for assertion messages.
pub fn output_text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
