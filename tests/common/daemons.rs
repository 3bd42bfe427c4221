//! Two real `hamirror run` daemons on loopback (see [`Pair`] for the
//! roots, state and keys), the example cluster's sets, hooks that do
//! nothing: started, killed, asked for their status, and their trees
//! compared in full and by the rsync oracle. Each node may run another
//! binary (a rolling upgrade runs the previous version on one of them).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::pair::Pair;

pub const NODES: [&str; 2] = ["serv1", "serv2"];
/// The roots of serv1's sets (Fsmbd, Flpd): the first four of [`ROOTS`].
#[allow(dead_code)]
pub const SERV1_ROOTS: [&str; 4] = ["etc/samba", "srv/samba", "var/lib/samba", "var/spool/lpd"];
/// Every root of both groups' sets, as paths under a node's root.
pub const ROOTS: [&str; 6] = [
    "etc/samba",
    "srv/samba",
    "var/lib/samba",
    "var/spool/lpd",
    "var/www",
    "etc/apache2/sites-enabled",
];

pub struct Cluster {
    pub p: Pair,
    daemons: [Option<Child>; 2],
    /// The binary each node runs (`start`); the one under test by default.
    pub bins: [PathBuf; 2],
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
    pub fn new() -> Cluster {
        let p = Pair::new().for_daemons();
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
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_hamirror"));
        Cluster {
            p,
            daemons: [None, None],
            bins: [bin.clone(), bin],
        }
    }

    pub fn log_path(&self, i: usize) -> std::path::PathBuf {
        self.p.cfg.tmp.path().join(format!("{}.log", NODES[i]))
    }

    pub fn start(&mut self, i: usize) {
        self.start_env(i, &[]);
    }

    /// [`Cluster::start`] with extra environment variables for the daemon.
    pub fn start_env(&mut self, i: usize, env: &[(&str, &str)]) {
        let mut cmd = self.p.cmd_bin(&self.bins[i], NODES[i], &["run", "--no-realtime"]);
        cmd.envs(env.iter().copied());
        self.daemons[i] = Some(spawn_logged(cmd, &self.log_path(i)));
    }

    /// SIGTERM (a planned stop: the node hands its groups over), then waits
    /// for the exit, at most 20 s.
    pub fn stop(&mut self, i: usize) {
        let Some(mut c) = self.daemons[i].take() else {
            return;
        };
        // SAFETY: a pid of our own child, not yet reaped.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "{} did not exit after SIGTERM
{}",
                    NODES[i],
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.daemons[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn logs(&self) -> String {
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

    pub fn status(&self, i: usize) -> Option<Value> {
        // Each node's own binary: its report, whatever version it is. The
        // exit code says how healthy the cluster is; the JSON is what counts.
        let out = self
            .p
            .cmd_bin(&self.bins[i], NODES[i], &["status", "--json"])
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn phase(&self, i: usize, group: &str) -> Option<String> {
        let s = self.status(i)?;
        let g = s["groups"].as_array()?.iter().find(|g| g["group"] == group)?.clone();
        g["phase"].as_str().map(str::to_string)
    }

    pub fn wait(&self, what: &str, timeout: Duration, mut f: impl FnMut(&Cluster) -> bool) {
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
    pub fn converge(&self, what: &str, timeout: Duration) {
        self.converge_roots(what, timeout, &ROOTS);
    }

    /// [`Cluster::converge`] for some roots only (the sets of one group).
    pub fn converge_roots(&self, what: &str, timeout: Duration, roots: &[&str]) {
        super::pair::converge_roots(&self.p.r1(), &self.p.r2(), roots, what, timeout, || self.logs());
    }
}

/// Starts `cmd` (a daemon) with its stderr appended to `log`.
pub fn spawn_logged(mut cmd: std::process::Command, log: &Path) -> Child {
    let log = fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap()
}

pub fn filetime_now() -> libc::timespec {
    libc::timespec {
        tv_sec: 1_700_000_000,
        tv_nsec: 0,
    }
}

pub fn set_mtime(p: &Path, t: libc::timespec) {
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str())).unwrap();
    let times = [t, t];
    // SAFETY: a valid path and two timespecs.
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) },
        0
    );
}
