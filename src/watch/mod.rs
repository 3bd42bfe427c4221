//! Continuous mirroring, the local half: filesystem events of a node's
//! sets turned into committed index generations, fast and without ever
//! missing a change. The peer is reached only through the [`Shipper`]
//! seam, called after each commit.
//!
//! * `source.rs`, `inotify.rs`, `fanotify.rs`: where events come from
//!   (inotify watches, or one fanotify mark per filesystem as root);
//! * `queue.rs`: the bounded hand-over to the engine thread;
//! * `coalesce.rs`: pure logic deciding when a changed path is ready
//!   (closed, quiet, deleted, renamed) and batching what is;
//! * `engine.rs`: the per-set thread: start-up stat scan, batches through
//!   the scanner's targeted mode, periodic full stat scans, polls of what
//!   cannot be watched;
//! * `ship.rs`: the [`Shipper`] trait and the thread that calls it.
//!
//! [`Engine`] runs any number of sets, each on its own threads, and can
//! start and stop them one by one; [`WatchHandle`] reports a set's state
//! and backlog. The durable queue is the index's generation log: nothing
//! is kept only in memory that a restart's stat scan would not find again.
//!
//! Upstream of this module: `config`, `scan`, `index`.

mod coalesce;
mod engine;
mod fanotify;
mod inotify;
mod queue;
mod ship;
mod source;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use thiserror::Error;

pub use coalesce::{Batch, Coalescer, CoalescerConfig, Event};
pub use ship::{RecordingShipper, ShipError, ShipOutcome, Shipper, Shipping};
pub use source::EventSource;

use crate::config::{MirrorSet, NodeConf};
use crate::index::{Index, IndexError};
use crate::scan::{ScanError, ScanOptions, ScanReport, Scanner};

/// Default [`WatchOptions::unwatched_interval`].
pub const UNWATCHED_INTERVAL: Duration = Duration::from_secs(30);

/// How a set is watched.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub events: EventSource,
    /// See `quiet_period` in `docs/CONFIG.md`.
    pub quiet_period: Duration,
    /// Full stat scans, the safety net.
    pub rescan_interval: Duration,
    /// Paths tracked before a set's busiest roots are re-scanned as a
    /// whole instead (bounds memory under a write storm).
    pub max_pending: usize,
    /// Events queued between the source and the engine before further
    /// ones are dropped (and the roots re-scanned).
    pub queue_capacity: usize,
    /// How often a subtree that cannot be watched is re-scanned.
    pub unwatched_interval: Duration,
    pub scan: ScanOptions,
}

impl WatchOptions {
    /// The options a node's configuration gives.
    pub fn for_node(conf: &NodeConf) -> WatchOptions {
        WatchOptions {
            events: EventSource::Auto,
            quiet_period: conf.quiet_period,
            rescan_interval: conf.rescan_interval,
            max_pending: coalesce::MAX_PENDING,
            queue_capacity: queue::CAPACITY,
            unwatched_interval: UNWATCHED_INTERVAL,
            scan: ScanOptions::default(),
        }
    }
}

/// Why a set could not be watched.
#[derive(Debug, Error)]
pub enum WatchError {
    #[error("set {set}: {source}")]
    Index { set: String, source: IndexError },
    #[error("set {set}: {source}")]
    Scan { set: String, source: ScanError },
    #[error("set {set}: cannot receive filesystem events: {why}")]
    Events { set: String, why: String },
    #[error("set {0} is already watched")]
    AlreadyWatched(String),
    #[error("set {0} is no longer watched")]
    NotWatched(String),
    #[error("cannot start a thread: {0}")]
    Thread(String),
}

impl WatchError {
    /// Whether starting the set again later can help.
    pub fn retryable(&self) -> bool {
        match self {
            WatchError::Index { source, .. } => source.retryable(),
            WatchError::Scan { source, .. } => source.retryable(),
            WatchError::Thread(_) => true,
            WatchError::Events { .. } | WatchError::AlreadyWatched(_) | WatchError::NotWatched(_) => false,
        }
    }
}

/// Where a set's engine is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RunState {
    /// The start-up scan is running.
    #[default]
    Starting,
    Watching,
    Stopped,
    /// Stopped by an error a retry cannot mend (see the log).
    Failed(String),
}

