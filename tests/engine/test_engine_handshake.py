"""Opening connections: passive and active with every option, simultaneous open,
refusal, SYN/SYN-ACK retransmission and give-up, unmatched segments."""

try:
    from test_engine_helpers import (Harness, mkseg, kinds, SRV, PEER, SPORT, PPORT,
                                     SYN, ACK, RST, FIN, MASK)
except ImportError:  # pragma: no cover
    from .test_engine_helpers import (Harness, mkseg, kinds, SRV, PEER, SPORT, PPORT,
                                      SYN, ACK, RST, FIN, MASK)
from fpd import tcp


def test_passive_open_all_options():
    h = Harness(rcvbuf=1 << 20, rcvbuf_max=0)       # fixed buffer: no autotuning
    c, piss, iss, sa = h.accept(syn_opts=dict(mss=9000, wscale=9, sack_ok=True, tsval=777,
                                              tsecr=0))
    assert sa.ack == piss + 1
    assert sa.mss == 1460                       # our MSS, from config
    assert sa.wscale == 5                       # smallest shift with 1 MiB <= 65535 << s
    assert sa.sack_ok and sa.tsecr == 777 and sa.tsval is not None
    assert sa.wnd == 65535                      # SYN-ACK window is never scaled
    assert c.state == tcp.ESTABLISHED
    i = c.info()
    assert i["mss"] == 1460 - 12                # clamped to ours, minus the TS option
    assert i["snd_wscale"] == 9 and i["rcv_wscale"] == 5
    assert i["sack"] and i["timestamps"] and i["wscale"]
    assert i["snd_wnd"] == 65535 >> 9 << 9      # the ACK's window is scaled by the peer shift
    assert i["srtt"] is not None                # RTT sample from the handshake (TS echo)


def test_passive_open_no_options_defaults_mss_536():
    h = Harness()
    c, piss, iss, sa = h.accept(syn_opts={})
    assert sa.wscale is None and not sa.sack_ok and sa.tsval is None
    assert c.info()["mss"] == 536 and c.info()["rcv_wscale"] == 0


def test_peer_wscale_above_14_is_clamped():
    h = Harness()
    c, *_ = h.accept(syn_opts=dict(mss=1460, wscale=15))
    assert c.info()["snd_wscale"] == 14


def test_active_open_with_options_and_data():
    h = Harness()
    c = h.stack.connect(h.now, SRV, 5555, PEER, 443)
    out = h.out()
    assert len(out) == 1
    syn = out[0]
    # shift 7: room for the autotuned receive buffer's 6 MiB maximum (as Linux's 7)
    assert syn.flags == SYN and syn.mss == 1460 and syn.wscale == 7 and syn.sack_ok
    assert syn.tsval is not None and (syn.sport, syn.dport) == (5555, 443)
    assert c.state == tcp.SYN_SENT
    assert c.send(b"early", h.now) == 5            # queued until established
    assert h.out() == []
    h.now += 0.05
    out = h.inp(mkseg(SYN | ACK, 9000, syn.seq + 1, wnd=30000, src=PEER, dst=SRV, sport=443,
                      dport=5555, mss=1400, wscale=2, sack_ok=True, tsval=1, tsecr=syn.tsval))
    assert kinds(h.events()) == [tcp.Event.CONNECTED]
    assert c.state == tcp.ESTABLISHED
    assert len(out) == 1 and out[0].payload == b"early" and out[0].ack == 9001
    assert c.info()["srtt"] == 0.05
    assert c.info()["snd_wnd"] == 30000               # SYN-ACK window unscaled
    assert c.info()["mss"] == 1400 - 12


def test_simultaneous_open():
    h = Harness()
    c = h.stack.connect(h.now, SRV, 5555, PEER, 443)
    syn = h.out()[0]
    # the peer's SYN crosses ours
    out = h.inp(mkseg(SYN, 7000, src=PEER, dst=SRV, sport=443, dport=5555, mss=1460,
                      wscale=2, sack_ok=True, tsval=10))
    assert c.state == tcp.SYN_RECEIVED
    assert len(out) == 1 and out[0].flags == SYN | ACK and out[0].seq == syn.seq
    assert out[0].ack == 7001 and out[0].wscale == 7
    # the peer's SYN-ACK (its retransmitted SYN acknowledging ours)
    out = h.inp(mkseg(SYN | ACK, 7000, syn.seq + 1, src=PEER, dst=SRV, sport=443,
                      dport=5555, mss=1460, wscale=2, sack_ok=True, tsval=11,
                      tsecr=syn.tsval))
    assert c.state == tcp.ESTABLISHED
    assert kinds(h.events()) == [tcp.Event.CONNECTED]


def test_active_open_refused():
    h = Harness()
    c = h.stack.connect(h.now, SRV, 5555, PEER, 443)
    syn = h.out()[0]
    # an RST without an acceptable ACK is ignored (RFC 9293 §3.10.7.3)
    h.inp(mkseg(RST | ACK, 0, syn.seq + 5, src=PEER, dst=SRV, sport=443, dport=5555))
    assert c.state == tcp.SYN_SENT
    h.inp(mkseg(RST | ACK, 0, syn.seq + 1, src=PEER, dst=SRV, sport=443, dport=5555))
    assert kinds(h.events()) == [tcp.Event.REFUSED, tcp.Event.CLOSED]
    assert c.state == tcp.CLOSED and not h.stack.connections()
    try:
        c.send(b"x", h.now)
    except ConnectionRefusedError:
        pass
    else:
        raise AssertionError("send on a refused connection must raise")


