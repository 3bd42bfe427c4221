//! Applier tests on a real temporary directory: build from received and
//! reused chunks, resume after an interruption, refuse hostile paths.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use hamirror_wire::entry::file_hash;
use hamirror_wire::{ChunkRef, Entry, EntryKind, Hash};

use super::*;
use crate::config::{ChunkParams, MirrorSet};
use crate::noise::noise;
use crate::plan::{Location, Replica, plan};

fn set() -> MirrorSet {
    MirrorSet::for_tests("Fx", "/c/Fx".into(), &[("/srv", true)], ChunkParams::default())
}

fn chunks_of(data: &[&[u8]]) -> Vec<ChunkRef> {
    data.iter()
        .map(|d| ChunkRef {
            hash: *blake3::hash(d).as_bytes(),
            len: d.len() as u32,
        })
        .collect()
}

fn file(path: &str, data: &[&[u8]], mtime_ns: i64) -> Entry {
    let chunks = chunks_of(data);
    Entry {
        path: path.as_bytes().to_vec(),
        kind: EntryKind::File,
        mode: 0o640,
        uid: 0,
        gid: 0,
        mtime_ns,
        size: chunks.iter().map(|c| u64::from(c.len)).sum(),
        file_hash: file_hash(&chunks),
        chunks,
        target: vec![],
        xattrs: vec![],
    }
}

fn dir(path: &str, mtime_ns: i64) -> Entry {
    Entry {
        kind: EntryKind::Dir,
        size: 0,
        chunks: vec![],
        file_hash: [0; 32],
        mode: 0o755,
        ..file(path, &[], mtime_ns)
    }
}

#[derive(Default)]
struct Fake(HashMap<Vec<u8>, Entry>, HashMap<Hash, Location>);
impl Replica for Fake {
    fn current(&self, p: &[u8]) -> Option<Entry> {
        self.0.get(p).cloned()
    }
    fn locate(&self, h: &Hash) -> Option<Location> {
        self.1.get(h).cloned()
    }
}

fn uid() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() }
}

#[test]
fn builds_files_from_received_and_reused_chunks_with_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("root");
    std::fs::create_dir_all(base.join("srv")).unwrap();
    std::fs::write(base.join("srv/old"), b"hello ").unwrap();
    let mut replica = Fake::default();
    replica.1.insert(
        *blake3::hash(b"hello ").as_bytes(),
        Location {
            path: b"srv/old".to_vec(),
            offset: 0,
        },
    );
    replica.0.insert(b"srv/old".to_vec(), file("srv/old", &[b"hello "], 1));

    let mut f = file("srv/sub/new", &[b"hello ", b"world"], 1_600_000_000_123_456_789);
    f.uid = uid();
    let mut d = dir("srv/sub", 1_500_000_000_000_000_007);
    d.uid = uid();
    let link = Entry {
        kind: EntryKind::Symlink,
        target: b"new".to_vec(),
        ..dir("srv/sub/ln", 1_400_000_000_000_000_000)
    };
    let p = plan(&[d, f.clone(), link], &[b"srv/old".to_vec()], &replica, &HashMap::new());
    let dest = Dest::new(&base, &set());
    let journal = Journal::open(&tmp.path().join("state/journal/Fx")).unwrap();
    let mut a = Applier::prepare(dest, p, journal).unwrap();
    assert_eq!(a.need(), &[*blake3::hash(b"world").as_bytes()]);
    assert!(matches!(a.deliver(&[9; 32], b"junk"), Err(ApplyError::BadChunk { .. })));
    a.deliver(blake3::hash(b"world").as_bytes(), b"world").unwrap();
    let report = a.finish().unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!((report.received_bytes, report.reused_bytes), (5, 6));

    let new = base.join("srv/sub/new");
    assert_eq!(std::fs::read(&new).unwrap(), b"hello world");
    let m = std::fs::metadata(&new).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o640);
    assert_eq!(m.mtime() * 1_000_000_000 + m.mtime_nsec(), 1_600_000_000_123_456_789);
    let dm = std::fs::metadata(base.join("srv/sub")).unwrap();
    assert_eq!(
        dm.mtime() * 1_000_000_000 + dm.mtime_nsec(),
        1_500_000_000_000_000_007,
        "dir mtime set last"
    );
    assert_eq!(
        std::fs::read_link(base.join("srv/sub/ln")).unwrap(),
        std::path::Path::new("new")
    );
    assert!(!base.join("srv/old").exists());
    let names: Vec<_> = std::fs::read_dir(base.join("srv/sub"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "no temp files left: {names:?}");
}

