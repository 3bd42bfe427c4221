//! Tests of the merging full scan (`stream.rs`) against two oracles: the
//! whole-tree comparison it replaced ([`Scanner::scan_set_whole`], run on
//! a second index that saw the same trees), and a fresh scan of the tree
//! into an empty index (what the index must hold after any history).
//! Real directories, real scans; every scan pair runs after the racy
//! window so both indexes trust the same fingerprints.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;

use super::tests::Fixture;
use super::*;

/// The fixture's index scanned by the merging scan, a twin index scanned
/// by the whole-tree comparison.
struct Twin {
    f: Fixture,
    whole: Index,
    scanner: Scanner,
}

impl Twin {
    fn new() -> Twin {
        let f = Fixture::new();
        let whole = Index::open(&f._tmp.path().join("whole")).unwrap();
        Twin {
            f,
            whole,
            scanner: Scanner::new(&ScanOptions::default()).unwrap(),
        }
    }

    /// Scans with both, checks they agree with each other and with a fresh
    /// scan, and returns the merging scan's report and the paths its
    /// generation logged.
    fn scan(&self) -> (ScanReport, Vec<Vec<u8>>) {
        std::thread::sleep(RACY_WINDOW + Duration::from_millis(20));
        let (f, set) = (&self.f, &self.f.set);
        let a = self
            .scanner
            .scan_set(&f.index, set, &f.node_root, &Quiet)
            .unwrap()
            .report;
        let b = self
            .scanner
            .scan_set_whole(&self.whole, set, &f.node_root)
            .unwrap()
            .report;
        let figures = |r: &ScanReport| {
            (
                (r.new, r.changed, r.deleted),
                (r.files, r.dirs, r.symlinks, r.hardlinks, r.specials, r.bytes),
                (r.files_read, r.files_unchanged),
                (r.skipped.clone(), r.errors.clone(), r.missing_roots.clone()),
            )
        };
        assert_eq!(figures(&a), figures(&b), "merging scan {a:#?}\nwhole-tree scan {b:#?}");
        let logged = |i: &Index, r: &ScanReport| i.changes_since(&set.name, r.previous_generation).unwrap().unwrap();
        let changed = logged(&f.index, &a);
        assert_eq!(changed, logged(&self.whole, &b), "the generations log other paths");
        let entries = |i: &Index| i.entries(&set.name).unwrap().map(Result::unwrap).collect::<Vec<_>>();
        let merged = entries(&f.index);
        assert_eq!(merged, entries(&self.whole));
        let dir = tempfile::tempdir_in(f._tmp.path()).unwrap();
        let fresh = Index::open(dir.path()).unwrap();
        self.scanner.scan_set(&fresh, set, &f.node_root, &Quiet).unwrap();
        assert_eq!(merged, entries(&fresh), "the index is not what a fresh scan records");
        assert!(f.index.verify(&set.name).unwrap().is_empty());
        (a, changed)
    }

    fn kind(&self, path: &str) -> Option<EntryKind> {
        self.f
            .index
            .entry(&self.f.set.name, path.as_bytes())
            .unwrap()
            .map(|e| e.kind)
    }
}

fn paths(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|p| p.as_bytes().to_vec()).collect()
}

#[test]
fn the_merge_finds_adds_changes_deletes_and_type_changes_in_nested_trees() {
    let t = Twin::new();
    let f = &t.f;
    for p in [
        "data/a/b/c/f1",
        "data/a/b/c/f2",
        "data/a/b/g",
        "data/a/h",
        "data/z/y/x",
        "data/k",
    ] {
        f.write(p, p.as_bytes());
    }
    f.write("etc/conf", b"x");
    let (r, _) = t.scan();
    assert_eq!((r.new, r.files_read), (13, 7), "{r:#?}");
    let (r, changed) = t.scan();
    assert_eq!((r.new, r.changed, r.deleted, r.files_read), (0, 0, 0, 0), "{r:#?}");
    assert!(changed.is_empty());

    f.write("data/a/b/c/new", b"added deep down");
    f.write("data/a/h", b"changed content");
    fs::remove_file(f.p("data/a/b/g")).unwrap();
    fs::remove_dir_all(f.p("data/z")).unwrap();
    fs::remove_file(f.p("data/k")).unwrap();
    std::os::unix::fs::symlink("a/h", f.p("data/k")).unwrap();
    let (r, changed) = t.scan();
    assert_eq!((r.new, r.deleted, r.files_read), (1, 4, 2), "{r:#?}");
    assert_eq!(t.kind("data/k"), Some(EntryKind::Symlink));
    assert_eq!(t.kind("data/z/y/x"), None);
    let want = [
        "data",
        "data/a/b",
        "data/a/b/c",
        "data/a/b/c/new",
        "data/a/b/g",
        "data/a/h",
        "data/k",
        "data/z",
        "data/z/y",
        "data/z/y/x",
    ];
    assert_eq!(changed, paths(&want));
}

#[test]
fn a_directory_that_becomes_a_file_and_back_takes_its_subtree_with_it() {
    let t = Twin::new();
    let f = &t.f;
    f.write("data/d/e/f", b"1");
    f.write("data/d/g", b"2");
    f.write("data/d.txt", b"sorts before d/ in bytes");
    f.write("data/d0", b"sorts after d/");
    t.scan();

    fs::remove_dir_all(f.p("data/d")).unwrap();
    f.write("data/d", b"now a file");
    let (r, changed) = t.scan();
    assert_eq!(
        (r.changed, r.deleted),
        (2, 3),
        "data and d change; d/e, d/e/f, d/g go: {r:#?}"
    );
    assert_eq!(t.kind("data/d"), Some(EntryKind::File));
    assert_eq!(
        changed,
        paths(&["data", "data/d", "data/d/e", "data/d/e/f", "data/d/g"])
    );

    fs::remove_file(f.p("data/d")).unwrap();
    f.write("data/d/e/f", b"back");
    let (r, _) = t.scan();
    assert_eq!((r.new, r.changed, r.deleted), (2, 2, 0), "{r:#?}");
    assert_eq!(t.kind("data/d"), Some(EntryKind::Dir));
    assert_eq!(t.kind("data/d/e/f"), Some(EntryKind::File));
}

