//! Tests for every message: a frozen byte sample each (the test fails when
//! an encoding changes: raise PROTOCOL_VERSION and update the sample
//! deliberately), round trips of the samples and of arbitrary values, and
//! decoding of arbitrary or mutated bytes without panics.

use super::*;
use crate::entry::{EntryKind, MAX_CHUNK, file_hash};
use crate::frame::{MAX_FRAME, PROTOCOL_VERSION};
use proptest::prelude::*;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn round_trip(m: &Message) -> Message {
    let frame = m.encode_frame().unwrap();
    let mut d = MessageDecoder::new();
    d.push(&frame);
    let got = d.pop().unwrap().unwrap();
    d.finish().unwrap();
    got
}

fn small_file() -> Entry {
    let chunks = vec![ChunkRef {
        hash: [0xab; 32],
        len: 3,
    }];
    Entry {
        path: b"a/b".to_vec(),
        kind: EntryKind::File,
        mode: 0o644,
        uid: 1,
        gid: 2,
        mtime_ns: -2,
        size: 3,
        file_hash: file_hash(&chunks),
        chunks,
        target: vec![],
        xattrs: vec![crate::Xattr {
            name: b"user.k".to_vec(),
            value: b"v".to_vec(),
        }],
    }
}

/// One sample per message type, with its frozen frame bytes in hex.
fn samples() -> Vec<(Message, &'static str)> {
    let pos = Position {
        index: 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
        generation: 300,
    };
    let failures = Failures {
        total: 2,
        listed: vec![Failure::new(b"x".to_vec(), ErrorCode::PermissionDenied, "no")],
    };
    vec![
        (
            Message::Hello(Hello {
                version: PROTOCOL_VERSION,
                mode: Mode::Push,
                dry_run: true,
                force: false,
                session: 7,
                from: "s1".into(),
                to: "s2".into(),
                set: "Flpd".into(),
                group: "s1".into(),
                epoch: 1,
                chunking: Chunking {
                    min: 16 << 10,
                    avg: 64 << 10,
                    max: 256 << 10,
                },
                offer: Some(pos),
                acked: None,
            }),
            "00000031010200010702733102733204466c7064027331018080018080048080\
             10010102030405060708090a0b0c0d0e0f10ac0200",
        ),
        (
            Message::HelloOk(HelloOk {
                version: PROTOCOL_VERSION,
                node: "s2".into(),
                epoch: 1,
                offer: None,
                acked: Some(pos),
            }),
            "0000001a02020273320100010102030405060708090a0b0c0d0e0f10ac02",
        ),
        (
            Message::Error(ErrorMsg::new(ErrorCode::StaleEpoch, "epoch 1 < 2")),
            "0000000e03050b65706f63682031203c2032",
        ),
        (
            Message::Goodbye(Goodbye { reason: "done".into() }),
            "000000060404646f6e65",
        ),
        (
            Message::Entries(vec![small_file()]),
            "00000059100103612f6200a4030102030379ffd0b6ce7fbe5529efceca6fb77e\
             94556e239db8872c3bd7f80aee742cbf5201abababababababababababababab\
             abababababababababababababababababab030106757365722e6b0176",
        ),
        (
            Message::FileHead(FileHead::of(&small_file())),
            "000000361103612f62a4030102030379ffd0b6ce7fbe5529efceca6fb77e9455\
             6e239db8872c3bd7f80aee742cbf52010106757365722e6b0176",
        ),
        (
            Message::ChunkList(small_file().chunks),
            "000000231201abababababababababababababababababababababababababab\
             abababababab03",
        ),
        (
            Message::Deletes(vec![b"a/b".to_vec(), b"c".to_vec()]),
            "00000008130203612f620163",
        ),
        (
            Message::OfferEnd(OfferEnd {
                generation: 5,
                listing: Listing::Delta { base: 4 },
                entries: 1,
                deletes: 2,
                bytes: 3,
                set_entries: 10,
                set_bytes: 1000,
                empty_roots: vec![b"var/spool/lpd".to_vec()],
            }),
            "00000019140501040102030ae807010d7661722f73706f6f6c2f6c7064",
        ),
        (
            Message::Need(vec![[1; 32], [2; 32]]),
            "0000004220020101010101010101010101010101010101010101010101010101\
             0101010101010202020202020202020202020202020202020202020202020202\
             020202020202",
        ),
        (
            Message::NeedEnd(NeedEnd {
                chunks: 2,
                bytes: 70_000,
                reused: 9,
            }),
            "000000062102f0a20409",
        ),
        (
            Message::Unavailable(vec![[3; 32]]),
            "0000002222010303030303030303030303030303030303030303030303030303\
             030303030303",
        ),
        (
            Message::NeedDelta(vec![DeltaRequest {
                hash: [6; 32],
                signature: Signature {
                    block_size: 64,
                    base_len: 100,
                    blocks: vec![
                        BlockSum {
                            weak: 0x0102_0304,
                            strong: [7; STRONG_LEN],
                        },
                        BlockSum {
                            weak: 0xa0b0_c0d0,
                            strong: [8; STRONG_LEN],
                        },
                    ],
                },
            }]),
            "0000003c23010606060606060606060606060606060606060606060606060606\
             0606060606064064010203040707070707070707a0b0c0d00808080808080808",
        ),
        (
            Message::Chunk(Chunk {
                session: 7,
                hash: [4; 32],
                raw_len: 5,
                compression: Compression::Zstd,
                data: vec![9, 8, 7],
            }),
            "0000002830070404040404040404040404040404040404040404040404040404\
             040404040404050103090807",
        ),
        (
            Message::ChunkDelta(ChunkDelta {
                session: 7,
                hash: [4; 32],
                raw_len: 195,
                ops: vec![
                    DeltaOp::Copy { block: 1, count: 2 },
                    DeltaOp::Literal { len: 3 },
                    DeltaOp::Copy { block: 0, count: 1 },
                ],
                compression: Compression::None,
                literals: vec![9, 8, 7],
            }),
            "0000002f31070404040404040404040404040404040404040404040404040404\
             040404040404c3010305020603050003090807",
        ),
        (
            Message::Applied(Applied {
                generation: 5,
                complete: false,
                files: 3,
                bytes: 4096,
                chunks_received: 2,
                chunks_reused: 9,
                deleted: 1,
                failures: failures.clone(),
                warnings: Failures {
                    total: 1,
                    listed: vec![Failure::new(b"y".to_vec(), ErrorCode::Unsupported, "user.k")],
                },
            }),
            "0000001d4005000380200209010201017808026e6f010101791206757365722e\
             6b",
        ),
        (
            Message::ManifestEnd(ManifestEnd {
                entries: 4,
                bytes: 15,
                failures,
            }),
            "0000000b50040f0201017808026e6f",
        ),
    ]
}

