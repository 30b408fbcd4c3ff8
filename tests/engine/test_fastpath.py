"""fpd.fastpath against the per-segment reference: the same random traffic into two
identical stacks, one fed segment by segment (``Stack.input``, one Segment per output
segment), the other through ``input_burst`` and/or with ``stack.tso = xmit_burst``;
after every step both must hold identical connection state, timers and counters, and
have produced identical segments (a SegBurst expanded) and events. Each runs on every
build of the fast path there is: fpd/fastpath.py as Python (with its Python receive
loop, "py", or fpd._accel's, "c") and its Cython build fpd._fastpath_c ("compiled")."""

import random

import pytest
from hypothesis import given, settings, strategies as hst

from fpd import fastpath
from fpd.fastpath import SegBurst, expand
from fpd.stack import Stack, StackConfig
from fpd import tcp
from fpd.tcp import Connection
from fpd.wire import ACK, FIN, PSH, SYN, Segment

SRV = bytes([10, 77, 0, 1])
PEER = bytes([10, 77, 0, 2])
MASK = 0xFFFFFFFF
STREAM = random.Random(99).randbytes(1 << 20)


def _norm(v):
    if isinstance(v, (bytearray, memoryview, bytes)) or type(v).__name__ == "RcvQueue":
        return bytes(v)       # (the receive queue compares by its bytes, not its chunks)
    if isinstance(v, (list, tuple)):
        return tuple(_norm(x) for x in v)
    if isinstance(v, (tcp.PyRec, tcp._compiled._Rec) if tcp._compiled else tcp.PyRec):
        return ("rec", v.start, v.end, v.flags, v.ts)
    return v


def conn_state(c):
    d = {}
    for name in Connection.__slots__:
        if name in ("cx", "cfg", "listener", "cc"):
            continue
        d[name] = _norm(getattr(c, name))
    cc = c.cc
    if cc is not None:
        for klass in type(cc).__mro__:
            for name in getattr(klass, "__slots__", ()):
                d["cc." + name] = getattr(cc, name, None)
    return d


def stack_state(st):
    conns = {k: conn_state(c) for k, c in st._conns.items()}
    cx = st._cx
    timers = sorted((t, s) for t, s, _c in cx.timers)
    # (the ACK runs' own counters: only the fast stack has runs)
    stats = {k: v for k, v in st.stats.as_dict().items() if not k.startswith("ack_run")}
    return conns, timers, stats, cx.half_open, cx.tw_count, \
        [id(c) for c in cx.acks] and len(cx.acks)


def _events(st):
    out = []
    for e in st.events():
        out.append((e[0],) + tuple(type(x).__name__ for x in e[1:]))
    return out


