//! `hamirror standby [--clear]`: puts this node in standby (it releases
//! every group it holds, the peer takes them over, and a lock in `state`
//! keeps it there across restarts) or clears the lock (the node rejoins as
//! a backup). Waits, by default, until the daemon has done it.

use std::time::Duration;

use clap::Args;

use super::status::{command_and_wait, socket};
use super::{EXIT_FAILED, EXIT_OK, Global};
use crate::config::values::parse_duration;
use crate::daemon::Request;

#[derive(Debug, Args)]
pub struct StandbyArgs {
    /// Clear the standby lock instead: the node rejoins as a backup.
    #[arg(long)]
    pub clear: bool,
    /// Return once the daemon accepted the command, without waiting.
    #[arg(long)]
    pub no_wait: bool,
    /// Longest wait for the groups to be released (e.g. 2m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5m")]
    pub timeout: Duration,
}

pub fn run(global: &Global, args: &StandbyArgs) -> anyhow::Result<i32> {
    let sock = socket(global)?;
    let req = if args.clear {
        Request::ClearStandby
    } else {
        Request::Standby
    };
    command_and_wait(
        &sock,
        &req,
        (args.no_wait, args.timeout, Duration::from_millis(100)),
        |s, _| {
            let done = if args.clear {
                s.mode != "standby"
            } else {
                s.groups.iter().all(|g| g.phase == "released" || g.phase == "stuck")
            };
            if !done {
                return None;
            }
            if let Some(g) = s.groups.iter().find(|g| g.phase == "stuck") {
                eprintln!(
                    "hamirror: the stop hooks of {} failed: its services may still run here (see the log)",
                    g.group
                );
                return Some(EXIT_FAILED);
            }
            if !args.clear {
                println!("in standby; every group released here");
            } else {
                println!("mode: {}", s.mode);
            }
            Some(EXIT_OK)
        },
        |_| {
            eprintln!("hamirror: not done after {:?}; see `hamirror status`", args.timeout);
            EXIT_FAILED
        },
    )
}
