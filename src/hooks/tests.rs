//! Hook runner tests with real shell scripts in a temp directory.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::*;
use crate::config::{Group, Hook, HookKind};

fn script(dir: &Path, name: &str, body: &str) -> Hook {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let kind = match &name[..1] {
        "S" => HookKind::Start,
        "K" => HookKind::Stop,
        _ => HookKind::Notify,
    };
    Hook {
        kind,
        order: name[1..3].parse().unwrap(),
        name: name.into(),
        path,
    }
}

fn env() -> HookEnv {
    HookEnv {
        node: "serv1".into(),
        peer: "serv2".into(),
        group: "serv2".into(),
        epoch: 7,
    }
}

fn fast() -> HookPolicy {
    HookPolicy {
        timeout: Duration::from_secs(5),
        stop_retries: 1,
        retry_pause: Duration::from_millis(10),
    }
}

#[test]
fn hooks_run_in_order_with_argument_and_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    let line = format!(
        "echo \"$(basename $0) $1 $HAMIRROR_EVENT $HAMIRROR_NODE $HAMIRROR_PEER $HAMIRROR_GROUP $HAMIRROR_EPOCH\" >> {}",
        log.display()
    );
    let group = Group {
        name: "serv2".into(),
        owner: "serv2".into(),
        sets: vec![],
        start: vec![script(tmp.path(), "S10ip", &line), script(tmp.path(), "S20web", &line)],
        stop: vec![script(tmp.path(), "K10web", &line), script(tmp.path(), "K90ip", &line)],
        notify: vec![],
        monitor: Default::default(),
    };
    let runs = start_group(&group, &env(), &fast()).unwrap();
    assert!(runs.iter().all(HookRun::ok));
    stop_group(&group, &env(), &fast()).unwrap();
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "S10ip start start serv1 serv2 serv2 7\nS20web start start serv1 serv2 serv2 7\n\
         K10web stop stop serv1 serv2 serv2 7\nK90ip stop stop serv1 serv2 serv2 7\n"
    );
}

#[test]
fn a_failed_start_stops_what_was_started() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    let rec = |n: &str| format!("echo {n} $1 >> {}", log.display());
    let group = Group {
        name: "g".into(),
        owner: "g".into(),
        sets: vec![],
        start: vec![
            script(tmp.path(), "S10ip", &rec("S10ip")),
            script(tmp.path(), "S20db", "echo no config >&2; exit 6"),
        ],
        stop: vec![
            script(tmp.path(), "K10db", &format!("{}; exit 7", rec("K10db"))),
            script(tmp.path(), "K90ip", &rec("K90ip")),
        ],
        notify: vec![],
        monitor: Default::default(),
    };
    let err = start_group(&group, &env(), &fast()).unwrap_err();
    match &err {
        HookError::StartFailed {
            hook, outcome, runs, ..
        } => {
            assert_eq!(hook, "S20db");
            assert_eq!(
                *outcome,
                Outcome::Failed {
                    code: 6,
                    meaning: "program is not configured"
                }
            );
            assert!(runs[1].output.contains("no config"));
        }
        other => panic!("{other:?}"),
    }
    // Exit 7 on stop means "not running": the stop counts as done.
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "S10ip start\nK10db stop\nK90ip stop\n"
    );
}

#[test]
fn a_hanging_hook_is_killed_with_its_whole_process_group() {
    let tmp = tempfile::tempdir().unwrap();
    let pidfile = tmp.path().join("child.pid");
    let hook = script(
        tmp.path(),
        "S10hang",
        &format!("sleep 30 & echo $! > {}; wait", pidfile.display()),
    );
    let t = Instant::now();
    let run = run_hook(&hook, "start", &[], &env(), "start", Duration::from_millis(300));
    assert_eq!(run.outcome, Outcome::TimedOut);
    assert!(t.elapsed() < Duration::from_secs(5));
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "));
    assert!(!alive, "the hook's background child must be killed too");
}

#[test]
fn a_daemon_holding_stdout_does_not_block_the_runner() {
    let tmp = tempfile::tempdir().unwrap();
    // Starts a "daemon" in its own session that keeps stdout open for 30 s.
    let hook = script(tmp.path(), "S10daemon", "echo starting; setsid sleep 30 & exit 0");
    let t = Instant::now();
    let run = run_hook(&hook, "start", &[], &env(), "start", Duration::from_secs(10));
    assert!(run.ok());
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    assert_eq!(run.output, "starting\n");
}

#[test]
fn a_failed_stop_is_retried_then_reported_and_later_hooks_still_run() {
    let tmp = tempfile::tempdir().unwrap();
    let count = tmp.path().join("count");
    let log = tmp.path().join("log");
    let group = Group {
        name: "g".into(),
        owner: "g".into(),
        sets: vec![],
        start: vec![],
        stop: vec![
            script(
                tmp.path(),
                "K10stuck",
                &format!("echo x >> {}; exit 1", count.display()),
            ),
            script(tmp.path(), "K90ip", &format!("echo ip >> {}", log.display())),
        ],
        notify: vec![],
        monitor: Default::default(),
    };
    let err = stop_group(&group, &env(), &fast()).unwrap_err();
    assert!(matches!(&err, HookError::StopFailed { failed, .. } if failed == &["K10stuck".to_string()]));
    assert!(err.retryable());
    assert_eq!(
        std::fs::read_to_string(&count).unwrap().lines().count(),
        2,
        "one try and one retry"
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "ip\n");
}

#[test]
fn notify_hooks_get_event_and_message_and_a_missing_interpreter_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    let n = script(tmp.path(), "N50mail", &format!("echo \"$1|$2\" >> {}", log.display()));
    let runs = notify(
        std::slice::from_ref(&n),
        &env(),
        "takeover",
        "serv1 took over serv2",
        Duration::from_secs(5),
    );
    assert!(runs[0].ok());
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "takeover|serv1 took over serv2\n"
    );
    let bad = tmp.path().join("N60bad");
    std::fs::write(&bad, "#!/nonexistent/interpreter\n").unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o755)).unwrap();
    let hook = Hook {
        kind: HookKind::Notify,
        order: 60,
        name: "N60bad".into(),
        path: bad,
    };
    let run = run_hook(&hook, "x", &[], &env(), "x", Duration::from_secs(5));
    assert!(matches!(run.outcome, Outcome::NotRun { .. }), "{:?}", run.outcome);
}
