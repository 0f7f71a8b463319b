//! Sending units again after a fault, so that none runs twice: one at a time, in order,
//! reconnecting with backoff; markers and value checks tell a unit that already ran (see the
//! `writer` module doc); and counting each settled unit.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::link::*;
use super::settle::*;
use super::unit::*;
use super::*;
use crate::error::{Error, Result};
use crate::keyslot::tmp_key_for as tmp_key;
use crate::net::cluster::{NodeAddr, Redirect};
use crate::net::error::transient_reply;
use crate::resp::{Reply, write_command};
use crate::text::quoted as show;

impl Link {
    /// Send units again one at a time, in order, each so that it cannot run twice;
    /// reconnecting with backoff (and refreshing the slot map) as needed. Stops the import
    /// when it cannot within `--retry-timeout`.
    pub(crate) fn resend_units(&mut self, units: Vec<(Unit, Option<Redirect>)>) {
        let deadline = Instant::now() + self.opts.retry_for;
        let mut delay = Duration::from_millis(100);
        let mut units: VecDeque<(Unit, Option<Redirect>)> = units.into();
        while let Some((u, hint)) = units.pop_front() {
            if self.stopped() {
                self.again.push_back((u, None));
                self.again.extend(units.drain(..).map(|(u, _)| (u, None)));
                return;
            }
            match self.resend_one(&u, hint.clone(), deadline) {
                Ok((Settled::Split, _)) => {
                    // Its keys, each sent (and checked) again.
                    for s in split_mset(&u).into_iter().rev() {
                        units.push_front((s, None));
                    }
                }
                Ok((s, replies)) => {
                    if let Ok(mut st) = self.sh.stats.lock() {
                        st.resent += 1;
                    }
                    self.apply(&u, s, &replies);
                    delay = Duration::from_millis(100);
                }
                Err(Fail::Fatal(e)) => {
                    self.fatal(e);
                    units.push_front((u, hint));
                }
                Err(Fail::Link(e)) => {
                    if Instant::now() >= deadline {
                        self.fatal(Error::Target {
                            target: self.topo().seed().addr(),
                            msg: format!(
                                "gave up after {} s of retries (--retry-timeout): {e}",
                                self.opts.retry_for.as_secs()
                            ),
                        });
                    }
                    units.push_front((u, None));
                    if self.stopped() {
                        continue;
                    }
                    tracing::warn!("{e}; retrying in {} ms", delay.as_millis());
                    self.drop_all();
                    if let Ok(mut st) = self.sh.stats.lock() {
                        st.reconnects += 1;
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(2));
                    // A node that is gone may have been replaced (failover).
                    let _ = self.topo().refresh();
                    self.note_failovers();
                }
            }
        }
    }

    /// After a refresh of the slot map: a node we wrote to that is no longer a master failed
    /// over. Its replica may lack writes it acknowledged (replication is asynchronous): the
    /// import goes on, and says so.
    pub(crate) fn note_failovers(&mut self) {
        if !self.topo().is_cluster() {
            return;
        }
        let masters = self.topo().masters();
        let gone: Vec<NodeAddr> = self
            .lost
            .keys()
            .filter(|n| !masters.contains(n))
            .cloned()
            .collect();
        let Ok(mut st) = self.sh.stats.lock() else {
            return;
        };
        for n in gone {
            let w = format!(
                "{n} stopped being a master during the import (failover): writes it \
                 acknowledged just before may not have reached the replica that replaced it; \
                 run `rdbferry verify` (or the import again with --on-conflict replace)"
            );
            if !st.warnings.contains(&w) {
                tracing::warn!("{w}");
                st.warnings.push(w);
            }
        }
    }

    /// Send `step` to `node` (after `ASKING` when `ask`) and read `n` replies.
    pub(crate) fn exchange(
        &mut self,
        node: &NodeAddr,
        ask: bool,
        db: u64,
        step: Step<'_>,
        n: usize,
    ) -> Result<Vec<Reply>, Fail> {
        self.select(node, db)?;
        let nc = self.conn_to(node)?;
        if ask {
            nc.conn.call(&[b"ASKING"])?;
        }
        match step {
            Step::Unit(u) => nc.conn.send(&u.bytes)?,
            Step::Args(a) => {
                let mut b = Vec::new();
                write_command(&mut b, a);
                nc.conn.send(&b)?
            }
        }
        let mut replies = Vec::with_capacity(n);
        for _ in 0..n {
            replies.push(nc.conn.read_reply()?);
        }
        if let Ok(mut st) = self.sh.stats.lock() {
            st.commands += n as u64;
        }
        Ok(replies)
    }

