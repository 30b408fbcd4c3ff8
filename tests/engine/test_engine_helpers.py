"""Shared helpers for the engine unit tests (virtual time, hand-built segments).

Imported by the other test_engine_*.py files; holds a few self-checks of its own.
"""

from fpd.wire import Segment, FIN, SYN, RST, PSH, ACK  # noqa: F401
from fpd.stack import Stack, StackConfig
from fpd import tcp

SRV = bytes([10, 77, 0, 1])      # the engine under test
PEER = bytes([10, 77, 0, 2])     # the scripted remote side
SPORT = 80                       # engine's listening port
PPORT = 40000                    # peer's port
MASK = 0xFFFFFFFF


def cfg(**kw):
    kw.setdefault("raise_errors", True)
    return StackConfig(**kw)


def mkseg(flags, seq, ack=0, wnd=65535, payload=b"", src=PEER, dst=SRV, sport=PPORT,
          dport=SPORT, **opts):
    return Segment(src=src, dst=dst, sport=sport, dport=dport, seq=seq & MASK, ack=ack & MASK,
                   flags=flags, wnd=wnd, payload=payload, **opts)


def kinds(events):
    return [e[0] for e in events]


class Harness:
    """One Stack driven by hand, with a virtual clock."""

    def __init__(self, now=100.0, key=b"test-key", **kw):
        self.now = now
        self.stack = Stack(key, cfg(**kw))
        self.evs = []

    def inp(self, seg):
        self.stack.input(seg, self.now)
        self.evs += self.stack.events()
        return self.stack.output()

    def advance(self, dt):
        """Move the clock, firing each due timer at its own deadline."""
        end = self.now + dt
        out = []
        while True:
            d = self.stack.next_deadline()
            if d is None or d > end:
                break
            self.now = max(self.now, d)
            self.stack.tick(self.now)
            out += self.stack.output()
        self.now = end
        self.stack.tick(end)
        out += self.stack.output()
        self.evs += self.stack.events()
        return out

    def out(self):
        self.evs += self.stack.events()
        return self.stack.output()

    def events(self):
        e, self.evs = self.evs, []
        return e

    # ---- a passive open with options, returning (conn, peer_isn, our_isn) ----
    def accept(self, listen_kw=None, syn_opts=None, piss=1000, wnd=65535, ack_wnd=None):
        listen_kw = listen_kw or {}
        self.listener = self.stack.listen(b"\0\0\0\0", SPORT, **listen_kw)
        so = dict(mss=1460, wscale=7, sack_ok=True, tsval=5000, tsecr=0)
        if syn_opts is not None:
            so = syn_opts
        out = self.inp(mkseg(SYN, piss, wnd=wnd, **so))
        assert len(out) == 1 and out[0].flags == SYN | ACK, out
        sa = out[0]
        iss = sa.seq
        ts = {}
        if sa.tsval is not None:
            ts = dict(tsval=so.get("tsval", 0) + 1, tsecr=sa.tsval)
        out = self.inp(mkseg(ACK, piss + 1, iss + 1, wnd=ack_wnd if ack_wnd is not None else
                             (wnd >> so.get("wscale", 0) if so.get("wscale") is not None else wnd),
                             **ts))
        assert out == []
        ev = self.events()
        assert ev and ev[-1][0] == tcp.Event.ACCEPTED, ev
        return ev[-1][2], piss, iss, sa


def pump(a, b, now, until, dt_max=1.0, drop=None, limit=2_000_000):
    """Run two stacks back to back until until() is true; returns the final time.
    ``drop(seg, direction)`` may return True to lose a segment."""
    steps = 0
    while not until(now):
        steps += 1
        assert steps < limit, "pump did not converge"
        moved = False
        for src, dst, d in ((a, b, "ab"), (b, a, "ba")):
            segs = src.output()
            for s in segs:
                if drop is not None and drop(s, d):
                    continue
                dst.input(s, now)
                moved = True
        if moved:
            continue
        ds = [x for x in (a.next_deadline(), b.next_deadline()) if x is not None]
        if not ds:
            if until(now):
                break
            raise AssertionError("deadlock: no segments and no timers")
        now = max(now, min(ds))
        a.tick(now)
        b.tick(now)
    return now


def test_seq_helpers():
    assert tcp.seq_lt(0xFFFFFFF0, 5)
    assert tcp.seq_gt(5, 0xFFFFFFF0)
    assert tcp.seq_diff(5, 0xFFFFFFF0) == 21
    assert tcp.seq_diff(0xFFFFFFF0, 5) == -21
    assert tcp.seq_le(7, 7) and tcp.seq_ge(7, 7)
