// A proxy adding `Authorization: Bearer <token>` to every request (the conformance runner
// sends none), forwarding to the MCP server as is.
import http from 'node:http';
const [listen, target, token] = process.argv.slice(2);
const up = new URL(target);
http.createServer((req, res) => {
  const headers = { ...req.headers, host: up.host, authorization: `Bearer ${token}` };
  const fwd = http.request({ hostname: up.hostname, port: up.port, path: req.url, method: req.method, headers }, (r) => {
    res.writeHead(r.statusCode, r.headers);
    r.pipe(res);
  });
  fwd.on('error', (e) => { res.writeHead(502); res.end(String(e)); });
  req.pipe(fwd);
}).listen(Number(listen), '127.0.0.1');