#[test]
fn every_message_type_has_a_frozen_sample() {
    let samples = samples();
    let types: Vec<MsgType> = samples.iter().map(|(m, _)| m.msg_type()).collect();
    assert_eq!(types, MsgType::ALL);
    let mut report = String::new();
    for (m, want) in &samples {
        let got = hex(&m.encode_frame().unwrap());
        if got != *want {
            report += &format!(
                "{}: encodes as\n    {got}\n  frozen sample\n    {want}\n",
                m.msg_type().name()
            );
        }
    }
    assert!(report.is_empty(), "encodings changed:\n{report}");
}

#[test]
fn every_sample_round_trips() {
    for (m, _) in samples() {
        assert_eq!(round_trip(&m), m);
        assert_eq!(Message::decode(m.msg_type() as u8, &m.payload()).unwrap(), m);
    }
}

#[test]
fn unknown_message_type_is_an_error_naming_it() {
    let err = Message::decode(0x99, &[]).unwrap_err();
    assert_eq!(err, DecodeError::UnknownType(0x99));
    assert_eq!(err.to_string(), "unknown message type 0x99");
    let mut d = MessageDecoder::new();
    d.push(&[0, 0, 0, 1, 0x7e]);
    let err = d.pop().unwrap_err();
    assert_eq!(err.code(), ErrorCode::BadFrame);
    assert!(err.to_string().contains("0x7e"), "{err}");
}

