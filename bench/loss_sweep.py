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

``--paths``: the path table of docs/ENGINE.md instead: round-trip times of 1, 20 and
100 ms, each clean, with 1 % and 5 % random loss, and with 5 % of segments reordered
(held back by a quarter RTT); goodput (kB per virtual s) and the sender's RTO count
(median over seeds) for CUBIC and NewReno, both with SACK.
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


def cell(cc, sack, loss, size, seeds, delay, bandwidth):
    vps, wps, fails = [], [], 0
    for seed in range(seeds):
        cfg = dict(SL.ROBUST_CONFIG, cc=cc, sack=sack)
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
PATTERNS = (("clean", {}), ("loss 1%", {"loss": 0.01}), ("loss 5%", {"loss": 0.05}),
            ("reorder 5%", {"reorder": 0.05}))


def path_cell(cc, rtt, pattern, size, seeds):
    vps, rtos, fails = [], [], 0
    for seed in range(seeds):
        cfg = dict(SL.ROBUST_CONFIG, cc=cc, sack=True)
        ph = dict(pattern, delay=rtt / 2)
        if "reorder" in ph:
            ph["reorder_delay"] = rtt / 4
        res = SL.run(seed=seed, schedule=[SL.Phase(**ph)], a_data=_data(size), b_data=b"",
                     a_config=cfg, b_config=cfg)
        try:
            res.check()
        except AssertionError:
            fails += 1
            continue
        vps.append(res.bytes_ab / max(res.t_done_ab, 1e-9))
        rtos.append(getattr(res, "a_counters", {}).get("rto_timeouts", float("nan")))
    med = (lambda xs: statistics.median(xs) if xs else float("nan"))
    return med(vps), med(rtos), fails


def paths(a):
    t0 = time.perf_counter()
    print(f"# {a.size} bytes A->B, SACK on, median of {a.seeds} seeds; "
          f"goodput kB per virtual s / RTOs of the sender")
    head = "RTT ms | pattern    | " + " | ".join(f"{cc:>16}" for cc in ("cubic", "newreno"))
    print(head)
    print("-" * len(head))
    for rtt in RTTS:
        for name, pat in PATTERNS:
            cols = []
            for cc in ("cubic", "newreno"):
                v, r, fails = path_cell(cc, rtt, pat, a.size, a.seeds)
                mark = f" !{fails}" if fails else ""
                cols.append(f"{v / 1000:9.1f} / {r:3.0f}{mark}".rjust(16))
            print(f"{rtt * 1000:6.0f} | {name:10} | " + " | ".join(cols), flush=True)
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
    a = ap.parse_args(argv)
    if a.paths:
        return paths(a)
    t0 = time.perf_counter()
    print(f"# {a.size} bytes A->B, one-way delay {a.delay * 1000:g} ms, "
          f"bandwidth {'unlimited' if not a.bandwidth else f'{a.bandwidth:g} B/s'}, "
          f"median of {a.seeds} seeds; goodput in kB per virtual s / kB per wall s")
    head = "loss % | " + " | ".join(f"{cc:>7} sack={'on ' if s else 'off'}" for cc, s in VARIANTS)
    print(head)
    print("-" * len(head))
    for loss in LOSSES:
        cols = []
        for cc, sack in VARIANTS:
            v, w, fails = cell(cc, sack, loss, a.size, a.seeds, a.delay, a.bandwidth or None)
            mark = f" !{fails}" if fails else ""
            cols.append(f"{v / 1000:8.1f} / {w / 1000:5.1f}{mark}".rjust(19))
        print(f"{loss * 100:6.0f} | " + " | ".join(cols), flush=True)
    print(f"# wall time {time.perf_counter() - t0:.1f} s; '!N' = N runs that failed the "
          f"integrity/close check (excluded)")


if __name__ == "__main__":
    main()
