//! Shared helpers for the integration tests: a temporary copy of the example
//! `cluster.d` and a way to run the real binary against it. Each test file
//! includes this module with `mod common;`. Network-namespace helpers are
//! in [`netns`], the two-node cluster lab in [`lab`], the three-node
//! Corosync + Pacemaker lab in [`pacemaker`].
#![allow(dead_code)]

pub mod daemons;
pub mod lab;
pub mod netns;
pub mod node;
pub mod observe;
pub mod pacemaker;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The example configuration shipped in `docs/examples/cluster.d`.
pub fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples/cluster.d")
}

/// A temporary copy of the example configuration, removed on drop.
pub struct TempConfig {
    pub tmp: tempfile::TempDir,
}

impl TempConfig {
    /// The example with a heartbeat key of its own: `check` and `run`
    /// refuse the published one.
    pub fn example() -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        copy_tree(&example_dir(), &tmp.path().join("cluster.d"));
        let c = TempConfig { tmp };
        c.write("authkeys", &format!("{}\n", random_key()));
        std::fs::set_permissions(c.path("authkeys"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        c
    }

    pub fn dir(&self) -> PathBuf {
        self.tmp.path().join("cluster.d")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    pub fn append(&self, rel: &str, text: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(self.path(rel)).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    /// Replaces the line starting with `key` in `rel`.
    pub fn set(&self, rel: &str, key: &str, line: &str) {
        let text = std::fs::read_to_string(self.path(rel)).unwrap();
        let out: Vec<String> = text
            .lines()
            .map(|l| {
                if l.starts_with(key) {
                    line.to_string()
                } else {
                    l.to_string()
                }
            })
            .collect();
        std::fs::write(self.path(rel), out.join("\n") + "\n").unwrap();
    }

    /// `hamirror init` for node `n` (its identity in its `state`), and the
    /// fingerprint it prints pinned in `n.conf`.
    pub fn init_node(&self, n: &str) {
        let out = self.run(&["--node", n, "init"]);
        assert_eq!(out.status.code(), Some(0), "init {n}: {}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        let fp = text
            .split_whitespace()
            .find(|w| w.starts_with("sha256:"))
            .expect("a fingerprint")
            .to_string();
        self.append(&format!("{n}.conf"), &format!("fingerprint = {fp}\n"));
    }

    /// Runs the real binary with `--config` pointing at this copy.
    pub fn run(&self, args: &[&str]) -> Output {
        hamirror(&self.dir(), args)
    }
}

pub fn hamirror(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hamirror"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("HAMIRROR_NODE")
        .env_remove("HAMIRROR_CONFIG")
        .output()
        .expect("run hamirror")
}

/// 64 hex digits from /dev/urandom: a heartbeat key.
pub fn random_key() -> String {
    let mut key = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut key).unwrap();
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// Copies a tree; nothing in the copy is writable by group or others,
/// whatever the umask of the checkout (`check` and `run` refuse that).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
    for p in [to.to_path_buf()]
        .into_iter()
        .chain(std::fs::read_dir(to).unwrap().flatten().map(|e| e.path()))
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode & !0o022)).unwrap();
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub mod pair;

/// A small tmpfs mounted for a test (root only), unmounted when dropped.
pub struct SmallDisk(PathBuf);

impl SmallDisk {
    pub fn mount(at: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "hamirror-test",
                at.to_str().unwrap(),
            ])
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(at.to_path_buf()))
    }

    /// [`SmallDisk::mount`], or `None` (the test skips) when not root and
    /// `HAMIRROR_SKIP_ROOT_TESTS` is set; panics when not root otherwise.
    pub fn mount_or_skip(at: &Path, size: &str) -> Option<SmallDisk> {
        if let Some(d) = SmallDisk::mount(at, size) {
            return Some(d);
        }
        if std::env::var_os("HAMIRROR_SKIP_ROOT_TESTS").is_some() {
            eprintln!("skipped: mounting a tmpfs needs root (HAMIRROR_SKIP_ROOT_TESTS is set)");
            return None;
        }
        panic!("mounting a tmpfs needs root; run as root or set HAMIRROR_SKIP_ROOT_TESTS=1");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes a file, creating the directories it needs.
pub fn write(p: &Path, data: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// Deterministic incompressible bytes (the library's, shared with benches).
#[allow(unused_imports)]
pub use hamirror::noise::noise;

/// Polls `f` every 50 ms until it holds; past `timeout`, fails naming
/// `what` with the `logs` of the processes involved.
pub fn wait_for(what: &str, timeout: std::time::Duration, logs: impl Fn() -> String, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}\n{}",
            logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
