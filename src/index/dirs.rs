//! Format 3's keys: a set's file rows and chunk locator rows name a file by
//! its directory's number and its own name, not by its whole path (issue
//! 17: the path was the largest part of both rows). Here: the key
//! encodings, the two small tables that map directory paths to numbers and
//! back, and the iterator that reads the rows back in whole-path byte
//! order. Knows redb and paths; nothing of entries' contents.
//!
//! A key is the directory number (4 bytes, big-endian, so one directory's
//! rows are contiguous) and the name. The root's files (no `/`) are in the
//! directory `""`. A directory number is given when its first row is
//! written and taken back when its last row goes.

use std::collections::HashMap;

use redb::{ReadOnlyTable, ReadableTable, Table, TableDefinition, WriteTransaction};

use super::IndexError;

type Bytes = &'static [u8];

/// The directory and the name of a path (`""` for a top-level one).
pub(super) fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// The path of `name` in directory `dir`.
pub(super) fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    if !dir.is_empty() {
        p.extend_from_slice(dir);
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// A file key: the directory number, then the name.
pub(super) fn key(dir: u32, name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + name.len());
    k.extend_from_slice(&dir.to_be_bytes());
    k.extend_from_slice(name);
    k
}

/// The directory number and the name of a file key.
pub(super) fn split_key(key: &[u8]) -> Result<(u32, &[u8]), IndexError> {
    match key.split_first_chunk::<4>() {
        Some((d, name)) if !name.is_empty() => Ok((u32::from_be_bytes(*d), name)),
        _ => Err(IndexError::Corrupt(format!("file key of {} bytes", key.len()))),
    }
}

/// The keys of every row of directory `dir`: `[dir, dir + 1)`.
pub(super) fn dir_range(dir: u32) -> (Vec<u8>, Option<Vec<u8>>) {
    let next = dir.checked_add(1).map(|n| n.to_be_bytes().to_vec());
    (dir.to_be_bytes().to_vec(), next)
}

/// The table names of one set.
pub(super) struct SetTables {
    rows: String,
    changes: String,
    locator: String,
    dirs: String,
    dir_paths: String,
}

impl SetTables {
    pub(super) fn new(set: &str) -> SetTables {
        SetTables {
            rows: format!("{set}/rows"),
            changes: format!("{set}/changes"),
            locator: format!("{set}/where"),
            dirs: format!("{set}/dirs"),
            dir_paths: format!("{set}/dirpaths"),
        }
    }
    /// File key → row (`store.rs`).
    pub(super) fn rows(&self) -> TableDefinition<'_, Bytes, Bytes> {
        TableDefinition::new(&self.rows)
    }
    pub(super) fn log(&self) -> TableDefinition<'_, u64, Bytes> {
        TableDefinition::new(&self.changes)
    }
    /// Hash prefix and file key → offset.
    pub(super) fn locator(&self) -> TableDefinition<'_, Bytes, Bytes> {
        TableDefinition::new(&self.locator)
    }
    /// Directory path → number.
    pub(super) fn dirs(&self) -> TableDefinition<'_, Bytes, u32> {
        TableDefinition::new(&self.dirs)
    }
    /// Number → directory path.
    pub(super) fn dir_paths(&self) -> TableDefinition<'_, u32, Bytes> {
        TableDefinition::new(&self.dir_paths)
    }
}

/// The directory tables inside a write transaction.
pub(super) struct DirIds<'t> {
    dirs: Table<'t, Bytes, u32>,
    paths: Table<'t, u32, Bytes>,
    known: HashMap<Vec<u8>, Option<u32>>,
}

