#!/usr/bin/env python3
"""HTTPS client for the wirespan TLS tests (stdlib only: urllib and
http.client over the `ssl` module, i.e. the system's libssl).

Usage: py_tls_client.py MODE HOST PORT CAFILE PATH...

MODE `urllib`: one urllib.request GET per PATH, each on its own connection.
MODE `keepalive`: http.client.HTTPSConnection, every PATH on one persistent
connection.

The certificate is verified against CAFILE (host name included: the test
certificate names 127.0.0.1 and localhost). Prints "WAITING", then waits for
one line on stdin (so the test can start the agent with this pid first), then
makes the requests and prints "PATH STATUS LOCALPORT" per request (LOCALPORT:
the connection's local port, so the test can tell reuse from new
connections; 0 when urllib does not expose it).
"""
import http.client
import ssl
import sys
import urllib.error
import urllib.request


def run_urllib(host, port, context, paths):
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    for path in paths:
        url = "https://%s:%d%s" % (host, port, path)
        try:
            with opener.open(url, timeout=30) as resp:
                status, _ = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, _ = err.code, err.read()
        print(path, status, 0, flush=True)


def run_keepalive(host, port, context, paths):
    conn = http.client.HTTPSConnection(host, port, timeout=30, context=context)
    for path in paths:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        print(path, resp.status, conn.sock.getsockname()[1], flush=True)
    conn.close()


def main():
    mode, host, port, cafile = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    paths = sys.argv[5:]
    context = ssl.create_default_context(cafile=cafile)
    # HTTP/1.1 only, whatever the defaults say.
    context.set_alpn_protocols(["http/1.1"])
    run = {"urllib": run_urllib, "keepalive": run_keepalive}[mode]
    print("WAITING", flush=True)
    sys.stdin.readline()
    run(host, port, context, paths)


if __name__ == "__main__":
    main()
