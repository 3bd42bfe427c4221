//! The transport over real QUIC on 127.0.0.1 (port 0): two endpoints with
//! pinned keys talk over a control stream and many parallel uni streams; a
//! wrong or missing pin is refused on both sides with a message naming both
//! fingerprints; an oversize frame is refused before its body is read; an
//! unreachable crossover address falls back to the LAN address; endpoints
//! built from a real cluster.d pin each other from the peer's NODE.conf; a
//! receiver of several peers (fan-out) accepts each by its own key; a
//! command that exits right after `Endpoint::finish` has told the peer.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hamirror::transport::{
    Endpoint, Fingerprint, Identity, MAX_FRAME, PeerSpec, TransportError, Tuning, compress_chunk, decompress_chunk,
};

const LOCALHOST: &str = "127.0.0.1:0";

fn spec(name: &str, fingerprint: Option<Fingerprint>, addrs: Vec<SocketAddr>) -> PeerSpec {
    PeerSpec {
        name: name.into(),
        conf: format!("{name}.conf"),
        fingerprint,
        addrs,
    }
}

/// Generous enough for a handshake on a loaded CI machine.
fn quick() -> Tuning {
    Tuning {
        connect_timeout: Duration::from_secs(3),
        ..Tuning::default()
    }
}

/// For the tests that wait for a silent address to time out.
fn impatient() -> Tuning {
    Tuning {
        connect_timeout: Duration::from_millis(800),
        ..Tuning::default()
    }
}

/// serv2 listens; serv1 connects. Each pins what it is given for the other.
fn pair(serv2_pins: Option<Fingerprint>, serv1_pins: Option<Fingerprint>) -> (Endpoint, Endpoint) {
    let server = Endpoint::listen(
        identity("serv2"),
        spec("serv1", serv2_pins, vec![LOCALHOST.parse().unwrap()]),
        &[LOCALHOST.parse().unwrap()],
        quick(),
    )
    .unwrap();
    let addr = server.local_addrs()[0];
    let client = Endpoint::connector(identity("serv1"), spec("serv2", serv1_pins, vec![addr]), quick()).unwrap();
    (server, client)
}

/// Identities are cached per name so both sides can know each other's key.
fn identity(name: &str) -> Identity {
    use std::sync::OnceLock;
    const NAMES: [&str; 4] = ["serv1", "serv2", "serv3", "intruder"];
    static KEYS: OnceLock<[String; 4]> = OnceLock::new();
    let keys = KEYS.get_or_init(|| NAMES.map(|n| Identity::generate(n).unwrap().to_pem()));
    let i = NAMES.iter().position(|n| *n == name).unwrap();
    Identity::from_pem(keys[i].as_bytes()).unwrap()
}

