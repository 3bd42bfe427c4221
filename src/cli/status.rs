//! `hamirror status`: asks the running daemon (over `state/control.sock`)
//! for its view — per group holder and epoch, links, reach scores, the
//! standby lock, hooks at work, each set's backlog and lag, recent events —
//! and prints it as text or, with `--json`, as the daemon's JSON, led by
//! the verdict of [`super::health`] whose code is the exit code (0 OK,
//! 1 WARNING, 2 CRITICAL, 3 UNKNOWN: a monitoring check). Also the socket
//! helper the other operator commands share.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use super::health::{self, Health};
use super::{Global, local};
use crate::daemon::{Request, Response, StatusReport, control};

/// How long a command waits for the daemon's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
#[command(after_help = "Exit codes (as a Nagios check; the first line says why):\n  \
0 OK        the peer alive, each group on its owner, every set in step\n  \
1 WARNING   serving with less redundancy: the peer dead (its group taken over), standby, a group on\n              \
the other node, a silent link, a set retrying or behind, starting\n  \
2 CRITICAL  a group runs on neither node or its stop failed, the peer has another heartbeat key\n  \
3 UNKNOWN   the daemon did not answer\n\n\
Examples:\n  hamirror status\n  hamirror status --json | jq .health\n  hamirror status --max-lag 300 >/dev/null || alert")]
pub struct StatusArgs {
    /// Print the daemon's JSON report (with a `health` object) instead of text.
    #[arg(long)]
    pub json: bool,
    /// A set behind its peer for longer than this many seconds is a WARNING.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub max_lag: u64,
    /// Print only GROUP's phase on this node, who decides and the daemon's
    /// pid, e.g. `held pacemaker 1234` (for scripts and the OCF agent): exit
    /// 0, 2 no such group, 3 the daemon did not answer.
    #[arg(long, value_name = "GROUP", conflicts_with = "json")]
    pub phase: Option<String>,
}

/// The control socket of the local node's daemon.
pub fn socket(global: &Global) -> anyhow::Result<PathBuf> {
    let (cluster, name) = global.load_local()?;
    Ok(crate::daemon::StateDir::open(&local(&cluster, &name).conf.state)
        .map(|s| s.control_socket())
        .unwrap_or_else(|_| {
            local(&cluster, &name)
                .conf
                .state
                .join(crate::daemon::state::CONTROL_SOCKET)
        }))
}

/// One request; a refusal becomes an error with the daemon's words.
pub fn ask(socket: &std::path::Path, req: &Request) -> anyhow::Result<Response> {
    let r = control::call(socket, req, ANSWER_TIMEOUT)?;
    if !r.ok {
        anyhow::bail!("{}", r.error.unwrap_or_else(|| "refused".into()));
    }
    Ok(r)
}

/// The daemon's status report.
pub fn fetch(socket: &std::path::Path) -> anyhow::Result<StatusReport> {
    ask(socket, &Request::Status)?
        .status
        .map(|s| *s)
        .context("the daemon answered without a status")
}

/// An operator command: sends `req`, prints the daemon's answer, then
/// (unless `no_wait`) reads the status every `every` until `settled` gives
/// an exit code (it gets the report and the time since the request), or
/// `timeout` passes: then `late` says why and gives the code.
pub fn command_and_wait(
    socket: &std::path::Path,
    req: &Request,
    (no_wait, timeout, every): (bool, Duration, Duration),
    mut settled: impl FnMut(&StatusReport, Duration) -> Option<i32>,
    late: impl FnOnce(&StatusReport) -> i32,
) -> anyhow::Result<i32> {
    let asked = Instant::now();
    let r = ask(socket, req)?;
    println!("{}", r.message.unwrap_or_default());
    if no_wait {
        return Ok(super::EXIT_OK);
    }
    loop {
        let s = fetch(socket)?;
        if let Some(code) = settled(&s, asked.elapsed()) {
            return Ok(code);
        }
        if asked.elapsed() >= timeout {
            return Ok(late(&s));
        }
        std::thread::sleep(every);
    }
}

/// `status --phase GROUP`: `PHASE FAILOVER PID`, exit 0; 2 no such group;
/// 3 (UNKNOWN) the daemon did not answer.
fn print_phase(fetched: anyhow::Result<StatusReport>, group: &str) -> i32 {
    let r = match fetched {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hamirror: {}", super::explain(&e));
            return health::State::Unknown.exit_code();
        }
    };
    let Some(g) = r.groups.iter().find(|g| g.group == group) else {
        eprintln!("hamirror: no group {group:?} in this cluster");
        return super::EXIT_FAILED;
    };
    println!("{} {} {}", g.phase, r.failover, r.pid);
    super::EXIT_OK
}

/// Never an error: what keeps the daemon from answering is the UNKNOWN
/// verdict (exit 3), on stdout where a monitoring system reads it.
pub fn run(global: &Global, args: &StatusArgs) -> anyhow::Result<i32> {
    let fetched = socket(global).and_then(|sock| fetch(&sock));
    if let Some(group) = &args.phase {
        return Ok(print_phase(fetched, group));
    }
    let (report, health) = match fetched {
        Ok(r) => {
            let h = health::judge(&r, args.max_lag.saturating_mul(1000));
            (Some(r), h)
        }
        Err(e) => (None, Health::unknown(super::explain(&e))),
    };
    if args.json {
        let mut v = match &report {
            Some(r) => serde_json::to_value(r)?,
            None => serde_json::json!({}),
        };
        if let Some(m) = v.as_object_mut() {
            m.insert("health".into(), serde_json::to_value(&health)?);
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{health}");
        if let Some(r) = &report {
            print!("{}", r.render());
        }
    }
    Ok(health.code)
}
