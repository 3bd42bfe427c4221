//! Event sources: where a set's filesystem events come from. A source
//! runs its own thread, turns kernel events into [`Event`]s on set paths
//! (paths outside the set's roots are dropped here, so unrelated activity
//! never fills the queue) and hands them to the engine through the
//! bounded [`Queue`].
//!
//! Two kinds:
//! * `inotify` through the `notify` crate: a watch per directory, added
//!   recursively; limited by `fs.inotify.max_user_watches`. When the limit
//!   is reached the directory is reported [`Input::Unwatched`] and the
//!   engine re-scans it periodically instead — never silently unwatched.
//! * `fanotify` (`fanotify.rs`): one mark per filesystem, as root; no
//!   per-directory limit.
//!
//! [`Source::watch_tree`] is the engine's barrier for new directories:
//! it returns once events under the directory are being delivered, so a
//! scan started afterwards cannot miss a file (what was created before is
//! found by the scan, what comes after raises an event).

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};

use super::coalesce::Event;
use super::queue::Queue;
use crate::config::MirrorSet;

/// Which kernel interface delivers events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventSource {
    /// fanotify when running as root on a kernel and filesystem that
    /// support it, inotify otherwise.
    #[default]
    Auto,
    Inotify,
    Fanotify,
}

/// What a source hands to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    Event(Event),
    /// A directory (set path) whose events cannot be delivered; `limit`
    /// when the inotify watch limit is the reason.
    Unwatched {
        path: Vec<u8>,
        why: String,
        limit: bool,
    },
}

/// The outcome of [`Source::watch_tree`] for a path that can be watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Watched {
    Yes,
    /// The path does not exist (nothing to watch).
    Missing,
}

/// Why a tree cannot be watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unwatchable {
    pub why: String,
    pub limit: bool,
}

/// A running event source; dropping it stops it.
pub(crate) trait Source: Send {
    /// `inotify` or `fanotify`, for the log.
    fn name(&self) -> &'static str;
    /// Makes sure events are delivered for the set path `path` (a root, or
    /// a directory below a directory root) and everything below it, adding
    /// what is missing (after a rename, a lost event, a replaced root).
    /// Returns once they are.
    fn watch_tree(&mut self, path: &[u8]) -> Result<Watched, Unwatchable>;
}

/// One root of the set, as the sources see it.
#[derive(Debug, Clone)]
pub(crate) struct WatchRoot {
    /// Set path (`srv/samba`).
    pub set_path: Vec<u8>,
    /// Where it lies on this node, as configured (`<root>/srv/samba`).
    pub local: PathBuf,
    /// The same with the node root's symlinks resolved: the form the
    /// kernel reports paths in (fanotify).
    pub canonical: PathBuf,
    pub dir: bool,
}

/// The roots of one set and the mapping between local and set paths.
#[derive(Debug, Clone)]
pub(crate) struct Roots(pub Vec<WatchRoot>);

impl Roots {
    pub fn new(set: &MirrorSet, node_root: &Path) -> Roots {
        let canonical_root = std::fs::canonicalize(node_root).unwrap_or_else(|_| node_root.to_path_buf());
        Roots(
            set.roots
                .iter()
                .map(|r| {
                    let rel = r.path.strip_prefix("/").unwrap_or(&r.path);
                    WatchRoot {
                        set_path: rel.as_os_str().as_bytes().to_vec(),
                        local: node_root.join(rel),
                        canonical: canonical_root.join(rel),
                        dir: r.dir,
                    }
                })
                .collect(),
        )
    }

    /// The set path of a local path (configured or canonical form), if it
    /// lies in one of the roots.
    pub fn set_path(&self, local: &Path) -> Option<Vec<u8>> {
        self.0.iter().find_map(|r| {
            let rest = local
                .strip_prefix(&r.local)
                .or_else(|_| local.strip_prefix(&r.canonical))
                .ok()?;
            let rest = rest.as_os_str().as_bytes();
            if rest.is_empty() {
                Some(r.set_path.clone())
            } else if r.dir {
                let mut p = r.set_path.clone();
                p.push(b'/');
                p.extend_from_slice(rest);
                Some(p)
            } else {
                None
            }
        })
    }

