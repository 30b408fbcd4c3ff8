"""Long transfers and long idles against the kernel's TCP (issue #14 item 6).

- The sequence space wraps in the middle of a transfer: the engine's ISN is set just
  below 2^32 (a test hook: the stack's ``_isn`` replaced on the instance) and its
  timestamp clock too (TSval wraps 300 ms in), with window scaling and timestamps
  negotiated; 200 MB each way against the kernel, SHA-256 both ways.
- A connection idle past several keepalive probes and past the TIME_WAIT of another
  connection (short timers) carries data intact afterwards.
- ``--run-slow``: the real thing, more than 4 GiB each way on one connection (both
  sequence spaces wrap at least once, whatever the ISNs), streamed (nothing held in
  memory), SHA-256 both ways; prints the rate.
"""

import contextlib
import hashlib
import threading
import time

import pytest

from fpd import tcp
from fpd.stack import StackConfig
from fpd.worker import Worker
from test_worker import connect_kernel, fpd_on

MASK = 0xFFFFFFFF
BLOCK = hashlib.sha256(b"long").digest() * 2048          # 64 KiB, the stream's pattern


def stream_hash(n: int) -> str:
    h = hashlib.sha256()
    full, rest = divmod(n, len(BLOCK))
    for _ in range(full):
        h.update(BLOCK)
    h.update(BLOCK[:rest])
    return h.hexdigest()


class Stream:
    """Engine-side app for one accepted connection: sends ``n`` bytes of the pattern
    (generated as it goes), hashes what it receives, closes after the peer's EOF."""

    def __init__(self, n: int):
        self.n = n
        self.sent = 0
        self.rx = hashlib.sha256()
        self.rx_bytes = 0
        self.conn = None
        self.eof = self.closed = False
        self.error = None
        self.info = None
        self.iss = self.irs = None
        self.connected = threading.Event()
        self.done = threading.Event()
        self.view = memoryview(BLOCK + BLOCK)

    def __call__(self, w, evs, now):
        for ev in evs:
            kind = ev[0]
            if kind == tcp.Event.ACCEPTED:
                self.conn = ev[2]
                self.iss, self.irs = self.conn.iss, self.conn.irs
                self.connected.set()
            elif kind == tcp.Event.PEER_CLOSED:
                self.eof = True
            elif kind in (tcp.Event.RESET, tcp.Event.TIMED_OUT, tcp.Event.REFUSED):
                self.error = kind
            elif kind == tcp.Event.CLOSED:
                self.done.set()
        c = self.conn
        if c is None or self.closed or self.error:
            return
        if self.info is None and c.state == tcp.ESTABLISHED:
            self.info = c.info()
        while c.readable:
            d = c.recv(1 << 20)
            self.rx.update(d)
            self.rx_bytes += len(d)
        while self.sent < self.n:
            off = self.sent % len(BLOCK)
            k = c.send(self.view[off:off + min(65536, self.n - self.sent)], now)
            if not k:
                break
            self.sent += k
        if self.sent == self.n and self.eof:
            c.close(now)
            self.closed = True


def kernel_stream(sock, n: int, timeout: float):
    """Send ``n`` pattern bytes on ``sock`` while hashing what comes back until EOF."""
    h = hashlib.sha256()
    got = [0]

    def reader():
        while True:
            d = sock.recv(1 << 20)
            if not d:
                return
            h.update(d)
            got[0] += len(d)
    r = threading.Thread(target=reader, daemon=True)
    r.start()
    view = memoryview(BLOCK)
    left = n
    while left:
        k = min(left, len(BLOCK))
        sock.sendall(view[:k])
        left -= k
    sock.shutdown(1)
    r.join(timeout)
    assert not r.is_alive(), "the kernel never saw EOF"
    return h.hexdigest(), got[0]


def _wrap_isn(w, below: int, ts_in: float):
    """The test hook: the engine's next connections start ``below`` bytes short of 2^32
    and their TSval wraps ``ts_in`` s from now."""
    base = int(time.monotonic() * 1000)
    ts_off = (2**32 - base - int(ts_in * 1000)) & MASK

    def isn(la, lp, ra, rp, now):
        return (2**32 - below) & MASK, ts_off
    w.stack._isn = isn


@contextlib.contextmanager
def _served(bed, app, port, cfg, seconds):
    """test_worker.fpd_on (steering + one check-mode Worker, its loop in a thread, always
    torn down) for a loop allowed to run ``seconds`` instead of 120."""
    if seconds <= 120:
        with fpd_on(bed, app, port=port, cfg=cfg) as sw:
            yield sw
        return
    orig = Worker.run

    def run(self, until=None, max_seconds=None, **kw):
        return orig(self, until, max_seconds=seconds, **kw)
    Worker.run = run
    try:
        with fpd_on(bed, app, port=port, cfg=cfg) as sw:
            yield sw
    finally:
        Worker.run = orig


