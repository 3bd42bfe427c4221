//! Upgrading an index file in place, and keeping it compact. Format 1 (one
//! table each for entries, fingerprints and a multimap chunk locator, raw
//! log records) is rewritten as format 2 (`store.rs`), and format 2 (rows
//! and locator keyed by the whole path) as format 3 (keyed by directory
//! number and name, `dirs.rs`), each in one write transaction when the
//! file is opened: a crash during it leaves the file as it was before
//! that step, which the next start converts again. The id, every set's
//! generation and log, and the `acks`, `synced`, `guard` and `xattrs`
//! tables are kept, so a peer that had acknowledged this node's
//! generations goes on with a delta, not a full comparison.
//!
//! Compaction: redb never gives back the pages a commit freed inside the
//! file, only a free tail (it reuses them for later commits);
//! [`Index::compact_if_grown`] runs `Database::compact` when the file has
//! grown to twice its size after the last compaction. Size here is the disk space the file takes
//! (allocated blocks), not its length: redb doubles the length whenever it
//! runs out of room, and the tail it has not written yet is a hole — a
//! compacted file's first commit would otherwise look like a doubling and
//! compact again. Knows nothing of scanning or peers.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use redb::{Database, MultimapTableDefinition, ReadableDatabase, ReadableTable, TableDefinition};

use super::dirs::{self, DirIds, SetTables};
use super::store::{encode_log, encode_row, locator_key, locator_value};
use super::{Fingerprint, Index, IndexError, META, SETS, decode_entry, read_table};

type Bytes = &'static [u8];

/// A set's rows or locator table whose leaf pages hold less than this
/// share (percent) of live bytes, counting redb's 8 bytes of offsets per
/// row, is rewritten in key order before a compaction. Inserts in the
/// middle of a table split full pages in two: the locator (keyed by hash)
/// written packed by a first sync falls to ~45% after a few passes
/// changing 1% of the files, and a receiver's first sync of a tree of
/// tiny files leaves its rows ~75% full (a directory whose files are
/// installed by two commits has its page split; issue 17). Written in
/// key order a table is 97–99% full; compaction alone moves pages but
/// does not fill them.
const REPACK_BELOW_FILL: u64 = 95;
/// redb's per-row overhead in a leaf of variable-width keys and values:
/// the end offsets of the key and of the value.
const ROW_OVERHEAD: u64 = 8;
/// Tables of fewer leaf pages are left alone (any size when the file's
/// compaction minimum is 0, as in the crash test).
const REPACK_MIN_PAGES: u64 = 16;
/// redb's page size (its default, which this index does not change).
const PAGE: u64 = 4096;

/// Files smaller than this are never compacted: there is little to gain.
pub(super) const COMPACT_MIN: u64 = 4 << 20;
/// `meta` key: the file's disk space after the last compaction (u64 LE).
const COMPACTED: &str = "compacted";

/// Format 2's tables of a set: path → row, hash prefix and path → offset.
fn v2_files(set: &str) -> String {
    format!("{set}/files")
}
fn v2_locator(set: &str) -> String {
    format!("{set}/locator")
}

/// The names of the sets an index holds.
fn set_names(db: &Database) -> Result<Vec<String>, IndexError> {
    let txn = db.begin_read()?;
    Ok(match read_table(&txn, SETS)? {
        Some(t) => t
            .range::<&str>(..)?
            .map(|r| r.map(|(k, _)| k.value().to_string()))
            .collect::<Result<_, _>>()?,
        None => vec![],
    })
}

/// Converts every set of a format-2 index to format 3 (rows and locator
/// keyed by directory number and name, `dirs.rs`) and records the new
/// format, all in one transaction. The rows themselves are unchanged.
pub(super) fn from_format_2(db: &Database) -> Result<(), IndexError> {
    let sets = set_names(db)?;
    let txn = db.begin_write()?;
    for set in &sets {
        let names = SetTables::new(set);
        let (old_files, old_locator) = (v2_files(set), v2_locator(set));
        {
            let old = txn.open_table(TableDefinition::<Bytes, Bytes>::new(&old_files))?;
            let mut ids = DirIds::open(&txn, &names)?;
            let mut rows = txn.open_table(names.rows())?;
            for row in old.range::<&[u8]>(..)? {
                let (k, v) = row?;
                let (dir, name) = dirs::split(k.value());
                let id = ids.get_or_add(dir)?;
                rows.insert(&dirs::key(id, name)[..], v.value())?;
            }
            let old = txn.open_table(TableDefinition::<Bytes, Bytes>::new(&old_locator))?;
            let mut locator = txn.open_table(names.locator())?;
            for row in old.range::<&[u8]>(..)? {
                let (k, v) = row?;
                let Some((hash, path)) = k.value().split_at_checked(super::store::HASH_PREFIX) else {
                    return Err(IndexError::Corrupt(format!(
                        "chunk locator key of {} bytes",
                        k.value().len()
                    )));
                };
                let (dir, name) = dirs::split(path);
                let id = ids.get(dir)?.ok_or_else(|| {
                    IndexError::Corrupt(format!(
                        "chunk location in {}, which has no entry",
                        String::from_utf8_lossy(path)
                    ))
                })?;
                let mut key = hash.to_vec();
                key.extend_from_slice(&dirs::key(id, name));
                locator.insert(&key[..], v.value())?;
            }
        }
        txn.delete_table(TableDefinition::<Bytes, Bytes>::new(&old_files))?;
        txn.delete_table(TableDefinition::<Bytes, Bytes>::new(&old_locator))?;
    }
    txn.open_table(META)?
        .insert("format", &super::FORMAT.to_le_bytes()[..])?;
    txn.commit()?;
    Ok(())
}

