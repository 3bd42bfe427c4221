//! The QUIC endpoint of this node toward its peer: listening on the node's
//! link addresses, connecting to the peer's crossover address and then its
//! LAN address, and turning every handshake outcome into a [`Connection`]
//! with the peer's proven identity or a typed [`TransportError`]. Owns the
//! per-connection TLS set-up (each handshake gets its own pin verifier, so
//! its refusal can be reported) and handshake confirmation. Knows nothing
//! of the conversation carried over the connection.
//!
//! A refused key is reported on both sides with both fingerprints: the
//! refusing side from its verifier, the refused side from the reason in
//! the peer's CONNECTION_CLOSE (a TLS alert alone carries only a code).
//! Both `accept` and `connect` log a refusal at error level (the daemon's
//! log is where an operator looks) and return it as a typed error.
//!
//! A listener starts a handshake only for packets from the peer's link
//! addresses (`admit`): anything else is refused on its first packet,
//! before any TLS work, with at most one log line per address per minute.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::admit::{Admission, LogLine, RefusalLog};
use super::connection::{Connection, PeerIdentity};
use super::error::{TransportError, is_crypto_code};
use super::identity::{Fingerprint, Identity};
use super::tls::{self, PinnedPeer};
use super::tuning::{Tuning, udp_socket};
use crate::config::Node;

/// The peer as this node's configuration describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    pub name: String,
    /// Where the peer's fingerprint is configured (`serv2.conf`), for messages.
    pub conf: String,
    /// The pinned fingerprint; `None` refuses every key.
    pub fingerprint: Option<Fingerprint>,
    /// Addresses to try in order: the crossover link first, then the LAN.
    /// A listener accepts connections only from these IPs (any port).
    pub addrs: Vec<SocketAddr>,
}

impl PeerSpec {
    /// The peer as described by its own `NODE.conf` in the shared config dir.
    pub fn of_node(peer: &Node) -> PeerSpec {
        let c = &peer.conf;
        let mut addrs = vec![SocketAddr::new(c.address, c.port)];
        if let Some(lan) = c.lan.filter(|l| *l != c.address) {
            addrs.push(SocketAddr::new(lan, c.port));
        }
        let conf = peer.conf_file.file_name().map_or_else(
            || peer.conf_file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        PeerSpec {
            name: peer.name.clone(),
            conf,
            // `config` validated the form; a value that does not parse pins nothing.
            fingerprint: c.fingerprint.as_deref().and_then(|f| f.parse().ok()),
            addrs,
        }
    }
}

/// What every handshake needs, shared with the accept tasks.
#[derive(Debug)]
struct Shared {
    identity: Identity,
    /// The peer this endpoint connects to (and, listening, accepts).
    peer: PeerSpec,
    /// Further peers a listener accepts (fan-out: every other node of the
    /// cluster may hold a group and push its sets here).
    others: Vec<PeerSpec>,
    tuning: Tuning,
    transport: Arc<quinn::TransportConfig>,
    /// The peer's link addresses: nobody else gets a handshake.
    admission: Admission,
    refusals: Mutex<RefusalLog>,
}

type Accepted = Result<Connection, TransportError>;

/// This node's QUIC endpoint toward its one peer.
pub struct Endpoint {
    shared: Arc<Shared>,
    listeners: Vec<quinn::Endpoint>,
    /// Client sockets, one per address family, made on first use.
    clients: Mutex<Vec<quinn::Endpoint>>,
    incoming: tokio::sync::Mutex<mpsc::Receiver<Accepted>>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("peer", &self.shared.peer.name)
            .field("listening", &self.local_addrs())
            .finish()
    }
}

impl Endpoint {
    /// The receiver's endpoint: loads `local`'s key and listens on its
    /// address and LAN address (at its `port`) for `peer`. Must be called
    /// inside a tokio runtime.
    pub fn server(local: &Node, peer: &Node) -> Result<Endpoint, TransportError> {
        Endpoint::server_for(local, &[peer])
    }

