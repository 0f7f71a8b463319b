//! Reads the AOF files that real Redis servers wrote (`$RDBFERRY_CORPUS/generated/`, described
//! in the corpus `MANIFEST.md`). With `RDBFERRY_CORPUS` unset the tests print a note and pass;
//! with it set, a missing file fails them.

use std::path::{Path, PathBuf};

use super::*;

fn corpus() -> Option<PathBuf> {
    match std::env::var_os("RDBFERRY_CORPUS") {
        Some(dir) => Some(PathBuf::from(dir).join("generated")),
        None => {
            eprintln!("note: RDBFERRY_CORPUS is not set; skipping the AOF corpus test");
            None
        }
    }
}

fn load(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| {
        panic!(
            "RDBFERRY_CORPUS is set but {} is unreadable: {e}",
            path.display()
        )
    })
}

fn read_all<'a>(data: &'a [u8], start: u64, name: &str, last: bool) -> Vec<AofCommand<'a>> {
    let mut reader = AofReader::new(data, start, 0, name).last_file(last);
    let cmds: Vec<_> = reader
        .by_ref()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reader.truncated_at(), None, "{name}");
    assert_eq!(reader.offset(), data.len() as u64, "{name}");
    cmds
}

/// The 14 commands written after the rewrite (the same in every AOF of the corpus), as
/// (db, args).
const TAIL: &[(u64, &[&[u8]])] = &[
    (0, &[b"SELECT", b"0"]),
    (0, &[b"SET", b"after:str", b"written after rewrite"]),
    (0, &[b"INCR", b"str:int"]),
    (0, &[b"DEL", b"str:embstr"]),
    (0, &[b"RPUSH", b"list:small", b"tail"]),
    (0, &[b"HSET", b"hash:small", b"f9", b"v9"]),
    (0, &[b"ZADD", b"zset:small", b"7", b"seven"]),
    (0, &[b"SREM", b"set:small", b"apple"]),
    (
        0,
        &[
            b"XADD",
            b"stream:s1",
            b"1700000000002-0",
            b"after",
            b"rewrite",
        ],
    ),
    (0, &[b"SET", b"after:ttl", b"x"]),
    (0, &[b"PEXPIREAT", b"after:ttl", b"4102444800000"]),
    (0, &[b"SET", b"after:\x00bin", b"\xff\x00"]),
    (5, &[b"SELECT", b"5"]),
    (5, &[b"SET", b"db5:after", b"yes"]),
];

fn assert_tail(cmds: &[AofCommand<'_>]) {
    assert_eq!(cmds.len(), TAIL.len());
    for (cmd, (db, args)) in cmds.iter().zip(TAIL) {
        assert_eq!(
            (cmd.db, &cmd.args[..]),
            (*db, *args),
            "at offset {}",
            cmd.offset
        );
    }
}

fn selects(cmds: &[AofCommand<'_>]) -> Vec<u64> {
    cmds.iter()
        .filter(|c| c.is("select"))
        .map(|c| c.db)
        .collect()
}

#[test]
fn redis_6_2_plain_aof() {
    let Some(root) = corpus() else { return };
    let data = load(&root.join("redis-6.2/appendonly-resp.aof"));
    assert!(looks_like_aof(&data) && !is_rdb(&data));
    let cmds = read_all(&data, 0, "appendonly-resp.aof", true);
    assert_eq!(cmds.len(), 174);
    assert_eq!(selects(&cmds), [0, 1, 5, 0, 5]);
    assert_eq!(cmds[0].offset, 0);
    // The rewritten part (160 commands) ends in db 5; the 14 appended commands follow.
    assert_eq!(cmds[159].db, 5);
    assert_tail(&cmds[160..]);
}

#[test]
fn redis_6_2_rdb_preamble() {
    let Some(root) = corpus() else { return };
    let data = load(&root.join("redis-6.2/appendonly-rdb-preamble.aof"));
    assert!(is_rdb(&data) && !looks_like_aof(&data));
    // The 145725-byte preamble is the RDB (ending in 0xFF + CRC-64); RESP follows.
    assert_eq!(data.get(145725 - 9), Some(&0xff));
    let cmds = read_all(&data, 145725, "appendonly-rdb-preamble.aof", true);
    assert_eq!(cmds[0].offset, 145725);
    assert_tail(&cmds);
}

#[test]
fn redis_7_0_multi_part_resp() {
    let Some(root) = corpus() else { return };
    let dir = root.join("redis-7.0/appendonlydir-resp");
    let (manifest, path) = Manifest::load(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(path, dir.join("appendonly.aof.manifest"));
    let files = manifest.replay_files();
    let names: Vec<_> = files
        .iter()
        .map(|e| (e.name_lossy().into_owned(), e.seq, e.kind))
        .collect();
    assert_eq!(
        names,
        [
            (
                "appendonly.aof.2.base.aof".to_string(),
                2,
                AofFileKind::Base
            ),
            (
                "appendonly.aof.2.incr.aof".to_string(),
                2,
                AofFileKind::Incremental
            ),
        ]
    );
    let base = load(&files[0].path(&dir));
    assert!(looks_like_aof(&base));
    let cmds = read_all(&base, 0, "appendonly.aof.2.base.aof", false);
    assert_eq!(cmds.len(), 161);
    assert!(cmds[0].is("function") && cmds[0].args.get(1) == Some(&&b"LOAD"[..]));
    assert_eq!(selects(&cmds), [0, 1, 5]);
    assert_eq!(
        cmds.last().map(|c| (c.db, c.name())),
        Some((5, &b"HMSET"[..]))
    );
    let incr = load(&files[1].path(&dir));
    assert_tail(&read_all(&incr, 0, "appendonly.aof.2.incr.aof", true));
}

#[test]
fn redis_7_0_multi_part_rdb_base() {
    let Some(root) = corpus() else { return };
    let dir = root.join("redis-7.0/appendonlydir-rdb-preamble");
    let (manifest, _) = Manifest::load(&dir).unwrap_or_else(|e| panic!("{e}"));
    let files = manifest.replay_files();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0].name_lossy(), "appendonly.aof.2.base.rdb");
    assert!(is_rdb(&load(&files[0].path(&dir))));
    let incr = load(&files[1].path(&dir));
    assert_tail(&read_all(&incr, 0, "appendonly.aof.2.incr.aof", true));
}
