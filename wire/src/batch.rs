//! Cutting a stream of entries and deleted paths into messages that fit a
//! frame, and putting them back together on the other side. A file entry
//! with a very long chunk list (a huge file, or small chunks) would not fit
//! one frame, so it travels as a `FileHead` followed by `ChunkList`
//! messages; everything else goes in `Entries`/`Deletes` batches of about
//! [`BATCH_BYTES`]. Both sides count what passed, so the receiver can check
//! the totals of `OfferEnd`/`ManifestEnd`. Pure data, no I/O.

use crate::codec::DecodeError;
use crate::entry::{ChunkRef, Entry, EntryKind};
use crate::msg::{FileHead, MAX_BATCH_ENTRIES, MAX_BATCH_PATHS, MAX_CHUNK_LIST, Message};

/// Target payload of one `Entries` or `Deletes` batch. Small enough that
/// the receiver can start planning (and asking for chunks) early.
pub const BATCH_BYTES: usize = 1 << 20;
/// A file entry with more chunks than this is sent as `FileHead` +
/// `ChunkList`s (an inline entry stays under ~600 KiB).
pub const INLINE_CHUNKS: usize = 1 << 14;
/// Chunk references per `ChunkList` message a sender builds (~1.2 MiB).
pub const CHUNK_LIST_BATCH: usize = 1 << 15;

const _: () = assert!(CHUNK_LIST_BATCH as u64 <= MAX_CHUNK_LIST);

/// What went through a batcher or assembler: entries (each `FileHead`
/// counts as one), deleted paths, and the sum of the entries' sizes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub entries: u64,
    pub deletes: u64,
    pub bytes: u64,
}

/// An upper bound of an inline entry's encoded size: fields are at most
/// 10 bytes per varint, chunks at most 32 + 4.
fn entry_size(e: &Entry) -> usize {
    64 + e.path.len() + e.target.len() + e.chunks.len() * 36
}

/// Builds the messages of an offer (or a verify manifest) from entries and
/// deleted paths given one at a time, in any order.
#[derive(Debug, Default)]
pub struct EntryBatcher {
    entries: Vec<Entry>,
    entry_bytes: usize,
    deletes: Vec<Vec<u8>>,
    delete_bytes: usize,
    counts: Counts,
}

impl EntryBatcher {
    pub fn new() -> Self {
        EntryBatcher::default()
    }

    /// Adds an entry; returns the messages now ready to send (usually none).
    pub fn entry(&mut self, e: Entry) -> Vec<Message> {
        self.counts.entries += 1;
        self.counts.bytes = self.counts.bytes.saturating_add(e.size);
        let mut out = vec![];
        if e.kind == EntryKind::File && e.chunks.len() > INLINE_CHUNKS {
            // A split file must not interleave with a batch: flush first.
            out.extend(self.flush_entries());
            out.push(Message::FileHead(FileHead::of(&e)));
            out.extend(
                e.chunks
                    .chunks(CHUNK_LIST_BATCH)
                    .map(|c| Message::ChunkList(c.to_vec())),
            );
            return out;
        }
        self.entry_bytes += entry_size(&e);
        self.entries.push(e);
        if self.entry_bytes >= BATCH_BYTES || self.entries.len() as u64 >= MAX_BATCH_ENTRIES {
            out.extend(self.flush_entries());
        }
        out
    }

    /// Adds a deleted path; returns a `Deletes` message when a batch is full.
    pub fn delete(&mut self, path: Vec<u8>) -> Option<Message> {
        self.counts.deletes += 1;
        self.delete_bytes += path.len() + 3;
        self.deletes.push(path);
        if self.delete_bytes >= BATCH_BYTES || self.deletes.len() as u64 >= MAX_BATCH_PATHS {
            return self.flush_deletes();
        }
        None
    }

    fn flush_entries(&mut self) -> Option<Message> {
        self.entry_bytes = 0;
        if self.entries.is_empty() {
            return None;
        }
        Some(Message::Entries(std::mem::take(&mut self.entries)))
    }

    fn flush_deletes(&mut self) -> Option<Message> {
        self.delete_bytes = 0;
        if self.deletes.is_empty() {
            return None;
        }
        Some(Message::Deletes(std::mem::take(&mut self.deletes)))
    }

