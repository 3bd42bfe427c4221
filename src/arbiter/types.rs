//! The arbiter's vocabulary towards the daemon: why things happen
//! (reasons), what it tells (events with their level), what it asks for
//! (actions), operator commands and their refusals, the node's mode, a
//! group's phase, and the status snapshot. Plain data; the logic is in
//! `rules.rs` and `liveness.rs`.

use hamirror_wire::heartbeat::{Claim, Reach};
use thiserror::Error;

use super::{Millis, Side};

/// Why a group is started here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AcquireReason {
    /// This node owns it and the peer does not hold it.
    Owner,
    /// The peer was declared dead.
    PeerDead,
    /// No peer was heard since start-up (initdead passed).
    PeerAbsent,
    /// The peer is in standby and has released it.
    PeerStandby,
    /// The peer's start hooks failed for it.
    PeerFailed,
    /// An operator asked for it (`takeover GROUP`), or Pacemaker did
    /// (`promote GROUP`).
    Operator,
}

/// Why a group is stopped here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    /// Start-up: stop whatever a previous run may have left running.
    Cleanup,
    /// This node goes (or is) in standby.
    Standby,
    /// The peer holds it with a newer epoch: this node was frozen or cut
    /// off and is the stale holder.
    StaleEpoch,
    /// An operator on the peer asked for it.
    PeerRequest,
    /// `auto_failback`: its owner is back.
    Failback,
    /// The health monitor gave up on it here (restarts used up): the peer
    /// may start it; this node does not take it back until the situation
    /// changes, as after a failed start.
    Unhealthy,
    /// Pacemaker demoted it here (`demote GROUP`).
    Demoted,
}

/// Why this node is in standby.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StandbyReason {
    /// `hamirror standby`.
    Operator,
    /// No reachlist host answers and the peer is silent: this node is cut off.
    Isolated,
    /// It reaches fewer reachlist hosts than the peer.
    ReachWorse,
    /// It started with a standby lock.
    Locked,
}

/// What the arbiter tells the world. Severity in [`Event::level`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    LinkSilent {
        link: String,
        silent_ms: u64,
        /// The peer's last word was standby holding nothing: what a planned
        /// stop (`systemctl stop`, a reboot) looks like. Reported as info.
        planned: bool,
        /// The peer it concerns when there is more than one (fan-out under
        /// Pacemaker); absent in a two-node cluster.
        #[serde(skip_serializing_if = "Option::is_none")]
        peer: Option<String>,
    },
    LinkUp {
        link: String,
        /// The peer it concerns when there is more than one (fan-out under
        /// Pacemaker); absent in a two-node cluster.
        #[serde(skip_serializing_if = "Option::is_none")]
        peer: Option<String>,
    },
    LinkFlapping {
        link: String,
        /// The peer it concerns when there is more than one (fan-out under
        /// Pacemaker); absent in a two-node cluster.
        #[serde(skip_serializing_if = "Option::is_none")]
        peer: Option<String>,
    },
    LinkStable {
        link: String,
        up: bool,
        /// The peer it concerns when there is more than one (fan-out under
        /// Pacemaker); absent in a two-node cluster.
        #[serde(skip_serializing_if = "Option::is_none")]
        peer: Option<String>,
    },
    PeerAlive {
        incarnation: u64,
        /// The peer it concerns when there is more than one (fan-out under
        /// Pacemaker); absent in a two-node cluster.
        #[serde(skip_serializing_if = "Option::is_none")]
        peer: Option<String>,
    },
    PeerRestarted {
        incarnation: u64,
        /// The peer it concerns when there is more than one (fan-out under
        /// Pacemaker); absent in a two-node cluster.
        #[serde(skip_serializing_if = "Option::is_none")]
        peer: Option<String>,
    },
    /// The peer was declared dead but it comes back without a restart:
    /// the silence was a fault of the links or a freeze. Flap damping
    /// stretches the deadtime to `deadtime_ms`.
    PeerReturned {
        silent_ms: u64,
        flap_level: u32,
        deadtime_ms: u64,
        /// The peer it concerns when there is more than one (fan-out under
        /// Pacemaker); absent in a two-node cluster.
        #[serde(skip_serializing_if = "Option::is_none")]
        peer: Option<String>,
    },
    PeerDead {
        silent_ms: u64,
        deadtime_ms: u64,
        /// As for [`Event::LinkSilent`]: the peer had handed everything
        /// over first, so its silence costs nothing. Reported as info.
        planned: bool,
        /// The peer it concerns when there is more than one (fan-out under
        /// Pacemaker); absent in a two-node cluster.
        #[serde(skip_serializing_if = "Option::is_none")]
        peer: Option<String>,
    },
    FlapDampingEased {
        flap_level: u32,
        deadtime_ms: u64,
        /// The peer it concerns when there is more than one (fan-out under
        /// Pacemaker); absent in a two-node cluster.
        #[serde(skip_serializing_if = "Option::is_none")]
        peer: Option<String>,
    },
    Started {
        contact: bool,
    },
    /// initdead has passed without a peer and without any reachlist host.
    IsolatedAtStart,
    StandbyEntered {
        reason: StandbyReason,
    },
    StandbyCleared,
    Acquired {
        group: String,
        epoch: u64,
    },
    AcquireFailed {
        group: String,
        epoch: u64,
    },
    Released {
        group: String,
        epoch: u64,
        reason: ReleaseReason,
    },
    ReleaseFailed {
        group: String,
        epoch: u64,
    },
    /// The health monitor gave up on the group here: it is released so the
    /// peer starts it.
    Unhealthy {
        group: String,
        epoch: u64,
    },
    /// Both hold the group; the peer's claim is newer, this node steps down.
    SteppingDown {
        group: String,
        epoch: u64,
        peer_epoch: u64,
    },
    /// Both hold the group; this node's claim is newer, the peer must step down.
    Conflict {
        group: String,
        epoch: u64,
        peer_epoch: u64,
    },
    /// This process did not run for `gap_ms` (SIGSTOP, starvation).
    Stalled {
        gap_ms: u64,
    },
    /// The peer's datagrams keep arriving but fail authentication: the two
    /// nodes have different heartbeat keys. The peer is alive: nothing is
    /// taken over until it is fixed (or it falls silent for deadtime).
    PeerKeyMismatch {
        link: String,
        /// The peer it concerns when there is more than one (fan-out under
        /// Pacemaker); absent in a two-node cluster.
        #[serde(skip_serializing_if = "Option::is_none")]
        peer: Option<String>,
    },
    /// No datagram failing authentication for deadtime.
    PeerKeyMismatchEnded {
        #[serde(skip_serializing_if = "Option::is_none")]
        peer: Option<String>,
    },
    /// The peer's heartbeats name a group this configuration lacks.
    UnknownGroup {
        group: String,
    },
    /// Maintenance mode began (on node `by`, `hamirror maintenance on`):
    /// failover decisions are frozen on both nodes.
    MaintenanceOn {
        generation: u64,
        by: String,
    },
    /// Maintenance mode ended: decisions resume.
    MaintenanceOff {
        generation: u64,
        by: String,
    },
}

