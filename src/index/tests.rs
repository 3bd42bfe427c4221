//! Unit tests of the index: commit semantics, generations and their log,
//! the chunk locator, persistence of the id, trimming, refusal of bad paths.

use hamirror_wire::entry::file_hash;
use hamirror_wire::{ChunkRef, Entry, EntryKind};

use redb::TableDefinition;

use super::*;

fn file(path: &str, chunks: &[(u8, u32)], mtime: i64) -> Entry {
    let chunks: Vec<ChunkRef> = chunks.iter().map(|&(h, len)| ChunkRef { hash: [h; 32], len }).collect();
    Entry {
        path: path.as_bytes().to_vec(),
        kind: EntryKind::File,
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime_ns: mtime,
        size: chunks.iter().map(|c| u64::from(c.len)).sum(),
        file_hash: file_hash(&chunks),
        chunks,
        target: vec![],
        xattrs: vec![],
    }
}

fn dir(path: &str) -> Entry {
    Entry {
        path: path.as_bytes().to_vec(),
        kind: EntryKind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime_ns: 1,
        size: 0,
        file_hash: [0; 32],
        chunks: vec![],
        target: vec![],
        xattrs: vec![],
    }
}

fn up(e: Entry) -> Upsert {
    Upsert {
        entry: e,
        stat: Some(Fingerprint {
            dev: 1,
            ino: 2,
            size: 3,
            mtime_ns: 4,
            ctime_ns: 5,
        }),
    }
}

fn open() -> (tempfile::TempDir, Index) {
    let dir = tempfile::tempdir().unwrap();
    let idx = Index::open(&dir.path().join("state")).unwrap();
    (dir, idx)
}

fn consistent(idx: &Index, set: &str) {
    let problems = idx.verify(set).unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn commit_counts_new_changed_deleted_and_only_real_changes_raise_the_generation() {
    let (_d, idx) = open();
    let s = "Fsmbd";
    let o = idx
        .commit(s, &[up(dir("srv")), up(file("srv/a", &[(1, 10)], 1))], &[])
        .unwrap();
    assert_eq!((o.generation, o.new, o.changed, o.deleted), (1, 2, 0, 0));

    // The same entries again, with a new fingerprint: refreshed only.
    let mut same = up(file("srv/a", &[(1, 10)], 1));
    same.stat = None;
    let o = idx.commit(s, &[same], &[]).unwrap();
    assert_eq!((o.generation, o.refreshed, o.changed_any()), (1, 1, false));
    assert_eq!(idx.fingerprints(s).unwrap()[&b"srv/a"[..]], None);

    // Nothing at all: no transaction, generation unchanged.
    assert_eq!(idx.commit(s, &[], &[]).unwrap().generation, 1);
    // Deleting an unknown path is not a change.
    assert!(!idx.commit(s, &[], &[b"srv/zz".to_vec()]).unwrap().changed_any());

    let o = idx
        .commit(
            s,
            &[up(file("srv/a", &[(1, 10)], 2)), up(file("srv/b", &[(2, 5)], 1))],
            &[b"srv".to_vec()],
        )
        .unwrap();
    assert_eq!((o.generation, o.new, o.changed, o.deleted), (2, 1, 1, 1));
    assert_eq!(idx.info(s).unwrap().entries, 2);
    assert_eq!(idx.entry(s, b"srv/a").unwrap().unwrap().mtime_ns, 2);
    assert_eq!(idx.entry(s, b"srv").unwrap(), None);
    let all: Vec<Entry> = idx.entries(s).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(
        all.iter().map(|e| e.path.clone()).collect::<Vec<_>>(),
        [b"srv/a".to_vec(), b"srv/b".to_vec()]
    );
    consistent(&idx, s);
    // Sets are independent.
    assert_eq!(idx.generation("Flpd").unwrap(), 0);
    assert_eq!(idx.sets().unwrap(), ["Fsmbd"]);
}

#[test]
fn changes_since_unions_the_logged_paths() {
    let (_d, idx) = open();
    let s = "Fx";
    idx.commit(s, &[up(file("a", &[(1, 1)], 1)), up(file("b", &[(2, 1)], 1))], &[])
        .unwrap();
    idx.commit(s, &[up(file("a", &[(3, 1)], 1))], &[]).unwrap();
    idx.commit(s, &[up(file("c", &[(3, 1)], 1))], &[b"b".to_vec()]).unwrap();
    let paths = |g| idx.changes_since(s, g).unwrap();
    assert_eq!(paths(0), Some(vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]));
    assert_eq!(paths(1), Some(vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]));
    assert_eq!(paths(2), Some(vec![b"b".to_vec(), b"c".to_vec()]));
    assert_eq!(paths(3), Some(vec![]));
    assert_eq!(paths(4), None, "a generation this index never had");
    assert_eq!(idx.changes_since("Fother", 0).unwrap(), Some(vec![]));
}

