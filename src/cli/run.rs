//! `hamirror run`: the cluster daemon in the foreground (systemd runs it as
//! a simple service; see `docs/hamirror.service` and `docs/OPERATIONS.md`).
//! Validates the configuration, builds the daemon and maps how it ended to
//! the exit code: 0 after a clean shutdown, 2 when it could not start, when
//! a stop hook failed during shutdown, or when a second signal cut the
//! shutdown short.

use clap::Args;

use super::{EXIT_FAILED, EXIT_OK, Global};
use crate::daemon::{Daemon, DaemonOptions, Outcome};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Do not ask for real-time priority or locked memory.
    #[arg(long)]
    pub no_realtime: bool,
}

pub fn run(global: &Global, args: &RunArgs) -> anyhow::Result<i32> {
    let (cluster, name) = global.load_local()?;
    for w in &cluster.warnings {
        tracing::warn!("{w}");
    }
    let daemon = Daemon::new(
        cluster,
        &name,
        DaemonOptions {
            realtime: !args.no_realtime,
        },
    )?;
    Ok(match daemon.run()? {
        Outcome::Clean | Outcome::Running => EXIT_OK,
        Outcome::StopFailed(_) | Outcome::Forced => EXIT_FAILED,
    })
}
