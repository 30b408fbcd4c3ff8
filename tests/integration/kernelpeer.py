"""Helpers for tests where the Linux kernel's TCP is the peer: test data and a duplex
transfer on a kernel socket."""

import hashlib
import socket
import threading


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
