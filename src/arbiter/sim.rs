//! A simulator: two real [`Arbiter`]s on a virtual clock, driven the way the
//! daemon drives them, over simulated links with per-link delay, loss,
//! partition and per-node cuts; nodes can be frozen (SIGSTOP), resumed,
//! crashed and restarted. Hooks take a configurable virtual time and run one
//! at a time per node. Every scenario runs in milliseconds of real time.
//!
//! It records, per group and node, the intervals during which the group may
//! have been up there — from the start of its start hooks to the end of its
//! stop hooks (a crash ends them: the machine is off) — so a test can assert
//! that no group was ever held by both nodes at once ([`Sim::overlap`]).
//! Reach scores come from the prober's real [`ReachTracker`], fed once per
//! keepalive with what the node's LAN side can reach.
//!
//! Deterministic: all randomness comes from the seed. No I/O, no clock.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

use super::{
    Action, Arbiter, ArbiterConfig, Command, CommandError, Event, LinkId, Maintenance, Millis, Mode, NodeState, Phase,
    Side, Startup,
};
use crate::config::Timers;
use crate::failover::hysteresis::ReachTracker;

/// Link index of the crossover cable.
pub const CROSSOVER: usize = 0;
/// Link index of the LAN.
pub const LAN: usize = 1;
/// Names of the two simulated nodes; each owns the group of its name.
pub const NODES: [&str; 2] = ["serv1", "serv2"];

/// Scenario-wide settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub timers: Timers,
    pub auto_failback: bool,
    /// `failover = pacemaker` on both nodes: groups move on promote/demote only.
    pub external: bool,
    /// Index of the preferred node.
    pub preferred: Option<usize>,
    /// Reachlist hosts.
    pub hosts: u16,
    /// Virtual duration of a group's start hooks and stop hooks.
    pub acquire_time: Duration,
    pub release_time: Duration,
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            timers: Timers::default(),
            auto_failback: false,
            external: false,
            preferred: Some(0),
            hosts: 3,
            acquire_time: Duration::from_millis(20),
            release_time: Duration::from_millis(20),
            seed: 1,
        }
    }
}

#[derive(Debug, Clone)]
enum Ev {
    Deliver {
        to: usize,
        link: usize,
        incarnation: u64,
        state: NodeState,
        /// The heartbeat key the sender signed with.
        key: u8,
    },
    HeartbeatTick {
        node: usize,
        life: u64,
    },
    ProbeTick {
        node: usize,
        life: u64,
    },
    Timer {
        node: usize,
        life: u64,
    },
    HookDone {
        node: usize,
        life: u64,
        group: String,
        acquire: bool,
    },
}

