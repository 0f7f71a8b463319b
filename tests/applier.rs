//! The applier of incremental sync (`sink::applier`) against real servers: exactly once, a
//! counter ends exactly right through dropped connections and a restart that resumes from the
//! target's checkpoint, on a standalone target and on a 3-master Cluster; at least once,
//! nothing is lost (and what a resend may double is shown).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdbferry::cancel::Cancel;
use rdbferry::net::RedisUrl;
use rdbferry::sink::applier::{Applier, ApplyOptions, Entry, Resp};
use support::writes::StopOnDrop;
use support::{RedisCluster, RedisServer};

fn incr(order: u64, key: &str) -> Entry {
    Entry {
        db: 0,
        commands: vec![vec![b"INCR".to_vec(), key.as_bytes().to_vec()]],
        resp: None,
        order,
        pos: format!("pos-{order}").into_bytes(),
    }
}

fn exactly_once() -> ApplyOptions {
    ApplyOptions {
        checkpoint_key: Some(b"rdbferry:checkpoint".to_vec()),
        batch_commands: 50,
        retry_for: Duration::from_secs(30),
        ..ApplyOptions::default()
    }
}

/// Kill the applier's connections from the server side every few milliseconds, until
/// stopped (as a target that drops clients would).
fn killer<'s>(
    sc: &'s std::thread::Scope<'s, '_>,
    ports: Vec<u16>,
    stop: &'s AtomicBool,
) -> std::thread::ScopedJoinHandle<'s, u32> {
    sc.spawn(move || {
        // Stops even when the test thread panics (the scope waits for this thread).
        let mut kills = 0;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(7));
            for p in &ports {
                let c = redis::Client::open(format!("redis://127.0.0.1:{p}")).unwrap();
                if let Ok(mut c) = c.get_connection() {
                    let n: redis::RedisResult<i64> = redis::cmd("CLIENT")
                        .arg("KILL")
                        .arg("TYPE")
                        .arg("normal")
                        .arg("SKIPME")
                        .arg("yes")
                        .query(&mut c);
                    kills += n.unwrap_or(0) as u32;
                }
            }
        }
        kills
    })
}

#[test]
fn exactly_once_counts_exactly_through_dropped_connections_and_a_restart() {
    let s = RedisServer::start();
    let url = RedisUrl::parse(&s.url(), None).unwrap();
    let stop = AtomicBool::new(false);
    let n = 3000u64;
    let kills = std::thread::scope(|sc| {
        let _guard = StopOnDrop(&stop);
        let k = killer(sc, vec![s.port()], &stop);
        let mut a = Applier::open(&url, exactly_once(), Cancel::new()).unwrap();
        assert_eq!(a.resume().unwrap(), None);
        // A crash halfway: the applier is dropped with batches pending and in flight.
        for i in 1..=n / 2 {
            a.push(incr(i, "counter")).unwrap();
        }
        drop(a);
        // The restart resumes from the target's checkpoint, and the source is read again
        // from somewhat before it.
        let mut a = Applier::open(&url, exactly_once(), Cancel::new()).unwrap();
        let cp = a.resume().unwrap().map(|c| c.order).unwrap_or(0);
        assert!(cp <= n / 2);
        for i in cp.saturating_sub(100).max(1)..=n {
            a.push(incr(i, "counter")).unwrap();
        }
        a.flush().unwrap();
        assert_eq!(a.acked().unwrap().order, n);
        stop.store(true, Ordering::Relaxed);
        k.join().unwrap()
    });
    assert!(kills > 0, "no connection was dropped");
    assert_eq!(s.cli(&["GET", "counter"]), n.to_string());
    assert_eq!(
        s.cli(&["GET", "rdbferry:checkpoint"]),
        format!("{n} pos-{n}")
    );
}

