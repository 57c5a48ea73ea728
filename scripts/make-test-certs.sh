#!/usr/bin/env bash
# Makes the TLS files the output tests use, in directory $1, with the
# openssl CLI (Debian package `openssl`, installed by install-test-servers.sh):
#   ca.pem ca.key                 a private CA the system does not trust
#   server.pem server.key         for 127.0.0.1 and localhost, signed by the CA
#   wrong-host.pem wrong-host.key for wrong-host.invalid only, signed by the CA
#   client.pem client.key         a client certificate (mutual TLS), signed by the CA
# Keys are P-256, certificates valid for a day: nothing here is a secret.
set -euo pipefail
dir=${1:?usage: make-test-certs.sh DIR}
mkdir -p "$dir"
cd "$dir"

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

key ca.key
openssl req -x509 -new -key ca.key -out ca.pem -days 1 -subj "/CN=Alumet test CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

# leaf NAME SUBJECT_ALT_NAMES EXTENDED_KEY_USAGE
leaf() {
    key "$1.key"
    openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$1" 2>/dev/null
    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\n%s\n' \
        "$3" "${2:+subjectAltName=$2}" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
        -out "$1.pem" -days 1 -extfile "$1.ext" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}

leaf server "IP:127.0.0.1,DNS:localhost" serverAuth
leaf wrong-host "DNS:wrong-host.invalid" serverAuth
leaf client "" clientAuth
