//! Per-chunk compression for the link: zstd at a fast level when it saves
//! at least [`MIN_SAVING_PERCENT`], the raw bytes otherwise (already
//! compressed data costs one quick attempt, then travels as is). Decoding is
//! bounded by the chunk length the sender declared, so a small hostile
//! payload cannot expand into unbounded memory. Pure functions over bytes:
//! no I/O, no async; the zstd contexts are reused per thread.

use std::cell::RefCell;

/// zstd level used on the link: level 1 compresses at several hundred MB/s
/// per core, faster than a gigabit link drains, and gets most of the gain.
pub const LEVEL: i32 = 1;

/// Compression is kept only when it shrinks the chunk by at least this
/// share; below it the receiver's decompression costs more than it saves.
pub const MIN_SAVING_PERCENT: usize = 5;

/// Largest chunk accepted (the manifest's bound on a chunk's length).
pub const MAX_RAW_LEN: usize = hamirror_wire::entry::MAX_CHUNK as usize;

/// How a chunk travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Raw = 0,
    Zstd = 1,
}

impl Encoding {
    pub fn from_u8(b: u8) -> Option<Encoding> {
        match b {
            0 => Some(Encoding::Raw),
            1 => Some(Encoding::Zstd),
            _ => None,
        }
    }
}

/// Errors decoding a chunk: the sender's data is wrong, so retrying the
/// same bytes cannot help; asking for the chunk again might.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompressError {
    #[error("declared chunk length {0} exceeds the limit of {MAX_RAW_LEN} bytes")]
    TooLong(usize),
    #[error("raw chunk is {got} bytes, but {declared} were declared")]
    LengthMismatch { declared: usize, got: usize },
    #[error("compressed chunk does not decode to the {declared} bytes declared: {reason}")]
    Corrupt { declared: usize, reason: String },
}

thread_local! {
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compresses `raw` when that pays. Returns the encoding and the bytes to
/// send; `Encoding::Raw` means send `raw` itself (returned as `None` to
/// avoid a copy).
pub fn compress_chunk(raw: &[u8]) -> (Encoding, Option<Vec<u8>>) {
    // Worth it only if the result is at least MIN_SAVING_PERCENT smaller,
    // and always strictly shorter (the wire protocol relies on it).
    let limit = (raw.len() - raw.len() * MIN_SAVING_PERCENT / 100).min(raw.len().saturating_sub(1));
    if limit < 16 || !sample_compresses(raw) {
        return (Encoding::Raw, None);
    }
    let out = zstd_within(raw, limit);
    match out {
        Some(out) if out.len() <= limit => (Encoding::Zstd, Some(out)),
        _ => (Encoding::Raw, None),
    }
}

/// `raw` compressed with this thread's compressor, or `None` when the
/// result would be longer than `limit` (zstd then stops early with "dst
/// too small" instead of finishing a result we would throw away). Also
/// `None` when no compressor could be made.
fn zstd_within(raw: &[u8], limit: usize) -> Option<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = zstd::bulk::Compressor::new(LEVEL).ok();
        }
        let c = c.as_mut()?;
        let mut out = Vec::with_capacity(limit);
        c.compress_to_buffer(raw, &mut out).ok().map(|_| out)
    })
}

/// Bytes of each sample [`sample_compresses`] tries.
const SAMPLE: usize = 2 << 10;

/// A fast reject for incompressible chunks (random, already compressed or
/// encrypted data, a third of a typical file server's bytes): zstd on a few
/// small samples spread over the chunk costs a few percent of compressing
/// it whole, and a chunk none of whose samples shrinks by
/// [`MIN_SAVING_PERCENT`] is sent raw without trying. A chunk that is
/// compressible only between the samples travels raw: a little wire
/// traffic lost, never correctness.
fn sample_compresses(raw: &[u8]) -> bool {
    if raw.len() < 4 * SAMPLE {
        return true;
    }
    let step = (raw.len() - SAMPLE) / 2;
    (0..3).any(|i| {
        let s = &raw[i * step..i * step + SAMPLE];
        let limit = SAMPLE - SAMPLE * MIN_SAVING_PERCENT / 100;
        // Room for any result, so `None` means no compressor (out of
        // memory): then the whole chunk decides.
        zstd_within(s, 2 * SAMPLE).is_none_or(|out| out.len() <= limit)
    })
}

/// Restores a chunk of `declared` bytes. Never produces (or allocates) more
/// than `declared` bytes, and fails unless it gets exactly that many.
pub fn decompress_chunk(encoding: Encoding, data: &[u8], declared: usize) -> Result<Vec<u8>, CompressError> {
    if declared > MAX_RAW_LEN {
        return Err(CompressError::TooLong(declared));
    }
    match encoding {
        Encoding::Raw if data.len() == declared => Ok(data.to_vec()),
        Encoding::Raw => Err(CompressError::LengthMismatch {
            declared,
            got: data.len(),
        }),
        Encoding::Zstd => {
            let corrupt = |reason: String| CompressError::Corrupt { declared, reason };
            // zstd writes only into this capacity and fails with "destination
            // buffer too small" rather than grow it: more output is an error.
            let mut out = Vec::with_capacity(declared);
            DECOMPRESSOR.with(|d| {
                let mut d = d.borrow_mut();
                if d.is_none() {
                    *d = Some(zstd::bulk::Decompressor::new().map_err(|e| corrupt(e.to_string()))?);
                }
                let d = d.as_mut().ok_or_else(|| corrupt("no decompressor".into()))?;
                d.decompress_to_buffer(data, &mut out)
                    .map_err(|e| corrupt(e.to_string()))
            })?;
            if out.len() != declared {
                return Err(corrupt(format!("it decodes to at least {} bytes", out.len())));
            }
            Ok(out)
        }
    }
}

