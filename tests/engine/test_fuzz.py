"""Hostile input against every state: random and mutated segments (hypothesis).

Each TCP state is built through the public API by a short script (tests/engine/runner.py,
options negotiated or not), then hypothesis throws segments at it — random flags, sequence
and acknowledgment numbers near and far from the windows, random options, SACK blocks and
payloads — interleaved with timer ticks. Properties:

* ``Stack.input`` / ``Stack.tick`` never raise (``raise_errors=True`` makes the stack's
  internal safety net re-raise, so a swallowed error is a failure too) and the
  ``internal_errors`` counter stays 0;
* the stack only answers with well-formed segments (32-bit numbers, 16-bit window, never
  SYN+RST, never a RST in reply to a RST, payload no larger than the MSS) and known events;
* memory stays bounded: reassembly queue and SACK scoreboard within their limits after
  10 000 hostile out-of-order segments / SACK blocks; half-open connections within
  ``syn_backlog`` under a SYN flood; all connections within ``max_connections``.
"""

import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import runner as R

from fpd import tcp as T
from fpd.stack import Stack, StackConfig
from fpd.wire import Segment, FIN, SYN, RST, PSH, ACK, URG

MOD = 1 << 32
EVENTS = set(T.Event)

_HS_OPTS = """
# no tail-loss probe: the state builders below script every segment at fixed times
0     config mss=1460 rto_initial=1 rto_min=0.2 delack=0.04 time_wait=5 quickack=0 rcvbuf=65536 sndbuf=65536 tlp=0
0     listen 8080
0     < S 0:0(0) win 65535 <mss 1000,sackOK,TS val 100 ecr 0,nop,wscale 2>
0     > S. 0:0(0) ack 1 <...>
0.01  < . 1:1(0) ack 1 win 16000 <nop,nop,TS val 101 ecr *>
0.01  event accepted
"""
_HS_PLAIN = """
0     config mss=1460 rto_initial=1 rto_min=0.2 delack=0.04 time_wait=5 quickack=0 rcvbuf=65536 sndbuf=65536 timestamps=0
0     listen 8080
0     < S 0:0(0) win 65535 <mss 1000>
0     > S. 0:0(0) ack 1 <...>
0.01  < . 1:1(0) ack 1 win 65535
0.01  event accepted
"""


def _ts(opts):
    return " <nop,nop,TS val 120 ecr *>" if opts else ""


def _prefix(state, opts):
    """A script that leaves the default flow in ``state`` (plus some data in flight)."""
    hs = _HS_OPTS if opts else _HS_PLAIN
    t = _ts(opts)
    if state == "LISTEN":
        return hs.split("0     < S")[0]
    if state == "SYN_SENT":
        return ("0 config mss=1460 rto_initial=1\n0 option remote_port=80 local_port=50000\n"
                "0 app connect 80\n0 > S 0:0(0) <...>\n")
    if state == "SYN_RECEIVED":
        return hs.split("0.01  <")[0]
    est = hs + (f"0.1 app send 3000\n0.1 drain\n"
                f"0.12 < . 1001:1501(500) ack 1 win 16000{t}\n0.12 > . 3001:3001(0) ack 1 <...>\n")
    if state == "ESTABLISHED":
        return est
    if state == "FIN_WAIT_1":
        return est + "0.13 app shutdown\n0.13 > F. 3001:3001(0) ack 1 <...>\n"
    fin_acked = est + (f"0.13 < . 1:1(0) ack 3001 win 16000{t}\n0.14 app shutdown\n"
                       f"0.14 > F. 3001:3001(0) ack 1 <...>\n")
    if state == "FIN_WAIT_2":
        return fin_acked + f"0.15 < . 1:1(0) ack 3002 win 16000{t}\n"
    if state == "CLOSING":
        return fin_acked + (f"0.15 < F. 1:1(0) ack 3001 win 16000{t}\n"
                            f"0.15 > . 3002:3002(0) ack 2 <...>\n0.15 expect state CLOSING\n")
    if state == "TIME_WAIT":
        return fin_acked + (f"0.15 < F. 1:1(0) ack 3002 win 16000{t}\n"
                            f"0.15 > . 3002:3002(0) ack 2 <...>\n0.15 expect state TIME_WAIT\n")
    close_wait = est + (f"0.13 < F. 1:1(0) ack 3001 win 16000{t}\n"
                        f"0.13 > . 3001:3001(0) ack 2 <...>\n0.13 expect state CLOSE_WAIT\n")
    if state == "CLOSE_WAIT":
        return close_wait
    if state == "LAST_ACK":
        return close_wait + ("0.14 app send 500\n0.14 > . 3001:3501(500) ack 2 <...>\n"
                             "0.15 app close\n0.15 > F. 3501:3501(0) ack 2 <...>\n"
                             "0.15 expect state LAST_ACK\n")
    raise ValueError(state)


