//! The receiver's side of a set's exclude rules: what this node's own copy
//! of the set file excludes is protected on the replica, as rsync protects
//! excluded files without `--delete-excluded`. An offer never deletes an
//! excluded path, never removes a directory that still holds excluded
//! content, and never writes an excluded path (a sender whose copy of the
//! configuration is older may still list one). Reads the replica's tree
//! (`lstat` and directory listings, never following a symlink); writes
//! nothing.

use std::collections::HashMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use hamirror_wire::{Entry, EntryKind};

use crate::config::MirrorSet;

/// What the rules took out of an offer.
#[derive(Debug, Default)]
pub(super) struct Protected {
    /// Deletions dropped: excluded paths, and directories that hold
    /// excluded content on the replica.
    pub deletes: Vec<Vec<u8>>,
    /// Offered entries dropped (excluded here).
    pub offered: Vec<Vec<u8>>,
    /// Of those, the paths the replica's index still holds: it forgets
    /// them (they are not part of the set; their files stay).
    pub forget: Vec<Vec<u8>>,
    /// Offered entries that would replace a directory holding excluded
    /// files on the replica (a directory that became a file or a symlink):
    /// not applied, with why (rsync fails them the same way).
    pub in_the_way: Vec<(Vec<u8>, String)>,
}

/// Takes out of `offered` and `deletes` what `set`'s rules protect.
/// `held`: the replica's index entries for (at least) every path in
/// `deletes`.
pub(super) fn protect(
    set: &MirrorSet,
    root: &Path,
    held: &HashMap<Vec<u8>, Entry>,
    offered: &mut Vec<Entry>,
    deletes: &mut Vec<Vec<u8>>,
) -> Protected {
    let mut out = Protected::default();
    if set.excludes.is_empty() {
        return out;
    }
    let local = |p: &[u8]| root.join(std::ffi::OsStr::from_bytes(p));
    offered.retain(|e| {
        let is_dir = e.kind == EntryKind::Dir;
        let excluded = set.excluded(&e.path, Some(is_dir))
            || (e.kind == EntryKind::HardLink && set.excluded(&e.target, Some(false)));
        if excluded {
            out.offered.push(e.path.clone());
        }
        !excluded
    });
    // A directory that became something else would be removed with
    // everything in it: not while it holds excluded files.
    offered.retain(|e| {
        if e.kind == EntryKind::Dir || !held.get(&e.path).is_some_and(|h| h.kind == EntryKind::Dir) {
            return true;
        }
        let mut found = Vec::new();
        excluded_inside(set, &local(&e.path), &e.path, &mut found);
        if let Some(f) = found.first() {
            let why = format!(
                "the directory here holds /{}, which the set excludes (never deleted on the replica); remove it \
                 there to let the directory be replaced",
                String::from_utf8_lossy(f)
            );
            out.in_the_way.push((e.path.clone(), why));
        }
        found.is_empty()
    });
    // The kind on the replica decides (a directory-only rule), else the
    // kind the index knows, else either.
    let kind = |p: &[u8]| match fs::symlink_metadata(local(p)) {
        Ok(m) => Some(m.is_dir()),
        Err(_) => held.get(p).map(|e| e.kind == EntryKind::Dir),
    };
    let mut dirs = Vec::new();
    deletes.retain(|p| {
        let k = kind(p);
        if set.excluded(p, k) {
            out.deletes.push(p.clone());
            return false;
        }
        if k == Some(true) {
            dirs.push(p.clone());
        }
        true
    });
    // Directories whose removal would take excluded files with them stay
    // (rsync: "cannot delete non-empty directory"), and so does every
    // directory above such a file.
    let mut kept_below: Vec<Vec<u8>> = Vec::new();
    dirs.sort();
    for d in &dirs {
        if kept_below.iter().any(|k| below(k, d)) {
            continue;
        }
        excluded_inside(set, &local(d), d, &mut kept_below);
    }
    if !kept_below.is_empty() {
        deletes.retain(|p| {
            let keep = kept_below.iter().any(|k| below(k, p));
            if keep {
                out.deletes.push(p.clone());
            }
            !keep
        });
    }
    out.forget = out
        .deletes
        .iter()
        .chain(&out.offered)
        .filter(|p| held.contains_key(*p) && set.excluded(p, held.get(*p).map(|e| e.kind == EntryKind::Dir)))
        .cloned()
        .collect();
    out
}

