//! `hamirror status`: the report the daemon sends over the control socket
//! (plain data, serde both ways so the command can print it as text or
//! pass the JSON on) and its text rendering. Times are relative ("ms
//! ago"), from the daemon's monotonic clock, so no time zone or wall-clock
//! step can make them lie. Built by the driver; knows nothing of sockets.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use super::health::HealthReport;
use super::mirror::SetBacklog;

/// Everything `hamirror status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub node: String,
    pub peer: String,
    pub pid: u32,
    pub incarnation: u64,
    pub uptime_ms: u64,
    /// `starting`, `active` or `standby`.
    pub mode: String,
    /// Why it is in standby (`operator`, `isolated`, `reach_worse`, `locked`).
    pub standby_reason: Option<String>,
    /// The standby lock file is present in `state`.
    pub standby_lock: bool,
    /// The last attempt to write or clear the lock failed with this.
    pub standby_lock_error: Option<String>,
    /// Who decides where groups run: `builtin` or `pacemaker`.
    #[serde(default)]
    pub failover: String,
    /// Maintenance mode (failover decisions frozen) as this node knows it.
    #[serde(default)]
    pub maintenance: MaintenanceReport,
    pub shutting_down: bool,
    pub peer_alive: bool,
    /// The peer's datagrams keep failing authentication: the two nodes
    /// have different heartbeat keys (nothing is taken over meanwhile).
    #[serde(default)]
    pub peer_key_mismatch: bool,
    /// The deadtime in force (stretched by flap damping).
    pub deadtime_ms: u64,
    pub flap_level: u32,
    pub reach: Option<ReachReport>,
    pub peer_reach: Option<ReachReport>,
    /// The links to `peer` (the first peer).
    pub links: Vec<LinkReport>,
    /// Every other node with its links: one in a two-node cluster (the
    /// fields above), one per node under Pacemaker.
    #[serde(default)]
    pub peers: Vec<PeerReport>,
    pub groups: Vec<GroupReport>,
    pub hooks: HooksReport,
    /// One entry per set of both groups. Backlog and lag come from the
    /// mirror side; `null` while mirroring is not running in the daemon.
    pub sets: Vec<SetBacklog>,
    /// Whether a mirror is plugged into the daemon.
    pub mirroring: bool,
    /// Most recent last.
    pub events: Vec<EventReport>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceReport {
    pub on: bool,
    /// Raised by every `hamirror maintenance on|off`, on either node.
    pub generation: u64,
    /// The peer's register from its latest heartbeat, while it is alive.
    pub peer_on: Option<bool>,
    pub peer_generation: Option<u64>,
    /// The heartbeat version the peer speaks (1: a release that knows no
    /// maintenance mode), once heard.
    pub peer_heartbeat_version: Option<u8>,
}

