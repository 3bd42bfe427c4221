//! Content-defined chunking: a byte stream is cut with FastCDC (the 2020
//! variant of the `fastcdc` crate) and every chunk is named by its BLAKE3
//! hash. Both nodes cut the same bytes at the same places, so an edit in the
//! middle of a large file changes only the chunks around it.
//!
//! This module is pure: it reads from any [`Read`] and knows nothing of
//! files, paths, the index or threads (the scanner runs one [`Chunker`] per
//! worker). Memory is constant: one buffer per chunker, reused for every
//! stream — [`FIXED_PIECE`] bytes for [`Chunker::chunk`], which carries
//! the cut's state from one read to the next, `max + READ_BLOCK` for
//! [`Chunker::split`], which hands out each chunk's bytes whole.
//!
//! Why not `fastcdc::v2020::StreamCDC` itself: it allocates a fresh `Vec` for
//! every chunk and shifts its `max`-sized buffer after each cut. [`Chunker`]
//! calls the same cut routine (`fastcdc::v2020::cut`, same masks, same
//! normalization level) on a larger buffer and hashes chunks in place
//! ([`Chunker::split`]), or runs the same gear hash carried across small
//! reads ([`Chunker::chunk`]); tests check that both cut exactly where
//! `StreamCDC` does.

use std::io::{self, Read};

use fastcdc::v2020::{self, Normalization};
use hamirror_wire::{ChunkRef, Hash, entry::file_hash};
use thiserror::Error;

use crate::config::ChunkParams;

/// Bytes [`Chunker::split`] reads from the source per refill, beyond the
/// `max` that a cut may need to look ahead; also how often progress is
/// reported. (Measured since: a buffer this large does not stay in a
/// 512 KiB L2 while the kernel copies into it — [`FIXED_PIECE`].)
pub const READ_BLOCK: usize = 1 << 20;

/// The buffer [`Chunker::chunk`] reads through: small enough to stay in
/// the cache while the kernel copies into it and it is cut and hashed.
pub const FIXED_PIECE: usize = 128 << 10;

/// The state of a content-defined cut carried across reads
/// ([`Chunker::streamed`]).
struct Cut<'g> {
    min: usize,
    center: usize,
    max: usize,
    /// `cut`'s masks: small (hard) before `center`, large (easy) after,
    /// each shifted left for the first byte of a pair.
    masks: [u64; 4],
    gear: &'g [u64; 256],
    gear_ls: &'g [u64; 256],
    /// Bytes of the current chunk so far.
    pos: usize,
    hash: u64,
    hasher: blake3::Hasher,
    chunks: Vec<ChunkRef>,
}

