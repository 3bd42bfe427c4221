//! Carrying out a receiver's [`Plan`] on the destination tree, so that a file
//! on the replica is always either its old or its new complete version.
//!
//! Three steps, driven by the sync session:
//! 1. [`Applier::start`] creates directories, and for each file to build a
//!    temporary file in its target directory (a deterministic name, so an
//!    interrupted run's temp file is found and its verified pieces kept),
//!    and lists the chunks needed from the sender; those without a base can
//!    be asked for at once ([`Applier::take_need_whole`]). Then
//!    [`Applier::sign`] signs the base of each chunk the plan found one for
//!    (old bytes of the same file), to ask for a delta instead, and
//!    [`Applier::copy_held`] copies the pieces the replica already holds
//!    (each verified by BLAKE3), both in parallel; the sender works on
//!    what was asked meanwhile. [`Applier::prepare`] does it all.
//! 2. [`Applier::deliver`] writes each received chunk, verified, to every
//!    place that needs it; [`Applier::deliver_delta`] first rebuilds one
//!    from its base, re-read and checked against what was signed.
//! 3. [`Applier::finish`] sets owner, mode and mtime on the temp files, makes
//!    them durable with one `syncfs`, renames them into place, then creates
//!    symlinks and hard links, deletes, sets directory metadata last, and
//!    clears the journal of temp files.
//!
//! Disk full and permission errors stop the set: temp files are removed and
//! nothing has been renamed, so the old replica is intact. Other per-file
//! errors are recorded and the rest goes on (exit code 1). Depends on the
//! plan and the filesystem only; no network, no index.

mod dest;
mod journal;
pub mod meta;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use hamirror_wire::{DeltaOp, DeltaRequest, Entry, Hash};
use rayon::prelude::*;

use crate::delta;
use crate::plan::{FileBuild, Plan};
use crate::scan::TEMP_SUFFIX;
pub use crate::scan::is_temp_name;

pub use dest::Dest;
pub use journal::Journal;

/// Why applying stopped, or why one path failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("refusing path {path:?}: {why}")]
    UnsafePath { path: String, why: &'static str },
    #[error(
        "disk full while writing {path}; nothing was renamed, the old replica is intact — free space and run again"
    )]
    DiskFull { path: String },
    #[error("permission denied on {path}: {source}; nothing was renamed, the old replica is intact")]
    Permission { path: String, source: io::Error },
    #[error("chunk {hash} does not match its BLAKE3 hash")]
    BadChunk { hash: String },
    #[error("the delta for chunk {hash} does not fit its base: {reason}")]
    BadDelta { hash: String, reason: String },
    #[error("chunk {hash} was not asked for")]
    Unexpected { hash: String },
    #[error("{count} needed chunks never arrived")]
    Missing { count: usize },
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
}

impl ApplyError {
    /// Whether running again later can succeed without a change elsewhere
    /// (a network hiccup can; a hostile path or a full disk cannot).
    pub fn retryable(&self) -> bool {
        matches!(self, ApplyError::Missing { .. } | ApplyError::Io { .. })
    }

    fn from_io(path: &Path, e: io::Error) -> Self {
        let path = path.display().to_string();
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => ApplyError::DiskFull { path },
            Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => ApplyError::Permission { path, source: e },
            _ => ApplyError::Io { path, source: e },
        }
    }

    /// Disk-full and permission errors stop the whole set.
    fn stops_set(&self) -> bool {
        matches!(
            self,
            ApplyError::DiskFull { .. } | ApplyError::Permission { .. } | ApplyError::UnsafePath { .. }
        )
    }
}

/// A path that could not be applied, and why.
#[derive(Debug, Clone)]
pub struct Failure {
    pub path: Vec<u8>,
    pub reason: String,
}

/// What [`Applier::finish`] did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Paths created or changed (their new state is what the plan offered).
    pub applied: Vec<Entry>,
    pub deleted: Vec<Vec<u8>>,
    pub failures: Vec<Failure>,
    /// Bytes written into files from received chunks.
    pub received_bytes: u64,
    /// Bytes copied from chunks the replica already held.
    pub reused_bytes: u64,
    /// Bytes found already in place in an interrupted run's temp file.
    pub resumed_bytes: u64,
}