STATES = ["LISTEN", "SYN_SENT", "SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2",
          "CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT"]


def build(state, opts=True):
    r = R.Runner(_prefix(state, opts), f"fuzz-{state}")
    r.run()
    r.pending.clear()
    f = r.flow()
    if f.conn is not None and state not in ("LISTEN", "SYN_RECEIVED"):
        assert R.Runner._rel(0, 0) == 0
        got = str(f.conn.state)
        assert got == state, f"prefix for {state} ended in {got}"
    return r


class Invariants:
    """Per-connection checks on everything the engine sends while under attack:

    * data bytes are exactly what the application wrote at that sequence number (hostile
      ACKs / SACKs must never make the engine send the wrong bytes or bytes never written);
    * our ACK number never moves backwards;
    * the right edge of the window we advertise never moves left (RFC 9293 §3.8.6:
      the receiver SHOULD NOT shrink the window — fpd promises never to);
    * bytes the application reads are the peer's bytes for those sequence numbers (every
      hostile segment carries the pattern byte for its own position, so any reassembly or
      overlap policy must deliver the pattern — a mis-mapped offset would not).
    """

    def __init__(self, r):
        self.r = r
        f = r.flow()
        self.f = f
        self.conn = f.conn
        self.on = (self.conn is not None and f.local_isn is not None
                   and str(self.conn.state) not in ("LISTEN", "SYN_SENT", "SYN_RECEIVED"))
        self.last_ack = None
        self.last_edge = None
        self.shift = self.conn.info()["rcv_wscale"] if self.on else 0

    def alive(self):
        c = self.conn
        return (self.on and self.r.st.find(c.local, c.remote) is c)

    def seg(self, seg):
        if not self.alive() or seg.dport != self.f.rport or seg.sport != self.f.lport:
            return
        if seg.flags & (SYN | RST):
            return
        f = self.f
        off = (seg.seq - f.local_isn - 1) % MOD
        n = len(seg.payload)
        if n:
            assert off + n <= len(f.sent), f"sent bytes never written: {seg!r}"
            assert bytes(seg.payload) == bytes(f.sent[off:off + n]), f"wrong bytes: {seg!r}"
        if seg.flags & ACK:
            ack = seg.ack
            if self.last_ack is not None:
                d = (ack - self.last_ack) % MOD
                assert d < MOD // 2, f"ACK went backwards {self.last_ack} -> {ack}"
            self.last_ack = ack
            edge = (ack + (seg.wnd << self.shift)) % MOD
            if self.last_edge is not None:
                d = (edge - self.last_edge) % MOD
                assert d < MOD // 2, f"window right edge moved left: {seg!r}"
            self.last_edge = edge

    def final_read(self):
        if not self.alive():
            return
        data = self.conn.recv(1 << 20)
        if data:
            exp = R.remote_payload(self.f.recv_rel, len(data))
            assert data == exp, "application read bytes that are not the peer's"


def check_output(r, inbound=None, inv=None):
    for seg in r.st.output():
        if inv is not None:
            inv.seg(seg)
        assert isinstance(seg, Segment)
        for name in ("seq", "ack", "tsecr"):
            v = getattr(seg, name)
            assert isinstance(v, int) and 0 <= v < MOD, (name, v)
        if seg.tsval is not None:
            assert 0 <= seg.tsval < MOD
        assert 0 <= seg.wnd <= 0xFFFF
        assert 0 <= seg.flags <= 0xFF
        assert not (seg.flags & SYN and seg.flags & RST), seg
        assert len(seg.payload) <= 1460, seg
        assert 0 < seg.sport < 65536 and 0 < seg.dport < 65536
        for l, rr in seg.sack:
            assert 0 <= l < MOD and 0 <= rr < MOD
        if inbound is not None and inbound.flags & RST:
            assert not seg.flags & RST, f"RST answered with RST: {inbound!r} -> {seg!r}"
    for ev in r.st.events():
        assert ev[0] in EVENTS, ev
    assert r.st.counters()["internal_errors"] == 0


# ---- strategies ---------------------------------------------------------------------

