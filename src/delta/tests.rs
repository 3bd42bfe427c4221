//! The delta engine: rebuilding is exact for every kind of edit, deltas are
//! small for small edits, and hostile ops or signatures are refused or cost
//! bounded work — never a panic.

use super::*;
use crate::noise::noise;
use proptest::prelude::*;

fn round_trip(base: &[u8], new: &[u8]) -> Delta {
    let sig = signature(base, block_size_for(base.len() as u32));
    let d = diff(new, &sig);
    let got = apply(base, sig.block_size, &d.ops, &d.literals, new.len() as u32).unwrap();
    assert!(got == new, "rebuilt chunk differs");
    d
}

#[test]
fn the_rolling_checksum_rolls() {
    let data = noise(1, 5000);
    let n = 700;
    let mut r = Rolling::new(&data[..n]);
    for pos in 0..data.len() - n {
        assert_eq!(r.digest(), weak_sum(&data[pos..pos + n]), "at {pos}");
        r.roll(data[pos], data[pos + n]);
    }
}

#[test]
fn block_sizes_follow_the_square_root_and_stay_in_bounds() {
    assert_eq!(block_size_for(64 << 10), 886);
    assert_eq!(block_size_for(10), 10);
    assert_eq!(block_size_for(100), 64);
    assert_eq!(block_size_for(hamirror_wire::msg::MAX_BASE), 20_066);
    // The last block is short.
    let sig = signature(&noise(2, 1000), 300);
    assert_eq!(sig.blocks.len(), 4);
    assert_eq!(sig.block_range(3), 900..1000);
}

#[test]
fn a_4k_overwrite_in_a_64k_chunk_costs_about_4k() {
    let base = noise(3, 64 << 10);
    let mut new = base.clone();
    new[30_000..30_000 + 4096].copy_from_slice(&noise(4, 4096));
    let d = round_trip(&base, &new);
    let b = block_size_for(base.len() as u32) as usize;
    assert!(
        d.literals.len() >= 4096 && d.literals.len() <= 4096 + 2 * b,
        "{}",
        d.literals.len()
    );
    assert!(d.ops.len() <= 3, "{:?}", d.ops);
}

#[test]
fn appends_insertions_and_deletions_reuse_the_rest() {
    let base = noise(5, 40_000);
    let b = block_size_for(base.len() as u32) as usize;
    // Append: the short last block is found after its predecessor, so all
    // of the base is reused.
    let mut appended = base.clone();
    appended.extend_from_slice(&noise(6, 1000));
    let d = round_trip(&base, &appended);
    assert_eq!(d.literals.len(), 1000);
    // Insertion of 100 bytes in the middle.
    let mut inserted = base.clone();
    inserted.splice(20_000..20_000, noise(7, 100));
    let d = round_trip(&base, &inserted);
    assert!(d.literals.len() <= 100 + b, "{}", d.literals.len());
    // Deletion of 3000 bytes.
    let mut deleted = base.clone();
    deleted.drain(10_000..13_000);
    let d = round_trip(&base, &deleted);
    assert!(d.literals.len() <= b, "{}", d.literals.len());
    // Prefix: the new data starts in the middle of the base.
    let d = round_trip(&base, &base[5_000..]);
    assert!(d.literals.len() < b, "{}", d.literals.len());
}

#[test]
fn unrelated_and_tiny_data_go_as_literals() {
    let base = noise(8, 10_000);
    let new = noise(9, 10_000);
    let d = round_trip(&base, &new);
    assert_eq!(d.literals, new);
    assert_eq!(d.ops, vec![DeltaOp::Literal { len: 10_000 }]);
    let d = round_trip(&base, b"tiny");
    assert_eq!(d.literals, b"tiny");
    // A base of one short block.
    round_trip(b"abc", b"xxabcxx");
}

#[test]
fn repeated_blocks_copy_in_sequential_runs() {
    let base = vec![0u8; 10_000];
    let d = round_trip(&base, &vec![0u8; 9_000]);
    assert!(d.ops.len() <= 3, "{:?}", d.ops);
}

#[test]
fn hostile_ops_are_refused() {
    let base = noise(10, 1000);
    let bs = 100;
    let lit = [1u8, 2, 3];
    let cases: Vec<(Vec<DeltaOp>, &[u8], u32, &str)> = vec![
        (
            vec![DeltaOp::Copy { block: 10, count: 1 }],
            &[],
            100,
            "block past the end",
        ),
        (
            vec![DeltaOp::Copy {
                block: u32::MAX,
                count: u32::MAX,
            }],
            &[],
            100,
            "overflowing block range",
        ),
        (
            vec![DeltaOp::Copy { block: 0, count: 2 }],
            &[],
            150,
            "output past raw_len",
        ),
        (vec![DeltaOp::Literal { len: 4 }], &lit, 4, "literals short"),
        (vec![DeltaOp::Literal { len: 2 }], &lit, 2, "literals left over"),
        (vec![DeltaOp::Literal { len: 3 }], &lit, 5, "output short of raw_len"),
        (vec![DeltaOp::Literal { len: u32::MAX }], &lit, 3, "huge literal"),
    ];
    for (ops, lits, raw_len, why) in cases {
        assert!(apply(&base, bs, &ops, lits, raw_len).is_err(), "{why}");
    }
    assert!(apply(&base, 0, &[], &[], 1).is_err(), "zero block size");
    assert!(apply(&base, 2000, &[], &[], 1).is_err(), "block larger than the base");
    assert_eq!(
        apply(&base, bs, &[DeltaOp::Copy { block: 9, count: 1 }], &[], 100).unwrap(),
        &base[900..]
    );
    // The short last block copies its own length.
    assert_eq!(
        apply(&base, 300, &[DeltaOp::Copy { block: 3, count: 1 }], &[], 100).unwrap(),
        &base[900..]
    );
}