impl Ev {
    fn node(&self) -> usize {
        match self {
            Ev::Deliver { to, .. } => *to,
            Ev::HeartbeatTick { node, .. }
            | Ev::ProbeTick { node, .. }
            | Ev::Timer { node, .. }
            | Ev::HookDone { node, .. } => *node,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Down,
    Running,
    Frozen,
}

#[derive(Debug, Clone)]
struct Hook {
    group: String,
    acquire: bool,
}

#[derive(Debug)]
struct Node {
    run: Run,
    arbiter: Option<Arbiter>,
    incarnation: u64,
    /// Which heartbeat key it has (nodes with different keys see each
    /// other's heartbeats fail authentication).
    key: u8,
    /// Survives restarts, like the files in `state`.
    lock: bool,
    epochs: BTreeMap<String, u64>,
    /// The persisted maintenance register (survives power cycles).
    maintenance: Maintenance,
    /// Life generation: bumps on start and crash, so events of a previous
    /// life (hook completions) are dropped.
    life: u64,
    /// Tick generation: bumps on start and resume (ticks stop while frozen).
    tick_gen: u64,
    timer_gen: u64,
    tracker: ReachTracker,
    /// Reachlist hosts this node's LAN side reaches (when its LAN NIC is up).
    reach_hosts: u16,
    nic: [bool; 2],
    hooks: std::collections::VecDeque<Hook>,
    hook_running: bool,
    advert_seen: u64,
    /// Packets and hook completions that arrived while frozen.
    frozen_inbox: Vec<Ev>,
    fail_acquire: Vec<String>,
    fail_release: u32,
    events: Vec<(Millis, Event)>,
    actions: Vec<(Millis, Action)>,
    extra_acquire: Duration,
    extra_release: Duration,
}

#[derive(Debug, Clone, Copy)]
struct LinkModel {
    up: bool,
    delay: Duration,
    loss: f64,
}

/// One interval during which a group may have been up on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    pub node: usize,
    pub from: Millis,
    pub to: Option<Millis>,
}

/// Two nodes, two links, one virtual clock.
#[derive(Debug)]
pub struct Sim {
    pub cfg: SimConfig,
    now: Millis,
    seq: u64,
    queue: BinaryHeap<Reverse<(Millis, u64, usize)>>,
    slots: Vec<Option<Ev>>,
    nodes: [Node; 2],
    links: [LinkModel; 2],
    rng: u64,
    next_incarnation: u64,
    holdings: BTreeMap<String, Vec<Holding>>,
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Self {
        let hosts = cfg.hosts;
        let node = |_| Node {
            run: Run::Down,
            arbiter: None,
            incarnation: 0,
            key: 0,
            lock: false,
            epochs: BTreeMap::new(),
            maintenance: Maintenance::default(),
            life: 0,
            tick_gen: 0,
            timer_gen: 0,
            tracker: ReachTracker::new(hosts.into(), Timers::PROBE_RISE, Timers::PROBE_FALL),
            reach_hosts: hosts,
            nic: [true, true],
            hooks: Default::default(),
            hook_running: false,
            advert_seen: u64::MAX,
            frozen_inbox: vec![],
            fail_acquire: vec![],
            fail_release: 0,
            events: vec![],
            actions: vec![],
            extra_acquire: Duration::ZERO,
            extra_release: Duration::ZERO,
        };
        let link = LinkModel {
            up: true,
            delay: Duration::from_millis(1),
            loss: 0.0,
        };
        Sim {
            rng: cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            cfg,
            now: Millis(0),
            seq: 0,
            queue: BinaryHeap::new(),
            slots: vec![],
            nodes: [node(0), node(1)],
            links: [link, link],
            next_incarnation: 1000,
            holdings: BTreeMap::new(),
        }
    }

    pub fn now(&self) -> Millis {
        self.now
    }

