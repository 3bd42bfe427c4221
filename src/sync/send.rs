//! The sender half of a conversation: offer the entries changed since the
//! receiver's acknowledged generation (or all of them), then send each
//! chunk the receiver asks for, once — as a delta against the receiver's
//! base when it sent a signature and that is smaller — until it reports
//! what it applied.
//! Used by a push (the opener sends) and, with roles swapped, by a pull.
//!
//! A peer speaking protocol version 1 cannot decode FIFOs and device nodes:
//! they are left out of the offer before it is batched (so its counts are
//! what is sent) — in a delta as a deletion, since the peer keeps no such
//! entry — and reported as not mirrored.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use hamirror_wire::{
    Applied, Counts, EntryBatcher, EntryKind, Hash, Listing, Message, NeedEnd, OfferEnd, Position, Signature,
    msg::MAX_BATCH_HASHES,
};
use tokio::sync::mpsc;

use super::SyncError;
use super::chunks::{ChunkPump, Job};
use super::control::Control;
use crate::index::Index;
use crate::transport::Connection;

/// What the sender knows when it starts offering.
pub(crate) struct Offer {
    pub index: Arc<Index>,
    pub set: String,
    /// This node's root: set paths are read under it.
    pub root: PathBuf,
    pub session: u64,
    /// Our position (index id, generation) being offered.
    pub position: Position,
    /// What the receiver acknowledged, from its `HelloOk`.
    pub acked: Option<Position>,
    /// Set roots (as set paths) missing or empty here: the receiver's
    /// mass-delete guard weighs them.
    pub empty_roots: Vec<Vec<u8>>,
    pub dry_run: bool,
    pub progress: Option<Arc<dyn super::Progress>>,
    /// Offer exactly these entries (a conflict delivery) instead of the
    /// changes since the receiver's acknowledgement.
    pub only: Option<Vec<hamirror_wire::Entry>>,
    /// The set, whose exclude rules keep excluded paths out of a delta: a
    /// path logged before it became excluded is neither offered nor listed
    /// as deleted (the replica keeps its copy).
    pub rules: Option<crate::config::MirrorSet>,
}

/// What the sender half did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct SendReport {
    /// `full` or `delta`.
    pub listing: &'static str,
    pub entries_offered: u64,
    pub deletes_offered: u64,
    /// Chunks asked for and sent, their raw bytes and the bytes of their
    /// frames (after compression).
    pub chunks_sent: u64,
    pub chunk_bytes: u64,
    pub chunk_frame_bytes: u64,
    /// Of those, the chunks sent as deltas against a base the receiver
    /// holds, their raw bytes and the bytes of their frames.
    pub deltas_sent: u64,
    pub delta_bytes: u64,
    pub delta_frame_bytes: u64,
    /// Chunks that could not be read any more (the file changed).
    pub unavailable: u64,
    /// Entries left out of the offer because the peer cannot take them
    /// (FIFOs and device nodes, to a protocol-version-1 peer): (path, why).
    pub not_mirrored: Vec<(String, String)>,
    /// What the receiver reported (in a dry run: what it would do).
    #[serde(skip)]
    pub applied: Option<Applied>,
    #[serde(skip)]
    pub need: Option<NeedEnd>,
    /// Dry run: what the receiver would change and delete.
    #[serde(skip)]
    pub would_change: Vec<(EntryKind, Vec<u8>)>,
    #[serde(skip)]
    pub would_delete: Vec<Vec<u8>>,
}

/// An offer sent: what it said, and what serving it needs.
struct Built {
    listing: Listing,
    counts: Counts,
    end: OfferEnd,
    /// The length of every chunk offered (to serve the receiver's needs and
    /// to refuse hashes that were never offered).
    lens: HashMap<Hash, u32>,
    /// Entries left out: the peer cannot take their kind.
    left_out: Vec<hamirror_wire::Entry>,
}

/// Messages of the offer in flight between the thread that reads them
/// from the index and the control stream: the offer is streamed, never
/// held whole (issue 17: a 50,000-entry offer built in memory cost the
/// sender ~30 MB).
const OFFER_QUEUE: usize = 16;

