#!/usr/bin/env bash
# Issue 8's acceptance through the CLI: a paused server, OOM, a read-only
# replica, authentication, and a restart. Times are printed, not asserted.
. "$(dirname "$0")/lib.sh"

ms() { date +%s%3N; }

# A paused server: exit 3 (timeout) once CACHET_TIMEOUT_MS passes.
start_server
"$CACHET" set k v || fail "set"
kill -STOP "$SRV_PID"
t0=$(ms)
code=0
CACHET_TIMEOUT_MS=500 "$CACHET" get k 2>"$WORK/err" >/dev/null || code=$?
t1=$(ms)
kill -CONT "$SRV_PID"
[ "$code" -eq 3 ] || fail "paused server: exit $code, expected 3"
grep -q "timed out" "$WORK/err" || fail "paused server message: $(cat "$WORK/err")"
echo "paused server: exit 3 after $((t1 - t0)) ms (CACHET_TIMEOUT_MS=500)"

# After a restart (SIGKILL, then the same socket), the next command works.
kill_server
expect_exit 3 "$CACHET" get k
restart_server
expect_exit 1 "$CACHET" get k
"$CACHET" set k again || fail "set after restart"
[ "$("$CACHET" get k)" = "again" ] || fail "get after restart"

# OOM under noeviction: exit 3 with the server's OOM text, never a miss.
rcli CONFIG SET maxmemory 1 >/dev/null
rcli CONFIG SET maxmemory-policy noeviction >/dev/null
code=0
"$CACHET" set big "$(head -c 100000 /dev/zero | tr '\0' x)" 2>"$WORK/err" || code=$?
rcli CONFIG SET maxmemory 0 >/dev/null
[ "$code" -eq 3 ] || fail "OOM: exit $code, expected 3"
grep -q "OOM" "$WORK/err" || fail "OOM message: $(cat "$WORK/err")"
stop_server

# A write to a replica: exit 3 with READONLY.
start_server
primary_port=$PORT
primary_sock=$SOCK
SRV_DIR_PRIMARY=$SRV_DIR
PRIMARY_PID=$SRV_PID
SRV_PID=
SRV_DIR="$WORK/replica"
mkdir -p "$SRV_DIR"
SOCK="$SRV_DIR/redis.sock"
PORT=$(free_port)
SRV_ARGS=(--replicaof 127.0.0.1 "$primary_port")
spawn_server
code=0
CACHET_URL="unix://$SOCK" "$CACHET" set k v 2>"$WORK/err" || code=$?
[ "$code" -eq 3 ] || fail "replica write: exit $code, expected 3"
grep -q "READONLY" "$WORK/err" || fail "READONLY message: $(cat "$WORK/err")"
stop_server
kill -TERM "$PRIMARY_PID" 2>/dev/null; wait "$PRIMARY_PID" 2>/dev/null
SOCK=$primary_sock SRV_DIR=$SRV_DIR_PRIMARY

# Authentication: a missing or wrong password exits 3; the right one works.
start_server --requirepass s3cret
code=0
"$CACHET" get k 2>"$WORK/err" || code=$?
[ "$code" -eq 3 ] || fail "missing password: exit $code, expected 3"
grep -q "NOAUTH" "$WORK/err" || fail "NOAUTH message: $(cat "$WORK/err")"
code=0
CACHET_URL="redis://:wrong@127.0.0.1:$PORT" "$CACHET" get k 2>"$WORK/err" || code=$?
[ "$code" -eq 3 ] || fail "wrong password: exit $code, expected 3"
grep -q "WRONGPASS" "$WORK/err" || fail "WRONGPASS message: $(cat "$WORK/err")"
grep -q "wrong" <(sed 's/WRONGPASS//' "$WORK/err") && fail "the password was echoed"
expect_exit 1 env CACHET_URL="redis://:s3cret@127.0.0.1:$PORT" "$CACHET" get k
# The same server over its password-protected unix socket: the credentials
# ride in the unix:// URL, before the path.
code=0
CACHET_URL="unix://:wrong@$SOCK" "$CACHET" get k 2>"$WORK/err" || code=$?
[ "$code" -eq 3 ] || fail "unix, wrong password: exit $code, expected 3"
grep -q "WRONGPASS" "$WORK/err" || fail "unix WRONGPASS: $(cat "$WORK/err")"
CACHET_URL="unix://:s3cret@$SOCK" "$CACHET" set k v || fail "unix set with password"
[ "$(CACHET_URL="unix://:s3cret@$SOCK" "$CACHET" get k)" = v ] || fail "unix get with password"
echo ok
