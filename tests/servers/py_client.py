#!/usr/bin/env python3
"""HTTP client on urllib for the wirespan integration tests.

Usage: py_client.py BASE_URL PATH...
Waits for one line on stdin (so the test can start the agent with this pid
first), then GETs BASE_URL+PATH for each PATH, one connection each, and prints
"PATH STATUS BODY_LENGTH" per request.
"""
import sys
import urllib.error
import urllib.request


def main():
    base, paths = sys.argv[1], sys.argv[2:]
    print("WAITING", flush=True)
    sys.stdin.readline()
    for path in paths:
        try:
            with urllib.request.urlopen(base + path, timeout=30) as resp:
                status, body = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, body = err.code, err.read()
        print(path, status, len(body), flush=True)


if __name__ == "__main__":
    main()
