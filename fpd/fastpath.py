"""The per-burst data path: a whole RX burst into the engine, a run of TX segments as one
item (sans-IO, like fpd.tcp / fpd.stack).

Receive (:func:`input_burst`).  The worker parses a whole RX burst and calls
``input_burst(stack, segs, now)`` instead of ``stack.input`` once per segment. Consecutive
segments of one connection form a run; the first segment of a run goes through
``Stack.input`` (the reference, per-segment path); the in-order data segments after it
that the engine's header-prediction fast path would take enter :func:`_data_run` together:
one pass over their sequence numbers, timestamps and windows, one append each to the
receive buffer, at most one READABLE event, one ACK decision, one timer update for the
whole run. Anything else -- another flag, SACK blocks, an ACK that moves, a window that
changes, a hole, data while our send queue holds unsent bytes (the per-segment path would
transmit after each segment) -- stops the run and takes ``Stack.input`` again. The result
(state, output segments, events, timers) is the same as feeding the segments one by one;
``tests/engine/test_fastpath.py`` checks that over random bursts.

Transmit (:func:`xmit_burst`, :class:`SegBurst`).  With ``stack.tso = xmit_burst`` (the
worker sets it) ``Connection._xmit`` first hands the connection to ``xmit_burst``, which
sends, in the common case (connection open, nothing to retransmit, no SACK blocks to
carry, no FIN queued, no idle restart), as many full-sized new segments as the peer's
window and cwnd allow at once, as ONE output item, a :class:`SegBurst` ("N segments of MSS
bytes from sequence S", one payload copy), with the retransmission records, counters and
timers exactly as N calls of the per-segment path leave them; the rest (a short tail,
Nagle, a blocked window) continues in ``_xmit`` as before. The worker stamps a burst's
frames from one prebuilt header (``fpd.wire.stamp_frames``). ``SegBurst.segments()``
gives the per-segment equivalent (tests compare the two byte for byte).

Connection / Stack internals used here (the documented set; fpd/tcp.py keeps them):
``Stack._conns, _acks, _events, _out, _now, stats, config.raise_errors, tso``;
``Connection.state, ooo, ca_state, dsack, closed_by_app, ts_ok, ts_recent,
ts_recent_stamp, rcv_nxt_o, rcv_wup_o, rcv_adv_o, irs, iss, snd_una_o, snd_nxt_o,
snd_wnd, snd_shift, snd_wl1_o, snd_wl2_o, max_snd_wnd, persist_n, t_persist, t_dack,
t_rtx, sndq, sndq_o, rcvq, bytes_in, bytes_out, segs_in, segs_out, rcv_mss, quick,
ack_now, ack_pending, ack_queued, last_rcv, ka_probes, rd_pending, cfg, cc, mss, lost_out,
retrans_out, sacked_out, reno_dup, rtxq, fin_o, last_send, created, nodelay, sack_ok,
schedule(), _mkseg(), _cur_rto(), _in_flight()``.
"""

from .tcp import (ESTABLISHED, CLOSED, CA_OPEN, MASK, HALF, EV_READABLE, ACK, PSH, _Rec,
                  PREDICT_MASK)
from . import wire as _wire
from .wire import Segment

__all__ = ["input_burst", "xmit_burst", "SegBurst"]

# the same constants under names fpd/_fastpath_c.pxd gives C types (compiled: C integers)
_M32 = MASK
_HALF32 = HALF
_ACK = ACK
_PSH = PSH
_PREDICT = PREDICT_MASK

# The compiled build (fpd._fastpath_c) reads the fields of fpd._tcp_c's Connection at their
# C offsets (fpd/_fastpath_c.pxd cimports it): there _TCONN is that class and a connection
# of another class (the Python build, fpd.tcp.use_build("python")) takes the _ANY_*
# functions, this module's code run by the interpreter. Here (the Python build) _TCONN is
# None: every connection takes the code below.
_TCONN = None
_ANY_DATA_RUN = _ANY_ACK_RUN = _ANY_XMIT_BURST = None