/// One commit that raised the generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub generation: u64,
    /// Paths new, changed or deleted.
    pub paths: u64,
    pub files_read: u64,
    pub bytes_read: u64,
    /// From the first event behind the batch to the commit (`None` for a
    /// full scan).
    pub lag: Option<Duration>,
}

/// A snapshot of one set's engine.
#[derive(Debug, Clone, Default)]
pub struct SetStatus {
    pub set: String,
    /// `inotify` or `fanotify`.
    pub events: &'static str,
    pub state: RunState,
    /// The generation when the engine started, and now.
    pub start_generation: u64,
    pub generation: u64,
    /// Commits that raised the generation, event batches scanned, and full
    /// scans (start-up included).
    pub generations_committed: u64,
    pub batches: u64,
    pub full_scans: u64,
    pub last_commit: Option<CommitInfo>,
    pub last_full_scan: Option<ScanReport>,
    /// Paths waiting in the coalescer, and roots waiting for a re-scan.
    pub pending_paths: usize,
    pub flooded_roots: usize,
    /// Subtrees that cannot be watched (re-scanned periodically), with why.
    pub unwatched: Vec<String>,
}

/// What the peer has not acknowledged yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub generation: u64,
    /// The generation the peer acknowledged last; `None` when nothing was
    /// acknowledged since start-up (or there is no shipper), in which case
    /// the backlog counts from the generation at start-up.
    pub acked: Option<u64>,
    pub generations: u64,
    /// Distinct paths changed in those generations; `None` when the log no
    /// longer reaches back that far (the peer needs a full comparison).
    pub paths: Option<u64>,
}

/// A handle on one watched set: cheap to clone, usable from any thread.
/// It does not keep the set's index open: once the set is stopped its
/// status stays readable, its backlog does not.
#[derive(Clone)]
pub struct WatchHandle {
    set: String,
    status: Arc<Mutex<SetStatus>>,
    index: std::sync::Weak<Index>,
    /// Each replica's shipping, by peer name (one in a two-node cluster).
    ships: Vec<(String, ship::ShipReader)>,
}

/// One replica a set is shipped to: the peer's name and its shipper.
pub struct Replica {
    pub peer: String,
    pub shipper: Box<dyn Shipper>,
}

/// The name [`Engine::start_set`] gives its one replica.
pub const THE_PEER: &str = "peer";

impl std::fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WatchHandle({})", self.set)
    }
}

impl WatchHandle {
    pub fn set(&self) -> &str {
        &self.set
    }

