//! Every committed seed of the wire crate's fuzz targets runs through the
//! target's body (`hamirror_wire::fuzzing`), so a normal `cargo test`
//! exercises the targets that cargo-fuzz (nightly) runs for longer. The
//! heartbeat seeds are real sealed heartbeats: this test checks the
//! committed files are what `heartbeat_seeds()` makes, and writes them
//! when `HAMIRROR_WRITE_SEEDS=1`.

use std::path::{Path, PathBuf};

use hamirror_wire::fuzzing;

fn seeds_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds").join(target)
}

/// The seed files of a target, at least one.
fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = seeds_dir(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let data = std::fs::read(&p).unwrap();
            (p, data)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

/// Checks (or with `HAMIRROR_WRITE_SEEDS=1` writes) generated seeds.
fn committed(target: &str, made: Vec<(&str, Vec<u8>)>) {
    let dir = seeds_dir(target);
    for (name, bytes) in made {
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
}

#[test]
fn message_seeds_pass_the_message_target() {
    for (p, data) in seeds("message") {
        eprintln!("{}", p.display());
        fuzzing::message(&data);
    }
}

#[test]
fn stream_seeds_pass_the_stream_target() {
    for (_, data) in seeds("stream") {
        fuzzing::stream(&data);
    }
}

#[test]
fn heartbeat_seeds_are_real_heartbeats_and_pass_the_target() {
    committed("heartbeat", fuzzing::heartbeat_seeds());
    let keys = hamirror_wire::heartbeat::HeartbeatKeys::from_secrets(&[fuzzing::HEARTBEAT_SECRET]).unwrap();
    for (p, data) in seeds("heartbeat") {
        hamirror_wire::heartbeat::Heartbeat::open(&data, &keys).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        fuzzing::heartbeat(&data);
    }
}

#[test]
fn every_fuzz_target_has_seeds() {
    let targets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/fuzz_targets");
    for e in std::fs::read_dir(targets).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_str().unwrap().to_string();
        assert!(
            seeds_dir(&name).is_dir(),
            "fuzz target {name} has no fuzz/seeds/{name}/"
        );
    }
}
