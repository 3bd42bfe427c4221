//! Tests of the daemon's pieces without sockets or namespaces: the driver
//! on a hand-driven clock (jobs read straight from its queue, the hook
//! worker played by the test), the worker with a recording hook runner and
//! with real scripts. The real processes are tested in `tests/cluster.rs`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};

use super::worker::{WorkerConf, normal_priority};
use super::*;
use crate::arbiter::{Claim, GroupClaim, LinkId, Millis, NodeState, Reach};
use crate::config::{Group, Hook, HookKind, MirrorSet, Timers};
use crate::hooks::HookEnv;

fn group(name: &str) -> Group {
    Group {
        name: name.into(),
        owner: name.into(),
        sets: vec![MirrorSet {
            name: format!("F{name}data"),
            file: format!("/c/{name}/F{name}data").into(),
            roots: vec![],
            chunk: Default::default(),
            delete_limit: 50,
            excludes: Default::default(),
            xattrs: Default::default(),
        }],
        start: vec![],
        stop: vec![],
        notify: vec![],
        monitor: Default::default(),
    }
}

type Calls = Arc<Mutex<Vec<String>>>;

/// A mirror that records what the daemon tells it.
struct Recorder(Calls);

impl MirrorControl for Recorder {
    fn start_watching(&mut self, group: &str, epoch: u64) {
        self.0.lock().unwrap().push(format!("watch {group} {epoch}"));
    }
    fn stop_watching(&mut self, group: &str) {
        self.0.lock().unwrap().push(format!("unwatch {group}"));
    }
    fn resync(&mut self, group: &str) {
        self.0.lock().unwrap().push(format!("resync {group}"));
    }
    fn view_changed(&mut self, view: &ClusterView) {
        let holders: Vec<String> = view
            .groups
            .iter()
            .map(|g| format!("{}@{}", g.group, g.holder.as_deref().unwrap_or("-")))
            .collect();
        self.0.lock().unwrap().push(format!("view {}", holders.join(",")));
    }
    fn backlog(&self) -> Vec<SetBacklog> {
        vec![SetBacklog {
            set: "Fserv1data".into(),
            group: "serv1".into(),
            pending_files: Some(4),
            pending_bytes: Some(4096),
            lag_ms: Some(120),
            ..SetBacklog::default()
        }]
    }
}

struct Rig {
    d: Driver,
    jobs: Receiver<Job>,
    notices: Receiver<Notice>,
    adverts: Arc<Mutex<Vec<NodeState>>>,
}

fn rig(mirror: Option<Box<dyn MirrorControl>>) -> Rig {
    rig_with(mirror, Default::default())
}

/// A rig whose serv1 group has this health monitor.
fn rig_with(mirror: Option<Box<dyn MirrorControl>>, monitor: crate::config::MonitorConf) -> Rig {
    let mut serv1 = group("serv1");
    serv1.monitor = monitor;
    let mut cfg = ArbiterConfig::new("serv1", "serv2", Timers::default(), true);
    cfg.preferred = Some(crate::arbiter::Side::Local);
    let arbiter = Arbiter::new(cfg, Millis(0), Startup::default());
    let (jtx, jobs) = mpsc::channel();
    let (ntx, notices) = mpsc::channel();
    let adverts = Arc::new(Mutex::new(Vec::new()));
    let a2 = adverts.clone();
    let mut d = Driver::new(
        arbiter,
        DriverConf {
            local: "serv1".into(),
            peer: "serv2".into(),
            groups: vec![serv1, group("serv2")],
            incarnation: 1,
            started: Millis(0),
            standby_lock: false,
            jobs: jtx,
            notices: ntx,
            advertise: Box::new(move |s| a2.lock().unwrap().push(s.clone())),
            mirror,
        },
    );
    d.pump(Millis(0));
    Rig {
        d,
        jobs,
        notices,
        adverts,
    }
}

fn peer(groups: &[(&str, u64, Claim)]) -> NodeState {
    NodeState {
        reach: Some(Reach { up: 3, total: 3 }),
        groups: groups
            .iter()
            .map(|(g, e, c)| GroupClaim {
                group: g.to_string(),
                epoch: *e,
                claim: *c,
            })
            .collect(),
        ..Default::default()
    }
}

