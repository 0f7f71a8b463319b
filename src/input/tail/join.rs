//! The join of a single-file AOF across a rewrite (Redis 6.2 and older).
//!
//! How Redis 6.2 rewrites `appendonly.aof` (`rewriteAppendOnlyFileBackground`,
//! `feedAppendOnlyFile`, `backgroundRewriteDoneHandler` in `src/aof.c`): it forks a child that
//! writes the dataset as an RDB preamble to a temp file, and sets the selected db to "none",
//! so the first command written after the fork is preceded by a `SELECT`. From the fork on,
//! each command's bytes go both to the old file and to a rewrite buffer; when the child is
//! done, the buffer is appended to the temp file, which is renamed over the old one. Commands
//! still waiting to be written to the old file at that moment go only to the new one. So the
//! old file ends with `old[F..E]` (F: its size at the fork, E: its end), and the new file's
//! commands, right after its preamble (at R), start with exactly those bytes:
//! `new[R..R + E - F] == old[F..E]`, and `old[F]` is a `SELECT` (unless `F == E`).
//!
//! The rule. A *candidate* is a top-level `SELECT` of the old file at `b` such that the new
//! file's commands start with `old[b..E]`. Then:
//!
//! * **No candidate**: no command reached the old file after the fork (had one, its bytes,
//!   opened by that `SELECT`, would start the new file's commands). The join is at R: every
//!   command after the preamble is new. Proven.
//! * **One candidate b**: the join is at `R + E - b`. The only other reading of the same
//!   bytes is that no command reached the old file after the fork *and* the first commands
//!   written after it repeat, byte for byte, the old file's last ones since a `SELECT`. Where
//!   the commands carry changing values (ids, counters' keys with new members, timestamps)
//!   that cannot happen; with a workload that only repeats identical commands (`INCR k` and
//!   nothing else) it can, and this rule then skips the repeats. Taken as proven.
//! * **Several candidates**: the old file's end repeats itself at `SELECT` boundaries, and
//!   each candidate gives another join: ambiguous, not proven.
//! * **A new file without an RDB preamble** (`aof-use-rdb-preamble no`): its rewritten dataset
//!   is commands too, and nothing marks where it ends: not proven.
//!
//! Also assumed, not proven from bytes: that the file found at the path is the old one's
//! direct successor. The tail opens each file that appears there as soon as it is notified
//! (or, without notifications, at its next look, every `poll`); a file that was itself
//! replaced before that (two rewrites within that time) goes unnoticed.
//!
//! Not proven → the tail stops with [`TailErrorKind::JoinNotProven`], or with
//! `resync_on_loss` starts over from the new file's preamble.

use super::*;

/// The bytes compared at a time.
const COMPARE_CHUNK: usize = 64 << 10;

impl AofTail {
    /// The single file was replaced and its old self is read to its end: continue in the
    /// new one where the join is proven.
    pub(super) fn join(&mut self) -> Result<AtEof> {
        let Source::Single { path } = &self.source else {
            return Ok(AtEof::Idle);
        };
        let path = path.clone();
        let Some(file) = self.lock()?.successors.pop_front() else {
            return Ok(AtEof::Idle);
        };
        let mut next = Reader::with_file(file, &path, None)?;
        next.find_resp_start()?;
        let old_end = self.cur.at;
        match self.find_join(&next)? {
            Ok(overlap) => {
                let at = next.resp_start + overlap;
                let from = old_end - overlap;
                let map = |s: u64| s - from + next.resp_start;
                next.selects = self
                    .cur
                    .selects
                    .iter()
                    .filter(|&&s| s >= from)
                    .map(|&s| map(s))
                    .collect();
                next.selects_forgotten = self.cur.selects_forgotten.filter(|&s| s >= from).map(map);
                let note = if overlap == 0 {
                    self.db = 0;
                    format!(
                        "{} was rewritten (inode {} → {}): no command reached the old file after the rewrite began, so every command after the new file's RDB preamble (+{:#x}) is new",
                        next.name, self.cur.ino, next.ino, next.resp_start
                    )
                } else {
                    format!(
                        "{} was rewritten (inode {} → {}): the new file's commands start with the old file's last {overlap} bytes (from its SELECT at +{from:#x}, where the rewrite began); continuing after them, at +{at:#x}",
                        next.name, self.cur.ino, next.ino
                    )
                };
                next.seek(at);
                self.cur = next;
                let pos = self.cur.pos(at)?;
                self.pending.push_back(TailEvent::Rewritten { pos, note });
            }
            Err(why) if self.resync => {
                let start = next.resp_start;
                next.seek(start);
                self.cur = next;
                self.db = 0;
                self.pos = self.cur.pos(0)?;
                if start > 0 {
                    self.queue_preamble()?;
                }
                self.note_resync(format!(
                    "{} was rewritten and the join is not proven: {why}",
                    self.cur.name
                ))?;
            }
            Err(why) => {
                return Err(tail_err(
                    &self.cur.path,
                    old_end,
                    TailErrorKind::JoinNotProven(why),
                ));
            }
        }
        Ok(AtEof::Again)
    }

