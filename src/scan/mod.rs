//! Scanning one mirror set: walk its roots on this node, compare each path
//! with the index, chunk and hash only the files whose fingerprint changed,
//! and commit the differences as one new generation.
//!
//! [`scan_set`] is the whole stage: `walk` (one `lstat` per path) merged,
//! directory by directory, with that directory's index rows for the quick
//! check (`stream.rs`: memory bounded by the directories being merged and
//! what changed, not by the tree) → `read` (changed files, in parallel) →
//! [`Index::commit`]. A no-change scan reads no file and writes nothing. Per-path problems never abort: they
//! are collected in the [`ScanReport`] and the path keeps its previous index
//! state. Only the index itself (or invalid parameters) can fail a scan.
//!
//! A [`Scanner`] keeps its thread pool across scans. Besides the full scan
//! it runs targeted scans ([`Scanner::scan_paths`], `targeted.rs`): only
//! given paths and subtrees are examined, with the same quick check,
//! reader and commit; this is what `watch` uses for each batch of events.
//!
//! FIFOs and device nodes are entries without data: their metadata (and a
//! device's number) comes from the walk's `lstat`, their attributes through
//! an `O_PATH` descriptor; they are never opened.
//!
//! Hard links: regular files seen with the same (device, inode) more than
//! once within the set are one file; the first name in byte order is a
//! `File` entry, each further name a `HardLink` whose target is that name.
//!
//! Upstream of this module: `config`, `chunk`, `index`. It knows nothing of
//! peers or the network.

mod read;
mod report;
mod stream;
mod targeted;
mod walk;

use std::collections::{BTreeSet, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use hamirror_wire::{Entry, EntryKind};
use thiserror::Error;

use crate::chunk::ChunkError;
use crate::config::{MirrorSet, XattrNamespaces};
use crate::index::{Fingerprint, Index, IndexError, Upsert};

pub use read::READ_ATTEMPTS;
pub use report::{Problem, ScanReport, show_path};
pub use targeted::{PathScan, PathScanOptions, Scope, Target};
use walk::{Kind, Stat};

/// Default for [`ScanOptions::racy_window`]: comfortably more than the
/// timestamp granularity of local Linux filesystems (one clock tick, at
/// most 10 ms). Filesystems with coarser timestamps (FAT, some network
/// filesystems) need a larger window.
pub const RACY_WINDOW: Duration = Duration::from_millis(100);

/// Why a scan failed as a whole. Per-path problems are not errors: they are
/// in [`ScanReport::errors`].
#[derive(Debug, Error)]
pub enum ScanError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error("cannot start the scan threads: {0}")]
    Threads(String),
}

impl ScanError {
    /// Whether running the scan again later can help.
    pub fn retryable(&self) -> bool {
        match self {
            ScanError::Index(e) => e.retryable(),
            ScanError::Chunk(_) => false,
            ScanError::Threads(_) => true,
        }
    }
}

/// Suffix of the temporary files a receiver builds new versions in.
pub const TEMP_SUFFIX: &[u8] = b".hamirror-tmp";

/// Whether a file name is one of hamirror's temporary files, exactly as a
/// receiver names them (`.NAME.` + 16 hex digits + [`TEMP_SUFFIX`]): they
/// are not part of any set, so a scan skips them (after a failover the
/// former receiver scans the same tree as sender). Any other name ending
/// in the suffix is an ordinary file and is mirrored.
pub fn is_temp_name(name: &[u8]) -> bool {
    let Some(stem) = name.strip_suffix(TEMP_SUFFIX) else {
        return false;
    };
    let Some((rest, tag)) = stem.split_last_chunk::<17>() else {
        return false;
    };
    rest.len() >= 2
        && rest[0] == b'.'
        && tag[0] == b'.'
        && tag[1..].iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Default for [`ScanOptions::walk_threads`]. Listing a directory and
/// statting its entries mostly waits for the disk when the cache is cold;
/// a virtio or NVMe disk serves many requests at once, so the walk keeps
/// this many in flight whatever the number of cores (see `walk.rs`).
pub const WALK_THREADS: usize = 16;

/// How to scan.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Hashing threads; 0 = one per CPU.
    pub threads: usize,
    /// Threads listing directories and statting entries (I/O, not CPU);
    /// 0 = [`WALK_THREADS`].
    pub walk_threads: usize,
    /// Files whose last change is this recent when we start reading them
    /// are stored with an unknown fingerprint and read again next time.
    pub racy_window: Duration,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            threads: 0,
            walk_threads: 0,
            racy_window: RACY_WINDOW,
        }
    }
}

