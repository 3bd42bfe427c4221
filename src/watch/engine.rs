//! The engine thread of one set: events in, generations out. It owns the
//! set's event source, coalescer and scanner, and loops:
//!
//! 1. wait for events, or until the coalescer's next deadline, the next
//!    periodic full scan or the next poll of an unwatched subtree;
//! 2. feed the events to the coalescer (lost events: re-scan the roots);
//! 3. take the ready batch; make sure every directory about to be scanned
//!    as a tree is watched first (so nothing created in it afterwards is
//!    missed); scan the batch's targets and commit one generation;
//! 4. hand the new generation to each replica's shipping thread; schedule a re-read
//!    of what was too fresh to trust (racy window) and, with backoff, of
//!    what could not be read.
//!
//! Start-up: the source is started first, then a full stat scan runs
//! (after a clean stop it reads nothing: the quick check holds), so no
//! change between the last run and now is missed and none made during
//! the scan either. Every `rescan_interval` the full stat scan runs again
//! as the safety net.
//!
//! Directories that cannot be watched (the inotify limit, a missing root)
//! are logged with the reason and re-scanned every `unwatched_interval`
//! until they can be watched again. Upstream of this module: `scan`,
//! `index`, `config`; each replica lies behind a [`Shipper`](super::Shipper) of its own.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::coalesce::{Coalescer, CoalescerConfig, Event};
use super::queue::Queue;
use super::ship::ShipLoop;
use super::source::{Roots, Source, Watched};
use super::{CommitInfo, RunState, SetStatus, WatchOptions};
use crate::config::MirrorSet;
use crate::index::Index;
use crate::scan::{PathScanOptions, Quiet, ScanError, Scanned, Scanner, Scope, Target, show_path};

/// How often a path whose read failed is tried again (with doubling
/// delays from [`RETRY_DELAY`]) before it is left to the next full scan.
const MAX_RETRIES: u32 = 6;
const RETRY_DELAY: Duration = Duration::from_millis(250);
/// Margin added to the racy window before a fresh file is read again.
const SETTLE_MARGIN: Duration = Duration::from_millis(10);
/// Changed files larger than this are read once their change is out of the
/// racy window (at most its 100 ms later) instead of at once and again
/// after it: at hashing speeds of ~1 GB/s, reading 32 MiB takes a third of
/// the window, so waiting costs less than reading twice.
const DEFER_FRESH_ABOVE: u64 = 32 << 20;
/// The backlog line is logged at most this often.
const BACKLOG_LOG_EVERY: Duration = Duration::from_secs(10);

/// A subtree that cannot be watched, re-scanned periodically instead.
#[derive(Debug)]
struct Unwatched {
    why: String,
    next_poll: Instant,
}

pub(crate) struct Worker {
    pub set: MirrorSet,
    pub node_root: PathBuf,
    pub index: Arc<Index>,
    pub scanner: Scanner,
    pub queue: Arc<Queue>,
    pub source: Box<dyn Source>,
    pub roots: Arc<Roots>,
    pub opts: WatchOptions,
    pub status: Arc<Mutex<SetStatus>>,
    /// One shipping thread per replica: a slow one delays only itself.
    pub ships: Vec<ShipLoop>,
    coalescer: Coalescer,
    hard_links: bool,
    unwatched: BTreeMap<Vec<u8>, Unwatched>,
    retries: HashMap<Vec<u8>, u32>,
    next_full: Instant,
    /// When the backlog was last logged, and what it was.
    backlog_logged: (Instant, Option<(u64, u64)>),
    /// The state directory as a set path, when it lies inside a root: the
    /// index's own writes must not become changes to commit.
    state_path: Option<Vec<u8>>,
    /// Paths seen changing but not committed, or [`NOT_CURRENT`]: what the
    /// index's watcher probe reports (see `Index::attach_watcher`).
    current: Arc<AtomicUsize>,
}

/// The index is not kept current (start-up scan not done, or a path can
/// only be polled).
const NOT_CURRENT: usize = usize::MAX;

