//! The journal of temporary files a receiver creates for one set, kept in the
//! node's state directory. Written (and fsynced) before the temp files are
//! created, so that after a crash the next run finds every temp file: those
//! it can reuse keep their verified pieces, and the rest are removed when the
//! run completes — no stray temp files survive a completed run. It also
//! keeps the mtime each directory had before the run first changed it, so a
//! later run gives an interrupted run's directories their true times back.
//!
//! One line per record, paths as hex: `HEX` a temp file's set path (or, from
//! older versions, its absolute path), `d HEX MTIME_NS` a directory.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::Dest;

#[derive(Debug, Default)]
pub struct Journal {
    path: PathBuf,
    listed: Vec<Vec<u8>>,
    dirs: HashMap<Vec<u8>, i64>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Journal {
    /// Opens the journal at `path`, reading what an earlier run listed.
    pub fn open(path: &Path) -> io::Result<Journal> {
        let mut j = Journal {
            path: path.to_path_buf(),
            ..Journal::default()
        };
        match File::open(path) {
            Ok(f) => {
                for line in BufReader::new(f).lines() {
                    // A torn last line (crash mid-append) is ignored.
                    let line = line?;
                    let mut words = line.split_whitespace();
                    match (words.next(), words.next(), words.next()) {
                        (Some(h), None, None) => j.listed.extend(unhex(h)),
                        (Some("d"), Some(h), Some(ns)) => {
                            if let (Some(dir), Ok(ns)) = (unhex(h), ns.parse()) {
                                // The first record is the time before any run.
                                j.dirs.entry(dir).or_insert(ns);
                            }
                        }
                        _ => {}
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(j)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether an earlier run left anything behind (it was interrupted).
    pub fn is_empty(&self) -> bool {
        self.listed.is_empty() && self.dirs.is_empty()
    }

    /// The temp files listed by earlier runs that did not complete, as set
    /// paths (older journals held absolute paths: those under the set's
    /// base are translated, others dropped).
    pub fn leftovers(&self, dest: &Dest) -> Vec<Vec<u8>> {
        self.listed
            .iter()
            .filter_map(|p| {
                if p.first() == Some(&b'/') {
                    dest.set_path_of(Path::new(std::ffi::OsStr::from_bytes(p)))
                } else {
                    Some(p.clone())
                }
            })
            .filter(|p| dest.is_own(p))
            .collect()
    }

    /// The mtime an interrupted run found `dir` with, if it changed it.
    pub fn dir_mtime(&self, dir: &[u8]) -> Option<i64> {
        self.dirs.get(dir).copied()
    }

    /// Appends temp files' set paths and directories' mtimes, and makes
    /// them durable before the temp files are created.
    pub fn record(&mut self, temps: &[Vec<u8>], dirs: &[(Vec<u8>, i64)]) -> io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = OpenOptions::new().create(true).append(true).open(&self.path)?;
        let mut text = String::new();
        for (d, ns) in dirs {
            text.push_str(&format!("d {} {ns}\n", hex(d)));
            self.dirs.entry(d.clone()).or_insert(*ns);
        }
        // Only written: what this run lists it removes itself (renamed,
        // or removed with a failed file); `listed` stays the earlier runs'.
        for t in temps {
            text.push_str(&hex(t));
            text.push('\n');
        }
        f.write_all(text.as_bytes())?;
        f.sync_data()
    }

    /// Removes the temp files earlier runs listed that are still present
    /// (through `dest`: never through a symlink).
    pub fn remove_leftovers(&mut self, dest: &Dest) {
        for t in self.leftovers(dest) {
            if super::is_temp_name(super::dest::split(&t).1) {
                let _ = dest.remove(&t);
            }
        }
        self.listed.clear();
    }

    /// Forgets everything: the run completed (or gave up cleanly).
    pub fn clear(&mut self) -> io::Result<()> {
        self.listed.clear();
        self.dirs.clear();
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ChunkParams, MirrorSet};

    #[test]
    fn listed_temps_and_dir_times_survive_reopen_and_go_on_clear() {
        let tmp = tempfile::tempdir().unwrap();
        let set = MirrorSet::for_tests("Fx", "/c/Fx".into(), &[("/srv", true)], ChunkParams::default());
        let base = tmp.path().join("root");
        std::fs::create_dir_all(base.join("srv")).unwrap();
        let dest = Dest::new(&base, &set);
        let stray = b"srv/.a \x01\n.0123456789abcdef.hamirror-tmp".to_vec();
        std::fs::write(base.join(std::ffi::OsStr::from_bytes(&stray)), b"partial").unwrap();
        let legacy = base.join("srv/.b.fedcba9876543210.hamirror-tmp");
        std::fs::write(&legacy, b"partial").unwrap();
        let jpath = tmp.path().join("state/journal/Fx");
        let mut j = Journal::open(&jpath).unwrap();
        j.record(std::slice::from_ref(&stray), &[(b"srv".to_vec(), 7)]).unwrap();
        j.record(&[], &[(b"srv".to_vec(), 9)]).unwrap();
        drop(j);
        // An older version's absolute path, then a torn line from a crash
        // mid-append (ignored).
        let mut f = std::fs::OpenOptions::new().append(true).open(&jpath).unwrap();
        writeln!(f, "{}", hex(legacy.as_os_str().as_encoded_bytes())).unwrap();
        f.write_all(b"6162z").unwrap();
        let mut j = Journal::open(&jpath).unwrap();
        assert_eq!(
            j.leftovers(&dest),
            vec![stray.clone(), b"srv/.b.fedcba9876543210.hamirror-tmp".to_vec()]
        );
        assert_eq!(j.dir_mtime(b"srv"), Some(7), "the first time recorded wins");
        j.remove_leftovers(&dest);
        j.clear().unwrap();
        assert!(!legacy.exists());
        assert_eq!(std::fs::read_dir(base.join("srv")).unwrap().count(), 0);
        assert!(!jpath.exists());
    }
}
