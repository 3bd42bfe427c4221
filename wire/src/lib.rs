//! hamirror-wire: the bytes two hamirror nodes exchange, and nothing else.
//!
//! This crate owns the binary encoding ([`codec`]), the manifest entry as it
//! travels and as the index stores it ([`entry`]), and (from the transport
//! issue on) the framed, versioned messages of the conversation. It has no
//! I/O, no async runtime and no knowledge of files or sockets: decoders take
//! `&[u8]` and return a value or an error, never a panic, on any input.
//! `PROTOCOL.md` beside this crate documents every message.

pub mod codec;
pub mod entry;
pub mod heartbeat;

pub use codec::{DecodeError, Reader, Writer};
pub use entry::{ChunkRef, Entry, EntryKind, Hash};
