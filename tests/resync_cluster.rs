//! Issue 7 in network namespaces, with real daemons mirroring: a writer
//! keeps writing into group serv1's set on whichever node runs the group's
//! service, and logs every write the filesystem acknowledged. Through a
//! holder killed, a takeover, the failed node's return, its resync and the
//! failback — and through a split brain (both nodes hold the group and
//! both write, then the links heal) — every logged write must end up on
//! both nodes, under its name or, where the two sides disagreed, as a
//! conflict copy `NAME.hamirror-conflict-NODE-TIME`, and the two copies of
//! the set must compare identical. Root and iproute2 needed (CI has both).

// Nodes are indexed throughout (0 = serv1, 1 = serv2).
#![allow(clippy::needless_range_loop)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use common::lab::{Lab, NODES, Opts};
use common::netns::{netns_available, require_tool};
use common::pair::{rsync_differences, rsync_oracle, tree_differences};

static SERIAL: Mutex<()> = Mutex::new(());
const SEC: Duration = Duration::from_secs(1);

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn ready(opts: Opts) -> Option<Lab> {
    if !netns_available() {
        return None;
    }
    require_tool("socat", "socat");
    require_tool("arping", "iputils-arping");
    let mut lab = Lab::new("hmrs", opts);
    lab.start(0);
    lab.start(1);
    lab.wait_both_running_own_groups();
    Some(lab)
}

/// One acknowledged write: where, what, on which node.
#[derive(Debug, Clone)]
struct Write {
    rel: String,
    data: Vec<u8>,
    node: usize,
}

/// Writes a new file every few ms into group serv1's set on each node
/// whose service for the group runs (its start hook's pid file exists) and
/// that is up; logs each write once `fsync` returned.
struct Writer {
    stop: Arc<AtomicBool>,
    up: [Arc<AtomicBool>; 2],
    log: Arc<Mutex<Vec<Write>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(lab: &Lab) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let up = [Arc::new(AtomicBool::new(true)), Arc::new(AtomicBool::new(true))];
        let log: Arc<Mutex<Vec<Write>>> = Arc::default();
        let roots: Vec<PathBuf> = NODES.iter().map(|n| lab.mirror_root(n).join("data/serv1")).collect();
        let pids: Vec<PathBuf> = NODES
            .iter()
            .map(|n| lab.path(&format!("run/svc-{n}-serv1.pid")))
            .collect();
        let (s, u, l) = (stop.clone(), up.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !s.load(Ordering::SeqCst) {
                for i in 0..2 {
                    if !u[i].load(Ordering::SeqCst) || !pids[i].exists() {
                        continue;
                    }
                    n += 1;
                    let rel = format!("w/{}/e-{n:06}", NODES[i]);
                    let data = format!("entry {n} written on {} by the service\n", NODES[i]).into_bytes();
                    if write_synced(&roots[i].join(&rel), &data).is_ok() {
                        l.lock().unwrap().push(Write { rel, data, node: i });
                    }
                }
                std::thread::sleep(Duration::from_millis(7));
            }
        });
        Writer {
            stop,
            up,
            log,
            thread: Some(thread),
        }
    }

    /// Node `i` goes down (or comes back): its service writes nothing.
    fn node_up(&self, i: usize, up: bool) {
        self.up[i].store(up, Ordering::SeqCst);
    }

    fn count(&self, node: usize) -> usize {
        self.log.lock().unwrap().iter().filter(|w| w.node == node).count()
    }

    fn finish(mut self) -> Vec<Write> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.log.lock().unwrap().clone()
    }
}

fn write_synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    std::fs::create_dir_all(path.parent().unwrap())?;
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Files of `dir` (recursively) whose name is `name` or a conflict copy of
/// it, with their content.
fn versions(dir: &Path, name: &str) -> Vec<(String, Vec<u8>)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    rd.flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            (n == name || n.starts_with(&format!("{name}.hamirror-conflict-")))
                .then(|| (n, std::fs::read(e.path()).unwrap_or_default()))
        })
        .collect()
}

