//! A manifest entry: what one path of a set is (file, directory, symlink,
//! hard link), with its metadata and, for a file, its chunk list. This is
//! the unit the sender offers and the index stores. Decoding validates the
//! shape of every path (relative, no `.`/`..`/empty components, no NUL,
//! bounded length); whether a path lies inside a set's roots and does not
//! pass through a symlink is for the receiver to check against its disk.

use crate::codec::{DecodeError, Reader, Writer};

/// A BLAKE3 hash.
pub type Hash = [u8; 32];

/// Longest path or symlink target accepted (Linux `PATH_MAX`).
pub const MAX_PATH: usize = 4096;
/// Largest chunk: the `fastcdc` 2020 maximum.
pub const MAX_CHUNK: u32 = 16 << 20;
/// Most chunks in one entry (a 1 TiB file at 64 KiB average).
pub const MAX_CHUNKS: u64 = 1 << 24;
/// Permission bits only (`07777`); the kind is carried separately.
pub const MODE_MASK: u32 = 0o7777;

/// One content-defined chunk of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkRef {
    pub hash: Hash,
    pub len: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EntryKind {
    File = 0,
    Dir = 1,
    Symlink = 2,
    /// A further name of a file already in the set: `target` holds the
    /// path of the first name (in byte order) of the same inode.
    HardLink = 3,
}

impl EntryKind {
    fn from_u8(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            0 => EntryKind::File,
            1 => EntryKind::Dir,
            2 => EntryKind::Symlink,
            3 => EntryKind::HardLink,
            _ => {
                return Err(DecodeError::Invalid {
                    what: "entry kind",
                    value: v.into(),
                });
            }
        })
    }
}

/// One path of a set with everything needed to recreate it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to `/` as the cluster names it: `var/spool/lpd/queue/a`.
    /// Raw bytes: Linux file names need not be UTF-8.
    pub path: Vec<u8>,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time in nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Bytes for a file, 0 otherwise.
    pub size: u64,
    /// For a file: [`file_hash`] of its chunks. Zero otherwise.
    pub file_hash: Hash,
    pub chunks: Vec<ChunkRef>,
    /// Symlink target, or the first name of a hard link.
    pub target: Vec<u8>,
}

/// The identity of a file's content, derived from its chunk list:
/// BLAKE3 over each chunk's hash followed by its length (little endian u32).
pub fn file_hash(chunks: &[ChunkRef]) -> Hash {
    let mut h = blake3::Hasher::new();
    for c in chunks {
        h.update(&c.hash);
        h.update(&c.len.to_le_bytes());
    }
    *h.finalize().as_bytes()
}

/// Checks the shape of a set-relative path: non-empty, relative, no empty,
/// `.` or `..` components, no NUL, at most [`MAX_PATH`] bytes.
pub fn check_path(p: &[u8]) -> Result<(), &'static str> {
    if p.is_empty() {
        return Err("empty path");
    }
    if p.len() > MAX_PATH {
        return Err("path too long");
    }
    if p[0] == b'/' {
        return Err("absolute path");
    }
    if p.contains(&0) {
        return Err("NUL in path");
    }
    if p.split(|b| *b == b'/').any(|c| c.is_empty() || c == b"." || c == b"..") {
        return Err("empty, '.' or '..' component in path");
    }
    Ok(())
}

fn decode_path<'a>(r: &mut Reader<'a>, what: &'static str) -> Result<&'a [u8], DecodeError> {
    let p = r.bytes(what, MAX_PATH)?;
    check_path(p).map_err(|_| DecodeError::Invalid {
        what,
        value: p.len() as u64,
    })?;
    Ok(p)
}

impl Entry {
    /// Encodes the whole entry, path first.
    pub fn encode(&self, w: &mut Writer) {
        w.bytes(&self.path);
        self.encode_body(w);
    }

