#!/usr/bin/env bash
# Resync benchmark (issue 7): a node comes back after the holder changed 1%
# of a 50,000-file, several-GB set, and pulls the changes back:
# `hamirror resync --from serv1` on serv2, side by side with
# `rsync -a --delete` pulling the same data the same way (from an rsync
# daemon serving the holder's copy on loopback), in the same run.
#
#   cargo build --release
#   benches/resync.sh [TREE]        # default /tmp/hamirror-bench/tree
#
# The source tree (benches/mktree.sh makes one) is copied twice: the
# holder's copy (a) and serv2's (b, a real copy: a hard-link copy of a
# would see its ctimes change when a's files are replaced, and hamirror's
# quick check would re-read them). rsync's replica (r) is a hard-link copy
# of b (both tools replace files by rename, never in place, and the change
# below does the same). serv2's index is in step (one initial `hamirror
# sync`). Then two rounds, each with a fresh ~1% of the files changed on
# the holder (edits in place of a block, appends, insertions in the middle
# of large files, deletions, new files), the page cache warmed by a stat
# pass, and each tool pulling once:
#   1. "cold holder": serv1 runs `hamirror serve`, started after the
#      change, so it quick-checks its copy when asked (an operator pulling
#      from a node whose daemon was restarted);
#   2. "daemon holder": serv1 runs the daemon (`hamirror run`, serv2 down),
#      which holds its group and watches the set while the change is made,
#      as the survivor of a failover does; its index is current and the
#      pull skips its scan.
# rsync also pulls with --fsync into a third replica (rf, another hard-link
# copy of b): hamirror makes what it applied durable before it acknowledges
# it (one syncfs before the renames, one after, the index commit), plain
# rsync does not.
# Timed: the whole command (hamirror: the local quick-check scan, the
# holder's scan if any, the transfer, the apply with its two syncfs, the
# index commit). Both replicas are then checked against the holder's copy
# with `rsync -anc --delete -H` (must print nothing).
#
# WORK=DIR keeps the work directory (copies, config, state) in DIR and,
# when DIR is already set up, reuses it: the next rounds change other files.
set -euo pipefail

tree=$(realpath -m "${1:-/tmp/hamirror-bench/tree}")
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${HAMIRROR_BIN:-$here/target/release/hamirror}
[ -x "$bin" ] || { echo "resync.sh: build first: cargo build --release" >&2; exit 2; }
command -v rsync >/dev/null || { echo "resync.sh: needs rsync" >&2; exit 2; }
[ -d "$tree" ] || "$here/benches/mktree.sh" "$tree"

mkdir -p /tmp/hamirror-bench
if [ -n "${WORK:-}" ]; then work=$(realpath -m "$WORK"); mkdir -p "$work"; else work=$(mktemp -d /tmp/hamirror-bench/resync.XXXXXX); fi
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

now() { echo "$EPOCHREALTIME"; }
secs() { python3 -c "print(f'{$2 - $1:.3f}')"; }
jq1() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {'d': d}))" "$1" "$2"; }
port() { python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }

# serv1 (the holder) holds Fbench under $work/a; serv2 pulls into $work/b.
cfg=$work/cluster.d
A() { "$bin" --config "$cfg" --node serv1 "$@"; }
B() { "$bin" --config "$cfg" --node serv2 "$@"; }
if [ ! -f "$work/ready" ]; then
mkdir -p "$cfg/serv1" "$cfg/serv2" "$work/a" "$work/b" "$work/r" "$work/rf"
for n in 1 2; do
  root=$([ $n = 1 ] && echo "$work/a" || echo "$work/b")
  printf 'address = 127.0.0.1\nport = %s\nheartbeat_port = %s\nroot = %s\nstate = %s\n' \
    "$(port)" "$(port)" "$root" "$work/state$n" > "$cfg/serv$n.conf"
done
echo "/set/" > "$cfg/serv1/Fbench"
# The daemon round: a heartbeat key, a short initdead, and a TCP probe of a
# port nobody listens on (a refusal counts as reached) for the reachlist.
echo "127.0.0.1 tcp:$(port)" > "$cfg/reachlist"
python3 -c "import secrets; print(secrets.token_hex(32))" > "$cfg/authkeys"; chmod 600 "$cfg/authkeys"
for n in 1 2; do printf 'heartbeat_key = authkeys\ninitdead = 1s\npreferred = serv1\n' >> "$cfg/serv$n.conf"; done
for n in serv1 serv2; do
  fp=$("$bin" --config "$cfg" --node $n init 2>/dev/null | grep -o 'sha256:[0-9a-f]*' | head -1)
  echo "fingerprint = $fp" >> "$cfg/$n.conf"
done

echo "copying $tree twice ..." >&2
cp -a "$tree" "$work/a/set"
cp -a "$tree" "$work/b/set"
cp -al "$work/b/set" "$work/r/set"
cp -al "$work/b/set" "$work/rf/set"

# serv2 in step: an initial push (its receiver indexes its copy; nothing moves).
"$bin" --config "$cfg" --node serv2 serve 2> "$work/serve2.log" & pids+=($!); sleep 1
A sync Fbench --json > "$work/init.json"
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'
echo "initial push: $(jq1 "$work/init.json" "d['push']['outcome'] + ', ' + str(d['push']['chunks_sent']) + ' chunks sent'")" >&2
touch "$work/ready"
fi
files=$(find "$work/a/set" -type f | wc -l); bytes=$(du -sb "$work/a/set" | cut -f1)
round=$(cat "$work/rounds" 2>/dev/null || echo 0); echo $((round + 1)) > "$work/rounds"

rport=$(port)
cat > "$work/rsyncd.conf" <<CONF
use chroot = no
uid = root
gid = root
[a]
  path = $work/a/set
  read only = true
