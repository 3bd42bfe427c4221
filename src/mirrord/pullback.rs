//! The daemon's own resync of a returning node: when this node's receiver
//! refuses the holder's push because it holds changes the holder lacks
//! (`Diverged`: a split brain, or writes not yet mirrored when this node
//! failed), it pulls the set back from the holder by itself — its own
//! changes are kept as conflict copies on both nodes, the holder's
//! versions go in place — exactly what `hamirror resync --from PEER` does
//! for an operator. Also the start-up quick check that puts writes made
//! while no daemon ran into the index, so that refusal can see them.
//!
//! Runs on threads of its own (a pull can take long); one pull per set at a
//! time. Must not depend on the failover side beyond the reporter.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::ship::{ReplicaPeer, peer_via};
use crate::config::{Cluster, Node};
use crate::daemon::MirrorReporter;
use crate::index::Index;
use crate::scan::{Quiet, ScanOptions, Scanner};
use crate::sync::{Holders, PullOptions, Router, pull};
use crate::transport::Endpoint;

/// What a pull-back needs; cheap to clone into its thread.
#[derive(Clone)]
pub struct PullBack {
    pub cluster: Arc<Cluster>,
    pub me: Node,
    /// Every other node: the pull goes to whichever holds the group.
    pub peers: Vec<ReplicaPeer>,
    pub rt: tokio::runtime::Handle,
    pub holders: Arc<dyn Holders>,
    pub reporter: MirrorReporter,
    /// Sets being pulled now.
    pub running: Arc<Mutex<HashSet<String>>>,
}

/// A quick check (one stat per file) of every set this node keeps a copy
/// of, so changes made while no watcher ran are in the index before the
/// receiver decides whether a push would overwrite them. Errors are
/// logged: a set that cannot be scanned is only less protected.
pub fn scan_all(cluster: &Cluster, me: &Node) {
    let Ok(scanner) = Scanner::new(&ScanOptions::default()) else {
        return;
    };
    for set in cluster.nodes.iter().flat_map(|n| n.group.sets.iter()) {
        let r = Index::shared_set(&me.conf.state, &set.name)
            .map_err(|e| e.to_string())
            .and_then(|index| {
                scanner
                    .scan_set(&index, set, &me.conf.root, &Quiet)
                    .map_err(|e| e.to_string())
            });
        match r {
            Ok(s) => tracing::debug!(set = %set.name, files = s.report.files, "start-up quick check"),
            Err(e) => tracing::warn!(set = %set.name, "start-up quick check failed: {e}"),
        }
    }
}

impl PullBack {
    /// Starts pulling `set` of `group` back from the holder unless a pull
    /// of it is already running. Returns at once.
    pub fn start(&self, set: &str, group: &str) {
        if !self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(set.to_string())
        {
            return;
        }
        let (this, name, group) = (self.clone(), set.to_string(), group.to_string());
        let spawned = std::thread::Builder::new()
            .name(format!("hamirror-pullback-{set}"))
            .spawn(move || {
                match this.pull(&name, &group) {
                    Ok(()) => {}
                    // The holder retries its push, which brings us back here.
                    Err(e) => {
                        tracing::warn!(set = %name, "pulling back from the holder failed: {e}")
                    }
                }
                this.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start a pull-back thread: {e}");
            self.running.lock().unwrap_or_else(|p| p.into_inner()).remove(set);
        }
    }

    fn pull(&self, set_name: &str, group: &str) -> Result<(), String> {
        let Some((_, set)) = self.cluster.find_set(set_name) else {
            return Err(format!("no set {set_name}"));
        };
        let Some((holder, epoch)) = self.holders.holder(group) else {
            return Err(format!("no holder known for group {group}"));
        };
        let Some(from) = self.peers.iter().find(|p| p.node.name == holder) else {
            return Err(format!(
                "{holder} holds group {group}, and it is not a peer of {}",
                self.me.name
            ));
        };
        tracing::warn!(
            set = %set.name, peer = %holder,
            "this node holds changes to {} that {holder} lacks: pulling {holder}'s copy back, keeping ours as conflict copies",
            set.name
        );
        let index = super::control::open_index(&self.me, set_name, Duration::from_secs(5))?;
        let scanner = Scanner::new(&ScanOptions::default()).map_err(|e| e.to_string())?;
        scanner
            .scan_set(&index, set, &self.me.conf.root, &Quiet)
            .map_err(|e| e.to_string())?;
        let peer = peer_via(&from.node, from.link());
        let (me, set2, group2) = (self.me.clone(), set.clone(), group.to_string());
        let report = self.rt.block_on(async move {
            let endpoint = Endpoint::client(&me, &peer).map_err(|e| e.to_string())?;
            let r = async {
                let conn = endpoint.connect().await.map_err(|e| e.to_string())?;
                let router = Router::spawn(&conn);
                let opts = PullOptions {
                    session: 1,
                    ..PullOptions::default()
                };
                pull(&conn, &router, &me, &peer.name, &set2, &group2, epoch, index, &opts)
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            endpoint.shutdown("pull-back done").await;
            r
        })?;
        tracing::info!(
            set = %set.name, peer = %holder, outcome = report.outcome, conflicts = report.conflicts.len(),
            delivered = report.conflicts_delivered, complete = report.complete(),
            "pulled back from the holder"
        );
        if !report.conflicts.is_empty() {
            self.reporter.conflicts(group, &set.name, report.conflicts.clone());
        }
        Ok(())
    }
}
