//! The receiver's plan for one offer: given the entries a sender offers, the
//! replica's current entries and where the receiver already holds chunks,
//! decide what to create, rebuild, retouch, link and delete, and which chunk
//! hashes to ask for — and, for a chunk of a file the replica holds an older
//! version of, which old bytes to offer the sender as a base for a delta
//! (`delta::base`). Pure: no I/O, no clock, no tokio — the caller supplies
//! lookups and `apply` carries the plan out. `--dry-run` prints it.

use std::collections::{HashMap, HashSet};

use hamirror_wire::{Entry, EntryKind, Hash, msg::MAX_BASE};

use crate::delta::base;

/// Chunks shorter than this are asked for whole: their delta would save
/// less than its request costs.
pub const MIN_DELTA_CHUNK: u32 = 256;

/// Most old bytes one plan uses as bases. The receiver reads and signs them
/// all before asking for anything, and keeps the signatures (~1.5 % of
/// them) until sent: a rewritten multi-GB file must not cost that much
/// time and memory. Beyond it, chunks are asked for whole.
pub const MAX_PLAN_BASES: u64 = 512 << 20;

/// Where the receiver already holds a chunk: a replica file and an offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: Vec<u8>,
    pub offset: u64,
}

/// What the planner needs to know about the receiver's side.
pub trait Replica {
    /// The entry the replica holds now at `path`, as its index records it.
    fn current(&self, path: &[u8]) -> Option<Entry>;
    /// A trustworthy local copy of chunk `hash`, if any.
    fn locate(&self, hash: &Hash) -> Option<Location>;
}

/// One chunk-sized piece of a file to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Offset in the new file.
    pub offset: u64,
    pub len: u32,
    pub hash: Hash,
    /// `Some` when the data is copied from the replica, `None` when it comes
    /// from the sender.
    pub local: Option<Location>,
}

/// Old bytes of a replica file to offer as the base of a delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    pub path: Vec<u8>,
    pub offset: u64,
    pub len: u32,
}

/// A regular file to (re)build in a temporary file and rename into place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileBuild {
    pub entry: Entry,
    pub pieces: Vec<Piece>,
}

/// What kind of change an entry is, for the itemized dry-run listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Create,
    Content,
    Metadata,
    Delete,
}

/// Everything an offer asks of the receiver, in the order `apply` performs it.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    /// Directories to create (parents first); their metadata is set last.
    pub dirs: Vec<Entry>,
    pub files: Vec<FileBuild>,
    /// Files whose content is already right: only mode, owner or mtime change.
    pub retouch: Vec<Entry>,
    pub symlinks: Vec<Entry>,
    pub hardlinks: Vec<Entry>,
    /// FIFOs and device nodes to create (`mknod`) in place of what the
    /// replica has.
    pub specials: Vec<Entry>,
    /// Paths to remove (children before parents).
    pub deletes: Vec<Vec<u8>>,
    /// Chunk hashes to ask the sender for, each once, in first-use order.
    pub need: Vec<Hash>,
    /// Bytes of the chunks in `need`.
    pub need_bytes: u64,
    /// For needed chunks of files the replica holds an older version of:
    /// the old bytes to ask for a delta against.
    pub bases: HashMap<Hash, Base>,
    /// The sum of the bases' lengths.
    pub base_bytes: u64,
    /// Offered entries that already match the replica.
    pub unchanged: u64,
    /// Chunks copied from the replica instead of sent.
    pub reused_chunks: u64,
    pub reused_bytes: u64,
    /// One line per change, for `--dry-run` and logs.
    pub items: Vec<(Change, EntryKind, Vec<u8>)>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
            && self.files.is_empty()
            && self.retouch.is_empty()
            && self.symlinks.is_empty()
            && self.hardlinks.is_empty()
            && self.specials.is_empty()
            && self.deletes.is_empty()
    }
}

fn same_meta(a: &Entry, b: &Entry) -> bool {
    a.mode == b.mode && a.uid == b.uid && a.gid == b.gid && a.mtime_ns == b.mtime_ns && a.xattrs == b.xattrs
}

/// Whether offered entry `e` is a file whose content the replica's entry
/// at its path (`cur`) does not have, so that it is built anew.
pub fn builds_file(e: &Entry, cur: Option<&Entry>) -> bool {
    e.kind == EntryKind::File
        && !cur.is_some_and(|c| c.kind == EntryKind::File && c.file_hash == e.file_hash && c.size == e.size)
}

