#!/usr/bin/env bash
# Issue 5's acceptance through the CLI: fetch under stampede protection
# (concurrent callers, a killed holder, failing commands), lock
# acquire/release/extend and their exit codes, health and stats output.
. "$(dirname "$0")/lib.sh"
start_server
LUA_DIR=$(cd "$(dirname "$0")/../../lua" && pwd)

# ---- fetch: 20 concurrent callers on a cold key run the command once -----
runs="$WORK/runs"
: >"$runs"
pids=()
for i in $(seq 1 20); do
  "$CACHET" fetch k --ttl 60000 -- sh -c "echo run >> '$runs'; sleep 1; echo v" \
    >"$WORK/out.$i" 2>"$WORK/err.$i" &
  pids+=($!)
done
for i in $(seq 1 20); do
  wait "${pids[$((i - 1))]}" || fail "fetch $i exited $?: $(cat "$WORK/err.$i")"
  [ "$(cat "$WORK/out.$i")" = "v" ] || fail "fetch $i printed '$(cat "$WORK/out.$i")'"
done
[ "$(wc -l <"$runs")" -eq 1 ] || fail "the command ran $(wc -l <"$runs") times"
# Now a hit: the command does not run again.
[ "$("$CACHET" fetch k -- sh -c "echo run >> '$runs'; echo other")" = "v" ] ||
  fail "fetch of a cached key"
[ "$(wc -l <"$runs")" -eq 1 ] || fail "a hit ran the command"
"$CACHET" fetch k --json -- false | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["value"] == "v\n" and d["loaded"] is False, d' || fail "fetch --json"

# ---- fetch: a holder killed with SIGKILL is taken over --------------------
"$CACHET" fetch slow -- sh -c "echo \$\$ > '$WORK/slow.pid'; exec sleep 60" \
  >/dev/null 2>&1 &
holder=$!
for _ in $(seq 1 500); do
  [ -s "$WORK/slow.pid" ] && break
  sleep 0.02
done
[ -s "$WORK/slow.pid" ] || fail "the slow command did not start"
[ -n "$(rcli --scan --pattern '*s:slow')" ] || fail "no stampede lock for slow"
kill -KILL "$holder"
wait "$holder" 2>/dev/null || true
kill -KILL "$(cat "$WORK/slow.pid")" 2>/dev/null || true
out=$(timeout 10 "$CACHET" fetch slow -- echo taken) ||
  fail "no takeover within 10 s (exit $?)"
[ "$out" = "taken" ] || fail "takeover printed '$out'"

# ---- fetch: a failing command caches nothing; its status is fetch's ------
expect_exit 7 "$CACHET" fetch bad -- sh -c 'echo partial; exit 7'
expect_exit 1 "$CACHET" get bad
err=$("$CACHET" fetch bad -- sh -c 'exit 5' 2>&1 >/dev/null)
case "$err" in *"status 5"*"nothing cached"*) ;; *) fail "fetch failure message: $err" ;; esac
expect_exit 143 "$CACHET" fetch bad -- sh -c 'kill -TERM $$'
expect_exit 127 "$CACHET" fetch bad -- /nonexistent/command
expect_exit 1 "$CACHET" get bad
# ... and the lock was released at once: the next fetch loads.
[ "$("$CACHET" fetch bad -- echo good)" = "good" ] || fail "fetch after a failure"
expect_exit 2 "$CACHET" fetch k
expect_exit 2 "$CACHET" fetch -- echo x
"$CACHET" fetch --help | grep -q "exit status" || fail "fetch --help"

# ---- locks ---------------------------------------------------------------
out=$("$CACHET" lock acquire L --ttl 5000) || fail "lock acquire exited $?"
[[ "$out" =~ ^[0-9a-f]{32}\ [0-9]+$ ]] || fail "lock acquire printed '$out'"
token=${out%% *}
fence=${out##* }
expect_exit 1 "$CACHET" lock acquire L --ttl 5000
wrong=0123456789abcdef0123456789abcdef
[ "$token" != "$wrong" ] || fail "token collision"
err=$("$CACHET" lock release L "$wrong" 2>&1 >/dev/null; echo "exit=$?")
case "$err" in *"another owner"*exit=1) ;; *) fail "release by a wrong token: $err" ;; esac
expect_exit 2 "$CACHET" lock release L not-a-token
expect_exit 2 "$CACHET" lock release L "${token}0"
expect_exit 0 "$CACHET" lock extend L "$token" --ttl 60000
pttl=$(rcli --scan --pattern '*l:L' | head -1 | xargs -I{} redis-cli -s "$SOCK" PTTL {})
[ "$pttl" -gt 5000 ] || fail "extend did not set the TTL ($pttl)"
err=$("$CACHET" lock extend L "$wrong" --ttl 1000 2>&1 >/dev/null; echo "exit=$?")
case "$err" in *"another owner"*exit=1) ;; *) fail "extend by a wrong token: $err" ;; esac
expect_exit 0 "$CACHET" lock release L "$token"
err=$("$CACHET" lock release L "$token" 2>&1 >/dev/null; echo "exit=$?")
case "$err" in *expired*exit=1) ;; *) fail "release after release: $err" ;; esac
expect_exit 1 "$CACHET" lock extend L "$token" --ttl 1000
expect_exit 2 "$CACHET" lock acquire L --ttl 0
expect_exit 2 "$CACHET" lock acquire L
expect_exit 2 "$CACHET" lock extend L "$token" --ttl 0
expect_exit 2 "$CACHET" lock frobnicate L
json=$("$CACHET" lock acquire L --ttl 5000 --json) || fail "lock acquire --json"
echo "$json" | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["acquired"] is True and len(d["token"]) == 32 and d["fence"] > '"$fence"', d' ||
  fail "lock acquire --json: $json"
