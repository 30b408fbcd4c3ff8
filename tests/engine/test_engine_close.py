"""Closing: active, passive, simultaneous, half-close, TIME_WAIT (expiry, FIN
retransmission, reuse), close with unread data, abort, FIN_WAIT_2 timeout."""

try:
    from test_engine_helpers import Harness, mkseg, kinds, SYN, ACK, RST, FIN, MASK
except ImportError:  # pragma: no cover
    from .test_engine_helpers import Harness, mkseg, kinds, SYN, ACK, RST, FIN, MASK
from fpd import tcp


def est(**kw):
    kw.setdefault("time_wait", 5.0)
    syn_opts = kw.pop("syn_opts", dict(mss=1000))
    h = Harness(**kw)
    c, piss, iss, sa = h.accept(syn_opts=syn_opts)
    h.p, h.q, h.c = piss + 1, iss + 1, c
    h.events()
    return h


def test_active_close_through_time_wait():
    h = est()
    h.c.send(b"bye", h.now)
    h.c.close(h.now)
    out = h.out()
    assert [s.flags for s in out] == [ACK | tcp.PSH, ACK | FIN]
    assert out[1].seq == (h.q + 3) & MASK
    assert h.c.state == tcp.FIN_WAIT_1
    h.inp(mkseg(ACK, h.p, h.q + 4))
    assert h.c.state == tcp.FIN_WAIT_2
    out = h.inp(mkseg(FIN | ACK, h.p, h.q + 4))
    assert h.c.state == tcp.TIME_WAIT and out[0].ack == h.p + 1
    # a retransmitted FIN is ACKed again and restarts the 2MSL timer
    h.advance(3.0)
    out = h.inp(mkseg(FIN | ACK, h.p, h.q + 4))
    assert len(out) == 1 and out[0].ack == h.p + 1
    h.advance(4.9)
    assert h.c.state == tcp.TIME_WAIT
    h.advance(0.2)
    assert h.c.state == tcp.CLOSED and kinds(h.events()) == [tcp.Event.CLOSED]
    assert not h.stack.connections()


def test_passive_close():
    h = est()
    h.inp(mkseg(FIN | ACK, h.p, h.q))
    assert h.c.state == tcp.CLOSE_WAIT and kinds(h.events()) == [tcp.Event.PEER_CLOSED]
    h.c.send(b"last words", h.now)                  # half-closed: we can still send
    h.c.close(h.now)
    assert h.c.state == tcp.LAST_ACK
    out = h.out()
    assert out[-1].flags & FIN
    h.inp(mkseg(ACK, h.p + 1, h.q + 11))
    assert h.c.state == tcp.CLOSED and kinds(h.events()) == [tcp.Event.CLOSED]


def test_last_ack_fin_retransmitted_by_rto():
    h = est()
    h.inp(mkseg(FIN | ACK, h.p, h.q))
    h.c.close(h.now)
    fin = h.out()[-1]
    out = h.advance(1.01)
    assert out and out[0].flags & FIN and out[0].seq == fin.seq


def test_simultaneous_close():
    h = est()
    h.c.shutdown(h.now)
    fin = h.out()[0]
    assert fin.flags & FIN and h.c.state == tcp.FIN_WAIT_1
    # the peer's FIN crosses ours (it does not acknowledge our FIN)
    out = h.inp(mkseg(FIN | ACK, h.p, h.q))
    assert h.c.state == tcp.CLOSING and out[0].ack == h.p + 1
    h.inp(mkseg(ACK, h.p + 1, h.q + 1))
    assert h.c.state == tcp.TIME_WAIT


def test_fin_acking_our_fin_goes_straight_to_time_wait():
    h = est()
    h.c.shutdown(h.now)
    h.out()
    h.inp(mkseg(FIN | ACK, h.p, h.q + 1))
    assert h.c.state == tcp.TIME_WAIT