/// Progress notifications (a progress bar, a daemon's metrics). Called
/// from the hashing threads; the default methods do nothing.
pub trait ScanObserver: Sync {
    /// The walk is done; `files` files of `bytes` bytes will be read.
    fn reading(&self, _files: u64, _bytes: u64) {}
    /// `bytes` more bytes were chunked and hashed.
    fn progress(&self, _bytes: u64) {}
    /// One file was finished (read, or failed).
    fn file_done(&self) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;
impl ScanObserver for Quiet {}

/// Scans `set` as it lies under this node's `node_root` and commits the
/// changes to `index`. Returns the report, which holds the committed
/// generation. A one-off [`Scanner`]; callers that scan repeatedly keep one.
///
/// # Errors
/// Only whole-scan failures: the index ([`ScanError::Index`]), invalid
/// chunk parameters, or no threads. Unreadable paths are reported in
/// [`ScanReport::errors`] instead.
pub fn scan_set(
    index: &Index,
    set: &MirrorSet,
    node_root: &Path,
    opts: &ScanOptions,
    observer: &dyn ScanObserver,
) -> Result<ScanReport, ScanError> {
    Ok(Scanner::new(opts)?.scan_set(index, set, node_root, observer)?.report)
}

/// A scan's report, and the paths it committed with an unknown fingerprint
/// because they changed within the racy window: reading them again once
/// the window has passed records their fingerprint (`watch` does; a
/// one-off scan leaves them to the next scan).
#[derive(Debug, Clone, Default)]
pub struct Scanned {
    pub report: ScanReport,
    pub unsettled: Vec<Vec<u8>>,
}

/// A scanner: the options and the thread pools, kept across scans
/// (starting a pool costs a thread spawn per thread, which a `watch` batch
/// of one file should not pay). Two pools: `pool` hashes files, one thread
/// per core, as that is CPU work; `walk` lists directories, with more
/// threads than cores, as that is waiting for the disk when the cache is
/// cold (two threads kept at most two reads in flight).
pub struct Scanner {
    pool: rayon::ThreadPool,
    walk: rayon::ThreadPool,
    opts: ScanOptions,
}

impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Scanner({} hashing threads, {} walking, {:?})",
            self.pool.current_num_threads(),
            self.walk.current_num_threads(),
            self.opts
        )
    }
}

