#!/usr/bin/env bash
# What an adversarial user finds first: endless inputs, non-ASCII and binary
# bytes in --json, keys files others can read, configuration refusals,
# arguments that look like options, a server out of memory, a paused
# server during evict-tags.
. "$(dirname "$0")/lib.sh"

# A strict JSON check: the output is valid UTF-8 and parses as one object
# (no NaN or Infinity); the rest of the arguments are Python expressions
# over it, `o`, that must hold.
json_ok() {
  python3 - "$@" <<'EOF' || fail "JSON check failed: $*"
import base64, json, sys
raw = open(sys.argv[1], "rb").read()
def no_constants(c):
    raise ValueError("not JSON: " + c)
o = json.loads(raw.decode("utf-8", "strict"), parse_constant=no_constants)
assert isinstance(o, dict), o
b64 = lambda s: base64.b64decode(s, validate=True)
for expr in sys.argv[2:]:
    assert eval(expr), "%s is false for %r" % (expr, o)
EOF
}

start_server
export CACHET_MAX_VALUE_SIZE=1048576

# An unbuilt ASan binary may not run under a memory limit; elsewhere a
# limit turns an unbounded read into a visible failure instead of a
# machine running out of memory.
limit_memory() {
  if ldd "$CACHET" 2>/dev/null | grep -q libasan; then
    "$@"
  else
    (ulimit -v 2000000 && "$@")
  fi
}

# ---- 1. Inputs are read up to the limit, never past it -----------------
yes | limit_memory timeout 20 "$CACHET" set endless - 2>"$WORK/err"
code=${PIPESTATUS[1]}
[ "$code" -eq 2 ] || fail "set from endless stdin: exit $code, expected 2"
grep -q 'larger than max_value_size (1048576 bytes); nothing was stored' "$WORK/err" ||
  fail "set from endless stdin: $(cat "$WORK/err")"
expect_exit 1 "$CACHET" get endless
head -c 1048576 /dev/zero | "$CACHET" set exact - || fail "a value of exactly the limit"
[ "$("$CACHET" get exact | wc -c)" -eq 1048576 ] || fail "the value at the limit"

limit_memory timeout 20 "$CACHET" inspect --file /dev/zero 2>"$WORK/err"
code=$?
[ "$code" -eq 2 ] || fail "inspect --file /dev/zero: exit $code, expected 2"
grep -q 'is larger than 1052672 bytes (max_value_size + 4 KiB)' "$WORK/err" ||
  fail "inspect --file /dev/zero: $(cat "$WORK/err")"

# A loader that never stops writing is stopped, nothing is cached, and the
# message blames the size, not the loader.
limit_memory timeout 20 "$CACHET" fetch endless -- sh -c 'exec yes cachet-endless-loader' \
  >/dev/null 2>"$WORK/err"
code=$?
[ "$code" -eq 3 ] || fail "fetch with an endless loader: exit $code, expected 3"
grep -q 'wrote more than max_value_size (1048576 bytes); it was stopped and nothing was cached' \
  "$WORK/err" || fail "fetch with an endless loader: $(cat "$WORK/err")"
! pgrep -f 'yes cachet-endless-loader' >/dev/null || fail "the endless loader still runs"
expect_exit 1 "$CACHET" get endless
[ "$(rcli keys '*s:endless')" = "" ] || fail "fetch left its stampede lock"
unset CACHET_MAX_VALUE_SIZE

# ---- 2. --json writes UTF-8 as itself and binary as base64 --------------
"$CACHET" set 'ключ' 'значение ✓ "q" \ tab	end'
"$CACHET" get --json 'ключ' >"$WORK/j"
json_ok "$WORK/j" 'o["key"] == "ключ"' \
  'o["value"] == "значение ✓ \"q\" \\ tab\tend"' 'o["hit"] is True'
grep -q 'ключ' "$WORK/j" || fail "UTF-8 is escaped, not written as itself"
printf '\377\000\376A\n' | "$CACHET" set bin -
"$CACHET" get --json bin >"$WORK/j"
json_ok "$WORK/j" 'b64(o["value_b64"]) == b"\xff\x00\xfeA\n"' '"value" not in o'
printf 'a\001\002\037z' | "$CACHET" set ctl -
"$CACHET" get --json ctl >"$WORK/j"
json_ok "$WORK/j" 'o["value"] == "a\x01\x02\x1fz"'
badkey=$(printf 'k\377')
"$CACHET" set "$badkey" v
"$CACHET" get --json "$badkey" >"$WORK/j"
json_ok "$WORK/j" 'b64(o["key_b64"]) == b"k\xff"' 'o["value"] == "v"'
expect_exit 1 "$CACHET" get --json "$(printf 'absent\377')" >"$WORK/j"
json_ok "$WORK/j" 'b64(o["key_b64"]) == b"absent\xff"' 'o["hit"] is False'
"$CACHET" fetch --json "$(printf 'f\303\251')" -- printf '\351t\351' >"$WORK/j"
json_ok "$WORK/j" 'o["key"] == "fé"' 'b64(o["value_b64"]) == b"\xe9t\xe9"'
"$CACHET" lock acquire --ttl 5000 --json "$(printf 'lock\377')" >"$WORK/j"
json_ok "$WORK/j" 'b64(o["name_b64"]) == b"lock\xff"' 'o["acquired"] is True'
"$CACHET" health --json >"$WORK/j"
json_ok "$WORK/j" 'o["healthy"] is True'
"$CACHET" stats --json >"$WORK/j"
json_ok "$WORK/j"

