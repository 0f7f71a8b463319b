//! The shared corpus (`$RDBFERRY_CORPUS`, described row by row in its `MANIFEST.md`): every RDB
//! and AOF must decode completely (every value walked), or, when the manifest marks it
//! corrupt, fail with a clean error that names the file and a byte offset. Key counts given by
//! the manifest are checked, and where the corpus holds another tool's expected output for a
//! file, our decoding is compared with it key by key and value by value.
//!
//! Without `RDBFERRY_CORPUS` the test falls back to `../shared/corpus` next to the crate, and
//! passes with a note when that is absent too. When a corpus is found, a file the manifest lists
//! but the folder lacks is a failure.
//!
//! Expected outputs compared (normalised: sets as sets, hashes as maps, scores as `f64`):
//! - HDT3213/rdb `cases/*.json` (`rdb -c json`): db, key, type, expiry, full value, hash field
//!   TTLs, stream entries/last id/groups (pending ids, delivery counts, consumers), function
//!   code; the regex-filtered `memory_regex.json` with the same filter applied to our keys.
//!   Go writes non-UTF-8 bytes as U+FFFD, so those values compare lossily.
//! - HDT3213/rdb `cases/*.aof` (`rdb -c aof`), rdb-rs `protocol/*.protocol`, redis-rdb-cli
//!   `rct/all.rdb.resp`: the commands are replayed into a model data set and compared with
//!   ours applied the same way (keys the tool RESTOREs from a DUMP payload only by presence).
//! - rdb-rs `json/*.json`: per db, key → value (bytes written one char per byte).
//! - redis-rdb-cli `rct/all.rdb.diff` (every key in order with its TTL and escaped DUMP
//!   payload): payload = our type byte + `raw`, expiry = ours; function libraries by number.
//! - redis-rdb-cli `rct/all.rdb.json` and `.jsonl`: every key in order with its value (Java
//!   wrote bad UTF-8 as U+FFFD, so those compare lossily; streams and module values are
//!   escaped DUMP bytes there, not JSON, and compare by db, key and type only).
//! - redis-rdb-cli `rct/all.rdb.key` (key list, in order) and `rct/all.rdb.count` (keys per type).
//! - redis-rdb-cli `rct/all.rdb.dump` (RESTORE with DUMP payloads copied from the file): each
//!   payload must be exactly our record's type byte + `raw` value bytes (+ version and CRC),
//!   which proves where every value ends, for all 268 keys the tool wrote (it left out the 2
//!   keys whose TTL had passed when it ran).
//!
//! - rdb-rs `plain/*.plain`: our decoding rendered the way rdb-rs prints it (`db=N key -> v`,
//!   `key[i] -> e`, `key { m } `, `key . f -> v`, `key[i] -> {m, score=s}`, raw bytes, then
//!   `checksum <stored trailer in hex>`) must equal the file byte for byte (its `aux` lines
//!   aside).
//!
//! Not compared:
//! - redis-rdb-cli `all.rdb.keyval` / `.text`: unquoted text (values may hold the separators)
//!   of the same data that `.resp`, `.dump` and `.diff` compare exactly.
//! - redis-rdb-cli `all.rdb.dump7`: RESTORE payloads re-encoded by the tool for RDB v7;
//!   comparing them means re-encoding, which is the encoder's test, not the reader's.

mod dataset;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use dataset::{Bytes, Decoded, Key, Model, Val, decode_path, show};
use serde_json::Value as Json;
use support::corpus_dir;

/// Files whose decoding is expected to fail although the manifest does not call them corrupt,
/// with the text the error must contain and why.
const EXPECTED_ERRORS: &[(&str, &str, &str)] = &[(
    "leonchen83__redis-replicator/src/test/resources/module.rdb",
    "type 6",
    "pre-GA (Redis 4.0 RC) module value, type 6: no length or end marker, so no tool can skip \
     it without the module itself",
)];

/// Files the manifest calls corrupt that we decode on purpose, and why.
const ACCEPTED_CORRUPT: &[(&str, &str)] = &[(
    "valkey-io__valkey/tests/assets/corrupt_empty_keys.rdb",
    "collections with 0 elements: redis-check-rdb stops at them, but the server loads the file \
     and skips them (RDB_LOAD_ERR_EMPTY_KEY); we decode them as empty values, checked below",
)];

/// RDB files with bytes after the EOF opcode's checksum that are not AOF commands. Redis and
/// redis-check-rdb stop at EOF; so does `Input`, which reports the bytes as ignored.
const TRAILING_BYTES: &[(&str, &str)] = &[(
    "sripathikrishnan__redis-rdb-tools/tests/dumps/redis_40_with_module.rdb",
    "40 ASCII hex digits (a SHA-1 digest) after the 8-byte zero checksum",
)];

/// One row of the manifest.
#[derive(Debug)]
struct Row {
    path: String,
    what: String,
    contents: String,
    edge: String,
}

fn manifest(dir: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(dir.join("MANIFEST.md"))
        .unwrap_or_else(|e| panic!("{}/MANIFEST.md: {e}", dir.display()));
    let rows: Vec<Row> = text
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim().trim_matches('|').split(" | ").collect();
            assert!(
                cells.len() == 4 || cells.len() == 6,
                "manifest row with {} cells: {l}",
                cells.len()
            );
            let n = cells.len();
            Row {
                path: cells[0].trim().trim_matches('`').to_string(),
                what: cells[n - 3].trim().to_string(),
                contents: cells[n - 2].trim().to_string(),
                edge: cells[n - 1].trim().to_string(),
            }
        })
        .collect();
    assert!(rows.len() > 250, "only {} manifest rows", rows.len());
    rows
}

