"""Issue #9, the rest of the recovery: F-RTO (RFC 5682 §3.1), PRR (RFC 6937) and
HyStart++ (RFC 9406); virtual time, a scripted peer (the helpers of
test_engine_recovery.py: MSS 1000, SACK, no timestamps, RTT 100 ms). Each test also
runs (or states) what the engine did without the mechanism, so it fails without it."""

import pytest

try:
    from test_engine_recovery import est, off, sack, MSS, RTT
    from test_engine_helpers import mkseg, ACK
except ImportError:  # pragma: no cover
    from .test_engine_recovery import est, off, sack, MSS, RTT
    from .test_engine_helpers import mkseg, ACK


def data_offs(h, out):
    return [off(h, s) for s in out if s.payload]


# ------------------------------------------------------------------------ F-RTO ----
def _rto(h, n=20):
    """Send n segments' worth with cwnd 10; nothing comes back until the RTO, which
    resends the first segment only (cwnd 1 MSS)."""
    h.c.send(b"f" * n * MSS, h.now)
    assert len(h.out()) == 10
    before = (h.c.info()["cwnd"], h.c.info()["ssthresh"])
    out = h.advance(0.31)                          # RTO = SRTT + 200 ms = 300 ms
    assert h.stack.stats.rto_timeouts == 1 and data_offs(h, out) == [0]
    return before


@pytest.mark.parametrize("on", [True, False])
def test_frto_delayed_acks_after_a_spurious_rto_undo_it(on):
    """A delay spike, not a loss: the RTO fires, then the ACKs of the original segments
    arrive. F-RTO sends new data on the first ACK (not the go-back-N retransmissions
    of segments that are still in flight); the second ACK acknowledges a segment that
    was never retransmitted: the timeout was spurious, cwnd and ssthresh are restored,
    and nothing else is resent. Without F-RTO segments 1 and 2 are sent again at once
    and cwnd stays at slow start from one segment."""
    h = est(tlp=False, frto=on)
    before = _rto(h)
    out = h.inp(mkseg(ACK, h.p, h.q + 1 * MSS))
    assert data_offs(h, out) == ([10 * MSS, 11 * MSS] if on else [1 * MSS, 2 * MSS])
    out = h.inp(mkseg(ACK, h.p, h.q + 2 * MSS))
    st = h.stack.stats
    if not on:
        assert st.frto_spurious == 0 and h.c.info()["ca_state"] == "loss"
        assert h.c.info()["ssthresh"] < 1 << 29 and h.c.retransmits > 1
        return
    assert st.frto_spurious == 1 and st.frto_undos == 1
    assert (h.c.info()["cwnd"], h.c.info()["ssthresh"]) == before
    assert h.c.info()["ca_state"] == "open" and h.c.info()["lost_out"] == 0
    sent = data_offs(h, out)
    for k in range(3, 13):                         # the other delayed ACKs
        h.now += 0.001
        sent += data_offs(h, h.inp(mkseg(ACK, h.p, h.q + k * MSS)))
    assert h.c.retransmits == 1                    # only the RTO's own
    assert sent and min(sent) >= 12 * MSS          # new data only
    assert h.stack.stats.rto_timeouts == 1


@pytest.mark.parametrize("sack_ok", [True, False])
def test_frto_genuine_loss_is_not_undone(sack_ok):
    """Everything after the RTO's retransmission was really lost: the first ACK covers
    only the retransmission, F-RTO sends two new segments, and the next ACK is a
    duplicate (SACKing them, or without SACK just a duplicate): the loss was real,
    conventional recovery retransmits segment 1 onwards, no undo."""
    h = est(tlp=False, sack=sack_ok)
    _rto(h)
    out = h.inp(mkseg(ACK, h.p, h.q + 1 * MSS))
    assert data_offs(h, out) == [10 * MSS, 11 * MSS]
    dup = dict(sack=sack(h, (10 * MSS, 12 * MSS))) if sack_ok else {}
    out = h.inp(mkseg(ACK, h.p, h.q + 1 * MSS, **dup))
    assert data_offs(h, out)[:1] == [1 * MSS]      # the go-back-N retransmissions
    st = h.stack.stats
    assert st.frto_spurious == 0 and st.frto_undos == 0
    assert h.c.info()["ca_state"] == "loss" and h.c.info()["ssthresh"] < 1 << 29


