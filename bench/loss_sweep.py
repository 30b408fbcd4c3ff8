#!/usr/bin/env python3
"""Goodput of the fpd engine over the simulated link, per loss rate (not a test).

Two engines (tests/engine/simlink.py) exchange a bulk transfer over a link with the given
random loss in both directions; for each loss rate and each variant (NewReno / CUBIC,
SACK on / off) it prints goodput in payload bytes per *virtual* second (what the TCP
achieves on the modelled path) and per *wall* second (how fast the Python engine
simulates it). The time counted runs from connect() to the moment the receiving
application has read the last byte. Several seeds per cell; the median is shown.

    .venv/bin/python bench/loss_sweep.py [--size 300000] [--seeds 3] [--delay 0.01]
    .venv/bin/python bench/loss_sweep.py --paths [--size 1000000] [--seeds 3]
    .venv/bin/python bench/loss_sweep.py [--paths] --before frto=0,prr=0 [--compare]
    .venv/bin/python bench/loss_sweep.py --paths --before pacing=0 --after pacing=1 \
        [--rtts 100] [--patterns "100M q300,clean"]

``--paths``: the path table of docs/ENGINE.md instead: round-trip times of 1, 20 and
100 ms, each clean, with 1 % and 5 % random loss, with 5 % of segments reordered (held
back by a quarter RTT), with a tail loss (the last 3 segments of the transfer, and the
last 2 of a 30 kB response), 20 MB through a 100 Mbit/s bottleneck, and an ACK delay
spike (the ACKs of 3 RTTs + 10 ms, 5 RTTs in, arrive 400 ms late: a spurious RTO); goodput (kB per
virtual s), the sender's RTO count and its retransmissions (medians over seeds) for CUBIC and NewReno, both
with SACK, "before" (``--before``: by default F-RTO, PRR and HyStart++ off) and
"after" (the defaults) in the same run.

``--before k=v,...``: the StackConfig fields that make "before" (e.g.
``rack=0,tlp=0,undo=0,rcvbuf_max=0,sndbuf_max=0`` for the RACK-TLP/autotuning step of
issue #9); ``--compare`` makes the random-loss grid show before -> after per cell too.
"""

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "engine"))
sys.path.insert(0, os.path.join(HERE, ".."))

import simlink as SL  # noqa: E402

_DATA = {}


def _data(size):
    if size not in _DATA:
        _DATA[size] = bytes(i * 131 % 251 for i in range(size))
    return _DATA[size]

LOSSES = (0.0, 0.01, 0.02, 0.05, 0.10, 0.20, 0.30)
VARIANTS = (("newreno", True), ("newreno", False), ("cubic", True), ("cubic", False))


def cell(cc, sack, loss, size, seeds, delay, bandwidth, before=False):
    vps, wps, fails = [], [], 0
    for seed in range(seeds):
        cfg = dict(SL.ROBUST_CONFIG, cc=cc, sack=sack)
        if before:
            cfg.update(BEFORE)
        res = SL.run(seed=seed, schedule=[SL.Phase(loss=loss, delay=delay)],
                     a_data=_data(size), b_data=b"", a_config=cfg, b_config=cfg,
                     bandwidth=bandwidth, queue=100 if bandwidth else None)
        try:
            res.check()
        except AssertionError:
            fails += 1
            continue
        # virtual time from connect() until the last byte was read by the receiver
        # (the closing handshake afterwards is not counted)
        vps.append(res.bytes_ab / max(res.t_done_ab, 1e-9))
        wps.append(res.bytes_ab / max(res.wall_time, 1e-9))
    med = (lambda xs: statistics.median(xs) if xs else float("nan"))
    return med(vps), med(wps), fails


