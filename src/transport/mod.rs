//! The link between the two nodes: identity keys, TLS with pinned
//! fingerprints, QUIC endpoints and connections, framed streams and
//! per-chunk compression. Everything the mirror conversation needs to talk
//! to the peer, and nothing about what it says: frames are (type byte,
//! payload bytes) here and decoded by the wire crate.
//!
//! Depends on `config` (node addresses, key path, pinned fingerprint) and
//! on the wire crate only for its size bounds; nothing in scan, index or
//! the failover side depends on it.
//!
//! ```text
//! Endpoint::server(local, peer) ── accept() ──┐
//! Endpoint::client(local, peer) ── connect() ─┴─ Connection
//!     open_control()/accept_control() → (FrameSender, FrameReceiver)
//!     open_uni()/accept_uni()         → FrameSender / FrameReceiver
//! compress_chunk / decompress_chunk   (bytes in, bytes out)
//! ```

mod admit;
pub mod compress;
mod connection;
mod endpoint;
mod error;
pub mod frame;
pub mod identity;
pub mod tls;
pub mod tuning;

pub use compress::{CompressError, Encoding, compress_chunk, decompress_chunk};
pub use connection::{CONTROL_PRIORITY, Connection, LinkStats, PeerIdentity};
pub use endpoint::{Endpoint, PeerSpec};
pub use error::TransportError;
pub use frame::{FrameReader, FrameReceiver, FrameSender, MAX_FRAME, write_frame};
pub use identity::{Fingerprint, Identity, IdentityError};
pub use tls::{ALPN, PinError};
pub use tuning::Tuning;
