#!/usr/bin/env bash
# The project's test command: installs what the tests need on a fresh Debian machine
# (redis-server and openssl, for the fleet-mode tests against real Redis processes), then runs
# `cargo test --all-features` with any extra arguments given (e.g. --locked).
set -euo pipefail
cd "$(dirname "$0")"

# redis-server for the fleet-mode tests; openssl to make the certificates of the TLS test.
missing=()
if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then missing+=(redis-server); fi
if ! command -v openssl >/dev/null 2>&1; then missing+=(openssl); fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]} (Debian packages) for the fleet-mode tests"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

exec cargo test --all-features "$@"
