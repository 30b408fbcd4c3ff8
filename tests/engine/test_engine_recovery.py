"""Loss recovery mechanisms (issue #9): RACK-TLP (RFC 8985), RFC 6675's rescue
retransmission; virtual time, a scripted peer. Each test also runs (or states) what the
engine did without the mechanism, so it fails without it."""

import pytest

try:
    from test_engine_helpers import Harness, mkseg, SYN, ACK, MASK
except ImportError:  # pragma: no cover
    from .test_engine_helpers import Harness, mkseg, SYN, ACK, MASK
from fpd import tcp

MSS = 1000
RTT = 0.1


def est(rtt=RTT, ws=None, **kw):
    """An accepted SACK connection (no timestamps, MSS 1000) whose handshake took
    ``rtt``: SRTT = min_rtt = rtt from the SYN-ACK's sample."""
    kw.setdefault("cc", "newreno")
    h = Harness(**kw)
    h.listener = h.stack.listen(b"\0\0\0\0", 80)
    out = h.inp(mkseg(SYN, 1000, mss=MSS, sack_ok=True, wscale=ws))
    iss = out[0].seq
    h.now += rtt
    assert h.inp(mkseg(ACK, 1001, iss + 1)) == []
    ev = h.events()
    h.c = ev[-1][2]
    h.p, h.q = 1001, iss + 1
    assert abs(h.c.srtt - rtt) < 1e-9 and abs(h.c.min_rtt - rtt) < 1e-9
    return h


def off(h, s):
    return (s.seq - h.q) & MASK


def sack(h, *blocks):
    return tuple(((h.q + a) & MASK, (h.q + b) & MASK) for a, b in blocks)


def advance_until(h, pred, limit=5.0, step=0.001):
    """Advance the clock in small steps until ``pred(out)`` holds for the segments
    sent in a step; returns (time, segments)."""
    end = h.now + limit
    while h.now < end:
        out = h.advance(step)
        if out and pred(out):
            return h.now, out
    raise AssertionError("nothing sent")


@pytest.mark.parametrize("on", [True, False])
def test_tail_loss_probe_then_rack_repairs_without_rto(on):
    """Three of ten segments lost at the tail: a probe (the last segment again) goes
    out after 2 SRTT; its SACK lets RACK mark the other two lost by time, and recovery
    repairs them: no RTO. Without RACK-TLP the tail waits for the RTO."""
    h = est(rack=on, tlp=on)
    h.c.send(b"t" * 10 * MSS, h.now)
    assert len(h.out()) == 10
    t0 = h.now
    h.now += RTT
    h.inp(mkseg(ACK, h.p, h.q + 7 * MSS))          # 7, 8, 9 lost
    t, out = advance_until(h, lambda o: True)
    if not on:
        assert h.stack.stats.rto_timeouts == 1 and [off(h, s) for s in out][0] == 7 * MSS
        return
    assert [off(h, s) for s in out] == [9 * MSS]    # the probe: the last segment
    assert abs(t - (t0 + RTT + 2 * RTT)) < 0.002   # PTO = 2 SRTT after the last ACK
    assert h.stack.stats.tlp_probes == 1
    h.now += RTT
    out = h.inp(mkseg(ACK, h.p, h.q + 7 * MSS, sack=sack(h, (9 * MSS, 10 * MSS))))
    assert sorted(off(h, s) for s in out) == [7 * MSS, 8 * MSS]
    assert h.c.info()["ca_state"] == "recovery" and h.stack.stats.rack_lost == 2
    h.now += RTT
    h.inp(mkseg(ACK, h.p, h.q + 10 * MSS))
    assert h.c.info()["ca_state"] == "open"
    assert h.stack.stats.rto_timeouts == 0
    assert h.c.info()["cwnd"] >= 2 * MSS


@pytest.mark.parametrize("on", [True, False])
def test_lone_segment_response_lost_probe_replaces_rto(on):
    """A one-segment response lost: the probe resends it (at the RTO's time at the
    latest, as the timer it replaces) without collapsing cwnd to one segment."""
    h = est(tlp=on)
    h.c.send(b"r" * 500, h.now)
    assert len(h.out()) == 1
    rto_at = h.c.t_rtx
    t, out = advance_until(h, lambda o: True)
    assert [off(h, s) for s in out] == [0]
    assert t <= rto_at + 1e-9
    h.now += RTT
    h.inp(mkseg(ACK, h.p, h.q + 500))
    if on:
        assert h.stack.stats.rto_timeouts == 0 and h.stack.stats.tlp_probes == 1
        assert h.c.info()["cwnd"] == 10 * MSS
    else:
        assert h.stack.stats.rto_timeouts == 1 and h.c.info()["cwnd"] < 10 * MSS


