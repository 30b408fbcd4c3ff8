#!/usr/bin/env python3
"""A small threaded HTTP/1.1 server written for Python's standard ``socket`` module.

    python http_server.py [--host 0.0.0.0] [--port 8080] [--fpd] [--verbose]

    GET /            a short HTML page
    GET /bytes/N     N bytes of a deterministic pattern (application/octet-stream)
    GET /sha256/N    the SHA-256 (hex) of what /bytes/N sends
    HEAD             the same headers, no body
    anything else    404 (unknown path), 405 (other methods), 400 (malformed request)

Keep-alive (HTTP/1.1 default, HTTP/1.0 with "Connection: keep-alive"), pipelined
requests, request bodies with Content-Length (read and discarded). Every response has a
Content-Length. A client that closes or resets in the middle of a request costs only its
own thread. Prints "listening on HOST:PORT" once it listens; exits cleanly (status 0) on
SIGTERM or SIGINT.

To run it on fpd instead of the kernel's TCP, change the one line

    import socket

to

    from fpd import client as socket

(``--fpd`` does the same swap at run time, for demos).
"""

import argparse
import errno
import hashlib
import importlib
import signal
import sys
import threading
import time

import socket

SERVER = "fpd-example-http/1.0"
MAX_HEAD = 16384            # request line + headers
MAX_BODY = 1 << 20          # request bodies we are willing to read and discard
MAX_BYTES = 1 << 32         # largest /bytes/N
CHUNK = 65536
PERIOD = 65521              # pattern period: a prime, so shifted or lost bytes show up

# /bytes/N sends PATTERN[i % PERIOD] for i in 0..N-1
PATTERN = bytes((i * 131 + (i >> 7) * 17 + 7) & 0xFF for i in range(PERIOD))
_DOUBLE = memoryview(PATTERN * 2)

PAGE = b"""<!DOCTYPE html>
<html><head><title>fpd example</title></head>
<body><h1>Hello from http_server.py</h1>
<p>Try <a href="/bytes/1048576">/bytes/1048576</a> or
<a href="/sha256/1048576">/sha256/1048576</a>.</p></body></html>
"""

REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 411: "Length Required", 413: "Content Too Large",
           431: "Request Header Fields Too Large", 501: "Not Implemented",
           505: "HTTP Version Not Supported"}


def pattern_chunks(n: int, chunk: int = CHUNK):
    """The /bytes/N body as memoryview chunks of at most ``chunk`` bytes."""
    off = 0
    while off < n:
        start = off % PERIOD
        take = min(chunk, n - off, PERIOD)
        yield _DOUBLE[start:start + take]
        off += take


def pattern_bytes(n: int) -> bytes:
    return b"".join(pattern_chunks(n))


def pattern_sha256(n: int) -> str:
    h = hashlib.sha256()
    for c in pattern_chunks(n, 1 << 20):
        h.update(c)
    return h.hexdigest()


TRANSIENT = {errno.ECONNABORTED, errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM,
             errno.EINTR}


class Stop(Exception):
    """Raised by the SIGTERM/SIGINT handler to leave the accept loop."""


def _on_signal(signum, frame):
    raise Stop(signal.Signals(signum).name)


class BadRequest(Exception):
    def __init__(self, status: int, why: str):
        super().__init__(why)
        self.status = status


