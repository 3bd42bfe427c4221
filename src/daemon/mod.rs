//! `hamirror run`: the cluster daemon. It wires the failover pieces
//! together and carries out what the arbiter decides:
//!
//! ```text
//!  heartbeat thread ─┐ Input   ┌──────────── driver (real-time, owns the Arbiter) ─────────┐
//!  prober thread ────┴─▶ fwd ─▶│ Msg: Input · Done · Control · Signal · Mirror             │
//!  control socket ────────────▶│   → Job (Acquire/Release/Reannounce/lock) ─▶ hook worker  │
//!  signal thread ─────────────▶│   → Notice ──────────────────────────────▶ notifier      │
//!  mirror (later) ────────────▶│   → advert ─▶ heartbeat thread; view ─▶ MirrorControl    │
//!                              └──────────────────────────────────────────────────────────┘
//! ```
//!
//! * [`driver`]: the arbiter and everything decided around it (no I/O).
//! * [`worker`]: one thread runs transitions in order (hooks never run
//!   concurrently, transitions never overlap); one runs the notify hooks.
//! * [`state`]: epochs and the standby lock, written crash-safely.
//! * [`control`]: the operator socket; [`status`]: what `status` shows.
//! * [`mirror`]: the seam where the receiver and the watchers plug in.
//! * [`signals`]: SIGTERM/SIGINT as messages; the clean shutdown.
//!
//! Must not depend on tokio (the mirror side may bring a runtime; the
//! failover side keeps its own threads so a busy runtime cannot delay it).

pub mod control;
pub mod driver;
pub mod health;
pub mod metrics;
pub mod mirror;
pub mod signals;
pub mod state;
pub mod status;
pub mod worker;

#[cfg(test)]
mod tests;

use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use thiserror::Error;

use crate::arbiter::{Arbiter, ArbiterConfig, Startup};
use crate::config::Cluster;
use crate::failover::{self, Endpoint, EndpointConfig, FailoverError, Input, Prober, rt};
use crate::hooks::HookPolicy;
pub use control::{ControlError, Request, Response};
pub use driver::{Driver, DriverConf, Outcome};
pub use mirror::{
    ClusterView, GroupView, LinkView, MirrorControl, MirrorReport, MirrorReporter, PeerView, ReplicaBacklog, SetBacklog,
};
pub use state::{StateDir, StateError};
pub use status::StatusReport;
pub use worker::{HookRunner, Job, JobDone, Notice, ScriptHooks};

/// Everything that reaches the driver, on one channel.
#[derive(Debug)]
pub enum Msg {
    /// From the heartbeat endpoint or the prober.
    Input(Input),
    /// The hook worker finished a job.
    Done(JobDone),
    /// An operator request and where to answer it.
    Control {
        req: Request,
        reply: Sender<Response>,
    },
    Signal(i32),
    Mirror(MirrorReport),
}

