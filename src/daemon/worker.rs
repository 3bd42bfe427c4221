//! The two threads that do the daemon's slow work, off the real-time
//! driver thread, at normal priority (hooks must not inherit real-time
//! scheduling):
//!
//! * the **transition worker** runs [`Job`]s one at a time in the order the
//!   arbiter asked for them: persist a group's epoch then run its S hooks,
//!   run K hooks, re-announce, write or clear the standby lock. One thread,
//!   one queue: hooks never run concurrently and transitions never overlap.
//!   Each job ends with exactly one [`JobDone`] to the driver.
//! * the **notifier** runs the node's N hooks for every event, in order,
//!   each with the hook timeout. It is separate so that a slow mail server
//!   never delays a takeover; N hooks still never run concurrently with
//!   each other.
//!
//! Hooks are reached through [`HookRunner`], the seam tests replace. Knows
//! the configuration's groups and the state directory; not the arbiter.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use super::Msg;
use super::state::StateDir;
use crate::arbiter::StandbyReason;
use crate::config::{Group, Hook};
use crate::hooks::{self, HookEnv, HookError, HookPolicy, Outcome};

/// A transition for the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// Persist `epoch` for the group, then run its S hooks.
    Acquire {
        group: String,
        epoch: u64,
    },
    /// Run the group's K hooks (with their retries).
    Release {
        group: String,
        epoch: u64,
    },
    /// Run the group's S hooks with `reannounce`.
    Reannounce {
        group: String,
        epoch: u64,
    },
    WriteStandbyLock {
        reason: StandbyReason,
    },
    ClearStandbyLock,
    /// Persist the maintenance register and the groups held under it.
    WriteMaintenance {
        on: bool,
        generation: u64,
        held: std::collections::BTreeMap<String, u64>,
    },
    /// Run the group's S hooks with `status` (the health monitor).
    Monitor {
        group: String,
        epoch: u64,
    },
    /// The health monitor's restart in place: K hooks, then S hooks. The
    /// epoch stays: the group never leaves this node.
    Restart {
        group: String,
        epoch: u64,
    },
}