/// The temp file for building `entry` at `final_path`: hidden, in the same
/// directory (so the rename is atomic), named after the path and content so
/// a rerun finds it again.
fn temp_path(final_path: &Path, tag_source: &[u8], content: &Hash) -> PathBuf {
    let name = final_path.file_name().map(|n| n.as_bytes()).unwrap_or(b"x");
    let short = &name[..name.len().min(200)];
    let mut h = blake3::Hasher::new();
    h.update(tag_source);
    h.update(content);
    let tag = h.finalize();
    let hex: String = tag.as_bytes()[..8].iter().map(|b| format!("{b:02x}")).collect();
    let mut file = b".".to_vec();
    file.extend_from_slice(short);
    file.push(b'.');
    file.extend_from_slice(hex.as_bytes());
    file.extend_from_slice(TEMP_SUFFIX);
    final_path.with_file_name(std::ffi::OsStr::from_bytes(&file))
}

/// The base of a chunk asked for as a delta: where it lies, how it was
/// cut into blocks, and the BLAKE3 of the bytes that were signed (the file
/// is read again to rebuild, and must not have changed in between).
struct SignedBase {
    path: PathBuf,
    offset: u64,
    len: u32,
    block_size: u32,
    digest: Hash,
}

/// The pieces of one file to copy from what the replica already holds.
struct LocalCopy {
    /// Index into the applier's files.
    file: usize,
    temp: PathBuf,
    pieces: Vec<LocalPiece>,
}

struct LocalPiece {
    offset: u64,
    len: u32,
    hash: Hash,
    /// Where the replica holds it (set path, offset).
    src: Vec<u8>,
    src_offset: u64,
}

/// What copying one file's local pieces did.
struct Copied {
    file: usize,
    bytes: u64,
    /// Pieces whose source no longer holds them (the replica changed since
    /// the index saw it): to ask the sender for.
    missing: Vec<(u64, u32, Hash)>,
    /// Writing the temp file failed.
    error: Option<ApplyError>,
}

impl LocalCopy {
    fn run(self, dest: &Dest) -> Copied {
        let mut out = Copied {
            file: self.file,
            bytes: 0,
            missing: Vec::new(),
            error: None,
        };
        let temp = match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.temp)
        {
            Ok(f) => f,
            Err(e) => {
                out.error = Some(ApplyError::from_io(&self.temp, e));
                return out;
            }
        };
        let mut src: Option<(Vec<u8>, Option<File>)> = None;
        let mut buf = Vec::new();
        for p in self.pieces {
            if src.as_ref().is_none_or(|(path, _)| *path != p.src) {
                let f = dest.resolve(&p.src).ok().and_then(|path| {
                    OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(path)
                        .ok()
                });
                src = Some((p.src.clone(), f));
            }
            buf.resize(p.len as usize, 0);
            let held = src.as_ref().and_then(|(_, f)| f.as_ref()).is_some_and(|f| {
                f.read_exact_at(&mut buf, p.src_offset).is_ok() && blake3::hash(&buf).as_bytes() == &p.hash
            });
            if !held {
                out.missing.push((p.offset, p.len, p.hash));
                continue;
            }
            if let Err(e) = temp.write_all_at(&buf, p.offset) {
                out.error = Some(ApplyError::from_io(&self.temp, e));
                return out;
            }
            out.bytes += u64::from(p.len);
        }
        out
    }
}

/// What re-reading the old bytes the replica kept may find.
const BASE_CHANGED: &str = "the replica's old copy changed while a delta against it was on the way; retried next pass";

struct Building {
    entry: Entry,
    final_path: PathBuf,
    temp: PathBuf,
    remaining: usize,
    failed: Option<String>,
}

/// A small cache of open files: building thousands of files must not open
/// thousands of descriptors at once, nor reopen a file for every chunk.
#[derive(Default)]
struct Fds {
    open: HashMap<PathBuf, File>,
}

impl Fds {
    const MAX: usize = 128;

    fn get(&mut self, path: &Path, write: bool) -> io::Result<&File> {
        if !self.open.contains_key(path) {
            if self.open.len() >= Self::MAX {
                self.open.clear();
            }
            let f = if write {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(path)?
            } else {
                OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(path)?
            };
            self.open.insert(path.to_path_buf(), f);
        }
        Ok(&self.open[path])
    }
}

