//! The receiver half of a conversation: take in the offer, bring the
//! replica's index up to date when the offer is a full listing (or an
//! earlier run was interrupted), refuse a mass delete, plan, ask for the
//! missing chunks (as deltas against the old version where the replica has
//! one), build the files, commit what was applied together with the
//! acknowledgement, and report. Used by `serve` for a push and, with
//! roles swapped, by the opener of a pull.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use hamirror_wire::EntryKind;
use hamirror_wire::{
    Applied, Counts, DeltaRequest, Entry, EntryAssembler, EntryBatcher, ErrorCode, Failure, Failures, Hash, Listing,
    Message, NeedEnd, OfferEnd, Position, msg::MAX_BATCH_HASHES,
};
use rayon::prelude::*;

use super::SyncError;
use super::chunks::{Inbox, Incoming};
use super::conflict::{self, ConflictPolicy};
use super::control::Control;
use super::limits::{OfferBudget, OfferTally, check_space};
use crate::apply::retired::Retired;
use crate::apply::{Applier, ApplyError, Dest, Journal};
use crate::config::MirrorSet;
use crate::index::{Fingerprint, Index, Upsert};
use crate::plan::{self, Location, Plan, Replica};
use crate::scan::{Quiet, ScanOptions, scan_set};
use crate::transport::compress::received;

/// What the receiver works on.
pub(crate) struct Target {
    pub index: Arc<Index>,
    /// The set, with the chunk parameters the sender uses.
    pub set: MirrorSet,
    /// This node's root: set paths are written under it.
    pub root: PathBuf,
    /// Where journals of temp files live (`<state>/journal`).
    pub journal_dir: PathBuf,
    /// The sender's position being offered.
    pub offered: Position,
    /// Our acknowledgement as sent in `HelloOk`.
    pub acked: Option<Position>,
    pub force: bool,
    pub dry_run: bool,
    /// What to do with this node's own changes the sender lacks.
    pub conflicts: ConflictPolicy,
    /// Told how much chunk data is needed and how much arrived.
    pub progress: Option<Arc<dyn super::Progress>>,
    /// Asked again, once the offer is read and right before each batch of
    /// files is installed, whether the sender may still write here (it still holds
    /// the group): a conversation can outlive a change of holder.
    pub recheck: Option<Recheck>,
}

/// See [`Target::recheck`].
pub(crate) type Recheck = Arc<dyn Fn() -> Result<(), SyncError> + Send + Sync>;

/// What the receiver half did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ReceiveReport {
    pub listing: &'static str,
    pub offered: u64,
    pub unchanged: u64,
    pub applied: u64,
    pub deleted: u64,
    pub chunks_received: u64,
    /// Of those, the chunks that came as deltas.
    pub deltas_received: u64,
    pub bytes_received: u64,
    pub chunks_reused: u64,
    pub failures: u64,
    /// Extended attributes the replica's filesystem refused (the entries
    /// are applied without them).
    pub warnings: u64,
    /// The sender's position is now acknowledged.
    pub complete: bool,
    /// Files that could not be applied: (path, reason), the first ones.
    #[serde(skip)]
    pub failed: Vec<(Vec<u8>, String)>,
    /// The first warnings: (path, reason naming the attribute).
    #[serde(skip)]
    pub warned: Vec<(Vec<u8>, String)>,
    /// Dry run: what would be created or changed, and deleted, and the
    /// chunk data that would be needed.
    #[serde(skip)]
    pub would_change: Vec<(hamirror_wire::EntryKind, Vec<u8>)>,
    #[serde(skip)]
    pub would_delete: Vec<Vec<u8>>,
    #[serde(skip)]
    pub would_need: Option<NeedEnd>,
    /// Pull: the files kept as conflict copies (original set paths), or in
    /// a dry run the files that would be.
    /// (original, conflict copy) pairs.
    #[serde(skip)]
    pub conflicts_made: Vec<(Vec<u8>, Vec<u8>)>,
    #[serde(skip)]
    pub would_conflict: Vec<Vec<u8>>,
}

/// The replica as the planner sees it: entries and chunk locations read
/// from the index before each window is planned, so planning does no I/O.
/// The chunks are looked up per window: those of the files earlier
/// windows installed (and committed) are found there, not asked for again.
struct View {
    entries: HashMap<Vec<u8>, Entry>,
    chunks: HashMap<Hash, Location>,
}

impl View {
    /// Looks up in the index where the replica holds the chunks of
    /// `offered` (those it holds nowhere are left out).
    fn find_chunks(&mut self, index: &Index, set: &str, offered: &[Entry]) -> Result<(), SyncError> {
        let wanted: Vec<Hash> = offered
            .iter()
            .flat_map(|e| e.chunks.iter().map(|c| c.hash))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let found = index.locate_chunks(set, &wanted)?;
        self.chunks = wanted
            .into_iter()
            .zip(found)
            .filter_map(|(h, at)| {
                at.map(|at| {
                    (
                        h,
                        Location {
                            path: at.path,
                            offset: at.offset,
                        },
                    )
                })
            })
            .collect();
        Ok(())
    }
}

