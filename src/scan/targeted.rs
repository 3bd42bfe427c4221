//! Targeted scans: re-examine only given paths of a set (and whole subtrees
//! where asked) instead of walking every root, and commit the differences
//! as one generation. This is how `watch` turns a batch of filesystem
//! events into a generation; it shares the quick check, the parallel
//! reader, the racy-window rule and the commit with the full scan
//! ([`Scanner::finish`]), so both record exactly the same entries.
//!
//! A target is examined like the walker would have found it: every
//! directory between its root and it must be a real directory (not a
//! symlink) on the root's filesystem and not a receiver's temporary file;
//! otherwise the target does not exist for the set. A target that does not
//! exist, or is no longer a directory, takes everything indexed below it
//! with it (a deleted or renamed directory deletes its whole indexed
//! subtree). A [`Scope::Tree`] target that is a directory is walked in full
//! (a new or renamed directory: files created in it before anyone watched
//! it are found).
//!
//! Hard links cannot be handled path by path: which name of an inode is
//! the `File` entry and which are `HardLink`s depends on every name the
//! inode has in the set, and writing through one name raises no event for
//! the others. So a targeted scan gives way to a full stat scan (no
//! re-hash: the quick check still holds for everything else) when a file
//! it would read has more than one link, and, when the set already holds
//! hard links, whenever it would delete a path (the deleted name may have
//! been the primary of another). The full scan is reported in
//! [`PathScan::full`].
//!
//! Roots themselves: a root that disappeared or changed kind is also left
//! to a full scan, which reports it in `missing_roots` like any scan.
//!
//! Like the rest of `scan`, this knows nothing of events or of `watch`: it
//! is given paths, from whatever source.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use hamirror_wire::entry::check_path;

use super::walk::{self, Kind, Walked};
use super::{ScanError, ScanObserver, ScanReport, Scanned, Scanner, is_kept, is_temp_name, now_ns};
use crate::config::{MirrorSet, SetRoot};
use crate::index::Index;

/// How much of a target to examine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// The path itself (and, if it is gone or no longer a directory,
    /// the removal of everything indexed below it).
    Path,
    /// The path and, if it is a directory, everything below it.
    Tree,
}

/// A set path to re-examine (`srv/samba/a`, relative to `/` like every set
/// path).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub path: Vec<u8>,
    pub scope: Scope,
}

impl Target {
    pub fn path(path: impl Into<Vec<u8>>) -> Target {
        Target {
            path: path.into(),
            scope: Scope::Path,
        }
    }
    pub fn tree(path: impl Into<Vec<u8>>) -> Target {
        Target {
            path: path.into(),
            scope: Scope::Tree,
        }
    }
}

/// How a targeted scan treats what it finds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathScanOptions {
    /// The set's index holds hard links (the last full scan counted some).
    pub hard_links: bool,
    /// Changed files larger than this whose last change lies within the
    /// racy window are not read now but returned in [`PathScan::deferred`]:
    /// read now, they would have to be read a second time once the window
    /// has passed to record a trusted fingerprint. Worth it when reading
    /// takes longer than the wait (`watch` uses tens of MiB).
    pub defer_fresh_above: Option<u64>,
}

/// What a targeted scan did.
#[derive(Debug, Clone, Default)]
pub struct PathScan {
    pub scanned: Scanned,
    /// Why the targets were not enough and the whole set was stat-scanned
    /// instead (hard links, a root that vanished); `None` for a targeted
    /// scan.
    pub full: Option<String>,
    /// Files left unread (see [`PathScanOptions::defer_fresh_above`]), with
    /// how long until their change is out of the racy window.
    pub deferred: Vec<(Vec<u8>, std::time::Duration)>,
}

