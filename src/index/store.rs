//! How the rows of formats 2 and 3 are laid out in bytes: a set's file row
//! (the stat fingerprint and the entry in one value, keyed by the path in
//! format 2, by directory number and name in 3: `dirs.rs`), a chunk
//! locator key (an 8-byte hash prefix and the file's key), and a generation log
//! record (front-coded sorted paths, zstd-compressed). Pure encodings: no
//! redb, no files.
//!
//! Why this shape (issue 17): format 1 stored every path three times (the
//! entry, the fingerprint and each chunk locator row), 40 raw bytes of
//! fingerprint, a file hash that is derived from the chunk list anyway,
//! and uncompressed log records holding every path once more — about
//! 650 bytes a file on disk. The locator only has to find a candidate: a
//! reader re-hashes every chunk it copies, so 8 bytes of hash (a false
//! match once in 2^64 pairs) are enough.

use hamirror_wire::entry::file_hash;
use hamirror_wire::{DecodeError, Entry, EntryKind, Hash, Reader, Writer};

use super::{Fingerprint, IndexError};

/// Bytes of a chunk hash kept in a locator key.
pub(super) const HASH_PREFIX: usize = 8;

const FP_KNOWN: u8 = 1;
/// The file hash is not stored: it is `file_hash(chunks)`.
const HASH_DERIVED: u8 = 2;
/// The fingerprint's size and mtime are the entry's (a file or symlink
/// as read, or as a receiver wrote it): not stored twice.
const FP_AS_ENTRY: u8 = 4;

/// Encodes a file row: flags, the fingerprint (varints: dev, ino, size and
/// mtime unless they are the entry's, the ctime as a difference from the
/// mtime), then the entry body without its file hash when that is the one
/// derived from the chunks.
pub(super) fn encode_row(entry: &Entry, stat: Option<&Fingerprint>) -> Vec<u8> {
    let mut body = Writer::new();
    entry.encode_body(&mut body);
    let derived = entry.kind == EntryKind::File && entry.file_hash == file_hash(&entry.chunks);
    let as_entry = stat.is_some_and(|f| f.size == entry.size && f.mtime_ns == entry.mtime_ns);
    let mut w = Writer::new();
    let flags = if stat.is_some() { FP_KNOWN } else { 0 }
        | if derived { HASH_DERIVED } else { 0 }
        | if as_entry { FP_AS_ENTRY } else { 0 };
    w.u8(flags);
    if let Some(f) = stat {
        w.varint(f.dev).varint(f.ino);
        if !as_entry {
            w.varint(f.size).ivarint(f.mtime_ns);
        }
        w.ivarint(f.ctime_ns.wrapping_sub(f.mtime_ns));
    }
    if derived {
        let at = hash_offset(&body.buf).unwrap_or(0);
        w.raw(&body.buf[..at]).raw(&body.buf[at + 32..]);
    } else {
        w.raw(&body.buf);
    }
    w.buf
}

/// The mtime and size of an entry body (they follow kind, mode, uid, gid).
fn body_mtime_size(body: &[u8]) -> Result<(i64, u64), DecodeError> {
    let mut r = Reader::new(body);
    r.u8("entry kind")?;
    for what in ["mode", "uid", "gid"] {
        r.varint(what)?;
    }
    Ok((r.ivarint("mtime")?, r.varint("size")?))
}

/// Where the file hash sits in an entry body: after kind, mode, uid, gid,
/// mtime and size.
fn hash_offset(body: &[u8]) -> Result<usize, DecodeError> {
    let mut r = Reader::new(body);
    r.u8("entry kind")?;
    for what in ["mode", "uid", "gid", "mtime", "size"] {
        r.varint(what)?;
    }
    Ok(body.len() - r.remaining())
}

/// The flags and fingerprint of a row, and the rest (the stored body).
fn split_row(row: &[u8]) -> Result<(u8, Option<Fingerprint>, &[u8]), DecodeError> {
    let mut r = Reader::new(row);
    let flags = r.u8("row flags")?;
    if flags & !(FP_KNOWN | HASH_DERIVED | FP_AS_ENTRY) != 0 || flags & (FP_KNOWN | FP_AS_ENTRY) == FP_AS_ENTRY {
        return Err(DecodeError::Invalid {
            what: "row flags",
            value: flags.into(),
        });
    }
    if flags & FP_KNOWN == 0 {
        return Ok((flags, None, &row[row.len() - r.remaining()..]));
    }
    let dev = r.varint("dev")?;
    let ino = r.varint("ino")?;
    let stored = if flags & FP_AS_ENTRY == 0 {
        Some((r.varint("size")?, r.ivarint("mtime")?))
    } else {
        None
    };
    let ctime_diff = r.ivarint("ctime")?;
    let rest = &row[row.len() - r.remaining()..];
    let (size, mtime_ns) = match stored {
        Some(v) => v,
        None => {
            let (mtime, size) = body_mtime_size(rest)?;
            (size, mtime)
        }
    };
    let fp = Fingerprint {
        dev,
        ino,
        size,
        mtime_ns,
        ctime_ns: mtime_ns.wrapping_add(ctime_diff),
    };
    Ok((flags, Some(fp), rest))
}

