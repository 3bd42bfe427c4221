//! `hamirror resync --from PEER` through the real binary: serv1 holds the
//! Fsmbd group (its owner, epoch 1) and runs `hamirror serve`; serv2, the
//! replica, lost or changed data and pulls it back. After each step the
//! trees are compared in full and by rsync. Also: a push from the holder to
//! a node with changes of its own is refused (Diverged) and loses nothing.

mod common;

use std::fs;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::pair::Pair;
use common::stderr;

const ROOTS: &[&str] = &["srv/samba", "etc/samba", "var/lib/samba"];
const MARK: &str = ".hamirror-conflict-serv2-";

/// Deterministic incompressible bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn write(p: &Path, data: &[u8]) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

/// Past the scanner's racy window, so the next scans trust fingerprints.
fn settle() {
    std::thread::sleep(Duration::from_millis(150));
}

/// serv1's tree: a few kinds of entries and some bulk.
fn populate(p: &Pair, big: usize) {
    let s = |r: &str| p.src(r);
    write(&s("srv/samba/small.txt"), b"hello\n");
    write(&s("srv/samba/big.bin"), &noise(1, big));
    write(&s("srv/samba/deep/a/b/c.txt"), b"deep");
    fs::create_dir_all(s("srv/samba/empty")).unwrap();
    std::os::unix::fs::symlink("small.txt", s("srv/samba/link")).unwrap();
    write(&s("srv/samba/notes.txt"), b"the holder's notes\n");
    write(&s("srv/samba/gone-there.txt"), b"serv1 will delete this\n");
    write(&s("etc/samba/smb.conf"), b"[global]\n");
    write(&s("var/lib/samba/passdb.tdb"), &noise(2, 100_000));
    settle();
}

/// The two nodes, mirrored once (serv1 → serv2), with serv1's receiver
/// running too so serv2 can pull from it.
struct Setup {
    p: Pair,
    serve1: Option<Child>,
}

impl Setup {
    fn new(big: usize) -> Setup {
        let mut p = Pair::new();
        populate(&p, big);
        p.start_serve();
        p.sync_ok("Fsmbd");
        p.assert_mirrored(ROOTS);
        let mut s = Setup { p, serve1: None };
        s.start_serve1();
        s
    }

    fn start_serve1(&mut self) {
        let log = fs::File::create(self.p.cfg.tmp.path().join("serve1.log")).unwrap();
        let child = self
            .p
            .cmd("serv1", &["serve"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.serve1 = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while UdpSocket::bind(("127.0.0.1", self.p.ports[0])).is_ok() {
            assert!(Instant::now() < deadline, "serv1's serve did not bind");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn serve1_log(&self) -> String {
        fs::read_to_string(self.p.cfg.tmp.path().join("serve1.log")).unwrap_or_default()
    }

    /// `resync --from serv1 Fsmbd --json` on serv2.
    fn resync(&self, extra: &[&str]) -> (serde_json::Value, i32, String) {
        let mut args = vec!["resync", "--from", "serv1", "Fsmbd", "--json"];
        args.extend_from_slice(extra);
        let out = self.p.run("serv2", &args);
        let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (json, out.status.code().unwrap_or(-1), stderr(&out))
    }

    fn resync_ok(&self, extra: &[&str]) -> serde_json::Value {
        let (v, code, err) = self.resync(extra);
        assert_eq!(code, 0, "resync failed: {err}\nserv1 log:\n{}", self.serve1_log());
        v
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(mut c) = self.serve1.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The conflict copies under a root, as relative paths.
fn conflict_copies(root: &Path) -> Vec<String> {
    let mut out = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p.clone());
            }
            if e.file_name().to_string_lossy().contains(".hamirror-conflict-") {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn set0(v: &serde_json::Value) -> &serde_json::Value {
    &v["sets"][0]
}

#[test]
fn a_damaged_replica_is_restored_exactly_with_discard_mine() {
    let s = Setup::new(3 << 20);
    let d = |r: &str| s.p.dst(r);
    fs::remove_file(d("srv/samba/small.txt")).unwrap();
    fs::remove_dir_all(d("srv/samba/deep")).unwrap();
    let mut big = fs::read(d("srv/samba/big.bin")).unwrap();
    big.truncate(1 << 20);
    big[1000] ^= 0xff;
    fs::write(d("srv/samba/big.bin"), &big).unwrap();
    write(&d("srv/samba/stray.txt"), b"not on the holder");
    fs::remove_file(d("etc/samba/smb.conf")).unwrap();
    settle();

    let v = s.resync_ok(&["--discard-mine"]);
    let r = set0(&v);
    assert_eq!(r["outcome"], "full", "{v}");
    assert_eq!(r["complete"], true, "{v}");
    assert_eq!(v["conflicts"], 0, "{v}");
    s.p.assert_mirrored(ROOTS);
    assert!(conflict_copies(&s.p.r2()).is_empty());
    // The truncated file was rebuilt from the 1 MiB this node still held:
    // far less than the file came over.
    assert!(
        r["bytes_received"].as_u64().unwrap() < 2_300_000,
        "received {} of a 3 MiB file",
        r["bytes_received"]
    );
}

#[test]
fn a_resync_with_nothing_to_do_is_one_round_trip() {
    let s = Setup::new(1 << 20);
    // The first resync records the holder's position; the second finds it.
    s.resync_ok(&[]);
    let v = s.resync_ok(&[]);
    assert_eq!(set0(&v)["outcome"], "unchanged", "{v}");
    assert_eq!(set0(&v)["complete"], true, "{v}");
    // Hello, HelloOk, Goodbye: no entry offered, no chunk.
    assert_eq!(set0(&v)["offered"], 0, "{v}");
    assert_eq!(set0(&v)["chunks_received"], 0, "{v}");
    assert!(s.serve1_log().contains("Fsmbd"), "{}", s.serve1_log());
    s.p.assert_mirrored(ROOTS);
}