def test_frto_first_ack_covering_everything_is_no_verdict():
    """RFC 5682 step 2a: the first ACK after the RTO acknowledges all that was sent
    before it (the retransmission filled the only hole): ambiguous, no undo."""
    h = est(tlp=False)
    h.c.send(b"f" * 3 * MSS, h.now)
    assert len(h.out()) == 3
    h.advance(0.31)
    assert h.stack.stats.rto_timeouts == 1
    h.inp(mkseg(ACK, h.p, h.q + 3 * MSS))
    assert h.stack.stats.frto_spurious == 0 and h.c.info()["ssthresh"] < 1 << 29
    assert h.c.frto == 0


def test_frto_not_after_an_rto_in_fast_recovery():
    """RFC 5682 §3.1 step 1: an RTO that ends a fast recovery is not tested by F-RTO
    (the recovery's retransmissions were lost: the loss was real)."""
    h = est(tlp=False)
    h.c.send(b"f" * 10 * MSS, h.now)
    h.out()
    h.now += RTT
    for i in (1, 2, 3):
        h.inp(mkseg(ACK, h.p, h.q, sack=sack(h, (MSS, (i + 1) * MSS))))
    assert h.c.info()["ca_state"] == "recovery"
    h.advance(1.0)
    assert h.stack.stats.rto_timeouts >= 1 and h.c.frto == 0


# -------------------------------------------------------------------------- PRR ----
def _flight20(h, n=40):
    h.c.send(b"p" * n * MSS, h.now)
    assert len(h.out()) == 20                      # init_cwnd 20
    h.now += RTT


def _sacks_one_by_one(h, first, last, hole_end):
    """One ACK per delivered segment first..last-1, SACKing [hole_end, k+1); returns the
    list of data segments (offsets) each ACK released."""
    per_ack = []
    for k in range(first, last):
        out = h.inp(mkseg(ACK, h.p, h.q, sack=sack(h, (hole_end * MSS, (k + 1) * MSS))))
        per_ack.append(data_offs(h, out))
        h.now += 0.001
    return per_ack


@pytest.mark.parametrize("on", [True, False])
def test_prr_one_loss_spreads_the_reduction_over_the_recovery(on):
    """cwnd 20, segment 0 lost, the 19 others SACKed one ACK each: NewReno halves to
    10 segments. PRR sends about one segment per two delivered, from the first ACK of
    the recovery on (~10 over the recovery: the retransmission and ~9 new); without it
    (RFC 6675's pipe rule alone) nothing leaves for the first half of the recovery,
    then one per ACK."""
    h = est(tlp=False, rack=False, init_cwnd=20, prr=on)
    _flight20(h)
    per_ack = _sacks_one_by_one(h, 1, 20, 1)
    assert per_ack[2][:1] == [0]                   # the third SACK: fast retransmit
    assert h.c.info()["ca_state"] == "recovery" and h.c.info()["ssthresh"] == 10 * MSS
    total = sum(len(x) for x in per_ack)
    first_half = sum(len(x) for x in per_ack[3:11])
    if on:
        assert 9 <= total <= 11, per_ack
        assert first_half >= 3, per_ack            # sending goes on at once ...
        assert all(len(x) <= 1 for x in per_ack[3:]), per_ack    # ... one at a time
    else:
        assert first_half == 0, per_ack            # the pause of RFC 6675 alone
    out = h.inp(mkseg(ACK, h.p, h.q + 22 * MSS))  # (+ the two limited-transmit ones)
    assert h.c.info()["ca_state"] == "open" and h.c.info()["cwnd"] == 10 * MSS


