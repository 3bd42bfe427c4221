//! `hamirror run`: the cluster daemon in the foreground (systemd runs it as
//! a `Type=notify` service with a watchdog, `crate::sdnotify`; see
//! `docs/hamirror.service` and `docs/OPERATIONS.md`).
//! Validates the configuration, builds the daemon, plugs in mirroring
//! (`crate::mirrord`: the receiver and the watchers of the groups this node
//! holds) when either group has a mirror set, and maps how it ended to the
//! exit code: 0 after a clean shutdown, 2 when it could not start, when a
//! stop hook failed during shutdown, or when a second signal cut the
//! shutdown short.

use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use super::{EXIT_FAILED, EXIT_OK, Global};
use crate::daemon::{Daemon, DaemonOptions, Outcome};
use crate::mirrord::Mirrord;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Do not ask for real-time priority or locked memory.
    #[arg(long)]
    pub no_realtime: bool,
    /// Failover only: do not receive or send mirror data.
    #[arg(long)]
    pub no_mirror: bool,
}

pub fn run(global: &Global, args: &RunArgs) -> anyhow::Result<i32> {
    // SAFETY: no thread has started yet (logging set-up starts none).
    let notifier = unsafe { crate::sdnotify::Notifier::from_env() };
    let (cluster, name) = global.load_local()?;
    for w in &cluster.warnings {
        tracing::warn!("{w}");
    }
    let found = crate::config::strict::check(&cluster);
    for w in &found.warnings {
        tracing::warn!("{w}");
    }
    if !found.errors.is_empty() {
        anyhow::bail!(
            "refusing to start: {}
(`hamirror check` lists every problem)",
            crate::config::ConfigErrors(found.errors)
        );
    }
    let cluster = Arc::new(cluster);
    let has_sets = cluster.nodes.iter().any(|n| !n.group.sets.is_empty());
    let mut daemon = Daemon::new(
        (*cluster).clone(),
        &name,
        DaemonOptions {
            realtime: !args.no_realtime,
        },
    )?;
    if let Some(n) = notifier {
        daemon.set_notifier(n);
    }
    if args.no_mirror {
        tracing::info!("mirroring off (--no-mirror)");
    } else if !has_sets {
        tracing::info!("mirroring off: neither group has a mirror set (F file)");
    } else {
        // After Daemon::new: the mirror's threads inherit the blocked signals.
        let mirror = Mirrord::start(cluster.clone(), &name, daemon.mirror_reporter())
            .with_context(|| format!("starting mirroring on {name} (`--no-mirror` runs failover only)"))?;
        daemon.set_mirror(Box::new(mirror));
    }
    Ok(match daemon.run()? {
        Outcome::Clean | Outcome::Running | Outcome::LeftRunning(_) => EXIT_OK,
        Outcome::StopFailed(_) | Outcome::Forced => EXIT_FAILED,
    })
}