/// Builds the plan for `offered` entries and `deleted` paths.
///
/// `held` lists chunks the receiver holds outside its index (e.g. in
/// temporary files left by an interrupted run); they count as local.
pub fn plan(offered: &[Entry], deleted: &[Vec<u8>], replica: &dyn Replica, held: &HashMap<Hash, Location>) -> Plan {
    let mut p = Plan::default();
    let mut asked: HashSet<Hash> = HashSet::new();
    for e in offered {
        let cur = replica.current(&e.path);
        let same_kind = cur.as_ref().is_some_and(|c| c.kind == e.kind);
        let change = if same_kind { Change::Content } else { Change::Create };
        match e.kind {
            EntryKind::Dir => {
                if same_kind && cur.as_ref().is_some_and(|c| same_meta(c, e)) {
                    p.unchanged += 1;
                } else {
                    p.items.push((
                        if same_kind { Change::Metadata } else { Change::Create },
                        e.kind,
                        e.path.clone(),
                    ));
                    p.dirs.push(e.clone());
                }
            }
            EntryKind::File => {
                let content_same = !builds_file(e, cur.as_ref());
                if content_same {
                    if cur.as_ref().is_some_and(|c| same_meta(c, e)) {
                        p.unchanged += 1;
                    } else {
                        p.items.push((Change::Metadata, e.kind, e.path.clone()));
                        p.retouch.push(e.clone());
                    }
                    continue;
                }
                p.items.push((change, e.kind, e.path.clone()));
                let mut pieces = Vec::with_capacity(e.chunks.len());
                let mut offset = 0u64;
                let mut fresh = Vec::new();
                for (k, c) in e.chunks.iter().enumerate() {
                    let local = held.get(&c.hash).cloned().or_else(|| replica.locate(&c.hash));
                    if local.is_some() {
                        p.reused_chunks += 1;
                        p.reused_bytes += u64::from(c.len);
                    } else if asked.insert(c.hash) {
                        p.need.push(c.hash);
                        p.need_bytes += u64::from(c.len);
                        fresh.push(k);
                    }
                    pieces.push(Piece {
                        offset,
                        len: c.len,
                        hash: c.hash,
                        local,
                    });
                    offset += u64::from(c.len);
                }
                if let Some(old) = cur.as_ref().filter(|c| c.kind == EntryKind::File && !fresh.is_empty()) {
                    plan_bases(&mut p, old, e, &fresh);
                }
                p.files.push(FileBuild {
                    entry: e.clone(),
                    pieces,
                });
            }
            // No data: the kind, the target (a device's number) and the
            // metadata are the whole entry. A FIFO or device node whose mode
            // or owner changed is made anew rather than retouched: that is
            // as cheap, and never opens it.
            EntryKind::Symlink | EntryKind::HardLink | EntryKind::Fifo | EntryKind::CharDev | EntryKind::BlockDev => {
                let same = same_kind && cur.as_ref().is_some_and(|c| c.target == e.target && same_meta(c, e));
                if same {
                    p.unchanged += 1;
                    continue;
                }
                p.items.push((change, e.kind, e.path.clone()));
                match e.kind {
                    EntryKind::Symlink => p.symlinks.push(e.clone()),
                    EntryKind::HardLink => p.hardlinks.push(e.clone()),
                    _ => p.specials.push(e.clone()),
                }
            }
        }
    }
    // A rebuilt file is a new inode: every offered further name of it must be
    // linked again even if the link entry itself did not change.
    let rebuilt: HashSet<&[u8]> = p.files.iter().map(|f| f.entry.path.as_slice()).collect();
    let relink: Vec<Entry> = offered
        .iter()
        .filter(|e| e.kind == EntryKind::HardLink && rebuilt.contains(e.target.as_slice()))
        .filter(|e| !p.hardlinks.iter().any(|h| h.path == e.path))
        .cloned()
        .collect();
    for e in relink {
        p.unchanged -= 1;
        p.items.push((Change::Content, e.kind, e.path.clone()));
        p.hardlinks.push(e);
    }
    // Parents before children for creation; children before parents for removal.
    p.dirs.sort_by(|a, b| a.path.cmp(&b.path));
    let mut deletes: Vec<Vec<u8>> = deleted
        .iter()
        .filter(|d| replica.current(d).is_some())
        .cloned()
        .collect();
    deletes.sort_by(|a, b| b.cmp(a));
    for d in &deletes {
        let kind = replica.current(d).map_or(EntryKind::File, |c| c.kind);
        p.items.push((Change::Delete, kind, d.clone()));
    }
    p.deletes = deletes;
    p
}

