//! Fuzzes one message: the first byte is the type, the rest the payload.
//! Decoding must return a value or an error, never panic; whatever decodes
//! must survive encode → frame → decode unchanged.
#![no_main]

use hamirror_wire::{ChunkDelta, ChunkView, Hello, Message, MessageDecoder, MsgType, Signature};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});