    fn random(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.random() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    fn schedule(&mut self, at: Millis, ev: Ev) {
        self.seq += 1;
        self.slots.push(Some(ev));
        self.queue.push(Reverse((at, self.seq, self.slots.len() - 1)));
    }

    fn arbiter_config(&self, n: usize) -> ArbiterConfig {
        let mut c = ArbiterConfig::new(NODES[n], NODES[1 - n], self.cfg.timers, true);
        c.auto_failback = self.cfg.auto_failback;
        c.external = self.cfg.external;
        c.preferred = self
            .cfg
            .preferred
            .map(|p| if p == n { Side::Local } else { Side::Peer });
        c
    }

    /// Starts (or restarts after a crash) node `n` with its persisted lock
    /// and epochs and a new incarnation.
    pub fn start(&mut self, n: usize) {
        let now = self.now;
        let cfg = self.arbiter_config(n);
        self.next_incarnation += 1;
        let inc = self.next_incarnation;
        let phase = Duration::from_millis(self.random() % self.cfg.timers.keepalive.as_millis().max(1) as u64);
        let node = &mut self.nodes[n];
        node.run = Run::Running;
        node.life += 1;
        node.tick_gen += 1;
        node.incarnation = inc;
        node.tracker = ReachTracker::new(self.cfg.hosts.into(), Timers::PROBE_RISE, Timers::PROBE_FALL);
        node.hooks.clear();
        node.hook_running = false;
        node.frozen_inbox.clear();
        node.advert_seen = u64::MAX;
        // A power cycle: nothing kept running, whatever the register says.
        let startup = Startup {
            standby_lock: node.lock,
            epochs: node.epochs.clone(),
            maintenance: node.maintenance,
            kept: BTreeMap::new(),
        };
        node.arbiter = Some(Arbiter::new(cfg, now, startup));
        let life = node.tick_gen;
        self.schedule(now + phase, Ev::HeartbeatTick { node: n, life });
        self.schedule(now + phase + self.cfg.timers.keepalive, Ev::ProbeTick { node: n, life });
        self.drive(n);
    }

    /// Powers node `n` off: its groups stop at once (the machine is gone).
    pub fn crash(&mut self, n: usize) {
        let now = self.now;
        let node = &mut self.nodes[n];
        node.run = Run::Down;
        node.life += 1;
        node.arbiter = None;
        node.hooks.clear();
        node.hook_running = false;
        for hs in self.holdings.values_mut() {
            for h in hs.iter_mut().filter(|h| h.node == n && h.to.is_none()) {
                h.to = Some(now);
            }
        }
    }

    /// The daemon process dies but the machine runs on: what its hooks
    /// started stays up until a restarted daemon's clean-up stops it.
    pub fn kill(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        node.run = Run::Down;
        node.life += 1;
        node.arbiter = None;
        node.hooks.clear();
        node.hook_running = false;
    }

    /// SIGSTOP: the process does nothing; packets and hook completions
    /// queue up (socket buffer, child exit status) until `resume`.
    pub fn freeze(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        if node.run == Run::Running {
            node.run = Run::Frozen;
        }
    }

    /// SIGCONT: timers fire first (the worst order), then the queued input.
    pub fn resume(&mut self, n: usize) {
        if self.nodes[n].run != Run::Frozen {
            return;
        }
        let now = self.now;
        let node = &mut self.nodes[n];
        node.run = Run::Running;
        node.tick_gen += 1;
        let life = node.tick_gen;
        let inbox = std::mem::take(&mut node.frozen_inbox);
        if let Some(a) = node.arbiter.as_mut() {
            a.handle_timeout(now);
        }
        self.drive(n);
        for ev in inbox {
            self.dispatch(ev);
        }
        self.schedule(now, Ev::HeartbeatTick { node: n, life });
        self.schedule(now + self.cfg.timers.keepalive, Ev::ProbeTick { node: n, life });
    }

    /// Brings a link's path between the nodes up or down (both directions).
    pub fn set_link(&mut self, link: usize, up: bool) {
        self.links[link].up = up;
    }

    /// Cuts or restores node `n`'s own side of a link (its NIC or cable):
    /// cutting its LAN side also cuts it from the reachlist hosts.
    pub fn set_nic(&mut self, n: usize, link: usize, up: bool) {
        self.nodes[n].nic[link] = up;
    }

    pub fn set_delay(&mut self, link: usize, delay: Duration) {
        self.links[link].delay = delay;
    }

    pub fn set_loss(&mut self, link: usize, loss: f64) {
        self.links[link].loss = loss;
    }

    /// How many reachlist hosts node `n` reaches while its LAN side is up.
    /// Gives node `n` heartbeat key number `key` (all start with 0), as an
    /// operator editing its key file and restarting it would (restart it
    /// for that; the change itself takes effect at once).
    pub fn set_key(&mut self, n: usize, key: u8) {
        self.nodes[n].key = key;
    }

    pub fn set_reach(&mut self, n: usize, hosts: u16) {
        self.nodes[n].reach_hosts = hosts.min(self.cfg.hosts);
    }

    /// Start hooks of `group` fail on node `n` (until cleared).
    pub fn fail_acquire(&mut self, n: usize, group: &str, fail: bool) {
        let v = &mut self.nodes[n].fail_acquire;
        v.retain(|g| g != group);
        if fail {
            v.push(group.to_string());
        }
    }

    /// The next `times` stop hook runs on node `n` fail.
    pub fn fail_release(&mut self, n: usize, times: u32) {
        self.nodes[n].fail_release = times;
    }

    /// Extra virtual time node `n`'s hooks take (slow services).
    pub fn slow_hooks(&mut self, n: usize, acquire: Duration, release: Duration) {
        self.nodes[n].extra_acquire = acquire;
        self.nodes[n].extra_release = release;
    }

    pub fn command(&mut self, n: usize, cmd: Command) -> Result<(), CommandError> {
        let now = self.now;
        let r = match self.nodes[n].arbiter.as_mut() {
            Some(a) => a.handle_command(now, cmd),
            None => Err(CommandError::Starting),
        };
        self.drive(n);
        r
    }

    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until(end);
    }

    pub fn run_until(&mut self, end: Millis) {
        while let Some(Reverse((at, _, slot))) = self.queue.peek().copied() {
            if at > end {
                break;
            }
            self.queue.pop();
            self.now = at;
            if let Some(ev) = self.slots[slot].take() {
                self.dispatch(ev);
            }
        }
        self.now = end;
    }

