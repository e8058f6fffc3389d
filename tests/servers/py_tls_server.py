#!/usr/bin/env python3
"""HTTPS (and optionally plain HTTP) test server for the wirespan TLS tests
(stdlib only).

Usage: py_tls_server.py TLS_PORT CERT KEY [PLAIN_PORT]

Serves py_server.py's routes (/status/NNN/..., /chunked, POST /upload,
/reset, anything else) with the same handler, over TLS on TLS_PORT: a
ThreadingHTTPServer whose accepted sockets are wrapped with
`ssl.SSLContext.wrap_socket` (OpenSSL via the `_ssl` module, i.e. the
system's libssl). The handshake runs in the connection's own thread, on its
first read, so a slow client never blocks the accept loop. HTTP/1.1 only (no
ALPN is offered).

With PLAIN_PORT, the same process also serves the same routes over plain
HTTP on that port (a second ThreadingHTTPServer in another thread): one
process with both plaintext and TLS traffic. The plain port is bound first,
so once TLS_PORT accepts connections both do.
"""
import os
import ssl
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from py_server import Handler, Server  # noqa: E402


class TLSServer(Server):
    """py_server's ThreadingHTTPServer with TLS on every accepted socket."""

    def __init__(self, addr, handler, context):
        self.context = context
        super().__init__(addr, handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        tls = self.context.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False
        )
        return tls, addr

    def handle_error(self, request, client_address):
        # A client that aborts the handshake (or a reset) is not a server
        # failure worth a traceback on the test's log.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ssl.SSLError, ConnectionError, OSError)):
            return
        super().handle_error(request, client_address)


def main():
    tls_port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    plain_port = int(sys.argv[4]) if len(sys.argv) > 4 else None
    if plain_port is not None:
        plain = Server(("127.0.0.1", plain_port), Handler)
        threading.Thread(target=plain.serve_forever, daemon=True).start()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    TLSServer(("127.0.0.1", tls_port), Handler, context).serve_forever()


if __name__ == "__main__":
    main()
