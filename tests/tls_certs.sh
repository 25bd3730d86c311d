#!/bin/sh
# Throwaway TLS material for the tests, made with the openssl CLI in DIR:
#   ca.crt/.key         the test CA
#   server.crt/.key     signed by it, for 127.0.0.1, ::1 and localhost
#   client.crt/.key     signed by it, a client of mutual TLS
#   other-ca.crt        a CA that signed nothing here
#   expired.crt/.key    like server, but it expired yesterday
# EC P-256 keys: fast to make, and nothing here needs to last.
set -eu
d=${1:?usage: tls_certs.sh DIR}
cd "$d"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ca() { # NAME CN
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -out "$1.crt" -days 2 -subj "/CN=$2" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign,cRLSign 2>/dev/null
}
leaf() { # NAME CN DAYS SAN
  key "$1.key"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\n' "$4" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
    -out "$1.crt" -days "$3" -extfile "$1.ext" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
ca ca "cachet test CA"
ca other-ca "cachet other CA"
leaf server localhost 2 "IP:127.0.0.1,IP:::1,DNS:localhost"
leaf client "cachet test client" 2 "DNS:client.invalid"
leaf expired localhost -1 "IP:127.0.0.1,DNS:localhost"
chmod 600 ./*.key
