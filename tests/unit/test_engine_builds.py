"""The unit tests that drive the engine (loopback daemons, the client against them, the
asyncio loop, the control protocol) run by default on the engine's compiled build
(fpd._tcp_c, when built); here they run again on the Python build (FPD_COMPILED=0), which
stays the complete reference. tests/engine runs both builds in one process."""

import os
import subprocess
import sys

ENGINE_USERS = ["test_loopback.py", "test_loop_unit.py", "test_client.py", "test_proto.py",
                "test_daemon_unit.py"]


def test_engine_users_pass_on_the_python_engine():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    env = dict(os.environ, FPD_COMPILED="0")
    code = "from fpd import tcp; print(tcp.IMPL)"
    impl = subprocess.run([sys.executable, "-c", code], cwd=root, env=env,
                          capture_output=True, text=True, check=True).stdout.strip()
    assert impl == "python"
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"] +
                       [os.path.join(here, f) for f in ENGINE_USERS],
                       cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and " failed" not in r.stdout
