"""Data transfer: delayed and quick ACKs, reassembly with SACK blocks, bounded memory,
duplicates, flow control (windows, zero window, persist), Nagle, send buffer."""

try:
    from test_engine_helpers import Harness, mkseg, kinds, SYN, ACK, RST, FIN, PSH, MASK
except ImportError:  # pragma: no cover
    from .test_engine_helpers import Harness, mkseg, kinds, SYN, ACK, RST, FIN, PSH, MASK
from fpd import tcp


def est(**kw):
    """A server-side connection; peer seq 1001.., our seq iss+1.. (no TS unless asked)."""
    syn_opts = kw.pop("syn_opts", dict(mss=1000, sack_ok=True))
    wnd = kw.pop("wnd", 65535)
    h = Harness(**kw)
    c, piss, iss, sa = h.accept(syn_opts=syn_opts, wnd=wnd)
    h.p = piss + 1          # peer's next seq
    h.q = iss + 1           # our next seq
    h.c = c
    return h


def data(h, off, n, flags=ACK, ack=None, **kw):
    return mkseg(flags, h.p + off, h.q if ack is None else ack, payload=bytes([65 + off % 26]) * n,
                 **kw)


def test_delayed_ack_then_every_second_segment():
    h = est(quickack=0)
    assert h.inp(data(h, 0, 1000)) == []                  # held for the delayed ACK
    out = h.inp(data(h, 1000, 1000))                      # second full segment: ACK now
    assert len(out) == 1 and out[0].ack == h.p + 2000
    assert h.inp(data(h, 2000, 100)) == []
    out = h.advance(0.039)
    assert out == []
    out = h.advance(0.002)
    assert len(out) == 1 and out[0].ack == h.p + 2100     # 40 ms delayed ACK
    assert h.stack.stats.delayed_acks == 1


def test_quickack_at_start():
    h = est(quickack=2)
    assert len(h.inp(data(h, 0, 100))) == 1
    assert len(h.inp(data(h, 100, 100))) == 1
    assert h.inp(data(h, 200, 100)) == []


def test_piggybacked_ack_on_response():
    h = est(quickack=0)
    h.inp(data(h, 0, 10))
    assert h.c.recv() == bytes([65]) * 10
    h.c.send(b"reply", h.now)
    out = h.out()
    assert len(out) == 1 and out[0].payload == b"reply" and out[0].ack == h.p + 10
    assert h.advance(0.1) == []                            # no separate delayed ACK


def test_out_of_order_reassembly_and_sack_blocks_most_recent_first():
    h = est()
    out = h.inp(data(h, 1000, 500))
    assert out[0].ack == h.p and out[0].sack == (((h.p + 1000) & MASK, (h.p + 1500) & MASK),)
    out = h.inp(data(h, 3000, 500))
    assert out[0].sack[0] == ((h.p + 3000) & MASK, (h.p + 3500) & MASK)
    assert out[0].sack[1] == ((h.p + 1000) & MASK, (h.p + 1500) & MASK)
    out = h.inp(data(h, 1500, 500))                         # extends the first island
    assert out[0].sack[0] == ((h.p + 1000) & MASK, (h.p + 2000) & MASK)
    assert h.c.readable == 0
    out = h.inp(data(h, 0, 1000))                           # fills the first hole: ACK at once
    assert out[0].ack == h.p + 2000
    assert out[0].sack == (((h.p + 3000) & MASK, (h.p + 3500) & MASK),)
    out = h.inp(data(h, 2000, 1000))
    assert out[0].ack == h.p + 3500 and out[0].sack == ()
    got = h.c.recv()
    assert len(got) == 3500
    exp = b"".join(bytes([65 + o % 26]) * n for o, n in
                   ((0, 1000), (1000, 500), (1500, 500), (2000, 1000), (3000, 500)))
    assert got == exp
    assert h.stack.stats.ooo_queued >= 3


def test_overlapping_segments_keep_stream_intact():
    h = est()
    stream = bytes(range(256)) * 20
    p = h.p

    def piece(a, b):
        return mkseg(ACK, p + a, h.q, payload=stream[a:b])

    for a, b in ((100, 300), (250, 600), (700, 900), (50, 120), (880, 1200), (600, 700),
                 (0, 60), (1190, 2000), (1500, 5120)):
        h.inp(piece(a, b))
    assert h.c.recv() == stream
    assert h.c.info()["ooo_blocks"] == 0 and h.c.info()["ooo_bytes"] == 0


def test_duplicate_data_is_not_delivered_twice_and_dsack():
    h = est()
    h.inp(data(h, 0, 1000))
    out = h.inp(data(h, 0, 1000))
    assert len(out) == 1 and out[0].ack == h.p + 1000
    assert out[0].sack == ((h.p, h.p + 1000),)             # DSACK (RFC 2883)
    assert len(h.c.recv()) == 1000
    assert h.stack.stats.dup_segs_in == 1


