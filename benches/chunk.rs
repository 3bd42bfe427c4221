//! Chunk + hash throughput on one core: FastCDC 2020 cut points and BLAKE3
//! per chunk over a 64 MiB incompressible buffer held in memory, with the
//! default 16K/64K/256K bounds. No thread pool is involved: this is the cost
//! one scanner worker pays per byte. For comparison it also measures the cut
//! alone, BLAKE3 alone, and `fastcdc::v2020::StreamCDC` (which copies every
//! chunk), so the bottleneck is visible.
//!
//! Run: `cargo bench --bench chunk`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fastcdc::v2020::{FastCDC, StreamCDC};
use hamirror::chunk::Chunker;
use hamirror::config::ChunkParams;
use hamirror::noise::noise;

const LEN: usize = 64 << 20;

fn bench(c: &mut Criterion) {
    let data = noise(0, LEN);
    let p = ChunkParams::default();
    let (min, avg, max) = (p.min as usize, p.avg as usize, p.max as usize);
    let mut g = c.benchmark_group("one_core_64MiB");
    g.throughput(Throughput::Bytes(LEN as u64));
    g.sample_size(10);

    let mut chunker = Chunker::new(p).expect("default params are valid");
    g.bench_function("chunker_cut_and_blake3", |b| {
        b.iter(|| black_box(chunker.chunk(&data[..], |_| {}).expect("slice read").chunks.len()))
    });
    g.bench_function("fastcdc_cut_only", |b| {
        b.iter(|| black_box(FastCDC::new(&data, min, avg, max).count()))
    });
    g.bench_function("blake3_only_per_64KiB", |b| {
        b.iter(|| {
            for block in data.chunks(64 << 10) {
                black_box(blake3::hash(block));
            }
        })
    });
    g.bench_function("streamcdc_cut_and_blake3", |b| {
        b.iter(|| {
            let x = StreamCDC::new(&data[..], min, avg, max).fold(0u8, |acc, c| {
                acc ^ blake3::hash(&c.expect("slice read").data).as_bytes()[0]
            });
            black_box(x)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
