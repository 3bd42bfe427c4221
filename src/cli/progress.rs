//! Progress bars on stderr for the commands that read or send a lot:
//! hashing during a scan, chunk data during a sync. Hidden when stderr is
//! not a terminal (logs and scripts get the summary only).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::scan::ScanObserver;
use crate::sync::Progress;

/// A byte-count progress bar.
pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    fn new(tty: bool, verb: &str) -> Bar {
        let bar = if tty {
            ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        let template =
            format!("{verb} {{bar:30}} {{binary_bytes}}/{{binary_total_bytes}} {{binary_bytes_per_sec}} eta {{eta}}");
        bar.set_style(ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()));
        Bar { bar }
    }

    /// Bytes hashed out of bytes to read.
    pub fn hashing(tty: bool) -> Bar {
        Bar::new(tty, "hashing")
    }

    /// Chunk bytes sent out of bytes the peer needs.
    pub fn sending(tty: bool) -> Bar {
        Bar::new(tty, "sending")
    }

    /// Chunk bytes received out of bytes this node needs.
    pub fn receiving(tty: bool) -> Bar {
        Bar::new(tty, "receiving")
    }

    pub fn done(&self) {
        self.bar.finish_and_clear();
    }

    fn start(&self, total: u64) {
        if total > 0 {
            self.bar.set_length(total);
            self.bar.enable_steady_tick(Duration::from_millis(200));
        }
    }
}

impl ScanObserver for Bar {
    fn reading(&self, files: u64, bytes: u64) {
        if files > 0 {
            self.start(bytes);
        }
    }
    fn progress(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
}

impl Progress for Bar {
    fn need(&self, bytes: u64) {
        self.start(bytes);
    }
    fn sent(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
}
