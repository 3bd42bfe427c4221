//! The full scan's walk, merged with the index one directory at a time
//! (issue 17): each directory's listing, sorted by name, is merged with
//! that directory's stored rows ([`SetView::dir`], in name order), so a
//! scan holds the directories it is merging and what changed — never a map
//! of every path of the set (485 MB for a million files before).
//!
//! Per directory `d`, every name is one of:
//! * on disk and stored with an equal fingerprint: a hit, only counted;
//! * on disk and not stored, or stored with another fingerprint: a miss,
//!   kept for the read and the commit. A miss that is not a directory the
//!   walk enters (a directory that became a file, a mount point) also
//!   deletes whatever was stored below it;
//! * stored and not on disk: deleted with everything stored below it,
//!   unless it could not be examined (its stored state is kept) or the
//!   exclude rules now exclude it (the index forgets it, which is not a
//!   deletion).
//!
//! Directories are listed in parallel on the scanner's walk pool, as the
//! plain walk does (`walk.rs`). Rows of directories the walk never reached (a
//! root that vanished or left the set, the level above the roots) are
//! found at the end from the directory table and judged path by path, as
//! a whole-tree comparison would. Multiply linked files are all kept, hit
//! or not: which of an inode's names is its `File` entry depends on every
//! name it has in the set.
//!
//! Upstream: `walk`, `index` (the view). No reading of files, no commit.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::walk::{self, Found, Kind, Walked};
use super::{ScanReport, is_kept};
use crate::config::{Excludes, MirrorSet};
use crate::index::{IndexError, SetView};

/// What the merged walk found: the misses (and every multiply linked
/// file), with whether each was a hit; the paths to delete and to forget;
/// and a report holding the counts of the hits, the skipped and failed
/// paths and the missing roots.
#[derive(Debug, Default)]
pub(super) struct Merged {
    pub found: Vec<(Found, bool)>,
    pub deletes: Vec<Vec<u8>>,
    pub forget: Vec<Vec<u8>>,
    pub report: ScanReport,
    /// Paths whose stored state is kept (they could not be examined).
    keep: Vec<Vec<u8>>,
}

impl Merged {
    fn absorb(&mut self, other: Merged) {
        self.found.extend(other.found);
        self.deletes.extend(other.deletes);
        self.forget.extend(other.forget);
        self.keep.extend(other.keep);
        let (r, o) = (&mut self.report, other.report);
        r.files += o.files;
        r.dirs += o.dirs;
        r.symlinks += o.symlinks;
        r.specials += o.specials;
        r.bytes += o.bytes;
        r.files_unchanged += o.files_unchanged;
        r.skipped.extend(o.skipped);
        r.errors.extend(o.errors);
        r.missing_roots.extend(o.missing_roots);
    }

    /// Takes a walk's problems (its found paths are merged separately).
    fn problems(&mut self, w: &mut Walked) {
        self.report.skipped.append(&mut w.skipped);
        self.report.errors.append(&mut w.errors);
        self.report.missing_roots.append(&mut w.missing_roots);
        self.keep.extend(w.keep.iter().cloned());
    }

    /// Records a found path: a hit is only counted, unless it is a
    /// multiply linked file.
    fn record(&mut self, f: Found, hit: bool) {
        if !hit || (f.kind == Kind::File && f.stat.nlink > 1) {
            self.found.push((f, hit));
            return;
        }
        let r = &mut self.report;
        match f.kind {
            Kind::Dir => r.dirs += 1,
            Kind::Symlink => r.symlinks += 1,
            Kind::Special(_) => r.specials += 1,
            Kind::File => {
                r.files += 1;
                r.files_unchanged += 1;
                r.bytes += f.stat.fp.size;
            }
        }
    }
}

/// What happens to what is stored at and below a path.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Delete,
    Forget,
    Keep,
}

/// What the directory tasks share.
struct Ctx<'a> {
    view: &'a SetView,
    excludes: &'a Excludes,
    /// Every stored fingerprint counts as unknown (every file is read).
    reread: bool,
    out: Mutex<Shared>,
}

#[derive(Default)]
struct Shared {
    merged: Merged,
    /// Directory numbers whose rows were merged or disposed of.
    reached: HashSet<u32>,
    failed: Option<IndexError>,
}

impl Ctx<'_> {
    fn absorb(&self, local: Merged, reached: Vec<u32>, r: Result<(), IndexError>) {
        let mut s = self.out.lock().unwrap_or_else(|p| p.into_inner());
        s.merged.absorb(local);
        s.reached.extend(reached);
        if let Err(e) = r {
            s.failed.get_or_insert(e);
        }
    }

    /// Gives `path` and every stored path below it `fate` (the path's own
    /// row is the caller's), marking their directories reached.
    fn dispose(&self, path: &[u8], fate: Fate, out: &mut Merged, reached: &mut Vec<u32>) -> Result<(), IndexError> {
        for (id, dir) in self.view.dirs_below(path)? {
            reached.push(id);
            if fate == Fate::Keep {
                continue;
            }
            let list = if fate == Fate::Delete {
                &mut out.deletes
            } else {
                &mut out.forget
            };
            list.extend(self.view.paths_in(id, &dir)?.into_iter().map(|(p, _)| p));
        }
        Ok(())
    }
}