#[test]
fn chunk_locator_follows_files_and_survives_deleting_one_holder() {
    let (_d, idx) = open();
    let s = "Fx";
    idx.commit(
        s,
        &[
            up(file("a", &[(1, 10), (2, 20), (1, 10)], 1)),
            up(file("b", &[(2, 20)], 1)),
        ],
        &[],
    )
    .unwrap();
    let loc = idx.locate_chunks(s, &[[1; 32], [2; 32], [9; 32]]).unwrap();
    assert_eq!(
        loc[0],
        Some(ChunkLocation {
            path: b"a".to_vec(),
            offset: 0
        })
    );
    assert!(loc[1].is_some());
    assert_eq!(loc[2], None);
    consistent(&idx, s);

    // a's chunk 2 goes away; b still holds it.
    idx.commit(s, &[up(file("a", &[(1, 10)], 2))], &[]).unwrap();
    assert_eq!(
        idx.locate_chunk(s, &[2; 32]).unwrap(),
        Some(ChunkLocation {
            path: b"b".to_vec(),
            offset: 0
        })
    );
    idx.commit(s, &[], &[b"b".to_vec()]).unwrap();
    assert_eq!(idx.locate_chunk(s, &[2; 32]).unwrap(), None);
    assert_eq!(idx.locate_chunk("Fnone", &[1; 32]).unwrap(), None);
    consistent(&idx, s);
}

#[test]
fn id_and_state_persist_across_reopen_and_a_second_opener_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("st");
    let (id, generation) = {
        let idx = Index::open(&state).unwrap();
        assert!(matches!(Index::open(&state), Err(IndexError::InUse { .. })));
        let o = idx.commit("Fx", &[up(dir("d"))], &[]).unwrap();
        (idx.id(), o.generation)
    };
    let idx = Index::open(&state).unwrap();
    assert_eq!((idx.id(), idx.generation("Fx").unwrap()), (id, generation));
    let other = Index::open(&tmp.path().join("other")).unwrap();
    assert_ne!(other.id(), id, "each index gets its own random id");
}

#[test]
fn entries_that_would_not_read_back_are_refused_and_nothing_is_written() {
    let (_d, idx) = open();
    let mut bad = file("ok", &[(1, 1)], 1);
    bad.path = b"../etc/passwd".to_vec();
    let err = idx
        .commit("Fx", &[up(file("fine", &[(1, 1)], 1)), up(bad)], &[])
        .unwrap_err();
    assert!(matches!(err, IndexError::InvalidEntry { .. }), "{err}");
    let mut link = dir("l");
    link.kind = EntryKind::HardLink;
    link.target = b"/abs".to_vec();
    assert!(idx.commit("Fx", &[up(link)], &[]).is_err());
    let mut sym = dir("s");
    sym.kind = EntryKind::Symlink;
    assert!(idx.commit("Fx", &[up(sym)], &[]).is_err(), "empty symlink target");
    let mut lying = file("f", &[(1, 10)], 1);
    lying.size = 11;
    assert!(
        idx.commit("Fx", &[up(lying)], &[]).is_err(),
        "size is not the sum of the chunks"
    );
    let mut modebits = dir("m");
    modebits.mode = 0o40755;
    assert!(idx.commit("Fx", &[up(modebits)], &[]).is_err(), "kind bits in the mode");
    let mut stray = dir("d2");
    stray.target = b"x".to_vec();
    assert!(
        idx.commit("Fx", &[up(stray)], &[]).is_err(),
        "a directory with a target would lose it"
    );
    assert!(idx.commit("Fx", &[], &[b"a//b".to_vec()]).is_err());
    assert_eq!(idx.info("Fx").unwrap(), SetInfo::default());
}

