"""Shared pytest set-up: markers, the --run-slow switch, and the kernel test bed fixture."""

import os

import pytest


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run heavy sweeps marked @pytest.mark.slow")
    parser.addoption("--run-bare", action="store_true", default=False,
                     help="also run the checks marked @pytest.mark.bare that build a whole "
                          "system (bare Debian chroot, VM): minutes each, root")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--run-slow"):
        skip_slow = pytest.mark.skip(reason="heavy sweep: opt in with --run-slow")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip_slow)
    if not config.getoption("--run-bare"):
        skip_bare = pytest.mark.skip(reason="builds a whole system: opt in with --run-bare")
        for item in items:
            if "bare" in item.keywords:
                item.add_marker(skip_bare)
    if os.geteuid() != 0:
        skip_root = pytest.mark.skip(reason="needs root for namespaces/XDP (CI runs as root)")
        for item in items:
            if "root" in item.keywords:
                item.add_marker(skip_root)


@pytest.fixture
def testbed():
    """A fresh two-namespace veth test bed, always torn down (even on failure)."""
    from fpd.testbed import TestBed

    bed = TestBed()
    with bed:
        yield bed
    assert not bed.ns_exists(bed.srv_ns) and not bed.ns_exists(bed.peer_ns)


@pytest.fixture
def testbed_factory():
    """Make test beds with custom options; all are torn down at the end of the test."""
    from fpd.testbed import TestBed

    beds = []

    def make(**kw):
        bed = TestBed(**kw)
        beds.append(bed)
        bed.up()
        return bed

    try:
        yield make
    finally:
        for bed in beds:
            bed.down()
