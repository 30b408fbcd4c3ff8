"""The connection table of one worker: demultiplexing, listeners, ISNs, SYN cookies,
timers, and the output / event queues (sans-IO: ``now`` is always passed in).

    stack = Stack(isn_key=b"secret", config=StackConfig(time_wait=1.0))
    lst = stack.listen(b"\\0\\0\\0\\0", 80)
    stack.input(segment, now); stack.tick(now)
    for seg in stack.output(): ...          # fully addressed fpd.wire.Segment objects
    for ev in stack.events(): ...           # (kind, conn_or_listener, *extra)
    stack.next_deadline()                   # when to call tick() next (None: no timer)

See docs/ENGINE.md for the API contract, the event model and the constants.
"""

import dataclasses
import errno
import hashlib
import heapq

from .wire import Segment, FIN, SYN, RST, ACK
from .tcp import (Connection, Context, Event, MASK, HALF, CLOSED, SYN_RECEIVED, TIME_WAIT,
                  CONTROL_MASK)
from . import cc as _cc

ANY = b"\0\0\0\0"
_EV_READABLE = Event.READABLE

# SYN-cookie MSS table (3 bits); the largest entry not above the negotiated MSS is used
COOKIE_MSS = (216, 536, 1024, 1300, 1440, 1460, 4312, 8960)
COOKIE_PERIOD = 64.0      # seconds per cookie counter tick
COOKIE_MAX_AGE = 2        # ticks a cookie stays valid (so 128-192 s)


@dataclasses.dataclass
class StackConfig:
    """Engine settings.  Listeners and connections may override any field by keyword."""
    mss: int = 1460                 # our MSS (interface MTU - 40); the peer's is clamped to it
    rcvbuf: int = 256 * 1024        # receive buffer per connection; the window follows it
    sndbuf: int = 256 * 1024        # send buffer per connection
    rcvbuf_max: int = 6 * 1024 * 1024   # autotuning grows rcvbuf up to this (tcp_rmem[2])
    sndbuf_max: int = 4 * 1024 * 1024   # ... and sndbuf up to this (tcp_wmem[2])
    buf_mem_max: int = 256 * 1024 * 1024  # growth beyond rcvbuf/sndbuf, whole stack
    time_wait: float = 60.0         # TIME_WAIT duration (2*MSL; Linux uses 60 s)
    fin_timeout: float = 60.0       # FIN_WAIT_2 limit once the application closed
    rto_min: float = 0.2            # RFC 6298 says 1 s; Linux (and fpd) use 200 ms
    rto_max: float = 120.0          # Linux TCP_RTO_MAX
    rto_initial: float = 1.0        # RFC 6298 §2.1
    delack: float = 0.04            # delayed-ACK timeout (Linux's TCP_DELACK_MIN)
    quickack: int = 16              # first in-order data segments ACKed at once
    syn_retries: int = 6            # SYN retransmissions before Event.TIMED_OUT (Linux)
    synack_retries: int = 5         # SYN-ACK retransmissions for half-open connections
    retries: int = 15               # data RTOs (and unanswered persist probes) before giving up
    syn_backlog: int = 4096         # half-open connections, whole stack
    max_connections: int = 262144   # connections of every state, whole stack (100 k idle fit)
    max_time_wait: int = 32768      # TIME_WAIT entries; beyond, close at once (Linux's tw buckets)
    challenge_ack_limit: int = 10   # RFC 5961 challenge ACKs per second, per connection
    oow_interval: float = 0.5       # min gap between ACKs answering out-of-window pure ACKs
    keepalive: bool = False
    keepalive_idle: float = 7200.0
    keepalive_interval: float = 75.0
    keepalive_count: int = 9
    cc: str = "cubic"               # "cubic" | "newreno"
    timestamps: bool = True
    sack: bool = True
    dsack: bool = True
    wscale: bool = True             # window scaling offered/accepted
    wscale_shift: object = None     # our shift; None: smallest that fits rcvbuf
    nodelay: bool = False
    init_cwnd: int = 10             # RFC 6928
    syn_cookies: object = True      # True: when the SYN queue is full; "always"; False: never
    ooo_max_blocks: int = 64        # out-of-order islands kept per connection
    rack: bool = True               # RACK time-based loss detection + rescue retransmission
    tlp: bool = True                # tail-loss probes (RFC 8985 §7; SACK connections)
    undo: bool = True               # DSACK-based undo of a spurious reduction (RFC 3708)
    frto: bool = True               # F-RTO spurious-timeout detection and undo (RFC 5682)
    prr: bool = True                # Proportional Rate Reduction in fast recovery (RFC 6937)
    hystart: bool = True            # HyStart++ in the initial slow start (RFC 9406)
    pacing: bool = False            # pace new data at 2x / 1.2x cwnd/SRTT (docs/ENGINE.md)
    raise_errors: bool = False      # re-raise internal errors from input/tick (tests)

    def rcv_shift(self):
        if not self.wscale:
            return 0
        if self.wscale_shift is not None:
            return max(0, min(14, int(self.wscale_shift)))
        s = 0
        top = self.rcvbuf if self.rcvbuf > self.rcvbuf_max else self.rcvbuf_max
        while (top >> s) > 65535 and s < 14:
            s += 1
        return s

    def validate(self):
        if self.cc not in _cc.ALGORITHMS:
            raise ValueError(f"unknown cc {self.cc!r}")
        if not (88 <= self.mss <= 65495):
            raise ValueError("mss out of range")
        if self.rcvbuf < 1 or self.sndbuf < 1:
            raise ValueError("buffers must be positive")
        return self


