"""The impairment bridge (fpd/impair.py) between the test bed's namespaces: a clean wire,
then loss + reordering + delay, with kernel TCP on both ends (no fpd involved)."""

import hashlib
import os
import threading
import time

import pytest

from fpd.impair import ImpairError
from fpd.testbed import TestBed


def _transfer(bed, size):
    """Kernel TCP peer -> server namespace, ``size`` bytes; returns (sent, received) digests."""
    data = os.urandom(size)
    srv = bed.socket(bed.srv_ns)
    srv.bind((bed.srv_ip, 0))
    srv.listen()
    srv.settimeout(30)
    port = srv.getsockname()[1]
    got = hashlib.sha256()

    def serve():
        c, _ = srv.accept()
        c.settimeout(30)
        while True:
            b = c.recv(65536)
            if not b:
                break
            got.update(b)
        c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    cli = bed.socket(bed.peer_ns)
    cli.settimeout(30)
    t0 = time.monotonic()
    cli.connect((bed.srv_ip, port))
    connect_s = time.monotonic() - t0
    cli.sendall(data)
    cli.close()
    t.join(40)
    srv.close()
    return hashlib.sha256(data).hexdigest(), got.hexdigest(), connect_s


def test_impair_clean_then_lossy_reordered_delayed():
    bed = TestBed(impair=True, impair_seed=3)
    with bed:
        assert bed.ns_exists(bed.mid_ns)
        sent, got, _ = _transfer(bed, 200_000)
        assert sent == got
        st = bed.impair.stats()
        assert st["to_srv"]["rx"] > 0 and st["to_peer"]["rx"] > 0
        assert st["to_srv"]["lost"] == 0 and st["to_srv"]["tx"] == st["to_srv"]["rx"]

        bed.impair.set(loss=0.03, reorder=0.05, delay=0.01, seed=5)
        sent, got, connect_s = _transfer(bed, 400_000)
        assert sent == got
        # SYN one way, SYN-ACK back: at least two one-way delays (a bound, not a timing)
        assert connect_s >= 0.02
        st = bed.impair.stats()
        for d in ("to_srv", "to_peer"):
            assert st[d]["delay"] == 0.01
        assert st["to_srv"]["lost"] > 0 and st["to_srv"]["reordered"] > 0
        assert st["to_srv"]["lost"] + st["to_srv"]["tx"] + st["to_srv"]["held"] \
            + st["to_srv"]["overflow"] == st["to_srv"]["rx"]

        bed.impair.clear()
        with pytest.raises(ImpairError):
            bed.impair.set(loss=2)
        with pytest.raises(ImpairError):
            bed.impair.set(direction="sideways", loss=0.1)
        pid = bed.impair.pid
    assert not bed.ns_exists(bed.mid_ns) and not bed.ns_exists(bed.srv_ns)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
