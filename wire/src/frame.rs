//! Framing: how messages are cut out of a QUIC stream, and the constants
//! both ends must agree on before any message is read (protocol version,
//! ALPN, largest frame). A frame is a 4-byte big-endian length `L` of what
//! follows, one message-type byte, then `L - 1` payload bytes.
//!
//! This module knows nothing of message contents (see [`crate::msg`]) and
//! does no I/O: [`FrameDecoder`] is fed whatever bytes the transport read and
//! hands back whole frames; an oversize length is refused as soon as its
//! four bytes are in, before any body is buffered.

use thiserror::Error;

use crate::msg::ErrorCode;

/// The protocol version carried in `Hello`/`HelloOk`. Any change to the
/// encoding or meaning of an existing message raises it (see PROTOCOL.md).
pub const PROTOCOL_VERSION: u32 = 2;

/// The TLS ALPN protocol id of [`PROTOCOL_VERSION`]. A node that speaks
/// several versions offers one id per version, newest first.
pub const ALPN: &[u8] = b"hamirror/2";

/// Every protocol version this crate speaks with its ALPN id, newest first
/// (the order a node offers them in). Version 1 lacks extended attributes
/// (`Entry::xattrs`, `FileHead::xattrs`, `Applied::warnings`).
pub const VERSIONS: &[(u32, &[u8])] = &[(2, b"hamirror/2"), (1, b"hamirror/1")];

/// The protocol version an ALPN id stands for, if this crate speaks it.
pub fn version_of_alpn(id: &[u8]) -> Option<u32> {
    VERSIONS.iter().find(|(_, a)| *a == id).map(|(v, _)| *v)
}

/// Largest value of the length prefix (type byte + payload): a full
/// [`crate::entry::MAX_CHUNK`] of chunk data plus room for its header.
pub const MAX_FRAME: u32 = (16 << 20) + (64 << 10);

/// Bytes before the payload: the length prefix and the type byte.
pub const HEADER_LEN: usize = 5;

/// Why a frame could not be cut or built. Never retryable: the peer (or our
/// own encoder) broke the format, and the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("frame length {len} exceeds the limit of {max} bytes")]
    TooLarge { len: u64, max: u32 },
    #[error("frame length 0: a frame holds at least its type byte")]
    Empty,
    #[error("stream ended inside a frame ({buffered} bytes of it buffered)")]
    Truncated { buffered: usize },
}

impl FrameError {
    /// The code to close the connection with.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::TooLarge,
            FrameError::Empty | FrameError::Truncated { .. } => ErrorCode::BadFrame,
        }
    }
}

/// One frame: its message type byte and payload, not yet decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub ty: u8,
    pub payload: Vec<u8>,
}

/// Checks a length prefix against `max` (itself at most [`MAX_FRAME`]).
/// Returns the payload length `L - 1`.
fn check_len(len: u32, max: u32) -> Result<usize, FrameError> {
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max {
        return Err(FrameError::TooLarge { len: len.into(), max });
    }
    Ok(len as usize - 1)
}

/// Parses a 5-byte frame header into (type, payload length), refusing an
/// oversize or empty frame. For a transport that reads the header with
/// `read_exact` and then the body into a buffer of exactly that size.
pub fn parse_header(h: [u8; HEADER_LEN]) -> Result<(u8, usize), FrameError> {
    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    Ok((h[4], check_len(len, MAX_FRAME)?))
}

/// The 5-byte header of a frame with `payload_len` payload bytes.
pub fn frame_header(ty: u8, payload_len: usize) -> Result<[u8; HEADER_LEN], FrameError> {
    let len = payload_len as u64 + 1;
    if len > u64::from(MAX_FRAME) {
        return Err(FrameError::TooLarge { len, max: MAX_FRAME });
    }
    let l = (len as u32).to_be_bytes();
    Ok([l[0], l[1], l[2], l[3], ty])
}

/// A whole frame: header followed by `payload`.
pub fn encode_frame(ty: u8, payload: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&frame_header(ty, payload.len())?);
    out.extend_from_slice(payload);
    Ok(out)
}

/// Writes the header into the first [`HEADER_LEN`] bytes of `buf`, which
/// already holds a placeholder header and the payload. Lets encoders build
/// a frame in one buffer without copying the payload.
pub(crate) fn seal_frame(buf: &mut [u8], ty: u8) -> Result<(), FrameError> {
    let h = frame_header(ty, buf.len().saturating_sub(HEADER_LEN))?;
    buf[..HEADER_LEN].copy_from_slice(&h);
    Ok(())
}

/// A body grows in steps of at least this much (doubling beyond): a frame
/// announced but not sent costs at most this, whatever its length says,
/// and frames up to it — entry batches and chunk lists (~1 MiB, a little
/// more), every chunk at the default chunk sizes — are received into one
/// allocation of their exact size.
pub const BODY_STEP: usize = 2 << 20;