RTTS = (0.001, 0.020, 0.100)
# (name, Phase fields, extra): extra may set "size" (bytes), "tail" (the last N data
# segments of the transfer lost once: a tail loss), "bandwidth" (bytes/s, queue of
# 2000 segments: enough for the bandwidth-delay product at 100 ms)
PATTERNS = (("clean", {}, {}), ("loss 1%", {"loss": 0.01}, {}),
            ("loss 5%", {"loss": 0.05}, {}), ("reorder 5%", {"reorder": 0.05}, {}),
            ("tail 3", {}, {"tail": 3}), ("30 kB tail 2", {}, {"size": 30_000, "tail": 2}),
            ("100 Mbit/s", {}, {"size": 20_000_000, "bandwidth": 12.5e6}),
            ("100M q300", {}, {"size": 8_000_000, "bandwidth": 12.5e6, "queue": 300}),
            ("ACK spike", {}, {"spike": (5, 3, 0.4)}))
# "spike": (after N RTTs, for M RTTs + 10 ms, + s one-way): the ACKs the receiver sends
# in that window arrive s late, longer than the RTO (a spurious timeout: F-RTO's case)
# "before": the last mechanisms of issue #9 off (F-RTO, PRR, HyStart++; --before changes
# it); "after": the defaults
BEFORE = dict(frto=False, prr=False, hystart=False)
AFTER = {}          # --after: StackConfig fields of "after" (e.g. pacing=1)


def _parse_before(spec):
    out = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        k, _, v = item.partition("=")
        try:
            out[k] = int(v)
        except ValueError:
            out[k] = {"true": True, "false": False}.get(v.lower(), v)
    return out


def _tail_dropper(size, n):
    """Lose the first transmission of the last n data segments of A's stream."""
    seen = set()

    def drop(net, seg, to):
        if to != "B" or not seg.payload:
            return False
        c = net.a_app.conn
        off = (seg.seq - c.iss - 1) & 0xFFFFFFFF
        end = off + len(seg.payload)
        mss = c.mss
        if end > size - n * mss and off not in seen:
            seen.add(off)
            return True
        return False
    return drop


def path_cell(cc, rtt, pattern, extra, size, seeds, before):
    vps, rtos, rtxs, fails = [], [], [], 0
    size = extra.get("size", size)
    for seed in range(seeds):
        cfg = dict(SL.ROBUST_CONFIG, cc=cc, sack=True)
        cfg.update(BEFORE if before else AFTER)
        ph = dict(pattern, delay=rtt / 2)
        if "reorder" in ph:
            ph["reorder_delay"] = rtt / 4
        bw = extra.get("bandwidth")
        drop = _tail_dropper(size, extra["tail"]) if extra.get("tail") else None
        sched = [SL.Phase(**ph)]
        ba = None
        if extra.get("spike"):
            after, dur, add = extra["spike"]
            ba = [SL.Phase(duration=after * rtt, **ph),
                  SL.Phase(duration=dur * rtt + 0.01, **dict(ph, delay=ph["delay"] + add)),
                  SL.Phase(**ph)]
        res = SL.run(seed=seed, schedule=sched, schedule_ba=ba, a_data=_data(size), b_data=b"",
                     a_config=cfg, b_config=cfg, bandwidth=bw, queue=extra.get("queue", 2000) if bw else None,
                     drop=drop)
        try:
            res.check()
        except AssertionError:
            fails += 1
            continue
        vps.append(res.bytes_ab / max(res.t_done_ab, 1e-9))
        rtos.append(getattr(res, "a_counters", {}).get("rto_timeouts", float("nan")))
        rtxs.append(getattr(res, "a_counters", {}).get("retransmits", float("nan")))
    med = (lambda xs: statistics.median(xs) if xs else float("nan"))
    return med(vps), med(rtos), fails, med(rtxs)


