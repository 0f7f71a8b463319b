//! `rdbferry import` of module values (issue 3) against real servers without modules: the
//! precheck's "modules" row names each module type the input needs and the target lacks; such
//! keys are refused before sending, named with their type, and skipped (counted) with
//! `--on-error skip`; when the target's modules cannot be listed (ACL), the keys are sent and
//! the "Bad data format" reply is reported with the type. A target *with* the module is not
//! available here: the matching of types to `MODULE LIST` is unit-tested in `job::modules`.
//!
//! The module RDBs come from the shared corpus (`$RDBFERRY_CORPUS`, else `../shared/corpus`):
//! a missing file fails the test when `RDBFERRY_CORPUS` or `CI` is set, and skips it with a
//! note otherwise.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{RedisCluster, RedisServer, TempDir};

/// Redis 4.0 dump: `simplekey` (string) and `foo`, a ReJSON-RL value (encver 0).
const REJSON: &str = "sripathikrishnan__redis-rdb-tools/tests/dumps/redis_40_with_module.rdb";
/// No keys, one MODULE_AUX record of type `test__rdb`.
const AUX: &str = "sripathikrishnan__redis-rdb-tools/tests/dumps/redis_60_with_module_aux.rdb";
/// One `modulekey` of the example module's type `hellotype`.
const HELLOTYPE: &str = "leonchen83__redis-replicator/src/test/resources/dump-module-2.rdb";

fn corpus_file(rel: &str) -> Option<String> {
    let strict = std::env::var_os("CI").is_some() || std::env::var_os("RDBFERRY_CORPUS").is_some();
    let dir = match std::env::var_os("RDBFERRY_CORPUS") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"),
    };
    let p = dir.join(rel);
    if p.is_file() {
        return Some(p.display().to_string());
    }
    assert!(
        !strict,
        "{} is missing (RDBFERRY_CORPUS or CI is set, so this is an error)",
        p.display()
    );
    eprintln!("skipping: {} is absent; set RDBFERRY_CORPUS", p.display());
    None
}

fn rdbferry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rdbferry"))
        .args(args)
        .env_remove("RDBFERRY_TO_PASSWORD")
        .output()
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `import INPUT --to URL --precheck`: its "modules" row, asserting the exit code.
fn modules_row(input: &str, url: &str, code: i32) -> String {
    let o = rdbferry(&["import", input, "--to", url, "--precheck"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(code), "{out}{err}");
    out.lines()
        .find(|l| l.starts_with("modules "))
        .unwrap_or_else(|| panic!("no modules row:\n{out}"))
        .to_string()
}

/// `import INPUT --to URL --json -q EXTRA...`: the summary, asserting the exit code.
fn import(input: &str, url: &str, extra: &[&str], code: i32) -> serde_json::Value {
    let mut args = vec!["import", input, "--to", url, "--json", "-q"];
    args.extend_from_slice(extra);
    let o = rdbferry(&args);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(code), "{args:?}\n{out}\n{err}");
    let json = out.lines().last().unwrap_or_default();
    serde_json::from_str(json).unwrap_or_else(|e| panic!("no JSON summary ({e}): {out}"))
}