def test_probe_sends_new_data_when_there_is_some():
    """RFC 8985 §7.3: with unsent data and room in the peer's window, the probe is a
    new segment, not a retransmission."""
    h = est()
    h.c.send(b"n" * 20 * MSS, h.now)
    assert len(h.out()) == 10                      # cwnd-limited
    t, out = advance_until(h, lambda o: True)
    assert [off(h, s) for s in out] == [10 * MSS]
    assert h.stack.stats.tlp_probes == 1 and h.c.retransmits == 0


def test_rack_reordering_window_then_time_based_loss():
    """A SACK for one segment above a hole: RACK waits a quarter min_rtt (the hole may
    be reordering), then marks it lost and repairs it, long before three duplicate
    ACKs or an RTO would have."""
    h = est(tlp=False)
    h.c.send(b"o" * 5 * MSS, h.now)
    assert len(h.out()) == 5
    h.now += RTT
    out = h.inp(mkseg(ACK, h.p, h.q, sack=sack(h, (MSS, 2 * MSS))))
    assert out == []                               # within the reordering window
    t, out = advance_until(h, lambda o: True)
    assert [off(h, s) for s in out][:1] == [0]
    assert abs(t - (h.c.created + RTT + RTT + RTT / 4)) < 0.002   # sent + rtt + reo_wnd
    assert h.stack.stats.rack_lost >= 1 and h.stack.stats.rto_timeouts == 0


def test_rack_late_segment_is_reordering_not_loss():
    """The hole fills within the reordering window: nothing is retransmitted, and
    RACK remembers that this path reorders."""
    h = est(tlp=False)
    h.c.send(b"o" * 5 * MSS, h.now)
    h.out()
    h.now += RTT
    h.inp(mkseg(ACK, h.p, h.q, sack=sack(h, (MSS, 2 * MSS))))
    h.now += RTT / 10
    h.inp(mkseg(ACK, h.p, h.q + 2 * MSS))
    h.now += RTT / 10
    assert h.advance(RTT / 2) == [] or h.c.retransmits == 0
    assert h.c.retransmits == 0 and h.c.rack_reord


def test_rack_detects_a_lost_retransmission():
    """The retransmission of a hole is lost too: once data sent after it is SACKed
    and RACK.rtt has passed, RACK marks it lost again and resends it (no RTO)."""
    h = est(tlp=False, cc="newreno")
    h.c.send(b"l" * 10 * MSS, h.now)
    h.out()
    h.now += RTT
    blocks = (MSS, 10 * MSS)
    out = h.inp(mkseg(ACK, h.p, h.q, sack=sack(h, blocks)))
    assert [off(h, s) for s in out][:1] == [0]     # hole retransmitted (lost again)
    h.c.send(b"m" * 3 * MSS, h.now)
    new = [off(h, s) for s in h.out()]
    assert new and new[0] == 10 * MSS
    h.now += RTT
    out = h.inp(mkseg(ACK, h.p, h.q, sack=sack(h, (MSS, 11 * MSS))))
    assert 0 in [off(h, s) for s in out]           # the retransmission, again
    assert h.stack.stats.rto_timeouts == 0


def test_rack_marks_every_hole_of_a_loss_burst_longer_than_its_walk_budget():
    """A 100 ms path with a 300-segment bottleneck queue (docs/ENGINE.md's "100M q300"
    case): slow start overflows the queue and loses hundreds of segments of one window.
    RACK's walk has a budget (SACK_WALK_BUDGET records per ACK) and used to start at
    SND.UNA every time: the holes it had already marked used up the budget, the ones
    past it were never marked lost, and recovery crawled at one retransmission per
    ACK (8 MB took 6 s instead of 1.6). It now goes on from where the last walk stopped."""
    B = tcp.SACK_WALK_BUDGET
    lost, sacked = B + 150, 300               # the first `lost` segments lost, then SACKed
    h = Harness(cc="newreno", tlp=False)
    c, piss, iss, _ = h.accept(syn_opts=dict(mss=MSS, wscale=7, sack_ok=True),
                               ack_wnd=65535)
    h.p, h.q, h.c = piss + 1, iss + 1, c
    h.events()
    c.cc.cwnd = 1 << 30                       # the whole burst at once, as slow start's last
    c.send(b"q" * (lost + sacked) * MSS, h.now)
    assert len([s for s in h.out() if s.payload]) == lost + sacked
    walks = []
    h.now += RTT
    for k in range(4):                        # the burst's SACK, then the ACKs of the first
        before = h.stack.stats.sack_walked    # retransmissions (SND.UNA one hole further)
        h.inp(mkseg(ACK, h.p, h.q + k * MSS, wnd=65535,
                    sack=sack(h, (lost * MSS, (lost + sacked) * MSS))))
        walks.append(h.stack.stats.sack_walked - before)
        h.now += 0.001
    holes = [r for r in c.rtxq if r.end <= lost * MSS + 1]     # (offset 0: the SYN)
    assert len(holes) == lost - 3
    assert all(r.flags & (tcp.R_LOST | tcp.R_SACKED) == tcp.R_LOST for r in holes), \
        sum(1 for r in holes if not r.flags & tcp.R_LOST)
    assert max(walks) <= 3 * B, walks         # still bounded per ACK
    assert h.stack.stats.rto_timeouts == 0