/// Builds the offer messages and hands each to `emit` as it is made: a
/// delta since the receiver's acknowledgement when the index can list it,
/// else every entry. `specials`: the peer's protocol has FIFOs and device
/// nodes (version 2).
fn build_offer(
    o: &Offer,
    specials: bool,
    mut emit: impl FnMut(Message) -> Result<(), SyncError>,
) -> Result<Built, SyncError> {
    let delta = match o.acked {
        Some(a) if a.index == o.position.index && a.generation < o.position.generation => o
            .index
            .changes_since(&o.set, a.generation)?
            .map(|paths| (a.generation, paths)),
        _ => None,
    };
    let mut batcher = EntryBatcher::new();
    let mut lens = HashMap::new();
    let mut left_out = Vec::new();
    let mut note = |e: &hamirror_wire::Entry| {
        for c in &e.chunks {
            lens.insert(c.hash, c.len);
        }
    };
    // Whether the peer can take `e`; what it cannot is kept for the report.
    let mut takes = |e: &hamirror_wire::Entry| {
        let ok = specials || !e.kind.is_special();
        if !ok {
            left_out.push(e.clone());
        }
        ok
    };
    let listing = match (delta, &o.only) {
        (_, Some(only)) => {
            for e in only.iter().filter(|e| takes(e)) {
                note(e);
                for m in batcher.entry(e.clone()) {
                    emit(m)?;
                }
            }
            Listing::Full
        }
        (Some((base, paths)), None) => {
            let excluded = |p: &[u8], is_dir: Option<bool>| o.rules.as_ref().is_some_and(|s| s.excluded(p, is_dir));
            for p in paths {
                match o.index.entry(&o.set, &p)? {
                    Some(e) if excluded(&e.path, Some(e.kind == EntryKind::Dir)) => {}
                    None if excluded(&p, None) => {}
                    Some(e) if takes(&e) => {
                        note(&e);
                        for m in batcher.entry(e) {
                            emit(m)?;
                        }
                    }
                    // Whatever the peer holds there is gone here.
                    Some(e) => {
                        if let Some(m) = batcher.delete(e.path) {
                            emit(m)?;
                        }
                    }
                    None => {
                        if let Some(m) = batcher.delete(p) {
                            emit(m)?;
                        }
                    }
                }
            }
            Listing::Delta { base }
        }
        (None, None) => {
            for e in o.index.entries(&o.set)? {
                let e = e?;
                if takes(&e) {
                    note(&e);
                    for m in batcher.entry(e) {
                        emit(m)?;
                    }
                }
            }
            Listing::Full
        }
    };
    for m in batcher.flush() {
        emit(m)?;
    }
    let counts = batcher.counts();
    let info = o.index.info(&o.set)?;
    let mut set_bytes = 0u64;
    if listing == Listing::Full && o.only.is_none() {
        set_bytes = counts.bytes;
    } else {
        for e in o.index.entries(&o.set)? {
            set_bytes += e?.size;
        }
    }
    let end = OfferEnd {
        generation: o.position.generation,
        listing,
        entries: counts.entries,
        deletes: counts.deletes,
        bytes: counts.bytes,
        set_entries: info.entries,
        set_bytes,
        empty_roots: o.empty_roots.clone(),
    };
    Ok(Built {
        listing,
        counts,
        end,
        lens,
        left_out,
    })
}

/// The report's lines for entries the peer cannot take, with one log line.
pub(crate) fn not_mirrored(left_out: &[hamirror_wire::Entry], peer: &str, version: u32) -> Vec<(String, String)> {
    if left_out.is_empty() {
        return vec![];
    }
    tracing::warn!(
        "{} FIFOs and device nodes not mirrored: {peer} speaks protocol version {version}; upgrade it",
        left_out.len()
    );
    left_out
        .iter()
        .map(|e| {
            (
                crate::scan::show_path(&e.path),
                format!(
                    "{} not mirrored: {peer} speaks protocol version {version} (upgrade it)",
                    super::verify::kind_name(e.kind)
                ),
            )
        })
        .collect()
}

enum Event {
    Msg(Box<Result<Message, SyncError>>),
    Unavailable(Option<Vec<Hash>>),
}