#[test]
fn log_is_trimmed_oldest_first_and_old_generations_become_unknown() {
    let (_d, idx) = open();
    let idx = idx.with_log_keep_min(1000);
    let s = "Fx";
    // Each commit logs 600 distinct paths (300 new, the previous 300
    // deleted); the budget is 1000 because the set stays at 300 entries.
    let batch = |g: u32| -> Vec<Vec<u8>> { (0..300).map(|i| format!("p{g}/{i}").into_bytes()).collect() };
    let mut prev: Vec<Vec<u8>> = vec![];
    for g in 0..5 {
        let ups: Vec<Upsert> = batch(g)
            .iter()
            .map(|p| up(dir(std::str::from_utf8(p).unwrap())))
            .collect();
        idx.commit(s, &ups, &prev).unwrap();
        prev = batch(g);
    }
    let info = idx.info(s).unwrap();
    assert_eq!(info.generation, 5);
    assert!(info.log_paths <= 1000, "{info:?}");
    assert_eq!(info.log_floor, 4, "{info:?}");
    assert_eq!(idx.changes_since(s, 3).unwrap(), None);
    assert_eq!(idx.changes_since(s, 4).unwrap().map(|v| v.len()), Some(600));
    consistent(&idx, s);
}

#[test]
fn fingerprints_round_trip() {
    let f = Fingerprint {
        dev: u64::MAX,
        ino: 7,
        size: 1 << 40,
        mtime_ns: -5,
        ctime_ns: i64::MAX,
    };
    let row = store::encode_row(&dir("d"), Some(&f));
    assert_eq!(store::row_fingerprint(&row), Some(f));
    assert_eq!(store::row_fingerprint(&store::encode_row(&dir("d"), None)), None);
    assert_eq!(Fingerprint::decode(&[]), None);
}

#[test]
fn an_acknowledgement_is_committed_with_the_entries_it_covers() {
    let dir = tempfile::tempdir().unwrap();
    let idx = Index::open_set(dir.path(), "Fx").unwrap();
    assert_eq!(idx.acked("Fx").unwrap(), None);
    let ack = Position {
        index: 0xfeed,
        generation: 7,
    };
    let out = idx
        .commit_with_ack("Fx", &[up(file("srv/a", &[(1, 10)], 1))], &[], Some(ack))
        .unwrap();
    assert_eq!(out.generation, 1);
    assert_eq!(idx.acked("Fx").unwrap(), Some(ack));
    // An acknowledgement alone (a no-change offer) is still recorded.
    let later = Position {
        index: 0xfeed,
        generation: 9,
    };
    idx.commit_with_ack("Fx", &[], &[], Some(later)).unwrap();
    assert_eq!(idx.acked("Fx").unwrap(), Some(later));
    assert_eq!(idx.generation("Fx").unwrap(), 1);
    idx.clear_ack("Fx").unwrap();
    assert_eq!(idx.acked("Fx").unwrap(), None);
    drop(idx);
    assert!(dir.path().join("sets/Fx.redb").exists());
    consistent(&Index::open_set(dir.path(), "Fx").unwrap(), "Fx");
}

#[test]
fn unmirrored_changes_are_those_after_the_last_point_in_step() {
    let (_d, idx) = open();
    let s = "Fx";
    // Never in step and no word from the peer: cannot be told.
    idx.commit(s, &[up(file("a", &[(1, 10)], 1))], &[]).unwrap();
    assert_eq!(idx.synced(s).unwrap(), None);
    assert_eq!(idx.unmirrored(s, None).unwrap(), None);
    // The peer says it applied generation 1 of ours: nothing unmirrored.
    assert_eq!(idx.unmirrored(s, Some(1)).unwrap(), Some(vec![]));

    // Applying a complete offer records our resulting generation (2).
    let ack = Position {
        index: 9,
        generation: 4,
    };
    idx.commit_with_ack(s, &[up(file("b", &[(2, 10)], 1))], &[], Some(ack))
        .unwrap();
    assert_eq!(idx.synced(s).unwrap(), Some(2));
    assert_eq!(idx.unmirrored(s, None).unwrap(), Some(vec![]));

    // Own writes after that point are unmirrored, whatever older
    // acknowledgement the peer reports; a newer one covers them.
    idx.commit(s, &[up(file("c", &[(3, 10)], 1))], &[b"a".to_vec()])
        .unwrap();
    let mine = Some(vec![b"a".to_vec(), b"c".to_vec()]);
    assert_eq!(idx.unmirrored(s, None).unwrap(), mine);
    assert_eq!(idx.unmirrored(s, Some(1)).unwrap(), mine);
    assert_eq!(idx.unmirrored(s, Some(3)).unwrap(), Some(vec![]));

    // mark_synced never moves the mark back.
    idx.mark_synced(s, 3).unwrap();
    idx.mark_synced(s, 1).unwrap();
    assert_eq!(idx.synced(s).unwrap(), Some(3));
    assert_eq!(idx.unmirrored(s, None).unwrap(), Some(vec![]));
    consistent(&idx, s);
}

