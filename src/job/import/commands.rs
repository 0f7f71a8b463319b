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
use crate::rdb::Record;
use crate::resp::write_command;
use crate::sink::writer::{Unit, UnitKind, WriteStats, Writer, library_name};
use crate::transform::{CommandFate, KeyMap, Transaction};

pub(crate) fn import_one(
    name: &str,
    ctx: &Ctx<'_>,
    writer: Option<&Writer>,
    info: &TargetInfo,
    rep: &mut ImportReport,
    local: &mut WriteStats,
) -> Result<()> {
    let input = Input::open(name)?;
    let mut progress = Progress::new(input.size, name, ctx.common.quiet);
    let stop = |local: &WriteStats| {
        ctx.opts.stop_on_error && local.errors > 0 || writer.is_some_and(|w| w.stopped())
    };
    let stopped = || Error::Stopped;
    let send = |u: Unit| -> Result<()> {
        match writer {
            Some(w) => w.send(u),
            None => Ok(()),
        }
    };
    // Whether the last thing sent was an ordered command (then keys wait for it, and the
    // reverse).
    let mut in_commands = false;
    let mut group = AofGroup::new(ctx.run, ctx.cluster);
    let mut msets = MsetGroup::new(ctx.opts.on_conflict != OnConflict::Replace);
    let mut txn = Transaction::default();
    let walked = batch::walk(
        &input,
        ctx.common,
        |k| ctx.prepare(k),
        |ev, prepared, pos| {
            if stop(local) {
                return Err(stopped());
            }
            match ev {
                Event::Rdb(Record::Key(k)) => {
                    progress.tick(pos, 1);
                    rep.keys_read += 1;
                    if in_commands {
                        if let Some(u) = group.take(true) {
                            send(u)?;
                        }
                        if let Some(w) = writer {
                            w.barrier()?;
                        }
                        in_commands = false;
                    }
                    match prepared {
                        Some(Prepared::Filtered) => rep.filtered += 1,
                        Some(Prepared::Expired) => rep.expired += 1,
                        Some(Prepared::Refused(msg)) => {
                            let key = ctx.common.map.key(&k.key);
                            refuse(local, "key", &key, ctx.map_db(k.db), &msg);
                        }
                        Some(Prepared::Big) => {
                            rep.rewritten += 1;
                            if let Some(w) = writer {
                                stream_rewrite(ctx, k, w)?;
                            }
                        }
                        Some(Prepared::Unit(u, restored)) => {
                            if restored {
                                rep.restored += 1;
                            } else {
                                rep.rewritten += 1;
                            }
                            send(u)?;
                        }
                        Some(Prepared::Plain(db, key, value)) => {
                            rep.rewritten += 1;
                            if let Some(u) = msets.push(db, &key, &value) {
                                send(u)?;
                            }
                        }
                        None => {}
                    }
                }
                Event::Rdb(Record::Function { code }) => {
                    if info.rdb_version < 10 {
                        refuse(
                            local,
                            "function library",
                            library_name(code),
                            0,
                            &format!(
                                "the target (Redis {}) has no functions (7.0+)",
                                info.version
                            ),
                        );
                        return Ok(());
                    }
                    let mut args: Vec<&[u8]> = vec![b"FUNCTION", b"LOAD"];
                    if ctx.opts.on_conflict == OnConflict::Replace {
                        args.push(b"REPLACE");
                    }
                    args.push(code);
                    let mut bytes = Vec::new();
                    write_command(&mut bytes, &args);
                    // On a Cluster every master gets the library (a slot it owns routes there).
                    for slot in &ctx.function_slots {
                        rep.functions += 1;
                        let mut u = Unit::new(
                            0,
                            library_name(code).to_vec(),
                            bytes.clone(),
                            1,
                            UnitKind::Function,
                            0,
                        );
                        u.slot = *slot;
                        send(u)?;
                    }
                }
                Event::Rdb(_) => {}
                Event::Command { db, args } => {
                    progress.tick(pos, 1);
                    let label = || args.iter().take(2).copied().collect::<Vec<_>>().join(&b' ');
                    let fate = ctx.common.map.command(db, args);
                    let cmd = args.first().copied().unwrap_or_default();
                    if let Some(why) = txn.note(cmd, matches!(fate, CommandFate::Keep { .. })) {
                        refuse(local, "command", &label(), db, &why);
                    }
                    let (tdb, mapped) = match fate {
                        CommandFate::Keep { db, args } => (db, args),
                        CommandFate::Drop => {
                            rep.filtered += 1;
                            return Ok(());
                        }
                        CommandFate::Refuse(why) => {
                            refuse(local, "command", &label(), db, &why);
                            return Ok(());
                        }
                    };
                    let args = &KeyMap::refs(&mapped)[..];
                    if !in_commands {
                        if let Some(u) = msets.take() {
                            send(u)?;
                        }
                        if let Some(w) = writer {
                            w.barrier()?;
                        }
                        in_commands = true;
                    }
                    if ctx.cluster {
                        let name = args.first().copied().unwrap_or_default();
                        let control = name.eq_ignore_ascii_case(b"MULTI")
                            || name.eq_ignore_ascii_case(b"EXEC");
                        let why = match crate::transform::commands::command_slot(args) {
                            _ if control => None,
                            _ if tdb != 0 => Some(format!(
                                "a Cluster has only db 0; map db {db} there with --db-map {db}=0"
                            )),
                            Ok(Some(s)) => {
                                if let Some(u) = group.switch_slot(s) {
                                    send(u)?;
                                }
                                None
                            }
                            Ok(None) => Some(
                                "a command without a key cannot be routed to a Cluster node".into(),
                            ),
                            Err(e) => Some(e.to_string()),
                        };
                        if let Some(msg) = why {
                            refuse(local, "command", &label(), tdb, &msg);
                            return Ok(());
                        }
                    }
                    if group.push(tdb, args) {
                        rep.commands += 1;
                    }
                    if let Some(u) = group.take(false) {
                        send(u)?;
                    }
                }
            }
            Ok(())
        },
    );
    if walked.is_ok()
        && let Some(u) = group.take(true)
    {
        send(u)?;
    }
    if walked.is_ok()
        && let Some(u) = msets.take()
    {
        send(u)?;
    }
    progress.finish();
    let walked = walked?;
    rep.bytes += walked.bytes;
    if let Some(w) = writer {
        w.barrier()?;
    }
    Ok(())
}
