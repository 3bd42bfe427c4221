#!/usr/bin/env bash
# Builds the initial-copy benchmark corpus of issue 17: like
# benches/mktree.sh in file count and size mix, but every file's content is
# its own (no slice of one file recurs in another, so content-defined
# dedup finds nothing to save) and about two thirds of the bytes compress.
# Deterministic: the same FILES and SEED give the same bytes.
#
#   benches/mkcorpus.sh [DIR] [FILES] [SEED]
#       default DIR=/tmp/hamirror-bench/corpus, FILES=50000, SEED=1
#   benches/mkcorpus.sh /tmp/hamirror-bench/c10k 10000    # ~1.3 GB, to iterate
#
# Mix for FILES=50000 (counts scale with FILES, sizes do not):
#   44,000 small files      1 KiB ..  64 KiB
#    5,800 medium files    64 KiB ..   1 MiB
#      190 large files      1 MiB ..  16 MiB
#       10 huge files     100 MiB .. 300 MiB        (~6 GB in all)
# in FILES/25 directories (2,000 for 50,000 files) up to 6 levels deep;
# the top level is d00, d01, … (benches/vs-rsync.sh adds files to d00).
# Content, in runs of 128 KiB (a smaller file is one run): with
# probability 0.68 text-like (lines drawn from a pool of 50,000 lines of
# words; zstd -1 shrinks it about 3×), else random bytes from the file's
# own generator. A line is ~60 bytes and a chunk ~64 KiB, so no chunk of
# one file recurs in another. Needs python3 (3.9+). Prints the counts.
set -euo pipefail

dir=${1:-/tmp/hamirror-bench/corpus}
files=${2:-50000}
seed=${3:-1}

if [ -e "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
    echo "mkcorpus: $dir exists and is not empty; remove it first" >&2
    exit 2
fi
mkdir -p "$dir"

PYTHONPATH="$(dirname "$0")" python3 - "$dir" "$files" "$seed" <<'EOF'
import os, random, sys

import treemix

root, nfiles, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
scale = nfiles / 50_000

# Words and lines: a fixed pool; text is lines drawn at random from it.
letters = b"etaoinshrdlcumwfgypbvkjxqz"
weights = [12, 9, 8, 8, 7, 7, 6, 6, 6, 4, 4, 3, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1]
words = [bytes(rng.choices(letters, weights, k=rng.randint(2, 10))) for _ in range(4000)]
lines = []
for _ in range(50_000):
    ws = rng.choices(words, k=rng.randint(3, 16))
    lines.append(b" ".join(ws) + (b",\n" if rng.random() < 0.2 else b".\n"))

RUN = 128 << 10
TEXT_SHARE = 0.68

def text(r, n):
    out, have = [], 0
    while have < n:
        picked = r.choices(lines, k=max(8, (n - have) // 50))
        out.extend(picked)
        have += sum(map(len, picked))
    return b"".join(out)[:n]

# Directories: d00.. at the top, then each under a random earlier one
# that is less than 6 deep.
ndirs = max(1, round(2000 * scale))
top = max(1, min(37, ndirs))
dirs = [(f"d{i:02d}", 1) for i in range(top)]
for i in range(top, ndirs):
    parent, depth = rng.choice([d for d in dirs if d[1] < 6])
    dirs.append((f"{parent}/s{i:04d}", depth + 1))
for d, _ in dirs:
    os.makedirs(os.path.join(root, d), exist_ok=True)

sizes = treemix.sizes(rng, scale)
sizes = sizes[:nfiles] if len(sizes) > nfiles else sizes
rng.shuffle(sizes)

total = text_bytes = 0
for i, size in enumerate(sizes):
    d = dirs[rng.randrange(len(dirs))][0]
    # Each file has its own generator: its bytes do not depend on the others.
    r = random.Random(f"{seed}/{i}")
    path = os.path.join(root, d, f"f{i:05d}.dat")
    with open(path, "wb") as f:
        head = f"{d}/f{i:05d} {size}\n".encode()
        f.write(head[:size])
        left = size - min(size, len(head))
        while left:
            n = min(left, RUN)
            if r.random() < TEXT_SHARE:
                f.write(text(r, n))
                text_bytes += n
            else:
                f.write(r.randbytes(n))
            left -= n
    total += size
depth = max(d[1] for d in dirs)
print(f"mkcorpus: {len(sizes)} files, {total} bytes ({total / 1e9:.2f} GB, "
      f"{100 * text_bytes / max(1, total):.0f}% text-like) in {len(dirs)} directories "
      f"up to depth {depth} under {root}")
EOF
