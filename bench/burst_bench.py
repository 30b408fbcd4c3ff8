#!/usr/bin/env python3
"""The worker's per-frame work without I/O (not a test): CPU µs per data segment of each
data-path lever, measured in the same run, interleaved, best of several repeats (CPU
time, so a busy machine moves the numbers less than it moves throughput).

    .venv/bin/python bench/burst_bench.py [--repeats 7] [--segs 20000] [--burst 64]
                                          [--profile recv|send LEVER]

recv  a peer's in-order MSS-sized data frames (NOP NOP TS, complete checksums) in RX
      bursts of --burst frames: parse, engine input, the app reads, the ACK frames built
send  the app writes, the engine sends MSS segments as frames; the peer's ACK frames
      (one per two segments) come back in bursts: parse, engine, frames built

Levers (each adds one to the one before): ref (parse_frame per frame, Stack.input per
segment, build_frame_into per segment: the per-segment reference), parse (one
wire.parse_burst per RX burst, C), burst (fastpath.input_burst), tso (template transmit:
fastpath.xmit_burst + wire.stamp_frames), all (+ a run of pure ACKs: one transmit),
compiled (all, with the Cython build of fpd/fastpath.py, fpd._fastpath_c; the levers before
it run fpd/fastpath.py as Python). The code mirrors Worker._rx and Worker._flush.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fpd import fastpath, wire  # noqa: E402
from fpd.fastpath import SegBurst  # noqa: E402
from fpd.stack import Stack, StackConfig  # noqa: E402
from fpd.wire import ACK, SYN, Segment  # noqa: E402

SRV = bytes([10, 77, 0, 1])
PEER = bytes([10, 77, 0, 2])
SMAC = b"\x02\x00\x00\x00\x00\x01"
PMAC = b"\x02\x00\x00\x00\x00\x02"
MASK = 0xFFFFFFFF
CHUNK = 2048
LEVERS = {
    "ref": dict(parse=False, burst=False, tso=False, acks=False),
    "parse": dict(parse=True, burst=False, tso=False, acks=False),
    "burst": dict(parse=True, burst=True, tso=False, acks=False),
    "tso": dict(parse=True, burst=True, tso=True, acks=False),
    "all": dict(parse=True, burst=True, tso=True, acks=True),
    "compiled": dict(parse=True, burst=True, tso=True, acks=True, compiled=True),
}


class Path:
    """Worker._rx / Worker._flush over a bytearray 'UMEM', no rings."""

    def __init__(self, lever, nframes=4096):
        kw = LEVERS[lever]
        self.parse = kw["parse"]
        self.burst = kw["burst"]
        self.acks = kw["acks"]
        compiled = kw.get("compiled", False)
        if compiled and fastpath.IMPL != "compiled":
            raise SystemExit("the compiled lever needs fpd._fastpath_c (pip install -e .)")
        self.input_burst = fastpath.input_burst if compiled else fastpath.py_input_burst
        self.stack = Stack(b"k" * 16, StackConfig(rcvbuf=1 << 22, sndbuf=1 << 22))
        if kw["tso"]:
            self.stack.tso = fastpath.xmit_burst if compiled else fastpath.py_xmit_burst
        self.mem = bytearray(CHUNK * nframes)
        self.view = memoryview(self.mem)
        self.tx_base = CHUNK * (nframes // 2)
        self.tx_frames = 0

    def rx(self, addrs, lens, now):
        view = self.view
        if self.parse:
            segs, _ = wire.parse_burst(view, addrs, lens, True)
        else:
            segs, _ = wire._parse_burst_py(view, addrs, lens, True)
        if None in segs:
            for i, s in enumerate(segs):
                if s is None:
                    fr = wire.parse_frame(view[addrs[i]:addrs[i] + lens[i]], True)
                    segs[i] = fr.seg if fr is not None else None
        if self.burst:
            self.input_burst(self.stack, segs, now, self.acks)
        else:
            inp = self.stack.input
            for s in segs:
                if s is not None:
                    inp(s, now)

    def tx(self):
        out = self.stack.output_coalesced()
        view = self.view
        a = self.tx_base
        lens = []
        for seg in out:
            if type(seg) is SegBurst:
                addrs = [a + i * CHUNK for i in range(seg.count)]
                if seg.header is None:
                    seg.header = wire.template_header(SMAC, PMAC, seg.tmpl)
                lens.extend(wire.stamp_frames(view, addrs, SMAC, PMAC, seg.tmpl, seg.payload,
                                              seg.mss, seg.last_flags, None, seg.header))
            else:
                lens.append(wire.build_frame_into(view[a:a + CHUNK], 0, SMAC, PMAC, seg))
        self.tx_frames += len(lens)
        return out


def _established(path, mss):
    st = path.stack
    st.listen(b"\0\0\0\0", 80)
    st.input(Segment(src=PEER, dst=SRV, sport=40000, dport=80, seq=1000, flags=SYN,
                     wnd=65535, mss=mss, wscale=7, sack_ok=True, tsval=1, tsecr=0), 0.0)
    synack = st.output()[0]
    iss = synack.seq
    st.input(Segment(src=PEER, dst=SRV, sport=40000, dport=80, seq=1001,
                     ack=(iss + 1) & MASK, flags=ACK, wnd=65535, tsval=2,
                     tsecr=synack.tsval), 0.0)
    st.events()
    return st.connections()[0], iss


def run_recv(lever, nsegs, burst, mss=1448):
    path = Path(lever)
    conn, iss = _established(path, mss + 12)
    pay = bytes(range(256)) * 6
    pay = pay[:mss]
    # prebuild the frames of one burst worth of sequence space, restamped per burst
    addrs = [i * CHUNK for i in range(burst)]
    seq = 1001
    ts = 3
    now = 0.001
    cpu = 0.0
    done = 0
    while done < nsegs:
        lens = []
        # the peer's frames (not timed), within the window the engine advertised
        room = (conn.rcv_adv_o - (seq - 1000)) // mss
        for a in addrs[:max(1, min(room, burst))]:
            seg = Segment(PEER, SRV, 40000, 80, seq & MASK, (iss + 1) & MASK, ACK, 65535,
                          0, None, None, False, ts, 5, (), pay)
            lens.append(wire.build_frame_into(path.mem, a, PMAC, SMAC, seg))
            seq += mss
        t1 = time.process_time()
        path.rx(addrs[:len(lens)], lens, now)
        conn.recv(-1)
        path.stack.events()
        path.stack.tick(now)
        path.tx()
        cpu += time.process_time() - t1
        done += len(lens)
        ts += 1
        now += 0.0005
    return cpu / done * 1e6


def run_send(lever, nsegs, burst, mss=1448):
    path = Path(lever)
    conn, iss = _established(path, mss + 12)
    data = bytes(range(256)) * 4096                 # 1 MiB
    peer_ack = 1
    ts = 3
    now = 0.001
    cpu = 0.0
    sent = 0
    addrs = [i * CHUNK for i in range(burst)]
    while sent < nsegs:
        t1 = time.process_time()
        if len(conn.sndq) - (conn.sndq_a - conn.sndq_o) < (1 << 20):
            conn.send(data, now)
        n0 = path.tx_frames
        path.tx()
        cpu += time.process_time() - t1
        sent += path.tx_frames - n0
        # the peer ACKs everything sent so far, one ACK per two segments, in bursts
        hi = conn.snd_nxt_o
        acks = []
        while peer_ack < hi:
            peer_ack = min(peer_ack + 2 * conn.mss, hi)
            acks.append(peer_ack)
        for k in range(0, len(acks), burst):
            part = acks[k:k + burst]
            lens = []
            for a, ack in zip(addrs, part):
                seg = Segment(PEER, SRV, 40000, 80, 1001, (iss + ack) & MASK, ACK, 65535,
                              0, None, None, False, ts, 5, (), b"")
                lens.append(wire.build_frame_into(path.mem, a, PMAC, SMAC, seg))
            t1 = time.process_time()
            path.rx(addrs[:len(part)], lens, now)
            path.stack.tick(now)
            n0 = path.tx_frames
            path.tx()
            cpu += time.process_time() - t1
            sent += path.tx_frames - n0
        ts += 1
        now += 0.0005
    return cpu / sent * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--segs", type=int, default=20000)
    ap.add_argument("--burst", type=int, default=64)
    ap.add_argument("--levers", default="ref,parse,burst,tso,all" +
                    (",compiled" if fastpath.IMPL == "compiled" else ""))
    ap.add_argument("--profile", nargs=2, metavar=("WORK", "LEVER"))
    args = ap.parse_args()
    fns = {"recv": run_recv, "send": run_send}
    if args.profile:
        work, lever = args.profile
        pr = cProfile.Profile()
        pr.enable()
        fns[work](lever, args.segs, args.burst)
        pr.disable()
        pstats.Stats(pr).sort_stats("tottime").print_stats(18)
        return
    levers = args.levers.split(",")
    res = {(w, lv): [] for w in fns for lv in levers}
    for r in range(args.repeats):
        for w, fn in fns.items():
            order = levers[r % len(levers):] + levers[:r % len(levers)]
            for lv in order:
                res[w, lv].append(fn(lv, args.segs, args.burst))
    print(f"CPU µs per data segment, best of {args.repeats} (median in brackets), "
          f"RX bursts of {args.burst}, C accelerator: {wire.ACCEL}, fast path: {fastpath.IMPL}")
    print(f"{'work':<6}{'lever':<8}{'best':>8}{'median':>9}{'ref/this':>10}")
    for w in fns:
        ref = min(res[w, "ref"]) if (w, "ref") in res else None
        for lv in levers:
            v = res[w, lv]
            best = min(v)
            med = sorted(v)[len(v) // 2]
            ratio = f"{ref / best:>10.2f}" if ref else ""
            print(f"{w:<6}{lv:<8}{best:>8.2f}{f'({med:.2f})':>9}{ratio}")


if __name__ == "__main__":
    main()