impl Scanner {
    /// Starts the thread pools.
    ///
    /// # Errors
    /// [`ScanError::Threads`] when the threads cannot be started.
    pub fn new(opts: &ScanOptions) -> Result<Scanner, ScanError> {
        let threads = match opts.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let walk_threads = match opts.walk_threads {
            0 => WALK_THREADS,
            n => n,
        };
        let pool = |n: usize, name: &'static str| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .thread_name(move |i| format!("hamirror-{name}-{i}"))
                .build()
                .map_err(|e| ScanError::Threads(e.to_string()))
        };
        Ok(Scanner {
            pool: pool(threads, "scan")?,
            walk: pool(walk_threads, "walk")?,
            opts: opts.clone(),
        })
    }

    /// The number of hashing and of walking threads.
    pub fn threads(&self) -> (usize, usize) {
        (self.pool.current_num_threads(), self.walk.current_num_threads())
    }

    fn racy_ns(&self) -> i64 {
        i64::try_from(self.opts.racy_window.as_nanos()).unwrap_or(i64::MAX)
    }

    /// The whole stage: walk every root, quick check, read, commit (see the
    /// module documentation).
    ///
    /// # Errors
    /// As [`scan_set`].
    pub fn scan_set(
        &self,
        index: &Index,
        set: &MirrorSet,
        node_root: &Path,
        observer: &dyn ScanObserver,
    ) -> Result<Scanned, ScanError> {
        let start = Instant::now();
        let previous_generation = index.generation(&set.name)?;
        // Entries read with other attribute namespaces (or before entries
        // had attributes) may lack some: every file is read once again.
        let namespaces = xattr_stamp(set);
        let reread = index.xattr_namespaces(&set.name)?.as_deref() != Some(namespaces.as_str());
        let walk_started = now_ns();
        let view = index.view(&set.name)?;
        let merged = self
            .walk
            .install(|| stream::merge(&view, set, node_root, reread, &self.walk))?;
        drop(view);
        tracing::debug!(set = %set.name, walk_done = ?start.elapsed(), "scan walk");
        let mut report = merged.report;
        report.set = set.name.clone();
        report.previous_generation = previous_generation;
        let upserts = self.gather(set, node_root, merged.found, walk_started, &mut report, observer)?;
        let scanned = self.commit(index, set, upserts, merged.deletes, merged.forget, report, start)?;
        if reread {
            index.set_xattr_namespaces(&set.name, &namespaces)?;
        }
        Ok(scanned)
    }

    /// The full scan as it was before the merging walk (`stream.rs`): every
    /// stored fingerprint in one map, compared with the whole walk. The
    /// oracle the merging walk is tested against.
    #[cfg(test)]
    pub(crate) fn scan_set_whole(
        &self,
        index: &Index,
        set: &MirrorSet,
        node_root: &Path,
    ) -> Result<Scanned, ScanError> {
        let start = Instant::now();
        let report = ScanReport {
            set: set.name.clone(),
            previous_generation: index.generation(&set.name)?,
            ..ScanReport::default()
        };
        let walk_started = now_ns();
        let known = index.fingerprints(&set.name)?;
        let walked = self
            .walk
            .install(|| walk::walk(&set.roots, &set.excludes, node_root, &self.walk));
        self.finish(
            index,
            set,
            node_root,
            walked,
            known,
            walk_started,
            report,
            &Quiet,
            start,
        )
    }

    /// The common back half of a full and a targeted scan: quick check of
    /// what the walk found against `known` (the stored fingerprints of
    /// everything the walk covered), read what changed, and commit the
    /// changes with the deletion of whatever `known` holds that the walk
    /// did not find.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        index: &Index,
        set: &MirrorSet,
        node_root: &Path,
        walked: walk::Walked,
        mut known: HashMap<Vec<u8>, Option<Fingerprint>>,
        walk_started: i64,
        mut report: ScanReport,
        observer: &dyn ScanObserver,
        start: Instant,
    ) -> Result<Scanned, ScanError> {
        report.skipped.extend(walked.skipped);
        report.errors.extend(walked.errors);
        report.missing_roots.extend(walked.missing_roots);
        let keep: BTreeSet<Vec<u8>> = walked.keep.into_iter().collect();
        let excluded: BTreeSet<Vec<u8>> = walked.excluded.into_iter().collect();
        let found = walked
            .found
            .into_iter()
            .map(|f| {
                let hit = known.remove(&f.path) == Some(Some(f.stat.fp));
                (f, hit)
            })
            .collect();
        let upserts = self.gather(set, node_root, found, walk_started, &mut report, observer)?;

        // What the index knows but the walk did not find is gone, unless it lies
        // at or below a path that could not be examined. What is now
        // excluded was not deleted: the index forgets it without logging a
        // deletion (a peer is never told to delete it).
        let (forget, deletes): (Vec<Vec<u8>>, Vec<Vec<u8>>) = known
            .into_keys()
            .filter(|p| !is_kept(p, &keep))
            .partition(|p| is_kept(p, &excluded));
        self.commit(index, set, upserts, deletes, forget, report, start)
    }

    /// Commits a scan's upserts, deletions and forgotten paths as one
    /// generation and completes the report.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &self,
        index: &Index,
        set: &MirrorSet,
        upserts: Vec<Upsert>,
        mut deletes: Vec<Vec<u8>>,
        mut forget: Vec<Vec<u8>>,
        mut report: ScanReport,
        start: Instant,
    ) -> Result<Scanned, ScanError> {
        let read_done = start.elapsed();
        deletes.sort_unstable();
        forget.sort_unstable();
        let outcome = index.commit_forgetting(&set.name, &upserts, &deletes, &forget)?;
        if outcome.forgotten > 0 {
            tracing::info!(set = %set.name, paths = outcome.forgotten, "excluded paths dropped from the index (not deletions)");
        }
        report.new = outcome.new;
        report.changed = outcome.changed;
        report.deleted = outcome.deleted;
        report.generation = outcome.generation;
        report.errors.sort_by(|a, b| a.path.cmp(&b.path));
        report.skipped.sort_by(|a, b| a.path.cmp(&b.path));
        report.elapsed_s = start.elapsed().as_secs_f64();
        tracing::debug!(
            set = %set.name,
            ?read_done,
            committed = ?start.elapsed(),
            "scan phases (cumulative)"
        );
        let unsettled = upserts
            .into_iter()
            .filter(|u| u.stat.is_none())
            .map(|u| u.entry.path)
            .collect();
        Ok(Scanned { report, unsettled })
    }

    /// Quick check of what the walk found against `known` (removing each
    /// found path from it), then reads what changed: the upserts to commit.
    #[allow(clippy::too_many_arguments)]
    fn gather(
        &self,
        set: &MirrorSet,
        node_root: &Path,
        found: Vec<(walk::Found, bool)>,
        walk_started: i64,
        report: &mut ScanReport,
        observer: &dyn ScanObserver,
    ) -> Result<Vec<Upsert>, ScanError> {
        let racy_ns = self.racy_ns();
        let trust = |fp| (!read::is_racy(&fp, walk_started, racy_ns)).then_some(fp);
        let Pending {
            mut upserts,
            jobs,
            links,
        } = classify(found, node_root, &set.xattrs, trust, report);
        let total: u64 = jobs.iter().map(|j| j.size).sum();
        observer.reading(jobs.len() as u64, total);
        let mut failed: BTreeSet<Vec<u8>> = BTreeSet::new();
        for r in read::read_all(jobs, set.chunk, set.xattrs, &self.pool, racy_ns, observer)? {
            match r {
                Ok(read) => {
                    report.files_read += 1;
                    report.bytes_read += read.entry.size;
                    report.chunks_hashed += read.chunks;
                    upserts.push(Upsert {
                        entry: read.entry,
                        stat: read.stat,
                    });
                }
                Err(p) => {
                    failed.insert(p.path.clone());
                    report.errors.push(p);
                }
            }
        }
        for (link, first) in links {
            if failed.contains(&first) {
                let why = format!("hard link to {}, which could not be read", show_path(&first));
                report.errors.push(problem(&link.entry.path, &why));
            } else {
                upserts.push(link);
            }
        }
        Ok(upserts)
    }

    /// Reads every file of `set` under `node_root` (no quick check, no
    /// index): the manifest `verify` compares, in path order, and the
    /// report with the paths that could not be read.
    ///
    /// # Errors
    /// Invalid chunk parameters.
    pub fn read_manifest(
        &self,
        set: &MirrorSet,
        node_root: &Path,
        observer: &dyn ScanObserver,
    ) -> Result<(Vec<Entry>, ScanReport), ScanError> {
        let start = Instant::now();
        let walk_started = now_ns();
        let walked = self
            .walk
            .install(|| walk::walk(&set.roots, &set.excludes, node_root, &self.walk));
        let mut report = ScanReport {
            set: set.name.clone(),
            ..ScanReport::default()
        };
        report.skipped.extend(walked.skipped);
        report.errors.extend(walked.errors);
        report.missing_roots.extend(walked.missing_roots);
        let found = walked.found.into_iter().map(|f| (f, false)).collect();
        let upserts = self.gather(set, node_root, found, walk_started, &mut report, observer)?;
        let mut entries: Vec<Entry> = upserts.into_iter().map(|u| u.entry).collect();
        entries.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        report.errors.sort_by(|a, b| a.path.cmp(&b.path));
        report.elapsed_s = start.elapsed().as_secs_f64();
        Ok((entries, report))
    }
}