/// Cuts frames out of a byte stream fed in arbitrary pieces.
///
/// Feed it with [`push`](Self::push), then call [`pop`](Self::pop) until it
/// returns `Ok(None)`. Bytes are copied once, straight into the payload of
/// the frame they belong to; it holds the frame being read plus the whole
/// frames of the last push not yet popped. A bad length is found as soon as
/// its four bytes are in; the error is sticky (the frames before it are
/// still returned first) and later bytes are dropped: the caller closes
/// the connection.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    /// Header bytes of the frame being read.
    head: [u8; HEADER_LEN],
    head_len: usize,
    /// Its payload so far (once the header is complete).
    body: Vec<u8>,
    /// Its payload length, once known.
    body_len: usize,
    ready: std::collections::VecDeque<Frame>,
    error: Option<FrameError>,
    max: u32,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new()
    }
}

impl FrameDecoder {
    /// A decoder accepting frames up to [`MAX_FRAME`].
    pub fn new() -> Self {
        FrameDecoder::with_max(MAX_FRAME)
    }

    /// A decoder with a lower limit (tests, fuzzing). The protocol lets a
    /// peer send frames up to [`MAX_FRAME`] on any stream (a `ChunkList` or
    /// a big entry can pass 1 MiB), so real streams use [`Self::new`].
    /// Clamped to `1..=MAX_FRAME`.
    pub fn with_max(max: u32) -> Self {
        FrameDecoder {
            head: [0; HEADER_LEN],
            head_len: 0,
            body: Vec::new(),
            body_len: 0,
            ready: std::collections::VecDeque::new(),
            error: None,
            max: max.clamp(1, MAX_FRAME),
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.error.is_none() {
            if self.head_len < HEADER_LEN {
                let n = (HEADER_LEN - self.head_len).min(bytes.len());
                self.head[self.head_len..self.head_len + n].copy_from_slice(&bytes[..n]);
                self.head_len += n;
                bytes = &bytes[n..];
                if self.head_len >= 4 && self.head_len - n < 4 {
                    let h = &self.head;
                    match check_len(u32::from_be_bytes([h[0], h[1], h[2], h[3]]), self.max) {
                        Ok(len) => self.body_len = len,
                        Err(e) => {
                            self.error = Some(e);
                            return;
                        }
                    }
                }
                if self.head_len < HEADER_LEN {
                    continue;
                }
            }
            let want = self.body_len - self.body.len();
            let n = want.min(bytes.len());
            if self.body.capacity() - self.body.len() < n {
                // Grow with what arrives (doubling, at least BODY_STEP), not
                // with what the length announces.
                let step = BODY_STEP.max(self.body.len()).max(n);
                self.body.reserve_exact(step.min(want));
            }
            self.body.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.body.len() == self.body_len {
                let payload = std::mem::take(&mut self.body);
                self.ready.push_back(Frame {
                    ty: self.head[4],
                    payload,
                });
                self.head_len = 0;
                self.body_len = 0;
            }
        }
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed, or the
    /// error of a bad length prefix once the frames before it are out.
    pub fn pop(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(f) = self.ready.pop_front() {
            return Ok(Some(f));
        }
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(None),
        }
    }

    /// Bytes buffered and not yet returned in a frame.
    pub fn buffered(&self) -> usize {
        let ready: usize = self.ready.iter().map(|f| HEADER_LEN + f.payload.len()).sum();
        ready + self.head_len + self.body.len()
    }

    /// How many more bytes the next frame needs at least (the rest of the
    /// header, or the rest of the body); 0 if a frame can be popped.
    pub fn needed(&self) -> usize {
        if !self.ready.is_empty() {
            return 0;
        }
        if self.head_len < 4 {
            return HEADER_LEN - self.head_len;
        }
        let h = &self.head;
        let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
        (4 + len.max(1)).saturating_sub(self.head_len + self.body.len())
    }

    /// Call when the stream ends: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        match self.buffered() {
            0 => Ok(()),
            buffered => Err(FrameError::Truncated { buffered }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frame_bytes_are_frozen() {
        assert_eq!(encode_frame(0x04, b"ab").unwrap(), [0, 0, 0, 3, 4, b'a', b'b']);
        assert_eq!(encode_frame(0x7f, b"").unwrap(), [0, 0, 0, 1, 0x7f]);
        assert_eq!(ALPN, b"hamirror/2");
        assert_eq!(MAX_FRAME, 16_842_752);
    }

    #[test]
    fn oversize_length_is_refused_before_the_body_arrives() {
        let mut d = FrameDecoder::new();
        d.push(&[0x01, 0x01]);
        assert_eq!(d.pop(), Ok(None));
        d.push(&[0x00, 0x01]); // 0x01010001 > MAX_FRAME, no body yet
        assert_eq!(
            d.pop(),
            Err(FrameError::TooLarge {
                len: 0x0101_0001,
                max: MAX_FRAME
            })
        );
        let mut d = FrameDecoder::with_max(10);
        d.push(&11u32.to_be_bytes());
        assert!(matches!(d.pop(), Err(FrameError::TooLarge { len: 11, max: 10 })));
        assert_eq!(d.pop().unwrap_err().code(), ErrorCode::TooLarge);
    }

    #[test]
    fn largest_frame_is_accepted_and_one_more_byte_is_not() {
        let max = MAX_FRAME as usize;
        assert!(frame_header(1, max - 1).is_ok());
        assert!(matches!(frame_header(1, max), Err(FrameError::TooLarge { .. })));
        assert_eq!(parse_header([0, 0, 0, 0, 1]), Err(FrameError::Empty));
        let h = frame_header(9, max - 1).unwrap();
        assert_eq!(parse_header(h), Ok((9, max - 1)));
        let mut d = FrameDecoder::new();
        d.push(&h);
        assert_eq!(d.needed(), max - 1);
        d.push(&vec![7u8; max - 1]);
        let f = d.pop().unwrap().unwrap();
        assert_eq!((f.ty, f.payload.len()), (9, max - 1));
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn stream_ending_inside_a_frame_is_an_error() {
        let mut d = FrameDecoder::new();
        d.push(&[0, 0, 0, 5, 1, 2]);
        assert_eq!(d.pop(), Ok(None));
        assert_eq!(d.needed(), 3);
        assert_eq!(d.finish(), Err(FrameError::Truncated { buffered: 6 }));
        d.push(&[3, 4, 5]);
        assert_eq!(d.needed(), 0);
        assert_eq!(
            d.pop().unwrap(),
            Some(Frame {
                ty: 1,
                payload: vec![2, 3, 4, 5]
            })
        );
        assert_eq!(d.finish(), Ok(()));
        assert_eq!(d.needed(), HEADER_LEN);
    }

    #[test]
    fn a_frame_announced_but_not_sent_costs_at_most_one_step() {
        let mut d = FrameDecoder::new();
        d.push(&frame_header(1, MAX_FRAME as usize - 1).unwrap());
        d.push(&[0; 10]);
        assert!(d.body.capacity() <= BODY_STEP, "{}", d.body.capacity());
        assert_eq!(d.needed(), MAX_FRAME as usize - 11);
        // Frames up to a step arrive in one allocation.
        let mut d = FrameDecoder::new();
        let f = encode_frame(2, &vec![9; BODY_STEP - 100]).unwrap();
        let mut first = None;
        for piece in f.chunks(1200) {
            d.push(piece);
            if d.body.capacity() > 0 {
                assert_eq!(
                    *first.get_or_insert(d.body.as_ptr()),
                    d.body.as_ptr(),
                    "never reallocated"
                );
            }
        }
        assert_eq!(d.pop().unwrap().unwrap().payload.len(), BODY_STEP - 100);
    }

    #[test]
    fn frames_before_a_bad_length_come_out_then_the_error_sticks() {
        let mut d = FrameDecoder::with_max(100);
        let mut bytes = encode_frame(1, b"ok").unwrap();
        bytes.extend_from_slice(&1000u32.to_be_bytes());
        bytes.extend_from_slice(&encode_frame(2, b"never").unwrap());
        d.push(&bytes);
        assert_eq!(d.pop().unwrap().unwrap().payload, b"ok");
        assert!(matches!(d.pop(), Err(FrameError::TooLarge { len: 1000, max: 100 })));
        assert!(matches!(d.pop(), Err(FrameError::TooLarge { .. })));
    }

    proptest! {
        /// Frames cut from any split of their concatenation are the frames sent.
        #[test]
        fn frames_survive_any_split(
            frames in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..8),
            cuts in proptest::collection::vec(1usize..64, 1..40),
        ) {
            let stream: Vec<u8> = frames.iter().flat_map(|(t, p)| encode_frame(*t, p).unwrap()).collect();
            let mut d = FrameDecoder::new();
            let mut got = vec![];
            let mut rest = &stream[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = cuts[i % cuts.len()].min(rest.len());
                i += 1;
                d.push(&rest[..n]);
                rest = &rest[n..];
                while let Some(f) = d.pop().unwrap() {
                    got.push((f.ty, f.payload));
                }
            }
            prop_assert_eq!(got, frames);
            prop_assert!(d.finish().is_ok());
        }

        /// Arbitrary bytes give frames or an error, never a panic, and never
        /// a frame over the decoder's limit.
        #[test]
        fn decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400), max in 1u32..300) {
            let mut d = FrameDecoder::with_max(max);
            for piece in data.chunks(7) {
                d.push(piece);
                while let Ok(Some(f)) = d.pop() {
                    prop_assert!(f.payload.len() < max as usize);
                }
                let _ = d.needed();
            }
            let _ = d.finish();
        }
    }
}
