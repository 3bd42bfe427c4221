//! The watch engine's [`Shipper`] over QUIC: each call pushes the set's
//! committed generation to the peer in one conversation, over a connection
//! that is kept between calls and opened again when it was lost (the peer
//! restarted, a link went down). What the peer has not acknowledged stays in
//! the index's generation log, so after an outage the next call sends just
//! that.

use std::sync::Arc;

use super::{PushOptions, SyncError, push};
use crate::config::{MirrorSet, Node};
use crate::index::Index;
use crate::transport::{Connection, Endpoint};
use crate::watch::{ShipError, ShipOutcome, Shipper};

pub struct QuicShipper {
    rt: tokio::runtime::Handle,
    local: Node,
    peer: Node,
    group: String,
    epoch: u64,
    endpoint: Option<Endpoint>,
    conn: Option<Connection>,
    session: u64,
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
        }
    }

    async fn connection(&mut self) -> Result<Connection, SyncError> {
        if let Some(c) = &self.conn
            && c.quinn().close_reason().is_none()
        {
            return Ok(c.clone());
        }
        if self.endpoint.is_none() {
            self.endpoint = Some(Endpoint::client(&self.local, &self.peer)?);
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
            })?;
            self.session += 1;
            let opts = PushOptions {
                session: self.session,
                ..PushOptions::default()
            };
            let peer = self.peer.name.clone();
            match push(
                &conn,
                &self.local,
                &peer,
                set,
                &self.group,
                self.epoch,
                index.clone(),
                &opts,
            )
            .await
            {
                Ok(r) if r.failures_total == 0 => {
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
                    self.conn = None;
                    Err(ShipError {
                        message: e.to_string(),
                        retryable,
                    })
                }
            }
        })
    }
}
