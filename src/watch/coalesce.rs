//! Coalescing filesystem events into batches of scan targets: pure logic,
//! no clock of its own and no I/O. The engine feeds it `(now, event)` with
//! [`Coalescer::push`], asks [`Coalescer::poll_ready`] for the targets
//! whose time has come, and sleeps until [`Coalescer::next_deadline`].
//!
//! When a changed path is ready:
//! * a file being written is ready once it is closed after writing, or once
//!   it has been quiet (no write) for the quiet period, or, if it is written
//!   without pause, at the latest `max_delay` after its first event: a file
//!   is never read at every write, and never waits forever;
//! * metadata changes wait for the quiet period too (a `cp -p` sets the
//!   times right after closing the file: one read, not two);
//! * creations of directories and renames are ready at once: they need no
//!   reading, and a new directory must be scanned as soon as it appears
//!   (files created in it before it was watched are found by the scan of
//!   its whole tree); a deletion (or the moved-from half of a rename) after
//!   [`RENAME_GRACE`], and it goes out with any other creation, deletion or
//!   rename due within that grace: both halves of a rename, which the
//!   source may deliver apart, reach the replica in one pass;
//! * a re-check (a file whose fingerprint was too recent to trust, a read
//!   that failed) is ready at the time it names.
//!
//! Every event for a path that is already pending merges into it: a burst
//! of writes to one file yields one target. Whatever is ready when the
//! engine polls goes out together, so changes that arrive while a batch is
//! being scanned form the next batch — batching without added delay.
//! Creations, deletions and renames also change the parent directory
//! (its mtime), so the parent is added to the batch as a target.
//!
//! Memory is bounded: beyond `max_pending` paths the coalescer stops
//! tracking paths under the roots that hold the most of them and instead
//! schedules a stat re-scan of each such root, once it has been quiet (or
//! after `max_delay`); lost events ([`Event::Lost`]) schedule the same
//! re-scan at once.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::scan::{Scope, Target};

/// Tuning of a [`Coalescer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoalescerConfig {
    /// How long a written but unclosed file must go without writes.
    pub quiet: Duration,
    /// The longest a pending path waits after its first event.
    pub max_delay: Duration,
    /// The most paths tracked before switching to root re-scans.
    pub max_pending: usize,
}

/// Default [`CoalescerConfig::max_delay`].
pub const MAX_DELAY: Duration = Duration::from_secs(1);
/// Default [`CoalescerConfig::max_pending`]: about 10 MB of paths.
pub const MAX_PENDING: usize = 50_000;

impl CoalescerConfig {
    /// The defaults for a quiet period; `max_delay` is at least ten quiet
    /// periods.
    pub fn with_quiet(quiet: Duration) -> CoalescerConfig {
        CoalescerConfig {
            quiet,
            max_delay: MAX_DELAY.max(quiet * 10),
            max_pending: MAX_PENDING,
        }
    }
}

/// One filesystem event, on a set path (relative to `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Data was written (or the file was truncated).
    Written(Vec<u8>),
    /// A file open for writing was closed.
    Closed(Vec<u8>),
    /// Metadata changed: mode, owner, times, link count.
    Attrib(Vec<u8>),
    /// A path was created: a file (its data follows) or a directory.
    Created { path: Vec<u8>, dir: bool },
    /// A path was deleted or moved away; `tree` unless it is known not to
    /// be a directory.
    Removed { path: Vec<u8>, tree: bool },
    /// A path was moved here (from inside or outside the set).
    MovedTo(Vec<u8>),
    /// Events were lost under this root (`None`: under every root).
    Lost(Option<Vec<u8>>),
    /// Examine this path (and, with `tree`, what lies below it) again at
    /// the given time.
    Recheck { path: Vec<u8>, tree: bool, at: Instant },
}

impl Event {
    /// The path the event is about (`None` for lost events).
    pub fn path(&self) -> Option<&[u8]> {
        match self {
            Event::Written(p) | Event::Closed(p) | Event::Attrib(p) | Event::MovedTo(p) => Some(p),
            Event::Created { path, .. } | Event::Removed { path, .. } | Event::Recheck { path, .. } => Some(path),
            Event::Lost(_) => None,
        }
    }
}

/// How long a deletion (or the moved-from half of a rename) waits for
/// the moved-to half; see [`Coalescer::poll_ready`].
pub const RENAME_GRACE: Duration = Duration::from_millis(20);

/// Targets that are ready, for one scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub targets: Vec<Target>,
    /// The earliest filesystem event behind these targets (for the
    /// event-to-commit lag); `None` when the batch holds only re-checks.
    pub first_event: Option<Instant>,
    /// Roots re-scanned because events were lost or too many paths were
    /// pending (also among `targets`).
    pub rescanned_roots: usize,
}

