//! What an import did: [`ImportReport`], and how a refused key is counted and named.

use serde::Serialize;

use super::fullsync::Via;
use crate::sink::writer::WriteStats;
use crate::text::quoted as show;

/// The summary of an import.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    /// Target (redacted URL).
    pub target: String,
    /// How the keys went: `full-sync` (the target loaded them as a replica of rdbferry) or
    /// `commands`.
    pub via: Via,
    /// Why a full sync was not used (`--via auto`), when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_sync_declined: Option<String>,
    /// Keys the target loaded by full sync.
    pub synced: u64,
    /// Keys read from the inputs.
    pub keys_read: u64,
    /// Keys, commands and functions written.
    pub written: u64,
    /// Keys written with RESTORE.
    pub restored: u64,
    /// Keys written by the rewrite path.
    pub rewritten: u64,
    /// AOF commands sent.
    pub commands: u64,
    /// Function libraries sent.
    pub functions: u64,
    /// Keys left out by filters.
    pub filtered: u64,
    /// Keys left out because already expired.
    pub expired: u64,
    /// Keys (or libraries) that already existed and were left alone.
    pub conflicts: u64,
    /// Keys, commands or libraries refused (by the target or before sending).
    pub errors: u64,
    /// The first error messages, each naming its key.
    pub error_messages: Vec<String>,
    /// Units sent again after a fault (dropped connection, target busy or loading).
    pub resent: u64,
    /// What may have been lost without an error to show for it (a Cluster failover during
    /// the import): the exit status is 1 when any.
    pub warnings: Vec<String>,
    /// Reconnections to the target.
    pub reconnects: u64,
    /// Input bytes read.
    pub bytes: u64,
    /// Wall time, seconds.
    pub elapsed_s: f64,
    /// Nothing was written.
    pub dry_run: bool,
}

impl ImportReport {
    /// Keys per second (read).
    pub fn keys_per_s(&self) -> f64 {
        self.keys_read as f64 / self.elapsed_s.max(1e-9)
    }
    /// Input MB per second.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed_s.max(1e-9)
    }
    /// The summary as a text table.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let via = match &self.full_sync_declined {
            Some(why) => format!("{} (no full sync: {why})", self.via),
            None => self.via.to_string(),
        };
        let written = if self.via == Via::FullSync {
            format!(
                "{} ({} by full sync, {} functions)",
                self.written, self.synced, self.functions
            )
        } else {
            format!(
                "{} ({} restored, {} rewritten, {} commands, {} functions){}",
                self.written,
                self.restored,
                self.rewritten,
                self.commands,
                self.functions,
                if self.dry_run { " [dry run]" } else { "" }
            )
        };
        let rows: [(&str, String); 13] = [
            ("target", self.target.clone()),
            ("via", via),
            ("keys read", self.keys_read.to_string()),
            ("written", written),
            ("filtered", self.filtered.to_string()),
            ("expired", self.expired.to_string()),
            ("conflicts", self.conflicts.to_string()),
            ("errors", self.errors.to_string()),
            (
                "retries",
                format!("{} resent, {} reconnects", self.resent, self.reconnects),
            ),
            ("elapsed", format!("{:.3} s", self.elapsed_s)),
            ("keys/s", format!("{:.0}", self.keys_per_s())),
            ("MB/s", format!("{:.1}", self.mb_per_s())),
            ("bytes", self.bytes.to_string()),
        ];
        for (k, v) in &rows {
            s += &format!("{k:<10}  {v}\n");
        }
        s
    }
}

pub(crate) fn refuse(local: &mut WriteStats, what: &str, label: &[u8], db: u64, msg: &str) {
    local.errors += 1;
    if local.messages.len() < crate::sink::writer::MAX_MESSAGES {
        local
            .messages
            .push(format!("{what} {} (db {db}): {msg}", show(label)));
    }
}
