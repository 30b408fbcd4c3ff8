"""One TCP connection's state machine (sans-IO: no sockets, no threads, no clock).

A ``Connection`` is created and driven by ``fpd.stack.Stack`` and the two talk through a
small interface only.  The stack hands a connection a ``Context`` (what they share: the
output and event lists, the connections owing an ACK, the clock of the latest call, the
counters and gauges, the timer heap) and calls the connection's stack-facing methods:
``open_active`` / ``open_passive`` / ``open_cookie``, ``process`` (one inbound segment),
``on_timer``, ``flush_ack``, ``schedule`` / ``next_timer`` / ``rearm`` (timer heap) and
``destroy``.  A connection never touches the stack itself.  See docs/ENGINE.md.

Sequence numbers.  On the wire they are 32-bit and wrap; inside a connection every
position is kept as an unbounded *offset* from the initial sequence number (send side:
offset 0 is our SYN, data byte i is offset 1+i; receive side: the same from IRS).  Only
the boundary converts (``seq_diff``), so all window, scoreboard and reassembly logic is
plain integer comparison and never sees wraparound.
"""

import enum
import heapq
from collections import deque

from .wire import Segment, FIN, SYN, RST, PSH, ACK, URG, ECE, CWR  # noqa: F401
from . import cc as _cc

MASK = 0xFFFFFFFF
HALF = 0x80000000
MOD = 0x100000000


def seq_diff(a, b):
    """Signed distance a - b in 32-bit sequence space (wraparound-safe)."""
    d = (a - b) & MASK
    return d - MOD if d >= HALF else d


def seq_lt(a, b):
    return ((a - b) & MASK) >= HALF


def seq_le(a, b):
    return ((b - a) & MASK) < HALF


def seq_gt(a, b):
    return ((b - a) & MASK) >= HALF


def seq_ge(a, b):
    return ((a - b) & MASK) < HALF


# ---- states -------------------------------------------------------------------------
LISTEN = "LISTEN"
SYN_SENT = "SYN_SENT"
SYN_RECEIVED = "SYN_RECEIVED"
ESTABLISHED = "ESTABLISHED"
FIN_WAIT_1 = "FIN_WAIT_1"
FIN_WAIT_2 = "FIN_WAIT_2"
CLOSE_WAIT = "CLOSE_WAIT"
CLOSING = "CLOSING"
LAST_ACK = "LAST_ACK"
TIME_WAIT = "TIME_WAIT"
CLOSED = "CLOSED"

# ---- application events -------------------------------------------------------------
class Event(str, enum.Enum):
    """What Stack.events() reports, as tuples (Event.X, conn) or, for ACCEPTED,
    (Event.ACCEPTED, listener, conn).  The engine's own events, not the shared-memory
    ring's integer EV_* codes (fpd.shm) that the daemon derives from them.  Members are
    strings (``Event.READABLE == "readable"``) and print as their value."""
    CONNECTED = "connected"        # active open completed
    ACCEPTED = "accepted"          # passive open completed
    READABLE = "readable"          # new in-order bytes
    WRITABLE = "writable"          # send space after a short send
    PEER_CLOSED = "peer_closed"    # FIN received in order
    RESET = "reset"                # RST from the peer
    TIMED_OUT = "timed_out"        # retransmissions / persist / keepalive gave up
    REFUSED = "refused"            # RST answering our SYN
    CLOSED = "closed"              # gone, resources freed (last event)

    __str__ = str.__str__
    __format__ = str.__format__


# module-level names for the engine's own hot paths (no class attribute lookup); the
# EV_* spellings remain for modules not yet ported to tcp.Event (fpd.loop, fpd.loopback,
# fpd.fastpath): the same objects
EV_CONNECTED = Event.CONNECTED
EV_ACCEPTED = Event.ACCEPTED
EV_READABLE = Event.READABLE
EV_WRITABLE = Event.WRITABLE
EV_PEER_CLOSED = Event.PEER_CLOSED
EV_RESET = Event.RESET
EV_TIMED_OUT = Event.TIMED_OUT
EV_REFUSED = Event.REFUSED
EV_CLOSED = Event.CLOSED
_EV_CONNECTED = Event.CONNECTED
_EV_ACCEPTED = Event.ACCEPTED
_EV_READABLE = Event.READABLE
_EV_WRITABLE = Event.WRITABLE
_EV_PEER_CLOSED = Event.PEER_CLOSED
_EV_RESET = Event.RESET
_EV_TIMED_OUT = Event.TIMED_OUT
_EV_REFUSED = Event.REFUSED
_EV_CLOSED = Event.CLOSED

# ---- the state machine: every move, by its cause (RFC 9293 figure 5) -----------------
# Connection._move(cause) is the one place a state changes (destroy() -> CLOSED is legal
# from every state); a move not in this table raises.
OPEN_ACTIVE = "open_active"      # the application connects: our SYN goes out
SYN_IN = "syn_in"                # a SYN arrives (passive open, or simultaneous open)
HANDSHAKE_DONE = "handshake"     # our SYN is acknowledged (or a SYN cookie validated)
FIN_QUEUED = "fin_queued"        # the application shut the write side down
FIN_IN = "fin_in"                # the peer's FIN, in order
FIN_ACKED = "fin_acked"          # our FIN is acknowledged

TRANSITIONS = {
    (CLOSED, OPEN_ACTIVE): SYN_SENT,
    (CLOSED, SYN_IN): SYN_RECEIVED,
    (SYN_SENT, SYN_IN): SYN_RECEIVED,            # simultaneous open
    (SYN_SENT, HANDSHAKE_DONE): ESTABLISHED,
    (SYN_RECEIVED, HANDSHAKE_DONE): ESTABLISHED,
    (CLOSED, HANDSHAKE_DONE): ESTABLISHED,       # from a SYN-cookie ACK
    (ESTABLISHED, FIN_QUEUED): FIN_WAIT_1,
    (CLOSE_WAIT, FIN_QUEUED): LAST_ACK,
    (ESTABLISHED, FIN_IN): CLOSE_WAIT,
    (FIN_WAIT_1, FIN_IN): CLOSING,               # simultaneous close
    (FIN_WAIT_2, FIN_IN): TIME_WAIT,
    (FIN_WAIT_1, FIN_ACKED): FIN_WAIT_2,
    (CLOSING, FIN_ACKED): TIME_WAIT,
    (LAST_ACK, FIN_ACKED): CLOSED,
}

_SENDING = frozenset((ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, CLOSING, LAST_ACK))
_RECEIVING = frozenset((ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2))

# retransmission-queue record flags
R_SACKED = 1
R_LOST = 2
R_RETRANS = 4      # retransmitted and that retransmission is still outstanding
R_EVER = 8         # was retransmitted at least once (Karn)
R_SYN = 16
R_FIN = 32

CA_OPEN = 0
CA_RECOVERY = 1
CA_LOSS = 2

# flags a segment must not carry beyond ACK to take the fast path (PSH, ECE, CWR may be
# set) and to count as a pure ACK (URG, PSH, ECE, CWR may be set)
PREDICT_MASK = FIN | SYN | RST | ACK | URG
CONTROL_MASK = FIN | SYN | RST | ACK

DUPTHRESH = 3
PAWS_IDLE = 24 * 24 * 3600.0    # RFC 7323 §5.5: ts_recent invalid after 24 days idle
CLOCK_G = 0.001                 # timestamp / RTT clock granularity (s)
RS_MIN_INTERVAL = 0.01          # receive autotuning measures the read rate over >= this
MIN_SND_MSS = 64                # floor on the peer's MSS (a tiny MSS is a memory attack)
SACK_WALK_BUDGET = 256          # records one ACK's SACK processing may visit (CPU bound)
TLP_DELACK = 0.2                # RFC 8985 WCDelAckT: a lone segment's probe waits out a delayed ACK
FRTO_OFF = 0                    # F-RTO (RFC 5682 §3.1): not running / step 2 (waiting
FRTO_WAIT = 1                   # for the ACK of the retransmission) / step 3 (new data
FRTO_NEW = 2                    # sent instead of retransmissions: the next ACK decides)
PROBE_TLP = 0                   # kinds of the t_probe timer: tail-loss probe (RFC 8985 §7)
PROBE_REO = 1                   # RACK reordering timer (RFC 8985 §6.3)


class Context:
    """What a Stack shares with its Connections (smoltcp's "context"): connections only
    append to ``out`` (segments to send), ``events`` (application events) and ``acks``
    (connections owing an ACK built when the output is taken), count in ``stats`` and the
    ``half_open`` / ``tw_count`` gauges, read ``now`` (the latest time the stack was
    given) and push entries on the timer heap; the stack drains and owns the rest."""

    __slots__ = ("out", "events", "acks", "now", "stats", "half_open", "tw_count",
                 "timers", "stale", "tseq", "tso", "buf_extra", "_conns")

    def __init__(self, stats, conns):
        self.out = []
        self.events = []
        self.acks = []
        self.now = 0.0
        self.stats = stats
        self.half_open = 0
        self.tw_count = 0
        self.timers = []          # heap of (deadline, seq, conn); lazily invalidated
        self.stale = 0            # entries known to be dead (for compaction)
        self.tseq = 0
        self.tso = None           # Stack.tso: the burst transmitter (fpd.fastpath)
        self.buf_extra = 0        # bytes buffers grew beyond their configured size (autotuning)
        self._conns = conns

    def push_timer(self, t, conn):
        self.tseq += 1
        h = self.timers
        heapq.heappush(h, (t, self.tseq, conn))
        if self.stale > 1024 and 2 * self.stale > len(h):
            # entries of closed connections or superseded deadlines: rebuild (amortized)
            live = [e for e in h if e[2].heap_at == e[0] and e[2].state != CLOSED]
            heapq.heapify(live)
            self.timers = live
            self.stale = 0

    def forget(self, conn):
        """The connection left the table (it is CLOSED)."""
        key = (conn._la, conn._lp, conn._ra, conn._rp)
        if self._conns.get(key) is conn:
            del self._conns[key]


def _rec_after(q, off):
    """Index of the first record of the retransmission queue ``q`` (sorted, disjoint)
    whose end is beyond offset ``off`` (binary search; len(q) if none)."""
    a = 0
    b = len(q)
    while a < b:
        m = (a + b) >> 1
        if q[m].end <= off:
            a = m + 1
        else:
            b = m
    return a


class _Rec:
    """One transmitted segment in the retransmission queue (offsets, not wire seqs)."""
    __slots__ = ("start", "end", "flags", "ts")

    def __init__(self, start, end, flags, ts):
        self.start = start
        self.end = end
        self.flags = flags
        self.ts = ts

    def __repr__(self):
        return f"<rec {self.start}-{self.end} f={self.flags:#x}>"


RCVQ_SMALL = 512        # an append shorter than this is copied into the queue's last chunk
RCVQ_COALESCE = 65536   # ... while that chunk (a bytearray the queue owns) stays this short


class RcvQueue:
    """The in-order receive queue: bytes appended at the end, taken from the front.

    A deque of chunks and the offset read so far into the first one, so that neither an
    append nor a read moves the bytes already queued (one front-consumed ``bytearray``
    copied the whole queue at every growth past its allocation: ~1 CPU s/GB at a 6 MiB
    queue, docs/PERFORMANCE.md, stop 17). A ``bytes`` append is kept by reference (the
    burst parse makes each payload a ``bytes`` of its own); any other buffer is copied
    (a memoryview into a UMEM frame is reused once the burst is through); appends shorter
    than RCVQ_SMALL are copied into the last chunk (a queue of 1-byte segments stays a few
    chunks, not a Python object per byte); :meth:`append_owned` keeps a buffer the caller
    hands over (the fast path's run, an out-of-order block) as a chunk without a copy.
    ``len()`` is the byte count, ``bytes()`` a copy of everything queued.

    An empty queue holds no deque (``chunks`` is the empty tuple; an empty deque is
    ≈ 760 B, half of an idle connection's engine state): the first append makes one and
    the queue drops it again whenever it is read empty (docs/PERFORMANCE.md, stop 19)."""
    __slots__ = ("chunks", "off", "n")

    def __init__(self):
        self.chunks = ()
        self.off = 0
        self.n = 0

    def __len__(self):
        return self.n

    def __bool__(self):
        return self.n != 0

    def __bytes__(self):
        return self.peek(-1)

    def __repr__(self):
        return f"<RcvQueue {self.n} B in {len(self.chunks)} chunks>"

    def append(self, data):
        """Queue ``data`` (any bytes-like object) after what is queued."""
        n = len(data)
        if not n:
            return
        ch = self.chunks
        if not ch:
            ch = self.chunks = deque()
        if n < RCVQ_SMALL:
            if ch:
                last = ch[-1]
                if type(last) is bytearray and len(last) + n <= RCVQ_COALESCE:
                    last += data
                    self.n += n
                    return
            ch.append(bytearray(data))
        elif type(data) is bytes:
            ch.append(data)
        else:
            ch.append(bytes(data))
        self.n += n

    def append_owned(self, buf):
        """Queue ``buf`` (bytes, or a bytearray nobody else touches again) as it is."""
        n = len(buf)
        if n:
            if not self.chunks:
                self.chunks = deque()
            self.chunks.append(buf)
            self.n += n

    def clear(self):
        self.chunks = ()
        self.off = 0
        self.n = 0

    def drop(self, n):
        """Forget the first ``n`` bytes (at most what is queued)."""
        if n <= 0:
            return
        if n >= self.n:
            self.clear()
            return
        ch = self.chunks
        off = self.off + n
        self.n -= n
        while True:
            k = len(ch[0])
            if off < k:
                break
            off -= k
            ch.popleft()
        self.off = off

    def _parts(self, n):
        """The first ``n`` bytes (0 < n <= queued) as a list of buffers: whole chunks,
        memoryview slices of the first and the last."""
        parts = []
        off = self.off
        for c in self.chunks:
            k = len(c) - off
            if k > n:
                parts.append(memoryview(c)[off:off + n])
                break
            parts.append(memoryview(c)[off:] if off or type(c) is not bytes else c)
            n -= k
            if not n:
                break
            off = 0
        return parts

    def peek(self, n=-1):
        """A copy of up to ``n`` (all if < 0) bytes from the front, left queued."""
        q = self.n
        if n < 0 or n > q:
            n = q
        if not n:
            return b""
        c = self.chunks[0]
        off = self.off
        if len(c) - off >= n:
            if not off and n == len(c) and type(c) is bytes:
                return c
            with memoryview(c) as v:
                return bytes(v[off:off + n])
        parts = self._parts(n)
        data = b"".join(parts)
        for p in parts:
            if type(p) is memoryview:
                p.release()
        return data

    def take(self, n=-1):
        """Remove and return up to ``n`` (all if < 0) bytes from the front."""
        data = self.peek(n)
        self.drop(len(data))
        return data

    def take_into(self, buf):
        """Move up to ``len(buf)`` bytes from the front into ``buf``; returns the count."""
        mv = memoryview(buf).cast("B")
        room = len(mv)
        n = self.n if self.n < room else room
        if not n:
            return 0
        pos = 0
        off = self.off
        for c in self.chunks:
            k = len(c) - off
            if k > n - pos:
                k = n - pos
            with memoryview(c) as v:
                mv[pos:pos + k] = v[off:off + k]
            pos += k
            if pos == n:
                break
            off = 0
        mv.release()
        self.drop(n)
        return n

    def take_to(self, write, n=-1):
        """Hand up to ``n`` (all if < 0) bytes from the front to ``write(parts)`` (a list
        of buffers, valid during the call; ``ByteProducer.write_parts``), which returns
        how many it took; those are removed. Returns that count."""
        q = self.n
        if n < 0 or n > q:
            n = q
        if not n:
            return 0
        parts = self._parts(n)
        try:
            k = write(parts)
        finally:
            for p in parts:
                if type(p) is memoryview:
                    p.release()
        if k:
            self.drop(k)
        return k


