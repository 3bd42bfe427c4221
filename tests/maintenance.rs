//! `hamirror maintenance on|off` through two real daemons on loopback:
//! set on one node it freezes both (the peer confirms); a daemon stopped
//! in maintenance leaves its services up and the peer takes nothing over;
//! restarted, it keeps them without running a hook; operator moves are
//! refused meanwhile; ended on the other node, decisions resume and a
//! planned stop hands over again. The services are hooks that log every
//! start and stop, so "nothing was stopped" is read from what ran.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::daemons::{Cluster, NODES};

const SEC: Duration = Duration::from_secs(1);

/// S and K hooks for each node's group that append `NODE start|stop GROUP`
/// to `log`.
fn logging_hooks(c: &Cluster, log: &Path) {
    for n in NODES {
        for (name, verb) in [("S50svc", "start"), ("K50svc", "stop")] {
            let rel = format!("{n}/{name}");
            c.p.cfg.write(
                &rel,
                &format!(
                    "#!/bin/sh\n[ \"$1\" = {verb} ] || exit 0\necho \"$HAMIRROR_NODE {verb} $HAMIRROR_GROUP\" >> {}\n",
                    log.display()
                ),
            );
            let p = c.p.cfg.path(&rel);
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
}

fn hook_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn maintenance(c: &Cluster, node: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["maintenance"];
    all.extend_from_slice(args);
    let out = c.p.run(node, &all);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn maintenance_on(c: &Cluster, i: usize) -> Option<bool> {
    c.status(i)?["maintenance"]["on"].as_bool()
}

#[test]
fn maintenance_freezes_both_nodes_keeps_services_up_across_a_daemon_restart_and_ends_from_either_node() {
    let mut c = Cluster::new();
    let log = c.p.cfg.tmp.path().join("hooks.log");
    logging_hooks(&c, &log);
    c.start(0);
    c.start(1);
    c.wait("each node holds its own group", 20 * SEC, |c| {
        c.phase(0, "serv1").as_deref() == Some("held") && c.phase(1, "serv2").as_deref() == Some("held")
    });
    let started = hook_lines(&log);
    assert!(
        started.contains(&"serv1 start serv1".to_string()) && started.contains(&"serv2 start serv2".to_string()),
        "{started:?}"
    );

    // On on serv1: serv2 confirms, and both say so.
    let (code, out, err) = maintenance(&c, "serv1", &["on"]);
    assert_eq!(code, 0, "{out}{err}\n{}", c.logs());
    assert!(out.contains("maintenance ON") && out.contains("serv2 agrees"), "{out}");
    assert_eq!(maintenance_on(&c, 1), Some(true));
    let status = c.p.run("serv2", &["status"]);
    assert_eq!(status.status.code(), Some(1), "a WARNING while frozen");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("maintenance mode") && text.contains("maintenance: ON"),
        "{text}"
    );
    let (code, out, _) = maintenance(&c, "serv2", &[]);
    assert_eq!(code, 0);
    assert!(out.contains("maintenance ON") && out.contains("serv1 agrees"), "{out}");

    // Operator moves wait for the end of maintenance.
    let out = c.p.run("serv2", &["takeover", "serv1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("maintenance"));

    // serv1's daemon stops (an upgrade, say): its service stays up, and
    // serv2 sees it dead but starts nothing.
    c.stop(0);
    c.wait("serv2 sees serv1 gone", 10 * SEC, |c| {
        c.status(1).is_some_and(|s| s["peer_alive"] == false)
    });
    std::thread::sleep(2 * SEC);
    assert_eq!(c.phase(1, "serv1").as_deref(), Some("released"));
    assert_eq!(
        hook_lines(&log),
        started,
        "no hook ran: nothing stopped, nothing taken over"
    );
    let serv1_log = std::fs::read_to_string(c.log_path(0)).unwrap();
    assert!(serv1_log.contains("left running here: serv1"), "{serv1_log}");

    // Restarted, serv1 has its group at once, without a hook.
    c.start(0);
    c.wait("serv1 back, holding its group", 10 * SEC, |c| {
        c.status(0)
            .is_some_and(|s| s["peer_alive"] == true && s["maintenance"]["on"] == true)
            && c.phase(0, "serv1").as_deref() == Some("held")
    });
    std::thread::sleep(SEC);
    assert_eq!(hook_lines(&log), started, "kept, not restarted");
    // ... and mirrors it as before.
    common::write(&c.p.src("srv/samba/share/in-maintenance.txt"), b"kept and mirrored\n");
    c.converge("a write on the kept group", 20 * SEC);

    // Ended on serv2: both resume; each still holds its own, nothing moved.
    let (code, out, err) = maintenance(&c, "serv2", &["off"]);
    assert_eq!(code, 0, "{out}{err}\n{}", c.logs());
    assert!(out.contains("maintenance off") && out.contains("serv1 agrees"), "{out}");
    assert_eq!(maintenance_on(&c, 0), Some(false));
    std::thread::sleep(SEC);
    assert_eq!(c.phase(0, "serv1").as_deref(), Some("held"));
    assert_eq!(c.phase(1, "serv2").as_deref(), Some("held"));
    assert_eq!(hook_lines(&log), started);

    // Out of maintenance a planned stop hands over as always.
    c.stop(0);
    c.wait("serv2 took serv1's group", 10 * SEC, |c| {
        c.phase(1, "serv1").as_deref() == Some("held")
    });
    let lines = hook_lines(&log);
    let after: Vec<&str> = lines[started.len()..].iter().map(String::as_str).collect();
    assert_eq!(after, ["serv1 stop serv1", "serv2 start serv1"], "{}", c.logs());
}
