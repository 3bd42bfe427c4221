#!/usr/bin/env bash
# Builds the scan benchmark tree: 50,000 files, about 6 GB, with a realistic
# size mix, deterministic (same seed, same bytes) and incompressible.
#
#   benches/mktree.sh [DIR] [SEED]      default DIR=/tmp/hamirror-bench/tree, SEED=1
#
# Mix (like a Samba share plus a print spool):
#   44,000 small files      1 KiB ..  64 KiB   (~0.7 GB)
#    5,800 medium files    64 KiB ..   1 MiB   (~2.3 GB)
#      190 large files      1 MiB ..  16 MiB   (~1.6 GB)
#       10 huge files     100 MiB .. 300 MiB   (~2 GB)
# spread over a few hundred directories two levels deep. Content is cut
# from a 256 MiB random pool at random offsets, so files differ and do not
# compress. Needs python3 (3.9+). Prints the file count and total bytes.
set -euo pipefail

dir=${1:-/tmp/hamirror-bench/tree}
seed=${2:-1}

if [ -e "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
    echo "mktree: $dir exists and is not empty; remove it first" >&2
    exit 2
fi
mkdir -p "$dir"

PYTHONPATH="$(dirname "$0")" python3 - "$dir" "$seed" <<'EOF'
import os, random, sys

import treemix

root, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
POOL = 256 << 20
pool = b"".join(rng.randbytes(1 << 20) for _ in range(POOL >> 20))
pool2 = pool + pool[: 32 << 20]  # lets any slice up to 32 MiB wrap around

sizes = treemix.sizes(rng)
rng.shuffle(sizes)

total = 0
for i, size in enumerate(sizes):
    d = os.path.join(root, f"d{i % 37:02d}", f"s{(i // 37) % 11:02d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:05d}.dat"), "wb") as f:
        left = size
        while left:
            n = min(left, 32 << 20)
            off = rng.randrange(POOL)
            f.write(pool2[off : off + n])
            left -= n
    total += size
print(f"mktree: {len(sizes)} files, {total} bytes ({total / 1e9:.2f} GB) in {root}")
EOF
