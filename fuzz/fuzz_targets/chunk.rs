//! Fuzzes what a receiver does with chunk data: decode a `Chunk` or
//! `ChunkDelta` payload, decompress (bounded by the declared length) and
//! rebuild a delta against a base (see `hamirror::fuzzing::chunk`;
//! `cargo test` runs the seeds).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hamirror::fuzzing::chunk(data);
});
