//! Redis Cluster against real servers (issue 3): key slots agree with `CLUSTER KEYSLOT`; the
//! import precheck sees the masters and refuses a cluster with an uncovered slot, naming it;
//! `verify` reads each key from its slot's master, finds a changed key, and follows `ASK`
//! and `MOVED` while a slot is being migrated.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rdbferry::keyslot::{key_slot, tmp_key_for};
use rdbferry::net::RedisUrl;
use rdbferry::net::cluster::SlotMap;
use support::ferry::output_text as text;
use support::{RedisCluster, RedisServer, Snapshot, TempDir};

fn testdata(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(p)
}

fn rdbferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rdbferry"))
        .args(args)
        .env_remove("RDBFERRY_TO_PASSWORD")
        .output()
        .unwrap()
}

/// `import --precheck --json`: exit code and the rows as (check, status, detail).
fn precheck(input: &Path, url: &str, args: &[&str]) -> (i32, Vec<(String, String, String)>) {
    let input = input.display().to_string();
    let mut all = vec!["import", &input, "--to", url, "--precheck", "--json"];
    all.extend_from_slice(args);
    let o = rdbferry(&all);
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", text(&o)));
    let rows = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let f = |k: &str| c[k].as_str().unwrap().to_string();
            (f("check"), f("status"), f("detail"))
        })
        .collect();
    (o.status.code().unwrap_or(-1), rows)
}

fn find<'r>(rows: &'r [(String, String, String)], check: &str) -> &'r (String, String, String) {
    rows.iter()
        .find(|r| r.0 == check)
        .unwrap_or_else(|| panic!("no {check} row in {rows:?}"))
}

/// A deterministic xorshift, for random keys without a dev-dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A key of 0..24 bytes drawn mostly from `{`, `}` and a few letters, some binary.
    fn key(&mut self) -> Vec<u8> {
        let len = (self.next() % 24) as usize;
        (0..len)
            .map(|_| match self.next() % 10 {
                0 | 1 => b'{',
                2 | 3 => b'}',
                4 => (self.next() % 256) as u8,
                n => b"abcxyz"[(n as usize) % 6],
            })
            .collect()
    }
}

#[test]
fn key_slots_and_tmp_keys_agree_with_cluster_keyslot() {
    let cluster = RedisCluster::start(3);
    let mut c = cluster.conn(0);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut keys: Vec<Vec<u8>> = (0..2000).map(|_| rng.key()).collect();
    keys.extend([
        b"foo".to_vec(),
        b"{user1000}.following".to_vec(),
        b"a}b{c".to_vec(),
    ]);
    let mut pipe = redis::pipe();
    for k in &keys {
        pipe.cmd("CLUSTER").arg("KEYSLOT").arg(k);
        pipe.cmd("CLUSTER").arg("KEYSLOT").arg(tmp_key_for(k));
    }
    let slots: Vec<u16> = pipe.query(&mut c).unwrap();
    let mut braced_without_tag = 0;
    for (k, s) in keys.iter().zip(slots.chunks(2)) {
        assert_eq!(key_slot(k), s[0], "key {:?}", String::from_utf8_lossy(k));
        assert_eq!(s[1], s[0], "tmp key of {:?}", String::from_utf8_lossy(k));
        if tmp_key_for(k).starts_with(b"{rdbferry-tmp-") {
            braced_without_tag += 1;
        }
    }
    // The random keys did exercise the tagless-braces case.
    assert!(braced_without_tag > 100, "{braced_without_tag}");
}

#[test]
fn slot_map_follows_a_moved_slot_and_names_uncovered_ranges() {
    let cluster = RedisCluster::start(3);
    let seed = RedisUrl::parse(&cluster.seed_url(), None).unwrap();
    let map = SlotMap::discover(&seed).unwrap();
    assert_eq!(map.masters().len(), 3);
    assert!(map.uncovered().is_empty());
    for slot in [0u16, 5000, 5461, 10922, 16383] {
        let i = map.owner(slot).unwrap();
        let port = cluster.nodes()[cluster.owner(slot)].port();
        assert_eq!(map.masters()[i].port, port, "slot {slot}");
    }
    // A slot moved with its keys: the refreshed map sees the new owner; the key followed it.
    let slot = key_slot(b"foo");
    let from = cluster.owner(slot);
    let to = (from + 1) % 3;
    cluster.cli_on(from, &["SET", "foo", "bar"]);
    cluster.move_slot(slot, to);
    let map = map.refresh(&seed).unwrap();
    let i = map.owner(slot).unwrap();
    assert_eq!(map.masters()[i].port, cluster.nodes()[to].port());
    assert_eq!(cluster.cli_on(to, &["GET", "foo"]), "bar");
    // Slots dropped by their owner are uncovered in its view.
    let owner = cluster.owner(100);
    cluster.cli_on(owner, &["CLUSTER", "DELSLOTS", "100", "101", "102", "104"]);
    let port = cluster.nodes()[owner].port();
    let map = SlotMap::discover(&seed.with_host_port("127.0.0.1", port)).unwrap();
    assert_eq!(map.uncovered(), [(100, 102), (104, 104)]);
}