impl Scanner {
    /// Re-examines `targets` of `set` (paths outside its roots are ignored)
    /// and commits what changed as one generation. See the module
    /// documentation for when this becomes a full scan.
    ///
    /// # Errors
    /// As [`Scanner::scan_set`].
    pub fn scan_paths(
        &self,
        index: &Index,
        set: &MirrorSet,
        node_root: &Path,
        targets: &[Target],
        popts: PathScanOptions,
        observer: &dyn ScanObserver,
    ) -> Result<PathScan, ScanError> {
        let start = Instant::now();
        let previous_generation = index.generation(&set.name)?;
        let walk_started = now_ns();
        let mut walked = match self.walk.install(|| walk_targets(set, node_root, targets, &self.walk)) {
            Ok(w) => w,
            Err(why) => return self.full(index, set, node_root, observer, why),
        };
        let paths: Vec<&[u8]> = walked.paths.iter().map(|p| &p[..]).collect();
        let trees: Vec<&[u8]> = walked.trees.iter().map(|p| &p[..]).collect();
        let mut known = index.fingerprints_of(&set.name, &paths, &trees)?;
        if let Some(why) = needs_full_scan(&walked.walked, &known, popts.hard_links) {
            return self.full(index, set, node_root, observer, why);
        }
        let deferred = match popts.defer_fresh_above {
            Some(limit) => defer_fresh(&mut walked.walked, &mut known, limit, walk_started, self.racy_ns()),
            None => vec![],
        };
        let report = ScanReport {
            set: set.name.clone(),
            previous_generation,
            ..ScanReport::default()
        };
        let scanned = self.finish(
            index,
            set,
            node_root,
            walked.walked,
            known,
            walk_started,
            report,
            observer,
            start,
        )?;
        Ok(PathScan {
            scanned,
            full: None,
            deferred,
        })
    }

    fn full(
        &self,
        index: &Index,
        set: &MirrorSet,
        node_root: &Path,
        observer: &dyn ScanObserver,
        why: String,
    ) -> Result<PathScan, ScanError> {
        tracing::debug!(set = %set.name, %why, "targeted scan gives way to a full scan");
        Ok(PathScan {
            scanned: self.scan_set(index, set, node_root, observer)?,
            full: Some(why),
            deferred: vec![],
        })
    }
}

/// A targeted walk: what was found, and what to look up in the index.
#[derive(Debug, Default)]
struct TargetWalk {
    walked: Walked,
    /// Paths whose stored fingerprint the quick check needs.
    paths: Vec<Vec<u8>>,
    /// Paths everything indexed below which was covered by the walk (what
    /// the walk did not find there is deleted).
    trees: Vec<Vec<u8>>,
}

/// Why the quick check of a targeted walk cannot stand alone, if it
/// cannot (see the module documentation on hard links).
fn needs_full_scan(
    walked: &Walked,
    known: &HashMap<Vec<u8>, Option<crate::index::Fingerprint>>,
    hard_links: bool,
) -> Option<String> {
    for f in &walked.found {
        if f.kind == Kind::File && f.stat.nlink > 1 && known.get(&f.path) != Some(&Some(f.stat.fp)) {
            return Some(format!(
                "/{} changed and has {} links",
                super::show_path(&f.path),
                f.stat.nlink
            ));
        }
    }
    if hard_links {
        let found: HashSet<&[u8]> = walked.found.iter().map(|f| &f.path[..]).collect();
        let keep: BTreeSet<Vec<u8>> = walked.keep.iter().cloned().collect();
        let excluded: BTreeSet<Vec<u8>> = walked.excluded.iter().cloned().collect();
        let gone = |p: &Vec<u8>| !found.contains(&p[..]) && !is_kept(p, &keep) && !is_kept(p, &excluded);
        if let Some(p) = known.keys().find(|p| gone(p)) {
            return Some(format!(
                "/{} was deleted and the set holds hard links",
                super::show_path(p)
            ));
        }
    }
    None
}

