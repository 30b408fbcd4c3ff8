#!/usr/bin/env python3
"""Engine-only micro-benchmark (not a test): how many segments per second the sans-IO
TCP engine (fpd.stack / fpd.tcp) handles on one core, with no I/O and no checksums.

    python bench/engine_bench.py [--seconds 2] [--profile bulk|rr|send]

bulk  bulk receive: a scripted peer sends MSS-sized in-order segments, the engine ACKs
      (delayed ACK, every 2nd segment) and the application reads everything
send  bulk send: the engine sends MSS segments, a scripted peer ACKs every 2nd one
rr    1-byte request/response between two engines back to back (each side: one
      segment in, one segment out per transaction, the ACK piggybacked on the reply)

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
from fpd.wire import Segment, SYN, ACK, PSH  # noqa: E402
from fpd import tcp  # noqa: E402

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


def bench_bulk(seconds, ts=True):
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
    t0 = time.perf_counter()
    tsv = 3
    inp = st.input
    while True:
        # a batch of up to 64 segments as an RX ring would deliver them
        k = 0
        while k < 64 and ((right - pseq - n) & MASK) < HALF:
            seg = Segment(PEER, SRV, 40000, 80, pseq, our, ACK, 2048, 0, None, None, False,
                          tsv if ts else None, their_ts if ts else 0, (), payload)
            inp(seg, now)
            pseq = (pseq + n) & MASK
            now += 0.00001
            k += 1
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
    if delivered != segs * n:
        raise AssertionError(f"bulk bench: {delivered} bytes delivered of {segs * n} sent")
    return segs / dt, outs, segs * n * 8 / dt / 1e9


def bench_send(seconds):
    st = Stack(b"bench", StackConfig(sndbuf=4 << 20))
    conn, pseq, our, their_ts, _ = _accept(st)
    chunk = bytes(256 * 1024)
    now = 0.0
    segs = 0
    acked = our
    t_end = time.perf_counter() + seconds
    t0 = time.perf_counter()
    while True:
        if conn.writable > len(chunk):
            conn.send(chunk, now)
        out = st.output()
        # the peer ACKs every second segment it gets
        for i in range(1, len(out), 2):
            s = out[i]
            acked = (s.seq + len(s.payload)) & MASK
            st.input(Segment(PEER, SRV, 40000, 80, pseq, acked, ACK, 2048, 0, None, None,
                             False, 5, s.tsval, (), b""), now)
            now += 0.00001
        segs += len(out)
        st.events()
        if not out:
            st.tick(now + 1.0)
        if segs > 50000 and time.perf_counter() > t_end:
            break
    dt = time.perf_counter() - t0
    return segs / dt


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
    args = ap.parse_args()
    if args.profile:
        fn = {"bulk": bench_bulk, "rr": bench_rr, "send": bench_send}[args.profile]
        pr = cProfile.Profile()
        pr.enable()
        fn(args.seconds)
        pr.disable()
        pstats.Stats(pr).sort_stats("tottime").print_stats(20)
        return
    print(f"python {sys.version.split()[0]} ({sys.executable})")
    sps, outs, gbps = bench_bulk(args.seconds)
    print(f"bulk receive (TS on):   {sps:10,.0f} segments/s in   "
          f"({1e6 / sps:5.2f} us/segment, {gbps:.2f} Gbit/s payload, {outs} ACKs out)")
    sps, outs, gbps = bench_bulk(args.seconds, ts=False)
    print(f"bulk receive (TS off):  {sps:10,.0f} segments/s in   "
          f"({1e6 / sps:5.2f} us/segment, {gbps:.2f} Gbit/s payload)")
    sps = bench_send(args.seconds)
    print(f"bulk send:              {sps:10,.0f} segments/s out  ({1e6 / sps:5.2f} us/segment,"
          f" incl. ACK processing)")
    tps = bench_rr(args.seconds)
    print(f"1-byte request/response:{tps:10,.0f} transactions/s "
          f"(two engines in one process: {4 * tps:,.0f} segment operations/s, "
          f"{1e6 / (4 * tps):.2f} us each)")


if __name__ == "__main__":
    main()