fn heartbeat(at: u64, state: NodeState) -> Msg {
    Msg::Input(Input::Heartbeat {
        at: Millis(at),
        peer: 0,
        link: LinkId(0),
        incarnation: 7,
        version: hamirror_wire::heartbeat::VERSION,
        state,
    })
}

impl Rig {
    fn jobs(&self) -> Vec<Job> {
        self.jobs.try_iter().collect()
    }

    /// Plays the worker: every queued job done (ok), repeatedly.
    fn settle(&mut self, now: u64) -> Vec<Job> {
        let mut all = vec![];
        loop {
            let batch = self.jobs();
            if batch.is_empty() {
                return all;
            }
            for j in &batch {
                let done = match j.clone() {
                    Job::Acquire { group, epoch } => JobDone::Acquired { group, epoch, ok: true },
                    Job::Release { group, epoch } => JobDone::Released { group, epoch, ok: true },
                    Job::Reannounce { group, .. } => JobDone::Reannounced { group, ok: true },
                    Job::WriteStandbyLock { .. } => JobDone::StandbyLock {
                        present: true,
                        error: None,
                    },
                    Job::ClearStandbyLock => JobDone::StandbyLock {
                        present: false,
                        error: None,
                    },
                    Job::WriteMaintenance { .. } => JobDone::MaintenanceWritten { error: None },
                    Job::Monitor { group, epoch } => JobDone::Monitored {
                        group,
                        epoch,
                        result: Ok(()),
                    },
                    Job::Restart { group, epoch } => JobDone::Restarted { group, epoch, ok: true },
                };
                self.d.handle(Millis(now), Msg::Done(done));
            }
            all.extend(batch);
        }
    }

    /// Start-up clean-up done, contact with a peer holding serv2, serv1 held.
    fn running(&mut self) {
        let cleanup = self.settle(5);
        assert_eq!(
            cleanup,
            vec![
                Job::Release {
                    group: "serv1".into(),
                    epoch: 0
                },
                Job::Release {
                    group: "serv2".into(),
                    epoch: 0
                }
            ]
        );
        self.d
            .handle(Millis(10), heartbeat(10, peer(&[("serv2", 1, Claim::Held)])));
        let acquired = self.settle(20);
        assert_eq!(
            acquired,
            vec![Job::Acquire {
                group: "serv1".into(),
                epoch: 1
            }]
        );
    }

    fn ask(&mut self, now: u64, req: Request) -> Response {
        let (tx, rx) = mpsc::channel();
        self.d.handle(Millis(now), Msg::Control { req, reply: tx });
        rx.try_recv().unwrap()
    }
}

#[test]
fn start_up_cleans_up_then_starts_its_own_group_and_status_shows_the_holders() {
    let mut r = rig(None);
    assert!(
        r.adverts.lock().unwrap()[0].starting,
        "first advert is the starting state"
    );
    r.running();
    let s = r.ask(30, Request::Status).status.unwrap();
    assert_eq!(s.mode, "active");
    assert!(s.peer_alive);
    let holders: Vec<_> = s
        .groups
        .iter()
        .map(|g| (g.group.as_str(), g.holder.as_deref(), g.epoch))
        .collect();
    assert_eq!(holders, vec![("serv1", Some("serv1"), 1), ("serv2", Some("serv2"), 1)]);
    assert_eq!(s.links[0].last_heard_ms_ago, Some(20));
    assert_eq!(s.links[1].last_heard_ms_ago, None);
    assert!(s.hooks.running.is_none());
    // Sets are listed with an empty backlog while mirroring is not plugged in.
    assert!(!s.mirroring);
    assert_eq!(s.sets.len(), 2);
    assert!(s.sets.iter().all(|b| b.pending_files.is_none() && b.lag_ms.is_none()));
    assert!(
        s.events
            .iter()
            .any(|e| e.event == "acquired" && e.detail == "epoch=1 group=serv1")
    );
    let held = r.adverts.lock().unwrap().last().unwrap().clone();
    assert_eq!(held.claim("serv1").map(|c| c.claim), Some(Claim::Held));
    // Every event went to the notifier too, with its group and epoch.
    let notices: Vec<Notice> = r.notices.try_iter().collect();
    let acq = notices.iter().find(|n| n.event == "acquired").unwrap();
    assert_eq!((acq.group.as_str(), acq.epoch), ("serv1", 1));
    assert_eq!(acq.message, "serv1: acquired epoch=1 group=serv1");
}