class Conn:
    """One client connection: a receive buffer and the request loop."""

    def __init__(self, server, sock, peer):
        self.server = server
        self.sock = sock
        self.peer = peer
        self.buf = bytearray()

    def _fill(self) -> bool:
        data = self.sock.recv(CHUNK)
        if not data:
            return False
        self.buf += data
        return True

    def read_head(self):
        """The request head (without the blank line), or None at a clean EOF between
        requests. Raises BadRequest, EOFError (EOF in the middle of a request)."""
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(self.buf[:end])
                del self.buf[:end + 4]
                return head
            if len(self.buf) > MAX_HEAD:
                raise BadRequest(431, "request head too large")
            if not self._fill():
                if self.buf.strip():
                    raise EOFError("client closed in the middle of a request")
                return None

    def read_body(self, n: int) -> None:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError("client closed in the middle of a request body")
        del self.buf[:n]

    def serve(self):
        try:
            while self.one_request():
                pass
        except (EOFError, OSError):
            pass  # the client closed or reset: nothing to answer
        finally:
            self.server.forget(self.sock)

    def one_request(self) -> bool:
        """Serve one request; True to keep the connection open."""
        head = self.read_head()
        if head is None:
            return False
        try:
            method, target, version, headers = parse_head(head)
        except BadRequest as e:
            self.send_simple(e.status, str(e), keep_alive=False, head_only=False)
            return False
        if version == "HTTP/1.1":
            keep_alive = "close" not in headers.get("connection", "").lower()
        else:
            keep_alive = "keep-alive" in headers.get("connection", "").lower()
        if "transfer-encoding" in headers:
            self.send_simple(501, "chunked request bodies are not supported", False, False)
            return False
        length = headers.get("content-length", "0").strip()
        if not length.isdigit():
            self.send_simple(400, "bad Content-Length", False, False)
            return False
        if int(length) > MAX_BODY:
            self.send_simple(413, "request body too large", False, False)
            return False
        self.read_body(int(length))
        head_only = method == "HEAD"
        if method not in ("GET", "HEAD"):
            self.send_simple(405, f"method {method} not allowed", keep_alive, False,
                             extra=[("Allow", "GET, HEAD")])
            return keep_alive
        status = self.route(target, keep_alive, head_only)
        if self.server.verbose:
            print(f"{self.peer[0]}:{self.peer[1]} {method} {target} {status}",
                  file=sys.stderr, flush=True)
        return keep_alive

    def route(self, target: str, keep_alive: bool, head_only: bool) -> int:
        path = target.split("?", 1)[0]
        if path == "/":
            self.send(200, "text/html; charset=utf-8", PAGE, keep_alive, head_only)
            return 200
        parts = path.split("/")
        if len(parts) == 3 and parts[1] in ("bytes", "sha256"):
            arg = parts[2]
            if not arg.isdigit() or int(arg) > MAX_BYTES:
                self.send_simple(400, f"N must be an integer 0..{MAX_BYTES}",
                                 keep_alive, head_only)
                return 400
            n = int(arg)
            if parts[1] == "sha256":
                body = (pattern_sha256(n) + "\n").encode()
                self.send(200, "text/plain", body, keep_alive, head_only)
            else:
                self.send_stream(n, keep_alive, head_only)
            return 200
        self.send_simple(404, f"no such path: {path}", keep_alive, head_only)
        return 404

    def headers(self, status, ctype, length, keep_alive, extra=()) -> bytes:
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}",
                 f"Server: {SERVER}",
                 f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime())}",
                 f"Content-Type: {ctype}",
                 f"Content-Length: {length}",
                 f"Connection: {'keep-alive' if keep_alive else 'close'}"]
        lines += [f"{k}: {v}" for k, v in extra]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def send(self, status, ctype, body: bytes, keep_alive, head_only, extra=()):
        # one write for head and body: two small writes would meet Nagle + delayed ACK
        out = self.headers(status, ctype, len(body), keep_alive, extra)
        self.sock.sendall(out if head_only else out + body)

    def send_simple(self, status, text, keep_alive, head_only, extra=()):
        body = f"{status} {REASONS.get(status, '')}: {text}\n".encode()
        self.send(status, "text/plain; charset=utf-8", body, keep_alive, head_only, extra)

    def send_stream(self, n: int, keep_alive: bool, head_only: bool):
        head = self.headers(200, "application/octet-stream", n, keep_alive)
        if head_only:
            self.sock.sendall(head)
            return
        chunks = pattern_chunks(n)
        first = next(chunks, b"")
        self.sock.sendall(head + first)
        for c in chunks:
            self.sock.sendall(c)