    /// The root a set path lies in, and the path on this node.
    pub fn local(&self, path: &[u8]) -> Option<(&WatchRoot, PathBuf)> {
        self.0.iter().find_map(|r| {
            if path == &r.set_path[..] {
                return Some((r, r.local.clone()));
            }
            let rest = path.strip_prefix(&r.set_path[..])?.strip_prefix(b"/")?;
            r.dir.then(|| (r, r.local.join(std::ffi::OsStr::from_bytes(rest))))
        })
    }
}

/// Starts the source `kind` for `roots`. `Auto` tries fanotify when
/// running as root and falls back to inotify, logging why.
///
/// # Errors
/// The chosen interface cannot be started (fanotify asked for explicitly
/// but unavailable; no inotify instance left).
pub(crate) fn start(kind: EventSource, roots: Arc<Roots>, queue: Arc<Queue>) -> Result<Box<dyn Source>, String> {
    match kind {
        EventSource::Inotify => Ok(Box::new(Inotify::start(roots, queue)?)),
        EventSource::Fanotify => Ok(Box::new(super::fanotify::Fanotify::start(roots, queue)?)),
        EventSource::Auto => {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == 0 {
                match super::fanotify::Fanotify::start(roots.clone(), queue.clone()) {
                    Ok(f) => return Ok(Box::new(f)),
                    Err(why) => tracing::info!("fanotify unavailable ({why}); using inotify"),
                }
            }
            Ok(Box::new(Inotify::start(roots, queue)?))
        }
    }
}

/// The inotify source, through the `notify` crate.
pub(crate) struct Inotify {
    watcher: notify::INotifyWatcher,
    roots: Arc<Roots>,
}

impl Inotify {
    fn start(roots: Arc<Roots>, queue: Arc<Queue>) -> Result<Inotify, String> {
        let r = roots.clone();
        let handler = move |res: notify::Result<notify::Event>| deliver(&r, &queue, res);
        // Symlinks are never followed: a link to `/` must not be watched.
        let config = notify::Config::default().with_follow_symlinks(false);
        let watcher = notify::INotifyWatcher::new(handler, config).map_err(|e| format!("inotify: {e}"))?;
        Ok(Inotify { watcher, roots })
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
        // A file root is watched through its directory (an editor's save
        // replaces the file, and with it a watch on the file itself).
        let (target, mode) = if !root.dir && path == &root.set_path[..] {
            match local.parent() {
                Some(p) => (p.to_path_buf(), RecursiveMode::NonRecursive),
                None => return Ok(Watched::Missing),
            }
        } else {
            (local, RecursiveMode::Recursive)
        };
        if !target.is_dir() {
            return Ok(Watched::Missing);
        }
        match self.watcher.watch(&target, mode) {
            Ok(()) => Ok(Watched::Yes),
            Err(e) => match e.kind {
                notify::ErrorKind::PathNotFound => Ok(Watched::Missing),
                notify::ErrorKind::Io(ref io) if io.kind() == std::io::ErrorKind::NotFound => Ok(Watched::Missing),
                notify::ErrorKind::MaxFilesWatch => Err(Unwatchable {
                    why: limit_message(),
                    limit: true,
                }),
                _ => Err(Unwatchable {
                    why: format!("cannot watch {}: {e}", target.display()),
                    limit: false,
                }),
            },
        }
    }
}

/// The message for a full inotify watch table, with the sysctl to raise it.
pub(crate) fn limit_message() -> String {
    let now = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    format!(
        "the inotify watch limit is reached (fs.inotify.max_user_watches = {now}); raise it, e.g. \
         `sysctl fs.inotify.max_user_watches=1048576` (persist it in /etc/sysctl.d/)"
    )
}

