#!/usr/bin/env python3
"""TCP echo server (not HTTP) for the wirespan integration tests.

Usage: echo_server.py PORT
Every byte received on a connection is sent back on it until the peer closes.
"""
import socketserver
import sys


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    Server(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()


if __name__ == "__main__":
    main()