impl Job {
    /// For `status` and logs: `start serv1 (epoch 3)`.
    pub fn describe(&self) -> String {
        match self {
            Job::Acquire { group, epoch } => format!("start {group} (epoch {epoch})"),
            Job::Release { group, epoch } => format!("stop {group} (epoch {epoch})"),
            Job::Reannounce { group, epoch } => format!("reannounce {group} (epoch {epoch})"),
            Job::WriteStandbyLock { .. } => "write standby lock".into(),
            Job::ClearStandbyLock => "clear standby lock".into(),
            Job::WriteMaintenance { on, .. } => format!("record maintenance {}", if *on { "on" } else { "off" }),
            Job::Monitor { group, epoch } => format!("check {group} (epoch {epoch})"),
            Job::Restart { group, epoch } => format!("restart {group} (epoch {epoch})"),
        }
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobDone {
    Acquired {
        group: String,
        epoch: u64,
        ok: bool,
    },
    Released {
        group: String,
        epoch: u64,
        ok: bool,
    },
    Reannounced {
        group: String,
        ok: bool,
    },
    /// A health check ended: `Err` says which hook failed and how.
    Monitored {
        group: String,
        epoch: u64,
        result: Result<(), String>,
    },
    /// A restart ended; `ok` if both the stop and the start succeeded.
    Restarted {
        group: String,
        epoch: u64,
        ok: bool,
    },
    /// The standby lock was written or cleared; `error` if that failed.
    StandbyLock {
        present: bool,
        error: Option<String>,
    },
    /// The maintenance register was persisted; `error` if that failed.
    MaintenanceWritten {
        error: Option<String>,
    },
}

/// Runs hooks. The real one is [`ScriptHooks`]; tests record calls.
pub trait HookRunner: Send {
    /// S hooks in order; on a failure the group's K hooks run before the
    /// error is returned.
    fn start(&mut self, group: &Group, env: &HookEnv) -> Result<(), HookError>;
    /// K hooks in order, each retried on failure.
    fn stop(&mut self, group: &Group, env: &HookEnv) -> Result<(), HookError>;
    /// S hooks with `reannounce`; false if one of them failed.
    fn reannounce(&mut self, group: &Group, env: &HookEnv) -> bool;
    /// S hooks with `status`, each within the group's monitor timeout.
    fn check(&mut self, group: &Group, env: &HookEnv) -> Result<(), String>;
}

/// The executables in the configuration directory, through [`crate::hooks`].
#[derive(Debug, Clone)]
pub struct ScriptHooks {
    pub policy: HookPolicy,
}

impl HookRunner for ScriptHooks {
    fn start(&mut self, group: &Group, env: &HookEnv) -> Result<(), HookError> {
        hooks::start_group(group, env, &self.policy).map(|_| ())
    }

    fn stop(&mut self, group: &Group, env: &HookEnv) -> Result<(), HookError> {
        hooks::stop_group(group, env, &self.policy).map(|_| ())
    }

    fn reannounce(&mut self, group: &Group, env: &HookEnv) -> bool {
        let mut ok = true;
        for hook in &group.start {
            let run = hooks::run_hook(hook, "reannounce", &[], env, "reannounce", self.policy.timeout);
            // Exit 3 is LSB for "unimplemented": a hook with nothing to
            // announce (a service, not an address) may say so.
            ok &= matches!(run.outcome, Outcome::Ok | Outcome::Failed { code: 3, .. });
        }
        ok
    }

    fn check(&mut self, group: &Group, env: &HookEnv) -> Result<(), String> {
        hooks::check_group(group, env, group.monitor.timeout)
    }
}

/// What the worker needs besides its queue.
pub struct WorkerConf {
    pub local: String,
    pub peer: String,
    pub groups: Vec<Group>,
    pub state: StateDir,
    pub epochs: BTreeMap<String, u64>,
    pub runner: Box<dyn HookRunner>,
}

/// Starts the transition worker: runs `jobs` until the channel closes or
/// the driver is gone.
pub fn spawn_worker(conf: WorkerConf, jobs: Receiver<Job>, done: Sender<Msg>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("hooks".into()).spawn(move || {
        normal_priority();
        let mut w = conf;
        for job in jobs {
            let result = w.run(job);
            if done.send(Msg::Done(result)).is_err() {
                break;
            }
        }
    })
}

impl WorkerConf {
    fn env(&self, group: &str, epoch: u64) -> HookEnv {
        HookEnv {
            node: self.local.clone(),
            peer: self.peer.clone(),
            group: group.to_string(),
            epoch,
        }
    }

    /// Carries out one job; never panics on a missing group (it answers
    /// `ok: false` and logs).
    pub fn run(&mut self, job: Job) -> JobDone {
        tracing::debug!("job: {}", job.describe());
        match job {
            Job::Acquire { group, epoch } => {
                let Some(g) = self.groups.iter().find(|g| g.name == group).cloned() else {
                    tracing::error!(group = %group, "no such group in the configuration; not started");
                    return JobDone::Acquired {
                        group,
                        epoch,
                        ok: false,
                    };
                };
                // The epoch first: after a crash the node must not come back
                // believing an older epoch than the one its services ran with.
                // A disk that refuses it does not stop the takeover (the peer
                // learns the epoch from our heartbeats anyway).
                self.epochs.insert(group.clone(), epoch);
                if let Err(e) = self.state.save_epochs(&self.epochs) {
                    tracing::error!(group = %group, epoch, "epoch not persisted ({e}); starting anyway");
                }
                tracing::info!(group = %group, epoch, "starting group: {} S hooks", g.start.len());
                let ok = match self.runner.start(&g, &self.env(&group, epoch)) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(group = %group, epoch, "{e}");
                        false
                    }
                };
                JobDone::Acquired { group, epoch, ok }
            }
            Job::Release { group, epoch } => {
                let Some(g) = self.groups.iter().find(|g| g.name == group).cloned() else {
                    tracing::error!(group = %group, "no such group in the configuration");
                    return JobDone::Released {
                        group,
                        epoch,
                        ok: false,
                    };
                };
                tracing::info!(group = %group, epoch, "stopping group: {} K hooks", g.stop.len());
                let ok = match self.runner.stop(&g, &self.env(&group, epoch)) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(group = %group, epoch, "{e}");
                        false
                    }
                };
                JobDone::Released { group, epoch, ok }
            }
            Job::Reannounce { group, epoch } => {
                let ok = match self.groups.iter().find(|g| g.name == group).cloned() {
                    Some(g) => self.runner.reannounce(&g, &self.env(&group, epoch)),
                    None => false,
                };
                if !ok {
                    tracing::warn!(group = %group, epoch, "re-announce: a hook failed (see above)");
                }
                JobDone::Reannounced { group, ok }
            }
            Job::Monitor { group, epoch } => {
                let result = match self.groups.iter().find(|g| g.name == group).cloned() {
                    Some(g) => self.runner.check(&g, &self.env(&group, epoch)),
                    None => Err("no such group in the configuration".into()),
                };
                JobDone::Monitored { group, epoch, result }
            }
            Job::Restart { group, epoch } => {
                let Some(g) = self.groups.iter().find(|g| g.name == group).cloned() else {
                    tracing::error!(group = %group, "no such group in the configuration; not restarted");
                    return JobDone::Restarted {
                        group,
                        epoch,
                        ok: false,
                    };
                };
                let env = self.env(&group, epoch);
                tracing::info!(group = %group, epoch, "restarting group: {} K hooks, then {} S hooks", g.stop.len(), g.start.len());
                let ok = match self.runner.stop(&g, &env).and_then(|()| self.runner.start(&g, &env)) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(group = %group, epoch, "restart: {e}");
                        false
                    }
                };
                JobDone::Restarted { group, epoch, ok }
            }
            Job::WriteStandbyLock { reason } => {
                let reason = serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                match self.state.write_standby_lock(&reason) {
                    Ok(()) => JobDone::StandbyLock {
                        present: true,
                        error: None,
                    },
                    Err(e) => JobDone::StandbyLock {
                        present: self.state.standby_lock(),
                        error: Some(e.to_string()),
                    },
                }
            }
            Job::WriteMaintenance { on, generation, held } => JobDone::MaintenanceWritten {
                error: self
                    .state
                    .save_maintenance(on, generation, &held, &super::state::boot_id())
                    .err()
                    .map(|e| e.to_string()),
            },
            Job::ClearStandbyLock => match self.state.clear_standby_lock() {
                Ok(()) => JobDone::StandbyLock {
                    present: false,
                    error: None,
                },
                Err(e) => JobDone::StandbyLock {
                    present: self.state.standby_lock(),
                    error: Some(e.to_string()),
                },
            },
        }
    }
}

/// One event for the notify hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub event: String,
    pub message: String,
    pub group: String,
    pub epoch: u64,
}

/// Starts the notifier: runs `hooks` for every notice, in order, each with
/// `timeout`. Ends when the channel closes.
pub fn spawn_notifier(
    hooks: Vec<Hook>,
    local: String,
    peer: String,
    timeout: Duration,
    notices: Receiver<Notice>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("notify".into()).spawn(move || {
        normal_priority();
        for n in notices {
            if hooks.is_empty() {
                continue;
            }
            let env = HookEnv {
                node: local.clone(),
                peer: peer.clone(),
                group: n.group,
                epoch: n.epoch,
            };
            for run in hooks::notify(&hooks, &env, &n.event, &n.message, timeout) {
                if !run.ok() {
                    tracing::warn!(hook = %run.hook, event = %n.event, "notify hook failed: {:?}", run.outcome);
                }
            }
        }
    })
}

/// Threads created by a real-time thread inherit its policy, and so would
/// every hook they fork: put this one back to normal scheduling.
pub fn normal_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: valid thread handle and parameter; failure is harmless.
    unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_OTHER, &param) };
}
