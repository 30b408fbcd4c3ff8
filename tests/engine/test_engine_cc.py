"""Congestion control: the cc.py algorithms on their own (NewReno, CUBIC), and the
engine's loss recovery (SACK / RFC 6675, NewReno / RFC 6582, limited transmit)."""

import pytest

try:
    from test_engine_helpers import Harness, mkseg, kinds, SYN, ACK, RST, FIN, MASK
except ImportError:  # pragma: no cover
    from .test_engine_helpers import Harness, mkseg, kinds, SYN, ACK, RST, FIN, MASK
from fpd import cc as CC
from fpd import tcp

MSS = 1000


def test_newreno_slow_start_and_congestion_avoidance():
    c = CC.NewReno(MSS, 10 * MSS)
    c.ssthresh = 20 * MSS
    for _ in range(10):
        c.on_ack(MSS, 0.1, 0.0)
    assert c.cwnd == 20 * MSS                     # +1 MSS per MSS acked in slow start
    for _ in range(20):                            # one window's worth of ACKs: +1 MSS
        c.on_ack(MSS, 0.1, 0.0)
    assert c.cwnd == 21 * MSS
    c.on_ack(50 * MSS, 0.1, 0.0)                   # a stretch ACK counts fully in CA
    assert c.cwnd == 22 * MSS
    c2 = CC.NewReno(MSS, 10 * MSS)
    c2.on_ack(10 * MSS, 0.1, 0.0)                  # slow start: all bytes acked (Linux)
    assert c2.cwnd == 20 * MSS


def test_newreno_loss_and_rto():
    c = CC.NewReno(MSS, 40 * MSS)
    c.on_recovery_enter(0.0, 30 * MSS)
    assert c.ssthresh == 15 * MSS and c.cwnd == 15 * MSS
    c.on_recovery_exit(0.1)
    assert c.cwnd == 15 * MSS
    c.on_rto(1.0, 3 * MSS)
    assert c.ssthresh == 2 * MSS and c.cwnd == MSS   # max(FlightSize/2, 2*SMSS)
    c.on_rto(2.0, 3 * MSS, first=False)               # back-off of the same loss
    assert c.ssthresh == 2 * MSS


def test_cubic_reduction_and_fast_convergence():
    c = CC.Cubic(MSS, 100 * MSS)
    c.on_recovery_enter(0.0, 100 * MSS)
    assert c.ssthresh == 70 * MSS and c.cwnd == 70 * MSS      # beta 0.7
    assert c._w_max == 100.0
    c.on_recovery_enter(0.0, 70 * MSS)                         # cwnd 70 < W_max 100
    assert abs(c._w_max - 70 * 1.7 / 2) < 1e-9                 # fast convergence
    assert c.ssthresh == 49 * MSS


def test_cubic_concave_then_convex_growth_to_w_max():
    c = CC.Cubic(MSS, 100 * MSS)
    c.on_recovery_enter(0.0, 100 * MSS)
    c.on_recovery_exit(0.0)
    rtt = 0.1
    t = 0.0
    trace = []
    while t < 12.0:
        # one RTT: a window of ACKs, one per segment
        n = c.cwnd // MSS
        for _ in range(n):
            c.on_ack(MSS, rtt, t)
        trace.append((t, c.cwnd / MSS))
        t += rtt
    k = ((100 - 70) / 0.4) ** (1 / 3)                          # RFC 9438 eq. 2: ~4.2 s
    at_k = min(trace, key=lambda x: abs(x[0] - k))[1]
    assert 95 <= at_k <= 106                                    # plateau near W_max at K
    early = [w for tt, w in trace if tt < k / 2]
    assert early[-1] - early[0] > 15                           # fast concave growth first
    assert trace[-1][1] > 110                                   # convex probing beyond W_max


