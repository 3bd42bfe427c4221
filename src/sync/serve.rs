//! `hamirror serve`: the receiving side of conversations. Accepts
//! connections from the configured peer only (the transport pins its key),
//! and for each conversation checks the hello in the order PROTOCOL.md
//! §6.1 gives — version, node names (against the key the peer proved),
//! set and group, holder and epoch, one conversation per set — then runs the
//! receiver half (push; refused with `Diverged` when this node holds changes
//! the sender lacks), the sender half (pull, when this node holds the
//! group), takes in conflict copies (from a node that pulled) or streams a
//! re-read manifest (verify).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hamirror_wire::{ErrorCode, ErrorMsg, Hello, HelloOk, Message, Mode, MsgType, PROTOCOL_VERSION, Position};

use super::SyncError;
use super::chunks::Router;
use super::conflict::ConflictPolicy;
use super::control::Control;
use super::recv::{Target, receive_half};
use super::send::{Offer, send_half};
use crate::config::{ChunkParams, Cluster, MirrorSet, Node};
use crate::index::Index;
use crate::scan::{Quiet, ScanOptions, scan_set};
use crate::transport::{Connection, Endpoint, FrameReceiver, FrameSender};

/// Who holds each group now, and at which epoch: the lock that stops two
/// nodes mirroring a set at each other.
pub trait Holders: Send + Sync {
    fn holder(&self, group: &str) -> Option<(String, u64)>;
}

/// Until failover runs: every group is held by its owner, epoch 1.
pub struct OwnerHolds {
    owners: HashMap<String, String>,
}

impl OwnerHolds {
    pub fn new(cluster: &Cluster) -> OwnerHolds {
        OwnerHolds {
            owners: cluster
                .nodes
                .iter()
                .map(|n| (n.group.name.clone(), n.group.owner.clone()))
                .collect(),
        }
    }
}

impl Holders for OwnerHolds {
    fn holder(&self, group: &str) -> Option<(String, u64)> {
        self.owners.get(group).map(|o| (o.clone(), 1))
    }
}

/// The receiver of one node.
pub struct Server {
    cluster: Arc<Cluster>,
    local: String,
    holders: Arc<dyn Holders>,
    /// Sets in conversation, with the connection each conversation is on.
    busy: Mutex<HashMap<String, Claim>>,
    diverged: Option<DivergedHook>,
    caught_up: Option<CaughtUpHook>,
}

/// Told `(set, group)` when a push was refused because this node holds
/// changes the sender lacks (`Diverged`): the daemon pulls them back with
/// conflict copies by itself; `hamirror serve` leaves it to the operator.
pub type DivergedHook = Box<dyn Fn(&str, &str) + Send + Sync>;

/// Told `set` when the peer caught up with this node's copy by itself: it
/// pulled the set completely, or delivered its conflict copies (the end of
/// its pull-back). The daemon then retries at once a push the peer had
/// refused, instead of after the retry's backoff.
pub type CaughtUpHook = Box<dyn Fn(&str) + Send + Sync>;

/// A set's conversation in progress: its connection, and whether a newer
/// conversation superseded it (it then installs nothing more).
struct Claim {
    conn: Connection,
    superseded: Arc<AtomicBool>,
}

/// Marks a set busy for the life of a conversation.
struct BusyGuard<'a> {
    busy: &'a Mutex<HashMap<String, Claim>>,
    set: String,
    superseded: Arc<AtomicBool>,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.set);
    }
}

