//! The inotify event source: a watch per directory of the set's directory
//! roots (and on the directory of each file root), through the thin
//! `inotify` crate.
//!
//! Why not the `notify` crate's inotify backend: it always asks for
//! `IN_OPEN` and `IN_CLOSE_NOWRITE`, so every directory the scanner lists
//! and every file it reads raises two events in the watched set. A re-scan
//! after a queue overflow then overflows the queue again by itself — an
//! endless re-scan loop (reproduced with `fs.inotify.max_queued_events` =
//! 16; on a large tree the default queue is not safe either). It also stops
//! adding watches silently after the first `ENOSPC` of a batch. Here the
//! mask holds only changes, and every directory that cannot be watched is
//! reported by name.
//!
//! Watches are added by the engine thread ([`Source::watch_tree`]): for
//! the roots at start, and for each new or moved-in directory before it is
//! scanned, which makes the scan race-free (see `source.rs`). The reading
//! thread maps each event's watch to its directory, drops what lies
//! outside the roots, and removes the watches of a directory moved away
//! (they would report under its old name). Knows nothing of scanning.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use inotify::{EventMask, WatchDescriptor, WatchMask, Watches};

use super::coalesce::Event;
use super::queue::Queue;
use super::source::{Roots, Source, Unwatchable, Watched, limit_message};

/// Changes only: no opens, reads or closes without writing.
fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::MODIFY
        | WatchMask::CLOSE_WRITE
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
        | WatchMask::DONT_FOLLOW
        | WatchMask::EXCL_UNLINK
}

/// Which directory each watch is on, as a path relative to the node root
/// (a set path, or the directory of a file root).
#[derive(Debug, Default)]
struct WatchMap {
    dirs: HashMap<WatchDescriptor, Vec<u8>>,
}

impl WatchMap {
    /// Forgets (and removes) the watches of `dir` and everything below it.
    fn remove_tree(&mut self, dir: &[u8], watches: &mut Watches) {
        self.dirs.retain(|wd, p| {
            let under = p == dir || (p.len() > dir.len() && p.starts_with(dir) && p[dir.len()] == b'/');
            if under {
                // The watch may already be gone with its directory.
                let _ = watches.remove(wd.clone());
            }
            !under
        });
    }
}

pub(crate) struct Inotify {
    watches: Watches,
    map: Arc<Mutex<WatchMap>>,
    roots: Arc<Roots>,
    stop: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

fn lock(m: &Mutex<WatchMap>) -> MutexGuard<'_, WatchMap> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inotify {
    pub(crate) fn start(roots: Arc<Roots>, queue: Arc<Queue>) -> Result<Inotify, String> {
        let ino = inotify::Inotify::init().map_err(|e| match e.raw_os_error() {
            Some(libc::EMFILE) => {
                format!("inotify_init: {e} (the inotify instance limit, fs.inotify.max_user_instances, is reached)")
            }
            _ => format!("inotify_init: {e}"),
        })?;
        // SAFETY: plain syscall.
        let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if stop < 0 {
            return Err(format!("eventfd: {}", io::Error::last_os_error()));
        }
        // SAFETY: fresh descriptor, owned here.
        let stop = unsafe { OwnedFd::from_raw_fd(stop) };
        let map = Arc::new(Mutex::new(WatchMap::default()));
        let watches = ino.watches();
        let reader = Reader {
            roots: roots.clone(),
            queue,
            map: map.clone(),
            watches: ino.watches(),
        };
        let stop_fd = stop.as_raw_fd();
        let thread = std::thread::Builder::new()
            .name("hamirror-inotify".into())
            .spawn(move || {
                let q = reader.queue.clone();
                // A reader that dies must not leave the set silently unwatched.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.run(ino, stop_fd))).is_err() {
                    q.fail("the inotify reader crashed".into());
                }
            })
            .map_err(|e| format!("cannot start the inotify thread: {e}"))?;
        Ok(Inotify {
            watches,
            map,
            roots,
            stop,
            thread: Some(thread),
        })
    }

    /// Adds a watch on the directory `local` (`rel` relative to the node
    /// root). `Ok(false)` when it vanished meanwhile.
    fn add(&mut self, local: &Path, rel: Vec<u8>) -> Result<bool, Unwatchable> {
        match self.watches.add(local, mask()) {
            Ok(wd) => {
                lock(&self.map).dirs.insert(wd, rel);
                Ok(true)
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => Err(Unwatchable {
                why: limit_message(),
                limit: true,
            }),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)) => Ok(false),
            Err(e) => Err(Unwatchable {
                why: format!("cannot watch {}: {e}", local.display()),
                limit: false,
            }),
        }
    }

    /// Watches `local` (set path `path`) and every directory below it on
    /// the same filesystem, depth first.
    fn add_tree(&mut self, local: PathBuf, path: Vec<u8>, dev: u64) -> Result<(), Unwatchable> {
        let mut stack = vec![(local, path)];
        while let Some((dir, rel)) = stack.pop() {
            if !self.add(&dir, rel.clone())? {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name();
                if crate::scan::is_temp_name(name.as_bytes()) {
                    continue;
                }
                // Not followed: a symlink is not a directory here (the type
                // comes from the listing, no stat for files); a mount
                // point's contents are not part of the set.
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_dir() && meta.dev() == dev {
                    let mut sub = rel.clone();
                    sub.push(b'/');
                    sub.extend_from_slice(name.as_bytes());
                    // Nothing below an excluded directory is mirrored: no
                    // watch (they are a limited resource) and no events.
                    if !self.roots.excluded(&sub, Some(true)) {
                        stack.push((entry.path(), sub));
                    }
                }
            }
        }
        Ok(())
    }
}

