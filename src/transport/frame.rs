//! Frames on QUIC streams: the framed halves ([`FrameSender`],
//! [`FrameReceiver`]) and, for other byte streams, [`write_frame`] and
//! [`FrameReader`]. The envelope (a 4-byte big-endian length L, one type
//! byte, L-1 payload bytes; L in 1..=[`MAX_FRAME`]) is the wire crate's:
//! headers come from `frame_header` and every byte read goes through its
//! fuzzed [`FrameDecoder`], so there is one decoder. It does not interpret
//! the type or the payload: the wire crate decodes those.
//!
//! The length is checked as soon as its four bytes are in, and a body's
//! buffer grows with the bytes that arrive, so a hostile length costs the
//! reader nothing.

use bytes::Bytes;
use hamirror_wire::frame::frame_header;
use hamirror_wire::{FrameDecoder, FrameError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::error::TransportError;

/// The largest frame length L accepted: a maximal 16 MiB chunk plus room for
/// its header. The wire crate owns the value.
pub use hamirror_wire::MAX_FRAME;

/// Received buffers a [`FrameReceiver`] takes from quinn in one call
/// (without copying them: quinn hands them over). One call per packet's
/// worth of data would cost a lock and a poll each.
const READ_CHUNKS: usize = 32;
/// Bytes a [`FrameReader`] reads at once.
const READ_BUF: usize = 256 << 10;

fn frame_error(e: FrameError) -> TransportError {
    match e {
        FrameError::TooLarge { len, max } => TransportError::FrameTooLarge { len, max },
        FrameError::Empty => TransportError::EmptyFrame,
        FrameError::Truncated { .. } => TransportError::Truncated,
    }
}

fn header(ty: u8, payload_len: usize) -> Result<[u8; 5], TransportError> {
    frame_header(ty, payload_len).map_err(frame_error)
}

/// Writes one frame. Refuses (before writing anything) a payload the peer
/// would refuse.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, ty: u8, payload: &[u8]) -> Result<(), TransportError> {
    w.write_all(&header(ty, payload.len())?).await?;
    w.write_all(payload).await?;
    Ok(())
}

/// Reads frames from any byte stream (TCP in the benchmark, buffers in
/// tests) through the wire crate's decoder.
pub struct FrameReader<R> {
    inner: R,
    decoder: FrameDecoder,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max: u32) -> Self {
        FrameReader {
            inner,
            decoder: FrameDecoder::with_max(max),
            buf: vec![0; READ_BUF],
        }
    }

    /// The next frame: `Ok(None)` when the stream ends cleanly between frames.
    pub async fn next(&mut self) -> Result<Option<(u8, Vec<u8>)>, TransportError> {
        loop {
            if let Some(f) = self.decoder.pop().map_err(frame_error)? {
                return Ok(Some((f.ty, f.payload)));
            }
            let n = self.inner.read(&mut self.buf).await?;
            if n == 0 {
                self.decoder.finish().map_err(frame_error)?;
                return Ok(None);
            }
            self.decoder.push(&self.buf[..n]);
        }
    }
}

/// The sending half of a framed QUIC stream.
#[derive(Debug)]
pub struct FrameSender {
    stream: quinn::SendStream,
}

impl FrameSender {
    pub fn new(stream: quinn::SendStream) -> Self {
        FrameSender { stream }
    }

    /// Queues one frame. Returns once the stream has accepted it (flow
    /// control may make this wait for the peer to read).
    pub async fn send(&mut self, ty: u8, payload: &[u8]) -> Result<(), TransportError> {
        write_frame(&mut self.stream, ty, payload).await
    }

    /// [`FrameSender::send`] without copying the payload: quinn keeps the
    /// buffer itself until the peer has acknowledged it. For bulk chunks
    /// (`Vec<u8>` converts for free).
    pub async fn send_bytes(&mut self, ty: u8, payload: impl Into<Bytes>) -> Result<(), TransportError> {
        let payload: Bytes = payload.into();
        let head = header(ty, payload.len())?;
        let mut chunks = [Bytes::copy_from_slice(&head), payload];
        self.stream.write_all_chunks(&mut chunks).await?;
        Ok(())
    }

    /// Writes bytes that already form whole frames, without copying them:
    /// e.g. the wire crate's `ChunkView::frame_head()` followed by the chunk
    /// data. The caller answers for the framing.
    pub async fn send_prebuilt(&mut self, parts: impl IntoIterator<Item = Bytes>) -> Result<(), TransportError> {
        let mut parts: Vec<Bytes> = parts.into_iter().collect();
        self.stream.write_all_chunks(&mut parts).await?;
        Ok(())
    }

    /// Ends the stream after the frames already sent; the peer's
    /// [`FrameReceiver::recv`] then returns `Ok(None)`. Keep the connection
    /// open until the peer has read them (see [`FrameSender::finished`]).
    pub fn finish(&mut self) -> Result<(), TransportError> {
        self.stream.finish().map_err(|_| TransportError::LocallyClosed)
    }