def test_ooo_islands_are_bounded():
    h = est(ooo_max_blocks=8)
    for i in range(50):
        h.inp(data(h, 10 + 20 * i, 5))
    i = h.c.info()
    assert i["ooo_blocks"] == 8 and i["ooo_bytes"] == 40
    assert h.stack.stats.ooo_dropped == 42


def test_data_beyond_window_is_trimmed():
    h = est(rcvbuf=3000, wscale=False)
    out = h.inp(data(h, 0, 1000))
    out = h.inp(data(h, 1000, 2500))                       # only 2000 fit
    assert h.c.readable == 3000
    assert out[-1].ack == h.p + 3000 and out[-1].wnd == 0
    assert h.stack.stats.rcv_wnd_trims == 1


def test_window_follows_unread_bytes_and_update_after_read():
    h = est(rcvbuf=8000, wscale=False, quickack=0)
    h.inp(data(h, 0, 1000))
    out = h.inp(data(h, 1000, 1000))
    assert out[0].wnd == 6000
    for k in range(2, 8, 2):
        h.inp(data(h, 1000 * k, 1000))
        out = h.inp(data(h, 1000 * k + 1000, 1000))
    assert out[0].wnd == 0
    # a small read does not reopen the window (receiver SWS avoidance)
    h.c.recv(100)
    assert h.out() == []
    h.c.recv(4000)
    out = h.out()
    assert len(out) == 1 and out[0].wnd == 4100 and out[0].ack == h.p + 8000


def test_right_edge_never_shrinks_with_scaling():
    h = est(rcvbuf=100000, wscale_shift=4, syn_opts=dict(mss=1000, wscale=0))
    h.inp(data(h, 0, 1000))
    out = h.inp(data(h, 1000, 7))
    edges = []
    for k in range(40):
        out = h.inp(data(h, 1007 + k * 333, 333))
        for s in out:
            edges.append(s.ack + (s.wnd << 4))
    assert edges == sorted(edges)


def test_send_buffer_limit_and_writable_event():
    h = est(sndbuf=5000, sndbuf_max=0, syn_opts=dict(mss=1000))   # fixed: no autotuning
    assert h.c.send(b"x" * 8000, h.now) == 5000
    assert h.c.send(b"y", h.now) == 0 and h.c.writable == 0
    out = h.out()
    assert [len(s.payload) for s in out] == [1000] * 5       # IW 10 but only 5000 buffered
    h.inp(mkseg(ACK, h.p, h.q + 4000))
    assert tcp.Event.WRITABLE in kinds(h.events())
    assert h.c.writable == 4000


def test_zero_window_persist_probes_with_backoff():
    h = est(rto_min=0.2, rto_initial=1.0, syn_opts=dict(mss=1000))
    h.inp(mkseg(ACK, h.p, h.q, wnd=0))
    h.c.send(b"z" * 3000, h.now)
    assert h.out() == []                                      # window closed
    probes = []
    t0 = h.now
    for _ in range(4):
        d = h.stack.next_deadline()
        out = h.advance(d - h.now)
        assert len(out) == 1 and out[0].payload == b"" and out[0].seq == (h.q - 1) & MASK
        probes.append(round(h.now - t0, 4))
        # the peer answers, still with a zero window
        h.inp(mkseg(ACK, h.p, h.q, wnd=0))
    gaps = [round(b - a, 4) for a, b in zip(probes, probes[1:])]
    assert gaps[1] > gaps[0] * 1.9                            # exponential back-off
    assert h.stack.stats.window_probes == 4
    out = h.inp(mkseg(ACK, h.p, h.q, wnd=65535))              # window opens: data flows
    assert sum(len(s.payload) for s in out) == 3000
    assert h.c.state == tcp.ESTABLISHED


def test_sender_sws_waits_for_worthwhile_window():
    h = est(syn_opts=dict(mss=1000), wnd=10000)
    h.c.send(b"a" * 10000, h.now)
    out = h.out()
    assert sum(len(s.payload) for s in out) == 10000
    h.c.send(b"b" * 3000, h.now)
    # peer acknowledges everything but offers only 100 bytes: too small to use
    out = h.inp(mkseg(ACK, h.p, h.q + 10000, wnd=100))
    assert out == []
    out = h.inp(mkseg(ACK, h.p, h.q + 10000, wnd=6000))      # >= 1/2 max window: go
    assert sum(len(s.payload) for s in out) == 3000


