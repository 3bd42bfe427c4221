//! The offer: batches of entries and deleted paths, the head and chunk-list
//! continuation of a file too large for one batch, and `OfferEnd` with the
//! totals the receiver checks (and applies its mass-delete guard to). The
//! same `Entries`/`FileHead`/`ChunkList` messages carry a verify manifest.
//! Path shapes are checked here; whether a path is inside the set's roots is
//! the receiver's business.

use crate::codec::{DecodeError, Reader, Writer};
use crate::entry::{self, ChunkRef, Entry, Hash, MAX_CHUNK, MAX_CHUNKS, MODE_MASK, Xattr, check_path};
use crate::msg::{MAX_BATCH_ENTRIES, MAX_CHUNK_LIST, MAX_ROOTS};

/// Reads a path and checks its shape ([`check_path`]).
fn get_path(r: &mut Reader<'_>, what: &'static str) -> Result<Vec<u8>, DecodeError> {
    let p = r.bytes(what, entry::MAX_PATH)?;
    check_path(p).map_err(|_| DecodeError::Invalid {
        what,
        value: p.len() as u64,
    })?;
    Ok(p.to_vec())
}

/// `v1`: as protocol version 1 encodes them (no attributes).
pub(crate) fn put_entries(w: &mut Writer, entries: &[Entry], v1: bool) {
    w.varint(entries.len() as u64);
    for e in entries {
        if v1 {
            w.bytes(&e.path);
            e.encode_body_v1(w);
        } else {
            e.encode(w);
        }
    }
}

pub(crate) fn get_entries(r: &mut Reader<'_>, v1: bool) -> Result<Vec<Entry>, DecodeError> {
    // The smallest entry: path of 1 byte (2) + kind, mode, uid, gid, mtime, size (6).
    let n = r.count("entry count", MAX_BATCH_ENTRIES, 8)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(if v1 {
            let path = get_path(r, "entry path")?;
            Entry::decode_body_v1(r, path)?
        } else {
            Entry::decode(r)?
        });
    }
    Ok(v)
}

pub(crate) fn put_paths(w: &mut Writer, paths: &[Vec<u8>]) {
    w.varint(paths.len() as u64);
    for p in paths {
        w.bytes(p);
    }
}

pub(crate) fn get_paths(r: &mut Reader<'_>, count: &'static str, limit: u64) -> Result<Vec<Vec<u8>>, DecodeError> {
    let n = r.count(count, limit, 2)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(get_path(r, "path")?);
    }
    Ok(v)
}

pub(crate) fn put_chunk_list(w: &mut Writer, chunks: &[ChunkRef]) {
    w.varint(chunks.len() as u64);
    for c in chunks {
        w.raw(&c.hash).varint(c.len.into());
    }
}

pub(crate) fn get_chunk_list(r: &mut Reader<'_>) -> Result<Vec<ChunkRef>, DecodeError> {
    let n = r.count("chunk list count", MAX_CHUNK_LIST, 33)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let hash = r.hash("chunk hash")?;
        let len = r.bounded("chunk length", MAX_CHUNK.into())? as u32;
        if len == 0 {
            return Err(DecodeError::Invalid {
                what: "chunk length",
                value: 0,
            });
        }
        v.push(ChunkRef { hash, len });
    }
    Ok(v)
}

/// The first part of a file entry whose chunk list is sent in `ChunkList`
/// messages that follow it immediately (see [`crate::batch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHead {
    pub path: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub size: u64,
    pub file_hash: Hash,
    /// How many chunks the following `ChunkList` messages hold in total.
    pub chunks: u64,
    /// The file's extended attributes, as in an [`Entry`].
    pub xattrs: Vec<Xattr>,
}

impl FileHead {
    /// The head of a file entry (its chunk list goes separately).
    pub fn of(e: &Entry) -> FileHead {
        FileHead {
            path: e.path.clone(),
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            mtime_ns: e.mtime_ns,
            size: e.size,
            file_hash: e.file_hash,
            chunks: e.chunks.len() as u64,
            xattrs: e.xattrs.clone(),
        }
    }