/// What the quick check left to do.
struct Pending {
    /// Directories, symlinks, FIFOs and device nodes whose fingerprint
    /// changed (no read needed).
    upserts: Vec<Upsert>,
    /// Files to read.
    jobs: Vec<read::Job>,
    /// Further names of an inode, with their first name: emitted once the
    /// first name was read successfully.
    links: Vec<(Upsert, Vec<u8>)>,
}

/// Counts what the walk found, each path with whether its fingerprint
/// equals the stored one (a hit), and prepares what the misses need.
/// `found` holds every multiply linked file the walk found (which name of
/// an inode is its `File` entry depends on all of them). `trust` turns a
/// fingerprint into the one to store (`None` if too recent).
fn classify(
    found: Vec<(walk::Found, bool)>,
    node_root: &Path,
    xattrs: &XattrNamespaces,
    trust: impl Fn(Fingerprint) -> Option<Fingerprint>,
    report: &mut ScanReport,
) -> Pending {
    let primaries = hard_link_primaries(found.iter().map(|(f, _)| f));
    let mut p = Pending {
        upserts: vec![],
        jobs: vec![],
        links: vec![],
    };
    for (f, hit) in found {
        let fp = f.stat.fp;
        match f.kind {
            Kind::Dir => {
                report.dirs += 1;
                if !hit {
                    let mut entry = base_entry(f.path, EntryKind::Dir, &f.stat);
                    match dir_xattrs(&walk::local_path(node_root, &entry.path), xattrs) {
                        Ok(x) => {
                            entry.xattrs = x;
                            p.upserts.push(Upsert { entry, stat: trust(fp) });
                        }
                        Err(why) => report.errors.push(problem(&entry.path, &why)),
                    }
                }
            }
            Kind::Symlink => {
                report.symlinks += 1;
                if hit {
                    continue;
                }
                match std::fs::read_link(walk::local_path(node_root, &f.path)) {
                    Ok(target) if !target.as_os_str().is_empty() => {
                        let mut entry = base_entry(f.path, EntryKind::Symlink, &f.stat);
                        entry.target = target.as_os_str().as_bytes().to_vec();
                        p.upserts.push(Upsert { entry, stat: trust(fp) });
                    }
                    Ok(_) => report.errors.push(problem(&f.path, "symlink with an empty target")),
                    Err(e) => report
                        .errors
                        .push(problem(&f.path, &format!("cannot read symlink: {e}"))),
                }
            }
            Kind::Special(kind) => {
                report.specials += 1;
                if hit {
                    continue;
                }
                let mut entry = base_entry(f.path, kind, &f.stat);
                if kind.is_device() {
                    let dev = f.stat.rdev as libc::dev_t;
                    entry.target = hamirror_wire::entry::device_target(libc::major(dev), libc::minor(dev));
                }
                let local = walk::local_path(node_root, &entry.path);
                match node_xattrs(&local, xattrs, f.stat.mode & libc::S_IFMT) {
                    Ok(x) => {
                        entry.xattrs = x;
                        p.upserts.push(Upsert { entry, stat: trust(fp) });
                    }
                    Err(why) => report.errors.push(problem(&entry.path, &why)),
                }
            }
            Kind::File => match primaries.get(&(fp.dev, fp.ino)) {
                Some(first) if *first != f.path => {
                    report.hardlinks += 1;
                    if !hit {
                        let mut entry = base_entry(f.path, EntryKind::HardLink, &f.stat);
                        entry.target = first.clone();
                        p.links.push((Upsert { entry, stat: trust(fp) }, first.clone()));
                    }
                }
                _ => {
                    report.files += 1;
                    report.bytes += fp.size;
                    if hit {
                        report.files_unchanged += 1;
                    } else {
                        p.jobs.push(read::Job {
                            local: walk::local_path(node_root, &f.path),
                            path: f.path,
                            size: fp.size,
                        });
                    }
                }
            },
        }
    }
    p
}

