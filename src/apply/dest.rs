//! The destination tree of one set on the receiver, and the only way the
//! receiver reaches it: every create, write, rename, link, delete and
//! metadata change goes through a file descriptor opened relative to the
//! set's root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, so no
//! symlink below a root is ever followed and nothing outside the roots can
//! be touched — not by a hostile peer's offer, and not by a local user who
//! swaps a replica directory for a symlink in the middle of a push (the
//! path is resolved again, safely, for each operation). The roots and what
//! lies above them are the administrator's and are trusted (a root may be
//! a symlink to another disk). Knows nothing of plans or the network.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, ResolveFlags};

use crate::config::MirrorSet;

use super::ApplyError;
use super::retired::Retired;

#[derive(Debug)]
struct Root {
    /// Set path of the root without leading `/` (`var/spool/lpd`).
    rel: Vec<u8>,
    dir: bool,
    /// The directory paths of this root are resolved from: the root itself
    /// for a directory root, its parent for a single-file root. Opened on
    /// first use (a receiver creates a missing directory root).
    anchor: OnceLock<OwnedFd>,
}

/// One set's roots under one node's `root` prefix.
#[derive(Debug)]
pub struct Dest {
    base: PathBuf,
    roots: Vec<Root>,
    /// The extended-attribute namespaces this set mirrors: those the
    /// receiver sets and removes (others on the replica are left alone).
    pub xattrs: crate::config::XattrNamespaces,
    /// Old versions replaced or deleted, kept open so their blocks are
    /// freed after the receiver's answer ([`Dest::take_retired`]).
    retired: Retired,
}

/// What [`Dest::open_file`] opens a file for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    Read,
    Write,
    Create,
}

/// How every path below an anchor is resolved: beneath it, through no
/// symlink at all (the last component included), no magic links.
fn beneath() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

/// Whether an error from a resolution means "a component on the way is a
/// symlink or not a directory" (the path cannot exist as named).
pub fn is_blocked(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ELOOP) | Some(libc::ENOTDIR) | Some(libc::EXDEV)
    )
}

/// The last component of a set path, and the directory part ("" for none).
pub fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[][..], path),
    }
}

