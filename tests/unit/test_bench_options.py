"""`fpd bench`'s click options become the bench's Config (no root: nothing is run)."""

import pytest
from click.testing import CliRunner

from fpd import bench
from fpd.cli import main


@pytest.fixture
def captured(monkeypatch):
    got = []
    monkeypatch.setattr(bench, "main", lambda cfg: got.append(cfg) or 0)
    return got


def run(*args):
    return CliRunner().invoke(main, ["bench", *args])


def test_defaults(captured):
    r = run()
    assert r.exit_code == 0, r.output
    (cfg,) = captured
    assert cfg == bench.Config()


def test_options_map_to_the_config(captured):
    r = run("--quick", "--rounds", "3", "--duration", "0.5", "--idle", "50", "--json", "r.json",
            "--png", "r.png", "--mode", "generic", "--port", "6000", "--cpus", "1,0,1",
            "--variants", "kernel,fpd", "--workloads", "bulk_up", "--peer-offloads", "off",
            "--keep-logs", "-q")
    assert r.exit_code == 0, r.output
    (cfg,) = captured
    assert cfg == bench.Config.quick_config(
        rounds=3, duration=0.5, idle=50, json="r.json", png="r.png", mode="generic",
        port=6000, cpu_app=1, cpu_loadgen=0, cpu_daemon=1, variants=("kernel", "fpd"),
        workloads=("bulk_up",), peer_offloads=False, keep_logs=True, verbose=False)
    r = run("--no-pin")
    assert r.exit_code == 0 and captured[-1].pin is False


@pytest.mark.parametrize("args, error", [
    (["--cpus", "1,2"], "--cpus wants three numbers"),
    (["--variants", "kernel,nope"], "unknown variant 'nope' (variants: kernel, kernel+xdp, fpd)"),
    (["--workloads", "nope"], "unknown workload 'nope'"),
    (["--rounds", "0"], "must be positive"),
    (["--mode", "hw"], "'hw' is not one of"),
    (["--rounds", "x"], "'x' is not a valid integer"),
])
def test_bad_options_are_usage_errors(captured, args, error):
    r = run(*args)
    assert r.exit_code == 2 and error in r.output, r.output
    assert not captured


def test_help_names_the_variants():
    r = run("--help")
    assert r.exit_code == 0
    assert ",".join(bench.VARIANTS) in r.output.replace("\n", "").replace(" ", "")


def test_idle_options(captured):
    r = run("--idle", "100000", "--idle-rr", "1000", "--idle-per-loadgen", "15000",
            "--idle-window", "1")
    assert r.exit_code == 0, r.output
    assert captured[-1] == bench.Config(idle=100000, idle_rr=1000, idle_per_loadgen=15000,
                                        idle_window=1)
    r = run("--idle-per-loadgen", "0")
    assert r.exit_code == 2 and "--idle-per-loadgen" in r.output
    r = run("--kernel-procs", "3")
    assert r.exit_code == 0 and captured[-1].kernel_procs == 3


class _V:
    def __init__(self, daemon):
        self.daemon = daemon


def test_idle_plan_caps_the_kernel_at_its_fd_limit(monkeypatch):
    monkeypatch.setattr(bench.resource, "getrlimit", lambda what: (20000, 20000))
    cfg = bench.Config(idle=100000)
    # fpd: every connection asked for; load generators of at most 16,000 each
    assert bench.idle_plan(_V(daemon=object()), cfg) == (100000, 16000, None)
    n, per_lg, why = bench.idle_plan(_V(daemon=None), cfg)
    assert (n, per_lg) == (19000, 16000) and "fd limit (20000" in why
    assert bench.idle_plan(_V(daemon=None), bench.Config(idle=2000)) == (2000, 16000, None)
    # several app processes on the port (SO_REUSEPORT): room for all, with a quarter spare
    procs = bench.kernel_app_procs(100000)
    assert procs == 8 and bench.kernel_app_procs(14250) == 1
    v = _V(daemon=None)
    v.app_procs = procs
    assert bench.idle_plan(v, cfg) == (100000, 16000, None)
