//! The index's size per file (issue 17) on a corpus shaped like
//! `benches/index-size.sh`'s: small single-chunk files with ~49-byte paths
//! in ~2,000 directories, stat fingerprints as a real file system gives
//! them. Checks the bytes on disk per entry after the first commit, that
//! commits without change do not grow the file, and how far commits
//! changing 1% grow it. Prints each table's pages and fill.

use hamirror_wire::entry::file_hash;
use hamirror_wire::{ChunkRef, Entry, EntryKind};
use redb::{ReadableDatabase, ReadableTableMetadata};

use super::*;

const FILES: u64 = 20_000;

fn dirs() -> Vec<String> {
    let mut out = vec![];
    for d in 0..20 {
        for p in 0..10 {
            for y in 0..10 {
                out.push(format!("department-{d:02}/project-{p:03}/{}", 2015 + y));
            }
        }
    }
    out
}

/// An entry as the scanner makes it of what a share holds (owner root).
fn entry(path: String, kind: EntryKind, mtime_ns: i64, chunks: Vec<ChunkRef>) -> Entry {
    let (size, mode) = match kind {
        EntryKind::File => (chunks.iter().map(|c| u64::from(c.len)).sum(), 0o644),
        _ => (0, 0o755),
    };
    let file_hash = if kind == EntryKind::File {
        file_hash(&chunks)
    } else {
        [0; 32]
    };
    Entry {
        kind,
        mode,
        size,
        mtime_ns,
        file_hash,
        chunks,
        path: path.into_bytes(),
        uid: 0,
        gid: 0,
        target: vec![],
        xattrs: vec![],
    }
}

/// The entry of file `i` as written in `round`, with its fingerprint.
fn bench_file(i: u64, round: u64) -> Upsert {
    let dirs = dirs();
    let ext = [".docx", ".xlsx", ".pdf", ".txt", ".msg"][i as usize % 5];
    let path = format!("{}/report-{i:06}{ext}", dirs[i as usize % dirs.len()]);
    let len = 200 + (i * 7919 + round * 31) as u32 % 3897;
    let chunks = vec![ChunkRef {
        hash: *blake3::hash(format!("{i}/{round}").as_bytes()).as_bytes(),
        len,
    }];
    let mtime = 1_764_900_000_000_000_000 + (i as i64) * 13_417 + round as i64 * 1_000_000_000;
    Upsert {
        stat: Some(Fingerprint {
            dev: 2049,
            ino: 1_300_000 + i + round * FILES,
            size: u64::from(len),
            mtime_ns: mtime,
            ctime_ns: mtime,
        }),
        entry: entry(path, EntryKind::File, mtime, chunks),
    }
}

fn bench_dirs() -> Vec<Upsert> {
    let mut paths = std::collections::BTreeSet::new();
    for d in dirs() {
        let mut p = String::new();
        for part in d.split('/') {
            if !p.is_empty() {
                p.push('/');
            }
            p.push_str(part);
            paths.insert(p.clone());
        }
    }
    paths
        .into_iter()
        .enumerate()
        .map(|(n, p)| Upsert {
            stat: Some(Fingerprint {
                dev: 2049,
                ino: 1_000_000 + n as u64,
                size: 4096,
                mtime_ns: 1_764_900_000_000_000_000,
                ctime_ns: 1_764_900_000_000_000_000,
            }),
            entry: entry(p, EntryKind::Dir, 1_764_900_000_000_000_000, vec![]),
        })
        .collect()
}

fn report(idx: &Index, set: &str, when: &str) -> u64 {
    let entries = idx.info(set).unwrap().entries;
    let per = migrate::disk_bytes(idx.path()) / entries;
    let db = idx.db();
    let txn = db.begin_read().unwrap();
    let mut line = format!("{when}: {per} B/entry on disk;");
    for name in [format!("{set}/rows"), format!("{set}/where")] {
        let Ok(t) = txn.open_table(TableDefinition::<&[u8], &[u8]>::new(&name)) else {
            continue;
        };
        let s = t.stats().unwrap();
        let pages = s.leaf_pages() + s.branch_pages();
        line += &format!(
            " {name}: {pages} pages = {} B/entry, stored {} B/entry, fill {}%;",
            pages * 4096 / entries,
            s.stored_bytes() / entries,
            s.stored_bytes() * 100 / (s.leaf_pages() * 4096).max(1)
        );
    }
    eprintln!("{line}");
    per
}

#[test]
fn an_index_of_small_files_stays_small_and_does_not_grow_without_change() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = Index::open_file(&tmp.path().join("i.redb")).unwrap();
    let mut ups = bench_dirs();
    ups.extend((0..FILES).map(|i| bench_file(i, 0)));
    idx.commit("F", &ups, &[]).unwrap();
    let first = report(&idx, "F", "first commit");
    for _ in 0..3 {
        assert!(!idx.commit("F", &ups, &[]).unwrap().changed_any());
    }
    let same = report(&idx, "F", "3 commits without change");
    // As the bench's passes: of 1% of the files, 60% rewritten, 20%
    // deleted, 20% new.
    let mut next_new = FILES;
    for pass in 1..=9u64 {
        let mut changed = vec![];
        let mut gone = vec![];
        for k in 0..FILES / 100 {
            let i = (k * 97 + pass * 13) % FILES;
            match k % 5 {
                0 => gone.push(bench_file(i, 0).entry.path),
                1 => {
                    changed.push(bench_file(next_new, pass));
                    next_new += 1;
                }
                _ => changed.push(bench_file(i, pass)),
            }
        }
        idx.commit("F", &changed, &gone).unwrap();
    }
    let after = report(&idx, "F", "9 commits changing 1%");
    assert!(idx.verify("F").unwrap().is_empty());
    assert!(first <= 150, "{first} B/entry after the first commit");
    assert!(same <= first, "grew without change: {first} -> {same} B/entry");
    // Random inserts split the packed locator's pages: compaction rewrites
    // it packed again and gives back the free pages.
    assert!(
        after * 4 <= first * 5,
        "9 passes changing 1% grew it from {first} to {after} B/entry"
    );
}
