//! Where a tail starts: the beginning, the end, or a checkpoint ([`Start`]).

use super::*;

impl AofTail {
    pub(super) fn start_beginning(&mut self) -> Result<()> {
        match self.source {
            Source::Single { .. } => {
                self.role = Role::Single;
                self.cur.find_resp_start()?;
                self.pos = self.cur.pos(0)?;
                if self.cur.resp_start > 0 {
                    self.queue_preamble()?;
                }
                Ok(())
            }
            Source::Dir { .. } => self.dir_from_base(),
        }
    }

    /// The RDB preamble of the single file being read, as a [`TailEvent::Base`].
    pub(super) fn queue_preamble(&mut self) -> Result<()> {
        let end = self.cur.resp_start;
        self.base_file = Some(self.cur.file.try_clone().map_err(io_err(&self.cur.path))?);
        self.pending.push_back(TailEvent::Base {
            path: self.cur.path.clone(),
            rdb_end: Some(end),
            pos: self.cur.pos(end)?,
        });
        Ok(())
    }

    pub(super) fn start_end(&mut self) -> Result<()> {
        match self.source {
            Source::Single { .. } => {
                self.role = Role::Single;
                self.cur.find_resp_start()?;
            }
            Source::Dir { .. } => {
                let last = self
                    .manifest()?
                    .entries()
                    .iter()
                    .rfind(|e| e.kind == AofFileKind::Incremental)
                    .map(|e| (e.name_lossy().into_owned(), e.seq));
                match last {
                    Some((name, seq)) => {
                        self.cur = self.open_dir_file(&name, seq)?.ok_or_else(|| {
                            self.gone(
                                &name,
                                format!(
                                    "{name}, the last incr file the manifest lists, does not exist"
                                ),
                            )
                        })?;
                        self.role = Role::Incr;
                    }
                    // No incr file yet: the base's end is the end.
                    None => {
                        self.dir_from_base()?;
                        self.pending.clear();
                    }
                }
            }
        }
        self.pos = self.cur.pos(self.cur.resp_start)?;
        self.skip = Skip::Through(self.cur.len()?);
        Ok(())
    }

    pub(super) fn start_at(&mut self, p: &TailPos) -> Result<()> {
        match self.source {
            Source::Single { .. } => self.start_at_single(p),
            Source::Dir { .. } => self.start_at_dir(p),
        }
    }

    fn foreign(&self, p: &TailPos, why: String) -> Error {
        tail_err(
            &self.cur.path,
            p.offset,
            TailErrorKind::ForeignCheckpoint(why),
        )
    }

    fn start_at_single(&mut self, p: &TailPos) -> Result<()> {
        self.role = Role::Single;
        if p.seq.is_some() {
            return Err(self.foreign(
                p,
                format!(
                    "it names {} (seq {}) of an appendonlydir",
                    p.file,
                    p.seq.unwrap_or(0)
                ),
            ));
        }
        if p.file != self.cur.name {
            return Err(self.foreign(p, format!("it names the file {:?}", p.file)));
        }
        if (p.id.dev, p.id.ino) != (self.cur.dev, self.cur.ino) {
            let why = format!(
                "the file at this path is not the one the checkpoint was taken in (inode {}, the checkpoint's {}): Redis rewrote it while follow was down, and the old file is gone, so where the new one continues cannot be proven; or the checkpoint is from another AOF",
                self.cur.ino, p.id.ino
            );
            if self.resync {
                self.start_beginning()?;
                return self.note_resync(why);
            }
            return Err(self.foreign(p, why));
        }
        self.cur.find_resp_start()?;
        self.pos = self.cur.pos(0)?;
        if p.offset == 0 {
            if self.cur.resp_start > 0 {
                self.queue_preamble()?;
            }
            return Ok(());
        }
        self.resume_in_cur(p)
    }

