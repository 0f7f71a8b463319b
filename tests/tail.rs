//! `AofTail` (`src/input/tail.rs`), driven directly: following a growing AOF, across
//! rewrites, from checkpoints.
//!
//! Synthetic files for the exact cases (a command cut short, a transaction left open, each
//! single-file join rule, missing and replaced files); real servers for the rest: a Redis 7.0
//! `appendonlydir` and a Redis 6.2 single file, written by a client thread while the test
//! rewrites them, tailed, and replayed into a second server, whose `DEBUG DIGEST` must then be
//! the source's.

mod support;

use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdbferry::aof::TailErrorKind;
use rdbferry::cancel::Cancel;
use rdbferry::error::Error;
use rdbferry::input::tail::{AofTail, FileId, Start, TailEvent, TailOptions, TailPos};
use rdbferry::rdb::crc::crc64;
use rdbferry::resp::write_command;
use support::{RedisServer, TempDir};

/// Hang guard: a tail that delivers nothing for this long has failed.
const HANG: Duration = Duration::from_secs(60);

/// The smallest RDB a preamble can be: header, EOF opcode, checksum 0 (not checked).
const PREAMBLE: &[u8] = b"REDIS0009\xff\0\0\0\0\0\0\0\0";

fn resp(cmds: &[&[&str]]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in cmds {
        let args: Vec<&[u8]> = c.iter().map(|a| a.as_bytes()).collect();
        write_command(&mut out, &args);
    }
    out
}

fn append(path: &Path, bytes: &[u8]) {
    let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

/// Writes `bytes` to a temp file next to `path` and renames it over `path`, as Redis does.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).unwrap();
    fs::rename(&tmp, path).unwrap();
}

fn opts(start: Start) -> TailOptions {
    TailOptions {
        start,
        resync_on_loss: false,
        poll: Duration::from_millis(50),
        resp_runs: None,
    }
}

fn resync(start: Start) -> TailOptions {
    TailOptions {
        resync_on_loss: true,
        ..opts(start)
    }
}

/// `appendonly.aof` holding `bytes` in a new temp dir, tailed from the beginning up to
/// `CaughtUp` (the events returned).
fn tailed(bytes: &[u8], resync_on_loss: bool) -> (TempDir, PathBuf, AofTail, Vec<TailEvent>) {
    let dir = TempDir::new("tail");
    let p = dir.path().join("appendonly.aof");
    fs::write(&p, bytes).unwrap();
    let o = TailOptions {
        resync_on_loss,
        ..opts(Start::Beginning)
    };
    let mut t = AofTail::open(&p, o).unwrap();
    let evs = until_caught_up(&mut t);
    (dir, p, t, evs)
}

/// Events up to the next `CaughtUp` (included).
fn until_caught_up(t: &mut AofTail) -> Vec<TailEvent> {
    let cancel = Cancel::new();
    let deadline = Instant::now() + HANG;
    let mut out = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "no CaughtUp within {HANG:?}: {out:?}"
        );
        match t.next(Duration::from_secs(1), &cancel).unwrap() {
            Some(e @ TailEvent::CaughtUp { .. }) => {
                out.push(e);
                return out;
            }
            Some(e) => out.push(e),
            None => {}
        }
    }
}

/// The first error `next` returns (within the hang guard).
fn next_error(t: &mut AofTail) -> Error {
    let cancel = Cancel::new();
    let deadline = Instant::now() + HANG;
    loop {
        assert!(Instant::now() < deadline, "no error within {HANG:?}");
        if let Err(e) = t.next(Duration::from_secs(1), &cancel) {
            return e;
        }
    }
}

/// The commands of the events as `db:CMD args|CMD args` (a transaction joined by `|`; each
/// command of a `Resp` run on its own), and `base`, `rewritten` and `caught-up` for the
/// others.
fn shown(evs: &[TailEvent]) -> Vec<String> {
    let show = |c: &[Vec<u8>]| {
        let args: Vec<_> = c.iter().map(|a| String::from_utf8_lossy(a)).collect();
        args.join(" ")
    };
    evs.iter()
        .flat_map(|e| match e {
            TailEvent::Base { .. } => vec!["base".to_string()],
            TailEvent::Rewritten { .. } => vec!["rewritten".to_string()],
            TailEvent::CaughtUp { .. } => vec!["caught-up".to_string()],
            TailEvent::Commands { db, commands, .. } => {
                let cmds: Vec<String> = commands.iter().map(|c| show(c)).collect();
                vec![format!("{db}:{}", cmds.join("|"))]
            }
            TailEvent::Resp { db, bytes, .. } => parsed(bytes)
                .iter()
                .map(|c| format!("{db}:{}", show(c)))
                .collect(),
        })
        .collect()
}

/// The commands of a `Resp` run.
fn parsed(mut bytes: &[u8]) -> Vec<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut args = Vec::new();
    while !bytes.is_empty() {
        let used = rdbferry::resp::parse_command(bytes, &mut args)
            .unwrap()
            .expect("a run holds whole commands");
        out.push(args.iter().map(|a| a.to_vec()).collect());
        bytes = &bytes[used..];
    }
    out
}

fn tail_kind(e: &Error) -> Option<&TailErrorKind> {
    match e {
        Error::Aof(a) => a.tail_kind(),
        _ => None,
    }
}