    fn dispatch(&mut self, ev: Ev) {
        let n = ev.node();
        match self.nodes[n].run {
            Run::Down => return,
            Run::Frozen => {
                // Timers and ticks of a frozen process do not run; what
                // arrives from outside waits for it.
                if matches!(ev, Ev::Deliver { .. } | Ev::HookDone { .. }) {
                    self.nodes[n].frozen_inbox.push(ev);
                }
                return;
            }
            Run::Running => {}
        }
        let now = self.now;
        let (life, tick_gen) = (self.nodes[n].life, self.nodes[n].tick_gen);
        match ev {
            Ev::Deliver {
                link,
                incarnation,
                state,
                key,
                ..
            } => {
                let same_key = key == self.nodes[n].key;
                if let Some(a) = self.nodes[n].arbiter.as_mut() {
                    if same_key {
                        a.handle_heartbeat(now, LinkId(link as u8), incarnation, state);
                    } else {
                        a.handle_bad_key(now, LinkId(link as u8));
                    }
                }
            }
            Ev::HeartbeatTick { life: g, .. } if g == tick_gen => {
                self.send_heartbeats(n);
                let life = tick_gen;
                self.schedule(now + self.cfg.timers.keepalive, Ev::HeartbeatTick { node: n, life });
            }
            Ev::ProbeTick { life: g, .. } if g == tick_gen => {
                let node = &mut self.nodes[n];
                let reachable = if node.nic[LAN] { node.reach_hosts } else { 0 };
                let results: Vec<bool> = (0..self.cfg.hosts).map(|h| h < reachable).collect();
                if let Some(r) = node.tracker.round(&results)
                    && let Some(a) = node.arbiter.as_mut()
                {
                    a.handle_reach(now, r);
                }
                let life = tick_gen;
                self.schedule(now + self.cfg.timers.keepalive, Ev::ProbeTick { node: n, life });
            }
            Ev::Timer { life: g, .. } if g == self.nodes[n].timer_gen => {
                if let Some(a) = self.nodes[n].arbiter.as_mut() {
                    a.handle_timeout(now);
                }
            }
            Ev::HookDone {
                life: g,
                group,
                acquire,
                ..
            } if g == life => {
                self.nodes[n].hook_running = false;
                if acquire {
                    let ok = !self.nodes[n].fail_acquire.contains(&group);
                    if !ok {
                        self.close_holding(&group, n);
                    }
                    if let Some(a) = self.nodes[n].arbiter.as_mut() {
                        a.handle_acquired(now, &group, ok);
                    }
                } else {
                    let ok = if self.nodes[n].fail_release > 0 {
                        self.nodes[n].fail_release -= 1;
                        false
                    } else {
                        true
                    };
                    if ok {
                        self.close_holding(&group, n);
                    }
                    if let Some(a) = self.nodes[n].arbiter.as_mut() {
                        a.handle_released(now, &group, ok);
                    }
                }
            }
            _ => return,
        }
        self.drive(n);
    }

    fn send_heartbeats(&mut self, n: usize) {
        let Some(a) = self.nodes[n].arbiter.as_ref() else {
            return;
        };
        let state = a.advert().clone();
        let inc = self.nodes[n].incarnation;
        let key = self.nodes[n].key;
        for link in [CROSSOVER, LAN] {
            let m = self.links[link];
            if !(m.up && self.nodes[0].nic[link] && self.nodes[1].nic[link]) || self.chance(m.loss) {
                continue;
            }
            let at = self.now + m.delay;
            self.schedule(
                at,
                Ev::Deliver {
                    to: 1 - n,
                    link,
                    incarnation: inc,
                    state: state.clone(),
                    key,
                },
            );
        }
    }

    /// Carries out the arbiter's actions like the daemon: hooks one at a
    /// time, the lock and epochs persisted, a heartbeat at once when the
    /// advert changed, the next timer armed.
    fn drive(&mut self, n: usize) {
        let now = self.now;
        while let Some(action) = self.nodes[n].arbiter.as_mut().and_then(Arbiter::poll_action) {
            let node = &mut self.nodes[n];
            node.actions.push((now, action.clone()));
            match action {
                Action::Acquire { group, epoch, .. } => {
                    node.epochs.insert(group.clone(), epoch);
                    node.hooks.push_back(Hook { group, acquire: true });
                }
                Action::Release { group, .. } => node.hooks.push_back(Hook { group, acquire: false }),
                Action::WriteStandbyLock { .. } => node.lock = true,
                Action::ClearStandbyLock => node.lock = false,
                Action::WriteMaintenance { on, generation } => node.maintenance = Maintenance { on, generation },
                Action::Reannounce { .. } => {}
                Action::Notify(e) => node.events.push((now, e)),
            }
        }
        if !self.nodes[n].hook_running
            && let Some(h) = self.nodes[n].hooks.pop_front()
        {
            self.nodes[n].hook_running = true;
            let d = if h.acquire {
                self.open_holding(&h.group, n);
                self.cfg.acquire_time + self.nodes[n].extra_acquire
            } else {
                self.cfg.release_time + self.nodes[n].extra_release
            };
            let life = self.nodes[n].life;
            self.schedule(
                now + d,
                Ev::HookDone {
                    node: n,
                    life,
                    group: h.group,
                    acquire: h.acquire,
                },
            );
        }
        let Some(a) = self.nodes[n].arbiter.as_ref() else {
            return;
        };
        let (adv, deadline) = (a.advert_generation(), a.poll_timeout());
        if self.nodes[n].advert_seen != adv {
            self.nodes[n].advert_seen = adv;
            self.send_heartbeats(n);
        }
        self.nodes[n].timer_gen += 1;
        let life = self.nodes[n].timer_gen;
        self.schedule(deadline, Ev::Timer { node: n, life });
    }