#[test]
fn trailing_bytes_and_truncation_are_refused() {
    let m = Message::Goodbye(Goodbye { reason: "x".into() });
    let mut p = m.payload();
    p.push(0);
    assert_eq!(
        Message::decode(MsgType::Goodbye as u8, &p),
        Err(DecodeError::Trailing(1))
    );
    for (m, _) in samples() {
        let p = m.payload();
        for cut in 0..p.len() {
            assert!(
                Message::decode(m.msg_type() as u8, &p[..cut]).is_err(),
                "{} cut at {cut}",
                m.msg_type().name()
            );
        }
    }
}

#[test]
fn hostile_paths_are_refused() {
    for bad in [&b"../x"[..], b"/etc/passwd", b"a/../../b", b"a\0b", b""] {
        let m = Message::Deletes(vec![bad.to_vec()]);
        assert!(
            Message::decode(MsgType::Deletes as u8, &m.payload()).is_err(),
            "{bad:?}"
        );
        let mut e = small_file();
        e.path = bad.to_vec();
        let m = Message::Entries(vec![e.clone()]);
        assert!(
            Message::decode(MsgType::Entries as u8, &m.payload()).is_err(),
            "{bad:?}"
        );
        let m = Message::FileHead(FileHead::of(&e));
        assert!(
            Message::decode(MsgType::FileHead as u8, &m.payload()).is_err(),
            "{bad:?}"
        );
    }
}

#[test]
fn chunk_sizes_are_bounded() {
    let chunk = |raw_len: u32, compression, data: Vec<u8>| {
        Message::Chunk(Chunk {
            session: 0,
            hash: [0; 32],
            raw_len,
            compression,
            data,
        })
        .payload()
    };
    let ty = MsgType::Chunk as u8;
    assert!(Message::decode(ty, &chunk(3, Compression::None, vec![1, 2, 3])).is_ok());
    assert!(Message::decode(ty, &chunk(3, Compression::None, vec![1, 2])).is_err());
    assert!(Message::decode(ty, &chunk(3, Compression::Zstd, vec![1, 2, 3])).is_err());
    assert!(Message::decode(ty, &chunk(3, Compression::Zstd, vec![])).is_err());
    assert!(Message::decode(ty, &chunk(0, Compression::None, vec![])).is_err());
    let over = MAX_CHUNK + 1;
    assert!(matches!(
        Message::decode(ty, &chunk(over, Compression::Zstd, vec![1])),
        Err(DecodeError::TooLarge { .. })
    ));
    // The largest chunk fits a frame, header and all.
    let big = Message::Chunk(Chunk {
        session: u64::MAX,
        hash: [0; 32],
        raw_len: MAX_CHUNK,
        compression: Compression::None,
        data: vec![0; MAX_CHUNK as usize],
    });
    assert_eq!(round_trip(&big), big);
    // PROTOCOL.md: the largest chunk frame has L = 16 MiB + 52 bytes.
    assert_eq!(big.encode_frame().unwrap().len(), 4 + (16 << 20) + 52);
}

#[test]
fn chunk_frame_head_plus_data_is_the_chunk_frame() {
    let c = Chunk {
        session: 3,
        hash: [5; 32],
        raw_len: 4,
        compression: Compression::None,
        data: vec![1, 2, 3, 4],
    };
    let mut parts = c.view().frame_head().unwrap();
    parts.extend_from_slice(&c.data);
    assert_eq!(parts, Message::Chunk(c.clone()).encode_frame().unwrap());
    assert_eq!(ChunkView::decode(&parts[5..]).unwrap(), c.view());
}