@pytest.mark.parametrize("on", [True, False])
def test_rescue_retransmission_of_the_tail(on):
    """RFC 6675 NextSeg rule 4: the first and the last segment lost, nothing new to
    send: with room in cwnd, the last (unSACKed, not IsLost) segment is resent once
    at once, instead of one RTT later on the partial ACK."""
    h = est(tlp=False, rack=on, cc="newreno")
    h.c.send(b"s" * 10 * MSS, h.now)
    h.out()
    h.now += RTT
    out = h.inp(mkseg(ACK, h.p, h.q, sack=sack(h, (MSS, 9 * MSS))))
    got = [off(h, s) for s in out]
    assert got[0] == 0
    if on:
        assert 9 * MSS in got and h.stack.stats.rescue_retransmits == 1
    else:
        assert 9 * MSS not in got
    h.now += RTT
    out = h.inp(mkseg(ACK, h.p, h.q + (10 if on else 9) * MSS))
    assert h.stack.stats.rescue_retransmits == (1 if on else 0)


def test_tlp_dsack_means_no_loss_and_no_reduction():
    """The probe retransmitted a segment the peer had (its ACK was late): the DSACK
    ends the episode without a cwnd reduction; an ACK beyond the probe without one
    would have reduced it once."""
    h = est()
    h.c.send(b"d" * 4 * MSS, h.now)
    h.out()
    t, out = advance_until(h, lambda o: True)
    assert [off(h, s) for s in out] == [3 * MSS] and h.c.tlp_end == 4 * MSS + 1
    cw = h.c.info()["cwnd"]
    h.inp(mkseg(ACK, h.p, h.q + 4 * MSS))
    h.inp(mkseg(ACK, h.p, h.q + 4 * MSS, sack=sack(h, (3 * MSS, 4 * MSS))))
    assert h.c.tlp_end is None and h.stack.stats.dsacks_in == 1
    assert h.c.info()["cwnd"] >= cw and h.stack.stats.tlp_recoveries == 0


def test_tlp_repaired_loss_reduces_cwnd_once():
    h = est()
    h.c.send(b"d" * 4 * MSS, h.now)
    h.out()
    advance_until(h, lambda o: True)
    h.now += RTT
    h.inp(mkseg(ACK, h.p, h.q + 4 * MSS))          # the probe filled the hole
    h.c.send(b"e" * MSS, h.now)
    h.out()
    h.now += RTT
    h.inp(mkseg(ACK, h.p, h.q + 5 * MSS))          # beyond the probe, no DSACK
    assert h.stack.stats.tlp_recoveries == 1 and h.c.tlp_end is None
    assert h.c.info()["ssthresh"] < 1 << 29


# ------------------------------------------------------------ buffer autotuning ----
def _bulk(size, rtt, **cfg):
    import simlink as SL
    conf = dict(SL.ROBUST_CONFIG, **cfg)
    data = bytes(i * 7 % 251 for i in range(size))
    net = SL.SimNet(seed=1, schedule=[SL.Phase(delay=rtt / 2)], a_data=data,
                    a_config=conf, b_config=conf)
    res = net.run()
    res.check()
    return res, net


def test_autotuning_fills_a_long_path_and_the_fixed_buffer_caps_it():
    """At 100 ms RTT fixed 256 KiB buffers cap a flow at rcvbuf / RTT (2.6 MB/s);
    autotuned buffers follow the measured BDP and the transfer is several times faster.
    Memory comes back when the connections close."""
    size, rtt = 6_000_000, 0.1
    fixed, _ = _bulk(size, rtt, rcvbuf_max=0, sndbuf_max=0)
    tuned, net = _bulk(size, rtt)
    cap = 256 * 1024 / rtt
    assert fixed.bytes_ab / fixed.t_done_ab <= cap * 1.05
    assert tuned.bytes_ab / tuned.t_done_ab > 2 * cap
    assert tuned.b_info["rcvbuf"] > 1 << 20 and tuned.a_info["sndbuf"] > 1 << 20
    assert fixed.b_info["rcvbuf"] == fixed.a_info["sndbuf"] == 256 * 1024
    assert tuned.b_info["rcv_wscale"] == 7
    assert net.A._cx.buf_extra == 0 and net.B._cx.buf_extra == 0    # released on close


