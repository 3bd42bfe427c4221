//! The command-line surface: global options, one file per subcommand.
//! Arguments are turned into typed values (a loaded [`Cluster`], the local
//! node) before any command runs; only this layer uses `anyhow`, and it maps
//! outcomes to the documented exit codes.

mod allow;
mod check;
mod completions;
mod demo;
mod health;
mod init;
mod links;
mod log;
mod maintenance;
mod progress;
mod promote;
mod resync;
mod run;
mod scan;
mod serve;
mod standby;
mod status;
mod sync;
mod takeover;
mod verify;
mod watch;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Cluster, DEFAULT_CONFIG_DIR, Node};

/// Exit code: everything done.
pub const EXIT_OK: i32 = 0;
/// Exit code: done, but some files failed (each is named on stderr).
pub const EXIT_PARTIAL: i32 = 1;
/// Exit code: failed, or the input (config, arguments) is invalid.
pub const EXIT_FAILED: i32 = 2;

/// The version line: the package's, and the protocols it speaks (a peer
/// must speak the same: see wire/PROTOCOL.md).
pub static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{} (mirror protocol {}, heartbeat version {})",
        env!("CARGO_PKG_VERSION"),
        hamirror_wire::PROTOCOL_VERSION,
        hamirror_wire::heartbeat::VERSION
    )
});

