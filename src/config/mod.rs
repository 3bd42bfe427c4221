//! The cluster configuration: the classic `cluster.d` layout read into typed
//! values ([`Cluster`], [`Node`], [`Group`], [`MirrorSet`], [`Hook`]) and
//! checked as a whole. Every problem is collected with its file and line so
//! `hamirror check` can list them all. Reads files only; knows nothing of
//! scanning, the network or the daemon.
//!
//! Layout (see `docs/CONFIG.md`):
//! ```text
//! DIR/NODE.conf          key = value lines
//! DIR/NODE/F<name>       a mirror set: whitespace-separated absolute paths, `- PATTERN` excludes
//! DIR/NODE/S<NN><name>   start hooks, K<NN><name> stop hooks, N<NN><name> notify hooks
//! DIR/reachlist          one host per line (`HOST` for ICMP, `HOST tcp:PORT`)
//! ```

pub mod conf;
pub mod exclude;
mod layout;
pub mod strict;
pub mod values;
pub mod xattrs;

use std::fmt;
use std::path::{Path, PathBuf};

pub use conf::{FailoverMode, MonitorConf, NodeConf, Timers};
pub use exclude::Excludes;
pub use layout::{Hook, HookKind, MirrorSet, ReachHost, SetRoot};
pub use values::ChunkParams;
pub use xattrs::XattrNamespaces;

/// Default configuration directory.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/cluster.d";

/// One problem in the configuration, located as precisely as possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub msg: String,
}

impl ConfigError {
    pub fn at(file: &Path, line: usize, msg: String) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line: Some(line),
            msg,
        }
    }
    pub fn file(file: &Path, msg: String) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line: None,
            msg,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file.display(), l, self.msg),
            None => write!(f, "{}: {}", self.file.display(), self.msg),
        }
    }
}

impl std::error::Error for ConfigError {}

/// All problems found while loading, in file order.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A node's services: its mirror sets and hooks. Owned by the node whose
/// directory holds them; the group has the node's name.
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub owner: String,
    pub sets: Vec<MirrorSet>,
    /// `S` hooks in run order.
    pub start: Vec<Hook>,
    /// `K` hooks in run order.
    pub stop: Vec<Hook>,
    /// `N` hooks in run order: notified of every event.
    pub notify: Vec<Hook>,
    /// How the group's health is checked while it runs (its owner's keys).
    pub monitor: MonitorConf,
}

/// A cluster member as configured.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub conf_file: PathBuf,
    pub conf: NodeConf,
    pub group: Group,
}

impl Node {
    /// Where this node keeps its copy of a set path (`/var/spool/lpd`):
    /// the path under the node's `root`.
    pub fn local_path(&self, set_path: &Path) -> PathBuf {
        let rel = set_path.strip_prefix("/").unwrap_or(set_path);
        self.conf.root.join(rel)
    }
}

/// The whole validated configuration directory.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub dir: PathBuf,
    /// Sorted by name; two once validated, or more when every node says
    /// `failover = pacemaker`.
    pub nodes: Vec<Node>,
    pub reachlist: Vec<ReachHost>,
    /// Non-fatal remarks (`check` prints them).
    pub warnings: Vec<ConfigError>,
}

impl Cluster {
    /// Loads and validates `dir`. Returns every problem found.
    pub fn load(dir: &Path) -> Result<Cluster, ConfigErrors> {
        layout::load(dir).map_err(ConfigErrors)
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The node's peer in a two-node cluster; `None` when `name` is not a
    /// node, or the cluster has more than two (see [`Cluster::peers_of`]).
    pub fn peer_of(&self, name: &str) -> Option<&Node> {
        match self.peers_of(name)[..] {
            [p] => Some(p),
            _ => None,
        }
    }

    /// Every node but `name` (empty when `name` is not a node), by name.
    pub fn peers_of(&self, name: &str) -> Vec<&Node> {
        if self.node(name).is_none() {
            return vec![];
        }
        self.nodes.iter().filter(|n| n.name != name).collect()
    }

    /// The one peer a two-node command talks to, or why there is none: a
    /// cluster of more than two nodes has no single peer.
    ///
    /// # Errors
    /// `name` is not a node, or the cluster has more than two nodes.
    pub fn sole_peer(&self, name: &str) -> Result<&Node, String> {
        let peers = self.peers_of(name);
        match peers[..] {
            [p] => Ok(p),
            [] => Err(format!("{name} is not a node of {}", self.dir.display())),
            _ => Err(format!(
                "{} has {} nodes; this talks to one peer, and {name} has {} ({})",
                self.dir.display(),
                self.nodes.len(),
                peers.len(),
                peers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
            )),
        }
    }

    /// Finds a set by name (`Fsmbd`, or `smbd` for short) in any node's
    /// group, with the node that owns it.
    pub fn find_set(&self, name: &str) -> Option<(&Node, &MirrorSet)> {
        let full = if name.starts_with('F') {
            name.to_string()
        } else {
            format!("F{name}")
        };
        self.nodes.iter().find_map(|n| {
            n.group
                .sets
                .iter()
                .find(|s| s.name == full || s.name == name)
                .map(|s| (n, s))
        })
    }

    /// Looks up the node this process acts as, with a message listing the
    /// configured nodes when it is not one of them.
    pub fn local_node(&self, name: &str) -> Result<&Node, String> {
        self.node(name).ok_or_else(|| {
            let names: Vec<_> = self.nodes.iter().map(|n| n.name.as_str()).collect();
            format!(
                "this node is {name:?}, but {} configures only {}; pass --node NAME or set HAMIRROR_NODE",
                self.dir.display(),
                names.join(" and ")
            )
        })
    }
}

/// `sha256:` followed by 64 lowercase hex digits.
pub fn is_fingerprint(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// Node names are host-name-like: letters, digits, `-`, `_`, `.`.
pub fn is_node_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !s.starts_with('.')
}

/// This machine's host name (the default node name): the part before the
/// first dot, as `uname -n` shows it.
pub fn hostname() -> String {
    let full = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    full.split('.').next().unwrap_or_default().to_string()
}