#[test]
fn a_changed_file_moves_only_the_locator_rows_that_changed() {
    let (_d, idx) = open();
    let s = "Fx";
    idx.commit(s, &[up(file("a", &[(1, 10), (2, 20), (3, 30)], 1))], &[])
        .unwrap();
    // An insertion before chunk 3: chunk 1 stays at 0, 2 is replaced by 4,
    // 3 moves from 30 to 35, and 5 is appended.
    idx.commit(s, &[up(file("a", &[(1, 10), (4, 25), (3, 30), (5, 5)], 2))], &[])
        .unwrap();
    consistent(&idx, s);
    let at = |h: u8| idx.locate_chunk(s, &[h; 32]).unwrap().map(|l| l.offset);
    assert_eq!(
        (at(1), at(2), at(3), at(4), at(5)),
        (Some(0), None, Some(35), Some(10), Some(65))
    );
    // Into a directory and back: no row is left behind.
    idx.commit(s, &[up(dir("a"))], &[]).unwrap();
    consistent(&idx, s);
    assert_eq!(at(1), None);
}

#[test]
fn an_entry_stored_before_entries_had_attributes_still_reads() {
    let mut e = dir("a");
    // A row as an index from before protocol version 2 stored it.
    let mut w = hamirror_wire::Writer::new();
    e.encode_body_v1(&mut w);
    assert_eq!(decode_entry(b"a", &w.buf).unwrap(), e);
    e.xattrs = vec![hamirror_wire::Xattr {
        name: b"user.x".to_vec(),
        value: b"1".to_vec(),
    }];
    let mut w = hamirror_wire::Writer::new();
    e.encode_body(&mut w);
    assert_eq!(decode_entry(b"a", &w.buf).unwrap(), e);
    assert!(decode_entry(b"a", &w.buf[..w.buf.len() - 1]).is_err());
}

/// Writes what format 1 stored for `entries` of set `Fx` (two commits, an
/// acknowledgement, a synced mark, a guard record), as that format's code
/// laid it out.
fn write_format_1(path: &std::path::Path, entries: &[Entry], fp: &Fingerprint) {
    use redb::{MultimapTableDefinition, TableDefinition};
    type B = &'static [u8];
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut meta = txn.open_table(META).unwrap();
        meta.insert("format", &1u32.to_le_bytes()[..]).unwrap();
        meta.insert("id", &7u128.to_le_bytes()[..]).unwrap();
        let mut e = txn.open_table(TableDefinition::<B, B>::new("Fx/entries")).unwrap();
        let mut st = txn.open_table(TableDefinition::<B, B>::new("Fx/stat")).unwrap();
        let mut ch = txn
            .open_multimap_table(MultimapTableDefinition::<B, B>::new("Fx/chunks"))
            .unwrap();
        for (i, en) in entries.iter().enumerate() {
            let mut w = hamirror_wire::Writer::new();
            en.encode_body(&mut w);
            e.insert(&en.path[..], &w.buf[..]).unwrap();
            let mut raw = vec![];
            if i % 2 == 0 {
                for v in [fp.dev, fp.ino, fp.size, fp.mtime_ns as u64, fp.ctime_ns as u64] {
                    raw.extend_from_slice(&v.to_le_bytes());
                }
            }
            st.insert(&en.path[..], &raw[..]).unwrap();
            let mut off = 0u64;
            for c in &en.chunks {
                let mut v = off.to_be_bytes().to_vec();
                v.extend_from_slice(&en.path);
                ch.insert(&c.hash[..], &v[..]).unwrap();
                off += u64::from(c.len);
            }
        }
        let mut log = txn.open_table(TableDefinition::<u64, B>::new("Fx/log")).unwrap();
        for (g, part) in [(1u64, &entries[..1]), (2, &entries[1..])] {
            let mut w = hamirror_wire::Writer::new();
            w.varint(part.len() as u64);
            for en in part {
                w.bytes(&en.path);
            }
            log.insert(g, &w.buf[..]).unwrap();
        }
        let info = SetInfo {
            generation: 2,
            log_floor: 0,
            log_paths: entries.len() as u64,
            entries: entries.len() as u64,
        };
        txn.open_table(SETS).unwrap().insert("Fx", &info.encode()[..]).unwrap();
        let ack = Position {
            index: 99,
            generation: 5,
        };
        txn.open_table(ACKS).unwrap().insert("Fx", &ack.encode()[..]).unwrap();
        txn.open_table(SYNCED).unwrap().insert("Fx", 2).unwrap();
        txn.open_table(GUARD).unwrap().insert("Fx", &b"count"[..]).unwrap();
        txn.open_table(XATTRS).unwrap().insert("Fx", "user").unwrap();
    }
    txn.commit().unwrap();
}