/// Carries out one plan. See the module documentation for the three steps.
pub struct Applier {
    dest: Dest,
    plan: Plan,
    files: Vec<Building>,
    waiting: HashMap<Hash, Vec<(usize, u64, u32)>>,
    need: Vec<Hash>,
    /// Needed chunks asked for as deltas (not in `need`), until sent.
    need_delta: Vec<DeltaRequest>,
    bases: HashMap<Hash, SignedBase>,
    /// Pieces the replica already holds, per file, until [`Applier::copy_held`]
    /// copies them.
    local: Vec<LocalCopy>,
    fds: Fds,
    journal: Journal,
    /// Directories touched (temp files, renames), with their mtime before,
    /// to restore it where the plan does not set it.
    touched: HashMap<PathBuf, Option<i64>>,
    report: ApplyReport,
}

fn mtime_ns(m: &std::fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    m.mtime() * 1_000_000_000 + m.mtime_nsec()
}

impl Applier {
    /// Step 1 whole: [`Applier::start`], [`Applier::sign`] and
    /// [`Applier::copy_held`]. [`Applier::need`] lists the chunks to ask
    /// the sender for.
    ///
    /// # Errors
    /// As [`Applier::start`] and [`Applier::copy_held`].
    pub fn prepare(dest: Dest, plan: Plan, journal: Journal) -> Result<Applier, ApplyError> {
        let mut a = Applier::start(dest, plan, journal)?;
        a.sign();
        if let Err(e) = a.copy_held() {
            a.abort();
            return Err(e);
        }
        Ok(a)
    }

    /// Step 1, first half: directories and temp files, and what each file
    /// needs. Cheap, so the chunks without a base can be asked for at once
    /// ([`Applier::take_need_whole`]) while [`Applier::sign`] and
    /// [`Applier::copy_held`] do the slow part.
    ///
    /// # Errors
    /// A hostile path refuses the whole plan; disk full and permission
    /// errors stop the set (nothing written is left behind).
    pub fn start(dest: Dest, plan: Plan, mut journal: Journal) -> Result<Applier, ApplyError> {
        let mut a = Applier {
            dest,
            files: Vec::with_capacity(plan.files.len()),
            waiting: HashMap::new(),
            need: Vec::new(),
            need_delta: Vec::new(),
            bases: HashMap::new(),
            local: Vec::new(),
            fds: Fds::default(),
            journal: Journal::default(),
            touched: HashMap::new(),
            report: ApplyReport::default(),
            plan: Plan::default(),
        };
        let mut plan = plan;
        let builds = std::mem::take(&mut plan.files);
        // Resolve every path first: a hostile path refuses the whole offer
        // before anything is written.
        let mut targets = Vec::with_capacity(builds.len());
        for fb in &builds {
            let final_path = a.dest.resolve(&fb.entry.path)?;
            let temp = temp_path(&final_path, &fb.entry.path, &fb.entry.file_hash);
            targets.push((final_path, temp));
        }
        for e in plan
            .dirs
            .iter()
            .chain(&plan.symlinks)
            .chain(&plan.hardlinks)
            .chain(&plan.retouch)
        {
            a.dest.resolve(&e.path)?;
        }
        for d in &plan.deletes {
            a.dest.resolve(d)?;
        }
        journal
            .record(targets.iter().map(|(_, t)| t.as_path()))
            .map_err(|e| ApplyError::from_io(journal.path(), e))?;
        a.journal = journal;
        a.plan = plan;
        let result = a.prepare_inner(builds, targets);
        if let Err(e) = result {
            a.abort();
            return Err(e);
        }
        Ok(a)
    }

    fn prepare_inner(&mut self, builds: Vec<FileBuild>, targets: Vec<(PathBuf, PathBuf)>) -> Result<(), ApplyError> {
        let dirs = std::mem::take(&mut self.plan.dirs);
        for d in &dirs {
            let p = self.dest.local(&d.path);
            self.ensure_dir(&p)?;
        }
        self.plan.dirs = dirs;
        for (i, (fb, (final_path, temp))) in builds.into_iter().zip(targets).enumerate() {
            let mut b = Building {
                entry: fb.entry,
                final_path,
                temp,
                remaining: 0,
                failed: None,
            };
            match self.prepare_file(i, &mut b, &fb.pieces) {
                Ok(()) => {}
                Err(e) if e.stops_set() => return Err(e),
                Err(e) => b.failed = Some(e.to_string()),
            }
            self.files.push(b);
        }
        Ok(())
    }

