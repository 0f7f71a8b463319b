//! A memory-mapped input file, and what happens when it changes while it is read.
//!
//! Inputs are read through a memory map (memmap2): the reader borrows the file's bytes
//! without copying them. The price is that the file can change under the map:
//!
//! - It shrinks (truncated, or rewritten in place by `cp` or `>`): the next read of a page past
//!   the new end faults with SIGBUS. Each map is registered in [`crate::sigsafe::MAPPED`]
//!   (address range and name) before a byte of it is read, so that the binary's SIGBUS
//!   handler can name the file and exit 1 instead of dying without a word.
//! - It is rewritten in place at the same size, or grows: the map shows whatever bytes are
//!   there when a page is read, old or new. [`Mapped::settle`] compares size and modification
//!   time at the end of a walk with those at opening (`fstat` of the open file) and turns such
//!   a change into an error naming the file, even when the bytes decoded (with a checksum, a
//!   rewritten RDB usually fails it first: the change is then the error reported).
//!
//! Not a change: a file replaced by a rename (as Redis saves an RDB, or as `convert -o`
//! writes): the map keeps the old file, whole. Not detected: a rewrite in place that keeps the
//! size and sets the modification time back, and a file that grows while its content before
//! the old end changes too, when that file is an AOF: an AOF grows while Redis appends to it,
//! and the part that was there at opening is what is read, so growth alone is no error there.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use memmap2::Mmap;

use super::Walked;
use crate::error::{Error, Result};
use crate::sigsafe::{Entry, MAPPED, TEXT_MAX};

/// What tells a changed file: its size and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: (i64, i64),
}

impl Stamp {
    fn of(f: &File) -> std::io::Result<Stamp> {
        let m = f.metadata()?;
        Ok(Stamp {
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
        })
    }
}

/// An input file mapped into memory, registered for the SIGBUS handler while it lives.
pub struct Mapped {
    // Dropped first: the handler must not see a range that is no longer this file's.
    _registered: Option<Entry>,
    map: Mmap,
    file: File,
    at_open: Stamp,
    name: String,
}

impl std::ops::Deref for Mapped {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.map
    }
}

impl Mapped {
    /// Map `path` (called `name` in errors); `None` for an empty file (nothing to map).
    pub fn open(path: &Path, name: &str) -> Result<Option<Mapped>> {
        let file = File::open(path).map_err(|e| Error::io(name, e))?;
        let at_open = Stamp::of(&file).map_err(|e| Error::io(name, e))?;
        if at_open.len == 0 {
            return Ok(None);
        }
        // SAFETY: the file is opened read-only. Another process may still change it while it
        // is mapped; what follows then is this module's subject (see the module doc).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(name, e))?;
        let shown = &name.as_bytes()[..name.len().min(TEXT_MAX - 1)];
        let registered = MAPPED.insert(map.as_ptr() as usize, map.len(), shown);
        Ok(Some(Mapped {
            _registered: registered,
            map,
            file,
            at_open,
            name: name.to_string(),
        }))
    }

    /// How the file changed since it was opened, if it did; growth counts only when not
    /// `may_grow`.
    fn change(&self, may_grow: bool) -> Option<String> {
        let (was, now) = (self.at_open, Stamp::of(&self.file).ok()?);
        if now == was || (may_grow && now.len > was.len) {
            return None;
        }
        Some(match now.len.cmp(&was.len) {
            std::cmp::Ordering::Less => format!("it shrank from {} to {} bytes", was.len, now.len),
            std::cmp::Ordering::Greater => format!("it grew from {} to {} bytes", was.len, now.len),
            std::cmp::Ordering::Equal => "it kept its size but was written to".to_string(),
        })
    }

    /// The result of a walk over this file, checked for a change of the file meanwhile: a
    /// change is an error, and replaces the walk's own error (which it likely caused). An AOF
    /// (the walk read commands) may grow; a file that merely grew cannot have caused an error.
    pub fn settle(&self, r: Result<Walked>) -> Result<Walked> {
        let may_grow = r.as_ref().map_or(true, |w| w.aof_commands);
        let Some(how) = self.change(may_grow) else {
            return r;
        };
        let then = match &r {
            Err(e) => format!("; reading it failed: {e}"),
            Ok(_) => String::new(),
        };
        Err(Error::Input {
            path: self.name.clone(),
            msg: format!(
                "the file changed while it was being read ({how}), so what was read may mix \
                 old and new data; read a copy that nothing writes to{then}"
            ),
        })
    }
}
