//! Mirroring inside `hamirror run`: the [`MirrorControl`] the daemon
//! drives. One [`Mirrord`] per daemon owns
//!
//! * a tokio runtime of its own (two worker threads, normal priority), so a
//!   busy transfer never delays the failover side's real-time threads;
//! * the receiver: a [`Server`] accepting every other node (each by its
//!   own pinned key), whose lock ([`ViewHolders`]) follows the daemon's
//!   [`ClusterView`] — a push is accepted only from the group's current
//!   holder at an epoch not older than the one this node knows;
//! * a control thread that owns the watch [`Engine`]: it starts the sets of
//!   each group this node holds, each shipping to every other node (its
//!   replicas) through a [`LinkShipper`] of its own with the group's
//!   epoch — one thread and one acknowledged generation per replica, so a
//!   slow or stopped replica delays only itself — stops them and sends the
//!   last changes when the group is released, re-runs a full quick check
//!   and push of every set when a peer returns (resync) and reports
//!   `caught_up`, and refreshes the per-replica backlog figures `hamirror
//!   status` shows.
//!
//! Every [`MirrorControl`] method only updates a lock-protected value or
//! sends a message, so it returns at once on the driver's real-time thread.
//! The control loop is in `control.rs`, the backlog figures in
//! `backlog.rs`. Must not depend on the failover side beyond the seam in
//! `daemon::mirror`.

mod backlog;
mod control;
mod pullback;
pub mod ship;
pub mod view;

use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use thiserror::Error;

pub use view::{Link, ViewHolders};

use crate::config::{Cluster, Node};
use crate::daemon::{ClusterView, MirrorControl, MirrorReporter, SetBacklog};
use crate::sync::Server;
use crate::transport::{Endpoint, TransportError};
use crate::watch::Engine;
pub use ship::LinkShipper;

