//! Walking a set's roots on the local disk: one `lstat` per path, no reads.
//! Produces what exists (with its set path and stat fields), what was
//! skipped and why, what could not be examined, and which roots are
//! missing. Knows nothing of the index.
//!
//! Rules:
//! * symlinks are never followed, not even a root that is one;
//! * the walk stays on each root's filesystem: a directory on another
//!   filesystem (a mount point) is recorded as an empty directory and its
//!   contents are skipped and reported, as `rsync -x` does. Mounted
//!   filesystems under a set (tmpfs, network or removable mounts) are rarely
//!   part of the data, and crossing them silently could mirror a huge or
//!   virtual tree;
//! * FIFOs and character and block device nodes are entries like any other
//!   (never opened: opening a FIFO blocks); sockets are skipped and
//!   reported — a socket file means nothing without the process serving
//!   it, and that process runs on the replica only after a takeover, when
//!   it makes its own;
//! * what the set's exclude rules exclude is not recorded, and an excluded
//!   directory is not entered: its set path goes to [`Walked::excluded`],
//!   so the caller can tell an excluded path from a deleted one;
//! * a path that cannot be examined is an error for that path; the caller
//!   keeps its previous state (and, for a directory, everything below it).
//!
//! Why not the `walkdir` crate: it `lstat`s every entry by its full path
//! (the kernel resolves every component again) and walks on one thread.
//! Here directories are listed in parallel on the scanner's walk pool
//! (more threads than cores: with a cold cache each thread mostly waits for
//! a `getdents` or `statx`, and the disk serves many at once) and
//! each entry is stat'ed relative to its open directory (`DirEntry::metadata`
//! is `statx(dirfd, name, AT_SYMLINK_NOFOLLOW)`). With the stored
//! fingerprints read while the walk runs, this took a no-change scan of
//! 50,000 files from 0.20 s (walkdir) to 0.09 s on two cores.

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hamirror_wire::entry::check_path;

use super::report::Problem;
use crate::config::{Excludes, SetRoot};
use crate::index::Fingerprint;

/// What kind of path the walk found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    File,
    Dir,
    Symlink,
    /// A FIFO or a device node (the entry kind it becomes).
    Special(hamirror_wire::EntryKind),
}

/// The stat fields a scan needs (a compact copy of `Metadata`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
    pub mtime_ns: i64,
    /// The device number of a device node (0 otherwise).
    pub rdev: u64,
    pub fp: Fingerprint,
}

impl Stat {
    pub fn of(meta: &Metadata) -> Stat {
        let fp = Fingerprint::of(meta);
        Stat {
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            nlink: meta.nlink(),
            mtime_ns: fp.mtime_ns,
            rdev: meta.rdev(),
            fp,
        }
    }
}

/// One path found on disk.
#[derive(Debug)]
pub(super) struct Found {
    /// The set path (`var/spool/lpd/q/a`); on this node the path is
    /// `node_root/<path>`.
    pub path: Vec<u8>,
    pub kind: Kind,
    pub stat: Stat,
}

/// Everything a walk of a set's roots found.
#[derive(Debug, Default)]
pub(super) struct Walked {
    pub found: Vec<Found>,
    pub skipped: Vec<Problem>,
    pub errors: Vec<Problem>,
    /// Set paths of roots that do not exist on this node.
    pub missing_roots: Vec<Vec<u8>>,
    /// Set paths whose stored state (including everything below them)
    /// must be kept because they could not be examined.
    pub keep: Vec<Vec<u8>>,
    /// Set paths the exclude rules exclude (with everything below them):
    /// not part of the set, though they exist.
    pub excluded: Vec<Vec<u8>>,
}

impl Walked {
    pub(super) fn error(&mut self, path: Vec<u8>, reason: String) {
        self.keep.push(path.clone());
        self.errors.push(Problem { path, reason });
    }

    pub(super) fn merge(&mut self, other: Walked) {
        self.found.extend(other.found);
        self.skipped.extend(other.skipped);
        self.errors.extend(other.errors);
        self.missing_roots.extend(other.missing_roots);
        self.keep.extend(other.keep);
        self.excluded.extend(other.excluded);
    }

    /// Records a path of any kind; sockets (and any kind Linux may add)
    /// are skipped.
    pub(super) fn add(&mut self, path: Vec<u8>, meta: &Metadata) {
        use hamirror_wire::EntryKind;
        let t = meta.file_type();
        let kind = if t.is_file() {
            Kind::File
        } else if t.is_dir() {
            Kind::Dir
        } else if t.is_symlink() {
            Kind::Symlink
        } else if t.is_fifo() {
            Kind::Special(EntryKind::Fifo)
        } else if t.is_char_device() {
            Kind::Special(EntryKind::CharDev)
        } else if t.is_block_device() {
            Kind::Special(EntryKind::BlockDev)
        } else {
            self.skipped.push(Problem {
                path,
                reason: format!("{} (not mirrored)", kind_name(meta)),
            });
            return;
        };
        self.found.push(Found {
            path,
            kind,
            stat: Stat::of(meta),
        });
    }
}

fn kind_name(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_file() {
        "regular file"
    } else if t.is_dir() {
        "directory"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

pub(super) fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "vanished while being scanned".into(),
        _ => e.to_string(),
    }
}

/// Where a set path lies on this node.
pub(super) fn local_path(node_root: &Path, set_path: &[u8]) -> PathBuf {
    node_root.join(std::ffi::OsStr::from_bytes(set_path))
}

