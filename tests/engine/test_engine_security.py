"""Security: RFC 5961 (RST, SYN, ACK checks, rate limit), PAWS, SYN cookies, connection
bounds, and 'nothing a peer sends raises' (a quick random-segment sweep)."""

import random

try:
    from test_engine_helpers import (Harness, mkseg, kinds, SYN, ACK, RST, FIN, PSH, MASK,
                                     SRV, PEER, SPORT, PPORT)
except ImportError:  # pragma: no cover
    from .test_engine_helpers import (Harness, mkseg, kinds, SYN, ACK, RST, FIN, PSH, MASK,
                                      SRV, PEER, SPORT, PPORT)
from fpd import tcp
from fpd.wire import Segment


def est(**kw):
    syn_opts = kw.pop("syn_opts", dict(mss=1000))
    h = Harness(**kw)
    c, piss, iss, sa = h.accept(syn_opts=syn_opts)
    h.p, h.q, h.c = piss + 1, iss + 1, c
    h.events()
    return h


def test_rst_exact_sequence_resets():
    h = est()
    h.inp(mkseg(RST, h.p))
    assert h.c.state == tcp.CLOSED
    assert kinds(h.events()) == [tcp.Event.RESET, tcp.Event.CLOSED]
    assert h.stack.stats.rst_in == 1


def test_rst_in_window_gets_challenge_ack():
    h = est()
    out = h.inp(mkseg(RST, h.p + 100))
    assert h.c.state == tcp.ESTABLISHED
    assert len(out) == 1 and out[0].flags == ACK and out[0].ack == h.p
    assert h.stack.stats.challenge_acks == 1
    # out of window: silently dropped
    assert h.inp(mkseg(RST, h.p + 10_000_000)) == []
    assert h.c.state == tcp.ESTABLISHED


def test_syn_in_established_gets_challenge_ack():
    h = est()
    for seq in (h.p, h.p + 50, h.p - 1000, 12345):
        out = h.inp(mkseg(SYN, seq, mss=1000))
        assert len(out) == 1 and out[0].flags == ACK and out[0].ack == h.p
    assert h.c.state == tcp.ESTABLISHED


def test_challenge_ack_rate_limit_is_per_second_and_deterministic():
    h = est(challenge_ack_limit=3)
    n = 0
    for i in range(10):
        n += len(h.inp(mkseg(RST, h.p + 10 + i)))
    assert n == 3
    assert h.stack.stats.challenge_acks_limited == 7
    h.now = float(int(h.now) + 1)                   # next second: budget restored
    assert len(h.inp(mkseg(RST, h.p + 10))) == 1


def test_blind_data_injection_ack_check():
    h = est()
    h.c.send(b"d" * 500, h.now)
    h.out()
    # ACK of data never sent: dropped, challenge ACK, payload not delivered
    out = h.inp(mkseg(ACK, h.p, h.q + 100000, payload=b"evil"))
    assert h.c.readable == 0 and len(out) == 1 and out[0].ack == h.p
    # ACK far below SND.UNA - MAX.SND.WND: same
    out = h.inp(mkseg(ACK, h.p, h.q - 1_000_000, payload=b"evil"))
    assert h.c.readable == 0 and len(out) == 1
    assert h.stack.stats.bad_acks == 2
    # an old but plausible ACK still carries data
    h.inp(mkseg(ACK, h.p, h.q - 10, payload=b"good"))
    assert h.c.recv() == b"good"


def test_paws_drops_old_timestamps():
    h = est(syn_opts=dict(mss=1000, tsval=1000))
    out = h.inp(mkseg(ACK, h.p, h.q, payload=b"new", tsval=1001, tsecr=0))
    assert h.c.readable == 3
    out = h.inp(mkseg(ACK, h.p + 3, h.q, payload=b"old", tsval=900, tsecr=0))
    assert h.c.readable == 3 and h.stack.stats.paws_drops == 1
    assert len(out) == 1 and out[0].flags == ACK and out[0].tsecr == 1001
    # an RST is not subject to PAWS
    h.inp(mkseg(RST, h.p + 3, tsval=1))
    assert h.c.state == tcp.CLOSED


def test_timestamp_wraparound_is_not_paws():
    h = est(syn_opts=dict(mss=1000, tsval=0xFFFFFFF0))
    h.inp(mkseg(ACK, h.p, h.q, payload=b"x", tsval=5, tsecr=0))
    assert h.c.readable == 1 and h.stack.stats.paws_drops == 0


def _cookie_roundtrip(h, syn_opts, data=b""):
    out = h.inp(mkseg(SYN, 5000, **syn_opts))
    assert len(out) == 1 and out[0].flags == SYN | ACK
    sa = out[0]
    assert h.stack.stats.syncookies_sent >= 1
    ts = {}
    if sa.tsval is not None:
        ts = dict(tsval=syn_opts["tsval"] + 1, tsecr=sa.tsval)
    h.now += 0.01
    h.inp(mkseg(ACK, 5001, sa.ack and sa.seq + 1, payload=data, **ts))
    ev = h.events()
    assert ev and ev[0][0] == tcp.Event.ACCEPTED, ev
    return sa, ev[0][2]


def test_syn_cookies_with_timestamps_encode_wscale_sack_mss():
    h = Harness(syn_cookies="always", rcvbuf=1 << 20, rcvbuf_max=0)
    h.stack.listen(b"\0\0\0\0", SPORT)
    sa, c = _cookie_roundtrip(h, dict(mss=1400, wscale=6, sack_ok=True, tsval=100, tsecr=0),
                              data=b"hello")
    assert sa.wscale == 5 and sa.sack_ok
    assert not h.stack.connections() or c.state == tcp.ESTABLISHED
    i = c.info()
    assert i["peer_mss"] == 1300                     # largest table entry <= 1400
    assert i["snd_wscale"] == 6 and i["rcv_wscale"] == 5 and i["sack"] and i["timestamps"]
    assert c.recv() == b"hello"
    assert h.stack.stats.syncookies_validated == 1
    assert h.stack.counters()["half_open"] == 0


