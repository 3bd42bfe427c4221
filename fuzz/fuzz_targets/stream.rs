//! Fuzzes a stream: the first byte sets the read size and the decoder's
//! frame limit, the rest is fed to a `MessageDecoder` in pieces, and every
//! offer message goes through an `EntryAssembler`, as a receiver would.
#![no_main]

use hamirror_wire::{Counts, EntryAssembler, FrameDecoder, Message, MessageDecoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cfg, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(cfg & 0x3f) + 1;
    let max = if cfg & 0x40 != 0 { 256 } else { hamirror_wire::MAX_FRAME };

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
});
