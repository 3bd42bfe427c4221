//! `hamirror verify`: both nodes re-read every file of a set (no quick
//! check: every byte is hashed again) and the opener compares
//! the two manifests entry by entry — content, kind, mode, owner, mtime,
//! symlink and hard-link targets, device numbers, extended attributes and ACLs (in the
//! set's namespaces). The check an admin runs after an incident; it writes
//! nothing, not even a temporary index: each side's manifest is built in
//! memory by one parallel read of its files.
//!
//! Speed: the hello asks for chunks of exactly [`VERIFY_BLOCK`] bytes
//! (min = avg = max), which every peer version honours in a verify. With
//! min equal to max FastCDC has no cut point to search for, so a file is
//! hashed as fixed blocks at BLAKE3's full speed, without the rolling hash
//! that content-defined chunking costs; the manifests compare the same way
//! (size and file hash), and are 16 times shorter. What the set's exclude rules exclude is not read on either
//! side, so it is never a difference.

use std::collections::BTreeMap;

use hamirror_wire::{
    Counts, Entry, EntryAssembler, EntryBatcher, EntryKind, ErrorCode, Failure, Failures, Goodbye, ManifestEnd,
    Message, Mode,
};

use super::SyncError;
use super::control::Control;
use crate::config::{ChunkParams, MirrorSet, Node};
use crate::scan::{Quiet, ScanOptions, Scanner, show_path};
use crate::transport::Connection;

/// The block size a verify hashes files in, on both sides: the largest
/// minimum chunk `fastcdc` allows, so min = avg = max is a valid setting.
pub const VERIFY_BLOCK: u32 = 1 << 20;

/// `set` as a verify reads it: fixed blocks of [`VERIFY_BLOCK`] bytes.
fn in_blocks(set: &MirrorSet) -> MirrorSet {
    MirrorSet {
        chunk: ChunkParams {
            min: VERIFY_BLOCK,
            avg: VERIFY_BLOCK,
            max: VERIFY_BLOCK,
        },
        ..set.clone()
    }
}

/// One way the two copies differ.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    pub path: String,
    pub what: String,
}

/// The outcome of a verify.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    pub set: String,
    pub local_entries: u64,
    pub peer_entries: u64,
    pub bytes: u64,
    pub differences: Vec<Difference>,
    /// Paths that could not be read, on this node and on the peer.
    pub local_unreadable: Vec<(String, String)>,
    pub peer_unreadable: Vec<(String, String)>,
    pub elapsed_s: f64,
}

impl VerifyReport {
    pub fn identical(&self) -> bool {
        self.differences.is_empty() && self.local_unreadable.is_empty() && self.peer_unreadable.is_empty()
    }
}

/// A re-read manifest and the paths that could not be read (with why).
pub(crate) type Manifest = (Vec<Entry>, Vec<(Vec<u8>, String)>);

/// Re-reads a set under `node`'s root: every file is read and hashed, on
/// every core, straight into memory (no index is written).
pub(crate) fn read_manifest(node: &Node, set: &MirrorSet) -> Result<Manifest, SyncError> {
    let scanner = Scanner::new(&ScanOptions::default())?;
    let (entries, report) = scanner.read_manifest(set, &node.conf.root, &Quiet)?;
    Ok((entries, report.errors.into_iter().map(|p| (p.path, p.reason)).collect()))
}

/// The peer side: stream the re-read manifest, then `ManifestEnd`.
pub(crate) async fn send_manifest(ctl: &mut Control, node: &Node, set: &MirrorSet) -> Result<(), SyncError> {
    let (node, set) = (node.clone(), set.clone());
    let (mut entries, unreadable) = super::blocking(move || read_manifest(&node, &set)).await?;
    if ctl.version < 2 {
        // A version-1 peer's decoder knows no FIFOs or device nodes.
        entries.retain(|e| !e.kind.is_special());
    }
    let mut batcher = EntryBatcher::new();
    for e in entries {
        for m in batcher.entry(e) {
            ctl.send(&m).await?;
        }
    }
    for m in batcher.flush() {
        ctl.send(&m).await?;
    }
    let counts = batcher.counts();
    let mut failures = Failures::default();
    for (p, why) in unreadable {
        failures.push(Failure::new(p, ErrorCode::Io, why));
    }
    ctl.send(&Message::ManifestEnd(ManifestEnd {
        entries: counts.entries,
        bytes: counts.bytes,
        failures,
    }))
    .await
}