# --- receive ------------------------------------------------------------------------------
def input_burst(stack, segs, now, acks=False):
    """Feed a burst of inbound segments (``None`` entries are skipped) to ``stack``,
    with the same result as ``stack.input(seg, now)`` for each in order.

    ``acks=True`` also collapses each run of advancing pure ACKs of one connection
    into one cumulative ACK (:func:`_ack_run`): one ``_ack_new`` for the run's last
    ACK and one transmit decision after it, instead of one of each per ACK (what that
    changes is listed there); ``acks=ACKS_SAME_WND``: runs that stop at any window
    change (stop 18's, for A/B)."""
    n = len(segs)
    i = 0
    conns = stack._conns
    inp = stack.input
    while i < n:
        seg = segs[i]
        if seg is None:
            i += 1
            continue
        j = i + 1
        if j < n:
            src = seg.src
            dst = seg.dst
            sp = seg.sport
            dp = seg.dport
            if _c_run_end is not None and type(seg) is Segment:
                j = _c_run_end(segs, i)
            else:
                while j < n:
                    s = segs[j]
                    if s is None or s.sport != sp or s.dport != dp or s.src != src or \
                            s.dst != dst:
                        break
                    j += 1
        inp(seg, now)
        i += 1
        if j - i > 0:
            c = conns.get((dst, dp, src, sp))
            while i < j:
                if c is not None:
                    try:
                        if segs[i].payload:
                            if _TCONN is None or type(c) is _TCONN:
                                m = _data_run(stack, c, segs, i, j, now)
                            else:
                                m = _ANY_DATA_RUN(stack, c, segs, i, j, now)
                        elif acks:
                            if _TCONN is None or type(c) is _TCONN:
                                m = _ack_run(stack, c, segs, i, j, now, acks)
                            else:
                                m = _ANY_ACK_RUN(stack, c, segs, i, j, now, acks)
                        else:
                            m = 0
                    except Exception:
                        stack.stats.internal_errors += 1
                        if stack.config.raise_errors:
                            raise
                        m = 0
                    if m:
                        i += m
                        continue
                inp(segs[i], now)
                i += 1
                c = conns.get((dst, dp, src, sp))


def _data_run(stack, c, segs, i, j, now):
    """Take the in-order data segments segs[i:k] (k <= j) the fast path of
    ``Connection._input`` would take without transmitting; return k - i (0: none)."""
    if c.state is not ESTABLISHED or c.ooo or c.ca_state != CA_OPEN or \
            c.dsack is not None or c.closed_by_app or \
            c.snd_nxt_o < c.sndq_o + len(c.sndq):
        return 0
    una = c.snd_una_o
    args = (c.rcv_nxt_o, c.irs, (c.iss + una) & MASK, c.snd_wnd, c.snd_shift, c.rcv_adv_o,
            c.rcv_wup_o, c.ts_ok, c.ts_recent, c.rcv_mss, c.cfg.mss, c.quick, c.ack_now,
            c.ack_pending, c.t_dack is None, c.snd_wl1_o, c.snd_wl2_o, una)
    sink = c.rx_sink
    # the run's payloads: one chunk of the receive queue, or (a sink) copied by _rx_direct
    buf = bytearray() if sink is None else None
    if _c_run is not None:
        r = _c_run(segs, i, j, buf, args)
    else:
        r = _py_run(segs, i, j, buf, args)
    if r is None:
        return 0
    (m, nbytes, rn, ts_recent, ts_set, rcv_mss, quick, ack_now, ack_pending, dack_set,
     wupd, wl1, wl2) = r
    if sink is None:
        c.rcvq.append_owned(buf)
        direct = 0
    else:
        direct = _rx_direct(c, sink, segs, i, i + m, nbytes)
    cx = c.cx
    cx.now = now
    stack.stats.segs_in += m
    c.segs_in += m
    c.last_rcv = now
    c.ka_probes = 0
    if ts_set:
        c.ts_recent = ts_recent
        c.ts_recent_stamp = now
    if wupd:
        snd_wnd = c.snd_wnd
        c.snd_wl1_o = wl1
        c.snd_wl2_o = wl2
        if snd_wnd > c.max_snd_wnd:
            c.max_snd_wnd = snd_wnd
        if snd_wnd:
            c.persist_n = 0
            c.t_persist = None
    c.rcv_nxt_o = rn
    c.bytes_in += nbytes
    c.rcv_mss = rcv_mss
    c.quick = quick
    c.ack_now = bool(ack_now)
    c.ack_pending = bool(ack_pending)
    if dack_set:
        c.t_dack = now + c.cfg.delack
    if not c.rd_pending:
        c.rd_pending = True
        cx.events.append((EV_READABLE, c))
    if ack_now and not c.ack_queued:
        c.ack_queued = True
        cx.acks.append(c)
    if direct:
        c._read_done()          # what recv_to does after the application's read
    c.schedule()
    return m


