//! The index: the persistent store of every set's manifest (path → entry),
//! the local stat fingerprints that make the quick check possible, a
//! generation counter with a log of the paths each generation changed, and a
//! chunk locator (hash → a file and offset holding it).
//!
//! It lives in one redb file, `<state>/index.redb`. redb is an ACID
//! copy-on-write B-tree store: a commit is atomic and durable when
//! [`Index::commit`] returns, and a process killed at any point leaves the
//! previous or the new state (`tests/index_crash.rs` checks this with
//! SIGKILL). One process holds the file at a time; a second gets
//! [`IndexError::InUse`].
//!
//! The scanner and (later) the receiver write through the same call,
//! [`Index::commit`], which compares each upsert with the stored entry, so
//! it is idempotent: re-committing what is stored changes nothing and does
//! not raise the generation. This module knows entries and fingerprints; it
//! does not walk directories or read files (that is `scan`, upstream).
//!
//! Tables, per set `S` (redb table names are strings), format 3:
//! * `S/rows`: file key → the stat [`Fingerprint`] (unknown = never
//!   matches) and the entry, in one row (`store.rs` has the byte layout).
//!   A file key is the number of the file's directory and its name
//!   (`dirs.rs`): the whole path is not stored per file.
//! * `S/dirs`: directory path → number; `S/dirpaths`: number → path.
//! * `S/changes`: generation → the paths that generation changed or
//!   deleted (a compressed record)
//! * `S/where`: the first 8 bytes of a chunk hash and a file key → the
//!   offset of that chunk's first occurrence in that file
//! * `sets`: set name → [`SetInfo`]; `meta`: format version and index id.
//! * `acks`: set name → the peer [`Position`] last applied completely;
//!   `synced`: set name → this index's own generation at that moment.
//!
//! An index of format 1 (separate entry, fingerprint and multimap locator
//! tables, one path per row in each) or 2 (rows and locator keyed by the
//! whole path) is converted when opened (`migrate.rs`), keeping ids,
//! generations, the log and every acknowledgement. A new file is created
//! complete under a temporary name (`create.rs`). The file is compacted
//! when it has grown well beyond what it holds (`Index::compact_if_grown`).

mod commit;
mod create;
mod dirs;
mod lookup;
mod migrate;
mod store;
mod verify;
mod view;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock, Weak};

use hamirror_wire::{Entry, Hash, Reader};
use redb::{
    Database, DatabaseError, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    TableError,
};
use thiserror::Error;

use dirs::SetTables;

pub use commit::{CommitOutcome, Upsert};
pub use view::{DirRows, SetView};

/// The index file inside a node's state directory.
pub const INDEX_FILE: &str = "index.redb";
/// Layout version of the tables; a different one is refused, not guessed.
pub const FORMAT: u32 = 3;
/// The generation log is trimmed (oldest first) once it holds more path
/// records than this or twice the set's entry count, whichever is larger.
/// A peer whose acknowledged generation was trimmed gets `None` from
/// [`Index::changes_since`] and falls back to a full comparison.
pub const LOG_KEEP_MIN: u64 = 100_000;
/// redb's page cache. Its default (1 GiB) would let a large set's index
/// take that much memory; the scans read each table once in key order and
/// gain little from more. 4 MiB (issue 17: 64 MiB per process): 4 MB less
/// on each side of an initial copy than 16 MiB, the no-change pass of a
/// 50,000-file set no slower (`docs/BENCHMARKS.md`).
const CACHE_BYTES: usize = 4 << 20;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const SETS: TableDefinition<&str, &[u8]> = TableDefinition::new("sets");
/// Per set: the peer position ([`Position`]) this replica is in step with.
const ACKS: TableDefinition<&str, &[u8]> = TableDefinition::new("acks");
/// Per set: this index's own generation when it was last in step with the
/// peer (written with every acknowledgement). Changes logged after it are
/// this node's own, not on the peer. A table added after format 1 was
/// frozen: an older file simply lacks it, which reads as "never in step".
const SYNCED: TableDefinition<&str, u64> = TableDefinition::new("synced");
/// Per set, on a replica: the mass-delete guard's running count, opaque
/// here (`plan::GuardCount` encodes it). Added after format 1 like
/// [`SYNCED`]: missing reads as "no count yet".
const GUARD: TableDefinition<&str, &[u8]> = TableDefinition::new("guard");
/// Per set: the extended-attribute namespaces its entries were read with
/// (`XattrNamespaces` as text). Added after format 1: missing (an index
/// from before attributes were mirrored) or different means the stored
/// entries may lack attributes, and the next full scan reads every file.
const XATTRS: TableDefinition<&str, &str> = TableDefinition::new("xattrs");