    /// The entry, once its chunks have all arrived.
    pub fn into_entry(self, chunks: Vec<ChunkRef>) -> Entry {
        Entry {
            path: self.path,
            kind: entry::EntryKind::File,
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            mtime_ns: self.mtime_ns,
            size: self.size,
            file_hash: self.file_hash,
            chunks,
            target: vec![],
            xattrs: self.xattrs,
        }
    }

    pub(crate) fn encode(&self, w: &mut Writer, v1: bool) {
        w.bytes(&self.path)
            .varint(self.mode.into())
            .varint(self.uid.into())
            .varint(self.gid.into())
            .ivarint(self.mtime_ns)
            .varint(self.size)
            .raw(&self.file_hash)
            .varint(self.chunks);
        if !v1 {
            entry::put_xattrs(w, &self.xattrs);
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>, v1: bool) -> Result<FileHead, DecodeError> {
        let h = FileHead {
            path: get_path(r, "file head path")?,
            mode: r.bounded("mode", MODE_MASK.into())? as u32,
            uid: r.u32("uid")?,
            gid: r.u32("gid")?,
            mtime_ns: r.ivarint("mtime")?,
            size: r.varint("size")?,
            file_hash: r.hash("file hash")?,
            chunks: r.bounded("file head chunk count", MAX_CHUNKS)?,
            xattrs: if v1 { vec![] } else { entry::get_xattrs(r)? },
        };
        // Every chunk holds 1..=MAX_CHUNK bytes.
        if h.chunks == 0 || h.size < h.chunks || h.size > h.chunks.saturating_mul(MAX_CHUNK.into()) {
            return Err(DecodeError::Invalid {
                what: "file head size (impossible for its chunk count)",
                value: h.size,
            });
        }
        Ok(h)
    }
}

/// What the offer is relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listing {
    /// Every entry of the set: the receiver deletes whatever is not listed.
    Full,
    /// Only what changed since generation `base` of the same index, which
    /// must be the generation the receiver acknowledged (`HelloOk::acked`).
    Delta { base: u64 },
}

/// The end of an offer (or of nothing: an empty offer is just this).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferEnd {
    /// The generation offered (equal to `Hello::offer`).
    pub generation: u64,
    pub listing: Listing,
    /// Entries sent in this offer (`Entries` items plus `FileHead`s).
    pub entries: u64,
    /// Paths sent in `Deletes` messages; 0 for a full listing.
    pub deletes: u64,
    /// Sum of the sizes of the entries sent.
    pub bytes: u64,
    /// Entries in the sender's whole set at this generation.
    pub set_entries: u64,
    /// Sum of the sizes in the sender's whole set.
    pub set_bytes: u64,
    /// Set roots that are missing or empty on the sender (an unmounted disk
    /// looks like this): the receiver refuses to delete for them unless forced.
    pub empty_roots: Vec<Vec<u8>>,
}

impl OfferEnd {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.varint(self.generation);
        match self.listing {
            Listing::Full => w.u8(0),
            Listing::Delta { base } => w.u8(1).varint(base),
        };
        w.varint(self.entries)
            .varint(self.deletes)
            .varint(self.bytes)
            .varint(self.set_entries)
            .varint(self.set_bytes);
        put_paths(w, &self.empty_roots);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<OfferEnd, DecodeError> {
        let generation = r.varint("generation")?;
        let listing = match r.u8("listing")? {
            0 => Listing::Full,
            1 => Listing::Delta {
                base: r.varint("base generation")?,
            },
            v => {
                return Err(DecodeError::Invalid {
                    what: "listing",
                    value: v.into(),
                });
            }
        };
        let end = OfferEnd {
            generation,
            listing,
            entries: r.varint("offered entries")?,
            deletes: r.varint("offered deletes")?,
            bytes: r.varint("offered bytes")?,
            set_entries: r.varint("set entries")?,
            set_bytes: r.varint("set bytes")?,
            empty_roots: get_paths(r, "empty root count", MAX_ROOTS)?,
        };
        if end.listing == Listing::Full && end.deletes != 0 {
            return Err(DecodeError::Invalid {
                what: "deletes in a full listing",
                value: end.deletes,
            });
        }
        Ok(end)
    }
}
