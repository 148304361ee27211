// The OAuth flow both TypeScript clients run (interop/typescript-sdk-1, interop/typescript-client-2):
// 401, discovery, dynamic registration, authorization (the redirect read without a browser),
// token, tools, 403 insufficient_scope on archive_project, step-up, success. Exits 1 if any step
// fails. `sdk` names the package and hands in its classes, and `authorizationResult(pending)`
// what its `finishAuth()` takes from the captured redirect.
// Usage: node client.mjs [serverUrl] [--with-state] [--stepup-workaround]

export async function run(sdk) {
    const { Client, StreamableHTTPClientTransport, UnauthorizedError, auth, StreamableHTTPError } = sdk;
    const args = process.argv.slice(2);
    const SERVER = args.find(a => !a.startsWith('--')) ?? 'http://127.0.0.1:3917/mcp';
    const WITH_STATE = args.includes('--with-state');
    const WORKAROUND = args.includes('--stepup-workaround');
    const REDIRECT = 'http://localhost:33418/callback';
    let failures = 0;
    const log = (...a) => {
        const line = a.join(' ');
        if (line.startsWith('FAIL')) failures += 1;
        console.log(line);
    };

    // Logging fetch: every request the SDK makes (MCP POST/GET, discovery, registration, token).
    async function logFetch(input, init = {}) {
        const url = typeof input === 'string' ? input : input.url ?? String(input);
        const method = init.method ?? 'GET';
        const h = new Headers(init.headers);
        let extra = '';
        for (const k of ['mcp-protocol-version', 'authorization', 'mcp-session-id']) {
            if (h.has(k)) extra += ` ${k}=${k === 'authorization' ? h.get(k).slice(0, 20) + '...' : h.get(k)}`;
        }
        const body = init.body ? ' ' + String(init.body).slice(0, 300) : '';
        log(`  >> ${method} ${url}${extra}${body}`);
        const res = await fetch(input, init);
        let rextra = '';
        for (const k of ['www-authenticate', 'location', 'mcp-protocol-version', 'mcp-session-id', 'content-type']) {
            if (res.headers.has(k)) rextra += ` ${k}: ${res.headers.get(k)}`;
        }
        log(`  << ${res.status} ${method} ${url}${rextra}`);
        if (!res.ok) {
            const t = await res.clone().text().catch(() => '');
            log(`     body: ${t.slice(0, 300)}`);
        }
        return res;
    }

    const authRounds = [];

    class Provider {
        constructor() {
            this._pending = undefined;
            this._state = undefined;
        }
        get redirectUrl() { return REDIRECT; }
        get clientMetadata() {
            return {
                client_name: 'sdkcheck-typescript',
                redirect_uris: [REDIRECT],
                grant_types: ['authorization_code', 'refresh_token'],
                response_types: ['code'],
                token_endpoint_auth_method: 'none'
            };
        }
        clientInformation() { return this._client; }
        saveClientInformation(ci) {
            log(`  [provider] saveClientInformation client_id=${ci.client_id} auth=${ci.token_endpoint_auth_method} scope=${ci.scope} issuer=${ci.issuer}`);
            this._client = ci;
        }
        tokens() { return this._tokens; }
        saveTokens(t) {
            log(`  [provider] saveTokens scope=${t.scope} expires_in=${t.expires_in} refresh=${t.refresh_token ? 'yes' : 'no'} token=${t.access_token.slice(0, 12)}...`);
            this._tokens = t;
        }
        saveCodeVerifier(v) { this._verifier = v; }
        codeVerifier() { return this._verifier; }
        invalidateCredentials(scope) {
            log(`  [provider] invalidateCredentials(${scope})`);
            if (scope === 'all' || scope === 'client') this._client = undefined;
            if (scope === 'all' || scope === 'tokens') this._tokens = undefined;
        }
        async redirectToAuthorization(url) {
            const u = new URL(url);
            log(`  [redirectToAuthorization] ${u}`);
            log(`  [redirectToAuthorization]   scope=${u.searchParams.get('scope')} resource=${u.searchParams.get('resource')} state=${u.searchParams.get('state')}`);
            authRounds.push(u.searchParams.get('scope'));
            const r = await fetch(u, { redirect: 'manual' });
            const loc = r.headers.get('location');
            log(`  [redirectToAuthorization] GET -> ${r.status} Location: ${loc}`);
            if (!loc) {
                log(`     body: ${(await r.text()).slice(0, 300)}`);
                this._pending = undefined;
                return;
            }
            const q = new URL(loc).searchParams;
            this._pending = { code: q.get('code'), state: q.get('state'), iss: q.get('iss'), error: q.get('error'), params: q };
        }
        takeCode() {
            const p = this._pending;
            this._pending = undefined;
            if (!p || !p.code) throw new Error(`no authorization code captured: ${JSON.stringify(p)}`);
            if (WITH_STATE && p.state !== this._state) throw new Error(`state mismatch ${p.state} != ${this._state}`);
            return sdk.authorizationResult(p);
        }
    }
    if (WITH_STATE) {
        Provider.prototype.state = function () {
            this._state = crypto.randomUUID();
            return this._state;
        };
    }

    const provider = new Provider();
    let transport;
    let client;

    async function connect() {
        for (let attempt = 1; attempt <= 3; attempt++) {
            client = new Client({ name: 'sdkcheck-ts', version: '1.0.0' });
            transport = new StreamableHTTPClientTransport(new URL(SERVER), { authProvider: provider, fetch: logFetch });
            try {
                await client.connect(transport);
                return;
            } catch (e) {
                if (e instanceof UnauthorizedError) {
                    log(`  connect attempt ${attempt}: UnauthorizedError (${e.message}) -> finishAuth`);
                    await transport.finishAuth(provider.takeCode());
                    continue;
                }
                throw e;
            }
        }
        throw new Error('could not connect after 3 attempts');
    }

    const text = r => r.content.map(c => c.text ?? JSON.stringify(c)).join(' | ');

    async function call(name, args) {
        for (let attempt = 1; attempt <= 2; attempt++) {
            try {
                const r = await client.callTool({ name, arguments: args });
                log(`${r.isError ? 'TOOL-ERROR' : 'OK'} ${name}: ${text(r)}`);
                return;
            } catch (e) {
                if (e instanceof UnauthorizedError && attempt === 1) {
                    log(`  ${name}: UnauthorizedError (${e.message}) -> finishAuth on current transport, then retry the call`);
                    await transport.finishAuth(provider.takeCode());
                    continue;
                }
                log(`FAIL ${name}: ${e.constructor.name}${e.code !== undefined ? ` code=${e.code}` : ''}: ${e.message}`);
                if (WORKAROUND && attempt === 1 && e instanceof StreamableHTTPError && (e.code === 403 || e.status === 403 || e.data?.status === 403)) {
                    // Application-level step-up: drop the stored tokens (so auth() cannot take the refresh
                    // shortcut), run auth() with the challenged scope, finish, and retry the call.
                    const scope = 'projects:write projects:read';
                    log(`  workaround: clearing tokens, auth(provider, {scope: '${scope}'})`);
                    provider._tokens = undefined;
                    const r = await auth(provider, { serverUrl: new URL(SERVER), scope, fetchFn: logFetch });
                    log(`  workaround: auth() -> ${r}`);
                    if (r === 'REDIRECT') await transport.finishAuth(provider.takeCode());
                    continue;
                }
                return;
            }
        }
    }

    log(`${sdk.name} ${sdk.version}, node ${process.version}, server ${SERVER}, state()=${WITH_STATE} workaround=${WORKAROUND}`);
    log('STEP connect');
    await connect();
    log(`OK connect: server=${JSON.stringify(client.getServerVersion())} transport.protocolVersion=${transport.protocolVersion}`);
    log('STEP listTools');
    const tools = await client.listTools();
    log(`OK listTools: ${tools.tools.map(t => t.name)}`);
    for (const [n, a] of [['whoami', {}], ['list_projects', {}], ['archive_project', { project_id: 'prj_apollo' }], ['whoami', {}]]) {
        log(`STEP callTool ${n}`);
        await call(n, a);
    }
    log(`authorization rounds (scope requested): ${JSON.stringify(authRounds)}`);
    await client.close();
    if (failures > 0) {
        console.log(`${failures} step(s) failed`);
        process.exit(1);
    }
}
