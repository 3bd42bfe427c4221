//! Deterministic incompressible bytes (xorshift64), the same for a seed on
//! every run: the demo's files, and the data of tests and benchmarks, where
//! content must neither compress nor repeat (so every chunk is new) yet be
//! reproducible. Not random in any cryptographic sense; depends on nothing.

/// `len` bytes from `seed` (any value, zero included).
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_same_seed_gives_the_same_bytes_and_they_do_not_compress() {
        let a = super::noise(7, 1 << 16);
        assert_eq!(a, super::noise(7, 1 << 16));
        assert_ne!(a, super::noise(8, 1 << 16));
        assert_eq!(super::noise(7, 10), a[..10]);
        assert!(zstd::bulk::compress(&a, 3).unwrap().len() > a.len() - a.len() / 100);
    }
}
