//! Deltas inside changed chunks, rsync style: the receiver's `NeedDelta`
//! requests (a chunk hash plus the signature of a base it already holds:
//! per block a 32-bit rolling checksum and 8 bytes of BLAKE3), and the
//! sender's `ChunkDelta` answers (copy-block and literal operations, the
//! literals raw or zstd). Only the shapes and bounds live here; computing a
//! signature or a delta and rebuilding a chunk from one is the engine's job
//! (`src/delta`), which also checks the block indices against the base.

use crate::codec::{DecodeError, Reader, Writer};
use crate::entry::{Hash, MAX_CHUNK};
use crate::msg::Compression;

/// Most requests in one `NeedDelta` message.
pub const MAX_BATCH_DELTAS: u64 = 1 << 16;
/// Longest base a signature may describe: two of the largest chunks (a base
/// is the old bytes around a changed chunk, with some slack).
pub const MAX_BASE: u32 = 2 * MAX_CHUNK;
/// Most blocks in one signature (1.5 MiB of checksums).
pub const MAX_BLOCKS: u64 = 1 << 17;
/// Smallest block size, unless the whole base is one shorter block: tiny
/// blocks only make the sender's scan slow.
pub const MIN_BLOCK: u32 = 64;
/// Largest block size.
pub const MAX_BLOCK: u32 = 1 << 20;
/// Bytes of the strong (BLAKE3) hash kept per block.
pub const STRONG_LEN: usize = 8;

/// One block's checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockSum {
    /// The rolling checksum of the block's bytes (see `src/delta`).
    pub weak: u32,
    /// The first [`STRONG_LEN`] bytes of the BLAKE3 hash of the block.
    pub strong: [u8; STRONG_LEN],
}

/// The signature of a base: its length, the block size and one
/// [`BlockSum`] per block. Block `i` covers base bytes
/// `[i * block_size, min((i + 1) * block_size, base_len))`: the last block
/// is shorter when `base_len` is not a multiple of `block_size`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// `min(MIN_BLOCK, base_len) ..= min(MAX_BLOCK, base_len)`.
    pub block_size: u32,
    /// `1 ..= MAX_BASE`.
    pub base_len: u32,
    /// Exactly `ceil(base_len / block_size)` sums.
    pub blocks: Vec<BlockSum>,
}

impl Signature {
    /// The number of blocks a base of `base_len` bytes has with blocks of
    /// `block_size` (which must not be 0).
    pub fn block_count(base_len: u32, block_size: u32) -> u64 {
        u64::from(base_len).div_ceil(u64::from(block_size.max(1)))
    }

    /// The base bytes block `i` covers (empty past the end).
    pub fn block_range(&self, i: u32) -> std::ops::Range<u64> {
        let len = u64::from(self.base_len);
        let start = (u64::from(i) * u64::from(self.block_size)).min(len);
        start..(start + u64::from(self.block_size)).min(len)
    }

    fn encode(&self, w: &mut Writer) {
        w.varint(self.block_size.into()).varint(self.base_len.into());
        for b in &self.blocks {
            w.raw(&b.weak.to_be_bytes()).raw(&b.strong);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Signature, DecodeError> {
        let block_size = r.bounded("block size", MAX_BLOCK.into())? as u32;
        let base_len = r.bounded("base length", MAX_BASE.into())? as u32;
        if base_len == 0 {
            return Err(DecodeError::Invalid {
                what: "base length",
                value: 0,
            });
        }
        if block_size > base_len || block_size < MIN_BLOCK.min(base_len) {
            return Err(DecodeError::Invalid {
                what: "block size (for the base length)",
                value: block_size.into(),
            });
        }
        let n = Signature::block_count(base_len, block_size);
        if n > MAX_BLOCKS {
            return Err(DecodeError::TooLarge {
                what: "signature blocks",
                value: n,
                limit: MAX_BLOCKS,
            });
        }
        if (r.remaining() as u64) < n * (4 + STRONG_LEN as u64) {
            return Err(DecodeError::Truncated {
                what: "signature blocks",
                needed: (n * (4 + STRONG_LEN as u64)) as usize - r.remaining(),
            });
        }
        let mut blocks = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let mut weak = [0u8; 4];
            weak.copy_from_slice(r.raw(4, "weak checksum")?);
            let mut strong = [0u8; STRONG_LEN];
            strong.copy_from_slice(r.raw(STRONG_LEN, "strong checksum")?);
            blocks.push(BlockSum {
                weak: u32::from_be_bytes(weak),
                strong,
            });
        }
        Ok(Signature {
            block_size,
            base_len,
            blocks,
        })
    }
}

/// One chunk the receiver lacks, asked for as a delta against a base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaRequest {
    /// BLAKE3 of the chunk wanted.
    pub hash: Hash,
    pub signature: Signature,
}