class Pair:
    """Two stacks driven alike: ``ref`` per segment, ``fast`` through fastpath."""

    def __init__(self, burst, tso, rnd, cfg, acks=False):
        self.rnd = rnd
        self.burst = burst
        self.acks = acks
        self.ref = Stack(b"k" * 16, cfg)
        self.fast = Stack(b"k" * 16, cfg)
        if tso:
            self.fast.tso = _CUR["xb"]
        for st in (self.ref, self.fast):
            st.listen(b"\0\0\0\0", 80)
        self.mss = rnd.choice((536, 1000, 1448))
        self.ts = rnd.random() < 0.8
        self.tsval = rnd.getrandbits(32)
        self.peer_seq = rnd.getrandbits(32)
        self.peer_wnd = rnd.choice((512, 1024, 65535))
        syn = Segment(src=PEER, dst=SRV, sport=40000, dport=80, seq=self.peer_seq,
                      flags=SYN, wnd=65535, mss=self.mss, wscale=rnd.choice((None, 7)),
                      sack_ok=rnd.random() < 0.8, tsval=self.tsval if self.ts else None)
        self.feed([syn], 0.0)
        outs = self.check(0.0)
        synack = outs[0]
        self.iss = synack.seq
        self.peer_seq = (self.peer_seq + 1) & MASK
        self.sent_hi = 1             # highest offset of our data seen sent (+1 for SYN)
        self.acked = 1
        self.data_off = 0            # next peer stream byte
        self.ws = syn.wscale is not None
        self.feed([self.seg(ACK, self.acked)], 0.001)
        self.check(0.001)

    def seg(self, flags, ack_off, payload=b"", seq_off=None, wnd=None, sack=()):
        self.tsval = (self.tsval + self.rnd.choice((0, 0, 1, 3))) & MASK
        seq = (self.peer_seq + (self.data_off if seq_off is None else seq_off)) & MASK
        return Segment(src=PEER, dst=SRV, sport=40000, dport=80, seq=seq,
                       ack=(self.iss + ack_off) & MASK, flags=flags,
                       wnd=self.peer_wnd if wnd is None else wnd, sack=sack,
                       tsval=self.tsval if self.ts else None,
                       tsecr=1 if self.ts else 0, payload=payload)

    def feed(self, segs, now):
        for s in segs:
            self.ref.input(s.copy(), now)
        if self.burst:
            _CUR["ib"](self.fast, [s.copy() for s in segs], now, self.acks)
        else:
            for s in segs:
                self.fast.input(s.copy(), now)

    def check(self, now):
        for st in (self.ref, self.fast):
            st.tick(now)
        a = self.ref.output()
        b_raw = self.fast.output()
        b = expand(b_raw)
        assert [s.fields() for s in a] == [s.fields() for s in b]
        assert _events(self.ref) == _events(self.fast)
        assert stack_state(self.ref) == stack_state(self.fast)
        for s in a:
            if s.payload and s.src == SRV:
                end = ((s.seq - self.iss) & MASK) + len(s.payload)
                if end > self.sent_hi:
                    self.sent_hi = end
        self.bursts = sum(1 for s in b_raw if type(s) is SegBurst)
        return a

    def conns(self):
        return self.ref.connections(), self.fast.connections()

    def step(self, now):
        rnd = self.rnd
        ca, cb = self.conns()
        if not ca:
            return False
        ca, cb = ca[0], cb[0]
        r = rnd.random()
        if r < 0.3:                                      # the app sends
            data = STREAM[:rnd.randrange(1, 40000)]
            assert ca.send(data, now) == cb.send(data, now)
        elif r < 0.4:                                    # the app reads
            n = rnd.randrange(1, 70000)
            assert ca.recv(n) == cb.recv(n)
        burst = []
        mss = self.mss - (12 if self.ts else 0)
        for _ in range(rnd.randrange(0, 24)):
            k = rnd.random()
            if k < 0.55:                                 # in-order data
                n = rnd.choice((mss, mss, mss, rnd.randrange(1, mss + 1)))
                off = self.data_off
                p = STREAM[off % 500000:off % 500000 + n]
                burst.append(self.seg(ACK | (PSH if rnd.random() < 0.3 else 0),
                                      self.acked, p))
                self.data_off += n
            elif k < 0.6 and self.data_off:              # a hole: skip some bytes
                self.data_off += rnd.randrange(1, mss)
            elif k < 0.65 and burst:                     # duplicate
                burst.append(rnd.choice(burst))
            elif k < 0.7 and len(burst) > 1:             # reorder
                i = rnd.randrange(len(burst) - 1)
                burst[i], burst[i + 1] = burst[i + 1], burst[i]
            elif k < 0.85:                               # pure ACK of our data
                if self.sent_hi > self.acked and rnd.random() < 0.8:
                    self.acked = rnd.randrange(self.acked, self.sent_hi + 1)
                sack = ()
                if rnd.random() < 0.1 and self.sent_hi > self.acked + 2:
                    lo = rnd.randrange(self.acked + 1, self.sent_hi)
                    sack = (((self.iss + lo) & MASK, (self.iss + self.sent_hi) & MASK),)
                burst.append(self.seg(ACK, self.acked, sack=sack))
            elif k < 0.9:                                # window change
                self.peer_wnd = rnd.choice((0, 100, 512, 1024, 65535))
                burst.append(self.seg(ACK, self.acked))
            elif k < 0.92:                               # an old timestamp
                s = self.seg(ACK, self.acked)
                if s.tsval is not None:
                    s.tsval = (s.tsval - 1000) & MASK
                burst.append(s)
            elif k < 0.93:                               # FIN
                burst.append(self.seg(ACK | FIN, self.acked))
                self.data_off += 1
        self.feed(burst, now)
        self.check(now)
        return True


