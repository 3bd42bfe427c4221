//! `hamirror maintenance [on|off]`: freezes (or resumes) failover
//! decisions on both nodes while an admin works, as Pacemaker's
//! maintenance-mode does: nothing is started, stopped, handed back or
//! taken over, monitors pause, mirroring goes on, and stopping the daemon
//! leaves the services running. The setting travels in the heartbeats (the
//! newer one wins), so either node can set or end it. Without an argument
//! it shows the setting. Talks to the local daemon only; the rules are the
//! arbiter's.

use std::time::Duration;

use clap::{Args, ValueEnum};

use super::status::{command_and_wait, fetch, socket};
use super::{EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, Global};
use crate::config::values::parse_duration;
use crate::daemon::Request;
use crate::daemon::status::StatusReport;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(Debug, Args)]
pub struct MaintenanceArgs {
    /// `on` freezes failover decisions cluster-wide, `off` resumes them;
    /// nothing: show the setting.
    #[arg(value_enum)]
    pub switch: Option<Switch>,
    /// Return once this daemon took it, without waiting for the peer's.
    #[arg(long)]
    pub no_wait: bool,
    /// Longest wait for the peer to confirm (e.g. 10s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5s")]
    pub timeout: Duration,
}

fn describe(s: &StatusReport) -> String {
    let m = &s.maintenance;
    let here = if m.on { "ON" } else { "off" };
    let peer = if m.peer_heartbeat_version == Some(1) {
        format!(
            "{} runs an older release (heartbeat version 1) that knows no maintenance mode: it still fails over",
            s.peer
        )
    } else if !s.peer_alive {
        format!("{} is not heard: it takes the newer setting when it returns", s.peer)
    } else if m.peer_agrees() {
        format!("{} agrees", s.peer)
    } else {
        format!(
            "{} says {} (generation {})",
            s.peer,
            if m.peer_on == Some(true) { "on" } else { "off" },
            m.peer_generation.unwrap_or(0)
        )
    };
    format!("maintenance {here} (generation {}) on {}; {peer}", m.generation, s.node)
}

/// Exit 0: in force on both nodes (or the peer is away and takes it on
/// return); 1: in force here but the peer cannot take it (an older
/// release) or did not confirm in time; 2: refused or no daemon.
pub fn run(global: &Global, args: &MaintenanceArgs) -> anyhow::Result<i32> {
    let sock = socket(global)?;
    let Some(switch) = args.switch else {
        println!("{}", describe(&fetch(&sock)?));
        return Ok(EXIT_OK);
    };
    let on = switch == Switch::On;
    command_and_wait(
        &sock,
        &Request::Maintenance { on },
        (args.no_wait, args.timeout, Duration::from_millis(50)),
        |s, _| {
            if s.maintenance.on != on {
                // The peer set the other way meanwhile (its setting is newer).
                println!("{}", describe(s));
                eprintln!("hamirror: {} changed it back in the meantime", s.peer);
                return Some(EXIT_FAILED);
            }
            let old_peer = s.maintenance.peer_heartbeat_version == Some(1);
            if s.maintenance.peer_agrees() || !s.peer_alive || old_peer {
                println!("{}", describe(s));
                return Some(if old_peer { EXIT_PARTIAL } else { EXIT_OK });
            }
            None
        },
        |s| {
            println!("{}", describe(s));
            eprintln!(
                "hamirror: {} did not confirm within {:?}; see `hamirror status` there",
                s.peer, args.timeout
            );
            EXIT_PARTIAL
        },
    )
}
