"""A short soak (bench/soak.py for ~12 s): HTTP under wrk, bulk echo with SHA-256,
connect-request-close and idle connections at once, 2 % loss and 2 % reordering each way
(the impairment bridge), and an fpd client application SIGKILLed every 3 s and started
again. Asserts the invariants, never speeds: surviving connections intact, the daemon
up, and every slot and local port of the killed clients returned."""

from __future__ import annotations

import os
import sys

import pytest

pytestmark = pytest.mark.root

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))


@pytest.mark.timeout(300)
def test_soak_short_invariants(tmp_path):
    import soak

    png = str(tmp_path / "soak.png")
    r = soak.run(seconds=12, loss=0.02, reorder=0.02, kill_every=3.0, png=png)
    print(soak.report(r))
    assert r["daemon_alive"]
    # the impairments were there
    imp = r["impair"]
    assert imp["to_srv"]["lost"] > 0 and imp["to_peer"]["lost"] > 0
    assert imp["to_srv"]["reordered"] > 0 and imp["to_peer"]["reordered"] > 0
    # surviving connections: nothing lost
    assert r["bulk"]["streams"] == soak.N_STREAMS
    assert r["bulk"]["intact"] == soak.N_STREAMS, r["bulk"]["errors"]
    assert r["idle"]["alive_at_end"] == soak.N_IDLE
    assert r["wrk"]["requests"] > 0 and not r["wrk"]["errors"], r["wrk"]
    assert r["crc"]["ok"] > 0 and not r["crc"]["errors"], r["crc"]
    # the churn client was killed and restarted, each incarnation came up
    assert r["churn"]["kills"] >= 3 and r["churn"]["failed_starts"] == 0, r.get("churn_failures")
    assert r["churn"]["peer_side"]["ok"] > 0
    # every slot, local port and client of the killed incarnations returned
    base, final = r["base"], r["final"]
    assert final["slots"] == base["slots"], (base, final)
    assert final["ports"] == base["ports"] == 0, (base, final)
    assert final["clients"] == base["clients"], (base, final)
    assert final["fds"] <= base["fds"] + 4, (base, final)
    assert r["stack"]["internal_errors"] == 0
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
