//! Fan-out with the daemon: THREE real `hamirror run` processes
//! (`failover = pacemaker`) on 127.0.0.1, each with its own ports, root,
//! state and identity. Group serv1 is promoted on serv1; a writer writes
//! into its Samba set and logs each write once the holder reports it
//! acknowledged by both replicas, each with its own acknowledged
//! generation (`status --json`). serv3's daemon is frozen (SIGSTOP): serv2's
//! acknowledgement keeps moving while serv3's stays; thawed, serv3 catches
//! up. serv1's daemon is killed (-9), `hamirror promote serv1` on serv2
//! makes serv2 the holder: it mirrors to serv3, and to serv1 once that runs
//! again (a returning replica, resynced alone). No logged write is lost, and
//! at the end every replica's tree equals the holder's (tree comparison and
//! the rsync oracle).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use common::daemons::{filetime_now, set_mtime, spawn_logged};
use common::pair::{assert_trees_equal, converge_roots, free_udp_ports};
use common::{TempConfig, stderr};
use serde_json::Value;

const NODES: [&str; 3] = ["serv1", "serv2", "serv3"];
/// The roots of group serv1's sets (Fsmbd, Flpd) under each node's root.
const ROOTS: [&str; 4] = ["etc/samba", "srv/samba", "var/lib/samba", "var/spool/lpd"];
const GROUP: &str = "serv1";
const SET: &str = "Fsmbd";

struct Trio {
    cfg: TempConfig,
    daemons: [Option<Child>; 3],
}

