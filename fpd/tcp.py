"""One TCP connection's state machine (sans-IO: no sockets, no threads, no clock).

A ``Connection`` is created and driven by ``fpd.stack.Stack``: the stack demultiplexes
inbound segments to ``Connection._input`` and fires timers through ``Connection._on_timer``.
Segments the connection wants to transmit go into the stack's output list; application
events go into the stack's event list.  See docs/ENGINE.md for the model.

Sequence numbers.  On the wire they are 32-bit and wrap; inside a connection every
position is kept as an unbounded *offset* from the initial sequence number (send side:
offset 0 is our SYN, data byte i is offset 1+i; receive side: the same from IRS).  Only
the boundary converts (``seq_diff``), so all window, scoreboard and reassembly logic is
plain integer comparison and never sees wraparound.
"""

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
EV_CONNECTED = "connected"        # (EV_CONNECTED, conn)             active open completed
EV_ACCEPTED = "accepted"          # (EV_ACCEPTED, listener, conn)    passive open completed
EV_READABLE = "readable"          # (EV_READABLE, conn)              new in-order bytes
EV_WRITABLE = "writable"          # (EV_WRITABLE, conn)              send space after a short send
EV_PEER_CLOSED = "peer_closed"    # (EV_PEER_CLOSED, conn)           FIN received in order
EV_RESET = "reset"                # (EV_RESET, conn)                 RST from the peer
EV_TIMED_OUT = "timed_out"        # (EV_TIMED_OUT, conn)             retransmissions/keepalive gave up
EV_REFUSED = "refused"            # (EV_REFUSED, conn)               RST answering our SYN
EV_CLOSED = "closed"              # (EV_CLOSED, conn)                gone, resources freed (last event)

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

DUPTHRESH = 3
PAWS_IDLE = 24 * 24 * 3600.0    # RFC 7323 §5.5: ts_recent invalid after 24 days idle
CLOCK_G = 0.001                 # timestamp / RTT clock granularity (s)
MIN_SND_MSS = 64                # floor on the peer's MSS (a tiny MSS is a memory attack)


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


