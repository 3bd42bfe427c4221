//! An authenticated connection to the peer: the QUIC connection plus the
//! identity the handshake proved. Owns opening and accepting framed streams
//! — one bidirectional control stream for the conversation, any number of
//! unidirectional streams so small files and big chunks flow side by side.
//! Knows nothing of what the frames mean.

use std::net::SocketAddr;
use std::sync::Arc;

use super::error::TransportError;
use super::frame::{FrameReceiver, FrameSender};
use super::identity::Fingerprint;

/// Who is at the other end, as proven by the TLS handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The peer's node name (from the configuration: the key is what was
    /// checked, and only the configured peer's key is accepted).
    pub name: String,
    /// The fingerprint of the key it presented (equal to the pinned one).
    pub fingerprint: Fingerprint,
    /// The address it connected from or was reached at.
    pub addr: SocketAddr,
}

/// Priority of control streams: their frames go out before queued chunk
/// data, so the conversation stays responsive during a bulk transfer.
pub const CONTROL_PRIORITY: i32 = 1;

/// A connection to the peer. Cheap to clone; all clones share it.
#[derive(Debug, Clone)]
pub struct Connection {
    inner: quinn::Connection,
    peer: Arc<PeerIdentity>,
}

impl Connection {
    pub(crate) fn new(inner: quinn::Connection, peer: PeerIdentity) -> Connection {
        Connection {
            inner,
            peer: Arc::new(peer),
        }
    }

    pub fn peer(&self) -> &PeerIdentity {
        &self.peer
    }

    /// The protocol version the handshake settled on (the ALPN id both
    /// sides offered, newest first: see `wire::VERSIONS`).
    pub fn protocol_version(&self) -> u32 {
        self.inner
            .handshake_data()
            .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|d| d.protocol.as_deref().and_then(hamirror_wire::version_of_alpn))
            .unwrap_or(hamirror_wire::PROTOCOL_VERSION)
    }

    /// Opens the control stream. The peer sees it only once something is
    /// sent on it, so the opener speaks first (the hello).
    pub async fn open_control(&self) -> Result<(FrameSender, FrameReceiver), TransportError> {
        let (send, recv) = self.inner.open_bi().await?;
        let send = FrameSender::new(send);
        send.set_priority(CONTROL_PRIORITY);
        Ok((send, FrameReceiver::new(recv)))
    }

    /// Waits for the peer to open a control stream (and send its first frame).
    pub async fn accept_control(&self) -> Result<(FrameSender, FrameReceiver), TransportError> {
        let (send, recv) = self.inner.accept_bi().await?;
        let send = FrameSender::new(send);
        send.set_priority(CONTROL_PRIORITY);
        Ok((send, FrameReceiver::new(recv)))
    }

    /// Opens a one-way stream to the peer, waiting while the peer's limit
    /// of concurrent streams is reached.
    pub async fn open_uni(&self) -> Result<FrameSender, TransportError> {
        Ok(FrameSender::new(self.inner.open_uni().await?))
    }

    /// Waits for the peer's next one-way stream.
    pub async fn accept_uni(&self) -> Result<FrameReceiver, TransportError> {
        Ok(FrameReceiver::new(self.inner.accept_uni().await?))
    }

    /// Closes the connection at once; streams not yet delivered are lost.
    /// The peer sees [`TransportError::PeerClosed`] with `code` and `reason`.
    pub fn close(&self, code: u32, reason: &str) {
        self.inner.close(quinn::VarInt::from_u32(code), reason.as_bytes());
    }

    /// Closes the connection at once, as [`Connection::close`], and waits
    /// (at most `limit`) until the close frame has left, so the peer hears
    /// of the close now instead of after its idle timeout. The end of a
    /// one-shot command: quinn's own way, waiting out the draining period
    /// (three probe timeouts, ~80 ms), would add that much to every command.
    pub async fn close_and_flush(&self, code: u32, reason: &str, limit: std::time::Duration) {
        self.close(code, reason);
        // Closed, the connection sends nothing but its close frame (quinn
        // does not count those among the frames it sent): the next datagram
        // is that frame. Read right after the close, before quinn's driver
        // has had the time to wake.
        let before = self.inner.stats().udp_tx.datagrams;
        let start = std::time::Instant::now();
        // At least one wait: quinn's driver may run on this very thread.
        loop {
            tokio::time::sleep(std::time::Duration::from_micros(200)).await;
            if self.inner.stats().udp_tx.datagrams != before || start.elapsed() >= limit {
                break;
            }
        }
    }

    /// Waits until the connection is closed, by either side, and says why.
    pub async fn closed(&self) -> TransportError {
        self.inner.closed().await.into()
    }

    /// Bytes on the wire and path figures (for the sync summary).
    pub fn stats(&self) -> LinkStats {
        let s = self.inner.stats();
        LinkStats {
            udp_bytes_sent: s.udp_tx.bytes,
            udp_bytes_received: s.udp_rx.bytes,
            lost_packets: s.path.lost_packets,
            rtt: s.path.rtt,
            mtu: s.path.current_mtu,
        }
    }

    /// The underlying quinn connection, for what this wrapper does not cover.
    pub fn quinn(&self) -> &quinn::Connection {
        &self.inner
    }
}

/// What the link carried, as UDP datagrams (headers, encryption and
/// retransmissions included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStats {
    pub udp_bytes_sent: u64,
    pub udp_bytes_received: u64,
    pub lost_packets: u64,
    pub rtt: std::time::Duration,
    pub mtu: u16,
}
