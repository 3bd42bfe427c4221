//! What one offer may cost the receiver: memory while it is read and
//! planned, and disk space for the files it builds. A hostile or broken
//! sender with a valid key must not make the receiver allocate without
//! bound or fill a filesystem half-way; both are refused up front, with a
//! reason the sender shows, and nothing on the replica changes.
//!
//! [`OfferBudget`] is pure arithmetic (its memory figure is read once by
//! the caller); [`check_space`] asks the kernel (`statvfs`) how much room
//! each filesystem under the set's roots has. Depends on config (the set's
//! roots) and the wire types; nothing here writes.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use hamirror_wire::{Entry, ErrorCode, FileHead};

use super::SyncError;
use crate::config::MirrorSet;

/// What the receiver holds per offered entry while it plans, besides the
/// path: the entry itself, its share of the replica view, the plan, the
/// hash maps and the applier. Measured: 1,626 bytes of peak RSS per entry
/// of 100,000 one-chunk files with 35-byte paths, up to the applier's
/// start (`tests/hostile.rs`, `measure_…`, debug build) — this, the path
/// and one [`CHUNK_REF_COST`] make 1,699.
pub const ENTRY_COST: u64 = 1536;
/// Per chunk reference: the reference, its place in the set of wanted
/// hashes and in the located-chunk map.
pub const CHUNK_REF_COST: u64 = 128;
/// Overrides the memory budget (bytes, or `512M`, `2G`): for a receiver
/// that must stay small, and for tests.
pub const BUDGET_ENV: &str = "HAMIRROR_OFFER_MEMORY";
/// Never less than this, whatever the machine says.
const MIN_BUDGET: u64 = 64 << 20;

/// How much memory one offer may make this node hold. By default half of
/// the memory the process may use (physical memory, or the cgroup's limit
/// when lower): 2.8 million entries or 32 Mi chunk references on an 8 GiB
/// node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfferBudget {
    pub bytes: u64,
    /// Where the figure came from, for the refusal's reason.
    pub source: &'static str,
}

impl OfferBudget {
    /// The budget of this process: [`BUDGET_ENV`], else half of its memory.
    pub fn of_process() -> OfferBudget {
        if let Some(v) = std::env::var_os(BUDGET_ENV)
            && let Some(bytes) = v.to_str().and_then(|s| crate::config::values::parse_size(s).ok())
        {
            return OfferBudget {
                bytes: bytes.max(1),
                source: "set by HAMIRROR_OFFER_MEMORY",
            };
        }
        match memory_limit() {
            Some(m) => OfferBudget {
                bytes: (m / 2).max(MIN_BUDGET),
                source: "half of this node's memory",
            },
            None => OfferBudget {
                bytes: 4 << 30,
                source: "the default, as this node's memory is unknown",
            },
        }
    }

    /// The largest number of entries (with short paths) an offer may hold.
    pub fn max_entries(&self) -> u64 {
        self.bytes / ENTRY_COST
    }

    /// The largest number of chunk references an offer may hold.
    pub fn max_chunk_refs(&self) -> u64 {
        self.bytes / CHUNK_REF_COST
    }
}

/// Physical memory, or the cgroup v2 limit of this process when lower.
fn memory_limit() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let total = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())?
        * 1024;
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|c| c.lines().find_map(|l| l.strip_prefix("0::").map(str::to_string)))
        .and_then(|p| std::fs::read_to_string(format!("/sys/fs/cgroup{}/memory.max", p.trim_end())).ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    Some(cgroup.map_or(total, |c| c.min(total)))
}

/// Counts what an offer made the receiver hold so far and refuses the
/// message that would pass the budget — before its chunk list arrives,
/// when a `FileHead` announces it.
#[derive(Debug)]
pub struct OfferTally {
    budget: OfferBudget,
    entries: u64,
    chunk_refs: u64,
    cost: u64,
}

impl OfferTally {
    pub fn new(budget: OfferBudget) -> OfferTally {
        OfferTally {
            budget,
            entries: 0,
            chunk_refs: 0,
            cost: 0,
        }
    }

    /// A batch of entries.
    pub fn entries(&mut self, batch: &[Entry]) -> Result<(), SyncError> {
        for e in batch {
            self.add(
                1,
                e.chunks.len() as u64,
                (e.path.len() + e.target.len() + xattr_bytes(&e.xattrs)) as u64,
            );
        }
        self.check()
    }

    /// A split file's head, counted with all the references it announces.
    pub fn head(&mut self, h: &FileHead) -> Result<(), SyncError> {
        self.add(1, h.chunks, (h.path.len() + xattr_bytes(&h.xattrs)) as u64);
        self.check()
    }

    /// A batch of deleted paths.
    pub fn deletes(&mut self, paths: &[Vec<u8>]) -> Result<(), SyncError> {
        for p in paths {
            self.add(1, 0, p.len() as u64);
        }
        self.check()
    }