impl Cut<'_> {
    /// Goes on with the next bytes of the stream; `last` when they end it.
    /// Whole pairs go through a loop like `cut`'s; a pair split between
    /// reads, and a lone last byte, one byte at a time.
    fn feed(&mut self, data: &[u8], last: bool) {
        let (mut i, mut from) = (0, 0);
        while i < data.len() {
            if self.pos < self.min {
                // `cut` looks at nothing before the minimum.
                let skip = (self.min - self.pos).min(data.len() - i);
                (self.pos, i) = (self.pos + skip, i + skip);
                if self.pos == self.max {
                    // Fixed blocks: the minimum is the whole block.
                    self.hasher.update(&data[from..i]);
                    from = i;
                    self.emit();
                }
                continue;
            }
            let large = usize::from(self.pos >= self.center) * 2;
            let zone_end = if large == 0 { self.center } else { self.max };
            let pairs = ((zone_end - self.pos) / 2).min((data.len() - i) / 2);
            let step = if self.pos & 1 == 0 && pairs > 0 {
                self.pairs(&data[i..i + 2 * pairs], large)
            } else {
                self.one(data[i], large, last && i + 1 == data.len())
            };
            match step {
                Ok(n) => {
                    (self.pos, i) = (self.pos + n, i + n);
                    if self.pos == self.max {
                        self.hasher.update(&data[from..i]);
                        from = i;
                        self.emit();
                    }
                }
                Err(n) => {
                    // The chunk ends before byte `i + n`, which starts the next.
                    (self.pos, i) = (self.pos + n, i + n);
                    self.hasher.update(&data[from..i]);
                    from = i;
                    self.emit();
                }
            }
        }
        self.hasher.update(&data[from..]);
    }

    /// Tests the pairs of `src` (the chunk at an even position, all in one
    /// mask zone): `Ok(len)` if none is a cut, `Err(n)` for a cut before
    /// its byte `n`.
    fn pairs(&mut self, src: &[u8], large: usize) -> Result<usize, usize> {
        let (mask_ls, mask) = (self.masks[large], self.masks[large + 1]);
        let mut hash = self.hash;
        for (k, pair) in src.chunks_exact(2).enumerate() {
            hash = (hash << 2).wrapping_add(self.gear_ls[pair[0] as usize]);
            if hash & mask_ls == 0 {
                self.hash = hash;
                return Err(2 * k);
            }
            hash = hash.wrapping_add(self.gear[pair[1] as usize]);
            if hash & mask == 0 {
                self.hash = hash;
                return Err(2 * k + 1);
            }
        }
        self.hash = hash;
        Ok(src.len())
    }

    /// Tests one byte: `Ok(1)`, or `Err(0)` for a cut before it. A byte at
    /// an even position that ends the stream is not tested.
    fn one(&mut self, b: u8, large: usize, final_byte: bool) -> Result<usize, usize> {
        let hit = if self.pos & 1 == 0 {
            if final_byte {
                return Ok(1);
            }
            self.hash = (self.hash << 2).wrapping_add(self.gear_ls[b as usize]);
            self.hash & self.masks[large] == 0
        } else {
            self.hash = self.hash.wrapping_add(self.gear[b as usize]);
            self.hash & self.masks[large + 1] == 0
        };
        if hit { Err(0) } else { Ok(1) }
    }

    /// Ends the current chunk at `pos` bytes.
    fn emit(&mut self) {
        self.chunks.push(ChunkRef {
            hash: *self.hasher.finalize().as_bytes(),
            len: self.pos as u32,
        });
        self.hasher.reset();
        (self.pos, self.hash) = (0, 0);
    }
}

/// Why chunking could not start. Not retryable: the parameters are wrong.
#[derive(Debug, Error)]
pub enum ChunkError {
    #[error("invalid chunk parameters: {0}")]
    Params(String),
}

/// The chunks of one stream, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunked {
    pub chunks: Vec<ChunkRef>,
    /// Total bytes read: the sum of the chunk lengths.
    pub size: u64,
}

impl Chunked {
    /// The content identity of the stream ([`hamirror_wire::entry::file_hash`]).
    pub fn file_hash(&self) -> Hash {
        file_hash(&self.chunks)
    }
}

/// Cuts streams into content-defined chunks and hashes them. Reuse one per
/// thread: it owns the read buffer.
pub struct Chunker {
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Chunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Chunker({}/{}/{})", self.min, self.avg, self.max)
    }
}

impl Chunker {
    /// A chunker for the given bounds. The 2020 cut routine tests cut points
    /// in pairs of bytes and needs even sizes; odd values are rounded down
    /// (which keeps them within the `fastcdc` limits and in order).
    ///
    /// # Errors
    /// [`ChunkError::Params`] when the bounds are outside what `fastcdc`
    /// accepts (see [`ChunkParams::validate`]).
    pub fn new(params: ChunkParams) -> Result<Chunker, ChunkError> {
        params.validate().map_err(ChunkError::Params)?;
        let even = |v: u32| (v & !1) as usize;
        let (min, avg, max) = (even(params.min), even(params.avg), even(params.max));
        let (mask_s, mask_l) = v2020::select_masks(avg, Normalization::Level1);
        Ok(Chunker {
            min,
            avg,
            max,
            mask_s,
            mask_l,
            buf: Vec::new(),
        })
    }

    /// The bounds in effect (after rounding to even sizes).
    pub fn params(&self) -> ChunkParams {
        ChunkParams {
            min: self.min as u32,
            avg: self.avg as u32,
            max: self.max as u32,
        }
    }