pub(crate) fn put_requests(w: &mut Writer, reqs: &[DeltaRequest]) {
    w.varint(reqs.len() as u64);
    for q in reqs {
        w.raw(&q.hash);
        q.signature.encode(w);
    }
}

pub(crate) fn get_requests(r: &mut Reader<'_>) -> Result<Vec<DeltaRequest>, DecodeError> {
    // hash + block size + base length + one block at least.
    let n = r.count("delta request count", MAX_BATCH_DELTAS, 32 + 2 + 4 + STRONG_LEN)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(DeltaRequest {
            hash: r.hash("chunk hash")?,
            signature: Signature::decode(r)?,
        });
    }
    Ok(v)
}

/// One step of rebuilding a chunk from its base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaOp {
    /// Append blocks `block .. block + count` of the base, each whole.
    Copy { block: u32, count: u32 },
    /// Append the next `len` bytes of the literals.
    Literal { len: u32 },
}

/// A chunk sent as a delta against the base the receiver described in its
/// `NeedDelta`. The ops produce exactly `raw_len` bytes whose BLAKE3 is
/// `hash`; the receiver checks both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkDelta {
    /// The conversation (`Hello::session`) the chunk belongs to.
    pub session: u64,
    pub hash: Hash,
    /// `1 ..= MAX_CHUNK`.
    pub raw_len: u32,
    pub ops: Vec<DeltaOp>,
    /// How `literals` is encoded: none (exactly the literal bytes the ops
    /// take) or one zstd frame shorter than them.
    pub compression: Compression,
    pub literals: Vec<u8>,
}

impl ChunkDelta {
    /// The number of literal bytes the ops take (what `literals`
    /// decompresses to).
    pub fn literal_len(&self) -> u64 {
        self.ops
            .iter()
            .map(|op| match *op {
                DeltaOp::Literal { len } => u64::from(len),
                DeltaOp::Copy { .. } => 0,
            })
            .sum()
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.varint(self.session)
            .raw(&self.hash)
            .varint(self.raw_len.into())
            .varint(self.ops.len() as u64);
        // A copy names its first block relative to where the previous copy
        // ended: sequential runs cost one byte.
        let mut next = 0i64;
        for op in &self.ops {
            match *op {
                DeltaOp::Literal { len } => {
                    w.varint(u64::from(len) << 1);
                }
                DeltaOp::Copy { block, count } => {
                    w.varint((u64::from(count) << 1) | 1).ivarint(i64::from(block) - next);
                    next = i64::from(block) + i64::from(count);
                }
            }
        }
        w.u8(self.compression as u8).bytes(&self.literals);
    }

    /// Decodes a `ChunkDelta` payload (what a chunk stream's reader calls).
    pub fn decode(payload: &[u8]) -> Result<ChunkDelta, DecodeError> {
        let mut r = Reader::new(payload);
        let d = ChunkDelta::decode_from(&mut r)?;
        r.finish()?;
        Ok(d)
    }

