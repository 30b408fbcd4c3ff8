"""The service's direct receive delivery (fpd.control._RxSink as Connection.rx_sink):
the engine's fast path writes in-order payloads straight into the client's RX ring.
Through the real client, service and engine on a loopback worker that feeds its
segments in bursts (fpd.fastpath.input_burst); FPD_RX_DIRECT=0 (the default) is the
reference path."""

import os
import threading
import time

import pytest

from fpd import shm
from fpd import client as socket
from fpd.loopback import PEER
from loopback_client import loopback_client

pytestmark = pytest.mark.timeout(60)

BIG = os.urandom(1_500_000)


@pytest.fixture(params=["direct", "queued"])
def daemon(request, monkeypatch):
    monkeypatch.setenv("FPD_RX_DIRECT", "1" if request.param == "direct" else "0")
    with loopback_client("fpdx", 16, workers=1, burst=True) as f:
        f.mode = request.param
        yield f


def _counters(daemon):
    return daemon.call(lambda w, svc: dict(svc.counters), 0)


def _entry(daemon, sock):
    return daemon.call(lambda w, svc: next(e for c in svc.clients.values()
                                           for e in c.entries.values()
                                           if e.slot == sock._slot), 0)


def _echo(s, data, read_after=0.0):
    """Send ``data`` to the peer's echo server and read it back; the reader starts
    ``read_after`` seconds late (the ring fills, the engine queues)."""
    got = bytearray()

    def rd():
        time.sleep(read_after)
        while len(got) < len(data):
            b = s.recv(70000)
            if not b:
                break
            got.extend(b)
    t = threading.Thread(target=rd)
    t.start()
    s.sendall(data)
    t.join(30)
    return bytes(got)


def test_bulk_echo_every_byte_in_order(daemon):
    with socket.create_connection((PEER, 7), timeout=10) as s:
        assert _echo(s, BIG) == BIG
    n = _counters(daemon).get("rx_direct_bytes", 0)
    if daemon.mode == "direct":
        assert 0 < n <= len(BIG)
    else:
        assert n == 0


def test_a_full_ring_falls_back_to_the_queue_and_keeps_order(daemon):
    with socket.create_connection((PEER, 7), timeout=10) as s:
        e = _entry(daemon, s)
        s.sendall(BIG[:400_000])           # echoed back: more than the 64 KiB ring
        deadline = time.monotonic() + 10
        queued = 0
        while time.monotonic() < deadline and not queued:
            queued = daemon.call(lambda w, svc: e.conn.readable if e.conn else 0, 0)
            time.sleep(0.01)
        assert queued                       # the ring is full: the engine holds the rest
        assert daemon.call(lambda w, svc: e.ends.rx.writable(), 0) == 0
        got = bytearray()
        while len(got) < 400_000:
            got += s.recv(70000)
        assert bytes(got) == BIG[:400_000]
        # and direct again once the ring has room
        before = _counters(daemon).get("rx_direct_bytes", 0)
        assert _echo(s, BIG[400_000:900_000]) == BIG[400_000:900_000]
        after = _counters(daemon).get("rx_direct_bytes", 0)
        assert (after > before) == (daemon.mode == "direct")


def test_a_corrupt_consumer_index_resets_only_that_connection(daemon):
    bad = socket.create_connection((PEER, 7), timeout=10)
    good = socket.create_connection((PEER, 7), timeout=10)
    try:
        assert _echo(bad, b"x" * 5000) == b"x" * 5000
        e = _entry(daemon, bad)

        def scribble(w, svc):
            region = e.client.region
            off = region.layout.slot_ctl(e.slot) + shm.SLOT_RX_HDR + shm.CONS_LINE
            region.mv[off:off + 8] = (2**63).to_bytes(8, "little")
            return True
        assert daemon.call(scribble, 0)
        bad.sendall(b"y" * 20000)           # the echo meets the corrupt ring
        with pytest.raises(OSError) as ei:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                bad.recv(70000)
        assert ei.value.errno == __import__("errno").EPROTO
        assert _counters(daemon).get("shm_corrupt_rx", 0) == 1
        assert _echo(good, BIG[:200_000]) == BIG[:200_000]
    finally:
        bad.close()
        good.close()
