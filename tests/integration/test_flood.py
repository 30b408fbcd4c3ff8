"""A short SYN flood from spoofed sources against the live daemon while 50 streams echo
(bench/synflood.py with a capped rate and seconds, not minutes). Asserts what must hold
under a flood, never speeds: the streams intact, new connections through SYN cookies,
the worker's memory bounded, the counters in ``fpd stats`` and on the Prometheus page,
and SYN-ACKs to spoofed sources costing no neighbour lookup each."""

from __future__ import annotations

import os
import sys

import pytest

pytestmark = pytest.mark.root

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))


@pytest.mark.timeout(240)
def test_syn_flood_streams_intact_cookies_counted():
    import synflood

    r = synflood.run(streams=50, before=2.0, flood=3.0, after=3.0, pps=20000, log=None)
    print(synflood.report(r))
    assert r["daemon_alive"]
    assert r["syn_sent"] > 20000
    # every stream intact: the SHA-256 of what came back equals what was sent
    assert r["streams_intact"] == 50, r["stream_errors"]
    c = r["counters"]
    # the flood filled the half-open table: cookies were sent, and connections made
    # after it (the table still full) went through them
    assert c["syncookies_sent"] > 1000
    assert r["genuine_after_ok"] == 5
    assert c["syncookies_validated"] >= 5
    assert c["half_open"] <= 4096                      # the stack's syn_backlog
    # the same counters reach the Prometheus endpoint
    for k in ("syncookies_sent", "syncookies_validated", "syncookies_failed"):
        assert r["prometheus"].get(k) == c[k], (k, r["prometheus"])
    # SYN-ACKs went back to the MAC their SYN came from: no netlink lookup per source
    w = r["worker_drops"]
    assert w["synack_src_macs"] >= c["syncookies_sent"] // 2
    assert w["neigh_lookups"] < c["syncookies_sent"] // 5, w
    # memory bounded: tens of thousands of spoofed SYNs leave no per-SYN state behind
    rss = r["rss_kib"]
    assert rss["peak"] - rss["before"] < 96 * 1024, rss