def test_autotuning_is_bounded_per_stack_and_per_connection():
    tuned, net = _bulk(3_000_000, 0.05, buf_mem_max=512 * 1024, rcvbuf_max=1 << 20)
    assert 256 * 1024 < tuned.b_info["rcvbuf"] <= 1 << 20            # per connection
    assert tuned.a_info["sndbuf"] - 256 * 1024 <= 512 * 1024          # per stack
    assert net.B._cx.buf_extra == 0 and net.A._cx.buf_extra == 0


def test_autotuned_receive_buffer_grows_with_what_the_app_reads():
    """Receiver side alone: the buffer grows to twice what the application read in an
    RTT (plus headroom), never past rcvbuf_max, and only when the RTT is known."""
    h = est(ws=7, rcvbuf=64 * 1024, rcvbuf_max=1 << 20)
    c = h.c
    seq = h.p
    for rnd in range(6):
        for i in range(40):
            h.inp(mkseg(ACK, seq, h.q, wnd=512, payload=b"x" * MSS))
            seq += MSS
        c.recv()
        h.now += RTT
    assert 64 * 1024 < c.rcvbuf <= 1 << 20
    assert h.stack._cx.buf_extra == c.rcvbuf - 64 * 1024


# ------------------------------------------------------------------ DSACK undo ----
@pytest.mark.parametrize("cc", ["newreno", "cubic"])
def test_dsack_undoes_a_spurious_fast_retransmit(cc):
    """Reordering, not loss: segment 0 comes late, the SACKs above it start recovery
    and it is retransmitted (with, room permitting, a rescue retransmission); the
    receiver then reports each retransmission as a duplicate (DSACK): the reduction is
    undone (RFC 3708), cwnd and ssthresh back where they were."""
    h = est(cc=cc, tlp=False)
    h.c.send(b"u" * 10 * MSS, h.now)
    h.out()
    before = (h.c.info()["cwnd"], h.c.info()["ssthresh"])
    h.now += RTT
    rtx = []
    for i in range(1, 10):
        out = h.inp(mkseg(ACK, h.p, h.q, sack=sack(h, (MSS, (i + 1) * MSS))))
        rtx += [off(h, s) for s in out if s.payload]
        if i == 3:
            assert h.c.info()["ca_state"] == "recovery" and h.c.info()["cwnd"] < before[0]
    assert rtx[0] == 0
    h.inp(mkseg(ACK, h.p, h.q + 10 * MSS))                        # the late original
    for o in rtx:                                                # each retransmission
        assert h.stack.stats.dsack_undos == 0                    # came in twice
        h.inp(mkseg(ACK, h.p, h.q + 10 * MSS, sack=sack(h, (o, o + MSS))))
    assert h.stack.stats.dsack_undos == 1
    assert h.c.info()["cwnd"] >= before[0] and h.c.info()["ssthresh"] >= before[1]
    assert h.c.info()["ca_state"] == "open"


def test_no_undo_when_a_retransmission_was_needed():
    h = est(tlp=False)
    h.c.send(b"u" * 10 * MSS, h.now)
    h.out()
    h.now += RTT
    for i in (1, 2, 3):
        h.inp(mkseg(ACK, h.p, h.q, sack=sack(h, (MSS, (i + 1) * MSS))))
    h.inp(mkseg(ACK, h.p, h.q + 10 * MSS))                        # no DSACK: real loss
    assert h.stack.stats.dsack_undos == 0 and h.c.info()["ssthresh"] < 1 << 29


def _feed(h, seq, n):
    """The peer sends n bytes (in MSS segments) as far as the window allows; returns
    the next sequence number. Our ACKs' windows are read from the connection."""
    c = h.c
    end = seq + n
    while seq < end:
        room = c.rcv_adv_o - ((seq - h.p) & MASK)
        if room < MSS:
            break
        h.inp(mkseg(ACK, seq, h.q, wnd=512, payload=b"x" * MSS))
        seq += MSS
    return seq


