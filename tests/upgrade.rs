//! A rolling upgrade with two real builds: serv1 runs the previous version
//! of hamirror (`HAMIRROR_PREVIOUS_BIN`, built by `.ci/run` from the commit
//! it names), serv2 this one. Heartbeats, failover and mirroring must work
//! in both directions between the two versions; then serv1 is upgraded the
//! way docs/OPERATIONS.md says (stop, replace, start, take its group back)
//! and the pair mirrors on. Every phase ends with a full tree comparison and
//! the rsync oracle.
//!
//! Without `HAMIRROR_PREVIOUS_BIN` the test says so and passes, except under
//! CI (`CI=true`), where the missing binary is a failure: CI must run it.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::daemons::{Cluster, NODES};
use common::pair::Pair;
use common::write;

/// Keys and lines the previous version does not know (it refuses unknown
/// keys, as it should).
const NEWER: &[&str] = &["monitor_", "metrics_", "xattrs"];

fn previous_bin() -> Option<PathBuf> {
    build_from_env("HAMIRROR_PREVIOUS_BIN")
}

/// The build named by `var`, if set; under CI it must be.
fn build_from_env(var: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "{var}={} is not a file", p.display());
            Some(p)
        }
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI must build the previous version for this test: {var} is not set (see .ci/run)")
        }
        None => {
            eprintln!("upgrade: {var} not set; skipped (.ci/run builds it)");
            None
        }
    }
}

fn version(bin: &std::path::Path) -> String {
    let out = std::process::Command::new(bin).arg("--version").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Drops what the previous version would refuse from the configuration:
/// newer keys in each NODE.conf, exclude rules in the set files.
fn config_for_previous(c: &Cluster) {
    config_for_previous_pair(&c.p);
}

fn config_for_previous_pair(p: &Pair) {
    for n in NODES {
        let f = p.cfg.path(&format!("{n}.conf"));
        let text = std::fs::read_to_string(&f).unwrap();
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !NEWER.iter().any(|k| l.trim_start().starts_with(k)))
            .collect();
        std::fs::write(&f, kept.join("\n") + "\n").unwrap();
        for e in std::fs::read_dir(p.cfg.path(n)).unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with('F') {
                let text = std::fs::read_to_string(e.path()).unwrap();
                let kept: Vec<&str> = text
                    .lines()
                    .filter(|l| !l.trim_start().starts_with(['-', '+']))
                    .collect();
                std::fs::write(e.path(), kept.join("\n") + "\n").unwrap();
            }
        }
    }
}

fn holds_own_groups(c: &Cluster) -> bool {
    c.phase(0, "serv1").as_deref() == Some("held") && c.phase(1, "serv2").as_deref() == Some("held")
}

