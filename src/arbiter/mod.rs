//! The arbiter: the failover decision machine of one node, as a pure state
//! machine in the style of `quinn-proto`. Inputs come in through
//! `handle_*(now, …)` with the current time (a [`Millis`] the caller
//! supplies); decisions come out of [`Arbiter::poll_action`] and the next
//! deadline out of [`Arbiter::poll_timeout`]. It never reads a clock,
//! sleeps, spawns, or touches a socket or a file: the daemon (or the
//! simulator in [`sim`]) does all of that and reports back.
//!
//! It must not depend on tokio, the network or the hooks; it knows the
//! configuration ([`ArbiterConfig`]) and the heartbeat *content*
//! ([`NodeState`] from the wire crate), nothing else. The rules and their
//! reasoning are in `docs/FAILOVER.md`; the code in `rules.rs` follows its
//! sections.
//!
//! Contract for the driver:
//! * call `handle_heartbeat` for every authenticated, non-replayed heartbeat
//!   (per link), `handle_bad_key` for every datagram of the peer that fails
//!   authentication, `handle_reach` after every prober round, and
//!   `handle_timeout` when `poll_timeout` is reached; drain pending inputs
//!   before calling `handle_timeout` so a queued heartbeat is never missed;
//! * after every call, drain `poll_action` and carry the actions out in
//!   order (releases come before acquisitions); report each hook run with
//!   `handle_acquired` / `handle_released`;
//! * send [`Arbiter::advert`] in every heartbeat (and at once when it
//!   changes: [`Arbiter::advert_generation`]).

mod liveness;
mod rules;
pub mod sim;
mod types;

#[cfg(test)]
mod scenarios;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::ops::Add;
use std::time::Duration;

pub use hamirror_wire::heartbeat::{Claim, GroupClaim, Maintenance, NodeState, Reach};
pub use types::{
    AcquireReason, Action, Command, CommandError, ContactStatus, Event, GroupStatus, Level, LinkStatus, Mode, Phase,
    ReleaseReason, StandbyReason, Status, claim_name, ser_claim, ser_reach,
};

use crate::config::{Cluster, Timers};
use liveness::{Contact, Link, Peer, PeerStatus};

/// A point on the caller's monotonic clock, in milliseconds. The arbiter
/// only compares and adds; where zero lies is the caller's business.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Millis(pub u64);

impl Millis {
    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Millis) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Millis {
    type Output = Millis;
    fn add(self, d: Duration) -> Millis {
        Millis(self.0.saturating_add(d.as_millis().min(u64::MAX as u128) as u64))
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}s", self.0 / 1000, self.0 % 1000)
    }
}

/// A link to the peer, by its index in [`ArbiterConfig::links`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct LinkId(pub u8);

/// Which node, seen from this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Local,
    Peer,
}

/// A group and the node that owns it (whose directory defines it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConf {
    pub name: String,
    pub owner: Side,
    /// The owner's node name, when it is one of several peers (fan-out):
    /// an equal epoch is won by the owner.
    pub owner_node: Option<String>,
}

/// A node beyond the first peer (fan-out under Pacemaker): its name and
/// the links to it (`crossover`, then `lan` when both have one; a link's
/// index is its [`LinkId`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConf {
    pub name: String,
    pub links: Vec<String>,
}