#[test]
fn rows_the_walk_never_reaches_are_judged_like_any_path_not_found() {
    let mut t = Twin::new();
    t.f.write("data/a/b", b"1");
    t.f.write("etc/conf", b"x");
    t.f.write("srv/s/t", b"y");
    t.f.set.roots.push(crate::config::SetRoot {
        path: "/srv".into(),
        dir: true,
        line: 3,
    });
    assert_eq!(t.scan().0.new, 7);
    // A root that vanished, a root that left the set.
    fs::remove_dir_all(t.f.p("data")).unwrap();
    t.f.set.roots.retain(|r| r.path != Path::new("/srv"));
    let (r, changed) = t.scan();
    assert_eq!(r.deleted, 6, "{r:#?}");
    assert_eq!(r.missing_roots, paths(&["data"]));
    assert_eq!(
        changed,
        paths(&["data", "data/a", "data/a/b", "srv", "srv/s", "srv/s/t"])
    );
    assert_eq!(t.kind("etc/conf"), Some(EntryKind::File));
}

#[test]
fn hard_links_and_unchanged_names_keep_their_roles_across_directories() {
    let t = Twin::new();
    let f = &t.f;
    f.write("data/y/one", b"shared");
    fs::create_dir_all(f.p("data/x")).unwrap();
    fs::hard_link(f.p("data/y/one"), f.p("data/x/two")).unwrap();
    t.scan();
    assert_eq!(t.kind("data/x/two"), Some(EntryKind::File));
    assert_eq!(t.kind("data/y/one"), Some(EntryKind::HardLink));
    // The first name goes: the other, untouched, becomes the file.
    fs::remove_file(f.p("data/x/two")).unwrap();
    t.scan();
    assert_eq!(t.kind("data/y/one"), Some(EntryKind::File));
}

/// One change to the tree under `data/`, at one of a few nested names.
#[derive(Debug, Clone)]
enum Op {
    Write(usize, u8),
    Mkdir(usize),
    Remove(usize),
    Symlink(usize),
    Link(usize, usize),
    Chmod(usize),
}

const NAMES: &[&str] = &[
    "data/a",
    "data/b",
    "data/a/a",
    "data/a/b",
    "data/a.b",
    "data/a/a/a",
    "data/a/a/b",
    "data/b/a",
    "data/b/a/a",
];

fn op() -> impl Strategy<Value = Op> {
    let n = 0..NAMES.len();
    prop_oneof![
        (n.clone(), any::<u8>()).prop_map(|(i, c)| Op::Write(i, c)),
        n.clone().prop_map(Op::Mkdir),
        n.clone().prop_map(Op::Remove),
        n.clone().prop_map(Op::Symlink),
        (n.clone(), n.clone()).prop_map(|(i, j)| Op::Link(i, j)),
        n.prop_map(Op::Chmod),
    ]
}

fn remove(p: &Path) {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).unwrap(),
        Ok(_) => fs::remove_file(p).unwrap(),
        Err(_) => {}
    }
}

/// Clears the way for a new node at `p`: every ancestor a directory,
/// nothing at `p` itself.
fn make_way(root: &Path, p: &Path) {
    let mut at = root.to_path_buf();
    for c in p.parent().unwrap().strip_prefix(root).unwrap().components() {
        at.push(c);
        if fs::symlink_metadata(&at).is_ok_and(|m| !m.is_dir()) {
            fs::remove_file(&at).unwrap();
        }
    }
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    remove(p);
}

fn apply(f: &Fixture, op: &Op) {
    let at = |i: usize| f.p(NAMES[i]);
    match *op {
        Op::Write(i, c) => {
            make_way(&f.node_root, &at(i));
            fs::write(at(i), vec![c; usize::from(c) * 40]).unwrap();
        }
        Op::Mkdir(i) => {
            if !fs::symlink_metadata(at(i)).is_ok_and(|m| m.is_dir()) {
                make_way(&f.node_root, &at(i));
                fs::create_dir(at(i)).unwrap();
            }
        }
        Op::Remove(i) => remove(&at(i)),
        Op::Symlink(i) => {
            make_way(&f.node_root, &at(i));
            std::os::unix::fs::symlink(NAMES[i], at(i)).unwrap();
        }
        Op::Link(i, j) => {
            if i != j && fs::symlink_metadata(at(j)).is_ok_and(|m| m.is_file()) {
                make_way(&f.node_root, &at(i));
                if fs::symlink_metadata(at(j)).is_ok_and(|m| m.is_file()) {
                    fs::hard_link(at(j), at(i)).unwrap();
                }
            }
        }
        Op::Chmod(i) => {
            if fs::symlink_metadata(at(i)).is_ok_and(|m| m.is_file()) {
                fs::set_permissions(at(i), fs::Permissions::from_mode(0o600)).unwrap();
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any history of changes: the merging scan and the whole-tree
    /// comparison report, log and store the same, and the index is what a
    /// fresh scan records.
    #[test]
    fn the_merging_scan_agrees_with_the_whole_tree_comparison(
        rounds in proptest::collection::vec(proptest::collection::vec(op(), 1..6), 1..4)
    ) {
        let t = Twin::new();
        for round in &rounds {
            for op in round {
                apply(&t.f, op);
            }
            t.scan();
        }
    }
}
