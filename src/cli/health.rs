//! The verdict of `hamirror status`, as a monitoring check would give it
//! (Nagios plugin conventions): OK, WARNING, CRITICAL or UNKNOWN, each
//! with its exit code and the reasons, judged from the daemon's
//! [`StatusReport`] alone. Pure: no I/O, no clock (the report carries its
//! own relative times); must not depend on the daemon's internals beyond
//! that report.

use std::fmt;

use serde::Serialize;

use crate::daemon::StatusReport;

/// How the cluster stands, from one node's view. Ordered: the worst wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    /// Both nodes up, each group on its owner, every set in step.
    Ok,
    /// Serving, but with less redundancy than configured or in transition.
    Warning,
    /// A group is served nowhere this node can see, or the cluster is
    /// misconfigured in a way that blocks failover.
    Critical,
    /// The daemon could not be asked.
    Unknown,
}

impl State {
    /// The exit code of `hamirror status` (0, 1, 2, 3 as Nagios plugins).
    pub fn exit_code(self) -> i32 {
        match self {
            State::Ok => 0,
            State::Warning => 1,
            State::Critical => 2,
            State::Unknown => 3,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Warning => "WARNING",
            State::Critical => "CRITICAL",
            State::Unknown => "UNKNOWN",
        }
    }
}

/// The verdict and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    pub state: State,
    pub code: i32,
    /// One short sentence per finding, worst first.
    pub reasons: Vec<String>,
}

impl fmt::Display for Health {
    /// The one-line form monitoring systems show: `WARNING: a; b`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reasons.is_empty() {
            write!(f, "{}", self.state.name())
        } else {
            write!(f, "{}: {}", self.state.name(), self.reasons.join("; "))
        }
    }
}

impl Health {
    /// The daemon could not be asked (not running, no permission, bad
    /// configuration): `why` is the error.
    pub fn unknown(why: impl Into<String>) -> Health {
        Health {
            state: State::Unknown,
            code: State::Unknown.exit_code(),
            reasons: vec![why.into()],
        }
    }
}

