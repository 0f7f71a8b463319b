//! Writes the tests of incremental sync (`follow`, `sync --follow`) make on a source while
//! rdbferry runs: a round of every kind of write, and counters incremented one at a time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::RedisServer;
use super::ferry::conn;

/// Sets the flag when dropped: a writer thread told to stop by it stops even when the test
/// fails (a scope waits for its threads: without this, a failed assertion is a hang).
pub struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Every kind of write follow and sync must carry: strings, counters, lists, hashes, streams with
/// a consumer group, expiries, deletes, a MULTI block, a Lua script, a
/// second db. `i` makes values unique.
pub fn write_round(c: &mut redis::Connection, i: u64) {
    let q = |c: &mut redis::Connection, args: &[&str]| {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        let _: redis::Value = cmd.query(c).unwrap();
    };
    let n = i.to_string();
    q(c, &["SET", &format!("s:{}", i % 50), &n]);
    q(c, &["INCR", "counter"]);
    q(c, &["RPUSH", "list", &n]);
    q(c, &["HSET", "hash", &format!("f{}", i % 20), &n]);
    q(c, &["XADD", "stream", "*", "f", &n]);
    if i == 1 {
        q(c, &["XGROUP", "CREATE", "stream", "g", "0"]);
    }
    if i % 7 == 0 {
        q(
            c,
            &[
                "XREADGROUP",
                "GROUP",
                "g",
                "c1",
                "COUNT",
                "2",
                "STREAMS",
                "stream",
                ">",
            ],
        );
        q(c, &["EXPIRE", &format!("s:{}", i % 50), "100000"]);
    }
    if i % 11 == 0 {
        q(c, &["DEL", &format!("s:{}", (i + 3) % 50)]);
    }
    if i % 5 == 0 {
        redis::pipe()
            .atomic()
            .cmd("INCRBY")
            .arg("counter:tx")
            .arg(2)
            .cmd("LPUSH")
            .arg("list:tx")
            .arg(&n)
            .query::<redis::Value>(c)
            .unwrap();
        q(
            c,
            &[
                "EVAL",
                "redis.call('INCR', KEYS[1]) return 1",
                "1",
                "counter:lua",
            ],
        );
        q(c, &["SELECT", "1"]);
        q(c, &["SET", "other-db", &n]);
        q(c, &["SELECT", "0"]);
    }
}

/// A writer that INCRs `keys` counters, one at a time, until stopped; returns how many times
/// each was incremented.
pub fn counting_writer<'s>(
    sc: &'s std::thread::Scope<'s, '_>,
    src: &'s RedisServer,
    keys: &'s [String],
    stop: &'s AtomicBool,
    done: &'s AtomicU64,
) -> std::thread::ScopedJoinHandle<'s, ()> {
    sc.spawn(move || {
        let mut c = conn(src);
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let _: i64 = redis::cmd("INCR")
                .arg(&keys[i % keys.len()])
                .query(&mut c)
                .unwrap();
            i += 1;
            done.store(i as u64, Ordering::Relaxed);
        }
    })
}
