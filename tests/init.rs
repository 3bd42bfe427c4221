//! `hamirror init` through the real binary: creates the key file (mode
//! 0600, parent directories made), prints a fingerprint that `init --show`
//! repeats, refuses to replace a key without --force, and tells whether the
//! node's NODE.conf carries the fingerprint.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{TempConfig, stderr, stdout};

/// The example config with serv1's key under the temp dir.
fn config() -> TempConfig {
    let c = TempConfig::example();
    c.append("serv1.conf", "key = state/serv1/identity.pem\n");
    c
}

/// The `sha256:...` value of the `fingerprint = ...` line `init` prints.
fn printed_fingerprint(out: &str) -> String {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint = "))
        .unwrap_or_else(|| panic!("no `fingerprint = ` line in:\n{out}"));
    assert!(hamirror::config::is_fingerprint(line), "{line}");
    line.to_string()
}

#[test]
fn init_creates_a_private_key_file_and_show_prints_the_same_fingerprint() {
    let c = config();
    let key = c.path("state/serv1/identity.pem");
    let out = c.run(&["--node", "serv1", "init"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let fp = printed_fingerprint(&stdout(&out));
    assert!(
        stdout(&out).contains(&format!("created {}", key.display())),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("serv1.conf"), "{}", stdout(&out));

    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    let pem = std::fs::read_to_string(&key).unwrap();
    assert!(pem.contains("-----BEGIN PRIVATE KEY-----") && pem.contains("-----BEGIN CERTIFICATE-----"));
    // The fingerprint is that of the key in the file.
    let id = hamirror::transport::Identity::load(&key).unwrap();
    assert_eq!(id.fingerprint().to_string(), fp);

    let show = c.run(&["--node", "serv1", "init", "--show"]);
    assert_eq!(show.status.code(), Some(0), "{}", stderr(&show));
    assert_eq!(stdout(&show).trim(), fp);
    // The example's serv1.conf pins a made-up fingerprint: --show says so.
    assert!(stderr(&show).contains("which is not this key"), "{}", stderr(&show));
    assert!(
        stderr(&show).contains(&format!("fingerprint = {fp}")),
        "{}",
        stderr(&show)
    );

    // Pasting the printed line makes the config agree and stay valid.
    c.set("serv1.conf", "fingerprint", &format!("fingerprint = {fp}"));
    let show = c.run(&["--node", "serv1", "init", "--show"]);
    assert!(stderr(&show).contains("has this fingerprint"), "{}", stderr(&show));
    assert_eq!(c.run(&["check", "--quiet"]).status.code(), Some(0));
}

#[test]
fn init_refuses_to_replace_a_key_unless_forced() {
    let c = config();
    let key = c.path("state/serv1/identity.pem");
    let first = printed_fingerprint(&stdout(&c.run(&["--node", "serv1", "init"])));
    let before = std::fs::read(&key).unwrap();

    let again = c.run(&["--node", "serv1", "init"]);
    assert_eq!(again.status.code(), Some(2));
    let err = stderr(&again);
    assert!(err.contains("refusing to replace"), "{err}");
    assert!(err.contains(&first), "names the existing key: {err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&key).unwrap(), before, "the key is untouched");

    let forced = c.run(&["--node", "serv1", "init", "--force"]);
    assert_eq!(forced.status.code(), Some(0), "{}", stderr(&forced));
    let second = printed_fingerprint(&stdout(&forced));
    assert_ne!(first, second);
    assert_eq!(stdout(&c.run(&["--node", "serv1", "init", "--show"])).trim(), second);
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    // Only the key file is in its directory: no temporary left behind.
    assert_eq!(std::fs::read_dir(key.parent().unwrap()).unwrap().count(), 1);
}

#[test]
fn show_without_a_key_says_to_run_init() {
    let c = config();
    let out = c.run(&["--node", "serv1", "init", "--show"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("run `hamirror init`"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
}
