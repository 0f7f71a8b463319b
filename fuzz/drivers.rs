//! What some fuzz targets do with their input, shared with `tests/fuzz_regressions.rs`
//! (`#[path]`-included by both), so that a regression test runs exactly the checks of its
//! fuzz target and a failure there reproduces one here. Each driver panics where its target
//! would report a finding.
#![allow(dead_code)]

use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use rdbferry::input::jsonl::{JsonlReader, Line};
use rdbferry::job::import::loadable::{Seen, check_value, duplicate_member};
use rdbferry::rdb::{DataType, KeyRecord, RdbReader, Record, Value};
use rdbferry::repl::master::read_command;
use rdbferry::sink::Sink;
use rdbferry::sink::jsonl::JsonlSink;
use rdbferry::sink::resp::RespSink;

/// What the slice RDB reader made of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RdbRun {
    /// Records decoded.
    pub records: usize,
    /// It stopped on an error.
    pub err: bool,
    /// Key records whose value does not validate.
    pub invalid: usize,
}

/// `rdb_reader`: every record; every value validated by the fast structural walk and by the
/// general element iterators, which must agree (soundness and item count); every key and
/// function written through the JSONL and RESP sinks.
pub fn rdb_reader(data: &[u8]) -> RdbRun {
    let mut run = RdbRun {
        records: 0,
        err: false,
        invalid: 0,
    };
    let Ok(reader) = RdbReader::new(data, "fuzz") else {
        run.err = true;
        return run;
    };
    let mut jsonl = JsonlSink::new(std::io::sink(), "fuzz");
    let mut resp = RespSink::new(std::io::sink(), "fuzz");
    for rec in reader {
        let Ok(rec) = rec else {
            run.err = true;
            break;
        };
        run.records += 1;
        match rec {
            Record::Key(k) => {
                let fast = k.validate();
                let general = k.value().and_then(|v| v.validate_elements());
                assert_eq!(
                    fast.as_ref().ok(),
                    general.as_ref().ok(),
                    "fast {fast:?} vs general {general:?}"
                );
                run.invalid += usize::from(fast.is_err());
                let _ = jsonl.key(&k);
                let _ = resp.key(&k);
            }
            Record::Function { code } => {
                let _ = jsonl.function(&code);
                let _ = resp.function(&code);
            }
            _ => {}
        }
    }
    let _ = jsonl.finish();
    let _ = resp.finish();
    run
}

fn write_back(line: &Line) -> Vec<u8> {
    let mut s = JsonlSink::new(Vec::new(), "fuzz");
    match line {
        Line::Key(k) => s.key(&k.record()),
        Line::Function(code) => s.function(code),
        Line::Command { db, args } => {
            let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
            s.command(*db, &refs)
        }
    }
    .expect("the writer takes what the reader made");
    s.into_inner()
}

/// `jsonl_reader`: every line to the end. Every key line it accepts encodes to a value the
/// RDB decoder validates, and a line written back by the JSONL writer reads back the same.
/// Returns the lines accepted.
pub fn jsonl_reader(data: &[u8]) -> usize {
    let mut accepted = 0;
    for line in JsonlReader::new(data, "fuzz") {
        let Ok(mut line) = line else { break };
        accepted += 1;
        if let Line::Key(k) = &line {
            k.record().validate().expect("an accepted key line decodes");
        }
        let again = write_back(&line);
        let mut back = JsonlReader::new(&again[..], "again");
        let mut reread = match back.next() {
            Some(Ok(l)) => l,
            other => panic!(
                "written line not read back: {other:?}\n{}",
                String::from_utf8_lossy(&again)
            ),
        };
        if let (Line::Key(a), Line::Key(b)) = (&mut line, &mut reread) {
            b.offset = a.offset;
        }
        assert_eq!(line, reread, "{}", String::from_utf8_lossy(&again));
        assert!(back.next().is_none());
    }
    accepted
}

/// `replica_handshake`: the commands a replica sends to the full sync's listener, read one
/// after the other, each within the listener's bounds. Returns the commands read.
pub fn replica_handshake(data: &[u8]) -> Vec<Vec<Vec<u8>>> {
    let mut r = data;
    let mut out = Vec::new();
    while let Ok(args) = read_command(&mut r) {
        assert!(args.len() <= 32, "{} arguments", args.len());
        assert!(
            args.iter().all(|a| a.len() <= 4096),
            "an argument over 4 KB"
        );
        out.push(args);
    }
    out
}

/// The full sync's key hash, as `job::import` makes it (db and name).
fn route(db: u64, key: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    db.hash(&mut h);
    key.hash(&mut h);
    h.finish()
}

