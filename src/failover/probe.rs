//! The reachlist prober: every interval, one ICMP echo to each `HOST` of
//! the reachlist (or a TCP connect to each `HOST tcp:PORT`), answers
//! collected until the next round, results debounced by
//! [`ReachTracker`] and reported to the driver as [`Input::Reach`]. Runs on
//! its own OS thread (real-time priority when permitted), no tokio.
//!
//! ICMP uses an unprivileged datagram socket (`ping_group_range`) when the
//! kernel allows it and a raw socket otherwise (root / `CAP_NET_RAW`). If
//! neither can be opened the prober refuses to start: a prober that cannot
//! send would report every host unreachable and make this node think it is
//! isolated. A TCP connect counts as an answer when it is accepted or
//! refused (a RST proves the host is on the network); only silence fails.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::hysteresis::ReachTracker;
use super::rt::{self, monotonic_ms};
use super::{FailoverError, Input};
use crate::config::{ReachHost, Timers};

/// Payload that tags our echo requests.
const PAYLOAD: &[u8; 8] = b"hamirror";
/// Unresolved host names are looked up again every this many rounds.
const RESOLVE_EVERY: u32 = 100;

/// The running prober. Dropping it stops the thread.
#[derive(Debug)]
pub struct Prober {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Icmp {
    sock: UdpSocket,
    raw: bool,
    v6: bool,
    ident: u16,
}

impl Icmp {
    /// A datagram ("ping") socket if allowed, else a raw one.
    fn open(v6: bool) -> Result<Icmp, FailoverError> {
        let (domain, proto) = if v6 {
            (Domain::IPV6, Protocol::ICMPV6)
        } else {
            (Domain::IPV4, Protocol::ICMPV4)
        };
        let (sock, raw) = match Socket::new(domain, Type::DGRAM, Some(proto)) {
            Ok(s) => (s, false),
            Err(dgram) => match Socket::new(domain, Type::RAW, Some(proto)) {
                Ok(s) => (s, true),
                Err(raw) => {
                    return Err(FailoverError::Icmp {
                        v6,
                        dgram: dgram.to_string(),
                        raw: raw.to_string(),
                    });
                }
            },
        };
        sock.set_nonblocking(true).map_err(FailoverError::Wake)?;
        // A datagram or raw socket does sendto/recvfrom like UDP; the std
        // type gives safe calls for both.
        let ident = (std::process::id() as u16) ^ 0x4d48;
        Ok(Icmp {
            sock: UdpSocket::from(std::os::fd::OwnedFd::from(sock)),
            raw,
            v6,
            ident,
        })
    }

    fn send(&self, to: IpAddr, seq: u16) {
        let ty = if self.v6 { 128 } else { 8 };
        let mut pkt = vec![ty, 0, 0, 0];
        pkt.extend_from_slice(&self.ident.to_be_bytes());
        pkt.extend_from_slice(&seq.to_be_bytes());
        pkt.extend_from_slice(PAYLOAD);
        if !self.v6 {
            // ICMPv6 checksums are filled in by the kernel (pseudo-header).
            let c = checksum(&pkt);
            pkt[2..4].copy_from_slice(&c.to_be_bytes());
        }
        let _ = self.sock.send_to(&pkt, SocketAddr::new(to, 0));
    }

