//! One node on a temp directory: a copy of the example `cluster.d` whose
//! serv1 has its `root` and `state` under the temp dir (with the roots of
//! `Fsmbd` created), and the real binary run against it — one-shot
//! commands, and long-running ones (`watch`) whose log lines are collected
//! as they come.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::TempConfig;

/// A node (serv1) with its data and state in a temp dir.
pub struct LocalNode {
    pub cfg: TempConfig,
}

impl LocalNode {
    /// serv1 of the example config, root and state in the temp dir, and
    /// the roots of Fsmbd created (`/etc/samba/`, `/srv/samba/`,
    /// `/var/lib/samba/`). `extra` lines are appended to serv1.conf.
    pub fn new(extra: &str) -> LocalNode {
        let cfg = TempConfig::example();
        let n = LocalNode { cfg };
        n.cfg.append(
            "serv1.conf",
            &format!(
                "root = {}\nstate = {}\n{extra}",
                n.root().display(),
                n.cfg.tmp.path().join("state").display()
            ),
        );
        for d in ["etc/samba", "srv/samba", "var/lib/samba"] {
            std::fs::create_dir_all(n.root().join(d)).unwrap();
        }
        n
    }

    pub fn root(&self) -> PathBuf {
        self.cfg.tmp.path().join("root")
    }

    pub fn state(&self) -> PathBuf {
        self.cfg.tmp.path().join("state")
    }

    /// A path under the node's root.
    pub fn p(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    pub fn write(&self, rel: &str, data: &[u8]) {
        let p = self.p(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    /// The binary with `--config` and `--node serv1`.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hamirror"));
        cmd.arg("--config")
            .arg(self.cfg.dir())
            .args(["--node", "serv1"])
            .args(args)
            .env_remove("HAMIRROR_CONFIG")
            .env_remove("HAMIRROR_NODE");
        cmd
    }

    /// `scan SET --json` (after the racy window): the report, exit code
    /// and stderr.
    pub fn scan(&self, set: &str) -> (serde_json::Value, i32, String) {
        std::thread::sleep(Duration::from_millis(150));
        let out = self.cmd(&["scan", set, "--json"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let json = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{stderr}", String::from_utf8_lossy(&out.stdout)));
        (json, out.status.code().unwrap_or(-1), stderr)
    }

    /// Starts `watch` with these arguments (log level info).
    pub fn watch(&self, args: &[&str]) -> Running {
        let mut cmd = self.cmd(&[&["watch"], args].concat());
        Running::spawn(&mut cmd)
    }
}

/// (new, changed, deleted, files_read) of a scan report.
pub fn counts(r: &serde_json::Value) -> (u64, u64, u64, u64) {
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} missing in {r}"));
    (n("new"), n("changed"), n("deleted"), n("files_read"))
}

/// The log lines of a running process, with when each arrived.
#[derive(Default)]
struct Lines {
    lines: Vec<(Instant, String)>,
    closed: bool,
}

/// A long-running command whose stderr is collected line by line.
pub struct Running {
    pub child: Child,
    lines: Arc<(Mutex<Lines>, Condvar)>,
}

impl Running {
    pub fn spawn(cmd: &mut Command) -> Running {
        let mut child = cmd
            .env("HAMIRROR_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hamirror");
        let stderr = child.stderr.take().unwrap();
        let lines: Arc<(Mutex<Lines>, Condvar)> = Arc::default();
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                l.0.lock().unwrap().lines.push((Instant::now(), line));
                l.1.notify_all();
            }
            l.0.lock().unwrap().closed = true;
            l.1.notify_all();
        });
        Running { child, lines }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Every line so far.
    pub fn log(&self) -> Vec<String> {
        self.lines
            .0
            .lock()
            .unwrap()
            .lines
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Lines so far (an index to wait from).
    pub fn len(&self) -> usize {
        self.lines.0.lock().unwrap().lines.len()
    }

    /// Waits for a line at or after index `from` for which `pred` holds;
    /// returns its index, text and arrival time.
    pub fn wait_line(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<(usize, String, Instant)> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.lines;
        let mut g = m.lock().unwrap();
        let mut seen = from;
        loop {
            for (i, (t, l)) in g.lines.iter().enumerate().skip(seen) {
                if pred(l) {
                    return Some((i, l.clone(), *t));
                }
            }
            seen = g.lines.len().max(from);
            let now = Instant::now();
            if g.closed || now >= deadline {
                return None;
            }
            g = cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    /// Waits for a line containing `needle`, panicking with the log if none
    /// comes.
    pub fn expect(&self, from: usize, timeout: Duration, needle: &str) -> (usize, String) {
        match self.wait_line(from, timeout, |l| l.contains(needle)) {
            Some((i, l, _)) => (i, l),
            None => panic!(
                "no log line with {needle:?} within {timeout:?}:\n{}",
                self.log().join("\n")
            ),
        }
    }

    /// Waits until no line has arrived for `quiet` (at most `timeout`).
    pub fn settle(&self, quiet: Duration, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.lines.0.lock().unwrap().lines.last().map(|(t, _)| *t);
            let idle_since = last.unwrap_or_else(Instant::now);
            if idle_since.elapsed() >= quiet {
                return;
            }
            assert!(Instant::now() < deadline, "never quiet:\n{}", self.log().join("\n"));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits; returns the exit status and the whole log.
    pub fn stop(mut self) -> (ExitStatus, Vec<String>) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let status = wait_timeout(&mut self.child, Duration::from_secs(20));
        self.wait_closed();
        (status, self.log())
    }

    /// SIGKILL, then waits.
    pub fn kill9(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.wait_closed();
        self.log()
    }

    fn wait_closed(&self) {
        let (m, cv) = &*self.lines;
        let mut g = m.lock().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !g.closed && Instant::now() < deadline {
            g = cv.wait_timeout(g, Duration::from_millis(100)).unwrap().0;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of `key=` in a log line (`generation=12`, `lag_ms="3.1"`).
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    let rest = rest.strip_prefix('"').map_or(rest, |r| r);
    let end = rest.find(['"', ' ']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// `field` as a number.
pub fn num(line: &str, key: &str) -> u64 {
    field(line, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {key}= in {line:?}"))
}
