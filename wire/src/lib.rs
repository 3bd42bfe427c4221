//! hamirror-wire: the bytes two hamirror nodes exchange, and nothing else.
//!
//! This crate owns the binary encoding ([`codec`]), the manifest entry as it
//! travels and as the index stores it ([`entry`]), framing and the protocol
//! constants ([`frame`]), the messages of the conversation ([`msg`]) and the
//! cutting of large offers into frame-sized messages ([`batch`]). It has no
//! I/O, no async runtime and no knowledge of files or sockets: decoders take
//! `&[u8]` and return a value or an error, never a panic, on any input.
//! `PROTOCOL.md` beside this crate documents every message and the
//! conversation.
//!
//! A transport reads a stream like this:
//!
//! ```
//! use hamirror_wire::{Goodbye, Message, MessageDecoder};
//!
//! let bytes = Message::Goodbye(Goodbye { reason: "done".into() }).encode_frame().unwrap();
//! let mut dec = MessageDecoder::new();
//! for piece in bytes.chunks(3) {
//!     dec.push(piece); // whatever the stream returned
//!     while let Some(msg) = dec.pop().unwrap() {
//!         assert_eq!(msg, Message::Goodbye(Goodbye { reason: "done".into() }));
//!     }
//! }
//! dec.finish().unwrap(); // the stream ended on a frame boundary
//! ```

pub mod batch;
pub mod codec;
pub mod entry;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod heartbeat;
pub mod msg;

pub use batch::{Counts, EntryAssembler, EntryBatcher};
pub use codec::{DecodeError, Reader, Writer};
pub use entry::{ChunkRef, Entry, EntryKind, Hash, Xattr};
pub use frame::{ALPN, Frame, FrameDecoder, FrameError, MAX_FRAME, PROTOCOL_VERSION, VERSIONS, version_of_alpn};
pub use msg::{
    Applied, BlockSum, Chunk, ChunkDelta, ChunkView, Chunking, Compression, DeltaOp, DeltaRequest, ErrorCode, ErrorMsg,
    Failure, Failures, FileHead, Goodbye, Hello, HelloOk, Listing, ManifestEnd, Message, MessageDecoder, Mode, MsgType,
    NeedEnd, OfferEnd, Position, Signature, WireError,
};