def paths(a):
    t0 = time.perf_counter()
    print(f"# {a.size} bytes A->B unless the pattern says, SACK on, median of {a.seeds} "
          f"seeds; goodput kB per virtual s / RTOs / retransmissions of the sender; "
          f"before = {BEFORE}, after = defaults + {AFTER}")
    ccs = ("cubic", "newreno")
    head = "RTT ms | pattern      | " + " | ".join(
        f"{cc + ' ' + w:>23}" for cc in ccs for w in ("before", "after"))
    print(head)
    print("-" * len(head))
    for rtt in RTTS:
        if a.rtts and round(rtt * 1000) not in a.rtts:
            continue
        for name, pat, extra in PATTERNS:
            if a.patterns and name not in a.patterns:
                continue
            cols = []
            for cc in ccs:
                for before in (True, False):
                    v, r, fails, x = path_cell(cc, rtt, pat, extra, a.size, a.seeds, before)
                    mark = f" !{fails}" if fails else ""
                    cols.append(f"{v / 1000:10.1f} / {r:3.0f} / {x:4.0f}{mark}".rjust(23))
            print(f"{rtt * 1000:6.0f} | {name:12} | " + " | ".join(cols), flush=True)
    print(f"# wall time {time.perf_counter() - t0:.1f} s")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=1_000_000, help="bytes per transfer")
    ap.add_argument("--seeds", type=int, default=9, help="runs per cell (median shown)")
    ap.add_argument("--delay", type=float, default=0.01, help="one-way delay, s")
    ap.add_argument("--bandwidth", type=float, default=0,
                    help="bottleneck bytes/s (0: none), queue of 100 segments")
    ap.add_argument("--paths", action="store_true",
                    help="RTT 1/20/100 ms x clean/loss/reordering table instead")
    ap.add_argument("--before", default=None,
                    help="StackConfig fields of 'before', k=v,... (default: "
                         "frto=0,prr=0,hystart=0)")
    ap.add_argument("--after", default=None,
                    help="StackConfig fields of 'after', k=v,... (default: none)")
    ap.add_argument("--rtts", default="", help="--paths: only these RTTs (ms, comma list)")
    ap.add_argument("--patterns", default="", help="--paths: only these patterns (comma list)")
    ap.add_argument("--compare", action="store_true",
                    help="random-loss grid: before -> after goodput (kB per virtual s)")
    a = ap.parse_args(argv)
    if a.before is not None:
        BEFORE.clear()
        BEFORE.update(_parse_before(a.before))
    if a.after is not None:
        AFTER.update(_parse_before(a.after))
    a.rtts = {int(x) for x in a.rtts.split(",") if x.strip()}
    a.patterns = {x.strip() for x in a.patterns.split(",") if x.strip()}
    if a.paths:
        return paths(a)
    t0 = time.perf_counter()
    print(f"# {a.size} bytes A->B, one-way delay {a.delay * 1000:g} ms, "
          f"bandwidth {'unlimited' if not a.bandwidth else f'{a.bandwidth:g} B/s'}, "
          f"median of {a.seeds} seeds; goodput in kB per virtual s / kB per wall s")
    if a.compare:
        print(f"# before -> after, kB per virtual s; before = {BEFORE}")
    head = "loss % | " + " | ".join(f"{cc:>7} sack={'on ' if s else 'off'}" for cc, s in VARIANTS)
    print(head)
    print("-" * len(head))
    for loss in LOSSES:
        cols = []
        for cc, sack in VARIANTS:
            v, w, fails = cell(cc, sack, loss, a.size, a.seeds, a.delay, a.bandwidth or None)
            mark = f" !{fails}" if fails else ""
            if a.compare:
                vb, _, fb = cell(cc, sack, loss, a.size, a.seeds, a.delay,
                                 a.bandwidth or None, before=True)
                mark += f" !{fb}b" if fb else ""
                cols.append(f"{vb / 1000:7.1f} -> {v / 1000:7.1f}{mark}".rjust(19))
                continue
            cols.append(f"{v / 1000:8.1f} / {w / 1000:5.1f}{mark}".rjust(19))
        print(f"{loss * 100:6.0f} | " + " | ".join(cols), flush=True)
    print(f"# wall time {time.perf_counter() - t0:.1f} s; '!N' = N runs that failed the "
          f"integrity/close check (excluded)")


if __name__ == "__main__":
    main()
