//! Writing to the index: [`Index::commit`] applies upserts and deletions to
//! one set in a single redb transaction, keeping the entries, fingerprints,
//! chunk locator, generation counter and generation log in step (the row
//! encodings are in `store.rs`).

use std::collections::HashMap;

use hamirror_wire::entry::check_path;
use hamirror_wire::{Entry, EntryKind, Hash, Reader, Writer};
use redb::{ReadableTable, Table};

use super::dirs::{self, DirIds, SetTables};
use super::store::{count_log, decode_row, encode_log, encode_row, locator_key, locator_value, row_body};
use super::{ACKS, Fingerprint, Index, IndexError, Position, SETS, SYNCED, SetInfo};

/// One path to store: its entry and the local stat fingerprint of the file
/// it describes. `stat: None` stores "unknown": the next quick check misses
/// and the file is read again (the scanner uses this for files modified too
/// recently to trust their timestamps; a receiver may use it when it has not
/// stat'ed what it wrote).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upsert {
    pub entry: Entry,
    pub stat: Option<Fingerprint>,
}

/// What a commit did. `new + changed + deleted` paths were logged under
/// `generation`; when that sum is 0 the generation was not raised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CommitOutcome {
    /// The set's generation after the commit.
    pub generation: u64,
    /// Paths that had no entry before.
    pub new: u64,
    /// Paths whose entry differs from the stored one.
    pub changed: u64,
    /// Paths removed (deletions of paths not in the index are ignored).
    pub deleted: u64,
    /// Upserts equal to the stored entry: at most the fingerprint was rewritten.
    pub refreshed: u64,
    /// Paths dropped without a deletion being logged (now excluded).
    pub forgotten: u64,
}

impl CommitOutcome {
    /// Whether any entry changed (and so the generation was raised).
    pub fn changed_any(&self) -> bool {
        self.new + self.changed + self.deleted > 0
    }
}

type Bytes = &'static [u8];

/// The open tables of one set inside a write transaction.
struct Tables<'t> {
    files: Table<'t, Bytes, Bytes>,
    locator: Table<'t, Bytes, Bytes>,
}

/// The locator rows a commit writes (`Some(offset)`) or removes (`None`),
/// the last word per key winning. They are applied in key order at the
/// end: the locator's keys start with a hash, so inserting them file by
/// file would land on random pages, and a B-tree filled at random ends
/// about 60% full; in key order a first commit packs its pages (issue 17).
#[derive(Default)]
struct LocatorOps(std::collections::BTreeMap<Vec<u8>, Option<u64>>);

impl LocatorOps {
    fn put(&mut self, hash: &Hash, file: &[u8], offset: u64) {
        self.0.insert(locator_key(hash, file), Some(offset));
    }
    fn remove(&mut self, hash: &Hash, file: &[u8]) {
        self.0.insert(locator_key(hash, file), None);
    }
    fn apply(self, locator: &mut Table<'_, Bytes, Bytes>) -> Result<(), IndexError> {
        for (k, op) in self.0 {
            match op {
                Some(off) => locator.insert(&k[..], &locator_value(off)[..])?,
                None => locator.remove(&k[..])?,
            };
        }
        Ok(())
    }
}

impl Index {
    /// Stores `upserts` and removes `deletes` in one set, atomically. An
    /// upsert equal to the stored entry only refreshes its fingerprint; any
    /// other change raises the generation by one and logs the changed and
    /// deleted paths under it. Returns what happened. Nothing is written
    /// when both lists are empty.
    ///
    /// # Errors
    /// An entry that would not decode again, such as an unsafe path or
    /// hard-link target, a size that is not the sum of the chunks, an empty
    /// symlink target ([`IndexError::InvalidEntry`]; nothing is written),
    /// storage errors, or a stored entry that does not decode.
    pub fn commit(&self, set: &str, upserts: &[Upsert], deletes: &[Vec<u8>]) -> Result<CommitOutcome, IndexError> {
        let outcome = self.commit_all(set, upserts, deletes, &[], None)?;
        self.compact_if_grown();
        Ok(outcome)
    }