/// Where a node's index of one set stands: its index id and generation.
/// A receiver stores the sender's position it last applied completely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Position {
    pub index: u128,
    pub generation: u64,
}

impl Position {
    fn encode(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..16].copy_from_slice(&self.index.to_le_bytes());
        b[16..].copy_from_slice(&self.generation.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Result<Position, IndexError> {
        let b: &[u8; 24] = b
            .try_into()
            .map_err(|_| IndexError::Corrupt(format!("acknowledgement of {} bytes", b.len())))?;
        let mut id = [0u8; 16];
        id.copy_from_slice(&b[..16]);
        let mut generation = [0u8; 8];
        generation.copy_from_slice(&b[16..]);
        Ok(Position {
            index: u128::from_le_bytes(id),
            generation: u64::from_le_bytes(generation),
        })
    }
}

/// Why the index could not be read or written.
#[derive(Debug, Error)]
pub enum IndexError {
    #[error("cannot create the state directory {}: {source}", path.display())]
    StateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot create index {}: {source}", path.display())]
    Create { path: PathBuf, source: std::io::Error },
    #[error("index {} is in use by another hamirror process (retry when it has finished)", path.display())]
    InUse { path: PathBuf },
    #[error("cannot open index {}: {source}", path.display())]
    Open { path: PathBuf, source: DatabaseError },
    #[error("index {} has format {found}; this hamirror reads format {FORMAT}", path.display())]
    Format { path: PathBuf, found: u32 },
    #[error("index storage error: {0}")]
    Storage(#[from] redb::Error),
    #[error("index is corrupt: {0}")]
    Corrupt(String),
    #[error("invalid entry {path:?} in a commit: {why}")]
    InvalidEntry { path: String, why: String },
    #[error("cannot create the index id: {0}")]
    Random(std::io::Error),
}

impl IndexError {
    /// Whether trying again later can help: another process holds the file,
    /// or an I/O error that may be transient (a full disk). Corruption, a
    /// wrong format or an invalid entry will fail the same way again.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            IndexError::InUse { .. }
                | IndexError::StateDir { .. }
                | IndexError::Create { .. }
                | IndexError::Storage(redb::Error::Io(_) | redb::Error::PreviousIo)
        )
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for IndexError {
            fn from(e: $t) -> Self {
                IndexError::Storage(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The stat fields the quick check compares: a file whose fingerprint equals
/// the stored one is unchanged and is not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl Fingerprint {
    pub const LEN: usize = 40;

    /// The fingerprint of an `lstat`/`fstat` result.
    pub fn of(meta: &std::fs::Metadata) -> Fingerprint {
        use std::os::unix::fs::MetadataExt;
        Fingerprint {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.mtime_nsec()),
            ctime_ns: meta
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.ctime_nsec()),
        }
    }

    /// The fingerprint of an `lstat` result read through a descriptor.
    pub fn of_stat(st: &rustix::fs::Stat) -> Fingerprint {
        Fingerprint {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime_ns: st
                .st_mtime
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_mtime_nsec as i64),
            ctime_ns: st
                .st_ctime
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_ctime_nsec as i64),
        }
    }