#[test]
fn status_shows_the_running_transition_and_the_queue() {
    let mut r = rig(None);
    let s = r.ask(1, Request::Status).status.unwrap();
    assert_eq!(s.hooks.running.as_deref(), Some("stop serv1 (epoch 0)"));
    assert_eq!(s.hooks.queued, vec!["stop serv2 (epoch 0)".to_string()]);
    assert_eq!(s.mode, "starting");
}

#[test]
fn operator_standby_writes_the_lock_before_any_release() {
    let mut r = rig(None);
    r.running();
    let resp = r.ask(100, Request::Standby);
    assert!(resp.ok, "{resp:?}");
    let jobs = r.jobs();
    assert_eq!(
        jobs,
        vec![
            Job::WriteStandbyLock {
                reason: crate::arbiter::StandbyReason::Operator
            },
            Job::Release {
                group: "serv1".into(),
                epoch: 1
            }
        ]
    );
    assert!(r.ask(101, Request::Standby).message.unwrap().contains("already"));
    let e = r.ask(102, Request::Takeover { group: "serv2".into() }).error.unwrap();
    assert!(e.contains("standby"), "{e}");
}

#[test]
fn takeover_of_an_unknown_group_is_refused_with_the_arbiters_reason() {
    let mut r = rig(None);
    r.running();
    let resp = r.ask(100, Request::Takeover { group: "nope".into() });
    assert!(!resp.ok);
    assert!(resp.error.unwrap().contains("no group named \"nope\""));
}

#[test]
fn sigterm_releases_held_groups_without_a_lock_then_the_daemon_is_done() {
    let mut r = rig(None);
    r.running();
    r.d.handle(Millis(100), Msg::Signal(libc::SIGTERM));
    assert_eq!(r.d.outcome(), Outcome::Running);
    let jobs = r.jobs();
    assert_eq!(
        jobs,
        vec![Job::Release {
            group: "serv1".into(),
            epoch: 1
        }],
        "no standby lock on shutdown"
    );
    // The peer is told at once: standby, so it takes serv1 without waiting
    // for deadtime.
    assert!(r.adverts.lock().unwrap().last().unwrap().standby);
    let refused = r.ask(101, Request::Standby);
    assert!(!refused.ok && refused.error.unwrap().contains("shutting down"));
    r.d.handle(
        Millis(120),
        Msg::Done(JobDone::Released {
            group: "serv1".into(),
            epoch: 1,
            ok: true,
        }),
    );
    assert_eq!(r.d.outcome(), Outcome::Clean);
    let advert = r.adverts.lock().unwrap().last().unwrap().clone();
    assert!(advert.groups.iter().all(|c| c.claim != Claim::Held), "{advert:?}");
    assert!(!r.notices.try_iter().any(|n| n.event == "standby_entered"));
}

#[test]
fn a_failed_stop_during_shutdown_and_a_second_signal_are_reported() {
    let mut r = rig(None);
    r.running();
    r.d.handle(Millis(100), Msg::Signal(libc::SIGINT));
    r.jobs();
    r.d.handle(
        Millis(120),
        Msg::Done(JobDone::Released {
            group: "serv1".into(),
            epoch: 1,
            ok: false,
        }),
    );
    assert_eq!(r.d.outcome(), Outcome::StopFailed(vec!["serv1".into()]));

    let mut r = rig(None);
    r.running();
    r.d.handle(Millis(100), Msg::Signal(libc::SIGHUP));
    assert_eq!(r.d.outcome(), Outcome::Running, "SIGHUP is ignored");
    r.d.handle(Millis(101), Msg::Signal(libc::SIGTERM));
    r.d.handle(Millis(102), Msg::Signal(libc::SIGTERM));
    assert_eq!(r.d.outcome(), Outcome::Forced);
}

