//! The driver: owns the arbiter and turns everything that happens into its
//! inputs and its actions into work. Heartbeats and probe rounds go in;
//! Acquire/Release/Reannounce and the standby lock become [`Job`]s for the
//! single hook worker (in the arbiter's order), events are logged, kept for
//! `status` and handed to the notifier; the advertised state goes to the
//! heartbeat endpoint whenever it changes; the mirror side (if plugged in)
//! hears about holders and links. Operator requests and signals arrive
//! here too.
//!
//! No sockets, threads or clock of its own: the caller passes `now` and
//! the channels, so tests drive it with a fake clock and read the jobs it
//! queues. Shutdown: a signal puts the arbiter in standby without writing
//! the lock (the peer takes the groups over at once instead of after
//! deadtime); the daemon exits once every group is released.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::mpsc::Sender;

use super::Msg;
use super::control::{Request, Response};
use super::health::{Health, Verdict};
use super::mirror::{ClusterView, GroupView, LinkView, MirrorControl, MirrorReport, PeerView, SetBacklog};
use super::status::{
    EventReport, GroupReport, HooksReport, LinkReport, MaintenanceReport, PeerReport, ReachReport, StatusReport,
};
use super::worker::{Job, JobDone, Notice};
use crate::arbiter::{
    Action, Arbiter, Claim, Command, Event, GroupStatus, Level, LinkStatus, Millis, Mode, NodeState, Phase, Reach,
    Side, StandbyReason, claim_name,
};
use crate::config::Group;
use crate::failover::Input;

/// A key mismatch is logged (as an error) at most this often per link.
const KEY_MISMATCH_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Recent events kept for `status`.
const RECENT_EVENTS: usize = 40;

/// Where the daemon stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Running,
    /// Shut down: every group released.
    Clean,
    /// Shut down, but the stop hooks of these groups failed: their services
    /// may still run here.
    StopFailed(Vec<String>),
    /// Shut down in maintenance mode: nothing was stopped; these groups
    /// stay up here and the next start of this boot keeps them.
    LeftRunning(Vec<String>),
    /// A second signal: exit without waiting for the stop hooks.
    Forced,
}

struct Recent {
    at: Millis,
    level: Level,
    event: String,
    detail: String,
}

/// What the driver is given besides the arbiter.
pub struct DriverConf {
    pub local: String,
    pub peer: String,
    /// Both groups, as configured (for their sets).
    pub groups: Vec<Group>,
    pub incarnation: u64,
    pub started: Millis,
    pub standby_lock: bool,
    pub jobs: Sender<Job>,
    pub notices: Sender<Notice>,
    /// Puts a new state into the heartbeats (`Endpoint::set_state`).
    pub advertise: Box<dyn FnMut(&NodeState) + Send>,
    pub mirror: Option<Box<dyn MirrorControl>>,
}

/// The longest a released group waits for the mirror's last push (its
/// own bound is `mirrord::FLUSH_TIMEOUT`; this is the safety net).
pub const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

pub struct Driver {
    arbiter: Arbiter,
    c: DriverConf,
    advert_gen: Option<u64>,
    watching: BTreeSet<String>,
    /// Groups whose stop hooks are done and whose last changes the mirror
    /// is still sending: (since, hooks ok). They stay `releasing` until the
    /// mirror reports them stopped or [`FLUSH_WAIT`] passes.
    flushing: BTreeMap<String, (Millis, bool)>,
    last_view: Option<ClusterView>,
    events: VecDeque<Recent>,
    /// Jobs sent to the worker and not yet done; the first is running.
    pending: VecDeque<String>,
    lock_error: Option<String>,
    shutdown: Option<Millis>,
    forced: bool,
    reach_seen: Option<Reach>,
    /// When a key mismatch was last logged, per (peer, link).
    key_mismatch_logged: BTreeMap<(usize, u8), Millis>,
    /// The health monitor of each group held here that has one.
    health: BTreeMap<String, Health>,
    /// Heartbeats accepted per (peer, link), datagrams refused per link
    /// (for the metrics).
    received: BTreeMap<(usize, u8), u64>,
    rejected: BTreeMap<u8, u64>,
    /// Conflict copies made per set.
    conflict_copies: BTreeMap<String, u64>,
    /// The maintenance record last sent to be persisted.
    maintenance_written: MaintenanceRecord,
    /// The heartbeat version the peer last spoke.
    peer_heartbeat_version: Option<u8>,
}

/// The maintenance register and, while it is on, the groups held here:
/// what the `maintenance` file holds.
type MaintenanceRecord = (bool, u64, BTreeMap<String, u64>);

