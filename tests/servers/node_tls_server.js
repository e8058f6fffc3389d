// HTTPS test server on node's `https` module for the wirespan TLS tests.
// node carries its own OpenSSL, linked statically into the `node` binary,
// which exports the SSL_* symbols.
//
// Usage: node node_tls_server.js PORT CERT KEY
// Routes: /status/NNN[/anything] replies with status NNN and a small body;
// anything else replies 200 with the path echoed. Request bodies are read in
// full. HTTP/1.1 only (no ALPN is offered).
'use strict';
const fs = require('fs');
const https = require('https');

const port = Number(process.argv[2]);
const options = {
  cert: fs.readFileSync(process.argv[3]),
  key: fs.readFileSync(process.argv[4]),
};
const server = https.createServer(options, (req, res) => {
  req.on('data', () => {});
  req.on('end', () => {
    const path = req.url.split('?')[0];
    let code = 200;
    let body = `path ${path}\n`;
    const m = /^\/status\/(\d{3})(\/|$)/.exec(path);
    if (m) {
      code = Number(m[1]);
      body = `status ${code} ${path}\n`;
    }
    const noBody = code === 204 || code === 304;
    const headers = { 'Content-Type': 'text/plain' };
    if (!noBody) headers['Content-Length'] = Buffer.byteLength(body);
    res.writeHead(code, headers);
    res.end(noBody ? undefined : body);
  });
});
// A client that aborts the handshake is not worth a crash.
server.on('tlsClientError', () => {});
server.keepAliveTimeout = 60000;
server.listen(port, '127.0.0.1');
