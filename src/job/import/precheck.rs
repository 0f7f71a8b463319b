//! The precheck: connect to the target and check it against the inputs (version, dbs,
//! emptiness, memory, `proto-max-bulk-len`, modules, Cluster slots, and which way the
//! import will go), as a table of rows; a failed row stops the import unless `--force`.

use serde::Serialize;

use super::fullsync::{self, Via};
use super::modules::{RowStatus, TargetModules};
use super::options::*;
use super::scan::*;
use crate::error::Result;
use crate::job::Common;
use crate::job::changes;
use crate::net::cluster::{SlotMap, show_ranges};
use crate::net::{Conn, RedisUrl, ServerInfo as TargetInfo};
use crate::text::quoted as show;

/// Status of one precheck row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Worth knowing; does not stop the import.
    Warn,
    /// Stops the import unless `--force`.
    Fail,
}

/// One precheck row.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub check: String,
    /// Outcome.
    pub status: Status,
    /// Details.
    pub detail: String,
}

/// The precheck: the target's facts and the rows.
#[derive(Debug, Clone, Serialize)]
pub struct Precheck {
    /// Rows, in order.
    pub checks: Vec<Check>,
    /// Target version (empty when unreachable).
    pub target_version: String,
    /// Target RDB version.
    pub target_rdb_version: u32,
    #[serde(skip)]
    pub(crate) info: Option<TargetInfo>,
    /// What `MODULE LIST` said on each node, for refusing module keys at import time.
    #[serde(skip)]
    pub(crate) modules: TargetModules,
    /// What the scan of the inputs found (for the full sync's sizing hints).
    #[serde(skip)]
    pub(crate) scan: Scan,
    /// Whether the full sync may be used (`fullsync::decide`): the run follows it.
    #[serde(skip)]
    pub(crate) full_sync: std::result::Result<fullsync::Plan, String>,
}

impl Precheck {
    /// Whether any row failed.
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }

    /// The rows as a text table.
    pub fn to_table(&self) -> String {
        let w = self
            .checks
            .iter()
            .map(|c| c.check.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut s = format!("{:<w$}  {:<6}  detail\n", "check", "status");
        for c in &self.checks {
            let st = match c.status {
                Status::Ok => "ok",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            s += &format!("{:<w$}  {:<6}  {}\n", c.check, st, c.detail);
        }
        s
    }
}

pub(crate) fn row(check: &str, status: Status, detail: String) -> Check {
    Check {
        check: check.into(),
        status,
        detail,
    }
}

pub(crate) fn mb(n: u64) -> String {
    format!("{:.1} MB", n as f64 / 1e6)
}

pub(crate) fn conflict_rule(c: OnConflict) -> &'static str {
    match c {
        OnConflict::Fail => "fail",
        OnConflict::Replace => "replace",
        OnConflict::Skip => "skip",
    }
}

/// The "empty" row from the non-empty dbs found (`db0: 12 keys`, ...).
pub(crate) fn empty_row(busy: &[String], opts: &ImportOptions) -> Check {
    if busy.is_empty() {
        return row(
            "empty",
            Status::Ok,
            "the target dbs written to are empty".into(),
        );
    }
    row(
        "empty",
        if opts.on_conflict == OnConflict::Fail {
            Status::Fail
        } else {
            Status::Warn
        },
        format!(
            "{} (--on-conflict {})",
            busy.join(", "),
            conflict_rule(opts.on_conflict)
        ),
    )
}

/// Whether `input` bytes fit in what `maxmemory` leaves free; `None` when CONFIG GET was
/// refused or there is no limit.
pub(crate) fn memory_fits(maxmemory: Option<u64>, used: u64, input: u64) -> Option<(bool, String)> {
    let m = maxmemory.filter(|&m| m > 0)?;
    let free = m.saturating_sub(used);
    Some((
        input <= free,
        format!("input {} vs {} free of {}", mb(input), mb(free), mb(m)),
    ))
}