/// `key=value` words of an event's fields (its name left out).
pub fn event_detail(e: &Event) -> String {
    let v = serde_json::to_value(e).unwrap_or_default();
    let Some(m) = v.as_object() else {
        return String::new();
    };
    m.iter()
        .filter(|(k, _)| k.as_str() != "event")
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn level_name(l: Level) -> &'static str {
    match l {
        Level::Info => "info",
        Level::Warning => "warning",
        Level::Critical => "critical",
    }
}

fn snake<T: serde::Serialize>(v: &T, tag: &str) -> String {
    let v = serde_json::to_value(v).unwrap_or_default();
    v.get(tag)
        .and_then(|t| t.as_str())
        .or_else(|| v.as_str())
        .unwrap_or_default()
        .to_string()
}

impl Driver {
    pub fn new(arbiter: Arbiter, c: DriverConf) -> Self {
        let mut d = Driver {
            arbiter,
            c,
            advert_gen: None,
            watching: BTreeSet::new(),
            flushing: BTreeMap::new(),
            last_view: None,
            events: VecDeque::new(),
            pending: VecDeque::new(),
            lock_error: None,
            shutdown: None,
            forced: false,
            reach_seen: None,
            key_mismatch_logged: BTreeMap::new(),
            health: BTreeMap::new(),
            received: BTreeMap::new(),
            rejected: BTreeMap::new(),
            conflict_copies: BTreeMap::new(),
            maintenance_written: (false, 0, BTreeMap::new()),
            peer_heartbeat_version: None,
        };
        // What the state directory holds already (the arbiter started from it).
        d.maintenance_written = d.maintenance_record();
        d
    }

    pub fn arbiter(&self) -> &Arbiter {
        &self.arbiter
    }

