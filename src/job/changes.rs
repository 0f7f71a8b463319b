//! What rdbferry changes on a server, and how it is put back: on every path of the run that
//! changed it, and by a later run (`rdbferry recover`) after a `kill -9`.
//!
//! Two records, written before the change:
//! - on the server itself, for a full sync: the target's `masterauth` becomes a
//!   [`ClaimRecord`], `rdbferry-claim-<secret>-<settings to put back>`, before `REPLICAOF`.
//!   The listener requires the secret ([`crate::repl::master`]), and a later run, from any
//!   host, recognises a target stranded as a replica of a gone rdbferry by it and knows what
//!   to put back;
//! - in a local [`Journal`] (one file per server under `$RDBFERRY_STATE_DIR`, else
//!   `$XDG_STATE_HOME/rdbferry`, else `~/.local/state/rdbferry`), for the settings `verify`
//!   changes for its snapshot. It is removed once they are back.
//!
//! [`put_back`] tries every setting even when one fails, and says what is left.

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};

use crate::cancel::{Cancel, Hold};
use crate::error::{Error, Result};
use crate::net::{Conn, RedisUrl};

/// A setting as it was: `CONFIG SET name value` puts it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting {
    /// The config name.
    pub name: String,
    /// Its value before rdbferry changed it.
    pub value: String,
}

/// What a full sync stores in the target's `masterauth` while the target is its replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRecord {
    /// The one-time secret the listener requires (40 hex characters).
    pub secret: String,
    /// The settings to put back when the target is detached (`masterauth` among them).
    pub restore: Vec<Setting>,
}

impl ClaimRecord {
    /// How every claim record starts.
    pub const PREFIX: &'static str = "rdbferry-claim-";

    /// The `masterauth` value.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(&self.restore).unwrap_or_default();
        format!("{}{}-{}", Self::PREFIX, self.secret, B64.encode(json))
    }

    /// Read a `masterauth` value; `None` when it is not a claim record.
    pub fn decode(masterauth: &str) -> Option<ClaimRecord> {
        let rest = masterauth.strip_prefix(Self::PREFIX)?;
        let (secret, b64) = rest.split_once('-')?;
        let restore = serde_json::from_slice(&B64.decode(b64).ok()?).ok()?;
        Some(ClaimRecord {
            secret: secret.to_string(),
            restore,
        })
    }
}

/// Put `settings` back on `conn`: every one is tried; returns those that failed, with why.
pub fn put_back(conn: &mut Conn, settings: &[Setting]) -> Vec<String> {
    let mut left = Vec::new();
    for s in settings {
        match conn.config_set(&s.name, &s.value) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => left.push(format!("{} (refused: {e})", s.name)),
            Err(e) => left.push(format!("{} ({e})", s.name)),
        }
    }
    left
}

/// The commands that put `settings` back, for a message (a password setting is not shown).
pub fn commands(settings: &[Setting]) -> String {
    settings
        .iter()
        .map(|s| {
            let v = if s.name == "masterauth" && !s.value.is_empty() {
                "<the previous masterauth>".to_string()
            } else {
                format!("{:?}", s.value)
            };
            format!("CONFIG SET {} {v}", s.name)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The local journal of the settings a run changed on one server.
#[derive(Debug, Clone)]
pub struct Journal {
    path: PathBuf,
    server: String,
}

/// One journal file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalEntry {
    /// The process that wrote it.
    pub pid: u32,
    /// The server (redacted URL).
    pub server: String,
    /// What to put back.
    pub restore: Vec<Setting>,
}

fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RDBFERRY_STATE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(d).join("rdbferry");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/state/rdbferry"),
        None => std::env::temp_dir().join("rdbferry-state"),
    }
}

/// Whether process `pid` is alive (on Linux: its `/proc` entry exists).
fn alive(pid: u32) -> bool {
    pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists()
}

impl Journal {
    /// The journal of the server `url` names.
    pub fn of(url: &RedisUrl) -> Journal {
        let safe: String = url
            .addr()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Journal {
            path: state_dir().join(format!("changed-{safe}.json")),
            server: url.redacted(),
        }
    }

