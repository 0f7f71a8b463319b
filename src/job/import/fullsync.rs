//! `import` by full sync: the target becomes a replica of rdbferry for as long as it takes to
//! load the input, then is detached with its data.
//!
//! Why: a Redis loads an RDB at start-up about twice as fast as it executes one `RESTORE` per
//! key, and a replica loads a full sync with the same loader. For an empty standalone target
//! this is the fastest import there is: rdbferry streams the records it keeps (filters, renames,
//! db mapping and expired keys applied, values copied as raw bytes through [`RdbCopy`]) and
//! the target loads them itself.
//!
//! How, step by step:
//! 1. Whether it may: one function, [`decide`], used by the precheck (its `via` row) and the
//!    run alike: `--via auto|full-sync`, `--mode auto`, no `--dry-run`, one RDB input (not an
//!    AOF, JSONL or stdin) of a version the target loads (or newer, down-converted: see 3),
//!    no module data (no functions for a target older than 7.0), a plain-TCP standalone
//!    target of Redis 6.0+ that is a master, with no functions and every db empty (a full
//!    sync replaces everything the target holds), whose `masterauth` and `repl-diskless-load`
//!    can be read and set. A failed precheck rules it out.
//! 2. Claim: the commands that put the target back are printed first. Then `CLIENT PAUSE
//!    WRITE` (writes of other clients wait), every db checked empty, `masterauth` set to a
//!    claim record (a one-time secret the listener requires, and the settings to put back:
//!    `job::changes`), `repl-diskless-load` to `on-empty-db` (the target loads from the
//!    socket as the stream arrives), `REPLICAOF <this host> <port>`, `CLIENT UNPAUSE`. Writes
//!    that waited are then refused (`READONLY`), not lost. 6.0 has no `CLIENT PAUSE WRITE`:
//!    the check, the settings and `REPLICAOF` go in one `MULTI`/`EXEC` instead. A later run,
//!    or `rdbferry recover`, recognises a target stranded by a `kill -9` from the claim
//!    record.
//! 3. Stream: only the target is served (`repl::master`: its address, the secret). Each record
//!    is copied and the copy checked on rayon workers (`loadable`: the value walked whole, its
//!    type one the target loads, no member twice, the key not seen before) before a byte of
//!    it is written, in file order: exactly the checked bytes go, even if the file changes
//!    meanwhile. A record over [`COPY_MAX`] is checked in place with a CRC-64, and its last
//!    bytes are held back until the bytes sent are proven the same.
//!    A file newer than the target loads (a 7.0 dump into 6.2 or 6.0) goes as a file of the
//!    target's version: each value the target cannot load as it is is re-encoded on the
//!    workers (`rdb::reencode`, listpacks into ziplists); what the target cannot hold at all
//!    (a stream's consumer-group lag below RDB 10, hash-field TTLs below 12) rules the full
//!    sync out, naming the key, and auto mode takes commands as before.
//! 4. Anything wrong before the end mark (a bad or duplicated key, the replica not
//!    connecting, a refused command, Ctrl-C): the transfer is abandoned, which leaves the
//!    target as it was (`repl::master` says why), the target is detached and its settings put
//!    back, the target is checked empty, and the import goes on with commands (`--via auto`,
//!    unless cancelled), which report bad keys by name as usual; `--via full-sync` stops.
//! 5. After the end mark: wait until the target says its link is up (loaded), with a
//!    progress deadline (`--timeout` without progress), detach it, compare its key counts per
//!    db with what was sent, and load the function libraries with `FUNCTION LOAD`.
//!
//! What it deliberately does not do: Cluster targets (each master would need its slots' part
//! of the file), TLS targets (the replica would connect back with TLS), merging into data the
//! target already has. Those take the command path.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::loadable::{Seen, check_value};
use super::options::{ImportOptions, Mode, route};
use super::report::{ImportReport, refuse};
use super::scan::Scan;
use crate::error::{Error, Result};
use crate::input::{Event, Input, Kind};
use crate::job::changes::{self, ClaimRecord, Setting};
use crate::job::convert_rdb::VERSIONS;
use crate::job::{Common, batch};
use crate::net::error::transient_reply;
use crate::net::{Conn, NetError, ServerInfo};
use crate::progress::Progress;
use crate::rdb::{Dialect, KeyRecord, RdbReader, Record};
use crate::repl::master::{Expect, Linked, Master, SyncError, Transfer, random_hex40};
use crate::resp::Reply;
use crate::sink::rdb::RdbCopy;
use crate::sink::writer::WriteStats;
use crate::text::quoted as show;
use crate::time::now_ms;

