#!/usr/bin/env bash
# Index size per file (issue 17): two nodes on loopback mirror a generated
# tree of small files; after the first sync, after no-change passes and
# after passes that change ~1% of the files, prints the size of both
# nodes' index files divided by the file count, and the wall time of the
# no-change passes (median and range: each is one stat per file and a
# hello that finds nothing to send).
#
#   cargo build --release
#   benches/index-size.sh [FILES] [PASSES]     # default 50000, 9
#   HAMIRROR_BIN=/path/to/hamirror benches/index-size.sh
#
# The tree (FILES files of 200 B .. 4 KiB in ~2,000 directories up to 4
# levels deep, names like a Samba share's: ~40-byte paths) is made in a
# temporary directory under /tmp and removed at the end.
set -euo pipefail

files=${1:-50000}
passes=${2:-9}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${HAMIRROR_BIN:-$here/target/release/hamirror}
[ -x "$bin" ] || { echo "index-size.sh: build first: cargo build --release" >&2; exit 2; }

work=$(mktemp -d /tmp/hamirror-index.XXXXXX)
pid=
cleanup() {
  [ -n "$pid" ] && { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
  if [ -n "${KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
. "$here/benches/pair.sh"

mkdir -p "$work/src/tree" "$work/replica" "$work/cluster.d/serv1" "$work/cluster.d/serv2"
python3 - "$work/src/tree" "$files" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(17)
depts = [f"department-{i:02d}" for i in range(20)]
dirs = []
for d in depts:
    for p in range(10):
        for y in range(10):
            dirs.append(os.path.join(d, f"project-{p:03d}", f"{2015 + y}"))
for d in dirs:
    os.makedirs(os.path.join(root, d), exist_ok=True)
ext = [".docx", ".xlsx", ".pdf", ".txt", ".msg"]
for i in range(n):
    d = dirs[i % len(dirs)]
    with open(os.path.join(root, d, f"report-{i:06d}{ext[i % 5]}"), "wb") as f:
        f.write(rng.randbytes(rng.randint(200, 4096)))
PY
pair_config "$work" "$bin"
HAMIRROR_LOG=${HAMIRROR_LOG:-info} "$bin" --config "$work/cluster.d" --node serv2 serve 2> "$work/serve.log" &
pid=$!
sleep 1
H() { "$bin" --config "$work/cluster.d" --node serv1 sync Fbench > /dev/null 2>> "$work/sync.log"; }
count=$(find "$work/src/tree" | wc -l)
# Disk space (allocated blocks) and, in parentheses, the file's length:
# redb doubles the length when it needs room and leaves the unwritten tail
# as a hole.
size() { echo "$(($(stat -c '%b * %B' "$work/state$1/sets/Fbench.redb") / count)) ($(($(stat -c %s "$work/state$1/sets/Fbench.redb") / count)))"; }
row() { printf '| %s | %s | %s |\n' "$1" "$(size 1)" "$(size 2)"; }
echo "tree: $count entries, $(du -sb "$work/src/tree" | cut -f1) bytes; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| after | sender B/entry on disk (length) | receiver B/entry on disk (length) |"
echo "| --- | --- | --- |"
H; row "first sync"
times=()
for i in $(seq "$passes"); do
  t0=$(date +%s%N); H; times+=($((($(date +%s%N) - t0) / 1000000)))
done
row "$passes no-change passes"
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
echo "no-change pass: median $(echo "$sorted" | sed -n "$(((passes + 1) / 2))p") ms, range $(echo "$sorted" | head -1)-$(echo "$sorted" | tail -1) ms"
for i in $(seq "$passes"); do
  python3 - "$work/src/tree" "$i" <<'PY'
import os, random, sys
root, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
for p in rng.sample(files, len(files) // 100):
    r = rng.random()
    if r < 0.6:
        with open(p, "wb") as f:
            f.write(rng.randbytes(rng.randint(200, 4096)))
    elif r < 0.8:
        os.remove(p)
    else:
        with open(p + ".new", "wb") as f:
            f.write(rng.randbytes(rng.randint(200, 4096)))
PY
  H
done
count=$(find "$work/src/tree" | wc -l)
row "$passes passes changing 1%"
out=$(rsync -anc --delete -H --itemize-changes "$work/src/tree/" "$work/replica/tree/")
[ -z "$out" ] || { echo "MISMATCH:"; echo "$out" | head; exit 1; }