/// The rows of a standalone target: its dbs written to are empty, and the input fits in
/// `maxmemory`.
pub(crate) fn standalone_data_rows(
    conn: &mut Conn,
    info: &TargetInfo,
    opts: &ImportOptions,
    sc: &Scan,
) -> Result<Vec<Check>> {
    let dbs: Vec<u64> = if sc.scanned {
        sc.dbs.iter().copied().collect()
    } else {
        info.keyspace.keys().copied().collect()
    };
    // DBSIZE per db written to (INFO keyspace may be refused, and leaves out empty dbs).
    let mut busy = Vec::new();
    for &db in &dbs {
        let n = conn.dbsize(db)?;
        if n > 0 {
            busy.push(format!("db{db}: {n} keys"));
        }
    }
    let memory = match info.maxmemory {
        None => row(
            "maxmemory",
            Status::Warn,
            "CONFIG GET refused: not checked".into(),
        ),
        Some(0) => row("maxmemory", Status::Ok, "no limit".into()),
        Some(_) => match memory_fits(info.maxmemory, info.used_memory, sc.bytes) {
            Some((fits, detail)) => row(
                "maxmemory",
                if fits { Status::Ok } else { Status::Fail },
                detail,
            ),
            None => row("maxmemory", Status::Ok, "no limit".into()),
        },
    };
    Ok(vec![empty_row(&busy, opts), memory])
}

/// The rows that only a Cluster has: its masters, and every slot served.
pub(crate) fn cluster_rows(map: &SlotMap) -> Vec<Check> {
    let masters: Vec<String> = map.masters().iter().map(|m| m.to_string()).collect();
    let uncovered = map.uncovered();
    let slots = if uncovered.is_empty() {
        row(
            "slots covered",
            Status::Ok,
            format!("all {} slots have a master", crate::keyslot::SLOTS),
        )
    } else {
        let n: u32 = uncovered.iter().map(|&(a, b)| u32::from(b - a) + 1).sum();
        row(
            "slots covered",
            Status::Fail,
            format!(
                "{n} slots have no master (a write there fails with CLUSTERDOWN): {}",
                show_ranges(&uncovered)
            ),
        )
    };
    vec![
        row(
            "cluster",
            Status::Ok,
            format!("{} masters: {}", masters.len(), masters.join(", ")),
        ),
        slots,
    ]
}

/// The data rows of a Cluster: only db 0 exists (every input db must map there), every
/// master is empty, and each master's share of the input (by the slots it owns) fits in its
/// `maxmemory`.
pub(crate) fn cluster_data_rows(
    map: &SlotMap,
    opts: &ImportOptions,
    sc: &Scan,
) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    let other: Vec<String> = sc
        .db_pairs
        .iter()
        .filter(|(_, to)| *to != 0)
        .map(|(from, to)| {
            if from == to {
                format!("db{from}")
            } else {
                format!("db{from} (mapped to db{to})")
            }
        })
        .collect();
    checks.push(if !sc.scanned {
        row(
            "dbs",
            Status::Warn,
            "standard input is not scanned: keys of dbs other than 0 will be refused".into(),
        )
    } else if other.is_empty() {
        row("dbs", Status::Ok, "every key goes to db 0".into())
    } else {
        let first = sc.db_pairs.iter().find(|(_, to)| *to != 0).map(|p| p.0);
        row(
            "dbs",
            Status::Fail,
            format!(
                "a Cluster has only db 0, but the input has keys of {}: map them with --db-map {}=0",
                other.join(", "),
                first.unwrap_or(0)
            ),
        )
    });
    let mut busy = Vec::new();
    let mut keys = 0u64;
    let mut memory = Vec::new();
    let (mut refused, mut over) = (false, false);
    for (i, m) in map.masters().iter().enumerate() {
        let mut c = Conn::open(&m.url(&opts.to))?;
        let n = c.dbsize(0)?;
        if n > 0 {
            keys += n;
            busy.push(format!("{m}: {n}"));
        }
        let info = TargetInfo::query(&mut c)?;
        let owned = (0..crate::keyslot::SLOTS)
            .filter(|&s| map.owner(s) == Some(i))
            .count() as u64;
        let share = sc.bytes * owned / u64::from(crate::keyslot::SLOTS);
        match (
            info.maxmemory,
            memory_fits(info.maxmemory, info.used_memory, share),
        ) {
            (None, _) => refused = true,
            (_, Some((fits, detail))) => {
                over |= !fits;
                memory.push(format!("{m}: {detail}"));
            }
            (Some(_), None) => {}
        }
    }
    let busy = if busy.is_empty() {
        busy
    } else {
        vec![format!(
            "db0: {keys} keys over {} masters ({})",
            busy.len(),
            busy.join(", ")
        )]
    };
    checks.push(empty_row(&busy, opts));
    checks.push(if refused {
        row(
            "maxmemory",
            Status::Warn,
            "CONFIG GET refused: not checked".into(),
        )
    } else if memory.is_empty() {
        row("maxmemory", Status::Ok, "no limit on any master".into())
    } else {
        row(
            "maxmemory",
            if over { Status::Fail } else { Status::Ok },
            format!(
                "input share per master (by slots owned): {}",
                memory.join("; ")
            ),
        )
    });
    Ok(checks)
}

