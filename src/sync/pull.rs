//! The opener's side of a pull (`hamirror resync --from PEER`, and the
//! daemon when a node rejoins): hello with the peer position this node last
//! applied; unless the peer's offer is exactly that (one round trip), the
//! peer runs the sender half and this node the receiver half — every
//! receiver safety rule, the mass-delete guard, the journal, atomic apply,
//! and the acknowledgement committed with the data.
//!
//! Before anything is replaced, this node's own changes that the peer does
//! not have ([`crate::index::Index::unmirrored`]) are kept as conflict
//! copies (`conflict.rs`) unless the caller takes the peer's side whole,
//! and afterwards every conflict copy the peer lacks is delivered to it.
//! Scanning the local set first is the caller's job (as for a push), so
//! local writes are in the index when the conflicts are looked for.

use std::sync::Arc;
use std::time::Instant;

use hamirror_wire::{Goodbye, Hello, Message, Mode, Position};

use super::SyncError;
use super::chunks::Router;
use super::conflict::{ConflictPolicy, Conflicts, is_conflict_copy};
use super::control::Control;
use super::recv::{ReceiveReport, Target, receive_half};
use crate::config::{MirrorSet, Node};
use crate::index::Index;
use crate::transport::Connection;

/// How to pull.
#[derive(Clone, Default)]
pub struct PullOptions {
    /// Plan and itemize what would change here; change nothing.
    pub dry_run: bool,
    /// Override this node's mass-delete guard.
    pub force: bool,
    /// Take the peer's side whole: no conflict copies of this node's own
    /// unmirrored changes (they are overwritten or deleted).
    pub discard_mine: bool,
    /// Conversation id, unique among this connection's open conversations;
    /// the conflict delivery (if any) uses `session + 1`.
    pub session: u64,
    /// The name conflict copies carry (`NAME.hamirror-conflict-NODE-TIME`):
    /// TIME, e.g. `20261121T234500Z`. Empty: the current UTC time.
    pub conflict_time: String,
    /// Told how much chunk data is needed and how much arrived.
    pub progress: Option<Arc<dyn super::Progress>>,
}

/// What a pull did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PullReport {
    pub set: String,
    /// `unchanged` (already in step), `full`, `delta`, or `dry-run`.
    pub outcome: &'static str,
    /// The peer's generation offered (and, when complete, now acknowledged).
    pub generation: u64,
    #[serde(flatten)]
    pub receive: ReceiveReport,
    /// Conflict copies made here in this run (set paths), and the number
    /// delivered to the peer (this run's and earlier runs' leftovers).
    pub conflicts: Vec<String>,
    pub conflicts_delivered: u64,
    /// Dry run: the files that would be kept as conflict copies.
    pub would_conflict: Vec<String>,
    /// Conflict copies (set paths) to hand to the peer after the pull.
    #[serde(skip)]
    to_deliver: Vec<Vec<u8>>,
    pub elapsed_s: f64,
}

impl PullReport {
    /// Whether every offered entry was applied and acknowledged.
    pub fn complete(&self) -> bool {
        self.outcome == "unchanged" || self.receive.complete
    }
}