    /// The overlap (bytes of the new file's commands that the old file already had), or why
    /// it is not proven. `self.cur` is the old file, read to its end.
    fn find_join(&self, next: &Reader) -> Result<std::result::Result<u64, String>> {
        if next.resp_start == 0 {
            return Ok(Err(
                "the new file has no RDB preamble (aof-use-rdb-preamble no), so nothing marks where its rewritten dataset ends".into(),
            ));
        }
        let old = &self.cur;
        let end = old.at;
        let commands = next.len()?.saturating_sub(next.resp_start);
        // A candidate's bytes must all be in the new file's commands.
        let lowest = end.saturating_sub(commands);
        let mut found = Vec::new();
        let mut test = |b: u64| -> Result<bool> {
            if same_bytes(old, b, next, next.resp_start, end - b)? {
                found.push(b);
            }
            Ok(found.len() < 2)
        };
        if old.selects_forgotten.is_none_or(|f| f < lowest) {
            for &b in old.selects.iter().filter(|&&b| b >= lowest) {
                if !test(b)? {
                    break;
                }
            }
        } else {
            for_each_select(old, lowest, &mut test)?;
        }
        Ok(match found.as_slice() {
            [] => Ok(0),
            [b] => Ok(end - b),
            _ => Err(format!(
                "the old file's last commands repeat themselves: its ends from the SELECTs at +{:#x} and +{:#x} both start the new file's commands, and each gives another place to continue",
                found[0], found[1]
            )),
        })
    }
}

/// Calls `f` with the offset of each top-level `SELECT` of `old` from `lowest` on (reading the
/// file again from its commands' start), while it returns `true`.
fn for_each_select(
    old: &Reader,
    lowest: u64,
    f: &mut dyn FnMut(u64) -> Result<bool>,
) -> Result<()> {
    let file = old.file.try_clone().map_err(io_err(&old.path))?;
    let mut r = Reader::with_file(file, &old.path, None)?;
    r.seek(old.resp_start);
    let mut in_txn = false;
    while r.at < old.at {
        match r.item()? {
            Item::Command { start, args } => {
                let name = args.first().map(Vec::as_slice).unwrap_or_default();
                let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
                if is("multi") {
                    in_txn = true;
                } else if is("exec") || is("discard") {
                    in_txn = false;
                } else if is("select") && !in_txn && start >= lowest && !f(start)? {
                    return Ok(());
                }
            }
            Item::Annotation(_) => {}
            Item::More => {
                if r.fill()? == 0 {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Whether `a` at `a_off` and `b` at `b_off` hold the same `len` bytes (both must have them).
fn same_bytes(a: &Reader, a_off: u64, b: &Reader, b_off: u64, len: u64) -> Result<bool> {
    let mut done = 0u64;
    while done < len {
        let n = usize::try_from(len - done)
            .unwrap_or(usize::MAX)
            .min(COMPARE_CHUNK);
        let x = a.read_exact_at(a_off + done, n)?;
        let y = b.read_exact_at(b_off + done, n)?;
        if x.len() != n || x != y {
            return Ok(false);
        }
        done += n as u64;
    }
    Ok(true)
}
