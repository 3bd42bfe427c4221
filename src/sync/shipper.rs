//! The watch engine's [`Shipper`] over QUIC: each call pushes the set's
//! committed generation to the peer in one conversation, over a connection
//! that is kept between calls and opened again when it was lost (the peer
//! restarted, a link went down). What the peer has not acknowledged stays in
//! the index's generation log, so after an outage the next call sends just
//! that.
//!
//! Every wait on the peer is bounded. A peer that died is noticed by the
//! transport's idle timeout; a peer restarted at the same address answers
//! the old connection's next packet with a stateless reset (its listener's
//! reset key survives restarts), so the connection is known dead at once;
//! and a peer that keeps the connection alive but stops moving the
//! conversation (no stream data either way for [`STALL`]) fails the push
//! as retryable. After any failure the connection is closed, not reused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{PushOptions, SyncError, push};
use crate::config::{MirrorSet, Node};
use crate::index::Index;
use crate::transport::{Connection, Endpoint};
use crate::watch::{ShipError, ShipOutcome, Shipper};

/// How long a push may go without stream data moving in either direction
/// before it is abandoned. Long enough for a receiver's final `syncfs` of a
/// large first copy (it sends nothing meanwhile); a push cut short by it
/// loses nothing, the next one resumes from what the replica holds.
pub const STALL: Duration = Duration::from_secs(60);

pub struct QuicShipper {
    rt: tokio::runtime::Handle,
    local: Node,
    peer: Node,
    group: String,
    epoch: u64,
    endpoint: Option<Endpoint>,
    conn: Option<Connection>,
    session: u64,
    stall: Duration,
}

impl QuicShipper {
    /// A shipper for the sets of `group`, which `local` holds at `epoch`.
    pub fn new(rt: tokio::runtime::Handle, local: &Node, peer: &Node, group: &str, epoch: u64) -> QuicShipper {
        QuicShipper {
            rt,
            local: local.clone(),
            peer: peer.clone(),
            group: group.to_string(),
            epoch,
            endpoint: None,
            conn: None,
            session: 0,
            stall: STALL,
        }
    }

    /// Replaces [`STALL`] (tests).
    pub fn with_stall(mut self, stall: Duration) -> QuicShipper {
        self.stall = stall;
        self
    }

    /// Drops the connection after a failure: closed, so that clones held
    /// by tasks of the broken conversation end too, and never reused.
    fn abandon(&mut self, why: &str) {
        if let Some(c) = self.conn.take() {
            c.close(0, why);
        }
    }

    async fn connection(&mut self) -> Result<Connection, SyncError> {
        if let Some(c) = &self.conn
            && c.quinn().close_reason().is_none()
        {
            return Ok(c.clone());
        }
        if self.endpoint.is_none() {
            self.endpoint = Some(Endpoint::sender(&self.local, &self.peer)?);
        }
        let conn = self.endpoint.as_ref().expect("set above").connect().await?;
        self.conn = Some(conn.clone());
        Ok(conn)
    }
}

impl Shipper for QuicShipper {
    fn ship(&mut self, set: &MirrorSet, index: &Arc<Index>, _generation: u64) -> Result<ShipOutcome, ShipError> {
        let rt = self.rt.clone();
        rt.block_on(async {
            let conn = self.connection().await.map_err(|e| ShipError {
                message: e.to_string(),
                retryable: e.retryable(),
                reached_peer: false,
                refused: false,
            })?;
            self.session += 1;
            let opts = PushOptions {
                session: self.session,
                ..PushOptions::default()
            };
            let peer = self.peer.name.clone();
            let pushed = tokio::select! {
                r = push(&conn, &self.local, &peer, set, &self.group, self.epoch, index.clone(), &opts) => r,
                idle = stalled(&conn, self.stall) => {
                    self.abandon("no progress");
                    return Err(ShipError {
                        message: format!("no progress from {peer} for {} s; reconnecting", idle.as_secs()),
                        retryable: true,
                        reached_peer: false,
                        refused: false,
                    });
                }
            };
            match pushed {
                Ok(r) if r.failures_total == 0 => {
                    for (p, why) in &r.warnings {
                        tracing::warn!(set = %set.name, peer = %peer, "/{p}: {why}");
                    }
                    if r.outcome != "unchanged" {
                        tracing::info!(
                            set = %set.name, peer = %peer, generation = r.generation, listing = r.outcome,
                            entries = r.send.entries_offered, chunks = r.send.chunks_sent, bytes = r.send.chunk_bytes,
                            ms = (r.elapsed_s * 1000.0) as u64, "shipped"
                        );
                    }
                    Ok(ShipOutcome { acked: r.generation })
                }
                Ok(r) => {
                    let first = r
                        .failures
                        .first()
                        .map(|(p, why)| format!(" (first: /{p}: {why})"))
                        .unwrap_or_default();
                    Err(ShipError {
                        message: format!("{} files could not be applied on {peer}{first}", r.failures_total),
                        retryable: true,
                        reached_peer: true,
                        refused: false,
                    })
                }
                Err(e) => {
                    // Only the peer's own refusal (not the holder, an older
                    // epoch, a mass delete…) needs an operator; a conversation
                    // that broke off (peer killed, link lost) is retried on a
                    // fresh connection.
                    let retryable = match &e {
                        SyncError::Refused { code, .. } => code.retryable(),
                        SyncError::Local { code, .. } => {
                            code.retryable() || *code == hamirror_wire::ErrorCode::Protocol
                        }
                        _ => true,
                    };
                    self.abandon("push failed");
                    Err(ShipError {
                        message: e.to_string(),
                        retryable,
                        reached_peer: false,
                        refused: matches!(e, SyncError::Refused { .. }),
                    })
                }
            }
        })
    }
}

/// What moves when a conversation makes progress: stream data either way,
/// and the flow-control credit the receiver grants as it consumes data.
/// Keep-alive pings and their acknowledgements do not count.
fn stream_activity(conn: &Connection) -> u64 {
    let s = conn.quinn().stats();
    s.frame_rx.stream
        + s.frame_tx.stream
        + s.frame_rx.max_data
        + s.frame_rx.max_stream_data
        + s.frame_rx.reset_stream
        + s.frame_rx.stop_sending
}

/// Resolves once nothing has moved on `conn` for `limit`, with how long.
async fn stalled(conn: &Connection, limit: Duration) -> Duration {
    let tick = (limit / 10).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut last = stream_activity(conn);
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let now = stream_activity(conn);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= limit {
            return since.elapsed();
        }
    }
}
