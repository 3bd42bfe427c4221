//! Mirroring inside `hamirror run`: two real daemons on loopback (separate
//! roots and state, one link), the example cluster's sets, hooks that do
//! nothing. A file written into the holder's set reaches the peer; after
//! the holder is killed and the peer takes its group over, the old
//! holder's pushes are refused (it is not the holder any more), the new
//! holder mirrors back to the old one when it returns (resync), and after
//! an operator takeover the direction flips again. Extended attributes
//! and ACLs travel with the files each way. Every phase ends with a full
//! tree comparison and the rsync oracle.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::pair::{Pair, rsync_differences, rsync_oracle, tree_differences};
use common::write;
use serde_json::Value;

const NODES: [&str; 2] = ["serv1", "serv2"];
/// Every root of both groups' sets, as paths under a node's root.
const ROOTS: [&str; 6] = [
    "etc/samba",
    "srv/samba",
    "var/lib/samba",
    "var/spool/lpd",
    "var/www",
    "etc/apache2/sites-enabled",
];

struct Cluster {
    p: Pair,
    daemons: [Option<Child>; 2],
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for d in self.daemons.iter_mut().flatten() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

impl Cluster {
    /// The loopback pair with hooks that do nothing, a reachlist both
    /// nodes reach, and a short initdead.
    fn new() -> Cluster {
        let p = Pair::new();
        for n in NODES {
            for e in fs::read_dir(p.cfg.path(n)).unwrap().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(['S', 'K', 'N']) {
                    fs::remove_file(e.path()).unwrap();
                }
            }
            p.cfg.set(&format!("{n}.conf"), "initdead", "initdead = 1s");
        }
        p.cfg.write("reachlist", "127.0.0.1\n");
        for root in [p.r1(), p.r2()] {
            for r in ROOTS {
                fs::create_dir_all(root.join(r)).unwrap();
            }
            fs::write(root.join("etc/printcap"), "lp:\n").unwrap();
        }
        // Same mtime on both sides, so the trees compare equal before the
        // first transfer touches it.
        let t = filetime_now();
        for root in [p.r1(), p.r2()] {
            set_mtime(&root.join("etc/printcap"), t);
        }
        Cluster {
            p,
            daemons: [None, None],
        }
    }

    fn log_path(&self, i: usize) -> std::path::PathBuf {
        self.p.cfg.tmp.path().join(format!("{}.log", NODES[i]))
    }

