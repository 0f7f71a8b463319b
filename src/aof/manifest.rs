//! The manifest of a Redis 7 multi-part AOF (`appendonlydir/appendonly.aof.manifest`).
//!
//! Source-stage helper: it tells which files of an AOF directory to replay, and in which order
//! (FORMATS.md §10.3). The rules follow Redis 7's `aofLoadManifestFromFile` (`src/aof.c`):
//! `#` comment lines, at most 1023 bytes per line plus `\n`, space-separated key/value pairs in
//! any order (keys case-insensitive, unknown keys allowed for forward compatibility, at least
//! three pairs), names split with `sdssplitargs` quoting, at most one base, incremental
//! sequence numbers strictly increasing.
//!
//! Not here: opening or mapping the listed files, and checking that they exist; the caller does
//! that with [`ManifestEntry::path`].

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use super::error::AofError;

/// Longest manifest line Redis reads, including its `\n` (`AOF_MANIFEST_MAX_LINE`).
pub const MAX_LINE: usize = 1024;

/// The role of a file in a multi-part AOF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AofFileKind {
    /// `type b`: the base, an RDB (`.base.rdb`) or RESP (`.base.aof`) file; replayed first.
    Base,
    /// `type h`: history, left over from before a rewrite and awaiting deletion; never replayed.
    History,
    /// `type i`: incremental, replayed after the base in manifest order.
    Incremental,
}

/// One `file ... seq ... type ...` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// The file name, unquoted. Bytes, because `\xHH` escapes may make it non-UTF-8.
    pub name: Vec<u8>,
    /// The sequence number (`seq`), at least 1.
    pub seq: u64,
    /// The file's role (`type`).
    pub kind: AofFileKind,
    /// 1-based line number in the manifest, for messages.
    pub line: usize,
}

impl ManifestEntry {
    /// The file's path: `dir` joined with the name.
    pub fn path(&self, dir: &Path) -> PathBuf {
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            dir.join(std::ffi::OsStr::from_bytes(&self.name))
        }
        #[cfg(not(unix))]
        {
            dir.join(&*self.name_lossy())
        }
    }

    /// The name for display (invalid UTF-8 replaced).
    pub fn name_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.name)
    }
}

/// A parsed manifest: its entries in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    entries: Vec<ManifestEntry>,
}

