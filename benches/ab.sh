#!/usr/bin/env bash
# A/B benchmark of two hamirror builds on the same tree, in the same run,
# alternating which goes first each round (these machines are noisy: only
# the ratio of figures taken side by side counts):
#
#   benches/ab.sh OLD_BIN NEW_BIN [TREE] [ROUNDS]   # TREE default /tmp/hamirror-bench/tree, ROUNDS 3
#
# e.g. the previous commit's release binary against this one's:
#   git worktree add /tmp/old HEAD~1 && (cd /tmp/old && cargo build --release)
#   cargo build --release && benches/ab.sh /tmp/old/target/release/hamirror target/release/hamirror
#
# Per round and build: the initial copy of TREE into an empty replica (one
# `hamirror sync`, receiver durable with syncfs as always), then the
# no-change pass (median of 5). Wall time is at the mercy of whatever else
# the machine does; the CPU seconds (user + system) the receiver spent on
# the initial copy, and the sender's, are much less so; so is the peak
# resident memory (`time -f %M`) of each side during the initial copy
# (issue 17's bound: 64 MiB each). rsync (daemon on loopback, -aH --delete)
# copies the same tree once per round as the outside reference. Every
# replica is checked with `rsync -anc -HAX --numeric-ids --delete` (must
# print nothing). Prints a Markdown table for docs/BENCHMARKS.md.
set -euo pipefail

