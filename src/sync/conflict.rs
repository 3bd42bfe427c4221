//! Split brain and unmirrored local writes: what a receiver does with its
//! own changes that the peer does not have.
//!
//! * A pull ([`ConflictPolicy::Keep`]) keeps every file this node changed
//!   since it was last in step whose content differs from the peer's
//!   version, or that the peer does not have, as a conflict copy
//!   `NAME.hamirror-conflict-NODE-TIME` next to it, before the peer's
//!   version replaces it. Deleted here versus changed there keeps the
//!   peer's (changed) file, no copy. Conflict copies are never copied again
//!   (a copy with the same content, or any file carrying the marker), and a
//!   full listing from the peer never deletes one the peer has not got yet.
//! * After the pull, [`deliver`] offers the copies the peer lacks in a
//!   `Conflicts` conversation, which the holder accepts
//!   ([`ConflictPolicy::Accept`]): only new paths carrying the marker (and
//!   missing parent directories), never an overwrite of different content,
//!   never a delete — so the copies end up on both nodes.
//! * `--discard-mine` ([`ConflictPolicy::DiscardMine`]) and a normal push
//!   receiver ([`ConflictPolicy::Overwrite`]) keep nothing; a push receiver
//!   with unmirrored changes refuses the push instead (`serve.rs`).
//!
//! File work is synchronous (called on blocking threads). Depends on index,
//! apply (paths, metadata) and the sender half; not on the failover side.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use hamirror_wire::{Entry, EntryKind, ErrorCode, Goodbye, Hash, Hello, Message, Mode, Position};

use super::SyncError;
use super::control::Control;
use super::send::{Offer, send_half};
use crate::apply::Dest;
use crate::config::{MirrorSet, Node};
use crate::index::{Fingerprint, Index, IndexError, Upsert};
use crate::transport::Connection;

/// What marks a conflict copy's file name: `NAME` + this + `NODE-TIME`.
pub const CONFLICT_MARK: &str = ".hamirror-conflict-";

/// Whether the last component of a set path carries the conflict marker.
pub fn is_conflict_copy(path: &[u8]) -> bool {
    let name = path.rsplit(|b| *b == b'/').next().unwrap_or(path);
    name.windows(CONFLICT_MARK.len()).any(|w| w == CONFLICT_MARK.as_bytes())
}

/// The path a conflict copy was made from.
fn original_of(path: &[u8]) -> Option<&[u8]> {
    let mark = CONFLICT_MARK.as_bytes();
    let at = path.windows(mark.len()).rposition(|w| w == mark)?;
    Some(&path[..at])
}

