//! A hostile or confused sender with a valid key, talking to the real
//! `hamirror serve`: paths outside the roots or through a symlink, bad
//! frames, oversize frames, a sender that is not the group's holder or
//! presents an old epoch, a hello that lies about who it is, a delta that
//! does not fit the base the receiver described. Each is refused with a
//! reason and nothing is written outside the set's roots.

mod common;

use std::sync::Arc;

use common::noise;
use common::pair::Pair;
use hamirror::config::Cluster;
use hamirror::transport::{Endpoint, FrameReceiver, FrameSender, TransportError};
use hamirror_wire::entry::file_hash;
use hamirror_wire::{
    ChunkRef, Chunking, Entry, EntryKind, ErrorCode, Hello, Listing, MAX_FRAME, Message, Mode, OfferEnd,
    PROTOCOL_VERSION, Position,
};

fn hello(set: &str, group: &str, from: &str, epoch: u64) -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        mode: Mode::Push,
        dry_run: false,
        force: true,
        session: 1,
        from: from.into(),
        to: "serv2".into(),
        set: set.into(),
        group: group.into(),
        epoch,
        chunking: Chunking {
            min: 16 << 10,
            avg: 64 << 10,
            max: 256 << 10,
        },
        offer: Some(Position {
            index: 7,
            generation: 1,
        }),
        acked: None,
    }
}

fn file(path: &[u8], data: &[u8]) -> Entry {
    let chunks = vec![ChunkRef {
        hash: *blake3::hash(data).as_bytes(),
        len: data.len() as u32,
    }];
    Entry {
        path: path.to_vec(),
        kind: EntryKind::File,
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime_ns: 1,
        size: data.len() as u64,
        file_hash: file_hash(&chunks),
        chunks,
        target: vec![],
        xattrs: vec![],
    }
}

async fn send(tx: &mut FrameSender, m: &Message) -> Result<(), TransportError> {
    tx.send(m.msg_type() as u8, &m.payload()).await
}

/// The next message, or the transport error that ended the stream.
async fn recv(rx: &mut FrameReceiver) -> Result<Message, String> {
    match rx.recv().await {
        Ok(Some((ty, p))) => Message::decode(ty, &p).map_err(|e| e.to_string()),
        Ok(None) => Err("stream ended".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Opens a push conversation as serv1, Fsmbd's holder, and expects it let in.
async fn holder_hello(conn: &hamirror::transport::Connection) -> (FrameSender, FrameReceiver) {
    let (mut tx, mut rx) = conn.open_control().await.unwrap();
    send(&mut tx, &Message::Hello(hello("Fsmbd", "serv1", "serv1", 1)))
        .await
        .unwrap();
    assert!(matches!(recv(&mut rx).await, Ok(Message::HelloOk(_))));
    (tx, rx)
}

/// Runs `script` as serv1 (with serv1's real key) against serv2's receiver.
fn as_serv1<F, Fut>(p: &Pair, script: F)
where
    F: FnOnce(hamirror::transport::Connection) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let cluster = Arc::new(Cluster::load(&p.cfg.dir()).unwrap());
    let (me, peer) = (
        cluster.node("serv1").unwrap().clone(),
        cluster.node("serv2").unwrap().clone(),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ep = Endpoint::client(&me, &peer).unwrap();
        let conn = ep.connect().await.unwrap();
        script(conn.clone()).await;
        conn.close(0, "done");
    });
}

fn refused_with(m: Result<Message, String>, code: ErrorCode, text: &str) {
    match m {
        Ok(Message::Error(e)) => {
            assert_eq!(e.code, code, "{}", e.reason);
            assert!(e.reason.contains(text), "{:?} lacks {text:?}", e.reason);
        }
        other => panic!("expected a {code} refusal, got {other:?}"),
    }
}

fn symlink(path: &[u8], target: &[u8]) -> Entry {
    Entry {
        kind: EntryKind::Symlink,
        target: target.to_vec(),
        size: 0,
        chunks: vec![],
        file_hash: [0; 32],
        ..file(path, b"")
    }
}

#[test]
fn an_offer_that_leads_through_its_own_symlink_or_replaces_a_root_is_refused_and_nothing_escapes() {
    let mut p = Pair::new();
    let outside = p.cfg.tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(p.dst("srv/samba")).unwrap();
    p.start_serve();
    let target = outside.as_os_str().as_encoded_bytes().to_vec();
    let offers = [
        // `evil` a symlink to a directory outside, and a file "in" it.
        (
            vec![
                symlink(b"srv/samba/evil", &target),
                file(b"srv/samba/evil/pwned", b"owned"),
            ],
            "not a directory",
        ),
        // A set's root directory replaced by a symlink, then written "in".
        (
            vec![symlink(b"srv/samba", &target), file(b"srv/samba/pwned", b"owned")],
            "root directory",
        ),
    ];
    for (entries, why) in offers {
        as_serv1(&p, |conn| async move {
            let (mut tx, mut rx) = holder_hello(&conn).await;
            let n = entries.len() as u64;
            send(&mut tx, &Message::Entries(entries)).await.unwrap();
            let end = OfferEnd {
                generation: 1,
                listing: Listing::Full,
                entries: n,
                deletes: 0,
                bytes: 5,
                set_entries: n,
                set_bytes: 5,
                empty_roots: vec![],
            };
            send(&mut tx, &Message::OfferEnd(end)).await.unwrap();
            refused_with(recv(&mut rx).await, ErrorCode::BadPath, why);
        });
    }
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written outside"
    );
    assert!(p.dst("srv/samba").is_dir() && !p.dst("srv/samba").is_symlink());
    assert_eq!(
        std::fs::read_dir(p.dst("srv/samba")).unwrap().count(),
        0,
        "nothing applied"
    );
}