impl Manifest {
    /// Parses manifest text. `source_name` (usually the manifest's path) goes into errors.
    ///
    /// ```
    /// use rdbferry::aof::manifest::{AofFileKind, Manifest};
    ///
    /// let text = b"file appendonly.aof.2.base.rdb seq 2 type b\n\
    ///              file appendonly.aof.1.incr.aof seq 1 type h\n\
    ///              file appendonly.aof.3.incr.aof seq 3 type i\n";
    /// let m = Manifest::parse(text, "appendonly.aof.manifest")?;
    /// let names: Vec<_> = m.replay_files().iter().map(|e| e.name_lossy().into_owned()).collect();
    /// assert_eq!(names, ["appendonly.aof.2.base.rdb", "appendonly.aof.3.incr.aof"]);
    /// assert_eq!(m.base().map(|e| e.kind), Some(AofFileKind::Base));
    /// # Ok::<(), rdbferry::aof::AofError>(())
    /// ```
    pub fn parse(text: &[u8], source_name: &str) -> Result<Manifest, AofError> {
        let fail = |line: usize, offset: usize, what: &str| AofError::Manifest {
            source_name: source_name.to_string(),
            line,
            offset: offset as u64,
            what: what.to_string(),
        };
        if text.is_empty() {
            return Err(fail(0, 0, "empty manifest"));
        }
        let mut entries: Vec<ManifestEntry> = Vec::new();
        let mut has_base = false;
        let mut last_incr_seq = 0u64;
        let mut offset = 0usize;
        for (i, raw) in text.split_inclusive(|&b| b == b'\n').enumerate() {
            let (line_no, at) = (i + 1, offset);
            offset += raw.len();
            if raw.first() == Some(&b'#') {
                continue;
            }
            // Redis reads lines with fgets(buf, 1025) and fails when the chunk holds no '\n'.
            // A last line without '\n' is accepted here (Redis always writes one).
            if raw.len() > MAX_LINE || (raw.len() == MAX_LINE && raw.last() != Some(&b'\n')) {
                return Err(fail(
                    line_no,
                    at,
                    &format!("line longer than {MAX_LINE} bytes"),
                ));
            }
            let line = trim(raw);
            if line.is_empty() {
                return Err(fail(line_no, at, "blank line"));
            }
            let args = split_args(line).map_err(|what| fail(line_no, at, what))?;
            if args.len() < 6 || args.len() % 2 != 0 {
                return Err(fail(
                    line_no,
                    at,
                    "expected at least 3 key/value pairs (file <name> seq <n> type <b|h|i>)",
                ));
            }
            let (mut name, mut seq, mut kind) = (None, None, None);
            for pair in args.chunks_exact(2) {
                let [key, value] = pair else { continue };
                if key.eq_ignore_ascii_case(b"file") {
                    name = Some(value.clone());
                } else if key.eq_ignore_ascii_case(b"seq") {
                    seq = Some(value);
                } else if key.eq_ignore_ascii_case(b"type") {
                    kind = Some(value);
                }
            }
            let Some(name) = name else {
                return Err(fail(line_no, at, "missing `file`"));
            };
            check_name(&name).map_err(|what| fail(line_no, at, what))?;
            let seq = seq
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|&s| s > 0)
                .ok_or_else(|| fail(line_no, at, "missing or invalid `seq` (a number >= 1)"))?;
            let kind = match kind.map(|k| k.as_slice()) {
                Some(b"b") => AofFileKind::Base,
                Some(b"h") => AofFileKind::History,
                Some(b"i") => AofFileKind::Incremental,
                Some(_) => {
                    return Err(fail(
                        line_no,
                        at,
                        "unknown file `type` (expected b, h or i)",
                    ));
                }
                None => return Err(fail(line_no, at, "missing `type`")),
            };
            match kind {
                AofFileKind::Base if has_base => {
                    return Err(fail(line_no, at, "second base file"));
                }
                AofFileKind::Base => has_base = true,
                AofFileKind::Incremental => {
                    if seq <= last_incr_seq {
                        return Err(fail(line_no, at, "incremental file seq not increasing"));
                    }
                    last_incr_seq = seq;
                }
                AofFileKind::History => {}
            }
            entries.push(ManifestEntry {
                name,
                seq,
                kind,
                line: line_no,
            });
        }
        if !entries.iter().any(|e| e.kind != AofFileKind::History) {
            return Err(fail(0, 0, "no base or incremental file listed"));
        }
        Ok(Manifest { entries })
    }

    /// Finds the manifest in an AOF directory (the single `*.manifest` file, ignoring the
    /// `temp-*.manifest` a rewrite in progress leaves) and parses it. Returns the manifest and
    /// its path.
    pub fn load(dir: &Path) -> Result<(Manifest, PathBuf), AofError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |err| AofError::Io { path, err }
        };
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".manifest") && !name.starts_with("temp-") {
                found.push(entry.path());
            }
        }
        let [path] = found.as_slice() else {
            return Err(AofError::ManifestNotFound {
                dir: dir.to_path_buf(),
                found: found.len(),
            });
        };
        let text = std::fs::read(path).map_err(io(path))?;
        let manifest = Manifest::parse(&text, &path.display().to_string())?;
        Ok((manifest, path.clone()))
    }

    /// All entries, in manifest order.
    pub fn entries(&self) -> &[ManifestEntry] {
        &self.entries
    }

    /// The base file, if any.
    pub fn base(&self) -> Option<&ManifestEntry> {
        self.entries.iter().find(|e| e.kind == AofFileKind::Base)
    }

    /// The files to replay, in order: the base, then the incremental files in manifest order.
    /// History files are left out. The last one is the file allowed to have a truncated tail.
    pub fn replay_files(&self) -> Vec<&ManifestEntry> {
        let incr = self
            .entries
            .iter()
            .filter(|e| e.kind == AofFileKind::Incremental);
        self.base().into_iter().chain(incr).collect()
    }
}

/// Trims what Redis's `sdstrim(line, " \t\r\n")` trims.
fn trim(mut s: &[u8]) -> &[u8] {
    let strip = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    while let Some((first, rest)) = s.split_first() {
        if !strip(first) {
            break;
        }
        s = rest;
    }
    while let Some((last, rest)) = s.split_last() {
        if !strip(last) {
            break;
        }
        s = rest;
    }
    s
}

/// Redis accepts a name with neither `/` nor `\` (`pathIsBaseName`); `.` and `..` are refused
/// too, since they name directories.
fn check_name(name: &[u8]) -> Result<(), &'static str> {
    if name.is_empty() || name == b"." || name == b".." {
        return Err("empty file name, `.` or `..`");
    }
    if name.iter().any(|&b| b == b'/' || b == b'\\') {
        return Err("file must be a bare file name, not a path");
    }
    Ok(())
}

