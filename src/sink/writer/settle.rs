//! How a unit's replies settle it: written, a conflict, refused, "not now", redirected, or
//! (a group of AOF commands) how many ran and which failed ([`settle`]).

use super::unit::*;
use crate::net::cluster::{Redirect, parse_redirect};
use crate::net::error::transient_reply;
use crate::resp::Reply;

/// What a conflict found already on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Existing {
    Key,
    Library,
}

impl std::fmt::Display for Existing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Existing::Key => "key",
            Existing::Library => "library",
        })
    }
}

/// A unit once its replies are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settled {
    Written,
    /// A conflict: "key" or "library".
    Exists(Existing),
    Failed(String),
    /// Refused for now without effect: send it again later.
    Again(String),
    /// A Cluster node sent it elsewhere (`MOVED`, `ASK`): it did not run.
    Redirected(Redirect),
    /// AOF commands: how many ran, and the errors of the others.
    Group {
        ok: u64,
        errors: Vec<String>,
    },
    /// An `MSETNX` that set nothing (or a refused `MSET`): its keys go again one by one.
    Split,
}

/// Whether a reply holds `needle` as a bulk string anywhere.
pub(crate) fn contains_bulk(r: &Reply, needle: &[u8]) -> bool {
    match r {
        Reply::Bulk(b) | Reply::Simple(b) => b == needle,
        Reply::Array(a) => a.iter().any(|r| contains_bulk(r, needle)),
        Reply::Map(m) => m
            .iter()
            .any(|(k, v)| contains_bulk(k, needle) || contains_bulk(v, needle)),
        _ => false,
    }
}

pub(crate) fn error_text(e: &[u8]) -> String {
    String::from_utf8_lossy(e).into_owned()
}

/// Whether a unit is one `MULTI`/`EXEC`.
pub(crate) fn is_multi(kind: UnitKind) -> bool {
    match kind {
        UnitKind::Rewrite { multi, .. } => multi,
        UnitKind::Part { .. } | UnitKind::Commands => true,
        _ => false,
    }
}

/// The results of a `MULTI` unit's commands (the `EXEC` array), or of a plain unit.
pub(crate) fn results_of<'r>(u: &Unit, replies: &'r [Reply]) -> Option<&'r [Reply]> {
    if is_multi(u.kind) {
        match replies.last() {
            Some(Reply::Array(a)) => Some(a),
            _ => None,
        }
    } else {
        Some(replies)
    }
}

/// Whether a rewrite unit's final rename (RENAME, or RENAMENX followed by DEL tmp) succeeded.
pub(crate) fn renamed_into_place(u: &Unit, replies: &[Reply]) -> bool {
    let nx = match u.kind {
        UnitKind::Rewrite { nx, .. } => nx,
        UnitKind::Part { last: true, nx } => nx,
        _ => return false,
    };
    let Some(results) = results_of(u, replies) else {
        return false;
    };
    if nx {
        results.len() >= 2 && results[results.len() - 2] == Reply::Integer(1)
    } else {
        results.last().is_some_and(|r| !r.is_error())
    }
}

