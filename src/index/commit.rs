//! Writing to the index: [`Index::commit`] applies upserts and deletions to
//! one set in a single redb transaction, keeping the entries, fingerprints,
//! chunk locator, generation counter and generation log in step. Also the
//! encodings of a log record and a chunk location.

use std::collections::HashMap;

use hamirror_wire::entry::check_path;
use hamirror_wire::{Entry, EntryKind, Hash, Reader, Writer};
use redb::{MultimapTable, ReadableTable, Table};

use super::{
    ACKS, ChunkLocation, Fingerprint, Index, IndexError, Position, SETS, SYNCED, SetInfo, SetTables, decode_entry,
};

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
    /// Upserts equal to the stored entry: only the fingerprint was rewritten.
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
    entries: Table<'t, Bytes, Bytes>,
    stat: Table<'t, Bytes, Bytes>,
    chunks: MultimapTable<'t, Bytes, Bytes>,
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
        self.commit_with_ack(set, upserts, deletes, None)
    }

    /// [`Index::commit`], and in the same transaction records `ack` as the
    /// peer position this set's replica is now in step with, and the set's
    /// resulting generation as [`Index::synced`] (a receiver
    /// commits what it applied and what it acknowledges atomically, so a
    /// crash can never leave an acknowledgement of data it does not hold).
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
        self.commit_all(set, upserts, deletes, forget, None)
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
        let mut bodies = Vec::with_capacity(upserts.len());
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
            bodies.push(w.buf);
        }
        if upserts.is_empty() && deletes.is_empty() && forget.is_empty() && ack.is_none() {
            return self.generation(set).map(|generation| CommitOutcome {
                generation,
                ..CommitOutcome::default()
            });
        }
        let names = SetTables::new(set);
        let txn = self.db.begin_write()?;
        let outcome = {
            let mut sets = txn.open_table(SETS)?;
            let mut info = match sets.get(set)? {
                Some(v) => SetInfo::decode(v.value())?,
                None => SetInfo::default(),
            };
            let mut t = Tables {
                entries: txn.open_table(names.entries())?,
                stat: txn.open_table(names.stat())?,
                chunks: txn.open_multimap_table(names.chunks())?,
            };
            let mut out = CommitOutcome::default();
            let mut logged: Vec<&[u8]> = Vec::new();
            // B-tree inserts in key order touch each page once. A stable sort
            // keeps the caller's order among duplicates (the last one wins).
            let mut order: Vec<(&Upsert, &Vec<u8>)> = upserts.iter().zip(&bodies).collect();
            order.sort_by(|a, b| a.0.entry.path.cmp(&b.0.entry.path));
            for (u, body) in order {
                let path = &u.entry.path[..];
                let stat = u.stat.map(|f| f.encode());
                t.stat.insert(path, stat.as_ref().map_or(&[][..], |s| &s[..]))?;
                let old = t.entries.get(path)?.map(|v| v.value().to_vec());
                match old {
                    Some(old) if old == *body => {
                        out.refreshed += 1;
                        continue;
                    }
                    Some(old) => {
                        let old = decode_entry(path, &old)?;
                        relocate(&mut t.chunks, &old, &u.entry)?;
                        out.changed += 1;
                    }
                    None => {
                        locate(&mut t.chunks, &u.entry)?;
                        out.new += 1;
                    }
                }
                t.entries.insert(path, &body[..])?;
                logged.push(path);
            }
            for path in deletes {
                t.stat.remove(&path[..])?;
                let old = t.entries.remove(&path[..])?.map(|v| v.value().to_vec());
                if let Some(old) = old {
                    unlocate(&mut t.chunks, &decode_entry(path, &old)?)?;
                    out.deleted += 1;
                    logged.push(path);
                }
            }
            for path in forget {
                t.stat.remove(&path[..])?;
                let old = t.entries.remove(&path[..])?.map(|v| v.value().to_vec());
                if let Some(old) = old {
                    unlocate(&mut t.chunks, &decode_entry(path, &old)?)?;
                    out.forgotten += 1;
                }
            }
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
fn first_offsets(e: &Entry) -> HashMap<Hash, u64> {
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

fn locate(chunks: &mut MultimapTable<'_, Bytes, Bytes>, e: &Entry) -> Result<(), IndexError> {
    for (hash, off) in first_offsets(e) {
        chunks.insert(&hash[..], &encode_location(off, &e.path)[..])?;
    }
    Ok(())
}

/// Moves a path's locator rows from its old entry to its new one, leaving
/// alone the rows of chunks that stay at the same offset (an append or an
/// edit in place changes few; the locator is a random-key B-tree where
/// every row written costs a page).
fn relocate(chunks: &mut MultimapTable<'_, Bytes, Bytes>, old: &Entry, new: &Entry) -> Result<(), IndexError> {
    let (before, after) = (first_offsets(old), first_offsets(new));
    for (hash, off) in &before {
        if after.get(hash) != Some(off) {
            chunks.remove(&hash[..], &encode_location(*off, &old.path)[..])?;
        }
    }
    for (hash, off) in &after {
        if before.get(hash) != Some(off) {
            chunks.insert(&hash[..], &encode_location(*off, &new.path)[..])?;
        }
    }
    Ok(())
}

fn unlocate(chunks: &mut MultimapTable<'_, Bytes, Bytes>, e: &Entry) -> Result<(), IndexError> {
    for (hash, off) in first_offsets(e) {
        chunks.remove(&hash[..], &encode_location(off, &e.path)[..])?;
    }
    Ok(())
}

/// A locator value: offset (8 bytes, big endian) then the path.
pub(super) fn encode_location(offset: u64, path: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + path.len());
    v.extend_from_slice(&offset.to_be_bytes());
    v.extend_from_slice(path);
    v
}

pub(super) fn decode_location(v: &[u8]) -> Result<ChunkLocation, IndexError> {
    if v.len() <= 8 {
        return Err(IndexError::Corrupt(format!("chunk location of {} bytes", v.len())));
    }
    let (off, path) = v.split_at(8);
    Ok(ChunkLocation {
        path: path.to_vec(),
        offset: u64::from_be_bytes(off.try_into().unwrap_or_default()),
    })
}

/// A log record: a count, then each path length-prefixed.
fn encode_log(paths: &[&[u8]]) -> Vec<u8> {
    let mut w = Writer::new();
    w.varint(paths.len() as u64);
    for p in paths {
        w.bytes(p);
    }
    w.buf
}

pub(super) fn decode_log(record: &[u8]) -> Result<Vec<Vec<u8>>, hamirror_wire::DecodeError> {
    let mut r = Reader::new(record);
    let n = r.count("log paths", u64::MAX, 1)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(r.bytes("log path", hamirror_wire::entry::MAX_PATH)?.to_vec());
    }
    r.finish()?;
    Ok(out)
}

fn count_log(record: &[u8]) -> Result<u64, IndexError> {
    Reader::new(record)
        .varint("log paths")
        .map_err(|e| IndexError::Corrupt(format!("log record: {e}")))
}