def test_autotuning_does_not_grow_for_a_reader_slower_than_the_peer():
    """The peer fills whatever window is offered every RTT; the application reads only
    half of what is queued each RTT, so bytes stay queued at every read. A larger
    buffer would only queue more: it stays as it is (before stop 17 it grew to the
    maximum, 2 x what was read + 16 segments, every RTT)."""
    h = est(ws=7, rcvbuf=64 * 1024, rcvbuf_max=1 << 20)
    c = h.c
    seq = h.p
    for rnd in range(30):
        seq = _feed(h, seq, 1 << 20)
        assert len(c.rcvq) > 0
        c.recv(len(c.rcvq) // 2)
        assert len(c.rcvq) > 0
        h.now += RTT
    assert c.rcvbuf == 64 * 1024 and h.stack._cx.buf_extra == 0
    assert c.bytes_in > 30 * 20 * MSS                   # it did read a lot


def test_autotuning_keeps_up_reader_grows_to_the_rate_and_stops_there():
    """A reader that empties the queue every RTT while the peer sends 100 segments per
    RTT: the buffer grows past the start size (the window must not be the limit) and
    settles near 2 x 100 segments + headroom, far below rcvbuf_max."""
    h = est(ws=7, rcvbuf=32 * 1024, rcvbuf_max=4 << 20)
    c = h.c
    seq = h.p
    for rnd in range(40):
        seq = _feed(h, seq, 100 * MSS)
        c.recv()
        h.now += RTT
    assert c.rcvbuf > 100 * MSS
    assert c.rcvbuf <= 3 * (2 * 100 * MSS + 16 * MSS)
    assert c.info()["rcv_rtt"] is not None


def test_autotuning_bursty_reads_do_not_ratchet_the_buffer():
    """The daemon's pattern with a slow app: the reader drains everything at once, but
    only every 10 RTTs (its rate is one window per 10 RTTs), in a burst of 8 reads
    within a millisecond. Per RTT it reads a tenth of the window: no growth. Before
    stop 17 each burst counted as one RTT's worth and doubled the buffer up to the
    maximum (what the window could say)."""
    h = est(ws=7, rcvbuf=64 * 1024, rcvbuf_max=4 << 20)
    c = h.c
    seq = h.p
    for rnd in range(20):
        seq = _feed(h, seq, 1 << 22)
        n = len(c.rcvq)
        assert n >= 60 * MSS
        for k in range(8):
            c.recv(n // 8 + 1)
            h.now += 0.0001
        h.now += 10 * RTT
    assert c.rcvbuf == 64 * 1024 and h.stack._cx.buf_extra == 0


def test_gso_sized_segments_beyond_the_mss_are_taken_whole():
    """Generic XDP with the frags program hands the engine the peer's GSO packets
    (up to 64 KB, far above the MSS). The engine takes them by bytes: each is accepted
    whole and acknowledged, a hole shows as one SACK block of the late segment's bytes,
    the window is counted in bytes, and rcv_mss (what delayed ACKs and the autotuning
    headroom use) stays at most our MSS."""
    h = est(ws=7)
    c = h.c
    big = 60 * MSS
    seq = h.p
    acks = []
    for k in range(3):
        acks += h.inp(mkseg(ACK, seq, h.q, wnd=512, payload=bytes([k]) * big))
        seq += big
        assert len(c.rcvq) == (k + 1) * big
    assert c.rcv_mss <= c.cfg.mss
    acks += h.advance(0.5)
    assert [(a.ack - h.p) & MASK for a in acks] == [big, 2 * big, 3 * big]  # one each
    assert abs(c.info()["rcv_wnd"] - (c.rcvbuf - 3 * big)) < 2 << 7   # window units
    assert bytes(c.recv()) == bytes([0]) * big + bytes([1]) * big + bytes([2]) * big
    h.out()
    # one big segment lost: the next arrives out of order, SACKed by its bytes
    out = h.inp(mkseg(ACK, seq + big, h.q, wnd=512, payload=b"z" * big))
    assert out and out[-1].ack == seq & MASK
    assert out[-1].sack == (((seq + big) & MASK, (seq + 2 * big) & MASK),)
    out = h.inp(mkseg(ACK, seq, h.q, wnd=512, payload=b"y" * big))
    assert out and out[-1].ack == (seq + 2 * big) & MASK
    assert bytes(c.recv()) == b"y" * big + b"z" * big
    # beyond the window a big segment is cut to it, like any other
    edge = c.rcv_adv_o - c.rcv_nxt_o
    trims = h.stack.stats.rcv_wnd_trims
    h.inp(mkseg(ACK, seq + 2 * big, h.q, wnd=512, payload=b"w" * (edge + 5000)))
    assert len(c.rcvq) == edge and h.stack.stats.rcv_wnd_trims == trims + 1