/// Bases for the chunks `fresh` (indices into `new.chunks`) of a file whose
/// replica holds `old` at the same path, while `p.base_bytes` stays within
/// [`MAX_PLAN_BASES`].
fn plan_bases(p: &mut Plan, old: &Entry, new: &Entry, fresh: &[usize]) {
    if p.base_bytes >= MAX_PLAN_BASES {
        return;
    }
    let windows = base::windows(&old.chunks, &new.chunks);
    for &k in fresh {
        let c = &new.chunks[k];
        let Some(w) = windows[k] else { continue };
        // Only with chunks of several MiB can a window pass the limit.
        let len = w.len.min(u64::from(MAX_BASE));
        if c.len < MIN_DELTA_CHUNK || len < u64::from(MIN_DELTA_CHUNK) || p.base_bytes + len > MAX_PLAN_BASES {
            continue;
        }
        p.base_bytes += len;
        p.bases.insert(
            c.hash,
            Base {
                path: old.path.clone(),
                offset: w.offset,
                len: len as u32,
            },
        );
    }
}

/// The mass-delete guard: refuse when more than `limit_percent` of the
/// replica's `replica_count` entries would be deleted (an unmounted disk on
/// the sender looks exactly like that).
pub fn too_many_deletes(deletes: usize, replica_count: usize, limit_percent: u8) -> bool {
    if deletes == 0 || replica_count == 0 {
        return false;
    }
    deletes * 100 > replica_count * usize::from(limit_percent)
}

/// Of the replica entries an offer deletes (`deleted`, as the replica holds
/// them), how many are really lost: a rename or a move shows as deletions
/// plus new entries with the same content, and loses nothing. A file (with
/// data) or a symlink is lost unless an offered entry has the same content
/// (file hash) or target; a further name of a hard link never is (its data
/// is counted with the first name); directories, empty files, FIFOs and
/// device nodes carry no content, so each new one in the offer (`is_new`:
/// not held by the replica before) makes up for one deleted of its sort.
pub fn really_lost(deleted: &[Entry], offered: &[Entry], is_new: impl Fn(&[u8]) -> bool) -> usize {
    let mut content: HashSet<(bool, &[u8])> = HashSet::new();
    let (mut new_dirs, mut new_empty, mut new_specials) = (0usize, 0usize, 0usize);
    for e in offered {
        match e.kind {
            EntryKind::File if e.size > 0 => {
                content.insert((true, &e.file_hash));
            }
            EntryKind::File if is_new(&e.path) => new_empty += 1,
            EntryKind::Symlink => {
                content.insert((false, &e.target));
            }
            EntryKind::Dir if is_new(&e.path) => new_dirs += 1,
            k if k.is_special() && is_new(&e.path) => new_specials += 1,
            _ => {}
        }
    }
    let mut lost = 0;
    for d in deleted {
        let gone = match d.kind {
            EntryKind::File if d.size > 0 => !content.contains(&(true, &d.file_hash[..])),
            EntryKind::File => !made_up(&mut new_empty),
            EntryKind::Symlink => !content.contains(&(false, &d.target[..])),
            EntryKind::Dir => !made_up(&mut new_dirs),
            EntryKind::HardLink => false,
            EntryKind::Fifo | EntryKind::CharDev | EntryKind::BlockDev => !made_up(&mut new_specials),
        };
        lost += usize::from(gone);
    }
    lost
}

/// Takes one of `n` new entries without content to make up for a deleted one.
fn made_up(n: &mut usize) -> bool {
    let some = *n > 0;
    *n = n.saturating_sub(1);
    some
}