/// Read a unit's replies.
pub(crate) fn settle(u: &Unit, replies: &[Reply]) -> Settled {
    // A Cluster node that does not serve the slot answers MOVED or ASK to the first command
    // (MULTI units: when queued, and EXEC then aborts): nothing ran.
    if let Some(r) = replies.iter().find_map(|r| match r {
        Reply::Error(e) => parse_redirect(e),
        _ => None,
    }) {
        return Settled::Redirected(r);
    }
    // "Not now": a single command did not run; in a MULTI unit, nothing ran if MULTI
    // itself went through (EXECABORT) or every command was refused. A refused MULTI
    // followed by commands that ran means they ran outside a transaction: the rewrite path
    // can run again (it starts with DEL tmp and ends with the rename), parts and AOF
    // commands cannot.
    if let Some(Reply::Error(e)) = replies.iter().find(|r| match r {
        Reply::Error(e) => transient_reply(e),
        _ => false,
    }) {
        let multi = is_multi(u.kind);
        let all_refused = replies.iter().all(|r| r.is_error());
        let multi_ok = matches!(replies.first(), Some(r) if !r.is_error());
        if !multi || multi_ok || all_refused || matches!(u.kind, UnitKind::Rewrite { .. }) {
            return Settled::Again(error_text(e));
        }
        return Settled::Failed(format!(
            "{} arrived while its MULTI was refused; the target may hold it partly applied",
            error_text(e)
        ));
    }
    match u.kind {
        UnitKind::Restore => match replies.first() {
            Some(Reply::Error(e)) if e.starts_with(b"BUSYKEY") => Settled::Exists(Existing::Key),
            Some(Reply::Error(e)) => Settled::Failed(error_text(e)),
            _ => Settled::Written,
        },
        UnitKind::Set { nx } => match replies.first() {
            Some(Reply::Nil) if nx => Settled::Exists(Existing::Key),
            Some(Reply::Error(e)) => Settled::Failed(error_text(e)),
            _ => Settled::Written,
        },
        UnitKind::MultiSet { .. } => match replies.first() {
            Some(Reply::Integer(0)) | Some(Reply::Error(_)) => Settled::Split,
            _ => Settled::Written,
        },
        UnitKind::Function => match replies.first() {
            Some(Reply::Error(e)) if String::from_utf8_lossy(e).contains("already exists") => {
                Settled::Exists(Existing::Library)
            }
            Some(Reply::Error(e)) => Settled::Failed(error_text(e)),
            _ => Settled::Written,
        },
        UnitKind::Commands => {
            let Some(results) = results_of(u, replies) else {
                return Settled::Failed(exec_failure(replies));
            };
            // Name each refused command: results follow the unit's commands after MULTI.
            let mut errors = Vec::new();
            if results.iter().any(|r| r.is_error()) {
                let cmds = commands_of(&u.bytes);
                for (i, r) in results.iter().enumerate() {
                    if let Reply::Error(e) = r {
                        let label = cmds
                            .get(i + 1)
                            .map(|c| {
                                let l: Vec<&[u8]> =
                                    c.iter().take(2).map(|a| a.as_slice()).collect();
                                String::from_utf8_lossy(&l.join(&b' ')).into_owned()
                            })
                            .unwrap_or_else(|| "?".into());
                        errors.push(format!("{label}\u{0}{}", error_text(e)));
                    }
                }
            }
            Settled::Group {
                ok: u.count.saturating_sub(errors.len() as u64),
                errors,
            }
        }
        UnitKind::Rewrite { nx, .. } | UnitKind::Part { nx, .. } => {
            let Some(results) = results_of(u, replies) else {
                return Settled::Failed(exec_failure(replies));
            };
            if let Some(Reply::Error(e)) = results.iter().find(|r| r.is_error()) {
                return Settled::Failed(error_text(e));
            }
            let renames = match u.kind {
                UnitKind::Part { last, .. } => last,
                _ => true,
            };
            if renames
                && nx
                && results.len() >= 2
                && results[results.len() - 2] == Reply::Integer(0)
            {
                return Settled::Exists(Existing::Key);
            }
            Settled::Written
        }
    }
}

/// A refusal of a module value, naming its type.
pub(crate) fn with_module(u: &Unit, msg: String) -> String {
    match &u.module {
        Some(m) if msg.contains("Bad data format") => format!(
            "{msg}: the target could not load this value of module type {m}; \
             is its module loaded there, at a version that reads this encoding?"
        ),
        Some(m) => format!("{msg} (a value of module type {m})"),
        None => msg,
    }
}

/// Why a `MULTI` unit's `EXEC` returned no results: the command refused when queued.
pub(crate) fn exec_failure(replies: &[Reply]) -> String {
    replies
        .iter()
        .find_map(|r| match r {
            Reply::Error(q) => Some(error_text(q)),
            _ => None,
        })
        .unwrap_or_else(|| "unexpected reply to EXEC".into())
}

