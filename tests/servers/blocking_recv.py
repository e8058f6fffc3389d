#!/usr/bin/env python3
"""The blocking-socket case that sockets in a SockHash break (KERNEL-NOTES:
tcp_bpf_recvmsg): a blocking client sends SIZE bytes, shuts down its write
side, then blocks in recv() for the server's answer (the sha256 of what it
got). Runs ROUNDS rounds on loopback, each on a new connection; prints one
line per failure and a summary, exits 1 if any round failed.

usage: blocking_recv.py ROUNDS SIZE_BYTES
"""

import hashlib
import os
import socket
import sys
import threading


def serve(listener):
    while True:
        conn, _ = listener.accept()
        with conn:
            h = hashlib.sha256()
            while True:
                chunk = conn.recv(1 << 20)
                if not chunk:
                    break
                h.update(chunk)
            conn.sendall(h.hexdigest().encode())


def main():
    rounds, size = int(sys.argv[1]), int(sys.argv[2])
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    threading.Thread(target=serve, args=(listener,), daemon=True).start()
    port = listener.getsockname()[1]
    data = os.urandom(size)
    want = hashlib.sha256(data).hexdigest()
    failed = 0
    for i in range(rounds):
        try:
            s = socket.create_connection(("127.0.0.1", port))
            s.setblocking(True)
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            got = b""
            while len(got) < 64:
                part = s.recv(64 - len(got))
                if not part:
                    break
                got += part
            s.close()
            if got.decode() != want:
                failed += 1
                print(f"round {i}: answer {got!r}, want {want}", flush=True)
        except OSError as e:
            failed += 1
            print(f"round {i}: {type(e).__name__}: {e}", flush=True)
    print(f"rounds={rounds} failed={failed}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
