//! Replica fidelity where it is hardest, through the real binary (serv1
//! `sync`, serv2 `serve` on 127.0.0.1): type changes between file,
//! directory and symlink; a directory replaced by a symlink to somewhere
//! else, on the holder or — in the middle of a push — on the replica; hard
//! links whose inode changes only its metadata; sparse files; directory
//! times after an interrupted pass. After each step the trees are compared
//! in full and by rsync (`-anc -HAX --numeric-ids --delete -i`), and nothing
//! outside the set's roots may have changed.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::pair::Pair;
use common::{noise, write};

const ROOTS: &[&str] = &["srv/samba", "etc/samba", "var/lib/samba"];

/// Past the scanner's racy window, so a change is seen by its fingerprint.
fn settle() {
    std::thread::sleep(Duration::from_millis(150));
}

fn temps_under(dir: &Path) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.path().display().to_string())
        .filter(|p| p.ends_with(".hamirror-tmp"))
        .collect()
}

/// Syncs, asserts success, the trees identical, and no temp file left.
fn mirror(p: &Pair, step: &str) {
    p.mirror_fsmbd(step, ROOTS);
    let temps = temps_under(&p.dst("srv/samba"));
    assert!(temps.is_empty(), "{step}: temp files left on the replica: {temps:?}");
}

#[test]
fn a_type_change_is_followed_in_one_pass() {
    let mut p = Pair::new();
    let r1 = p.r1();
    let s = |r: &str| r1.join(r);
    write(&s("srv/samba/x"), b"a file");
    write(&s("srv/samba/d/child"), b"in a dir");
    write(&s("srv/samba/l/child"), b"in a dir");
    symlink("x", s("srv/samba/sym")).unwrap();
    write(&s("etc/samba/smb.conf"), b"[global]\n");
    fs::create_dir_all(s("var/lib/samba")).unwrap();
    p.start_serve();
    mirror(&p, "initial");

    // file -> directory, directory -> file, directory -> symlink,
    // symlink -> directory.
    fs::remove_file(s("srv/samba/x")).unwrap();
    write(&s("srv/samba/x/child"), b"c");
    fs::remove_dir_all(s("srv/samba/d")).unwrap();
    write(&s("srv/samba/d"), b"now a file");
    fs::remove_dir_all(s("srv/samba/l")).unwrap();
    symlink("x", s("srv/samba/l")).unwrap();
    fs::remove_file(s("srv/samba/sym")).unwrap();
    write(&s("srv/samba/sym/deep/child"), b"c");
    mirror(&p, "first type changes");

    // And back, plus file <-> symlink.
    fs::remove_dir_all(s("srv/samba/x")).unwrap();
    write(&s("srv/samba/x"), b"a file again");
    fs::remove_file(s("srv/samba/d")).unwrap();
    fs::create_dir(s("srv/samba/d")).unwrap();
    fs::remove_file(s("srv/samba/l")).unwrap();
    write(&s("srv/samba/l"), b"a file");
    fs::remove_dir_all(s("srv/samba/sym")).unwrap();
    symlink("d", s("srv/samba/sym")).unwrap();
    mirror(&p, "second type changes");
    let again = p.sync_ok("Fsmbd");
    assert_eq!(again["push"]["outcome"], "unchanged", "{again}");
}

#[test]
fn a_directory_the_holder_replaced_by_a_symlink_changes_nothing_outside_the_replica() {
    let mut p = Pair::new();
    let outside = p.cfg.tmp.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o700)).unwrap();
    for n in ["a", "b"] {
        write(&outside.join(n), b"not the set's");
    }
    let r1 = p.r1();
    let s = |r: &str| r1.join(r);
    for n in ["a", "b"] {
        write(&s(&format!("srv/samba/evil/{n}")), b"in the set");
    }
    fs::set_permissions(s("srv/samba/evil"), fs::Permissions::from_mode(0o777)).unwrap();
    write(&s("etc/samba/smb.conf"), b"[global]\n");
    fs::create_dir_all(s("var/lib/samba")).unwrap();
    p.start_serve();
    mirror(&p, "initial");

    fs::remove_dir_all(s("srv/samba/evil")).unwrap();
    symlink(&outside, s("srv/samba/evil")).unwrap();
    mirror(&p, "directory replaced by a symlink");
    assert!(p.dst("srv/samba/evil").is_symlink());
    assert_eq!(fs::metadata(&outside).unwrap().mode() & 0o7777, 0o700);
    for n in ["a", "b"] {
        assert_eq!(fs::read(outside.join(n)).unwrap(), b"not the set's", "{n}");
    }
}

