"""fpd.trace without a daemon: tracepoint lines, their explanations, counter deltas."""

from fpd import trace


def test_parse_and_explain_redirect_error_and_exception():
    line = ("  <idle>-0  [001] ..s2.  123.456: xdp_redirect_err: prog_id=42 action=REDIRECT "
            "ifindex=5 to_ifindex=0 err=-6 map_id=7 map_index=1")
    ev = trace.parse_line(line)
    assert ev == {"event": "xdp_redirect_err", "prog_id": 42, "action": "REDIRECT",
                  "ifindex": 5, "to_ifindex": 0, "err": -6, "map_id": 7, "map_index": 1}
    text = trace.explain(ev)
    assert "queue 1: ENXIO: no AF_XDP socket in fpd_xsks" in text
    ev = trace.parse_line("x-1 [000] 1.0: xdp_exception: prog_id=42 action=ABORTED ifindex=5")
    assert "aborted" in trace.explain(ev) and "dropped" in trace.explain(ev)
    assert trace.parse_line("sched_switch: prev_comm=x") is None


def test_counter_deltas_only_what_moved_with_meaning():
    a = {"xdp": {"seen": 10, "passed": 3, "redirect_failed": 0},
         "workers": [{"queue": 0, "malformed": 0, "xdp": {"rx_fill_ring_empty_descs": 5}}]}
    b = {"xdp": {"seen": 20, "passed": 9, "redirect_failed": 0},
         "workers": [{"queue": 0, "malformed": 0, "xdp": {"rx_fill_ring_empty_descs": 7}}]}
    d = trace.counter_deltas(a, b)
    assert d == {"xdp.passed": 6, "q0 xsk.rx_fill_ring_empty_descs": 2}
    assert "not steered" in trace.meaning("xdp.passed")
    assert "starvation" in trace.meaning("q0 xsk.rx_fill_ring_empty_descs")


def test_bcc_status_names_the_fix():
    ok, text = trace.bcc_status()
    assert isinstance(ok, bool)
    if not ok:
        assert "apt-get install" in text and "tracefs" in text
