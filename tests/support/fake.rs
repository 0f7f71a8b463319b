//! Fake Redis servers for the hostile-peer tests: a `TcpListener` on a free loopback port, a
//! thread per connection that follows a [`Script`].
//!
//! A fake is either a server that answers nothing but `PING` ([`Script::PingOnly`]), or a
//! proxy in front of a real `redis-server` that turns hostile at a chosen command
//! ([`Script::Proxy`]): until then rdbferry gets real answers (so it reaches the step under
//! test: the precheck, the writer, a verify pipeline, `SYNC`), from then on it gets
//! [`Hostile`] bytes on that connection and on every later one (a reconnecting client meets
//! the same server). The proxy relays one reply per command, so replies never interleave
//! with the hostile bytes.
//!
//! A [`CutProxy`] relays a real server's bytes and cuts after a given number of them (closes,
//! or stalls): a source that dies or hangs in the middle of a transfer.
//!
//! Dropping a [`FakeServer`] or a [`CutProxy`] shuts every connection down and stops its
//! threads.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rdbferry::resp::{Decoded, ReplyDecoder, parse_command};

/// What a fake sends once it turns hostile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    /// Nothing, ever (the connection stays open, what the client sends is read and dropped).
    Stall,
    /// The header of a 3 GB bulk string, then its bytes as fast as the client takes them.
    HugeBulk,
    /// The header of a 3 GB bulk string and its first 64 kB, then nothing (a length that
    /// passes a data reply's cap must not be allocated up front).
    HugeBulkHeader,
    /// `*2147483647`, then `:1` forever.
    EndlessArray,
    /// Blank lines forever (the keep-alive of a master that never finishes saving).
    BlankLines,
    /// Part of a reply, then the connection closed.
    CloseMidReply,
    /// Not hostile: the command waits until [`FakeServer::release`], then goes on (to stop
    /// the client at a known step while the test acts).
    Hold,
}

/// How a fake behaves.
#[derive(Debug, Clone)]
pub enum Script {
    /// `PING` gets `+PONG`; every other command gets no reply.
    PingOnly,
    /// Forward to the real server on 127.0.0.1:`upstream` until a command whose name
    /// starts with `on` (upper case, e.g. `"INFO"`, `"CONFIG GET"`; `"*"`: any command),
    /// then `then` on that connection, and on every later one if `sticky` (a client that
    /// reconnects meets the same server; else later connections are forwarded). `"A>B"`: the first `B` after an `A` (which is
    /// forwarded), e.g. `"REPLICAOF>INFO"`.
    Proxy {
        upstream: u16,
        on: &'static str,
        then: Hostile,
        sticky: bool,
    },
}

struct Shared {
    stop: AtomicBool,
    triggered: AtomicBool,
    released: AtomicBool,
    /// Steps of a `"A>B"` trigger passed.
    stage: std::sync::atomic::AtomicUsize,
    socks: Mutex<Vec<TcpStream>>,
    seen: Mutex<Vec<String>>,
}

/// A fake server; see the module doc.
pub struct FakeServer {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FakeServer {
    pub fn start(script: Script) -> FakeServer {
        let (listener, port) = listen();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            triggered: AtomicBool::new(false),
            released: AtomicBool::new(false),
            stage: std::sync::atomic::AtomicUsize::new(0),
            socks: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
        });
        let sh = shared.clone();
        let accept = std::thread::spawn(move || {
            while !sh.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        let _ = sock.set_nonblocking(false);
                        if let Ok(c) = sock.try_clone() {
                            sh.socks.lock().unwrap().push(c);
                        }
                        let (sh, script) = (sh.clone(), script.clone());
                        std::thread::spawn(move || serve(sock, &script, sh));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeServer {
            port,
            shared,
            accept: Some(accept),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, as rdbferry names the server in its messages.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr())
    }

    /// Whether it turned hostile (the test reached the step it meant to; for
    /// [`Script::PingOnly`]: a command went unanswered).
    pub fn triggered(&self) -> bool {
        self.shared.triggered.load(Ordering::SeqCst)
    }

    /// Let a command held by [`Hostile::Hold`] go on.
    pub fn release(&self) {
        self.shared.released.store(true, Ordering::SeqCst);
    }

    /// The commands received (name and subcommand), in order, over all connections.
    pub fn seen(&self) -> Vec<String> {
        self.shared.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        shut_down(&self.shared.stop, &self.shared.socks, &mut self.accept);
    }
}

/// A non-blocking listener on a free loopback port (accept threads poll it and their stop
/// flag), and the port.
fn listen() -> (TcpListener, u16) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a fake");
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    (listener, port)
}

