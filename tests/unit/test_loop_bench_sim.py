"""bench/loop_bench.py's short version: fpd's loop, a real Worker over simulated AF_XDP
rings, a second Stack as the client. Operation counts only (never a time)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
import loop_bench  # noqa: E402


@pytest.mark.parametrize("work", ["rr1", "rr32", "crr"])
@pytest.mark.parametrize("levers", [set(), {"cbuild"}, {"cbuild", "stay"}])
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


@pytest.mark.parametrize("stay", [False, True])
def test_loop_stays_in_its_spin_while_asyncio_has_nothing_to_run(stay, monkeypatch):
    """FPD_LOOP_STAY (fpd.loop.STAY): an echo answered inside the pass gives asyncio
    nothing to run, so the loop keeps polling in its selector call instead of going
    through one asyncio _run_once per request; off: one _run_once per pass with work."""
    from fpd import loop as fpd_loop
    calls = [0]
    orig = fpd_loop.FpdEventLoop._run_once

    def counted(self):
        calls[0] += 1
        return orig(self)
    monkeypatch.setattr(fpd_loop.FpdEventLoop, "_run_once", counted)
    loop_bench.set_levers({"cbuild", "stay"} if stay else {"cbuild"})
    try:
        _cpu, _submits, n = loop_bench.run_one("rr1", 0.01)
    finally:
        loop_bench.set_levers(set(loop_bench._levers()))
    assert n >= 200 and loop_bench.run_one.passes == pytest.approx(1.0, rel=0.05)
    per = calls[0] / n                 # every _run_once of the round's three runs
    if stay:
        assert per < 0.5
    else:
        assert per >= 1.0


def test_worker_reads_the_clock_after_the_rx_burst():
    """Segments enter the engine with the time read after the RX burst arrived, not the
    one read at the start of the iteration (a preempted worker would give RTT samples
    and timestamps a stale clock)."""
    from fpd import wire
    w = loop_bench.make_worker()
    try:
        t = [100.0]
        w.clock = lambda: t[0]
        seen = []
        w.stack.input = lambda seg, now: seen.append(now)
        w.burst = False
        x = w.xsk

        class Late:                      # the "kernel": frames arrive 5 ms into the pass
            def step(self):
                t[0] += 0.005
                n = x.k_fill.peek(1)
                a = x.k_fill.read_addrs(n)[0] + 256
                x.k_fill.release(n)
                seg = wire.Segment(src=loop_bench.CLI_IP, dst=loop_bench.SRV_IP,
                                   sport=1234, dport=loop_bench.PORT, seq=1, flags=0x10,
                                   wnd=100)
                ln = wire.build_frame_into(x.umem.view[a:a + 1792], 0, loop_bench.CLI_MAC,
                                           loop_bench.SRV_MAC, seg)
                x.k_rx.reserve(1)
                x.k_rx.write_descs([a], [ln])
                x.k_rx.submit(1)
        x.fill()
        x.kernel = Late()
        w.poll_once(0)
        assert seen == [100.005]
    finally:
        w.close(reset=False)