    /// Chunks and hashes everything `source` yields. `progress` is called
    /// with the number of bytes consumed, about once per [`READ_BLOCK`].
    ///
    /// Without `split`'s look-ahead buffer: the gear hash of
    /// `fastcdc::v2020::cut` is carried from one read of [`FIXED_PIECE`]
    /// bytes to the next (its whole state is the hash and the position in
    /// the chunk) and BLAKE3 is fed as the bytes go by, so the buffer stays
    /// in the cache while the kernel copies into it (on this project's
    /// 2-core EPYC, 512 KiB of L2 a core, reading issue 17's corpus from
    /// the page cache took 1.1 s through 128 KiB and 2.8–3.9 s through
    /// 256 KiB–2 MiB; docs/BENCHMARKS.md). The same cut points as `cut` on
    /// a window of `max` bytes, byte pairs and all: a byte at an even
    /// position is tested only when another follows it (`cut` tests
    /// positions in pairs, and never a lone last byte), so the last byte of
    /// each read waits for the next one. Fixed blocks (min = max, what
    /// `verify` asks for) are the case where the minimum is the maximum.
    /// Tests check the chunks against `split` and `StreamCDC`.
    ///
    /// # Errors
    /// The first read error of `source`.
    pub fn chunk<R: Read>(&mut self, mut source: R, mut progress: impl FnMut(u64)) -> io::Result<Chunked> {
        let (gear, gear_ls) = v2020::get_gear_with_seed(0);
        let gear: &[u64; 256] = gear.as_ref().try_into().expect("256 entries");
        let gear_ls: &[u64; 256] = gear_ls.as_ref().try_into().expect("256 entries");
        if self.buf.len() < FIXED_PIECE + 1 {
            self.buf.resize(FIXED_PIECE + 1, 0);
        }
        let mut cut = Cut {
            min: self.min,
            center: self.avg,
            max: self.max,
            masks: [self.mask_s << 1, self.mask_s, self.mask_l << 1, self.mask_l],
            gear,
            gear_ls,
            pos: 0,
            hash: 0,
            hasher: blake3::Hasher::new(),
            chunks: Vec::new(),
        };
        let (mut held, mut size, mut consumed) = (0usize, 0u64, 0u64);
        loop {
            let n = match source.read(&mut self.buf[held..held + FIXED_PIECE]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let (avail, end) = (held + n, n == 0);
            let upto = if end { avail } else { avail - 1 };
            cut.feed(&self.buf[..upto], end);
            if end {
                break;
            }
            self.buf.copy_within(upto..avail, 0);
            held = avail - upto;
            (size, consumed) = (size + n as u64, consumed + n as u64);
            if consumed >= READ_BLOCK as u64 {
                progress(consumed);
                consumed = 0;
            }
        }
        if cut.pos > 0 {
            cut.emit();
        }
        if consumed > 0 {
            progress(consumed);
        }
        Ok(Chunked {
            chunks: cut.chunks,
            size,
        })
    }

    /// Cuts `source` into chunks and calls `sink(chunk, offset, bytes)` for
    /// each, in order; returns the total length. An empty stream has no
    /// chunks.
    ///
    /// # Errors
    /// The first read error of `source` (`Interrupted` is retried).
    pub fn split<R: Read>(&mut self, mut source: R, mut sink: impl FnMut(&ChunkRef, u64, &[u8])) -> io::Result<u64> {
        let cap = self.max + READ_BLOCK;
        if self.buf.len() < cap {
            self.buf.resize(cap, 0);
        }
        let (mask_s_ls, mask_l_ls) = (self.mask_s << 1, self.mask_l << 1);
        let mut start = 0usize; // first byte not yet in a chunk
        let mut end = 0usize; // end of valid data in buf
        let mut offset = 0u64; // stream offset of buf[start]
        let mut eof = false;
        loop {
            // A cut looks at up to `max` bytes; refill first unless the stream
            // has ended (this is exactly when StreamCDC refills, so the cut
            // points agree).
            if end - start < self.max && !eof {
                self.buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
                while end < cap {
                    match source.read(&mut self.buf[end..cap]) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(n) => end += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            if start == end {
                return Ok(offset);
            }
            let window = &self.buf[start..end];
            let (_, len) = v2020::cut(
                window,
                self.min,
                self.avg,
                self.max,
                self.mask_s,
                self.mask_l,
                mask_s_ls,
                mask_l_ls,
            );
            let data = &window[..len];
            let chunk = ChunkRef {
                hash: *blake3::hash(data).as_bytes(),
                len: len as u32,
            };
            sink(&chunk, offset, data);
            start += len;
            offset += len as u64;
        }
    }
}

/// Chunks an in-memory buffer (tests, and callers that already hold the bytes).
///
/// # Errors
/// [`ChunkError::Params`] for invalid bounds.
pub fn chunk_bytes(data: &[u8], params: ChunkParams) -> Result<Chunked, ChunkError> {
    let mut c = Chunker::new(params)?;
    Ok(c.chunk(data, |_| {}).expect("reading from a slice cannot fail"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::noise;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn small() -> ChunkParams {
        ChunkParams {
            min: 256,
            avg: 1024,
            max: 4096,
        }
    }

    /// A reader that returns at most `step` bytes per call, cycling through
    /// the given sizes: cut points must not depend on how reads are split.
    struct Jagged<'a> {
        data: &'a [u8],
        steps: Vec<usize>,
        i: usize,
    }

    impl Read for Jagged<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let step = self.steps[self.i % self.steps.len()].max(1);
            self.i += 1;
            let n = step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn lens(c: &Chunked) -> Vec<u32> {
        c.chunks.iter().map(|c| c.len).collect()
    }

    #[test]
    fn cut_points_match_fastcdc_streamcdc() {
        for (seed, len, p) in [
            (1, 3 << 20, ChunkParams::default()),
            (2, 200_000, small()),
            (3, 5000, small()),
            (4, 100, small()),
        ] {
            let data = noise(seed, len);
            let ours = chunk_bytes(&data, p).unwrap();
            let theirs: Vec<u32> = v2020::StreamCDC::new(&data[..], p.min as usize, p.avg as usize, p.max as usize)
                .map(|c| c.unwrap().length as u32)
                .collect();
            assert_eq!(lens(&ours), theirs, "seed {seed} len {len}");
        }
    }

    #[test]
    fn streamed_cut_points_are_splits_at_every_stream_end_and_read_size() {
        // The smallest bounds fastcdc accepts, so that cuts are frequent and
        // a cut candidate on a stream's last byte (never tested by `cut`)
        // comes up many times over these thousands of streams.
        let p = ChunkParams {
            min: 64,
            avg: 256,
            max: 1024,
        };
        let (mut reference, mut c) = (Chunker::new(p).unwrap(), Chunker::new(p).unwrap());
        let mut chunks = 0;
        for seed in 0..4000u64 {
            let len = (seed * 7919 % 3000) as usize;
            let data = noise(seed, len);
            let mut cut = vec![];
            reference.split(&data[..], |c, _, _| cut.push(*c)).unwrap();
            let steps = vec![1 + (seed % 5) as usize, 1 + (seed % 977) as usize, 64];
            let ours = c
                .chunk(
                    Jagged {
                        data: &data,
                        steps,
                        i: 0,
                    },
                    |_| {},
                )
                .unwrap();
            assert_eq!(ours.chunks, cut, "seed {seed} len {len}");
            assert_eq!(ours.size, len as u64);
            chunks += cut.len();
        }
        assert!(chunks > 10_000, "{chunks} chunks");
    }

    #[test]
    fn fixed_blocks_are_the_blocks_split_cuts_whatever_the_reads() {
        // Fixed blocks smaller and larger than the piece they are read
        // through; streams around the block size; reads of every size.
        for block in [4096u32, 96 << 10, 1 << 20] {
            let p = ChunkParams {
                min: block,
                avg: block,
                max: block,
            };
            let b = block as usize;
            for len in [0, 1, b - 1, b, b + 1, 3 * b + 4097, FIXED_PIECE + 3] {
                let data = noise(u64::from(block) + len as u64, len);
                let mut reference = Chunker::new(p).unwrap();
                let mut cut = vec![];
                let size = reference.split(&data[..], |c, _, _| cut.push(*c)).unwrap();
                let mut c = Chunker::new(p).unwrap();
                let jagged = Jagged {
                    data: &data,
                    steps: vec![1, 4095, 70_000, usize::MAX, 13],
                    i: 0,
                };
                let mut seen = 0;
                let ours = c.chunk(jagged, |n| seen += n).unwrap();
                assert_eq!((ours.chunks.clone(), ours.size), (cut, size), "block {block} len {len}");
                assert_eq!(seen, len as u64);
                let expected: Vec<ChunkRef> = data
                    .chunks(b)
                    .map(|d| ChunkRef {
                        hash: *blake3::hash(d).as_bytes(),
                        len: d.len() as u32,
                    })
                    .collect();
                assert_eq!(ours.chunks, expected, "block {block} len {len}");
            }
        }
    }

    #[test]
    fn empty_stream_has_no_chunks_and_zeros_cut_at_max() {
        let e = chunk_bytes(&[], ChunkParams::default()).unwrap();
        assert_eq!((e.chunks.len(), e.size), (0, 0));
        let z = chunk_bytes(&vec![0u8; 1 << 20], ChunkParams::default()).unwrap();
        assert_eq!(lens(&z), vec![256 << 10; 4]);
        assert_eq!(z.chunks.iter().collect::<HashSet<_>>().len(), 1);
    }

    #[test]
    fn odd_sizes_are_rounded_and_invalid_ones_refused() {
        let c = Chunker::new(ChunkParams {
            min: 257,
            avg: 1025,
            max: 4097,
        })
        .unwrap();
        assert_eq!(c.params(), small());
        assert!(
            Chunker::new(ChunkParams {
                min: 10,
                avg: 1024,
                max: 4096
            })
            .is_err()
        );
    }

    #[test]
    fn read_errors_are_returned() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let mut c = Chunker::new(small()).unwrap();
        assert_eq!(c.chunk(Broken, |_| {}).unwrap_err().to_string(), "disk on fire");
    }

    /// An insertion of a few bytes at three places in the middle of 100 MB
    /// changes at most 3 chunks: the new list holds at most 3 hashes the
    /// old one does not.
    #[test]
    fn insertion_in_100_mb_changes_at_most_3_chunks() {
        let base = noise(42, 100 << 20);
        let p = ChunkParams::default();
        let mut chunker = Chunker::new(p).unwrap();
        let before = chunker.chunk(&base[..], |_| {}).unwrap();
        let old: HashSet<Hash> = before.chunks.iter().map(|c| c.hash).collect();
        for (i, (pos, ins)) in [(50 << 20, 1usize), ((50 << 20) + 12_345, 7), (77_777_777, 3)]
            .into_iter()
            .enumerate()
        {
            let mut data = Vec::with_capacity(base.len() + ins);
            data.extend_from_slice(&base[..pos]);
            data.extend_from_slice(&noise(1000 + i as u64, ins));
            data.extend_from_slice(&base[pos..]);
            let after = chunker.chunk(&data[..], |_| {}).unwrap();
            let new = after.chunks.iter().filter(|c| !old.contains(&c.hash)).count();
            assert!((1..=3).contains(&new), "insert {ins} at {pos}: {new} new chunks");
            assert_eq!(after.size, base.len() as u64 + ins as u64);
        }
    }

    /// The chunks of `base`, and of `base` with `ins` inserted at `pos`.
    fn chunks_around_insertion(base: &[u8], pos: usize, ins: &[u8]) -> (Vec<ChunkRef>, Vec<ChunkRef>) {
        let mut data = base[..pos].to_vec();
        data.extend_from_slice(ins);
        data.extend_from_slice(&base[pos..]);
        let p = ChunkParams::default();
        (
            chunk_bytes(base, p).unwrap().chunks,
            chunk_bytes(&data, p).unwrap().chunks,
        )
    }

    /// How many chunks an insertion of 1–15 bytes changes, over a fixed
    /// sample of 200 (deterministic: no run can be unlucky). In a sample of
    /// 6,000 the changed run was 1 chunk in 99.3 % of cases, at most 3 in
    /// 99.97 %, 5 at most: when a shifted cut point lands less than the
    /// minimum chunk size before an old one, the cut points take a few
    /// chunks to meet again (and near the end of a file they may not meet
    /// before it, so every chunk up to the end changes).
    #[test]
    fn insertions_change_one_chunk_almost_always() {
        let mut counts = [0usize; 8];
        for k in 0..200u64 {
            let seed = k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let base = noise(seed, 2 << 20);
            let pos = (seed >> 11) as usize % (base.len() - (512 << 10));
            let (old, new) = chunks_around_insertion(&base, pos, &noise(!seed, 1 + (k as usize % 15)));
            let old: HashSet<Hash> = old.iter().map(|c| c.hash).collect();
            let changed = new.iter().filter(|c| !old.contains(&c.hash)).count();
            counts[changed.min(7)] += 1;
        }
        assert_eq!(counts[0], 0, "{counts:?}");
        assert!(counts[1] >= 196, "{counts:?}");
        assert!(counts[4..].iter().sum::<usize>() == 0, "{counts:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Cut points are a function of the content alone: any split of the
        /// reads gives the same chunks, and the chunks put back together are
        /// the input.
        #[test]
        fn boundaries_depend_on_content_only(
            seed in any::<u64>(),
            len in 0usize..60_000,
            steps in proptest::collection::vec(1usize..9000, 1..6),
        ) {
            let data = noise(seed, len);
            let whole = chunk_bytes(&data, small()).unwrap();
            let mut c = Chunker::new(small()).unwrap();
            let jagged = c.chunk(Jagged { data: &data, steps, i: 0 }, |_| {}).unwrap();
            prop_assert_eq!(&whole, &jagged);

            let mut joined = Vec::with_capacity(len);
            let mut next = 0u64;
            let mut cut = vec![];
            let total = c.split(&data[..], |chunk, offset, bytes| {
                cut.push(*chunk);
                assert_eq!(offset, next);
                assert_eq!(chunk.hash, *blake3::hash(bytes).as_bytes());
                assert!(bytes.len() <= 4096 && !bytes.is_empty());
                next += bytes.len() as u64;
                joined.extend_from_slice(bytes);
            }).unwrap();
            prop_assert_eq!(total, len as u64);
            prop_assert_eq!(&joined, &data);
            // `chunk` streams its cut; `split` cuts with a look-ahead buffer.
            prop_assert_eq!(&whole.chunks, &cut);
            prop_assert_eq!(whole.chunks.iter().map(|c| u64::from(c.len)).sum::<u64>(), len as u64);
            // All chunks but the last respect the minimum.
            if let Some((_, init)) = whole.chunks.split_last() {
                prop_assert!(init.iter().all(|c| c.len >= 256));
            }
        }

        /// Wherever an insertion lands, the chunks before it are kept, the
        /// changed ones form one run starting at the chunk it lands in, and
        /// once the cut points meet again every later chunk is the old one
        /// (a 4 MiB buffer keeps each case fast; the 100 MB test above is
        /// the real size). How long the run is, is a matter of chance:
        /// `insertions_change_one_chunk_almost_always` measures it.
        #[test]
        fn an_insertion_changes_one_run_of_chunks_from_where_it_lands(
            seed in any::<u64>(), pos in 0usize..(4 << 20), ins in 1usize..16,
        ) {
            let base = noise(seed, 4 << 20);
            let (old, new) = chunks_around_insertion(&base, pos, &noise(!seed, ins));
            // The chunks that end at or before the insertion are kept.
            let kept = old.iter().scan(0u64, |end, c| { *end += u64::from(c.len); Some(*end) })
                .take_while(|end| *end <= pos as u64).count();
            prop_assert_eq!(&old[..kept], &new[..kept]);
            // Then a run of new chunks, then the old tail.
            let old_set: HashSet<Hash> = old.iter().map(|c| c.hash).collect();
            let changed = new[kept..].iter().take_while(|c| !old_set.contains(&c.hash)).count();
            prop_assert!(changed >= 1, "an insertion changes at least the chunk it lands in");
            let tail = &new[kept + changed..];
            prop_assert_eq!(tail, &old[old.len() - tail.len()..]);
        }
    }
}
