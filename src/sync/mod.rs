//! The sync conversation of `wire/PROTOCOL.md` on top of the transport:
//! a sender offers the entries changed since the generation its peer last
//! acknowledged, the receiver plans (`plan`), asks for the chunks it lacks,
//! builds files (`apply`) and acknowledges.
//!
//! * [`push`]: the opener's side of a push (`hamirror sync`): scan, hello,
//!   then the sender half.
//! * [`Server`]: `hamirror serve`: accepts conversations; for a push it is
//!   the receiver half; for a verify it streams its re-read manifest.
//! * [`verify`]: the opener's side of a verify (`hamirror verify`).
//!
//! The two halves ([`send`], [`recv`]) do not care who opened the
//! conversation, so a pull (`resync --from`) is the same halves with the
//! roles swapped. Sync I/O on files runs on blocking threads; the async part
//! only moves frames. Depends on config, scan, index, plan, apply, transport
//! and wire — never on the failover side.

mod chunks;
mod conflict;
mod control;
mod excluded;
pub mod limits;
mod pull;
mod push;
mod recv;
mod send;
mod serve;
mod shipper;
mod verify;

use hamirror_wire::{ErrorCode, WireError};

use crate::apply::ApplyError;
use crate::index::IndexError;
use crate::scan::ScanError;
use crate::transport::TransportError;

pub use chunks::Router;
pub use conflict::{CONFLICT_MARK, conflict_time_now, is_conflict_copy};
pub use pull::{PullOptions, PullReport, kind_letter, pull};
pub use push::{PushOptions, PushReport, push};
pub use recv::ReceiveReport;
pub use send::SendReport;
pub use serve::{CaughtUpHook, DivergedHook, Holders, OwnerHolds, Server};
pub use shipper::QuicShipper;
pub use verify::{Difference, VerifyReport, verify};

/// Why a conversation failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The peer sent bytes that are not a valid frame or message; the
    /// connection was closed with the reason.
    #[error("bad message from the peer: {0}")]
    Wire(#[from] WireError),
    /// The peer refused or aborted the conversation with an `Error`.
    #[error("{peer} refused: {reason} ({code})")]
    Refused {
        peer: String,
        code: ErrorCode,
        reason: String,
    },
    /// This side refused or aborted; the same code and reason went to the peer.
    #[error("{reason} ({code})")]
    Local { code: ErrorCode, reason: String },
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

impl SyncError {
    pub(crate) fn local(code: ErrorCode, reason: impl Into<String>) -> SyncError {
        SyncError::Local {
            code,
            reason: reason.into(),
        }
    }

    pub(crate) fn protocol(reason: impl Into<String>) -> SyncError {
        SyncError::local(ErrorCode::Protocol, reason)
    }

    /// The wire code describing this error (sent to the peer in an `Error`).
    pub fn code(&self) -> ErrorCode {
        match self {
            SyncError::Transport(_) => ErrorCode::Io,
            SyncError::Wire(e) => e.code(),
            SyncError::Refused { code, .. } | SyncError::Local { code, .. } => *code,
            SyncError::Index(_) | SyncError::Scan(_) => ErrorCode::Internal,
            SyncError::Apply(e) => match e {
                ApplyError::UnsafePath { .. } | ApplyError::Blocked { .. } => ErrorCode::BadPath,
                ApplyError::DiskFull { .. } => ErrorCode::DiskFull,
                ApplyError::Permission { .. } => ErrorCode::PermissionDenied,
                ApplyError::BadChunk { .. } | ApplyError::BadDelta { .. } => ErrorCode::HashMismatch,
                ApplyError::Unexpected { .. } => ErrorCode::Protocol,
                ApplyError::Missing { .. } | ApplyError::Io { .. } => ErrorCode::Io,
            },
        }
    }

    /// Whether running the same sync again later can succeed unchanged.
    pub fn retryable(&self) -> bool {
        match self {
            SyncError::Transport(e) => e.retry_may_help(),
            SyncError::Index(e) => e.retryable(),
            SyncError::Scan(e) => e.retryable(),
            SyncError::Apply(e) => e.retryable(),
            other => other.code().retryable(),
        }
    }
}

/// Progress of a transfer, for a progress bar. Called from worker threads.
pub trait Progress: Send + Sync {
    /// The receiver needs this many bytes of chunk data.
    fn need(&self, _bytes: u64) {}
    /// This many more raw bytes were sent.
    fn sent(&self, _bytes: u64) {}
}

/// Runs blocking file work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
