//! The fanotify event source: one `FAN_MARK_FILESYSTEM` mark per
//! filesystem holding a root of the set, reporting the directory and name
//! of each change (`FAN_REPORT_DFID_NAME`, Linux 5.9+). Unlike inotify
//! there is no watch per directory, so no limit to run into and no window
//! in which a new directory is not yet watched. It needs root
//! (`CAP_SYS_ADMIN` for the mark, `CAP_DAC_READ_SEARCH` to open the
//! reported directory handles).
//!
//! The kernel reports a directory as a file handle; it is opened with
//! `open_by_handle_at` and its path read back from `/proc/self/fd`, at the
//! time the event is read rather than when it happened. So an event in a
//! directory renamed since is attributed to its new path, and one in a
//! directory deleted since cannot be placed at all. Both are harmless: the
//! rename and the deletion raise their own events in the parent, which make
//! the engine scan the new subtree and delete the old one. Resolved paths
//! are cached per handle; the cache is dropped whenever a directory is
//! renamed (the only way a directory's path changes).
//!
//! The mark sees every change on the filesystem; events outside the set's
//! roots are dropped here, before they reach the engine's queue, and
//! while only such events come the reader wakes at most every 10 ms (see
//! [`IDLE_READS`]). Knows nothing of scanning or the index.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::coalesce::Event;
use super::queue::Queue;
use super::source::{Roots, Source, Unwatchable, Watched};

/// The events asked for: every change to names, data and metadata.
const MASK: u64 = libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_MOVED_FROM
    | libc::FAN_MOVED_TO
    | libc::FAN_MODIFY
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_ATTRIB
    | libc::FAN_ONDIR;

/// Resolved directories kept before the cache is dropped and rebuilt.
const CACHE_MAX: usize = 65_536;
/// After this many reads in a row with nothing for the set (and events of
/// other processes: our own index writes do not count), the reader
/// waits [`BATCH_WAIT_MS`] before each read: the mark sees the whole
/// filesystem, and waking for every write of an unrelated busy process
/// costs more CPU than the filtering itself (a build next door: ~1,000
/// wake-ups a second, 0.9 % of a core). The first event for the set after
/// such a stretch is late by at most that wait; the next ones are not.
const IDLE_READS: u32 = 32;
const BATCH_WAIT_MS: i32 = 10;

/// One marked filesystem.
#[derive(Debug)]
struct Mount {
    fsid: [i32; 2],
    dev: u64,
    /// Any directory on it, open for reading: `open_by_handle_at` needs
    /// one (an `O_PATH` descriptor is refused).
    fd: OwnedFd,
}

/// The running fanotify source.
pub(crate) struct Fanotify {
    fd: Arc<OwnedFd>,
    mounts: Arc<Mutex<Vec<Mount>>>,
    stop: OwnedFd,
    thread: Option<JoinHandle<()>>,
    roots: Arc<Roots>,
}

/// The last OS error for `what`, with what it usually means for
/// `fanotify_init` and `fanotify_mark`.
fn last_error(what: &str) -> String {
    let e = io::Error::last_os_error();
    if !what.starts_with("fanotify") {
        return format!("{what}: {e}");
    }
    let hint = match e.raw_os_error() {
        Some(libc::EPERM) => " (needs root: CAP_SYS_ADMIN)",
        Some(libc::EINVAL) => " (kernel without FAN_REPORT_DFID_NAME / FAN_MARK_FILESYSTEM: Linux 5.9+)",
        Some(libc::ENODEV | libc::EOPNOTSUPP) => " (the filesystem cannot report file handles)",
        Some(libc::EXDEV) => " (a subvolume or bind mount: filesystem marks need the whole filesystem)",
        Some(libc::ENOSYS) => " (kernel without fanotify)",
        _ => "",
    };
    format!("{what}: {e}{hint}")
}

