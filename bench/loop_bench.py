#!/usr/bin/env python3
"""fpd's event loop per request, on the engine alone (not a test): no network, no root.

A real ``fpd.worker.Worker`` and ``fpd.loop.FpdEventLoop`` serve an asyncio echo
Protocol (the app of ``fpd bench asyncio``), but the worker's AF_XDP socket is a
simulated one (``SimXsk``: the four rings and the UMEM over a bytearray, fpd.umem's
``sim_pair``). The "kernel" behind it is a second fpd ``Stack`` playing the client: at
every RX burst the worker asks for, the kernel takes what the worker put on the TX ring
(parse, the client engine, its app), and writes the client's next segments as frames
on the RX ring. So every server-side step of a request runs as under ``fpd run``:
parse, demux, engine input, the loop's event dispatch, ``data_received``,
``transport.write``, engine send, frame build, TX submit; only the kick is a counter
(on veth the kick is a sendto() inside which the peer's kernel stack runs; see
docs/PERFORMANCE.md).

    .venv/bin/python bench/loop_bench.py [--work rr1,rr32,crr] [--seconds 2] [--rounds 3]
                                         [--profile] [--split]

rr1 / rr32  1-byte request/response on 1 / 32 connections, one outstanding request
            per connection (the client answers each response with the next request)
crr         connect, 1-byte request, response, close (client first), one at a time

The figure is server CPU per transaction (``time.process_time`` of the whole process
minus the time spent in the simulated kernel and client), median and best of the
rounds; ``kicks/txn`` is how many TX wake-ups the worker asked for. ``--split`` times
the server's parts (wrappers around them: they add a little each) and ``--profile``
prints cProfile's top functions of one extra round.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fpd import loop as fpd_loop  # noqa: E402
from fpd import tcp, wire  # noqa: E402
from fpd import worker as fpd_worker  # noqa: E402
from fpd.stack import Stack, StackConfig  # noqa: E402
from fpd.umem import Umem, sim_pair, XDP_PACKET_HEADROOM  # noqa: E402
from fpd.xsk import XskRings  # noqa: E402

SRV_IP = bytes([10, 77, 0, 1])
CLI_IP = bytes([10, 77, 0, 2])
SRV_MAC = bytes.fromhex("020000000001")
CLI_MAC = bytes.fromhex("020000000002")
PORT = 7600
clock = time.perf_counter


class SimXsk(XskRings):
    """An XskSocket over simulated rings; the kernel's side is ``self.kernel``."""

    def __init__(self, ifname, queue=0, *, rx_size=2048, tx_size=2048, fill_size=2048,
                 comp_size=2048, nframes=4096, chunk_size=2048, check=False, **_kw):
        f_user, self.k_fill, _ = sim_pair(fill_size, 1)
        c_user, self.k_comp, _ = sim_pair(comp_size, 1, user_produces=False)
        r_user, self.k_rx, _ = sim_pair(rx_size, 2, user_produces=False)
        t_user, self.k_tx, _ = sim_pair(tx_size, 2)
        um = Umem(nframes, chunk_size, buf=bytearray(nframes * chunk_size), check=check)
        um.attach_rings(f_user, c_user)
        super().__init__(um, r_user, t_user)
        self.chunk = chunk_size
        self.busy_poll = False
        self.bind_mode = "sim"
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.kernel = None
        self.pool: list = []
        self.submits = 0

    def _kick_tx(self):
        self.kicks += 1

    def tx_submit(self, descs, lens=None):
        self.submits += 1
        return super().tx_submit(descs, lens)

    def rx_burst(self, max_n=64):
        k = self.kernel
        if k is not None:
            k.step()
        return super().rx_burst(max_n)

    def fileno(self):
        return self._fd

    def set_tx_budget(self, n):
        return False

    def stats(self):
        return {}

    def close(self):
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Client:
    """The simulated kernel and, behind it, the client: a second fpd Stack."""

    def __init__(self, xsk: SimXsk, work: str, conns: int):
        self.xsk = xsk
        self.work = work
        self.stack = Stack(b"client", StackConfig())
        self.nconns = conns
        self.txns = 0
        self.spent = 0.0            # CPU seconds spent here (excluded from the server's)
        self.port = 20000
        self.stop_at = None
        self.loop = None
        self.msg = b"x"
        self.started = False
        self.inside = False
        self.profile = None
        self.deadline = time.monotonic() + 120
        self.submits = 0

    def open(self, now):
        self.port += 1
        if self.port > 60000:
            self.port = 20001
        self.stack.connect(now, CLI_IP, self.port, SRV_IP, PORT)

    def step(self):
        pr = self.profile
        if pr is not None:
            pr.disable()
        t0 = time.process_time()
        self.inside = True
        now = time.monotonic()
        x = self.xsk
        um = x.umem
        view = um.view
        st = self.stack
        # what the server sent: TX ring -> client engine -> completion ring
        k = x.k_tx.peek(4096)
        if k:
            addrs, lens = x.k_tx.read_descs(k)
            for a, ln in zip(addrs, lens):
                fr = wire.parse_frame(view[a:a + ln], False)
                seg = fr.seg
                seg.payload = bytes(seg.payload)
                st.input(seg, now)
            x.k_tx.release(k)
            x.k_comp.reserve(k)
            x.k_comp.write_addrs(addrs)
            x.k_comp.submit(k)
        if not self.started:
            self.started = True
            for _ in range(self.nconns):
                self.open(now)
        st.tick(now)
        for ev in st.events():
            kind, c = ev[0], ev[1]
            if kind is tcp.Event.CONNECTED:
                c.send(self.msg, now)
            elif kind is tcp.Event.READABLE:
                d = c.recv()
                if d:
                    self.txns += 1
                    if self.work == "crr":
                        c.close(now)            # and the next one at once, as a
                        self.open(now)          # crr client does
                    else:
                        c.send(self.msg, now)
        if self.stop_at is not None and self.txns >= self.stop_at:
            self.loop.stop()
        if now > self.deadline:
            self.loop.stop()
            raise RuntimeError(f"stalled: {self.txns} transactions")
        out = st.output()
        if out:
            # the fill ring -> a pool -> RX frames (headroom as the kernel leaves it)
            pool = x.pool
            n = x.k_fill.peek(4096)
            if n:
                pool += x.k_fill.read_addrs(n)
                x.k_fill.release(n)
            m = min(len(out), len(pool))
            ra, rl = [], []
            for i in range(m):
                a = pool[i] + XDP_PACKET_HEADROOM
                ln = wire.build_frame_into(view[a:a + 1792], 0, CLI_MAC, SRV_MAC, out[i])
                ra.append(a)
                rl.append(ln)
            del pool[:m]
            r = x.k_rx.reserve(m)
            assert r == m, "RX ring full"
            x.k_rx.write_descs(ra, rl)
            x.k_rx.submit(m)
        self.inside = False
        self.spent += time.process_time() - t0
        if pr is not None:
            pr.enable()