def test_syn_sent_bad_ack_gets_rst():
    h = Harness()
    c = h.stack.connect(h.now, SRV, 5555, PEER, 443)
    syn = h.out()[0]
    out = h.inp(mkseg(SYN | ACK, 9000, syn.seq + 100, src=PEER, dst=SRV, sport=443,
                      dport=5555))
    assert len(out) == 1 and out[0].flags == RST and out[0].seq == (syn.seq + 100) & MASK
    assert c.state == tcp.SYN_SENT


def test_syn_retransmission_backoff_and_timeout():
    h = Harness(syn_retries=3, rto_initial=1.0)
    c = h.stack.connect(h.now, SRV, 5555, PEER, 443)
    t0 = h.now
    h.out()
    times = []
    for _ in range(20):
        d = h.stack.next_deadline()
        if d is None:
            break
        out = h.advance(d - h.now)
        if out:
            assert out[0].flags == SYN
            times.append(round(h.now - t0, 6))
    assert times == [1.0, 3.0, 7.0]                    # 1, 2, 4 s back-off
    assert kinds(h.events()) == [tcp.Event.TIMED_OUT, tcp.Event.CLOSED]
    assert round(h.now - t0, 6) == 15.0                # last wait 8 s
    assert not h.stack.connections()


def test_synack_retransmitted_then_half_open_dropped_silently():
    h = Harness(synack_retries=2)
    h.stack.listen(b"\0\0\0\0", SPORT)
    out = h.inp(mkseg(SYN, 1, mss=1460))
    assert out[0].flags == SYN | ACK
    assert h.stack.counters()["half_open"] == 1
    out = h.advance(1.0)
    assert [s.flags for s in out] == [SYN | ACK]
    # the peer repeats its SYN: we answer with the SYN-ACK again
    out = h.inp(mkseg(SYN, 1, mss=1460))
    assert [s.flags for s in out] == [SYN | ACK]
    h.advance(100)
    assert not h.stack.connections() and h.events() == []
    assert h.stack.counters()["half_open"] == 0


def test_lost_syn_gives_initial_window_one_and_rto_3s():
    h = Harness(timestamps=False)
    c = h.stack.connect(h.now, SRV, 5555, PEER, 443)
    syn = h.out()[0]
    h.advance(1.0)                          # SYN retransmitted
    h.inp(mkseg(SYN | ACK, 9000, syn.seq + 1, src=PEER, dst=SRV, sport=443, dport=5555,
                mss=1000))
    assert c.state == tcp.ESTABLISHED
    assert c.info()["cwnd"] == 1000          # RFC 6928 §2 / RFC 5681 §3.1
    assert c.info()["rto"] == 3.0            # RFC 6298 §5.7 (no RTT sample)


def test_unmatched_segments_get_rfc9293_resets():
    h = Harness()
    # no listener: SYN -> RST|ACK with ack = seq + 1
    out = h.inp(mkseg(SYN, 100))
    assert len(out) == 1 and out[0].flags == RST | ACK and out[0].seq == 0 \
        and out[0].ack == 101
    # ACK-bearing -> RST with seq = their ack, no ACK flag
    out = h.inp(mkseg(ACK, 100, 5000, payload=b"abc"))
    assert out[0].flags == RST and out[0].seq == 5000
    # data + FIN without ACK -> ack = seq + len + 1
    out = h.inp(mkseg(FIN, 100, payload=b"abc"))
    assert out[0].flags == RST | ACK and out[0].ack == 104
    # RST is never answered
    assert h.inp(mkseg(RST, 100)) == []
    assert (out[0].src, out[0].dst, out[0].sport, out[0].dport) == (SRV, PEER, SPORT, PPORT)
    assert h.stack.stats.rst_out == 3


def test_listener_specific_address_and_unlisten():
    h = Harness()
    lst = h.stack.listen(SRV, SPORT)
    out = h.inp(mkseg(SYN, 1, dst=bytes([10, 77, 0, 9])))
    assert out[0].flags == RST | ACK             # not our listening address
    out = h.inp(mkseg(SYN, 1))
    assert out[0].flags == SYN | ACK
    h.stack.unlisten(lst)
    assert not h.stack.connections()              # half-open ones go with the listener
    out = h.inp(mkseg(SYN, 1))
    assert out[0].flags == RST | ACK


def test_per_listener_overrides():
    h = Harness()
    h.stack.listen(b"\0\0\0\0", SPORT, mss=1000, cc="newreno", timestamps=False)
    out = h.inp(mkseg(SYN, 1, mss=1460, tsval=5))
    assert out[0].mss == 1000 and out[0].tsval is None
    h.inp(mkseg(ACK, 2, out[0].seq + 1))
    c = h.events()[-1][2]
    assert c.info()["cc"] == "newreno" and c.info()["mss"] == 1000


def test_ephemeral_port_and_tuple_in_use():
    h = Harness()
    c1 = h.stack.connect(h.now, SRV, 0, PEER, 443)
    c2 = h.stack.connect(h.now, SRV, 0, PEER, 443)
    assert c1.local[1] != c2.local[1] and 32768 <= c1.local[1] <= 60999
    try:
        h.stack.connect(h.now, SRV, c1.local[1], PEER, 443)
    except OSError:
        pass
    else:
        raise AssertionError("a 4-tuple in use must be refused")


def test_isn_is_keyed_and_advances_with_time():
    from fpd.stack import Stack
    a, b = Stack(b"k1"), Stack(b"k2")
    x1 = a._isn(SRV, 1, PEER, 2, 0.0)[0]
    assert x1 != b._isn(SRV, 1, PEER, 2, 0.0)[0]
    assert x1 != a._isn(SRV, 1, PEER, 3, 0.0)[0]
    assert (a._isn(SRV, 1, PEER, 2, 1.0)[0] - x1) & MASK == 250000   # 4 µs ticks
