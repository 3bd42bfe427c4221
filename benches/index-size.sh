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
#   HAMIRROR_BEFORE=/path/to/older/hamirror benches/index-size.sh
#   INDEX_TREE=tiny INDEX_SNAPSHOTS=/tmp/snaps benches/index-size.sh 200000 3
#
# With HAMIRROR_BEFORE, a second pair running that build mirrors the same
# source tree (into its own replica, with its own indexes) in the same
# run: every sync is done by both, alternating, and each row shows both.
#
# The tree (FILES files of 200 B .. 4 KiB in ~2,000 directories up to 4
# levels deep, names like a Samba share's: ~40-byte paths) is made in a
# temporary directory under /tmp and removed at the end.
# INDEX_TREE=tiny makes benches/nochange.sh's shape instead: files of
# 0–4,095 bytes, 50 to a directory, three levels (a00/b00/c00/f0001234).
set -euo pipefail

files=${1:-50000}
passes=${2:-9}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${HAMIRROR_BIN:-$here/target/release/hamirror}
[ -x "$bin" ] || { echo "index-size.sh: build first: cargo build --release" >&2; exit 2; }

work=$(mktemp -d /tmp/hamirror-index.XXXXXX)
pid=
pidb=
cleanup() {
  for p in $pid $pidb; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  if [ -n "${KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
. "$here/benches/pair.sh"

mkdir -p "$work/src/tree" "$work/replica" "$work/cluster.d/serv1" "$work/cluster.d/serv2"
python3 - "$work/src/tree" "$files" "${INDEX_TREE:-share}" <<'PY'
import os, random, sys
root, n, shape = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rng = random.Random(17)
if shape == "tiny":
    # As benches/nochange.sh generates its tree.
    pool = rng.randbytes(1 << 20)
    for i in range(n):
        d = os.path.join(root, f"a{i // 50000:02d}", f"b{i // 2500 % 20:02d}", f"c{i // 50 % 50:02d}")
        if i % 50 == 0:
            os.makedirs(d, exist_ok=True)
        size = rng.randrange(4096)
        off = rng.randrange(len(pool) - size)
        with open(os.path.join(d, f"f{i:07d}"), "wb") as f:
            f.write(pool[off:off + size])
    sys.exit(0)
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
before=${HAMIRROR_BEFORE:-}
if [ -n "$before" ]; then
  # The same source root; its own replica and state.
  mkdir -p "$work/b/replica"
  pair_config "$work/b" "$before"
  sed -i "s|^root = .*/src\$|root = $work/src|" "$work/b/cluster.d/serv1.conf"
  HAMIRROR_LOG=${HAMIRROR_LOG:-info} "$before" --config "$work/b/cluster.d" --node serv2 serve 2> "$work/b/serve.log" &
  pidb=$!
fi
sleep 1
# One sync by a build ($1) of a pair ($2); prints its wall time in ms.
sync1() {
  local t0
  t0=$(date +%s%N)
  "$1" --config "$2/cluster.d" --node serv1 sync Fbench > /dev/null 2>> "$2/sync.log"
  echo $((($(date +%s%N) - t0) / 1000000))
}
# A pass: this build, then (if given) the older one. Records the times.
times=() timesb=()
H() {
  times+=("$(sync1 "$bin" "$work")")
  [ -z "$before" ] || timesb+=("$(sync1 "$before" "$work/b")")
}
count=$(find "$work/src/tree" | wc -l)
# Disk space (allocated blocks) and, in parentheses, the file's length:
# redb doubles the length when it needs room and leaves the unwritten tail
# as a hole.
size() { echo "$(($(stat -c '%b * %B' "$1/sets/Fbench.redb") / count)) ($(($(stat -c %s "$1/sets/Fbench.redb") / count)))"; }
row() {
  # INDEX_SNAPSHOTS=DIR keeps a copy of both index files at each row, for
  # a look at their tables (src/index/size_tests.rs, `inspect`).
  if [ -n "${INDEX_SNAPSHOTS:-}" ]; then
    mkdir -p "$INDEX_SNAPSHOTS"
    for n in 1 2; do cp --sparse=always "$work/state$n/sets/Fbench.redb" "$INDEX_SNAPSHOTS/${1// /-}.serv$n.redb"; done
  fi
  if [ -n "$before" ]; then
    printf '| %s | %s | %s | %s | %s |\n' "$1" "$(size "$work/b/state1")" "$(size "$work/b/state2")" "$(size "$work/state1")" "$(size "$work/state2")"
  else
    printf '| %s | %s | %s |\n' "$1" "$(size "$work/state1")" "$(size "$work/state2")"
  fi
}
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "median %d ms, range %d-%d ms", a[int((NR+1)/2)], a[1], a[NR]}'; }
echo "tree: $count entries, $(du -sb "$work/src/tree" | cut -f1) bytes; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "$before" ]; then
  echo "| after | before: sender | before: receiver | this build: sender | this build: receiver |"
  echo "| --- | --- | --- | --- | --- |"
else
  echo "| after | sender B/entry on disk (length) | receiver B/entry on disk (length) |"
  echo "| --- | --- | --- |"
fi
H; row "first sync"
times=() timesb=()
for i in $(seq "$passes"); do H; done
row "$passes no-change passes"
nochange="no-change pass: this build $(median "${times[@]}")"
[ -z "$before" ] || nochange+="; before $(median "${timesb[@]}")"
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
echo "$nochange"
for r in "$work/replica" ${before:+"$work/b/replica"}; do
  out=$(rsync -anc --delete -H --itemize-changes "$work/src/tree/" "$r/tree/")
  [ -z "$out" ] || { echo "MISMATCH in $r:"; echo "$out" | head; exit 1; }
done
