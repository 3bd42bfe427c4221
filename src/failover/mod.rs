//! The failover I/O shell around the pure arbiter: heartbeat sockets on a
//! dedicated real-time thread ([`endpoint`]), the reachlist prober
//! ([`probe`], with its pure [`hysteresis`]), and the helpers both use
//! ([`rt`]: real-time priority and locked memory, failing soft). It turns
//! datagrams and probe answers into arbiter inputs; it decides nothing.
//! Must not depend on tokio: these threads must keep their timing while the
//! async runtime is saturated by a mirror transfer.

pub mod hysteresis;