impl Drop for Trio {
    fn drop(&mut self) {
        for c in self.daemons.iter_mut().flatten() {
            // SAFETY: kill(2) of our own child; a frozen one is thawed first
            // so it can die and be reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Trio {
    /// The example cluster plus serv3 (no sets of its own), every node in
    /// Pacemaker mode, hooks that do nothing, a 1 s initdead.
    fn new() -> Trio {
        let cfg = TempConfig::example();
        let ports = free_udp_ports::<6>();
        let base = cfg.tmp.path().to_path_buf();
        let serv2 = fs::read_to_string(cfg.path("serv2.conf")).unwrap();
        let serv3: String = serv2
            .lines()
            .filter(|l| !l.starts_with("Fhttpd"))
            .map(|l| format!("{l}\n"))
            .collect();
        cfg.write("serv3.conf", &serv3);
        fs::create_dir_all(cfg.path("serv3")).unwrap();
        for (i, n) in NODES.iter().enumerate() {
            let f = format!("{n}.conf");
            let text = fs::read_to_string(cfg.path(&f)).unwrap();
            let kept: Vec<&str> = text
                .lines()
                .filter(|l| {
                    !["address", "lan", "port", "fingerprint", "auto_failback", "initdead"]
                        .iter()
                        .any(|k| l.starts_with(k))
                })
                .collect();
            let mut text = kept.join("\n");
            text.push_str(&format!(
                "\naddress = 127.0.0.1\nport = {}\nheartbeat_port = {}\nroot = {}\nstate = {}\n\
                 failover = pacemaker\ninitdead = 1s\n",
                ports[i],
                ports[3 + i],
                base.join(format!("r{}", i + 1)).display(),
                base.join(format!("s{}", i + 1)).display()
            ));
            fs::write(cfg.path(&f), text).unwrap();
            if let Ok(dir) = fs::read_dir(cfg.path(n)) {
                for e in dir.flatten() {
                    if e.file_name().to_string_lossy().starts_with(['S', 'K', 'N']) {
                        fs::remove_file(e.path()).unwrap();
                    }
                }
            }
        }
        cfg.write("reachlist", "127.0.0.1\n");
        for n in NODES {
            cfg.init_node(n);
        }
        let out = cfg.run(&["check"]);
        assert_eq!(out.status.code(), Some(0), "check: {}", stderr(&out));
        // The same starting tree everywhere, same mtimes: equal before any
        // transfer.
        for i in 0..3 {
            let root = base.join(format!("r{}", i + 1));
            for r in ROOTS {
                fs::create_dir_all(root.join(r)).unwrap();
            }
            fs::write(root.join("etc/printcap"), "lp:\n").unwrap();
            set_mtime(&root.join("etc/printcap"), filetime_now());
        }
        Trio {
            cfg,
            daemons: [None, None, None],
        }
    }

    fn root(&self, i: usize) -> PathBuf {
        self.cfg.tmp.path().join(format!("r{}", i + 1))
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.cfg.tmp.path().join(format!("{}.log", NODES[i]))
    }

    fn cmd(&self, i: usize, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hamirror"));
        c.arg("--config")
            .arg(self.cfg.dir())
            .arg("--node")
            .arg(NODES[i])
            .args(args)
            .env_remove("HAMIRROR_CONFIG")
            .env_remove("HAMIRROR_NODE")
            .env("HAMIRROR_LOG", "info");
        c
    }

    fn start(&mut self, i: usize) {
        let cmd = self.cmd(i, &["run", "--no-realtime"]);
        self.daemons[i] = Some(spawn_logged(cmd, &self.log_path(i)));
    }

    fn signal(&self, i: usize, sig: i32) {
        let pid = self.daemons[i].as_ref().expect("running").id();
        // SAFETY: kill(2) of our own child.
        assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.daemons[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn logs(&self) -> String {
        (0..3)
            .map(|i| {
                let log = fs::read_to_string(self.log_path(i)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("===== {} =====\n{}\n", NODES[i], tail.join("\n"))
            })
            .collect()
    }

    fn status(&self, i: usize) -> Option<Value> {
        let out = self.cmd(i, &["status", "--json"]).output().ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    fn wait(&self, what: &str, timeout: Duration, mut f: impl FnMut(&Trio) -> bool) {
        common::wait_for(what, timeout, || self.logs(), || f(self));
    }

    /// `hamirror promote GROUP` on node `i`; asserts it succeeded.
    fn promote(&self, i: usize) {
        let out = self.cmd(i, &["promote", GROUP, "--timeout", "20s"]).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "promote on {}: {}\n{}",
            NODES[i],
            stderr(&out),
            self.logs()
        );
    }
}

fn group<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["group"] == name))
        .unwrap_or(&Value::Null)
}

/// The holder's generation of [`SET`] and each replica's acknowledged one.
fn acks(s: &Value) -> (Option<u64>, Vec<(String, Option<u64>)>) {
    let set = s["sets"]
        .as_array()
        .and_then(|v| v.iter().find(|x| x["set"] == SET))
        .unwrap_or(&Value::Null);
    let replicas = set["replicas"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|r| {
                    (
                        r["peer"].as_str().unwrap_or("").to_string(),
                        r["acked_generation"].as_u64(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (set["generation"].as_u64(), replicas)
}

fn replica<'a>(s: &'a Value, peer: &str) -> &'a Value {
    s["sets"]
        .as_array()
        .and_then(|v| v.iter().find(|x| x["set"] == SET))
        .and_then(|x| x["replicas"].as_array())
        .and_then(|r| r.iter().find(|r| r["peer"] == peer))
        .unwrap_or(&Value::Null)
}

/// Files changed on the holder that `peer` has not acknowledged.
fn pending_for(s: &Value, peer: &str) -> Option<u64> {
    replica(s, peer)["pending_files"].as_u64()
}

fn acked_by(s: &Value, peer: &str) -> Option<u64> {
    acks(s).1.into_iter().find(|(p, _)| p == peer).and_then(|(_, a)| a)
}

/// Every peer of node `i` as its status lists it: (name, alive).
fn peers(s: &Value) -> Vec<(String, bool)> {
    s["peers"]
        .as_array()
        .map(|p| {
            p.iter()
                .map(|p| (p["name"].as_str().unwrap_or("").to_string(), p["alive"] == true))
                .collect()
        })
        .unwrap_or_default()
}

/// The writer: one file per write under the Samba share, its content
/// unique; `log` holds the writes the holder reported acknowledged.
struct Writer {
    n: usize,
    log: Vec<(String, Vec<u8>)>,
}

impl Writer {
    /// Writes `count` files on `root` (the holder's) and returns them.
    fn write(&mut self, root: &Path, count: usize) -> Vec<(String, Vec<u8>)> {
        (0..count)
            .map(|_| {
                self.n += 1;
                let rel = format!("srv/samba/w/{:04}.txt", self.n);
                let data = format!("write {} {}\n", self.n, "x".repeat(self.n * 37 % 5000)).into_bytes();
                let p = root.join(&rel);
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::write(&p, &data).unwrap();
                (rel, data)
            })
            .collect()
    }

    /// Every logged write is on `root`, byte for byte.
    fn assert_on(&self, root: &Path, node: &str) {
        for (rel, data) in &self.log {
            let got = fs::read(root.join(rel)).unwrap_or_default();
            assert!(got == *data, "acknowledged write {rel} lost or changed on {node}");
        }
    }
}

/// Waits until the holder `h` has a generation of [`SET`] above `after`
/// that every one of `replicas` acknowledged; returns it.
fn wait_acked(t: &Trio, h: usize, replicas: &[&str], after: u64, within: Duration) -> u64 {
    let mut seen = 0;
    t.wait(
        &format!("{replicas:?} acknowledge a generation above {after}"),
        within,
        |t| {
            let Some(s) = t.status(h) else { return false };
            let (Some(g), _) = acks(&s) else { return false };
            seen = g;
            // Nothing pending for it either: the watcher has committed what
            // was written, and the replica has it.
            g > after
                && replicas
                    .iter()
                    .all(|r| acked_by(&s, r) == Some(g) && pending_for(&s, r) == Some(0))
        },
    );
    seen
}

/// Node `to`'s copy of group serv1's sets equals node `from`'s, in full.
fn converge(t: &Trio, from: usize, to: usize, within: Duration) {
    let what = format!("{} and {}", NODES[from], NODES[to]);
    converge_roots(&t.root(from), &t.root(to), &ROOTS, &what, within, || t.logs());
    for r in ROOTS {
        assert_trees_equal(&t.root(from).join(r), &t.root(to).join(r));
    }
}

#[test]
fn three_daemons_one_holder_two_replicas_freeze_kill_and_promote_elsewhere() {
    let mut t = Trio::new();
    for i in 0..3 {
        t.start(i);
    }
    // Every daemon hears both others, each on its own.
    t.wait("every node sees both peers alive", Duration::from_secs(20), |t| {
        (0..3).all(|i| {
            t.status(i).is_some_and(|s| {
                let p = peers(&s);
                p.len() == 2 && p.iter().all(|(_, alive)| *alive) && s["mode"] == "active"
            })
        })
    });
    let s1 = t.status(0).unwrap();
    let names: Vec<String> = peers(&s1).into_iter().map(|p| p.0).collect();
    assert_eq!(names, ["serv2", "serv3"]);
    for p in s1["peers"].as_array().unwrap() {
        let links = p["links"].as_array().unwrap();
        assert_eq!(links.len(), 1, "{p}");
        assert!(
            links[0]["link"] == "crossover" && links[0]["received"].as_u64() > Some(0),
            "{p}"
        );
    }

    t.promote(0);
    t.wait(
        "serv2 and serv3 see serv1 hold its group",
        Duration::from_secs(10),
        |t| (1..3).all(|i| t.status(i).is_some_and(|s| group(&s, GROUP)["holder"] == "serv1")),
    );
    let epoch1 = group(&t.status(0).unwrap(), GROUP)["epoch"].as_u64().unwrap();

    // Both replicas acknowledge, each its own generation.
    let mut w = Writer { n: 0, log: vec![] };
    let mut g = 0;
    for _ in 0..3 {
        let batch = w.write(&t.root(0), 4);
        g = wait_acked(&t, 0, &["serv2", "serv3"], g, Duration::from_secs(30));
        w.log.extend(batch);
    }
    let (_, replicas) = acks(&t.status(0).unwrap());
    assert_eq!(
        replicas.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        ["serv2", "serv3"],
        "one replica entry per peer"
    );
    converge(&t, 0, 1, Duration::from_secs(10));
    converge(&t, 0, 2, Duration::from_secs(10));

    // serv3 frozen: serv2's acknowledgement moves on, serv3's stays.
    t.signal(2, libc::SIGSTOP);
    let frozen_at = acked_by(&t.status(0).unwrap(), "serv3");
    assert_eq!(frozen_at, Some(g));
    for _ in 0..3 {
        let batch = w.write(&t.root(0), 3);
        let before = g;
        g = wait_acked(&t, 0, &["serv2"], g, Duration::from_secs(20));
        assert!(g > before);
        w.log.extend(batch);
        assert_eq!(
            acked_by(&t.status(0).unwrap(), "serv3"),
            frozen_at,
            "a frozen replica acknowledged"
        );
    }
    // serv1 sees serv3 dead, serv2 alive.
    t.wait("serv1 sees serv3 silent", Duration::from_secs(10), |t| {
        t.status(0)
            .is_some_and(|s| peers(&s) == [("serv2".to_string(), true), ("serv3".to_string(), false)])
    });
    t.signal(2, libc::SIGCONT);
    wait_acked(&t, 0, &["serv2", "serv3"], g - 1, Duration::from_secs(30));
    converge(&t, 0, 2, Duration::from_secs(10));
    w.assert_on(&t.root(2), "serv3");
    // Brought up to date as the one replica that came back.
    let log = fs::read_to_string(t.log_path(0)).unwrap();
    assert!(
        log.contains("resync: pushing every set of serv1 to serv3"),
        "{}",
        t.logs()
    );

    // The holder dies; serv2 is promoted and takes a newer epoch.
    let batch = w.write(&t.root(0), 5);
    g = wait_acked(&t, 0, &["serv2", "serv3"], g, Duration::from_secs(30));
    w.log.extend(batch);
    assert!(g > 0);
    t.kill(0);
    t.wait("serv2 sees serv1 dead", Duration::from_secs(10), |t| {
        t.status(1)
            .is_some_and(|s| peers(&s).iter().any(|(n, alive)| n == "serv1" && !alive))
    });
    w.assert_on(&t.root(1), "serv2");
    w.assert_on(&t.root(2), "serv3");
    t.promote(1);
    let s2 = t.status(1).unwrap();
    let epoch2 = group(&s2, GROUP)["epoch"].as_u64().unwrap();
    assert!(epoch2 > epoch1, "the new holder's epoch {epoch2} is not above {epoch1}");
    t.wait("serv3 sees serv2 hold the group", Duration::from_secs(10), |t| {
        t.status(2).is_some_and(|s| group(&s, GROUP)["holder"] == "serv2")
    });

    // serv2 mirrors to serv3 (serv1 is down: only its own queue waits).
    let batch = w.write(&t.root(1), 6);
    let g2 = wait_acked(&t, 1, &["serv3"], 0, Duration::from_secs(30));
    w.log.extend(batch);
    assert_eq!(acked_by(&t.status(1).unwrap(), "serv1"), None, "serv1 is down");
    converge(&t, 1, 2, Duration::from_secs(10));

    // serv1 runs again: unpromoted, resynced as a replica of serv2.
    t.start(0);
    t.wait("serv1 back as a replica of serv2", Duration::from_secs(20), |t| {
        t.status(0)
            .is_some_and(|s| group(&s, GROUP)["holder"] == "serv2" && group(&s, GROUP)["phase"] == "released")
    });
    let batch = w.write(&t.root(1), 2);
    wait_acked(&t, 1, &["serv1", "serv3"], g2, Duration::from_secs(40));
    w.log.extend(batch);
    for i in [0, 2] {
        converge(&t, 1, i, Duration::from_secs(20));
    }
    for (i, n) in NODES.iter().enumerate() {
        w.assert_on(&t.root(i), n);
    }
    let log = fs::read_to_string(t.log_path(1)).unwrap();
    assert!(
        log.contains("resync: pushing every set of serv1 to serv1"),
        "{}",
        t.logs()
    );
    assert_eq!(w.log.len(), 34, "every batch logged once acknowledged");
}
