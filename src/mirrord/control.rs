//! The mirror's control thread: owns the watch engine and carries out what
//! the daemon asked (start/stop watching a group, resync, link switches) in
//! order, and every [`TICK`] retries sets that could not start, checks
//! resyncs and refreshes the backlog figures. Blocking work (opening
//! indexes, joining engine threads, the last push of a released group)
//! happens here, never on the daemon's driver thread.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::backlog::BacklogTracker;
use super::ship::{IndexSlot, LinkShipper, ReplicaPeer};
use super::{Cmd, FLUSH_TIMEOUT, Mirrord};
use crate::config::{Cluster, MirrorSet, Node};
use crate::daemon::{MirrorReporter, SetBacklog};
use crate::index::Index;
use crate::scan::{Quiet, ScanOptions, Scanner};
use crate::watch::{Engine, Notice, Replica, RunState, Shipper, Shipping};

/// How often sets are retried, resyncs checked and the backlog refreshed.
const TICK: Duration = Duration::from_millis(250);
/// A set that could not start (its index still open elsewhere) or whose
/// engine stopped on an error is started again after this long.
const RETRY_START: Duration = Duration::from_secs(1);

/// A group this node holds.
struct Held {
    epoch: u64,
    sets: Vec<MirrorSet>,
    /// Sets not running, and when to try starting them again.
    waiting: BTreeMap<String, Instant>,
    /// Each running set's index, as its shipper last saw it.
    slots: HashMap<String, IndexSlot>,
    /// A full check and push in progress: when it started, and whether it
    /// is a resync (the peer came back) rather than the group's start.
    resync: Option<(Instant, bool)>,
}

/// What the control thread is given.
pub(super) struct Parts {
    pub cluster: Arc<Cluster>,
    pub me: Node,
    /// Every other node: the replicas of each held set.
    pub peers: Vec<ReplicaPeer>,
    pub rt: tokio::runtime::Handle,
    /// Where the backlog figures are published for [`super::Mirrord::backlog`].
    pub backlog_out: Arc<Mutex<Vec<SetBacklog>>>,
    pub reporter: MirrorReporter,
}

pub(super) struct Control {
    p: Parts,
    engine: Engine,
    notices: Receiver<Notice>,
    held: BTreeMap<String, Held>,
    tracker: BacklogTracker,
}

impl Control {
    pub fn new(p: Parts) -> Control {
        let (ntx, notices) = mpsc::channel();
        let engine = Mirrord::engine(&p.me, ntx);
        Control {
            p,
            engine,
            notices,
            held: BTreeMap::new(),
            tracker: BacklogTracker::default(),
        }
    }