#[test]
fn inconsistent_reports_are_refused() {
    let end = OfferEnd {
        generation: 1,
        listing: Listing::Full,
        entries: 0,
        deletes: 1,
        bytes: 0,
        set_entries: 0,
        set_bytes: 0,
        empty_roots: vec![],
    };
    let p = Message::OfferEnd(end).payload();
    assert!(
        Message::decode(MsgType::OfferEnd as u8, &p).is_err(),
        "deletes in a full listing"
    );
    let mut failures = Failures::default();
    failures.push(Failure::new(b"a".to_vec(), ErrorCode::Io, "boom"));
    let applied = Applied {
        generation: 1,
        complete: true,
        files: 0,
        bytes: 0,
        chunks_received: 0,
        chunks_reused: 0,
        deleted: 0,
        failures,
        warnings: Failures::default(),
    };
    let p = Message::Applied(applied).payload();
    assert!(
        Message::decode(MsgType::Applied as u8, &p).is_err(),
        "complete with failures"
    );
}

#[test]
fn failure_list_is_bounded_but_counts_everything() {
    let mut f = Failures::default();
    for i in 0..MAX_FAILURES + 5 {
        f.push(Failure::new(
            format!("p{i}").into_bytes(),
            ErrorCode::Io,
            "x".repeat(MAX_REASON + 9),
        ));
    }
    assert_eq!(f.total, MAX_FAILURES + 5);
    assert_eq!(f.listed.len() as u64, MAX_FAILURES);
    assert!(f.listed.iter().all(|x| x.reason.len() == MAX_REASON));
    let m = Message::ManifestEnd(ManifestEnd {
        entries: 0,
        bytes: 0,
        failures: f,
    });
    assert_eq!(round_trip(&m), m);
    // A reason cut inside a multi-byte character stays valid UTF-8.
    let e = ErrorMsg::new(ErrorCode::Internal, "é".repeat(MAX_REASON));
    assert!(e.reason.len() <= MAX_REASON && e.reason.len() >= MAX_REASON - 1);
    assert_eq!(round_trip(&Message::Error(e.clone())), Message::Error(e));
}

#[test]
fn a_future_hello_still_shows_its_version() {
    let mut w = Writer::new();
    w.varint(2).raw(b"whatever version 2 puts here");
    assert_eq!(Hello::peek_version(&w.buf), Ok(2));
    assert!(Message::decode(MsgType::Hello as u8, &w.buf).is_err());
    let mut bad_flags = samples()[0].0.payload();
    bad_flags[2] |= 0x80;
    assert!(matches!(
        Message::decode(MsgType::Hello as u8, &bad_flags),
        Err(DecodeError::Invalid {
            what: "hello flags",
            ..
        })
    ));
}

#[test]
fn impossible_chunking_is_refused() {
    let Message::Hello(mut h) = samples()[0].0.clone() else {
        panic!("the first sample is a Hello");
    };
    for (min, avg, max) in [(0, 1, 2), (3, 2, 4), (1, 5, 4), (1, 2, MAX_CHUNK + 1)] {
        h.chunking = Chunking { min, avg, max };
        let p = Message::Hello(h.clone()).payload();
        assert!(Message::decode(MsgType::Hello as u8, &p).is_err(), "{min} {avg} {max}");
    }
}

#[test]
fn unknown_error_codes_survive_the_trip() {
    let m = Message::Error(ErrorMsg::new(ErrorCode::Other(4242), "from the future"));
    assert_eq!(round_trip(&m), m);
}

#[test]
fn oversize_messages_cannot_be_framed() {
    let m = Message::Need(vec![[0; 32]; (MAX_FRAME as usize / 32) + 1]);
    assert!(matches!(m.encode_frame(), Err(FrameError::TooLarge { .. })));
}

// ---- property tests ----

fn arb_path() -> impl Strategy<Value = Vec<u8>> {
    let comp = proptest::collection::vec(any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0), 1..6)
        .prop_filter("no . or ..", |c| c != b"." && c != b"..");
    proptest::collection::vec(comp, 1..4).prop_map(|cs| cs.join(&b'/'))
}