/// The guard's running count for one set on the replica: how much of the
/// replica as it was when the count started has been really lost since, so
/// that several passes each under the limit cannot together delete more
/// than it (45 % three times is 83 %). Entries written to the replica after
/// the count started (by generation of the replica's index) are not
/// counted when they go again: that is churn (a spool's jobs, scratch
/// files), not a loss of what the replica held. The count starts again
/// after a forced sync, after a pass an operator allowed (`allow`), and
/// once [`GUARD_WINDOW_S`] has passed since it started (a mistake such as
/// an `rm -rf` in the wrong place propagates within minutes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GuardCount {
    /// Replica entries when the count started.
    pub base: u64,
    /// Entries really lost since (see [`really_lost`]).
    pub lost: u64,
    /// When the count started, seconds since the epoch.
    pub since_s: u64,
    /// The replica index's generation when the count started.
    pub since_gen: u64,
    /// An operator allowed the next pass that deletes anything through
    /// (`hamirror allow-deletes` on the replica); it starts the count again.
    pub allow: bool,
}

/// How long a running count lasts before it starts again from zero.
pub const GUARD_WINDOW_S: u64 = 3600;

/// Why the guard refused: the cumulative loss and what it is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardRefusal {
    pub lost_now: u64,
    pub lost_before: u64,
    pub of: u64,
}

impl GuardCount {
    /// The count a pass at `now_s` adds to: `prev` while it runs, or a new
    /// one from the replica as it is now (`replica_now` entries, index
    /// generation `gen_now`); and whether an operator let this pass through.
    pub fn current(prev: Option<GuardCount>, replica_now: u64, gen_now: u64, now_s: u64) -> (GuardCount, bool) {
        let fresh = GuardCount {
            base: replica_now,
            lost: 0,
            since_s: now_s,
            since_gen: gen_now,
            allow: false,
        };
        match prev {
            Some(p) if p.allow => (fresh, true),
            Some(p) if now_s >= p.since_s && now_s - p.since_s < GUARD_WINDOW_S => (p, false),
            _ => (fresh, false),
        }
    }

    /// Adds `lost_now` entries (of a replica holding `replica_now` before
    /// this pass): the new count, or the refusal when the total would
    /// exceed `limit_percent` of the larger of the replica's size when the
    /// count started and now. A limit of 100 % turns the guard off.
    pub fn add(self, lost_now: u64, replica_now: u64, limit_percent: u8) -> Result<GuardCount, GuardRefusal> {
        if limit_percent >= 100 {
            return Ok(self);
        }
        let of = self.base.max(replica_now);
        let total = self.lost + lost_now;
        if lost_now > 0 && too_many_deletes(total as usize, of as usize, limit_percent) {
            return Err(GuardRefusal {
                lost_now,
                lost_before: self.lost,
                of,
            });
        }
        Ok(GuardCount { lost: total, ..self })
    }

    /// `prev` with the next pass allowed through.
    pub fn allowing(prev: Option<GuardCount>) -> GuardCount {
        GuardCount {
            allow: true,
            ..prev.unwrap_or_default()
        }
    }

    /// 33 bytes: base, lost, since, since_gen (little endian), allow.
    pub fn encode(&self) -> Vec<u8> {
        let mut v: Vec<u8> = [self.base, self.lost, self.since_s, self.since_gen]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        v.push(u8::from(self.allow));
        v
    }

    /// The inverse of [`GuardCount::encode`]; `None` for anything else.
    pub fn decode(b: &[u8]) -> Option<GuardCount> {
        if b.len() != 33 || b[32] > 1 {
            return None;
        }
        let v: Vec<u64> = b[..32]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        Some(GuardCount {
            base: v[0],
            lost: v[1],
            since_s: v[2],
            since_gen: v[3],
            allow: b[32] == 1,
        })
    }
}

/// One letter per kind, for itemized listings (`>f /path`); rsync's
/// where it has one (`D` device, `S` special file).
pub fn kind_letter(kind: EntryKind) -> char {
    match kind {
        EntryKind::File => 'f',
        EntryKind::Dir => 'd',
        EntryKind::Symlink => 'L',
        EntryKind::HardLink => 'h',
        EntryKind::Fifo => 'S',
        EntryKind::CharDev | EntryKind::BlockDev => 'D',
    }
}