class Connection:
    """One TCP connection.  Create through ``Stack.connect`` / ``Stack.listen`` only."""

    __slots__ = (
        "cx", "cfg", "listener", "_la", "_lp", "_ra", "_rp", "state",
        "passive", "announced", "closed_by_app", "wr_shut", "error", "nodelay", "cc",
        # send side
        "iss", "snd_una_o", "snd_nxt_o", "snd_wnd", "max_snd_wnd", "snd_wl1_o", "snd_wl2_o",
        "snd_shift", "flight_dup1", "sndq", "sndq_o", "sndq_a", "sndbuf", "fin_o", "rtxq", "sacked_out", "lost_out",
        "retrans_out", "reno_dup", "rtx_scan", "dupacks", "ca_state", "recover_o",
        "mss", "peer_mss", "snd_sml_o", "cwnd_lim_o", "last_send", "high_sacked_o", "sack_cache",
        # RACK-TLP (RFC 8985) and RFC 6675 rescue retransmission
        "rack_ts", "rack_end", "rack_rtt", "rack_reord", "rack_mult", "rack_persist", "rack_cur",
        "t_probe", "probe_kind", "tlp_end", "tlp_retrans", "rescue_o", "dsack_in",
        # DSACK undo (RFC 3708 / Linux's undo_marker)
        "undo_marker", "undo_retrans", "prior_cwnd", "prior_ssthresh", "undone",
        # F-RTO (RFC 5682 §3.1) and PRR (RFC 6937)
        "frto", "frto_orig", "prr_delivered", "prr_rtx", "prr_nxt", "prr_fs", "lost_cnt",
        # pacing (StackConfig.pacing): next new data not before pace_next; its deadline
        "pace_next", "t_pace",
        # receive side
        "irs", "rcv_nxt_o", "rcv_adv_o", "rcv_wup_o", "rcv_shift", "rcvq", "rcvbuf",
        "ooo", "ooo_bytes", "ooo_stamp", "ooo_fin_o", "fin_rcvd", "rcv_mss", "dsack",
        "ack_pending", "ack_now", "ack_queued", "quick", "sws_thresh",
        "rs_t0", "rs_b0", "rs_space", "rs_drained", "rr_rtt", "rr_seq", "rr_t", "buf_extra",
        # options
        "ts_ok", "sack_ok", "ws_ok", "ts_off", "ts_recent", "ts_recent_stamp",
        # rtt / timers
        "srtt", "rttvar", "min_rtt", "dr_t0", "dr_b0", "dr_s0", "delivery_rate", "rto", "backoff", "rto_count", "syn_rtx", "t_rtx", "t_persist", "t_dack",
        "t_ka", "t_tw", "heap_at", "persist_n", "probes_out", "ka_probes", "last_rcv", "oow_last", "ca_start", "ca_count",
        "_keepalive", "keepalive_idle", "keepalive_interval", "keepalive_count",
        # events; the owner's direct receive delivery (fpd.fastpath._rx_direct)
        "rd_pending", "_wr_want", "rx_sink",
        # statistics
        "retransmits", "bytes_in", "bytes_out", "bytes_acked", "segs_in", "segs_out",
        "dup_bytes_in", "created",
    )

    def __init__(self, cx, cfg, la, lp, ra, rp, now):
        self.cx = cx
        self.cfg = cfg
        self.listener = None
        self._la = la
        self._lp = lp
        self._ra = ra
        self._rp = rp
        self.state = CLOSED
        self.passive = False
        self.announced = False
        self.closed_by_app = False
        self.wr_shut = False
        self.error = None
        self.nodelay = cfg.nodelay
        self.cc = None
        self.created = now
        # send
        self.iss = 0
        self.snd_una_o = 0
        self.snd_nxt_o = 0
        self.snd_wnd = 0
        self.max_snd_wnd = 0
        self.snd_wl1_o = 0
        self.snd_wl2_o = 0
        self.snd_shift = 0
        self.sndq = bytearray()     # data from offset sndq_o; bytes before sndq_a are acked
        self.sndq_o = 1             # (dropped lazily: deleting a bytearray's front on every
        self.sndq_a = 1             # ACK makes the next append move the whole buffer)
        self.sndbuf = cfg.sndbuf
        self.fin_o = None
        self.rtxq = []
        self.sacked_out = 0
        self.lost_out = 0
        self.retrans_out = 0
        self.reno_dup = 0
        self.rtx_scan = 0
        self.dupacks = 0
        self.flight_dup1 = 0
        self.ca_state = CA_OPEN
        self.recover_o = 0
        self.mss = 536
        self.peer_mss = 536
        self.snd_sml_o = 0
        self.cwnd_lim_o = 0
        self.last_send = now
        self.high_sacked_o = 0
        self.sack_cache = ()        # [lo, hi) ranges the last SACK blocks had walked
        self.rack_ts = None         # RACK.xmit_ts / end_seq / rtt: the most recently sent
        self.rack_end = 0           # segment known delivered (acked or SACKed)
        self.rack_rtt = 0.0
        self.rack_reord = False     # RACK.reordering_seen
        self.rack_mult = 1          # RACK.reo_wnd_mult (grows on DSACK, RFC 8985 §6.2 step 4)
        self.rack_persist = 0       # recoveries left before reo_wnd_mult resets
        self.rack_cur = 0           # offset where the last RACK walk ran out of budget
        self.t_probe = None         # TLP or RACK reorder deadline (probe_kind says which)
        self.probe_kind = PROBE_TLP
        self.tlp_end = None         # TLP.end_seq: snd_nxt when the probe went out
        self.tlp_retrans = False    # the probe was a retransmission (not new data)
        self.rescue_o = -1          # RFC 6675 RescueRxt (recovery point of the last rescue)
        self.dsack_in = False       # the ACK being processed carries a DSACK (RFC 2883)
        self.undo_marker = -1       # SND.UNA when the last reduction began (-1: none)
        self.undo_retrans = 0       # its retransmissions not yet shown spurious by a DSACK
        self.prior_cwnd = 0         # cwnd / ssthresh before that reduction
        self.prior_ssthresh = 0
        self.undone = False
        self.frto = FRTO_OFF        # F-RTO step after an RTO (FRTO_WAIT: 2, FRTO_NEW: 3)
        self.frto_orig = False      # this ACK (s)acked never-retransmitted data < recover
        self.prr_delivered = 0      # PRR: bytes delivered since recovery began
        self.prr_rtx = 0            # ... bytes retransmitted since (prr_out = these + new)
        self.prr_nxt = 0            # ... snd_nxt when recovery began
        self.prr_fs = 0             # ... RecoverFS (cwnd at entry, as Linux's prior_cwnd)
        self.lost_cnt = 0           # segments ever marked lost (PRR's "newly lost")
        self.pace_next = 0.0        # pacing: the send schedule's time (debt = pace_next - now)
        self.t_pace = None          # ... deadline to resume new data once the quantum is spent
        # receive
        self.irs = 0
        self.rcv_nxt_o = 0
        self.rcv_adv_o = 0
        self.rcv_wup_o = 0
        self.rcv_shift = 0
        self.rcvq = RcvQueue()
        self.rcvbuf = cfg.rcvbuf
        self.ooo = []
        self.ooo_bytes = 0
        self.ooo_stamp = 0
        self.ooo_fin_o = None
        self.fin_rcvd = False
        self.rcv_mss = 536
        self.dsack = None
        self.ack_pending = False
        self.ack_now = False
        self.ack_queued = False
        self.quick = cfg.quickack
        self.sws_thresh = 536
        self.rs_t0 = None           # receive-buffer autotuning: measurement start, bytes
        self.rs_b0 = 0              # the application had read then, and what it read in
        self.rs_space = 0           # the last whole measurement (Linux's rcvq_space)
        self.rs_drained = False     # a read in this measurement left the queue empty
        self.rr_rtt = None          # receive-side RTT estimate (Linux's rcv_rtt_est), s
        self.rr_seq = 0             # ... its measurement: the window's right edge (offset)
        self.rr_t = None            # ... and when that window was offered
        self.buf_extra = 0          # bytes autotuning granted this connection (cx.buf_extra)
        # options
        self.ts_ok = False
        self.sack_ok = False
        self.ws_ok = False
        self.ts_off = 0
        self.ts_recent = 0
        self.ts_recent_stamp = now
        # rtt / timers
        self.srtt = None
        self.rttvar = 0.0
        self.min_rtt = None         # smallest RTT sample seen
        self.dr_t0 = None           # delivery-rate sample: start time, bytes_acked then
        self.dr_b0 = 0
        self.dr_s0 = None           # ... send time of the newest segment acked then
        self.delivery_rate = None   # bytes/s acknowledged over the last whole RTT
        self.rto = cfg.rto_initial
        self.backoff = 0
        self.rto_count = 0
        self.syn_rtx = 0
        self.t_rtx = None
        self.t_persist = None
        self.t_dack = None
        self.t_ka = None
        self.t_tw = None
        self.heap_at = None
        self.persist_n = 0          # persist back-off exponent (reset by an open window)
        self.probes_out = 0         # unanswered window probes (reset by any ACK)
        self.ka_probes = 0
        self.last_rcv = now
        self.oow_last = -1e18
        self.ca_start = -1e18       # challenge-ACK budget: window start and count
        self.ca_count = 0
        self._keepalive = False
        self.keepalive_idle = cfg.keepalive_idle
        self.keepalive_interval = cfg.keepalive_interval
        self.keepalive_count = cfg.keepalive_count
        self.rd_pending = False
        self._wr_want = False
        # None, or an object with write_parts(parts) and write_with(fill) (the daemon's
        # client RX ring): the fast path's in-order runs go straight to it when it has
        # room, as if the application had read them at once (fpd.fastpath._rx_direct)
        self.rx_sink = None
        self.retransmits = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.bytes_acked = 0
        self.segs_in = 0
        self.segs_out = 0
        self.dup_bytes_in = 0

    # ================================================================= public API ====
    def __repr__(self):
        la, lp = self.local
        ra, rp = self.remote
        return (f"<Connection {'.'.join(map(str, la))}:{lp} -> {'.'.join(map(str, ra))}:{rp} "
                f"{self.state}>")

    @property
    def local(self):
        """(address, port) of this end (made on each use: an idle connection keeps no
        tuple of its own, docs/PERFORMANCE.md stop 19)."""
        return (self._la, self._lp)

    @property
    def remote(self):
        return (self._ra, self._rp)

    @property
    def readable(self):
        return self.rcvq.n

    @property
    def writable(self):
        if self.wr_shut or self.state in (CLOSED, TIME_WAIT) or self.error is not None:
            return 0
        f = self.sndbuf - (self.sndq_o + len(self.sndq) - self.sndq_a)
        return f if f > 0 else 0

    @property
    def eof(self):
        return self.fin_rcvd and not self.rcvq.n

    @property
    def keepalive(self):
        return self._keepalive

    @keepalive.setter
    def keepalive(self, on):
        on = bool(on)
        if on == self._keepalive:
            return
        self._keepalive = on
        if on:
            self.t_ka = self.last_rcv + self.keepalive_idle
        else:
            self.t_ka = None
        self.schedule()

    def send(self, data, now):
        """Queue bytes for transmission; returns how many were accepted (0 if the send
        buffer is full).  Raises BrokenPipeError after shutdown/close, or the error
        that ended the connection (ConnectionResetError, TimeoutError, ...)."""
        self.cx.now = now
        if self.error is not None:
            raise self.error("connection " + self._errname())
        if self.wr_shut:
            raise BrokenPipeError("send after shutdown/close")
        st = self.state
        if st not in _SENDING and st not in (SYN_SENT, SYN_RECEIVED):
            raise ConnectionError(f"connection not sendable in state {st}")
        n = len(data)
        room = self.sndbuf - (self.sndq_o + len(self.sndq) - self.sndq_a)
        if n > room and self.sndbuf < self.cfg.sndbuf_max and self.cc is not None:
            self._grow_sndbuf()
            room = self.sndbuf - (self.sndq_o + len(self.sndq) - self.sndq_a)
        if room <= 0:
            self._wr_want = True
            return 0
        if n > room:
            n = room
            self._wr_want = True
            self.sndq += memoryview(data)[:n]
        else:
            self.sndq += data
        if st in _SENDING:
            self._xmit(now)
            self._after_input(now)
        return n

    def recv(self, max_bytes=-1):
        """Take up to max_bytes (all if < 0) from the in-order receive buffer.  Returns b""
        when nothing is buffered (check ``eof`` / events).  Reading may open the window
        and queue a window update (stamped with the stack's latest ``now``)."""
        q = self.rcvq
        if not q.n:
            return b""
        data = q.take(max_bytes)
        self._read_done()
        return data

    def recv_into(self, buf):
        """Move up to len(buf) buffered bytes into ``buf``; returns the count (0: none)."""
        q = self.rcvq
        if not q.n:
            return 0
        n = q.take_into(buf)
        if n:
            self._read_done()
        return n

    def recv_to(self, write, max_bytes=-1):
        """Hand up to max_bytes (all if < 0) buffered bytes to ``write(parts)`` without an
        intermediate copy (``RcvQueue.take_to``: the daemon's delivery into a client's RX
        ring, ``ByteProducer.write_parts``); returns the count ``write`` took, as recv."""
        q = self.rcvq
        if not q.n:
            return 0
        n = q.take_to(write, max_bytes)
        if n:
            self._read_done()
        return n

    def shutdown(self, now):
        """Half-close: send FIN after the queued data; receiving continues."""
        self.cx.now = now
        if self.wr_shut or self.error is not None:
            return
        st = self.state
        if st in (CLOSED, TIME_WAIT, LAST_ACK, CLOSING, FIN_WAIT_1, FIN_WAIT_2):
            return
        self.wr_shut = True
        self.fin_o = self.sndq_o + len(self.sndq)
        if (st, FIN_QUEUED) not in TRANSITIONS:
            return      # SYN_SENT / SYN_RECEIVED: FIN goes out once established
        self._move(FIN_QUEUED)
        self._xmit(now)
        self._after_input(now)

    def close(self, now):
        """Shutdown and stop reading.  Unread data (or an unfinished handshake) resets the
        connection as Linux does.  The connection finishes in the background;
        _EV_CLOSED is its last event."""
        self.cx.now = now
        st = self.state
        if st == CLOSED:
            return
        if self.closed_by_app:
            return
        self.closed_by_app = True
        if st == SYN_SENT:
            self.destroy(None)
            return
        if self.error is not None:
            self.destroy(None)
            return
        if self.rcvq.n:         # unread in-order data (Linux: the receive queue only)
            self.cx.stats.aborts_on_close += 1
            self._send_rst_now(now)
            self.destroy(None)
            return
        if st == FIN_WAIT_2:
            self.t_tw = now + self.cfg.fin_timeout
            self.schedule()
            return
        self.shutdown(now)

    def abort(self, now):
        """Send RST now (if synchronized) and free the connection."""
        self.cx.now = now
        if self.state == CLOSED:
            return
        self.closed_by_app = True
        if self.state not in (SYN_SENT, TIME_WAIT):
            self._send_rst_now(now)
        self.destroy(None)

    def info(self):
        cc = self.cc
        mss = self.mss
        return {
            "state": self.state,
            "local": self.local, "remote": self.remote,
            "iss": self.iss, "irs": self.irs,
            "snd_una": (self.iss + self.snd_una_o) & MASK,
            "snd_nxt": (self.iss + self.snd_nxt_o) & MASK,
            "rcv_nxt": (self.irs + self.rcv_nxt_o) & MASK,
            "snd_wnd": self.snd_wnd, "max_snd_wnd": self.max_snd_wnd,
            "rcv_wnd": max(0, self.rcv_adv_o - self.rcv_nxt_o),
            "snd_wscale": self.snd_shift, "rcv_wscale": self.rcv_shift,
            "mss": mss, "peer_mss": self.peer_mss,
            "cc": cc.name if cc else self.cfg.cc,
            "cwnd": cc.cwnd if cc else self.cfg.init_cwnd * mss,
            "ssthresh": cc.ssthresh if cc else _cc.INFINITE_SSTHRESH,
            "in_flight": self._in_flight(),
            "ca_state": ("open", "recovery", "loss")[self.ca_state],
            "srtt": self.srtt, "rttvar": self.rttvar, "rto": self._cur_rto(),
            "rcv_rtt": self.rr_rtt,
            "min_rtt": self.min_rtt, "delivery_rate": self.delivery_rate,
            "pacing_rate": self._pace_rate() if self.cfg.pacing and cc else None,
            "limited_by": self._limited_by(),
            "backoff": self.backoff, "retransmits": self.retransmits,
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
            "bytes_acked": self.bytes_acked, "segs_in": self.segs_in, "segs_out": self.segs_out,
            "unread": self.rcvq.n, "unsent": self.sndq_o + len(self.sndq) - self.snd_nxt_o
            if self.snd_nxt_o <= self.sndq_o + len(self.sndq) else 0,
            "send_queue": self.sndq_o + len(self.sndq) - self.sndq_a,
            "rcvbuf": self.rcvbuf, "sndbuf": self.sndbuf,
            "ooo_bytes": self.ooo_bytes, "ooo_blocks": len(self.ooo),
            "sacked_out": self.sacked_out, "lost_out": self.lost_out,
            "retrans_out": self.retrans_out,
            "timestamps": self.ts_ok, "sack": self.sack_ok, "wscale": self.ws_ok,
            "nodelay": self.nodelay, "keepalive": self._keepalive,
            "error": self._errname() if self.error else None,
        }

    def _limited_by(self):
        """What holds the sender back right now, like Linux's TCP_INFO busy / rwnd /
        sndbuf limits (an instantaneous reading, not accumulated times): "app" (nothing
        unsent), "rwnd" (the peer's window is full), "cwnd" (the congestion window is),
        None before the handshake completes."""
        cc = self.cc
        if cc is None or self.state not in _SENDING:
            return None
        nxt = self.snd_nxt_o
        if nxt >= self.sndq_o + len(self.sndq):
            return "app"
        m = self.mss
        if self.snd_una_o + self.snd_wnd - nxt < m:
            return "rwnd"
        if cc.cwnd - self._in_flight() < m:
            return "cwnd"
        return "app"

    # =========================================================== internal helpers ====
    def _errname(self):
        e = self.error
        return {ConnectionResetError: "reset", TimeoutError: "timed out",
                ConnectionRefusedError: "refused"}.get(e, "aborted")

    def _ts_now(self, now):
        return (int(now * 1000.0) + self.ts_off) & MASK

    def _cur_rto(self):
        r = self.rto * (1 << self.backoff) if self.backoff < 31 else self.cfg.rto_max
        m = self.cfg.rto_max
        return r if r < m else m

    def _in_flight(self):
        f = (self.snd_nxt_o - self.snd_una_o - self.sacked_out - self.lost_out
             + self.retrans_out - self.reno_dup)
        return f if f > 0 else 0

    def schedule(self):
        """Make sure the stack's timer heap has an entry at or before our earliest timer.
        Entries are lazy: a timer that moves later or is cancelled leaves its entry in
        place; Stack.next_deadline/tick re-validate entries as they surface."""
        t = self.next_timer()
        if t is not None:
            h = self.heap_at
            if h is None:
                self.heap_at = t
                self.cx.push_timer(t, self)
            elif t < h:
                self.heap_at = t
                cx = self.cx
                cx.stale += 1
                cx.push_timer(t, self)

    def flush_ack(self, now):
        """Stack.output: build the ACK this connection queued in ``cx.acks`` (one per
        connection however many segments asked for it), unless a segment sent since
        carried it."""
        self.ack_queued = False
        if self.ack_now and self.state != CLOSED:
            self._send_ack(now)

    def rearm(self, now):
        """After an internal error in a handler: re-arm the retransmission timer if
        the handler had taken it (data outstanding must stay watched) and re-enter
        the heap."""
        if self.t_rtx is None and self.rtxq:
            self.t_rtx = now + self._cur_rto()
        self.schedule()

    def next_timer(self):
        t = self.t_rtx
        x = self.t_probe
        if x is not None and (t is None or x < t):
            t = x
        x = self.t_dack
        if x is not None and (t is None or x < t):
            t = x
        x = self.t_persist
        if x is not None and (t is None or x < t):
            t = x
        x = self.t_ka
        if x is not None and (t is None or x < t):
            t = x
        x = self.t_tw
        if x is not None and (t is None or x < t):
            t = x
        x = self.t_pace
        if x is not None and (t is None or x < t):
            t = x
        return t

    def _move(self, cause, now=None):
        """Change state by the TRANSITIONS table; an illegal move raises."""
        new = TRANSITIONS.get((self.state, cause))
        if new is None:
            raise RuntimeError(f"illegal TCP move {cause!r} in {self.state}")
        if new == TIME_WAIT:
            self._enter_time_wait(self.cx.now if now is None else now)
        elif new == CLOSED:
            self.destroy(None)
        else:
            self._set_state(new)
        return new

    def _set_state(self, new):
        """The state's bookkeeping (half-open and TIME_WAIT gauges); callers: _move,
        destroy and _enter_time_wait only."""
        old = self.state
        if old == new:
            return
        cx = self.cx
        if old == SYN_RECEIVED and self.passive:
            cx.half_open -= 1
            if self.listener is not None:
                self.listener.half_open -= 1
        elif old == TIME_WAIT:
            cx.tw_count -= 1
        self.state = new
        if new == TIME_WAIT:
            cx.tw_count += 1
        elif new == SYN_RECEIVED and self.passive:
            cx.half_open += 1
            if self.listener is not None:
                self.listener.half_open += 1

    def _event(self, kind):
        self.cx.events.append((kind, self))

    def destroy(self, ev):
        """Free the connection; ``ev`` is the reason event (if the app should see it)."""
        if self.state == CLOSED:
            return
        self._set_state(CLOSED)
        self.t_rtx = self.t_persist = self.t_dack = self.t_ka = self.t_tw = None
        self.t_probe = None
        self._release_bufs()
        if self.heap_at is not None:
            self.heap_at = None
            self.cx.stale += 1
        self.rtxq = []
        self.sndq = bytearray()
        self.sndq_o = self.sndq_a
        self.ooo = []
        self.ooo_bytes = 0
        self.sacked_out = self.lost_out = self.retrans_out = self.reno_dup = 0
        self.cx.forget(self)
        if self.announced:
            if ev is not None and not self.closed_by_app:
                self._event(ev)
            self._event(_EV_CLOSED)

    # ------------------------------------------------------------ segment builders --
    def _wnd_field(self):
        """Window to advertise (already scaled); never moves the right edge left, and
        only moves it right by a worthwhile amount (receiver SWS avoidance)."""
        free = self.rcvbuf - self.rcvq.n
        nxt = self.rcv_nxt_o
        cur = self.rcv_adv_o - nxt
        if cur < 0:
            cur = 0
        w = cur if free - cur < self.sws_thresh else free
        sh = self.rcv_shift
        f = w >> sh
        if (f << sh) < cur:
            f += 1
        if f > 65535:
            f = 65535
        edge = nxt + (f << sh)
        if edge > self.rcv_adv_o:
            self.rcv_adv_o = edge
        return f

    def _sack_blocks(self):
        blocks = []
        irs = self.irs
        if self.dsack is not None:
            s, e = self.dsack
            self.dsack = None
            blocks.append(((irs + s) & MASK, (irs + e) & MASK))
            self.cx.stats.dsacks_sent += 1
        ooo = self.ooo
        if ooo:
            room = (3 if self.ts_ok else 4) - len(blocks)
            if len(ooo) <= room:
                ents = sorted(ooo, key=_stamp_key, reverse=True)
            else:
                ents = sorted(ooo, key=_stamp_key, reverse=True)[:room]
            fo = self.ooo_fin_o
            for ent in ents:
                s = ent[0]
                e = s + len(ent[1])
                if e == fo:
                    e += 1                     # the block covers an out-of-order FIN
                blocks.append(((irs + s) & MASK, (irs + e) & MASK))
        return tuple(blocks)

    def _ack_fields_sent(self):
        self.ack_pending = False
        self.ack_now = False
        self.t_dack = None
        self.rcv_wup_o = self.rcv_nxt_o

    def _mkseg(self, seq, flags, payload, now):
        """Build a non-SYN segment carrying the current ACK, window and options."""
        if self.ts_ok:
            tsval = (int(now * 1000.0) + self.ts_off) & MASK
            tsecr = self.ts_recent
        else:
            tsval = None
            tsecr = 0
        owe = False
        if self.sack_ok and (self.ooo or self.dsack is not None):
            ds = self.dsack
            sack = self._sack_blocks()
            if payload:
                # payload + options must stay within the peer's MSS (RFC 6691): a
                # full-sized segment has no room for SACK blocks, a shorter one for as
                # many as fit (each option: 2 NOPs + kind/len + 8 bytes per block). What
                # is cut goes on a pure ACK built at output time (Stack._flush_acks).
                room = self.mss - len(payload)
                n = (room - 4) // 8 if room >= 12 else 0
                if n < len(sack):
                    sack = sack[:n]
                    self.cx.stats.sack_trimmed += 1
                    owe = True
                    if ds is not None and n == 0:
                        self.dsack = ds            # not reported yet
                        self.cx.stats.dsacks_sent -= 1
        else:
            sack = ()
        self._ack_fields_sent()
        if owe:
            self.ack_now = True
            if not self.ack_queued:
                self.ack_queued = True
                self.cx.acks.append(self)
        self.segs_out += 1
        return Segment(self._la, self._ra, self._lp, self._rp, seq,
                       (self.irs + self.rcv_nxt_o) & MASK, flags, self._wnd_field(), 0,
                       None, None, False, tsval, tsecr, sack, payload)

    def _send_ack(self, now):
        cx = self.cx
        cx.out.append(self._mkseg((self.iss + self.snd_nxt_o) & MASK, ACK, b"", now))
        cx.stats.segs_out += 1

    def _send_probe(self, now):
        """Zero-window / keepalive probe: an old sequence number, no data (as Linux)."""
        cx = self.cx
        cx.out.append(self._mkseg((self.iss + self.snd_una_o - 1) & MASK, ACK, b"", now))
        cx.stats.segs_out += 1

    def _challenge_ack(self, now):
        """RFC 5961 §7: at most ``challenge_ack_limit`` per second, per connection: a
        stack-wide budget is a side channel (CVE-2016-5696), one connection's challenge
        ACKs told an attacker how many another one had sent."""
        cx = self.cx
        if now - self.ca_start >= 1.0:
            self.ca_start = now
            self.ca_count = 0
        if self.ca_count >= self.cfg.challenge_ack_limit:
            cx.stats.challenge_acks_limited += 1
            return
        self.ca_count += 1
        cx.stats.challenge_acks += 1
        self._send_ack(now)

    def _oow_ack(self, now):
        """ACK answering an unacceptable pure ACK: at most one per oow_interval (Linux)."""
        if now - self.oow_last >= self.cfg.oow_interval:
            self.oow_last = now
            self.cx.stats.oow_acks += 1
            self._send_ack(now)
        else:
            self.cx.stats.oow_acks_limited += 1

    def _send_rst_now(self, now):
        cx = self.cx
        if self.state in (SYN_SENT, CLOSED):
            return
        seg = self._mkseg((self.iss + self.snd_nxt_o) & MASK, RST | ACK, b"", now)
        seg.wnd = 0
        cx.out.append(seg)
        cx.stats.segs_out += 1
        cx.stats.rst_out += 1

    def _send_syn(self, now):
        """(Re)transmit our SYN (SYN_SENT) or SYN-ACK (SYN_RECEIVED)."""
        cfg = self.cfg
        cx = self.cx
        active = self.state == SYN_SENT
        ts = None
        tsecr = 0
        if active:
            flags = SYN
            ack = 0
            wscale = self.rcv_shift if cfg.wscale else None
            sack_ok = bool(cfg.sack)
            if cfg.timestamps:
                ts = self._ts_now(now)
        else:
            flags = SYN | ACK
            ack = (self.irs + 1) & MASK
            wscale = self.rcv_shift if self.ws_ok else None
            sack_ok = self.sack_ok
            if self.ts_ok:
                ts = self._ts_now(now)
                tsecr = self.ts_recent
        wnd = self.rcvbuf if self.rcvbuf < 65535 else 65535
        self.rcv_adv_o = self.rcv_nxt_o + wnd
        self.segs_out += 1
        cx.out.append(Segment(self._la, self._ra, self._lp, self._rp, self.iss & MASK, ack,
                               flags, wnd, 0, cfg.mss, wscale, sack_ok, ts, tsecr, (), b""))
        cx.stats.segs_out += 1

    # ================================================================ open paths ====
    def open_active(self, now, iss, ts_off, rcv_shift):
        self.iss = iss
        self.ts_off = ts_off
        self.rcv_shift = rcv_shift
        self.announced = True
        self._move(OPEN_ACTIVE)
        self.snd_una_o = 0
        self.snd_nxt_o = 1
        self.rtxq.append(_Rec(0, 1, R_SYN, now))
        self._send_syn(now)
        self.t_rtx = now + self.rto
        self.schedule()

    def open_passive(self, seg, now, iss, ts_off, rcv_shift, listener):
        """Create SYN_RECEIVED state from a SYN and answer with SYN-ACK."""
        self.listener = listener
        self.passive = True
        self.iss = iss
        self.ts_off = ts_off
        self.irs = seg.seq & MASK
        self.rcv_nxt_o = 1
        self.rcv_wup_o = 1
        self._negotiate(seg, rcv_shift)
        if self.ts_ok:
            self.ts_recent = seg.tsval & MASK
            self.ts_recent_stamp = now
        self.snd_wnd = seg.wnd & 0xFFFF          # window in a SYN is never scaled
        self.max_snd_wnd = self.snd_wnd
        self._move(SYN_IN)
        self.snd_una_o = 0
        self.snd_nxt_o = 1
        self.rtxq.append(_Rec(0, 1, R_SYN, now))
        self._send_syn(now)
        self.t_rtx = now + self.rto
        self.schedule()

    def _negotiate(self, seg, rcv_shift):
        cfg = self.cfg
        m = seg.mss
        pm = m if (m is not None and 0 < m) else 536
        if pm > 65535:
            pm = 65535
        self.peer_mss = pm
        self.ws_ok = bool(cfg.wscale) and seg.wscale is not None
        if self.ws_ok:
            ws = seg.wscale
            self.snd_shift = ws if 0 <= ws <= 14 else 14
            self.rcv_shift = rcv_shift
        else:
            self.snd_shift = 0
            self.rcv_shift = 0
        self.sack_ok = bool(cfg.sack) and bool(seg.sack_ok)
        self.ts_ok = bool(cfg.timestamps) and seg.tsval is not None
        self._set_mss()

    def _set_mss(self):
        cfg = self.cfg
        m = self.peer_mss if self.peer_mss < cfg.mss else cfg.mss
        if self.ts_ok:
            m -= 12
        if m < MIN_SND_MSS:
            m = MIN_SND_MSS
        self.mss = m
        r = cfg.mss - (12 if self.ts_ok else 0)
        self.rcv_mss = r if r < 536 else 536      # grows with observed segments
        # receiver SWS threshold min(RCV.BUFF/2, Eff.snd.MSS) (RFC 1122 4.2.3.3): the
        # peer's effective MSS is ours to it, min(both MSS options) - options
        t = self.rcvbuf // 2
        self.sws_thresh = t if t < m else m

    def _open_established(self, now):
        """Common work when the handshake completes (either direction)."""
        cfg = self.cfg
        mss = self.mss
        if self.syn_rtx:
            iw = mss                               # RFC 6928 §2 / RFC 5681: SYN was lost
            if self.srtt is None:
                self.rto = max(self.rto, 3.0)      # RFC 6298 §5.7
        else:
            iw = cfg.init_cwnd * mss
            cap = max(2 * mss, 14600)
            if cfg.init_cwnd == 10 and iw > cap:   # RFC 6928 formula
                iw = cap
        self.cc = _cc.make(cfg.cc, mss, iw)
        if cfg.hystart:
            self.cc.hs_state = _cc.HS_SS
        self.backoff = 0
        self.last_send = now
        self.last_rcv = now
        if self._keepalive or cfg.keepalive:
            self._keepalive = True
            self.t_ka = now + self.keepalive_idle
        self._move(HANDSHAKE_DONE)
        if self.wr_shut:
            self._move(FIN_QUEUED)

    def open_cookie(self, seg, now, iss, ts_off, rcv_shift, listener, mss, ws, sack):
        """Establish directly from a validated SYN-cookie ACK (no SYN_RECEIVED state)."""
        cfg = self.cfg
        self.listener = listener
        self.passive = True
        self.iss = iss
        self.ts_off = ts_off
        self.irs = (seg.seq - 1) & MASK
        self.rcv_nxt_o = 1
        self.rcv_wup_o = 1
        self.peer_mss = mss
        self.ts_ok = bool(cfg.timestamps) and seg.tsval is not None
        self.ws_ok = bool(cfg.wscale) and ws is not None and self.ts_ok
        if self.ws_ok:
            self.snd_shift = ws
            self.rcv_shift = rcv_shift
        self.sack_ok = bool(cfg.sack) and sack and self.ts_ok
        self._set_mss()
        if self.ts_ok:
            self.ts_recent = seg.tsval & MASK
            self.ts_recent_stamp = now
        w = self.rcvbuf if self.rcvbuf < 65535 else 65535
        self.rcv_adv_o = 1 + w
        self.snd_una_o = 1
        self.snd_nxt_o = 1
        self.snd_wnd = (seg.wnd & 0xFFFF) << self.snd_shift
        self.max_snd_wnd = self.snd_wnd
        self.snd_wl1_o = 1
        self.snd_wl2_o = 1
        self._open_established(now)
        self.announced = True
        self.cx.events.append((_EV_ACCEPTED, listener, self))

    # ==================================================================== input ====
    def _input(self, seg, now):
        """Process one inbound segment (the stack already matched the 4-tuple)."""
        self.segs_in += 1
        st = self.state
        # ---- fast path (header prediction, RFC 9293 §3.10.7.4 in its common case):
        # ESTABLISHED, in-sequence, only ACK/PSH, nothing out of order, no SACK blocks,
        # not in loss recovery, ACK within [SND.UNA, SND.NXT].  Anything else: slow path.
        if st == ESTABLISHED and seg.flags & PREDICT_MASK == ACK and not self.ooo and \
                self.ca_state == CA_OPEN and not seg.sack:
            rn = self.rcv_nxt_o
            una = self.snd_una_o
            d = (seg.ack - self.iss - una) & MASK
            payload = seg.payload
            plen = len(payload)
            pwnd = (seg.wnd & 0xFFFF) << self.snd_shift
            if seg.seq == (self.irs + rn) & MASK and d <= self.snd_nxt_o - una and \
                    (d or (plen and pwnd == self.snd_wnd)) and \
                    plen <= self.rcv_adv_o - rn and self.dsack is None and \
                    not (plen and self.closed_by_app):
                tsval = seg.tsval
                if self.ts_ok:
                    if tsval is None or ((tsval - self.ts_recent) & MASK) >= HALF:
                        return self._input_slow(seg, now, st)
                    if rn <= self.rcv_wup_o:     # inline _take_ts_recent (hot path)
                        self.ts_recent = tsval
                        self.ts_recent_stamp = now
                self.last_rcv = now
                self.ka_probes = 0
                if d:
                    self.dupacks = 0
                    self.probes_out = 0
                    self._ack_new(una + d, seg, now)
                ack_o = una + d                  # inline _snd_wnd_update (hot path)
                if self.snd_wl1_o < rn or (self.snd_wl1_o == rn and self.snd_wl2_o <= ack_o):
                    self.snd_wnd = pwnd
                    self.snd_wl1_o = rn
                    self.snd_wl2_o = ack_o
                    if pwnd > self.max_snd_wnd:
                        self.max_snd_wnd = pwnd
                    if pwnd:
                        self.persist_n = 0
                        self.t_persist = None
                if plen:
                    self.rcvq.append(payload)
                    rn += plen
                    self.rcv_nxt_o = rn
                    self.bytes_in += plen
                    if not self.rd_pending:
                        self.rd_pending = True
                        self.cx.events.append((_EV_READABLE, self))
                    if plen > self.rcv_mss:
                        self.rcv_mss = plen if plen < self.cfg.mss else self.cfg.mss
                    if self.quick > 0:           # inline _ack_rule (hot path)
                        self.quick -= 1
                        self.ack_now = True
                    elif rn - self.rcv_wup_o > self.rcv_mss:
                        self.ack_now = True
                    else:
                        self.ack_pending = True
                if self.snd_nxt_o < self.sndq_o + len(self.sndq):
                    self._xmit(now)
                elif d and (self.fin_o is not None or self.lost_out > self.retrans_out or
                            self.ca_state != CA_OPEN or
                            (self.snd_nxt_o == self.snd_una_o and
                             self.last_send != self.created and
                             now - self.last_send > self._cur_rto())):
                    # an ACK that leaves no new data to send (request/response: the
                    # ACK of our answer riding on the next request) calls _xmit only
                    # for what it could still do there: a FIN, a retransmission, the
                    # idle restart (RFC 5681 §4.1); else it would send nothing
                    self._xmit(now)
                if self.ack_now:
                    # built when the caller takes the output (Stack._flush_acks): a
                    # burst of in-order segments gets one ACK, not one per two segments
                    if not self.ack_queued:
                        self.ack_queued = True
                        self.cx.acks.append(self)
                elif self.ack_pending and self.t_dack is None:
                    self.t_dack = now + self.cfg.delack
                return None            # Stack.input calls schedule()
        return self._input_slow(seg, now, st)

    # the stack-facing name: one inbound segment for this 4-tuple; returns "reopen" when
    # a SYN may reuse a TIME_WAIT 4-tuple, else None
    process = _input

    def _input_slow(self, seg, now, st):
        """Everything header prediction does not take: RFC 9293 §3.10.7.4's steps in
        order, one method each (TIME_WAIT and SYN_SENT have their own, sharing the PAWS
        and RST rules)."""
        if st == SYN_SENT:
            self._in_syn_sent(seg, now)
            return None
        if st == TIME_WAIT:
            return self._in_time_wait(seg, now)
        self.last_rcv = now
        self.ka_probes = 0
        flags = seg.flags
        seq = seg.seq
        if st == SYN_RECEIVED and flags & SYN and not flags & RST and seq == self.irs:
            if not flags & ACK:
                self._resend_synack(now)     # the peer did not get our SYN-ACK
                return None
            if ((seg.ack - self.iss - 1) & MASK) == 0:
                # simultaneous open: the peer's SYN-ACK acknowledges our SYN; its SYN is
                # the one already taken, so the segment is processed from after it
                flags &= ~SYN
                seq = (seq + 1) & MASK
        # PAWS (RFC 7323 §5.3) comes before the sequence check
        if not flags & RST and self._paws_fails(seg.tsval, now):
            self.cx.stats.paws_drops += 1
            if seg.payload or flags & (FIN | SYN):
                self._send_ack(now)
            else:
                self._oow_ack(now)
            return None
        # first: sequence number (Linux's rcv_wup variant of the acceptability test)
        rn = self.rcv_nxt_o
        d = (seq - self.irs - rn) & MASK
        if d >= HALF:
            d -= MOD
        seq_o = rn + d
        plen = len(seg.payload)
        seglen = plen + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        wnd = self.rcv_adv_o - rn
        if wnd < 0:
            wnd = 0
        # second: RST (RFC 5961 §3.2)
        if flags & RST:
            self._in_rst(d, wnd, now)
            return None
        if not self._acceptable(flags, seq_o, seglen, plen, rn, wnd, now):
            return None
        # fourth: SYN (RFC 5961 §4.2: a challenge ACK for any SYN in a synchronized state)
        if flags & SYN:
            self._challenge_ack(now)
            return None
        # fifth: ACK
        if not flags & ACK:
            return None
        ack_o = self._ack_acceptable(seg, st, now)
        if ack_o is None:
            return None
        self._take_ts_recent(seg.tsval, seq_o, now)
        if st == SYN_RECEIVED:
            self._handshake_done(seg, seq_o, ack_o, now)
        elif not self._ack_step(seg, seq_o, ack_o, now):
            return None
        # seventh and eighth: segment text and FIN
        if seglen and not self._text_step(seg, flags, seq_o, seglen, plen, rn, now):
            return None
        self._after_input(now)
        return None

    def _resend_synack(self, now):
        if now - self.oow_last >= self.cfg.oow_interval:
            self.oow_last = now
            self._send_syn(now)

    def _paws_fails(self, tsval, now):
        """RFC 7323 §5.3: a timestamp older than TS.Recent (unless TS.Recent is more
        than 24 days old, §5.5)."""
        return tsval is not None and self.ts_ok and \
            ((tsval - self.ts_recent) & MASK) >= HALF and \
            now - self.ts_recent_stamp < PAWS_IDLE

    def _take_ts_recent(self, tsval, seq_o, now):
        """RFC 7323 §4.3: remember the timestamp to echo (SEG.SEQ <= Last.ACK.sent), once
        the segment, its ACK included, is acceptable."""
        if tsval is not None and self.ts_ok and seq_o <= self.rcv_wup_o:
            self.ts_recent = tsval & MASK
            self.ts_recent_stamp = now

    def _in_rst(self, d, wnd, now):
        """RFC 5961 §3.2, ``d`` = SEG.SEQ - RCV.NXT: exactly at RCV.NXT resets, elsewhere
        in the window gets a challenge ACK, outside it is dropped."""
        if d == 0:
            self.cx.stats.rst_in += 1
            self._reset_by_peer(now)
        elif 0 < d < (wnd if wnd else 1):
            self._challenge_ack(now)

    def _acceptable(self, flags, seq_o, seglen, plen, rn, wnd, now):
        """RFC 9293 §3.10.7.4 first check; answers what is not acceptable."""
        end_o = seq_o + seglen
        if end_o >= self.rcv_wup_o and seq_o <= rn + wnd:
            return True
        if flags & SYN:
            self._challenge_ack(now)
        elif seglen:
            if plen and self.sack_ok and self.cfg.dsack and end_o <= rn:
                self.dsack = (seq_o, seq_o + plen)
            self._send_ack(now)
        else:
            self._oow_ack(now)
        return False

    def _ack_acceptable(self, seg, st, now):
        """The ACK's offset, or None when it is not acceptable (answered)."""
        una = self.snd_una_o
        d = (seg.ack - self.iss - una) & MASK
        if d >= HALF:
            d -= MOD
        ack_o = una + d
        if st == SYN_RECEIVED:
            if ack_o != self.snd_nxt_o or ack_o <= 0:
                self._send_rst_for(seg.ack, now)
                return None
        elif ack_o > self.snd_nxt_o or ack_o < una - self.max_snd_wnd:
            # RFC 5961 §5.2 (blind data injection) / RFC 9293: ack of unsent data
            self.cx.stats.bad_acks += 1
            self._challenge_ack(now)
            return None
        return ack_o

    def _handshake_done(self, seg, seq_o, ack_o, now):
        """SYN_RECEIVED: our SYN is acknowledged (passive, or simultaneous open)."""
        cx = self.cx
        self.snd_wnd = (seg.wnd & 0xFFFF) << self.snd_shift
        self.max_snd_wnd = self.snd_wnd
        self.snd_wl1_o = seq_o
        self.snd_wl2_o = ack_o
        self._ack_new(ack_o, seg, now)
        self._open_established(now)
        self.announced = True
        if self.passive:
            cx.stats.passive_opens += 1
            cx.events.append((_EV_ACCEPTED, self.listener, self))
        else:
            cx.stats.active_opens += 1
            self._event(_EV_CONNECTED)

    def _ack_step(self, seg, seq_o, ack_o, now):
        """Synchronized states: process the ACK, then our FIN's acknowledgment; False
        when the connection is gone or left for TIME_WAIT."""
        self._ack(seg, seq_o, ack_o, now)
        if self.state == CLOSED:
            return False
        fo = self.fin_o
        if fo is not None and self.snd_una_o > fo and (self.state, FIN_ACKED) in TRANSITIONS:
            if self._move(FIN_ACKED, now) != FIN_WAIT_2:
                return False               # TIME_WAIT or CLOSED
            if self.closed_by_app:
                self.t_tw = now + self.cfg.fin_timeout
        return True

    def _text_step(self, seg, flags, seq_o, seglen, plen, rn, now):
        """Data and FIN; False when the connection is gone."""
        if seq_o + seglen <= rn:
            # entirely old: the peer missed our ACK
            self.cx.stats.dup_segs_in += 1
            if plen and self.sack_ok and self.cfg.dsack:
                self.dsack = (seq_o, seq_o + plen)
            self.dup_bytes_in += plen
            self.ack_now = True
        elif self.state in _RECEIVING:
            self._rcv_data(seq_o, seg.payload, plen, flags & FIN, now)
            if self.state == CLOSED:
                return False
        # else: data beyond a FIN we already received; ignore the text
        return True

    def _after_input(self, now):
        if self.state in _SENDING and (self.lost_out > self.retrans_out or
                                       self.snd_nxt_o < self.sndq_o + len(self.sndq) or
                                       (self.fin_o is not None and self.snd_nxt_o <= self.fin_o)
                                       or (self.ca_state == CA_RECOVERY and self.sack_ok and
                                           self.snd_una_o > self.rescue_o)):
            self._xmit(now)
        if self.ack_now:
            self._send_ack(now)
        elif self.ack_pending and self.t_dack is None:
            self.t_dack = now + self.cfg.delack
        self.schedule()

    def _send_rst_for(self, ack, now):
        """RST answering an unacceptable ACK (seq = SEG.ACK, no ACK bit)."""
        cx = self.cx
        cx.out.append(Segment(self._la, self._ra, self._lp, self._rp, ack & MASK, 0, RST,
                               0, 0, None, None, False, None, 0, (), b""))
        cx.stats.segs_out += 1
        cx.stats.rst_out += 1

    def _reset_by_peer(self, now):
        st = self.state
        if st == SYN_RECEIVED:
            if self.passive:
                self.destroy(None)          # back to LISTEN: the app never saw it
                return
            self.error = ConnectionRefusedError
            self.destroy(_EV_REFUSED)
            return
        if st in (CLOSING, LAST_ACK, TIME_WAIT):
            self.destroy(None)
            return
        self.error = ConnectionResetError
        self.destroy(_EV_RESET)

    # ------------------------------------------------------------ SYN_SENT input --
    def _in_syn_sent(self, seg, now):
        flags = seg.flags
        cx = self.cx
        ack_ok = False
        if flags & ACK:
            a = (seg.ack - self.iss) & MASK
            if a == 0 or a >= HALF or a > self.snd_nxt_o:
                if not flags & RST:
                    self._send_rst_for(seg.ack, now)
                return
            ack_ok = True
        if flags & RST:
            if ack_ok:
                cx.stats.rst_in += 1
                self.error = ConnectionRefusedError
                self.destroy(_EV_REFUSED)
            return
        if not flags & SYN:
            return
        self.irs = seg.seq & MASK
        self.rcv_nxt_o = 1
        self.rcv_wup_o = 1
        self._negotiate(seg, self.rcv_shift)
        if self.ts_ok:
            self.ts_recent = seg.tsval & MASK
            self.ts_recent_stamp = now
        self.last_rcv = now
        if ack_ok:
            self.snd_wnd = seg.wnd & 0xFFFF          # never scaled in a SYN
            self.max_snd_wnd = self.snd_wnd
            self.snd_wl1_o = 0
            self.snd_wl2_o = 1
            self._ack_new(1, seg, now)
            self._open_established(now)
            cx.stats.active_opens += 1
            self._event(_EV_CONNECTED)
            payload = seg.payload
            if payload or flags & FIN:
                self._rcv_data(1, payload, len(payload), flags & FIN, now)
                if self.state == CLOSED:
                    return
            self.ack_now = True
            self._after_input(now)
        else:
            # simultaneous open (RFC 9293 §3.5, figure 7)
            self._move(SYN_IN)
            self.snd_wnd = seg.wnd & 0xFFFF
            self.max_snd_wnd = self.snd_wnd
            self._send_syn(now)
            self.schedule()

    # ------------------------------------------------------------ TIME_WAIT input --
    def _in_time_wait(self, seg, now):
        """Returns "reopen" when a new SYN may reuse the 4-tuple (RFC 6191 / Linux)."""
        flags = seg.flags
        cx = self.cx
        rn = self.rcv_nxt_o
        d = (seg.seq - self.irs - rn) & MASK
        if d >= HALF:
            d -= MOD
        tsval = seg.tsval
        if flags & SYN and not flags & (RST | ACK):
            if self.ts_ok and tsval is not None:
                newer = ((tsval - self.ts_recent) & MASK) - 1 < HALF - 1
            else:
                newer = d > 0
            if newer:
                return "reopen"
            self._send_ack(now)
            return None
        if not flags & RST and self._paws_fails(tsval, now):
            cx.stats.paws_drops += 1
            self._oow_ack(now)
            return None
        if flags & RST:
            self._in_rst(d, max(self.rcv_adv_o - rn, 0), now)     # exact: TIME_WAIT ends
            return None
        if flags & SYN:
            self._challenge_ack(now)
            return None
        plen = len(seg.payload)
        if flags & FIN and d + plen + 1 == 0:
            # retransmitted FIN: our ACK was lost; ACK again and restart the 2MSL timer
            self._send_ack(now)
            self.t_tw = now + self.cfg.time_wait
            self.schedule()
            return None
        if plen or flags & FIN or d != 0:
            self._oow_ack(now)
        return None

    def _enter_time_wait(self, now):
        cfg = self.cfg
        cx = self.cx
        self.t_rtx = self.t_persist = self.t_ka = self.t_dack = self.t_probe = None
        self.rtxq = []
        self.sacked_out = self.lost_out = self.retrans_out = self.reno_dup = 0
        self._release_bufs()
        if cfg.time_wait <= 0 or cx.tw_count >= cfg.max_time_wait:
            if cfg.time_wait > 0:
                cx.stats.tw_overflow += 1
            self.destroy(None)
            return
        self._set_state(TIME_WAIT)
        self.t_tw = now + cfg.time_wait
        self.schedule()

    # ====================================================================== ACK ====
    def _ack(self, seg, seq_o, ack_o, now):
        """ACK processing in synchronized states (ack_o already validated)."""
        una = self.snd_una_o
        pwnd = (seg.wnd & 0xFFFF) << self.snd_shift
        new_sacked = 0
        sack = seg.sack if self.sack_ok else None
        sk0 = self.sacked_out          # PRR's DeliveredData: what this ACK (s)acked
        rd0 = self.reno_dup
        lc0 = self.lost_cnt
        if sack:
            self.dsack_in = self._is_dsack(sack, ack_o)
            if self.dsack_in:
                self._on_dsack(sack[0], now)
            new_sacked = self._sack_tag(sack, ack_o)
        dup = False
        if ack_o > una:
            self._ack_new(ack_o, seg, now)
        else:
            if ack_o == una and self.snd_nxt_o > una and not seg.payload and \
                    not seg.flags & FIN and pwnd == self.snd_wnd:
                dup = True
                if not self.sack_ok or new_sacked:
                    self._dupack(new_sacked, now)
            if self.tlp_end is not None and self.cc is not None:
                self._tlp_ack(ack_o, now)
        if self.frto:
            self._frto_step(ack_o > una, dup, now)
        self.dsack_in = False
        if sack and self.cc is not None:
            self._sack_loss_check(new_sacked, ack_o > una, now)
        if self.ca_state == CA_RECOVERY and self.cfg.prr and not self.undone and \
                self.cc is not None:
            d = (ack_o - una if ack_o > una else 0) + self.sacked_out - sk0 + \
                self.reno_dup - rd0
            if d > 0:
                self._prr(d, ack_o > una and self.lost_cnt == lc0)
        self._snd_wnd_update(seq_o, ack_o, pwnd)
        self.persist_n = 0 if pwnd else self.persist_n
        self.probes_out = 0         # the peer answers: keep probing (RFC 1122 4.2.2.17)

    def _snd_wnd_update(self, seq_o, ack_o, pwnd):
        """The send window from an acceptable ACK (RFC 9293 §3.10.7.4, SND.WL1/SND.WL2
        rule); an open window ends zero-window probing.  Fast and slow path."""
        if self.snd_wl1_o < seq_o or (self.snd_wl1_o == seq_o and self.snd_wl2_o <= ack_o):
            self.snd_wnd = pwnd
            self.snd_wl1_o = seq_o
            self.snd_wl2_o = ack_o
            if pwnd > self.max_snd_wnd:
                self.max_snd_wnd = pwnd
            if pwnd:
                self.persist_n = 0
                self.t_persist = None

    def _ack_new(self, ack_o, seg, now):
        """Cumulative ACK advanced snd_una to ack_o."""
        una = self.snd_una_o
        acked = ack_o - una
        q = self.rtxq
        rtt_ts = None
        rend = 0
        rtx_recs = False
        n = 0
        nq = len(q)
        sacked = lost = retrans = 0
        while n < nq:
            r = q[n]
            if r.end > ack_o:
                if r.start < ack_o:
                    # partial ACK of a segment: trim it
                    f = r.flags
                    cut = ack_o - r.start
                    if f & R_SACKED:
                        sacked += cut
                    else:
                        if f & R_LOST:
                            lost += cut
                        if f & R_RETRANS:
                            retrans += cut
                    r.start = ack_o
                break
            f = r.flags
            ln = r.end - r.start
            if f & R_SACKED:
                sacked += ln
            else:
                if f & R_LOST:
                    lost += ln
                if f & R_RETRANS:
                    retrans += ln
            if not f & R_EVER:
                rtt_ts = r.ts
                rend = r.end
            elif f & R_RETRANS:
                rtx_recs = True
            n += 1
        if rtt_ts is not None:
            # RACK.xmit_ts from the newest never-retransmitted segment acked (sent in
            # sequence order, so the last one); retransmitted ones below (rare)
            rts = self.rack_ts
            if rts is None or rtt_ts > rts or (rtt_ts == rts and rend > self.rack_end):
                self.rack_ts = rtt_ts
                self.rack_end = rend
                self.rack_rtt = now - rtt_ts
        if rtx_recs:
            for r in q[:n]:
                if r.flags & R_RETRANS:
                    self._rack_update(r, now)
        if self.sacked_out and not self.rack_reord:
            # a never-retransmitted segment delivered below SACKed data came late
            hs = self.high_sacked_o
            for r in q[:n]:
                if r.end < hs and not r.flags & (R_SACKED | R_EVER):
                    self.rack_reord = True
                    break
        if self.frto and n:
            # F-RTO: never-retransmitted data sent before the RTO, not SACKed before,
            # acknowledged now (Linux's FLAG_ORIG_SACK_ACKED)
            ro = self.recover_o
            for r in q[:n]:
                if not r.flags & (R_EVER | R_SACKED) and r.end <= ro:
                    self.frto_orig = True
                    break
        sts = q[n - 1].ts if n else None   # send time of the newest segment acked
        if n:
            del q[:n]
        self.sacked_out -= sacked
        self.lost_out -= lost
        self.retrans_out -= retrans
        if self.rtx_scan < ack_o:
            self.rtx_scan = ack_o
        self.snd_una_o = ack_o
        # free acknowledged bytes from the send buffer
        sa = self.sndq_a
        dend = self.sndq_o + len(self.sndq)
        top = ack_o if ack_o < dend else dend
        if top > sa:
            self.bytes_acked += top - sa
            self.sndq_a = top
            k = top - self.sndq_o
            if k == len(self.sndq) or k > (len(self.sndq) >> 1):
                del self.sndq[:k]
                self.sndq_o = top
        # RTT (RFC 7323 §4 with timestamps, else RFC 6298 with Karn's rule)
        rtt = None
        flight = 0
        if self.ts_ok and seg.tsval is not None and seg.tsecr:
            d = (self._ts_now(now) - seg.tsecr) & MASK
            if d < HALF:
                rtt = d * 0.001
                flight = self.snd_nxt_o - una
        elif rtt_ts is not None:
            rtt = now - rtt_ts
        if rtt is not None and rtt >= 0:
            self._rtt_sample(rtt, flight)
            if self.min_rtt is None or rtt < self.min_rtt:
                self.min_rtt = rtt
            t0 = self.dr_t0
            if t0 is None or now - t0 >= self.srtt:
                if t0 is not None and now > t0:
                    # over the longer of the ACK and the send intervals (Linux's
                    # tcp_rate_gen): ACKs released together shorten the first, never
                    # the second, and bytes cannot arrive faster than they were sent
                    iv = now - t0
                    s0 = self.dr_s0
                    if s0 is not None and sts is not None and sts - s0 > iv:
                        iv = sts - s0
                    self.delivery_rate = (self.bytes_acked - self.dr_b0) / iv
                self.dr_t0 = now
                self.dr_b0 = self.bytes_acked
                self.dr_s0 = sts
            self.backoff = 0          # Karn: the backed-off RTO stays until a valid sample
        self.rto_count = 0
        # retransmission timer (RFC 6298 §5.2/5.3), and the loss probe before it
        if self.snd_nxt_o > ack_o:
            self.t_rtx = now + self._cur_rto()
        else:
            self.t_rtx = None
        cc = self.cc
        if cc is None:
            return
        if self.tlp_end is not None:
            self._tlp_ack(ack_o, now)
        # congestion control / recovery state machine
        cas = self.ca_state
        if cas == CA_RECOVERY:
            if ack_o >= self.recover_o:
                self._exit_recovery(now)
            else:
                # partial ACK (RFC 6582 §3.2 step 5): the next hole is lost too.  With
                # SACK and RACK, RACK's time rule decides instead (it also finds the
                # holes above it at once); an ACK with SACK blocks runs it in
                # _sack_loss_check, one without runs it here
                if self.reno_dup:
                    self.reno_dup -= acked
                    if self.reno_dup < 0:
                        self.reno_dup = 0
                if self.sack_ok and self.cfg.rack and self.rack_ts is not None:
                    if not seg.sack:
                        self._rack_detect(now)
                elif q and not q[0].flags & (R_SACKED | R_RETRANS):
                    r = q[0]
                    self._mark_lost(r)
                    self._retransmit(r, now)
        else:
            if cas == CA_LOSS and ack_o >= self.recover_o:
                self.ca_state = CA_OPEN
            self.dupacks = 0
            self.reno_dup = 0
            # HyStart++: an ACK that ends no round and whose sample can change nothing
            # (the round has its 8 samples, not a new minimum) is skipped: the result
            # is the same, and the hot bulk-send path pays a few attribute reads
            if cc.hs_state and (ack_o >= cc.hs_end or rtt is not None and (
                    cc.hs_count < _cc.N_RTT_SAMPLE or rtt < cc.hs_cur_min)):
                ev = cc.hystart_ack(rtt, ack_o, self.snd_nxt_o)
                if ev:
                    stats = self.cx.stats
                    if ev & _cc.HS_EV_RESUME:
                        stats.hystart_resumes += 1
                    if ev & _cc.HS_EV_CSS:
                        stats.hystart_css += 1
                    if ev & _cc.HS_EV_EXIT:
                        stats.hystart_exits += 1
            # grow only while cwnd limits the flow (RFC 7661; Linux's
            # tcp_is_cwnd_limited): an ACK of data sent when cwnd stopped the sender,
            # or, in slow start, a cwnd below twice what was in flight before this ACK
            if ack_o <= self.cwnd_lim_o or (cc.cwnd < cc.ssthresh and
                                             2 * self._in_flight() + 2 * acked >= cc.cwnd):
                cc.on_ack(acked, self.srtt, now)
        if self._wr_want and not self.wr_shut:
            if self.sndbuf < self.cfg.sndbuf_max:
                self._grow_sndbuf()
            used = self.sndq_o + len(self.sndq) - self.sndq_a
            if self.sndbuf - used >= (used >> 1):     # Linux sk_stream_wspace rule
                self._wr_want = False
                self._event(_EV_WRITABLE)
        if self.sack_ok:
            self._arm_pto(now)

    def _rtt_sample(self, r, flight=0):
        """RFC 6298 §2.  ``flight``: bytes in flight when the sample is one of many per
        RTT (timestamps); RFC 7323 appendix G divides the gains by the samples expected
        per RTT, ceil(flight / 2 SMSS), so RTTVAR does not decay within one RTT.
        RTO = SRTT + max(4 RTTVAR, rto_min): the floor is on the variance term, as
        Linux's srtt + max(mdev, rto_min), so a steady long path keeps room for a
        delayed ACK."""
        if self.srtt is None:
            self.srtt = r
            self.rttvar = r / 2.0
        else:
            dv = self.srtt - r
            if dv < 0:
                dv = -dv
            n = -(-flight // (2 * self.mss)) if flight > 2 * self.mss else 1
            if n == 1:
                self.rttvar = 0.75 * self.rttvar + 0.25 * dv
                self.srtt = 0.875 * self.srtt + 0.125 * r
            else:
                b = 0.25 / n
                a = 0.125 / n
                self.rttvar = (1.0 - b) * self.rttvar + b * dv
                self.srtt = (1.0 - a) * self.srtt + a * r
        k = 4.0 * self.rttvar
        cfg = self.cfg
        f = cfg.rto_min if cfg.rto_min > CLOCK_G else CLOCK_G
        rto = self.srtt + (k if k > f else f)
        if rto > cfg.rto_max:
            rto = cfg.rto_max
        self.rto = rto

    def _mark_lost(self, r):
        f = r.flags
        if f & (R_LOST | R_SACKED):
            return
        r.flags = f | R_LOST
        self.lost_cnt += 1
        self.lost_out += r.end - r.start
        if r.start < self.rtx_scan:
            self.rtx_scan = r.start

    def _dupack(self, new_sacked, now):
        if not self.dupacks:
            self.flight_dup1 = self.snd_nxt_o - self.snd_una_o
        self.dupacks += 1
        cx = self.cx
        cx.stats.dupacks_in += 1
        mss = self.mss
        if not self.sack_ok:
            # Reno: each duplicate ACK stands for one segment that left the network
            # (one more per duplicate: a partial ACK already took back what it covered)
            out = self.snd_nxt_o - self.snd_una_o - mss
            rd = self.reno_dup + mss
            self.reno_dup = rd if rd < out else (out if out > 0 else 0)
        if self.ca_state == CA_OPEN and self.dupacks >= DUPTHRESH:
            if self.sack_ok:
                if not self.cfg.rack:         # with RACK, RACK alone decides (below)
                    self._enter_recovery(now)
            elif self.snd_una_o > self.recover_o or self.recover_o == 0:
                self._enter_recovery(now)

    def _enter_recovery(self, now):
        cx = self.cx
        cx.stats.fast_retransmits += 1
        # RFC 5681 §3.2 step 2: FlightSize without the limited-transmit segments
        flight = self.flight_dup1 if self.dupacks else self.snd_nxt_o - self.snd_una_o
        self._undo_start()
        self.cc.on_recovery_enter(now, flight)
        self.ca_state = CA_RECOVERY
        self.recover_o = self.snd_nxt_o
        # PRR (RFC 6937): RecoverFS = the FlightSize ssthresh came from (without the
        # limited-transmit segments, so the sending ratio is the algorithm's beta)
        self.prr_fs = flight if flight > 0 else self.mss
        self.prr_delivered = 0
        self.prr_rtx = 0
        self.prr_nxt = self.snd_nxt_o
        if self.t_probe is not None and self.probe_kind == PROBE_TLP:
            self.t_probe = None
        q = self.rtxq
        if self.sack_ok:
            if self.cfg.rack and self.rack_ts is not None:
                self._rack_detect(now)        # no reordering window in recovery
            else:
                self._sack_mark_lost()
        if q and not q[0].flags & R_SACKED:
            # retransmit the first unacknowledged segment now, whatever pipe says
            # (RFC 5681 §3.2 step 3, RFC 6675 §5 step 4.3)
            r = q[0]
            self._mark_lost(r)
            if not r.flags & R_RETRANS:
                self._retransmit(r, now)

    def _retransmit(self, r, now):
        f = r.flags
        self._emit_range(r.start, r.end, f & R_FIN, now, True)
        r.flags = f | R_RETRANS | R_EVER
        r.ts = now
        if self.undo_marker >= 0:
            self.undo_retrans += 1
        if self.ca_state == CA_RECOVERY:
            self.prr_rtx += r.end - r.start
        self.retrans_out += r.end - r.start
        self.retransmits += 1
        self.cx.stats.retransmits += 1
        if self.t_rtx is None:
            self.t_rtx = now + self._cur_rto()

    def _prr(self, delivered, safe):
        """Proportional Rate Reduction (RFC 6937) on an ACK in fast recovery that
        delivered ``delivered`` bytes (cumulatively or by SACK): while the pipe is above
        ssthresh, sending follows delivery in the ratio ssthresh / RecoverFS (about one
        segment per two delivered for NewReno, 7 per 10 for CUBIC), spread over the
        recovery instead of a pause and a burst; once the pipe fell to ssthresh or below
        (many losses), the slow-start reduction bound (PRR-SSRB, as Linux's
        tcp_cwnd_reduction) lets the pipe grow back towards ssthresh by at most what was
        delivered, plus one segment when the ACK advanced SND.UNA and marked nothing
        newly lost.  The result is the cwnd _xmit obeys: pipe + sndcnt."""
        self.prr_delivered += delivered
        pipe = self._in_flight()
        cc = self.cc
        ss = cc.ssthresh
        prr_out = self.snd_nxt_o - self.prr_nxt + self.prr_rtx
        if pipe > ss:
            sndcnt = -(-self.prr_delivered * ss // self.prr_fs) - prr_out
        else:
            lim = self.prr_delivered - prr_out
            if lim < delivered:
                lim = delivered
            if safe:
                lim += self.mss
            sndcnt = ss - pipe
            if sndcnt > lim:
                sndcnt = lim
            self.cx.stats.prr_ssrb += 1
        if sndcnt < 0:
            sndcnt = 0
        cc.set_cwnd(pipe + sndcnt)

    def _exit_recovery(self, now):
        self.ca_state = CA_OPEN
        self.dupacks = 0
        self.reno_dup = 0
        if not self.undone:           # an undone reduction keeps the restored cwnd
            self.cc.on_recovery_exit(now)
        if self.rack_persist:
            self.rack_persist -= 1
            if not self.rack_persist:
                self.rack_mult = 1

    # ------------------------------------------------------- RACK-TLP (RFC 8985) --
    def _is_dsack(self, blocks, ack_o):
        """RFC 2883 §4: the first block is a DSACK when it lies below the cumulative ACK
        or inside the second block."""
        try:
            left, right = blocks[0]
        except (TypeError, ValueError, IndexError):
            return False
        if ((right - left) & MASK) >= HALF or left == right:
            return False
        ack = (self.iss + ack_o) & MASK
        if ((ack - right) & MASK) < HALF:
            return True
        if len(blocks) > 1:
            try:
                l2, r2 = blocks[1]
            except (TypeError, ValueError):
                return False
            return ((left - l2) & MASK) < HALF and ((r2 - right) & MASK) < HALF
        return False

    def _on_dsack(self, blk, now):
        """A DSACK says a retransmission was spurious: widen RACK's reordering window
        (RFC 8985 §6.2 step 4: reo_wnd_mult + 1, kept for 16 recoveries), and when every
        retransmission since the last reduction has been DSACKed, that reduction was
        for nothing: undo it (RFC 3708 §3 via Linux's undo_marker / undo_retrans)."""
        self.cx.stats.dsacks_in += 1
        self.rack_reord = True
        if self.rack_mult < 16:
            self.rack_mult += 1
        self.rack_persist = 16
        if self.undo_marker < 0 or self.undo_retrans <= 0 or not self.cfg.undo:
            return
        una = self.snd_una_o
        d = (blk[0] - self.iss - una) & MASK
        lo = una + d if d < HALF else una - ((-d) & MASK)
        if lo >= self.undo_marker:
            self.undo_retrans -= 1
            if self.undo_retrans == 0 and self.cc is not None:
                self._undo(now)
                self.cx.stats.dsack_undos += 1

    def _undo(self, now):
        """The one owner of the undo rule (DSACK undo, RFC 3708, and F-RTO, RFC 5682):
        the reduction that began at undo_marker was spurious: congestion control goes
        back to at least the cwnd and ssthresh it had before (Linux's
        tcp_undo_cwnd_reduction); recovery then ends without cwnd = ssthresh."""
        self.cc.undo(self.prior_cwnd, self.prior_ssthresh)
        self.undone = True
        self.undo_marker = -1

    def _frto_step(self, advanced, dup, now):
        """F-RTO, RFC 5682 §3.1 (the SACK-enhanced variant; it also works without SACK,
        as Linux uses it).  Step 2: the first ACK that advances SND.UNA after the RTO
        either covers everything sent before it ("recover": conventional recovery, no
        verdict) or not: then new data goes out instead of retransmissions (step 3;
        no new data to send: conventional recovery).  Step 3: the next ACK that
        acknowledges never-retransmitted data sent before the RTO (cumulatively or by
        SACK) proves those segments were only delayed: the timeout was spurious, and
        the RTO's reduction is undone (``_undo``), lost marks cleared, the connection
        open again.  A duplicate ACK or an advance without such data means the loss was
        real: conventional RTO recovery goes on.  Other ACKs change nothing."""
        st = self.frto
        orig = self.frto_orig
        self.frto_orig = False
        if self.ca_state != CA_LOSS:
            self.frto = FRTO_OFF
            return
        if st == FRTO_WAIT:
            if not advanced:
                return                        # duplicates before the ACK: stay in step 2
            if self.snd_una_o >= self.recover_o:
                self.frto = FRTO_OFF          # 2a: all acknowledged, ambiguous
                return
            nxt = self.snd_nxt_o
            if self.sndq_o + len(self.sndq) > nxt and self.snd_una_o + self.snd_wnd > nxt:
                self.frto = FRTO_NEW          # 2b: new data instead of retransmissions
            else:
                self.frto = FRTO_OFF
            return
        if orig:
            self.frto = FRTO_OFF              # 3b: spurious
            self.cx.stats.frto_spurious += 1
            if self.undo_marker >= 0:
                self._undo(now)
                self.cx.stats.frto_undos += 1
            lost = 0
            for r in self.rtxq:
                f = r.flags
                if f & R_LOST and not f & R_RETRANS:
                    r.flags = f & ~R_LOST
                elif f & R_LOST:
                    lost += r.end - r.start
            self.lost_out = lost
            self.ca_state = CA_OPEN
            self.dupacks = 0
            self.reno_dup = 0
            if self.sack_ok:
                self._arm_pto(now)
        elif advanced or dup:
            self.frto = FRTO_OFF              # 3a: the loss was real

    def _undo_start(self):
        """A reduction begins (recovery or the first RTO of an episode): remember what
        to go back to if it proves spurious."""
        cc = self.cc
        self.undo_marker = self.snd_una_o
        self.undo_retrans = 0
        self.prior_cwnd = cc.cwnd
        self.prior_ssthresh = cc.ssthresh
        self.undone = False

    def _rack_update(self, r, now):
        """RACK.xmit_ts from a delivered segment that was retransmitted: skipped when
        the ACK may be for the original (it came sooner than min_rtt after the
        retransmission, RFC 8985 §6.2 step 2)."""
        m = self.min_rtt
        if m is not None and now - r.ts + 1e-6 < m:      # (1e-6: float noise is not early)
            return
        rts = self.rack_ts
        if rts is None or r.ts > rts or (r.ts == rts and r.end > self.rack_end):
            self.rack_ts = r.ts
            self.rack_end = r.end
            self.rack_rtt = now - r.ts

    def _rack_reo_wnd(self):
        """RFC 8985 §6.2 step 4: no reordering window in recovery or once DupThresh
        segments are SACKed unless reordering was seen; else min_rtt/4 per multiple,
        at most SRTT."""
        if not self.rack_reord:
            if self.ca_state != CA_OPEN or self.sacked_out >= DUPTHRESH * self.mss:
                return 0.0
        m = self.min_rtt
        if m is None:
            return 0.0
        w = self.rack_mult * m * 0.25
        s = self.srtt
        return w if s is None or w < s else s

    def _rack_detect(self, now):
        """RFC 8985 §6.2 RACK_detect_loss: a segment sent before the most recently
        delivered one is lost once RACK.rtt + reo_wnd have passed since it was sent;
        the others arm the reordering timer.  Returns True when it marked a loss.
        The walk goes in sequence order, which is send order except for
        retransmissions: it stops at the first never-retransmitted segment sent after
        RACK.xmit_ts (everything above it was sent later still), and visits at most
        SACK_WALK_BUDGET records; a walk the budget cut short is taken up where it
        stopped (``rack_cur``) by the next one, so a loss burst longer than the budget
        is marked over a few ACKs instead of its first records again and again."""
        if not self.cfg.rack:
            return False
        rts = self.rack_ts
        rend = self.rack_end
        base = self.rack_rtt + self._rack_reo_wnd() - now
        timeout = 0.0
        marked = False
        walked = 0
        q = self.rtxq
        n = len(q)
        cur = self.rack_cur
        i = _rec_after(q, cur) if cur else 0
        whole = i == 0                 # this walk starts at SND.UNA
        self.rack_cur = 0
        while i < n:
            r = q[i]
            i += 1
            if walked >= SACK_WALK_BUDGET:
                self.rack_cur = r.start       # the rest next time
                whole = False
                break
            walked += 1
            f = r.flags
            if f & R_SACKED:
                continue
            ts = r.ts
            if ts > rts or (ts == rts and r.end >= rend):
                if not f & R_EVER:
                    break
                continue
            if f & R_LOST and not f & R_RETRANS:
                continue                      # already waiting for its retransmission
            rem = ts + base
            if rem <= 1e-6:        # a float hair above 0 is due: never re-arm at `now`
                if f & R_RETRANS:
                    # the retransmission is lost too: send it again
                    r.flags = f & ~R_RETRANS
                    self.retrans_out -= r.end - r.start
                    self.lost_cnt += 1
                    if r.start < self.rtx_scan:
                        self.rtx_scan = r.start
                else:
                    self._mark_lost(r)
                self.cx.stats.rack_lost += 1
                marked = True
            elif rem > timeout:
                timeout = rem
        self.cx.stats.sack_walked += walked
        tp = self.t_probe
        if tp is not None and self.probe_kind != PROBE_REO:
            tp = None
        if timeout > 0.0:
            # a partial walk saw part of the queue: it may only bring the timer forward
            if whole or tp is None or now + timeout < tp:
                self.t_probe = now + timeout
                self.probe_kind = PROBE_REO
        elif whole and tp is not None:
            self.t_probe = None
        return marked

    def _arm_pto(self, now):
        """RFC 8985 §7.2: (re)start the probe timeout after new data is sent or an ACK
        arrives, while the connection is open with data outstanding and no probe of
        this episode unanswered.  PTO = 2 SRTT (one lone segment also waits out a
        delayed ACK), never after the RTO, which it then replaces."""
        tp = self.t_probe
        if tp is not None and self.probe_kind == PROBE_REO:
            return
        t = self.t_rtx
        if t is None or self.ca_state != CA_OPEN or self.tlp_end is not None or \
                not self.cfg.tlp:
            if tp is not None:
                self.t_probe = None
            return
        srtt = self.srtt
        if srtt is None:
            pto = self.cfg.rto_initial
        else:
            pto = 2.0 * srtt
            if self.snd_nxt_o - self.snd_una_o <= self.mss:
                x = 1.5 * srtt + TLP_DELACK
                if x > pto:
                    pto = x
            if pto < 10 * CLOCK_G:
                pto = 10 * CLOCK_G
        pto += now
        self.t_probe = pto if pto < t else t
        self.probe_kind = PROBE_TLP

    def _on_tlp(self, now):
        """RFC 8985 §7.3: the probe: one new segment if the window allows, else the
        highest-sequence segment not SACKed again; then the RTO is restarted."""
        if self.state not in _SENDING or self.cc is None or self.ca_state != CA_OPEN or \
                self.snd_nxt_o == self.snd_una_o or self.tlp_end is not None:
            return
        nxt = self.snd_nxt_o
        avail = self.sndq_o + len(self.sndq) - nxt
        right = self.snd_una_o + self.snd_wnd
        fo = self.fin_o
        mss = self.mss
        retrans = False
        if avail > 0 and right > nxt:
            n = avail if avail < mss else mss
            if n > right - nxt:
                n = right - nxt
            fin = fo is not None and nxt + n == fo and nxt + n + 1 <= right
            self._emit_new(nxt, nxt + n, fin, now)
            self.last_send = now
        elif avail <= 0 and fo is not None and nxt == fo and nxt + 1 <= right:
            self._emit_new(nxt, nxt, True, now)
            self.last_send = now
        else:
            r = self._last_unsacked()
            if r is None:
                return
            self._mark_lost(r)            # pipe-neutral: retransmitted implies lost
            self._retransmit(r, now)
            retrans = True
        self.cx.stats.tlp_probes += 1
        self.tlp_end = self.snd_nxt_o
        self.tlp_retrans = retrans
        self.t_rtx = now + self._cur_rto()

    def _last_unsacked(self):
        q = self.rtxq
        i = len(q) - 1
        stop = i - SACK_WALK_BUDGET
        while i >= 0 and i > stop:
            r = q[i]
            if not r.flags & (R_SACKED | R_RETRANS):
                return r
            i -= 1
        return None

    def _tlp_ack(self, ack_o, now):
        """RFC 8985 §7.4 (as Linux's tcp_process_tlp_ack): the episode ends when the
        ACK reaches the probe's end; a retransmitted probe answered by a DSACK repaired
        nothing; an ACK beyond it without one means the probe repaired a loss, and
        congestion control hears of it (cwnd reduced once)."""
        end = self.tlp_end
        if ack_o < end:
            return
        if not self.tlp_retrans or self.dsack_in:
            self.tlp_end = None
        elif ack_o > end:
            self.tlp_end = None
            if self.ca_state == CA_OPEN:
                cc = self.cc
                cc.on_recovery_enter(now, self.snd_nxt_o - self.snd_una_o)
                cc.on_recovery_exit(now)
                self.cx.stats.tlp_recoveries += 1

    def _on_probe_timer(self, now):
        if self.probe_kind == PROBE_TLP:
            self._on_tlp(now)
            return
        if self.rack_ts is None or self.cc is None:
            return
        if self._rack_detect(now) and self.ca_state == CA_OPEN:
            self._enter_recovery(now)
        self._xmit(now)

    # ---------------------------------------------------------------- SACK sender --
    def _sack_tag(self, blocks, ack_o):
        """Mark records covered by the peer's SACK blocks; returns segments newly SACKed.

        Bounded work per ACK (a hostile peer with a 64-byte MSS has ~4000 records out and
        may repeat four full-range blocks on every ACK): blocks are merged; what the
        previous ACK's blocks already covered (``sack_cache``, as Linux's
        recv_sack_cache) is not walked again; a walk visits at most SACK_WALK_BUDGET
        records and caches how far it got, so the next ACK (blocks repeat) goes on."""
        una = self.snd_una_o
        nxt = self.snd_nxt_o
        base = (self.iss + una) & MASK
        rng = []
        for blk in blocks[:4]:
            try:
                left, right = blk
            except (TypeError, ValueError):
                continue
            d = (left - base) & MASK
            if d >= HALF:
                continue                      # below snd_una: DSACK / stale
            lo = una + d
            ro = lo + ((right - left) & MASK)
            if ro <= lo or ro > nxt or lo < ack_o and ro <= ack_o:
                continue
            rng.append((lo, ro))
        if not rng:
            return 0
        if len(rng) > 1:
            rng.sort()
            merged = [rng[0]]
            for lo, ro in rng[1:]:
                plo, pro = merged[-1]
                if lo <= pro:
                    if ro > pro:
                        merged[-1] = (plo, ro)
                else:
                    merged.append((lo, ro))
            rng = merged
        cache = self.sack_cache
        new_cache = []
        q = self.rtxq
        nq = len(q)
        budget = SACK_WALK_BUDGET
        newly = 0
        hs0 = self.high_sacked_o
        now = self.cx.now
        for lo, ro in rng:
            # the parts of [lo, ro) the previous ACK's blocks did not cover
            pieces = []
            pos = lo
            for clo, cro in cache:
                if cro <= pos or clo >= ro:
                    continue
                if clo > pos:
                    pieces.append((pos, clo))
                if cro > pos:
                    pos = cro
            if pos < ro:
                pieces.append((pos, ro))
            done = ro
            for plo, pro in pieces:
                if budget <= 0:
                    done = plo
                    break
                a = _rec_after(q, plo)
                while a < nq:
                    r = q[a]
                    if r.start >= pro:
                        break
                    if budget <= 0:
                        done = r.start
                        break
                    budget -= 1
                    if r.start >= lo and r.end <= ro:
                        f = r.flags
                        if not f & R_SACKED:
                            ln = r.end - r.start
                            if f & R_EVER:
                                self._rack_update(r, now)
                            else:
                                if r.end < hs0:
                                    self.rack_reord = True     # delivered late
                                if self.frto and r.end <= self.recover_o:
                                    self.frto_orig = True      # F-RTO: sent before the RTO
                                rts = self.rack_ts
                                if rts is None or r.ts > rts or \
                                        (r.ts == rts and r.end > self.rack_end):
                                    self.rack_ts = r.ts
                                    self.rack_end = r.end
                                    self.rack_rtt = now - r.ts
                            self.sacked_out += ln
                            if f & R_LOST:
                                self.lost_out -= ln
                            if f & R_RETRANS:
                                self.retrans_out -= ln
                            r.flags = (f | R_SACKED) & ~(R_LOST | R_RETRANS)
                            newly += 1
                            if r.end > self.high_sacked_o:
                                self.high_sacked_o = r.end
                    a += 1
                if done != ro:
                    break
            if done > lo:
                new_cache.append((lo, done))
        self.sack_cache = new_cache
        self.cx.stats.sack_walked += SACK_WALK_BUDGET - budget
        return newly

    def _sack_loss_check(self, new_sacked, advanced, now):
        """After an ACK with SACK blocks: enter recovery on a loss RACK finds by time
        (with ``rack=False``: on RFC 6675's IsLost(HighACK+1)); in recovery, mark what
        is lost (RACK, or RFC 6675's DupThresh rule with ``rack=False``).  RACK runs only when the ACK
        delivered something: otherwise its answer is the last one, and the reordering
        timer covers the passing of time (so repeated blocks cost no walk)."""
        rack = self.cfg.rack and self.rack_ts is not None and (new_sacked or advanced)
        if self.ca_state == CA_OPEN:
            # with RACK on, no DupThresh trigger (neither duplicate ACKs nor IsLost):
            # RACK alone starts recovery, as Linux since 5.10 (tcp_recovery = 1:
            # RACK *or* RFC 6675).  Its reordering window is 0 once three segments
            # are SACKed while no reordering was seen, so on a path that does not
            # reorder it reacts as fast as DupThresh; on one that does, it waits
            # reo_wnd instead of retransmitting a segment that is only late.
            if self.cfg.rack:
                if rack and self._rack_detect(now):
                    self._enter_recovery(now)
            elif new_sacked and self._sack_is_lost_head():
                self._enter_recovery(now)
        elif rack:
            self._rack_detect(now)
        elif new_sacked:
            self._sack_mark_lost()

    def _sack_is_lost_head(self):
        """RFC 6675 IsLost(HighACK+1)."""
        q = self.rtxq
        if not q or q[0].flags & R_SACKED:
            return False
        lim = (DUPTHRESH - 1) * self.mss
        if self.sacked_out > lim:
            return True                   # every SACKed byte lies above the head
        cnt = 0
        walked = 0
        for r in q:
            walked += 1
            if walked > SACK_WALK_BUDGET:
                break
            if r.flags & R_SACKED:
                cnt += 1
                if cnt >= DUPTHRESH:
                    self.cx.stats.sack_walked += walked
                    return True
        self.cx.stats.sack_walked += walked
        return False

    def _sack_mark_lost(self):
        """RFC 6675 IsLost(): a hole with DupThresh SACKed segments (or more than
        (DupThresh-1)*SMSS SACKed bytes) above it is lost.  The walk starts at the
        highest SACKed record (nothing above it can be lost) and visits at most
        SACK_WALK_BUDGET records."""
        q = self.rtxq
        a = _rec_after(q, self.high_sacked_o)
        i = a - 1
        cnt = 0
        sb = 0
        lim = (DUPTHRESH - 1) * self.mss
        stop = i - SACK_WALK_BUDGET
        if stop < -1:
            stop = -1
        while i > stop:
            r = q[i]
            f = r.flags
            if f & R_SACKED:
                cnt += 1
                sb += r.end - r.start
            elif cnt >= DUPTHRESH or sb > lim:
                if f & R_LOST:
                    break                 # everything below is already marked
                self._mark_lost(r)
            i -= 1
        self.cx.stats.sack_walked += a - 1 - i

    # ================================================================= sending ====
    def _xmit(self, now, force=False):
        """Transmit what cwnd, the peer's window, Nagle and SWS avoidance allow:
        lost segments first (RFC 6675 NextSeg rule 1), then new data, then FIN."""
        cc = self.cc
        if cc is None:
            return
        mss = self.mss
        cwnd = cc.cwnd
        # pacing: new data may leave only ``pb`` bytes now (-1: not pacing); the burst
        # transmitter runs only when the whole cwnd fits in the quantum (a LAN path)
        pb = -1
        rate = 0.0
        if self.cfg.pacing and not force:
            rate = self._pace_rate()
            if rate > 0.0:
                pb = self._pace_budget(now, rate)
        nxt0 = self.snd_nxt_o
        tso = self.cx.tso
        if tso is not None and not force and (pb < 0 or pb >= cwnd):
            tso(self, now)             # fpd.fastpath.xmit_burst: full segments as one item
        sent = False
        # ---- retransmissions (none in F-RTO's step 3: new data goes first) ----
        if self.lost_out > self.retrans_out and self.frto != FRTO_NEW:
            q = self.rtxq
            a = _rec_after(q, self.rtx_scan)
            nq = len(q)
            while a < nq and self.lost_out > self.retrans_out:
                r = q[a]
                f = r.flags
                if f & R_LOST and not f & (R_RETRANS | R_SACKED):
                    ln = r.end - r.start
                    fl = self._in_flight()
                    if fl and cwnd - fl < ln:
                        self.cwnd_lim_o = self.snd_nxt_o
                        break
                    self._retransmit(r, now)
                    sent = True
                self.rtx_scan = r.end
                a += 1
            if self.lost_out > self.retrans_out:
                if a >= nq:
                    self._recount()
                if self.lost_out > self.retrans_out:
                    if sent and self.t_rtx is None:
                        self.t_rtx = now + self._cur_rto()
                    return
        # ---- new data ----
        if self.snd_nxt_o == self.snd_una_o and now - self.last_send > self._cur_rto() \
                and self.ca_state == CA_OPEN and self.last_send != self.created:
            # RFC 5681 §4.1: restart window after an idle period
            iw = self.cfg.init_cwnd * mss
            cc.on_idle(now, iw if iw < cwnd else cwnd)
            cwnd = cc.cwnd
        fo = self.fin_o
        window_blocked = False
        drained = False
        paced = False
        if pb >= 0:
            pb -= self.snd_nxt_o - nxt0        # what the burst transmitter sent
            nxt0 = self.snd_nxt_o
        while True:
            nxt = self.snd_nxt_o
            so = self.sndq_o
            dend = so + len(self.sndq)
            avail = dend - nxt
            right = self.snd_una_o + self.snd_wnd
            if avail <= 0:
                drained = fo is None or nxt > fo
                if fo is not None and nxt == fo:
                    # FIN alone
                    if nxt + 1 > right and not force:
                        window_blocked = True
                        break
                    fl = self._in_flight()
                    if fl and cwnd - fl < 1:
                        break
                    self._emit_new(nxt, nxt, True, now)
                    sent = True
                break
            n = avail if avail < mss else mss
            room = right - nxt
            if n > room:
                if room <= 0 or (room < mss and 2 * room < self.max_snd_wnd and not force):
                    window_blocked = True
                    break
                n = room
                force = False
            fl = self._in_flight()
            if fl and cwnd - fl < n:
                self.cwnd_lim_o = nxt
                break
            if n < mss and n == avail and not self.nodelay and fo is None and \
                    self.snd_sml_o > self.snd_una_o:
                break                          # Nagle (Minshall's variant, as Linux)
            if pb >= 0:
                if n > pb:
                    paced = True               # the quantum is spent: resume at t_pace
                    break
                pb -= n
            fin = fo is not None and nxt + n == fo and nxt + n + 1 <= right
            self._emit_new(nxt, nxt + n, fin, now)
            sent = True
            if fin:
                break
        if rate > 0.0:
            self._paced(now, rate, self.snd_nxt_o - nxt0, paced)
        if drained and not sent and self.ca_state == CA_RECOVERY and self.sack_ok and \
                self.snd_una_o > self.rescue_o and self.cfg.rack:
            # RFC 6675 NextSeg rule 4: nothing lost to resend and nothing new to send,
            # but the window has room: one rescue retransmission per recovery, of the
            # highest outstanding unSACKed segment (a tail loss IsLost cannot see)
            fl = self._in_flight()
            r = self._last_unsacked() if cwnd - fl >= mss else None
            if r is not None and not r.flags & R_LOST:
                self.rescue_o = self.recover_o
                self._mark_lost(r)            # pipe-neutral: retransmitted implies lost
                self._retransmit(r, now)
                self.cx.stats.rescue_retransmits += 1
                sent = True
        if sent:
            self.last_send = now
            if self.t_rtx is None:
                self.t_rtx = now + self._cur_rto()
            if self.sack_ok and self.ca_state == CA_OPEN:
                self._arm_pto(now)
        if window_blocked and self.snd_nxt_o == self.snd_una_o and self.t_persist is None:
            # nothing in flight will bring an ACK: probe the window (persist timer)
            self.t_persist = now + self._persist_intv()

    def _pace_rate(self):
        """The pacing rate in bytes/s (Linux's tcp_update_pacing_rate): ratio x
        max(cwnd, in flight, 2 segments) / SRTT, the ratio 2 in slow start (cwnd <
        ssthresh / 2) and 1.2 after.  0.0 (no pacing) before the first RTT sample: the
        handshake gives one (the SYN-ACK's, or the ACK of ours), so IW10 is paced."""
        srtt = self.srtt
        cc = self.cc
        if srtt is None or srtt <= 0.0 or cc is None:
            return 0.0
        c = cc.cwnd
        fl = self._in_flight()
        if fl > c:
            c = fl
        m2 = 2 * self.mss
        if c < m2:
            c = m2
        r = _cc.PACE_SS_RATIO if cc.cwnd < cc.ssthresh // 2 else _cc.PACE_CA_RATIO
        return r * c / srtt

    def _pace_budget(self, now, rate):
        """Bytes of new data pacing lets out at ``now``: a quantum of max(2 segments,
        rate x PACE_QUANTUM_T) less the schedule's debt (what was sent ahead of the
        rate); a token bucket of one quantum.  Never below 0 while a debt remains;
        a whole quantum once it is paid, so a deadline at pace_next always sends."""
        q = rate * _cc.PACE_QUANTUM_T
        m2 = 2 * self.mss
        if q < m2:
            q = m2
        debt = self.pace_next - now
        if debt <= 0.0:
            return int(q)
        b = int(q - debt * rate)
        return b if b > 0 else 0

    def _paced(self, now, rate, nbytes, blocked):
        """After _xmit sent ``nbytes`` of new data under pacing: advance the schedule
        by nbytes / rate; ``blocked`` (data was held back by the quantum): the pacing
        deadline at pace_next, when a whole quantum is available again."""
        t = self.pace_next
        if t < now:
            t = now
        if nbytes > 0:
            t += nbytes / rate
            self.pace_next = t
        if blocked:
            self.t_pace = t
            self.cx.stats.paced_waits += 1

    def _recount(self):
        """Recompute scoreboard totals from the queue (a safety net, never hot)."""
        sk = lo = rt = 0
        for r in self.rtxq:
            f = r.flags
            ln = r.end - r.start
            if f & R_SACKED:
                sk += ln
            else:
                if f & R_LOST:
                    lo += ln
                if f & R_RETRANS:
                    rt += ln
        self.sacked_out = sk
        self.lost_out = lo
        self.retrans_out = rt
        self.rtx_scan = self.snd_una_o
        self.cx.stats.scoreboard_recounts += 1

    def _persist_intv(self):
        r = self.rto * (1 << self.persist_n) if self.persist_n < 31 else self.cfg.rto_max
        m = self.cfg.rto_max
        return r if r < m else m

    def _emit_new(self, start, end, fin, now):
        self._emit_range(start, end, fin, now, False)
        flags = R_FIN if fin else 0
        e = end + 1 if fin else end
        self.rtxq.append(_Rec(start, e, flags, now))
        self.snd_nxt_o = e
        n = end - start
        self.bytes_out += n
        if n < self.mss:
            self.snd_sml_o = e

    def _emit_range(self, start, end, fin, now, rtx):
        """Send sequence range [start, end) (+FIN) from the send queue."""
        if start == 0:
            # the SYN itself
            self._send_syn(now)
            self.syn_rtx += 1
            return
        if fin and end > start and end == self.fin_o + 1:
            end -= 1       # record end includes the FIN
        so = self.sndq_o
        if end > start:
            with memoryview(self.sndq) as mv:
                payload = bytes(mv[start - so:end - so])
            flags = ACK | PSH if end == so + len(self.sndq) else ACK
        else:
            payload = b""
            flags = ACK
        if fin:
            flags |= FIN
        cx = self.cx
        cx.out.append(self._mkseg((self.iss + start) & MASK, flags, payload, now))
        cx.stats.segs_out += 1

    # ================================================================= receiving ====
    def _rcv_data(self, seq_o, payload, plen, fin, now):
        cx = self.cx
        rn = self.rcv_nxt_o
        if seq_o < rn:
            cut = rn - seq_o
            if self.sack_ok and self.cfg.dsack:
                self.dsack = (seq_o, rn)
            self.dup_bytes_in += cut
            payload = payload[cut:]
            plen -= cut
            seq_o = rn
        right = self.rcv_adv_o if self.rcv_adv_o > rn else rn
        if self.ooo_fin_o is not None and right > self.ooo_fin_o:
            right = self.ooo_fin_o
        if seq_o + plen > right:
            k = right - seq_o
            if k < 0:
                k = 0
            payload = payload[:k]
            plen = k
            fin = 0
            self.ack_now = True
            cx.stats.rcv_wnd_trims += 1
        if plen and self.closed_by_app:
            # data for a connection the application closed: reset (as Linux)
            cx.stats.aborts_on_data += 1
            self._send_rst_now(now)
            self.destroy(None)
            return
        if plen > self.rcv_mss:
            self.rcv_mss = plen if plen < self.cfg.mss else self.cfg.mss
        if seq_o == rn:
            fin_at = rn + plen if fin else None
            if plen:
                self.rcvq.append(payload)
                rn += plen
                self.bytes_in += plen
                if self.ooo:
                    rn = self._ooo_drain(rn)
                    self.ack_now = True
                self.rcv_nxt_o = rn
                if not self.rd_pending and not self.closed_by_app:
                    self.rd_pending = True
                    cx.events.append((_EV_READABLE, self))
                self._ack_rule(rn)
            if fin_at is not None:
                if fin_at == self.rcv_nxt_o:
                    self._rcv_fin(now)
            elif self.ooo_fin_o is not None and self.ooo_fin_o == self.rcv_nxt_o:
                self._rcv_fin(now)
        else:
            # out of order
            if plen:
                self._ooo_insert(seq_o, payload)
            if fin:
                self.ooo_fin_o = seq_o + plen
            self.ack_now = True

    def _ack_rule(self, rn):
        """In-order data arrived up to ``rn``: ACK at once in quick-ACK mode (the first
        ``quickack`` segments) or when more than one full segment is unacknowledged
        (RFC 5681 §4.2), else delay it (RFC 9293 §3.8.6.3).  Fast and slow path."""
        if self.quick > 0:
            self.quick -= 1
            self.ack_now = True
        elif rn - self.rcv_wup_o > self.rcv_mss:
            self.ack_now = True
        else:
            self.ack_pending = True

    def _rcv_fin(self, now):
        self.ooo_fin_o = None
        self.rcv_nxt_o += 1
        self.fin_rcvd = True
        self.ack_now = True
        if self.ooo:
            self.ooo = []
            self.ooo_bytes = 0
        if not self.closed_by_app:
            self._event(_EV_PEER_CLOSED)
        if self.state == FIN_WAIT_1 and self.fin_o is not None and self.snd_una_o > self.fin_o:
            self._move(FIN_ACKED, now)       # (our FIN's ACK came with this FIN)
        if TRANSITIONS.get((self.state, FIN_IN)) == TIME_WAIT:
            self._send_ack(now)
        self._move(FIN_IN, now)

    def _ooo_insert(self, s, data):
        cx = self.cx
        ooo = self.ooo
        e = s + len(data)
        self.ooo_stamp += 1
        stamp = self.ooo_stamp
        n = len(ooo)
        if n:
            last = ooo[-1]
            lend = last[0] + len(last[1])
            if s == lend:
                last[1] += data
                last[2] = stamp
                self.ooo_bytes += e - s
                cx.stats.ooo_queued += 1
                return
        # first entry whose end reaches s (adjacent entries merge)
        i = 0
        while i < n and ooo[i][0] + len(ooo[i][1]) < s:
            i += 1
        j = i
        while j < n and ooo[j][0] <= e:
            j += 1
        if i == j:
            if n >= self.cfg.ooo_max_blocks:
                cx.stats.ooo_dropped += 1
                return
            ooo.insert(i, [s, bytearray(data), stamp])
            self.ooo_bytes += e - s
            cx.stats.ooo_queued += 1
            return
        first = ooo[i]
        lastent = ooo[j - 1]
        ms = s if s < first[0] else first[0]
        le = lastent[0] + len(lastent[1])
        me = e if e > le else le
        if ms == first[0] and me == le and j == i + 1:
            # fully covered by one existing block: duplicate
            if self.sack_ok and self.cfg.dsack:
                self.dsack = (s, e)
            self.dup_bytes_in += e - s
            first[2] = stamp
            return
        buf = bytearray()
        pos = ms
        old = 0
        for k in range(i, j):
            ent = ooo[k]
            es = ent[0]
            if es > pos:
                buf += data[pos - s:es - s]
            buf += ent[1]
            old += len(ent[1])
            pos = es + len(ent[1])
        if me > pos:
            buf += data[pos - s:me - s]
        ooo[i:j] = [[ms, buf, stamp]]
        self.ooo_bytes += len(buf) - old
        cx.stats.ooo_queued += 1

    def _ooo_drain(self, rn):
        ooo = self.ooo
        k = 0
        n = len(ooo)
        while k < n:
            s, data, _ = ooo[k]
            if s > rn:
                break
            e = s + len(data)
            if e > rn:
                self.rcvq.append_owned(data[rn - s:] if s < rn else data)
                self.bytes_in += e - rn
                rn = e
            self.ooo_bytes -= len(data)
            k += 1
        if k:
            del ooo[:k]
        return rn

    def _read_done(self):
        """The application consumed bytes: send a window update if it is worth it."""
        if self.state not in _RECEIVING:
            return
        if self.rcvbuf < self.cfg.rcvbuf_max:
            self._rcv_space_adjust()
        free = self.rcvbuf - self.rcvq.n
        cap = 65535 << self.rcv_shift
        if free > cap:
            free = cap
        cur = self.rcv_adv_o - self.rcv_nxt_o
        if cur < 0:
            cur = 0
        if free - cur >= self.sws_thresh and (cur < self.sws_thresh or free >= 2 * cur):
            now = self.cx.now
            self._send_ack(now)
            self.schedule()

    # ========================================================= buffer autotuning ====
    def _rcv_space_adjust(self):
        """Receive-buffer autotuning (Linux's dynamic right-sizing, tcp_rcv_space_adjust),
        run on each read.  Once per receive RTT (the smaller of SRTT, if at least 4 ms:
        timestamps count whole ms, and ``rr_rtt``, the receive-side estimate), but over at least RS_MIN_INTERVAL (a reader that takes
        its data in bursts, as the daemon's delivery into a client's 256 KiB RX ring, is
        measured at its average rate, not a burst's), what the application read, scaled
        to one RTT, sets the buffer, and so the window, to twice that
        plus 16 segments, up to twice that again while the rate still grows (slow start
        doubles it every RTT), never beyond ``rcvbuf_max``, what the window can say, or
        the stack's ``buf_mem_max``.  It grows only when the application kept up: some read
        in the measurement emptied the queue.  A reader slower than the peer leaves bytes
        queued at every read; a larger window would only queue more of them (and a queue
        of MiBs in one bytearray costs CPU per byte, docs/PERFORMANCE.md, stop 17), not
        deliver faster.  The buffer never shrinks while the connection lives."""
        now = self.cx.now
        q = self.rcvq.n
        # the receive-side RTT (Linux's tcp_rcv_rtt_measure, the no-timestamp method):
        # the time from offering a window to having received all of it, the smallest
        # sample kept; checked when the application reads, so a sample may be late by
        # the gap between reads, which the minimum filters out
        rn = self.rcv_nxt_o
        t = self.rr_t
        if t is None or rn >= self.rr_seq:
            if t is not None:
                smp = now - t
                rr = self.rr_rtt
                if rr is None or smp < rr:
                    self.rr_rtt = smp if smp > 1e-5 else 1e-5
            # all of the window to come must be offered after now (beyond the edge
            # advertised so far): the sample then spans at least one round trip
            edge = rn + self.rcvbuf - q
            if edge > self.rcv_adv_o:
                self.rr_seq = edge
                self.rr_t = now
            else:
                self.rr_t = None
        rtt = self.srtt                 # timestamp samples: whole ms, say little below 4 ms
        if rtt is not None and rtt < 4 * CLOCK_G:
            rtt = None
        rr = self.rr_rtt                # the stack's clock
        if rtt is None or (rr is not None and rr < rtt):
            rtt = rr
        if rtt is None:
            return
        read = self.bytes_in - q
        t0 = self.rs_t0
        if t0 is None:
            self.rs_t0 = now
            self.rs_b0 = read
            self.rs_drained = not q
            return
        if not q:
            self.rs_drained = True
        el = now - t0
        if el < rtt or el < RS_MIN_INTERVAL:
            return
        copied = read - self.rs_b0
        drained = self.rs_drained
        self.rs_t0 = now
        self.rs_b0 = read
        self.rs_drained = not q
        copied = int(copied * rtt / el)           # the rate, per one RTT
        if not drained:
            return
        prev = self.rs_space
        if copied <= prev:
            return
        self.rs_space = copied
        target = 2 * copied + 16 * self.rcv_mss
        # while the rate still grows by a quarter or more, room for the next RTT too
        # (Linux's rule before 4.19: x1.5 from +25 %, x2 from +50 %); smaller rises are
        # noise in the measured rate and earn nothing, so noise does not ratchet
        if prev and 4 * copied >= 5 * prev:
            target += target if 2 * copied >= 3 * prev else target >> 1
        cap = 65535 << self.rcv_shift            # no use beyond what the window can say
        if target > cap:
            target = cap
        if target > self.rcvbuf:
            self.rcvbuf += self._buf_grant(target - self.rcvbuf, self.rcvbuf,
                                           self.cfg.rcvbuf_max)

    def _grow_sndbuf(self):
        """Send-buffer autotuning (Linux's tcp_sndbuf_expand): room for twice the
        congestion window (one window in flight, one queued behind it), up to
        ``sndbuf_max`` and the stack's ``buf_mem_max``."""
        cc = self.cc
        if cc is None:
            return
        target = 2 * max(cc.cwnd, self.snd_wnd if self.snd_wnd < cc.cwnd else cc.cwnd)
        if target > self.sndbuf:
            self.sndbuf += self._buf_grant(target - self.sndbuf, self.sndbuf,
                                           self.cfg.sndbuf_max)

    def _buf_grant(self, want, cur, cap):
        if cur + want > cap:
            want = cap - cur
        cx = self.cx
        left = self.cfg.buf_mem_max - cx.buf_extra
        if want > left:
            want = left
        if want <= 0:
            return 0
        cx.buf_extra += want
        self.buf_extra += want
        return want

    def _release_bufs(self):
        """Give the autotuned growth back to the stack's budget (TIME_WAIT and CLOSED
        hold no data); the sizes stay readable in info()."""
        if self.buf_extra:
            self.cx.buf_extra -= self.buf_extra
            self.buf_extra = 0

    # =================================================================== timers ====
    def on_timer(self, now):
        t = self.t_tw
        if t is not None and t <= now:
            self.t_tw = None
            if self.state == TIME_WAIT:
                self.destroy(None)
                return
            if self.state == FIN_WAIT_2:
                self._send_rst_now(now)
                self.destroy(None)
                return
        t = self.t_probe
        if t is not None and t <= now:
            self.t_probe = None
            self._on_probe_timer(now)
            if self.state == CLOSED:
                return
        t = self.t_rtx
        if t is not None and t <= now:
            self.t_rtx = None
            self._on_rto(now)
            if self.state == CLOSED:
                return
        t = self.t_persist
        if t is not None and t <= now:
            self.t_persist = None
            self._on_persist(now)
            if self.state == CLOSED:
                return
        t = self.t_pace
        if t is not None and t <= now:
            self.t_pace = None
            if self.state in _SENDING:
                self._xmit(now)            # the pacing quantum is due: more new data
        t = self.t_dack
        if t is not None and t <= now:
            self.t_dack = None
            if self.ack_pending and self.state != CLOSED:
                self.cx.stats.delayed_acks += 1
                self._send_ack(now)
        t = self.t_ka
        if t is not None and t <= now:
            self.t_ka = None
            self._on_keepalive(now)

    def _on_rto(self, now):
        q = self.rtxq
        if not q:
            return
        st = self.state
        cx = self.cx
        cfg = self.cfg
        cx.stats.rto_timeouts += 1
        if st in (SYN_SENT, SYN_RECEIVED):
            limit = cfg.syn_retries if st == SYN_SENT else cfg.synack_retries
            if self.syn_rtx >= limit:
                self.error = TimeoutError
                cx.stats.timeouts += 1
                self.destroy(_EV_TIMED_OUT)
                return
            self.backoff += 1
            self._send_syn(now)
            self.syn_rtx += 1
            self.retransmits += 1
            cx.stats.retransmits += 1
            q[0].flags |= R_EVER
            self.t_rtx = now + self._cur_rto()
            return
        if self.rto_count >= cfg.retries:
            self.frto = FRTO_OFF
            self.error = TimeoutError
            cx.stats.timeouts += 1
            self._send_rst_now(now)       # as FreeBSD's tcp_drop: tell the peer if it can hear
            self.destroy(_EV_TIMED_OUT)
            return
        self.t_probe = None
        self.tlp_end = None
        first = self.ca_state != CA_LOSS or self.rto_count == 0
        if first:
            self._undo_start()
        self.cc.on_rto(now, self.snd_nxt_o - self.snd_una_o, first)
        self.rto_count += 1
        if self._cur_rto() < cfg.rto_max:
            self.backoff += 1
        # Everything not SACKed is lost; the SACK scoreboard is kept (Linux's
        # tcp_timeout_mark_lost) unless the receiver reneged: then the segment at
        # SND.UNA is itself SACKed, and the SACK information is forgotten (RFC 2018 §8)
        reneged = self.sacked_out and q[0].flags & R_SACKED
        lost = sacked = 0
        for r in q:
            f = r.flags
            if f & R_SACKED and not reneged:
                sacked += r.end - r.start
                continue
            r.flags = (f & ~(R_SACKED | R_RETRANS)) | R_LOST
            lost += r.end - r.start
        self.sacked_out = sacked
        self.retrans_out = 0
        self.lost_out = lost
        if reneged:
            self.sack_cache = ()
        self.reno_dup = 0
        self.dupacks = 0
        # F-RTO step 1 (RFC 5682 §3.1): not when a recovery is under way (a fast
        # recovery, or an RTO recovery that F-RTO already judged real), only from the
        # open state or for the recurring timeouts of an episode it still watches (§3.2)
        cas = self.ca_state
        self.frto = FRTO_WAIT if cfg.frto and (cas == CA_OPEN or cas == CA_LOSS and
                                               self.frto) else FRTO_OFF
        self.frto_orig = False
        self.ca_state = CA_LOSS
        self.recover_o = self.snd_nxt_o
        self.rtx_scan = self.snd_una_o
        self.t_rtx = now + self._cur_rto()
        self._xmit(now)
        if self.t_rtx is None:
            self.t_rtx = now + self._cur_rto()

    def _on_persist(self, now):
        st = self.state
        if st not in _SENDING or self.cc is None:
            return
        cx = self.cx
        if self.probes_out >= self.cfg.retries:
            self.error = TimeoutError
            cx.stats.timeouts += 1
            self._send_rst_now(now)
            self.destroy(_EV_TIMED_OUT)
            return
        right = self.snd_una_o + self.snd_wnd
        if right > self.snd_nxt_o:
            self._xmit(now, force=True)        # SWS override: send what the window allows
        if self.snd_nxt_o == self.snd_una_o:
            cx.stats.window_probes += 1
            self._send_probe(now)
        self.persist_n += 1
        self.probes_out += 1
        if self.snd_nxt_o == self.snd_una_o and self.t_persist is None:
            self.t_persist = now + self._persist_intv()

    def _on_keepalive(self, now):
        if not self._keepalive or self.state not in (ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1,
                                                     FIN_WAIT_2):
            return
        if self.snd_nxt_o != self.snd_una_o:
            # data outstanding: the retransmission timer watches the connection
            self.t_ka = now + self.keepalive_idle
            return
        due = self.last_rcv + self.keepalive_idle
        if self.ka_probes == 0 and due > now:
            # (compare the deadline itself: now - last_rcv < idle can hold while
            # last_rcv + idle rounds to now, which re-armed the timer at now forever)
            self.t_ka = due
            return
        cx = self.cx
        if self.ka_probes >= self.keepalive_count:
            self.error = TimeoutError
            cx.stats.timeouts += 1
            self._send_rst_now(now)
            self.destroy(_EV_TIMED_OUT)
            return
        self.ka_probes += 1
        cx.stats.keepalive_probes += 1
        self._send_probe(now)
        self.t_ka = now + self.keepalive_interval


def _stamp_key(ent):
    return ent[2]


# --- the compiled build of this module -----------------------------------------------------
# setup.py compiles this file with Cython (pure-Python mode; fpd/_tcp_c.pxd makes Context,
# _Rec and Connection extension types with typed fields) into fpd._tcp_c. Imported as
# fpd.tcp, this module then hands out the compiled classes under the same names, so every
# importer (fpd.stack, fpd.fastpath, fpd.loopback ...) gets one consistent build; the
# Python ones stay here as PyContext / PyRec / PyConnection (the reference the tests run
# too). FPD_COMPILED=0 or FPD_PURE_PYTHON=1, a build without Cython, or a build from
# another version of this file or of fpd/_tcp_c.pxd (their sha256 differs: edited since
# the last `pip install -e .`): the Python classes run, and IMPL / WHY say so (``fpd
# doctor``). fpd.builds.load makes that decision for every compiled module.
PyContext, PyRec, PyConnection = Context, _Rec, Connection
IMPL = "python"
WHY = ""
_compiled = None
#: the files fpd._tcp_c is built from (setup.py hashes the same list into BUILT_FROM)
SOURCES = ("tcp.py", "_tcp_c.pxd")
if __name__ == "fpd.tcp":
    from . import builds as _builds
    _compiled, WHY = _builds.load("_tcp_c", SOURCES)
    if _compiled is not None:
        globals().update(Context=_compiled.Context, _Rec=_compiled._Rec,
                         Connection=_compiled.Connection)
        IMPL = "compiled"


def use_build(impl):
    """Tests and benchmarks: from now on fpd.tcp, fpd.stack and fpd.fastpath hand out the
    classes of ``impl`` ("python", or "compiled" when IMPL is): stacks made afterwards
    run on it (connections already made keep their class). Returns the build it replaced."""
    import sys as _sys
    g = globals()
    old = "compiled" if _compiled is not None and g["Connection"] is _compiled.Connection \
        else "python"
    if impl == "compiled":
        if _compiled is None:
            raise RuntimeError(f"fpd._tcp_c does not run: {WHY}")
        cls = {"Context": _compiled.Context, "_Rec": _compiled._Rec,
               "Connection": _compiled.Connection}
    elif impl == "python":
        cls = {"Context": PyContext, "_Rec": PyRec, "Connection": PyConnection}
    else:
        raise ValueError(impl)
    g.update(cls)
    for name in ("fpd.stack", "fpd.fastpath", "fpd._fastpath_c", "fpd.loopback"):
        mod = _sys.modules.get(name)
        if mod is not None:
            for k, v in cls.items():
                if k in vars(mod):
                    setattr(mod, k, v)
    return old


if __name__ == "fpd._tcp_c":
    BUILT_FROM = FPD_SRC_HASH.decode()    # noqa: F821 (a C macro: see fpd/_tcp_c.pxd)
    # one Event class for both builds (events compare by identity in the loops)
    import sys as _sys
    _py = _sys.modules.get("fpd.tcp")
    if _py is None:
        import importlib as _importlib
        _py = _importlib.import_module("fpd.tcp")
    globals().update({k: v for k, v in vars(_py).items()
                      if k == "Event" or k.startswith(("EV_", "_EV_"))})
