//! `hamirror sync SET`: mirror one set to the peer once. Scans the set
//! (quick check: only changed files are read), connects to the peer's
//! receiver, offers what changed since the generation the peer last
//! acknowledged, sends the chunks it lacks, and prints a summary (or one
//! JSON object). `--dry-run` lists what would change and sends no data.
//!
//! Exit: 0 ok, 1 partial (files that failed are named), 2 failed.

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use super::progress::Bar;
use super::scan::{bytes, scan_local};
use super::{EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, Global};
use crate::sync::{PushOptions, PushReport, push};
use crate::transport::Endpoint;

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The set to mirror: `Fsmbd` or `smbd`. It must belong to this node's group.
    pub set: String,
    /// Show what would change on the peer; change nothing, send no data.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Override the mass-delete guard (a root missing or empty here while
    /// the peer holds data, or more lost than the set's delete_limit since
    /// the guard's count started) and start its count again.
    #[arg(long)]
    pub force: bool,
    /// Offer every entry, not only what changed since the peer's last
    /// acknowledgement: the peer re-checks its own copy (a stat per file,
    /// reading what changed) and repairs anything changed there by hand —
    /// content, mode, owner, times, extra or missing files.
    #[arg(long)]
    pub full: bool,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Hashing threads for the scan [default: one per CPU].
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<usize>,
}

pub fn run(global: &Global, args: &SyncArgs) -> anyhow::Result<i32> {
    let (cluster, me) = global.load_local()?;
    let node = super::local(&cluster, &me).clone();
    let (owner, set) = super::find_set(&cluster, &args.set)?;
    let (owner, set) = (owner.clone(), set.clone());
    if owner.name != me {
        anyhow::bail!(
            "{} belongs to group {}, held by {}; run `hamirror sync {}` on {} (this node receives it)",
            set.name,
            owner.group.name,
            owner.name,
            set.name,
            owner.name
        );
    }
    let peer = cluster.sole_peer(&me).map_err(anyhow::Error::msg)?.clone();
    let rt = super::runtime()?;
    // The handshake runs on the runtime while this thread scans.
    let connecting = {
        let (node, peer) = (node.clone(), peer.clone());
        rt.spawn(async move {
            let endpoint = Endpoint::sender(&node, &peer)?;
            let conn = endpoint.connect().await?;
            anyhow::Ok((endpoint, conn))
        })
    };
    let (index, scan) = scan_local(&node, &owner, &set, args.jobs)?;
    let index = Arc::new(index);
    let tty = std::io::stderr().is_terminal();
    let bar = Arc::new(Bar::sending(tty));
    let opts = PushOptions {
        dry_run: args.dry_run,
        force: args.force,
        full: args.full,
        session: 1,
        progress: Some(bar.clone()),
    };
    let result = rt.block_on(async {
        let (endpoint, conn) = connecting.await??;
        let r = push(&conn, &node, &peer.name, &set, &owner.group.name, 1, index, &opts).await;
        let stats = conn.stats();
        endpoint.finish(&conn, "done").await;
        anyhow::Ok((r, stats))
    });
    bar.done();
    let (report, stats) = match result {
        Ok((Ok(r), stats)) => (r, stats),
        Ok((Err(e), _)) => {
            eprintln!("hamirror: sync of {} to {} failed: {e}", set.name, peer.name);
            if e.retryable() {
                eprintln!("(this may succeed if retried)");
            }
            return Ok(EXIT_FAILED);
        }
        Err(e) => return Err(e).with_context(|| format!("sync of {} to {}", set.name, peer.name)),
    };
    if args.json {
        let v = serde_json::json!({ "scan": scan, "push": report, "udp_bytes_sent": stats.udp_bytes_sent,
            "udp_bytes_received": stats.udp_bytes_received });
        println!("{v}");
    } else {
        print!(
            "{}",
            summary(&report, &peer.name, stats.udp_bytes_sent + stats.udp_bytes_received)
        );
    }
    print_listed("warning", &report.warnings, report.warnings_total, "warnings");
    let left_out = &report.send.not_mirrored;
    print_listed("warning", left_out, left_out.len() as u64, "warnings");
    print_listed("error", &report.failures, report.failures_total, "failures");
    Ok(if report.failures_total > 0 || scan.is_partial() {
        EXIT_PARTIAL
    } else {
        EXIT_OK
    })
}

/// A dry run's itemized lines, rsync-style: `>f /path` for what would
/// change (the letter is the kind), `*deleting /path`.
pub(super) fn itemize(s: &mut String, change: &[(hamirror_wire::EntryKind, Vec<u8>)], delete: &[Vec<u8>]) {
    use std::fmt::Write;
    for (kind, p) in change {
        let _ = writeln!(s, ">{} /{}", crate::sync::kind_letter(*kind), crate::scan::show_path(p));
    }
    for p in delete {
        let _ = writeln!(s, "*deleting /{}", crate::scan::show_path(p));
    }
}

fn summary(r: &PushReport, peer: &str, wire: u64) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    match r.outcome {
        "unchanged" => {
            let _ = writeln!(
                s,
                "{} → {peer}: in step at generation {} ({:.3} s)",
                r.set, r.generation, r.elapsed_s
            );
        }
        "dry-run" => {
            itemize(&mut s, &r.send.would_change, &r.send.would_delete);
            let need = r.send.need.as_ref().map_or((0, 0), |n| (n.chunks, n.bytes));
            let _ = writeln!(
                s,
                "{} → {peer} (dry run): {} to change, {} to delete, {} chunks ({}) to send",
                r.set,
                r.send.would_change.len(),
                r.send.would_delete.len(),
                need.0,
                bytes(need.1)
            );
        }
        listing => {
            let _ = writeln!(
                s,
                "{} → {peer}: generation {} ({listing}), {} entries offered, {} deleted\n  \
                 {} files applied ({}), {} chunks sent ({} raw, {} framed; {} as deltas), {} chunks reused\n  \
                 {} on the wire, {:.3} s{}",
                r.set,
                r.generation,
                r.send.entries_offered,
                r.deleted,
                r.files_applied,
                bytes(r.bytes_applied),
                r.send.chunks_sent,
                bytes(r.send.chunk_bytes),
                bytes(r.send.chunk_frame_bytes),
                r.send.deltas_sent,
                r.chunks_reused,
                bytes(wire),
                r.elapsed_s,
                match r.warnings_total {
                    0 => String::new(),
                    n => format!(", {n} warnings (extended attributes or device nodes the replica refused)"),
                }
            );
        }
    }
    s
}

/// The paths the peer named (`LEVEL: /PATH: WHY`), then how many more it
/// counted without naming them.
fn print_listed(level: &str, listed: &[(String, String)], total: u64, what: &str) {
    for (p, why) in listed {
        eprintln!("{level}: /{p}: {why}");
    }
    if total > listed.len() as u64 {
        eprintln!("… and {} more {what}", total - listed.len() as u64);
    }
}
