//! The seam to the peer: the [`Shipper`] trait, and the thread that calls
//! it for one set. The engine never waits for the peer: it records the
//! newest generation to ship and goes on committing; this thread calls
//! [`Shipper::ship`] with whatever is newest when it gets to it (so ten
//! commits during one slow call become one call), retries failures with
//! exponential backoff, and records the generation the peer acknowledges.
//! The index's generation log is the durable queue: what the peer has not
//! acknowledged is what the next successful call ships, after a crash
//! too. Knows nothing of the network; the sync layer implements
//! [`Shipper`].

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::config::MirrorSet;
use crate::index::Index;

/// Called by the watch engine after each commit that raised a set's
/// generation (and once at start-up, and after every periodic re-scan).
/// Implementations ship the set's changes to the peer; errors are retried
/// by the engine with backoff, and the engine keeps committing meanwhile
/// (the index's generation log is the durable queue: what the peer has not
/// acknowledged is what is shipped on the next successful call).
pub trait Shipper: Send {
    /// Brings the peer's replica of `set` up to `generation` of `index` (or
    /// newer). Called from a thread of its own, never concurrently for one
    /// set.
    ///
    /// # Errors
    /// [`ShipError`]; say with `retryable` whether trying again can help.
    fn ship(&mut self, set: &MirrorSet, index: &Arc<Index>, generation: u64) -> Result<ShipOutcome, ShipError>;
}

/// What a successful [`Shipper::ship`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShipOutcome {
    /// The generation of this node's index the peer now holds completely
    /// (what it acknowledged). Less than asked for means the rest is still
    /// to ship: the engine calls again after a backoff.
    pub acked: u64,
}

/// Why shipping failed.
#[derive(Debug, Clone, Error)]
#[error("{message}")]
pub struct ShipError {
    pub message: String,
    /// Whether a later call can succeed (the peer is unreachable, busy) or
    /// not (it refuses this node: not the holder, an older epoch). A set
    /// whose shipping cannot be retried stops shipping; its commits go on.
    pub retryable: bool,
    /// The peer took part and applied the rest: only some files failed
    /// (typically changed again while being sent, so a newer commit is on
    /// its way). Retried after [`BACKOFF_MIN`] without raising the backoff,
    /// which is for a peer that cannot be reached.
    pub reached_peer: bool,
    /// The peer answered and refused (not the holder, an older epoch, the
    /// mass-delete guard): an operator must act. Not set for a local
    /// problem (no identity key), which leaves a watch recording only.
    pub refused: bool,
}

/// First retry delay after a failure; doubled up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Where shipping of one set stands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Shipping {
    /// No shipper: nothing leaves this node.
    #[default]
    Disabled,
    /// The last call succeeded (or none was made yet).
    Ok,
    /// The last call failed; retried after a backoff.
    Retrying(String),
    /// A failure that retrying cannot mend; nothing more is shipped.
    Stopped(String),
}

#[derive(Debug, Default)]
struct State {
    /// The newest generation asked for.
    wanted: u64,
    /// A call is due (asked for since the last call started).
    due: bool,
    acked: Option<u64>,
    shipping: Shipping,
    calls: u64,
    stop: bool,
    /// Retry a pending retry now (see [`ShipReader::request_now`]).
    poke: bool,
    /// Stopped because the peer refused ([`ShipError::refused`]).
    refused: bool,
}

/// The shipping thread of one set; dropping it stops the thread after the
/// call in progress.
pub(crate) struct ShipLoop {
    shared: Arc<(Mutex<State>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ShipLoop {
    /// Starts the thread shipping `set` to the replica `peer` (a name for
    /// the thread and the log).
    pub fn start(
        mut shipper: Box<dyn Shipper>,
        set: MirrorSet,
        index: Arc<Index>,
        peer: &str,
    ) -> Result<ShipLoop, String> {
        let shared = Arc::new((
            Mutex::new(State {
                shipping: Shipping::Ok,
                ..State::default()
            }),
            Condvar::new(),
        ));
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("hamirror-ship-{}", set.name))
            .spawn({
                let peer = peer.to_string();
                move || run(&mut *shipper, &set, &peer, &index, &s)
            })
            .map_err(|e| format!("cannot start the shipping thread: {e}"))?;
        Ok(ShipLoop {
            shared,
            thread: Some(thread),
        })
    }

    /// Asks for `generation` to be shipped (again, if it was already).
    pub fn request(&self, generation: u64) {
        let mut g = lock(&self.shared.0);
        g.wanted = g.wanted.max(generation);
        g.due = true;
        drop(g);
        self.shared.1.notify_one();
    }

    /// The generation the peer acknowledged last, the state, and the
    /// number of calls made.
    pub fn status(&self) -> (Option<u64>, Shipping, u64) {
        self.reader().status()
    }

    /// A read-only view for handles.
    pub fn reader(&self) -> ShipReader {
        ShipReader(self.shared.clone())
    }
}

/// Reads a [`ShipLoop`]'s state from elsewhere.
#[derive(Clone)]
pub(crate) struct ShipReader(Arc<(Mutex<State>, Condvar)>);

impl ShipReader {
    /// The peer has just caught up by other means (it pulled the set, or
    /// took conflict copies): a retry waiting for its backoff is made now,
    /// with the backoff reset. Nothing happens when no retry is pending.
    /// (The engine uses [`ShipReader::request_now`], which also ships to a
    /// replica that is not retrying.)
    #[cfg(test)]
    pub fn ship_now(&self) {
        lock(&self.0.0).poke = true;
        self.0.1.notify_one();
    }

