//! The messages of a conversation, their type bytes and limits, and the
//! one place that maps a frame to a [`Message`] and back. Each message's
//! fields live in a submodule by phase (session, offer, transfer and its
//! deltas, report); PROTOCOL.md describes them and the order they are
//! exchanged in.
//!
//! No I/O: a transport cuts frames ([`crate::frame`]) and calls
//! [`Message::decode`]; a sync engine decides what a message means.

mod code;
mod delta;
mod offer;
mod report;
mod session;
mod transfer;

#[cfg(test)]
mod tests;

use thiserror::Error;

use crate::codec::{DecodeError, Reader, Writer};
use crate::entry::{ChunkRef, Entry, Hash};
use crate::frame::{Frame, FrameDecoder, FrameError, HEADER_LEN, seal_frame};

pub use code::ErrorCode;
pub use delta::{
    BlockSum, ChunkDelta, DeltaOp, DeltaRequest, MAX_BASE, MAX_BATCH_DELTAS, MAX_BLOCK, MAX_BLOCKS, MIN_BLOCK,
    STRONG_LEN, Signature,
};
pub use offer::{FileHead, Listing, OfferEnd};
pub use report::{Applied, Failure, Failures, ManifestEnd};
pub use session::{Chunking, ErrorMsg, Goodbye, Hello, HelloOk, Mode, Position, clip_reason};
pub use transfer::{Chunk, ChunkView, Compression, NeedEnd};

/// Longest node, set or group name, in bytes.
pub const MAX_NAME: usize = 255;
/// Longest human-readable reason, in bytes.
pub const MAX_REASON: usize = 4096;
/// Most entries in one `Entries` message.
pub const MAX_BATCH_ENTRIES: u64 = 1 << 16;
/// Most paths in one `Deletes` message.
pub const MAX_BATCH_PATHS: u64 = 1 << 16;
/// Most hashes in one `Need` or `Unavailable` message (2 MiB of hashes).
pub const MAX_BATCH_HASHES: u64 = 1 << 16;
/// Most chunk references in one `ChunkList` message (about 9 MiB).
pub const MAX_CHUNK_LIST: u64 = 1 << 18;
/// Most failures listed in one report (the total is counted beyond it).
pub const MAX_FAILURES: u64 = 1000;
/// Most roots named in `OfferEnd::empty_roots`.
pub const MAX_ROOTS: u64 = 1024;

macro_rules! msg_types {
    ($($name:ident = $byte:literal,)*) => {
        /// A message type byte. Numbers are part of the protocol.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum MsgType {
            $($name = $byte,)*
        }

        impl MsgType {
            /// Every type, in byte order.
            pub const ALL: &'static [MsgType] = &[$(MsgType::$name),*];

            /// The type of a byte; an unknown byte is an error naming it.
            pub fn from_u8(b: u8) -> Result<MsgType, DecodeError> {
                match b {
                    $($byte => Ok(MsgType::$name),)*
                    b => Err(DecodeError::UnknownType(b)),
                }
            }

            pub fn name(self) -> &'static str {
                match self {
                    $(MsgType::$name => stringify!($name),)*
                }
            }
        }
    };
}

msg_types! {
    Hello = 0x01,
    HelloOk = 0x02,
    Error = 0x03,
    Goodbye = 0x04,
    Entries = 0x10,
    FileHead = 0x11,
    ChunkList = 0x12,
    Deletes = 0x13,
    OfferEnd = 0x14,
    Need = 0x20,
    NeedEnd = 0x21,
    Unavailable = 0x22,
    NeedDelta = 0x23,
    Chunk = 0x30,
    ChunkDelta = 0x31,
    Applied = 0x40,
    ManifestEnd = 0x50,
}