    fn open_holding(&mut self, group: &str, n: usize) {
        let hs = self.holdings.entry(group.to_string()).or_default();
        if !hs.iter().any(|h| h.node == n && h.to.is_none()) {
            hs.push(Holding {
                node: n,
                from: self.now,
                to: None,
            });
        }
    }

    fn close_holding(&mut self, group: &str, n: usize) {
        let now = self.now;
        if let Some(hs) = self.holdings.get_mut(group) {
            for h in hs.iter_mut().filter(|h| h.node == n && h.to.is_none()) {
                h.to = Some(now);
            }
        }
    }

    /// Nodes on which `group` may be up now.
    pub fn holders(&self, group: &str) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .holdings
            .get(group)
            .map(|hs| hs.iter().filter(|h| h.to.is_none()).map(|h| h.node).collect())
            .unwrap_or_default();
        v.sort();
        v.dedup();
        v
    }

    /// Who holds what, as `[holders of serv1's group, holders of serv2's]`.
    pub fn holding_map(&self) -> [Vec<usize>; 2] {
        [self.holders(NODES[0]), self.holders(NODES[1])]
    }

    pub fn holdings(&self, group: &str) -> &[Holding] {
        self.holdings.get(group).map_or(&[], Vec::as_slice)
    }

    /// Total virtual time during which `group` was up on both nodes.
    pub fn overlap(&self, group: &str) -> Duration {
        let hs = self.holdings(group);
        let end = |h: &Holding| h.to.unwrap_or(self.now);
        let mut total = 0;
        for a in hs.iter().filter(|h| h.node == 0) {
            for b in hs.iter().filter(|h| h.node == 1) {
                let from = a.from.max(b.from);
                let to = end(a).min(end(b));
                total += to.0.saturating_sub(from.0);
            }
        }
        Duration::from_millis(total)
    }

    /// The largest [`Sim::overlap`] over both groups.
    pub fn max_overlap(&self) -> Duration {
        NODES.iter().map(|g| self.overlap(g)).max().unwrap_or_default()
    }

    /// How many times `group` changed hands (acquisitions after the first).
    pub fn moves(&self, group: &str) -> usize {
        self.holdings(group).len().saturating_sub(1)
    }

    pub fn events(&self, n: usize) -> &[(Millis, Event)] {
        &self.nodes[n].events
    }

    pub fn actions(&self, n: usize) -> &[(Millis, Action)] {
        &self.nodes[n].actions
    }

    /// First event of node `n` at or after `from` that matches.
    pub fn first_event(&self, n: usize, from: Millis, f: impl Fn(&Event) -> bool) -> Option<Millis> {
        self.nodes[n]
            .events
            .iter()
            .find(|(t, e)| *t >= from && f(e))
            .map(|(t, _)| *t)
    }

    pub fn count_events(&self, n: usize, f: impl Fn(&Event) -> bool) -> usize {
        self.nodes[n].events.iter().filter(|(_, e)| f(e)).count()
    }

    pub fn mode(&self, n: usize) -> Option<Mode> {
        self.nodes[n].arbiter.as_ref().map(Arbiter::mode)
    }

    pub fn phase(&self, n: usize, group: &str) -> Option<Phase> {
        self.nodes[n].arbiter.as_ref().and_then(|a| a.phase(group))
    }

    pub fn locked(&self, n: usize) -> bool {
        self.nodes[n].lock
    }

    pub fn arbiter(&self, n: usize) -> Option<&Arbiter> {
        self.nodes[n].arbiter.as_ref()
    }
}
