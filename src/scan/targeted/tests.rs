//! Targeted scans against the oracle of a full scan: after targeted scans
//! of the paths that changed, a full scan must find nothing to commit. The
//! racy window is zero here so that every fingerprint is trusted at once
//! and "nothing to commit" is exact (the racy rule itself is tested with
//! the full scan).

use std::fs;
use std::os::unix::fs::symlink;
use std::time::Duration;

use super::*;
use crate::scan::{PathScanOptions, Quiet, ScanOptions};

/// The scan tests' fixture plus a scanner that trusts every fingerprint.
struct Fixture {
    base: crate::scan::tests::Fixture,
    scanner: Scanner,
}

impl std::ops::Deref for Fixture {
    type Target = crate::scan::tests::Fixture;
    fn deref(&self) -> &Self::Target {
        &self.base
    }
}

impl Fixture {
    fn new() -> Fixture {
        let scanner = Scanner::new(&ScanOptions {
            threads: 2,
            walk_threads: 0,
            racy_window: Duration::ZERO,
        })
        .unwrap();
        Fixture {
            base: crate::scan::tests::Fixture::new(),
            scanner,
        }
    }

    fn full(&self) -> ScanReport {
        self.scanner
            .scan_set(&self.index, &self.set, &self.node_root, &Quiet)
            .unwrap()
            .report
    }

    fn targeted(&self, targets: &[Target], hard_links: bool) -> PathScan {
        let popts = PathScanOptions {
            hard_links,
            defer_fresh_above: None,
        };
        self.scanner
            .scan_paths(&self.index, &self.set, &self.node_root, targets, popts, &Quiet)
            .unwrap()
    }

    /// The oracle: a full scan finds nothing the targeted scans missed.
    fn assert_converged(&self) {
        let r = self.full();
        assert_eq!((r.new, r.changed, r.deleted), (0, 0, 0), "full scan found more: {r:#?}");
        assert!(self.index.verify(&self.set.name).unwrap().is_empty());
    }

    fn indexed(&self) -> Vec<String> {
        self.index
            .entries(&self.set.name)
            .unwrap()
            .map(|e| String::from_utf8(e.unwrap().path).unwrap())
            .collect()
    }
}

fn counts(r: &ScanReport) -> (u64, u64, u64, u64) {
    (r.new, r.changed, r.deleted, r.files_read)
}

#[test]
fn a_new_file_and_its_directory_are_committed_as_one_generation() {
    let f = Fixture::new();
    f.write("data/a", b"alpha");
    f.full();
    f.write("data/b", b"beta");
    let s = f.targeted(&[Target::path("data/b"), Target::path("data")], false);
    assert_eq!(s.full, None);
    assert_eq!(counts(&s.scanned.report), (1, 1, 0, 1), "{:#?}", s.scanned.report);
    assert_eq!(s.scanned.report.generation, 2);
    f.assert_converged();
}

#[test]
fn an_unchanged_target_is_not_read_and_changes_nothing() {
    let f = Fixture::new();
    f.write("data/a", b"alpha");
    f.full();
    let s = f.targeted(&[Target::path("data/a"), Target::path("etc/conf")], false);
    assert_eq!(counts(&s.scanned.report), (0, 0, 0, 0));
    assert_eq!(s.scanned.report.files_unchanged, 1);
    assert_eq!(s.scanned.report.generation, 1);
}

#[test]
fn a_deleted_directory_deletes_its_whole_indexed_subtree() {
    let f = Fixture::new();
    for p in ["data/d/a", "data/d/e/b", "data/d/e/f/c", "data/dd", "data/d.x"] {
        f.write(p, p.as_bytes());
    }
    f.full();
    fs::remove_dir_all(f.p("data/d")).unwrap();
    // Only the directory is named (a rename away or an `rm -r` whose inner
    // events were lost).
    let s = f.targeted(&[Target::path("data/d"), Target::path("data")], false);
    assert_eq!(counts(&s.scanned.report), (0, 1, 6, 0), "{:#?}", s.scanned.report);
    assert_eq!(f.indexed(), ["data", "data/d.x", "data/dd"]);
    f.assert_converged();
}

#[test]
fn a_renamed_directory_moves_its_subtree_without_reading_it_again_twice() {
    let f = Fixture::new();
    f.write("data/d/a", b"a");
    f.write("data/d/s/b", b"b");
    f.full();
    fs::rename(f.p("data/d"), f.p("data/e")).unwrap();
    let s = f.targeted(
        &[Target::tree("data/d"), Target::tree("data/e"), Target::path("data")],
        false,
    );
    // new e, e/a, e/s, e/s/b; changed data; deleted the four under d.
    assert_eq!(counts(&s.scanned.report), (4, 1, 4, 2), "{:#?}", s.scanned.report);
    f.assert_converged();
}

