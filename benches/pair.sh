# Sourced by benches/index-size.sh and benches/verify.sh: a two-node
# configuration on 127.0.0.1 in WORK/cluster.d, serv1's root WORK/src and
# serv2's WORK/replica, one set `Fbench` = /tree/, keys made by BIN init.
#
#   . "$here/benches/pair.sh"; pair_config "$work" "$bin"

port() { python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }

pair_config() {
  local work=$1 bin=$2 n root fp
  mkdir -p "$work/cluster.d/serv1" "$work/cluster.d/serv2"
  for n in 1 2; do
    root=$([ "$n" = 1 ] && echo "$work/src" || echo "$work/replica")
    printf 'address = 127.0.0.1\nport = %s\nheartbeat_port = %s\nroot = %s\nstate = %s\n' \
      "$(port)" "$(port)" "$root" "$work/state$n" > "$work/cluster.d/serv$n.conf"
  done
  echo "/tree/" > "$work/cluster.d/serv1/Fbench"
  echo 127.0.0.1 > "$work/cluster.d/reachlist"
  for n in serv1 serv2; do
    fp=$("$bin" --config "$work/cluster.d" --node $n init 2>/dev/null | grep -o 'sha256:[0-9a-f]*' | head -1)
    echo "fingerprint = $fp" >> "$work/cluster.d/$n.conf"
  done
}