impl Fanotify {
    pub(crate) fn start(roots: Arc<Roots>, queue: Arc<Queue>) -> Result<Fanotify, String> {
        let flags = libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK | libc::FAN_REPORT_DFID_NAME;
        // SAFETY: plain syscall with flag arguments.
        let fd = unsafe { libc::fanotify_init(flags, (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as u32) };
        if fd < 0 {
            return Err(last_error("fanotify_init"));
        }
        // SAFETY: fd was just returned by the kernel and is owned by no one else.
        let fd = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        // SAFETY: plain syscall.
        let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if stop < 0 {
            return Err(last_error("eventfd"));
        }
        // SAFETY: as above.
        let stop = unsafe { OwnedFd::from_raw_fd(stop) };
        let mut f = Fanotify {
            fd,
            mounts: Arc::new(Mutex::new(Vec::new())),
            stop,
            thread: None,
            roots: roots.clone(),
        };
        for r in &roots.0 {
            f.mark_near(&r.local)?;
        }
        let (fd, mounts, stop_fd) = (f.fd.clone(), f.mounts.clone(), f.stop.as_raw_fd());
        let thread = std::thread::Builder::new()
            .name("hamirror-fanotify".into())
            .spawn(move || {
                let q = queue.clone();
                let reader = Reader::new(roots, queue, mounts);
                // A reader that dies must not leave the set silently unwatched.
                let run = std::panic::AssertUnwindSafe(|| reader.run(fd.as_raw_fd(), stop_fd));
                if std::panic::catch_unwind(run).is_err() {
                    q.fail("the fanotify reader crashed".into());
                }
            })
            .map_err(|e| format!("cannot start the fanotify thread: {e}"))?;
        f.thread = Some(thread);
        Ok(f)
    }

    /// Marks the filesystem holding `path`, or its nearest existing
    /// ancestor (a root that does not exist yet will appear on it).
    fn mark_near(&mut self, path: &Path) -> Result<(), String> {
        let Some(dir) = path.ancestors().find(|p| p.is_dir()) else {
            return Ok(());
        };
        let dev = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let dev = std::os::unix::fs::MetadataExt::dev(&dev);
        let mut mounts = self.mounts.lock().unwrap_or_else(|p| p.into_inner());
        if mounts.iter().any(|m| m.dev == dev) {
            return Ok(());
        }
        let c = CString::new(dir.as_os_str().as_bytes()).map_err(|_| "path with NUL".to_string())?;
        let flags = libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM;
        // SAFETY: valid fd and NUL-terminated path.
        if unsafe { libc::fanotify_mark(self.fd.as_raw_fd(), flags, MASK, libc::AT_FDCWD, c.as_ptr()) } < 0 {
            return Err(last_error(&format!("fanotify_mark {}", dir.display())));
        }
        // SAFETY: valid NUL-terminated path.
        let mfd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if mfd < 0 {
            return Err(last_error(&format!("open {}", dir.display())));
        }
        // SAFETY: fresh descriptor, owned here.
        let mfd = unsafe { OwnedFd::from_raw_fd(mfd) };
        let fsid = fsid_of(mfd.as_raw_fd()).ok_or_else(|| last_error("fstatfs"))?;
        check_handles(&c, mfd.as_raw_fd())?;
        mounts.push(Mount { fsid, dev, fd: mfd });
        Ok(())
    }
}

impl Source for Fanotify {
    fn name(&self) -> &'static str {
        "fanotify"
    }

    fn watch_tree(&mut self, path: &[u8]) -> Result<Watched, Unwatchable> {
        let Some((_, local)) = self.roots.local(path) else {
            return Ok(Watched::Missing);
        };
        // Everything on a marked filesystem is seen already; a tree on a
        // filesystem mounted since needs its own mark.
        self.mark_near(&local)
            .map_err(|why| Unwatchable { why, limit: false })?;
        Ok(if std::fs::symlink_metadata(&local).is_ok() {
            Watched::Yes
        } else {
            Watched::Missing
        })
    }
}