pub mod relay;

/// `--via`: how `import` writes (and, in its report, how it wrote: never `Auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// Full sync when the target and input allow it, else commands.
    #[default]
    Auto,
    /// Full sync, or an error saying why not.
    FullSync,
    /// Commands (`RESTORE`, rewrite), always.
    Commands,
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Via::Auto => "auto",
            Via::FullSync => "full-sync",
            Via::Commands => "commands",
        })
    }
}

/// How long the target has to connect to us after `REPLICAOF` and finish its handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Records up to this size are copied before they are checked, and the copy is sent;
/// bigger ones are checked in place and proven unchanged as they are sent (see the module
/// doc).
pub const COPY_MAX: usize = 64 << 20;

/// What the decision found out about the target, for the run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The address the target reaches us at (where we listen).
    listen_ip: IpAddr,
    /// The target's address as we reach it: a peer from elsewhere is refused.
    target_ip: Option<IpAddr>,
    /// Settings as they were, to put back on detach.
    restore: Vec<Setting>,
    /// Whether `repl-diskless-load` is changed for the sync.
    diskless: bool,
    /// The RDB version the target loads.
    target_rdb: u32,
    /// Whether the target has `CLIENT PAUSE WRITE` (6.2+); else the claim is a transaction.
    pause: bool,
}

/// Whether the full sync may be used, decided once: by the precheck (its `via` row says so)
/// and for the run (which only repeats the emptiness check under `CLIENT PAUSE`).
/// `Ok(Err(why))`: ruled out.
pub fn decide(
    inputs: &[String],
    opts: &ImportOptions,
    scan: &Scan,
    info: &ServerInfo,
    precheck_failed: bool,
    conn: &mut Conn,
) -> Result<std::result::Result<Plan, String>> {
    if let Some(why) = ruled_out(inputs, opts, scan, info, precheck_failed) {
        return Ok(Err(why));
    }
    target_facts(conn, info, scan)
}

/// What the inputs, options and target info rule out, without asking the target more.
fn ruled_out(
    inputs: &[String],
    opts: &ImportOptions,
    scan: &Scan,
    info: &ServerInfo,
    precheck_failed: bool,
) -> Option<String> {
    let why = if let Some(why) = target_ruled_out(opts, info, precheck_failed) {
        why
    } else if inputs.len() != 1 {
        "more than one input"
    } else if !scan.scanned() {
        "standard input"
    } else if scan.has_modules() {
        "the input has module data"
    } else if scan.functions > 0 && info.rdb_version < 10 {
        "the input has functions, which the target (RDB 9 or older) cannot hold"
    } else if !Seen::fits(scan.keys()) {
        "too many keys to rule out duplicates in bounded memory"
    } else {
        return input_version(&inputs[0], info.rdb_version).err();
    };
    Some(why.into())
}

/// What the options and the target rule out, whatever the input (a file, or `sync`'s relay
/// of a live source's snapshot: [`relay`]).
fn target_ruled_out(
    opts: &ImportOptions,
    info: &ServerInfo,
    precheck_failed: bool,
) -> Option<&'static str> {
    Some(if opts.via == Via::Commands {
        "--via commands"
    } else if opts.dry_run {
        "--dry-run"
    } else if opts.mode != Mode::Auto {
        "--mode restore|rewrite asks for commands"
    } else if opts.to.tls {
        "a TLS target"
    } else if info.info_refused {
        "INFO refused (ACL): the target's state cannot be checked"
    } else if info.cluster {
        "a Cluster target"
    } else if !info.redis_version.at_least(6, 0) {
        "the target is older than 6.0 (no repl-diskless-load)"
    } else if precheck_failed {
        "the precheck failed"
    } else if info.keyspace.values().any(|&n| n > 0) {
        "the target is not empty"
    } else {
        return None;
    })
}