fn pos_of(e: &TailEvent) -> &TailPos {
    match e {
        TailEvent::Base { pos, .. }
        | TailEvent::Commands { pos, .. }
        | TailEvent::Resp { pos, .. }
        | TailEvent::Rewritten { pos, .. }
        | TailEvent::CaughtUp { pos } => pos,
    }
}

#[test]
fn partial_commands_and_open_transactions_are_waited_for() {
    let dir = TempDir::new("tail");
    let p = dir.path().join("appendonly.aof");
    let mut data = resp(&[&["SET", "a", "1"]]);
    data.extend_from_slice(b"#TS:1700000000\r\n");
    data.extend(resp(&[&["SELECT", "3"], &["SET", "b", "2"]]));
    fs::write(&p, &data).unwrap();
    let mut t = AofTail::open(&p, opts(Start::Beginning)).unwrap();
    let evs = until_caught_up(&mut t);
    assert_eq!(shown(&evs), ["0:SET a 1", "3:SET b 2", "caught-up"]);
    assert!(matches!(
        evs[1],
        TailEvent::Commands {
            ts: Some(1_700_000_000),
            ..
        }
    ));
    assert_eq!(t.pos().offset, data.len() as u64);

    // A command cut short: nothing until its last byte is there.
    let cancel = Cancel::new();
    let incr = resp(&[&["INCR", "counter"]]);
    for cut in [1, 7, incr.len() - 1] {
        let had = fs::metadata(&p).unwrap().len() as usize - data.len();
        append(&p, &incr[had..cut]);
        assert_eq!(t.next(Duration::from_millis(150), &cancel).unwrap(), None);
        assert_eq!(t.pos().offset, data.len() as u64);
    }
    append(&p, &incr[incr.len() - 1..]);
    assert_eq!(
        shown(&until_caught_up(&mut t)),
        ["3:INCR counter", "caught-up"]
    );

    // A transaction: one event, once EXEC is there.
    append(
        &p,
        &resp(&[
            &["MULTI"],
            &["INCR", "x"],
            &["SELECT", "4"],
            &["SET", "y", "1"],
        ]),
    );
    assert_eq!(t.next(Duration::from_millis(150), &cancel).unwrap(), None);
    append(&p, &resp(&[&["EXEC"], &["DEL", "y"]]));
    assert_eq!(
        shown(&until_caught_up(&mut t)),
        [
            "3:MULTI|INCR x|SELECT 4|SET y 1|EXEC",
            "4:DEL y",
            "caught-up"
        ]
    );
}

/// Runs of plain commands (`resp_runs`): the same commands, in the same dbs, with the same
/// positions after each run as without; `SELECT`, transactions and annotations end a run;
/// a command cut short is waited for.
#[test]
fn resp_runs_deliver_the_same_commands_as_events_do() {
    let mut data = resp(&[&["SET", "a", "1"], &["SET", "b", "2"], &["SET", "c", "3"]]);
    data.extend_from_slice(b"#TS:1700000000\r\n");
    data.extend(resp(&[
        &["INCR", "n"],
        &["SELECT", "3"],
        &["RPUSH", "l", "x"],
        &["MULTI"],
        &["INCR", "x"],
        &["EXEC"],
        &["DEL", "l"],
        &["SELECT", "0"],
        &["HSET", "h", "f", "v"],
    ]));
    let dir = TempDir::new("tail");
    let p = dir.path().join("appendonly.aof");
    fs::write(&p, &data).unwrap();
    let plain = until_caught_up(&mut AofTail::open(&p, opts(Start::Beginning)).unwrap());
    let o = TailOptions {
        resp_runs: Some(2),
        ..opts(Start::Beginning)
    };
    let mut t = AofTail::open(&p, o).unwrap();
    let runs = until_caught_up(&mut t);
    assert_eq!(shown(&runs), shown(&plain));
    let counts: Vec<(usize, Option<i64>)> = runs
        .iter()
        .filter_map(|e| match e {
            TailEvent::Resp { commands, ts, .. } => Some((*commands, *ts)),
            _ => None,
        })
        .collect();
    let ts = Some(1_700_000_000);
    assert_eq!(
        counts,
        [(2, None), (1, None), (1, ts), (1, ts), (1, ts), (1, ts)]
    );
    // Each position is one a plain tail reaches too: a checkpoint taken after a run
    // resumes either.
    let plain_pos: Vec<&TailPos> = plain.iter().map(pos_of).collect();
    assert!(runs.iter().all(|e| plain_pos.contains(&pos_of(e))));

    // A command cut short ends the run before it, and comes once whole.
    let more = resp(&[&["SET", "d", "4"], &["INCR", "counter"]]);
    append(&p, &more[..more.len() - 3]);
    assert_eq!(shown(&until_caught_up(&mut t)), ["0:SET d 4", "caught-up"]);
    append(&p, &more[more.len() - 3..]);
    assert_eq!(
        shown(&until_caught_up(&mut t)),
        ["0:INCR counter", "caught-up"]
    );
    assert_eq!(t.pos().offset, (data.len() + more.len()) as u64);
}

