//! The engine as a library object: sets started and stopped one by one,
//! the shipper called at start-up and after each commit (and retried), the
//! backlog following the shipper's acknowledgements.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::*;
use crate::config::{ChunkParams, SetRoot};

struct Fixture {
    _tmp: tempfile::TempDir,
    node_root: PathBuf,
    state: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let node_root = tmp.path().join("root");
        fs::create_dir_all(node_root.join("data")).unwrap();
        fs::create_dir_all(node_root.join("other")).unwrap();
        let state = tmp.path().join("state");
        Fixture {
            _tmp: tmp,
            node_root,
            state,
        }
    }

    fn set(&self, name: &str, root: &str) -> MirrorSet {
        MirrorSet {
            name: name.into(),
            file: self.state.join(name),
            roots: vec![SetRoot {
                path: PathBuf::from(root),
                dir: true,
                line: 1,
            }],
            chunk: ChunkParams::default(),
            delete_limit: 50,
            excludes: Default::default(),
            xattrs: Default::default(),
        }
    }

    fn engine(&self) -> Engine {
        let opts = WatchOptions {
            events: EventSource::Inotify,
            quiet_period: Duration::from_millis(20),
            rescan_interval: Duration::from_secs(3600),
            max_pending: 1000,
            queue_capacity: 1000,
            unwatched_interval: Duration::from_secs(30),
            scan: ScanOptions::default(),
        };
        Engine::new(&self.node_root, &self.state, opts)
    }
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_shipper_is_called_at_start_up_and_after_commits_and_the_backlog_follows_its_acks() {
    let f = Fixture::new();
    fs::write(f.node_root.join("data/a"), b"a").unwrap();
    let rec = RecordingShipper::default();
    // The first two calls fail: the engine retries.
    *rec.fail_first.lock().unwrap() = 2;
    let mut engine = f.engine();
    let h = engine
        .start_set(&f.set("Fdata", "/data"), Some(Box::new(rec.clone())))
        .unwrap();
    wait_for("watching", || h.status().state == RunState::Watching);
    assert_eq!(h.status().generation, 1);
    wait_for("the start-up generation acked", || {
        h.backlog().unwrap().acked == Some(1)
    });
    assert!(rec.generations().len() >= 3, "{:?}", rec.generations());
    assert_eq!(h.shipping().0, Shipping::Ok);

    fs::write(f.node_root.join("data/b"), b"b").unwrap();
    wait_for("a new generation", || h.status().generation == 2);
    wait_for("it acked", || h.backlog().unwrap().acked == Some(2));
    let b = h.backlog().unwrap();
    assert_eq!((b.generation, b.generations, b.paths), (2, 0, Some(0)));
    let last = h.status().last_commit.unwrap();
    assert_eq!((last.generation, last.paths), (2, 2));
    assert!(last.lag.unwrap() < Duration::from_secs(5));
    assert_eq!(rec.generations().last(), Some(&2));
    assert!(engine.stop_set("Fdata"));
    assert_eq!(h.status().state, RunState::Stopped);
    assert!(!engine.stop_set("Fdata"));
}

#[test]
fn without_a_shipper_the_backlog_counts_from_start_up_and_sets_run_independently() {
    let f = Fixture::new();
    let mut engine = f.engine();
    let a = engine.start_set(&f.set("Fdata", "/data"), None).unwrap();
    let b = engine.start_set(&f.set("Fother", "/other"), None).unwrap();
    assert!(matches!(
        engine.start_set(&f.set("Fdata", "/data"), None),
        Err(WatchError::AlreadyWatched(_))
    ));
    wait_for("both watching", || {
        a.status().state == RunState::Watching && b.status().state == RunState::Watching
    });
    fs::create_dir(f.node_root.join("data/d")).unwrap();
    fs::write(f.node_root.join("data/d/x"), b"x").unwrap();
    wait_for("the change committed", || {
        a.backlog().unwrap().paths.unwrap_or(0) >= 2 && a.status().pending_paths == 0
    });
    let bl = a.backlog().unwrap();
    assert_eq!(bl.acked, None);
    assert!(bl.generations >= 1, "{bl:?}");
    // The other set committed only its start-up scan (its root, new).
    assert_eq!(b.status().generation, 1, "the other set saw nothing");
    assert_eq!(b.backlog().unwrap().generations, 1);
    assert_eq!(a.shipping(), (Shipping::Disabled, 0));
    // A second engine cannot take a set whose index is held.
    let mut other = f.engine();
    let err = other.start_set(&f.set("Fdata", "/data"), None).unwrap_err();
    assert!(err.retryable(), "{err}");
    engine.stop_set("Fdata");
    assert!(matches!(a.backlog(), Err(WatchError::NotWatched(_))));
    let h = other.start_set(&f.set("Fdata", "/data"), None).unwrap();
    wait_for("watching again", || h.status().state == RunState::Watching);
    // The restart's stat scan found everything settled: nothing read.
    let r = h.status().last_full_scan.unwrap();
    assert_eq!(
        (r.files, r.files_read, r.new + r.changed + r.deleted),
        (1, 0, 0),
        "{r:?}"
    );
    other.stop();
    engine.stop();
}

