//! Prometheus metrics of the daemon: the text exposition format rendered
//! from the same [`StatusReport`] `hamirror status` prints (so the two never
//! disagree), served over plain HTTP on `metrics_listen` and/or written
//! atomically to `metrics_textfile` for node_exporter's textfile collector.
//! Both are off by default. The last `hamirror verify` of each set is read
//! from `state/verify/SET.json`, which `verify` writes.
//!
//! The HTTP side is a few lines over `std::net` (GET /metrics, one request
//! per connection): no web framework for one read-only page. It asks the
//! driver for its report over the driver's own channel, like the control
//! socket, so it never touches the arbiter's state directly. Must not
//! depend on tokio.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Msg;
use super::control::{Request, Response};
use super::status::{LinkReport, StatusReport};

/// How often `metrics_textfile` is rewritten.
pub const TEXTFILE_EVERY: Duration = Duration::from_secs(5);

/// The outcome of the last `hamirror verify` of a set, kept in the state
/// directory for the metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRecord {
    pub set: String,
    /// When it finished (Unix ms).
    pub unix_ms: u64,
    /// Differences found (0: identical).
    pub differences: u64,
}

fn verify_dir(state: &Path) -> PathBuf {
    state.join("verify")
}

/// Records a verify result (temp file + rename: a scrape never reads half).
pub fn record_verify(state: &Path, set: &str, differences: u64) -> std::io::Result<()> {
    let dir = verify_dir(state);
    std::fs::create_dir_all(&dir)?;
    let rec = VerifyRecord {
        set: set.to_string(),
        unix_ms: unix_ms(),
        differences,
    };
    let tmp = dir.join(format!(".{set}.json.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(&rec).map_err(std::io::Error::other)?)?;
    std::fs::rename(tmp, dir.join(format!("{set}.json")))
}

/// Every verify result recorded in `state` (unreadable ones are skipped).
pub fn read_verify(state: &Path) -> Vec<VerifyRecord> {
    let Ok(rd) = std::fs::read_dir(verify_dir(state)) else {
        return vec![];
    };
    let mut v: Vec<VerifyRecord> = rd
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect();
    v.sort_by(|a, b| a.set.cmp(&b.set));
    v
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A label value as the exposition format wants it.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Writes one metric family: HELP, TYPE and its samples.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", esc(v))).collect();
        let labels = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", labels.join(","))
        };
        let _ = writeln!(self.0, "{name}{labels} {value}");
    }

    fn gauge(&mut self, name: &str, help: &str, samples: &[(Vec<(&str, &str)>, f64)]) {
        self.family(name, "gauge", help);
        for (l, v) in samples {
            self.sample(name, l, *v);
        }
    }
}