#[test]
fn not_an_aof_and_a_manifest_naming_a_missing_file_are_errors() {
    let dir = TempDir::new("tail");
    let p = dir.path().join("dump.txt");
    fs::write(&p, "hello world").unwrap();
    let e = AofTail::open(&p, opts(Start::Beginning)).err().unwrap();
    assert!(
        matches!(tail_kind(&e), Some(TailErrorKind::NotAof(_))),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("dump.txt") && msg.contains("+0x0") && msg.contains("not an AOF"),
        "{msg}"
    );

    let d = dir.path().join("appendonlydir");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("appendonly.aof.1.base.rdb"), PREAMBLE).unwrap();
    fs::write(
        d.join("appendonly.aof.manifest"),
        "file appendonly.aof.1.base.rdb seq 1 type b\nfile appendonly.aof.1.incr.aof seq 1 type i\n",
    )
    .unwrap();
    let e = AofTail::open(&d, opts(Start::Beginning)).err().unwrap();
    assert!(matches!(tail_kind(&e), Some(TailErrorKind::Gone(_))), "{e}");
    assert!(
        e.to_string()
            .contains("appendonly.aof.1.incr.aof, which does not exist"),
        "{e}"
    );
}

#[test]
fn a_file_truncated_or_rewritten_in_place_is_an_error() {
    let dir = TempDir::new("tail");
    let p = dir.path().join("appendonly.aof");
    let data = resp(&[&["SET", "a", "1"], &["SET", "b", "2"]]);
    fs::write(&p, &data).unwrap();
    let mut t = AofTail::open(&p, opts(Start::Beginning)).unwrap();
    until_caught_up(&mut t);
    fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(10)
        .unwrap();
    let e = next_error(&mut t);
    assert_eq!(
        tail_kind(&e),
        Some(&TailErrorKind::Shrank { len: 10 }),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("appendonly.aof") && msg.contains(&format!("+{:#x}", data.len())),
        "{msg}"
    );

    // Same inode, other bytes before the position, and more after it.
    fs::write(&p, &data).unwrap();
    let mut t = AofTail::open(&p, opts(Start::Beginning)).unwrap();
    until_caught_up(&mut t);
    let mut other = resp(&[&["SET", "a", "9"], &["SET", "b", "2"]]);
    other.extend(resp(&[&["SET", "c", "3"]]));
    fs::write(&p, &other).unwrap();
    let e = next_error(&mut t);
    assert_eq!(tail_kind(&e), Some(&TailErrorKind::Changed), "{e}");
}

#[test]
fn resume_from_a_checkpoint_of_a_single_file() {
    let dir = TempDir::new("tail");
    let p = dir.path().join("appendonly.aof");
    let mut data = PREAMBLE.to_vec();
    data.extend(resp(&[
        &["SELECT", "2"],
        &["SET", "a", "1"],
        &["SET", "b", "2"],
    ]));
    fs::write(&p, &data).unwrap();
    let mut t = AofTail::open(&p, opts(Start::Beginning)).unwrap();
    assert_eq!(t.pos().offset, 0);
    let evs = until_caught_up(&mut t);
    assert_eq!(shown(&evs), ["base", "2:SET a 1", "2:SET b 2", "caught-up"]);
    assert!(
        matches!(&evs[0], TailEvent::Base { rdb_end: Some(n), .. } if *n == PREAMBLE.len() as u64)
    );
    let at_base = pos_of(&evs[0]).clone();
    let after_a = pos_of(&evs[1]).clone();
    drop(t);
    append(&p, &resp(&[&["SET", "c", "3"]]));

    let mut t = AofTail::open(&p, opts(Start::At(after_a.clone()))).unwrap();
    assert_eq!(*t.pos(), after_a);
    assert_eq!(
        shown(&until_caught_up(&mut t)),
        ["2:SET b 2", "2:SET c 3", "caught-up"]
    );
    let mut t = AofTail::open(&p, opts(Start::At(at_base))).unwrap();
    assert_eq!(shown(&until_caught_up(&mut t))[0], "2:SET a 1");
    let mut from_zero = after_a.clone();
    from_zero.offset = 0;
    from_zero.id.crc = crc64(b"");
    let mut t = AofTail::open(&p, opts(Start::At(from_zero))).unwrap();
    assert_eq!(shown(&until_caught_up(&mut t))[..2], ["base", "2:SET a 1"]);

    // Inside a command (with the right hash): not a boundary.
    let inside = after_a.offset + 3;
    let from = inside.saturating_sub(4096) as usize;
    let bytes = fs::read(&p).unwrap();
    let mut bad = after_a.clone();
    bad.offset = inside;
    bad.id.crc = crc64(&bytes[from..inside as usize]);
    let e = AofTail::open(&p, opts(Start::At(bad))).err().unwrap();
    assert_eq!(tail_kind(&e), Some(&TailErrorKind::NotBoundary), "{e}");

    // The same bytes in another file: another AOF.
    let other = TempDir::new("tail-other");
    let q = other.path().join("appendonly.aof");
    fs::copy(&p, &q).unwrap();
    let e = AofTail::open(&q, opts(Start::At(after_a.clone())))
        .err()
        .unwrap();
    assert!(
        matches!(tail_kind(&e), Some(TailErrorKind::ForeignCheckpoint(_))),
        "{e}"
    );
    let mut dir_pos = after_a;
    dir_pos.seq = Some(1);
    let e = AofTail::open(&p, opts(Start::At(dir_pos))).err().unwrap();
    assert!(
        matches!(tail_kind(&e), Some(TailErrorKind::ForeignCheckpoint(_))),
        "{e}"
    );
}

