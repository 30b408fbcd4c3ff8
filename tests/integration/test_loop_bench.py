"""``fpd bench asyncio`` (fpd/bench_loop.py): its load generator's namespace settings and
a short smoke run (never a timed assertion: rates are only checked to be positive)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from fpd import bench_loop


def _sysctl(bed, ns, key):
    return bed.run(ns, ["sysctl", "-n", key]).stdout.split()


def test_prepare_peer_lets_connect_reuse_time_wait_ports(testbed):
    """crr leaves a TIME_WAIT socket per connection on the client; without tw_reuse the
    client's connect() ends up scanning for free ports (ms each) after ~14 k of them,
    which made the crr row measure the port search of whichever variant ran later."""
    bed = testbed
    before_srv = _sysctl(bed, bed.srv_ns, "net.ipv4.tcp_tw_reuse")
    bench_loop.prepare_peer(bed)
    assert _sysctl(bed, bed.peer_ns, "net.ipv4.tcp_tw_reuse") == ["1"]
    assert _sysctl(bed, bed.peer_ns, "net.ipv4.ip_local_port_range") == ["10000", "65000"]
    assert _sysctl(bed, bed.srv_ns, "net.ipv4.tcp_tw_reuse") == before_srv   # peer only


def test_bench_asyncio_smoke(tmp_path):
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed for the load generator (apt: gcc)")
    out = tmp_path / "r.json"
    p = subprocess.run([sys.executable, "-m", "fpd", "bench", "asyncio", "--rounds", "1",
                        "--duration", "0.5", "--variants", "default,blocking-fpd",
                        "--workloads", "rr_1B_1c,crr", "--no-pin", "-q", "--json",
                        str(out)], capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    res = json.loads(out.read_text())["workloads"]
    assert res["rr_1B_1c"]["default"]["rate"] > 0
    assert res["rr_1B_1c"]["blocking-fpd"]["rate"] > 0       # fpd run, fpd.inproc
    crr = res["crr"]["default"]
    assert crr["rate"] > 0 and crr["connect_p50_us"] > 0 and crr["answer_p50_us"] > 0
    assert "blocking-fpd" not in res["crr"]                 # blocking: rr_1B_1c only
