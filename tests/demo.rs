//! `hamirror demo` — the README's first command — runs end to end: two real
//! daemons, mirroring, a takeover after a kill, resync and failback; its
//! summary says the two copies are identical; it leaves nothing behind.

use std::process::Command;

#[test]
fn the_demo_mirrors_fails_over_resyncs_fails_back_and_ends_with_identical_trees() {
    let before: Vec<_> = leftovers();
    let out = Command::new(env!("CARGO_BIN_EXE_hamirror"))
        .arg("demo")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "serv1 holds serv1, serv2 holds serv2",
        "all on serv2",
        "serv2 took group serv1 over",
        "serv1 has serv2's changes",
        "serv1 holds group serv1 again",
        "Fdocs on serv1 and serv2: identical",
        "Fweb on serv2 and serv1: identical",
        "trees identical",
    ] {
        assert!(text.contains(step), "missing {step:?} in:\n{text}");
    }
    // The takeover ran serv1's start hooks on serv2, the failback its stop
    // hooks there and its start hooks on serv1 again.
    assert!(text.contains("serv2: start group serv1 (epoch 2)"), "{text}");
    assert!(text.contains("serv2: stop group serv1 (epoch 2)"), "{text}");
    assert!(text.contains("serv1: start group serv1 (epoch 3)"), "{text}");
    let after = leftovers();
    assert!(after.iter().all(|d| before.contains(d)), "the demo left {after:?}");
}

fn leftovers() -> Vec<std::path::PathBuf> {
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("hamirror-demo-"))
        })
        .collect()
}
