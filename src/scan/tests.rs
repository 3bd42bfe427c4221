//! Scanner unit tests on temp directories through the library API: quick
//! check hits and misses, the racy-timestamp rule, torn reads, hard links,
//! kept state below unreadable paths. The command-line behaviour is tested
//! with the real binary in `tests/scan.rs`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::config::ChunkParams;
use crate::index::Fingerprint;

/// A temp node root, an index and a set; shared with the targeted-scan tests.
pub(super) struct Fixture {
    pub _tmp: tempfile::TempDir,
    pub node_root: PathBuf,
    pub index: Index,
    pub set: MirrorSet,
}

impl Fixture {
    /// A set with the directory root `/data/` and the file root `/etc/conf`.
    pub fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let node_root = tmp.path().join("root");
        fs::create_dir_all(node_root.join("data")).unwrap();
        fs::create_dir_all(node_root.join("etc")).unwrap();
        let index = Index::open(&tmp.path().join("state")).unwrap();
        let set = MirrorSet::for_tests(
            "Ftest",
            tmp.path().join("Ftest"),
            &[("/data", true), ("/etc/conf", false)],
            ChunkParams {
                min: 1024,
                avg: 4096,
                max: 16384,
            },
        );
        Fixture {
            _tmp: tmp,
            node_root,
            index,
            set,
        }
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.node_root.join(rel)
    }

    pub fn write(&self, rel: &str, data: &[u8]) {
        let p = self.p(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }

    /// Scans after the racy window has passed for everything written so far.
    fn scan(&self) -> ScanReport {
        std::thread::sleep(RACY_WINDOW + Duration::from_millis(20));
        self.scan_now(&ScanOptions::default())
    }

    fn scan_now(&self, opts: &ScanOptions) -> ScanReport {
        scan_set(&self.index, &self.set, &self.node_root, opts, &Quiet).unwrap()
    }

    fn entry(&self, path: &str) -> Option<Entry> {
        self.index.entry(&self.set.name, path.as_bytes()).unwrap()
    }
}

fn counts(r: &ScanReport) -> (u64, u64, u64, u64) {
    (r.new, r.changed, r.deleted, r.files_read)
}

