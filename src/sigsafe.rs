//! What a signal handler may read: fixed-size tables of byte strings, each tagged with an
//! address range, written by ordinary code with atomics and read without a lock, an
//! allocation or a panic.
//!
//! Two tables, written by the library and read by the binary's signal handlers (`src/cli/`,
//! which owns the signals):
//!
//! - [`MAPPED`]: every memory-mapped input (address range and file name), so that the SIGBUS
//!   handler can say which file changed under rdbferry (a mapped file that shrinks faults the
//!   reader on its next access to the lost pages).
//! - [`TEMP_FILES`]: every temporary output file not yet committed (its path), so that a
//!   handler for a fatal signal can remove it ([`remove_temp_files`]) before the process dies.
//!
//! Why fixed tables and not a `Mutex<Vec<_>>`: a handler may interrupt the very thread that
//! holds the lock, or the allocator half way; only atomics and system calls such as `write(2)`
//! and `unlink(2)` are safe there. Each slot is a small seqlock: a reader copies it, then checks
//! that its generation did not change meanwhile. A full table leaves an entry out: the fault
//! message then names no file, and the handler does not remove that temporary file (ordinary
//! errors still do). 64 slots are more than the inputs or outputs open at once.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicUsize, Ordering, fence};

/// Longest text kept, with its terminating NUL (`PATH_MAX` on Linux).
pub const TEXT_MAX: usize = 4096;

/// Slots per table.
const SLOTS: usize = 64;

// Slot states, in the low two bits of `Slot::state`; the bits above count the insertions, so
// that a reader notices a slot that was freed and filled again while it copied it.
const FREE: u32 = 0;
const BUSY: u32 = 1;
const READY: u32 = 2;
const STATUS: u32 = 3;

struct Slot {
    state: AtomicU32,
    start: AtomicUsize,
    len: AtomicUsize,
    text_len: AtomicUsize,
    text: [AtomicU8; TEXT_MAX],
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            state: AtomicU32::new(FREE),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            text_len: AtomicUsize::new(0),
            text: [const { AtomicU8::new(0) }; TEXT_MAX],
        }
    }
}

/// A table of (address range, text) entries; see the module doc.
pub struct Table {
    slots: [Slot; SLOTS],
}

/// One entry of a [`Table`]; removed when dropped.
#[derive(Debug)]
pub struct Entry {
    table: &'static Table,
    index: usize,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sigsafe::Table")
    }
}

/// One entry as a reader copied it.
#[derive(Debug, Clone, Copy)]
pub struct Copied {
    /// Start of the address range.
    pub start: usize,
    /// Length of the address range.
    pub len: usize,
    /// Length of the text copied into the reader's buffer (a NUL follows it).
    pub text_len: usize,
}

impl Table {
    /// An empty table (for a `static`).
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Table {
        Table {
            slots: [const { Slot::new() }; SLOTS],
        }
    }

