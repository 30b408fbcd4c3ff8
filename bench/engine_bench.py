#!/usr/bin/env python3
"""Engine-only micro-benchmark (not a test): how many segments per second the sans-IO
TCP engine (fpd.stack / fpd.tcp) handles on one core, with no I/O and no checksums.

    python bench/engine_bench.py [--seconds 2] [--profile bulk|rr|send]
                                 [--paths segment,python,compiled] [--rounds 3]

bulk  bulk receive: a scripted peer sends MSS-sized in-order segments, the engine ACKs
      (delayed ACK, every 2nd segment) and the application reads everything
send  bulk send: the engine sends MSS segments, a scripted peer ACKs every 2nd one
rr    1-byte request/response between two engines back to back (each side: one
      segment in, one segment out per transaction, the ACK piggybacked on the reply)

Paths (bulk and send; rr is one segment per burst and always the per-segment path):
segment   Stack.input per segment, one Segment per output segment (the reference)
python    fpd.fastpath as Python: each 64-segment batch through input_burst (ACK runs
          collapsed), full-sized output as SegBursts (xmit_burst)
compiled  the same through the Cython build fpd._fastpath_c
Each path runs in turn, round after round, in one process; the table gives CPU time
(time.process_time) per segment, best and median of the rounds, and the ratios.

Numbers are baselines for later work, not targets.
"""

import argparse
import cProfile
import os
import pstats
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fpd.stack import Stack, StackConfig  # noqa: E402
from fpd.wire import Segment, SYN, ACK  # noqa: E402
from fpd import fastpath, tcp  # noqa: E402
from fpd.fastpath import SegBurst  # noqa: E402


def _path(name):
    """(input_burst, xmit_burst) of a path; (None, None): per segment."""
    if name == "segment":
        return None, None
    if name == "python":
        return fastpath.py_input_burst, fastpath.py_xmit_burst
    if fastpath.IMPL != "compiled":
        raise SystemExit(f"no compiled fast path: {fastpath.WHY}")
    return fastpath.input_burst, fastpath.xmit_burst

SRV = bytes([10, 77, 0, 1])
PEER = bytes([10, 77, 0, 2])
MASK = 0xFFFFFFFF
HALF = 0x80000000


def _accept(stack, mss=1460, ts=True, sack=True):
    stack.listen(b"\0\0\0\0", 80)
    opts = dict(mss=mss, wscale=7, sack_ok=sack)
    if ts:
        opts.update(tsval=1, tsecr=0)
    stack.input(Segment(src=PEER, dst=SRV, sport=40000, dport=80, seq=1000, flags=SYN,
                        wnd=65535, **opts), 0.0)
    sa = stack.output()[0]
    tso = dict(tsval=2, tsecr=sa.tsval) if ts else {}
    stack.input(Segment(src=PEER, dst=SRV, sport=40000, dport=80, seq=1001,
                        ack=(sa.seq + 1) & MASK, flags=ACK, wnd=2048, **tso), 0.0)
    conn = [e for e in stack.events() if e[0] == tcp.Event.ACCEPTED][0][2]
    return conn, 1001, (sa.seq + 1) & MASK, sa.tsval, sa


def bench_bulk(seconds, ts=True, path="segment"):
    """The peer sends within the window the engine advertises (the SYN-ACK's 64 KB
    first, then what its ACKs say), as a real sender does; every byte offered must be
    delivered in order."""
    st = Stack(b"bench", StackConfig(rcvbuf=4 << 20))
    conn, pseq, our, their_ts, sa = _accept(st, ts=ts)
    shift = sa.wscale or 0
    right = (pseq + sa.wnd) & MASK           # a SYN-ACK's window is never scaled
    payload = bytes(1448 if ts else 1460)
    n = len(payload)
    now = 0.0
    segs = 0
    outs = 0
    delivered = 0
    t_end = time.perf_counter() + seconds
    c0 = time.process_time()
    t0 = time.perf_counter()
    tsv = 3
    inp = st.input
    ib = _path(path)[0]
    while True:
        # a batch of up to 64 segments as an RX ring would deliver them
        k = 0
        batch = []
        while k < 64 and ((right - pseq - n) & MASK) < HALF:
            seg = Segment(PEER, SRV, 40000, 80, pseq, our, ACK, 2048, 0, None, None, False,
                          tsv if ts else None, their_ts if ts else 0, (), payload)
            if ib is None:
                inp(seg, now)
                now += 0.00001
            else:
                batch.append(seg)
            pseq = (pseq + n) & MASK
            k += 1
        if ib is not None:
            ib(st, batch, now, True)
            now += 0.00001 * k
        tsv += 1
        st.tick(now)
        out = st.output()
        outs += len(out)
        for a in out:
            edge = (a.ack + (a.wnd << shift)) & MASK
            if (edge - right) & MASK < HALF:
                right = edge
        st.events()
        delivered += len(conn.recv())
        if not k and not out:
            raise AssertionError("bulk bench stalled: the engine opened no window")
        segs += k
        if segs >= 4096 and time.perf_counter() > t_end:
            break
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0
    if delivered != segs * n:
        raise AssertionError(f"bulk bench: {delivered} bytes delivered of {segs * n} sent")
    return segs / dt, outs, segs * n * 8 / dt / 1e9, cpu / segs * 1e6


