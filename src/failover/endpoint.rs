//! The heartbeat endpoint: one UDP socket per link, bound to this node's
//! address on that link, and one dedicated OS thread (real-time priority
//! when permitted) that sends the node's state to the peer on every link
//! every keepalive — and at once when the state changes — and receives,
//! authenticates (MAC, sender, link, replay window) and timestamps the
//! peer's heartbeats. What it accepts goes to the driver as
//! [`Input::Heartbeat`]; a datagram from the peer's address that names the
//! peer but fails the MAC goes as [`Input::BadKey`] (the peer is alive but
//! signs with another key). It decides nothing. Under Pacemaker a node
//! may have several peers: each is sent to on every link it shares with
//! this node, and each has its own replay window, incarnation and
//! heartbeat version ([`Input::Heartbeat::peer`] says whose it is). No tokio: a saturated runtime
//! must not delay a heartbeat.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hamirror_wire::heartbeat::{self, Heartbeat, HeartbeatError, HeartbeatKeys, Replay, ReplayWindow};
use socket2::{Domain, Protocol, Socket, Type};

use super::incarnation::PeerRecorder;
use super::rt::{self, monotonic_ms};
use super::{FailoverError, Input};
use crate::arbiter::{LinkId, NodeState};

/// Linux `SO_PRIORITY` of heartbeats: `TC_PRIO_INTERACTIVE`, the first band
/// of the default queueing disciplines, ahead of bulk mirror traffic.
const SOCKET_PRIORITY: u32 = 6;
/// IP TOS / traffic class: CS6, network control.
const TOS_CS6: u32 = 0xc0;
/// Rejected datagrams are reported at most this often per link and kind
/// of rejection (a flood must not flood the log).
const REJECT_REPORT_EVERY: u64 = 1000;
/// The newest sequence number of the peer is persisted at least this often
/// (and its incarnation at once when it changes).
const RECORD_EVERY: u64 = 10_000;
/// Rejection kind of a datagram from the peer that fails the MAC.
const KIND_PEER_KEY: &str = "peer key";
/// A datagram of the current run older than the replay window, arriving
/// among fresh ones (see `Worker::accept`).
pub const KIND_STALE: &str = "stale";
/// "Among fresh ones": within this long of an accepted heartbeat.
const STALE_WITHIN_MS: u64 = 1000;

/// One link: where this node listens and where the peer listens.
#[derive(Debug, Clone)]
pub struct LinkAddr {
    pub id: LinkId,
    pub name: String,
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

/// A peer beyond the first (fan-out under Pacemaker).
#[derive(Debug, Clone)]
pub struct PeerAddrs {
    pub name: String,
    /// The links to it; `local` is this node's address on that link.
    pub links: Vec<LinkAddr>,
    /// Its newest (incarnation, sequence number) a previous run accepted:
    /// nothing at or below it is accepted (see `ReplayWindow`).
    pub floor: Option<(u64, u64)>,
}

/// Everything the endpoint thread needs.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub local: String,
    /// Every other node: one in a two-node cluster, more under Pacemaker
    /// (then every peer's numbers are persisted in its own file,
    /// `peer-incarnation.NODE`).
    pub peers: Vec<PeerAddrs>,
    pub keepalive: Duration,
    pub keys: HeartbeatKeys,
    /// The state directory where the peer's newest numbers are persisted
    /// for the next run; `None` for a diagnostic run.
    pub record_in: Option<std::path::PathBuf>,
    /// This run's incarnation (e.g. the start time in µs since the epoch).
    pub incarnation: u64,
    pub realtime: bool,
}