/// The precheck of `sync`'s snapshot, which the target may load itself as rdbferry's replica
/// (`fullsync::relay`): the target's rows as for a stream, and the `via` row of that
/// decision.
pub fn precheck_relay(
    opts: &ImportOptions,
    map: &crate::transform::KeyMap,
    source: &fullsync::relay::SourceFacts,
) -> Result<Precheck> {
    let commands = ImportOptions {
        via: Via::Commands,
        ..opts.clone()
    };
    let mut pre = precheck_stream(&commands)?;
    pre.checks.retain(|c| c.check != "via");
    let info = pre.info.clone().unwrap_or_default();
    let mut conn = Conn::open(&opts.to)?;
    pre.full_sync = fullsync::relay::decide(opts, map, source, &info, pre.failed(), &mut conn)?;
    pre.checks
        .push(via_row(opts.via, &pre.full_sync, "the source's snapshot"));
    Ok(pre)
}

/// Connect to the target and check it against the inputs (see the module doc). An
/// unreachable target or a refused password is an error, not a row.
pub fn precheck(inputs: &[String], common: &Common, opts: &ImportOptions) -> Result<Precheck> {
    prechecked(inputs, opts, |info| {
        scan(inputs, common, opts, info.rdb_version)
    })
}

/// The precheck of an input that cannot be scanned before it is imported (a stream: `sync`
/// imports a snapshot as it arrives): the target's rows only, as for standard input.
pub fn precheck_stream(opts: &ImportOptions) -> Result<Precheck> {
    prechecked(&[], opts, |_| Ok(Scan::default()))
}

/// The precheck, with the scan of the inputs `scan` makes once the target is known.
fn prechecked(
    inputs: &[String],
    opts: &ImportOptions,
    scan: impl FnOnce(&TargetInfo) -> Result<Scan>,
) -> Result<Precheck> {
    let mut conn = Conn::open(&opts.to)?;
    let info = TargetInfo::query(&mut conn)?;
    let mut checks = vec![row(
        "connect",
        Status::Ok,
        format!(
            "{} ({}authenticated)",
            opts.to.redacted(),
            if opts.to.has_password() { "" } else { "not " }
        ),
    )];
    let sc = scan(&info)?;
    let cluster = if info.cluster {
        let map = SlotMap::discover(&opts.to)?;
        checks.extend(cluster_rows(&map));
        Some(map)
    } else {
        checks.push(row("cluster", Status::Ok, "standalone".into()));
        None
    };
    checks.push(version_row(&info, opts, &sc));
    let target_modules = query_modules(&mut conn, &opts.to, cluster.as_ref())?;
    let (st, detail) = target_modules.row(&sc.modules, &sc.module_aux, sc.scanned);
    let st = match st {
        RowStatus::Ok => Status::Ok,
        RowStatus::Warn => Status::Warn,
        RowStatus::Fail => Status::Fail,
    };
    checks.push(row("modules", st, detail));
    if info.info_refused {
        checks.push(row(
            "info",
            Status::Warn,
            "INFO refused (ACL): version from HELLO, memory not checked".into(),
        ));
    }
    checks.extend(match &cluster {
        Some(map) => cluster_data_rows(map, opts, &sc)?,
        None => standalone_data_rows(&mut conn, &info, opts, &sc)?,
    });
    checks.push(bulk_len_row(&info, opts, &sc));
    if let Some(why) = changes::stranded(&mut conn)? {
        checks.push(row(
            "rdbferry",
            Status::Fail,
            format!(
                "{why}: run `rdbferry recover --to {}` first",
                opts.to.redacted()
            ),
        ));
    }
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    let full_sync = fullsync::decide(inputs, opts, &sc, &info, failed, &mut conn)?;
    checks.push(via_row(opts.via, &full_sync, "the file"));
    Ok(Precheck {
        checks,
        target_version: info.version.clone(),
        target_rdb_version: info.rdb_version,
        info: Some(info),
        modules: target_modules,
        scan: sc,
        full_sync,
    })
}