/// Converts every set of a format-1 index to format 2 and records that
/// format, all in one transaction ([`from_format_2`] follows).
pub(super) fn from_format_1(db: &Database) -> Result<(), IndexError> {
    let sets = set_names(db)?;
    let txn = db.begin_write()?;
    for set in &sets {
        let old_entries = format!("{set}/entries");
        let old_stat = format!("{set}/stat");
        let old_log = format!("{set}/log");
        let old_chunks = format!("{set}/chunks");
        let (files, locator) = (v2_files(set), v2_locator(set));
        let log = SetTables::new(set);
        let stats: HashMap<Vec<u8>, Option<Fingerprint>> = {
            let t = txn.open_table(TableDefinition::<Bytes, Bytes>::new(&old_stat))?;
            t.range::<&[u8]>(..)?
                .map(|r| r.map(|(k, v)| (k.value().to_vec(), Fingerprint::decode(v.value()))))
                .collect::<Result<_, _>>()?
        };
        {
            let old = txn.open_table(TableDefinition::<Bytes, Bytes>::new(&old_entries))?;
            let mut files = txn.open_table(TableDefinition::<Bytes, Bytes>::new(&files))?;
            let mut locator = txn.open_table(TableDefinition::<Bytes, Bytes>::new(&locator))?;
            for row in old.range::<&[u8]>(..)? {
                let (k, v) = row?;
                let path = k.value();
                let e = decode_entry(path, v.value())?;
                let stat = stats.get(path).copied().flatten();
                files.insert(path, &encode_row(&e, stat.as_ref())[..])?;
                for (hash, off) in super::commit::first_offsets(&e) {
                    locator.insert(&locator_key(&hash, path)[..], &locator_value(off)[..])?;
                }
            }
        }
        {
            let old = txn.open_table(TableDefinition::<u64, Bytes>::new(&old_log))?;
            let mut log = txn.open_table(log.log())?;
            for row in old.range::<u64>(..)? {
                let (g, record) = row?;
                let paths = decode_log_v1(record.value())
                    .map_err(|e| IndexError::Corrupt(format!("log of generation {}: {e}", g.value())))?;
                let refs: Vec<&[u8]> = paths.iter().map(|p| &p[..]).collect();
                log.insert(g.value(), &encode_log(&refs)[..])?;
            }
        }
        txn.delete_table(TableDefinition::<Bytes, Bytes>::new(&old_entries))?;
        txn.delete_table(TableDefinition::<Bytes, Bytes>::new(&old_stat))?;
        txn.delete_table(TableDefinition::<u64, Bytes>::new(&old_log))?;
        txn.delete_multimap_table(MultimapTableDefinition::<Bytes, Bytes>::new(&old_chunks))?;
    }
    txn.open_table(META)?.insert("format", &2u32.to_le_bytes()[..])?;
    txn.commit()?;
    Ok(())
}

/// A format-1 log record: a count, then each path length-prefixed.
fn decode_log_v1(record: &[u8]) -> Result<Vec<Vec<u8>>, hamirror_wire::DecodeError> {
    let mut r = hamirror_wire::Reader::new(record);
    let n = r.count("log paths", u64::MAX, 1)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(r.bytes("log path", hamirror_wire::entry::MAX_PATH)?.to_vec());
    }
    r.finish()?;
    Ok(out)
}

/// Rewrites, in key order and in one transaction, each set table whose
/// pages are less than [`REPACK_BELOW_FILL`] percent full. Returns how
/// many it rewrote.
fn repack(db: &Database, min_pages: u64) -> Result<usize, IndexError> {
    use redb::{ReadableTableMetadata, TableHandle};
    let sets = set_names(db)?;
    let txn = db.begin_write()?;
    let mut done = 0;
    for set in &sets {
        let names = SetTables::new(set);
        for def in [names.rows(), names.locator()] {
            let sparse = {
                let t = txn.open_table(def)?;
                let s = t.stats()?;
                let live = s.stored_bytes() + t.len()? * ROW_OVERHEAD;
                s.leaf_pages() >= min_pages && live * 100 < s.leaf_pages() * PAGE * REPACK_BELOW_FILL
            };
            if !sparse {
                continue;
            }
            let temp = format!("{}.repack", def.name());
            let temp_def = TableDefinition::<Bytes, Bytes>::new(&temp);
            {
                let old = txn.open_table(def)?;
                let mut new = txn.open_table(temp_def)?;
                for row in old.range::<&[u8]>(..)? {
                    let (k, v) = row?;
                    new.insert(k.value(), v.value())?;
                }
            }
            txn.delete_table(def)?;
            txn.rename_table(temp_def, def)?;
            done += 1;
        }
    }
    txn.commit()?;
    Ok(done)
}