/// Takes out of the walk the changed files above `limit` bytes that are
/// too fresh to trust (and their index rows, so they are not deleted);
/// returns them with how long until they are not.
fn defer_fresh(
    walked: &mut Walked,
    known: &mut HashMap<Vec<u8>, Option<crate::index::Fingerprint>>,
    limit: u64,
    walk_started: i64,
    racy_ns: i64,
) -> Vec<(Vec<u8>, std::time::Duration)> {
    let mut out = vec![];
    walked.found.retain(|f| {
        let fp = f.stat.fp;
        let fresh = f.kind == Kind::File
            && fp.size > limit
            && known.get(&f.path) != Some(&Some(fp))
            && super::read::is_racy(&fp, walk_started, racy_ns);
        if fresh {
            known.remove(&f.path);
            let wait = fp.ctime_ns.saturating_add(racy_ns).saturating_sub(walk_started).max(0);
            out.push((f.path.clone(), std::time::Duration::from_nanos(wait as u64)));
        }
        !fresh
    });
    out
}

/// The targets in path order without duplicates, a path named both ways
/// counting as a tree, and without what lies below a tree target.
fn normalize(targets: &[Target]) -> Vec<Target> {
    let mut by_path: BTreeMap<&[u8], Scope> = BTreeMap::new();
    for t in targets {
        let s = by_path.entry(&t.path).or_insert(t.scope);
        *s = (*s).max(t.scope);
    }
    let trees: BTreeSet<Vec<u8>> = by_path
        .iter()
        .filter(|(_, s)| **s == Scope::Tree)
        .map(|(p, _)| p.to_vec())
        .collect();
    by_path
        .into_iter()
        .filter(|(p, _)| !below_any(p, &trees))
        .map(|(p, scope)| Target {
            path: p.to_vec(),
            scope,
        })
        .collect()
}

/// Whether `path` lies strictly below one of `trees`.
fn below_any(path: &[u8], trees: &BTreeSet<Vec<u8>>) -> bool {
    path.iter()
        .enumerate()
        .any(|(i, b)| *b == b'/' && trees.contains(&path[..i]))
}

/// A set root as a set path, with its device once looked at.
struct Root<'a> {
    root: &'a SetRoot,
    path: Vec<u8>,
    dev: Option<u64>,
}

impl Root<'_> {
    /// Whether `p` is this root or lies below it.
    fn covers(&self, p: &[u8]) -> bool {
        p == &self.path[..]
            || (self.root.dir && p.len() > self.path.len() && p.starts_with(&self.path) && p[self.path.len()] == b'/')
    }
}

fn set_path(root: &SetRoot) -> Vec<u8> {
    let rel = root.path.strip_prefix("/").unwrap_or(&root.path);
    rel.as_os_str().as_bytes().to_vec()
}

/// Examines each target (see the module documentation). `Err` gives the
/// reason to scan the whole set instead.
fn walk_targets(
    set: &MirrorSet,
    node_root: &Path,
    targets: &[Target],
    pool: &rayon::ThreadPool,
) -> Result<TargetWalk, String> {
    let mut roots: Vec<Root<'_>> = set
        .roots
        .iter()
        .map(|root| Root {
            root,
            path: set_path(root),
            dev: None,
        })
        .collect();
    let mut tw = TargetWalk::default();
    // Per directory between a root and a target: whether it is a real
    // directory on the root's filesystem.
    let mut dirs: HashMap<Vec<u8>, bool> = HashMap::new();
    for t in normalize(targets) {
        let Some(root) = roots.iter_mut().find(|r| r.covers(&t.path)) else {
            continue;
        };
        let dev = root_dev(root, node_root)?;
        if t.path == root.path {
            walk_root(root, dev, node_root, &t, &set.excludes, pool, &mut tw)?;
            continue;
        }
        let present =
            ancestors_ok(&t.path, root.path.len(), dev, node_root, &mut dirs) && !is_temp_name(last_name(&t.path));
        if !present {
            if set.excluded(&t.path, None) {
                tw.walked.excluded.push(t.path.clone());
            }
            tw.paths.push(t.path.clone());
            tw.trees.push(t.path);
            continue;
        }
        if let Err(why) = check_path(&t.path) {
            tw.walked.skipped.push(super::report::Problem {
                path: t.path,
                reason: format!("{why} (not mirrored)"),
            });
            continue;
        }
        let local = walk::local_path(node_root, &t.path);
        let meta = match fs::symlink_metadata(&local) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if set.excluded(&t.path, None) {
                    tw.walked.excluded.push(t.path.clone());
                }
                tw.paths.push(t.path.clone());
                tw.trees.push(t.path);
                continue;
            }
            Err(e) => {
                tw.walked.error(t.path, walk::describe(&e));
                continue;
            }
        };
        if set.excluded(&t.path, Some(meta.is_dir())) {
            // Not part of the set: what the index holds of it is forgotten.
            tw.walked.excluded.push(t.path.clone());
            tw.paths.push(t.path.clone());
            tw.trees.push(t.path);
            continue;
        }
        tw.walked.add(t.path.clone(), &meta);
        tw.paths.push(t.path.clone());
        if !meta.is_dir() {
            // It may have been a directory: what was below it is gone.
            tw.trees.push(t.path);
        } else if meta.dev() != dev {
            tw.walked.skipped.push(super::Problem {
                path: t.path.clone(),
                reason: walk::MOUNT_POINT.into(),
            });
            tw.trees.push(t.path);
        } else if t.scope == Scope::Tree {
            tw.walked
                .merge(walk::walk_below(local, t.path.clone(), dev, &set.excludes, pool));
            tw.trees.push(t.path);
        }
    }
    Ok(tw)
}