/// The fingerprint of a row; `None` when unknown or unreadable (the file is
/// then simply read again).
pub(super) fn row_fingerprint(row: &[u8]) -> Option<Fingerprint> {
    split_row(row).ok().and_then(|(_, fp, _)| fp)
}

/// The stored entry part of a row: equal rows describe equal entries.
pub(super) fn row_body(row: &[u8]) -> &[u8] {
    split_row(row).map_or(row, |(_, _, body)| body)
}

/// Decodes the entry of a row.
pub(super) fn decode_row(path: &[u8], row: &[u8]) -> Result<Entry, IndexError> {
    let corrupt = |e: DecodeError| IndexError::Corrupt(format!("entry {}: {e}", String::from_utf8_lossy(path)));
    let (flags, _, body) = split_row(row).map_err(corrupt)?;
    // Strict: every format-2 row was written with the attribute list (a
    // format-1 row without it was re-encoded by the migration).
    let decode = |body: &[u8]| {
        let mut r = Reader::new(body);
        let e = Entry::decode_body(&mut r, path.to_vec()).map_err(corrupt)?;
        r.finish().map_err(corrupt)?;
        Ok::<Entry, IndexError>(e)
    };
    if flags & HASH_DERIVED == 0 {
        return decode(body);
    }
    let at = hash_offset(body).map_err(corrupt)?;
    let mut full = Vec::with_capacity(body.len() + 32);
    full.extend_from_slice(&body[..at]);
    full.extend_from_slice(&[0; 32]);
    full.extend_from_slice(&body[at..]);
    let mut e = decode(&full)?;
    e.file_hash = file_hash(&e.chunks);
    Ok(e)
}

/// A locator key: the hash prefix, then the path.
pub(super) fn locator_key(hash: &Hash, path: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(HASH_PREFIX + path.len());
    k.extend_from_slice(&hash[..HASH_PREFIX]);
    k.extend_from_slice(path);
    k
}

/// The smallest key after every key starting with `prefix` (`None`: no
/// such key, every later key starts with it).
pub(super) fn next_prefix(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut p = prefix.to_vec();
    while let Some(last) = p.pop() {
        if last < 0xff {
            p.push(last + 1);
            return Some(p);
        }
    }
    None
}

/// A locator value: the offset as a varint (nothing for offset 0, the
/// common case of a file's first chunk).
pub(super) fn locator_value(offset: u64) -> Vec<u8> {
    if offset == 0 {
        return vec![];
    }
    let mut w = Writer::new();
    w.varint(offset);
    w.buf
}

pub(super) fn decode_locator_value(v: &[u8]) -> Result<u64, IndexError> {
    if v.is_empty() {
        return Ok(0);
    }
    let mut r = Reader::new(v);
    let off = r
        .varint("chunk offset")
        .map_err(|e| IndexError::Corrupt(format!("chunk location: {e}")))?;
    r.finish()
        .map_err(|e| IndexError::Corrupt(format!("chunk location: {e}")))?;
    Ok(off)
}

/// A log record: the path count (readable without decompressing, for
/// trimming), then zstd of the sorted paths, each as the length of the
/// prefix it shares with the one before and the rest.
pub(super) fn encode_log(paths: &[&[u8]]) -> Vec<u8> {
    let mut plain = Writer::new();
    let mut prev: &[u8] = &[];
    for p in paths {
        let shared = prev.iter().zip(p.iter()).take_while(|(a, b)| a == b).count();
        plain.varint(shared as u64).bytes(&p[shared..]);
        prev = p;
    }
    let mut w = Writer::new();
    w.varint(paths.len() as u64);
    // Level 3: a record is written once per commit; compressing 100,000
    // paths at this level takes a few milliseconds.
    match zstd::bulk::compress(&plain.buf, 3) {
        Ok(z) => w.raw(&z),
        // Never fails on a memory buffer; if it did, refuse nothing: an
        // empty record reads back as a decode error, and the peer then
        // compares everything.
        Err(_) => &mut w,
    };
    w.buf
}