/// A pending path.
#[derive(Debug, Clone, Copy)]
struct Pending {
    scope: Scope,
    /// Created, deleted or renamed: the parent directory changed too.
    namespace: bool,
    first: Instant,
    /// The first filesystem event (a re-check is none).
    first_change: Option<Instant>,
    /// Ready at this time regardless of further writes.
    hard: Option<Instant>,
    /// Ready at this time unless written again.
    soft: Option<Instant>,
}

impl Pending {
    fn deadline(&self) -> Instant {
        match (self.hard, self.soft) {
            (Some(h), Some(s)) => h.min(s),
            (Some(t), None) | (None, Some(t)) => t,
            // Never constructed without one of them.
            (None, None) => self.first,
        }
    }
}

/// A root whose paths are no longer tracked: it is re-scanned as a whole.
#[derive(Debug, Clone, Copy)]
struct Flood {
    first: Instant,
    last: Instant,
    /// Events were lost: re-scan at once.
    now: bool,
}

/// The coalescer of one set. See the module documentation.
#[derive(Debug)]
pub struct Coalescer {
    cfg: CoalescerConfig,
    /// The set's roots as set paths, and whether each is a directory.
    roots: Vec<(Vec<u8>, bool)>,
    paths: HashMap<Vec<u8>, Pending>,
    floods: BTreeMap<usize, Flood>,
}

impl Coalescer {
    /// A coalescer for a set with these roots (set paths, with whether each
    /// is a directory root).
    pub fn new(cfg: CoalescerConfig, roots: Vec<(Vec<u8>, bool)>) -> Coalescer {
        Coalescer {
            cfg,
            roots,
            paths: HashMap::new(),
            floods: BTreeMap::new(),
        }
    }

    /// Paths tracked now (roots being re-scanned as a whole not counted).
    pub fn pending(&self) -> usize {
        self.paths.len()
    }

    /// Roots waiting for a whole re-scan.
    pub fn flooded(&self) -> usize {
        self.floods.len()
    }

    /// Whether nothing is pending.
    pub fn is_idle(&self) -> bool {
        self.paths.is_empty() && self.floods.is_empty()
    }

    /// The index of the root `path` lies in (a directory root covers what
    /// lies below it).
    fn root_of(&self, path: &[u8]) -> Option<usize> {
        self.roots.iter().position(|(r, dir)| covers(r, *dir, path))
    }

    /// Takes one event seen at `now`.
    pub fn push(&mut self, now: Instant, event: Event) {
        let recheck = matches!(event, Event::Recheck { .. });
        let (path, scope, namespace, hard, soft) = match event {
            Event::Lost(root) => {
                let roots: Vec<usize> = match root {
                    Some(r) => self.root_of(&r).into_iter().collect(),
                    None => (0..self.roots.len()).collect(),
                };
                for r in roots {
                    self.flood(r, now, now, true);
                }
                return;
            }
            Event::Written(p) | Event::Attrib(p) => (p, Scope::Path, false, None, true),
            Event::Closed(p) => (p, Scope::Path, false, Some(now), false),
            Event::Created { path, dir: false } => (path, Scope::Path, true, None, true),
            Event::Created { path, dir: true } | Event::MovedTo(path) => (path, Scope::Tree, true, Some(now), false),
            Event::Removed { path, tree } => {
                let scope = if tree { Scope::Tree } else { Scope::Path };
                (path, scope, true, Some(now + RENAME_GRACE), false)
            }
            Event::Recheck { path, tree, at } => {
                let scope = if tree { Scope::Tree } else { Scope::Path };
                (path, scope, false, Some(at), false)
            }
        };
        let Some(root) = self.root_of(&path) else { return };
        if let Some(f) = self.floods.get_mut(&root) {
            f.last = f.last.max(now);
            return;
        }
        let cfg = self.cfg;
        let p = self.paths.entry(path).or_insert(Pending {
            scope,
            namespace,
            first: now,
            first_change: None,
            hard: None,
            soft: None,
        });
        p.scope = p.scope.max(scope);
        p.namespace |= namespace;
        p.first = p.first.min(now);
        if !recheck {
            p.first_change = Some(p.first_change.map_or(now, |t| t.min(now)));
        }
        if let Some(h) = hard {
            p.hard = Some(p.hard.map_or(h, |old| old.min(h)));
        }
        if soft {
            p.soft = Some((now + cfg.quiet).min(p.first + cfg.max_delay));
        }
        if self.paths.len() > self.cfg.max_pending {
            self.overflow(now);
        }
    }

