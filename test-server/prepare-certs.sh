#!/usr/bin/env bash
# Generate the test PKI for the private broker into test-server/certs/:
#   ca.pem/ca.key          test CA
#   server.pem/server.key  server cert, SAN DNS:localhost + IP:127.0.0.1, serverAuth
#   client.pem/client.key  client cert, CN=carehare-client, clientAuth (EXTERNAL auth)
# RSA 2048 keys, PKCS#8 PEM, valid 10 years. Does nothing if all files exist.
set -euo pipefail

log() { printf 'prepare-certs.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cert_dir="$here/certs"
files=(ca.pem ca.key server.pem server.key client.pem client.key)

missing=0
for f in "${files[@]}"; do [[ -s "$cert_dir/$f" ]] || missing=1; done
((missing)) || exit 0

command -v openssl >/dev/null 2>&1 || die "openssl not found (run test-server/install.sh)"

log "generating test CA, server and client certificates in $cert_dir ..."
mkdir -p "$cert_dir"
work="$(mktemp -d "$cert_dir/.tmp.XXXXXX")"
trap 'rm -rf "$work"' EXIT
days=3650
ossl_log="$work/openssl.log"
ossl() {
    if ! openssl "$@" >>"$ossl_log" 2>&1; then
        cat "$ossl_log" >&2
        die "openssl $1 failed"
    fi
}
newkey() { ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1"; }

cat >"$work/ext.cnf" <<'CNF'
[req]
distinguished_name = req_dn
prompt = no
[req_dn]
CN = unused

[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer

[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
CNF

# CA (self-signed)
newkey "$work/ca.key"
ossl req -new -x509 -config "$work/ext.cnf" -key "$work/ca.key" -sha256 -days "$days" \
    -subj "/O=carehare tests/CN=carehare test CA" -extensions ca_ext \
    -set_serial "0x$(openssl rand -hex 16)" -out "$work/ca.pem"

# leaf certificates signed by the CA
sign_leaf() { # name cn extension-section
    local name="$1" cn="$2" ext="$3"
    newkey "$work/$name.key"
    ossl req -new -config "$work/ext.cnf" -key "$work/$name.key" -subj "/O=carehare tests/CN=$cn" -out "$work/$name.csr"
    ossl x509 -req -in "$work/$name.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -sha256 -days "$days" \
        -extfile "$work/ext.cnf" -extensions "$ext" -out "$work/$name.pem"
    ossl verify -CAfile "$work/ca.pem" -purpose "$4" "$work/$name.pem"
}
sign_leaf server localhost server_ext sslserver
sign_leaf client carehare-client client_ext sslclient

# Test material only: world-readable so the broker can read it whatever user it runs as.
chmod 0644 "$work"/*.pem "$work"/*.key
chmod 0755 "$cert_dir"
for f in "${files[@]}"; do mv -f "$work/$f" "$cert_dir/$f"; done
log "certificates ready in $cert_dir"