/// Stop a fake: tell its threads, shut every connection down, wait for the accepting thread.
fn shut_down(
    stop: &AtomicBool,
    socks: &Mutex<Vec<TcpStream>>,
    accept: &mut Option<JoinHandle<()>>,
) {
    stop.store(true, Ordering::SeqCst);
    for s in socks.lock().unwrap().iter() {
        let _ = s.shutdown(Shutdown::Both);
    }
    if let Some(t) = accept.take() {
        let _ = t.join();
    }
}

/// A command's name for [`Script::Proxy`]'s `on` (and `seen`): upper case, with the
/// subcommand of the commands that have one.
fn name_of(args: &[Vec<u8>]) -> String {
    let mut s = args
        .first()
        .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
        .unwrap_or_default();
    if matches!(s.as_str(), "CONFIG" | "CLIENT" | "REPLCONF" | "FUNCTION")
        && let Some(sub) = args.get(1)
    {
        s.push(' ');
        s += &String::from_utf8_lossy(sub).to_ascii_uppercase();
    }
    s
}

/// Commands from the client: RESP arrays or inline lines (`SYNC\r\n`).
struct Commands {
    sock: TcpStream,
    buf: Vec<u8>,
}

impl Commands {
    /// The next command; `None` when the client is gone.
    fn next(&mut self, stop: &AtomicBool) -> Option<Vec<Vec<u8>>> {
        loop {
            if let Some((args, used)) = self.parse() {
                self.buf.drain(..used);
                return Some(args);
            }
            let mut chunk = [0u8; 64 << 10];
            match self.sock.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) if !stop.load(Ordering::SeqCst) => {}
                Err(_) => return None,
            }
        }
    }

    fn parse(&self) -> Option<(Vec<Vec<u8>>, usize)> {
        if self.buf.first() == Some(&b'*') {
            let mut args = Vec::new();
            let used = parse_command(&self.buf, &mut args).ok()??;
            return Some((args.iter().map(|a| a.to_vec()).collect(), used));
        }
        let nl = self.buf.iter().position(|&b| b == b'\n')?;
        let args = self.buf[..nl]
            .split(|&b| b == b' ' || b == b'\r')
            .filter(|a| !a.is_empty())
            .map(|a| a.to_vec())
            .collect();
        Some((args, nl + 1))
    }
}

fn serve(sock: TcpStream, script: &Script, sh: Arc<Shared>) {
    // Reads wake up now and then to see whether the fake was dropped.
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    let mut cmds = Commands {
        sock: sock.try_clone().unwrap(),
        buf: Vec::new(),
    };
    let mut up = None;
    let mut upbuf = Vec::new();
    let mut client = &sock;
    while let Some(args) = cmds.next(&sh.stop) {
        let name = name_of(&args);
        sh.seen.lock().unwrap().push(name.clone());
        match script {
            Script::PingOnly if name == "PING" => {
                let _ = client.write_all(b"+PONG\r\n");
            }
            Script::PingOnly => sh.triggered.store(true, Ordering::SeqCst),
            Script::Proxy {
                upstream,
                on,
                then,
                sticky,
            } => {
                if *then == Hostile::Hold && turns_hostile(&sh, on, &name, false) {
                    while !sh.released.load(Ordering::SeqCst) && !sh.stop.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                } else if turns_hostile(&sh, on, &name, *sticky) {
                    sh.triggered.store(true, Ordering::SeqCst);
                    // What the client sends from here on is read and dropped.
                    let (mut rest, sh2) = (cmds, sh.clone());
                    std::thread::spawn(move || while rest.next(&sh2.stop).is_some() {});
                    hostile(&sock, *then, &sh);
                    return;
                }
                let up = up.get_or_insert_with(|| {
                    TcpStream::connect((Ipv4Addr::LOCALHOST, *upstream)).expect("upstream")
                });
                let mut out = Vec::new();
                rdbferry::resp::write_command(
                    &mut out,
                    &args.iter().map(|a| a.as_slice()).collect::<Vec<_>>(),
                );
                if up.write_all(&out).is_err() || !relay_reply(up, &mut upbuf, &mut client) {
                    return;
                }
            }
        }
    }
}

