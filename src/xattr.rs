//! Reading and writing a file's extended attributes and POSIX ACLs (ACLs
//! are the attributes `system.posix_acl_access` / `_default`, whose binary
//! value is copied as is). The scanner reads them from the descriptor it
//! already has open; the receiver writes them on a descriptor (a temp file
//! before its rename) or on an `O_PATH` descriptor through its
//! `/proc/self/fd` link, so a name swapped for a symlink is never
//! followed. Which names count is the set's [`XattrNamespaces`]; others
//! are neither read nor touched.
//!
//! A filesystem that refuses an attribute (no xattr support, no room, a
//! value too large, not permitted) costs a warning naming the attribute,
//! never the file. Depends on `config` and the wire types only.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use hamirror_wire::Xattr;
use hamirror_wire::entry::{MAX_XATTR_VALUE, check_xattrs};
use rustix::fs::XattrFlags;
use rustix::io::Errno;

use crate::config::XattrNamespaces;

/// Where the attributes live: an open descriptor (not `O_PATH`), or a path
/// that is followed (a `/proc/self/fd/N` link of an `O_PATH` descriptor,
/// or a set's root, which the administrator may have made a symlink).
#[derive(Debug, Clone, Copy)]
pub enum On<'a> {
    Fd(BorrowedFd<'a>),
    Path(&'a Path),
}

impl On<'_> {
    fn list(&self) -> rustix::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 1024];
        loop {
            let r = match self {
                On::Fd(fd) => rustix::fs::flistxattr(fd, &mut buf[..]),
                On::Path(p) => rustix::fs::listxattr(*p, &mut buf[..]),
            };
            match r {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                // Grew between the calls, or the buffer is too small: ask.
                Err(Errno::RANGE) => {
                    let need = match self {
                        On::Fd(fd) => rustix::fs::flistxattr(fd, &mut [0u8; 0][..])?,
                        On::Path(p) => rustix::fs::listxattr(*p, &mut [0u8; 0][..])?,
                    };
                    buf = vec![0u8; need.max(buf.len() * 2)];
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn get(&self, name: &CString) -> rustix::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 256];
        loop {
            let r = match self {
                On::Fd(fd) => rustix::fs::fgetxattr(fd, name, &mut buf[..]),
                On::Path(p) => rustix::fs::getxattr(*p, name, &mut buf[..]),
            };
            match r {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Err(Errno::RANGE) if buf.len() <= MAX_XATTR_VALUE => buf = vec![0u8; buf.len() * 16],
                Err(e) => return Err(e),
            }
        }
    }

    fn set(&self, name: &CString, value: &[u8]) -> rustix::io::Result<()> {
        match self {
            On::Fd(fd) => rustix::fs::fsetxattr(fd, name, value, XattrFlags::empty()),
            On::Path(p) => rustix::fs::setxattr(*p, name, value, XattrFlags::empty()),
        }
    }

    fn remove(&self, name: &CString) -> rustix::io::Result<()> {
        match self {
            On::Fd(fd) => rustix::fs::fremovexattr(fd, name),
            On::Path(p) => rustix::fs::removexattr(*p, name),
        }
    }
}

/// Whether this process runs as root (only root sees `trusted.*`).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The `/proc/self/fd` link of a descriptor (an `O_PATH` one included):
/// following it reaches that very inode, whatever its name is now.
pub fn proc_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Whether an error means "this filesystem keeps no such attributes": a
/// file there simply has none.
fn unsupported(e: Errno) -> bool {
    e == Errno::OPNOTSUPP || e == Errno::NOSYS
}

/// The names `ns` mirrors among those listed on `on`.
fn names(on: On<'_>, ns: &XattrNamespaces, root: bool) -> rustix::io::Result<Vec<CString>> {
    let list = on.list()?;
    let mut names: Vec<CString> = list
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty() && ns.matches(n, root))
        .filter_map(|n| CString::new(n).ok())
        .collect();
    names.sort();
    Ok(names)
}

/// Reads the attributes `ns` mirrors, ascending by name, checked against
/// the wire limits.
///
/// # Errors
/// A description for the scan report: the listing failed, or the
/// attributes exceed what an entry may carry.
pub fn read(on: On<'_>, ns: &XattrNamespaces) -> Result<Vec<Xattr>, String> {
    if ns.is_none() {
        return Ok(vec![]);
    }
    let root = is_root();
    let names = match names(on, ns, root) {
        Ok(n) => n,
        Err(e) if unsupported(e) => return Ok(vec![]),
        Err(e) => return Err(format!("cannot list extended attributes: {e}")),
    };
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        match on.get(&name) {
            Ok(value) => out.push(Xattr {
                name: name.into_bytes(),
                value,
            }),
            // Removed since the listing.
            Err(Errno::NODATA) => {}
            Err(e) => {
                return Err(format!(
                    "cannot read extended attribute {}: {e}",
                    String::from_utf8_lossy(name.as_bytes())
                ));
            }
        }
    }
    check_xattrs(&out).map_err(|why| {
        format!(
            "{why} ({} attributes, {} bytes; at most {} attributes of {} bytes in all are mirrored) — not mirrored",
            out.len(),
            out.iter().map(|a| a.name.len() + a.value.len()).sum::<usize>(),
            hamirror_wire::entry::MAX_XATTRS,
            hamirror_wire::entry::MAX_XATTR_BYTES
        )
    })?;
    Ok(out)
}

