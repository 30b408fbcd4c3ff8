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