/// Pulls `set` from `peer` over `conn` into this node's copy, `index` being
/// this node's index of the set (scanned by the caller). `router` routes
/// the chunk streams the peer opens: one per connection, shared by every
/// conversation on it ([`Router::spawn`]).
///
/// # Errors
/// The peer's refusal ([`SyncError::Refused`]: it does not hold the group,
/// this node's epoch is newer), this node's mass-delete guard
/// ([`SyncError::Local`] `MassDelete`), a broken link, or a local index or
/// apply error (disk full, permissions). Every file stays its old or new
/// complete version; a rerun resumes.
#[allow(clippy::too_many_arguments)]
pub async fn pull(
    conn: &Connection,
    router: &Router,
    local: &Node,
    peer: &str,
    set: &MirrorSet,
    group: &str,
    epoch: u64,
    index: Arc<Index>,
    opts: &PullOptions,
) -> Result<PullReport, SyncError> {
    let started = Instant::now();
    let (applied, own_changes) = {
        let (idx, name) = (index.clone(), set.name.clone());
        super::blocking(move || Ok::<_, SyncError>((idx.acked(&name)?, idx.unmirrored(&name, None)?))).await?
    };
    match &own_changes {
        Some(c) if c.is_empty() => {}
        Some(c) => {
            tracing::info!(set = %set.name, changes = c.len(), first = %crate::scan::show_path(&c[0]), "this node has changes the peer may lack: asking for a full listing")
        }
        None => tracing::info!(set = %set.name, "this node was never in step with the peer: asking for a full listing"),
    }
    // With changes of our own (or no record of being in step) a delta from
    // our acknowledgement would not name them: ask for a full listing, which
    // is compared with what is really here.
    let acked = applied
        .filter(|_| own_changes.as_ref().is_some_and(|c| c.is_empty()))
        .map(|a| Position {
            index: a.index,
            generation: a.generation,
        });
    let Some(mut inbox) = router.register(opts.session) else {
        return Err(SyncError::local(
            hamirror_wire::ErrorCode::Busy,
            format!("session {} is already open", opts.session),
        ));
    };
    let (tx, rx) = conn.open_control().await?;
    let mut ctl = Control::new(conn, tx, rx);
    let hello = Hello {
        dry_run: opts.dry_run,
        force: opts.force,
        acked,
        ..super::control::hello(Mode::Pull, local, peer, set, group, epoch, opts.session)
    };
    let result = async {
        ctl.send(&Message::Hello(hello)).await?;
        let ok = ctl.hello_ok().await?;
        let offered = ok
            .offer
            .ok_or_else(|| SyncError::protocol("a pull answer without an offer position"))?;
        let mut report = PullReport {
            set: set.name.clone(),
            outcome: "unchanged",
            generation: offered.generation,
            ..PullReport::default()
        };
        // The generation of ours the peer holds, if it speaks of this index.
        let peer_has = ok.acked.filter(|a| a.index == index.id()).map(|a| a.generation);
        let (idx, name) = (index.clone(), set.name.clone());
        let mine = super::blocking(move || idx.unmirrored(&name, peer_has)).await?;
        // Conflict copies of earlier runs the peer may not have yet.
        let pending: Vec<Vec<u8>> = match &mine {
            Some(m) => m.iter().filter(|p| is_conflict_copy(p)).cloned().collect(),
            None => {
                let (idx, name) = (index.clone(), set.name.clone());
                super::blocking(move || -> Result<_, SyncError> {
                    let mut out = Vec::new();
                    for e in idx.entries(&name)? {
                        let e = e?;
                        if is_conflict_copy(&e.path) {
                            out.push(e.path);
                        }
                    }
                    Ok(out)
                })
                .await?
            }
        };
        let policy = if opts.discard_mine {
            ConflictPolicy::DiscardMine
        } else {
            ConflictPolicy::Keep(Conflicts::new(&local.name, mine, &opts.conflict_time))
        };
        report.to_deliver = pending;
        if acked == Some(offered) {
            report.receive.complete = true;
            ctl.send(&Message::Goodbye(Goodbye {
                reason: "in step".into(),
            }))
            .await?;
            ctl.close().await?;
            return Ok(report);
        }
        let target = Target {
            recheck: None,
            index: index.clone(),
            set: set.clone(),
            root: local.conf.root.clone(),
            journal_dir: local.conf.state.join("journal"),
            offered,
            acked,
            force: opts.force,
            dry_run: opts.dry_run,
            conflicts: policy,
            progress: opts.progress.clone(),
        };
        let r = receive_half(&mut ctl, &mut inbox, target).await?;
        report.outcome = r.listing;
        report
            .to_deliver
            .extend(r.conflicts_made.iter().map(|(_, copy)| copy.clone()));
        report.conflicts = r
            .conflicts_made
            .iter()
            .map(|(p, _)| crate::scan::show_path(p))
            .collect();
        report.would_conflict = r.would_conflict.iter().map(|p| crate::scan::show_path(p)).collect();
        report.receive = r;
        ctl.send(&Message::Goodbye(Goodbye { reason: "done".into() })).await?;
        ctl.close().await?;
        Ok(report)
    }
    .await;
    router.unregister(opts.session);
    let mut report = match result {
        Ok(r) => r,
        Err(e) => {
            ctl.fail(&e).await;
            return Err(e);
        }
    };
    for p in &report.conflicts {
        tracing::warn!(set = %set.name, peer, "conflict: this node's version of /{p} differs from the peer's; kept");
    }
    if !opts.dry_run && !opts.discard_mine {
        let paths = std::mem::take(&mut report.to_deliver);
        report.conflicts_delivered =
            super::conflict::deliver(conn, local, peer, set, group, epoch, index, paths, opts.session + 1).await?;
    }
    report.elapsed_s = started.elapsed().as_secs_f64();
    Ok(report)
}

pub use crate::plan::kind_letter;
