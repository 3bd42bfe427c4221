//! See `hamirror_wire::fuzzing::stream`: the body lives in the wire crate so
//! `cargo test` runs every seed through it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hamirror_wire::fuzzing::stream(data));
