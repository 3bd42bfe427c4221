//! `hamirror watch` driven as a real binary on a temp node. There is no
//! peer yet, so the oracle is the index: after `watch` has settled and
//! stopped, a full `scan` must find nothing to commit and nothing to read
//! (every change was committed, and every fingerprint was settled so a
//! restart costs a stat pass). Each test names what it proves.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::node::{LocalNode, Running, counts, num};
use hamirror::index::Index;
use hamirror_wire::EntryKind;

const START: Duration = Duration::from_secs(60);
const QUIET: Duration = Duration::from_millis(1500);
const SETTLE_MAX: Duration = Duration::from_secs(120);

/// Held while a test starts inotify instances with a lowered kernel queue
/// limit, and by every other test while it starts `watch`: only the
/// overflow test's instance gets the small queue.
static STARTING: Mutex<()> = Mutex::new(());

fn start(n: &LocalNode, args: &[&str]) -> Running {
    let _g = STARTING.lock().unwrap_or_else(|p| p.into_inner());
    let w = n.watch(args);
    w.expect(0, START, "start-up scan");
    w
}

/// Stops `watch`, then checks with a full scan that it had caught
/// everything and settled every fingerprint.
fn assert_converged(n: &LocalNode, w: Running) -> Vec<String> {
    w.settle(QUIET, SETTLE_MAX);
    let (status, log) = w.stop();
    if std::env::var_os("WATCH_TEST_LOG").is_some() {
        eprintln!("{}", log.join("\n"));
    }
    assert!(status.success(), "watch exited with {status}:\n{}", log.join("\n"));
    let (r, code, err) = n.scan("Fsmbd");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        counts(&r),
        (0, 0, 0, 0),
        "the full scan found what watch missed: {r}\n{}",
        log.join("\n")
    );
    log
}

fn index(n: &LocalNode) -> Index {
    Index::open_set(&n.state(), "Fsmbd").unwrap()
}

/// The content hash a small file (one chunk) has in the index.
fn assert_content(index: &Index, path: &str, data: &[u8]) {
    let e = index
        .entry("Fsmbd", path.as_bytes())
        .unwrap()
        .unwrap_or_else(|| panic!("{path} not indexed"));
    assert_eq!(e.kind, EntryKind::File, "{path}");
    assert_eq!(e.size, data.len() as u64, "{path}");
    if !data.is_empty() {
        assert_eq!(e.chunks[0].hash, *blake3::hash(data).as_bytes(), "{path}");
    }
}

fn absent(index: &Index, path: &str) {
    assert!(
        index.entry("Fsmbd", path.as_bytes()).unwrap().is_none(),
        "{path} still indexed"
    );
}

/// Create, modify, append, rename a file and a directory, delete a file
/// and a tree, create-then-write in a new nested directory, an editor's
/// save, a symlink and a chmod — all while watching.
fn every_kind_of_change(events: &str) {
    let n = LocalNode::new("quiet_period = 50ms\n");
    n.write("srv/samba/keep/a", b"a");
    n.write("srv/samba/edit.txt", b"v1");
    n.write("srv/samba/log", b"start\n");
    n.write("srv/samba/doc.txt", b"old doc");
    n.write("srv/samba/olddir/x/y", b"y");
    n.write("srv/samba/gone/g1", b"g");
    n.write("srv/samba/rm.txt", b"rm");
    n.write("etc/samba/smb.conf", b"[global]\n");
    let w = start(&n, &["Fsmbd", "--events", events]);
    assert!(
        w.log().iter().any(|l| l.contains(&format!("events=\"{events}\""))),
        "{:?}",
        w.log()
    );

    n.write("srv/samba/new.txt", b"new");
    fs::write(n.p("srv/samba/edit.txt"), b"v2, longer").unwrap();
    let mut f = fs::OpenOptions::new().append(true).open(n.p("srv/samba/log")).unwrap();
    f.write_all(b"more\n").unwrap();
    drop(f);
    fs::rename(n.p("srv/samba/keep/a"), n.p("srv/samba/keep/a2")).unwrap();
    fs::rename(n.p("srv/samba/olddir"), n.p("srv/samba/newdir")).unwrap();
    fs::remove_file(n.p("srv/samba/rm.txt")).unwrap();
    fs::remove_dir_all(n.p("srv/samba/gone")).unwrap();
    fs::create_dir_all(n.p("srv/samba/n1/n2/n3")).unwrap();
    fs::write(n.p("srv/samba/n1/n2/n3/f"), b"deep").unwrap();
    fs::write(n.p("srv/samba/.doc.txt.swp"), b"new doc").unwrap();
    fs::rename(n.p("srv/samba/.doc.txt.swp"), n.p("srv/samba/doc.txt")).unwrap();
    std::os::unix::fs::symlink("keep/a2", n.p("srv/samba/link")).unwrap();
    fs::set_permissions(n.p("etc/samba/smb.conf"), fs::Permissions::from_mode(0o600)).unwrap();
    let fifo = std::ffi::CString::new(n.p("srv/samba/n1/pipe").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);

    let log = assert_converged(&n, w);
    assert!(log.iter().any(|l| l.contains(" committed ")), "{}", log.join("\n"));
    let index = index(&n);
    assert_content(&index, "srv/samba/new.txt", b"new");
    assert_content(&index, "srv/samba/edit.txt", b"v2, longer");
    assert_content(&index, "srv/samba/log", b"start\nmore\n");
    assert_content(&index, "srv/samba/keep/a2", b"a");
    assert_content(&index, "srv/samba/newdir/x/y", b"y");
    assert_content(&index, "srv/samba/n1/n2/n3/f", b"deep");
    assert_content(&index, "srv/samba/doc.txt", b"new doc");
    for p in [
        "srv/samba/keep/a",
        "srv/samba/olddir",
        "srv/samba/olddir/x/y",
        "srv/samba/rm.txt",
        "srv/samba/gone",
        "srv/samba/gone/g1",
        "srv/samba/.doc.txt.swp",
    ] {
        absent(&index, p);
    }
    let link = index.entry("Fsmbd", b"srv/samba/link").unwrap().unwrap();
    assert_eq!((link.kind, &link.target[..]), (EntryKind::Symlink, &b"keep/a2"[..]));
    let conf = index.entry("Fsmbd", b"etc/samba/smb.conf").unwrap().unwrap();
    assert_eq!(conf.mode & 0o777, 0o600);
    let pipe = index.entry("Fsmbd", b"srv/samba/n1/pipe").unwrap().unwrap();
    assert_eq!(pipe.kind, EntryKind::Fifo);
}