    /// Decodes a format-1 fingerprint row: `None` for the empty value
    /// (unknown fingerprint) or a malformed one.
    fn decode(b: &[u8]) -> Option<Fingerprint> {
        let b: &[u8; Self::LEN] = b.try_into().ok()?;
        let u = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        Some(Fingerprint {
            dev: u(0),
            ino: u(8),
            size: u(16),
            mtime_ns: u(24) as i64,
            ctime_ns: u(32) as i64,
        })
    }
}

/// A set's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SetInfo {
    /// Raised by every commit that changes at least one entry; 0 = never.
    pub generation: u64,
    /// The oldest generation `changes_since` can start from (older log
    /// records were trimmed).
    pub log_floor: u64,
    /// Path records held in the log.
    pub log_paths: u64,
    /// Entries in the set.
    pub entries: u64,
}

impl SetInfo {
    fn encode(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        for (i, v) in [self.generation, self.log_floor, self.log_paths, self.entries]
            .into_iter()
            .enumerate()
        {
            b[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    fn decode(b: &[u8]) -> Result<SetInfo, IndexError> {
        let b: &[u8; 32] = b
            .try_into()
            .map_err(|_| IndexError::Corrupt(format!("set record of {} bytes", b.len())))?;
        let u = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        Ok(SetInfo {
            generation: u(0),
            log_floor: u(1),
            log_paths: u(2),
            entries: u(3),
        })
    }
}

/// Where a chunk can be found locally: `len` bytes (from the caller's
/// `ChunkRef`) at `offset` of the file at `path` (a set path). The file may
/// have changed since; a reader re-hashes what it copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkLocation {
    pub path: Vec<u8>,
    pub offset: u64,
}

/// Opens a table for reading; a table never written reads as absent.
fn read_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    def: TableDefinition<'_, K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, IndexError> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn decode_entry(path: &[u8], body: &[u8]) -> Result<Entry, IndexError> {
    let whole = |r: Reader<'_>, e: Entry| r.finish().map(|()| e);
    let mut r = Reader::new(body);
    Entry::decode_body(&mut r, path.to_vec())
        .and_then(|e| whole(r, e))
        .or_else(|err| {
            // A row written before entries carried extended attributes.
            let mut r = Reader::new(body);
            Entry::decode_body_v1(&mut r, path.to_vec())
                .and_then(|e| whole(r, e))
                .map_err(|_| err)
        })
        .map_err(|e| IndexError::Corrupt(format!("entry {}: {e}", String::from_utf8_lossy(path))))
}

/// See [`Index::attach_watcher`].
pub type WatcherProbe = Arc<dyn Fn() -> Option<usize> + Send + Sync>;

/// An open index file. Cheap to share between threads (`&Index`).
pub struct Index {
    db: RwLock<Database>,
    path: PathBuf,
    /// The file's disk space after the last compaction; see
    /// [`Index::compact_if_grown`].
    compacted_len: AtomicU64,
    /// See [`Index::with_compact_min`].
    compact_min: u64,
    id: u128,
    log_keep_min: u64,
    /// Per set: the live watcher in this process (see
    /// [`Index::watcher_pending`]).
    watched: Mutex<HashMap<String, WatcherProbe>>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Index({}, id {:032x})", self.path.display(), self.id)
    }
}

impl Index {
    /// Opens (creating it and the directory if needed) the index of one set,
    /// `<state>/sets/<set>.redb`. One file per set lets a node receive one
    /// set (`serve`) while it sends another (`sync`) from another process.
    ///
    /// # Errors
    /// As [`Index::open`].
    pub fn open_set(state_dir: &Path, set: &str) -> Result<Index, IndexError> {
        let dir = state_dir.join("sets");
        std::fs::create_dir_all(&dir).map_err(|source| IndexError::StateDir {
            path: dir.clone(),
            source,
        })?;
        Index::open_file(&dir.join(format!("{set}.redb")))
    }