#[test]
fn start_at_the_end_delivers_only_what_comes_after() {
    let dir = TempDir::new("tail");
    let p = dir.path().join("appendonly.aof");
    let mut data = PREAMBLE.to_vec();
    data.extend(resp(&[&["SELECT", "5"], &["SET", "a", "1"]]));
    let cut = resp(&[&["SET", "b", "2"]]);
    data.extend_from_slice(&cut[..5]);
    fs::write(&p, &data).unwrap();
    let mut t = AofTail::open(&p, opts(Start::End)).unwrap();
    assert_eq!(t.pos().offset, (data.len() - 5) as u64);
    append(&p, &cut[5..]);
    assert_eq!(shown(&until_caught_up(&mut t)), ["5:SET b 2", "caught-up"]);
}

/// A 6.2-style rewrite: the new file is a preamble, then the commands written to both files
/// since the rewrite began (opened by a SELECT), then new ones.
#[test]
fn single_file_rewrites_join_where_proven() {
    let dir = TempDir::new("tail");
    let p = dir.path().join("appendonly.aof");
    fs::write(
        &p,
        resp(&[
            &["SELECT", "0"],
            &["SET", "a", "1"],
            &["SELECT", "0"],
            &["SET", "b", "2"],
        ]),
    )
    .unwrap();
    let mut t = AofTail::open(&p, opts(Start::Beginning)).unwrap();
    assert_eq!(
        shown(&until_caught_up(&mut t)),
        ["0:SET a 1", "0:SET b 2", "caught-up"]
    );

    // The rewrite began before `SELECT 0; SET b 2`: those bytes open the new file's commands.
    let mut new = PREAMBLE.to_vec();
    new.extend(resp(&[
        &["SELECT", "0"],
        &["SET", "b", "2"],
        &["SELECT", "0"],
        &["SET", "c", "3"],
    ]));
    replace(&p, &new);
    let evs = until_caught_up(&mut t);
    assert_eq!(shown(&evs), ["rewritten", "0:SET c 3", "caught-up"]);
    let TailEvent::Rewritten { note, pos } = &evs[0] else {
        unreachable!()
    };
    let overlap = resp(&[&["SELECT", "0"], &["SET", "b", "2"]]).len();
    assert!(note.contains(&format!("last {overlap} bytes")), "{note}");
    assert_eq!(pos.offset, (PREAMBLE.len() + overlap) as u64);

    // Nothing reached the old file after this one began: every command after the preamble.
    let mut newer = PREAMBLE.to_vec();
    newer.extend(resp(&[&["SELECT", "1"], &["SET", "d", "4"]]));
    replace(&p, &newer);
    let evs = until_caught_up(&mut t);
    assert_eq!(shown(&evs), ["rewritten", "1:SET d 4", "caught-up"]);
    let TailEvent::Rewritten { note, .. } = &evs[0] else {
        unreachable!()
    };
    assert!(note.contains("no command reached the old file"), "{note}");
    // The checkpoint after a join resumes in the new file.
    let at = pos_of(&evs[1]).clone();
    append(&p, &resp(&[&["SET", "e", "5"]]));
    let mut t = AofTail::open(&p, opts(Start::At(at))).unwrap();
    assert_eq!(shown(&until_caught_up(&mut t)), ["1:SET e 5", "caught-up"]);
}

#[test]
fn single_file_ambiguous_join_stops_or_starts_over() {
    let old = resp(&[
        &["SELECT", "0"],
        &["INCR", "x"],
        &["SELECT", "0"],
        &["INCR", "x"],
    ]);
    let mut new = PREAMBLE.to_vec();
    new.extend(resp(&[
        &["SELECT", "0"],
        &["INCR", "x"],
        &["SELECT", "0"],
        &["INCR", "x"],
        &["SELECT", "0"],
        &["INCR", "x"],
    ]));
    for resync_on_loss in [false, true] {
        let (_dir, p, mut t, evs) = tailed(&old, resync_on_loss);
        assert_eq!(shown(&evs), ["0:INCR x", "0:INCR x", "caught-up"]);
        replace(&p, &new);
        if !resync_on_loss {
            let e = next_error(&mut t);
            assert!(
                matches!(tail_kind(&e), Some(TailErrorKind::JoinNotProven(_))),
                "{e}"
            );
            assert!(e.to_string().contains("repeat themselves"), "{e}");
            continue;
        }
        let evs = until_caught_up(&mut t);
        assert_eq!(
            shown(&evs),
            [
                "rewritten",
                "base",
                "0:INCR x",
                "0:INCR x",
                "0:INCR x",
                "caught-up"
            ]
        );
        let TailEvent::Rewritten { note, .. } = &evs[0] else {
            unreachable!()
        };
        assert!(note.contains("may remain on the target"), "{note}");
        assert!(
            matches!(&evs[1], TailEvent::Base { rdb_end: Some(n), .. } if *n == PREAMBLE.len() as u64)
        );
    }

    // A new file without a preamble: nothing marks where its dataset ends.
    for resync_on_loss in [false, true] {
        let (_dir, p, mut t, _) = tailed(&old, resync_on_loss);
        replace(&p, &resp(&[&["SELECT", "0"], &["SET", "x", "2"]]));
        let e = next_error(&mut t);
        let want = if resync_on_loss {
            "no RDB preamble"
        } else {
            "has no RDB preamble"
        };
        assert!(e.to_string().contains(want), "{e}");
    }
}

