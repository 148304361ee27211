"""Drives the whole MCP OAuth flow with the official Python SDK against `examples/mcp_server.rs`
(run by `interop/run.sh`): 401, discovery, dynamic registration, authorization (the redirect is
read without a browser), token, tools, 403 insufficient_scope on archive_project (the guard's) and on read_project of a
private project (the tool's own demand), the SDK's own step-ups, success. Exits 1 if any step fails. `--auto` uses mcp.Client(mode="auto"), which
speaks MCP 2026-07-28 (server/discover) when the server offers it."""

import asyncio
import json
import logging
import sys
from importlib.metadata import version
from urllib.parse import parse_qs, urlparse

import httpx
import httpx2
from mcp import Client, ClientSession
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
SERVER = ARGS[0] if ARGS else "http://127.0.0.1:3917/mcp"
AUTO = "--auto" in sys.argv  # use the high-level mcp.Client (mode="auto": server/discover probe, then fallback)
REDIRECT = "http://localhost:33418/callback"

logging.basicConfig(level=logging.WARNING, format="  [log %(name)s %(levelname)s] %(message)s")
logging.getLogger("mcp.client.auth").setLevel(logging.DEBUG)


FAILURES = []


def log(*a):
    line = " ".join(str(x) for x in a)
    if line.startswith("FAIL") or line.startswith("TOOL-ERROR"):
        FAILURES.append(line)
    print(line, flush=True)


class MemStorage:
    def __init__(self):
        self.tokens = None
        self.client_info = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken):
        log(f"  [storage] set_tokens scope={tokens.scope!r} expires_in={tokens.expires_in} "
            f"refresh={'yes' if tokens.refresh_token else 'no'} token={tokens.access_token[:12]}...")
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull):
        log(f"  [storage] set_client_info client_id={client_info.client_id} "
            f"auth_method={client_info.token_endpoint_auth_method} scope={client_info.scope!r}")
        self.client_info = client_info


pending: dict = {}
auth_rounds = []


async def redirect_handler(url: str) -> None:
    q = parse_qs(urlparse(url).query)
    log(f"  [redirect_handler] authorization URL: {url}")
    log(f"  [redirect_handler]   scope={q.get('scope')} resource={q.get('resource')}")
    auth_rounds.append(q.get("scope"))
    async with httpx.AsyncClient(follow_redirects=False) as c:
        r = await c.get(url)
    loc = r.headers.get("location")
    log(f"  [redirect_handler] GET -> {r.status_code} Location: {loc}")
    if r.status_code not in (302, 303) or not loc:
        raise RuntimeError(f"authorize did not redirect: {r.status_code} {r.text}")
    lq = parse_qs(urlparse(loc).query)
    pending.clear()
    pending.update({k: v[0] for k, v in lq.items()})


async def callback_handler() -> AuthorizationCodeResult:
    if "code" not in pending:
        raise RuntimeError(f"no code in redirect: {pending}")
    return AuthorizationCodeResult(code=pending["code"], state=pending.get("state"), iss=pending.get("iss"))


async def on_request(req: httpx2.Request):
    extra = ""
    for h in ("mcp-protocol-version", "authorization", "mcp-session-id"):
        if h in req.headers:
            v = req.headers[h]
            extra += f" {h}={v[:20] + '...' if h == 'authorization' else v}"
    body = ""
    if req.method == "POST":
        try:
            body = req.content.decode()[:300]
        except Exception:
            body = "<stream>"
    log(f"  >> {req.method} {req.url}{extra} {body}")


async def on_response(resp: httpx2.Response):
    extra = ""
    for h in ("www-authenticate", "location", "mcp-protocol-version", "mcp-session-id", "content-type"):
        if h in resp.headers:
            extra += f" {h}: {resp.headers[h]}"
    log(f"  << {resp.status_code} {resp.request.method} {resp.request.url}{extra}")


def text_of(result):
    return " | ".join(getattr(c, "text", str(c)) for c in result.content)


async def exercise(session):
    log("STEP list_tools")
    tools = await session.list_tools()
    log(f"OK list_tools: {[t.name for t in tools.tools]}")
    calls = (
        ("whoami", {}),
        ("list_projects", {}),
        ("archive_project", {"project_id": "prj_apollo"}),  # the guard's 403: step-up to projects:write
        ("read_project", {"project_id": "prj_mercury"}),  # the tool's own 403: step-up to projects:private
        ("whoami", {}),
    )
    for name, args in calls:
        log(f"STEP call_tool {name}")
        try:
            res = await session.call_tool(name, args)
            # A step-up the SDK could not complete ends as a tool error: a failure here.
            log(f"{'OK' if not res.is_error else 'FAIL (tool error)'} {name}: {text_of(res)}")
        except Exception as e:
            log(f"FAIL {name}: {type(e).__name__}: {e}")


async def main():
    log(f"mcp {version('mcp')}, httpx2 {version('httpx2')}, server {SERVER}")
    storage = MemStorage()
    provider = OAuthClientProvider(
        server_url=SERVER,
        client_metadata=OAuthClientMetadata(
            client_name="sdkcheck-python",
            redirect_uris=[REDIRECT],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    client = httpx2.AsyncClient(
        auth=provider,
        timeout=httpx2.Timeout(30, read=300),
        event_hooks={"request": [on_request], "response": [on_response]},
    )
    async with client:
        if AUTO:
            async with Client(streamable_http_client(SERVER, http_client=client), mode="auto") as session:
                log(f"OK connect (mode=auto): negotiated protocol_version={session.session.protocol_version} "
                    f"discover_result={'yes' if session.session.discover_result else 'no'} "
                    f"initialize_result={'yes' if session.session.initialize_result else 'no'}")
                await exercise(session)
        else:
            async with streamable_http_client(SERVER, http_client=client) as (read, write):
                async with ClientSession(read, write) as session:
                    log("STEP initialize")
                    init = await session.initialize()
                    log(f"OK initialize: protocolVersion={init.protocol_version} server={init.server_info.name} "
                        f"{init.server_info.version}; session.protocol_version={session.protocol_version}")
                    await exercise(session)
    log(f"authorization rounds (scope requested): {auth_rounds}")
    # Three rounds: the challenge's scope, the guard's step-up, the tool's own step-up (the SDK
    # unions the challenged scopes with those it holds).
    asked = [" ".join(r or []) for r in auth_rounds]
    if len(asked) == 3 and "projects:write" in asked[1] and "projects:private" in asked[2]:
        log(f"OK step-ups: {asked}")
    else:
        log(f"FAIL step-ups: expected a round for projects:write, then one for projects:private: {asked}")


asyncio.run(main())
if FAILURES:
    print(f"{len(FAILURES)} step(s) failed", flush=True)
    sys.exit(1)