    /// [`Index::commit`], and in the same transaction records `ack` as the
    /// peer position this set's replica is now in step with, and the set's
    /// resulting generation as [`Index::synced`] (a receiver
    /// commits what it applied and what it acknowledges atomically, so a
    /// crash can never leave an acknowledgement of data it does not hold).
    ///
    /// Unlike [`Index::commit`] this does not compact the file: the
    /// receiver answers its sender first and then calls
    /// [`Index::compact_if_grown`] (and [`Index::tidy`] after a sync that
    /// installed many files): the sender should not wait for a rewrite of
    /// the file.
    ///
    /// # Errors
    /// As [`Index::commit`].
    pub fn commit_with_ack(
        &self,
        set: &str,
        upserts: &[Upsert],
        deletes: &[Vec<u8>],
        ack: Option<Position>,
    ) -> Result<CommitOutcome, IndexError> {
        self.commit_all(set, upserts, deletes, &[], ack)
    }

    /// [`Index::commit`], and drops the paths of `forget` without logging
    /// them: paths the set's rules now exclude are no longer part of it,
    /// but they were not deleted, so no peer is told to delete them (a
    /// delta lists only logged paths) and they do not raise the generation.
    ///
    /// # Errors
    /// As [`Index::commit`].
    pub fn commit_forgetting(
        &self,
        set: &str,
        upserts: &[Upsert],
        deletes: &[Vec<u8>],
        forget: &[Vec<u8>],
    ) -> Result<CommitOutcome, IndexError> {
        let outcome = self.commit_all(set, upserts, deletes, forget, None)?;
        self.compact_if_grown();
        Ok(outcome)
    }

    fn commit_all(
        &self,
        set: &str,
        upserts: &[Upsert],
        deletes: &[Vec<u8>],
        forget: &[Vec<u8>],
        ack: Option<Position>,
    ) -> Result<CommitOutcome, IndexError> {
        let invalid = |p: &[u8], why: String| IndexError::InvalidEntry {
            path: String::from_utf8_lossy(p).into_owned(),
            why,
        };
        for p in deletes.iter().chain(forget) {
            check_path(p).map_err(|why| invalid(p, why.into()))?;
        }
        // Everything stored must read back: encode and decode each entry.
        let mut rows = Vec::with_capacity(upserts.len());
        for u in upserts {
            let e = &u.entry;
            check_path(&e.path).map_err(|why| invalid(&e.path, why.into()))?;
            let mut w = Writer::new();
            e.encode_body(&mut w);
            let mut r = Reader::new(&w.buf);
            let back = Entry::decode_body(&mut r, e.path.clone()).map_err(|err| invalid(&e.path, err.to_string()))?;
            if back != *e {
                return Err(invalid(&e.path, "has fields its kind does not keep".into()));
            }
            rows.push(encode_row(e, u.stat.as_ref()));
        }
        if upserts.is_empty() && deletes.is_empty() && forget.is_empty() && ack.is_none() {
            return self.generation(set).map(|generation| CommitOutcome {
                generation,
                ..CommitOutcome::default()
            });
        }
        let names = SetTables::new(set);
        let txn = self.db().begin_write()?;
        let outcome = {
            let mut sets = txn.open_table(SETS)?;
            let mut info = match sets.get(set)? {
                Some(v) => SetInfo::decode(v.value())?,
                None => SetInfo::default(),
            };
            let mut t = Tables {
                files: txn.open_table(names.rows())?,
                locator: txn.open_table(names.locator())?,
            };
            let mut ids = DirIds::open(&txn, &names)?;
            let mut out = CommitOutcome::default();
            let mut ops = LocatorOps::default();
            let mut logged: Vec<&[u8]> = Vec::new();
            // B-tree inserts in key order touch each page once. A stable sort
            // keeps the caller's order among duplicates (the last one wins).
            let mut order = Vec::with_capacity(upserts.len());
            for (u, row) in upserts.iter().zip(&rows) {
                let (dir, name) = dirs::split(&u.entry.path);
                order.push((dirs::key(ids.get_or_add(dir)?, name), u, row));
            }
            order.sort_by(|a, b| a.0.cmp(&b.0));
            for (key, u, row) in &order {
                let path = &u.entry.path[..];
                let old = t.files.get(&key[..])?.map(|v| v.value().to_vec());
                match old {
                    // Rewriting an equal row would only copy its page.
                    Some(old) if old == **row => {
                        out.refreshed += 1;
                        continue;
                    }
                    Some(old) if row_body(&old) == row_body(row) => {
                        out.refreshed += 1;
                        t.files.insert(&key[..], &row[..])?;
                        continue;
                    }
                    Some(old) => {
                        let old = decode_row(path, &old)?;
                        relocate(&mut ops, key, &old, &u.entry);
                        out.changed += 1;
                    }
                    None => {
                        locate(&mut ops, key, &u.entry);
                        out.new += 1;
                    }
                }
                t.files.insert(&key[..], &row[..])?;
                logged.push(path);
            }
            // Directories that lost a row, whose number may go back.
            let mut emptied = std::collections::BTreeSet::new();
            for (path, logs) in deletes
                .iter()
                .map(|p| (p, true))
                .chain(forget.iter().map(|p| (p, false)))
            {
                let (dir, name) = dirs::split(path);
                let Some(id) = ids.get(dir)? else { continue };
                let key = dirs::key(id, name);
                let old = t.files.remove(&key[..])?.map(|v| v.value().to_vec());
                if let Some(old) = old {
                    unlocate(&mut ops, &key, &decode_row(path, &old)?);
                    emptied.insert(id);
                    if logs {
                        out.deleted += 1;
                        logged.push(path);
                    } else {
                        out.forgotten += 1;
                    }
                }
            }
            for id in emptied {
                ids.drop_if_empty(id, &t.files)?;
            }
            ops.apply(&mut t.locator)?;
            info.entries = (info.entries + out.new)
                .saturating_sub(out.deleted)
                .saturating_sub(out.forgotten);
            if !logged.is_empty() {
                logged.sort_unstable();
                logged.dedup();
                info.generation += 1;
                info.log_paths += logged.len() as u64;
                let mut log = txn.open_table(names.log())?;
                log.insert(info.generation, &encode_log(&logged)[..])?;
                trim_log(&mut log, &mut info, self.log_keep_min)?;
            }
            sets.insert(set, &info.encode()[..])?;
            if let Some(ack) = ack {
                txn.open_table(ACKS)?.insert(set, &ack.encode()[..])?;
                // In step with the peer as of this very generation.
                txn.open_table(SYNCED)?.insert(set, info.generation)?;
            }
            out.generation = info.generation;
            out
        };
        txn.commit()?;
        Ok(outcome)
    }
}