impl Worker {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        set: MirrorSet,
        node_root: PathBuf,
        index: Arc<Index>,
        scanner: Scanner,
        queue: Arc<Queue>,
        source: Box<dyn Source>,
        roots: Arc<Roots>,
        opts: WatchOptions,
        status: Arc<Mutex<SetStatus>>,
        ships: Vec<ShipLoop>,
    ) -> Worker {
        let cfg = CoalescerConfig {
            max_pending: opts.max_pending,
            ..CoalescerConfig::with_quiet(opts.quiet_period)
        };
        let coalescer = Coalescer::new(cfg, roots.0.iter().map(|r| (r.set_path.clone(), r.dir)).collect());
        let now = Instant::now();
        Worker {
            set,
            node_root,
            index,
            scanner,
            queue,
            source,
            roots,
            opts,
            status,
            ships,
            coalescer,
            hard_links: false,
            unwatched: BTreeMap::new(),
            retries: HashMap::new(),
            next_full: now,
            backlog_logged: (now, None),
            state_path: None,
            current: Arc::new(AtomicUsize::new(NOT_CURRENT)),
        }
    }

    /// Ignores events under `state_dir` (this node's state directory) if a
    /// root holds it, and says so: the index would otherwise be mirrored
    /// and every commit would cause another.
    pub fn exclude_state(mut self, state_dir: &std::path::Path) -> Worker {
        let state = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
        if let Some(p) = self.roots.set_path(&state) {
            tracing::warn!(
                set = %self.set.name,
                "the state directory {} lies inside the set: its changes are not watched (exclude it from the set)",
                state_dir.display()
            );
            self.state_path = Some(p);
        }
        self
    }

    /// Whether an event is about a path the set never holds.
    fn ignored(&self, ev: &Event) -> bool {
        let Some(p) = ev.path() else { return false };
        let name = p.rsplit(|b| *b == b'/').next().unwrap_or(p);
        crate::scan::is_temp_name(name)
            || self
                .state_path
                .as_ref()
                .is_some_and(|s| p == &s[..] || (p.starts_with(s) && p.get(s.len()) == Some(&b'/')))
    }

    fn set_status(&self, f: impl FnOnce(&mut SetStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Runs until asked to stop. `Err` when the set cannot go on (the
    /// index failed in a way a retry cannot mend).
    pub fn run(mut self) -> Result<(), String> {
        let name = self.set.name.clone();
        let probe: crate::index::WatcherProbe = {
            let (current, queue) = (self.current.clone(), self.queue.clone());
            // The queue first: the engine settles it only after storing
            // its own count (see `report_current`).
            Arc::new(move || {
                let queued = queue.queued();
                match current.load(Ordering::Acquire) {
                    NOT_CURRENT => None,
                    n => Some(n + queued),
                }
            })
        };
        self.index.attach_watcher(&name, Some(probe));
        let r = self.main_loop();
        self.index.attach_watcher(&name, None);
        match &r {
            Ok(()) => {
                self.log_backlog(true);
                self.set_status(|s| s.state = RunState::Stopped);
                tracing::info!(set = %name, "stopped");
            }
            Err(e) => {
                self.set_status(|s| s.state = RunState::Failed(e.clone()));
                tracing::error!(set = %name, "watch failed: {e}");
            }
        }
        r
    }

    fn main_loop(&mut self) -> Result<(), String> {
        let now = Instant::now();
        for r in self.roots.0.clone() {
            self.ensure_watched(&r.set_path, now);
        }
        self.full_scan("start-up")?;
        self.report_current();
        self.set_status(|s| s.state = RunState::Watching);
        loop {
            let deadline = [
                self.coalescer.next_deadline(),
                Some(self.next_full),
                self.unwatched.values().map(|u| u.next_poll).min(),
                self.backlog_due(),
            ]
            .into_iter()
            .flatten()
            .min();
            let drained = self.queue.wait(deadline);
            if drained.stop {
                return Ok(());
            }
            if let Some(why) = drained.failed {
                return Err(format!("events are no longer received ({why})"));
            }
            let now = Instant::now();
            for ev in drained.items {
                if !self.ignored(&ev) {
                    self.coalescer.push(now, ev);
                }
            }
            if drained.lost {
                tracing::warn!(set = %self.set.name, "events were lost (queue overflow); re-scanning the roots");
                self.coalescer.push(now, Event::Lost(None));
            }
            if now >= self.next_full {
                self.full_scan("periodic")?;
                self.report_current();
                continue;
            }
            let mut extra = self.due_polls(now);
            let batch = self.coalescer.poll_ready(now);
            let first = batch.as_ref().and_then(|b| b.first_event);
            if let Some(b) = batch {
                if b.rescanned_roots > 0 {
                    tracing::info!(set = %self.set.name, roots = b.rescanned_roots, "re-scanning whole roots (lost events or too many pending paths)");
                }
                extra.extend(b.targets);
            }
            if !extra.is_empty() {
                self.run_batch(extra, first)?;
            }
            self.log_backlog(false);
            let (pending, flooded) = (self.coalescer.pending(), self.coalescer.flooded());
            self.report_current();
            self.set_status(|s| {
                s.pending_paths = pending;
                s.flooded_roots = flooded;
            });
        }
    }

    /// Tells the index's watcher probe how current the index is (see
    /// `Index::attach_watcher`): not at all while some path can only be
    /// polled. Settles the queue's taken events: they are committed or
    /// counted here now.
    fn report_current(&self) {
        let pending = self.coalescer.pending() + self.coalescer.flooded();
        let current = if self.unwatched.is_empty() {
            pending
        } else {
            NOT_CURRENT
        };
        self.current.store(current, Ordering::Release);
        self.queue.settled();
    }

    /// Watches a tree (again); what cannot be watched is polled instead.
    fn ensure_watched(&mut self, path: &[u8], now: Instant) {
        match self.source.watch_tree(path) {
            Ok(Watched::Yes) => {
                if self.unwatched.remove(path).is_some() {
                    tracing::info!(set = %self.set.name, "/{} is watched again", show_path(path));
                    self.publish_unwatched();
                }
            }
            Ok(Watched::Missing) => {
                if self.roots.0.iter().any(|r| r.set_path == path) {
                    self.unwatch(path.to_vec(), "it does not exist".into(), now);
                }
            }
            Err(u) => self.unwatch(path.to_vec(), u.why, now),
        }
    }

    fn unwatch(&mut self, path: Vec<u8>, why: String, now: Instant) {
        if self.unwatched.contains_key(&path) {
            return;
        }
        tracing::warn!(
            set = %self.set.name,
            "cannot watch /{}: {why}; re-scanning it every {:?} instead",
            show_path(&path),
            self.opts.unwatched_interval
        );
        self.unwatched.insert(
            path,
            Unwatched {
                why,
                next_poll: now + self.opts.unwatched_interval,
            },
        );
        self.publish_unwatched();
    }

    fn publish_unwatched(&self) {
        let list: Vec<String> = self
            .unwatched
            .iter()
            .map(|(p, u)| format!("/{}: {}", show_path(p), u.why))
            .collect();
        self.set_status(|s| s.unwatched = list);
    }

    /// Unwatched subtrees whose poll is due: tried again, and scanned.
    fn due_polls(&mut self, now: Instant) -> Vec<Target> {
        let due: Vec<Vec<u8>> = self
            .unwatched
            .iter()
            .filter(|(_, u)| u.next_poll <= now)
            .map(|(p, _)| p.clone())
            .collect();
        let mut targets = Vec::with_capacity(due.len());
        for p in due {
            if let Some(u) = self.unwatched.get_mut(&p) {
                u.next_poll = now + self.opts.unwatched_interval;
            }
            // A missing root costs one lstat per poll until it appears (its
            // removal from the index was committed when it went missing).
            let exists = self
                .roots
                .local(&p)
                .is_some_and(|(_, local)| std::fs::symlink_metadata(local).is_ok());
            if !exists {
                continue;
            }
            self.ensure_watched(&p, now);
            targets.push(Target::tree(p));
        }
        targets
    }

    /// Scans one batch of targets and commits it.
    fn run_batch(&mut self, targets: Vec<Target>, first_event: Option<Instant>) -> Result<(), String> {
        let now = Instant::now();
        // Watch before scanning: whatever the scan does not see raises an event.
        for t in targets.iter().filter(|t| t.scope == Scope::Tree) {
            if let Some((_, local)) = self.roots.local(&t.path)
                && local.is_dir()
            {
                self.ensure_watched(&t.path, now);
            }
        }
        let popts = PathScanOptions {
            hard_links: self.hard_links,
            defer_fresh_above: Some(DEFER_FRESH_ABOVE),
        };
        let result = self
            .scanner
            .scan_paths(&self.index, &self.set, &self.node_root, &targets, popts, &Quiet);
        match result {
            Ok(ps) => {
                if let Some(why) = &ps.full {
                    tracing::info!(set = %self.set.name, "full stat scan instead of {} paths: {why}", targets.len());
                    self.hard_links = ps.scanned.report.hardlinks > 0;
                }
                for (path, wait) in ps.deferred {
                    let at = now + wait + SETTLE_MARGIN;
                    self.coalescer.push(now, Event::Recheck { path, tree: false, at });
                }
                self.committed(ps.scanned, first_event, ps.full.is_some());
                Ok(())
            }
            Err(e) => self.scan_failed(e, &targets),
        }
    }

    /// A scan failed as a whole: try its targets again later, or give up.
    fn scan_failed(&mut self, e: ScanError, targets: &[Target]) -> Result<(), String> {
        if !e.retryable() {
            return Err(format!("scan failed: {e}"));
        }
        tracing::warn!(set = %self.set.name, "scan failed: {e}; trying again in {RETRY_DELAY:?}");
        let at = Instant::now() + RETRY_DELAY;
        for t in targets {
            let ev = Event::Recheck {
                path: t.path.clone(),
                tree: t.scope == Scope::Tree,
                at,
            };
            self.coalescer.push(Instant::now(), ev);
        }
        Ok(())
    }

    /// A full stat scan of the set (start-up, periodic).
    fn full_scan(&mut self, why: &str) -> Result<(), String> {
        // Pending targets stay: the scan covers them, but a new directory
        // among them must still be watched, and re-checking is cheap.
        self.retries.clear();
        let started = Instant::now();
        let scanned = loop {
            match self.scanner.scan_set(&self.index, &self.set, &self.node_root, &Quiet) {
                Ok(s) => break s,
                Err(e) if e.retryable() => {
                    tracing::warn!(set = %self.set.name, "{why} scan failed: {e}; trying again in 1 s");
                    if self.queue.wait(Some(Instant::now() + Duration::from_secs(1))).stop {
                        return Ok(());
                    }
                }
                Err(e) => return Err(format!("{why} scan failed: {e}")),
            }
        };
        let r = &scanned.report;
        tracing::info!(
            set = %self.set.name,
            files = r.files,
            unchanged = r.files_unchanged,
            files_read = r.files_read,
            bytes_read = r.bytes_read,
            new = r.new,
            changed = r.changed,
            deleted = r.deleted,
            generation = r.generation,
            previous = r.previous_generation,
            seconds = format!("{:.3}", started.elapsed().as_secs_f64()),
            "{why} scan"
        );
        self.hard_links = r.hardlinks > 0;
        self.next_full = Instant::now() + self.opts.rescan_interval;
        let generation = r.generation;
        let report = r.clone();
        self.committed(scanned, None, true);
        self.set_status(|s| {
            s.full_scans += 1;
            s.last_full_scan = Some(report);
        });
        // Shipped after every full scan, changed or not.
        for ship in &self.ships {
            ship.request(generation);
        }
        Ok(())
    }

    /// After a commit: log it, ship it, and schedule re-reads.
    fn committed(&mut self, scanned: Scanned, first_event: Option<Instant>, full: bool) {
        let Scanned { report: r, unsettled } = scanned;
        let now = Instant::now();
        let paths = r.new + r.changed + r.deleted;
        let lag = first_event.map(|t| now.saturating_duration_since(t));
        if paths > 0 {
            let backlog = self.backlog_generations(r.generation);
            tracing::info!(
                set = %self.set.name,
                generation = r.generation,
                paths,
                new = r.new,
                changed = r.changed,
                deleted = r.deleted,
                files_read = r.files_read,
                bytes_read = r.bytes_read,
                lag_ms = lag.map(|l| format!("{:.1}", l.as_secs_f64() * 1000.0)).unwrap_or_default(),
                backlog_generations = backlog,
                "committed"
            );
            for ship in &self.ships {
                ship.request(r.generation);
            }
        }
        for e in &r.errors {
            tracing::warn!(set = %self.set.name, "/{}: {}", show_path(&e.path), e.reason);
        }
        self.set_status(|s| {
            s.generation = r.generation;
            s.batches += u64::from(!full);
            if paths > 0 {
                s.generations_committed += 1;
                s.last_commit = Some(CommitInfo {
                    generation: r.generation,
                    paths,
                    files_read: r.files_read,
                    bytes_read: r.bytes_read,
                    lag,
                });
            }
        });
        // What was too fresh to trust is read again once the racy window
        // has passed: its fingerprint is then recorded, and a restart does
        // not read it again.
        let at = now + self.scanner_racy_window() + SETTLE_MARGIN;
        for path in unsettled {
            self.coalescer.push(now, Event::Recheck { path, tree: false, at });
        }
        for e in r.errors {
            self.retry(e.path, now);
        }
        for m in r.missing_roots {
            self.unwatch(m, "it does not exist".into(), now);
        }
    }

    fn scanner_racy_window(&self) -> Duration {
        self.opts.scan.racy_window
    }

    fn retry(&mut self, path: Vec<u8>, now: Instant) {
        let n = self.retries.entry(path.clone()).or_insert(0);
        *n += 1;
        if *n > MAX_RETRIES {
            tracing::warn!(
                set = %self.set.name,
                "/{}: giving up after {MAX_RETRIES} tries; the next full scan tries again",
                show_path(&path)
            );
            self.retries.remove(&path);
            return;
        }
        let at = now + RETRY_DELAY * 2u32.pow(*n - 1);
        self.coalescer.push(now, Event::Recheck { path, tree: false, at });
    }

    /// Generations committed that the peer has not acknowledged (with no
    /// shipper: since start-up).
    fn backlog_generations(&self, generation: u64) -> u64 {
        let s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let base = self.slowest_ack().unwrap_or(s.start_generation);
        generation.saturating_sub(base)
    }

    fn backlog_due(&self) -> Option<Instant> {
        (self.backlog_logged.1 != Some(self.backlog_key())).then_some(self.backlog_logged.0 + BACKLOG_LOG_EVERY)
    }

    fn backlog_key(&self) -> (u64, u64) {
        let s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let acked = self.slowest_ack().unwrap_or(s.start_generation);
        (s.generation, acked)
    }

    /// The acknowledged generation of the replica furthest behind (`None`
    /// when one has acknowledged nothing since start-up, or no replica).
    fn slowest_ack(&self) -> Option<u64> {
        self.ships.iter().map(|sh| sh.status().0).min().flatten()
    }

    /// Logs the backlog (generations and paths not acknowledged) when it
    /// changed, at most every [`BACKLOG_LOG_EVERY`] (or now, with `force`).
    fn log_backlog(&mut self, force: bool) {
        let now = Instant::now();
        let key = self.backlog_key();
        if self.backlog_logged.1 == Some(key) || (!force && now < self.backlog_logged.0 + BACKLOG_LOG_EVERY) {
            return;
        }
        self.backlog_logged = (now, Some(key));
        let (generation, base) = key;
        let paths = match self.index.changes_since(&self.set.name, base) {
            Ok(Some(p)) => p.len().to_string(),
            Ok(None) => "all (log trimmed)".into(),
            Err(e) => format!("unknown ({e})"),
        };
        let generations = generation.saturating_sub(base);
        if !self.ships.is_empty() {
            tracing::info!(set = %self.set.name, generations, paths, "backlog: not yet acknowledged by the peer");
        } else {
            tracing::info!(set = %self.set.name, generations, paths, "backlog: committed since start-up, not shipped (no shipper)");
        }
    }
}
