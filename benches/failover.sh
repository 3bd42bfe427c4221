#!/usr/bin/env bash
# Failover benchmarks, hamirror beside keepalived, in the network-namespace
# lab of tests/cluster.rs (two nodes, a client probing the service address
# every 20 ms, three reachlist hosts, a crossover cable). Needs root.
#
#   benches/failover.sh [outage|both|load|mirror-load|all]     (default: all)
#
# Environment: HAMIRROR_BENCH_RUNS (outage runs per setup, default 5),
# HAMIRROR_BENCH_LOAD_SECS (load test length, default 300),
# HAMIRROR_BENCH_FAULTS (e.g. Freeze,Blackhole: only those fault cases),
# HAMIRROR_BENCH_XOVER (crossover rate of mirror-load, default 100mbit).
# Output: the tables on stdout and in target/failover-bench-<date>.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for t in ip tc socat arping keepalived iperf3 stress-ng; do
  command -v "$t" >/dev/null || missing+=("$t")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "missing: ${missing[*]}" >&2
  echo "apt-get install iproute2 socat iputils-arping keepalived iperf3 stress-ng" >&2
  exit 2
fi
[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces)" >&2; exit 2; }

what=${1:-all}
out="target/failover-bench-$(date +%Y%m%d-%H%M%S).txt"
mkdir -p target
{
  echo "# failover benchmark $(date -Is)"
  echo "# machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), kernel $(uname -r)"
  echo "# $(keepalived --version 2>&1 | head -1); $(iperf3 --version | head -1); $(stress-ng --version)"
} | tee "$out"

cargo build --release --tests -q
run() {
  echo "## $1" | tee -a "$out"
  cargo test --release -q --test failover_bench "$1" -- --ignored --nocapture --test-threads 1 2>&1 | tee -a "$out"
}
case "$what" in
  outage) run bench_outage_after_node1_dies ;;
  both) run bench_both_held_per_fault_case ;;
  load) run bench_false_failovers_under_load ;;
  mirror-load) run bench_false_failovers_under_mirror_load ;;
  all)
    run bench_outage_after_node1_dies
    run bench_both_held_per_fault_case
    run bench_false_failovers_under_load
    run bench_false_failovers_under_mirror_load ;;
  *) echo "usage: $0 [outage|both|load|mirror-load|all]" >&2; exit 2 ;;
esac
echo "written: $out"
