//! The coalescer on simulated time: `t(ms)` is a moment of a virtual clock;
//! nothing sleeps.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

fn base() -> Instant {
    // One fixed origin per process is enough: only differences matter.
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn t(ms: u64) -> Instant {
    base() + Duration::from_millis(ms)
}

fn cfg() -> CoalescerConfig {
    CoalescerConfig {
        quiet: Duration::from_millis(100),
        max_delay: Duration::from_millis(1000),
        max_pending: 1000,
    }
}

/// Roots `data/` and the file root `etc/conf`.
fn coalescer(cfg: CoalescerConfig) -> Coalescer {
    Coalescer::new(cfg, vec![(b"data".to_vec(), true), (b"etc/conf".to_vec(), false)])
}

fn p(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn paths(b: &Batch) -> Vec<(String, Scope)> {
    b.targets
        .iter()
        .map(|t| (String::from_utf8(t.path.clone()).unwrap(), t.scope))
        .collect()
}

fn tp(s: &str) -> (String, Scope) {
    (s.to_string(), Scope::Path)
}

fn tt(s: &str) -> (String, Scope) {
    (s.to_string(), Scope::Tree)
}

#[test]
fn a_burst_of_writes_then_close_is_one_target_ready_at_the_close() {
    let mut c = coalescer(cfg());
    c.push(
        t(0),
        Event::Created {
            path: p("data/f"),
            dir: false,
        },
    );
    for ms in 1..50 {
        c.push(t(ms), Event::Written(p("data/f")));
    }
    assert_eq!(c.next_deadline(), Some(t(149)));
    assert_eq!(c.poll_ready(t(60)), None);
    c.push(t(60), Event::Closed(p("data/f")));
    assert_eq!(c.next_deadline(), Some(t(60)));
    let b = c.poll_ready(t(60)).unwrap();
    // The file, and its directory (the creation changed its mtime).
    assert_eq!(paths(&b), vec![tp("data"), tp("data/f")]);
    assert_eq!(b.first_event, Some(t(0)));
    assert!(c.is_idle());
    assert_eq!(c.next_deadline(), None);
}

#[test]
fn an_unclosed_file_is_ready_once_quiet() {
    let mut c = coalescer(cfg());
    c.push(t(0), Event::Written(p("data/log")));
    c.push(t(30), Event::Written(p("data/log")));
    assert_eq!(c.poll_ready(t(129)), None);
    assert_eq!(c.next_deadline(), Some(t(130)));
    let b = c.poll_ready(t(130)).unwrap();
    // Written in place: the directory did not change.
    assert_eq!(paths(&b), vec![tp("data/log")]);
}

#[test]
fn a_file_written_without_pause_still_goes_out_every_max_delay() {
    let mut c = coalescer(cfg());
    let mut emitted = vec![];
    for ms in (0..3000).step_by(10) {
        c.push(t(ms), Event::Written(p("data/busy")));
        if c.poll_ready(t(ms)).is_some() {
            emitted.push(ms);
        }
    }
    assert_eq!(emitted, vec![1000, 2010]);
}

#[test]
fn many_closed_files_go_out_in_one_batch_with_their_directories() {
    let mut c = coalescer(cfg());
    for i in 0..100 {
        let f = p(&format!("data/d{}/f{i}", i % 3));
        c.push(
            t(i),
            Event::Created {
                path: f.clone(),
                dir: false,
            },
        );
        c.push(t(i), Event::Closed(f));
    }
    let b = c.poll_ready(t(100)).unwrap();
    assert_eq!(b.targets.len(), 103, "100 files and 3 directories");
    assert!(b.targets.iter().all(|t| t.scope == Scope::Path));
    assert_eq!(b.first_event, Some(t(0)));
    assert!(c.poll_ready(t(5000)).is_none());
}

#[test]
fn deletions_renames_and_new_directories_are_ready_at_once() {
    let mut c = coalescer(cfg());
    c.push(
        t(0),
        Event::Removed {
            path: p("data/old"),
            tree: false,
        },
    );
    c.push(
        t(0),
        Event::Removed {
            path: p("data/a/d"),
            tree: true,
        },
    );
    c.push(t(0), Event::MovedTo(p("data/b/d")));
    c.push(
        t(0),
        Event::Created {
            path: p("data/new"),
            dir: true,
        },
    );
    let b = c.poll_ready(t(0)).unwrap();
    assert_eq!(
        paths(&b),
        vec![
            tp("data"),
            tp("data/a"),
            tt("data/a/d"),
            tp("data/b"),
            tt("data/b/d"),
            tt("data/new"),
            tp("data/old"),
        ]
    );
}

#[test]
fn metadata_changes_wait_for_the_quiet_period() {
    let mut c = coalescer(cfg());
    c.push(t(0), Event::Closed(p("data/f")));
    c.push(t(0), Event::Attrib(p("data/g")));
    // The closed file goes at once, the chmod'ed one when quiet.
    assert_eq!(paths(&c.poll_ready(t(0)).unwrap()), vec![tp("data/f")]);
    assert_eq!(c.poll_ready(t(99)), None);
    assert_eq!(paths(&c.poll_ready(t(100)).unwrap()), vec![tp("data/g")]);
}

#[test]
fn a_write_after_close_does_not_hold_the_file_back() {
    let mut c = coalescer(cfg());
    c.push(t(0), Event::Closed(p("data/f")));
    c.push(t(1), Event::Written(p("data/f")));
    assert!(c.poll_ready(t(1)).is_some());
}

#[test]
fn a_recheck_is_ready_at_its_time() {
    let mut c = coalescer(cfg());
    c.push(
        t(0),
        Event::Recheck {
            path: p("data/f"),
            tree: false,
            at: t(250),
        },
    );
    assert_eq!(c.next_deadline(), Some(t(250)));
    assert_eq!(c.poll_ready(t(249)), None);
    let b = c.poll_ready(t(250)).unwrap();
    assert_eq!(paths(&b), vec![tp("data/f")]);
    assert_eq!(b.first_event, None, "a re-check is no event: no lag to report");
}

#[test]
fn paths_outside_the_roots_are_ignored_and_a_root_has_no_parent_target() {
    let mut c = coalescer(cfg());
    c.push(t(0), Event::Closed(p("etc/passwd")));
    c.push(
        t(0),
        Event::Removed {
            path: p("datax/f"),
            tree: false,
        },
    );
    assert!(c.is_idle());
    c.push(t(0), Event::MovedTo(p("etc/conf")));
    c.push(
        t(0),
        Event::Created {
            path: p("data"),
            dir: true,
        },
    );
    assert_eq!(paths(&c.poll_ready(t(0)).unwrap()), vec![tt("data"), tt("etc/conf")]);
}

#[test]
fn too_many_paths_become_a_rescan_of_their_root_once_the_storm_is_over() {
    let mut c = coalescer(CoalescerConfig {
        max_pending: 50,
        ..cfg()
    });
    c.push(t(0), Event::Written(p("etc/conf")));
    for i in 0..10_000u64 {
        c.push(
            t(i / 10),
            Event::Created {
                path: p(&format!("data/storm/{i}")),
                dir: false,
            },
        );
        assert!(c.pending() <= 50, "memory stays bounded");
    }
    // data is flooded; etc/conf is still tracked on its own.
    assert_eq!(c.flooded(), 1);
    assert_eq!(c.pending(), 1);
    // The storm lasted 1 s (t 0..999): etc/conf went once quiet, data is
    // re-scanned once its max_delay is reached (quiet would be at 1099).
    assert_eq!(paths(&c.poll_ready(t(999)).unwrap()), vec![tp("etc/conf")]);
    assert_eq!(c.next_deadline(), Some(t(1000)));
    let b = c.poll_ready(t(1000)).unwrap();
    assert_eq!(paths(&b), vec![tt("data")]);
    assert_eq!(b.rescanned_roots, 1);
    // Afterwards paths are tracked one by one again.
    c.push(t(1001), Event::Closed(p("data/after")));
    assert_eq!(paths(&c.poll_ready(t(1001)).unwrap()), vec![tp("data/after")]);
}

#[test]
fn a_flooded_root_waits_for_quiet_within_max_delay() {
    let mut c = coalescer(CoalescerConfig {
        max_pending: 2,
        ..cfg()
    });
    for i in 0..3 {
        c.push(t(0), Event::Closed(p(&format!("data/{i}"))));
    }
    assert_eq!(c.flooded(), 1);
    c.push(t(50), Event::Closed(p("data/x")));
    assert_eq!(c.next_deadline(), Some(t(150)));
    assert_eq!(c.poll_ready(t(149)), None);
    assert_eq!(paths(&c.poll_ready(t(150)).unwrap()), vec![tt("data")]);
}

#[test]
fn lost_events_rescan_the_roots_at_once() {
    let mut c = coalescer(cfg());
    c.push(t(0), Event::Written(p("data/f")));
    c.push(t(5), Event::Lost(None));
    let b = c.poll_ready(t(5)).unwrap();
    assert_eq!(paths(&b), vec![tt("data"), tt("etc/conf")]);
    assert_eq!(b.first_event, Some(t(0)));
    assert!(c.is_idle());
    c.push(t(6), Event::Lost(Some(p("etc/conf"))));
    assert_eq!(paths(&c.poll_ready(t(6)).unwrap()), vec![tt("etc/conf")]);
}

fn arb_event() -> impl Strategy<Value = (u64, u8, u8)> {
    (0u64..50, 0u8..8, 0u8..40)
}

proptest! {
    /// Whatever the events, every path that was pushed comes out (itself or
    /// as its root's re-scan), nothing comes out before its first event,
    /// no more than `max_pending` paths are ever held, and `next_deadline`
    /// is exactly when the next poll succeeds.
    #[test]
    fn every_event_comes_out_and_deadlines_are_exact(events in proptest::collection::vec(arb_event(), 1..200), cap in 3usize..30) {
        let mut c = coalescer(CoalescerConfig { max_pending: cap, ..cfg() });
        let mut now = 0u64;
        let mut pushed: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut out: BTreeSet<Vec<u8>> = BTreeSet::new();
        let collect = |b: Batch, out: &mut BTreeSet<Vec<u8>>| {
            for t in b.targets {
                out.insert(t.path);
            }
        };
        for (dt, kind, n) in events {
            now += dt;
            let path = p(&format!("data/d{}/f{}", n % 4, n));
            let ev = match kind {
                0 => Event::Written(path.clone()),
                1 => Event::Closed(path.clone()),
                2 => Event::Attrib(path.clone()),
                3 => Event::Created { path: path.clone(), dir: n % 2 == 0 },
                4 => Event::Removed { path: path.clone(), tree: n % 2 == 0 },
                5 => Event::MovedTo(path.clone()),
                6 => Event::Recheck { path: path.clone(), tree: n % 3 == 0, at: t(now + u64::from(n)) },
                _ => Event::Lost(None),
            };
            if kind != 7 {
                pushed.insert(path);
            }
            c.push(t(now), ev);
            prop_assert!(c.pending() <= cap);
            if let Some(d) = c.next_deadline()
                && d > t(now)
            {
                prop_assert_eq!(c.poll_ready(d - Duration::from_nanos(1)), None);
            }
            if let Some(b) = c.poll_ready(t(now)) {
                prop_assert!(b.first_event.is_none_or(|f| f <= t(now)));
                collect(b, &mut out);
            }
        }
        while let Some(d) = c.next_deadline() {
            let b = c.poll_ready(d).expect("ready at its deadline");
            collect(b, &mut out);
        }
        let rescanned = out.contains(&p("data"));
        for path in pushed {
            prop_assert!(rescanned || out.contains(&path), "{} never came out", String::from_utf8_lossy(&path));
        }
    }
}

#[test]
fn both_halves_of_a_rename_taken_apart_go_out_together() {
    let mut c = coalescer(cfg());
    c.push(
        t(0),
        Event::Removed {
            path: p("data/a"),
            tree: true,
        },
    );
    // The moved-to half is not there yet: the deletion waits for it.
    assert!(c.poll_ready(t(0)).is_none());
    assert_eq!(c.next_deadline(), Some(t(0) + RENAME_GRACE));
    c.push(t(5), Event::MovedTo(p("data/z")));
    let b = c.poll_ready(t(5)).unwrap();
    assert_eq!(paths(&b), vec![tp("data"), tt("data/a"), tt("data/z")]);
    // A deletion alone goes out after the grace.
    c.push(
        t(100),
        Event::Removed {
            path: p("data/x"),
            tree: false,
        },
    );
    assert!(c.poll_ready(t(110)).is_none());
    assert_eq!(paths(&c.poll_ready(t(120)).unwrap()), vec![tp("data"), tp("data/x")]);
}