fn b(v: bool) -> f64 {
    if v { 1.0 } else { 0.0 }
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// Each peer's links with the labels of its samples: `link`, and `peer`
/// too when there is more than one peer (fan-out under Pacemaker; a
/// two-node cluster's series keep their labels).
fn peer_links(r: &StatusReport) -> Vec<(Vec<(&str, &str)>, &LinkReport)> {
    if r.peers.len() > 1 {
        r.peers
            .iter()
            .flat_map(|p| {
                p.links
                    .iter()
                    .map(|l| (vec![("peer", p.name.as_str()), ("link", l.link.as_str())], l))
            })
            .collect()
    } else {
        r.links.iter().map(|l| (vec![("link", l.link.as_str())], l)).collect()
    }
}

/// The exposition text for one report and the recorded verify results.
pub fn render(r: &StatusReport, verify: &[VerifyRecord]) -> String {
    let mut o = Out(String::new());
    let links = peer_links(r);
    let version = env!("CARGO_PKG_VERSION");
    let protocol = hamirror_wire::PROTOCOL_VERSION.to_string();
    o.gauge(
        "hamirror_info",
        "This daemon: node, peer, version and mirror protocol version.",
        &[(
            vec![
                ("node", r.node.as_str()),
                ("peer", r.peer.as_str()),
                ("version", version),
                ("protocol", protocol.as_str()),
            ],
            1.0,
        )],
    );
    o.gauge(
        "hamirror_uptime_seconds",
        "Seconds since the daemon started.",
        &[(vec![], secs(r.uptime_ms))],
    );
    let modes: Vec<_> = ["starting", "active", "standby"]
        .iter()
        .map(|m| (vec![("mode", *m)], b(r.mode == *m)))
        .collect();
    o.gauge("hamirror_mode", "1 for the mode this node is in.", &modes);
    o.gauge(
        "hamirror_maintenance",
        "1 while maintenance mode freezes failover decisions (`hamirror maintenance on`).",
        &[(vec![], b(r.maintenance.on))],
    );
    o.gauge(
        "hamirror_standby_lock",
        "1 while the standby lock file is present.",
        &[(vec![], b(r.standby_lock))],
    );
    o.gauge(
        "hamirror_peer_alive",
        "1 while the peer is heard within deadtime on some link.",
        &if r.peers.len() > 1 {
            r.peers
                .iter()
                .map(|p| (vec![("peer", p.name.as_str())], b(p.alive)))
                .collect::<Vec<_>>()
        } else {
            vec![(vec![], b(r.peer_alive))]
        },
    );
    o.gauge(
        "hamirror_peer_key_mismatch",
        "1 while the peer's heartbeats fail authentication (different keys).",
        &[(vec![], b(r.peer_key_mismatch))],
    );
    o.gauge(
        "hamirror_deadtime_seconds",
        "Deadtime in force (stretched by flap damping).",
        &[(vec![], secs(r.deadtime_ms))],
    );
    let mut reach = vec![];
    for (node, rr) in [(r.node.as_str(), r.reach), (r.peer.as_str(), r.peer_reach)] {
        if let Some(rr) = rr {
            reach.push((node, rr));
        }
    }
    o.gauge(
        "hamirror_reach_hosts_up",
        "Reachlist hosts answering, as each node last reported.",
        &reach
            .iter()
            .map(|(n, rr)| (vec![("node", *n)], f64::from(rr.up)))
            .collect::<Vec<_>>(),
    );
    o.gauge(
        "hamirror_reach_hosts_total",
        "Reachlist hosts probed.",
        &reach
            .iter()
            .map(|(n, rr)| (vec![("node", *n)], f64::from(rr.total)))
            .collect::<Vec<_>>(),
    );
    o.gauge(
        "hamirror_link_last_heard_seconds",
        "Seconds since the peer was last heard on the link (absent: never).",
        &links
            .iter()
            .filter_map(|(labels, l)| l.last_heard_ms_ago.map(|ms| (labels.clone(), secs(ms))))
            .collect::<Vec<_>>(),
    );
    o.gauge(
        "hamirror_link_silent",
        "1 while the link has been silent for warntime.",
        &links
            .iter()
            .map(|(labels, l)| (labels.clone(), b(l.silent)))
            .collect::<Vec<_>>(),
    );
    o.family(
        "hamirror_heartbeats_received_total",
        "counter",
        "Heartbeats of the peer accepted on the link (loss: compare its rate with 1/keepalive).",
    );
    for (labels, l) in &links {
        o.sample("hamirror_heartbeats_received_total", labels, l.received as f64);
    }
    o.family(
        "hamirror_heartbeats_rejected_total",
        "counter",
        "Datagrams refused on the link (bad MAC, replay, stale, stranger).",
    );
    for l in &r.links {
        o.sample(
            "hamirror_heartbeats_rejected_total",
            &[("link", &l.link)],
            l.rejected as f64,
        );
    }
    o.gauge(
        "hamirror_group_held",
        "1 while the group runs (or starts or stops) on this node.",
        &r.groups
            .iter()
            .map(|g| {
                (
                    vec![("group", g.group.as_str())],
                    b(g.holder.as_deref() == Some(r.node.as_str())),
                )
            })
            .collect::<Vec<_>>(),
    );
    o.gauge(
        "hamirror_group_running",
        "1 while some node runs the group, as seen from here.",
        &r.groups
            .iter()
            .map(|g| (vec![("group", g.group.as_str())], b(g.holder.is_some())))
            .collect::<Vec<_>>(),
    );
    o.gauge(
        "hamirror_group_holder",
        "1 for the node running the group.",
        &r.groups
            .iter()
            .filter_map(|g| {
                g.holder
                    .as_deref()
                    .map(|h| (vec![("group", g.group.as_str()), ("holder", h)], 1.0))
            })
            .collect::<Vec<_>>(),
    );
    o.gauge(
        "hamirror_group_epoch",
        "The group's epoch (raised at every change of holder).",
        &r.groups
            .iter()
            .map(|g| (vec![("group", g.group.as_str())], g.epoch as f64))
            .collect::<Vec<_>>(),
    );
    let health: Vec<_> = r
        .groups
        .iter()
        .filter_map(|g| g.health.as_ref().map(|h| (g.group.as_str(), h)))
        .collect();
    o.gauge(
        "hamirror_group_health_ok",
        "1 while the group's last health check passed (groups monitored here).",
        &health
            .iter()
            .map(|(g, h)| (vec![("group", *g)], b(h.failures == 0 && h.state != "restarting")))
            .collect::<Vec<_>>(),
    );
    o.gauge(
        "hamirror_group_health_failures",
        "Failed health checks in a row.",
        &health
            .iter()
            .map(|(g, h)| (vec![("group", *g)], f64::from(h.failures)))
            .collect::<Vec<_>>(),
    );
    o.gauge(
        "hamirror_group_health_restarts",
        "Restarts by the health monitor within monitor_window.",
        &health
            .iter()
            .map(|(g, h)| (vec![("group", *g)], f64::from(h.restarts)))
            .collect::<Vec<_>>(),
    );
    let set_gauge = |o: &mut Out, name: &str, help: &str, f: &dyn Fn(&super::SetBacklog) -> Option<f64>| {
        o.gauge(
            name,
            help,
            &r.sets
                .iter()
                .filter_map(|s| f(s).map(|v| (vec![("set", s.set.as_str()), ("group", s.group.as_str())], v)))
                .collect::<Vec<_>>(),
        );
    };
    set_gauge(
        &mut o,
        "hamirror_set_backlog_files",
        "Files changed here the peer has not acknowledged (sets mirrored from here).",
        &|s| s.pending_files.map(|v| v as f64),
    );
    set_gauge(&mut o, "hamirror_set_backlog_bytes", "Their size now.", &|s| {
        s.pending_bytes.map(|v| v as f64)
    });
    set_gauge(
        &mut o,
        "hamirror_set_lag_seconds",
        "How long the set has been behind on the peer (0: in step).",
        &|s| s.lag_ms.map(secs),
    );
    set_gauge(
        &mut o,
        "hamirror_set_shipping_ok",
        "1 while shipping to the peer works (absent: not mirrored from here).",
        &|s| s.shipping.as_deref().map(|st| b(st == "ok")),
    );
    set_gauge(
        &mut o,
        "hamirror_set_last_ack_timestamp_seconds",
        "When the peer last confirmed holding everything shipped (Unix time).",
        &|s| s.last_ack_unix_ms.map(secs),
    );
    // Per replica: every peer a set is mirrored to, labelled `peer`.
    for (name, help) in REPLICA_GAUGES {
        let mut samples = Vec::new();
        for s in &r.sets {
            for p in &s.replicas {
                if let Some(v) = replica_figure(name, p) {
                    let labels = [
                        ("set", s.set.as_str()),
                        ("group", s.group.as_str()),
                        ("peer", p.peer.as_str()),
                    ];
                    samples.push((labels.to_vec(), v));
                }
            }
        }
        o.gauge(&format!("hamirror_replica_{name}"), help, &samples);
    }
    o.family(
        "hamirror_set_conflict_copies_total",
        "counter",
        "Conflict copies made for the set (a split brain was resolved by keeping both versions).",
    );
    for s in &r.sets {
        o.sample(
            "hamirror_set_conflict_copies_total",
            &[("set", &s.set), ("group", &s.group)],
            s.conflict_copies as f64,
        );
    }
    o.gauge(
        "hamirror_set_verify_differences",
        "Differences the last `hamirror verify` of the set found (0: identical).",
        &verify
            .iter()
            .map(|v| (vec![("set", v.set.as_str())], v.differences as f64))
            .collect::<Vec<_>>(),
    );
    o.gauge(
        "hamirror_set_verify_timestamp_seconds",
        "When the last `hamirror verify` of the set finished (Unix time).",
        &verify
            .iter()
            .map(|v| (vec![("set", v.set.as_str())], secs(v.unix_ms)))
            .collect::<Vec<_>>(),
    );
    o.family(
        "hamirror_hook_runs_total",
        "counter",
        "Hook runs by hook, action and result.",
    );
    for h in &r.hooks.runs {
        for (result, n) in [("ok", h.ok), ("failed", h.failed)] {
            o.sample(
                "hamirror_hook_runs_total",
                &[("hook", &h.hook), ("action", &h.action), ("result", result)],
                n as f64,
            );
        }
    }
    o.gauge(
        "hamirror_hook_last_duration_seconds",
        "How long the hook's last run with this action took.",
        &r.hooks
            .runs
            .iter()
            .map(|h| {
                (
                    vec![("hook", h.hook.as_str()), ("action", h.action.as_str())],
                    secs(h.last_ms),
                )
            })
            .collect::<Vec<_>>(),
    );
    o.0
}

/// Asks the driver for its report, like `hamirror status` does.
fn ask(tx: &Sender<Msg>) -> Option<StatusReport> {
    let (reply, rx) = mpsc::channel();
    tx.send(Msg::Control {
        req: Request::Status,
        reply,
    })
    .ok()?;
    let r: Response = rx.recv_timeout(Duration::from_secs(2)).ok()?;
    r.status.map(|s| *s)
}

/// Serves `GET /metrics` on `addr` from a thread of its own.
pub fn serve(addr: SocketAddr, tx: Sender<Msg>, state: PathBuf) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        super::worker::normal_priority();
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            if let Err(e) = answer(conn, &tx, &state) {
                tracing::debug!("metrics request: {e}");
            }
        }
    })?;
    Ok(())
}