def _rx_direct(c, sink, segs, i, k, nbytes):
    """Deliver the payloads of segs[i:k] (``nbytes`` in all) to the application through
    ``c.rx_sink`` instead of the receive queue, in order after whatever the queue holds:
    the queue first (``sink.write_parts``, as ``recv_to``), then, if it emptied, the run
    (``sink.write_with(fill)``: ``fill(view, at, free)`` copies the payloads into the
    ring's data from index ``at``, :func:`copy_payloads`). What the sink has no room for
    is queued (the reference path's queue; the service delivers it later). Returns the
    bytes the sink took."""
    q = c.rcvq
    took = 0
    w = 0
    if q.n:
        took = q.take_to(sink.write_parts, -1)
    if not q.n:
        w = sink.write_with(lambda view, at, free: copy_payloads(segs, i, k, view, at, free))
    if w < nbytes:
        skip = w
        for x in range(i, k):
            p = segs[x].payload
            n = len(p)
            if skip >= n:
                skip -= n
            elif skip:
                q.append(memoryview(p)[skip:])
                skip = 0
            else:
                q.append(p)
    return took + w


def _py_copy_payloads(segs, i, j, dst, at, limit):
    """The payloads of segs[i:j] in order into ``dst`` (a byte ring's data) from index
    ``at``, wrapping at its end, at most ``limit`` bytes; returns the count (the
    reference for ``fpd._accel.copy_payloads``)."""
    size = len(dst)
    if limit > size:
        limit = size
    if j > len(segs):
        j = len(segs)
    done = 0
    k = i
    while k < j and done < limit:
        p = segs[k].payload
        n = len(p)
        if n > limit - done:
            n = limit - done
        f = size - at
        if n <= f:
            dst[at:at + n] = p[:n]
        else:
            dst[at:] = p[:f]
            dst[:n - f] = p[f:n]
        at += n
        if at >= size:
            at -= size
        done += n
        k += 1
    return done


