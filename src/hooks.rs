//! Running a group's hooks: `S<NN>` hooks with `start` in ascending order,
//! `K<NN>` hooks with `stop`, `N<NN>` hooks with every event. Each hook runs
//! in its own process group with a timeout that kills the whole group, its
//! output is captured (through an anonymous file, so a daemon that a start
//! hook leaves running cannot block us by holding a pipe open) and logged.
//! Exit codes are read the LSB way. Hooks get a minimal environment
//! ([`HOOK_PATH`], `LANG=C`, the `HAMIRROR_*` variables), not the daemon's. A failed start stops what was started;
//! a failed stop is retried, then reported.
//!
//! This module runs one transition at a time and blocks; the daemon runs it
//! on a single worker so hooks never run concurrently and transitions never
//! overlap. It knows nothing of the arbiter or of mirroring.

use std::io::{Read, Seek};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::{Group, Hook};

/// `PATH` of every hook (nothing else of the daemon's environment but the
/// `HAMIRROR_*` variables reaches a hook).
pub const HOOK_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Keep at most this much of a hook's output (the end of it).
const MAX_OUTPUT: usize = 64 << 10;

/// Who runs the hooks and for which group: passed to hooks as environment.
#[derive(Debug, Clone)]
pub struct HookEnv {
    pub node: String,
    pub peer: String,
    pub group: String,
    pub epoch: u64,
}

/// Limits of one transition.
#[derive(Debug, Clone, Copy)]
pub struct HookPolicy {
    /// Longest a single hook may run before its process group is killed.
    pub timeout: Duration,
    /// How often a failed stop hook is tried again.
    pub stop_retries: u32,
    pub retry_pause: Duration,
}

impl Default for HookPolicy {
    fn default() -> Self {
        HookPolicy {
            timeout: Duration::from_secs(60),
            stop_retries: 2,
            retry_pause: Duration::from_secs(1),
        }
    }
}

/// How one hook run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Non-zero exit, with the LSB meaning of the code.
    Failed {
        code: i32,
        meaning: &'static str,
    },
    Killed {
        signal: i32,
    },
    TimedOut,
    /// Could not be started at all (missing interpreter, not executable).
    NotRun {
        reason: String,
    },
}

/// One hook run, as logged and reported.
#[derive(Debug, Clone)]
pub struct HookRun {
    pub hook: String,
    pub arg: String,
    pub outcome: Outcome,
    pub output: String,
    pub elapsed: Duration,
}

impl HookRun {
    pub fn ok(&self) -> bool {
        self.outcome == Outcome::Ok
    }
}

/// A transition that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("start of group {group} failed at {hook}: {outcome:?}; the hooks that ran were stopped again")]
    StartFailed {
        group: String,
        hook: String,
        outcome: Outcome,
        runs: Vec<HookRun>,
    },
    #[error("stop of group {group} failed at {}; services may still be running", failed.join(", "))]
    StopFailed {
        group: String,
        failed: Vec<String>,
        runs: Vec<HookRun>,
    },
}

impl HookError {
    /// A failed stop may succeed when tried again (a busy resource); a failed
    /// start usually needs an operator.
    pub fn retryable(&self) -> bool {
        matches!(self, HookError::StopFailed { .. })
    }
}

/// The LSB meaning of an init-script exit code.
pub fn lsb_meaning(code: i32) -> &'static str {
    match code {
        1 => "generic or unspecified error",
        2 => "invalid or excess arguments",
        3 => "unimplemented feature",
        4 => "user had insufficient privilege",
        5 => "program is not installed",
        6 => "program is not configured",
        7 => "program is not running",
        _ => "unknown error",
    }
}

