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
//!    symlinks, hard links, FIFOs and device nodes (each at a temp name,
//!    renamed into place), deletes, sets directory metadata last, and
//!    clears the journal of temp files. A device node needs `CAP_MKNOD`:
//!    a receiver refused it (not root) records a warning for that path and
//!    goes on. The old versions replaced or deleted stay open in the
//!    report ([`retired`]): the caller frees them after it has answered.
//!
//! Every operation reaches the tree through [`Dest`]: relative to the
//! set's roots, never through a symlink. A sender's type change (a file
//! that became a directory, a directory that became a symlink…) is
//! followed in the same pass; a directory the replica's own user swapped
//! for a symlink fails the paths below it, and is never followed. Zero
//! blocks are not written, so sparse files stay sparse. The directories a
//! plan changes get their mtime back (or the plan's), also after an
//! interrupted run: the journal keeps what they had before it.
//!
//! Disk full and permission errors stop the set: temp files are removed and
//! nothing has been renamed, so the old replica is intact. Other per-file
//! errors are recorded and the rest goes on (exit code 1). Depends on the
//! plan and the filesystem only; no network, no index.

pub mod dest;
mod journal;
pub mod meta;
pub mod retired;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use hamirror_wire::{DeltaOp, DeltaRequest, Entry, Hash};
use rayon::prelude::*;

use crate::delta;
use crate::plan::{FileBuild, Plan};
use crate::scan::TEMP_SUFFIX;
pub use crate::scan::is_temp_name;

pub use dest::{Dest, Open};
pub use journal::Journal;

/// Why applying stopped, or why one path failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("refusing path {path:?}: {why}")]
    UnsafePath { path: String, why: &'static str },
    #[error(
        "{path}: a directory on the way is a symlink or not a directory on the replica (changed there by hand?); not followed — `hamirror verify` shows the difference"
    )]
    Blocked { path: String },
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
        Self::classify(path.display().to_string(), e)
    }

    /// An error on set path `path`.
    fn on(path: &[u8], e: io::Error) -> Self {
        Self::classify(crate::scan::show_path(path).to_string(), e)
    }

    fn classify(path: String, e: io::Error) -> Self {
        if dest::is_blocked(&e) {
            return ApplyError::Blocked { path };
        }
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
    /// Paths created or changed (their new state is what the plan offered);
    /// without those taken already ([`Applier::take_applied`]).
    pub applied: Vec<Entry>,
    /// How many were, taken or not.
    pub applied_count: u64,
    /// For each of `applied`, its `lstat` right after it was renamed into
    /// place, where that was taken (files), for the index's fingerprint.
    pub applied_stat: Vec<Option<rustix::fs::Stat>>,
    pub deleted: Vec<Vec<u8>>,
    pub failures: Vec<Failure>,
    /// Paths applied without some of their extended attributes (the
    /// replica's filesystem refused them): one per attribute, the reason
    /// naming it. Also device nodes not made at all because this process
    /// may not (no `CAP_MKNOD`): not in `applied`.
    pub warnings: Vec<Failure>,
    /// Bytes written into files from received chunks.
    pub received_bytes: u64,
    /// Bytes copied from chunks the replica already held.
    pub reused_bytes: u64,
    /// Bytes found already in place in an interrupted run's temp file.
    pub resumed_bytes: u64,
    /// Directories whose mtime an interrupted run had left changed, given
    /// back the one they had before it (the index must learn it).
    pub repaired_dirs: Vec<(Vec<u8>, i64)>,
    /// The old versions this run replaced or deleted, still open: dropped
    /// (their blocks freed) once the receiver has answered.
    pub retired: retired::Retired,
}

/// The temp file for building the entry at set path `path`: hidden, in the
/// same directory (so the rename is atomic), named after the path and
/// content so a rerun finds it again.
pub fn temp_path(path: &[u8], content: &Hash) -> Vec<u8> {
    let (dir, name) = dest::split(path);
    let short = &name[..name.len().min(200)];
    let mut h = blake3::Hasher::new();
    h.update(path);
    h.update(content);
    let tag = h.finalize();
    let hex: String = tag.as_bytes()[..8].iter().map(|b| format!("{b:02x}")).collect();
    let mut out = dir.to_vec();
    if !out.is_empty() {
        out.push(b'/');
    }
    out.push(b'.');
    out.extend_from_slice(short);
    out.push(b'.');
    out.extend_from_slice(hex.as_bytes());
    out.extend_from_slice(TEMP_SUFFIX);
    out
}

/// Writes `data` at `offset` of a file that reads as zeros wherever it was
/// not written (a fresh temp file, or an interrupted run's temp file of the
/// same content), leaving every aligned 4 KiB block of zeros unwritten so
/// that a sparse file stays sparse on the replica.
fn write_sparse(f: &File, data: &[u8], offset: u64) -> io::Result<()> {
    const BLOCK: usize = 4096;
    let mut from = 0;
    let mut at = (BLOCK - (offset % BLOCK as u64) as usize) % BLOCK;
    while at + BLOCK <= data.len() {
        if is_zero(&data[at..at + BLOCK]) {
            if from < at {
                f.write_all_at(&data[from..at], offset + from as u64)?;
            }
            from = at + BLOCK;
        }
        at += BLOCK;
    }
    // Any zeros read as zeros already; only whole blocks make holes.
    if from < data.len() && !is_zero(&data[from..]) {
        f.write_all_at(&data[from..], offset + from as u64)?;
    }
    Ok(())
}

/// A large file being built is handed to the disk this many bytes at a
/// time; a complete one whole.
const WRITEBACK_WINDOW: u64 = 8 << 20;

