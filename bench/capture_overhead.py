"""What `fpd capture` costs the data path at bulk rate: one fpd daemon in one test bed
(fpd bench's "fpd" variant: same app, load generator and pinning), bulk in both
directions measured with and without an `fpd capture -w /dev/null` running (full snap
length, no filter), interleaved in the same run. Reports medians and the ratio.

    sudo .venv/bin/python bench/capture_overhead.py [--rounds 5] [--duration 2]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import shutil
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fpd import bench  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--snaplen", type=int, default=65535)
    a = ap.parse_args()
    cfg = bench.Config(rounds=a.rounds, duration=a.duration, variants=("fpd",),
                       workloads=("bulk_up", "bulk_down"), verbose=False)
    tmp = tempfile.mkdtemp(prefix="fpd-capbench-")
    os.chmod(tmp, 0o755)
    v = bench.Variant("fpd", cfg, tmp)
    res = {(wl, c): [] for wl in cfg.workloads for c in (False, True)}
    dropped = frames = 0
    try:
        v.start([])
        v.ask({"op": "rr", "size": 1, "conns": 1, "seconds": 0.2}, timeout=60)
        for rnd in range(a.rounds):
            for wl in cfg.workloads:
                for with_cap in ((False, True) if rnd % 2 == 0 else (True, False)):
                    cap = None
                    if with_cap:
                        cap = v.bed.popen(v.bed.srv_ns, [
                            sys.executable, "-m", "fpd", "capture", "--socket",
                            v.daemon.socket, "-s", str(a.snaplen), "-w", "/dev/null"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                        time.sleep(0.5)
                    try:
                        r = bench.measure(v, wl, cfg)
                    finally:
                        if cap is not None:
                            cap.send_signal(2)
                            _, err = cap.communicate(timeout=20)
                            words = err.split()
                            for i, w in enumerate(words):
                                if w == "frames" and words[i + 1] == "written,":
                                    frames += int(words[i - 1])
                                    dropped += int(words[i + 2])
                    res[(wl, with_cap)].append(r["gbps"])
                    print(f"round {rnd + 1} {wl:<9} capture={'on ' if with_cap else 'off'} "
                          f"{r['gbps']:.3f} Gbit/s", flush=True)
    finally:
        v.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    for wl in cfg.workloads:
        off = statistics.median(res[(wl, False)])
        on = statistics.median(res[(wl, True)])
        print(f"{wl:<9} without capture {off:.3f} Gbit/s, with capture {on:.3f} Gbit/s: "
              f"ratio {on / off:.2f} (median of {a.rounds})")
    print(f"capture: {frames} frames written, {dropped} dropped by the capture ring")
    for p in v.problems:
        print("problem:", p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