/// Opens an index of an older format written for `entries` by
/// [`write_format_1`] (and converted to format 2 by that format's code
/// when `format` is 2) and checks the conversion kept everything.
fn converted_keeps_everything(format: u32) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("old.redb");
    let fp = Fingerprint {
        dev: 2049,
        ino: 77,
        size: 30,
        mtime_ns: 1_700_000_000_000_000_001,
        ctime_ns: 1_700_000_000_500_000_000,
    };
    let entries = vec![
        dir("d"),
        file("d.x", &[(4, 10)], 4),
        file("d/a", &[(1, 10), (2, 20)], 5),
        file("d/b", &[(2, 20)], 6),
        file("d/c", &[(3, 10), (3, 10)], 7),
        file("top", &[(5, 10)], 8),
    ];
    write_format_1(&path, &entries, &fp);
    if format == 2 {
        let db = Database::create(&path).unwrap();
        migrate::from_format_1(&db).unwrap();
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        assert_eq!(meta.get("format").unwrap().unwrap().value(), &2u32.to_le_bytes()[..]);
        assert!(txn.open_table(TableDefinition::<&[u8], &[u8]>::new("Fx/files")).is_ok());
    }

    let idx = Index::open_file(&path).unwrap();
    assert_eq!(idx.id(), 7);
    let got: Vec<Entry> = idx.entries("Fx").unwrap().map(Result::unwrap).collect();
    assert_eq!(got, entries);
    let fps = idx.fingerprints("Fx").unwrap();
    assert_eq!(fps.len(), entries.len());
    assert_eq!(fps[&b"d"[..]], Some(fp));
    assert_eq!(fps[&b"d.x"[..]], None);
    assert_eq!(fps[&b"d/a"[..]], Some(fp));
    assert_eq!(fps[&b"d/b"[..]], None);
    assert_eq!(idx.generation("Fx").unwrap(), 2);
    let n = entries.len();
    assert_eq!(idx.changes_since("Fx", 1).unwrap().unwrap().len(), n - 1);
    assert_eq!(idx.changes_since("Fx", 0).unwrap().unwrap().len(), n);
    assert_eq!(
        idx.acked("Fx").unwrap(),
        Some(Position {
            index: 99,
            generation: 5
        })
    );
    assert_eq!(idx.synced("Fx").unwrap(), Some(2));
    assert_eq!(idx.guard_record("Fx").unwrap().as_deref(), Some(&b"count"[..]));
    assert_eq!(idx.xattr_namespaces("Fx").unwrap().as_deref(), Some("user"));
    let loc = idx.locate_chunk("Fx", &[2; 32]).unwrap().unwrap();
    assert!(
        loc == ChunkLocation {
            path: b"d/a".to_vec(),
            offset: 10
        } || loc
            == ChunkLocation {
                path: b"d/b".to_vec(),
                offset: 0
            }
    );
    assert_eq!(
        idx.locate_chunk("Fx", &[5; 32]).unwrap(),
        Some(ChunkLocation {
            path: b"top".to_vec(),
            offset: 0
        })
    );
    assert_eq!(idx.locate_chunk("Fx", &[9; 32]).unwrap(), None);
    consistent(&idx, "Fx");
    // The next commit of the same entries changes nothing.
    let ups: Vec<Upsert> = entries.iter().cloned().map(up).collect();
    assert!(!idx.commit("Fx", &ups, &[]).unwrap().changed_any());
    drop(idx);
    // Converted once: reopening finds the current format, no old table.
    let idx = Index::open_file(&path).unwrap();
    assert_eq!(idx.entries("Fx").unwrap().count(), n);
    let db = idx.db();
    let txn = db.begin_read().unwrap();
    assert!(
        txn.open_table(TableDefinition::<&[u8], &[u8]>::new("Fx/files"))
            .is_err()
    );
    let meta = txn.open_table(META).unwrap();
    assert_eq!(meta.get("format").unwrap().unwrap().value(), &FORMAT.to_le_bytes()[..]);
}