@pytest.mark.parametrize("on", [True, False])
def test_prr_ssrb_bounds_the_burst_when_many_segments_are_lost(on):
    """cwnd 20, segments 0-16 lost, 17-19 SACKed: at recovery the pipe is ~1 segment,
    far below ssthresh (10). RFC 6675 alone fills cwnd at once (a burst of 9-10
    retransmissions); PRR's slow-start reduction bound sends what was delivered (+1
    segment when SND.UNA advances), so the pipe grows back like slow start."""
    h = est(tlp=False, rack=False, init_cwnd=20, prr=on)
    _flight20(h)
    per_ack = _sacks_one_by_one(h, 17, 20, 17)
    burst = per_ack[-1]
    assert burst[:1] == [0] and h.c.info()["ca_state"] == "recovery"
    if on:
        assert len(burst) <= 2, burst
        assert h.stack.stats.prr_ssrb >= 1
    else:
        assert len(burst) >= 8, burst
    # the retransmissions' ACKs, one segment each: at most 2 segments per ACK with PRR
    sent = []
    una = 1
    for k in range(6):
        out = h.inp(mkseg(ACK, h.p, h.q + una * MSS, sack=sack(h, (17 * MSS, 20 * MSS))))
        sent.append(data_offs(h, out))
        una += 1
        h.now += 0.001
    if on:
        assert all(1 <= len(x) <= 2 for x in sent), sent


def test_partial_ack_without_sack_blocks_lets_rack_mark_the_holes():
    """The partial-ACK rule of RFC 6582 ("the next hole is lost") is RACK's job with
    SACK: segments 0 and 5-9 lost, 1-4 SACKed; the retransmission of 0 is acknowledged
    by an ACK without SACK blocks (the receiver holds nothing above): RACK marks all of
    5-9 lost at once (they were sent before the delivered retransmission), and PRR
    releases the first of them; the rule alone resent only segment 5."""
    h = est(tlp=False)
    h.c.send(b"x" * 10 * MSS, h.now)
    h.out()
    h.now += RTT
    for i in (1, 2, 3, 4):
        h.inp(mkseg(ACK, h.p, h.q, sack=sack(h, (MSS, (i + 1) * MSS))))
    assert h.c.info()["ca_state"] == "recovery"
    h.now += RTT
    out = h.inp(mkseg(ACK, h.p, h.q + 5 * MSS))
    assert data_offs(h, out)[:1] == [5 * MSS]
    assert h.c.info()["lost_out"] == 5 * MSS and h.stack.stats.rto_timeouts == 0


# -------------------------------------------------------------------- HyStart++ ----
from fpd import cc as CC  # noqa: E402


class _Rounds:
    """Drive a controller's initial slow start by hand: rounds of ACKs (one segment
    each, two segments sent per ACK), every ACK with the given RTT sample."""

    def __init__(self, name):
        self.c = CC.make(name, 1000, 10 * 1000)
        self.c.hs_state = CC.HS_SS
        self.una, self.nxt = 0, 10 * 1000

    def round(self, rtt):
        """One round: ACKs up to the SND.NXT of its start; returns the events."""
        end = self.c.hs_end or self.nxt
        evs = []
        while self.una < end:
            self.una += 1000
            ev = self.c.hystart_ack(rtt, self.una, self.nxt)
            if ev:
                evs.append(ev)
                self.at_event = (self.c.cwnd, self.c.ssthresh)
            self.c.on_ack(1000, rtt, 0.0)
            self.nxt += 2000
        return evs


@pytest.mark.parametrize("name", ["newreno", "cubic"])
def test_hystart_delay_increase_enters_css_then_congestion_avoidance(name):
    """RFC 9406: a round whose minimum RTT (8+ samples) is 14 ms above the last one's
    (threshold clamp(105/8 ms, 4, 16) = 13.1 ms) ends slow start: CSS, where cwnd grows
    by a quarter of what is acknowledged; after CSS_ROUNDS rounds, ssthresh = cwnd."""
    r = _Rounds(name)
    assert r.round(0.100) == [] and r.round(0.100) == [] and r.round(0.105) == []
    assert r.round(0.119) == [CC.HS_EV_CSS] and r.c.hs_state == CC.HS_CSS
    cw = r.c.cwnd
    r.c.on_ack(4000, 0.119, 0.0)
    assert r.c.cwnd == cw + 1000                   # CSS_GROWTH_DIVISOR 4
    evs = []
    for _ in range(CC.CSS_ROUNDS):
        evs += r.round(0.119)
    assert evs == [CC.HS_EV_EXIT] and r.c.hs_state == CC.HS_OFF
    cwnd, ssthresh = r.at_event
    assert ssthresh == cwnd < CC.INFINITE_SSTHRESH
    assert r.c.cwnd < r.c.ssthresh + 1000            # congestion avoidance since


