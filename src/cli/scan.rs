//! `hamirror scan SET`: scan one mirror set on this node (under the local
//! node's `root`, whichever node's group the set belongs to), update the
//! index in the local node's `state` directory, and print one summary (text,
//! or one JSON object with `--json`). Skipped paths and warnings go to
//! stderr; so does each failed path. A progress bar is drawn on stderr
//! while hashing when stderr is a terminal.
//!
//! Exit: 0 ok, 1 partial (some paths failed, each named), 2 failed.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{EXIT_OK, EXIT_PARTIAL, Global};
use crate::index::Index;
use crate::scan::{ScanObserver, ScanOptions, ScanReport, scan_set, show_path};

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
    let index = Index::open_set(&node.conf.state, &set.name).with_context(|| format!("node {me}"))?;
    let opts = ScanOptions {
        threads: args.jobs.unwrap_or(0),
        ..ScanOptions::default()
    };
    let bar = Bar::new(std::io::stderr().is_terminal());
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
        "{} (group {group}) on {node}, root {root}: {}, {}, {}, {}, {}\n  \
         new {}, changed {}, deleted {}\n  \
         read {} ({}, {}), {} unchanged by the quick check\n  \
         generation {} (was {}), {:.3} s\n",
        r.set,
        plural(r.files, "file", "files"),
        plural(r.dirs, "directory", "directories"),
        plural(r.symlinks, "symlink", "symlinks"),
        plural(r.hardlinks, "hard link", "hard links"),
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

/// The progress bar: bytes hashed out of bytes to read. Hidden when stderr
/// is not a terminal or nothing needs reading.
struct Bar {
    bar: ProgressBar,
}

impl Bar {
    fn new(tty: bool) -> Bar {
        let bar = if tty {
            ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "hashing {bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Bar { bar }
    }

    fn done(&self) {
        self.bar.finish_and_clear();
    }
}

impl ScanObserver for Bar {
    fn reading(&self, files: u64, bytes: u64) {
        if files > 0 {
            self.bar.set_length(bytes);
            self.bar.enable_steady_tick(Duration::from_millis(200));
        }
    }
    fn progress(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
}