fn empty_view() -> View {
    View {
        entries: HashMap::new(),
        chunks: HashMap::new(),
    }
}

impl Replica for View {
    fn current(&self, path: &[u8]) -> Option<Entry> {
        self.entries.get(path).cloned()
    }
    fn locate(&self, hash: &Hash) -> Option<Location> {
        self.chunks.get(hash).cloned()
    }
}

/// Reads the offer up to `OfferEnd`. `None`: the sender said goodbye
/// instead (nothing to offer).
/// Refuses the offer as soon as what arrived passes this node's memory
/// budget (`limits`), before planning anything.
async fn read_offer(ctl: &mut Control) -> Result<Option<(Vec<Entry>, Vec<Vec<u8>>, OfferEnd)>, SyncError> {
    let mut asm = EntryAssembler::new();
    let mut tally = OfferTally::new(OfferBudget::of_process());
    let bad = |e: hamirror_wire::DecodeError| SyncError::protocol(format!("offer: {e}"));
    let (mut entries, mut deletes) = (Vec::new(), Vec::new());
    loop {
        match ctl.next().await? {
            Message::Entries(es) => {
                tally.entries(&es)?;
                entries.extend(asm.entries(es).map_err(bad)?);
            }
            Message::FileHead(h) => {
                tally.head(&h)?;
                asm.head(h).map_err(bad)?;
            }
            // Counted with its head.
            Message::ChunkList(l) => entries.extend(asm.chunk_list(l).map_err(bad)?),
            Message::Deletes(d) => {
                tally.deletes(&d)?;
                deletes.extend(asm.deletes(d).map_err(bad)?);
            }
            Message::OfferEnd(end) => {
                let announced = Counts {
                    entries: end.entries,
                    deletes: end.deletes,
                    bytes: end.bytes,
                };
                asm.finish(announced).map_err(bad)?;
                return Ok(Some((entries, deletes, end)));
            }
            Message::Goodbye(_) => return Ok(None),
            other => {
                return Err(SyncError::protocol(format!(
                    "unexpected {} in an offer",
                    other.msg_type().name()
                )));
            }
        }
    }
}

/// Files planned and applied together at most: an offer of more is
/// planned a window at a time, so the receiver's memory follows the files
/// in flight, not the size of the offer (issue 17: 64 MiB for 50,000
/// files). Two windows are in flight (the sender always has one asked
/// for), and complete files are installed (renamed into place after one
/// `syncfs`) and committed to the index [`INSTALL_WINDOWS`] windows'
/// worth at a time.
const WINDOW_FILES: usize = 1024;
/// A window closes earlier at this many chunk references (a window of
/// large files).
const WINDOW_CHUNKS: usize = 16 * 1024;
/// Complete files are installed and committed this many windows' worth
/// at a time.
const INSTALL_WINDOWS: usize = 4;
/// Overrides [`WINDOW_FILES`] (tests make windows of a few files).
pub const WINDOW_ENV: &str = "HAMIRROR_APPLY_WINDOW";

/// The files of a window: [`WINDOW_ENV`], else [`WINDOW_FILES`].
fn window_files() -> usize {
    std::env::var(WINDOW_ENV)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(WINDOW_FILES)
}

/// Counts the files of a window as they are taken, in offer order: a
/// window closes at [`WINDOW_FILES`] files or [`WINDOW_CHUNKS`] chunk
/// references, and holds at least one file however large.
struct Window {
    max_files: usize,
    files: usize,
    chunks: usize,
    closed: bool,
}

impl Window {
    fn new(max_files: usize) -> Window {
        Window {
            max_files,
            files: 0,
            chunks: 0,
            closed: false,
        }
    }

    fn takes(&mut self, e: &Entry) -> bool {
        let fits = self.files < self.max_files && self.chunks + e.chunks.len() <= WINDOW_CHUNKS;
        self.closed |= self.files > 0 && !fits;
        if self.closed {
            return false;
        }
        self.files += 1;
        self.chunks += e.chunks.len();
        true
    }
}

/// Plans the next window of `rest` (files only) against `view`.
fn plan_window(
    t: &Target,
    rest: &mut std::collections::VecDeque<Entry>,
    view: &mut View,
    max_files: usize,
) -> Result<Plan, SyncError> {
    let mut window = Window::new(max_files);
    let mut n = 0;
    while n < rest.len() && window.takes(&rest[n]) {
        n += 1;
    }
    let files: Vec<Entry> = rest.drain(..n).collect();
    view.find_chunks(&t.index, &t.set.name, &files)?;
    let mut p = plan::plan(&files, &[], view, &HashMap::new());
    view.chunks = HashMap::new();
    // Only dry runs list them.
    p.items = Vec::new();
    Ok(p)
}