# ---- 3. A keys file others can read is refused, like an ssh key ---------
key=$("$CACHET" keygen --id 1)
printf '%s\n' "$key" >"$WORK/keys"
chmod 644 "$WORK/keys"
CACHET_KEYS_FILE=$WORK/keys "$CACHET" get a 2>"$WORK/err"
code=$?
[ "$code" -eq 2 ] || fail "a 0644 keys file: exit $code, expected 2"
grep -q "\"$WORK/keys\" has mode 0644: a keys file must not be readable" "$WORK/err" ||
  fail "a 0644 keys file: $(cat "$WORK/err")"
! grep -q "${key#*:}" "$WORK/err" || fail "the message shows the key"
chmod 640 "$WORK/keys"
expect_exit 2 env CACHET_KEYS_FILE="$WORK/keys" "$CACHET" get a
chmod 600 "$WORK/keys"
CACHET_KEYS_FILE=$WORK/keys "$CACHET" set sealed v || fail "a 0600 keys file"
[ "$(CACHET_KEYS_FILE=$WORK/keys "$CACHET" get sealed)" = v ] || fail "read with a 0600 keys file"
CACHET_KEYS='1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=' "$CACHET" get a 2>"$WORK/err"
code=$?
[ "$code" -eq 2 ] || fail "an all-zero key: exit $code, expected 2"
grep -q 'the key is all zero bytes' "$WORK/err" || fail "all-zero key: $(cat "$WORK/err")"

# ---- 4. Every refusal of configuration is exit 2 ------------------------
# (TLS works now: its settings without TLS, and a CA file OpenSSL cannot
# load, are the configuration refusals to check.)
expect_exit 2 env CACHET_TLS_CA_FILE=/etc/hosts "$CACHET" get a
expect_exit 2 env CACHET_URL=rediss://127.0.0.1:1 CACHET_TLS_CA_FILE="$WORK/none.pem" "$CACHET" get a
expect_exit 2 env CACHET_PORT=abc CACHET_URL= "$CACHET" get a
expect_exit 2 env CACHET_KEY_PREFIX='a{b' "$CACHET" get a

# ---- 5. "--" ends the options ------------------------------------------
"$CACHET" set -- -k dash || fail "set -- -k"
[ "$("$CACHET" get -- -k)" = dash ] || fail "get -- -k"
"$CACHET" set --ttl 60000 -- --json looks-like-an-option || fail "set -- --json"
[ "$("$CACHET" get -- --json)" = looks-like-an-option ] || fail "get -- --json"
expect_exit 0 "$CACHET" exists -- --json
"$CACHET" ttl -- --json >/dev/null || fail "ttl -- --json"
"$CACHET" set --tag -- tagged v || fail "a tag named --"
"$CACHET" set --tag --json tagged2 v || fail "a tag named --json"
[ "$("$CACHET" evict-tags -- --json)" = 1 ] || fail "evict-tags -- --json"
[ "$("$CACHET" evict-tags -- --)" = 1 ] || fail "evict-tags -- --"
expect_exit 0 "$CACHET" del -- --json
expect_exit 1 "$CACHET" get -- --json
"$CACHET" fetch --ttl 60000 -- --fetched -- echo loaded >/dev/null || fail "fetch -- KEY -- COMMAND"
[ "$("$CACHET" get -- --fetched)" = loaded ] || fail "fetch -- --fetched"
"$CACHET" lock acquire --ttl 5000 -- --lock >/dev/null || fail "lock acquire -- --lock"
expect_exit 0 "$CACHET" --prefix other: -- set x y
[ "$(rcli keys 'other:*' | wc -l)" = 1 ] || fail "global --"

# ---- 6. Memory pressure is degraded: exit 1, with a reason --------------
rcli config set maxmemory 1 >/dev/null
expect_exit 3 "$CACHET" set oom v
expect_exit 1 "$CACHET" health
"$CACHET" health --json >"$WORK/j"
code=$?
[ "$code" -eq 1 ] || fail "health --json when out of memory: exit $code"
json_ok "$WORK/j" 'o["healthy"] is True' 'o["degraded"] is True' \
  'o["maxmemory"] == 1' 'o["oom_rejections"] >= 1' \
  '"writes will fail with OOM" in o["reason"]'
rcli config set maxmemory 0 >/dev/null
expect_exit 0 "$CACHET" health
"$CACHET" health --json >"$WORK/j"
json_ok "$WORK/j" 'o["degraded"] is False' 'o["reason"] == ""'

# ---- 8. A timed-out eviction says so, as every other command ------------
"$CACHET" set --tag slow s1 v
kill -STOP "$SRV_PID"
CACHET_TIMEOUT_MS=300 "$CACHET" evict-tags slow 2>"$WORK/err"
code=$?
kill -CONT "$SRV_PID"
[ "$code" -eq 3 ] || fail "evict-tags on a paused server: exit $code"
grep -q 'no answer from the server within 300 ms' "$WORK/err" ||
  fail "evict-tags timeout message: $(cat "$WORK/err")"
echo "ok"
