//! A read-only view of one set's rows, one directory at a time, from one
//! snapshot: what the full scan merges with each directory it lists
//! (issue 17). Loading every fingerprint of the set into a map
//! ([`Index::fingerprints`]) cost memory in proportion to the tree (485 MB
//! for a million files); through this view a scan holds the rows of the
//! directories it is merging, and what changed. Reads only; knows nothing
//! of the filesystem.
//!
//! The view is shared by the scan's threads: redb's read-only tables can
//! be read from several threads at once, and all of them see the same
//! snapshot, however many commits happen meanwhile.

use redb::{ReadOnlyTable, ReadableDatabase};

use super::dirs::{self, SetTables};
use super::store::row_fingerprint;
use super::{Fingerprint, Index, IndexError, read_table};

type Bytes = &'static [u8];

/// A name (or path) and its stored fingerprint (`None` = unknown).
pub type Stored = (Vec<u8>, Option<Fingerprint>);

/// One set's rows as they were when the view was opened; see the module
/// documentation.
pub struct SetView {
    /// `None` when the set has never been committed.
    tables: Option<Tables>,
}

struct Tables {
    rows: ReadOnlyTable<Bytes, Bytes>,
    dirs: ReadOnlyTable<Bytes, u32>,
    paths: ReadOnlyTable<u32, Bytes>,
}

/// The stored rows of one directory: its number, and each name with its
/// fingerprint (`None` = unknown), in name byte order.
#[derive(Debug, Default)]
pub struct DirRows {
    pub id: u32,
    pub rows: Vec<Stored>,
}

impl Index {
    /// A view of `set`'s rows for a merging scan; see [`SetView`].
    ///
    /// # Errors
    /// Storage errors.
    pub fn view(&self, set: &str) -> Result<SetView, IndexError> {
        let names = SetTables::new(set);
        let txn = self.db().begin_read()?;
        let tables = match (
            read_table(&txn, names.rows())?,
            read_table(&txn, names.dirs())?,
            read_table(&txn, names.dir_paths())?,
        ) {
            (Some(rows), Some(dirs), Some(paths)) => Some(Tables { rows, dirs, paths }),
            _ => None,
        };
        Ok(SetView { tables })
    }
}

impl SetView {
    /// The rows of the directory `dir` (a set path; `""` for the top
    /// level), or `None` when it holds none.
    ///
    /// # Errors
    /// Storage errors, or a malformed key.
    pub fn dir(&self, dir: &[u8]) -> Result<Option<DirRows>, IndexError> {
        let Some(t) = &self.tables else {
            return Ok(None);
        };
        let Some(id) = t.dirs.get(dir)?.map(|v| v.value()) else {
            return Ok(None);
        };
        Ok(Some(DirRows {
            id,
            rows: t.rows_of(id)?,
        }))
    }

    /// The stored fingerprint of one path: `None` when it is not indexed,
    /// `Some(None)` when its fingerprint is unknown.
    ///
    /// # Errors
    /// Storage errors.
    pub fn get(&self, path: &[u8]) -> Result<Option<Option<Fingerprint>>, IndexError> {
        let Some(t) = &self.tables else {
            return Ok(None);
        };
        let (dir, name) = dirs::split(path);
        let Some(id) = t.dirs.get(dir)?.map(|v| v.value()) else {
            return Ok(None);
        };
        Ok(t.rows
            .get(&dirs::key(id, name)[..])?
            .map(|v| row_fingerprint(v.value())))
    }

    /// Every indexed directory at or below `path` (the directory `path`
    /// and those whose path starts with `path/`), by number and path.
    ///
    /// # Errors
    /// Storage errors.
    pub fn dirs_below(&self, path: &[u8]) -> Result<Vec<(u32, Vec<u8>)>, IndexError> {
        let Some(t) = &self.tables else {
            return Ok(vec![]);
        };
        let mut out: Vec<(u32, Vec<u8>)> = t
            .dirs
            .get(path)?
            .map(|v| (v.value(), path.to_vec()))
            .into_iter()
            .collect();
        // Paths below `path` sort between `path/` and `path0` ('0' is the
        // byte after '/').
        let (mut lo, mut hi) = (path.to_vec(), path.to_vec());
        lo.push(b'/');
        hi.push(b'/' + 1);
        for row in t.dirs.range::<&[u8]>(&lo[..]..&hi[..])? {
            let (k, v) = row?;
            out.push((v.value(), k.value().to_vec()));
        }
        Ok(out)
    }

    /// The whole paths of the rows of directory number `id` (whose path is
    /// `dir`), with their fingerprints.
    ///
    /// # Errors
    /// Storage errors, or a malformed key.
    pub fn paths_in(&self, id: u32, dir: &[u8]) -> Result<Vec<Stored>, IndexError> {
        let Some(t) = &self.tables else {
            return Ok(vec![]);
        };
        Ok(t.rows_of(id)?
            .into_iter()
            .map(|(name, fp)| (dirs::join(dir, &name), fp))
            .collect())
    }

    /// Calls `f` with the number and path of every indexed directory, in
    /// number order (the scan's last step: rows of directories it never
    /// reached).
    ///
    /// # Errors
    /// Storage errors, or what `f` returns.
    pub fn each_dir(&self, mut f: impl FnMut(u32, &[u8]) -> Result<(), IndexError>) -> Result<(), IndexError> {
        let Some(t) = &self.tables else {
            return Ok(());
        };
        for row in t.paths.range::<u32>(..)? {
            let (id, path) = row?;
            f(id.value(), path.value())?;
        }
        Ok(())
    }
}

impl Tables {
    fn rows_of(&self, id: u32) -> Result<Vec<Stored>, IndexError> {
        let range = match dirs::dir_range(id) {
            (lo, Some(hi)) => self.rows.range::<&[u8]>(&lo[..]..&hi[..])?,
            (lo, None) => self.rows.range::<&[u8]>(&lo[..]..)?,
        };
        let mut out = Vec::new();
        for row in range {
            let (k, v) = row?;
            let (_, name) = dirs::split_key(k.value())?;
            out.push((name.to_vec(), row_fingerprint(v.value())));
        }
        Ok(out)
    }
}
