"""The command line: help, version, clear errors on bad arguments."""

import os

import pytest
from click.testing import CliRunner

from fpd import __version__
from fpd.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_help_lists_commands():
    r = run("--help")
    assert r.exit_code == 0
    for word in ("doctor", "xdp"):
        assert word in r.output


def test_version():
    r = run("--version")
    assert r.exit_code == 0 and __version__ in r.output


def test_unknown_command_is_an_error():
    r = run("frobnicate")
    assert r.exit_code == 2 and "No such command" in r.output


def test_xdp_status_requires_iface():
    r = run("xdp", "status")
    assert r.exit_code == 2 and "--iface" in r.output


@pytest.mark.skipif(os.geteuid() != 0, reason="netlink query needs root")
def test_missing_interface_is_a_clear_error():
    r = run("xdp", "status", "-i", "fpd-no-such0")
    assert r.exit_code == 1
    assert "fpd-no-such0" in r.output and "does not exist" in r.output


def test_doctor_json_reports_every_check():
    import json
    r = run("doctor", "--json")
    checks = {c["check"]: c for c in json.loads(r.output)}
    assert set(checks) == {"kernel", "privileges", "af_xdp", "libbpf", "bpf_object", "clang"}
    assert checks["kernel"]["ok"]