    /// Checks `p` against the file being read and skips to it.
    fn resume_in_cur(&mut self, p: &TailPos) -> Result<()> {
        if p.offset < self.cur.resp_start {
            return Err(tail_err(
                &self.cur.path,
                p.offset,
                TailErrorKind::NotBoundary,
            ));
        }
        let id = self.cur.id_at(p.offset)?;
        if id.crc != p.id.crc {
            return Err(tail_err(&self.cur.path, p.offset, TailErrorKind::Changed));
        }
        self.pos = self.cur.pos(self.cur.resp_start)?;
        if p.offset > self.cur.resp_start {
            self.skip = Skip::To(p.offset);
        }
        Ok(())
    }

    fn start_at_dir(&mut self, p: &TailPos) -> Result<()> {
        let Some(seq) = p.seq else {
            return Err(self.foreign(p, format!("it names the single-file AOF {:?}", p.file)));
        };
        let manifest = self.manifest()?.clone();
        let listed = manifest.entries().iter().find(|e| e.name_lossy() == p.file);
        let is_base = listed.map_or(p.file.contains(".base."), |e| e.kind == AofFileKind::Base);
        let Some(mut r) = self.open_dir_file(&p.file, seq)? else {
            let why = format!(
                "{} (seq {seq}), where the checkpoint stands, is gone: a rewrite deleted it while follow was down",
                p.file
            );
            return self.lost(&p.file, why);
        };
        if (p.id.dev, p.id.ino) != (r.dev, r.ino) {
            let why = format!(
                "{} has inode {}, the checkpoint's has {}",
                p.file, r.ino, p.id.ino
            );
            return Err(tail_err(
                &r.path,
                p.offset,
                TailErrorKind::ForeignCheckpoint(why),
            ));
        }
        if !is_base {
            self.cur = r;
            self.role = Role::Incr;
            return self.resume_in_cur(p);
        }
        if manifest.base().map(|b| b.name_lossy()) != Some(p.file.as_str().into()) {
            let why = format!(
                "the base {}, where the checkpoint stands, was replaced by a rewrite while follow was down: the incr files that followed it are gone",
                p.file
            );
            return self.lost(&p.file, why);
        }
        if p.offset == 0 {
            return self.dir_from_base();
        }
        r.find_resp_start()?;
        r.complete = true;
        self.cur = r;
        self.role = Role::Base;
        self.queue = match self.open_incrs(&manifest)? {
            Ok(q) => q,
            Err(name) => {
                let why = format!("the manifest lists {name}, which does not exist");
                return Err(self.gone(&name, why));
            }
        };
        self.resume_in_cur(p)
    }

    /// A file the tail needs is gone: an error, or with `resync_on_loss` a fresh start from
    /// the current base.
    pub(super) fn lost(&mut self, name: &str, why: String) -> Result<()> {
        if !self.resync {
            return Err(self.gone(name, why));
        }
        self.dir_from_base()?;
        self.note_resync(why)
    }

    pub(super) fn gone(&self, name: &str, why: String) -> Error {
        let path = match &self.source {
            Source::Dir { dir, .. } => dir.join(name),
            Source::Single { path } => path.clone(),
        };
        tail_err(&path, self.pos.offset, TailErrorKind::Gone(why))
    }

    /// Puts a [`TailEvent::Rewritten`] saying why the tail starts over before what
    /// [`dir_from_base`](Self::dir_from_base) or [`start_beginning`](Self::start_beginning)
    /// queued.
    pub(super) fn note_resync(&mut self, why: String) -> Result<()> {
        if !matches!(
            self.pending.front(),
            Some(TailEvent::Base { rdb_end: _, .. })
        ) {
            return Err(tail_err(&self.cur.path, 0, TailErrorKind::NoRdbBase));
        }
        let note = format!(
            "{why}; starting over from the current base (resync on loss): keys deleted on the source meanwhile may remain on the target"
        );
        tracing::warn!("{note}");
        self.pending.push_front(TailEvent::Rewritten {
            pos: self.pos.clone(),
            note,
        });
        Ok(())
    }
}
