//! Walking a set's roots on the local disk: one `lstat` per path, no reads.
//! Produces what exists (with its set path and fingerprint), what was
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
//! * sockets, FIFOs and devices are skipped and reported;
//! * a path that cannot be examined is an error for that path; the caller
//!   keeps its previous state (and, for a directory, everything below it).

use std::ffi::OsStr;
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use hamirror_wire::entry::check_path;
use walkdir::WalkDir;

use super::report::Problem;
use crate::config::SetRoot;
use crate::index::Fingerprint;

/// One path found on disk.
#[derive(Debug)]
pub(super) struct Found {
    /// The set path (`var/spool/lpd/q/a`).
    pub path: Vec<u8>,
    /// Where it is on this node (under the node's `root`).
    pub local: PathBuf,
    pub meta: Metadata,
    pub fp: Fingerprint,
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
}

impl Walked {
    fn error(&mut self, path: Vec<u8>, reason: String) {
        self.keep.push(path.clone());
        self.errors.push(Problem { path, reason });
    }
}

/// What a non-regular, non-directory, non-symlink file is, for the report.
fn special_kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_fifo() {
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

fn kind_name(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_file() {
        "regular file"
    } else if t.is_dir() {
        "directory"
    } else if t.is_symlink() {
        "symlink"
    } else {
        special_kind(meta)
    }
}

fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "vanished while being scanned".into(),
        _ => e.to_string(),
    }
}

/// The set path of `local`, which lies at or below a root whose set path
/// is `root_path` and whose local path is `root_local`.
fn set_path(root_path: &[u8], root_local: &Path, local: &Path) -> Vec<u8> {
    let rel = local.strip_prefix(root_local).map_or(OsStr::new(""), |r| r.as_os_str());
    let mut p = root_path.to_vec();
    if !rel.is_empty() {
        p.push(b'/');
        p.extend_from_slice(rel.as_bytes());
    }
    p
}

/// Walks every root of a set, under the node's `node_root`.
pub(super) fn walk(roots: &[SetRoot], node_root: &Path) -> Walked {
    let mut w = Walked::default();
    for root in roots {
        walk_root(root, node_root, &mut w);
    }
    w
}

fn walk_root(root: &SetRoot, node_root: &Path, w: &mut Walked) {
    let rel = root.path.strip_prefix("/").unwrap_or(&root.path);
    let root_path = rel.as_os_str().as_bytes().to_vec();
    let local = node_root.join(rel);
    if let Err(why) = check_path(&root_path) {
        w.error(root_path, format!("root is not a valid set path: {why}"));
        return;
    }
    let meta = match std::fs::symlink_metadata(&local) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            w.missing_roots.push(root_path);
            return;
        }
        Err(e) => {
            w.error(root_path, format!("cannot examine root {}: {e}", local.display()));
            return;
        }
    };
    let is_dir = meta.file_type().is_dir();
    if root.dir != is_dir {
        let listed = if root.dir {
            "a directory (with a trailing /)"
        } else {
            "a single file"
        };
        w.error(
            root_path,
            format!("listed as {listed} but is a {}; not scanned", kind_name(&meta)),
        );
        return;
    }
    if !is_dir {
        add(w, root_path, local, meta);
        return;
    }
    let root_dev = meta.dev();
    let mut it = WalkDir::new(&local)
        .follow_links(false)
        .follow_root_links(false)
        .into_iter();
    while let Some(next) = it.next() {
        let dent = match next {
            Ok(d) => d,
            Err(e) => {
                // A directory that could not be listed (or an entry that
                // vanished): keep what the index knows below it.
                let p = e
                    .path()
                    .map_or_else(|| root_path.clone(), |p| set_path(&root_path, &local, p));
                let reason = e
                    .io_error()
                    .map_or_else(|| e.to_string(), |io| format!("cannot list: {}", describe(io)));
                w.error(p, reason);
                continue;
            }
        };
        let path = set_path(&root_path, &local, dent.path());
        if let Err(why) = check_path(&path) {
            if dent.file_type().is_dir() {
                it.skip_current_dir();
            }
            w.error(path, format!("cannot be mirrored: {why}"));
            continue;
        }
        let meta = match std::fs::symlink_metadata(dent.path()) {
            Ok(m) => m,
            Err(e) => {
                if dent.file_type().is_dir() {
                    it.skip_current_dir();
                }
                w.error(path, describe(&e));
                continue;
            }
        };
        if meta.is_dir() && dent.depth() > 0 && meta.dev() != root_dev {
            it.skip_current_dir();
            w.skipped.push(Problem {
                path: path.clone(),
                reason: "mount point: recorded as an empty directory, the other filesystem is not crossed".into(),
            });
        }
        add(w, path, dent.into_path(), meta);
    }
}

fn add(w: &mut Walked, path: Vec<u8>, local: PathBuf, meta: Metadata) {
    let t = meta.file_type();
    if t.is_file() || t.is_dir() || t.is_symlink() {
        let fp = Fingerprint::of(&meta);
        w.found.push(Found { path, local, meta, fp });
    } else {
        w.skipped.push(Problem {
            path,
            reason: format!("{} (not mirrored)", special_kind(&meta)),
        });
    }
}