CONF
rsync --daemon --no-detach --address=127.0.0.1 --port="$rport" --config="$work/rsyncd.conf" & pids+=($!)

# ~1% of the files change on the holder, each by a new file renamed into
# place (the replicas' hard links keep the old content).
change() {
python3 - "$work/a/set" "$1" <<'PY'
import os, random, sys
root, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
picked = rng.sample(files, len(files) // 100)
def replace(p, data):
    st = os.stat(p)
    tmp = p + ".new"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, st.st_mode & 0o7777)
    os.rename(tmp, p)
written = 0
for i, p in enumerate(picked):
    if i % 10 == 0:
        os.remove(p)
        continue
    data = open(p, "rb").read()
    if len(data) > (1 << 20) and i % 3 == 0:
        data = data[: len(data) // 2] + rng.randbytes(100) + data[len(data) // 2 :]
    elif i % 2 == 0:
        at = rng.randrange(max(1, len(data) - 4096))
        data = data[:at] + rng.randbytes(4096) + data[at + 4096 :]
    else:
        data = data + rng.randbytes(1000)
    replace(p, data)
    written += len(data)
first = sorted(d for d, _, _ in os.walk(root))[1]
for i in range(len(picked) // 10):
    # A fresh name: writing into an existing file would change the
    # replicas' hard-linked copies too.
    p = os.path.join(first, f"resync-new{seed}-{i:04d}.dat")
    assert not os.path.exists(p), p
    data = rng.randbytes(rng.randrange(1000, 200000))
    with open(p, "wb") as f:
        f.write(data)
    written += len(data)
print(f"changed {len(picked)} files, added {len(picked) // 10}", file=sys.stderr)
print(written)
PY
}

# One round: hamirror pulls into b, then rsync into r; both checked.
# Appends a row to $rows.
rows=""
pull_round() {
  local name=$1 changed=$2
  sync
  find "$work" -type f > /dev/null   # warm the inode cache for both
  local t0 t1 h_time h_wire h_detail r_time r_wire
  t0=$(now); B resync --from serv1 Fbench --json > "$work/h-$name.json"; t1=$(now); h_time=$(secs "$t0" "$t1")
  h_wire=$(jq1 "$work/h-$name.json" "d['udp_bytes_sent'] + d['udp_bytes_received']")
  h_detail=$(jq1 "$work/h-$name.json" "f\"{d['sets'][0]['outcome']} listing, {d['sets'][0]['offered']} entries offered, {d['sets'][0]['applied']} applied, {d['sets'][0]['deleted']} deleted, {d['sets'][0]['chunks_received']} chunks received ({d['bytes_received']} raw bytes, {d['sets'][0]['deltas_received']} as deltas), {d['chunks_reused']} reused, {d['conflicts']} conflicts\"")
  t0=$(now)
  rsync -aH --delete --stats "rsync://127.0.0.1:$rport/a/" "$work/r/set/" > "$work/rsync-$name.out"
  t1=$(now); r_time=$(secs "$t0" "$t1")
  r_wire=$(awk '/Total bytes sent/ {s=$4} /Total bytes received/ {r=$4} END {gsub(",","",s); gsub(",","",r); print s+r}' "$work/rsync-$name.out")
  sync
  t0=$(now)
  rsync -aH --delete --fsync "rsync://127.0.0.1:$rport/a/" "$work/rf/set/"
  t1=$(now); local rf_time; rf_time=$(secs "$t0" "$t1")
  for d in "$work/b/set" "$work/r/set" "$work/rf/set"; do
    out=$(rsync -anc --delete -H --itemize-changes "$work/a/set/" "$d/")
    [ -z "$out" ] || { echo "MISMATCH against $d after round $name:"; echo "$out" | head; exit 1; }
  done
  rows+="| $name | $changed | $h_time | $r_time | $(python3 -c "print(f'{$h_time / $r_time:.2f}')") | $rf_time | $(python3 -c "print(f'{$h_time / $rf_time:.2f}')") | $h_wire | $r_wire |"$'\n'
  details+="$name: hamirror: $h_detail"$'\n'
}
details=""

# Round 1, cold holder: serv1 serves, started after the change.
changed=$(change $((11 + 2 * round)))
"$bin" --config "$cfg" --node serv1 serve 2> "$work/serve1.log" & pids+=($!); sleep 1
pull_round "cold holder (serve)" "$changed"
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'

# Round 2, daemon holder: serv1's daemon holds its group and watches the
# set while the change is made (serv2 is down), then serv2 pulls.
"$bin" --config "$cfg" --node serv1 run 2> "$work/run1.log" & pids+=($!)
for _ in $(seq 100); do
  A status --json 2>/dev/null | python3 -c "import json,sys; d=json.load(sys.stdin); sys.exit(0 if any(g['group']=='serv1' and g['holder']=='serv1' and g['phase']=='held' for g in d['groups']) else 1)" 2>/dev/null && break
  sleep 0.2
done
grep -q "start-up scan set=Fbench" "$work/run1.log" || sleep 2
changed=$(change $((12 + 2 * round)))
sleep 3   # the change is long made when the node returns
pull_round "daemon holder (run)" "$changed"
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'

echo
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/Model name: *//p'); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "set: $files files, $bytes bytes; each round changes ~1% of the files on the holder"
echo
echo "| resync after 1% changed | bytes of the changed files | \`hamirror resync --from serv1\` (s) | \`rsync -aH --delete\` (s) | ratio | \`rsync -aH --delete --fsync\` (s) | ratio | hamirror bytes on the wire | rsync bytes |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s' "$rows"
echo
printf '%s' "$details"