#[test]
fn quick_check_skips_unchanged_files_and_catches_every_change() {
    let f = Fixture::new();
    f.write("data/a", b"alpha");
    f.write("data/sub/b", &vec![7u8; 100_000]);
    f.write("etc/conf", b"x=1");
    let r = f.scan();
    // data, data/a, data/sub, data/sub/b, etc/conf
    assert_eq!(counts(&r), (5, 0, 0, 3));
    assert_eq!((r.files, r.dirs, r.bytes, r.generation), (3, 2, 100_008, 1));
    let b = f.entry("data/sub/b").unwrap();
    assert_eq!((b.kind, b.size, b.chunks.len()), (EntryKind::File, 100_000, 7));

    let r = f.scan();
    assert_eq!(counts(&r), (0, 0, 0, 0), "{r:#?}");
    assert_eq!((r.files_unchanged, r.generation, r.previous_generation), (3, 1, 1));

    // Same size, same mtime, new content: ctime gives it away.
    let mtime = fs::metadata(f.p("data/a")).unwrap().modified().unwrap();
    f.write("data/a", b"ALPHA");
    fs::File::options()
        .write(true)
        .open(f.p("data/a"))
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let r = f.scan();
    assert_eq!(counts(&r), (0, 1, 0, 1), "{r:#?}");
    assert_eq!(r.generation, 2);
    assert_eq!(
        f.entry("data/a").unwrap().chunks[0].hash,
        *blake3::hash(b"ALPHA").as_bytes()
    );

    // chmod to the same mode: read again, but nothing changed.
    fs::set_permissions(f.p("etc/conf"), fs::Permissions::from_mode(0o644)).unwrap();
    let r = f.scan();
    assert_eq!(counts(&r), (0, 0, 0, 1), "{r:#?}");
    assert_eq!(r.generation, 2, "a scan that changes nothing keeps the generation");
    // A real mode change is a change of the entry.
    fs::set_permissions(f.p("etc/conf"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(counts(&f.scan()), (0, 1, 0, 1));
    assert_eq!(f.entry("etc/conf").unwrap().mode, 0o600);
    assert!(f.index.verify(&f.set.name).unwrap().is_empty());
}

#[test]
fn recently_changed_files_are_read_again_next_time() {
    let f = Fixture::new();
    f.write("data/a", b"alpha");
    let always = ScanOptions {
        racy_window: Duration::from_secs(3600),
        ..ScanOptions::default()
    };
    assert_eq!(counts(&f.scan_now(&always)), (2, 0, 0, 1));
    assert_eq!(f.index.fingerprints(&f.set.name).unwrap()[&b"data/a"[..]], None);
    // Nothing changed, but the fingerprint could not be trusted: read again.
    let r = f.scan_now(&always);
    assert_eq!(counts(&r), (0, 0, 0, 1));
    assert_eq!(r.generation, 1);
    // Once settled, it is trusted.
    f.scan();
    assert_eq!(f.scan().files_read, 0);
}

#[test]
fn deletions_missing_roots_and_sockets() {
    let f = Fixture::new();
    f.write("data/a", b"1");
    f.write("data/d/b", b"2");
    let r = f.scan();
    assert_eq!(r.new, 4);
    assert_eq!(r.missing_roots, vec![b"etc/conf".to_vec()]);

    fs::remove_dir_all(f.p("data/d")).unwrap();
    // The file stays when the listener goes: a socket without its server.
    drop(std::os::unix::net::UnixListener::bind(f.p("data/sock")).unwrap());
    let r = f.scan();
    // data/d and data/d/b deleted; data itself changed (its mtime).
    assert_eq!(counts(&r), (0, 1, 2, 0), "{r:#?}");
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(r.skipped[0].path, b"data/sock");
    assert!(r.skipped[0].reason.contains("socket"), "{:?}", r.skipped);
    assert!(!r.is_partial());
}

/// `mkfifo` (or, as root, `mknod`) at `rel` under the fixture's root.
pub(super) fn mknod(f: &Fixture, rel: &str, kind: libc::mode_t, mode: libc::mode_t, dev: libc::dev_t) {
    let c = std::ffi::CString::new(f.p(rel).as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let r = unsafe { libc::mknod(c.as_ptr(), kind | mode, dev) };
    assert_eq!(r, 0, "mknod {rel}: {}", std::io::Error::last_os_error());
    fs::set_permissions(f.p(rel), fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn fifos_and_device_nodes_are_entries_never_opened() {
    let f = Fixture::new();
    f.write("data/a", b"1");
    // Nobody writes to it: opening it for reading would block the scan.
    mknod(&f, "data/pipe", libc::S_IFIFO, 0o640, 0);
    let root = crate::xattr::is_root();
    if root {
        mknod(&f, "data/null", libc::S_IFCHR, 0o666, libc::makedev(1, 3));
        mknod(&f, "data/loop", libc::S_IFBLK, 0o660, libc::makedev(7, 200));
    }
    let r = f.scan();
    assert!(r.skipped.is_empty() && !r.is_partial(), "{r:#?}");
    assert_eq!((r.files, r.specials, r.files_read), (1, if root { 3 } else { 1 }, 1));
    let pipe = f.entry("data/pipe").unwrap();
    assert_eq!(
        (pipe.kind, pipe.mode, pipe.size, pipe.target.as_slice()),
        (EntryKind::Fifo, 0o640, 0, &b""[..])
    );
    if root {
        let null = f.entry("data/null").unwrap();
        assert_eq!((null.kind, null.target.as_slice()), (EntryKind::CharDev, &b"1:3"[..]));
        let lp = f.entry("data/loop").unwrap();
        assert_eq!((lp.kind, lp.target.as_slice()), (EntryKind::BlockDev, &b"7:200"[..]));
        // Replaced by another device number: a new entry, seen by the quick check.
        fs::remove_file(f.p("data/null")).unwrap();
        mknod(&f, "data/null", libc::S_IFCHR, 0o666, libc::makedev(1, 5));
    } else {
        eprintln!("SKIPPED (device nodes): not root");
    }
    fs::set_permissions(f.p("data/pipe"), fs::Permissions::from_mode(0o600)).unwrap();
    let r = f.scan();
    assert_eq!(r.changed, if root { 3 } else { 1 }, "{r:#?}"); // data, pipe, null
    assert_eq!(f.entry("data/pipe").unwrap().mode, 0o600);
    if root {
        assert_eq!(f.entry("data/null").unwrap().target, b"1:5");
    }
    assert_eq!(f.scan().changed, 0);
}

#[test]
fn hard_links_name_the_first_path_in_byte_order() {
    let f = Fixture::new();
    f.write("data/m", b"shared");
    fs::hard_link(f.p("data/m"), f.p("data/z")).unwrap();
    fs::hard_link(f.p("data/m"), f.p("data/b")).unwrap();
    let r = f.scan();
    assert_eq!((r.files, r.hardlinks, r.files_read), (1, 2, 1));
    assert_eq!(f.entry("data/b").unwrap().kind, EntryKind::File);
    for name in ["data/m", "data/z"] {
        let e = f.entry(name).unwrap();
        assert_eq!((e.kind, e.target.as_slice()), (EntryKind::HardLink, &b"data/b"[..]));
    }
    // Removing the first name promotes the next one.
    fs::remove_file(f.p("data/b")).unwrap();
    let r = f.scan();
    assert_eq!((r.files, r.hardlinks, r.deleted), (1, 1, 1));
    assert_eq!(f.entry("data/m").unwrap().kind, EntryKind::File);
    assert_eq!(f.entry("data/z").unwrap().target, b"data/m");
    assert!(f.index.verify(&f.set.name).unwrap().is_empty());
}

#[test]
fn symlinks_are_recorded_not_followed_even_as_roots() {
    let f = Fixture::new();
    f.write("outside/secret", b"s");
    std::os::unix::fs::symlink("../outside", f.p("data/l")).unwrap();
    std::os::unix::fs::symlink("/nonexistent", f.p("etc/conf")).unwrap();
    let r = f.scan();
    assert_eq!((r.symlinks, r.files, r.errors.len()), (2, 0, 0), "{r:#?}");
    assert_eq!(f.entry("data/l").unwrap().target, b"../outside");
    assert_eq!(f.entry("etc/conf").unwrap().kind, EntryKind::Symlink);
    assert!(f.entry("data/l/secret").is_none());
}

#[test]
fn a_directory_root_that_is_not_a_directory_is_an_error() {
    let f = Fixture::new();
    fs::remove_dir(f.p("data")).unwrap();
    f.write("data", b"not a dir");
    let r = f.scan();
    assert_eq!(r.errors.len(), 1);
    assert!(r.errors[0].reason.contains("listed as a directory"), "{:?}", r.errors);
}

#[test]
fn kept_paths_cover_themselves_and_their_subtree_only() {
    // (Unlistable directories themselves are tested with the real binary
    // without CAP_DAC_OVERRIDE in tests/scan.rs: root ignores permissions.)
    let keep: BTreeSet<Vec<u8>> = [b"data/locked".to_vec()].into();
    assert!(is_kept(b"data/locked", &keep));
    assert!(is_kept(b"data/locked/a/b", &keep));
    assert!(!is_kept(b"data/locked2", &keep));
    assert!(!is_kept(b"data", &keep));
    assert!(!is_kept(b"data/locked", &BTreeSet::new()));
}

/// Appends to a file whenever the scanner reports progress, i.e. in the
/// middle of every read of it: a writer that never lets it settle.
struct Appender(PathBuf);

impl ScanObserver for Appender {
    fn progress(&self, _bytes: u64) {
        let mut w = fs::OpenOptions::new().append(true).open(&self.0).unwrap();
        w.write_all(b"more").unwrap();
    }
}

#[test]
fn a_file_that_keeps_changing_is_never_recorded() {
    let f = Fixture::new();
    f.write("data/log", &vec![1u8; 3 << 20]);
    let path = f.p("data/log");
    let opts = ScanOptions::default();
    let r = scan_set(&f.index, &f.set, &f.node_root, &opts, &Appender(path.clone())).unwrap();
    let errs: Vec<_> = r
        .errors
        .iter()
        .map(|e| (show_path(&e.path), e.reason.clone()))
        .collect();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].1.contains("changed while being read (3 attempts)"), "{errs:?}");
    assert!(r.is_partial());
    assert!(f.entry("data/log").is_none(), "no torn hash is recorded");
    assert!(
        fs::metadata(&path).unwrap().len() > 3 << 20,
        "the writer wrote during the reads"
    );

    let r = f.scan();
    assert!(r.errors.is_empty());
    let e = f.entry("data/log").unwrap();
    assert_eq!(e.size, fs::metadata(&path).unwrap().len());
}

#[test]
fn unusual_names_are_kept_byte_exact() {
    use std::os::unix::ffi::OsStrExt;
    let f = Fixture::new();
    let odd: &[&[u8]] = &[b"with space", b"new\nline", b"latin1-\xe9", b"tab\there"];
    for name in odd {
        let p = f.p("data").join(std::ffi::OsStr::from_bytes(name));
        fs::write(p, name).unwrap();
    }
    let r = f.scan();
    assert_eq!(r.files, 4);
    for name in odd {
        let mut p = b"data/".to_vec();
        p.extend_from_slice(name);
        let e = f.index.entry(&f.set.name, &p).unwrap().unwrap();
        assert_eq!(e.size, name.len() as u64);
    }
    assert_eq!(f.scan().files_read, 0);
}

#[test]
fn many_files_use_all_threads_and_agree_with_a_single_thread() {
    let f = Fixture::new();
    for i in 0..200 {
        f.write(&format!("data/d{}/f{i}", i % 7), &vec![i as u8; i * 300]);
    }
    let r = f.scan();
    assert_eq!(r.files_read, 200);
    let all: Vec<Entry> = f.index.entries(&f.set.name).unwrap().map(Result::unwrap).collect();
    // Rescan everything on one thread into a second index: same entries.
    let tmp = tempfile::tempdir().unwrap();
    let other = Index::open(tmp.path()).unwrap();
    let one = ScanOptions {
        threads: 1,
        ..ScanOptions::default()
    };
    scan_set(&other, &f.set, &f.node_root, &one, &Quiet).unwrap();
    let again: Vec<Entry> = other.entries(&f.set.name).unwrap().map(Result::unwrap).collect();
    assert_eq!(all, again);
}

#[test]
fn walk_threads_are_their_own_pool_and_any_count_finds_the_same() {
    let dflt = Scanner::new(&ScanOptions {
        threads: 2,
        ..ScanOptions::default()
    })
    .unwrap();
    assert_eq!(dflt.threads(), (2, WALK_THREADS));
    let f = Fixture::new();
    for i in 0..300 {
        f.write(&format!("data/d{}/e{}/f{i}", i % 5, i % 11), &[i as u8; 10]);
    }
    let first = f.scan();
    assert_eq!(first.files_read, 300);
    // One walking thread and many: the same rows, and a no-change pass
    // that reads nothing.
    for walk_threads in [1, 3, 32] {
        let scanner = Scanner::new(&ScanOptions {
            threads: 1,
            walk_threads,
            ..ScanOptions::default()
        })
        .unwrap();
        assert_eq!(scanner.threads(), (1, walk_threads));
        let tmp = tempfile::tempdir().unwrap();
        let other = Index::open(tmp.path()).unwrap();
        scanner.scan_set(&other, &f.set, &f.node_root, &Quiet).unwrap();
        let a: Vec<Entry> = f.index.entries(&f.set.name).unwrap().map(Result::unwrap).collect();
        let b: Vec<Entry> = other.entries(&f.set.name).unwrap().map(Result::unwrap).collect();
        assert_eq!(a, b, "{walk_threads} walking threads");
        let again = scanner.scan_set(&f.index, &f.set, &f.node_root, &Quiet).unwrap().report;
        assert_eq!(again.files_read, 0, "{walk_threads} walking threads");
        assert_eq!(again.files_unchanged, 300, "{walk_threads} walking threads");
    }
}

#[test]
fn the_first_name_of_a_hard_link_does_not_depend_on_walk_order() {
    let stat = |ino, nlink| walk::Stat {
        mode: 0o644,
        uid: 0,
        gid: 0,
        nlink,
        mtime_ns: 0,
        rdev: 0,
        fp: Fingerprint {
            dev: 1,
            ino,
            size: 1,
            mtime_ns: 0,
            ctime_ns: 0,
        },
    };
    let found = |path: &str, ino, nlink| walk::Found {
        path: path.as_bytes().to_vec(),
        kind: walk::Kind::File,
        stat: stat(ino, nlink),
    };
    let names = ["a/z", "a-b", "a/b", "b"];
    for rotation in 0..names.len() {
        let mut list: Vec<walk::Found> = names.iter().map(|n| found(n, 7, 4)).collect();
        list.rotate_left(rotation);
        list.push(found("single", 8, 1));
        let first = hard_link_primaries(list.iter());
        assert_eq!(first.len(), 1);
        assert_eq!(first[&(1, 7)], b"a-b", "rotation {rotation}");
    }
}

#[test]
fn a_file_replaced_by_a_fifo_before_reading_is_refused_without_blocking() {
    let f = Fixture::new();
    let fifo = f.p("data/was-a-file");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let job = read::Job {
        path: b"data/was-a-file".to_vec(),
        local: fifo,
        size: 10,
    };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let out = read::read_all(vec![job], f.set.chunk, f.set.xattrs, &pool, 0, &Quiet).unwrap();
    let err = out.into_iter().next().unwrap().unwrap_err();
    assert_eq!(err.reason, "no longer a regular file");
}

fn with_excludes(mut f: Fixture, rules: &[&str]) -> Fixture {
    f.set.excludes = crate::config::Excludes {
        rules: rules
            .iter()
            .enumerate()
            .map(|(i, r)| crate::config::exclude::Rule::parse(false, r, i + 2).unwrap())
            .collect(),
    };
    f
}

#[test]
fn excluded_paths_are_not_scanned_and_newly_excluded_ones_are_forgotten_not_deleted() {
    let f = Fixture::new();
    f.write("data/a", b"a");
    f.write("data/a.tmp", b"t");
    f.write("data/cache/x", b"x");
    f.write("data/d/lock/y", b"y");
    f.write("data/lock", b"a file named lock");
    let r = f.scan();
    assert_eq!(r.new, 9, "{r:#?}");
    let generation = r.generation;
    let f = with_excludes(f, &["*.tmp", "/data/cache/", "lock/"]);
    let r = f.scan();
    // Newly excluded: dropped from the index, no deletion logged, no new
    // generation (a peer is never told to delete them).
    assert_eq!((r.new, r.changed, r.deleted), (0, 0, 0), "{r:#?}");
    assert_eq!(r.generation, generation);
    for gone in [
        "data/a.tmp",
        "data/cache",
        "data/cache/x",
        "data/d/lock",
        "data/d/lock/y",
    ] {
        assert!(f.entry(gone).is_none(), "{gone} is still indexed");
    }
    // A file named like a directory-only pattern stays.
    assert!(f.entry("data/lock").is_some());
    assert!(f.entry("data/a").is_some());
    assert_eq!(f.index.info(&f.set.name).unwrap().entries, 4);
    // New files in excluded places are never recorded (their directory's
    // mtime changed: that is a change of /data).
    f.write("data/b.tmp", b"t");
    f.write("data/cache/z", b"z");
    let r = f.scan();
    assert_eq!((r.new, r.changed, r.deleted), (0, 1, 0), "{r:#?}");
    assert!(f.entry("data/b.tmp").is_none() && f.entry("data/cache/z").is_none());
}

#[test]
fn attributes_are_read_with_the_file_and_a_namespace_change_reads_every_file_again() {
    let mut f = Fixture::new();
    f.write("data/a", b"a");
    let set =
        |name: &str, value: &[u8]| rustix::fs::setxattr(f.p("data/a"), name, value, rustix::fs::XattrFlags::empty());
    set("user.b", b"2").unwrap();
    set("user.a", b"1").unwrap();
    rustix::fs::setxattr(f.p("data"), "user.dir", b"d", rustix::fs::XattrFlags::empty()).unwrap();
    f.scan();
    let names = |e: Entry| e.xattrs.into_iter().map(|x| (x.name, x.value)).collect::<Vec<_>>();
    let want = vec![(b"user.a".to_vec(), b"1".to_vec()), (b"user.b".to_vec(), b"2".to_vec())];
    assert_eq!(names(f.entry("data/a").unwrap()), want, "ascending by name");
    assert_eq!(
        names(f.entry("data").unwrap()),
        vec![(b"user.dir".to_vec(), b"d".to_vec())]
    );
    // Nothing changed: nothing read.
    assert_eq!(counts(&f.scan()), (0, 0, 0, 0));

    // Another namespace setting: every file is read once more, and entries
    // change where the attributes read differ.
    f.set.xattrs = crate::config::XattrNamespaces::NONE;
    let r = f.scan();
    assert_eq!(r.files_read, 1, "{r:?}");
    assert!(f.entry("data/a").unwrap().xattrs.is_empty());
    assert_eq!(counts(&f.scan()), (0, 0, 0, 0));
}