def _py_run(segs, i, j, rcvq, args):
    """The loop of :func:`_data_run` (the reference for ``fpd._accel.data_run``): how
    many of segs[i:j] the per-segment fast path would take in a row, each one's effect
    on the receive state, the payloads appended to ``rcvq``. None: not one."""
    (rn, irs, ack_w, snd_wnd, shift, adv, wup, ts_ok, ts_recent, rcv_mss, cfg_mss, quick,
     ack_now, ack_pending, dack_none, wl1, wl2, una) = args
    ts_set = dack_set = wupd = False
    k = i
    nbytes = 0
    while k < j:
        seg = segs[k]
        payload = seg.payload
        plen = len(payload)
        if not plen or seg.flags & 0x37 != _ACK or seg.sack or seg.ack != ack_w or \
                seg.seq != (irs + rn) & _M32 or ((seg.wnd & 0xFFFF) << shift) != snd_wnd \
                or plen > adv - rn:
            break
        if ts_ok:
            tsval = seg.tsval
            if tsval is None:
                break
            tsv = tsval
            if ((tsv - ts_recent) & _M32) >= _HALF32:
                break
            if rn <= wup:                   # RFC 7323 §4.3: the timestamp to echo
                ts_recent = tsv
                ts_set = True
        # window update (RFC 9293 SND.WL1/WL2), as the fast path does per segment
        if wl1 < rn or (wl1 == rn and wl2 <= una):
            wl1 = rn
            wl2 = una
            wupd = True
        if rcvq is not None:
            rcvq += payload
        rn += plen
        nbytes += plen
        if plen > rcv_mss:
            rcv_mss = plen if plen < cfg_mss else cfg_mss
        if quick > 0:
            quick -= 1
            ack_now = True
        elif rn - wup > rcv_mss:
            ack_now = True
        else:
            ack_pending = True
        if not ack_now and ack_pending and dack_none:
            dack_set = True
            dack_none = False
        k += 1
    if k == i:
        return None
    return (k - i, nbytes, rn, ts_recent, ts_set, rcv_mss, quick, ack_now, ack_pending,
            dack_set, wupd, wl1, wl2)


#: the compiled loops (fpd/_accel.c), None with FPD_PURE_PYTHON or without the build.
#: The Cython build (fpd._fastpath_c) uses them too: its typed ``_py_run`` reads each
#: Segment field through getattr, data_run reads the slots at their offsets, and measured
#: 0.12 µs per segment slower (docs/PERFORMANCE.md).
_c_run = getattr(_wire._accel, "data_run", None)
_c_run_end = getattr(_wire._accel, "run_end", None)
_accel_copy = getattr(_wire._accel, "copy_payloads", None)
copy_payloads = _accel_copy or _py_copy_payloads


#: why an ACK run stopped (the index is the reason code in _ack_run; the stack counts
#: each as stats.ack_run_stop_<name>): it reached the end of the connection's run of
#: segments; a segment with data; other flags; SACK blocks; another sequence number; a
#: duplicate ACK; an ACK beyond what was sent; a window change the run does not take
#: (zero, a right edge that moves left, or any with ACKS_SAME_WND); a missing or old
#: timestamp; a connection not open or in recovery (not looked at)
ACK_RUN_STOPS = ("end", "data", "flags", "sack", "seq", "dup", "beyond", "wnd", "ts",
                 "state")
_STOP_NAMES = tuple("ack_run_stop_" + n for n in ACK_RUN_STOPS)
#: ``input_burst(..., acks=ACKS_SAME_WND)``: ACK runs stop at every window change (stop
#: 18's runs; FPD_ACK_WND=0 in the worker), for A/B
ACKS_SAME_WND = 2


def _count_stop(stack, why):
    st = stack.stats
    name = _STOP_NAMES[why]
    setattr(st, name, getattr(st, name) + 1)