fn answer(mut conn: TcpStream, tx: &Sender<Msg>, state: &Path) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, kind, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => match ask(tx) {
            Some(r) => (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                render(&r, &read_verify(state)),
            ),
            None => (
                "503 Service Unavailable",
                "text/plain",
                "the daemon did not answer\n".into(),
            ),
        },
        ("GET" | "HEAD", "/") => ("200 OK", "text/plain", "hamirror: metrics at /metrics\n".into()),
        ("GET" | "HEAD", _) => ("404 Not Found", "text/plain", "not found; try /metrics\n".into()),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let mut out = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    conn.write_all(&out)
}

/// Rewrites `path` every [`TEXTFILE_EVERY`] (temp file + rename) from a
/// thread of its own.
pub fn write_textfile(path: PathBuf, tx: Sender<Msg>, state: PathBuf) -> std::io::Result<()> {
    std::thread::Builder::new().name("metrics-file".into()).spawn(move || {
        super::worker::normal_priority();
        let tmp = path.with_extension("prom.tmp");
        let mut warned = false;
        loop {
            let Some(r) = ask(&tx) else {
                // The driver is gone: the daemon is exiting.
                return;
            };
            let written =
                std::fs::write(&tmp, render(&r, &read_verify(&state))).and_then(|()| std::fs::rename(&tmp, &path));
            match written {
                Ok(()) => warned = false,
                Err(e) if !warned => {
                    warned = true;
                    tracing::warn!("metrics_textfile {}: {e}", path.display());
                }
                Err(_) => {}
            }
            std::thread::sleep(TEXTFILE_EVERY);
        }
    })?;
    Ok(())
}

