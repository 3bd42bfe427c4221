//! rsync-style deltas inside a changed chunk: the receiver describes a base
//! it holds (old bytes of the same file around the chunk) by a
//! [`Signature`] — per block a rolling checksum and a short BLAKE3 — the
//! sender finds the blocks of the base in the new chunk ([`diff`]) and sends
//! copy and literal operations, and the receiver rebuilds the chunk
//! ([`apply`]), bounded and checked, never panicking on hostile ops.
//! [`base`] picks the old bytes to use as a base from the two chunk lists.
//!
//! Pure computation over bytes: no I/O, no clock, no compression (the
//! caller compresses literals), no async. Depends on the wire crate's
//! message types only.

pub mod base;

use std::collections::HashMap;

use hamirror_wire::msg::{MAX_BLOCK, MIN_BLOCK, STRONG_LEN};
use hamirror_wire::{BlockSum, DeltaOp, Signature};

/// Why a delta does not rebuild a chunk: the sender's ops do not fit the
/// base this receiver described. Retrying the same bytes cannot help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    #[error("the delta copies block {block}, but the base has {blocks} blocks")]
    BlockOutOfRange { block: u64, blocks: u64 },
    #[error("the delta produces more than the {raw_len} bytes declared")]
    TooLong { raw_len: u32 },
    #[error("the delta produces {got} bytes, but {raw_len} were declared")]
    TooShort { got: usize, raw_len: u32 },
    #[error("the delta takes more literal bytes than the {have} it carries")]
    LiteralsShort { have: usize },
    #[error("the delta leaves {left} literal bytes unused")]
    LiteralsLeft { left: usize },
    #[error("the base is {got} bytes, but its signature says {want}")]
    BaseLength { got: usize, want: u32 },
}

/// The block size for a base of `base_len` bytes: about `sqrt(12 ×
/// base_len)`. A block costs 12 signature bytes, and an edit costs about
/// one block of literals around it, so this balances the two: ~900 bytes
/// for a 64 KiB base. Never more than the base itself.
pub fn block_size_for(base_len: u32) -> u32 {
    let b = (12 * u64::from(base_len)).isqrt() as u32;
    b.clamp(MIN_BLOCK, MAX_BLOCK).min(base_len).max(1)
}

/// rsync's rolling checksum over a window of `len` bytes: `a` is the sum of
/// the bytes, `b` the sum of the running sums, each kept to 16 bits.
#[derive(Debug, Clone, Copy)]
struct Rolling {
    a: u32,
    b: u32,
    len: u32,
}

impl Rolling {
    fn new(window: &[u8]) -> Rolling {
        // b = Σ (n − i) · x_i: independent terms, so this vectorizes.
        let n = window.len() as u32;
        let (mut a, mut b) = (0u32, 0u32);
        for (i, &x) in window.iter().enumerate() {
            a = a.wrapping_add(u32::from(x));
            b = b.wrapping_add(n.wrapping_sub(i as u32).wrapping_mul(u32::from(x)));
        }
        Rolling { a, b, len: n }
    }

    /// Slides the window one byte: `out` leaves at the front, `inb` enters
    /// at the back.
    #[inline]
    fn roll(&mut self, out: u8, inb: u8) {
        self.a = self.a.wrapping_sub(u32::from(out)).wrapping_add(u32::from(inb));
        self.b = self
            .b
            .wrapping_sub(self.len.wrapping_mul(u32::from(out)))
            .wrapping_add(self.a);
    }

    #[inline]
    fn digest(&self) -> u32 {
        (self.a & 0xffff) | (self.b << 16)
    }
}

/// The rolling checksum of one block, as a signature carries it.
pub fn weak_sum(block: &[u8]) -> u32 {
    Rolling::new(block).digest()
}

fn strong_sum(block: &[u8]) -> [u8; STRONG_LEN] {
    let mut s = [0u8; STRONG_LEN];
    s.copy_from_slice(&blake3::hash(block).as_bytes()[..STRONG_LEN]);
    s
}

/// The bytes of block `i` of a base (see [`Signature::block_range`]).
fn block_range(base_len: usize, block_size: usize, i: usize) -> std::ops::Range<usize> {
    let start = i.saturating_mul(block_size).min(base_len);
    start..start.saturating_add(block_size).min(base_len)
}

/// The signature of `base` with blocks of `block_size` (from
/// [`block_size_for`]). `base` must not be empty nor longer than
/// `wire::msg::MAX_BASE`; `block_size` is clamped to `1..=base.len()`.
pub fn signature(base: &[u8], block_size: u32) -> Signature {
    let block = (block_size as usize).clamp(1, base.len().max(1));
    let n = base.len().div_ceil(block);
    let blocks = (0..n)
        .map(|i| {
            let b = &base[block_range(base.len(), block, i)];
            BlockSum {
                weak: weak_sum(b),
                strong: strong_sum(b),
            }
        })
        .collect();
    Signature {
        block_size: block as u32,
        base_len: base.len() as u32,
        blocks,
    }
}