/// Starts `sync Fsmbd --json` and, once the replica has begun building a
/// file in `srv/samba/d`, swaps that directory for a symlink to `outside`
/// as a local user of serv2 could. Returns the sync's exit code and output.
fn sync_and_swap_d(p: &Pair, outside: &Path, moved: &str) -> (Option<i32>, String) {
    settle();
    let sync = p
        .cmd("serv1", &["sync", "Fsmbd", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while temps_under(&p.dst("srv/samba/d")).is_empty() {
        assert!(Instant::now() < deadline, "the push never started building in d");
        std::thread::sleep(Duration::from_millis(2));
    }
    fs::rename(p.dst("srv/samba/d"), p.dst(moved)).unwrap();
    symlink(outside, p.dst("srv/samba/d")).unwrap();
    let out = sync.wait_with_output().unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

fn assert_outside_untouched(outside: &Path) {
    let names: Vec<_> = fs::read_dir(outside).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["victim"], "nothing created, renamed or deleted outside");
    let m = fs::metadata(outside).unwrap();
    assert_eq!(
        (m.mode() & 0o7777, m.uid()),
        (0o700, 0),
        "outside's mode and owner kept"
    );
    assert_eq!(m.mtime(), 1_000_000_000, "outside's mtime kept");
    let v = fs::metadata(outside.join("victim")).unwrap();
    assert_eq!((v.mode() & 0o7777, v.uid()), (0o644, 0), "victim's mode and owner kept");
    assert_eq!(v.mtime(), 1_000_000_000, "victim's mtime kept");
    assert_eq!(fs::read(outside.join("victim")).unwrap(), b"not the set's");
}

#[test]
fn a_directory_swapped_for_a_symlink_on_the_replica_during_a_push_is_not_followed() {
    let mut p = Pair::new();
    let outside = p.cfg.tmp.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o700)).unwrap();
    write(&outside.join("victim"), b"not the set's");
    for f in [outside.join("victim"), outside.clone()] {
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        fs::File::open(&f).unwrap().set_modified(t).unwrap();
    }
    let r1 = p.r1();
    let s = |r: &str| r1.join(r);
    write(&s("srv/samba/d/big"), &noise(1, 48 << 20));
    write(&s("srv/samba/d/victim"), b"in the set");
    write(&s("srv/samba/other"), b"other");
    write(&s("etc/samba/smb.conf"), b"[global]\n");
    fs::create_dir_all(s("var/lib/samba")).unwrap();
    p.start_serve();
    mirror(&p, "initial");

    // d/big rewritten in place (d itself unchanged), d/victim's mode
    // changed: what the replica does in d must not land in `outside`.
    fs::write(s("srv/samba/d/big"), noise(2, 48 << 20)).unwrap();
    fs::set_permissions(s("srv/samba/d/victim"), fs::Permissions::from_mode(0o777)).unwrap();
    write(&s("srv/samba/other"), b"changed");
    let (code, out) = sync_and_swap_d(&p, &outside, "srv/samba/d.moved");
    assert_eq!(code, Some(1), "a partial pass: {out}");
    assert!(out.contains("symlink"), "the failure says why: {out}");
    assert_eq!(
        fs::read(p.dst("srv/samba/other")).unwrap(),
        b"changed",
        "the rest applied"
    );
    assert_outside_untouched(&outside);

    // The directory itself changes too (mode, owner, a new file, a
    // deletion): the replica may put a real directory back where the
    // holder has one, but never acts through the symlink.
    fs::rename(p.dst("srv/samba/d.moved"), p.dst("srv/samba/d2")).unwrap();
    fs::remove_file(p.dst("srv/samba/d")).unwrap();
    fs::rename(p.dst("srv/samba/d2"), p.dst("srv/samba/d")).unwrap();
    fs::write(s("srv/samba/d/big"), noise(3, 48 << 20)).unwrap();
    write(&s("srv/samba/d/new"), b"new");
    fs::remove_file(s("srv/samba/d/victim")).unwrap();
    fs::set_permissions(s("srv/samba/d"), fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::chown(s("srv/samba/d"), Some(4321), Some(4321)).unwrap();
    let (code, out) = sync_and_swap_d(&p, &outside, "srv/samba/d.moved2");
    assert!(matches!(code, Some(0) | Some(1)), "{out}");
    assert_outside_untouched(&outside);
}

#[test]
fn a_hard_link_whose_inode_changes_only_its_mode_leaves_no_temp_file() {
    let mut p = Pair::new();
    let r1 = p.r1();
    let s = |r: &str| r1.join(r);
    write(&s("srv/samba/a"), b"c\n");
    fs::hard_link(s("srv/samba/a"), s("srv/samba/h")).unwrap();
    fs::create_dir_all(s("srv/samba/other")).unwrap();
    fs::hard_link(s("srv/samba/a"), s("srv/samba/other/h2")).unwrap();
    write(&s("etc/samba/smb.conf"), b"[global]\n");
    fs::create_dir_all(s("var/lib/samba")).unwrap();
    p.start_serve();
    mirror(&p, "initial");
    fs::set_permissions(s("srv/samba/a"), fs::Permissions::from_mode(0o600)).unwrap();
    mirror(&p, "chmod of a linked inode");
    assert_eq!(fs::metadata(p.dst("srv/samba/h")).unwrap().nlink(), 3);
    std::os::unix::fs::chown(s("srv/samba/h"), Some(77), Some(77)).unwrap();
    mirror(&p, "chown through another name");
}

#[test]
fn a_sparse_file_stays_sparse_on_the_replica() {
    let mut p = Pair::new();
    let r1 = p.r1();
    let s = |r: &str| r1.join(r);
    let f = s("srv/samba/disk.img");
    fs::create_dir_all(f.parent().unwrap()).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let file = fs::File::create(&f).unwrap();
        file.set_len(256 << 20).unwrap();
        file.write_all_at(&noise(3, 8 << 10), 0).unwrap();
        file.write_all_at(&noise(4, 8 << 10), 100 << 20).unwrap();
        file.write_all_at(b"tail", (256 << 20) - 4).unwrap();
    }
    write(&s("etc/samba/smb.conf"), b"[global]\n");
    fs::create_dir_all(s("var/lib/samba")).unwrap();
    p.start_serve();
    mirror(&p, "sparse file");
    let allocated = |path: &Path| fs::metadata(path).unwrap().blocks() * 512;
    let (src, dst) = (allocated(&f), allocated(&p.dst("srv/samba/disk.img")));
    assert!(src < 1 << 20, "the source is sparse: {src}");
    assert!(
        dst <= src + (1 << 20),
        "the replica is sparse too: {dst} bytes allocated for {src}"
    );
}

