"""Two sans-IO stacks over a simulated, impaired link, driven by virtual time.

    client  A 10.77.0.2:ephemeral  ──link A→B──▶  B 10.77.0.1:8080  server
                                   ◀──link B→A──

Everything is seeded (``random.Random(seed)``) and deterministic: the same seed, schedule
and configuration give the same run, segment for segment.

The link model, per direction and per segment, in this order:

* ``loss``      the segment vanishes;
* ``corrupt``   a bit error that the checksum catches: the receiver's wire layer drops it
                (counted apart from loss, otherwise the same);
* ``mutate``    a bit error that is *not* caught (checksums off): one header field, option
                or payload byte is changed and the segment is delivered. This turns the run
                into a fuzz run: byte-stream integrity is no longer a property (TCP cannot
                detect it), only robustness is;
* ``dup``       a second copy is delivered a little later;
* ``reorder``   with this probability the segment is held back by up to ``reorder_delay``;
* ``delay`` + uniform(0, ``jitter``) one-way propagation; optional ``bandwidth`` (bytes/s)
                serialisation with a tail-drop queue of ``queue`` segments.

An impairment *schedule* is a list of ``Phase`` objects, each lasting ``duration`` virtual
seconds; the last one lasts forever.

The event loop repeatedly jumps virtual time to min(next link delivery, A.next_deadline(),
B.next_deadline()), delivers/ticks, then lets both applications run.  Applications are
simple: the client sends ``a_data`` then half-closes; the server sends ``b_data`` (at once,
or only after the client's EOF when ``b_waits_eof``) then half-closes; each closes fully
once it has seen the peer's FIN.  ``run()`` returns a ``SimResult``; ``SimResult.check()``
asserts the byte streams and the clean close.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import time
from dataclasses import dataclass, field
from typing import Optional

A_ADDR = bytes([10, 77, 0, 2])
B_ADDR = bytes([10, 77, 0, 1])
B_PORT = 8080
A_PORT = 49152

FINAL_STATES = ("CLOSED", "TIME_WAIT")

# StackConfig for impaired-link runs: the property under test is integrity, so the
# give-up thresholds are set high enough that at 30 % loss in both directions (a round
# trip fails 51 % of the time) a legitimate give-up is astronomically unlikely, and
# TIME_WAIT (virtual seconds are free) outlasts any FIN retransmission chain.
ROBUST_CONFIG = dict(rto_initial=1.0, rto_min=0.2, rto_max=4.0, delack=0.04,
                     time_wait=120.0, syn_retries=40, synack_retries=40, retries=40)


@dataclass
class Phase:
    duration: float = 1e9
    loss: float = 0.0
    corrupt: float = 0.0
    mutate: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.05
    delay: float = 0.01
    jitter: float = 0.0

    def __repr__(self):
        parts = [f"{k}={v:g}" for k, v in vars(self).items()
                 if v != getattr(Phase, k) or k == "delay"]
        return "Phase(" + ", ".join(parts) + ")"


def state_name(conn) -> str:
    s = str(conn.state).upper().replace("-", "_")
    return s.rsplit(".", 1)[-1]


def _copy_segment(W, seg, **changes):
    kw = {k: getattr(seg, k) for k in W.Segment.__slots__}
    kw["payload"] = bytes(seg.payload)
    kw.update(changes)
    return W.Segment(**kw)


class Direction:
    """One direction of the link."""

    def __init__(self, name, schedule, rng, bandwidth=None, queue=None):
        self.name = name
        self.schedule = list(schedule) or [Phase()]
        self.rng = rng
        self.bandwidth = bandwidth
        self.queue = queue
        self.tx_free = 0.0
        self.stats = dict(sent=0, lost=0, corrupted=0, mutated=0, duplicated=0,
                          reordered=0, queue_drops=0, delivered=0, bytes=0)

    def phase(self, now) -> Phase:
        t = 0.0
        for ph in self.schedule[:-1]:
            t += ph.duration
            if now < t:
                return ph
        return self.schedule[-1]

    def transmit(self, W, seg, now):
        """Yield (deliver_time, segment, corrupted) for each copy that arrives."""
        r = self.rng
        ph = self.phase(now)
        self.stats["sent"] += 1
        self.stats["bytes"] += len(seg.payload)
        start = now
        if self.bandwidth:
            backlog = max(0.0, self.tx_free - now) * self.bandwidth / 1500.0
            if self.queue is not None and backlog > self.queue:
                self.stats["queue_drops"] += 1
                return []
            start = max(now, self.tx_free) + (len(seg.payload) + 40) / self.bandwidth
            self.tx_free = start
        if r.random() < ph.loss:
            self.stats["lost"] += 1
            return []
        if ph.corrupt and r.random() < ph.corrupt:
            seg = corrupt_on_wire(W, seg, r, verify=True)
            if seg is None:
                self.stats["corrupted"] += 1
                return []
            self.stats["corrupt_passed"] = self.stats.get("corrupt_passed", 0) + 1
        else:
            seg = _copy_segment(W, seg)
        if ph.mutate and r.random() < ph.mutate:
            self.stats["mutated"] += 1
            if r.random() < 0.5 and hasattr(W, "build_packet"):
                seg = corrupt_on_wire(W, seg, r, verify=False) or seg
            else:
                seg = mutate_segment(W, seg, r)
        t = start + ph.delay + (r.random() * ph.jitter if ph.jitter else 0.0)
        if ph.reorder and r.random() < ph.reorder:
            self.stats["reordered"] += 1
            t += r.random() * ph.reorder_delay
        out = [(t, seg)]
        if ph.dup and r.random() < ph.dup:
            self.stats["duplicated"] += 1
            out.append((t + r.random() * max(ph.delay, 0.001), _copy_segment(W, seg)))
        return out


def corrupt_on_wire(W, seg, rng: random.Random, verify: bool):
    """Flip 1-3 bits of the real IPv4/TCP bytes and parse them again.

    ``verify=True``: what a receiver with checksums on sees — ``None`` when the packet is
    dropped (any change caught by the IPv4/TCP checksums or found malformed).
    ``verify=False``: checksums off — the mutated header/options/payload is delivered
    when it still parses (a fuzz input), ``None`` when the parser rejects it.
    """
    if not hasattr(W, "build_packet"):
        return None if verify else mutate_segment(W, seg, rng)
    pkt = bytearray(W.build_packet(seg))
    # one flipped bit is always caught by the Internet checksum; two can cancel out
    for _ in range(1 if verify else rng.randrange(1, 4)):
        i = rng.randrange(len(pkt))
        pkt[i] ^= 1 << rng.randrange(8)
    try:
        fr = W.parse_packet(bytes(pkt), verify_checksum=verify)
    except W.MalformedFrame:
        return None
    if fr is None:
        return None
    s = fr.seg
    return _copy_segment(W, s)


def mutate_segment(W, seg, rng: random.Random):
    """Change one field the way an undetected bit error (or an attacker) would."""
    which = rng.randrange(12)
    bit = 1 << rng.randrange(32)
    if which == 0:
        return _copy_segment(W, seg, seq=seg.seq ^ bit)
    if which == 1:
        return _copy_segment(W, seg, ack=seg.ack ^ bit)
    if which == 2:
        return _copy_segment(W, seg, flags=seg.flags ^ (1 << rng.randrange(8)))
    if which == 3:
        return _copy_segment(W, seg, wnd=seg.wnd ^ (1 << rng.randrange(16)))
    if which == 4 and seg.payload:
        p = bytearray(seg.payload)
        p[rng.randrange(len(p))] ^= 1 << rng.randrange(8)
        return _copy_segment(W, seg, payload=bytes(p))
    if which == 5:
        return _copy_segment(W, seg, mss=rng.choice([None, 0, 1, 88, 536, 65535]))
    if which == 6:
        return _copy_segment(W, seg, wscale=rng.choice([None, 0, 14, 15, 255]))
    if which == 7 and seg.tsval is not None:
        return _copy_segment(W, seg, tsval=seg.tsval ^ bit, tsecr=seg.tsecr ^ (bit >> 1))
    if which == 8:
        l = seg.ack ^ bit
        return _copy_segment(W, seg, sack=((l, (l + rng.randrange(1, 1 << 20)) & 0xFFFFFFFF),))
    if which == 9:
        return _copy_segment(W, seg, payload=bytes(seg.payload)[:rng.randrange(len(seg.payload) + 1)])
    if which == 10:
        return _copy_segment(W, seg, sport=seg.sport ^ (1 << rng.randrange(16)))
    return _copy_segment(W, seg, urp=rng.randrange(65536), flags=seg.flags | 0x20)


class App:
    """A tiny application on one side: sends its data, half-closes, reads to EOF, closes."""

    def __init__(self, name, data: bytes, wait_eof_before_send=False, chunk=65536,
                 close_mode="shutdown"):
        self.name = name
        self.tx = data
        self.off = 0
        self.rx = bytearray()
        self.conn = None
        self.ready = False
        self.wait_eof = wait_eof_before_send
        self.chunk = chunk
        self.close_mode = close_mode      # "shutdown": FIN after data, close after EOF
        self.shut = False                 # "close": close() as soon as data and EOF done
        self.closed = False
        self.eof = False
        self.events = []
        self.bad_events = []

    def pump(self, now):
        c = self.conn
        if c is None or not self.ready:
            return
        try:
            self._pump(c, now)
        except OSError as e:        # send/shutdown after the connection died
            self.bad_events.append(("app call raised", repr(e)))
            self.ready = False

    def _pump(self, c, now):
        while True:
            d = c.recv(self.chunk)
            if not d:
                break
            self.rx += d
        if c.eof:
            self.eof = True
        if self.closed:
            return
        if not self.wait_eof or self.eof:
            while self.off < len(self.tx):
                n = c.send(self.tx[self.off:self.off + self.chunk], now)
                if not n:
                    break
                self.off += n
        if self.off == len(self.tx) and (not self.wait_eof or self.eof):
            if self.close_mode == "close" and self.eof:
                c.close(now)
                self.closed = self.shut = True
            elif not self.shut and self.close_mode == "shutdown":
                c.shutdown(now)
                self.shut = True
        if self.shut and self.eof and not self.closed:
            c.close(now)
            self.closed = True


@dataclass
class SimResult:
    seed: int
    ok_streams: bool
    a_state: str
    b_state: str
    virtual_time: float
    wall_time: float
    steps: int
    bytes_ab: int
    bytes_ba: int
    stats_ab: dict
    stats_ba: dict
    a_events: list
    b_events: list
    error: Optional[str] = None
    a_info: dict = field(default_factory=dict)
    b_info: dict = field(default_factory=dict)
    settled: bool = False
    t_done_ab: Optional[float] = None   # virtual time the last A→B byte was read by B
    t_done_ba: Optional[float] = None
    a_counters: dict = field(default_factory=dict)   # Stack.counters() at the end
    b_counters: dict = field(default_factory=dict)

    @property
    def goodput(self):
        t = max(self.virtual_time, 1e-9)
        return (self.bytes_ab + self.bytes_ba) / t

    def describe(self):
        return (f"seed={self.seed} A={self.a_state} B={self.b_state} t={self.virtual_time:.3f}s "
                f"steps={self.steps} err={self.error}\n  A→B {self.stats_ab}\n  B→A {self.stats_ba}"
                f"\n  A events {self.a_events[-12:]}\n  B events {self.b_events[-12:]}"
                f"\n  A info {self.a_info}\n  B info {self.b_info}")

    def check(self):
        assert self.error is None, self.describe()
        assert self.ok_streams, "byte streams differ\n" + self.describe()
        assert self.a_state in FINAL_STATES and self.b_state in FINAL_STATES, \
            "did not close cleanly\n" + self.describe()


class SimNet:
    def __init__(self, *, seed=0, schedule=(), schedule_ba=None, a_data=b"", b_data=b"",
                 a_config=None, b_config=None, a_overrides=None, b_overrides=None,
                 bandwidth=None, queue=None, b_waits_eof=False, time_limit=3600.0,
                 step_limit=2_000_000, app_chunk=65536, a_close="shutdown",
                 b_close="shutdown", settle=False, drop=None):
        import fpd.stack as S
        import fpd.tcp as T
        import fpd.wire as W
        self.S, self.T, self.W = S, T, W
        self.seed = seed
        self.rng = random.Random(seed)
        sched = list(schedule) or [Phase()]
        self.ab = Direction("A→B", sched, random.Random(self.rng.random()), bandwidth, queue)
        self.ba = Direction("B→A", list(schedule_ba) if schedule_ba else sched,
                            random.Random(self.rng.random()), bandwidth, queue)
        def conf(c):
            c = dict(c or {})
            # an internal error the stack would swallow (and count) is a failure here
            if "raise_errors" in getattr(S.StackConfig, "__dataclass_fields__", {}):
                c.setdefault("raise_errors", True)
            return S.StackConfig(**c)
        self.A = S.Stack(isn_key=b"sim-A-%d" % seed, config=conf(a_config))
        self.B = S.Stack(isn_key=b"sim-B-%d" % seed, config=conf(b_config))
        self.a_over = a_overrides or {}
        self.b_over = b_overrides or {}
        self.a_app = App("A", a_data, chunk=app_chunk, close_mode=a_close)
        self.b_app = App("B", b_data, wait_eof_before_send=b_waits_eof, chunk=app_chunk,
                         close_mode=b_close)
        self.time_limit = time_limit
        self.step_limit = step_limit
        self.settle = settle
        self.drop = drop        # drop(net, seg, to) -> True: lose it (patterns beyond Phase)
        self.t_done_ab = self.t_done_ba = None
        self.q = []             # heap of (time, n, direction_name, segment)
        self.n = 0
        self.now = 0.0
        names = {}
        for nm in ("connected", "accepted", "readable", "writable", "peer_closed", "reset",
                   "timed_out", "refused", "closed"):
            v = getattr(T.Event, nm.upper(), None)
            if v is not None:
                names[v] = nm
        self.ev_names = names

    # ---- plumbing ----------------------------------------------------------------------
    def _flush(self, st, d: Direction, to):
        drop = self.drop
        for seg in st.output():
            if drop is not None and drop(self, seg, to):
                d.stats["sent"] += 1
                d.stats["lost"] += 1
                continue
            for t, s in d.transmit(self.W, seg, self.now):
                self.n += 1
                heapq.heappush(self.q, (t, self.n, to, s))

    def _events(self, st, app: App):
        for ev in st.events():
            kind, obj, *extra = ev
            nm = self.ev_names.get(kind, str(kind))
            app.events.append((round(self.now, 6), nm))
            if nm == "accepted":
                if app.conn is None:
                    app.conn = extra[0] if extra else obj
                    app.ready = True
                else:
                    app.bad_events.append(("second accept", self.now))
            elif nm == "connected":
                app.ready = True
            elif nm in ("reset", "timed_out", "refused"):
                app.bad_events.append((nm, self.now, self._state(app)))

    def _state(self, app):
        return state_name(app.conn) if app.conn is not None else "NONE"

    def _service(self):
        for st, app in ((self.A, self.a_app), (self.B, self.b_app)):
            self._events(st, app)
        for _ in range(4):
            self.a_app.pump(self.now)
            self.b_app.pump(self.now)
            busy = False
            for st, app, d, to in ((self.A, self.a_app, self.ab, "B"),
                                   (self.B, self.b_app, self.ba, "A")):
                self._events(st, app)
                before = self.n
                self._flush(st, d, to)
                busy |= self.n != before
            if not busy:
                break
        self._progress()

    def _progress(self):
        if self.t_done_ab is None and len(self.b_app.rx) >= len(self.a_app.tx):
            self.t_done_ab = self.now
        if self.t_done_ba is None and len(self.a_app.rx) >= len(self.b_app.tx):
            self.t_done_ba = self.now

    def _done(self):
        a, b = self.a_app, self.b_app
        if a.conn is None or b.conn is None:
            return False
        return (self._state(a) in FINAL_STATES and self._state(b) in FINAL_STATES
                and a.eof and b.eof)

    # ---- main loop -------------------------------------------------------------------------
    def run(self) -> SimResult:
        wall0 = time.perf_counter()
        self.B.listen(B_ADDR, B_PORT, backlog=16, **self.b_over)
        self.a_app.conn = self.A.connect(0.0, A_ADDR, A_PORT, B_ADDR, B_PORT, **self.a_over)
        error = None
        steps = 0
        settled = False
        try:
            self._service()
            while True:
                steps += 1
                if steps > self.step_limit:
                    error = "step limit"
                    break
                if self._done():
                    if not self.settle:
                        break
                    # let TIME_WAIT and any stray timers run out
                    if not self.q and self.A.next_deadline() is None \
                            and self.B.next_deadline() is None:
                        settled = True
                        break
                if self.a_app.bad_events or self.b_app.bad_events:
                    if not self._done():
                        error = f"bad events A={self.a_app.bad_events} B={self.b_app.bad_events}"
                        break
                cands = [t for t in (self.q[0][0] if self.q else None,
                                     self.A.next_deadline(), self.B.next_deadline())
                         if t is not None]
                if not cands:
                    error = "deadlock: nothing in flight, no timer armed, not done"
                    break
                t = max(self.now, min(cands))
                if t > self.time_limit:
                    error = f"virtual time limit {self.time_limit}s"
                    break
                self.now = t
                while self.q and self.q[0][0] <= self.now:
                    _, _, to, seg = heapq.heappop(self.q)
                    (self.ab if to == "B" else self.ba).stats["delivered"] += 1
                    (self.B if to == "B" else self.A).input(seg, self.now)
                    self._service()
                for st in (self.A, self.B):
                    d = st.next_deadline()
                    if d is not None and d <= self.now:
                        st.tick(self.now)
                self._service()
        except Exception as e:          # an engine exception is a failure, with context
            import traceback
            error = f"exception: {e!r}\n{traceback.format_exc()}"
        a, b = self.a_app, self.b_app
        # the property: what each side read is what the other wrote (SHA-256)
        ok = sha(bytes(b.rx)) == sha(a.tx) and sha(bytes(a.rx)) == sha(b.tx)

        def info(app):
            try:
                return app.conn.info() if app.conn is not None else {}
            except Exception as e:      # pragma: no cover
                return {"error": repr(e)}
        return SimResult(
            seed=self.seed, ok_streams=ok, a_state=self._state(a), b_state=self._state(b),
            virtual_time=self.now, wall_time=time.perf_counter() - wall0, steps=steps,
            bytes_ab=len(b.rx), bytes_ba=len(a.rx), stats_ab=dict(self.ab.stats),
            stats_ba=dict(self.ba.stats), a_events=a.events, b_events=b.events,
            error=error, a_info=info(a), b_info=info(b), settled=settled,
            t_done_ab=self.t_done_ab, t_done_ba=self.t_done_ba,
            a_counters=self.A.counters(), b_counters=self.B.counters())


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def run(**kw) -> SimResult:
    return SimNet(**kw).run()
