"""Pacing (issue #9, StackConfig.pacing) and the two sender defects kernelcmp left
(delivery rate over the ACK interval only; cwnd growing while not cwnd-limited).
Virtual time, a scripted peer; every engine test runs on both builds (conftest)."""

import pytest

try:
    from test_engine_helpers import Harness, mkseg, SYN, ACK, MASK
except ImportError:  # pragma: no cover
    from .test_engine_helpers import Harness, mkseg, SYN, ACK, MASK

MSS = 1000
RTT = 0.1


def est(rtt=RTT, **kw):
    """An accepted SACK connection (no timestamps, MSS 1000, a large window) whose
    handshake took ``rtt`` (SRTT = rtt from the SYN-ACK's sample)."""
    kw.setdefault("cc", "newreno")
    h = Harness(**kw)
    h.listener = h.stack.listen(b"\0\0\0\0", 80)
    out = h.inp(mkseg(SYN, 1000, mss=MSS, sack_ok=True, wscale=7))
    iss = out[0].seq
    h.now += rtt
    assert h.inp(mkseg(ACK, 1001, iss + 1, wnd=8000)) == []
    h.c = h.events()[-1][2]
    h.p, h.q = 1001, iss + 1
    assert abs(h.c.srtt - rtt) < 1e-9
    return h


def off(h, s):
    return (s.seq - h.q) & MASK


def timeline(h, until, step=0.001):
    """[(time, offset)] of every data segment sent while the clock moves to ``until``."""
    seen = []
    while h.now < until - 1e-12:
        for s in h.advance(step):
            if s.payload:
                seen.append((round(h.now, 6), off(h, s)))
    return seen


def test_off_sends_iw10_at_once_on_sends_it_over_the_rtt():
    h = est()
    h.c.send(b"x" * 10 * MSS, h.now)
    assert len([s for s in h.out() if s.payload]) == 10      # off: one burst (today)
    h = est(pacing=True)
    t0 = h.now
    h.c.send(b"x" * 10 * MSS, h.now)
    first = [s for s in h.out() if s.payload]
    # rate = 2 x 10 segments / 100 ms: a quantum of 2 segments (rate x 1 ms < 2 MSS)
    assert len(first) == 2
    assert h.c.info()["pacing_rate"] == pytest.approx(2 * 10 * MSS / RTT)
    rest = timeline(h, t0 + RTT)
    assert [o for _, o in rest] == [i * MSS for i in range(2, 10)]
    times = sorted({t for t, _ in rest})
    # 2 segments every 2 MSS / rate = 10 ms: all 10 gone by half the RTT
    assert len(times) == 4 and times[-1] - t0 == pytest.approx(0.04, abs=0.0015)
    assert h.stack.stats.paced_waits >= 4
    assert h.stack.stats.rto_timeouts == 0 and h.stack.stats.tlp_probes == 0


def test_stretch_ack_release_is_paced():
    """An ACK for 8 segments at once (a stretch ACK) lets 16 out in slow start: paced
    over the RTT, not one burst."""
    h = est(pacing=True, init_cwnd=8)
    h.c.send(b"y" * 40 * MSS, h.now)
    timeline(h, h.now + 0.05)                       # IW8 paced out
    assert h.c.snd_nxt_o - h.c.snd_una_o == 8 * MSS
    h.now += 0.06
    out = [s for s in h.inp(mkseg(ACK, h.p, h.q + 8 * MSS, wnd=8000)) if s.payload]
    assert 1 <= len(out) <= 4                       # a quantum, not 16 segments
    t0 = h.now
    rest = timeline(h, t0 + RTT)
    assert len(out) + len(rest) == 16
    assert rest[-1][0] - t0 > 0.02
    h2 = est(init_cwnd=8)                           # off: the whole release at once
    h2.c.send(b"y" * 40 * MSS, h2.now)
    h2.out()
    h2.now += RTT
    assert len([s for s in h2.inp(mkseg(ACK, h2.p, h2.q + 8 * MSS, wnd=8000))
                if s.payload]) == 16


def test_pacing_deadline_and_the_other_timers():
    """While paced, the RTO and the probe timer stay armed from the first segment, the
    pacing deadline is the earliest, and a delayed ACK owed is still sent on time."""
    h = est(pacing=True, quickack=0)
    h.c.send(b"z" * 10 * MSS, h.now)
    h.out()
    c = h.c
    assert c.t_pace is not None and c.t_rtx is not None and c.t_probe is not None
    assert c.t_pace < c.t_probe <= c.t_rtx
    assert h.stack.next_deadline() == pytest.approx(c.t_pace)
    # data from the peer: an ACK is owed (delayed: 40 ms) while pacing waits
    h.inp(mkseg(ACK, h.p, h.q, payload=b"a" * 100, wnd=8000))
    assert c.t_dack is not None
    timeline(h, h.now + 0.05)
    assert c.snd_nxt_o - c.snd_una_o == 10 * MSS
    assert c.t_dack is None and not c.ack_pending     # sent (by data or the timer)
    # the tail is lost: the probe, then the RTO, fire as without pacing
    timeline(h, h.now + 2.0)
    assert h.stack.stats.tlp_probes == 1 and h.stack.stats.rto_timeouts >= 1