/// Makes the attributes `ns` covers on `on` exactly `want` (those of
/// `want` outside `ns` are left alone): sets what differs, removes what
/// `want` lacks. Returns one warning per attribute that could not be set
/// or removed, `"NAME: why"`. Called after the mode is set: a POSIX
/// access ACL rewrites the group bits, and a chmod after it would rewrite
/// the ACL's mask.
pub fn apply(on: On<'_>, want: &[Xattr], ns: &XattrNamespaces) -> Vec<String> {
    if ns.is_none() {
        return vec![];
    }
    let root = is_root();
    // A configured `trusted.*` attribute is tried even when not root: its
    // refusal is a warning, not a silent drop.
    let want: Vec<&Xattr> = want.iter().filter(|a| ns.matches(&a.name, true)).collect();
    let mut warnings = Vec::new();
    let show = |n: &[u8]| String::from_utf8_lossy(n).into_owned();
    let have = match names(on, ns, root) {
        Ok(n) => n,
        Err(e) if unsupported(e) && want.is_empty() => return vec![],
        Err(e) => {
            for a in &want {
                warnings.push(format!("{}: {}", show(&a.name), refused(e)));
            }
            return warnings;
        }
    };
    for name in &have {
        if !want.iter().any(|a| a.name == name.as_bytes())
            && let Err(e) = on.remove(name)
            && e != Errno::NODATA
        {
            warnings.push(format!("{}: cannot remove: {}", show(name.as_bytes()), refused(e)));
        }
    }
    for a in want {
        let Ok(name) = CString::new(a.name.clone()) else {
            continue;
        };
        if have.contains(&name) && on.get(&name).is_ok_and(|v| v == a.value) {
            continue;
        }
        if let Err(e) = on.set(&name, &a.value) {
            warnings.push(format!("{}: {}", show(&a.name), refused(e)));
        }
    }
    warnings
}

/// Why the replica's filesystem refused an attribute, in words.
fn refused(e: Errno) -> String {
    let what = match e {
        Errno::OPNOTSUPP => "not supported by the replica's filesystem",
        Errno::NOSPC | Errno::DQUOT => "no room for it on the replica's filesystem",
        Errno::TOOBIG | Errno::RANGE => "too large for the replica's filesystem",
        Errno::PERM | Errno::ACCESS => "not permitted on the replica",
        _ => "refused",
    };
    format!("{what} ({})", io::Error::from(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(name: &str, value: &str) -> Xattr {
        Xattr {
            name: name.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
        }
    }

    #[test]
    fn apply_makes_the_namespaces_exact_and_leaves_the_others_alone() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let on = On::Fd(std::os::fd::AsFd::as_fd(&f));
        let user = XattrNamespaces::parse("user").unwrap();
        rustix::fs::fsetxattr(&f, "user.stale", b"1", XattrFlags::empty()).unwrap();
        rustix::fs::fsetxattr(&f, "user.same", b"s", XattrFlags::empty()).unwrap();
        // Outside the namespaces: untouched (trusted.* needs root to set).
        let other = is_root() && rustix::fs::fsetxattr(&f, "trusted.keep", b"k", XattrFlags::empty()).is_ok();
        let want = [x("user.a", "1"), x("user.same", "s"), x("user.z", "")];
        assert!(apply(on, &want, &user).is_empty());
        assert_eq!(read(on, &user).unwrap(), want.to_vec(), "ascending, exact");
        if other {
            let all = XattrNamespaces::parse("user trusted").unwrap();
            assert!(read(on, &all).unwrap().contains(&x("trusted.keep", "k")));
        }
        assert!(apply(on, &[], &XattrNamespaces::NONE).is_empty());
        assert_eq!(read(on, &user).unwrap().len(), 3, "`none` touches nothing");
        assert!(read(on, &XattrNamespaces::NONE).unwrap().is_empty());
    }

    #[test]
    fn too_many_attributes_are_a_scan_error_naming_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        let f = std::fs::File::open(&p).unwrap();
        for i in 0..=hamirror_wire::entry::MAX_XATTRS {
            if rustix::fs::fsetxattr(&f, format!("user.{i:03}"), b"", XattrFlags::empty()).is_err() {
                return; // the filesystem holds fewer: nothing to test here
            }
        }
        let e = read(On::Fd(std::os::fd::AsFd::as_fd(&f)), &XattrNamespaces::default()).unwrap_err();
        assert!(
            e.contains("too many extended attributes") && e.contains("at most 128"),
            "{e}"
        );
    }
}
