#!/usr/bin/env bash
# Scan benchmark against the release binary, with `cat` of the same tree to
# /dev/null in the same run as the yardstick (warm page cache for both).
#
#   cargo build --release
#   benches/mktree.sh /tmp/hamirror-bench/tree      # once: 50,000 files, ~6 GB
#   benches/scan.sh [TREE] [BIG_FILE_GIB]           # default tree above, 4
#
# Measures:
#   1. cat of the whole tree to /dev/null (after a warming pass): GB/s;
#   2. the first scan (empty index) of the tree: GB/s, ratio to cat, peak RSS;
#   3. a no-change scan of the tree: wall time of the whole process, 5 runs;
#   4. peak RSS of the first scan of a single BIG_FILE_GIB GiB file.
# Work files go to /tmp/hamirror-bench/run.*; the big file is deleted after.
set -euo pipefail

tree=$(realpath "${1:-/tmp/hamirror-bench/tree}")
big_gib=${2:-4}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${HAMIRROR_BIN:-$here/target/release/hamirror}
[ -x "$bin" ] || { echo "scan.sh: build first: cargo build --release" >&2; exit 2; }
[ -d "$tree" ] || { echo "scan.sh: no tree at $tree; run benches/mktree.sh" >&2; exit 2; }

mkdir -p /tmp/hamirror-bench
work=$(mktemp -d /tmp/hamirror-bench/run.XXXXXX)
trap 'rm -rf "$work"' EXIT

# A cluster.d where serv1's root is the tree's parent and the set Fbench is
# the tree itself; Fbig is one big file.
cp -r "$here/docs/examples/cluster.d" "$work/cluster.d"
printf 'root = %s\nstate = %s\n' "$(dirname "$tree")" "$work/state" >> "$work/cluster.d/serv1.conf"
echo "/$(basename "$tree")/" > "$work/cluster.d/serv1/Fbench"
mkdir -p "$work/big"
echo "/$(basename "$work")/big/" > "$work/cluster.d/serv1/Fbig"
export HAMIRROR_CONFIG=$work/cluster.d HAMIRROR_NODE=serv1

now() { echo "$EPOCHREALTIME"; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }
json() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
rss_mb() { awk '/Maximum resident set size/ { printf "%.1f", $6 / 1024 }' "$1"; }
cpu_s() { awk '/User time|System time/ { s += $NF } END { printf "%.2f", s }' "$1"; }

echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(free -g | awk '/Mem:/ {print $2}') GiB RAM"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)  (other processes share these cores)"
bytes=$(find "$tree" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f", s }')
files=$(find "$tree" -type f | wc -l)
echo "tree: $tree, $files files, $bytes bytes"

cat_tree() { find "$tree" -type f -print0 | xargs -0 cat > /dev/null; }
cat_tree # warm the page cache
t0=$(now); cat_tree; t1=$(now)
cat_s=$(elapsed "$t0" "$t1")

/usr/bin/time -v "$bin" scan Fbench --json > "$work/first.json" 2> "$work/first.time"
first_s=$(json "$work/first.json" elapsed_s)
first_rss=$(rss_mb "$work/first.time")
first_cpu=$(cpu_s "$work/first.time")
read_bytes=$(json "$work/first.json" bytes_read)

t0=$(now); cat_tree; t1=$(now)
cat2_s=$(elapsed "$t0" "$t1")

python3 - "$bytes" "$cat_s" "$cat2_s" "$read_bytes" "$first_s" "$first_rss" "$first_cpu" <<'EOF'
import sys
b, c1, c2, rb, s, rss, cpu = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6], float(sys.argv[7])
cat = min(c1, c2)
print(f"cat to /dev/null (warm): {cat:.2f} s = {b / cat / 1e9:.2f} GB/s  (runs: {c1:.2f} s, {c2:.2f} s)")
print(f"first scan: {s:.2f} s for {rb} bytes = {rb / s / 1e9:.2f} GB/s; scan/cat time ratio {s / cat:.2f}; peak RSS {rss} MB")
print(f"  CPU {cpu:.2f} s (user+sys) = {rb / cpu / 1e9:.2f} GB per CPU-second; on 2 idle cores that is {2 * rb / cpu / 1e9:.2f} GB/s")
EOF

runs=()
for _ in 1 2 3 4 5; do
    t0=$(now)
    "$bin" scan Fbench --json > "$work/nochange.json"
    t1=$(now)
    runs+=("$(elapsed "$t0" "$t1")")
    [ "$(json "$work/nochange.json" files_read)" = 0 ] || { echo "scan.sh: no-change scan read files" >&2; exit 1; }
done
echo "no-change scan of $files files (whole process, wall): ${runs[*]} s; in-process elapsed of the last: $(json "$work/nochange.json" elapsed_s) s"

head -c "$((big_gib << 30))" < <(openssl enc -aes-128-ctr -nosalt -pass pass:hamirror -in /dev/zero 2>/dev/null) > "$work/big/file"
/usr/bin/time -v "$bin" scan Fbig --json > "$work/big.json" 2> "$work/big.time"
big_s=$(json "$work/big.json" elapsed_s)
echo "single ${big_gib} GiB file: first scan $big_s s ($(python3 -c "print(f'{$((big_gib << 30)) / $big_s / 1e9:.2f}')") GB/s, one file = one core), peak RSS $(rss_mb "$work/big.time") MB"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