/// Everything decided before any chunk moves.
struct Prepared {
    /// The first window's plan: every entry but files, the deletions, and
    /// the first files (in a dry run the whole offer's plan).
    plan: Plan,
    /// Offered files planned later, a window at a time, in offer order.
    rest: std::collections::VecDeque<Entry>,
    /// What the later windows are planned against.
    view: View,
    /// Changed entries, for a dry run's listing (empty otherwise: a copy
    /// of every offered entry is memory a real run has no use for).
    changed: Vec<Entry>,
    /// Offered entries refused without trying (a conflict delivery that
    /// would overwrite), reported as failures.
    refused: Vec<(Vec<u8>, String)>,
    /// Files of ours kept (or, in a dry run, to be kept) as conflict
    /// copies: (original, copy; empty in a dry run).
    kept: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Index refresh, replica view, mass-delete guard and plan (blocking).
fn prepare(
    t: &Target,
    mut offered: Vec<Entry>,
    mut deletes: Vec<Vec<u8>>,
    end: &OfferEnd,
) -> Result<Prepared, SyncError> {
    let journal = Journal::open(&t.journal_dir.join(&t.set.name)).map_err(|e| ApplyError::Io {
        path: t.journal_dir.display().to_string(),
        source: e,
    })?;
    let mut full = end.listing == Listing::Full;
    // A full listing is compared with what is really on disk, and so is any
    // offer after an interrupted run (files it renamed into place are not in
    // the index yet; a stat pass finds them and their chunks are reused).
    if full || !journal.is_empty() {
        let report = scan_set(&t.index, &t.set, &t.root, &ScanOptions::default(), &Quiet)?;
        if !report.errors.is_empty() {
            tracing::warn!(set = %t.set.name, "replica scan: {} paths could not be read", report.errors.len());
        }
        // A push receiver had no changes of its own (serve checked before
        // the offer): what this scan found are leftovers of an interrupted
        // apply or stray edits the sender's version replaces, not writes
        // to keep — so they never make this node look diverged later.
        let found = report.generation != report.previous_generation;
        if found && matches!(t.conflicts, ConflictPolicy::Overwrite) && !t.dry_run {
            t.index.mark_synced(&t.set.name, report.generation)?;
        }
    }
    let (mut refused, mut kept) = (Vec::new(), Vec::new());
    match &t.conflicts {
        ConflictPolicy::Accept => {
            let (ok, no) = conflict::accept(&t.index, &t.set, &t.root, offered, &deletes)?;
            (offered, refused, full) = (ok, no, false);
            deletes.clear();
        }
        ConflictPolicy::Keep(c) => kept = c.keep(&t.index, &t.set, &t.root, &offered, t.dry_run)?,
        ConflictPolicy::Overwrite | ConflictPolicy::DiscardMine => {}
    }
    let mut entries = HashMap::new();
    let mut deletes = if full {
        let listed: HashSet<&[u8]> = offered.iter().map(|e| e.path.as_slice()).collect();
        let mut gone = Vec::new();
        for e in t.index.entries(&t.set.name)? {
            let e = e?;
            let protected = matches!(&t.conflicts, ConflictPolicy::Keep(c) if c.protects(&e.path));
            if !listed.contains(e.path.as_slice()) && !protected {
                gone.push(e.path.clone());
            }
            entries.insert(e.path.clone(), e);
        }
        gone
    } else {
        for p in offered.iter().map(|e| &e.path).chain(&deletes) {
            if let Some(e) = t.index.entry(&t.set.name, p)? {
                entries.insert(p.clone(), e);
            }
        }
        deletes
    };
    // What this node's rules exclude is neither written nor deleted here,
    // whatever the sender's copy of the configuration says; and it does
    // not count toward the mass-delete guard.
    let mut protected = super::excluded::protect(&t.set, &t.root, &entries, &mut offered, &mut deletes);
    refused.append(&mut protected.in_the_way);
    if !protected.deletes.is_empty() || !protected.offered.is_empty() {
        tracing::info!(
            set = %t.set.name,
            deletes = protected.deletes.len(),
            offered = protected.offered.len(),
            "excluded here: kept as they are on the replica"
        );
    }
    if !protected.forget.is_empty() && !t.dry_run {
        t.index.commit_forgetting(&t.set.name, &[], &[], &protected.forget)?;
        for p in &protected.forget {
            entries.remove(p);
        }
    }
    if !t.force && !matches!(t.conflicts, ConflictPolicy::Accept) {
        // Only what the replica holds counts: a delta lists every path
        // deleted since the acknowledged generation, and under churn most
        // of those were created and deleted again before ever arriving here.
        // Nor does a file whose content lives on in a conflict copy made
        // just now (a split brain's new files, pulled back): nothing is lost.
        let preserved: HashSet<&[u8]> = kept.iter().map(|(p, _)| p.as_slice()).collect();
        let held: Vec<Vec<u8>> = deletes
            .iter()
            .filter(|d| entries.contains_key(*d) && !preserved.contains(d.as_slice()))
            .cloned()
            .collect();
        guard_mass_delete(t, &held, &offered, &entries, &end.empty_roots)?;
    } else if t.force && !t.dry_run {
        // An operator let this pass through: the guard counts afresh.
        t.index.put_guard_record(&t.set.name, None)?;
    }
    if t.set.xattrs.is_none() {
        // No attribute is mirrored (or the sender cannot send them): the
        // replica keeps its own, and so does its index.
        for e in &mut offered {
            if let Some(cur) = entries.get(&e.path).filter(|c| c.kind == e.kind) {
                e.xattrs.clone_from(&cur.xattrs);
            }
        }
    }
    let mut view = View {
        entries,
        chunks: HashMap::new(),
    };
    let dest = Dest::new(&t.root, &t.set);
    // Windows are planned apart: what one cannot see of another (a file
    // below another window's symlink) is refused for the whole offer here.
    crate::apply::check_offer(&dest, &offered, &deletes)?;
    // Before the applier makes a single temp file: an offer that cannot fit
    // is refused whole rather than failing half-way (the applier still
    // stops cleanly if the space goes meanwhile).
    let building = offered
        .iter()
        .filter(|e| plan::builds_file(e, view.entries.get(&e.path)))
        .map(|e| (e.path.as_slice(), e.size));
    let resumed: Vec<std::path::PathBuf> = journal.leftovers(&dest).iter().map(|p| dest.local(p)).collect();
    check_space(&t.root, &t.set, building, &resumed)?;
    // The first window: every entry but files (directories first, links
    // and deletions applied last), and the first files; the other files
    // wait. A dry run plans everything at once.
    let mut rest = std::collections::VecDeque::new();
    if !t.dry_run {
        let mut window = Window::new(window_files());
        let (first, later): (Vec<Entry>, Vec<Entry>) = offered
            .into_iter()
            .partition(|e| e.kind != EntryKind::File || window.takes(e));
        offered = first;
        rest = later.into();
    }
    view.find_chunks(&t.index, &t.set.name, &offered)?;
    let plan = plan::plan(&offered, &deletes, &view, &HashMap::new());
    view.chunks = HashMap::new();
    let mut changed = Vec::new();
    if t.dry_run {
        let changed_paths: HashSet<&[u8]> = plan.items.iter().map(|(_, _, p)| p.as_slice()).collect();
        changed = offered
            .into_iter()
            .filter(|e| changed_paths.contains(e.path.as_slice()))
            .collect();
    }
    Ok(Prepared {
        plan,
        rest,
        view,
        changed,
        refused,
        kept,
    })
}

/// Refuses an offer that would empty a root the replica holds data under,
/// or make the entries really lost (not renamed or moved: see
/// [`plan::really_lost`]) since the guard's count started exceed the set's
/// `delete_limit` of the replica (see [`plan::GuardCount`]); otherwise
/// records the new count (not in a dry run).
fn guard_mass_delete(
    t: &Target,
    deletes: &[Vec<u8>],
    offered: &[Entry],
    held: &HashMap<Vec<u8>, Entry>,
    empty_roots: &[Vec<u8>],
) -> Result<(), SyncError> {
    let let_through = format!(
        "if that is intended, run `hamirror sync {0} --force` on the holder, or `hamirror allow-deletes {0}` on \
         the replica's node (the daemon's way; for a pull: `hamirror resync {0} --force`)",
        t.set.name
    );
    let deleted: Vec<Entry> = deletes.iter().filter_map(|d| held.get(d).cloned()).collect();
    if deleted.is_empty() {
        // Nothing to lose: no reading or writing of the count (a pass
        // without deletions costs what it did).
        return Ok(());
    }
    let is_new = |p: &[u8]| !held.contains_key(p);
    let info = t.index.info(&t.set.name)?;
    let prev = t
        .index
        .guard_record(&t.set.name)?
        .and_then(|r| plan::GuardCount::decode(&r));
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (count, allowed) = plan::GuardCount::current(prev, info.entries, info.generation, now_s);
    // An operator allowed this pass: neither check applies.
    for root in empty_roots.iter().filter(|_| !allowed) {
        let mut under = root.clone();
        under.push(b'/');
        // All moved elsewhere in the set is no loss; an unmounted disk is,
        // and so is a single-file root that vanished (most likely a mistake).
        let below: Vec<Entry> = deleted
            .iter()
            .filter(|d| d.path.starts_with(&under) || d.path == *root)
            .cloned()
            .collect();
        let n = plan::really_lost(&below, offered, is_new);
        if n > 0 {
            return Err(SyncError::local(
                ErrorCode::MassDelete,
                format!(
                    "/{} is missing or empty on the sender but holds {n} entries here (an unmounted disk? a \
                     file removed by mistake?); nothing was deleted — mount or restore it; {let_through}",
                    String::from_utf8_lossy(root)
                ),
            ));
        }
    }
    let count = if allowed {
        tracing::warn!(set = %t.set.name, "an operator allowed this pass through the mass-delete guard");
        // The count starts from what is left after it.
        plan::GuardCount {
            base: info.entries.saturating_sub(deleted.len() as u64),
            ..count
        }
    } else {
        // What was written here after the count started and goes again is
        // churn, not a loss of what the replica held (unknown: all counts).
        let since = if count.since_gen < info.generation {
            t.index.changes_since(&t.set.name, count.since_gen)?
        } else {
            None
        };
        let churn: HashSet<&[u8]> = since.iter().flatten().map(Vec::as_slice).collect();
        let counted: Vec<Entry> = deleted
            .into_iter()
            .filter(|d| !churn.contains(d.path.as_slice()))
            .collect();
        let lost = plan::really_lost(&counted, offered, is_new) as u64;
        count.add(lost, info.entries, t.set.delete_limit).map_err(|r| {
            SyncError::local(
                ErrorCode::MassDelete,
                format!(
                    "the offer would lose {lost} entries of {} ({} deleted paths; renames and moves are not \
                     counted); with the {} lost since the guard's count started that is more than its delete \
                     limit of {}% of the {} entries here; nothing was deleted — {let_through}",
                    t.set.name,
                    deletes.len(),
                    r.lost_before,
                    t.set.delete_limit,
                    r.of
                ),
            )
        })?
    };
    if !t.dry_run && Some(count) != prev {
        t.index.put_guard_record(&t.set.name, Some(&count.encode()))?;
    }
    Ok(())
}

/// Target size of a `NeedDelta` message: the sender starts on the first
/// deltas while the next signatures are on the way.
const DELTA_BATCH_BYTES: usize = 256 << 10;

/// Sends batches of hashes as `Need` messages, and delta requests as
/// `NeedDelta` messages of about [`DELTA_BATCH_BYTES`].
async fn send_needs(ctl: &mut Control, need: &[Hash], deltas: Vec<DeltaRequest>) -> Result<(), SyncError> {
    for part in need.chunks(MAX_BATCH_HASHES as usize) {
        ctl.send(&Message::Need(part.to_vec())).await?;
    }
    let mut batch = Vec::new();
    let mut size = 0;
    for r in deltas {
        size += 48 + r.signature.blocks.len() * (4 + hamirror_wire::msg::STRONG_LEN);
        batch.push(r);
        if size >= DELTA_BATCH_BYTES || batch.len() as u64 >= hamirror_wire::msg::MAX_BATCH_DELTAS {
            ctl.send(&Message::NeedDelta(std::mem::take(&mut batch))).await?;
            size = 0;
        }
    }
    if !batch.is_empty() {
        ctl.send(&Message::NeedDelta(batch)).await?;
    }
    Ok(())
}

/// A dry run: name what would change and be deleted, with the totals.
async fn answer_dry_run(ctl: &mut Control, t: &Target, p: Prepared) -> Result<ReceiveReport, SyncError> {
    let mut batcher = EntryBatcher::new();
    let would_conflict = p.kept.into_iter().map(|(orig, _)| orig).collect();
    let would_change = p.changed.iter().map(|e| (e.kind, e.path.clone())).collect();
    for e in p.changed {
        for m in batcher.entry(e) {
            ctl.send(&m).await?;
        }
    }
    for d in &p.plan.deletes {
        if let Some(m) = batcher.delete(d.clone()) {
            ctl.send(&m).await?;
        }
    }
    for m in batcher.flush() {
        ctl.send(&m).await?;
    }
    let plan = &p.plan;
    let need = NeedEnd {
        chunks: plan.need.len() as u64,
        bytes: plan.need_bytes,
        reused: plan.reused_chunks,
    };
    ctl.send(&Message::NeedEnd(need)).await?;
    let applied = Applied {
        generation: t.offered.generation,
        complete: false,
        files: plan.items.len() as u64 - plan.deletes.len() as u64,
        bytes: plan.files.iter().map(|f| f.entry.size).sum(),
        chunks_received: 0,
        chunks_reused: plan.reused_chunks,
        deleted: plan.deletes.len() as u64,
        failures: Failures::default(),
        warnings: Failures::default(),
    };
    ctl.send(&Message::Applied(applied)).await?;
    Ok(ReceiveReport {
        listing: "dry-run",
        unchanged: plan.unchanged,
        would_change,
        would_delete: plan.deletes.clone(),
        would_need: Some(need),
        would_conflict,
        ..ReceiveReport::default()
    })
}

enum Event {
    Chunk(Option<Incoming>),
    Msg(Result<Message, SyncError>),
}

/// Runs the receiver half after the hellos.
pub(crate) async fn receive_half(ctl: &mut Control, chunks: &mut Inbox, t: Target) -> Result<ReceiveReport, SyncError> {
    let Some((offered, deletes, end)) = read_offer(ctl).await? else {
        return Ok(ReceiveReport {
            listing: "none",
            complete: true,
            ..ReceiveReport::default()
        });
    };
    if end.generation != t.offered.generation {
        return Err(SyncError::protocol("the offer's generation differs from the hello's"));
    }
    if let Some(recheck) = &t.recheck {
        recheck()?;
    }
    // A conflict delivery is judged by what it offers (conflict::accept).
    if let Listing::Delta { base } = end.listing
        && !matches!(t.conflicts, ConflictPolicy::Accept)
    {
        let ok = t
            .acked
            .is_some_and(|a| a.index == t.offered.index && a.generation == base);
        if !ok {
            return Err(SyncError::protocol(
                "a delta offer from a base this node did not acknowledge",
            ));
        }
    }
    let mut t = t;
    if ctl.version < 2 {
        // A version-1 sender sends no attributes: those on the replica stay.
        t.set.xattrs = crate::config::XattrNamespaces::NONE;
    }
    let t = Arc::new(t);
    let n_offered = offered.len() as u64;
    let listing = if end.listing == Listing::Full { "full" } else { "delta" };
    let prepared = {
        let t = t.clone();
        super::blocking(move || prepare(&t, offered, deletes, &end)).await?
    };
    if t.dry_run {
        return answer_dry_run(ctl, &t, prepared).await;
    }
    let mut report = ReceiveReport {
        listing,
        offered: n_offered,
        ..ReceiveReport::default()
    };
    let Prepared {
        plan,
        mut rest,
        mut view,
        refused,
        kept,
        ..
    } = prepared;
    report.conflicts_made = kept;
    let mut tally = Tally::default();
    tally.plan(&plan);
    let applier = {
        let t = t.clone();
        super::blocking(move || {
            let journal = Journal::open(&t.journal_dir.join(&t.set.name)).map_err(|e| ApplyError::Io {
                path: t.journal_dir.display().to_string(),
                source: e,
            })?;
            Applier::start(Dest::new(&t.root, &t.set), plan, journal)
        })
        .await?
    };
    let mut applier = ask(ctl, applier, &mut tally).await?;
    let mut end_sent = false;
    let window = window_files();
    let max_in_flight = 2 * window;
    let mut windows = 1u64;
    loop {
        // What is complete is installed and committed a batch at a time:
        // a complete file costs little to keep, each batch one `syncfs`
        // and one index commit (the rest when the last chunk is in).
        if applier.ready() >= INSTALL_WINDOWS * window {
            let t = t.clone();
            applier = super::blocking(move || install(&t, applier)).await?;
        }
        while !rest.is_empty() && applier.in_flight() - applier.ready() < max_in_flight {
            let (t2, mut v, mut taken) = (
                t.clone(),
                std::mem::replace(&mut view, empty_view()),
                std::mem::take(&mut rest),
            );
            let (planned, v, back) = super::blocking(move || {
                let p = plan_window(&t2, &mut taken, &mut v, window);
                (p, v, taken)
            })
            .await;
            (view, rest) = (v, back);
            // The offer's slots already planned are memory too (an entry
            // is ~160 bytes before its path and chunks): given back as the
            // offer drains, at most a copy of what is left each halving.
            if rest.capacity() > 2 * rest.len() + 2 * window {
                rest.shrink_to_fit();
            }
            let window = planned?;
            tally.plan(&window);
            windows += 1;
            applier = super::blocking(move || match applier.add(window) {
                Ok(()) => Ok(applier),
                Err(e) => Err(SyncError::from(e)),
            })
            .await?;
            applier = ask(ctl, applier, &mut tally).await?;
        }
        if rest.is_empty() && !end_sent {
            let need_bytes = tally.need_bytes;
            if let Some(p) = &t.progress {
                p.need(need_bytes);
            }
            ctl.send(&Message::NeedEnd(NeedEnd {
                chunks: tally.asked,
                bytes: need_bytes,
                reused: tally.reused,
            }))
            .await?;
            end_sent = true;
        }
        if rest.is_empty() && applier.complete() {
            break;
        }
        if applier.complete() {
            continue;
        }
        let ev = tokio::select! {
            c = chunks.recv() => Event::Chunk(c),
            m = ctl.next() => Event::Msg(m),
        };
        match ev {
            Event::Chunk(Some(first)) => {
                let mut batch = vec![first];
                while batch.len() < 32 {
                    match chunks.try_recv() {
                        Some(c) => batch.push(c),
                        None => break,
                    }
                }
                report.chunks_received += batch.len() as u64;
                report.deltas_received += batch.iter().filter(|c| matches!(c, Incoming::Delta(_))).count() as u64;
                let bytes = batch.iter().map(|c| u64::from(c.raw_len())).sum::<u64>();
                report.bytes_received += bytes;
                if let Some(p) = &t.progress {
                    p.sent(bytes);
                }
                applier = super::blocking(move || deliver(applier, batch)).await?;
            }
            Event::Chunk(None) => return Err(SyncError::protocol("the chunk streams ended early")),
            Event::Msg(Ok(Message::Unavailable(hashes))) => applier.give_up(&hashes),
            Event::Msg(Ok(other)) => {
                return Err(SyncError::protocol(format!(
                    "unexpected {} while receiving chunks",
                    other.msg_type().name()
                )));
            }
            Event::Msg(Err(e)) => return Err(e),
        }
    }
    report.unchanged = tally.unchanged;
    let reused = tally.reused;
    if windows > 1 {
        tracing::info!(set = %t.set.name, windows, files = window, "offer applied in windows of files");
    }
    let done = {
        let t = t.clone();
        super::blocking(move || finish(&t, applier, refused)).await?
    };
    let (mut applied_msg, failures, retired) = done;
    report.failed = applied_msg
        .failures
        .listed
        .iter()
        .map(|f| (f.path.clone(), f.reason.clone()))
        .collect();
    report.warnings = applied_msg.warnings.total;
    report.warned = applied_msg
        .warnings
        .listed
        .iter()
        .map(|f| (f.path.clone(), f.reason.clone()))
        .collect();
    applied_msg.chunks_received = report.chunks_received;
    applied_msg.chunks_reused = reused;
    report.applied = applied_msg.files;
    report.deleted = applied_msg.deleted;
    report.chunks_reused = applied_msg.chunks_reused;
    report.failures = failures;
    report.complete = applied_msg.complete;
    ctl.send(&Message::Applied(applied_msg)).await?;
    // Only now, with the sender answered: its pass does not wait for it.
    // Installed a window at a time, the rows were split in the middle of
    // directories: rewritten packed if that left them sparse.
    // The old versions it replaced and deleted are freed now, too.
    let (index, tidy) = (t.index.clone(), report.applied >= WINDOW_FILES as u64);
    super::blocking(move || {
        retired.release();
        if tidy {
            index.tidy();
        }
        index.compact_if_grown();
    })
    .await;
    Ok(report)
}

/// What the windows' plans and requests add up to, for `NeedEnd` and
/// the report.
#[derive(Default)]
struct Tally {
    asked: u64,
    need_bytes: u64,
    reused: u64,
    unchanged: u64,
}

impl Tally {
    fn plan(&mut self, p: &Plan) {
        self.reused += p.reused_chunks;
        self.unchanged += p.unchanged;
    }
}

/// Asks for what the window just added needs, as soon as known, so the
/// sender reads, compresses and computes deltas while this node works on
/// the next step: first the chunks the replica has no base for, then the
/// deltas (once the bases are signed) while the pieces the replica holds
/// are copied, then the pieces whose local source had changed.
async fn ask(ctl: &mut Control, mut applier: Applier, tally: &mut Tally) -> Result<Applier, SyncError> {
    let before = applier.need_bytes_added();
    let whole = applier.take_need_whole();
    tally.asked += whole.len() as u64;
    send_needs(ctl, &whole, Vec::new()).await?;
    drop(whole);
    let mut applier = super::blocking(move || {
        applier.sign();
        Ok::<_, SyncError>(applier)
    })
    .await?;
    let (need, deltas) = (applier.take_need(), applier.take_delta_requests());
    tally.asked += (need.len() + deltas.len()) as u64;
    send_needs(ctl, &need, deltas).await?;
    let mut applier = super::blocking(move || match applier.copy_held() {
        Ok(()) => Ok(applier),
        Err(e) => {
            applier.abort();
            Err(e)
        }
    })
    .await?;
    let need = applier.take_need();
    tally.asked += need.len() as u64;
    send_needs(ctl, &need, Vec::new()).await?;
    tally.need_bytes += applier.need_bytes_added() - before;
    Ok(applier)
}

/// Installs the complete files and commits them to the index, without
/// an acknowledgement (that comes with the last commit, in [`finish`]).
/// What they hold came from the sender: as for a partial apply, it must
/// not count as this node's own changes if the run stops here.
fn install(t: &Target, mut applier: Applier) -> Result<Applier, SyncError> {
    if let Some(recheck) = &t.recheck {
        // As before the last install (`finish`): nothing of a sender that
        // no longer holds the group is installed; the temp files stay.
        recheck()?;
    }
    if let Err(e) = applier.install_complete() {
        applier.abort();
        return Err(e.into());
    }
    let (applied, stats) = applier.take_applied();
    if applied.is_empty() {
        return Ok(applier);
    }
    let upserts = upserts(&Dest::new(&t.root, &t.set), applied, stats);
    let outcome = t.index.commit(&t.set.name, &upserts, &[])?;
    if matches!(t.conflicts, ConflictPolicy::Overwrite | ConflictPolicy::DiscardMine) {
        t.index.mark_synced(&t.set.name, outcome.generation)?;
    }
    Ok(applier)
}

/// Index rows for applied entries, each with its `lstat` (taken now where
/// the applier had none).
fn upserts(dest: &Dest, applied: Vec<Entry>, stats: Vec<Option<rustix::fs::Stat>>) -> Vec<Upsert> {
    applied
        .into_iter()
        .zip(stats)
        .map(|(entry, st)| Upsert {
            stat: st
                .or_else(|| dest.stat(&entry.path).ok())
                .map(|st| Fingerprint::of_stat(&st)),
            entry,
        })
        .collect()
}

/// Decompresses (bounded by the declared length), rebuilds deltas and
/// writes a batch.
fn deliver(mut applier: Applier, batch: Vec<Incoming>) -> Result<Applier, SyncError> {
    let corrupt = |e: crate::transport::CompressError| {
        SyncError::local(ErrorCode::HashMismatch, format!("chunk does not decompress: {e}"))
    };
    // The same steps as the `chunk` fuzz target (`crate::fuzzing`).
    let (mut whole, mut deltas) = (Vec::new(), Vec::new());
    for c in batch {
        match c {
            Incoming::Chunk(c) => whole.push(c),
            Incoming::Delta(d) => deltas.push(d),
        }
    }
    // Decompressed on the pool, then written by several writers at once.
    let raw = whole
        .into_par_iter()
        .map(|c| {
            let raw = received(c.compression, c.data, c.raw_len as usize).map_err(corrupt)?;
            Ok((c.hash, raw))
        })
        .collect::<Result<Vec<_>, SyncError>>()?;
    let chunks: Vec<(Hash, &[u8])> = raw.iter().map(|(h, d)| (*h, d.as_slice())).collect();
    applier.deliver_many(&chunks)?;
    drop(chunks);
    drop(raw);
    for d in deltas {
        // The wire decoder bounded the literal length by raw_len.
        let len = d.literal_len() as usize;
        let literals = received(d.compression, d.literals, len).map_err(corrupt)?;
        applier.deliver_delta(&d.hash, d.raw_len, &d.ops, &literals)?;
    }
    Ok(applier)
}

/// Finishes the build and commits what was applied with the new
/// acknowledgement (only when everything was applied). Hands back the old
/// versions it replaced and deleted, to be freed after the answer.
fn finish(t: &Target, applier: Applier, refused: Vec<(Vec<u8>, String)>) -> Result<(Applied, u64, Retired), SyncError> {
    if let Some(recheck) = &t.recheck {
        // Nothing is installed: the temp files go with the journal's clean-up.
        recheck()?;
    }
    let mut r = applier.finish()?;
    r.failures.extend(
        refused
            .into_iter()
            .map(|(path, reason)| crate::apply::Failure { path, reason }),
    );
    let dest = Dest::new(&t.root, &t.set);
    let files = r.applied_count;
    // The entries move into the upserts: no second copy of every entry.
    let mut upserts = upserts(
        &dest,
        std::mem::take(&mut r.applied),
        std::mem::take(&mut r.applied_stat),
    );
    // Directories an interrupted run had left with a wrong mtime (which
    // this run's replica scan recorded) have their true one back.
    for (path, mtime_ns) in &r.repaired_dirs {
        if let Some(e) = t.index.entry(&t.set.name, path)? {
            upserts.push(Upsert {
                entry: Entry {
                    mtime_ns: *mtime_ns,
                    ..e
                },
                stat: dest.stat(path).ok().map(|st| Fingerprint::of_stat(&st)),
            });
        }
    }
    let complete = r.failures.is_empty();
    // Conflict copies are not a position of the sender's: no acknowledgement.
    let acking = complete && !matches!(t.conflicts, ConflictPolicy::Accept);
    let ack = acking.then_some(crate::index::Position {
        index: t.offered.index,
        generation: t.offered.generation,
    });
    let outcome = t.index.commit_with_ack(&t.set.name, &upserts, &r.deleted, ack)?;
    // A partial apply is not acknowledged, but what it wrote came from the
    // sender: it must not count as this node's own changes (the sender was
    // let in only because there were none), or the next push would be
    // refused as diverged.
    if !acking && matches!(t.conflicts, ConflictPolicy::Overwrite | ConflictPolicy::DiscardMine) {
        t.index.mark_synced(&t.set.name, outcome.generation)?;
    }
    if let ConflictPolicy::Keep(c) = &t.conflicts {
        c.commit_made(&t.index, &t.set, &t.root)?;
    }
    let mut failures = Failures::default();
    for f in &r.failures {
        failures.push(Failure::new(f.path.clone(), ErrorCode::Io, f.reason.clone()));
    }
    let mut warnings = Failures::default();
    for w in &r.warnings {
        warnings.push(Failure::new(w.path.clone(), ErrorCode::Unsupported, w.reason.clone()));
    }
    let applied = Applied {
        generation: t.offered.generation,
        complete,
        files,
        bytes: r.received_bytes + r.reused_bytes + r.resumed_bytes,
        chunks_received: 0,
        chunks_reused: 0,
        deleted: r.deleted.len() as u64,
        failures,
        warnings,
    };
    Ok((applied, r.failures.len() as u64, std::mem::take(&mut r.retired)))
}
