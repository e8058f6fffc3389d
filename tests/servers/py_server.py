#!/usr/bin/env python3
"""HTTP/1.1 test server for the wirespan integration tests (stdlib only).

Usage: py_server.py PORT

With PY_SERVER_PEEK=1 in the environment, each connection's first bytes are
peeked at before it is handled (recv and recvmsg with MSG_PEEK), as protocol
sniffers do.

Routes (any method; a request body announced by Content-Length is always read):
  /status/NNN[/anything]  reply with status NNN and a small text body
                          (no body for HEAD, 204 and 304)
  /chunked[anything]      200 with Transfer-Encoding: chunked, several chunks,
                          each written by its own send
  POST /upload            read the Content-Length body, reply with its sha256 hex
  /bytes/N                200 with a Content-Length body of N bytes (byte i is
                          i % 251), written 64 KiB per send
  /upgrade                101 Switching Protocols (Upgrade: websocket), then
                          echo raw bytes back until the client closes
  /reset                  response head announcing Content-Length 100000, a few
                          body bytes, then a TCP reset (SO_LINGER on, timeout 0)
  anything else           200 with the path echoed
"""
import hashlib
import os
import socket
import struct
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PEEK = os.environ.get("PY_SERVER_PEEK") == "1"

CHUNKS = [b"chunk-%d:" % i + b"abcdefghij" * (i + 1) + b"\n" for i in range(5)]


def chunked_body():
    """The body a client must reassemble from /chunked."""
    return b"".join(CHUNKS)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "wirespan-test-py"

    def log_message(self, fmt, *args):  # keep stderr quiet
        pass

    def setup(self):
        super().setup()
        if PEEK:
            # Look without consuming: the recvmsg and the recvfrom syscalls,
            # the second for as much as came (a whole request, usually).
            self.connection.recvmsg(16, 0, socket.MSG_PEEK)
            self.connection.recv(65536, socket.MSG_PEEK)

    def _read_body(self, sink=None):
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            data = self.rfile.read(min(remaining, 65536))
            if not data:
                break
            remaining -= len(data)
            if sink is not None:
                sink.update(data)

    def _reply(self, code, body, content_type="text/plain"):
        no_body = code in (204, 304) or 100 <= code < 200
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        if not no_body:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and not no_body:
            self.wfile.write(body)

    def _chunked(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.command == "HEAD":
            return
        for chunk in CHUNKS:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")

    def _reset(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"x" * 1000)
        sock = self.connection
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # with linger 0: RST instead of FIN
        self.close_connection = True

    def _bytes(self, path):
        try:
            n = int(path.split("/")[2])
        except ValueError:
            self._reply(400, b"bad length\n")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.end_headers()
        if self.command == "HEAD":
            return
        # Any 64 KiB window of the pattern, from any phase.
        block = bytes(range(251)) * 263
        sent = 0
        while sent < n:
            k = min(65536, n - sent)
            start = sent % 251
            self.wfile.write(block[start : start + k])
            sent += k

    def _upgrade(self):
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.end_headers()
        self.wfile.flush()
        sock = self.connection
        while True:
            data = sock.recv(65536)
            if not data:
                break
            sock.sendall(data)
        self.close_connection = True

    def _handle(self):
        path = self.path.split("?", 1)[0]
        if path == "/upgrade":
            self._upgrade()
            return
        if path == "/upload" and self.command == "POST":
            digest = hashlib.sha256()
            self._read_body(digest)
            self._reply(200, digest.hexdigest().encode())
            return
        self._read_body()
        if path.startswith("/status/"):
            try:
                code = int(path.split("/")[2])
            except ValueError:
                code = 400
            self._reply(code, b"status %d %s\n" % (code, path.encode()))
        elif path.startswith("/chunked"):
            self._chunked()
        elif path.startswith("/bytes/"):
            self._bytes(path)
        elif path == "/reset":
            self._reset()
        else:
            self._reply(200, b"path %s\n" % path.encode())

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main():
    port = int(sys.argv[1])
    Server(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