    /// Sends what is pending now (e.g. to let the receiver start planning
    /// while the scan goes on), and at the end before `OfferEnd`.
    pub fn flush(&mut self) -> Vec<Message> {
        self.flush_entries().into_iter().chain(self.flush_deletes()).collect()
    }

    /// Everything added so far, flushed or not.
    pub fn counts(&self) -> Counts {
        self.counts
    }
}

/// A file head waiting for the rest of its chunk list.
#[derive(Debug)]
struct Pending {
    head: FileHead,
    chunks: Vec<ChunkRef>,
    bytes: u64,
}

/// Rebuilds entries from `Entries`, `FileHead` and `ChunkList` messages and
/// counts them with `Deletes`. A `ChunkList` must follow its `FileHead` with
/// nothing else in between; anything else is [`DecodeError::OutOfSequence`].
#[derive(Debug, Default)]
pub struct EntryAssembler {
    pending: Option<Pending>,
    counts: Counts,
}

impl EntryAssembler {
    pub fn new() -> Self {
        EntryAssembler::default()
    }

    fn idle(&self, what: &'static str) -> Result<(), DecodeError> {
        match self.pending {
            None => Ok(()),
            Some(_) => Err(DecodeError::OutOfSequence(what)),
        }
    }

    /// An `Entries` batch: its entries, counted.
    pub fn entries(&mut self, batch: Vec<Entry>) -> Result<Vec<Entry>, DecodeError> {
        self.idle("entries inside a split file's chunk list")?;
        for e in &batch {
            self.counts.entries += 1;
            self.counts.bytes = self.counts.bytes.saturating_add(e.size);
        }
        Ok(batch)
    }