#[test]
fn parent_and_absolute_paths_close_the_connection_as_bad_frames() {
    let mut p = Pair::new();
    p.start_serve();
    for bad in [&b"srv/samba/../../../escaped"[..], b"/tmp/escaped"] {
        as_serv1(&p, |conn| async move {
            let (mut tx, mut rx) = holder_hello(&conn).await;
            // The encoder writes any bytes; the receiver's decoder refuses them.
            let _ = send(&mut tx, &Message::Entries(vec![file(bad, b"x")])).await;
            let err = recv(&mut rx).await.unwrap_err();
            assert!(err.contains("code 9"), "closed as BadFrame: {err}");
            assert!(err.contains("entry path"), "{err}");
        });
    }
    assert!(!p.cfg.tmp.path().join("escaped").exists());
    assert!(!std::path::Path::new("/tmp/escaped").exists());
}

#[test]
fn a_device_number_in_any_other_spelling_closes_the_connection_as_a_bad_frame() {
    let mut p = Pair::new();
    p.start_serve();
    for bad in [&b"01:3"[..], b"1:3:0", b"/dev/sda", b""] {
        as_serv1(&p, |conn| async move {
            let (mut tx, mut rx) = holder_hello(&conn).await;
            let dev = Entry {
                kind: EntryKind::CharDev,
                target: bad.to_vec(),
                ..symlink(b"srv/samba/null", b"x")
            };
            let _ = send(&mut tx, &Message::Entries(vec![dev])).await;
            let err = recv(&mut rx).await.unwrap_err();
            assert!(err.contains("code 9"), "closed as BadFrame: {err}");
            assert!(err.contains("device number (expected `major:minor`"), "{err}");
        });
    }
    assert!(!p.dst("srv/samba/null").exists());
}

#[test]
fn an_oversize_frame_is_refused_before_its_body_is_read() {
    let mut p = Pair::new();
    p.start_serve();
    as_serv1(&p, |conn| async move {
        let (mut tx, mut rx) = conn.open_control().await.unwrap();
        let mut head = (MAX_FRAME + 1).to_be_bytes().to_vec();
        head.push(0x01);
        tx.send_prebuilt([bytes::Bytes::from(head)]).await.unwrap();
        let err = recv(&mut rx).await.unwrap_err();
        assert!(err.contains("code 10"), "closed as TooLarge: {err}");
    });
}

