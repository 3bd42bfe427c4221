//! Which old bytes to use as the base for each chunk of a changed file.
//!
//! Content-defined chunking resynchronises after an edit, so the old and
//! new chunk lists share chunks on both sides of every changed region.
//! Chunks that occur once in each list are anchors; the longest sequence of
//! anchors in the same order in both lists aligns the two versions. Between
//! two consecutive anchors, the new chunks in the gap were made from the old
//! bytes in the same gap (plus the edit), so a new chunk's base is the part
//! of the old gap where its bytes can have come from: around the same
//! distance from the gap's start, widened by what the gap grew or shrank
//! (an insertion shifts what follows it, a deletion pulls it closer).
//!
//! This covers overwrites in place, appends, truncations, insertions and
//! deletions of any length; a rewritten file (no anchor at all) is one gap
//! whose chunks get the old bytes at about the same offset. Pure: chunk
//! lists in, byte windows out.

use std::collections::HashMap;

use hamirror_wire::{ChunkRef, Hash};

/// Old bytes kept on either side of where a chunk's bytes can come from:
/// chunk boundaries move by a few bytes to kilobytes around an edit.
const PAD: u64 = 4 << 10;
/// A base is at most this many times its chunk's length (plus
/// [`MAX_EXTRA`]): its signature costs ~2 % of its length on the wire, and a
/// large insertion or deletion must not make every chunk of it carry the
/// signature of a whole old region.
const MAX_FACTOR: u64 = 4;
const MAX_EXTRA: u64 = 64 << 10;

/// A range of the old file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub offset: u64,
    pub len: u64,
}

fn offsets(chunks: &[ChunkRef]) -> Vec<u64> {
    let mut v = Vec::with_capacity(chunks.len() + 1);
    let mut at = 0u64;
    v.push(0);
    for c in chunks {
        at += u64::from(c.len);
        v.push(at);
    }
    v
}

/// The anchors: (new index, old index) of chunks that occur exactly once in
/// each list, keeping the longest run that is increasing in both.
fn anchors(old: &[ChunkRef], new: &[ChunkRef]) -> Vec<(usize, usize)> {
    // hash -> (occurrences in old, index in old, occurrences in new)
    let mut seen: HashMap<&Hash, (u32, usize, u32)> = HashMap::with_capacity(old.len());
    for (i, c) in old.iter().enumerate() {
        let e = seen.entry(&c.hash).or_insert((0, i, 0));
        e.0 += 1;
    }
    for c in new {
        if let Some(e) = seen.get_mut(&c.hash) {
            e.2 += 1;
        }
    }
    let pairs: Vec<(usize, usize)> = new
        .iter()
        .enumerate()
        .filter_map(|(j, c)| match seen.get(&c.hash) {
            Some(&(1, i, 1)) => Some((j, i)),
            _ => None,
        })
        .collect();
    longest_increasing(&pairs)
}

/// The longest subsequence of `pairs` (increasing in `.0`) whose `.1` is
/// increasing too: patience sorting, O(n log n).
fn longest_increasing(pairs: &[(usize, usize)]) -> Vec<(usize, usize)> {
    // tails[k]: index into pairs of the smallest tail of a run of length k+1.
    let mut tails: Vec<usize> = Vec::new();
    let mut prev: Vec<Option<usize>> = vec![None; pairs.len()];
    for (p, &(_, i)) in pairs.iter().enumerate() {
        let k = tails.partition_point(|&t| pairs[t].1 < i);
        prev[p] = k.checked_sub(1).map(|k| tails[k]);
        if k == tails.len() {
            tails.push(p);
        } else {
            tails[k] = p;
        }
    }
    let mut out = Vec::with_capacity(tails.len());
    let mut at = tails.last().copied();
    while let Some(p) = at {
        out.push(pairs[p]);
        at = prev[p];
    }
    out.reverse();
    out
}

/// For every chunk of `new`, the window of the old file (chunked as `old`)
/// to use as its base, or `None` when the old version has nothing there.
/// Anchored chunks get their own old copy (they are reused anyway).
pub fn windows(old: &[ChunkRef], new: &[ChunkRef]) -> Vec<Option<Window>> {
    let mut out = vec![None; new.len()];
    if old.is_empty() || new.is_empty() {
        return out;
    }
    let (oo, no) = (offsets(old), offsets(new));
    let anchors = anchors(old, new);
    // Gaps between anchors, with a virtual anchor before the start and one
    // after the end of both lists.
    let mut prev = (None::<usize>, None::<usize>);
    let ends = anchors
        .iter()
        .map(|&(j, i)| (Some(j), Some(i)))
        .chain(std::iter::once((None, None)));
    for next in ends {
        let (nj0, oi0) = (prev.0.map_or(0, |j| j + 1), prev.1.map_or(0, |i| i + 1));
        let (nj1, oi1) = (next.0.unwrap_or(new.len()), next.1.unwrap_or(old.len()));
        if nj0 < nj1 && oi0 < oi1 {
            gap(&oo[oi0..=oi1], &no[nj0..=nj1], &mut out[nj0..nj1]);
        }
        if let (Some(j), Some(i)) = next {
            out[j] = Some(Window {
                offset: oo[i],
                len: oo[i + 1] - oo[i],
            });
        }
        prev = next;
    }
    out
}

