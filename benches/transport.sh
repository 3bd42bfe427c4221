#!/usr/bin/env bash
# Throughput of hamirror's QUIC transport against a plain TCP copy on
# loopback (see benches/transport.rs). Builds the bench profile (release
# with debug info), prints the machine, then runs the comparison.
# Usage: benches/transport.sh [--gib 2] [--rounds 3] [--streams 4] [--mtu 6500] ...
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(uname -r)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench --bench transport -- --gib 2 --rounds 3 "$@"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