#[test]
fn a_stale_holder_seen_on_the_peer_makes_this_node_reannounce() {
    let mut r = rig(None);
    r.running();
    // The peer claims serv1 with an older epoch (it was frozen): we keep
    // it and announce our addresses again.
    r.d.handle(
        Millis(100),
        heartbeat(100, peer(&[("serv1", 0, Claim::Held), ("serv2", 1, Claim::Held)])),
    );
    let jobs = r.settle(100);
    assert_eq!(
        jobs,
        vec![Job::Reannounce {
            group: "serv1".into(),
            epoch: 1
        }]
    );
    // ... and once more when it has let go.
    r.d.handle(Millis(150), heartbeat(150, peer(&[("serv2", 1, Claim::Held)])));
    assert_eq!(
        r.jobs(),
        vec![Job::Reannounce {
            group: "serv1".into(),
            epoch: 1
        }]
    );
}

#[test]
fn the_mirror_seam_hears_watch_resync_views_and_fills_the_backlog() {
    let calls: Calls = Arc::default();
    let mut r = rig(Some(Box::new(Recorder(calls.clone()))));
    r.running();
    {
        let c = calls.lock().unwrap();
        assert!(c.contains(&"watch serv1 1".to_string()), "{c:?}");
        assert_eq!(c.last().unwrap(), "view serv1@serv1,serv2@serv2", "{c:?}");
        // Contact came before serv1 was held: nothing to resync yet.
        assert!(!c.iter().any(|x| x.starts_with("resync")), "{c:?}");
    }
    let s = r.ask(30, Request::Status).status.unwrap();
    assert!(s.mirroring);
    let b = s.sets.iter().find(|b| b.set == "Fserv1data").unwrap();
    assert_eq!((b.pending_files, b.lag_ms), (Some(4), Some(120)));
    assert_eq!(
        s.sets.iter().find(|b| b.set == "Fserv2data").unwrap().pending_files,
        None
    );

    // The peer restarts: our held group must be brought up to date there.
    r.d.handle(
        Millis(200),
        Msg::Input(Input::Heartbeat {
            at: Millis(200),
            peer: 0,
            link: LinkId(0),
            incarnation: 8,
            version: hamirror_wire::heartbeat::VERSION,
            state: peer(&[("serv2", 1, Claim::Held)]),
        }),
    );
    assert!(calls.lock().unwrap().contains(&"resync serv1".to_string()));
    // Standby: serv1 released, then no longer watched.
    r.ask(300, Request::Standby);
    r.settle(310);
    {
        let c = calls.lock().unwrap();
        // Still ours (no new view) until the mirror has sent the last changes.
        assert_eq!(c.last().unwrap(), "unwatch serv1", "{c:?}");
    }
    r.d.handle(
        Millis(320),
        Msg::Mirror(MirrorReport::Stopped { group: "serv1".into() }),
    );
    let c = calls.lock().unwrap();
    assert_eq!(c.last().unwrap(), "view serv1@-,serv2@serv2", "{c:?}");
}

/// A hook runner that records calls and what the epochs file said then.
struct Fake {
    state: std::path::PathBuf,
    calls: Calls,
    fail_start: bool,
}

impl HookRunner for Fake {
    fn start(&mut self, group: &Group, env: &HookEnv) -> Result<(), crate::hooks::HookError> {
        let epochs = std::fs::read_to_string(self.state.join(state::EPOCHS)).unwrap_or_default();
        let line = epochs
            .lines()
            .find(|l| l.starts_with(&group.name))
            .unwrap_or("")
            .to_string();
        self.calls
            .lock()
            .unwrap()
            .push(format!("start {} {} [{line}]", group.name, env.epoch));
        if self.fail_start {
            return Err(crate::hooks::HookError::StartFailed {
                group: group.name.clone(),
                hook: "S10x".into(),
                outcome: crate::hooks::Outcome::TimedOut,
                runs: vec![],
            });
        }
        Ok(())
    }
    fn stop(&mut self, group: &Group, env: &HookEnv) -> Result<(), crate::hooks::HookError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("stop {} {}", group.name, env.epoch));
        Ok(())
    }
    fn reannounce(&mut self, group: &Group, _env: &HookEnv) -> bool {
        self.calls.lock().unwrap().push(format!("reannounce {}", group.name));
        true
    }
    fn check(&mut self, group: &Group, env: &HookEnv) -> Result<(), String> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("check {} {}", group.name, env.epoch));
        Ok(())
    }
}

