//! The destination tree of one set on the receiver: maps a set path (bytes,
//! relative to `/`) to this node's local path and enforces the design's
//! confinement rules — the path must lie inside one of the set's roots and
//! must not pass through a symlink below the root. The roots themselves and
//! what lies above them are the administrator's and are trusted (a root may
//! be a symlink to another disk). Knows nothing of plans or the network.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::config::MirrorSet;

use super::ApplyError;

#[derive(Debug, Clone)]
struct Root {
    /// Set path of the root without leading `/` (`var/spool/lpd`).
    rel: Vec<u8>,
    dir: bool,
}

/// One set's roots under one node's `root` prefix.
#[derive(Debug, Clone)]
pub struct Dest {
    base: PathBuf,
    roots: Vec<Root>,
}

impl Dest {
    pub fn new(base: &Path, set: &MirrorSet) -> Dest {
        let roots = set
            .roots
            .iter()
            .map(|r| Root {
                rel: r.path.as_os_str().as_bytes()[1..].to_vec(),
                dir: r.dir,
            })
            .collect();
        Dest {
            base: base.to_path_buf(),
            roots,
        }
    }

    /// The local path of a set path, without any check.
    pub fn local(&self, path: &[u8]) -> PathBuf {
        self.base.join(OsStr::from_bytes(path))
    }

    /// The local paths of the roots, for walking the replica.
    pub fn root_paths(&self) -> impl Iterator<Item = (PathBuf, bool)> + '_ {
        self.roots.iter().map(|r| (self.local(&r.rel), r.dir))
    }

    /// The root a set path belongs to, and the length of the root prefix.
    fn root_of(&self, path: &[u8]) -> Option<&Root> {
        self.roots.iter().find(|r| {
            path == r.rel.as_slice()
                || (r.dir && path.len() > r.rel.len() && path.starts_with(&r.rel) && path[r.rel.len()] == b'/')
        })
    }

    /// Whether `path` is one of the roots itself.
    pub fn is_root(&self, path: &[u8]) -> bool {
        self.roots.iter().any(|r| r.rel == path)
    }

    /// Maps `path` to its local path after checking it is well formed, lies
    /// inside a root, and that no existing component between the root and
    /// the path's parent is a symlink or a non-directory.
    pub fn resolve(&self, path: &[u8]) -> Result<PathBuf, ApplyError> {
        let show = || String::from_utf8_lossy(path).into_owned();
        hamirror_wire::entry::check_path(path).map_err(|why| ApplyError::UnsafePath { path: show(), why })?;
        let root = self.root_of(path).ok_or_else(|| ApplyError::UnsafePath {
            path: show(),
            why: "outside the set's roots",
        })?;
        let mut cur = self.local(&root.rel);
        if path.len() > root.rel.len() {
            let rest = &path[root.rel.len() + 1..];
            let comps: Vec<&[u8]> = rest.split(|b| *b == b'/').collect();
            for comp in &comps[..comps.len() - 1] {
                cur.push(OsStr::from_bytes(comp));
                match std::fs::symlink_metadata(&cur) {
                    Ok(m) if m.file_type().is_symlink() => {
                        return Err(ApplyError::UnsafePath {
                            path: show(),
                            why: "passes through a symlink",
                        });
                    }
                    Ok(m) if !m.is_dir() => {
                        return Err(ApplyError::UnsafePath {
                            path: show(),
                            why: "a parent is not a directory",
                        });
                    }
                    Ok(_) => {}
                    Err(_) => break, // missing parents are created inside the root
                }
            }
        }
        Ok(self.local(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ChunkParams, SetRoot};

    fn set() -> MirrorSet {
        MirrorSet {
            name: "Fx".into(),
            file: "/c/Fx".into(),
            roots: vec![
                SetRoot {
                    path: "/srv/data".into(),
                    dir: true,
                    line: 1,
                },
                SetRoot {
                    path: "/etc/x.conf".into(),
                    dir: false,
                    line: 1,
                },
            ],
            chunk: ChunkParams::default(),
            delete_limit: 50,
        }
    }

    #[test]
    fn paths_are_confined_to_the_roots() {
        let tmp = tempfile::tempdir().unwrap();
        let d = Dest::new(tmp.path(), &set());
        assert_eq!(d.resolve(b"srv/data/a/b").unwrap(), tmp.path().join("srv/data/a/b"));
        assert!(d.resolve(b"etc/x.conf").is_ok());
        for bad in [
            &b"etc/passwd"[..],
            b"srv/database",
            b"srv/data/../../etc/passwd",
            b"/srv/data/a",
            b"etc/x.conf/y",
        ] {
            assert!(d.resolve(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_path_through_a_symlink_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("srv/data")).unwrap();
        std::os::unix::fs::symlink("/etc", tmp.path().join("srv/data/evil")).unwrap();
        let d = Dest::new(tmp.path(), &set());
        let err = d.resolve(b"srv/data/evil/passwd").unwrap_err();
        assert!(err.to_string().contains("passes through a symlink"), "{err}");
        // The symlink itself may be replaced: it is the last component.
        assert!(d.resolve(b"srv/data/evil").is_ok());
    }
}