/// How loudly to report an [`Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Info,
    Warning,
    Critical,
}

impl Event {
    pub fn level(&self) -> Level {
        use Event::*;
        match self {
            LinkSilent { planned: true, .. } | PeerDead { planned: true, .. } => Level::Info,
            LinkUp { .. }
            | LinkStable { .. }
            | PeerAlive { .. }
            | Started { .. }
            | StandbyCleared
            | Acquired { .. }
            | Released { .. }
            | FlapDampingEased { .. }
            | MaintenanceOff { .. }
            | PeerKeyMismatchEnded { .. } => Level::Info,
            LinkSilent { .. }
            | LinkFlapping { .. }
            | PeerRestarted { .. }
            | PeerReturned { .. }
            | Stalled { .. }
            | UnknownGroup { .. }
            | MaintenanceOn { .. }
            | Conflict { .. }
            | SteppingDown { .. } => Level::Warning,
            PeerDead { .. }
            | PeerKeyMismatch { .. }
            | IsolatedAtStart
            | StandbyEntered { .. }
            | AcquireFailed { .. }
            | ReleaseFailed { .. }
            | Unhealthy { .. } => Level::Critical,
        }
    }

    /// The snake_case name used in JSON and by notification hooks.
    pub fn name(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get("event").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_default()
    }
}

/// What the daemon must do. Carry them out in the order given.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Persist `epoch` for the group, then run its S hooks with it; report
    /// with [`Arbiter::handle_acquired`](super::Arbiter::handle_acquired). On failure, stop what was started
    /// before reporting.
    Acquire {
        group: String,
        epoch: u64,
        reason: AcquireReason,
    },
    /// Run the group's K hooks; report with [`Arbiter::handle_released`](super::Arbiter::handle_released).
    Release {
        group: String,
        epoch: u64,
        reason: ReleaseReason,
    },
    /// Announce the group's service addresses again (gratuitous ARP /
    /// unsolicited neighbour advertisement): a stale holder may have
    /// answered for them.
    Reannounce { group: String, epoch: u64 },
    /// Write the standby lock in `state` (durably) before anything else.
    WriteStandbyLock { reason: StandbyReason },
    /// Remove the standby lock.
    ClearStandbyLock,
    /// Persist the maintenance register (durably), so a restarted daemon
    /// stays frozen and keeps what it holds.
    WriteMaintenance { on: bool, generation: u64 },
    /// Log it and run the notification hooks.
    Notify(Event),
}

/// An operator command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Standby,
    ClearStandby,
    Takeover(String),
    /// `hamirror maintenance on|off`: freeze or resume failover decisions,
    /// on both nodes.
    Maintenance(bool),
    /// The daemon is stopping: release everything, as `Standby` does (the
    /// daemon writes no lock for it). Never refused: a stop of the daemon
    /// under Pacemaker hands over too (maintenance mode keeps the
    /// services instead, in the daemon, before it gets here).
    Shutdown,
    /// `failover = pacemaker`: run the group here (as `Takeover`, but
    /// already holding it is fine).
    Promote(String),
    /// `failover = pacemaker`: stop the group here; not holding it is fine.
    Demote(String),
}

