//! The backlog figures of each set this node mirrors, for `hamirror
//! status`: files and bytes changed here that the peer has not
//! acknowledged (from the index's change log since the acknowledged
//! generation), the age of the oldest of them, how shipping stands and
//! over which link. Read from the watch handles and the set's index; kept
//! by the control thread, never computed on the daemon's driver thread.

use std::collections::HashMap;
use std::time::Instant;

use super::control::in_step;
use super::ship::IndexSlot;
use super::view::Link;
use crate::config::MirrorSet;
use crate::daemon::SetBacklog;
use crate::watch::{RunState, Shipping, WatchHandle};

/// Pending bytes are summed from the index only up to this many paths
/// (beyond, `pending_bytes` is unknown rather than slow).
const BYTES_UP_TO: usize = 10_000;

/// Remembers since when each set has been behind (for the lag).
#[derive(Debug, Default)]
pub(super) struct BacklogTracker {
    behind_since: HashMap<String, Instant>,
    /// Per set: the last acknowledged generation seen and when (Unix ms)
    /// the peer last confirmed holding everything shipped.
    last_ack: HashMap<String, (Option<u64>, Option<u64>)>,
}

impl BacklogTracker {
    /// One set's figures, whether it is in step with the peer, and whether
    /// the peer has acknowledged a push since the set's engine (re)started
    /// — that first push is a full quick check, so after it the peer holds
    /// everything that was here when it began (what a resync waits for: a
    /// busy service may never leave the backlog empty).
    pub fn figures(
        &mut self,
        group: &str,
        set: &MirrorSet,
        handle: Option<&WatchHandle>,
        slot: Option<&IndexSlot>,
        link: Link,
    ) -> (SetBacklog, bool, bool) {
        let mut b = SetBacklog {
            set: set.name.clone(),
            group: group.to_string(),
            ..SetBacklog::default()
        };
        let Some(handle) = handle else {
            b.shipping = Some("starting".into());
            self.behind_since.entry(set.name.clone()).or_insert_with(Instant::now);
            b.lag_ms = self.lag(&set.name);
            return (b, false, false);
        };
        let status = handle.status();
        let (shipping, _) = handle.shipping();
        b.shipping = Some(match &shipping {
            Shipping::Disabled => "disabled".into(),
            Shipping::Ok => "ok".into(),
            Shipping::Retrying(why) => format!("retrying: {why}"),
            Shipping::Stopped(why) => format!("stopped: {why}"),
        });
        b.link = Some(link.name().to_string());
        let Ok(backlog) = handle.backlog() else {
            return (b, false, false);
        };
        let pushed = status.state == RunState::Watching && shipping == Shipping::Ok && backlog.acked.is_some();
        let base = backlog.acked.unwrap_or(status.start_generation);
        b.pending_files = backlog.paths;
        // Bytes: the current size of each pending path, from the index.
        if backlog.paths == Some(0) {
            b.pending_bytes = Some(0);
        } else if backlog.paths.is_some_and(|n| n <= BYTES_UP_TO as u64)
            && let Some(index) = slot.and_then(|s| s.lock().unwrap_or_else(|p| p.into_inner()).upgrade())
            && let Ok(Some(paths)) = index.changes_since(&set.name, base)
        {
            b.pending_files = Some(paths.len() as u64);
            let mut bytes = 0;
            for p in &paths {
                if let Ok(Some(e)) = index.entry(&set.name, p) {
                    bytes += e.size;
                }
            }
            b.pending_bytes = Some(bytes);
        }
        let step = in_step(&status.state, &shipping, backlog.generation, backlog.acked);
        let ack = self.last_ack.entry(set.name.clone()).or_default();
        if step || (backlog.acked.is_some() && ack.0 != backlog.acked) {
            ack.1 = Some(unix_ms());
        }
        ack.0 = backlog.acked;
        b.last_ack_unix_ms = ack.1;
        if step {
            self.behind_since.remove(&set.name);
            b.pending_files = Some(0);
            b.pending_bytes = Some(0);
        } else {
            self.behind_since.entry(set.name.clone()).or_insert_with(Instant::now);
        }
        b.lag_ms = self.lag(&set.name);
        (b, step, pushed)
    }

    fn lag(&self, set: &str) -> Option<u64> {
        Some(self.behind_since.get(set).map_or(0, |t| t.elapsed().as_millis() as u64))
    }

    /// Drops the memory of sets no longer mirrored from here.
    pub fn forget_others(&mut self, current: &[SetBacklog]) {
        self.behind_since.retain(|s, _| current.iter().any(|b| &b.set == s));
        self.last_ack.retain(|s, _| current.iter().any(|b| &b.set == s));
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