#[test]
fn directory_times_are_right_after_an_interrupted_pass() {
    let mut p = Pair::new();
    let r1 = p.r1();
    let s = |r: &str| r1.join(r);
    write(&s("srv/samba/d/big"), &noise(5, 64 << 20));
    write(&s("srv/samba/d/e/f"), b"f");
    write(&s("etc/samba/smb.conf"), b"[global]\n");
    fs::create_dir_all(s("var/lib/samba")).unwrap();
    p.start_serve();
    mirror(&p, "initial");
    // Rewritten in place: d's own time does not change on the holder.
    fs::write(s("srv/samba/d/big"), noise(6, 64 << 20)).unwrap();
    settle();
    let mut sync = p
        .cmd("serv1", &["sync", "Fsmbd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while temps_under(&p.dst("srv/samba/d")).is_empty() {
        assert!(Instant::now() < deadline, "the push never started building d/big");
        std::thread::sleep(Duration::from_millis(2));
    }
    sync.kill().unwrap();
    sync.wait().unwrap();
    // The receiver may still be finishing with the dead connection.
    std::thread::sleep(Duration::from_millis(300));
    // Then the holder changes nothing in d, and the next pass completes.
    write(&s("srv/samba/unrelated"), b"u");
    mirror(&p, "after the interrupted pass");
    // And the replica's index agrees with its disk: a pass from the
    // other direction would find no change of serv2's own.
    mirror(&p, "once more");
}

#[test]
fn a_file_whose_name_merely_ends_like_a_temp_file_is_mirrored() {
    let mut p = Pair::new();
    let r1 = p.r1();
    let s = |r: &str| r1.join(r);
    write(&s("srv/samba/.notes.hamirror-tmp"), b"a user's file");
    write(&s("srv/samba/d/.y.hamirror-tmp"), b"y");
    write(&s("srv/samba/.z.0123456789abcdeg.hamirror-tmp"), b"not hex");
    write(&s("etc/samba/smb.conf"), b"[global]\n");
    fs::create_dir_all(s("var/lib/samba")).unwrap();
    p.start_serve();
    let v = p.sync_ok("Fsmbd");
    assert_eq!(v["scan"]["files"], 4, "{v}");
    p.assert_mirrored(ROOTS);
    assert_eq!(
        fs::read(p.dst("srv/samba/.notes.hamirror-tmp")).unwrap(),
        b"a user's file"
    );
}

#[test]
fn a_replica_changed_by_hand_is_found_by_verify_and_mended_by_repair() {
    let mut p = Pair::new();
    let r1 = p.r1();
    let s = |r: &str| r1.join(r);
    write(&s("srv/samba/a"), b"aaaa");
    write(&s("srv/samba/b"), b"bbbb");
    write(&s("srv/samba/d/c"), &noise(7, 300_000));
    write(&s("etc/samba/smb.conf"), b"[global]\n");
    fs::create_dir_all(s("var/lib/samba")).unwrap();
    p.start_serve();
    mirror(&p, "initial");
    // Behind hamirror's back on serv2: content (same size), mode, an extra
    // file, a missing one.
    fs::write(p.dst("srv/samba/a"), b"AAAA").unwrap();
    fs::set_permissions(p.dst("srv/samba/b"), fs::Permissions::from_mode(0o600)).unwrap();
    write(&p.dst("srv/samba/extra"), b"x");
    fs::remove_file(p.dst("srv/samba/d/c")).unwrap();
    let out = p.run("serv1", &["verify", "Fsmbd"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("hamirror verify Fsmbd --repair"), "names the fix: {text}");
    // An ordinary pass trusts the acknowledgement: still different.
    let v = p.sync_ok("Fsmbd");
    assert_eq!(v["push"]["outcome"], "unchanged", "{v}");
    let out = p.run("serv1", &["verify", "Fsmbd", "--repair"]);
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{o}\n{e}\n{}", p.serve_log());
    p.assert_mirrored(ROOTS);
    // And `sync --full` alone does the same.
    fs::write(p.dst("srv/samba/a"), b"ZZZZ").unwrap();
    let (v, code, err) = p.sync("Fsmbd", &["--full"]);
    assert_eq!(code, 0, "{v} {err}");
    assert_eq!(v["push"]["listing"], "full", "{v}");
    p.assert_mirrored(ROOTS);
}

/// Whether this process runs as root; if not, says SKIPPED (and fails under
/// CI, which runs as root).
fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "CI: {test} needs root");
    eprintln!("SKIPPED: {test} needs root (device nodes, foreign owners); this test is required under CI");
    false
}