    pub fn run(mut self, rx: Receiver<Cmd>) {
        loop {
            match rx.recv_timeout(TICK) {
                Ok(Cmd::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(cmd) => self.handle(cmd),
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.tick();
        }
        // Dropping the engine stops every set.
        drop(self);
        tracing::info!("mirror stopped");
    }

    fn group_sets(&self, group: &str) -> Vec<MirrorSet> {
        self.p
            .cluster
            .nodes
            .iter()
            .find(|n| n.group.name == group)
            .map(|n| n.group.sets.clone())
            .unwrap_or_default()
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Start { group, epoch } => self.start_group(&group, epoch),
            Cmd::Stop { group } => self.stop_group(&group),
            Cmd::Resync { group } => self.resync(&group),
            Cmd::ResyncReplica { group, peer } => self.resync_replica(&group, &peer),
            Cmd::LinkChanged { peer, from, to } => {
                let held: Vec<&str> = self.held.keys().map(String::as_str).collect();
                tracing::warn!(
                    peer = %peer,
                    "mirror link: {} → {}{}",
                    from.name(),
                    to.name(),
                    if held.is_empty() {
                        String::new()
                    } else {
                        format!(" (groups {} reconnect on their next change)", held.join(", "))
                    }
                );
            }
            Cmd::PeerCaughtUp { set } => {
                if let Some(h) = self.engine.handle(&set) {
                    h.ship_now();
                }
            }
            Cmd::Shutdown => {}
        }
    }

    fn start_group(&mut self, group: &str, epoch: u64) {
        let sets = self.group_sets(group);
        if let Some(old) = self.held.remove(group) {
            // A new epoch for a group already watched: restart its sets so
            // their hellos carry it.
            for s in &old.sets {
                self.engine.stop_set(&s.name);
            }
        }
        let to = self.peer_names();
        tracing::info!(
            group, epoch, peer = %to,
            "mirroring group {group} to {to} ({} sets)", sets.len()
        );
        let now = Instant::now();
        // The start is a resync too (a full quick check and push): the peer
        // may have been alive all along (in standby, say), so no other
        // resync would tell the arbiter its copy caught up.
        let held = Held {
            epoch,
            waiting: sets.iter().map(|s| (s.name.clone(), now)).collect(),
            sets,
            slots: HashMap::new(),
            resync: Some((now, false)),
        };
        self.held.insert(group.to_string(), held);
        self.p.reporter.caught_up(group, false);
        self.start_waiting();
    }

    /// Starts every waiting set whose time has come.
    fn start_waiting(&mut self) {
        let now = Instant::now();
        let groups: Vec<String> = self.held.keys().cloned().collect();
        for group in groups {
            let Some(h) = self.held.get(&group) else { continue };
            let due: Vec<MirrorSet> = h
                .sets
                .iter()
                .filter(|s| h.waiting.get(&s.name).is_some_and(|t| *t <= now))
                .cloned()
                .collect();
            let epoch = h.epoch;
            for set in due {
                let slot: IndexSlot = Arc::new(Mutex::new(Weak::new()));
                let replicas = self
                    .p
                    .peers
                    .iter()
                    .map(|peer| Replica {
                        peer: peer.node.name.clone(),
                        shipper: self.shipper(&group, epoch, slot.clone(), peer),
                    })
                    .collect();
                let r = self.engine.start_set_to(&set, replicas);
                let Some(h) = self.held.get_mut(&group) else { continue };
                match r {
                    Ok(_) => {
                        h.waiting.remove(&set.name);
                        h.slots.insert(set.name.clone(), slot);
                    }
                    Err(e) => {
                        // Retryable: usually the receiver's last conversation
                        // from the previous holder still has the index open.
                        // Otherwise (no events, a broken index) an operator
                        // must act, but trying again costs little.
                        if e.retryable() {
                            tracing::info!(set = %set.name, "cannot watch yet: {e}; trying again in {RETRY_START:?}");
                        } else {
                            tracing::error!(set = %set.name, "cannot watch: {e}; trying again in {RETRY_START:?}");
                        }
                        h.waiting.insert(set.name.clone(), now + RETRY_START);
                    }
                }
            }
        }
    }

    fn shipper(&self, group: &str, epoch: u64, slot: IndexSlot, peer: &ReplicaPeer) -> Box<dyn Shipper> {
        Box::new(LinkShipper::new(
            self.p.rt.clone(),
            &self.p.me,
            &peer.node,
            group,
            epoch,
            peer.link.clone(),
            slot,
        ))
    }

    /// The replicas' names, for the log (`serv2`, or `serv2, serv3`).
    fn peer_names(&self) -> String {
        let names: Vec<&str> = self.p.peers.iter().map(|p| p.node.name.as_str()).collect();
        names.join(", ")
    }

    /// The group was released: stop its sets, then send what the stop
    /// hooks and the last moments left behind.
    /// Sends the last changes of a released group, then tells the daemon,
    /// which keeps the group `releasing` until then (always answered).
    fn stop_group(&mut self, group: &str) {
        self.send_last_changes(group);
        self.p.reporter.stopped(group);
    }

    fn send_last_changes(&mut self, group: &str) {
        let Some(h) = self.held.remove(group) else {
            return;
        };
        for s in &h.sets {
            self.engine.stop_set(&s.name);
        }
        let t0 = Instant::now();
        for set in &h.sets {
            let left = FLUSH_TIMEOUT.saturating_sub(t0.elapsed());
            for (peer, r) in self.flush(group, h.epoch, set, left) {
                match r {
                    Ok(acked) => tracing::info!(
                        set = %set.name, peer = %peer, generation = acked,
                        "last changes sent after the release"
                    ),
                    Err(e) => tracing::warn!(
                        set = %set.name, peer = %peer,
                        "the last changes could not be sent after the release: {e} (the peer gets them when it resyncs)"
                    ),
                }
            }
        }
        tracing::info!(
            group,
            ms = t0.elapsed().as_millis() as u64,
            "stopped mirroring group {group}"
        );
    }

    /// One full quick check of `set`, then a push to every replica at
    /// once, bounded by `limit` (the work goes on in the background past
    /// it, holding the index): each replica's outcome, by peer name.
    fn flush(&self, group: &str, epoch: u64, set: &MirrorSet, limit: Duration) -> Vec<(String, Result<u64, String>)> {
        let t0 = Instant::now();
        let (tx, rx) = mpsc::channel();
        let shippers: Vec<(String, Box<dyn Shipper>)> = self
            .p
            .peers
            .iter()
            .map(|p| {
                let slot = Arc::new(Mutex::new(Weak::new()));
                (p.node.name.clone(), self.shipper(group, epoch, slot, p))
            })
            .collect();
        let names: Vec<String> = shippers.iter().map(|(n, _)| n.clone()).collect();
        let (me, set2) = (self.p.me.clone(), set.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("hamirror-flush-{}", set.name))
            .spawn(move || {
                let scanned = (|| {
                    let index = open_index(&me, &set2.name, Duration::from_secs(2))?;
                    let scanner = Scanner::new(&ScanOptions::default()).map_err(|e| e.to_string())?;
                    let s = scanner
                        .scan_set(&index, &set2, &me.conf.root, &Quiet)
                        .map_err(|e| e.to_string())?;
                    Ok::<_, String>((index, s.report.generation))
                })();
                let (index, generation) = match scanned {
                    Ok(v) => v,
                    Err(e) => {
                        for (peer, _) in shippers {
                            let _ = tx.send((peer, Err(e.clone())));
                        }
                        return;
                    }
                };
                // One thread per replica: a replica that is away must not
                // hold back the others' last changes.
                std::thread::scope(|scope| {
                    for (peer, mut shipper) in shippers {
                        let (tx, index, set2) = (tx.clone(), index.clone(), &set2);
                        scope.spawn(move || {
                            let r = shipper
                                .ship(set2, &index, generation)
                                .map(|o| o.acked)
                                .map_err(|e| e.message);
                            let _ = tx.send((peer, r));
                        });
                    }
                });
            });
        if let Err(e) = spawned {
            return names.into_iter().map(|n| (n, Err(e.to_string()))).collect();
        }
        let mut out: Vec<(String, Result<u64, String>)> = Vec::new();
        while out.len() < names.len() {
            match rx.recv_timeout(limit.saturating_sub(t0.elapsed())) {
                Ok(r) => out.push(r),
                Err(_) => break,
            }
        }
        for n in names {
            if !out.iter().any(|(p, _)| *p == n) {
                out.push((n, Err(format!("not done within {limit:?}"))));
            }
        }
        out
    }

    /// The peer came back: a full quick check and push of each set of the
    /// group (its engine restarted), `caught_up` once every set is in step.
    fn resync(&mut self, group: &str) {
        let to = self.peer_names();
        let Some(h) = self.held.get_mut(group) else {
            tracing::debug!(group, "resync asked for a group not mirrored from here");
            return;
        };
        tracing::info!(group, peer = %to, "resync: checking every set of {group} against {to}");
        let now = Instant::now();
        h.resync = Some((now, true));
        for s in &h.sets {
            if !h.waiting.contains_key(&s.name) {
                self.engine.stop_set(&s.name);
            }
            h.waiting.insert(s.name.clone(), now);
        }
        h.slots.clear();
        self.p.reporter.caught_up(group, false);
        self.start_waiting();
    }

    /// One replica returned: push each set of the group to it now. The
    /// holder's index needs no new quick check (its watcher keeps it
    /// current for every replica alike); what the replica lacks follows
    /// from its own acknowledged position. A set not running yet pushes
    /// to every replica when it starts anyway.
    fn resync_replica(&mut self, group: &str, peer: &str) {
        let Some(h) = self.held.get(group) else {
            tracing::debug!(group, peer, "resync asked for a group not mirrored from here");
            return;
        };
        tracing::info!(group, peer, "resync: pushing every set of {group} to {peer}");
        for s in &h.sets {
            if let Some(handle) = self.engine.handle(&s.name)
                && !handle.push_again(peer)
            {
                tracing::warn!(set = %s.name, peer, "resync: {peer} is not a replica of this set");
            }
        }
    }

    fn tick(&mut self) {
        for n in self.notices.try_iter() {
            if let Err(e) = n.result {
                tracing::error!(set = %n.set, "watching stopped: {e}; starting it again in {RETRY_START:?}");
                self.engine.stop_set(&n.set);
                for h in self.held.values_mut() {
                    if h.sets.iter().any(|s| s.name == n.set) {
                        h.waiting.insert(n.set.clone(), Instant::now() + RETRY_START);
                        h.slots.remove(&n.set);
                    }
                }
            }
        }
        self.start_waiting();
        let mut out = Vec::new();
        let mut caught_up = Vec::new();
        let links: Vec<(String, super::Link)> = self.p.peers.iter().map(|p| (p.node.name.clone(), p.link())).collect();
        for (group, h) in &self.held {
            let mut in_step = h.waiting.is_empty();
            for set in &h.sets {
                let handle = self.engine.handle(&set.name);
                let slot = h.slots.get(&set.name);
                let (b, step, pushed) = self.tracker.figures(group, set, handle.as_ref(), slot, &links);
                in_step &= step || pushed;
                out.push(b);
            }
            if in_step && let Some((t, resync)) = h.resync {
                caught_up.push((group.clone(), t.elapsed(), resync));
            }
        }
        for (group, took, resync) in caught_up {
            let ms = took.as_millis() as u64;
            let peer = &self.peer_names();
            if resync {
                tracing::info!(group = %group, ms, "resync done: {peer} is in step");
            } else {
                tracing::info!(group = %group, ms, "first push done: {peer} is in step");
            }
            self.p.reporter.caught_up(&group, true);
            if let Some(h) = self.held.get_mut(&group) {
                h.resync = None;
            }
        }
        self.tracker.forget_others(&out);
        *self.p.backlog_out.lock().unwrap_or_else(|p| p.into_inner()) = out;
    }
}

/// Opens a set's index, waiting up to `patience` while another user (the
/// set's engine, just stopped; a receiver conversation) still holds it.
pub(super) fn open_index(me: &Node, set: &str, patience: Duration) -> Result<Arc<Index>, String> {
    let t0 = Instant::now();
    loop {
        match Index::shared_set(&me.conf.state, set) {
            Ok(i) => return Ok(i),
            Err(e) if e.retryable() && t0.elapsed() < patience => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Whether a set's engine has finished starting and its shipping is in step
/// (the peer acknowledged the newest generation).
pub(super) fn in_step(state: &RunState, shipping: &Shipping, generation: u64, acked: Option<u64>) -> bool {
    *state == RunState::Watching && *shipping == Shipping::Ok && acked == Some(generation)
}
