"""Helpers for tests where the Linux kernel's TCP is the peer: test data, a duplex
transfer on a kernel socket, and the engine-side app that mirrors it."""

import hashlib
import socket
import threading

from fpd import tcp


def pattern(n: int, seed: int) -> bytes:
    """``n`` bytes of seeded, non-repeating-looking test data (64 KiB period)."""
    block = hashlib.sha256(seed.to_bytes(4, "big")).digest() * 2048  # 64 KiB
    return (block * (n // len(block) + 1))[:n]


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def kernel_duplex(sock, out: bytes, timeout: float = 60.0):
    """Send ``out`` on ``sock`` while reading to EOF, then shut down writing.
    Returns (sha256 of what was read, its length)."""
    h = hashlib.sha256()
    n = [0]

    def reader():
        while True:
            d = sock.recv(1 << 20)
            if not d:
                break
            h.update(d)
            n[0] += len(d)

    r = threading.Thread(target=reader, daemon=True)
    r.start()
    try:
        sock.sendall(out)
        sock.shutdown(socket.SHUT_WR)
    finally:
        r.join(timeout)
    assert not r.is_alive(), "the kernel side never saw EOF"
    return h.hexdigest(), n[0]


class Duplex:
    """Engine-side app for one connection: sends ``out``, hashes what it receives.

    ``close_first``: half-close (shutdown) once everything is queued, close after the
    peer's EOF. Otherwise: wait for the peer's EOF, then close."""

    def __init__(self, out: bytes, close_first: bool = False):
        self.out = memoryview(out)
        self.sent = 0
        self.rx = hashlib.sha256()
        self.rx_bytes = 0
        self.conn = None
        self.eof = False
        self.close_first = close_first
        self.shut = False
        self.closed = False
        self.error = None
        self.info = None
        self.connected = threading.Event()
        self.done = threading.Event()

    def __call__(self, w, evs, now):
        for ev in evs:
            kind = ev[0]
            if kind == tcp.Event.ACCEPTED:
                self.conn = ev[2]
                self.connected.set()
            elif kind == tcp.Event.CONNECTED:
                self.connected.set()
            elif kind == tcp.Event.PEER_CLOSED:
                self.eof = True
            elif kind in (tcp.Event.RESET, tcp.Event.TIMED_OUT, tcp.Event.REFUSED):
                self.error = kind
            elif kind == tcp.Event.CLOSED:
                self.done.set()
        self.pump(now)

    def pump(self, now):
        c = self.conn
        if c is None or self.closed or self.error:
            return
        if self.info is None and c.state == tcp.ESTABLISHED:
            self.info = c.info()
        while c.readable:
            data = c.recv(1 << 20)
            self.rx.update(data)
            self.rx_bytes += len(data)
        while self.sent < len(self.out):
            n = c.send(self.out[self.sent:self.sent + 65536], now)
            if not n:
                break
            self.sent += n
        if self.sent == len(self.out):
            if self.eof:
                c.close(now)
                self.closed = True
            elif self.close_first and not self.shut:
                c.shutdown(now)
                self.shut = True