async fn receive_manifest(ctl: &mut Control) -> Result<(Vec<Entry>, ManifestEnd), SyncError> {
    let mut asm = EntryAssembler::new();
    // The peer's manifest is held whole, like an offer: the same budget.
    let mut tally = super::limits::OfferTally::new(super::limits::OfferBudget::of_process());
    let bad = |e: hamirror_wire::DecodeError| SyncError::protocol(format!("manifest: {e}"));
    let mut entries = Vec::new();
    loop {
        match ctl.next().await? {
            Message::Entries(es) => {
                tally.entries(&es)?;
                entries.extend(asm.entries(es).map_err(bad)?);
            }
            Message::FileHead(h) => {
                tally.head(&h)?;
                asm.head(h).map_err(bad)?;
            }
            Message::ChunkList(l) => entries.extend(asm.chunk_list(l).map_err(bad)?),
            Message::ManifestEnd(end) => {
                asm.finish(Counts {
                    entries: end.entries,
                    deletes: 0,
                    bytes: end.bytes,
                })
                .map_err(bad)?;
                return Ok((entries, end));
            }
            other => {
                return Err(SyncError::protocol(format!(
                    "unexpected {} in a manifest",
                    other.msg_type().name()
                )));
            }
        }
    }
}

pub(crate) fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File => "file",
        EntryKind::Dir => "directory",
        EntryKind::Symlink => "symlink",
        EntryKind::HardLink => "hard link",
        EntryKind::Fifo => "FIFO",
        EntryKind::CharDev => "character device",
        EntryKind::BlockDev => "block device",
    }
}

/// Which extended attributes differ between two entries, by name.
fn xattr_difference(a: &Entry, b: &Entry, local_name: &str, peer_name: &str) -> String {
    let theirs: BTreeMap<&[u8], &[u8]> = b.xattrs.iter().map(|x| (&x.name[..], &x.value[..])).collect();
    let ours: BTreeMap<&[u8], &[u8]> = a.xattrs.iter().map(|x| (&x.name[..], &x.value[..])).collect();
    let show = |n: &[u8]| String::from_utf8_lossy(n).into_owned();
    let mut parts = Vec::new();
    for (n, v) in &ours {
        match theirs.get(n) {
            None => parts.push(format!("{} missing on {peer_name}", show(n))),
            Some(w) if w != v => parts.push(format!("{} differs", show(n))),
            Some(_) => {}
        }
    }
    for n in theirs.keys().filter(|n| !ours.contains_key(*n)) {
        parts.push(format!("{} on {peer_name} only (not on {local_name})", show(n)));
    }
    format!("extended attributes: {}", parts.join(", "))
}

/// Every difference between two manifests, in path order.
pub fn compare(local: &[Entry], peer: &[Entry], local_name: &str, peer_name: &str) -> Vec<Difference> {
    let ours: BTreeMap<&[u8], &Entry> = local.iter().map(|e| (e.path.as_slice(), e)).collect();
    let theirs: BTreeMap<&[u8], &Entry> = peer.iter().map(|e| (e.path.as_slice(), e)).collect();
    let mut paths: Vec<&[u8]> = ours.keys().chain(theirs.keys()).copied().collect();
    paths.sort_unstable();
    paths.dedup();
    let mut out = Vec::new();
    for p in paths {
        let mut diff = |what: String| {
            out.push(Difference {
                path: format!("/{}", show_path(p)),
                what,
            })
        };
        match (ours.get(p), theirs.get(p)) {
            (Some(a), None) => diff(format!("{} missing on {peer_name}", kind_name(a.kind))),
            (None, Some(b)) => diff(format!(
                "{} on {peer_name} only (not on {local_name})",
                kind_name(b.kind)
            )),
            (Some(a), Some(b)) => {
                if a.kind != b.kind {
                    diff(format!(
                        "{} on {local_name}, {} on {peer_name}",
                        kind_name(a.kind),
                        kind_name(b.kind)
                    ));
                    continue;
                }
                if a.kind == EntryKind::File && (a.size != b.size || a.file_hash != b.file_hash) {
                    diff(format!(
                        "content differs ({} bytes on {local_name}, {} on {peer_name})",
                        a.size, b.size
                    ));
                }
                if a.target != b.target && a.kind.is_device() {
                    diff(format!(
                        "device number {} on {local_name}, {} on {peer_name}",
                        String::from_utf8_lossy(&a.target),
                        String::from_utf8_lossy(&b.target)
                    ));
                } else if a.target != b.target {
                    diff(format!(
                        "target {:?} on {local_name}, {:?} on {peer_name}",
                        String::from_utf8_lossy(&a.target),
                        String::from_utf8_lossy(&b.target)
                    ));
                }
                if a.mode != b.mode && a.kind != EntryKind::Symlink {
                    diff(format!(
                        "mode {:04o} on {local_name}, {:04o} on {peer_name}",
                        a.mode, b.mode
                    ));
                }
                if (a.uid, a.gid) != (b.uid, b.gid) {
                    diff(format!(
                        "owner {}:{} on {local_name}, {}:{} on {peer_name}",
                        a.uid, a.gid, b.uid, b.gid
                    ));
                }
                if a.xattrs != b.xattrs {
                    diff(xattr_difference(a, b, local_name, peer_name));
                }
                if a.mtime_ns != b.mtime_ns {
                    diff(format!(
                        "mtime {} on {local_name}, {} on {peer_name}",
                        fmt_ns(a.mtime_ns),
                        fmt_ns(b.mtime_ns)
                    ));
                }
            }
            (None, None) => {}
        }
    }
    out
}

