#!/usr/bin/env bash
# TLS from the CLI: rediss:// with --tls-ca works; without it, or with
# another CA, certificate verification fails with exit 3 and says so;
# --insecure works and warns; mutual TLS needs --tls-cert and --tls-key;
# TLS settings without TLS are a configuration error (exit 2).
. "$(dirname "$0")/lib.sh"

CERTS="$WORK/certs"
mkdir -p "$CERTS"
sh "$(dirname "$0")/../tls_certs.sh" "$CERTS" || fail "making the test certificates"
TLS_PORT=$(free_port)
start_server --tls-port "$TLS_PORT" --tls-cert-file "$CERTS/server.crt" \
  --tls-key-file "$CERTS/server.key" --tls-ca-cert-file "$CERTS/ca.crt" \
  --tls-auth-clients optional
unset CACHET_URL
URL="rediss://127.0.0.1:$TLS_PORT"

"$CACHET" --url "$URL" --tls-ca "$CERTS/ca.crt" set k v || fail "set over TLS"
[ "$("$CACHET" --url "$URL" --tls-ca "$CERTS/ca.crt" get k)" = v ] || fail "get over TLS"
# The same through the environment.
[ "$(CACHET_URL=$URL CACHET_TLS_CA_FILE=$CERTS/ca.crt "$CACHET" get k)" = v ] ||
  fail "get over TLS, configured by the environment"

# Without the CA (the system trust store does not know it), and with
# another CA: exit 3, and the message names certificate verification.
expect_refused() { # why... -- args
  local why=$1
  shift
  "$CACHET" "$@" get k >/dev/null 2>"$WORK/err"
  local code=$?
  [ "$code" -eq 3 ] || fail "$*: exit $code, expected 3 ($(cat "$WORK/err"))"
  grep -q "$why" "$WORK/err" || fail "$*: $(cat "$WORK/err")"
}
expect_refused "certificate verification failed" --url "$URL"
expect_refused "certificate verification failed" --url "$URL" --tls-ca "$CERTS/other-ca.crt"
expect_refused "hostname mismatch" --url "$URL" --tls-ca "$CERTS/ca.crt" \
  --tls-server-name elsewhere.example

# --insecure connects, and says loudly that nothing was verified.
[ "$("$CACHET" --url "$URL" --insecure get k 2>"$WORK/err")" = v ] || fail "--insecure"
grep -q "without verification" "$WORK/err" || fail "--insecure gave no warning"
"$CACHET" --url "$URL" --insecure health --json 2>/dev/null | grep -q tls_insecure ||
  fail "health does not mention --insecure"

# A client certificate (the server accepts one, optionally).
[ "$("$CACHET" --url "$URL" --tls-ca "$CERTS/ca.crt" --tls-cert "$CERTS/client.crt" \
  --tls-key "$CERTS/client.key" get k)" = v ] || fail "get with a client certificate"

# Configuration refusals: exit 2.
"$CACHET" --tls-ca "$CERTS/ca.crt" get k >/dev/null 2>"$WORK/err"
[ $? -eq 2 ] || fail "--tls-ca without TLS: $(cat "$WORK/err")"
grep -q "TLS is off" "$WORK/err" || fail "--tls-ca without TLS: $(cat "$WORK/err")"
"$CACHET" --url "$URL" --tls-cert "$CERTS/client.crt" get k >/dev/null 2>"$WORK/err"
[ $? -eq 2 ] || fail "a certificate without its key: $(cat "$WORK/err")"
"$CACHET" --url "$URL" --tls-ca "$WORK/none.pem" get k >/dev/null 2>"$WORK/err"
[ $? -eq 2 ] || fail "a CA file that does not exist: $(cat "$WORK/err")"

echo "ok"