def _transfer(bed, n, port, cfg, hook=None, timeout=120):
    app = Stream(n)
    with _served(bed, app, port, cfg, timeout) as (st, w):
        if hook:
            hook(w)
        s = connect_kernel(bed, port, timeout=timeout)
        t0 = time.monotonic()
        try:
            got, k = kernel_stream(s, n, timeout)
        finally:
            s.close()
        assert app.done.wait(30), "the engine's connection never reached CLOSED"
        dt = time.monotonic() - t0
        stats = w.stats()
    want = stream_hash(n)
    assert app.error is None
    assert k == n and got == want, "the kernel received something else"
    assert app.rx_bytes == n and app.rx.hexdigest() == want, "fpd received something else"
    return app, stats, dt, None


@pytest.mark.timeout(180)
def test_sequence_and_timestamp_wrap_mid_transfer(testbed):
    n = 200 * 1000 * 1000
    app, stats, dt, _ = _transfer(testbed, n, 5041, StackConfig(time_wait=0.5),
                                  hook=lambda w: _wrap_isn(w, 100 * 1000 * 1000, 0.3))
    assert app.iss == (2**32 - 100 * 1000 * 1000) & MASK
    assert (app.iss + 1 + n) > 2**32                  # our sequence numbers wrapped
    i = app.info
    assert i["timestamps"] and i["wscale"] and i["sack"], i   # negotiated with the kernel
    assert i["snd_wscale"] > 0 and i["rcv_wscale"] > 0, i
    assert dt > 0.3                                  # TSval wrapped during the transfer
    assert stats["stack"]["paws_drops"] == 0            # no segment of ours taken as old
    print(f"wrap: {2 * n / dt / 1e6:.0f} MB/s both ways together, kernel irs {app.irs}")


@pytest.mark.timeout(60)
def test_idle_past_keepalive_and_time_wait(testbed):
    bed = testbed
    cfg = StackConfig(time_wait=1.0, keepalive=True, keepalive_idle=0.5,
                      keepalive_interval=0.3, keepalive_count=3)
    apps = []
    pending = {}

    def app(w, evs, now):                          # echo, whatever the send buffer takes
        for ev in evs:
            if ev[0] == tcp.Event.ACCEPTED:
                apps.append(ev[2])
                pending[ev[2]] = bytearray()
        for c in apps:
            buf = pending[c]
            while c.readable and len(buf) < 1 << 20:
                buf += c.recv(65536)
            if buf == b"bye" and c.state == tcp.ESTABLISHED:
                buf.clear()
                c.close(now)                       # the engine closes first: TIME_WAIT
            while buf:
                k = c.send(bytes(buf[:65536]), now)
                if not k:
                    break
                del buf[:k]
            if c.state == tcp.CLOSE_WAIT and not buf:
                c.close(now)

    with fpd_on(bed, app, port=5042, cfg=cfg) as (st, w):
        idle = connect_kernel(bed, 5042)
        idle.sendall(b"before")
        assert idle.recv(100) == b"before"
        # two more connections come and go meanwhile: the kernel closes the first (its
        # TIME_WAIT), the engine the second (TIME_WAIT in the engine, 1 s)
        other = connect_kernel(bed, 5042)
        other.sendall(b"x")
        assert other.recv(10) == b"x"
        other.close()
        third = connect_kernel(bed, 5042)
        third.sendall(b"bye")
        assert third.recv(10) == b""               # the engine's FIN
        third.close()
        time.sleep(0.3)
        tw = [c for c in apps if c.state == tcp.TIME_WAIT]
        assert len(tw) == 1, [c.state for c in apps]
        time.sleep(4.0)                            # > idle + 3 probes and > TIME_WAIT
        s = w.stats()["stack"]
        assert s["keepalive_probes"] >= 3, s          # answered by the kernel each time
        assert tw[0].state == tcp.CLOSED, tw[0].state   # its TIME_WAIT ran out
        data = bytes(range(256)) * 4000
        idle.sendall(data)
        got = bytearray()
        while len(got) < len(data):
            got += idle.recv(1 << 16)
        assert bytes(got) == data
        assert apps[0].state == tcp.ESTABLISHED
        idle.close()


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_more_than_4_gib_each_way(testbed):
    n = (4 << 30) + (256 << 20)
    app, stats, dt, _ = _transfer(testbed, n, 5043, StackConfig(time_wait=0.5),
                                  timeout=1500)
    i = app.info
    assert i["timestamps"] and i["wscale"]
    assert (app.iss + 1 + n) > 2**32 and (app.irs + 1 + n) > 2**32   # both wrapped
    print(f"4.25 GiB each way in {dt:.1f} s: {2 * n * 8 / dt / 1e9:.2f} Gbit/s both "
          f"directions together ({n * 8 / dt / 1e9:.2f} each way); retransmits "
          f"{stats['stack'].get('retransmits')}")