    pub(crate) fn decode_from(r: &mut Reader<'_>) -> Result<ChunkDelta, DecodeError> {
        let session = r.varint("session")?;
        let hash = r.hash("chunk hash")?;
        let raw_len = r.bounded("chunk raw length", MAX_CHUNK.into())? as u32;
        if raw_len == 0 {
            return Err(DecodeError::Invalid {
                what: "chunk raw length",
                value: 0,
            });
        }
        // Every op produces at least one byte, so there are at most raw_len.
        let n = r.count("delta op count", raw_len.into(), 1)?;
        let mut ops = Vec::with_capacity(n);
        let (mut produced, mut next) = (0u64, 0i64);
        for _ in 0..n {
            let tag = r.bounded("delta op", (u64::from(u32::MAX) << 1) | 1)?;
            let amount = (tag >> 1) as u32;
            if amount == 0 {
                return Err(DecodeError::Invalid {
                    what: "delta op length",
                    value: 0,
                });
            }
            // Each copied block is at least one byte: a bound before the
            // base is known; the engine checks the exact length.
            produced += u64::from(amount);
            if produced > u64::from(raw_len) {
                return Err(DecodeError::TooLarge {
                    what: "delta output",
                    value: produced,
                    limit: raw_len.into(),
                });
            }
            if tag & 1 == 0 {
                ops.push(DeltaOp::Literal { len: amount });
            } else {
                let rel = r.ivarint("copy block")?;
                let block = next
                    .checked_add(rel)
                    .filter(|b| (0..=i64::from(u32::MAX)).contains(b))
                    .ok_or(DecodeError::Invalid {
                        what: "copy block",
                        value: rel as u64,
                    })?;
                if block + i64::from(amount) > i64::from(u32::MAX) {
                    return Err(DecodeError::Invalid {
                        what: "copy block",
                        value: block as u64,
                    });
                }
                next = block + i64::from(amount);
                ops.push(DeltaOp::Copy {
                    block: block as u32,
                    count: amount,
                });
            }
        }
        let compression = match r.u8("literal compression")? {
            0 => Compression::None,
            1 => Compression::Zstd,
            v => {
                return Err(DecodeError::Invalid {
                    what: "literal compression",
                    value: v.into(),
                });
            }
        };
        let literals = r.bytes("literals", MAX_CHUNK as usize)?.to_vec();
        let d = ChunkDelta {
            session,
            hash,
            raw_len,
            ops,
            compression,
            literals,
        };
        let want = d.literal_len();
        let ok = match d.compression {
            Compression::None => d.literals.len() as u64 == want,
            Compression::Zstd => !d.literals.is_empty() && (d.literals.len() as u64) < want,
        };
        if !ok {
            return Err(DecodeError::Invalid {
                what: "literal data length (for the ops and compression)",
                value: d.literals.len() as u64,
            });
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    //! Bounds of the two delta messages; their frozen samples, round trips
    //! and fuzz-style properties are with every other message's in
    //! `msg/tests.rs`.

    use super::*;
    use crate::msg::{Message, MsgType};

    fn sig(block_size: u32, base_len: u32, blocks: usize) -> Signature {
        Signature {
            block_size,
            base_len,
            blocks: vec![
                BlockSum {
                    weak: 1,
                    strong: [2; STRONG_LEN]
                };
                blocks
            ],
        }
    }

    fn need_delta(s: Signature) -> Vec<u8> {
        Message::NeedDelta(vec![DeltaRequest {
            hash: [0; 32],
            signature: s,
        }])
        .payload()
    }

    #[test]
    fn signatures_must_describe_their_base_exactly() {
        let ty = MsgType::NeedDelta as u8;
        assert!(Message::decode(ty, &need_delta(sig(64, 100, 2))).is_ok());
        // A base shorter than the smallest block is one block of its length.
        assert!(Message::decode(ty, &need_delta(sig(10, 10, 1))).is_ok());
        for (block, len, n, why) in [
            (64, 100, 1, "too few blocks"),
            (64, 100, 3, "too many blocks"),
            (65, 64, 1, "block longer than the base"),
            (32, 100, 4, "block under the minimum"),
            (0, 100, 0, "empty block"),
            (1, 0, 0, "empty base"),
            (MAX_BLOCK + 1, MAX_BASE, 32, "block over the maximum"),
        ] {
            assert!(Message::decode(ty, &need_delta(sig(block, len, n))).is_err(), "{why}");
        }
        // Too many blocks is refused before anything is allocated.
        let mut w = Writer::new();
        w.varint(1)
            .raw(&[0; 32])
            .varint(64)
            .varint(u64::from(MAX_BASE))
            .raw(&[0; 16]);
        assert!(matches!(
            Message::decode(ty, &w.buf),
            Err(DecodeError::TooLarge {
                what: "signature blocks",
                ..
            })
        ));
        let mut w = Writer::new();
        w.varint(1)
            .raw(&[0; 32])
            .varint(64)
            .varint(u64::from(MAX_BASE) + 1)
            .raw(&[0; 16]);
        assert!(matches!(
            Message::decode(ty, &w.buf),
            Err(DecodeError::TooLarge {
                what: "base length",
                ..
            })
        ));
    }

    fn chunk_delta(raw_len: u32, ops: Vec<DeltaOp>, compression: Compression, literals: Vec<u8>) -> Vec<u8> {
        Message::ChunkDelta(ChunkDelta {
            session: 1,
            hash: [3; 32],
            raw_len,
            ops,
            compression,
            literals,
        })
        .payload()
    }

    #[test]
    fn chunk_deltas_are_bounded_by_their_raw_length() {
        use DeltaOp::{Copy, Literal};
        let ty = MsgType::ChunkDelta as u8;
        let ok = chunk_delta(
            10,
            vec![Copy { block: 0, count: 2 }, Literal { len: 2 }],
            Compression::None,
            vec![1, 2],
        );
        assert!(Message::decode(ty, &ok).is_ok());
        let cases = [
            (
                chunk_delta(3, vec![Literal { len: 4 }], Compression::None, vec![0; 4]),
                "literal past raw_len",
            ),
            (
                chunk_delta(3, vec![Copy { block: 0, count: 4 }], Compression::None, vec![]),
                "more blocks than bytes",
            ),
            (
                chunk_delta(3, vec![Literal { len: 0 }], Compression::None, vec![]),
                "empty literal",
            ),
            (
                chunk_delta(3, vec![Copy { block: 0, count: 0 }], Compression::None, vec![]),
                "empty copy",
            ),
            (
                chunk_delta(3, vec![Literal { len: 2 }], Compression::None, vec![0; 3]),
                "literals too long",
            ),
            (
                chunk_delta(3, vec![Literal { len: 2 }], Compression::None, vec![0; 1]),
                "literals too short",
            ),
            (
                chunk_delta(3, vec![Literal { len: 2 }], Compression::Zstd, vec![0; 2]),
                "zstd not shorter",
            ),
            (
                chunk_delta(3, vec![Copy { block: 0, count: 1 }], Compression::Zstd, vec![]),
                "zstd of nothing",
            ),
            (chunk_delta(0, vec![], Compression::None, vec![]), "empty chunk"),
            (
                chunk_delta(MAX_CHUNK + 1, vec![], Compression::None, vec![]),
                "oversize chunk",
            ),
        ];
        for (p, why) in cases {
            assert!(Message::decode(ty, &p).is_err(), "{why}");
        }
        // A copy before block 0 or past u32 is refused, not wrapped.
        let mut w = Writer::new();
        w.varint(1)
            .raw(&[3; 32])
            .varint(10)
            .varint(1)
            .varint(3)
            .ivarint(-1)
            .u8(0)
            .varint(0);
        assert!(Message::decode(ty, &w.buf).is_err());
        let mut w = Writer::new();
        w.varint(1)
            .raw(&[3; 32])
            .varint(10)
            .varint(1)
            .varint(5)
            .ivarint(i64::from(u32::MAX))
            .u8(0)
            .varint(0);
        assert!(Message::decode(ty, &w.buf).is_err());
        // Sequential copies cost one byte each for the block.
        let seq = chunk_delta(
            1000,
            vec![
                Copy { block: 7, count: 3 },
                Literal { len: 1 },
                Copy { block: 10, count: 2 },
            ],
            Compression::None,
            vec![0],
        );
        let short = chunk_delta(1000, vec![Copy { block: 0, count: 5 }], Compression::None, vec![]);
        // 2 + 1 + 2 bytes of ops and 1 literal byte, against 2 bytes of ops.
        assert_eq!(seq.len(), short.len() + 4);
    }
}