/// Everything the arbiter needs to know of the configuration. The derived
/// durations are public so a test or the daemon can see (and tune) them;
/// [`ArbiterConfig::new`] fills them from the timers as documented.
#[derive(Debug, Clone)]
pub struct ArbiterConfig {
    pub local: String,
    /// The first (with the built-in arbiter: the only) peer; its links are
    /// [`ArbiterConfig::links`].
    pub peer: String,
    /// Further peers, each with its own links and liveness (only with
    /// `external`: the built-in arbiter's rules are two-node).
    pub more_peers: Vec<PeerConf>,
    pub groups: Vec<GroupConf>,
    /// Link names, indexed by [`LinkId`]: `crossover`, then `lan`.
    pub links: Vec<String>,
    pub timers: Timers,
    pub auto_failback: bool,
    pub preferred: Option<Side>,
    /// A lower reach score must last this long before its node steps
    /// down (damping): `deadtime`.
    pub score_hold: Duration,
    /// The owner must have been up this long before its group is handed
    /// back to it (`auto_failback`): `initdead`.
    pub failback_hold: Duration,
    /// Contact must have been stable this long (no silence of `warntime`
    /// on every link) before one level of flap damping is forgotten:
    /// 30 × `deadtime`.
    pub flap_decay: Duration,
    /// Most doublings of the effective deadtime by flap damping: 4 (16×).
    pub max_flap_level: u32,
    /// Silence onsets of one link within this window that make it
    /// "flapping" (warnings are then summarised): 3 within 25 × `deadtime`.
    pub link_flap_window: Duration,
    pub link_flap_onsets: usize,
    /// A gap between two calls longer than this means this process was
    /// stopped or starved: 3 × `keepalive` (always below the `deadtime −
    /// keepalive` a freeze needs to fake a dead peer).
    pub stall_threshold: Duration,
    /// After a stall, or an operator command, no group is acquired and no
    /// peer declared dead for this long, so fresh heartbeats arrive first:
    /// 3 × `keepalive`.
    pub settle: Duration,
    /// A failed release is tried again after this long: 5 s.
    pub release_retry: Duration,
    /// This is a diagnostic run (`hamirror links`): heartbeats say so, and a
    /// daemon treats such a peer as holding nothing.
    pub observer: bool,
    /// Hand a group back (`auto_failback`) only after the daemon reported
    /// with [`Arbiter::handle_resync`] that the owner has caught up.
    pub failback_needs_resync: bool,
    /// `failover = pacemaker`: groups start and stop here only on
    /// [`Command::Promote`] and [`Command::Demote`] (and a newer epoch on the
    /// peer still makes this node step down); no takeover, standby by
    /// reach score or failback of its own.
    pub external: bool,
}

impl ArbiterConfig {
    /// The two-node configuration: `local` owns the group named after it,
    /// `peer` the other; links `crossover` and, when `lan` is true, `lan`.
    pub fn new(local: &str, peer: &str, timers: Timers, lan: bool) -> Self {
        let mut links = vec!["crossover".to_string()];
        if lan {
            links.push("lan".to_string());
        }
        ArbiterConfig {
            local: local.to_string(),
            peer: peer.to_string(),
            more_peers: vec![],
            groups: vec![
                GroupConf {
                    name: local.to_string(),
                    owner: Side::Local,
                    owner_node: None,
                },
                GroupConf {
                    name: peer.to_string(),
                    owner: Side::Peer,
                    owner_node: None,
                },
            ],
            links,
            timers,
            auto_failback: false,
            preferred: None,
            score_hold: timers.deadtime,
            failback_hold: timers.initdead,
            flap_decay: timers.deadtime * 30,
            max_flap_level: 4,
            link_flap_window: timers.deadtime * 25,
            link_flap_onsets: 3,
            stall_threshold: timers.keepalive * 3,
            settle: timers.keepalive * 3,
            release_retry: Duration::from_secs(5),
            observer: false,
            failback_needs_resync: false,
            external: false,
        }
    }

    /// From a validated cluster, for node `local`. `None` if `local` is not
    /// one of its nodes, or the cluster has more than two and `local` does
    /// not run under Pacemaker.
    pub fn from_cluster(cluster: &Cluster, local: &str) -> Option<Self> {
        let me = cluster.node(local)?;
        let peers = cluster.peers_of(local);
        let external = me.conf.failover == crate::config::FailoverMode::Pacemaker;
        let (peer, more) = peers.split_first()?;
        if !more.is_empty() && !external {
            return None;
        }
        let lan = |p: &crate::config::Node| me.conf.lan.is_some() && p.conf.lan.is_some();
        let mut cfg = ArbiterConfig::new(local, &peer.name, me.conf.timers, lan(peer));
        cfg.groups[0].name = me.group.name.clone();
        cfg.groups[1].name = peer.group.name.clone();
        if !more.is_empty() {
            cfg.groups[1].owner_node = Some(peer.name.clone());
        }
        for p in more {
            let mut links = vec!["crossover".to_string()];
            if lan(p) {
                links.push("lan".to_string());
            }
            cfg.more_peers.push(PeerConf {
                name: p.name.clone(),
                links,
            });
            cfg.groups.push(GroupConf {
                name: p.group.name.clone(),
                owner: Side::Peer,
                owner_node: Some(p.name.clone()),
            });
        }
        cfg.auto_failback = me.conf.auto_failback;
        cfg.external = external;
        cfg.preferred = me
            .conf
            .preferred
            .as_deref()
            .map(|p| if p == local { Side::Local } else { Side::Peer });
        Some(cfg)
    }

    /// Deadtime stretched by `level` steps of flap damping.
    fn deadtime(&self, level: u32) -> Duration {
        self.timers.deadtime * (1u32 << level.min(self.max_flap_level))
    }
}