def bench_send(seconds, path="segment"):
    st = Stack(b"bench", StackConfig(sndbuf=4 << 20))
    conn, pseq, our, their_ts, _ = _accept(st)
    ib, xb = _path(path)
    st.tso = xb
    chunk = bytes(256 * 1024)
    now = 0.0
    segs = 0
    acked = our
    t_end = time.perf_counter() + seconds
    c0 = time.process_time()
    t0 = time.perf_counter()
    while True:
        if conn.writable > len(chunk):
            conn.send(chunk, now)
        out = st.output()
        # each segment's end (a SegBurst stands for count of them), and its tsval
        ends = []
        for s in out:
            if type(s) is SegBurst:
                t = s.tmpl
                ln = len(s.payload)
                mss = s.mss
                ends.extend(((t.seq + min((i + 1) * mss, ln)) & MASK, t.tsval)
                            for i in range(s.count))
            else:
                ends.append(((s.seq + len(s.payload)) & MASK, s.tsval))
        # the peer ACKs every second segment it gets (one RX burst of ACKs)
        acks = []
        for i in range(1, len(ends), 2):
            acked, tsval = ends[i]
            acks.append(Segment(PEER, SRV, 40000, 80, pseq, acked, ACK, 2048, 0, None, None,
                                False, 5, tsval, (), b""))
        if ib is None:
            for a in acks:
                st.input(a, now)
                now += 0.00001
        elif acks:
            ib(st, acks, now, True)
            now += 0.00001 * len(acks)
        segs += len(ends)
        st.events()
        if not out:
            st.tick(now + 1.0)
        if segs > 50000 and time.perf_counter() > t_end:
            break
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return segs / dt, cpu / segs * 1e6


def bench_rr(seconds):
    a = Stack(b"bench-a", StackConfig())
    b = Stack(b"bench-b", StackConfig())
    b.listen(b"\0\0\0\0", 80)
    now = 0.0
    ca = a.connect(now, PEER, 40000, SRV, 80)
    cb = None
    for _ in range(4):
        for s in a.output():
            b.input(s, now)
        for s in b.output():
            a.input(s, now)
        for e in b.events():
            if e[0] == tcp.Event.ACCEPTED:
                cb = e[2]
        a.events()
    ca.nodelay = cb.nodelay = True
    trans = 0
    t_end = time.perf_counter() + seconds
    t0 = time.perf_counter()
    one = b"x"
    while True:
        for _ in range(256):
            ca.send(one, now)
            for s in a.output():
                b.input(s, now)
            cb.recv()
            cb.send(one, now)
            for s in b.output():
                a.input(s, now)
            ca.recv()
            now += 0.00005
            trans += 1
        a.events()
        b.events()
        if time.perf_counter() > t_end:
            break
    dt = time.perf_counter() - t0
    return trans / dt


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--profile", choices=["bulk", "rr", "send"])
    ap.add_argument("--paths", default="segment,python" +
                    (",compiled" if fastpath.IMPL == "compiled" else ""),
                    help="for bulk and send: segment, python, compiled (see above)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    paths = args.paths.split(",")
    if args.profile:
        fn = {"bulk": bench_bulk, "rr": bench_rr, "send": bench_send}[args.profile]
        pr = cProfile.Profile()
        pr.enable()
        if args.profile == "rr":
            fn(args.seconds)
        else:
            fn(args.seconds, path=paths[-1])
        pr.disable()
        pstats.Stats(pr).sort_stats("tottime").print_stats(20)
        return
    print(f"python {sys.version.split()[0]} ({sys.executable}), fast path build: "
          f"{fastpath.IMPL}{' (' + fastpath.WHY + ')' if fastpath.WHY else ''}")
    res = {}
    for r in range(args.rounds):
        order = paths[r % len(paths):] + paths[:r % len(paths)]
        for p in order:
            sps, outs, gbps, us = bench_bulk(args.seconds / len(paths), path=p)
            res.setdefault(("bulk receive (TS on)", p), []).append((us, sps, outs))
            sps, outs, gbps, us = bench_bulk(args.seconds / len(paths), ts=False, path=p)
            res.setdefault(("bulk receive (TS off)", p), []).append((us, sps, outs))
            sps, us = bench_send(args.seconds / len(paths), path=p)
            res.setdefault(("bulk send (ACKs in)", p), []).append((us, sps, None))
    print(f"CPU µs per segment, best of {args.rounds} (median), per path; "
          f"ratios against the per-segment path and python -> compiled")
    print(f"{'workload':<24}{'path':<10}{'best':>8}{'median':>10}{'seg/this':>10}"
          f"{'py/this':>9}")
    for work in dict.fromkeys(w for w, _ in res):
        base = min(x[0] for x in res[work, paths[0]])
        py = min(x[0] for x in res[work, "python"]) if (work, "python") in res else None
        for p in paths:
            v = sorted(x[0] for x in res[work, p])
            best = v[0]
            pyr = f"{py / best:>9.2f}" if py and p == "compiled" else ""
            print(f"{work:<24}{p:<10}{best:>8.2f}{f'({v[len(v) // 2]:.2f})':>10}"
                  f"{base / best:>10.2f}{pyr}")
    tps = bench_rr(args.seconds)
    print(f"1-byte request/response:{tps:10,.0f} transactions/s "
          f"(two engines in one process: {4 * tps:,.0f} segment operations/s, "
          f"{1e6 / (4 * tps):.2f} us each)")


if __name__ == "__main__":
    main()