/// Walks every root of `set` under `node_root` and merges what it finds
/// with `view`, listing directories in parallel on `pool` (see the module
/// documentation).
///
/// # Errors
/// Index storage errors; problems with paths are in the report.
pub(super) fn merge(
    view: &SetView,
    set: &MirrorSet,
    node_root: &Path,
    reread: bool,
    pool: &rayon::ThreadPool,
) -> Result<Merged, IndexError> {
    let ctx = Ctx {
        view,
        excludes: &set.excludes,
        reread,
        out: Mutex::new(Shared::default()),
    };
    let mut top = Walked::default();
    let mut below = vec![];
    for root in &set.roots {
        below.extend(walk::examine_root(root, &set.excludes, node_root, &mut top));
    }
    let mut merged = Merged::default();
    merged.problems(&mut top);
    let mut roots = HashSet::new();
    for f in top.found {
        let hit = !reread && view.get(&f.path)? == Some(Some(f.stat.fp));
        roots.insert(f.path.clone());
        merged.record(f, hit);
    }
    pool.scope(|s| {
        for (local, path, dev) in below {
            let ctx = &ctx;
            s.spawn(move |s| merge_dir(s, ctx, local, path, dev));
        }
    });
    let Shared {
        merged: from_dirs,
        reached,
        failed,
    } = ctx.out.into_inner().unwrap_or_else(|p| p.into_inner());
    if let Some(e) = failed {
        return Err(e);
    }
    merged.absorb(from_dirs);
    // Rows no directory task reached: above the roots, or of roots that
    // vanished or left the set. Judged like any path the walk did not find.
    let keep = merged.keep.iter().cloned().collect();
    let excluded = top.excluded.into_iter().collect();
    let mut unreached = vec![];
    view.each_dir(|id, dir| {
        if !reached.contains(&id) {
            unreached.push((id, dir.to_vec()));
        }
        Ok(())
    })?;
    for (id, dir) in unreached {
        for (p, _) in view.paths_in(id, &dir)? {
            if roots.contains(&p) || is_kept(&p, &keep) {
                continue;
            }
            if is_kept(&p, &excluded) {
                merged.forget.push(p);
            } else {
                merged.deletes.push(p);
            }
        }
    }
    Ok(merged)
}

/// Lists one directory, spawns a task per subdirectory to enter, and
/// merges the listing with the directory's stored rows.
fn merge_dir<'s>(s: &rayon::Scope<'s>, ctx: &'s Ctx<'s>, dir: PathBuf, dir_path: Vec<u8>, dev: u64) {
    let mut w = Walked::default();
    let mut entered = vec![];
    walk::list_entries(&dir, &dir_path, dev, ctx.excludes, &mut w, |sub, sub_path| {
        entered.push(sub_path.clone());
        s.spawn(move |s| merge_dir(s, ctx, sub, sub_path, dev));
    });
    let (mut out, mut reached) = (Merged::default(), vec![]);
    entered.sort_unstable();
    let r = merge_listing(ctx, &dir_path, w, &entered, &mut out, &mut reached);
    ctx.absorb(out, reached, r);
}

/// The sorted merge of one directory's listing `w` with its stored rows;
/// `entered`: the subdirectories the walk enters, sorted.
fn merge_listing(
    ctx: &Ctx<'_>,
    dir_path: &[u8],
    mut w: Walked,
    entered: &[Vec<u8>],
    out: &mut Merged,
    reached: &mut Vec<u32>,
) -> Result<(), IndexError> {
    out.problems(&mut w);
    // The listing itself failed or broke off: nothing stored is judged gone.
    let unlisted = w.keep.iter().any(|k| k[..] == *dir_path);
    w.keep.sort_unstable();
    w.excluded.sort_unstable();
    let gone = |path: Vec<u8>, out: &mut Merged, reached: &mut Vec<u32>| {
        let fate = if unlisted || w.keep.binary_search(&path).is_ok() {
            Fate::Keep
        } else if w.excluded.binary_search(&path).is_ok() {
            Fate::Forget
        } else {
            Fate::Delete
        };
        ctx.dispose(&path, fate, out, reached)?;
        match fate {
            Fate::Delete => out.deletes.push(path),
            Fate::Forget => out.forget.push(path),
            Fate::Keep => {}
        }
        Ok::<(), IndexError>(())
    };
    let stored = match ctx.view.dir(dir_path)? {
        Some(d) => {
            reached.push(d.id);
            d.rows
        }
        None => vec![],
    };
    let mut stored = stored.into_iter().peekable();
    let mut found = std::mem::take(&mut w.found);
    // All share the prefix `dir_path/`: path order is name order.
    found.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    let name_at = dir_path.len() + 1;
    for f in found {
        let name = &f.path[name_at..];
        while let Some((n, _)) = stored.next_if(|(n, _)| n[..] < *name) {
            gone([dir_path, b"/", &n].concat(), out, reached)?;
        }
        let fp = stored.next_if(|(n, _)| n[..] == *name).map(|(_, fp)| fp);
        let hit = !ctx.reread && fp == Some(Some(f.stat.fp));
        // What was stored below a path the walk does not enter is gone: a
        // directory that became something else, or a mount point's
        // contents. An unchanged non-directory never had anything below.
        let not_entered = f.kind == Kind::Dir && entered.binary_search(&f.path).is_err();
        if fp.is_some() && (not_entered || (!hit && f.kind != Kind::Dir)) {
            ctx.dispose(&f.path, Fate::Delete, out, reached)?;
        }
        out.record(f, hit);
    }
    for (n, _) in stored {
        gone([dir_path, b"/", &n].concat(), out, reached)?;
    }
    Ok(())
}