#[test]
fn precheck_sees_masters_dbs_emptiness_and_uncovered_slots() {
    let cluster = RedisCluster::start(3);
    let url = cluster.seed_url();
    let dump = testdata("redis-7.0/all-types.rdb");

    // Dbs 1 and 5 have nowhere to go in a Cluster.
    let (code, rows) = precheck(&dump, &url, &[]);
    assert_eq!(code, 1, "{rows:?}");
    let cl = find(&rows, "cluster");
    assert_eq!(cl.1, "ok");
    assert!(cl.2.starts_with("3 masters: 127.0.0.1:"), "{cl:?}");
    assert_eq!(find(&rows, "slots covered").1, "ok");
    let dbs = find(&rows, "dbs");
    assert_eq!(dbs.1, "fail");
    assert!(
        dbs.2.contains("db1, db5") && dbs.2.contains("--db-map 1=0"),
        "{dbs:?}"
    );

    // Mapped to db 0, or filtered out: every row passes.
    let (code, rows) = precheck(&dump, &url, &["--db-map", "1=0", "--db-map", "5=0"]);
    assert_eq!(code, 0, "{rows:?}");
    let (code, rows) = precheck(&dump, &url, &["--db", "0"]);
    assert_eq!(code, 0, "{rows:?}");
    assert_eq!(find(&rows, "empty").1, "ok");
    assert_eq!(find(&rows, "maxmemory").1, "ok");

    // Keys on two masters: counted over all of them.
    let (a, b) = (b"foo", b"bar");
    let (na, nb) = (cluster.owner(key_slot(a)), cluster.owner(key_slot(b)));
    assert_ne!(na, nb);
    cluster.cli_on(na, &["SET", "foo", "1"]);
    cluster.cli_on(nb, &["SET", "bar", "1"]);
    let (code, rows) = precheck(&dump, &url, &["--db", "0"]);
    assert_eq!(code, 1, "{rows:?}");
    let empty = find(&rows, "empty");
    assert_eq!(empty.1, "fail");
    assert!(
        empty.2.starts_with("db0: 2 keys over 2 masters"),
        "{empty:?}"
    );

    // A maxmemory too small for one master's share of the input.
    cluster.cli_on(nb, &["CONFIG", "SET", "maxmemory", "1"]);
    let (_, rows) = precheck(&dump, &url, &["--db", "0", "--on-conflict", "replace"]);
    let mem = find(&rows, "maxmemory");
    assert_eq!(mem.1, "fail", "{mem:?}");
    cluster.cli_on(nb, &["CONFIG", "SET", "maxmemory", "0"]);

    // Slot 5000 (and 5001) dropped on every node: the precheck fails naming them, and an
    // import writes nothing.
    for i in 0..3 {
        cluster.cli_on(i, &["CLUSTER", "DELSLOTS", "5000", "5001"]);
    }
    let (code, rows) = precheck(&dump, &url, &["--db", "0", "--on-conflict", "replace"]);
    assert_eq!(code, 1, "{rows:?}");
    let slots = find(&rows, "slots covered");
    assert_eq!(slots.1, "fail");
    assert!(
        slots.2.contains("2 slots have no master") && slots.2.ends_with(": 5000-5001"),
        "{slots:?}"
    );
    let d = dump.display().to_string();
    let o = rdbferry(&[
        "import",
        &d,
        "--to",
        &url,
        "--db",
        "0",
        "--on-conflict",
        "replace",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("precheck failed; nothing was written"),
        "{}",
        text(&o)
    );
}

/// A standalone server started on a copy of `dump`; the TempDir holds the copy.
fn server_with_dump(dump: &Path) -> (RedisServer, TempDir) {
    let dir = TempDir::new("cluster-src");
    std::fs::copy(dump, dir.path().join("source.rdb")).unwrap();
    let d = dir.path().display().to_string();
    let server = RedisServer::start_with(
        Path::new("redis-server"),
        &["--dir", &d, "--dbfilename", "source.rdb"],
    );
    (server, dir)
}

/// `verify SOURCE --to URL --json --quiet ARGS...`: exit code and the report.
fn verify(source: &Path, url: &str, args: &[&str]) -> (i32, serde_json::Value, Output) {
    let src = source.display().to_string();
    let mut all = vec!["verify", &src, "--to", url, "--json", "--quiet"];
    all.extend_from_slice(args);
    let o = rdbferry(&all);
    let v = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    (o.status.code().unwrap_or(-1), v, o)
}

fn diffs(v: &serde_json::Value) -> Vec<(String, String)> {
    let mut d: Vec<(String, String)> = v["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let f = |k: &str| d[k].as_str().unwrap().to_string();
            (f("key"), f("kind"))
        })
        .collect();
    d.sort();
    d
}

