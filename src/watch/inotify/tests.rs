//! The inotify source on a real temp directory: events arrive as set
//! paths, reading the tree raises none, a moved directory is reported under
//! its new name once watched again, and events outside the roots (the
//! siblings of a file root) are dropped.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::*;
use crate::config::{ChunkParams, MirrorSet};

struct Fixture {
    tmp: tempfile::TempDir,
    queue: Arc<Queue>,
    source: Inotify,
}

impl Fixture {
    /// Roots `/data/` and `/etc/conf`, both watched.
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let node = tmp.path().join("node");
        fs::create_dir_all(node.join("data/sub")).unwrap();
        fs::create_dir_all(node.join("etc")).unwrap();
        fs::write(node.join("etc/conf"), b"c").unwrap();
        let set = MirrorSet::for_tests(
            "Ft",
            tmp.path().join("Ft"),
            &[("/data", true), ("/etc/conf", false)],
            ChunkParams::default(),
        );
        let roots = Arc::new(Roots::new(&set, &node));
        let queue = Arc::new(Queue::new(10_000));
        let mut source = Inotify::start(roots, queue.clone()).unwrap();
        assert_eq!(source.watch_tree(b"data").unwrap(), Watched::Yes);
        assert_eq!(source.watch_tree(b"etc/conf").unwrap(), Watched::Yes);
        Fixture { tmp, queue, source }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.tmp.path().join("node").join(rel)
    }

    /// Collects events until `done` holds for them or `max` passes.
    fn until(&self, max: Duration, done: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        let mut got = vec![];
        let t0 = Instant::now();
        while !done(&got) && t0.elapsed() < max {
            let d = self.queue.wait(Some(Instant::now() + Duration::from_millis(20)));
            assert!(!d.lost, "no events lost");
            got.extend(d.items);
        }
        got
    }
}

fn v(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

#[test]
fn changes_arrive_as_set_paths_and_siblings_of_a_file_root_are_dropped() {
    let f = Fixture::new();
    fs::write(f.p("etc/passwd"), b"x").unwrap();
    fs::write(f.p("data/sub/a"), b"hello").unwrap();
    fs::write(f.p("etc/conf"), b"c2").unwrap();
    fs::create_dir(f.p("data/new")).unwrap();
    fs::remove_file(f.p("data/sub/a")).unwrap();
    let want = [
        Event::Created {
            path: v("data/sub/a"),
            dir: false,
        },
        Event::Written(v("data/sub/a")),
        Event::Closed(v("data/sub/a")),
        Event::Closed(v("etc/conf")),
        Event::Created {
            path: v("data/new"),
            dir: true,
        },
        Event::Removed {
            path: v("data/sub/a"),
            tree: false,
        },
    ];
    let got = f.until(Duration::from_secs(5), |evs| want.iter().all(|w| evs.contains(w)));
    for w in &want {
        assert!(got.contains(w), "missing {w:?} in {got:?}");
    }
    assert!(
        !got.iter()
            .any(|e| matches!(e, Event::Closed(p) | Event::Written(p) if p == b"etc/passwd")),
        "{got:?}"
    );
}

#[test]
fn reading_the_tree_raises_no_event() {
    let f = Fixture::new();
    fs::write(f.p("data/sub/a"), b"hello").unwrap();
    f.until(Duration::from_secs(5), |evs| {
        evs.contains(&Event::Closed(v("data/sub/a")))
    });
    // What a scan does: list directories, read files.
    for _ in 0..3 {
        assert_eq!(fs::read_dir(f.p("data/sub")).unwrap().count(), 1);
        assert_eq!(fs::read(f.p("data/sub/a")).unwrap(), b"hello");
    }
    let got = f.until(Duration::from_millis(200), |_| false);
    assert!(got.is_empty(), "{got:?}");
}

#[test]
fn a_moved_directory_reports_under_its_new_name_once_watched_again() {
    let mut f = Fixture::new();
    fs::create_dir_all(f.p("data/old/inner")).unwrap();
    assert_eq!(f.source.watch_tree(b"data/old").unwrap(), Watched::Yes);
    fs::rename(f.p("data/old"), f.p("data/new")).unwrap();
    let got = f.until(Duration::from_secs(5), |evs| {
        evs.contains(&Event::MovedTo(v("data/new")))
    });
    assert!(
        got.contains(&Event::Removed {
            path: v("data/old"),
            tree: true
        }),
        "{got:?}"
    );
    // The engine watches the new tree before scanning it.
    assert_eq!(f.source.watch_tree(b"data/new").unwrap(), Watched::Yes);
    fs::write(f.p("data/new/inner/x"), b"x").unwrap();
    let got = f.until(Duration::from_secs(5), |evs| {
        evs.contains(&Event::Closed(v("data/new/inner/x")))
    });
    assert!(
        !got.iter()
            .any(|e| matches!(e, Event::Closed(p) if p.starts_with(b"data/old"))),
        "{got:?}"
    );
}

#[test]
fn a_deleted_root_is_reported_and_a_missing_one_is_not_watched() {
    let mut f = Fixture::new();
    fs::remove_dir_all(f.p("data")).unwrap();
    let got = f.until(Duration::from_secs(5), |evs| {
        evs.contains(&Event::Removed {
            path: v("data"),
            tree: true,
        })
    });
    assert!(
        got.contains(&Event::Removed {
            path: v("data"),
            tree: true
        }),
        "{got:?}"
    );
    assert_eq!(f.source.watch_tree(b"data").unwrap(), Watched::Missing);
    fs::create_dir(f.p("data")).unwrap();
    assert_eq!(f.source.watch_tree(b"data").unwrap(), Watched::Yes);
    fs::write(f.p("data/a"), b"a").unwrap();
    let got = f.until(Duration::from_secs(5), |evs| evs.contains(&Event::Closed(v("data/a"))));
    assert!(got.contains(&Event::Closed(v("data/a"))), "{got:?}");
}
