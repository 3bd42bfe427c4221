//! Error codes: the numbers both ends use in an `Error` message, in a
//! per-file `Failure`, and as the QUIC application close code. Each code says
//! whether a later attempt, unchanged, can succeed, so the sync loop knows to
//! retry on its own or to wait for an operator. Depends on nothing else.

use std::fmt;

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $num:literal, retry: $retry:literal;)*) => {
        /// Why a conversation, or one file of it, failed.
        ///
        /// Numbers are part of the protocol: never reuse or renumber one.
        /// A number this build doesn't know decodes as [`ErrorCode::Other`],
        /// so a newer peer's new codes are still reported.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $name,)*
            /// A code this build does not know (from a newer peer).
            Other(u32),
        }

        impl ErrorCode {
            /// Every named code, in number order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name),*];

            /// The number on the wire.
            pub fn number(self) -> u32 {
                match self {
                    $(ErrorCode::$name => $num,)*
                    ErrorCode::Other(n) => n,
                }
            }

            /// The code for a number; unknown numbers give [`ErrorCode::Other`].
            pub fn from_number(n: u32) -> ErrorCode {
                match n {
                    $($num => ErrorCode::$name,)*
                    n => ErrorCode::Other(n),
                }
            }

            /// Whether retrying later, unchanged, can succeed. `false` means
            /// an operator (or a fix) must act first; unknown codes are `false`.
            pub fn retryable(self) -> bool {
                match self {
                    $(ErrorCode::$name => $retry,)*
                    ErrorCode::Other(_) => false,
                }
            }

            /// A short name for logs and `--json` output.
            pub fn name(self) -> &'static str {
                match self {
                    $(ErrorCode::$name => stringify!($name),)*
                    ErrorCode::Other(_) => "Other",
                }
            }
        }
    };
}

codes! {
    /// The peer does not speak the protocol version of the `Hello`.
    VersionMismatch = 1, retry: false;
    /// The `Hello` names another receiver, or the sender is not this node's peer.
    WrongNode = 2, retry: false;
    /// The receiver has no such set, or the set is not in the named group.
    UnknownSet = 3, retry: false;
    /// The sender is not the group's holder.
    NotHolder = 4, retry: false;
    /// The sender presented an older epoch than the receiver knows.
    StaleEpoch = 5, retry: false;
    /// The offer would delete too much of the replica (or the sender's roots
    /// are missing or empty); needs `--force`.
    MassDelete = 6, retry: false;
    /// No space left on the receiver's file system.
    DiskFull = 7, retry: true;
    /// The receiver may not write (or the sender may not read) a path.
    PermissionDenied = 8, retry: false;
    /// A frame or message could not be decoded.
    BadFrame = 9, retry: false;
    /// A frame or a size in a message exceeds its limit.
    TooLarge = 10, retry: false;
    /// A well-formed message arrived where the conversation does not allow it.
    Protocol = 11, retry: false;
    /// A path outside the set's roots, or through a symlink.
    BadPath = 12, retry: false;
    /// Data did not match its BLAKE3 hash (changed while read, or corrupted).
    HashMismatch = 13, retry: true;
    /// An I/O error other than the ones above.
    Io = 14, retry: true;
    /// The sender can no longer provide a chunk (its file changed meanwhile).
    ChunkUnavailable = 15, retry: true;
    /// Another conversation for the same set is in progress.
    Busy = 16, retry: true;
    /// The peer is shutting down.
    Shutdown = 17, retry: true;
    /// The peer does not implement what was asked (e.g. a mode).
    Unsupported = 18, retry: false;
    /// An unexpected failure on the peer; its log says more.
    Internal = 19, retry: true;
    /// The receiver holds changes the sender does not have (it wrote while
    /// it held the group, or its copy changed); it refuses to overwrite them
    /// until an operator runs `hamirror resync --from PEER` on it.
    Diverged = 20, retry: false;
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::Other(n) => write!(f, "error code {n}"),
            c => f.write_str(c.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_frozen_and_round_trip() {
        let numbers: Vec<u32> = ErrorCode::ALL.iter().map(|c| c.number()).collect();
        assert_eq!(numbers, (1..=20).collect::<Vec<u32>>());
        for &c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_number(c.number()), c);
        }
        assert_eq!(ErrorCode::MassDelete.number(), 6);
        assert_eq!(ErrorCode::from_number(0), ErrorCode::Other(0));
        assert_eq!(ErrorCode::from_number(500), ErrorCode::Other(500));
        assert!(!ErrorCode::Other(500).retryable());
        assert!(ErrorCode::DiskFull.retryable() && !ErrorCode::StaleEpoch.retryable());
        assert_eq!(ErrorCode::Other(500).to_string(), "error code 500");
        assert_eq!(ErrorCode::BadPath.to_string(), "BadPath");
    }
}
