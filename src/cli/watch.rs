//! `hamirror watch SET [SET...]`: watch sets on this node in the
//! foreground and commit every change to their indexes as it happens,
//! logging each committed generation (paths, bytes read, time from the
//! first event to the commit) and the backlog. Runs until SIGINT or
//! SIGTERM (exit 0) or until a set fails in a way a retry cannot mend
//! (exit 2) — its engine, or its shipping: a peer refusing what a retry
//! cannot change (the mass-delete guard, not the holder) ends the watch
//! with the peer's reason (for the guard, naming the command that lets it
//! through). Each committed generation is shipped to the peer (one push
//! conversation over a kept QUIC connection); while the peer is away the
//! changes accumulate in the index and go out on reconnect. All the work is
//! in `crate::watch` and `crate::sync`; this file only parses arguments and
//! handles signals.

use std::sync::mpsc;

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::{EXIT_FAILED, EXIT_OK, Global};
use crate::sync::QuicShipper;
use crate::watch::{Engine, EventSource, Notice, WatchOptions};

/// How often the sets' shipping is looked at.
const STOPPED_POLL: std::time::Duration = std::time::Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Events {
    /// fanotify when running as root and supported, inotify otherwise.
    Auto,
    /// A watch per directory (limited by fs.inotify.max_user_watches).
    Inotify,
    /// One mark per filesystem, no per-directory limit; needs root, Linux 5.9+.
    Fanotify,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The sets to watch: file names (`Fsmbd`) or names (`smbd`).
    #[arg(required = true, value_name = "SET")]
    pub sets: Vec<String>,
    /// Where filesystem events come from.
    #[arg(long, value_enum, default_value = "auto")]
    pub events: Events,
    /// Hashing threads [default: one per CPU].
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Changed paths tracked per set before its busiest roots are re-scanned
    /// as a whole instead (bounds memory under a write storm).
    #[arg(long, value_name = "N")]
    pub max_pending: Option<usize>,
    /// How often a directory that cannot be watched is re-scanned (tests).
    #[arg(long, value_name = "DURATION", hide = true, value_parser = crate::config::values::parse_duration)]
    pub unwatched_interval: Option<std::time::Duration>,
}

enum Msg {
    Signal(i32),
    Stopped(Notice),
}

pub fn run(global: &Global, args: &WatchArgs) -> anyhow::Result<i32> {
    let (cluster, me) = global.load_local()?;
    let node = super::local(&cluster, &me);
    let mut sets = Vec::new();
    for name in &args.sets {
        let (owner, set) = super::find_set(&cluster, name)?;
        if owner.name != me {
            anyhow::bail!(
                "{} belongs to group {}, held by {}; run `hamirror watch {}` there (this node receives it)",
                set.name,
                owner.group.name,
                owner.name,
                set.name
            );
        }
        if !sets.iter().any(|s: &&crate::config::MirrorSet| s.name == set.name) {
            sets.push(set);
        }
    }
    let mut opts = WatchOptions::for_node(&node.conf);
    opts.events = match args.events {
        Events::Auto => EventSource::Auto,
        Events::Inotify => EventSource::Inotify,
        Events::Fanotify => EventSource::Fanotify,
    };
    if let Some(j) = args.jobs {
        opts.scan.threads = j;
    }
    if let Some(n) = args.max_pending {
        opts.max_pending = n.max(1);
    }
    if let Some(d) = args.unwatched_interval {
        opts.unwatched_interval = d;
    }

    // Signals are taken by one thread with sigwait: block them before any
    // other thread starts (threads inherit the mask).
    let signals = block_signals();
    let (tx, rx) = mpsc::channel::<Msg>();
    let sig_tx = tx.clone();
    std::thread::Builder::new()
        .name("hamirror-signals".into())
        .spawn(move || {
            if let Some(sig) = wait_signal(&signals) {
                let _ = sig_tx.send(Msg::Signal(sig));
            }
        })
        .context("starting the signal thread")?;
    let (ntx, nrx) = mpsc::channel::<Notice>();
    std::thread::Builder::new()
        .name("hamirror-notices".into())
        .spawn(move || {
            for n in nrx {
                if tx.send(Msg::Stopped(n)).is_err() {
                    break;
                }
            }
        })
        .context("starting the notice thread")?;

    let peer = cluster.sole_peer(&me).map_err(anyhow::Error::msg)?.clone();
    let rt = super::runtime()?;
    let mut engine = Engine::new(&node.conf.root, &node.conf.state, opts).with_notices(ntx);
    let mut handles = Vec::new();
    for set in &sets {
        let shipper = QuicShipper::new(rt.handle().clone(), node, &peer, &node.group.name, 1);
        handles.push(
            engine
                .start_set(set, Some(Box::new(shipper)))
                .with_context(|| format!("node {me}, root {}", node.conf.root.display()))?,
        );
    }
    let code = loop {
        // A set whose shipping the peer stopped (it refuses what a retry
        // cannot change: a mass delete, not the holder) is not mirrored any
        // more: that must not go unnoticed in a log. (A local problem — no
        // identity key — leaves the watch recording into the index.)
        if let Some((set, why)) = handles
            .iter()
            .find_map(|h| h.refused().map(|why| (h.set().to_string(), why)))
        {
            eprintln!("hamirror: set {set}: shipping stopped, the peer's copy no longer follows: {why}");
            break EXIT_FAILED;
        }
        match rx.recv_timeout(STOPPED_POLL) {
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break EXIT_FAILED,
            Ok(Msg::Signal(sig)) => {
                tracing::info!("signal {sig}: stopping");
                break EXIT_OK;
            }
            Ok(Msg::Stopped(Notice { set, result: Err(e) })) => {
                eprintln!("hamirror: set {set}: {e}");
                break EXIT_FAILED;
            }
            Ok(Msg::Stopped(_)) => {}
        }
    };
    engine.stop();
    Ok(code)
}

/// Blocks SIGINT and SIGTERM in this thread (and the threads it starts).
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset operations on a local set; pthread_sigmask only
    // changes this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits for one of the blocked signals.
fn wait_signal(set: &libc::sigset_t) -> Option<i32> {
    let mut sig: libc::c_int = 0;
    // SAFETY: a valid signal set and an out-parameter.
    (unsafe { libc::sigwait(set, &mut sig) } == 0).then_some(sig)
}