/// How long a new conversation waits for the one it superseded to end.
/// The old one ends at its next step on the (closed) connection, or at
/// its next install ([`Target::recheck`]); the work in progress meanwhile
/// (a replica scan, a file being built) can take seconds, and the peer
/// must not be refused for it.
const SUPERSEDE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl Server {
    pub fn new(cluster: Arc<Cluster>, local: &str, holders: Arc<dyn Holders>) -> Arc<Server> {
        Server::with_hooks(cluster, local, holders, None, None)
    }

    /// [`Server::new`], calling `diverged` after each `Diverged` refusal
    /// and `caught_up` when the peer caught up by itself.
    pub fn with_hooks(
        cluster: Arc<Cluster>,
        local: &str,
        holders: Arc<dyn Holders>,
        diverged: Option<DivergedHook>,
        caught_up: Option<CaughtUpHook>,
    ) -> Arc<Server> {
        Arc::new(Server {
            cluster,
            local: local.to_string(),
            holders,
            busy: Mutex::new(HashMap::new()),
            diverged,
            caught_up,
        })
    }

    fn peer_caught_up(&self, set: &str) {
        if let Some(hook) = &self.caught_up {
            hook(set);
        }
    }

    /// Serves connections until the endpoint closes.
    pub async fn run(self: Arc<Self>, endpoint: &Endpoint) {
        while let Some(conn) = endpoint.accept().await {
            match conn {
                Ok(conn) => {
                    tokio::spawn(self.clone().connection(conn));
                }
                Err(e) => tracing::warn!("refused a connection: {e}"),
            }
        }
    }

    /// Serves one authenticated connection: every conversation on it.
    pub async fn connection(self: Arc<Self>, conn: Connection) {
        let peer = conn.peer().clone();
        let router = Router::spawn(&conn);
        loop {
            match conn.accept_control().await {
                Ok((tx, rx)) => {
                    tokio::spawn(self.clone().conversation(conn.clone(), router.clone(), tx, rx));
                }
                Err(e) => {
                    tracing::info!(peer = %peer.name, "connection closed: {e}");
                    return;
                }
            }
        }
    }

    async fn conversation(
        self: Arc<Self>,
        conn: Connection,
        router: Router,
        mut tx: FrameSender,
        mut rx: FrameReceiver,
    ) {
        // The hello is read by hand: its version is checked before the rest
        // is decoded, so any version can be refused readably.
        let hello = match rx.recv().await {
            Ok(Some((ty, payload))) if ty == MsgType::Hello as u8 => match Hello::peek_version(&payload) {
                Ok(v) if v != conn.protocol_version() => {
                    let reason = format!(
                        "{} speaks protocol version {} on this connection, the peer version {v}",
                        self.local,
                        conn.protocol_version()
                    );
                    let m = Message::Error(ErrorMsg::new(ErrorCode::VersionMismatch, reason));
                    let _ = tx.send(m.msg_type() as u8, &m.payload()).await;
                    let _ = tx.finished().await;
                    return;
                }
                _ => match Message::decode_for(conn.protocol_version(), ty, &payload) {
                    Ok(Message::Hello(h)) => h,
                    Ok(_) | Err(_) => {
                        conn.close(ErrorCode::BadFrame.number(), "the hello does not decode");
                        return;
                    }
                },
            },
            Ok(Some((ty, _))) => {
                conn.close(
                    ErrorCode::Protocol.number(),
                    &format!("expected a hello, got message type {ty:#04x}"),
                );
                return;
            }
            Ok(None) => return,
            Err(e) => {
                super::control::close_on_bad_frame(&conn, &e);
                return;
            }
        };
        let mut ctl = Control::new(&conn, tx, rx);
        let set = hello.set.clone();
        let result = self.clone().converse(&conn, &router, &mut ctl, hello).await;
        match result {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(set = %set, peer = %ctl.peer, "{e}");
                ctl.fail(&e).await;
            }
        }
    }

    /// The hello checks of PROTOCOL.md §6.1; returns the set to work on.
    fn check_hello(&self, conn: &Connection, h: &Hello) -> Result<MirrorSet, SyncError> {
        let refuse = |code, reason: String| Err(SyncError::local(code, reason));
        if h.to != self.local {
            return refuse(ErrorCode::WrongNode, format!("this is {}, not {}", self.local, h.to));
        }
        if h.from != conn.peer().name {
            return refuse(
                ErrorCode::WrongNode,
                format!(
                    "the hello says it is from {}, but the connection's key is {}'s",
                    h.from,
                    conn.peer().name
                ),
            );
        }
        let Some((owner, set)) = self.cluster.find_set(&h.set) else {
            return refuse(ErrorCode::UnknownSet, format!("{} has no set {:?}", self.local, h.set));
        };
        if owner.group.name != h.group {
            return refuse(
                ErrorCode::UnknownSet,
                format!(
                    "set {} belongs to group {}, not {}",
                    set.name, owner.group.name, h.group
                ),
            );
        }
        check_holder(self.holders.as_ref(), &self.local, h)?;
        let chunk = ChunkParams {
            min: h.chunking.min,
            avg: h.chunking.avg,
            max: h.chunking.max,
        };
        chunk
            .validate()
            .map_err(|e| SyncError::protocol(format!("hello chunking: {e}")))?;
        Ok(MirrorSet { chunk, ..set.clone() })
    }

    /// Marks a set busy (one conversation per set) for the guard's life.
    ///
    /// The peer runs one conversation per set at a time, so a new one on
    /// another connection means the old connection is dead — typically the
    /// peer was killed and restarted, and its old connection would only
    /// time out after the idle timeout. That connection is closed and the
    /// new conversation waits (briefly) for the old one to end.
    async fn claim(&self, set: &str, conn: &Connection) -> Result<BusyGuard<'_>, SyncError> {
        let t0 = std::time::Instant::now();
        loop {
            {
                let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
                match busy.get(set) {
                    None => {
                        let superseded = Arc::new(AtomicBool::new(false));
                        busy.insert(
                            set.to_string(),
                            Claim {
                                conn: conn.clone(),
                                superseded: superseded.clone(),
                            },
                        );
                        return Ok(BusyGuard {
                            busy: &self.busy,
                            set: set.to_string(),
                            superseded,
                        });
                    }
                    Some(old) if old.conn.quinn().stable_id() != conn.quinn().stable_id() => {
                        if !old.superseded.swap(true, Ordering::SeqCst) {
                            tracing::info!(
                                set,
                                "a new conversation for {set} supersedes one on an older connection"
                            );
                            old.conn.close(
                                ErrorCode::Busy.number(),
                                "superseded: a newer connection from this peer works on the same set",
                            );
                        }
                    }
                    Some(_) => {}
                }
            }
            if t0.elapsed() > SUPERSEDE_WAIT {
                let why = format!("another conversation for {set} is in progress");
                return Err(SyncError::local(ErrorCode::Busy, why));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    async fn converse(
        self: Arc<Self>,
        conn: &Connection,
        router: &Router,
        ctl: &mut Control,
        h: Hello,
    ) -> Result<(), SyncError> {
        let set = self.check_hello(conn, &h)?;
        let node = self
            .cluster
            .node(&self.local)
            .expect("the server runs as a configured node");
        let epoch = self.holders.holder(&h.group).map_or(0, |(_, e)| e).max(h.epoch);
        if h.mode == Mode::Verify {
            let ok = HelloOk {
                version: PROTOCOL_VERSION,
                node: self.local.clone(),
                epoch,
                offer: None,
                acked: None,
            };
            ctl.send(&Message::HelloOk(ok)).await?;
            super::verify::send_manifest(ctl, node, &set).await?;
            return expect_goodbye(ctl).await;
        }
        // One writer per set; released once applied, not at goodbye.
        let busy = self.claim(&set.name, conn).await?;
        let index = open_index(node, &set.name).await?;
        let acked = {
            let (index, name) = (index.clone(), set.name.clone());
            super::blocking(move || index.acked(&name)).await?
        }
        .map(|a| Position {
            index: a.index,
            generation: a.generation,
        });
        if h.mode == Mode::Pull {
            let complete = serve_pull(ctl, conn, node, &set, &h, index, epoch, acked, &self.local, busy).await?;
            if complete {
                self.peer_caught_up(&set.name);
            }
            return Ok(());
        }
        let policy = if h.mode == Mode::Conflicts {
            ConflictPolicy::Accept
        } else {
            if let Err(e) = refuse_if_diverged(&index, &set.name, &h, &self.local).await {
                if let Some(hook) = &self.diverged {
                    hook(&set.name, &h.group);
                }
                return Err(e);
            }
            ConflictPolicy::Overwrite
        };
        let Some(mut inbox) = router.register(h.session) else {
            return Err(SyncError::local(
                ErrorCode::Busy,
                format!("session {} is already open", h.session),
            ));
        };
        let ok = HelloOk {
            version: PROTOCOL_VERSION,
            node: self.local.clone(),
            epoch,
            offer: None,
            acked: if h.mode == Mode::Push { acked } else { None },
        };
        ctl.send(&Message::HelloOk(ok)).await?;
        let target = Target {
            index,
            set: set.clone(),
            root: node.conf.root.clone(),
            journal_dir: node.conf.state.join("journal"),
            offered: h
                .offer
                .ok_or_else(|| SyncError::protocol("a push hello without an offer position"))?,
            acked: if h.mode == Mode::Push { acked } else { None },
            force: h.force,
            dry_run: h.dry_run,
            conflicts: policy,
            progress: None,
            recheck: Some({
                let (holders, local, h) = (self.holders.clone(), self.local.clone(), h.clone());
                let superseded = busy.superseded.clone();
                let r: super::recv::Recheck = Arc::new(move || {
                    if superseded.load(Ordering::SeqCst) {
                        return Err(SyncError::local(
                            ErrorCode::Busy,
                            "superseded by a newer conversation of the peer for this set".to_string(),
                        ));
                    }
                    if h.mode == Mode::Push {
                        check_holder(holders.as_ref(), &local, &h)?;
                    }
                    Ok(())
                });
                r
            }),
        };
        let result = receive_half(ctl, &mut inbox, target).await;
        router.unregister(h.session);
        drop(busy);
        let r = result?;
        if h.mode == Mode::Conflicts && r.complete {
            self.peer_caught_up(&set.name);
        }
        if r.listing == "none" {
            tracing::debug!(set = %set.name, peer = %ctl.peer, "in step, nothing to apply");
            return Ok(());
        }
        let what = if h.mode == Mode::Conflicts {
            "conflict copies applied"
        } else {
            "applied"
        };
        tracing::info!(
            set = %set.name, peer = %ctl.peer, listing = r.listing, offered = r.offered, applied = r.applied,
            deleted = r.deleted, chunks = r.chunks_received, deltas = r.deltas_received, bytes = r.bytes_received,
            failures = r.failures,
            "{what}"
        );
        expect_goodbye(ctl).await
    }
}

/// Opens this node's index of a set (another process holding it: Busy).
/// The holder and epoch checks of PROTOCOL.md §6.1 against this node's
/// current view. Run at the hello, and again before a push is applied: a
/// conversation accepted just before the links went down may resume after
/// they heal, when its sender no longer holds the group (a split brain's
/// loser) — it must not overwrite the new holder's data.
fn check_holder(holders: &dyn Holders, local: &str, h: &Hello) -> Result<(), SyncError> {
    let refuse = |code, reason: String| Err(SyncError::local(code, reason));
    let Some((holder, epoch)) = holders.holder(&h.group) else {
        return refuse(ErrorCode::UnknownSet, format!("no group {}", h.group));
    };
    match h.mode {
        Mode::Push if holder != h.from => {
            return refuse(
                ErrorCode::NotHolder,
                format!(
                    "{} does not hold group {} (its holder is {holder}); only the holder mirrors it",
                    h.from, h.group
                ),
            );
        }
        Mode::Push if h.epoch < epoch => {
            return refuse(
                ErrorCode::StaleEpoch,
                format!(
                    "{} presents epoch {} of group {}, but this node knows epoch {epoch}",
                    h.from, h.epoch, h.group
                ),
            );
        }
        // A pull, and conflict copies, go to the holder only, and only
        // when this node's view of the group is not older than the
        // opener's.
        Mode::Pull | Mode::Conflicts if holder != local => {
            return refuse(
                ErrorCode::NotHolder,
                format!(
                    "{} does not hold group {} (its holder is {holder}); resync from the holder",
                    local, h.group
                ),
            );
        }
        Mode::Pull | Mode::Conflicts if h.epoch > epoch => {
            return refuse(
                ErrorCode::StaleEpoch,
                format!(
                    "{} presents epoch {} of group {}, but this node only knows epoch {epoch}: its view is out of date",
                    h.from, h.epoch, h.group
                ),
            );
        }
        _ => {}
    }
    Ok(())
}

async fn open_index(node: &Node, set: &str) -> Result<Arc<Index>, SyncError> {
    let (state, name) = (node.conf.state.clone(), set.to_string());
    // Shared: in the daemon the set's watcher may hold it already.
    super::blocking(move || Index::shared_set(&state, &name))
        .await
        .map_err(|e| match e {
            crate::index::IndexError::InUse { .. } => SyncError::local(ErrorCode::Busy, e.to_string()),
            e => e.into(),
        })
}

/// A push must not overwrite changes this node made that the sender does
/// not have (it wrote while it held the group and came back): refuse with
/// `Diverged` until an operator resyncs. Unknown (never in step with the
/// sender) is accepted: a fresh replica.
async fn refuse_if_diverged(index: &Arc<Index>, set: &str, h: &Hello, local: &str) -> Result<(), SyncError> {
    let peer_has = h.acked.filter(|a| a.index == index.id()).map(|a| a.generation);
    let (idx, name) = (index.clone(), set.to_string());
    let mine = super::blocking(move || idx.unmirrored(&name, peer_has)).await?;
    let Some(mine) = mine.filter(|m| !m.is_empty()) else {
        return Ok(());
    };
    Err(SyncError::local(
        ErrorCode::Diverged,
        format!(
            "{local} holds {} change(s) to {set} that {} does not have (e.g. /{}); it will not overwrite them. \
             Run `hamirror resync --from {}` on {local} (its changes are kept as conflict copies on both nodes), \
             or add --discard-mine to drop them",
            mine.len(),
            h.from,
            crate::scan::show_path(&mine[0]),
            h.from
        ),
    ))
}

/// The peer's side of a pull: scan this node's copy (quick check) unless
/// its watcher keeps the index current, offer its position, and unless the
/// opener already has it, run the sender half. Returns whether the opener
/// applied everything offered.
#[allow(clippy::too_many_arguments)]
async fn serve_pull(
    ctl: &mut Control,
    conn: &Connection,
    node: &Node,
    set: &MirrorSet,
    h: &Hello,
    index: Arc<Index>,
    epoch: u64,
    acked: Option<Position>,
    local: &str,
    busy: BusyGuard<'_>,
) -> Result<bool, SyncError> {
    let generation = match watched_generation(&index, &set.name).await? {
        Some(g) => g,
        None => {
            let (idx, set, root) = (index.clone(), set.clone(), node.conf.root.clone());
            super::blocking(move || scan_set(&idx, &set, &root, &ScanOptions::default(), &Quiet))
                .await?
                .generation
        }
    };
    let offer = Position {
        index: index.id(),
        generation,
    };
    ctl.send(&Message::HelloOk(HelloOk {
        version: PROTOCOL_VERSION,
        node: local.to_string(),
        epoch,
        offer: Some(offer),
        acked,
    }))
    .await?;
    if h.acked == Some(offer) {
        return expect_goodbye(ctl).await.map(|()| false);
    }
    let o = Offer {
        index,
        set: set.name.clone(),
        root: node.conf.root.clone(),
        session: h.session,
        position: offer,
        acked: h.acked,
        empty_roots: super::push::empty_roots(node, set),
        dry_run: h.dry_run,
        progress: None,
        only: None,
        rules: Some(set.clone()),
    };
    let sent = send_half(conn, ctl, o).await?;
    // Applied: the set is free (and its index closed) for what the opener
    // does next, such as delivering conflict copies.
    drop(busy);
    if let Some(a) = &sent.applied {
        tracing::info!(
            set = %set.name, peer = %ctl.peer, listing = sent.listing, offered = sent.entries_offered,
            chunks = sent.chunks_sent, applied = a.files, complete = a.complete, dry_run = h.dry_run,
            "pulled by the peer"
        );
    }
    expect_goodbye(ctl).await?;
    Ok(sent.applied.is_some_and(|a| a.complete) && !h.dry_run)
}

/// How long a pull waits for the set's watcher to commit what it has seen
/// (a busy writer may keep it from ever settling) before scanning instead.
const WATCHER_SETTLE: Duration = Duration::from_secs(2);

/// The set's generation when a live watcher in this process keeps the
/// index current (the daemon's held sets): once it has committed every
/// change it has seen, the index is the set as it is and the stat scan of
/// every file can be skipped, so the cost of a pull follows the changes.
/// `None`: scan.
async fn watched_generation(index: &Arc<Index>, set: &str) -> Result<Option<u64>, SyncError> {
    let started = Instant::now();
    loop {
        match index.watcher_pending(set) {
            None => return Ok(None),
            Some(0) => break,
            Some(_) if started.elapsed() >= WATCHER_SETTLE => {
                tracing::debug!(set, "the watcher is still busy: scanning instead");
                return Ok(None);
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    let (idx, name) = (index.clone(), set.to_string());
    let generation = super::blocking(move || idx.generation(&name)).await?;
    tracing::debug!(set, generation, "kept current by the watcher: no scan");
    Ok(Some(generation))
}

async fn expect_goodbye(ctl: &mut Control) -> Result<(), SyncError> {
    match ctl.next().await? {
        Message::Goodbye(_) => ctl.close().await,
        other => Err(SyncError::protocol(format!(
            "expected Goodbye, got {}",
            other.msg_type().name()
        ))),
    }
}