    /// As [`Endpoint::server`], accepting each of `peers` (each with its
    /// own pinned key, from its own addresses): the receiver of a node
    /// whose sets several holders may push. The first is the one
    /// [`Endpoint::connect`] reaches.
    ///
    /// # Errors
    /// No peer, this node's key cannot be loaded, or no address can be bound.
    pub fn server_for(local: &Node, peers: &[&Node]) -> Result<Endpoint, TransportError> {
        let identity = load_identity(local)?;
        let mut binds = vec![SocketAddr::new(local.conf.address, local.conf.port)];
        if let Some(lan) = local.conf.lan.filter(|l| *l != local.conf.address) {
            binds.push(SocketAddr::new(lan, local.conf.port));
        }
        let mut specs = peers.iter().map(|p| PeerSpec::of_node(p));
        let first = specs
            .next()
            .ok_or_else(|| TransportError::Config("a receiver needs at least one peer".into()))?;
        Endpoint::listen_any(identity, first, specs.collect(), &binds, Tuning::default())
    }

    /// The opener's endpoint: loads `local`'s key; connects to `peer` only.
    pub fn client(local: &Node, peer: &Node) -> Result<Endpoint, TransportError> {
        let identity = load_identity(local)?;
        Endpoint::connector(identity, PeerSpec::of_node(peer), Tuning::default())
    }

    /// [`Endpoint::client`] for a push, which only sends bulk data: a
    /// smaller receive buffer ([`Tuning::sender`]).
    pub fn sender(local: &Node, peer: &Node) -> Result<Endpoint, TransportError> {
        let identity = load_identity(local)?;
        Endpoint::connector(identity, PeerSpec::of_node(peer), Tuning::sender())
    }

    /// Listens on every address of `binds` (an address that cannot be bound
    /// is logged and skipped, unless none can). The endpoint can also connect.
    pub fn listen(
        identity: Identity,
        peer: PeerSpec,
        binds: &[SocketAddr],
        tuning: Tuning,
    ) -> Result<Endpoint, TransportError> {
        Endpoint::listen_any(identity, peer, vec![], binds, tuning)
    }

    /// As [`Endpoint::listen`], also accepting `others` (see
    /// [`Endpoint::server_for`]).
    pub fn listen_any(
        identity: Identity,
        peer: PeerSpec,
        others: Vec<PeerSpec>,
        binds: &[SocketAddr],
        tuning: Tuning,
    ) -> Result<Endpoint, TransportError> {
        let mut ep = Endpoint::build(identity, peer, others, tuning);
        // quinn needs a server config to accept at all; each connection
        // is then accepted with its own (see `handshake`).
        let default_server = ep.shared.server_config(Arc::new(PinnedPeer::new("", "", None)))?;
        // A listener signs its stateless resets with a key that outlives the
        // process (see `Identity::reset_key`): after a restart at the same
        // address, the peer's next packet on a connection to the old process
        // is answered with a reset it accepts, so it reconnects at once.
        let mut endpoint_config = ep.shared.tuning.endpoint_config();
        endpoint_config
            .reset_key(ep.shared.identity.reset_key())
            .cid_generator(|| Box::new(RandomCids));
        let mut first_error = None;
        for &addr in binds {
            let bound = udp_socket(addr, ep.shared.tuning.socket_buffer).and_then(|sock| {
                quinn::Endpoint::new(
                    endpoint_config.clone(),
                    Some(default_server.clone()),
                    sock,
                    Arc::new(quinn::TokioRuntime),
                )
            });
            match bound {
                Ok(q) => ep.listeners.push(q),
                Err(source) => {
                    tracing::warn!("cannot listen on {addr}: {source}");
                    first_error.get_or_insert(TransportError::Bind { addr, source });
                }
            }
        }
        if ep.listeners.is_empty() {
            return Err(first_error.unwrap_or_else(|| TransportError::Config("no address to listen on".into())));
        }
        let (tx, rx) = mpsc::channel(16);
        ep.incoming = tokio::sync::Mutex::new(rx);
        for q in &ep.listeners {
            ep.tasks
                .push(tokio::spawn(accept_loop(q.clone(), ep.shared.clone(), tx.clone())));
        }
        Ok(ep)
    }

    /// An endpoint that only connects.
    pub fn connector(identity: Identity, peer: PeerSpec, tuning: Tuning) -> Result<Endpoint, TransportError> {
        Ok(Endpoint::build(identity, peer, vec![], tuning))
    }