C_RUN = fastpath._c_run
IMPLS = (["py", "c"] if C_RUN is not None else ["py"]) + \
    (["compiled-py", "compiled"] if fastpath.IMPL == "compiled" else [])
_CUR = {}


def _use(impl):
    """py: fpd/fastpath.py with its Python receive loop; c: with fpd._accel.data_run;
    compiled: fpd._fastpath_c, the Cython build of fpd/fastpath.py (with data_run, as it
    runs); compiled-py: that build with its own typed receive loop."""
    fastpath._c_run = None if impl == "py" else C_RUN
    comp = fastpath._compiled
    if comp is not None:
        comp._c_run = None if impl == "compiled-py" else C_RUN
    if impl.startswith("compiled"):
        _CUR.update(ib=comp.input_burst, xb=comp.xmit_burst)
    else:
        _CUR.update(ib=fastpath.py_input_burst, xb=fastpath.py_xmit_burst)


_use(IMPLS[-1])


@pytest.fixture(params=IMPLS)
def fp_impl(request):
    _use(request.param)
    yield request.param
    _use(IMPLS[-1])


@settings(max_examples=200, deadline=None)
@given(seed=hst.integers(0, 2 ** 32 - 1), mode=hst.sampled_from(["burst", "tso", "both"]),
       impl=hst.sampled_from(IMPLS))
def test_fastpath_equals_per_segment_path(seed, mode, impl):
    """The compiled receive loop (fpd._accel.data_run) and the Python one alike."""
    _use(impl)
    try:
        _equal_run(seed, mode)
    finally:
        _use(IMPLS[-1])


def test_the_compiled_receive_loop_is_built():
    from fpd import wire
    assert (C_RUN is not None) == wire.ACCEL


def test_the_compiled_fast_path_is_built_and_runs():
    # the normal install (pip install -e ., make venv) builds fpd._fastpath_c; a silent
    # fallback would hide a broken build, so the suite insists unless FPD_PURE_PYTHON is set
    import os
    from fpd import builds
    if builds.refused():                        # FPD_PURE_PYTHON or FPD_COMPILED=0
        assert fastpath.IMPL == "python" and fastpath.input_burst is fastpath.py_input_burst
        return
    assert fastpath.IMPL == "compiled"
    assert fastpath.input_burst is fastpath._compiled.input_burst
    assert type(fastpath.input_burst).__name__ == "builtin_function_or_method"
    # one SegBurst class, whichever build made the burst
    assert fastpath._compiled.SegBurst is fastpath.SegBurst


def _equal_run(seed, mode):
    rnd = random.Random(seed)
    cfg = StackConfig(quickack=rnd.choice((0, 2, 16)), rcvbuf=rnd.choice((8192, 65536, 262144)),
                      nodelay=rnd.random() < 0.5, raise_errors=True)
    p = Pair(mode != "tso", mode != "burst", rnd, cfg)
    now = 0.001
    for _ in range(40):
        now += rnd.choice((0.0, 0.0001, 0.001, 0.01, 0.05, 0.3))
        if not p.step(now):
            break


@pytest.mark.parametrize("which", [i for i in IMPLS if not i.startswith("compiled")])
def test_bulk_receive_burst_is_batched_and_equal(which):
    """A plain in-order burst: the batch path takes all but the first segment."""
    _use(which)
    rnd = random.Random(5)
    p = Pair(True, False, rnd, StackConfig(quickack=0, raise_errors=True))
    calls = []
    orig = fastpath._data_run

    def spy(*a):
        m = orig(*a)
        calls.append(m)
        return m
    fastpath._data_run = spy
    try:
        mss = p.mss - (12 if p.ts else 0)
        burst = []
        for _ in range(32):
            off = p.data_off
            burst.append(p.seg(ACK, p.acked, STREAM[off:off + mss]))
            p.data_off += mss
        p.feed(burst, 0.01)
        p.check(0.01)
    finally:
        fastpath._data_run = orig
        _use(IMPLS[-1])
    assert calls and calls[0] == 31
    ca, cb = p.conns()
    assert bytes(cb[0].rcvq) == STREAM[:32 * mss]


