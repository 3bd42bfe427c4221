//! The messages that open and close a conversation: `Hello`, `HelloOk`,
//! `Error` and `Goodbye`, with the index position both ends compare to make
//! a no-change pass one round trip. Pure encoding: whether a node is the
//! holder, or an epoch is stale, is decided by the caller.

use crate::codec::{DecodeError, Reader, Writer};
use crate::entry::MAX_CHUNK;
use crate::msg::code::ErrorCode;
use crate::msg::{MAX_NAME, MAX_REASON};

/// Where a sender's index stands: which index (a random id made when the
/// index was created, so a rebuilt index never matches an old ack) and
/// which generation of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    pub index: u128,
    pub generation: u64,
}

fn put_position(w: &mut Writer, p: &Option<Position>) {
    match p {
        None => {
            w.u8(0);
        }
        Some(p) => {
            w.u8(1).u128(p.index).varint(p.generation);
        }
    }
}

fn get_position(r: &mut Reader<'_>, what: &'static str) -> Result<Option<Position>, DecodeError> {
    if !r.bool(what)? {
        return Ok(None);
    }
    Ok(Some(Position {
        index: r.u128(what)?,
        generation: r.varint(what)?,
    }))
}

/// The set's content-defined chunking parameters (bytes), as the opener's
/// configuration has them. The peer uses them whenever it chunks files of
/// this set itself (verify, rebuilding its index), so hashes are comparable
/// and chunks reusable even if its own copy of the configuration differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Chunking {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Chunking {
    fn encode(&self, w: &mut Writer) {
        w.varint(self.min.into())
            .varint(self.avg.into())
            .varint(self.max.into());
    }

    fn decode(r: &mut Reader<'_>) -> Result<Chunking, DecodeError> {
        let limit = MAX_CHUNK.into();
        let c = Chunking {
            min: r.bounded("chunk min", limit)? as u32,
            avg: r.bounded("chunk avg", limit)? as u32,
            max: r.bounded("chunk max", limit)? as u32,
        };
        if c.min == 0 || c.min > c.avg || c.avg > c.max {
            return Err(DecodeError::Invalid {
                what: "chunking (needs 0 < min <= avg <= max)",
                value: c.avg.into(),
            });
        }
        Ok(c)
    }
}

/// What the opener of the conversation wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Mode {
    /// The opener sends its set to the peer (the normal sync).
    Push = 0,
    /// The peer sends its copy of the set to the opener (`resync --from`);
    /// roles swap after `HelloOk`.
    Pull = 1,
    /// The peer re-reads its replica and streams its manifest.
    Verify = 2,
    /// The opener (not the holder) delivers conflict copies to the holder:
    /// a push restricted to new paths carrying the conflict marker, never
    /// an overwrite of different content, never a delete.
    Conflicts = 3,
}

impl Mode {
    fn from_u8(v: u8) -> Result<Mode, DecodeError> {
        Ok(match v {
            0 => Mode::Push,
            1 => Mode::Pull,
            2 => Mode::Verify,
            3 => Mode::Conflicts,
            _ => {
                return Err(DecodeError::Invalid {
                    what: "mode",
                    value: v.into(),
                });
            }
        })
    }
}

const FLAG_DRY_RUN: u8 = 1;
const FLAG_FORCE: u8 = 2;

/// The opener's first message. `version` is always encoded first, so a
/// receiver can read it (see [`Hello::peek_version`]) and refuse a version
/// it doesn't speak before trying to decode the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub version: u32,
    pub mode: Mode,
    /// Plan and report, change nothing, send no chunk data.
    pub dry_run: bool,
    /// Override the mass-delete guard.
    pub force: bool,
    /// Opener-chosen id, unique among the connection's open conversations;
    /// `Chunk` messages carry it so uni streams can be routed.
    pub session: u64,
    /// The opener's node name.
    pub from: String,
    /// The node the opener means to talk to.
    pub to: String,
    pub set: String,
    pub group: String,
    /// The group epoch the opener knows.
    pub epoch: u64,
    pub chunking: Chunking,
    /// Push, Conflicts: the opener's index position it is about to offer.
    pub offer: Option<Position>,
    /// Pull, and optionally Push: the peer's index position the opener last
    /// applied (in a push the receiver uses it to tell whether it holds
    /// changes the opener does not have).
    pub acked: Option<Position>,
}