/// The device of a root, looked at once per scan. A root that is missing
/// or not of its listed kind is left to a full scan.
fn root_dev(root: &mut Root<'_>, node_root: &Path) -> Result<u64, String> {
    if let Some(d) = root.dev {
        return Ok(d);
    }
    let local = walk::local_path(node_root, &root.path);
    let show = super::show_path(&root.path);
    match fs::symlink_metadata(&local) {
        Ok(m) if m.is_dir() == root.root.dir => {
            root.dev = Some(m.dev());
            Ok(m.dev())
        }
        Ok(_) => Err(format!("root /{show} changed kind")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(format!("root /{show} is missing")),
        Err(e) => Err(format!("cannot examine root /{show}: {e}")),
    }
}

/// A target that is a root itself: it exists and has its listed kind
/// (checked by `root_dev`).
fn walk_root(
    root: &Root<'_>,
    dev: u64,
    node_root: &Path,
    t: &Target,
    excludes: &crate::config::Excludes,
    pool: &rayon::ThreadPool,
    tw: &mut TargetWalk,
) -> Result<(), String> {
    let local = walk::local_path(node_root, &root.path);
    let meta = fs::symlink_metadata(&local).map_err(|e| format!("root /{}: {e}", super::show_path(&root.path)))?;
    tw.paths.push(root.path.clone());
    if excludes.excludes_name(&root.path, root.root.dir) {
        tw.walked.excluded.push(root.path.clone());
        tw.trees.push(root.path.clone());
        return Ok(());
    }
    tw.walked.add(root.path.clone(), &meta);
    if root.root.dir && t.scope == Scope::Tree {
        tw.walked
            .merge(walk::walk_below(local, root.path.clone(), dev, excludes, pool));
        tw.trees.push(root.path.clone());
    }
    Ok(())
}

/// Whether every directory strictly between the root (whose set path is
/// `root_len` bytes long) and `path` is a real directory on `dev` that a
/// walk would enter.
fn ancestors_ok(path: &[u8], root_len: usize, dev: u64, node_root: &Path, dirs: &mut HashMap<Vec<u8>, bool>) -> bool {
    for (i, b) in path.iter().enumerate().skip(root_len + 1) {
        if *b != b'/' {
            continue;
        }
        let dir = &path[..i];
        let ok = match dirs.get(dir) {
            Some(ok) => *ok,
            None => {
                let ok = !is_temp_name(last_name(dir))
                    && fs::symlink_metadata(walk::local_path(node_root, dir))
                        .is_ok_and(|m| m.is_dir() && m.dev() == dev);
                dirs.insert(dir.to_vec(), ok);
                ok
            }
        };
        if !ok {
            return false;
        }
    }
    true
}

fn last_name(path: &[u8]) -> &[u8] {
    path.rsplit(|b| *b == b'/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests;