#[test]
fn a_format_1_index_is_converted_keeping_entries_fingerprints_log_and_acknowledgements() {
    converted_keeps_everything(1);
}

#[test]
fn a_format_2_index_is_converted_keeping_entries_fingerprints_log_and_acknowledgements() {
    converted_keeps_everything(2);
}

#[test]
fn entries_come_back_in_path_byte_order_across_directories() {
    let (_d, idx) = open();
    // Names that sort before, at and after `name/` in byte order, a
    // directory whose ancestors have no entry, and top-level files.
    let mut paths = vec![
        "a", "a.txt", "a/b", "a/b.txt", "a/b/c", "a/b/c/d", "a/b0", "a0", "b/x/y", "b/x/y.z", "b-", "z",
    ];
    let ups: Vec<Upsert> = paths.iter().rev().map(|p| up(file(p, &[(1, 1)], 1))).collect();
    idx.commit("S", &ups, &[]).unwrap();
    paths.sort_unstable();
    let got: Vec<String> = idx
        .entries("S")
        .unwrap()
        .map(|e| String::from_utf8(e.unwrap().path).unwrap())
        .collect();
    assert_eq!(got, paths);
    // Deleting every file of a directory gives its number back.
    idx.commit("S", &[], &[b"a/b/c/d".to_vec(), b"b/x/y".to_vec(), b"b/x/y.z".to_vec()])
        .unwrap();
    consistent(&idx, "S");
    let db = idx.db();
    let txn = db.begin_read().unwrap();
    let names = SetTables::new("S");
    let dirs: Vec<Vec<u8>> = txn
        .open_table(names.dirs())
        .unwrap()
        .range::<&[u8]>(..)
        .unwrap()
        .map(|r| r.unwrap().0.value().to_vec())
        .collect();
    assert_eq!(dirs, vec![b"".to_vec(), b"a".to_vec(), b"a/b".to_vec()]);
    drop(txn);
    drop(db);
    assert_eq!(idx.entry("S", b"a/b/c").unwrap().unwrap().path, b"a/b/c");
    assert_eq!(idx.entry("S", b"b/x/y").unwrap(), None);
    assert_eq!(idx.fingerprints("S").unwrap().len(), paths.len() - 3);
}

