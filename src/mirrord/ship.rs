//! The daemon's [`Shipper`] for one set and one replica: a [`QuicShipper`]
//! bound to the link the cluster view chooses for that peer ([`Link`]), made anew whenever that choice
//! changes, so the mirror moves to the LAN when the crossover goes silent
//! and back when it returns (each switch is logged). Each set's shipper
//! also leaves a weak handle on the set's index for the backlog figures.
//! Must not depend on the daemon's failover side beyond [`Link`].

use std::sync::{Arc, Mutex, Weak};

use super::view::Link;
use crate::config::{MirrorSet, Node};
use crate::index::Index;
use crate::sync::QuicShipper;
use crate::watch::{ShipError, ShipOutcome, Shipper};

/// The link to use now to one peer, shared by every shipper to it.
pub type LinkChoice = Arc<Mutex<Link>>;

/// The set's index, once its shipper has been called (for the backlog).
pub type IndexSlot = Arc<Mutex<Weak<Index>>>;

/// A node the held sets are mirrored to, and the link chosen to reach it
/// (each peer's own: one may be heard on the crossover, another only on
/// the LAN).
#[derive(Clone)]
pub struct ReplicaPeer {
    pub node: Node,
    pub link: LinkChoice,
}

impl ReplicaPeer {
    pub fn new(node: &Node) -> ReplicaPeer {
        ReplicaPeer {
            node: node.clone(),
            link: Arc::new(Mutex::new(Link::Any)),
        }
    }

    /// The link chosen now.
    pub fn link(&self) -> Link {
        *self.link.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct LinkShipper {
    rt: tokio::runtime::Handle,
    local: Node,
    peer: Node,
    group: String,
    epoch: u64,
    link: LinkChoice,
    current: Option<(Link, QuicShipper)>,
    index: IndexSlot,
}

impl LinkShipper {
    /// A shipper for a set of `group`, held here at `epoch`.
    pub fn new(
        rt: tokio::runtime::Handle,
        local: &Node,
        peer: &Node,
        group: &str,
        epoch: u64,
        link: LinkChoice,
        index: IndexSlot,
    ) -> LinkShipper {
        LinkShipper {
            rt,
            local: local.clone(),
            peer: peer.clone(),
            group: group.to_string(),
            epoch,
            link,
            current: None,
            index,
        }
    }
}

/// The peer as reachable over `link` only: its configuration with the
/// other address removed (the transport tries the addresses a node's
/// configuration gives, crossover first).
pub fn peer_via(peer: &Node, link: Link) -> Node {
    let mut p = peer.clone();
    match (link, p.conf.lan) {
        (Link::Crossover, _) => p.conf.lan = None,
        (Link::Lan, Some(lan)) => {
            p.conf.address = lan;
            p.conf.lan = None;
        }
        // No LAN address configured: the crossover is all there is.
        (Link::Lan, None) | (Link::Any, _) => {}
    }
    p
}

impl Shipper for LinkShipper {
    fn ship(&mut self, set: &MirrorSet, index: &Arc<Index>, generation: u64) -> Result<ShipOutcome, ShipError> {
        *self.index.lock().unwrap_or_else(|p| p.into_inner()) = Arc::downgrade(index);
        let want = *self.link.lock().unwrap_or_else(|p| p.into_inner());
        if self.current.as_ref().is_none_or(|(l, _)| *l != want) {
            if let Some((was, _)) = &self.current {
                tracing::warn!(
                    set = %set.name, peer = %self.peer.name,
                    "mirroring over the {} link now (was {})", want.name(), was.name()
                );
            }
            let peer = peer_via(&self.peer, want);
            let shipper = QuicShipper::new(self.rt.clone(), &self.local, &peer, &self.group, self.epoch);
            self.current = Some((want, shipper));
        }
        let (_, shipper) = self.current.as_mut().expect("set above");
        match shipper.ship(set, index, generation) {
            Ok(o) => Ok(o),
            Err(e) if e.retryable => Err(e),
            Err(e) => {
                // In the daemon a refusal is not final: the peer's view of
                // holders and epochs may lag this node's by a heartbeat,
                // and the arbiter stops this shipper if this node really
                // no longer holds the group. So keep trying (with the ship
                // loop's backoff), loudly.
                tracing::error!(
                    set = %set.name, peer = %self.peer.name, group = %self.group, epoch = self.epoch,
                    "the peer refused this node's changes: {e} (retried while this node holds the group)"
                );
                // A refusal is not progress: back off as for an unreachable
                // peer rather than hammering it every 250 ms.
                Err(ShipError {
                    message: e.message,
                    retryable: true,
                    reached_peer: false,
                    refused: false,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_via_keeps_only_the_chosen_address() {
        let cfg = crate::config::Cluster::load(&std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/examples/cluster.d"
        )))
        .unwrap();
        let peer = cfg.node("serv2").unwrap();
        let (x, lan) = (peer.conf.address, peer.conf.lan.unwrap());
        let c = peer_via(peer, Link::Crossover).conf;
        assert_eq!((c.address, c.lan), (x, None));
        let c = peer_via(peer, Link::Lan).conf;
        assert_eq!((c.address, c.lan), (lan, None));
        let c = peer_via(peer, Link::Any).conf;
        assert_eq!((c.address, c.lan), (x, Some(lan)));
    }
}
