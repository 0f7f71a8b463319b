//! The command path of `import`: walk each input, hand every key to the rayon workers
//! (`encode`), and send the units, in file order, to the pipelined writer; AOF commands in
//! order, after everything before them is acknowledged.

use super::encode::*;
use super::groups::*;
use super::options::*;
use super::parts::*;
use super::report::*;
use crate::error::{Error, Result};
use crate::input::{Event, Input};
use crate::job::batch;
use crate::net::ServerInfo as TargetInfo;
use crate::progress::Progress;
use crate::rdb::{KeyRecord, Record};
use crate::resp::write_command;
use crate::sink::writer::{Unit, UnitKind, WriteStats, Writer, library_name};
use crate::transform::{CommandFate, KeyMap, Transaction};

/// One input on its way to the writer: what was sent last, and the units being gathered.
struct Sender<'a, 'o> {
    ctx: &'a Ctx<'o>,
    writer: Option<&'a Writer>,
    info: &'a TargetInfo,
    rep: &'a mut ImportReport,
    local: &'a mut WriteStats,
    /// The last thing sent was an ordered AOF command (then keys wait for it, and the
    /// reverse).
    in_commands: bool,
    group: AofGroup,
    msets: MsetGroup,
    txn: Transaction,
}

impl Sender<'_, '_> {
    fn send(&self, u: Unit) -> Result<()> {
        match self.writer {
            Some(w) => w.send(u),
            None => Ok(()),
        }
    }

    /// Wait until everything sent so far is acknowledged.
    fn barrier(&self) -> Result<()> {
        match self.writer {
            Some(w) => w.barrier(),
            None => Ok(()),
        }
    }

    /// Whether the import stops (`--on-error stop` after a refusal, or the writer stopped).
    fn stopped(&self) -> bool {
        self.ctx.opts.stop_on_error && self.local.errors > 0
            || self.writer.is_some_and(|w| w.stopped())
    }

    fn key(&mut self, k: &KeyRecord<'_>, prepared: Option<Prepared>) -> Result<()> {
        self.rep.keys_read += 1;
        if self.in_commands {
            if let Some(u) = self.group.take(true) {
                self.send(u)?;
            }
            self.barrier()?;
            self.in_commands = false;
        }
        match prepared {
            Some(Prepared::Filtered) => self.rep.filtered += 1,
            Some(Prepared::Expired) => self.rep.expired += 1,
            Some(Prepared::Refused(msg)) => {
                let key = self.ctx.common.map.key(&k.key);
                refuse(self.local, "key", &key, self.ctx.map_db(k.db), &msg);
            }
            Some(Prepared::Big) => {
                self.rep.rewritten += 1;
                if let Some(w) = self.writer {
                    stream_rewrite(self.ctx, k, w)?;
                }
            }
            Some(Prepared::Unit(u, restored)) => {
                if restored {
                    self.rep.restored += 1;
                } else {
                    self.rep.rewritten += 1;
                }
                self.send(u)?;
            }
            Some(Prepared::Plain(db, key, value)) => {
                self.rep.rewritten += 1;
                if let Some(u) = self.msets.push(db, &key, &value) {
                    self.send(u)?;
                }
            }
            None => {}
        }
        Ok(())
    }

    /// A function library: `FUNCTION LOAD` to every master (a slot each owns routes there).
    fn function(&mut self, code: &[u8]) -> Result<()> {
        if self.info.rdb_version < 10 {
            let why = format!(
                "the target (Redis {}) has no functions (7.0+)",
                self.info.version
            );
            refuse(self.local, "function library", library_name(code), 0, &why);
            return Ok(());
        }
        let mut args: Vec<&[u8]> = vec![b"FUNCTION", b"LOAD"];
        if self.ctx.opts.on_conflict == OnConflict::Replace {
            args.push(b"REPLACE");
        }
        args.push(code);
        let mut bytes = Vec::new();
        write_command(&mut bytes, &args);
        for slot in &self.ctx.function_slots {
            self.rep.functions += 1;
            let name = library_name(code).to_vec();
            let mut u = Unit::new(0, name, bytes.clone(), 1, UnitKind::Function, 0);
            u.slot = *slot;
            self.send(u)?;
        }
        Ok(())
    }

