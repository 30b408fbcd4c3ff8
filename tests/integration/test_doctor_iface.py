"""fpd doctor against a real interface in the test bed, before and while fpd serves it."""

import json
import sys

from fpdd import fpd_daemon


def _doctor(bed, *args):
    r = bed.run(bed.srv_ns, [sys.executable, "-m", "fpd", "doctor", "--json", *args],
                check=False)
    return r.returncode, {c["check"]: c for c in json.loads(r.stdout)}


def test_doctor_checks_the_interface_then_sees_fpd_on_it(testbed):
    bed = testbed
    rc, c = _doctor(bed, "-i", "fpd0", "-p", "7")
    assert rc == 0, c
    assert "driver veth" in c["interface"]["detail"] and c["xdp_mode"]["level"] == "ok"
    assert c["queues"]["detail"].startswith("1 active queue")
    assert c["xdp_free"]["level"] == "ok" and c["port_7"]["level"] == "ok"
    with fpd_daemon(bed, [7]):
        rc, c = _doctor(bed, "-i", "fpd0")
        assert rc == 1
        assert c["xdp_free"]["level"] == "bad"
        assert "already has fpd's program" in c["xdp_free"]["detail"]
        assert "fpd stop --force -i fpd0" in c["xdp_free"]["detail"]
        assert c["local_ports"]["level"] == "warn"                 # reserved by this fpd
    rc, c = _doctor(bed, "-i", "nope0")
    assert rc == 1 and c["interface"]["level"] == "bad"