#[derive(Debug, Parser)]
#[command(
    name = "hamirror",
    version = VERSION.as_str(),
    about = "Two-node Linux HA cluster: mirror each node's data to its peer, fail over when a node dies",
    long_about = "hamirror mirrors the files named in each node's F sets to the peer (content-defined \
chunks, only what changed, over QUIC) and decides, when a node fails, who runs what.\n\n\
The configuration is the classic cluster.d layout: DIR/NODE.conf per node, DIR/NODE/F<set> mirror \
sets, DIR/NODE/S<NN>name and K<NN>name hooks, DIR/reachlist. See docs/CONFIG.md.",
    after_help = "Examples:\n  \
hamirror demo                      a two-node cluster on this machine, no root needed\n  \
hamirror check                     validate /etc/cluster.d\n  \
systemctl enable --now hamirror    run the daemon (hamirror run) under systemd\n  \
hamirror status                    what the daemon thinks; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN\n  \
hamirror COMMAND --help            each command's options and examples\n\n\
Exit codes: 0 ok, 1 partial (some files failed, each named), 2 failed or invalid input \
(`status`: the monitoring codes above).\n\n\
Environment: HAMIRROR_CONFIG, HAMIRROR_NODE, HAMIRROR_LOG (log filter, default info), \
NO_COLOR (no colours; none either when stderr is not a terminal)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// The cluster configuration directory (cluster.d layout).
    #[arg(long, global = true, env = "HAMIRROR_CONFIG", default_value = DEFAULT_CONFIG_DIR, value_name = "DIR")]
    pub config: PathBuf,
    /// The node this process acts as [default: this machine's host name].
    #[arg(long, global = true, env = "HAMIRROR_NODE", value_name = "NAME")]
    pub node: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration directory and print the cluster it describes.
    ///
    /// Lists every problem with its file and line. Exit 0 when valid, 2 when not.
    #[command(after_help = "Examples:\n  hamirror check\n  hamirror --config ./cluster.d check")]
    Check(check::CheckArgs),
    /// Run a two-node demo cluster on this machine (no root, temp dirs, loopback).
    ///
    /// Starts two real daemons (`hamirror run` as serv1 and serv2, this
    /// binary) from a built-in example: files written on serv1 arrive on
    /// serv2 within milliseconds; serv1 is killed and serv2 takes its group
    /// over (the demo's hooks print what real ones would do) and writes;
    /// serv1 comes back, gets serv2's changes (resync) and takes its group
    /// back (failback); both copies are verified identical. Removes
    /// everything at the end unless --keep. Exit 0 when every step
    /// succeeded, 2 when one failed.
    #[command(
        after_help = "Examples:\n  hamirror demo\n  hamirror demo --keep    # leave the configuration, roots and logs for a look"
    )]
    Demo(demo::DemoArgs),
    /// Create this node's key and certificate and print its fingerprint.
    ///
    /// Writes the `key` file of this node's NODE.conf (mode 0600) and prints the
    /// `fingerprint = ...` line to put in that NODE.conf: the peer pins this node's
    /// key from it. Refuses to replace an existing key unless --force.
    #[command(
        after_help = "Examples:\n  hamirror init            # on each node; put the printed line in its NODE.conf\n  hamirror init --show     # print the fingerprint of the existing key"
    )]
    Init(init::InitArgs),
    /// Run this node's heartbeats, prober and arbiter in the foreground and
    /// print link, peer and reach events and the arbiter's decisions.
    ///
    /// Diagnostic: hooks are not run (each start/stop is reported done at
    /// once) and nothing is written. Do not run it while the daemon runs on
    /// this node (the heartbeat port is taken anyway).
    Links(links::LinksArgs),
    /// Scan one mirror set on this node and update the index.
    ///
    /// Walks the set's roots under this node's `root`, reads only files whose
    /// (device, inode, size, mtime, ctime) changed, and commits the changes as
    /// a new generation in `<state>/sets/<SET>.redb`. Exit 0 ok, 1 partial (failed
    /// paths are named on stderr), 2 failed.
    Scan(scan::ScanArgs),
    /// Run this node's receiver in the foreground: accept what the peer mirrors.
    ///
    /// Listens on `address` (and `lan`) at `port` for the peer (its key pinned by
    /// its `fingerprint`), applies each set the sending node holds, and answers
    /// verifies. Stops on SIGINT/SIGTERM.
    Serve(serve::ServeArgs),
    /// Mirror one set to the peer once: scan, send what changed, report.
    ///
    /// Only changed files are read (quick check); only chunks the peer lacks are
    /// sent (it reuses any chunk it holds); files are replaced atomically. A pass
    /// with nothing to do is one round trip. Exit 0 ok, 1 partial (failed files
    /// named), 2 failed.
    #[command(
        after_help = "Examples:\n  hamirror sync Fsmbd\n  hamirror sync smbd --dry-run\n  hamirror sync Fsmbd --full    # the peer re-checks its whole copy"
    )]
    Sync(sync::SyncArgs),
    #[command(about = resync::ABOUT, long_about = resync::LONG_ABOUT)]
    Resync(resync::ResyncArgs),
    /// Re-read every file of a set on both nodes and report any difference.
    ///
    /// Compares content, kind, mode, owner, mtime, symlink and hard-link targets.
    /// Writes nothing. Exit 0 identical, 1 differences (listed), 2 failed.
    #[command(
        after_help = "Examples:\n  hamirror verify Fsmbd\n  hamirror verify Fsmbd --repair    # on the holder: mend, then verify again"
    )]
    Verify(verify::VerifyArgs),
    /// Mirror sets continuously from filesystem events, in the foreground
    /// (without the daemon).
    ///
    /// A quick stat scan at start-up, then filesystem events (fanotify as
    /// root, else inotify) committed to each set's index within milliseconds,
    /// and every change shipped to the peer (its `hamirror serve`, or its
    /// daemon's receiver) over one kept QUIC connection; while the peer is
    /// away changes accumulate and go out on reconnect. A full stat scan every
    /// `rescan_interval` (default 1h) as a safety net. Logs each generation
    /// and the backlog. Only sets of this node's group. Do not run it next to
    /// `hamirror run` (the daemon watches the sets of the groups it holds).
    /// Stops on SIGINT/SIGTERM (exit 0); exit 2 when a set fails or the peer
    /// refuses it for a reason a retry cannot mend (the mass-delete guard: the
    /// message names the command that lets it through).
    #[command(
        after_help = "Examples:\n  hamirror watch Fsmbd Flpd\n  HAMIRROR_LOG=debug hamirror watch smbd --events inotify"
    )]
    Watch(watch::WatchArgs),
    /// Run the cluster daemon: heartbeats, prober, arbiter, hooks and mirroring.
    ///
    /// Runs in the foreground (systemd: docs/hamirror.service, Type=notify
    /// with a watchdog) until SIGTERM or SIGINT, then releases every group it
    /// holds (stop hooks) and exits 0. Mirrors the sets of the groups it holds
    /// to the peer and receives the others, unless --no-mirror. See
    /// docs/OPERATIONS.md.
    #[command(
        after_help = "Examples:\n  systemctl start hamirror       # the usual way\n  hamirror run --no-realtime     # in a terminal, for a test"
    )]
    Run(run::RunArgs),
    /// Show the running daemon's view and judge it: exit 0 OK, 1 WARNING,
    /// 2 CRITICAL, 3 UNKNOWN (a monitoring check).
    ///
    /// The first line is the verdict and its reasons; then holders and epochs,
    /// links, reach, standby lock, hooks, set backlogs, recent events.
    Status(status::StatusArgs),
    /// Put this node in standby (it releases everything; a lock keeps it
    /// there across restarts), or clear that with --clear.
    #[command(
        after_help = "Examples:\n  hamirror standby            # before maintenance: the peer takes over\n  hamirror standby --clear    # afterwards: back as a backup"
    )]
    Standby(standby::StandbyArgs),
    /// Freeze failover decisions on both nodes while you work (`on`), resume
    /// them (`off`), or show the setting.
    ///
    /// In maintenance nothing is started, stopped, handed back or taken over
    /// (a dead peer's group stays down), health monitors pause, mirroring goes
    /// on, and stopping the daemon leaves the services running (the next start
    /// of the same boot keeps them). Either node can set or end it; the newer
    /// setting wins. Exit 0 in force on both nodes (or the peer is away and
    /// takes it on return), 1 not confirmed by the peer (an older release, or
    /// no answer in time), 2 refused.
    #[command(after_help = "Examples:
  hamirror maintenance on     # then: upgrade, restart hamirror, work on services
  hamirror maintenance        # show the setting on both nodes
  hamirror maintenance off    # decisions resume from what is true now")]
    Maintenance(maintenance::MaintenanceArgs),
    /// Move a group to this node: the peer stops it, then this node starts it.
    #[command(after_help = "Examples:\n  hamirror takeover serv1    # on serv1, after a failover: take its group back")]
    Takeover(takeover::TakeoverArgs),
    /// With `failover = pacemaker`: make this node the holder of GROUP (the
    /// peer stops it first). Pacemaker's OCF agent calls it; exit 0 running
    /// here, 2 failed.
    #[command(after_help = "Examples:\n  hamirror promote serv1     # what `crm resource promote` ends up doing here")]
    Promote(promote::PromoteArgs),
    /// With `failover = pacemaker`: stop GROUP here (this node becomes its
    /// replica). Exit 0 stopped, 2 failed.
    Demote(promote::PromoteArgs),
    /// On the replica's node: let the next pass of a set that deletes
    /// anything through the mass-delete guard, and start its count again.
    ///
    /// For a mass delete the guard refused that is wanted after all, when
    /// the holder's daemon keeps retrying (there, `sync --force` cannot run:
    /// the daemon holds the set's index). Exit 0 done, 2 failed.
    AllowDeletes(allow::AllowArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Write the man pages (hamirror.1, hamirror-COMMAND.1) into DIR (packaging).
    #[command(hide = true)]
    Man(completions::ManArgs),
}

