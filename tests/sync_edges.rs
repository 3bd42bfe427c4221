//! Edge cases of `sync` through the real binary (issue #15.6): what cannot
//! be mirrored (a socket, a path too long for the replica) is skipped with a
//! warning and counted, not a failure of every pass; a single-file root
//! that vanished on the holder is not deleted on the replica without
//! `--force`; a set path that does not exist is named by `check`; a sender
//! restarted after `kill -9` is served at once. Each ends with the rsync
//! oracle (`-anc -HAX --numeric-ids --delete -i` prints nothing).

mod common;

use std::fs;
use std::process::Command;

use common::pair::Pair;
use common::write;

fn oracle_items(p: &Pair, root: &str, extra: &[&str]) -> String {
    oracle_run(p, root, extra).unwrap_or_else(|| panic!("rsync: files vanished while it compared"))
}

/// The oracle's items, or `None` when files vanished while rsync compared
/// (exit 24: a receiver is still at work, so not converged yet).
fn oracle_run(p: &Pair, root: &str, extra: &[&str]) -> Option<String> {
    let out = Command::new("rsync")
        .args(["-anc", "-HAX", "--numeric-ids", "--delete", "-i"])
        .args(extra)
        .arg(format!("{}/", p.src(root).display()))
        .arg(format!("{}/", p.dst(root).display()))
        .output()
        .expect("rsync is needed as the test oracle (apt-get install rsync)");
    if out.status.code() == Some(24) {
        return None;
    }
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn seeded() -> Pair {
    let mut p = Pair::new();
    write(&p.src("etc/samba/smb.conf"), b"[global]");
    write(&p.src("var/lib/samba/db"), b"db");
    write(&p.src("srv/samba/a"), b"a");
    p.start_serve();
    p.sync_ok("Fsmbd");
    p
}

fn oracle(p: &Pair, root: &str, extra: &[&str]) {
    let items = oracle_items(p, root, extra);
    assert!(items.is_empty(), "rsync sees differences in /{root}:\n{items}");
}

fn skipped(v: &serde_json::Value) -> Vec<(String, String)> {
    v["scan"]["skipped"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["path"].as_str().unwrap_or("").to_string(),
                        s["reason"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_socket_is_skipped_with_a_warning_and_counted() {
    let p = seeded();
    // The socket file stays when its listener goes, as a dead server's does.
    drop(std::os::unix::net::UnixListener::bind(p.src("srv/samba/sock")).unwrap());
    write(&p.src("srv/samba/b"), b"b");
    for pass in 0..2 {
        let (v, code, err) = p.sync("Fsmbd", &[]);
        assert_eq!(code, 0, "pass {pass}: {err}");
        assert!(err.contains("skipped /srv/samba/sock: socket (not mirrored)"), "{err}");
        assert_eq!(
            skipped(&v),
            vec![("srv/samba/sock".into(), "socket (not mirrored)".into())]
        );
    }
    oracle(&p, "srv/samba", &["--exclude=/sock"]);
}

#[test]
fn a_fifo_is_mirrored_not_skipped() {
    let p = seeded();
    let fifo = p.src("srv/samba/pipe");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    std::thread::sleep(std::time::Duration::from_millis(150));
    let (v, code, err) = p.sync("Fsmbd", &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(skipped(&v), vec![]);
    assert_eq!(v["scan"]["specials"].as_u64(), Some(1), "{v}");
    use std::os::unix::fs::FileTypeExt;
    assert!(
        fs::symlink_metadata(p.dst("srv/samba/pipe"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    oracle(&p, "srv/samba", &[]);
}

/// Builds `srv/samba/deep/` with a chain of directories whose set path is
/// longer than a set path may be (4096 bytes), and a file at the bottom
/// (by relative steps: no single call sees the whole path).
fn deep_chain(p: &Pair) {
    let name = "d".repeat(200);
    let script = format!(
        "set -e; cd {}; mkdir -p srv/samba/deep; cd srv/samba/deep; for i in $(seq 25); do mkdir {name}; cd {name}; done; echo x > leaf",
        p.r1().display()
    );
    let out = Command::new("bash").arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_path_too_long_is_skipped_with_a_warning_and_counted() {
    let p = seeded();
    deep_chain(&p);
    write(&p.src("srv/samba/b"), b"b");
    for pass in 0..2 {
        let (v, code, err) = p.sync("Fsmbd", &[]);
        assert_eq!(code, 0, "pass {pass}: {err}");
        let s = skipped(&v);
        assert_eq!(s.len(), 1, "{s:?}");
        assert!(
            s[0].0.starts_with("srv/samba/deep/ddd") && s[0].1 == "path too long (not mirrored)",
            "{s:?}"
        );
        assert!(err.contains("path too long (not mirrored)"), "{err}");
    }
    assert_eq!(fs::read(p.dst("srv/samba/b")).unwrap(), b"b");
    oracle(&p, "srv/samba", &["--exclude=/deep"]);
}

#[test]
fn a_vanished_single_file_root_is_kept_on_the_replica_unless_forced() {
    let mut p = Pair::new();
    write(&p.src("etc/printcap"), b"lp|printer");
    // Enough entries that one deletion stays under Flpd's delete limit (20 %).
    for i in 0..10 {
        write(&p.src(&format!("var/spool/lpd/q{i}")), b"job");
    }
    p.start_serve();
    p.sync_ok("Flpd");
    fs::remove_file(p.src("etc/printcap")).unwrap();
    let (_, code, err) = p.sync("Flpd", &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/etc/printcap is missing or empty on the sender"), "{err}");
    assert!(err.contains("hamirror sync Flpd --force"), "{err}");
    assert_eq!(fs::read(p.dst("etc/printcap")).unwrap(), b"lp|printer");
    // Confirmed: the replica follows.
    let (_, code, err) = p.sync("Flpd", &["--force"]);
    assert_eq!(code, 0, "{err}");
    assert!(!p.dst("etc/printcap").exists());
    oracle(&p, "var/spool/lpd", &[]);
}

#[test]
fn check_warns_about_roots_of_this_nodes_sets_that_do_not_exist() {
    let p = Pair::new();
    write(&p.src("etc/samba/smb.conf"), b"[global]");
    write(&p.src("srv/samba/a"), b"a");
    // /var/lib/samba/ is missing on serv1, and /etc/printcap (Flpd) too;
    // serv2 receives both sets, so nothing is said about them there (but
    // about its own Fhttpd).
    let out = p.run("serv1", &["check"]);
    let err = common::stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let fsmbd = p.cfg.path("serv1/Fsmbd");
    assert!(
        err.contains(&format!(
            "warning: {}:4: /var/lib/samba/ does not exist on serv1",
            fsmbd.display()
        )),
        "{err}"
    );
    assert!(err.contains("/etc/printcap does not exist on serv1"), "{err}");
    assert!(!err.contains("/etc/samba/ does not exist"), "{err}");
    let out = p.run("serv2", &["check"]);
    let err = common::stderr(&out);
    assert!(!err.contains("Fsmbd") && !err.contains("Flpd"), "{err}");
    assert!(err.contains("Fhttpd:2: /var/www/ does not exist on serv2"), "{err}");
}

/// The case: the sender (a watch, in the middle of shipping big
/// files) is killed with SIGKILL and a sender started at once (`sync`, then
/// a watch) must be served, not refused as `Busy` while the receiver's old
/// conversation finishes the work it was doing.
#[test]
fn a_sender_restarted_after_kill_9_is_served_at_once() {
    let p = seeded();
    let log = |n: u64| p.cfg.tmp.path().join(format!("watch{n}.log"));
    let start = |n: u64| {
        p.cmd("serv1", &["watch", "Fsmbd"])
            .stdout(std::process::Stdio::null())
            .stderr(fs::File::create(log(n)).unwrap())
            .spawn()
            .unwrap()
    };
    for round in 0..2u64 {
        let mut w = start(2 * round);
        std::thread::sleep(std::time::Duration::from_millis(300));
        for i in 0..6 {
            write(
                &p.src(&format!("srv/samba/big{i}")),
                &common::noise(i + 10 * round, 16 << 20),
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(700 + 400 * round));
        w.kill().unwrap();
        w.wait().unwrap();
        // A sync at once: served, not refused.
        let t0 = std::time::Instant::now();
        let (_, code, err) = p.sync("Fsmbd", &[]);
        assert_eq!(code, 0, "round {round}: the restarted sender was refused: {err}");
        eprintln!("round {round}: sync done {:?} after the kill", t0.elapsed());
        // Directory times too: an interrupted pass's are given back.
        oracle(&p, "srv/samba", &[]);
        // And a watch killed and started again at once.
        for i in 0..6 {
            write(
                &p.src(&format!("srv/samba/big{i}")),
                &common::noise(i + 100 * (round + 1), 16 << 20),
            );
        }
        let mut w = start(2 * round + 1);
        std::thread::sleep(std::time::Duration::from_millis(1500 + 300 * round));
        w.kill().unwrap();
        w.wait().unwrap();
        let mut w = start(2 * round + 2);
        let t0 = std::time::Instant::now();
        while !oracle_run(&p, "srv/samba", &[]).is_some_and(|items| items.is_empty()) {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(60),
                "round {round}: no convergence"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let _ = w.kill();
        let _ = w.wait();
        let text = fs::read_to_string(log(2 * round + 2)).unwrap();
        let busy: Vec<&str> = text.lines().filter(|l| l.contains("(Busy)")).collect();
        assert!(
            busy.is_empty(),
            "round {round}: the restarted watch was refused: {busy:?}"
        );
    }
}