/// The attributes of the directory at `local`, not following a symlink
/// put in its place since the walk (that change is the next scan's). A
/// directory this process may not read is reached through the
/// `/proc/self/fd` link of an `O_PATH` descriptor.
fn dir_xattrs(local: &Path, ns: &XattrNamespaces) -> Result<Vec<hamirror_wire::Xattr>, String> {
    use rustix::fs::{Mode, OFlags};
    use rustix::io::Errno;
    if ns.is_none() {
        return Ok(vec![]);
    }
    let nofollow = OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let cannot = |e: Errno| format!("cannot open directory to read its extended attributes: {e}");
    match rustix::fs::open(local, OFlags::RDONLY | OFlags::DIRECTORY | nofollow, Mode::empty()) {
        Ok(fd) => crate::xattr::read(crate::xattr::On::Fd(std::os::fd::AsFd::as_fd(&fd)), ns),
        // Gone, or no longer a directory: the next scan sees what it is now.
        Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => Ok(vec![]),
        Err(Errno::ACCESS) => node_xattrs(local, ns, libc::S_IFDIR),
        Err(e) => Err(cannot(e)),
    }
}

/// The attributes of the inode at `local` if it is still of type `ifmt`
/// (`S_IFDIR`, `S_IFIFO`…), read through the `/proc/self/fd` link of an
/// `O_PATH` descriptor: nothing is opened for reading (opening a FIFO
/// would block), no permission on it is needed, and a symlink put in its
/// place since the walk is not followed.
fn node_xattrs(local: &Path, ns: &XattrNamespaces, ifmt: u32) -> Result<Vec<hamirror_wire::Xattr>, String> {
    use rustix::fs::{Mode, OFlags};
    use rustix::io::Errno;
    if ns.is_none() {
        return Ok(vec![]);
    }
    let cannot = |e: Errno| format!("cannot reach it to read its extended attributes: {e}");
    let fd = match rustix::fs::open(local, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        // Gone since the walk: the next scan sees that.
        Err(Errno::NOENT) => return Ok(vec![]),
        Err(e) => return Err(cannot(e)),
    };
    let st = rustix::fs::fstat(&fd).map_err(cannot)?;
    if st.st_mode & libc::S_IFMT != ifmt {
        return Ok(vec![]);
    }
    let link = crate::xattr::proc_path(std::os::fd::AsFd::as_fd(&fd));
    crate::xattr::read(crate::xattr::On::Path(&link), ns)
}