fn write_manifest(dir: &Path, text: &str) {
    let tmp = dir.join("temp-appendonly.aof.manifest");
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, dir.join("appendonly.aof.manifest")).unwrap();
}

#[test]
fn appendonlydir_follows_incr_files_across_a_rewrite() {
    let dir = TempDir::new("tail");
    let d = dir.path();
    fs::write(d.join("appendonly.aof.1.base.rdb"), PREAMBLE).unwrap();
    fs::write(
        d.join("appendonly.aof.1.incr.aof"),
        resp(&[&["SET", "a", "1"]]),
    )
    .unwrap();
    write_manifest(
        d,
        "file appendonly.aof.1.base.rdb seq 1 type b\nfile appendonly.aof.1.incr.aof seq 1 type i\n",
    );
    let mut t = AofTail::open(d, opts(Start::Beginning)).unwrap();
    let evs = until_caught_up(&mut t);
    assert_eq!(shown(&evs), ["base", "0:SET a 1", "caught-up"]);
    assert!(matches!(&evs[0], TailEvent::Base { rdb_end: None, .. }));
    let in_incr1 = pos_of(&evs[1]).clone();
    assert_eq!(
        (in_incr1.file.as_str(), in_incr1.seq),
        ("appendonly.aof.1.incr.aof", Some(1))
    );

    // BGREWRITEAOF: the last writes to incr 1, a new incr 2 listed after it; then the rewrite
    // completes: a new base, the old files history, then deleted.
    append(
        &d.join("appendonly.aof.1.incr.aof"),
        &resp(&[&["SET", "b", "2"]]),
    );
    fs::write(d.join("appendonly.aof.2.incr.aof"), b"").unwrap();
    write_manifest(
        d,
        "file appendonly.aof.1.base.rdb seq 1 type b\nfile appendonly.aof.1.incr.aof seq 1 type i\nfile appendonly.aof.2.incr.aof seq 2 type i\n",
    );
    append(
        &d.join("appendonly.aof.2.incr.aof"),
        &resp(&[&["SELECT", "1"], &["SET", "c", "3"]]),
    );
    fs::write(d.join("appendonly.aof.2.base.rdb"), PREAMBLE).unwrap();
    write_manifest(
        d,
        "file appendonly.aof.2.base.rdb seq 2 type b\nfile appendonly.aof.1.base.rdb seq 1 type h\nfile appendonly.aof.1.incr.aof seq 1 type h\nfile appendonly.aof.2.incr.aof seq 2 type i\n",
    );
    fs::remove_file(d.join("appendonly.aof.1.base.rdb")).unwrap();
    fs::remove_file(d.join("appendonly.aof.1.incr.aof")).unwrap();
    let evs = until_caught_up(&mut t);
    assert_eq!(
        shown(&evs),
        ["0:SET b 2", "rewritten", "1:SET c 3", "caught-up"]
    );

    // The checkpoint in incr 1 is gone now: an error naming it, or a fresh start.
    let e = AofTail::open(d, opts(Start::At(in_incr1.clone())))
        .err()
        .unwrap();
    assert!(matches!(tail_kind(&e), Some(TailErrorKind::Gone(_))), "{e}");
    assert!(
        e.to_string()
            .contains("appendonly.aof.1.incr.aof (seq 1), where the checkpoint stands, is gone"),
        "{e}"
    );
    let mut again = AofTail::open(d, resync(Start::At(in_incr1))).unwrap();
    assert_eq!(
        shown(&until_caught_up(&mut again)),
        ["rewritten", "base", "1:SET c 3", "caught-up"]
    );

    // A manifest that skips incr 3 (deleted before it could be read).
    append(
        &d.join("appendonly.aof.2.incr.aof"),
        &resp(&[&["SET", "d", "4"]]),
    );
    write_manifest(
        d,
        "file appendonly.aof.2.base.rdb seq 2 type b\nfile appendonly.aof.4.incr.aof seq 4 type i\n",
    );
    let e = next_error(&mut t);
    assert!(matches!(tail_kind(&e), Some(TailErrorKind::Gone(_))), "{e}");
    assert!(
        e.to_string().contains(
            "appendonly.aof.3.incr.aof (seq 3), which follows appendonly.aof.2.incr.aof, is gone"
        ),
        "{e}"
    );
}

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    // SAFETY: getrusage writes into the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) }, 0);
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(us(ru.ru_utime) + us(ru.ru_stime))
}

