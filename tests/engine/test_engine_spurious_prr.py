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