    /// Reads every pending reply; yields (source, sequence) of our echoes.
    fn replies(&self, out: &mut Vec<(IpAddr, u16)>) {
        let mut buf = [0u8; 1500];
        loop {
            let (n, from) = match self.sock.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            let mut p = &buf[..n];
            if self.raw && !self.v6 {
                // Raw IPv4 sockets deliver the IP header too.
                let ihl = usize::from(p.first().map_or(0, |b| b & 0x0f)) * 4;
                if p.len() < ihl {
                    continue;
                }
                p = &p[ihl..];
            }
            if p.len() < 8 {
                continue;
            }
            let reply = if self.v6 { 129 } else { 0 };
            let ident = u16::from_be_bytes([p[4], p[5]]);
            // Datagram sockets get only their own replies (the kernel
            // rewrites the identifier); raw ones see every echo reply.
            if p[0] != reply || (self.raw && ident != self.ident) || !p[8..].starts_with(PAYLOAD) {
                continue;
            }
            out.push((from.ip(), u16::from_be_bytes([p[6], p[7]])));
        }
    }
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[derive(Debug)]
struct Target {
    host: ReachHost,
    addr: Option<IpAddr>,
}

fn resolve(host: &str) -> Option<IpAddr> {
    if let Ok(ip) = host.parse() {
        return Some(ip);
    }
    (host, 0).to_socket_addrs().ok()?.next().map(|a| a.ip())
}

impl Prober {
    /// Opens the ICMP sockets the reachlist needs (errors here) and starts
    /// probing every `timers.probe_interval()`.
    pub fn start(
        hosts: Vec<ReachHost>,
        timers: Timers,
        realtime: bool,
        tx: Sender<Input>,
    ) -> Result<Prober, FailoverError> {
        let mut targets: Vec<Target> = hosts
            .into_iter()
            .map(|h| Target {
                addr: resolve(&h.host),
                host: h,
            })
            .collect();
        let needs = |v6: bool| {
            targets
                .iter()
                .any(|t| t.host.tcp_port.is_none() && t.addr.is_none_or(|a| a.is_ipv6() == v6))
        };
        let icmp4 = if needs(false) { Some(Icmp::open(false)?) } else { None };
        let icmp6 = match needs(true) {
            // An unresolved name may turn out IPv6; do not fail for it.
            true if targets.iter().any(|t| t.addr.is_some_and(|a| a.is_ipv6())) => Some(Icmp::open(true)?),
            true => Icmp::open(true).ok(),
            false => None,
        };
        let kinds: Vec<&str> = [&icmp4, &icmp6]
            .iter()
            .filter_map(|s| s.as_ref())
            .map(|s| if s.raw { "raw" } else { "datagram" })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("prober".into())
                .spawn(move || {
                    if realtime && let Err(e) = rt::set_realtime(rt::PROBE_PRIORITY) {
                        let _ = tx.send(Input::Note(format!(
                            "prober stays at normal priority (SCHED_FIFO not permitted: {e})"
                        )));
                    }
                    let _ = tx.send(Input::Note(format!(
                        "probing {} reachlist hosts every {} ms (ICMP sockets: {})",
                        targets.len(),
                        timers.probe_interval().as_millis(),
                        if kinds.is_empty() {
                            "none".into()
                        } else {
                            kinds.join(", ")
                        }
                    )));
                    run(&mut targets, icmp4, icmp6, timers, &stop, &tx);
                })
                .map_err(FailoverError::Thread)?
        };
        Ok(Prober {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    targets: &mut [Target],
    icmp4: Option<Icmp>,
    icmp6: Option<Icmp>,
    timers: Timers,
    stop: &AtomicBool,
    tx: &Sender<Input>,
) {
    let interval = timers.probe_interval().as_millis().max(1) as u64;
    // Up to `initdead` for the node's own network to come up after a boot.
    let grace = (timers.initdead.as_millis() as u64 / interval).min(u32::MAX as u64) as u32;
    let mut tracker =
        ReachTracker::new(targets.len(), Timers::PROBE_RISE, Timers::PROBE_FALL).with_startup_grace(grace);
    let mut round: u32 = 0;
    let mut next = monotonic_ms();
    while !stop.load(Ordering::Relaxed) {
        round = round.wrapping_add(1);
        if round.is_multiple_of(RESOLVE_EVERY) {
            for t in targets.iter_mut().filter(|t| t.addr.is_none()) {
                t.addr = resolve(&t.host.host);
            }
        }
        let seq = round as u16;
        let deadline = next + interval;
        let ok = probe_round(targets, icmp4.as_ref(), icmp6.as_ref(), seq, deadline);
        if let Some(reach) = tracker.round(&ok) {
            let hosts = targets
                .iter()
                .zip(tracker.states())
                .map(|(t, s)| (t.host.host.clone(), s))
                .collect();
            if tx
                .send(Input::Reach {
                    at: rt::now(),
                    reach,
                    hosts,
                })
                .is_err()
            {
                return;
            }
        }
        let now = monotonic_ms();
        next = if deadline + interval < now { now } else { deadline };
    }
}

/// Sends one probe to every target and waits until `deadline` for answers.
fn probe_round(targets: &[Target], icmp4: Option<&Icmp>, icmp6: Option<&Icmp>, seq: u16, deadline: u64) -> Vec<bool> {
    let mut ok = vec![false; targets.len()];
    let mut tcp: Vec<(usize, Socket)> = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let Some(addr) = t.addr else { continue };
        match t.host.tcp_port {
            None => {
                if let Some(s) = if addr.is_ipv6() { icmp6 } else { icmp4 } {
                    s.send(addr, seq);
                }
            }
            Some(port) => {
                let sa = SocketAddr::new(addr, port);
                let Ok(s) = Socket::new(Domain::for_address(sa), Type::STREAM, Some(Protocol::TCP)) else {
                    continue;
                };
                if s.set_nonblocking(true).is_err() {
                    continue;
                }
                match s.connect(&SockAddr::from(sa)) {
                    Ok(()) => ok[i] = true,
                    Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => tcp.push((i, s)),
                    Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => ok[i] = true,
                    Err(_) => {}
                }
            }
        }
    }
    let mut replies = Vec::new();
    loop {
        let now = monotonic_ms();
        if now >= deadline {
            break;
        }
        let icmps: Vec<&Icmp> = [icmp4, icmp6].into_iter().flatten().collect();
        let mut fds: Vec<libc::pollfd> = icmps
            .iter()
            .map(|s| libc::pollfd {
                fd: s.sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .chain(tcp.iter().map(|(_, s)| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            }))
            .collect();
        let timeout = (deadline - now).min(i32::MAX as u64) as i32;
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if rc < 0 {
            continue;
        }
        for (k, s) in icmps.iter().enumerate() {
            if fds[k].revents != 0 {
                s.replies(&mut replies);
            }
        }
        let mut done = Vec::new();
        for (k, (i, s)) in tcp.iter().enumerate() {
            if fds[icmps.len() + k].revents != 0 {
                // Connected, or refused by the host: either way it answered.
                match s.take_error() {
                    Ok(None) => ok[*i] = true,
                    Ok(Some(e)) if e.raw_os_error() == Some(libc::ECONNREFUSED) => ok[*i] = true,
                    _ => {}
                }
                done.push(k);
            }
        }
        for k in done.into_iter().rev() {
            tcp.remove(k);
        }
    }
    for (from, s) in replies {
        if s != seq {
            continue;
        }
        for (i, t) in targets.iter().enumerate() {
            if t.host.tcp_port.is_none() && t.addr == Some(from) {
                ok[i] = true;
            }
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internet_checksum_matches_a_known_echo_request() {
        // type 8, code 0, id 0x1234, seq 1, no payload: checksum 0xe5ca.
        let pkt = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1];
        assert_eq!(checksum(&pkt), 0xe5ca);
        let mut with = pkt;
        with[2..4].copy_from_slice(&0xe5cau16.to_be_bytes());
        assert_eq!(checksum(&with), 0);
    }

    #[test]
    fn tcp_probe_counts_accepted_and_refused_as_reachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap().port();
        // A port nobody listens on: bind, note, drop.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let targets: Vec<Target> = [open, closed]
            .iter()
            .map(|p| Target {
                host: ReachHost {
                    host: "127.0.0.1".into(),
                    tcp_port: Some(*p),
                    line: 1,
                },
                addr: Some("127.0.0.1".parse().unwrap()),
            })
            .collect();
        let ok = probe_round(&targets, None, None, 1, monotonic_ms() + 200);
        assert_eq!(ok, vec![true, true]);
    }

    #[test]
    fn icmp_echo_to_loopback_answers_when_a_socket_can_be_opened() {
        let Ok(icmp) = Icmp::open(false) else {
            // Neither ping sockets nor raw sockets here: nothing to test.
            return;
        };
        let targets = vec![Target {
            host: ReachHost {
                host: "127.0.0.1".into(),
                tcp_port: None,
                line: 1,
            },
            addr: Some("127.0.0.1".parse().unwrap()),
        }];
        let ok = probe_round(&targets, Some(&icmp), None, 7, monotonic_ms() + 300);
        assert_eq!(ok, vec![true], "raw socket: {}", icmp.raw);
    }
}
