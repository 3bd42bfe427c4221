//! The old versions a pass replaced or deleted, kept open until the
//! receiver has answered, so that freeing their blocks is not on the
//! critical path of the pass.
//!
//! On ext4 (and xfs) the rename of a new version over the last name of an
//! old one, or the unlink of a deleted file, frees the old inode's blocks
//! inside that syscall: for the ~500 files of a 1% pass that was a quarter
//! of a second of the receiver's work before its answer (measured in
//! docs/BENCHMARKS.md). An `O_PATH` descriptor taken just before keeps the
//! inode alive (on the filesystem's orphan list, which a crash recovers at
//! mount) and the freeing happens when it is closed, after the answer.
//!
//! Bounded: at most [`MAX_FILES`] descriptors (and a quarter of the open
//! files limit) and [`MAX_BYTES`] of held blocks (and a sixteenth of the
//! filesystem's free space when the first one was kept), so neither the
//! descriptor table nor a nearly full disk pays for it; beyond that an old
//! version is freed at once, as without this. Knows nothing of plans, the
//! index or the network.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Mutex;

use rustix::fs::{Mode, OFlags};

/// At most this many old versions held open at once.
pub const MAX_FILES: usize = 4096;
/// At most this many bytes of old versions' blocks held at once.
pub const MAX_BYTES: u64 = 1 << 30;

/// Old versions kept alive until this is dropped (or [`Retired::release`]).
#[derive(Debug, Default)]
pub struct Retired {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    held: Vec<OwnedFd>,
    bytes: u64,
    /// (files, bytes) this may hold, fixed at the first keep.
    room: Option<(usize, u64)>,
}

impl Retired {
    /// Before `name` in `dir` loses its name (renamed over or unlinked):
    /// keeps its inode open if it is a regular file whose last name this
    /// is and there is room. Returns whether it did. Never fails: an old
    /// version not kept is freed at once, as it would be anyway.
    pub fn keep(&self, dir: BorrowedFd<'_>, name: &[u8]) -> bool {
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let Ok(fd) = rustix::fs::openat(dir, name, flags, Mode::empty()) else {
            return false;
        };
        let Ok(st) = rustix::fs::fstat(&fd) else {
            return false;
        };
        // Another name keeps the blocks anyway; a directory or symlink has
        // few to free.
        if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_nlink != 1 {
            return false;
        }
        let bytes = st.st_blocks as u64 * 512;
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (files, max) = *s.room.get_or_insert_with(|| room(dir));
        if s.held.len() >= files || s.bytes + bytes > max {
            return false;
        }
        s.bytes += bytes;
        s.held.push(fd);
        true
    }

    /// How many old versions are held.
    pub fn len(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).held.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes every held descriptor: the filesystem frees the old versions
    /// now (this is where the time goes).
    pub fn release(self) {
        drop(self);
    }
}

/// How much one pass may hold: bounded by the open files limit and by the
/// free space of the filesystem of `dir`.
fn room(dir: BorrowedFd<'_>) -> (usize, u64) {
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let files = MAX_FILES.min(usize::try_from(nofile / 4).unwrap_or(usize::MAX));
    let free = rustix::fs::fstatvfs(dir.as_fd())
        .map(|v| v.f_bavail.saturating_mul(v.f_frsize))
        .unwrap_or(0);
    (files, MAX_BYTES.min(free / 16))
}
