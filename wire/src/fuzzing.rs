//! The bodies of the fuzz targets in `fuzz/`, here so that a normal build
//! compiles them and `cargo test` runs every committed seed through them
//! (`tests/fuzz_seeds.rs`): cargo-fuzz needs a nightly toolchain, the
//! tests do not. Each function takes any bytes and panics only when a
//! decoder breaks its contract.

use crate::heartbeat::{Heartbeat, HeartbeatKeys, MAC_LEN};
use crate::{
    ChunkDelta, ChunkView, Counts, EntryAssembler, FrameDecoder, Hello, Message, MessageDecoder, MsgType, Signature,
};

/// One message: the first byte is the type, the rest the payload. Decoding
/// must return a value or an error; whatever decodes must survive encode →
/// frame → decode unchanged.
pub fn message(data: &[u8]) {
    let Some((&ty, payload)) = data.split_first() else {
        return;
    };
    if ty == MsgType::Hello as u8 {
        let _ = Hello::peek_version(payload);
    }
    if ty == MsgType::Chunk as u8 {
        let view = ChunkView::decode(payload);
        assert_eq!(view.is_ok(), Message::decode(ty, payload).is_ok());
    }
    if ty == MsgType::ChunkDelta as u8 {
        let d = ChunkDelta::decode(payload);
        assert_eq!(d.is_ok(), Message::decode(ty, payload).is_ok());
        // Whatever decodes cannot ask for more literal bytes than the chunk.
        if let Ok(d) = d {
            assert!(d.literal_len() <= u64::from(d.raw_len));
        }
    }
    if let Ok(m) = Message::decode(ty, payload) {
        assert_eq!(m.msg_type() as u8, ty);
        if let Message::NeedDelta(reqs) = &m {
            for r in reqs {
                let s = &r.signature;
                assert_eq!(Signature::block_count(s.base_len, s.block_size), s.blocks.len() as u64);
            }
        }
        // Re-encoding can only shrink (non-minimal varints become minimal),
        // so it always fits a frame.
        let frame = m.encode_frame().expect("a decoded message fits a frame");
        let mut d = MessageDecoder::new();
        d.push(&frame);
        assert_eq!(d.pop().expect("re-encoded message decodes"), Some(m));
        assert!(d.finish().is_ok());
    }
    // As a version-1 peer's message: decodes to a value or an error, and
    // what decodes re-encodes (as version 1) to the same value.
    if let Ok(m) = Message::decode_for(1, ty, payload) {
        let again = m.payload_for(1);
        assert_eq!(Message::decode_for(1, ty, &again).expect("re-encoded decodes"), m);
    }
}

