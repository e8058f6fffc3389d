#!/usr/bin/env python3
"""Keep-alive HTTP client on http.client for the wirespan integration tests.

Usage: py_keepalive_client.py HOST PORT FIRST_PATH LATER_PATH...
Makes FIRST_PATH on one persistent connection and prints "FIRST STATUS LOCALPORT",
then waits for a line on stdin (the test starts the agent meanwhile), then makes
every LATER_PATH on the same connection, printing "PATH STATUS LOCALPORT" each.
"""
import http.client
import sys


def get(conn, path):
    conn.request("GET", path)
    resp = conn.getresponse()
    resp.read()
    return resp.status, conn.sock.getsockname()[1]


def main():
    host, port, first, later = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    status, local_port = get(conn, first)
    print("FIRST", status, local_port, flush=True)
    sys.stdin.readline()
    for path in later:
        status, local_port = get(conn, path)
        print(path, status, local_port, flush=True)
    conn.close()


if __name__ == "__main__":
    main()
