//! Compares our decoding with what the servers that wrote the files listed themselves: every
//! `*.expect.json` under `$RDBFERRY_CORPUS/generated/` (Redis 7.0, 6.2, 6.0) and under
//! `testdata/redis-*/`. Checked: the set of (db, key), type, value (strings byte-exact, lists in
//! order, sets as sets, zsets member → score with `f64` equality incl. ±inf, hashes as maps,
//! streams: entries with ids and field/value pairs, last id, groups with last-delivered id,
//! pending entries (id, consumer, delivery count) and consumer names), TTL (`pexpiretime` =
//! absolute ms, -1 = none; where it is absent or null, as in the Redis 6 listings, only whether
//! there is a TTL, from `pttl`), and function libraries (code).
//!
//! AOF listings describe the state after replaying base + incr. For an AOF with an RDB part
//! only what the file determines is compared: the keys of the RDB preamble/base that no later
//! command names. An AOF without one is compared by its replay: our decoded commands are sent
//! to an empty Redis 7.0, whose state must be the listing's (`support::Snapshot`: digest,
//! expiry times, stream groups). Every listing found is compared one way or the other, and an
//! input that decodes to nothing at all is a failure.
//!
//! Without `RDBFERRY_CORPUS` the generated listings are looked for in `../shared/corpus`; when
//! neither exists only `testdata/` is checked.

mod dataset;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use dataset::{Bytes, Decoded, Key, Val, decode_path, decode_via_jsonl, parse_score, show};
use serde_json::Value as Json;

fn listings() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = match std::env::var_os("RDBFERRY_CORPUS") {
        Some(d) => Some(PathBuf::from(d)),
        None => Some(root.join("../shared/corpus")).filter(|d| d.is_dir()),
    };
    match corpus {
        Some(c) => {
            find(&c.join("generated"), &mut out);
            // Every listing MANIFEST.md names must be there.
            let manifest = std::fs::read_to_string(c.join("MANIFEST.md"))
                .unwrap_or_else(|e| panic!("{}/MANIFEST.md: {e}", c.display()));
            let named: Vec<PathBuf> = manifest
                .lines()
                .filter_map(|l| l.strip_prefix("| `generated/"))
                .filter_map(|l| l.split('`').next())
                .filter(|p| p.ends_with(".expect.json"))
                .map(|p| c.join("generated").join(p))
                .collect();
            assert!(
                named.len() >= 5,
                "MANIFEST.md names {} listings",
                named.len()
            );
            for p in &named {
                assert!(
                    out.contains(p),
                    "{} (in MANIFEST.md) is missing",
                    p.display()
                );
            }
            assert_eq!(
                out.len(),
                named.len(),
                "listings under generated/ that MANIFEST.md does not name"
            );
        }
        None => eprintln!("note: no corpus (RDBFERRY_CORPUS unset); checking testdata/ only"),
    }
    let before = out.len();
    find(&root.join("testdata"), &mut out);
    // The 3 dumps and 2 AOFs of testdata/README.md.
    assert_eq!(out.len() - before, 5, "*.expect.json under testdata/");
    out.sort();
    out
}

fn find(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            find(&p, out);
        } else if p.to_string_lossy().ends_with(".expect.json") {
            out.push(p);
        }
    }
}

/// A string of the listing: JSON text or `{"hex": ...}`.
fn bytes(j: &Json) -> Bytes {
    support::json_bytes(j)
}

fn arr(j: &Json) -> &Vec<Json> {
    j.as_array().unwrap_or_else(|| panic!("not an array: {j}"))
}

/// `["name", x, "other", y]` → the value after `name`.
fn field<'j>(flat: &'j Json, name: &str) -> &'j Json {
    let a = arr(flat);
    a.iter()
        .position(|x| x.as_str() == Some(name))
        .and_then(|i| a.get(i + 1))
        .unwrap_or(&Json::Null)
}

fn id_of(j: &Json) -> String {
    j.as_str()
        .unwrap_or_else(|| panic!("not an id: {j}"))
        .to_string()
}

/// A stream id as numbers, for ordering.
fn id_key(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').expect("stream id");
    (ms.parse().expect("ms"), seq.parse().expect("seq"))
}