    /// [`Index::open_set`], shared within this process: while any caller
    /// still holds the returned index, another call for the same file gets
    /// the same one. A file can be open only once per process (the lock is
    /// per process), and in the daemon the watcher of a set, the receiver
    /// serving a pull of it and the status figures all need it at once.
    ///
    /// # Errors
    /// As [`Index::open_set`].
    pub fn shared_set(state_dir: &Path, set: &str) -> Result<Arc<Index>, IndexError> {
        static OPEN: Mutex<Vec<(PathBuf, Weak<Index>)>> = Mutex::new(Vec::new());
        let key = state_dir.join("sets").join(format!("{set}.redb"));
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|(_, w)| w.strong_count() > 0);
        if let Some(i) = open.iter().find(|(p, _)| *p == key).and_then(|(_, w)| w.upgrade()) {
            return Ok(i);
        }
        let index = Arc::new(Index::open_set(state_dir, set)?);
        open.push((key, Arc::downgrade(&index)));
        Ok(index)
    }

    /// Opens (creating it and the directory if needed) `<state>/index.redb`.
    ///
    /// # Errors
    /// The directory cannot be created, the file is held by another process
    /// ([`IndexError::InUse`]), or it is not an index this build can read.
    pub fn open(state_dir: &Path) -> Result<Index, IndexError> {
        std::fs::create_dir_all(state_dir).map_err(|source| IndexError::StateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        Index::open_file(&state_dir.join(INDEX_FILE))
    }

    /// Opens (creating if needed) the index at an explicit file path. After
    /// a crash redb repairs the file here (from the last committed state).
    ///
    /// # Errors
    /// As [`Index::open`].
    pub fn open_file(path: &Path) -> Result<Index, IndexError> {
        // Never let redb create the file in place (`create.rs`).
        create::ensure(path)?;
        let mut db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| match e {
                DatabaseError::DatabaseAlreadyOpen => IndexError::InUse {
                    path: path.to_path_buf(),
                },
                source => IndexError::Open {
                    path: path.to_path_buf(),
                    source,
                },
            })?;
        let stored = {
            let txn = db.begin_read()?;
            match read_table(&txn, META)? {
                Some(meta) => {
                    let format = meta.get("format")?.map(|v| v.value().to_vec());
                    let id = meta.get("id")?.map(|v| v.value().to_vec());
                    Some((format, id))
                }
                None => None,
            }
        };
        let id = match stored {
            Some((Some(format), Some(id))) => {
                let found = format.try_into().map(u32::from_le_bytes).unwrap_or(0);
                if found == 1 || found == 2 {
                    if found == 1 {
                        migrate::from_format_1(&db)?;
                    }
                    migrate::from_format_2(&db)?;
                    // The old tables' pages are free now: give them back.
                    if let Err(e) = db.compact() {
                        tracing::warn!("index {}: compaction after the upgrade failed: {e}", path.display());
                    }
                } else if found != FORMAT {
                    return Err(IndexError::Format {
                        path: path.to_path_buf(),
                        found,
                    });
                }
                let id: [u8; 16] = id
                    .try_into()
                    .map_err(|_| IndexError::Corrupt("index id is not 16 bytes".into()))?;
                u128::from_le_bytes(id)
            }
            // Only a file made by an older build that stopped between
            // redb's initialization and this first commit.
            _ => {
                let id = random_id()?;
                let txn = db.begin_write()?;
                {
                    let mut meta = txn.open_table(META)?;
                    meta.insert("format", &FORMAT.to_le_bytes()[..])?;
                    meta.insert("id", &id.to_le_bytes()[..])?;
                }
                txn.commit()?;
                id
            }
        };
        let compacted_len = migrate::compacted_len(&db)?;
        let index = Index {
            db: RwLock::new(db),
            path: path.to_path_buf(),
            compacted_len: AtomicU64::new(compacted_len),
            compact_min: migrate::COMPACT_MIN,
            id,
            log_keep_min: LOG_KEEP_MIN,
            watched: Mutex::new(HashMap::new()),
        };
        // A file left grown by an older build, or a process that stopped
        // before its commits compacted it, is compacted once at start.
        index.compact_if_grown();
        Ok(index)
    }

    /// The database, for beginning a transaction (the lock is held only
    /// that long; the write side is compaction's).
    fn db(&self) -> std::sync::RwLockReadGuard<'_, Database> {
        self.db.read().unwrap_or_else(|p| p.into_inner())
    }

    /// A live watcher in this process attaches to a set (`Some`) or leaves
    /// it (`None`). Its probe answers [`Index::watcher_pending`]. In memory
    /// only: a new process trusts nothing until its own watcher has scanned.
    pub fn attach_watcher(&self, set: &str, probe: Option<WatcherProbe>) {
        let mut w = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        match probe {
            Some(p) => w.insert(set.to_string(), p),
            None => w.remove(set),
        };
    }

    /// What the set's live watcher says now: `Some(n)` when the stored set
    /// is the files as they are except `n` changes it has seen but not
    /// committed yet; `Some(0)` lets a reader skip its own stat scan.
    /// `None`: no watcher, or one that cannot see every change.
    pub fn watcher_pending(&self, set: &str) -> Option<usize> {
        let probe = {
            let w = self.watched.lock().unwrap_or_else(|p| p.into_inner());
            w.get(set).cloned()
        };
        probe.and_then(|p| p())
    }

    /// Changes the size below which the file is never compacted (default
    /// a few MiB); the crash test compacts small files.
    pub fn with_compact_min(mut self, bytes: u64) -> Index {
        self.compact_min = bytes;
        self
    }

    /// Changes the generation log's minimum budget (default
    /// [`LOG_KEEP_MIN`] path records); tests use a small one.
    pub fn with_log_keep_min(mut self, records: u64) -> Index {
        self.log_keep_min = records;
        self
    }

    /// The random id chosen when this index file was created. A peer that
    /// sees a different id knows the index was recreated and that earlier
    /// generations mean nothing.
    pub fn id(&self) -> u128 {
        self.id
    }

    /// The file this index lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The names of the sets that have been committed to.
    ///
    /// # Errors
    /// Storage errors.
    pub fn sets(&self) -> Result<Vec<String>, IndexError> {
        let txn = self.db().begin_read()?;
        let Some(t) = read_table(&txn, SETS)? else {
            return Ok(vec![]);
        };
        let mut out = vec![];
        for row in t.range::<&str>(..)? {
            out.push(row?.0.value().to_string());
        }
        Ok(out)
    }

    /// The peer position this set's replica was last completely in step
    /// with (see [`Index::commit_with_ack`]), or `None`.
    ///
    /// # Errors
    /// Storage errors, or a corrupt record.
    pub fn acked(&self, set: &str) -> Result<Option<Position>, IndexError> {
        let txn = self.db().begin_read()?;
        match read_table(&txn, ACKS)? {
            Some(t) => t.get(set)?.map(|v| Position::decode(v.value())).transpose(),
            None => Ok(None),
        }
    }

    /// Forgets the acknowledgement of a set: the next sync from the peer
    /// compares everything (after the replica changed behind our back, or
    /// before this node sends the set itself).
    ///
    /// # Errors
    /// Storage errors.
    pub fn clear_ack(&self, set: &str) -> Result<(), IndexError> {
        let txn = self.db().begin_write()?;
        txn.open_table(ACKS)?.remove(set)?;
        txn.commit()?;
        Ok(())
    }

    /// This index's own generation of `set` when its replica was last
    /// completely in step with the peer (the commit that recorded the
    /// acknowledgement, or [`Index::mark_synced`]), or `None` if never.
    ///
    /// # Errors
    /// Storage errors.
    pub fn synced(&self, set: &str) -> Result<Option<u64>, IndexError> {
        let txn = self.db().begin_read()?;
        match read_table(&txn, SYNCED)? {
            Some(t) => Ok(t.get(set)?.map(|v| v.value())),
            None => Ok(None),
        }
    }

    /// Records `generation` as the point this node's copy of `set` was in
    /// step with the peer. A receiver uses it when its own pre-apply scan
    /// found only leftovers of an interrupted apply or stray changes it is
    /// about to overwrite anyway, so they never count as its own writes.
    /// Never moves the mark backwards.
    ///
    /// # Errors
    /// Storage errors.
    pub fn mark_synced(&self, set: &str, generation: u64) -> Result<(), IndexError> {
        let txn = self.db().begin_write()?;
        {
            let mut t = txn.open_table(SYNCED)?;
            let old = t.get(set)?.map(|v| v.value());
            if old.is_none_or(|o| o < generation) {
                t.insert(set, generation)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The extended-attribute namespaces `set`'s entries were read with,
    /// as recorded by [`Index::set_xattr_namespaces`].
    ///
    /// # Errors
    /// Storage errors.
    pub fn xattr_namespaces(&self, set: &str) -> Result<Option<String>, IndexError> {
        let txn = self.db().begin_read()?;
        match read_table(&txn, XATTRS)? {
            Some(t) => Ok(t.get(set)?.map(|v| v.value().to_string())),
            None => Ok(None),
        }
    }

    /// Records the namespaces a full scan of `set` read attributes with.
    ///
    /// # Errors
    /// Storage errors.
    pub fn set_xattr_namespaces(&self, set: &str, namespaces: &str) -> Result<(), IndexError> {
        let txn = self.db().begin_write()?;
        txn.open_table(XATTRS)?.insert(set, namespaces)?;
        txn.commit()?;
        Ok(())
    }

    /// The mass-delete guard's stored count of `set` (opaque bytes), if any.
    ///
    /// # Errors
    /// Storage errors.
    pub fn guard_record(&self, set: &str) -> Result<Option<Vec<u8>>, IndexError> {
        let txn = self.db().begin_read()?;
        match read_table(&txn, GUARD)? {
            Some(t) => Ok(t.get(set)?.map(|v| v.value().to_vec())),
            None => Ok(None),
        }
    }

    /// Stores (or, with `None`, forgets) the guard's count of `set`.
    ///
    /// # Errors
    /// Storage errors.
    pub fn put_guard_record(&self, set: &str, record: Option<&[u8]>) -> Result<(), IndexError> {
        let txn = self.db().begin_write()?;
        {
            let mut t = txn.open_table(GUARD)?;
            match record {
                Some(r) => {
                    t.insert(set, r)?;
                }
                None => {
                    t.remove(set)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The paths this node changed (or deleted) that the peer does not
    /// have: the changes after `max(synced, peer_acked)`, where `synced` is
    /// [`Index::synced`] and `peer_acked` is the generation of this index
    /// the peer reports it last applied (from its `HelloOk.acked`, when the
    /// index id matches). `None` means it cannot be told — this node was
    /// never in step with the peer, or the log was trimmed past that point
    /// — and every entry must be treated as possibly not on the peer.
    ///
    /// # Errors
    /// Storage errors, or a log record that does not decode.
    pub fn unmirrored(&self, set: &str, peer_acked: Option<u64>) -> Result<Option<Vec<Vec<u8>>>, IndexError> {
        let Some(base) = self.synced(set)?.max(peer_acked) else {
            return Ok(None);
        };
        let current = self.generation(set)?;
        // A peer's acknowledgement of a generation this index never reached
        // (a rebuilt file with a reused id cannot happen; be safe anyway).
        self.changes_since(set, base.min(current))
    }

    /// A set's generation and counters (all zero for an unknown set).
    ///
    /// # Errors
    /// Storage errors, or a corrupt record.
    pub fn info(&self, set: &str) -> Result<SetInfo, IndexError> {
        let txn = self.db().begin_read()?;
        set_info(&txn, set)
    }

    /// The current generation of a set (0 if it was never committed).
    ///
    /// # Errors
    /// As [`Index::info`].
    pub fn generation(&self, set: &str) -> Result<u64, IndexError> {
        Ok(self.info(set)?.generation)
    }

    /// Every stored fingerprint of a set, read in one transaction, in one
    /// map (memory in proportion to the set: the full scan merges with a
    /// [`SetView`] instead; this is the tests' whole-tree oracle). `None` =
    /// unknown (the file must be read).
    ///
    /// # Errors
    /// Storage errors.
    pub fn fingerprints(&self, set: &str) -> Result<HashMap<Vec<u8>, Option<Fingerprint>>, IndexError> {
        let names = SetTables::new(set);
        let txn = self.db().begin_read()?;
        let (Some(t), Some(d)) = (read_table(&txn, names.rows())?, read_table(&txn, names.dir_paths())?) else {
            return Ok(HashMap::new());
        };
        let dir_paths = dirs::dir_paths(&d)?;
        let mut out = HashMap::with_capacity(t.len()? as usize);
        for row in t.range::<&[u8]>(..)? {
            let (k, v) = row?;
            let (id, name) = dirs::split_key(k.value())?;
            let dir = dir_paths
                .get(&id)
                .ok_or_else(|| IndexError::Corrupt(format!("row of unknown directory {id}")))?;
            out.insert(dirs::join(dir, name), store::row_fingerprint(v.value()));
        }
        Ok(out)
    }

    /// One entry of a set.
    ///
    /// # Errors
    /// Storage errors, or an entry that does not decode.
    pub fn entry(&self, set: &str, path: &[u8]) -> Result<Option<Entry>, IndexError> {
        let names = SetTables::new(set);
        let txn = self.db().begin_read()?;
        let (Some(t), Some(d)) = (read_table(&txn, names.rows())?, read_table(&txn, names.dirs())?) else {
            return Ok(None);
        };
        let (dir, name) = dirs::split(path);
        let Some(id) = d.get(dir)?.map(|v| v.value()) else {
            return Ok(None);
        };
        t.get(&dirs::key(id, name)[..])?
            .map(|v| store::decode_row(path, v.value()))
            .transpose()
    }

    /// All entries of a set in path byte order, from one consistent
    /// snapshot (later commits are not seen by the iterator).
    ///
    /// # Errors
    /// Storage errors; each item may also fail to decode.
    pub fn entries(&self, set: &str) -> Result<Entries, IndexError> {
        let names = SetTables::new(set);
        let txn = self.db().begin_read()?;
        let rows = match (read_table(&txn, names.rows())?, read_table(&txn, names.dirs())?) {
            (Some(t), Some(d)) => Some(dirs::Ordered::new(t, &d)?),
            _ => None,
        };
        Ok(Entries { rows })
    }

    /// The paths changed or deleted by the generations after `since`, sorted
    /// and without duplicates: a sender whose peer acknowledged `since`
    /// offers each path's current entry (absent = deleted). `Some(empty)`
    /// when `since` is the current generation. `None` when `since` is not a
    /// generation this index can answer for (newer than the current one, or
    /// older than the trimmed log): the caller must compare everything.
    ///
    /// # Errors
    /// Storage errors, or a log record that does not decode.
    pub fn changes_since(&self, set: &str, since: u64) -> Result<Option<Vec<Vec<u8>>>, IndexError> {
        let names = SetTables::new(set);
        let txn = self.db().begin_read()?;
        let info = set_info(&txn, set)?;
        if since > info.generation || since < info.log_floor {
            return Ok(None);
        }
        let mut paths = BTreeSet::new();
        if let Some(log) = read_table(&txn, names.log())? {
            for row in log.range(since + 1..)? {
                let (g, record) = row?;
                for p in store::decode_log(record.value())
                    .map_err(|e| IndexError::Corrupt(format!("log of generation {}: {e}", g.value())))?
                {
                    paths.insert(p);
                }
            }
        }
        Ok(Some(paths.into_iter().collect()))
    }

    /// Finds, for each hash, a file of the set that held that chunk when it
    /// was committed. One read transaction for the whole batch.
    ///
    /// # Errors
    /// Storage errors, or a malformed locator record.
    pub fn locate_chunks(&self, set: &str, hashes: &[Hash]) -> Result<Vec<Option<ChunkLocation>>, IndexError> {
        let names = SetTables::new(set);
        let txn = self.db().begin_read()?;
        let (Some(table), Some(d)) = (read_table(&txn, names.locator())?, read_table(&txn, names.dir_paths())?) else {
            return Ok(vec![None; hashes.len()]);
        };
        let mut out = Vec::with_capacity(hashes.len());
        for h in hashes {
            let prefix = &h[..store::HASH_PREFIX];
            let mut rows = match store::next_prefix(prefix) {
                Some(after) => table.range::<&[u8]>(prefix..&after[..])?,
                None => table.range::<&[u8]>(prefix..)?,
            };
            let found = match rows.next() {
                Some(row) => {
                    let (k, v) = row?;
                    let (id, name) = dirs::split_key(&k.value()[store::HASH_PREFIX..])?;
                    let dir = d
                        .get(id)?
                        .ok_or_else(|| IndexError::Corrupt(format!("chunk location in unknown directory {id}")))?;
                    Some(ChunkLocation {
                        path: dirs::join(dir.value(), name),
                        offset: store::decode_locator_value(v.value())?,
                    })
                }
                None => None,
            };
            out.push(found);
        }
        Ok(out)
    }

    /// [`Index::locate_chunks`] for one hash.
    ///
    /// # Errors
    /// As [`Index::locate_chunks`].
    pub fn locate_chunk(&self, set: &str, hash: &Hash) -> Result<Option<ChunkLocation>, IndexError> {
        Ok(self.locate_chunks(set, std::slice::from_ref(hash))?.pop().flatten())
    }

    /// Checks that the set's tables agree with each other (every row
    /// decodes, every file's chunks are located and every locator points
    /// into a file holding that chunk, the log is
    /// contiguous up to the generation, the counters match). Returns the
    /// problems found; empty means consistent. Reads the whole set.
    ///
    /// # Errors
    /// Storage errors.
    pub fn verify(&self, set: &str) -> Result<Vec<String>, IndexError> {
        let txn = self.db().begin_read()?;
        verify::verify(&txn, set)
    }
}

fn set_info(txn: &ReadTransaction, set: &str) -> Result<SetInfo, IndexError> {
    match read_table(txn, SETS)? {
        Some(t) => match t.get(set)? {
            Some(v) => SetInfo::decode(v.value()),
            None => Ok(SetInfo::default()),
        },
        None => Ok(SetInfo::default()),
    }
}

/// Iterator over a set's entries; see [`Index::entries`].
pub struct Entries {
    rows: Option<dirs::Ordered>,
}

impl Iterator for Entries {
    type Item = Result<Entry, IndexError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(
            self.rows
                .as_mut()?
                .next()?
                .and_then(|(path, row)| store::decode_row(&path, &row)),
        )
    }
}

/// 128 random bits from the kernel.
fn random_id() -> Result<u128, IndexError> {
    let mut b = [0u8; 16];
    let mut filled = 0;
    while filled < b.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `b`.
        let n = unsafe { libc::getrandom(b[filled..].as_mut_ptr().cast(), b.len() - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(IndexError::Random(e));
            }
        } else {
            filled += n as usize;
        }
    }
    Ok(u128::from_le_bytes(b))
}

#[cfg(test)]
mod size_tests;
#[cfg(test)]
mod tests;
