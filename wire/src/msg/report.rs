//! The reports that end a data stream: `Applied` (the receiver's
//! acknowledgement of an offer) and `ManifestEnd` (the end of a verify
//! manifest), with the bounded list of per-file failures both carry.

use crate::codec::{DecodeError, Reader, Writer};
use crate::entry::MAX_PATH;
use crate::msg::code::ErrorCode;
use crate::msg::session::clip_reason;
use crate::msg::{MAX_FAILURES, MAX_REASON};

/// One file that could not be applied (or read, in a verify).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The entry's path as offered (not checked for shape: it is a report).
    pub path: Vec<u8>,
    pub code: ErrorCode,
    pub reason: String,
}

impl Failure {
    /// The reason is clipped to [`MAX_REASON`] bytes.
    pub fn new(path: impl Into<Vec<u8>>, code: ErrorCode, reason: impl Into<String>) -> Failure {
        Failure {
            path: path.into(),
            code,
            reason: clip_reason(reason.into()),
        }
    }
}

/// Per-file failures: how many there were, and the first
/// [`MAX_FAILURES`] of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failures {
    /// All failures, listed or not.
    pub total: u64,
    pub listed: Vec<Failure>,
}

impl Failures {
    /// Counts a failure and keeps it if the list has room.
    pub fn push(&mut self, f: Failure) {
        self.total += 1;
        if (self.listed.len() as u64) < MAX_FAILURES {
            self.listed.push(f);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    fn encode(&self, w: &mut Writer) {
        w.varint(self.total).varint(self.listed.len() as u64);
        for f in &self.listed {
            w.bytes(&f.path).varint(f.code.number().into()).str(&f.reason);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Failures, DecodeError> {
        let total = r.varint("failure total")?;
        let n = r.count("failures listed", MAX_FAILURES, 3)?;
        if n as u64 > total {
            return Err(DecodeError::Invalid {
                what: "failures listed (more than their total)",
                value: n as u64,
            });
        }
        let mut listed = Vec::with_capacity(n);
        for _ in 0..n {
            listed.push(Failure {
                path: r.bytes("failure path", MAX_PATH)?.to_vec(),
                code: ErrorCode::from_number(r.u32("failure code")?),
                reason: r.str("failure reason", MAX_REASON)?.to_owned(),
            });
        }
        Ok(Failures { total, listed })
    }
}

/// The receiver's acknowledgement of an offer, after applying it (or, in a
/// dry run, after planning it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The generation offered (`OfferEnd::generation`).
    pub generation: u64,
    /// Every entry was applied and the receiver recorded `generation` as
    /// acknowledged. `false` (failures, or a dry run): it keeps its previous
    /// acknowledgement, so the next pass offers the same changes again.
    pub complete: bool,
    /// Entries created or updated.
    pub files: u64,
    /// File bytes written.
    pub bytes: u64,
    /// Chunks received from the sender.
    pub chunks_received: u64,
    /// Chunks taken from the receiver's own files.
    pub chunks_reused: u64,
    /// Paths deleted.
    pub deleted: u64,
    pub failures: Failures,
    /// Entries applied with something left out (since version 2: an
    /// extended attribute or ACL the replica's filesystem refused). They
    /// do not make the acknowledgement incomplete.
    pub warnings: Failures,
}

impl Applied {
    pub(crate) fn encode(&self, w: &mut Writer, v1: bool) {
        w.varint(self.generation)
            .bool(self.complete)
            .varint(self.files)
            .varint(self.bytes)
            .varint(self.chunks_received)
            .varint(self.chunks_reused)
            .varint(self.deleted);
        self.failures.encode(w);
        if !v1 {
            self.warnings.encode(w);
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>, v1: bool) -> Result<Applied, DecodeError> {
        let a = Applied {
            generation: r.varint("generation")?,
            complete: r.bool("complete")?,
            files: r.varint("files applied")?,
            bytes: r.varint("bytes applied")?,
            chunks_received: r.varint("chunks received")?,
            chunks_reused: r.varint("chunks reused")?,
            deleted: r.varint("paths deleted")?,
            failures: Failures::decode(r)?,
            warnings: if v1 { Failures::default() } else { Failures::decode(r)? },
        };
        if a.complete && !a.failures.is_empty() {
            return Err(DecodeError::Invalid {
                what: "failures in a complete acknowledgement",
                value: a.failures.total,
            });
        }
        Ok(a)
    }
}

/// The end of a verify manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEnd {
    /// Entries sent (`Entries` items plus `FileHead`s).
    pub entries: u64,
    /// Sum of their sizes.
    pub bytes: u64,
    /// Paths that could not be read.
    pub failures: Failures,
}

impl ManifestEnd {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.varint(self.entries).varint(self.bytes);
        self.failures.encode(w);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<ManifestEnd, DecodeError> {
        Ok(ManifestEnd {
            entries: r.varint("manifest entries")?,
            bytes: r.varint("manifest bytes")?,
            failures: Failures::decode(r)?,
        })
    }
}