    /// Asks for `generation` to be shipped now: a call is made at once,
    /// also when a retry is waiting for its backoff (the backoff starts
    /// over). For a replica that has just returned.
    pub fn request_now(&self, generation: u64) {
        let mut g = lock(&self.0.0);
        g.wanted = g.wanted.max(generation);
        g.due = true;
        g.poke = true;
        drop(g);
        self.0.1.notify_one();
    }

    /// As [`ShipLoop::status`].
    pub fn status(&self) -> (Option<u64>, Shipping, u64) {
        let g = lock(&self.0.0);
        (g.acked, g.shipping.clone(), g.calls)
    }

    /// Why the peer refused, when that stopped shipping.
    pub fn refused(&self) -> Option<String> {
        let g = lock(&self.0.0);
        match &g.shipping {
            Shipping::Stopped(why) if g.refused => Some(why.clone()),
            _ => None,
        }
    }
}

impl Drop for ShipLoop {
    fn drop(&mut self) {
        lock(&self.shared.0).stop = true;
        self.shared.1.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(shipper: &mut dyn Shipper, set: &MirrorSet, peer: &str, index: &Arc<Index>, shared: &(Mutex<State>, Condvar)) {
    let (m, cv) = shared;
    let mut backoff = BACKOFF_MIN;
    let mut retry_at: Option<Instant> = None;
    loop {
        let wanted = {
            let mut g = lock(m);
            loop {
                if g.stop {
                    return;
                }
                if std::mem::take(&mut g.poke) && retry_at.is_some() {
                    tracing::info!(set = %set.name, peer, "the peer caught up by itself: retrying now");
                    backoff = BACKOFF_MIN;
                    retry_at = Some(Instant::now());
                }
                let retry_due = retry_at.is_some_and(|t| Instant::now() >= t);
                if matches!(g.shipping, Shipping::Stopped(_)) {
                    g = cv.wait(g).unwrap_or_else(|p| p.into_inner());
                    continue;
                }
                if (g.due && retry_at.is_none()) || retry_due {
                    break;
                }
                g = match retry_at {
                    Some(t) => {
                        cv.wait_timeout(g, t.saturating_duration_since(Instant::now()))
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                    None => cv.wait(g).unwrap_or_else(|p| p.into_inner()),
                };
            }
            g.due = false;
            g.calls += 1;
            g.wanted
        };
        let result = shipper.ship(set, index, wanted);
        let mut g = lock(m);
        match result {
            Ok(out) => {
                g.acked = Some(out.acked);
                g.shipping = Shipping::Ok;
                if out.acked >= wanted {
                    backoff = BACKOFF_MIN;
                    retry_at = None;
                } else {
                    tracing::info!(set = %set.name, peer, acked = out.acked, wanted, "peer is behind; shipping again");
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
            Err(e) if e.retryable && e.reached_peer => {
                tracing::info!(set = %set.name, peer, "shipped in part: {e}; shipping again");
                g.shipping = Shipping::Retrying(e.message);
                backoff = BACKOFF_MIN;
                retry_at = Some(Instant::now() + BACKOFF_MIN);
            }
            Err(e) if e.retryable => {
                tracing::warn!(set = %set.name, peer, "shipping failed: {e}; retrying in {backoff:?}");
                g.shipping = Shipping::Retrying(e.message);
                retry_at = Some(Instant::now() + backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            Err(e) => {
                tracing::error!(set = %set.name, peer, "shipping stopped: {e}; changes keep being recorded in the index");
                g.shipping = Shipping::Stopped(e.message);
                g.refused = e.refused;
                retry_at = None;
            }
        }
    }
}

/// A [`Shipper`] for tests: records every call and answers from a script
/// (acknowledge what was asked, or fail).
#[derive(Debug, Clone, Default)]
pub struct RecordingShipper {
    pub calls: Arc<Mutex<Vec<(String, u64)>>>,
    /// Calls that fail before the first success (retryably).
    pub fail_first: Arc<Mutex<u32>>,
}

impl RecordingShipper {
    /// The generations shipped so far, in call order.
    pub fn generations(&self) -> Vec<u64> {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|c| c.1)
            .collect()
    }
}

impl Shipper for RecordingShipper {
    fn ship(&mut self, set: &MirrorSet, _index: &Arc<Index>, generation: u64) -> Result<ShipOutcome, ShipError> {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((set.name.clone(), generation));
        let mut fail = self.fail_first.lock().unwrap_or_else(|p| p.into_inner());
        if *fail > 0 {
            *fail -= 1;
            return Err(ShipError {
                message: "peer unreachable (test)".into(),
                retryable: true,
                reached_peer: false,
                refused: false,
            });
        }
        Ok(ShipOutcome { acked: generation })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::ChunkParams;

    fn set() -> MirrorSet {
        MirrorSet {
            name: "Ft".into(),
            file: PathBuf::from("/c/Ft"),
            roots: vec![],
            chunk: ChunkParams::default(),
            delete_limit: 50,
            excludes: Default::default(),
            xattrs: Default::default(),
        }
    }

    fn wait_for(what: impl Fn() -> bool) {
        let t0 = Instant::now();
        while !what() {
            assert!(t0.elapsed() < Duration::from_secs(10), "timed out");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn failures_are_retried_and_the_newest_generation_is_shipped() {
        let tmp = tempfile::tempdir().unwrap();
        let index = Arc::new(Index::open(tmp.path()).unwrap());
        let rec = RecordingShipper::default();
        *rec.fail_first.lock().unwrap() = 2;
        let ship = ShipLoop::start(Box::new(rec.clone()), set(), index, "serv2").unwrap();
        ship.request(3);
        wait_for(|| ship.status().0 == Some(3));
        // Two failures, then the success: all for generation 3 (or newer).
        assert_eq!(rec.generations(), vec![3, 3, 3]);
        assert_eq!(ship.status().1, Shipping::Ok);
        ship.request(4);
        ship.request(5);
        wait_for(|| ship.status().0 == Some(5));
        assert!(
            rec.generations().len() <= 5,
            "requests while idle or busy coalesce: {:?}",
            rec.generations()
        );
    }

    struct Refuses;
    impl Shipper for Refuses {
        fn ship(&mut self, _: &MirrorSet, _: &Arc<Index>, _: u64) -> Result<ShipOutcome, ShipError> {
            Err(ShipError {
                message: "not the holder".into(),
                retryable: false,
                reached_peer: true,
                refused: false,
            })
        }
    }

    #[test]
    fn a_failure_that_cannot_be_retried_stops_shipping() {
        let tmp = tempfile::tempdir().unwrap();
        let index = Arc::new(Index::open(tmp.path()).unwrap());
        let ship = ShipLoop::start(Box::new(Refuses), set(), index, "serv2").unwrap();
        ship.request(1);
        wait_for(|| matches!(ship.status().1, Shipping::Stopped(_)));
        ship.request(2);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(ship.status().2, 1, "no further call");
    }

    #[test]
    fn a_pending_retry_is_made_at_once_when_the_peer_caught_up_by_itself() {
        let tmp = tempfile::tempdir().unwrap();
        let index = Arc::new(Index::open(tmp.path()).unwrap());
        let rec = RecordingShipper::default();
        *rec.fail_first.lock().unwrap() = 4;
        let ship = ShipLoop::start(Box::new(rec.clone()), set(), index, "serv2").unwrap();
        let reader = ship.reader();
        // Nothing pending: a poke makes no call.
        reader.ship_now();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(ship.status().2, 0);
        ship.request(1);
        // Retries after 250, 500 and 1000 ms: the fourth failure is at ~1.75 s
        // and the next retry would wait 2 s.
        wait_for(|| rec.generations().len() == 4);
        let poked = Instant::now();
        reader.ship_now();
        wait_for(|| ship.status().0 == Some(1));
        assert!(
            poked.elapsed() < Duration::from_millis(1000),
            "retried {:?} after the poke",
            poked.elapsed()
        );
        assert_eq!(rec.generations().len(), 5);
    }
}