/// The running endpoint. Dropping it stops the thread.
#[derive(Debug)]
pub struct Endpoint {
    state: Arc<Mutex<NodeState>>,
    wake: UnixDatagram,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Opens a UDP socket bound to `local` with heartbeat priorities.
/// `IP_FREEBIND` lets it bind before the address is configured (a link
/// coming up late at boot); sends then fail until it is.
fn open_socket(local: SocketAddr) -> Result<UdpSocket, FailoverError> {
    let err = |what: &str, e: std::io::Error| FailoverError::Socket {
        addr: local,
        what: what.to_string(),
        source: e,
    };
    let s = Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP)).map_err(|e| err("socket", e))?;
    match local {
        SocketAddr::V4(_) => {
            s.set_freebind_v4(true).map_err(|e| err("IP_FREEBIND", e))?;
            let _ = s.set_tos_v4(TOS_CS6);
        }
        SocketAddr::V6(_) => {
            s.set_freebind_v6(true).map_err(|e| err("IPV6_FREEBIND", e))?;
            let _ = s.set_tclass_v6(TOS_CS6);
        }
    }
    let _ = s.set_priority(SOCKET_PRIORITY);
    s.set_nonblocking(true).map_err(|e| err("O_NONBLOCK", e))?;
    s.bind(&local.into()).map_err(|e| err("bind", e))?;
    Ok(s.into())
}

/// This node's links, one socket each: the first peer's, then any link
/// only a further peer shares.
fn local_links(cfg: &EndpointConfig) -> Vec<LinkAddr> {
    let mut out: Vec<LinkAddr> = Vec::new();
    for l in cfg.peers.iter().flat_map(|p| &p.links) {
        if !out.iter().any(|o| o.id == l.id) {
            out.push(l.clone());
        }
    }
    out
}

