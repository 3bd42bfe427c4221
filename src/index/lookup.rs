//! Reading the fingerprints of part of a set: named paths and whole
//! subtrees, in one read transaction. The scanner's targeted mode (`watch`)
//! compares a few changed paths with the index without loading every
//! fingerprint of the set, which [`Index::fingerprints`] does for a full
//! scan. Reads only; knows nothing of the filesystem.

use std::collections::HashMap;

use super::{Fingerprint, Index, IndexError};

impl Index {
    /// The stored fingerprints of `paths` (those that are indexed) and of
    /// every indexed path strictly below each of `trees`, read from one
    /// snapshot. `None` = unknown (the file must be read).
    ///
    /// # Errors
    /// Storage errors.
    pub fn fingerprints_of(
        &self,
        set: &str,
        paths: &[&[u8]],
        trees: &[&[u8]],
    ) -> Result<HashMap<Vec<u8>, Option<Fingerprint>>, IndexError> {
        let view = self.view(set)?;
        let mut out = HashMap::with_capacity(paths.len());
        for p in paths {
            if let Some(fp) = view.get(p)? {
                out.insert(p.to_vec(), fp);
            }
        }
        for tree in trees {
            for (id, dir) in view.dirs_below(tree)? {
                out.extend(view.paths_in(id, &dir)?);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use hamirror_wire::{Entry, EntryKind};

    use super::*;
    use crate::index::Upsert;

    fn dir(path: &str, ino: u64) -> Upsert {
        Upsert {
            entry: Entry {
                path: path.as_bytes().to_vec(),
                kind: EntryKind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime_ns: 1,
                size: 0,
                file_hash: [0; 32],
                chunks: vec![],
                target: vec![],
                xattrs: vec![],
            },
            stat: (ino > 0).then_some(Fingerprint {
                dev: 1,
                ino,
                size: 0,
                mtime_ns: 1,
                ctime_ns: 1,
            }),
        }
    }

    #[test]
    fn named_paths_and_subtrees_are_found_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let index = Index::open(tmp.path()).unwrap();
        let all = ["a", "a/b", "a/b/c", "a/bc", "a.x", "a0", "b", "b/unknown"];
        let ups: Vec<Upsert> = all
            .iter()
            .enumerate()
            .map(|(i, p)| dir(p, if *p == "b/unknown" { 0 } else { i as u64 + 1 }))
            .collect();
        index.commit("S", &ups, &[]).unwrap();

        let got = index.fingerprints_of("S", &[b"a", b"nope"], &[b"a/b", b"b"]).unwrap();
        let mut keys: Vec<&[u8]> = got.keys().map(|k| &k[..]).collect();
        keys.sort_unstable();
        assert_eq!(keys, vec![&b"a"[..], b"a/b/c", b"b/unknown"]);
        assert_eq!(got[&b"a"[..]].unwrap().ino, 1);
        assert_eq!(got[&b"b/unknown"[..]], None);
        // `a` as a tree covers a/b, a/b/c, a/bc but not a.x or a0.
        let got = index.fingerprints_of("S", &[], &[b"a"]).unwrap();
        assert_eq!(got.len(), 3);
        assert!(index.fingerprints_of("T", &[b"a"], &[b"a"]).unwrap().is_empty());
    }
}