def test_nagle_holds_small_segments_until_ack():
    h = est(syn_opts=dict(mss=1000))
    h.c.send(b"a", h.now)
    assert len(h.out()) == 1
    h.c.send(b"b", h.now)
    h.c.send(b"c", h.now)
    assert h.out() == []                                       # a small segment is in flight
    out = h.inp(mkseg(ACK, h.p, h.q + 1))
    assert len(out) == 1 and out[0].payload == b"bc"


def test_nodelay_sends_at_once():
    h = est(syn_opts=dict(mss=1000))
    h.c.nodelay = True
    h.c.send(b"a", h.now)
    h.c.send(b"b", h.now)
    assert [s.payload for s in h.out()] == [b"a", b"b"]


def test_initial_window_is_10_segments():
    h = est(syn_opts=dict(mss=1000))
    h.c.send(b"q" * 50000, h.now)
    assert len(h.out()) == 10
    h2 = est(syn_opts=dict(mss=1460), mss=1460)
    h2.c.send(b"q" * 50000, h2.now)
    assert sum(len(s.payload) for s in h2.out()) == 14600      # min(10*MSS, max(2*MSS, 14600))


def test_recv_into_and_eof():
    h = est()
    h.inp(data(h, 0, 10, flags=ACK | FIN))
    assert h.c.state == tcp.CLOSE_WAIT
    buf = bytearray(4)
    assert h.c.recv_into(buf) == 4 and not h.c.eof
    assert h.c.recv() == bytes([65]) * 6
    assert h.c.eof and h.c.recv() == b""
    assert kinds(h.events())[-1] == tcp.Event.PEER_CLOSED


def test_data_in_established_without_ack_flag_is_dropped():
    h = est()
    assert h.inp(mkseg(PSH, h.p, 0, payload=b"xyz")) == []
    assert h.c.readable == 0


def test_sequence_wraparound():
    h = Harness()
    c, piss, iss, sa = h.accept(syn_opts=dict(mss=1000), piss=0xFFFFFF00)
    p = (piss + 1) & MASK
    stream = bytes(range(256)) * 4
    for off in range(0, 1024, 100):
        h.inp(mkseg(ACK, p + off, iss + 1, payload=stream[off:off + 100]))
    assert c.recv() == stream
    assert c.info()["rcv_nxt"] == (p + 1024) & MASK


def test_random_reassembly_delivers_exact_stream():
    import random
    rng = random.Random(99)
    for trial in range(40):
        ts = trial % 2 == 0
        opts = dict(mss=1000, sack_ok=True)
        if ts:
            opts.update(tsval=1, tsecr=0)
        h = est(rcvbuf=30000, syn_opts=opts, quickack=rng.choice([0, 16]))
        total = 60000
        stream = bytes(rng.randrange(256) for _ in range(total))
        got = bytearray()
        tsv = 2
        while len(got) < total:
            base = len(got) + h.c.readable
            a = base + rng.randrange(-3000, 25000)
            a = max(0, min(a, total - 1))
            if rng.random() < 0.5:
                a = base                    # in order, often
            n = rng.choice([1, 100, 999, 1000])
            b = min(total, a + n)
            if rng.random() < 0.2:
                tsv += 1
            kw = dict(tsval=tsv, tsecr=0) if ts else {}
            h.inp(mkseg(ACK, h.p + a, h.q, payload=stream[a:b], **kw))
            if rng.random() < 0.3:
                got += h.c.recv(rng.choice([10, 5000, -1]))
            if rng.random() < 0.05:
                h.advance(0.05)
        assert bytes(got) == stream[:len(got)]
        assert h.stack.stats.internal_errors == 0


def test_info_min_rtt_delivery_rate_and_limited_by():
    """Connection.info() reports min_rtt, a per-RTT delivery rate and what limits the
    sender (app / rwnd / cwnd), as Linux's TCP_INFO does (#9)."""
    h = Harness(rto_min=1.0)
    c, piss, iss, sa = h.accept(syn_opts=dict(mss=1000, wscale=7), ack_wnd=65535)
    p, q = piss + 1, iss + 1
    assert c.info()["limited_by"] == "app" and c.info()["delivery_rate"] is None
    c.send(b"r" * 100_000, h.now)
    out = h.out()
    assert len(out) == 10 and c.info()["limited_by"] == "cwnd"
    acked = 0
    for rnd in range(4):
        h.advance(0.05)
        acked += 10_000 * (rnd + 1)
        out = h.inp(mkseg(ACK, p, q + acked))
    i = c.info()
    assert i["min_rtt"] == 0.0                     # the handshake's (same-instant) sample
    assert i["srtt"] > i["min_rtt"]
    assert i["delivery_rate"] is not None and 1e5 < i["delivery_rate"] < 2e6
    h.inp(mkseg(ACK, p, q + acked, wnd=1))            # the peer's window nearly closes
    c.send(b"r" * 50_000, h.now)
    assert c.info()["limited_by"] == "rwnd"