#[test]
fn a_signature_of_colliding_weak_sums_costs_bounded_work() {
    // Every block has the weak sum of a zero block but a strong hash that
    // never matches: each position of the scan is a false alarm. Unbounded,
    // that would hash 4 KiB at each of a million positions.
    let mut sig = signature(&vec![0u8; 64 << 10], 4096);
    for b in &mut sig.blocks {
        b.strong = [0xee; STRONG_LEN];
    }
    let new = vec![0u8; 1 << 20];
    let d = diff(&new, &sig);
    assert_eq!(d.literals.len(), new.len());
    assert!(d.hashed <= 2 * (1 << 20) + 5 * 4096, "{}", d.hashed);
}

#[test]
fn an_inconsistent_signature_degrades_to_literals() {
    let mut sig = signature(&noise(11, 1000), 100);
    sig.blocks.pop();
    let new = noise(11, 1000);
    assert_eq!(diff(&new, &sig).literals, new);
}

/// An edit to apply to a base, for the property tests.
#[derive(Debug, Clone)]
enum Edit {
    Overwrite(usize, Vec<u8>),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Append(Vec<u8>),
    Truncate(usize),
}

fn arb_edit() -> impl Strategy<Value = Edit> {
    let bytes = proptest::collection::vec(any::<u8>(), 1..2000);
    prop_oneof![
        (any::<usize>(), bytes.clone()).prop_map(|(at, b)| Edit::Overwrite(at, b)),
        (any::<usize>(), bytes.clone()).prop_map(|(at, b)| Edit::Insert(at, b)),
        (any::<usize>(), 1..3000usize).prop_map(|(at, n)| Edit::Delete(at, n)),
        bytes.prop_map(Edit::Append),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn edit(mut v: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let n = v.len();
        match e {
            Edit::Overwrite(at, b) => {
                let at = at % (n + 1);
                let end = (at + b.len()).min(n);
                v[at..end].copy_from_slice(&b[..end - at]);
            }
            Edit::Insert(at, b) => {
                let at = at % (n + 1);
                v.splice(at..at, b.iter().copied());
            }
            Edit::Delete(at, k) => {
                let at = at % (n + 1);
                v.drain(at..(at + k).min(n));
            }
            Edit::Append(b) => v.extend_from_slice(b),
            Edit::Truncate(at) => v.truncate(at % (n + 1)),
        }
    }
    if v.is_empty() {
        v.push(0);
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the edits, the delta rebuilds the new data exactly, and an
    /// edit of k bytes costs at most k plus two blocks per edit of literals.
    #[test]
    fn delta_applied_to_base_is_the_new_data(
        seed in any::<u64>(),
        len in 1usize..40_000,
        block in prop_oneof![Just(0u32), 1u32..3000],
        edits in proptest::collection::vec(arb_edit(), 0..4),
        low_entropy in any::<bool>(),
    ) {
        let base = if low_entropy {
            noise(seed, len).iter().map(|b| b & 3).collect()
        } else {
            noise(seed, len)
        };
        let new = edit(base.clone(), &edits);
        let bs = if block == 0 { block_size_for(base.len() as u32) } else { block };
        let sig = signature(&base, bs);
        let d = diff(&new, &sig);
        let got = apply(&base, sig.block_size, &d.ops, &d.literals, new.len() as u32);
        prop_assert_eq!(got.as_deref(), Ok(&new[..]));
        if !low_entropy && edits.is_empty() {
            prop_assert!(d.literals.len() < sig.block_size as usize);
        }
    }

    /// Arbitrary ops against an arbitrary base: an error or exactly
    /// raw_len bytes, never a panic.
    #[test]
    fn arbitrary_ops_never_panic(
        base in proptest::collection::vec(any::<u8>(), 1..500),
        bs in 0u32..600,
        ops in proptest::collection::vec(prop_oneof![
            (any::<u32>(), any::<u32>()).prop_map(|(block, count)| DeltaOp::Copy { block, count }),
            (0u32..10, 0u32..4).prop_map(|(block, count)| DeltaOp::Copy { block, count }),
            any::<u32>().prop_map(|len| DeltaOp::Literal { len }),
            (0u32..50).prop_map(|len| DeltaOp::Literal { len }),
        ], 0..8),
        literals in proptest::collection::vec(any::<u8>(), 0..200),
        raw_len in 0u32..2000,
    ) {
        if let Ok(out) = apply(&base, bs, &ops, &literals, raw_len) {
            prop_assert_eq!(out.len(), raw_len as usize);
        }
    }

    /// Arbitrary signatures (wrong lengths, colliding sums) never make the
    /// scan panic, and whatever it produces still rebuilds against a base
    /// that has the signature's shape.
    #[test]
    fn arbitrary_signatures_never_panic(
        new in proptest::collection::vec(any::<u8>(), 0..3000),
        block_size in 0u32..300,
        base_len in 0u32..3000,
        sums in proptest::collection::vec((any::<u32>(), any::<[u8; STRONG_LEN]>()), 0..40),
    ) {
        let sig = Signature {
            block_size,
            base_len,
            blocks: sums.into_iter().map(|(weak, strong)| BlockSum { weak, strong }).collect(),
        };
        let d = diff(&new, &sig);
        prop_assert_eq!(d.literals.len() as u64 + d.copied(&sig), new.len() as u64);
    }
}
