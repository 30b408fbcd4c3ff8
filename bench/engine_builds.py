#!/usr/bin/env python3
"""The engine's two builds side by side (not a test): fpd/tcp.py as Python against its
Cython build fpd._tcp_c (typed extension types, fpd/_tcp_c.pxd), in one process, the
builds alternated round by round (``fpd.tcp.use_build``), CPU time (time.process_time)
per unit of work.

    python bench/engine_builds.py [--seconds 1] [--rounds 3] [--work bulk,bulk-fp,send,send-fp,rr,crr]

bulk      bulk receive, TS on: MSS segments in order through Stack.input one by one
bulk-fp   the same, 64-segment batches through the fast path (fpd.fastpath, its build)
send      bulk send, the peer ACKs every 2nd segment, each ACK through Stack.input
send-fp   the same, the ACKs of one burst through the fast path, full segments as SegBursts
rr        1-byte request/response between two engines back to back (per transaction:
          two segments, each carrying the other side's ACK)
crr       connect, 1-byte request, 1-byte response, close, between two engines (per
          connection: handshake, data, FINs, the TIME_WAIT entry expired by a tick)

Every round checks that both builds did the same work (segments per unit, to 2 decimals:
the time-bounded loops end at different counts), so a
build that took a shortcut shows up as a failure, not a speed-up.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import engine_bench as eb  # noqa: E402
from fpd import fastpath, tcp  # noqa: E402
from fpd.stack import Stack, StackConfig  # noqa: E402

SRV, PEER = eb.SRV, eb.PEER


def _pair():
    a = Stack(b"bench-a", StackConfig())
    b = Stack(b"bench-b", StackConfig())
    b.listen(b"\0\0\0\0", 80)
    return a, b


def _shuttle(a, b, now):
    n = 0
    while True:
        oa = a.output()
        for s in oa:
            b.input(s, now)
        ob = b.output()
        for s in ob:
            a.input(s, now)
        n += len(oa) + len(ob)
        if not oa and not ob:
            return n


def work_rr(seconds):
    a, b = _pair()
    now = 0.0
    ca = a.connect(now, PEER, 40000, SRV, 80)
    _shuttle(a, b, now)
    cb = [e[2] for e in b.events() if e[0] == tcp.Event.ACCEPTED][0]
    a.events()
    ca.nodelay = cb.nodelay = True
    one = b"x"
    trans = segs = 0
    t_end = time.perf_counter() + seconds
    c0 = time.process_time()
    while True:
        for _ in range(256):
            ca.send(one, now)
            for s in a.output():
                b.input(s, now)
                segs += 1
            cb.recv()
            cb.send(one, now)
            for s in b.output():
                a.input(s, now)
                segs += 1
            if ca.recv() != one:
                raise AssertionError("rr: the response did not arrive")
            now += 0.00005
            trans += 1
        a.events()
        b.events()
        if time.perf_counter() > t_end:
            break
    return (time.process_time() - c0) / trans * 1e6, segs / trans


def work_crr(seconds):
    a, b = _pair()
    now = 0.0
    conns = segs = 0
    port = 1024
    t_end = time.perf_counter() + seconds
    c0 = time.process_time()
    while True:
        for _ in range(64):
            port = port + 1 if port < 65000 else 1025
            ca = a.connect(now, PEER, port, SRV, 80)
            segs += _shuttle(a, b, now)
            cb = [e[2] for e in b.events() if e[0] == tcp.Event.ACCEPTED][0]
            a.events()
            ca.send(b"q", now)
            segs += _shuttle(a, b, now)
            if cb.recv() != b"q":
                raise AssertionError("crr: the request did not arrive")
            cb.send(b"r", now)
            cb.close(now)
            segs += _shuttle(a, b, now)
            if ca.recv() != b"r":
                raise AssertionError("crr: the response did not arrive")
            ca.close(now)
            segs += _shuttle(a, b, now)
            a.events()
            b.events()
            now += 0.001
            conns += 1
        now += 200.0                 # past TIME_WAIT: the tables stay small
        a.tick(now)
        b.tick(now)
        _shuttle(a, b, now)
        a.events()
        b.events()
        if time.perf_counter() > t_end:
            break
    return (time.process_time() - c0) / conns * 1e6, segs / conns


def _fp(work):
    return "compiled" if fastpath.IMPL == "compiled" else "python"


WORK = {
    "bulk": ("bulk receive, µs/segment",
             lambda s: (eb.bench_bulk(s, path="segment")[3], None)),
    "bulk-fp": ("bulk receive, fast path, µs/segment",
                lambda s: (eb.bench_bulk(s, path=_fp(s))[3], None)),
    "send": ("bulk send, µs/segment", lambda s: (eb.bench_send(s, path="segment")[1], None)),
    "send-fp": ("bulk send, fast path, µs/segment",
                lambda s: (eb.bench_send(s, path=_fp(s))[1], None)),
    "rr": ("RR 1 B, µs/transaction", work_rr),
    "crr": ("connect-request-close, µs/connection", work_crr),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=1.0, help="per workload, build, round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default=",".join(WORK))
    args = ap.parse_args()
    if tcp._compiled is None:
        raise SystemExit(f"no compiled engine: {tcp.WHY}")
    works = args.work.split(",")
    builds = ["python", "compiled"]
    print(f"python {sys.version.split()[0]}, fast path: {fastpath.IMPL}, "
          f"load average {os.getloadavg()[0]:.1f}")
    res = {}
    try:
        for r in range(args.rounds):
            for bld in (builds if r % 2 == 0 else builds[::-1]):
                tcp.use_build(bld)
                for w in works:
                    us, per = WORK[w][1](args.seconds)
                    res.setdefault((w, bld), []).append((us, per))
    finally:
        tcp.use_build("compiled")
    print(f"CPU µs per unit, best of {args.rounds} (median); python/compiled > 1: "
          "the compiled build is faster")
    print(f"{'workload':<40}{'python':>14}{'compiled':>16}{'py/comp':>9}")
    for w in works:
        py = [u for u, _ in res[(w, "python")]]
        co = [u for u, _ in res[(w, "compiled")]]
        per = {round(p, 2) for _, p in res[(w, "python")] + res[(w, "compiled")]
               if p is not None}
        if len(per) > 1:
            raise SystemExit(f"{w}: the builds did different work (segments per unit {per})")
        print(f"{WORK[w][0]:<40}{min(py):>7.2f} ({statistics.median(py):5.2f})"
              f"{min(co):>8.2f} ({statistics.median(co):5.2f}){min(py) / min(co):>9.2f}")


if __name__ == "__main__":
    main()
