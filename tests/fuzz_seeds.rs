//! The `chunk` fuzz target's seeds — real `Chunk` and `ChunkDelta` frames
//! as a sender makes them (`hamirror::fuzzing::chunk_seeds`) — are the
//! committed files, and each runs through the target's body, so a normal
//! `cargo test` exercises it. `HAMIRROR_WRITE_SEEDS=1` rewrites them. (The
//! wire crate's targets are checked in `wire/tests/fuzz_seeds.rs`.)

use std::path::Path;

#[test]
fn chunk_seeds_are_real_frames_and_pass_the_target() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/chunk");
    for (name, bytes) in hamirror::fuzzing::chunk_seeds() {
        let p = dir.join(name);
        if std::env::var_os("HAMIRROR_WRITE_SEEDS").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&p, &bytes).unwrap();
        }
        let on_disk = std::fs::read(&p).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with HAMIRROR_WRITE_SEEDS=1 to write the seeds)",
                p.display()
            )
        });
        assert!(
            on_disk == bytes,
            "{} is stale: run with HAMIRROR_WRITE_SEEDS=1",
            p.display()
        );
    }
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        assert!(
            hamirror::fuzzing::chunk(&std::fs::read(&p).unwrap()),
            "{} rebuilds its chunk",
            p.display()
        );
        n += 1;
    }
    assert!(n >= 5);
}