fn arb_hash() -> impl Strategy<Value = Hash> {
    any::<[u8; 32]>()
}

fn arb_chunks(max: usize) -> impl Strategy<Value = Vec<ChunkRef>> {
    proptest::collection::vec(
        (arb_hash(), prop_oneof![1..=100u32, Just(MAX_CHUNK)]).prop_map(|(hash, len)| ChunkRef { hash, len }),
        0..max,
    )
}

pub(crate) fn arb_entry() -> impl Strategy<Value = Entry> {
    let meta = (arb_path(), 0..=0o7777u32, any::<u32>(), any::<u32>(), any::<i64>());
    let body = prop_oneof![
        arb_chunks(4).prop_map(|c| (EntryKind::File, c, vec![])),
        Just((EntryKind::Dir, vec![], vec![])),
        proptest::collection::vec(1..=255u8, 1..20).prop_map(|t| (EntryKind::Symlink, vec![], t)),
        arb_path().prop_map(|t| (EntryKind::HardLink, vec![], t)),
        Just((EntryKind::Fifo, vec![], vec![])),
        (any::<u32>(), any::<u32>(), any::<bool>()).prop_map(|(major, minor, block)| {
            let kind = if block { EntryKind::BlockDev } else { EntryKind::CharDev };
            (kind, vec![], crate::entry::device_target(major, minor))
        }),
    ];
    let xattrs = proptest::collection::btree_map(
        "(user|security|trusted|system)\\.[a-z_]{1,12}",
        proptest::collection::vec(any::<u8>(), 0..40),
        0..4,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(n, value)| crate::Xattr {
                name: n.into_bytes(),
                value,
            })
            .collect::<Vec<_>>()
    });
    (meta, body, xattrs).prop_map(
        |((path, mode, uid, gid, mtime_ns), (kind, chunks, target), xattrs)| Entry {
            path,
            kind,
            mode,
            uid,
            gid,
            mtime_ns,
            size: chunks.iter().map(|c| u64::from(c.len)).sum(),
            file_hash: if kind == EntryKind::File {
                file_hash(&chunks)
            } else {
                [0; 32]
            },
            chunks,
            target,
            xattrs,
        },
    )
}

fn arb_name() -> impl Strategy<Value = String> {
    "\\PC{0,12}"
}

fn arb_position() -> impl Strategy<Value = Option<Position>> {
    proptest::option::of((any::<u128>(), any::<u64>()).prop_map(|(index, generation)| Position { index, generation }))
}

fn arb_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        proptest::sample::select(ErrorCode::ALL),
        (100..=u32::MAX).prop_map(ErrorCode::Other),
    ]
}

fn arb_failures() -> impl Strategy<Value = Failures> {
    let failure = (proptest::collection::vec(any::<u8>(), 0..10), arb_code(), arb_name())
        .prop_map(|(path, code, reason)| Failure { path, code, reason });
    (proptest::collection::vec(failure, 0..4), 0..3u64).prop_map(|(listed, more)| Failures {
        total: listed.len() as u64 + more,
        listed,
    })
}

fn arb_hello() -> impl Strategy<Value = Hello> {
    let mode = prop_oneof![
        Just(Mode::Push),
        Just(Mode::Pull),
        Just(Mode::Verify),
        Just(Mode::Conflicts)
    ];
    let names = (arb_name(), arb_name(), arb_name(), arb_name());
    let chunking = proptest::array::uniform3(1..=MAX_CHUNK).prop_map(|mut c| {
        c.sort();
        Chunking {
            min: c[0],
            avg: c[1],
            max: c[2],
        }
    });
    let flags = any::<(bool, bool, u64, u64)>();
    let positions = (arb_position(), arb_position());
    (any::<u32>(), mode, flags, names, chunking, positions).prop_map(
        |(version, mode, (dry_run, force, session, epoch), (from, to, set, group), chunking, (offer, acked))| Hello {
            version,
            mode,
            dry_run,
            force,
            session,
            from,
            to,
            set,
            group,
            epoch,
            chunking,
            offer,
            acked,
        },
    )
}