    fn add(&mut self, entries: u64, chunk_refs: u64, bytes: u64) {
        self.entries += entries;
        self.chunk_refs = self.chunk_refs.saturating_add(chunk_refs);
        self.cost = self
            .cost
            .saturating_add(entries * ENTRY_COST)
            .saturating_add(chunk_refs.saturating_mul(CHUNK_REF_COST))
            .saturating_add(bytes);
    }

    fn check(&self) -> Result<(), SyncError> {
        if self.cost <= self.budget.bytes {
            return Ok(());
        }
        Err(SyncError::local(
            ErrorCode::TooLarge,
            format!(
                "the offer is too large for this node: {} entries and {} chunk references so far would need \
                 about {} of memory, over its limit of {} per offer ({}; at most ~{} entries or ~{} chunk \
                 references); nothing was changed — split the set into smaller sets or raise the limit",
                self.entries,
                self.chunk_refs,
                approx(self.cost),
                approx(self.budget.bytes),
                self.budget.source,
                self.budget.max_entries(),
                self.budget.max_chunk_refs(),
            ),
        ))
    }
}

/// A size for a message: `1.5 GiB`, `300 MiB`, `12 KiB`, `100 B`.
/// What an entry's extended attributes cost held in memory: their bytes
/// and a vector header for each name and value.
fn xattr_bytes(x: &[hamirror_wire::Xattr]) -> usize {
    x.iter().map(|a| a.name.len() + a.value.len() + 48).sum()
}

pub fn approx(v: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if v >= 1 << shift {
            let x = v as f64 / (1u64 << shift) as f64;
            return if x < 10.0 {
                format!("{x:.1} {unit}")
            } else {
                format!("{x:.0} {unit}")
            };
        }
    }
    format!("{v} B")
}

/// One filesystem under the set's roots: what the offer builds on it and
/// how much room it has.
#[derive(Debug)]
struct Fs {
    /// The first existing directory found for it (for the message).
    at: PathBuf,
    free: u64,
    need: u64,
    files: u64,
}

/// Refuses the offer when the files it builds (`(set path, size)`) do not
/// fit the free space of the filesystems they land on. Each new version is
/// built in a temporary file beside the old one before anything is renamed,
/// so a file needs its whole size. Temp files of an interrupted run
/// (`resumed`, local paths) are counted as free: they are reused or
/// removed. Only the set's roots are looked at (one `statvfs` each): a
/// filesystem mounted deeper inside a root is counted as the root's.
pub fn check_space<'a>(
    root: &Path,
    set: &MirrorSet,
    files: impl Iterator<Item = (&'a [u8], u64)>,
    resumed: &[PathBuf],
) -> Result<(), SyncError> {
    // Longest root first, so a file goes to the deepest root holding it.
    let mut roots: Vec<(Vec<u8>, u64)> = Vec::new();
    let mut by_dev: HashMap<u64, Fs> = HashMap::new();
    for r in &set.roots {
        let rel = r.path.as_os_str().as_bytes();
        let rel = rel.strip_prefix(b"/").unwrap_or(rel).to_vec();
        let local = root.join(std::ffi::OsStr::from_bytes(&rel));
        let Some((dev, at, free)) = room(&local) else {
            continue;
        };
        by_dev.entry(dev).or_insert(Fs {
            at,
            free,
            need: 0,
            files: 0,
        });
        roots.push((rel, dev));
    }
    roots.sort_by_key(|(rel, _)| std::cmp::Reverse(rel.len()));
    for (path, size) in files {
        let under = roots
            .iter()
            .find(|(rel, _)| path == rel.as_slice() || (path.starts_with(rel) && path.get(rel.len()) == Some(&b'/')));
        if let Some(fs) = under.and_then(|(_, dev)| by_dev.get_mut(dev)) {
            fs.need = fs.need.saturating_add(size);
            fs.files += 1;
        }
    }
    for t in resumed {
        if let Ok(m) = std::fs::symlink_metadata(t)
            && let Some(fs) = by_dev.get_mut(&m.dev())
        {
            fs.free = fs.free.saturating_add(m.len());
        }
    }
    let mut short: Vec<&Fs> = by_dev.values().filter(|f| f.need > f.free).collect();
    short.sort_by(|a, b| a.at.cmp(&b.at));
    let Some(fs) = short.first() else {
        return Ok(());
    };
    Err(SyncError::local(
        ErrorCode::DiskFull,
        format!(
            "disk full: the offer builds {} files of {} ({} bytes) on the filesystem of {}, which has only {} \
             ({} bytes) free; nothing was written, the old replica is intact — free space and run again",
            fs.files,
            approx(fs.need),
            fs.need,
            fs.at.display(),
            approx(fs.free),
            fs.free
        ),
    ))
}