/// Judges a report. `max_lag_ms`: a set behind its peer for longer than
/// this is a warning (a set being written is briefly behind all the time).
pub fn judge(r: &StatusReport, max_lag_ms: u64) -> Health {
    let mut found: Vec<(State, String)> = Vec::new();
    let mut add = |s: State, why: String| found.push((s, why));

    // Failover is blocked, or a group runs nowhere.
    if r.peer_key_mismatch {
        add(
            State::Critical,
            format!(
                "peer {} is MISCONFIGURED: its heartbeats fail authentication (different heartbeat keys)",
                r.peer
            ),
        );
    }
    if let Some(e) = &r.standby_lock_error {
        add(State::Critical, format!("the standby lock cannot be written: {e}"));
    }

    // Serving, with less redundancy (a group nowhere is CRITICAL below).
    if !r.peer_alive && !r.peer_key_mismatch {
        add(State::Warning, format!("peer {} not heard (dead or absent)", r.peer));
    }
    match r.mode.as_str() {
        "active" => {}
        "standby" => add(
            State::Warning,
            format!(
                "{} is in standby ({})",
                r.node,
                r.standby_reason.as_deref().unwrap_or("no reason given")
            ),
        ),
        other => add(State::Warning, format!("{} is {other}", r.node)),
    }
    if r.standby_lock && r.mode != "standby" {
        add(State::Warning, "the standby lock is present".to_string());
    }
    if r.shutting_down {
        add(State::Warning, format!("{} is shutting down", r.node));
    }
    if r.maintenance.on {
        add(
            State::Warning,
            "maintenance mode: failover decisions are frozen (`hamirror maintenance off` ends it)".to_string(),
        );
    }
    let settling = r.mode == "starting" || r.shutting_down;
    // Under Pacemaker, where a group runs (or that it runs nowhere) is
    // Pacemaker's decision, reported by crm_mon: no owner to be away from.
    let pacemaker = r.failover == "pacemaker";
    for g in &r.groups {
        match g.phase.as_str() {
            "stuck" => add(
                State::Critical,
                format!(
                    "group {}: its stop hooks failed here (retried; its services may still run)",
                    g.group
                ),
            ),
            "acquiring" | "releasing" => add(State::Warning, format!("group {} is {} here", g.group, g.phase)),
            _ => {}
        }
        if g.peer_claim.as_deref() == Some("failed") {
            // Running here, it lost its fallback; running nowhere is
            // CRITICAL below anyway.
            add(
                if g.holder.is_some() {
                    State::Warning
                } else {
                    State::Critical
                },
                format!("group {}: {} reports it failed there", g.group, r.peer),
            );
        }
        if let Some(h) = g
            .health
            .as_ref()
            .filter(|h| !matches!(h.state.as_str(), "ok" | "pending"))
        {
            add(
                State::Warning,
                format!(
                    "group {}: health {} ({}/{} checks failed, {}/{} restarts){}",
                    g.group,
                    h.state,
                    h.failures,
                    h.failures_allowed,
                    h.restarts,
                    h.restarts_allowed,
                    h.last_failure.as_deref().map_or_else(String::new, |f| format!(": {f}"))
                ),
            );
        }
        match &g.holder {
            None if settling || pacemaker => add(State::Warning, format!("group {} is not running yet", g.group)),
            Some(_) if pacemaker => {}
            None => add(State::Critical, format!("group {} runs on neither node", g.group)),
            Some(h) if *h != g.owner => add(
                State::Warning,
                format!(
                    "group {} runs on {h}, not on its owner {} (`hamirror takeover {}` on {} moves it back)",
                    g.group, g.owner, g.group, g.owner
                ),
            ),
            Some(_) => {}
        }
    }

    if r.peer_alive {
        for l in r.links.iter().filter(|l| l.silent) {
            add(State::Warning, format!("link {} is silent", l.link));
        }
    }
    for b in &r.sets {
        let Some(shipping) = &b.shipping else {
            continue;
        };
        if shipping != "ok" {
            add(State::Warning, format!("set {} shipping {shipping}", b.set));
        } else if let Some(lag) = b.lag_ms.filter(|l| *l > max_lag_ms) {
            add(
                State::Warning,
                format!("set {} is {} s behind its peer", b.set, lag / 1000),
            );
        }
    }

    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    let state = found.first().map_or(State::Ok, |f| f.0);
    Health {
        state,
        code: state.exit_code(),
        reasons: found.into_iter().map(|f| f.1).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::SetBacklog;
    use crate::daemon::status::{GroupReport, HooksReport, LinkReport};

    /// What a case changes in a healthy report, and a reason it must give.
    type Case = (&'static str, Box<dyn Fn(&mut StatusReport)>);

    fn group(name: &str, holder: Option<&str>, phase: &str, peer_claim: Option<&str>) -> GroupReport {
        GroupReport {
            group: name.into(),
            owner: name.into(),
            holder: holder.map(str::to_string),
            epoch: 1,
            phase: phase.into(),
            peer_claim: peer_claim.map(str::to_string),
            health: None,
        }
    }

    /// serv1's view of a healthy cluster.
    fn healthy() -> StatusReport {
        StatusReport {
            node: "serv1".into(),
            peer: "serv2".into(),
            peers: vec![],
            pid: 1,
            incarnation: 1,
            uptime_ms: 1000,
            mode: "active".into(),
            standby_reason: None,
            standby_lock: false,
            standby_lock_error: None,
            failover: "builtin".into(),
            maintenance: Default::default(),
            shutting_down: false,
            peer_alive: true,
            peer_key_mismatch: false,
            deadtime_ms: 400,
            flap_level: 0,
            reach: None,
            peer_reach: None,
            links: vec![LinkReport {
                link: "crossover".into(),
                last_heard_ms_ago: Some(10),
                silent: false,
                key_mismatch_ms_ago: None,
                ..Default::default()
            }],
            groups: vec![
                group("serv1", Some("serv1"), "held", None),
                group("serv2", Some("serv2"), "released", Some("held")),
            ],
            hooks: HooksReport::default(),
            sets: vec![SetBacklog {
                set: "Fsmbd".into(),
                group: "serv1".into(),
                pending_files: Some(0),
                pending_bytes: Some(0),
                lag_ms: Some(0),
                shipping: Some("ok".into()),
                link: Some("crossover".into()),
                ..Default::default()
            }],
            mirroring: true,
            events: vec![],
        }
    }

    #[test]
    fn a_healthy_cluster_is_ok() {
        let h = judge(&healthy(), 60_000);
        assert_eq!((h.state, h.code), (State::Ok, 0), "{h}");
        assert_eq!(h.to_string(), "OK");
    }

    #[test]
    fn a_dead_peer_whose_group_was_taken_over_is_a_warning() {
        let mut r = healthy();
        r.peer_alive = false;
        r.groups[1] = group("serv2", Some("serv1"), "held", None);
        r.sets[0].shipping = Some("retrying: peer away".into());
        let h = judge(&r, 60_000);
        assert_eq!(h.code, 1, "{h}");
        let t = h.to_string();
        for want in [
            "peer serv2 not heard",
            "group serv2 runs on serv1, not on its owner serv2",
            "retrying",
        ] {
            assert!(t.contains(want), "{want:?} in {t}");
        }
    }

    #[test]
    fn standby_a_lock_a_silent_link_a_lagging_set_and_starting_are_warnings() {
        let cases: Vec<Case> = vec![
            (
                "in standby (operator)",
                Box::new(|r| {
                    r.mode = "standby".into();
                    r.standby_reason = Some("operator".into());
                    r.standby_lock = true;
                    r.groups[0] = group("serv1", Some("serv2"), "released", Some("held"));
                }),
            ),
            ("the standby lock is present", Box::new(|r| r.standby_lock = true)),
            ("link crossover is silent", Box::new(|r| r.links[0].silent = true)),
            ("Fsmbd is 61 s behind", Box::new(|r| r.sets[0].lag_ms = Some(61_000))),
            (
                "group serv2 is not running yet",
                Box::new(|r| {
                    r.mode = "starting".into();
                    r.groups[1] = group("serv2", None, "released", None);
                }),
            ),
            (
                "group serv1 is acquiring here",
                Box::new(|r| r.groups[0].phase = "acquiring".into()),
            ),
            (
                // Its start failed on serv2 and serv1 runs it: served.
                "group serv2: serv2 reports it failed there",
                Box::new(|r| r.groups[1] = group("serv2", Some("serv1"), "held", Some("failed"))),
            ),
            (
                "group serv1: health failing (1/3 checks failed, 0/1 restarts): S20smbd status exited 3",
                Box::new(|r| {
                    r.groups[0].health = Some(crate::daemon::health::HealthReport {
                        state: "failing".into(),
                        failures: 1,
                        failures_allowed: 3,
                        restarts_allowed: 1,
                        last_failure: Some("S20smbd status exited 3".into()),
                        ..Default::default()
                    })
                }),
            ),
        ];
        for (want, f) in cases {
            let mut r = healthy();
            f(&mut r);
            let h = judge(&r, 60_000);
            assert_eq!(h.code, 1, "{want}: {h}");
            assert!(h.to_string().contains(want), "{want:?} in {h}");
        }
    }

    #[test]
    fn an_unserved_or_stuck_group_and_a_wrong_key_are_critical() {
        let cases: Vec<Case> = vec![
            (
                "group serv1 runs on neither node",
                Box::new(|r| {
                    r.mode = "standby".into();
                    r.standby_reason = Some("isolated".into());
                    r.peer_alive = false;
                    r.groups[0] = group("serv1", None, "released", None);
                    r.groups[1] = group("serv2", None, "released", None);
                }),
            ),
            (
                "its stop hooks failed",
                Box::new(|r| r.groups[0].phase = "stuck".into()),
            ),
            (
                "reports it failed there",
                Box::new(|r| r.groups[1] = group("serv2", None, "released", Some("failed"))),
            ),
            (
                "MISCONFIGURED",
                Box::new(|r| {
                    r.peer_alive = false;
                    r.peer_key_mismatch = true;
                    r.mode = "starting".into();
                    r.groups[0] = group("serv1", None, "released", None);
                    r.groups[1] = group("serv2", None, "released", None);
                }),
            ),
            (
                "cannot be written",
                Box::new(|r| r.standby_lock_error = Some("read-only file system".into())),
            ),
        ];
        for (want, f) in cases {
            let mut r = healthy();
            f(&mut r);
            let h = judge(&r, 60_000);
            assert_eq!(h.code, 2, "{want}: {h}");
            assert!(h.reasons[0].contains(want), "{want:?} first in {h}");
        }
    }

    #[test]
    fn unknown_is_three_and_the_json_names_the_state() {
        let h = Health::unknown("is `hamirror run` running? no socket at /x");
        assert_eq!(h.code, 3);
        assert_eq!(
            serde_json::to_value(&h).unwrap(),
            serde_json::json!({"state": "UNKNOWN", "code": 3, "reasons": ["is `hamirror run` running? no socket at /x"]})
        );
    }
}