class Connection:
    """One TCP connection.  Create through ``Stack.connect`` / ``Stack.listen`` only."""

    __slots__ = (
        "stack", "cfg", "listener", "local", "remote", "_la", "_lp", "_ra", "_rp", "state",
        "passive", "announced", "closed_by_app", "wr_shut", "error", "nodelay", "cc",
        # send side
        "iss", "snd_una_o", "snd_nxt_o", "snd_wnd", "max_snd_wnd", "snd_wl1_o", "snd_wl2_o",
        "snd_shift", "flight_dup1", "sndq", "sndq_o", "sndq_a", "sndbuf", "fin_o", "rtxq", "sacked_out", "lost_out",
        "retrans_out", "reno_dup", "rtx_scan", "dupacks", "ca_state", "recover_o",
        "mss", "peer_mss", "snd_sml_o", "cwnd_lim_o", "last_send", "high_sacked_o",
        # receive side
        "irs", "rcv_nxt_o", "rcv_adv_o", "rcv_wup_o", "rcv_shift", "rcvq", "rcvbuf",
        "ooo", "ooo_bytes", "ooo_stamp", "ooo_fin_o", "fin_rcvd", "rcv_mss", "dsack",
        "ack_pending", "ack_now", "ack_queued", "quick", "sws_thresh",
        # options
        "ts_ok", "sack_ok", "ws_ok", "ts_off", "ts_recent", "ts_recent_stamp",
        # rtt / timers
        "srtt", "rttvar", "rto", "backoff", "rto_count", "syn_rtx", "t_rtx", "t_persist", "t_dack",
        "t_ka", "t_tw", "_heap_at", "persist_n", "probes_out", "ka_probes", "last_rcv", "oow_last", "ca_start", "ca_count",
        "_keepalive", "keepalive_idle", "keepalive_interval", "keepalive_count",
        # events
        "_rd_ev", "_wr_want",
        # statistics
        "retransmits", "bytes_in", "bytes_out", "bytes_acked", "segs_in", "segs_out",
        "dup_bytes_in", "created",
    )

    def __init__(self, stack, cfg, la, lp, ra, rp, now):
        self.stack = stack
        self.cfg = cfg
        self.listener = None
        self.local = (la, lp)
        self.remote = (ra, rp)
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
        # receive
        self.irs = 0
        self.rcv_nxt_o = 0
        self.rcv_adv_o = 0
        self.rcv_wup_o = 0
        self.rcv_shift = 0
        self.rcvq = bytearray()
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
        self.rto = cfg.rto_initial
        self.backoff = 0
        self.rto_count = 0
        self.syn_rtx = 0
        self.t_rtx = None
        self.t_persist = None
        self.t_dack = None
        self.t_ka = None
        self.t_tw = None
        self._heap_at = None
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
        self._rd_ev = False
        self._wr_want = False
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
    def readable(self):
        return len(self.rcvq)

    @property
    def writable(self):
        if self.wr_shut or self.state in (CLOSED, TIME_WAIT) or self.error is not None:
            return 0
        f = self.sndbuf - (self.sndq_o + len(self.sndq) - self.sndq_a)
        return f if f > 0 else 0

    @property
    def eof(self):
        return self.fin_rcvd and not self.rcvq

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
        self._sched()

    def send(self, data, now):
        """Queue bytes for transmission; returns how many were accepted (0 if the send
        buffer is full).  Raises BrokenPipeError after shutdown/close, or the error
        that ended the connection (ConnectionResetError, TimeoutError, ...)."""
        self.stack._now = now
        if self.error is not None:
            raise self.error("connection " + self._errname())
        if self.wr_shut:
            raise BrokenPipeError("send after shutdown/close")
        st = self.state
        if st not in _SENDING and st not in (SYN_SENT, SYN_RECEIVED):
            raise ConnectionError(f"connection not sendable in state {st}")
        n = len(data)
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
        if not q:
            return b""
        if max_bytes < 0 or max_bytes >= len(q):
            data = bytes(q)
            q.clear()
        else:
            with memoryview(q) as qv:          # one copy, not slice + bytes()
                data = bytes(qv[:max_bytes])
            del q[:max_bytes]
        self._read_done()
        return data

    def recv_into(self, buf):
        q = self.rcvq
        n = len(q)
        if not n:
            return 0
        mv = memoryview(buf)
        if len(mv) < n:
            n = len(mv)
        with memoryview(q) as qv:
            mv[:n] = qv[:n]
        del q[:n]
        self._read_done()
        return n

    def shutdown(self, now):
        """Half-close: send FIN after the queued data; receiving continues."""
        self.stack._now = now
        if self.wr_shut or self.error is not None:
            return
        st = self.state
        if st in (CLOSED, TIME_WAIT, LAST_ACK, CLOSING, FIN_WAIT_1, FIN_WAIT_2):
            return
        self.wr_shut = True
        self.fin_o = self.sndq_o + len(self.sndq)
        if st == ESTABLISHED:
            self._set_state(FIN_WAIT_1)
        elif st == CLOSE_WAIT:
            self._set_state(LAST_ACK)
        else:
            return      # SYN_SENT / SYN_RECEIVED: FIN goes out once established
        self._xmit(now)
        self._after_input(now)

    def close(self, now):
        """Shutdown and stop reading.  Unread data (or an unfinished handshake) resets the
        connection as Linux does.  The connection finishes in the background;
        EV_CLOSED is its last event."""
        self.stack._now = now
        st = self.state
        if st == CLOSED:
            return
        if self.closed_by_app:
            return
        self.closed_by_app = True
        if st == SYN_SENT:
            self._destroy(None)
            return
        if self.error is not None:
            self._destroy(None)
            return
        if self.rcvq or self.ooo:
            self.stack.stats.aborts_on_close += 1
            self._send_rst_now(now)
            self._destroy(None)
            return
        if st == FIN_WAIT_2:
            self.t_tw = now + self.cfg.fin_timeout
            self._sched()
            return
        self.shutdown(now)

    def abort(self, now):
        """Send RST now (if synchronized) and free the connection."""
        self.stack._now = now
        if self.state == CLOSED:
            return
        self.closed_by_app = True
        if self.state not in (SYN_SENT, TIME_WAIT):
            self._send_rst_now(now)
        self._destroy(None)

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
            "backoff": self.backoff, "retransmits": self.retransmits,
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
            "bytes_acked": self.bytes_acked, "segs_in": self.segs_in, "segs_out": self.segs_out,
            "unread": len(self.rcvq), "unsent": self.sndq_o + len(self.sndq) - self.snd_nxt_o
            if self.snd_nxt_o <= self.sndq_o + len(self.sndq) else 0,
            "send_queue": self.sndq_o + len(self.sndq) - self.sndq_a,
            "ooo_bytes": self.ooo_bytes, "ooo_blocks": len(self.ooo),
            "sacked_out": self.sacked_out, "lost_out": self.lost_out,
            "retrans_out": self.retrans_out,
            "timestamps": self.ts_ok, "sack": self.sack_ok, "wscale": self.ws_ok,
            "nodelay": self.nodelay, "keepalive": self._keepalive,
            "error": self._errname() if self.error else None,
        }

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

    def _sched(self):
        """Make sure the stack's timer heap has an entry at or before our earliest timer.
        Entries are lazy: a timer that moves later or is cancelled leaves its entry in
        place; Stack.next_deadline/tick re-validate entries as they surface."""
        t = self._earliest()
        if t is not None:
            h = self._heap_at
            if h is None:
                self._heap_at = t
                self.stack._push_timer(t, self)
            elif t < h:
                self._heap_at = t
                st = self.stack
                st._stale += 1
                st._push_timer(t, self)

    def _earliest(self):
        t = self.t_rtx
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
        return t

    def _set_state(self, new):
        old = self.state
        if old == new:
            return
        st = self.stack
        if old == SYN_RECEIVED and self.passive:
            st._half_open -= 1
            if self.listener is not None:
                self.listener.half_open -= 1
        elif old == TIME_WAIT:
            st._tw_count -= 1
        self.state = new
        if new == TIME_WAIT:
            st._tw_count += 1
        elif new == SYN_RECEIVED and self.passive:
            st._half_open += 1
            if self.listener is not None:
                self.listener.half_open += 1

    def _event(self, kind):
        self.stack._events.append((kind, self))

    def _destroy(self, ev):
        """Free the connection; ``ev`` is the reason event (if the app should see it)."""
        if self.state == CLOSED:
            return
        self._set_state(CLOSED)
        self.t_rtx = self.t_persist = self.t_dack = self.t_ka = self.t_tw = None
        if self._heap_at is not None:
            self._heap_at = None
            self.stack._stale += 1
        self.rtxq = []
        self.sndq = bytearray()
        self.sndq_o = self.sndq_a
        self.ooo = []
        self.ooo_bytes = 0
        self.sacked_out = self.lost_out = self.retrans_out = self.reno_dup = 0
        self.stack._remove(self)
        if self.announced:
            if ev is not None and not self.closed_by_app:
                self._event(ev)
            self._event(EV_CLOSED)

    # ------------------------------------------------------------ segment builders --
    def _wnd_field(self):
        """Window to advertise (already scaled); never moves the right edge left, and
        only moves it right by a worthwhile amount (receiver SWS avoidance)."""
        free = self.rcvbuf - len(self.rcvq)
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
            self.stack.stats.dsacks_sent += 1
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
                    self.stack.stats.sack_trimmed += 1
                    owe = True
                    if ds is not None and n == 0:
                        self.dsack = ds            # not reported yet
                        self.stack.stats.dsacks_sent -= 1
        else:
            sack = ()
        self._ack_fields_sent()
        if owe:
            self.ack_now = True
            if not self.ack_queued:
                self.ack_queued = True
                self.stack._acks.append(self)
        self.segs_out += 1
        return Segment(self._la, self._ra, self._lp, self._rp, seq,
                       (self.irs + self.rcv_nxt_o) & MASK, flags, self._wnd_field(), 0,
                       None, None, False, tsval, tsecr, sack, payload)

    def _send_ack(self, now):
        st = self.stack
        st._out.append(self._mkseg((self.iss + self.snd_nxt_o) & MASK, ACK, b"", now))
        st.stats.segs_out += 1

    def _send_probe(self, now):
        """Zero-window / keepalive probe: an old sequence number, no data (as Linux)."""
        st = self.stack
        st._out.append(self._mkseg((self.iss + self.snd_una_o - 1) & MASK, ACK, b"", now))
        st.stats.segs_out += 1

    def _challenge_ack(self, now):
        """RFC 5961 §7: at most ``challenge_ack_limit`` per second, per connection: a
        stack-wide budget is a side channel (CVE-2016-5696), one connection's challenge
        ACKs told an attacker how many another one had sent."""
        st = self.stack
        if now - self.ca_start >= 1.0:
            self.ca_start = now
            self.ca_count = 0
        if self.ca_count >= self.cfg.challenge_ack_limit:
            st.stats.challenge_acks_limited += 1
            return
        self.ca_count += 1
        st.stats.challenge_acks += 1
        self._send_ack(now)

    def _oow_ack(self, now):
        """ACK answering an unacceptable pure ACK: at most one per oow_interval (Linux)."""
        if now - self.oow_last >= self.cfg.oow_interval:
            self.oow_last = now
            self.stack.stats.oow_acks += 1
            self._send_ack(now)
        else:
            self.stack.stats.oow_acks_limited += 1

    def _send_rst_now(self, now):
        st = self.stack
        if self.state in (SYN_SENT, CLOSED):
            return
        seg = self._mkseg((self.iss + self.snd_nxt_o) & MASK, RST | ACK, b"", now)
        seg.wnd = 0
        st._out.append(seg)
        st.stats.segs_out += 1
        st.stats.rst_out += 1

    def _send_syn(self, now):
        """(Re)transmit our SYN (SYN_SENT) or SYN-ACK (SYN_RECEIVED)."""
        cfg = self.cfg
        st = self.stack
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
        st._out.append(Segment(self._la, self._ra, self._lp, self._rp, self.iss & MASK, ack,
                               flags, wnd, 0, cfg.mss, wscale, sack_ok, ts, tsecr, (), b""))
        st.stats.segs_out += 1

    # ================================================================ open paths ====
    def _open_active(self, now, iss, ts_off, rcv_shift):
        self.iss = iss
        self.ts_off = ts_off
        self.rcv_shift = rcv_shift
        self.announced = True
        self._set_state(SYN_SENT)
        self.snd_una_o = 0
        self.snd_nxt_o = 1
        self.rtxq.append(_Rec(0, 1, R_SYN, now))
        self._send_syn(now)
        self.t_rtx = now + self.rto
        self._sched()

    def _open_passive(self, seg, now, iss, ts_off, rcv_shift, listener):
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
        self._set_state(SYN_RECEIVED)
        self.snd_una_o = 0
        self.snd_nxt_o = 1
        self.rtxq.append(_Rec(0, 1, R_SYN, now))
        self._send_syn(now)
        self.t_rtx = now + self.rto
        self._sched()

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
        self.backoff = 0
        self.last_send = now
        self.last_rcv = now
        if self._keepalive or cfg.keepalive:
            self._keepalive = True
            self.t_ka = now + self.keepalive_idle
        self._set_state(ESTABLISHED)
        if self.wr_shut:
            self._set_state(FIN_WAIT_1)

    def _open_cookie(self, seg, now, iss, ts_off, rcv_shift, listener, mss, ws, sack):
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
        self.stack._events.append((EV_ACCEPTED, listener, self))

    # ==================================================================== input ====
    def _input(self, seg, now):
        """Process one inbound segment (the stack already matched the 4-tuple)."""
        self.segs_in += 1
        st = self.state
        # ---- fast path (header prediction, RFC 9293 §3.10.7.4 in its common case):
        # ESTABLISHED, in-sequence, only ACK/PSH, nothing out of order, no SACK blocks,
        # not in loss recovery, ACK within [SND.UNA, SND.NXT].  Anything else: slow path.
        if st is ESTABLISHED and seg.flags & 0x37 == ACK and not self.ooo and \
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
                    if rn <= self.rcv_wup_o:
                        self.ts_recent = tsval
                        self.ts_recent_stamp = now
                self.last_rcv = now
                self.ka_probes = 0
                if d:
                    self.dupacks = 0
                    self.probes_out = 0
                    self._ack_new(una + d, seg, now)
                ack_o = una + d
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
                    self.rcvq += payload
                    rn += plen
                    self.rcv_nxt_o = rn
                    self.bytes_in += plen
                    if not self._rd_ev:
                        self._rd_ev = True
                        self.stack._events.append((EV_READABLE, self))
                    if plen > self.rcv_mss:
                        self.rcv_mss = plen if plen < self.cfg.mss else self.cfg.mss
                    if self.quick > 0:
                        self.quick -= 1
                        self.ack_now = True
                    elif rn - self.rcv_wup_o > self.rcv_mss:
                        self.ack_now = True
                    else:
                        self.ack_pending = True
                if d or self.snd_nxt_o < self.sndq_o + len(self.sndq):
                    self._xmit(now)
                if self.ack_now:
                    # built when the caller takes the output (Stack._flush_acks): a
                    # burst of in-order segments gets one ACK, not one per two segments
                    if not self.ack_queued:
                        self.ack_queued = True
                        self.stack._acks.append(self)
                elif self.ack_pending and self.t_dack is None:
                    self.t_dack = now + self.cfg.delack
                return None            # Stack.input calls _sched()
        return self._input_slow(seg, now, st)

    def _input_slow(self, seg, now, st):
        if st == SYN_SENT:
            self._in_syn_sent(seg, now)
            return None
        if st == TIME_WAIT:
            return self._in_time_wait(seg, now)
        stack = self.stack
        flags = seg.flags
        seq = seg.seq
        tsval = seg.tsval
        self.last_rcv = now
        self.ka_probes = 0

        if st == SYN_RECEIVED and flags & SYN and not flags & RST:
            if seq == self.irs:
                if not flags & ACK:
                    # the peer did not get our SYN-ACK: send it again
                    if now - self.oow_last >= self.cfg.oow_interval:
                        self.oow_last = now
                        self._send_syn(now)
                    return None
                if ((seg.ack - self.iss - 1) & MASK) == 0:
                    # simultaneous open: the peer's SYN-ACK acknowledges our SYN
                    flags &= ~SYN
                    seq = (seq + 1) & MASK

        # ---- PAWS (RFC 7323 §5.3) ----
        if tsval is not None and self.ts_ok and not flags & RST:
            if ((tsval - self.ts_recent) & MASK) >= HALF and \
                    now - self.ts_recent_stamp < PAWS_IDLE:
                stack.stats.paws_drops += 1
                if seg.payload or flags & (FIN | SYN):
                    self._send_ack(now)
                else:
                    self._oow_ack(now)
                return None

        # ---- sequence acceptability (RFC 9293 §3.10.7.4, Linux's rcv_wup variant) ----
        rn = self.rcv_nxt_o
        d = (seq - self.irs - rn) & MASK
        if d >= HALF:
            d -= MOD
        seq_o = rn + d
        payload = seg.payload
        plen = len(payload)
        seglen = plen
        if flags & SYN:
            seglen += 1
        if flags & FIN:
            seglen += 1
        end_o = seq_o + seglen
        wnd = self.rcv_adv_o - rn
        if wnd < 0:
            wnd = 0
        if flags & RST:
            # RFC 5961 §3.2
            if seq_o == rn:
                stack.stats.rst_in += 1
                self._reset_by_peer(now)
            elif rn < seq_o < rn + (wnd if wnd else 1):
                self._challenge_ack(now)
            return None
        if end_o < self.rcv_wup_o or seq_o > rn + wnd:
            if flags & SYN:
                self._challenge_ack(now)
            elif seglen:
                if plen and self.sack_ok and self.cfg.dsack and end_o <= rn:
                    self.dsack = (seq_o, seq_o + plen)
                self._send_ack(now)
            else:
                self._oow_ack(now)
            return None
        if flags & SYN:
            # RFC 5961 §4.2: any SYN in a synchronized state gets a challenge ACK
            self._challenge_ack(now)
            return None
        if tsval is not None and self.ts_ok and seq_o <= self.rcv_wup_o:
            # RFC 7323 §4.3: remember the timestamp to echo
            self.ts_recent = tsval & MASK
            self.ts_recent_stamp = now
        if not flags & ACK:
            return None

        # ---- ACK ----
        una = self.snd_una_o
        d = (seg.ack - self.iss - una) & MASK
        if d >= HALF:
            d -= MOD
        ack_o = una + d
        if st == SYN_RECEIVED:
            if ack_o != self.snd_nxt_o or ack_o <= 0:
                self._send_rst_for(seg.ack, now)
                return None
            # handshake complete (passive, or simultaneous open)
            self.snd_wnd = (seg.wnd & 0xFFFF) << self.snd_shift
            self.max_snd_wnd = self.snd_wnd
            self.snd_wl1_o = seq_o
            self.snd_wl2_o = ack_o
            self._ack_new(ack_o, seg, now)
            self._open_established(now)
            st = self.state
            self.announced = True
            if self.passive:
                stack.stats.passive_opens += 1
                stack._events.append((EV_ACCEPTED, self.listener, self))
            else:
                stack.stats.active_opens += 1
                self._event(EV_CONNECTED)
        elif ack_o > self.snd_nxt_o or ack_o < una - self.max_snd_wnd:
            # RFC 5961 §5.2 (blind data injection) / RFC 9293: ack of unsent data
            stack.stats.bad_acks += 1
            self._challenge_ack(now)
            return None
        else:
            self._ack(seg, seq_o, ack_o, now)
            if self.state == CLOSED:
                return None
            # FIN acknowledged?
            fo = self.fin_o
            if fo is not None and self.snd_una_o > fo:
                st = self.state
                if st == FIN_WAIT_1:
                    self._set_state(FIN_WAIT_2)
                    if self.closed_by_app:
                        self.t_tw = now + self.cfg.fin_timeout
                elif st == CLOSING:
                    self._enter_time_wait(now)
                    return None
                elif st == LAST_ACK:
                    self._destroy(None)
                    return None
                st = self.state

        # ---- data and FIN ----
        if seglen:
            if end_o <= rn:
                # entirely old: the peer missed our ACK
                stack.stats.dup_segs_in += 1
                if plen and self.sack_ok and self.cfg.dsack:
                    self.dsack = (seq_o, seq_o + plen)
                self.dup_bytes_in += plen
                self.ack_now = True
            elif st in _RECEIVING:
                self._rcv_data(seq_o, payload, plen, flags & FIN, now)
                if self.state == CLOSED:
                    return None
            # else: data beyond a FIN we already received; ignore the text
        self._after_input(now)
        return None

    def _after_input(self, now):
        if self.state in _SENDING and (self.lost_out > self.retrans_out or
                                       self.snd_nxt_o < self.sndq_o + len(self.sndq) or
                                       (self.fin_o is not None and self.snd_nxt_o <= self.fin_o)):
            self._xmit(now)
        if self.ack_now:
            self._send_ack(now)
        elif self.ack_pending and self.t_dack is None:
            self.t_dack = now + self.cfg.delack
        self._sched()

    def _send_rst_for(self, ack, now):
        """RST answering an unacceptable ACK (seq = SEG.ACK, no ACK bit)."""
        st = self.stack
        st._out.append(Segment(self._la, self._ra, self._lp, self._rp, ack & MASK, 0, RST,
                               0, 0, None, None, False, None, 0, (), b""))
        st.stats.segs_out += 1
        st.stats.rst_out += 1

    def _reset_by_peer(self, now):
        st = self.state
        if st == SYN_RECEIVED:
            if self.passive:
                self._destroy(None)          # back to LISTEN: the app never saw it
                return
            self.error = ConnectionRefusedError
            self._destroy(EV_REFUSED)
            return
        if st in (CLOSING, LAST_ACK, TIME_WAIT):
            self._destroy(None)
            return
        self.error = ConnectionResetError
        self._destroy(EV_RESET)

    # ------------------------------------------------------------ SYN_SENT input --
    def _in_syn_sent(self, seg, now):
        flags = seg.flags
        stack = self.stack
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
                stack.stats.rst_in += 1
                self.error = ConnectionRefusedError
                self._destroy(EV_REFUSED)
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
            stack.stats.active_opens += 1
            self._event(EV_CONNECTED)
            payload = seg.payload
            if payload or flags & FIN:
                self._rcv_data(1, payload, len(payload), flags & FIN, now)
                if self.state == CLOSED:
                    return
            self.ack_now = True
            self._after_input(now)
        else:
            # simultaneous open (RFC 9293 §3.5, figure 7)
            self._set_state(SYN_RECEIVED)
            self.snd_wnd = seg.wnd & 0xFFFF
            self.max_snd_wnd = self.snd_wnd
            self._send_syn(now)
            self._sched()

    # ------------------------------------------------------------ TIME_WAIT input --
    def _in_time_wait(self, seg, now):
        """Returns "reopen" when a new SYN may reuse the 4-tuple (RFC 6191 / Linux)."""
        flags = seg.flags
        stack = self.stack
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
        if tsval is not None and self.ts_ok and not flags & RST and \
                ((tsval - self.ts_recent) & MASK) >= HALF:
            stack.stats.paws_drops += 1
            self._oow_ack(now)
            return None
        if flags & RST:
            if d == 0:
                stack.stats.rst_in += 1
                self._destroy(None)
            elif 0 < d < max(self.rcv_adv_o - rn, 1):
                self._challenge_ack(now)
            return None
        if flags & SYN:
            self._challenge_ack(now)
            return None
        plen = len(seg.payload)
        if flags & FIN and d + plen + 1 == 0:
            # retransmitted FIN: our ACK was lost; ACK again and restart the 2MSL timer
            self._send_ack(now)
            self.t_tw = now + self.cfg.time_wait
            self._sched()
            return None
        if plen or flags & FIN or d != 0:
            self._oow_ack(now)
        return None

    def _enter_time_wait(self, now):
        cfg = self.cfg
        stack = self.stack
        self.t_rtx = self.t_persist = self.t_ka = self.t_dack = None
        self.rtxq = []
        self.sacked_out = self.lost_out = self.retrans_out = self.reno_dup = 0
        if cfg.time_wait <= 0 or stack._tw_count >= cfg.max_time_wait:
            if cfg.time_wait > 0:
                stack.stats.tw_overflow += 1
            self._destroy(None)
            return
        self._set_state(TIME_WAIT)
        self.t_tw = now + cfg.time_wait
        self._sched()

    # ====================================================================== ACK ====
    def _ack(self, seg, seq_o, ack_o, now):
        """ACK processing in synchronized states (ack_o already validated)."""
        una = self.snd_una_o
        pwnd = (seg.wnd & 0xFFFF) << self.snd_shift
        new_sacked = 0
        if self.sack_ok and seg.sack:
            new_sacked = self._sack_tag(seg.sack, ack_o)
        if ack_o > una:
            self._ack_new(ack_o, seg, now)
        elif ack_o == una and self.snd_nxt_o > una and not seg.payload and \
                not seg.flags & FIN and pwnd == self.snd_wnd:
            if not self.sack_ok or new_sacked:
                self._dupack(new_sacked, now)
        if new_sacked and self.cc is not None:
            self._sack_loss_check(now)
        # window update (RFC 9293 SND.WL1/WL2 rule)
        if self.snd_wl1_o < seq_o or (self.snd_wl1_o == seq_o and self.snd_wl2_o <= ack_o):
            self.snd_wnd = pwnd
            self.snd_wl1_o = seq_o
            self.snd_wl2_o = ack_o
            if pwnd > self.max_snd_wnd:
                self.max_snd_wnd = pwnd
            if pwnd and self.t_persist is not None:
                self.t_persist = None
                self.persist_n = 0
        self.persist_n = 0 if pwnd else self.persist_n
        self.probes_out = 0         # the peer answers: keep probing (RFC 1122 4.2.2.17)

    def _ack_new(self, ack_o, seg, now):
        """Cumulative ACK advanced snd_una to ack_o."""
        una = self.snd_una_o
        acked = ack_o - una
        q = self.rtxq
        rtt_ts = None
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
            n += 1
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
            r = (self._ts_now(now) - seg.tsecr) & MASK
            if r < HALF:
                rtt = r * 0.001
                flight = self.snd_nxt_o - una
        elif rtt_ts is not None:
            rtt = now - rtt_ts
        if rtt is not None and rtt >= 0:
            self._rtt_sample(rtt, flight)
            self.backoff = 0          # Karn: the backed-off RTO stays until a valid sample
        self.rto_count = 0
        # retransmission timer (RFC 6298 §5.2/5.3)
        if self.snd_nxt_o > ack_o:
            self.t_rtx = now + self._cur_rto()
        else:
            self.t_rtx = None
        cc = self.cc
        if cc is None:
            return
        # congestion control / recovery state machine
        cas = self.ca_state
        if cas == CA_RECOVERY:
            if ack_o >= self.recover_o:
                self._exit_recovery(now)
            else:
                # partial ACK (RFC 6582 §3.2 step 5): the next hole is lost too
                if self.reno_dup:
                    self.reno_dup -= acked
                    if self.reno_dup < 0:
                        self.reno_dup = 0
                if q and not q[0].flags & (R_SACKED | R_RETRANS):
                    r = q[0]
                    self._mark_lost(r)
                    self._retransmit(r, now)
        else:
            if cas == CA_LOSS and ack_o >= self.recover_o:
                self.ca_state = CA_OPEN
            self.dupacks = 0
            self.reno_dup = 0
            if ack_o <= self.cwnd_lim_o or 2 * self._in_flight() + 2 * acked >= cc.cwnd:
                cc.on_ack(acked, self.srtt, now)
        if self._wr_want and not self.wr_shut:
            used = self.sndq_o + len(self.sndq) - self.sndq_a
            if self.sndbuf - used >= (used >> 1):     # Linux sk_stream_wspace rule
                self._wr_want = False
                self._event(EV_WRITABLE)

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
        self.lost_out += r.end - r.start
        if r.start < self.rtx_scan:
            self.rtx_scan = r.start

    def _dupack(self, new_sacked, now):
        if not self.dupacks:
            self.flight_dup1 = self.snd_nxt_o - self.snd_una_o
        self.dupacks += 1
        stack = self.stack
        stack.stats.dupacks_in += 1
        mss = self.mss
        if not self.sack_ok:
            # Reno: each duplicate ACK stands for one segment that left the network
            # (one more per duplicate: a partial ACK already took back what it covered)
            out = self.snd_nxt_o - self.snd_una_o - mss
            rd = self.reno_dup + mss
            self.reno_dup = rd if rd < out else (out if out > 0 else 0)
        if self.ca_state == CA_OPEN and self.dupacks >= DUPTHRESH:
            if self.sack_ok or self.snd_una_o > self.recover_o or self.recover_o == 0:
                self._enter_recovery(now)

    def _enter_recovery(self, now):
        stack = self.stack
        stack.stats.fast_retransmits += 1
        # RFC 5681 §3.2 step 2: FlightSize without the limited-transmit segments
        flight = self.flight_dup1 if self.dupacks else self.snd_nxt_o - self.snd_una_o
        self.cc.on_recovery_enter(now, flight)
        self.ca_state = CA_RECOVERY
        self.recover_o = self.snd_nxt_o
        q = self.rtxq
        if self.sack_ok:
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
        self.retrans_out += r.end - r.start
        self.retransmits += 1
        self.stack.stats.retransmits += 1
        if self.t_rtx is None:
            self.t_rtx = now + self._cur_rto()

    def _exit_recovery(self, now):
        self.ca_state = CA_OPEN
        self.dupacks = 0
        self.reno_dup = 0
        self.cc.on_recovery_exit(now)

    # ---------------------------------------------------------------- SACK sender --
    def _sack_tag(self, blocks, ack_o):
        """Mark records covered by the peer's SACK blocks; returns segments newly SACKed."""
        una = self.snd_una_o
        nxt = self.snd_nxt_o
        base = (self.iss + una) & MASK
        q = self.rtxq
        newly = 0
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
            # binary search for the first record with end > lo
            a, b = 0, len(q)
            while a < b:
                m = (a + b) >> 1
                if q[m].end <= lo:
                    a = m + 1
                else:
                    b = m
            nq = len(q)
            while a < nq:
                r = q[a]
                if r.start >= ro:
                    break
                if r.start >= lo and r.end <= ro:
                    f = r.flags
                    if not f & R_SACKED:
                        ln = r.end - r.start
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
        return newly

    def _sack_loss_check(self, now):
        if self.ca_state == CA_OPEN:
            if self._sack_is_lost_head():
                self._enter_recovery(now)
        else:
            self._sack_mark_lost()

    def _sack_is_lost_head(self):
        """RFC 6675 IsLost(HighACK+1)."""
        q = self.rtxq
        if not q or q[0].flags & R_SACKED:
            return False
        cnt = 0
        sb = 0
        lim = (DUPTHRESH - 1) * self.mss
        for r in q:
            if r.flags & R_SACKED:
                cnt += 1
                sb += r.end - r.start
                if cnt >= DUPTHRESH or sb > lim:
                    return True
        return False

    def _sack_mark_lost(self):
        """RFC 6675 IsLost(): a hole with DupThresh SACKed segments (or more than
        (DupThresh-1)*SMSS SACKed bytes) above it is lost."""
        q = self.rtxq
        cnt = 0
        sb = 0
        lim = (DUPTHRESH - 1) * self.mss
        i = len(q) - 1
        while i >= 0:
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

    # ================================================================= sending ====
    def _xmit(self, now, force=False):
        """Transmit what cwnd, the peer's window, Nagle and SWS avoidance allow:
        lost segments first (RFC 6675 NextSeg rule 1), then new data, then FIN."""
        cc = self.cc
        if cc is None:
            return
        tso = self.stack.tso
        if tso is not None and not force:
            tso(self, now)             # fpd.fastpath.xmit_burst: full segments as one item
        mss = self.mss
        cwnd = cc.cwnd
        sent = False
        # ---- retransmissions ----
        if self.lost_out > self.retrans_out:
            q = self.rtxq
            a, b = 0, len(q)
            scan = self.rtx_scan
            while a < b:
                m = (a + b) >> 1
                if q[m].end <= scan:
                    a = m + 1
                else:
                    b = m
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
        while True:
            nxt = self.snd_nxt_o
            so = self.sndq_o
            dend = so + len(self.sndq)
            avail = dend - nxt
            right = self.snd_una_o + self.snd_wnd
            if avail <= 0:
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
            fin = fo is not None and nxt + n == fo and nxt + n + 1 <= right
            self._emit_new(nxt, nxt + n, fin, now)
            sent = True
            if fin:
                break
        if sent:
            self.last_send = now
            if self.t_rtx is None:
                self.t_rtx = now + self._cur_rto()
        if window_blocked and self.snd_nxt_o == self.snd_una_o and self.t_persist is None:
            # nothing in flight will bring an ACK: probe the window (persist timer)
            self.t_persist = now + self._persist_intv()

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
        self.stack.stats.scoreboard_recounts += 1

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
        st = self.stack
        st._out.append(self._mkseg((self.iss + start) & MASK, flags, payload, now))
        st.stats.segs_out += 1

    # ================================================================= receiving ====
    def _rcv_data(self, seq_o, payload, plen, fin, now):
        stack = self.stack
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
            stack.stats.rcv_wnd_trims += 1
        if plen and self.closed_by_app:
            # data for a connection the application closed: reset (as Linux)
            stack.stats.aborts_on_data += 1
            self._send_rst_now(now)
            self._destroy(None)
            return
        if plen > self.rcv_mss:
            self.rcv_mss = plen if plen < self.cfg.mss else self.cfg.mss
        if seq_o == rn:
            fin_at = rn + plen if fin else None
            if plen:
                self.rcvq += payload
                rn += plen
                self.bytes_in += plen
                if self.ooo:
                    rn = self._ooo_drain(rn)
                    self.ack_now = True
                self.rcv_nxt_o = rn
                if not self._rd_ev and not self.closed_by_app:
                    self._rd_ev = True
                    stack._events.append((EV_READABLE, self))
                if self.quick > 0:
                    self.quick -= 1
                    self.ack_now = True
                elif rn - self.rcv_wup_o > self.rcv_mss:
                    self.ack_now = True
                else:
                    self.ack_pending = True
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

    def _rcv_fin(self, now):
        self.ooo_fin_o = None
        self.rcv_nxt_o += 1
        self.fin_rcvd = True
        self.ack_now = True
        if self.ooo:
            self.ooo = []
            self.ooo_bytes = 0
        st = self.state
        if not self.closed_by_app:
            self._event(EV_PEER_CLOSED)
        if st == ESTABLISHED:
            self._set_state(CLOSE_WAIT)
        elif st == FIN_WAIT_1:
            if self.fin_o is not None and self.snd_una_o > self.fin_o:
                self._send_ack(now)
                self._enter_time_wait(now)
            else:
                self._set_state(CLOSING)
        elif st == FIN_WAIT_2:
            self._send_ack(now)
            self._enter_time_wait(now)

    def _ooo_insert(self, s, data):
        stack = self.stack
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
                stack.stats.ooo_queued += 1
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
                stack.stats.ooo_dropped += 1
                return
            ooo.insert(i, [s, bytearray(data), stamp])
            self.ooo_bytes += e - s
            stack.stats.ooo_queued += 1
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
        stack.stats.ooo_queued += 1

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
                self.rcvq += data[rn - s:] if s < rn else data
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
        free = self.rcvbuf - len(self.rcvq)
        cap = 65535 << self.rcv_shift
        if free > cap:
            free = cap
        cur = self.rcv_adv_o - self.rcv_nxt_o
        if cur < 0:
            cur = 0
        if free - cur >= self.sws_thresh and (cur < self.sws_thresh or free >= 2 * cur):
            now = self.stack._now
            self._send_ack(now)
            self._sched()

    # =================================================================== timers ====
    def _on_timer(self, now):
        t = self.t_tw
        if t is not None and t <= now:
            self.t_tw = None
            if self.state == TIME_WAIT:
                self._destroy(None)
                return
            if self.state == FIN_WAIT_2:
                self._send_rst_now(now)
                self._destroy(None)
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
        t = self.t_dack
        if t is not None and t <= now:
            self.t_dack = None
            if self.ack_pending and self.state != CLOSED:
                self.stack.stats.delayed_acks += 1
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
        stack = self.stack
        cfg = self.cfg
        stack.stats.rto_timeouts += 1
        if st in (SYN_SENT, SYN_RECEIVED):
            limit = cfg.syn_retries if st == SYN_SENT else cfg.synack_retries
            if self.syn_rtx >= limit:
                self.error = TimeoutError
                stack.stats.timeouts += 1
                self._destroy(EV_TIMED_OUT)
                return
            self.backoff += 1
            self._send_syn(now)
            self.syn_rtx += 1
            self.retransmits += 1
            stack.stats.retransmits += 1
            q[0].flags |= R_EVER
            self.t_rtx = now + self._cur_rto()
            return
        if self.rto_count >= cfg.retries:
            self.error = TimeoutError
            stack.stats.timeouts += 1
            self._send_rst_now(now)       # as FreeBSD's tcp_drop: tell the peer if it can hear
            self._destroy(EV_TIMED_OUT)
            return
        first = self.ca_state != CA_LOSS or self.rto_count == 0
        self.cc.on_rto(now, self.snd_nxt_o - self.snd_una_o, first)
        self.rto_count += 1
        if self._cur_rto() < cfg.rto_max:
            self.backoff += 1
        # RFC 2018 §8 / RFC 6675 §5.1: forget SACK information, everything is lost
        lost = 0
        for r in q:
            r.flags = (r.flags & ~(R_SACKED | R_RETRANS)) | R_LOST
            lost += r.end - r.start
        self.sacked_out = 0
        self.retrans_out = 0
        self.lost_out = lost
        self.reno_dup = 0
        self.dupacks = 0
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
        stack = self.stack
        if self.probes_out >= self.cfg.retries:
            self.error = TimeoutError
            stack.stats.timeouts += 1
            self._send_rst_now(now)
            self._destroy(EV_TIMED_OUT)
            return
        right = self.snd_una_o + self.snd_wnd
        if right > self.snd_nxt_o:
            self._xmit(now, force=True)        # SWS override: send what the window allows
        if self.snd_nxt_o == self.snd_una_o:
            stack.stats.window_probes += 1
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
        idle = now - self.last_rcv
        if self.ka_probes == 0 and idle < self.keepalive_idle:
            self.t_ka = self.last_rcv + self.keepalive_idle
            return
        stack = self.stack
        if self.ka_probes >= self.keepalive_count:
            self.error = TimeoutError
            stack.stats.timeouts += 1
            self._send_rst_now(now)
            self._destroy(EV_TIMED_OUT)
            return
        self.ka_probes += 1
        stack.stats.keepalive_probes += 1
        self._send_probe(now)
        self.t_ka = now + self.keepalive_interval


def _stamp_key(ent):
    return ent[2]