impl Endpoint {
    /// Binds every link's socket (errors here: a port in use, a bad
    /// address) and starts the thread, which reports on `tx`.
    pub fn start(cfg: EndpointConfig, initial: NodeState, tx: Sender<Input>) -> Result<Endpoint, FailoverError> {
        let sockets = local_links(&cfg)
            .iter()
            .map(|l| open_socket(l.local))
            .collect::<Result<Vec<_>, _>>()?;
        let (wake, wake_rx) = UnixDatagram::pair().map_err(FailoverError::Wake)?;
        wake_rx.set_nonblocking(true).map_err(FailoverError::Wake)?;
        wake.set_nonblocking(true).map_err(FailoverError::Wake)?;
        let state = Arc::new(Mutex::new(initial));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::Builder::new()
                .name("heartbeat".into())
                .spawn(move || Worker::new(cfg, sockets, wake_rx, state, stop, tx).run())
                .map_err(FailoverError::Thread)?
        };
        Ok(Endpoint {
            state,
            wake,
            stop,
            thread: Some(thread),
        })
    }

    /// Replaces the advertised state and sends it at once on every link.
    pub fn set_state(&self, state: NodeState) {
        if let Ok(mut s) = self.state.lock() {
            *s = state;
        }
        let _ = self.wake.send(&[1]);
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.wake.send(&[0]);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One peer as the receiving side knows it.
struct PeerRx {
    name: String,
    /// Where it listens, by socket index (`None`: no such link to it).
    addrs: Vec<Option<SocketAddr>>,
    window: ReplayWindow,
    /// When a heartbeat of it was last accepted (ms, monotonic).
    last_accepted: Option<u64>,
    /// The heartbeat version it last spoke in an accepted heartbeat;
    /// ours until heard. Heartbeats go out to it in it, so a peer of the
    /// previous release (version 1) understands them after its first one
    /// arrives.
    version: u8,
    recorder: Option<PeerRecorder>,
    last_recorded: (u64, u64),
    last_record_at: u64,
    /// Per socket: sending to it is failing (reported once).
    send_failing: Vec<bool>,
}

struct Worker {
    cfg: EndpointConfig,
    /// This node's links, by socket index.
    links: Vec<LinkAddr>,
    sockets: Vec<UdpSocket>,
    wake: UnixDatagram,
    state: Arc<Mutex<NodeState>>,
    stop: Arc<AtomicBool>,
    tx: Sender<Input>,
    seq: u64,
    peers: Vec<PeerRx>,
    /// The peer whose key failed last (see `accept`).
    bad_key_peer: usize,
    /// Last report time per (link, kind of rejection), and counts per link.
    last_reject_report: std::collections::HashMap<(usize, &'static str), u64>,
    rejected: Vec<u64>,
}

impl Worker {
    fn new(
        cfg: EndpointConfig,
        sockets: Vec<UdpSocket>,
        wake: UnixDatagram,
        state: Arc<Mutex<NodeState>>,
        stop: Arc<AtomicBool>,
        tx: Sender<Input>,
    ) -> Self {
        let n = sockets.len();
        let links = local_links(&cfg);
        let several = cfg.peers.len() > 1;
        let peers = cfg
            .peers
            .iter()
            .map(|p| {
                let recorder = cfg.record_in.clone().and_then(|dir| {
                    let notes = tx.clone();
                    let file = super::incarnation::peer_file(several.then_some(p.name.as_str()));
                    match PeerRecorder::start_in(dir, file, move |e| {
                        let _ = notes.send(Input::Note(e));
                    }) {
                        Ok(r) => Some(r),
                        Err(e) => {
                            let _ = tx.send(Input::Note(format!("cannot start the peer-incarnation recorder: {e}")));
                            None
                        }
                    }
                });
                PeerRx {
                    name: p.name.clone(),
                    addrs: links
                        .iter()
                        .map(|l| p.links.iter().find(|pl| pl.id == l.id).map(|pl| pl.peer))
                        .collect(),
                    window: match p.floor {
                        Some((inc, seq)) => ReplayWindow::resume(inc, seq),
                        None => ReplayWindow::new(),
                    },
                    last_accepted: None,
                    version: heartbeat::VERSION,
                    recorder,
                    last_recorded: (0, 0),
                    last_record_at: 0,
                    send_failing: vec![false; n],
                }
            })
            .collect();
        Worker {
            cfg,
            links,
            sockets,
            wake,
            state,
            stop,
            tx,
            seq: 0,
            peers,
            bad_key_peer: 0,
            last_reject_report: Default::default(),
            rejected: vec![0; n],
        }
    }

    fn note(&self, msg: String) {
        let _ = self.tx.send(Input::Note(msg));
    }

    fn run(mut self) {
        if self.cfg.realtime {
            match rt::set_realtime(rt::HEARTBEAT_PRIORITY) {
                Ok(()) => self.note(format!(
                    "heartbeat thread runs SCHED_FIFO priority {}",
                    rt::HEARTBEAT_PRIORITY
                )),
                Err(e) => self.note(format!(
                    "heartbeat thread stays at normal priority (SCHED_FIFO not permitted: {e})"
                )),
            }
        }
        let keepalive = self.cfg.keepalive.as_millis().max(1) as u64;
        let mut next_send = monotonic_ms();
        let mut buf = [0u8; 2048];
        while !self.stop.load(Ordering::Relaxed) {
            let now = monotonic_ms();
            if now >= next_send {
                self.send_all();
                // Keep the cadence, but never try to catch up after a stall.
                next_send = (next_send + keepalive).max(now + 1);
            }
            let timeout = next_send.saturating_sub(monotonic_ms()).min(i32::MAX as u64) as i32;
            let mut fds: Vec<libc::pollfd> = self
                .sockets
                .iter()
                .map(|s| s.as_raw_fd())
                .chain(std::iter::once(self.wake.as_raw_fd()))
                .map(|fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if rc <= 0 {
                continue;
            }
            let ready: Vec<usize> = (0..self.sockets.len()).filter(|i| fds[*i].revents != 0).collect();
            for i in ready {
                self.receive(i, &mut buf);
            }
            self.record(monotonic_ms(), false);
            if fds[self.sockets.len()].revents != 0 {
                let mut woke = false;
                while self.wake.recv(&mut buf).is_ok() {
                    woke = true;
                }
                if woke && !self.stop.load(Ordering::Relaxed) {
                    self.send_all();
                }
            }
        }
        self.record(monotonic_ms(), true);
    }

    /// Hands each peer's newest numbers to its recorder: at once for a new
    /// incarnation or when `force`d, else every [`RECORD_EVERY`].
    fn record(&mut self, now: u64, force: bool) {
        for p in &mut self.peers {
            let (Some(r), Some(inc)) = (&p.recorder, p.window.incarnation()) else {
                continue;
            };
            let cur = (inc, p.window.newest());
            let due = force || inc != p.last_recorded.0 || now.saturating_sub(p.last_record_at) >= RECORD_EVERY;
            if due && cur != p.last_recorded {
                r.record(cur.0, cur.1);
                p.last_recorded = cur;
                p.last_record_at = now;
            }
        }
    }

    fn send_all(&mut self) {
        let state = match self.state.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let several = self.peers.len() > 1;
        for i in 0..self.sockets.len() {
            let link = &self.links[i];
            for k in 0..self.peers.len() {
                let Some(to) = self.peers[k].addrs[i] else {
                    continue;
                };
                self.seq += 1;
                let hb = Heartbeat {
                    sender: self.cfg.local.clone(),
                    incarnation: self.cfg.incarnation,
                    seq: self.seq,
                    link: link.id.0,
                    state: state.clone(),
                };
                let result = hb
                    .seal_as(self.cfg.keys.signing(), self.peers[k].version)
                    .map_err(|e| e.to_string())
                    .and_then(|bytes| self.sockets[i].send_to(&bytes, to).map_err(|e| e.to_string()));
                let p = &mut self.peers[k];
                let whom = if several {
                    format!("{to} ({})", p.name)
                } else {
                    to.to_string()
                };
                match result {
                    Ok(_) if p.send_failing[i] => {
                        p.send_failing[i] = false;
                        let msg = if several {
                            format!("heartbeats to {} on link {} can be sent again", p.name, link.name)
                        } else {
                            format!("heartbeats on link {} can be sent again", link.name)
                        };
                        self.note(msg);
                    }
                    Err(error) if !p.send_failing[i] => {
                        p.send_failing[i] = true;
                        let _ = self.tx.send(Input::SendFailed {
                            at: rt::now(),
                            link: link.id,
                            error: format!("to {whom}: {error}"),
                        });
                    }
                    _ => {}
                }
            }
        }
    }

    fn receive(&mut self, i: usize, buf: &mut [u8]) {
        loop {
            let (n, from) = match self.sockets[i].recv_from(buf) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // ICMP errors from earlier sends (port unreachable) surface
                // here; they are not heartbeats.
                Err(_) => return,
            };
            let at = monotonic_ms();
            if let Err(reason) = self.accept(i, &buf[..n], from, at) {
                self.reject(i, from, reason, at);
            }
        }
    }

    /// Accepts a datagram or says why not: (kind, detail).
    fn accept(&mut self, i: usize, packet: &[u8], from: SocketAddr, at: u64) -> Result<(), (&'static str, String)> {
        let link = &self.links[i];
        let claimed = Heartbeat::unverified_sender(packet);
        let from_peer = self.peers.iter().position(|p| {
            Some(p.name.as_str()) == claimed.as_deref() && p.addrs[i].is_some_and(|a| a.ip() == from.ip())
        });
        let hb = match Heartbeat::open(packet, &self.cfg.keys) {
            Ok(hb) => hb,
            // From a peer's address and naming that peer: it is alive and
            // signs with another key (or someone on the link pretends so;
            // either way its death cannot be concluded).
            Err(e @ HeartbeatError::BadMac) => {
                return Err(match from_peer {
                    Some(k) => {
                        self.bad_key_peer = k;
                        (KIND_PEER_KEY, e.to_string())
                    }
                    None => ("mac", e.to_string()),
                });
            }
            Err(e) => return Err(("format", e.to_string())),
        };
        let Some(k) = self.peers.iter().position(|p| p.name == hb.sender) else {
            let detail = if self.peers.len() == 1 {
                format!("sender {:?} is not the peer {:?}", hb.sender, self.peers[0].name)
            } else {
                let names: Vec<&str> = self.peers.iter().map(|p| p.name.as_str()).collect();
                format!("sender {:?} is not a peer ({})", hb.sender, names.join(", "))
            };
            return Err(("sender", detail));
        };
        if hb.link != link.id.0 || self.peers[k].addrs[i].is_none() {
            return Err((
                "link",
                format!(
                    "sent on link {} but arrived on link {} (routing mixes the links)",
                    hb.link, link.id.0
                ),
            ));
        }
        let p = &mut self.peers[k];
        let recent = p.last_accepted.is_some_and(|t| at.saturating_sub(t) <= STALE_WITHIN_MS);
        p.window.check(hb.incarnation, hb.seq).map_err(|e| match e {
            // Older than the window, of the current run, while newer ones
            // are arriving: what a pause of this process leaves queued on
            // the slower link (each link's queue is read in turn). Without
            // fresh heartbeats around it, the same refusal is a replay.
            Replay::TooOld { .. } if recent => (
                KIND_STALE,
                format!("stale: {e} (queued while this process was paused, or late on a slower link)"),
            ),
            _ => ("replay", format!("replay: {e}")),
        })?;
        p.last_accepted = Some(at);
        let version = Heartbeat::version_of(packet).unwrap_or(heartbeat::VERSION);
        if version != p.version {
            p.version = version;
            let msg = format!(
                "{} speaks heartbeat version {version}: heartbeats to it now go out in version {version}",
                p.name
            );
            self.note(msg);
        }
        let _ = self.tx.send(Input::Heartbeat {
            at: crate::arbiter::Millis(at),
            peer: k,
            link: link.id,
            incarnation: hb.incarnation,
            version,
            state: hb.state,
        });
        Ok(())
    }

    fn reject(&mut self, i: usize, from: SocketAddr, (kind, reason): (&'static str, String), at: u64) {
        self.rejected[i] += 1;
        if kind == KIND_PEER_KEY {
            // Every one counts for the arbiter (as a heartbeat would); the
            // driver rate-limits what it logs.
            let _ = self.tx.send(Input::BadKey {
                at: crate::arbiter::Millis(at),
                peer: self.bad_key_peer,
                link: self.links[i].id,
                from,
                count: self.rejected[i],
            });
            return;
        }
        let last = self.last_reject_report.get(&(i, kind));
        if last.is_none_or(|t| at.saturating_sub(*t) >= REJECT_REPORT_EVERY) {
            self.last_reject_report.insert((i, kind), at);
            let _ = self.tx.send(Input::Rejected {
                at: crate::arbiter::Millis(at),
                link: self.links[i].id,
                from,
                kind,
                reason,
                count: self.rejected[i],
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{Receiver, channel};

    use hamirror_wire::heartbeat::NodeState;

    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn free_port() -> u16 {
        UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// serv1's endpoint on 127.0.0.1:`listen`, its peer at `peer`.
    fn config(listen: u16, peer: u16, keepalive: Duration) -> EndpointConfig {
        EndpointConfig {
            local: "serv1".into(),
            peers: vec![PeerAddrs {
                name: "serv2".into(),
                links: vec![LinkAddr {
                    id: LinkId(0),
                    name: "crossover".into(),
                    local: format!("127.0.0.1:{listen}").parse().unwrap(),
                    peer: format!("127.0.0.1:{peer}").parse().unwrap(),
                }],
                floor: None,
            }],
            keepalive,
            record_in: None,
            keys: HeartbeatKeys::from_secrets(&[KEY]).unwrap(),
            incarnation: 1,
            realtime: false,
        }
    }

    fn endpoint(listen: u16, peer: u16, keepalive: Duration) -> (Endpoint, Receiver<Input>) {
        let (tx, rx) = channel();
        let cfg = config(listen, peer, keepalive);
        (Endpoint::start(cfg, NodeState::default(), tx).unwrap(), rx)
    }

    fn next(rx: &Receiver<Input>, f: impl Fn(&Input) -> bool) -> Input {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(i) if f(&i) => return i,
                Ok(_) => {}
                Err(e) => panic!("no matching input: {e}"),
            }
        }
    }

    fn sealed(sender: &str, seq: u64, link: u8, key: [u8; 32]) -> Vec<u8> {
        sealed_inc(sender, 9, seq, link, key)
    }

    fn sealed_inc(sender: &str, incarnation: u64, seq: u64, link: u8, key: [u8; 32]) -> Vec<u8> {
        Heartbeat {
            sender: sender.into(),
            incarnation,
            seq,
            link,
            state: NodeState {
                standby: true,
                ..Default::default()
            },
        }
        .seal(HeartbeatKeys::from_secrets(&[key]).unwrap().signing())
        .unwrap()
    }

    #[test]
    fn heartbeats_go_out_in_the_version_the_peer_was_last_heard_in() {
        let port = free_port();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let peer_port = peer.local_addr().unwrap().port();
        let (ep, rx) = endpoint(port, peer_port, Duration::from_millis(20));
        let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let keys = HeartbeatKeys::from_secrets(&[KEY]).unwrap();
        let version_received = |want: u8| {
            // Within a few keepalives (some may be in flight already).
            let mut buf = [0u8; 1500];
            for _ in 0..20 {
                let n = peer.recv(&mut buf).unwrap();
                Heartbeat::open(&buf[..n], &keys).expect("authentic");
                if Heartbeat::version_of(&buf[..n]) == Some(want) {
                    return;
                }
            }
            panic!("no heartbeat in version {want}");
        };
        let hb = |seq: u64| Heartbeat {
            sender: "serv2".into(),
            incarnation: 9,
            seq,
            link: 0,
            state: NodeState::default(),
        };
        // Nothing heard yet: the current version.
        version_received(heartbeat::VERSION);
        // The previous release speaks version 1: answered in version 1.
        peer.send_to(&hb(1).seal_as(keys.signing(), 1).unwrap(), to).unwrap();
        next(&rx, |i| matches!(i, Input::Note(n) if n.contains("version 1")));
        match next(&rx, |i| matches!(i, Input::Heartbeat { .. })) {
            Input::Heartbeat { version, .. } => assert_eq!(version, 1),
            _ => unreachable!(),
        }
        version_received(1);
        // Upgraded: back to the current version.
        peer.send_to(&hb(2).seal(keys.signing()).unwrap(), to).unwrap();
        version_received(heartbeat::VERSION);
        drop(ep);
    }

    #[test]
    fn accepts_the_peer_and_refuses_forgeries_replays_and_strangers() {
        let port = free_port();
        let (ep, rx) = endpoint(port, free_port(), Duration::from_millis(20));
        let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
        let kind = |k: &'static str| move |i: &Input| matches!(i, Input::Rejected { reason, .. } if reason.contains(k));

        let good = sealed("serv2", 1, 0, KEY);
        attacker.send_to(&good, to).unwrap();
        match next(&rx, |i| matches!(i, Input::Heartbeat { .. })) {
            Input::Heartbeat { incarnation, state, .. } => assert!(incarnation == 9 && state.standby),
            _ => unreachable!(),
        }
        attacker.send_to(&good, to).unwrap();
        next(&rx, kind("replay"));
        // Another key, from the peer's address, naming the peer: the peer
        // is misconfigured, reported as such.
        attacker.send_to(&sealed("serv2", 2, 0, [8; 32]), to).unwrap();
        next(&rx, |i| matches!(i, Input::BadKey { .. }));
        // Another key naming someone else: just a bad MAC.
        attacker.send_to(&sealed("serv3", 2, 0, [8; 32]), to).unwrap();
        next(&rx, kind("bad MAC"));
        attacker.send_to(&sealed("serv3", 3, 0, KEY), to).unwrap();
        next(&rx, kind("is not the peer"));
        attacker.send_to(&sealed("serv2", 4, 1, KEY), to).unwrap();
        next(&rx, kind("arrived on link"));
        attacker.send_to(&[b'x'; 64], to).unwrap();
        next(&rx, kind("bad magic"));
        // Far behind the newest of the current run (what a pause of this
        // process leaves queued on the other link): stale, not a replay.
        attacker.send_to(&sealed("serv2", 400, 0, KEY), to).unwrap();
        next(&rx, |i| matches!(i, Input::Heartbeat { .. }));
        attacker.send_to(&sealed("serv2", 100, 0, KEY), to).unwrap();
        match next(&rx, |i| matches!(i, Input::Rejected { .. })) {
            Input::Rejected { kind, reason, .. } => {
                assert_eq!(kind, KIND_STALE);
                assert!(reason.starts_with("stale:") && !reason.contains("replay"), "{reason}");
            }
            _ => unreachable!(),
        }
        // The same with no fresh heartbeat for a while: a replay.
        std::thread::sleep(Duration::from_millis(STALE_WITHIN_MS + 100));
        attacker.send_to(&sealed("serv2", 90, 0, KEY), to).unwrap();
        next(&rx, kind("replay"));
        drop(ep);
    }

    #[test]
    fn an_older_incarnation_is_refused_however_long_the_current_one_is_silent() {
        let port = free_port();
        let (ep, rx) = endpoint(port, free_port(), Duration::from_millis(10));
        let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(&sealed_inc("serv2", 100, 1, 0, KEY), to).unwrap();
        next(&rx, |i| matches!(i, Input::Heartbeat { incarnation: 100, .. }));
        // The peer restarted (incarnation 200), then died; its recorded
        // heartbeats of incarnation 100 are replayed well past deadtime.
        s.send_to(&sealed_inc("serv2", 200, 1, 0, KEY), to).unwrap();
        next(&rx, |i| matches!(i, Input::Heartbeat { incarnation: 200, .. }));
        std::thread::sleep(Duration::from_millis(200));
        s.send_to(&sealed_inc("serv2", 100, 2, 0, KEY), to).unwrap();
        next(
            &rx,
            |i| matches!(i, Input::Rejected { reason, .. } if reason.contains("older than the current")),
        );
        drop(ep);
    }

    #[test]
    fn a_restarted_endpoint_resumes_from_the_persisted_peer_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let start = |port: u16| {
            let (tx, rx) = channel();
            let mut cfg = config(port, free_port(), Duration::from_millis(10));
            cfg.peers[0].floor = crate::failover::incarnation::load_peer(dir.path());
            cfg.record_in = Some(dir.path().to_path_buf());
            (Endpoint::start(cfg, NodeState::default(), tx).unwrap(), rx)
        };
        let port = free_port();
        let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (ep, rx) = start(port);
        s.send_to(&sealed_inc("serv2", 100, 1, 0, KEY), to).unwrap();
        next(&rx, |i| matches!(i, Input::Heartbeat { incarnation: 100, .. }));
        s.send_to(&sealed_inc("serv2", 200, 5, 0, KEY), to).unwrap();
        next(&rx, |i| matches!(i, Input::Heartbeat { incarnation: 200, .. }));
        drop(ep);
        assert_eq!(crate::failover::incarnation::load_peer(dir.path()), Some((200, 5)));
        let (ep, rx) = start(port);
        for (inc, seq) in [(100, 2), (200, 5), (200, 4)] {
            s.send_to(&sealed_inc("serv2", inc, seq, 0, KEY), to).unwrap();
        }
        next(
            &rx,
            |i| matches!(i, Input::Rejected { reason, .. } if reason.contains("replay")),
        );
        let quiet_until = std::time::Instant::now() + Duration::from_millis(300);
        while let Ok(i) = rx.recv_timeout(quiet_until.saturating_duration_since(std::time::Instant::now())) {
            assert!(!matches!(i, Input::Heartbeat { .. }), "a replay was accepted: {i:?}");
        }
        s.send_to(&sealed_inc("serv2", 200, 6, 0, KEY), to).unwrap();
        next(&rx, |i| matches!(i, Input::Heartbeat { incarnation: 200, .. }));
        drop(ep);
    }

    #[test]
    fn two_endpoints_exchange_state_and_send_at_once_on_change() {
        let (pa, pb) = (free_port(), free_port());
        // The second endpoint plays serv2 towards serv1.
        let (tx, rx_b) = channel();
        let cfg = EndpointConfig {
            local: "serv2".into(),
            peers: vec![PeerAddrs {
                name: "serv1".into(),
                links: vec![LinkAddr {
                    id: LinkId(0),
                    name: "crossover".into(),
                    local: format!("127.0.0.1:{pb}").parse().unwrap(),
                    peer: format!("127.0.0.1:{pa}").parse().unwrap(),
                }],
                floor: None,
            }],
            keepalive: Duration::from_secs(5),
            record_in: None,
            keys: HeartbeatKeys::from_secrets(&[KEY]).unwrap(),
            incarnation: 2,
            realtime: false,
        };
        let _b = Endpoint::start(cfg, NodeState::default(), tx).unwrap();
        // serv1 sends every 5 s: only the immediate send on a change can
        // deliver the new state quickly.
        let (a, _rx_a) = endpoint(pa, pb, Duration::from_secs(5));
        next(&rx_b, |i| matches!(i, Input::Heartbeat { state, .. } if !state.standby));
        a.set_state(NodeState {
            standby: true,
            ..Default::default()
        });
        let t0 = monotonic_ms();
        next(&rx_b, |i| matches!(i, Input::Heartbeat { state, .. } if state.standby));
        assert!(
            monotonic_ms() - t0 < 1000,
            "state change took {} ms",
            monotonic_ms() - t0
        );
    }
}