#[test]
fn verify_reads_every_key_from_its_master_and_finds_differences() {
    let dump = testdata("redis-7.0/all-types.rdb");
    let (server, _dir) = server_with_dump(&dump);
    let cluster = RedisCluster::start(3);
    assert_eq!(cluster.copy_from(&server), 50);
    // The copy is faithful, key by key (values, expiry times, stream groups), and spread
    // over every master.
    Snapshot::with_values(&server)
        .only_db(0)
        .assert_same(&Snapshot::of_cluster(&cluster));
    for i in 0..3 {
        assert_ne!(cluster.cli_on(i, &["DBSIZE"]), "0", "node {i}");
    }
    let url = cluster.seed_url();

    let (code, rep, o) = verify(&dump, &url, &["--db", "0"]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(rep["keys_checked"], 50, "{}", text(&o));
    assert_eq!(rep["keys_differing"], 0);

    // Keys of db 1 and 5 have no place in a Cluster: a clear error.
    let o = rdbferry(&[
        "verify",
        &dump.display().to_string(),
        "--to",
        &url,
        "--quiet",
    ]);
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("a Cluster has only db 0") && t.contains("--db-map 1=0"),
        "{t}"
    );

    // A changed value, a deleted key and a moved TTL, on whichever masters own them.
    let owner = |k: &str| cluster.owner(cluster.key_slot(k));
    cluster.cli_on(
        owner("list:quicklist"),
        &["LSET", "list:quicklist", "1500", "changed"],
    );
    cluster.cli_on(owner("zset:small"), &["DEL", "zset:small"]);
    cluster.cli_on(
        owner("ttl:string"),
        &["PEXPIREAT", "ttl:string", "9999999999999"],
    );
    let (code, rep, o) = verify(&dump, &url, &["--db", "0"]);
    assert_eq!(code, 1, "{}", text(&o));
    assert_eq!(
        diffs(&rep),
        [
            ("list:quicklist".to_string(), "value".to_string()),
            ("ttl:string".to_string(), "ttl".to_string()),
            ("zset:small".to_string(), "missing".to_string()),
        ],
        "{}",
        text(&o)
    );
    // A type difference names the type found, looked up on the key's master.
    cluster.cli_on(owner("set:small"), &["DEL", "set:small"]);
    cluster.cli_on(owner("set:small"), &["SET", "set:small", "x"]);
    let (_, rep, o) = verify(&dump, &url, &["--db", "0", "--key", "set:small"]);
    let d = &rep["differences"][0];
    assert_eq!(d["kind"], "type", "{}", text(&o));
    assert!(
        d["detail"].as_str().unwrap().ends_with("found string"),
        "{}",
        text(&o)
    );
}

/// A dump with 2,000 keys over every slot and 300 keys in the slot of `{hot}`, two of them
/// big enough to be compared in chunks (a 2,000-element list, a 600 KB string).
fn hot_slot_dump() -> (PathBuf, RedisServer) {
    let server = RedisServer::start();
    let mut c = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut p = redis::pipe();
    for i in 0..2000 {
        p.cmd("SET").arg(format!("k:{i}")).arg(i).ignore();
    }
    for i in 0..298 {
        p.cmd("HSET")
            .arg(format!("{{hot}}:{i}"))
            .arg("f")
            .arg(i)
            .ignore();
    }
    let items: Vec<String> = (0..2000).map(|i| format!("item-{i}")).collect();
    p.cmd("RPUSH").arg("{hot}:big-list").arg(&items).ignore();
    p.cmd("SET")
        .arg("{hot}:big-string")
        .arg("x".repeat(600_000))
        .ignore();
    p.cmd("PEXPIREAT")
        .arg("{hot}:big-string")
        .arg(9_000_000_000_000i64)
        .ignore();
    let _: () = p.query(&mut c).unwrap();
    (server.save_and_copy_dump(), server)
}

