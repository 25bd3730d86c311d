# Cluster helpers for the CLI tests. Source it after lib.sh.
#
#   start_cluster N     -> N masters (no replicas) on free ports, each in
#                          its own dir under $WORK; sets CL_PORTS, CL_PIDS,
#                          exports CACHET_URL=redis+cluster://127.0.0.1:P1
#   ccli ARGS...        redis-cli -c (follows redirects) on the first node
#   cluster_masters     the ports of the masters, one per line
#
# Every node dies in the EXIT trap (stop_cluster chained before lib.sh's).
CL_PORTS=()
CL_PIDS=()

stop_cluster() {
  local p
  for p in "${CL_PIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${CL_PIDS[@]}"; do
    for _ in $(seq 1 250); do
      kill -0 "$p" 2>/dev/null || break
      sleep 0.02
    done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  CL_PIDS=()
}
trap 'stop_cluster; cleanup' EXIT

start_cluster() {
  local n=$1 i port dir addrs=()
  for i in $(seq 1 "$n"); do
    port=$(free_port)
    while [ "$port" -ge 55535 ]; do port=$(free_port); done
    dir="$WORK/node$i"
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file nodes.conf --cluster-node-timeout 1000 \
      --cluster-require-full-coverage no --save '' --appendonly no \
      --dir "$dir" --logfile redis.log --daemonize no --protected-mode no \
      >/dev/null 2>&1 &
    CL_PIDS+=($!)
    CL_PORTS+=("$port")
    addrs+=("127.0.0.1:$port")
    for _ in $(seq 1 500); do
      redis-cli -p "$port" PING 2>/dev/null | grep -q PONG && break
      sleep 0.02
    done
  done
  timeout 60 redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 \
    --cluster-yes >"$WORK/create.log" 2>&1 ||
    fail "redis-cli --cluster create failed: $(tail -5 "$WORK/create.log")"
  local ok
  for _ in $(seq 1 600); do
    ok=1
    for port in "${CL_PORTS[@]}"; do
      redis-cli -p "$port" CLUSTER INFO 2>/dev/null |
        grep -q cluster_state:ok || ok=0
    done
    [ "$ok" = 1 ] && break
    sleep 0.05
  done
  [ "$ok" = 1 ] || fail "the cluster did not become ok"
  export CACHET_URL="redis+cluster://127.0.0.1:${CL_PORTS[0]}"
}

ccli() { redis-cli -c -p "${CL_PORTS[0]}" "$@"; }

cluster_masters() { printf '%s\n' "${CL_PORTS[@]}"; }