/// A run building `srv/big` (aaaa bbbb cccc) under `tmp/root`, its
/// journal in `tmp/journal`, interrupted with only aaaa and cccc
/// received. Returns the root, the entry and a starter of the next run.
fn interrupted_big(
    tmp: &std::path::Path,
) -> (
    std::path::PathBuf,
    Entry,
    impl Fn(&[Entry]) -> Result<Applier, ApplyError>,
) {
    let base = tmp.join("root");
    std::fs::create_dir_all(base.join("srv")).unwrap();
    let parts: [&[u8]; 3] = [b"aaaa", b"bbbb", b"cccc"];
    let f = file("srv/big", &parts, 1);
    let jpath = tmp.join("journal");
    let root = base.clone();
    let start = move |entries: &[Entry]| {
        let p = plan(entries, &[], &Fake::default(), &HashMap::new());
        Applier::prepare(Dest::new(&root, &set()), p, Journal::open(&jpath).unwrap())
    };
    let mut a = start(std::slice::from_ref(&f)).unwrap();
    assert_eq!(a.need().len(), 3);
    a.deliver(blake3::hash(b"aaaa").as_bytes(), b"aaaa").unwrap();
    a.deliver(blake3::hash(b"cccc").as_bytes(), b"cccc").unwrap();
    drop(a); // the connection died here
    (base, f, start)
}

#[test]
fn an_interrupted_build_resumes_without_needing_received_chunks_again() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, f, start) = interrupted_big(tmp.path());
    assert!(!base.join("srv/big").exists(), "no partial file under the real name");
    let mut a = start(std::slice::from_ref(&f)).unwrap();
    assert_eq!(a.need(), &[*blake3::hash(b"bbbb").as_bytes()]);
    a.deliver(blake3::hash(b"bbbb").as_bytes(), b"bbbb").unwrap();
    let r = a.finish().unwrap();
    assert_eq!(r.resumed_bytes, 8);
    assert_eq!(std::fs::read(base.join("srv/big")).unwrap(), b"aaaabbbbcccc");
    assert_eq!(std::fs::read_dir(base.join("srv")).unwrap().count(), 1);
}

/// A run refused before it made anything of its own (its first window
/// fails the path checks) leaves an interrupted run's temp files and
/// journal as they were: the next run still resumes from them.
#[test]
fn a_refused_first_window_leaves_an_earlier_runs_temp_files_for_the_next_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, f, start) = interrupted_big(tmp.path());
    let hostile = [file("srv/ok", &[b"x"], 1), file("etc/passwd", &[b"evil"], 1)];
    match start(&hostile) {
        Err(ApplyError::UnsafePath { .. }) => {}
        other => panic!("a path outside the set was let through: {:?}", other.map(|_| ())),
    }
    let names: Vec<_> = std::fs::read_dir(base.join("srv"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 1, "the interrupted run's temp file is kept: {names:?}");
    let mut a = start(std::slice::from_ref(&f)).unwrap();
    assert_eq!(a.need(), &[*blake3::hash(b"bbbb").as_bytes()], "resumed");
    a.deliver(blake3::hash(b"bbbb").as_bytes(), b"bbbb").unwrap();
    let r = a.finish().unwrap();
    assert_eq!(r.resumed_bytes, 8);
    assert_eq!(std::fs::read(base.join("srv/big")).unwrap(), b"aaaabbbbcccc");
}