/// Idle, the tail sleeps: over a second of waiting for data that does not come, the thread
/// uses a small part of a second of CPU (a busy loop would use all of it). A bound on CPU
/// time, not on how long anything took.
#[test]
fn a_caught_up_tail_sleeps() {
    let dir = TempDir::new("tail");
    let p = dir.path().join("appendonly.aof");
    fs::write(&p, resp(&[&["SET", "a", "1"]])).unwrap();
    let mut t = AofTail::open(&p, opts(Start::Beginning)).unwrap();
    until_caught_up(&mut t);
    let before = thread_cpu();
    let waited = Instant::now();
    assert_eq!(
        t.next(Duration::from_secs(2), &Cancel::new()).unwrap(),
        None
    );
    let (cpu, wall) = (thread_cpu() - before, waited.elapsed());
    assert!(
        cpu * 4 < wall,
        "used {cpu:?} of CPU while idle for {wall:?}"
    );
    // And a stop request ends the wait.
    let cancel = Cancel::new();
    cancel.cancel();
    assert!(matches!(
        t.next(Duration::from_secs(60), &cancel),
        Err(Error::Cancelled)
    ));
}

/// The `follow` job may read on one thread and apply on another.
#[test]
fn a_tail_can_move_to_another_thread() {
    fn send<T: Send>() {}
    send::<AofTail>();
    send::<TailEvent>();
}

#[test]
fn file_id_round_trips_through_json() {
    let pos = TailPos {
        file: "appendonly.aof.3.incr.aof".into(),
        seq: Some(3),
        offset: 1234,
        id: FileId {
            dev: 1,
            ino: 2,
            crc: 3,
        },
    };
    let json = serde_json::to_string(&pos).unwrap();
    assert_eq!(serde_json::from_str::<TailPos>(&json).unwrap(), pos);
}

// ---- Real servers ----------------------------------------------------------------------

/// A Lua script whose effects Redis writes to the AOF as a MULTI … EXEC block.
const SCRIPT: &str = "redis.call('INCR', KEYS[1]); return redis.call('SET', KEYS[2], ARGV[1])";

/// One round of the writer's known sequence: unique SET values, INCR, RPUSH, a MULTI block,
/// a script, a write in db 1, a DEL. `conn` is on db 0, `db1` on db 1.
fn write_round(conn: &mut redis::Connection, db1: &mut redis::Connection, i: u64) {
    redis::cmd("SET")
        .arg(format!("key:{i}"))
        .arg(format!("value-{i}"))
        .exec(conn)
        .unwrap();
    redis::cmd("INCR").arg("counter").exec(conn).unwrap();
    redis::cmd("RPUSH").arg("list").arg(i).exec(conn).unwrap();
    if i % 10 == 0 {
        redis::pipe()
            .atomic()
            .cmd("INCR")
            .arg("counter2")
            .cmd("SET")
            .arg(format!("tx:{i}"))
            .arg(i)
            .exec(conn)
            .unwrap();
    }
    if i % 25 == 0 {
        redis::cmd("EVAL")
            .arg(SCRIPT)
            .arg(2)
            .arg("counter3")
            .arg(format!("lua:{i}"))
            .arg(i)
            .exec(conn)
            .unwrap();
    }
    if i % 7 == 0 {
        redis::cmd("SET")
            .arg(format!("db1:{i}"))
            .arg(i)
            .exec(db1)
            .unwrap();
    }
    if i % 11 == 0 && i >= 3 {
        redis::cmd("DEL")
            .arg(format!("key:{}", i - 3))
            .exec(conn)
            .unwrap();
    }
}

fn connect(server: &RedisServer, db: u64) -> redis::Connection {
    let url = format!("{}{db}", server.url());
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

/// Keys enough for a rewrite to take a while with `rdb-key-save-delay`.
fn preload(server: &RedisServer, n: usize) {
    let mut conn = connect(server, 0);
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("SET").arg(format!("pre:{i}")).arg(i).ignore();
    }
    pipe.exec(&mut conn).unwrap();
}

/// The writer, on its own thread, until stopped; it can be paused between rounds.
struct Writer {
    stop: Arc<AtomicBool>,
    pause: Arc<AtomicBool>,
    /// Rounds done (the writer is paused when this stops moving under `pause`).
    rounds: Arc<AtomicU64>,
    paused: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
}