/// rsync-style one-line item: `>f+++++ path`, `.f..tp. path`, `*deleting path`.
pub fn itemize(change: Change, kind: EntryKind, path: &[u8]) -> String {
    let k = kind_letter(kind);
    let p = String::from_utf8_lossy(path);
    match change {
        Change::Create => format!("+{k} {p}"),
        Change::Content => format!(">{k} {p}"),
        Change::Metadata => format!(".{k} {p}"),
        Change::Delete => format!("-{k} {p}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hamirror_wire::ChunkRef;
    use hamirror_wire::entry::file_hash;

    #[derive(Default)]
    struct Fake {
        entries: HashMap<Vec<u8>, Entry>,
        chunks: HashMap<Hash, Location>,
    }
    impl Replica for Fake {
        fn current(&self, path: &[u8]) -> Option<Entry> {
            self.entries.get(path).cloned()
        }
        fn locate(&self, hash: &Hash) -> Option<Location> {
            self.chunks.get(hash).cloned()
        }
    }

    fn file(path: &str, chunks: &[(u8, u32)]) -> Entry {
        let chunks: Vec<ChunkRef> = chunks.iter().map(|&(h, len)| ChunkRef { hash: [h; 32], len }).collect();
        Entry {
            path: path.as_bytes().to_vec(),
            kind: EntryKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: 1,
            size: chunks.iter().map(|c| u64::from(c.len)).sum(),
            file_hash: file_hash(&chunks),
            chunks,
            target: vec![],
            xattrs: vec![],
        }
    }

    fn holding(entries: &[Entry]) -> Fake {
        let mut f = Fake::default();
        for e in entries {
            let mut off = 0;
            for c in &e.chunks {
                f.chunks.insert(
                    c.hash,
                    Location {
                        path: e.path.clone(),
                        offset: off,
                    },
                );
                off += u64::from(c.len);
            }
            f.entries.insert(e.path.clone(), e.clone());
        }
        f
    }

    #[test]
    fn a_renamed_file_costs_no_data() {
        let old = file("srv/a", &[(1, 100), (2, 50)]);
        let replica = holding(std::slice::from_ref(&old));
        let moved = Entry {
            path: b"srv/b".to_vec(),
            ..old.clone()
        };
        let p = plan(&[moved], &[b"srv/a".to_vec()], &replica, &HashMap::new());
        assert!(p.need.is_empty());
        assert_eq!(p.reused_chunks, 2);
        assert_eq!(
            p.files[0].pieces[1],
            Piece {
                offset: 100,
                len: 50,
                hash: [2; 32],
                local: Some(Location {
                    path: b"srv/a".to_vec(),
                    offset: 100
                })
            }
        );
        assert_eq!(p.deletes, vec![b"srv/a".to_vec()]);
    }

    #[test]
    fn only_missing_chunks_are_asked_for_once() {
        let replica = holding(&[file("srv/a", &[(1, 10)])]);
        let offered = [
            file("srv/x", &[(1, 10), (3, 20), (3, 20)]),
            file("srv/y", &[(3, 20), (4, 5)]),
        ];
        let p = plan(&offered, &[], &replica, &HashMap::new());
        assert_eq!(p.need, vec![[3; 32], [4; 32]]);
        assert_eq!(p.need_bytes, 25);
    }

    #[test]
    fn unchanged_and_metadata_only_entries_are_not_rebuilt() {
        let a = file("srv/a", &[(1, 10)]);
        let replica = holding(std::slice::from_ref(&a));
        let chmod = Entry {
            mode: 0o600,
            ..a.clone()
        };
        assert_eq!(
            plan(std::slice::from_ref(&a), &[], &replica, &HashMap::new()).unchanged,
            1
        );
        let p = plan(&[chmod], &[], &replica, &HashMap::new());
        assert!(p.files.is_empty());
        assert_eq!(p.retouch.len(), 1);
        assert_eq!(itemize(p.items[0].0, p.items[0].1, &p.items[0].2), ".f srv/a");
    }

    #[test]
    fn chunks_left_by_an_interrupted_run_count_as_held() {
        let replica = Fake::default();
        let held = HashMap::from([(
            [7; 32],
            Location {
                path: b"srv/.tmp".to_vec(),
                offset: 0,
            },
        )]);
        let p = plan(&[file("srv/z", &[(7, 10), (8, 10)])], &[], &replica, &held);
        assert_eq!(p.need, vec![[8; 32]]);
    }

    #[test]
    fn deletes_run_children_first_and_ignore_unknown_paths() {
        let mut replica = holding(&[file("srv/d/f", &[(1, 1)])]);
        let dir = Entry {
            kind: EntryKind::Dir,
            size: 0,
            chunks: vec![],
            file_hash: [0; 32],
            ..file("srv/d", &[])
        };
        replica.entries.insert(b"srv/d".to_vec(), dir);
        let p = plan(
            &[],
            &[b"srv/d".to_vec(), b"srv/d/f".to_vec(), b"srv/nope".to_vec()],
            &replica,
            &HashMap::new(),
        );
        assert_eq!(p.deletes, vec![b"srv/d/f".to_vec(), b"srv/d".to_vec()]);
    }

    #[test]
    fn hard_links_to_a_rebuilt_file_are_linked_again() {
        let a = file("srv/a", &[(1, 10)]);
        let link = Entry {
            kind: EntryKind::HardLink,
            target: b"srv/a".to_vec(),
            ..file("srv/b", &[])
        };
        let replica = holding(&[a.clone(), link.clone()]);
        let a2 = file("srv/a", &[(2, 10)]);
        let p = plan(&[a2, link], &[], &replica, &HashMap::new());
        assert_eq!(p.hardlinks.len(), 1);
        assert_eq!(p.unchanged, 0);
    }

    #[test]
    fn changed_chunks_of_a_file_held_before_get_a_base_new_files_none() {
        let old = file("srv/a", &[(1, 1000), (2, 5000), (3, 1000)]);
        let replica = holding(&[old, file("srv/t", &[(5, 100)])]);
        let edited = file("srv/a", &[(1, 1000), (9, 5000), (3, 1000)]);
        let fresh = file("srv/n", &[(8, 5000)]);
        let tiny = file("srv/t", &[(7, 100)]);
        let p = plan(&[edited, fresh, tiny], &[], &replica, &HashMap::new());
        assert_eq!(p.need, vec![[9; 32], [8; 32], [7; 32]]);
        assert_eq!(
            p.bases.get(&[9; 32]),
            Some(&Base {
                path: b"srv/a".to_vec(),
                offset: 1000,
                len: 5000
            })
        );
        assert_eq!(p.bases.len(), 1, "no base without an old version, nor for a tiny chunk");
    }

    #[test]
    fn bases_stop_at_the_plan_budget() {
        // 40 chunks of 16 MiB rewritten: 640 MiB of old bytes.
        let spec: Vec<(u8, u32)> = (0..40).map(|h| (h, 16 << 20)).collect();
        let old = file("srv/huge", &spec);
        let replica = holding(std::slice::from_ref(&old));
        let new_spec: Vec<(u8, u32)> = (100..140).map(|h| (h, 16 << 20)).collect();
        let p = plan(&[file("srv/huge", &new_spec)], &[], &replica, &HashMap::new());
        assert_eq!(p.need.len(), 40);
        assert!(p.base_bytes <= MAX_PLAN_BASES && p.base_bytes > MAX_PLAN_BASES / 2);
        assert_eq!(p.bases.values().map(|b| u64::from(b.len)).sum::<u64>(), p.base_bytes);
        assert!(p.bases.len() < 40);
    }

    #[test]
    fn mass_delete_guard_threshold() {
        assert!(!too_many_deletes(5, 10, 50));
        assert!(too_many_deletes(6, 10, 50));
        assert!(!too_many_deletes(0, 0, 0));
        assert!(too_many_deletes(1, 1, 0));
    }

    fn other(path: &str, kind: EntryKind, target: &str) -> Entry {
        Entry {
            kind,
            target: target.as_bytes().to_vec(),
            ..file(path, &[])
        }
    }

    #[test]
    fn a_rename_or_move_loses_nothing_and_a_delete_does() {
        let old = vec![
            other("a", EntryKind::Dir, ""),
            file("a/x", &[(1, 10)]),
            other("a/l", EntryKind::Symlink, "x"),
            other("a/h", EntryKind::HardLink, "a/x"),
            file("a/empty", &[]),
        ];
        let renamed = vec![
            other("b", EntryKind::Dir, ""),
            file("b/x", &[(1, 10)]),
            other("b/l", EntryKind::Symlink, "x"),
            other("b/h", EntryKind::HardLink, "b/x"),
            file("b/empty", &[]),
        ];
        let new = |p: &[u8]| p.starts_with(b"b");
        assert_eq!(really_lost(&old, &renamed, new), 0);
        // Deleted outright: the directory, the file, the symlink, the empty
        // file (the further name of the hard link is not counted).
        assert_eq!(really_lost(&old, &[], new), 4);
        // Content changed on the way: the file counts as lost.
        let edited = vec![file("b/x", &[(2, 10)])];
        assert_eq!(really_lost(&old[1..2], &edited, new), 1);
        // A directory that already existed does not make up for one deleted.
        assert_eq!(really_lost(&old[..1], &renamed[..1], |_| false), 1);
    }

    #[test]
    fn fifos_and_devices_are_made_when_kind_number_or_metadata_differ() {
        let null = |dev: &str| Entry {
            size: 0,
            file_hash: [0; 32],
            ..other("dev/null", EntryKind::CharDev, dev)
        };
        let pipe = Entry {
            size: 0,
            file_hash: [0; 32],
            ..other("q/pipe", EntryKind::Fifo, "")
        };
        let replica = holding(&[null("1:3"), pipe.clone()]);
        let p = plan(&[null("1:3"), pipe.clone()], &[], &replica, &HashMap::new());
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(p.unchanged, 2);
        // Another device number, a block device of the same number, a mode.
        let block = Entry {
            kind: EntryKind::BlockDev,
            ..null("1:3")
        };
        let chmod = Entry {
            mode: 0o600,
            ..pipe.clone()
        };
        for (offered, change) in [
            (null("1:5"), Change::Content),
            (block, Change::Create),
            (chmod, Change::Content),
        ] {
            let p = plan(std::slice::from_ref(&offered), &[], &replica, &HashMap::new());
            assert_eq!(p.specials, vec![offered.clone()]);
            assert_eq!(p.items, vec![(change, offered.kind, offered.path.clone())]);
            assert!(p.need.is_empty() && p.files.is_empty());
        }
        assert_eq!(itemize(Change::Create, EntryKind::Fifo, b"q/pipe"), "+S q/pipe");
        assert_eq!(itemize(Change::Content, EntryKind::CharDev, b"dev/null"), ">D dev/null");
        // Data-less like directories: a new one makes up for one deleted.
        let moved = Entry {
            path: b"r/pipe".to_vec(),
            ..pipe.clone()
        };
        assert_eq!(
            really_lost(std::slice::from_ref(&pipe), &[moved], |p| p.starts_with(b"r")),
            0
        );
        assert_eq!(really_lost(&[pipe], &[], |_| true), 1);
    }

    #[test]
    fn the_guard_counts_across_passes_until_reset_or_the_window_ends() {
        let t = 1_000_000;
        // 45 % of 100, then 45 % of what is left: refused the second time.
        let (c, through) = GuardCount::current(None, 100, 7, t);
        assert!(!through);
        let c = c.add(45, 100, 50).unwrap();
        assert_eq!((c.base, c.lost, c.since_s, c.since_gen), (100, 45, t, 7));
        let (again, _) = GuardCount::current(Some(c), 55, 9, t + 10);
        assert_eq!(again, c, "the count runs on");
        let r = again.add(25, 55, 50).unwrap_err();
        assert_eq!((r.lost_before, r.of), (45, 100));
        // Within the limit together: counted on.
        let c = again.add(5, 55, 50).unwrap();
        assert_eq!(c.lost, 50);
        // A grown replica measures against its size now.
        assert!(c.add(40, 200, 50).is_ok());
        // After the window, the count starts again.
        let (later, _) = GuardCount::current(Some(c), 55, 12, t + GUARD_WINDOW_S);
        assert_eq!((later.base, later.lost, later.since_gen), (55, 0, 12));
        assert!(later.add(25, 55, 50).is_ok());
        // 100 % turns the guard off; nothing lost is never refused.
        assert!(c.add(1000, 10, 100).is_ok());
        let over = GuardCount { lost: 9, base: 1, ..c };
        assert!(over.add(0, 1, 0).is_ok());
        // An operator's allowance lets one pass through and starts afresh.
        let allowed = GuardCount::allowing(Some(c));
        let (after, through) = GuardCount::current(Some(allowed), 1000, 20, t + 30);
        assert!(through);
        assert_eq!((after.base, after.lost, after.allow), (1000, 0, false));
        assert_eq!(GuardCount::decode(&c.encode()), Some(c));
        assert_eq!(GuardCount::decode(&allowed.encode()), Some(allowed));
        assert_eq!(GuardCount::decode(b"short"), None);
    }
}