/// Starts writing `len` bytes (0: to the end) at `offset` of `f` to disk,
/// without waiting (`sync_file_range(SYNC_FILE_RANGE_WRITE)`). Durability still comes
/// from the `syncfs` before the renames; this only spreads the disk's work
/// over the transfer, so that `syncfs` does not find gigabytes still
/// dirty and write them while the network idles. When the disk is slower
/// than the link it blocks the writer, which slows the sender through
/// flow control instead of letting dirty pages pile up. A failure is
/// only a lost hint.
fn start_writeback(f: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: `f` is an open descriptor for the whole call; no pointers.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Owner, mode, times and extended attributes of a complete temp file,
/// so that it appears complete; the attributes after the mode (a chmod
/// would rewrite an ACL's mask). Returns the attributes the replica's
/// filesystem refused.
fn set_file_meta(dest: &Dest, f: &File, e: &Entry) -> io::Result<Vec<String>> {
    meta::set_on_file(f, e)?;
    if dest.xattrs.is_none() {
        return Ok(vec![]);
    }
    Ok(crate::xattr::apply(
        crate::xattr::On::Fd(f.as_fd()),
        &e.xattrs,
        &dest.xattrs,
    ))
}

fn is_zero(b: &[u8]) -> bool {
    // Stops at the first non-zero word: costs nothing on ordinary data.
    let (words, rest) = b.split_at(b.len() - b.len() % 16);
    words
        .chunks_exact(16)
        .all(|w| u128::from_ne_bytes(w.try_into().expect("16 bytes")) == 0)
        && rest.iter().all(|x| *x == 0)
}

/// The base of a chunk asked for as a delta: where it lies, how it was
/// cut into blocks, and the BLAKE3 of the bytes that were signed (the file
/// is read again to rebuild, and must not have changed in between).
struct SignedBase {
    path: Vec<u8>,
    offset: u64,
    len: u32,
    block_size: u32,
    digest: Hash,
}

/// The pieces of one file to copy from what the replica already holds.
struct LocalCopy {
    /// Index into the applier's files.
    file: usize,
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
    /// The temp file was opened (so it exists now).
    opened: bool,
    bytes: u64,
    /// Pieces whose source no longer holds them (the replica changed since
    /// the index saw it): to ask the sender for.
    missing: Vec<(u64, u32, Hash)>,
    /// Writing the temp file failed.
    error: Option<ApplyError>,
}

impl LocalCopy {
    fn run(self, dest: &Dest, b: &Building) -> Copied {
        let mut out = Copied {
            file: self.file,
            opened: false,
            bytes: 0,
            missing: Vec::new(),
            error: None,
        };
        let temp = match b.open_temp(dest) {
            Ok(f) => {
                out.opened = true;
                f
            }
            Err(e) => {
                out.error = Some(ApplyError::on(&b.temp, e));
                return out;
            }
        };
        let mut src: Option<(Vec<u8>, Option<File>)> = None;
        let mut buf = Vec::new();
        for p in self.pieces {
            if src.as_ref().is_none_or(|(path, _)| *path != p.src) {
                src = Some((p.src.clone(), dest.open_file(&p.src, Open::Read).ok()));
            }
            buf.resize(p.len as usize, 0);
            let held = src.as_ref().and_then(|(_, f)| f.as_ref()).is_some_and(|f| {
                f.read_exact_at(&mut buf, p.src_offset).is_ok() && blake3::hash(&buf).as_bytes() == &p.hash
            });
            if !held {
                out.missing.push((p.offset, p.len, p.hash));
                continue;
            }
            if let Err(e) = write_sparse(&temp, &buf, p.offset) {
                out.error = Some(ApplyError::on(&b.temp, e));
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
    /// Set path of the temp file, beside the final one.
    temp: Vec<u8>,
    remaining: usize,
    failed: Option<String>,
    /// Owner, mode, times and attributes are set already: by the writer
    /// that delivered its last chunk, while the file was open.
    meta_done: bool,
    /// The temp file exists: left by an interrupted run, or created by
    /// the first write to it. Creating it then, not all up front, spreads
    /// the filesystem's inode work over the transfer and the writers.
    created: bool,
}

impl Building {
    /// Opens the temp file to write, creating it (at its final length, so
    /// unwritten zeros read as zeros) on the first write. Only then is it
    /// created: a temp file that vanished later must not come back empty.
    fn open_temp(&self, dest: &Dest) -> io::Result<File> {
        if self.created {
            return dest.open_file(&self.temp, Open::Write);
        }
        let f = dest.open_file(&self.temp, Open::Create)?;
        f.set_len(self.entry.size)?;
        Ok(f)
    }
}

/// A small cache of open files: building thousands of files must not open
/// thousands of descriptors at once, nor reopen a file for every chunk.
#[derive(Default)]
struct Fds {
    open: HashMap<Vec<u8>, File>,
}

impl Fds {
    const MAX: usize = 128;

    fn get(&mut self, dest: &Dest, path: &[u8], how: Open) -> io::Result<&File> {
        if !self.open.contains_key(path) {
            if self.open.len() >= Self::MAX {
                self.open.clear();
            }
            let f = dest.open_file(path, how)?;
            self.open.insert(path.to_vec(), f);
        }
        Ok(&self.open[path])
    }
}

/// The files being built, by their number in the order they were added.
/// A map, not a vector: files installed early ([`Applier::install_complete`])
/// leave it, so a long offer applied a window at a time holds only the
/// files in flight.
#[derive(Default)]
struct Files {
    map: HashMap<usize, Building>,
    /// The number the next file added gets.
    next: usize,
}

impl Files {
    /// Removes the files `pick` chooses, in the order they were added.
    fn take(&mut self, pick: impl Fn(&Building) -> bool) -> Vec<Building> {
        let mut ids: Vec<usize> = self.map.iter().filter(|(_, b)| pick(b)).map(|(i, _)| *i).collect();
        ids.sort_unstable();
        ids.into_iter().filter_map(|i| self.map.remove(&i)).collect()
    }
}

impl std::ops::Index<usize> for Files {
    type Output = Building;
    fn index(&self, i: usize) -> &Building {
        &self.map[&i]
    }
}

impl std::ops::IndexMut<usize> for Files {
    fn index_mut(&mut self, i: usize) -> &mut Building {
        self.map.get_mut(&i).expect("a file being built")
    }
}

/// Carries out one plan. See the module documentation for the three steps.
pub struct Applier {
    dest: Dest,
    plan: Plan,
    files: Files,
    waiting: HashMap<Hash, Vec<(usize, u64, u32)>>,
    need: Vec<Hash>,
    /// Needed chunks asked for as deltas (not in `need`), until sent.
    need_delta: Vec<DeltaRequest>,
    bases: HashMap<Hash, SignedBase>,
    /// Pieces the replica already holds, per file, until [`Applier::copy_held`]
    /// copies them.
    local: Vec<LocalCopy>,
    fds: Fds,
    /// Bytes of every chunk asked for so far (each once).
    need_bytes: u64,
    journal: Journal,
    /// The directories of the plan: where the sender has a directory, a
    /// file or symlink on the replica is replaced (a type change).
    dir_paths: HashSet<Vec<u8>>,
    /// The set's directories this plan changes (temp files, renames, links,
    /// deletions), with the mtime to give them back where the plan does not
    /// set it: as first seen, by this run or by an interrupted earlier one.
    touched: HashMap<Vec<u8>, i64>,
    /// Of those, the ones whose mtime an interrupted run had changed.
    repaired: HashSet<Vec<u8>>,
    /// Directories this run already made sure of (each file in them is
    /// then opened beneath them without another look: that open is
    /// itself safe, and fails if the directory went away meanwhile).
    ensured: HashSet<Vec<u8>>,
    report: ApplyReport,
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
    /// A hostile path or an inconsistent offer refuses the whole plan;
    /// disk full and permission errors stop the set (nothing written is
    /// left behind).
    pub fn start(dest: Dest, plan: Plan, journal: Journal) -> Result<Applier, ApplyError> {
        let mut a = Applier {
            dir_paths: HashSet::new(),
            dest,
            files: Files::default(),
            waiting: HashMap::new(),
            need: Vec::new(),
            need_delta: Vec::new(),
            bases: HashMap::new(),
            local: Vec::new(),
            fds: Fds::default(),
            need_bytes: 0,
            journal,
            touched: HashMap::new(),
            repaired: HashSet::new(),
            ensured: HashSet::new(),
            report: ApplyReport::default(),
            plan: Plan::default(),
        };
        a.add(plan)?;
        Ok(a)
    }

    /// Adds another plan for the same offer (the next window of its files)
    /// to what is being applied: step 1's first half for its entries, as
    /// [`Applier::start`]; then [`Applier::take_need_whole`],
    /// [`Applier::sign`] and [`Applier::copy_held`] as after `start`. Its
    /// links, deletions and directory metadata wait for
    /// [`Applier::finish`] with the rest. A chunk another window still
    /// waits for is not asked for again.
    ///
    /// # Errors
    /// As [`Applier::start`]; a stop removes every temp file of the run.
    pub fn add(&mut self, plan: Plan) -> Result<(), ApplyError> {
        let mut plan = plan;
        // Refused before anything of this run exists: an earlier run's
        // temp files stay for the next one (as they would after a stop).
        let started = self.files.next > 0;
        if let Err(e) = check_plan(&self.dest, &plan) {
            if started {
                self.abort();
            }
            return Err(e);
        }
        let builds = std::mem::take(&mut plan.files);
        let temps: Vec<Vec<u8>> = builds
            .iter()
            .map(|fb| temp_path(&fb.entry.path, &fb.entry.file_hash))
            .collect();
        let leftovers = self.journal.leftovers(&self.dest);
        let existing: HashSet<Vec<u8>> = leftovers.iter().cloned().collect();
        // Every directory this plan changes, with its mtime before: from an
        // interrupted run's journal when there was one (what this run sees
        // is what that run left), else as found now.
        let mut new_dirs = Vec::new();
        let changed = builds
            .iter()
            .map(|fb| &fb.entry.path)
            .chain(
                plan.symlinks
                    .iter()
                    .chain(&plan.hardlinks)
                    .chain(&plan.specials)
                    .chain(&plan.dirs)
                    .map(|e| &e.path),
            )
            .chain(&plan.deletes)
            .chain(&leftovers);
        let mut seen = HashSet::new();
        for path in changed {
            let dir = dest::split(path).0;
            if !seen.insert(dir) || self.touched.contains_key(dir) || !self.dest.holds_dir(dir) {
                continue;
            }
            let now = self
                .dest
                .stat(dir)
                .ok()
                .filter(dest::is_dir)
                .map(|st| meta::stat_mtime_ns(&st));
            let before = match (self.journal.dir_mtime(dir), now) {
                (Some(earlier), now) => {
                    if now != Some(earlier) {
                        self.repaired.insert(dir.to_vec());
                    }
                    earlier
                }
                (None, Some(now)) => {
                    new_dirs.push((dir.to_vec(), now));
                    now
                }
                (None, None) => continue,
            };
            self.touched.insert(dir.to_vec(), before);
        }
        if let Err(e) = self.journal.record(&temps, &new_dirs) {
            let e = ApplyError::from_io(self.journal.path(), e);
            if started {
                self.abort();
            }
            return Err(e);
        }
        self.dir_paths.extend(plan.dirs.iter().map(|d| d.path.clone()));
        let dirs = std::mem::take(&mut plan.dirs);
        let result = self.prepare_inner(&dirs, builds, temps, &existing);
        // The rest waits for `finish`; the itemized list is for dry runs.
        let p = &mut self.plan;
        p.dirs.extend(dirs);
        p.retouch.append(&mut plan.retouch);
        p.symlinks.append(&mut plan.symlinks);
        p.hardlinks.append(&mut plan.hardlinks);
        p.specials.append(&mut plan.specials);
        p.deletes.append(&mut plan.deletes);
        p.bases.extend(plan.bases);
        p.base_bytes += plan.base_bytes;
        p.unchanged += plan.unchanged;
        p.reused_chunks += plan.reused_chunks;
        p.reused_bytes += plan.reused_bytes;
        if let Err(e) = result {
            self.abort();
            return Err(e);
        }
        Ok(())
    }

    /// Directories, then each file's pieces: kept from an interrupted
    /// run's temp file (those in `existing`), copied locally, or waited for.
    fn prepare_inner(
        &mut self,
        dirs: &[Entry],
        builds: Vec<FileBuild>,
        temps: Vec<Vec<u8>>,
        existing: &HashSet<Vec<u8>>,
    ) -> Result<(), ApplyError> {
        for d in dirs {
            match self.ensure_dir(&d.path) {
                Ok(()) => {}
                Err(e) if e.stops_set() => return Err(e),
                Err(e) => self.fail(&d.path, e),
            }
        }
        for (fb, temp) in builds.into_iter().zip(temps) {
            let i = self.files.next;
            self.files.next += 1;
            let mut b = Building {
                entry: fb.entry,
                temp,
                remaining: 0,
                failed: None,
                meta_done: false,
                created: false,
            };
            let resume = existing.contains(&b.temp);
            match self.prepare_file(i, &mut b, &fb.pieces, resume) {
                Ok(()) => {}
                Err(e) if e.stops_set() => {
                    self.files.map.insert(i, b);
                    return Err(e);
                }
                Err(e) => b.failed = Some(e.to_string()),
            }
            self.files.map.insert(i, b);
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
        let jobs: Vec<(Hash, &crate::plan::Base)> =
            self.need.iter().filter_map(|h| Some((*h, bases.get(h)?))).collect();
        let dest = &self.dest;
        let signed: Vec<Option<(SignedBase, DeltaRequest)>> = jobs
            .into_par_iter()
            .map(|(hash, b)| {
                let f = dest.open_file(&b.path, Open::Read).ok()?;
                let mut buf = vec![0u8; b.len as usize];
                f.read_exact_at(&mut buf, b.offset).ok()?;
                let signature = delta::signature(&buf, delta::block_size_for(b.len));
                let base = SignedBase {
                    path: b.path.clone(),
                    offset: b.offset,
                    len: b.len,
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
        let files = &self.files;
        let copied: Vec<Copied> = jobs
            .into_par_iter()
            .map(|job| {
                let b = &files[job.file];
                job.run(dest, b)
            })
            .collect();
        for c in copied {
            self.report.reused_bytes += c.bytes;
            self.files[c.file].created |= c.opened;
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
                    self.need_bytes += u64::from(len);
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
        resume: bool,
    ) -> Result<(), ApplyError> {
        let dir = dest::split(&b.entry.path).0;
        if self.dest.holds_dir(dir) {
            self.ensure_dir(dir)?;
        }
        // An interrupted run's temp file keeps the pieces it has in place;
        // any other is created by its first write.
        let mut have = 0;
        if resume {
            let f = self
                .fds
                .get(&self.dest, &b.temp, Open::Create)
                .map_err(|e| ApplyError::on(&b.temp, e))?;
            have = f.metadata().map_err(|e| ApplyError::on(&b.temp, e))?.len();
            f.set_len(b.entry.size).map_err(|e| ApplyError::on(&b.temp, e))?;
            b.created = true;
        }
        let mut buf = Vec::new();
        for piece in pieces {
            let len = piece.len as usize;
            buf.resize(len, 0);
            // An interrupted run may have left this piece in place already.
            if piece.offset + u64::from(piece.len) <= have {
                let f = self
                    .fds
                    .get(&self.dest, &b.temp, Open::Write)
                    .map_err(|e| ApplyError::on(&b.temp, e))?;
                if f.read_exact_at(&mut buf, piece.offset).is_ok() && *blake3::hash(&buf).as_bytes() == piece.hash {
                    self.report.resumed_bytes += u64::from(piece.len);
                    continue;
                }
            }
            if let Some(loc) = &piece.local {
                if self.local.last().is_none_or(|c| c.file != index) {
                    self.local.push(LocalCopy {
                        file: index,
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
                self.need_bytes += u64::from(piece.len);
            }
            slots.push((index, piece.offset, piece.len));
            b.remaining += 1;
        }
        Ok(())
    }

    /// Makes `path` (a directory of the set) a directory, with its missing
    /// parents. Where the plan has a directory, a file or symlink in its
    /// place is replaced (the sender changed its type); anywhere else a
    /// non-directory on the way fails the path: the replica was changed
    /// locally, and nothing is followed or guessed.
    fn ensure_dir(&mut self, path: &[u8]) -> Result<(), ApplyError> {
        if self.ensured.contains(path) {
            return Ok(());
        }
        self.ensure_dir_once(path)?;
        self.ensured.insert(path.to_vec());
        Ok(())
    }

    fn ensure_dir_once(&mut self, path: &[u8]) -> Result<(), ApplyError> {
        if !self.dest.is_dir_root(path) {
            match self.dest.stat(path) {
                Ok(st) if dest::is_dir(&st) => return Ok(()),
                Ok(_) if self.dir_paths.contains(path) => {
                    self.dest.remove(path).map_err(|e| ApplyError::on(path, e))?;
                }
                Ok(_) => {
                    return Err(ApplyError::on(path, io::Error::from_raw_os_error(libc::ENOTDIR)));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound || dest::is_blocked(&e) => {
                    self.ensure_dir(dest::split(path).0)?;
                }
                Err(e) => return Err(ApplyError::on(path, e)),
            }
        }
        self.dest.mkdir(path).map_err(|e| ApplyError::on(path, e))
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

    /// Bytes of every chunk asked for since the start (each once; one a
    /// later window needs again after it arrived counts again).
    pub fn need_bytes_added(&self) -> u64 {
        self.need_bytes
    }

    /// Bytes of the needed chunks.
    pub fn need_bytes(&self) -> u64 {
        self.waiting
            .values()
            .filter_map(|v| v.first())
            .map(|&(_, _, len)| u64::from(len))
            .sum()
    }

    /// Step 2: writes a received chunk wherever it is needed (zero blocks
    /// left as holes).
    pub fn deliver(&mut self, hash: &Hash, data: &[u8]) -> Result<(), ApplyError> {
        self.deliver_many(&[(*hash, data)])
    }

    /// Step 2 for many received chunks: each verified against its hash,
    /// then written wherever it is needed by several writers at once (one
    /// file each, in plan order, so files fill in directory order). A file
    /// whose last chunk this was gets its metadata while it is open, so
    /// [`Applier::finish`] does not open it again.
    ///
    /// # Errors
    /// A chunk that does not match its hash or was not asked for refuses
    /// the whole batch before anything is written; disk full and
    /// permission errors stop the set.
    pub fn deliver_many(&mut self, chunks: &[(Hash, &[u8])]) -> Result<(), ApplyError> {
        let hex = |hash: &Hash| hash.iter().take(8).map(|b| format!("{b:02x}")).collect::<String>();
        if let Some((hash, _)) = chunks
            .par_iter()
            .find_any(|(hash, data)| blake3::hash(data).as_bytes() != hash)
        {
            return Err(ApplyError::BadChunk { hash: hex(hash) });
        }
        // Which file gets which chunk where: (chunk, offset) per file.
        let mut writes: HashMap<usize, Vec<(usize, u64)>> = HashMap::new();
        for (c, (hash, data)) in chunks.iter().enumerate() {
            let slots = self
                .waiting
                .remove(hash)
                .ok_or_else(|| ApplyError::Unexpected { hash: hex(hash) })?;
            // A chunk asked for as a delta may come whole (the delta did not pay).
            self.bases.remove(hash);
            for (i, offset, len) in slots {
                if data.len() != len as usize {
                    return Err(ApplyError::BadChunk { hash: hex(hash) });
                }
                // A failed file may have left already (installed early).
                let Some(b) = self.files.map.get_mut(&i) else {
                    continue;
                };
                if b.failed.is_some() {
                    continue;
                }
                b.remaining -= 1;
                writes.entry(i).or_default().push((c, offset));
                self.report.received_bytes += u64::from(len);
            }
        }
        let mut jobs: Vec<(usize, Vec<(usize, u64)>)> = writes.into_iter().collect();
        jobs.sort_unstable_by_key(|(i, _)| *i);
        let (files, dest) = (&self.files, &self.dest);
        type Written = (usize, bool, Result<Option<Vec<String>>, ApplyError>);
        let written: Vec<Written> = jobs
            .into_par_iter()
            .map(|(i, parts)| {
                let b = &files[i];
                let f = match b.open_temp(dest) {
                    Ok(f) => f,
                    Err(e) => return (i, false, Err(ApplyError::on(&b.temp, e))),
                };
                let res = (|| {
                    for (c, offset) in parts {
                        let len = chunks[c].1.len() as u64;
                        write_sparse(&f, chunks[c].1, offset)?;
                        // A large file is written back a window at a time.
                        let window = (offset + len) / WRITEBACK_WINDOW;
                        if b.remaining > 0 && window > offset / WRITEBACK_WINDOW {
                            start_writeback(&f, (window - 1) * WRITEBACK_WINDOW, WRITEBACK_WINDOW);
                        }
                    }
                    if b.remaining > 0 {
                        return Ok(None);
                    }
                    let warnings = set_file_meta(dest, &f, &b.entry)?;
                    start_writeback(&f, 0, 0);
                    Ok(Some(warnings))
                })();
                (i, true, res.map_err(|e| ApplyError::on(&b.temp, e)))
            })
            .collect();
        let mut stop = None;
        for (i, opened, res) in written {
            self.files[i].created |= opened;
            match res {
                Ok(None) => {}
                Ok(Some(warnings)) => {
                    self.files[i].meta_done = true;
                    let path = self.files[i].entry.path.clone();
                    self.warn(&path, warnings);
                }
                Err(e) if e.stops_set() => stop = stop.or(Some(e)),
                Err(e) => self.files[i].failed = Some(e.to_string()),
            }
        }
        if let Some(e) = stop {
            self.abort();
            return Err(e);
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
            .get(&self.dest, &base.path, Open::Read)
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
            if let Some(b) = self.files.map.get_mut(&i) {
                b.failed.get_or_insert_with(|| reason.to_string());
            }
        }
    }

    /// Whether every needed chunk has arrived or been given up.
    pub fn complete(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Removes this run's temp files after a disk-full or permission error
    /// (they only take space) and gives the directories their times back;
    /// nothing was renamed. A run that is merely interrupted keeps them so
    /// the next run resumes (and the journal keeps the directories' times).
    pub fn abort(&mut self) {
        self.fds.open.clear();
        for b in self.files.map.values() {
            let _ = self.dest.remove(&b.temp);
        }
        self.journal.remove_leftovers(&self.dest);
        self.restore_dirs(&HashSet::new());
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
        let files: Vec<Building> = self.files.take(|_| true);
        self.install(files)?;
        let plan = std::mem::take(&mut self.plan);
        for e in plan.symlinks.iter().chain(&plan.hardlinks) {
            let res = self.link(e);
            self.outcome(e, res);
        }
        for e in &plan.specials {
            match self.make_node(e) {
                Ok(w) => {
                    self.warn(&e.path, w);
                    self.outcome(e, Ok(()));
                }
                Err(NodeError::NotPermitted(err)) => {
                    let reason = format!(
                        "{} not created: {err} (making device nodes needs root, CAP_MKNOD); not mirrored",
                        if e.kind == hamirror_wire::EntryKind::BlockDev {
                            "block device"
                        } else {
                            "character device"
                        }
                    );
                    tracing::warn!("{}: {reason}", String::from_utf8_lossy(&e.path));
                    self.report.warnings.push(Failure {
                        path: e.path.clone(),
                        reason,
                    });
                }
                Err(NodeError::Failed(err)) => self.fail(&e.path, err),
            }
        }
        for e in &plan.retouch {
            let res = self.retouch(e).map_err(|err| ApplyError::on(&e.path, err));
            let res = res.map(|w| self.warn(&e.path, w));
            self.outcome(e, res);
        }
        for d in &plan.deletes {
            match self.dest.remove(d) {
                Ok(()) => self.report.deleted.push(d.clone()),
                Err(e) => self.fail(d, ApplyError::on(d, e)),
            }
        }
        self.journal.remove_leftovers(&self.dest);
        // Directory metadata last, deepest first: nothing changes them after.
        let mut set_dirs = HashSet::new();
        let mut dirs: Vec<&Entry> = plan.dirs.iter().collect();
        dirs.sort_by(|a, b| b.path.cmp(&a.path));
        for d in dirs {
            if self.report.failures.iter().any(|f| f.path == d.path) {
                continue;
            }
            let res = self
                .set_dir(&d.path, meta::DirMeta::All(d))
                .and_then(|()| self.dest.set_xattrs(&d.path, &d.xattrs))
                .map(|w| self.warn(&d.path, w))
                .map_err(|e| ApplyError::on(&d.path, e));
            set_dirs.insert(d.path.clone());
            self.outcome(d, res);
        }
        self.restore_dirs(&set_dirs);
        self.dest.syncfs().map_err(|e| ApplyError::on(b"", e))?;
        self.journal
            .clear()
            .map_err(|e| ApplyError::from_io(self.journal.path(), e))?;
        self.report.retired = self.dest.take_retired();
        Ok(std::mem::take(&mut self.report))
    }

    /// Installs the files complete so far (every piece in place), with
    /// one `syncfs` before their renames, as [`Applier::finish`] does, and
    /// forgets them; those that failed leave too (their temp files
    /// removed, reported as failures). Applying an offer a window at a
    /// time, this keeps only the files in flight in memory; take what was
    /// installed with [`Applier::take_applied`].
    ///
    /// # Errors
    /// As [`Applier::finish`]: the `syncfs` failing.
    pub fn install_complete(&mut self) -> Result<usize, ApplyError> {
        if !self.local.is_empty() {
            // Pieces still to copy locally: "complete" is not known yet.
            return Ok(0);
        }
        let done = self.files.take(|b| b.remaining == 0 || b.failed.is_some());
        let n = done.len();
        if n > 0 {
            self.install(done)?;
        }
        Ok(n)
    }

    /// Files that [`Applier::install_complete`] would install or drop now.
    pub fn ready(&self) -> usize {
        if !self.local.is_empty() {
            return 0;
        }
        self.files
            .map
            .values()
            .filter(|b| b.remaining == 0 || b.failed.is_some())
            .count()
    }

    /// Files being built (added and not installed yet).
    pub fn in_flight(&self) -> usize {
        self.files.map.len()
    }

    /// Takes what was installed so far, each with its `lstat` (see
    /// [`ApplyReport`]), so it can be committed before the rest.
    pub fn take_applied(&mut self) -> (Vec<Entry>, Vec<Option<rustix::fs::Stat>>) {
        (
            std::mem::take(&mut self.report.applied),
            std::mem::take(&mut self.report.applied_stat),
        )
    }

    /// Metadata, durability and renames of `files` (in the order they
    /// were added); a failed one's temp file is removed.
    fn install(&mut self, files: Vec<Building>) -> Result<(), ApplyError> {
        self.fds.open.clear();
        let dest = &self.dest;
        let set: Vec<(usize, io::Result<Vec<String>>)> = files
            .par_iter()
            .enumerate()
            .filter(|(_, b)| b.failed.is_none() && !b.meta_done)
            .map(|(i, b)| {
                let res = b.open_temp(dest).and_then(|f| set_file_meta(dest, &f, &b.entry));
                (i, res)
            })
            .collect();
        let mut failed: HashSet<Vec<u8>> = HashSet::new();
        for (i, res) in set {
            let b = &files[i];
            match res {
                Ok(w) => self.warn(&b.entry.path, w),
                Err(e) => {
                    failed.insert(b.entry.path.clone());
                    self.fail(&b.entry.path, ApplyError::on(&b.temp, e));
                }
            }
        }
        self.dest.syncfs().map_err(|e| ApplyError::on(b"", e))?;
        // Renames in parallel too: each is one directory operation, and
        // those in different directories do not wait for each other.
        let dest = &self.dest;
        let renamed: Vec<Option<io::Result<Option<rustix::fs::Stat>>>> = files
            .par_iter()
            .map(|b| {
                if b.failed.is_some() || failed.contains(&b.entry.path) {
                    let _ = dest.remove(&b.temp);
                    return None;
                }
                let res = dest.replace(&b.temp, &b.entry.path);
                if res.is_err() {
                    let _ = dest.remove(&b.temp);
                }
                Some(res)
            })
            .collect();
        for (b, res) in files.into_iter().zip(renamed) {
            match res {
                None => {
                    if let Some(reason) = b.failed {
                        self.report.failures.push(Failure {
                            path: b.entry.path,
                            reason,
                        });
                    }
                }
                Some(Ok(st)) => {
                    self.report.applied_stat.push(st);
                    self.report.applied.push(b.entry);
                    self.report.applied_count += 1;
                }
                Some(Err(e)) => self.fail(&b.entry.path, ApplyError::on(&b.entry.path, e)),
            }
        }
        Ok(())
    }

    /// Gives the touched directories their mtime back, deepest first,
    /// except those in `set` (the plan set them). Those an interrupted run
    /// had left wrong are reported as repaired.
    fn restore_dirs(&mut self, set: &HashSet<Vec<u8>>) {
        let mut touched: Vec<(Vec<u8>, i64)> = self.touched.drain().collect();
        touched.sort_by(|a, b| b.0.cmp(&a.0));
        for (dir, ns) in touched {
            if set.contains(&dir) {
                continue;
            }
            if self.set_dir(&dir, meta::DirMeta::Mtime(ns)).is_ok() && self.repaired.contains(&dir) {
                self.report.repaired_dirs.push((dir, ns));
            }
        }
    }

    /// Sets metadata on the directory at `path`. A directory root is the
    /// administrator's and may be a symlink to another disk: it is reached
    /// by its path.
    fn set_dir(&self, path: &[u8], m: meta::DirMeta<'_>) -> io::Result<()> {
        if self.dest.is_dir_root(path) {
            return meta::set_on_root(&self.dest.local(path), m);
        }
        let (dir, name) = self.dest.parent(path)?;
        let st = rustix::fs::statat(&dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
        if !dest::is_dir(&st) {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        meta::set_dir_at(dir.as_fd(), name, m)
    }

    /// Owner, mode, mtime and attributes of a file whose content is
    /// already right. Returns the attributes the replica refused.
    fn retouch(&self, e: &Entry) -> io::Result<Vec<String>> {
        let (dir, name) = self.dest.parent(&e.path)?;
        let st = rustix::fs::statat(&dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(io::Error::other("not a regular file on the replica"));
        }
        meta::set_at(dir.as_fd(), name, e, false)?;
        self.dest.set_xattrs(&e.path, &e.xattrs)
    }

    /// Records the attributes the replica refused on `path`: warnings, not
    /// failures (the rest of the entry is in place).
    fn warn(&mut self, path: &[u8], warnings: Vec<String>) {
        for w in warnings {
            tracing::warn!("{}: extended attribute {w}", String::from_utf8_lossy(path));
            self.report.warnings.push(Failure {
                path: path.to_vec(),
                reason: format!("extended attribute {w}"),
            });
        }
    }

    fn link(&mut self, e: &Entry) -> Result<(), ApplyError> {
        let tmp = temp_path(&e.path, blake3::hash(&e.target).as_bytes());
        let (dir, tmp_name) = self.dest.parent(&tmp).map_err(|err| ApplyError::on(&e.path, err))?;
        let _ = rustix::fs::unlinkat(&dir, tmp_name, rustix::fs::AtFlags::empty());
        let made = if e.kind == hamirror_wire::EntryKind::Symlink {
            rustix::fs::symlinkat(e.target.as_slice(), &dir, tmp_name)
                .map_err(io::Error::from)
                .and_then(|()| meta::set_at(dir.as_fd(), tmp_name, e, true))
        } else {
            self.dest.check(&e.target)?;
            self.dest.parent(&e.target).and_then(|(tdir, tname)| {
                Ok(rustix::fs::linkat(
                    &tdir,
                    tname,
                    &dir,
                    tmp_name,
                    rustix::fs::AtFlags::empty(),
                )?)
            })
        };
        made.and_then(|()| self.dest.replace(&tmp, &e.path).map(|_| ()))
            .map_err(|err| {
                let _ = rustix::fs::unlinkat(&dir, tmp_name, rustix::fs::AtFlags::empty());
                ApplyError::on(&e.path, err)
            })
    }

    /// Makes a FIFO or device node at a temp name beside `e.path` (never
    /// opened), gives it its metadata and attributes, and renames it into
    /// place. Returns the attributes the replica refused.
    fn make_node(&mut self, e: &Entry) -> Result<Vec<String>, NodeError> {
        use hamirror_wire::EntryKind;
        use rustix::fs::FileType;
        let failed = |err: io::Error| NodeError::Failed(ApplyError::on(&e.path, err));
        let (ty, dev) = match e.kind {
            EntryKind::Fifo => (FileType::Fifo, 0),
            EntryKind::CharDev | EntryKind::BlockDev => {
                // The wire decoder refused any other spelling.
                let (major, minor) = hamirror_wire::entry::parse_device(&e.target)
                    .ok_or_else(|| failed(io::Error::new(io::ErrorKind::InvalidData, "bad device number")))?;
                let ty = if e.kind == EntryKind::CharDev {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                (ty, rustix::fs::makedev(major, minor))
            }
            _ => return Err(failed(io::Error::other("not a FIFO or device node"))),
        };
        let mut id = vec![e.kind as u8];
        id.extend_from_slice(&e.target);
        let tmp = temp_path(&e.path, blake3::hash(&id).as_bytes());
        let (dir, tmp_name) = self.dest.parent(&tmp).map_err(failed)?;
        let _ = rustix::fs::unlinkat(&dir, tmp_name, rustix::fs::AtFlags::empty());
        match rustix::fs::mknodat(&dir, tmp_name, ty, rustix::fs::Mode::from_raw_mode(0o600), dev) {
            Ok(()) => {}
            Err(rustix::io::Errno::PERM) if e.kind.is_device() => {
                return Err(NodeError::NotPermitted(rustix::io::Errno::PERM.into()));
            }
            Err(err) => return Err(failed(err.into())),
        }
        meta::set_at(dir.as_fd(), tmp_name, e, false)
            .and_then(|()| self.dest.set_xattrs(&tmp, &e.xattrs))
            .and_then(|w| self.dest.replace(&tmp, &e.path).map(|_| w))
            .map_err(|err| {
                let _ = rustix::fs::unlinkat(&dir, tmp_name, rustix::fs::AtFlags::empty());
                failed(err)
            })
    }

    fn outcome(&mut self, e: &Entry, res: Result<(), ApplyError>) {
        match res {
            Ok(()) => {
                self.report.applied_stat.push(None);
                self.report.applied.push(e.clone());
                self.report.applied_count += 1;
            }
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

/// Why a FIFO or device node was not made.
enum NodeError {
    /// `mknod` of a device refused: this process lacks `CAP_MKNOD`.
    NotPermitted(io::Error),
    Failed(ApplyError),
}

/// Refuses a plan that no honest sender makes: a path outside the roots
/// or malformed, something other than a directory at a directory root or
/// a directory at a single-file root, or a path below something the same
/// offer says is not a directory (`evil` a symlink and `evil/x` a file).
fn check_plan(dest: &Dest, plan: &Plan) -> Result<(), ApplyError> {
    let not_dirs = plan
        .files
        .iter()
        .map(|f| &f.entry)
        .chain(&plan.symlinks)
        .chain(&plan.hardlinks)
        .chain(&plan.specials)
        .chain(&plan.retouch);
    check_entries(dest, plan.dirs.iter().chain(not_dirs), &plan.deletes)
}

/// [`check_plan`] for a whole offer before it is planned a window at a
/// time: a window's plan cannot see that a path in it lies below a
/// symlink of another window. Unchanged entries are checked too (an
/// honest sender's pass either way).
///
/// # Errors
/// [`ApplyError::UnsafePath`] (or a path `Dest` refuses) naming the path.
pub fn check_offer(dest: &Dest, offered: &[Entry], deletes: &[Vec<u8>]) -> Result<(), ApplyError> {
    check_entries(dest, offered.iter(), deletes)
}

fn check_entries<'a>(
    dest: &Dest,
    entries: impl Iterator<Item = &'a Entry> + Clone,
    deletes: &[Vec<u8>],
) -> Result<(), ApplyError> {
    use hamirror_wire::EntryKind;
    let refuse = |path: &[u8], why: &'static str| ApplyError::UnsafePath {
        path: String::from_utf8_lossy(path).into_owned(),
        why,
    };
    let is_dir = |e: &&Entry| e.kind == EntryKind::Dir;
    let not_dirs: HashSet<&[u8]> = entries
        .clone()
        .filter(|e| !is_dir(e))
        .map(|e| e.path.as_slice())
        .collect();
    for d in entries.clone().filter(is_dir) {
        dest.check(&d.path)?;
        if dest.is_root(&d.path) && !dest.is_dir_root(&d.path) {
            return Err(refuse(&d.path, "a directory where the set has a single file"));
        }
    }
    for p in &not_dirs {
        dest.check(p)?;
        if dest.is_dir_root(p) {
            return Err(refuse(p, "a set's root directory may only be a directory"));
        }
    }
    let hardlinks = entries.clone().filter(|e| e.kind == EntryKind::HardLink);
    for e in hardlinks.clone() {
        dest.check(&e.target)?;
    }
    for d in deletes {
        dest.check(d)?;
    }
    let paths = entries
        .clone()
        .filter(is_dir)
        .map(|d| d.path.as_slice())
        .chain(not_dirs.iter().copied())
        .chain(hardlinks.map(|e| e.target.as_slice()));
    for p in paths {
        let mut dir = dest::split(p).0;
        while !dir.is_empty() && dest.holds_dir(dir) {
            if not_dirs.contains(dir) {
                return Err(refuse(p, "below a path the same offer says is not a directory"));
            }
            dir = dest::split(dir).0;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