#[test]
fn a_rewritten_index_settles_within_twice_its_live_size() {
    // 20 rounds rewriting every row: each commit copies every page it
    // touches, and reuses the pages the one before freed. Returns the disk
    // bytes after each round, and the bytes once compacted from scratch.
    let run = |min: u64| {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("i.redb");
        let idx = Index::open_file(&path).unwrap().with_compact_min(min);
        let mut sizes = vec![];
        for round in 1..=20 {
            let ups: Vec<Upsert> = (0..2000)
                .map(|i| up(file(&format!("d{}/f{i}", i % 30), &[(round as u8, 100 + i)], round)))
                .collect();
            idx.commit("Fx", &ups, &[]).unwrap();
            sizes.push(migrate::disk_bytes(&path));
        }
        idx.compacted_len.store(0, std::sync::atomic::Ordering::Relaxed);
        let idx = idx.with_compact_min(0);
        idx.compact_if_grown();
        consistent(&idx, "Fx");
        (sizes, migrate::disk_bytes(&path))
    };
    let (grown, live) = run(u64::MAX);
    let (kept, live2) = run(0);
    // The same rows compact to the same size, give or take what the file
    // system reports for blocks not yet written back.
    assert!(live.abs_diff(live2) * 10 <= live, "compacted {live} and {live2} bytes");
    let live = live.max(live2);
    eprintln!("sizes without compaction {grown:?}, with {kept:?}, {live} live");
    // Left alone it stops growing at about twice its live pages; compacted
    // when it passes twice, it stays under that.
    let (mid, end) = (grown[9], grown[19]);
    assert!(
        end * 10 <= mid * 11,
        "still growing: {mid} bytes after 10 rewrites, {end} after 20"
    );
    assert!(
        end <= live * 2 + (64 << 10),
        "{end} bytes after 20 rewrites, {live} live"
    );
    let most = kept.iter().max().unwrap();
    assert!(
        *most <= live * 2 + (64 << 10),
        "{most} bytes at most with compaction, {live} live"
    );
    assert!(kept.iter().any(|k| *k * 3 < live * 4), "never compacted: {kept:?}");
}

#[test]
fn an_index_with_more_free_pages_than_live_ones_is_compacted() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("i.redb");
    let idx = Index::open_file(&path).unwrap().with_compact_min(0);
    let rows = |n: usize, tag: u8| -> Vec<Upsert> {
        (0..n)
            .map(|i| up(file(&format!("d{}/f{i}", i % 30), &[(tag, 100 + i as u32)], 1)))
            .collect()
    };
    // The first commit compacts (never compacted) and sets the baseline.
    idx.commit("Fx", &rows(3000, 1), &[]).unwrap();
    // Recorded right after the compaction (the record itself adds a page
    // or two).
    let near = |recorded: u64| {
        let now = migrate::disk_bytes(&path);
        assert!(
            recorded <= now && now <= recorded + (64 << 10),
            "{recorded} recorded, {now} now"
        );
    };
    let base = idx.compacted_len.load(std::sync::atomic::Ordering::Relaxed);
    near(base);
    // Rewriting every row grows the file, but not to twice: left alone.
    idx.commit("Fx", &rows(3000, 2), &[]).unwrap();
    let once = migrate::disk_bytes(&path);
    assert!(once > base && once <= base * 2, "{base} -> {once} bytes");
    assert_eq!(idx.compacted_len.load(std::sync::atomic::Ordering::Relaxed), base);
    // Four times the rows: past twice, compacted, the new size recorded.
    idx.commit("Fx", &rows(12_000, 3), &[]).unwrap();
    let after = idx.compacted_len.load(std::sync::atomic::Ordering::Relaxed);
    assert!(after > base * 2, "{base} -> {after} bytes");
    near(after);
    consistent(&idx, "Fx");
}

#[test]
fn a_receivers_commit_leaves_compaction_to_after_its_answer() {
    // The receiver commits with its acknowledgement, answers the sender,
    // and only then compacts: `commit_with_ack` must not compact, and
    // `compact_if_grown` must do what `commit` does.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("i.redb");
    let idx = Index::open_file(&path).unwrap().with_compact_min(0);
    let ack = |g| {
        Some(crate::index::Position {
            index: 7,
            generation: g,
        })
    };
    for round in 1..=12u64 {
        let ups: Vec<Upsert> = (0..2000)
            .map(|i| {
                up(file(
                    &format!("d{}/f{i}", i % 30),
                    &[(round as u8, 100 + i)],
                    round as i64,
                ))
            })
            .collect();
        idx.commit_with_ack("Fx", &ups, &[], ack(round)).unwrap();
    }
    let grown = migrate::disk_bytes(&path);
    idx.compact_if_grown();
    let compacted = migrate::disk_bytes(&path);
    consistent(&idx, "Fx");
    assert_eq!(idx.acked("Fx").unwrap(), ack(12));
    eprintln!("12 acknowledged commits: {grown} bytes, compacted after: {compacted}");
    assert!(
        compacted * 3 < grown * 2,
        "grown to {grown} bytes, {compacted} after compact_if_grown"
    );
    // Nothing grew since: a second call leaves the file as it is.
    idx.compact_if_grown();
    assert_eq!(migrate::disk_bytes(&path), compacted);
}