class Echo(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t

    def data_received(self, d):
        self.t.write(d)


def make_worker():
    """A real Worker on a SimXsk (no interface, no netlink, no root)."""
    real_xsk, real_info = fpd_worker.XskSocket, fpd_worker._neigh.iface_info
    fpd_worker.XskSocket = SimXsk
    fpd_worker._neigh.iface_info = lambda name: (1, SRV_MAC, 1500)
    try:
        w = fpd_worker.Worker("sim0", 0, isn_key=b"bench")
    finally:
        fpd_worker.XskSocket, fpd_worker._neigh.iface_info = real_xsk, real_info
    w._macs[CLI_IP] = CLI_MAC
    w._mac_until[CLI_IP] = float("inf")
    w.neigh_ttl = 1e9
    w._neigh_sweep = float("inf")
    w.reader_interval = 1e9          # no kernel fds to look at
    return w


def run_one(work: str, seconds: float, profile=None, split=None):
    """One round: (server CPU s per txn, kicks per txn, txns)."""
    w = make_worker()
    conns = 32 if work == "rr32" else 1
    cl = Client(w.xsk, "crr" if work == "crr" else "rr", conns)
    w.xsk.kernel = cl
    ctx = fpd_loop.Context(w, ports=[PORT], addr="10.77.0.1")
    loop = fpd_loop.FpdEventLoop(ctx, spin=3600.0)
    cl.loop = loop

    async def main():
        srv = await loop.create_server(Echo, "0.0.0.0", PORT, backlog=1024)
        return srv

    try:
        srv = loop.run_until_complete(main())
        # warm up, then measure a fixed count calibrated from the warm-up
        cl.stop_at = 200
        loop.run_forever()
        t0, s0, n0, k0 = time.process_time(), cl.spent, cl.txns, w.xsk.submits
        w0 = clock()
        cl.stop_at = n0 + 200
        loop.run_forever()
        rate = (cl.txns - n0) / max(clock() - w0, 1e-6)
        target = max(200, int(rate * seconds))
        if split is not None:
            split.client = cl
            split.install(w, loop)
        t0, s0, n0, k0 = time.process_time(), cl.spent, cl.txns, w.xsk.submits
        i0 = w.iterations
        cl.stop_at = n0 + target
        if profile is not None:
            cl.profile = profile
            profile.enable()
        loop.run_forever()
        if profile is not None:
            profile.disable()
            cl.profile = None
        cpu = time.process_time() - t0 - (cl.spent - s0)
        n = cl.txns - n0
        kicks = w.xsk.submits - k0
        run_one.passes = (w.iterations - i0) / n
        if split is not None:
            split.uninstall(w, loop)
            split.txns += n
        srv.close()
        return cpu / n, kicks / n, n
    finally:
        loop.close()
        w.close(reset=False)


class Split:
    """CPU time (time.thread_time: a system call each, which the parts absorb) inside
    the server's parts, accumulated; the client's
    own calls of the same functions (it runs fpd's engine too) are not counted."""

    PARTS = ("parse", "engine input", "loop dispatch + app callback", "engine send",
             "engine output", "frame build", "TX submit (ring; kick)", "timers (tick)")

    def __init__(self):
        self.acc = dict.fromkeys(self.PARTS, 0.0)
        self.txns = 0
        self.client = None

    def _wrap(self, name, fn):
        acc = self.acc

        cpu = time.thread_time

        def timed(*a, **kw):
            if self.client.inside:
                return fn(*a, **kw)
            t = cpu()
            try:
                return fn(*a, **kw)
            finally:
                acc[name] += cpu() - t
        return timed

    def install(self, w, loop):
        """Wrap the parts; a compiled engine's ``Connection.send`` cannot be wrapped
        (an immutable type), so then 'engine send' is ``FpdTransport.write`` (the
        transport's own few lines and the engine's send inside it)."""
        P = self.PARTS
        from fpd import fastpath
        send = (tcp.Connection, "send")
        if isinstance(tcp.Connection.__dict__.get("send"), type(lambda: 0)):
            self.send_part = "Connection.send"
        else:
            send = (fpd_loop.FpdTransport, "write")
            self.send_part = "FpdTransport.write (compiled engine)"
        parts = [((fpd_worker, "parse_burst"), P[0]), ((fastpath, "input_burst"), P[1]),
                 (send, P[3]), ((type(w.stack), "output_coalesced"), P[4]),
                 ((fpd_worker, "build_frame_into"), P[5]), ((SimXsk, "tx_submit"), P[6]),
                 ((type(w.stack), "tick"), P[7])]
        self._saved = [(o, a, getattr(o, a)) for (o, a), _ in parts]
        for (o, a), name in parts:
            setattr(o, a, self._wrap(name, getattr(o, a)))
        loop._on_events = self._wrap(P[2], loop._on_events)

    def uninstall(self, w, loop):
        for o, a, v in self._saved:
            setattr(o, a, v)
        del loop._on_events

    def report(self, cpu, n):
        """Lines of the split, us per transaction; 'loop dispatch + app' without the
        engine send inside it; the rest is the loop's and the worker's own code."""
        acc = dict(self.acc)
        acc["loop dispatch + app callback"] -= acc["engine send"]
        lines = [(k, v / n * 1e6) for k, v in acc.items()]
        rest = cpu - sum(acc.values()) / n
        lines.append(("asyncio + worker pass + RX/fill rings (rest)", rest * 1e6))
        return lines


#: levers of stop 17, each with the reference it replaces (lever -> (module, attr, off))
def _levers():
    return {"cbuild": (wire, "_build1", None), "stay": (fpd_loop, "STAY", False)}


_saved_levers: dict = {}


def set_levers(on: set):
    """Turn this stop's levers on (names in ``on``) or back to their reference."""
    for name, (mod, attr, off) in _levers().items():
        if name not in _saved_levers:
            _saved_levers[name] = getattr(mod, attr)
        setattr(mod, attr, _saved_levers[name] if name in on else off)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", default="all",
                    help="comma-separated: 'ref' (every lever off), 'all', or lever names "
                         f"joined with '+' ({', '.join(_levers())}); rounds alternate them")
    ap.add_argument("--work", default="rr1,rr32,crr")
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--split", action="store_true")
    a = ap.parse_args()
    works = a.work.split(",")
    variants = a.variants.split(",")

    def lever_set(v):
        return set(_levers()) if v == "all" else set() if v == "ref" else set(v.split("+"))
    res = {(wk, v): [] for wk in works for v in variants}
    kicks = {}
    for r in range(a.rounds):
        for wk in (works if r % 2 == 0 else works[::-1]):
            for v in (variants if r % 2 == 0 else variants[::-1]):
                set_levers(lever_set(v))
                cpu, kk, n = run_one(wk, a.seconds)
                res[wk, v].append(cpu)
                kicks[wk, v] = kk
    set_levers(lever_set(variants[-1]))
    print(f"{'workload':<10}{'variant':<16}{'median us/txn':>15}{'best':>10}"
          f"{'submits/txn':>13}{'vs first':>10}")
    for wk in works:
        first = statistics.median(res[wk, variants[0]])
        for v in variants:
            m = statistics.median(res[wk, v])
            print(f"{wk:<10}{v:<16}{m * 1e6:>15.2f}{min(res[wk, v]) * 1e6:>10.2f}"
                  f"{kicks[wk, v]:>13.2f}{m / first:>10.2f}")
    if a.split:
        for wk in works:
            sp = Split()
            cpu, _, n = run_one(wk, a.seconds, split=sp)
            print(f"\n{wk}: split, us per txn (parts: CPU time; server CPU "
                  f"{cpu * 1e6:.2f}; engine send = {sp.send_part})")
            for k, v in sp.report(cpu, n):
                print(f"  {k:<48}{v:8.2f}")
    if a.profile:
        for wk in works:
            pr = cProfile.Profile()
            run_one(wk, a.seconds, profile=pr)
            print(f"\n{wk}: cProfile (tottime)")
            pstats.Stats(pr).sort_stats("tottime").print_stats(30)
            pstats.Stats(pr).sort_stats("cumulative").print_stats(40)


if __name__ == "__main__":
    main()
