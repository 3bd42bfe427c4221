//! The fanotify source on a real temp directory (needs root; skipped with a
//! message otherwise): events arrive as set paths, events outside the roots
//! are dropped, and a renamed directory's later events carry its new path.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::*;
use crate::config::{ChunkParams, MirrorSet};

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

struct Fixture {
    tmp: tempfile::TempDir,
    queue: Arc<Queue>,
    source: Fanotify,
}

impl Fixture {
    /// Roots `/data/` and `/etc/conf` under a temp node root.
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let node = tmp.path().join("node");
        fs::create_dir_all(node.join("data")).unwrap();
        fs::create_dir_all(node.join("etc")).unwrap();
        let set = MirrorSet::for_tests(
            "Ft",
            tmp.path().join("Ft"),
            &[("/data", true), ("/etc/conf", false)],
            ChunkParams::default(),
        );
        let roots = Arc::new(Roots::new(&set, &node));
        let queue = Arc::new(Queue::new(10_000));
        let source = Fanotify::start(roots, queue.clone()).expect("fanotify as root");
        Fixture { tmp, queue, source }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.tmp.path().join("node").join(rel)
    }

    /// Collects events until `done` holds for them (or 5 s pass).
    fn until(&self, done: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        let mut got = vec![];
        let t0 = Instant::now();
        while !done(&got) && t0.elapsed() < Duration::from_secs(5) {
            let d = self.queue.wait(Some(Instant::now() + Duration::from_millis(50)));
            assert!(!d.lost, "no events lost");
            got.extend(d.items);
        }
        got
    }
}

fn has(evs: &[Event], want: &Event) -> bool {
    evs.contains(want)
}

fn path_of(e: &Event) -> &[u8] {
    match e {
        Event::Written(p) | Event::Closed(p) | Event::Attrib(p) | Event::MovedTo(p) => p,
        Event::Created { path, .. } | Event::Removed { path, .. } | Event::Recheck { path, .. } => path,
        Event::Lost(_) => b"",
    }
}

fn v(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

#[test]
fn changes_in_the_roots_arrive_as_set_paths_and_others_are_dropped() {
    if !is_root() {
        eprintln!("skipped: fanotify needs root");
        return;
    }
    let f = Fixture::new();
    fs::write(f.tmp.path().join("outside"), b"x").unwrap();
    fs::write(f.p("etc/other"), b"x").unwrap();
    fs::write(f.p("data/a"), b"hello").unwrap();
    fs::create_dir(f.p("data/d")).unwrap();
    fs::write(f.p("data/d/b"), b"b").unwrap();
    fs::write(f.p("etc/conf"), b"c").unwrap();
    fs::rename(f.p("data/a"), f.p("data/a2")).unwrap();
    fs::remove_file(f.p("data/d/b")).unwrap();
    let want = [
        Event::Created {
            path: v("data/a"),
            dir: false,
        },
        Event::Closed(v("data/a")),
        Event::Created {
            path: v("data/d"),
            dir: true,
        },
        Event::Closed(v("data/d/b")),
        Event::Closed(v("etc/conf")),
        Event::Removed {
            path: v("data/a"),
            tree: false,
        },
        Event::MovedTo(v("data/a2")),
        Event::Removed {
            path: v("data/d/b"),
            tree: false,
        },
    ];
    let got = f.until(|evs| want.iter().all(|w| has(evs, w)));
    for w in &want {
        assert!(has(&got, w), "missing {w:?} in {got:?}");
    }
    for e in &got {
        let p = path_of(e);
        assert!(p.starts_with(b"data") || p == b"etc/conf", "outside the roots: {e:?}");
    }
    assert_eq!(f.source.name(), "fanotify");
}

#[test]
fn a_renamed_directory_reports_later_events_under_its_new_name() {
    if !is_root() {
        eprintln!("skipped: fanotify needs root");
        return;
    }
    let f = Fixture::new();
    fs::create_dir(f.p("data/old")).unwrap();
    fs::write(f.p("data/old/x"), b"1").unwrap();
    f.until(|evs| has(evs, &Event::Closed(v("data/old/x"))));
    fs::rename(f.p("data/old"), f.p("data/new")).unwrap();
    fs::write(f.p("data/new/y"), b"2").unwrap();
    let got = f.until(|evs| has(evs, &Event::Closed(v("data/new/y"))));
    assert!(
        has(
            &got,
            &Event::Removed {
                path: v("data/old"),
                tree: true
            }
        ),
        "{got:?}"
    );
    assert!(has(&got, &Event::MovedTo(v("data/new"))), "{got:?}");
    assert!(has(&got, &Event::Closed(v("data/new/y"))), "{got:?}");
    // A directory moved out of the set: its later events are not ours.
    fs::create_dir_all(f.tmp.path().join("away")).unwrap();
    fs::rename(f.p("data/new"), f.tmp.path().join("away/new")).unwrap();
    fs::write(f.tmp.path().join("away/new/z"), b"3").unwrap();
    fs::write(f.p("data/marker"), b"m").unwrap();
    let got = f.until(|evs| has(evs, &Event::Closed(v("data/marker"))));
    assert!(
        has(
            &got,
            &Event::Removed {
                path: v("data/new"),
                tree: true
            }
        ),
        "{got:?}"
    );
    assert!(!got.iter().any(|e| path_of(e).ends_with(b"/z")), "{got:?}");
}

#[test]
fn a_missing_root_is_watched_once_it_appears() {
    if !is_root() {
        eprintln!("skipped: fanotify needs root");
        return;
    }
    let mut f = Fixture::new();
    fs::remove_dir(f.p("data")).unwrap();
    assert_eq!(f.source.watch_tree(b"data").unwrap(), Watched::Missing);
    fs::create_dir(f.p("data")).unwrap();
    assert_eq!(f.source.watch_tree(b"data").unwrap(), Watched::Yes);
    fs::write(f.p("data/a"), b"a").unwrap();
    let got = f.until(|evs| has(evs, &Event::Closed(v("data/a"))));
    assert!(
        has(
            &got,
            &Event::Created {
                path: v("data"),
                dir: true
            }
        ),
        "{got:?}"
    );
}
