//! `hamirror takeover GROUP`: asks the daemon to run GROUP on this node. The
//! peer releases it (its stop hooks), then this node starts it; a group
//! moved by an operator is never handed back automatically. Waits, by
//! default, until the group is held here or its start failed.

use std::time::{Duration, Instant};

use clap::Args;

use super::status::{ask, fetch, socket};
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
    let asked = Instant::now();
    let r = ask(
        &sock,
        &Request::Takeover {
            group: args.group.clone(),
        },
    )?;
    println!("{}", r.message.unwrap_or_default());
    if args.no_wait {
        return Ok(EXIT_OK);
    }
    let needle = format!("group={} ", args.group);
    loop {
        let s = fetch(&sock)?;
        if s.groups.iter().any(|g| g.group == args.group && g.phase == "held") {
            println!("{} is running here", args.group);
            return Ok(EXIT_OK);
        }
        let since = asked.elapsed().as_millis() as u64;
        if s.events
            .iter()
            .any(|e| e.event == "acquire_failed" && e.ago_ms <= since && format!("{} ", e.detail).contains(&needle))
        {
            eprintln!("hamirror: the start hooks of {} failed here (see the log)", args.group);
            return Ok(EXIT_FAILED);
        }
        if asked.elapsed() >= args.timeout {
            eprintln!(
                "hamirror: {} not running here after {:?}; see `hamirror status`",
                args.group, args.timeout
            );
            return Ok(EXIT_FAILED);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