/// Runs one hook with `arg` (and `extra` arguments), environment from `env`
/// and `event`, killing its whole process group after `timeout`.
pub fn run_hook(hook: &Hook, arg: &str, extra: &[&str], env: &HookEnv, event: &str, timeout: Duration) -> HookRun {
    let started = Instant::now();
    let done = |outcome, output| HookRun {
        hook: hook.name.clone(),
        arg: arg.to_string(),
        outcome,
        output,
        elapsed: started.elapsed(),
    };
    let mut out = match tempfile::tempfile() {
        Ok(f) => f,
        Err(e) => {
            return done(
                Outcome::NotRun {
                    reason: format!("no temp file for output: {e}"),
                },
                String::new(),
            );
        }
    };
    let (stdout, stderr) = match (out.try_clone(), out.try_clone()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => {
            return done(
                Outcome::NotRun {
                    reason: "cannot duplicate output file".into(),
                },
                String::new(),
            );
        }
    };
    let mut cmd = Command::new(&hook.path);
    // A minimal environment, not the daemon's: a hook runs as root, and
    // whatever the shell that started the daemon had (LD_PRELOAD, a PATH
    // through a user's directory, secrets) must not reach it. Variables
    // named HAMIRROR_* are the documented way to configure hooks
    // (HAMIRROR_RUN_DIR, HAMIRROR_MAILTO) and pass through.
    cmd.env_clear().env("PATH", HOOK_PATH).env("LANG", "C");
    for (k, v) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| k.starts_with("HAMIRROR_")) {
            cmd.env(k, v);
        }
    }
    cmd.arg(arg)
        .args(extra)
        .env("HAMIRROR_EVENT", event)
        .env("HAMIRROR_NODE", &env.node)
        .env("HAMIRROR_PEER", &env.peer)
        .env("HAMIRROR_GROUP", &env.group)
        .env("HAMIRROR_EPOCH", env.epoch.to_string())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    // The open files limit the daemon was started with, not the one it
    // raised for itself.
    crate::fdlimit::restore_in_child(&mut cmd);
    // ETXTBSY: the script was just written (by an admin's editor, or another
    // thread's fork still holds it open for writing); it clears at once.
    let mut spawned = cmd.spawn();
    for _ in 0..20 {
        match &spawned {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(10));
                spawned = cmd.spawn();
            }
            _ => break,
        }
    }
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return done(Outcome::NotRun { reason: e.to_string() }, String::new()),
    };
    let pgid = child.id() as i32;
    let outcome = loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                break match (status.code(), status.signal()) {
                    (Some(0), _) => Outcome::Ok,
                    (Some(code), _) => Outcome::Failed {
                        code,
                        meaning: lsb_meaning(code),
                    },
                    (None, Some(signal)) => Outcome::Killed { signal },
                    (None, None) => Outcome::Failed {
                        code: -1,
                        meaning: "unknown error",
                    },
                };
            }
            Ok(None) if started.elapsed() >= timeout => {
                // SAFETY: kill has no memory-safety preconditions; the
                // negative pid names the hook's own process group.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                let _ = child.wait();
                break Outcome::TimedOut;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => break Outcome::NotRun { reason: e.to_string() },
        }
    };
    let mut output = Vec::new();
    let _ = out.rewind();
    let _ = out.read_to_end(&mut output);
    if output.len() > MAX_OUTPUT {
        output.drain(..output.len() - MAX_OUTPUT);
    }
    let run = done(outcome, String::from_utf8_lossy(&output).into_owned());
    log_run(&run);
    run
}

/// Runs of one hook with one action, for `status --json` and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HookStat {
    pub hook: String,
    /// `start`, `stop`, `status`, `reannounce`, or the notify event.
    pub action: String,
    pub ok: u64,
    pub failed: u64,
    /// How long the last run took, and whether it succeeded.
    pub last_ms: u64,
    pub last_ok: bool,
}

static STATS: std::sync::Mutex<Vec<HookStat>> = std::sync::Mutex::new(Vec::new());