/// Every message of the protocol. See PROTOCOL.md for who sends which, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Opener → peer: who, which set, which mode, where its index stands.
    Hello(Hello),
    /// Peer → opener: accepted; what it last acknowledged.
    HelloOk(HelloOk),
    /// Either way: refusal or fatal error; the conversation ends.
    Error(ErrorMsg),
    /// Opener → peer: normal end.
    Goodbye(Goodbye),
    /// Sender → receiver: changed entries (also a verify manifest's entries).
    Entries(Vec<Entry>),
    /// Sender → receiver: a file whose chunk list follows in `ChunkList`s.
    FileHead(FileHead),
    /// Sender → receiver: the next chunks of the preceding `FileHead`.
    ChunkList(Vec<ChunkRef>),
    /// Sender → receiver: deleted paths (delta offers only).
    Deletes(Vec<Vec<u8>>),
    /// Sender → receiver: end of the offer, with totals.
    OfferEnd(OfferEnd),
    /// Receiver → sender: chunk hashes to send.
    Need(Vec<Hash>),
    /// Receiver → sender: no more needs.
    NeedEnd(NeedEnd),
    /// Sender → receiver: needed chunks it can no longer provide.
    Unavailable(Vec<Hash>),
    /// Receiver → sender: chunks to send as deltas against bases it holds.
    NeedDelta(Vec<DeltaRequest>),
    /// Sender → receiver, on a uni stream: one chunk's data.
    Chunk(Chunk),
    /// Sender → receiver, on a uni stream: one chunk as a delta.
    ChunkDelta(ChunkDelta),
    /// Receiver → sender: the offer is applied.
    Applied(Applied),
    /// Peer → opener: end of a verify manifest.
    ManifestEnd(ManifestEnd),
}

impl Message {
    pub fn msg_type(&self) -> MsgType {
        match self {
            Message::Hello(_) => MsgType::Hello,
            Message::HelloOk(_) => MsgType::HelloOk,
            Message::Error(_) => MsgType::Error,
            Message::Goodbye(_) => MsgType::Goodbye,
            Message::Entries(_) => MsgType::Entries,
            Message::FileHead(_) => MsgType::FileHead,
            Message::ChunkList(_) => MsgType::ChunkList,
            Message::Deletes(_) => MsgType::Deletes,
            Message::OfferEnd(_) => MsgType::OfferEnd,
            Message::Need(_) => MsgType::Need,
            Message::NeedEnd(_) => MsgType::NeedEnd,
            Message::Unavailable(_) => MsgType::Unavailable,
            Message::NeedDelta(_) => MsgType::NeedDelta,
            Message::Chunk(_) => MsgType::Chunk,
            Message::ChunkDelta(_) => MsgType::ChunkDelta,
            Message::Applied(_) => MsgType::Applied,
            Message::ManifestEnd(_) => MsgType::ManifestEnd,
        }
    }

    /// Appends the payload (without frame header or type byte).
    pub fn encode_payload(&self, w: &mut Writer) {
        self.encode_payload_for(w, crate::PROTOCOL_VERSION);
    }

    /// Appends the payload as protocol `version` encodes it (1 or 2: only
    /// `Entries`, `FileHead` and `Applied` differ; version 1 drops the
    /// attributes and warnings).
    pub fn encode_payload_for(&self, w: &mut Writer, version: u32) {
        let v1 = version < 2;
        match self {
            Message::Hello(m) => m.encode(w),
            Message::HelloOk(m) => m.encode(w),
            Message::Error(m) => m.encode(w),
            Message::Goodbye(m) => m.encode(w),
            Message::Entries(v) => offer::put_entries(w, v, v1),
            Message::FileHead(m) => m.encode(w, v1),
            Message::ChunkList(v) => offer::put_chunk_list(w, v),
            Message::Deletes(v) => offer::put_paths(w, v),
            Message::OfferEnd(m) => m.encode(w),
            Message::Need(v) | Message::Unavailable(v) => transfer::put_hashes(w, v),
            Message::NeedEnd(m) => m.encode(w),
            Message::NeedDelta(v) => delta::put_requests(w, v),
            Message::Chunk(m) => m.view().encode(w),
            Message::ChunkDelta(m) => m.encode(w),
            Message::Applied(m) => m.encode(w, v1),
            Message::ManifestEnd(m) => m.encode(w),
        }
    }

    /// The payload alone.
    pub fn payload(&self) -> Vec<u8> {
        self.payload_for(crate::PROTOCOL_VERSION)
    }

