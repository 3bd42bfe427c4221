//! Mirroring through the real binary: serv2 runs `hamirror serve`, serv1
//! runs `hamirror sync`, both on 127.0.0.1 with their own roots. After each
//! step the trees are compared in full (content, kind, mode, owner, mtime,
//! symlink targets, hard-link groups) and by rsync as an oracle.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::pair::Pair;
use common::{SmallDisk, noise, write};

const ROOTS: &[&str] = &["srv/samba", "etc/samba", "var/lib/samba"];

fn set_mtime(p: &Path, secs: u64) {
    let f = fs::File::options().write(true).open(p).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + Duration::new(secs, 123_456_789))
        .unwrap();
}

/// A tree with every kind of entry the mirror must carry.
fn populate(p: &Pair) {
    let s = |r: &str| p.src(r);
    write(&s("srv/samba/small.txt"), b"hello\n");
    write(&s("srv/samba/big.bin"), &noise(1, 3 << 20));
    write(&s("srv/samba/deep/a/b/c.txt"), b"deep");
    fs::create_dir_all(s("srv/samba/empty")).unwrap();
    write(&s("srv/samba/with space.txt"), b"space");
    write(&s("srv/samba/new\nline"), b"newline");
    write(
        &s("srv/samba").join(OsStr::from_bytes(b"latin1-\xe9t\xe9")),
        b"not utf-8",
    );
    std::os::unix::fs::symlink("small.txt", s("srv/samba/link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", s("srv/samba/dangling")).unwrap();
    fs::hard_link(s("srv/samba/small.txt"), s("srv/samba/deep/hard")).unwrap();
    write(&s("srv/samba/secret"), b"600");
    fs::set_permissions(s("srv/samba/secret"), fs::Permissions::from_mode(0o600)).unwrap();
    write(&s("srv/samba/owned"), b"owner");
    std::os::unix::fs::chown(s("srv/samba/owned"), Some(1234), Some(5678)).unwrap();
    set_mtime(&s("srv/samba/owned"), 1_000_000_000);
    write(&s("etc/samba/smb.conf"), b"[global]\n");
    write(&s("var/lib/samba/passdb.tdb"), &noise(2, 100_000));
    // Past the scanner's racy window, so the next scans trust the fingerprints.
    std::thread::sleep(Duration::from_millis(150));
}

fn field(v: &serde_json::Value, key: &str) -> u64 {
    v["push"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no push.{key} in {v}"))
}

#[test]
fn initial_mirror_then_a_no_change_pass_is_one_round_trip() {
    let mut p = Pair::new();
    populate(&p);
    p.start_serve();
    let v = p.sync_ok("Fsmbd");
    assert_eq!(v["push"]["outcome"], "full", "{v}");
    p.assert_mirrored(ROOTS);
    let again = p.sync_ok("Fsmbd");
    assert_eq!(again["push"]["outcome"], "unchanged", "{again}");
    assert_eq!(field(&again, "chunks_sent"), 0);
    assert_eq!(again["scan"]["files_read"], 0, "the quick check read nothing");
    let out = p.run("serv1", &["verify", "Fsmbd"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("identical"));
}

#[test]
fn every_kind_of_change_reaches_the_replica_exactly() {
    let mut p = Pair::new();
    populate(&p);
    write(&p.src("srv/samba/large.bin"), &noise(3, 20 << 20));
    p.start_serve();
    p.sync_ok("Fsmbd");
    p.assert_mirrored(ROOTS);
    let s = |r: &str| p.src(r);

    // An insertion in the middle of a 20 MiB file sends a few chunks only.
    let mut data = fs::read(s("srv/samba/large.bin")).unwrap();
    data.splice(10 << 20..10 << 20, b"INSERTED".iter().copied());
    write(&s("srv/samba/large.bin"), &data);
    let v = p.sync_ok("Fsmbd");
    assert_eq!(v["push"]["outcome"], "delta", "{v}");
    assert!(field(&v, "chunks_sent") <= 3, "{v}");
    assert!(field(&v, "chunk_bytes") < 1 << 20, "{v}");
    p.assert_mirrored(ROOTS);

    // A rename costs no data.
    fs::rename(s("srv/samba/large.bin"), s("srv/samba/deep/moved.bin")).unwrap();
    let v = p.sync_ok("Fsmbd");
    assert_eq!(field(&v, "chunks_sent"), 0, "{v}");
    p.assert_mirrored(ROOTS);

    type Step<'a> = (&'static str, Box<dyn Fn() + 'a>);
    let steps: Vec<Step> = vec![
        ("edit", Box::new(|| write(&s("srv/samba/small.txt"), b"HELLO\n"))),
        (
            "append",
            Box::new(|| {
                use std::io::Write;
                fs::OpenOptions::new()
                    .append(true)
                    .open(s("srv/samba/big.bin"))
                    .unwrap()
                    .write_all(b"tail")
                    .unwrap()
            }),
        ),
        (
            "truncate",
            Box::new(|| {
                fs::File::options()
                    .write(true)
                    .open(s("srv/samba/big.bin"))
                    .unwrap()
                    .set_len(1000)
                    .unwrap()
            }),
        ),
        (
            "delete",
            Box::new(|| fs::remove_file(s("srv/samba/with space.txt")).unwrap()),
        ),
        (
            "chmod",
            Box::new(|| fs::set_permissions(s("srv/samba/secret"), fs::Permissions::from_mode(0o4750)).unwrap()),
        ),
        (
            "chown",
            Box::new(|| std::os::unix::fs::chown(s("srv/samba/secret"), Some(42), Some(43)).unwrap()),
        ),
        ("touch", Box::new(|| set_mtime(&s("etc/samba/smb.conf"), 1_500_000_000))),
        (
            "retarget symlink",
            Box::new(|| {
                fs::remove_file(s("srv/samba/link")).unwrap();
                std::os::unix::fs::symlink("deep/a/b/c.txt", s("srv/samba/link")).unwrap();
            }),
        ),
        (
            "new hard link",
            Box::new(|| fs::hard_link(s("srv/samba/big.bin"), s("srv/samba/big.again")).unwrap()),
        ),
        (
            "drop hard link",
            Box::new(|| fs::remove_file(s("srv/samba/deep/hard")).unwrap()),
        ),
        (
            "empty dirs",
            Box::new(|| {
                fs::remove_dir(s("srv/samba/empty")).unwrap();
                fs::create_dir_all(s("srv/samba/x/y/z")).unwrap();
            }),
        ),
        (
            "dir becomes file",
            Box::new(|| {
                fs::remove_dir_all(s("srv/samba/deep/a")).unwrap();
                write(&s("srv/samba/deep/a"), b"now a file");
            }),
        ),
        (
            "odd names",
            Box::new(|| {
                write(&s("srv/samba/x/tab\tand space"), b"t");
                write(&s("srv/samba/x").join(OsStr::from_bytes(b"\xff\xfe")), b"raw bytes");
            }),
        ),
    ];
    for (what, change) in steps {
        change();
        let (v, code, err) = p.sync("Fsmbd", &[]);
        assert_eq!(code, 0, "{what}: {err}\n{}", p.serve_log());
        assert_eq!(v["push"]["outcome"], "delta", "{what}: {v}");
        p.assert_mirrored(ROOTS);
    }
}

/// An offer of more files than a window (4 here, `HAMIRROR_APPLY_WINDOW`)
/// is planned, applied, installed and committed a window at a time, with
/// the same replica as in one piece whatever lies across windows: a hard
/// link applied after its target's window, content shared by the first
/// and the last window, a large file, directories made before any file.
/// The replica's index knows every window's files: a later pass sends
/// only what changed.
#[test]
fn an_offer_larger_than_a_window_is_applied_a_window_at_a_time() {
    let mut p = Pair::new();
    populate(&p);
    for i in 0..40 {
        let text = format!("file {i}\n").repeat(i + 1);
        write(&p.src(&format!("srv/samba/many/d{}/f{i}.txt", i % 5)), text.as_bytes());
    }
    let shared = noise(7, 300_000);
    write(&p.src("srv/samba/aaa-first.bin"), &shared);
    write(&p.src("srv/samba/zzz-last.bin"), &shared);
    write(&p.src("srv/samba/mid-large.bin"), &noise(8, 5 << 20));
    fs::hard_link(p.src("srv/samba/zzz-last.bin"), p.src("srv/samba/aaa-link")).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    p.start_serve_env(&[("HAMIRROR_APPLY_WINDOW", "4")]);
    let v = p.sync_ok("Fsmbd");
    assert_eq!(v["push"]["outcome"], "full", "{v}");
    p.assert_mirrored(ROOTS);
    let log = p.serve_log();
    assert!(log.contains("offer applied in windows of files"), "{log}");

    // One small edit in a late window, a file of the first window deleted,
    // a new hard link to a late file: only that travels.
    write(&p.src("srv/samba/many/d4/f39.txt"), b"changed\n");
    fs::remove_file(p.src("srv/samba/aaa-first.bin")).unwrap();
    fs::hard_link(p.src("srv/samba/many/d0/f0.txt"), p.src("srv/samba/zzz-hard")).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    let v = p.sync_ok("Fsmbd");
    assert_eq!(v["push"]["outcome"], "delta", "{v}");
    assert!(field(&v, "chunks_sent") <= 1, "{v}");
    p.assert_mirrored(ROOTS);
}

/// Overwrites `data.len()` bytes of `p` at `at`, in place.
fn overwrite(p: &Path, at: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .write_all_at(data, at)
        .unwrap();
}

#[test]
fn small_edits_inside_chunks_travel_as_deltas_far_smaller_than_the_chunks() {
    let mut p = Pair::new();
    populate(&p);
    write(&p.src("srv/samba/one-mib.bin"), &noise(20, 1 << 20));
    write(&p.src("srv/samba/letter.doc"), &noise(21, 12_000));
    write(&p.src("srv/samba/log.txt"), &noise(22, 30_000));
    p.start_serve();
    p.sync_ok("Fsmbd");
    p.assert_mirrored(ROOTS);
    let s = |r: &str| p.src(r);

    // (what, change, most framed bytes allowed, least raw chunk bytes behind them)
    type Step<'a> = (&'static str, Box<dyn Fn() + 'a>, u64, u64);
    let steps: Vec<Step> = vec![
        (
            "4 KiB overwrite inside a 1 MiB file",
            Box::new(|| overwrite(&s("srv/samba/one-mib.bin"), 600_000, &noise(23, 4096))),
            4096 + 4096,
            16 << 10,
        ),
        (
            "100 bytes changed in a small file",
            Box::new(|| overwrite(&s("srv/samba/letter.doc"), 7000, &noise(24, 100))),
            1024,
            12_000,
        ),
        (
            "1000 bytes appended",
            Box::new(|| {
                use std::io::Write;
                fs::OpenOptions::new()
                    .append(true)
                    .open(s("srv/samba/log.txt"))
                    .unwrap()
                    .write_all(&noise(25, 1000))
                    .unwrap()
            }),
            1000 + 1024,
            31_000,
        ),
        (
            "100 bytes inserted in the middle of a 3 MiB file",
            Box::new(|| {
                let mut data = fs::read(s("srv/samba/big.bin")).unwrap();
                data.splice(1_500_000..1_500_000, noise(26, 100));
                write(&s("srv/samba/big.bin"), &data);
            }),
            100 + 4096,
            16 << 10,
        ),
    ];
    for (what, change, most, least_raw) in steps {
        change();
        let v = p.sync_ok("Fsmbd");
        assert_eq!(v["push"]["outcome"], "delta", "{what}: {v}");
        let (framed, raw) = (field(&v, "chunk_frame_bytes"), field(&v, "chunk_bytes"));
        assert!(field(&v, "deltas_sent") >= 1, "{what}: {v}");
        assert_eq!(field(&v, "deltas_sent"), field(&v, "chunks_sent"), "{what}: {v}");
        assert!(framed <= most, "{what}: {framed} bytes framed (at most {most}): {v}");
        assert!(raw >= least_raw, "{what}: the chunks were {raw} bytes: {v}");
        p.assert_mirrored(ROOTS);
    }
    // Nothing changed on the replica's side: verify agrees byte for byte.
    let out = p.run("serv1", &["verify", "Fsmbd"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn dry_run_lists_changes_and_changes_nothing() {
    let mut p = Pair::new();
    populate(&p);
    p.start_serve();
    p.sync_ok("Fsmbd");
    write(&p.src("srv/samba/small.txt"), b"changed");
    fs::remove_file(p.src("srv/samba/secret")).unwrap();
    let out = p.run("serv1", &["sync", "Fsmbd", "--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // small.txt is the second name of deep/hard's inode: listed as a link.
    assert!(text.contains(">h /srv/samba/small.txt"), "{text}");
    assert!(text.contains(">f /srv/samba/deep/hard"), "{text}");
    assert!(text.contains("*deleting /srv/samba/secret"), "{text}");
    assert_eq!(fs::read(p.dst("srv/samba/small.txt")).unwrap(), b"hello\n");
    assert!(p.dst("srv/samba/secret").exists());
    // The real sync afterwards still does it all.
    p.sync_ok("Fsmbd");
    p.assert_mirrored(ROOTS);
}

#[test]
fn an_emptied_root_is_not_mirrored_as_a_mass_delete_unless_forced() {
    let mut p = Pair::new();
    populate(&p);
    p.start_serve();
    p.sync_ok("Fsmbd");
    // The disk holding /var/lib/samba "was not mounted".
    fs::remove_dir_all(p.src("var/lib/samba")).unwrap();
    fs::create_dir(p.src("var/lib/samba")).unwrap();
    let (_, code, err) = p.sync("Fsmbd", &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("/var/lib/samba is missing or empty on the sender"),
        "{err}"
    );
    assert!(err.contains("--force"), "{err}");
    assert!(p.dst("var/lib/samba/passdb.tdb").exists(), "nothing was deleted");
    // More than the delete limit (50%) of the replica is also refused.
    for e in fs::read_dir(p.src("srv/samba")).unwrap() {
        let e = e.unwrap().path();
        if e.ends_with("small.txt") {
            continue;
        }
        if e.is_dir() && !e.is_symlink() {
            fs::remove_dir_all(e).unwrap()
        } else {
            fs::remove_file(e).unwrap()
        }
    }
    write(&p.src("var/lib/samba/new"), b"x");
    let (_, code, err) = p.sync("Fsmbd", &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("more than its delete limit of 50%"), "{err}");
    let (_, code, err) = p.sync("Fsmbd", &["--force"]);
    assert_eq!(code, 0, "{err}");
    p.assert_mirrored(ROOTS);
}

#[test]
fn a_regenerated_key_is_refused_and_both_fingerprints_are_named() {
    let mut p = Pair::new();
    populate(&p);
    p.start_serve();
    let old = p.run("serv1", &["init", "--show"]);
    let old_fp = String::from_utf8_lossy(&old.stdout).trim().to_string();
    let out = p.run("serv1", &["init", "--force"]);
    assert_eq!(out.status.code(), Some(0));
    let new_fp = String::from_utf8_lossy(&p.run("serv1", &["init", "--show"]).stdout)
        .trim()
        .to_string();
    assert_ne!(old_fp, new_fp);
    let (_, code, err) = p.sync("Fsmbd", &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&new_fp) && err.contains(&old_fp),
        "both fingerprints named: {err}"
    );
    assert!(!p.dst("srv/samba/small.txt").exists());
}

/// Waits until the replica holds a temp file with at least `bytes` written.
fn wait_for_partial(dir: &Path, bytes: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            use std::os::unix::fs::MetadataExt;
            let name = e.file_name();
            if name.as_bytes().ends_with(b".hamirror-tmp")
                && e.metadata().map(|m| m.blocks() * 512 >= bytes).unwrap_or(false)
            {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

fn temp_files(root: &Path) -> Vec<String> {
    let mut out = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p.clone());
            }
            if e.file_name().as_bytes().ends_with(b".hamirror-tmp") {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

const BIG: usize = 160 << 20;

/// Kill -9 of one side in the middle of a large transfer: nothing partial
/// under a real name, the next run completes without sending again what
/// arrived, and leaves no temp file.
fn interrupted_transfer_resumes(kill_receiver: bool) {
    let mut p = Pair::new();
    write(&p.src("srv/samba/keep.txt"), b"already there");
    p.start_serve();
    p.sync_ok("Fsmbd");
    write(&p.src("srv/samba/huge.bin"), &noise(9, BIG));
    let mut sync = p
        .cmd("serv1", &["sync", "Fsmbd", "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let reached = wait_for_partial(&p.dst("srv/samba"), (BIG / 3) as u64);
    if kill_receiver {
        p.stop_serve();
    }
    let _ = sync.kill();
    let status = sync.wait().unwrap();
    assert!(reached, "the transfer never got a third of the way");
    assert!(!status.success(), "the sync was killed before it finished");
    assert!(
        !p.dst("srv/samba/huge.bin").exists(),
        "no partial file under the real name"
    );
    assert_eq!(fs::read(p.dst("srv/samba/keep.txt")).unwrap(), b"already there");
    p.start_serve();
    let v = p.sync_ok("Fsmbd");
    let sent = field(&v, "chunk_bytes");
    assert!(
        sent <= (BIG as u64) * 2 / 3 + (1 << 20),
        "resumed: sent {sent} of {BIG} bytes again"
    );
    assert!(
        temp_files(&p.r2()).is_empty(),
        "stray temp files: {:?}",
        temp_files(&p.r2())
    );
    p.assert_mirrored(&["srv/samba"]);
}

#[test]
fn a_killed_sender_resumes_without_resending_what_arrived() {
    interrupted_transfer_resumes(false);
}

#[test]
fn a_killed_receiver_resumes_without_resending_what_arrived() {
    interrupted_transfer_resumes(true);
}

/// A pair whose replica lives on a small tmpfs (`options`), with
/// `old.txt` mirrored there and then changed on the holder: the next pass
/// must not half-install the new version. `None` where tmpfs cannot be
/// mounted (not root).
fn mirrored_onto_a_small_disk(options: &str) -> Option<(Pair, SmallDisk)> {
    let mut p = Pair::new();
    let disk = SmallDisk::mount_or_skip(&p.dst("srv"), options)?;
    write(&p.src("srv/samba/old.txt"), b"the old replica");
    p.start_serve();
    p.sync_ok("Fsmbd");
    write(
        &p.src("srv/samba/old.txt"),
        b"a newer version that must not half-arrive",
    );
    Some((p, disk))
}

/// The bytes fit (the receiver's up-front check passes) but the inodes do
/// not: the disk fills during the apply, which must stop as cleanly.
#[test]
fn a_disk_that_fills_during_the_apply_stops_the_set_and_keeps_the_old_replica() {
    let Some((p, _disk)) = mirrored_onto_a_small_disk("4m,nr_inodes=8") else {
        return;
    };
    for i in 0..12 {
        write(&p.src(&format!("srv/samba/new{i}.txt")), b"small");
    }
    let (_, code, err) = p.sync("Fsmbd", &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("disk full while writing"),
        "failed during the apply: {err}"
    );
    assert!(err.contains("the old replica is intact"), "{err}");
    assert_eq!(fs::read(p.dst("srv/samba/old.txt")).unwrap(), b"the old replica");
    assert!(!p.dst("srv/samba/new0.txt").exists());
    assert!(temp_files(&p.r2()).is_empty(), "{:?}", temp_files(&p.r2()));
}

/// More bytes than the replica's disk has free: refused before anything
/// is written (the receiver compares with `statvfs` first).
#[test]
fn a_full_disk_stops_the_set_and_keeps_the_old_replica() {
    let Some((p, _disk)) = mirrored_onto_a_small_disk("4m") else {
        return;
    };
    write(&p.src("srv/samba/too-big.bin"), &noise(5, 8 << 20));
    let (_, code, err) = p.sync("Fsmbd", &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("disk full: the offer builds 2 files"), "{err}");
    assert!(err.contains("the old replica is intact"), "{err}");
    assert_eq!(fs::read(p.dst("srv/samba/old.txt")).unwrap(), b"the old replica");
    assert!(!p.dst("srv/samba/too-big.bin").exists());
    assert!(
        temp_files(&p.r2()).is_empty(),
        "temp files removed to free the space: {:?}",
        temp_files(&p.r2())
    );
    // Space freed (the big file gone), the next sync completes.
    fs::remove_file(p.src("srv/samba/too-big.bin")).unwrap();
    p.sync_ok("Fsmbd");
    p.assert_mirrored(&["srv/samba"]);
}