impl Drop for Fanotify {
    fn drop(&mut self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        unsafe { libc::write(self.stop.as_raw_fd(), (&raw const one).cast(), 8) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The filesystem id `fstatfs` reports, which fanotify events carry.
fn fsid_of(fd: RawFd) -> Option<[i32; 2]> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: fstatfs fills the struct on success.
    if unsafe { libc::fstatfs(fd, st.as_mut_ptr()) } < 0 {
        return None;
    }
    // SAFETY: initialised by the successful call above.
    let st = unsafe { st.assume_init() };
    // SAFETY: fsid_t is two C ints (its fields are private in libc).
    Some(unsafe { std::mem::transmute::<libc::fsid_t, [i32; 2]>(st.f_fsid) })
}

/// Makes sure handles of this filesystem can be opened again (the kernel
/// accepts the mark on some filesystems whose handles cannot be decoded).
fn check_handles(path: &CString, mount_fd: RawFd) -> Result<(), String> {
    // A file_handle header (8 bytes) and MAX_HANDLE_SZ (128) bytes.
    let mut buf = [0u32; 2 + 32];
    buf[0] = 128;
    let mut mount_id: libc::c_int = 0;
    // SAFETY: buf is a file_handle with handle_bytes set to the space after
    // its 8-byte header; the kernel writes at most that much.
    let r = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            path.as_ptr(),
            buf.as_mut_ptr(),
            &raw mut mount_id,
            0,
        )
    };
    if r < 0 {
        return Err(last_error("name_to_handle_at"));
    }
    // SAFETY: buf holds the handle the kernel just wrote.
    let fd = unsafe { libc::open_by_handle_at(mount_fd, buf.as_mut_ptr().cast(), libc::O_PATH) };
    if fd < 0 {
        return Err(last_error("open_by_handle_at (needs CAP_DAC_READ_SEARCH)"));
    }
    // SAFETY: fresh descriptor.
    unsafe { libc::close(fd) };
    Ok(())
}

/// The reading thread's state.
struct Reader {
    roots: Arc<Roots>,
    queue: Arc<Queue>,
    mounts: Arc<Mutex<Vec<Mount>>>,
    /// fsid + handle → the directory's path when it matters to the set
    /// (it lies in a root or above one), `None` when it does not.
    cache: HashMap<Vec<u8>, Option<PathBuf>>,
    /// Events handed to the engine so far.
    delivered: u64,
    /// Events caused by other processes so far (this process's own index
    /// writes do not make the filesystem busy).
    foreign: u64,
    pid: i32,
    /// Reads in a row that held nothing for the set.
    idle_reads: u32,
}

impl Reader {
    fn new(roots: Arc<Roots>, queue: Arc<Queue>, mounts: Arc<Mutex<Vec<Mount>>>) -> Reader {
        Reader {
            roots,
            queue,
            mounts,
            cache: HashMap::new(),
            delivered: 0,
            foreign: 0,
            pid: std::process::id() as i32,
            idle_reads: 0,
        }
    }

