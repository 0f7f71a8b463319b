//! Issue 8: the full sync's checks (`job::import::loadable`) on sets, zsets and hashes of every
//! size from 1 to 2,100 and around each power of two up to 2^17, in every encoding the
//! installed servers write (7.0: intset, listpack, hashtable, skiplist; 6.2 and 6.0: intset,
//! ziplist, hashtable, skiplist) and in those only our encoder still makes (zipmap, ziplist
//! and intset in RDB 3 and 9, zsets with text scores).
//!
//! Each server writes one dump, filled server-side by a Lua script (each key a copy of the
//! one a size below, by `DUMP`/`RESTORE`, plus the members in between), and `import --via
//! full-sync` loads it into an empty Redis 7.0, with a hang guard; rdbferry refuses the sync
//! if its checks refuse any key, so a success means they passed every one. The target must
//! then hold the source's keys with the same types and sizes, and the same values where they
//! are compared (see [`compared`]). The checks are also called on their own on every key of
//! the Redis 6 dumps and of the encoder's files.
//!
//! What it costs decides the sizes: 7.0 holds all of them (about 12 million members; the
//! checks walk them in a debug build). The Redis 6 dumps stop at 1,025 members: only up to 512
//! do their encodings differ from 7.0's (ziplist up to 128 entries, intset up to 512), larger
//! values are saved in the same RDB types (set, hash, zset 2) as 7.0's, which are covered
//! there. The encoder's files stop at 2^16 + 1, past the ziplist's 16-bit entry count.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rdbferry::job::import::loadable::{Seen, check_value, duplicate_member};
use rdbferry::rdb::encoder::{RdbWriter, value};
use rdbferry::rdb::types::type_id;
use rdbferry::rdb::{RdbReader, Record};
use support::{RedisServer, Running, TempDir, require_old_server};

/// 1 to `dense`, then 2^k - 1, 2^k and 2^k + 1 for k up to `max_k` (those above `dense`).
fn sizes(dense: u64, max_k: u32) -> Vec<u64> {
    let mut s: Vec<u64> = (1..=dense).collect();
    for k in 1..=max_k {
        s.extend(
            [(1 << k) - 1, 1 << k, (1 << k) + 1]
                .into_iter()
                .filter(|&n| n > dense),
        );
    }
    s
}

/// Sizes whose values are compared member for member (`DEBUG DIGEST-VALUE`): the smallest,
/// and those next to an encoding limit or a power of two. The others are compared by type
/// and size: the full sync hands the target the source's own bytes, which its loader either
/// takes whole or refuses.
fn compared(n: u64) -> bool {
    n <= 16
        || [128, 254, 512, 1024, 2048, 2100, 4096, 65536]
            .iter()
            .any(|&b: &u64| n.abs_diff(b) <= 1)
}

