//! An appendonlydir: its files in manifest order, and from one incr file to the next as Redis
//! rewrites (Redis 7, FORMATS.md §10.3).

use super::*;

/// What follows the incr file just finished.
enum Next {
    File(Reader),
    /// Nothing listed yet (a base with no incr file).
    NotYet,
    /// The file that follows is gone: (name, why).
    Gone(String, String),
}

/// Whether a manifest entry is an incr file (current or history: a history entry may be an
/// old base, whose seq counts apart from the incr files').
fn is_incr(e: &crate::aof::ManifestEntry) -> bool {
    match e.kind {
        AofFileKind::Incremental => true,
        AofFileKind::History => incr_seq_of(&e.name_lossy()).is_some(),
        AofFileKind::Base => false,
    }
}

/// The name of incr file `seq` next to incr file `name`.
fn incr_name(name: &str, seq: u64) -> String {
    let prefix = name
        .strip_suffix(".incr.aof")
        .and_then(|s| s.rsplit_once('.'))
        .map_or("appendonly.aof", |(p, _)| p);
    format!("{prefix}.{seq}.incr.aof")
}

impl AofTail {
    /// The manifest, read again if it changed.
    pub(super) fn manifest(&mut self) -> Result<&Manifest> {
        self.refresh_manifest()?;
        match &self.source {
            Source::Dir { manifest, .. } => Ok(manifest),
            Source::Single { .. } => {
                Err(Error::Internal("a single-file AOF has no manifest".into()))
            }
        }
    }

    /// Whether the manifest lists an incr file after the current one.
    pub(super) fn later_incr_listed(&mut self) -> Result<bool> {
        let seq = self.cur.seq.unwrap_or(0);
        let m = self.manifest()?;
        Ok(m.entries().iter().any(|e| is_incr(e) && e.seq > seq))
    }