def _ack_run(stack, c, segs, i, j, now, acks):
    """Take the advancing pure ACKs segs[i:k] (k <= j, at least two) the fast path of
    ``Connection._input`` would take, as ONE cumulative ACK: the last one's ``_ack_new``
    (the retransmission queue, send buffer, RTT sample, congestion control and timer
    updated once for everything the run acknowledges), the window and timestamp as the
    per-segment path leaves them after the last, one ``_xmit``. Duplicate ACKs (the
    duplicate count and fast retransmit), ACKs with SACK blocks, anything with data or
    other flags stop the run and take the per-segment path; so do a zero window and a
    window whose right edge moves left (and, with ``acks == ACKS_SAME_WND``, any window
    change). Returns k - i (0: none); counts why it stopped (:data:`ACK_RUN_STOPS`).

    A window that changes within the run: the per-segment path applies each ACK's window
    after that ACK's ``_ack_new`` (the SND.WL1/WL2 rule holds for every ACK of the run once
    it holds for the first: same sequence number, growing ACK), so the last ``_ack_new``
    sees the next-to-last ACK's window (``_grow_sndbuf`` reads it) and the last ACK's
    window stays; the run sets the one before its ``_ack_new`` and the other after, and
    max_snd_wnd to the largest of them.

    What differs from feeding the ACKs one by one (on purpose): one RTT sample and one
    delivery-rate check per run instead of one per ACK, congestion control credited the
    run's bytes in one call (slow start credits every byte either way), and what the
    per-segment path sends between two ACKs goes out after the last one."""
    if c.state is not ESTABLISHED or c.ooo or c.ca_state != CA_OPEN or \
            c.dsack is not None or c.cc is None:
        _count_stop(stack, 9)
        return 0
    rn = c.rcv_nxt_o
    seq_w = (c.irs + rn) & _M32
    iss = c.iss
    snd_wnd = c.snd_wnd
    shift = c.snd_shift
    ts_ok = c.ts_ok
    # how far the run reaches (nothing changes yet)
    una = c.snd_una_o
    nxt = c.snd_nxt_o
    ts_recent = c.ts_recent
    # the window rule holds for the run's first ACK (then for all: see above); else only
    # ACKs that leave the window as it is
    wmove = acks != ACKS_SAME_WND and (c.snd_wl1_o < rn or
                                       (c.snd_wl1_o == rn and c.snd_wl2_o <= una))
    w_last = w_prev = snd_wnd     # the window after the run's last / next-to-last ACK
    wmax = c.max_snd_wnd
    right = una + snd_wnd
    why = 0
    k = i
    while k < j:
        seg = segs[k]
        if seg.payload:
            why = 1
            break
        if seg.flags & _PREDICT != _ACK:
            why = 2
            break
        if seg.sack:
            why = 3
            break
        if seg.seq != seq_w:
            why = 4
            break
        d = (seg.ack - iss - una) & _M32
        if not d:
            why = 5
            break
        if d > nxt - una:
            why = 6
            break
        w = (seg.wnd & 0xFFFF) << shift
        if w != w_last and (not wmove or not w or una + d + w < right):
            why = 7
            break
        if ts_ok:
            tsval = seg.tsval
            if tsval is None:
                why = 8
                break
            tsv = tsval
            if ((tsv - ts_recent) & _M32) >= _HALF32:
                why = 8
                break
            ts_recent = tsv
        una += d
        right = una + w
        w_prev = w_last
        w_last = w
        if w > wmax:
            wmax = w
        k += 1
    _count_stop(stack, why)
    m = k - i
    if m < 2:
        return 0
    stats = stack.stats
    stats.ack_runs += 1
    stats.ack_run_acks += m
    cx = c.cx
    cx.now = now
    stats.segs_in += m
    c.segs_in += m
    c.last_rcv = now
    c.ka_probes = 0
    seg = segs[k - 1]
    if ts_ok and rn <= c.rcv_wup_o:     # each ACK's tsval in turn: the last one stays
        c.ts_recent = ts_recent
        c.ts_recent_stamp = now
    ack_o = una
    c.dupacks = 0
    c.probes_out = 0
    if w_prev != snd_wnd:               # the window the last ACK's _ack_new sees
        c.snd_wnd = w_prev
        c.persist_n = 0                 # (w_prev is not zero: a zero window stops runs)
        c.t_persist = None
    c._ack_new(ack_o, seg, now)
    if c.snd_wl1_o < rn or (c.snd_wl1_o == rn and c.snd_wl2_o <= ack_o):
        c.snd_wnd = w_last
        c.snd_wl1_o = rn
        c.snd_wl2_o = ack_o
        if wmax > c.max_snd_wnd:
            c.max_snd_wnd = wmax
        if w_last:
            c.persist_n = 0
            c.t_persist = None
    c._xmit(now)
    if c.ack_now:
        if not c.ack_queued:
            c.ack_queued = True
            cx.acks.append(c)
    elif c.ack_pending and c.t_dack is None:
        c.t_dack = now + c.cfg.delack
    if c.state != CLOSED:               # as Stack.input does after each segment
        c.schedule()
    return m


