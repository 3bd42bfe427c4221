//! Fuzzes the heartbeat decoder, before and behind the MAC (see
//! `hamirror_wire::fuzzing::heartbeat`; `cargo test` runs the seeds).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hamirror_wire::fuzzing::heartbeat(data));
