//! `hamirror takeover GROUP`: asks the daemon to run GROUP on this node. The
//! peer releases it (its stop hooks), then this node starts it; a group
//! moved by an operator is never handed back automatically. Waits, by
//! default, until the group is held here or its start failed.

use std::time::Duration;

use clap::Args;

use super::status::{command_and_wait, socket};
use super::{EXIT_FAILED, EXIT_OK, Global};
use crate::config::values::parse_duration;
use crate::daemon::Request;

#[derive(Debug, Args)]
pub struct TakeoverArgs {
    /// The group to move here (named after its owner node).
    pub group: String,
    /// Return once the daemon accepted the request, without waiting.
    #[arg(long)]
    pub no_wait: bool,
    /// Longest wait for the group to be running here (e.g. 2m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5m")]
    pub timeout: Duration,
}

pub fn run(global: &Global, args: &TakeoverArgs) -> anyhow::Result<i32> {
    let sock = socket(global)?;
    let needle = format!("group={} ", args.group);
    command_and_wait(
        &sock,
        &Request::Takeover {
            group: args.group.clone(),
        },
        (args.no_wait, args.timeout, Duration::from_millis(100)),
        |s, since| {
            if s.groups.iter().any(|g| g.group == args.group && g.phase == "held") {
                println!("{} is running here", args.group);
                return Some(EXIT_OK);
            }
            let since = since.as_millis() as u64;
            if s.events
                .iter()
                .any(|e| e.event == "acquire_failed" && e.ago_ms <= since && format!("{} ", e.detail).contains(&needle))
            {
                eprintln!("hamirror: the start hooks of {} failed here (see the log)", args.group);
                return Some(EXIT_FAILED);
            }
            None
        },
        |_| {
            eprintln!(
                "hamirror: {} not running here after {:?}; see `hamirror status`",
                args.group, args.timeout
            );
            EXIT_FAILED
        },
    )
}