/// Splits a line into arguments like Redis's `sdssplitargs`: whitespace-separated tokens,
/// `"..."` with C escapes (`\n \r \t \b \a \xHH`, any other `\c` is `c`), `'...'` with only
/// `\'`. A closing quote must be followed by whitespace or the end of the line.
fn split_args(line: &[u8]) -> Result<Vec<Vec<u8>>, &'static str> {
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while line.get(i).is_some_and(|&b| is_space(b)) {
            i += 1;
        }
        if i >= line.len() {
            return Ok(args);
        }
        let mut cur = Vec::new();
        while let Some(&c) = line.get(i) {
            match c {
                b'"' => {
                    i += 1;
                    loop {
                        match (line.get(i), line.get(i + 1)) {
                            (None, _) => return Err("unbalanced double quotes"),
                            (Some(b'\\'), Some(b'x'))
                                if line.get(i + 2).and_then(|&h| hex(h)).is_some()
                                    && line.get(i + 3).and_then(|&h| hex(h)).is_some() =>
                            {
                                let hi = line.get(i + 2).and_then(|&h| hex(h)).unwrap_or(0);
                                let lo = line.get(i + 3).and_then(|&h| hex(h)).unwrap_or(0);
                                cur.push(hi << 4 | lo);
                                i += 4;
                            }
                            (Some(b'\\'), Some(&e)) => {
                                cur.push(match e {
                                    b'n' => b'\n',
                                    b'r' => b'\r',
                                    b't' => b'\t',
                                    b'b' => 0x08,
                                    b'a' => 0x07,
                                    other => other,
                                });
                                i += 2;
                            }
                            (Some(b'"'), next) => {
                                if next.is_some_and(|&b| !is_space(b)) {
                                    return Err("closing quote must be followed by a space");
                                }
                                i += 1;
                                break;
                            }
                            (Some(&b), _) => {
                                cur.push(b);
                                i += 1;
                            }
                        }
                    }
                }
                b'\'' => {
                    i += 1;
                    loop {
                        match (line.get(i), line.get(i + 1)) {
                            (None, _) => return Err("unbalanced single quotes"),
                            (Some(b'\\'), Some(b'\'')) => {
                                cur.push(b'\'');
                                i += 2;
                            }
                            (Some(b'\''), next) => {
                                if next.is_some_and(|&b| !is_space(b)) {
                                    return Err("closing quote must be followed by a space");
                                }
                                i += 1;
                                break;
                            }
                            (Some(&b), _) => {
                                cur.push(b);
                                i += 1;
                            }
                        }
                    }
                }
                c if is_space(c) => break,
                c => {
                    cur.push(c);
                    i += 1;
                }
            }
        }
        args.push(cur);
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, AofError> {
        Manifest::parse(text.as_bytes(), "m")
    }

    fn err_line(text: &str) -> (usize, String) {
        match parse(text) {
            Err(AofError::Manifest { line, what, .. }) => (line, what),
            other => panic!("{text:?}: expected a manifest error, got {other:?}"),
        }
    }

    fn names(m: &Manifest) -> Vec<String> {
        m.replay_files()
            .iter()
            .map(|e| e.name_lossy().into_owned())
            .collect()
    }

    #[test]
    fn redis_written_manifest() {
        let m = parse(
            "file appendonly.aof.2.base.rdb seq 2 type b\n\
             file appendonly.aof.1.incr.aof seq 1 type h\n\
             file appendonly.aof.3.incr.aof seq 3 type i\n\
             file appendonly.aof.4.incr.aof seq 4 type i\n",
        )
        .unwrap();
        assert_eq!(m.entries().len(), 4);
        assert_eq!(
            names(&m),
            [
                "appendonly.aof.2.base.rdb",
                "appendonly.aof.3.incr.aof",
                "appendonly.aof.4.incr.aof"
            ]
        );
        assert_eq!(m.entries()[1].kind, AofFileKind::History);
        assert_eq!(m.entries()[3].line, 4);
        assert_eq!(m.entries()[3].seq, 4);
    }

    #[test]
    fn pairs_in_any_order_unknown_keys_comments() {
        let m = parse(
            "# written by hand\n\
             TYPE i SEQ 7 FILE a.incr.aof\n\
             seq 1 future-key x type b file \"base file.rdb\"\n",
        )
        .unwrap();
        assert_eq!(names(&m), ["base file.rdb", "a.incr.aof"]);
    }

    #[test]
    fn quoted_names_with_escapes() {
        let m = parse(
            "file \"a\\x41\\n\\r\\t\\a\\b\\\"\\q\" seq 1 type i\nfile 'it\\'s' seq 2 type i\n",
        )
        .unwrap();
        assert_eq!(m.entries()[0].name, b"aA\n\r\t\x07\x08\"q");
        assert_eq!(m.entries()[1].name, b"it's");
        // An incomplete \x escape is kept literally, as sdssplitargs does.
        let m = parse("file \"\\x4g\" seq 1 type i\n").unwrap();
        assert_eq!(m.entries()[0].name, b"x4g");
        let m = parse("file \"\\xff\" seq 1 type i\n").unwrap();
        assert_eq!(
            m.entries()[0]
                .path(Path::new("d"))
                .file_name()
                .map(|n| n.len()),
            Some(1)
        );
    }

    #[test]
    fn crlf_and_missing_final_newline_accepted() {
        let m = parse("file a seq 1 type b\r\nfile b seq 2 type i").unwrap();
        assert_eq!(names(&m), ["a", "b"]);
    }

    #[test]
    fn invalid_manifests() {
        let cases: &[(&str, usize, &str)] = &[
            ("", 0, "empty manifest"),
            ("# only a comment\n", 0, "no base or incremental"),
            ("file h seq 1 type h\n", 0, "no base or incremental"),
            (
                "file a seq 1 type b\n\nfile b seq 2 type i\n",
                2,
                "blank line",
            ),
            ("file a seq 1\n", 1, "at least 3"),
            ("file a seq 1 type b extra\n", 1, "at least 3"),
            ("name a seq 1 type b\n", 1, "missing `file`"),
            ("file a sequence 1 type b\n", 1, "seq"),
            ("file a seq 0 type b\n", 1, "seq"),
            ("file a seq -3 type b\n", 1, "seq"),
            ("file a seq x type b\n", 1, "seq"),
            ("file a seq 1 type base\n", 1, "unknown file `type`"),
            ("file a seq 1 typ b\n", 1, "missing `type`"),
            ("file dir/a seq 1 type b\n", 1, "bare file name"),
            ("file ..\\a seq 1 type b\n", 1, "bare file name"),
            ("file \"a\\\\b\" seq 1 type b\n", 1, "bare file name"),
            ("file .. seq 1 type b\n", 1, "`..`"),
            ("file \"\" seq 1 type b\n", 1, "empty file name"),
            (
                "file a seq 1 type b\nfile b seq 2 type b\n",
                2,
                "second base",
            ),
            (
                "file a seq 3 type i\nfile b seq 3 type i\n",
                2,
                "not increasing",
            ),
            ("file \"a seq 1 type b\n", 1, "unbalanced double"),
            ("file 'a seq 1 type b\n", 1, "unbalanced single"),
            ("file \"a\"b seq 1 type b\n", 1, "followed by a space"),
        ];
        for &(text, line, what) in cases {
            let (l, w) = err_line(text);
            assert_eq!(l, line, "{text:?}: {w}");
            assert!(w.contains(what), "{text:?}: {w:?} should contain {what:?}");
        }
    }

    #[test]
    fn line_length_limit() {
        // 8 tokens, padded to `total` bytes including the '\n'.
        let line = |total: usize| {
            let p = "file a seq 1 type b k ";
            format!("{p}{}\n", "x".repeat(total - p.len() - 1))
        };
        let ok = line(MAX_LINE);
        assert_eq!(ok.len(), MAX_LINE);
        assert!(parse(&ok).is_ok(), "{} bytes", ok.len());
        let long = line(MAX_LINE + 1);
        assert_eq!(
            err_line(&long),
            (1, format!("line longer than {MAX_LINE} bytes"))
        );
        // A long comment is fine.
        let comment = format!("#{}\nfile a seq 1 type b\n", "c".repeat(5000));
        assert!(parse(&comment).is_ok());
    }

    #[test]
    fn message_names_manifest_line_and_offset() {
        let e = parse("file a seq 1 type b\nfile b/c seq 2 type i\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad AOF manifest m line 2 (+0x14): file must be a bare file name, not a path"
        );
    }

    #[test]
    fn load_finds_the_manifest() {
        let dir =
            std::env::temp_dir().join(format!("rdbferry-manifest-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert!(matches!(
            Manifest::load(&dir),
            Err(AofError::ManifestNotFound { found: 0, .. })
        ));
        std::fs::write(dir.join("appendonly.aof.manifest"), "file a seq 1 type b\n").unwrap();
        std::fs::write(dir.join("temp-appendonly.aof.manifest"), "garbage").unwrap();
        let (m, path) = Manifest::load(&dir).unwrap();
        assert_eq!(path, dir.join("appendonly.aof.manifest"));
        assert_eq!(m.replay_files()[0].path(&dir), dir.join("a"));
        std::fs::write(dir.join("other.manifest"), "file a seq 1 type b\n").unwrap();
        assert!(matches!(
            Manifest::load(&dir),
            Err(AofError::ManifestNotFound { found: 2, .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
