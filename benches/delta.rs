//! Delta engine throughput on one core (`hamirror::delta`): the receiver's
//! signature of a 64 KiB base, the sender's scan of a 64 KiB chunk — with a
//! 4 KiB overwrite (the common case: mostly block matches) and unrelated
//! (the worst case: a rolling step and a filter probe at every byte, no
//! match) — and the receiver's rebuild. These are what a changed chunk
//! costs on top of reading it; the scan of unrelated data is also the cost
//! of asking for a delta that does not pay (a rewritten file).
//!
//! Run: `cargo bench --bench delta`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hamirror::delta::{apply, block_size_for, diff, signature};
use hamirror::noise::noise;

const LEN: usize = 64 << 10;

fn bench(c: &mut Criterion) {
    let base = noise(1, LEN);
    let mut edited = base.clone();
    edited[30_000..30_000 + 4096].copy_from_slice(&noise(2, 4096));
    let unrelated = noise(3, LEN);
    let bs = block_size_for(LEN as u32);
    let sig = signature(&base, bs);
    let d = diff(&edited, &sig);

    let mut g = c.benchmark_group("one_core_64KiB");
    g.throughput(Throughput::Bytes(LEN as u64));
    g.bench_function("signature", |b| b.iter(|| black_box(signature(&base, bs))));
    g.bench_function("diff_4KiB_overwrite", |b| b.iter(|| black_box(diff(&edited, &sig))));
    g.bench_function("diff_unrelated", |b| b.iter(|| black_box(diff(&unrelated, &sig))));
    g.bench_function("apply", |b| {
        b.iter(|| black_box(apply(&base, sig.block_size, &d.ops, &d.literals, LEN as u32).expect("fits")))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