def test_bulk_send_goes_out_as_one_burst_and_equal(fp_impl):
    rnd = random.Random(6)
    p = Pair(False, True, rnd, StackConfig(raise_errors=True, init_cwnd=10))
    p.peer_wnd = 65535
    p.feed([p.seg(ACK, p.acked)], 0.01)
    p.check(0.01)
    ca, cb = p.conns()
    ca[0].send(STREAM[:100000], 0.02)
    cb[0].send(STREAM[:100000], 0.02)
    p.check(0.02)
    assert p.bursts == 1


@pytest.mark.parametrize("n", [1, 2, 5])
def test_segburst_split_keeps_the_segments(n):
    t = Segment(src=SRV, dst=PEER, sport=80, dport=4000, seq=MASK - 1500, ack=7,
                flags=ACK, wnd=100, tsval=5, tsecr=6)
    b = SegBurst(t, STREAM[:6 * 1000 - 10], 1000, 6, ACK | PSH)
    whole = [s.fields() for s in b.segments()]
    rest = b.split(n)
    assert [s.fields() for s in b.segments() + rest.segments()] == whole


def test_burst_ending_at_the_send_queue_end_carries_psh(fp_impl):
    rnd = random.Random(8)
    p = Pair(False, True, rnd, StackConfig(raise_errors=True, init_cwnd=10))
    p.peer_wnd = 65535
    p.feed([p.seg(ACK, p.acked)], 0.01)
    p.check(0.01)
    ca, cb = p.conns()
    mss = ca[0].mss
    ca[0].send(STREAM[:5 * mss], 0.02)
    cb[0].send(STREAM[:5 * mss], 0.02)
    out = p.check(0.02)
    assert p.bursts == 1
    assert [s.flags for s in out] == [ACK] * 4 + [ACK | PSH]


def _sending_pair(rnd, acks=True, nsegs=40):
    p = Pair(True, True, rnd, StackConfig(raise_errors=True, init_cwnd=64), acks=acks)
    p.peer_wnd = 65535
    p.feed([p.seg(ACK, p.acked)], 0.01)
    p.check(0.01)
    ca, cb = p.conns()
    n = nsegs * ca[0].mss
    ca[0].send(STREAM[:n], 0.02)
    cb[0].send(STREAM[:n], 0.02)
    p.check(0.02)
    return p


def _stream_ok(out, iss):
    for s in out:
        if s.payload:
            off = ((s.seq - iss) & MASK) - 1
            assert bytes(s.payload) == STREAM[off:off + len(s.payload)]


@pytest.mark.python_engine       # spies on Connection._ack_new (an extension type can't be patched)
def test_a_run_of_advancing_acks_is_one_update_and_one_transmit(fp_impl, monkeypatch):
    rnd = random.Random(11)
    p = _sending_pair(rnd)
    ca, cb = (x[0] for x in p.conns())
    mss = ca.mss
    p.sent_hi = ca.snd_nxt_o
    more = STREAM[40 * mss:240 * mss]       # more to send once the ACKs open cwnd
    ca.send(more, 0.03)
    cb.send(more, 0.03)
    p.check(0.03)
    burst = [p.seg(ACK, 1 + 2 * mss * (i + 1)) for i in range(10)]
    for s in burst:
        p.ref.input(s.copy(), 0.05)
    calls = []
    orig = tcp.Connection._ack_new

    def spy(self, ack_o, seg, now):
        calls.append((self is cb, ack_o))
        return orig(self, ack_o, seg, now)
    monkeypatch.setattr(tcp.Connection, "_ack_new", spy)
    _CUR["ib"](p.fast, [s.copy() for s in burst], 0.05, True)
    monkeypatch.undo()
    a, b = p.ref.output(), p.fast.output()
    # the first ACK through the reference (one update, one transmit), the other nine as
    # ONE cumulative ACK (one update, one transmit); the reference does ten of each
    assert calls == [(True, 1 + 2 * mss), (True, 1 + 20 * mss)]
    assert len([s for s in b if type(s) is SegBurst]) == 2
    assert len([s for s in a if s.payload]) >= 10
    for name in ("snd_una_o", "bytes_acked", "dupacks", "segs_in", "rcv_nxt_o", "ts_recent",
                 "snd_wnd", "snd_wl1_o", "snd_wl2_o", "sndq_a", "sacked_out", "lost_out",
                 "retrans_out"):
        assert getattr(ca, name) == getattr(cb, name), name
    assert ca.cc.cwnd == cb.cc.cwnd           # slow start credits every acked byte
    assert [(r.start, r.end) for r in ca.rtxq] != [] and cb.rtxq[0].start == ca.rtxq[0].start
    # the RTT: one sample per cumulative update (two here, ten in the reference)
    assert cb.srtt is not None and cb.t_rtx == 0.05 + cb._cur_rto()
    assert p.ref.stats.segs_in == p.fast.stats.segs_in
    _stream_ok(a, p.iss)
    _stream_ok(expand(b), p.iss)
    # what was sent continues the stream from the same place
    assert expand(b)[0].seq == [s for s in a if s.payload][0].seq