impl Global {
    /// The node name: `--node`, `HAMIRROR_NODE`, or the host name.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(crate::config::hostname)
    }

    /// Loads and validates the configuration, or explains every problem.
    pub fn load(&self) -> anyhow::Result<Cluster> {
        Cluster::load(&self.config).map_err(|e| {
            anyhow::anyhow!(
                "{e}\ninvalid configuration in {} (run `hamirror check` for details)",
                self.config.display()
            )
        })
    }

    /// Loads the configuration and finds the local node in it.
    pub fn load_local(&self) -> anyhow::Result<(Cluster, String)> {
        let cluster = self.load()?;
        let name = self.node_name();
        cluster.local_node(&name).map_err(anyhow::Error::msg)?;
        Ok((cluster, name))
    }
}

/// Looks up a node that `load_local` has already validated.
pub fn local<'a>(cluster: &'a Cluster, name: &str) -> &'a Node {
    cluster.node(name).expect("validated by Global::load_local")
}

/// Finds a set by name (`Fsmbd` or `smbd`), or lists the sets there are.
pub fn find_set<'a>(cluster: &'a Cluster, name: &str) -> anyhow::Result<(&'a Node, &'a crate::config::MirrorSet)> {
    cluster.find_set(name).ok_or_else(|| {
        let names: Vec<&str> = cluster
            .nodes
            .iter()
            .flat_map(|n| n.group.sets.iter().map(|s| s.name.as_str()))
            .collect();
        anyhow::anyhow!(
            "no set {name:?} in {}; its sets are: {}",
            cluster.dir.display(),
            names.join(", ")
        )
    })
}