/// Whether `path` lies strictly below the directory `dir`.
fn below(path: &[u8], dir: &[u8]) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}

/// Adds to `found` the excluded paths inside the replica's directory
/// `local` (set path `dir`), not entering excluded directories nor
/// following symlinks. Unreadable directories are taken as holding none.
fn excluded_inside(set: &MirrorSet, local: &Path, dir: &[u8], found: &mut Vec<Vec<u8>>) {
    let Ok(rd) = fs::read_dir(local) else { return };
    for ent in rd.flatten() {
        let Ok(ft) = ent.file_type() else { continue };
        let mut p = dir.to_vec();
        p.push(b'/');
        p.extend_from_slice(ent.file_name().as_bytes());
        if set.excluded(&p, Some(ft.is_dir())) {
            found.push(p);
        } else if ft.is_dir() {
            excluded_inside(set, &ent.path(), &p, found);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ChunkParams;
    use crate::config::exclude::{Excludes, Rule};

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            size: 0,
            file_hash: [0; 32],
            chunks: vec![],
            target: vec![],
            xattrs: vec![],
        }
    }

    #[test]
    fn excluded_paths_and_directories_holding_them_are_not_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for d in ["srv/gone/sub", "srv/plain"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in ["srv/gone/sub/x.tmp", "srv/gone/f", "srv/plain/f", "srv/y.tmp"] {
            fs::write(root.join(f), b"x").unwrap();
        }
        let mut set = MirrorSet::for_tests("Fs", "/c/Fs".into(), &[("/srv", true)], ChunkParams::default());
        set.excludes = Excludes {
            rules: vec![Rule::parse(false, "*.tmp", 2).unwrap()],
        };
        let held: HashMap<Vec<u8>, Entry> = [
            entry("srv/gone", EntryKind::Dir),
            entry("srv/gone/sub", EntryKind::Dir),
            entry("srv/gone/f", EntryKind::File),
            entry("srv/plain", EntryKind::Dir),
            entry("srv/plain/f", EntryKind::File),
            entry("srv/y.tmp", EntryKind::File),
        ]
        .into_iter()
        .map(|e| (e.path.clone(), e))
        .collect();
        let mut deletes: Vec<Vec<u8>> = [
            "srv/gone/f",
            "srv/gone/sub",
            "srv/gone",
            "srv/plain/f",
            "srv/plain",
            "srv/y.tmp",
        ]
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
        let mut offered = vec![
            entry("srv/new.tmp", EntryKind::File),
            entry("srv/new", EntryKind::File),
            // A directory that became a file, and still holds an excluded
            // file here.
            entry("srv/gone/sub", EntryKind::File),
            entry("srv/plain", EntryKind::Symlink),
        ];
        let p = protect(&set, root, &held, &mut offered, &mut deletes);
        let show = |v: &[Vec<u8>]| {
            v.iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(show(&deletes), ["srv/gone/f", "srv/plain/f", "srv/plain"]);
        assert_eq!(
            show(&offered.iter().map(|e| e.path.clone()).collect::<Vec<_>>()),
            ["srv/new", "srv/plain"]
        );
        assert_eq!(p.in_the_way.len(), 1);
        assert_eq!(p.in_the_way[0].0, b"srv/gone/sub");
        assert!(p.in_the_way[0].1.contains("/srv/gone/sub/x.tmp"), "{:?}", p.in_the_way);
        assert_eq!(show(&p.forget), ["srv/y.tmp"]);
    }
}
