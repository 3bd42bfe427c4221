//! The seam between the failover daemon and mirroring. The daemon owns an
//! `Option<Box<dyn MirrorControl>>` and tells it what the failover side
//! decided: which groups this node now holds (start/stop watching their
//! sets), when the peer needs to be brought up to date (resync), and every
//! change of holders, epochs and links ([`ClusterView`], which is what the
//! receiver checks a sync against and what chooses the link to mirror
//! over). The mirror side answers through a [`MirrorReporter`]: whether the
//! peer's copy of a group has caught up (the `auto_failback` gate).
//!
//! Every method is called on the daemon's real-time driver thread and must
//! return at once: hand the work to the mirror's own threads or runtime.
//! This file defines the contract only; it must not depend on the scan,
//! transfer or apply code (the implementation lives with them).

use std::sync::mpsc::Sender;

use super::Msg;

/// What the failover side knows, for the mirror side. Sent whole on every
/// change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClusterView {
    pub local: String,
    /// Every other node, by name: one in a two-node cluster (see
    /// [`ClusterView::peer`]), more under Pacemaker (fan-out).
    pub peers: Vec<PeerView>,
    pub groups: Vec<GroupView>,
}

/// One other node as the heartbeats show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PeerView {
    pub name: String,
    pub alive: bool,
    /// Links to this peer, crossover first: whether it is heard on each.
    /// Mirror over the first one that is up (the LAN when the crossover is
    /// down).
    pub links: Vec<LinkView>,
}

impl ClusterView {
    /// The one peer of a two-node cluster (the first peer otherwise).
    pub fn peer(&self) -> Option<&PeerView> {
        self.peers.first()
    }

    /// A peer by name.
    pub fn peer_named(&self, name: &str) -> Option<&PeerView> {
        self.peers.iter().find(|p| p.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LinkView {
    pub name: String,
    pub up: bool,
}

/// One group: who holds it and with which epoch. The receiver accepts a
/// sync of the group's sets only from `holder` with an epoch not older
/// than `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupView {
    pub group: String,
    pub owner: String,
    /// The node that holds (or is starting or stopping) it; `None` when
    /// nobody does.
    pub holder: Option<String>,
    pub epoch: u64,
    /// This node's phase: `released`, `acquiring`, `held`, `releasing` or
    /// `stuck` (a start-up clean-up also shows as `releasing`).
    pub here: String,
    /// This node's set names of the group (`Fsmbd`, …).
    pub sets: Vec<String>,
}

/// One set's mirroring backlog, for `hamirror status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SetBacklog {
    pub set: String,
    pub group: String,
    /// Files changed here and not yet confirmed by the peer.
    pub pending_files: Option<u64>,
    pub pending_bytes: Option<u64>,
    /// Age of the oldest unconfirmed change, in ms (0: in step).
    pub lag_ms: Option<u64>,
    /// How shipping stands (`ok`, `starting`, `retrying: why`…); `None`
    /// when the set is not mirrored from this node.
    #[serde(default)]
    pub shipping: Option<String>,
    /// The link it is mirrored over (`crossover`, `lan`, `any`).
    #[serde(default)]
    pub link: Option<String>,
    /// When the peer last confirmed it held everything shipped (Unix ms).
    #[serde(default)]
    pub last_ack_unix_ms: Option<u64>,
    /// Conflict copies made for this set since the daemon started.
    #[serde(default)]
    pub conflict_copies: u64,
    /// This node's generation of the set (what the replicas catch up to).
    #[serde(default)]
    pub generation: Option<u64>,
    /// Each replica on its own (one in a two-node cluster); the figures
    /// above are the furthest behind of them.
    #[serde(default)]
    pub replicas: Vec<ReplicaBacklog>,
}

/// One replica's part of a [`SetBacklog`]: what that peer has not
/// acknowledged, and when it last did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplicaBacklog {
    pub peer: String,
    pub pending_files: Option<u64>,
    pub pending_bytes: Option<u64>,
    pub lag_ms: Option<u64>,
    pub shipping: Option<String>,
    pub link: Option<String>,
    /// The generation of this node's index the peer acknowledged last
    /// (since the set's watch started here).
    pub acked_generation: Option<u64>,
    pub last_ack_unix_ms: Option<u64>,
}

/// The mirror side as the daemon drives it. Implemented by the mirroring
/// code (receiver + watchers); the daemon runs without one (failover only).
pub trait MirrorControl: Send {
    /// This node now holds `group` (its start hooks succeeded) with `epoch`:
    /// watch its sets and mirror every change to the peer. Start with a
    /// full quick check: the service may have written during its start.
    fn start_watching(&mut self, group: &str, epoch: u64);
    /// This node's stop hooks for `group` finished: send what is still
    /// pending, stop watching it, then report [`MirrorReporter::stopped`]
    /// (always, also when the last push failed; within a bounded time).
    /// Until that report the daemon keeps the group `releasing`, so the
    /// peer cannot take it over before these last changes reached it.
    fn stop_watching(&mut self, group: &str);
    /// The peer came (back) up: bring its copy of `group`, held here, up
    /// to date. Report progress with [`MirrorReporter::caught_up`].
    fn resync(&mut self, group: &str);
    /// One replica of `group`, held here, came (back) up while others
    /// stayed: push to it alone, the others untouched. The default is a
    /// [`MirrorControl::resync`] of the whole group (the two-node case).
    fn resync_replica(&mut self, group: &str, peer: &str) {
        let _ = peer;
        self.resync(group);
    }
    /// Holders, epochs, links or the peer's liveness changed.
    fn view_changed(&mut self, view: &ClusterView);
    /// Per set backlog and lag, for `hamirror status` (cheap: cached).
    fn backlog(&self) -> Vec<SetBacklog>;
}

/// The mirror side's way back into the daemon (cloneable, any thread).
#[derive(Debug, Clone)]
pub struct MirrorReporter {
    pub(super) tx: Sender<Msg>,
}

/// What the mirror side reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorReport {
    /// The peer's copy of `group` is (or is no longer) up to date.
    CaughtUp { group: String, caught_up: bool },
    /// The last changes of released `group` were sent (or given up on):
    /// the daemon may now tell the peer the group is free.
    Stopped { group: String },
    /// This node held changes to `set` the holder lacked (a split brain, or
    /// writes not yet mirrored when it failed): they were kept as conflict
    /// copies `NAME.hamirror-conflict-NODE-TIME` on both nodes.
    Conflicts {
        group: String,
        set: String,
        copies: Vec<String>,
    },
}

impl MirrorReporter {
    /// The peer's copy of `group` is (or is no longer) caught up. With a
    /// mirror plugged in, `auto_failback` waits for `true`.
    pub fn caught_up(&self, group: &str, caught_up: bool) {
        let _ = self.tx.send(Msg::Mirror(MirrorReport::CaughtUp {
            group: group.to_string(),
            caught_up,
        }));
    }

    /// Conflict copies were made for `set` (logged, shown in `status`, and
    /// told to the notification hooks).
    pub fn conflicts(&self, group: &str, set: &str, copies: Vec<String>) {
        let _ = self.tx.send(Msg::Mirror(MirrorReport::Conflicts {
            group: group.to_string(),
            set: set.to_string(),
            copies,
        }));
    }

    /// The last changes of `group` after its release are sent (or could not
    /// be); answers [`MirrorControl::stop_watching`].
    pub fn stopped(&self, group: &str) {
        let _ = self.tx.send(Msg::Mirror(MirrorReport::Stopped {
            group: group.to_string(),
        }));
    }
}