/// Walks every root of a set, under the node's `node_root`, listing
/// directories in parallel on `pool`.
pub(super) fn walk(roots: &[SetRoot], excludes: &Excludes, node_root: &Path, pool: &rayon::ThreadPool) -> Walked {
    let mut w = Walked::default();
    for root in roots {
        walk_root(root, excludes, node_root, pool, &mut w);
    }
    w
}

fn walk_root(root: &SetRoot, excludes: &Excludes, node_root: &Path, pool: &rayon::ThreadPool, w: &mut Walked) {
    if let Some((local, root_path, dev)) = examine_root(root, excludes, node_root, w) {
        w.merge(walk_below(local, root_path, dev, excludes, pool));
    }
}

/// Examines one root (recording it in `w` as found, missing, excluded or
/// not examinable); for a directory root to walk: its local path, set path
/// and device.
pub(super) fn examine_root(
    root: &SetRoot,
    excludes: &Excludes,
    node_root: &Path,
    w: &mut Walked,
) -> Option<(PathBuf, Vec<u8>, u64)> {
    let rel = root.path.strip_prefix("/").unwrap_or(&root.path);
    let root_path = rel.as_os_str().as_bytes().to_vec();
    if let Err(why) = check_path(&root_path) {
        w.error(root_path, format!("root is not a valid set path: {why}"));
        return None;
    }
    let local = node_root.join(rel);
    let meta = match fs::symlink_metadata(&local) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            w.missing_roots.push(root_path);
            return None;
        }
        Err(e) => {
            w.error(root_path, format!("cannot examine root {}: {e}", local.display()));
            return None;
        }
    };
    let is_dir = meta.file_type().is_dir();
    if root.dir != is_dir {
        let listed = if root.dir {
            "a directory (with a trailing /)"
        } else {
            "a single file"
        };
        let why = format!("listed as {listed} but is a {}; not scanned", kind_name(&meta));
        w.error(root_path, why);
        return None;
    }
    if excludes.excludes_name(&root_path, is_dir) {
        w.excluded.push(root_path);
        return None;
    }
    w.add(root_path.clone(), &meta);
    is_dir.then(|| (local, root_path, meta.dev()))
}

/// Lists everything below the directory `dir` (set path `dir_path`), which
/// lies on the device `dev`, in parallel on `pool`. The directory itself is
/// not recorded.
pub(super) fn walk_below(
    dir: PathBuf,
    dir_path: Vec<u8>,
    dev: u64,
    excludes: &Excludes,
    pool: &rayon::ThreadPool,
) -> Walked {
    let shared = Mutex::new(Walked::default());
    pool.scope(|s| list_dir(s, dir, dir_path, dev, excludes, &shared));
    shared.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// What the walker says about the contents of a mount point.
pub(super) const MOUNT_POINT: &str = "mount point: recorded as an empty directory, the other filesystem is not crossed";

/// Lists one directory, stats its entries, and spawns a task per
/// subdirectory. Results are gathered locally and merged once per directory.
fn list_dir<'s>(
    s: &rayon::Scope<'s>,
    dir: PathBuf,
    dir_path: Vec<u8>,
    dev: u64,
    excludes: &'s Excludes,
    shared: &'s Mutex<Walked>,
) {
    let mut w = Walked::default();
    list_entries(&dir, &dir_path, dev, excludes, &mut w, |sub, sub_path| {
        s.spawn(move |s| list_dir(s, sub, sub_path, dev, excludes, shared));
    });
    shared.lock().unwrap_or_else(|p| p.into_inner()).merge(w);
}

/// Lists one directory `dir` (set path `dir_path`, on the device `dev`)
/// into `w`, statting each entry relative to it, and hands each
/// subdirectory to enter (on the same device, not excluded) to `descend`,
/// with its local and set path. The directory itself is not recorded.
pub(super) fn list_entries(
    dir: &Path,
    dir_path: &[u8],
    dev: u64,
    excludes: &Excludes,
    w: &mut Walked,
    mut descend: impl FnMut(PathBuf, Vec<u8>),
) {
    match fs::read_dir(dir) {
        Err(e) => w.error(dir_path.to_vec(), format!("cannot list: {}", describe(&e))),
        Ok(entries) => {
            for entry in entries {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        // The listing broke off: what was not seen is kept.
                        w.error(dir_path.to_vec(), format!("cannot list: {}", describe(&e)));
                        break;
                    }
                };
                // A receiver's files under construction are never part of the set.
                if super::is_temp_name(entry.file_name().as_bytes()) {
                    continue;
                }
                let mut path = Vec::with_capacity(dir_path.len() + 1 + entry.file_name().len());
                path.extend_from_slice(dir_path);
                path.push(b'/');
                path.extend_from_slice(entry.file_name().as_bytes());
                if let Err(why) = check_path(&path) {
                    // Never mirrorable, whatever is retried: skipped (with
                    // a warning and a count), not an error of every pass.
                    w.skipped.push(Problem {
                        path,
                        reason: format!("{why} (not mirrored)"),
                    });
                    continue;
                }
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    Err(e) => {
                        w.error(path, describe(&e));
                        continue;
                    }
                };
                if !excludes.is_empty() && excludes.excludes_name(&path, meta.is_dir()) {
                    w.excluded.push(path);
                    continue;
                }
                if meta.is_dir() {
                    if meta.dev() == dev {
                        descend(entry.path(), path.clone());
                    } else {
                        w.skipped.push(Problem {
                            path: path.clone(),
                            reason: MOUNT_POINT.into(),
                        });
                    }
                }
                w.add(path, &meta);
            }
        }
    }
}
