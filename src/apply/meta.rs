//! Setting an entry's metadata (owner, mode, mtime in nanoseconds) on files,
//! directories and symlinks without following symlinks. Owner is set only
//! when running as root, like rsync without `--owner` for other users.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

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

/// Owner, mode (not for symlinks) and mtime of a path, never following a
/// symlink at its last component.
pub fn set_on_path(path: &Path, e: &Entry, symlink: bool) -> io::Result<()> {
    if is_root() {
        std::os::unix::fs::lchown(path, Some(e.uid), Some(e.gid))?;
    }
    if !symlink {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(e.mode))?;
    }
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let times = [timespec(e.mtime_ns), timespec(e.mtime_ns)];
    // SAFETY: valid C string and a pointer to two timespecs.
    if unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Flushes the filesystem holding `path` (one `syncfs` instead of an fsync
/// per file: all temp files become durable before any is renamed).
pub fn syncfs(path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = File::open(path)?;
    // SAFETY: valid fd.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
