//! The body of the `chunk` fuzz target in `fuzz/`: what a receiver does
//! with the chunk data a peer sends — decode a `Chunk` or `ChunkDelta`
//! payload, restore its bytes (decompression bounded by the declared
//! length, `transport::compress::received`) and rebuild a delta against a
//! base (`delta::apply`) — the steps of `sync::recv`, without files. Here
//! so that a normal build compiles it and `cargo test` runs every seed
//! through it (`tests/fuzz_seeds.rs`). Panics only when a bound breaks.

use hamirror_wire::{ChunkDelta, ChunkView, MsgType};

use crate::delta;
use crate::transport::compress::received;

/// Input: a big-endian `u16` base length, that many base bytes, the
/// message type byte (`Chunk` or `ChunkDelta`), the payload. True when it
/// rebuilt a chunk matching its hash (the seeds do).
pub fn chunk(data: &[u8]) -> bool {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return false;
    };
    let base_len = usize::from(u16::from_be_bytes(*len));
    let Some((base, rest)) = rest.split_at_checked(base_len) else {
        return false;
    };
    let Some((&ty, payload)) = rest.split_first() else {
        return false;
    };
    let (hash, raw) = if ty == MsgType::Chunk as u8 {
        let Ok(c) = ChunkView::decode(payload) else {
            return false;
        };
        let Ok(raw) = received(c.compression, c.data.to_vec(), c.raw_len as usize) else {
            return false;
        };
        assert_eq!(raw.len(), c.raw_len as usize);
        (c.hash, raw)
    } else if ty == MsgType::ChunkDelta as u8 {
        let Ok(d) = ChunkDelta::decode(payload) else {
            return false;
        };
        let Ok(literals) = received(d.compression, d.literals.clone(), d.literal_len() as usize) else {
            return false;
        };
        assert_eq!(literals.len() as u64, d.literal_len());
        if base.is_empty() {
            return false;
        }
        let block_size = delta::block_size_for(base.len() as u32);
        let Ok(out) = delta::apply(base, block_size, &d.ops, &literals, d.raw_len) else {
            return false;
        };
        assert_eq!(out.len(), d.raw_len as usize);
        (d.hash, out)
    } else {
        return false;
    };
    // The receiver checks the hash next.
    *blake3::hash(&raw).as_bytes() == hash
}

/// Seeds for the target from real frames: chunks as a sender compresses
/// them, deltas as it computes them against a receiver's base. Written to
/// `fuzz/seeds/chunk/` by `tests/fuzz_seeds.rs`.
pub fn chunk_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use hamirror_wire::{Chunk, Compression, Message};

    let text: Vec<u8> = (0..6000u32)
        .flat_map(|i| format!("line {i} of a log file\n").into_bytes())
        .take(48 << 10)
        .collect();
    let noise = crate::noise::noise(7, 8 << 10);
    let seed = |base: &[u8], m: &Message| {
        let mut out = (base.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(base);
        out.push(m.msg_type() as u8);
        out.extend_from_slice(&m.payload());
        out
    };
    let chunk = |raw: &[u8]| {
        let (enc, packed) = crate::transport::compress_chunk(raw);
        let (compression, data) = match (enc, packed) {
            (crate::transport::Encoding::Zstd, Some(p)) => (Compression::Zstd, p),
            _ => (Compression::None, raw.to_vec()),
        };
        Message::Chunk(Chunk {
            session: 1,
            hash: *blake3::hash(raw).as_bytes(),
            raw_len: raw.len() as u32,
            compression,
            data,
        })
    };
    // A delta as the sender makes it: an edit in the middle, an append.
    let delta_of = |base: &[u8], new: &[u8]| {
        let sig = delta::signature(base, delta::block_size_for(base.len() as u32));
        let d = delta::diff(new, &sig);
        let (compression, literals) = match crate::transport::compress_chunk(&d.literals) {
            (crate::transport::Encoding::Zstd, Some(p)) => (Compression::Zstd, p),
            _ => (Compression::None, d.literals),
        };
        Message::ChunkDelta(hamirror_wire::ChunkDelta {
            session: 1,
            hash: *blake3::hash(new).as_bytes(),
            raw_len: new.len() as u32,
            ops: d.ops,
            compression,
            literals,
        })
    };
    let base = &text[..32 << 10];
    let mut edited = base.to_vec();
    edited[5000..5010].copy_from_slice(b"0123456789");
    let mut appended = base.to_vec();
    appended.extend_from_slice(&noise[..2000]);
    vec![
        ("chunk-zstd", seed(&[], &chunk(&text))),
        ("chunk-raw", seed(&[], &chunk(&noise))),
        ("delta-edit", seed(base, &delta_of(base, &edited))),
        ("delta-append", seed(base, &delta_of(base, &appended))),
        ("delta-noise", seed(&noise[..4096], &delta_of(&noise[..4096], &noise))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_seeds_rebuild_their_chunks() {
        for (name, s) in chunk_seeds() {
            assert!(chunk(&s), "{name}");
        }
    }

    proptest! {
        /// Random bytes, and random bytes after a real base: no panic.
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = chunk(&data);
            for ty in [MsgType::Chunk as u8, MsgType::ChunkDelta as u8] {
                let mut framed = 64u16.to_be_bytes().to_vec();
                framed.extend_from_slice(&[7u8; 64]);
                framed.push(ty);
                framed.extend_from_slice(&data);
                let _ = chunk(&framed);
            }
        }
    }
}
