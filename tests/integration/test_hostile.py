"""A hostile client against the live daemon while a good client streams (issue #14 item 3):
the ~10 s version of bench/hostile.py (its module doc says what the hostile does).

Asserted: the good stream intact (SHA-256 per round), the daemon and its worker up, every
connection the hostile owned reset (its kernel peers saw RST, none left in ``fpd conns``),
its control connections, slots, memfd mappings and fds let go by the worker, and the
causes counted in ``fpd stats`` and in the Prometheus text."""

import os
import sys

import pytest

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench"))
import hostile  # noqa: E402
from fpdd import fpd_daemon  # noqa: E402

pytestmark = pytest.mark.timeout(120)
METRICS_PORT = 9479


def test_hostile_client_for_10_s(testbed):
    bed = testbed
    with fpd_daemon(bed, hostile.PORTS, local_ports=(61100, 61199),
                    extra=["--metrics", f"127.0.0.1:{METRICS_PORT}"]) as d:
        rep = hostile.run(bed, d, duration=10.0, seed=14, metrics_port=METRICS_PORT)
        why = hostile.summary(rep) + "\nlog:\n" + "\n".join(rep.get("log_warnings", []))
        good, h = rep["good"], rep["hostile"]
        # the good client: intact, all along
        assert "error" not in good and good["bad_rounds"] == 0 and good["rounds"] >= 3, why
        # the daemon: up, its worker the same process
        assert rep["daemon_alive"] and rep["status"]["workers"][0]["alive"], why
        assert rep["status"]["workers"][0]["pid"] == d.workers[0], why
        # the hostile did its job
        assert "error" not in h and rep["hostile_rc"] == 0, why
        assert h["sessions"] >= 3 and h["connects"] >= 3, why
        assert h.get("dropped_by_daemon", 0) >= 1, why
        assert h.get("ftruncate_allowed", 0) == 0, why      # the memfd is sealed
        # its connections reset, nothing of it left
        ends = rep["kernel_ends"]
        assert ends.get("accepted", 0) >= 3, why
        assert ends.get("rst", 0) >= ends["accepted"] - 1, why   # (one may see FIN first)
        assert ends.get("open_at_end", 0) == 0, why
        a, b = rep["after"], rep["before"]
        assert a["hostile_conns_left"] == 0 and a["hostile_listeners_left"] == 0, why
        assert a["clients"] == b["clients"] and a["slots_in_use"] == b["slots_in_use"], why
        assert a["memfd_maps"] == b["memfd_maps"] and a["fds"] <= b["fds"], why
        # each cause counted: fpd stats ...
        svc, sup = rep["service"], rep["supervisor"]
        assert svc.get("clients_dropped", 0) >= h["dropped_by_daemon"], why
        assert svc.get("requests_refused", 0) >= 1, why
        assert svc.get("shm_corrupt", 0) + svc.get("clients_dropped_ring_corrupt", 0) >= 1, why
        assert svc.get("internal_errors", 0) == 0, why         # no bug of ours reached
        assert sup.get("bad_message", 0) + sum(v for k, v in sup.items()
                                                if k.startswith("refused_")) >= 1, why
        # ... and Prometheus
        text = "\n".join(rep["metrics"])
        assert "fpd_worker_service_requests_refused" in text, text
        assert "fpd_worker_service_clients_dropped" in text, text
        assert 'fpd_supervisor_total{counter="bad_message"}' in text, text