#[test]
fn files_in_a_new_nested_directory_are_found_by_the_tree_target() {
    let f = Fixture::new();
    f.full();
    for p in ["data/n/1/x", "data/n/1/2/y", "data/n/z"] {
        f.write(p, p.as_bytes());
    }
    let s = f.targeted(&[Target::tree("data/n"), Target::path("data")], false);
    assert_eq!(counts(&s.scanned.report), (6, 1, 0, 3), "{:#?}", s.scanned.report);
    f.assert_converged();
}

#[test]
fn a_path_below_a_symlink_or_a_file_does_not_exist_for_the_set() {
    let f = Fixture::new();
    f.write("data/d/a", b"a");
    let outside = f._tmp.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("a"), b"secret").unwrap();
    f.full();
    fs::remove_dir_all(f.p("data/d")).unwrap();
    symlink(&outside, f.p("data/d")).unwrap();
    let s = f.targeted(
        &[Target::path("data/d/a"), Target::path("data/d"), Target::path("data")],
        false,
    );
    // d is now a symlink; d/a is gone from the set (not read through the link).
    assert_eq!(counts(&s.scanned.report), (0, 2, 1, 0), "{:#?}", s.scanned.report);
    assert_eq!(f.indexed(), ["data", "data/d"]);
    assert_eq!(
        f.index.entry("Ftest", b"data/d").unwrap().unwrap().kind,
        hamirror_wire::EntryKind::Symlink
    );
    f.assert_converged();
}

#[test]
fn paths_outside_the_roots_and_temporary_files_are_ignored() {
    let f = Fixture::new();
    f.full();
    f.write("etc/other", b"not in the set");
    f.write("data/.x.0123456789abcdef.hamirror-tmp", b"a receiver's temp file");
    let s = f.targeted(
        &[
            Target::path("etc/other"),
            Target::path("data/.x.0123456789abcdef.hamirror-tmp"),
        ],
        false,
    );
    assert_eq!(counts(&s.scanned.report), (0, 0, 0, 0));
    assert!(!f.indexed().iter().any(|p| p.contains("other") || p.contains("tmp")));
}

#[test]
fn a_changed_file_with_several_links_falls_back_to_a_full_scan() {
    let f = Fixture::new();
    f.write("data/a", b"alpha");
    f.full();
    fs::hard_link(f.p("data/a"), f.p("data/b")).unwrap();
    let s = f.targeted(&[Target::path("data/b"), Target::path("data")], false);
    let why = s.full.expect("full scan");
    assert!(why.contains("/data/b changed and has 2 links"), "{why}");
    assert_eq!(s.scanned.report.hardlinks, 1);
    // The full scan read nothing again: a's fingerprint changed (ctime), so
    // it is read, but nothing else is.
    assert!(s.scanned.report.files_read <= 1);
    f.assert_converged();

    // A deletion in a set with hard links: also a full scan.
    fs::remove_file(f.p("data/a")).unwrap();
    let s = f.targeted(&[Target::path("data/a"), Target::path("data")], true);
    assert!(s.full.expect("full scan").contains("deleted"));
    assert_eq!(
        f.index.entry("Ftest", b"data/b").unwrap().unwrap().kind,
        hamirror_wire::EntryKind::File
    );
    f.assert_converged();
}

#[test]
fn a_missing_root_falls_back_to_a_full_scan() {
    let f = Fixture::new();
    f.write("etc/conf", b"x");
    f.full();
    fs::remove_file(f.p("etc/conf")).unwrap();
    let s = f.targeted(&[Target::path("etc/conf")], false);
    assert!(s.full.expect("full scan").contains("root /etc/conf is missing"));
    assert_eq!(s.scanned.report.missing_roots, vec![b"etc/conf".to_vec()]);
    f.assert_converged();
}

