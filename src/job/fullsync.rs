//! `import` by full sync: the target becomes a replica of rdbferry for as long as it takes to
//! load the input, then is detached with its data.
//!
//! Why: a Redis loads an RDB at start-up about twice as fast as it executes one `RESTORE` per
//! key, and a replica loads a full sync with the same loader. For an empty standalone target
//! this is the fastest import there is: rdbferry streams the records it keeps (filters, renames,
//! db mapping and expired keys applied, values copied as raw bytes through
//! [`RdbCopy`]) and the target loads them itself.
//!
//! How, step by step:
//! 1. Whether it may: `--via auto|full-sync`, `--mode auto`, no `--dry-run`, one RDB input
//!    (not an AOF, JSONL or stdin) of a version the target loads, no module data, a plain-TCP
//!    standalone target of Redis 6.2+ (for `CLIENT PAUSE WRITE`) that is a master, with no
//!    functions and every db empty: a full sync replaces everything the target holds, so
//!    anything there rules it out. A failed precheck rules it out too.
//! 2. Claim: `CLIENT PAUSE WRITE` (writes of other clients wait), check every db is empty,
//!    `REPLICAOF <this host> <port>`, `CLIENT UNPAUSE`. Writes that waited are then refused
//!    (`READONLY`), not lost.
//! 3. Stream: `repl-diskless-load` is set to `on-empty-db` for the sync if it was
//!    `disabled`, so the target loads from the socket as the stream arrives instead of writing
//!    it to disk first (it is put back after). The replica connects ([`Master`]); each record
//!    is checked on rayon workers (its value walked whole, its encoding one the target loads)
//!    before a byte of it is written, in file order.
//!    Keys are checked for duplicates against a table of their hashes (a Redis loader aborts
//!    on a duplicated key); its size is fixed from the precheck's count, at most 128 MB.
//! 4. Anything wrong before the end mark (a bad or duplicated key, the replica not
//!    connecting, a refused command): the transfer is abandoned, which leaves the target as it
//!    was (`sink::fullsync` says why: no bad byte was sent, so the loader sees a short read, not
//!    corruption), `REPLICAOF NO ONE`, the target is checked empty, and the import goes on with
//!    commands (`--via auto`), which report bad keys by name as usual; `--via full-sync` stops
//!    instead.
//! 5. After the end mark: wait until the target says its link is up (loaded), `REPLICAOF NO
//!    ONE`, then compare its key counts per db with what was sent, and load the function
//!    libraries with `FUNCTION LOAD` (a bad library is then an error naming it, where a
//!    loader would stop).
//!
//! What it deliberately does not do: Cluster targets (each master would need its slots' part
//! of the file), TLS targets (the replica would connect back with TLS), merging into data the
//! target already has. Those take the command path.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::batch;
use super::import::{
    ImportOptions, ImportReport, Mode, Precheck, apply_rename, min_rdb_version, refuse, route,
};
use super::{Common, modules};
use crate::error::{Error, Result};
use crate::input::{Event, Input, Kind};
use crate::net::Conn;
use crate::progress::Progress;
use crate::rdb::{DataType, Dialect, KeyRecord, RdbReader, Record};
use crate::resp::Reply;
use crate::sink::fullsync::{Linked, Master, Transfer};
use crate::sink::rdb::RdbCopy;
use crate::sink::stats::now_ms;
use crate::sink::writer::WriteStats;
use crate::text::quoted as show;

/// `--via`: how `import` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// Full sync when the target and input allow it, else commands.
    Auto,
    /// Full sync, or an error saying why not.
    FullSync,
    /// Commands (`RESTORE`, rewrite), always.
    Commands,
}