def test_hystart_spurious_exit_goes_back_to_slow_start():
    """Jitter, not a queue: in CSS a round's minimum RTT falls below the one that made
    it exit; slow start resumes (full growth again), and a real increase later enters
    CSS again."""
    r = _Rounds("newreno")
    r.round(0.100)
    r.round(0.100)
    assert r.round(0.120) == [CC.HS_EV_CSS]
    assert r.round(0.101) == [CC.HS_EV_RESUME] and r.c.hs_state == CC.HS_SS
    cw = r.c.cwnd
    r.c.on_ack(4000, 0.1, 0.0)
    assert r.c.cwnd == cw + 4000
    assert r.round(0.130) == [CC.HS_EV_CSS]


def test_hystart_only_in_the_initial_slow_start():
    r = _Rounds("cubic")
    r.round(0.1)
    r.c.on_recovery_enter(0.0, r.c.cwnd)
    assert r.c.hs_state == CC.HS_OFF


@pytest.mark.parametrize("on", [True, False])
def test_hystart_avoids_the_slow_start_overshoot_rto(on):
    """The loss sweep's 100 ms, 100 Mbit/s path (2000-segment queue): without HyStart++
    slow start overflows the queue so far that recovery ends in an RTO; with it the
    RTT growth ends slow start first (CSS), no RTO, fewer retransmissions. Both buffers
    are fixed (no autotuning; receive 6 MiB, more than BDP + queue; send 4 MiB, the
    default ceiling) so that the sender's slow start, not how fast the receiver's window
    opens, is what is tested."""
    import simlink as SL
    data = bytes(i * 7 % 251 for i in range(20_000_000))
    res = {}
    fixed = dict(rcvbuf=6 << 20, rcvbuf_max=0, sndbuf=4 << 20, sndbuf_max=0)
    for hs in (on, not on):
        cfg = dict(SL.ROBUST_CONFIG, cc="cubic", hystart=hs, **fixed)
        r = SL.run(seed=0, schedule=[SL.Phase(delay=0.05)], a_data=data, b_data=b"",
                   a_config=cfg, b_config=cfg, bandwidth=12.5e6, queue=2000)
        r.check()
        res[hs] = r.a_counters
    assert res[True]["hystart_css"] >= 1 and res[False]["hystart_css"] == 0
    assert res[True]["rto_timeouts"] == 0 and res[False]["rto_timeouts"] >= 1
    assert res[True]["retransmits"] < res[False]["retransmits"]


def test_rack_not_dupthresh_starts_recovery_once_reordering_was_seen():
    """kernelcmp's finding (news 19:01): with RACK, three SACKed segments above a hole
    no longer start recovery by themselves (Linux since 5.10: RACK or RFC 6675, not
    both). Once the path has shown reordering, RACK waits its reordering window; the
    late segment arrives inside it and nothing is retransmitted. With rack=False the
    DupThresh rule retransmits it at once (a spurious retransmission)."""
    for rack in (True, False):
        h = est(tlp=False, rack=rack)
        c = h.c
        c.send(b"o" * 14 * MSS, h.now)
        h.out()
        h.now += RTT
        h.inp(mkseg(ACK, h.p, h.q, sack=sack(h, (MSS, 2 * MSS))))    # 0 late ...
        h.now += RTT / 20
        h.inp(mkseg(ACK, h.p, h.q + 2 * MSS))                        # ... it came
        assert c.retransmits == 0 and (c.rack_reord or not rack)
        h.now += 0.001
        out = []
        for k in (4, 5, 6):                                          # 2 late, 3-5 in
            out += h.inp(mkseg(ACK, h.p, h.q + 2 * MSS, sack=sack(h, (3 * MSS, k * MSS))))
        if not rack:
            assert 2 * MSS in data_offs(h, out) and c.retransmits == 1
            continue
        assert 2 * MSS not in data_offs(h, out) and c.info()["ca_state"] == "open"
        h.now += RTT / 20                                            # within reo_wnd
        h.inp(mkseg(ACK, h.p, h.q + 6 * MSS))
        h.advance(RTT)
        assert c.retransmits == 0 and h.stack.stats.fast_retransmits == 0
