#!/usr/bin/env bash
# The pass after ~1% of the files changed: `hamirror sync` against rsync
# (daemon on loopback), several rounds on the same tree, in the same run:
#
#   cargo build --release
#   benches/changed.sh [TREE] [ROUNDS]     # default /tmp/hamirror-bench/corpus, 6
#   CHANGED_BASE_BIN=path/to/older/hamirror benches/changed.sh ...
#
# A missing TREE is made by benches/mkcorpus.sh (issue 17's corpus: 50,000
# files, 5.6 GB, no shared slices). Both tools first copy it into an empty
# replica (timed once, for scale). Then each round changes 1% of the files
# with benches/mutate.py, as benches/vs-rsync.sh does (edits in place, appends, 100-byte
# insertions in the middle of files over 1 MiB, deletions; plus 0.1% new
# files), each round with its own seed, and times one pass of each tool
# (the order alternates). With CHANGED_BASE_BIN the rounds alternate
# between that build and this one on the same pair (each pass carries what
# changed since the other build's pass: the same amount of work), so the
# two builds are compared in the same run; rsync runs every round.
# Page cache warm and nothing dirty before each pass (`sync`): hamirror's
# receiver makes what it applied durable, rsync's does not.
# At the end both replicas are checked against the source with
# `rsync -anc -HAX --numeric-ids --delete -i` (must print nothing).
set -euo pipefail

tree=$(realpath -m "${1:-/tmp/hamirror-bench/corpus}")
rounds=${2:-6}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${HAMIRROR_BIN:-$here/target/release/hamirror}
base=${CHANGED_BASE_BIN:-}
[ -x "$bin" ] || { echo "changed.sh: build first: cargo build --release" >&2; exit 2; }
command -v rsync >/dev/null || { echo "changed.sh: needs rsync" >&2; exit 2; }
[ -d "$tree" ] || "$here/benches/mkcorpus.sh" "$tree"

mkdir -p /tmp/hamirror-bench
work=$(mktemp -d /tmp/hamirror-bench/ch.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do pkill -P "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

now() { echo "$EPOCHREALTIME"; }
secs() { python3 -c "print(f'{$2 - $1:.3f}')"; }
median() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.3f}')" "$@"; }
imedian() { python3 -c "import statistics,sys; print(f'{statistics.median(map(int, sys.argv[1:])):.0f}')" "$@"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
port() { python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }
jq1() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {'d': d}))" "$1" "$2"; }

cfg=$work/cluster.d
mkdir -p "$cfg/serv1" "$cfg/serv2" "$work/replica-h" "$work/replica-r"
for n in 1 2; do
  root=$([ $n = 1 ] && dirname "$tree" || echo "$work/replica-h")
  printf 'address = 127.0.0.1\nport = %s\nheartbeat_port = %s\nroot = %s\nstate = %s\n' \
    "$(port)" "$(port)" "$root" "$work/state$n" > "$cfg/serv$n.conf"
done
echo "/$(basename "$tree")/" > "$cfg/serv1/Fbench"
echo 127.0.0.1 > "$cfg/reachlist"
for n in serv1 serv2; do
  fp=$("$bin" --config "$cfg" --node $n init 2>/dev/null | grep -o 'sha256:[0-9a-f]*' | head -1)
  echo "fingerprint = $fp" >> "$cfg/$n.conf"
done
# The receiver is the build under test; with a base build the base's own
# receiver serves the base's rounds (both read and write the same index).
serve() {
  [ -z "${pids[*]}" ] || { kill "${pids[0]}" 2>/dev/null || true; wait "${pids[0]}" 2>/dev/null || true; pids=("${pids[@]:1}"); }
  "$1" --config "$cfg" --node serv2 serve 2>> "$work/serve.log" &
  pids=("$!" "${pids[@]}"); sleep 0.5
}
serve "$bin"
rport=$(port)
printf 'use chroot = no\nuid = root\ngid = root\n[bench]\n  path = %s\n  read only = false\n' \
  "$work/replica-r" > "$work/rsyncd.conf"
rsync --daemon --no-detach --address=127.0.0.1 --port="$rport" --config="$work/rsyncd.conf" &
pids+=($!); sleep 1

