//! A manifest entry: what one path of a set is (file, directory, symlink,
//! hard link, FIFO, device node), with its metadata and, for a file, its
//! chunk list. This is
//! the unit the sender offers and the index stores. Decoding validates the
//! shape of every path (relative, no `.`/`..`/empty components, no NUL,
//! bounded length); whether a path lies inside a set's roots and does not
//! pass through a symlink is for the receiver to check against its disk.

use crate::codec::{DecodeError, Reader, Writer};

/// A BLAKE3 hash.
pub type Hash = [u8; 32];

/// Longest path or symlink target accepted (Linux `PATH_MAX`).
pub const MAX_PATH: usize = 4096;
/// Largest chunk: the `fastcdc` 2020 maximum.
pub const MAX_CHUNK: u32 = 16 << 20;
/// Most chunks in one entry (a 1 TiB file at 64 KiB average).
pub const MAX_CHUNKS: u64 = 1 << 24;
/// Longest device number target: `4294967295:4294967295`.
pub const MAX_DEVICE: usize = 21;
/// Permission bits only (`07777`); the kind is carried separately.
pub const MODE_MASK: u32 = 0o7777;
/// Most extended attributes on one entry.
pub const MAX_XATTRS: u64 = 128;
/// Longest attribute name, namespace included (Linux `XATTR_NAME_MAX`).
pub const MAX_XATTR_NAME: usize = 255;
/// Largest attribute value (Linux `XATTR_SIZE_MAX`).
pub const MAX_XATTR_VALUE: usize = 64 << 10;
/// Most bytes of names and values together on one entry.
pub const MAX_XATTR_BYTES: usize = 256 << 10;

/// One extended attribute (a POSIX ACL is one too:
/// `system.posix_acl_access` / `system.posix_acl_default`, in the kernel's
/// binary form).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Xattr {
    /// The full name with its namespace: `user.DOSATTRIB`.
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// Checks a list of attributes as an entry carries it: at most
/// [`MAX_XATTRS`], names of 3..=[`MAX_XATTR_NAME`] bytes with a namespace
/// (`ns.rest`) and no NUL, strictly ascending by name (so two equal sets
/// compare equal), values of at most [`MAX_XATTR_VALUE`] bytes, at most
/// [`MAX_XATTR_BYTES`] in all.
pub fn check_xattrs(x: &[Xattr]) -> Result<(), &'static str> {
    if x.len() as u64 > MAX_XATTRS {
        return Err("too many extended attributes");
    }
    let mut total = 0usize;
    for (i, a) in x.iter().enumerate() {
        let n = &a.name;
        if n.len() > MAX_XATTR_NAME || n.contains(&0) {
            return Err("extended attribute name too long or with NUL");
        }
        match n.iter().position(|b| *b == b'.') {
            Some(dot) if dot > 0 && dot + 1 < n.len() => {}
            _ => return Err("extended attribute name without a namespace"),
        }
        if a.value.len() > MAX_XATTR_VALUE {
            return Err("extended attribute value too large");
        }
        if i > 0 && x[i - 1].name >= a.name {
            return Err("extended attributes not in ascending name order");
        }
        total += n.len() + a.value.len();
    }
    if total > MAX_XATTR_BYTES {
        return Err("extended attributes too large in all");
    }
    Ok(())
}

/// Encodes an attribute list: `list(name: bytes(255), value: bytes(64 KiB))`.
pub(crate) fn put_xattrs(w: &mut Writer, x: &[Xattr]) {
    w.varint(x.len() as u64);
    for a in x {
        w.bytes(&a.name).bytes(&a.value);
    }
}

/// Decodes and checks ([`check_xattrs`]) an attribute list.
pub(crate) fn get_xattrs(r: &mut Reader<'_>) -> Result<Vec<Xattr>, DecodeError> {
    let n = r.count("xattr count", MAX_XATTRS, 5)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.bytes("xattr name", MAX_XATTR_NAME)?.to_vec();
        let value = r.bytes("xattr value", MAX_XATTR_VALUE)?.to_vec();
        v.push(Xattr { name, value });
    }
    check_xattrs(&v).map_err(|what| DecodeError::Invalid { what, value: n as u64 })?;
    Ok(v)
}

