#!/usr/bin/env bash
# Interoperability check, run by hand (not in CI: it installs from PyPI and npm): the official
# MCP SDK clients complete OAuth against examples/mcp_server.rs (its dev issuer) and step up.
# Needs python3 (with venv) and node >= 18 + npm. Usage: interop/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work="${INTEROP_DIR:-/tmp/tower-wacht-interop}"
port="${INTEROP_PORT:-3917}"
url="http://127.0.0.1:${port}/mcp"
# The same server as a client configured with `localhost` sees it (the example answers for
# every loopback name of its URL in development).
localhost_url="http://localhost:${port}/mcp"
mkdir -p "$work"

cargo build --quiet --example mcp_server --features test-util
BIND="127.0.0.1:${port}" RUST_LOG=warn "${CARGO_TARGET_DIR:-target}/debug/examples/mcp_server" > "$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    curl -fs "http://127.0.0.1:${port}/.well-known/oauth-protected-resource/mcp" > /dev/null 2>&1 && break
    sleep 0.1
done
if ! kill -0 "$server" 2>/dev/null; then
    echo "the example did not start (is port $port taken? set INTEROP_PORT):"; cat "$work/server.log"; exit 1
fi

failed=0
run() {
    local name=$1; shift
    echo "== $name"
    if "$@" > "$work/$name.log" 2>&1; then
        echo "   ok ($(grep -c '^OK' "$work/$name.log") steps; log: $work/$name.log)"
    else
        echo "   FAILED (log: $work/$name.log):"; grep -E '^FAIL' "$work/$name.log" | sed 's/^/   /' || true
        failed=1
    fi
}

python3 -m venv "$work/py"
"$work/py/bin/pip" install --quiet -r interop/python/requirements.txt
run python-initialize "$work/py/bin/python" interop/python/client.py "$url"
run python-2026-07-28 "$work/py/bin/python" interop/python/client.py "$url" --auto
run python-localhost "$work/py/bin/python" interop/python/client.py "$localhost_url" --auto

cp interop/typescript-flow.mjs "$work/"
for sdk in typescript-sdk-1 typescript-client-2; do
    rm -rf "$work/$sdk"; cp -r "interop/$sdk" "$work/$sdk"
    (cd "$work/$sdk" && npm install --silent --no-audit --no-fund > /dev/null)
    run "$sdk" node "$work/$sdk/client.mjs" "$url"
    run "$sdk-localhost" node "$work/$sdk/client.mjs" "$localhost_url"
done
exit $failed
