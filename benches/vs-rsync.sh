#!/usr/bin/env bash
# Side-by-side benchmark of `hamirror sync` against rsync (daemon on
# loopback), on the same source tree, in the same run:
#
#   cargo build --release
#   benches/vs-rsync.sh [TREE] [BIG_FILE_GIB]    # default /tmp/hamirror-bench/tree, 4
#   VS_RSYNC_ONLY=initial benches/vs-rsync.sh     # step 1 only
#   VS_RSYNC_REPS=3 ...                           # step 1 three times, median
#   VS_RSYNC_CORPUS=unique benches/vs-rsync.sh /tmp/hamirror-bench/corpus
#
# A missing TREE is made by benches/mktree.sh (50,000 files, ~6 GB, content
# cut from one random pool: files share slices, which hamirror's dedup
# finds), or with VS_RSYNC_CORPUS=unique by benches/mkcorpus.sh (the same
# mix, every file's content its own, ~2/3 compressible: issue 17's corpus;
# VS_RSYNC_FILES=10000 for a smaller one).
# Step 1 with VS_RSYNC_REPS=N runs each tool N times into an empty replica
# (hamirror with both indexes removed, so its sender hashes everything
# again), rotating the order, and reports the medians; the peak RSS of
# hamirror's sender and receiver is measured in each rep.
# Page cache warm for both (the source is read once before). Measures:
#   1. initial copy into an empty replica: time, MB/s, bytes on the wire;
#      rsync twice: as it is, and with --fsync (rsync >= 3.2.4), which makes
#      what it wrote durable as hamirror's receiver does (it syncfs()es);
#   2. no-change pass: median of 5 runs each;
#   3. after changing ~1% of the files (edits, appends, insertions in the
#      middle of large files, new and deleted files): time and wire bytes;
#   4. peak RSS of sender and receiver for one BIG_FILE_GIB GiB file.
# After every pass of 1 and after 3 each replica is checked against the
# source with `rsync -anc -HAX --numeric-ids --delete -i` (must print nothing).
# Results are printed as a Markdown table; paste into docs/BENCHMARKS.md.
set -euo pipefail

tree=$(realpath -m "${1:-/tmp/hamirror-bench/tree}")
big_gib=${2:-4}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${HAMIRROR_BIN:-$here/target/release/hamirror}
[ -x "$bin" ] || { echo "vs-rsync.sh: build first: cargo build --release" >&2; exit 2; }
command -v rsync >/dev/null || { echo "vs-rsync.sh: needs rsync" >&2; exit 2; }
if [ ! -d "$tree" ]; then
  if [ "${VS_RSYNC_CORPUS:-}" = unique ]; then
    "$here/benches/mkcorpus.sh" "$tree" "${VS_RSYNC_FILES:-50000}"
  else
    "$here/benches/mktree.sh" "$tree"
  fi
fi
reps=${VS_RSYNC_REPS:-1}

mkdir -p /tmp/hamirror-bench
work=$(mktemp -d /tmp/hamirror-bench/vs.XXXXXX)
# The big-file set lives beside the tree (under serv1's root).
bigdir=$(dirname "$tree")/big.$(basename "$work")
pids=()
cleanup() {
  for p in "${pids[@]}"; do pkill -P "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work" "$bigdir"
}
trap cleanup EXIT

now() { echo "$EPOCHREALTIME"; }
secs() { python3 -c "print(f'{$2 - $1:.3f}')"; }
rss_mb() { awk '/Maximum resident set size/ { printf "%.1f", $6 / 1024 }' "$1"; }
jq1() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {'d': d}))" "$1" "$2"; }
port() { python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }
median() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.3f}')" "$@"; }

# --- hamirror: two nodes on loopback; serv1's root is the tree's parent ----
cfg=$work/cluster.d
mkdir -p "$cfg/serv1" "$cfg/serv2" "$work/replica-h" "$work/replica-r" "$work/replica-rf" "$bigdir"
for n in 1 2; do
  root=$([ $n = 1 ] && dirname "$tree" || echo "$work/replica-h")
  printf 'address = 127.0.0.1\nport = %s\nheartbeat_port = %s\nroot = %s\nstate = %s\n' \
    "$(port)" "$(port)" "$root" "$work/state$n" > "$cfg/serv$n.conf"
done
echo "/$(basename "$tree")/" > "$cfg/serv1/Fbench"
echo "/$(basename "$bigdir")/" > "$cfg/serv1/Fbig"
echo 127.0.0.1 > "$cfg/reachlist"
for n in serv1 serv2; do
  fp=$("$bin" --config "$cfg" --node $n init 2>/dev/null | grep -o 'sha256:[0-9a-f]*' | head -1)
  echo "fingerprint = $fp" >> "$cfg/$n.conf"
done
H() { "$bin" --config "$cfg" --node serv1 "$@"; }
serve_start() {
  /usr/bin/time -v "$bin" --config "$cfg" --node serv2 serve 2> "$work/serve.$1.log" &
  pids+=($!); sleep 1
}
# SIGTERM to serve itself (the child of time), so time reports its peak RSS.
serve_stop() { pkill -TERM -P "${pids[-1]}" || true; wait "${pids[-1]}" 2>/dev/null || true; }