/// Why an operator command was refused. Retrying the same command in the
/// same state gives the same answer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CommandError {
    #[error("no group named {0:?} in this cluster")]
    UnknownGroup(String),
    #[error("this node is in standby; clear it first (`hamirror standby --clear`)")]
    InStandby,
    #[error("this node is not in standby")]
    NotInStandby,
    #[error("this node is still starting (initdead); try again when it has joined")]
    Starting,
    #[error("this node already holds (or is starting) group {0}")]
    AlreadyHeld(String),
    #[error("group {0} is still stopping here; try again when it has stopped")]
    StillReleasing(String),
    #[error(
        "the cluster is in maintenance mode: failover decisions are frozen; end it first (`hamirror maintenance off`)"
    )]
    InMaintenance,
    #[error(
        "`promote` and `demote` are Pacemaker's (failover = pacemaker); this cluster uses `takeover` and `standby`"
    )]
    NotExternal,
    #[error("with failover = pacemaker, Pacemaker moves groups: use `crm resource move` (or promote/demote)")]
    External,
}

/// The node's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Mode {
    /// Clean-up and initdead: holds nothing, takes nothing.
    Starting {
        since: Millis,
    },
    Active {
        since: Millis,
    },
    Standby {
        reason: StandbyReason,
    },
}

/// Where one group stands on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    Released,
    Acquiring {
        epoch: u64,
    },
    Held {
        epoch: u64,
    },
    Releasing {
        epoch: u64,
        reason: ReleaseReason,
    },
    /// The release failed; it is tried again at `retry_at`. Still claimed.
    Stuck {
        epoch: u64,
        reason: ReleaseReason,
        retry_at: Millis,
    },
}

impl Phase {
    /// Whether the group may be running here (the never-both-hold unit).
    pub fn holds(self) -> bool {
        !matches!(self, Phase::Released)
    }
    pub(super) fn epoch(self) -> Option<u64> {
        match self {
            Phase::Released => None,
            Phase::Acquiring { epoch }
            | Phase::Held { epoch }
            | Phase::Releasing { epoch, .. }
            | Phase::Stuck { epoch, .. } => Some(epoch),
        }
    }
}

/// A snapshot for `status` and diagnostics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub node: String,
    pub peer: String,
    pub mode: Mode,
    pub peer_alive: bool,
    /// Datagrams of the peer keep failing authentication (different keys).
    pub peer_key_mismatch: bool,
    pub flap_level: u32,
    pub deadtime_ms: u64,
    #[serde(serialize_with = "ser_reach")]
    pub reach: Option<Reach>,
    #[serde(serialize_with = "ser_reach")]
    pub peer_reach: Option<Reach>,
    pub links: Vec<LinkStatus>,
    pub groups: Vec<GroupStatus>,
    /// The maintenance register here (failover frozen when on).
    pub maintenance: bool,
    pub maintenance_generation: u64,
    /// The peer's register as its last heartbeat said, while it is alive.
    pub peer_maintenance: Option<(bool, u64)>,
    /// Every other node (the fields above are the first one's): one in a
    /// two-node cluster, one per node under Pacemaker.
    pub peers: Vec<ContactStatus>,
}

/// One other node's liveness and links.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ContactStatus {
    pub name: String,
    pub alive: bool,
    /// Its current incarnation while alive.
    pub incarnation: Option<u64>,
    pub key_mismatch: bool,
    pub flap_level: u32,
    pub links: Vec<LinkStatus>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LinkStatus {
    pub link: String,
    pub last_heard: Option<Millis>,
    pub silent: bool,
    /// When a datagram of the peer failing authentication last came on it.
    pub key_mismatch_last: Option<Millis>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupStatus {
    pub group: String,
    pub owner: Side,
    pub phase: Phase,
    pub epoch: u64,
    #[serde(serialize_with = "ser_claim")]
    pub peer_claim: Option<Claim>,
    /// The alive peer whose claim `peer_claim` is (the one holding it
    /// first, when several peers claim it).
    #[serde(skip)]
    pub claimed_by: Option<String>,
    /// The owner's node name when it is one of several peers.
    #[serde(skip)]
    pub owner_node: Option<String>,
}

/// `{"up": 2, "total": 3}` or null (the wire crate has no serde).
pub fn ser_reach<S: serde::Serializer>(r: &Option<Reach>, s: S) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    r.map(|r| serde_json::json!({"up": r.up, "total": r.total}))
        .serialize(s)
}

/// A claim as its snake_case name, or null.
pub fn ser_claim<S: serde::Serializer>(c: &Option<Claim>, s: S) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    c.map(claim_name).serialize(s)
}

/// The snake_case name of a claim.
pub fn claim_name(c: Claim) -> &'static str {
    match c {
        Claim::Acquiring => "acquiring",
        Claim::Held => "held",
        Claim::Releasing => "releasing",
        Claim::Requested => "requested",
        Claim::Failed => "failed",
    }
}