impl MaintenanceReport {
    /// Whether the peer has the same register (it froze or resumed too).
    pub fn peer_agrees(&self) -> bool {
        self.peer_on == Some(self.on) && self.peer_generation == Some(self.generation)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReachReport {
    pub up: u16,
    pub total: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkReport {
    pub link: String,
    /// When the peer was last heard on it; `null`: never since start.
    pub last_heard_ms_ago: Option<u64>,
    /// Silent for `warntime` (warned).
    pub silent: bool,
    /// When a datagram of the peer that failed authentication (another
    /// key) last arrived on it; `null`: none since start.
    #[serde(default)]
    pub key_mismatch_ms_ago: Option<u64>,
    /// Heartbeats of the peer accepted on it since this daemon started.
    #[serde(default)]
    pub received: u64,
    /// Datagrams refused on it (bad MAC, replays, stale, strangers).
    #[serde(default)]
    pub rejected: u64,
}

/// One other node: whether it is alive and how each link to it does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerReport {
    pub name: String,
    pub alive: bool,
    /// Its current incarnation while alive (grows at every start).
    pub incarnation: Option<u64>,
    /// Its datagrams keep failing authentication (another key).
    pub key_mismatch: bool,
    pub flap_level: u32,
    pub links: Vec<LinkReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupReport {
    pub group: String,
    pub owner: String,
    /// The node running it (or starting or stopping it), if any.
    pub holder: Option<String>,
    pub epoch: u64,
    /// This node's phase: `released`, `acquiring`, `held`, `releasing`, `stuck`.
    pub phase: String,
    /// The peer's claim from its latest heartbeat, while it is alive.
    pub peer_claim: Option<String>,
    /// The health monitor, while the group runs here and one is configured.
    #[serde(default)]
    pub health: Option<HealthReport>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HooksReport {
    /// The transition the hook worker is carrying out.
    pub running: Option<String>,
    /// Transitions waiting behind it.
    pub queued: Vec<String>,
    /// Every hook run since the daemon started, per hook and action.
    #[serde(default)]
    pub runs: Vec<crate::hooks::HookStat>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventReport {
    pub ago_ms: u64,
    /// `info`, `warning` or `critical`.
    pub level: String,
    pub event: String,
    /// The event's fields as `key=value` words.
    pub detail: String,
}

fn ago(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms ago")
    } else if ms < 120_000 {
        format!("{:.1} s ago", ms as f64 / 1000.0)
    } else {
        format!("{} min ago", ms / 60_000)
    }
}

fn reach(r: Option<ReachReport>) -> String {
    r.map_or_else(|| "unknown".into(), |r| format!("{}/{}", r.up, r.total))
}

/// "peer NAME: …", how one other node is heard.
fn peer_line(s: &mut String, name: &str, alive: bool, key_mismatch: bool) {
    let state = if alive {
        "alive"
    } else if key_mismatch {
        "MISCONFIGURED: alive, but its heartbeats fail authentication (the two nodes have different \
         heartbeat keys); nothing is taken over until both use the same key file"
    } else {
        "not heard (dead or absent)"
    };
    let _ = writeln!(s, "peer {name}: {state}");
}

impl StatusReport {
    /// One line for systemd's `STATUS=`: mode, peer, what runs here.
    pub fn summary(&self) -> String {
        let held: Vec<&str> = self
            .groups
            .iter()
            .filter(|g| g.holder.as_deref() == Some(self.node.as_str()))
            .map(|g| g.group.as_str())
            .collect();
        format!(
            "{}{}{}{}; peer {} {}; running {}",
            if self.maintenance.on { "MAINTENANCE, " } else { "" },
            if self.shutting_down { "shutting down, " } else { "" },
            self.mode,
            self.standby_reason
                .as_ref()
                .map_or_else(String::new, |r| format!(" ({r})")),
            self.peer,
            if self.peer_alive {
                "alive"
            } else if self.peer_key_mismatch {
                "MISCONFIGURED (wrong heartbeat key)"
            } else {
                "not heard"
            },
            if held.is_empty() {
                "no group".to_string()
            } else {
                format!("group {}", held.join(", "))
            }
        )
    }

    /// The human-readable form.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mode = match &self.standby_reason {
            Some(r) => format!("{} ({r})", self.mode),
            None => self.mode.clone(),
        };
        let _ = writeln!(
            s,
            "node {}: {mode}{}, up {:.1} s (pid {})",
            self.node,
            if self.shutting_down { ", shutting down" } else { "" },
            self.uptime_ms as f64 / 1000.0,
            self.pid
        );
        peer_line(&mut s, &self.peer, self.peer_alive, self.peer_key_mismatch);
        for p in self.peers.iter().skip(1) {
            peer_line(&mut s, &p.name, p.alive, p.key_mismatch);
        }
        let lock = match (&self.standby_lock, &self.standby_lock_error) {
            (_, Some(e)) => format!("ERROR: {e}"),
            (true, None) => "present (clear with `hamirror standby --clear`)".into(),
            (false, None) => "none".into(),
        };
        let _ = writeln!(s, "standby lock: {lock}");
        let m = &self.maintenance;
        if m.on {
            let _ = writeln!(
                s,
                "maintenance: ON (generation {}): failover decisions are frozen; nothing is started, stopped or \
                 taken over until `hamirror maintenance off`",
                m.generation
            );
        } else {
            let _ = writeln!(s, "maintenance: off");
        }
        if m.peer_heartbeat_version == Some(1) {
            let _ = writeln!(
                s,
                "  peer {} runs an older release (heartbeat version 1): it knows no maintenance mode and still fails over",
                self.peer
            );
        } else if self.peer_alive && !m.peer_agrees() {
            let _ = writeln!(s, "  peer {} has not adopted it yet", self.peer);
        }
        let _ = writeln!(
            s,
            "reach: {} {}, {} {}   deadtime {} ms{}",
            self.node,
            reach(self.reach),
            self.peer,
            reach(self.peer_reach),
            self.deadtime_ms,
            if self.flap_level > 0 {
                format!(" (flap damping level {})", self.flap_level)
            } else {
                String::new()
            }
        );
        let link_lines = |s: &mut String, links: &[LinkReport]| {
            for l in links {
                let heard = l
                    .last_heard_ms_ago
                    .map_or_else(|| "never heard".into(), |ms| format!("heard {}", ago(ms)));
                let mismatch = l.key_mismatch_ms_ago.map_or_else(String::new, |ms| {
                    format!(", WRONG KEY: datagram failing authentication {}", ago(ms))
                });
                let _ = writeln!(
                    s,
                    "  {:<10} {}{heard}{mismatch}",
                    l.link,
                    if l.silent { "SILENT, " } else { "" }
                );
            }
        };
        if self.peers.len() > 1 {
            for p in &self.peers {
                let _ = writeln!(s, "links to {}:", p.name);
                link_lines(&mut s, &p.links);
            }
        } else {
            let _ = writeln!(s, "links:");
            link_lines(&mut s, &self.links);
        }
        let _ = writeln!(s, "groups:");
        for g in &self.groups {
            let _ = writeln!(
                s,
                "  {:<10} holder {:<10} epoch {:<4} here: {}{}",
                g.group,
                g.holder.as_deref().unwrap_or("-"),
                g.epoch,
                g.phase,
                g.peer_claim
                    .as_ref()
                    .map_or_else(String::new, |c| format!(", {}: {c}", self.peer))
            );
            if let Some(h) = &g.health {
                let checked = h
                    .last_check_ms_ago
                    .map_or_else(|| "not checked yet".into(), |ms| format!("checked {}", ago(ms)));
                let failure = match (&h.last_failure, h.last_failure_ms_ago) {
                    (Some(f), Some(ms)) => format!("; last failure {}: {f}", ago(ms)),
                    _ => String::new(),
                };
                let state = match h.state.as_str() {
                    "ok" | "pending" => h.state.clone(),
                    other => other.to_uppercase(),
                };
                let _ = writeln!(
                    s,
                    "  {:<10} health {state}, {checked} (every {:.1} s; failures {}/{}, restarts {}/{}){failure}",
                    "",
                    h.interval_ms as f64 / 1000.0,
                    h.failures,
                    h.failures_allowed,
                    h.restarts,
                    h.restarts_allowed,
                );
            }
        }
        let _ = writeln!(
            s,
            "sets:{}",
            if self.mirroring {
                ""
            } else {
                " (mirroring is not running in this daemon)"
            }
        );
        for b in &self.sets {
            let opt = |v: Option<u64>| v.map_or_else(|| "-".into(), |v| v.to_string());
            let shipping = match (&b.shipping, &b.link) {
                (Some(st), Some(l)) => format!(", shipping {st} over {l}"),
                (Some(st), None) => format!(", shipping {st}"),
                (None, _) => ", not mirrored from here".into(),
            };
            let _ = writeln!(
                s,
                "  {:<12} group {:<10} backlog {} files / {} bytes, lag {} ms{shipping}",
                b.set,
                b.group,
                opt(b.pending_files),
                opt(b.pending_bytes),
                opt(b.lag_ms)
            );
            // With one replica the line above is its own; with more, each.
            if b.replicas.len() > 1 {
                for r in &b.replicas {
                    let _ = writeln!(
                        s,
                        "    to {:<10} acked generation {} of {}, backlog {} files, lag {} ms, shipping {}{}",
                        r.peer,
                        opt(r.acked_generation),
                        opt(b.generation),
                        opt(r.pending_files),
                        opt(r.lag_ms),
                        r.shipping.as_deref().unwrap_or("-"),
                        r.link.as_deref().map(|l| format!(" over {l}")).unwrap_or_default()
                    );
                }
            }
        }
        match &self.hooks.running {
            None => {
                let _ = writeln!(s, "hooks: idle");
            }
            Some(r) => {
                let _ = writeln!(s, "hooks: running {r}; {} queued", self.hooks.queued.len());
            }
        }
        let _ = writeln!(s, "recent events:");
        for e in &self.events {
            let _ = writeln!(s, "  {:>12}  {:<8} {} {}", ago(e.ago_ms), e.level, e.event, e.detail);
        }
        s
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::daemon::ReplicaBacklog;

    pub(crate) fn report() -> StatusReport {
        StatusReport {
            node: "serv1".into(),
            peer: "serv2".into(),
            peers: vec![],
            pid: 42,
            incarnation: 1,
            uptime_ms: 12_300,
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
            reach: Some(ReachReport { up: 3, total: 3 }),
            peer_reach: Some(ReachReport { up: 2, total: 3 }),
            links: vec![
                LinkReport {
                    link: "crossover".into(),
                    last_heard_ms_ago: Some(12),
                    silent: false,
                    key_mismatch_ms_ago: None,
                    received: 9000,
                    rejected: 2,
                },
                LinkReport {
                    link: "lan".into(),
                    last_heard_ms_ago: None,
                    silent: true,
                    key_mismatch_ms_ago: Some(300),
                    received: 0,
                    rejected: 5,
                },
            ],
            groups: vec![GroupReport {
                group: "serv1".into(),
                owner: "serv1".into(),
                holder: Some("serv1".into()),
                epoch: 3,
                phase: "held".into(),
                peer_claim: None,
                health: Some(HealthReport {
                    state: "failing".into(),
                    failures: 1,
                    failures_allowed: 3,
                    restarts: 0,
                    restarts_allowed: 1,
                    interval_ms: 10_000,
                    last_check_ms_ago: Some(1500),
                    last_failure: Some("S20smbd status exited 3 (program is not running)".into()),
                    last_failure_ms_ago: Some(1500),
                }),
            }],
            hooks: HooksReport {
                running: None,
                queued: vec![],
                runs: vec![crate::hooks::HookStat {
                    hook: "S20smbd".into(),
                    action: "status".into(),
                    ok: 41,
                    failed: 1,
                    last_ms: 12,
                    last_ok: false,
                }],
            },
            sets: vec![
                SetBacklog {
                    set: "Fsmbd".into(),
                    group: "serv1".into(),
                    ..Default::default()
                },
                SetBacklog {
                    set: "Fhttpd".into(),
                    group: "serv2".into(),
                    pending_files: Some(3),
                    pending_bytes: Some(4096),
                    lag_ms: Some(250),
                    shipping: Some("ok".into()),
                    link: Some("lan".into()),
                    last_ack_unix_ms: Some(1_700_000_000_250),
                    conflict_copies: 2,
                    generation: Some(12),
                    replicas: vec![
                        ReplicaBacklog {
                            peer: "serv2".into(),
                            pending_files: Some(0),
                            lag_ms: Some(0),
                            shipping: Some("ok".into()),
                            link: Some("crossover".into()),
                            acked_generation: Some(12),
                            last_ack_unix_ms: Some(1_700_000_000_900),
                            ..Default::default()
                        },
                        ReplicaBacklog {
                            peer: "serv3".into(),
                            pending_files: Some(3),
                            lag_ms: Some(250),
                            shipping: Some("ok".into()),
                            link: Some("lan".into()),
                            acked_generation: Some(9),
                            last_ack_unix_ms: Some(1_700_000_000_250),
                            ..Default::default()
                        },
                    ],
                },
            ],
            mirroring: false,
            events: vec![EventReport {
                ago_ms: 2500,
                level: "warning".into(),
                event: "link_silent".into(),
                detail: "link=lan silent_ms=150".into(),
            }],
        }
    }

    #[test]
    fn json_round_trips_and_text_names_what_matters() {
        let r = report();
        let back: StatusReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        let t = r.render();
        for want in [
            "node serv1: active",
            "reach: serv1 3/3, serv2 2/3",
            "crossover  heard 12 ms ago",
            "lan        SILENT, never heard, WRONG KEY: datagram failing authentication 300 ms ago",
            "serv1      holder serv1      epoch 3",
            "mirroring is not running",
            "Fsmbd",
            "not mirrored from here",
            "Fhttpd       group serv2      backlog 3 files / 4096 bytes, lag 250 ms, shipping ok over lan",
            "    to serv2      acked generation 12 of 12, backlog 0 files, lag 0 ms, shipping ok over crossover",
            "    to serv3      acked generation 9 of 12, backlog 3 files, lag 250 ms, shipping ok over lan",
            "2.5 s ago",
            "link_silent link=lan",
            "health FAILING, checked 1.5 s ago (every 10.0 s; failures 1/3, restarts 0/1); last failure 1.5 s ago: \
             S20smbd status exited 3",
        ] {
            assert!(t.contains(want), "{want:?} missing in:\n{t}");
        }
        assert!(!t.contains("links to"), "two nodes: one links block\n{t}");
    }

    /// serv1 with two peers: serv2 alive, serv3 not heard.
    pub(crate) fn three_node_report() -> StatusReport {
        let mut r = report();
        let link = |ago: Option<u64>, received| LinkReport {
            link: "crossover".into(),
            last_heard_ms_ago: ago,
            silent: ago.is_none(),
            key_mismatch_ms_ago: None,
            received,
            rejected: 0,
        };
        r.peers = vec![
            PeerReport {
                name: "serv2".into(),
                alive: true,
                incarnation: Some(7),
                links: vec![link(Some(20), 500)],
                ..Default::default()
            },
            PeerReport {
                name: "serv3".into(),
                links: vec![link(None, 0)],
                ..Default::default()
            },
        ];
        r
    }

    #[test]
    fn every_peer_is_listed_with_its_links() {
        let r = three_node_report();
        let back: StatusReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        let t = r.render();
        for want in [
            "peer serv2: alive",
            "peer serv3: not heard (dead or absent)",
            "links to serv2:\n  crossover  heard 20 ms ago",
            "links to serv3:\n  crossover  SILENT, never heard",
        ] {
            assert!(t.contains(want), "{want:?} missing in:\n{t}");
        }
    }
}
