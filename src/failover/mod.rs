//! The failover I/O shell around the pure arbiter: heartbeat sockets on a
//! dedicated real-time thread ([`endpoint`]), the reachlist prober
//! ([`probe`], with its pure [`hysteresis`]), and what both use ([`rt`]:
//! real-time priority, locked memory, the monotonic clock). It turns
//! datagrams and probe answers into arbiter inputs ([`Input`], one channel
//! for all) and decides nothing. Must not depend on tokio: these threads
//! must keep their timing while an async runtime is saturated by a mirror
//! transfer.

pub mod endpoint;
pub mod hysteresis;
pub mod incarnation;
pub mod probe;
pub mod rt;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hamirror_wire::heartbeat::{HeartbeatKeys, KeyFileError};
use thiserror::Error;

use crate::arbiter::{LinkId, Millis, NodeState, Reach};
use crate::config::Cluster;
pub use endpoint::{Endpoint, EndpointConfig, LinkAddr, PeerAddrs};
pub use probe::Prober;

/// File in the node's `state` directory whose presence is the standby lock.
pub const STANDBY_LOCK: &str = "standby.lock";

/// What the endpoint and the prober report to the driver, in one channel.
#[derive(Debug, Clone)]
pub enum Input {
    /// An authenticated, fresh heartbeat of a peer.
    Heartbeat {
        at: Millis,
        /// Which peer: its index in `EndpointConfig::peers` (0, the only
        /// one, in a two-node cluster).
        peer: usize,
        link: LinkId,
        incarnation: u64,
        /// The heartbeat format version it came in (1: the previous
        /// release, which knows no maintenance).
        version: u8,
        state: NodeState,
    },
    /// A datagram refused (bad MAC, wrong sender, replay…); reported at
    /// most once a second per link and kind, with the link's running count.
    Rejected {
        at: Millis,
        link: LinkId,
        from: SocketAddr,
        /// `mac`, `format`, `sender`, `link`, `replay`, or `stale`
        /// ([`endpoint::KIND_STALE`]: harmless, logged at debug level).
        kind: &'static str,
        reason: String,
        count: u64,
    },
    /// A datagram from the peer's address on `link`, naming the peer, whose
    /// MAC fails with this node's keys: the peer is alive but signs with
    /// another key. Every one is reported (they come at the keepalive rate,
    /// like heartbeats), with the link's running count of refusals.
    BadKey {
        at: Millis,
        /// Which peer (as for `Heartbeat`).
        peer: usize,
        link: LinkId,
        from: SocketAddr,
        count: u64,
    },
    /// Sending on a link started failing (reported once until it works).
    SendFailed { at: Millis, link: LinkId, error: String },
    /// A prober round: the debounced score and each host's state.
    Reach {
        at: Millis,
        reach: Reach,
        hosts: Vec<(String, Option<bool>)>,
    },
    /// Something worth a log line (priority not granted, …).
    Note(String),
}

/// Failures of the failover shell. None is cured by retrying as is: each
/// names what to fix (a port in use, a permission, a key file).
#[derive(Debug, Error)]
pub enum FailoverError {
    #[error("heartbeat socket on {addr}: {what}: {source}")]
    Socket {
        addr: SocketAddr,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot open an ICMP{} socket (ping socket: {dgram}; raw socket: {raw}); run as root, grant CAP_NET_RAW, \
         or widen net.ipv4.ping_group_range",
        if *v6 { "v6" } else { "" }
    )]
    Icmp { v6: bool, dgram: String, raw: String },
    #[error("internal wake-up socket: {0}")]
    Wake(#[source] std::io::Error),
    #[error("cannot start a thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("no `heartbeat_key` in {0}: heartbeats must be authenticated (see docs/FAILOVER.md)")]
    NoKeyFile(PathBuf),
    #[error("cannot read heartbeat key file {path}: {source}")]
    KeyRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("heartbeat key file {path}: {source}")]
    KeyFile {
        path: PathBuf,
        #[source]
        source: KeyFileError,
    },
}

/// Reads a `heartbeat_key` file.
pub fn load_keys(path: &Path) -> Result<HeartbeatKeys, FailoverError> {
    let text = std::fs::read_to_string(path).map_err(|source| FailoverError::KeyRead {
        path: path.to_path_buf(),
        source,
    })?;
    HeartbeatKeys::parse(&text).map_err(|source| FailoverError::KeyFile {
        path: path.to_path_buf(),
        source,
    })
}

/// A remark when the key file can be read by others than its owner (the
/// daemon and `links` log it; not fatal, the keys may be on a read-only
/// image with other protection).
pub fn key_file_warning(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "heartbeat key file {} is readable by group or others (mode {:o}); run: chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        )
    })
}

/// The links between `local` and its peer, in [`crate::arbiter`] order:
/// the crossover (`address`), then the LAN (`lan`) when both nodes have one.
pub fn links(cluster: &Cluster, local: &str) -> Option<Vec<LinkAddr>> {
    links_to(cluster, local, &cluster.peer_of(local)?.name)
}

/// The links between `local` and the node `peer` (see [`links`]).
pub fn links_to(cluster: &Cluster, local: &str, peer: &str) -> Option<Vec<LinkAddr>> {
    let me = cluster.node(local)?;
    let peer = cluster.node(peer).filter(|p| p.name != local)?;
    let (a, b) = (&me.conf, &peer.conf);
    let mut v = vec![LinkAddr {
        id: LinkId(0),
        name: "crossover".into(),
        local: SocketAddr::new(a.address, a.heartbeat_port),
        peer: SocketAddr::new(b.address, b.heartbeat_port),
    }];
    if let (Some(la), Some(lb)) = (a.lan, b.lan) {
        v.push(LinkAddr {
            id: LinkId(1),
            name: "lan".into(),
            local: SocketAddr::new(la, a.heartbeat_port),
            peer: SocketAddr::new(lb, b.heartbeat_port),
        });
    }
    Some(v)
}

/// A new incarnation number: microseconds since the Unix epoch. The daemon
/// goes through [`incarnation::next_own`], which also keeps it growing when
/// the wall clock went back.
pub fn new_incarnation() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64)
}