fn worker_conf(dir: &Path, runner: Box<dyn HookRunner>) -> WorkerConf {
    WorkerConf {
        local: "serv2".into(),
        peer: "serv1".into(),
        groups: vec![group("serv1"), group("serv2")],
        state: StateDir::open(dir).unwrap(),
        epochs: Default::default(),
        runner,
    }
}

#[test]
fn the_worker_persists_the_epoch_before_the_start_hooks_and_reports_each_job() {
    let tmp = tempfile::tempdir().unwrap();
    let calls: Calls = Arc::default();
    let mut w = worker_conf(
        tmp.path(),
        Box::new(Fake {
            state: tmp.path().into(),
            calls: calls.clone(),
            fail_start: false,
        }),
    );
    let done = w.run(Job::Acquire {
        group: "serv1".into(),
        epoch: 4,
    });
    assert_eq!(
        done,
        JobDone::Acquired {
            group: "serv1".into(),
            epoch: 4,
            ok: true
        }
    );
    assert_eq!(calls.lock().unwrap()[0], "start serv1 4 [serv1 4]");
    assert_eq!(
        w.run(Job::WriteStandbyLock {
            reason: crate::arbiter::StandbyReason::Isolated
        }),
        JobDone::StandbyLock {
            present: true,
            error: None
        }
    );
    assert!(
        std::fs::read_to_string(tmp.path().join(crate::failover::STANDBY_LOCK))
            .unwrap()
            .contains("reason = isolated")
    );
    assert_eq!(
        w.run(Job::ClearStandbyLock),
        JobDone::StandbyLock {
            present: false,
            error: None
        }
    );
    assert_eq!(
        w.run(Job::Release {
            group: "nope".into(),
            epoch: 1
        }),
        JobDone::Released {
            group: "nope".into(),
            epoch: 1,
            ok: false
        }
    );
    // A restarted daemon reads the epoch back.
    assert_eq!(StateDir::open(tmp.path()).unwrap().load_epochs().unwrap().0["serv1"], 4);
}

#[test]
fn a_failed_start_is_reported_not_held() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = worker_conf(
        tmp.path(),
        Box::new(Fake {
            state: tmp.path().into(),
            calls: Arc::default(),
            fail_start: true,
        }),
    );
    assert_eq!(
        w.run(Job::Acquire {
            group: "serv2".into(),
            epoch: 2
        }),
        JobDone::Acquired {
            group: "serv2".into(),
            epoch: 2,
            ok: false
        }
    );
}

fn script(dir: &Path, name: &str, body: &str) -> Hook {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    Hook {
        kind: HookKind::Start,
        order: name[1..3].parse().unwrap(),
        name: name.into(),
        path,
    }
}

#[test]
fn reannounce_runs_the_start_hooks_with_reannounce_and_exit_3_means_nothing_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    let mut g = group("serv1");
    g.start = vec![
        script(
            tmp.path(),
            "S10ip",
            &format!("echo \"ip $1 $HAMIRROR_EVENT $HAMIRROR_EPOCH\" >> {}", log.display()),
        ),
        script(
            tmp.path(),
            "S20svc",
            &format!(
                "echo \"svc $1\" >> {}; [ \"$1\" = reannounce ] && exit 3; exit 0",
                log.display()
            ),
        ),
    ];
    let mut w = worker_conf(
        tmp.path(),
        Box::new(ScriptHooks {
            policy: crate::hooks::HookPolicy::default(),
        }),
    );
    w.groups[0] = g.clone();
    let done = w.run(Job::Reannounce {
        group: "serv1".into(),
        epoch: 5,
    });
    assert_eq!(
        done,
        JobDone::Reannounced {
            group: "serv1".into(),
            ok: true
        }
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "ip reannounce reannounce 5\nsvc reannounce\n"
    );
    // Any other failure is reported (and only logged).
    g.start.push(script(tmp.path(), "S30bad", "exit 1"));
    w.groups[0] = g;
    assert_eq!(
        w.run(Job::Reannounce {
            group: "serv1".into(),
            epoch: 5
        }),
        JobDone::Reannounced {
            group: "serv1".into(),
            ok: false
        }
    );
}