/// The value a listing gives, in our model.
fn expected_value(ty: &str, v: &Json) -> Val {
    match ty {
        "string" => Val::Str(bytes(v)),
        "list" => Val::List(arr(v).iter().map(bytes).collect()),
        "set" => Val::Set(arr(v).iter().map(bytes).collect()),
        "zset" => Val::ZSet(
            arr(v)
                .iter()
                .map(|p| {
                    let score = p[1]
                        .as_str()
                        .map(parse_score)
                        .or_else(|| p[1].as_f64())
                        .expect("score");
                    (bytes(&p[0]), score)
                })
                .collect(),
        ),
        "hash" => Val::Hash(
            arr(v)
                .iter()
                .map(|p| (bytes(&p[0]), (bytes(&p[1]), 0)))
                .collect(),
        ),
        "stream" => {
            let entries = arr(&v["entries"])
                .iter()
                .map(|e| {
                    let kv = arr(&e[1]);
                    let fields = kv.chunks(2).map(|p| (bytes(&p[0]), bytes(&p[1]))).collect();
                    (id_of(&e[0]), fields)
                })
                .collect();
            let full = &v["xinfo_stream_full"];
            let groups = arr(field(full, "groups"))
                .iter()
                .map(|g| {
                    let mut pending: Vec<(String, Bytes, u64)> = arr(field(g, "pending"))
                        .iter()
                        .map(|p| (id_of(&p[0]), bytes(&p[1]), p[3].as_u64().expect("count")))
                        .collect();
                    pending.sort_by_key(|p| id_key(&p.0));
                    dataset::Group {
                        name: bytes(field(g, "name")),
                        last_id: id_of(field(g, "last-delivered-id")),
                        pending,
                        consumers: arr(field(g, "consumers"))
                            .iter()
                            .map(|c| bytes(field(c, "name")))
                            .collect(),
                    }
                })
                .collect();
            Val::Stream(dataset::Stream {
                entries,
                last_id: id_of(field(full, "last-generated-id")),
                groups,
            })
        }
        other => panic!("type {other} in a listing"),
    }
}

/// Keys named by the AOF commands after the RDB part: their final state depends on a replay.
fn touched(d: &Decoded) -> BTreeSet<(u64, Bytes)> {
    let mut out = BTreeSet::new();
    for (db, args) in &d.commands {
        let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
        let keys: &[Bytes] = match name.as_str() {
            "SELECT" | "MULTI" | "EXEC" | "FUNCTION" => &[],
            "DEL" | "UNLINK" => &args[1..],
            _ => &args[1..2.min(args.len())],
        };
        for k in keys {
            out.insert((*db, k.clone()));
        }
    }
    out
}

/// An AOF without an RDB part: our commands, sent in order to an empty server, must give
/// the state the listing describes.
fn replay(listing: &Path, ours: &Decoded, failures: &mut Vec<String>) {
    let s = support::RedisServer::start();
    let mut c = redis::Client::open(s.url())
        .and_then(|c| c.get_connection())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut db = 0;
    for (cmd_db, args) in &ours.commands {
        if *cmd_db != db {
            let _: () = redis::cmd("SELECT").arg(*cmd_db).query(&mut c).unwrap();
            db = *cmd_db;
        }
        let mut cmd = redis::cmd(&String::from_utf8_lossy(&args[0]));
        cmd.arg(&args[1..]);
        if let Err(e) = cmd.query::<redis::Value>(&mut c) {
            failures.push(format!(
                "{}: {}: {e}",
                listing.display(),
                show(&args.concat())
            ));
        }
    }
    let want = support::Snapshot::from_listing(listing);
    for d in want.diff(&support::Snapshot::of(&s)) {
        failures.push(format!("{} (replayed): {d}", listing.display()));
    }
}

