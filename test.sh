#!/usr/bin/env bash
# The project's test command: installs what the tests need on a fresh Debian machine
# (redis-server, for the fleet-mode tests against real Redis processes), then runs
# `cargo test --all-features` with any extra arguments given (e.g. --locked).
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then
    echo "== installing redis-server (Debian package) for the fleet-mode tests"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq redis-server >/dev/null
fi

exec cargo test --all-features "$@"
