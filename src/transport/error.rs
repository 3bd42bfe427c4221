//! [`TransportError`]: everything that can go wrong between this node and
//! its peer below the conversation — identity, TLS, reaching the peer,
//! streams and frames — each saying whether a retry can help. Also the
//! mapping from quinn's error types, so no quinn error escapes the module
//! untyped. Depends only on the error types of its siblings.

use std::io;
use std::net::SocketAddr;

use super::identity::{Fingerprint, IdentityError};
use super::tls::PinError;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A TLS or QUIC configuration that cannot be built: a bug or a key
    /// rustls cannot use.
    #[error("cannot set up TLS: {0}")]
    Config(String),
    #[error("cannot bind UDP {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    /// This node refused the peer's key. The message names both fingerprints.
    #[error(transparent)]
    PeerKeyRejected(PinError),
    /// The peer refused this node's key (it pins another fingerprint, or
    /// none); `reason` is what the peer said, when it said anything.
    #[error("peer {peer} refused this node's key {ours}; {peer} says: {reason}")]
    RefusedByPeer {
        peer: String,
        ours: Fingerprint,
        reason: String,
    },
    /// TLS failed for another reason (protocol version, ALPN, signature).
    #[error("TLS handshake with {peer} failed: {reason}")]
    Handshake { peer: String, reason: String },
    /// No address of the peer answered.
    #[error("cannot reach {peer}: {}", describe_attempts(attempts))]
    Unreachable {
        peer: String,
        attempts: Vec<(SocketAddr, String)>,
    },
    /// The connection died (timeout, reset, peer restarted).
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The peer closed the connection on purpose, with an application code.
    #[error("peer closed the connection (code {code}): {reason}")]
    PeerClosed { code: u64, reason: String },
    /// This side closed the connection or endpoint.
    #[error("connection closed locally")]
    LocallyClosed,
    #[error("stream reset by the peer (code {0})")]
    StreamReset(u64),
    #[error("the peer stopped reading this stream (code {0})")]
    StreamStopped(u64),
    #[error("frame length {len} exceeds the limit of {max} bytes")]
    FrameTooLarge { len: u64, max: u32 },
    #[error("frame length 0: every frame holds at least its type byte")]
    EmptyFrame,
    #[error("stream ended inside a frame")]
    Truncated,
    #[error("I/O on the link: {0}")]
    Io(io::Error),
}

impl TransportError {
    /// Whether trying again later can succeed without anyone changing the
    /// configuration, a key or the peer's software.
    pub fn retry_may_help(&self) -> bool {
        use TransportError::*;
        match self {
            Identity(_) | Config(_) | PeerKeyRejected(_) | RefusedByPeer { .. } | Handshake { .. } => false,
            FrameTooLarge { .. } | EmptyFrame | LocallyClosed => false,
            // An address in use or not configured yet can come free.
            Bind { .. } => true,
            Unreachable { .. } | ConnectionLost(_) | PeerClosed { .. } | StreamReset(_) | StreamStopped(_) => true,
            Truncated | Io(_) => true,
        }
    }
}

fn describe_attempts(attempts: &[(SocketAddr, String)]) -> String {
    if attempts.is_empty() {
        return "no address configured".into();
    }
    let each: Vec<String> = attempts.iter().map(|(a, e)| format!("{a}: {e}")).collect();
    each.join("; ")
}

/// QUIC transport error codes 0x100..=0x1ff carry a TLS alert (RFC 9001 §4.8).
pub(crate) fn is_crypto_code(code: u64) -> bool {
    (0x100..=0x1ff).contains(&code)
}

impl From<quinn::ConnectionError> for TransportError {
    fn from(e: quinn::ConnectionError) -> Self {
        use quinn::ConnectionError as C;
        match e {
            C::ApplicationClosed(c) => TransportError::PeerClosed {
                code: c.error_code.into_inner(),
                reason: String::from_utf8_lossy(&c.reason).into_owned(),
            },
            C::LocallyClosed => TransportError::LocallyClosed,
            C::ConnectionClosed(c) if is_crypto_code(u64::from(c.error_code)) => TransportError::Handshake {
                peer: "peer".into(),
                reason: format!("{} {}", c.error_code, String::from_utf8_lossy(&c.reason)),
            },
            C::TransportError(t) if is_crypto_code(u64::from(t.code)) => TransportError::Handshake {
                peer: "peer".into(),
                reason: t.to_string(),
            },
            other => TransportError::ConnectionLost(other.to_string()),
        }
    }
}

impl From<quinn::ReadError> for TransportError {
    fn from(e: quinn::ReadError) -> Self {
        use quinn::ReadError as R;
        match e {
            R::Reset(code) => TransportError::StreamReset(code.into_inner()),
            R::ConnectionLost(c) => c.into(),
            R::ClosedStream => TransportError::LocallyClosed,
            other => TransportError::ConnectionLost(other.to_string()),
        }
    }
}

impl From<quinn::WriteError> for TransportError {
    fn from(e: quinn::WriteError) -> Self {
        use quinn::WriteError as W;
        match e {
            W::Stopped(code) => TransportError::StreamStopped(code.into_inner()),
            W::ConnectionLost(c) => c.into(),
            W::ClosedStream => TransportError::LocallyClosed,
            other => TransportError::ConnectionLost(other.to_string()),
        }
    }
}

impl From<io::Error> for TransportError {
    /// quinn's streams report through `io::Error` when driven by tokio's
    /// traits; recover the typed error they wrap.
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            return TransportError::Truncated;
        }
        if e.get_ref().is_some_and(|i| i.is::<quinn::ReadError>()) {
            let inner = e.into_inner().and_then(|i| i.downcast::<quinn::ReadError>().ok());
            return inner.map_or(TransportError::ConnectionLost("read failed".into()), |r| (*r).into());
        }
        if e.get_ref().is_some_and(|i| i.is::<quinn::WriteError>()) {
            let inner = e.into_inner().and_then(|i| i.downcast::<quinn::WriteError>().ok());
            return inner.map_or(TransportError::ConnectionLost("write failed".into()), |w| (*w).into());
        }
        TransportError::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_final_and_losses_are_retryable() {
        let pin = PinError::NotConfigured {
            peer: "serv2".into(),
            conf: "serv2.conf".into(),
            presented: Fingerprint([0; 32]),
        };
        assert!(!TransportError::PeerKeyRejected(pin).retry_may_help());
        assert!(!TransportError::FrameTooLarge { len: 1 << 30, max: 1 }.retry_may_help());
        assert!(TransportError::ConnectionLost("timeout".into()).retry_may_help());
        assert!(
            TransportError::Unreachable {
                peer: "serv2".into(),
                attempts: vec![]
            }
            .retry_may_help()
        );
    }

    #[test]
    fn wrapped_quinn_errors_are_recovered_from_io_errors() {
        let io: io::Error = quinn::ReadError::Reset(quinn::VarInt::from_u32(7)).into();
        assert!(matches!(TransportError::from(io), TransportError::StreamReset(7)));
        let io: io::Error = quinn::WriteError::Stopped(quinn::VarInt::from_u32(3)).into();
        assert!(matches!(TransportError::from(io), TransportError::StreamStopped(3)));
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert!(matches!(TransportError::from(eof), TransportError::Truncated));
    }
}