fn compare(listing: &Path, failures: &mut Vec<String>, via_jsonl: bool) -> bool {
    let name = listing.to_string_lossy().into_owned();
    let input = PathBuf::from(name.strip_suffix(".expect.json").unwrap());
    let text = std::fs::read(listing).unwrap_or_else(|e| panic!("{name}: {e}"));
    let json: Json = serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let decoded = if via_jsonl {
        decode_via_jsonl(&input)
    } else {
        decode_path(&input).map_err(|e| e.to_string())
    };
    let ours = match decoded {
        Ok(d) => d,
        Err(e) => {
            failures.push(format!("{name}: {e}"));
            return false;
        }
    };
    if ours.keys.is_empty() && ours.commands.is_empty() {
        failures.push(format!("{name}: {} decodes to nothing", input.display()));
        return false;
    }
    let aof = input.is_dir() || !ours.commands.is_empty();
    if aof && ours.keys.is_empty() {
        replay(listing, &ours, failures);
        return true;
    }
    let skip = if aof { touched(&ours) } else { BTreeSet::new() };

    let mut got: BTreeMap<(u64, Bytes), &Key> = BTreeMap::new();
    for k in &ours.keys {
        if got.insert((k.db, k.key.clone()), k).is_some() {
            failures.push(format!(
                "{name}: db {} key \"{}\" twice",
                k.db,
                show(&k.key)
            ));
        }
    }
    let mut listed = BTreeSet::new();
    for e in arr(&json["keys"]) {
        let db = e["db"].as_u64().expect("db");
        let key = bytes(&e["key"]);
        let id = (db, key.clone());
        listed.insert(id.clone());
        if skip.contains(&id) {
            continue;
        }
        let at = format!("{name}: db {db} key \"{}\"", show(&key));
        let Some(k) = got.get(&id) else {
            failures.push(format!("{at}: listed by the server, not decoded by us"));
            continue;
        };
        let ty = e["type"].as_str().expect("type");
        if ty != k.val.type_name() {
            failures.push(format!("{at}: type {ty}, ours {}", k.val.type_name()));
            continue;
        }
        let want = expected_value(ty, &e["value"]);
        let mut ours = k.val.clone();
        if let Val::Stream(s) = &mut ours {
            // XINFO STREAM FULL lists at most 10 pending entries per group (its COUNT default):
            // compare the listed ones with our first ones, and the total with `pel-count`.
            let full = &e["value"]["xinfo_stream_full"];
            for (g, j) in s.groups.iter_mut().zip(arr(field(full, "groups"))) {
                let count = field(j, "pel-count").as_u64().expect("pel-count");
                if count != g.pending.len() as u64 {
                    failures.push(format!(
                        "{at}: group \"{}\" pel-count {count}, ours {}",
                        show(&g.name),
                        g.pending.len()
                    ));
                }
                g.pending.truncate(arr(field(j, "pending")).len());
            }
        }
        if want != ours {
            failures.push(format!("{at}: {}", dataset::describe_diff(&want, &ours)));
        }
        match e.get("pexpiretime").and_then(|p| p.as_i64()) {
            Some(at_ms) => {
                let want = (at_ms != -1).then_some(at_ms);
                if want != k.expire_ms {
                    failures.push(format!("{at}: pexpiretime {at_ms}, ours {:?}", k.expire_ms));
                }
            }
            None => {
                let has = e["pttl"].as_i64().expect("pttl") >= 0;
                if has != k.expire_ms.is_some() {
                    failures.push(format!(
                        "{at}: pttl {}, ours expire {:?}",
                        e["pttl"], k.expire_ms
                    ));
                }
            }
        }
    }
    for id in got
        .keys()
        .filter(|id| !listed.contains(*id) && !skip.contains(*id))
    {
        failures.push(format!(
            "{name}: db {} key \"{}\" decoded by us, not listed by the server",
            id.0,
            show(&id.1)
        ));
    }
    if let Some(libs) = json.get("functions").and_then(|f| f.as_array())
        && !aof
    {
        let want: BTreeSet<Bytes> = libs
            .iter()
            .map(|l| bytes(field(l, "library_code")))
            .collect();
        let ours: BTreeSet<Bytes> = ours.functions.iter().cloned().collect();
        if want != ours {
            let names: Vec<String> = libs
                .iter()
                .map(|l| field(l, "library_name").to_string())
                .collect();
            failures.push(format!(
                "{name}: function libraries {names:?} differ from ours ({} libraries)",
                ours.len()
            ));
        }
    }
    true
}

#[test]
fn servers_listings() {
    let mut failures = Vec::new();
    let mut compared = 0;
    let all = listings();
    for l in &all {
        if compare(l, &mut failures, false) {
            compared += 1;
        }
    }
    eprintln!("expect: {compared} listings compared");
    assert_eq!(compared, all.len(), "listings not compared: {failures:#?}");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The same comparison through what users get: `convert --format jsonl`, parsed back.
#[test]
fn servers_listings_via_jsonl() {
    let mut failures = Vec::new();
    let mut compared = 0;
    let all = listings();
    for l in &all {
        if compare(l, &mut failures, true) {
            compared += 1;
        }
    }
    eprintln!("expect via jsonl: {compared} listings compared");
    assert_eq!(compared, all.len(), "listings not compared: {failures:#?}");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