    /// Takes the needed chunks that have no base (so are asked for whole
    /// whatever [`Applier::sign`] finds), to ask for before signing.
    pub fn take_need_whole(&mut self) -> Vec<Hash> {
        let bases = &self.plan.bases;
        let (whole, based): (Vec<Hash>, Vec<Hash>) = self.need.iter().partition(|h| !bases.contains_key(*h));
        self.need = based;
        whole
    }

    /// Signs the bases of the chunks the plan found one for (old bytes of
    /// the same file), in parallel, to ask for them as deltas
    /// ([`Applier::take_delta_requests`]); a base that cannot be read
    /// leaves its chunk in [`Applier::need`], asked for whole.
    pub fn sign(&mut self) {
        // Reads the base of every needed chunk the plan found one for and
        // computes its signature (this reads and hashes the old bytes
        // around every changed chunk).
        let bases = std::mem::take(&mut self.plan.bases);
        if bases.is_empty() {
            return;
        }
        let jobs: Vec<(Hash, PathBuf, u64, u32)> = self
            .need
            .iter()
            .filter_map(|h| {
                let b = bases.get(h)?;
                let path = self.dest.resolve(&b.path).ok()?;
                Some((*h, path, b.offset, b.len))
            })
            .collect();
        let signed: Vec<Option<(SignedBase, DeltaRequest)>> = jobs
            .into_par_iter()
            .map(|(hash, path, offset, len)| {
                let f = File::options()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .ok()?;
                let mut buf = vec![0u8; len as usize];
                f.read_exact_at(&mut buf, offset).ok()?;
                let signature = delta::signature(&buf, delta::block_size_for(len));
                let base = SignedBase {
                    path,
                    offset,
                    len,
                    block_size: signature.block_size,
                    digest: *blake3::hash(&buf).as_bytes(),
                };
                Some((base, DeltaRequest { hash, signature }))
            })
            .collect();
        for (base, req) in signed.into_iter().flatten() {
            self.bases.insert(req.hash, base);
            self.need_delta.push(req);
        }
        let bases = &self.bases;
        self.need.retain(|h| !bases.contains_key(h));
    }

    /// Copies the pieces the replica already holds into the temp files, in
    /// parallel, each verified by BLAKE3; one whose source changed since
    /// the index saw it is added to [`Applier::need`] instead.
    ///
    /// # Errors
    /// Disk full and permission errors stop the set (the caller aborts).
    pub fn copy_held(&mut self) -> Result<(), ApplyError> {
        let jobs = std::mem::take(&mut self.local);
        let dest = &self.dest;
        let copied: Vec<Copied> = jobs.into_par_iter().map(|job| job.run(dest)).collect();
        for c in copied {
            self.report.reused_bytes += c.bytes;
            if let Some(e) = c.error {
                if e.stops_set() {
                    return Err(e);
                }
                self.files[c.file].failed.get_or_insert_with(|| e.to_string());
            }
            for (offset, len, hash) in c.missing {
                let slots = self.waiting.entry(hash).or_default();
                if slots.is_empty() {
                    self.need.push(hash);
                }
                slots.push((c.file, offset, len));
                self.files[c.file].remaining += 1;
            }
        }
        Ok(())
    }

    /// Takes [`Applier::need`] (to ask for it), so that later calls
    /// return only what was added since.
    pub fn take_need(&mut self) -> Vec<Hash> {
        std::mem::take(&mut self.need)
    }