/// The file's disk space after its last compaction, as recorded in `meta` (0
/// for a file never compacted: it is compacted once it is large enough).
pub(super) fn compacted_len(db: &Database) -> Result<u64, IndexError> {
    let txn = db.begin_read()?;
    let stored = match read_table(&txn, META)? {
        Some(t) => t
            .get(COMPACTED)?
            .and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes)),
        None => None,
    };
    Ok(stored.unwrap_or(0))
}

/// The disk space a file takes (its allocated blocks); 0 if it cannot be
/// read.
pub(super) fn disk_bytes(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or(0, |m| m.blocks().saturating_mul(512))
}

impl Index {
    /// Compacts the file when its disk space is more than twice what it
    /// was after the last compaction (and past a few MiB): when it holds
    /// more free pages than live ones. Not sooner, because a commit copies
    /// every page it touches before the old copy is free: a pass changing
    /// 1% of a set's files touches up to half of a compacted index's pages
    /// (its rows and chunk locators land all over both trees), so a file
    /// compacted after every such pass grew back by half at the next, and
    /// the sender paid the rewrite (~0.2 s on issue 17's corpus) in front
    /// of every pass. Left alone, the next pass reuses the pages the last
    /// one freed: the file settles at its live pages plus one pass's
    /// (measured: 1.6–1.9× after 9–10 passes changing 1%) and stops growing.
    /// Compacting costs about as much as reading the file once.
    /// Skipped, to be tried after a later commit, while any transaction is
    /// open in this process (an [`super::Entries`] iterator holds one).
    /// Storage errors are logged, not returned: the commit that called this
    /// is already durable.
    pub fn compact_if_grown(&self) {
        let len = disk_bytes(&self.path);
        let base = self.compacted_len.load(Ordering::Relaxed);
        if len < self.compact_min || len <= base.saturating_mul(2) {
            return;
        }
        let mut db = self.db.write().unwrap_or_else(|p| p.into_inner());
        self.repack(&db);
        self.compact(&mut db, len);
    }

    /// Rewrites the set tables left sparse, and compacts the file if any
    /// was. A receiver calls it at the end of a sync that installed many
    /// files: its commits of a window at a time split pages that
    /// [`Index::compact_if_grown`] compacted last before the sync's end, if
    /// at all (issue 17: rows ~75% full after a first sync of tiny
    /// files, 136 B/file on disk where the sender's file took 112). Reads
    /// each table's page counts; rewrites only what is sparse.
    pub fn tidy(&self) {
        let len = disk_bytes(&self.path);
        if len < self.compact_min {
            return;
        }
        let mut db = self.db.write().unwrap_or_else(|p| p.into_inner());
        if self.repack(&db) > 0 {
            self.compact(&mut db, len);
        }
    }

    /// [`repack`], errors logged. Returns the tables rewritten.
    fn repack(&self, db: &Database) -> usize {
        let min_pages = if self.compact_min == 0 { 1 } else { REPACK_MIN_PAGES };
        match repack(db, min_pages) {
            Ok(0) => 0,
            Ok(n) => {
                tracing::debug!("index {}: {n} tables rewritten in key order", self.path.display());
                n
            }
            Err(e) => {
                tracing::warn!("index {}: rewriting sparse tables failed: {e}", self.path.display());
                0
            }
        }
    }

    /// Compacts the file (of `len` bytes on disk) and records its new size.
    fn compact(&self, db: &mut Database, len: u64) {
        match db.compact() {
            Ok(_) => {
                let after = disk_bytes(&self.path);
                tracing::debug!("index {} compacted: {len} -> {after} bytes", self.path.display());
                self.compacted_len.store(after, Ordering::Relaxed);
                // Remembered across restarts, so a start does not compact
                // again a file that has not grown since.
                let record = || -> Result<(), IndexError> {
                    let txn = db.begin_write()?;
                    txn.open_table(META)?.insert(COMPACTED, &after.to_le_bytes()[..])?;
                    txn.commit()?;
                    Ok(())
                };
                if let Err(e) = record() {
                    tracing::warn!("index {}: {e}", self.path.display());
                }
            }
            Err(redb::CompactionError::TransactionInProgress) => {
                tracing::debug!("index {}: not compacted, a transaction is open", self.path.display());
            }
            Err(e) => {
                tracing::warn!("index {}: compaction failed: {e}", self.path.display());
                // Not again until the file has grown as much once more.
                self.compacted_len.store(len, Ordering::Relaxed);
            }
        }
    }
}