#[test]
fn only_the_holder_at_a_current_epoch_may_send_and_a_hello_cannot_lie() {
    let mut p = Pair::new();
    p.start_serve();
    let cases = [
        (
            hello("Fhttpd", "serv2", "serv1", 1),
            ErrorCode::NotHolder,
            "serv1 does not hold group serv2",
        ),
        (
            hello("Fsmbd", "serv1", "serv1", 0),
            ErrorCode::StaleEpoch,
            "presents epoch 0",
        ),
        (
            hello("Fsmbd", "serv1", "serv2", 1),
            ErrorCode::WrongNode,
            "the connection's key is serv1's",
        ),
        (hello("Fnope", "serv1", "serv1", 1), ErrorCode::UnknownSet, "no set"),
        (
            hello("Fsmbd", "serv2", "serv1", 1),
            ErrorCode::UnknownSet,
            "belongs to group serv1",
        ),
    ];
    for (h, code, text) in cases {
        as_serv1(&p, |conn| async move {
            let (mut tx, mut rx) = conn.open_control().await.unwrap();
            send(&mut tx, &Message::Hello(h)).await.unwrap();
            refused_with(recv(&mut rx).await, code, text);
        });
    }
    // A newer protocol version is refused readably, naming both versions.
    as_serv1(&p, |conn| async move {
        let (mut tx, mut rx) = conn.open_control().await.unwrap();
        let mut h = hello("Fsmbd", "serv1", "serv1", 1);
        h.version = 99;
        send(&mut tx, &Message::Hello(h)).await.unwrap();
        refused_with(recv(&mut rx).await, ErrorCode::VersionMismatch, "the peer version 99");
    });
    assert!(!p.dst("srv").exists(), "nothing was written");
}

#[test]
fn a_delta_that_does_not_fit_its_base_or_hash_is_refused_and_the_replica_kept() {
    use hamirror_wire::{ChunkDelta, Compression, DeltaOp};
    let mut p = Pair::new();
    let old = noise(1, 5000);
    std::fs::create_dir_all(p.src("srv/samba")).unwrap();
    std::fs::write(p.src("srv/samba/doc.txt"), &old).unwrap();
    p.start_serve();
    p.sync_ok("Fsmbd");
    let mut new = old.clone();
    new[100..110].copy_from_slice(b"0123456789");
    let cases = [
        (
            vec![DeltaOp::Copy {
                block: 10_000,
                count: 1,
            }],
            vec![],
            "does not fit its base",
        ),
        (
            vec![DeltaOp::Literal { len: 5000 }],
            old.clone(),
            "does not match its BLAKE3",
        ),
    ];
    for (ops, literals, text) in cases {
        let new = new.clone();
        as_serv1(&p, |conn| async move {
            let (mut tx, mut rx) = holder_hello(&conn).await;
            send(&mut tx, &Message::Entries(vec![file(b"srv/samba/doc.txt", &new)]))
                .await
                .unwrap();
            let end = OfferEnd {
                generation: 1,
                listing: Listing::Full,
                entries: 1,
                deletes: 0,
                bytes: new.len() as u64,
                set_entries: 1,
                set_bytes: new.len() as u64,
                empty_roots: vec![],
            };
            send(&mut tx, &Message::OfferEnd(end)).await.unwrap();
            // The replica holds an older version: it asks for a delta.
            let req = match recv(&mut rx).await {
                Ok(Message::NeedDelta(reqs)) => reqs[0].clone(),
                other => panic!("expected NeedDelta, got {other:?}"),
            };
            assert_eq!(req.hash, *blake3::hash(&new).as_bytes());
            assert_eq!(req.signature.base_len, 5000);
            assert!(matches!(recv(&mut rx).await, Ok(Message::NeedEnd(_))));
            let d = Message::ChunkDelta(ChunkDelta {
                session: 1,
                hash: req.hash,
                raw_len: new.len() as u32,
                ops,
                compression: Compression::None,
                literals,
            });
            let mut uni = conn.open_uni().await.unwrap();
            send(&mut uni, &d).await.unwrap();
            uni.finish().unwrap();
            refused_with(recv(&mut rx).await, ErrorCode::HashMismatch, text);
        });
        assert_eq!(std::fs::read(p.dst("srv/samba/doc.txt")).unwrap(), old, "{text}");
    }
}

/// The next message within `secs`, or a timeout error (a receiver that
/// keeps waiting for more of an absurd offer never answers).
async fn recv_within(rx: &mut FrameReceiver, secs: u64) -> Result<Message, String> {
    match tokio::time::timeout(std::time::Duration::from_secs(secs), recv(rx)).await {
        Ok(m) => m,
        Err(_) => Err(format!("no answer within {secs} s")),
    }
}

