//! Output files that are written whole or not at all.
//!
//! Every file rdbferry writes goes through [`AtomicFile`]: the bytes go to a temporary file in
//! the same directory (`.NAME.rdbferry-tmp-PID-N`), and [`AtomicFile::commit`] fsyncs it,
//! renames it over `NAME` and fsyncs the directory. Until then the previous `NAME` is untouched;
//! an `AtomicFile` dropped without a commit (an error, a panic) removes its temporary file, and
//! so does the binary's handler of a fatal signal (Ctrl-C, SIGTERM, SIGBUS), through
//! [`crate::sigsafe::TEMP_FILES`]. A reader of `NAME` sees the old file or the new one, never a
//! part of it.
//!
//! [`refuse_input`] is the other half: an output that is one of the inputs (the same device
//! and inode, through any symlink or hard link, or a file inside an input `appendonlydir`) is
//! refused before anything is opened for writing, since the inputs are memory-mapped and read
//! while the output is written.
//!
//! An output that exists and is not a regular file (`/dev/null`, a terminal, a FIFO) is opened
//! and written in place: there is nothing to replace, and renaming over a device would put a
//! regular file where the device was.
//!
//! Not done here: standard output (`-o -`) is a stream and is written as it comes; the owner
//! and group of a replaced file are not kept (its permission bits are).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::sigsafe::{Entry, TEMP_FILES};

/// Temporary files made by this process, for unique names.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A file being written in place of `dest`; see the module doc.
///
/// ```
/// use std::io::Write;
/// # let dir = std::env::temp_dir().join(format!("rdbferry-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// let dest = dir.join("out.jsonl");
/// let mut f = rdbferry::sink::file::AtomicFile::create(&dest)?;
/// f.write_all(b"{}\n")?;
/// assert!(!dest.exists()); // nothing there until the commit
/// f.commit()?;
/// assert_eq!(std::fs::read(&dest)?, b"{}\n");
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct AtomicFile {
    file: File,
    /// The temporary file; `None` when `dest` is a device or a FIFO, written in place.
    tmp: Option<PathBuf>,
    dest: PathBuf,
    committed: bool,
    /// The temporary file's place in [`TEMP_FILES`], freed after the file is gone.
    _registered: Option<Entry>,
}

/// Where writing `dest` really goes: a symlink is followed, so that the link stays and the
/// file it points to is replaced (as writing through the link did).
fn resolve(dest: &Path) -> PathBuf {
    let is_link = fs::symlink_metadata(dest).is_ok_and(|m| m.file_type().is_symlink());
    if !is_link {
        return dest.to_path_buf();
    }
    fs::canonicalize(dest)
        .or_else(|_| {
            // A dangling link: its target, relative to the link's directory.
            let target = fs::read_link(dest)?;
            Ok::<_, io::Error>(dest.parent().unwrap_or(Path::new("")).join(target))
        })
        .unwrap_or_else(|_| dest.to_path_buf())
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |e| Error::io(path.display().to_string(), e)
}

