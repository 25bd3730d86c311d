#!/usr/bin/env bash
# Issue 2's acceptance through the CLI: set/get/del/ttl, exit codes,
# configuration errors and an absent server.
. "$(dirname "$0")/lib.sh"
start_server

out=$("$CACHET" set k v --ttl 5000) || fail "set exited $?"
[ -z "$out" ] || fail "set printed '$out'"
[ "$("$CACHET" get k)" = "v" ] || fail "get k did not print v"
ttl=$("$CACHET" ttl k)
[ "$ttl" -gt 0 ] && [ "$ttl" -le 5000 ] || fail "ttl printed '$ttl'"
expect_exit 0 "$CACHET" del k
expect_exit 1 "$CACHET" get k
expect_exit 1 "$CACHET" del k
expect_exit 1 "$CACHET" ttl k

# VALUE "-" reads stdin, binary-safe.
printf 'a\0b\nc' | "$CACHET" set bin - || fail "set from stdin"
"$CACHET" get bin | cmp -s - <(printf 'a\0b\nc') || fail "binary round trip"

# No expiry prints -1.
"$CACHET" set forever x
[ "$("$CACHET" ttl forever)" = "-1" ] || fail "ttl of a persistent key"

# --prefix scopes keys; --url overrides the environment.
"$CACHET" --prefix other: set k2 v2
expect_exit 1 "$CACHET" get k2
[ "$("$CACHET" --prefix other: get k2)" = "v2" ] || fail "--prefix"
[ "$(CACHET_URL=redis://127.0.0.1:1 "$CACHET" --url "unix://$SOCK" --prefix other: get k2)" = "v2" ] ||
  fail "--url overrides CACHET_URL"

# JSON output.
"$CACHET" get --json forever | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["value"]=="x", d' ||
  fail "get --json"

# Usage errors and invalid configuration exit 2 and name the variable.
expect_exit 2 "$CACHET" set onlykey
expect_exit 2 "$CACHET" set k v --ttl -5
expect_exit 2 "$CACHET" nosuchcommand
err=$(CACHET_URL= CACHET_PORT=abc "$CACHET" get k 2>&1 >/dev/null; echo "exit=$?")
case "$err" in *CACHET_PORT*exit=2) ;; *) fail "bad CACHET_PORT: $err" ;; esac
err=$(env -u CACHET_URL CACHET_DB=-1 "$CACHET" get k 2>&1 >/dev/null; echo "exit=$?")
case "$err" in *CACHET_DB*exit=2) ;; *) fail "bad CACHET_DB: $err" ;; esac
err=$(CACHET_TIMEOUT_MS=0 "$CACHET" get k 2>&1 >/dev/null; echo "exit=$?")
case "$err" in *CACHET_TIMEOUT_MS*exit=2) ;; *) fail "bad CACHET_TIMEOUT_MS: $err" ;; esac
err=$(CACHET_TLS_CA_FILE=$WORK/no-such-ca.pem "$CACHET" --url rediss://localhost get k 2>&1 >/dev/null; echo "exit=$?")
case "$err" in *"TLS CA file"*no-such-ca.pem*exit=2) ;; *) fail "rediss with a missing CA file: $err" ;; esac

# Every command answers --help with exit 0 and mentions the exit codes.
"$CACHET" --help | grep -q "integrity or format error" || fail "--help exit codes"
for cmd in $("$CACHET" --help | awk '/^Commands:/{f=1;next} f&&/^  [a-z]/{print $1} /^$/{if(f)exit}'); do
  "$CACHET" "$cmd" --help >/dev/null || fail "$cmd --help"
done

# With no server listening, get exits 3 with a message on stderr.
port=$(free_port)
err=$(CACHET_URL="redis://127.0.0.1:$port" "$CACHET" get k 2>&1 >/dev/null; echo "exit=$?")
case "$err" in cachet:*exit=3) ;; *) fail "no server: $err" ;; esac
echo "ok"