/// Whether a set, zset or hash holds a member (field) twice, by the members' bytes; `None`
/// for other types or an unreadable value.
fn repeated_member(k: &KeyRecord<'_>) -> Option<bool> {
    let Ok(Value::Coll(c)) = k.value() else {
        return None;
    };
    let step = match k.data_type() {
        DataType::Set => 1,
        DataType::ZSet => 2,
        DataType::Hash if c.has_field_ttls() => 3,
        DataType::Hash => 2,
        _ => return None,
    };
    let mut members = HashSet::new();
    for (i, e) in c.elements().enumerate() {
        let e = e.ok()?;
        if i % step == 0 && !members.insert(e.to_bytes().into_owned()) {
            return Some(true);
        }
    }
    Some(false)
}

/// What the full sync's checks made of an input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadableRun {
    /// Key records passed by `check_value` for an RDB 12 target.
    pub passed: usize,
    /// Key records refused.
    pub refused: usize,
    /// Keys `Seen` found again.
    pub repeated_keys: usize,
}

/// `loadable`: arbitrary bytes read as an RDB; for every key record the full sync's checks,
/// `check_value(k, 12)` and `Seen`. Beyond ending on any input: a value they pass validates;
/// what an RDB 12 target is refused, an RDB 9 one is too; `duplicate_member` finds a
/// repeated member exactly when a set of the members' bytes does (64-bit hash collisions
/// aside, which fuzzing does not produce); `Seen` tells a key it has seen from a new one.
pub fn loadable(data: &[u8]) -> LoadableRun {
    let mut run = LoadableRun::default();
    let Ok(reader) = RdbReader::new(data, "fuzz") else {
        return run;
    };
    let seen = Seen::new(64);
    let mut keys = HashSet::new();
    for rec in reader {
        let k = match rec {
            Ok(Record::Key(k)) => k,
            Ok(_) => continue,
            Err(_) => break,
        };
        let verdict = check_value(&k, 12);
        match &verdict {
            Ok(()) => {
                run.passed += 1;
                assert!(k.validate().is_ok(), "passed, yet does not validate");
            }
            Err(_) => {
                run.refused += 1;
                assert!(check_value(&k, 9).is_err(), "refused for RDB 12, not for 9");
            }
        }
        if let (Ok(n), Some(twice)) = (k.validate(), repeated_member(&k)) {
            assert_eq!(
                duplicate_member(&k, n).is_some(),
                twice,
                "duplicate_member disagrees with the members' bytes"
            );
        }
        let h = route(k.db, &k.key);
        let new = keys.insert(h);
        match seen.insert(h) {
            Some(again) => {
                assert_eq!(again, !new, "Seen is wrong about a key");
                run.repeated_keys += usize::from(again);
            }
            None => assert!(keys.len() > 64, "Seen full after {} keys", keys.len()),
        }
    }
    run
}

/// What the AOF tail made of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TailRun {
    /// Events delivered (a preamble, commands, transactions).
    pub events: usize,
    /// Commands in them.
    pub commands: usize,
    /// It stopped on an error.
    pub err: bool,
}

/// `aof_tail`: `data` as a single AOF file that stopped growing, followed from its start
/// until the tail is caught up (or an error). Positions only move forward, stay within the
/// file, and every command has a name; a preamble's end is within the file. Read again with
/// runs of plain commands (`resp_runs`): the same commands, and an error if and only if
/// the first read had one.
pub fn aof_tail(data: &[u8]) -> TailRun {
    let one = aof_tail_with(data, None);
    let runs = aof_tail_with(data, Some(3));
    assert_eq!((one.commands, one.err), (runs.commands, runs.err));
    one
}

fn aof_tail_with(data: &[u8], resp_runs: Option<usize>) -> TailRun {
    use rdbferry::cancel::Cancel;
    use rdbferry::input::tail::{AofTail, TailEvent, TailOptions};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;
    static N: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "rdbferry-fuzz-tail-{}-{}.aof",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, data).expect("a temporary file");
    let mut run = TailRun::default();
    let cancel = Cancel::new();
    let mut last = 0u64;
    let len = data.len() as u64;
    let opts = TailOptions {
        resp_runs,
        ..TailOptions::default()
    };
    match AofTail::open(&path, opts) {
        Err(_) => run.err = true,
        Ok(mut tail) => loop {
            match tail.next(Duration::ZERO, &cancel) {
                Err(_) => {
                    run.err = true;
                    break;
                }
                Ok(None) | Ok(Some(TailEvent::CaughtUp { .. })) => break,
                Ok(Some(ev)) => {
                    let pos = match &ev {
                        TailEvent::Base { rdb_end, pos, .. } => {
                            assert!(rdb_end.is_none_or(|e| e <= len), "{ev:?}");
                            pos.offset
                        }
                        TailEvent::Commands { commands, pos, .. } => {
                            assert!(commands.iter().all(|c| !c.is_empty()), "{ev:?}");
                            run.commands += commands.len();
                            pos.offset
                        }
                        TailEvent::Resp {
                            bytes,
                            commands,
                            pos,
                            ..
                        } => {
                            assert!(*commands > 0 && bytes.len() >= 4 * commands, "{ev:?}");
                            run.commands += commands;
                            pos.offset
                        }
                        TailEvent::Rewritten { pos, .. } | TailEvent::CaughtUp { pos } => {
                            pos.offset
                        }
                    };
                    assert!(
                        pos >= last && pos <= len,
                        "position {pos} after {last}, of {len}"
                    );
                    last = pos;
                    run.events += 1;
                }
            }
        },
    }
    let _ = std::fs::remove_file(&path);
    run
}