/// Turns one `notify` callback into inputs for the engine.
fn deliver(roots: &Roots, queue: &Queue, res: notify::Result<notify::Event>) {
    let ev = match res {
        Ok(ev) => ev,
        Err(e) => {
            if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) {
                let paths: Vec<Vec<u8>> = e.paths.iter().filter_map(|p| roots.set_path(p)).collect();
                for path in paths {
                    queue.push(Input::Unwatched {
                        path,
                        why: limit_message(),
                        limit: true,
                    });
                }
            } else {
                // An error reading events: nothing says which were lost.
                tracing::warn!("inotify: {e}; re-scanning");
                queue.lost();
            }
            return;
        }
    };
    if ev.need_rescan() {
        queue.lost();
        return;
    }
    let make: fn(Vec<u8>) -> Event = match ev.kind {
        EventKind::Create(CreateKind::Folder) => |p| Event::Created { path: p, dir: true },
        EventKind::Create(_) => |p| Event::Created { path: p, dir: false },
        EventKind::Remove(RemoveKind::File) => |p| Event::Removed { path: p, tree: false },
        EventKind::Remove(_) => |p| Event::Removed { path: p, tree: true },
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => |p| Event::Removed { path: p, tree: true },
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => Event::MovedTo,
        // `Both` repeats a From and a To already delivered.
        EventKind::Modify(ModifyKind::Name(_)) => return,
        EventKind::Modify(ModifyKind::Metadata(_)) => Event::Attrib,
        EventKind::Modify(_) => Event::Written,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Event::Closed,
        // Opens and reads (our own included) change nothing.
        EventKind::Access(_) | EventKind::Any | EventKind::Other => return,
    };
    for p in &ev.paths {
        if let Some(path) = roots.set_path(p) {
            queue.push(Input::Event(make(path)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ChunkParams, SetRoot};

    fn set() -> MirrorSet {
        let root = |p: &str, dir| SetRoot {
            path: PathBuf::from(p),
            dir,
            line: 1,
        };
        MirrorSet {
            name: "Ft".into(),
            file: PathBuf::from("/c/Ft"),
            roots: vec![root("/srv/data", true), root("/etc/printcap", false)],
            chunk: ChunkParams::default(),
            delete_limit: 50,
        }
    }

    #[test]
    fn local_and_set_paths_map_both_ways_within_the_roots() {
        let roots = Roots::new(&set(), Path::new("/nonexistent/node"));
        let sp = |s: &str| roots.set_path(Path::new(s)).map(|p| String::from_utf8(p).unwrap());
        assert_eq!(sp("/nonexistent/node/srv/data").as_deref(), Some("srv/data"));
        assert_eq!(sp("/nonexistent/node/srv/data/a/b").as_deref(), Some("srv/data/a/b"));
        assert_eq!(sp("/nonexistent/node/srv/database"), None);
        assert_eq!(sp("/nonexistent/node/etc/printcap").as_deref(), Some("etc/printcap"));
        assert_eq!(sp("/nonexistent/node/etc/printcap/x"), None);
        assert_eq!(sp("/nonexistent/node/etc/passwd"), None);
        let (r, local) = roots.local(b"srv/data/a").unwrap();
        assert!(r.dir);
        assert_eq!(local, Path::new("/nonexistent/node/srv/data/a"));
        assert!(roots.local(b"etc/printcap/x").is_none());
        assert!(roots.local(b"srv/database").is_none());
    }

    #[test]
    fn notify_events_become_set_path_events() {
        let roots = Roots::new(&set(), Path::new("/n"));
        let q = Queue::new(16);
        let send = |kind, path: &str| {
            deliver(&roots, &q, Ok(notify::Event::new(kind).add_path(PathBuf::from(path))));
        };
        send(EventKind::Create(CreateKind::Folder), "/n/srv/data/d");
        send(EventKind::Modify(ModifyKind::Name(RenameMode::From)), "/n/srv/data/x");
        send(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            "/n/etc/printcap",
        );
        send(EventKind::Access(AccessKind::Open(AccessMode::Any)), "/n/srv/data/f");
        send(EventKind::Modify(ModifyKind::Any), "/n/etc/passwd");
        deliver(
            &roots,
            &q,
            Ok(notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan)),
        );
        let d = q.wait(Some(std::time::Instant::now()));
        assert_eq!(
            d.items,
            vec![
                Input::Event(Event::Created {
                    path: b"srv/data/d".to_vec(),
                    dir: true
                }),
                Input::Event(Event::Removed {
                    path: b"srv/data/x".to_vec(),
                    tree: true
                }),
                Input::Event(Event::Closed(b"etc/printcap".to_vec())),
            ]
        );
        assert!(d.lost, "a rescan flag is a loss");
    }
}
