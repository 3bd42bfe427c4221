#!/usr/bin/env bash
# End-to-end benchmark of `hamirror watch` against lsyncd, in one run:
#
#   cargo build --release
#   benches/watch-latency.sh [FILES] [LSYNCD_DEFAULT_FILES]   # default 1000, 10
#   WATCH_ARGS="--events inotify" benches/watch-latency.sh   # extra `watch` options
#
# Two hamirror nodes on loopback (serv1 runs `watch`, serv2 `serve`), and
# lsyncd 2.x (`default.rsync`: rsync to a local directory) once with its
# default settings (delay 15 s) and once with `delay = 0`. Measures:
#   (a) latency from close() of a newly written 100-byte file to the file
#       being complete on the replica: FILES files written one at a time
#       (the next one after the previous arrived), p50/p90/p99/max. Arrival
#       is seen on the replica side by inotify (IN_MOVED_TO of the file's
#       final name: both hamirror and rsync build a temporary file and rename
#       it into place), never from the tools' logs; each arrived file is
#       read back and compared. lsyncd with its default delay is measured on
#       LSYNCD_DEFAULT_FILES files only (each takes ~15 s by design);
#   (b) a storm of 10,000 new 200-byte files in 100 new directories, written
#       as fast as one thread can: time until the last one is on the replica
#       (polled every 50 ms, then checked with `rsync -anc`);
#   (c) idle CPU of `hamirror watch` (and of `serve`) over a set of 50,000
#       files of 1 KiB, converged, nothing changing, 30 s: user+system ticks
#       from /proc/PID/stat over wall time.
# Prints a Markdown table; paste it into docs/BENCHMARKS.md.
set -euo pipefail

files=${1:-1000}
ldef_files=${2:-10}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${HAMIRROR_BIN:-$here/target/release/hamirror}
[ -x "$bin" ] || { echo "watch-latency.sh: build first: cargo build --release" >&2; exit 2; }
command -v lsyncd >/dev/null || { echo "watch-latency.sh: needs lsyncd (apt-get install lsyncd)" >&2; exit 2; }
command -v rsync >/dev/null || { echo "watch-latency.sh: needs rsync" >&2; exit 2; }

mkdir -p /tmp/hamirror-bench
work=$(mktemp -d /tmp/hamirror-bench/wl.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }

# The measuring side: writes files, waits for them on the replica.
cat > "$work/measure.py" <<'PY'
import ctypes, os, struct, sys, time, select, statistics

libc = ctypes.CDLL("libc.so.6", use_errno=True)
IN_MOVED_TO, IN_CLOSE_WRITE, IN_CREATE = 0x80, 0x8, 0x100

class Watcher:
    """inotify on the replica directory: names that appeared complete."""
    def __init__(self, d):
        self.fd = libc.inotify_init1(os.O_NONBLOCK)
        if self.fd < 0 or libc.inotify_add_watch(self.fd, d.encode(), IN_MOVED_TO | IN_CLOSE_WRITE) < 0:
            raise OSError(ctypes.get_errno(), "inotify")
        self.seen = {}
    def wait_for(self, name, timeout):
        end = time.monotonic() + timeout
        while name not in self.seen:
            left = end - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.fd], [], [], left)
            if not r:
                continue
            now = time.monotonic()
            buf = os.read(self.fd, 65536)
            i = 0
            while i < len(buf):
                wd, mask, cookie, ln = struct.unpack_from("iIII", buf, i)
                n = buf[i + 16:i + 16 + ln].rstrip(b"\0").decode()
                i += 16 + ln
                self.seen.setdefault(n, now)
        return self.seen[name]

def latency(src, dst, n, label):
    os.makedirs(dst, exist_ok=True)
    w = Watcher(dst)
    lat = []
    for i in range(n):
        name = f"{label}-{i:05d}.txt"
        data = (f"{i:08d}" * 13)[:100].encode()
        with open(os.path.join(src, name), "wb") as f:
            f.write(data)
        t_close = time.monotonic()   # close() returned
        t_seen = w.wait_for(name, 60)
        if t_seen is None:
            sys.exit(f"{label}: {name} did not arrive within 60 s")
        with open(os.path.join(dst, name), "rb") as f:
            if f.read() != data:
                sys.exit(f"{label}: {name} arrived incomplete")
        lat.append((t_seen - t_close) * 1000)
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
    print(f"{label} n={n} p50={q(0.5):.1f} p90={q(0.9):.1f} p99={q(0.99):.1f} max={lat[-1]:.1f} mean={statistics.mean(lat):.1f}")

def storm(src, dst, label):
    t0 = time.monotonic()
    for d in range(100):
        os.makedirs(os.path.join(src, f"storm{d:03d}"))
        for i in range(100):
            with open(os.path.join(src, f"storm{d:03d}", f"s{i:03d}"), "wb") as f:
                f.write(b"s" * 200)
    t_written = time.monotonic() - t0
    while True:
        n = 0
        for d in range(100):
            try:
                n += sum(1 for e in os.scandir(os.path.join(dst, f"storm{d:03d}")) if not e.name.startswith("."))
            except FileNotFoundError:
                pass
        if n >= 10000:
            break
        if time.monotonic() - t0 > 600:
            sys.exit(f"{label}: storm did not converge in 600 s ({n} files)")
        time.sleep(0.05)
    print(f"{label} storm written={t_written:.2f} converged={time.monotonic() - t0:.2f}")

