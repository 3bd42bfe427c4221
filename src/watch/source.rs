//! Event sources: where a set's filesystem events come from. A source
//! runs its own thread, turns kernel events into [`Event`]s on set paths
//! (paths outside the set's roots are dropped here, so unrelated activity
//! never fills the queue) and hands them to the engine through the
//! bounded [`Queue`].
//!
//! Two kinds:
//! * `inotify` (`inotify.rs`): a watch per directory, added recursively;
//!   limited by `fs.inotify.max_user_watches`. When the limit is reached
//!   the tree is reported unwatchable and the engine re-scans it
//!   periodically instead — never silently unwatched.
//! * `fanotify` (`fanotify.rs`): one mark per filesystem, as root; no
//!   per-directory limit.
//!
//! [`Source::watch_tree`] is the engine's barrier for new directories:
//! it returns once events under the directory are being delivered, so a
//! scan started afterwards cannot miss a file (what was created before is
//! found by the scan, what comes after raises an event). Sources know the
//! set's roots and nothing of scanning, the index or the peer.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::inotify::Inotify;
use super::queue::Queue;
use crate::config::{Excludes, MirrorSet};

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

/// The roots of one set and the mapping between local and set paths, and
/// the set's exclude rules: a source drops the events of excluded paths
/// and (inotify) adds no watch below an excluded directory.
#[derive(Debug, Clone)]
pub(crate) struct Roots(pub Vec<WatchRoot>, pub Excludes);

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
            set.excludes.clone(),
        )
    }

    /// Whether the set's rules exclude `path` (a set path in one of the
    /// roots), itself or through a directory above it.
    pub fn excluded(&self, path: &[u8], is_dir: Option<bool>) -> bool {
        if self.1.is_empty() {
            return false;
        }
        self.covering(path)
            .is_some_and(|r| self.1.excludes_below(&r.set_path, path, is_dir))
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

    /// The root a set path is, or lies below.
    pub fn covering(&self, path: &[u8]) -> Option<&WatchRoot> {
        self.0.iter().find(|r| {
            path == &r.set_path[..]
                || (r.dir
                    && path.len() > r.set_path.len()
                    && path.starts_with(&r.set_path)
                    && path[r.set_path.len()] == b'/')
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

/// The message for a full inotify watch table, with the sysctl to raise it.
pub(crate) fn limit_message() -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    let global = read("/proc/sys/fs/inotify/max_user_watches");
    // In a user namespace its own, possibly lower, limit applies too.
    let userns = read("/proc/sys/user/max_inotify_watches").filter(|u| global.is_none_or(|g| *u < g));
    let now = match (global, userns) {
        (Some(g), Some(u)) => format!("fs.inotify.max_user_watches = {g}, user.max_inotify_watches = {u}"),
        (Some(g), None) => format!("fs.inotify.max_user_watches = {g}"),
        (None, Some(u)) => format!("user.max_inotify_watches = {u}"),
        (None, None) => "fs.inotify.max_user_watches".into(),
    };
    format!(
        "the inotify watch limit is reached ({now}); raise it, e.g. \
         `sysctl fs.inotify.max_user_watches=1048576` (persist it in /etc/sysctl.d/)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ChunkParams;

    fn set() -> MirrorSet {
        MirrorSet::for_tests(
            "Ft",
            PathBuf::from("/c/Ft"),
            &[("/srv/data", true), ("/etc/printcap", false)],
            ChunkParams::default(),
        )
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
}
