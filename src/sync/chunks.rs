//! Chunk data in both directions.
//!
//! Receiving: chunk streams (unidirectional, opened by the sender) carry
//! `Chunk` and `ChunkDelta` frames that name their conversation. A
//! [`Router`] accepts every
//! chunk stream of a connection and hands each chunk to the conversation
//! that registered its session; a full conversation inbox stops reading
//! that stream, so QUIC flow control slows the sender instead of memory
//! growing. Anything but chunk data on a chunk stream, or a frame that does
//! not decode, closes the connection with the reason.
//!
//! Sending: [`ChunkPump`] reads the asked-for chunks from the set's files
//! on a blocking thread (verifying each against its hash — the file may
//! have changed since the scan); a chunk asked for with a signature goes as
//! a delta against it when that is smaller, every other one compressed when
//! that shrinks it; a few parallel chunk streams carry them.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hamirror_wire::{Chunk, ChunkDelta, ChunkView, Compression, ErrorCode, Hash, Message, MsgType, Signature};
use rayon::prelude::*;
use tokio::sync::mpsc;

use crate::delta;
use crate::index::ChunkLocation;
use crate::transport::{Connection, compress_chunk};

/// Chunks buffered per conversation before its streams are paused.
const INBOX: usize = 64;
/// And bytes of their frames: 64 incompressible 256 KiB chunks would be
/// 16 MiB (issue 17: 64 MiB for the whole receiver). A chunk larger than
/// this alone still passes.
const INBOX_BYTES: usize = 4 << 20;
/// Parallel chunk streams per conversation.
pub(crate) const STREAMS: usize = 4;
/// Chunks read, hashed and compressed together on the pool.
const BATCH: usize = 32;

/// Chunk data for a conversation: a whole chunk or a delta.
#[derive(Debug)]
pub(crate) enum Incoming {
    Chunk(Chunk),
    Delta(ChunkDelta),
}

impl Incoming {
    fn session(&self) -> u64 {
        match self {
            Incoming::Chunk(c) => c.session,
            Incoming::Delta(d) => d.session,
        }
    }

    /// The raw length of the chunk it delivers.
    pub(crate) fn raw_len(&self) -> u32 {
        match self {
            Incoming::Chunk(c) => c.raw_len,
            Incoming::Delta(d) => d.raw_len,
        }
    }

    /// Bytes it holds buffered, as counted against [`INBOX_BYTES`].
    fn buffered(&self) -> usize {
        match self {
            Incoming::Chunk(c) => c.data.len(),
            Incoming::Delta(d) => d.literals.len() + d.ops.len() * 16,
        }
        .min(INBOX_BYTES)
    }
}

/// A conversation's chunks: at most [`INBOX`] of them and [`INBOX_BYTES`]
/// of their data wait here; the streams feeding it pause meanwhile.
pub(crate) struct Inbox {
    rx: mpsc::Receiver<Incoming>,
    room: Arc<tokio::sync::Semaphore>,
}

impl Inbox {
    /// The next chunk; `None` once no stream can deliver any more.
    pub(crate) async fn recv(&mut self) -> Option<Incoming> {
        let c = self.rx.recv().await?;
        self.room.add_permits(c.buffered());
        Some(c)
    }

    /// The next chunk if one is waiting.
    pub(crate) fn try_recv(&mut self) -> Option<Incoming> {
        let c = self.rx.try_recv().ok()?;
        self.room.add_permits(c.buffered());
        Some(c)
    }
}

/// Where a stream hands the chunks of one conversation.
#[derive(Clone)]
struct InboxTx {
    tx: mpsc::Sender<Incoming>,
    room: Arc<tokio::sync::Semaphore>,
}

impl InboxTx {
    /// Waits for room, then queues `c`. Fails when the conversation ended.
    async fn send(&self, c: Incoming) -> Result<(), ()> {
        let n = u32::try_from(c.buffered()).map_err(|_| ())?;
        self.room.acquire_many(n).await.map_err(|_| ())?.forget();
        self.tx.send(c).await.map_err(|_| ())
    }
}

type Inboxes = Arc<Mutex<HashMap<u64, InboxTx>>>;

/// Routes incoming chunk streams to conversations by session id.
#[derive(Clone, Default)]
pub struct Router {
    inboxes: Inboxes,
}

impl Router {
    /// Starts accepting chunk streams on `conn` (until it closes).
    pub fn spawn(conn: &Connection) -> Router {
        let router = Router::default();
        let (inboxes, conn) = (router.inboxes.clone(), conn.clone());
        tokio::spawn(async move {
            while let Ok(stream) = conn.accept_uni().await {
                tokio::spawn(route_stream(conn.clone(), stream, inboxes.clone()));
            }
        });
        router
    }