    fn prepare_file(
        &mut self,
        index: usize,
        b: &mut Building,
        pieces: &[crate::plan::Piece],
    ) -> Result<(), ApplyError> {
        if let Some(parent) = b.final_path.parent() {
            self.ensure_dir(parent)?;
        }
        // The temp file changes the directory's mtime: remember it first.
        self.touch_parent(&b.final_path);
        let f = self
            .fds
            .get(&b.temp, true)
            .map_err(|e| ApplyError::from_io(&b.temp, e))?;
        let have = f.metadata().map_err(|e| ApplyError::from_io(&b.temp, e))?.len();
        f.set_len(b.entry.size).map_err(|e| ApplyError::from_io(&b.temp, e))?;
        let mut buf = Vec::new();
        for piece in pieces {
            let len = piece.len as usize;
            buf.resize(len, 0);
            // An interrupted run may have left this piece in place already.
            if piece.offset + u64::from(piece.len) <= have {
                let f = self
                    .fds
                    .get(&b.temp, true)
                    .map_err(|e| ApplyError::from_io(&b.temp, e))?;
                if f.read_exact_at(&mut buf, piece.offset).is_ok() && *blake3::hash(&buf).as_bytes() == piece.hash {
                    self.report.resumed_bytes += u64::from(piece.len);
                    continue;
                }
            }
            if let Some(loc) = &piece.local {
                if self.local.last().is_none_or(|c| c.file != index) {
                    self.local.push(LocalCopy {
                        file: index,
                        temp: b.temp.clone(),
                        pieces: Vec::new(),
                    });
                }
                if let Some(c) = self.local.last_mut() {
                    c.pieces.push(LocalPiece {
                        offset: piece.offset,
                        len: piece.len,
                        hash: piece.hash,
                        src: loc.path.clone(),
                        src_offset: loc.offset,
                    });
                }
                continue;
            }
            let slots = self.waiting.entry(piece.hash).or_default();
            if slots.is_empty() {
                self.need.push(piece.hash);
            }
            slots.push((index, piece.offset, piece.len));
            b.remaining += 1;
        }
        Ok(())
    }