#[test]
fn a_missing_root_is_polled_until_it_appears_then_watched() {
    let f = Fixture::new();
    let mut engine = {
        let opts = WatchOptions {
            unwatched_interval: Duration::from_millis(100),
            ..f.engine().opts.clone()
        };
        Engine::new(&f.node_root, &f.state, opts)
    };
    let h = engine.start_set(&f.set("Flate", "/late"), None).unwrap();
    wait_for("watching", || h.status().state == RunState::Watching);
    let st = h.status();
    assert_eq!(st.unwatched, vec!["/late: it does not exist".to_string()]);
    assert_eq!(st.full_scans, 1);
    // Polling a missing root scans nothing.
    std::thread::sleep(Duration::from_millis(350));
    assert_eq!((h.status().batches, h.status().full_scans), (0, 1));
    fs::create_dir(f.node_root.join("late")).unwrap();
    fs::write(f.node_root.join("late/x"), b"x").unwrap();
    wait_for("the root watched and scanned", || {
        let s = h.status();
        s.unwatched.is_empty() && s.generation >= 1
    });
    // From now on it is watched: a change arrives by event.
    fs::write(f.node_root.join("late/y"), b"y").unwrap();
    wait_for("the event", || h.backlog().unwrap().paths == Some(3));
    engine.stop();
}

#[test]
fn the_index_says_when_its_watcher_keeps_it_current_and_stops_saying_so() {
    let f = Fixture::new();
    fs::write(f.node_root.join("data/a"), b"a").unwrap();
    let index = Index::shared_set(&f.state, "Fdata").unwrap();
    assert_eq!(index.watcher_pending("Fdata"), None, "no watcher yet");
    let mut engine = f.engine();
    let h = engine.start_set(&f.set("Fdata", "/data"), None).unwrap();
    wait_for("watching", || h.status().state == RunState::Watching);
    wait_for("current", || index.watcher_pending("Fdata") == Some(0));
    let generation = index.generation("Fdata").unwrap();
    // A change is counted from its event until it is committed: a reader
    // that sees Some(0) afterwards finds it in the index.
    fs::write(f.node_root.join("data/b"), b"b").unwrap();
    wait_for("the event seen", || {
        index.watcher_pending("Fdata") != Some(0) || index.entry("Fdata", b"data/b").unwrap().is_some()
    });
    wait_for("current again", || index.watcher_pending("Fdata") == Some(0));
    assert!(index.generation("Fdata").unwrap() > generation);
    assert!(index.entry("Fdata", b"data/b").unwrap().is_some());
    // Another set's index is not spoken for.
    assert_eq!(index.watcher_pending("Fother"), None);
    assert!(engine.stop_set("Fdata"));
    assert_eq!(
        index.watcher_pending("Fdata"),
        None,
        "a stopped watcher keeps nothing current"
    );
    engine.stop();
}

#[test]
fn a_root_that_can_only_be_polled_never_counts_as_current() {
    let f = Fixture::new();
    let index = Index::shared_set(&f.state, "Flate").unwrap();
    let mut engine = f.engine();
    let h = engine.start_set(&f.set("Flate", "/late"), None).unwrap();
    wait_for("watching", || h.status().state == RunState::Watching);
    assert!(!h.status().unwatched.is_empty());
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(index.watcher_pending("Flate"), None);
    engine.stop();
}

