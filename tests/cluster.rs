//! Redis Cluster against real servers (issue 3): key slots agree with `CLUSTER KEYSLOT`; the
//! import precheck sees the masters and refuses a cluster with an uncovered slot, naming it;
//! `verify` reads each key from its slot's master, finds a changed key, and follows `ASK`
//! and `MOVED` while a slot is being migrated.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rdbferry::cluster::{SlotMap, key_slot, tmp_key_for};
use rdbferry::sink::redis::TargetUrl;
use support::RedisCluster;

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

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
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
    let seed = TargetUrl::parse(&cluster.seed_url(), None).unwrap();
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
