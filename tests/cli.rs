//! The command line as a user and a packager meet it, through the real
//! binary: `--version` names the protocols, `completions` writes scripts
//! the shells accept, the hidden `man` writes a page per command, NO_COLOR
//! (and a stderr that is not a terminal) leaves no escape bytes, and an
//! error prints each cause once.

mod common;

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

use common::{TempConfig, copy_tree, example_dir, stderr, stdout};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hamirror"));
    c.env_remove("HAMIRROR_NODE")
        .env_remove("HAMIRROR_CONFIG")
        .env_remove("NO_COLOR");
    c
}

#[test]
fn version_names_the_mirror_protocol_and_the_heartbeat_version() {
    for flag in ["--version", "-V"] {
        let out = bin().arg(flag).output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(
            stdout(&out),
            format!(
                "hamirror {} (mirror protocol {}, heartbeat version {})\n",
                env!("CARGO_PKG_VERSION"),
                hamirror_wire::PROTOCOL_VERSION,
                hamirror_wire::heartbeat::VERSION
            )
        );
    }
}

#[test]
fn completions_are_written_for_bash_zsh_and_fish_and_name_every_command() {
    let tmp = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "complete -F _hamirror"),
        ("zsh", "#compdef hamirror"),
        ("fish", "complete -c hamirror"),
    ] {
        let out = bin().args(["completions", shell]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        for cmd in [
            "status",
            "takeover",
            "allow-deletes",
            "completions",
            "config",
            "max-lag",
        ] {
            assert!(script.contains(cmd), "{shell}: {cmd} missing");
        }
        assert!(
            !script.contains("hamirror-man") && !script.contains("'man'"),
            "{shell}: the hidden man"
        );
        if shell == "bash" {
            // The shell must accept it.
            let f = tmp.path().join("hamirror.bash");
            std::fs::write(&f, &script).unwrap();
            let check = Command::new("bash").arg("-n").arg(&f).output().unwrap();
            assert!(check.status.success(), "bash -n: {}", stderr(&check));
        }
    }
    let out = bin().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("tcsh") && err.contains("bash") && err.contains("fish"),
        "{err}"
    );
}

#[test]
fn man_writes_one_page_per_command() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("man1");
    let out = bin().arg("man").arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for want in [
        "hamirror.1",
        "hamirror-run.1",
        "hamirror-status.1",
        "hamirror-completions.1",
        "hamirror-allow-deletes.1",
    ] {
        assert!(pages.iter().any(|p| p == want), "{want} missing: {pages:?}");
    }
    assert!(
        !pages.iter().any(|p| p.contains("-man") || p.contains("-help")),
        "{pages:?}"
    );
    // Each page is named on stdout.
    assert_eq!(stdout(&out).lines().count(), pages.len(), "{}", stdout(&out));
    let main = std::fs::read_to_string(dir.join("hamirror.1")).unwrap();
    assert!(main.starts_with(".ie") || main.starts_with(".TH"), "{}", &main[..80]);
    assert!(
        main.contains("hamirror\\-status(1)"),
        "the main page lists the commands"
    );
    let status = std::fs::read_to_string(dir.join("hamirror-status.1")).unwrap();
    assert!(
        status.contains("CRITICAL") && status.contains("\\-\\-max\\-lag"),
        "{status}"
    );
}

/// Runs `cmd` with its stderr on a new pseudo-terminal; returns what the
/// terminal received.
fn on_a_terminal(mut cmd: Command) -> Vec<u8> {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty with valid out-pointers and no name/termios/winsize.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned here.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(slave))
        .spawn()
        .unwrap();
    // Drops the parent's copy of the slave with the Command.
    drop(cmd);
    let mut out = Vec::new();
    let mut m = std::fs::File::from(master);
    let mut buf = [0u8; 4096];
    loop {
        match m.read(&mut buf) {
            Ok(0) | Err(_) => break, // EIO once the child closed the slave
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    child.wait().unwrap();
    out
}

#[test]
fn no_color_and_a_stderr_that_is_not_a_terminal_leave_no_escape_bytes() {
    // The published example key: `run` warns about a hook backup copy,
    // then refuses to start (nothing runs).
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster.d");
    copy_tree(&example_dir(), &dir);
    std::fs::copy(dir.join("serv1/S10ipaddr"), dir.join("serv1/S10ipaddr~")).unwrap();
    let run = |no_color: Option<&str>| {
        let mut c = bin();
        c.arg("--config").arg(&dir).args(["--node", "serv1", "run"]);
        if let Some(v) = no_color {
            c.env("NO_COLOR", v);
        }
        c
    };
    let coloured = on_a_terminal(run(None));
    let text = String::from_utf8_lossy(&coloured);
    assert!(
        text.contains("S10ipaddr~") && text.contains("refusing to start"),
        "{text}"
    );
    assert!(coloured.contains(&0x1b), "a terminal gets colours: {text}");
    for v in ["1", "yes"] {
        let plain = on_a_terminal(run(Some(v)));
        let text = String::from_utf8_lossy(&plain);
        assert!(text.contains("S10ipaddr~"), "{text}");
        assert!(!plain.contains(&0x1b), "NO_COLOR={v}: escape bytes in {text:?}");
    }
    // Not a terminal: no colours either.
    let out = run(None).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("S10ipaddr~"));
    assert!(!out.stderr.contains(&0x1b), "{:?}", stderr(&out));
    // clap's own errors follow NO_COLOR too.
    let mut c = bin();
    c.arg("--no-such-option").env("NO_COLOR", "1");
    let plain = on_a_terminal(c);
    assert!(String::from_utf8_lossy(&plain).contains("--no-such-option"));
    assert!(!plain.contains(&0x1b), "{:?}", String::from_utf8_lossy(&plain));
}

#[test]
fn an_error_prints_each_cause_once() {
    let c = TempConfig::example();
    let state = c.tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    c.append("serv1.conf", &format!("state = {}\n", state.display()));
    // A socket left by a dead daemon: nothing answers (connection refused).
    drop(std::os::unix::net::UnixListener::bind(state.join("control.sock")).unwrap());
    let out = c.run(&["--node", "serv1", "standby"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.starts_with("hamirror: is `hamirror run` running? nothing answers at"),
        "{err}"
    );
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // status: the same cause once, as its UNKNOWN verdict.
    let out = c.run(&["--node", "serv1", "status"]);
    assert_eq!(out.status.code(), Some(3));
    let text = stdout(&out);
    assert!(text.starts_with("UNKNOWN: is `hamirror run` running?"), "{text}");
    assert_eq!(text.matches("Connection refused").count(), 1, "{text}");
}

#[test]
fn a_mistyped_status_is_unknown_not_critical() {
    let out = bin()
        .args(["--config", "/nonexistent", "status", "--no-such-option"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("--no-such-option"));
    // Other commands keep clap's 2.
    let out = bin().args(["check", "--no-such-option"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = bin().args(["status", "--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
}