# --- rsync daemon on loopback ---------------------------------------------
rport=$(port)
cat > "$work/rsyncd.conf" <<CONF
use chroot = no
uid = root
gid = root
[bench]
  path = $work/replica-r
  read only = false
[benchf]
  path = $work/replica-rf
  read only = false
CONF
rsync --daemon --no-detach --address=127.0.0.1 --port="$rport" --config="$work/rsyncd.conf" &
pids+=($!); sleep 1
R() { rsync -aH --delete --stats "$@" "$tree/" "rsync://127.0.0.1:$rport/bench/" > "$work/rsync.out"; }
RF() { rsync -aH --delete --stats --fsync "$tree/" "rsync://127.0.0.1:$rport/benchf/" > "$work/rsync.out"; }
rbytes() { awk '/Total bytes sent/ {s=$4} /Total bytes received/ {r=$4} END {gsub(",","",s); gsub(",","",r); printf "%.0f\n", s+r}' "$work/rsync.out"; }
oracle() {
  local out
  out=$(rsync -anc -HAX --numeric-ids --delete --itemize-changes "$tree/" "$1/")
  [ -z "$out" ] || { echo "MISMATCH against $1:"; echo "$out" | head; exit 1; }
}

files=$(find "$tree" -type f | wc -l); bytes=$(du -sb "$tree" | cut -f1)
find "$tree" -type f -print0 | xargs -0 cat > /dev/null   # warm the page cache for both
echo "tree: $files files, $bytes bytes; machine: $(nproc) cores, $(lscpu | sed -n 's/Model name: *//p')"

# hamirror makes what it applied durable (syncfs on the replica's file
# system), rsync does not (unless --fsync): flush what the earlier phases
# left dirty, so the pass timed next is not charged with writing back
# gigabytes of them. Every timed pass starts from the same state: source in
# the page cache, nothing dirty.
settle() { awk '/^(Dirty|Writeback):/ {s+=$2} END {printf "%.0f MB dirty before the pass\n", s/1024}' /proc/meminfo; sync; }

# 1. initial copy, each tool into an empty replica, REPS times in rotating
# order; every replica checked against the source after each pass.
serve_start main
h_run() {
  serve_stop
  rm -rf "$work/state1/sets" "$work/state1/journal" "$work/state2/sets" "$work/state2/journal" "$work/replica-h"
  mkdir -p "$work/replica-h"
  serve_start "init$1"
  settle
  t0=$(now)
  /usr/bin/time -v "$bin" --config "$cfg" --node serv1 sync Fbench --json > "$work/h1.json" 2> "$work/sync.init$1.log"
  t1=$(now); hi+=("$(secs "$t0" "$t1")")
  h_init_wire=$(jq1 "$work/h1.json" "d['udp_bytes_sent'] + d['udp_bytes_received']")
  oracle "$work/replica-h/$(basename "$tree")"
  h_send_rss+=("$(rss_mb "$work/sync.init$1.log")")
}
r_run() {
  rm -rf "$work/replica-r"; mkdir -p "$work/replica-r"; settle
  t0=$(now); R; t1=$(now); ri+=("$(secs "$t0" "$t1")"); r_init_wire=$(rbytes)
  oracle "$work/replica-r"
}
rf_run() {
  rm -rf "$work/replica-rf"; mkdir -p "$work/replica-rf"; settle
  t0=$(now); RF; t1=$(now); rfi+=("$(secs "$t0" "$t1")")
  oracle "$work/replica-rf"
}
hi=(); ri=(); rfi=(); h_send_rss=(); h_recv_rss=()
for rep in $(seq 1 "$reps"); do
  echo "initial copy, rep $rep of $reps (load: $(cut -d' ' -f1-3 /proc/loadavg))"
  case $(( (rep - 1) % 3 )) in
    0) h_run "$rep"; r_run; rf_run ;;
    1) r_run; rf_run; h_run "$rep" ;;
    2) rf_run; h_run "$rep"; r_run ;;
  esac
  echo "  hamirror ${hi[-1]} s, rsync ${ri[-1]} s, rsync --fsync ${rfi[-1]} s; sender RSS ${h_send_rss[-1]} MB"
done
# The receiver of the last rep stays up for the later steps; the earlier
# ones were stopped, so their peak RSS is known now.
for rep in $(seq 1 $((reps - 1))); do h_recv_rss+=("$(rss_mb "$work/serve.init$rep.log")"); done
h_init=$(median "${hi[@]}"); r_init=$(median "${ri[@]}"); rf_init=$(median "${rfi[@]}")
rm -rf "$work/replica-rf"   # not used again; frees the disk
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
mbps() { python3 -c "print(f'{$1 / $2 / 1e6:.0f}')"; }
if [ "${VS_RSYNC_ONLY:-}" = initial ]; then
  serve_stop
  h_recv_rss+=("$(rss_mb "$work/serve.init$reps.log")")
  cat <<TABLE

