//! `split --by-slots cluster=URL` (issue 12): the ranges come from a live 3-master Cluster
//! the test starts, one file per master; each node loads its file at start-up (stopped, the
//! file put as its `dump.rdb`, started again) and the Cluster then holds what a direct
//! `import` of the same dump into another Cluster holds: key by key (`support::Snapshot`:
//! type, value digest, expiry, stream groups), `DEBUG DIGEST` node by node (both Clusters
//! give the same slots to the same node), and the function libraries on every master. Split
//! for a 6.2 Cluster, the files are written for the RDB version 6.2 loads; for a Valkey 9
//! Cluster, for Valkey 9 (`VALKEY080`).

mod support;

use std::path::PathBuf;

use support::ferry::{output_text, path_str, rdbferry};
use support::{RedisCluster, RedisServer, Snapshot, TempDir, testdata};

/// The testdata dumps hold keys in dbs 0, 1 and 5 (with distinct names): a Cluster has
/// db 0 only.
const DB_MAP: [&str; 4] = ["--db-map", "1=0", "--db-map", "5=0"];

/// `split INPUT --by-slots cluster=SEED -o DIR --db-map ...`: the files, in node order of
/// `cluster`, after checking that the output names each one's node and id.
fn split_for(
    cluster: &RedisCluster,
    input: &str,
    dir: &std::path::Path,
    extra: &[&str],
) -> Vec<PathBuf> {
    let spec = format!("cluster={}", cluster.seed_url());
    let mut args = vec!["split", input, "--by-slots", &spec, "-o", path_str(dir)];
    args.extend_from_slice(&DB_MAP);
    args.extend_from_slice(extra);
    let o = rdbferry(&args);
    let text = output_text(&o);
    assert!(o.status.success(), "{text}");
    let mut files = Vec::new();
    for (i, n) in cluster.nodes().iter().enumerate() {
        let file = dir.join(format!("node-127.0.0.1-{}.rdb", n.port()));
        assert!(file.exists(), "no {}: {text}", file.display());
        let line = format!(
            "{}: node 127.0.0.1:{} (id {})",
            file.display(),
            n.port(),
            cluster.node_id(i).trim()
        );
        assert!(text.contains(&line), "{line:?} not in:\n{text}");
        files.push(file);
    }
    assert_eq!(std::fs::read_dir(dir).unwrap().count(), 3, "{text}");
    files
}

