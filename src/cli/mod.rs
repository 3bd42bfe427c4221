//! The command-line surface: global options, one file per subcommand.
//! Arguments are turned into typed values (a loaded [`Cluster`], the local
//! node) before any command runs; only this layer uses `anyhow`, and it maps
//! outcomes to the documented exit codes.

mod check;
mod links;
mod log;
mod run;
mod standby;
mod status;
mod takeover;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Cluster, DEFAULT_CONFIG_DIR, Node};

/// Exit code: everything done.
pub const EXIT_OK: i32 = 0;
/// Exit code: done, but some files failed (each is named on stderr).
pub const EXIT_PARTIAL: i32 = 1;
/// Exit code: failed, or the input (config, arguments) is invalid.
pub const EXIT_FAILED: i32 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "hamirror",
    version,
    about = "Two-node Linux HA cluster: mirror each node's data to its peer, fail over when a node dies",
    long_about = "hamirror mirrors the files named in each node's F sets to the peer (content-defined \
chunks, only what changed, over QUIC) and decides, when a node fails, who runs what.\n\n\
The configuration is the classic cluster.d layout: DIR/NODE.conf per node, DIR/NODE/F<set> mirror \
sets, DIR/NODE/S<NN>name and K<NN>name hooks, DIR/reachlist. See docs/CONFIG.md.",
    after_help = "Exit codes: 0 ok, 1 partial (some files failed, each named), 2 failed or invalid input."
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
    Check(check::CheckArgs),
    /// Run this node's heartbeats, prober and arbiter in the foreground and
    /// print link, peer and reach events and the arbiter's decisions.
    ///
    /// Diagnostic: hooks are not run (each start/stop is reported done at
    /// once) and nothing is written. Do not run it while the daemon runs on
    /// this node (the heartbeat port is taken anyway).
    Links(links::LinksArgs),
    /// Run the cluster daemon: heartbeats, prober, arbiter and hooks.
    ///
    /// Runs in the foreground until SIGTERM or SIGINT, then releases every
    /// group it holds (stop hooks) and exits 0. See docs/OPERATIONS.md.
    Run(run::RunArgs),
    /// Show the running daemon's view: holders and epochs, links, reach,
    /// standby lock, hooks, set backlogs, recent events.
    Status(status::StatusArgs),
    /// Put this node in standby (it releases everything; a lock keeps it
    /// there across restarts), or clear that with --clear.
    Standby(standby::StandbyArgs),
    /// Move a group to this node: the peer stops it, then this node starts it.
    Takeover(takeover::TakeoverArgs),
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

/// Runs a command and returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    init_logging();
    let result = match &cli.command {
        Command::Check(a) => check::run(&cli.global, a),
        Command::Links(a) => links::run(&cli.global, a),
        Command::Run(a) => run::run(&cli.global, a),
        Command::Status(a) => status::run(&cli.global, a),
        Command::Standby(a) => standby::run(&cli.global, a),
        Command::Takeover(a) => takeover::run(&cli.global, a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hamirror: {e:#}");
            EXIT_FAILED
        }
    }
}

/// Logs go to stderr, filtered by `HAMIRROR_LOG` (default `info`), in the
/// journald-friendly form (see `log.rs`).
fn init_logging() {
    log::init();
}
