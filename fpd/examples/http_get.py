#!/usr/bin/env python3
"""A tiny HTTP/1.1 client written for Python's standard ``socket`` module.

    python http_get.py [--fpd] [--json] [--timeout S] http://HOST[:PORT]/PATH

Connects with ``socket.create_connection``, sends one GET, reads the response (by its
Content-Length, chunked, or to EOF) and prints the status, the body's size and SHA-256,
and how long it took. Exit status 0 for a 2xx response, 1 otherwise.

To fetch with fpd's TCP instead of the kernel's, change the one line

    import socket

to

    from fpd import client as socket

(``--fpd`` does the same swap at run time, for demos).
"""

import argparse
import hashlib
import importlib
import json
import sys
import time
from urllib.parse import urlsplit

import socket

CHUNK = 65536


class Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.eof = False

    def fill(self) -> bool:
        if self.eof:
            return False
        data = self.sock.recv(CHUNK)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def until(self, sep: bytes, limit: int = 65536) -> bytes:
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[:i + len(sep)]
                return out
            if len(self.buf) > limit:
                raise ValueError("response head too large")
            if not self.fill():
                raise EOFError("connection closed before the end of the response head")

    def body(self, n, sink) -> int:
        """Feed ``n`` bytes (None: to EOF) to ``sink``; return how many."""
        got = 0
        while n is None or got < n:
            if not self.buf and not self.fill():
                if n is None:
                    break
                raise EOFError(f"connection closed after {got} of {n} body bytes")
            take = len(self.buf) if n is None else min(len(self.buf), n - got)
            if take == len(self.buf):
                sink(self.buf)
                self.buf = bytearray()
            else:
                sink(self.buf[:take])
                del self.buf[:take]
            got += take
        return got


def get(url: str, timeout: float = 30.0) -> dict:
    u = urlsplit(url)
    if u.scheme != "http" or not u.hostname:
        raise ValueError(f"not an http:// URL: {url}")
    port = u.port or 80
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    t0 = time.perf_counter()
    sock = socket.create_connection((u.hostname, port), timeout=timeout)
    try:
        t_conn = time.perf_counter()
        host = u.hostname if port == 80 else f"{u.hostname}:{port}"
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n"
                     f"User-Agent: fpd-example-http_get\r\nAccept: */*\r\n"
                     f"Connection: close\r\n\r\n".encode("latin-1"))
        r = Reader(sock)
        head = r.until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status_line = head[0]
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ValueError(f"malformed status line {status_line!r}")
        status = int(parts[1])
        headers = {}
        for line in head[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        h = hashlib.sha256()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            size = 0
            while True:
                n = int(r.until(b"\r\n").split(b";")[0], 16)
                if n == 0:
                    while r.until(b"\r\n"):  # trailers
                        pass
                    break
                size += r.body(n, h.update)
                r.until(b"\r\n")
        elif "content-length" in headers:
            size = r.body(int(headers["content-length"]), h.update)
        else:
            size = r.body(None, h.update)
        t_end = time.perf_counter()
    finally:
        sock.close()
    secs = t_end - t0
    return {"url": url, "status": status, "reason": parts[2] if len(parts) > 2 else "",
            "bytes": size, "sha256": h.hexdigest(), "connect_s": t_conn - t0,
            "total_s": secs, "mb_per_s": size / secs / 1e6 if secs > 0 else 0.0,
            "socket_module": socket.__name__}


def main(argv=None) -> int:
    global socket
    ap = argparse.ArgumentParser(description="fetch one URL over the socket API")
    ap.add_argument("url", help="http://HOST[:PORT]/PATH")
    ap.add_argument("--fpd", action="store_true",
                    help="use fpd's socket module (fpd.client) instead of the kernel's")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON line")
    ap.add_argument("--timeout", type=float, default=30.0, help="socket timeout (30 s)")
    args = ap.parse_args(argv)
    if args.fpd:
        socket = importlib.import_module("fpd.client")
    try:
        res = get(args.url, args.timeout)
    except (OSError, ValueError, EOFError) as e:
        print(f"http_get: {args.url}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{res['status']} {res['reason']}  {res['bytes']} bytes  "
              f"sha256 {res['sha256']}  {res['total_s']:.3f} s  "
              f"{res['mb_per_s']:.1f} MB/s  ({res['socket_module']})")
    return 0 if 200 <= res["status"] < 300 else 1


if __name__ == "__main__":
    sys.exit(main())