/// A stream: the first byte sets the read size and the decoder's frame
/// limit, the rest is fed to a `FrameDecoder` and a `MessageDecoder` in
/// pieces, and every offer message goes through an `EntryAssembler`, as a
/// receiver would.
pub fn stream(data: &[u8]) {
    let Some((&cfg, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(cfg & 0x3f) + 1;
    let max = if cfg & 0x40 != 0 { 256 } else { crate::MAX_FRAME };

    let mut frames = FrameDecoder::with_max(max);
    let mut d = MessageDecoder::with_max(max);
    let mut asm = EntryAssembler::new();
    'outer: for p in stream.chunks(piece) {
        frames.push(p);
        while let Ok(Some(f)) = frames.pop() {
            assert!(f.payload.len() < max as usize);
        }
        let _ = frames.needed();
        d.push(p);
        loop {
            let r = match d.pop() {
                Ok(Some(m)) => match m {
                    Message::Entries(v) => asm.entries(v).map(|_| ()),
                    Message::Deletes(v) => asm.deletes(v).map(|_| ()),
                    Message::FileHead(h) => asm.head(h),
                    Message::ChunkList(c) => asm.chunk_list(c).map(|_| ()),
                    Message::OfferEnd(e) => asm.finish(Counts {
                        entries: e.entries,
                        deletes: e.deletes,
                        bytes: e.bytes,
                    }),
                    _ => Ok(()),
                },
                Ok(None) => break,
                Err(_) => break 'outer,
            };
            if r.is_err() {
                break 'outer;
            }
        }
    }
    let _ = d.finish();
    let _ = frames.finish();
}

/// The secret the heartbeat target's key is derived from (the seeds are
/// sealed with it).
pub const HEARTBEAT_SECRET: [u8; 32] = [0x5a; 32];

/// One heartbeat datagram, opened as received (almost everything fails the
/// MAC) and, with the input's MAC replaced by a valid one, as a holder of
/// the key could send it: the decoder behind the MAC. Whatever opens must
/// seal to the same bytes and open again.
pub fn heartbeat(data: &[u8]) {
    let keys = HeartbeatKeys::from_secrets(&[HEARTBEAT_SECRET]).expect("one key");
    let _ = Heartbeat::open(data, &keys);
    let body = &data[..data.len().saturating_sub(MAC_LEN)];
    let mut signed = body.to_vec();
    signed.extend_from_slice(&keys.signing().sign(body));
    if let Ok(hb) = Heartbeat::open(&signed, &keys) {
        let version = Heartbeat::version_of(&signed).expect("it opened");
        let again = hb.seal_as(keys.signing(), version).expect("what opened seals");
        assert_eq!(Heartbeat::open(&again, &keys).expect("resealed opens"), hb);
    }
}

/// Seeds for the heartbeat target: real heartbeats sealed with
/// [`HEARTBEAT_SECRET`], as a daemon sends them. Written to
/// `fuzz/seeds/heartbeat/` by `tests/fuzz_seeds.rs`.
pub fn heartbeat_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::heartbeat::{Claim, GroupClaim, Maintenance, NodeState, Reach, VERSION};
    let keys = HeartbeatKeys::from_secrets(&[HEARTBEAT_SECRET]).expect("one key");
    let sealed = |sender: &str, seq, state: NodeState, version| {
        Heartbeat {
            sender: sender.into(),
            incarnation: 1_733_300_000_000_000,
            seq,
            link: (seq % 2) as u8,
            state,
        }
        .seal_as(keys.signing(), version)
        .expect("fits a datagram")
    };
    let hb = |sender: &str, seq, state: NodeState| sealed(sender, seq, state, VERSION);
    let claim = |group: &str, epoch, claim| GroupClaim {
        group: group.into(),
        epoch,
        claim,
    };
    vec![
        (
            "starting",
            hb(
                "serv1",
                1,
                NodeState {
                    starting: true,
                    ..NodeState::default()
                },
            ),
        ),
        (
            "holding",
            hb(
                "serv1",
                42,
                NodeState {
                    reach: Some(Reach { up: 3, total: 3 }),
                    groups: vec![claim("serv1", 7, Claim::Held), claim("serv2", 6, Claim::Requested)],
                    ..NodeState::default()
                },
            ),
        ),
        (
            "standby",
            hb(
                "serv2",
                9000,
                NodeState {
                    standby: true,
                    observer: true,
                    reach: Some(Reach { up: 1, total: 3 }),
                    groups: vec![claim("serv2", 3, Claim::Releasing), claim("serv1", 2, Claim::Failed)],
                    ..NodeState::default()
                },
            ),
        ),
        (
            "maintenance",
            hb(
                "serv2",
                77,
                NodeState {
                    reach: Some(Reach { up: 2, total: 2 }),
                    maintenance: Maintenance {
                        on: true,
                        generation: 4,
                    },
                    groups: vec![claim("serv2", 3, Claim::Held)],
                    ..NodeState::default()
                },
            ),
        ),
        (
            "version1",
            sealed(
                "serv1",
                43,
                NodeState {
                    reach: Some(Reach { up: 3, total: 3 }),
                    groups: vec![claim("serv1", 7, Claim::Held)],
                    ..NodeState::default()
                },
                1,
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Random bytes through every target body: no panic.
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1500)) {
            message(&data);
            stream(&data);
            heartbeat(&data);
        }

        /// A heartbeat-shaped prefix makes the decoder behind the MAC work.
        #[test]
        fn random_heartbeat_bodies_never_panic(
            version in 1u8..=2,
            tail in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut data = b"HMhb".to_vec();
            data.push(version);
            data.extend_from_slice(&tail);
            data.extend_from_slice(&[0; MAC_LEN]);
            heartbeat(&data);
        }
    }
}