    /// An AOF command: mapped (filters, renames, db), then into the ordered group.
    fn command(&mut self, db: u64, args: &[&[u8]]) -> Result<()> {
        let label = || args.iter().take(2).copied().collect::<Vec<_>>().join(&b' ');
        let fate = self.ctx.common.map.command(db, args);
        let cmd = args.first().copied().unwrap_or_default();
        let kept = matches!(fate, CommandFate::Keep { .. });
        if let Some(why) = self.txn.note(cmd, kept) {
            refuse(self.local, "command", &label(), db, &why);
        }
        let (tdb, mapped) = match fate {
            CommandFate::Keep { db, args } => (db, args),
            CommandFate::Drop => {
                self.rep.filtered += 1;
                return Ok(());
            }
            CommandFate::Refuse(why) => {
                refuse(self.local, "command", &label(), db, &why);
                return Ok(());
            }
        };
        let args = &KeyMap::refs(&mapped)[..];
        if !self.in_commands {
            if let Some(u) = self.msets.take() {
                self.send(u)?;
            }
            self.barrier()?;
            self.in_commands = true;
        }
        if self.ctx.cluster
            && let Some(msg) = self.cluster_slot(db, tdb, args)?
        {
            refuse(self.local, "command", &label(), tdb, &msg);
            return Ok(());
        }
        if self.group.push(tdb, args) {
            self.rep.commands += 1;
        }
        if let Some(u) = self.group.take(false) {
            self.send(u)?;
        }
        Ok(())
    }

    /// On a Cluster: move the group to the command's slot; why the command cannot go, if it
    /// cannot (another db than 0, no key, keys in several slots).
    fn cluster_slot(&mut self, db: u64, tdb: u64, args: &[&[u8]]) -> Result<Option<String>> {
        let name = args.first().copied().unwrap_or_default();
        if name.eq_ignore_ascii_case(b"MULTI") || name.eq_ignore_ascii_case(b"EXEC") {
            return Ok(None);
        }
        if tdb != 0 {
            return Ok(Some(format!(
                "a Cluster has only db 0; map db {db} there with --db-map {db}=0"
            )));
        }
        match crate::transform::commands::command_slot(args) {
            Ok(Some(s)) => {
                if let Some(u) = self.group.switch_slot(s) {
                    self.send(u)?;
                }
                Ok(None)
            }
            Ok(None) => Ok(Some(
                "a command without a key cannot be routed to a Cluster node".into(),
            )),
            Err(e) => Ok(Some(e.to_string())),
        }
    }

    /// What is still gathered goes out.
    fn flush(&mut self) -> Result<()> {
        if let Some(u) = self.group.take(true) {
            self.send(u)?;
        }
        if let Some(u) = self.msets.take() {
            self.send(u)?;
        }
        Ok(())
    }
}

/// Import one input into `writer` (`None`: a dry run), counting into `rep` and `local`.
pub(crate) fn import_one(
    input: Input,
    ctx: &Ctx<'_>,
    writer: Option<&Writer>,
    info: &TargetInfo,
    rep: &mut ImportReport,
    local: &mut WriteStats,
) -> Result<()> {
    let ctx = &Ctx {
        input: input.name.clone(),
        ..ctx.clone()
    };
    let mut progress = Progress::new(input.size, &input.name, ctx.common.quiet);
    let mut s = Sender {
        ctx,
        writer,
        info,
        rep,
        local,
        in_commands: false,
        group: AofGroup::new(ctx.run, ctx.cluster),
        msets: MsetGroup::new(ctx.opts.on_conflict != OnConflict::Replace),
        txn: Transaction::default(),
    };
    let walked = batch::walk(
        &input,
        ctx.common,
        |k| ctx.prepare(k),
        |ev, prepared, pos| {
            if s.stopped() {
                return Err(Error::Stopped);
            }
            match ev {
                Event::Rdb(Record::Key(k)) => {
                    progress.tick(pos, 1);
                    s.key(k, prepared)
                }
                Event::Rdb(Record::Function { code }) => s.function(code),
                Event::Rdb(_) => Ok(()),
                Event::Command { .. } if ctx.opts.rdb_only => Ok(()),
                Event::Command { db, args } => {
                    progress.tick(pos, 1);
                    s.command(db, args)
                }
            }
        },
    );
    if walked.is_ok() {
        s.flush()?;
    }
    progress.finish();
    let walked = walked?;
    s.rep.bytes += walked.bytes;
    s.barrier()
}