    /// Too many paths: the roots holding the most pending paths become
    /// re-scans, until at most half the budget is left tracked.
    fn overflow(&mut self, now: Instant) {
        let mut counts = vec![0usize; self.roots.len()];
        for path in self.paths.keys() {
            if let Some(r) = self.root_of(path) {
                counts[r] += 1;
            }
        }
        let mut order: Vec<usize> = (0..self.roots.len()).collect();
        order.sort_by_key(|r| std::cmp::Reverse(counts[*r]));
        let mut left = self.paths.len();
        for r in order {
            if left <= self.cfg.max_pending / 2 || counts[r] == 0 {
                break;
            }
            // `flood` takes the root's pending paths and their first event.
            self.flood(r, now, now, false);
            left -= counts[r];
        }
    }

    fn flood(&mut self, root: usize, first: Instant, now: Instant, at_once: bool) {
        let (prefix, dir) = self.roots[root].clone();
        let mut first = first;
        // Paths already pending under this root are covered by its re-scan.
        self.paths.retain(|p, pending| {
            let under = covers(&prefix, dir, p);
            if under && let Some(f) = pending.first_change {
                first = first.min(f);
            }
            !under
        });
        let f = self.floods.entry(root).or_insert(Flood {
            first,
            last: now,
            now: false,
        });
        f.first = f.first.min(first);
        f.last = f.last.max(now);
        f.now |= at_once;
    }

    fn flood_deadline(&self, f: &Flood) -> Instant {
        if f.now {
            f.first.min(f.last)
        } else {
            (f.last + self.cfg.quiet).min(f.first + self.cfg.max_delay)
        }
    }

    /// When the next pending target becomes ready, if anything is pending.
    pub fn next_deadline(&self) -> Option<Instant> {
        let paths = self.paths.values().map(Pending::deadline);
        let floods = self.floods.values().map(|f| self.flood_deadline(f));
        paths.chain(floods).min()
    }

    /// Removes and returns everything ready at `now`, or `None`.
    pub fn poll_ready(&mut self, now: Instant) -> Option<Batch> {
        let mut first_event: Option<Instant> = None;
        let earliest = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut targets = Vec::new();
        let ready_floods: Vec<usize> = self
            .floods
            .iter()
            .filter(|(_, f)| self.flood_deadline(f) <= now)
            .map(|(r, _)| *r)
            .collect();
        for r in &ready_floods {
            if let Some(f) = self.floods.remove(r) {
                first_event = earliest(first_event, Some(f.first));
                targets.push(Target::tree(self.roots[*r].0.clone()));
            }
        }
        // A rename is two events (moved from, moved to) that may be taken
        // from the queue apart: the half that arrived is held for
        // RENAME_GRACE and goes out with the other, so the replica never
        // sees the deletion in one pass and the new name in a later one (the
        // mass-delete guard would count it as lost).
        let any_ready = self.paths.values().any(|p| p.deadline() <= now);
        let ready: Vec<Vec<u8>> = self
            .paths
            .iter()
            .filter(|(_, p)| {
                p.deadline() <= now || (any_ready && p.namespace && p.hard.is_some_and(|h| h <= now + RENAME_GRACE))
            })
            .map(|(path, _)| path.clone())
            .collect();
        for path in ready {
            let Some(p) = self.paths.remove(&path) else { continue };
            first_event = earliest(first_event, p.first_change);
            if p.namespace
                && let Some(parent) = self.parent_in_set(&path)
            {
                targets.push(Target::path(parent));
            }
            targets.push(Target { path, scope: p.scope });
        }
        if targets.is_empty() {
            return None;
        }
        targets.sort_by(|a, b| a.path.cmp(&b.path).then(a.scope.cmp(&b.scope)));
        targets.dedup();
        Some(Batch {
            targets,
            first_event,
            rescanned_roots: ready_floods.len(),
        })
    }

    /// The parent directory of `path` if it is part of the set (the parent
    /// of a root is not).
    fn parent_in_set(&self, path: &[u8]) -> Option<Vec<u8>> {
        let r = self.root_of(path)?;
        if path == &self.roots[r].0[..] {
            return None;
        }
        let cut = path.iter().rposition(|b| *b == b'/')?;
        Some(path[..cut].to_vec())
    }
}

/// Whether `path` is the root `root` or lies below it (a directory root).
fn covers(root: &[u8], dir: bool, path: &[u8]) -> bool {
    path == root || (dir && path.len() > root.len() && path.starts_with(root) && path[root.len()] == b'/')
}

#[cfg(test)]
mod tests;
