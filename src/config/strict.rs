//! Who may change what root runs, checked like sshd's `StrictModes`: the
//! configuration directory, every file in it that `hamirror run` reads or
//! executes (NODE.conf, reachlist, F sets, S/K/N hooks) and the heartbeat
//! key files must be owned by root (or by the user running hamirror) and
//! not writable by group or others; a key file must not be readable by
//! everyone (group-readable is a warning) and must not hold the example key
//! published with hamirror. `check` and `run` apply it after loading; other
//! commands do not (they run nothing as root on the configuration's word).
//!
//! Reads metadata and the key files only; knows nothing of the daemon.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{Cluster, ConfigError};

/// Heartbeat keys published with hamirror (the example `authkeys`): anyone
/// can forge heartbeats signed with them.
pub const PUBLISHED_KEYS: &[&str] = &["3b1f0e2d4c5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"];

/// What the checks found: errors refuse the configuration, warnings do not.
#[derive(Debug, Default)]
pub struct Findings {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Owner and write permission of one path (symbolic links followed: what
/// counts is what gets read or run).
fn owner_and_mode(path: &Path, what: &str, out: &mut Findings) -> Option<std::fs::Metadata> {
    let m = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            out.errors.push(ConfigError::file(
                path,
                format!("cannot read the {what}'s metadata: {e}"),
            ));
            return None;
        }
    };
    let me = euid();
    if m.uid() != 0 && m.uid() != me {
        let who = if me == 0 {
            "root".to_string()
        } else {
            format!("root or uid {me} (the user running hamirror)")
        };
        out.errors.push(ConfigError::file(
            path,
            format!(
                "{what} is owned by uid {}, not by {who}: its owner could make root run anything; run: chown root {}",
                m.uid(),
                path.display()
            ),
        ));
    }
    if m.mode() & 0o022 != 0 {
        out.errors.push(ConfigError::file(
            path,
            format!(
                "{what} is writable by {} (mode {:o}): whoever can write it controls what root runs; run: chmod go-w {}",
                match (m.mode() & 0o020 != 0, m.mode() & 0o002 != 0) {
                    (true, true) => "group and others",
                    (true, false) => "its group",
                    _ => "others",
                },
                m.mode() & 0o7777,
                path.display()
            ),
        ));
    }
    Some(m)
}

/// A heartbeat key file: present, private, and not a published key.
fn key_file(path: &Path, out: &mut Findings) {
    let Some(m) = owner_and_mode(path, "heartbeat key file", out) else {
        return;
    };
    let mode = m.mode() & 0o7777;
    if mode & 0o004 != 0 {
        out.errors.push(ConfigError::file(
            path,
            format!(
                "heartbeat key file is readable by everyone (mode {mode:o}): anyone on this machine can forge \
                 heartbeats; run: chmod 600 {}",
                path.display()
            ),
        ));
    } else if mode & 0o040 != 0 {
        out.warnings.push(ConfigError::file(
            path,
            format!(
                "heartbeat key file is readable by its group (mode {mode:o}); run: chmod 600 {}",
                path.display()
            ),
        ));
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            out.errors.push(ConfigError::file(
                path,
                format!("cannot read the heartbeat key file: {e}"),
            ));
            return;
        }
    };
    if let Err(e) = hamirror_wire::heartbeat::HeartbeatKeys::parse(&text) {
        out.errors.push(ConfigError::file(path, e.to_string()));
        return;
    }
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim().to_ascii_lowercase();
        if PUBLISHED_KEYS.contains(&line.as_str()) {
            out.errors.push(ConfigError::at(
                path,
                i + 1,
                format!(
                    "this is the example key published with hamirror: anyone can forge heartbeats with it; \
                     generate your own (the same file on both nodes): head -c 32 /dev/urandom | od -An -tx1 | \
                     tr -d ' \\n' > {}",
                    path.display()
                ),
            ));
        }
    }
}

/// Checks the files of a loaded cluster. Missing optional files (a node
/// directory without hooks) are not problems here; the loader reports
/// what is required.
pub fn check(cluster: &Cluster) -> Findings {
    let mut out = Findings::default();
    owner_and_mode(&cluster.dir, "configuration directory", &mut out);
    let mut files: Vec<(PathBuf, &str)> = vec![];
    let reachlist = cluster.dir.join("reachlist");
    if reachlist.exists() {
        files.push((reachlist, "reachlist"));
    }
    let mut keys: Vec<PathBuf> = vec![];
    for n in &cluster.nodes {
        files.push((n.conf_file.clone(), "node configuration"));
        let dir = cluster.dir.join(&n.name);
        if dir.is_dir() {
            files.push((dir, "group directory"));
        }
        for s in &n.group.sets {
            files.push((s.file.clone(), "set file"));
        }
        for h in n.group.start.iter().chain(&n.group.stop).chain(&n.group.notify) {
            files.push((h.path.clone(), "hook"));
        }
        match &n.conf.heartbeat_key {
            Some(k) if !keys.contains(k) => keys.push(k.clone()),
            Some(_) => {}
            None => out.errors.push(ConfigError::file(
                &n.conf_file,
                "no `heartbeat_key`: heartbeats must be authenticated; add `heartbeat_key = authkeys` and create \
                 the file (see docs/CONFIG.md)"
                    .into(),
            )),
        }
    }
    for (f, what) in files {
        owner_and_mode(&f, what, &mut out);
    }
    for k in keys {
        key_file(&k, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn msgs(v: &[ConfigError]) -> String {
        v.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn key_files_must_be_private_and_not_published() {
        let d = tempfile::tempdir().unwrap();
        let k = d.path().join("authkeys");
        std::fs::write(
            &k,
            "# mine\n00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
        )
        .unwrap();
        chmod(&k, 0o600);
        let mut f = Findings::default();
        key_file(&k, &mut f);
        assert!(f.errors.is_empty() && f.warnings.is_empty(), "{}", msgs(&f.errors));

        chmod(&k, 0o640);
        let mut f = Findings::default();
        key_file(&k, &mut f);
        assert!(f.errors.is_empty());
        assert!(msgs(&f.warnings).contains("chmod 600"));

        chmod(&k, 0o644);
        let mut f = Findings::default();
        key_file(&k, &mut f);
        assert!(msgs(&f.errors).contains("readable by everyone"), "{}", msgs(&f.errors));

        chmod(&k, 0o620);
        let mut f = Findings::default();
        key_file(&k, &mut f);
        assert!(msgs(&f.errors).contains("chmod go-w"), "{}", msgs(&f.errors));

        std::fs::write(&k, format!("# example\n{}\n", PUBLISHED_KEYS[0].to_uppercase())).unwrap();
        chmod(&k, 0o600);
        let mut f = Findings::default();
        key_file(&k, &mut f);
        assert_eq!(f.errors.len(), 1);
        assert_eq!(f.errors[0].line, Some(2));
        assert!(f.errors[0].msg.contains("published"));
    }

    #[test]
    fn the_shipped_example_key_is_the_published_one() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/examples/cluster.d/authkeys")).unwrap();
        assert!(
            text.lines().any(|l| PUBLISHED_KEYS.contains(&l.trim())),
            "update PUBLISHED_KEYS when the example key changes"
        );
    }
}