#[test]
fn a_hostile_offer_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("root");
    std::fs::create_dir_all(base.join("srv")).unwrap();
    let symlink = |path: &str, target: &str| Entry {
        kind: EntryKind::Symlink,
        target: target.as_bytes().to_vec(),
        ..dir(path, 1)
    };
    let offers = [
        (
            vec![file("srv/ok", &[b"x"], 1), file("etc/passwd", &[b"evil"], 1)],
            "outside",
        ),
        // A symlink and a path through it in one offer.
        (
            vec![symlink("srv/evil", "/etc"), file("srv/evil/passwd", &[b"evil"], 1)],
            "not a directory",
        ),
        (
            vec![dir("srv/d", 1), symlink("srv/d/e", "/"), dir("srv/d/e/f", 1)],
            "not a directory",
        ),
        // The root itself replaced by a symlink.
        (vec![symlink("srv", "/etc"), file("srv/ok", &[b"x"], 1)], "root"),
    ];
    for (entries, why) in offers {
        let p = plan(&entries, &[], &Fake::default(), &HashMap::new());
        let err = Applier::prepare(
            Dest::new(&base, &set()),
            p,
            Journal::open(&tmp.path().join("j")).unwrap(),
        );
        match err {
            Err(ApplyError::UnsafePath { why: w, .. }) => assert!(w.contains(why), "{w}"),
            other => panic!("{why}: {:?}", other.map(|_| ())),
        }
    }
    assert_eq!(
        std::fs::read_dir(base.join("srv")).unwrap().count(),
        0,
        "nothing created"
    );
}

#[test]
fn a_symlink_the_replica_has_below_a_root_is_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(base.join("srv")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(outside.join("victim"), b"keep").unwrap();
    // A local user swapped srv/d (a directory of the set) for a symlink.
    std::os::unix::fs::symlink(&outside, base.join("srv/d")).unwrap();
    let mut replica = Fake::default();
    replica.0.insert(b"srv/d".to_vec(), dir("srv/d", 1));
    replica
        .0
        .insert(b"srv/d/victim".to_vec(), file("srv/d/victim", &[b"keep"], 1));
    let mut gone = file("srv/d/victim", &[b"keep"], 1);
    gone.mode = 0o777;
    let p = plan(
        &[file("srv/ok", &[b"x"], 1), file("srv/d/new", &[b"y"], 1), gone],
        &[b"srv/d/old".to_vec()],
        &replica,
        &HashMap::new(),
    );
    let mut a = Applier::prepare(
        Dest::new(&base, &set()),
        p,
        Journal::open(&tmp.path().join("j")).unwrap(),
    )
    .unwrap();
    for h in a.take_need() {
        let data: &[u8] = if h == *blake3::hash(b"x").as_bytes() {
            b"x"
        } else {
            b"y"
        };
        a.deliver(&h, data).unwrap();
    }
    let report = a.finish().unwrap();
    assert_eq!(std::fs::read(base.join("srv/ok")).unwrap(), b"x");
    let failed: Vec<_> = report.failures.iter().map(|f| f.path.as_slice()).collect();
    assert!(failed.contains(&&b"srv/d/new"[..]), "{failed:?}");
    assert!(failed.contains(&&b"srv/d/victim"[..]), "{failed:?}");
    assert!(
        report.failures.iter().all(|f| f.reason.contains("symlink")),
        "{:?}",
        report.failures
    );
    let names: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["victim"], "nothing written outside");
    assert_eq!(std::fs::metadata(&outside).unwrap().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(outside.join("victim")).unwrap().mode() & 0o777, 0o644);
}

/// A replica holding `old` at srv/f, and an applier prepared for `new` at
/// the same path (one chunk each).
fn delta_case(tmp: &std::path::Path, old: &[u8], new: &[u8]) -> Applier {
    let base = tmp.join("root");
    std::fs::create_dir_all(base.join("srv")).unwrap();
    std::fs::write(base.join("srv/f"), old).unwrap();
    let mut replica = Fake::default();
    replica.0.insert(b"srv/f".to_vec(), file("srv/f", &[old], 1));
    let p = plan(&[file("srv/f", &[new], 2)], &[], &replica, &HashMap::new());
    Applier::prepare(Dest::new(&base, &set()), p, Journal::open(&tmp.join("j")).unwrap()).unwrap()
}