    /// Add `text` for the range `start..start + len`. `None` when the table is full or the
    /// text (with its NUL) is longer than [`TEXT_MAX`].
    pub fn insert(&'static self, start: usize, len: usize, text: &[u8]) -> Option<Entry> {
        if text.len() >= TEXT_MAX {
            return None;
        }
        for (index, slot) in self.slots.iter().enumerate() {
            let cur = slot.state.load(Ordering::Relaxed);
            if cur & STATUS != FREE {
                continue;
            }
            let generation = (cur & !STATUS).wrapping_add(STATUS + 1);
            if slot
                .state
                .compare_exchange(cur, generation | BUSY, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            fence(Ordering::Release);
            slot.start.store(start, Ordering::Relaxed);
            slot.len.store(len, Ordering::Relaxed);
            for (to, &b) in slot.text.iter().zip(text.iter().chain(&[0])) {
                to.store(b, Ordering::Relaxed);
            }
            slot.text_len.store(text.len(), Ordering::Relaxed);
            slot.state.store(generation | READY, Ordering::Release);
            return Some(Entry { table: self, index });
        }
        None
    }

    /// Copy entry `index` into `buf` (text, then a NUL), if it is there and did not change
    /// while it was copied. Async-signal-safe.
    fn read(&self, index: usize, buf: &mut [u8; TEXT_MAX]) -> Option<Copied> {
        let slot = self.slots.get(index)?;
        let before = slot.state.load(Ordering::Acquire);
        if before & STATUS != READY {
            return None;
        }
        let copied = Copied {
            start: slot.start.load(Ordering::Relaxed),
            len: slot.len.load(Ordering::Relaxed),
            text_len: slot.text_len.load(Ordering::Relaxed).min(TEXT_MAX - 1),
        };
        for (to, from) in buf.iter_mut().zip(&slot.text) {
            *to = from.load(Ordering::Relaxed);
        }
        buf[copied.text_len] = 0;
        fence(Ordering::Acquire);
        (slot.state.load(Ordering::Relaxed) == before).then_some(copied)
    }

    /// The entry whose range holds `addr`, its text copied into `buf`. Async-signal-safe.
    pub fn find(&self, addr: usize, buf: &mut [u8; TEXT_MAX]) -> Option<Copied> {
        (0..SLOTS).find_map(|i| {
            self.read(i, buf)
                .filter(|c| addr >= c.start && addr - c.start < c.len)
        })
    }

    /// Call `f` with the text of every entry, NUL-terminated (a C string). Async-signal-safe
    /// as long as `f` is.
    pub fn for_each(&self, mut f: impl FnMut(&[u8])) {
        let mut buf = [0u8; TEXT_MAX];
        for i in 0..SLOTS {
            if let Some(c) = self.read(i, &mut buf) {
                f(&buf[..=c.text_len]);
            }
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(slot) = self.table.slots.get(self.index) {
            let cur = slot.state.load(Ordering::Relaxed);
            slot.state.store(cur & !STATUS, Ordering::Release);
        }
    }
}

/// The memory-mapped inputs: address range and name.
pub static MAPPED: Table = Table::new();

/// The temporary output files not yet committed: their paths (range unused).
pub static TEMP_FILES: Table = Table::new();

/// Remove every temporary file in [`TEMP_FILES`]. Async-signal-safe: for a handler of a fatal
/// signal.
pub fn remove_temp_files() {
    TEMP_FILES.for_each(|path| {
        // SAFETY: `path` ends with a NUL (see `Table::for_each`); unlink(2) only reads it.
        unsafe {
            libc::unlink(path.as_ptr().cast());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    static T: Table = Table::new();

    #[test]
    fn insert_find_remove_and_reuse() {
        let a = T.insert(1000, 100, b"a.rdb").unwrap();
        let b = T.insert(5000, 10, b"b.rdb").unwrap();
        let mut buf = [0u8; TEXT_MAX];
        let c = T.find(1099, &mut buf).unwrap();
        assert_eq!(&buf[..c.text_len + 1], b"a.rdb\0");
        assert!(T.find(1100, &mut buf).is_none() && T.find(999, &mut buf).is_none());
        assert_eq!(T.find(5000, &mut buf).map(|c| c.start), Some(5000));
        drop(a);
        assert!(T.find(1000, &mut buf).is_none());
        let mut seen = Vec::new();
        T.for_each(|t| seen.push(t.to_vec()));
        assert_eq!(seen, [b"b.rdb\0".to_vec()]);
        drop(b);
        let long = vec![b'x'; TEXT_MAX];
        assert!(T.insert(0, 1, &long).is_none());
        let all: Vec<Entry> = (0..SLOTS).map(|i| T.insert(i, 1, b"n").unwrap()).collect();
        assert!(T.insert(0, 1, b"full").is_none());
        drop(all);
        assert!(T.insert(0, 1, b"again").is_some());
    }
}