/// How long releasing a group waits for its last changes to reach the peer.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why mirroring could not start. None is cured by retrying as is.
#[derive(Debug, Error)]
pub enum MirrorError {
    #[error("node {0} is not one of the two nodes of the configuration")]
    UnknownNode(String),
    #[error("cannot start the mirror's runtime or thread: {0}")]
    Os(#[from] std::io::Error),
    #[error("cannot start the mirror receiver: {0}")]
    Receiver(#[from] TransportError),
}

/// What the daemon asks of the control thread.
#[derive(Debug)]
enum Cmd {
    Start {
        group: String,
        epoch: u64,
    },
    Stop {
        group: String,
    },
    Resync {
        group: String,
    },
    ResyncReplica {
        group: String,
        peer: String,
    },
    LinkChanged {
        peer: String,
        from: Link,
        to: Link,
    },
    /// The peer caught up with a set by itself (see `sync::CaughtUpHook`).
    PeerCaughtUp {
        set: String,
    },
    Shutdown,
}

/// The daemon's mirror: receiver, watchers, shippers.
pub struct Mirrord {
    tx: Sender<Cmd>,
    holders: Arc<ViewHolders>,
    /// Every other node: each gets a copy of the held sets.
    peers: Vec<ship::ReplicaPeer>,
    backlog: Arc<Mutex<Vec<SetBacklog>>>,
    endpoint: Arc<Endpoint>,
    thread: Option<JoinHandle<()>>,
    done: mpsc::Receiver<()>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Mirrord {
    /// Starts the receiver (listening on this node's crossover and LAN
    /// addresses) and the control thread. Call after `Daemon::new` (which
    /// blocks the signals the new threads inherit).
    ///
    /// # Errors
    /// The node is not configured, its key cannot be loaded, its port is in
    /// use, or no thread can be started.
    pub fn start(cluster: Arc<Cluster>, local: &str, reporter: MirrorReporter) -> Result<Mirrord, MirrorError> {
        let me = cluster
            .node(local)
            .ok_or_else(|| MirrorError::UnknownNode(local.to_string()))?
            .clone();
        let peers: Vec<ship::ReplicaPeer> = cluster
            .peers_of(local)
            .into_iter()
            .map(ship::ReplicaPeer::new)
            .collect();
        if peers.is_empty() {
            return Err(MirrorError::UnknownNode(local.to_string()));
        }
        let names: Vec<&str> = peers.iter().map(|p| p.node.name.as_str()).collect();
        let names = names.join(", ");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("hamirror-mirror")
            .build()?;
        // Every other node may hold a group and push its sets here, each
        // proving its own pinned key.
        let endpoint = {
            let nodes: Vec<&Node> = peers.iter().map(|p| &p.node).collect();
            Arc::new(rt.block_on(async { Endpoint::server_for(&me, &nodes) })?)
        };
        let addrs: Vec<String> = endpoint.local_addrs().iter().map(ToString::to_string).collect();
        tracing::info!(node = %me.name, peer = %names, "mirror receiver on {}", addrs.join(", "));
        let holders = ViewHolders::new();
        // Writes made while no daemon ran go into the index before the
        // receiver judges whether a push would overwrite them.
        pullback::scan_all(&cluster, &me);
        let back = pullback::PullBack {
            cluster: cluster.clone(),
            me: me.clone(),
            peers: peers.clone(),
            rt: rt.handle().clone(),
            holders: holders.clone(),
            reporter: reporter.clone(),
            running: Arc::default(),
        };
        let (tx, rx) = mpsc::channel();
        let diverged: crate::sync::DivergedHook = Box::new(move |set, group| back.start(set, group));
        let caught_up: crate::sync::CaughtUpHook = {
            let tx = tx.clone();
            Box::new(move |set| {
                let _ = tx.send(Cmd::PeerCaughtUp { set: set.to_string() });
            })
        };
        let server = Server::with_hooks(cluster.clone(), local, holders.clone(), Some(diverged), Some(caught_up));
        let ep = endpoint.clone();
        rt.spawn(async move { server.run(&ep).await });

        let backlog = Arc::new(Mutex::new(Vec::new()));
        let (done_tx, done) = mpsc::channel();
        let ctl = control::Control::new(control::Parts {
            cluster,
            me,
            peers: peers.clone(),
            rt: rt.handle().clone(),
            backlog_out: backlog.clone(),
            reporter,
        });
        let thread = std::thread::Builder::new()
            .name("hamirror-mirrord".into())
            .spawn(move || {
                ctl.run(rx);
                let _ = done_tx.send(());
            })?;
        Ok(Mirrord {
            tx,
            holders,
            peers,
            backlog,
            endpoint,
            thread: Some(thread),
            done,
            rt: Some(rt),
        })
    }

    /// A fresh engine for the control thread.
    fn engine(me: &crate::config::Node, notices: Sender<crate::watch::Notice>) -> Engine {
        Engine::new(
            &me.conf.root,
            &me.conf.state,
            crate::watch::WatchOptions::for_node(&me.conf),
        )
        .with_notices(notices)
    }
}

impl MirrorControl for Mirrord {
    fn start_watching(&mut self, group: &str, epoch: u64) {
        let _ = self.tx.send(Cmd::Start {
            group: group.to_string(),
            epoch,
        });
    }

    fn stop_watching(&mut self, group: &str) {
        let _ = self.tx.send(Cmd::Stop {
            group: group.to_string(),
        });
    }

    fn resync(&mut self, group: &str) {
        let _ = self.tx.send(Cmd::Resync {
            group: group.to_string(),
        });
    }

    fn resync_replica(&mut self, group: &str, peer: &str) {
        let _ = self.tx.send(Cmd::ResyncReplica {
            group: group.to_string(),
            peer: peer.to_string(),
        });
    }

    fn view_changed(&mut self, view: &ClusterView) {
        self.holders.update(view);
        for p in &self.peers {
            let Some(seen) = view.peer_named(&p.node.name) else {
                continue;
            };
            let to = Link::choose(seen);
            let mut cur = p.link.lock().unwrap_or_else(|p| p.into_inner());
            // No link heard (the peer is away): keep the last choice, the
            // transport's fallback order applies only when nothing was known.
            if to != *cur && (to != Link::Any || seen.alive) {
                let from = std::mem::replace(&mut *cur, to);
                drop(cur);
                let _ = self.tx.send(Cmd::LinkChanged {
                    peer: p.node.name.clone(),
                    from,
                    to,
                });
            }
        }
    }

    fn backlog(&self) -> Vec<SetBacklog> {
        self.backlog.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for Mirrord {
    fn drop(&mut self) {
        let _ = self.tx.send(Cmd::Shutdown);
        // A release's flush may still be running: wait for it, bounded.
        if self.done.recv_timeout(FLUSH_TIMEOUT + Duration::from_secs(5)).is_ok()
            && let Some(t) = self.thread.take()
        {
            let _ = t.join();
        }
        self.endpoint.close();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}