def parse_head(head: bytes):
    """(method, target, version, headers with lower-case names)."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover (latin-1 decodes everything)
        raise BadRequest(400, "undecodable request")
    lines = text.split("\r\n")
    while lines and lines[0] == "":   # tolerate stray CRLFs before a request (RFC 9112)
        lines.pop(0)
    if not lines:
        raise BadRequest(400, "empty request")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[0].isupper():
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        if version.startswith("HTTP/"):
            raise BadRequest(505, f"{version} not supported")
        raise BadRequest(400, "malformed request line")
    if not target.startswith("/"):
        raise BadRequest(400, "only origin-form targets (/path) are supported")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(400, "malformed header line")
        name = name.lower()
        value = value.strip()
        if name in headers:
            if name == "content-length" and headers[name] != value:
                raise BadRequest(400, "conflicting Content-Length")
            headers[name] = headers[name] + ", " + value
        else:
            headers[name] = value
    if version == "HTTP/1.1" and "host" not in headers:
        raise BadRequest(400, "HTTP/1.1 request without Host")
    return method, target, version, headers


class HttpServer:
    def __init__(self, host: str, port: int, verbose: bool = False,
                 idle_timeout: float = 60.0, backlog: int = 128):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((host, port))
            self.listener.listen(backlog)
        except BaseException:
            self.listener.close()
            raise
        self.address = self.listener.getsockname()[:2]
        self.verbose = verbose
        self.idle_timeout = idle_timeout
        self.lock = threading.Lock()
        self.conns = set()
        self.threads = []

    def serve_forever(self):
        while True:
            try:
                sock, peer = self.listener.accept()
            except OSError as e:
                if e.errno in TRANSIENT:  # out of descriptors/memory, aborted: go on
                    time.sleep(0.1)
                    continue
                raise
            if self.idle_timeout:
                sock.settimeout(self.idle_timeout)  # an idle keep-alive client goes away
            with self.lock:
                self.conns.add(sock)
            t = threading.Thread(target=Conn(self, sock, peer).serve, daemon=True)
            self.threads = [x for x in self.threads if x.is_alive()]
            self.threads.append(t)
            t.start()

    def forget(self, sock):
        with self.lock:  # not while close() below shuts it down
            self.conns.discard(sock)
            sock.close()

    def close(self, timeout: float = 2.0):
        self.listener.close()
        with self.lock:
            for sock in self.conns:  # wakes the threads blocked in recv()
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for t in self.threads:
            t.join(timeout)


def main(argv=None) -> int:
    global socket
    ap = argparse.ArgumentParser(description="small threaded HTTP/1.1 server")
    ap.add_argument("--host", default="0.0.0.0", help="address to listen on (0.0.0.0)")
    ap.add_argument("--port", type=int, default=8080, help="port to listen on (8080; 0 = any)")
    ap.add_argument("--fpd", action="store_true",
                    help="use fpd's socket module (fpd.client) instead of the kernel's")
    ap.add_argument("--idle-timeout", type=float, default=60.0,
                    help="close a connection idle this many seconds (60; 0 = never)")
    ap.add_argument("--verbose", "-v", action="store_true", help="log requests to stderr")
    args = ap.parse_args(argv)
    if args.fpd:
        socket = importlib.import_module("fpd.client")
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        server = HttpServer(args.host, args.port, args.verbose, args.idle_timeout)
    except (OSError, Stop) as e:
        print(f"http_server: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    try:
        host, port = server.address
        print(f"listening on {host}:{port} ({socket.__name__})", flush=True)
        server.serve_forever()
    except Stop:
        pass
    except OSError as e:  # the listener broke (e.g. the fpd daemon went away)
        print(f"http_server: accept failed: {e}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