/// Every hook run of this process so far, in first-run order.
pub fn stats() -> Vec<HookStat> {
    STATS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn count(run: &HookRun) {
    let mut all = STATS.lock().unwrap_or_else(|p| p.into_inner());
    let i = match all.iter().position(|s| s.hook == run.hook && s.action == run.arg) {
        Some(i) => i,
        None => {
            all.push(HookStat {
                hook: run.hook.clone(),
                action: run.arg.clone(),
                ..HookStat::default()
            });
            all.len() - 1
        }
    };
    let s = &mut all[i];
    if run.ok() {
        s.ok += 1;
    } else {
        s.failed += 1;
    }
    s.last_ms = run.elapsed.as_millis() as u64;
    s.last_ok = run.ok();
}

fn log_run(run: &HookRun) {
    count(run);
    let out = run.output.trim_end();
    if run.arg == "status" && run.ok() {
        // A passing health check every few seconds would drown the log.
        tracing::debug!(hook = %run.hook, ms = run.elapsed.as_millis() as u64, "status ok");
        for line in out.lines() {
            tracing::debug!(hook = %run.hook, "| {line}");
        }
        return;
    }
    match &run.outcome {
        Outcome::Ok => tracing::info!(hook = %run.hook, arg = %run.arg, ms = run.elapsed.as_millis() as u64, "hook ok"),
        other => {
            tracing::warn!(hook = %run.hook, arg = %run.arg, ms = run.elapsed.as_millis() as u64, "hook failed: {other:?}")
        }
    }
    for line in out.lines() {
        tracing::info!(hook = %run.hook, "| {line}");
    }
}

/// Starts a group: S hooks in order. If one fails, the group's K hooks run
/// (stop of a service that is not running succeeds, the LSB way), so nothing
/// is left half started.
pub fn start_group(group: &Group, env: &HookEnv, policy: &HookPolicy) -> Result<Vec<HookRun>, HookError> {
    let mut runs = Vec::new();
    for hook in &group.start {
        let run = run_hook(hook, "start", &[], env, "start", policy.timeout);
        let failed = !run.ok();
        let outcome = run.outcome.clone();
        runs.push(run);
        if failed {
            let stopped = stop_group(group, env, policy);
            match stopped {
                Ok(r) => runs.extend(r),
                Err(HookError::StopFailed { runs: r, .. }) => runs.extend(r),
                Err(e) => tracing::error!("{e}"),
            }
            return Err(HookError::StartFailed {
                group: group.name.clone(),
                hook: hook.name.clone(),
                outcome,
                runs,
            });
        }
    }
    Ok(runs)
}

/// Stops a group: K hooks in order, each retried on failure; a hook that
/// still fails is reported and the remaining hooks still run (a stuck web
/// server must not keep the service address up).
pub fn stop_group(group: &Group, env: &HookEnv, policy: &HookPolicy) -> Result<Vec<HookRun>, HookError> {
    let mut runs = Vec::new();
    let mut failed = Vec::new();
    for hook in &group.stop {
        let mut attempt = 0;
        loop {
            let run = run_hook(hook, "stop", &[], env, "stop", policy.timeout);
            // LSB: "program is not running" on stop means it is stopped.
            let ok = run.ok() || matches!(run.outcome, Outcome::Failed { code: 7, .. });
            runs.push(run);
            if ok {
                break;
            }
            if attempt >= policy.stop_retries {
                failed.push(hook.name.clone());
                break;
            }
            attempt += 1;
            std::thread::sleep(policy.retry_pause);
        }
    }
    if failed.is_empty() {
        Ok(runs)
    } else {
        Err(HookError::StopFailed {
            group: group.name.clone(),
            failed,
            runs,
        })
    }
}

/// The LSB meaning of a `status` exit code (they differ from the other
/// actions': 3 is "not running" here, not "unimplemented").
pub fn status_meaning(code: i32) -> &'static str {
    match code {
        1 => "program is dead and a pid file exists",
        2 => "program is dead and a lock file exists",
        3 => "program is not running",
        4 => "program or service status is unknown",
        _ => "unknown error",
    }
}

/// Checks a running group: its S hooks in order with `status`, each with
/// `timeout`, stopping at the first that does not exit 0. The error names
/// the hook, how it ended and its last line of output. A hook that does not
/// handle `status` exits 0 (the hooks contract), so it never fails a check.
pub fn check_group(group: &Group, env: &HookEnv, timeout: Duration) -> Result<(), String> {
    for hook in &group.start {
        let run = run_hook(hook, "status", &[], env, "status", timeout);
        if run.ok() {
            continue;
        }
        let how = match &run.outcome {
            Outcome::Failed { code, .. } => format!("exited {code} ({})", status_meaning(*code)),
            Outcome::Killed { signal } => format!("killed by signal {signal}"),
            Outcome::TimedOut => format!("timed out after {} s", timeout.as_secs_f32()),
            Outcome::NotRun { reason } => format!("could not run: {reason}"),
            Outcome::Ok => unreachable!("checked above"),
        };
        let last = run
            .output
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        let last: String = last.chars().take(200).collect();
        return Err(if last.is_empty() {
            format!("{} status {how}", hook.name)
        } else {
            format!("{} status {how}: {last}", hook.name)
        });
    }
    Ok(())
}

/// Tells every notify hook about an event: `N<NN>name EVENT MESSAGE`, in
/// order, each with the timeout. Failures are logged, never fatal.
pub fn notify(hooks: &[Hook], env: &HookEnv, event: &str, message: &str, timeout: Duration) -> Vec<HookRun> {
    hooks
        .iter()
        .map(|h| run_hook(h, event, &[message], env, event, timeout))
        .collect()
}

#[cfg(test)]
mod tests;