pub(super) fn decode_log(record: &[u8]) -> Result<Vec<Vec<u8>>, DecodeError> {
    let mut r = Reader::new(record);
    let n = usize::try_from(r.varint("log paths")?).unwrap_or(usize::MAX);
    let z = &record[record.len() - r.remaining()..];
    // Grows as it decodes (a capacity sized for the worst case would
    // reserve 4 KiB per path).
    let plain = zstd::stream::decode_all(z).map_err(|_| DecodeError::Invalid {
        what: "compressed log record",
        value: z.len() as u64,
    })?;
    let mut r = Reader::new(&plain);
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(n.min(plain.len()));
    for _ in 0..n {
        let shared = r.varint("log path prefix")? as usize;
        let prev = out.last().map_or(&[][..], |p| &p[..]);
        if shared > prev.len() {
            return Err(DecodeError::Invalid {
                what: "log path prefix",
                value: shared as u64,
            });
        }
        let mut p = prev[..shared].to_vec();
        p.extend_from_slice(r.bytes("log path", hamirror_wire::entry::MAX_PATH)?);
        out.push(p);
    }
    r.finish()?;
    Ok(out)
}

pub(super) fn count_log(record: &[u8]) -> Result<u64, IndexError> {
    Reader::new(record)
        .varint("log paths")
        .map_err(|e| IndexError::Corrupt(format!("log record: {e}")))
}

#[cfg(test)]
mod tests {
    use hamirror_wire::ChunkRef;

    use super::*;

    fn file(chunks: Vec<ChunkRef>, hash: Option<Hash>) -> Entry {
        Entry {
            path: b"d/f".to_vec(),
            kind: EntryKind::File,
            mode: 0o640,
            uid: 1000,
            gid: 100,
            mtime_ns: 1_700_000_000_123_456_789,
            size: chunks.iter().map(|c| u64::from(c.len)).sum(),
            file_hash: hash.unwrap_or_else(|| file_hash(&chunks)),
            chunks,
            target: vec![],
            xattrs: vec![],
        }
    }

    #[test]
    fn rows_round_trip_with_and_without_fingerprint_and_derived_hash() {
        let fp = Fingerprint {
            dev: 2049,
            ino: 1_234_567,
            size: 300,
            mtime_ns: 1_700_000_000_123_456_789,
            ctime_ns: 1_700_000_001_000_000_000,
        };
        let chunks = vec![
            ChunkRef {
                hash: [7; 32],
                len: 100,
            },
            ChunkRef {
                hash: [9; 32],
                len: 200,
            },
        ];
        for e in [file(chunks.clone(), None), file(chunks, Some([5; 32]))] {
            for stat in [None, Some(&fp)] {
                let row = encode_row(&e, stat);
                assert_eq!(decode_row(&e.path, &row).unwrap(), e);
                assert_eq!(row_fingerprint(&row).as_ref(), stat);
            }
        }
        // The derived hash is not stored: the row is 32 bytes shorter.
        let e = file(vec![ChunkRef { hash: [1; 32], len: 9 }], None);
        let odd = file(vec![ChunkRef { hash: [1; 32], len: 9 }], Some([2; 32]));
        assert_eq!(encode_row(&odd, None).len(), encode_row(&e, None).len() + 32);
        // The body part ignores the fingerprint.
        assert_eq!(row_body(&encode_row(&e, Some(&fp))), row_body(&encode_row(&e, None)));
    }

    #[test]
    fn corrupt_rows_are_errors_not_panics() {
        let e = file(vec![ChunkRef { hash: [1; 32], len: 9 }], None);
        let row = encode_row(&e, None);
        for cut in 0..row.len() {
            assert!(decode_row(b"p", &row[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode_row(b"p", &[0x80]).is_err());
        assert_eq!(row_fingerprint(&[1, 0xff]), None);
    }

    #[test]
    fn log_records_round_trip_and_compress_shared_prefixes() {
        let paths: Vec<Vec<u8>> = (0..1000)
            .map(|i| format!("department-03/project-004/2019/report-{i:06}.docx").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = paths.iter().map(|p| &p[..]).collect();
        let rec = encode_log(&refs);
        assert!(rec.len() < paths.len() * 8, "{} bytes for 1000 paths", rec.len());
        assert_eq!(decode_log(&rec).unwrap(), paths);
        assert_eq!(count_log(&rec).unwrap(), 1000);
        assert_eq!(decode_log(&encode_log(&[])).unwrap(), Vec::<Vec<u8>>::new());
        assert!(decode_log(&rec[..rec.len() - 1]).is_err());
    }

    #[test]
    fn locator_values_round_trip() {
        for off in [0, 1, 1 << 40] {
            assert_eq!(decode_locator_value(&locator_value(off)).unwrap(), off);
        }
        assert_eq!(locator_value(0).len(), 0);
        assert!(decode_locator_value(&[0x80]).is_err());
        assert_eq!(
            &locator_key(&[3; 32], b"a/b")[..],
            b"\x03\x03\x03\x03\x03\x03\x03\x03a/b"
        );
        assert_eq!(next_prefix(&[1, 0xff]), Some(vec![2]));
        assert_eq!(next_prefix(&[0xff, 0xff]), None);
    }
}