def test_cubic_reno_friendly_region_small_bdp():
    # with a tiny RTT CUBIC's curve is slower than Reno: W_est (AIMD with alpha) dominates
    c = CC.Cubic(MSS, 20 * MSS)
    c.on_recovery_enter(0.0, 20 * MSS)
    c.on_recovery_exit(0.0)
    start = c.cwnd
    t = 0.0
    for _ in range(50):
        for _ in range(c.cwnd // MSS):
            c.on_ack(MSS, 0.001, t)
        t += 0.001
    reno_like = start / MSS + 50 * CC.Cubic.ALPHA
    assert c.cwnd / MSS >= reno_like - 1.5


def test_cubic_after_rto_restarts_from_one_segment():
    c = CC.Cubic(MSS, 50 * MSS)
    c.on_rto(0.0, 50 * MSS)
    assert c.cwnd == MSS and c.ssthresh == 35 * MSS
    for _ in range(34):
        c.on_ack(MSS, 0.05, 0.01)
    assert c.cwnd == 35 * MSS


def test_make_rejects_unknown():
    with pytest.raises(ValueError):
        CC.make("vegas", MSS, MSS)


# --------------------------------------------------------------- in the engine ----
def est(**kw):
    syn_opts = kw.pop("syn_opts", dict(mss=MSS, sack_ok=True))
    h = Harness(**kw)
    c, piss, iss, sa = h.accept(syn_opts=syn_opts)
    h.p, h.q, h.c = piss + 1, iss + 1, c
    h.events()
    return h


def sack(h, *blocks):
    return tuple(((h.q + a) & MASK, (h.q + b) & MASK) for a, b in blocks)


def test_slow_start_growth_in_engine():
    h = est(cc="newreno", rto_min=1.0)
    h.c.send(b"x" * 200_000, h.now)
    out = h.out()
    assert len(out) == 10
    acked = 0
    for k in range(5):
        acked += 2000
        out = h.inp(mkseg(ACK, h.p, h.q + acked))
        assert len(out) == 4                          # 2 MSS acked: 2 MSS more cwnd
    assert h.c.info()["cwnd"] == 20 * MSS


def test_sack_recovery_repairs_several_holes_in_one_round_trip():
    h = est(cc="newreno", rto_min=1.0, rto_initial=1.0)
    h.c.send(b"y" * 20000, h.now)
    assert len(h.out()) == 10
    # segments 0 and 3 and 6 are lost; the peer SACKs what arrived
    got = []
    blocks = []
    for i in (1, 2, 4, 5, 7, 8, 9):
        blocks = [(i * MSS, (i + 1) * MSS)] + blocks
        merged = sorted(blocks)
        islands = []
        for a, b in merged:
            if islands and islands[-1][1] == a:
                islands[-1] = (islands[-1][0], b)
            else:
                islands.append((a, b))
        islands.sort(key=lambda x: -x[1])
        got += h.inp(mkseg(ACK, h.p, h.q, sack=sack(h, *islands[:3])))
    rtx = [((s.seq - h.q) & MASK) // MSS for s in got if ((s.seq - h.q) & MASK) < 10 * MSS]
    assert rtx[:1] == [0]                      # the first hole goes at once
    assert 3 in rtx                            # IsLost: 3 segments SACKed above it
    assert h.c.info()["ca_state"] == "recovery"
    # the retransmissions arrive: cumulative ACK moves to 10
    out = h.inp(mkseg(ACK, h.p, h.q + 3 * MSS, sack=sack(h, (4 * MSS, 6 * MSS),
                                                        (7 * MSS, 10 * MSS))))
    out += h.inp(mkseg(ACK, h.p, h.q + 6 * MSS, sack=sack(h, (7 * MSS, 10 * MSS))))
    rtx2 = [((s.seq - h.q) & MASK) // MSS for s in got + out]
    assert 6 in rtx2
    h.inp(mkseg(ACK, h.p, h.c.info()["snd_nxt"]))
    # everything repaired without a timeout
    assert h.stack.stats.rto_timeouts == 0
    assert h.c.info()["ca_state"] == "open"
    assert h.c.info()["ssthresh"] == 5 * MSS


def test_limited_transmit_sends_new_data_on_first_dupacks():
    h = est(cc="newreno", sack=False, syn_opts=dict(mss=MSS))
    h.c.send(b"z" * 30000, h.now)
    assert len(h.out()) == 10
    out = h.inp(mkseg(ACK, h.p, h.q))
    assert [((s.seq - h.q) & MASK) for s in out] == [10 * MSS]
    out = h.inp(mkseg(ACK, h.p, h.q))
    assert [((s.seq - h.q) & MASK) for s in out] == [11 * MSS]
    out = h.inp(mkseg(ACK, h.p, h.q))                 # third: fast retransmit
    assert ((out[0].seq - h.q) & MASK) == 0
    assert h.c.info()["ssthresh"] == 5 * MSS           # FlightSize without LT segments


def test_newreno_partial_ack_retransmits_next_hole():
    h = est(cc="newreno", sack=False, syn_opts=dict(mss=MSS), rto_min=1.0)
    h.c.send(b"z" * 10000, h.now)
    h.out()
    for _ in range(3):
        h.inp(mkseg(ACK, h.p, h.q))
    out = h.inp(mkseg(ACK, h.p, h.q + 3 * MSS))       # partial ACK
    assert out and ((out[0].seq - h.q) & MASK) == 3 * MSS
    assert h.c.info()["ca_state"] == "recovery"
    h.inp(mkseg(ACK, h.p, h.c.info()["snd_nxt"]))
    assert h.c.info()["ca_state"] == "open"
    assert h.c.info()["cwnd"] <= 5 * MSS


def test_dsack_and_stale_sack_blocks_are_ignored_by_sender():
    h = est()
    h.c.send(b"w" * 5000, h.now)
    h.out()
    h.inp(mkseg(ACK, h.p, h.q + 2000, sack=sack(h, (0, 1000))))     # DSACK below una
    h.inp(mkseg(ACK, h.p, h.q + 2000, sack=sack(h, (9000, 12000))))  # beyond snd_nxt
    i = h.c.info()
    assert i["sacked_out"] == 0 and i["ca_state"] == "open"
