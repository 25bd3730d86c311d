#!/usr/bin/env bash
# cachet demo: a smoke test of every capability, against a configured server
# (it leaves nothing behind) and, when nothing is configured, against a
# private redis-server it starts and stops itself.
. "$(dirname "$0")/lib.sh"

expect_exit 0 "$CACHET" demo --help
expect_exit 2 "$CACHET" demo extra-arg

start_server
rcli set unrelated keep >/dev/null
"$CACHET" demo >"$WORK/out" 2>"$WORK/err" || fail "demo exited $?: $(cat "$WORK/out" "$WORK/err")"
grep -q 'all 11 steps behaved as expected' "$WORK/out" || fail "demo output: $(cat "$WORK/out")"
grep -q 'integrity check failed' "$WORK/out" || fail "no tamper detection shown"
! grep -q 'private redis-server' "$WORK/err" || fail "started a private server with CACHET_URL set"
[ "$(rcli dbsize)" = "1" ] || fail "demo left keys behind: $(rcli keys '*')"
[ "$(rcli get unrelated)" = "keep" ] || fail "demo touched a key outside its prefix"
stop_server
unset CACHET_URL

# Nothing configured: a private server, announced in exactly one line, and
# gone afterwards. Only when nothing answers on localhost:6379.
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  TMPDIR=$WORK "$CACHET" demo >"$WORK/out" 2>"$WORK/err" || fail "private demo exited $?: $(cat "$WORK/err")"
  [ "$(grep -c 'no server configured; using a private redis-server on' "$WORK/err")" = "1" ] ||
    fail "private server not announced once: $(cat "$WORK/err")"
  grep -q 'all 11 steps' "$WORK/out" || fail "private demo output"
  ls -d "$WORK"/cachet-server-* 2>/dev/null && fail "the private server's dir was left behind"
  pgrep -f "$WORK/cachet-server" >/dev/null && fail "the private server is still running"

  # A demo killed with SIGKILL leaves its dir; the next demo removes it,
  # and leaves alone a dir whose owner still runs and anything not its own.
  mkdir "$WORK/cachet-server-AAAAAA" "$WORK/cachet-server-BBBBBB" "$WORK/cachet-server-CCCCCC"
  sh -c 'echo $$ >"$1"' sh "$WORK/cachet-server-AAAAAA/owner.pid"  # gone at once
  touch "$WORK/cachet-server-AAAAAA/redis.log"
  echo $$ >"$WORK/cachet-server-BBBBBB/owner.pid"                    # this shell
  sh -c 'echo $$ >"$1"' sh "$WORK/cachet-server-CCCCCC/owner.pid"
  touch "$WORK/cachet-server-CCCCCC/precious"
  TMPDIR=$WORK "$CACHET" demo >/dev/null 2>"$WORK/err" || fail "demo after a killed one: $(cat "$WORK/err")"
  [ ! -e "$WORK/cachet-server-AAAAAA" ] || fail "a killed demo's dir was not removed"
  [ -e "$WORK/cachet-server-BBBBBB/owner.pid" ] || fail "a live demo's dir was removed"
  [ -e "$WORK/cachet-server-CCCCCC/precious" ] || fail "a file the server never makes was removed"
  rm -rf "$WORK"/cachet-server-*

  # No redis-server installed: a clear message and exit 3.
  CACHET_REDIS_SERVER=$WORK/no-such-redis-server "$CACHET" demo >/dev/null 2>"$WORK/err"
  code=$?
  [ "$code" -eq 3 ] || fail "no redis-server: exit $code, expected 3"
  grep -q 'not installed' "$WORK/err" || fail "no redis-server message: $(cat "$WORK/err")"
else
  echo "skipping the private-server checks: something answers on localhost:6379" >&2
fi
echo "ok"
