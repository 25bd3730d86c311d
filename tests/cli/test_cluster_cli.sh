#!/usr/bin/env bash
# Issue 9's acceptance through the CLI: the tag, clear, lock and fetch checks
# of the single-server tests, against a 3-master cluster named by a
# redis+cluster:// URL.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/cluster_lib.sh"
start_cluster 3
URL=$CACHET_URL
unset CACHET_URL
C() { "$CACHET" --url "$URL" "$@"; }

# ---- tags ------------------------------------------------------------------
C set a 1 --tag x || fail "set a"
C set b 2 --tag x --tag y || fail "set b"
C set c 3 --tag y || fail "set c"
for i in $(seq 1 60); do C set "n$i" "$i" --tag many >/dev/null || fail "set n$i"; done
out=$(C evict-tags x) || fail "evict-tags x exited $?"
[ "$out" = "2" ] || fail "evict-tags x printed '$out', want 2"
expect_exit 1 C get a
expect_exit 1 C get b
[ "$(C get c)" = "3" ] || fail "get c after evicting x"
[ "$(C evict-tags many)" = "60" ] || fail "evict-tags many (spread over masters)"
C set d old --tag t1
C set d new --tag t2
[ "$(C evict-tags t1)" = "0" ] || fail "evict-tags t1"
[ "$(C get d)" = "new" ] || fail "d is not 'new' after evicting t1"

# Every master forgets its scripts; the next tagged write reloads them.
for p in $(cluster_masters); do redis-cli -p "$p" SCRIPT FLUSH >/dev/null; done
C set e 5 --tag z || fail "set --tag after SCRIPT FLUSH"
[ "$(C evict-tags z)" = "1" ] || fail "evict-tags after SCRIPT FLUSH"

C set short 1 --ttl 50 --tag p1
C set long 1 --tag p1
sleep 0.2
out=$(C prune) || fail "prune exited $?"
[[ "$out" =~ ^[0-9]+$ ]] || fail "prune printed '$out'"
[ "$(C prune --json)" = '{"pruned":0}' ] || fail "second prune"

# ---- clear: only this prefix, on every master ----------------------------
ccli SET p-foreign keep >/dev/null
ccli SET other:1 keep >/dev/null
ccli SET 'pX{00}v:foo' keep >/dev/null
for i in $(seq 1 30); do C --prefix 'p*' set "k$i" v --tag t >/dev/null; done
out=$(C --prefix 'p*' clear --dry-run) || fail "clear --dry-run"
[ "$out" = "30" ] || fail "clear --dry-run printed '$out', want 30"
out=$(C --prefix 'p*' clear --json) || fail "clear"
[ "$out" = '{"removed":30,"dry_run":false}' ] || fail "clear printed '$out'"
expect_exit 1 C --prefix 'p*' get k1
for k in p-foreign other:1 'pX{00}v:foo'; do
  [ "$(ccli GET "$k")" = "keep" ] || fail "clear removed foreign key $k"
done
[ "$(C get c)" = "3" ] || fail "clear under p* removed cachet:c"

# ---- locks -----------------------------------------------------------------
out=$(C lock acquire L --ttl 5000) || fail "lock acquire exited $?"
[[ "$out" =~ ^[0-9a-f]{32}\ [0-9]+$ ]] || fail "lock acquire printed '$out'"
token=${out%% *}
expect_exit 1 C lock acquire L --ttl 5000
wrong=0123456789abcdef0123456789abcdef
expect_exit 1 C lock release L "$wrong"
expect_exit 0 C lock extend L "$token" --ttl 60000
expect_exit 0 C lock release L "$token"
expect_exit 1 C lock release L "$token"
C lock acquire W --ttl 300 >/dev/null || fail "acquire W"
expect_exit 0 C lock acquire W --ttl 1000 --wait 10000

# ---- fetch: concurrent callers on a cold key run the command once ---------
runs="$WORK/runs"
: >"$runs"
pids=()
for i in $(seq 1 10); do
  C fetch k --ttl 60000 -- sh -c "echo run >> '$runs'; sleep 1; echo v" \
    >"$WORK/out.$i" 2>"$WORK/err.$i" &
  pids+=($!)
done
for i in $(seq 1 10); do
  wait "${pids[$((i - 1))]}" || fail "fetch $i exited $?: $(cat "$WORK/err.$i")"
  [ "$(cat "$WORK/out.$i")" = "v" ] || fail "fetch $i printed '$(cat "$WORK/out.$i")'"
done
[ "$(wc -l <"$runs")" -eq 1 ] || fail "the command ran $(wc -l <"$runs") times"
expect_exit 7 C fetch bad -- sh -c 'echo partial; exit 7'
expect_exit 1 C get bad
[ "$(C fetch bad -- echo good)" = "good" ] || fail "fetch after a failure"

# ---- health over every master ---------------------------------------------
C health --json >"$WORK/h.json" || fail "health exited $?: $(cat "$WORK/h.json")"
python3 - "$WORK/h.json" <<'PY' || fail "health: $(cat "$WORK/h.json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["healthy"] is True and d["maxmemory_policy"] == "noeviction", d
PY
redis-cli -p "${CL_PORTS[1]}" CONFIG SET maxmemory-policy allkeys-lru >/dev/null
expect_exit 3 C health
redis-cli -p "${CL_PORTS[1]}" CONFIG SET maxmemory-policy noeviction >/dev/null
expect_exit 0 C health

# ---- stats summed over every master -----------------------------------------
# Each master holds a share of the keys: the server figures must cover all
# three (one master alone would be about a third of the memory and clients).
C stats --json >"$WORK/s.json" || fail "stats exited $?: $(cat "$WORK/s.json")"
python3 - "$WORK/s.json" "${CL_PORTS[@]}" <<'PY' || fail "stats: $(cat "$WORK/s.json")"
import json, subprocess, sys
d = json.load(open(sys.argv[1]))["server"]
assert d["masters"] == 3, d
mem = 0
for port in sys.argv[2:]:
    info = subprocess.run(["redis-cli", "-p", port, "INFO", "replication"],
                          capture_output=True, text=True).stdout
    if "role:master" in info:
        m = subprocess.run(["redis-cli", "-p", port, "INFO", "memory"],
                           capture_output=True, text=True).stdout
        mem += int(m.split("used_memory:")[1].split()[0])
# Memory moves a little between the two reads; a single master is ~1/3.
assert 0.8 * mem <= d["used_memory"] <= 1.2 * mem, (d["used_memory"], mem)
assert d["connected_clients"] >= 3, d
PY
C stats | grep -q "^masters  *3$" || fail "stats text: $(C stats)"
echo "ok"