/// The time in conflict copy names: UTC, `20261121T234500Z`.
pub fn conflict_time_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A file kept as a conflict copy: (original set path, copy's set path).
pub(crate) type Kept = (Vec<u8>, Vec<u8>);
/// An offered path refused, and why.
pub(crate) type Refused = (Vec<u8>, String);

/// What a receiver does with its own changes the sender lacks.
pub(crate) enum ConflictPolicy {
    /// A push receiver: the sender's version wins (unmirrored changes were
    /// refused before the offer, see `serve.rs`).
    Overwrite,
    /// A pull with `--discard-mine`: the peer's side whole.
    DiscardMine,
    /// A pull: keep this node's changes as conflict copies.
    Keep(Conflicts),
    /// The holder receiving conflict copies: new marked paths only.
    Accept,
}

/// This node's unmirrored changes and the conflict copies made of them.
pub(crate) struct Conflicts {
    node: String,
    time: String,
    /// Paths changed here since the last point in step; `None`: unknown,
    /// every entry counts.
    mine: Option<HashSet<Vec<u8>>>,
    made: Mutex<Vec<Entry>>,
}

impl Conflicts {
    pub(crate) fn new(node: &str, mine: Option<Vec<Vec<u8>>>, time: &str) -> Conflicts {
        Conflicts {
            node: node.to_string(),
            time: if time.is_empty() {
                conflict_time_now()
            } else {
                time.to_string()
            },
            mine: mine.map(|m| m.into_iter().collect()),
            made: Mutex::new(Vec::new()),
        }
    }

    fn is_mine(&self, path: &[u8]) -> bool {
        self.mine.as_ref().is_none_or(|m| m.contains(path))
    }

    /// Whether a full listing that lacks `path` may delete it here: not a
    /// conflict copy the peer has not been given yet.
    pub(crate) fn protects(&self, path: &[u8]) -> bool {
        is_conflict_copy(path) && self.is_mine(path)
    }

    /// Finds this node's files that the offer would replace or delete while
    /// the peer lacks their content, and (unless `dry_run`) copies each to
    /// a conflict copy beside it. Returns (original, copy) paths; the copy
    /// is empty in a dry run.
    pub(crate) fn keep(
        &self,
        index: &Index,
        set: &MirrorSet,
        root: &Path,
        offered: &[Entry],
        dry_run: bool,
    ) -> Result<Vec<Kept>, SyncError> {
        if self.mine.as_ref().is_some_and(|m| m.is_empty()) {
            return Ok(Vec::new());
        }
        let theirs: HashMap<&[u8], &Entry> = offered.iter().map(|e| (e.path.as_slice(), e)).collect();
        let mut copies: HashMap<Vec<u8>, HashSet<Hash>> = HashMap::new();
        let mut candidates = Vec::new();
        for e in index.entries(&set.name)? {
            let e = e?;
            if is_conflict_copy(&e.path) {
                if let Some(orig) = original_of(&e.path) {
                    copies.entry(orig.to_vec()).or_default().insert(e.file_hash);
                }
            } else if e.kind == EntryKind::File && self.is_mine(&e.path) {
                candidates.push(e);
            }
        }
        let dest = Dest::new(root, set);
        let mut out = Vec::new();
        for mine in candidates {
            let differs = match theirs.get(mine.path.as_slice()) {
                Some(t) => t.kind != EntryKind::File || t.file_hash != mine.file_hash,
                // Absent from a full listing, or deleted there: the peer
                // lacks it. Unmentioned in a delta: the peer still has the
                // version this node had when in step, not this one.
                None => true,
            };
            let kept = copies.get(&mine.path).is_some_and(|h| h.contains(&mine.file_hash));
            if !differs || kept {
                continue;
            }
            let mut copy_path = Vec::new();
            if !dry_run {
                let copy = self.copy(&dest, &mine)?;
                copy_path = copy.path.clone();
                self.made.lock().unwrap_or_else(|p| p.into_inner()).push(copy);
            }
            out.push((mine.path, copy_path));
        }
        Ok(out)
    }

    /// Copies one file to a fresh conflict name beside it, through a temp
    /// file renamed into place, with the entry's owner, mode and mtime.
    fn copy(&self, dest: &Dest, e: &Entry) -> Result<Entry, SyncError> {
        let io = |path: &[u8], source: std::io::Error| crate::apply::ApplyError::Io {
            path: crate::scan::show_path(path).to_string(),
            source,
        };
        let mut n = 0;
        let path = loop {
            let mut p = e.path.clone();
            p.extend_from_slice(format!("{CONFLICT_MARK}{}-{}", self.node, self.time).as_bytes());
            if n > 0 {
                p.extend_from_slice(format!("-{n}").as_bytes());
            }
            if matches!(dest.stat(&p), Err(err) if err.kind() == std::io::ErrorKind::NotFound) {
                break p;
            }
            n += 1;
        };
        let tmp = crate::apply::temp_path(&path, &e.file_hash);
        // The directory's times are the holder's to set (they are mirrored
        // like any metadata): a copy made here must not change them.
        let dir = crate::apply::dest::split(&path).0.to_vec();
        let dir_mtime = dest.stat(&dir).ok().map(|st| crate::apply::meta::stat_mtime_ns(&st));
        let entry = Entry { path, ..e.clone() };
        let done = (|| {
            let mut src = dest.open_file(&e.path, crate::apply::Open::Read)?;
            let _ = dest.remove(&tmp);
            let mut out = dest.open_file(&tmp, crate::apply::Open::Create)?;
            std::io::copy(&mut src, &mut out)?;
            crate::apply::meta::set_on_file(&out, &entry)?;
            // After the mode (an access ACL rewrites the group bits): the
            // copy carries the attributes and ACLs of the version it keeps.
            let fd = std::os::fd::AsFd::as_fd(&out);
            for w in crate::xattr::apply(crate::xattr::On::Fd(fd), &entry.xattrs, &dest.xattrs) {
                tracing::warn!(copy = %crate::scan::show_path(&entry.path), "conflict copy: {w}");
            }
            out.sync_all()?;
            dest.replace(&tmp, &entry.path)
        })();
        if let Err(err) = done {
            let _ = dest.remove(&tmp);
            return Err(io(&entry.path, err).into());
        }
        if let (Some(ns), Ok((parent, name))) = (dir_mtime, dest.parent(&dir)) {
            let _ = crate::apply::meta::set_mtime_at(std::os::fd::AsFd::as_fd(&parent), name, ns);
        }
        tracing::warn!(
            path = %crate::scan::show_path(&e.path),
            copy = %crate::scan::show_path(&entry.path),
            "conflict: this node's version differs from the peer's; kept as a conflict copy"
        );
        Ok(entry)
    }

    /// Commits the copies made to the index (after the apply's own commit,
    /// so they count as this node's changes until the peer has them).
    pub(crate) fn commit_made(&self, index: &Index, set: &MirrorSet, root: &Path) -> Result<(), IndexError> {
        let made = std::mem::take(&mut *self.made.lock().unwrap_or_else(|p| p.into_inner()));
        let dest = Dest::new(root, set);
        let upserts: Vec<Upsert> = made
            .iter()
            .map(|e| Upsert {
                entry: e.clone(),
                // The file may have changed between the scan and the copy:
                // unknown, so the next scan reads it again.
                stat: dest
                    .stat(&e.path)
                    .ok()
                    .filter(|st| st.st_size as u64 == e.size)
                    .map(|st| Fingerprint::of_stat(&st)),
            })
            .collect();
        index.commit(&set.name, &upserts, &[])?;
        Ok(())
    }
}

/// What the holder accepts from a conflict delivery: files carrying the
/// marker that are new (or already identical), and directories it lacks.
/// Returns the accepted entries and the refused ones with the reason.
pub(crate) fn accept(
    index: &Index,
    set: &MirrorSet,
    root: &Path,
    offered: Vec<Entry>,
    deletes: &[Vec<u8>],
) -> Result<(Vec<Entry>, Vec<Refused>), SyncError> {
    if !deletes.is_empty() {
        return Err(SyncError::protocol("a conflict delivery may not delete"));
    }
    let dest = Dest::new(root, set);
    let (mut ok, mut refused) = (Vec::new(), Vec::new());
    for e in offered {
        let here = index.entry(&set.name, &e.path)?;
        // Something there the index does not know (or a path blocked by a
        // symlink on the way): not free.
        let on_disk = !matches!(dest.stat(&e.path), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
        match e.kind {
            // Parents of the copies: created when missing, never changed.
            EntryKind::Dir if here.is_none() && !on_disk => ok.push(e),
            EntryKind::Dir => {}
            EntryKind::File if is_conflict_copy(&e.path) => match here {
                Some(h) if h.kind == EntryKind::File && h.file_hash == e.file_hash => {}
                None if !on_disk => ok.push(e),
                _ => refused.push((e.path, "a different file already has this name here".to_string())),
            },
            _ => refused.push((e.path, "not a conflict copy".to_string())),
        }
    }
    Ok((ok, refused))
}

/// Delivers this node's conflict copies in `paths` (set paths) to the
/// holder, with the directories above them, as a `Conflicts` conversation.
/// When the holder has taken every one, this node's copy counts as in step
/// again. Returns the number of copies delivered.
///
/// # Errors
/// As a push: the holder's refusal, a broken link, index errors.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn deliver(
    conn: &Connection,
    local: &Node,
    peer: &str,
    set: &MirrorSet,
    group: &str,
    epoch: u64,
    index: Arc<Index>,
    paths: Vec<Vec<u8>>,
    session: u64,
) -> Result<u64, SyncError> {
    if paths.is_empty() {
        return Ok(0);
    }
    let (entries, generation) = {
        let (idx, name) = (index.clone(), set.name.clone());
        super::blocking(move || -> Result<_, IndexError> {
            let mut want: Vec<Vec<u8>> = Vec::new();
            for p in &paths {
                let mut at = 0;
                while let Some(i) = p[at..].iter().position(|b| *b == b'/') {
                    want.push(p[..at + i].to_vec());
                    at += i + 1;
                }
                want.push(p.clone());
            }
            want.sort();
            want.dedup();
            let mut entries = Vec::new();
            for p in &want {
                if let Some(e) = idx.entry(&name, p)? {
                    entries.push(e);
                }
            }
            Ok((entries, idx.generation(&name)?))
        })
        .await?
    };
    let files = entries.iter().filter(|e| e.kind == EntryKind::File).count() as u64;
    let position = Position {
        index: index.id(),
        generation,
    };
    // The pull that made the copies may still be winding down on the
    // holder (its conversation holds the set): retry a moment on Busy.
    let mut tries = 0;
    let sent = loop {
        match offer_copies(
            conn, local, peer, set, group, epoch, &index, &entries, position, session,
        )
        .await
        {
            Err(SyncError::Refused {
                code: ErrorCode::Busy, ..
            }) if tries < 40 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => break other?,
        }
    };
    let Some(applied) = sent.applied else {
        return Err(SyncError::protocol("the conflict delivery ended without Applied"));
    };
    if !applied.complete || applied.failures.total > 0 {
        let first = applied
            .failures
            .listed
            .first()
            .map(|f| format!("/{}: {}", crate::scan::show_path(&f.path), f.reason))
            .unwrap_or_default();
        return Err(SyncError::Refused {
            peer: peer.to_string(),
            code: ErrorCode::Diverged,
            reason: format!(
                "{} of the conflict copies could not be delivered ({first})",
                applied.failures.total
            ),
        });
    }
    let (idx, name) = (index.clone(), set.name.clone());
    super::blocking(move || idx.mark_synced(&name, generation)).await?;
    Ok(files)
}

/// One `Conflicts` conversation offering `entries`.
#[allow(clippy::too_many_arguments)]
async fn offer_copies(
    conn: &Connection,
    local: &Node,
    peer: &str,
    set: &MirrorSet,
    group: &str,
    epoch: u64,
    index: &Arc<Index>,
    entries: &[Entry],
    position: Position,
    session: u64,
) -> Result<super::SendReport, SyncError> {
    let (tx, rx) = conn.open_control().await?;
    let mut ctl = Control::new(conn, tx, rx);
    let result = async {
        let hello = Hello {
            offer: Some(position),
            ..super::control::hello(Mode::Conflicts, local, peer, set, group, epoch, session)
        };
        ctl.send(&Message::Hello(hello)).await?;
        ctl.hello_ok().await?;
        let offer = Offer {
            index: index.clone(),
            set: set.name.clone(),
            root: local.conf.root.clone(),
            session,
            position,
            acked: None,
            empty_roots: vec![],
            dry_run: false,
            progress: None,
            only: Some(entries.to_vec()),
            rules: None,
        };
        let sent = send_half(conn, &mut ctl, offer).await?;
        ctl.send(&Message::Goodbye(Goodbye { reason: "done".into() })).await?;
        ctl.close().await?;
        Ok(sent)
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
    fn the_marker_is_recognised_in_the_last_component_only() {
        assert!(is_conflict_copy(b"srv/a.txt.hamirror-conflict-s2-20261121T234500Z"));
        assert!(!is_conflict_copy(b"srv/x.hamirror-conflict-s2-1/a.txt"));
        assert!(!is_conflict_copy(b"srv/a.txt"));
        assert_eq!(
            original_of(b"srv/a.txt.hamirror-conflict-s2-20261121T234500Z"),
            Some(&b"srv/a.txt"[..])
        );
    }

    #[test]
    fn conflict_times_are_utc_compact() {
        let t = conflict_time_now();
        assert_eq!(t.len(), 16, "{t}");
        assert!(
            t.starts_with("20") && t.ends_with('Z') && t.as_bytes()[8] == b'T',
            "{t}"
        );
    }
}