#[test]
fn every_kind_of_change_is_committed_with_inotify() {
    every_kind_of_change("inotify");
}

#[test]
fn every_kind_of_change_is_committed_with_fanotify() {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: fanotify needs root");
        return;
    }
    every_kind_of_change("fanotify");
}

#[test]
fn a_file_written_slowly_is_committed_while_written_and_whole_at_the_end() {
    let n = LocalNode::new("");
    let w = start(&n, &["Fsmbd"]);
    let from = w.len();
    let mut f = fs::File::create(n.p("srv/samba/slow.bin")).unwrap();
    let mut all = Vec::new();
    for i in 0..12u8 {
        let part = vec![i; 10_000];
        f.write_all(&part).unwrap();
        all.extend_from_slice(&part);
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(f);
    let log = assert_converged(&n, w);
    let commits = log[from..].iter().filter(|l| l.contains(" committed ")).count();
    // Quiet periods between writes (250 ms > 100 ms) ship intermediate
    // versions; never one commit per write call of a busy writer.
    assert!((2..=14).contains(&commits), "{commits} commits:\n{}", log.join("\n"));
    let e = index(&n).entry("Fsmbd", b"srv/samba/slow.bin").unwrap().unwrap();
    assert_eq!(e.size, all.len() as u64);
    let whole = hamirror::chunk::chunk_bytes(&all, hamirror::config::ChunkParams::default()).unwrap();
    assert_eq!(e.chunks, whole.chunks, "the last version, whole");
}

#[test]
fn kill_9_in_a_burst_then_restart_converges_without_rehashing_unchanged_files() {
    let n = LocalNode::new("");
    for i in 0..300 {
        n.write(&format!("srv/samba/base/{i:03}"), &[i as u8; 4096]);
    }
    let w = start(&n, &["Fsmbd"]);
    // Let the start-up scan's fresh files settle (re-read after the racy window).
    w.settle(Duration::from_millis(600), SETTLE_MAX);
    let from = w.len();
    let root = n.root();
    let burst = std::thread::spawn(move || {
        for i in 0..400 {
            let p = root.join(format!("srv/samba/burst/{:02}/{i:03}", i % 10));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, vec![(i % 251) as u8; 8192]).unwrap();
            if i % 50 == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
    // Kill it once it has committed part of the burst.
    w.expect(from, Duration::from_secs(30), " committed ");
    let log = w.kill9();
    burst.join().unwrap();

    let w = start(&n, &["Fsmbd"]);
    let (_, line) = w.expect(0, START, "start-up scan");
    // The 300 files settled before the kill are not read again; at most the
    // burst (and nothing of the base) is.
    assert!(num(&line, "unchanged") >= 300, "{line}\nfirst run:\n{}", log.join("\n"));
    assert!(num(&line, "files_read") <= 400, "{line}");
    assert_eq!(num(&line, "files"), 700, "{line}");
    assert_converged(&n, w);
}

#[test]
fn a_write_storm_keeps_memory_bounded_and_converges() {
    let n = LocalNode::new("");
    let w = start(&n, &["Fsmbd", "--max-pending", "20"]);
    let t0 = Instant::now();
    for d in 0..100 {
        fs::create_dir_all(n.p(&format!("srv/samba/storm/{d:02}"))).unwrap();
        for f in 0..100 {
            fs::write(n.p(&format!("srv/samba/storm/{d:02}/{f:02}")), format!("{d}/{f}")).unwrap();
        }
    }
    let created = t0.elapsed();
    w.settle(QUIET, SETTLE_MAX);
    let status = fs::read_to_string(format!("/proc/{}/status", w.pid())).unwrap();
    let hwm_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    let log = assert_converged(&n, w);
    eprintln!(
        "storm: 10,000 files created in {created:?}; peak RSS of watch {} MiB",
        hwm_kb / 1024
    );
    assert!(
        log.iter().any(|l| l.contains("re-scanning whole roots")),
        "the pending-path cap was never hit:\n{}",
        log.join("\n")
    );
    assert!(hwm_kb < 200 * 1024, "peak RSS {hwm_kb} KiB");
    let (r, _, _) = n.scan("Fsmbd");
    assert_eq!(r["files"].as_u64(), Some(10_000));
}

/// Sets a sysctl for as long as it lives; the old value is restored on drop
/// (also when the test panics).
struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    fn set(path: &'static str, value: &str) -> Sysctl {
        let old = fs::read_to_string(path).unwrap();
        fs::write(path, value).unwrap();
        Sysctl { path, old }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        fs::write(self.path, self.old.trim()).unwrap();
    }
}

#[test]
fn an_inotify_queue_overflow_rescans_the_roots_and_converges() {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: lowering fs.inotify.max_queued_events needs root");
        return;
    }
    let n = LocalNode::new("");
    // Watched from the start: the flood's events all land in the queue.
    for d in 0..7 {
        fs::create_dir_all(n.p(&format!("srv/samba/flood/{d}"))).unwrap();
    }
    let w = {
        let _g = STARTING.lock().unwrap_or_else(|p| p.into_inner());
        // Read when an inotify instance is created: only ours gets the small
        // queue, and the old value is back before anyone else starts one.
        let _small = Sysctl::set("/proc/sys/fs/inotify/max_queued_events", "16");
        let w = n.watch(&["Fsmbd", "--events", "inotify"]);
        w.expect(0, START, "watching");
        w
    };
    w.expect(0, START, "start-up scan");
    // Paused while the flood is written into watched directories, so the
    // 16-event queue overflows however fast the watcher would have drained
    // it (a loaded machine used to make the writer the slow side: no
    // overflow, and the test failed waiting for one).
    // SAFETY: the pid of our own child.
    unsafe { libc::kill(w.pid(), libc::SIGSTOP) };
    for i in 0..500 {
        n.write(&format!("srv/samba/flood/{}/{i}", i % 7), b"x");
    }
    // SAFETY: as above.
    unsafe { libc::kill(w.pid(), libc::SIGCONT) };
    w.expect(0, Duration::from_secs(30), "events were lost");
    assert_converged(&n, w);
    let (r, _, _) = n.scan("Fsmbd");
    assert_eq!(r["files"].as_u64(), Some(500));
}

#[test]
fn the_inotify_watch_limit_is_reported_and_unwatched_trees_are_polled() {
    let n = LocalNode::new("");
    for i in 0..30 {
        fs::create_dir_all(n.p(&format!("srv/samba/d{i:02}"))).unwrap();
    }
    // A user namespace of its own has its own inotify watch limit: lower it
    // there, not for the whole machine.
    let bin = env!("CARGO_BIN_EXE_hamirror");
    let mut cmd = Command::new("unshare");
    cmd.args(["-U", "-r", "sh", "-c"])
        .arg("echo 12 > /proc/sys/user/max_inotify_watches && exec \"$0\" \"$@\"")
        .arg(bin)
        .arg("--config")
        .arg(n.cfg.dir())
        .args([
            "--node",
            "serv1",
            "watch",
            "Fsmbd",
            "--events",
            "inotify",
            "--unwatched-interval",
            "1s",
        ])
        .env_remove("HAMIRROR_CONFIG")
        .env_remove("HAMIRROR_NODE");
    let w = {
        let _g = STARTING.lock().unwrap_or_else(|p| p.into_inner());
        Running::spawn(&mut cmd)
    };
    let (_, line) = w.expect(0, START, "inotify watch limit is reached");
    assert!(line.contains("cannot watch /srv/samba"), "{line}");
    assert!(line.contains("sysctl fs.inotify.max_user_watches="), "{line}");
    assert!(line.contains("user.max_inotify_watches = 12"), "{line}");
    w.expect(0, START, "start-up scan");
    let from = w.len();
    n.write("srv/samba/d29/late", b"found by the poll");
    let (_, c) = w.expect(from, Duration::from_secs(20), " committed ");
    assert!(num(&c, "new") >= 1, "{c}");
    assert_converged(&n, w);
    assert_content(&index(&n), "srv/samba/d29/late", b"found by the poll");
}

#[test]
fn a_second_watch_of_the_same_set_fails_clearly() {
    let n = LocalNode::new("");
    let w = start(&n, &["Fsmbd"]);
    let out = n.cmd(&["watch", "Fsmbd"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("in use by another hamirror process"), "{err}");
    // SIGINT stops it cleanly too.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(w.pid(), libc::SIGINT) };
    w.expect(0, Duration::from_secs(20), "stopped");
    let (status, _) = w.stop();
    assert!(status.success());
}
