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
//! Bounded: at most [`MAX_FILES`] descriptors in the whole process (and a
//! quarter of its open files limit: a daemon receiving several sets at
//! once shares it), and per pass [`MAX_BYTES`] of held blocks (and a
//! sixteenth of the filesystem's free space when the first one was kept),
//! so neither the descriptor table nor a nearly full disk pays for it;
//! beyond that an old version is freed at once, as without this. Knows
//! nothing of plans, the index or the network.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use rustix::fs::{Mode, OFlags};

/// At most this many old versions held open at once, in the process.
pub const MAX_FILES: usize = 4096;

/// Descriptors held by every [`Retired`] of the process.
static HELD: AtomicUsize = AtomicUsize::new(0);
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
    /// The bytes this may hold, fixed at the first keep.
    room: Option<u64>,
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
        let max = *s.room.get_or_insert_with(|| byte_room(dir));
        if s.bytes + bytes > max {
            return false;
        }
        let files = *FILE_ROOM.get_or_init(file_room);
        if HELD
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < files).then_some(n + 1))
            .is_err()
        {
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

impl Drop for Retired {
    fn drop(&mut self) {
        let s = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        HELD.fetch_sub(s.held.len(), Ordering::AcqRel);
        s.held.clear();
    }
}

/// Descriptors the process may hold: a quarter of its open files limit.
static FILE_ROOM: OnceLock<usize> = OnceLock::new();

fn file_room() -> usize {
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    MAX_FILES.min(usize::try_from(nofile / 4).unwrap_or(usize::MAX))
}

/// Bytes one pass may hold: a sixteenth of the free space of the
/// filesystem of `dir`.
fn byte_room(dir: BorrowedFd<'_>) -> u64 {
    let free = rustix::fs::fstatvfs(dir.as_fd())
        .map(|v| v.f_bavail.saturating_mul(v.f_frsize))
        .unwrap_or(0);
    MAX_BYTES.min(free / 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_last_names_of_regular_files_are_kept_and_the_process_wide_cap_holds() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = rustix::fs::open(tmp.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        std::fs::write(tmp.path().join("linked"), b"x").unwrap();
        std::fs::hard_link(tmp.path().join("linked"), tmp.path().join("other")).unwrap();
        std::fs::create_dir(tmp.path().join("dir")).unwrap();
        std::os::unix::fs::symlink("linked", tmp.path().join("sym")).unwrap();
        let r = Retired::default();
        for name in ["linked", "dir", "sym", "missing"] {
            assert!(!r.keep(dir.as_fd(), name.as_bytes()), "{name} kept");
        }
        assert!(r.is_empty());

        // More files than the process may hold, kept by two passes at once.
        let room = file_room();
        for i in 0..room + 10 {
            std::fs::write(tmp.path().join(format!("f{i}")), b"old").unwrap();
        }
        let (a, b) = (Retired::default(), Retired::default());
        for i in 0..room + 10 {
            let r = if i % 2 == 0 { &a } else { &b };
            r.keep(dir.as_fd(), format!("f{i}").as_bytes());
        }
        // Other tests of this process may hold a few at the same time.
        let both = a.len() + b.len();
        assert!(both <= room && both + 16 >= room, "{both} held, room for {room}");
        let freed = a.len();
        a.release();
        let more = (0..room + 10)
            .filter(|i| b.keep(dir.as_fd(), format!("f{i}").as_bytes()))
            .count();
        assert!(
            more + 16 >= freed && more <= freed + 16,
            "{more} more after {freed} were freed"
        );
    }
}
