//! Setting an entry's metadata (owner, mode, mtime in nanoseconds) on files,
//! directories and symlinks without following symlinks: on an open file, or
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

fn timespec(ns: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: ns.div_euclid(1_000_000_000) as libc::time_t,
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    }
}

/// Owner, mode and mtime of an open regular file (a temp file before rename).
/// Owner first: chown clears set-id bits, chmod restores them.
pub fn set_on_file(f: &File, e: &Entry) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    if is_root() {
        std::os::unix::fs::fchown(f, Some(e.uid), Some(e.gid))?;
    }
    f.set_permissions(std::fs::Permissions::from_mode(e.mode))?;
    let times = [timespec(e.mtime_ns), timespec(e.mtime_ns)];
    // SAFETY: valid fd and a pointer to two timespecs.
    if unsafe { libc::futimens(f.as_raw_fd(), times.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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

/// Owner, mode and mtime (`only_mtime`: the mtime) of a set's root
/// directory, by its path: the roots are the administrator's, and a root
/// that is a symlink to another disk is followed on purpose.
pub fn set_on_root(path: &std::path::Path, e: &Entry, only_mtime: bool) -> io::Result<()> {
    if !only_mtime {
        if is_root() {
            std::os::unix::fs::chown(path, Some(e.uid), Some(e.gid))?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(e.mode & 0o7777))?;
    }
    let t = rustix::fs::Timespec {
        tv_sec: e.mtime_ns.div_euclid(1_000_000_000),
        tv_nsec: e.mtime_ns.rem_euclid(1_000_000_000) as _,
    };
    let times = rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    };
    Ok(rustix::fs::utimensat(rustix::fs::CWD, path, &times, AtFlags::empty())?)
}

/// Sets only the mtime (and atime) of `name` in `dir`, not following it.
pub fn set_mtime_at(dir: BorrowedFd<'_>, name: &[u8], mtime_ns: i64) -> io::Result<()> {
    let t = rustix::fs::Timespec {
        tv_sec: mtime_ns.div_euclid(1_000_000_000),
        tv_nsec: mtime_ns.rem_euclid(1_000_000_000) as _,
    };
    let times = rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    };
    Ok(rustix::fs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW)?)
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