# --- transmit -----------------------------------------------------------------------------
class SegBurst:
    """``count`` segments of ``mss`` payload bytes (the last: 1..mss) from sequence
    ``tmpl.seq``, every other field as in ``tmpl`` (whose payload is empty); the last
    segment's flags are ``last_flags``. ``payload`` holds all their bytes (bytes, or a
    memoryview of them after a split). The worker
    frames it with ``fpd.wire.stamp_frames``; anything that reads an output list sees
    ``flags``, ``payload``, ``sack`` and ``dst`` like a Segment's."""

    __slots__ = ("tmpl", "payload", "mss", "count", "last_flags", "header")

    def __init__(self, tmpl, payload, mss, count, last_flags):
        self.tmpl = tmpl
        self.payload = payload
        self.mss = mss
        self.count = count
        self.last_flags = last_flags
        self.header = None          # the worker's prebuilt frame header (and its MAC)

    # the fields output consumers look at
    @property
    def flags(self):
        return self.tmpl.flags

    @property
    def sack(self):
        return ()

    @property
    def dst(self):
        return self.tmpl.dst

    def split(self, n):
        """Keep the first ``n`` segments here; return the rest as a new SegBurst."""
        mss = self.mss
        t = self.tmpl
        mv = memoryview(self.payload)           # no copies: a burst may be split often
        rest = SegBurst(t.copy(seq=(t.seq + n * mss) & MASK), mv[n * mss:], mss,
                        self.count - n, self.last_flags)
        self.payload = mv[:n * mss]
        self.count = n
        self.last_flags = t.flags
        return rest

    def segments(self):
        """The per-segment equivalent: ``count`` Segments."""
        t = self.tmpl
        mss = self.mss
        out = []
        for i in range(self.count):
            out.append(t.copy(seq=(t.seq + i * mss) & MASK,
                              payload=bytes(self.payload[i * mss:(i + 1) * mss]),
                              flags=self.last_flags if i == self.count - 1 else t.flags))
        return out

    def __repr__(self):
        return f"<SegBurst {self.count}x{self.mss} from {self.tmpl!r}>"


def expand(out):
    """An output list with every SegBurst replaced by its segments."""
    res = []
    for s in out:
        if type(s) is SegBurst:
            res.extend(s.segments())
        else:
            res.append(s)
    return res


MIN_BURST = 2        # fewer full-sized segments than this: the per-segment path


def xmit_burst(c, now):
    """Send as many full-sized new segments of ``c`` as window and cwnd allow, as one
    SegBurst (see the module docstring); ``Connection._xmit`` then does the rest.
    Called at the top of ``_xmit`` when ``stack.tso`` is set."""
    if _TCONN is None or type(c) is _TCONN:
        _xmit_burst(c, now)
    else:
        _ANY_XMIT_BURST(c, now)


