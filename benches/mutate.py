#!/usr/bin/env python3
"""Changes ~1% of the files under ROOT, the same way for every tool that
mirrors it (benches/vs-rsync.sh, benches/changed.sh): deletions, 100-byte
insertions in the middle of files over 1 MiB, 4 KiB overwrites in place,
1,000-byte appends; plus 0.1% new files in ROOT/d00 named PREFIX####.dat.

    benches/mutate.py ROOT SEED PREFIX
"""
import os
import random
import sys

root, seed, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rng = random.Random(seed)
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
picked = rng.sample(files, len(files) // 100)
for i, p in enumerate(picked):
    size = os.path.getsize(p)
    if i % 10 == 0:
        os.remove(p)                                   # delete
    elif size > (1 << 20) and i % 3 == 0:              # insert in the middle
        with open(p, "r+b") as f:
            f.seek(size // 2); rest = f.read(); f.seek(size // 2)
            f.write(rng.randbytes(100) + rest)
    elif i % 2 == 0:                                   # overwrite a block in place
        with open(p, "r+b") as f:
            f.seek(rng.randrange(max(1, size - 4096))); f.write(rng.randbytes(4096))
    else:                                              # append
        with open(p, "ab") as f:
            f.write(rng.randbytes(1000))
for i in range(len(picked) // 10):                     # new files
    with open(os.path.join(root, "d00", f"{prefix}{i:04d}.dat"), "wb") as f:
        f.write(rng.randbytes(rng.randrange(1000, 200000)))
print(f"changed {len(picked)} files, added {len(picked) // 10}")