def test_syn_cookies_without_timestamps_have_no_wscale_or_sack():
    h = Harness(syn_cookies="always")
    h.stack.listen(b"\0\0\0\0", SPORT)
    sa, c = _cookie_roundtrip(h, dict(mss=1460, wscale=6, sack_ok=True))
    assert sa.wscale is None and not sa.sack_ok and sa.tsval is None
    assert c.info()["peer_mss"] == 1460 and not c.info()["sack"]


def test_syn_cookies_only_when_backlog_full():
    h = Harness()
    h.stack.listen(b"\0\0\0\0", SPORT, backlog=2)
    for port in (1001, 1002):
        h.inp(mkseg(SYN, 1, sport=port, mss=1000))
    assert h.stack.counters()["half_open"] == 2 and h.stack.stats.syncookies_sent == 0
    out = h.inp(mkseg(SYN, 1, sport=1003, mss=1000))
    assert out[0].flags == SYN | ACK and h.stack.stats.syncookies_sent == 1
    assert len(h.stack.connections()) == 2            # no state for the cookie SYN
    h.inp(mkseg(ACK, 2, out[0].seq + 1, sport=1003))
    assert h.stack.stats.syncookies_validated == 1 and len(h.stack.connections()) == 3


def test_bad_cookie_ack_gets_rst_and_old_cookie_expires():
    h = Harness(syn_cookies="always")
    h.stack.listen(b"\0\0\0\0", SPORT)
    out = h.inp(mkseg(SYN, 1, mss=1000))
    good = out[0].seq + 1
    out = h.inp(mkseg(ACK, 2, good + 12345))
    assert out[0].flags == RST and h.stack.stats.syncookies_failed == 1
    h.now += 64 * 4                                  # counter too old
    out = h.inp(mkseg(ACK, 2, good))
    assert out[0].flags == RST and h.stack.stats.syncookies_failed == 2
    assert not h.stack.connections()


def test_syn_drops_without_cookies_and_connection_limit():
    h = Harness(syn_cookies=False)
    h.stack.listen(b"\0\0\0\0", SPORT, backlog=1)
    h.inp(mkseg(SYN, 1, sport=1, mss=1000))
    assert h.inp(mkseg(SYN, 1, sport=2, mss=1000)) == []
    assert h.stack.stats.syn_drops == 1
    h2 = Harness(max_connections=3)
    h2.stack.listen(b"\0\0\0\0", SPORT)
    for p in range(1, 10):
        h2.inp(mkseg(SYN, 1, sport=p, mss=1000))
    assert len(h2.stack.connections()) == 3 and h2.stack.stats.conn_limit_drops == 6


def test_out_of_window_pure_acks_are_answered_at_rate_limit():
    h = est()
    n = sum(len(h.inp(mkseg(ACK, h.p + 10_000_000, h.q))) for _ in range(5))
    assert n == 1 and h.stack.stats.oow_acks_limited == 4


def _random_segment(rng, h, conn_like):
    flags = rng.randrange(256)
    if conn_like:
        seq = (h.p + rng.randrange(-70000, 70000)) & MASK
        ack = (h.q + rng.randrange(-70000, 70000)) & MASK
    else:
        seq, ack = rng.randrange(1 << 32), rng.randrange(1 << 32)
    opts = {}
    if rng.random() < 0.3:
        opts["mss"] = rng.choice([0, 1, 536, 1460, 65535])
    if rng.random() < 0.3:
        opts["wscale"] = rng.randrange(0, 20)
    if rng.random() < 0.3:
        opts["sack_ok"] = True
    if rng.random() < 0.4:
        opts["tsval"] = rng.randrange(1 << 32)
        opts["tsecr"] = rng.randrange(1 << 32)
    if rng.random() < 0.3:
        opts["sack"] = tuple((rng.randrange(1 << 32), rng.randrange(1 << 32))
                             for _ in range(rng.randrange(5)))
    payload = bytes(rng.randrange(256) for _ in range(rng.choice([0, 0, 1, 100, 1400])))
    return mkseg(flags, seq, ack, wnd=rng.randrange(65536), payload=payload,
                 sport=rng.choice([PPORT, PPORT, 1, 65535]), **opts)


def test_random_segments_never_raise_and_memory_stays_bounded():
    rng = random.Random(1234)
    for trial in range(30):
        h = est(rcvbuf=20000, sndbuf=20000, ooo_max_blocks=16, challenge_ack_limit=100000,
                syn_opts=dict(mss=1000, sack_ok=True, tsval=1, wscale=2))
        h.c.send(b"s" * 15000, h.now)
        for i in range(300):
            h.inp(_random_segment(rng, h, conn_like=rng.random() < 0.8))
            if i % 50 == 0:
                h.advance(rng.random())
        for c in h.stack.connections():
            i = c.info()
            assert i["unread"] + i["ooo_bytes"] <= 20000 + 65535
            assert i["ooo_blocks"] <= 16 and i["send_queue"] <= 20000
        assert h.stack.stats.internal_errors == 0


def test_garbage_objects_do_not_escape_input():
    h = Harness(raise_errors=False)
    h.stack.listen(b"\0\0\0\0", SPORT)
    h.stack.input(Segment(src=PEER, dst=SRV, sport=PPORT, dport=SPORT, flags=FIN,
                          payload=None), h.now)
    h.stack.input(object(), h.now)
    assert h.stack.stats.internal_errors == 2