#[test]
fn split_by_a_live_cluster_loads_as_a_direct_import() {
    let input = testdata("redis-7.0/all-types.rdb");
    let mut split = RedisCluster::start(3);
    let direct = RedisCluster::start(3);
    let tmp = TempDir::new("split-cluster");
    let files = split_for(&split, &input, &tmp.path().join("out"), &[]);
    for (i, f) in files.iter().enumerate() {
        split.restart_node_loading(i, f);
    }
    let seed = direct.seed_url();
    let mut args = vec!["import", &input, "--to", &seed];
    args.extend_from_slice(&DB_MAP);
    let o = rdbferry(&args);
    assert!(o.status.success(), "{}", output_text(&o));

    let want = Snapshot::of_cluster(&direct);
    assert!(want.len() > 10, "only {} keys", want.len());
    want.assert_same(&Snapshot::of_cluster(&split));
    for i in 0..3 {
        let (a, b) = (split.nodes()[i].digest(), direct.nodes()[i].digest());
        assert_eq!(a, b, "node {i}: DEBUG DIGEST differs");
        let libs = split.cli_on(i, &["FUNCTION", "LIST"]);
        assert!(libs.contains("rdbferrylib"), "node {i}: {libs}");
    }
    // A user and password in the URL; an ACL user without INFO: the input's version, and
    // the masters from CLUSTER SLOTS. The password is never printed.
    split.cli_on(
        0,
        &[
            "ACL", "SETUSER", "splitter", "on", ">s3cret", "~*", "&*", "+@all", "-info",
        ],
    );
    let port = split.nodes()[0].port();
    let spec = format!("cluster=redis://splitter:s3cret@127.0.0.1:{port}");
    let dir = tmp.path().join("acl");
    let mut args = vec!["split", &input, "--by-slots", &spec, "-o", path_str(&dir)];
    args.extend_from_slice(&DB_MAP);
    let o = rdbferry(&args);
    let text = output_text(&o);
    assert!(o.status.success() && !text.contains("s3cret"), "{text}");
    let id = split.node_id(0);
    assert!(text.contains(&format!("(id {})", id.trim())), "{text}");
    assert!(text.contains("written as RDB 10"), "{text}");
    // A slot no master serves: refused before anything is written.
    split.cli_on(0, &["CLUSTER", "DELSLOTS", "0"]);
    let spec = format!("cluster={}", split.seed_url());
    let dir = tmp.path().join("none");
    let o = rdbferry(&["split", &input, "--by-slots", &spec, "-o", path_str(&dir)]);
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("no master serves slots 0;"),
        "{}",
        output_text(&o)
    );
    assert!(!dir.exists());
    drop(split);

    // A 6.2 Cluster (CLUSTER SLOTS, no SHARDS): the files are written for RDB 9, which it
    // loads; RDB 9 has no place for 7.0's functions and stream lag metadata (--lossy).
    let Some(s62) = support::require_old_server("6.2") else {
        return;
    };
    let mut old = RedisCluster::start_on(&s62, 3);
    let files = split_for(&old, &input, &tmp.path().join("out62"), &["--lossy"]);
    for (i, f) in files.iter().enumerate() {
        assert_eq!(&std::fs::read(f).unwrap()[..9], b"REDIS0009");
        old.restart_node_loading(i, f);
    }
    let got = Snapshot::of_cluster(&old).without_group_reads();
    want.without_group_reads().assert_same(&got);
}

/// A Cluster node that does not answer: an error naming it, and no file.
#[test]
fn split_by_an_unreachable_cluster_names_it() {
    let tmp = TempDir::new("split-cluster");
    let dir = tmp.path().join("out");
    let port = support::free_port();
    let spec = format!("cluster=redis://127.0.0.1:{port}");
    let input = testdata("redis-7.0/all-types.rdb");
    let o = rdbferry(&["split", &input, "--by-slots", &spec, "-o", path_str(&dir)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(output_text(&o).contains(&format!("127.0.0.1:{port}")));
    assert!(!dir.exists() || std::fs::read_dir(&dir).unwrap().count() == 0);
}

/// Split for a Valkey 9 Cluster: the files are Valkey 9's (`VALKEY080`, the Cluster's own
/// version), its nodes load them, and together they hold db 0 of the dump as a Valkey that
/// loads the dump itself does.
#[test]
fn split_for_a_valkey_9_cluster() {
    let Some(valkey) = support::require_valkey_server() else {
        return;
    };
    let input = testdata("redis-7.0/all-types.rdb");
    let tmp = TempDir::new("split-valkey");
    let copy = tmp.path().join("orig.rdb");
    std::fs::copy(&input, &copy).unwrap();
    let dir = path_str(tmp.path());
    let standalone = RedisServer::start_with(&valkey, &["--dir", dir, "--dbfilename", "orig.rdb"]);
    let want = Snapshot::with_values(&standalone)
        .only_db(0)
        .without_digest();
    assert!(want.len() > 10, "only {} keys", want.len());
    let mut cluster = RedisCluster::start_on(&valkey, 3);
    let files = split_for(&cluster, &input, &tmp.path().join("out"), &["--db", "0"]);
    for (i, f) in files.iter().enumerate() {
        assert_eq!(&std::fs::read(f).unwrap()[..9], b"VALKEY080");
        cluster.restart_node_loading(i, f);
    }
    want.assert_same(&Snapshot::of_cluster(&cluster));
}
