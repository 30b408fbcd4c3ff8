"""The chunked receive queue (fpd.tcp.RcvQueue) against a bytearray model, and the
engine's readers on it (recv, recv_into, recv_to), on both builds of the engine."""

import random

try:
    from test_engine_data import est, data
except ImportError:  # pragma: no cover
    from .test_engine_data import est, data
from fpd import tcp


def _queue(tcp_build):
    return (tcp._compiled.RcvQueue if tcp_build == "compiled" else tcp.RcvQueue)()


def test_queue_matches_a_bytearray_model(tcp_build):
    rnd = random.Random(7)
    q = _queue(tcp_build)
    model = bytearray()
    kept = []                       # what was appended, to check nothing was changed
    for step in range(3000):
        op = rnd.random()
        if op < 0.5:
            n = rnd.choice((1, 7, 100, 511, 512, 1448, 5000, 70000))
            raw = rnd.randbytes(n)
            kind = rnd.randrange(4)
            if kind == 0:
                q.append(raw)
            elif kind == 1:
                src = bytearray(raw)
                q.append(src)
                src[:] = b"\0" * n          # the caller reuses its buffer: copied
            elif kind == 2:
                src = bytearray(raw)
                q.append(memoryview(src))
                src[:] = b"\0" * n
            else:
                q.append_owned(bytearray(raw))
            kept.append(raw)
            model += raw
        elif op < 0.65:
            n = rnd.randrange(-1, 90000)
            want = bytes(model) if n < 0 else bytes(model[:n])
            assert q.take(n) == want
            del model[:len(want)]
        elif op < 0.8:
            buf = bytearray(rnd.randrange(0, 90000))
            k = q.take_into(buf)
            assert k == min(len(buf), len(model))
            assert buf[:k] == model[:k]
            del model[:k]
        elif op < 0.9:
            lim = rnd.randrange(1, 90000)
            got = []

            def write(parts):             # takes part of what it is offered, as a ring
                b = b"".join(parts)
                k = rnd.randrange(0, len(b) + 1)
                got.append(b[:k])
                return k
            k = q.take_to(write, rnd.choice((-1, lim)))
            assert (got[0] if got else b"") == model[:k]
            del model[:k]
        else:
            n = rnd.randrange(-1, 90000)
            assert q.peek(n) == (bytes(model) if n < 0 else bytes(model[:n]))
        assert len(q) == len(model) and bool(q) == bool(model)
    assert bytes(q) == model
    q.clear()
    assert len(q) == 0 and not q and q.take() == b"" and q.peek() == b""


def test_small_appends_share_chunks(tcp_build):
    q = _queue(tcp_build)
    for _ in range(10000):
        q.append(b"x")
    assert len(q) == 10000 and len(q.chunks) == 1      # not an object per byte
    big = b"y" * 4096
    q.append(big)
    assert q.chunks[-1] is big                          # bytes kept by reference
    assert q.take(10000) == b"x" * 10000 and q.take() == big


def _reads(method, sizes):
    """A scripted transfer; the app reads ``sizes`` after each segment with ``method``;
    returns every segment the engine sent and every byte read."""
    h = est(quickack=0, rcvbuf=32768)
    c = h.c
    out, got = [], bytearray()
    off = 0
    for i, n in enumerate(sizes):
        out += h.inp(data(h, off, 1000))
        off += 1000
        if n:
            if method == "recv":
                got += c.recv(n)
            elif method == "recv_into":
                b = bytearray(n)
                got += b[:c.recv_into(b)]
            else:
                c.recv_to(lambda parts: (got.extend(b"".join(parts)), len(b"".join(parts)))[1],
                          n)
        out += h.advance(0.001)
    got += c.recv()
    out += h.out()
    return [(s.seq, s.ack, s.wnd, s.flags, bytes(s.payload)) for s in out], bytes(got), off


def test_readers_give_identical_windows_and_bytes(tcp_build):
    rnd = random.Random(3)
    sizes = [rnd.choice((0, 0, 0, 1, 500, 1000, 3000, 20000)) for _ in range(120)]
    ref, got, total = _reads("recv", sizes)
    assert len(got) == total and got == b"".join(bytes([65 + o % 26]) * 1000
                                                 for o in range(0, total, 1000))
    assert any(s[2] < 32768 for s in ref)              # the window did close in between
    for m in ("recv_into", "recv_to"):
        assert _reads(m, sizes) == (ref, got, total)


def test_an_idle_connection_holds_no_queue_chunks(tcp_build):
    """Idle state is small: the receive queue makes its deque at the first append and
    drops it when read empty; the SACK cache is the shared empty tuple; the address
    tuples are made on use (docs/PERFORMANCE.md, stop 19)."""
    h = est(quickack=0)
    c = h.c
    assert c.rcvq.chunks == () and c.sack_cache == ()
    assert c.local == (c._la, c._lp) and c.remote == (c._ra, c._rp)
    h.inp(data(h, 0, 1))
    assert len(c.rcvq.chunks) == 1 and c.readable == 1
    assert c.recv(1) == b"A"
    assert c.rcvq.chunks == () and not c.rcvq
    h.inp(data(h, 1, 3000))
    assert c.recv(10) == b"B" * 10 and len(c.rcvq) == 2990 and c.rcvq.chunks
    got = bytearray(5000)
    assert c.recv_into(got) == 2990 and c.rcvq.chunks == ()
    h.inp(data(h, 3001, 100))
    assert c.recv_to(lambda parts: sum(len(p) for p in parts)) == 100
    assert c.rcvq.chunks == ()
