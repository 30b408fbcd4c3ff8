"""fpd.loopback's worker on its own: the link, the peer's echo, the blackhole (no root)."""

import time

from fpd import tcp, wire
from fpd.loopback import ADDR, BLACKHOLE, PEER, LoopbackWorker


def _run_until(w, cond, seconds=5.0):
    end = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < end, "timed out"
        w.poll_once(0.01)


def test_echo_on_the_peer_and_a_connection_to_itself():
    w = LoopbackWorker(echo_ports=(7,))
    got = {}
    try:
        st = w.stack
        me = wire.ip_to_bytes(ADDR)
        lst = st.listen(me, 8080)
        a = st.connect(w.clock(), me, 60000, wire.ip_to_bytes(PEER), 7)

        def app(host, evs, now):
            for ev in evs:
                if ev[0] == tcp.EV_CONNECTED:
                    ev[1].send(b"ping", now)
                elif ev[0] == tcp.EV_READABLE and ev[1] is a:
                    got["echo"] = got.get("echo", b"") + a.recv()
                elif ev[0] == tcp.EV_ACCEPTED and ev[1] is lst:
                    got["accepted"] = ev[2]
        w.app = app
        _run_until(w, lambda: got.get("echo") == b"ping")
        b = st.connect(w.clock(), me, 60001, me, 8080)    # the stack answers for ADDR
        _run_until(w, lambda: "accepted" in got)
        assert got["accepted"].remote == (me, 60001) and b.state == "ESTABLISHED"
        assert w.stats()["segments"] > 0
    finally:
        w.close()


def test_delay_and_blackhole():
    """Virtual time: a segment is delivered ``delay`` seconds after it was sent."""
    t = [100.0]
    w = LoopbackWorker(delay=0.1, clock=lambda: t[0])
    seen = []
    try:
        me = wire.ip_to_bytes(ADDR)
        w.app = lambda host, evs, now: seen.extend(ev[0] for ev in evs)
        w.stack.connect(w.clock(), me, 60000, wire.ip_to_bytes(PEER), 7)
        for _ in range(3):
            w.poll_once()                          # SYN sent, on the link
        assert w.counters["segments"] == 1 and not w.peer.connections()
        t[0] += 0.1
        w.poll_once()                              # SYN in, SYN-ACK out
        assert len(w.peer.connections()) == 1 and tcp.EV_CONNECTED not in seen
        t[0] += 0.1
        w.poll_once()
        assert tcp.EV_CONNECTED in seen
        c = w.stack.connect(w.clock(), me, 60001, wire.ip_to_bytes(BLACKHOLE), 80)
        w.poll_once()
        t[0] += 0.1
        w.poll_once()
        assert w.counters["blackholed"] == 1 and c.state == "SYN_SENT"
    finally:
        w.close()
