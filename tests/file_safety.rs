//! Files rdbferry writes and reads, under the things that go wrong on real machines (issue 8):
//! an output that is one of the inputs, a run that fails or is interrupted half way, and an
//! input that changes while it is read. Each test failed on the code before its fix.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rdbferry::rdb::encoder::{RdbWriter, value};
use support::{Running, TempDir, dir_names as names, testdata};

fn rdbferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rdbferry"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Asserts that `path` holds `want`, without printing whole files when it does not.
fn assert_holds(path: &Path, want: &[u8]) {
    let got = fs::read(path).unwrap();
    assert!(
        got == want,
        "{}: {} bytes, starting {:?}; want {} bytes, starting {:?}",
        path.display(),
        got.len(),
        String::from_utf8_lossy(&got[..got.len().min(60)]),
        want.len(),
        String::from_utf8_lossy(&want[..want.len().min(60)]),
    );
}

/// A copy of `testdata/redis-7.0/all-types.rdb` in `dir`.
fn rdb_copy(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    fs::copy(testdata("redis-7.0/all-types.rdb"), &p).unwrap();
    p
}

/// Issue 8 ("convert -o destroys data"): `convert X -o X` truncated X to 0 bytes before reading it.
/// The same file is refused before anything is opened for writing, whether named directly, through
/// a symlink or a hard link; the input is left as it was.
#[test]
fn issue8_convert_refuses_an_output_that_is_the_input() {
    let dir = TempDir::new("same-file");
    let input = rdb_copy(dir.path(), "self.rdb");
    let before = fs::read(&input).unwrap();
    let link = dir.path().join("link.rdb");
    std::os::unix::fs::symlink(&input, &link).unwrap();
    let hard = dir.path().join("hard.rdb");
    fs::hard_link(&input, &hard).unwrap();
    for out in [&input, &link, &hard] {
        for format in ["jsonl", "resp"] {
            let o = rdbferry(&["convert", s(&input), "--format", format, "-o", s(out)]);
            let e = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "-o {}: {e}", out.display());
            assert!(e.contains("same file") && e.contains("self.rdb"), "{e}");
            assert_holds(&input, &before);
        }
    }
    // The input given through the link, the output by its real name.
    let o = rdbferry(&["convert", s(&link), "--format", "jsonl", "-o", s(&input)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_holds(&input, &before);
    assert_eq!(names(dir.path()), ["hard.rdb", "link.rdb", "self.rdb"]);
}

/// Issue 8 ("convert -o destroys data"): an output that is a file of an input appendonlydir is
/// refused as well, and so is one of several outputs in `-o DIR` that would overwrite an input.
#[test]
fn issue8_convert_refuses_an_output_inside_an_input_appendonlydir() {
    let dir = TempDir::new("same-file-aofdir");
    let aof = dir.path().join("appendonlydir");
    fs::create_dir(&aof).unwrap();
    let src = Path::new(&testdata("redis-7.0/appendonlydir")).to_path_buf();
    for name in names(&src) {
        fs::copy(src.join(&name), aof.join(&name)).unwrap();
    }
    let incr = aof.join("appendonly.aof.2.incr.aof");
    let before = fs::read(&incr).unwrap();
    let o = rdbferry(&["convert", s(&aof), "--format", "resp", "-o", s(&incr)]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("same file"), "{e}");
    assert_holds(&incr, &before);

    // Two inputs into `-o DIR`: the second one's output would be DIR/x.rdb.jsonl = the first.
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    let victim = rdb_copy(&out, "x.rdb.jsonl");
    let before = fs::read(&victim).unwrap();
    let other = rdb_copy(dir.path(), "x.rdb");
    let o = rdbferry(&[
        "convert",
        s(&victim),
        s(&other),
        "--format",
        "jsonl",
        "-o",
        s(&out),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("same file"), "{}", stderr(&o));
    assert_holds(&victim, &before);
    assert_eq!(names(&out), ["x.rdb.jsonl"], "nothing else was written");
}

/// Issue 8 ("convert -o destroys data"): a corrupt input exited 1 but left a partial output where
/// the previous file was. Now the previous file stays as it was and no temporary file is left; a
/// good run replaces it whole.
#[test]
fn issue8_convert_failure_keeps_the_previous_output() {
    let dir = TempDir::new("keep-previous");
    let data = fs::read(testdata("redis-7.0/all-types.rdb")).unwrap();
    let corrupt = dir.path().join("corrupt.rdb");
    fs::write(&corrupt, &data[..data.len() * 3 / 4]).unwrap();
    let out = dir.path().join("out.jsonl");
    fs::write(&out, "previous\n").unwrap();
    let o = rdbferry(&["convert", s(&corrupt), "--format", "jsonl", "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_holds(&out, b"previous\n");
    assert_eq!(names(dir.path()), ["corrupt.rdb", "out.jsonl"]);

    let good = rdb_copy(dir.path(), "good.rdb");
    let o = rdbferry(&["convert", s(&good), "--format", "jsonl", "-o", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let want = fs::read(testdata("redis-7.0/all-types.rdb.jsonl")).unwrap();
    assert_holds(&out, &want);
    assert_eq!(names(dir.path()), ["corrupt.rdb", "good.rdb", "out.jsonl"]);

    // Several inputs into `-o DIR`: the good one is written, the corrupt one's previous
    // output stays.
    let outdir = dir.path().join("outdir");
    fs::create_dir(&outdir).unwrap();
    fs::write(outdir.join("corrupt.rdb.resp"), "previous\n").unwrap();
    let o = rdbferry(&[
        "convert",
        s(&good),
        s(&corrupt),
        "--format",
        "resp",
        "-q",
        "-o",
        s(&outdir),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(names(&outdir), ["corrupt.rdb.resp", "good.rdb.resp"]);
    assert_holds(&outdir.join("corrupt.rdb.resp"), b"previous\n");
    let want = fs::read(testdata("redis-7.0/all-types.rdb.resp")).unwrap();
    assert_holds(&outdir.join("good.rdb.resp"), &want);
}

/// Start rdbferry with `args`, stderr piped; killed if the test fails first.
fn spawn(args: &[&str], stdin: Stdio, stdout: Stdio) -> Running {
    let child = Command::new(env!("CARGO_BIN_EXE_rdbferry"))
        .args(args)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Running(Some(child))
}

/// Wait (at most a minute: a hang guard, not a timing assertion) until `dir` holds a name
/// other than `known`; returns it.
fn wait_for_new_file(dir: &Path, known: &[&str], child: &mut Child) -> String {
    let start = Instant::now();
    loop {
        if let Some(n) = names(dir)
            .into_iter()
            .find(|n| !known.contains(&n.as_str()))
        {
            return n;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "rdbferry ended before writing anything"
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no file appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Issue 8 ("convert -o destroys data"): an interrupted run (Ctrl-C, SIGTERM) exits 130 and leaves the
/// previous output as it was and no temporary file. The input is standard input held open by the test, so
/// rdbferry is surely still running when the signal comes.
#[test]
fn issue8_convert_interrupted_keeps_the_previous_output() {
    for signal in ["INT", "TERM"] {
        let dir = TempDir::new("interrupted");
        let out = dir.path().join("out.resp");
        fs::write(&out, "previous\n").unwrap();
        let args = ["convert", "-", "--format", "resp", "-q", "-o", s(&out)];
        let mut run = spawn(&args, Stdio::piped(), Stdio::null());
        let data = fs::read(testdata("redis-7.0/all-types.rdb")).unwrap();
        let mut stdin = run.child().stdin.take().unwrap();
        stdin.write_all(&data[..data.len() / 2]).unwrap();
        let tmp = wait_for_new_file(dir.path(), &["out.resp"], run.child());
        assert!(tmp.starts_with(".out.resp.rdbferry-tmp-"), "{tmp}");
        let pid = run.child().id().to_string();
        let kill = Command::new("kill").args(["-s", signal, &pid]).status();
        assert!(kill.unwrap().success());
        let o = run.finish();
        drop(stdin);
        // Interrupted: exit 130, within a second or so of the signal even though it was
        // blocked reading stdin.
        assert_eq!(o.status.code(), Some(130), "SIG{signal}: {o:?}");
        assert_holds(&out, b"previous\n");
        assert_eq!(names(dir.path()), ["out.resp"], "SIG{signal}");
    }
}

/// A 96 MB RDB of 1536 strings of 64 KB: big enough that `convert` blocked on a full stdout
/// pipe has read only its first few batches (at most 2 x 8 MB ahead of what it wrote).
fn big_rdb(path: &Path) {
    let mut w = RdbWriter::new(10);
    w.select_db(0);
    let v = value::string(&vec![b'v'; 64 << 10], false);
    for i in 0..1536 {
        w.key(format!("key:{i:05}").as_bytes(), None, &v);
    }
    fs::write(path, w.finish()).unwrap();
}

/// The same amount as AOF commands (`SET key:N <64 KB>`).
fn big_aof(path: &Path) {
    let mut out = Vec::with_capacity(100 << 20);
    for i in 0..1536 {
        out.extend_from_slice(&set_command(i));
    }
    fs::write(path, out).unwrap();
}

fn set_command(i: usize) -> Vec<u8> {
    let key = format!("key:{i:05}");
    let mut c = format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$65536\r\n", key.len()).into_bytes();
    c.extend_from_slice(&[b'v'; 64 << 10]);
    c.extend_from_slice(b"\r\n");
    c
}

/// Run `convert INPUT ARGS` to a stdout pipe the test does not read, so that
/// rdbferry is surely in the middle of the input (blocked on the pipe); call `change` on the
/// input then; read the rest. Returns the exit status and stderr.
fn convert_while(input: &Path, args: &[&str], change: impl FnOnce(&Path)) -> Output {
    let args: Vec<&str> = ["convert", s(input), "-q"]
        .iter()
        .chain(args)
        .copied()
        .collect();
    let mut run = spawn(&args, Stdio::null(), Stdio::piped());
    let mut stdout = run.child().stdout.take().unwrap();
    // The first byte comes when the first 1 MB of output is flushed: the input is mapped.
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).unwrap();
    change(input);
    let rest = std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let o = run.finish();
    let _ = rest.join();
    o
}

/// Issue 8 ("a file changed under rdbferry"): an input truncated while `convert` read it
/// killed rdbferry with SIGBUS and no message. Now: exit 1, the file named, "changed".
#[test]
fn issue8_input_truncated_while_read_is_named_not_a_silent_death() {
    let dir = TempDir::new("truncated");
    let input = dir.path().join("big.rdb");
    big_rdb(&input);
    let o = convert_while(&input, &["--format", "jsonl"], |p| {
        let f = fs::OpenOptions::new().write(true).open(p).unwrap();
        f.set_len(4096).unwrap();
    });
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{:?}: {e}", o.status);
    assert!(e.contains(s(&input)) && e.contains("changed"), "{e}");
}

/// Issue 8 ("a file changed under rdbferry"): an input rewritten in place (same size) while it
/// was read went unnoticed; now its new modification time is seen at the end, and the run
/// fails, naming the file. An RDB that grew is refused the same way.
#[test]
fn issue8_input_rewritten_while_read_fails_at_the_end() {
    let dir = TempDir::new("rewritten");
    let input = dir.path().join("big.rdb");
    big_rdb(&input);
    // Without the checksum, which would catch this one too.
    let args = ["--format", "resp", "--ignore-checksum"];
    let o = convert_while(&input, &args, |p| {
        let mut f = fs::OpenOptions::new().write(true).open(p).unwrap();
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(80 << 20)).unwrap();
        f.write_all(b"www").unwrap();
        // A time of its own: file times may not tick between two writes in a row.
        let t = std::time::UNIX_EPOCH + Duration::from_secs(86_400);
        f.set_modified(t).unwrap();
    });
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{:?}: {e}", o.status);
    assert!(e.contains(s(&input)) && e.contains("changed"), "{e}");

    big_rdb(&input);
    let o = convert_while(&input, &["--format", "jsonl"], |p| {
        let mut f = fs::OpenOptions::new().append(true).open(p).unwrap();
        f.write_all(b"more").unwrap();
    });
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{:?}: {e}", o.status);
    assert!(e.contains("changed"), "{e}");
}

/// An AOF grows while Redis appends to it: the part that was there when rdbferry opened it
/// is read, and that is no error.
#[test]
fn an_aof_appended_to_while_read_is_fine() {
    let dir = TempDir::new("aof-grows");
    let input = dir.path().join("big.aof");
    big_aof(&input);
    let o = convert_while(&input, &["--format", "resp"], |p| {
        let mut f = fs::OpenOptions::new().append(true).open(p).unwrap();
        f.write_all(&set_command(99_999)).unwrap();
    });
    assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
}

/// `convert -o /dev/null` (what `scripts/bench.sh` runs) renamed its temporary file over
/// `/dev/null`, leaving a regular file there: as root, every later write to `/dev/null` went into
/// it and every read of it returned what was written, until a CI run's compiler read a stale
/// error as its source. An output that is not a regular file (a device, a FIFO) is written in
/// place, never replaced. The test uses a FIFO, which shows the same mistake without touching
/// `/dev`: a reader of the FIFO gets the output, and the FIFO is still a FIFO afterwards.
#[test]
fn an_output_that_is_not_a_regular_file_is_written_in_place() {
    use std::os::unix::fs::FileTypeExt;
    let dir = TempDir::new("fifo-out");
    let fifo = dir.path().join("out.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let input = testdata("redis-7.0/all-types.rdb");
    let want = rdbferry(&["convert", &input, "--format", "jsonl"]);
    assert!(want.status.success(), "{}", stderr(&want));
    // The reader opens the FIFO (blocking until a writer does) and reads to the end.
    let path = fifo.clone();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        fs::File::open(&path)
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        got
    });
    let o = rdbferry(&["convert", &input, "--format", "jsonl", "-o", s(&fifo)]);
    let kind = fs::symlink_metadata(&fifo).unwrap().file_type();
    if !kind.is_fifo() {
        // Unblock the reader (a regular file is there now), then fail.
        let _ = fs::remove_file(&fifo);
        panic!(
            "the FIFO was replaced by a {kind:?}; convert said: {}",
            stderr(&o)
        );
    }
    assert!(o.status.success(), "{}", stderr(&o));
    let got = reader.join().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want.stdout)
    );
    assert_eq!(names(dir.path()), ["out.fifo"]);
}
