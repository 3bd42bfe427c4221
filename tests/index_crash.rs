//! The index survives being killed mid-commit: a child process (this test
//! binary re-invoked to run the ignored `crash_child_commits_forever`)
//! commits to an index in a loop; the parent kills it with SIGKILL at
//! varying moments, reopens the index, and checks that it holds exactly
//! the state of the last completed commit: never a mix, never less than
//! what an earlier check already saw.
//!
//! Each commit (round r = generation + 1) rewrites every `f/i` with
//! `mtime = r` and new chunks, and moves the single `x/r-1/f` to `x/r/f`
//! (a directory numbered and one given back in every commit), so a
//! partial commit would show entries of two rounds, a missing or doubled
//! `x/*/f`, or tables that disagree (`Index::verify`). The child compacts the
//! file whenever it has grown to twice its compacted size (every other
//! commit here: each rewrites every row), so kills also land inside a
//! compaction (and inside the rewrite of a sparse table in key order that
//! precedes it).
//!
//! Creation too: a child creates index after index (`c/0.redb`,
//! `c/1.redb`, ...) and is killed at varying moments; every file at its
//! final name must then open, and so must the next one the child was
//! making (redb alone, killed between sizing a new file and writing its
//! magic number, left a file no later open accepted).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hamirror::index::{Fingerprint, Index, Upsert};
use hamirror_wire::entry::file_hash;
use hamirror_wire::{ChunkRef, Entry, EntryKind};

const CHILD_ENV: &str = "HAMIRROR_CRASH_CHILD_INDEX";
const CREATE_ENV: &str = "HAMIRROR_CRASH_CHILD_CREATE";
const FILES: u64 = 300;
const SET: &str = "Fcrash";

fn file(path: String, round: u64, i: u64) -> Upsert {
    let chunks: Vec<ChunkRef> = (0..3u64)
        .map(|j| ChunkRef {
            hash: *blake3::hash(format!("{round}/{i}/{j}").as_bytes()).as_bytes(),
            len: 1000 + j as u32,
        })
        .collect();
    Upsert {
        entry: Entry {
            path: path.into_bytes(),
            kind: EntryKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: round as i64,
            size: chunks.iter().map(|c| u64::from(c.len)).sum(),
            file_hash: file_hash(&chunks),
            chunks,
            target: vec![],
            xattrs: vec![],
        },
        stat: Some(Fingerprint {
            dev: 1,
            ino: i,
            size: 0,
            mtime_ns: round as i64,
            ctime_ns: round as i64,
        }),
    }
}

/// The child: commit round after round until killed.
#[test]
#[ignore = "run by index_survives_sigkill_at_random_moments in a child process"]
fn crash_child_commits_forever() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    // Compacting as soon as the file has doubled, however small (every
    // other commit): some kills land inside a compaction.
    let index = Index::open_file(Path::new(&path))
        .expect("child opens the index")
        .with_compact_min(0);
    loop {
        let round = index.generation(SET).expect("generation") + 1;
        let mut ups: Vec<Upsert> = (0..FILES).map(|i| file(format!("f/{i}"), round, i)).collect();
        ups.push(file(format!("x/{round}/f"), round, FILES));
        let gone = [format!("x/{}/f", round - 1).into_bytes()];
        let o = index.commit(SET, &ups, &gone).expect("commit");
        assert_eq!(o.generation, round);
    }
}

/// Checks the index holds exactly one complete round; returns it.
fn check(index: &Index) -> u64 {
    let problems = index.verify(SET).unwrap();
    assert!(problems.is_empty(), "inconsistent after SIGKILL: {problems:#?}");
    let g = index.generation(SET).unwrap();
    let entries: Vec<Entry> = index.entries(SET).unwrap().map(Result::unwrap).collect();
    if g == 0 {
        assert!(entries.is_empty());
        return 0;
    }
    assert_eq!(entries.len() as u64, FILES + 1, "generation {g}");
    for e in &entries {
        assert_eq!(
            e.mtime_ns,
            g as i64,
            "{} is from another round than {g}",
            String::from_utf8_lossy(&e.path)
        );
    }
    assert!(index.entry(SET, format!("x/{g}/f").as_bytes()).unwrap().is_some());
    if g > 1 {
        let changed = index
            .changes_since(SET, g - 1)
            .unwrap()
            .expect("last generation logged");
        assert_eq!(changed.len() as u64, FILES + 2, "f/*, x/{}/f and x/{g}/f", g - 1);
    }
    let first = file("f/0".into(), g, 0).entry.chunks[0].hash;
    assert!(index.locate_chunk(SET, &first).unwrap().is_some());
    g
}

#[test]
fn index_survives_sigkill_at_random_moments() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("index.redb");
    // Varying delays, jittered by the clock so each run hits new moments.
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    let mut last = 0;
    let mut kills = Vec::new();
    let started = Instant::now();
    for round in 0..16 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(30 + seed % 250);
        run_and_kill("crash_child_commits_forever", (CHILD_ENV, &path), delay);
        kills.push(delay);
        let index = Index::open_file(&path).unwrap_or_else(|e| panic!("reopen after kill {round}: {e}"));
        let g = check(&index);
        assert!(
            g >= last,
            "generation went back from {last} to {g}: a committed state was lost"
        );
        last = g;
    }
    assert!(
        last > 16,
        "the child made too little progress to test anything ({last} commits)"
    );
    eprintln!(
        "{} kills, {last} commits, {:?}; delays {kills:?}",
        kills.len(),
        started.elapsed()
    );
}

/// The child of the creation test: creates indexes until killed.
#[test]
#[ignore = "run by index_creation_survives_sigkill in a child process"]
fn crash_child_creates_forever() {
    let Some(dir) = std::env::var_os(CREATE_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    for i in 0.. {
        let index = Index::open_file(&dir.join(format!("{i}.redb"))).expect("child creates an index");
        index.set_xattr_namespaces(SET, &i.to_string()).expect("first commit");
    }
}

/// Spawns this test binary running `name` with `env`, kills it after
/// `delay`, and checks it was the kill that stopped it.
fn run_and_kill(name: &str, env: (&str, &Path), delay: Duration) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--ignored", "--nocapture", "--test-threads=1"])
        .env(env.0, env.1)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    // SAFETY: kill(2) on the pid of a child we have not yet reaped.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    assert_eq!(rc, 0);
    let status = child.wait().unwrap();
    assert!(status.code().is_none(), "child exited by itself: {status:?}");
}

#[test]
fn index_creation_survives_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    std::fs::create_dir(&dir).unwrap();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    let mut checked = 0usize;
    for round in 0..12 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        run_and_kill(
            "crash_child_creates_forever",
            (CREATE_ENV, &dir),
            Duration::from_millis(20 + seed % 200),
        );
        // Every index at its final name opens; the one the child was making
        // when killed is there complete or not at all (then it is created
        // now).
        let mut n = 0;
        while dir.join(format!("{n}.redb")).exists() {
            n += 1;
        }
        for i in 0..=n {
            let index = Index::open_file(&dir.join(format!("{i}.redb")))
                .unwrap_or_else(|e| panic!("round {round}: open {i}.redb after the kill: {e}"));
            assert!(index.verify(SET).unwrap().is_empty());
        }
        checked += n + 1;
        // Start the next round from an empty directory, so each kill lands
        // among creations again.
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
    }
    assert!(
        checked > 24,
        "the child created too few indexes to test anything ({checked})"
    );
    eprintln!("{checked} indexes opened after 12 kills during creation");
}
