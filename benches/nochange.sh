#!/usr/bin/env bash
# The no-change pass of `hamirror sync` against rsync (daemon on loopback),
# warm and cold, on a tree of many small files, in the same run:
#
#   cargo build --release
#   benches/nochange.sh [TREE] [FILES]     # default /tmp/hamirror-bench/million, 1000000
#   NOCHANGE_REPS=5 NOCHANGE_COLD_REPS=3 benches/nochange.sh ...
#
# A missing TREE is generated: FILES files of 0–4095 bytes of random
# content, 50 to a directory, directories three levels deep (the shape of
# a mail spool or a home share). Both tools first copy it into an empty
# replica (timed once, reported for scale; the oracle checks both), then:
#   warm: NOCHANGE_REPS no-change passes each, alternating, median;
#   cold: NOCHANGE_COLD_REPS passes each with the page cache, dentries and
#         inodes dropped before each (`echo 3 > /proc/sys/vm/drop_caches`:
#         needs root; every process on the machine feels it), median.
# Peak RSS of hamirror's sender in a warm pass is reported too.
# NOCHANGE_BASE_BIN=path/to/older/hamirror times that build too, in the
# same passes on the same state (before/after a change, against rsync).
set -euo pipefail

tree=$(realpath -m "${1:-/tmp/hamirror-bench/million}")
nfiles=${2:-1000000}
reps=${NOCHANGE_REPS:-5}
cold_reps=${NOCHANGE_COLD_REPS:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${HAMIRROR_BIN:-$here/target/release/hamirror}
base=${NOCHANGE_BASE_BIN:-}
[ -x "$bin" ] || { echo "nochange.sh: build first: cargo build --release" >&2; exit 2; }
command -v rsync >/dev/null || { echo "nochange.sh: needs rsync" >&2; exit 2; }

if [ ! -d "$tree" ]; then
  echo "generating $nfiles files under $tree"
  python3 - "$tree" "$nfiles" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(17)
pool = rng.randbytes(1 << 20)
for i in range(n):
    d = os.path.join(root, f"a{i // 50000:02d}", f"b{i // 2500 % 20:02d}", f"c{i // 50 % 50:02d}")
    if i % 50 == 0:
        os.makedirs(d, exist_ok=True)
    size = rng.randrange(4096)
    off = rng.randrange(len(pool) - size)
    with open(os.path.join(d, f"f{i:07d}"), "wb") as f:
        f.write(pool[off:off + size])
PY
fi

mkdir -p /tmp/hamirror-bench
work=$(mktemp -d /tmp/hamirror-bench/nc.XXXXXX)
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
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
port() { python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }

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
"$bin" --config "$cfg" --node serv2 serve 2> "$work/serve.log" &
pids+=($!)
rport=$(port)
printf 'use chroot = no\nuid = root\ngid = root\n[bench]\n  path = %s\n  read only = false\n' \
  "$work/replica-r" > "$work/rsyncd.conf"
rsync --daemon --no-detach --address=127.0.0.1 --port="$rport" --config="$work/rsyncd.conf" &
pids+=($!); sleep 1

H() { "$bin" --config "$cfg" --node serv1 sync Fbench --json > "$work/h.json"; }
B() { [ -z "$base" ] || "$base" --config "$cfg" --node serv1 sync Fbench --json > /dev/null; }
R() { rsync -aH --delete "$tree/" "rsync://127.0.0.1:$rport/bench/"; }
oracle() {
  local out
  out=$(rsync -anc -HAX --numeric-ids --delete --itemize-changes "$tree/" "$1/")
  [ -z "$out" ] || { echo "MISMATCH against $1:"; echo "$out" | head; exit 1; }
}

files=$(find "$tree" -type f | wc -l); dirs=$(find "$tree" -type d | wc -l)
echo "tree: $files files in $dirs directories, $(du -sh "$tree" | cut -f1) on disk;" \
  "machine: $(nproc) cores, $(lscpu | sed -n 's/Model name: *//p'), load $(cut -d' ' -f1-3 /proc/loadavg)"

t0=$(now); H; t1=$(now); h_init=$(secs "$t0" "$t1")
t0=$(now); R; t1=$(now); r_init=$(secs "$t0" "$t1")
oracle "$work/replica-h/$(basename "$tree")"; oracle "$work/replica-r"
echo "initial copy: hamirror $h_init s, rsync $r_init s (both checked by the oracle)"
# Each node's index: disk space (allocated blocks) and, in parentheses,
# the file's length. redb grows a file by doubling its length and leaves
# the tail a hole until it is used: the length alone (`du -b`, as this
# script printed before) overstates the disk by up to 2x.
entries=$((files + dirs))
for n in 1 2; do
  f=$work/state$n/sets/Fbench.redb
  echo "serv$n index after the first sync: $(($(stat -c '%b * %B' "$f") / entries)) B/entry on disk ($(($(stat -c %s "$f") / entries)) length), $entries entries"
done

hw=(); rw=(); bw=()
for i in $(seq 1 "$reps"); do
  if [ $((i % 2)) = 1 ]; then
    t0=$(now); H; t1=$(now); hw+=("$(secs "$t0" "$t1")")
    t0=$(now); R; t1=$(now); rw+=("$(secs "$t0" "$t1")")
    t0=$(now); B; t1=$(now); bw+=("$(secs "$t0" "$t1")")
  else
    t0=$(now); B; t1=$(now); bw+=("$(secs "$t0" "$t1")")
    t0=$(now); R; t1=$(now); rw+=("$(secs "$t0" "$t1")")
    t0=$(now); H; t1=$(now); hw+=("$(secs "$t0" "$t1")")
  fi
  echo "  warm pass $i: hamirror ${hw[-1]} s, rsync ${rw[-1]} s${base:+, base ${bw[-1]} s}"
done
sent=$(python3 -c "import json; d=json.load(open('$work/h.json')); print(d['push']['chunks_sent'])")
[ "$sent" = 0 ] || { echo "a no-change pass sent $sent chunks"; exit 1; }
/usr/bin/time -v "$bin" --config "$cfg" --node serv1 sync Fbench --json > /dev/null 2> "$work/time.log"
rss=$(awk '/Maximum resident set size/ { printf "%.1f", $6 / 1024 }' "$work/time.log")
if [ -n "$base" ]; then
  /usr/bin/time -v "$base" --config "$cfg" --node serv1 sync Fbench --json > /dev/null 2> "$work/time.log"
  base_rss=$(awk '/Maximum resident set size/ { printf "%.1f", $6 / 1024 }' "$work/time.log")
fi

hc=(); rc=(); bc=()
for i in $(seq 1 "$cold_reps"); do
  drop; t0=$(now); H; t1=$(now); hc+=("$(secs "$t0" "$t1")")
  drop; t0=$(now); R; t1=$(now); rc+=("$(secs "$t0" "$t1")")
  if [ -n "$base" ]; then drop; t0=$(now); B; t1=$(now); bc+=("$(secs "$t0" "$t1")"); fi
  echo "  cold pass $i: hamirror ${hc[-1]} s, rsync ${rc[-1]} s${base:+, base ${bc[-1]} s}"
done
oracle "$work/replica-h/$(basename "$tree")"; oracle "$work/replica-r"

hwm=$(median "${hw[@]}"); rwm=$(median "${rw[@]}"); hcm=$(median "${hc[@]}"); rcm=$(median "${rc[@]}")
cat <<TABLE

runs (s): warm hamirror ${hw[*]}; rsync ${rw[*]}; cold hamirror ${hc[*]}; rsync ${rc[*]}

| no-change pass, $files files | hamirror | rsync (daemon) | hamirror / rsync |
| --- | --- | --- | --- |
| warm, median of $reps | ${hwm} s | ${rwm} s | $(ratio "$hwm" "$rwm") |
| cold (caches dropped), median of $cold_reps | ${hcm} s | ${rcm} s | $(ratio "$hcm" "$rcm") |
| initial copy, once | ${h_init} s | ${r_init} s | $(ratio "$h_init" "$r_init") |
| peak RSS of the sender, warm pass | $rss MB | | |
TABLE
if [ -n "$base" ]; then
  bwm=$(median "${bw[@]}"); bcm=$(median "${bc[@]}")
  echo
  echo "base build ($base): warm ${bw[*]} (median $bwm s, $(ratio "$bwm" "$rwm") of rsync);" \
    "cold ${bc[*]} (median $bcm s, $(ratio "$bcm" "$rcm") of rsync); peak RSS $base_rss MB"
fi