old=$(realpath "$1"); new=$(realpath "$2")
tree=$(realpath -m "${3:-/tmp/hamirror-bench/tree}")
rounds=${4:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$old" ] && [ -x "$new" ] || { echo "ab.sh: OLD_BIN and NEW_BIN must be executables" >&2; exit 2; }
[ -d "$tree" ] || "$here/benches/mktree.sh" "$tree"

mkdir -p /tmp/hamirror-bench
work=$(mktemp -d /tmp/hamirror-bench/ab.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

now() { echo "$EPOCHREALTIME"; }
secs() { python3 -c "print(f'{$2 - $1:.3f}')"; }
port() { python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }
median() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.3f}')" "$@"; }
ratio() { python3 -c "print(f'{$1 / $2:.3f}')"; }
settle() { sync; }
oracle() {
  local out
  out=$(rsync -anc -HAX --numeric-ids --delete --itemize-changes "$tree/" "$1/")
  [ -z "$out" ] || { echo "MISMATCH against $1:"; echo "$out" | head; exit 1; }
}

# One two-node cluster on loopback per build and round: serv1's root is the
# tree's parent, serv2's an empty replica.
run_build() { # BIN TAG -> prints "INIT NOOP RECV_CPU SEND_CPU RECV_MB SEND_MB"
  local bin=$1 tag=$2 d=$work/$2 cfg
  cfg=$d/cluster.d
  mkdir -p "$cfg/serv1" "$d/replica"
  for n in 1 2; do
    local root
    root=$([ $n = 1 ] && dirname "$tree" || echo "$d/replica")
    printf 'address = 127.0.0.1\nport = %s\nheartbeat_port = %s\nroot = %s\nstate = %s\n' \
      "$(port)" "$(port)" "$root" "$d/state$n" > "$cfg/serv$n.conf"
  done
  echo "/$(basename "$tree")/" > "$cfg/serv1/Fbench"
  echo 127.0.0.1 > "$cfg/reachlist"
  for n in serv1 serv2; do
    fp=$("$bin" --config "$cfg" --node $n init 2>/dev/null | grep -o 'sha256:[0-9a-f]*' | head -1)
    echo "fingerprint = $fp" >> "$cfg/$n.conf"
  done
  # serve under time(1), stopped (SIGTERM to serve itself) right after the
  # initial copy so its CPU is that of the copy alone.
  /usr/bin/time -f '%U %S %M' -o "$d/recv.cpu" "$bin" --config "$cfg" --node serv2 serve 2> "$d/serve.log" &
  local spid=$!
  pids+=("$spid"); sleep 1
  settle
  local t0 t1 init hs=()
  t0=$(now)
  /usr/bin/time -f '%U %S %M' -o "$d/send.cpu" "$bin" --config "$cfg" --node serv1 sync Fbench > /dev/null
  t1=$(now); init=$(secs "$t0" "$t1")
  pkill -TERM -P "$spid"; wait "$spid" 2>/dev/null || true
  local rcpu scpu rmb smb
  rcpu=$(awk 'END {printf "%.2f", $1 + $2}' "$d/recv.cpu"); scpu=$(awk 'END {printf "%.2f", $1 + $2}' "$d/send.cpu")
  rmb=$(awk 'END {printf "%.1f", $3 / 1024}' "$d/recv.cpu"); smb=$(awk 'END {printf "%.1f", $3 / 1024}' "$d/send.cpu")
  oracle "$d/replica/$(basename "$tree")"
  "$bin" --config "$cfg" --node serv2 serve 2>> "$d/serve.log" &
  spid=$!
  pids+=("$spid"); sleep 1
  settle
  for _ in 1 2 3 4 5; do
    t0=$(now); "$bin" --config "$cfg" --node serv1 sync Fbench > /dev/null; t1=$(now); hs+=("$(secs "$t0" "$t1")")
  done
  kill "$spid"; wait "$spid" 2>/dev/null || true
  rm -rf "$d"
  echo "$init $(median "${hs[@]}") $rcpu $scpu $rmb $smb"
}

rport=$(port)
mkdir -p "$work/rsync"
printf 'use chroot = no\nuid = root\ngid = root\n[bench]\n  path = %s\n  read only = false\n' "$work/rsync" > "$work/rsyncd.conf"
rsync --daemon --no-detach --address=127.0.0.1 --port="$rport" --config="$work/rsyncd.conf" &
pids+=($!); sleep 1

files=$(find "$tree" -type f | wc -l); bytes=$(du -sb "$tree" | cut -f1)
find "$tree" -type f -print0 | xargs -0 cat > /dev/null   # warm the page cache for all
echo "tree: $files files, $bytes bytes; machine: $(nproc) cores, $(lscpu | sed -n 's/Model name: *//p')"
echo
echo "| round | old initial | new initial | rsync initial | old no-change | new no-change | new/old initial | new/old no-change | receiver CPU old / new | sender CPU old / new | peak RSS receiver old / new | peak RSS sender old / new |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
ois=(); nis=(); ons=(); nns=(); orc=(); nrc=(); ri_=(); rn_=(); rc_=(); orm=(); nrm=(); osm=(); nsm=()
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) = 1 ]; then
    read -r oi on orr os om osmb < <(run_build "$old" old); read -r ni nn nr ns nm nsmb < <(run_build "$new" new)
  else
    read -r ni nn nr ns nm nsmb < <(run_build "$new" new); read -r oi on orr os om osmb < <(run_build "$old" old)
  fi
  orc+=("$orr"); nrc+=("$nr"); orm+=("$om"); nrm+=("$nm"); osm+=("$osmb"); nsm+=("$nsmb")
  ri_+=("$(ratio "$ni" "$oi")"); rn_+=("$(ratio "$nn" "$on")"); rc_+=("$(ratio "$nr" "$orr")")
  rm -rf "$work/rsync"; mkdir -p "$work/rsync"; settle
  t0=$(now); rsync -aH --delete "$tree/" "rsync://127.0.0.1:$rport/bench/"; t1=$(now); ri=$(secs "$t0" "$t1")
  oracle "$work/rsync"; rm -rf "$work/rsync"; mkdir -p "$work/rsync"
  ois+=("$oi"); nis+=("$ni"); ons+=("$on"); nns+=("$nn")
  echo "| $r | $oi s | $ni s | $ri s | $on s | $nn s | $(ratio "$ni" "$oi") | $(ratio "$nn" "$on") | $orr / $nr s ($(ratio "$nr" "$orr")) | $os / $ns s | $om / $nm MB | $osmb / $nsmb MB |"
done
mo=$(median "${ois[@]}"); mn=$(median "${nis[@]}"); no=$(median "${ons[@]}"); nn=$(median "${nns[@]}")
mor=$(median "${orc[@]}"); mnr=$(median "${nrc[@]}")
# The ratios' medians (each ratio taken within one round) resist a round
# that something else on the machine slowed down.
echo "| median | $mo s | $mn s | | $no s | $nn s | $(median "${ri_[@]}") | $(median "${rn_[@]}") | $mor / $mnr s ($(median "${rc_[@]}")) | | $(median "${orm[@]}") / $(median "${nrm[@]}") MB | $(median "${osm[@]}") / $(median "${nsm[@]}") MB |"