    /// A file of the directory: the one opened when it appeared, else opened now; `None` if
    /// it does not exist.
    pub(super) fn open_dir_file(&mut self, name: &str, seq: u64) -> Result<Option<Reader>> {
        let Source::Dir { dir, .. } = &self.source else {
            return Ok(None);
        };
        let path = dir.join(name);
        let captured = self.lock()?.incr.remove(name);
        let file = match captured {
            Some(f) => f,
            None => match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::io(path.display().to_string(), e)),
            },
        };
        Reader::with_file(file, &path, Some(seq)).map(Some)
    }

    /// The incr files `m` lists, opened, all but the last marked complete; `Err(name)` names
    /// one that does not exist.
    pub(super) fn open_incrs(
        &mut self,
        m: &Manifest,
    ) -> Result<std::result::Result<VecDeque<Reader>, String>> {
        let mut out = VecDeque::new();
        for e in m
            .entries()
            .iter()
            .filter(|e| e.kind == AofFileKind::Incremental)
        {
            let name = e.name_lossy().into_owned();
            match self.open_dir_file(&name, e.seq)? {
                Some(mut r) => {
                    if let Some(prev) = out.back_mut() {
                        let prev: &mut Reader = prev;
                        prev.complete = true;
                    }
                    r.complete = false;
                    out.push_back(r);
                }
                None => return Ok(Err(name)),
            }
        }
        Ok(Ok(out))
    }

    /// Starts with the manifest's base and incr files, all opened at once (so that a rewrite
    /// completing meanwhile cannot delete one before it is read): the base as a
    /// [`TailEvent::Base`] (an RDB) or as commands (an AOF base), then each incr file.
    pub(super) fn dir_from_base(&mut self) -> Result<()> {
        for attempt in 1..=OPEN_ATTEMPTS {
            let m = self.manifest()?.clone();
            let base = match m.base() {
                Some(e) => {
                    let name = e.name_lossy().into_owned();
                    match self.open_dir_file(&name, e.seq)? {
                        Some(r) => Ok(Some(r)),
                        None => Err(name),
                    }
                }
                None => Ok(None),
            };
            let opened = match base {
                Ok(b) => self.open_incrs(&m)?.map(|i| (b, i)),
                Err(name) => Err(name),
            };
            match opened {
                Ok((base, incrs)) => return self.begin_with(base, incrs),
                Err(name) if attempt == OPEN_ATTEMPTS => {
                    let why = format!("the manifest lists {name}, which does not exist");
                    return Err(self.gone(&name, why));
                }
                Err(_) => {
                    // A rewrite completed between reading the manifest and opening its files.
                    if let Source::Dir { stamp, .. } = &mut self.source {
                        *stamp = None;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        Ok(())
    }

    fn begin_with(&mut self, base: Option<Reader>, mut incrs: VecDeque<Reader>) -> Result<()> {
        self.txn = None;
        self.db = 0;
        self.base_file = None;
        self.pending.clear();
        let Some(mut base) = base else {
            let first = incrs.pop_front().ok_or_else(|| {
                Error::Internal("manifest lists neither a base nor an incr file".into())
            })?;
            self.cur = first;
            self.role = Role::Incr;
            self.pos = self.cur.pos(0)?;
            self.queue = incrs;
            return Ok(());
        };
        base.find_resp_start()?;
        base.complete = true;
        self.pos = base.pos(0)?;
        if base.resp_start > 0 {
            let end = base.resp_start;
            let rdb_end = (base.len()? > end).then_some(end);
            self.base_file = Some(base.file.try_clone().map_err(io_err(&base.path))?);
            self.pending.push_back(TailEvent::Base {
                path: base.path.clone(),
                rdb_end,
                pos: base.pos(end)?,
            });
        }
        self.cur = base;
        self.role = Role::Base;
        self.queue = incrs;
        Ok(())
    }

    /// The file being read is complete and read: go on with the next one.
    pub(super) fn next_file(&mut self) -> Result<AtEof> {
        if self.role == Role::Single {
            return self.join();
        }
        let next = match self.queue.pop_front() {
            Some(r) => r,
            None => match self.next_incr()? {
                Next::File(r) => r,
                Next::NotYet => return Ok(AtEof::Idle),
                Next::Gone(name, why) => {
                    self.lost(&name, why)?;
                    return Ok(AtEof::Again);
                }
            },
        };
        let from_incr = self.role == Role::Incr;
        let old = std::mem::replace(&mut self.cur, next);
        self.role = Role::Incr;
        // Redis loads each file with a fresh client: db 0.
        self.db = 0;
        self.prune_captured()?;
        let pos = self.cur.pos(0)?;
        if from_incr {
            let note = format!(
                "{} is complete (Redis moved to a new incr file for a rewrite); following {}",
                old.name, self.cur.name
            );
            self.pending.push_back(TailEvent::Rewritten { pos, note });
        } else {
            self.pos = pos;
        }
        Ok(AtEof::Again)
    }

    /// The incr file after the current one (or the first, after the base).
    fn next_incr(&mut self) -> Result<Next> {
        let role = self.role;
        let cur_name = self.cur.name.clone();
        let want = self.cur.seq.unwrap_or(0) + 1;
        let m = self.manifest()?;
        let (name, seq) = if role == Role::Base {
            match m
                .entries()
                .iter()
                .find(|e| e.kind == AofFileKind::Incremental)
            {
                Some(e) => (e.name_lossy().into_owned(), e.seq),
                None => return Ok(Next::NotYet),
            }
        } else {
            match m.entries().iter().find(|e| is_incr(e) && e.seq == want) {
                Some(e) => (e.name_lossy().into_owned(), want),
                // No longer listed: deleted, or about to be; it may still be there.
                None => (incr_name(&cur_name, want), want),
            }
        };
        match self.open_dir_file(&name, seq)? {
            Some(r) => Ok(Next::File(r)),
            None => {
                let why = format!(
                    "{name} (seq {seq}), which follows {cur_name}, is gone: Redis deleted it after a later rewrite before it could be read"
                );
                Ok(Next::Gone(name, why))
            }
        }
    }

    /// Forgets incr files opened ahead that are behind the current one.
    fn prune_captured(&mut self) -> Result<()> {
        let seq = self.cur.seq.unwrap_or(0);
        self.lock()?
            .incr
            .retain(|name, _| incr_seq_of(name).is_some_and(|s| s > seq));
        Ok(())
    }

    /// Reads the manifest again if it changed, and opens the incr files it lists past the
    /// current one, so that they stay readable.
    pub(super) fn refresh_manifest(&mut self) -> Result<()> {
        let Source::Dir {
            dir,
            manifest,
            manifest_path,
            stamp: seen,
        } = &mut self.source
        else {
            return Ok(());
        };
        let now = stamp(manifest_path);
        if now.is_some() && now == *seen {
            return Ok(());
        }
        match Manifest::load(dir) {
            Ok((m, p)) => {
                // The stamp from before reading: a change after it is seen next time.
                *seen = if p == *manifest_path { now } else { None };
                *manifest = m;
                *manifest_path = p;
            }
            // Between Redis's rename of the new manifest and our look: look again later.
            Err(AofError::Io { .. } | AofError::ManifestNotFound { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let seq = self.cur.seq.unwrap_or(0);
        for e in manifest.entries() {
            let later = e.seq > seq || self.role == Role::Base;
            if is_incr(e) && later {
                capture_incr(&self.watch.shared, &e.path(dir), &e.name_lossy());
            }
        }
        Ok(())
    }
}