/// Entries holding runs of commands in RESP (as `follow` forwards an AOF): each run is
/// applied whole or not at all, through dropped connections and a restart.
#[test]
fn exactly_once_applies_runs_of_resp_whole() {
    let s = RedisServer::start();
    let url = RedisUrl::parse(&s.url(), None).unwrap();
    let stop = AtomicBool::new(false);
    let (runs, per_run) = (600u64, 10u64);
    let run = |i: u64| {
        let mut bytes = Vec::new();
        for _ in 0..per_run {
            rdbferry::resp::write_command(&mut bytes, &[b"INCR", b"counter"]);
        }
        rdbferry::resp::write_command(&mut bytes, &[b"SET", b"run", i.to_string().as_bytes()]);
        Entry {
            db: 0,
            commands: Vec::new(),
            resp: Some(Resp {
                bytes,
                commands: per_run as usize + 1,
            }),
            order: i * (per_run + 1),
            pos: format!("pos-{i}").into_bytes(),
        }
    };
    std::thread::scope(|sc| {
        let _guard = StopOnDrop(&stop);
        let k = killer(sc, vec![s.port()], &stop);
        let mut a = Applier::open(&url, exactly_once(), Cancel::new()).unwrap();
        for i in 1..=runs / 2 {
            a.push(run(i)).unwrap();
        }
        drop(a);
        let mut a = Applier::open(&url, exactly_once(), Cancel::new()).unwrap();
        let cp = a.resume().unwrap().map_or(0, |c| c.order);
        assert_eq!(cp % (per_run + 1), 0, "a checkpoint inside a run: {cp}");
        for i in cp / (per_run + 1) + 1..=runs {
            a.push(run(i)).unwrap();
        }
        a.flush().unwrap();
        assert_eq!(a.stats().applied % (per_run + 1), 0);
        stop.store(true, Ordering::Relaxed);
        k.join().unwrap();
    });
    assert_eq!(s.cli(&["GET", "counter"]), (runs * per_run).to_string());
    assert_eq!(s.cli(&["GET", "run"]), runs.to_string());
}

#[test]
fn exactly_once_on_a_cluster_keeps_a_checkpoint_per_slot() {
    let cluster = RedisCluster::start(3);
    let url = RedisUrl::parse(&cluster.seed_url(), None).unwrap();
    let keys: Vec<String> = (0..20).map(|i| format!("counter:{i}")).collect();
    let n = 2000u64;
    let stop = AtomicBool::new(false);
    let ports: Vec<u16> = cluster.nodes().iter().map(|s| s.port()).collect();
    std::thread::scope(|sc| {
        let _guard = StopOnDrop(&stop);
        let k = killer(sc, ports, &stop);
        let mut a = Applier::open(&url, exactly_once(), Cancel::new()).unwrap();
        assert!(a.is_cluster());
        for i in 1..=n / 2 {
            a.push(incr(i, &keys[i as usize % keys.len()])).unwrap();
        }
        drop(a);
        let mut a = Applier::open(&url, exactly_once(), Cancel::new()).unwrap();
        a.resume().unwrap();
        // Read again from the start: every slot skips what it holds.
        for i in 1..=n {
            a.push(incr(i, &keys[i as usize % keys.len()])).unwrap();
        }
        a.flush().unwrap();
        stop.store(true, Ordering::Relaxed);
        k.join().unwrap();
    });
    let mut c = cluster.conn(0);
    for (j, key) in keys.iter().enumerate() {
        let want = (1..=n).filter(|i| *i as usize % keys.len() == j).count() as i64;
        let got: i64 = redis::cmd("GET")
            .arg(key)
            .query::<Option<i64>>(&mut c)
            .ok()
            .flatten()
            .unwrap_or_else(|| {
                let node = cluster.owner(cluster.key_slot(key));
                let mut c = cluster.conn(node);
                redis::cmd("GET").arg(key).query(&mut c).unwrap()
            });
        assert_eq!(got, want, "{key}");
    }
}

#[test]
fn at_least_once_loses_nothing() {
    let s = RedisServer::start();
    let url = RedisUrl::parse(&s.url(), None).unwrap();
    let stop = AtomicBool::new(false);
    let n = 3000u64;
    std::thread::scope(|sc| {
        let _guard = StopOnDrop(&stop);
        let k = killer(sc, vec![s.port()], &stop);
        let opts = ApplyOptions {
            batch_commands: 50,
            retry_for: Duration::from_secs(30),
            ..ApplyOptions::default()
        };
        let mut a = Applier::open(&url, opts, Cancel::new()).unwrap();
        for i in 1..=n {
            a.push(incr(2 * i - 1, "counter")).unwrap();
            // Also a key whose value tells which entries ran (SET is idempotent).
            a.push(Entry {
                db: 0,
                commands: vec![vec![
                    b"SET".to_vec(),
                    format!("k:{i}").into_bytes(),
                    b"1".to_vec(),
                ]],
                resp: None,
                order: 2 * i,
                pos: Vec::new(),
            })
            .unwrap();
        }
        a.flush().unwrap();
        stop.store(true, Ordering::Relaxed);
        k.join().unwrap();
    });
    // Nothing lost; the counter may count a resent batch twice (that is at least once).
    let c: u64 = s.cli(&["GET", "counter"]).parse().unwrap();
    assert!(c >= n, "{c}");
    assert_eq!(s.cli(&["DBSIZE"]), (n + 1).to_string());
    eprintln!("at least once: counter {c} for {n} increments");
}