    /// A `Deletes` batch: its paths, counted.
    pub fn deletes(&mut self, paths: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, DecodeError> {
        self.idle("deletes inside a split file's chunk list")?;
        self.counts.deletes += paths.len() as u64;
        Ok(paths)
    }

    /// A `FileHead`: its chunk lists must follow.
    pub fn head(&mut self, head: FileHead) -> Result<(), DecodeError> {
        self.idle("file head inside another file's chunk list")?;
        self.pending = Some(Pending {
            chunks: Vec::new(),
            bytes: 0,
            head,
        });
        Ok(())
    }

    /// A `ChunkList`: the finished entry once the last one has arrived.
    pub fn chunk_list(&mut self, list: Vec<ChunkRef>) -> Result<Option<Entry>, DecodeError> {
        let Some(p) = self.pending.as_mut() else {
            return Err(DecodeError::OutOfSequence("chunk list without a file head"));
        };
        let have = p.chunks.len() as u64 + list.len() as u64;
        if have > p.head.chunks {
            return Err(DecodeError::Invalid {
                what: "chunk list (more chunks than its file head announced)",
                value: have,
            });
        }
        // Grow with what actually arrived, not with the announced count, so
        // a lying head costs only what its sender really sends.
        p.chunks.extend_from_slice(&list);
        p.bytes += list.iter().map(|c| u64::from(c.len)).sum::<u64>();
        if have < p.head.chunks {
            return Ok(None);
        }
        let Some(p) = self.pending.take() else {
            return Ok(None);
        };
        if p.bytes != p.head.size {
            return Err(DecodeError::Invalid {
                what: "file size (differs from the sum of its chunks)",
                value: p.head.size,
            });
        }
        self.counts.entries += 1;
        self.counts.bytes = self.counts.bytes.saturating_add(p.head.size);
        Ok(Some(p.head.into_entry(p.chunks)))
    }

    /// Everything assembled so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// At `OfferEnd`/`ManifestEnd`: no file may be left incomplete, and the
    /// totals the peer announced must be what arrived.
    pub fn finish(&self, announced: Counts) -> Result<(), DecodeError> {
        self.idle("end of stream inside a split file's chunk list")?;
        if announced != self.counts {
            let value = if announced.entries != self.counts.entries {
                announced.entries
            } else if announced.deletes != self.counts.deletes {
                announced.deletes
            } else {
                announced.bytes
            };
            return Err(DecodeError::Invalid {
                what: "announced totals (differ from what arrived)",
                value,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::file_hash;
    use crate::msg::MsgType;

    fn file(path: &str, n: usize) -> Entry {
        let chunks: Vec<ChunkRef> = (0..n)
            .map(|i| ChunkRef {
                hash: *blake3::hash(&i.to_le_bytes()).as_bytes(),
                len: 1 + (i % 7) as u32,
            })
            .collect();
        Entry {
            path: path.as_bytes().to_vec(),
            kind: EntryKind::File,
            mode: 0o600,
            uid: 1,
            gid: 2,
            mtime_ns: 3,
            size: chunks.iter().map(|c| u64::from(c.len)).sum(),
            file_hash: file_hash(&chunks),
            chunks,
            target: vec![],
            xattrs: vec![],
        }
    }

    /// Sends through encode/decode and reassembles.
    fn transmit(msgs: &[Message], asm: &mut EntryAssembler) -> (Vec<Entry>, Vec<Vec<u8>>) {
        let (mut entries, mut deletes) = (vec![], vec![]);
        for m in msgs {
            let f = m.encode_frame().unwrap();
            let m = Message::decode(f[4], &f[5..]).unwrap();
            match m {
                Message::Entries(v) => entries.extend(asm.entries(v).unwrap()),
                Message::Deletes(v) => deletes.extend(asm.deletes(v).unwrap()),
                Message::FileHead(h) => asm.head(h).unwrap(),
                Message::ChunkList(c) => entries.extend(asm.chunk_list(c).unwrap()),
                other => panic!("unexpected {other:?}"),
            }
        }
        (entries, deletes)
    }

    #[test]
    fn large_and_small_entries_survive_batching() {
        let input = vec![
            file("a", 3),
            file("big", CHUNK_LIST_BATCH * 2 + 5),
            file("b", INLINE_CHUNKS),
            file("c", 0),
        ];
        let mut b = EntryBatcher::new();
        let mut msgs = vec![];
        for e in input.clone() {
            msgs.extend(b.entry(e));
        }
        assert!(b.delete(b"gone/x".to_vec()).is_none());
        msgs.extend(b.flush());
        let types: Vec<MsgType> = msgs.iter().map(Message::msg_type).collect();
        use MsgType::*;
        assert_eq!(
            types,
            [Entries, FileHead, ChunkList, ChunkList, ChunkList, Entries, Deletes]
        );
        let mut asm = EntryAssembler::new();
        let (mut got, dels) = transmit(&msgs, &mut asm);
        got.sort_by(|x, y| x.path.cmp(&y.path));
        let mut want = input;
        want.sort_by(|x, y| x.path.cmp(&y.path));
        assert_eq!(got, want);
        assert_eq!(dels, [b"gone/x".to_vec()]);
        assert_eq!(asm.counts(), b.counts());
        asm.finish(b.counts()).unwrap();
        let mut wrong = b.counts();
        wrong.bytes += 1;
        assert!(asm.finish(wrong).is_err());
    }

    #[test]
    fn many_small_entries_are_cut_into_bounded_batches() {
        let mut b = EntryBatcher::new();
        let mut msgs = vec![];
        for i in 0..40_000 {
            msgs.extend(b.entry(file(&format!("dir/file-{i:06}"), 20)));
        }
        msgs.extend(b.flush());
        assert!(msgs.len() > 1);
        for m in &msgs {
            assert!(
                m.payload().len() < 2 * BATCH_BYTES,
                "batch of {} bytes",
                m.payload().len()
            );
        }
        let mut asm = EntryAssembler::new();
        assert_eq!(transmit(&msgs, &mut asm).0.len(), 40_000);
    }

    #[test]
    fn chunk_lists_out_of_sequence_are_refused() {
        let big = file("big", 10);
        let mut asm = EntryAssembler::new();
        assert_eq!(
            asm.chunk_list(big.chunks.clone()),
            Err(DecodeError::OutOfSequence("chunk list without a file head"))
        );
        asm.head(FileHead::of(&big)).unwrap();
        assert!(matches!(asm.entries(vec![]), Err(DecodeError::OutOfSequence(_))));
        assert!(matches!(
            asm.finish(Counts::default()),
            Err(DecodeError::OutOfSequence(_))
        ));
        assert_eq!(asm.chunk_list(big.chunks[..4].to_vec()), Ok(None));
        assert!(
            asm.chunk_list(big.chunks.clone()).is_err(),
            "more chunks than announced"
        );

        let mut asm = EntryAssembler::new();
        let mut head = FileHead::of(&big);
        head.size += 1;
        asm.head(head).unwrap();
        assert!(asm.chunk_list(big.chunks.clone()).is_err(), "sizes disagree");
    }
}