/// How this node starts.
#[derive(Debug, Clone, Default)]
pub struct Startup {
    /// A standby lock was found in `state`: stay in standby until an
    /// operator clears it.
    pub standby_lock: bool,
    /// The last epoch of each group this node persisted.
    pub epochs: BTreeMap<String, u64>,
    /// The persisted maintenance register. When on, the node starts
    /// frozen: no clean-up releases, and the groups in `kept` are taken as
    /// held (their services were left running by a daemon stopped in
    /// maintenance).
    pub maintenance: Maintenance,
    /// Groups held here when the last daemon of this boot was in
    /// maintenance, with their epochs. Ignored unless `maintenance.on`.
    pub kept: BTreeMap<String, u64>,
}

#[derive(Debug, Clone)]
struct GroupState {
    conf: GroupConf,
    phase: Phase,
    /// Highest epoch known for the group, from anyone.
    epoch: u64,
    /// Our start hooks failed; we do not try again until the situation
    /// changes (peer dead or restarted, operator).
    failed_here: bool,
    /// Acquired on an operator's request: never handed back automatically.
    manual: bool,
    /// An operator asked this node to take it over.
    requested: bool,
    /// We hold it and saw the peer hold it with an older epoch: re-announce
    /// once the peer has let go.
    conflict: bool,
    /// Pacemaker asked for it to stop here (`demote`) while it was starting.
    demote: bool,
    /// The daemon reported the owner caught up (failback gate).
    caught_up: bool,
}

/// The decision machine of one node. See the module docs for the contract.
#[derive(Debug)]
pub struct Arbiter {
    cfg: ArbiterConfig,
    mode: Mode,
    groups: Vec<GroupState>,
    /// One per other node, the first peer first.
    contacts: Vec<Contact>,
    reach: Option<Reach>,
    /// Since when our reach score has been below the peer's.
    worse_since: Option<Millis>,
    last_step: Millis,
    /// No acquisition and no death verdict before this (stall, command).
    settle_until: Millis,
    isolated_noted: bool,
    actions: VecDeque<Action>,
    advert_generation: u64,
    last_advert: NodeState,
    /// The cluster-wide maintenance register as this node knows it.
    maintenance: Maintenance,
}

impl Arbiter {
    /// A node starting at `now`. Emits a clean-up release of every group
    /// (stop hooks are idempotent) and waits for the peer or `initdead`;
    /// with a standby lock it stays in standby. In maintenance it cleans
    /// nothing up: the groups it kept are held, the others released.
    pub fn new(cfg: ArbiterConfig, now: Millis, startup: Startup) -> Self {
        let frozen = startup.maintenance.on;
        let groups = cfg
            .groups
            .iter()
            .map(|g| {
                let persisted = startup.epochs.get(&g.name).copied().unwrap_or(0);
                let kept = startup.kept.get(&g.name).copied().filter(|_| frozen);
                let epoch = persisted.max(kept.unwrap_or(0));
                GroupState {
                    conf: g.clone(),
                    phase: match kept {
                        Some(_) => Phase::Held { epoch },
                        None if frozen => Phase::Released,
                        None => Phase::Releasing {
                            epoch,
                            reason: ReleaseReason::Cleanup,
                        },
                    },
                    epoch,
                    failed_here: false,
                    manual: false,
                    requested: false,
                    conflict: false,
                    demote: false,
                    caught_up: false,
                }
            })
            .collect::<Vec<_>>();
        let contact = |name: &str, links: &[String]| Contact {
            name: name.to_string(),
            links: links.iter().map(|n| Link::new(n)).collect(),
            peer: Peer::default(),
        };
        let contacts = std::iter::once(contact(&cfg.peer, &cfg.links))
            .chain(cfg.more_peers.iter().map(|p| contact(&p.name, &p.links)))
            .collect();
        let mut a = Arbiter {
            mode: if startup.standby_lock {
                Mode::Standby {
                    reason: StandbyReason::Locked,
                }
            } else {
                Mode::Starting { since: now }
            },
            groups,
            contacts,
            reach: None,
            worse_since: None,
            last_step: now,
            settle_until: now,
            isolated_noted: false,
            actions: VecDeque::new(),
            advert_generation: 0,
            last_advert: NodeState::default(),
            maintenance: startup.maintenance,
            cfg,
        };
        if startup.standby_lock {
            a.notify(Event::StandbyEntered {
                reason: StandbyReason::Locked,
            });
        }
        for g in &a.groups {
            if let Phase::Releasing { epoch, reason } = g.phase {
                a.actions.push_back(Action::Release {
                    group: g.conf.name.clone(),
                    epoch,
                    reason,
                });
            }
        }
        a.refresh_advert();
        a
    }

    pub fn config(&self) -> &ArbiterConfig {
        &self.cfg
    }