/// The mode of a `stat` result as a kind test.
pub fn is_dir(st: &rustix::fs::Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

impl Dest {
    pub fn new(base: &Path, set: &MirrorSet) -> Dest {
        let roots = set
            .roots
            .iter()
            .map(|r| Root {
                rel: r.path.as_os_str().as_bytes()[1..].to_vec(),
                dir: r.dir,
                anchor: OnceLock::new(),
            })
            .collect();
        Dest {
            base: base.to_path_buf(),
            roots,
            xattrs: set.xattrs,
            retired: Retired::default(),
        }
    }

    /// The old versions this handle's renames and deletions kept alive;
    /// dropping them frees their blocks.
    pub fn take_retired(&mut self) -> Retired {
        std::mem::take(&mut self.retired)
    }

    /// Makes the attributes of the file, directory, FIFO or device node at
    /// `path` (not a symlink: refused, never followed) exactly `want`,
    /// within the set's namespaces, after its mode was set. A directory root is reached by
    /// its path. Returns the attributes the filesystem refused.
    ///
    /// # Errors
    /// `path` cannot be reached, or is a symlink.
    pub fn set_xattrs(&self, path: &[u8], want: &[hamirror_wire::Xattr]) -> io::Result<Vec<String>> {
        if self.xattrs.is_none() {
            return Ok(vec![]);
        }
        if self.is_dir_root(path) {
            let local = self.local(path);
            return Ok(crate::xattr::apply(crate::xattr::On::Path(&local), want, &self.xattrs));
        }
        let (dir, name) = self.parent(path)?;
        let fd = rustix::fs::openat(
            &dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st = rustix::fs::fstat(&fd)?;
        let kind = st.st_mode & libc::S_IFMT;
        let node = matches!(kind, libc::S_IFIFO | libc::S_IFCHR | libc::S_IFBLK);
        if kind != libc::S_IFREG && kind != libc::S_IFDIR && !node {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        // The magic link names the inode opened above, whatever the name is now.
        let link = crate::xattr::proc_path(fd.as_fd());
        if link.exists() {
            return Ok(crate::xattr::apply(crate::xattr::On::Path(&link), want, &self.xattrs));
        }
        if node {
            // Opening a FIFO blocks, opening a device may act on it.
            return Err(io::Error::other(
                "no /proc: the attributes of a FIFO or device node cannot be set without opening it",
            ));
        }
        // No /proc: open it for real (not following) and check it is the same inode.
        let rd = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let f = rustix::fs::openat(&dir, name, rd, Mode::empty())?;
        let again = rustix::fs::fstat(&f)?;
        if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino) {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        Ok(crate::xattr::apply(crate::xattr::On::Fd(f.as_fd()), want, &self.xattrs))
    }

    /// The local path of a set path, for messages (never for access).
    pub fn local(&self, path: &[u8]) -> PathBuf {
        self.base.join(OsStr::from_bytes(path))
    }

    /// The set path of a local path under this node's base, if it is one.
    pub fn set_path_of(&self, local: &Path) -> Option<Vec<u8>> {
        let rel = local.strip_prefix(&self.base).ok()?;
        Some(rel.as_os_str().as_bytes().to_vec())
    }

    /// The root a set path belongs to.
    fn root_of(&self, path: &[u8]) -> Option<&Root> {
        self.roots.iter().find(|r| {
            path == r.rel.as_slice()
                || (r.dir && path.len() > r.rel.len() && path.starts_with(&r.rel) && path[r.rel.len()] == b'/')
        })
    }

    /// The root of a path this node itself makes: as [`Dest::root_of`],
    /// and also a temp file beside a single-file root (built in the root's
    /// directory, so the rename is atomic). Never used for what a peer
    /// offers ([`Dest::check`]).
    fn root_of_own(&self, path: &[u8]) -> Option<&Root> {
        self.root_of(path).or_else(|| {
            let (dir, name) = split(path);
            self.roots
                .iter()
                .find(|r| !r.dir && split(&r.rel).0 == dir && super::is_temp_name(name))
        })
    }

    /// Whether `path` is one of the roots itself.
    pub fn is_root(&self, path: &[u8]) -> bool {
        self.roots.iter().any(|r| r.rel == path)
    }

    /// Whether `path` is a directory root.
    pub fn is_dir_root(&self, path: &[u8]) -> bool {
        self.roots.iter().any(|r| r.dir && r.rel == path)
    }

    /// Whether `dir` is a directory of the set (a directory root or below
    /// one), whose times are mirrored — unlike the parents of the roots.
    pub fn holds_dir(&self, dir: &[u8]) -> bool {
        self.root_of(dir).is_some_and(|r| r.dir)
    }

    /// Checks that `path` is well formed and lies inside a root. Where it
    /// leads on disk is checked by every operation, when it is made.
    pub fn check(&self, path: &[u8]) -> Result<(), ApplyError> {
        let show = || String::from_utf8_lossy(path).into_owned();
        hamirror_wire::entry::check_path(path).map_err(|why| ApplyError::UnsafePath { path: show(), why })?;
        self.root_of(path).ok_or_else(|| ApplyError::UnsafePath {
            path: show(),
            why: "outside the set's roots",
        })?;
        Ok(())
    }

    /// Whether `path` is well formed and one this node may make: inside a
    /// root, or a temp file beside a single-file root.
    pub fn is_own(&self, path: &[u8]) -> bool {
        hamirror_wire::entry::check_path(path).is_ok() && self.root_of_own(path).is_some()
    }

    /// The anchor of `root`, opened (and for a directory root, created
    /// with its parents when `create`) on first use. Following symlinks
    /// here is intended: the roots are the administrator's.
    fn anchor<'a>(&'a self, root: &'a Root, create: bool) -> io::Result<BorrowedFd<'a>> {
        if let Some(fd) = root.anchor.get() {
            return Ok(fd.as_fd());
        }
        let local = self.local(&root.rel);
        let dir = if root.dir {
            local
        } else {
            local
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| self.base.clone())
        };
        if create {
            std::fs::create_dir_all(&dir)?;
        }
        let fd = rustix::fs::open(&dir, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        // Another thread may have won: either descriptor names the same place.
        let _ = root.anchor.set(fd);
        Ok(root.anchor.get().expect("set above").as_fd())
    }

    /// The anchor of `path`'s root and the path relative to it (`.` for a
    /// directory root itself).
    fn locate<'p>(&self, path: &'p [u8], create: bool) -> io::Result<(BorrowedFd<'_>, &'p [u8])> {
        let root = self
            .root_of_own(path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "outside the set's roots"))?;
        let anchor = self.anchor(root, create)?;
        let rel: &[u8] = if root.dir {
            if path.len() == root.rel.len() {
                b"."
            } else {
                &path[root.rel.len() + 1..]
            }
        } else {
            split(path).1
        };
        Ok((anchor, rel))
    }

    /// Opens `path` with `flags` (`O_CLOEXEC` added), resolved beneath its
    /// root without following any symlink. `O_CREAT` creates a missing
    /// directory root first.
    pub fn open(&self, path: &[u8], flags: OFlags, mode: u32) -> io::Result<OwnedFd> {
        let (anchor, rel) = self.locate(path, flags.contains(OFlags::CREATE))?;
        let flags = flags | OFlags::CLOEXEC;
        // openat2 refuses a mode without O_CREAT.
        let mode = if flags.contains(OFlags::CREATE) { mode } else { 0 };
        let mut tries = 0;
        loop {
            // EAGAIN: a rename raced with the resolution; it is safe to retry.
            match rustix::fs::openat2(anchor, rel, flags, Mode::from_raw_mode(mode), beneath()) {
                Err(rustix::io::Errno::AGAIN) if tries < 16 => tries += 1,
                r => return r.map_err(io::Error::from),
            }
        }
    }

    /// Opens a regular file: to read, to write, or to create (mode 0600,
    /// not truncated). Only [`Open::Create`] creates: a temp file that
    /// vanished must not come back empty.
    pub fn open_file(&self, path: &[u8], how: Open) -> io::Result<File> {
        let flags = match how {
            Open::Read => OFlags::RDONLY | OFlags::NONBLOCK,
            Open::Write => OFlags::RDWR,
            Open::Create => OFlags::RDWR | OFlags::CREATE,
        };
        let f = File::from(self.open(path, flags, 0o600)?);
        // A temp file is checked when made; reopening it for writing is hot.
        if how != Open::Write && !f.metadata()?.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        Ok(f)
    }

    /// The directory holding `path` (an `O_PATH` descriptor) and the last
    /// component. For a root itself the parent is above the roots, trusted.
    pub fn parent<'p>(&self, path: &'p [u8]) -> io::Result<(OwnedFd, &'p [u8])> {
        let (dir, name) = split(path);
        let root = self
            .root_of_own(path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "outside the set's roots"))?;
        if path == root.rel.as_slice() || !root.dir {
            if !root.dir {
                return Ok((self.anchor(root, false)?.try_clone_to_owned()?, name));
            }
            let above = self.local(dir);
            let fd = rustix::fs::open(
                &above,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            return Ok((fd, name));
        }
        Ok((self.open(dir, OFlags::PATH | OFlags::DIRECTORY, 0)?, name))
    }

    /// `lstat` of `path`, resolved safely.
    pub fn stat(&self, path: &[u8]) -> io::Result<rustix::fs::Stat> {
        let (dir, name) = self.parent(path)?;
        Ok(rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
    }

    /// Creates directory `path` (its parent must exist), mode 0700 until
    /// its metadata is set. A directory root is created with its parents.
    pub fn mkdir(&self, path: &[u8]) -> io::Result<()> {
        if self.is_dir_root(path) {
            let root = self.root_of(path).expect("a root");
            return self.anchor(root, true).map(|_| ());
        }
        let (dir, name) = self.parent(path)?;
        match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700)) {
            Err(rustix::io::Errno::EXIST) => {
                let st = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
                if is_dir(&st) {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(libc::ENOTDIR))
                }
            }
            r => Ok(r?),
        }
    }

    /// Removes `path` whatever it is (a directory with everything in it),
    /// never following a symlink. Gone already, or beneath something that
    /// is not a directory (so it cannot exist): done.
    pub fn remove(&self, path: &[u8]) -> io::Result<()> {
        if self.is_dir_root(path) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a set's root is never removed",
            ));
        }
        let (dir, name) = match self.parent(path) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound || is_blocked(&e) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.retired.keep(dir.as_fd(), name);
        remove_at(dir.as_fd(), name)
    }

    /// Renames `from` to `to` (both set paths in the same directory), a
    /// directory in the way removed first, and returns the `lstat` of `to`
    /// after (`None` if that failed). A rename onto another name of the
    /// same inode does nothing (rename(2)), so the source is then removed
    /// instead: no temp file is ever left behind.
    pub fn replace(&self, from: &[u8], to: &[u8]) -> io::Result<Option<rustix::fs::Stat>> {
        let (dir, to_name) = self.parent(to)?;
        let from_name = split(from).1;
        let stat = || rustix::fs::statat(&dir, to_name, AtFlags::SYMLINK_NOFOLLOW).ok();
        let same_inode = |st: &rustix::fs::Stat| {
            rustix::fs::statat(&dir, from_name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|src| (src.st_dev, src.st_ino) == (st.st_dev, st.st_ino))
        };
        // Most renames of a pass go to a new name, or over an old version
        // whose blocks are better freed after the answer: the first try
        // tells which, at no cost for a new name.
        match rustix::fs::renameat_with(&dir, from_name, &dir, to_name, RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(stat()),
            Err(rustix::io::Errno::EXIST) => {
                self.retired.keep(dir.as_fd(), to_name);
            }
            // A filesystem without RENAME_NOREPLACE: the plain rename.
            Err(_) => {}
        }
        match rustix::fs::renameat(&dir, from_name, &dir, to_name) {
            Ok(()) => {
                // Both names may still be there: then they were one inode.
                if let Some(st) = stat()
                    && st.st_nlink > 1
                    && same_inode(&st)
                {
                    rustix::fs::unlinkat(&dir, from_name, AtFlags::empty())?;
                }
                Ok(stat())
            }
            // A directory where the new version goes: removed, then again.
            Err(rustix::io::Errno::ISDIR) | Err(rustix::io::Errno::NOTEMPTY) | Err(rustix::io::Errno::EXIST) => {
                remove_at(dir.as_fd(), to_name)?;
                rustix::fs::renameat(&dir, from_name, &dir, to_name)?;
                Ok(stat())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Flushes the filesystem holding the set's first root that exists.
    pub fn syncfs(&self) -> io::Result<()> {
        for root in &self.roots {
            if let Ok(fd) = self.anchor(root, false) {
                // syncfs needs a real descriptor, not the anchor's O_PATH one.
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
                let dir = rustix::fs::openat(fd, ".", flags, Mode::empty())?;
                return Ok(rustix::fs::syncfs(dir)?);
            }
        }
        Ok(())
    }
}

/// Removes `name` in `dir`: a directory recursively through descriptors
/// (a symlink inside is removed, never followed), anything else unlinked.
pub fn remove_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        // Not a directory (or a symlink): one name to unlink.
        Err(rustix::io::Errno::NOTDIR) | Err(rustix::io::Errno::LOOP) => {
            return match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
                Err(rustix::io::Errno::NOENT) => Ok(()),
                r => Ok(r?),
            };
        }
        Err(e) => return Err(e.into()),
    };
    let mut names = Vec::new();
    for ent in rustix::fs::Dir::read_from(&fd)? {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    for n in names {
        remove_at(fd.as_fd(), &n)?;
    }
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Err(rustix::io::Errno::NOENT) => Ok(()),
        r => Ok(r?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ChunkParams;

    fn set() -> MirrorSet {
        let roots = [("/srv/data", true), ("/etc/x.conf", false)];
        MirrorSet::for_tests("Fx", "/c/Fx".into(), &roots, ChunkParams::default())
    }

    #[test]
    fn paths_are_confined_to_the_roots() {
        let tmp = tempfile::tempdir().unwrap();
        let d = Dest::new(tmp.path(), &set());
        assert!(d.check(b"srv/data/a/b").is_ok());
        assert!(d.check(b"etc/x.conf").is_ok());
        for bad in [
            &b"etc/passwd"[..],
            b"srv/database",
            b"srv/data/../../etc/passwd",
            b"/srv/data/a",
            b"etc/x.conf/y",
        ] {
            assert!(d.check(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn nothing_is_reached_through_a_symlink_below_a_root() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("passwd"), b"keep").unwrap();
        std::fs::create_dir_all(tmp.path().join("srv/data")).unwrap();
        std::os::unix::fs::symlink(&outside, tmp.path().join("srv/data/evil")).unwrap();
        let d = Dest::new(tmp.path(), &set());
        let blocked = |e: io::Error| assert!(is_blocked(&e), "{e}");
        blocked(d.open_file(b"srv/data/evil/passwd", Open::Read).unwrap_err());
        blocked(d.open_file(b"srv/data/evil/new", Open::Create).unwrap_err());
        blocked(d.stat(b"srv/data/evil/passwd").unwrap_err());
        blocked(d.mkdir(b"srv/data/evil/sub").unwrap_err());
        // Removing below a symlink finds nothing; removing the link itself
        // removes the link, not what it points to.
        d.remove(b"srv/data/evil/passwd").unwrap();
        d.remove(b"srv/data/evil").unwrap();
        assert_eq!(std::fs::read(outside.join("passwd")).unwrap(), b"keep");
        assert!(std::fs::symlink_metadata(tmp.path().join("srv/data/evil")).is_err());
    }

    #[test]
    fn a_directory_is_removed_without_following_the_symlinks_in_it() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("f"), b"keep").unwrap();
        let sub = tmp.path().join("srv/data/d/e");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("f"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, sub.join("link")).unwrap();
        let d = Dest::new(tmp.path(), &set());
        d.remove(b"srv/data/d").unwrap();
        assert!(!tmp.path().join("srv/data/d").exists());
        assert_eq!(std::fs::read(outside.join("f")).unwrap(), b"keep");
        assert!(d.remove(b"srv/data").is_err(), "a root is never removed");
    }

    #[test]
    fn a_missing_directory_root_is_created_on_write_only() {
        let tmp = tempfile::tempdir().unwrap();
        let d = Dest::new(tmp.path(), &set());
        assert!(d.open_file(b"srv/data/a", Open::Read).is_err());
        assert!(!tmp.path().join("srv").exists());
        d.open_file(b"srv/data/a", Open::Create).unwrap();
        assert!(tmp.path().join("srv/data/a").is_file());
        d.open_file(b"etc/x.conf", Open::Create).unwrap();
        assert!(tmp.path().join("etc/x.conf").is_file());
        // The temp file of a single-file root lies beside it, in its
        // directory; nothing else there is reachable, nor offerable.
        let temp = crate::apply::temp_path(b"etc/x.conf", &[1; 32]);
        d.open_file(&temp, Open::Create).unwrap();
        d.replace(&temp, b"etc/x.conf").unwrap();
        assert!(d.open_file(b"etc/other", Open::Create).is_err());
        assert!(d.check(&temp).is_err());
    }
}
