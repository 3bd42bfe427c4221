//! The environment a hook gets from a real `hamirror run`: the minimal one
//! of docs/HOOKS.md (PATH, LANG=C, the HAMIRROR_* variables), not the
//! daemon's. One daemon alone on loopback; after initdead it starts both
//! groups, and serv1's start hook writes `env` into a file. The daemon is
//! started with a low open files limit: it raises its own, and the hook
//! gets the one it was started with (`ulimit -n`).

mod common;

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::pair::Pair;

#[test]
fn hooks_run_with_a_minimal_environment_not_the_daemons() {
    let p = Pair::new().for_daemons();
    let dump = p.cfg.tmp.path().join("env.txt");
    let limit_file = p.cfg.tmp.path().join("limit.txt");
    // SAFETY: getrlimit only writes the struct it is given.
    let hard = unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_max
    };
    let low: libc::rlim_t = 1024.min(hard);
    let hook = p.cfg.path("serv1/S10env");
    fs::write(
        &hook,
        format!(
            "#!/bin/sh\nulimit -n > {1}\nenv > {0}.tmp && mv {0}.tmp {0}\n",
            dump.display(),
            limit_file.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let log = p.cfg.tmp.path().join("serv1.log");
    let mut cmd = p.cmd("serv1", &["run", "--no-realtime"]);
    // SAFETY: between fork and exec, one system call on plain data.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            let l = libc::rlimit {
                rlim_cur: low,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut daemon = cmd
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
    // The daemon raised its own soft limit (to the hard one, at most 65,536).
    let limits = fs::read_to_string(format!("/proc/{}/limits", daemon.id())).unwrap();
    let soft: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no open files limit in:\n{limits}"));
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert_eq!(soft, hard.min(65_536), "the daemon's soft open files limit");
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
    let limit = fs::read_to_string(&limit_file).unwrap();
    assert_eq!(limit.trim(), low.to_string(), "the hook's open files limit");
    // Nothing else but what the shell itself sets (PWD, SHLVL, _).
    for (k, _) in &vars {
        assert!(
            k.starts_with("HAMIRROR_") || ["PATH", "LANG", "PWD", "SHLVL", "_", "OLDPWD"].contains(k),
            "unexpected variable {k} in:\n{text}"
        );
    }
}