/// `mknod` (a FIFO with `S_IFIFO`) with exactly `mode`, parents created.
fn mknod(path: &Path, kind: libc::mode_t, mode: u32, major: u32, minor: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let r = unsafe { libc::mknod(c.as_ptr(), kind | 0o600, libc::makedev(major, minor)) };
    assert_eq!(r, 0, "mknod {}: {}", path.display(), std::io::Error::last_os_error());
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> bool {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) == 0 }
}

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let len = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    buf.truncate(usize::try_from(len).ok()?);
    Some(buf)
}

fn rdev(path: &Path) -> (u32, u32) {
    let r = fs::symlink_metadata(path).unwrap().rdev();
    (libc::major(r), libc::minor(r))
}

/// A Samba-like tree with FIFOs and device nodes in nested directories.
fn specials(p: &Pair, devices: bool) {
    let s = |r: &str| p.src(r);
    write(&s("srv/samba/share/doc.txt"), b"a document");
    write(&s("etc/samba/smb.conf"), b"[global]\n");
    mknod(&s("srv/samba/spool/q/pipe"), libc::S_IFIFO, 0o640, 0, 0);
    mknod(&s("var/lib/samba/ctl"), libc::S_IFIFO, 0o600, 0, 0);
    if devices {
        mknod(&s("srv/samba/dev/null"), libc::S_IFCHR, 0o666, 1, 3);
        mknod(&s("srv/samba/dev/deep/loop"), libc::S_IFBLK, 0o660, 7, 200);
    }
}

