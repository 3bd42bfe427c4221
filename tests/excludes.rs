//! Exclude rules in an F set (`- PATTERN`, `+ PATTERN`), through the real
//! binary: serv1 `sync`s (or `watch`es) Fsmbd to serv2's `serve` on
//! 127.0.0.1. What the rules exclude never reaches the replica, and what
//! the replica holds under an excluded name is never deleted there (rsync
//! without `--delete-excluded`). rsync itself, given the same rules as
//! `--filter`, is the oracle: it must see no difference — so our pattern
//! semantics are rsync's. Also: `verify` ignores excluded differences, a
//! newly excluded path is not a deletion for the mass-delete guard, the
//! watcher drops events (and adds no inotify watch) below excluded
//! directories, and `check` lists the rules and names bad ones by file and
//! line.

mod common;

use std::fs;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::pair::{Pair, rsync_differences_filtered, tree_differences};
use common::{stderr, stdout, write};

const ROOTS: &[&str] = &["srv/samba", "etc/samba", "var/lib/samba"];

/// The rules of these tests, as written in the F file and given to rsync.
const RULES: &[&str] = &[
    "+ keep.log",
    "- *.log",
    "- *.tmp",
    "- /var/lib/samba/cache/",
    "- lock/",
    "- **/*.swp",
    "- /srv/samba/scratch/***",
];

fn settle() {
    std::thread::sleep(Duration::from_millis(150));
}

fn with_rules(p: &Pair) {
    p.cfg.append("serv1/Fsmbd", &format!("{}\n", RULES.join("\n")));
}

/// rsync with the same rules sees nothing to do.
fn assert_oracle(p: &Pair) {
    let items = rsync_differences_filtered(&p.r1(), &p.r2(), ROOTS, RULES);
    assert!(
        items.trim().is_empty(),
        "rsync with the same filter rules sees differences:\n{items}"
    );
}

/// The paths (relative to the node roots) our own full comparison finds
/// different, sorted.
fn differing(p: &Pair) -> Vec<String> {
    let mut out: Vec<String> = ROOTS
        .iter()
        .flat_map(|r| {
            tree_differences(&p.src(r), &p.dst(r))
                .into_iter()
                .map(move |d| format!("{r}{}", d.split(':').next().unwrap_or("")))
        })
        .collect();
    out.sort();
    out
}

fn sync_ok(p: &Pair, extra: &[&str]) -> serde_json::Value {
    settle();
    let (v, code, err) = p.sync("Fsmbd", extra);
    assert_eq!(code, 0, "sync failed: {err}\n{v}\nserve log:\n{}", p.serve_log());
    v
}

fn populate(p: &Pair) {
    let s = |r: &str| p.src(r);
    write(&s("srv/samba/a"), b"a");
    write(&s("srv/samba/keep.log"), b"kept by + keep.log");
    write(&s("srv/samba/x.log"), b"excluded");
    write(&s("srv/samba/d/b.tmp"), b"excluded at depth");
    write(&s("srv/samba/d/c"), b"c");
    write(&s("srv/samba/d/lock/held"), b"below a lock/ directory");
    write(&s("srv/samba/lock"), b"a file named lock is not a directory: mirrored");
    write(&s("srv/samba/e/f/.g.swp"), b"excluded by **/*.swp");
    write(&s("srv/samba/scratch/s"), b"excluded by scratch/***");
    write(&s("srv/samba/cache/c"), b"not the anchored cache: mirrored");
    write(&s("var/lib/samba/cache/c"), b"excluded");
    write(&s("var/lib/samba/db"), b"db");
    write(&s("etc/samba/smb.conf"), b"[global]\n");
}