#[test]
fn a_chunk_of_a_changed_file_is_asked_for_as_a_delta_and_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let old = noise(1, 20_000);
    let mut new = old.clone();
    new[5000..5100].copy_from_slice(&noise(2, 100));
    let mut a = delta_case(tmp.path(), &old, &new);
    assert!(a.need().is_empty(), "asked for as a delta instead");
    let reqs = a.take_delta_requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].hash, *blake3::hash(&new).as_bytes());
    assert_eq!(a.need_bytes(), new.len() as u64);
    let d = crate::delta::diff(&new, &reqs[0].signature);
    assert!(d.literals.len() < 1000, "{}", d.literals.len());
    a.deliver_delta(&reqs[0].hash, new.len() as u32, &d.ops, &d.literals)
        .unwrap();
    let r = a.finish().unwrap();
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert_eq!(std::fs::read(tmp.path().join("root/srv/f")).unwrap(), new);
}

#[test]
fn a_delta_that_does_not_fit_its_base_or_hash_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let old = noise(3, 20_000);
    let mut new = old.clone();
    new[0] ^= 1;
    let hash = *blake3::hash(&new).as_bytes();
    let out_of_range = [DeltaOp::Copy { block: 1000, count: 1 }];
    let mut a = delta_case(&tmp.path().join("a"), &old, &new);
    let err = a.deliver_delta(&hash, new.len() as u32, &out_of_range, &[]);
    assert!(matches!(err, Err(ApplyError::BadDelta { .. })), "{err:?}");
    // Ops that fit but rebuild the old bytes, not the chunk asked for.
    let mut a = delta_case(&tmp.path().join("b"), &old, &new);
    let sig = &a.take_delta_requests()[0].signature;
    let d = crate::delta::diff(&old, sig);
    let err = a.deliver_delta(&hash, old.len() as u32, &d.ops, &d.literals);
    assert!(matches!(err, Err(ApplyError::BadChunk { .. })), "{err:?}");
    // A delta for a chunk that was not asked for as one.
    let err = a.deliver_delta(&[7; 32], 1, &[DeltaOp::Literal { len: 1 }], b"x");
    assert!(matches!(err, Err(ApplyError::Unexpected { .. })), "{err:?}");
}

#[test]
fn a_base_changed_on_disk_fails_only_its_file_and_a_whole_chunk_is_accepted_too() {
    let tmp = tempfile::tempdir().unwrap();
    let old = noise(4, 20_000);
    let mut new = old.clone();
    new.extend_from_slice(b"appended");
    let mut a = delta_case(tmp.path(), &old, &new);
    let reqs = a.take_delta_requests();
    let d = crate::delta::diff(&new, &reqs[0].signature);
    std::fs::write(tmp.path().join("root/srv/f"), noise(5, 20_000)).unwrap();
    a.deliver_delta(&reqs[0].hash, new.len() as u32, &d.ops, &d.literals)
        .unwrap();
    assert!(a.complete());
    let r = a.finish().unwrap();
    assert_eq!(r.failures.len(), 1);
    assert!(
        r.failures[0].reason.contains("old copy changed"),
        "{}",
        r.failures[0].reason
    );
    // The sender may answer a delta request with the whole chunk.
    let tmp = tempfile::tempdir().unwrap();
    let mut a = delta_case(tmp.path(), &old, &new);
    assert_eq!(a.take_delta_requests().len(), 1);
    a.deliver(blake3::hash(&new).as_bytes(), &new).unwrap();
    assert!(a.finish().unwrap().failures.is_empty());
    assert_eq!(std::fs::read(tmp.path().join("root/srv/f")).unwrap(), new);
}

