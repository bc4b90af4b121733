#!/usr/bin/env bash
# Makes sure the Prometheus server and promtool are installed: the deployment tests run a real
# Prometheus (Debian's `prometheus` package) against the local stack and check the rules with promtool.
# Idempotent; called by `make test` before pytest. Installing needs root and apt (Debian/Ubuntu).
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-prometheus: prometheus/promtool not found; install Debian's 'prometheus' package" \
         "(or put both binaries on PATH). The tests marked 'prometheus' need them." >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The package's service must not start on its own port: the tests start their own instance.
# policy-rc.d answering 101 tells invoke-rc.d not to start services during this install.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
    created_policy=1
fi
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
if [ "$created_policy" -eq 1 ]; then
    rm -f "$policy"
fi
prometheus --version 2>&1 | head -n 1
promtool --version 2>&1 | head -n 1