#[test]
fn excluded_paths_do_not_arrive_and_the_replicas_are_kept_like_rsyncs() {
    let mut p = Pair::new();
    with_rules(&p);
    populate(&p);
    // The replica already holds files under excluded names: kept.
    write(&p.dst("srv/samba/old.tmp"), b"replica's own");
    write(&p.dst("var/lib/samba/cache/r"), b"replica's own cache");
    write(&p.dst("srv/samba/d/lock/r"), b"replica's own lock");
    p.start_serve();
    sync_ok(&p, &[]);
    assert_oracle(&p);
    let expected = [
        "srv/samba/d/b.tmp",
        "srv/samba/d/lock",
        "srv/samba/d/lock/held",
        "srv/samba/d/lock/r",
        "srv/samba/e/f/.g.swp",
        "srv/samba/old.tmp",
        "srv/samba/scratch",
        "srv/samba/scratch/s",
        "srv/samba/x.log",
        "var/lib/samba/cache",
        "var/lib/samba/cache/c",
        "var/lib/samba/cache/r",
    ];
    // Our own comparison: only excluded paths differ (the replica's own
    // d/lock directory has other contents than the holder's).
    let diffs = differing(&p);
    assert_eq!(diffs, expected.map(str::to_string).to_vec(), "{diffs:#?}");
    assert!(p.dst("srv/samba/keep.log").exists() && p.dst("srv/samba/lock").is_file());
    assert!(p.dst("srv/samba/cache/c").exists());
    for kept in ["srv/samba/old.tmp", "var/lib/samba/cache/r", "srv/samba/d/lock/r"] {
        assert!(p.dst(kept).exists(), "{kept} was deleted on the replica");
    }

    // `sync --full` compares everything: still nothing excluded deleted.
    let v = sync_ok(&p, &["--full"]);
    assert_eq!(v["push"]["listing"], "full", "{v}");
    assert_oracle(&p);
    assert_eq!(differing(&p), expected.map(str::to_string).to_vec());

    // A directory deleted on the holder that holds an excluded file on
    // the replica stays there with that file (rsync: "cannot delete
    // non-empty directory"); its other contents go.
    write(&p.src("srv/samba/gone/f"), b"f");
    sync_ok(&p, &[]);
    write(&p.dst("srv/samba/gone/mine.tmp"), b"replica's own");
    fs::remove_dir_all(p.src("srv/samba/gone")).unwrap();
    sync_ok(&p, &[]);
    assert!(p.dst("srv/samba/gone/mine.tmp").exists());
    assert!(!p.dst("srv/samba/gone/f").exists());
    assert_oracle(&p);

    // A directory that became a file on the holder while the replica's
    // copy holds an excluded file: not replaced (the pass reports it and
    // exits 1, as rsync fails it), until that file is removed there.
    write(&p.src("srv/samba/t/f"), b"f");
    sync_ok(&p, &[]);
    write(&p.dst("srv/samba/t/mine.tmp"), b"replica's own");
    fs::remove_dir_all(p.src("srv/samba/t")).unwrap();
    write(&p.src("srv/samba/t"), b"now a file");
    settle();
    let (v, code, err) = p.sync("Fsmbd", &[]);
    assert_eq!(code, 1, "{v}\n{err}");
    assert!(err.contains("/srv/samba/t/mine.tmp, which the set excludes"), "{err}");
    assert!(p.dst("srv/samba/t/mine.tmp").exists());
    fs::remove_file(p.dst("srv/samba/t/mine.tmp")).unwrap();
    sync_ok(&p, &[]);
    assert_eq!(fs::read(p.dst("srv/samba/t")).unwrap(), b"now a file");
    assert_oracle(&p);

    // verify compares only what the set mirrors; the directory kept for
    // the replica's excluded file is a difference, with why no sync
    // removes it. Once that file goes, the next sync removes it.
    let out = p.run("serv1", &["verify", "Fsmbd"]);
    let o = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{o}\n{}", stderr(&out));
    assert!(
        o.contains("/srv/samba/gone: directory on serv2 only") && o.contains("the replica keeps it"),
        "{o}"
    );
    assert!(o.contains("1 differences"), "{o}");
    fs::remove_file(p.dst("srv/samba/gone/mine.tmp")).unwrap();
    sync_ok(&p, &["--full"]);
    assert!(!p.dst("srv/samba/gone").exists());
    let out = p.run("serv1", &["verify", "Fsmbd"]);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout(&out), stderr(&out));
}

