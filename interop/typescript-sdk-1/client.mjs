// The interop flow (../typescript-flow.mjs) with @modelcontextprotocol/sdk 1.x, the SDK the MCP
// Inspector uses; run by interop/run.sh.
import { readFileSync } from 'node:fs';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError, auth } from '@modelcontextprotocol/sdk/client/auth.js';
import { run } from '../typescript-flow.mjs';

const pkg = new URL('./node_modules/@modelcontextprotocol/sdk/package.json', import.meta.url);
await run({
    name: '@modelcontextprotocol/sdk',
    version: JSON.parse(readFileSync(pkg)).version,
    Client,
    StreamableHTTPClientTransport,
    UnauthorizedError,
    auth,
    StreamableHTTPError,
    // finishAuth(code)
    authorizationResult: pending => pending.code,
});
