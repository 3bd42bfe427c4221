//! The Debian package, built as a release would be (`.ci/package`, here
//! with the debug binary: the layout is under test, not the speed), looked
//! at from outside (`dpkg-deb`) and then used: its extracted binary,
//! shipped hooks and the paths its systemd unit names run a two-node
//! cluster in the netns lab (`tests/common/lab.rs`) that mirrors (checked
//! with the rsync oracle) and fails over.
//!
//! Needs cargo-deb (`cargo install cargo-deb`): outside CI the test says it
//! skips when it is missing; under CI (`CI` set; `.ci/run` installs it) it
//! fails instead. The cluster part needs root, iproute2 and arping like
//! tests/cluster.rs (HAMIRROR_SKIP_NETNS=1 skips only that part).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::lab::{Lab, Opts, SERVICE_IPS, Service};
use common::netns::{netns_available, require_tool};
use common::{stderr, stdout};

const SEC: Duration = Duration::from_secs(1);

fn cargo_deb_or_skip() -> bool {
    let have = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI: cargo-deb is missing (.ci/run installs it: cargo install cargo-deb)"
        );
        eprintln!("SKIPPED: cargo-deb is not installed (cargo install cargo-deb); this test is required under CI");
    }
    have
}

/// Builds the package into `out`; returns the .deb.
fn build(out: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/package");
    let o = Command::new(&script).arg("--dev").arg(out).output().unwrap();
    assert!(o.status.success(), ".ci/package failed:\n{}{}", stdout(&o), stderr(&o));
    let debs: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    debs[0].clone()
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let o = Command::new("dpkg-deb").args(args).arg(deb).output().unwrap();
    assert!(o.status.success(), "dpkg-deb {args:?}: {}", stderr(&o));
    stdout(&o)
}

/// `unit`'s value of `key` in its file (the last one, as systemd reads it).
fn unit_value(unit: &str, key: &str) -> Option<String> {
    unit.lines()
        .rev()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
}

