//! Reading changed files: each is opened without following symlinks,
//! chunked and hashed by a [`Chunker`], and its `fstat` compared before and
//! after; a file that changed while it was read is read again, a few times,
//! and then reported as an error — a torn hash is never returned. Its
//! extended attributes (the set's namespaces) are read on the same
//! descriptor between the two `fstat`s: a change to them changes the
//! ctime, so it too is caught by the comparison.
//!
//! Files are spread over a rayon pool, largest first, each worker pulling
//! the next file from a shared counter: the big files start early and the
//! small ones fill the gaps, so no core idles at the end on one large file
//! (longest-processing-time-first scheduling). Each worker owns one chunker
//! and so one read buffer: memory does not grow with file size.

use std::fs::{File, Metadata};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hamirror_wire::{Entry, EntryKind};

use super::report::Problem;
use super::walk::Stat;
use super::{ScanError, ScanObserver, base_entry, now_ns};
use crate::chunk::Chunker;
use crate::config::{ChunkParams, XattrNamespaces};
use crate::index::Fingerprint;

/// How often a file that keeps changing under the reader is tried.
pub const READ_ATTEMPTS: u32 = 3;

/// A file to read.
#[derive(Debug)]
pub(super) struct Job {
    pub path: Vec<u8>,
    pub local: PathBuf,
    /// Its size when walked: only used to order the work.
    pub size: u64,
}

/// A file read to the end without changing underneath.
#[derive(Debug)]
pub(super) struct Hashed {
    pub entry: Entry,
    /// `None` when its ctime is too recent to trust later (see `racy_ns`).
    pub stat: Option<Fingerprint>,
    pub chunks: u64,
}

/// Reads every job on the pool's threads. Results come back in no
/// particular order.
pub(super) fn read_all(
    mut jobs: Vec<Job>,
    params: ChunkParams,
    xattrs: XattrNamespaces,
    pool: &rayon::ThreadPool,
    racy_ns: i64,
    observer: &dyn ScanObserver,
) -> Result<Vec<Result<Hashed, Problem>>, ScanError> {
    // Validates the parameters once, before any thread starts.
    Chunker::new(params)?;
    if jobs.is_empty() {
        return Ok(vec![]);
    }
    jobs.sort_by_key(|j| std::cmp::Reverse(j.size));
    let threads = pool.current_num_threads().min(jobs.len());
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(jobs.len()));
    pool.scope(|s| {
        for _ in 0..threads {
            s.spawn(|_| {
                let Ok(mut chunker) = Chunker::new(params) else { return };
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let r = read_one(job, &mut chunker, &xattrs, racy_ns, observer).map_err(|reason| Problem {
                        path: job.path.clone(),
                        reason,
                    });
                    observer.file_done();
                    mine.push(r);
                }
                results.lock().unwrap_or_else(|p| p.into_inner()).extend(mine);
            });
        }
    });
    Ok(results.into_inner().unwrap_or_else(|p| p.into_inner()))
}

fn open(local: &std::path::Path) -> io::Result<File> {
    // O_NOFOLLOW: a file replaced by a symlink since the walk is not followed.
    // O_NONBLOCK: a file replaced by a FIFO does not block the open (the
    // fstat that follows refuses it); no effect on regular files.
    // O_NOATIME: reading for a mirror is not an access (allowed for the
    // owner and root; anyone else falls back to a plain open).
    let base = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(base | libc::O_NOATIME)
        .open(local)
    {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            std::fs::OpenOptions::new().read(true).custom_flags(base).open(local)
        }
        r => r,
    }
}

fn describe(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT) => "vanished while being scanned".into(),
        Some(libc::ELOOP) => "replaced by a symlink while being scanned".into(),
        _ => e.to_string(),
    }
}

/// Reads one file, retrying while it changes underneath.
fn read_one(
    job: &Job,
    chunker: &mut Chunker,
    xattrs: &XattrNamespaces,
    racy_ns: i64,
    observer: &dyn ScanObserver,
) -> Result<Hashed, String> {
    for attempt in 1..=READ_ATTEMPTS {
        if attempt > 1 {
            // A writer is busy with this file; give it a moment.
            std::thread::sleep(Duration::from_millis(20 * u64::from(attempt)));
        }
        // Taken before the read: see `is_racy`.
        let started = now_ns();
        let file = open(&job.local).map_err(|e| describe(&e))?;
        let before = file.metadata().map_err(|e| describe(&e))?;
        if !before.is_file() {
            return Err("no longer a regular file".into());
        }
        advise_sequential(&file);
        let chunked = chunker
            .chunk(&file, |n| observer.progress(n))
            .map_err(|e| format!("read error: {e}"))?;
        let attrs = crate::xattr::read(crate::xattr::On::Fd(file.as_fd()), xattrs)?;
        let after = file.metadata().map_err(|e| describe(&e))?;
        let (fp0, fp1) = (Fingerprint::of(&before), Fingerprint::of(&after));
        if fp0 != fp1 || chunked.size != after.size() {
            continue;
        }
        let mut entry = file_entry(&job.path, &after);
        entry.file_hash = chunked.file_hash();
        entry.size = chunked.size;
        let chunks = chunked.chunks.len() as u64;
        entry.chunks = chunked.chunks;
        entry.xattrs = attrs;
        let stat = (!is_racy(&fp1, started, racy_ns)).then_some(fp1);
        return Ok(Hashed { entry, stat, chunks });
    }
    Err(format!(
        "changed while being read ({READ_ATTEMPTS} attempts); not recorded, will be read again next scan"
    ))
}

fn file_entry(path: &[u8], meta: &Metadata) -> Entry {
    base_entry(path.to_vec(), EntryKind::File, &Stat::of(meta))
}

/// A fingerprint is trusted only when the file's last change (ctime) lies
/// at least `racy_ns` before the moment we started looking at it. Otherwise
/// a write landing after our read but within the same timestamp tick would
/// leave ctime and mtime unchanged and the quick check would miss it
/// forever (the "racy clean" problem). An untrusted file is recorded with
/// an unknown fingerprint and simply read again by the next scan.
pub(super) fn is_racy(fp: &Fingerprint, started_ns: i64, racy_ns: i64) -> bool {
    started_ns.saturating_sub(fp.ctime_ns) < racy_ns
}

/// Tells the kernel the whole file will be read once, front to back
/// (larger readahead). Advisory: failure changes nothing.
fn advise_sequential(file: &File) {
    // SAFETY: a valid open descriptor; posix_fadvise only reads its arguments.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
}
