//! Micro-benchmarks of the wire crate: how long a full listing of a large
//! set takes to batch, frame and decode (the cost a full offer adds on both
//! sides), and how fast the frame decoder passes chunk data through.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hamirror_wire::{
    Chunk, ChunkRef, Compression, Entry, EntryAssembler, EntryBatcher, EntryKind, Message, MessageDecoder,
    entry::file_hash,
};

/// A set like the benchmark tree: 50,000 files of 1..=4 chunks.
fn listing() -> Vec<Entry> {
    (0..50_000u32)
        .map(|i| {
            let chunks: Vec<ChunkRef> = (0..1 + i % 4)
                .map(|c| ChunkRef {
                    hash: *blake3::hash(&(u64::from(i) << 8 | u64::from(c)).to_le_bytes()).as_bytes(),
                    len: 65_536,
                })
                .collect();
            Entry {
                path: format!("srv/data/dir{:03}/file-{i:06}.dat", i % 500).into_bytes(),
                kind: EntryKind::File,
                mode: 0o644,
                uid: 1000,
                gid: 1000,
                mtime_ns: 1_700_000_000_000_000_000 + i64::from(i),
                size: chunks.iter().map(|c| u64::from(c.len)).sum(),
                file_hash: file_hash(&chunks),
                chunks,
                target: vec![],
                xattrs: vec![],
            }
        })
        .collect()
}

fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut b = EntryBatcher::new();
    let mut out = vec![];
    for e in entries {
        for m in b.entry(e.clone()) {
            out.extend(m.encode_frame().unwrap());
        }
    }
    for m in b.flush() {
        out.extend(m.encode_frame().unwrap());
    }
    out
}

fn decode(stream: &[u8]) -> usize {
    let mut d = MessageDecoder::new();
    let mut asm = EntryAssembler::new();
    let mut n = 0;
    for piece in stream.chunks(64 << 10) {
        d.push(piece);
        while let Some(m) = d.pop().unwrap() {
            if let Message::Entries(v) = m {
                n += asm.entries(v).unwrap().len();
            }
        }
    }
    n
}

fn listing_benches(c: &mut Criterion) {
    let entries = listing();
    let stream = encode(&entries);
    println!("full listing of 50,000 files: {} bytes on the wire", stream.len());
    let mut g = c.benchmark_group("listing_50k");
    g.sample_size(10);
    g.throughput(Throughput::Elements(entries.len() as u64));
    g.bench_function("batch_and_encode", |b| b.iter(|| encode(black_box(&entries))));
    g.bench_function("decode_and_assemble", |b| b.iter(|| decode(black_box(&stream))));
    g.finish();
}

fn chunk_benches(c: &mut Criterion) {
    let chunk = Message::Chunk(Chunk {
        session: 1,
        hash: [7; 32],
        raw_len: 1 << 20,
        compression: Compression::None,
        data: vec![0x5a; 1 << 20],
    });
    let frames: Vec<u8> = (0..64).flat_map(|_| chunk.encode_frame().unwrap()).collect();
    let mut g = c.benchmark_group("chunk_frames");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(frames.len() as u64));
    g.bench_function("decode_64x1MiB_in_64KiB_reads", |b| {
        b.iter(|| {
            let mut d = hamirror_wire::FrameDecoder::new();
            let mut total = 0;
            for piece in frames.chunks(64 << 10) {
                d.push(piece);
                while let Some(f) = d.pop().unwrap() {
                    total += hamirror_wire::ChunkView::decode(&f.payload).unwrap().data.len();
                }
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, listing_benches, chunk_benches);
criterion_main!(benches);