    /// Record `restore` before changing anything (written to a temporary file, then renamed).
    pub fn record(&self, restore: &[Setting]) -> Result<()> {
        let entry = JournalEntry {
            pid: std::process::id(),
            server: self.server.clone(),
            restore: restore.to_vec(),
        };
        let io = |e| Error::io(self.path.display().to_string(), e);
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = self
            .path
            .with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec(&entry).unwrap_or_default()).map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)
    }

    /// What the journal holds, if anything.
    pub fn read(&self) -> Option<JournalEntry> {
        let text = std::fs::read(&self.path).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// A journal left by another run: `Some((entry, alive))`.
    pub fn other_run(&self) -> Option<(JournalEntry, bool)> {
        let e = self.read()?;
        if e.pid == std::process::id() {
            return None;
        }
        let live = alive(e.pid);
        Some((e, live))
    }

    /// Forget the journal: everything is back.
    pub fn clear(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Settings changed on a server for the length of a step, put back by
/// [`Changed::put_back`] (or, failing that, when dropped), and journaled meanwhile.
pub struct Changed {
    url: RedisUrl,
    journal: Journal,
    restore: Vec<Setting>,
    /// Keeps the process alive after a signal until the settings are back.
    hold: Option<Hold>,
}

impl Changed {
    /// Set each `(name, value)` whose current value differs, after journaling the current
    /// values. A setting the server refuses is left as it is (and not journaled). The
    /// `cancel` token's signal handling waits until they are back.
    pub fn set(
        conn: &mut Conn,
        url: &RedisUrl,
        wanted: &[(&str, &str)],
        cancel: &Cancel,
    ) -> Result<Changed> {
        let journal = Journal::of(url);
        let mut restore = Vec::new();
        for (name, value) in wanted {
            if let Some(cur) = conn.config_get(name)?
                && cur != *value
            {
                restore.push(Setting {
                    name: name.to_string(),
                    value: cur,
                });
            }
        }
        let mut changed = Changed {
            url: url.clone(),
            journal,
            restore: Vec::new(),
            hold: None,
        };
        if restore.is_empty() {
            return Ok(changed);
        }
        changed.hold = Some(cancel.hold());
        changed.journal.record(&restore)?;
        for s in restore {
            let new = wanted
                .iter()
                .find(|(n, _)| *n == s.name)
                .map(|(_, v)| *v)
                .unwrap_or_default();
            if conn.config_set(&s.name, new)?.is_ok() {
                changed.restore.push(s);
            }
        }
        changed.journal.record(&changed.restore)?;
        Ok(changed)
    }

    /// Whether anything was changed.
    pub fn is_empty(&self) -> bool {
        self.restore.is_empty()
    }

    /// Put everything back (over a new connection: the one that changed it may be gone);
    /// every setting is tried; an error lists what is left and how to put it back.
    pub fn put_back(mut self) -> Result<()> {
        let _hold = self.hold.take();
        let restore = std::mem::take(&mut self.restore);
        if restore.is_empty() {
            self.journal.clear();
            return Ok(());
        }
        let left = match Conn::open(&self.url) {
            Ok(mut c) => put_back(&mut c, &restore),
            Err(e) => vec![format!("all ({e})")],
        };
        if left.is_empty() {
            self.journal.clear();
            return Ok(());
        }
        Err(Error::target(
            self.url.redacted(),
            format!(
                "could not put back {}: run `rdbferry recover --to URL`, or by hand: {}",
                left.join(", "),
                commands(&restore)
            ),
        ))
    }
}

/// A step that ended without [`Changed::put_back`] (an error, a panic) still puts the
/// settings back, and says so when it cannot.
impl Drop for Changed {
    fn drop(&mut self) {
        if self.restore.is_empty() {
            return;
        }
        let c = Changed {
            url: self.url.clone(),
            journal: self.journal.clone(),
            restore: std::mem::take(&mut self.restore),
            hold: self.hold.take(),
        };
        if let Err(e) = c.put_back() {
            eprintln!("rdbferry: error: {e}");
        }
    }
}

/// What `recover` found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Recovered {
    /// The server.
    pub server: String,
    /// What was put back.
    pub actions: Vec<String>,
    /// What could not be (with why).
    pub left: Vec<String>,
}

/// A target that a full sync left as a replica of a listener that is gone, or with a claim
/// record in its `masterauth`: why, if so (`None`: nothing of rdbferry's is left there).
pub fn stranded(conn: &mut Conn) -> Result<Option<String>> {
    let Some(auth) = conn.config_get("masterauth")? else {
        return Ok(None);
    };
    if ClaimRecord::decode(&auth).is_none() {
        return Ok(None);
    }
    let repl = conn.info("replication")?;
    let replica = repl.get("role").is_some_and(|r| r == "slave");
    let up = repl.get("master_link_status").is_some_and(|s| s == "up");
    Ok(Some(match (replica, up) {
        (true, true) => "the target is the replica of a full sync that is still running".into(),
        (true, false) => format!(
            "the target is still a replica of an rdbferry full sync that is gone ({}:{}), read-only, with its settings changed",
            repl.get("master_host").map(String::as_str).unwrap_or("?"),
            repl.get("master_port").map(String::as_str).unwrap_or("?")
        ),
        _ => "the target still holds the settings of an interrupted rdbferry full sync".into(),
    }))
}

/// Detach a target stranded by a full sync and put back every setting rdbferry changed on
/// it (the claim record in `masterauth`, and this host's journal). A target whose full sync
/// is still running is left alone unless `force`.
pub fn recover(url: &RedisUrl, force: bool) -> Result<Recovered> {
    let mut c = Conn::open(url)?;
    let mut r = Recovered {
        server: url.redacted(),
        ..Default::default()
    };
    if let Some(rec) = c
        .config_get("masterauth")?
        .and_then(|a| ClaimRecord::decode(&a))
    {
        let repl = c.info("replication")?;
        let replica = repl.get("role").is_some_and(|x| x == "slave");
        let up = repl.get("master_link_status").is_some_and(|s| s == "up");
        if replica && up && !force {
            return Err(Error::target(
                url.redacted(),
                "a full sync into this target is still running (its link to rdbferry is up); \
                 stop that import first, or give --force",
            ));
        }
        if replica {
            match c.call_small(&[b"REPLICAOF", b"NO", b"ONE"])?.error_text() {
                None => r.actions.push("REPLICAOF NO ONE".into()),
                Some(e) => r.left.push(format!("REPLICAOF NO ONE (refused: {e})")),
            }
        }
        let left = put_back(&mut c, &rec.restore);
        r.actions.extend(
            rec.restore
                .iter()
                .filter(|s| !left.iter().any(|l| l.starts_with(&s.name)))
                .map(|s| format!("CONFIG SET {} (put back)", s.name)),
        );
        r.left.extend(left);
    }
    let journal = Journal::of(url);
    if let Some((e, live)) = journal.other_run() {
        if live && !force {
            return Err(Error::target(
                url.redacted(),
                format!(
                    "run {} that changed settings here is still running; let it finish, or give --force",
                    e.pid
                ),
            ));
        }
        let left = put_back(&mut c, &e.restore);
        r.actions.extend(
            e.restore
                .iter()
                .filter(|s| !left.iter().any(|l| l.starts_with(&s.name)))
                .map(|s| format!("CONFIG SET {} {:?} (put back)", s.name, s.value)),
        );
        if left.is_empty() {
            journal.clear();
        }
        r.left.extend(left);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_records_round_trip() {
        let rec = ClaimRecord {
            secret: "ab".repeat(20),
            restore: vec![
                Setting {
                    name: "masterauth".into(),
                    value: "p-w:-x".into(),
                },
                Setting {
                    name: "repl-diskless-load".into(),
                    value: "disabled".into(),
                },
            ],
        };
        let s = rec.encode();
        assert!(s.starts_with(ClaimRecord::PREFIX));
        assert_eq!(ClaimRecord::decode(&s), Some(rec));
        assert_eq!(ClaimRecord::decode("hunter2"), None);
        assert_eq!(ClaimRecord::decode("rdbferry-claim-x"), None);
    }
}
