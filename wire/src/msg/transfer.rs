//! The transfer: the receiver's `Need` batches and `NeedEnd`, the sender's
//! `Unavailable` batches, and `Chunk` — one chunk's data, raw or zstd, sent
//! on uni streams. A chunk message carries everything needed to bound its
//! decompression (`raw_len`); decompressing and checking the hash is the
//! transport's job, not this crate's.

use crate::codec::{DecodeError, Reader, Writer};
use crate::entry::{Hash, MAX_CHUNK};
use crate::frame::{FrameError, HEADER_LEN, frame_header};
use crate::msg::{MAX_BATCH_HASHES, MsgType};

pub(crate) fn put_hashes(w: &mut Writer, hashes: &[Hash]) {
    w.varint(hashes.len() as u64);
    for h in hashes {
        w.raw(h);
    }
}

pub(crate) fn get_hashes(r: &mut Reader<'_>) -> Result<Vec<Hash>, DecodeError> {
    let n = r.count("hash count", MAX_BATCH_HASHES, 32)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(r.hash("chunk hash")?);
    }
    Ok(v)
}

/// The end of the receiver's needs, with totals for progress and checking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeedEnd {
    /// Hashes sent in `Need` messages (or, in a dry run, that would be).
    pub chunks: u64,
    /// Their raw bytes.
    pub bytes: u64,
    /// Chunks of the offer the receiver found in its own files.
    pub reused: u64,
}

impl NeedEnd {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.varint(self.chunks).varint(self.bytes).varint(self.reused);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<NeedEnd, DecodeError> {
        Ok(NeedEnd {
            chunks: r.varint("needed chunks")?,
            bytes: r.varint("needed bytes")?,
            reused: r.varint("reused chunks")?,
        })
    }
}

/// How a chunk's data is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Compression {
    None = 0,
    /// A single zstd frame; only used when shorter than the raw chunk.
    Zstd = 1,
}

/// One chunk's data, borrowed from a frame payload: what a transport
/// decodes without copying the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkView<'a> {
    /// The conversation (`Hello::session`) the chunk belongs to.
    pub session: u64,
    /// BLAKE3 of the raw data.
    pub hash: Hash,
    /// Length of the raw data: 1..=[`MAX_CHUNK`]. Decompress into at most
    /// this many bytes, then check the length and the hash.
    pub raw_len: u32,
    pub compression: Compression,
    /// `raw_len` bytes if raw; 1..raw_len bytes if compressed.
    pub data: &'a [u8],
}

impl<'a> ChunkView<'a> {
    pub(crate) fn encode(&self, w: &mut Writer) {
        self.encode_fields(w);
        w.raw(self.data);
    }

    /// Everything but the data bytes themselves (their length prefix included).
    fn encode_fields(&self, w: &mut Writer) {
        w.varint(self.session)
            .raw(&self.hash)
            .varint(self.raw_len.into())
            .u8(self.compression as u8)
            .varint(self.data.len() as u64);
    }

    /// Decodes a `Chunk` payload without copying the data.
    pub fn decode(payload: &'a [u8]) -> Result<ChunkView<'a>, DecodeError> {
        let mut r = Reader::new(payload);
        let v = ChunkView::decode_from(&mut r)?;
        r.finish()?;
        Ok(v)
    }

    pub(crate) fn decode_from(r: &mut Reader<'a>) -> Result<ChunkView<'a>, DecodeError> {
        let session = r.varint("session")?;
        let hash = r.hash("chunk hash")?;
        let raw_len = r.bounded("chunk raw length", MAX_CHUNK.into())? as u32;
        if raw_len == 0 {
            return Err(DecodeError::Invalid {
                what: "chunk raw length",
                value: 0,
            });
        }
        let compression = match r.u8("compression")? {
            0 => Compression::None,
            1 => Compression::Zstd,
            v => {
                return Err(DecodeError::Invalid {
                    what: "compression",
                    value: v.into(),
                });
            }
        };
        let data = r.bytes("chunk data", MAX_CHUNK as usize)?;
        let ok = match compression {
            Compression::None => data.len() == raw_len as usize,
            // Compression is only worth sending when it saves space, which
            // also bounds compressed data by the chunk limit.
            Compression::Zstd => !data.is_empty() && data.len() < raw_len as usize,
        };
        if !ok {
            return Err(DecodeError::Invalid {
                what: "chunk data length (for its raw length and compression)",
                value: data.len() as u64,
            });
        }
        Ok(ChunkView {
            session,
            hash,
            raw_len,
            compression,
            data,
        })
    }

    /// The frame header and message fields that precede the data: write
    /// this, then `self.data`, and the peer reads one `Chunk` frame. Saves
    /// copying a chunk into a frame buffer.
    pub fn frame_head(&self) -> Result<Vec<u8>, FrameError> {
        let mut w = Writer::new();
        w.raw(&[0; HEADER_LEN]);
        self.encode_fields(&mut w);
        let payload_len = w.buf.len() - HEADER_LEN + self.data.len();
        let h = frame_header(MsgType::Chunk as u8, payload_len)?;
        w.buf[..HEADER_LEN].copy_from_slice(&h);
        Ok(w.buf)
    }

    pub fn to_owned(&self) -> Chunk {
        Chunk {
            session: self.session,
            hash: self.hash,
            raw_len: self.raw_len,
            compression: self.compression,
            data: self.data.to_vec(),
        }
    }
}

/// One chunk's data, owned. See [`ChunkView`] for the fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub session: u64,
    pub hash: Hash,
    pub raw_len: u32,
    pub compression: Compression,
    pub data: Vec<u8>,
}

impl Chunk {
    pub fn view(&self) -> ChunkView<'_> {
        ChunkView {
            session: self.session,
            hash: self.hash,
            raw_len: self.raw_len,
            compression: self.compression,
            data: &self.data,
        }
    }
}
