#!/usr/bin/env bash
# `hamirror verify` of an identical pair against `rsync -anc` and b3sum
# (issue 17), on the same tree in the same run, page cache warm and cold,
# median of ROUNDS alternating runs:
#
#   cargo build --release
#   benches/verify.sh [ROUNDS]                # default 3; needs b3sum, rsync
#   HAMIRROR_BIN=... HAMIRROR_BEFORE=/path/to/older/hamirror benches/verify.sh
#
# The tree (~1.5 GB: 8,000 files of 4-64 KiB, 1,000 of 64 KiB-1 MiB, 60 of
# 1-16 MiB, 2 of 100 MiB, incompressible) is generated under /tmp with its
# copy (`cp -a`) as serv2's replica, and removed at the end. Both nodes run
# on this machine, so a verify hashes both copies on the same cores: the
# fair CPU reference is b3sum of both sides, printed beside b3sum of one.
# Cold runs drop the page cache (`echo 3 > /proc/sys/vm/drop_caches`, root)
# before each command.
set -euo pipefail

rounds=${1:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${HAMIRROR_BIN:-$here/target/release/hamirror}
before=${HAMIRROR_BEFORE:-}
[ -x "$bin" ] || { echo "verify.sh: build first: cargo build --release" >&2; exit 2; }
command -v b3sum >/dev/null || { echo "verify.sh: needs b3sum (apt install b3sum, or cargo install b3sum)" >&2; exit 2; }

work=$(mktemp -d /tmp/hamirror-verify.XXXXXX)
pid=
cleanup() {
  [ -n "$pid" ] && { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT
. "$here/benches/pair.sh"
median() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.2f}')" "$@"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }

mkdir -p "$work/src/tree" "$work/replica" "$work/cluster.d/serv1" "$work/cluster.d/serv2"
python3 - "$work/src/tree" <<'PY'
import os, random, sys
root = sys.argv[1]
rng = random.Random(17)
pool = rng.randbytes(64 << 20)
def blob(n):
    out, left = [], n
    while left:
        k = min(left, 8 << 20)
        o = rng.randrange(0, len(pool) - k + 1)
        out.append(pool[o:o + k]); left -= k
    return b"".join(out)
mix = [(8000, 4 << 10, 64 << 10), (1000, 64 << 10, 1 << 20), (60, 1 << 20, 16 << 20), (2, 100 << 20, 100 << 20)]
i = 0
for count, lo, hi in mix:
    for _ in range(count):
        d = os.path.join(root, f"d{i % 40:02d}", f"e{i % 7}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:05d}.bin"), "wb") as f:
            f.write(blob(rng.randint(lo, hi)))
        i += 1
PY
cp -a "$work/src/tree" "$work/replica/tree"
pair_config "$work" "$bin"
serve() {
  [ -n "$pid" ] && { kill "$pid"; wait "$pid" 2>/dev/null || true; }
  "$1" --config "$work/cluster.d" --node serv2 serve 2> "$work/serve.log" &
  pid=$!
  sleep 1
}
files=$(find "$work/src/tree" -type f | wc -l); bytes=$(du -sb "$work/src/tree" | cut -f1)
echo "tree: $files files, $bytes bytes; $(nproc) cores, $(lscpu | sed -n 's/Model name: *//p'); load $(cut -d' ' -f1-3 /proc/loadavg)"

# One timed command: sets TW (wall seconds) and TC (CPU seconds, user +
# sys, children included).
timed() {
  /usr/bin/time -f '%e %U %S' -o "$work/time.out" "$@" > /dev/null 2> "$work/cmd.err" \
    || { echo "failed: $*"; cat "$work/cmd.err"; exit 1; }
  read -r TW u s < "$work/time.out"
  TC=$(python3 -c "print(f'{$u + $s:.2f}')")
}
H() { # BIN: verify must say identical (exit 0)
  "$1" --config "$work/cluster.d" --node serv1 verify Fbench > "$work/verify.out" 2>&1 \
    || { echo "verify failed:"; cat "$work/verify.out"; exit 1; }
}
b3one() { find "$work/src/tree" -type f -print0 | xargs -0 b3sum > /dev/null; }
b3both() { find "$work/src/tree" "$work/replica/tree" -type f -print0 | xargs -0 b3sum > /dev/null; }
rs() { out=$(rsync -anc --delete "$work/src/tree/" "$work/replica/tree/"); [ -z "$out" ] || { echo "rsync: $out"; exit 1; }; }
export -f H b3one b3both rs
export work

declare -A wall cpu
tools=(new rsync b3one b3both)
[ -n "$before" ] && tools=(before "${tools[@]}")
for mode in warm cold; do
  for r in $(seq "$rounds"); do
    for tool in "${tools[@]}"; do
      case $tool in
        before) serve "$before"; cmd=(bash -c "H $before") ;;
        new) serve "$bin"; cmd=(bash -c "H $bin") ;;
        rsync) cmd=(bash -c rs) ;;
        b3one) cmd=(bash -c b3one) ;;
        b3both) cmd=(bash -c b3both) ;;
      esac
      if [ "$mode" = cold ]; then sync; echo 3 > /proc/sys/vm/drop_caches; else "${cmd[@]}" > /dev/null; fi
      # The serve process's CPU is not a child of the command: read it from /proc.
      s0=$( [ -n "$pid" ] && awk '{print $14 + $15}' "/proc/$pid/stat" || echo 0)
      timed "${cmd[@]}"; w=$TW; c=$TC
      s1=$( [ -n "$pid" ] && awk '{print $14 + $15}' "/proc/$pid/stat" || echo 0)
      case $tool in before|new) c=$(python3 -c "print(f'{$c + ($s1 - $s0) / $(getconf CLK_TCK):.2f}')") ;; esac
      wall[$mode.$tool]="${wall[$mode.$tool]:-} $w"; cpu[$mode.$tool]="${cpu[$mode.$tool]:-} $c"
    done
  done
done
echo
echo "| page cache | tool | wall s (median of $rounds) | CPU s, both sides | wall / b3sum one side | wall / b3sum both sides |"
echo "| --- | --- | --- | --- | --- | --- |"
for mode in warm cold; do
  one=$(median ${wall[$mode.b3one]}); both=$(median ${wall[$mode.b3both]})
  for tool in "${tools[@]}"; do
    w=$(median ${wall[$mode.$tool]}); c=$(median ${cpu[$mode.$tool]})
    echo "| $mode | $tool | $w | $c | $(ratio "$w" "$one") | $(ratio "$w" "$both") |"
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