impl Writer {
    fn start(server: &RedisServer) -> Writer {
        let (mut conn, mut db1) = (connect(server, 0), connect(server, 1));
        let stop = Arc::new(AtomicBool::new(false));
        let pause = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let (s, p, pd, r) = (stop.clone(), pause.clone(), paused.clone(), rounds.clone());
        let handle = std::thread::spawn(move || {
            let mut i = 0;
            while !s.load(Ordering::SeqCst) {
                if p.load(Ordering::SeqCst) {
                    pd.store(true, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
                pd.store(false, Ordering::SeqCst);
                write_round(&mut conn, &mut db1, i);
                i += 1;
                r.store(i, Ordering::SeqCst);
            }
            i
        });
        Writer {
            stop,
            pause,
            rounds,
            paused,
            handle,
        }
    }

    /// Waits until at least `n` more rounds are done.
    fn progress(&self, n: u64) {
        let want = self.rounds.load(Ordering::SeqCst) + n;
        let deadline = Instant::now() + HANG;
        while self.rounds.load(Ordering::SeqCst) < want {
            assert!(Instant::now() < deadline, "the writer stalled");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn set_paused(&self, on: bool) {
        self.pause.store(on, Ordering::SeqCst);
        let deadline = Instant::now() + HANG;
        while on && !self.paused.load(Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "the writer did not pause");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap()
    }
}

/// `BGREWRITEAOF`, and wait until it is done.
fn rewrite(server: &RedisServer) {
    server.cli(&["BGREWRITEAOF"]);
    wait_rewrite_done(server);
}

fn wait_rewrite_done(server: &RedisServer) {
    let deadline = Instant::now() + HANG;
    loop {
        let info = server.cli(&["INFO", "persistence"]);
        if info.contains("aof_rewrite_in_progress:0") && info.contains("aof_rewrite_scheduled:0") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the rewrite did not finish: {info}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Applies what a tail delivers to a target server: a base with `rdbferry import`
/// (replacing keys), commands as they come.
struct Replayer {
    conn: redis::Connection,
    url: String,
    tmp: TempDir,
    db: Option<u64>,
    bases: usize,
    rewritten: Vec<String>,
    ts: Option<i64>,
}

impl Replayer {
    fn new(target: &RedisServer) -> Replayer {
        Replayer {
            conn: connect(target, 0),
            url: target.url(),
            tmp: TempDir::new("tail-replay"),
            db: None,
            bases: 0,
            rewritten: Vec::new(),
            ts: None,
        }
    }

    fn apply(&mut self, ev: &TailEvent, tail: &AofTail) {
        match ev {
            TailEvent::Base { rdb_end, .. } => self.load_base(*rdb_end, tail),
            TailEvent::Commands {
                db, commands, ts, ..
            } => {
                if self.db != Some(*db) {
                    redis::cmd("SELECT").arg(db).exec(&mut self.conn).unwrap();
                    self.db = Some(*db);
                }
                for c in commands {
                    let mut cmd = redis::cmd(&String::from_utf8_lossy(&c[0]));
                    for a in &c[1..] {
                        cmd.arg(&a[..]);
                    }
                    cmd.query::<redis::Value>(&mut self.conn)
                        .unwrap_or_else(|e| {
                            panic!("replaying {:?}: {e}", shown(std::slice::from_ref(ev)))
                        });
                    if c[0].eq_ignore_ascii_case(b"select") {
                        self.db = std::str::from_utf8(&c[1]).ok().and_then(|s| s.parse().ok());
                    }
                }
                self.ts = ts.or(self.ts);
            }
            TailEvent::Resp { db, bytes, ts, .. } => {
                let commands = parsed(bytes);
                let ev = TailEvent::Commands {
                    db: *db,
                    commands,
                    pos: pos_of(ev).clone(),
                    ts: *ts,
                };
                self.apply(&ev, tail);
            }
            TailEvent::Rewritten { note, .. } => self.rewritten.push(note.clone()),
            TailEvent::CaughtUp { .. } => {}
        }
    }

    /// The base, copied through the tail's open file (the path may be gone), then imported.
    fn load_base(&mut self, rdb_end: Option<u64>, tail: &AofTail) {
        let f = tail
            .base_file()
            .expect("a Base event comes with its open file");
        let len = rdb_end.unwrap_or_else(|| f.metadata().unwrap().len());
        let mut bytes = vec![0; len as usize];
        f.read_exact_at(&mut bytes, 0).unwrap();
        self.bases += 1;
        let path = self.tmp.path().join(format!("base-{}.rdb", self.bases));
        fs::write(&path, &bytes).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rdbferry"))
            .args([
                "import",
                "-q",
                "--via",
                "commands",
                "--on-conflict",
                "replace",
                "--to",
                &self.url,
            ])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "import of the base failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Applies events until `CaughtUp`.
    fn until_caught_up(&mut self, tail: &mut AofTail) {
        for ev in until_caught_up(tail) {
            self.apply(&ev, tail);
        }
    }
}

/// Tails `path` on a thread from the beginning, replaying into `target`, while the writer
/// writes into `source` and the test rewrites the AOF `rewrites` times (with the writer
/// paused during those listed in `paused`); then checks the target against the source.
/// `resp_runs`: the tail's option (runs of plain commands, or one event per command).
fn follow_while_rewriting(
    source: &RedisServer,
    path: &Path,
    rewrites: usize,
    paused: &[usize],
    resp_runs: Option<usize>,
) -> Replayer {
    let target = RedisServer::start();
    preload(source, 2000);
    // 2000 keys × 100 µs: each rewrite takes a fifth of a second, so commands land in it.
    source.cli(&["CONFIG", "SET", "rdb-key-save-delay", "100"]);
    let done = Arc::new(AtomicBool::new(false));
    let (d, p, mut replayer) = (done.clone(), path.to_path_buf(), Replayer::new(&target));
    let follower = std::thread::spawn(move || {
        let cancel = Cancel::new();
        let o = TailOptions {
            resp_runs,
            ..opts(Start::Beginning)
        };
        let mut tail = AofTail::open(&p, o).unwrap();
        loop {
            let finishing = d.load(Ordering::SeqCst);
            match tail.next(Duration::from_millis(500), &cancel).unwrap() {
                None | Some(TailEvent::CaughtUp { .. }) if finishing => return replayer,
                Some(ev) => replayer.apply(&ev, &tail),
                None => {}
            }
        }
    });
    let writer = Writer::start(source);
    for r in 0..rewrites {
        writer.progress(100);
        writer.set_paused(paused.contains(&r));
        rewrite(source);
        writer.set_paused(false);
    }
    writer.progress(100);
    let rounds = writer.finish();
    done.store(true, Ordering::SeqCst);
    let replayer = follower.join().unwrap();
    assert_eq!(
        replayer.rewritten.len(),
        rewrites,
        "{:#?}",
        replayer.rewritten
    );
    assert_eq!(
        target.cli(&["GET", "counter"]),
        rounds.to_string(),
        "an INCR was lost or applied twice"
    );
    assert_eq!(
        target.digest(),
        source.digest(),
        "the target differs from the source"
    );
    replayer
}

#[test]
fn redis7_appendonlydir_followed_across_rewrites() {
    let source = RedisServer::aof_source();
    let r = follow_while_rewriting(&source, &source.dir().join("appendonlydir"), 4, &[2], None);
    assert_eq!(
        r.bases, 1,
        "the base is delivered once, never again after a rewrite"
    );
    assert!(
        r.ts.is_some_and(|t| t > 1_600_000_000),
        "no #TS annotation seen"
    );
}

/// Redis 6.2's single `appendonly.aof`, replaced by each rewrite. The writer's commands carry
/// unique values (`SET key:<i> value-<i>`), so the old file's end appears only once at the
/// start of the new file's commands: each join is proven (one rewrite runs with the writer
/// paused: nothing reaches the old file after it begins, the other rule). A join not proven
/// would fail the test with the tail's error.
#[test]
fn redis62_single_file_followed_across_rewrites() {
    let Some(bin) = support::require_old_server("6.2") else {
        return;
    };
    let source = RedisServer::start_with(
        &bin,
        &[
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--aof-use-rdb-preamble",
            "yes",
        ],
    );
    let r = follow_while_rewriting(
        &source,
        &source.dir().join("appendonly.aof"),
        4,
        &[1],
        Some(50),
    );
    assert_eq!(r.bases, 0, "a plain AOF start has no preamble");
    assert!(
        r.rewritten
            .iter()
            .any(|n| n.contains("start with the old file's last")),
        "{:#?}",
        r.rewritten
    );
    assert!(
        r.rewritten
            .iter()
            .any(|n| n.contains("no command reached the old file")),
        "{:#?}",
        r.rewritten
    );
}

#[test]
fn redis7_resume_across_a_rewrite_and_checkpoint_errors() {
    let args = ["--appendonly", "yes", "--appendfsync", "always"];
    let source = RedisServer::start_with(Path::new("redis-server"), &args);
    let target = RedisServer::start();
    let dir = source.dir().join("appendonlydir");
    let (mut conn, mut db1) = (connect(&source, 0), connect(&source, 1));
    let mut writes =
        |from: u64, to: u64| (from..to).for_each(|i| write_round(&mut conn, &mut db1, i));
    preload(&source, 3000);
    writes(0, 200);
    let mut replayer = Replayer::new(&target);
    let mut tail = AofTail::open(&dir, opts(Start::Beginning)).unwrap();
    replayer.until_caught_up(&mut tail);
    let first = tail.pos().clone();
    drop(tail);

    // Another server's directory has a file of the same name: not this checkpoint's.
    let other = RedisServer::start_with(Path::new("redis-server"), &args);
    let e = AofTail::open(
        &other.dir().join("appendonlydir"),
        opts(Start::At(first.clone())),
    )
    .err()
    .unwrap();
    assert!(
        matches!(tail_kind(&e), Some(TailErrorKind::ForeignCheckpoint(_))),
        "{e}"
    );

    // While follow is down: writes, a rewrite begins (3000 keys × 2 ms: it lasts), writes
    // into the new incr file. The checkpoint's file still exists: resume, across the switch.
    writes(200, 300);
    source.cli(&["CONFIG", "SET", "rdb-key-save-delay", "2000"]);
    source.cli(&["BGREWRITEAOF"]);
    writes(300, 400);
    let mut tail = AofTail::open(&dir, opts(Start::At(first))).unwrap();
    assert!(
        source
            .cli(&["INFO", "persistence"])
            .contains("aof_rewrite_in_progress:1")
    );
    replayer.until_caught_up(&mut tail);
    assert_eq!(replayer.rewritten.len(), 1, "{:?}", replayer.rewritten);
    wait_rewrite_done(&source);
    writes(400, 500);
    replayer.until_caught_up(&mut tail);
    let second = tail.pos().clone();
    drop(tail);
    assert_eq!(target.digest(), source.digest());

    // A rewrite completes while follow is down: the checkpoint's incr file is deleted.
    source.cli(&["CONFIG", "SET", "rdb-key-save-delay", "0"]);
    rewrite(&source);
    writes(500, 600);
    let e = AofTail::open(&dir, opts(Start::At(second.clone())))
        .err()
        .unwrap();
    assert!(matches!(tail_kind(&e), Some(TailErrorKind::Gone(_))), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("{} (seq {})", second.file, second.seq.unwrap())),
        "{e}"
    );
    // With resync on loss: the current base again (no key was deleted meanwhile), then on.
    let mut tail = AofTail::open(&dir, resync(Start::At(second))).unwrap();
    replayer.until_caught_up(&mut tail);
    assert!(
        replayer
            .rewritten
            .last()
            .is_some_and(|n| n.contains("may remain on the target"))
    );
    assert_eq!(replayer.bases, 2);
    assert_eq!(target.cli(&["GET", "counter"]), "600");
    assert_eq!(target.digest(), source.digest());
}