#[test]
fn the_package_holds_what_the_readme_says_and_its_files_run_a_mirroring_failing_over_cluster() {
    if !cargo_deb_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let deb = build(&tmp.path().join("out"));

    // What is in it, with which modes (dpkg-deb -c: "MODE OWNER SIZE DATE TIME ./PATH").
    let listing = dpkg_deb(&["-c"], &deb);
    let mode_of = |path: &str| -> Option<String> {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" ./{path}")) || l.contains(&format!(" ./{path} -> ")))
            .map(|l| l.split_whitespace().next().unwrap().to_string())
    };
    for (path, mode) in [
        ("usr/bin/hamirror", "-rwxr-xr-x"),
        ("usr/share/hamirror/hooks/ipaddr", "-rwxr-xr-x"),
        ("usr/share/hamirror/hooks/systemd-unit", "-rwxr-xr-x"),
        ("usr/share/hamirror/hooks/mail-notify", "-rwxr-xr-x"),
        ("usr/lib/ocf/resource.d/hamirror/mirror", "-rwxr-xr-x"),
        ("usr/lib/systemd/system/hamirror.service", "-rw-r--r--"),
        ("usr/share/man/man1/hamirror.1.gz", "-rw-r--r--"),
        ("usr/share/man/man1/hamirror-status.1.gz", "-rw-r--r--"),
        ("usr/share/man/man1/hamirror-run.1.gz", "-rw-r--r--"),
        ("usr/share/bash-completion/completions/hamirror", "-rw-r--r--"),
        ("usr/share/zsh/vendor-completions/_hamirror", "-rw-r--r--"),
        ("usr/share/fish/vendor_completions.d/hamirror.fish", "-rw-r--r--"),
        ("etc/cluster.d/README", "-rw-r--r--"),
        ("usr/share/doc/hamirror/README.md", "-rw-r--r--"),
        ("usr/share/doc/hamirror/OPERATIONS.md", "-rw-r--r--"),
        ("usr/share/doc/hamirror/copyright", "-rw-r--r--"),
        ("usr/share/doc/hamirror/examples/cluster.d/serv1.conf", "-rw-r--r--"),
        ("usr/share/doc/hamirror/examples/cluster.d/serv1/Fsmbd", "-rw-r--r--"),
        (
            "usr/share/doc/hamirror/examples/cluster.d/serv1/S10ipaddr",
            "-rwxr-xr-x",
        ),
    ] {
        assert_eq!(mode_of(path).as_deref(), Some(mode), "{path}:\n{listing}");
    }
    // No key anywhere (the example's is published), nothing outside the FHS
    // places, no symlinks.
    assert!(!listing.contains("authkeys"), "{listing}");
    for l in listing.lines() {
        let path = l.split(" ./").nth(1).unwrap_or_default();
        assert!(
            ["", "etc/", "usr/"].iter().any(|p| path.starts_with(p)) && !l.starts_with('l'),
            "unexpected entry: {l}"
        );
    }
    assert!(
        !listing.contains(" ./docs/") && !listing.contains(" ./target/"),
        "{listing}"
    );

    // Its control data: dependencies the hooks need, the skeleton a conffile.
    let depends = dpkg_deb(&["-f"], &deb);
    assert!(
        depends.contains("iproute2") && depends.contains("iputils-arping"),
        "{depends}"
    );
    let conffiles = Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .arg("conffiles")
        .output()
        .unwrap();
    assert_eq!(stdout(&conffiles), "/etc/cluster.d/README\n");

    // Installed disabled and stopped; an upgrade reloads systemd but does
    // not restart the daemon (that would hand the node's groups over).
    let ctl = tmp.path().join("control");
    let e = Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&ctl).output().unwrap();
    assert!(e.status.success(), "{}", stderr(&e));
    let postinst = std::fs::read_to_string(ctl.join("postinst")).unwrap();
    assert!(postinst.contains("daemon-reload"), "{postinst}");
    let commands: Vec<&str> = postinst.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
    assert!(
        !commands.iter().any(|l| l.contains("restart") || l.contains(" start")),
        "{postinst}"
    );
    let prerm = std::fs::read_to_string(ctl.join("prerm")).unwrap();
    assert!(
        prerm.contains("\"$1\" = remove") && prerm.contains("stop hamirror.service"),
        "{prerm}"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let sh = Command::new("sh").arg("-n").arg(ctl.join(script)).output().unwrap();
        assert!(sh.status.success(), "{script}: {}", stderr(&sh));
    }

    // Extracted: the unit's paths exist in the tree, the binary runs.
    let root = tmp.path().join("root");
    let x = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&root)
        .output()
        .unwrap();
    assert!(x.status.success(), "dpkg-deb -x: {}", stderr(&x));
    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/hamirror.service")).unwrap();
    assert_eq!(unit_value(&unit, "Type").as_deref(), Some("notify"), "{unit}");
    assert!(unit_value(&unit, "WatchdogSec").is_some(), "{unit}");
    assert_eq!(
        unit_value(&unit, "Environment").as_deref(),
        Some("HAMIRROR_CONFIG=/etc/cluster.d")
    );
    let exec = unit_value(&unit, "ExecStart").unwrap();
    assert_eq!(exec, "/usr/bin/hamirror run", "{unit}");
    let bin = root.join(exec.split_whitespace().next().unwrap().trim_start_matches('/'));
    assert!(bin.metadata().unwrap().permissions().mode() & 0o111 != 0);
    let v = Command::new(&bin).arg("--version").output().unwrap();
    assert!(
        stdout(&v).starts_with(&format!("hamirror {} (mirror protocol", env!("CARGO_PKG_VERSION"))),
        "{}",
        stdout(&v)
    );
    // Every shipped hook the example's hooks call is in the package.
    let examples = root.join("usr/share/doc/hamirror/examples/cluster.d");
    let mut called = 0;
    for node in ["serv1", "serv2"] {
        for e in std::fs::read_dir(examples.join(node)).unwrap() {
            let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
            for w in text
                .split_whitespace()
                .filter(|w| w.starts_with("/usr/share/hamirror/"))
            {
                called += 1;
                assert!(
                    root.join(&w[1..]).is_file(),
                    "{w} is called by the example but not shipped"
                );
            }
        }
    }
    assert!(called >= 10, "{called}");
    // The skeleton is no cluster yet: `check` says so and fails.
    let check = Command::new(&bin)
        .args(["--config"])
        .arg(root.join("etc/cluster.d"))
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(2), "{}", stdout(&check));

    // A two-node cluster from the package's binary and hooks.
    if !netns_available() {
        return;
    }
    require_tool("arping", "iputils-arping");
    let mut lab = Lab::new(
        "hmpk",
        Opts {
            service: Service::Static,
            mirror: true,
            installed: Some(root.clone()),
            ..Default::default()
        },
    );
    assert_eq!(lab.bin(), bin);
    let s10 = std::fs::read_to_string(lab.config().join("serv1/S10ipaddr")).unwrap();
    assert!(
        s10.contains(&format!("{}/usr/share/hamirror/hooks/ipaddr", root.display())),
        "{s10}"
    );
    let check = Command::new(&bin)
        .arg("--config")
        .arg(lab.config())
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(0), "{}{}", stdout(&check), stderr(&check));
    // The metrics endpoint, as OPERATIONS.md says to turn it on; scraped
    // with curl from inside serv1's namespace.
    require_tool("curl", "curl");
    let metrics_at = "10.77.0.1:9464";
    let conf = lab.config().join("serv1.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str(&format!("metrics_listen = {metrics_at}\n"));
    std::fs::write(&conf, text).unwrap();
    let scrape = |lab: &Lab| {
        let o = Command::new("ip")
            .args(["netns", "exec", &lab.node_ns[0], "curl", "-sf"])
            .arg(format!("http://{metrics_at}/metrics"))
            .output()
            .unwrap();
        assert!(o.status.success(), "curl: {}", stderr(&o));
        stdout(&o)
    };
    let metric = |text: &str, name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    };
    for i in 0..2 {
        lab.start_static_responder(i);
        lab.start(i);
    }
    lab.wait_both_running_own_groups();
    lab.wait("status OK from the package's binary", 10 * SEC, |l| {
        l.status_code(0).0 == Some(0)
    });
    let on = |lab: &Lab, i: usize, addr: &str| {
        let o = Command::new("ip")
            .args(["-n", &lab.node_ns[i], "-o", "addr", "show"])
            .output()
            .unwrap();
        stdout(&o).contains(&format!(" {addr}/"))
    };
    assert!(
        on(&lab, 0, SERVICE_IPS[0]),
        "the shipped ipaddr hook configured serv1's address"
    );
    let acked = r#"hamirror_set_last_ack_timestamp_seconds{set="Fserv1data",group="serv1"}"#;
    let before = scrape(&lab);
    assert_eq!(metric(&before, "hamirror_peer_alive"), Some(1.0), "{before}");
    assert_eq!(
        metric(&before, r#"hamirror_group_held{group="serv1"}"#),
        Some(1.0),
        "{before}"
    );
    let heartbeats = r#"hamirror_heartbeats_received_total{link="crossover"}"#;
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // The package's daemons mirror serv1's set to serv2.
    let (a, b) = (
        lab.mirror_root("serv1").join("data/serv1"),
        lab.mirror_root("serv2").join("data/serv1"),
    );
    std::fs::write(a.join("index.html"), b"<h1>from the package</h1>\n").unwrap();
    std::fs::create_dir_all(a.join("sub")).unwrap();
    std::fs::write(a.join("sub/data"), vec![7u8; 300_000]).unwrap();
    lab.wait("serv1's files on serv2", 10 * SEC, |_| {
        std::fs::read(b.join("sub/data")).is_ok_and(|d| d.len() == 300_000) && b.join("index.html").exists()
    });
    lab.wait("serv1's set in step", 10 * SEC, |l| l.status_code(0).0 == Some(0));
    common::pair::assert_trees_equal(&a, &b);
    common::pair::rsync_oracle(&a, &b);
    // ... and the endpoint shows it: the acknowledgement moved, heartbeats
    // counted, nothing left to send.
    lab.wait("the acknowledgement in the metrics to move", 10 * SEC, |l| {
        metric(&scrape(l), acked) > metric(&before, acked)
    });
    let after = scrape(&lab);
    assert!(metric(&after, heartbeats) > metric(&before, heartbeats), "{after}");
    assert_eq!(
        metric(&after, r#"hamirror_set_backlog_files{set="Fserv1data",group="serv1"}"#),
        Some(0.0),
        "{after}"
    );
    // serv1 dies: serv2 takes its address over with the shipped hook.
    lab.node_dies(0);
    lab.wait("serv2 runs serv1's group", 10 * SEC, |l| l.holds(1, "serv1"));
    lab.wait("serv1's address on serv2", 5 * SEC, |l| on(l, 1, SERVICE_IPS[0]));
    let (code, text) = lab.status_code(1);
    assert_eq!(code, Some(1), "{text}");
}
