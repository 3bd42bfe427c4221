//! The opener's side of a push (`hamirror sync`, and each pass of `watch`):
//! hello with our position, and unless the receiver already acknowledged it
//! (the one-round-trip no-change pass), the sender half. Scanning is the
//! caller's job, so a watcher that has just committed a generation pushes
//! without walking the set again.

use std::sync::Arc;
use std::time::Instant;

use hamirror_wire::{Goodbye, Hello, Message, Mode, Position};

use super::SyncError;
use super::control::Control;
use super::send::{Offer, SendReport, send_half};
use crate::config::{MirrorSet, Node};
use crate::index::Index;
use crate::transport::Connection;

/// How to push.
#[derive(Clone, Default)]
pub struct PushOptions {
    /// Ask the receiver what it would do; change nothing.
    pub dry_run: bool,
    /// Override the receiver's mass-delete guard.
    pub force: bool,
    /// Offer every entry (a full listing) even when the receiver is in
    /// step: it then re-checks its own disk and repairs whatever was
    /// changed there behind hamirror's back.
    pub full: bool,
    /// Conversation id, unique among this connection's open conversations.
    pub session: u64,
    /// Told how much is to be sent and how much was (a progress bar).
    pub progress: Option<Arc<dyn super::Progress>>,
}

/// What a push did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PushReport {
    pub set: String,
    /// `unchanged` (the receiver already had this generation), `full`,
    /// `delta`, or `dry-run`.
    pub outcome: &'static str,
    pub generation: u64,
    #[serde(flatten)]
    pub send: SendReport,
    pub files_applied: u64,
    pub bytes_applied: u64,
    pub chunks_reused: u64,
    pub deleted: u64,
    /// Files the receiver could not apply: (path, reason).
    pub failures: Vec<(String, String)>,
    pub failures_total: u64,
    /// Entries applied without some extended attribute the receiver's
    /// filesystem refused: (path, reason naming the attribute).
    pub warnings: Vec<(String, String)>,
    pub warnings_total: u64,
    pub elapsed_s: f64,
}

/// The set roots (as set paths) that are missing or empty on this node.
pub fn empty_roots(local: &Node, set: &MirrorSet) -> Vec<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    set.roots
        .iter()
        .filter(|r| {
            let p = local.local_path(&r.path);
            match std::fs::symlink_metadata(&p) {
                Err(_) => true,
                Ok(m) if m.is_dir() => std::fs::read_dir(&p).map(|mut d| d.next().is_none()).unwrap_or(true),
                Ok(_) => false,
            }
        })
        .map(|r| r.path.as_os_str().as_bytes()[1..].to_vec())
        .collect()
}

/// Pushes `set` as committed in `index` to the peer over `conn`.
///
/// # Errors
/// The peer's refusal ([`SyncError::Refused`]: not the holder, stale epoch,
/// mass delete, disk full…), a broken link, or a local index error.
#[allow(clippy::too_many_arguments)]
pub async fn push(
    conn: &Connection,
    local: &Node,
    peer: &str,
    set: &MirrorSet,
    group: &str,
    epoch: u64,
    index: Arc<Index>,
    opts: &PushOptions,
) -> Result<PushReport, SyncError> {
    let started = Instant::now();
    let position = {
        let (idx, name) = (index.clone(), set.name.clone());
        let generation = super::blocking(move || idx.generation(&name)).await?;
        Position {
            index: index.id(),
            generation,
        }
    };
    // The receiver's position we last applied: with it the receiver can
    // tell whether it holds changes we do not have (it refuses with
    // Diverged rather than overwrite them).
    let applied = {
        let (idx, name) = (index.clone(), set.name.clone());
        super::blocking(move || idx.acked(&name)).await?
    };
    let (tx, rx) = conn.open_control().await?;
    let mut ctl = Control::new(conn, tx, rx);
    let result = async {
        let hello = Hello {
            dry_run: opts.dry_run,
            force: opts.force,
            offer: Some(position),
            acked: applied.map(|a| Position {
                index: a.index,
                generation: a.generation,
            }),
            ..super::control::hello(Mode::Push, local, peer, set, group, epoch, opts.session)
        };
        ctl.send(&Message::Hello(hello)).await?;
        let ok = ctl.hello_ok().await?;
        let mut report = PushReport {
            set: set.name.clone(),
            outcome: "unchanged",
            generation: position.generation,
            send: SendReport::default(),
            files_applied: 0,
            bytes_applied: 0,
            chunks_reused: 0,
            deleted: 0,
            failures: vec![],
            failures_total: 0,
            warnings: vec![],
            warnings_total: 0,
            elapsed_s: 0.0,
        };
        if ok.acked == Some(position) && !opts.full {
            ctl.send(&Message::Goodbye(Goodbye {
                reason: "nothing changed".into(),
            }))
            .await?;
            ctl.close().await?;
            return Ok(report);
        }
        let offer = Offer {
            index,
            set: set.name.clone(),
            root: local.conf.root.clone(),
            session: opts.session,
            position,
            // Without the receiver's position the offer lists everything.
            acked: if opts.full { None } else { ok.acked },
            empty_roots: empty_roots(local, set),
            dry_run: opts.dry_run,
            progress: opts.progress.clone(),
            only: None,
            rules: Some(set.clone()),
        };
        let send = send_half(conn, &mut ctl, offer).await?;
        report.outcome = if opts.dry_run { "dry-run" } else { send.listing };
        if let Some(a) = &send.applied {
            report.files_applied = a.files;
            report.bytes_applied = a.bytes;
            report.chunks_reused = a.chunks_reused;
            report.deleted = a.deleted;
            report.failures_total = a.failures.total;
            report.failures = a
                .failures
                .listed
                .iter()
                .map(|f| (crate::scan::show_path(&f.path), f.reason.clone()))
                .collect();
            report.warnings_total = a.warnings.total;
            report.warnings = a
                .warnings
                .listed
                .iter()
                .map(|f| (crate::scan::show_path(&f.path), f.reason.clone()))
                .collect();
        }
        report.send = send;
        ctl.send(&Message::Goodbye(Goodbye { reason: "done".into() })).await?;
        ctl.close().await?;
        Ok(report)
    }
    .await;
    match result {
        Ok(mut r) => {
            r.elapsed_s = started.elapsed().as_secs_f64();
            Ok(r)
        }
        Err(e) => {
            ctl.fail(&e).await;
            Err(e)
        }
    }
}