#[test]
fn hooks_start_with_no_blocked_signals_and_normal_scheduling() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut g = group("serv1");
    g.start = vec![script(
        tmp.path(),
        "S10probe",
        &format!(
            "grep -E '^SigBlk' /proc/self/status > {0}; cut -d' ' -f41 /proc/self/stat >> {0}",
            out.display()
        ),
    )];
    let out2 = out.clone();
    std::thread::spawn(move || {
        // As in the daemon: signals blocked, then the worker's reset.
        signals::block().unwrap();
        normal_priority();
        let mut runner = ScriptHooks {
            policy: crate::hooks::HookPolicy::default(),
        };
        let env = HookEnv {
            node: "serv1".into(),
            peer: "serv2".into(),
            group: "serv1".into(),
            epoch: 1,
        };
        runner.start(&g, &env).unwrap();
        assert!(out2.exists());
    })
    .join()
    .unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().nth(1),
        Some("0000000000000000"),
        "{text}"
    );
    assert_eq!(lines.next(), Some("0"), "scheduling policy SCHED_OTHER: {text}");
}

fn monitored(failures: u32, restarts: u32) -> Rig {
    let mut r = rig_with(
        None,
        crate::config::MonitorConf {
            interval: std::time::Duration::from_secs(1),
            timeout: std::time::Duration::from_secs(5),
            failures,
            restarts,
            window: std::time::Duration::from_secs(3600),
        },
    );
    r.running();
    r
}

impl Rig {
    /// Time runs from `from` to `to` in keepalive steps (longer gaps look
    /// like a stalled process), with the peer's heartbeats when `peer` is
    /// given. Returns the jobs asked for meanwhile.
    fn tick(&mut self, from: u64, to: u64, peer: Option<&NodeState>) -> Vec<Job> {
        let mut jobs = vec![];
        let mut t = from;
        while t < to {
            t = (t + 50).min(to);
            match peer {
                Some(p) => self.d.handle(Millis(t), heartbeat(t, p.clone())),
                None => self.d.handle_timeout(Millis(t)),
            }
            jobs.extend(self.jobs());
        }
        jobs
    }

    /// Answers the check asked for at `at`; returns the jobs that follow.
    fn answer(&mut self, at: u64, result: Result<(), String>) -> Vec<Job> {
        self.d.handle(
            Millis(at),
            Msg::Done(JobDone::Monitored {
                group: "serv1".into(),
                epoch: 1,
                result,
            }),
        );
        self.jobs()
    }

    fn events(&self) -> Vec<String> {
        // Only the groups' events: the rig's lan link is never heard.
        self.notices
            .try_iter()
            .filter(|n| !n.group.is_empty())
            .map(|n| format!("{} {}", n.event, n.group))
            .collect()
    }
}

fn down() -> Result<(), String> {
    Err("S20smbd status exited 3 (program is not running)".into())
}

fn check_of_serv1() -> Vec<Job> {
    vec![Job::Monitor {
        group: "serv1".into(),
        epoch: 1,
    }]
}

#[test]
fn a_group_without_a_monitor_is_never_checked() {
    let mut r = rig(None);
    r.running();
    let p = peer(&[("serv2", 1, Claim::Held)]);
    assert!(r.tick(20, 5_000, Some(&p)).is_empty());
}

