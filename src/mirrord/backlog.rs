//! The backlog figures of each set this node mirrors, per replica, for
//! `hamirror status`: files and bytes changed here that the peer has not
//! acknowledged (from the index's change log since the acknowledged
//! generation), the age of the oldest of them, how shipping stands and
//! over which link; the set's own figures are those of the replica
//! furthest behind. Read from the watch handles and the set's index; kept
//! by the control thread, never computed on the daemon's driver thread.

use std::collections::HashMap;
use std::time::Instant;

use super::control::in_step;
use super::ship::IndexSlot;
use super::view::Link;
use crate::config::MirrorSet;
use crate::daemon::{ReplicaBacklog, SetBacklog};
use crate::watch::{RunState, Shipping, WatchHandle};

/// Pending bytes are summed from the index only up to this many paths
/// (beyond, `pending_bytes` is unknown rather than slow).
const BYTES_UP_TO: usize = 10_000;

/// Remembers since when each replica of a set has been behind (for the
/// lag), keyed by (set, peer).
#[derive(Debug, Default)]
pub(super) struct BacklogTracker {
    behind_since: HashMap<(String, String), Instant>,
    /// Per replica: the last acknowledged generation seen and when (Unix
    /// ms) the peer last confirmed holding everything shipped.
    last_ack: HashMap<(String, String), (Option<u64>, Option<u64>)>,
}

impl BacklogTracker {
    /// One set's figures (each replica's in `replicas`, the furthest
    /// behind in the set's own), whether every replica is in step, and
    /// whether every replica has acknowledged a push since the set's engine
    /// (re)started — that first push is a full quick check, so after it
    /// the peer holds everything that was here when it began (what a
    /// resync waits for: a busy service may never leave the backlog
    /// empty). `links`: each replica's peer and the link to it.
    pub fn figures(
        &mut self,
        group: &str,
        set: &MirrorSet,
        handle: Option<&WatchHandle>,
        slot: Option<&IndexSlot>,
        links: &[(String, Link)],
    ) -> (SetBacklog, bool, bool) {
        let (mut all_step, mut all_pushed) = (true, true);
        let mut replicas = Vec::with_capacity(links.len());
        for (peer, link) in links {
            let (r, step, pushed) = self.replica(set, peer, handle, slot, *link);
            all_step &= step;
            all_pushed &= pushed;
            replicas.push(r);
        }
        let mut b = furthest_behind(&replicas);
        b.set = set.name.clone();
        b.group = group.to_string();
        // The engine's last commit (cheap: no read of the change log).
        b.generation = handle.map(|h| h.status().generation);
        b.replicas = replicas;
        (b, all_step && !links.is_empty(), all_pushed && !links.is_empty())
    }

    fn replica(
        &mut self,
        set: &MirrorSet,
        peer: &str,
        handle: Option<&WatchHandle>,
        slot: Option<&IndexSlot>,
        link: Link,
    ) -> (ReplicaBacklog, bool, bool) {
        let key = (set.name.clone(), peer.to_string());
        let mut b = ReplicaBacklog {
            peer: peer.to_string(),
            ..ReplicaBacklog::default()
        };
        let Some(handle) = handle else {
            b.shipping = Some("starting".into());
            self.behind_since.entry(key.clone()).or_insert_with(Instant::now);
            b.lag_ms = self.lag(&key);
            return (b, false, false);
        };
        let status = handle.status();
        let (shipping, _) = handle.shipping_to(Some(peer));
        b.shipping = Some(match &shipping {
            Shipping::Disabled => "disabled".into(),
            Shipping::Ok => "ok".into(),
            Shipping::Retrying(why) => format!("retrying: {why}"),
            Shipping::Stopped(why) => format!("stopped: {why}"),
        });
        b.link = Some(link.name().to_string());
        let Ok(backlog) = handle.backlog_to(peer) else {
            return (b, false, false);
        };
        b.acked_generation = backlog.acked;
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
        let ack = self.last_ack.entry(key.clone()).or_default();
        if step || (backlog.acked.is_some() && ack.0 != backlog.acked) {
            ack.1 = Some(unix_ms());
        }
        ack.0 = backlog.acked;
        b.last_ack_unix_ms = ack.1;
        if step {
            self.behind_since.remove(&key);
            b.pending_files = Some(0);
            b.pending_bytes = Some(0);
        } else {
            self.behind_since.entry(key.clone()).or_insert_with(Instant::now);
        }
        b.lag_ms = self.lag(&key);
        (b, step, pushed)
    }