    fn build(identity: Identity, peer: PeerSpec, others: Vec<PeerSpec>, tuning: Tuning) -> Endpoint {
        let own = identity.fingerprint();
        tracing::debug!(
            "this node's key is {own}; peer {} pinned as {:?}",
            peer.name,
            peer.fingerprint
        );
        let transport = Arc::new(tuning.transport_config());
        let (_, rx) = mpsc::channel(1);
        let admission = Admission::new(
            std::iter::once(&peer)
                .chain(&others)
                .flat_map(|p| p.addrs.iter().map(SocketAddr::ip)),
        );
        Endpoint {
            shared: Arc::new(Shared {
                identity,
                peer,
                others,
                tuning,
                transport,
                admission,
                refusals: Mutex::new(RefusalLog::new()),
            }),
            listeners: Vec::new(),
            clients: Mutex::new(Vec::new()),
            incoming: tokio::sync::Mutex::new(rx),
            tasks: Vec::new(),
        }
    }

    /// The addresses this endpoint listens on (with the real port when 0
    /// was asked).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().filter_map(|q| q.local_addr().ok()).collect()
    }

    pub fn peer(&self) -> &PeerSpec {
        &self.shared.peer
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.shared.identity.fingerprint()
    }

    /// The next connection from the peer whose key matched, or the error of
    /// a handshake that failed (already logged). `None` once the endpoint is
    /// closed or does not listen. Handshakes run concurrently in the
    /// background; this only hands over their results.
    pub async fn accept(&self) -> Option<Result<Connection, TransportError>> {
        self.incoming.lock().await.recv().await
    }

    /// Connects to the peer: its crossover address first, then its LAN
    /// address. A refused key or a failed handshake is returned at once
    /// (another path would not change it); only unreachable addresses fall
    /// through to the next one.
    pub async fn connect(&self) -> Result<Connection, TransportError> {
        let mut attempts = Vec::new();
        for &addr in &self.shared.peer.addrs {
            match self.connect_to(addr).await {
                Ok(c) => return Ok(c),
                Err(TransportError::Unreachable { attempts: a, .. }) => attempts.extend(a),
                Err(e) if e.retry_may_help() => attempts.push((addr, e.to_string())),
                Err(e) => return Err(e),
            }
        }
        Err(TransportError::Unreachable {
            peer: self.shared.peer.name.clone(),
            attempts,
        })
    }

    /// Connects to the peer at one address. Returns once the peer has
    /// confirmed the handshake, i.e. accepted this node's key too.
    pub async fn connect_to(&self, addr: SocketAddr) -> Result<Connection, TransportError> {
        let result = self.try_connect(addr).await;
        if let Err(e @ (TransportError::PeerKeyRejected(_) | TransportError::RefusedByPeer { .. })) = &result {
            tracing::error!("refused connection to {addr}: {e}");
        }
        result
    }

    async fn try_connect(&self, addr: SocketAddr) -> Result<Connection, TransportError> {
        let shared = &self.shared;
        let unreachable = |why: String| TransportError::Unreachable {
            peer: shared.peer.name.clone(),
            attempts: vec![(addr, why)],
        };
        let pin = Arc::new(shared.pin(&[&shared.peer]));
        let tls =
            tls::client_config(&shared.identity, pin.clone()).map_err(|e| TransportError::Config(e.to_string()))?;
        let quic = QuicClientConfig::try_from(tls).map_err(|e| TransportError::Config(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(shared.transport.clone());
        let client = self.client_for(addr)?;
        let connecting = client
            .connect_with(config, addr, tls::SERVER_NAME)
            .map_err(|e| unreachable(e.to_string()))?;
        let timeout = shared.tuning.connect_timeout;
        let conn = match tokio::time::timeout(timeout, connecting).await {
            Err(_) => return Err(unreachable(format!("no answer within {}", secs(timeout)))),
            Ok(Err(e)) => return Err(shared.handshake_error(e, &pin)),
            Ok(Ok(c)) => c,
        };
        // TLS 1.3 lets the client finish before the server has checked the
        // client's certificate: wait for the server's HANDSHAKE_DONE (RFC
        // 9001 §4.1.2), or its refusal.
        match tokio::time::timeout(timeout, confirmed(&conn)).await {
            Err(_) => return Err(unreachable(format!("handshake not confirmed within {}", secs(timeout)))),
            Ok(Err(e)) => return Err(shared.handshake_error(e, &pin)),
            Ok(Ok(())) => {}
        }
        shared.connection(conn, &[&shared.peer])
    }

    /// The client socket for `addr`'s family, bound to the unspecified
    /// address so the kernel picks the route (and source) of each link.
    fn client_for(&self, addr: SocketAddr) -> Result<quinn::Endpoint, TransportError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let family = |a: SocketAddr| a.is_ipv4();
        if let Some(q) = clients
            .iter()
            .find(|q| q.local_addr().is_ok_and(|l| family(l) == family(addr)))
        {
            return Ok(q.clone());
        }
        let any: IpAddr = if addr.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        let bind = SocketAddr::new(any, 0);
        let sock = udp_socket(bind, self.shared.tuning.socket_buffer)
            .map_err(|source| TransportError::Bind { addr: bind, source })?;
        let q = quinn::Endpoint::new(
            self.shared.tuning.endpoint_config(),
            None,
            sock,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| TransportError::Bind { addr: bind, source })?;
        clients.push(q.clone());
        Ok(q)
    }

    /// Closes every connection and stops listening.
    pub fn close(&self) {
        for q in self
            .listeners
            .iter()
            .chain(self.clients.lock().unwrap_or_else(|p| p.into_inner()).iter())
        {
            q.close(quinn::VarInt::from_u32(0), b"endpoint closed");
        }
    }

    /// Waits until every connection has been closed cleanly (call after
    /// [`Endpoint::close`] so the peer learns of the close).
    /// Closes every connection with `reason` and gives the close frames a
    /// moment to leave (a few milliseconds on a LAN). Unlike
    /// [`Endpoint::wait_idle`] it does not wait out QUIC's draining period
    /// (three probe timeouts), which would add ~80 ms to every command.
    pub async fn shutdown(&self, reason: &str) {
        let clients: Vec<_> = self.clients.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for q in self.listeners.iter().chain(clients.iter()) {
            q.close(quinn::VarInt::from_u32(0), reason.as_bytes());
        }
        let _ = tokio::time::timeout(std::time::Duration::from_millis(10), self.wait_idle()).await;
    }

    /// Ends a one-shot command's only connection: closes `conn` with
    /// `reason`, waits until its close frame has left (100 ms at most: a
    /// loaded machine may not run quinn's driver at once), and closes the
    /// endpoint. What [`Endpoint::shutdown`] does, without a fixed wait:
    /// the frame normally leaves within a fraction of a millisecond.
    pub async fn finish(&self, conn: &Connection, reason: &str) {
        conn.close_and_flush(0, reason, std::time::Duration::from_millis(100))
            .await;
        self.close();
    }

    pub async fn wait_idle(&self) {
        let clients: Vec<_> = self.clients.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for q in self.listeners.iter().chain(clients.iter()) {
            q.wait_idle().await;
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // Stop accepting; established connections live on while in use.
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn load_identity(local: &Node) -> Result<Identity, TransportError> {
    let identity = Identity::load(&local.conf.key)?;
    if let Some(configured) = local.conf.fingerprint.as_deref()
        && configured != identity.fingerprint().to_string()
    {
        tracing::warn!(
            "{} says this node's fingerprint is {configured}, but its key {} has {}; the peer will refuse \
             this node until `fingerprint = {}` is in {}",
            local.conf_file.display(),
            local.conf.key.display(),
            identity.fingerprint(),
            identity.fingerprint(),
            local.conf_file.display(),
        );
    }
    Ok(identity)
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

impl Shared {
    /// One line per address per minute (`admit::RefusalLog`).
    fn log_refusal(&self, from: SocketAddr) {
        let line = self
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .note(from.ip(), std::time::Instant::now());
        let Some(line) = line else {
            return;
        };
        let allowed: Vec<String> = self.admission.allowed().iter().map(ToString::to_string).collect();
        let more = match line {
            LogLine::Address { unlogged: 0 } => String::new(),
            LogLine::Address { unlogged } => format!(" ({unlogged} more from {} since its last line)", from.ip()),
            LogLine::Others { unlogged } => format!(" ({unlogged} more from other addresses in the last minute)"),
        };
        let all = || std::iter::once(&self.peer).chain(&self.others);
        tracing::warn!(
            "refused a connection from {from} before the handshake: not an address of {} ({} {} {}){more}",
            all().map(|p| p.name.as_str()).collect::<Vec<_>>().join(" or "),
            all().map(|p| p.conf.as_str()).collect::<Vec<_>>().join(", "),
            if self.others.is_empty() { "lists" } else { "list" },
            if allowed.is_empty() {
                "none".to_string()
            } else {
                allowed.join(", ")
            },
        );
    }

    /// A verifier accepting the pinned key of any of `peers`.
    fn pin(&self, peers: &[&PeerSpec]) -> PinnedPeer {
        PinnedPeer::any_of(peers.iter().map(|p| (p.name.clone(), p.conf.clone(), p.fingerprint)))
    }

    /// The peers a connection from `from` may be: those configured at its
    /// address (several only when nodes share one, as on a test machine).
    fn candidates(&self, from: SocketAddr) -> Vec<&PeerSpec> {
        let all = || std::iter::once(&self.peer).chain(&self.others);
        let at: Vec<&PeerSpec> = all().filter(|p| p.addrs.iter().any(|a| a.ip() == from.ip())).collect();
        if at.is_empty() { all().collect() } else { at }
    }

    fn server_config(&self, pin: Arc<PinnedPeer>) -> Result<quinn::ServerConfig, TransportError> {
        let tls = tls::server_config(&self.identity, pin).map_err(|e| TransportError::Config(e.to_string()))?;
        let quic = QuicServerConfig::try_from(tls).map_err(|e| TransportError::Config(e.to_string()))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        config.transport_config(self.transport.clone());
        Ok(config)
    }

    /// Accepts one incoming connection with a verifier of its own.
    async fn handshake(&self, incoming: quinn::Incoming) -> Result<Connection, TransportError> {
        let from = incoming.remote_address();
        let candidates = self.candidates(from);
        let pin = Arc::new(self.pin(&candidates));
        let config = self.server_config(pin.clone())?;
        let connecting = incoming
            .accept_with(Arc::new(config))
            .map_err(|e| TransportError::ConnectionLost(format!("from {from}: {e}")))?;
        match connecting.await {
            Ok(conn) => self.connection(conn, &candidates),
            Err(e) => Err(self.handshake_error(e, &pin)),
        }
    }

    /// Wraps an established connection with the identity it proved: the
    /// one of `candidates` whose pinned key it showed.
    fn connection(&self, conn: quinn::Connection, candidates: &[&PeerSpec]) -> Result<Connection, TransportError> {
        let cert = conn
            .peer_identity()
            .and_then(|any| any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok())
            .and_then(|certs| certs.first().cloned());
        let fingerprint = cert.as_ref().and_then(|c| Fingerprint::of_cert(c).ok());
        // The verifier accepted only a pinned key; check again rather than trust.
        let proved = fingerprint.and_then(|fp| candidates.iter().find(|p| p.fingerprint == Some(fp)).map(|p| (p, fp)));
        match proved {
            Some((p, fp)) => Ok(Connection::new(
                conn.clone(),
                PeerIdentity {
                    name: p.name.clone(),
                    fingerprint: fp,
                    addr: conn.remote_address(),
                },
            )),
            _ => {
                conn.close(quinn::VarInt::from_u32(1), b"peer identity not proven");
                Err(TransportError::Handshake {
                    peer: self.peer.name.clone(),
                    reason: "the handshake completed without the pinned certificate".into(),
                })
            }
        }
    }

    /// Explains a handshake that failed: our refusal of the peer's key (with
    /// both fingerprints, from the verifier), the peer's refusal of ours
    /// (with its reason), or something else.
    fn handshake_error(&self, e: quinn::ConnectionError, pin: &PinnedPeer) -> TransportError {
        if let Some(refusal) = pin.take_refusal() {
            return TransportError::PeerKeyRejected(refusal);
        }
        let peer = self.peer.name.clone();
        match e {
            // The peer's address filter (`admit`): retryable, as another
            // link may be one it accepts.
            quinn::ConnectionError::ConnectionClosed(c)
                if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED =>
            {
                TransportError::ConnectionLost(format!(
                    "{peer} refused the connection before the handshake: it accepts only this node's \
                     configured addresses (`address`, `lan`) and this connection came from another one \
                     (its log names it)"
                ))
            }
            quinn::ConnectionError::ConnectionClosed(c) if is_crypto_code(u64::from(c.error_code)) => {
                let alert = u64::from(c.error_code) - 0x100;
                let reason = tls::refusal_reason(&String::from_utf8_lossy(&c.reason)).to_string();
                if is_certificate_alert(alert) {
                    TransportError::RefusedByPeer {
                        peer,
                        ours: self.identity.fingerprint(),
                        reason: if reason.is_empty() {
                            format!("TLS alert {alert}, no reason given (see {}'s log)", self.peer.name)
                        } else {
                            reason
                        },
                    }
                } else {
                    TransportError::Handshake {
                        peer,
                        reason: format!("the peer sent TLS alert {alert}: {reason}"),
                    }
                }
            }
            quinn::ConnectionError::TransportError(t) if is_crypto_code(u64::from(t.code)) => {
                TransportError::Handshake {
                    peer,
                    reason: t.to_string(),
                }
            }
            quinn::ConnectionError::TimedOut => TransportError::ConnectionLost("handshake timed out".into()),
            other => other.into(),
        }
    }
}

/// TLS alerts that mean "your certificate is not accepted": bad_certificate
/// (42) through certificate_unknown (46), unknown_ca (48), access_denied
/// (49), certificate_required (116).
fn is_certificate_alert(alert: u64) -> bool {
    matches!(alert, 42..=46 | 48 | 49 | 116)
}

/// Resolves when the server has confirmed the handshake, or the connection
/// closed. quinn exposes no event for HANDSHAKE_DONE, so its frame counter
/// is polled; on a working link the first look usually finds it.
async fn confirmed(conn: &quinn::Connection) -> Result<(), quinn::ConnectionError> {
    let mut wait = Duration::from_micros(500);
    loop {
        if conn.stats().frame_rx.handshake_done > 0 {
            return Ok(());
        }
        if let Some(e) = conn.close_reason() {
            return Err(e);
        }
        tokio::select! {
            e = conn.closed() => return Err(e),
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_millis(20));
    }
}

async fn accept_loop(q: quinn::Endpoint, shared: Arc<Shared>, tx: mpsc::Sender<Accepted>) {
    while let Some(incoming) = q.accept().await {
        let from = incoming.remote_address();
        if !shared.admission.admits(from.ip()) {
            // Before any TLS work: a refusal costs one small packet.
            incoming.refuse();
            shared.log_refusal(from);
            continue;
        }
        let shared = shared.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let from = incoming.remote_address();
            let result = shared.handshake(incoming).await;
            match &result {
                Ok(c) => tracing::info!(
                    "peer {} connected from {from} ({})",
                    c.peer().name,
                    c.peer().fingerprint
                ),
                // The daemon's log is where an operator looks for a refused key.
                Err(e @ (TransportError::PeerKeyRejected(_) | TransportError::RefusedByPeer { .. })) => {
                    tracing::error!("refused connection from {from}: {e}")
                }
                Err(e) => tracing::warn!("handshake with {from} failed: {e}"),
            }
            let _ = tx.send(result).await;
        });
    }
}

/// Connection IDs of 8 random bytes that any process of this node accepts
/// as its own. quinn's default signs its IDs with a per-process key and
/// drops packets for IDs it did not sign, so a restarted listener would
/// ignore the old connection's packets instead of answering with the
/// stateless reset that tells the peer to reconnect.
struct RandomCids;

impl quinn::ConnectionIdGenerator for RandomCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        use ring::rand::SecureRandom;
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mut id = [0u8; 8];
        if ring::rand::SystemRandom::new().fill(&mut id).is_err() {
            // Never seen on Linux; IDs must still differ (quinn retries a
            // taken one), and are looked up, not trusted.
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let h = blake3::hash(&[n.to_le_bytes(), (t as u64).to_le_bytes()].concat());
            id.copy_from_slice(&h.as_bytes()[..8]);
        }
        quinn::ConnectionId::new(&id)
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<std::time::Duration> {
        None
    }
}
