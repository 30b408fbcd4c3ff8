"""Timers: RTO (back-off, Karn, give-up), keepalive, next_deadline bookkeeping."""

try:
    from test_engine_helpers import Harness, mkseg, kinds, SYN, ACK, RST, FIN, MASK
except ImportError:  # pragma: no cover
    from .test_engine_helpers import Harness, mkseg, kinds, SYN, ACK, RST, FIN, MASK
from fpd import tcp


def est(**kw):
    syn_opts = kw.pop("syn_opts", dict(mss=1000))
    h = Harness(**kw)
    c, piss, iss, sa = h.accept(syn_opts=syn_opts)
    h.p, h.q, h.c = piss + 1, iss + 1, c
    h.events()
    return h


def test_rto_backoff_cwnd_and_giveup():
    h = est(rto_initial=1.0, rto_min=0.2, rto_max=8.0, retries=5)
    h.c.send(b"r" * 5000, h.now)
    assert len(h.out()) == 5
    t0 = h.now
    times = []
    cw = []
    while h.c.state != tcp.CLOSED:
        d = h.stack.next_deadline()
        out = h.advance(d - h.now)
        if out and out[0].payload:
            assert out[0].seq == h.q                      # earliest unacked segment only
            assert len(out) == 1
            times.append(round(h.now - t0, 6))
            cw.append(h.c.info()["cwnd"])
    # handshake gave no RTT sample (no TS, SYN-ACK acked by the 3rd ACK at once) -> srtt 0
    rto0 = times[0]
    gaps = [round(b - a, 6) for a, b in zip([0.0] + times, times)]
    assert gaps[1] == 2 * gaps[0] and gaps[2] == 4 * gaps[0]
    assert max(gaps) <= 8.0                               # rto_max
    assert cw == [1000] * len(cw)                         # RTO -> cwnd = 1 SMSS
    assert len(times) == 5
    ev = kinds(h.events())
    assert ev == [tcp.Event.TIMED_OUT, tcp.Event.CLOSED]
    assert isinstance(rto0, float)


def test_rto_ssthresh_halves_flight():
    h = est(rto_initial=1.0, cc="newreno")
    h.c.send(b"r" * 8000, h.now)
    h.out()
    h.advance(h.stack.next_deadline() - h.now)
    assert h.c.info()["ssthresh"] == 4000 and h.c.info()["cwnd"] == 1000
    assert h.stack.stats.rto_timeouts == 1


def test_rto_recovery_go_back_n_then_slow_start():
    h = est(rto_initial=1.0, cc="newreno")
    h.c.send(b"r" * 4000, h.now)
    h.out()
    out = h.advance(h.stack.next_deadline() - h.now)
    assert [s.seq for s in out] == [h.q]
    out = h.inp(mkseg(ACK, h.p, h.q + 1000))
    # cwnd 2 segments: the next two lost segments go out again
    assert [(s.seq - h.q) & MASK for s in out] == [1000, 2000]
    out = h.inp(mkseg(ACK, h.p, h.q + 4000))
    assert h.c.info()["ca_state"] == "open" and h.c.info()["in_flight"] == 0


def test_keepalive_probes_and_timeout():
    h = est(keepalive=True, keepalive_idle=10.0, keepalive_interval=2.0, keepalive_count=3)
    out = h.advance(9.9)
    assert out == []
    out = h.advance(0.2)
    assert len(out) == 1 and out[0].seq == (h.q - 1) & MASK and out[0].payload == b""
    # the peer answers: idle timer starts over
    h.inp(mkseg(ACK, h.p, h.q))
    out = h.advance(9.0)
    assert out == []
    out = h.advance(1.1)
    assert len(out) == 1
    out = h.advance(2.0)
    out += h.advance(2.0)
    assert len(out) == 2
    out = h.advance(2.0)
    assert out and out[-1].flags & RST
    assert kinds(h.events()) == [tcp.Event.TIMED_OUT, tcp.Event.CLOSED]
    assert h.stack.stats.keepalive_probes == 4


def test_keepalive_switch_on_connection():
    h = est()
    assert h.stack.next_deadline() is None
    h.c.keepalive_idle = 30.0
    h.c.keepalive = True
    assert h.stack.next_deadline() == h.now + 30.0 or h.stack.next_deadline() <= h.now + 30.0
    h.c.keepalive = False
    out = h.advance(100)
    assert out == []


def test_delack_timer_and_next_deadline():
    h = est(quickack=0, delack=0.04)
    h.inp(mkseg(ACK, h.p, h.q, payload=b"x"))
    assert abs(h.stack.next_deadline() - (h.now + 0.04)) < 1e-9
    h.advance(0.05)
    assert h.stack.next_deadline() is None


def test_idle_connection_has_no_timers():
    h = est()
    assert h.stack.next_deadline() is None
    h.c.send(b"x", h.now)
    h.out()
    assert h.stack.next_deadline() is not None
    h.inp(mkseg(ACK, h.p, h.q + 1))
    assert h.stack.next_deadline() is None or not h.advance(10)


def test_rtt_measurement_without_timestamps_uses_karn():
    h = est(rto_initial=1.0)
    h.c.send(b"a" * 1000, h.now)
    h.out()
    h.now += 0.1
    h.inp(mkseg(ACK, h.p, h.q + 1000))
    i = h.c.info()
    assert abs(i["srtt"] - 0.1) < 1e-9 or i["srtt"] < 0.1   # the handshake may have sampled
    h.c.send(b"b" * 1000, h.now)
    h.out()
    h.advance(1.5)                                           # retransmitted
    srtt = h.c.info()["srtt"]
    h.now += 0.3
    h.inp(mkseg(ACK, h.p, h.q + 2000))
    assert h.c.info()["srtt"] == srtt                       # no sample from a retransmission


def test_timer_heap_does_not_keep_dead_connections():
    h = Harness(keepalive=True, keepalive_idle=7200.0)
    h.stack.listen(b"\0\0\0\0", 80)
    for port in range(1, 5001):
        out = h.inp(mkseg(SYN, 1, sport=port, mss=1000))
        h.inp(mkseg(ACK, 2, out[0].seq + 1, sport=port))
        h.inp(mkseg(RST, 2, sport=port))
    assert not h.stack.connections()
    assert len(h.stack._cx.timers) < 2100
    assert h.stack.next_deadline() is None