    fn lag(&self, key: &(String, String)) -> Option<u64> {
        Some(self.behind_since.get(key).map_or(0, |t| t.elapsed().as_millis() as u64))
    }

    /// Drops the memory of sets and replicas no longer mirrored from here.
    pub fn forget_others(&mut self, current: &[SetBacklog]) {
        let known = |(s, p): &(String, String)| {
            current
                .iter()
                .any(|b| &b.set == s && b.replicas.iter().any(|r| &r.peer == p))
        };
        self.behind_since.retain(|k, _| known(k));
        self.last_ack.retain(|k, _| known(k));
    }
}

/// The set's own figures: those of the replica furthest behind (with one
/// replica, its own). Shipping shows the first replica that is not `ok`.
fn furthest_behind(replicas: &[ReplicaBacklog]) -> SetBacklog {
    let mut b = SetBacklog::default();
    let Some(first) = replicas.first() else {
        return b;
    };
    // `None` (unknown) counts as furthest behind.
    let worst = |f: fn(&ReplicaBacklog) -> Option<u64>| {
        if replicas.iter().any(|r| f(r).is_none()) {
            None
        } else {
            replicas.iter().filter_map(f).max()
        }
    };
    b.pending_files = worst(|r| r.pending_files);
    b.pending_bytes = worst(|r| r.pending_bytes);
    b.lag_ms = worst(|r| r.lag_ms);
    let behind = replicas
        .iter()
        .find(|r| r.shipping.as_deref() != Some("ok"))
        .unwrap_or(first);
    b.shipping = behind.shipping.clone();
    b.link = behind.link.clone();
    b.last_ack_unix_ms = if replicas.iter().any(|r| r.last_ack_unix_ms.is_none()) {
        None
    } else {
        replicas.iter().filter_map(|r| r.last_ack_unix_ms).min()
    };
    b
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(peer: &str, files: Option<u64>, shipping: &str, ack: Option<u64>) -> ReplicaBacklog {
        ReplicaBacklog {
            peer: peer.into(),
            pending_files: files,
            pending_bytes: files.map(|f| f * 10),
            lag_ms: files.map(|f| f * 100),
            shipping: Some(shipping.into()),
            link: Some(format!("link-{peer}")),
            acked_generation: None,
            last_ack_unix_ms: ack,
        }
    }

    #[test]
    fn one_replica_is_the_set_and_more_show_the_one_furthest_behind() {
        let one = furthest_behind(&[r("serv2", Some(3), "ok", Some(7))]);
        assert_eq!(
            (
                one.pending_files,
                one.pending_bytes,
                one.lag_ms,
                one.shipping,
                one.link,
                one.last_ack_unix_ms
            ),
            (
                Some(3),
                Some(30),
                Some(300),
                Some("ok".into()),
                Some("link-serv2".into()),
                Some(7)
            )
        );
        let two = furthest_behind(&[
            r("serv2", Some(1), "ok", Some(9)),
            r("serv3", Some(5), "retrying: away", Some(4)),
        ]);
        assert_eq!(
            (
                two.pending_files,
                two.lag_ms,
                two.shipping.as_deref(),
                two.link.as_deref(),
                two.last_ack_unix_ms
            ),
            (Some(5), Some(500), Some("retrying: away"), Some("link-serv3"), Some(4))
        );
        let unknown = furthest_behind(&[r("serv2", Some(1), "ok", Some(9)), r("serv3", None, "ok", None)]);
        assert_eq!((unknown.pending_files, unknown.last_ack_unix_ms), (None, None));
        assert_eq!(furthest_behind(&[]), SetBacklog::default());
    }
}