/// A chunk expressed against a base: ops and the literal bytes they take.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    pub ops: Vec<DeltaOp>,
    pub literals: Vec<u8>,
    /// Bytes strong-hashed by the scan: its cost beyond the rolling sums.
    pub hashed: u64,
}

impl Delta {
    /// Bytes copied from the base `sig` describes.
    pub fn copied(&self, sig: &Signature) -> u64 {
        self.ops
            .iter()
            .map(|op| match *op {
                DeltaOp::Copy { block, count } => (block..block.saturating_add(count))
                    .map(|i| {
                        let r = sig.block_range(i);
                        r.end - r.start
                    })
                    .sum(),
                DeltaOp::Literal { .. } => 0,
            })
            .sum()
    }

    fn literal(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.literals.extend_from_slice(bytes);
        // Literal runs longer than u32 cannot occur: a chunk is ≤ 16 MiB.
        self.ops.push(DeltaOp::Literal {
            len: bytes.len() as u32,
        });
    }

    fn copy(&mut self, block: u32) {
        if let Some(DeltaOp::Copy { block: b, count }) = self.ops.last_mut()
            && *b + *count == block
        {
            *count += 1;
            return;
        }
        self.ops.push(DeltaOp::Copy { block, count: 1 });
    }
}

/// A 2¹⁶-bit filter over the signature's weak sums: most positions of a
/// scan miss, and this answers them from 8 KiB that stay in cache.
struct Filter(Box<[u64; 1 << 10]>);

impl Filter {
    #[inline]
    fn slot(weak: u32) -> usize {
        (weak.wrapping_mul(0x9E37_79B1) >> 16) as usize
    }
    fn new(blocks: &[BlockSum]) -> Filter {
        let mut bits = Box::new([0u64; 1 << 10]);
        for b in blocks {
            let s = Filter::slot(b.weak);
            bits[s >> 6] |= 1 << (s & 63);
        }
        Filter(bits)
    }
    #[inline]
    fn maybe(&self, weak: u32) -> bool {
        let s = Filter::slot(weak);
        self.0[(s >> 6) & 1023] & (1 << (s & 63)) != 0
    }

    /// Rolls `r` (the window at `pos`) forward until the filter may match
    /// or the window reaches the end of `data`; returns the position.
    #[inline]
    fn seek(&self, r: &mut Rolling, data: &[u8], mut pos: usize) -> usize {
        let bs = r.len as usize;
        // The window's end never passes data.len(): the loop stops when the
        // next roll would take it there.
        let (outs, ins) = (&data[pos..data.len() - bs], &data[pos + bs..]);
        for (&out, &inb) in outs.iter().zip(ins) {
            if self.maybe(r.digest()) {
                return pos;
            }
            r.roll(out, inb);
            pos += 1;
        }
        pos
    }
}