#[test]
fn whole_chunks_are_asked_for_before_filling_and_a_changed_local_source_is_asked_for_too() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("root");
    std::fs::create_dir_all(base.join("srv")).unwrap();
    // The replica holds "keep" and "gone" in srv/old (so says the index).
    std::fs::write(base.join("srv/old"), b"keepgone").unwrap();
    let mut replica = Fake::default();
    for (piece, offset) in [(&b"keep"[..], 0), (&b"gone"[..], 4)] {
        let loc = Location {
            path: b"srv/old".to_vec(),
            offset,
        };
        replica.1.insert(*blake3::hash(piece).as_bytes(), loc);
    }
    replica
        .0
        .insert(b"srv/old".to_vec(), file("srv/old", &[b"keep", b"gone"], 1));
    let f = file("srv/new", &[b"keep", b"gone", b"sent"], 1);
    let p = plan(std::slice::from_ref(&f), &[], &replica, &HashMap::new());
    let mut a = Applier::start(
        Dest::new(&base, &set()),
        p,
        Journal::open(&tmp.path().join("j")).unwrap(),
    )
    .unwrap();
    // Only the chunk nobody holds is asked for before filling.
    assert_eq!(a.take_need_whole(), vec![*blake3::hash(b"sent").as_bytes()]);
    assert!(a.need().is_empty());
    // The replica changed since the index saw it: "gone" is gone.
    std::fs::write(base.join("srv/old"), b"keepGONE").unwrap();
    a.sign();
    a.copy_held().unwrap();
    assert_eq!(a.need(), &[*blake3::hash(b"gone").as_bytes()], "asked for after all");
    a.deliver(blake3::hash(b"sent").as_bytes(), b"sent").unwrap();
    assert!(!a.complete(), "still waiting for the changed piece");
    a.deliver(blake3::hash(b"gone").as_bytes(), b"gone").unwrap();
    assert!(a.complete());
    let r = a.finish().unwrap();
    assert_eq!(r.reused_bytes, 4);
    assert_eq!(r.received_bytes, 8);
    assert_eq!(std::fs::read(base.join("srv/new")).unwrap(), b"keepgonesent");
}

#[test]
fn every_temp_name_the_receiver_makes_is_recognised_and_ordinary_names_are_not() {
    let long = format!("srv/{}", "n".repeat(255));
    for path in ["srv/x", "srv/.hidden", "srv/a.hamirror-tmp", long.as_str(), "x"] {
        let t = temp_path(path.as_bytes(), &[7; 32]);
        assert!(is_temp_name(dest::split(&t).1), "{}", String::from_utf8_lossy(&t));
        assert!(dest::split(&t).1.len() <= 255, "fits a file name");
    }
    for name in [
        &b".notes.hamirror-tmp"[..],
        b"x.0123456789abcdef.hamirror-tmp",
        b".x.0123456789abcdeg.hamirror-tmp",
        b".x.0123456789ABCDEF.hamirror-tmp",
        b"..0123456789abcdef.hamirror-tmp",
    ] {
        assert!(!is_temp_name(name), "{}", String::from_utf8_lossy(name));
    }
}

#[test]
fn zero_blocks_are_left_as_holes_and_everything_reads_back_exactly() {
    use std::os::unix::fs::FileExt;
    let tmp = tempfile::tempdir().unwrap();
    let mut data = noise(9, 64 << 10);
    // Zero runs: one covering aligned blocks, one unaligned and short.
    data[8192..40000].fill(0);
    data[50000..52000].fill(0);
    for offset in [0u64, 1, 4095, 4096, 1 << 20] {
        let path = tmp.path().join(format!("f{offset}"));
        let f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        f.set_len(offset + data.len() as u64 + 8192).unwrap();
        write_sparse(&f, &data, offset).unwrap();
        write_sparse(&f, &[0u8; 8192], offset + data.len() as u64).unwrap();
        let mut back = vec![1u8; data.len() + 8192];
        f.read_exact_at(&mut back, offset).unwrap();
        assert_eq!(&back[..data.len()], &data[..], "offset {offset}");
        assert!(back[data.len()..].iter().all(|b| *b == 0));
        // The data touches at most 17 blocks; at least 6 whole ones are zeros.
        let allocated = f.metadata().unwrap().blocks() * 512;
        assert!(
            allocated <= (17 - 6) * 4096,
            "offset {offset}: {allocated} bytes allocated"
        );
    }
    assert!(is_zero(&[0; 33]) && !is_zero(&[0, 0, 1]) && is_zero(&[]));
}