impl Source for Inotify {
    fn name(&self) -> &'static str {
        "inotify"
    }

    fn watch_tree(&mut self, path: &[u8]) -> Result<Watched, Unwatchable> {
        let Some((root, local)) = self.roots.local(path) else {
            return Ok(Watched::Missing);
        };
        if !root.dir && path == &root.set_path[..] {
            // A file root is watched through its directory: an editor's save
            // replaces the file, and with it a watch on the file itself.
            let (Some(dir), Some(cut)) = (local.parent(), path.iter().rposition(|b| *b == b'/')) else {
                return Ok(Watched::Missing);
            };
            if !dir.is_dir() || !local.exists() {
                return Ok(Watched::Missing);
            }
            return Ok(if self.add(dir, path[..cut].to_vec())? {
                Watched::Yes
            } else {
                Watched::Missing
            });
        }
        let dev = match std::fs::symlink_metadata(&local) {
            Ok(m) if m.is_dir() => m.dev(),
            _ => return Ok(Watched::Missing),
        };
        if self.roots.excluded(path, Some(true)) {
            return Ok(Watched::Yes);
        }
        self.add_tree(local, path.to_vec(), dev)?;
        Ok(Watched::Yes)
    }
}

impl Drop for Inotify {
    fn drop(&mut self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        unsafe { libc::write(self.stop.as_raw_fd(), (&raw const one).cast(), 8) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reading thread's state.
struct Reader {
    roots: Arc<Roots>,
    queue: Arc<Queue>,
    map: Arc<Mutex<WatchMap>>,
    watches: Watches,
}

impl Reader {
    fn run(mut self, mut ino: inotify::Inotify, stop: RawFd) {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: ino.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: stop,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfd entries.
            if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                self.queue
                    .fail(format!("inotify: poll: {}", io::Error::last_os_error()));
                return;
            }
            if fds[1].revents != 0 {
                return;
            }
            loop {
                let events = match ino.read_events(&mut buf) {
                    Ok(evs) => evs,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::warn!("inotify: read: {e}; re-scanning");
                        self.queue.lost();
                        break;
                    }
                };
                for ev in events {
                    self.event(ev.wd, ev.mask, ev.name);
                }
            }
        }
    }

    fn event(&mut self, wd: WatchDescriptor, mask: EventMask, name: Option<&OsStr>) {
        if mask.contains(EventMask::Q_OVERFLOW) {
            tracing::warn!("inotify: event queue overflow (fs.inotify.max_queued_events); re-scanning");
            self.queue.lost();
            return;
        }
        let mut map = lock(&self.map);
        if mask.contains(EventMask::IGNORED) {
            map.dirs.remove(&wd);
            return;
        }
        if mask.contains(EventMask::UNMOUNT) {
            drop(map);
            self.queue.lost();
            return;
        }
        let Some(dir) = map.dirs.get(&wd).cloned() else { return };
        let path = match name {
            Some(n) => {
                let mut p = dir.clone();
                p.push(b'/');
                p.extend_from_slice(n.as_bytes());
                p
            }
            None => dir.clone(),
        };
        let is_dir = mask.contains(EventMask::ISDIR);
        if name.is_some() && is_dir && mask.contains(EventMask::MOVED_FROM) {
            // Its watches would report under the old name; the engine
            // watches the directory again where it lands (if in the set).
            map.remove_tree(&path, &mut self.watches);
        }
        if name.is_none() && mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF) {
            let is_root = self.roots.0.iter().any(|r| r.set_path == path);
            if mask.contains(EventMask::MOVE_SELF) {
                map.remove_tree(&path, &mut self.watches);
            }
            drop(map);
            // Only a root's own disappearance is news: for any other
            // directory its parent reported it.
            if is_root {
                self.queue.push(Event::Removed { path, tree: true });
            }
            return;
        }
        drop(map);
        if self.roots.covering(&path).is_none() || self.roots.excluded(&path, Some(is_dir)) {
            return;
        }
        for ev in events(mask, is_dir, path) {
            self.queue.push(ev);
        }
    }
}

/// The engine's events for one inotify event.
fn events(mask: EventMask, is_dir: bool, path: Vec<u8>) -> Vec<Event> {
    let mut out = Vec::with_capacity(1);
    if mask.contains(EventMask::CREATE) {
        out.push(Event::Created {
            path: path.clone(),
            dir: is_dir,
        });
    }
    if mask.contains(EventMask::MODIFY) {
        out.push(Event::Written(path.clone()));
    }
    if mask.contains(EventMask::ATTRIB) {
        out.push(Event::Attrib(path.clone()));
    }
    if mask.contains(EventMask::CLOSE_WRITE) {
        out.push(Event::Closed(path.clone()));
    }
    if mask.contains(EventMask::MOVED_TO) {
        out.push(Event::MovedTo(path.clone()));
    }
    if mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM) {
        out.push(Event::Removed { path, tree: is_dir });
    }
    out
}

#[cfg(test)]
mod tests;