    /// A snapshot of the engine's state.
    pub fn status(&self) -> SetStatus {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every replica is shipped to now (a retry waiting for its backoff
    /// too): a peer has just caught up by other means, and what it pushed
    /// back (conflict copies) was committed here by the receiver, not the
    /// watcher, so the other replicas must be sent it as well (each call
    /// sends the index's newest; one in step costs a round trip). Nothing
    /// without a shipper.
    pub fn ship_now(&self) {
        let generation = self.status().generation;
        for (_, s) in &self.ships {
            s.request_now(generation);
        }
    }

    /// Pushes the newest generation to the replica `peer` now (backoff
    /// reset), the others untouched: that peer has just returned. What it
    /// lacks is computed from its own acknowledged position, so it gets
    /// everything it missed. Returns whether `peer` is a replica here.
    pub fn push_again(&self, peer: &str) -> bool {
        let Some(s) = self.ship_to(Some(peer)) else {
            return false;
        };
        s.request_now(self.status().generation);
        true
    }

    /// The replicas this set is shipped to, by peer name.
    pub fn replicas(&self) -> Vec<String> {
        self.ships.iter().map(|(p, _)| p.clone()).collect()
    }

    fn ship_to(&self, peer: Option<&str>) -> Option<&ship::ShipReader> {
        match peer {
            Some(p) => self.ships.iter().find(|(n, _)| n == p).map(|(_, s)| s),
            None => self.ships.first().map(|(_, s)| s),
        }
    }

    /// How shipping stands, and how many calls were made (the first
    /// replica's: the only one in a two-node cluster).
    pub fn shipping(&self) -> (Shipping, u64) {
        self.shipping_to(None)
    }

    /// As [`WatchHandle::shipping`], for the replica `peer` (`None`: the
    /// first).
    pub fn shipping_to(&self, peer: Option<&str>) -> (Shipping, u64) {
        match self.ship_to(peer) {
            Some(s) => {
                let (_, state, calls) = s.status();
                (state, calls)
            }
            None => (Shipping::Disabled, 0),
        }
    }

    /// Why shipping stopped, when a peer refused (see [`ShipError::refused`]).
    pub fn refused(&self) -> Option<String> {
        self.ships.iter().find_map(|(_, s)| s.refused())
    }

    /// What the replica furthest behind has not acknowledged (reads the
    /// generation log).
    ///
    /// # Errors
    /// [`WatchError::NotWatched`] once the set is stopped; index storage
    /// errors.
    pub fn backlog(&self) -> Result<Backlog, WatchError> {
        // `None` (nothing acknowledged since start-up) sorts first.
        let slowest = self.ships.iter().map(|(_, s)| s.status().0).min().flatten();
        self.backlog_from(slowest)
    }

    /// What the replica `peer` has not acknowledged.
    ///
    /// # Errors
    /// As [`WatchHandle::backlog`].
    pub fn backlog_to(&self, peer: &str) -> Result<Backlog, WatchError> {
        self.backlog_from(self.ship_to(Some(peer)).and_then(|s| s.status().0))
    }

    fn backlog_from(&self, acked: Option<u64>) -> Result<Backlog, WatchError> {
        let index = self
            .index
            .upgrade()
            .ok_or_else(|| WatchError::NotWatched(self.set.clone()))?;
        let err = |source| WatchError::Index {
            set: self.set.clone(),
            source,
        };
        let generation = index.generation(&self.set).map_err(err)?;
        let base = acked.unwrap_or_else(|| self.status().start_generation);
        let paths = index
            .changes_since(&self.set, base)
            .map_err(err)?
            .map(|p| p.len() as u64);
        Ok(Backlog {
            generation,
            acked,
            generations: generation.saturating_sub(base),
            paths,
        })
    }
}

/// A set's engine stopped: `Ok` when asked to, or the error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub set: String,
    pub result: Result<(), String>,
}

struct Running {
    handle: WatchHandle,
    queue: Arc<queue::Queue>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    fn stop(mut self) {
        self.queue.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The watch engine of one node: any number of sets, each with its own
/// event source and thread. Dropping it stops every set.
pub struct Engine {
    node_root: PathBuf,
    state_dir: PathBuf,
    opts: WatchOptions,
    notices: Option<mpsc::Sender<Notice>>,
    sets: BTreeMap<String, Running>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Engine({:?})", self.sets.keys().collect::<Vec<_>>())
    }
}

/// A set watched by some engine of this process (released when the
/// engine's thread for the set ends, with its hold on the index).
struct WatchClaim(std::path::PathBuf);

static WATCHED: Mutex<Vec<std::path::PathBuf>> = Mutex::new(Vec::new());

impl WatchClaim {
    fn take(path: std::path::PathBuf) -> Result<WatchClaim, std::path::PathBuf> {
        let mut w = WATCHED.lock().unwrap_or_else(|p| p.into_inner());
        if w.contains(&path) {
            return Err(path);
        }
        w.push(path.clone());
        Ok(WatchClaim(path))
    }
}

impl Drop for WatchClaim {
    fn drop(&mut self) {
        WATCHED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|p| *p != self.0);
    }
}

impl Engine {
    /// An engine for the node whose files lie under `node_root` and whose
    /// indexes live in `state_dir` (`NodeConf::root` and `state`).
    pub fn new(node_root: &Path, state_dir: &Path, opts: WatchOptions) -> Engine {
        Engine {
            node_root: node_root.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
            opts,
            notices: None,
            sets: BTreeMap::new(),
        }
    }

    /// Sends a [`Notice`] here whenever a set's engine ends.
    pub fn with_notices(mut self, tx: mpsc::Sender<Notice>) -> Engine {
        self.notices = Some(tx);
        self
    }

    /// Starts watching `set`: opens its index (held until the set is
    /// stopped), starts its event source, and starts its thread, which
    /// first runs a full stat scan. `shipper` is called after every commit
    /// that raised the generation; `None` ships nothing.
    ///
    /// # Errors
    /// The index cannot be opened (for instance another process holds
    /// it), the event source or a thread cannot be started, or the set is
    /// already watched.
    pub fn start_set(&mut self, set: &MirrorSet, shipper: Option<Box<dyn Shipper>>) -> Result<WatchHandle, WatchError> {
        let replicas = shipper.map(|shipper| Replica {
            peer: THE_PEER.to_string(),
            shipper,
        });
        self.start_set_to(set, replicas.into_iter().collect())
    }