/// A directory only on the peer with nothing mirrored in it is most
/// likely one the replica keeps because it holds files the set excludes
/// (never deleted there, as rsync does): say so, since no sync removes it.
fn explain_kept_dirs(diffs: &mut [Difference], mine: &[Entry], theirs: &[Entry]) {
    let ours: std::collections::HashSet<&[u8]> = mine.iter().map(|e| e.path.as_slice()).collect();
    for e in theirs
        .iter()
        .filter(|e| e.kind == EntryKind::Dir && !ours.contains(e.path.as_slice()))
    {
        let mut under = e.path.clone();
        under.push(b'/');
        if theirs.iter().any(|o| o.path.starts_with(&under)) {
            continue;
        }
        let shown = format!("/{}", show_path(&e.path));
        if let Some(d) = diffs.iter_mut().find(|d| d.path == shown) {
            d.what.push_str(
                "; if it holds files the set excludes, the replica keeps it (excluded files are never deleted \
                 there): remove them on the replica to let it go",
            );
        }
    }
}

fn fmt_ns(ns: i64) -> String {
    format!("{}.{:09}", ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
}

/// Verifies `set` between this node and the peer over `conn`.
///
/// # Errors
/// A refusal, a broken link, or a local read failure of the whole set.
pub async fn verify(
    conn: &Connection,
    local: &Node,
    peer: &str,
    set: &MirrorSet,
    group: &str,
    session: u64,
) -> Result<VerifyReport, SyncError> {
    let started = std::time::Instant::now();
    let set = &in_blocks(set);
    let (tx, rx) = conn.open_control().await?;
    let mut ctl = Control::new(conn, tx, rx);
    let result = async {
        let hello = super::control::hello(Mode::Verify, local, peer, set, group, 0, session);
        ctl.send(&Message::Hello(hello)).await?;
        ctl.hello_ok().await?;
        let mine = {
            let (node, set) = (local.clone(), set.clone());
            tokio::task::spawn_blocking(move || read_manifest(&node, &set))
        };
        let (mut theirs, end) = receive_manifest(&mut ctl).await?;
        // The peer's walk skipped what its rules exclude; a peer with an
        // older copy of the set file may list more, which is not compared.
        theirs.retain(|e| !set.excluded(&e.path, Some(e.kind == EntryKind::Dir)));
        let (mut mine, unreadable) = match mine.await {
            Ok(r) => r?,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        if ctl.version < 2 {
            // A version-1 peer sends no attributes, nor FIFOs and device
            // nodes: they cannot be compared.
            mine.iter_mut().for_each(|e| e.xattrs.clear());
            mine.retain(|e| !e.kind.is_special());
        }
        ctl.send(&Message::Goodbye(Goodbye {
            reason: "verified".into(),
        }))
        .await?;
        ctl.close().await?;
        let mut differences = compare(&mine, &theirs, &local.name, peer);
        if !set.excludes.is_empty() {
            explain_kept_dirs(&mut differences, &mine, &theirs);
        }
        Ok(VerifyReport {
            set: set.name.clone(),
            local_entries: mine.len() as u64,
            peer_entries: theirs.len() as u64,
            bytes: mine.iter().map(|e| e.size).sum(),
            differences,
            local_unreadable: unreadable.into_iter().map(|(p, w)| (show_path(&p), w)).collect(),
            peer_unreadable: end
                .failures
                .listed
                .iter()
                .map(|f| (show_path(&f.path), f.reason.clone()))
                .collect(),
            elapsed_s: started.elapsed().as_secs_f64(),
        })
    }
    .await;
    if let Err(e) = &result {
        ctl.fail(e).await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verify_hashes_fixed_blocks_and_tells_one_changed_byte() {
        let set = in_blocks(&MirrorSet::for_tests(
            "Fx",
            "Fx".into(),
            &[("data", false)],
            ChunkParams::default(),
        ));
        let block = VERIFY_BLOCK as usize;
        let mut data: Vec<u8> = (0..block * 5 / 2).map(|i| (i * 7 % 251) as u8).collect();
        let a = crate::chunk::chunk_bytes(&data, set.chunk).unwrap();
        let lens: Vec<u32> = a.chunks.iter().map(|c| c.len).collect();
        assert_eq!(lens, vec![VERIFY_BLOCK, VERIFY_BLOCK, VERIFY_BLOCK / 2]);
        for (c, piece) in a.chunks.iter().zip(data.chunks(block)) {
            assert_eq!(c.hash, *blake3::hash(piece).as_bytes());
        }
        data[block + 3] ^= 1;
        let b = crate::chunk::chunk_bytes(&data, set.chunk).unwrap();
        assert_ne!(a.file_hash(), b.file_hash());
        assert_eq!(a.chunks[0], b.chunks[0]);
    }
}
