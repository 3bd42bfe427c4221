//! Frames on a byte stream: a 4-byte big-endian length L, then one type
//! byte, then L-1 payload bytes; L is 1..=[`MAX_FRAME`]. Owns reading and
//! writing that envelope over any tokio stream, and the framed halves of
//! QUIC streams ([`FrameSender`], [`FrameReceiver`]). It does not interpret
//! the type or the payload: the wire crate decodes those.
//!
//! The length is checked before any of the body is read or allocated, so
//! a hostile length costs the reader nothing.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::error::TransportError;

/// The largest frame length L accepted: a maximal 16 MiB chunk plus room for
/// its header. The wire crate owns the value.
pub use hamirror_wire::MAX_FRAME;

/// Writes one frame. Refuses (before writing anything) a payload the peer
/// would refuse.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, ty: u8, payload: &[u8]) -> Result<(), TransportError> {
    let len = payload.len() as u64 + 1;
    if len > u64::from(MAX_FRAME) {
        return Err(TransportError::FrameTooLarge { len, max: MAX_FRAME });
    }
    let mut head = [0u8; 5];
    head[..4].copy_from_slice(&(len as u32).to_be_bytes());
    head[4] = ty;
    w.write_all(&head).await?;
    w.write_all(payload).await?;
    Ok(())
}

/// Reads one frame: `Ok(None)` when the stream ends cleanly between frames.
/// A length of 0 or above `max` is refused before the body is read.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max: u32) -> Result<Option<(u8, Vec<u8>)>, TransportError> {
    let mut len_buf = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut len_buf[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(TransportError::Truncated)
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(len_buf);
    if len == 0 {
        return Err(TransportError::EmptyFrame);
    }
    if len > max {
        return Err(TransportError::FrameTooLarge { len: len.into(), max });
    }
    let ty = r.read_u8().await?;
    // Read into spare capacity: no zero-filling of up to 16 MiB first.
    let n = len as usize - 1;
    let mut payload = Vec::with_capacity(n);
    let mut body = (&mut *r).take(n as u64);
    while payload.len() < n {
        if body.read_buf(&mut payload).await? == 0 {
            return Err(TransportError::Truncated);
        }
    }
    Ok(Some((ty, payload)))
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
        let payload = payload.into();
        let len = payload.len() as u64 + 1;
        if len > u64::from(MAX_FRAME) {
            return Err(TransportError::FrameTooLarge { len, max: MAX_FRAME });
        }
        let mut head = [0u8; 5];
        head[..4].copy_from_slice(&(len as u32).to_be_bytes());
        head[4] = ty;
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
    max: u32,
}

impl FrameReceiver {
    pub fn new(stream: quinn::RecvStream) -> Self {
        FrameReceiver { stream, max: MAX_FRAME }
    }

    /// Lowers the largest frame accepted (never above [`MAX_FRAME`]).
    pub fn with_max(mut self, max: u32) -> Self {
        self.max = max.min(MAX_FRAME);
        self
    }

    /// The next frame as (type byte, payload), or `None` when the peer
    /// finished the stream between frames.
    pub async fn recv(&mut self) -> Result<Option<(u8, Vec<u8>)>, TransportError> {
        read_frame(&mut self.stream, self.max).await
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

    #[test]
    fn frames_round_trip_and_end_cleanly() {
        rt().block_on(async {
            let mut buf = Vec::new();
            write_frame(&mut buf, 7, b"hello").await.unwrap();
            write_frame(&mut buf, 1, b"").await.unwrap();
            assert_eq!(&buf[..5], &[0, 0, 0, 6, 7]);
            let mut r = &buf[..];
            assert_eq!(
                read_frame(&mut r, MAX_FRAME).await.unwrap(),
                Some((7, b"hello".to_vec()))
            );
            assert_eq!(read_frame(&mut r, MAX_FRAME).await.unwrap(), Some((1, vec![])));
            assert_eq!(read_frame(&mut r, MAX_FRAME).await.unwrap(), None);
        });
    }

    #[test]
    fn oversize_length_is_refused_before_the_body_is_read() {
        rt().block_on(async {
            // The writer sends only a header announcing MAX_FRAME + 1 and keeps
            // the stream open: reading the body would wait forever.
            let (mut w, mut r) = tokio::io::duplex(64);
            w.write_all(&(MAX_FRAME + 1).to_be_bytes()).await.unwrap();
            let err = read_frame(&mut r, MAX_FRAME).await.unwrap_err();
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
            let mut r: &[u8] = &[0, 0, 0, 0];
            assert!(matches!(
                read_frame(&mut r, MAX_FRAME).await,
                Err(TransportError::EmptyFrame)
            ));
            let mut r: &[u8] = &[0, 0];
            assert!(matches!(
                read_frame(&mut r, MAX_FRAME).await,
                Err(TransportError::Truncated)
            ));
            let mut r: &[u8] = &[0, 0, 0, 9, 1, 2];
            assert!(matches!(
                read_frame(&mut r, MAX_FRAME).await,
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
            let mut r = &buf[..];
            assert_eq!(
                read_frame(&mut r, MAX_FRAME).await.unwrap().unwrap().1.len(),
                big.len() - 1
            );
        });
    }
}