/// Whether command `name` is where a proxy with trigger `on` turns hostile (see
/// [`Script::Proxy`]).
fn turns_hostile(sh: &Shared, on: &str, name: &str, sticky: bool) -> bool {
    if sh.triggered.load(Ordering::SeqCst) {
        return sticky;
    }
    let steps: Vec<&str> = on.split('>').collect();
    let stage = sh.stage.load(Ordering::SeqCst);
    let hit = steps[stage] == "*" || name.starts_with(steps[stage]);
    if hit && stage + 1 < steps.len() {
        sh.stage.store(stage + 1, Ordering::SeqCst);
        return false;
    }
    if hit {
        sh.triggered.store(true, Ordering::SeqCst);
    }
    hit
}

/// Copy one reply from `up` to `client` (as it arrives); false when either side failed.
fn relay_reply(up: &mut TcpStream, pending: &mut Vec<u8>, client: &mut &TcpStream) -> bool {
    let mut dec = ReplyDecoder::new(u64::MAX);
    loop {
        let Ok((used, got)) = dec.decode(pending) else {
            return false;
        };
        if client.write_all(&pending[..used]).is_err() {
            return false;
        }
        pending.drain(..used);
        if matches!(got, Decoded::Reply(_)) {
            return true;
        }
        let mut chunk = [0u8; 64 << 10];
        match up.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Send `then`'s bytes until the client is gone or the fake is dropped.
fn hostile(sock: &TcpStream, then: Hostile, sh: &Shared) {
    let _ = sock.set_write_timeout(Some(Duration::from_millis(200)));
    let mut w = sock;
    let stopped = || sh.stop.load(Ordering::SeqCst);
    // Write `bytes` whole, unless the fake is dropped or the client goes away.
    let send = |w: &mut &TcpStream, mut bytes: &[u8]| -> bool {
        while !bytes.is_empty() {
            match w.write(bytes) {
                Ok(0) => return false,
                Ok(n) => bytes = &bytes[n..],
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) && !stopped() => {}
                Err(_) => return false,
            }
        }
        true
    };
    match then {
        Hostile::Stall => {
            while !stopped() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Hostile::HugeBulk => {
            let chunk = vec![b'x'; 1 << 20];
            if send(&mut w, b"$3000000000\r\n") {
                for _ in 0..3000 {
                    if !send(&mut w, &chunk) {
                        return;
                    }
                }
            }
        }
        Hostile::HugeBulkHeader => {
            if send(&mut w, b"$3000000000\r\n") && send(&mut w, &[b'x'; 64 << 10]) {
                while !stopped() {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        Hostile::EndlessArray => {
            let chunk = b":1\r\n".repeat(1 << 16);
            if send(&mut w, b"*2147483647\r\n") {
                while send(&mut w, &chunk) {}
            }
        }
        Hostile::BlankLines => {
            let chunk = [b'\n'; 1024];
            while send(&mut w, &chunk) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Hostile::CloseMidReply => {
            let _ = send(&mut w, b"$100\r\n# Server\r\nredis_ver");
            std::thread::sleep(Duration::from_millis(50));
            let _ = sock.shutdown(Shutdown::Both);
        }
        Hostile::Hold => {}
    }
}

/// What a [`watch`]ed process did.
#[derive(Debug)]
pub struct Watched {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// From the start to its exit.
    pub elapsed: Duration,
    /// The highest `VmHWM` (peak resident memory) read from `/proc/PID/status`, in kB.
    pub peak_kb: u64,
    /// The highest `RssAnon` sampled (resident anonymous memory: the heap, not the pages of
    /// mapped files), in kB.
    pub peak_anon_kb: u64,
}

/// The address space a watched process may have: an allocation the size of a hostile
/// length fails there (and the test with it) instead of taking the machine's memory.
const ADDRESS_SPACE: u64 = 1 << 30;

/// Run `cmd` (stdin closed, output captured) under [`ADDRESS_SPACE`], sampling its peak
/// memory; a process still running after `guard` is killed and fails the test (a hang).
pub fn watch(cmd: std::process::Command, guard: Duration) -> Watched {
    watch_stdin(cmd, std::process::Stdio::null(), guard)
}

/// [`watch`], with `stdin` as the process's standard input.
pub fn watch_stdin(
    mut cmd: std::process::Command,
    stdin: std::process::Stdio,
    guard: Duration,
) -> Watched {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    cmd.stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("RDBFERRY_STATE_DIR", super::ferry::state_dir());
    // SAFETY: setrlimit(2) is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: ADDRESS_SPACE,
                rlim_max: ADDRESS_SPACE,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = std::time::Instant::now();
    let mut child = super::Running(Some(cmd.spawn().expect("spawn")));
    let pid = child.child().id();
    let read_all = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = read_all(child.child().stdout.take().map(|r| Box::new(r) as _));
    let err = read_all(child.child().stderr.take().map(|r| Box::new(r) as _));
    let mut peak_kb = 0;
    let mut peak_anon_kb = 0;
    let code = loop {
        if let Some(st) = child.child().try_wait().unwrap() {
            break st.code();
        }
        peak_kb = peak_kb.max(peak_rss_kb(pid));
        peak_anon_kb = peak_anon_kb.max(status_kb(pid, "RssAnon:"));
        if start.elapsed() > guard {
            drop(child);
            panic!(
                "still running after {} s (a hang); stderr so far: {}",
                guard.as_secs(),
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    child.0 = None;
    Watched {
        code,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        elapsed,
        peak_kb,
        peak_anon_kb,
    }
}

/// `VmHWM` of a process, in kB (0 once it is gone).
pub fn peak_rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmHWM:")
}

/// A `kB` line of `/proc/PID/status` (0 once the process is gone).
fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// What a [`CutProxy`] does once it has relayed its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Close both connections (a source that dies mid-transfer).
    Close,
    /// Relay nothing more, and keep both connections open (a source that stalls).
    Stall,
}

/// A byte proxy in front of a real server that relays the first `after` bytes the server
/// sends, then [`Cut`]s: what rdbferry sends is relayed throughout (until the cut closes).
/// It cuts mid-reply wherever `after` falls, unlike [`Script::Proxy`], which turns hostile
/// at a command. Dropping it closes everything.
pub struct CutProxy {
    port: u16,
    shared: Arc<CutShared>,
    accept: Option<JoinHandle<()>>,
}

struct CutShared {
    stop: AtomicBool,
    cut: AtomicBool,
    socks: Mutex<Vec<TcpStream>>,
}

impl CutProxy {
    pub fn start(upstream: u16, after: usize, then: Cut) -> CutProxy {
        let (listener, port) = listen();
        let shared = Arc::new(CutShared {
            stop: AtomicBool::new(false),
            cut: AtomicBool::new(false),
            socks: Mutex::new(Vec::new()),
        });
        let sh = shared.clone();
        let accept = std::thread::spawn(move || {
            while !sh.stop.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let up = TcpStream::connect((Ipv4Addr::LOCALHOST, upstream)).expect("upstream");
                {
                    let mut socks = sh.socks.lock().unwrap();
                    socks.push(client.try_clone().unwrap());
                    socks.push(up.try_clone().unwrap());
                }
                let (mut c_in, mut u_out) = (client.try_clone().unwrap(), up.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_in, &mut u_out);
                });
                let sh = sh.clone();
                std::thread::spawn(move || relay_then_cut(up, client, after, then, &sh));
            }
        });
        CutProxy {
            port,
            shared,
            accept: Some(accept),
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether it has relayed its bytes and cut.
    pub fn cut(&self) -> bool {
        self.shared.cut.load(Ordering::SeqCst)
    }
}

fn relay_then_cut(
    mut up: TcpStream,
    mut client: TcpStream,
    after: usize,
    then: Cut,
    sh: &CutShared,
) {
    let mut left = after;
    let mut chunk = vec![0u8; 64 << 10];
    while left > 0 {
        let n = match up.read(&mut chunk[..left.min(64 << 10)]) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if client.write_all(&chunk[..n]).is_err() {
            return;
        }
        left -= n;
    }
    sh.cut.store(true, Ordering::SeqCst);
    if then == Cut::Stall {
        while !sh.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = up.shutdown(Shutdown::Both);
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        shut_down(&self.shared.stop, &self.shared.socks, &mut self.accept);
    }
}
