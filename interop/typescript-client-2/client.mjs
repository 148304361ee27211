// The interop flow (../typescript-flow.mjs) with @modelcontextprotocol/client 2.x; run by
// interop/run.sh.
import { readFileSync } from 'node:fs';
import { Client, StreamableHTTPClientTransport, UnauthorizedError, auth, SdkHttpError } from '@modelcontextprotocol/client';
import { run } from '../typescript-flow.mjs';

const pkg = new URL('./node_modules/@modelcontextprotocol/client/package.json', import.meta.url);
await run({
    name: '@modelcontextprotocol/client',
    version: JSON.parse(readFileSync(pkg)).version,
    Client,
    StreamableHTTPClientTransport,
    UnauthorizedError,
    auth,
    StreamableHTTPError: SdkHttpError,
    // finishAuth(URLSearchParams): it reads the code and checks iss (RFC 9207)
    authorizationResult: pending => pending.params,
});
