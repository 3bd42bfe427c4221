//! Extended attributes and POSIX ACLs through the real binary (serv1
//! `sync`, serv2 `serve` on 127.0.0.1): user attributes on files and
//! directories, access and default ACLs, a change or removal of an
//! attribute alone (which ships no chunk data), `verify` finding an
//! attribute changed on the replica and `--repair` mending it, a namespace
//! turned off in the configuration, and a replica filesystem that refuses
//! attributes (a warning per attribute, the set still applied). After each
//! step rsync (`-anc -HAX`, which compares xattrs and ACLs) must see no
//! difference. Needs `setfattr`/`getfattr` (attr) and `setfacl`/`getfacl`
//! (acl).

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::pair::Pair;
use common::write;

const ROOTS: &[&str] = &["srv/samba", "etc/samba", "var/lib/samba"];

fn settle() {
    std::thread::sleep(Duration::from_millis(150));
}

fn run(cmd: &str, args: &[&str], path: &Path) {
    let out = Command::new(cmd)
        .args(args)
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} is needed (apt-get install attr acl): {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn setfattr(path: &Path, name: &str, value: &str) {
    run("setfattr", &["-n", name, "-v", value], path);
}

fn getfacl(path: &Path) -> String {
    let out = Command::new("getfacl")
        .args(["-c", "-n", "-p"])
        .arg(path)
        .output()
        .expect("getfacl (apt-get install acl)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let out = Command::new("getfattr")
        .args(["--only-values", "-h", "-n", name])
        .arg(path)
        .output()
        .expect("getfattr (apt-get install attr)");
    out.status.success().then_some(out.stdout)
}

/// The example set with a Samba-like tree.
fn samba(p: &Pair) {
    let s = |r: &str| p.src(r);
    write(&s("srv/samba/share/doc.txt"), b"a document");
    write(&s("srv/samba/share/plain.txt"), b"no attributes");
    write(&s("srv/samba/acl.txt"), b"an access ACL");
    write(&s("etc/samba/smb.conf"), b"[global]\n");
    fs::create_dir_all(s("var/lib/samba")).unwrap();
}

fn mirror(p: &Pair, step: &str) -> serde_json::Value {
    p.mirror_fsmbd(step, ROOTS)
}

#[test]
fn user_xattrs_and_acls_are_mirrored_and_an_attribute_change_ships_no_data() {
    let mut p = Pair::new();
    samba(&p);
    let doc = p.src("srv/samba/share/doc.txt");
    setfattr(&doc, "user.DOSATTRIB", "A20");
    setfattr(&p.src("srv/samba/share"), "user.share", "yes");
    run("setfacl", &["-m", "u:1234:r,g:4321:rw"], &p.src("srv/samba/acl.txt"));
    run("setfacl", &["-d", "-m", "u:1234:rwx"], &p.src("srv/samba/share"));
    run("setfacl", &["-m", "u:1234:rx"], &p.src("srv/samba/share"));
    p.start_serve();
    mirror(&p, "initial");
    let dst = |r: &str| p.dst(r);
    assert_eq!(
        xattr(&dst("srv/samba/share/doc.txt"), "user.DOSATTRIB").unwrap(),
        b"A20"
    );
    assert_eq!(xattr(&dst("srv/samba/share"), "user.share").unwrap(), b"yes");
    for r in ["srv/samba/acl.txt", "srv/samba/share"] {
        let (a, b) = (getfacl(&p.src(r)), getfacl(&dst(r)));
        assert!(a.contains("user:1234:"), "{r}: {a}");
        assert_eq!(a, b, "{r}: the ACLs differ");
    }
    assert!(getfacl(&dst("srv/samba/share")).contains("default:user:1234:rwx"));

    // New files in a directory with a default ACL: one keeps the ACL it
    // inherited, one had it removed — on the replica its temp file
    // inherits one too, which must go.
    write(&p.src("srv/samba/share/inherits.txt"), b"inherits");
    write(&p.src("srv/samba/share/stripped.txt"), b"stripped");
    run("setfacl", &["-b"], &p.src("srv/samba/share/stripped.txt"));
    assert!(getfacl(&p.src("srv/samba/share/inherits.txt")).contains("user:1234:"));
    mirror(&p, "files under a default ACL");
    assert!(!getfacl(&dst("srv/samba/share/stripped.txt")).contains("user:1234"));

    // An attribute changed alone: only the entry travels.
    setfattr(&doc, "user.DOSATTRIB", "A21");
    let v = mirror(&p, "attribute changed");
    let push = &v["push"];
    assert_eq!(push["outcome"], "delta", "{v}");
    assert_eq!(push["chunks_sent"], 0, "an attribute change ships no chunk: {v}");
    assert_eq!(push["chunk_bytes"], 0, "{v}");
    assert_eq!(push["files_applied"], 1, "{v}");
    assert_eq!(
        xattr(&dst("srv/samba/share/doc.txt"), "user.DOSATTRIB").unwrap(),
        b"A21"
    );

    // An ACL changed alone, and an attribute removed.
    run("setfacl", &["-m", "u:1234:rw"], &p.src("srv/samba/acl.txt"));
    run("setfattr", &["-x", "user.share"], &p.src("srv/samba/share"));
    let v = mirror(&p, "ACL changed, attribute removed");
    assert_eq!(v["push"]["chunks_sent"], 0, "{v}");
    assert_eq!(xattr(&dst("srv/samba/share"), "user.share"), None);
    assert_eq!(getfacl(&p.src("srv/samba/acl.txt")), getfacl(&dst("srv/samba/acl.txt")));

    // ACLs removed altogether; the file's mode is what the holder's is.
    run("setfacl", &["-b"], &p.src("srv/samba/acl.txt"));
    run("setfacl", &["-k"], &p.src("srv/samba/share"));
    mirror(&p, "ACLs removed");
    assert!(!getfacl(&dst("srv/samba/acl.txt")).contains("user:1234"));
    assert!(!getfacl(&dst("srv/samba/share")).contains("default:"));

    let again = p.sync_ok("Fsmbd");
    assert_eq!(again["push"]["outcome"], "unchanged", "{again}");
}

#[test]
fn verify_finds_an_attribute_changed_on_the_replica_and_repair_mends_it() {
    let mut p = Pair::new();
    samba(&p);
    setfattr(&p.src("srv/samba/share/doc.txt"), "user.DOSATTRIB", "A20");
    p.start_serve();
    mirror(&p, "initial");
    assert_eq!(p.run("serv1", &["verify", "Fsmbd"]).status.code(), Some(0));

    setfattr(&p.dst("srv/samba/share/doc.txt"), "user.DOSATTRIB", "A99");
    setfattr(&p.dst("srv/samba/share/plain.txt"), "user.stray", "1");
    let out = p.run("serv1", &["verify", "Fsmbd"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("user.DOSATTRIB differs"), "{text}");
    assert!(text.contains("user.stray on serv2 only"), "{text}");

    let out = p.run("serv1", &["verify", "Fsmbd", "--repair"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}\nserve log:\n{}", p.serve_log());
    p.assert_mirrored(ROOTS);
    assert_eq!(xattr(&p.dst("srv/samba/share/plain.txt"), "user.stray"), None);
}

#[test]
fn a_namespace_turned_off_is_neither_mirrored_nor_compared() {
    let mut p = Pair::new();
    // A set's settings are its owner's (serv1.conf); serv2's own key is for
    // serv2's sets and changes nothing here.
    p.cfg
        .append("serv1.conf", "xattrs = user\nFsmbd.xattrs = system.posix_acl\n");
    p.cfg.append("serv2.conf", "xattrs = user\n");
    samba(&p);
    setfattr(&p.src("srv/samba/share/doc.txt"), "user.DOSATTRIB", "A20");
    run("setfacl", &["-m", "u:1234:r"], &p.src("srv/samba/acl.txt"));
    p.start_serve();
    settle();
    let (v, code, err) = p.sync("Fsmbd", &[]);
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(xattr(&p.dst("srv/samba/share/doc.txt"), "user.DOSATTRIB"), None);
    assert_eq!(
        getfacl(&p.src("srv/samba/acl.txt")),
        getfacl(&p.dst("srv/samba/acl.txt"))
    );
    // Not compared either: verify finds the copies identical.
    let out = p.run("serv1", &["verify", "Fsmbd"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));

    // `none` turns it off.
    p.cfg.set("serv1.conf", "Fsmbd.xattrs", "Fsmbd.xattrs = none");
    run("setfacl", &["-m", "u:999:r"], &p.src("srv/samba/acl.txt"));
    p.start_serve();
    settle();
    let (v, code, err) = p.sync("Fsmbd", &[]);
    assert_eq!(code, 0, "{err}\n{v}");
    assert!(!getfacl(&p.dst("srv/samba/acl.txt")).contains("user:999"));
}

/// A small ext4 image (1 KiB blocks, no `ea_inode`), loop-mounted for a
/// test and unmounted when dropped: attributes must fit in one block
/// beside the inode, so a large value is refused with ENOSPC while small
/// ones are kept — a filesystem that refuses some attributes, as a real
/// replica disk may.
struct SmallExt4(std::path::PathBuf);

impl SmallExt4 {
    fn mount(at: &Path, image: &Path) -> Option<SmallExt4> {
        fs::create_dir_all(at).unwrap();
        let made = Command::new("truncate")
            .args(["-s", "16M"])
            .arg(image)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new("mkfs.ext4")
                .args(["-q", "-b", "1024", "-O", "^ea_inode"])
                .arg(image)
                .status()
                .is_ok_and(|s| s.success());
        let ok = made
            && Command::new("mount")
                .args(["-o", "loop"])
                .arg(image)
                .arg(at)
                .status()
                .is_ok_and(|s| s.success());
        if !ok && std::env::var_os("HAMIRROR_SKIP_ROOT_TESTS").is_some() {
            eprintln!("skipped: a loop-mounted ext4 needs root (HAMIRROR_SKIP_ROOT_TESTS is set)");
            return None;
        }
        assert!(ok, "a loop-mounted ext4 needs root, mkfs.ext4 and a loop device");
        Some(SmallExt4(at.to_path_buf()))
    }
}

impl Drop for SmallExt4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn attributes_the_replica_refuses_are_warnings_and_the_set_is_still_applied() {
    let mut p = Pair::new();
    samba(&p);
    let big = "x".repeat(2500);
    let doc = p.src("srv/samba/share/doc.txt");
    setfattr(&doc, "user.DOSATTRIB", "A20");
    setfattr(&doc, "user.big", &big);
    setfattr(&p.src("srv/samba/share"), "user.big", &big);
    // The image holds srv/ (its lost+found stays outside the set's roots).
    let image = p.cfg.tmp.path().join("replica.img");
    let Some(_disk) = SmallExt4::mount(&p.dst("srv"), &image) else {
        return;
    };
    p.start_serve();
    settle();
    let (v, code, err) = p.sync("Fsmbd", &[]);
    assert_eq!(code, 0, "refused attributes do not fail the set: {err}\n{v}");
    assert_eq!(v["push"]["warnings_total"], 2, "{v}\n{err}");
    for path in ["srv/samba/share/doc.txt", "srv/samba/share"] {
        let line = format!("warning: /{path}: extended attribute user.big: no room for it on the replica's filesystem");
        assert!(err.contains(&line), "no {line:?} in:\n{err}");
    }
    assert_eq!(
        xattr(&p.dst("srv/samba/share/doc.txt"), "user.DOSATTRIB").unwrap(),
        b"A20"
    );
    assert_eq!(xattr(&p.dst("srv/samba/share/doc.txt"), "user.big"), None);
    for f in [
        "srv/samba/share/doc.txt",
        "srv/samba/share/plain.txt",
        "srv/samba/acl.txt",
    ] {
        assert_eq!(fs::read(p.src(f)).unwrap(), fs::read(p.dst(f)).unwrap(), "{f}");
    }
    // Verify names what the replica lacks.
    let out = p.run("serv1", &["verify", "Fsmbd"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("user.big missing on serv2"), "{text}");
}

/// Waits until rsync (which compares attributes and ACLs) sees no
/// difference in any root.
fn converge(p: &Pair, what: &str, log: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let diffs: String = ROOTS
            .iter()
            .map(|r| common::pair::rsync_differences(&p.src(r), &p.dst(r)))
            .collect();
        if diffs.trim().is_empty() {
            p.assert_mirrored(ROOTS);
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: still differs:\n{diffs}\nlog:\n{}",
            fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn watch_ships_attribute_and_acl_changes() {
    let mut p = Pair::new();
    samba(&p);
    p.start_serve();
    let log = p.cfg.tmp.path().join("watch.log");
    let _w = Child(
        p.cmd("serv1", &["watch", "Fsmbd"])
            .stdout(std::process::Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    converge(&p, "first copy", &log);
    let doc = p.src("srv/samba/share/doc.txt");
    setfattr(&doc, "user.DOSATTRIB", "A20");
    converge(&p, "attribute set", &log);
    run("setfacl", &["-d", "-m", "u:1234:rwx"], &p.src("srv/samba/share"));
    run("setfacl", &["-m", "g:4321:rw"], &p.src("srv/samba/acl.txt"));
    converge(&p, "ACLs set", &log);
    run("setfattr", &["-x", "user.DOSATTRIB"], &doc);
    converge(&p, "attribute removed", &log);
    assert_eq!(xattr(&p.dst("srv/samba/share/doc.txt"), "user.DOSATTRIB"), None);
}

#[test]
fn resync_from_the_holder_brings_attributes_back() {
    let mut p = Pair::new();
    samba(&p);
    setfattr(&p.src("srv/samba/share/doc.txt"), "user.DOSATTRIB", "A20");
    p.start_serve();
    mirror(&p, "initial");
    // serv1's receiver, for serv2 to pull from.
    let log = p.cfg.tmp.path().join("serve1.log");
    let _serve1 = Child(
        p.cmd("serv1", &["serve"])
            .stdout(std::process::Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::UdpSocket::bind(("127.0.0.1", p.ports[0])).is_ok() {
        assert!(std::time::Instant::now() < deadline, "serv1's serve did not bind");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The holder changes attributes; the replica pulls them.
    setfattr(&p.src("srv/samba/share/doc.txt"), "user.DOSATTRIB", "A21");
    run("setfacl", &["-m", "u:1234:r"], &p.src("srv/samba/acl.txt"));
    settle();
    let out = p.run("serv2", &["resync", "--from", "serv1", "Fsmbd", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        fs::read_to_string(&log).unwrap_or_default()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sets"][0]["chunks_received"], 0, "{v}");
    assert_eq!(v["sets"][0]["applied"], 2, "{v}");
    p.assert_mirrored(ROOTS);
    assert_eq!(
        xattr(&p.dst("srv/samba/share/doc.txt"), "user.DOSATTRIB").unwrap(),
        b"A21"
    );
}

/// The xattr system calls one `sync` of serv1 makes, traced with strace
/// (`None` when strace is missing).
fn xattr_calls(p: &Pair) -> Option<Vec<String>> {
    let trace = p.cfg.tmp.path().join("strace.out");
    let out = Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&trace)
        .args([
            "-e",
            "trace=listxattr,llistxattr,flistxattr,getxattr,lgetxattr,fgetxattr",
        ])
        .arg(env!("CARGO_BIN_EXE_hamirror"))
        .arg("--config")
        .arg(p.cfg.dir())
        .args(["--node", "serv1", "sync", "Fsmbd", "--json"])
        .output()
        .ok()?;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = fs::read_to_string(&trace).unwrap();
    Some(
        text.lines()
            .filter(|l| l.contains("xattr("))
            .map(str::to_string)
            .collect(),
    )
}

#[test]
fn a_no_change_pass_reads_no_attribute() {
    let mut p = Pair::new();
    samba(&p);
    for i in 0..20 {
        let f = p.src(&format!("srv/samba/share/f{i}"));
        write(&f, b"x");
        setfattr(&f, "user.DOSATTRIB", "A20");
    }
    p.start_serve();
    mirror(&p, "initial");
    settle();
    let Some(calls) = xattr_calls(&p) else {
        eprintln!("skipped: strace is not installed");
        return;
    };
    assert!(
        calls.is_empty(),
        "a no-change pass read attributes:\n{}",
        calls.join("\n")
    );
    // The trace does see them when a file changed (the test can fail).
    setfattr(&p.src("srv/samba/share/f3"), "user.DOSATTRIB", "A21");
    settle();
    let calls = xattr_calls(&p).unwrap();
    assert!(!calls.is_empty() && calls.len() < 10, "{calls:?}");
    p.assert_mirrored(ROOTS);
}

/// A peer that speaks only protocol version 1 (`HAMIRROR_PROTOCOL=1`
/// stands in for the previous release: it offers only `hamirror/1` and
/// encodes as version 1 did): the sync works, without attributes, with
/// one warning; verify compares everything else.
#[test]
fn a_version_1_peer_gets_everything_but_the_attributes_with_a_warning() {
    let mut p = Pair::new();
    samba(&p);
    setfattr(&p.src("srv/samba/share/doc.txt"), "user.DOSATTRIB", "A20");
    p.start_serve_env(&[("HAMIRROR_PROTOCOL", "1")]);
    settle();
    let (v, code, err) = p.sync("Fsmbd", &[]);
    assert_eq!(code, 0, "{err}\n{v}\nserve log:\n{}", p.serve_log());
    assert!(err.contains("serv2 speaks protocol version 1"), "{err}");
    assert_eq!(
        err.matches("speaks protocol version 1").count(),
        1,
        "one warning: {err}"
    );
    assert!(
        p.serve_log().contains("serv1 speaks protocol version 1"),
        "{}",
        p.serve_log()
    );
    for r in ROOTS {
        common::pair::assert_trees_equal(&p.src(r), &p.dst(r));
    }
    assert_eq!(xattr(&p.dst("srv/samba/share/doc.txt"), "user.DOSATTRIB"), None);
    // An attribute kept on the replica is left alone by a retouch.
    setfattr(&p.dst("srv/samba/share/plain.txt"), "user.replica", "1");
    run("chmod", &["600"], &p.src("srv/samba/share/plain.txt"));
    settle();
    let (v, code, err) = p.sync("Fsmbd", &[]);
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(
        xattr(&p.dst("srv/samba/share/plain.txt"), "user.replica").unwrap(),
        b"1"
    );
    let out = p.run("serv1", &["verify", "Fsmbd"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

/// The other way round: a version-1 sender (serv1 with
/// `HAMIRROR_PROTOCOL=1`) pushing to a version-2 receiver sends no
/// attributes, and the receiver does not take that for "none": the
/// replica's own attributes stay.
#[test]
fn a_version_1_sender_does_not_strip_the_replicas_attributes() {
    let mut p = Pair::new();
    samba(&p);
    p.start_serve();
    mirror(&p, "initial");
    setfattr(&p.dst("srv/samba/share/plain.txt"), "user.replica", "1");
    run("chmod", &["600"], &p.src("srv/samba/share/plain.txt"));
    write(&p.src("srv/samba/share/new.txt"), b"new");
    settle();
    let out = p
        .cmd("serv1", &["sync", "Fsmbd", "--json"])
        .env("HAMIRROR_PROTOCOL", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}\n{}", p.serve_log());
    assert!(
        p.serve_log().contains("serv1 speaks protocol version 1"),
        "{}",
        p.serve_log()
    );
    assert_eq!(fs::read(p.dst("srv/samba/share/new.txt")).unwrap(), b"new");
    assert_eq!(
        xattr(&p.dst("srv/samba/share/plain.txt"), "user.replica").unwrap(),
        b"1"
    );
    for r in ROOTS {
        common::pair::assert_trees_equal(&p.src(r), &p.dst(r));
    }
}