#[test]
fn fifos_and_device_nodes_are_made_in_place_of_what_was_there_never_opened() {
    use std::os::unix::fs::FileTypeExt;
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("root");
    std::fs::create_dir_all(base.join("srv/was-dir/inside")).unwrap();
    std::fs::write(base.join("srv/was-file"), b"data").unwrap();
    let node = |path: &str, kind: EntryKind, target: &str| Entry {
        kind,
        target: target.as_bytes().to_vec(),
        mode: 0o604,
        uid: uid(),
        ..dir(path, 1_300_000_000_000_000_042)
    };
    let root = uid() == 0;
    let mut offered = vec![
        node("srv/pipe", EntryKind::Fifo, ""),
        node("srv/was-file", EntryKind::Fifo, ""),
        node("srv/was-dir", EntryKind::Fifo, ""),
        node("srv/null", EntryKind::CharDev, "1:3"),
    ];
    if root {
        offered.push(node("srv/loop", EntryKind::BlockDev, "7:200"));
    }
    let mut replica = Fake::default();
    replica
        .0
        .insert(b"srv/was-file".to_vec(), file("srv/was-file", &[b"data"], 1));
    replica.0.insert(b"srv/was-dir".to_vec(), dir("srv/was-dir", 1));
    let p = plan(&offered, &[], &replica, &HashMap::new());
    let journal = Journal::open(&tmp.path().join("state/journal/Fx")).unwrap();
    let a = Applier::prepare(Dest::new(&base, &set()), p, journal).unwrap();
    let report = a.finish().unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    for path in ["srv/pipe", "srv/was-file", "srv/was-dir"] {
        let m = std::fs::symlink_metadata(base.join(path)).unwrap();
        assert!(m.file_type().is_fifo(), "{path}");
        assert_eq!(m.mode() & 0o7777, 0o604);
        assert_eq!(m.mtime() * 1_000_000_000 + m.mtime_nsec(), 1_300_000_000_000_000_042);
    }
    let null = std::fs::symlink_metadata(base.join("srv/null"));
    if root {
        let m = null.unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!((libc::major(m.rdev()), libc::minor(m.rdev())), (1, 3));
        assert!(
            std::fs::symlink_metadata(base.join("srv/loop"))
                .unwrap()
                .file_type()
                .is_block_device()
        );
        assert_eq!(report.applied.len(), 5);
    } else {
        // No CAP_MKNOD: a warning for that path, the rest applied.
        assert!(null.is_err());
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        assert!(report.warnings[0].reason.contains("character device not created"));
        assert_eq!(report.applied.len(), 3);
    }
    let left: Vec<_> = std::fs::read_dir(base.join("srv"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), if root { 5 } else { 3 }, "no temp names left: {left:?}");
}