    fn ensure_dir(&mut self, p: &Path) -> Result<(), ApplyError> {
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) => {
                self.touch_parent(p);
                std::fs::remove_file(p).map_err(|e| ApplyError::from_io(p, e))?;
            }
            Err(_) => {}
        }
        if let Some(parent) = p.parent() {
            if std::fs::symlink_metadata(parent).is_err() {
                self.ensure_dir(parent)?;
            }
            self.touch_parent(p);
        }
        match std::fs::create_dir(p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(ApplyError::from_io(p, e)),
        }
    }

    /// Remembers the mtime of `p`'s directory before the first change in it.
    fn touch_parent(&mut self, p: &Path) {
        if let Some(parent) = p.parent()
            && !self.touched.contains_key(parent)
        {
            let m = std::fs::symlink_metadata(parent).ok().map(|m| mtime_ns(&m));
            self.touched.insert(parent.to_path_buf(), m);
        }
    }

    /// The chunk hashes to ask the sender for whole, each once, in
    /// first-use order.
    pub fn need(&self) -> &[Hash] {
        &self.need
    }

    /// The chunks to ask for as deltas, with their bases' signatures (each
    /// hash once, none of them in [`Applier::need`]). Taken once: they can
    /// be large.
    pub fn take_delta_requests(&mut self) -> Vec<DeltaRequest> {
        std::mem::take(&mut self.need_delta)
    }

    /// Bytes of the needed chunks.
    pub fn need_bytes(&self) -> u64 {
        self.waiting
            .values()
            .filter_map(|v| v.first())
            .map(|&(_, _, len)| u64::from(len))
            .sum()
    }

    /// Step 2: writes a received chunk wherever it is needed.
    pub fn deliver(&mut self, hash: &Hash, data: &[u8]) -> Result<(), ApplyError> {
        let hex = || hash.iter().take(8).map(|b| format!("{b:02x}")).collect::<String>();
        if blake3::hash(data).as_bytes() != hash {
            return Err(ApplyError::BadChunk { hash: hex() });
        }
        let slots = self
            .waiting
            .remove(hash)
            .ok_or_else(|| ApplyError::Unexpected { hash: hex() })?;
        // A chunk asked for as a delta may come whole (the delta did not pay).
        self.bases.remove(hash);
        for (i, offset, len) in slots {
            if data.len() != len as usize {
                return Err(ApplyError::BadChunk { hash: hex() });
            }
            let b = &mut self.files[i];
            if b.failed.is_some() {
                continue;
            }
            b.remaining -= 1;
            let temp = b.temp.clone();
            let res = self.fds.get(&temp, true).and_then(|f| f.write_all_at(data, offset));
            if let Err(e) = res {
                let e = ApplyError::from_io(&temp, e);
                if e.stops_set() {
                    self.abort();
                    return Err(e);
                }
                self.files[i].failed = Some(e.to_string());
            }
            self.report.received_bytes += u64::from(len);
        }
        Ok(())
    }

    /// Step 2 for a chunk sent as a delta: re-reads its base, checks it is
    /// what was signed, rebuilds the chunk (bounded by `raw_len`) and
    /// delivers it. `literals` are the delta's literal bytes, decompressed.
    ///
    /// # Errors
    /// [`ApplyError::BadDelta`] when the ops do not fit the base,
    /// [`ApplyError::BadChunk`] when the result does not match its hash —
    /// the sender's fault, as for a bad chunk. A base that changed on disk
    /// only fails the files that need the chunk.
    pub fn deliver_delta(
        &mut self,
        hash: &Hash,
        raw_len: u32,
        ops: &[DeltaOp],
        literals: &[u8],
    ) -> Result<(), ApplyError> {
        let hex = || hash.iter().take(8).map(|b| format!("{b:02x}")).collect::<String>();
        let base = self
            .bases
            .remove(hash)
            .ok_or_else(|| ApplyError::Unexpected { hash: hex() })?;
        let mut buf = vec![0u8; base.len as usize];
        let read = self
            .fds
            .get(&base.path, false)
            .and_then(|f| f.read_exact_at(&mut buf, base.offset));
        if read.is_err() || blake3::hash(&buf).as_bytes() != &base.digest {
            self.fail_waiting(hash, BASE_CHANGED);
            return Ok(());
        }
        let data = delta::apply(&buf, base.block_size, ops, literals, raw_len).map_err(|e| ApplyError::BadDelta {
            hash: hex(),
            reason: e.to_string(),
        })?;
        drop(buf);
        self.deliver(hash, &data)
    }

    /// The sender can no longer provide these chunks (its file changed after
    /// its scan): the files that need them fail this time; the next pass
    /// offers them again.
    pub fn give_up(&mut self, hashes: &[Hash]) {
        for h in hashes {
            self.fail_waiting(h, "the sender's copy changed while it was sent; retried next pass");
        }
    }

    /// Fails every file still waiting for chunk `hash`.
    fn fail_waiting(&mut self, hash: &Hash, reason: &str) {
        self.bases.remove(hash);
        for (i, _, _) in self.waiting.remove(hash).unwrap_or_default() {
            self.files[i].failed.get_or_insert_with(|| reason.to_string());
        }
    }

    /// Whether every needed chunk has arrived or been given up.
    pub fn complete(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Removes this run's temp files after a disk-full or permission error
    /// (they only take space); nothing was renamed. A run that is merely
    /// interrupted keeps them so the next run resumes.
    pub fn abort(&mut self) {
        self.fds.open.clear();
        for b in &self.files {
            let _ = std::fs::remove_file(&b.temp);
        }
        let _ = self.journal.clear();
    }

    /// Step 3: metadata, durability, renames, links, deletions, directories.
    pub fn finish(mut self) -> Result<ApplyReport, ApplyError> {
        if !self.waiting.is_empty() {
            // Temp files stay: the next run resumes from what arrived.
            return Err(ApplyError::Missing {
                count: self.waiting.len(),
            });
        }
        self.fds.open.clear();
        let files = std::mem::take(&mut self.files);
        for b in &files {
            if b.failed.is_none()
                && let Err(e) = File::options()
                    .write(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&b.temp)
                    .and_then(|f| meta::set_on_file(&f, &b.entry))
            {
                self.fail(&b.entry.path, ApplyError::from_io(&b.temp, e));
            }
        }
        let base = self.dest.root_paths().map(|(p, _)| p).find(|p| p.exists());
        if let Some(base) = &base {
            meta::syncfs(base).map_err(|e| ApplyError::from_io(base, e))?;
        }
        for b in files {
            if let Some(reason) = b.failed {
                let _ = std::fs::remove_file(&b.temp);
                self.report.failures.push(Failure {
                    path: b.entry.path.clone(),
                    reason,
                });
                continue;
            }
            self.touch_parent(&b.final_path);
            match replace(&b.temp, &b.final_path) {
                Ok(()) => self.report.applied.push(b.entry),
                Err(e) => {
                    let _ = std::fs::remove_file(&b.temp);
                    self.fail(&b.entry.path, ApplyError::from_io(&b.final_path, e));
                }
            }
        }
        let plan = std::mem::take(&mut self.plan);
        for e in plan.symlinks.iter().chain(&plan.hardlinks) {
            let res = self.link(e);
            self.outcome(e, res);
        }
        for e in &plan.retouch {
            let p = self.dest.local(&e.path);
            let res = match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_file() => meta::set_on_path(&p, e, false),
                Ok(_) => Err(io::Error::other("not a regular file on the replica")),
                Err(err) => Err(err),
            };
            self.outcome(e, res.map_err(|err| ApplyError::from_io(&p, err)));
        }
        for d in &plan.deletes {
            let p = self.dest.local(d);
            self.touch_parent(&p);
            let res = match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
                Ok(_) => std::fs::remove_file(&p),
                // ENOTDIR: a parent became a file in this same plan, so the path is gone.
                Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => Ok(()),
                Err(e) => Err(e),
            };
            match res {
                Ok(()) => self.report.deleted.push(d.clone()),
                Err(e) => self.fail(d, ApplyError::from_io(&p, e)),
            }
        }
        // Directory metadata last, deepest first: nothing changes them after.
        let mut set_dirs: HashMap<PathBuf, ()> = HashMap::new();
        for d in plan.dirs.iter().rev() {
            let p = self.dest.local(&d.path);
            let res = meta::set_on_path(&p, d, false).map_err(|e| ApplyError::from_io(&p, e));
            set_dirs.insert(p, ());
            self.outcome(d, res);
        }
        let mut touched: Vec<_> = self.touched.drain().collect();
        touched.sort_by(|a, b| b.0.cmp(&a.0));
        for (dir, before) in touched {
            if let Some(ns) = before
                && !set_dirs.contains_key(&dir)
            {
                let _ = restore_mtime(&dir, ns);
            }
        }
        if let Some(base) = &base {
            meta::syncfs(base).map_err(|e| ApplyError::from_io(base, e))?;
        }
        self.journal
            .clear()
            .map_err(|e| ApplyError::from_io(self.journal.path(), e))?;
        Ok(std::mem::take(&mut self.report))
    }

    fn link(&mut self, e: &Entry) -> Result<(), ApplyError> {
        let p = self.dest.local(&e.path);
        let tmp = temp_path(&p, &e.path, blake3::hash(&e.target).as_bytes());
        let _ = std::fs::remove_file(&tmp);
        self.touch_parent(&p);
        let made = if e.kind == hamirror_wire::EntryKind::Symlink {
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&e.target), &tmp)
                .and_then(|()| meta::set_on_path(&tmp, e, true))
        } else {
            let target = self.dest.resolve(&e.target)?;
            std::fs::hard_link(&target, &tmp)
        };
        made.and_then(|()| replace(&tmp, &p)).map_err(|err| {
            let _ = std::fs::remove_file(&tmp);
            ApplyError::from_io(&p, err)
        })
    }

    fn outcome(&mut self, e: &Entry, res: Result<(), ApplyError>) {
        match res {
            Ok(()) => self.report.applied.push(e.clone()),
            Err(err) => self.fail(&e.path, err),
        }
    }

    fn fail(&mut self, path: &[u8], e: ApplyError) {
        tracing::warn!("{}: {e}", String::from_utf8_lossy(path));
        self.report.failures.push(Failure {
            path: path.to_vec(),
            reason: e.to_string(),
        });
    }
}

/// Renames `from` over `to`; a directory in the way (the sender replaced a
/// directory by a file or link) is removed first.
fn replace(from: &Path, to: &Path) -> io::Result<()> {
    if let Ok(m) = std::fs::symlink_metadata(to)
        && m.is_dir()
    {
        std::fs::remove_dir_all(to)?;
    }
    std::fs::rename(from, to)
}

fn restore_mtime(dir: &Path, ns: i64) -> io::Result<()> {
    let m = std::fs::symlink_metadata(dir)?;
    use std::os::unix::fs::MetadataExt;
    let e = Entry {
        path: vec![],
        kind: hamirror_wire::EntryKind::Dir,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime_ns: ns,
        size: 0,
        file_hash: [0; 32],
        chunks: vec![],
        target: vec![],
    };
    meta::set_on_path(dir, &e, false)
}

#[cfg(test)]
mod tests;