impl AtomicFile {
    /// Start writing `dest`: creates the temporary file next to it (with `dest`'s permission
    /// bits, when `dest` exists). Errors name `dest`.
    pub fn create(dest: &Path) -> Result<AtomicFile> {
        let real = resolve(dest);
        let old = fs::metadata(&real).ok();
        if old.as_ref().is_some_and(|m| m.is_dir()) {
            let e = io::Error::new(io::ErrorKind::IsADirectory, "is a directory");
            return Err(io_err(dest)(e));
        }
        if let Some(m) = old.as_ref().filter(|m| !m.is_file()) {
            return Self::in_place(dest, real, m);
        }
        let Some(name) = real.file_name() else {
            let e = io::Error::new(io::ErrorKind::InvalidInput, "not a file name");
            return Err(io_err(dest)(e));
        };
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp_name = format!(
            ".{}.rdbferry-tmp-{}-{n}",
            name.to_string_lossy(),
            std::process::id()
        );
        let tmp = real.with_file_name(tmp_name);
        // Registered before it exists, so that no moment has a file the handler misses.
        let registered = TEMP_FILES.insert(0, 0, tmp.as_os_str().as_encoded_bytes());
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err(dest))?;
        let f = AtomicFile {
            file,
            tmp: Some(tmp),
            dest: real,
            committed: false,
            _registered: registered,
        };
        if let Some(m) = old {
            f.file
                .set_permissions(m.permissions())
                .map_err(io_err(dest))?;
        }
        Ok(f)
    }

    /// `dest` exists and is neither a regular file nor a directory (a device, a FIFO, a
    /// socket): opened for writing as it is, without truncating or replacing it.
    fn in_place(dest: &Path, real: PathBuf, m: &fs::Metadata) -> Result<AtomicFile> {
        tracing::debug!(
            "{} is not a regular file ({:?}): written in place",
            dest.display(),
            m.file_type()
        );
        let file = OpenOptions::new()
            .write(true)
            .open(&real)
            .map_err(io_err(dest))?;
        Ok(AtomicFile {
            file,
            tmp: None,
            dest: real,
            committed: false,
            _registered: None,
        })
    }

    /// The file that [`commit`](AtomicFile::commit) replaces (symlinks followed).
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// A second handle on the temporary file, for code that takes ownership of its writer (a
    /// `Box<dyn Write>`): write through it and drop it, then commit this one.
    pub fn writer(&self) -> Result<File> {
        self.file.try_clone().map_err(io_err(&self.dest))
    }

    /// Make the written bytes the content of `dest`: fsync, rename over `dest`, fsync the
    /// directory. On an error before the rename, `dest` is untouched and the temporary file
    /// is removed.
    /// Written in place (a device, a FIFO), it only flushes.
    pub fn commit(mut self) -> Result<()> {
        self.file.flush().map_err(io_err(&self.dest))?;
        let Some(tmp) = self.tmp.take() else {
            self.committed = true;
            return Ok(());
        };
        self.file.sync_all().map_err(io_err(&self.dest))?;
        if let Err(e) = fs::rename(&tmp, &self.dest) {
            self.tmp = Some(tmp);
            return Err(io_err(&self.dest)(e));
        }
        self.committed = true;
        let dir = match self.dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        // Without this, a crash soon after could bring back the old directory entry.
        match File::open(dir).and_then(|d| d.sync_all()) {
            // Some file systems cannot fsync a directory: nothing more to do there.
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
            r => r.map_err(io_err(dir)),
        }
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.as_ref().filter(|_| !self.committed) {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// Refuse to write `output` when it is one of `inputs` (same device and inode, symlinks
/// followed) or a file of an input directory (an `appendonlydir`): the inputs are read while
/// the output is written. An output that does not exist yet is no input. Call it before
/// anything is opened for writing.
pub fn refuse_input(output: &Path, inputs: &[String]) -> Result<()> {
    let Ok(out) = fs::metadata(output) else {
        return Ok(());
    };
    let same = |m: &fs::Metadata| m.dev() == out.dev() && m.ino() == out.ino();
    let refuse = |what: String| {
        Err(Error::Usage(format!(
            "refusing to write {}: it is the same file as {what}, which is read at the same \
             time; give another output path",
            output.display()
        )))
    };
    for name in inputs.iter().filter(|n| n.as_str() != "-") {
        let Ok(m) = fs::metadata(name) else {
            continue;
        };
        if same(&m) {
            return refuse(format!("the input {name}"));
        }
        if !m.is_dir() {
            continue;
        }
        let Ok(entries) = fs::read_dir(name) else {
            continue;
        };
        for e in entries.flatten() {
            if fs::metadata(e.path()).is_ok_and(|m| same(&m)) {
                let file = e.file_name().to_string_lossy().into_owned();
                return refuse(format!("{file} in the input {name}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rdbferry-file-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn names(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn drop_without_commit_keeps_the_old_file_and_leaves_no_temp() {
        let d = dir("drop");
        let dest = d.join("out");
        fs::write(&dest, "old").unwrap();
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"new, partial").unwrap();
        assert_eq!(names(&d).len(), 2);
        assert!(
            names(&d)[0].starts_with(".out.rdbferry-tmp-"),
            "{:?}",
            names(&d)
        );
        drop(f);
        assert_eq!(fs::read(&dest).unwrap(), b"old");
        assert_eq!(names(&d), ["out"]);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn commit_replaces_keeps_mode_and_follows_symlinks() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir("commit");
        let real = d.join("real");
        fs::write(&real, "old").unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o600)).unwrap();
        let link = d.join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let mut f = AtomicFile::create(&link).unwrap();
        let mut w = f.writer().unwrap();
        w.write_all(b"new").unwrap();
        drop(w);
        f.write_all(b"!").unwrap();
        f.commit().unwrap();
        assert_eq!(fs::read(&real).unwrap(), b"new!");
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let mode = fs::metadata(&real).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(names(&d), ["link", "real"]);
        let e = AtomicFile::create(&d).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn refuse_input_sees_links_and_directories() {
        let d = dir("refuse");
        let input = d.join("in.rdb");
        fs::write(&input, "x").unwrap();
        let hard = d.join("hard");
        fs::hard_link(&input, &hard).unwrap();
        let inputs = [input.display().to_string()];
        let e = refuse_input(&hard, &inputs).unwrap_err().to_string();
        assert!(
            e.contains("same file as the input") && e.contains("in.rdb"),
            "{e}"
        );
        assert!(refuse_input(&d.join("new"), &inputs).is_ok());
        let dirs = [d.display().to_string(), "-".into()];
        let e = refuse_input(&input, &dirs).unwrap_err().to_string();
        assert!(e.contains("in the input"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }
}