    /// An authenticated, fresh heartbeat from the (first) peer on `link`.
    pub fn handle_heartbeat(&mut self, now: Millis, link: LinkId, incarnation: u64, state: NodeState) {
        self.handle_heartbeat_from(now, 0, link, incarnation, state);
    }

    /// An authenticated, fresh heartbeat from peer `peer` (0: the first,
    /// then [`ArbiterConfig::more_peers`] in order) on `link`.
    pub fn handle_heartbeat_from(
        &mut self,
        now: Millis,
        peer: usize,
        link: LinkId,
        incarnation: u64,
        state: NodeState,
    ) {
        let now = self.observe(now);
        if peer >= self.contacts.len() {
            return;
        }
        if !state.observer {
            self.merge_maintenance(now, peer, state.maintenance);
        }
        self.on_heartbeat(now, peer, link, incarnation, state);
        self.step(now);
    }

    /// A datagram from the peer's address on `link`, naming the peer, that
    /// failed authentication (the nodes have different heartbeat keys).
    /// While they keep coming the peer is "alive, misconfigured": its
    /// groups are not taken over and, when starting, this node waits.
    pub fn handle_bad_key(&mut self, now: Millis, link: LinkId) {
        self.handle_bad_key_from(now, 0, link);
    }

    /// [`Arbiter::handle_bad_key`] for peer `peer`.
    pub fn handle_bad_key_from(&mut self, now: Millis, peer: usize, link: LinkId) {
        let now = self.observe(now);
        self.on_bad_key(now, peer, link);
        self.step(now);
    }

    /// The index of the peer named `name` (for the `_from` inputs).
    pub fn peer_index(&self, name: &str) -> Option<usize> {
        self.contacts.iter().position(|c| c.name == name)
    }

    /// The prober's score after a round.
    pub fn handle_reach(&mut self, now: Millis, reach: Reach) {
        let now = self.observe(now);
        self.reach = Some(reach);
        self.step(now);
    }

    /// `poll_timeout` was reached (or any time: extra calls are harmless).
    pub fn handle_timeout(&mut self, now: Millis) {
        let now = self.observe(now);
        self.step(now);
    }

    /// The start hooks of `group` finished (`ok`), or failed and what they
    /// started has been stopped again.
    pub fn handle_acquired(&mut self, now: Millis, group: &str, ok: bool) {
        let now = self.observe(now);
        self.on_acquired(group, ok);
        self.step(now);
    }

    /// The stop hooks of `group` finished (`ok`), or failed after the
    /// daemon's own retries.
    pub fn handle_released(&mut self, now: Millis, group: &str, ok: bool) {
        let now = self.observe(now);
        self.on_released(now, group, ok);
        self.step(now);
    }

    /// The health monitor gave up on `group` here: release it (K hooks) and
    /// advertise it as failed, so the peer starts it. Ignored unless the
    /// group is held.
    pub fn handle_unhealthy(&mut self, now: Millis, group: &str) {
        let now = self.observe(now);
        self.on_unhealthy(group);
        self.step(now);
    }

    /// Whether moving `group` away would leave it running somewhere: a
    /// peer is alive, active, and has not failed to run it itself.
    pub fn peer_can_take(&self, group: &str) -> bool {
        self.contacts.iter().any(|c| {
            c.peer.alive_state().is_some_and(|p| {
                !p.standby && !p.starting && !p.observer && p.claim(group).is_none_or(|c| c.claim != Claim::Failed)
            })
        })
    }

    /// The mirror of `group` to the peer is (or is no longer) caught up.
    pub fn handle_resync(&mut self, now: Millis, group: &str, caught_up: bool) {
        let now = self.observe(now);
        if let Some(g) = self.groups.iter_mut().find(|g| g.conf.name == group) {
            g.caught_up = caught_up;
        }
        self.step(now);
    }