def seg_strategy():
    near = st.integers(-70000, 70000)
    return st.fixed_dictionaries({
        "flags": st.one_of(st.integers(0, 255),
                           st.sampled_from([ACK, ACK | PSH, ACK | FIN, RST, RST | ACK, SYN,
                                            SYN | ACK, FIN, SYN | FIN, SYN | RST, URG | ACK])),
        "seq": st.one_of(near, st.integers(0, MOD - 1)),
        "ack": st.one_of(near, st.integers(0, MOD - 1)),
        "seq_abs": st.booleans(),
        "wnd": st.one_of(st.integers(0, 65535), st.sampled_from([0, 1, 65535])),
        "plen": st.one_of(st.just(0), st.integers(0, 1500), st.sampled_from([1, 536, 1000])),
        "mss": st.one_of(st.none(), st.integers(0, 65535)),
        "wscale": st.one_of(st.none(), st.integers(0, 255)),
        "sack_ok": st.booleans(),
        "ts": st.one_of(st.none(), st.tuples(st.integers(0, MOD - 1),
                                             st.integers(0, MOD - 1))),
        "ts_near": st.booleans(),
        "sack": st.lists(st.tuples(near, near), max_size=5),
        "urp": st.integers(0, 65535),
        "dt": st.sampled_from([0, 0, 0, 0.001, 0.05, 0.3, 2.0]),
        "port_mut": st.sampled_from([0, 0, 0, 0, 1, 2]),
    })


def make_seg(r, d):
    f = r.flow()
    if d["seq_abs"]:
        seq = d["seq"] % MOD
    else:
        base = f.remote_isn + (f.recv_rel if f.recv_rel is not None else 1) - 1
        seq = (base + d["seq"]) % MOD
    ack = (f.lisn() + 1 + d["ack"]) % MOD
    ts = d["ts"]
    tsval = tsecr = None
    if ts is not None:
        tsval, tsecr = ts
        if d["ts_near"]:
            tsval = (200 + tsval % 1000) % MOD
            tsecr = (f.last_tsval or 0) if tsecr % 2 else tsecr
    sack = tuple(((f.lisn() + 1 + a) % MOD, (f.lisn() + 1 + b) % MOD) for a, b in d["sack"])
    sport, dport = f.rport, f.lport
    if d["port_mut"] == 1:
        sport = (sport + 1) % 65536
    elif d["port_mut"] == 2:
        dport = 0
    return Segment(src=R.REMOTE_ADDR, dst=R.LOCAL_ADDR, sport=sport, dport=dport, seq=seq,
                   ack=ack, flags=d["flags"], wnd=d["wnd"], urp=d["urp"], mss=d["mss"],
                   wscale=d["wscale"], sack_ok=d["sack_ok"], tsval=tsval,
                   tsecr=tsecr if tsecr is not None else 0, sack=sack,
                   payload=R.remote_payload((seq - f.remote_isn) % MOD, d["plen"]))


FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("opts", [True, False], ids=["opts", "plain"])
@pytest.mark.parametrize("state", STATES)
@FUZZ
@given(segs=st.lists(seg_strategy(), min_size=1, max_size=60))
def test_hostile_segments_every_state(state, opts, segs):
    r = build(state, opts)
    st_ = r.st
    inv = Invariants(r)
    now = r.now
    for d in segs:
        now += d["dt"]
        if d["dt"]:
            st_.tick(now)
            r.now = now
            check_output(r, inv=inv)
        seg = make_seg(r, d)
        st_.input(seg, now)
        check_output(r, seg, inv=inv)
    inv.final_read()
    # the application side still works or fails with a defined error, never crashes
    c = r.flow().conn
    if c is not None:
        c.info()
        c.recv(100000)
        try:
            n = c.send(b"x" * 100, now)
            if inv.alive() and n:
                r.flow().sent += b"x" * n
        except (OSError, ConnectionError):
            pass
        check_output(r, inv=inv)
    # and the timers run out: everything eventually ends or idles
    for _ in range(200):
        d = st_.next_deadline()
        if d is None:
            break
        now = max(now, d)
        st_.tick(now)
        check_output(r, inv=inv)


