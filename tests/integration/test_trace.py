"""`fpd trace` against a real daemon: not-steered frames show up as counter deltas with
their meaning; the tracepoints are enabled on fpd's program and removed afterwards."""

import os
import subprocess
import sys
import threading
import time

from fpdd import fpd_daemon


def test_trace_shows_not_steered_frames_and_cleans_up_its_tracefs_instance(testbed):
    bed = testbed
    with fpd_daemon(bed, [7]) as d:
        p = bed.popen(bed.srv_ns, d.argv("trace", "--socket", d.socket, "--interval", "0.3",
                                         "--duration", "4"), env=d.env,
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stop = threading.Event()

        def poke():                              # a port fpd does not steer: the kernel's
            time.sleep(1.0)
            while not stop.is_set():
                s = bed.socket(bed.peer_ns)
                s.settimeout(1)
                try:
                    s.connect((bed.srv_ip, 9))
                except OSError:
                    pass
                finally:
                    s.close()
                time.sleep(0.1)
        t = threading.Thread(target=poke)
        t.start()
        try:
            out, err = p.communicate(timeout=30)
        finally:
            stop.set()
            t.join()
            if p.poll() is None:
                p.kill()
                p.wait()
    assert p.returncode == 0, err
    first = out.splitlines()[0]
    assert "tracepoints xdp:xdp_exception, xdp:xdp_redirect_err" in first, out
    inst = first.split("(", 1)[1].split(")", 1)[0]
    assert "fpd-trace-" in inst and not os.path.exists(inst)
    assert "xdp.passed +" in out and "not steered" in out, out
    assert out.strip().endswith("fpd trace: stopped (4 s)"), out


def test_trace_without_a_daemon_says_so(testbed, tmp_path):
    r = testbed.run(testbed.srv_ns, [sys.executable, "-m", "fpd", "trace", "--socket",
                                     str(tmp_path / "none.sock")], check=False)
    assert r.returncode == 3 and "fpd is not running (no socket at" in r.stderr, r.stderr