/// Why the daemon could not start or run. None of these is cured by
/// restarting as is: each names what to fix.
#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("node {0} is not one of the nodes of the configuration")]
    UnknownNode(String),
    /// More than two nodes without Pacemaker: the built-in arbiter is
    /// two-node (see docs/PACEMAKER.md).
    #[error(
        "{0}; `hamirror run` runs a cluster of more than two nodes only with `failover = pacemaker` \
         (docs/PACEMAKER.md)"
    )]
    MoreThanTwo(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Failover(#[from] FailoverError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("{what}: {source}")]
    Os {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the heartbeat or prober thread ended unexpectedly")]
    InputsGone,
}

fn os(what: &'static str) -> impl FnOnce(std::io::Error) -> DaemonError {
    move |source| DaemonError::Os { what, source }
}

/// Options of `hamirror run`.
#[derive(Debug, Clone, Copy)]
pub struct DaemonOptions {
    /// Ask for real-time priority and locked memory (fails soft).
    pub realtime: bool,
}

/// A daemon, configured and not yet running. Create it before anything
/// starts a thread (it blocks the signals every thread must inherit), plug
/// in the mirror with [`Daemon::set_mirror`], then [`Daemon::run`].
pub struct Daemon {
    cluster: Cluster,
    local: String,
    opts: DaemonOptions,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    mirror: Option<Box<dyn MirrorControl>>,
    runner: Option<Box<dyn HookRunner>>,
    notifier: Option<crate::sdnotify::Notifier>,
}

impl Daemon {
    pub fn new(cluster: Cluster, local: &str, opts: DaemonOptions) -> Result<Daemon, DaemonError> {
        if cluster.node(local).is_none() {
            return Err(DaemonError::UnknownNode(local.to_string()));
        }
        let pacemaker = cluster
            .node(local)
            .is_some_and(|n| n.conf.failover == crate::config::FailoverMode::Pacemaker);
        if !pacemaker {
            cluster.sole_peer(local).map_err(DaemonError::MoreThanTwo)?;
        }
        signals::block().map_err(os("blocking SIGTERM/SIGINT"))?;
        let (tx, rx) = mpsc::channel();
        Ok(Daemon {
            cluster,
            local: local.to_string(),
            opts,
            tx,
            rx,
            mirror: None,
            runner: None,
            notifier: None,
        })
    }

    /// The mirror side's way to report back; give it to the mirror before
    /// [`Daemon::set_mirror`].
    pub fn mirror_reporter(&self) -> MirrorReporter {
        MirrorReporter { tx: self.tx.clone() }
    }

    /// Plugs in the mirror side. With one, `auto_failback` also waits for
    /// the owner's copy to have caught up.
    pub fn set_mirror(&mut self, mirror: Box<dyn MirrorControl>) {
        self.mirror = Some(mirror);
    }

    /// Tells systemd how the daemon does (`Type=notify`: ready, watchdog
    /// pings from the main loop, status, stopping).
    pub fn set_notifier(&mut self, notifier: crate::sdnotify::Notifier) {
        self.notifier = Some(notifier);
    }

    /// Replaces the hook runner (tests; default: the configured scripts).
    pub fn set_hook_runner(&mut self, runner: Box<dyn HookRunner>) {
        self.runner = Some(runner);
    }

    /// Runs until a signal and a clean shutdown (or a forced one).
    pub fn run(self) -> Result<Outcome, DaemonError> {
        let Daemon {
            cluster,
            local,
            opts,
            tx,
            rx,
            mirror,
            runner,
            notifier: mut sd,
        } = self;
        let me = cluster
            .node(&local)
            .ok_or_else(|| DaemonError::UnknownNode(local.clone()))?;
        // The first peer, then the others (several only under Pacemaker).
        let peers = cluster.peers_of(&local);
        let (peer, more) = peers
            .split_first()
            .ok_or_else(|| DaemonError::UnknownNode(local.clone()))?;
        let several = !more.is_empty();
        let state = StateDir::open(&me.conf.state)?;
        let _daemon_lock = state.lock_daemon()?;
        let mut control = control::ControlSocket::bind(&state.control_socket())?;

        let key_file = me
            .conf
            .heartbeat_key
            .clone()
            .ok_or_else(|| FailoverError::NoKeyFile(me.conf_file.clone()))?;
        // Its mode and owner were checked by `run` (config::strict).
        let keys = failover::load_keys(&key_file)?;
        let mut cfg = ArbiterConfig::from_cluster(&cluster, &local).ok_or(DaemonError::UnknownNode(local.clone()))?;
        cfg.failback_needs_resync = mirror.is_some();
        let peer_file = |name: &str| failover::incarnation::peer_file(several.then_some(name));
        let peer_addrs = peers
            .iter()
            .map(|p| {
                Ok(failover::PeerAddrs {
                    name: p.name.clone(),
                    links: failover::links_to(&cluster, &local, &p.name)
                        .ok_or(DaemonError::UnknownNode(p.name.clone()))?,
                    floor: failover::incarnation::load_peer_from(state.path(), &peer_file(&p.name)),
                })
            })
            .collect::<Result<Vec<_>, DaemonError>>()?;
        let standby_lock = state.standby_lock();
        let (epochs, remarks) = state.load_epochs()?;
        let maintenance = state.load_maintenance(&state::boot_id())?;
        for r in remarks.iter().chain(&maintenance.remarks) {
            tracing::warn!("{r}");
        }
        if maintenance.on {
            tracing::warn!(
                "maintenance mode is on (generation {}): failover decisions stay frozen until \
                 `hamirror maintenance off`; groups kept running here: {}",
                maintenance.generation,
                if maintenance.held.is_empty() {
                    "none".to_string()
                } else {
                    maintenance.held.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            );
        }
        if opts.realtime
            && let Err(e) = rt::lock_memory()
        {
            tracing::info!("memory not locked: {e}");
        }
        let incarnation = failover::incarnation::next_own(state.path()).map_err(|e| StateError::Io {
            op: "persist the incarnation in",
            path: state.path().join(failover::incarnation::OWN_FILE),
            source: e,
        })?;
        let started = rt::now();
        let arbiter = Arbiter::new(
            cfg.clone(),
            started,
            Startup {
                standby_lock,
                epochs: epochs.clone(),
                maintenance: crate::arbiter::Maintenance {
                    on: maintenance.on,
                    generation: maintenance.generation,
                },
                kept: maintenance.held.clone(),
            },
        );
        tracing::info!(
            "hamirror run: node {local}, {}, keepalive {} ms, deadtime {} ms, hook_timeout {} s, \
             standby lock {}, epochs {:?}, mirroring {}",
            peer_addrs
                .iter()
                .map(|p| format!(
                    "peer {}, links {}",
                    p.name,
                    p.links
                        .iter()
                        .map(|l| format!("{} {}→{}", l.name, l.local, l.peer))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .collect::<Vec<_>>()
                .join("; "),
            cfg.timers.keepalive.as_millis(),
            cfg.timers.deadtime.as_millis(),
            me.conf.hook_timeout.as_secs_f64(),
            if standby_lock { "present" } else { "absent" },
            epochs,
            if mirror.is_some() { "on" } else { "off" },
        );

        // Threads at normal priority first (they inherit the creator's).
        signals::spawn(tx.clone()).map_err(os("starting the signal thread"))?;
        control.serve(tx.clone()).map_err(os("starting the control thread"))?;
        if let Some(addr) = me.conf.metrics_listen {
            metrics::serve(addr, tx.clone(), state.path().to_path_buf()).map_err(os("binding metrics_listen"))?;
            tracing::info!("metrics at http://{addr}/metrics");
        }
        if let Some(file) = &me.conf.metrics_textfile {
            metrics::write_textfile(file.clone(), tx.clone(), state.path().to_path_buf())
                .map_err(os("starting the metrics_textfile writer"))?;
        }
        let groups: Vec<_> = std::iter::once(me.group.clone())
            .chain(peers.iter().map(|p| p.group.clone()))
            .collect();
        // What hooks see as the peer (`HA_PEER`…): every other node.
        let peer_names = peers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(",");
        let (job_tx, job_rx) = mpsc::channel();
        let runner = runner.unwrap_or_else(|| {
            Box::new(ScriptHooks {
                policy: HookPolicy {
                    timeout: me.conf.hook_timeout,
                    ..HookPolicy::default()
                },
            })
        });
        let worker = worker::spawn_worker(
            worker::WorkerConf {
                local: local.clone(),
                peer: peer_names.clone(),
                groups: groups.clone(),
                state: state.clone(),
                epochs,
                runner,
            },
            job_rx,
            tx.clone(),
        )
        .map_err(os("starting the hook worker"))?;
        let (notice_tx, notice_rx) = mpsc::channel();
        let notifier = worker::spawn_notifier(
            me.group.notify.clone(),
            local.clone(),
            peer_names,
            me.conf.hook_timeout,
            notice_rx,
        )
        .map_err(os("starting the notifier"))?;

        // Failover inputs: endpoint and prober report on their own channel;
        // a real-time forwarder puts them on the driver's.
        let (in_tx, in_rx) = mpsc::channel::<Input>();
        let fwd = tx.clone();
        let realtime = opts.realtime;
        std::thread::Builder::new()
            .name("inputs".into())
            .spawn(move || {
                if realtime {
                    let _ = rt::set_realtime(rt::PROBE_PRIORITY);
                }
                for i in in_rx {
                    if fwd.send(Msg::Input(i)).is_err() {
                        break;
                    }
                }
            })
            .map_err(os("starting the input thread"))?;
        let endpoint = std::sync::Arc::new(Endpoint::start(
            EndpointConfig {
                local: local.clone(),
                peers: peer_addrs,
                keepalive: cfg.timers.keepalive,
                keys,
                record_in: Some(state.path().to_path_buf()),
                incarnation,
                realtime,
            },
            arbiter.advert().clone(),
            in_tx.clone(),
        )?);
        let prober = Prober::start(cluster.reachlist.clone(), cfg.timers, realtime, in_tx)?;
        drop(tx);

        let ep = endpoint.clone();
        let mut driver = Driver::new(
            arbiter,
            DriverConf {
                local: local.clone(),
                peer: peer.name.clone(),
                groups,
                incarnation,
                started,
                standby_lock,
                jobs: job_tx,
                notices: notice_tx,
                advertise: Box::new(move |s| ep.set_state(s.clone())),
                mirror,
            },
        );
        if realtime && let Err(e) = rt::set_realtime(rt::PROBE_PRIORITY) {
            tracing::info!("driver at normal priority (SCHED_FIFO not permitted: {e})");
        }
        driver.pump(started);
        if let Some(n) = &mut sd {
            n.ready(&driver.status(rt::now()).summary());
        }
        let mut summarised = std::time::Instant::now();

        let outcome = loop {
            match driver.outcome() {
                Outcome::Running => {}
                done => break done,
            }
            let now = rt::now();
            let mut wait = Duration::from_millis(driver.poll_timeout().0.saturating_sub(now.0));
            if let Some(every) = sd.as_ref().and_then(|n| n.watchdog_interval()) {
                wait = wait.min(every);
            }
            let first = match rx.recv_timeout(wait) {
                Ok(m) => Some(m),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(DaemonError::InputsGone),
            };
            // Every pending message first, then the timers: a queued
            // heartbeat must never lose against a deadline.
            for msg in first.into_iter().chain(rx.try_iter()) {
                if let (Some(n), Msg::Signal(sig)) = (&mut sd, &msg)
                    && *sig != libc::SIGHUP
                {
                    n.stopping("stopping: releasing every group held here");
                }
                driver.handle(rt::now(), msg);
                if driver.outcome() == Outcome::Forced {
                    break;
                }
            }
            driver.handle_timeout(rt::now());
            // From this loop: a loop that hangs stops the pings, and
            // systemd restarts the daemon.
            if let Some(n) = &mut sd {
                n.watchdog(std::time::Instant::now());
                if summarised.elapsed() >= Duration::from_secs(1) {
                    summarised = std::time::Instant::now();
                    n.status(&driver.status(rt::now()).summary());
                }
            }
        };
        finish(
            outcome,
            driver,
            endpoint,
            prober,
            worker,
            notifier,
            cfg.timers.keepalive,
        )
    }
}

/// After the loop: let the last state reach the peer, stop the threads,
/// give the notify hooks a bounded time to deliver the last events.
fn finish(
    outcome: Outcome,
    driver: Driver,
    endpoint: std::sync::Arc<Endpoint>,
    prober: Prober,
    worker: std::thread::JoinHandle<()>,
    notifier: std::thread::JoinHandle<()>,
    keepalive: Duration,
) -> Result<Outcome, DaemonError> {
    match &outcome {
        Outcome::Clean => tracing::info!("every group released; exiting"),
        Outcome::StopFailed(g) => tracing::error!(
            "exiting, but the stop hooks of {} failed: their services may still run here",
            g.join(", ")
        ),
        Outcome::Forced => tracing::warn!("exiting at once"),
        Outcome::LeftRunning(g) => tracing::info!(
            "maintenance mode: exiting without stopping anything; left running here: {}",
            if g.is_empty() {
                "no group".to_string()
            } else {
                g.join(", ")
            }
        ),
        Outcome::Running => {}
    }
    if outcome == Outcome::Forced {
        return Ok(outcome);
    }
    // The final "standby, nothing held" went out at once with set_state;
    // two more keepalives make sure a lossy link delivers it too.
    std::thread::sleep(keepalive * 2);
    drop(prober);
    drop(driver);
    drop(endpoint);
    drop(worker);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !notifier.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(outcome)
}
