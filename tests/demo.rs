//! `hamirror demo` — the README's first command — runs end to end and its
//! summary says the two copies are identical; it leaves nothing behind.

use std::process::Command;

#[test]
fn the_demo_mirrors_changes_and_ends_with_identical_trees() {
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
    assert!(text.contains("nothing sent"), "{text}");
    assert!(text.contains("trees identical"), "{text}");
    assert!(text.contains("delta pass"), "{text}");
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
