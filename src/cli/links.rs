//! `hamirror links`: runs this node's heartbeat endpoint, reachlist prober
//! and arbiter in the foreground and prints what happens — links going
//! silent and coming back, the peer's state, reach scores, and the
//! decisions the arbiter takes — as log lines or JSON lines. Hooks are not
//! run: every start or stop is reported done at once, and nothing is
//! written (the standby lock is only read). Its heartbeats are flagged as a
//! diagnostic run, so a daemon on the peer never yields to it.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};

use super::{EXIT_OK, Global, local};
use crate::arbiter::{Action, Arbiter, ArbiterConfig, Event, Millis, NodeState, Startup, claim_name};
use crate::config::values::parse_duration;
use crate::failover::{self, Endpoint, EndpointConfig, Input, Prober, rt};

#[derive(Debug, Args)]
pub struct LinksArgs {
    /// Print one JSON object per line instead of log lines.
    #[arg(long)]
    pub json: bool,
    /// Stop after this long (e.g. 30s); default: run until interrupted.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Do not ask for real-time priority or locked memory.
    #[arg(long)]
    pub no_realtime: bool,
}

struct Printer {
    json: bool,
    node: String,
}

impl Printer {
    fn line(&self, at: Millis, kind: &str, mut v: Value) {
        if let Value::Object(m) = &mut v {
            m.insert("t_ms".into(), json!(at.0));
            m.insert("node".into(), json!(self.node));
            m.insert("kind".into(), json!(kind));
        }
        if self.json {
            println!("{v}");
            return;
        }
        let mut s = format!("{:>10.3} {} {kind}", at.0 as f64 / 1000.0, self.node);
        if let Value::Object(m) = &v {
            for (k, val) in m {
                if matches!(k.as_str(), "t_ms" | "node" | "kind") {
                    continue;
                }
                match val {
                    Value::String(x) => s.push_str(&format!(" {k}={x}")),
                    other => s.push_str(&format!(" {k}={other}")),
                }
            }
        }
        println!("{s}");
    }
}

fn state_json(s: &NodeState) -> Value {
    let groups: BTreeMap<&str, Value> = s
        .groups
        .iter()
        .map(|c| {
            (
                c.group.as_str(),
                json!({"epoch": c.epoch, "claim": claim_name(c.claim)}),
            )
        })
        .collect();
    json!({
        "standby": s.standby,
        "starting": s.starting,
        "observer": s.observer,
        "reach": s.reach.map(|r| json!({"up": r.up, "total": r.total})),
        "groups": groups,
    })
}

