//! Link tuning: QUIC flow-control windows, stream limits, timers and the
//! UDP socket buffers that let one connection fill a fast crossover link.
//! Owns the numbers and the socket set-up; knows nothing of TLS or of what
//! the streams carry.
//!
//! Why these values (measured in `docs/BENCHMARKS.md`, "Transport"):
//! * quinn's default stream window (~1.25 MB) caps one stream at about
//!   window/RTT; bulk chunks want several MB in flight per stream.
//! * quinn's default connection window is unlimited, so the receiver's
//!   memory would be bounded only by streams x stream window; a finite
//!   connection window keeps a 1024-stream transfer within a few tens of MB.
//!   4 MiB (issue 17: 64 MiB per process): quinn keeps each received
//!   datagram batch whole until every stream frame in it was read, so the
//!   receiver held ~25 MB for a 16 MiB window, 13 MB for 8 MiB (heaptrack,
//!   the largest consumer at the receiver's peak). 4 MiB is still 20 ms
//!   of data at 200 MB/s, far more than a crossover link's round trip.
//! * The kernel's default UDP buffers (~200 KB) drop bursts at multi-Gbit/s
//!   rates; quinn then sees loss and cuts its congestion window.

use std::net::SocketAddr;
use std::time::Duration;

/// The knobs of a link. [`Tuning::default`] is what the daemon uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuning {
    /// Bytes the peer may send on one stream ahead of our reading.
    pub stream_window: u32,
    /// Bytes the peer may send on all streams together ahead of our reading:
    /// the bound on buffered receive memory per connection.
    pub connection_window: u32,
    /// Bytes we keep unacknowledged in flight across all streams.
    pub send_window: u64,
    /// Uni streams the peer may have open at once (parallel chunk streams).
    pub max_uni_streams: u32,
    /// Bidi streams the peer may have open at once (control streams).
    pub max_bidi_streams: u32,
    /// A PING this often keeps an idle connection (and NAT/conntrack state) alive.
    pub keep_alive: Duration,
    /// Silence after which a connection is considered dead.
    pub idle_timeout: Duration,
    /// How long one address gets to complete a handshake before the next
    /// address (the LAN) is tried.
    pub connect_timeout: Duration,
    /// SO_RCVBUF and SO_SNDBUF asked for each UDP socket. As large as the
    /// connection window: the peer may burst that much before it must wait
    /// for us, and a smaller buffer drops the tail of the burst (measured on
    /// loopback: 8 MiB lost thousands of packets per 2 GiB with four streams;
    /// 16 and 32 MiB lost none).
    pub socket_buffer: usize,
    /// Largest UDP payload path-MTU discovery may probe for (and that we
    /// advertise). Above ~1500 it pays on links with jumbo frames (a
    /// crossover cable at MTU 9000) and on loopback; discovery settles
    /// lower on a 1500-byte link. Capped at 6500 because quinn 0.11 sends
    /// GSO batches of up to 10 datagrams and the kernel refuses a batch
    /// over 64 KiB: larger datagrams get dropped, quinn takes that for a
    /// black hole and falls back to 1200 bytes (measured: 8952 ends at 1200
    /// with losses, 6500 holds with none).
    pub mtu_upper_bound: u16,
    /// Ask the peer to acknowledge only every this many packets (QUIC ACK
    /// frequency extension, used when both ends support it); 0 leaves
    /// quinn's default of an ACK for every other packet.
    pub ack_every: u32,
    /// The longest the peer may hold back an acknowledgement of fewer
    /// packets than `ack_every` (QUIC ACK frequency extension; quinn's own
    /// default is 25 ms). A conversation ends by waiting until the peer has
    /// its last message (`Control::close`): with the default, every
    /// `hamirror sync` waited ~25 ms for one delayed ACK — a fifth of a
    /// no-change pass. Bulk transfers are acknowledged by packet count and
    /// do not notice it.
    pub ack_delay: Duration,
    /// Round-robin between streams of equal priority; off, a stream is
    /// sent to the end before the next (fewer frames per packet).
    pub send_fairness: bool,
    /// Largest UDP payload this endpoint accepts (and advertises), when
    /// lower than `mtu_upper_bound`: quinn keeps a receive buffer of 32
    /// batches of 64 such datagrams (13 MB at 6500 bytes), which a side
    /// that only sends has no use for. Its own datagrams are still up to
    /// `mtu_upper_bound`: their size follows what the peer accepts.
    pub receive_payload: Option<u16>,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            stream_window: 8 << 20,
            connection_window: 4 << 20,
            send_window: 16 << 20,
            max_uni_streams: 1024,
            max_bidi_streams: 16,
            keep_alive: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            socket_buffer: 32 << 20,
            mtu_upper_bound: 6500,
            ack_every: 0,
            ack_delay: Duration::from_millis(1),
            send_fairness: true,
            receive_payload: None,
        }
    }
}