#[test]
fn a_rolling_upgrade_keeps_failover_and_mirroring_working_across_versions() {
    let Some(previous) = previous_bin() else {
        return;
    };
    let mut c = Cluster::new();
    config_for_previous(&c);
    c.bins[0] = previous.clone();
    let (old, new) = (version(&previous), version(&c.bins[1]));
    eprintln!("upgrade: serv1 runs {old:?}, serv2 runs {new:?}");
    assert_ne!(old, new, "HAMIRROR_PREVIOUS_BIN is this build, not the previous one");
    c.start(0);
    c.start(1);
    c.wait(
        "each node holds its own group, across versions",
        Duration::from_secs(20),
        holds_own_groups,
    );

    // Mirroring in both directions between the versions.
    write(
        &c.p.src("srv/samba/share/old.txt"),
        b"written on serv1, previous version\n",
    );
    write(&c.p.src("etc/samba/smb.conf"), b"[global]\n");
    write(&c.p.dst("var/www/index.html"), b"<h1>serv2, this version</h1>\n");
    c.converge("both directions across versions", Duration::from_secs(30));
    // The newer node spoke the older protocol, and said what that costs.
    let log = std::fs::read_to_string(c.log_path(1)).unwrap();
    assert!(
        log.contains("speaks protocol version 1") && log.contains("are not mirrored"),
        "{}",
        c.logs()
    );

    // The older node knows no maintenance mode: the newer one says so (and
    // hears it speak heartbeat version 1), and exits 1: not cluster-wide.
    let out = c.p.run("serv2", &["maintenance", "on"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}\n{}", c.logs());
    assert!(text.contains("older release"), "{text}");
    let out = c.p.run("serv2", &["maintenance", "off"]);
    assert_eq!(out.status.code(), Some(1), "{}", c.logs());
    let log = std::fs::read_to_string(c.log_path(1)).unwrap();
    assert!(log.contains("serv1 speaks heartbeat version 1"), "{}", c.logs());

    // Step 1 of the upgrade: serv1 stops (a planned stop hands its group to
    // serv2, which runs this version) ...
    c.stop(0);
    c.wait("serv2 runs serv1's group", Duration::from_secs(10), |c| {
        c.phase(1, "serv1").as_deref() == Some("held")
    });
    write(
        &c.p.dst("srv/samba/share/during.txt"),
        b"written on serv2 during the upgrade\n",
    );
    // ... step 2: the new binary replaces the old; serv1 starts as a backup
    // and gets back what changed meanwhile ...
    c.bins[0] = c.bins[1].clone();
    c.start(0);
    c.converge("the upgraded node resynced", Duration::from_secs(30));
    // ... step 3: it takes its group back.
    let out = c.p.run("serv1", &["takeover", "serv1"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
    c.wait("serv1 holds its group again", Duration::from_secs(10), holds_own_groups);
    write(&c.p.src("srv/samba/share/after.txt"), b"both on this version\n");
    // Both on this version: what only it carries is mirrored now (the
    // comparison includes the rsync oracle's -X).
    let out = std::process::Command::new("setfattr")
        .args(["-n", "user.DOSATTRIB", "-v", "A20"])
        .arg(c.p.src("srv/samba/share/after.txt"))
        .output()
        .expect("setfattr (apt-get install attr)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    c.converge("after the upgrade, attributes too", Duration::from_secs(30));
    assert_eq!(
        std::fs::read(c.p.src("srv/samba/share/during.txt")).unwrap(),
        b"written on serv2 during the upgrade\n"
    );
}

/// An index written by the previous version (format 1) is converted when
/// this one opens it, keeping every fingerprint and acknowledgement: the
/// first sync after the upgrade sends nothing, and the one after reads
/// nothing either.
#[test]
fn an_index_of_the_previous_version_is_upgraded_and_the_next_sync_sends_nothing() {
    if let Some(previous) = previous_bin() {
        upgraded_index_sends_nothing(&previous, true);
    }
}

/// The same from the last build of index format 2 (`HAMIRROR_FORMAT2_BIN`,
/// built by `.ci/run`), whose configuration is this one's.
#[test]
fn an_index_of_format_2_is_upgraded_and_the_next_sync_sends_nothing() {
    if let Some(previous) = build_from_env("HAMIRROR_FORMAT2_BIN") {
        upgraded_index_sends_nothing(&previous, false);
    }
}

fn upgraded_index_sends_nothing(previous: &std::path::Path, older_config: bool) {
    let mut p = Pair::new();
    if older_config {
        config_for_previous_pair(&p);
    }
    for i in 0..40 {
        write(
            &p.src(&format!("srv/samba/share/d{}/f{i}.txt", i % 4)),
            format!("file {i}\n").as_bytes(),
        );
    }
    write(&p.src("srv/samba/big.bin"), &vec![7u8; 3 << 20]);
    write(&p.src("etc/samba/smb.conf"), b"[global]\n");
    std::thread::sleep(Duration::from_millis(150));
    p.start_serve_bin(previous);
    let out = p.cmd_bin(previous, "serv1", &["sync", "Fsmbd"]).output().unwrap();
    assert!(out.status.success(), "previous sync: {}", common::stderr(&out));
    p.assert_mirrored(&["srv/samba", "etc/samba"]);
    // A verify from this version against the previous one: the older peer
    // hashes in the fixed blocks this version's hello asks for.
    let out = p.run("serv1", &["verify", "Fsmbd"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        common::stdout(&out),
        common::stderr(&out)
    );
    assert!(common::stdout(&out).contains("identical"), "{}", common::stdout(&out));
    p.stop_serve();

    p.start_serve();
    let v = p.sync_ok("Fsmbd");
    assert_eq!(v["push"]["outcome"], "unchanged", "{v}");
    assert_eq!(v["push"]["chunks_sent"], 0, "{v}");
    assert_eq!(v["push"]["entries_offered"], 0, "{v}");
    assert_eq!(
        (&v["scan"]["new"], &v["scan"]["changed"]),
        (&0.into(), &0.into()),
        "{v}"
    );
    // A previous version that kept no attribute namespaces has every file
    // read once more (for its attributes); the pass after reads nothing.
    let v = p.sync_ok("Fsmbd");
    assert_eq!(v["push"]["outcome"], "unchanged", "{v}");
    assert_eq!(v["scan"]["files_read"], 0, "the fingerprints were kept: {v}");
    p.assert_mirrored(&["srv/samba", "etc/samba"]);
    // Both files are of the new format now and consistent.
    p.stop_serve();
    for node in [1, 2] {
        let index = hamirror::index::Index::open_set(&p.state(node), "Fsmbd").unwrap();
        assert!(index.verify("Fsmbd").unwrap().is_empty(), "serv{node}");
        assert!(index.entries("Fsmbd").unwrap().count() > 40, "serv{node}");
    }
    // And a change after the upgrade goes as a delta.
    write(&p.src("srv/samba/share/d0/f0.txt"), b"changed\n");
    p.start_serve();
    let v = p.mirror_fsmbd("after the upgrade", &["srv/samba", "etc/samba"]);
    assert_eq!(v["push"]["outcome"], "delta", "{v}");
}