/// The raw bytes of received chunk data — a `Chunk`'s data, or a
/// `ChunkDelta`'s literals — of `declared` bytes: as they came, or
/// decompressed into at most that many.
pub fn received(
    compression: hamirror_wire::Compression,
    data: Vec<u8>,
    declared: usize,
) -> Result<Vec<u8>, CompressError> {
    match compression {
        hamirror_wire::Compression::None if data.len() == declared => Ok(data),
        hamirror_wire::Compression::None => Err(CompressError::LengthMismatch {
            declared,
            got: data.len(),
        }),
        hamirror_wire::Compression::Zstd => decompress_chunk(Encoding::Zstd, &data, declared),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::noise;

    fn text(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| b"the quick brown fox jumps over the lazy dog\n"[i % 44])
            .collect()
    }

    #[test]
    fn compressible_chunks_shrink_and_round_trip() {
        let raw = text(64 << 10);
        let (enc, out) = compress_chunk(&raw);
        assert_eq!(enc, Encoding::Zstd);
        let out = out.unwrap();
        assert!(out.len() < raw.len() / 10, "{}", out.len());
        assert_eq!(decompress_chunk(enc, &out, raw.len()).unwrap(), raw);
    }

    #[test]
    fn incompressible_and_tiny_chunks_go_raw() {
        let raw = noise(0, 64 << 10);
        assert_eq!(compress_chunk(&raw), (Encoding::Raw, None));
        assert_eq!(decompress_chunk(Encoding::Raw, &raw, raw.len()).unwrap(), raw);
        assert_eq!(compress_chunk(b"tiny"), (Encoding::Raw, None));
        assert_eq!(compress_chunk(b""), (Encoding::Raw, None));
    }

    #[test]
    fn samples_reject_noise_and_keep_chunks_with_any_compressible_part() {
        let chunk = noise(3, 64 << 10);
        assert!(!sample_compresses(&chunk));
        assert_eq!(compress_chunk(&chunk), (Encoding::Raw, None));
        // Compressible at the end only: the last sample sees it.
        let mut tail = chunk.clone();
        tail[48 << 10..].copy_from_slice(&text(16 << 10));
        assert!(sample_compresses(&tail));
        assert_eq!(compress_chunk(&tail).0, Encoding::Zstd);
        // In the middle only.
        let mut middle = chunk;
        middle[24 << 10..40 << 10].copy_from_slice(&text(16 << 10));
        assert!(sample_compresses(&middle));
        assert!(sample_compresses(&text(64 << 10)));
    }

    #[test]
    fn a_chunk_saving_under_five_percent_goes_raw() {
        // 97% noise, 3% zeros: zstd saves about 3%.
        let mut raw = noise(0, 100_000);
        raw[..3000].fill(0);
        assert_eq!(compress_chunk(&raw).0, Encoding::Raw);
        // 80% noise: a clear saving.
        raw[..20_000].fill(0);
        assert_eq!(compress_chunk(&raw).0, Encoding::Zstd);
    }

    #[test]
    fn decompression_bomb_is_refused_without_expanding() {
        // 64 MiB of zeros compresses to a few KiB.
        let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap();
        assert!(bomb.len() < 64 << 10);
        let err = decompress_chunk(Encoding::Zstd, &bomb, 64 << 10).unwrap_err();
        assert!(
            matches!(err, CompressError::Corrupt { declared, .. } if declared == 64 << 10),
            "{err}"
        );
        // Declaring the true size is refused too: it is beyond any chunk.
        assert_eq!(
            decompress_chunk(Encoding::Zstd, &bomb, 64 << 20),
            Err(CompressError::TooLong(64 << 20))
        );
    }

    #[test]
    fn lengths_must_match_exactly() {
        let raw = text(10_000);
        let (enc, out) = compress_chunk(&raw);
        let out = out.unwrap();
        // Decodes to 10 000 bytes, one more than declared.
        assert!(decompress_chunk(enc, &out, 9_999).is_err());
        // Decodes to fewer bytes than declared.
        assert!(decompress_chunk(enc, &out, 10_001).is_err());
        assert!(decompress_chunk(Encoding::Raw, &raw, 9_999).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for data in [&b""[..], b"\x28\xb5\x2f\xfd", b"not zstd at all", &noise(0, 1000)] {
            assert!(decompress_chunk(Encoding::Zstd, data, 1000).is_err());
        }
        assert_eq!(Encoding::from_u8(1), Some(Encoding::Zstd));
        assert_eq!(Encoding::from_u8(2), None);
    }
}