/// Whether the target loads every value's encoding (else the rewrite path).
fn version_row(info: &TargetInfo, opts: &ImportOptions, sc: &Scan) -> Check {
    let mut vers: Vec<String> = sc.rdb_versions.iter().map(|v| format!("RDB {v}")).collect();
    if sc.jsonl {
        vers.push("JSONL".into());
    }
    if sc.needs_rewrite == 0 {
        let input = if vers.is_empty() {
            "-".into()
        } else {
            vers.join(", ")
        };
        let detail = format!(
            "target {} (RDB {}), input {input}",
            info.version, info.rdb_version
        );
        return row("version", Status::Ok, detail);
    }
    let restore = opts.mode == Mode::Restore;
    row(
        "version",
        if restore { Status::Fail } else { Status::Warn },
        format!(
            "target {} (RDB {}) cannot load the encoding of {} keys: {}",
            info.version,
            info.rdb_version,
            sc.needs_rewrite,
            if restore {
                "--mode restore will fail them"
            } else {
                "they go by the rewrite path"
            }
        ),
    )
}

/// The biggest value against `proto-max-bulk-len` (what one `RESTORE` may carry).
fn bulk_len_row(info: &TargetInfo, opts: &ImportOptions, sc: &Scan) -> Check {
    const NAME: &str = "proto-max-bulk-len";
    let restore = opts.mode == Mode::Restore;
    match info.proto_max_bulk_len {
        None => row(
            NAME,
            Status::Warn,
            "CONFIG GET refused: 512 MB assumed".into(),
        ),
        Some(p) if sc.biggest > p => row(
            NAME,
            if restore { Status::Fail } else { Status::Ok },
            format!(
                "biggest value {} ({}) is over {}: {}",
                mb(sc.biggest),
                show(&sc.biggest_key),
                mb(p),
                if restore {
                    "RESTORE cannot send it (--mode auto rewrites it)"
                } else {
                    "rewritten in chunks (a string that big cannot exist there)"
                }
            ),
        ),
        Some(p) => row(
            NAME,
            Status::Ok,
            format!("biggest value {} within {}", mb(sc.biggest), mb(p)),
        ),
    }
}

/// Which way the import will go, as [`fullsync::decide`] decided.
fn via_row(via: Via, full_sync: &std::result::Result<fullsync::Plan, String>, what: &str) -> Check {
    match (via, full_sync) {
        (Via::Commands, _) => row("via", Status::Ok, "commands (--via commands)".into()),
        (_, Ok(_)) => row(
            "via",
            Status::Ok,
            format!(
                "full sync: the target loads {what} itself as a replica of rdbferry, then is \
                 detached (if it is still empty then)"
            ),
        ),
        (Via::FullSync, Err(why)) => row(
            "via",
            Status::Fail,
            format!("--via full-sync is ruled out: {why}"),
        ),
        (_, Err(why)) => row("via", Status::Ok, format!("commands (no full sync: {why})")),
    }
}

/// `MODULE LIST` of a standalone target, or of every master of a Cluster (a key's module
/// must be on the master of its slot).
pub(crate) fn query_modules(
    conn: &mut Conn,
    to: &RedisUrl,
    cluster: Option<&SlotMap>,
) -> Result<TargetModules> {
    let mut t = TargetModules::default();
    match cluster {
        None => t.query(conn, &to.addr())?,
        Some(map) => {
            for m in map.masters() {
                let mut c = Conn::open(&m.url(to))?;
                t.query(&mut c, &m.to_string())?;
            }
        }
    }
    Ok(t)
}
