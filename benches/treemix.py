"""The file-size mix of the benchmark trees (benches/mktree.sh and
benches/mkcorpus.sh): a Samba share plus a print spool. Imported by both
generators' embedded Python, so the two trees differ in content only."""

# (count for 50,000 files, smallest, largest size in bytes)
CLASSES = [
    (44_000, 1 << 10, 64 << 10),
    (5_800, 64 << 10, 1 << 20),
    (190, 1 << 20, 16 << 20),
    (10, 100 << 20, 300 << 20),
]


def sizes(rng, scale=1.0):
    """File sizes, log-uniform within each class (many near the bottom,
    some near the top); counts scaled by `scale`, at least one per class.
    Draws from `rng` in a fixed order: the same seed, the same sizes."""
    out = []
    for count, lo, hi in CLASSES:
        for _ in range(max(1, round(count * scale))):
            out.append(int(lo * (hi / lo) ** rng.random()))
    return out
