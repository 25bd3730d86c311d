# Shared helpers for the CLI tests. Source it; $1 of the test is the CLI.
#
#   start_server [extra redis-server args...]   -> sets SOCK, PORT, SRV_DIR,
#                                                 SRV_PID, exports CACHET_URL
#   stop_server / kill_server / restart_server
#   rcli ARGS...      redis-cli on the private server
#   expect_exit N CMD...   run CMD, fail unless it exits N
#   fail MSG          print and exit 1
#
# Every server is private: a mktemp dir, a unix socket and a free port, and
# an EXIT trap stops it even when the test fails.
set -u

CACHET=${1:?usage: $0 path/to/cachet}
unset CACHET_URL CACHET_HOST CACHET_PORT CACHET_DB CACHET_USERNAME \
  CACHET_PASSWORD CACHET_KEY_PREFIX CACHET_TIMEOUT_MS CACHET_KEYS \
  CACHET_KEYS_FILE CACHET_ENCRYPT CACHET_ACCEPT_UNSEALED CACHET_USE_TLS \
  CACHET_TLS_CA_FILE CACHET_TLS_CA_DIR CACHET_TLS_CERT CACHET_TLS_KEY \
  CACHET_TLS_SERVER_NAME CACHET_TLS_INSECURE
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cachet-cli-XXXXXX")
SRV_PID=
SRV_ARGS=()

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

spawn_server() {
  redis-server --port "$PORT" --bind 127.0.0.1 --unixsocket "$SOCK" \
    --unixsocketperm 700 --save '' --appendonly no --dir "$SRV_DIR" \
    --daemonize no --logfile "$SRV_DIR/redis.log" --protected-mode no \
    "${SRV_ARGS[@]}" >/dev/null 2>&1 &
  SRV_PID=$!
  for _ in $(seq 1 500); do
    # A server with requirepass answers NOAUTH: it is up all the same.
    if redis-cli -s "$SOCK" PING 2>/dev/null | grep -qE 'PONG|NOAUTH'; then
      return 0
    fi
    kill -0 "$SRV_PID" 2>/dev/null || break
    sleep 0.02
  done
  fail "redis-server did not start: $(tail -3 "$SRV_DIR/redis.log" 2>/dev/null)"
}

start_server() {
  SRV_ARGS=("$@")
  SRV_DIR="$WORK/srv"
  mkdir -p "$SRV_DIR"
  SOCK="$SRV_DIR/redis.sock"
  PORT=$(free_port)
  spawn_server
  export CACHET_URL="unix://$SOCK"
}

kill_server() {
  if [ -n "$SRV_PID" ]; then
    kill -CONT "$SRV_PID" 2>/dev/null || true
    kill -KILL "$SRV_PID" 2>/dev/null || true
    wait "$SRV_PID" 2>/dev/null || true
    SRV_PID=
  fi
}

restart_server() {
  rm -f "$SOCK"
  spawn_server
}

stop_server() {
  if [ -n "$SRV_PID" ]; then
    kill -CONT "$SRV_PID" 2>/dev/null || true
    kill -TERM "$SRV_PID" 2>/dev/null || true
    for _ in $(seq 1 250); do
      kill -0 "$SRV_PID" 2>/dev/null || break
      sleep 0.02
    done
    kill_server
  fi
}

cleanup() {
  stop_server
  rm -rf "$WORK"
}
trap cleanup EXIT

rcli() { redis-cli -s "$SOCK" "$@"; }

expect_exit() {
  local want=$1
  shift
  local got=0
  "$@" || got=$?
  [ "$got" -eq "$want" ] || fail "expected exit $want, got $got: $*"
}
