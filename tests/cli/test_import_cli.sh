#!/usr/bin/env bash
# cachet import: bulk loading through the batch API, bad lines reported by
# number, exit codes, and 200k tagged lines (the time is printed, never
# asserted).
. "$(dirname "$0")/lib.sh"
start_server

expect_exit 0 "$CACHET" import --help
expect_exit 2 "$CACHET" import --bogus </dev/null

# 200k tagged lines with TTLs.
n=200000
awk -v n=$n 'BEGIN { for (i = 0; i < n; i++)
  printf "key%d\tvalue-%d\t600000\tall,mod%d\n", i, i, i % 10 }' >"$WORK/big.tsv"
t0=$(date +%s%N)
out=$("$CACHET" import --json <"$WORK/big.tsv") || fail "import of $n lines exited $?"
t1=$(date +%s%N)
echo "import of $n tagged lines: $(((t1 - t0) / 1000000)) ms" >&2
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d=={"loaded":200000,"bad_lines":0,"failed":0}, d' "$out" ||
  fail "import --json printed '$out'"
for i in 0 1 77777 123456 199999; do
  [ "$("$CACHET" get "key$i")" = "value-$i" ] || fail "key$i after import"
done
ttl=$("$CACHET" ttl key5)
[ "$ttl" -gt 0 ] && [ "$ttl" -le 600000 ] || fail "ttl of an imported key: '$ttl'"
# The tags went in with the values: the index of mod3 in key3's bucket
# holds key3, and (when the CLI has it) evicting mod3 removes it.
members=$(rcli --scan --pattern 'cachet:{*}t:mod3' | while read -r k; do rcli zcard "$k"; done |
  awk '{ s += $1 } END { print s }')
[ "$members" = "20000" ] || fail "tag mod3 has $members members, expected 20000"

# Plain output, no TTL, no tags, a blank line, CRLF.
printf 'a\t1\r\nb\t2\n\nc\t\n' | "$CACHET" import >"$WORK/out" || fail "small import exited $?"
[ "$(cat "$WORK/out")" = "loaded 3" ] || fail "plain output: $(cat "$WORK/out")"
[ "$("$CACHET" get a)" = "1" ] || fail "CR not stripped"
[ "$("$CACHET" ttl b)" = "-1" ] || fail "no TTL means none"
expect_exit 0 "$CACHET" get c

# Bad lines are reported by number and skipped; the rest load; exit 2.
printf 'good1\tv1\nno-tab-here\ngood2\tv2\tabc\n\tempty-key\ngood3\tv3\t10\ta,,b\ngood4\tv4\t0\tx,y\nf1\tf2\tf3\tf4\tf5\n' |
  "$CACHET" import 2>"$WORK/err" >"$WORK/out"
code=$?
[ "$code" -eq 2 ] || fail "bad lines: exit $code, expected 2"
grep -q '^cachet import: line 2: no TAB' "$WORK/err" || fail "line 2 not reported: $(cat "$WORK/err")"
grep -q '^cachet import: line 3: TTL "abc" is not a number' "$WORK/err" || fail "line 3 not reported"
grep -q '^cachet import: line 4: .*empty' "$WORK/err" || fail "line 4 not reported"
grep -q '^cachet import: line 5: empty tag' "$WORK/err" || fail "line 5 not reported"
grep -q '^cachet import: line 7: more than 4' "$WORK/err" || fail "line 7 not reported"
[ "$(cat "$WORK/out")" = "loaded 2" ] || fail "bad-lines output: $(cat "$WORK/out")"
[ "$("$CACHET" get good4)" = "v4" ] || fail "good line after bad ones"
expect_exit 1 "$CACHET" get good2

# No server: exit 3 with a message.
printf 'k\tv\n' | CACHET_URL="unix://$WORK/nope.sock" "$CACHET" import 2>"$WORK/err" >/dev/null
code=$?
[ "$code" -eq 3 ] || fail "no server: exit $code, expected 3"
grep -q 'connection error' "$WORK/err" || fail "no server: $(cat "$WORK/err")"
echo "ok"