    /// Ends the stream and waits until the peer has received all of it (or
    /// stopped reading it).
    pub async fn finished(&mut self) -> Result<(), TransportError> {
        self.finish()?;
        match self.stream.stopped().await {
            Ok(None) => Ok(()),
            Ok(Some(code)) => Err(TransportError::StreamStopped(code.into_inner())),
            Err(quinn::StoppedError::ConnectionLost(e)) => Err(e.into()),
            Err(e) => Err(TransportError::ConnectionLost(e.to_string())),
        }
    }

    /// Abandons the stream: unsent data is dropped and the peer sees a reset
    /// with `code`.
    pub fn reset(&mut self, code: u32) {
        let _ = self.stream.reset(quinn::VarInt::from_u32(code));
    }

    /// Streams with a higher priority are sent first (the control stream
    /// over bulk chunk streams, say). Default 0.
    pub fn set_priority(&self, priority: i32) {
        let _ = self.stream.set_priority(priority);
    }

    pub fn into_inner(self) -> quinn::SendStream {
        self.stream
    }
}

/// The receiving half of a framed QUIC stream.
#[derive(Debug)]
pub struct FrameReceiver {
    stream: quinn::RecvStream,
    decoder: FrameDecoder,
    chunks: Vec<Bytes>,
}

impl FrameReceiver {
    pub fn new(stream: quinn::RecvStream) -> Self {
        FrameReceiver {
            stream,
            decoder: FrameDecoder::new(),
            chunks: vec![Bytes::new(); READ_CHUNKS],
        }
    }

    /// Lowers the largest frame accepted (never above [`MAX_FRAME`]).
    pub fn with_max(mut self, max: u32) -> Self {
        self.decoder = FrameDecoder::with_max(max);
        self
    }

    /// The next frame as (type byte, payload), or `None` when the peer
    /// finished the stream between frames.
    pub async fn recv(&mut self) -> Result<Option<(u8, Vec<u8>)>, TransportError> {
        loop {
            if let Some(f) = self.decoder.pop().map_err(frame_error)? {
                return Ok(Some((f.ty, f.payload)));
            }
            // quinn's own buffers, no copy: the decoder copies each byte
            // once, into the payload it belongs to.
            match self.stream.read_chunks(&mut self.chunks).await? {
                Some(n) => {
                    for c in &mut self.chunks[..n] {
                        self.decoder.push(c);
                        // Let quinn's buffer go now, not at the next read.
                        *c = Bytes::new();
                    }
                }
                None => {
                    self.decoder.finish().map_err(frame_error)?;
                    return Ok(None);
                }
            }
        }
    }

    /// Tells the peer to stop sending on this stream.
    pub fn stop(&mut self, code: u32) {
        let _ = self.stream.stop(quinn::VarInt::from_u32(code));
    }

    pub fn into_inner(self) -> quinn::RecvStream {
        self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().unwrap()
    }

    async fn read_all(bytes: &[u8]) -> Result<Vec<(u8, Vec<u8>)>, TransportError> {
        let mut r = FrameReader::new(bytes, MAX_FRAME);
        let mut out = Vec::new();
        while let Some(f) = r.next().await? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn frames_round_trip_and_end_cleanly() {
        rt().block_on(async {
            let mut buf = Vec::new();
            write_frame(&mut buf, 7, b"hello").await.unwrap();
            write_frame(&mut buf, 1, b"").await.unwrap();
            assert_eq!(&buf[..5], &[0, 0, 0, 6, 7]);
            assert_eq!(read_all(&buf).await.unwrap(), [(7, b"hello".to_vec()), (1, vec![])]);
        });
    }

    #[test]
    fn oversize_length_is_refused_before_the_body_is_read() {
        rt().block_on(async {
            // The writer sends only a header announcing MAX_FRAME + 1 and keeps
            // the stream open: reading the body would wait forever.
            let (mut w, r) = tokio::io::duplex(64);
            w.write_all(&(MAX_FRAME + 1).to_be_bytes()).await.unwrap();
            let err = FrameReader::new(r, MAX_FRAME).next().await.unwrap_err();
            assert!(
                matches!(err, TransportError::FrameTooLarge { len, max } if len == u64::from(MAX_FRAME) + 1 && max == MAX_FRAME),
                "{err}"
            );
            drop(w);
        });
    }

    #[test]
    fn zero_length_and_truncated_frames_are_errors() {
        rt().block_on(async {
            assert!(matches!(read_all(&[0, 0, 0, 0]).await, Err(TransportError::EmptyFrame)));
            assert!(matches!(read_all(&[0, 0]).await, Err(TransportError::Truncated)));
            assert!(matches!(
                read_all(&[0, 0, 0, 9, 1, 2]).await,
                Err(TransportError::Truncated)
            ));
        });
    }

    #[test]
    fn oversize_payload_is_not_written() {
        rt().block_on(async {
            let mut buf = Vec::new();
            let big = vec![0u8; MAX_FRAME as usize];
            let err = write_frame(&mut buf, 1, &big).await.unwrap_err();
            assert!(matches!(err, TransportError::FrameTooLarge { .. }));
            assert!(buf.is_empty());
            // Exactly at the limit is fine.
            write_frame(&mut buf, 1, &big[1..]).await.unwrap();
            assert_eq!(read_all(&buf).await.unwrap()[0].1.len(), big.len() - 1);
        });
    }
}