#[test]
fn a_path_excluded_after_it_was_mirrored_stays_on_the_replica_and_is_no_deletion() {
    let mut p = Pair::new();
    // A low limit: the guard would refuse these as deletions.
    p.cfg.append("serv1.conf", "Fsmbd.delete_limit = 20%\n");
    for i in 0..10 {
        write(&p.src(&format!("srv/samba/t{i}.tmp")), b"temp");
    }
    write(&p.src("srv/samba/a"), b"a");
    write(&p.src("etc/samba/smb.conf"), b"[global]\n");
    fs::create_dir_all(p.src("var/lib/samba")).unwrap();
    p.start_serve();
    sync_ok(&p, &[]);
    assert!(p.dst("srv/samba/t3.tmp").exists());

    // Now excluded, and gone from the holder: the replica keeps its copy
    // (like rsync), and nothing counts toward the mass-delete guard.
    p.cfg.append("serv1/Fsmbd", "- *.tmp\n");
    for i in 0..10 {
        fs::remove_file(p.src(&format!("srv/samba/t{i}.tmp"))).unwrap();
    }
    write(&p.src("srv/samba/b"), b"b");
    // serv2's `serve` still has the old rules: the holder alone keeps the
    // deletions out of its offer.
    let v = sync_ok(&p, &[]);
    assert_eq!(v["push"]["deletes_offered"], 0, "{v}");
    assert_eq!(v["push"]["deleted"], 0, "{v}");
    assert!(p.dst("srv/samba/b").exists());
    // A full listing is judged by the replica's own rules (once it has
    // read them): nothing excluded is deleted.
    p.start_serve();
    let v = sync_ok(&p, &["--full"]);
    assert_eq!(v["push"]["listing"], "full", "{v}");
    assert_eq!(v["push"]["deleted"], 0, "{v}");
    for i in 0..10 {
        assert!(p.dst(&format!("srv/samba/t{i}.tmp")).exists(), "t{i}.tmp deleted");
    }
    let items = rsync_differences_filtered(&p.r1(), &p.r2(), ROOTS, &["- *.tmp"]);
    assert!(items.trim().is_empty(), "{items}");
    // The holder's index no longer lists them.
    let out = p.run("serv1", &["scan", "Fsmbd", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["files"], 3, "{v}");
}

struct Watch(Child);

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The inotify watches a process holds (from `/proc/PID/fdinfo`).
fn inotify_watches(pid: u32) -> usize {
    let mut n = 0;
    for fd in fs::read_dir(format!("/proc/{pid}/fd")).into_iter().flatten().flatten() {
        let is_inotify = fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy().contains("inotify"));
        if is_inotify {
            let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy()))
                .unwrap_or_default();
            n += info.lines().filter(|l| l.starts_with("inotify wd:")).count();
        }
    }
    n
}