    /// The payload alone, as protocol `version` encodes it.
    pub fn payload_for(&self, version: u32) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode_payload_for(&mut w, version);
        w.buf
    }

    /// The whole frame, ready to write to a stream. Fails only if the
    /// message is too large for a frame (the batch helpers in
    /// [`crate::batch`] never build one).
    pub fn encode_frame(&self) -> Result<Vec<u8>, FrameError> {
        let mut w = Writer::new();
        w.raw(&[0; HEADER_LEN]);
        self.encode_payload(&mut w);
        seal_frame(&mut w.buf, self.msg_type() as u8)?;
        Ok(w.buf)
    }

    /// Decodes a payload of type `ty`. Any byte string gives a message or an
    /// error, never a panic; every byte must be used.
    pub fn decode(ty: u8, payload: &[u8]) -> Result<Message, DecodeError> {
        Message::decode_for(crate::PROTOCOL_VERSION, ty, payload)
    }

    /// [`Message::decode`] as protocol `version` encodes messages.
    pub fn decode_for(version: u32, ty: u8, payload: &[u8]) -> Result<Message, DecodeError> {
        let v1 = version < 2;
        let r = &mut Reader::new(payload);
        let m = match MsgType::from_u8(ty)? {
            MsgType::Hello => Message::Hello(Hello::decode(r)?),
            MsgType::HelloOk => Message::HelloOk(HelloOk::decode(r)?),
            MsgType::Error => Message::Error(ErrorMsg::decode(r)?),
            MsgType::Goodbye => Message::Goodbye(Goodbye::decode(r)?),
            MsgType::Entries => Message::Entries(offer::get_entries(r, v1)?),
            MsgType::FileHead => Message::FileHead(FileHead::decode(r, v1)?),
            MsgType::ChunkList => Message::ChunkList(offer::get_chunk_list(r)?),
            MsgType::Deletes => Message::Deletes(offer::get_paths(r, "delete count", MAX_BATCH_PATHS)?),
            MsgType::OfferEnd => Message::OfferEnd(OfferEnd::decode(r)?),
            MsgType::Need => Message::Need(transfer::get_hashes(r)?),
            MsgType::NeedEnd => Message::NeedEnd(NeedEnd::decode(r)?),
            MsgType::Unavailable => Message::Unavailable(transfer::get_hashes(r)?),
            MsgType::NeedDelta => Message::NeedDelta(delta::get_requests(r)?),
            MsgType::Chunk => Message::Chunk(ChunkView::decode_from(r)?.to_owned()),
            MsgType::ChunkDelta => Message::ChunkDelta(ChunkDelta::decode_from(r)?),
            MsgType::Applied => Message::Applied(Applied::decode(r, v1)?),
            MsgType::ManifestEnd => Message::ManifestEnd(ManifestEnd::decode(r)?),
        };
        r.finish()?;
        Ok(m)
    }

    /// Decodes a frame cut by [`FrameDecoder`].
    pub fn from_frame(f: &Frame) -> Result<Message, DecodeError> {
        Message::decode(f.ty, &f.payload)
    }
}

/// A frame or message that could not be read. Never retryable: the
/// connection is closed with [`WireError::code`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("bad message: {0}")]
    Decode(#[from] DecodeError),
}

impl WireError {
    /// The code to send in an `Error` message or QUIC close.
    pub fn code(&self) -> ErrorCode {
        match self {
            WireError::Frame(e) => e.code(),
            WireError::Decode(DecodeError::TooLarge { .. }) => ErrorCode::TooLarge,
            WireError::Decode(_) => ErrorCode::BadFrame,
        }
    }
}

/// A [`FrameDecoder`] that decodes each frame into a [`Message`].
#[derive(Debug, Default, Clone)]
pub struct MessageDecoder {
    frames: FrameDecoder,
}

impl MessageDecoder {
    pub fn new() -> Self {
        MessageDecoder::default()
    }

    /// Frames up to `max` bytes (see [`FrameDecoder::with_max`]).
    pub fn with_max(max: u32) -> Self {
        MessageDecoder {
            frames: FrameDecoder::with_max(max),
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.frames.push(bytes);
    }

    /// The next whole message, `Ok(None)` if more bytes are needed.
    pub fn pop(&mut self) -> Result<Option<Message>, WireError> {
        match self.frames.pop()? {
            None => Ok(None),
            Some(f) => Ok(Some(Message::from_frame(&f)?)),
        }
    }

    /// See [`FrameDecoder::needed`].
    pub fn needed(&self) -> usize {
        self.frames.needed()
    }

    /// Call at the end of the stream: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), WireError> {
        Ok(self.frames.finish()?)
    }
}