/// The async runtime for commands that talk to the peer.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hamirror-io")
        .build()?)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Runs a command and returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    init_logging();
    let result = match &cli.command {
        Command::Check(a) => check::run(&cli.global, a),
        Command::Demo(a) => demo::run(&cli.global, a),
        Command::Init(a) => init::run(&cli.global, a),
        Command::Links(a) => links::run(&cli.global, a),
        Command::Scan(a) => scan::run(&cli.global, a),
        Command::Serve(a) => serve::run(&cli.global, a),
        Command::Sync(a) => sync::run(&cli.global, a),
        Command::Resync(a) => resync::run(&cli.global, a),
        Command::Verify(a) => verify::run(&cli.global, a),
        Command::Watch(a) => watch::run(&cli.global, a),
        Command::Run(a) => run::run(&cli.global, a),
        Command::Status(a) => status::run(&cli.global, a),
        Command::Standby(a) => standby::run(&cli.global, a),
        Command::Takeover(a) => takeover::run(&cli.global, a),
        Command::Maintenance(a) => maintenance::run(&cli.global, a),
        Command::Promote(a) => promote::promote(&cli.global, a),
        Command::Demote(a) => promote::demote(&cli.global, a),
        Command::AllowDeletes(a) => allow::run(&cli.global, a),
        Command::Completions(a) => completions::completions(a),
        Command::Man(a) => completions::man(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hamirror: {}", explain(&e));
            EXIT_FAILED
        }
    }
}

/// An error and its causes on one line, each cause once: many errors
/// already show their source in their own message (`what: {source}`), and
/// anyhow's `{:#}` would print it again.
pub fn explain(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

/// Logs go to stderr, filtered by `HAMIRROR_LOG` (default `info`), in the
/// journald-friendly form (see `log.rs`).
fn init_logging() {
    log::init();
}

#[cfg(test)]
mod tests {
    use super::explain;

    #[derive(Debug, thiserror::Error)]
    #[error("reading the index: {source}")]
    struct ShowsItsSource {
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn an_error_line_names_each_cause_once() {
        let e = anyhow::Error::new(std::io::Error::other("disk on fire")).context("writing Fsmbd");
        assert_eq!(explain(&e), "writing Fsmbd: disk on fire");
        let e = anyhow::Error::new(ShowsItsSource {
            source: std::io::Error::other("gone"),
        })
        .context("scan of Fsmbd");
        assert_eq!(explain(&e), "scan of Fsmbd: reading the index: gone");
        assert_eq!(format!("{e:#}"), "scan of Fsmbd: reading the index: gone: gone");
    }
}
