// HTTP/1.1 test server on node's `http` module for the wirespan integration tests.
//
// Usage: node node_server.js PORT
// Routes: /status/NNN[/anything] replies with status NNN and a small body;
// anything else replies 200 with the path echoed. Request bodies are read in full.
'use strict';
const http = require('http');

const port = Number(process.argv[2]);
const server = http.createServer((req, res) => {
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
server.keepAliveTimeout = 60000;
server.listen(port, '127.0.0.1');