pub fn run(global: &Global, args: &LinksArgs) -> anyhow::Result<i32> {
    let (cluster, name) = global.load_local()?;
    let me = local(&cluster, &name);
    let key_file = me
        .conf
        .heartbeat_key
        .clone()
        .ok_or_else(|| failover::FailoverError::NoKeyFile(me.conf_file.clone()))?;
    let keys = failover::load_keys(&key_file)?;
    // Heartbeats know one peer (more nodes: docs/PACEMAKER.md).
    cluster.sole_peer(&name).map_err(anyhow::Error::msg)?;
    let mut cfg = ArbiterConfig::from_cluster(&cluster, &name).context("node not in the cluster")?;
    cfg.observer = true;
    let links = failover::links(&cluster, &name).context("node not in the cluster")?;
    let out = Printer {
        json: args.json,
        node: name.clone(),
    };
    if let Some(w) = failover::key_file_warning(&key_file) {
        out.line(rt::now(), "note", json!({"note": w}));
    }
    let realtime = !args.no_realtime;
    if realtime && let Err(e) = rt::lock_memory() {
        out.line(rt::now(), "note", json!({"note": format!("memory not locked: {e}")}));
    }
    let standby_lock = me.conf.state.join(failover::STANDBY_LOCK).exists();
    let started = rt::now();
    let mut arbiter = Arbiter::new(
        cfg.clone(),
        started,
        Startup {
            standby_lock,
            epochs: BTreeMap::new(),
            ..Startup::default()
        },
    );
    let (tx, rx) = mpsc::channel();
    // A diagnostic run is an incarnation of this node too: the daemon's
    // next one must be larger, or the peer would refuse it.
    let incarnation = std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&me.conf.state)
        .and_then(|()| failover::incarnation::next_own(&me.conf.state))
        .unwrap_or_else(|_| failover::new_incarnation());
    let endpoint = Endpoint::start(
        EndpointConfig {
            local: name.clone(),
            peers: vec![failover::PeerAddrs {
                name: cfg.peer.clone(),
                links: links.clone(),
                floor: failover::incarnation::load_peer(&me.conf.state),
            }],
            keepalive: cfg.timers.keepalive,
            keys,
            record_in: None,
            incarnation,
            realtime,
        },
        arbiter.advert().clone(),
        tx.clone(),
    )?;
    let _prober = Prober::start(cluster.reachlist.clone(), cfg.timers, realtime, tx)?;
    if realtime && let Err(e) = rt::set_realtime(rt::PROBE_PRIORITY) {
        out.line(
            rt::now(),
            "note",
            json!({"note": format!("arbiter loop at normal priority: {e}")}),
        );
    }
    let link_names: Vec<Value> = links
        .iter()
        .map(|l| json!({"link": l.name, "local": l.local.to_string(), "peer": l.peer.to_string()}))
        .collect();
    out.line(
        started,
        "start",
        json!({
            "peer": cfg.peer,
            "incarnation": incarnation,
            "links": link_names,
            "keepalive_ms": cfg.timers.keepalive.as_millis() as u64,
            "warntime_ms": cfg.timers.warntime.as_millis() as u64,
            "deadtime_ms": cfg.timers.deadtime.as_millis() as u64,
            "initdead_ms": cfg.timers.initdead.as_millis() as u64,
            "standby_lock": standby_lock,
        }),
    );

    let end = args.duration.map(|d| started + d);
    let mut advert_gen = arbiter.advert_generation();
    let mut peer_seen: Option<NodeState> = None;
    let mut reach_seen = None;
    let mut heard = vec![false; links.len()];
    loop {
        drain(&mut arbiter, &out);
        if arbiter.advert_generation() != advert_gen {
            advert_gen = arbiter.advert_generation();
            endpoint.set_state(arbiter.advert().clone());
        }
        let now = rt::now();
        if end.is_some_and(|e| now >= e) {
            break;
        }
        let deadline = arbiter.poll_timeout().min(end.unwrap_or(Millis(u64::MAX)));
        let wait = Duration::from_millis(deadline.0.saturating_sub(now.0));
        let first = match rx.recv_timeout(wait) {
            Ok(i) => Some(i),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => anyhow::bail!("heartbeat or prober thread ended"),
        };
        // Every pending input first, then the timers: a queued heartbeat
        // must never lose against a deadline.
        for input in first.into_iter().chain(rx.try_iter()) {
            match input {
                Input::Heartbeat {
                    at,
                    link,
                    incarnation,
                    state,
                    ..
                } => {
                    if let Some(h) = heard.get_mut(usize::from(link.0))
                        && !*h
                    {
                        *h = true;
                        out.line(at, "link_heard", json!({"link": cfg.links.get(usize::from(link.0))}));
                    }
                    if peer_seen.as_ref() != Some(&state) {
                        let mut v = state_json(&state);
                        v["link"] = json!(cfg.links.get(usize::from(link.0)));
                        v["incarnation"] = json!(incarnation);
                        out.line(at, "peer_state", v);
                        peer_seen = Some(state.clone());
                    }
                    arbiter.handle_heartbeat(at, link, incarnation, state);
                }
                Input::Reach { at, reach, hosts } => {
                    if reach_seen != Some(reach) {
                        reach_seen = Some(reach);
                        let hosts: BTreeMap<String, Option<bool>> = hosts.into_iter().collect();
                        out.line(at, "reach", json!({"up": reach.up, "total": reach.total, "hosts": hosts}));
                    }
                    arbiter.handle_reach(at, reach);
                }
                Input::Rejected {
                    at,
                    link,
                    from,
                    reason,
                    count,
                    ..
                } => out.line(
                    at,
                    "rejected",
                    json!({"link": cfg.links.get(usize::from(link.0)), "from": from.to_string(), "reason": reason, "count": count}),
                ),
                Input::BadKey { at, link, .. } => arbiter.handle_bad_key(at, link),
                Input::SendFailed { at, link, error } => out.line(
                    at,
                    "send_failed",
                    json!({"link": cfg.links.get(usize::from(link.0)), "error": error}),
                ),
                Input::Note(note) => out.line(rt::now(), "note", json!({"note": note})),
            }
            drain(&mut arbiter, &out);
        }
        arbiter.handle_timeout(rt::now());
    }
    out.line(rt::now(), "stop", serde_json::to_value(arbiter.status())?);
    Ok(EXIT_OK)
}

/// Prints the arbiter's actions and plays the hooks as instantly done.
fn drain(arbiter: &mut Arbiter, out: &Printer) {
    while let Some(action) = arbiter.poll_action() {
        let now = rt::now();
        match &action {
            Action::Notify(e) => {
                let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
                v["level"] = json!(format!("{:?}", e.level()).to_lowercase());
                out.line(now, "event", v);
                if let Event::PeerDead { .. } = e {
                    // Also as a status line: what a reader waits for.
                    out.line(now, "peer", json!({"alive": false}));
                }
            }
            other => out.line(now, "action", serde_json::to_value(other).unwrap_or(Value::Null)),
        }
        match action {
            Action::Acquire { group, .. } => arbiter.handle_acquired(rt::now(), &group, true),
            Action::Release { group, .. } => arbiter.handle_released(rt::now(), &group, true),
            _ => {}
        }
    }
}