fn arb_chunk() -> impl Strategy<Value = Chunk> {
    (any::<u64>(), arb_hash(), 2..200u32, any::<bool>(), any::<u8>()).prop_flat_map(
        |(session, hash, raw_len, zstd, fill)| {
            let (compression, len) = if zstd {
                (Compression::Zstd, 1..raw_len as usize)
            } else {
                (Compression::None, raw_len as usize..raw_len as usize + 1)
            };
            proptest::collection::vec(Just(fill), len).prop_map(move |data| Chunk {
                session,
                hash,
                raw_len,
                compression,
                data,
            })
        },
    )
}

fn arb_signature() -> impl Strategy<Value = Signature> {
    (1..=5000u32, 1..=200u32).prop_flat_map(|(base_len, block)| {
        let block_size = block.clamp(MIN_BLOCK.min(base_len), base_len);
        let n = Signature::block_count(base_len, block_size) as usize;
        let sum = (any::<u32>(), any::<[u8; STRONG_LEN]>()).prop_map(|(weak, strong)| BlockSum { weak, strong });
        proptest::collection::vec(sum, n..=n).prop_map(move |blocks| Signature {
            block_size,
            base_len,
            blocks,
        })
    })
}

fn arb_chunk_delta() -> impl Strategy<Value = ChunkDelta> {
    let op = prop_oneof![
        (0..50u32, 1..4u32).prop_map(|(block, count)| DeltaOp::Copy { block, count }),
        (1..20u32).prop_map(|len| DeltaOp::Literal { len }),
    ];
    (
        any::<u64>(),
        arb_hash(),
        proptest::collection::vec(op, 0..6),
        0..100u32,
        any::<bool>(),
    )
        .prop_map(|(session, hash, ops, extra, zstd)| {
            let mut d = ChunkDelta {
                session,
                hash,
                raw_len: 0,
                ops,
                compression: Compression::None,
                literals: vec![],
            };
            let lit = d.literal_len() as usize;
            let produced: u64 = d
                .ops
                .iter()
                .map(|op| match *op {
                    DeltaOp::Copy { count, .. } => u64::from(count),
                    DeltaOp::Literal { len } => u64::from(len),
                })
                .sum();
            d.raw_len = produced as u32 + extra + 1;
            if zstd && lit > 1 {
                d.compression = Compression::Zstd;
                d.literals = vec![0x28; lit - 1];
            } else {
                d.literals = vec![0x55; lit];
            }
            d
        })
}

fn arb_offer_end() -> impl Strategy<Value = OfferEnd> {
    let listing = prop_oneof![
        Just(Listing::Full),
        any::<u64>().prop_map(|base| Listing::Delta { base })
    ];
    (
        any::<u64>(),
        listing,
        any::<[u64; 5]>(),
        proptest::collection::vec(arb_path(), 0..3),
    )
        .prop_map(|(generation, listing, n, empty_roots)| OfferEnd {
            generation,
            listing,
            entries: n[0],
            deletes: if listing == Listing::Full { 0 } else { n[1] },
            bytes: n[2],
            set_entries: n[3],
            set_bytes: n[4],
            empty_roots,
        })
}

fn arb_applied() -> impl Strategy<Value = Applied> {
    (any::<[u64; 6]>(), any::<bool>(), arb_failures(), arb_failures()).prop_map(|(n, complete, failures, warnings)| {
        Applied {
            generation: n[0],
            complete: complete && failures.is_empty(),
            files: n[1],
            bytes: n[2],
            chunks_received: n[3],
            chunks_reused: n[4],
            deleted: n[5],
            failures,
            warnings,
        }
    })
}

