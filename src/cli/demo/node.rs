//! One demo node: a `hamirror run` child process (this same binary) with
//! its log in the demo directory, and the questions the demo asks it
//! through its operator socket. Killed when dropped, however the demo ends.
//! Knows nothing of the demo's story.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::daemon::StatusReport;

pub struct DemoNode {
    pub name: String,
    config: PathBuf,
    log: PathBuf,
    socket: PathBuf,
    child: Option<Child>,
}

impl DemoNode {
    pub fn new(name: &str, config: &Path, base: &Path, state: &Path) -> DemoNode {
        DemoNode {
            name: name.to_string(),
            config: config.to_path_buf(),
            log: base.join(format!("{name}.log")),
            socket: state.join(crate::daemon::state::CONTROL_SOCKET),
            child: None,
        }
    }

    /// Starts `hamirror run` for this node (its log is appended to).
    pub fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(std::env::current_exe()?)
            .arg("--config")
            .arg(&self.config)
            .args(["--node", &self.name, "run"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL: the node dies without running any hook.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The daemon's status, or `None` while it does not answer.
    pub fn status(&self) -> Option<StatusReport> {
        super::super::status::fetch(&self.socket).ok()
    }

    /// Whether this node's daemon says it holds `group` (start hooks done).
    pub fn holds(&self, group: &str) -> bool {
        self.status().is_some_and(|s| {
            s.groups
                .iter()
                .any(|g| g.group == group && g.phase == "held" && g.holder.as_deref() == Some(&self.name))
        })
    }

    /// Waits for `what` to become true, or fails naming the log to read.
    pub fn wait_for(
        &mut self,
        what: &str,
        within: Duration,
        mut ok: impl FnMut(&DemoNode) -> bool,
    ) -> anyhow::Result<Duration> {
        let t = Instant::now();
        while t.elapsed() < within {
            if ok(self) {
                return Ok(t.elapsed());
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(exit)) = c.try_wait()
            {
                anyhow::bail!(
                    "{} exited ({exit}) while waiting for {what}; see {}",
                    self.name,
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        anyhow::bail!(
            "{}: {what} did not happen within {:.0} s; see {}",
            self.name,
            within.as_secs_f64(),
            self.log.display()
        )
    }
}

/// SIGTERM to every node at once, then wait for them: a clean stop (each
/// daemon runs its stop hooks) in which neither takes the other's groups.
pub fn stop_all(nodes: &mut [&mut DemoNode]) {
    let mut children: Vec<Child> = nodes.iter_mut().filter_map(|n| n.child.take()).collect();
    for c in &children {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && children.iter_mut().any(|c| !matches!(c.try_wait(), Ok(Some(_)))) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for DemoNode {
    fn drop(&mut self) {
        self.kill();
    }
}