/// The device, the first existing directory at or above `path`, and the
/// bytes an unprivileged user may still write on its filesystem (the
/// reserve of root is left alone).
fn room(path: &Path) -> Option<(u64, PathBuf, u64)> {
    let mut at = path;
    let meta = loop {
        match std::fs::metadata(at) {
            Ok(m) => break m,
            Err(_) => at = at.parent()?,
        }
    };
    let c = std::ffi::CString::new(at.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid C string and `st` a buffer of the right type.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs succeeded and filled it.
    let st = unsafe { st.assume_init() };
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    Some((meta.dev(), at.to_path_buf(), free))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hamirror_wire::{ChunkRef, EntryKind};

    fn entry(path: &str, chunks: usize) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind: EntryKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            size: chunks as u64,
            file_hash: [0; 32],
            chunks: vec![ChunkRef { hash: [0; 32], len: 1 }; chunks],
            target: vec![],
            xattrs: vec![],
        }
    }

    fn budget(bytes: u64) -> OfferBudget {
        OfferBudget { bytes, source: "test" }
    }

    #[test]
    fn an_offer_within_the_budget_passes_and_one_entry_more_is_refused() {
        let mut t = OfferTally::new(budget(10 * (ENTRY_COST + 1 + 3 * CHUNK_REF_COST)));
        let batch: Vec<Entry> = (0..10).map(|i| entry(&i.to_string(), 3)).collect();
        t.entries(&batch).unwrap();
        let e = t.entries(&[entry("x", 0)]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::TooLarge);
        let msg = e.to_string();
        assert!(msg.contains("11 entries and 30 chunk references"), "{msg}");
        assert!(msg.contains("nothing was changed"), "{msg}");
    }

    #[test]
    fn extended_attributes_count_against_the_budget() {
        let mut t = OfferTally::new(budget(ENTRY_COST + 1 + 1000));
        let mut e = entry("a", 0);
        t.entries(std::slice::from_ref(&e)).unwrap();
        e.xattrs = vec![hamirror_wire::Xattr {
            name: b"user.big".to_vec(),
            value: vec![0; 2000],
        }];
        let mut t = OfferTally::new(budget(ENTRY_COST + 1 + 1000));
        assert!(t.entries(&[e]).is_err());
    }

    #[test]
    fn a_file_head_is_judged_by_the_references_it_announces() {
        let mut t = OfferTally::new(budget(1 << 20));
        let head = FileHead {
            path: b"big".to_vec(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            size: 1 << 24,
            file_hash: [0; 32],
            chunks: 1 << 24,
            xattrs: vec![],
        };
        assert_eq!(t.head(&head).unwrap_err().code(), ErrorCode::TooLarge);
        // Deleted paths count too.
        let mut t = OfferTally::new(budget(4 * ENTRY_COST));
        assert!(t.deletes(&vec![b"a".to_vec(); 5]).is_err());
    }

    #[test]
    fn the_default_budget_follows_memory_and_allows_millions_of_files() {
        let b = OfferBudget {
            bytes: 4 << 30,
            source: "test",
        };
        assert_eq!(b.max_entries(), 2_796_202);
        assert_eq!(b.max_chunk_refs(), 32 << 20);
        assert!(OfferBudget::of_process().bytes >= MIN_BUDGET);
    }

    #[test]
    fn approximate_sizes_read_well() {
        assert_eq!(approx(100), "100 B");
        assert_eq!(approx(1536), "1.5 KiB");
        assert_eq!(approx(300 << 20), "300 MiB");
    }

    #[test]
    fn space_is_counted_per_root_and_refused_only_when_short() {
        let dir = tempfile::tempdir().unwrap();
        let set = MirrorSet::for_tests(
            "Fx",
            dir.path().join("Fx"),
            &[("/srv/a", true), ("/srv/b", true)],
            crate::config::ChunkParams::default(),
        );
        let (_, _, free) = room(dir.path()).unwrap();
        let small = [(&b"srv/a/f"[..], 1u64), (&b"srv/b/g"[..], 1)];
        check_space(dir.path(), &set, small.into_iter(), &[]).unwrap();
        let big = [(&b"srv/a/f"[..], free / 2 + 4096), (&b"srv/b/g"[..], free / 2 + 4096)];
        let e = check_space(dir.path(), &set, big.into_iter(), &[]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::DiskFull);
        assert!(e.to_string().contains("builds 2 files"), "{e}");
        assert!(e.to_string().contains("the old replica is intact"), "{e}");
        // Paths outside every root are not this check's business.
        let outside = [(&b"srv/c/h"[..], u64::MAX)];
        check_space(dir.path(), &set, outside.into_iter(), &[]).unwrap();
    }
}
