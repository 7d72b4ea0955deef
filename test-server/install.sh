#!/usr/bin/env bash
# Install Debian's rabbitmq-server (and openssl) if missing, without letting the
# package start a system broker. Idempotent and quiet when everything is there.
set -euo pipefail

log() { printf 'install.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

RABBITMQ_SERVER_BIN=/usr/lib/rabbitmq/bin/rabbitmq-server
POLICY_RC_D=/usr/sbin/policy-rc.d

need=()
[[ -x "$RABBITMQ_SERVER_BIN" ]] || need+=(rabbitmq-server)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
((${#need[@]} == 0)) && exit 0

[[ $(id -u) -eq 0 ]] || die "need root to install: ${need[*]}"
command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install ${need[*]} by hand"

export DEBIAN_FRONTEND=noninteractive
apt_opts=(-y -q -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
apt_log=$(mktemp /tmp/carehare-apt.XXXXXX.log)

# Keep the package's postinst from starting a system-wide broker.
created_policy=0
cleanup() {
    if ((created_policy)); then rm -f "$POLICY_RC_D"; fi
}
trap cleanup EXIT
if [[ ! -e "$POLICY_RC_D" ]]; then
    printf '#!/bin/sh\n# temporary, created by carehare test-server/install.sh\nexit 101\n' >"$POLICY_RC_D"
    chmod 0755 "$POLICY_RC_D"
    created_policy=1
fi

log "installing ${need[*]} with apt-get (log: $apt_log) ..."
if ! apt-get update -q -o DPkg::Lock::Timeout=600 >>"$apt_log" 2>&1; then
    tail -n 30 "$apt_log" >&2
    die "apt-get update failed (see $apt_log)"
fi
if ! apt-get install "${apt_opts[@]}" --no-install-recommends "${need[@]}" </dev/null >>"$apt_log" 2>&1; then
    tail -n 30 "$apt_log" >&2
    die "apt-get install ${need[*]} failed (see $apt_log)"
fi

[[ -x "$RABBITMQ_SERVER_BIN" ]] || die "$RABBITMQ_SERVER_BIN still missing after install"
command -v openssl >/dev/null 2>&1 || die "openssl still missing after install"

# The postinst must not have left a system broker behind (it would hold the ports).
if pgrep -u rabbitmq -f beam >/dev/null 2>&1; then
    log "WARNING: a system rabbitmq broker (user rabbitmq) is running; it may hold ports 5672/15672"
fi
rm -f "$apt_log"
log "installed ${need[*]}"