    /// `SELECT db` on the connection to `node`, alone and answered, unless it is there already.
    /// The connection must have nothing in flight. A busy or loading target refuses SELECT
    /// too: that is "not now" (reconnect and resend), anything else stops the import.
    pub(crate) fn select(&mut self, node: &NodeAddr, db: u64) -> Result<(), Fail> {
        let nc = self.conn_to(node)?;
        if nc.db == Some(db) {
            return Ok(());
        }
        nc.db = None;
        if let Reply::Error(e) = nc.conn.call(&[b"SELECT", db.to_string().as_bytes()])? {
            let text = String::from_utf8_lossy(&e);
            return Err(if transient_reply(&e) {
                Fail::Link(Error::target(nc.conn.name(), text.into_owned()))
            } else {
                Fail::Fatal(Error::target(
                    nc.conn.name(),
                    format!("SELECT {db}: {text}"),
                ))
            });
        }
        nc.db = Some(db);
        if let Ok(mut st) = self.sh.stats.lock() {
            st.commands += 1;
        }
        Ok(())
    }

    /// Send a unit that may already have run, so that it cannot run twice; "not now" and
    /// redirections are followed until `deadline`.
    pub(crate) fn resend_one(
        &mut self,
        u: &Unit,
        hint: Option<Redirect>,
        deadline: Instant,
    ) -> Result<(Settled, Vec<Reply>), Fail> {
        let mut delay = Duration::from_millis(50);
        let mut redirect = hint;
        let retry_s = self.opts.retry_for.as_secs();
        loop {
            let wait = |msg: String, delay: &mut Duration| -> Option<Settled> {
                if Instant::now() >= deadline {
                    return Some(Settled::Failed(format!(
                        "{msg} (still so after {retry_s} s, --retry-timeout)"
                    )));
                }
                std::thread::sleep(*delay);
                *delay = (*delay * 2).min(Duration::from_secs(2));
                None
            };
            if matches!(redirect, Some(Redirect::Moved { .. })) {
                let _ = self.topo().refresh();
            }
            let (node, ask) = match &redirect {
                Some(r @ Redirect::Ask { .. }) => (self.topo().normalize(r.addr()), true),
                _ => match self.topo().node_for_key(&u.label, u.slot) {
                    Some(n) => (n, false),
                    None => {
                        let _ = self.topo().refresh();
                        let msg = format!("slot {} has no owner", u.slot.unwrap_or(0));
                        if let Some(s) = wait(msg, &mut delay) {
                            return Ok((s, Vec::new()));
                        }
                        continue;
                    }
                },
            };
            if let Some(m) = &u.marker {
                let r = self.exchange(&node, ask, u.db, Step::Args(&[b"GET", &m.key]), 1)?;
                if let Some(Reply::Bulk(v)) = r.first()
                    && marker_passed(v, m)
                {
                    // It ran (its replies are lost; errors inside it cannot be told).
                    let s = match u.kind {
                        UnitKind::Commands => Settled::Group {
                            ok: u.count,
                            errors: Vec::new(),
                        },
                        _ => Settled::Written,
                    };
                    return Ok((s, Vec::new()));
                }
            }
            let replies = self.exchange(&node, ask, u.db, Step::Unit(u), u.replies)?;
            match settle(u, &replies) {
                Settled::Redirected(r) => redirect = Some(r),
                Settled::Again(msg) => {
                    redirect = None;
                    if let Some(s) = wait(msg, &mut delay) {
                        return Ok((s, replies));
                    }
                }
                Settled::Exists(what) => {
                    let s = if self.same_value(u, &node, ask)? {
                        Settled::Written
                    } else {
                        Settled::Exists(what)
                    };
                    return Ok((s, replies));
                }
                s => return Ok((s, replies)),
            }
        }
    }