_STAT_NAMES = (
    "segs_in", "segs_out", "retransmits", "fast_retransmits", "rto_timeouts", "timeouts",
    "rst_in", "rst_out", "malformed_drops", "internal_errors", "no_conn_rsts",
    "syncookies_sent", "syncookies_validated", "syncookies_failed", "syn_drops", "conn_limit_drops",
    "challenge_acks", "challenge_acks_limited", "bad_acks", "oow_acks", "oow_acks_limited",
    "ooo_queued", "ooo_dropped", "paws_drops", "dup_segs_in", "dupacks_in", "dsacks_sent",
    "delayed_acks", "window_probes", "keepalive_probes", "rcv_wnd_trims",
    "active_opens", "passive_opens", "tw_reuses", "tw_overflow", "aborts_on_close",
    "aborts_on_data", "scoreboard_recounts", "sack_trimmed", "acks_coalesced", "sack_walked",
    "tlp_probes", "tlp_recoveries", "rack_lost", "rescue_retransmits", "dsacks_in", "dsack_undos",
    "frto_spurious", "frto_undos", "prr_ssrb", "hystart_css", "hystart_resumes",
    "hystart_exits", "paced_waits",
    # fpd.fastpath._ack_run: runs taken (two ACKs or more), the ACKs they took, and for
    # every run looked at (taken or not) why it stopped (fastpath.ACK_RUN_STOPS)
    "ack_runs", "ack_run_acks",
    "ack_run_stop_end", "ack_run_stop_data", "ack_run_stop_flags", "ack_run_stop_sack",
    "ack_run_stop_seq", "ack_run_stop_dup", "ack_run_stop_beyond", "ack_run_stop_wnd",
    "ack_run_stop_ts", "ack_run_stop_state",
)


class Stats:
    """Stack-wide counters: plain int attributes (cheap enough to keep always on)."""
    __slots__ = _STAT_NAMES

    def __init__(self):
        for n in _STAT_NAMES:
            setattr(self, n, 0)

    def as_dict(self):
        return {n: getattr(self, n) for n in _STAT_NAMES}

    def __getitem__(self, name):
        return getattr(self, name)

    def __repr__(self):
        return "Stats(" + ", ".join(f"{k}={v}" for k, v in self.as_dict().items() if v) + ")"


class Listener:
    __slots__ = ("stack", "addr", "port", "backlog", "cfg", "half_open", "last_overflow",
                 "closed", "rcv_shift")

    def __init__(self, stack, addr, port, backlog, cfg):
        self.stack = stack
        self.addr = addr
        self.port = port
        self.backlog = backlog
        self.cfg = cfg
        self.half_open = 0
        self.last_overflow = None
        self.closed = False
        self.rcv_shift = cfg.rcv_shift()

    state = "LISTEN"

    def cookies_recent(self, now):
        if self.cfg.syn_cookies == "always":
            return True
        lo = self.last_overflow
        return lo is not None and 0 <= now - lo <= COOKIE_PERIOD * (COOKIE_MAX_AGE + 1)

    def __repr__(self):
        return f"<Listener {'.'.join(map(str, self.addr))}:{self.port} half_open={self.half_open}>"