/// A value as a canonical list of items, for comparing an encoding with a re-encoding: a
/// list in order; set members, zset (member, score bits) and hash (field, value, TTL) sorted
/// (encodings order them differently); a stream's entries, length, last id and groups.
fn canonical(k: &KeyRecord<'_>, ttls: bool) -> Vec<Vec<u8>> {
    use rdbferry::rdb::value::{Tuples, zset_pairs};
    let v = k.value().expect("validated");
    let mut items: Vec<Vec<u8>> = Vec::new();
    match &v {
        Value::Coll(c) => match c.data_type() {
            DataType::List | DataType::Set => {
                for e in c.elements() {
                    items.push(e.expect("validated").to_bytes().into_owned());
                }
            }
            DataType::ZSet => {
                for p in zset_pairs(c.elements()) {
                    let (m, s) = p.expect("validated");
                    let mut item = m.to_bytes().into_owned();
                    item.extend_from_slice(&s.to_bits().to_le_bytes());
                    items.push(item);
                }
            }
            _ if c.has_field_ttls() => {
                for t in Tuples::<'_, 3>(c.elements()) {
                    let [f, v, e] = t.expect("validated");
                    let e = if ttls { e.as_i64().unwrap_or(0) } else { 0 };
                    items
                        .push([&f.to_bytes()[..], b"\0", &v.to_bytes(), &e.to_le_bytes()].concat());
                }
            }
            _ => {
                for t in Tuples::<'_, 2>(c.elements()) {
                    let [f, v] = t.expect("validated");
                    let zero = 0i64.to_le_bytes();
                    items.push([&f.to_bytes()[..], b"\0", &v.to_bytes(), &zero].concat());
                }
            }
        },
        Value::Stream(s) => {
            s.for_each_entry(|e| {
                items.push(format!("{:?}", e).into_bytes());
                Ok(())
            })
            .expect("validated");
            items.push(format!("{} {:?}", s.length, s.last_id).into_bytes());
            for g in &s.groups {
                let pel: Vec<_> = g.pending.iter().map(|p| (p.id, p.delivery_count)).collect();
                let consumers: Vec<_> = g.consumers.iter().map(|c| (&c.name, &c.pending)).collect();
                items.push(
                    format!("{:?} {:?} {pel:?} {consumers:?}", g.name, g.last_id).into_bytes(),
                );
            }
            return items;
        }
        _ => return vec![k.raw.to_vec()],
    }
    if k.data_type() != DataType::List {
        items.sort();
    }
    items
}

/// `rdb_reencode`: every key the reader accepts and `convert --format rdb` would write
/// (valid, not empty, no member twice), re-encoded for every version 6 to 12, decodes again
/// to the same items (a version without hash-field TTLs: the same without them), in a type
/// that version loads. Returns the re-encodings checked.
pub fn rdb_reencode(data: &[u8]) -> usize {
    use rdbferry::job::import::loadable::duplicate_member;
    use rdbferry::rdb::encoder::RdbWriter;
    use rdbferry::rdb::reencode::{Plan, min_version, redis, reencode};
    let Ok(reader) = RdbReader::new(data, "fuzz") else {
        return 0;
    };
    let mut checked = 0;
    for rec in reader {
        let Ok(Record::Key(k)) = rec else {
            if rec.is_err() {
                break;
            }
            continue;
        };
        let Ok(n) = k.validate() else { continue };
        let coll = !matches!(
            k.data_type(),
            DataType::String | DataType::Stream | DataType::Module
        );
        if (coll && n == 0) || duplicate_member(&k, n).is_some() {
            continue;
        }
        for target in 6..=12 {
            let enc = match reencode(&k, redis(target)).expect("a valid value re-encodes") {
                Plan::Copy | Plan::Unloadable(_) => continue,
                Plan::Encoded(e) | Plan::Lossy(e, _) => e,
            };
            assert!(
                min_version(enc.type_id) <= target,
                "type {} for RDB {target}",
                enc.type_id
            );
            let mut w = RdbWriter::new(target);
            w.select_db(0).key(&k.key, None, &enc);
            let file = w.finish();
            let mut back = RdbReader::new(&file, "again").expect("header");
            let Some(Ok(Record::Key(again))) =
                back.find(|r| matches!(r, Ok(Record::Key(_)) | Err(_)))
            else {
                panic!("re-encoded key not read back for RDB {target}");
            };
            again.validate().expect("a re-encoded value validates");
            let ttls = target >= 12;
            assert_eq!(canonical(&k, ttls), canonical(&again, ttls), "RDB {target}");
            checked += 1;
        }
    }
    checked
}
