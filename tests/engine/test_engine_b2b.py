"""Two Stacks connected back to back: handshake, 1 MB each way, both close."""

import hashlib

import pytest

try:
    from test_engine_helpers import Stack, cfg, pump, SRV, PEER
except ImportError:  # pragma: no cover - when tests/engine is a package
    from .test_engine_helpers import Stack, cfg, pump, SRV, PEER
from fpd import tcp


def _transfer(size, cc="cubic", drop=None, **kw):
    a = Stack(b"key-a", cfg(cc=cc, time_wait=2.0, **kw))
    b = Stack(b"key-b", cfg(cc=cc, time_wait=2.0, **kw))
    lst = b.listen(b"\0\0\0\0", 80)
    now = 10.0
    ca = a.connect(now, PEER, 40001, SRV, 80)
    data_a = hashlib.sha256(b"a").digest() * (size // 32)
    data_b = hashlib.sha256(b"b").digest() * (size // 32)
    st = {"cb": None, "got_a": bytearray(), "got_b": bytearray(), "sent_a": 0, "sent_b": 0,
          "closed": set(), "peer_closed": set()}

    def service(now):
        for ev in a.events():
            if ev[0] == tcp.Event.READABLE:
                st["got_a"] += ev[1].recv()
            elif ev[0] == tcp.Event.PEER_CLOSED:
                st["peer_closed"].add("a")
            elif ev[0] == tcp.Event.CLOSED:
                st["closed"].add("a")
        for ev in b.events():
            if ev[0] == tcp.Event.ACCEPTED:
                assert ev[1] is lst
                st["cb"] = ev[2]
            elif ev[0] == tcp.Event.READABLE:
                st["got_b"] += ev[1].recv()
            elif ev[0] == tcp.Event.PEER_CLOSED:
                st["peer_closed"].add("b")
            elif ev[0] == tcp.Event.CLOSED:
                st["closed"].add("b")
        # also drain anything left (a reader that ignores events would still get it)
        st["got_a"] += ca.recv()
        cb = st["cb"]
        if cb is not None:
            st["got_b"] += cb.recv()
        for c, k, data in ((ca, "sent_a", data_a), (cb, "sent_b", data_b)):
            if c is None:
                continue
            if c.state in (tcp.ESTABLISHED, tcp.CLOSE_WAIT) and st[k] < len(data):
                st[k] += c.send(data[st[k]:st[k] + 65536], now)
                if st[k] == len(data):
                    c.shutdown(now)
            if c.eof and c.wr_shut and not c.closed_by_app:
                c.close(now)
        return st["closed"] == {"a", "b"}

    now = pump(a, b, now, service, drop=drop)
    assert bytes(st["got_b"]) == data_a
    assert bytes(st["got_a"]) == data_b
    assert a.stats.internal_errors == 0 and b.stats.internal_errors == 0
    assert not a.connections() and not b.connections()
    return a, b, now


@pytest.mark.parametrize("cc", ["cubic", "newreno"])
def test_back_to_back_1mb_each_way(cc):
    a, b, now = _transfer(1 << 20, cc=cc)
    assert a.stats.retransmits == 0 and b.stats.retransmits == 0


def test_back_to_back_no_options():
    _transfer(200_000, timestamps=False, sack=False, wscale=False)


def test_back_to_back_with_loss():
    import random
    rng = random.Random(7)
    a, b, now = _transfer(300_000, drop=lambda s, d: rng.random() < 0.03)
    assert a.stats.retransmits + b.stats.retransmits > 0


def test_back_to_back_with_loss_no_sack():
    import random
    rng = random.Random(11)
    _transfer(300_000, drop=lambda s, d: rng.random() < 0.03, sack=False, cc="newreno")
