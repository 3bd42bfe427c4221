//! The journal of temporary files a receiver creates for one set, kept in the
//! node's state directory. Written (and fsynced) before the temp files are
//! created, so that after a crash the next run finds every temp file: those
//! it can reuse keep their verified pieces, and the rest are removed when the
//! run completes — no stray temp files survive a completed run.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Default)]
pub struct Journal {
    path: PathBuf,
    listed: Vec<PathBuf>,
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
        let mut listed = Vec::new();
        match File::open(path) {
            Ok(f) => {
                for line in BufReader::new(f).lines() {
                    // A torn last line (crash mid-append) is ignored.
                    if let Some(b) = unhex(line?.trim()) {
                        listed.push(PathBuf::from(std::ffi::OsStr::from_bytes(&b)));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(Journal {
            path: path.to_path_buf(),
            listed,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Temp files listed by earlier runs that did not complete.
    pub fn listed(&self) -> &[PathBuf] {
        &self.listed
    }

    /// Appends temp paths and makes them durable before they are created.
    pub fn record<'a>(&mut self, temps: impl Iterator<Item = &'a Path>) -> io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = OpenOptions::new().create(true).append(true).open(&self.path)?;
        let mut text = String::new();
        for t in temps {
            text.push_str(&hex(t.as_os_str().as_bytes()));
            text.push('\n');
            self.listed.push(t.to_path_buf());
        }
        f.write_all(text.as_bytes())?;
        f.sync_data()
    }

    /// Removes every listed temp file still present, then the journal.
    pub fn clear(&mut self) -> io::Result<()> {
        for t in self.listed.drain(..) {
            match std::fs::remove_file(&t) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_temps_survive_reopen_and_are_removed_on_clear() {
        let tmp = tempfile::tempdir().unwrap();
        let stray = tmp.path().join(".a \u{1}\n.x.hamirror-tmp");
        std::fs::write(&stray, b"partial").unwrap();
        let jpath = tmp.path().join("state/journal/Fx");
        let mut j = Journal::open(&jpath).unwrap();
        j.record([stray.as_path()].into_iter()).unwrap();
        drop(j);
        // A torn line from a crash mid-append is ignored.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&jpath)
            .unwrap()
            .write_all(b"6162z")
            .unwrap();
        let mut j = Journal::open(&jpath).unwrap();
        assert_eq!(j.listed(), std::slice::from_ref(&stray));
        j.clear().unwrap();
        assert!(!stray.exists());
        assert!(!jpath.exists());
    }
}
