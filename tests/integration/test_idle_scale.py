"""Many idle connections through ``fpd bench``'s idle workload (root): the load generator
spread over several processes and peer addresses, request/response on some of the held
connections, every one still open after (the peer still ESTABLISHED with nothing from
the server, one byte sent on each acknowledged by fpd), all closed and released.

Counts only, never time. The suite's version holds 5,000 over 2 load generator
processes; ``--run-slow`` adds 100,000 over 7 (docs/PERFORMANCE.md, "100,000 idle
connections")."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _idle_bench(tmp_path, n: int, per_lg: int, rr: int, timeout: float,
                variant: str = "fpd", extra=()) -> dict:
    out = tmp_path / "idle.json"
    argv = [sys.executable, "-m", "fpd.bench", "--variants", variant, "--workloads", "idle",
            "--rounds", "1", "--idle", str(n), "--idle-per-loadgen", str(per_lg),
            "--idle-rr", str(rr), "--json", str(out), "-q", *extra]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    where = f"\nstdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}"
    assert out.exists(), "no JSON written" + where
    r = json.loads(out.read_text())
    assert r["unavailable"] == {}, r["unavailable"]
    assert r["errors"] == [], r["errors"]
    assert r["problems"] == [], r["problems"]
    assert p.returncode == 0, where
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    listed = {line.split()[0] for line in names.splitlines() if line.strip()}
    assert not listed & set(r["namespaces"]), "a namespace of the run was left behind"
    (s,) = r["workloads"]["idle"]["raw"][variant]
    return s


def _check(s: dict, n: int, loadgens: int, rr: int) -> None:
    assert s["loadgens"] == loadgens
    assert s["stopped_by"] is None
    assert s["held"] == n
    assert s["rr_asked"] == rr and s["rr_matched"] == rr
    assert s["rr_answered"] == rr and s["rr_transactions"] == 10 * rr
    assert s["rr_wrong"] == 0
    assert s["still_open"] == n          # no FIN, RST or data from the server meanwhile
    assert s["acked"] == n               # and fpd's TCP acknowledged a byte on each
    assert s["released"] == n            # the app held (and then closed) every one


def test_5000_idle_two_load_generators(tmp_path):
    s = _idle_bench(tmp_path, 5000, 2500, 200, timeout=300)
    _check(s, 5000, 2, 200)


def test_kernel_app_on_two_processes(tmp_path):
    """The kernel variant's app as two processes on one port (SO_REUSEPORT, how the bench
    holds 100,000 kernel connections under a 20,000-fd limit): W and R reach both."""
    s = _idle_bench(tmp_path, 3000, 1500, 100, timeout=300, variant="kernel",
                    extra=("--kernel-procs", "2"))
    assert s["app_procs"] == 2
    _check(s, 3000, 2, 100)


@pytest.mark.slow
def test_100000_idle(tmp_path):
    s = _idle_bench(tmp_path, 100_000, 16_000, 1000, timeout=1500)
    _check(s, 100_000, 7, 1000)