/// The number after which `marker` follows, e.g. "43" in "43 key(s)".
fn number_before(s: &str, marker: &str) -> Option<u64> {
    let at = s.find(marker)?;
    let digits: String = s[..at]
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.chars().rev().collect::<String>().parse().ok()
}

/// The quoted text after `marker`.
fn quoted_after<'a>(s: &'a str, marker: &str) -> Option<&'a str> {
    let rest = &s[s.find(marker)? + marker.len()..];
    let rest = rest.strip_prefix('"')?;
    Some(&rest[..rest.find('"')?])
}

fn is_input(r: &Row) -> bool {
    !r.what.contains("expected output")
        && !r.what.starts_with("AOF manifest")
        && (r.what.contains("RDB") || r.what.starts_with("AOF"))
}

#[test]
fn corpus() {
    let Some(dir) = corpus_dir() else { return };
    let rows = manifest(&dir);
    let mut failures = Vec::new();
    let missing: Vec<&str> = rows
        .iter()
        .filter(|r| !dir.join(&r.path).exists())
        .map(|r| r.path.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "listed in MANIFEST.md but absent: {missing:?}"
    );

    let mut decoded: BTreeMap<String, Decoded> = BTreeMap::new();
    let mut inputs = 0;
    let mut counted = 0;
    for r in rows.iter().filter(|r| is_input(r)) {
        inputs += 1;
        let path = dir.join(&r.path);
        let corrupt = r.edge.starts_with("YES");
        let expected_err = EXPECTED_ERRORS.iter().find(|e| e.0 == r.path);
        let trailing = TRAILING_BYTES.iter().any(|t| t.0 == r.path);
        if trailing {
            match rdbferry::input::Input::open(&path.display().to_string())
                .and_then(|i| i.walk(&Default::default(), &mut |_, _| Ok(())))
            {
                Ok(w) if w.ignored_tail.is_some() => {}
                other => failures.push(format!(
                    "{}: expected the bytes after EOF to be reported as ignored, got {:?}",
                    r.path,
                    other.map(|w| w.ignored_tail)
                )),
            }
        }
        let res = std::panic::catch_unwind(|| decode_path(&path));
        let res = match res {
            Ok(res) => res,
            Err(_) => {
                failures.push(format!("{}: PANIC while decoding", r.path));
                continue;
            }
        };
        match (res, corrupt || expected_err.is_some()) {
            (Ok(d), false) => {
                counted += check_counts(r, &d, &mut failures);
                decoded.insert(r.path.clone(), d);
            }
            (Ok(d), true) if ACCEPTED_CORRUPT.iter().any(|a| a.0 == r.path) => {
                for k in &d.keys {
                    let n = match &k.val {
                        Val::List(l) => l.len(),
                        Val::Set(s) => s.len(),
                        Val::ZSet(z) => z.len(),
                        Val::Hash(h) => h.len(),
                        _ => 1,
                    };
                    if n != 0 {
                        failures.push(format!(
                            "{}: key \"{}\" should be an empty collection",
                            r.path,
                            show(&k.key)
                        ));
                    }
                }
                if d.keys.is_empty() {
                    failures.push(format!("{}: no keys decoded", r.path));
                }
            }
            (Ok(d), true) => failures.push(format!(
                "{}: marked corrupt ({}) but decoded {} keys without error",
                r.path,
                r.edge,
                d.keys.len()
            )),
            (Err(e), false) => failures.push(format!("{}: {e}", r.path)),
            (Err(e), true) => {
                let msg = e.to_string();
                let file = Path::new(&r.path).file_name().unwrap().to_string_lossy();
                if !msg.contains(&*file) || !msg.contains("+0x") {
                    failures.push(format!(
                        "{}: error does not name the file and a byte offset: {msg}",
                        r.path
                    ));
                }
                if let Some((_, want, _)) = expected_err
                    && !msg.contains(want)
                {
                    failures.push(format!("{}: error should mention {want:?}: {msg}", r.path));
                }
            }
        }
    }
    assert!(inputs > 150, "only {inputs} inputs in the manifest");
    assert!(
        counted > 150,
        "only {counted} key counts found in the manifest"
    );

    // Multi-part AOF directories, walked as one input (base + incr files in manifest order).
    let dirs: BTreeSet<&str> = rows
        .iter()
        .filter(|r| r.what.starts_with("AOF manifest"))
        .map(|r| r.path.rsplit_once('/').unwrap().0)
        .collect();
    for d in &dirs {
        match decode_path(&dir.join(d)) {
            Ok(dec) if !dec.keys.is_empty() || !dec.commands.is_empty() => {}
            Ok(_) => failures.push(format!("{d}: appendonlydir decoded to nothing")),
            Err(e) => failures.push(format!("{d}: {e}")),
        }
    }

    // Other tools' expected outputs.
    let mut compared = 0;
    for r in rows.iter().filter(|r| r.what.contains("expected output")) {
        if r.path.starts_with("generated/") {
            continue; // servers' own listings: tests/expect.rs
        }
        let Some(target) = r
            .contents
            .strip_prefix("expected output for ")
            .and_then(|s| s.split([';', ' ']).next())
        else {
            failures.push(format!(
                "{}: no \"expected output for\" in manifest",
                r.path
            ));
            continue;
        };
        let Some(ours) = decoded.get(target) else {
            failures.push(format!("{}: its input {target} did not decode", r.path));
            continue;
        };
        let filter = quoted_after(&r.contents, "regex filter ")
            .map(|re| regex::bytes::Regex::new(re).unwrap_or_else(|e| panic!("{}: {e}", r.path)));
        let keys: Vec<Key> = ours
            .keys
            .iter()
            .filter(|k| filter.as_ref().is_none_or(|re| re.is_match(&k.key)))
            .cloned()
            .collect();
        let ours = Decoded {
            keys,
            functions: ours.functions.clone(),
            commands: Vec::new(),
            checksum: ours.checksum,
        };
        let before = failures.len();
        let p = dir.join(&r.path);
        let ext = r.path.rsplit('.').next().unwrap_or("");
        let repo = r.path.split('/').next().unwrap_or("");
        match (repo, ext) {
            ("HDT3213__rdb", "json") => compare_hdt_json(&r.path, &p, &ours, &mut failures),
            ("HDT3213__rdb", "aof") | ("badboy__rdb-rs", "protocol") => {
                compare_resp(&r.path, &p, &ours, &mut failures)
            }
            ("leonchen83__redis-rdb-cli", "resp") => {
                compare_resp(&r.path, &p, &ours, &mut failures)
            }
            ("badboy__rdb-rs", "json") => compare_rdbrs_json(&r.path, &p, &ours, &mut failures),
            ("leonchen83__redis-rdb-cli", "key") => {
                compare_rct_keys(&r.path, &p, &ours, &mut failures)
            }
            ("leonchen83__redis-rdb-cli", "dump") => {
                compare_rct_dump(&r.path, &p, &ours, &mut failures)
            }
            ("leonchen83__redis-rdb-cli", "diff") => {
                compare_rct_diff(&r.path, &p, &ours, &mut failures)
            }
            ("leonchen83__redis-rdb-cli", "json" | "jsonl") => {
                compare_rct_json(&r.path, &p, &ours, &mut failures)
            }
            ("leonchen83__redis-rdb-cli", "count") => {
                compare_rct_count(&r.path, &p, &ours, &mut failures)
            }
            ("badboy__rdb-rs", "plain") => compare_rdbrs_plain(&r.path, &p, &ours, &mut failures),
            ("leonchen83__redis-rdb-cli", "keyval" | "text")
            | ("leonchen83__redis-rdb-cli", "dump7") => continue, // see the top
            _ => {
                failures.push(format!(
                    "{}: expected-output format not handled; compare it or list it at the top",
                    r.path
                ));
                continue;
            }
        }
        if failures.len() == before {
            compared += 1;
        }
    }
    eprintln!(
        "corpus: {inputs} inputs ({counted} key counts checked), {} appendonlydirs, \
         {compared} expected outputs compared",
        dirs.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Check the key counts the manifest gives ("N key(s)" from rdbtools or Redis, "OK, N keys
/// read" from redis-check-rdb); returns how many it found.
fn check_counts(r: &Row, d: &Decoded, failures: &mut Vec<String>) -> usize {
    let n = d.keys.len() as u64;
    let mut found = 0;
    for marker in [" key(s)", " keys read"] {
        let Some(want) = number_before(&r.contents, marker) else {
            continue;
        };
        found += 1;
        if want != n {
            failures.push(format!(
                "{}: manifest says {want}{marker}, decoded {n} keys",
                r.path
            ));
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Text normalisation

/// Whether our bytes equal a JSON string written by a tool that replaced invalid UTF-8 with
/// U+FFFD: exact when ours are UTF-8, else equal after collapsing runs of U+FFFD.
fn same_text(ours: &[u8], theirs: &str) -> bool {
    match std::str::from_utf8(ours) {
        Ok(s) => s == theirs,
        Err(_) => collapse(&String::from_utf8_lossy(ours)) == collapse(theirs),
    }
}

fn collapse(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c == '\u{fffd}' && out.ends_with('\u{fffd}') {
            continue;
        }
        out.push(c);
    }
    out
}

/// Unix ms of an RFC 3339 time such as `2022-12-25T18:11:12.573+08:00`.
fn rfc3339_ms(s: &str) -> Option<i64> {
    let (date, rest) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let tz_at = rest.rfind(['+', '-', 'Z'])?;
    let (time, tz) = rest.split_at(tz_at);
    let offset_min = if tz == "Z" {
        0
    } else {
        let sign = if tz.starts_with('-') { -1 } else { 1 };
        let (h, mi) = tz[1..].split_once(':')?;
        sign * (h.parse::<i64>().ok()? * 60 + mi.parse::<i64>().ok()?)
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let ms: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(((days * 86400 + hh * 3600 + mm * 60 + ss) - offset_min * 60) * 1000 + ms)
}

/// Float equality for numbers that went through serde_json, whose default parser (without the
/// `float_roundtrip` feature) can land one ulp off: "107.50774318744905" in rct's jsonl reads
/// as 107.50774318744904. Scores that arrive as text are compared exactly elsewhere.
fn json_float_eq(json: f64, ours: f64) -> bool {
    json == ours || (json - ours).abs() <= 4.0 * f64::EPSILON * json.abs().max(ours.abs())
}

fn read_json(p: &Path) -> Json {
    let text = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn str_of(j: &Json) -> &str {
    j.as_str()
        .unwrap_or_else(|| panic!("expected a JSON string, got {j}"))
}

// ---------------------------------------------------------------------------------------------
// HDT3213/rdb JSON

/// A consumer group as compared: name, last id, pending (id, delivery count), consumer names.
type GroupView = (String, String, Vec<(String, u64)>, BTreeSet<String>);

fn compare_hdt_json(name: &str, p: &Path, ours: &Decoded, failures: &mut Vec<String>) {
    let json = read_json(p);
    let objs = json.as_array().expect("HDT3213 json is an array");
    let mut keys = ours.keys.iter();
    let mut functions = ours.functions.iter();
    for o in objs {
        let ty = str_of(&o["type"]);
        if ty == "aux" {
            continue;
        }
        if ty == "functions" {
            let want = str_of(&o["functionsLua"]);
            match functions.next() {
                Some(code) if same_text(code, want) => {}
                got => failures.push(format!(
                    "{name}: function {want:?}, ours {:?}",
                    got.map(|c| show(c))
                )),
            }
            continue;
        }
        let Some(k) = keys.next() else {
            failures.push(format!(
                "{name}: key {} missing from our decoding",
                o["key"]
            ));
            continue;
        };
        let at = format!("{name}: db {} key \"{}\"", k.db, show(&k.key));
        let mut diff = |what: String| failures.push(format!("{at}: {what}"));
        if o["db"].as_u64() != Some(k.db) || !same_text(&k.key, str_of(&o["key"])) {
            diff(format!("tool lists db {} key {} here", o["db"], o["key"]));
            continue;
        }
        let want_exp = o
            .get("expiration")
            .map(|e| rfc3339_ms(str_of(e)).expect("expiration"));
        if want_exp != k.expire_ms {
            diff(format!("expiry {want_exp:?}, ours {:?}", k.expire_ms));
        }
        let want_type = if ty == "stream" { "stream" } else { ty };
        if want_type != k.val.type_name() {
            diff(format!("type {ty}, ours {}", k.val.type_name()));
            continue;
        }
        let texts = |j: &Json| -> Vec<String> {
            j.as_array()
                .map(|a| a.iter().map(|x| str_of(x).to_string()).collect())
                .unwrap_or_default()
        };
        match &k.val {
            Val::Str(s) => {
                if !same_text(s, str_of(&o["value"])) {
                    diff(format!("value {}, ours \"{}\"", o["value"], show(s)));
                }
            }
            Val::List(l) => {
                let want = texts(&o["values"]);
                if want.len() != l.len() || l.iter().zip(&want).any(|(a, b)| !same_text(a, b)) {
                    diff(format!(
                        "list of {} elements differs from ours ({})",
                        want.len(),
                        l.len()
                    ));
                }
            }
            Val::Set(s) => {
                let want: BTreeSet<String> = texts(&o["members"]).into_iter().collect();
                let ours: BTreeSet<String> = s
                    .iter()
                    .map(|m| String::from_utf8_lossy(m).into_owned())
                    .collect();
                if want != ours {
                    diff(format!("set members {want:?}, ours {ours:?}"));
                }
            }
            Val::ZSet(z) => {
                let want: BTreeMap<String, f64> = o["entries"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|e| {
                                (
                                    str_of(&e["member"]).to_string(),
                                    e["score"].as_f64().unwrap(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let ours: BTreeMap<String, f64> = z
                    .iter()
                    .map(|(m, s)| (String::from_utf8_lossy(m).into_owned(), *s))
                    .collect();
                let same = want.len() == ours.len()
                    && want
                        .iter()
                        .all(|(m, s)| ours.get(m).is_some_and(|o| json_float_eq(*s, *o)));
                if !same {
                    diff(format!("zset {want:?}, ours {ours:?}"));
                }
            }
            Val::Hash(h) => {
                let want: BTreeMap<String, String> = o["hash"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(f, v)| (f.clone(), str_of(v).to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                let ours: BTreeMap<String, String> = h
                    .iter()
                    .map(|(f, v)| {
                        (
                            String::from_utf8_lossy(f).into_owned(),
                            String::from_utf8_lossy(&v.0).into_owned(),
                        )
                    })
                    .collect();
                if want != ours {
                    diff(format!("hash {want:?}, ours {ours:?}"));
                }
                let want_ttl: BTreeMap<String, i64> = o
                    .get("expire")
                    .and_then(|e| e.as_object())
                    .map(|m| {
                        m.iter()
                            .map(|(f, v)| (f.clone(), v.as_i64().unwrap()))
                            .collect()
                    })
                    .unwrap_or_default();
                let our_ttl: BTreeMap<String, i64> = h
                    .iter()
                    .filter(|_| !want_ttl.is_empty())
                    .map(|(f, v)| (String::from_utf8_lossy(f).into_owned(), v.1))
                    .collect();
                if want_ttl != our_ttl {
                    diff(format!("field TTLs {want_ttl:?}, ours {our_ttl:?}"));
                }
            }
            Val::Stream(s) => {
                let mut want = Vec::new();
                for node in o["entries"].as_array().into_iter().flatten() {
                    for m in node["msgs"].as_array().into_iter().flatten() {
                        if m["deleted"].as_bool() == Some(true) {
                            continue;
                        }
                        let fields: BTreeMap<String, String> = m["fields"]
                            .as_object()
                            .unwrap()
                            .iter()
                            .map(|(f, v)| (f.clone(), str_of(v).to_string()))
                            .collect();
                        want.push((str_of(&m["id"]).to_string(), fields));
                    }
                }
                let ours: Vec<(String, BTreeMap<String, String>)> = s
                    .entries
                    .iter()
                    .map(|(id, f)| {
                        let m = f
                            .iter()
                            .map(|(a, b)| {
                                (
                                    String::from_utf8_lossy(a).into_owned(),
                                    String::from_utf8_lossy(b).into_owned(),
                                )
                            })
                            .collect();
                        (id.clone(), m)
                    })
                    .collect();
                if want != ours {
                    diff(format!(
                        "stream entries differ ({} listed, ours {})",
                        want.len(),
                        ours.len()
                    ));
                }
                if str_of(&o["lastId"]) != s.last_id {
                    diff(format!(
                        "stream last id {}, ours {}",
                        o["lastId"], s.last_id
                    ));
                }
                let want_groups: Vec<GroupView> = o
                    .get("groups")
                    .and_then(|g| g.as_array())
                    .into_iter()
                    .flatten()
                    .map(|g| {
                        let mut pel: Vec<(String, u64)> = g["pending"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|p| {
                                (
                                    str_of(&p["id"]).to_string(),
                                    p["deliveryCount"].as_u64().unwrap(),
                                )
                            })
                            .collect();
                        pel.sort();
                        let consumers = g["consumers"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|c| str_of(&c["name"]).to_string())
                            .collect();
                        (
                            str_of(&g["name"]).to_string(),
                            str_of(&g["lastId"]).to_string(),
                            pel,
                            consumers,
                        )
                    })
                    .collect();
                let our_groups: Vec<_> = s
                    .groups
                    .iter()
                    .map(|g| {
                        (
                            String::from_utf8_lossy(&g.name).into_owned(),
                            g.last_id.clone(),
                            g.pending
                                .iter()
                                .map(|p| (p.0.clone(), p.2))
                                .collect::<Vec<_>>(),
                            g.consumers
                                .iter()
                                .map(|c| String::from_utf8_lossy(c).into_owned())
                                .collect::<BTreeSet<_>>(),
                        )
                    })
                    .collect();
                if want_groups != our_groups {
                    diff(format!("groups {want_groups:?}, ours {our_groups:?}"));
                }
            }
            Val::Module(m) => diff(format!("module {m}: tool output has no module value")),
        }
    }
    for k in keys {
        failures.push(format!(
            "{name}: db {} key \"{}\" decoded by us, absent from the tool's output",
            k.db,
            show(&k.key)
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// Commands (RESP)

fn compare_resp(name: &str, p: &Path, ours: &Decoded, failures: &mut Vec<String>) {
    let mut want = Model::default();
    if std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) > 0 {
        let d = decode_path(p).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (db, args) in &d.commands {
            if !want.apply(*db, args) {
                failures.push(format!(
                    "{name}: command {} not modelled",
                    String::from_utf8_lossy(&args[0])
                ));
                return;
            }
        }
    }
    let mut got = Model::default();
    for k in &ours.keys {
        // Tools write streams and module values as RESTORE of a DUMP payload.
        if matches!(k.val, Val::Stream(_) | Val::Module(_)) {
            got.opaque.insert((k.db, k.key.clone()));
        } else {
            got.add_key(k);
        }
    }
    compare_models(name, &want, &got, failures);
}

fn compare_models(name: &str, want: &Model, got: &Model, failures: &mut Vec<String>) {
    if want.opaque != got.opaque {
        failures.push(format!("{name}: RESTOREd keys differ"));
    }
    for (id, w) in &want.keys {
        let at = format!("{name}: db {} key \"{}\"", id.0, show(&id.1));
        match got.keys.get(id) {
            None => failures.push(format!("{at}: in the tool's output, not decoded by us")),
            Some(g) if g.1 != w.1 => {
                failures.push(format!("{at}: expiry {:?}, ours {:?}", w.1, g.1))
            }
            Some(g) if g.0 != w.0 => {
                failures.push(format!("{at}: {}", dataset::describe_diff(&w.0, &g.0)))
            }
            Some(_) => {}
        }
    }
    for id in got.keys.keys().filter(|id| !want.keys.contains_key(*id)) {
        failures.push(format!(
            "{name}: db {} key \"{}\" decoded by us, absent from the tool's output",
            id.0,
            show(&id.1)
        ));
    }
}

fn brief(v: &Val) -> String {
    let s = format!("{v:?}");
    if s.len() > 300 {
        format!("{}...", dataset::prefix(&s, 300))
    } else {
        s
    }
}

// ---------------------------------------------------------------------------------------------
// rdb-rs JSON: `[{key: value, ...} per db]`, every byte written as one char.

fn latin1(s: &str) -> Bytes {
    // rdb-rs writes valid UTF-8 as is and other bytes one char per byte.
    if s.chars().all(|c| u32::from(c) < 256) {
        s.chars().map(|c| u32::from(c) as u8).collect()
    } else {
        s.as_bytes().to_vec()
    }
}

fn compare_rdbrs_json(name: &str, p: &Path, ours: &Decoded, failures: &mut Vec<String>) {
    let json = read_json(p);
    let dbs = json.as_array().expect("rdb-rs json is an array");
    let mut groups: Vec<(u64, Vec<&Key>)> = Vec::new();
    for k in &ours.keys {
        match groups.last_mut() {
            Some((db, v)) if *db == k.db => v.push(k),
            _ => groups.push((k.db, vec![k])),
        }
    }
    if dbs.len() != groups.len() {
        failures.push(format!(
            "{name}: {} db objects, ours {} dbs",
            dbs.len(),
            groups.len()
        ));
        return;
    }
    for (obj, (db, keys)) in dbs.iter().zip(&groups) {
        let obj = obj.as_object().expect("db object");
        let want: BTreeMap<Bytes, &Json> = obj.iter().map(|(k, v)| (latin1(k), v)).collect();
        if want.len() != keys.len() {
            failures.push(format!(
                "{name}: db {db}: {} keys listed, ours {}",
                want.len(),
                keys.len()
            ));
        }
        for k in keys {
            let at = format!("{name}: db {db} key \"{}\"", show(&k.key));
            let Some(w) = want.get(&k.key) else {
                failures.push(format!("{at}: absent from the tool's output"));
                continue;
            };
            let bytes_list = |j: &Json| -> Vec<Bytes> {
                j.as_array()
                    .map(|a| a.iter().map(|x| latin1(str_of(x))).collect())
                    .unwrap_or_default()
            };
            let same = match &k.val {
                Val::Str(s) => w.as_str().map(latin1).as_ref() == Some(s),
                Val::List(l) => &bytes_list(w) == l,
                Val::Set(s) => &bytes_list(w).into_iter().collect::<BTreeSet<_>>() == s,
                Val::ZSet(z) => {
                    let m: BTreeMap<Bytes, f64> = w
                        .as_object()
                        .map(|o| {
                            o.iter()
                                .map(|(m, s)| (latin1(m), dataset::parse_score(str_of(s))))
                                .collect()
                        })
                        .unwrap_or_default();
                    &m == z
                }
                Val::Hash(h) => {
                    let m: BTreeMap<Bytes, Bytes> = w
                        .as_object()
                        .map(|o| {
                            o.iter()
                                .map(|(f, v)| (latin1(f), latin1(str_of(v))))
                                .collect()
                        })
                        .unwrap_or_default();
                    let ours: BTreeMap<Bytes, Bytes> =
                        h.iter().map(|(f, v)| (f.clone(), v.0.clone())).collect();
                    m == ours
                }
                other => {
                    failures.push(format!("{at}: {} not in rdb-rs json", other.type_name()));
                    continue;
                }
            };
            if !same {
                let s = w.to_string();
                failures.push(format!(
                    "{at}: tool {}, ours {}",
                    dataset::prefix(&s, 300),
                    brief(&k.val)
                ));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// redis-rdb-cli key list and counts

fn compare_rct_keys(name: &str, p: &Path, ours: &Decoded, failures: &mut Vec<String>) {
    let text = std::fs::read(p).unwrap();
    // One key per line, in file order; keys holding a newline would break lines, so compare
    // the lossy text of every key joined the same way.
    let want: Vec<String> = String::from_utf8_lossy(&text)
        .lines()
        .map(|l| l.trim_matches('"').to_string())
        .collect();
    let got: Vec<String> = ours
        .keys
        .iter()
        .map(|k| collapse(&String::from_utf8_lossy(&k.key)))
        .collect();
    let want: Vec<String> = want.iter().map(|w| collapse(w)).collect();
    if want != got {
        let first = want.iter().zip(&got).position(|(a, b)| a != b);
        failures.push(format!(
            "{name}: {} keys listed, ours {}; first difference at #{first:?}",
            want.len(),
            got.len()
        ));
    }
}

fn compare_rct_count(name: &str, p: &Path, ours: &Decoded, failures: &mut Vec<String>) {
    // Two CSV lines: type names (and "summary"), then the counts.
    let text = std::fs::read_to_string(p).unwrap();
    let mut lines = text.lines();
    let (Some(names), Some(counts)) = (lines.next(), lines.next()) else {
        failures.push(format!("{name}: not two CSV lines"));
        return;
    };
    let mut got: BTreeMap<&str, u64> = BTreeMap::new();
    for k in &ours.keys {
        let t = match k.val.type_name() {
            "zset" => "sortedset",
            t => t,
        };
        *got.entry(t).or_default() += 1;
    }
    got.insert("summary", ours.keys.len() as u64);
    let want: BTreeMap<&str, u64> = names
        .split(',')
        .zip(counts.split(','))
        .map(|(t, n)| (t.trim(), n.trim().parse().expect("count")))
        .collect();
    if want != got {
        failures.push(format!("{name}: counts {want:?}, ours {got:?}"));
    }
}

/// `rct -f dump`: SELECT + RESTORE key ttl payload, the payload being the value exactly as the
/// RDB stores it (type byte + our `raw`), then the 2-byte RDB version and a CRC-64.
fn compare_rct_dump(name: &str, p: &Path, ours: &Decoded, failures: &mut Vec<String>) {
    let d = decode_path(p).unwrap_or_else(|e| panic!("{name}: {e}"));
    let restores: Vec<&(u64, Vec<Bytes>)> = d
        .commands
        .iter()
        .filter(|(_, a)| a[0].eq_ignore_ascii_case(b"restore"))
        .collect();
    let mut keys = ours.keys.iter().peekable();
    for (db, args) in restores {
        let at = format!("{name}: db {db} key \"{}\"", show(&args[1]));
        // Keys the tool left out (it skips keys already expired when it ran).
        while let Some(k) = keys.next_if(|k| (k.db, &k.key) != (*db, &args[1])) {
            if k.expire_ms.is_none() {
                failures.push(format!(
                    "{at}: the tool skipped db {} key \"{}\", which has no TTL",
                    k.db,
                    show(&k.key)
                ));
                return;
            }
        }
        let Some(k) = keys.next() else {
            failures.push(format!("{at}: RESTOREd by the tool, not decoded by us"));
            return;
        };
        let payload = &args[3];
        let mut want = vec![k.type_id];
        want.extend_from_slice(&k.raw);
        if payload.len() != want.len() + 10 || payload[..want.len()] != want[..] {
            failures.push(format!(
                "{at}: DUMP payload of {} bytes does not hold our {} value bytes",
                payload.len(),
                want.len()
            ));
        }
    }
    for k in keys.filter(|k| k.expire_ms.is_none()) {
        failures.push(format!(
            "{name}: db {} key \"{}\" decoded by us, not RESTOREd by the tool",
            k.db,
            show(&k.key)
        ));
    }
}

/// `rct -f json` / `-f jsonl`: one object per key, in file order (`.json` wraps the same lines
/// in `[`, `,` and `]`). Java decoded every byte string as UTF-8 with U+FFFD for bad bytes, so
/// values compare with [`same_text`]. Streams and module values are written as escaped DUMP
/// bytes (`\x0f...`, not valid JSON); for those only db, key and type are compared.
fn compare_rct_json(name: &str, p: &Path, ours: &Decoded, failures: &mut Vec<String>) {
    let text = std::fs::read(p).unwrap();
    let tail = regex::bytes::Regex::new(r#""db":(\d+),"type":"(\w+)"\}$"#).unwrap();
    let mut keys = ours.keys.iter();
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let line = line.strip_prefix(b"[").unwrap_or(line);
        let line = line
            .strip_suffix(b",")
            .or_else(|| line.strip_suffix(b"]"))
            .unwrap_or(line);
        let Some(k) = keys.next() else {
            failures.push(format!(
                "{name}: more objects than our {} keys",
                ours.keys.len()
            ));
            return;
        };
        let at = format!("{name}: db {} key \"{}\"", k.db, show(&k.key));
        let ty = match k.val.type_name() {
            "zset" => "sortedset",
            t => t,
        };
        let Ok(o) = serde_json::from_slice::<Json>(line) else {
            let Some(c) = tail.captures(line) else {
                failures.push(format!("{at}: unreadable line in the tool's output"));
                continue;
            };
            let (db, t) = (&c[1], &c[2]);
            if db != k.db.to_string().as_bytes()
                || t != ty.as_bytes()
                || ty != "stream" && ty != "module"
            {
                failures.push(format!(
                    "{at}: tool lists db {} type {} here",
                    String::from_utf8_lossy(db),
                    String::from_utf8_lossy(t)
                ));
            }
            continue;
        };
        if o["db"].as_u64() != Some(k.db)
            || !same_text(&k.key, str_of(&o["key"]))
            || o["type"] != ty
        {
            failures.push(format!(
                "{at}: tool lists db {} key {} type {} here",
                o["db"], o["key"], o["type"]
            ));
            continue;
        }
        let v = &o["value"];
        let texts = |j: &Json| -> Vec<String> {
            j.as_array()
                .map(|a| a.iter().map(|x| collapse(str_of(x))).collect())
                .unwrap_or_default()
        };
        let lossy = |b: &[u8]| collapse(&String::from_utf8_lossy(b));
        let same = match &k.val {
            Val::Str(s) => same_text(s, str_of(v)),
            Val::List(l) => texts(v) == l.iter().map(|e| lossy(e)).collect::<Vec<_>>(),
            Val::Set(s) => {
                texts(v).into_iter().collect::<BTreeSet<_>>()
                    == s.iter().map(|e| lossy(e)).collect::<BTreeSet<_>>()
            }
            Val::ZSet(z) => {
                let want: BTreeMap<String, f64> = v
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, s)| (collapse(k), s.as_f64().unwrap_or(f64::NAN)))
                            .collect()
                    })
                    .unwrap_or_default();
                let ours: BTreeMap<String, f64> = z.iter().map(|(m, s)| (lossy(m), *s)).collect();
                want.len() == ours.len()
                    && want
                        .iter()
                        .all(|(m, s)| ours.get(m).is_some_and(|o| json_float_eq(*s, *o)))
            }
            Val::Hash(h) => {
                let want: BTreeMap<String, String> = v
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(f, x)| (collapse(f), collapse(str_of(x))))
                            .collect()
                    })
                    .unwrap_or_default();
                want == h
                    .iter()
                    .map(|(f, x)| (lossy(f), lossy(&x.0)))
                    .collect::<BTreeMap<_, _>>()
            }
            other => {
                failures.push(format!("{at}: {} written as JSON", other.type_name()));
                continue;
            }
        };
        if !same {
            failures.push(format!(
                "{at}: tool {}, ours {}",
                dataset::prefix(&v.to_string(), 300),
                brief(&k.val)
            ));
        }
    }
    if keys.next().is_some() {
        failures.push(format!(
            "{name}: fewer objects than our {} keys",
            ours.keys.len()
        ));
    }
}

/// Undo redis-rdb-cli's escaping: `\xHH`, `\a`, `\b`, `\t`, `\n`, `\r`; other bytes as is.
fn unescape(s: &[u8]) -> Option<Bytes> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] != b'\\' {
            out.push(s[i]);
            i += 1;
            continue;
        }
        let (b, n) = match *s.get(i + 1)? {
            b'x' => (
                u8::from_str_radix(std::str::from_utf8(s.get(i + 2..i + 4)?).ok()?, 16).ok()?,
                4,
            ),
            b'a' => (7, 2),
            b'b' => (8, 2),
            b't' => (b'\t', 2),
            b'n' => (b'\n', 2),
            b'r' => (b'\r', 2),
            b'\\' => (b'\\', 2),
            _ => return None,
        };
        out.push(b);
        i += n;
    }
    Some(out)
}

/// `rct -f diff`: one line per key, in file order: `key[,MS,expire],payload`, the payload
/// being the escaped DUMP payload (type byte + raw value + version + CRC-64).
fn compare_rct_diff(name: &str, p: &Path, ours: &Decoded, failures: &mut Vec<String>) {
    let text = std::fs::read(p).unwrap();
    // Function libraries come as `function,<escaped 0xF6 record>`; only their number is checked.
    let (functions, lines): (Vec<&[u8]>, Vec<&[u8]>) = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .partition(|l| l.starts_with(b"function,\\xf6"));
    if functions.len() != ours.functions.len() {
        failures.push(format!(
            "{name}: {} function libraries, ours {}",
            functions.len(),
            ours.functions.len()
        ));
    }
    if lines.len() != ours.keys.len() {
        failures.push(format!(
            "{name}: {} lines, ours {} keys",
            lines.len(),
            ours.keys.len()
        ));
        return;
    }
    for (line, k) in lines.iter().zip(&ours.keys) {
        let at = format!("{name}: db {} key \"{}\"", k.db, show(&k.key));
        let cells: Vec<&[u8]> = line.split(|&b| b == b',').collect();
        let (key, exp, payload) = match cells[..] {
            [key, payload] => (key, None, payload),
            [key, b"MS", ms, payload] => (
                key,
                std::str::from_utf8(ms).ok().and_then(|m| m.parse().ok()),
                payload,
            ),
            _ => {
                failures.push(format!("{at}: unexpected line {}", show(line)));
                continue;
            }
        };
        let (Some(key), Some(payload)) = (unescape(key), unescape(payload)) else {
            failures.push(format!("{at}: bad escape in {}", show(line)));
            continue;
        };
        let mut want = vec![k.type_id];
        want.extend_from_slice(&k.raw);
        if key != k.key {
            failures.push(format!("{at}: tool lists key \"{}\" here", show(&key)));
        } else if exp != k.expire_ms {
            failures.push(format!("{at}: expiry {exp:?}, ours {:?}", k.expire_ms));
        } else if payload.len() != want.len() + 10 || payload[..want.len()] != want[..] {
            failures.push(format!(
                "{at}: DUMP payload of {} bytes does not hold our {} value bytes",
                payload.len(),
                want.len()
            ));
        }
    }
}

/// Render our decoding as rdb-rs's Plain formatter does.
fn render_rdbrs_plain(ours: &Decoded) -> Bytes {
    let mut out = Vec::new();
    for k in &ours.keys {
        let head = |out: &mut Bytes| {
            out.extend_from_slice(format!("db={} ", k.db).as_bytes());
            out.extend_from_slice(&k.key);
        };
        match &k.val {
            Val::Str(v) => {
                head(&mut out);
                out.extend_from_slice(b" -> ");
                out.extend_from_slice(v);
                out.push(b'\n');
            }
            Val::List(l) => {
                for (i, e) in l.iter().enumerate() {
                    head(&mut out);
                    out.extend_from_slice(format!("[{i}] -> ").as_bytes());
                    out.extend_from_slice(e);
                    out.push(b'\n');
                }
            }
            Val::Set(_) => {
                for m in &k.flat {
                    head(&mut out);
                    out.extend_from_slice(b" { ");
                    out.extend_from_slice(m);
                    out.extend_from_slice(b" } \n");
                }
            }
            Val::ZSet(_) => {
                for (i, p) in k.flat.chunks(2).enumerate() {
                    head(&mut out);
                    out.extend_from_slice(format!("[{i}] -> {{").as_bytes());
                    out.extend_from_slice(&p[0]);
                    let score = dataset::parse_score(&String::from_utf8_lossy(&p[1]));
                    out.extend_from_slice(format!(", score={score}}}\n").as_bytes());
                }
            }
            Val::Hash(_) => {
                // Hashes with field TTLs (types 22-25) carry a third element per field.
                let stride = if (22..=25).contains(&k.type_id) { 3 } else { 2 };
                for p in k.flat.chunks(stride) {
                    head(&mut out);
                    out.extend_from_slice(b" . ");
                    out.extend_from_slice(&p[0]);
                    out.extend_from_slice(b" -> ");
                    out.extend_from_slice(&p[1]);
                    out.push(b'\n');
                }
            }
            Val::Stream(_) | Val::Module(_) => {}
        }
    }
    if let Some(c) = ours.checksum {
        let hex: String = c.to_le_bytes().iter().map(|b| format!("{b:02x}")).collect();
        out.extend_from_slice(format!("checksum {hex}\n").as_bytes());
    }
    out
}

fn compare_rdbrs_plain(name: &str, p: &Path, ours: &Decoded, failures: &mut Vec<String>) {
    let text = std::fs::read(p).unwrap();
    let mut want: &[u8] = &text;
    while want.starts_with(b"aux ") {
        let end = want
            .iter()
            .position(|&b| b == b'\n')
            .map_or(want.len(), |i| i + 1);
        want = &want[end..];
    }
    let got = render_rdbrs_plain(ours);
    if want != &got[..] {
        let i = want
            .iter()
            .zip(&got)
            .position(|(a, b)| a != b)
            .unwrap_or(want.len().min(got.len()));
        let line = |b: &[u8]| {
            let start = b[..i.min(b.len())]
                .iter()
                .rposition(|&c| c == b'\n')
                .map_or(0, |s| s + 1);
            let end = b[start..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |e| start + e);
            show(&b[start..end])
        };
        failures.push(format!(
            "{name}: differs at byte {i}: tool \"{}\", ours \"{}\"",
            line(want),
            line(&got)
        ));
    }
}