def _xmit_burst(c, now):
    """:func:`xmit_burst`'s work (compiled: for a typed Connection)."""
    cc = c.cc
    if cc is None or c.lost_out > c.retrans_out or c.fin_o is not None or \
            (c.sack_ok and (c.ooo or c.dsack is not None)):
        return
    mss = c.mss
    nxt = c.snd_nxt_o
    una = c.snd_una_o
    so = c.sndq_o
    sndq = c.sndq
    avail = so + len(sndq) - nxt
    if avail < MIN_BURST * mss:
        return
    if nxt == una and now - c.last_send > c._cur_rto() and c.last_send != c.created:
        return                        # idle restart: the per-segment path does it
    room = una + c.snd_wnd - nxt
    n = avail // mss
    r = room // mss
    if r < n:
        n = r
    if n < MIN_BURST:
        return
    cwnd = int(cc.cwnd)
    fl = (nxt - una - c.sacked_out - c.lost_out + c.retrans_out - c.reno_dup)
    if fl < 0:
        return                        # _in_flight() clamps: not linear in n
    # per segment: "if fl and cwnd - fl < mss: stop"; fl grows by mss per segment
    if fl:
        k = (cwnd - fl) // mss
        if k < 0:
            k = 0
    else:
        k = 1 + (cwnd - mss) // mss if cwnd >= mss else 1
    if k < n:
        n = k
    if n < MIN_BURST:
        return
    end = nxt + n * mss
    st = c.cx
    with memoryview(sndq) as mv:
        payload = bytes(mv[nxt - so:end - so])
    last_flags = _ACK | _PSH if end == so + len(sndq) else _ACK
    # one _mkseg stands for n: the ACK fields and window are the same for each (nothing
    # changes them between the segments), and the segment counters move by n
    tmpl = c._mkseg((c.iss + nxt) & _M32, _ACK, b"", now)
    c.segs_out += n - 1
    st.stats.segs_out += n
    st.out.append(SegBurst(tmpl, payload, mss, n, last_flags))
    recs = []
    for s in range(nxt, end, mss):
        recs.append(_Rec(s, s + mss, 0, now))
    c.rtxq.extend(recs)
    c.snd_nxt_o = end
    c.bytes_out += n * mss
    c.last_send = now
    if c.t_rtx is None:
        c.t_rtx = now + c._cur_rto()
    if c.sack_ok:
        c._arm_pto(now)               # the loss probe restarts on new data (fpd.tcp)


__all__ += ["expand", "Segment"]


# --- the compiled build of this module -----------------------------------------------------
# setup.py compiles this file with Cython (pure-Python mode; the C types of its locals are
# in fpd/_fastpath_c.pxd, which cimports fpd._tcp_c's Connection and Context) into
# fpd._fastpath_c. Imported as fpd.fastpath, this module then hands out the compiled
# input_burst and xmit_burst; the Python ones stay here as py_input_burst / py_xmit_burst
# (the reference the tests compare with). The compiled ones run beside the compiled engine
# only, and only when built from these files as they are now (fpd.builds.load: the sha256
# of this file, fpd/_fastpath_c.pxd and fpd/_tcp_c.pxd); FPD_COMPILED=0, FPD_PURE_PYTHON=1,
# a build without Cython or a stale build: the Python ones run, and IMPL / WHY say so
# (``fpd doctor``).
py_input_burst = input_burst
py_xmit_burst = xmit_burst
#: the files fpd._fastpath_c is built from (setup.py hashes the same list into BUILT_FROM)
SOURCES = ("fastpath.py", "_fastpath_c.pxd", "_tcp_c.pxd")
IMPL = "python"
WHY = ""
_compiled = None
if __name__ == "fpd.fastpath":
    from . import builds as _builds
    from . import tcp as _tcp
    _compiled, WHY = _builds.load("_fastpath_c", SOURCES,
                                  needs=[("_tcp_c", _tcp._compiled, _tcp.WHY)])
    if _compiled is not None:
        input_burst = _compiled.input_burst
        xmit_burst = _compiled.xmit_burst
        IMPL = "compiled"
elif __name__ == "fpd._fastpath_c":
    BUILT_FROM = FPD_SRC_HASH.decode()    # noqa: F821 (a C macro: see fpd/_fastpath_c.pxd)
    # one SegBurst class for both builds: the compiled xmit_burst makes the Python one's;
    # a connection that is not fpd._tcp_c's (the Python engine) takes the Python functions
    from .fastpath import SegBurst, expand  # noqa: F811
    from .fastpath import _data_run as _ANY_DATA_RUN, _ack_run as _ANY_ACK_RUN  # noqa: F811
    from .fastpath import _xmit_burst as _ANY_XMIT_BURST  # noqa: F811
    from ._tcp_c import Connection as _TCONN  # noqa: F811
