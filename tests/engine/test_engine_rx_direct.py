"""The fast path's direct receive delivery (``Connection.rx_sink``, fpd.fastpath._rx_direct):
in-order runs go straight into the owner's ring, as if the application had read them at
once. Checked against the per-segment reference with an application that reads, after
each burst, exactly what the sink took; and over random traffic (holes, reordering,
duplicates, a ring of random room) that the bytes the application gets, through the
ring and the engine's queue together, are the stream in order, none lost, none twice."""

import random

import pytest
from hypothesis import given, settings, strategies as hst

from fpd import fastpath
from fpd.stack import StackConfig
from fpd.wire import ACK, PSH, Segment

from test_fastpath import (IMPLS, STREAM, _CUR, Pair, _events, _use, conn_state,  # noqa: F401
                           fp_impl)

from fpd.fastpath import expand


class RingSink:
    """A byte ring of ``size`` (a power of two) with ``room`` free bytes: what
    ``write_with``'s fill copies into the ring's data is read back from there."""

    def __init__(self, size=1 << 14, room=1 << 14):
        self.data = bytearray(size)
        self.at = 0
        self.room = room
        self.got = bytearray()
        self.calls = 0

    def _took(self, n):
        self.room -= n
        return n

    def write_parts(self, parts):
        n = 0
        for p in parts:
            p = bytes(p)[:self.room - n]
            self.got += p
            n += len(p)
        return self._took(n)

    def write_with(self, fill):
        self.calls += 1
        if not self.room:
            return 0
        size = len(self.data)
        free = min(self.room, size)
        at = self.at
        n = fill(memoryview(self.data), at, free)
        assert 0 <= n <= free
        e = at + n
        self.got += self.data[at:e] if e <= size else self.data[at:] + self.data[:e - size]
        self.at = e % size
        return self._took(n)


def _state(c):
    d = conn_state(c)
    d.pop("rx_sink")
    return d


def _inorder_burst(p, rnd, n, c):
    """Up to ``n`` in-order segments, within the window ``c`` advertised (a peer that
    sent beyond it would meet the window update the direct path sends mid-burst, after
    the run the application took at once, where the reference has not read yet)."""
    mss = p.mss - (12 if p.ts else 0)
    burst = []
    edge = c.rcv_adv_o - 1
    for _ in range(n):
        k = rnd.choice((mss, mss, mss, rnd.randrange(1, mss + 1)))
        off = p.data_off
        if off + k > edge:
            break
        burst.append(p.seg(ACK | (PSH if rnd.random() < 0.3 else 0), p.acked,
                           STREAM[off:off + k]))
        p.data_off += k
    return burst


@pytest.mark.parametrize("seed", range(8))
def test_direct_delivery_equals_the_reference_reading_what_the_sink_took(seed, fp_impl):
    rnd = random.Random(seed)
    p = Pair(True, False, rnd, StackConfig(quickack=rnd.choice((0, 16)), raise_errors=True,
                                           rcvbuf=rnd.choice((65536, 262144))))
    ca, cb = (x[0] for x in p.conns())
    sink = RingSink(size=1 << rnd.choice((12, 14, 17)))
    cb.rx_sink = sink
    now = 0.01
    direct = 0
    for step in range(30):
        now += rnd.choice((0.0001, 0.001, 0.01))
        # the ring's room: sometimes none, sometimes part of a burst, often plenty
        sink.room = rnd.choice((0, 0, 1000, 5000, 20000, 1 << 20))
        before = len(sink.got)
        burst = _inorder_burst(p, rnd, rnd.randrange(1, 24), ca)
        for s in burst:
            p.ref.input(s.copy(), now)
        _CUR["ib"](p.fast, [s.copy() for s in burst], now)
        took = len(sink.got) - before
        direct += took
        if took:                                  # the reference application reads it
            assert ca.recv(took) == bytes(sink.got[before:])
        for st in (p.ref, p.fast):
            st.tick(now)
        a, b = p.ref.output(), expand(p.fast.output())
        assert [s.fields() for s in a] == [s.fields() for s in b]
        assert _events(p.ref) == _events(p.fast)
        assert _state(ca) == _state(cb)
    assert direct and sink.calls
    # what the engine queued when the ring was full is still there, in order, after it
    rest = cb.recv(-1)
    assert bytes(sink.got) + rest == STREAM[:p.data_off]