/// The input's RDB version, if the input is one RDB file the target loads.
fn input_version(name: &str, target_rdb: u32) -> std::result::Result<crate::rdb::Version, String> {
    let input = Input::open(name).map_err(|e| e.to_string())?;
    let Some(data) = input.rdb_bytes().filter(|_| input.kind == Kind::Rdb) else {
        return Err("the input is not an RDB file".into());
    };
    // A newer file is down-converted on the fly (`rdb::reencode`), from RDB 9 on: what the
    // target cannot hold then rules the full sync out key by key as the stream goes.
    let converts = |v: crate::rdb::Version| {
        v.number <= target_rdb || (target_rdb >= 9 && VERSIONS.contains(&target_rdb))
    };
    match RdbReader::new(data, &input.name) {
        Ok(r) if r.version().dialect == Dialect::Redis && converts(r.version()) => Ok(r.version()),
        Ok(r) => Err(format!(
            "the target (RDB {target_rdb}) cannot load a {} file",
            r.version()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Check what only the target can tell: a master, settings readable, no functions, no
/// rdbferry claim left over, every db the input needs.
fn target_facts(
    conn: &mut Conn,
    info: &ServerInfo,
    scan: &Scan,
) -> Result<std::result::Result<Plan, String>> {
    let no = |why: &str| Ok(Err(why.to_string()));
    let Some(local) = conn.local_addr() else {
        return no("not a plain TCP connection");
    };
    let repl = conn.info("replication")?;
    if repl.get("role").is_none_or(|r| r != "master") {
        return no("the target is not a master");
    }
    let (Some(load), Some(auth)) = (
        conn.config_get("repl-diskless-load")?,
        conn.config_get("masterauth")?,
    ) else {
        return no("CONFIG GET repl-diskless-load or masterauth refused");
    };
    if ClaimRecord::decode(&auth).is_some() {
        return no("the target holds an interrupted full sync's settings (rdbferry recover)");
    }
    let dbs: u64 = match conn.config_get("databases")?.and_then(|v| v.parse().ok()) {
        Some(n) => n,
        None => return no("CONFIG GET databases refused"),
    };
    if let Some((&db, _)) = scan.per_db.range(dbs..).next() {
        return Ok(Err(format!(
            "the target has {dbs} databases, the input needs db {db}"
        )));
    }
    if info.rdb_version >= 10 {
        match conn.call(&[b"FUNCTION", b"LIST"])? {
            Reply::Array(a) if a.is_empty() => {}
            Reply::Array(_) => return no("the target has functions"),
            _ => return no("FUNCTION LIST refused"),
        }
    }
    let mut restore = vec![Setting {
        name: "masterauth".into(),
        value: auth,
    }];
    let diskless = load == "disabled";
    if diskless {
        restore.push(Setting {
            name: "repl-diskless-load".into(),
            value: load,
        });
    }
    Ok(Ok(Plan {
        listen_ip: local.ip(),
        target_ip: conn.peer_addr().map(|a| a.ip()),
        restore,
        diskless,
        target_rdb: info.rdb_version,
        pause: info.redis_version.at_least(6, 2),
    }))
}

/// The target while it is our replica: every way out detaches it and puts its settings back
/// ([`Claimed::release`], or `Drop` on a path that forgot).
struct Claimed {
    ctl: Conn,
    restore: Vec<Setting>,
    released: bool,
    /// Keeps the process alive after a signal until the target is put back.
    hold: Option<crate::cancel::Hold>,
}

impl Claimed {
    /// `REPLICAOF NO ONE`, and every setting back (each is tried; the error lists what is
    /// left and how to put it back).
    fn release(&mut self) -> Result<()> {
        self.released = true;
        let _hold = self.hold.take();
        // A replica still taking in an abandoned stream answers LOADING until it notices
        // the end (a moment): wait for it, as long as one reply may take.
        let until = Instant::now() + self.ctl.timeout();
        let mut left: Vec<String> = loop {
            match self.ctl.call_small(&[b"REPLICAOF", b"NO", b"ONE"]) {
                Ok(Reply::Error(e)) if transient_reply(&e) && Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(r) => break r.error_text().map(|e| format!("REPLICAOF NO ONE ({e})")),
                Err(e) => break Some(format!("REPLICAOF NO ONE ({e})")),
            }
        }
        .into_iter()
        .collect();
        if left.is_empty() {
            left.extend(changes::put_back(&mut self.ctl, &self.restore));
        } else {
            // Still a replica: its claim record stays, so that `rdbferry recover` (which
            // knows a stranded target by it) can put it back.
            left.extend(
                self.restore
                    .iter()
                    .map(|s| format!("{} (left as is)", s.name)),
            );
        }
        if left.is_empty() {
            return Ok(());
        }
        Err(Error::target(
            self.ctl.name(),
            format!(
                "could not put the target back: {}; run `rdbferry recover --to URL`",
                left.join(", ")
            ),
        ))
    }

    /// `e`, once the target is put back; if that fails too, the error says so, and how to
    /// put it back (an interrupted run keeps its exit code, and the failure is printed).
    fn release_after(&mut self, e: Error) -> Error {
        let left = match self.release() {
            Ok(()) => return e,
            Err(Error::Target { msg, .. }) => msg,
            Err(other) => other.to_string(),
        };
        if matches!(e, Error::Cancelled) {
            eprintln!("rdbferry: error: {}: {left}", self.ctl.name());
            return e;
        }
        let text = e.to_string();
        let prefix = format!("{}: ", self.ctl.name());
        let text = text.strip_prefix(&prefix).unwrap_or(&text);
        Error::target(self.ctl.name(), format!("{text}; then {left}"))
    }
}

impl Drop for Claimed {
    fn drop(&mut self) {
        if !self.released
            && let Err(e) = self.release()
        {
            eprintln!("rdbferry: error: {e}");
        }
    }
}

/// Import by full sync. `Ok(Err(why))`: not done, and nothing was written (the caller uses
/// commands, or stops with `why`); `Err`: it failed after the target started loading, or was
/// cancelled.
pub(super) fn import(
    inputs: &[String],
    common: &Common,
    opts: &ImportOptions,
    plan: &Plan,
    scan: &Scan,
    start: Instant,
) -> Result<std::result::Result<ImportReport, String>> {
    let input = Input::open(&inputs[0])?;
    let Some(data) = input.rdb_bytes() else {
        return Ok(Err("the input is not an RDB file".into()));
    };
    let version = RdbReader::new(data, &input.name)?.version();
    let (mut claimed, transfer) = match connect(common, opts, plan)? {
        Ok(x) => x,
        Err(why) => return Ok(Err(why)),
    };
    let mut rep = ImportReport {
        target: opts.to.redacted(),
        via: Via::FullSync,
        ..Default::default()
    };
    let sent = match stream(&input, version, common, plan, scan, transfer, &mut rep) {
        Ok(s) => s,
        Err(why) => return give_up(&mut claimed, common, why),
    };
    // A load under way cannot be stopped: it is waited for (with its progress deadline),
    // even after Ctrl-C, and the target is detached after.
    let loaded = wait_loaded(&mut claimed.ctl, &sent.linked);
    let released = match loaded {
        Ok(()) => claimed.release(),
        Err(e) => Err(claimed.release_after(e)),
    };
    drop(sent.linked);
    released?;
    check_counts(&mut claimed.ctl, &sent.per_db)?;
    load_functions(&mut claimed.ctl, &sent.functions, &mut rep)?;
    rep.synced = sent.per_db.values().map(|c| c.0).sum();
    rep.written += rep.synced;
    rep.bytes = data.len() as u64;
    rep.elapsed_s = start.elapsed().as_secs_f64();
    common.cancel.check()?;
    Ok(Ok(rep))
}

/// Listen, claim the target and wait for it to connect: the transfer to it. `Ok(Err(why))`:
/// not connected, and the target as it was (put back if it was claimed).
fn connect(
    common: &Common,
    opts: &ImportOptions,
    plan: &Plan,
) -> Result<std::result::Result<(Claimed, Transfer), String>> {
    // Interrupted before the claim: nothing to put back, so nothing is changed.
    common.cancel.check()?;
    let master = match Master::listen(plan.listen_ip) {
        Ok(m) => m,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let record = ClaimRecord {
        secret: String::from_utf8_lossy(&random_hex40()).into_owned(),
        restore: plan.restore.clone(),
    };
    let masterauth = record.encode();
    let mut claimed = match claim(opts, plan, &masterauth, master.addr(), &common.cancel)? {
        Ok(c) => c,
        Err(why) => return Ok(Err(why)),
    };
    let expect = Expect {
        secret: masterauth.into_bytes(),
        peer_ip: plan.target_ip,
        within: CONNECT_TIMEOUT,
        write_timeout: opts.to.net.timeout,
    };
    match master.accept(&expect, &|| common.cancel.is_cancelled()) {
        Ok(t) => Ok(Ok((claimed, t))),
        Err(e) => Ok(Err(give_up(&mut claimed, common, e.to_string())?
            .err()
            .unwrap_or_default())),
    }
}

/// Make the target our replica, if it is still empty (see the module doc, step 2). Other
/// clients' writes wait meanwhile, so none can slip in between the check and `REPLICAOF`.
fn claim(
    opts: &ImportOptions,
    plan: &Plan,
    masterauth: &str,
    at: std::net::SocketAddr,
    cancel: &crate::cancel::Cancel,
) -> Result<std::result::Result<Claimed, String>> {
    eprintln!(
        "rdbferry: claiming {} for a full sync; if this run is killed, put it back with \
         `rdbferry recover --to {}` (or: REPLICAOF NO ONE; {})",
        opts.to.redacted(),
        opts.to.redacted(),
        changes::commands(&plan.restore)
    );
    let mut ctl = Conn::open(&opts.to)?;
    if !plan.pause {
        return claim_atomic(ctl, plan, masterauth, at, cancel);
    }
    let r = ctl.call_small(&[b"CLIENT", b"PAUSE", b"10000", b"WRITE"])?;
    if let Some(e) = r.error_text() {
        return Ok(Err(format!("CLIENT PAUSE WRITE: {e}")));
    }
    let mut claimed = Claimed {
        ctl,
        restore: plan.restore.clone(),
        // Nothing to put back until the first setting changes.
        released: true,
        hold: Some(cancel.hold()),
    };
    let outcome = claim_paused(&mut claimed, plan, masterauth, at);
    let unpaused = claimed.ctl.call_small(&[b"CLIENT", b"UNPAUSE"]);
    match outcome {
        Ok(Ok(())) => match unpaused {
            Ok(_) => Ok(Ok(claimed)),
            Err(e) => Err(claimed.release_after(e.into())),
        },
        Ok(Err(why)) => {
            claimed.release()?;
            Ok(Err(why))
        }
        Err(e) => Err(claimed.release_after(e)),
    }
}

/// The claim's steps under `CLIENT PAUSE WRITE`.
fn claim_paused(
    claimed: &mut Claimed,
    plan: &Plan,
    masterauth: &str,
    at: std::net::SocketAddr,
) -> Result<std::result::Result<(), String>> {
    let ctl = &mut claimed.ctl;
    if let Some((db, n)) = ctl.keyspace()?.into_iter().next() {
        return Ok(Err(format!("the target is not empty (db{db}: {n} keys)")));
    }
    claimed.released = false;
    if let Err(e) = ctl.config_set("masterauth", masterauth)? {
        return Ok(Err(format!("CONFIG SET masterauth: {e}")));
    }
    if plan.diskless
        && ctl
            .config_set("repl-diskless-load", "on-empty-db")?
            .is_err()
    {
        // Loads through disk then: slower, same result.
        claimed.restore.retain(|s| s.name != "repl-diskless-load");
    }
    let (host, port) = (at.ip().to_string(), at.port().to_string());
    let r = claimed
        .ctl
        .call_small(&[b"REPLICAOF", host.as_bytes(), port.as_bytes()])?;
    Ok(match r.error_text() {
        Some(e) => Err(format!("REPLICAOF: {e}")),
        None => Ok(()),
    })
}

/// The claim of a target without `CLIENT PAUSE WRITE` (6.0): the emptiness check, the
/// settings and `REPLICAOF` in one `MULTI`/`EXEC`, so that no write comes in between. A
/// target found not empty then is detached again and its settings put back; it got nothing
/// (it connects a moment later, and the listener sends only once it is accepted).
fn claim_atomic(
    ctl: Conn,
    plan: &Plan,
    masterauth: &str,
    at: std::net::SocketAddr,
    cancel: &crate::cancel::Cancel,
) -> Result<std::result::Result<Claimed, String>> {
    let mut claimed = Claimed {
        ctl,
        restore: plan.restore.clone(),
        released: true,
        hold: Some(cancel.hold()),
    };
    let (host, port) = (at.ip().to_string(), at.port().to_string());
    let mut steps: Vec<Vec<&[u8]>> = vec![
        vec![b"INFO", b"keyspace"],
        vec![b"CONFIG", b"SET", b"masterauth", masterauth.as_bytes()],
    ];
    if plan.diskless {
        steps.push(vec![
            b"CONFIG",
            b"SET",
            b"repl-diskless-load",
            b"on-empty-db",
        ]);
    }
    steps.push(vec![b"REPLICAOF", host.as_bytes(), port.as_bytes()]);
    let replies = match transaction(&mut claimed.ctl, &steps) {
        Ok(Ok(r)) => r,
        Ok(Err(why)) => return Ok(Err(why)),
        Err(e) => return Err(claimed.release_after(e)),
    };
    claimed.released = false;
    let keyspace = replies
        .first()
        .and_then(|r| r.as_bytes())
        .map(crate::net::info::info_fields)
        .map(|f| crate::net::info::keyspace_of(&f))
        .unwrap_or_default();
    let why = match keyspace.into_iter().next() {
        Some((db, n)) => Some(format!("the target is not empty (db{db}: {n} keys)")),
        None => replies.iter().find_map(|r| r.error_text()),
    };
    match why {
        None => Ok(Ok(claimed)),
        Some(why) => {
            claimed.release()?;
            Ok(Err(why))
        }
    }
}

/// `MULTI`, each of `steps`, `EXEC`: the replies of the steps (`Ok(Err)`: refused).
fn transaction(
    ctl: &mut Conn,
    steps: &[Vec<&[u8]>],
) -> Result<std::result::Result<Vec<Reply>, String>> {
    for step in std::iter::once(&vec![&b"MULTI"[..]]).chain(steps) {
        if let Some(e) = ctl.call_small(step)?.error_text() {
            ctl.call_small(&[b"DISCARD"])?;
            let name = String::from_utf8_lossy(step[0]);
            return Ok(Err(format!("{name} in MULTI: {e}")));
        }
    }
    Ok(match ctl.call_small(&[b"EXEC"])? {
        Reply::Array(a) => Ok(a),
        r => Err(format!(
            "EXEC: {}",
            r.error_text().unwrap_or_else(|| "no reply".into())
        )),
    })
}

/// Detach a target that got no end mark, and make sure it is still empty: then commands can
/// take over (unless the run was cancelled).
fn give_up(
    claimed: &mut Claimed,
    common: &Common,
    why: String,
) -> Result<std::result::Result<ImportReport, String>> {
    claimed.release()?;
    if let Some((db, n)) = claimed.ctl.keyspace()?.into_iter().next() {
        return Err(Error::target(
            claimed.ctl.name(),
            format!(
                "after an abandoned full sync ({why}) the target holds keys (db{db}: {n}); nothing more was written"
            ),
        ));
    }
    common.cancel.check()?;
    Ok(Err(why))
}

struct Sent {
    linked: Linked,
    /// Keys sent per target db: (keys, keys with a TTL).
    per_db: BTreeMap<u64, (u64, u64)>,
    functions: Vec<Vec<u8>>,
}

/// What a worker decided about one key.
enum Prep {
    Filtered,
    Expired,
    /// Goes to target db `db` under `name`, with the checked copy of its value (`None`: a
    /// record over [`COPY_MAX`], checked in place, proven unchanged by `crc` as it is sent).
    Keep {
        db: u64,
        name: Vec<u8>,
        raw: Option<Vec<u8>>,
        crc: u64,
        /// The value's type id as sent (another than the input's when re-encoded).
        type_id: u8,
    },
    /// Rules the full sync out.
    Refuse(String),
}

/// What the workers of [`stream`] need.
struct Ctx<'c> {
    common: &'c Common,
    now: i64,
    /// The version the target loads: values it cannot load as they are are re-encoded.
    target: crate::rdb::Version,
    seen: &'c Seen,
}

fn prepare(k: &KeyRecord<'_>, ctx: &Ctx<'_>) -> Prep {
    let common = ctx.common;
    if !common.map.keep(k.db, &k.key, k.data_type()) {
        return Prep::Filtered;
    }
    if k.expire_ms.is_some_and(|ms| ms <= ctx.now) {
        return Prep::Expired;
    }
    let db = common.map.db(k.db);
    let name = common.map.key(&k.key).into_owned();
    let no = |m: String| Prep::Refuse(format!("key {} (db {}): {m}", show(&name), k.db));
    // The bytes checked are the bytes sent: a copy, or (big records) a CRC of them.
    let copy = (k.raw.len() <= COPY_MAX).then(|| k.raw.to_vec());
    let checked = KeyRecord {
        raw: copy.as_deref().unwrap_or(k.raw),
        ..k.clone()
    };
    let crc = if copy.is_some() {
        0
    } else {
        let mut c = crate::rdb::crc::Crc64::new();
        c.update(k.raw);
        c.value()
    };
    // Checked as the input's version reads it; then re-encoded if the target needs it.
    if let Err(why) = check_value(&checked, k.version.number.max(ctx.target.number)) {
        return no(why);
    }
    let (raw, type_id) = match down_convert(&checked, ctx.target) {
        Ok(None) => (copy, k.type_id),
        Ok(Some((bytes, t))) => (Some(bytes), t),
        Err(why) => return no(why),
    };
    // A loader stops the server on a duplicated key, where RESTORE reports a conflict.
    match ctx.seen.insert(route(db, &name)) {
        Some(false) => {}
        Some(true) => {
            return no("appears twice (or shares its 64-bit hash with another key)".into());
        }
        None => return no("more keys than the scan counted".into()),
    }
    Prep::Keep {
        db,
        name,
        raw,
        crc,
        type_id,
    }
}

/// `k`'s value re-encoded for `target` when the target cannot load it as it is (`None`: sent
/// as it is). `Err`: what the target cannot hold (a stream's lag metadata below RDB 10, a
/// hash field's TTL below 12...), which rules the full sync out.
fn down_convert(
    k: &KeyRecord<'_>,
    target: crate::rdb::Version,
) -> std::result::Result<Option<(Vec<u8>, u8)>, String> {
    use crate::rdb::reencode::{Done, reencode_into};
    if crate::rdb::reencode::loads_as_is(k, target) {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    match reencode_into(k, target, &mut bytes) {
        Ok(Done::Copy) => Ok(None),
        Ok(Done::Written(t)) => Ok(Some((bytes, t))),
        Ok(Done::Lossy(_, why) | Done::Unloadable(why)) => {
            Err(format!("RDB {} cannot hold it: {why}", target.number))
        }
        Err(e) => Err(format!("corrupt value at byte {:#x}: {}", e.offset, e.kind)),
    }
}

/// Stream the input's records to the replica. `Err(why)`: abandoned before the end mark.
fn stream(
    input: &Input,
    version: crate::rdb::Version,
    common: &Common,
    plan: &Plan,
    scan: &Scan,
    transfer: Transfer,
    rep: &mut ImportReport,
) -> std::result::Result<Sent, String> {
    let peer = transfer.peer();
    // A newer input goes as a file of the target's version, its values re-encoded.
    let version = if version.number > plan.target_rdb {
        crate::rdb::reencode::redis(plan.target_rdb)
    } else {
        version
    };
    let mut out = RdbCopy::new(transfer, version).map_err(|e| format!("send to {peer}: {e}"))?;
    let seen = Seen::new(scan.keys());
    let ctx = Ctx {
        common,
        now: now_ms(),
        target: version,
        seen: &seen,
    };
    let mut per_db: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut functions = Vec::new();
    let mut why: Option<String> = None;
    let mut progress = Progress::new(input.size, &input.name, common.quiet);
    let stop = || Error::GivenUp("full sync");
    let walked = batch::walk(
        input,
        common,
        |k| Ok(prepare(k, &ctx)),
        |ev, prep, pos| {
            match (ev, prep) {
                (Event::Rdb(Record::Key(k)), Some(p)) => {
                    progress.tick(pos, 1);
                    rep.keys_read += 1;
                    match p {
                        Prep::Filtered => rep.filtered += 1,
                        Prep::Expired => rep.expired += 1,
                        Prep::Refuse(m) => {
                            why = Some(m);
                            return Err(stop());
                        }
                        Prep::Keep {
                            db,
                            name,
                            raw,
                            crc,
                            type_id,
                        } => {
                            let first = !per_db.contains_key(&db);
                            let c = per_db.entry(db).or_default();
                            c.0 += 1;
                            c.1 += k.expire_ms.is_some() as u64;
                            let hint = first.then(|| scan.per_db.get(&db).copied()).flatten();
                            let sent = out.select_db(db, hint).and_then(|()| match &raw {
                                Some(raw) => out.key_as(k, &name, type_id, raw).map(|()| true),
                                None => out.key_checked(k, &name, crc),
                            });
                            match sent {
                                Ok(true) => {}
                                Ok(false) => {
                                    why = Some(format!(
                                        "{}: the value of key {} changed while it was read",
                                        input.name,
                                        show(&name)
                                    ));
                                    return Err(stop());
                                }
                                Err(e) => {
                                    why = Some(format!("send to {peer}: {e}"));
                                    return Err(stop());
                                }
                            }
                        }
                    }
                }
                (Event::Rdb(Record::Function { code }), _) => functions.push(code.to_vec()),
                (Event::Rdb(Record::ModuleAux { .. }), _) => {
                    why = Some("the input has module data".into());
                    return Err(stop());
                }
                (Event::Command { .. }, _) => {
                    why = Some("the input has AOF commands after its RDB part".into());
                    return Err(stop());
                }
                _ => {}
            }
            Ok(())
        },
    );
    progress.finish();
    if let Err(e) = walked {
        return Err(why.unwrap_or_else(|| e.to_string()));
    }
    let transfer = out.finish().map_err(|e| format!("send to {peer}: {e}"))?;
    let linked = transfer.end().map_err(|e: SyncError| e.to_string())?;
    Ok(Sent {
        linked,
        per_db,
        functions,
    })
}

/// Wait until the target has loaded what it got (its link to us is up), as long as it makes
/// progress: no change in what it reports for `--timeout` is an error naming the target.
fn wait_loaded(ctl: &mut Conn, linked: &Linked) -> Result<()> {
    wait_loaded_with(ctl, linked, &mut || {})
}

/// [`wait_loaded`], calling `tick` between looks (`sync` keeps its own link to the source
/// alive meanwhile).
fn wait_loaded_with(ctl: &mut Conn, linked: &Linked, tick: &mut dyn FnMut()) -> Result<()> {
    let lost = |e: NetError| {
        Error::target(
            e.addr.clone(),
            format!("lost the target while it loaded the full sync: {e}"),
        )
    };
    let stall = ctl.timeout();
    let mut last = (String::new(), Instant::now());
    loop {
        let repl = ctl.info("replication").map_err(lost)?;
        let up = repl.get("master_link_status").is_some_and(|v| v == "up");
        let syncing = repl
            .get("master_sync_in_progress")
            .is_some_and(|v| v == "1");
        if up && !syncing {
            return Ok(());
        }
        if linked.closed() {
            return Err(Error::target(
                ctl.name(),
                "the target dropped the full sync while loading it (see its log); nothing is known to be loaded",
            ));
        }
        let persistence = ctl.info("persistence").map_err(lost)?;
        let mark = [
            repl.get("master_sync_read_bytes"),
            persistence.get("loading_loaded_bytes"),
            persistence.get("loading"),
        ]
        .map(|v| v.map(String::as_str).unwrap_or("-"))
        .join(",");
        if mark != last.0 {
            last = (mark, Instant::now());
        } else if last.1.elapsed() > stall {
            return Err(Error::target(
                ctl.name(),
                format!(
                    "the target made no progress loading the full sync for {} s (--timeout)",
                    stall.as_secs_f64()
                ),
            ));
        }
        tick();
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// After the load: each db holds what was sent, less keys that have expired since.
fn check_counts(ctl: &mut Conn, per_db: &BTreeMap<u64, (u64, u64)>) -> Result<()> {
    let ks = ctl.keyspace()?;
    for (&db, &(keys, ttl)) in per_db {
        let have = ks.get(&db).copied().unwrap_or(0);
        if have > keys || have + ttl < keys {
            return Err(Error::target(
                ctl.name(),
                format!(
                    "after the full sync db {db} holds {have} keys, but {keys} were sent ({ttl} with a TTL)"
                ),
            ));
        }
    }
    Ok(())
}

/// The input's function libraries, with `FUNCTION LOAD` (a bad one is an error naming it,
/// where a loader would stop).
fn load_functions(ctl: &mut Conn, functions: &[Vec<u8>], rep: &mut ImportReport) -> Result<()> {
    let mut local = WriteStats::default();
    for code in functions {
        rep.functions += 1;
        match ctl.call(&[b"FUNCTION", b"LOAD", code])? {
            Reply::Error(e) => refuse(
                &mut local,
                "function library",
                crate::sink::writer::library_name(code),
                0,
                &String::from_utf8_lossy(&e),
            ),
            _ => rep.written += 1,
        }
    }
    rep.errors += local.errors;
    rep.error_messages.extend(local.messages);
    Ok(())
}