fn wait_for(what: &str, within: Duration, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn watch_test(events: &str) {
    let mut p = Pair::new();
    with_rules(&p);
    write(&p.src("srv/samba/seed"), b"seed");
    write(&p.src("etc/samba/smb.conf"), b"[global]\n");
    fs::create_dir_all(p.src("var/lib/samba")).unwrap();
    // A big excluded tree: no watch may be added below it.
    for i in 0..40 {
        fs::create_dir_all(p.src(&format!("var/lib/samba/cache/d{i}"))).unwrap();
    }
    p.start_serve();
    let log = fs::File::create(p.cfg.tmp.path().join("watch.log")).unwrap();
    let child = p
        .cmd("serv1", &["watch", "Fsmbd", "--events", events])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let w = Watch(child);
    let log = || fs::read_to_string(p.cfg.tmp.path().join("watch.log")).unwrap_or_default();
    wait_for("the first copy", Duration::from_secs(20), || {
        p.dst("srv/samba/seed").exists()
    });
    if events == "inotify" {
        // srv/samba, etc/samba (and /etc: a root's parent?) and var/lib/samba:
        // a handful, not the 41 directories of the excluded cache.
        let n = inotify_watches(w.0.id());
        assert!(n > 0 && n < 10, "{n} inotify watches");
    }
    // Files created in excluded places never arrive; the others do.
    write(&p.src("var/lib/samba/cache/d3/new"), b"excluded");
    write(&p.src("srv/samba/d/lock/x"), b"excluded");
    write(&p.src("srv/samba/w.tmp"), b"excluded");
    fs::create_dir_all(p.src("srv/samba/newdir/lock/deep")).unwrap();
    write(&p.src("srv/samba/newdir/lock/deep/x"), b"excluded");
    write(&p.src("srv/samba/newdir/ok"), b"mirrored");
    write(&p.src("srv/samba/last"), b"mirrored");
    wait_for("the new files", Duration::from_secs(20), || {
        p.dst("srv/samba/last").exists() && p.dst("srv/samba/newdir/ok").exists()
    });
    settle();
    std::thread::sleep(Duration::from_millis(500));
    for never in [
        "var/lib/samba/cache",
        "srv/samba/d/lock",
        "srv/samba/w.tmp",
        "srv/samba/newdir/lock",
    ] {
        assert!(!p.dst(never).exists(), "{never} reached the replica\n{}", log());
    }
    assert_oracle(&p);
    drop(w);
}

#[test]
fn the_watcher_ignores_excluded_paths_with_inotify() {
    watch_test("inotify");
}

#[test]
fn the_watcher_ignores_excluded_paths_with_fanotify() {
    // fanotify needs root and a kernel that has it: skipped otherwise.
    if euid() != 0 {
        eprintln!("skipped: fanotify needs root");
        return;
    }
    watch_test("fanotify");
}

fn euid() -> u32 {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(|u| u.parse().unwrap_or(1)))
        .unwrap_or(1)
}

#[test]
fn check_lists_the_rules_and_names_bad_ones_by_file_and_line() {
    let p = Pair::new();
    p.cfg.append(
        "serv1/Fsmbd",
        "- *.tmp\n+ keep.log\n- /srv/other/\n- /var/lib/samba/cache/\n",
    );
    let out = p.run("serv1", &["check"]);
    let (o, e) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{o}\n{e}");
    assert!(o.contains("exclude *.tmp") && o.contains("include keep.log"), "{o}");
    assert!(o.contains("exclude /var/lib/samba/cache/"), "{o}");
    let file = p.cfg.path("serv1/Fsmbd");
    let lines = fs::read_to_string(&file).unwrap().lines().count();
    let want = format!("{}:{}: `- /srv/other/` can never match", file.display(), lines - 1);
    assert!(e.contains(&want), "wanted {want:?} in:\n{e}");

    // Errors: FILE:LINE and what was expected; exit status 2.
    for (bad, expected) in [
        ("-*.tmp", "expected `- PATTERN` (a space after `-`)"),
        ("- a[bc", "a `[` class is not closed"),
        ("-", "expected a pattern after `- `"),
        ("+ /", "would match every path"),
    ] {
        let q = Pair::new();
        q.cfg.append("serv1/Fsmbd", &format!("{bad}\n"));
        let f = q.cfg.path("serv1/Fsmbd");
        let n = fs::read_to_string(&f).unwrap().lines().count();
        let out = q.run("serv1", &["check"]);
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{bad}: {e}");
        let at = format!("{}:{n}: ", f.display());
        assert!(
            e.contains(&at) && e.contains(expected),
            "{bad}: wanted {at:?} and {expected:?} in:\n{e}"
        );
    }
}