if __name__ == "__main__":
    what = sys.argv[1]
    if what == "latency":
        latency(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    elif what == "storm":
        storm(sys.argv[2], sys.argv[3], sys.argv[4])
PY
M() { python3 "$work/measure.py" "$@"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "machine: $(nproc) cores, $(lscpu | sed -n 's/Model name: *//p'); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "hamirror $("$bin" --version 2>/dev/null | head -1); $(lsyncd --version 2>&1 | head -1); $(rsync --version | head -1)"

# --- hamirror: serv1 watches /wl/ and /idle/, serv2 serves ------------------
cfg=$work/cluster.d
mkdir -p "$cfg/serv1" "$cfg/serv2" "$work/r1/wl" "$work/r1/idle" "$work/r2"
echo seed > "$work/r1/wl/seed"
for n in 1 2; do
  printf 'address = 127.0.0.1\nport = %s\nheartbeat_port = %s\nroot = %s\nstate = %s\n' \
    "$(port)" "$(port)" "$work/r$n" "$work/state$n" > "$cfg/serv$n.conf"
done
echo "/wl/" > "$cfg/serv1/Fwl"
echo "/idle/" > "$cfg/serv1/Fidle"
echo 127.0.0.1 > "$cfg/reachlist"
for n in serv1 serv2; do
  fp=$("$bin" --config "$cfg" --node $n init 2>/dev/null | grep -o 'sha256:[0-9a-f]*' | head -1)
  echo "fingerprint = $fp" >> "$cfg/$n.conf"
done
HAMIRROR_LOG=warn "$bin" --config "$cfg" --node serv2 serve 2> "$work/serve.log" & serve_pid=$!; pids+=($!)
sleep 1
# The idle set: 50,000 files of 1 KiB in 500 directories.
python3 - "$work/r1/idle" <<'PY'
import os, sys
for d in range(500):
    p = os.path.join(sys.argv[1], f"d{d:03d}"); os.makedirs(p)
    for i in range(100):
        with open(os.path.join(p, f"f{i:03d}"), "wb") as f: f.write(os.urandom(1024))
PY
sync
HAMIRROR_LOG=warn "$bin" --config "$cfg" --node serv1 watch ${WATCH_ARGS:-} Fwl Fidle 2> "$work/watch.log" & watch_pid=$!; pids+=($!)
# Wait for the first copy of both sets.
t0=$(date +%s)
until [ "$(find "$work/r2/idle" -type f 2>/dev/null | wc -l)" -ge 50000 ] && [ -d "$work/r2/wl" ]; do
  sleep 0.5; [ $(( $(date +%s) - t0 )) -lt 600 ] || { echo "first copy did not finish"; tail "$work/watch.log"; exit 1; }
done
echo "first copy of 50,000 files on the replica after $(( $(date +%s) - t0 )) s"
sleep 3

# (a) latency
M latency "$work/r1/wl" "$work/r2/wl" "$files" hamirror | tee -a "$work/results"
# (b) storm
M storm "$work/r1/wl" "$work/r2/wl" hamirror | tee -a "$work/results"
out=$(rsync -anc --delete --itemize-changes "$work/r1/wl/" "$work/r2/wl/")
[ -z "$out" ] || { echo "hamirror replica differs:"; echo "$out" | head; exit 1; }
# (c) idle CPU, 30 s, after everything settled
sleep 5
hz=$(getconf CLK_TCK)
w0=$(cpu_ticks $watch_pid); s0=$(cpu_ticks $serve_pid); t0=$(date +%s.%N)
sleep 30
w1=$(cpu_ticks $watch_pid); s1=$(cpu_ticks $serve_pid); t1=$(date +%s.%N)
python3 -c "
el = $t1 - $t0
print(f'hamirror idle watch_cpu={100 * ($w1 - $w0) / $hz / el:.3f}% serve_cpu={100 * ($s1 - $s0) / $hz / el:.3f}% seconds={el:.1f} rss_watch_kb=$(awk '/VmRSS/ {print $2}' /proc/$watch_pid/status)')
" | tee -a "$work/results"
kill $watch_pid $serve_pid; wait $watch_pid $serve_pid 2>/dev/null || true

# --- lsyncd: default.rsync to a local directory -------------------------------
lsync() { # NAME DELAY(or "default")
  local src=$work/l-$1-src dst=$work/l-$1-dst delay=""
  mkdir -p "$src" "$dst"
  [ "$2" = default ] || delay="delay = $2,"
  cat > "$work/l-$1.lua" <<LUA
settings { nodaemon = true, logfile = "$work/l-$1.log", statusFile = "$work/l-$1.status", insist = true }
sync { default.rsync, source = "$src", target = "$dst", $delay }
LUA
  lsyncd "$work/l-$1.lua" > /dev/null 2>&1 & lpid=$!; pids+=($!)
  sleep 3   # its start-up rsync of the (empty) source
}
lsync d0 0
M latency "$work/l-d0-src" "$work/l-d0-dst" "$files" lsyncd-delay0 | tee -a "$work/results"
M storm "$work/l-d0-src" "$work/l-d0-dst" lsyncd-delay0 | tee -a "$work/results"
kill $lpid; wait $lpid 2>/dev/null || true
lsync def default
M latency "$work/l-def-src" "$work/l-def-dst" "$ldef_files" lsyncd-default | tee -a "$work/results"
kill $lpid; wait $lpid 2>/dev/null || true

echo; echo "raw:"; cat "$work/results"