    /// When to call [`Driver::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Millis {
        let flush = self.flushing.values().map(|(since, _)| *since + FLUSH_WAIT);
        // A check waits for the worker to be idle: it is dispatched when
        // the job ahead of it is done, not by a timer.
        let checks = self
            .health
            .values()
            .filter_map(Health::due)
            .filter(|_| self.pending.is_empty());
        flush.chain(checks).fold(self.arbiter.poll_timeout(), |a, b| a.min(b))
    }

    pub fn handle_timeout(&mut self, now: Millis) {
        let late: Vec<String> = self
            .flushing
            .iter()
            .filter(|(_, (since, _))| now.since(*since) >= FLUSH_WAIT)
            .map(|(g, _)| g.clone())
            .collect();
        for group in late {
            tracing::warn!(
                "group {group}: the mirror did not confirm its last changes within {} s; releasing it anyway \
                 (what was not sent stays here and is kept when the peer next resyncs)",
                FLUSH_WAIT.as_secs()
            );
            self.mirror_stopped(now, &group);
        }
        self.arbiter.handle_timeout(now);
        self.pump(now);
    }

    /// Conflict copies after a split brain: a warning in the log and in
    /// `status`'s recent events, and a `conflict_copies` notification.
    fn conflicts(&mut self, now: Millis, group: String, set: String, copies: Vec<String>) {
        let shown: Vec<&str> = copies.iter().take(5).map(String::as_str).collect();
        let detail = format!(
            "group={group} set={set} copies={}{} first={}",
            copies.len(),
            if copies.len() > shown.len() { "+" } else { "" },
            shown.join(",")
        );
        *self.conflict_copies.entry(set.clone()).or_default() += copies.len() as u64;
        let notice = Notice {
            event: "conflict_copies".into(),
            message: format!(
                "{}: {} file(s) of {set} changed on both nodes or not yet mirrored were kept as conflict copies: {}",
                self.c.local,
                copies.len(),
                shown.join(", ")
            ),
            group,
            epoch: 0,
        };
        self.tell(now, Level::Warning, notice, detail);
    }

    /// Every event the same way: logged at its level as `event NAME
    /// DETAIL`, handed to the notify hooks, kept for `status`.
    fn tell(&mut self, now: Millis, level: Level, notice: Notice, detail: String) {
        let name = &notice.event;
        match level {
            Level::Info => tracing::info!("event {name} {detail}"),
            Level::Warning => tracing::warn!("event {name} {detail}"),
            Level::Critical => tracing::error!("event {name} {detail}"),
        }
        let event = name.clone();
        let _ = self.c.notices.send(notice);
        self.record(now, level, event, detail);
    }

    /// The mirror has sent the last changes of a released group: only now
    /// does the arbiter (and through it the peer) learn the group is free.
    fn mirror_stopped(&mut self, now: Millis, group: &str) {
        if let Some((_, ok)) = self.flushing.remove(group) {
            self.arbiter.handle_released(now, group, ok);
        }
    }

    /// One message from any source; then carries out what follows from it.
    pub fn handle(&mut self, now: Millis, msg: Msg) {
        match msg {
            Msg::Input(i) => self.on_input(i),
            Msg::Done(d) => self.on_done(now, d),
            Msg::Control { req, reply } => {
                let r = self.on_request(now, req);
                let _ = reply.send(r);
            }
            Msg::Signal(sig) => self.on_signal(now, sig),
            Msg::Mirror(MirrorReport::CaughtUp { group, caught_up }) => {
                self.arbiter.handle_resync(now, &group, caught_up)
            }
            Msg::Mirror(MirrorReport::Stopped { group }) => self.mirror_stopped(now, &group),
            Msg::Mirror(MirrorReport::Conflicts { group, set, copies }) => self.conflicts(now, group, set, copies),
        }
        self.pump(now);
    }

    /// Drains the arbiter's actions, then publishes the advert and the view.
    pub fn pump(&mut self, now: Millis) {
        while let Some(a) = self.arbiter.poll_action() {
            self.carry_out(now, a);
        }
        if self.arbiter.maintenance().on || self.maintenance_written.0 {
            self.persist_maintenance();
            self.watch_kept();
        }
        self.schedule_checks(now);
        let generation = self.arbiter.advert_generation();
        if self.advert_gen != Some(generation) {
            self.advert_gen = Some(generation);
            (self.c.advertise)(self.arbiter.advert());
        }
        if self.c.mirror.is_some() {
            let view = self.view();
            if self.last_view.as_ref() != Some(&view) {
                if let Some(m) = self.c.mirror.as_mut() {
                    m.view_changed(&view);
                }
                self.last_view = Some(view);
            }
        }
    }

    pub fn outcome(&self) -> Outcome {
        if self.forced {
            return Outcome::Forced;
        }
        if self.shutdown.is_none() || !self.pending.is_empty() {
            return Outcome::Running;
        }
        let st = self.arbiter.status();
        if st.maintenance {
            return Outcome::LeftRunning(
                st.groups
                    .iter()
                    .filter(|g| g.phase.holds())
                    .map(|g| g.group.clone())
                    .collect(),
            );
        }
        if st.groups.iter().any(|g| {
            matches!(
                g.phase,
                Phase::Acquiring { .. } | Phase::Held { .. } | Phase::Releasing { .. }
            )
        }) {
            return Outcome::Running;
        }
        let stuck: Vec<String> = st
            .groups
            .iter()
            .filter(|g| matches!(g.phase, Phase::Stuck { .. }))
            .map(|g| g.group.clone())
            .collect();
        if stuck.is_empty() {
            Outcome::Clean
        } else {
            Outcome::StopFailed(stuck)
        }
    }

    fn on_input(&mut self, input: Input) {
        if let Input::Rejected { link, count, .. } | Input::BadKey { link, count, .. } = &input {
            // The endpoint's running count per link (reported at most once
            // a second per kind): keep the newest.
            let c = self.rejected.entry(link.0).or_default();
            *c = (*c).max(*count);
        }
        match input {
            Input::Heartbeat {
                at,
                peer,
                link,
                incarnation,
                version,
                state,
            } => {
                *self.received.entry((peer, link.0)).or_default() += 1;
                if peer == 0 {
                    self.peer_heartbeat_version = Some(version);
                }
                self.arbiter.handle_heartbeat_from(at, peer, link, incarnation, state)
            }
            Input::Reach { at, reach, hosts } => {
                if self.reach_seen != Some(reach) {
                    self.reach_seen = Some(reach);
                    let hosts: Vec<String> = hosts
                        .iter()
                        .map(|(h, up)| {
                            format!(
                                "{h}:{}",
                                match up {
                                    Some(true) => "up",
                                    Some(false) => "down",
                                    None => "?",
                                }
                            )
                        })
                        .collect();
                    tracing::info!("reach {}/{} ({})", reach.up, reach.total, hosts.join(" "));
                }
                self.arbiter.handle_reach(at, reach);
            }
            Input::Rejected {
                link,
                from,
                kind,
                reason,
                count,
                ..
            } if kind == crate::failover::endpoint::KIND_STALE => tracing::debug!(
                "heartbeat dropped on {} from {from}: {reason} ({count} refused so far)",
                self.link_name(link.0)
            ),
            Input::Rejected {
                link,
                from,
                reason,
                count,
                ..
            } => tracing::warn!(
                "heartbeat refused on {} from {from}: {reason} ({count} so far)",
                self.link_name(link.0)
            ),
            Input::BadKey {
                at,
                peer: k,
                link,
                from,
                count,
            } => {
                let due = self
                    .key_mismatch_logged
                    .get(&(k, link.0))
                    .is_none_or(|t| at.since(*t) >= KEY_MISMATCH_LOG_EVERY);
                if due {
                    self.key_mismatch_logged.insert((k, link.0), at);
                    let peer = self.peer_name(k);
                    tracing::error!(
                        "heartbeats of {peer} on link {} from {from} fail authentication ({count} refused so far): \
                         {peer} signs with a heartbeat key this node does not have. {peer} is alive, so nothing of \
                         it is taken over. Fix: give both nodes the same key file (`heartbeat_key` in each \
                         NODE.conf; compare with sha256sum) and restart the daemon whose key was wrong",
                        self.link_name(link.0),
                    );
                }
                self.arbiter.handle_bad_key_from(at, k, link);
            }
            Input::SendFailed { link, error, .. } => {
                tracing::warn!("heartbeat send on {} failing: {error}", self.link_name(link.0))
            }
            Input::Note(n) => tracing::info!("{n}"),
        }
    }

    fn link_index(&self, name: &str) -> Option<u8> {
        self.arbiter
            .config()
            .links
            .iter()
            .position(|l| l == name)
            .map(|i| i as u8)
    }

    /// Heartbeats of peer `k` accepted on the link named `name`.
    fn received_on(&self, k: usize, name: &str) -> u64 {
        let i = self.link_index(name);
        i.and_then(|i| self.received.get(&(k, i))).copied().unwrap_or(0)
    }

    fn rejected_on(&self, name: &str) -> u64 {
        let i = self.link_index(name);
        i.and_then(|i| self.rejected.get(&i)).copied().unwrap_or(0)
    }

    /// Peer `k`'s name (the first peer's for an index out of range).
    fn peer_name(&self, k: usize) -> String {
        let cfg = self.arbiter.config();
        match k {
            0 => cfg.peer.clone(),
            k => cfg
                .more_peers
                .get(k - 1)
                .map_or_else(|| cfg.peer.clone(), |p| p.name.clone()),
        }
    }

    fn link_name(&self, i: u8) -> String {
        self.arbiter
            .config()
            .links
            .get(usize::from(i))
            .cloned()
            .unwrap_or_else(|| format!("link {i}"))
    }

    fn carry_out(&mut self, now: Millis, action: Action) {
        match action {
            Action::Acquire { group, epoch, reason } => {
                tracing::info!(
                    "action acquire group={group} epoch={epoch} reason={}",
                    snake(&reason, "")
                );
                self.send_job(Job::Acquire { group, epoch });
            }
            Action::Release { group, epoch, reason } => {
                tracing::info!(
                    "action release group={group} epoch={epoch} reason={}",
                    snake(&reason, "")
                );
                self.send_job(Job::Release { group, epoch });
            }
            Action::Reannounce { group, epoch } => {
                tracing::info!("action reannounce group={group} epoch={epoch}");
                self.send_job(Job::Reannounce { group, epoch });
            }
            Action::WriteStandbyLock { reason } => {
                if self.shutdown.is_some() && reason == StandbyReason::Operator {
                    // Standby is only the shutdown's way of handing the groups
                    // over: a restarted daemon must not stay in standby.
                    return;
                }
                self.send_job(Job::WriteStandbyLock { reason });
            }
            Action::ClearStandbyLock => self.send_job(Job::ClearStandbyLock),
            Action::WriteMaintenance { .. } => self.persist_maintenance(),
            Action::Notify(e) => self.on_event(now, e),
        }
    }

    /// The groups held here, with their epochs (by phase alone: this runs
    /// on every message while in maintenance).
    fn held_here(&self) -> BTreeMap<String, u64> {
        self.c
            .groups
            .iter()
            .filter_map(|g| match self.arbiter.phase(&g.name) {
                Some(Phase::Held { epoch }) => Some((g.name.clone(), epoch)),
                _ => None,
            })
            .collect()
    }

    /// A group held since start-up without its start hooks (kept across a
    /// restart in maintenance) is mirrored like one acquired here.
    fn watch_kept(&mut self) {
        if self.c.mirror.is_none() {
            return;
        }
        for (group, epoch) in self.held_here() {
            if !self.watching.contains(&group)
                && let Some(m) = self.c.mirror.as_mut()
            {
                m.start_watching(&group, epoch);
                self.watching.insert(group);
            }
        }
    }

    fn maintenance_record(&self) -> MaintenanceRecord {
        let m = self.arbiter.maintenance();
        let held = if m.on { self.held_here() } else { BTreeMap::new() };
        (m.on, m.generation, held)
    }

    /// Persists the maintenance register, and what is held under it, when
    /// either changed.
    fn persist_maintenance(&mut self) {
        let record = self.maintenance_record();
        if record != self.maintenance_written {
            self.maintenance_written = record.clone();
            let (on, generation, held) = record;
            self.send_job(Job::WriteMaintenance { on, generation, held });
        }
    }

    fn send_job(&mut self, job: Job) {
        self.pending.push_back(job.describe());
        if self.c.jobs.send(job).is_err() {
            tracing::error!("the hook worker is gone; transitions cannot run");
        }
    }

    fn record(&mut self, now: Millis, level: Level, event: String, detail: String) {
        if self.events.len() == RECENT_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(Recent {
            at: now,
            level,
            event,
            detail,
        });
    }

    fn on_event(&mut self, now: Millis, e: Event) {
        if self.shutdown.is_some()
            && e == (Event::StandbyEntered {
                reason: StandbyReason::Operator,
            })
        {
            return;
        }
        if self.shutdown.is_some() && matches!(e, Event::MaintenanceOff { .. }) {
            // Stopping was left to the end of maintenance: hand over now.
            let _ = self.arbiter.handle_command(now, Command::Shutdown);
        }
        let (name, detail) = (e.name(), event_detail(&e));
        let v = serde_json::to_value(&e).unwrap_or_default();
        let notice = Notice {
            message: format!("{}: {name} {detail}", self.c.local),
            event: name,
            group: v.get("group").and_then(|g| g.as_str()).unwrap_or_default().to_string(),
            epoch: v.get("epoch").and_then(|g| g.as_u64()).unwrap_or(0),
        };
        self.tell(now, e.level(), notice, detail);
        if let Event::PeerAlive { peer, .. } | Event::PeerRestarted { peer, .. } | Event::PeerReturned { peer, .. } = &e
            && let Some(m) = self.c.mirror.as_mut()
        {
            for g in self.arbiter.status().groups {
                if matches!(g.phase, Phase::Held { .. }) {
                    // One of several replicas came (back): it alone is
                    // pushed to, the others' queues are left alone.
                    match peer {
                        Some(p) => m.resync_replica(&g.group, p),
                        None => m.resync(&g.group),
                    }
                }
            }
        }
    }

    fn on_done(&mut self, now: Millis, d: JobDone) {
        self.pending.pop_front();
        match d {
            JobDone::Acquired { group, epoch, ok } => {
                self.arbiter.handle_acquired(now, &group, ok);
                if ok && let Some(m) = self.c.mirror.as_mut() {
                    m.start_watching(&group, epoch);
                    self.watching.insert(group);
                }
            }
            JobDone::Released { group, ok, .. } => {
                // The services are stopped, so nothing writes any more: the
                // mirror sends the last changes before the peer may start
                // the group (no write is lost in a failback or a standby).
                if ok
                    && self.watching.remove(&group)
                    && let Some(m) = self.c.mirror.as_mut()
                {
                    m.stop_watching(&group);
                    self.flushing.insert(group, (now, ok));
                } else {
                    self.arbiter.handle_released(now, &group, ok);
                }
            }
            JobDone::Reannounced { .. } => {}
            JobDone::Monitored { group, epoch, result } => self.checked(now, &group, epoch, result),
            JobDone::Restarted { group, epoch, ok } => {
                let current = self.health.get(&group).is_some_and(|h| h.epoch() == epoch)
                    && self.arbiter.phase(&group) == Some(Phase::Held { epoch });
                if !current {
                    return;
                }
                if ok {
                    if let Some(h) = self.health.get_mut(&group) {
                        h.restarted(now);
                    }
                    self.health_event(now, Level::Info, "restarted", &group, epoch, String::new());
                } else {
                    self.health_event(
                        now,
                        Level::Critical,
                        "restart_failed",
                        &group,
                        epoch,
                        "the group is stopped here and left to the peer".into(),
                    );
                    self.arbiter.handle_unhealthy(now, &group);
                }
            }
            JobDone::MaintenanceWritten { error: Some(e) } => {
                tracing::error!("maintenance record: {e}");
                self.record(now, Level::Critical, "maintenance_write_error".into(), e);
            }
            JobDone::MaintenanceWritten { error: None } => {}
            JobDone::StandbyLock { present, error } => {
                self.c.standby_lock = present;
                if let Some(e) = &error {
                    tracing::error!("standby lock: {e}");
                    self.record(now, Level::Critical, "standby_lock_error".into(), e.clone());
                }
                self.lock_error = error;
            }
        }
    }

    /// Keeps one monitor per group held here (a new holding, a new epoch:
    /// a fresh monitor) and hands due checks to the worker when it is idle,
    /// so a check never runs alongside a start or a stop.
    fn schedule_checks(&mut self, now: Millis) {
        if self.arbiter.maintenance().on {
            // Maintenance stops the monitors (as Pacemaker's does): the
            // admin may stop a service on purpose. Fresh ones start after.
            self.health.clear();
            return;
        }
        // Runs on every message (heartbeats included): only the groups
        // that have a monitor are looked at, by their phase alone.
        for g in self.c.groups.iter().filter(|g| g.monitor.enabled()) {
            let held = match self.arbiter.phase(&g.name) {
                Some(Phase::Held { epoch }) => Some(epoch),
                _ => None,
            };
            match (held, self.health.get(&g.name).map(Health::epoch)) {
                (Some(epoch), Some(e)) if e == epoch => {}
                (Some(epoch), _) if self.shutdown.is_none() => {
                    self.health.insert(g.name.clone(), Health::new(g.monitor, epoch, now));
                }
                _ => {
                    self.health.remove(&g.name);
                }
            }
        }
        if self.shutdown.is_some() {
            return;
        }
        if !self.pending.is_empty() {
            return;
        }
        let due = self
            .health
            .iter()
            .filter_map(|(g, h)| h.due().filter(|t| *t <= now).map(|t| (t, g.clone())))
            .min();
        if let Some((_, group)) = due
            && let Some(h) = self.health.get_mut(&group)
        {
            h.begin();
            let epoch = h.epoch();
            self.send_job(Job::Monitor { group, epoch });
        }
    }

    /// A health check ended: what it leads to (see [`Health::checked`]).
    fn checked(&mut self, now: Millis, group: &str, epoch: u64, result: Result<(), String>) {
        let peer_can_take = self.arbiter.peer_can_take(group);
        let current = self.arbiter.phase(group) == Some(Phase::Held { epoch });
        let Some(h) = self.health.get_mut(group).filter(|h| h.epoch() == epoch && current) else {
            return;
        };
        let failure = result.as_ref().err().cloned().unwrap_or_default();
        match h.checked(now, result, peer_can_take) {
            Verdict::Healthy => {}
            Verdict::Recovered { after } => self.health_event(
                now,
                Level::Info,
                "monitor_recovered",
                group,
                epoch,
                format!("after={after}"),
            ),
            Verdict::Failing { count, of } => self.health_event(
                now,
                Level::Warning,
                "monitor_failed",
                group,
                epoch,
                format!("failures={count}/{of} {failure}"),
            ),
            Verdict::Restart { n, of } => {
                self.health_event(
                    now,
                    Level::Warning,
                    "restarting",
                    group,
                    epoch,
                    format!("restart={n}/{of} {failure}"),
                );
                self.send_job(Job::Restart {
                    group: group.to_string(),
                    epoch,
                });
            }
            Verdict::RestartNoPeer => {
                self.health_event(
                    now,
                    Level::Critical,
                    "restarting",
                    group,
                    epoch,
                    format!(
                        "restarts used up, but {} cannot take the group over (dead, standby, starting or failed                          there): restarting it here again; {failure}",
                        self.c.peer
                    ),
                );
                self.send_job(Job::Restart {
                    group: group.to_string(),
                    epoch,
                });
            }
            Verdict::FailOver => {
                tracing::error!(
                    "group {group}: health checks keep failing after the restarts allowed ({failure}); stopping it                      here so {} starts it",
                    self.c.peer
                );
                self.arbiter.handle_unhealthy(now, group);
            }
        }
    }

    /// An event of the health monitor: logged, kept for `status`, and told
    /// to the notify hooks, like the arbiter's.
    fn health_event(&mut self, now: Millis, level: Level, event: &str, group: &str, epoch: u64, detail: String) {
        let detail = format!("group={group} epoch={epoch} {detail}").trim_end().to_string();
        let notice = Notice {
            event: event.to_string(),
            message: format!("{}: {event} {detail}", self.c.local),
            group: group.to_string(),
            epoch,
        };
        self.tell(now, level, notice, detail);
    }

    fn on_signal(&mut self, now: Millis, sig: i32) {
        let name = super::signals::name(sig);
        if sig == libc::SIGHUP {
            tracing::info!("{name} ignored: the configuration is read at start; restart the daemon to apply changes");
            return;
        }
        if self.shutdown.is_some() {
            tracing::warn!("{name} again: exiting without waiting for the stop hooks; services may still run here");
            self.forced = true;
            return;
        }
        self.shutdown = Some(now);
        let detail = format!("signal={name}");
        if self.arbiter.maintenance().on {
            // Pacemaker's maintenance-mode: the cluster manager goes, the
            // services stay. The next start of this boot keeps them.
            tracing::info!("{name}: stopping in maintenance mode; the services of this node stay up");
            self.record(now, Level::Info, "stopping".into(), format!("{detail} maintenance=on"));
            return;
        }
        tracing::info!("{name}: stopping; releasing every group held here, then exiting");
        let _ = self.c.notices.send(Notice {
            event: "stopping".into(),
            message: format!("{}: stopping ({name})", self.c.local),
            group: String::new(),
            epoch: 0,
        });
        self.record(now, Level::Info, "stopping".into(), detail);
        let _ = self.arbiter.handle_command(now, Command::Shutdown);
    }

    fn on_request(&mut self, now: Millis, req: Request) -> Response {
        if req == Request::Status {
            return Response::status(self.status(now));
        }
        if self.shutdown.is_some() {
            return Response::error("the daemon is shutting down");
        }
        let (cmd, done) = match req {
            Request::Status => unreachable!("answered above"),
            Request::Standby => {
                if matches!(self.arbiter.mode(), Mode::Standby { .. }) {
                    return Response::message("already in standby");
                }
                (
                    Command::Standby,
                    "standby: releasing every group held here; the lock keeps this node in standby until \
                     `hamirror standby --clear`"
                        .to_string(),
                )
            }
            Request::ClearStandby => (
                Command::ClearStandby,
                "standby cleared: this node rejoins as a backup".to_string(),
            ),
            Request::Takeover { group } => (
                Command::Takeover(group.clone()),
                format!("takeover of {group} requested: the peer releases it, then this node starts it"),
            ),
            Request::Promote { group } => (
                Command::Promote(group.clone()),
                format!("promote {group}: the peer stops it if it runs there, then this node starts it"),
            ),
            Request::Demote { group } => (
                Command::Demote(group.clone()),
                format!("demote {group}: stopping it here"),
            ),
            Request::Maintenance { on } => {
                if self.arbiter.maintenance().on == on {
                    return Response::message(format!("maintenance mode is already {}", if on { "on" } else { "off" }));
                }
                (
                    Command::Maintenance(on),
                    if on {
                        "maintenance mode on: failover decisions are frozen (nothing is started, stopped or \
                         taken over; monitors paused)"
                            .to_string()
                    } else {
                        "maintenance mode off: failover decisions resume".to_string()
                    },
                )
            }
        };
        tracing::info!("operator: {cmd:?}");
        match self.arbiter.handle_command(now, cmd) {
            Ok(()) => Response::message(done),
            Err(e) => Response::error(e.to_string()),
        }
    }

    fn holder(&self, g: &GroupStatus) -> Option<String> {
        if g.phase.holds() {
            Some(self.c.local.clone())
        } else if g
            .peer_claim
            .is_some_and(|c| matches!(c, Claim::Acquiring | Claim::Held | Claim::Releasing))
        {
            Some(g.claimed_by.clone().unwrap_or_else(|| self.c.peer.clone()))
        } else {
            None
        }
    }

    fn owner_name(&self, g: &GroupStatus) -> String {
        match g.owner {
            Side::Local => self.c.local.clone(),
            Side::Peer => g.owner_node.clone().unwrap_or_else(|| self.c.peer.clone()),
        }
    }

    fn set_names(&self, group: &str) -> Vec<String> {
        self.c
            .groups
            .iter()
            .find(|g| g.name == group)
            .map(|g| g.sets.iter().map(|s| s.name.clone()).collect())
            .unwrap_or_default()
    }

    /// The mirror side's view of the cluster.
    pub fn view(&self) -> ClusterView {
        let st = self.arbiter.status();
        ClusterView {
            local: self.c.local.clone(),
            peers: st
                .peers
                .iter()
                .map(|p| PeerView {
                    name: p.name.clone(),
                    alive: p.alive,
                    links: p
                        .links
                        .iter()
                        .map(|l| LinkView {
                            name: l.link.clone(),
                            up: p.alive && !l.silent && l.last_heard.is_some(),
                        })
                        .collect(),
                })
                .collect(),
            groups: st
                .groups
                .iter()
                .map(|g| GroupView {
                    group: g.group.clone(),
                    owner: self.owner_name(g),
                    holder: self.holder(g),
                    epoch: g.epoch,
                    here: snake(&g.phase, "phase"),
                    sets: self.set_names(&g.group),
                })
                .collect(),
        }
    }

    fn link_reports(&self, now: Millis, k: usize, links: &[LinkStatus]) -> Vec<LinkReport> {
        links
            .iter()
            .map(|l| LinkReport {
                link: l.link.clone(),
                last_heard_ms_ago: l.last_heard.map(|t| now.0.saturating_sub(t.0)),
                silent: l.silent,
                key_mismatch_ms_ago: l.key_mismatch_last.map(|t| now.0.saturating_sub(t.0)),
                received: self.received_on(k, &l.link),
                rejected: self.rejected_on(&l.link),
            })
            .collect()
    }

    /// The report `hamirror status` prints.
    pub fn status(&self, now: Millis) -> StatusReport {
        let st = self.arbiter.status();
        let (mode, standby_reason) = match st.mode {
            Mode::Starting { .. } => ("starting", None),
            Mode::Active { .. } => ("active", None),
            Mode::Standby { reason } => ("standby", Some(snake(&reason, ""))),
        };
        let reach = |r: Option<Reach>| {
            r.map(|r| ReachReport {
                up: r.up,
                total: r.total,
            })
        };
        let backlog = self.c.mirror.as_ref().map(|m| m.backlog()).unwrap_or_default();
        let sets = self
            .c
            .groups
            .iter()
            .flat_map(|g| g.sets.iter().map(move |s| (g.name.clone(), s.name.clone())))
            .map(|(group, set)| {
                let mut b = backlog.iter().find(|b| b.set == set).cloned().unwrap_or(SetBacklog {
                    set,
                    group,
                    ..Default::default()
                });
                b.conflict_copies = self.conflict_copies.get(&b.set).copied().unwrap_or(0);
                b
            })
            .collect();
        StatusReport {
            node: self.c.local.clone(),
            peer: self.c.peer.clone(),
            pid: std::process::id(),
            incarnation: self.c.incarnation,
            uptime_ms: now.0.saturating_sub(self.c.started.0),
            mode: mode.to_string(),
            standby_reason,
            standby_lock: self.c.standby_lock,
            standby_lock_error: self.lock_error.clone(),
            failover: if self.arbiter.config().external {
                "pacemaker"
            } else {
                "builtin"
            }
            .to_string(),
            maintenance: MaintenanceReport {
                on: st.maintenance,
                generation: st.maintenance_generation,
                peer_on: st.peer_maintenance.map(|p| p.0),
                peer_generation: st.peer_maintenance.map(|p| p.1),
                peer_heartbeat_version: self.peer_heartbeat_version,
            },
            shutting_down: self.shutdown.is_some(),
            peer_alive: st.peer_alive,
            peer_key_mismatch: st.peer_key_mismatch,
            deadtime_ms: st.deadtime_ms,
            flap_level: st.flap_level,
            reach: reach(st.reach),
            peer_reach: reach(st.peer_reach),
            links: self.link_reports(now, 0, &st.links),
            peers: st
                .peers
                .iter()
                .enumerate()
                .map(|(k, p)| PeerReport {
                    name: p.name.clone(),
                    alive: p.alive,
                    incarnation: p.incarnation,
                    key_mismatch: p.key_mismatch,
                    flap_level: p.flap_level,
                    links: self.link_reports(now, k, &p.links),
                })
                .collect(),
            groups: st
                .groups
                .iter()
                .map(|g| GroupReport {
                    group: g.group.clone(),
                    owner: self.owner_name(g),
                    holder: self.holder(g),
                    epoch: g.epoch,
                    phase: snake(&g.phase, "phase"),
                    peer_claim: g.peer_claim.map(|c| claim_name(c).to_string()),
                    health: self.health.get(&g.group).map(|h| h.report(now)),
                })
                .collect(),
            hooks: HooksReport {
                running: self.pending.front().cloned(),
                queued: self.pending.iter().skip(1).cloned().collect(),
                runs: crate::hooks::stats(),
            },
            sets,
            mirroring: self.c.mirror.is_some(),
            events: self
                .events
                .iter()
                .map(|e| EventReport {
                    ago_ms: now.0.saturating_sub(e.at.0),
                    level: level_name(e.level).to_string(),
                    event: e.event.clone(),
                    detail: e.detail.clone(),
                })
                .collect(),
        }
    }
}