    /// After a resend found the key (or library) already there: whether it holds what this
    /// unit writes, i.e. the first send ran.
    pub(crate) fn same_value(
        &mut self,
        u: &Unit,
        node: &NodeAddr,
        ask: bool,
    ) -> Result<bool, Fail> {
        let cmds = commands_of(&u.bytes);
        let Some(first) = cmds.first() else {
            return Ok(false);
        };
        let one = |l: &mut Link, args: &[&[u8]]| -> Result<Reply, Fail> {
            let mut r = l.exchange(node, ask, u.db, Step::Args(args), 1)?;
            Ok(r.pop().unwrap_or(Reply::Nil))
        };
        match u.kind {
            UnitKind::Restore => {
                let (Some(key), Some(payload)) = (first.get(1), first.get(3)) else {
                    return Ok(false);
                };
                let tmp = tmp_key(key);
                if let Reply::Error(_) = one(self, &[b"RESTORE", &tmp, b"0", payload, b"REPLACE"])?
                {
                    return Ok(false);
                }
                let r = one(self, &[b"EVAL", SAME_VALUE.as_bytes(), b"2", key, &tmp])?;
                Ok(r == Reply::Integer(1))
            }
            UnitKind::Set { .. } => {
                let (Some(key), Some(value)) = (first.get(1), first.get(2)) else {
                    return Ok(false);
                };
                Ok(matches!(one(self, &[b"GET", key])?, Reply::Bulk(v) if v == *value))
            }
            UnitKind::Rewrite { nx: true, .. } => {
                // The unit without its RENAMENX and the DEL after it builds `tmp` only.
                let Some(at) = cmds.iter().position(|c| {
                    c.first()
                        .is_some_and(|n| n.eq_ignore_ascii_case(b"RENAMENX"))
                }) else {
                    return Ok(false);
                };
                let key = cmds[at].get(2).cloned().unwrap_or_default();
                let tmp = cmds[at].get(1).cloned().unwrap_or_default();
                let mut probe = Unit::new(u.db, u.label.clone(), Vec::new(), 0, u.kind, u.route);
                for (i, c) in cmds.iter().enumerate() {
                    if i == at || i == at + 1 {
                        continue;
                    }
                    let args: Vec<&[u8]> = c.iter().map(|a| a.as_slice()).collect();
                    write_command(&mut probe.bytes, &args);
                    probe.replies += 1;
                }
                self.exchange(node, ask, u.db, Step::Unit(&probe), probe.replies)?;
                let r = one(self, &[b"EVAL", SAME_VALUE.as_bytes(), b"2", &key, &tmp])?;
                Ok(r == Reply::Integer(1))
            }
            UnitKind::Function => {
                let code = first.last().cloned().unwrap_or_default();
                let name = library_name(&code).to_vec();
                let r = one(
                    self,
                    &[b"FUNCTION", b"LIST", b"LIBRARYNAME", &name, b"WITHCODE"],
                )?;
                Ok(contains_bulk(&r, &code))
            }
            _ => Ok(false),
        }
    }

    /// Count a settled unit, and clean up after failed keys.
    pub(crate) fn apply(&mut self, u: &Unit, s: Settled, replies: &[Reply]) {
        let mut cleanup = None;
        let outcome: Option<Settled> = match (u.kind, s) {
            (UnitKind::Part { last: false, .. }, Settled::Failed(msg)) => {
                // Counted once, at the first failed part; the last part settles the rest.
                if self.failed.insert((u.db, u.label.clone())) {
                    Some(Settled::Failed(msg))
                } else {
                    None
                }
            }
            (UnitKind::Part { last: false, .. }, _) => None,
            (UnitKind::Part { last: true, .. }, _)
                if self.failed.remove(&(u.db, u.label.clone())) =>
            {
                if renamed_into_place(u, replies) {
                    cleanup = Some((u.db, u.label.clone()));
                }
                None
            }
            (_, Settled::Failed(mut msg)) => {
                if renamed_into_place(u, replies) {
                    // An error inside EXEC (or between pipelined commands) does not undo the
                    // commands around it: the key was renamed into place half-built.
                    msg.push_str("; the half-built key was deleted");
                    cleanup = Some((u.db, u.label.clone()));
                }
                Some(Settled::Failed(msg))
            }
            (_, s) => Some(s),
        };
        if let Some(k) = cleanup
            && let Err(e) = delete_keys(&self.sh.topo, &[k], self.opts.retry_for, "half-built key")
        {
            self.fatal(e);
        }
        let Some(s) = outcome else { return };
        let Ok(mut st) = self.sh.stats.lock() else {
            return;
        };
        let what = match u.kind {
            UnitKind::Commands => "command",
            UnitKind::Function => "function library",
            _ => "key",
        };
        let error = |st: &mut WriteStats, label: &[u8], msg: String| {
            st.errors += 1;
            if st.messages.len() < MAX_MESSAGES {
                st.messages
                    .push(format!("{what} {} (db {}): {msg}", show(label), u.db));
            }
        };
        match s {
            Settled::Written => st.written += u.count.max(1),
            Settled::Exists(thing) => match self.opts.conflict {
                OnConflict::Skip => st.conflicts += 1,
                _ => error(
                    &mut st,
                    &u.label,
                    format!("{thing} already exists on the target (--on-conflict fail)"),
                ),
            },
            Settled::Failed(msg) | Settled::Again(msg) => {
                error(&mut st, &u.label, with_module(u, msg))
            }
            Settled::Redirected(r) => error(
                &mut st,
                &u.label,
                format!("redirected to {} and not written", r.addr()),
            ),
            Settled::Split => error(&mut st, &u.label, "internal: unsplit MSET".into()),
            Settled::Group { ok, errors } => {
                st.written += ok;
                for e in errors {
                    // "COMMAND ARG: message"
                    let (label, msg) = e.split_once('\u{0}').unwrap_or(("?", &e));
                    error(&mut st, label.as_bytes(), msg.to_string());
                }
            }
        }
        let failed = st.errors > 0;
        drop(st);
        if failed && self.opts.stop_on_error {
            self.sh.stop.store(true, Ordering::Relaxed);
        }
    }
}
