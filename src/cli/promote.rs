//! `hamirror promote GROUP` and `hamirror demote GROUP`: with `failover =
//! pacemaker`, how Pacemaker (through the `ocf:hamirror:mirror` agent, or
//! an admin) makes this node the holder of a group's sets, or a replica.
//! Promote: the peer stops the group if it runs there, then this node
//! takes a new epoch and starts it; demote: this node stops it. Both wait,
//! by default, until done. Talks to the local daemon only.

use std::time::Duration;

use clap::Args;

use super::status::{command_and_wait, socket};
use super::{EXIT_FAILED, EXIT_OK, Global};
use crate::config::values::parse_duration;
use crate::daemon::Request;
use crate::daemon::status::StatusReport;

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The group (named after its owner node, e.g. serv1).
    pub group: String,
    /// Return once the daemon accepted the command, without waiting.
    #[arg(long)]
    pub no_wait: bool,
    /// Longest wait (e.g. 90s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5m")]
    pub timeout: Duration,
}

fn phase<'a>(s: &'a StatusReport, group: &str) -> &'a str {
    s.groups
        .iter()
        .find(|g| g.group == group)
        .map_or("", |g| g.phase.as_str())
}

/// Exit 0 when the group runs here, 2 when its start failed or the time ran out.
pub fn promote(global: &Global, args: &PromoteArgs) -> anyhow::Result<i32> {
    let needle = format!("group={} ", args.group);
    command_and_wait(
        &socket(global)?,
        &Request::Promote {
            group: args.group.clone(),
        },
        (args.no_wait, args.timeout, Duration::from_millis(50)),
        |s, since| {
            if phase(s, &args.group) == "held" {
                println!("{} is running here (promoted)", args.group);
                return Some(EXIT_OK);
            }
            let since = since.as_millis() as u64;
            let failed = s.events.iter().any(|e| {
                e.event == "acquire_failed" && e.ago_ms <= since && format!("{} ", e.detail).contains(&needle)
            });
            failed.then(|| {
                eprintln!("hamirror: the start hooks of {} failed here (see the log)", args.group);
                EXIT_FAILED
            })
        },
        |_| {
            eprintln!("hamirror: {} not promoted after {:?}", args.group, args.timeout);
            EXIT_FAILED
        },
    )
}

/// Exit 0 when the group is stopped here, 2 when its stop failed or the
/// time ran out.
pub fn demote(global: &Global, args: &PromoteArgs) -> anyhow::Result<i32> {
    command_and_wait(
        &socket(global)?,
        &Request::Demote {
            group: args.group.clone(),
        },
        (args.no_wait, args.timeout, Duration::from_millis(50)),
        |s, _| match phase(s, &args.group) {
            "released" => {
                println!("{} is stopped here (demoted)", args.group);
                Some(EXIT_OK)
            }
            "stuck" => {
                eprintln!(
                    "hamirror: the stop hooks of {} failed: its services may still run here (see the log)",
                    args.group
                );
                Some(EXIT_FAILED)
            }
            _ => None,
        },
        |_| {
            eprintln!("hamirror: {} still not stopped after {:?}", args.group, args.timeout);
            EXIT_FAILED
        },
    )
}