    fn run(mut self, fd: RawFd, stop: RawFd) {
        // Large enough for hundreds of events per read.
        let mut buf = vec![0u8; 256 << 10];
        loop {
            if self.idle_reads >= IDLE_READS {
                // Busy with other people's files: read in batches (the
                // kernel merges repeated events of one file meanwhile),
                // sleeping on the stop descriptor only.
                let mut s = libc::pollfd {
                    fd: stop,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd entry.
                if unsafe { libc::poll(&mut s, 1, BATCH_WAIT_MS) } > 0 {
                    return;
                }
            }
            let mut fds = [
                libc::pollfd {
                    fd,
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
            let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if r < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                self.queue
                    .fail(format!("fanotify: poll: {}", io::Error::last_os_error()));
                return;
            }
            if fds[1].revents != 0 {
                return;
            }
            loop {
                // SAFETY: reads into our buffer, at most its length.
                let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    match e.kind() {
                        io::ErrorKind::WouldBlock => break,
                        io::ErrorKind::Interrupted => continue,
                        _ => {
                            tracing::warn!("fanotify: read: {e}; re-scanning");
                            self.queue.lost();
                            break;
                        }
                    }
                }
                let (delivered, foreign) = (self.delivered, self.foreign);
                self.parse(&buf[..n as usize]);
                if self.delivered > delivered {
                    self.idle_reads = 0;
                } else if self.foreign > foreign {
                    self.idle_reads = self.idle_reads.saturating_add(1);
                }
            }
        }
    }

    /// Handles every event in one read.
    fn parse(&mut self, buf: &[u8]) {
        let u16_at = |b: &[u8], i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        let u32_at = |b: &[u8], i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut off = 0;
        while off + 24 <= buf.len() {
            let len = u32_at(buf, off) as usize;
            if len < 24 || off + len > buf.len() || buf[off + 4] != libc::FANOTIFY_METADATA_VERSION {
                tracing::warn!("fanotify: malformed event; re-scanning");
                self.queue.lost();
                return;
            }
            let ev = &buf[off..off + len];
            off += len;
            let meta_len = usize::from(u16_at(ev, 6));
            let mask = u64::from_ne_bytes(ev[8..16].try_into().unwrap_or_default());
            let efd = i32::from_ne_bytes(ev[16..20].try_into().unwrap_or_default());
            if i32::from_ne_bytes(ev[20..24].try_into().unwrap_or_default()) != self.pid {
                self.foreign += 1;
            }
            if efd >= 0 {
                // Not asked for in FID mode, but never leak one.
                // SAFETY: the kernel handed us this descriptor.
                unsafe { libc::close(efd) };
            }
            if mask & libc::FAN_Q_OVERFLOW != 0 {
                tracing::warn!("fanotify: event queue overflow; re-scanning");
                self.queue.lost();
                continue;
            }
            let mut i = meta_len.min(len);
            while i + 4 <= ev.len() {
                let kind = ev[i];
                let rec_len = usize::from(u16_at(ev, i + 2));
                if rec_len < 4 || i + rec_len > ev.len() {
                    break;
                }
                let rec = &ev[i..i + rec_len];
                i += rec_len;
                if kind == libc::FAN_EVENT_INFO_TYPE_DFID_NAME || kind == libc::FAN_EVENT_INFO_TYPE_DFID {
                    self.record(mask, rec, kind == libc::FAN_EVENT_INFO_TYPE_DFID_NAME);
                }
            }
            if mask & libc::FAN_ONDIR != 0 && mask & (libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO) != 0 {
                // A directory moved: every cached path below it is stale.
                self.cache.clear();
            }
        }
    }

    /// One directory-and-name record of an event.
    fn record(&mut self, mask: u64, rec: &[u8], with_name: bool) {
        // header (4), fsid (8), handle_bytes (4), handle_type (4), handle, name
        if rec.len() < 20 {
            return;
        }
        let hb = u32::from_ne_bytes(rec[12..16].try_into().unwrap_or_default()) as usize;
        if 20 + hb > rec.len() {
            return;
        }
        // The key: fsid, type and handle bytes.
        let key = &rec[4..20 + hb];
        let dir = match self.cache.get(key) {
            Some(d) => d.clone(),
            None => {
                let d = match self.resolve(rec, hb) {
                    Ok(d) => d.filter(|d| self.relevant(d)),
                    Err(e) => {
                        tracing::warn!("fanotify: cannot open a reported directory: {e}; re-scanning");
                        self.queue.lost();
                        return;
                    }
                };
                if self.cache.len() >= CACHE_MAX {
                    self.cache.clear();
                }
                self.cache.insert(key.to_vec(), d.clone());
                d
            }
        };
        let Some(dir) = dir else { return };
        let name = if with_name {
            let tail = &rec[20 + hb..];
            &tail[..tail.iter().position(|b| *b == 0).unwrap_or(tail.len())]
        } else {
            &b""[..]
        };
        let path = if name.is_empty() || name == b"." {
            dir
        } else {
            dir.join(std::ffi::OsStr::from_bytes(name))
        };
        let Some(set_path) = self.roots.set_path(&path) else {
            return;
        };
        if self.roots.excluded(&set_path, Some(mask & libc::FAN_ONDIR != 0)) {
            return;
        }
        for ev in events(mask, set_path) {
            self.queue.push(ev);
            self.delivered += 1;
        }
    }

    /// Whether events in directory `dir` can concern the set: it lies in a
    /// directory root, or is a root's ancestor (a root itself, or a file
    /// root, changes there).
    fn relevant(&self, dir: &Path) -> bool {
        self.roots.0.iter().any(|r| {
            let under = |root: &Path| dir.starts_with(root);
            let above = |root: &Path| root.starts_with(dir);
            (r.dir && (under(&r.local) || under(&r.canonical))) || above(&r.local) || above(&r.canonical)
        })
    }

    /// Opens a directory handle and reads its path. `Ok(None)` when the
    /// directory no longer exists or its filesystem is not ours.
    fn resolve(&self, rec: &[u8], hb: usize) -> io::Result<Option<PathBuf>> {
        let fsid = [
            i32::from_ne_bytes(rec[4..8].try_into().unwrap_or_default()),
            i32::from_ne_bytes(rec[8..12].try_into().unwrap_or_default()),
        ];
        let mounts = self.mounts.lock().unwrap_or_else(|p| p.into_inner());
        let Some(mount) = mounts.iter().find(|m| m.fsid == fsid) else {
            return Ok(None);
        };
        // A file_handle (handle_bytes, handle_type, bytes), 4-byte aligned.
        let mut fh = vec![0u32; 2 + hb.div_ceil(4)];
        // SAFETY: fh has room for the 8-byte header and hb handle bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(rec[12..20 + hb].as_ptr(), fh.as_mut_ptr().cast::<u8>(), 8 + hb);
        }
        // SAFETY: fh is a well-formed file_handle; mount.fd is open.
        let fd = unsafe { libc::open_by_handle_at(mount.fd.as_raw_fd(), fh.as_mut_ptr().cast(), libc::O_PATH) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ESTALE | libc::ENOENT) => Ok(None),
                _ => Err(e),
            };
        }
        // SAFETY: fresh descriptor, owned here.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat fills the struct on success.
        if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } == 0 {
            // SAFETY: initialised by the successful call.
            if unsafe { st.assume_init() }.st_nlink == 0 {
                return Ok(None);
            }
        }
        let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
        Ok(Some(path))
    }
}

/// The engine's events for one fanotify mask (several changes to one
/// name may be merged into one event).
fn events(mask: u64, path: Vec<u8>) -> Vec<Event> {
    let dir = mask & libc::FAN_ONDIR != 0;
    let mut out = Vec::with_capacity(2);
    if mask & libc::FAN_CREATE != 0 {
        out.push(Event::Created {
            path: path.clone(),
            dir,
        });
    }
    if mask & libc::FAN_MODIFY != 0 {
        out.push(Event::Written(path.clone()));
    }
    if mask & libc::FAN_ATTRIB != 0 {
        out.push(Event::Attrib(path.clone()));
    }
    if mask & libc::FAN_CLOSE_WRITE != 0 {
        out.push(Event::Closed(path.clone()));
    }
    if mask & libc::FAN_MOVED_TO != 0 {
        out.push(Event::MovedTo(path.clone()));
    }
    if mask & (libc::FAN_DELETE | libc::FAN_MOVED_FROM) != 0 {
        out.push(Event::Removed { path, tree: dir });
    }
    out
}

#[cfg(test)]
mod tests;