fn offer_end(entries: u64, bytes: u64) -> OfferEnd {
    OfferEnd {
        generation: 1,
        listing: Listing::Full,
        entries,
        deletes: 0,
        bytes,
        set_entries: entries,
        set_bytes: bytes,
        empty_roots: vec![],
    }
}

#[test]
fn an_offer_over_the_receivers_memory_budget_is_refused_while_it_arrives() {
    let mut p = Pair::new();
    // 1 MiB: about 650 entries. The real budget is half the memory.
    p.start_serve_env(&[("HAMIRROR_OFFER_MEMORY", "1M")]);
    // Many entries.
    as_serv1(&p, |conn| async move {
        let (mut tx, mut rx) = holder_hello(&conn).await;
        let mut n = 0u64;
        for b in 0..4 {
            let batch: Vec<Entry> = (0..1000)
                .map(|i| file(format!("srv/samba/{b}/{i}").as_bytes(), b"x"))
                .collect();
            n += batch.len() as u64;
            if send(&mut tx, &Message::Entries(batch)).await.is_err() {
                break;
            }
        }
        let _ = send(&mut tx, &Message::OfferEnd(offer_end(n, n))).await;
        refused_with(
            recv_within(&mut rx, 20).await,
            ErrorCode::TooLarge,
            "too large for this node",
        );
    });
    // One file announcing 2^24 chunk references: refused at its head,
    // before a single reference has to arrive.
    as_serv1(&p, |conn| async move {
        let (mut tx, mut rx) = holder_hello(&conn).await;
        let head = hamirror_wire::FileHead {
            path: b"srv/samba/huge".to_vec(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: 1,
            size: 1 << 24,
            file_hash: [0; 32],
            chunks: 1 << 24,
            xattrs: vec![],
        };
        send(&mut tx, &Message::FileHead(head)).await.unwrap();
        refused_with(
            recv_within(&mut rx, 20).await,
            ErrorCode::TooLarge,
            "16777216 chunk references",
        );
    });
    assert!(!p.dst("srv").exists(), "nothing was written");
    let log = p.serve_log();
    assert!(log.contains("too large for this node"), "the receiver logs it:\n{log}");
    // The real sender shows the receiver's reason, not a broken stream.
    for i in 0..3000 {
        common::write(&p.src(&format!("srv/samba/d{}/f{i}", i % 10)), b"x");
    }
    let (_, code, err) = p.sync("Fsmbd", &[]);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("serv2 refused: the offer is too large for this node"),
        "{err}"
    );
    assert!(!p.dst("srv").exists(), "nothing was written");
}