/// Finds the blocks of the base `sig` describes in `new` and returns the
/// ops that rebuild `new` from them. Where several blocks match, the one
/// following the previous copy wins, so runs stay sequential. The base's
/// short last block is looked for where it can be found cheaply: right
/// after its predecessor (an append) and at the very end of `new`.
///
/// Work is bounded: O(`new.len()`) rolling steps, and strong hashes of
/// windows whose weak sum matches but whose strong one does not stop being
/// computed after about twice `new.len()` bytes (a hostile signature of
/// colliding weak sums costs time, not unbounded time); the rest of `new`
/// then goes as literals.
pub fn diff(new: &[u8], sig: &Signature) -> Delta {
    let mut d = Delta::default();
    let bs = sig.block_size as usize;
    let base_len = sig.base_len as usize;
    let n = sig.blocks.len();
    let consistent = bs >= 1 && bs <= base_len && Signature::block_count(sig.base_len, sig.block_size) == n as u64;
    if !consistent {
        d.literal(new);
        return d;
    }
    // The short last block, if any: (index, length, sums).
    let tail = (!base_len.is_multiple_of(bs)).then(|| (n - 1, base_len % bs, sig.blocks[n - 1]));
    let full = if tail.is_some() { n - 1 } else { n };
    let filter = Filter::new(&sig.blocks[..full]);
    let mut table: HashMap<(u32, [u8; STRONG_LEN]), u32> = HashMap::with_capacity(full);
    for (i, b) in sig.blocks[..full].iter().enumerate().rev() {
        // Reverse order: the lowest index of identical blocks is kept.
        table.insert((b.weak, b.strong), i as u32);
    }
    // The exact weak sums: a filter hit is checked against them before a
    // strong hash is computed (the filter alone lets ~0.1 % through).
    let mut weaks: Vec<u32> = sig.blocks[..full].iter().map(|b| b.weak).collect();
    weaks.sort_unstable();
    weaks.dedup();
    let mut budget = 2 * new.len() + 4 * bs;
    let (mut pos, mut lit_start) = (0usize, 0usize);
    let mut next_block: Option<usize> = None;
    let mut roll = (new.len() >= bs).then(|| Rolling::new(&new[..bs]));
    // One step of the scan: a match at `pos` (copied, then the scan goes on
    // after it) or a roll of one byte.
    while pos < new.len() {
        // The short last block right after its predecessor.
        if let Some((ti, tl, sums)) = tail
            && next_block == Some(ti)
            && pos + tl <= new.len()
        {
            next_block = None;
            let w = &new[pos..pos + tl];
            d.hashed += tl as u64;
            if weak_sum(w) == sums.weak && strong_sum(w) == sums.strong {
                d.literal(&new[lit_start..pos]);
                d.copy(ti as u32);
                pos += tl;
                lit_start = pos;
                roll = (pos + bs <= new.len()).then(|| Rolling::new(&new[pos..pos + bs]));
                continue;
            }
        }
        let Some(r) = roll.as_mut() else { break };
        if budget > 0 {
            pos = filter.seek(r, new, pos);
        }
        let weak = r.digest();
        let mut found = None;
        if budget > 0 && filter.maybe(weak) && weaks.binary_search(&weak).is_ok() {
            let strong = strong_sum(&new[pos..pos + bs]);
            d.hashed += bs as u64;
            found = next_block
                .filter(|&b| b < full && sig.blocks[b].weak == weak && sig.blocks[b].strong == strong)
                .map(|b| b as u32)
                .or_else(|| table.get(&(weak, strong)).copied());
            if found.is_none() {
                budget = budget.saturating_sub(bs);
            }
        }
        if let Some(block) = found {
            d.literal(&new[lit_start..pos]);
            d.copy(block);
            next_block = Some(block as usize + 1);
            pos += bs;
            lit_start = pos;
            roll = (pos + bs <= new.len()).then(|| Rolling::new(&new[pos..pos + bs]));
            continue;
        }
        if pos + bs >= new.len() {
            break;
        }
        r.roll(new[pos], new[pos + bs]);
        pos += 1;
    }
    // The short last block at the very end of `new`.
    if let Some((ti, tl, sums)) = tail
        && new.len() >= lit_start + tl
    {
        let w = &new[new.len() - tl..];
        d.hashed += tl as u64;
        if weak_sum(w) == sums.weak && strong_sum(w) == sums.strong {
            d.literal(&new[lit_start..new.len() - tl]);
            d.copy(ti as u32);
            return d;
        }
    }
    d.literal(&new[lit_start..]);
    d
}

/// Rebuilds a chunk of `raw_len` bytes from `base` (of the length its
/// signature declared, cut in blocks of `block_size`), the ops and their
/// literals. Every bound is checked: the output never exceeds `raw_len`
/// (nor is more allocated), block indices must exist, and the literals must
/// be used exactly.
pub fn apply(
    base: &[u8],
    block_size: u32,
    ops: &[DeltaOp],
    literals: &[u8],
    raw_len: u32,
) -> Result<Vec<u8>, DeltaError> {
    let bs = block_size as usize;
    if bs == 0 || bs > base.len() {
        return Err(DeltaError::BaseLength {
            got: base.len(),
            want: block_size,
        });
    }
    let blocks = base.len().div_ceil(bs) as u64;
    let limit = raw_len as usize;
    let mut out = Vec::with_capacity(limit);
    let mut lit = 0usize;
    for op in ops {
        match *op {
            DeltaOp::Copy { block, count } => {
                let end = u64::from(block) + u64::from(count);
                if end > blocks {
                    return Err(DeltaError::BlockOutOfRange { block: end - 1, blocks });
                }
                for i in u64::from(block)..end {
                    let b = &base[block_range(base.len(), bs, i as usize)];
                    if out.len() + b.len() > limit {
                        return Err(DeltaError::TooLong { raw_len });
                    }
                    out.extend_from_slice(b);
                }
            }
            DeltaOp::Literal { len } => {
                let len = len as usize;
                if out.len() + len > limit {
                    return Err(DeltaError::TooLong { raw_len });
                }
                let take = literals
                    .get(lit..lit + len)
                    .ok_or(DeltaError::LiteralsShort { have: literals.len() })?;
                out.extend_from_slice(take);
                lit += len;
            }
        }
    }
    if out.len() != limit {
        return Err(DeltaError::TooShort {
            got: out.len(),
            raw_len,
        });
    }
    if lit != literals.len() {
        return Err(DeltaError::LiteralsLeft {
            left: literals.len() - lit,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