/// Any valid message of any type.
pub(crate) fn arb_message() -> impl Strategy<Value = Message> {
    let head = (arb_entry(), 1..5u64).prop_map(|(e, chunks)| {
        let mut h = FileHead::of(&e);
        h.chunks = chunks;
        h.size = chunks * 3;
        Message::FileHead(h)
    });
    prop_oneof![
        arb_hello().prop_map(Message::Hello),
        (any::<u32>(), arb_name(), any::<u64>(), arb_position(), arb_position()).prop_map(
            |(version, node, epoch, offer, acked)| Message::HelloOk(HelloOk {
                version,
                node,
                epoch,
                offer,
                acked
            })
        ),
        (arb_code(), arb_name()).prop_map(|(code, reason)| Message::Error(ErrorMsg { code, reason })),
        arb_name().prop_map(|reason| Message::Goodbye(Goodbye { reason })),
        proptest::collection::vec(arb_entry(), 0..4).prop_map(Message::Entries),
        head,
        arb_chunks(5).prop_map(Message::ChunkList),
        proptest::collection::vec(arb_path(), 0..4).prop_map(Message::Deletes),
        arb_offer_end().prop_map(Message::OfferEnd),
        proptest::collection::vec(arb_hash(), 0..4).prop_map(Message::Need),
        any::<[u64; 3]>().prop_map(|n| Message::NeedEnd(NeedEnd {
            chunks: n[0],
            bytes: n[1],
            reused: n[2]
        })),
        proptest::collection::vec(arb_hash(), 0..4).prop_map(Message::Unavailable),
        proptest::collection::vec(
            (arb_hash(), arb_signature()).prop_map(|(hash, signature)| DeltaRequest { hash, signature }),
            0..3
        )
        .prop_map(Message::NeedDelta),
        arb_chunk().prop_map(Message::Chunk),
        arb_chunk_delta().prop_map(Message::ChunkDelta),
        arb_applied().prop_map(Message::Applied),
        (any::<u64>(), any::<u64>(), arb_failures()).prop_map(|(entries, bytes, failures)| Message::ManifestEnd(
            ManifestEnd {
                entries,
                bytes,
                failures
            }
        )),
    ]
}

/// A change to an encoded payload: flip a byte, cut, or insert.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Cut(usize),
    Insert(usize, u8),
}

fn mutate(mut p: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        match *m {
            Mutation::Set(i, b) if !p.is_empty() => {
                let n = p.len();
                p[i % n] = b;
            }
            Mutation::Cut(i) => p.truncate(i % (p.len() + 1)),
            Mutation::Insert(i, b) => {
                let n = p.len();
                p.insert(i % (n + 1), b)
            }
            Mutation::Set(..) => {}
        }
    }
    p
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => any::<usize>().prop_map(Mutation::Cut),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_messages_round_trip(m in arb_message()) {
        prop_assert_eq!(round_trip(&m), m);
    }

    /// Decoding any bytes as any type returns, never panics; whatever it
    /// accepts re-encodes to something that decodes to the same message.
    #[test]
    fn decoding_arbitrary_bytes_never_panics(
        ty in prop_oneof![proptest::sample::select(MsgType::ALL).prop_map(|t| t as u8), any::<u8>()],
        data in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        if let Ok(m) = Message::decode(ty, &data) {
            prop_assert_eq!(m.msg_type() as u8, ty);
            prop_assert_eq!(round_trip(&m), m);
        }
    }

    /// The same for valid messages with a few bytes changed: these get much
    /// deeper into each decoder than random bytes do.
    #[test]
    fn decoding_mutated_messages_never_panics(
        m in arb_message(),
        muts in proptest::collection::vec(arb_mutation(), 1..4),
    ) {
        let ty = m.msg_type() as u8;
        let p = mutate(m.payload(), &muts);
        if let Ok(m) = Message::decode(ty, &p) {
            prop_assert_eq!(round_trip(&m), m);
        }
    }

    /// Whole streams of frames, cut at random points, come out as sent.
    #[test]
    fn message_streams_survive_any_split(
        msgs in proptest::collection::vec(arb_message(), 0..6),
        cut in 1usize..50,
    ) {
        let stream: Vec<u8> = msgs.iter().flat_map(|m| m.encode_frame().unwrap()).collect();
        let mut d = MessageDecoder::new();
        let mut got = vec![];
        for piece in stream.chunks(cut) {
            d.push(piece);
            while let Some(m) = d.pop().unwrap() {
                got.push(m);
            }
        }
        prop_assert!(d.finish().is_ok());
        prop_assert_eq!(got, msgs);
    }
}