def _seg_at(p, o, n):
    return p.seg(ACK, p.acked, STREAM[o:o + n], seq_off=o)


@settings(max_examples=60, deadline=None)
@given(seed=hst.integers(0, 2 ** 32 - 1), impl=hst.sampled_from(IMPLS))
def test_random_traffic_through_a_sink_keeps_every_byte_in_order(seed, impl):
    """A sender that reorders, duplicates and drops, and resends what is not yet
    acknowledged; a ring of random room; an application that also reads the engine's
    queue at random times. Ring and reads append to one stream in the order they
    happen: it must be the sender's stream, every byte once."""
    _use(impl)
    try:
        rnd = random.Random(seed)
        cfg = StackConfig(quickack=rnd.choice((0, 2, 16)), raise_errors=True,
                          rcvbuf=rnd.choice((8192, 65536, 262144)))
        p = Pair(True, False, rnd, cfg)
        fast = p.fast
        cb = p.conns()[1][0]
        app = bytearray()
        sink = RingSink(size=1 << rnd.choice((10, 12, 16)))
        sink.got = app                       # the ring's bytes and the reads: one stream
        cb.rx_sink = sink
        mss = p.mss - (12 if p.ts else 0)
        end = 0
        now = 0.01
        for it in range(80):
            now += rnd.choice((0.0, 0.0001, 0.001, 0.01))
            last = it >= 60                  # the end: room, reads, no more losses
            sink.room = 1 << 20 if last else rnd.choice((0, 500, 3000, 1 << 20))
            if last or rnd.random() < 0.3:
                app += cb.recv(-1 if last else rnd.randrange(1, 70000))
            acked = cb.rcv_nxt_o - 1
            if end < 200000 and not last:
                while end - acked < 40 * mss:
                    n = rnd.choice((mss, mss, rnd.randrange(1, mss + 1)))
                    end += n
            o = acked
            burst = []
            while o < end and len(burst) < 24:
                n = min(mss, end - o)
                if last or rnd.random() > 0.1:               # 10 % lost
                    burst.append(_seg_at(p, o, n))
                o += n
            if not last:
                for _ in range(rnd.randrange(0, 3)):
                    if len(burst) > 1:                       # reorder
                        i = rnd.randrange(len(burst) - 1)
                        burst[i], burst[i + 1] = burst[i + 1], burst[i]
                    if burst and rnd.random() < 0.3:         # duplicate
                        burst.insert(rnd.randrange(len(burst)), rnd.choice(burst).copy())
            _CUR["ib"](fast, burst, now)
            fast.tick(now)
            fast.output()
            fast.events()
        app += cb.recv(-1)
        assert cb.rcv_nxt_o - 1 == end
        assert len(app) == end and bytes(app) == STREAM[:end]
    finally:
        _use(IMPLS[-1])


@pytest.mark.skipif(fastpath._accel_copy is None, reason="fpd._accel not built")
@pytest.mark.parametrize("seed", range(20))
def test_the_c_payload_copy_equals_the_python_one(seed):
    """Wrap at the ring's end, a limit that cuts a payload, a limit beyond the ring."""
    rnd = random.Random(seed)
    size = 1 << rnd.choice((6, 10, 12))
    segs = [Segment(payload=rnd.randbytes(rnd.choice((1, 7, 100, 1448))))
            for _ in range(rnd.randrange(1, 12))]
    i = rnd.randrange(len(segs))
    j = rnd.randrange(i, len(segs) + 2)
    at = rnd.randrange(size)
    limit = rnd.choice((0, 1, 50, size - 1, size, 10 * size))
    a, b = bytearray(rnd.randbytes(size)), None
    b = bytearray(a)
    n = fastpath._accel_copy(segs, i, j, memoryview(a), at, limit)
    assert n == fastpath._py_copy_payloads(segs, i, j, memoryview(b), at, limit)
    assert a == b
    want = b"".join(s.payload for s in segs[i:j])[:min(limit, size)]
    assert n == len(want)
    assert (a + a)[at:at + n] == want