def test_no_stall_with_a_huge_srtt():
    """SRTT of 20 s and cwnd 2: the quantum is 2 segments every 10 s; data keeps
    flowing at each pacing deadline, and the gap stays below the RTO."""
    h = est(rtt=20.0, pacing=True, init_cwnd=2, rto_max=600.0)
    h.c.send(b"w" * 4 * MSS, h.now)
    assert len([s for s in h.out() if s.payload]) == 2
    h.c.send(b"w" * 20 * MSS, h.now)
    h.now += 20.0
    # cwnd 4 (slow start), rate 2 x 4 segments / 20 s: a quantum of 2 segments now,
    # 2 more 5 s later
    out = [s for s in h.inp(mkseg(ACK, h.p, h.q + 2 * MSS, wnd=8000)) if s.payload]
    assert len(out) == 2
    assert h.c.t_pace is not None and h.c.t_pace < h.c.t_rtx
    seen = timeline(h, h.now + 15.0, step=0.5)
    assert len(seen) == 2 and seen[0][0] - (h.now - 15.0) < 6.0
    assert h.stack.stats.rto_timeouts == 0


@pytest.mark.parametrize("loss", [0.0, 0.02])
def test_pacing_transfer_over_the_simulated_link(loss):
    """1 MB each way over a 20 ms path with a 100 Mbit/s bottleneck and a 300-segment
    queue, pacing on at both ends: both streams intact, the quantum held data back
    (paced_waits), and on the clean path no queue drop."""
    import simlink as SL
    data = bytes(i * 7 % 251 for i in range(1_000_000))
    cfg = dict(SL.ROBUST_CONFIG, pacing=True)
    res = SL.run(seed=1, schedule=[SL.Phase(loss=loss, delay=0.01)], a_data=data,
                 b_data=data[:300_000], a_config=cfg, b_config=cfg,
                 bandwidth=12.5e6, queue=300)
    res.check()
    assert res.a_counters["paced_waits"] > 0
    if not loss:
        assert res.stats_ab.get("queue_drops", 0) == 0
        assert res.a_counters["retransmits"] == 0


# ---- the two defects -------------------------------------------------------------
def test_delivery_rate_takes_the_longer_of_send_and_ack_intervals():
    """10 segments sent 10 ms apart (100 kB/s); the first one's ACK comes late (100 ms)
    and starts a rate sample, the ACK of the other nine comes 25 ms after it: over the
    ACK interval alone that reads 360 kB/s, faster than anything was sent; over the
    longer send interval (Linux's tcp_rate_gen) ~100 kB/s. Failed before: 360 kB/s."""
    h = est(rtt=0.01, nodelay=True)
    c = h.c
    t = h.now
    for i in range(10):
        h.now = t + 0.01 * i
        c.send(b"d" * MSS, h.now)
        assert len(h.out()) == 1
    h.now = t + 0.1
    h.inp(mkseg(ACK, h.p, h.q + MSS, wnd=8000))       # starts the sample
    h.now += 0.025
    h.inp(mkseg(ACK, h.p, h.q + 10 * MSS, wnd=8000))
    rate = c.info()["delivery_rate"]
    assert rate is not None and 90_000 < rate < 120_000, rate


def test_cwnd_does_not_grow_in_congestion_avoidance_when_app_limited():
    """Congestion avoidance, the application keeping 4 segments in flight of a cwnd of
    10: cwnd stays (RFC 7661; Linux grows only when cwnd-limited). Failed before: the
    old rule grew cwnd whenever half of it was in flight."""
    h = est(rtt=0.01, nodelay=True)
    c = h.c
    c.cc.ssthresh = 10 * MSS            # congestion avoidance from the start
    cw0 = c.cc.cwnd
    acked = 0
    for rnd in range(60):
        c.send(b"e" * 6 * MSS, h.now)
        h.out()
        h.now += 0.01
        acked += 6 * MSS
        h.inp(mkseg(ACK, h.p, h.q + acked, wnd=8000))
    assert c.cc.cwnd == cw0, (cw0, c.cc.cwnd)
    # cwnd-limited (more than cwnd queued): it grows
    c.send(b"e" * 100 * MSS, h.now)
    for rnd in range(10):
        n = len([s for s in h.out() if s.payload])
        h.now += 0.01
        acked += n * MSS
        h.inp(mkseg(ACK, h.p, h.q + acked, wnd=8000))
    assert c.cc.cwnd > cw0