fn fp(name: &str) -> Fingerprint {
    identity(name).fingerprint()
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 10 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_peers_talk_over_a_control_stream_and_many_parallel_uni_streams() {
    let (server, client) = pair(Some(fp("serv1")), Some(fp("serv2")));
    let (to_server, from_client) = tokio::join!(client.connect(), server.accept());
    let to_server = to_server.unwrap();
    let from_client = from_client.unwrap().unwrap();
    assert_eq!(from_client.peer().name, "serv1");
    assert_eq!(from_client.peer().fingerprint, fp("serv1"));
    assert_eq!(to_server.peer().fingerprint, fp("serv2"));
    assert_eq!(to_server.peer().addr, server.local_addrs()[0]);

    // Control stream: hello, answer, and one maximal frame each way.
    let (mut tx, mut rx) = to_server.open_control().await.unwrap();
    tx.send(1, b"hello from serv1").await.unwrap();
    let (mut stx, mut srx) = within("accept_control", from_client.accept_control()).await.unwrap();
    assert_eq!(srx.recv().await.unwrap(), Some((1, b"hello from serv1".to_vec())));
    stx.send(2, b"hello from serv2").await.unwrap();
    assert_eq!(rx.recv().await.unwrap(), Some((2, b"hello from serv2".to_vec())));
    // A frame built by the caller (header, then data), handed over without a copy.
    let data = bytes::Bytes::from_static(b"chunk data");
    let head = bytes::Bytes::from(vec![0, 0, 0, 1 + 4 + 10, 0x30, 1, 2, 3, 4]);
    tx.send_prebuilt([head, data]).await.unwrap();
    tx.send_bytes(4, b"owned".to_vec()).await.unwrap();
    assert_eq!(
        srx.recv().await.unwrap(),
        Some((0x30, b"\x01\x02\x03\x04chunk data".to_vec()))
    );
    assert_eq!(srx.recv().await.unwrap(), Some((4, b"owned".to_vec())));
    let big: Vec<u8> = (0..MAX_FRAME as usize - 1).map(|i| (i % 251) as u8).collect();
    let send_big = async {
        tx.send(3, &big).await.unwrap();
        tx.finish().unwrap();
    };
    let (_, got) = tokio::join!(send_big, srx.recv());
    let (ty, payload) = got.unwrap().unwrap();
    assert_eq!((ty, payload.len()), (3, big.len()));
    assert!(payload == big);
    assert_eq!(srx.recv().await.unwrap(), None, "finish ends the stream cleanly");

    // 300 uni streams at once, each carrying its own compressed chunk.
    const STREAMS: usize = 300;
    let chunk = |i: usize| -> Vec<u8> { format!("chunk {i} ").repeat(2000 + i).into_bytes() };
    let senders = (0..STREAMS).map(|i| {
        let conn = to_server.clone();
        tokio::spawn(async move {
            let raw = chunk(i);
            let (enc, data) = compress_chunk(&raw);
            let data = data.unwrap_or(raw.clone());
            let mut s = conn.open_uni().await.unwrap();
            let mut payload = (i as u32).to_be_bytes().to_vec();
            payload.extend_from_slice(&(raw.len() as u32).to_be_bytes());
            payload.extend_from_slice(&data);
            s.send(enc as u8, &payload).await.unwrap();
            s.finished().await.unwrap();
        })
    });
    let senders: Vec<_> = senders.collect();
    let mut receivers = Vec::new();
    for _ in 0..STREAMS {
        let mut r = within("accept_uni", from_client.accept_uni()).await.unwrap();
        receivers.push(tokio::spawn(async move {
            let (ty, p) = r.recv().await.unwrap().unwrap();
            assert_eq!(r.recv().await.unwrap(), None);
            let i = u32::from_be_bytes(p[..4].try_into().unwrap()) as usize;
            let len = u32::from_be_bytes(p[4..8].try_into().unwrap()) as usize;
            let enc = hamirror::transport::Encoding::from_u8(ty).unwrap();
            assert_eq!(decompress_chunk(enc, &p[8..], len).unwrap(), chunk(i));
            i
        }));
    }
    let mut seen = Vec::new();
    for r in receivers {
        seen.push(within("uni stream", r).await.unwrap());
    }
    for s in senders {
        within("sender", s).await.unwrap();
    }
    seen.sort();
    assert_eq!(seen, (0..STREAMS).collect::<Vec<_>>());
    assert!(to_server.stats().udp_bytes_sent > big.len() as u64);
}

/// Asserts `msg` names both fingerprints, in the documented words.
fn names_both(msg: &str, presented: Fingerprint, pinned: Fingerprint) {
    assert!(msg.contains(&format!("presented {presented}")), "{msg}");
    assert!(msg.contains(&format!("pins {pinned}")), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_the_wrong_key_is_refused_on_both_sides_naming_both_fingerprints() {
    // serv2 expects serv1's key; the client presents the intruder's.
    let server = Endpoint::listen(
        identity("serv2"),
        spec("serv1", Some(fp("serv1")), vec![LOCALHOST.parse().unwrap()]),
        &[LOCALHOST.parse().unwrap()],
        quick(),
    )
    .unwrap();
    let addr = server.local_addrs()[0];
    let client = Endpoint::connector(
        identity("intruder"),
        spec("serv2", Some(fp("serv2")), vec![addr]),
        quick(),
    )
    .unwrap();
    let (c, s) = tokio::join!(client.connect(), server.accept());

    let s = s.unwrap().unwrap_err();
    assert!(matches!(s, TransportError::PeerKeyRejected(_)), "{s:?}");
    let msg = s.to_string();
    names_both(&msg, fp("intruder"), fp("serv1"));
    assert!(msg.starts_with("peer serv1 presented sha256:"), "{msg}");
    assert!(msg.contains("serv1.conf pins"), "{msg}");
    assert!(!s.retry_may_help());

    // The client learns it from the server's close reason, with both too.
    let c = c.unwrap_err();
    assert!(matches!(c, TransportError::RefusedByPeer { .. }), "{c:?}");
    names_both(&c.to_string(), fp("intruder"), fp("serv1"));
    assert!(!c.retry_may_help());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_of_several_peers_accepts_each_by_its_own_key_and_names_it() {
    // Fan-out: serv1 and serv3 may both push to serv2 (all on one address).
    let here: Vec<SocketAddr> = vec![LOCALHOST.parse().unwrap()];
    let server = Endpoint::listen_any(
        identity("serv2"),
        spec("serv1", Some(fp("serv1")), here.clone()),
        vec![spec("serv3", Some(fp("serv3")), here.clone())],
        &here,
        quick(),
    )
    .unwrap();
    let addr = server.local_addrs()[0];
    for name in ["serv3", "serv1"] {
        let client =
            Endpoint::connector(identity(name), spec("serv2", Some(fp("serv2")), vec![addr]), quick()).unwrap();
        let (c, s) = within("the handshake", async {
            tokio::join!(client.connect(), server.accept())
        })
        .await;
        c.unwrap();
        let s = s.unwrap().unwrap();
        assert_eq!((s.peer().name.as_str(), s.peer().fingerprint), (name, fp(name)));
    }
    let client = Endpoint::connector(
        identity("intruder"),
        spec("serv2", Some(fp("serv2")), vec![addr]),
        quick(),
    )
    .unwrap();
    let (c, s) = within("the refusal", async { tokio::join!(client.connect(), server.accept()) }).await;
    let s = s.unwrap().unwrap_err();
    assert!(matches!(s, TransportError::PeerKeyRejected(_)), "{s:?}");
    let msg = s.to_string();
    assert!(
        msg.contains(&format!("presented {}", fp("intruder")))
            && msg.contains("none of serv1.conf, serv3.conf pins it"),
        "{msg}"
    );
    assert!(matches!(c.unwrap_err(), TransportError::RefusedByPeer { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_the_wrong_key_is_refused_on_both_sides_naming_both_fingerprints() {
    // serv1 pins serv2's key, but an intruder answers at serv2's address.
    let server = Endpoint::listen(
        identity("intruder"),
        spec("serv1", Some(fp("serv1")), vec![LOCALHOST.parse().unwrap()]),
        &[LOCALHOST.parse().unwrap()],
        quick(),
    )
    .unwrap();
    let addr = server.local_addrs()[0];
    let client = Endpoint::connector(identity("serv1"), spec("serv2", Some(fp("serv2")), vec![addr]), quick()).unwrap();
    let (c, s) = tokio::join!(client.connect(), server.accept());

    let c = c.unwrap_err();
    assert!(matches!(c, TransportError::PeerKeyRejected(_)), "{c:?}");
    let msg = c.to_string();
    names_both(&msg, fp("intruder"), fp("serv2"));
    assert!(
        msg.contains("if serv2's key was regenerated, update its fingerprint"),
        "{msg}"
    );

    let s = s.unwrap().unwrap_err();
    assert!(matches!(s, TransportError::RefusedByPeer { .. }), "{s:?}");
    names_both(&s.to_string(), fp("intruder"), fp("serv2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_configured_fingerprint_refuses_the_connection() {
    let (server, client) = pair(None, Some(fp("serv2")));
    let (c, s) = tokio::join!(client.connect(), server.accept());
    let s = s.unwrap().unwrap_err().to_string();
    assert!(s.contains(&format!("presented {}", fp("serv1"))), "{s}");
    assert!(s.contains("serv1.conf pins no fingerprint"), "{s}");
    let c = c.unwrap_err();
    assert!(c.to_string().contains("pins no fingerprint"), "{c}");

    // And the other way round.
    let (server, client) = pair(Some(fp("serv1")), None);
    let (c, s) = tokio::join!(client.connect(), server.accept());
    let c = c.unwrap_err().to_string();
    assert!(c.contains("serv2.conf pins no fingerprint"), "{c}");
    assert!(c.contains(&format!("presented {}", fp("serv2"))), "{c}");
    assert!(matches!(s.unwrap(), Err(TransportError::RefusedByPeer { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_frame_on_a_real_stream_is_refused_before_its_body() {
    let (server, client) = pair(Some(fp("serv1")), Some(fp("serv2")));
    let (c, s) = tokio::join!(client.connect(), server.accept());
    let (c, s) = (c.unwrap(), s.unwrap().unwrap());
    let mut raw = c.open_uni().await.unwrap().into_inner();
    // A header announcing 1 GiB, and no body: reading it would hang.
    raw.write_all(&(1u32 << 30).to_be_bytes()).await.unwrap();
    raw.write_all(&[7]).await.unwrap();
    let mut r = within("accept_uni", s.accept_uni()).await.unwrap();
    let err = within("oversize recv", r.recv()).await.unwrap_err();
    assert!(
        matches!(err, TransportError::FrameTooLarge { len, max } if len == 1 << 30 && max == MAX_FRAME),
        "{err:?}"
    );
    // One byte over the limit is refused too.
    let mut raw = c.open_uni().await.unwrap().into_inner();
    raw.write_all(&(MAX_FRAME + 1).to_be_bytes()).await.unwrap();
    let mut r = within("accept_uni", s.accept_uni()).await.unwrap();
    assert!(matches!(
        within("recv", r.recv()).await,
        Err(TransportError::FrameTooLarge { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_falls_back_to_the_lan_address_when_the_crossover_is_silent() {
    let (server, _) = pair(Some(fp("serv1")), None);
    // A socket that never answers stands for a dead crossover link.
    let silent = std::net::UdpSocket::bind(LOCALHOST).unwrap();
    let crossover = silent.local_addr().unwrap();
    let lan = server.local_addrs()[0];
    let client = Endpoint::connector(
        identity("serv1"),
        spec("serv2", Some(fp("serv2")), vec![crossover, lan]),
        impatient(),
    )
    .unwrap();
    let start = Instant::now();
    let (c, s) = tokio::join!(client.connect(), server.accept());
    let c = c.unwrap();
    assert_eq!(c.peer().addr, lan);
    assert!(s.unwrap().is_ok());
    assert!(
        start.elapsed() >= impatient().connect_timeout,
        "tried the crossover first"
    );

    // With both silent, the error lists both addresses and may be retried.
    let silent2 = std::net::UdpSocket::bind(LOCALHOST).unwrap();
    let client = Endpoint::connector(
        identity("serv1"),
        spec(
            "serv2",
            Some(fp("serv2")),
            vec![crossover, silent2.local_addr().unwrap()],
        ),
        impatient(),
    )
    .unwrap();
    let e = client.connect().await.unwrap_err();
    assert!(e.retry_may_help(), "{e}");
    let msg = e.to_string();
    assert!(msg.starts_with("cannot reach serv2: "), "{msg}");
    assert!(
        msg.contains(&crossover.to_string()) && msg.contains(&silent2.local_addr().unwrap().to_string()),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connection_reports_the_peers_reason() {
    let (server, client) = pair(Some(fp("serv1")), Some(fp("serv2")));
    let (c, s) = tokio::join!(client.connect(), server.accept());
    let (c, s) = (c.unwrap(), s.unwrap().unwrap());
    s.close(9, "shutting down");
    match within("closed", c.closed()).await {
        TransportError::PeerClosed { code, reason } => assert_eq!((code, reason.as_str()), (9, "shutting down")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.open_uni().await,
        Err(TransportError::PeerClosed { code: 9, .. })
    ));
}

/// A UDP port free at the time of asking.
fn free_port() -> u16 {
    std::net::UdpSocket::bind(LOCALHOST)
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_from_cluster_config_pin_each_other_from_the_peers_node_conf() {
    let c = common::TempConfig::example();
    for (node, id) in [("serv1", identity("serv1")), ("serv2", identity("serv2"))] {
        let key = c.path(&format!("keys/{node}.pem"));
        id.save(&key, false).unwrap();
        c.set(&format!("{node}.conf"), "address", "address = 127.0.0.1");
        c.set(&format!("{node}.conf"), "port", &format!("port = {}", free_port()));
        c.set(
            &format!("{node}.conf"),
            "fingerprint",
            &format!("fingerprint = {}", id.fingerprint()),
        );
        c.append(
            &format!("{node}.conf"),
            &format!("key = keys/{node}.pem\nheartbeat_port = {}\n", free_port()),
        );
    }
    let cluster = hamirror::config::Cluster::load(&c.dir()).unwrap();
    let (serv1, serv2) = (cluster.node("serv1").unwrap(), cluster.node("serv2").unwrap());

    // serv2's LAN address (192.168.1.12) is not on this machine: it is
    // skipped with a warning, the crossover address is enough.
    let server = Endpoint::server(serv2, serv1).unwrap();
    assert_eq!(
        server.local_addrs(),
        vec![SocketAddr::new(serv2.conf.address, serv2.conf.port)]
    );
    let client = Endpoint::client(serv1, serv2).unwrap();
    assert_eq!(client.peer().conf, "serv2.conf");
    assert_eq!(client.peer().addrs.len(), 2, "crossover, then LAN");
    let (to2, from1) = tokio::join!(client.connect(), server.accept());
    assert_eq!(to2.unwrap().peer().name, "serv2");
    assert_eq!(from1.unwrap().unwrap().peer().fingerprint, fp("serv1"));

    // serv1 regenerates its key but its NODE.conf still has the old one:
    // serv2 refuses it, naming serv1.conf and both fingerprints.
    Identity::generate("serv1")
        .unwrap()
        .save(&serv1.conf.key, true)
        .unwrap();
    let client = Endpoint::client(serv1, serv2).unwrap();
    let (to2, from1) = tokio::join!(client.connect(), server.accept());
    let refused = from1.unwrap().unwrap_err().to_string();
    assert!(
        refused.contains(&format!("serv1.conf pins {}", fp("serv1"))),
        "{refused}"
    );
    assert!(refused.contains("if serv1's key was regenerated"), "{refused}");
    assert!(matches!(to2, Err(TransportError::RefusedByPeer { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_listens_on_every_link_address() {
    let server = Endpoint::listen(
        identity("serv2"),
        spec("serv1", Some(fp("serv1")), vec![LOCALHOST.parse().unwrap()]),
        &["127.0.0.1:0".parse().unwrap(), "127.0.0.2:0".parse().unwrap()],
        quick(),
    )
    .unwrap();
    let addrs = server.local_addrs();
    assert_eq!(addrs.len(), 2);
    let client = Endpoint::connector(identity("serv1"), spec("serv2", Some(fp("serv2")), vec![]), quick()).unwrap();
    for addr in addrs {
        let (c, s) = tokio::join!(client.connect_to(addr), server.accept());
        assert_eq!(c.unwrap().peer().addr, addr);
        assert!(s.unwrap().is_ok());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_from_an_address_the_server_does_not_list_is_refused_before_the_handshake() {
    // serv2 knows serv1 as 127.0.0.3; serv1 comes from 127.0.0.1.
    let server = Endpoint::listen(
        identity("serv2"),
        spec("serv1", Some(fp("serv1")), vec!["127.0.0.3:7788".parse().unwrap()]),
        &[LOCALHOST.parse().unwrap()],
        quick(),
    )
    .unwrap();
    let addr = server.local_addrs()[0];
    let client = Endpoint::connector(identity("serv1"), spec("serv2", Some(fp("serv2")), vec![addr]), quick()).unwrap();
    let start = Instant::now();
    let e = within("connect", client.connect()).await.unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("serv2 refused the connection before the handshake"),
        "{msg}"
    );
    assert!(
        start.elapsed() < quick().connect_timeout,
        "refused at once, not timed out"
    );
    // Nothing reaches accept(): no handshake was attempted.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), server.accept())
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_exits_right_after_finish_still_tells_the_peer_it_closed() {
    // A one-shot command (`hamirror sync`) ends with `Endpoint::finish`
    // and then exits: its runtime, and with it quinn's driver, is gone the
    // moment `finish` returns. The peer must learn of the close from the
    // close frame, not from its idle timeout (10 s) much later.
    let server = Endpoint::listen(
        identity("serv2"),
        spec("serv1", Some(fp("serv1")), vec![LOCALHOST.parse().unwrap()]),
        &[LOCALHOST.parse().unwrap()],
        quick(),
    )
    .unwrap();
    let addr = server.local_addrs()[0];
    let client = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client =
                Endpoint::connector(identity("serv1"), spec("serv2", Some(fp("serv2")), vec![addr]), quick()).unwrap();
            let conn = client.connect().await.unwrap();
            let (mut tx, _rx) = conn.open_control().await.unwrap();
            tx.send(1, b"bye").await.unwrap();
            client.finish(&conn, "done").await;
        });
        drop(rt);
    });
    let s = within("accept", server.accept()).await.unwrap().unwrap();
    client.join().unwrap();
    let started = std::time::Instant::now();
    let why = tokio::time::timeout(Duration::from_secs(5), s.closed())
        .await
        .expect("the peer heard nothing of the close: it would wait for its idle timeout");
    match why {
        TransportError::PeerClosed { code, reason } => assert_eq!((code, reason.as_str()), (0, "done")),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}