runs (s): hamirror ${hi[*]}; rsync ${ri[*]}; rsync --fsync ${rfi[*]}
peak RSS (MB): hamirror sender ${h_send_rss[*]}; receiver ${h_recv_rss[*]}

| initial copy | hamirror | rsync (daemon) | rsync --fsync (daemon) | hamirror / rsync | hamirror / rsync --fsync |
| --- | --- | --- | --- | --- | --- |
| time | ${h_init} s ($(mbps "$bytes" "$h_init") MB/s) | ${r_init} s ($(mbps "$bytes" "$r_init") MB/s) | ${rf_init} s ($(mbps "$bytes" "$rf_init") MB/s) | $(ratio "$h_init" "$r_init") | $(ratio "$h_init" "$rf_init") |
| bytes on the wire | $h_init_wire | $r_init_wire | | $(ratio "$h_init_wire" "$r_init_wire") | |
| peak RSS, median: sender / receiver | $(median "${h_send_rss[@]}") MB / $(median "${h_recv_rss[@]}") MB | | | | |
TABLE
  exit 0
fi

# 2. no-change pass, 5 runs each
settle
hs=(); rs=()
for i in 1 2 3 4 5; do
  t0=$(now); H sync Fbench --json > "$work/h2.json"; t1=$(now); hs+=("$(secs "$t0" "$t1")")
  t0=$(now); R; t1=$(now); rs+=("$(secs "$t0" "$t1")")
done
h_noop=$(median "${hs[@]}"); r_noop=$(median "${rs[@]}"); r_noop_wire=$(rbytes)
h_noop_wire=$(jq1 "$work/h2.json" "d['udp_bytes_sent'] + d['udp_bytes_received']")

# 3. change ~1% of the files, the same way for both
python3 "$here/benches/mutate.py" "$tree" 7 new
settle; sleep 0.2
t0=$(now); H sync Fbench --json > "$work/h3.json"; t1=$(now); h_delta=$(secs "$t0" "$t1")
h_delta_wire=$(jq1 "$work/h3.json" "d['udp_bytes_sent'] + d['udp_bytes_received']")
h_delta_detail=$(jq1 "$work/h3.json" "f\"{d['push']['chunks_sent']} chunks sent, {d['push'].get('deltas_sent', 0)} as deltas; {d['push']['chunk_bytes']} raw bytes in {d['push']['chunk_frame_bytes']} framed; UDP {d['udp_bytes_sent']} sent / {d['udp_bytes_received']} received\"")
t0=$(now); R; t1=$(now); r_delta=$(secs "$t0" "$t1"); r_delta_wire=$(rbytes)
oracle "$work/replica-h/$(basename "$tree")"; oracle "$work/replica-r"
serve_stop
recv_rss_tree=$(rss_mb "$work/serve.init$reps.log")

# 4. one big file: peak memory of sender and receiver
python3 -c "
import os, sys
with open(sys.argv[1], 'wb') as f:
    for i in range(int(sys.argv[2]) * 16): f.write(os.urandom(64 << 20))
" "$bigdir/big.bin" "$big_gib"
serve_start big
/usr/bin/time -v "$bin" --config "$cfg" --node serv1 sync Fbig --json > "$work/h4.json" 2> "$work/sync.big.log"
serve_stop
send_rss=$(rss_mb "$work/sync.big.log"); recv_rss=$(rss_mb "$work/serve.big.log")
cmp "$bigdir/big.bin" "$work/replica-h/$(basename "$bigdir")/big.bin" && echo "big file identical"

cat <<TABLE

| measure | hamirror | rsync (daemon) | hamirror / rsync |
| --- | --- | --- | --- |
| initial copy, time | ${h_init} s ($(mbps "$bytes" "$h_init") MB/s) | ${r_init} s ($(mbps "$bytes" "$r_init") MB/s) | $(ratio "$h_init" "$r_init") |
| initial copy, time against rsync --fsync | | ${rf_init} s ($(mbps "$bytes" "$rf_init") MB/s) | $(ratio "$h_init" "$rf_init") |
| initial copy, bytes on the wire | $h_init_wire | $r_init_wire | $(ratio "$h_init_wire" "$r_init_wire") |
| no-change pass, median of 5 | ${h_noop} s | ${r_noop} s | $(ratio "$h_noop" "$r_noop") |
| no-change pass, bytes on the wire | $h_noop_wire | $r_noop_wire | $(ratio "$h_noop_wire" "$r_noop_wire") |
| ~1% changed, time | ${h_delta} s | ${r_delta} s | $(ratio "$h_delta" "$r_delta") |
| ~1% changed, bytes on the wire | $h_delta_wire | $r_delta_wire | $(ratio "$h_delta_wire" "$r_delta_wire") |
| peak RSS, ${big_gib} GiB file: sender / receiver | $send_rss MB / $recv_rss MB | | |
| peak RSS of the receiver over the whole tree run | $recv_rss_tree MB | | |

hamirror's ~1% pass: $h_delta_detail
TABLE
