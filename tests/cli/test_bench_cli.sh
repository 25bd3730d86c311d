#!/usr/bin/env bash
# cachet bench: runs every workload against its baseline and reports a ratio
# for each (numbers are printed, never asserted), and cleans up after itself.
. "$(dirname "$0")/lib.sh"

expect_exit 0 "$CACHET" bench --help
expect_exit 2 "$CACHET" bench --ops abc
expect_exit 2 "$CACHET" bench --only nosuchworkload

start_server
"$CACHET" bench --ops 2000 --json >"$WORK/out" 2>"$WORK/err" || fail "bench exited $?: $(cat "$WORK/err")"
python3 - "$WORK/out" <<'PY' || fail "bench --json: $(cat "$WORK/out")"
import json, sys
d = json.load(open(sys.argv[1]))
want = {"get_hit", "near_get_hit", "set", "near_set", "set_tags", "mget",
        "mset", "lock_cycle", "seal_open"}
assert set(d["workloads"]) == want, d["workloads"].keys()
for name, w in d["workloads"].items():
    assert w["ratio"] > 0 and w["cachet_ops_s"] > 0 and w["raw_ops_s"] > 0, (name, w)
PY
"$CACHET" bench --ops 2000 --only near_get_hit >"$WORK/out" || fail "bench --only near_get_hit exited $?"
grep -q 'get (hit, near cache)' "$WORK/out" || fail "no near cache row: $(cat "$WORK/out")"
cat "$WORK/out" >&2
[ "$(rcli dbsize)" = "0" ] || fail "bench left keys behind: $(rcli keys '*' | head)"

"$CACHET" bench --ops 500 --only get_hit,mget >"$WORK/out" || fail "bench --only exited $?"
grep -q 'get (hit)' "$WORK/out" || fail "text output: $(cat "$WORK/out")"
! grep -q '^set ' "$WORK/out" || fail "--only ran other workloads"
echo "ok"