#[test]
fn verify_follows_ask_and_moved_while_a_slot_migrates() {
    let (dump, server) = hot_slot_dump();
    let cluster = RedisCluster::start(3);
    assert_eq!(cluster.copy_from(&server), 2300);
    let url = cluster.seed_url();
    let hot = cluster.key_slot("{hot}");
    let from = cluster.owner(hot);
    let to = (from + 1) % 3;

    // Half-way through a migration: about half the slot's keys, and both big ones, are on
    // the importing node; the others still on the migrating one, which answers ASK for the
    // moved ones.
    cluster.start_migration(hot, from, to);
    assert_eq!(cluster.migrate_keys(hot, from, to, 150), 150);
    cluster.migrate(from, to, &["{hot}:big-list", "{hot}:big-string"]);
    let left: usize = cluster
        .cli_on(from, &["CLUSTER", "COUNTKEYSINSLOT", &hot.to_string()])
        .parse()
        .unwrap();
    assert!((100..200).contains(&left), "{left}");
    let (code, rep, o) = verify(&dump, &url, &[]);
    assert_eq!(code, 0, "{}", text(&o));
    assert_eq!(rep["keys_checked"], 2300, "{}", text(&o));
    let asked = rep["redirects"].as_u64().unwrap();
    // One ASK per key no longer on the migrating node.
    assert_eq!(asked as usize, 300 - left, "{}", text(&o));

    // A difference on the importing node is still found through ASK, big values included.
    let moved_key = {
        let mut c = cluster.conn(to);
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(hot)
            .arg(10)
            .query(&mut c)
            .unwrap();
        keys.into_iter().find(|k| !k.contains("big")).unwrap()
    };
    cluster.cli_on(to, &["ASKING"]);
    let mut c = cluster.conn(to);
    let _: () = redis::pipe()
        .cmd("ASKING")
        .cmd("HSET")
        .arg(&moved_key)
        .arg("f")
        .arg("changed")
        .cmd("ASKING")
        .cmd("LSET")
        .arg("{hot}:big-list")
        .arg(1999)
        .arg("changed")
        .query(&mut c)
        .unwrap();
    let (code, rep, o) = verify(&dump, &url, &[]);
    assert_eq!(code, 1, "{}", text(&o));
    let mut want = vec![
        (moved_key.clone(), "value".to_string()),
        ("{hot}:big-list".to_string(), "value".to_string()),
    ];
    want.sort();
    assert_eq!(diffs(&rep), want, "{}", text(&o));
    let _: () = redis::pipe()
        .cmd("ASKING")
        .cmd("HSET")
        .arg(&moved_key)
        .arg("f")
        .arg(moved_key.trim_start_matches("{hot}:"))
        .cmd("ASKING")
        .cmd("LSET")
        .arg("{hot}:big-list")
        .arg(1999)
        .arg("item-1999")
        .query(&mut c)
        .unwrap();

    // The slot moves on, from node to node, while verify runs: its map goes stale (MOVED)
    // and keys are caught mid-migration (ASK). Every run finds the data identical.
    while cluster.migrate_keys(hot, from, to, 100) > 0 {}
    cluster.finish_migration(hot, from, to);
    let stop = AtomicBool::new(false);
    let moves = AtomicUsize::new(0);
    let mut redirects = 0;
    std::thread::scope(|sc| {
        // Stops the mover even when an assertion below fails (the scope waits for it).
        let _stop = StopOnDrop(&stop);
        sc.spawn(|| {
            let mut at = to;
            while !stop.load(Ordering::Relaxed) {
                let next = (at + 1) % 3;
                cluster.start_migration(hot, at, next);
                while cluster.migrate_keys(hot, at, next, 10) > 0 {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                cluster.finish_migration(hot, at, next);
                at = next;
                moves.fetch_add(1, Ordering::Relaxed);
            }
        });
        // At least 4 runs, and as many more as it takes for the slot to move twice while
        // they run (how fast each side goes depends on the machine).
        let mut runs = 0;
        while runs < 4 || moves.load(Ordering::Relaxed) < 2 {
            let (code, rep, o) = verify(&dump, &url, &[]);
            assert_eq!(code, 0, "{}", text(&o));
            assert_eq!(rep["keys_checked"], 2300, "{}", text(&o));
            redirects += rep["redirects"].as_u64().unwrap();
            runs += 1;
            assert!(runs < 500, "the slot did not move twice in {runs} runs");
        }
    });
    assert!(redirects > 0, "no run met a redirection");
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