/// What rsync, given `rules` as filter rules, would transfer from serv1's
/// roots: every name, directories with a trailing `/`, sorted.
fn rsync_selects(p: &Pair, rules: &[&str]) -> Vec<String> {
    let empty = p.cfg.tmp.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let mut cmd = std::process::Command::new("rsync");
    cmd.args(["-anR", "--no-implied-dirs", "--out-format=%n"]);
    for r in rules {
        cmd.arg(format!("--filter={r}"));
    }
    for r in ROOTS {
        cmd.arg(format!("{}/./{r}/", p.r1().display()));
    }
    let out = cmd.arg(format!("{}/", empty.display())).output().unwrap();
    assert!(out.status.success(), "rsync: {}", stderr(&out));
    let mut v: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    v.sort();
    v
}

/// What `sync --dry-run` to an empty replica would create, in the same form.
fn hamirror_selects(p: &Pair) -> Vec<String> {
    let out = p.run("serv1", &["sync", "Fsmbd", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut v: Vec<String> = stdout(&out)
        .lines()
        .filter_map(|l| {
            let (kind, path) = l.strip_prefix('>')?.split_once(" /")?;
            Some(if kind == "d" {
                format!("{path}/")
            } else {
                path.to_string()
            })
        })
        .collect();
    v.sort();
    v
}

#[test]
fn each_pattern_selects_exactly_what_rsync_selects() {
    let mut p = Pair::new();
    let files = [
        "srv/samba/a.tmp",
        "srv/samba/abc",
        "srv/samba/ac",
        "srv/samba/lock/f",
        "srv/samba/d/lock",
        "srv/samba/d/x.log",
        "srv/samba/d/keep.log",
        "srv/samba/d/e/y.log",
        "srv/samba/e/f/.g.swp",
        "srv/samba/a/x/b/f",
        "srv/samba/a/b/f",
        "srv/samba/b",
        "srv/samba/file7",
        "srv/samba/filex",
        "srv/samba/apple",
        "srv/samba/cherry",
        "srv/samba/]",
        "srv/samba/with space",
        "etc/samba/smb.conf",
        "var/lib/samba/cache/c",
        "var/lib/samba/db.tmp",
    ];
    for f in files {
        write(&p.src(f), b"x");
    }
    p.start_serve();
    let base = fs::read_to_string(p.cfg.path("serv1/Fsmbd")).unwrap();
    let cases: &[&[&str]] = &[
        &[],
        &["- *.tmp"],
        &["- a?c"],
        &["- lock/"],
        &["- lock"],
        &["- /srv/samba/d/"],
        &["- d/*.log"],
        &["- e/f"],
        &["- **/*.swp"],
        &["- /srv/samba/**.log"],
        &["- a/**/b"],
        &["- **/b"],
        &["- /srv/samba/d/***"],
        &["- [ab]*"],
        &["- [!ab]*"],
        &["- file[0-9]"],
        &["- []x]"],
        &["- samba/d"],
        &["- samba/"],
        &["- with space"],
        &["- /var/lib/samba/*"],
        &["+ keep.log", "- *.log"],
        &["+ */", "+ *.log", "- *"],
        &["- *.log", "+ keep.log"],
        // A `*` never crosses a `/`: d/e/y.log is not matched by d/*.
        &["+ /srv/samba/d/e/", "- /srv/samba/d/*"],
        &["+ /srv/samba/a/", "+ /srv/samba/a/**/", "- /srv/samba/a/*/b/"],
        &["- /srv/samba/a/*/*/f", "- a/b/[f]"],
    ];
    for rules in cases {
        fs::write(p.cfg.path("serv1/Fsmbd"), format!("{base}{}\n", rules.join("\n"))).unwrap();
        let (ours, theirs) = (hamirror_selects(&p), rsync_selects(&p, rules));
        assert_eq!(
            ours, theirs,
            "rules {rules:?}: hamirror (left) and rsync (right) differ"
        );
    }
}