impl<'t> DirIds<'t> {
    pub(super) fn open(txn: &'t WriteTransaction, names: &SetTables) -> Result<DirIds<'t>, IndexError> {
        Ok(DirIds {
            dirs: txn.open_table(names.dirs())?,
            paths: txn.open_table(names.dir_paths())?,
            known: HashMap::new(),
        })
    }

    /// The number of directory `dir`, if it has one.
    pub(super) fn get(&mut self, dir: &[u8]) -> Result<Option<u32>, IndexError> {
        if let Some(id) = self.known.get(dir) {
            return Ok(*id);
        }
        let id = self.dirs.get(dir)?.map(|v| v.value());
        self.known.insert(dir.to_vec(), id);
        Ok(id)
    }

    /// The number of directory `dir`, given now if it has none.
    pub(super) fn get_or_add(&mut self, dir: &[u8]) -> Result<u32, IndexError> {
        if let Some(id) = self.get(dir)? {
            return Ok(id);
        }
        let id = match self.paths.last()? {
            Some((last, _)) => last
                .value()
                .checked_add(1)
                .ok_or_else(|| IndexError::Corrupt("directory numbers exhausted".into()))?,
            None => 0,
        };
        self.dirs.insert(dir, id)?;
        self.paths.insert(id, dir)?;
        self.known.insert(dir.to_vec(), Some(id));
        Ok(id)
    }

    /// Takes back the number of directory `id` if `rows` holds no row of it.
    pub(super) fn drop_if_empty(&mut self, id: u32, rows: &Table<'_, Bytes, Bytes>) -> Result<(), IndexError> {
        let (lo, hi) = dir_range(id);
        let empty = match &hi {
            Some(hi) => rows.range::<&[u8]>(&lo[..]..&hi[..])?.next().is_none(),
            None => rows.range::<&[u8]>(&lo[..]..)?.next().is_none(),
        };
        if empty {
            let path = self.paths.remove(id)?.map(|v| v.value().to_vec());
            if let Some(path) = path {
                self.dirs.remove(&path[..])?;
                self.known.remove(&path);
            }
        }
        Ok(())
    }
}

/// Every directory path by number, read from one snapshot.
pub(super) fn dir_paths(t: &ReadOnlyTable<u32, Bytes>) -> Result<HashMap<u32, Vec<u8>>, IndexError> {
    let mut out = HashMap::new();
    for row in t.range::<u32>(..)? {
        let (id, path) = row?;
        out.insert(id.value(), path.value().to_vec());
    }
    Ok(out)
}

/// Rows read back in whole-path byte order: a walk of the directory tree
/// that emits the subtree of a directory `c` in its parent's run of names
/// just before the first name that sorts after `c/` (so `c.txt` < `c/x` <
/// `c0`, as in byte order). Holds one open range per level.
pub(super) struct Ordered {
    rows: ReadOnlyTable<Bytes, Bytes>,
    ids: HashMap<Vec<u8>, u32>,
    /// Directory path → its subdirectories' names, in the order of
    /// `name/`.
    children: HashMap<Vec<u8>, Vec<Vec<u8>>>,
    stack: Vec<Frame>,
}

struct Frame {
    path: Vec<u8>,
    range: Option<redb::Range<'static, Bytes, Bytes>>,
    next_row: Option<(Vec<u8>, Vec<u8>)>,
    children: std::iter::Peekable<std::vec::IntoIter<Vec<u8>>>,
}

impl Ordered {
    pub(super) fn new(
        rows: ReadOnlyTable<Bytes, Bytes>,
        dirs: &ReadOnlyTable<Bytes, u32>,
    ) -> Result<Ordered, IndexError> {
        let mut ids = HashMap::new();
        let mut children: HashMap<Vec<u8>, Vec<Vec<u8>>> = HashMap::new();
        let mut placed = std::collections::HashSet::new();
        for row in dirs.range::<&[u8]>(..)? {
            let (path, id) = row?;
            let path = path.value().to_vec();
            // The directory and every ancestor, which may hold no rows.
            let mut p = &path[..];
            while !p.is_empty() && placed.insert(p.to_vec()) {
                let (parent, name) = split(p);
                children.entry(parent.to_vec()).or_default().push(name.to_vec());
                p = parent;
            }
            ids.insert(path, id.value());
        }
        for list in children.values_mut() {
            list.sort_by_cached_key(|name| [&name[..], b"/"].concat());
        }
        let mut o = Ordered {
            rows,
            ids,
            children,
            stack: vec![],
        };
        let root = o.frame(vec![])?;
        o.stack.push(root);
        Ok(o)
    }

    fn frame(&mut self, path: Vec<u8>) -> Result<Frame, IndexError> {
        let range = match self.ids.get(&path) {
            Some(&id) => Some(match dir_range(id) {
                (lo, Some(hi)) => self.rows.range::<&[u8]>(&lo[..]..&hi[..])?,
                (lo, None) => self.rows.range::<&[u8]>(&lo[..]..)?,
            }),
            None => None,
        };
        let children = self.children.remove(&path).unwrap_or_default();
        Ok(Frame {
            path,
            range,
            next_row: None,
            children: children.into_iter().peekable(),
        })
    }
}

impl Iterator for Ordered {
    /// A whole path and its row.
    type Item = Result<(Vec<u8>, Vec<u8>), IndexError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let top = self.stack.last_mut()?;
            if top.next_row.is_none()
                && let Some(range) = top.range.as_mut()
            {
                match range.next() {
                    Some(Ok((k, v))) => match split_key(k.value()) {
                        Ok((_, name)) => top.next_row = Some((name.to_vec(), v.value().to_vec())),
                        Err(e) => return Some(Err(e)),
                    },
                    Some(Err(e)) => return Some(Err(e.into())),
                    None => top.range = None,
                }
            }
            let subtree_first = match (top.children.peek(), &top.next_row) {
                (Some(c), Some((name, _))) => [&c[..], b"/"].concat() < *name,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if subtree_first {
                let c = top.children.next().unwrap_or_default();
                let path = join(&top.path, &c);
                match self.frame(path) {
                    Ok(f) => self.stack.push(f),
                    Err(e) => return Some(Err(e)),
                }
                continue;
            }
            if let Some((name, row)) = top.next_row.take() {
                return Some(Ok((join(&top.path, &name), row)));
            }
            self.stack.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_and_join_back() {
        for p in [&b"a"[..], b"a/b", b"a/b/c.txt"] {
            let (d, n) = split(p);
            assert_eq!(join(d, n), p);
            let k = key(7, n);
            assert_eq!(split_key(&k).unwrap(), (7, n));
        }
        assert_eq!(split(b"x/y/z"), (&b"x/y"[..], &b"z"[..]));
        assert!(split_key(&[0, 0, 0, 1]).is_err());
        assert!(split_key(&[0, 1]).is_err());
        assert_eq!(dir_range(u32::MAX).1, None);
    }
}