/// Runs the sender half after the hellos.
pub(crate) async fn send_half(conn: &Connection, ctl: &mut Control, o: Offer) -> Result<SendReport, SyncError> {
    let o = Arc::new(o);
    let (tx, mut rx) = mpsc::channel(OFFER_QUEUE);
    let builder = {
        let o = o.clone();
        let specials = ctl.version >= 2;
        tokio::task::spawn_blocking(move || {
            build_offer(&o, specials, |m| {
                // The receiving end is gone only when sending failed.
                tx.blocking_send(m)
                    .map_err(|_| SyncError::local(hamirror_wire::ErrorCode::Io, "the offer was not sent"))
            })
        })
    };
    let mut sent = Ok(());
    while let Some(m) = rx.recv().await {
        if let Err(e) = ctl.send(&m).await {
            sent = Err(e);
            break;
        }
    }
    drop(rx);
    let built = match builder.await {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    // A send that failed explains the builder's stop.
    sent?;
    let Built {
        listing,
        counts,
        end,
        lens,
        left_out,
    } = built?;
    let mut report = SendReport {
        listing: if listing == Listing::Full { "full" } else { "delta" },
        entries_offered: counts.entries,
        deletes_offered: counts.deletes,
        not_mirrored: not_mirrored(&left_out, &ctl.peer, ctl.version),
        ..SendReport::default()
    };
    ctl.send(&Message::OfferEnd(end)).await?;

    if o.dry_run {
        return dry_run_answer(ctl, report).await;
    }

    let (unav_tx, mut unav_rx) = mpsc::channel(16);
    let mut pump = ChunkPump::start(conn, o.session, o.root.clone(), unav_tx, o.progress.clone());
    let (mut need_open, mut unav_open) = (true, true);
    let applied = loop {
        let ev = tokio::select! {
            m = ctl.next() => Event::Msg(Box::new(m)),
            u = unav_rx.recv(), if unav_open => Event::Unavailable(u),
        };
        let ev = match ev {
            Event::Msg(m) => Ok(*m),
            Event::Unavailable(u) => Err(u),
        };
        match ev {
            Ok(Ok(Message::Need(hashes))) if need_open => {
                let asked = hashes.into_iter().map(|h| (h, None)).collect();
                pump.send(jobs(&o, &lens, asked).await?);
            }
            Ok(Ok(Message::NeedDelta(reqs))) if need_open => {
                let asked = reqs
                    .into_iter()
                    .map(|r| (r.hash, Some(Box::new(r.signature))))
                    .collect();
                pump.send(jobs(&o, &lens, asked).await?);
            }
            Ok(Ok(Message::NeedEnd(n))) if need_open => {
                if let Some(p) = &o.progress {
                    p.need(n.bytes);
                }
                report.need = Some(n);
                need_open = false;
                pump.close();
            }
            Ok(Ok(Message::Applied(a))) => break a,
            Ok(Ok(other)) => {
                return Err(SyncError::protocol(format!(
                    "unexpected {} while sending chunks",
                    other.msg_type().name()
                )));
            }
            Ok(Err(e)) => return Err(e),
            Err(Some(hashes)) => {
                report.unavailable += hashes.len() as u64;
                for part in hashes.chunks(MAX_BATCH_HASHES as usize) {
                    ctl.send(&Message::Unavailable(part.to_vec())).await?;
                }
            }
            Err(None) => unav_open = false,
        }
    };
    let stats = pump.finish().await?;
    report.chunks_sent = stats.chunks;
    report.chunk_bytes = stats.raw_bytes;
    report.chunk_frame_bytes = stats.sent_bytes;
    report.deltas_sent = stats.deltas;
    report.delta_bytes = stats.delta_raw_bytes;
    report.delta_frame_bytes = stats.delta_sent_bytes;
    report.applied = Some(applied);
    Ok(report)
}

/// The pump's jobs for asked-for chunks (each with the receiver's signature
/// when it asked for a delta): their lengths from the offer, where they lie
/// from the index.
async fn jobs(
    o: &Arc<Offer>,
    lens: &HashMap<Hash, u32>,
    asked: Vec<(Hash, Option<Box<Signature>>)>,
) -> Result<Vec<Job>, SyncError> {
    let mut jobs = Vec::with_capacity(asked.len());
    let mut hashes = Vec::with_capacity(asked.len());
    for (hash, signature) in asked {
        let Some(&len) = lens.get(&hash) else {
            return Err(SyncError::protocol(
                "the receiver asked for a chunk that was not offered",
            ));
        };
        hashes.push(hash);
        jobs.push(Job {
            hash,
            len,
            at: None,
            signature,
        });
    }
    let (index, set) = (o.index.clone(), o.set.clone());
    let found = super::blocking(move || index.locate_chunks(&set, &hashes)).await?;
    for (j, at) in jobs.iter_mut().zip(found) {
        j.at = at;
    }
    Ok(jobs)
}

/// A dry run's answer: the receiver names what it would change and delete,
/// then its totals.
async fn dry_run_answer(ctl: &mut Control, mut report: SendReport) -> Result<SendReport, SyncError> {
    let mut asm = hamirror_wire::EntryAssembler::new();
    let bad = |e: hamirror_wire::DecodeError| SyncError::protocol(format!("dry-run listing: {e}"));
    loop {
        match ctl.next().await? {
            Message::Entries(es) => report
                .would_change
                .extend(asm.entries(es).map_err(bad)?.into_iter().map(|e| (e.kind, e.path))),
            Message::FileHead(h) => asm.head(h).map_err(bad)?,
            Message::ChunkList(l) => {
                if let Some(e) = asm.chunk_list(l).map_err(bad)? {
                    report.would_change.push((e.kind, e.path));
                }
            }
            Message::Deletes(ps) => report.would_delete.extend(ps),
            Message::NeedEnd(n) => report.need = Some(n),
            Message::Applied(a) => {
                report.applied = Some(a);
                return Ok(report);
            }
            other => {
                return Err(SyncError::protocol(format!(
                    "unexpected {} in a dry run",
                    other.msg_type().name()
                )));
            }
        }
    }
}
