//! `hamirror status`: asks the running daemon (over `state/control.sock`)
//! for its view — per group holder and epoch, links, reach scores, the
//! standby lock, hooks at work, each set's backlog and lag, recent events —
//! and prints it as text or, with `--json`, as the daemon's JSON. Also the
//! socket helper the other operator commands share.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::{EXIT_OK, Global, local};
use crate::daemon::{Request, Response, StatusReport, control};

/// How long a command waits for the daemon's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the daemon's JSON report instead of text.
    #[arg(long)]
    pub json: bool,
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

pub fn run(global: &Global, args: &StatusArgs) -> anyhow::Result<i32> {
    let sock = socket(global)?;
    let status = fetch(&sock)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.render());
    }
    Ok(EXIT_OK)
}