#[test]
fn fifos_and_device_nodes_are_mirrored_and_follow_every_change() {
    if !root_or_skip("fifos_and_device_nodes_are_mirrored_and_follow_every_change") {
        return;
    }
    let mut p = Pair::new();
    specials(&p, true);
    let r1 = p.r1();
    let s = |r: &str| r1.join(r);
    std::os::unix::fs::lchown(s("srv/samba/spool/q/pipe"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::lchown(s("srv/samba/dev/deep/loop"), Some(0), Some(6)).unwrap();
    // Linux allows no user.* attribute on a FIFO; security.* it does (as root).
    let with_xattr = set_xattr(&s("srv/samba/spool/q/pipe"), "security.hamirror", b"fifo");
    if !with_xattr {
        eprintln!("(the filesystem takes no attribute on a FIFO: mirrored without)");
    }
    p.start_serve();
    let v = p.mirror_fsmbd("initial", ROOTS);
    assert_eq!(v["scan"]["specials"].as_u64(), Some(4), "{v}");
    assert_eq!(v["scan"]["skipped"].as_array().map(Vec::len), Some(0), "{v}");
    let pipe = fs::symlink_metadata(p.dst("srv/samba/spool/q/pipe")).unwrap();
    assert!(pipe.file_type().is_fifo());
    assert_eq!((pipe.mode() & 0o7777, pipe.uid(), pipe.gid()), (0o640, 1234, 5678));
    if with_xattr {
        let got = get_xattr(&p.dst("srv/samba/spool/q/pipe"), "security.hamirror");
        assert_eq!(got.as_deref(), Some(&b"fifo"[..]));
    }
    assert_eq!(rdev(&p.dst("srv/samba/dev/null")), (1, 3));
    assert!(
        fs::symlink_metadata(p.dst("srv/samba/dev/deep/loop"))
            .unwrap()
            .file_type()
            .is_block_device()
    );

    // A mode change, another device number, a deletion, and type changes
    // both ways (a file becomes a FIFO, a FIFO a directory).
    fs::set_permissions(s("srv/samba/spool/q/pipe"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(s("srv/samba/dev/null")).unwrap();
    mknod(&s("srv/samba/dev/null"), libc::S_IFCHR, 0o666, 1, 5);
    fs::remove_file(s("srv/samba/dev/deep/loop")).unwrap();
    fs::remove_file(s("srv/samba/share/doc.txt")).unwrap();
    mknod(&s("srv/samba/share/doc.txt"), libc::S_IFIFO, 0o644, 0, 0);
    fs::remove_file(s("var/lib/samba/ctl")).unwrap();
    write(&s("var/lib/samba/ctl/inside"), b"now a directory");
    let v = p.mirror_fsmbd("changed", ROOTS);
    assert_eq!(v["push"]["failures_total"].as_u64(), Some(0), "{v}");
    assert_eq!(
        fs::symlink_metadata(p.dst("srv/samba/spool/q/pipe")).unwrap().mode() & 0o7777,
        0o600
    );
    assert_eq!(rdev(&p.dst("srv/samba/dev/null")), (1, 5));
    assert!(!p.dst("srv/samba/dev/deep/loop").exists());
    assert!(
        fs::symlink_metadata(p.dst("srv/samba/share/doc.txt"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(temps_under(&p.dst("srv/samba")), Vec::<String>::new());

    // Back to a file, and nothing left to do after.
    fs::remove_file(s("srv/samba/share/doc.txt")).unwrap();
    write(&s("srv/samba/share/doc.txt"), b"a document again");
    mirror(&p, "a file again");
    let v = p.mirror_fsmbd("in step", ROOTS);
    assert_eq!(v["push"]["outcome"], "unchanged", "{v}");
    let out = p.run("serv1", &["verify", "Fsmbd"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

/// rsync's itemized lines must all be about `paths` (what was not
/// mirrored); each of `paths` must be among them.
fn only_these_differ(p: &Pair, root: &str, paths: &[&str]) {
    let items = common::pair::rsync_differences(&p.src(root), &p.dst(root));
    for l in items.lines() {
        assert!(
            paths.iter().any(|q| l.ends_with(&format!(" {q}"))),
            "{root}: unexpected difference {l:?} in\n{items}"
        );
    }
    for q in paths {
        assert!(
            items.lines().any(|l| l.ends_with(&format!(" {q}"))),
            "{root}: {q} not listed:\n{items}"
        );
    }
}

/// A peer that speaks only protocol version 1 (the previous release)
/// cannot decode FIFOs and device nodes: they are left out and reported,
/// everything else is mirrored, and verify compares the rest.
#[test]
fn a_version_1_peer_gets_all_but_fifos_and_devices_which_are_reported() {
    let devices = root_or_skip("a_version_1_peer_gets_all_but_fifos_and_devices_which_are_reported (device nodes)");
    let mut p = Pair::new();
    specials(&p, devices);
    write(&p.src("srv/samba/was-a-file"), b"a file");
    p.start_serve_env(&[("HAMIRROR_PROTOCOL", "1")]);
    settle();
    let (v, code, err) = p.sync("Fsmbd", &[]);
    assert_eq!(code, 0, "{err}\n{v}\n{}", p.serve_log());
    assert!(
        err.contains("warning: /srv/samba/spool/q/pipe: FIFO not mirrored: serv2 speaks protocol version 1"),
        "{err}"
    );
    let left_out = v["push"]["not_mirrored"].as_array().map_or(0, Vec::len);
    assert_eq!(left_out, if devices { 4 } else { 2 }, "{v}");
    if devices {
        assert!(
            err.contains("warning: /srv/samba/dev/null: character device not mirrored"),
            "{err}"
        );
    }
    let mut srv = vec!["spool/q/pipe"];
    if devices {
        srv.extend(["dev/null", "dev/deep/loop"]);
    }
    only_these_differ(&p, "srv/samba", &srv);
    only_these_differ(&p, "var/lib/samba", &["ctl"]);
    common::pair::rsync_oracle(&p.src("etc/samba"), &p.dst("etc/samba"));

    // A file that became a FIFO is a deletion to that peer (a delta).
    fs::remove_file(p.src("srv/samba/was-a-file")).unwrap();
    mknod(&p.src("srv/samba/was-a-file"), libc::S_IFIFO, 0o644, 0, 0);
    settle();
    let (v, code, err) = p.sync("Fsmbd", &[]);
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(v["push"]["outcome"], "delta", "{v}");
    assert!(!p.dst("srv/samba/was-a-file").exists());
    srv.push("was-a-file");
    only_these_differ(&p, "srv/samba", &srv);
    let out = p.run("serv1", &["verify", "Fsmbd"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

/// A receiver that may not make device nodes (root without CAP_MKNOD, as in
/// many containers) warns for each and mirrors everything else, FIFOs
/// included: never a silent drop, never a stopped set.
#[test]
fn a_receiver_without_cap_mknod_warns_per_device_and_mirrors_the_rest() {
    if !root_or_skip("a_receiver_without_cap_mknod_warns_per_device_and_mirrors_the_rest") {
        return;
    }
    let mut p = Pair::new();
    specials(&p, true);
    p.start_serve_under(&["setpriv", "--bounding-set=-mknod", "--inh-caps=-mknod"], &[]);
    settle();
    let (v, code, err) = p.sync("Fsmbd", &[]);
    assert_eq!(code, 0, "{err}\n{v}\n{}", p.serve_log());
    assert_eq!(v["push"]["warnings_total"].as_u64(), Some(2), "{v}");
    assert!(
        err.contains("warning: /srv/samba/dev/null: character device not created: Operation not permitted"),
        "{err}"
    );
    assert!(
        err.contains("warning: /srv/samba/dev/deep/loop: block device not created"),
        "{err}"
    );
    only_these_differ(&p, "srv/samba", &["dev/null", "dev/deep/loop"]);
    for r in ["etc/samba", "var/lib/samba"] {
        common::pair::rsync_oracle(&p.src(r), &p.dst(r));
    }
    assert!(
        fs::symlink_metadata(p.dst("srv/samba/spool/q/pipe"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(temps_under(&p.dst("srv/samba")), Vec::<String>::new());
}