#[test]
fn a_batch_is_verified_whole_then_written_and_each_complete_file_gets_its_metadata_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("root");
    std::fs::create_dir_all(base.join("srv")).unwrap();
    let (a1, a2, b1) = (noise(1, 3000), noise(2, 2000), noise(3, 1000));
    let mut fa = file("srv/d/a", &[&a1, &a2], 1_600_000_000_000_000_001);
    let mut fb = file("srv/d/b", &[&b1], 1_600_000_000_000_000_002);
    let empty = file("srv/d/empty", &[], 1_600_000_000_000_000_003);
    (fa.uid, fb.uid) = (uid(), uid());
    let p = plan(
        &[dir("srv/d", 5), fa.clone(), fb.clone(), empty],
        &[],
        &Fake::default(),
        &HashMap::new(),
    );
    let mut a = Applier::prepare(
        Dest::new(&base, &set()),
        p,
        Journal::open(&tmp.path().join("j")).unwrap(),
    )
    .unwrap();
    let temp = |e: &Entry| base.join(String::from_utf8(temp_path(&e.path, &e.file_hash)).unwrap());
    // Temp files come with their first write: none yet.
    assert!(!temp(&fa).exists() && !temp(&fb).exists());
    let h = |d: &[u8]| *blake3::hash(d).as_bytes();
    // One bad chunk refuses the batch before anything is written.
    let err = a.deliver_many(&[(h(&a1), &a1[..]), (h(&b1), &a2[..])]);
    assert!(matches!(err, Err(ApplyError::BadChunk { .. })), "{err:?}");
    assert!(!temp(&fa).exists() && !temp(&fb).exists());
    // b complete, a half: b has its mode and mtime before finish, a not yet.
    a.deliver_many(&[(h(&a1), &a1[..]), (h(&b1), &b1[..])]).unwrap();
    let mb = std::fs::metadata(temp(&fb)).unwrap();
    assert_eq!((mb.mode() & 0o7777, mb.mtime_nsec()), (0o640, 2));
    let ma = std::fs::metadata(temp(&fa)).unwrap();
    assert_eq!(ma.len(), 5000);
    assert_eq!(ma.mode() & 0o7777, 0o600);
    a.deliver_many(&[(h(&a2), &a2[..])]).unwrap();
    let r = a.finish().unwrap();
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    let whole: Vec<u8> = [a1, a2].concat();
    assert_eq!(std::fs::read(base.join("srv/d/a")).unwrap(), whole);
    assert_eq!(std::fs::read(base.join("srv/d/b")).unwrap(), b1);
    // A file with nothing to receive is still created, by finish.
    let me = std::fs::metadata(base.join("srv/d/empty")).unwrap();
    assert_eq!((me.len(), me.mtime_nsec()), (0, 3));
    assert!(!temp(&fa).exists() && !temp(&fb).exists());
}

/// The paths of this process's open descriptors below `dir` whose file
/// was unlinked ("… (deleted)"), by their old name.
fn open_deleted_below(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .filter(|t| t.starts_with(&*dir.to_string_lossy()) && t.ends_with(" (deleted)"))
        .map(|t| {
            t[dir.to_string_lossy().len()..]
                .trim_end_matches(" (deleted)")
                .to_string()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn the_old_versions_a_pass_replaced_or_deleted_are_freed_when_the_caller_says() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("root");
    std::fs::create_dir_all(base.join("srv")).unwrap();
    let mut replica = Fake::default();
    for (name, data) in [("a", &b"old a"[..]), ("b", b"old b"), ("gone", b"old gone")] {
        std::fs::write(base.join("srv").join(name), data).unwrap();
        let path = format!("srv/{name}");
        replica.0.insert(path.clone().into_bytes(), file(&path, &[data], 1));
    }
    // b has a second name: replacing it frees nothing, so it is not held.
    std::fs::hard_link(base.join("srv/b"), base.join("srv/b2")).unwrap();
    let offered: Vec<Entry> = [("srv/a", &b"new a"[..]), ("srv/b", b"new b"), ("srv/c", b"new c")]
        .iter()
        .map(|(p, d)| Entry {
            uid: uid(),
            ..file(p, &[d], 2)
        })
        .collect();
    let p = plan(&offered, &[b"srv/gone".to_vec()], &replica, &HashMap::new());
    let journal = Journal::open(&tmp.path().join("state/journal/Fx")).unwrap();
    let mut a = Applier::prepare(Dest::new(&base, &set()), p, journal).unwrap();
    for d in [&b"new a"[..], b"new b", b"new c"] {
        a.deliver(blake3::hash(d).as_bytes(), d).unwrap();
    }
    let report = a.finish().unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.deleted, vec![b"srv/gone".to_vec()]);
    for (name, data) in [("a", &b"new a"[..]), ("b", b"new b"), ("c", b"new c")] {
        assert_eq!(std::fs::read(base.join("srv").join(name)).unwrap(), data);
    }
    assert_eq!(std::fs::read(base.join("srv/b2")).unwrap(), b"old b");
    assert!(!base.join("srv/gone").exists());
    // Gone from the tree, still open until the caller has answered.
    assert_eq!(report.retired.len(), 2);
    assert_eq!(open_deleted_below(&base), vec!["/srv/a", "/srv/gone"]);
    report.retired.release();
    assert_eq!(open_deleted_below(&base), Vec::<String>::new());
}