    /// Encodes everything but the path (the index keys entries by path).
    pub fn encode_body(&self, w: &mut Writer) {
        w.u8(self.kind as u8)
            .varint(self.mode.into())
            .varint(self.uid.into())
            .varint(self.gid.into())
            .ivarint(self.mtime_ns)
            .varint(self.size);
        match self.kind {
            EntryKind::File => {
                w.raw(&self.file_hash).varint(self.chunks.len() as u64);
                for c in &self.chunks {
                    w.raw(&c.hash).varint(c.len.into());
                }
            }
            EntryKind::Dir => {}
            EntryKind::Symlink | EntryKind::HardLink => {
                w.bytes(&self.target);
            }
        }
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<Entry, DecodeError> {
        let path = decode_path(r, "entry path")?.to_vec();
        Entry::decode_body(r, path)
    }

    /// Decodes what [`Entry::encode_body`] wrote, for the given path.
    pub fn decode_body(r: &mut Reader<'_>, path: Vec<u8>) -> Result<Entry, DecodeError> {
        let kind = EntryKind::from_u8(r.u8("entry kind")?)?;
        let mode = r.bounded("mode", MODE_MASK.into())? as u32;
        let uid = r.u32("uid")?;
        let gid = r.u32("gid")?;
        let mtime_ns = r.ivarint("mtime")?;
        let size = r.varint("size")?;
        let mut e = Entry {
            path,
            kind,
            mode,
            uid,
            gid,
            mtime_ns,
            size,
            file_hash: [0; 32],
            chunks: vec![],
            target: vec![],
        };
        match kind {
            EntryKind::File => {
                e.file_hash = r.hash("file hash")?;
                let n = r.count("chunk count", MAX_CHUNKS, 33)?;
                e.chunks.reserve_exact(n);
                let mut total: u64 = 0;
                for _ in 0..n {
                    let hash = r.hash("chunk hash")?;
                    let len = r.bounded("chunk length", MAX_CHUNK.into())? as u32;
                    if len == 0 {
                        return Err(DecodeError::Invalid {
                            what: "chunk length",
                            value: 0,
                        });
                    }
                    total += u64::from(len);
                    e.chunks.push(ChunkRef { hash, len });
                }
                if total != size {
                    return Err(DecodeError::Invalid {
                        what: "file size (differs from the sum of its chunks)",
                        value: size,
                    });
                }
            }
            EntryKind::Dir => {
                if size != 0 {
                    return Err(DecodeError::Invalid {
                        what: "directory size",
                        value: size,
                    });
                }
            }
            EntryKind::Symlink => {
                let t = r.bytes("symlink target", MAX_PATH)?;
                if t.is_empty() || t.contains(&0) {
                    return Err(DecodeError::Invalid {
                        what: "symlink target",
                        value: t.len() as u64,
                    });
                }
                e.target = t.to_vec();
            }
            EntryKind::HardLink => e.target = decode_path(r, "hard link target")?.to_vec(),
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file() -> Entry {
        let chunks = vec![ChunkRef { hash: [1; 32], len: 10 }, ChunkRef { hash: [2; 32], len: 5 }];
        Entry {
            path: b"var/spool/lpd/a \xff".to_vec(),
            kind: EntryKind::File,
            mode: 0o644,
            uid: 1000,
            gid: 100,
            mtime_ns: 1_700_000_000_123_456_789,
            size: 15,
            file_hash: file_hash(&chunks),
            chunks,
            target: vec![],
        }
    }

    #[test]
    fn entries_round_trip() {
        let mut link = file();
        link.kind = EntryKind::Symlink;
        link.chunks.clear();
        link.size = 0;
        link.file_hash = [0; 32];
        link.target = b"../x".to_vec();
        for e in [file(), link] {
            let mut w = Writer::new();
            e.encode(&mut w);
            let mut r = Reader::new(&w.buf);
            assert_eq!(Entry::decode(&mut r).unwrap(), e);
            r.finish().unwrap();
        }
    }

    #[test]
    fn frozen_dir_entry_bytes() {
        let e = Entry {
            path: b"etc/x".to_vec(),
            kind: EntryKind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime_ns: -1,
            size: 0,
            file_hash: [0; 32],
            chunks: vec![],
            target: vec![],
        };
        let mut w = Writer::new();
        e.encode(&mut w);
        assert_eq!(w.buf, [5, b'e', b't', b'c', b'/', b'x', 1, 0xed, 0x03, 0, 0, 1, 0]);
    }

    #[test]
    fn unsafe_paths_and_inconsistent_sizes_are_refused() {
        for bad in [&b"/etc/passwd"[..], b"a/../../b", b"a//b", b"./a", b"a/\0", b""] {
            assert!(check_path(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut e = file();
        e.size = 16;
        let mut w = Writer::new();
        e.encode(&mut w);
        assert!(Entry::decode(&mut Reader::new(&w.buf)).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Entry::decode(&mut Reader::new(&data));
        }
    }
}