impl Tuning {
    /// For an endpoint that sends bulk data and receives only control
    /// messages (`hamirror sync`, the daemon's pushes): a receive buffer
    /// for 1472-byte datagrams (3 MB, issue 17's 64 MiB bound).
    pub fn sender() -> Tuning {
        Tuning {
            receive_payload: Some(1472),
            ..Tuning::default()
        }
    }

    /// The quinn endpoint settings: the largest UDP payload we accept is
    /// advertised to the peer, and caps its path-MTU discovery (quinn's
    /// default, 1472, would keep jumbo frames unused).
    pub fn endpoint_config(&self) -> quinn::EndpointConfig {
        let mut c = quinn::EndpointConfig::default();
        // 1200 ≤ bound ≤ 65527 is all that can fail; keep the default then.
        let bound = self
            .receive_payload
            .map_or(self.mtu_upper_bound, |r| r.min(self.mtu_upper_bound));
        let _ = c.max_udp_payload_size(bound);
        c
    }

    /// The quinn transport parameters for these values.
    pub fn transport_config(&self) -> quinn::TransportConfig {
        use quinn::VarInt;
        let mut c = quinn::TransportConfig::default();
        c.stream_receive_window(VarInt::from_u32(self.stream_window))
            .receive_window(VarInt::from_u32(self.connection_window))
            .send_window(self.send_window)
            .max_concurrent_uni_streams(VarInt::from_u32(self.max_uni_streams))
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_bidi_streams))
            .keep_alive_interval(Some(self.keep_alive))
            .max_idle_timeout(Some(
                VarInt::from_u64(self.idle_timeout.as_millis() as u64)
                    .unwrap_or(VarInt::MAX)
                    .into(),
            ));
        let mut ack = quinn::AckFrequencyConfig::default();
        ack.max_ack_delay(Some(self.ack_delay));
        if self.ack_every > 0 {
            ack.ack_eliciting_threshold(VarInt::from_u32(self.ack_every));
        }
        c.ack_frequency_config(Some(ack));
        c.send_fairness(self.send_fairness);
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(self.mtu_upper_bound);
        c.mtu_discovery_config(Some(mtu));
        c
    }
}

/// A UDP socket bound to `addr` with enlarged buffers, ready for quinn.
pub fn udp_socket(addr: SocketAddr, buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    enlarge_buffers(&s, buffer);
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Asks for `want` bytes of receive and send buffer. SO_RCVBUFFORCE and
/// SO_SNDBUFFORCE ignore the `net.core.rmem_max`/`wmem_max` caps but need
/// CAP_NET_ADMIN (the daemon runs as root); without it the plain options
/// give what the caps allow. A smaller buffer only costs speed, so this
/// never fails.
fn enlarge_buffers(s: &socket2::Socket, want: usize) {
    use std::os::fd::AsRawFd;
    let val = libc::c_int::try_from(want).unwrap_or(libc::c_int::MAX);
    let force = |opt: libc::c_int| {
        // SAFETY: `s` is an open socket for the whole call, and the option
        // value points at a live c_int of the length passed.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&val as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
        }
    };
    if !force(libc::SO_RCVBUFFORCE) {
        let _ = s.set_recv_buffer_size(want);
    }
    if !force(libc::SO_SNDBUFFORCE) {
        let _ = s.set_send_buffer_size(want);
    }
    // The kernel reports twice the size asked for (it counts its overhead).
    let got = s.recv_buffer_size().unwrap_or(0) / 2;
    if got < want {
        tracing::debug!(
            "UDP receive buffer is {got} bytes, {want} asked; raise net.core.rmem_max or run as root for full speed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_bind_with_at_least_the_default_buffers() {
        let s = udp_socket("127.0.0.1:0".parse().unwrap(), 4 << 20).unwrap();
        let s = socket2::Socket::from(s);
        // Whatever the caps, the buffer is never below the kernel default
        // (212992 on Linux), and as root it is what we asked.
        assert!(s.recv_buffer_size().unwrap() >= 200_000);
        if unsafe { libc::geteuid() } == 0 {
            assert!(s.recv_buffer_size().unwrap() >= 4 << 20);
            assert!(s.send_buffer_size().unwrap() >= 4 << 20);
        }
    }
}
