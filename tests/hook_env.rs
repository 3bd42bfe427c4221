//! The environment a hook gets from a real `hamirror run`: the minimal one
//! of docs/HOOKS.md (PATH, LANG=C, the HAMIRROR_* variables), not the
//! daemon's. One daemon alone on loopback; after initdead it starts both
//! groups, and serv1's start hook writes `env` into a file.

mod common;

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::pair::Pair;

#[test]
fn hooks_run_with_a_minimal_environment_not_the_daemons() {
    let p = Pair::new().for_daemons();
    let dump = p.cfg.tmp.path().join("env.txt");
    let hook = p.cfg.path("serv1/S10env");
    fs::write(
        &hook,
        format!("#!/bin/sh\nenv > {}.tmp && mv {0}.tmp {0}\n", dump.display()),
    )
    .unwrap();
    fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let log = p.cfg.tmp.path().join("serv1.log");
    let mut daemon = p
        .cmd("serv1", &["run", "--no-realtime"])
        .env("FOO", "bar")
        .env("LD_LIBRARY_PATH", "/tmp/evil")
        .env("PATH", "/tmp/evil:/usr/bin:/bin")
        .env("HAMIRROR_RUN_DIR", "/tmp/hamirror-run-test")
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dump.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let text = fs::read_to_string(&dump).unwrap_or_else(|_| {
        panic!(
            "the start hook did not run:\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        )
    });
    let mut vars: Vec<(&str, &str)> = text.lines().filter_map(|l| l.split_once('=')).collect();
    vars.sort();
    let get = |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    assert_eq!(get("FOO"), None, "{text}");
    assert_eq!(get("LD_LIBRARY_PATH"), None, "{text}");
    assert_eq!(get("PATH"), Some("/usr/sbin:/usr/bin:/sbin:/bin"), "{text}");
    assert_eq!(get("LANG"), Some("C"));
    assert_eq!(get("HAMIRROR_NODE"), Some("serv1"));
    assert_eq!(get("HAMIRROR_PEER"), Some("serv2"));
    assert_eq!(get("HAMIRROR_EVENT"), Some("start"));
    assert!(get("HAMIRROR_GROUP").is_some_and(|g| g == "serv1" || g == "serv2"));
    assert!(get("HAMIRROR_EPOCH").is_some_and(|e| e.parse::<u64>().is_ok()));
    assert_eq!(get("HAMIRROR_RUN_DIR"), Some("/tmp/hamirror-run-test"));
    // Nothing else but what the shell itself sets (PWD, SHLVL, _).
    for (k, _) in &vars {
        assert!(
            k.starts_with("HAMIRROR_") || ["PATH", "LANG", "PWD", "SHLVL", "_", "OLDPWD"].contains(k),
            "unexpected variable {k} in:\n{text}"
        );
    }
}