    /// As [`Engine::start_set`], shipping to every one of `replicas`, each
    /// on a thread of its own with its own acknowledged generation and
    /// backoff: a replica that is slow or away delays only itself.
    ///
    /// # Errors
    /// As [`Engine::start_set`].
    pub fn start_set_to(&mut self, set: &MirrorSet, replicas: Vec<Replica>) -> Result<WatchHandle, WatchError> {
        if self.sets.contains_key(&set.name) {
            return Err(WatchError::AlreadyWatched(set.name.clone()));
        }
        let name = set.name.clone();
        // The index is shared within the process (the receiver may serve a
        // pull of this set from it), but one watcher per set at a time.
        let claim = WatchClaim::take(self.state_dir.join("sets").join(format!("{name}.redb"))).map_err(|path| {
            WatchError::Index {
                set: name.clone(),
                source: IndexError::InUse { path },
            }
        })?;
        let index = Index::shared_set(&self.state_dir, &set.name).map_err(|source| WatchError::Index {
            set: name.clone(),
            source,
        })?;
        let start_generation = index.generation(&set.name).map_err(|source| WatchError::Index {
            set: name.clone(),
            source,
        })?;
        let scanner = Scanner::new(&self.opts.scan).map_err(|source| WatchError::Scan {
            set: name.clone(),
            source,
        })?;
        let queue = Arc::new(queue::Queue::new(self.opts.queue_capacity));
        let roots = Arc::new(source::Roots::new(set, &self.node_root));
        let src = source::start(self.opts.events, roots.clone(), queue.clone())
            .map_err(|why| WatchError::Events { set: name.clone(), why })?;
        let ships = replicas
            .into_iter()
            .map(|r| {
                ship::ShipLoop::start(r.shipper, set.clone(), index.clone(), &r.peer)
                    .map(|l| (r.peer, l))
                    .map_err(WatchError::Thread)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let status = Arc::new(Mutex::new(SetStatus {
            set: name.clone(),
            events: src.name(),
            start_generation,
            generation: start_generation,
            ..SetStatus::default()
        }));
        let handle = WatchHandle {
            set: name.clone(),
            status: status.clone(),
            index: Arc::downgrade(&index),
            ships: ships.iter().map(|(p, l)| (p.clone(), l.reader())).collect(),
        };
        tracing::info!(
            set = %name,
            events = src.name(),
            roots = roots.0.len(),
            "watching{}",
            if ships.is_empty() { "; nothing is shipped (no shipper)" } else { "" }
        );
        let worker = engine::Worker::new(
            set.clone(),
            self.node_root.clone(),
            index,
            scanner,
            queue.clone(),
            src,
            roots,
            self.opts.clone(),
            status,
            ships.into_iter().map(|(_, l)| l).collect(),
        )
        .exclude_state(&self.state_dir);
        let notices = self.notices.clone();
        let thread = std::thread::Builder::new()
            .name(format!("hamirror-watch-{name}"))
            .spawn(move || {
                let _claim = claim;
                let set = worker.set.name.clone();
                let result = worker.run();
                if let Some(tx) = notices {
                    let _ = tx.send(Notice { set, result });
                }
            })
            .map_err(|e| WatchError::Thread(e.to_string()))?;
        self.sets.insert(
            name,
            Running {
                handle: handle.clone(),
                queue,
                thread: Some(thread),
            },
        );
        Ok(handle)
    }

    /// Stops watching a set (after the batch in progress) and closes its
    /// index. Returns whether it was watched.
    pub fn stop_set(&mut self, name: &str) -> bool {
        match self.sets.remove(name) {
            Some(r) => {
                r.stop();
                true
            }
            None => false,
        }
    }

    /// The handle of a watched set.
    pub fn handle(&self, name: &str) -> Option<WatchHandle> {
        self.sets.get(name).map(|r| r.handle.clone())
    }

    /// The handles of every watched set, by name.
    pub fn handles(&self) -> Vec<WatchHandle> {
        self.sets.values().map(|r| r.handle.clone()).collect()
    }

    /// Stops every set.
    pub fn stop(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        // Ask every set first, then wait: they stop in parallel.
        for r in self.sets.values() {
            r.queue.stop();
        }
        for (_, r) in std::mem::take(&mut self.sets) {
            r.stop();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop_all();
    }
}

#[cfg(test)]
mod tests;