/// How long the target has to connect to us after `REPLICAOF`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Import by full sync. `Ok(Err(why))`: not done, and nothing was written (the caller uses
/// commands, or stops with `why`); `Err`: it failed after the target started loading.
pub(super) fn import(
    inputs: &[String],
    common: &Common,
    opts: &ImportOptions,
    pre: &Precheck,
    start: Instant,
) -> Result<std::result::Result<ImportReport, String>> {
    if let Some(why) = precondition(inputs, opts, pre) {
        return Ok(Err(why));
    }
    // `precondition` made sure: one RDB file, of a version the target loads.
    let input = Input::open(&inputs[0])?;
    let Some(data) = input.rdb_bytes() else {
        return Ok(Err("the input is not an RDB file".into()));
    };
    let target_rdb = pre.info.as_ref().map(|i| i.rdb_version).unwrap_or(0);
    let version = RdbReader::new(data, &input.name)?.version();
    let mut ctl = Conn::open(&opts.to)?;
    let (ip, load_setting) = match target_facts(&mut ctl, pre) {
        Ok(x) => x,
        Err(why) => return Ok(Err(why)),
    };
    let master = match Master::listen(ip) {
        Ok(m) => m,
        Err(e) => return Ok(Err(e.to_string())),
    };
    // From the claim on, Ctrl-C (or SIGTERM, SIGHUP) must not leave the target a replica of
    // nobody: it detaches it first (see `interrupt`).
    let _armed = interrupt::arm();
    if let Err(why) = claim(&mut ctl, master.addr())? {
        return Ok(Err(why));
    }
    // The target is now our replica: every way out below detaches it (and puts back
    // repl-diskless-load if it was changed).
    let restore = diskless(&mut ctl, &load_setting)?;
    let restore = restore.as_deref();
    let transfer = match master.accept(CONNECT_TIMEOUT, &interrupt::hit) {
        Ok(t) => t,
        Err(e) => return interrupted(release(&mut ctl, e.to_string(), restore)),
    };
    let mut rep = ImportReport {
        target: opts.to.redacted(),
        via: "full-sync".into(),
        ..Default::default()
    };
    let sent = match stream(
        &input, version, common, opts, pre, target_rdb, transfer, &mut rep,
    ) {
        Ok(s) => s,
        Err(why) => return interrupted(release(&mut ctl, why, restore)),
    };
    let Sent {
        linked,
        per_db,
        functions,
    } = sent;
    let loaded = wait_loaded(&mut ctl, &linked);
    let detached = detach(&mut ctl, restore);
    drop(linked);
    loaded?;
    detached?;
    check_counts(&mut ctl, &per_db)?;
    let mut local = WriteStats::default();
    for code in &functions {
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
    rep.errors = local.errors;
    rep.error_messages = local.messages;
    rep.synced = per_db.values().map(|c| c.0).sum();
    rep.written += rep.synced;
    rep.bytes = data.len() as u64;
    rep.elapsed_s = start.elapsed().as_secs_f64();
    Ok(Ok(rep))
}

/// After an interruption the import stops, rather than go on with commands.
fn interrupted(
    r: Result<std::result::Result<ImportReport, String>>,
) -> Result<std::result::Result<ImportReport, String>> {
    match r {
        Ok(Err(_)) if interrupt::hit() => Err(Error::Usage(
            "interrupted: the full sync was abandoned and the target detached, empty as before"
                .into(),
        )),
        r => r,
    }
}

/// Signals while the target is our replica. A replica whose master is gone stays read-only
/// and keeps reconnecting forever, so the first Ctrl-C, SIGTERM or SIGHUP only asks the full
/// sync to stop: the stream is abandoned and the target detached (a load under way cannot
/// be stopped: it is waited for, then the target is detached). A second one exits at once.
/// Outside a full sync a signal exits as it would without the handler.
mod interrupt {
    use std::sync::Once;
    use std::sync::atomic::{AtomicBool, Ordering};

    static ARMED: AtomicBool = AtomicBool::new(false);
    static HIT: AtomicBool = AtomicBool::new(false);
    static INSTALL: Once = Once::new();

    /// Disarms when dropped.
    pub struct Armed;

    impl Drop for Armed {
        fn drop(&mut self) {
            ARMED.store(false, Ordering::SeqCst);
        }
    }

    pub fn arm() -> Armed {
        INSTALL.call_once(|| {
            // If another handler is installed already, it keeps its behaviour.
            let _ = ctrlc::set_handler(|| {
                if ARMED.load(Ordering::SeqCst) && !HIT.swap(true, Ordering::SeqCst) {
                    eprintln!(
                        "rdbferry: interrupted: detaching the target from the full sync first (again to quit at once)"
                    );
                } else {
                    std::process::exit(130);
                }
            });
        });
        ARMED.store(true, Ordering::SeqCst);
        Armed
    }

    /// Whether a stop was asked for.
    pub fn hit() -> bool {
        HIT.load(Ordering::SeqCst)
    }
}

/// Why the inputs, options or precheck rule a full sync out, if they do.
pub(super) fn precondition(
    inputs: &[String],
    opts: &ImportOptions,
    pre: &Precheck,
) -> Option<String> {
    let Some(info) = pre.info.as_ref() else {
        return Some("the target was not queried".into());
    };
    let why = if opts.dry_run {
        "--dry-run"
    } else if opts.mode != Mode::Auto {
        "--mode restore|rewrite asks for commands"
    } else if inputs.len() != 1 {
        "more than one input"
    } else if opts.to.tls_config().ok().flatten().is_some() {
        "a TLS target"
    } else if info.cluster {
        "a Cluster target"
    } else if !crate::job::import::version_at_least(&info.version, 6, 2) {
        "the target is older than 6.2 (no CLIENT PAUSE WRITE)"
    } else if pre
        .checks
        .iter()
        .any(|c| c.status == super::import::Status::Fail && c.check != "via")
    {
        "the precheck failed"
    } else if pre
        .checks
        .iter()
        .any(|c| c.check == "empty" && c.status != super::import::Status::Ok)
    {
        "the target is not empty"
    } else if !pre.scan.scanned() {
        "standard input"
    } else if pre.scan.has_modules() {
        "the input has module data"
    } else if !Seen::fits(pre.scan.keys()) {
        "too many keys to rule out duplicates in bounded memory"
    } else {
        let input = match Input::open(&inputs[0]) {
            Ok(i) => i,
            Err(e) => return Some(e.to_string()),
        };
        let Some(data) = input.rdb_bytes().filter(|_| input.kind == Kind::Rdb) else {
            return Some("the input is not an RDB file".into());
        };
        return match RdbReader::new(data, &input.name) {
            Ok(r)
                if r.version().dialect == Dialect::Redis
                    && r.version().number <= info.rdb_version =>
            {
                None
            }
            Ok(r) => Some(format!(
                "the target (RDB {}) cannot load a {} file",
                info.rdb_version,
                r.version()
            )),
            Err(e) => Some(e.to_string()),
        };
    };
    Some(why.into())
}

/// Check what only the target can tell; returns the address it reaches us at and its
/// `repl-diskless-load`.
fn target_facts(
    ctl: &mut Conn,
    pre: &Precheck,
) -> std::result::Result<(std::net::IpAddr, String), String> {
    let e = |e: crate::net::NetError| e.to_string();
    let ip = ctl
        .local_addr()
        .map(|a| a.ip())
        .ok_or("not a plain TCP connection")?;
    let repl = ctl.info("replication").map_err(e)?;
    if repl.get("role").is_none_or(|r| r != "master") {
        return Err("the target is not a master".into());
    }
    let load_setting = ctl
        .config_get("repl-diskless-load")
        .map_err(e)?
        .ok_or("CONFIG GET repl-diskless-load refused")?;
    let dbs: u64 = ctl
        .config_get("databases")
        .map_err(e)?
        .and_then(|v| v.parse().ok())
        .ok_or("CONFIG GET databases refused")?;
    if let Some((&db, _)) = pre.scan.per_db.range(dbs..).next() {
        return Err(format!(
            "the target has {dbs} databases, the input needs db {db}"
        ));
    }
    if pre.target_rdb_version >= 10 {
        match ctl.call(&[b"FUNCTION", b"LIST"]).map_err(e)? {
            Reply::Array(a) if a.is_empty() => {}
            Reply::Array(_) => return Err("the target has functions".into()),
            _ => return Err("FUNCTION LIST refused".into()),
        }
    }
    Ok((ip, load_setting))
}

/// A replica with `repl-diskless-load disabled` writes the whole stream to disk (and fsyncs
/// it) before it starts loading; `on-empty-db` loads from the socket as it arrives, so the
/// transfer and the load overlap. The target is empty (checked under the pause), so it is
/// set for the sync; the returned value is what to put back after.
fn diskless(ctl: &mut Conn, setting: &str) -> Result<Option<String>> {
    if setting != "disabled" {
        return Ok(None);
    }
    let set = ctl.config_set("repl-diskless-load", "on-empty-db")?;
    Ok(set.is_ok().then(|| setting.to_string()))
}

/// Make the target our replica, if it is still empty. Other clients' writes wait meanwhile,
/// so none can slip in between the check and `REPLICAOF` (and be flushed by the sync).
fn claim(ctl: &mut Conn, at: std::net::SocketAddr) -> Result<std::result::Result<(), String>> {
    let r = ctl.call(&[b"CLIENT", b"PAUSE", b"10000", b"WRITE"])?;
    if let Some(e) = r.error_text() {
        return Ok(Err(format!("CLIENT PAUSE WRITE: {e}")));
    }
    let outcome = (|| -> Result<std::result::Result<(), String>> {
        if let Some((db, n)) = ctl.keyspace()?.into_iter().next() {
            return Ok(Err(format!("the target is not empty (db{db}: {n} keys)")));
        }
        let (host, port) = (at.ip().to_string(), at.port().to_string());
        let r = ctl.call(&[b"REPLICAOF", host.as_bytes(), port.as_bytes()])?;
        Ok(match r.error_text() {
            Some(e) => Err(format!("REPLICAOF: {e}")),
            None => Ok(()),
        })
    })();
    let unpaused = ctl.call(&[b"CLIENT", b"UNPAUSE"]);
    let outcome = outcome?;
    if outcome.is_ok()
        && let Err(e) = unpaused
    {
        let _ = detach(ctl, None);
        return Err(e.into());
    }
    Ok(outcome)
}

/// `REPLICAOF NO ONE`, and `repl-diskless-load` back to `restore` if it was changed.
fn detach(ctl: &mut Conn, restore: Option<&str>) -> Result<()> {
    let r = ctl.call(&[b"REPLICAOF", b"NO", b"ONE"])?;
    if let Some(e) = r.error_text() {
        return Err(Error::target(ctl.name(), format!("REPLICAOF NO ONE: {e}")));
    }
    if let Some(v) = restore
        && let Err(e) = ctl.config_set("repl-diskless-load", v)?
    {
        return Err(Error::target(
            ctl.name(),
            format!("CONFIG SET repl-diskless-load {v}: {e}"),
        ));
    }
    Ok(())
}

/// Detach a target that got no end mark, and make sure it is still empty: then commands can
/// take over.
fn release(
    ctl: &mut Conn,
    why: String,
    restore: Option<&str>,
) -> Result<std::result::Result<ImportReport, String>> {
    detach(ctl, restore)?;
    if let Some((db, n)) = ctl.keyspace()?.into_iter().next() {
        return Err(Error::target(
            ctl.name(),
            format!(
                "after an abandoned full sync ({why}) the target holds keys (db{db}: {n}); nothing more was written"
            ),
        ));
    }
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
    /// Sent to target db `db`, renamed to `renamed` if so.
    Keep {
        db: u64,
        renamed: Option<Vec<u8>>,
    },
    /// Rules the full sync out.
    Refuse(String),
}

fn prepare(
    k: &KeyRecord<'_>,
    common: &Common,
    opts: &ImportOptions,
    now: i64,
    target_rdb: u32,
    seen: &Seen,
) -> Prep {
    if !common.filter.keep(k.db, &k.key, k.data_type()) {
        return Prep::Filtered;
    }
    if k.expire_ms.is_some_and(|ms| ms <= now) {
        return Prep::Expired;
    }
    let db = opts.target_db(k.db);
    let name = apply_rename(&opts.rename, &k.key);
    let no = |m: String| Prep::Refuse(format!("key {} (db {}): {m}", show(&name), k.db));
    if modules::module_type(k).is_some() {
        return no("module value".into());
    }
    if min_rdb_version(k.type_id, k.version.dialect).is_none_or(|v| v > target_rdb) {
        return no(format!("type {} is unknown to the target", k.type_id));
    }
    // A loader stops the server on a malformed value, where RESTORE only refuses it: walk
    // every value whole first. An empty collection is dropped by a loader (the counts would
    // not match): leave such files to commands too.
    let elements = match k.validate() {
        Err(e) => return no(format!("corrupt value at byte {:#x}: {}", e.offset, e.kind)),
        Ok(0) if !matches!(k.data_type(), DataType::Stream | DataType::String) => {
            return no("empty collection".into());
        }
        Ok(n) => n,
    };
    if let Some(what) = duplicate_member(k, elements) {
        return no(format!("{what} appears twice in the value"));
    }
    if let Some(why) = zipmap_header(k) {
        return no(why.into());
    }
    // A loader stops the server on a duplicated key, where RESTORE reports a conflict.
    match seen.insert(route(db, &name)) {
        Some(false) => {}
        Some(true) => {
            return no("appears twice (or shares its 64-bit hash with another key)".into());
        }
        None => return no("more keys than the scan counted".into()),
    }
    let renamed = match name {
        std::borrow::Cow::Owned(v) => Some(v),
        std::borrow::Cow::Borrowed(_) => None,
    };
    Prep::Keep { db, renamed }
}

/// Whether a set, sorted set or hash has a member (or field) twice, in any encoding: a loader
/// stops the server on that ("Duplicate set members detected"; Redis 7.0 also checks old
/// ziplist zsets and hashes this way, and asserts when it converts a compact value with a
/// repeated member to a hash table), where `RESTORE` only refuses the payload. Members are
/// compared by a
/// 64-bit hash in an open-addressing table reused per thread (these are the biggest values,
/// so this is on the hot path): two different members that collide only send the import to
/// commands, never a wrong result.
fn duplicate_member(k: &KeyRecord<'_>, elements: u64) -> Option<&'static str> {
    use crate::rdb::Elem;
    let Ok(crate::rdb::Value::Coll(c)) = k.value() else {
        return None;
    };
    let (step, what) = match k.data_type() {
        DataType::Set => (1, "a member"),
        DataType::ZSet => (2, "a member"),
        DataType::Hash if c.has_field_ttls() => (3, "a field"),
        DataType::Hash => (2, "a field"),
        _ => return None,
    };
    thread_local! {
        static TABLE: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    TABLE.with_borrow_mut(|t| {
        // `elements` counts members (tuples), not elements; it is only a size hint: the
        // table doubles whenever it is half full, so probing always finds a free slot.
        let mut set = MemberSet::new(t, elements);
        for (i, e) in c.elements().enumerate() {
            if i % step != 0 {
                continue;
            }
            // A bad element was refused by the validation already.
            let h = match e.ok()? {
                Elem::Bytes(b) => crate::hash::hash64(&b),
                Elem::Int(n) => crate::hash::hash64(itoa::Buffer::new().format(n).as_bytes()),
                other => crate::hash::hash64(&other.to_bytes()),
            };
            if set.insert(h) {
                return Some(what);
            }
        }
        None
    })
}

/// An open-addressing set of 64-bit member hashes over a reused buffer, kept at most half
/// full (it doubles and rehashes), so a probe always ends.
struct MemberSet<'t> {
    t: &'t mut Vec<u64>,
    len: usize,
}

/// A table grown for a huge value is not kept for the next one (8 MB at most stays).
impl Drop for MemberSet<'_> {
    fn drop(&mut self) {
        if self.t.len() > 1 << 20 {
            *self.t = Vec::new();
        }
    }
}

impl<'t> MemberSet<'t> {
    fn new(t: &'t mut Vec<u64>, hint: u64) -> MemberSet<'t> {
        let cap = (usize::try_from(hint)
            .unwrap_or(usize::MAX)
            .clamp(8, 1 << 24)
            * 2)
        .next_power_of_two();
        t.clear();
        t.resize(cap, 0);
        MemberSet { t, len: 0 }
    }

    /// Add `h`; whether it was there already.
    fn insert(&mut self, h: u64) -> bool {
        let h = h.max(1); // 0 marks a free slot
        if (self.len + 1) * 2 > self.t.len() {
            self.grow();
        }
        let mask = self.t.len() - 1;
        let mut j = h as usize & mask;
        loop {
            match self.t[j] {
                0 => {
                    self.t[j] = h;
                    self.len += 1;
                    return false;
                }
                x if x == h => return true,
                _ => j = (j + 1) & mask,
            }
        }
    }

    fn grow(&mut self) {
        let old = std::mem::take(&mut *self.t);
        self.t.resize(old.len() * 2, 0);
        self.len = 0;
        for h in old.into_iter().filter(|&h| h != 0) {
            self.insert(h);
        }
    }
}

/// Redis checks a zipmap (RDB 2-3 hashes) deeply at load: its first byte must be its entry
/// count, or 254 for "count it" (Redis 7.0 `zipmapValidateIntegrity`; anything else stops a
/// loading server).
fn zipmap_header(k: &KeyRecord<'_>) -> Option<&'static str> {
    if k.type_id != crate::rdb::types::type_id::HASH_ZIPMAP {
        return None;
    }
    let mut cur = crate::rdb::cursor::Cursor::new(k.raw, k.value_offset);
    let Ok(blob) = cur.string() else {
        return Some("unreadable zipmap");
    };
    let pairs = match k.value() {
        Ok(crate::rdb::Value::Coll(c)) => c.elements().count() / 2,
        _ => return Some("unreadable zipmap"),
    };
    match blob.first() {
        Some(254) => None,
        Some(&n) if usize::from(n) == pairs => None,
        _ => Some("zipmap header count does not match its entries"),
    }
}

/// The (db, name) hashes of the keys sent so far: an open-addressing table of 64-bit hashes
/// that rayon workers fill concurrently (a compare-and-swap per key). Sized once from the
/// scan's key count, at most [`SEEN_MAX_BYTES`]. Two different keys with the same 64-bit hash
/// look like a duplicate: the full sync is then given up for commands, never wrong, only
/// slower, and about once in 10^7 imports of 2 million keys.
struct Seen {
    slots: Vec<std::sync::atomic::AtomicU64>,
}

/// The most memory [`Seen`] may take (about 12 million keys); bigger inputs use commands.
const SEEN_MAX_BYTES: u64 = 128 << 20;
/// Slots per key.
const SEEN_SLACK: f64 = 1.3;

impl Seen {
    fn new(keys: u64) -> Seen {
        let n = ((keys as f64 * SEEN_SLACK) as usize).max(1024);
        Seen {
            slots: (0..n)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
        }
    }
    fn fits(keys: u64) -> bool {
        (keys as f64 * SEEN_SLACK * 8.0) as u64 <= SEEN_MAX_BYTES
    }
    /// Add `h`; whether it was there already. `None`: the table is full (the scan's count
    /// was short, as when the file changed since).
    fn insert(&self, h: u64) -> Option<bool> {
        use std::sync::atomic::Ordering;
        let h = h.max(1); // 0 marks a free slot
        let n = self.slots.len();
        let mut i = ((h as u128 * n as u128) >> 64) as usize;
        for _ in 0..n {
            match self.slots[i].compare_exchange(0, h, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(false),
                Err(v) if v == h => return Some(true),
                Err(_) => i = if i + 1 == n { 0 } else { i + 1 },
            }
        }
        None
    }
}

/// Stream the input's records to the replica. `Err(why)`: abandoned before the end mark.
#[allow(clippy::too_many_arguments)]
fn stream(
    input: &Input,
    version: crate::rdb::Version,
    common: &Common,
    opts: &ImportOptions,
    pre: &Precheck,
    target_rdb: u32,
    transfer: Transfer,
    rep: &mut ImportReport,
) -> std::result::Result<Sent, String> {
    let peer = transfer.peer();
    let mut out = RdbCopy::new(transfer, version).map_err(|e| format!("send to {peer}: {e}"))?;
    let now = now_ms();
    let seen = Seen::new(pre.scan.keys());
    let mut per_db: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut functions = Vec::new();
    let mut why: Option<String> = None;
    let mut progress = Progress::new(input.size, &input.name, common.quiet);
    let stop = || Error::Usage("full sync abandoned".into());
    let walked = batch::walk(
        input,
        &common.read,
        |k| Ok(prepare(k, common, opts, now, target_rdb, &seen)),
        |ev, prep, pos| {
            match (ev, prep) {
                (Event::Rdb(Record::Key(k)), Some(p)) => {
                    if interrupt::hit() {
                        why = Some("interrupted".into());
                        return Err(stop());
                    }
                    progress.tick(pos, 1);
                    rep.keys_read += 1;
                    match p {
                        Prep::Filtered => rep.filtered += 1,
                        Prep::Expired => rep.expired += 1,
                        Prep::Refuse(m) => {
                            why = Some(m);
                            return Err(stop());
                        }
                        Prep::Keep { db, renamed } => {
                            let name = renamed.as_deref().unwrap_or(&k.key);
                            let first = !per_db.contains_key(&db);
                            let c = per_db.entry(db).or_default();
                            c.0 += 1;
                            c.1 += k.expire_ms.is_some() as u64;
                            let hint = first.then(|| pre.scan.per_db.get(&db).copied()).flatten();
                            out.select_db(db, hint)
                                .and_then(|()| out.key(k, name))
                                .map_err(|e| Error::Target {
                                    target: peer.to_string(),
                                    msg: format!("full sync: {e}"),
                                })?;
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
    let linked = transfer.end().map_err(|e| e.to_string())?;
    Ok(Sent {
        linked,
        per_db,
        functions,
    })
}

/// Wait until the target has loaded what it got: its link to us is up.
fn wait_loaded(ctl: &mut Conn, linked: &Linked) -> Result<()> {
    loop {
        let repl = ctl.info("replication").map_err(|e| {
            Error::target(
                ctl.name(),
                format!("lost the target while it loaded the full sync: {e}"),
            )
        })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 8, 1: every size, around each power of two included, ends and tells repeats.
    #[test]
    fn issue8_member_set_never_fills_up() {
        let mut buf = Vec::new();
        for n in (1..=2100u64).chain((3..=17).flat_map(|k| [(1 << k) - 1, 1 << k, (1 << k) + 1])) {
            for hint in [0, n / 3, n, n * 2] {
                let mut set = MemberSet::new(&mut buf, hint);
                for i in 0..n {
                    assert!(
                        !set.insert(crate::hash::hash64(&i.to_le_bytes())),
                        "{n}/{hint}"
                    );
                }
                assert!(set.insert(crate::hash::hash64(&(n / 2).to_le_bytes())));
            }
        }
    }

    #[test]
    fn seen_tells_repeats_and_fills_up() {
        let s = Seen::new(1000);
        for i in 0..1000u64 {
            assert_eq!(
                s.insert(route(0, format!("key:{i}").as_bytes())),
                Some(false)
            );
        }
        assert_eq!(s.insert(route(0, b"key:42")), Some(true));
        assert_eq!(s.insert(route(1, b"key:42")), Some(false));
        assert_eq!(s.insert(0), Some(false));
        assert_eq!(s.insert(0), Some(true));
        let full = Seen::new(0);
        for i in 0..1024u64 {
            assert_eq!(full.insert(i + 1), Some(false));
        }
        assert_eq!(full.insert(5000), None);
        assert!(Seen::fits(10_000_000) && !Seen::fits(20_000_000));
    }
}