#[test]
fn module_keys_into_a_target_without_the_module() {
    let Some(dump) = corpus_file(REJSON) else {
        return;
    };
    let s = RedisServer::start();
    let url = s.url();

    // The precheck fails, naming the type, its module and how many keys need it.
    let row = modules_row(&dump, &url, 1);
    assert!(
        row.contains("FAIL")
            && row.contains("ReJSON-RL (encver 0, 1 key)")
            && row.contains("module ReJSON or json not loaded on the target"),
        "{row}"
    );

    // Without --force nothing is written.
    let o = rdbferry(&["import", &dump, "--to", &url, "-q"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("precheck failed"), "{err}");
    assert_eq!(s.cli(&["DBSIZE"]), "0");

    // --force --on-error skip: the string is written, the module key refused and counted.
    let r = import(&dump, &url, &["--force", "--on-error", "skip"], 1);
    assert_eq!(
        (r["keys_read"].as_u64(), r["errors"].as_u64()),
        (Some(2), Some(1)),
        "{r}"
    );
    assert_eq!(r["written"], 1, "{r}");
    assert_eq!(
        r["error_messages"][0],
        "key \"foo\" (db 0): module type ReJSON-RL (encver 0) is not loaded on the target; \
         its module is one of ReJSON, json",
        "{r}"
    );
    assert_eq!(s.cli(&["KEYS", "*"]), "simplekey");
    assert_eq!(s.cli(&["GET", "simplekey"]), "someval");

    // --force alone (--on-error stop): stops at the module key, naming it and its type.
    let s = RedisServer::start();
    let o = rdbferry(&["import", &dump, "--to", &s.url(), "-q", "--force"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("key \"foo\" (db 0): module type ReJSON-RL (encver 0) is not loaded"),
        "{err}"
    );
    assert_eq!(s.cli(&["EXISTS", "foo"]), "0");
}

/// A type no table knows (`hellotype`), through convert → JSONL → import (the rewrite path):
/// a target without any module lacks it for sure.
#[test]
fn unknown_module_type_via_jsonl_is_refused_by_name() {
    let Some(dump) = corpus_file(HELLOTYPE) else {
        return;
    };
    let tmp = TempDir::new("modules-jsonl");
    let jsonl = tmp.path().join("m.jsonl").display().to_string();
    let o = rdbferry(&["convert", &dump, "--format", "jsonl", "-o", &jsonl]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let s = RedisServer::start();
    let row = modules_row(&jsonl, &s.url(), 1);
    assert!(
        row.contains("FAIL") && row.contains("hellotype (encver 0, 1 key): its module not loaded"),
        "{row}"
    );
    let r = import(&jsonl, &s.url(), &["--force", "--on-error", "skip"], 1);
    assert_eq!(r["errors"], 1, "{r}");
    assert_eq!(
        r["error_messages"][0],
        "key \"modulekey\" (db 0): module type hellotype (encver 0) is not loaded on the target",
        "{r}"
    );
    assert_eq!(s.cli(&["DBSIZE"]), "0");
}

/// A user who may not run MODULE LIST: the precheck cannot tell (a warning, not a failure),
/// the key is sent, and the target's "Bad data format" is reported with the module type.
#[test]
fn module_list_refused_sends_and_names_the_type_on_bad_data_format() {
    let Some(dump) = corpus_file(REJSON) else {
        return;
    };
    let s = RedisServer::start();
    s.cli(&[
        "ACL", "SETUSER", "nomod", "on", ">pw", "~*", "&*", "+@all", "-module",
    ]);
    let url = format!("redis://nomod:pw@127.0.0.1:{}", s.port());
    let row = modules_row(&dump, &url, 0);
    assert!(
        row.contains("warn")
            && row.contains("ReJSON-RL (encver 0, 1 key): cannot tell")
            && row.contains("MODULE LIST refused"),
        "{row}"
    );
    for mode in ["restore", "rewrite"] {
        s.cli(&["FLUSHALL"]);
        let r = import(&dump, &url, &["--mode", mode, "--on-error", "skip"], 1);
        assert_eq!(r["errors"], 1, "{mode}: {r}");
        let msg = r["error_messages"][0].as_str().unwrap_or_default();
        assert!(
            msg.starts_with("key \"foo\" (db 0): ERR Bad data format")
                && msg.contains("module type ReJSON-RL (encver 0)"),
            "{mode}: {msg}"
        );
        assert_eq!(s.cli(&["KEYS", "*"]), "simplekey", "{mode}");
    }
}

/// MODULE_AUX records (module data outside any key, e.g. RediSearch 2.x index definitions)
/// cannot be RESTOREd: the precheck warns that they are not imported.
#[test]
fn module_aux_data_is_reported_not_imported() {
    let Some(dump) = corpus_file(AUX) else {
        return;
    };
    let s = RedisServer::start();
    let row = modules_row(&dump, &s.url(), 0);
    assert!(
        row.contains("warn")
            && row.contains("no module values; aux data of module type test__rdb is not imported"),
        "{row}"
    );
}

#[test]
fn no_module_values_row() {
    let s = RedisServer::start();
    let dump = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/redis-7.0/all-types.rdb")
        .display()
        .to_string();
    let row = modules_row(&dump, &s.url(), 0);
    assert!(
        row.contains("ok") && row.contains("no module values"),
        "{row}"
    );
}

/// On a Cluster every master is asked: none has the module, so the row fails and the key is
/// refused by name.
#[test]
fn cluster_masters_without_the_module() {
    let Some(dump) = corpus_file(REJSON) else {
        return;
    };
    let c = RedisCluster::start(3);
    let url = c.seed_url();
    let row = modules_row(&dump, &url, 1);
    assert!(
        row.contains("FAIL") && row.contains("ReJSON-RL (encver 0, 1 key)"),
        "{row}"
    );
    let r = import(&dump, &url, &["--force", "--on-error", "skip"], 1);
    assert_eq!(
        (r["written"].as_u64(), r["errors"].as_u64()),
        (Some(1), Some(1)),
        "{r}"
    );
    let msg = r["error_messages"][0].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("key \"foo\" (db 0): module type ReJSON-RL (encver 0) is not loaded"),
        "{msg}"
    );
}
