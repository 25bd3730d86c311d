#!/usr/bin/env bash
# Issue 3's acceptance through the CLI: a value is never trusted just because
# it is in Redis.
. "$(dirname "$0")/lib.sh"
start_server

vkey() { rcli --scan --pattern "cachet:{??}v:$1"; }

# keygen prints ID:BASE64 of a 32-byte key; ids are honoured.
k1=$("$CACHET" keygen --id 1) || fail "keygen"
k2=$("$CACHET" keygen --id 2) || fail "keygen --id 2"
[[ "$k1" =~ ^1:[A-Za-z0-9+/]{43}=$ ]] || fail "keygen format: $k1"
[[ "$k2" =~ ^2: ]] || fail "keygen --id 2: $k2"
[ "$k1" != "$("$CACHET" keygen --id 1)" ] || fail "keygen is not random"
expect_exit 2 "$CACHET" keygen --id 0

export CACHET_KEYS="$k1"
"$CACHET" set a hello || fail "sealed set"
[ "$("$CACHET" get a)" = "hello" ] || fail "sealed get"
"$CACHET" inspect a | grep -q "mac: *ok" || fail "inspect mac ok"
"$CACHET" inspect a --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["mac_status"]=="ok" and d["key_id"]==1, d' ||
  fail "inspect --json"
"$CACHET" inspect a | grep -q "${k1#1:}" && fail "inspect printed key material"

# A byte changed in place: integrity error, exit 4, never a hit or a miss.
"$CACHET" set b hello
rcli SETRANGE "$(vkey b)" 30 X >/dev/null
expect_exit 4 "$CACHET" get b

# One key's stored value copied onto another's: exit 4.
"$CACHET" set c one
"$CACHET" set d two
rcli COPY "$(vkey c)" "$(vkey d)" REPLACE >/dev/null
expect_exit 4 "$CACHET" get d
[ "$("$CACHET" get c)" = "one" ] || fail "the original still reads"

# A value written by redis-cli SET: exit 4 with and without a keyring.
rcli SET "cachet:{00}v:zz" raw >/dev/null
"$CACHET" set e x
rcli SET "$(vkey e)" "plain bytes" >/dev/null
expect_exit 4 "$CACHET" get e
CACHET_KEYS= expect_exit 4 "$CACHET" get e

# An unsealed value is refused with a keyring (unless the migration switch).
CACHET_KEYS= "$CACHET" set f unsealed
expect_exit 4 "$CACHET" get f
[ "$(CACHET_ACCEPT_UNSEALED=1 "$CACHET" get f)" = "unsealed" ] || fail "accept unsealed"
# A sealed value read without a keyring is refused too.
CACHET_KEYS= expect_exit 4 "$CACHET" get a

# Rotation: write with key 2; {2,1} reads it; {1} alone cannot.
CACHET_KEYS="$k2,$k1" "$CACHET" set r rotated
[ "$(CACHET_KEYS="$k2,$k1" "$CACHET" get r)" = "rotated" ] || fail "rotation read"
[ "$(CACHET_KEYS="$k2,$k1" "$CACHET" get a)" = "hello" ] || fail "old key still reads"
CACHET_KEYS="$k1" expect_exit 4 "$CACHET" get r

# Encryption: the payload is not visible in Redis.
CACHET_ENCRYPT=1 "$CACHET" set s top-secret-payload
[ "$(CACHET_ENCRYPT=1 "$CACHET" get s)" = "top-secret-payload" ] || fail "encrypted round trip"
rcli GET "$(vkey s)" | grep -q top-secret && fail "encrypted payload visible in Redis"
"$CACHET" inspect s | grep -q encrypted || fail "inspect shows encrypted"

# A keys file works like CACHET_KEYS; bad keyrings exit 2 and never echo keys.
printf '%s\n' "$k1" >"$WORK/keys"
chmod 600 "$WORK/keys"
[ "$(CACHET_KEYS= CACHET_KEYS_FILE="$WORK/keys" "$CACHET" get a)" = "hello" ] || fail "keys file"
err=$(CACHET_KEYS="1:notbase64!" "$CACHET" get a 2>&1; echo "exit=$?")
case "$err" in *exit=2) ;; *) fail "bad keyring: $err" ;; esac

# inspect --file works offline on raw bytes.
redis-cli -s "$SOCK" --raw GET "$(vkey a)" | head -c -1 >"$WORK/blob"
"$CACHET" inspect --file "$WORK/blob" --redis-key "$(vkey a)" | grep -q "mac: *ok" ||
  fail "inspect --file"
"$CACHET" inspect --file "$WORK/blob" --redis-key "cachet:{00}v:other" | grep -q "mac: *bad" ||
  fail "inspect --file with another key name"
echo ok