/// One content-defined chunk of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkRef {
    pub hash: Hash,
    pub len: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EntryKind {
    File = 0,
    Dir = 1,
    Symlink = 2,
    /// A further name of a file already in the set: `target` holds the
    /// path of the first name (in byte order) of the same inode.
    HardLink = 3,
    /// A named pipe. Protocol version 2 only, like the two below.
    Fifo = 4,
    /// A character device node: `target` holds its device number
    /// ([`device_target`]).
    CharDev = 5,
    /// A block device node, `target` as for [`EntryKind::CharDev`].
    BlockDev = 6,
}

impl EntryKind {
    /// A FIFO or a device node: an inode without data, recreated with
    /// `mknod`. Protocol version 1 has no such kinds.
    pub fn is_special(self) -> bool {
        matches!(self, EntryKind::Fifo | EntryKind::CharDev | EntryKind::BlockDev)
    }

    /// A character or block device node.
    pub fn is_device(self) -> bool {
        matches!(self, EntryKind::CharDev | EntryKind::BlockDev)
    }

    /// `specials`: whether the protocol version has [`EntryKind::is_special`] kinds.
    fn from_u8(v: u8, specials: bool) -> Result<Self, DecodeError> {
        Ok(match v {
            0 => EntryKind::File,
            1 => EntryKind::Dir,
            2 => EntryKind::Symlink,
            3 => EntryKind::HardLink,
            4 if specials => EntryKind::Fifo,
            5 if specials => EntryKind::CharDev,
            6 if specials => EntryKind::BlockDev,
            _ => {
                return Err(DecodeError::Invalid {
                    what: "entry kind",
                    value: v.into(),
                });
            }
        })
    }
}

/// One path of a set with everything needed to recreate it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to `/` as the cluster names it: `var/spool/lpd/queue/a`.
    /// Raw bytes: Linux file names need not be UTF-8.
    pub path: Vec<u8>,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time in nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Bytes for a file, 0 otherwise.
    pub size: u64,
    /// For a file: [`file_hash`] of its chunks. Zero otherwise.
    pub file_hash: Hash,
    pub chunks: Vec<ChunkRef>,
    /// Symlink target, the first name of a hard link, or a device node's
    /// number (`major:minor`, [`device_target`]). Empty otherwise.
    pub target: Vec<u8>,
    /// Extended attributes and ACLs, ascending by name ([`check_xattrs`]).
    /// Empty for symlinks and hard links (a hard link's are its file's).
    /// FIFOs and device nodes carry theirs (Linux allows all but `user.*`).
    pub xattrs: Vec<Xattr>,
}

/// The identity of a file's content, derived from its chunk list:
/// BLAKE3 over each chunk's hash followed by its length (little endian u32).
pub fn file_hash(chunks: &[ChunkRef]) -> Hash {
    let mut h = blake3::Hasher::new();
    for c in chunks {
        h.update(&c.hash);
        h.update(&c.len.to_le_bytes());
    }
    *h.finalize().as_bytes()
}

/// A device number as an entry's `target` carries it: `major:minor` in
/// decimal, without leading zeros (one spelling per number, so targets
/// compare equal exactly when the numbers do).
pub fn device_target(major: u32, minor: u32) -> Vec<u8> {
    format!("{major}:{minor}").into_bytes()
}

/// The `(major, minor)` of a [`device_target`]; `None` for any other
/// spelling.
pub fn parse_device(t: &[u8]) -> Option<(u32, u32)> {
    fn number(d: &[u8]) -> Option<u32> {
        let canonical = !d.is_empty() && d.iter().all(u8::is_ascii_digit) && (d[0] != b'0' || d.len() == 1);
        canonical.then(|| std::str::from_utf8(d).ok()?.parse().ok())?
    }
    let colon = t.iter().position(|b| *b == b':')?;
    Some((number(&t[..colon])?, number(&t[colon + 1..])?))
}

/// Checks the shape of a set-relative path: non-empty, relative, no empty,
/// `.` or `..` components, no NUL, at most [`MAX_PATH`] bytes.
pub fn check_path(p: &[u8]) -> Result<(), &'static str> {
    if p.is_empty() {
        return Err("empty path");
    }
    if p.len() > MAX_PATH {
        return Err("path too long");
    }
    if p[0] == b'/' {
        return Err("absolute path");
    }
    if p.contains(&0) {
        return Err("NUL in path");
    }
    if p.split(|b| *b == b'/').any(|c| c.is_empty() || c == b"." || c == b"..") {
        return Err("empty, '.' or '..' component in path");
    }
    Ok(())
}

