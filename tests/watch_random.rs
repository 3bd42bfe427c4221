//! The replica's fidelity under a seeded random workload while `hamirror
//! watch` ships every change: two real processes on 127.0.0.1 (serv1
//! watching Fsmbd, serv2 serving), then creates, writes, appends,
//! truncates, renames of files and directories, hard links (also across
//! directories), symlinks, type changes (file↔dir, symlink↔dir), chmod and
//! deletes of files and whole trees, for `HAMIRROR_RANDOM_SECS` (default
//! 60) seconds. When the watcher has caught up, rsync's checksum dry run
//! with hard links, ACLs and xattrs must itemize nothing (that includes
//! directory mtimes, `.d..t...`), and no temp file may be left on the
//! replica. The seed is `HAMIRROR_SEED` (or a fixed default) and is printed
//! on failure, so a failing run can be replayed;
//! `HAMIRROR_RANDOM_TYPE_CHANGES=0` leaves the type changes out.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::noise;
use common::pair::Pair;

struct Watch(Child);

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// xorshift64: the workload is the same for a seed on every run (what the
/// filesystem and the watcher make of it in time is not).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const DEFAULT_SEED: u64 = 0x5EED_0015;

/// Temp files of the receiver left under `dir`.
fn temps(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().ends_with(".hamirror-tmp") {
                found.push(p.clone());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    found
}

/// Removes whatever is at `p` (file, symlink or tree).
fn remove(p: &Path) {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            let _ = fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = fs::remove_file(p);
        }
        Err(_) => {}
    }
}

/// One random operation on the tree under `w`: two levels of directories
/// (`d0..d5/e0..e3`) with files `f0..f19` in them, chosen so that
/// operations collide often (the same names are renamed onto, linked to,
/// replaced by a directory…). Errors (a path that is not there, or not of
/// the expected type) are part of the game and ignored.
fn step(w: &Path, r: &mut Rng, n: u64, type_changes: bool) {
    let dir = |r: &mut Rng| w.join(format!("d{}", r.below(6))).join(format!("e{}", r.below(4)));
    let file = |r: &mut Rng| {
        let d = dir(r);
        d.join(format!("f{}", r.below(20)))
    };
    let data = |r: &mut Rng, n: u64| {
        // Mostly small; sometimes several chunks.
        let len = if r.below(10) == 0 {
            r.below(600_000)
        } else {
            r.below(20_000)
        };
        noise(n, len as usize)
    };
    let mut op = r.below(100);
    if !type_changes && (59..=68).contains(&op) {
        op = 0;
    }
    match op {
        // create or overwrite
        0..=21 => {
            let f = file(r);
            let _ = fs::create_dir_all(f.parent().unwrap());
            let _ = fs::write(&f, data(r, n));
        }
        // append
        22..=29 => {
            if let Ok(mut h) = fs::OpenOptions::new().append(true).open(file(r)) {
                let _ = h.write_all(&noise(n, r.below(5000) as usize));
            }
        }
        // truncate
        30..=33 => {
            if let Ok(h) = fs::OpenOptions::new().write(true).open(file(r)) {
                let len = h.metadata().map(|m| m.len()).unwrap_or(0);
                let _ = h.set_len(len / 2);
            }
        }
        // rename a file, within or across directories
        34..=41 => {
            let (a, b) = (file(r), file(r));
            let _ = fs::create_dir_all(b.parent().unwrap());
            let _ = fs::rename(a, b);
        }
        // rename a directory (onto a free name, or an empty directory)
        42..=46 => {
            let (a, b) = (dir(r), dir(r));
            if !b.starts_with(&a) {
                let _ = fs::create_dir_all(b.parent().unwrap());
                let _ = fs::rename(a, b);
            }
        }
        // hard link, also across directories
        47..=53 => {
            let (a, b) = (file(r), file(r));
            if fs::symlink_metadata(&a).is_ok_and(|m| m.is_file()) {
                let _ = fs::create_dir_all(b.parent().unwrap());
                remove(&b);
                let _ = fs::hard_link(a, b);
            }
        }
        // symlink (relative, dangling or not)
        54..=58 => {
            let b = file(r);
            let target = format!("../e{}/f{}", r.below(4), r.below(20));
            let _ = fs::create_dir_all(b.parent().unwrap());
            remove(&b);
            let _ = std::os::unix::fs::symlink(target, b);
        }
        // file or symlink -> directory with a child
        59..=63 => {
            let f = file(r);
            if fs::symlink_metadata(&f).is_ok_and(|m| !m.is_dir()) {
                remove(&f);
                let _ = fs::create_dir(&f);
                let _ = fs::write(f.join("child"), noise(n, 100));
            }
        }
        // directory -> file
        64..=66 => {
            let d = dir(r);
            if fs::symlink_metadata(&d).is_ok_and(|m| m.is_dir()) {
                remove(&d);
                let _ = fs::write(&d, data(r, n));
            }
        }
        // directory -> symlink
        67..=68 => {
            let d = dir(r);
            if fs::symlink_metadata(&d).is_ok_and(|m| m.is_dir()) {
                remove(&d);
                let _ = std::os::unix::fs::symlink(format!("e{}", r.below(4)), &d);
            }
        }
        // chmod a file or a directory (directories stay writable by us)
        69..=77 => {
            if r.below(3) == 0 {
                let modes = [0o700, 0o755, 0o750, 0o711];
                let d = dir(r);
                if fs::symlink_metadata(&d).is_ok_and(|m| m.is_dir()) {
                    let _ = fs::set_permissions(&d, fs::Permissions::from_mode(modes[r.below(4) as usize]));
                }
            } else {
                let modes = [0o600, 0o644, 0o640, 0o755, 0o400];
                let f = file(r);
                if fs::symlink_metadata(&f).is_ok_and(|m| m.is_file()) {
                    let _ = fs::set_permissions(&f, fs::Permissions::from_mode(modes[r.below(5) as usize]));
                }
            }
        }
        // delete a file or symlink
        78..=91 => {
            let f = file(r);
            if fs::symlink_metadata(&f).is_ok_and(|m| !m.is_dir()) {
                let _ = fs::remove_file(f);
            }
        }
        // delete a whole directory
        _ => {
            if r.below(2) == 0 {
                remove(&dir(r));
            } else {
                remove(&w.join(format!("d{}", r.below(6))));
            }
        }
    }
}

