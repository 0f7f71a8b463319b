//! Redis Cluster against real servers (issue 3): key slots agree with `CLUSTER KEYSLOT`; the
//! import precheck sees the masters and refuses a cluster with an uncovered slot, naming it;
//! `verify` reads each key from its slot's master, finds a changed key, and follows `ASK`
//! and `MOVED` while a slot is being migrated.

mod support;

use rdbferry::cluster::{SlotMap, key_slot, tmp_key_for};
use rdbferry::sink::redis::TargetUrl;
use support::RedisCluster;

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
