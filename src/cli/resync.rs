//! `hamirror resync --from PEER [SET...]`: bring this node's copy of the
//! sets the peer holds back in step with the peer's, pulling only what
//! differs (every chunk this node already holds is reused). Per set: a
//! local quick-check scan (so this node's own writes are known), then a
//! pull; this node's changes the peer lacks are kept as conflict copies on
//! both nodes unless `--discard-mine`. Prints a summary (or one JSON
//! object); `--dry-run` itemizes and changes nothing.
//!
//! Exit: 0 ok, 1 partial (files that failed are named, or some sets
//! failed), 2 failed.

use std::io::IsTerminal;
use std::sync::Arc;

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use hamirror_wire::ErrorCode;

use super::progress::Bar;
use super::scan::{bytes, scan_local};
use super::{EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, Global};
use crate::config::{MirrorSet, Node};
use crate::sync::{PullOptions, PullReport, Router, SyncError, pull};
use crate::transport::Endpoint;

#[derive(Debug, Args)]
pub struct ResyncArgs {
    /// The node to pull from: the peer that holds the sets now.
    #[arg(long, value_name = "PEER")]
    pub from: String,
    /// The sets to pull (`Fsmbd` or `smbd`) [default: every set of the peer's group].
    pub sets: Vec<String>,
    /// Show what would change here (and which files would become conflict
    /// copies); change nothing, receive no data.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Override the mass-delete guard (the peer's copy lacks a whole root
    /// that holds data here, or more than the set's delete_limit would go).
    #[arg(long)]
    pub force: bool,
    /// Take the peer's side whole: this node's own unmirrored changes are
    /// overwritten or deleted, with no conflict copies.
    #[arg(long)]
    pub discard_mine: bool,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Hashing threads for the local scan [default: one per CPU].
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<usize>,
}

/// How long to wait for the peer to drop an interrupted conversation
/// (longer than the link's idle timeout).
const BUSY_WAIT: Duration = Duration::from_secs(30);

pub const ABOUT: &str = "Pull the sets the peer holds back into this node's copy (after a failover, \
a damaged disk, or a split brain)";

pub const LONG_ABOUT: &str = "Pull the sets the peer holds back into this node's copy.\n\n\
Use it on a node that was down or cut off while the peer held its groups (after a failover), \
whose copy was damaged or restored from an old backup, or that the peer refuses to push to \
because it holds changes of its own (error Diverged). Only what differs is transferred: every \
chunk this node still holds is reused, so the cost follows the changes, not the data size.\n\n\
This node's own changes the peer does not have (written while it held the group, or a split \
brain) are never lost: each such file is kept as NAME.hamirror-conflict-NODE-TIME next to it, \
on both nodes, while the peer's version takes the real name. Deleted here but changed there \
keeps the peer's file. --discard-mine takes the peer's side whole instead.\n\n\
This node's daemon may run (it does the same by itself when the node rejoins); while it is \
applying a push to the set, the command waits (up to 30 s). --dry-run itemizes (>f changed, \
*deleting, !conflict) and changes nothing.";