# A waiter gets the lock once the holder's TTL runs out.
"$CACHET" lock acquire W --ttl 300 >/dev/null || fail "acquire W"
expect_exit 0 "$CACHET" lock acquire W --ttl 1000 --wait 10000
"$CACHET" lock --help | grep -q "another owner" || fail "lock --help"

# ---- health and stats ----------------------------------------------------
"$CACHET" health --json >"$WORK/h.json" || fail "health exited $?"
python3 -m json.tool "$WORK/h.json" >/dev/null || fail "health --json is not JSON"
# Every script loaded the way the registry does (SCRIPT LOAD of the exact
# bytes): health reports them present.
for f in "$LUA_DIR"/*.lua; do
  sha=$(rcli -x SCRIPT LOAD <"$f" 2>&1)
  [[ "$sha" =~ ^[0-9a-f]{40}$ ]] || fail "SCRIPT LOAD of $(basename "$f"): $sha"
done
"$CACHET" health --json >"$WORK/h.json" || fail "health exited $?"
python3 - "$WORK/h.json" <<'EOF' || fail "health does not report the scripts present: $(cat "$WORK/h.json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["healthy"] is True and d["scripts_present"] is True, d
assert d["scripts_loaded"] == d["scripts_total"] > 0, d
assert d["maxmemory_policy"] == "noeviction" and d["policy_warning"] is False, d
EOF
rcli SCRIPT FLUSH >/dev/null
"$CACHET" health --json >"$WORK/h.json" || fail "health exited $? after SCRIPT FLUSH"
python3 - "$WORK/h.json" <<'EOF' || fail "health after SCRIPT FLUSH: $(cat "$WORK/h.json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["scripts_loaded"] == 0 and d["scripts_present"] is False, d
assert "script cache" in d["message"], d
EOF
# The next operation reloads what it uses (a tagged set runs set_tags; an
# untagged one is a plain SET and needs no script).
"$CACHET" set again v --tag t || fail "set --tag after SCRIPT FLUSH"
"$CACHET" lock acquire R --ttl 1000 >/dev/null || fail "lock after SCRIPT FLUSH"
"$CACHET" health --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["scripts_loaded"] == 2, d' || fail "scripts not reloaded on use"
rcli CONFIG SET maxmemory-policy allkeys-lru >/dev/null
expect_exit 3 "$CACHET" health
"$CACHET" health --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["healthy"] is False and d["policy_warning"] is True, d' || fail "allkeys-lru not reported"
rcli CONFIG SET maxmemory-policy noeviction >/dev/null
expect_exit 0 "$CACHET" health

"$CACHET" stats --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert "hits" in d["process"] and "ECONN" in d["process"]["errors"], d
assert d["server"]["connected_clients"] >= 1, d' || fail "stats --json"
"$CACHET" stats | grep -q "^keyspace_hits" || fail "stats text"
"$CACHET" stats --prometheus | grep -q "^cachet_hits_total 0" || fail "stats --prometheus"
expect_exit 2 "$CACHET" stats --json --prometheus

# The near cache: its counters are listed, and health says whether its
# invalidation feed is up.
"$CACHET" stats --json | python3 -c '
import json, sys
d = json.load(sys.stdin)["process"]
for k in ("near_hits", "near_misses", "near_invalidations", "near_flushes", "near_bytes"):
    assert d[k] == 0, (k, d)' || fail "stats --json: near counters"
CACHET_NEAR_CACHE_BYTES=1048576 "$CACHET" health --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["near_cache"] is True and d["tracking"] is True and d["healthy"] is True, d' || fail "health with a near cache"
"$CACHET" health --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["near_cache"] is False and d["tracking"] is False, d' || fail "health without a near cache"
CACHET_NEAR_CACHE_BYTES=1048576 "$CACHET" health | grep -q "^near_cache  *on, tracking active" || fail "health text: near cache"

# With no server, health and stats exit 3, and health --json is still JSON.
port=$(free_port)
out=$(CACHET_URL="redis://127.0.0.1:$port" "$CACHET" health --json 2>/dev/null; echo "exit=$?")
case "$out" in *exit=3) ;; *) fail "health with no server: $out" ;; esac
echo "${out%exit=3}" | python3 -m json.tool >/dev/null || fail "health --json with no server"
expect_exit 3 env CACHET_URL="redis://127.0.0.1:$port" "$CACHET" stats
echo "ok"