    /// The inbox of a new conversation.
    pub(crate) fn register(&self, session: u64) -> Option<Inbox> {
        let mut map = self.inboxes.lock().unwrap_or_else(|p| p.into_inner());
        if map.contains_key(&session) {
            return None;
        }
        let (tx, rx) = mpsc::channel(INBOX);
        let room = Arc::new(tokio::sync::Semaphore::new(INBOX_BYTES));
        map.insert(session, InboxTx { tx, room: room.clone() });
        Some(Inbox { rx, room })
    }

    pub(crate) fn unregister(&self, session: u64) {
        self.inboxes.lock().unwrap_or_else(|p| p.into_inner()).remove(&session);
    }
}

async fn route_stream(conn: Connection, mut stream: crate::transport::FrameReceiver, inboxes: Inboxes) {
    loop {
        let (ty, payload) = match stream.recv().await {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                super::control::close_on_bad_frame(&conn, &e);
                return;
            }
        };
        let decoded = if ty == MsgType::Chunk as u8 {
            ChunkView::decode(&payload).map(|v| Incoming::Chunk(v.to_owned()))
        } else if ty == MsgType::ChunkDelta as u8 {
            ChunkDelta::decode(&payload).map(Incoming::Delta)
        } else {
            conn.close(
                ErrorCode::Protocol.number(),
                &format!("message type {ty:#04x} on a chunk stream"),
            );
            return;
        };
        let chunk = match decoded {
            Ok(c) => c,
            Err(e) => {
                conn.close(ErrorCode::BadFrame.number(), &format!("bad chunk frame: {e}"));
                return;
            }
        };
        let inbox = inboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&chunk.session())
            .cloned();
        match inbox {
            Some(tx) => {
                if tx.send(chunk).await.is_err() {
                    return; // the conversation ended; drop the rest
                }
            }
            None => {
                stream.stop(ErrorCode::Protocol.number());
                return;
            }
        }
    }
}

/// One asked-for chunk: where the sender holds it.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub hash: Hash,
    pub len: u32,
    pub at: Option<ChunkLocation>,
    /// The signature of the receiver's base, when it asked for a delta.
    pub signature: Option<Box<Signature>>,
}

/// What the pump reports back besides the data it sent.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PumpStats {
    pub chunks: u64,
    pub raw_bytes: u64,
    pub sent_bytes: u64,
    /// Chunks that went as deltas, their raw bytes and their frames' bytes
    /// (included in the totals above).
    pub deltas: u64,
    pub delta_raw_bytes: u64,
    pub delta_sent_bytes: u64,
}

/// One chunk ready to go: its frame in two pieces (header and data, so a
/// whole chunk is not copied into a frame buffer), and whether it is a delta.
struct Framed {
    parts: [Bytes; 2],
    delta: bool,
}

/// Reads, verifies, compresses and sends asked-for chunks.
pub(crate) struct ChunkPump {
    jobs: Option<std::sync::mpsc::Sender<Vec<Job>>>,
    reader: Option<std::thread::JoinHandle<PumpStats>>,
    streams: Vec<tokio::task::JoinHandle<Result<(), crate::transport::TransportError>>>,
}

impl ChunkPump {
    /// Starts the pump for conversation `session`, reading files under
    /// `root`; chunks it cannot provide are reported on `unavailable`.
    pub(crate) fn start(
        conn: &Connection,
        session: u64,
        root: PathBuf,
        unavailable: mpsc::Sender<Vec<Hash>>,
        progress: Option<Arc<dyn super::Progress>>,
    ) -> ChunkPump {
        let (jobs_tx, jobs_rx) = std::sync::mpsc::channel::<Vec<Job>>();
        let (frames_tx, frames_rx) = mpsc::channel::<[Bytes; 2]>(STREAMS * 8);
        let reader = std::thread::Builder::new()
            .name("hamirror-chunks".into())
            .spawn(move || pump_files(session, &root, jobs_rx, frames_tx, unavailable, progress))
            .expect("spawn chunk reader");
        let frames_rx = Arc::new(tokio::sync::Mutex::new(frames_rx));
        let streams = (0..STREAMS)
            .map(|_| {
                let (conn, frames) = (conn.clone(), frames_rx.clone());
                tokio::spawn(async move {
                    let mut stream = None;
                    loop {
                        let next = frames.lock().await.recv().await;
                        let Some(parts) = next else { break };
                        if stream.is_none() {
                            stream = Some(conn.open_uni().await?);
                        }
                        if let Some(s) = stream.as_mut() {
                            s.send_prebuilt(parts).await?;
                        }
                    }
                    if let Some(mut s) = stream {
                        s.finish()?;
                    }
                    Ok(())
                })
            })
            .collect();
        ChunkPump {
            jobs: Some(jobs_tx),
            reader: Some(reader),
            streams,
        }
    }

    /// Queues chunks to send.
    pub(crate) fn send(&self, jobs: Vec<Job>) {
        if let Some(tx) = &self.jobs {
            let _ = tx.send(jobs);
        }
    }