#[cfg(test)]
#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::write_command;

    fn unit(kind: UnitKind) -> Unit {
        Unit::new(0, b"k".to_vec(), Vec::new(), 1, kind, 0)
    }

    #[test]
    fn module_refusals_name_the_type() {
        let mut u = unit(UnitKind::Restore);
        let bad = settle(&u, &[Reply::Error(b"ERR Bad data format".to_vec())]);
        let Settled::Failed(msg) = bad else {
            panic!("{bad:?}")
        };
        assert_eq!(with_module(&u, msg.clone()), msg);
        u.module = Some("ReJSON-RL (encver 3)".into());
        assert_eq!(
            with_module(&u, msg),
            "ERR Bad data format: the target could not load this value of module type \
             ReJSON-RL (encver 3); is its module loaded there, at a version that reads this \
             encoding?"
        );
        assert_eq!(
            with_module(&u, "OOM command not allowed".into()),
            "OOM command not allowed (a value of module type ReJSON-RL (encver 3))"
        );
        assert_eq!(u.clone_meta().module, u.module);
    }

    #[test]
    fn settles_replies() {
        let ok = Reply::Simple(b"OK".to_vec());
        let err = |s: &str| Reply::Error(s.as_bytes().to_vec());
        assert_eq!(
            settle(&unit(UnitKind::Restore), std::slice::from_ref(&ok)),
            Settled::Written
        );
        assert_eq!(
            settle(
                &unit(UnitKind::Restore),
                &[err("BUSYKEY Target key name already exists.")]
            ),
            Settled::Exists(Existing::Key)
        );
        assert_eq!(
            settle(&unit(UnitKind::Set { nx: true }), &[Reply::Nil]),
            Settled::Exists(Existing::Key)
        );
        assert!(matches!(
            settle(&unit(UnitKind::Restore), &[err("LOADING Redis is loading")]),
            Settled::Again(_)
        ));
        assert!(matches!(
            settle(&unit(UnitKind::Restore), &[err("OOM command not allowed")]),
            Settled::Failed(_)
        ));
        // MULTI, DEL, RPUSH, RENAMENX, DEL, EXEC -> [1, 3, 0, 1]: a conflict.
        let rw = UnitKind::Rewrite {
            nx: true,
            multi: true,
        };
        let q = Reply::Simple(b"QUEUED".to_vec());
        let exec = Reply::Array(vec![
            Reply::Integer(0),
            Reply::Integer(3),
            Reply::Integer(0),
            Reply::Integer(1),
        ]);
        let replies = [ok.clone(), q.clone(), q.clone(), q.clone(), q.clone(), exec];
        assert_eq!(settle(&unit(rw), &replies), Settled::Exists(Existing::Key));
        assert!(!renamed_into_place(&unit(rw), &replies));
        // EXECABORT after a refused queued command.
        let replies = [
            ok.clone(),
            err("OOM no"),
            err("EXECABORT Transaction discarded"),
        ];
        assert_eq!(
            settle(&unit(rw), &replies),
            Settled::Failed("OOM no".into())
        );
        // A MULTI refused as LOADING with commands that then ran: parts cannot run again.
        let part = UnitKind::Part {
            last: false,
            nx: false,
        };
        let replies = [
            err("LOADING x"),
            Reply::Integer(3),
            err("ERR EXEC without MULTI"),
        ];
        assert!(matches!(settle(&unit(part), &replies), Settled::Failed(_)));
        assert!(matches!(settle(&unit(rw), &replies), Settled::Again(_)));
        let all = [err("LOADING x"), err("LOADING x"), err("LOADING x")];
        assert!(matches!(settle(&unit(part), &all), Settled::Again(_)));
    }

    #[test]
    fn groups_name_their_failed_commands() {
        let mut bytes = Vec::new();
        for c in [
            &[&b"MULTI"[..]][..],
            &[b"INCR", b"a"],
            &[b"LPUSH", b"a", b"x"],
            &[b"SET", b"m", b"1"],
            &[b"EXEC"],
        ] {
            write_command(&mut bytes, c);
        }
        let mut u = Unit::new(0, b"INCR a".to_vec(), bytes, 5, UnitKind::Commands, 0);
        u.count = 2;
        let q = Reply::Simple(b"QUEUED".to_vec());
        let replies = [
            Reply::Simple(b"OK".to_vec()),
            q.clone(),
            q.clone(),
            q,
            Reply::Array(vec![
                Reply::Integer(1),
                Reply::Error(b"WRONGTYPE Operation".to_vec()),
                Reply::Simple(b"OK".to_vec()),
            ]),
        ];
        assert_eq!(
            settle(&u, &replies),
            Settled::Group {
                ok: 1,
                errors: vec!["LPUSH a\u{0}WRONGTYPE Operation".into()]
            }
        );
    }

    #[test]
    fn transient_replies() {
        assert!(transient_reply(
            b"LOADING Redis is loading the dataset in memory"
        ));
        assert!(transient_reply(b"BUSY Redis is busy running a script."));
        assert!(transient_reply(
            b"TRYAGAIN Multiple keys request during rehashing of slot"
        ));
        assert!(!transient_reply(b"BUSYKEY Target key name already exists."));
        assert!(!transient_reply(b"ERR unknown command"));
    }
}