def _acks_with_windows(p, wnds, step=2):
    """One ACK per window in ``wnds``, each acknowledging ``step`` more segments."""
    mss = p.conns()[0][0].mss
    out = []
    for k, w in enumerate(wnds):
        out.append(p.seg(ACK, 1 + step * mss * (k + 1), wnd=w))
    return out


def _feed_both(p, burst, now, acks=True):
    for s in burst:
        p.ref.input(s.copy(), now)
    _CUR["ib"](p.fast, [s.copy() for s in burst], now, acks)
    return p.ref.output(), p.fast.output()


_WND_FIELDS = ("snd_una_o", "snd_nxt_o", "bytes_acked", "dupacks", "segs_in", "rcv_nxt_o",
               "ts_recent", "snd_wnd", "max_snd_wnd", "snd_wl1_o", "snd_wl2_o", "persist_n",
               "t_persist", "sndq_a", "sndq_o", "sacked_out", "lost_out", "retrans_out",
               "bytes_out", "sndbuf")


@pytest.mark.parametrize("seed", range(4))
def test_acks_whose_window_moves_are_one_run_equal_to_per_segment(seed, fp_impl):
    """A kernel receiver's window moves as its application reads: the run takes those
    ACKs and leaves the window, its edges, what was sent and the stream as the per-segment
    path does."""
    rnd = random.Random(30 + seed)
    p = _sending_pair(rnd)
    ca, cb = (x[0] for x in p.conns())
    mss = ca.mss
    more = STREAM[40 * mss:240 * mss]
    ca.send(more, 0.03)
    cb.send(more, 0.03)
    p.check(0.03)
    # each window keeps the right edge where it was or moves it on; some shrink in size
    g = 1 << ca.snd_shift
    w = 60000 if not ca.snd_shift else 2000
    wnds = []
    for _ in range(10):     # falls by at most what an ACK acknowledges: no edge recedes
        w = min(65535, max(4 * mss // g + 1, w + rnd.choice((-(2 * mss // g), 0, mss // g))))
        wnds.append(w)
    burst = _acks_with_windows(p, wnds)
    runs0 = p.fast.stats.ack_runs
    a, b = _feed_both(p, burst, 0.05)
    assert p.fast.stats.ack_runs == runs0 + 1
    assert p.fast.stats.ack_run_acks == 9         # the first ACK: the per-segment path
    assert len(set(wnds[1:])) > 1                 # the windows did move within the run
    for name in _WND_FIELDS:
        assert getattr(ca, name) == getattr(cb, name), name
    if ca.snd_shift:
        # the window does not limit: slow start credits every acked byte either way
        # (where it limits, the per-segment path credits only the ACKs that come while
        # cwnd limits, the run all or none: the documented difference)
        assert ca.cc.cwnd == cb.cc.cwnd
    assert [(r.start, r.end) for r in ca.rtxq] == [(r.start, r.end) for r in cb.rtxq]
    _stream_ok(a, p.iss)
    _stream_ok(expand(b), p.iss)
    sa = [s for s in a if s.payload]
    sb = [s for s in expand(b) if s.payload]
    assert sa[0].seq == sb[0].seq and sum(len(s.payload) for s in sa) == \
        sum(len(s.payload) for s in sb)


@pytest.mark.parametrize("case", ["zero", "recede", "same_wnd", "dup", "end"])
def test_why_an_ack_run_stops_is_counted(case, fp_impl):
    rnd = random.Random(41)
    p = _sending_pair(rnd)
    ca, cb = (x[0] for x in p.conns())
    mss = ca.mss
    g = ca.snd_shift
    w = p.peer_wnd
    acks = True
    if case == "zero":
        wnds = [w, w, w, 0, w]
    elif case == "recede":                        # the edge falls by 3 mss at the 4th ACK
        wnds = [w, w, w, w - ((5 * mss) >> g), w]
    elif case == "same_wnd":                      # stop 18's runs: any change stops them
        wnds = [w, w, w, w - 1, w - 1]
        acks = fastpath.ACKS_SAME_WND
    else:
        wnds = [w] * 5
    burst = _acks_with_windows(p, wnds)
    if case == "dup":
        burst.insert(3, burst[2].copy())
    before = dict(p.fast.stats.as_dict())
    a, b = _feed_both(p, burst, 0.05, acks)
    after = p.fast.stats.as_dict()
    grew = {k: after[k] - before[k] for k in after if k.startswith("ack_run")
            and after[k] != before[k]}
    why = {"zero": "wnd", "recede": "wnd", "same_wnd": "wnd", "dup": "dup", "end": "end"}
    assert grew["ack_run_stop_" + why[case]] >= 1
    # [A0 per segment] [A1 A2: a run] stop [A3 ...]; the duplicate: [A3 A4] a second run
    assert (grew["ack_runs"], grew["ack_run_acks"]) == \
        {"end": (1, 4), "dup": (2, 4)}.get(case, (1, 2))
    assert p.ref.stats.segs_in == p.fast.stats.segs_in
    for name in ("snd_una_o", "snd_wnd", "snd_wl1_o", "snd_wl2_o", "max_snd_wnd"):
        assert getattr(ca, name) == getattr(cb, name), name
    _stream_ok(expand(b), p.iss)


@pytest.mark.parametrize("seed", range(12, 20))
def test_duplicate_acks_are_never_collapsed(seed, fp_impl):
    rnd = random.Random(seed)
    p = _sending_pair(rnd)
    c = p.conns()[0][0]
    mss = c.mss
    burst = []                                            # four duplicates: fast retransmit
    for k in range(4):                                    # (with SACK: new blocks each)
        sack = (((p.iss + 1 + mss) & MASK, (p.iss + 1 + (k + 2) * mss) & MASK),) \
            if c.sack_ok else ()
        burst.append(p.seg(ACK, 1, sack=sack))
    p.feed(burst, 0.05)
    p.check(0.05)                                         # identical to the reference
    assert p.ref.stats.fast_retransmits == p.fast.stats.fast_retransmits == 1


def _py_run_end(segs, i):
    s0 = segs[i]
    j = i + 1
    while j < len(segs):
        s = segs[j]
        if s is None or (s.src, s.dst, s.sport, s.dport) != (s0.src, s0.dst, s0.sport,
                                                              s0.dport):
            break
        j += 1
    return j


def test_run_end_matches_the_python_grouping():
    if fastpath._c_run_end is None:
        pytest.skip("FPD_PURE_PYTHON: no compiled grouping to compare")
    rnd = random.Random(3)
    flows = [(SRV, PEER, 80, 40000), (SRV, PEER, 80, 40001), (bytes(SRV), PEER, 81, 40000),
             (SRV, bytes([10, 77, 0, 3]), 80, 40000)]
    for _ in range(300):
        segs = []
        for _ in range(rnd.randrange(1, 30)):
            if rnd.random() < 0.1:
                segs.append(None)
                continue
            d, s, dp, sp = rnd.choice(flows[:rnd.randrange(1, 5)])
            segs.append(Segment(src=bytes(s), dst=bytes(d), sport=sp, dport=dp))
        for i, seg in enumerate(segs):
            if seg is not None:
                assert fastpath._c_run_end(segs, i) == _py_run_end(segs, i)


@pytest.mark.parametrize("seed", range(6))
def test_interleaved_flows_equal_per_segment(seed, fp_impl):
    """Two connections' segments interleaved in one burst: runs of each, same result."""
    rnd = random.Random(seed)
    cfg = StackConfig(quickack=2, raise_errors=True)
    ref, fast = Stack(b"k" * 16, cfg), Stack(b"k" * 16, cfg)
    for st in (ref, fast):
        st.listen(b"\0\0\0\0", 80)
    peers = []
    for port in (40000, 40001):
        syn = Segment(src=PEER, dst=SRV, sport=port, dport=80, seq=1000, flags=SYN,
                      wnd=65535, mss=1000, wscale=7, sack_ok=True, tsval=1)
        for st in (ref, fast):
            st.input(syn.copy(), 0.0)
        iss = [s for s in ref.output() if s.dport == port][0].seq
        fast.output()
        ack = Segment(src=PEER, dst=SRV, sport=port, dport=80, seq=1001,
                      ack=(iss + 1) & MASK, flags=ACK, wnd=512, tsval=2, tsecr=0)
        for st in (ref, fast):
            st.input(ack.copy(), 0.001)
        peers.append([port, iss, 0])
    for step in range(10):
        burst = []
        for _ in range(rnd.randrange(1, 40)):
            p = rnd.choice(peers)
            n = rnd.choice((988, 988, rnd.randrange(1, 989)))
            burst.append(Segment(src=PEER, dst=SRV, sport=p[0], dport=80,
                                 seq=(1001 + p[2]) & MASK, ack=(p[1] + 1) & MASK, flags=ACK,
                                 wnd=512, tsval=3 + step, tsecr=0,
                                 payload=STREAM[p[2]:p[2] + n]))
            p[2] += n
        now = 0.01 * (step + 1)
        for s in burst:
            ref.input(s.copy(), now)
        _CUR["ib"](fast, [s.copy() for s in burst], now, True)
        for st in (ref, fast):
            st.tick(now)
        assert [s.fields() for s in ref.output()] == [s.fields() for s in expand(fast.output())]
        assert _events(ref) == _events(fast)
        assert stack_state(ref) == stack_state(fast)


def test_a_stale_compiled_build_is_not_run(tmp_path):
    """fpd._fastpath_c built from another fastpath.py (edited since the last install) is
    never run: fpd.fastpath says so and hands out its Python functions."""
    import os
    import shutil
    import subprocess
    import sys
    if fastpath.IMPL != "compiled":
        pytest.skip(f"no compiled build here: {fastpath.WHY}")
    pkg = os.path.dirname(fastpath.__file__)
    shutil.copytree(pkg, tmp_path / "fpd", ignore=shutil.ignore_patterns("__pycache__"))
    code = ("from fpd import fastpath; print(fastpath.IMPL); print(fastpath.WHY); "
            "print(fastpath.input_burst is fastpath.py_input_burst)")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    env.pop("FPD_PURE_PYTHON", None)
    env.pop("FPD_COMPILED", None)

    def run(**extra):
        return subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                              env=dict(env, **extra), capture_output=True, text=True,
                              check=True).stdout.split("\n")
    assert run()[:3] == ["compiled", "", "False"]          # the copy as built
    # FPD_COMPILED=0 turns the compiled fast path off with the compiled engine
    impl, why, py = run(FPD_COMPILED="0")[:3]
    assert (impl, py) == ("python", "True") and why == "FPD_COMPILED=0 set"
    # the engine's .pxd edited (Connection's layout, which this build reads at C offsets):
    # the engine and the fast path both fall back, the fast path naming the engine's reason
    pxd = tmp_path / "fpd" / "_tcp_c.pxd"
    orig = pxd.read_bytes()
    pxd.write_bytes(orig + b"\n# an edit after the build\n")
    impl, why, py = run()[:3]
    assert (impl, py) == ("python", "True") and "fpd._tcp_c" in why and "stale" in why
    pxd.write_bytes(orig)
    assert run()[:3] == ["compiled", "", "False"]
    with open(tmp_path / "fpd" / "fastpath.py", "a") as f:
        f.write("\n# an edit after the build\n")
    impl, why, py = run()[:3]
    assert (impl, py) == ("python", "True") and "stale" in why