@FUZZ
@given(data=st.data())
def test_mutated_valid_segments(data):
    """Start from the segments a real exchange contains and flip fields (bit errors that a
    disabled checksum would let through): same properties as above."""
    state = data.draw(st.sampled_from(["ESTABLISHED", "FIN_WAIT_1", "CLOSE_WAIT",
                                       "LAST_ACK", "TIME_WAIT", "SYN_RECEIVED"]))
    r = build(state, data.draw(st.booleans()))
    f = r.flow()
    base = Segment(src=R.REMOTE_ADDR, dst=R.LOCAL_ADDR, sport=f.rport, dport=f.lport,
                   seq=(f.remote_isn + (f.recv_rel or 1)) % MOD, ack=(f.lisn() + 1) % MOD,
                   flags=ACK | PSH, wnd=16000, tsval=130, tsecr=f.last_tsval or 0,
                   payload=bytes(500))
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    import simlink as SL
    from fpd import wire as W
    now = r.now
    for _ in range(30):
        seg = SL.mutate_segment(W, base, rng)
        if rng.random() < 0.5:
            seg = SL.corrupt_on_wire(W, seg, rng, verify=False) or seg
        now += rng.choice([0, 0.01, 0.2])
        r.st.tick(now)
        check_output(r)
        r.st.input(seg, now)
        check_output(r, seg)


# ---- memory bounds --------------------------------------------------------------------

def test_reassembly_bounded_under_10k_out_of_order_segments():
    r = build("ESTABLISHED", True)
    f = r.flow()
    c = f.conn
    st_ = r.st
    rng = random.Random(1)
    cfg = st_.config
    now = r.now
    rcv_nxt = (f.remote_isn + f.recv_rel) % MOD
    for i in range(10_000):
        # tiny, disjoint, in-window islands above a hole that is never filled
        off = rng.randrange(2, 60_000)
        ln = rng.randrange(1, 8)
        seg = Segment(src=R.REMOTE_ADDR, dst=R.LOCAL_ADDR, sport=f.rport, dport=f.lport,
                      seq=(rcv_nxt + off) % MOD, ack=(f.lisn() + 1) % MOD, flags=ACK,
                      wnd=16000, tsval=200 + i, tsecr=f.last_tsval or 0,
                      payload=bytes(ln))
        st_.input(seg, now)
        st_.output()
        if i % 1000 == 0:
            now += 0.001
            st_.tick(now)
    st_.events()
    info = c.info()
    assert info["ooo_blocks"] <= cfg.ooo_max_blocks, info
    assert info["ooo_bytes"] <= cfg.rcvbuf, info
    assert info["unread"] == 0
    assert st_.counters()["internal_errors"] == 0


def test_scoreboard_bounded_under_hostile_sack():
    """10k ACKs with random SACK blocks (inside, straddling and outside the flight):
    the scoreboard never claims more than is in flight and recovers cleanly."""
    r = build("ESTABLISHED", True)
    f = r.flow()
    c = f.conn
    st_ = r.st
    c.send(bytes(60_000), r.now)
    st_.output()
    rng = random.Random(2)
    now = r.now
    base = (f.lisn() + 1) % MOD
    for i in range(10_000):
        blocks = []
        for _ in range(rng.randrange(1, 5)):
            a = rng.randrange(-5000, 70_000)
            b = a + rng.randrange(-100, 5000)
            blocks.append(((base + a) % MOD, (base + b) % MOD))
        seg = Segment(src=R.REMOTE_ADDR, dst=R.LOCAL_ADDR, sport=f.rport, dport=f.lport,
                      seq=(f.remote_isn + f.recv_rel) % MOD, ack=base, flags=ACK, wnd=16000,
                      tsval=300 + i, tsecr=f.last_tsval or 0, sack=tuple(blocks))
        st_.input(seg, now)
        st_.output()
        info = c.info()
        flight = (info["snd_nxt"] - info["snd_una"]) % MOD
        assert 0 <= info["sacked_out"] <= flight, info
        assert 0 <= info["lost_out"] <= flight, info
        assert 0 <= info["retrans_out"] <= flight, info
        assert info["send_queue"] <= st_.config.sndbuf
        if i % 500 == 0:
            now += 0.05
            st_.tick(now)
    st_.events()
    assert st_.counters()["internal_errors"] == 0


def _syn(i, port=8080, flags=SYN, ack=0):
    return Segment(src=bytes([10, 77, (i >> 16) & 0xFF | 1, i & 0xFF]),
                   dst=R.LOCAL_ADDR, sport=1024 + (i * 7919) % 60000, dport=port,
                   seq=(i * 2654435761) % MOD, ack=ack, flags=flags, wnd=65535, mss=1460,
                   sack_ok=True, tsval=i, tsecr=0, wscale=7)


