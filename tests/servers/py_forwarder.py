#!/usr/bin/env python3
"""HTTP/1.1 forwarder for the wirespan trace-context tests (stdlib only, no
tracing library: an "unmodified service").

Usage: py_forwarder.py PORT UPSTREAM

Python ThreadingHTTPServer: one thread per connection, which reads each
request, makes the upstream request itself (urllib, a new connection each
time, no proxy), and answers: the thread-per-request model the agent links
in-process.

UPSTREAM is a base URL (`http://127.0.0.1:PORT`): every request (any method,
its Content-Length body too) is sent to UPSTREAM + path, and the upstream's
status and body are returned as they are (a 404 upstream is a 404 here; an
unreachable upstream is a 502). No request header is forwarded: context
propagation is the agent's business, not this service's.

UPSTREAM `-` makes a leaf instead: `/status/NNN[/...]` answers NNN, anything
else 200, and the body is JSON describing what this leaf received:
  {"path": ..., "traceparent": [values...], "tracestate": [values...]}

Every response (forwarded or leaf) carries `X-Received-Context`: the same
JSON for this hop's own request, so a client can check exactly which
`traceparent`/`tracestate` header lines a hop received (none, one, or a
duplicate).

A forwarder asked for `/late/...` forwards and answers as usual, then, on
the same thread and once its answer has been sent, makes one more upstream
request, to `/after/late/...` (its answer is dropped): work a service does
after it has answered, which belongs to no request's trace.
"""
import json
import sys
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

UPSTREAM = None
# No proxy, whatever the environment says: the upstream is on 127.0.0.1.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "wirespan-test-forwarder"
    # Buffered responses: head and body leave in one send when the handler
    # returns. Unbuffered (the default), they are two sends, and on a
    # long-lived keep-alive connection Nagle's algorithm holds the body back
    # until the client's delayed ACK of the head, some 40 ms later.
    wbufsize = -1

    def log_message(self, fmt, *args):  # keep stderr quiet
        pass

    def _received(self):
        return json.dumps(
            {
                "path": self.path,
                "traceparent": self.headers.get_all("traceparent") or [],
                "tracestate": self.headers.get_all("tracestate") or [],
            },
            ensure_ascii=True,
        )

    def _read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else None

    def _reply(self, code, body, received):
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("X-Received-Context", received)
        no_body = self.command == "HEAD" or code in (204, 304)
        if not no_body:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not no_body:
            self.wfile.write(body)

    def _handle(self):
        received = self._received()
        body = self._read_body()
        if UPSTREAM is None:
            path = self.path.split("?", 1)[0]
            code = 200
            if path.startswith("/status/"):
                try:
                    code = int(path.split("/")[2])
                except ValueError:
                    code = 400
            self._reply(code, received.encode() + b"\n", received)
            return
        request = urllib.request.Request(
            UPSTREAM + self.path, data=body, method=self.command
        )
        try:
            with OPENER.open(request, timeout=30) as resp:
                code, out = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            code, out = err.code, err.read()
        except OSError as err:
            code, out = 502, ("upstream failed: %s\n" % err).encode()
        self._reply(code, out, received)
        if self.path.startswith("/late/"):
            self.wfile.flush()
            self._call_after_reply()

    def _call_after_reply(self):
        request = urllib.request.Request(UPSTREAM + "/after" + self.path)
        try:
            with OPENER.open(request, timeout=30) as resp:
                resp.read()
        except OSError as err:
            sys.stderr.write("late call failed: %s\n" % err)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # Many clients connect at once in the concurrency test: the default
    # backlog of 5 would make the kernel drop SYNs (1 s retransmits).
    request_queue_size = 256


def main():
    global UPSTREAM
    port, upstream = int(sys.argv[1]), sys.argv[2]
    UPSTREAM = None if upstream == "-" else upstream.rstrip("/")
    Server(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
