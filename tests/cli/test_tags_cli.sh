#!/usr/bin/env bash
# Issue 4's acceptance through the CLI: evict-tags, clear scoped to an
# escaped prefix, prune, and NOSCRIPT recovery.
. "$(dirname "$0")/lib.sh"
start_server

"$CACHET" set a 1 --tag x || fail "set a"
"$CACHET" set b 2 --tag x --tag y || fail "set b"
"$CACHET" set c 3 --tag y || fail "set c"
out=$("$CACHET" evict-tags x) || fail "evict-tags x exited $?"
[ "$out" = "2" ] || fail "evict-tags x printed '$out', want 2"
expect_exit 1 "$CACHET" get a
expect_exit 1 "$CACHET" get b
[ "$("$CACHET" get c)" = "3" ] || fail "get c after evicting x"
[ "$("$CACHET" evict-tags nobody --json)" = '{"evicted":0}' ] ||
  fail "evict-tags --json of an unused tag"

# An overwrite drops the old tag: evicting it leaves the new value.
"$CACHET" set d old --tag t1
"$CACHET" set d new --tag t2
out=$("$CACHET" evict-tags t1) || fail "evict-tags t1"
[ "$out" = "0" ] || fail "evict-tags t1 printed '$out', want 0"
[ "$("$CACHET" get d)" = "new" ] || fail "d is not 'new' after evicting t1"

# After SCRIPT FLUSH the next tagged write still succeeds.
rcli SCRIPT FLUSH >/dev/null
"$CACHET" set e 5 --tag z || fail "set --tag after SCRIPT FLUSH"
[ "$("$CACHET" evict-tags z)" = "1" ] || fail "evict-tags after SCRIPT FLUSH"

# prune prints a count; expired members are what it finds.
"$CACHET" set short 1 --ttl 50 --tag p1
"$CACHET" set long 1 --tag p1
sleep 0.2
out=$("$CACHET" prune) || fail "prune exited $?"
[[ "$out" =~ ^[0-9]+$ ]] || fail "prune printed '$out'"
[ "$("$CACHET" prune --json)" = '{"pruned":0}' ] || fail "second prune"

# clear with a glob prefix: only that namespace's entries go.
rcli SET p-foreign keep >/dev/null
rcli SET other:1 keep >/dev/null
rcli SET 'pX{00}v:foo' keep >/dev/null
"$CACHET" --prefix 'p*' set k1 v --tag t || fail "set under p*"
"$CACHET" --prefix 'p*' set k2 v
out=$("$CACHET" --prefix 'p*' clear --dry-run) || fail "clear --dry-run"
[ "$out" = "2" ] || fail "clear --dry-run printed '$out', want 2"
[ "$("$CACHET" --prefix 'p*' get k1)" = "v" ] || fail "dry run removed k1"
out=$("$CACHET" --prefix 'p*' clear --json) || fail "clear"
[ "$out" = '{"removed":2,"dry_run":false}' ] || fail "clear printed '$out'"
expect_exit 1 "$CACHET" --prefix 'p*' get k1
for k in p-foreign other:1 'pX{00}v:foo'; do
  [ "$(rcli GET "$k")" = "keep" ] || fail "clear removed foreign key $k"
done
# The default prefix was not touched either.
[ "$("$CACHET" get c)" = "3" ] || fail "clear under p* removed cachet:c"

# Usage errors and help.
expect_exit 2 "$CACHET" evict-tags
expect_exit 2 "$CACHET" clear --bogus
expect_exit 2 "$CACHET" prune extra
for cmd in evict-tags clear prune; do
  "$CACHET" "$cmd" --help | grep -q "^Exit:" || fail "$cmd --help"
done
echo "ok"