pub fn run(global: &Global, args: &ResyncArgs) -> anyhow::Result<i32> {
    let (cluster, me) = global.load_local()?;
    let node = super::local(&cluster, &me).clone();
    // Any other node: with more than two, whichever holds the sets now.
    let peer = match cluster.node(&args.from) {
        Some(p) if p.name != me => p.clone(),
        _ => {
            let peers: Vec<&str> = cluster.peers_of(&me).iter().map(|p| p.name.as_str()).collect();
            anyhow::bail!("{} is not a peer of {me} (its peers: {})", args.from, peers.join(", "));
        }
    };
    let mut sets: Vec<(Node, MirrorSet)> = Vec::new();
    if args.sets.is_empty() {
        sets.extend(peer.group.sets.iter().map(|s| (peer.clone(), s.clone())));
    } else {
        for name in &args.sets {
            let (owner, set) = super::find_set(&cluster, name)?;
            sets.push((owner.clone(), set.clone()));
        }
    }
    if sets.is_empty() {
        anyhow::bail!("{} holds no sets (group {} has no F files)", peer.name, peer.group.name);
    }
    let rt = super::runtime()?;
    let connecting = {
        let (node, peer) = (node.clone(), peer.clone());
        rt.spawn(async move {
            let endpoint = Endpoint::client(&node, &peer)?;
            let conn = endpoint.connect().await?;
            anyhow::Ok((endpoint, conn))
        })
    };
    let (endpoint, conn) = rt
        .block_on(connecting)?
        .with_context(|| format!("connecting to {}", peer.name))?;
    let router = rt.block_on(async { Router::spawn(&conn) });
    let tty = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let (mut reports, mut failed) = (Vec::new(), Vec::new());
    for (i, (owner, set)) in sets.iter().enumerate() {
        let (index, _scan) = match scan_when_free(&node, owner, set, args.jobs) {
            Ok(v) => v,
            Err(e) => {
                eprintln!(
                    "hamirror: resync of {} from {}: {}",
                    set.name,
                    peer.name,
                    super::explain(&e)
                );
                failed.push((set.name.clone(), super::explain(&e)));
                continue;
            }
        };
        let bar = Arc::new(Bar::receiving(tty));
        let opts = PullOptions {
            dry_run: args.dry_run,
            force: args.force,
            discard_mine: args.discard_mine,
            session: 1 + 2 * i as u64,
            conflict_time: String::new(),
            progress: Some(bar.clone()),
        };
        let index = Arc::new(index);
        // A run killed mid-pull leaves its conversation open on the peer
        // until the link's idle timeout: wait for it rather than fail.
        let waiting = std::time::Instant::now();
        let r = loop {
            let r = rt.block_on(pull(
                &conn,
                &router,
                &node,
                &peer.name,
                set,
                &owner.group.name,
                1,
                index.clone(),
                &opts,
            ));
            match r {
                Err(SyncError::Refused {
                    code: ErrorCode::Busy, ..
                }) if waiting.elapsed() < BUSY_WAIT => {
                    if waiting.elapsed() < Duration::from_millis(300) {
                        eprintln!(
                            "{} is busy with {} (an interrupted run?); waiting up to {} s",
                            peer.name,
                            set.name,
                            BUSY_WAIT.as_secs()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
                r => break r,
            }
        };
        bar.done();
        match r {
            Ok(r) => reports.push(r),
            Err(e) => {
                eprintln!("hamirror: resync of {} from {} failed: {e}", set.name, peer.name);
                if e.retryable() {
                    eprintln!("(this may succeed if retried)");
                }
                failed.push((set.name.clone(), e.to_string()));
            }
        }
    }
    let stats = conn.stats();
    rt.block_on(endpoint.finish(&conn, "done"));
    let elapsed = started.elapsed().as_secs_f64();
    let wire = stats.udp_bytes_sent + stats.udp_bytes_received;
    if args.json {
        let failed: Vec<_> = failed
            .iter()
            .map(|(s, e)| serde_json::json!({"set": s, "error": e}))
            .collect();
        let v = serde_json::json!({
            "from": peer.name, "sets": reports, "failed": failed,
            "bytes_received": reports.iter().map(|r| r.receive.bytes_received).sum::<u64>(),
            "chunks_reused": reports.iter().map(|r| r.receive.chunks_reused).sum::<u64>(),
            "conflicts": reports.iter().map(|r| r.conflicts.len()).sum::<usize>(),
            "udp_bytes_sent": stats.udp_bytes_sent, "udp_bytes_received": stats.udp_bytes_received,
            "elapsed_s": elapsed,
        });
        println!("{v}");
    } else {
        for r in &reports {
            print!("{}", summary(r, &peer.name));
        }
        println!(
            "resync from {}: {} set(s), {} files applied, {} received, {} on the wire, {} chunks reused, \
             {} conflict(s), {} failed set(s), {elapsed:.3} s",
            peer.name,
            reports.len(),
            reports.iter().map(|r| r.receive.applied).sum::<u64>(),
            bytes(reports.iter().map(|r| r.receive.bytes_received).sum()),
            bytes(wire),
            reports.iter().map(|r| r.receive.chunks_reused).sum::<u64>(),
            reports.iter().map(|r| r.conflicts.len()).sum::<usize>(),
            failed.len()
        );
    }
    let mut partial = false;
    for r in &reports {
        for (p, why) in &r.receive.warned {
            eprintln!("warning: /{}: {why}", crate::scan::show_path(p));
        }
        for (p, why) in &r.receive.failed {
            eprintln!("error: /{}: {why}", crate::scan::show_path(p));
        }
        partial |= r.receive.failures > 0 || !r.complete() && !args.dry_run;
    }
    Ok(if reports.is_empty() {
        EXIT_FAILED
    } else if partial || !failed.is_empty() {
        EXIT_PARTIAL
    } else {
        EXIT_OK
    })
}

/// [`scan_local`], waiting (up to [`BUSY_WAIT`]) while another process of
/// this node — its daemon applying a push — holds the set's index.
fn scan_when_free(
    node: &Node,
    owner: &Node,
    set: &MirrorSet,
    jobs: Option<usize>,
) -> anyhow::Result<(crate::index::Index, crate::scan::ScanReport)> {
    let waiting = std::time::Instant::now();
    loop {
        match scan_local(node, owner, set, jobs) {
            Err(e)
                if waiting.elapsed() < BUSY_WAIT
                    && e.chain().any(|c| {
                        matches!(
                            c.downcast_ref::<crate::index::IndexError>(),
                            Some(crate::index::IndexError::InUse { .. })
                        )
                    }) =>
            {
                if waiting.elapsed() < Duration::from_millis(300) {
                    eprintln!(
                        "{} is in use on {} (its daemon applying a push?); waiting up to {} s",
                        set.name,
                        node.name,
                        BUSY_WAIT.as_secs()
                    );
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            r => return r,
        }
    }
}

fn summary(r: &PullReport, peer: &str) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let rr = &r.receive;
    match r.outcome {
        "unchanged" => {
            let _ = writeln!(
                s,
                "{} ← {peer}: in step at generation {} ({:.3} s)",
                r.set, r.generation, r.elapsed_s
            );
        }
        "dry-run" => {
            super::sync::itemize(&mut s, &rr.would_change, &rr.would_delete);
            for p in &r.would_conflict {
                let _ = writeln!(
                    s,
                    "!conflict /{p} (this node's version would be kept as a conflict copy)"
                );
            }
            let need = rr.would_need.map_or((0, 0), |n| (n.chunks, n.bytes));
            let _ = writeln!(
                s,
                "{} ← {peer} (dry run): {} to change, {} to delete, {} conflict(s), {} chunks ({}) to receive",
                r.set,
                rr.would_change.len(),
                rr.would_delete.len(),
                r.would_conflict.len(),
                need.0,
                bytes(need.1)
            );
        }
        listing => {
            let _ = writeln!(
                s,
                "{} ← {peer}: generation {} ({listing}), {} entries offered, {} files applied, {} deleted\n  \
                 {} chunks received ({}; {} as deltas), {} chunks reused, {} conflict(s), {:.3} s",
                r.set,
                r.generation,
                rr.offered,
                rr.applied,
                rr.deleted,
                rr.chunks_received,
                bytes(rr.bytes_received),
                rr.deltas_received,
                rr.chunks_reused,
                r.conflicts.len(),
                r.elapsed_s
            );
            for p in &r.conflicts {
                let _ = writeln!(
                    s,
                    "  conflict: /{p}: this node's version is kept as a conflict copy beside it, on both nodes"
                );
            }
            if r.conflicts_delivered > 0 {
                let _ = writeln!(s, "  {} conflict copies are on {peer} too", r.conflicts_delivered);
            }
        }
    }
    s
}
