"""Engine-test set-up.

The root ``tests/conftest.py`` owns ``--run-slow``; this file only adds it when that one
is absent (e.g. when the engine tests are run from a tree without it), so the option is
never defined twice.
"""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)


def pytest_addoption(parser):
    try:
        parser.addoption("--run-slow", action="store_true", default=False,
                         help="also run heavy sweeps marked @pytest.mark.slow")
    except ValueError:          # already defined by the root conftest
        pass


def pytest_collection_modifyitems(config, items):
    try:
        run_slow = config.getoption("--run-slow")
    except ValueError:
        run_slow = False
    if run_slow:
        return
    skip = pytest.mark.skip(reason="heavy: opt in with --run-slow")
    for item in items:
        if "slow" in item.keywords and "/engine/" in str(item.fspath):
            item.add_marker(skip)


# ---- the two builds of the engine (fpd.tcp as Python, and fpd._tcp_c compiled) ----------
# Every engine test runs on both: the pure-Python classes (the reference) and the Cython
# build of fpd/tcp.py (typed extension types, fpd/_tcp_c.pxd) when it is built. A test
# that patches Connection's methods (an extension type cannot be patched) is marked
# @pytest.mark.python_engine and runs on the Python build only.
from fpd import tcp as _tcp  # noqa: E402

TCP_BUILDS = ["python"] + (["compiled"] if _tcp._compiled is not None else [])


def pytest_configure(config):
    config.addinivalue_line("markers", "python_engine: patches fpd.tcp's classes, so it "
                            "runs on the Python build of the engine only")


def pytest_generate_tests(metafunc):
    if "tcp_build" in metafunc.fixturenames:
        python_only = metafunc.definition.get_closest_marker("python_engine") is not None
        metafunc.parametrize("tcp_build", ["python"] if python_only else TCP_BUILDS,
                             indirect=True, scope="function")


@pytest.fixture(autouse=True)
def tcp_build(request):
    old = _tcp.use_build(request.param)
    yield request.param
    _tcp.use_build(old)