/// Windows for the new chunks of one gap. `oo`/`no` are the offsets of the
/// gap's old and new chunks, with the gap's end as the last element.
fn gap(oo: &[u64], no: &[u64], out: &mut [Option<Window>]) {
    let (os, oe) = (oo[0], oo[oo.len() - 1]);
    let (ns, ne) = (no[0], no[no.len() - 1]);
    let (lo, ln) = (oe - os, ne - ns);
    // Bytes after an insertion sit further on in the new gap than in the
    // old one; after a deletion, closer.
    let grew = ln.saturating_sub(lo);
    let shrank = lo.saturating_sub(ln);
    for (k, w) in out.iter_mut().enumerate() {
        let (r, l) = (no[k] - ns, no[k + 1] - no[k]);
        let mut start = r.saturating_sub(grew + PAD).min(lo);
        let mut end = (r + l + shrank + PAD).min(lo);
        let cap = MAX_FACTOR * l + MAX_EXTRA;
        if end - start > cap {
            // Keep the part around where the chunk sits proportionally.
            let centre = r.saturating_mul(lo) / ln.max(1) + l / 2;
            start = centre.saturating_sub(cap / 2).clamp(start, end - cap);
            end = start + cap;
        }
        if end > start {
            *w = Some(Window {
                offset: os + start,
                len: end - start,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(spec: &[(u8, u32)]) -> Vec<ChunkRef> {
        spec.iter().map(|&(h, len)| ChunkRef { hash: [h; 32], len }).collect()
    }

    #[test]
    fn an_edited_chunk_gets_the_old_chunk_between_the_same_neighbours() {
        let old = list(&[(1, 100), (2, 200), (3, 300)]);
        let new = list(&[(1, 100), (9, 200), (3, 300)]);
        let w = windows(&old, &new);
        assert_eq!(w[1], Some(Window { offset: 100, len: 200 }));
        assert_eq!(w[0], Some(Window { offset: 0, len: 100 }));
    }

    #[test]
    fn a_small_file_is_its_own_base_and_an_append_gets_the_old_tail() {
        let w = windows(&list(&[(1, 5000)]), &list(&[(2, 6000)]));
        assert_eq!(w[0], Some(Window { offset: 0, len: 5000 }));
        let old = list(&[(1, 70_000), (2, 50_000)]);
        let new = list(&[(1, 70_000), (3, 51_000)]);
        assert_eq!(
            windows(&old, &new)[1],
            Some(Window {
                offset: 70_000,
                len: 50_000
            })
        );
    }

    #[test]
    fn an_insertion_that_splits_a_chunk_covers_both_halves() {
        // Old chunk 2 (100..300) became 8 and 9 with 50 bytes inserted.
        let old = list(&[(1, 100), (2, 200), (3, 300)]);
        let new = list(&[(1, 100), (8, 120), (9, 130), (3, 300)]);
        let w = windows(&old, &new);
        // Each window lies inside the old gap and covers the chunk's span.
        for (k, (start, len)) in [(1usize, (0u64, 120u64)), (2, (120, 130))] {
            let win = w[k].unwrap();
            assert!(win.offset >= 100 && win.offset + win.len <= 300, "{win:?}");
            assert!(win.offset <= 100 + start.saturating_sub(50), "{win:?}");
            assert!(win.offset + win.len >= (100 + start + len).min(300), "{win:?}");
        }
    }

    #[test]
    fn chunks_moved_out_of_order_do_not_anchor() {
        // 2 and 3 swapped: only one of them can anchor; the other falls in a
        // gap and still gets a window of the old file.
        let old = list(&[(1, 10), (2, 10), (3, 10), (4, 10)]);
        let new = list(&[(1, 10), (3, 10), (2, 10), (4, 10)]);
        let a = anchors(&old, &new);
        assert_eq!(a.len(), 3);
        assert!(a.windows(2).all(|p| p[0].0 < p[1].0 && p[0].1 < p[1].1));
    }

    #[test]
    fn repeated_chunks_are_not_anchors() {
        let old = list(&[(0, 10), (1, 10), (0, 10)]);
        let new = list(&[(0, 10), (5, 10), (0, 10)]);
        assert!(anchors(&old, &new).is_empty());
        // One gap: the whole file, each chunk at its own offset.
        let w = windows(&old, &new);
        assert_eq!(w[1], Some(Window { offset: 0, len: 30 }));
    }

    #[test]
    fn a_huge_insertion_caps_the_windows() {
        let old = list(&[(1, 1 << 20), (2, 64 << 10), (3, 1 << 20)]);
        let mut spec = vec![(1u8, 1u32 << 20)];
        spec.extend((10..60).map(|h| (h, 64 << 10)));
        spec.push((3, 1 << 20));
        let new = list(&spec);
        for w in windows(&old, &new)[1..51].iter() {
            let w = w.unwrap();
            assert!(w.len <= MAX_FACTOR * (64 << 10) + MAX_EXTRA);
            assert!(w.offset >= 1 << 20 && w.offset + w.len <= (1 << 20) + (64 << 10));
        }
    }

    #[test]
    fn nothing_old_means_no_base() {
        assert_eq!(windows(&[], &list(&[(1, 5)])), vec![None]);
        // A pure insertion between two anchors has an empty old gap.
        let old = list(&[(1, 10), (2, 10)]);
        let new = list(&[(1, 10), (7, 10), (2, 10)]);
        assert_eq!(windows(&old, &new)[1], None);
    }

    #[test]
    fn the_longest_increasing_run_is_found() {
        let pairs = [(0, 5), (1, 1), (2, 2), (3, 9), (4, 3), (5, 4)];
        assert_eq!(longest_increasing(&pairs), vec![(1, 1), (2, 2), (4, 3), (5, 4)]);
        assert!(longest_increasing(&[]).is_empty());
    }
}