impl Hello {
    pub(crate) fn encode(&self, w: &mut Writer) {
        let flags = if self.dry_run { FLAG_DRY_RUN } else { 0 } | if self.force { FLAG_FORCE } else { 0 };
        w.varint(self.version.into())
            .u8(self.mode as u8)
            .u8(flags)
            .varint(self.session)
            .str(&self.from)
            .str(&self.to)
            .str(&self.set)
            .str(&self.group)
            .varint(self.epoch);
        self.chunking.encode(w);
        put_position(w, &self.offer);
        put_position(w, &self.acked);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Hello, DecodeError> {
        let version = r.u32("protocol version")?;
        let mode = Mode::from_u8(r.u8("mode")?)?;
        let flags = r.u8("hello flags")?;
        if flags & !(FLAG_DRY_RUN | FLAG_FORCE) != 0 {
            return Err(DecodeError::Invalid {
                what: "hello flags",
                value: flags.into(),
            });
        }
        Ok(Hello {
            version,
            mode,
            dry_run: flags & FLAG_DRY_RUN != 0,
            force: flags & FLAG_FORCE != 0,
            session: r.varint("session")?,
            from: r.str("sender node name", MAX_NAME)?.to_owned(),
            to: r.str("receiver node name", MAX_NAME)?.to_owned(),
            set: r.str("set name", MAX_NAME)?.to_owned(),
            group: r.str("group name", MAX_NAME)?.to_owned(),
            epoch: r.varint("epoch")?,
            chunking: Chunking::decode(r)?,
            offer: get_position(r, "offered position")?,
            acked: get_position(r, "acknowledged position")?,
        })
    }

    /// The protocol version at the start of a `Hello` payload, readable
    /// whatever the rest of it looks like.
    pub fn peek_version(payload: &[u8]) -> Result<u32, DecodeError> {
        Reader::new(payload).u32("protocol version")
    }
}

/// The receiver's acceptance of a `Hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloOk {
    pub version: u32,
    /// The receiver's node name.
    pub node: String,
    /// The group epoch the receiver knows (after accepting the `Hello`).
    pub epoch: u64,
    /// Pull: the receiver's index position it is about to offer.
    pub offer: Option<Position>,
    /// Push (and Pull): the opener's position the receiver last acknowledged
    /// for this set, or `None` (no replica yet, or its state is not trusted).
    /// In a push, equal to `Hello::offer` means nothing to do: the
    /// conversation is complete. In a pull it tells the opener which of its
    /// own generations the peer already holds.
    pub acked: Option<Position>,
}

impl HelloOk {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.varint(self.version.into()).str(&self.node).varint(self.epoch);
        put_position(w, &self.offer);
        put_position(w, &self.acked);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<HelloOk, DecodeError> {
        Ok(HelloOk {
            version: r.u32("protocol version")?,
            node: r.str("receiver node name", MAX_NAME)?.to_owned(),
            epoch: r.varint("epoch")?,
            offer: get_position(r, "offered position")?,
            acked: get_position(r, "acknowledged position")?,
        })
    }
}

/// Cuts `s` to at most [`MAX_REASON`] bytes on a character boundary, so any
/// message an encoder builds from a long error text stays decodable.
pub fn clip_reason(mut s: String) -> String {
    if s.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// A refusal of the `Hello`, or a fatal error later in the conversation,
/// from either side. The conversation ends after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorMsg {
    pub code: ErrorCode,
    /// For a person: what went wrong and what to do.
    pub reason: String,
}

impl ErrorMsg {
    /// The reason is clipped to [`MAX_REASON`] bytes.
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> ErrorMsg {
        ErrorMsg {
            code,
            reason: clip_reason(reason.into()),
        }
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.varint(self.code.number().into()).str(&self.reason);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<ErrorMsg, DecodeError> {
        Ok(ErrorMsg {
            code: ErrorCode::from_number(r.u32("error code")?),
            reason: r.str("error reason", MAX_REASON)?.to_owned(),
        })
    }
}

impl std::fmt::Display for ErrorMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.reason)
    }
}

/// The normal end of a conversation, from the opener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goodbye {
    pub reason: String,
}

impl Goodbye {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.str(&self.reason);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Goodbye, DecodeError> {
        Ok(Goodbye {
            reason: r.str("goodbye reason", MAX_REASON)?.to_owned(),
        })
    }
}
