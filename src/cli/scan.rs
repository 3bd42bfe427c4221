//! `hamirror scan SET`: scan one mirror set on this node (under the local
//! node's `root`, whichever node's group the set belongs to), update the
//! index in the local node's `state` directory, and print one summary (text,
//! or one JSON object with `--json`). Skipped paths and warnings go to
//! stderr; so does each failed path. A progress bar is drawn on stderr
//! while hashing when stderr is a terminal.
//!
//! Exit: 0 ok, 1 partial (some paths failed, each named), 2 failed.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Args;

use super::progress::Bar;
use super::{EXIT_OK, EXIT_PARTIAL, Global};
use crate::config::{MirrorSet, Node};
use crate::index::Index;
use crate::scan::{ScanOptions, ScanReport, scan_set, show_path};

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// The set to scan: its file name (`Fsmbd`) or its name (`smbd`).
    pub set: String,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Hashing threads [default: one per CPU].
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<usize>,
}

pub fn run(global: &Global, args: &ScanArgs) -> anyhow::Result<i32> {
    let (cluster, me) = global.load_local()?;
    let node = super::local(&cluster, &me);
    let (owner, set) = super::find_set(&cluster, &args.set)?;
    let (_, report) = scan_local(node, owner, set, args.jobs)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!(
            "{}",
            summary(&report, &owner.name, &me, &node.conf.root.display().to_string())
        );
    }
    if report.is_partial() {
        eprintln!(
            "{}: {} path{} failed; their previous state is kept",
            report.set,
            report.errors.len(),
            if report.errors.len() == 1 { "" } else { "s" }
        );
        Ok(EXIT_PARTIAL)
    } else {
        Ok(EXIT_OK)
    }
}

/// Opens the set's index on `node`, scans the set with a progress bar on a
/// terminal, and names what was skipped or failed on stderr.
pub fn scan_local(
    node: &Node,
    owner: &Node,
    set: &MirrorSet,
    jobs: Option<usize>,
) -> anyhow::Result<(Index, ScanReport)> {
    let me = &node.name;
    let index = Index::open_set(&node.conf.state, &set.name).with_context(|| format!("node {me}"))?;
    let opts = ScanOptions {
        threads: jobs.unwrap_or(0),
        ..ScanOptions::default()
    };
    let bar = Bar::hashing(std::io::stderr().is_terminal());
    let report = scan_set(&index, set, &node.conf.root, &opts, &bar)
        .with_context(|| format!("scanning {} (group {}) on {me}", set.name, owner.name))?;
    bar.done();
    for m in &report.missing_roots {
        eprintln!("warning: root /{} does not exist on {me}", show_path(m));
    }
    for s in &report.skipped {
        eprintln!("skipped /{}: {}", show_path(&s.path), s.reason);
    }
    for e in &report.errors {
        eprintln!("error: /{}: {}", show_path(&e.path), e.reason);
    }
    Ok((index, report))
}

/// Bytes for people: `1.5 GiB`.
pub fn bytes(v: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = v as f64;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < units.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v} B")
    } else {
        format!("{x:.1} {}", units[u])
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The text summary: four lines.
pub fn summary(r: &ScanReport, group: &str, node: &str, root: &str) -> String {
    format!(
        "{} (group {group}) on {node}, root {root}: {}, {}, {}, {}{}, {}\n  \
         new {}, changed {}, deleted {}\n  \
         read {} ({}, {}), {} unchanged by the quick check\n  \
         generation {} (was {}), {:.3} s\n",
        r.set,
        plural(r.files, "file", "files"),
        plural(r.dirs, "directory", "directories"),
        plural(r.symlinks, "symlink", "symlinks"),
        plural(r.hardlinks, "hard link", "hard links"),
        match r.specials {
            0 => String::new(),
            n => format!(", {}", plural(n, "FIFO or device node", "FIFOs and device nodes")),
        },
        bytes(r.bytes),
        r.new,
        r.changed,
        r.deleted,
        plural(r.files_read, "file", "files"),
        bytes(r.bytes_read),
        plural(r.chunks_hashed, "chunk", "chunks"),
        r.files_unchanged,
        r.generation,
        r.previous_generation,
        r.elapsed_s
    )
}
