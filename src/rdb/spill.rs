//! The stream reader's buffer: on the heap while small, then in a temporary file mapped into
//! memory.
//!
//! [`super::reader::StreamReader`] must hold one whole record to decode it, and a record is
//! one whole value: a string of 512 MB, a hash of millions of fields. Held on the heap, such a
//! record costs its size in anonymous memory, which a machine may not have (an import from a
//! pipe, a `sync` from a live source). Past [`Buffer::spill_at`] bytes the buffer moves into
//! a file in the temporary directory, unlinked as soon as it is created (nothing is left
//! behind, even after `kill -9`) and mapped: the record then costs page cache, which the
//! kernel writes back and evicts under pressure, the way a memory-mapped input file does.
//! The file is sparse until bytes arrive, so growing it costs nothing until they do. When the
//! big record has been consumed, the buffer goes back to the heap.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::MmapMut;

/// Heap bytes kept at most; records larger than this go to a file.
pub const SPILL_AT: usize = 16 << 20;

/// Temporary files made by this process, for unique names.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A growable byte buffer; see the module doc.
pub struct Buffer {
    heap: Vec<u8>,
    file: Option<(File, MmapMut)>,
    spill_at: usize,
    dir: PathBuf,
}

impl Buffer {
    /// A heap buffer of `len` zero bytes that moves to a file in `dir` past [`SPILL_AT`].
    pub fn new(len: usize, dir: PathBuf) -> Buffer {
        Buffer {
            heap: vec![0; len],
            file: None,
            spill_at: SPILL_AT,
            dir,
        }
    }

    /// Move to a file past `n` bytes instead of [`SPILL_AT`] (tests).
    pub fn set_spill_at(&mut self, n: usize) {
        self.spill_at = n;
    }

    /// Make the file in `dir` instead.
    pub fn set_dir(&mut self, dir: PathBuf) {
        self.dir = dir;
    }

    /// Whether the bytes are in a file now.
    pub fn spilled(&self) -> bool {
        self.file.is_some()
    }

    /// Grow to `n` bytes, keeping the first `keep`; past the spill size, into a file.
    pub fn grow(&mut self, n: usize, keep: usize) -> io::Result<()> {
        if let Some((file, map)) = &mut self.file {
            file.set_len(n as u64)?;
            // SAFETY: the file is this process's own, unlinked: nothing else can change or
            // truncate it while it is mapped.
            *map = unsafe { MmapMut::map_mut(&*file)? };
            return Ok(());
        }
        if n <= self.spill_at {
            self.heap.resize(n, 0);
            return Ok(());
        }
        let file = self.temp_file()?;
        file.set_len(n as u64)?;
        // SAFETY: as above.
        let mut map = unsafe { MmapMut::map_mut(&file)? };
        let keep = keep.min(self.heap.len());
        map[..keep].copy_from_slice(&self.heap[..keep]);
        self.heap = Vec::new();
        self.file = Some((file, map));
        Ok(())
    }

    /// Back to a heap buffer of `len` bytes holding `bytes` (the file, if any, is dropped).
    pub fn shrink(&mut self, len: usize, bytes: std::ops::Range<usize>) {
        let mut heap = vec![0; len.max(bytes.len())];
        heap[..bytes.len()].copy_from_slice(&self[bytes]);
        self.heap = heap;
        self.file = None;
    }

    /// A new file in the directory, unlinked at once: only this handle reaches it.
    fn temp_file(&self) -> io::Result<File> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!(".rdbferry-record-{}-{n}", std::process::id());
        let path = self.dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| named(&path, e))?;
        std::fs::remove_file(&path).map_err(|e| named(&path, e))?;
        Ok(file)
    }
}

fn named(path: &std::path::Path, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!(
            "a temporary file for a large record, {}: {e}",
            path.display()
        ),
    )
}

impl Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.file {
            Some((_, map)) => map,
            None => &self.heap,
        }
    }
}

impl DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.file {
            Some((_, map)) => map,
            None => &mut self.heap,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_into_a_file_and_back_keeping_the_bytes() {
        let mut b = Buffer::new(4, std::env::temp_dir());
        b.set_spill_at(8);
        b.copy_from_slice(b"abcd");
        b.grow(8, 4).unwrap();
        assert!(!b.spilled());
        b[4..].copy_from_slice(b"efgh");
        b.grow(1 << 20, 8).unwrap();
        assert!(b.spilled());
        assert_eq!(&b[..8], b"abcdefgh");
        assert!(b[8..].iter().all(|&x| x == 0));
        b.grow(2 << 20, 8).unwrap();
        assert_eq!(&b[..8], b"abcdefgh");
        b.shrink(16, 2..6);
        assert!(!b.spilled());
        assert_eq!(&b[..4], b"cdef");
        assert_eq!(b.len(), 16);
    }

    #[test]
    fn a_directory_that_cannot_hold_it_is_named() {
        let dir = std::env::temp_dir().join("rdbferry-no-such-dir-for-spill");
        let mut b = Buffer::new(4, dir);
        b.set_spill_at(8);
        let e = b.grow(64, 4).unwrap_err().to_string();
        assert!(e.contains("rdbferry-no-such-dir-for-spill"), "{e}");
        assert!(e.contains("large record"), "{e}");
    }
}