/// The additions for resync: a pull hello with the opener's acknowledgement,
/// the pull answer carrying both positions, a conflict delivery hello, and
/// the `Diverged` refusal. Frozen like the samples above.
#[test]
fn frozen_resync_samples() {
    let pos = Position {
        index: 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
        generation: 300,
    };
    let Message::Hello(base) = samples()[0].0.clone() else {
        panic!("the first sample is a Hello");
    };
    let pull = Message::Hello(Hello {
        mode: Mode::Pull,
        dry_run: false,
        offer: None,
        acked: Some(pos),
        ..base.clone()
    });
    let conflicts = Message::Hello(Hello {
        mode: Mode::Conflicts,
        dry_run: false,
        offer: Some(pos),
        acked: None,
        ..base
    });
    let answer = Message::HelloOk(HelloOk {
        version: PROTOCOL_VERSION,
        node: "s1".into(),
        epoch: 1,
        offer: Some(pos),
        acked: Some(Position {
            index: 7,
            generation: 9,
        }),
    });
    let diverged = Message::Error(ErrorMsg::new(ErrorCode::Diverged, "run resync"));
    for (m, want) in [
        (
            pull,
            "00000031010201000702733102733204466c7064027331018080018080048080\
             1000010102030405060708090a0b0c0d0e0f10ac02",
        ),
        (
            conflicts,
            "00000031010203000702733102733204466c7064027331018080018080048080\
             10010102030405060708090a0b0c0d0e0f10ac0200",
        ),
        (
            answer,
            "0000002b02020273310101010203040506070809\
             0a0b0c0d0e0f10ac020100000000000000000000000000000007\
             09",
        ),
        (diverged, "0000000d03140a72756e20726573796e63"),
    ] {
        assert_eq!(hex(&m.encode_frame().unwrap()), want, "{m:?}");
        assert_eq!(round_trip(&m), m);
    }
}

/// Version 1 encodings, for a version-1 peer: the frozen samples of
/// version 1 (attributes and warnings dropped), and they decode back.
#[test]
fn version_1_encodings_are_the_frozen_version_1_samples() {
    let applied = samples()
        .into_iter()
        .find(|(m, _)| matches!(m, Message::Applied(_)))
        .unwrap()
        .0;
    for (m, v1) in [
        (
            Message::Entries(vec![small_file()]),
            "100103612f6200a4030102030379ffd0b6ce7fbe5529efceca6fb77e94556e239db8872c3bd7f80aee742cbf5201\
             abababababababababababababababababababababababababababababababab03",
        ),
        (
            Message::FileHead(FileHead::of(&small_file())),
            "1103612f62a4030102030379ffd0b6ce7fbe5529efceca6fb77e94556e239db8872c3bd7f80aee742cbf5201",
        ),
        (applied, "4005000380200209010201017808026e6f"),
    ] {
        let ty = m.msg_type() as u8;
        let payload = m.payload_for(1);
        assert_eq!(format!("{ty:02x}{}", hex(&payload)), v1, "{m:?}");
        let back = Message::decode_for(1, ty, &payload).unwrap();
        assert_ne!(back, m, "version 1 drops the attributes");
        assert!(Message::decode_for(2, ty, &payload).is_err());
        assert_eq!(back.payload_for(1), payload);
    }
    assert_eq!(crate::version_of_alpn(b"hamirror/1"), Some(1));
    assert_eq!(crate::version_of_alpn(crate::ALPN), Some(crate::PROTOCOL_VERSION));
    assert_eq!(crate::version_of_alpn(b"hamirror/9"), None);
}