/// A replica that hangs in its call while `frozen` (a stopped process
/// behind a live socket), then acknowledges what it was asked.
#[derive(Clone, Default)]
struct Freezable {
    frozen: Arc<(Mutex<bool>, std::sync::Condvar)>,
    calls: Arc<Mutex<Vec<u64>>>,
}

impl Freezable {
    fn set_frozen(&self, on: bool) {
        *self.frozen.0.lock().unwrap() = on;
        self.frozen.1.notify_all();
    }
}

/// Thaws its replica when dropped: a failed assertion must not leave the
/// engine's stop waiting for a call that never returns.
struct Thaw(Freezable);

impl Drop for Thaw {
    fn drop(&mut self) {
        self.0.set_frozen(false);
    }
}

impl Shipper for Freezable {
    fn ship(&mut self, _: &MirrorSet, _: &Arc<Index>, generation: u64) -> Result<ShipOutcome, ShipError> {
        let mut g = self.frozen.0.lock().unwrap();
        while *g {
            g = self.frozen.1.wait(g).unwrap();
        }
        self.calls.lock().unwrap().push(generation);
        Ok(ShipOutcome { acked: generation })
    }
}

#[test]
fn a_frozen_replica_grows_only_its_own_backlog_and_catches_up_when_it_thaws() {
    let f = Fixture::new();
    fs::write(f.node_root.join("data/a"), b"a").unwrap();
    let (fast, slow) = (RecordingShipper::default(), Freezable::default());
    slow.set_frozen(true);
    let mut engine = f.engine();
    let replicas = vec![
        Replica {
            peer: "serv2".into(),
            shipper: Box::new(fast.clone()),
        },
        Replica {
            peer: "serv3".into(),
            shipper: Box::new(slow.clone()),
        },
    ];
    let h = engine.start_set_to(&f.set("Fdata", "/data"), replicas).unwrap();
    let _thaw = Thaw(slow.clone());
    assert_eq!(h.replicas(), vec!["serv2".to_string(), "serv3".to_string()]);
    wait_for("serv2 acked the start-up generation", || {
        h.backlog_to("serv2").unwrap().acked == Some(1)
    });
    // serv3 hangs in its first call: serv2 keeps acknowledging each write.
    for (i, name) in ["b", "c", "d"].iter().enumerate() {
        let g = 2 + i as u64;
        fs::write(f.node_root.join("data").join(name), name.as_bytes()).unwrap();
        wait_for("serv2 acked the write", || {
            h.backlog_to("serv2").unwrap().acked == Some(g)
        });
        let b = h.backlog_to("serv3").unwrap();
        assert_eq!((b.acked, b.generation), (None, g), "serv3 stays where it was");
    }
    assert_eq!(h.backlog_to("serv2").unwrap().paths, Some(0));
    // The set's backlog is the slowest replica's: everything since start-up
    // (the directory and its four files).
    let b = h.backlog().unwrap();
    assert_eq!((b.acked, b.generations, b.paths), (None, 4, Some(5)));
    assert_eq!(h.shipping_to(Some("serv3")).1, 1, "one call, still hanging");
    slow.set_frozen(false);
    wait_for("serv3 caught up", || h.backlog_to("serv3").unwrap().acked == Some(4));
    // Its hanging call acknowledged generation 1, the next one the newest:
    // the writes made meanwhile coalesced into one call.
    assert_eq!(*slow.calls.lock().unwrap(), vec![1, 4]);
    assert_eq!(h.backlog().unwrap().paths, Some(0));
    assert!(fast.generations().ends_with(&[2, 3, 4]), "{:?}", fast.generations());
    // serv3 returns (a resync of that replica alone): one more call to it,
    // none to serv2.
    let before = fast.generations().len();
    assert!(h.push_again("serv3"));
    wait_for("serv3 pushed to again", || slow.calls.lock().unwrap().len() == 3);
    assert_eq!(*slow.calls.lock().unwrap(), vec![1, 4, 4]);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(fast.generations().len(), before, "serv2 untouched");
    assert!(!h.push_again("serv9"), "not a replica");
    assert!(engine.stop_set("Fdata"));
}