/// What [`Index::xattr_namespaces`] records for `set`: its namespaces,
/// and whether `trusted.*` could be seen (root).
fn xattr_stamp(set: &MirrorSet) -> String {
    let root = crate::xattr::is_root();
    if set.xattrs.trusted && !root {
        format!("{} (not root)", set.xattrs)
    } else {
        set.xattrs.to_string()
    }
}

/// For each multiply linked regular file: its first name in byte order
/// among the names the walk found (which come in no particular order).
fn hard_link_primaries<'f>(found: impl Iterator<Item = &'f walk::Found>) -> HashMap<(u64, u64), Vec<u8>> {
    let mut first: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    for f in found.filter(|f| f.kind == Kind::File && f.stat.nlink > 1) {
        first
            .entry((f.stat.fp.dev, f.stat.fp.ino))
            .and_modify(|p| {
                if f.path < *p {
                    p.clone_from(&f.path);
                }
            })
            .or_insert_with(|| f.path.clone());
    }
    first
}

/// Whether `path` is, or lies below, one of `keep`.
fn is_kept(path: &[u8], keep: &BTreeSet<Vec<u8>>) -> bool {
    if keep.is_empty() {
        return false;
    }
    keep.contains(path)
        || path
            .iter()
            .enumerate()
            .any(|(i, b)| *b == b'/' && keep.contains(&path[..i]))
}

fn problem(path: &[u8], reason: &str) -> Problem {
    Problem {
        path: path.to_vec(),
        reason: reason.to_string(),
    }
}

/// An entry with the metadata every kind carries; size, hash, chunks and
/// target are filled in by the caller where they apply.
pub(crate) fn base_entry(path: Vec<u8>, kind: EntryKind, stat: &Stat) -> Entry {
    Entry {
        path,
        kind,
        mode: stat.mode & hamirror_wire::entry::MODE_MASK,
        uid: stat.uid,
        gid: stat.gid,
        mtime_ns: stat.mtime_ns,
        size: 0,
        file_hash: [0; 32],
        chunks: vec![],
        target: vec![],
        xattrs: vec![],
    }
}

/// Wall-clock time in nanoseconds since the epoch, the clock file
/// timestamps use.
pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod stream_tests;
#[cfg(test)]
pub(crate) mod tests;