    /// An operator command; refused commands change nothing.
    pub fn handle_command(&mut self, now: Millis, cmd: Command) -> Result<(), CommandError> {
        let now = self.observe(now);
        let r = self.on_command(now, cmd);
        self.step(now);
        r
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When to call `handle_timeout` next. Always within one keepalive, so
    /// a stall of this process can be told from a quiet period.
    pub fn poll_timeout(&self) -> Millis {
        self.next_deadline()
    }

    /// What this node advertises in its heartbeats now.
    pub fn advert(&self) -> &NodeState {
        &self.last_advert
    }

    /// Raised whenever [`Arbiter::advert`] changes: send a heartbeat at once.
    pub fn advert_generation(&self) -> u64 {
        self.advert_generation
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The maintenance register as this node knows it; failover decisions
    /// are frozen while it is on.
    pub fn maintenance(&self) -> Maintenance {
        self.maintenance
    }

    /// This node's phase for `group`.
    pub fn phase(&self, group: &str) -> Option<Phase> {
        self.groups.iter().find(|g| g.conf.name == group).map(|g| g.phase)
    }

    /// Whether the (first) peer is currently considered alive.
    pub fn peer_alive(&self) -> bool {
        self.contacts[0].peer.is_alive()
    }

    /// The claim on `group` among the alive peers: a holding one first
    /// (the first peer's first among equals), else the first peer's.
    fn peer_claim(&self, group: &str) -> Option<(Claim, String)> {
        let claims = || {
            self.contacts.iter().filter_map(|c| {
                let cl = c.peer.alive_state()?.claim(group)?;
                Some((cl.claim, c.name.clone()))
            })
        };
        claims().find(|(c, _)| c.holds()).or_else(|| claims().next())
    }

    pub fn status(&self) -> Status {
        let first = &self.contacts[0].peer;
        let links = |c: &Contact| {
            c.links
                .iter()
                .map(|l| LinkStatus {
                    link: l.name.clone(),
                    last_heard: l.last_heard,
                    silent: l.silent,
                    key_mismatch_last: l.key_mismatch_last,
                })
                .collect::<Vec<_>>()
        };
        Status {
            node: self.cfg.local.clone(),
            peer: self.cfg.peer.clone(),
            mode: self.mode,
            peer_alive: first.is_alive(),
            peer_key_mismatch: first.key_mismatch_noted,
            flap_level: first.flap_level,
            deadtime_ms: self.cfg.deadtime(first.flap_level).as_millis() as u64,
            reach: self.reach,
            peer_reach: first.state.as_ref().and_then(|s| s.reach),
            links: links(&self.contacts[0]),
            groups: self
                .groups
                .iter()
                .map(|g| {
                    let claim = self.peer_claim(&g.conf.name);
                    GroupStatus {
                        group: g.conf.name.clone(),
                        owner: g.conf.owner,
                        phase: g.phase,
                        epoch: g.epoch,
                        peer_claim: claim.as_ref().map(|c| c.0),
                        claimed_by: claim.map(|c| c.1),
                        owner_node: g.conf.owner_node.clone(),
                    }
                })
                .collect(),
            maintenance: self.maintenance.on,
            maintenance_generation: self.maintenance.generation,
            peer_maintenance: first
                .alive_state()
                .map(|s| (s.maintenance.on, s.maintenance.generation)),
            peers: self
                .contacts
                .iter()
                .map(|c| ContactStatus {
                    name: c.name.clone(),
                    alive: c.peer.is_alive(),
                    incarnation: match c.peer.status {
                        PeerStatus::Alive { incarnation, .. } => Some(incarnation),
                        _ => None,
                    },
                    key_mismatch: c.peer.key_mismatch_noted,
                    flap_level: c.peer.flap_level,
                    links: links(c),
                })
                .collect(),
        }
    }

    fn notify(&mut self, e: Event) {
        self.actions.push_back(Action::Notify(e));
    }

    /// Keeps time monotonic and notices stalls of this process.
    fn observe(&mut self, now: Millis) -> Millis {
        let now = now.max(self.last_step);
        let gap = now.since(self.last_step);
        if gap > self.cfg.stall_threshold {
            self.settle_until = self.settle_until.max(now + self.cfg.settle);
            self.notify(Event::Stalled {
                gap_ms: gap.as_millis() as u64,
            });
        }
        self.last_step = now;
        now
    }

    fn refresh_advert(&mut self) {
        let groups = self
            .groups
            .iter()
            .filter_map(|g| {
                let claim = match g.phase {
                    Phase::Acquiring { .. } => Claim::Acquiring,
                    Phase::Held { .. } => Claim::Held,
                    Phase::Releasing { .. } | Phase::Stuck { .. } => Claim::Releasing,
                    Phase::Released if g.requested => Claim::Requested,
                    Phase::Released if g.failed_here => Claim::Failed,
                    Phase::Released => return None,
                };
                Some(GroupClaim {
                    group: g.conf.name.clone(),
                    epoch: g.phase.epoch().unwrap_or(g.epoch),
                    claim,
                })
            })
            .collect();
        let advert = NodeState {
            standby: matches!(self.mode, Mode::Standby { .. }),
            starting: matches!(self.mode, Mode::Starting { .. }),
            observer: self.cfg.observer,
            reach: self.reach,
            maintenance: self.maintenance,
            groups,
        };
        if advert != self.last_advert {
            self.last_advert = advert;
            self.advert_generation += 1;
        }
    }
}