H() { "$1" --config "$cfg" --node serv1 sync Fbench --json > "$work/h.json"; }
R() { rsync -aH --delete --stats "$tree/" "rsync://127.0.0.1:$rport/bench/" > "$work/rsync.out"; }
rbytes() { awk '/Total bytes sent/ {s=$4} /Total bytes received/ {r=$4} END {gsub(",","",s); gsub(",","",r); printf "%.0f\n", s+r}' "$work/rsync.out"; }
oracle() {
  local out
  out=$(rsync -anc -HAX --numeric-ids --delete --itemize-changes "$tree/" "$1/")
  [ -z "$out" ] || { echo "MISMATCH against $1:"; echo "$out" | head; exit 1; }
}

files=$(find "$tree" -type f | wc -l)
echo "tree: $files files, $(du -sh "$tree" | cut -f1); machine: $(nproc) cores," \
  "$(lscpu | sed -n 's/Model name: *//p'), load $(cut -d' ' -f1-3 /proc/loadavg)"
find "$tree" -type f -print0 | xargs -0 cat > /dev/null   # warm the page cache for both
t0=$(now); H "$bin"; t1=$(now); echo "initial copy: hamirror $(secs "$t0" "$t1") s"
t0=$(now); R; t1=$(now); echo "initial copy: rsync $(secs "$t0" "$t1") s"
H "$bin"; R   # one no-change pass each: both start the rounds in step

hs=(); bs=(); rs=(); hb=(); bb=(); rb=()
for i in $(seq 1 "$rounds"); do
  python3 "$here/benches/mutate.py" "$tree" $((1000 + i)) "new-$i-" > /dev/null
  who=$bin; [ -n "$base" ] && [ $((i % 2)) = 0 ] && who=$base
  [ -z "$base" ] || serve "$who"
  sync; sleep 0.2
  run_h() {
    t0=$(now); H "$who"; t1=$(now)
    local t w; t=$(secs "$t0" "$t1"); w=$(jq1 "$work/h.json" "d['udp_bytes_sent'] + d['udp_bytes_received']")
    if [ "$who" = "$bin" ]; then hs+=("$t"); hb+=("$w"); else bs+=("$t"); bb+=("$w"); fi
  }
  run_r() { t0=$(now); R; t1=$(now); rs+=("$(secs "$t0" "$t1")"); rb+=("$(rbytes)"); }
  if [ $((i % 2)) = 1 ]; then run_h; sync; run_r; else run_r; sync; run_h; fi
  if [ "$who" = "$bin" ]; then label="hamirror ${hs[-1]}"; else label="base ${bs[-1]}"; fi
  echo "  round $i (load $(cut -d' ' -f1 /proc/loadavg)): $label s; rsync ${rs[-1]} s"
done
oracle "$work/replica-h/$(basename "$tree")"; oracle "$work/replica-r"
echo "both replicas identical to the source (rsync -anc oracle)"

hm=$(median "${hs[@]}"); rm_=$(median "${rs[@]}")
cat <<TABLE

runs (s): hamirror ${hs[*]}; ${base:+base ${bs[*]}; }rsync ${rs[*]}
wire bytes: hamirror ${hb[*]}; ${base:+base ${bb[*]}; }rsync ${rb[*]}

| ~1% changed, median of rounds | hamirror | ${base:+base | }rsync (daemon) | hamirror / rsync${base:+ | base / rsync} |
| --- | --- | ${base:+--- | }--- | ---${base:+ | ---} |
| time | ${hm} s | ${base:+$(median "${bs[@]}") s | }${rm_} s | $(ratio "$hm" "$rm_")${base:+ | $(ratio "$(median "${bs[@]}")" "$rm_")} |
| bytes on the wire | $(imedian "${hb[@]}") | ${base:+$(imedian "${bb[@]}") | }$(imedian "${rb[@]}") | $(ratio "$(imedian "${hb[@]}")" "$(imedian "${rb[@]}")")${base:+ | $(ratio "$(imedian "${bb[@]}")" "$(imedian "${rb[@]}")")} |
TABLE
