"""The engine-alone benchmark harnesses that issue #9's figures come from
(bench/engine_bench.py, bench/loss_sweep.py): they measure what they claim."""

import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "bench")
sys.path.insert(0, BENCH)


def test_engine_bench_bulk_sends_within_the_window_and_delivers_every_byte():
    """#9's benchmark bug: the bulk peer ignored the SYN-ACK's 64 KB window, so the
    engine accepted 65,535 bytes of everything offered. bench_bulk raises unless every
    byte it offered was delivered in order."""
    import engine_bench
    segs_per_s, outs, gbps, us = engine_bench.bench_bulk(0.0, ts=True, path="python")
    assert segs_per_s > 0 and outs > 0 and us > 0


@pytest.mark.parametrize("rack", [True, False])
def test_loss_sweep_tail_loss_without_rto_only_with_rack_tlp(monkeypatch, rack):
    """The sweep's "tail 3" cell at 20 ms RTT: the last 3 segments lost once. With
    RACK-TLP (the defaults) no RTO and exactly the 3 (+ the probe) retransmissions;
    without, the tail waits for the RTO."""
    import loss_sweep
    monkeypatch.setattr(loss_sweep, "BEFORE", dict(rack=False, tlp=False))
    goodput, rtos, fails, rtx = loss_sweep.path_cell(
        "cubic", 0.020, {}, {"tail": 3}, 200_000, 1, before=not rack)
    assert fails == 0 and goodput > 0
    if rack:
        assert rtos == 0 and 3 <= rtx <= 4
    else:
        assert rtos >= 1 and rtx >= 3