fn decode_path<'a>(r: &mut Reader<'a>, what: &'static str) -> Result<&'a [u8], DecodeError> {
    let p = r.bytes(what, MAX_PATH)?;
    check_path(p).map_err(|_| DecodeError::Invalid {
        what,
        value: p.len() as u64,
    })?;
    Ok(p)
}

impl Entry {
    /// Encodes the whole entry, path first.
    pub fn encode(&self, w: &mut Writer) {
        w.bytes(&self.path);
        self.encode_body(w);
    }

    /// Encodes everything but the path (the index keys entries by path).
    pub fn encode_body(&self, w: &mut Writer) {
        self.encode_body_v1(w);
        put_xattrs(w, &self.xattrs);
    }

    /// The body as protocol version 1 had it: without the attributes. A
    /// FIFO or device node has no version-1 form: the caller leaves such
    /// entries out (a version-1 decoder refuses their kind).
    pub fn encode_body_v1(&self, w: &mut Writer) {
        w.u8(self.kind as u8)
            .varint(self.mode.into())
            .varint(self.uid.into())
            .varint(self.gid.into())
            .ivarint(self.mtime_ns)
            .varint(self.size);
        match self.kind {
            EntryKind::File => {
                w.raw(&self.file_hash).varint(self.chunks.len() as u64);
                for c in &self.chunks {
                    w.raw(&c.hash).varint(c.len.into());
                }
            }
            EntryKind::Dir | EntryKind::Fifo => {}
            EntryKind::Symlink | EntryKind::HardLink | EntryKind::CharDev | EntryKind::BlockDev => {
                w.bytes(&self.target);
            }
        }
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<Entry, DecodeError> {
        let path = decode_path(r, "entry path")?.to_vec();
        Entry::decode_body(r, path)
    }

    /// Decodes what [`Entry::encode_body`] wrote, for the given path.
    pub fn decode_body(r: &mut Reader<'_>, path: Vec<u8>) -> Result<Entry, DecodeError> {
        let mut e = Entry::decode_fields(r, path, true)?;
        e.xattrs = get_xattrs(r)?;
        Ok(e)
    }

    /// Decodes what [`Entry::encode_body_v1`] wrote (no attributes, and
    /// none of the kinds version 1 lacks).
    pub fn decode_body_v1(r: &mut Reader<'_>, path: Vec<u8>) -> Result<Entry, DecodeError> {
        Entry::decode_fields(r, path, false)
    }

    /// Everything but the attributes; `specials`: FIFOs and device nodes
    /// are known kinds (version 2).
    fn decode_fields(r: &mut Reader<'_>, path: Vec<u8>, specials: bool) -> Result<Entry, DecodeError> {
        let kind = EntryKind::from_u8(r.u8("entry kind")?, specials)?;
        let mode = r.bounded("mode", MODE_MASK.into())? as u32;
        let uid = r.u32("uid")?;
        let gid = r.u32("gid")?;
        let mtime_ns = r.ivarint("mtime")?;
        let size = r.varint("size")?;
        let mut e = Entry {
            path,
            kind,
            mode,
            uid,
            gid,
            mtime_ns,
            size,
            file_hash: [0; 32],
            chunks: vec![],
            target: vec![],
            xattrs: vec![],
        };
        match kind {
            EntryKind::File => {
                e.file_hash = r.hash("file hash")?;
                let n = r.count("chunk count", MAX_CHUNKS, 33)?;
                e.chunks.reserve_exact(n);
                let mut total: u64 = 0;
                for _ in 0..n {
                    let hash = r.hash("chunk hash")?;
                    let len = r.bounded("chunk length", MAX_CHUNK.into())? as u32;
                    if len == 0 {
                        return Err(DecodeError::Invalid {
                            what: "chunk length",
                            value: 0,
                        });
                    }
                    total += u64::from(len);
                    e.chunks.push(ChunkRef { hash, len });
                }
                if total != size {
                    return Err(DecodeError::Invalid {
                        what: "file size (differs from the sum of its chunks)",
                        value: size,
                    });
                }
            }
            EntryKind::Dir | EntryKind::Fifo | EntryKind::CharDev | EntryKind::BlockDev => {
                if size != 0 {
                    return Err(DecodeError::Invalid {
                        what: if kind == EntryKind::Dir {
                            "directory size"
                        } else {
                            "FIFO or device node size"
                        },
                        value: size,
                    });
                }
                if kind.is_device() {
                    let t = r.bytes("device number", MAX_DEVICE)?;
                    if parse_device(t).is_none() {
                        return Err(DecodeError::Invalid {
                            what: "device number (expected `major:minor` in decimal)",
                            value: t.len() as u64,
                        });
                    }
                    e.target = t.to_vec();
                }
            }
            EntryKind::Symlink => {
                let t = r.bytes("symlink target", MAX_PATH)?;
                if t.is_empty() || t.contains(&0) {
                    return Err(DecodeError::Invalid {
                        what: "symlink target",
                        value: t.len() as u64,
                    });
                }
                e.target = t.to_vec();
            }
            EntryKind::HardLink => e.target = decode_path(r, "hard link target")?.to_vec(),
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file() -> Entry {
        let chunks = vec![ChunkRef { hash: [1; 32], len: 10 }, ChunkRef { hash: [2; 32], len: 5 }];
        Entry {
            path: b"var/spool/lpd/a \xff".to_vec(),
            kind: EntryKind::File,
            mode: 0o644,
            uid: 1000,
            gid: 100,
            mtime_ns: 1_700_000_000_123_456_789,
            size: 15,
            file_hash: file_hash(&chunks),
            chunks,
            target: vec![],
            xattrs: vec![Xattr {
                name: b"user.DOSATTRIB".to_vec(),
                value: b"0x20".to_vec(),
            }],
        }
    }

    #[test]
    fn entries_round_trip() {
        let mut link = file();
        link.kind = EntryKind::Symlink;
        link.chunks.clear();
        link.size = 0;
        link.file_hash = [0; 32];
        link.target = b"../x".to_vec();
        link.xattrs.clear();
        for e in [file(), link] {
            let mut w = Writer::new();
            e.encode(&mut w);
            let mut r = Reader::new(&w.buf);
            assert_eq!(Entry::decode(&mut r).unwrap(), e);
            r.finish().unwrap();
        }
    }

    #[test]
    fn frozen_dir_entry_bytes() {
        let e = Entry {
            path: b"etc/x".to_vec(),
            kind: EntryKind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime_ns: -1,
            size: 0,
            file_hash: [0; 32],
            chunks: vec![],
            target: vec![],
            xattrs: vec![Xattr {
                name: b"user.a".to_vec(),
                value: b"1".to_vec(),
            }],
        };
        let mut w = Writer::new();
        e.encode(&mut w);
        assert_eq!(
            w.buf,
            [
                5, b'e', b't', b'c', b'/', b'x', 1, 0xed, 0x03, 0, 0, 1, 0, 1, 6, b'u', b's', b'e', b'r', b'.', b'a',
                1, b'1'
            ]
        );
    }

    #[test]
    fn attribute_lists_are_checked() {
        let x = |n: &[u8], v: usize| Xattr {
            name: n.to_vec(),
            value: vec![0; v],
        };
        assert!(check_xattrs(&[x(b"user.a", 1), x(b"user.b", 0)]).is_ok());
        for bad in [
            vec![x(b"user.b", 1), x(b"user.a", 1)],
            vec![x(b"user.a", 1), x(b"user.a", 1)],
            vec![x(b"nodot", 1)],
            vec![x(b".a", 1)],
            vec![x(b"user.", 1)],
            vec![x(b"user.\0", 1)],
            vec![x(b"user.a", MAX_XATTR_VALUE + 1)],
            (0..5u8).map(|i| x(&[b'u', b'.', b'a' + i], MAX_XATTR_VALUE)).collect(),
            (0..=MAX_XATTRS)
                .map(|i| x(format!("user.{i:04}").as_bytes(), 0))
                .collect(),
        ] {
            assert!(check_xattrs(&bad).is_err(), "{bad:?}");
            let mut e = file();
            e.xattrs = bad;
            let mut w = Writer::new();
            e.encode(&mut w);
            assert!(Entry::decode(&mut Reader::new(&w.buf)).is_err());
        }
    }

    #[test]
    fn a_version_1_body_has_no_attributes() {
        let e = file();
        let mut w = Writer::new();
        e.encode_body_v1(&mut w);
        let mut r = Reader::new(&w.buf);
        let back = Entry::decode_body_v1(&mut r, e.path.clone()).unwrap();
        r.finish().unwrap();
        assert_eq!(back.xattrs, vec![]);
        assert!(Entry::decode_body(&mut Reader::new(&w.buf), e.path.clone()).is_err());
    }

    fn special(kind: EntryKind, target: &[u8]) -> Entry {
        Entry {
            path: b"dev/null".to_vec(),
            kind,
            mode: 0o640,
            uid: 7,
            gid: 0,
            mtime_ns: 1,
            size: 0,
            file_hash: [0; 32],
            chunks: vec![],
            target: target.to_vec(),
            xattrs: vec![],
        }
    }

    fn encoded(e: &Entry) -> Vec<u8> {
        let mut w = Writer::new();
        e.encode(&mut w);
        w.buf
    }

    #[test]
    fn fifos_and_device_nodes_round_trip_in_version_2_only() {
        let mut fifo = special(EntryKind::Fifo, b"");
        fifo.xattrs = vec![Xattr {
            name: b"trusted.x".to_vec(),
            value: b"1".to_vec(),
        }];
        for e in [
            fifo,
            special(EntryKind::CharDev, &device_target(1, 3)),
            special(EntryKind::BlockDev, &device_target(u32::MAX, 0)),
        ] {
            let buf = encoded(&e);
            let mut r = Reader::new(&buf);
            assert_eq!(Entry::decode(&mut r).unwrap(), e);
            r.finish().unwrap();
            let mut w = Writer::new();
            e.encode_body_v1(&mut w);
            let err = Entry::decode_body_v1(&mut Reader::new(&w.buf), e.path.clone()).unwrap_err();
            assert!(err.to_string().contains("entry kind"), "{err}");
        }
    }

    #[test]
    fn frozen_device_entry_bytes() {
        assert_eq!(
            encoded(&special(EntryKind::CharDev, b"1:3")),
            [
                8, b'd', b'e', b'v', b'/', b'n', b'u', b'l', b'l', 5, 0xa0, 0x03, 7, 0, 2, 0, 3, b'1', b':', b'3', 0
            ]
        );
        assert_eq!(
            encoded(&special(EntryKind::Fifo, b"")),
            [
                8, b'd', b'e', b'v', b'/', b'n', b'u', b'l', b'l', 4, 0xa0, 0x03, 7, 0, 2, 0, 0
            ]
        );
    }

    #[test]
    fn device_numbers_have_one_spelling() {
        assert_eq!(parse_device(b"1:3"), Some((1, 3)));
        assert_eq!(parse_device(b"0:0"), Some((0, 0)));
        assert_eq!(parse_device(b"4294967295:4294967295"), Some((u32::MAX, u32::MAX)));
        assert_eq!(device_target(259, 65536), b"259:65536");
        for bad in [
            &b""[..],
            b"1",
            b"1:",
            b":3",
            b"01:3",
            b"1:03",
            b"+1:3",
            b"1:-3",
            b"1:3:4",
            b"a:b",
            b" 1:3",
            b"4294967296:0",
        ] {
            assert_eq!(parse_device(bad), None, "{:?}", String::from_utf8_lossy(bad));
            let e = special(EntryKind::BlockDev, bad);
            let err = Entry::decode(&mut Reader::new(&encoded(&e))).unwrap_err();
            assert!(err.to_string().contains("device number"), "{err}");
        }
        // A FIFO or device with a size, or a device target too long, is refused.
        let mut e = special(EntryKind::Fifo, b"");
        e.size = 1;
        assert!(Entry::decode(&mut Reader::new(&encoded(&e))).is_err());
        let e = special(EntryKind::CharDev, b"1111111111:11111111111");
        assert!(Entry::decode(&mut Reader::new(&encoded(&e))).is_err());
    }

    #[test]
    fn unsafe_paths_and_inconsistent_sizes_are_refused() {
        for bad in [&b"/etc/passwd"[..], b"a/../../b", b"a//b", b"./a", b"a/\0", b""] {
            assert!(check_path(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut e = file();
        e.size = 16;
        let mut w = Writer::new();
        e.encode(&mut w);
        assert!(Entry::decode(&mut Reader::new(&w.buf)).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Entry::decode(&mut Reader::new(&data));
        }
    }
}