    fn start(&mut self, i: usize) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .unwrap();
        let child = self
            .p
            .cmd(NODES[i], &["run", "--no-realtime"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemons[i] = Some(child);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.daemons[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn logs(&self) -> String {
        (0..2)
            .map(|i| {
                format!(
                    "===== {} =====\n{}\n",
                    NODES[i],
                    fs::read_to_string(self.log_path(i)).unwrap_or_default()
                )
            })
            .collect()
    }

    fn status(&self, i: usize) -> Option<Value> {
        let out = self.p.run(NODES[i], &["status", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    fn phase(&self, i: usize, group: &str) -> Option<String> {
        let s = self.status(i)?;
        let g = s["groups"].as_array()?.iter().find(|g| g["group"] == group)?.clone();
        g["phase"].as_str().map(str::to_string)
    }

    fn wait(&self, what: &str, timeout: Duration, mut f: impl FnMut(&Cluster) -> bool) {
        let deadline = Instant::now() + timeout;
        while !f(self) {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for: {what}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every root is identical on both nodes, then checks it
    /// once more with the rsync oracle.
    fn converge(&self, what: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let mut diffs: Vec<String> = ROOTS
                .iter()
                .flat_map(|r| tree_differences(&self.p.src(r), &self.p.dst(r)))
                .collect();
            if diffs.is_empty() {
                // Attributes and ACLs, which only rsync compares.
                diffs = ROOTS
                    .iter()
                    .map(|r| rsync_differences(&self.p.src(r), &self.p.dst(r)))
                    .filter(|d| !d.trim().is_empty())
                    .collect();
            }
            if diffs.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: trees still differ after {timeout:?}:\n{}\n{}",
                diffs.join("\n"),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        for r in ROOTS {
            rsync_oracle(&self.p.src(r), &self.p.dst(r));
        }
    }
}

/// Runs `setfattr` or `setfacl` (packages attr, acl) on `path`.
fn attr_tool(cmd: &str, args: &[&str], path: &Path) {
    let out = std::process::Command::new(cmd)
        .args(args)
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} is needed (apt-get install attr acl): {e}"));
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
}

fn filetime_now() -> libc::timespec {
    libc::timespec {
        tv_sec: 1_700_000_000,
        tv_nsec: 0,
    }
}

fn set_mtime(p: &Path, t: libc::timespec) {
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str())).unwrap();
    let times = [t, t];
    // SAFETY: a valid path and two timespecs.
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) },
        0
    );
}

#[test]
fn the_holder_mirrors_the_old_holder_is_refused_after_a_takeover_and_gets_the_changes_back() {
    let mut c = Cluster::new();
    c.start(0);
    c.start(1);
    c.wait("each node holds its own group", Duration::from_secs(20), |c| {
        c.phase(0, "serv1").as_deref() == Some("held") && c.phase(1, "serv2").as_deref() == Some("held")
    });

    // Each holder's writes reach the peer.
    write(&c.p.src("srv/samba/share/a.txt"), b"written on serv1\n");
    write(&c.p.src("etc/samba/smb.conf"), b"[global]\n");
    write(&c.p.src("etc/samba/lmhosts"), b"127.0.0.1 localhost\n");
    write(&c.p.dst("var/www/index.html"), b"<h1>serv2</h1>\n");
    attr_tool(
        "setfattr",
        &["-n", "user.DOSATTRIB", "-v", "A20"],
        &c.p.src("srv/samba/share/a.txt"),
    );
    attr_tool("setfacl", &["-d", "-m", "u:1234:rwx"], &c.p.src("srv/samba/share"));
    c.converge("both holders' first writes", Duration::from_secs(20));

    // status shows each set of the held group in step, over the crossover.
    c.wait("serv1's Fsmbd backlog empty in status", Duration::from_secs(10), |c| {
        c.status(0).is_some_and(|s| {
            s["mirroring"] == true
                && s["sets"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|b| b["set"] == "Fsmbd" && b["pending_files"] == 0 && b["shipping"] == "ok")
        })
    });
    let text = c.p.run("serv1", &["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("Fsmbd") && text.contains("backlog 0 files / 0 bytes") && text.contains("shipping ok over"),
        "{text}"
    );

    // serv1 dies; serv2 takes its group over and writes into it.
    c.kill(0);
    c.wait("serv2 holds serv1's group", Duration::from_secs(10), |c| {
        c.phase(1, "serv1").as_deref() == Some("held")
    });
    write(
        &c.p.dst("srv/samba/share/b.txt"),
        b"written on serv2 after the takeover\n",
    );
    write(&c.p.dst("srv/samba/share/a.txt"), b"changed on serv2\n");
    fs::remove_file(c.p.dst("etc/samba/lmhosts")).unwrap();
    attr_tool(
        "setfattr",
        &["-n", "user.DOSATTRIB", "-v", "A21"],
        &c.p.dst("srv/samba/share/b.txt"),
    );
    attr_tool("setfacl", &["-m", "u:1234:rw"], &c.p.dst("srv/samba/share/a.txt"));

    // The old holder, stale, tries to push its copy: refused.
    let out = c.p.run("serv1", &["sync", "Fsmbd"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "the stale holder's push went through: {err}"
    );
    assert!(err.contains("does not hold group serv1"), "{err}");
    assert_eq!(
        fs::read(c.p.dst("srv/samba/share/a.txt")).unwrap(),
        b"changed on serv2\n",
        "the refused push changed the new holder's data"
    );

    // serv1 returns as a backup: serv2 mirrors everything back to it.
    c.start(0);
    c.converge("resync to the returned node", Duration::from_secs(30));
    assert_eq!(
        fs::read(c.p.src("srv/samba/share/b.txt")).unwrap(),
        b"written on serv2 after the takeover\n"
    );
    assert!(!c.p.src("etc/samba/lmhosts").exists());
    assert!(
        fs::read_to_string(c.log_path(1)).unwrap().contains("resync done"),
        "{}",
        c.logs()
    );

    // The operator gives the group back: the direction flips again.
    let out = c.p.run("serv1", &["takeover", "serv1"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
    c.wait("serv1 holds its group again", Duration::from_secs(10), |c| {
        c.phase(0, "serv1").as_deref() == Some("held")
    });
    write(&c.p.src("srv/samba/share/c.txt"), b"serv1 again\n");
    c.converge(
        "serv1 mirrors again after taking its group back",
        Duration::from_secs(20),
    );
}

#[test]
fn a_node_restarted_from_an_old_state_is_refused_as_sender_and_as_holder() {
    let mut c = Cluster::new();
    c.start(0);
    c.start(1);
    c.wait("each node holds its own group", Duration::from_secs(20), |c| {
        c.phase(0, "serv1").as_deref() == Some("held") && c.phase(1, "serv2").as_deref() == Some("held")
    });
    let a = "srv/samba/share/a.txt";
    write(&c.p.src(a), b"v1 on serv1\n");
    c.converge("the first copy", Duration::from_secs(20));

    // serv1's state as it is now (it holds its group at epoch 1), kept aside.
    c.kill(0);
    let old = tempfile::tempdir().unwrap();
    let copy = |from: &Path, to: &Path| {
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(to)
            .status()
            .unwrap();
        assert!(st.success());
    };
    copy(&c.p.state(1), &old.path().join("state"));

    // The group moves to serv2 (epoch 2), back to serv1 (3), to serv2 (4).
    c.wait("serv2 holds serv1's group", Duration::from_secs(10), |c| {
        c.phase(1, "serv1").as_deref() == Some("held")
    });
    write(&c.p.dst(a), b"v2 on serv2\n");
    c.start(0);
    c.converge("serv1 back as a backup", Duration::from_secs(30));
    let out = c.p.run("serv1", &["takeover", "serv1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    c.wait("serv1 holds its group again", Duration::from_secs(10), |c| {
        c.phase(0, "serv1").as_deref() == Some("held")
    });
    write(&c.p.src(a), b"v3 on serv1\n");
    c.converge("serv1's change mirrored", Duration::from_secs(20));
    c.kill(0);
    c.wait("serv2 holds serv1's group once more", Duration::from_secs(10), |c| {
        c.phase(1, "serv1").as_deref() == Some("held")
    });
    write(&c.p.dst(a), b"v4 on serv2\n");

    // serv1 comes back from the old state directory (epoch 1, an old index).
    fs::remove_dir_all(c.p.state(1)).unwrap();
    copy(&old.path().join("state"), &c.p.state(1));
    // As a sender: refused, and nothing of serv2's copy changes.
    let out = c.p.run("serv1", &["sync", "--force", "Fsmbd"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "the stale node's push went through: {err}");
    assert!(err.contains("does not hold group serv1"), "{err}");
    assert_eq!(fs::read(c.p.dst(a)).unwrap(), b"v4 on serv2\n");
    // As a holder: its daemon starts as a backup of the newer epoch and
    // gets the holder's copy; it never takes the group.
    c.start(0);
    let t0 = Instant::now();
    c.converge("the stale node gets the holder's copy", Duration::from_secs(30));
    assert_eq!(fs::read(c.p.src(a)).unwrap(), b"v4 on serv2\n");
    while t0.elapsed() < Duration::from_secs(3) {
        assert_ne!(c.phase(0, "serv1").as_deref(), Some("held"), "{}", c.logs());
        assert_eq!(c.phase(1, "serv1").as_deref(), Some("held"), "{}", c.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    let s = c.status(1).unwrap();
    let g = s["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "serv1")
        .unwrap()
        .clone();
    assert!(g["epoch"].as_u64().unwrap() >= 4, "{g}");
}
