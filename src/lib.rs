//! hamirror: a two-node Linux high-availability cluster in one binary.
//!
//! The library holds two pipelines that meet only in the daemon:
//! * mirror: [`scan`] → [`index`] → plan → transfer → apply;
//! * failover: probe → arbiter → actions.
//!
//! [`config`] reads the classic `cluster.d` layout for both. The binary
//! (`src/main.rs`, `src/cli/`) is the only place that uses `anyhow`.

pub mod apply;
pub mod arbiter;
pub mod chunk;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod delta;
pub mod failover;
pub mod fdlimit;
#[doc(hidden)]
pub mod fuzzing;
pub mod hooks;
pub mod index;
pub mod mirrord;
pub mod noise;
pub mod plan;
pub mod scan;
pub mod sdnotify;
pub mod sync;
pub mod transport;
pub mod watch;
pub mod xattr;