#[test]
fn a_seeded_random_workload_under_watch_ends_identical_by_rsync() {
    let seed: u64 = std::env::var("HAMIRROR_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let secs: u64 = std::env::var("HAMIRROR_RANDOM_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    // `HAMIRROR_RANDOM_TYPE_CHANGES=0` leaves out replacing a file or a
    // symlink by a directory and back (to look past a failure there).
    let type_changes = std::env::var("HAMIRROR_RANDOM_TYPE_CHANGES").map_or(true, |v| v != "0");
    let mut p = Pair::new();
    // The workload deletes whole trees at random: that is what the guard is
    // there to question, and not what this test is about.
    for n in ["serv1", "serv2"] {
        p.cfg.append(&format!("{n}.conf"), "delete_limit = 100%\n");
    }
    for f in ["srv/samba/w/.keep", "etc/samba/smb.conf", "var/lib/samba/db"] {
        common::write(&p.src(f), b"seed");
    }
    p.start_serve();
    let log = fs::File::create(p.cfg.tmp.path().join("watch.log")).unwrap();
    let w = Watch(
        p.cmd("serv1", &["watch", "Fsmbd"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let (src, dst) = (p.src("srv/samba"), p.dst("srv/samba"));
    let w = std::cell::RefCell::new(w);
    // Until the replica matches, the watch ended (a set it could not ship:
    // no point waiting), or `within` passed.
    let settled = |within: Duration| -> (String, Vec<PathBuf>) {
        let deadline = Instant::now() + within;
        loop {
            let (diff, left) = (common::pair::rsync_differences(&src, &dst), temps(&dst));
            let ended = w.borrow_mut().0.try_wait().ok().flatten();
            if (diff.is_empty() && left.is_empty()) || Instant::now() > deadline || ended.is_some() {
                if let Some(status) = ended {
                    eprintln!("the watch ended: {status}");
                }
                return (diff, left);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let (diff, _) = settled(Duration::from_secs(20));
    assert!(diff.is_empty(), "the first copy did not arrive:\n{diff}");

    let mut r = Rng::new(seed);
    let w = p.src("srv/samba/w");
    let t0 = Instant::now();
    let mut ops = 0u64;
    while t0.elapsed() < Duration::from_secs(secs) {
        step(&w, &mut r, seed ^ ops, type_changes);
        ops += 1;
        // A pace a busy file server might have, and time for the watcher
        // to ship in between (so the replica sees many intermediate states).
        if ops.is_multiple_of(4) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let t = Instant::now();
    let (diff, left) = settled(Duration::from_secs(45));
    if diff.is_empty() && left.is_empty() {
        eprintln!(
            "seed {seed}: {ops} operations in {secs} s; identical {:?} after",
            t.elapsed()
        );
        return;
    }
    let logs: String = ["watch.log", "serve.log"]
        .iter()
        .map(|f| {
            let text = fs::read_to_string(p.cfg.tmp.path().join(f)).unwrap_or_default();
            let bad: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.starts_with("hamirror:"))
                .take(40)
                .collect();
            format!("--- {f} (warnings and errors, first 40):\n{}\n", bad.join("\n"))
        })
        .collect();
    panic!(
        "seed {seed} (HAMIRROR_SEED={seed} to replay), {ops} operations in {secs} s: the replica differs \
         {:?} after the workload ended.\nrsync -anc -HAX --numeric-ids --delete -i:\n{diff}\ntemp files left \
         on the replica: {left:?}\n{logs}",
        t.elapsed()
    );
}