/// Drops the oldest log records while the log is over its budget, always
/// keeping the newest generation.
fn trim_log(log: &mut Table<'_, u64, Bytes>, info: &mut SetInfo, keep_min: u64) -> Result<(), IndexError> {
    let budget = keep_min.max(info.entries.saturating_mul(2));
    while info.log_paths > budget {
        let first = match log.first()? {
            Some((g, record)) if g.value() < info.generation => Some((g.value(), count_log(record.value())?)),
            _ => None,
        };
        let Some((g, n)) = first else { break };
        log.remove(g)?;
        info.log_paths = info.log_paths.saturating_sub(n);
        info.log_floor = g;
    }
    Ok(())
}

/// The first offset of each distinct chunk of a file entry.
pub(super) fn first_offsets(e: &Entry) -> HashMap<Hash, u64> {
    let mut first = HashMap::new();
    if e.kind == EntryKind::File {
        let mut off = 0u64;
        for c in &e.chunks {
            first.entry(c.hash).or_insert(off);
            off += u64::from(c.len);
        }
    }
    first
}

fn locate(ops: &mut LocatorOps, file: &[u8], e: &Entry) {
    for (hash, off) in first_offsets(e) {
        ops.put(&hash, file, off);
    }
}

/// Moves a path's locator rows from its old entry to its new one, leaving
/// alone the rows of chunks that stay at the same offset (an append or an
/// edit in place changes few; every row written costs a page).
fn relocate(ops: &mut LocatorOps, file: &[u8], old: &Entry, new: &Entry) {
    let (before, after) = (first_offsets(old), first_offsets(new));
    // A chunk still in the file at another offset keeps its key: the
    // put below overwrites the offset.
    for hash in before.keys().filter(|h| !after.contains_key(*h)) {
        ops.remove(hash, file);
    }
    for (hash, off) in &after {
        if before.get(hash) != Some(off) {
            ops.put(hash, file, *off);
        }
    }
}

fn unlocate(ops: &mut LocatorOps, file: &[u8], e: &Entry) {
    for hash in first_offsets(e).keys() {
        ops.remove(hash, file);
    }
}
