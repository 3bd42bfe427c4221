//! Creating an index file so that a crash can never leave a half-made one
//! at its name. redb initializes a new file in place (it sizes the file,
//! writes its header, and only then the magic number): a process killed in
//! between leaves a file that every later open refuses as "Not a redb
//! database", and the set is stuck. Here a new index is made complete
//! (header, format, id) under a temporary name and only then linked into
//! place. A file left half-made by an older build is recognized (no magic
//! number, and nothing written past the header) and replaced; anything
//! else that redb refuses is left alone and reported, never discarded.
//! Knows redb's file layout only as far as that check needs; nothing of
//! sets or entries.

use std::io::Read;
use std::path::{Path, PathBuf};

use redb::Database;

use super::{CACHE_BYTES, FORMAT, IndexError, META, random_id};

/// redb's file header: magic number, layout and two commit slots
/// (`DB_HEADER_SIZE` in redb's `header.rs`).
const REDB_HEADER: u64 = 320;
/// redb's magic number, the first bytes of a complete file.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];
/// A half-made file is at most redb's initial size (about 1 MiB); a
/// larger one without a magic number is something else, not read through.
const HALF_MADE_MAX: u64 = 16 << 20;

fn create_error(path: &Path, source: std::io::Error) -> IndexError {
    IndexError::Create {
        path: path.to_path_buf(),
        source,
    }
}

/// The temporary name a new index is made under, beside its final one.
fn temp_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".creating");
    path.with_file_name(name)
}

/// Makes sure a complete index file (redb header, format, id) exists at
/// `path`: does nothing when one is there, creates one otherwise.
///
/// # Errors
/// The file cannot be created, written or linked into place, or another
/// process is creating it right now ([`IndexError::InUse`]).
pub(super) fn ensure(path: &Path) -> Result<(), IndexError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) if !half_made(path)? => return Ok(()),
        Ok(_) => {
            tracing::warn!(
                "index {} was left half-created by a process that stopped (no redb header, no data): creating it again",
                path.display()
            );
            std::fs::remove_file(path).map_err(|e| create_error(path, e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(create_error(path, e)),
    }
    let temp = temp_name(path);
    // A leftover of a creation that was killed: it never had a name that
    // anything else reads, so it holds nothing to keep.
    match std::fs::remove_file(&temp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(create_error(&temp, e)),
    }
    {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&temp)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => IndexError::InUse {
                    path: path.to_path_buf(),
                },
                source => IndexError::Open {
                    path: temp.clone(),
                    source,
                },
            })?;
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert("format", &FORMAT.to_le_bytes()[..])?;
            meta.insert("id", &random_id()?.to_le_bytes()[..])?;
        }
        // Durable (redb syncs the file) before it gets its name.
        txn.commit()?;
    }
    // A link fails if `path` appeared meanwhile (another process created
    // it first): theirs is kept, ours dropped. Never replaces a file.
    let linked = std::fs::hard_link(&temp, path);
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(create_error(path, e)),
    }
    // The new name must survive a crash too.
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| create_error(dir, e))?;
    }
    Ok(())
}

/// Whether the file at `path` is what redb leaves when killed while
/// creating it: no magic number, a size no larger than a new file's, and
/// nothing but zeros after the header (redb writes no page before the magic
/// number). Such a file never held a commit.
fn half_made(path: &Path) -> Result<bool, IndexError> {
    let mut f = std::fs::File::open(path).map_err(|e| create_error(path, e))?;
    let len = f.metadata().map_err(|e| create_error(path, e))?.len();
    if len > HALF_MADE_MAX {
        return Ok(false);
    }
    let mut head = [0u8; REDB_MAGIC.len()];
    let n = read_full(&mut f, &mut head).map_err(|e| create_error(path, e))?;
    if n == head.len() && head == REDB_MAGIC {
        return Ok(false);
    }
    if len == 0 {
        // redb initializes an empty file itself.
        return Ok(false);
    }
    let mut rest = Vec::with_capacity(len as usize);
    f.read_to_end(&mut rest).map_err(|e| create_error(path, e))?;
    let body = rest.get((REDB_HEADER as usize).saturating_sub(n)..).unwrap_or(&[]);
    Ok(body.iter().all(|&b| b == 0))
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Index;

    /// The first `REDB_HEADER` bytes of a freshly created redb file.
    fn real_header() -> Vec<u8> {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x.redb");
        drop(Database::create(&p).unwrap());
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[..REDB_MAGIC.len()], &REDB_MAGIC, "redb's magic number changed");
        bytes[..REDB_HEADER as usize].to_vec()
    }

    #[test]
    fn a_file_left_by_a_creation_killed_before_the_magic_number_is_created_again() {
        let tmp = tempfile::tempdir().unwrap();
        let header = real_header();
        let mut no_magic = header.clone();
        no_magic[..REDB_MAGIC.len()].fill(0);
        // What redb leaves at each step before the magic number: the file
        // sized but still zeros, a few bytes of header, the header without
        // the magic number, a stale temporary file beside it.
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("zeros", vec![0; 1 << 20]),
            ("short", no_magic[..40].to_vec()),
            (
                "nomagic",
                [no_magic.clone(), vec![0; (1 << 20) - no_magic.len()]].concat(),
            ),
        ];
        for (name, bytes) in cases {
            let path = tmp.path().join(format!("{name}.redb"));
            std::fs::write(&path, &bytes).unwrap();
            // What an open did before this fix, and why the set was stuck.
            let raw = Database::create(&path).err().map(|e| e.to_string());
            assert!(
                raw.as_deref().is_some_and(|e| e.contains("Not a redb database")),
                "{name}: {raw:?}"
            );
            std::fs::write(&path, &bytes).unwrap();
            std::fs::write(temp_name(&path), b"stale").unwrap();
            let idx = Index::open_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            let id = idx.id();
            assert_eq!(idx.generation("S").unwrap(), 0);
            drop(idx);
            assert!(!temp_name(&path).exists(), "{name}: temporary file left");
            assert_eq!(Index::open_file(&path).unwrap().id(), id, "{name}: not created once");
        }
    }

    #[test]
    fn a_file_with_data_but_no_magic_number_is_refused_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("i.redb");
        {
            let idx = Index::open_file(&path).unwrap();
            idx.set_xattr_namespaces("S", "user").unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[..REDB_MAGIC.len()].fill(0);
        std::fs::write(&path, &bytes).unwrap();
        let err = Index::open_file(&path).unwrap_err();
        assert!(err.to_string().contains("Not a redb database"), "{err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "an index holding data was changed"
        );
    }

    #[test]
    fn a_new_index_appears_complete_and_no_temporary_file_stays() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("n.redb");
        let id = Index::open_file(&path).unwrap().id();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..REDB_MAGIC.len()], &REDB_MAGIC);
        assert!(!temp_name(&path).exists());
        assert_eq!(Index::open_file(&path).unwrap().id(), id);
    }
}