#[test]
fn failed_checks_restart_the_group_then_hand_it_to_the_peer() {
    let mut r = monitored(2, 1);
    let _ = r.events();
    let p = peer(&[("serv2", 1, Claim::Held)]);
    assert!(
        r.tick(20, 1_000, Some(&p)).is_empty(),
        "the first check waits one interval"
    );
    assert_eq!(r.tick(1_000, 1_050, Some(&p)), check_of_serv1());
    assert!(r.answer(1_060, Ok(())).is_empty());
    assert_eq!(r.tick(1_060, 2_100, Some(&p)), check_of_serv1());
    assert!(r.answer(2_100, down()).is_empty(), "one failure of two does nothing");
    let h = r.d.status(Millis(2_110)).groups[0].health.clone().unwrap();
    assert_eq!((h.state.as_str(), h.failures), ("failing", 1));
    assert_eq!(r.tick(2_100, 3_150, Some(&p)), check_of_serv1());
    let restart = vec![Job::Restart {
        group: "serv1".into(),
        epoch: 1,
    }];
    assert_eq!(
        r.answer(3_150, down()),
        restart,
        "the second failure restarts it in place, same epoch"
    );
    assert_eq!(
        r.d.status(Millis(3_160)).groups[0].health.clone().unwrap().state,
        "restarting"
    );
    assert!(r.tick(3_150, 3_500, Some(&p)).is_empty(), "no check while it restarts");
    r.d.handle(
        Millis(3_500),
        Msg::Done(JobDone::Restarted {
            group: "serv1".into(),
            epoch: 1,
            ok: true,
        }),
    );
    assert_eq!(r.tick(3_500, 4_550, Some(&p)), check_of_serv1());
    assert!(r.answer(4_550, down()).is_empty());
    assert_eq!(r.tick(4_550, 5_600, Some(&p)), check_of_serv1());
    assert_eq!(
        r.answer(5_600, down()),
        vec![Job::Release {
            group: "serv1".into(),
            epoch: 1
        }],
        "restarts used up: released for the peer"
    );
    r.d.handle(
        Millis(5_610),
        Msg::Done(JobDone::Released {
            group: "serv1".into(),
            epoch: 1,
            ok: true,
        }),
    );
    let last = r.adverts.lock().unwrap().last().cloned().unwrap();
    let claim = last.groups.iter().find(|g| g.group == "serv1").map(|g| g.claim);
    assert_eq!(
        claim,
        Some(Claim::Failed),
        "the peer sees it failed here and may start it"
    );
    assert_eq!(
        r.events(),
        vec![
            "monitor_failed serv1",
            "restarting serv1",
            "restarted serv1",
            "monitor_failed serv1",
            "unhealthy serv1",
            "released serv1"
        ]
    );
    // The peer starts it: not taken back, and no more checks here.
    let p = peer(&[("serv1", 2, Claim::Held), ("serv2", 1, Claim::Held)]);
    assert!(r.tick(5_610, 9_000, Some(&p)).is_empty());
    assert!(r.d.status(Millis(9_000)).groups[0].health.is_none());
}

#[test]
fn with_the_peer_dead_the_group_is_restarted_here_instead_of_dropped() {
    let mut r = monitored(1, 0);
    let jobs = r.tick(20, 1_050, None);
    assert!(!r.d.arbiter().peer_alive());
    assert!(jobs.contains(&Job::Monitor {
        group: "serv1".into(),
        epoch: 1
    }));
    let _ = r.events();
    assert_eq!(
        r.answer(1_060, down()),
        vec![Job::Restart {
            group: "serv1".into(),
            epoch: 1
        }]
    );
    assert_eq!(r.events(), vec!["restarting serv1"]);
}

#[test]
fn a_failed_restart_leaves_the_group_to_the_peer() {
    let mut r = monitored(1, 1);
    let p = peer(&[("serv2", 1, Claim::Held)]);
    assert_eq!(r.tick(20, 1_050, Some(&p)), check_of_serv1());
    assert_eq!(
        r.answer(1_050, down()),
        vec![Job::Restart {
            group: "serv1".into(),
            epoch: 1
        }]
    );
    r.d.handle(
        Millis(1_060),
        Msg::Done(JobDone::Restarted {
            group: "serv1".into(),
            epoch: 1,
            ok: false,
        }),
    );
    assert_eq!(
        r.jobs(),
        vec![Job::Release {
            group: "serv1".into(),
            epoch: 1
        }]
    );
}

#[test]
fn no_check_runs_while_a_transition_is_queued() {
    let mut r = monitored(3, 1);
    let p = peer(&[("serv2", 1, Claim::Held)]);
    r.tick(20, 900, Some(&p));
    // A standby request queues a release before the check is due.
    r.ask(900, Request::Standby);
    let jobs = r.jobs();
    assert!(jobs.iter().any(|j| matches!(j, Job::Release { .. })), "{jobs:?}");
    let jobs = r.tick(900, 1_500, Some(&p));
    assert!(
        !jobs.iter().any(|j| matches!(j, Job::Monitor { .. })),
        "the check waits for the worker: {jobs:?}"
    );
    assert!(
        r.d.poll_timeout() > Millis(1_500),
        "and is not polled for in a hot loop"
    );
}