#[test]
fn a_file_replaced_by_a_directory_and_back() {
    let f = Fixture::new();
    f.write("data/x", b"file");
    f.full();
    fs::remove_file(f.p("data/x")).unwrap();
    f.write("data/x/inner", b"now a dir");
    let s = f.targeted(&[Target::tree("data/x"), Target::path("data")], false);
    assert_eq!(counts(&s.scanned.report), (1, 2, 0, 1), "{:#?}", s.scanned.report);
    f.assert_converged();
    fs::remove_dir_all(f.p("data/x")).unwrap();
    f.write("data/x", b"file again");
    // Only a Path target: the inner path still goes.
    let s = f.targeted(&[Target::path("data/x"), Target::path("data")], false);
    assert_eq!(counts(&s.scanned.report), (0, 2, 1, 1), "{:#?}", s.scanned.report);
    f.assert_converged();
}

#[test]
fn large_fresh_files_are_deferred_not_read_twice() {
    let f = Fixture::new();
    f.full();
    f.write("data/big", &vec![1u8; 100_000]);
    f.write("data/small", b"s");
    let scanner = Scanner::new(&ScanOptions {
        threads: 1,
        walk_threads: 0,
        racy_window: Duration::from_secs(3600),
    })
    .unwrap();
    let popts = PathScanOptions {
        hard_links: false,
        defer_fresh_above: Some(50_000),
    };
    let targets = [
        Target::path("data/big"),
        Target::path("data/small"),
        Target::path("data"),
    ];
    let s = scanner
        .scan_paths(&f.index, &f.set, &f.node_root, &targets, popts, &Quiet)
        .unwrap();
    assert_eq!(s.deferred.len(), 1);
    assert_eq!(s.deferred[0].0, b"data/big");
    assert!(s.deferred[0].1 > Duration::from_secs(3000), "{:?}", s.deferred[0].1);
    assert_eq!(counts(&s.scanned.report), (1, 1, 0, 1), "only the small file is read");
    // Once out of the window it is read (once) like any other.
    let s = f.targeted(&[Target::path("data/big")], false);
    assert_eq!(counts(&s.scanned.report), (1, 0, 0, 1));
    f.assert_converged();
}

#[test]
fn normalize_merges_duplicates_and_drops_what_a_tree_covers() {
    let t = normalize(&[
        Target::path("a/b/c"),
        Target::tree("a/b"),
        Target::path("a/b"),
        Target::path("a.x"),
        Target::path("a"),
        Target::path("a/bc"),
    ]);
    assert_eq!(
        t,
        vec![
            Target::path("a"),
            Target::path("a.x"),
            Target::tree("a/b"),
            Target::path("a/bc")
        ]
    );
}

#[test]
fn targets_in_excluded_places_are_forgotten_and_never_recorded() {
    let mut f = Fixture::new();
    f.write("data/keep", b"k");
    f.write("data/cache/x", b"x");
    f.write("data/a.swp", b"s");
    f.full();
    f.base.set.excludes = crate::config::Excludes {
        rules: ["/data/cache/", "**/*.swp"]
            .iter()
            .map(|r| crate::config::exclude::Rule::parse(false, r, 2).unwrap())
            .collect(),
    };
    f.write("data/cache/new", b"n");
    f.write("data/sub/b.swp", b"s");
    let s = f.targeted(
        &[
            Target::path(b"data/cache/new".to_vec()),
            Target::path(b"data/cache".to_vec()),
            Target::tree(b"data/sub".to_vec()),
            Target::path(b"data/a.swp".to_vec()),
            Target::path(b"data".to_vec()),
        ],
        false,
    );
    let r = &s.scanned.report;
    assert_eq!(s.full, None);
    // data/sub is new (and data changed); nothing excluded is recorded,
    // nothing deleted.
    assert_eq!((r.new, r.changed, r.deleted), (1, 1, 0), "{r:#?}");
    for p in [
        "data/cache",
        "data/cache/x",
        "data/cache/new",
        "data/a.swp",
        "data/sub/b.swp",
    ] {
        assert!(f.index.entry(&f.set.name, p.as_bytes()).unwrap().is_none(), "{p}");
    }
    f.assert_converged();
}

#[test]
fn a_new_fifo_is_an_entry_of_a_targeted_scan() {
    let f = Fixture::new();
    f.write("data/a", b"alpha");
    f.full();
    crate::scan::tests::mknod(&f, "data/pipe", libc::S_IFIFO, 0o620, 0);
    let s = f.targeted(&[Target::path("data/pipe"), Target::path("data")], false);
    assert_eq!(counts(&s.scanned.report), (1, 1, 0, 0), "{:#?}", s.scanned.report);
    let e = f.index.entry(&f.set.name, b"data/pipe").unwrap().unwrap();
    assert_eq!((e.kind, e.mode), (hamirror_wire::EntryKind::Fifo, 0o620));
    f.assert_converged();
}