/// Every logged write is on both nodes, under its name or as a conflict
/// copy of it, with the content written.
fn assert_every_write_on_both(lab: &Lab, log: &[Write]) {
    let mut missing = vec![];
    for w in log {
        for node in NODES {
            let p = lab.mirror_root(node).join("data/serv1").join(&w.rel);
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if !versions(p.parent().unwrap(), &name).iter().any(|(_, d)| *d == w.data) {
                missing.push(format!("{} (written on {}) missing on {node}", w.rel, NODES[w.node]));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost: {:?}\n{}",
        missing.len(),
        log.len(),
        &missing[..missing.len().min(20)],
        lab.logs()
    );
}

fn data(lab: &Lab, i: usize) -> PathBuf {
    lab.mirror_root(NODES[i]).join("data/serv1")
}

/// Both copies of group serv1's set become identical and stay so for a
/// second (the mirror is asynchronous: give it time; and a receiver's
/// apply changes its directories' mtimes for a moment, which the holder's
/// watcher may see and send again), then the rsync oracle agrees.
fn converge(lab: &Lab, within: Duration) {
    let (a, b) = (data(lab, 0), data(lab, 1));
    let deadline = std::time::Instant::now() + within;
    let mut same_since: Option<std::time::Instant> = None;
    loop {
        let diffs = tree_differences(&a, &b);
        let rsync = if diffs.is_empty() {
            rsync_differences(&a, &b)
        } else {
            String::new()
        };
        if diffs.is_empty() && rsync.trim().is_empty() {
            let since = *same_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() >= SEC {
                break;
            }
        } else {
            same_since = None;
            assert!(
                std::time::Instant::now() < deadline,
                "both copies of Fserv1data never became identical within {within:?}: {diffs:?} {rsync}\n{}",
                lab.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    rsync_oracle(&a, &b);
}

fn conflict_copies(dir: &Path) -> Vec<String> {
    let mut out = vec![];
    for e in walk(dir) {
        let n = e.file_name().unwrap().to_string_lossy().into_owned();
        if n.contains(".hamirror-conflict-") {
            out.push(e.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_writer_loses_nothing_through_holder_death_takeover_resync_and_failback() {
    let _s = serial();
    let Some(mut lab) = ready(Opts {
        auto_failback: true,
        mirror: true,
        ..Opts::default()
    }) else {
        return;
    };
    let w = Writer::start(&lab);
    lab.wait("serv1's service wrote", 10 * SEC, |_| w.count(0) >= 100);

    // The holder dies with the service writing: the last writes may not
    // have been mirrored yet.
    w.node_up(0, false);
    lab.node_dies(0);
    lab.wait("serv2 takes group serv1 over", 10 * SEC, |l| l.holds(1, "serv1"));
    let before = w.count(1);
    lab.wait("serv2's service wrote", 10 * SEC, |_| w.count(1) >= before + 100);

    // serv1 returns: it gets serv2's writes back, then its group (failback).
    lab.node_reboots(0);
    w.node_up(0, true);
    lab.wait("serv1 holds its group again", 40 * SEC, |l| {
        l.holds(0, "serv1") && !l.holds(1, "serv1")
    });
    let back = w.count(0);
    lab.wait("serv1's service writes again", 10 * SEC, |_| w.count(0) >= back + 50);
    let log = w.finish();
    converge(&lab, 30 * SEC);
    assert_every_write_on_both(&lab, &log);
    eprintln!(
        "writes: {} on serv1, {} on serv2; conflict copies: {:?}",
        log.iter().filter(|w| w.node == 0).count(),
        log.iter().filter(|w| w.node == 1).count(),
        conflict_copies(&data(&lab, 0))
    );
}

#[test]
fn a_split_brain_loses_no_write_and_keeps_both_versions_as_conflict_copies() {
    let _s = serial();
    let Some(lab) = ready(Opts {
        mirror: true,
        ..Opts::default()
    }) else {
        return;
    };
    let shared = |i: usize| data(&lab, i).join("shared.txt");
    write_synced(&shared(0), b"the shared file before the split\n").unwrap();
    let (a, b) = (data(&lab, 0), data(&lab, 1));
    lab.wait("shared.txt mirrored", 10 * SEC, |_| tree_differences(&a, &b).is_empty());
    let w = Writer::start(&lab);
    lab.wait("serv1's service wrote", 10 * SEC, |_| w.count(0) >= 20);

    // Neither node hears the other; both still reach the LAN hosts: each
    // takes the other's group, so both run group serv1 and both write.
    lab.split(true);
    lab.wait("both nodes run group serv1", 10 * SEC, |l| {
        l.holds(0, "serv1") && l.holds(1, "serv1")
    });
    let (n0, n1) = (w.count(0), w.count(1));
    lab.wait("both services wrote", 10 * SEC, |_| {
        w.count(0) >= n0 + 50 && w.count(1) >= n1 + 50
    });
    write_synced(&shared(0), b"shared.txt as serv1 changed it during the split\n").unwrap();
    write_synced(&shared(1), b"shared.txt as serv2 changed it during the split\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));

    // The links heal: one holder wins, the other's writes come back as
    // conflict copies (never silently merged, never lost).
    lab.split(false);
    lab.wait("exactly one node runs group serv1", 15 * SEC, |l| {
        l.holds(0, "serv1") != l.holds(1, "serv1")
    });
    std::thread::sleep(SEC);
    let log = w.finish();
    converge(&lab, 40 * SEC);
    assert_every_write_on_both(&lab, &log);
    let winner = if lab.holds(0, "serv1") { 0 } else { 1 };
    let loser = 1 - winner;
    let want_kept = format!("shared.txt as {} changed it during the split\n", NODES[winner]);
    let want_copy = format!("shared.txt as {} changed it during the split\n", NODES[loser]);
    for i in 0..2 {
        let v = versions(&data(&lab, i), "shared.txt");
        assert!(
            v.iter().any(|(n, d)| n == "shared.txt" && *d == want_kept.as_bytes()),
            "{}: the holder's version of shared.txt is not in place: {v:?}\n{}",
            NODES[i],
            lab.logs()
        );
        assert!(
            v.iter().any(
                |(n, d)| n.starts_with(&format!("shared.txt.hamirror-conflict-{}-", NODES[loser]))
                    && *d == want_copy.as_bytes()
            ),
            "{}: no conflict copy of {}'s shared.txt: {v:?}\n{}",
            NODES[i],
            NODES[loser],
            lab.logs()
        );
    }
    // Reported: a warning event in the loser's status (and its log).
    let events = lab.status(loser).map(|s| s["events"].to_string()).unwrap_or_default();
    assert!(events.contains("conflict_copies"), "{events}\n{}", lab.log(loser));
    eprintln!("conflict copies: {:?}", conflict_copies(&data(&lab, 0)));
}