/// Fills `ints:N` (a set of integers), `strs:N` (a set of strings), `zset:N` and `hash:N` for
/// every N in ARGV (ascending). Runs on 6.0 too (no `COPY` there).
const POPULATE: &str = r"
local cmd = {ints = 'SADD', strs = 'SADD', zset = 'ZADD', hash = 'HSET'}
local function add(t, key, from, to)
  for i = from, to, 1000 do
    local args = {}
    for x = i, math.min(to, i + 999) do
      if t == 'ints' then args[#args + 1] = x
      elseif t == 'strs' then args[#args + 1] = 'm' .. x
      elseif t == 'zset' then args[#args + 1] = x / 4; args[#args + 1] = 'z' .. x
      else args[#args + 1] = 'f' .. x; args[#args + 1] = x end
    end
    redis.call(cmd[t], key, unpack(args))
  end
end
for t, _ in pairs(cmd) do
  local prev = 0
  for _, a in ipairs(ARGV) do
    local n = tonumber(a)
    local key = t .. ':' .. n
    if prev > 0 then
      redis.call('RESTORE', key, 0, redis.call('DUMP', t .. ':' .. prev))
    end
    add(t, key, prev + 1, n)
    prev = n
  end
end
return redis.call('DBSIZE')
";

/// The checks on their own, on every key of `rdb`: each passes `check_value` for a target
/// of RDB `target_rdb`, has no member twice, and `Seen` never sees a key again. Returns the
/// keys checked and the value type ids met.
fn checks_pass(rdb: &[u8], name: &str, target_rdb: u32) -> (u64, BTreeSet<u8>) {
    let reader = RdbReader::new(rdb, name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let seen = Seen::new(10_000);
    let (mut keys, mut types) = (0, BTreeSet::new());
    for rec in reader {
        let rec = rec.unwrap_or_else(|e| panic!("{name}: {e}"));
        let Record::Key(k) = rec else { continue };
        let at = format!("{name}: key {:?}", String::from_utf8_lossy(&k.key));
        check_value(&k, target_rdb).unwrap_or_else(|e| panic!("{at}: {e}"));
        let n = k.validate().unwrap_or_else(|e| panic!("{at}: {e:?}"));
        assert_eq!(duplicate_member(&k, n), None, "{at}");
        let h = rdbferry::hash::hash64(&[&k.db.to_le_bytes()[..], &k.key].concat());
        assert_eq!(seen.insert(h), Some(false), "{at}");
        keys += 1;
        types.insert(k.type_id);
    }
    (keys, types)
}

/// The value type ids in `rdb`, without the checks.
fn types_in(rdb: &[u8]) -> BTreeSet<u8> {
    RdbReader::new(rdb, "dump")
        .unwrap()
        .filter_map(|r| match r {
            Ok(Record::Key(k)) => Some(k.type_id),
            _ => None,
        })
        .collect()
}

/// `import FILE --to T --via full-sync --json -q`, killed (and the test failed) if it has not
/// ended after a generous bound: a hang is a failure, not a stuck run.
fn full_sync(file: &Path, t: &RedisServer) {
    let child = Command::new(env!("CARGO_BIN_EXE_rdbferry"))
        .args(["import", file.to_str().unwrap(), "--to", &t.url()])
        .args(["--via", "full-sync", "--json", "-q"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let what = format!("import of {}", file.display());
    let o = Running(Some(child)).finish_within(Duration::from_secs(600), &what);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(0), "{}: {out}{err}", file.display());
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["via"], "full-sync", "{r}");
    assert_eq!(r["synced"], r["keys_read"], "{r}");
}

/// Every key of db 0: its type, size, whether it has a TTL, and for the [`compared`] sizes
/// `DEBUG DIGEST-VALUE`.
fn content(s: &RedisServer) -> BTreeMap<String, (String, i64, i64, Option<String>)> {
    let mut c = redis::Client::open(s.url())
        .and_then(|c| c.get_connection())
        .unwrap();
    let keys: Vec<String> = support::scan_keys(&mut c)
        .into_iter()
        .map(|k| String::from_utf8(k).unwrap())
        .collect();
    let mut out = BTreeMap::new();
    for batch in keys.chunks(500) {
        let mut p = redis::pipe();
        for k in batch {
            p.cmd("TYPE").arg(k).cmd("PTTL").arg(k);
        }
        let replies: Vec<(String, i64)> = p.query(&mut c).unwrap();
        let mut p = redis::pipe();
        for (k, (ty, _)) in batch.iter().zip(&replies) {
            let card = match ty.as_str() {
                "set" => "SCARD",
                "zset" => "ZCARD",
                "hash" => "HLEN",
                other => panic!("{k}: type {other}"),
            };
            p.cmd(card).arg(k);
        }
        let cards: Vec<i64> = p.query(&mut c).unwrap();
        for ((k, (ty, pttl)), n) in batch.iter().zip(replies).zip(cards) {
            let size: u64 = k.rsplit(':').next().unwrap().parse().unwrap();
            let digest = compared(size).then(|| {
                let d: Vec<String> = redis::cmd("DEBUG")
                    .arg("DIGEST-VALUE")
                    .arg(k)
                    .query(&mut c)
                    .unwrap();
                d.concat()
            });
            out.insert(k.clone(), (ty, n, pttl, digest));
        }
    }
    out
}

/// `got` holds `want`'s keys, each with the same type, size, no TTL, and value where compared.
fn assert_same_content(got: &RedisServer, want: &RedisServer, keys: usize) {
    let (a, b) = (content(want), content(got));
    assert_eq!(a.len(), keys, "keys of the source");
    let diff: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: {:?}, expected {v:?}", b.get(k)))
        .chain(
            b.keys()
                .filter(|k| !a.contains_key(*k))
                .map(|k| format!("{k}: not expected")),
        )
        .take(20)
        .collect();
    assert!(diff.is_empty(), "the target differs:\n{}", diff.join("\n"));
    assert!(a.values().all(|v| v.2 == -1), "a TTL in the source");
}

/// One server's dump of every size in `sizes`: a full sync into an empty 7.0 gives what the
/// server holds; with `own_checks`, the checks on their own pass each key.
fn server_sizes(binary: &Path, sizes: &[u64], want_types: &[u8], own_checks: bool) {
    let src = RedisServer::start_with(binary, &[]);
    let args: Vec<String> = sizes.iter().map(u64::to_string).collect();
    let mut eval = vec!["EVAL", POPULATE, "0"];
    eval.extend(args.iter().map(String::as_str));
    let keys = 4 * sizes.len();
    assert_eq!(src.cli(&eval), keys.to_string());
    let dump = src.save_and_copy_dump();
    let rdb = std::fs::read(&dump).unwrap();
    let name = format!("redis {} dump", src.version());
    let types = if own_checks {
        let (n, types) = checks_pass(&rdb, &name, 10);
        assert_eq!(n, keys as u64, "{name}");
        types
    } else {
        types_in(&rdb)
    };
    let want: BTreeSet<u8> = want_types.iter().copied().collect();
    assert_eq!(types, want, "{name}: value types");
    let t = RedisServer::start();
    full_sync(&dump, &t);
    assert_same_content(&t, &src, keys);
    let _ = std::fs::remove_file(dump);
}

#[test]
fn issue8_every_size_of_redis_7_0_loads_by_full_sync() {
    use type_id::*;
    // The checks run on every key in the import itself (a refusal fails it); a second walk
    // of 12 million members here would double the cost.
    server_sizes(
        Path::new("redis-server"),
        &sizes(2100, 17),
        &[SET, SET_INTSET, ZSET_2, ZSET_LISTPACK, HASH, HASH_LISTPACK],
        false,
    );
}

#[test]
fn issue8_every_size_of_redis_6_2_and_6_0_loads_by_full_sync() {
    use type_id::*;
    for version in ["6.2", "6.0"] {
        let Some(bin) = require_old_server(version) else {
            return;
        };
        server_sizes(
            &bin,
            &sizes(600, 10),
            &[SET, SET_INTSET, ZSET_2, ZSET_ZIPLIST, HASH, HASH_ZIPLIST],
            true,
        );
    }
}

/// Files in the encodings no installed server writes any more, at every size up to 300 and
/// around the powers of two up to 2^12, and for ziplists up to 2^16 (past their 16-bit
/// entry count): the checks pass each key on their own, Redis 7.0 loads the file, and a full
/// sync of it gives what that server loaded.
#[test]
fn issue8_every_size_in_legacy_encodings() {
    let (sizes, ziplist_sizes) = (sizes(300, 12), sizes(300, 16));
    let tmp = TempDir::new("sizes");
    let members: Vec<Vec<u8>> = (1..=(1 << 16) + 1)
        .map(|i| format!("m{i}").into_bytes())
        .collect();
    // Zipmap hashes exist in RDB 2-3 only, ziplist hashes from RDB 4.
    for version in [3u32, 9] {
        let mut w = RdbWriter::new(version);
        w.select_db(0);
        let mut keys = 0;
        for &n in &ziplist_sizes {
            let m: Vec<&[u8]> = members[..n as usize].iter().map(|v| v.as_slice()).collect();
            let ints: Vec<i64> = (1..=n as i64).map(|i| i * 3 - 7).collect();
            let pairs: Vec<(&[u8], &[u8])> = m.iter().map(|x| (*x, *x)).collect();
            let scored: Vec<(&[u8], f64)> = m
                .iter()
                .enumerate()
                .map(|(i, x)| (*x, i as f64 / 4.0))
                .collect();
            let key = |t: &str| format!("{t}:{n}").into_bytes();
            w.key(&key("zset-ziplist"), None, &value::zset_ziplist(&scored));
            keys += 1;
            if version == 9 {
                w.key(&key("hash-ziplist"), None, &value::hash_ziplist(&pairs));
                keys += 1;
            }
            if !sizes.contains(&n) {
                continue;
            }
            w.key(&key("intset"), None, &value::set_intset(&ints));
            w.key(&key("zset-text"), None, &value::zset(false, &scored));
            keys += 2;
            if version == 3 {
                w.key(&key("zipmap"), None, &value::hash_zipmap(&pairs));
                keys += 1;
            }
        }
        let rdb = w.finish();
        let name = format!("legacy RDB v{version}");
        let (n, _) = checks_pass(&rdb, &name, 10);
        assert_eq!(n, keys as u64, "{name}");
        let file = format!("legacy-v{version}.rdb");
        let path = tmp.path().join(&file);
        std::fs::write(&path, &rdb).unwrap();
        let dir = tmp.path().to_str().unwrap();
        let loaded = RedisServer::start_with(
            Path::new("redis-server"),
            &["--dir", dir, "--dbfilename", &file],
        );
        let t = RedisServer::start();
        full_sync(&path, &t);
        assert_same_content(&t, &loaded, keys);
    }
}