/// The per-replica gauges (`hamirror_replica_NAME`) and their help.
const REPLICA_GAUGES: [(&str, &str); 4] = [
    ("backlog_files", "Files changed here this replica has not acknowledged."),
    ("lag_seconds", "How long this replica has been behind (0: in step)."),
    (
        "acked_generation",
        "This node's generation the replica acknowledged last.",
    ),
    (
        "last_ack_timestamp_seconds",
        "When the replica last held everything shipped (Unix time).",
    ),
];

/// One of [`REPLICA_GAUGES`] for one replica (`None`: unknown, no sample).
fn replica_figure(name: &str, p: &super::ReplicaBacklog) -> Option<f64> {
    match name {
        "backlog_files" => p.pending_files.map(|v| v as f64),
        "lag_seconds" => p.lag_ms.map(secs),
        "acked_generation" => p.acked_generation.map(|v| v as f64),
        "last_ack_timestamp_seconds" => p.last_ack_unix_ms.map(secs),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::status::tests::report;

    /// Parses the exposition text back: (name{labels}, value) per sample,
    /// checking every family is announced before its samples.
    fn samples(text: &str) -> Vec<(String, f64)> {
        let mut typed = std::collections::BTreeSet::new();
        let mut out = vec![];
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split_whitespace().next().unwrap().to_string());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (key, value) = line.rsplit_once(' ').unwrap();
            let name = key.split('{').next().unwrap();
            assert!(typed.contains(name), "{name} has no TYPE line");
            out.push((key.to_string(), value.parse().unwrap()));
        }
        out
    }

    fn value(text: &str, key: &str) -> f64 {
        samples(text)
            .into_iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("{key} missing in:\n{text}"))
            .1
    }

    #[test]
    fn the_report_becomes_prometheus_text() {
        let r = report();
        let verify = vec![VerifyRecord {
            set: "Fsmbd".into(),
            unix_ms: 1_700_000_000_000,
            differences: 3,
        }];
        let t = render(&r, &verify);
        assert_eq!(value(&t, "hamirror_peer_alive"), 1.0);
        assert_eq!(value(&t, r#"hamirror_mode{mode="active"}"#), 1.0);
        assert_eq!(value(&t, r#"hamirror_mode{mode="standby"}"#), 0.0);
        assert_eq!(
            value(&t, r#"hamirror_link_last_heard_seconds{link="crossover"}"#),
            0.012
        );
        assert!(
            !t.contains(r#"hamirror_link_last_heard_seconds{link="lan"}"#),
            "never heard: absent"
        );
        assert_eq!(
            value(&t, r#"hamirror_heartbeats_received_total{link="crossover"}"#),
            9000.0
        );
        assert_eq!(value(&t, r#"hamirror_heartbeats_rejected_total{link="lan"}"#), 5.0);
        assert_eq!(value(&t, r#"hamirror_group_held{group="serv1"}"#), 1.0);
        assert_eq!(value(&t, r#"hamirror_group_holder{group="serv1",holder="serv1"}"#), 1.0);
        assert_eq!(value(&t, r#"hamirror_group_epoch{group="serv1"}"#), 3.0);
        assert_eq!(value(&t, r#"hamirror_group_health_failures{group="serv1"}"#), 1.0);
        assert_eq!(value(&t, r#"hamirror_group_health_ok{group="serv1"}"#), 0.0);
        assert_eq!(
            value(&t, r#"hamirror_set_backlog_bytes{set="Fhttpd",group="serv2"}"#),
            4096.0
        );
        assert_eq!(
            value(&t, r#"hamirror_set_lag_seconds{set="Fhttpd",group="serv2"}"#),
            0.25
        );
        assert_eq!(
            value(&t, r#"hamirror_set_shipping_ok{set="Fhttpd",group="serv2"}"#),
            1.0
        );
        assert_eq!(
            value(
                &t,
                r#"hamirror_set_last_ack_timestamp_seconds{set="Fhttpd",group="serv2"}"#
            ),
            1_700_000_000.25
        );
        assert_eq!(
            value(&t, r#"hamirror_set_conflict_copies_total{set="Fhttpd",group="serv2"}"#),
            2.0
        );
        assert_eq!(value(&t, r#"hamirror_set_verify_differences{set="Fsmbd"}"#), 3.0);
        for (peer, acked, files) in [("serv2", 12.0, 0.0), ("serv3", 9.0, 3.0)] {
            let labels = format!(r#"{{set="Fhttpd",group="serv2",peer="{peer}"}}"#);
            assert_eq!(value(&t, &format!("hamirror_replica_acked_generation{labels}")), acked);
            assert_eq!(value(&t, &format!("hamirror_replica_backlog_files{labels}")), files);
        }
        assert_eq!(
            value(
                &t,
                r#"hamirror_hook_runs_total{hook="S20smbd",action="status",result="failed"}"#
            ),
            1.0
        );
        assert_eq!(
            value(
                &t,
                r#"hamirror_hook_last_duration_seconds{hook="S20smbd",action="status"}"#
            ),
            0.012
        );
        assert!(t.contains(&format!("protocol=\"{}\"", hamirror_wire::PROTOCOL_VERSION)));
    }

    #[test]
    fn with_several_peers_liveness_and_links_are_labelled_by_peer() {
        let t = render(&crate::daemon::status::tests::three_node_report(), &[]);
        assert_eq!(value(&t, r#"hamirror_peer_alive{peer="serv2"}"#), 1.0);
        assert_eq!(value(&t, r#"hamirror_peer_alive{peer="serv3"}"#), 0.0);
        assert_eq!(
            value(
                &t,
                r#"hamirror_heartbeats_received_total{peer="serv2",link="crossover"}"#
            ),
            500.0
        );
        assert_eq!(value(&t, r#"hamirror_link_silent{peer="serv3",link="crossover"}"#), 1.0);
        // No unlabelled series beside them.
        assert!(!t.lines().any(|l| l.starts_with("hamirror_peer_alive ")), "{t}");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut r = report();
        r.node = "a\"b\\c\nd".into();
        let t = render(&r, &[]);
        assert!(t.contains(r#"node="a\"b\\c\nd""#), "{t}");
    }

    #[test]
    fn verify_records_round_trip_through_the_state_directory() {
        let d = tempfile::tempdir().unwrap();
        assert!(read_verify(d.path()).is_empty());
        record_verify(d.path(), "Fsmbd", 0).unwrap();
        record_verify(d.path(), "Flpd", 7).unwrap();
        let v = read_verify(d.path());
        assert_eq!(
            v.iter().map(|r| (r.set.as_str(), r.differences)).collect::<Vec<_>>(),
            [("Flpd", 7), ("Fsmbd", 0)]
        );
    }
}