def test_half_close_keeps_receiving():
    h = est()
    h.c.shutdown(h.now)
    h.out()
    h.inp(mkseg(ACK, h.p, h.q + 1))
    assert h.c.state == tcp.FIN_WAIT_2
    h.inp(mkseg(ACK, h.p, h.q + 1, payload=b"more data"))
    assert h.c.recv() == b"more data"
    try:
        h.c.send(b"x", h.now)
    except BrokenPipeError:
        pass
    else:
        raise AssertionError("send after shutdown must raise")
    h.advance(1000)                                   # not orphaned: FIN_WAIT_2 waits
    assert h.c.state == tcp.FIN_WAIT_2


def test_orphaned_fin_wait_2_times_out_with_rst():
    h = est(fin_timeout=10.0)
    h.c.close(h.now)
    h.out()
    h.inp(mkseg(ACK, h.p, h.q + 1))
    assert h.c.state == tcp.FIN_WAIT_2
    out = h.advance(10.1)
    assert out and out[0].flags & RST
    assert h.c.state == tcp.CLOSED


def test_close_with_unread_data_sends_rst():
    h = est()
    h.inp(mkseg(ACK, h.p, h.q, payload=b"unread"))
    h.out()
    h.c.close(h.now)
    out = h.out()
    assert len(out) == 1 and out[0].flags & RST and out[0].seq == h.q
    assert h.c.state == tcp.CLOSED and kinds(h.events())[-1] == tcp.Event.CLOSED


def test_data_after_close_resets():
    h = est()
    h.c.close(h.now)
    h.out()
    out = h.inp(mkseg(ACK, h.p, h.q + 1, payload=b"late"))
    assert out and out[-1].flags & RST and h.c.state == tcp.CLOSED
    assert h.stack.stats.aborts_on_data == 1


def test_abort_sends_rst_now():
    h = est()
    h.c.send(b"pending" * 100, h.now)
    h.out()
    h.c.abort(h.now)
    out = h.out()
    assert len(out) == 1 and out[0].flags == RST | ACK
    assert kinds(h.events()) == [tcp.Event.CLOSED]
    assert h.stack.next_deadline() is None


def test_time_wait_reuse_by_newer_syn_and_old_syn_acked():
    h = est(syn_opts=dict(mss=1000, tsval=100))
    h.c.close(h.now)
    h.out()
    h.inp(mkseg(FIN | ACK, h.p, h.q + 1, tsval=101, tsecr=0))
    assert h.c.state == tcp.TIME_WAIT
    # an old SYN (older timestamp) is answered with an ACK, state unchanged
    out = h.inp(mkseg(SYN, h.p + 5000, tsval=50, mss=1000))
    assert out[0].flags == ACK and h.c.state == tcp.TIME_WAIT
    # a newer SYN reopens the 4-tuple: fresh SYN-ACK with an ISN above the old one
    old_q = h.q
    out = h.inp(mkseg(SYN, h.p + 5000, tsval=500, mss=1000))
    assert out[0].flags == SYN | ACK
    assert tcp.seq_gt(out[0].seq, old_q + 60000)
    assert h.stack.stats.tw_reuses == 1
    assert kinds(h.events()) == [tcp.Event.CLOSED]         # the old connection is gone


def test_time_wait_rst_with_exact_seq_closes():
    h = est()
    h.c.shutdown(h.now)
    h.out()
    h.inp(mkseg(FIN | ACK, h.p, h.q + 1))
    assert h.c.state == tcp.TIME_WAIT
    h.inp(mkseg(RST, h.p + 1))
    assert h.c.state == tcp.CLOSED


def test_time_wait_overflow_closes_at_once():
    h = est(max_time_wait=0)
    h.c.shutdown(h.now)
    h.out()
    h.inp(mkseg(FIN | ACK, h.p, h.q + 1))
    assert h.c.state == tcp.CLOSED and h.stack.stats.tw_overflow == 1


def test_close_in_syn_sent_frees_silently():
    h = Harness()
    c = h.stack.connect(h.now, b"\x01\x02\x03\x04", 1, b"\x05\x06\x07\x08", 2)
    h.out()
    c.close(h.now)
    assert h.out() == [] and c.state == tcp.CLOSED
    assert kinds(h.events()) == [tcp.Event.CLOSED]