class Stack:
    def __init__(self, isn_key, config=None):
        key = bytes(isn_key)
        if not key:
            raise ValueError("isn_key must not be empty")
        if len(key) > 32:
            key = hashlib.blake2s(key).digest()
        self._key = key
        self.config = (config or StackConfig()).validate()
        self._rcv_shift = self.config.rcv_shift()
        self._conns = {}
        self._listeners = {}
        self._eph = None
        self.stats = Stats()
        # everything a Connection shares with the stack (tcp.Context): output, events,
        # ACKs owed, clock, counters, gauges, timer heap
        self._cx = Context(self.stats, self._conns)
        # unmatched(seg) -> True: a segment no connection or listener takes is handled
        # elsewhere (a worker forwards it to the engine of another queue) instead of
        # being answered with RST. None: RST, as RFC 9293 says.
        self.unmatched = None

    @property
    def tso(self):
        """tso(conn, now): called first in Connection._xmit to send the full-sized new
        segments as one fpd.fastpath.SegBurst output item (the worker sets
        fpd.fastpath.xmit_burst). None: one Segment per segment (the reference). Kept in
        the Context, where connections read it."""
        return self._cx.tso

    @tso.setter
    def tso(self, fn):
        self._cx.tso = fn

    # ============================================================== public API ====
    def listen(self, addr, port, backlog=128, **overrides):
        addr = bytes(addr)
        if len(addr) != 4 or not (0 < port < 65536):
            raise ValueError("bad listen address")
        if (addr, port) in self._listeners:
            raise OSError(errno.EADDRINUSE, f"already listening on port {port}")
        lst = Listener(self, addr, port, max(1, int(backlog)), self._cfg(overrides))
        self._listeners[(addr, port)] = lst
        return lst

    def unlisten(self, listener):
        if self._listeners.get((listener.addr, listener.port)) is listener:
            del self._listeners[(listener.addr, listener.port)]
        listener.closed = True
        for c in list(self._conns.values()):
            if c.listener is listener and c.state == SYN_RECEIVED:
                c.destroy(None)

    def connect(self, now, src, sport, dst, dport, **overrides):
        self._cx.now = now
        cfg = self._cfg(overrides)
        src = bytes(src)
        dst = bytes(dst)
        if len(src) != 4 or len(dst) != 4 or not (0 < dport < 65536) or not (0 <= sport < 65536):
            raise ValueError("bad address or port")
        if sport == 0:
            sport = self._ephemeral(src, dst, dport)
        key = (src, sport, dst, dport)
        old = self._conns.get(key)
        if old is not None:
            if old.state != TIME_WAIT:
                raise OSError(errno.EADDRINUSE, "4-tuple in use")
            self.stats.tw_reuses += 1
            old.destroy(None)
        if len(self._conns) >= cfg.max_connections:
            raise OSError(errno.EAGAIN, "connection limit reached")
        c = Connection(self._cx, cfg, src, sport, dst, dport, now)
        iss, ts_off = self._isn(src, sport, dst, dport, now)
        self._conns[key] = c
        c.open_active(now, iss, ts_off, cfg.rcv_shift() if cfg is not self.config
                       else self._rcv_shift)
        return c

    def input(self, seg, now):
        """Process one inbound segment.  Never raises for anything a peer can send."""
        self._cx.now = now
        self.stats.segs_in += 1
        c = None
        try:
            c = self._conns.get((seg.dst, seg.dport, seg.src, seg.sport))
            if c is not None:
                r = c.process(seg, now)
                if r is None:
                    if c.state != CLOSED:
                        c.schedule()
                    return
                # a new SYN reopens a TIME_WAIT 4-tuple (RFC 6191 / Linux)
                hint = (c.iss + c.snd_nxt_o + 65535 + 2) & MASK
                self.stats.tw_reuses += 1
                c.destroy(None)
                self._no_conn(seg, now, hint)
                return
            self._no_conn(seg, now, None)
        except Exception:
            self.stats.internal_errors += 1
            if c is not None and c.state != CLOSED:
                c.rearm(now)
            if self.config.raise_errors:
                raise

    def tick(self, now):
        """Fire every timer due at ``now``."""
        self._cx.now = now
        h = self._cx.timers
        while h and h[0][0] <= now:
            t, _, c = heapq.heappop(h)
            if c.heap_at != t or c.state == CLOSED:
                continue
            c.heap_at = None
            try:
                c.on_timer(now)
            except Exception:
                self.stats.internal_errors += 1
                if c.state != CLOSED:
                    c.rearm(now)       # never leave a connection without its timers
                if self.config.raise_errors:
                    raise
            else:
                if c.state != CLOSED:
                    c.schedule()

    def next_deadline(self):
        h = self._cx.timers
        while h:
            t, _, c = h[0]
            if c.heap_at != t or c.state == CLOSED:
                heapq.heappop(h)
                continue
            e = c.next_timer()
            if e is None or e > t:
                # the timer behind this entry moved later or was cancelled
                heapq.heappop(h)
                c.heap_at = None
                c.schedule()
                continue
            return t
        return None

    def output(self):
        cx = self._cx
        if cx.acks:
            self._flush_acks()
        out = cx.out
        cx.out = []
        return out

    def _flush_acks(self):
        """The ACKs the fast path owes (``Connection.ack_queued``), built now: one per
        connection however many segments asked for it since the last output, and none
        if a segment sent since then carried it already."""
        cx = self._cx
        acks, cx.acks = cx.acks, []
        now = cx.now
        for c in acks:
            c.flush_ack(now)

    def output_coalesced(self):
        """:meth:`output`, without the pure ACKs that a later pure ACK of the same
        connection in the same batch makes redundant (its ACK number is higher: it
        acknowledges everything the earlier one did and carries a fresher window).

        For a caller that feeds a whole receive burst through :meth:`input` and then
        sends: one ACK per connection per burst instead of one per two segments, as a
        Linux receiver with GRO does. Duplicate ACKs (same ACK number: the peer's fast
        retransmit counts them), ACKs with SACK blocks, and anything with data or
        SYN/FIN/RST are always kept."""
        cx = self._cx
        if cx.acks:
            self._flush_acks()
        out = cx.out
        cx.out = []
        n = len(out)
        if n < 2:
            return out
        last = {}                           # 4-tuple -> ack of the latest pure ACK seen
        keep = [True] * n
        dropped = 0
        for i in range(n - 1, -1, -1):      # newest first
            seg = out[i]
            if seg.flags & CONTROL_MASK != ACK or seg.payload or seg.sack:
                continue
            key = (seg.src, seg.dst, seg.dport, seg.sport)
            newer = last.get(key)
            if newer is None:
                last[key] = seg.ack
            elif 0 < (newer - seg.ack) & MASK < 0x80000000:
                keep[i] = False
                dropped += 1
        if not dropped:
            return out
        self.stats.acks_coalesced += dropped
        return [seg for seg, k in zip(out, keep) if k]

    def events(self):
        cx = self._cx
        ev = cx.events
        if ev:
            cx.events = []
            for e in ev:
                if e[0] is _EV_READABLE:
                    e[1].rd_pending = False
        return ev

    def connections(self):
        return list(self._conns.values())

    def listeners(self):
        return list(self._listeners.values())

    def counters(self):
        d = self.stats.as_dict()
        d["connections"] = len(self._conns)
        d["half_open"] = self._cx.half_open
        d["time_wait"] = self._cx.tw_count
        return d

    def find(self, local, remote):
        """The connection for ((laddr, lport), (raddr, rport)), or None."""
        return self._conns.get((local[0], local[1], remote[0], remote[1]))

    # ================================================================ internals ====
    def _cfg(self, overrides):
        if not overrides:
            return self.config
        return dataclasses.replace(self.config, **overrides).validate()

    @staticmethod
    def _tuple_bytes(la, lp, ra, rp):
        return la + ra + ((lp << 16) | rp).to_bytes(4, "big")

    def _isn(self, la, lp, ra, rp, now):
        """RFC 6528: ISN = M + F(4-tuple, secret); M is a 4 µs clock.  The second half
        of the hash is the connection's timestamp offset (RFC 7323 §5.4)."""
        h = hashlib.blake2s(self._tuple_bytes(la, lp, ra, rp), key=self._key,
                            digest_size=8, person=b"fpd-isn").digest()
        f = int.from_bytes(h[:4], "big")
        return (int(now * 250000.0) + f) & MASK, int.from_bytes(h[4:], "big")

    def _ts_off(self, la, lp, ra, rp):
        return self._isn(la, lp, ra, rp, 0.0)[1]

    def _ephemeral(self, src, dst, dport):
        lo, hi = 32768, 60999
        span = hi - lo + 1
        if self._eph is None:
            h = hashlib.blake2s(src + dst + dport.to_bytes(2, "big"), key=self._key,
                                digest_size=4, person=b"fpd-eph").digest()
            self._eph = int.from_bytes(h, "big")
        for i in range(span):
            p = lo + (self._eph + i) % span
            if (src, p, dst, dport) not in self._conns:
                self._eph += i + 1
                return p
        raise OSError(errno.EADDRNOTAVAIL, "no free ephemeral port")

    # ---------------------------------------------------------- no connection ----
    def _no_conn(self, seg, now, iss_hint):
        flags = seg.flags
        stats = self.stats
        if flags & RST:
            return
        dport = seg.dport
        lst = self._listeners.get((seg.dst, dport))
        if lst is None:
            lst = self._listeners.get((ANY, dport))
        if lst is not None:
            if flags & SYN and not flags & ACK:
                if flags & FIN or not (0 < seg.sport < 65536):
                    stats.malformed_drops += 1
                    return
                self._syn(lst, seg, now, iss_hint)
                return
            if flags & ACK and not flags & SYN and lst.cookies_recent(now):
                if self._cookie_ack(lst, seg, now):
                    return
        hook = self.unmatched
        if hook is not None and hook(seg):
            return                      # another engine may own it (several queues)
        self._rst_reply(seg)

    def _rst_reply(self, seg):
        """RFC 9293 §3.10.7.1: answer a segment that matches nothing."""
        flags = seg.flags
        if not (0 < seg.sport < 65536 and 0 < seg.dport < 65536):
            self.stats.malformed_drops += 1
            return
        if flags & ACK:
            r = Segment(seg.dst, seg.src, seg.dport, seg.sport, seg.ack & MASK, 0, RST, 0, 0,
                        None, None, False, None, 0, (), b"")
        else:
            n = len(seg.payload)
            if flags & SYN:
                n += 1
            if flags & FIN:
                n += 1
            r = Segment(seg.dst, seg.src, seg.dport, seg.sport, 0, (seg.seq + n) & MASK,
                        RST | ACK, 0, 0, None, None, False, None, 0, (), b"")
        self._cx.out.append(r)
        self.stats.segs_out += 1
        self.stats.rst_out += 1
        self.stats.no_conn_rsts += 1

    def _syn(self, lst, seg, now, iss_hint):
        cfg = lst.cfg
        stats = self.stats
        if len(self._conns) >= cfg.max_connections:
            stats.conn_limit_drops += 1
            return
        cookie = cfg.syn_cookies == "always"
        if not cookie and (lst.half_open >= lst.backlog or self._cx.half_open >= cfg.syn_backlog):
            lst.last_overflow = now
            if not cfg.syn_cookies:
                stats.syn_drops += 1
                return
            cookie = True
        if cookie:
            self._send_cookie(lst, seg, now)
            return
        la, lp, ra, rp = seg.dst, seg.dport, seg.src, seg.sport
        c = Connection(self._cx, cfg, la, lp, ra, rp, now)
        iss, ts_off = self._isn(la, lp, ra, rp, now)
        if iss_hint is not None:
            iss = iss_hint
        self._conns[(la, lp, ra, rp)] = c
        c.open_passive(seg, now, iss, ts_off, lst.rcv_shift, lst)

    # ------------------------------------------------------------- SYN cookies ----
    def _cookie_hashes(self, la, lp, ra, rp, count):
        tb = self._tuple_bytes(la, lp, ra, rp)
        h1 = hashlib.blake2s(tb, key=self._key, digest_size=4, person=b"fpd-ck1").digest()
        h2 = hashlib.blake2s(tb + bytes((count & 0xFF,)), key=self._key, digest_size=4,
                             person=b"fpd-ck2").digest()
        return int.from_bytes(h1, "big"), int.from_bytes(h2, "big")

    def _send_cookie(self, lst, seg, now):
        """SYN-ACK whose ISN encodes everything needed to rebuild the connection:
        ISN = H1(tuple) + peer ISN + (count << 24) + ((H2(tuple, count) + mss index) mod 2^24)
        and, when timestamps are on, WS (4 bits) and SACK (1 bit) in TSval's low 6 bits."""
        cfg = lst.cfg
        la, lp, ra, rp = seg.dst, seg.dport, seg.src, seg.sport
        count = int(now // COOKIE_PERIOD) & 0xFF
        h1, h2 = self._cookie_hashes(la, lp, ra, rp, count)
        pm = seg.mss if (seg.mss is not None and seg.mss > 0) else 536
        eff = pm if pm < cfg.mss else cfg.mss
        idx = 0
        for i, m in enumerate(COOKIE_MSS):
            if m <= eff:
                idx = i
        pisn = seg.seq & MASK
        isn = (h1 + pisn + (count << 24) + ((h2 + idx) & 0xFFFFFF)) & MASK
        ts = None
        tsecr = 0
        wscale = None
        sack_ok = False
        if cfg.timestamps and seg.tsval is not None:
            ts_off = self._ts_off(la, lp, ra, rp)
            tnow = (int(now * 1000.0) + ts_off) & MASK
            bits = 0xF
            if cfg.wscale and seg.wscale is not None:
                bits = min(14, max(0, seg.wscale))
                wscale = lst.rcv_shift
            if cfg.sack and seg.sack_ok:
                bits |= 0x10
                sack_ok = True
            ts = (tnow & ~0x3F) | bits
            if bits > tnow & 0x3F:
                ts -= 0x40              # never ahead of our clock (Linux steps it back too)
            ts &= MASK
            tsecr = seg.tsval & MASK
        wnd = cfg.rcvbuf if cfg.rcvbuf < 65535 else 65535
        self._cx.out.append(Segment(la, ra, lp, rp, isn, (pisn + 1) & MASK, SYN | ACK, wnd, 0,
                                 cfg.mss, wscale, sack_ok, ts, tsecr, (), b""))
        self.stats.segs_out += 1
        self.stats.syncookies_sent += 1

    def _cookie_ack(self, lst, seg, now):
        cfg = lst.cfg
        stats = self.stats
        la, lp, ra, rp = seg.dst, seg.dport, seg.src, seg.sport
        cookie = (seg.ack - 1) & MASK
        pisn = (seg.seq - 1) & MASK
        cnow = int(now // COOKIE_PERIOD) & 0xFF
        h1, _ = self._cookie_hashes(la, lp, ra, rp, 0)
        x = (cookie - h1 - pisn) & MASK
        c = x >> 24
        if (cnow - c) & 0xFF > COOKIE_MAX_AGE:
            stats.syncookies_failed += 1
            return False
        _, h2 = self._cookie_hashes(la, lp, ra, rp, c)
        idx = (x - h2) & 0xFFFFFF
        if idx >= len(COOKIE_MSS):
            stats.syncookies_failed += 1
            return False
        ws = None
        sack = False
        ts_off = self._ts_off(la, lp, ra, rp)
        if cfg.timestamps and seg.tsval is not None:
            tnow = (int(now * 1000.0) + ts_off) & MASK
            ecr = seg.tsecr & MASK
            if ((tnow - ecr) & MASK) >= HALF:
                stats.syncookies_failed += 1       # echoes a timestamp from the future
                return False
            bits = ecr & 0x3F
            if bits & 0xF != 0xF:
                ws = bits & 0xF
            sack = bool(bits & 0x10)
        if len(self._conns) >= cfg.max_connections:
            stats.conn_limit_drops += 1
            return True
        stats.syncookies_validated += 1
        stats.passive_opens += 1
        conn = Connection(self._cx, cfg, la, lp, ra, rp, now)
        self._conns[(la, lp, ra, rp)] = conn
        conn.open_cookie(seg, now, cookie, ts_off, lst.rcv_shift, lst,
                          COOKIE_MSS[idx], ws, sack)
        conn.process(seg, now)
        if conn.state != CLOSED:
            conn.schedule()
        return True
