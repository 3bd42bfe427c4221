//! Setting an entry's metadata (owner, mode, mtime in nanoseconds) on files,
//! directories, symlinks, FIFOs and device nodes without following symlinks
//! (and without opening a FIFO or device): on an open file, or
//! on a name relative to a directory descriptor. Owner is set only
//! when running as root, like rsync without `--owner` for other users.

use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::PermissionsExt;

use rustix::fs::{AtFlags, Mode, OFlags};

use hamirror_wire::Entry;

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Access and modification time both at `ns` (nanoseconds since the epoch).
fn timestamps(ns: i64) -> rustix::fs::Timestamps {
    let t = rustix::fs::Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    };
    rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// The mtime of a `stat` result in nanoseconds.
pub fn stat_mtime_ns(st: &rustix::fs::Stat) -> i64 {
    st.st_mtime
        .saturating_mul(1_000_000_000)
        .saturating_add(st.st_mtime_nsec as i64)
}

/// What to set on a directory: all of an entry's metadata, or only an
/// mtime (given back after the directory's contents changed).
#[derive(Debug, Clone, Copy)]
pub enum DirMeta<'a> {
    All(&'a Entry),
    Mtime(i64),
}

/// Owner, mode and mtime of an open regular file (a temp file before rename).
/// Owner first: chown clears set-id bits, chmod restores them.
pub fn set_on_file(f: &File, e: &Entry) -> io::Result<()> {
    if is_root() {
        std::os::unix::fs::fchown(f, Some(e.uid), Some(e.gid))?;
    }
    f.set_permissions(std::fs::Permissions::from_mode(e.mode))?;
    Ok(rustix::fs::futimens(f, &timestamps(e.mtime_ns))?)
}

/// Owner, mode (not for symlinks) and mtime of `name` in directory `dir`,
/// never following a symlink: owner and times with `AT_SYMLINK_NOFOLLOW`,
/// the mode on an `O_PATH | O_NOFOLLOW` descriptor (Linux has no
/// `fchmodat(AT_SYMLINK_NOFOLLOW)` before 6.6), so a name swapped for a
/// symlink in between is refused rather than followed.
pub fn set_at(dir: BorrowedFd<'_>, name: &[u8], e: &Entry, symlink: bool) -> io::Result<()> {
    if is_root() {
        rustix::fs::chownat(
            dir,
            name,
            Some(rustix::fs::Uid::from_raw(e.uid)),
            Some(rustix::fs::Gid::from_raw(e.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
    }
    if !symlink {
        chmod_at(dir, name, e.mode)?;
    }
    set_mtime_at(dir, name, e.mtime_ns)
}

/// A set's root directory's metadata, by its path: the roots are the
/// administrator's, and a root that is a symlink to another disk is
/// followed on purpose.
pub fn set_on_root(path: &std::path::Path, m: DirMeta<'_>) -> io::Result<()> {
    let ns = match m {
        DirMeta::All(e) => {
            if is_root() {
                std::os::unix::fs::chown(path, Some(e.uid), Some(e.gid))?;
            }
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(e.mode & 0o7777))?;
            e.mtime_ns
        }
        DirMeta::Mtime(ns) => ns,
    };
    Ok(rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &timestamps(ns),
        AtFlags::empty(),
    )?)
}

/// A directory's metadata: `name` in `dir`, not following it.
pub fn set_dir_at(dir: BorrowedFd<'_>, name: &[u8], m: DirMeta<'_>) -> io::Result<()> {
    match m {
        DirMeta::All(e) => set_at(dir, name, e, false),
        DirMeta::Mtime(ns) => set_mtime_at(dir, name, ns),
    }
}

/// Sets only the mtime (and atime) of `name` in `dir`, not following it.
pub fn set_mtime_at(dir: BorrowedFd<'_>, name: &[u8], mtime_ns: i64) -> io::Result<()> {
    Ok(rustix::fs::utimensat(
        dir,
        name,
        &timestamps(mtime_ns),
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

fn chmod_at(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::empty())?;
    let st = rustix::fs::fstat(&fd)?;
    if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    let mode = Mode::from_raw_mode(mode & 0o7777);
    // The magic link names the inode opened above, whatever the name is now.
    match rustix::fs::chmod(format!("/proc/self/fd/{}", fd.as_raw_fd()), mode) {
        Err(rustix::io::Errno::NOENT)
            if matches!(st.st_mode & libc::S_IFMT, libc::S_IFIFO | libc::S_IFCHR | libc::S_IFBLK) =>
        {
            // Opening a FIFO blocks, opening a device may act on it.
            Err(io::Error::other(
                "no /proc: the mode of a FIFO or device node cannot be set without opening it",
            ))
        }
        Err(rustix::io::Errno::NOENT) => {
            // No /proc: open it for real (not following) and fchmod.
            let rd = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let f = rustix::fs::openat(dir, name, rd, Mode::empty())?;
            let again = rustix::fs::fstat(&f)?;
            if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino) {
                return Err(io::Error::from_raw_os_error(libc::ELOOP));
            }
            Ok(rustix::fs::fchmod(&f, mode)?)
        }
        r => Ok(r?),
    }
}
