//! The control stream of one conversation, typed: messages out, messages in.
//! Incoming frames are read by their own task and handed over through a
//! channel, so waiting for the next message can be raced against other
//! work (chunk data, local progress) without losing half-read frames. A
//! frame or message that does not decode closes the whole connection with
//! the decoder's reason (PROTOCOL.md §6.6); an `Error` from the peer ends the
//! conversation as [`SyncError::Refused`].

use hamirror_wire::{Chunking, ErrorCode, ErrorMsg, Hello, Message, Mode, MsgType, PROTOCOL_VERSION, WireError};
use tokio::sync::mpsc;

use super::SyncError;
use crate::config::{MirrorSet, Node};
use crate::transport::{Connection, FrameReceiver, FrameSender};

/// Messages in flight from the reader task; small, the peer waits on us.
const INBOX: usize = 64;

pub(crate) struct Control {
    tx: FrameSender,
    rx: mpsc::Receiver<Result<Message, SyncError>>,
    pub(crate) peer: String,
    /// The protocol version of the connection: messages are encoded and
    /// decoded as it has them.
    pub(crate) version: u32,
}

impl Control {
    /// Wraps a control stream. `first` is a message already read (the hello
    /// on the accepting side).
    pub(crate) fn new(conn: &Connection, tx: FrameSender, rx: FrameReceiver) -> Control {
        let (inbox, messages) = mpsc::channel(INBOX);
        let version = conn.protocol_version();
        if version < PROTOCOL_VERSION {
            warn_old_peer(&conn.peer().name, version);
        }
        tokio::spawn(read_loop(conn.clone(), rx, inbox, version));
        Control {
            tx,
            rx: messages,
            peer: conn.peer().name.clone(),
            version,
        }
    }

    /// Sends `m` as the connection's protocol version has it; a hello and
    /// its answer carry that version.
    pub(crate) async fn send(&mut self, m: &Message) -> Result<(), SyncError> {
        let payload = match m {
            Message::Hello(h) if h.version != self.version => Message::Hello(Hello {
                version: self.version,
                ..h.clone()
            })
            .payload_for(self.version),
            Message::HelloOk(h) if h.version != self.version => Message::HelloOk(hamirror_wire::HelloOk {
                version: self.version,
                ..h.clone()
            })
            .payload_for(self.version),
            m => m.payload_for(self.version),
        };
        if let Err(e) = self.tx.send(m.msg_type() as u8, &payload).await {
            return Err(self.refusal_behind(e.into()).await);
        }
        Ok(())
    }

    /// A write failed: the peer may have refused first (an offer over its
    /// limits is refused while it still arrives, and the peer then stops
    /// reading). Its reason says more than "stream stopped".
    async fn refusal_behind(&mut self, err: SyncError) -> SyncError {
        let refusal = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            while let Some(item) = self.rx.recv().await {
                match item {
                    Ok(Message::Error(e)) => return Some(e),
                    Ok(_) => {}
                    Err(_) => return None,
                }
            }
            None
        })
        .await;
        match refusal {
            Ok(Some(e)) => SyncError::Refused {
                peer: self.peer.clone(),
                code: e.code,
                reason: e.reason,
            },
            _ => err,
        }
    }

    /// The next message; the peer's `Error` becomes [`SyncError::Refused`].
    pub(crate) async fn next(&mut self) -> Result<Message, SyncError> {
        match self.rx.recv().await {
            Some(Ok(Message::Error(e))) => Err(SyncError::Refused {
                peer: self.peer.clone(),
                code: e.code,
                reason: e.reason,
            }),
            Some(Ok(m)) => Ok(m),
            Some(Err(e)) => Err(e),
            None => Err(SyncError::protocol("the control stream ended")),
        }
    }

    /// Tells the peer why this side stops (unless the peer stopped first or
    /// the link is gone), then ends the stream.
    pub(crate) async fn fail(&mut self, err: &SyncError) {
        if matches!(
            err,
            SyncError::Refused { .. } | SyncError::Wire(_) | SyncError::Transport(_)
        ) {
            return;
        }
        let reason = match err {
            SyncError::Local { reason, .. } => reason.clone(),
            other => other.to_string(),
        };
        let _ = self.send(&Message::Error(ErrorMsg::new(err.code(), reason))).await;
        let _ = self.tx.finished().await;
    }

    /// The peer's answer to our hello: `HelloOk` (its `Error` is a refusal).
    pub(crate) async fn hello_ok(&mut self) -> Result<hamirror_wire::HelloOk, SyncError> {
        match self.next().await? {
            Message::HelloOk(ok) => Ok(ok),
            other => Err(SyncError::protocol(format!(
                "expected HelloOk, got {}",
                other.msg_type().name()
            ))),
        }
    }

    /// Ends the conversation normally: waits until the peer has everything.
    pub(crate) async fn close(&mut self) -> Result<(), SyncError> {
        self.tx.finished().await?;
        Ok(())
    }
}

/// Says once per process that a peer of an older protocol version gets no
/// extended attributes.
fn warn_old_peer(peer: &str, version: u32) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            "{peer} speaks protocol version {version} (this node {PROTOCOL_VERSION}): extended attributes and ACLs, \
             FIFOs and device nodes are not mirrored to or from it (nor compared by verify); upgrade it"
        );
    });
}

async fn read_loop(
    conn: Connection,
    mut rx: FrameReceiver,
    inbox: mpsc::Sender<Result<Message, SyncError>>,
    version: u32,
) {
    loop {
        let item = match rx.recv().await {
            Ok(Some((ty, _))) if ty == MsgType::Chunk as u8 => {
                Err(SyncError::protocol("chunk data on the control stream"))
            }
            Ok(Some((ty, payload))) => match Message::decode_for(version, ty, &payload) {
                Ok(m) => Ok(m),
                Err(e) => {
                    let e = WireError::Decode(e);
                    conn.close(e.code().number(), &e.to_string());
                    Err(SyncError::Wire(e))
                }
            },
            Ok(None) => return,
            Err(e) => {
                close_on_bad_frame(&conn, &e);
                Err(SyncError::Transport(e))
            }
        };
        let stop = item.is_err();
        if inbox.send(item).await.is_err() || stop {
            return;
        }
    }
}

/// A frame that breaks the framing (oversize, empty, cut off) makes the
/// stream untrustworthy: the connection is closed with the reason.
pub(crate) fn close_on_bad_frame(conn: &Connection, e: &crate::transport::TransportError) {
    use crate::transport::TransportError as T;
    match e {
        T::FrameTooLarge { .. } => conn.close(ErrorCode::TooLarge.number(), &e.to_string()),
        T::EmptyFrame | T::Truncated => conn.close(ErrorCode::BadFrame.number(), &e.to_string()),
        _ => {}
    }
}

/// A hello from this node for `set` (no flags, no positions).
pub(crate) fn hello(
    mode: Mode,
    local: &Node,
    peer: &str,
    set: &MirrorSet,
    group: &str,
    epoch: u64,
    session: u64,
) -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        mode,
        dry_run: false,
        force: false,
        session,
        from: local.name.clone(),
        to: peer.to_string(),
        set: set.name.clone(),
        group: group.to_string(),
        epoch,
        chunking: Chunking {
            min: set.chunk.min,
            avg: set.chunk.avg,
            max: set.chunk.max,
        },
        offer: None,
        acked: None,
    }
}