#[test]
fn an_offer_that_cannot_fit_the_disk_is_refused_before_any_chunk_is_asked_for() {
    let mut p = Pair::new();
    let Some(_disk) = common::SmallDisk::mount_or_skip(&p.dst("srv"), "2m") else {
        return;
    };
    std::fs::create_dir_all(p.dst("srv/samba")).unwrap();
    std::fs::write(p.dst("srv/samba/keep.txt"), b"the old replica").unwrap();
    p.start_serve();
    as_serv1(&p, |conn| async move {
        let (mut tx, mut rx) = holder_hello(&conn).await;
        // 64 MiB declared in four 16 MiB chunks, on a 2 MiB disk; plus a
        // small file that would fit alone.
        let chunks: Vec<ChunkRef> = (0..4u8)
            .map(|i| ChunkRef {
                hash: *blake3::hash(&[i]).as_bytes(),
                len: 16 << 20,
            })
            .collect();
        let big = Entry {
            size: 64 << 20,
            file_hash: file_hash(&chunks),
            chunks,
            ..file(b"srv/samba/big.bin", b"")
        };
        let small = file(b"srv/samba/keep.txt", b"a newer version");
        let bytes = big.size + small.size;
        send(&mut tx, &Message::Entries(vec![big, small])).await.unwrap();
        send(&mut tx, &Message::OfferEnd(offer_end(2, bytes))).await.unwrap();
        refused_with(recv_within(&mut rx, 20).await, ErrorCode::DiskFull, "disk full");
    });
    assert_eq!(std::fs::read(p.dst("srv/samba/keep.txt")).unwrap(), b"the old replica");
    let left: Vec<_> = std::fs::read_dir(p.dst("srv/samba"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["keep.txt"], "no temp file was made");
    let log = p.serve_log();
    assert!(log.contains("the old replica is intact"), "{log}");
}

#[test]
fn a_connection_from_an_address_not_the_peers_is_refused_before_the_handshake_and_logged_once() {
    use hamirror::transport::{Identity, tls};
    use quinn::crypto::rustls::QuicClientConfig;
    let mut p = Pair::new();
    common::write(&p.src("srv/samba/a.txt"), b"a");
    p.start_serve();
    let cluster = Cluster::load(&p.cfg.dir()).unwrap();
    let (me, peer) = (cluster.node("serv1").unwrap(), cluster.node("serv2").unwrap());
    // serv1's real key, but from 127.0.0.2: serv2 knows serv1 as 127.0.0.1.
    let identity = Identity::load(&me.conf.key).unwrap();
    let pinned = peer.conf.fingerprint.as_deref().unwrap().parse().unwrap();
    let to = std::net::SocketAddr::new(peer.conf.address, peer.conf.port);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let sock = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
        let ep = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            sock,
            Arc::new(quinn::TokioRuntime),
        )
        .unwrap();
        for _ in 0..5 {
            let pin = Arc::new(tls::PinnedPeer::new("serv2", "serv2.conf", Some(pinned)));
            let tls = tls::client_config(&identity, pin).unwrap();
            let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
            let connecting = ep.connect_with(config, to, tls::SERVER_NAME).unwrap();
            match tokio::time::timeout(std::time::Duration::from_secs(10), connecting).await {
                // Refused on its first packet: no TLS alert, no certificate.
                Ok(Err(quinn::ConnectionError::ConnectionClosed(c)))
                    if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED => {}
                other => panic!("expected a refusal before the handshake, got {other:?}"),
            }
        }
    });
    // The peer at its configured address is served as before.
    p.sync_ok("Fsmbd");
    p.assert_mirrored(&["srv/samba"]);
    let log = p.serve_log();
    assert_eq!(
        log.matches("refused a connection from 127.0.0.2").count(),
        1,
        "one line per address per minute:\n{log}"
    );
    assert!(
        log.contains("before the handshake: not an address of serv1 (serv1.conf lists 127.0.0.1)"),
        "{log}"
    );
    assert!(!log.contains("handshake with 127.0.0.2"), "{log}");
}

/// Peak memory of `hamirror serve` per offered entry, to check the offer
/// budget's per-entry estimate (`sync::limits::ENTRY_COST`). Slow; run by
/// hand: `cargo test --release --test hostile measure -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure_the_receivers_memory_per_offered_entry() {
    let mut p = Pair::new();
    p.start_serve();
    let dir = p.cfg.dir();
    let pid = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(&*dir.to_string_lossy()) && cmd.contains(" serve")
        })
        .expect("the serve process");
    let hwm = || {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kb: u64 = s
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .unwrap()
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap();
        kb * 1024
    };
    let before = hwm();
    let n: u64 = std::env::var("N").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    as_serv1(&p, |conn| async move {
        let (mut tx, mut rx) = holder_hello(&conn).await;
        let mut batch = Vec::new();
        for i in 0..n {
            batch.push(file(
                format!("srv/samba/d{}/file-{i:07}.txt", i % 100).as_bytes(),
                &i.to_le_bytes(),
            ));
            if batch.len() == 5000 {
                send(&mut tx, &Message::Entries(std::mem::take(&mut batch)))
                    .await
                    .unwrap();
            }
        }
        if !batch.is_empty() {
            send(&mut tx, &Message::Entries(batch)).await.unwrap();
        }
        send(&mut tx, &Message::OfferEnd(offer_end(n, 8 * n))).await.unwrap();
        // The first Need comes after planning and the applier's start.
        let m = recv_within(&mut rx, 600).await;
        assert!(matches!(m, Ok(Message::Need(_))), "{m:?}");
    });
    let after = hwm();
    eprintln!(
        "{n} entries: peak RSS {} -> {} MiB, {} bytes per entry (ENTRY_COST + path + chunk ref = ~{})",
        before >> 20,
        after >> 20,
        (after - before) / n,
        1536 + 35 + 128
    );
}
