//! The primitive encoding every message is built from: LEB128 varints,
//! zigzag for signed values, length-prefixed byte strings, fixed 32-byte
//! hashes. [`Reader`] checks every length against what remains and against
//! a caller's bound before allocating, so a hostile length costs nothing.

use thiserror::Error;

/// Why a byte string could not be decoded. Decoding never panics.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("truncated: needed {needed} more bytes for {what}")]
    Truncated { what: &'static str, needed: usize },
    #[error("{what}: value {value} exceeds the limit of {limit}")]
    TooLarge { what: &'static str, value: u64, limit: u64 },
    #[error("{what}: invalid value {value}")]
    Invalid { what: &'static str, value: u64 },
    #[error("varint longer than 10 bytes or overflowing 64 bits")]
    BadVarint,
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    #[error("unknown message type 0x{0:02x}")]
    UnknownType(u8),
    #[error("message out of sequence: {0}")]
    OutOfSequence(&'static str),
}

/// Appends encoded values to a byte vector.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Writer::default()
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    /// Unsigned LEB128.
    pub fn varint(&mut self, mut v: u64) -> &mut Self {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
        self
    }
    /// Zigzag-encoded signed varint.
    pub fn ivarint(&mut self, v: i64) -> &mut Self {
        self.varint(((v << 1) ^ (v >> 63)) as u64)
    }
    /// Length-prefixed bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.varint(b.len() as u64);
        self.buf.extend_from_slice(b);
        self
    }
    /// Length-prefixed UTF-8 string.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }
    /// One byte, 0 or 1.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }
    /// 16 bytes, big endian (index ids are random, so a varint would not help).
    pub fn u128(&mut self, v: u128) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }
    /// Fixed-size bytes, no prefix.
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
}

/// Reads encoded values from a byte slice, bounds-checked.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }
    /// Errors unless every byte has been consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(self.buf.len()))
        }
    }
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.raw(1, what)?[0])
    }
    pub fn varint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8(what)?;
            let part = u64::from(b & 0x7f);
            if i == 9 && part > 1 {
                return Err(DecodeError::BadVarint);
            }
            v |= part << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::BadVarint)
    }
    /// A varint that must not exceed `limit`.
    pub fn bounded(&mut self, what: &'static str, limit: u64) -> Result<u64, DecodeError> {
        let v = self.varint(what)?;
        if v > limit {
            return Err(DecodeError::TooLarge { what, value: v, limit });
        }
        Ok(v)
    }
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(self.bounded(what, u64::from(u32::MAX))? as u32)
    }
    /// One byte that must be 0 or 1.
    pub fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(DecodeError::Invalid { what, value: v.into() }),
        }
    }
    /// 16 bytes, big endian.
    pub fn u128(&mut self, what: &'static str) -> Result<u128, DecodeError> {
        let mut b = [0u8; 16];
        b.copy_from_slice(self.raw(16, what)?);
        Ok(u128::from_be_bytes(b))
    }
    pub fn ivarint(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        let v = self.varint(what)?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }
    /// Exactly `n` bytes.
    pub fn raw(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated {
                what,
                needed: n - self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    /// Length-prefixed bytes of at most `limit` bytes.
    pub fn bytes(&mut self, what: &'static str, limit: usize) -> Result<&'a [u8], DecodeError> {
        let n = self.bounded(what, limit as u64)? as usize;
        self.raw(n, what)
    }
    /// Length-prefixed UTF-8 of at most `limit` bytes.
    pub fn str(&mut self, what: &'static str, limit: usize) -> Result<&'a str, DecodeError> {
        let b = self.bytes(what, limit)?;
        std::str::from_utf8(b).map_err(|e| DecodeError::Invalid {
            what,
            value: e.valid_up_to() as u64,
        })
    }
    pub fn hash(&mut self, what: &'static str) -> Result<[u8; 32], DecodeError> {
        let mut h = [0u8; 32];
        h.copy_from_slice(self.raw(32, what)?);
        Ok(h)
    }
    /// A count of items each at least `min_item_len` bytes long: bounded by
    /// `limit` and by what the remaining input could possibly hold, so the
    /// caller may allocate `count` items safely.
    pub fn count(&mut self, what: &'static str, limit: u64, min_item_len: usize) -> Result<usize, DecodeError> {
        let n = self.bounded(what, limit)?;
        let possible = (self.buf.len() / min_item_len.max(1)) as u64;
        if n > possible {
            return Err(DecodeError::Truncated {
                what,
                needed: ((n - possible) as usize).saturating_mul(min_item_len),
            });
        }
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn varint_frozen_bytes() {
        let mut w = Writer::new();
        w.varint(0).varint(127).varint(128).varint(300).ivarint(-1).ivarint(1);
        assert_eq!(w.buf, [0x00, 0x7f, 0x80, 0x01, 0xac, 0x02, 0x01, 0x02]);
    }

    #[test]
    fn bool_and_u128_frozen_bytes() {
        let mut w = Writer::new();
        w.bool(true).bool(false).u128(0x0102);
        let mut want = vec![1, 0];
        want.extend_from_slice(&[0; 14]);
        want.extend_from_slice(&[1, 2]);
        assert_eq!(w.buf, want);
        let mut r = Reader::new(&w.buf);
        assert_eq!(
            (r.bool("a"), r.bool("b"), r.u128("c")),
            (Ok(true), Ok(false), Ok(0x0102))
        );
        assert!(matches!(
            Reader::new(&[2]).bool("flag"),
            Err(DecodeError::Invalid { value: 2, .. })
        ));
    }

    #[test]
    fn overlong_and_overflowing_varints_are_rejected() {
        assert_eq!(Reader::new(&[0xff; 11]).varint("v"), Err(DecodeError::BadVarint));
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert_eq!(Reader::new(&over).varint("v"), Err(DecodeError::BadVarint));
    }

    #[test]
    fn hostile_count_is_refused_before_allocation() {
        let mut w = Writer::new();
        w.varint(1 << 40);
        let err = Reader::new(&w.buf).count("chunks", u64::MAX, 36).unwrap_err();
        assert!(matches!(err, DecodeError::Truncated { .. }));
    }

    proptest! {
        #[test]
        fn varints_round_trip(v in any::<u64>(), i in any::<i64>()) {
            let mut w = Writer::new();
            w.varint(v).ivarint(i);
            let mut r = Reader::new(&w.buf);
            prop_assert_eq!(r.varint("v").unwrap(), v);
            prop_assert_eq!(r.ivarint("i").unwrap(), i);
            prop_assert!(r.finish().is_ok());
        }

        #[test]
        fn reader_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&data);
            let _ = r.varint("a");
            let _ = r.bytes("b", 16);
            let _ = r.hash("c");
            let _ = r.count("d", 1000, 4);
        }
    }
}
