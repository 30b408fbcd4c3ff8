"""bench/loop_bench.py's short version: fpd's loop, a real Worker over simulated AF_XDP
rings, a second Stack as the client. Operation counts only (never a time)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
import loop_bench  # noqa: E402


@pytest.mark.parametrize("work", ["rr1", "rr32", "crr"])
@pytest.mark.parametrize("levers", [set(), {"cbuild"}])
def test_loop_bench_serves_every_transaction(work, levers):
    loop_bench.set_levers(levers)
    try:
        cpu, submits, n = loop_bench.run_one(work, 0.01)
    finally:
        loop_bench.set_levers(set(loop_bench._levers()))
    assert n >= 200 and cpu > 0
    # one pass and one TX submit per request on one connection; 32 requests per pass
    # on 32; crr: two per connection (SYN -> SYN-ACK; request -> answer), the closes
    # riding on those passes
    per = {"rr1": 1.0, "rr32": 1 / 32, "crr": 2.0}[work]
    assert loop_bench.run_one.passes == pytest.approx(per, rel=0.05)
    assert submits == pytest.approx(per, rel=0.05)
