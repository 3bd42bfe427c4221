//! `hamirror status` as a monitoring check, through the real binary on two
//! real daemons in the netns lab (`tests/common/lab.rs`): each exit code
//! (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN) in the cluster state it stands
//! for, with the one-line verdict a monitoring system shows. The wrong-key
//! CRITICAL is asserted in tests/heartbeat_attacks.rs, a set retrying in
//! tests/guard.rs and tests/mirrord.rs.
//!
//! Needs root, iproute2 and arping (like tests/cluster.rs); set
//! HAMIRROR_SKIP_NETNS=1 to skip. Namespaces `hmst<pid>-…`, deleted on drop.

mod common;

use std::time::Duration;

use common::lab::{Lab, Opts, Service};
use common::netns::{netns_available, require_tool};

const SEC: Duration = Duration::from_secs(1);

/// Waits until node `i`'s `status` exits with `code`; returns its stdout.
fn wait_code(lab: &Lab, i: usize, code: i32, what: &str) -> String {
    let mut last = String::new();
    lab.wait(what, 10 * SEC, |l| {
        let (c, text) = l.status_code(i);
        last = text;
        c == Some(code)
    });
    last
}

#[test]
fn status_exits_0_ok_1_warning_2_critical_3_unknown_as_the_cluster_degrades() {
    if !netns_available() {
        return;
    }
    require_tool("arping", "iputils-arping");
    let mut lab = Lab::new(
        "hmst",
        Opts {
            service: Service::Static,
            ..Default::default()
        },
    );

    // No daemon: UNKNOWN, the reason on stdout for the monitoring system.
    let (code, text) = lab.status_code(0);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.starts_with("UNKNOWN: is `hamirror run` running?"), "{text}");
    let out = lab.status(0);
    assert!(out.is_none(), "no report without a daemon: {out:?}");

    for i in 0..2 {
        lab.start_static_responder(i);
        lab.start(i);
    }
    // Starting: WARNING until both run their own group and hear each other.
    lab.wait_both_running_own_groups();
    for i in 0..2 {
        let text = wait_code(&lab, i, 0, "status OK");
        assert!(text.starts_with("OK\n"), "{text}");
    }
    let json = lab.status(0).expect("status --json");
    assert_eq!(json["health"]["state"], "OK", "{json}");
    assert_eq!(json["health"]["code"], 0, "{json}");

    // serv1 in standby: both serve, with one node doing the work: WARNING.
    let (ok, out) = lab.command(0, &["standby"]);
    assert!(ok, "{out}");
    lab.wait("serv2 runs both groups", 10 * SEC, |l| l.holds(1, "serv1"));
    let text = wait_code(&lab, 0, 1, "serv1 WARNING");
    assert!(text.starts_with("WARNING: serv1 is in standby (operator)"), "{text}");
    let text = wait_code(&lab, 1, 1, "serv2 WARNING");
    assert!(
        text.starts_with("WARNING: group serv1 runs on serv2, not on its owner serv1"),
        "{text}"
    );

    // serv2 dies while serv1 is locked in standby: nothing runs anywhere.
    lab.node_dies(1);
    let text = wait_code(&lab, 0, 2, "serv1 CRITICAL");
    assert!(
        text.starts_with("CRITICAL: group serv1 runs on neither node; group serv2 runs on neither node"),
        "{text}"
    );
    assert!(text.contains("peer serv2 not heard"), "{text}");
    let json = lab.status(0).expect("a CRITICAL report is still a report");
    assert_eq!(json["health"]["code"], 2, "{json}");

    // The operator clears standby: serv1 takes over both. Serving: WARNING.
    let (ok, out) = lab.command(0, &["standby", "--clear"]);
    assert!(ok, "{out}");
    lab.wait("serv1 runs both groups", 10 * SEC, |l| {
        l.holds(0, "serv1") && l.holds(0, "serv2")
    });
    let text = wait_code(&lab, 0, 1, "serv1 WARNING after taking over");
    assert!(
        text.starts_with("WARNING: peer serv2 not heard (dead or absent)")
            && text.contains("group serv2 runs on serv1, not on its owner serv2"),
        "{text}"
    );
}