@pytest.mark.parametrize("cookies", [True, False])
def test_syn_flood_half_open_bounded(cookies):
    st_ = Stack(isn_key=b"flood", config=StackConfig(syn_backlog=64, syn_cookies=cookies,
                                                      raise_errors=True))
    st_.listen(b"\0\0\0\0", 8080, backlog=1024)
    now = 0.0
    synacks = 0
    for i in range(10_000):
        st_.input(_syn(i), now)
        synacks += sum(1 for s in st_.output() if s.flags == SYN | ACK)
        if i % 100 == 0:
            now += 0.01
            st_.tick(now)
            st_.output()
        assert st_.counters()["half_open"] <= 64
    cnt = st_.counters()
    assert cnt["connections"] <= 64, cnt
    if cookies:
        assert cnt["syncookies_sent"] >= 10_000 - 64 - 1
        assert synacks >= 10_000 - 1     # every SYN answered, but statelessly
    else:
        assert cnt["syn_drops"] >= 10_000 - 64 - 1
    assert cnt["internal_errors"] == 0
    # the half-open entries expire (SYN-ACK retries run out) and the table empties
    for _ in range(10_000):
        d = st_.next_deadline()
        if d is None:
            break
        now = max(now, d)
        st_.tick(now)
        st_.output()
    assert st_.counters()["connections"] == 0


def test_total_connections_bounded():
    """Completed handshakes (cookie or not) never push the table past max_connections."""
    st_ = Stack(isn_key=b"many", config=StackConfig(max_connections=100, syn_backlog=4096,
                                                     raise_errors=True))
    st_.listen(b"\0\0\0\0", 8080)
    now = 0.0
    for i in range(1000):
        st_.input(_syn(i), now)
        for s in st_.output():
            if s.flags == SYN | ACK:
                ack = Segment(src=s.dst, dst=s.src, sport=s.dport, dport=s.sport,
                              seq=s.ack, ack=(s.seq + 1) % MOD, flags=ACK, wnd=1000,
                              tsval=i + 1, tsecr=s.tsval or 0)
                st_.input(ack, now)
        st_.output()
        assert st_.counters()["connections"] <= 100
    st_.events()
    cnt = st_.counters()
    assert cnt["connections"] == 100, cnt
    assert cnt["conn_limit_drops"] >= 900
    assert cnt["internal_errors"] == 0


def test_time_wait_bounded():
    """TIME_WAIT entries are capped (max_time_wait): beyond it, connections close at once."""
    st_ = Stack(isn_key=b"tw", config=StackConfig(max_time_wait=10, time_wait=60,
                                                   raise_errors=True, timestamps=False))
    now = 0.0
    for i in range(50):
        c = st_.connect(now, R.LOCAL_ADDR, 40000 + i, R.REMOTE_ADDR, 80)
        syn = st_.output()[0]
        st_.input(Segment(src=R.REMOTE_ADDR, dst=R.LOCAL_ADDR, sport=80, dport=40000 + i,
                          seq=1000, ack=(syn.seq + 1) % MOD, flags=SYN | ACK, wnd=65535,
                          mss=1460), now)
        st_.output()
        c.close(now)
        fin = [s for s in st_.output() if s.flags & FIN][0]
        st_.input(Segment(src=R.REMOTE_ADDR, dst=R.LOCAL_ADDR, sport=80, dport=40000 + i,
                          seq=1001, ack=(fin.seq + 1) % MOD, flags=FIN | ACK, wnd=65535), now)
        st_.output()
    st_.events()
    cnt = st_.counters()
    assert cnt["time_wait"] <= 10, cnt
    assert cnt["connections"] <= 10, cnt
    assert cnt["tw_overflow"] >= 40


def test_isn_keyed_and_clocked():
    """RFC 6528: ISN = M + F(4-tuple, secret key). Different keys or tuples give
    unrelated ISNs; for one tuple the ISN advances with the clock (M), so a reconnect
    lands above the old sequence space; nothing in the ISN repeats across tuples."""
    def isn(key, sport, now):
        st_ = Stack(isn_key=key, config=StackConfig(raise_errors=True))
        st_.connect(now, R.LOCAL_ADDR, sport, R.REMOTE_ADDR, 80)
        return st_.output()[0].seq

    a, b = isn(b"k1", 40000, 0.0), isn(b"k2", 40000, 0.0)
    assert a != b
    isns = {isn(b"k1", p, 0.0) for p in range(40000, 40200)}
    assert len(isns) == 200
    # M: a 4 µs clock (RFC 6528 §3 / RFC 9293 §3.4.1), so ~250000 per second
    d = (isn(b"k1", 40000, 10.0) - a) % MOD
    assert 2_000_000 <= d <= 3_000_000, d