    /// No more jobs: the pump drains what it has and ends its streams.
    pub(crate) fn close(&mut self) {
        self.jobs = None;
    }

    /// Waits until everything queued has been handed to QUIC.
    pub(crate) async fn finish(mut self) -> Result<PumpStats, crate::transport::TransportError> {
        self.close();
        let reader = self.reader.take();
        let stats = super::blocking(move || reader.map(|r| r.join().unwrap_or_default()).unwrap_or_default()).await;
        for s in self.streams.drain(..) {
            match s.await {
                Ok(r) => r?,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
        Ok(stats)
    }
}

fn pump_files(
    session: u64,
    root: &Path,
    jobs: std::sync::mpsc::Receiver<Vec<Job>>,
    frames: mpsc::Sender<[Bytes; 2]>,
    unavailable: mpsc::Sender<Vec<Hash>>,
    progress: Option<Arc<dyn super::Progress>>,
) -> PumpStats {
    let mut stats = PumpStats::default();
    for batch in jobs {
        for part in batch.chunks(BATCH) {
            let done: Vec<Result<Framed, Hash>> = part.par_iter().map(|j| read_chunk(session, root, j)).collect();
            let mut missing = Vec::new();
            for (r, job) in done.into_iter().zip(part) {
                match r {
                    Ok(Framed { parts, delta }) => {
                        let framed = (parts[0].len() + parts[1].len()) as u64;
                        stats.chunks += 1;
                        stats.raw_bytes += u64::from(job.len);
                        stats.sent_bytes += framed;
                        if delta {
                            stats.deltas += 1;
                            stats.delta_raw_bytes += u64::from(job.len);
                            stats.delta_sent_bytes += framed;
                        }
                        if frames.blocking_send(parts).is_err() {
                            return stats;
                        }
                        if let Some(p) = &progress {
                            p.sent(u64::from(job.len));
                        }
                    }
                    Err(h) => missing.push(h),
                }
            }
            if !missing.is_empty() && unavailable.blocking_send(missing).is_err() {
                return stats;
            }
        }
    }
    stats
}

/// A delta that shrinks the chunk at least this many times is sent without
/// first trying to compress the whole chunk: compression would not beat it.
const DELTA_CLEARLY_SMALLER: usize = 8;

/// Reads one chunk from where the index says it is, checks its hash, and
/// frames it: as a delta when the receiver sent a signature and the delta
/// is smaller, else whole (compressed when that pays).
fn read_chunk(session: u64, root: &Path, job: &Job) -> Result<Framed, Hash> {
    let at = job.at.as_ref().ok_or(job.hash)?;
    let path = root.join(std::ffi::OsStr::from_bytes(&at.path));
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|_| job.hash)?;
    let mut raw = vec![0u8; job.len as usize];
    f.read_exact_at(&mut raw, at.offset).map_err(|_| job.hash)?;
    if blake3::hash(&raw).as_bytes() != &job.hash {
        return Err(job.hash);
    }
    let delta = match job
        .signature
        .as_deref()
        .and_then(|sig| delta_frame(session, job, &raw, sig))
    {
        Some(d) if d.len() * DELTA_CLEARLY_SMALLER <= raw.len() => return Ok(split_frame(d)),
        other => other,
    };
    let (compression, data) = match compress_chunk(&raw) {
        (_, Some(z)) => (Compression::Zstd, z),
        (_, None) => (Compression::None, raw),
    };
    let view = ChunkView {
        session,
        hash: job.hash,
        raw_len: job.len,
        compression,
        data: &data,
    };
    let head = view.frame_head().map_err(|_| job.hash)?;
    match delta {
        Some(d) if d.len() < head.len() + data.len() => Ok(split_frame(d)),
        _ => Ok(Framed {
            parts: [Bytes::from(head), Bytes::from(data)],
            delta: false,
        }),
    }
}

/// The `ChunkDelta` frame of `raw` against the receiver's base, or `None`
/// when no block of the base occurs in it.
fn delta_frame(session: u64, job: &Job, raw: &[u8], sig: &Signature) -> Option<Vec<u8>> {
    let d = delta::diff(raw, sig);
    if d.literals.len() == raw.len() {
        return None;
    }
    let (compression, literals) = match compress_chunk(&d.literals) {
        (_, Some(z)) => (Compression::Zstd, z),
        (_, None) => (Compression::None, d.literals),
    };
    Message::ChunkDelta(ChunkDelta {
        session,
        hash: job.hash,
        raw_len: job.len,
        ops: d.ops,
        compression,
        literals,
    })
    .encode_frame()
    .ok()
}

fn split_frame(frame: Vec<u8>) -> Framed {
    let frame = Bytes::from(frame);
    let head = frame.len().min(hamirror_wire::frame::HEADER_LEN);
    Framed {
        parts: [frame.slice(..head), frame.slice(head..)],
        delta: true,
    }
}
