"""The shipped commands work from an installed package, away from the checkout.

fpd is built and installed (offline: no index, no build isolation, no dependencies) into
a fresh venv in a temporary directory; its dependencies (click, pyroute2) come from the
test's own environment through a .pth line that follows the new venv's site-packages, so
the fpd that runs is the installed copy. Then the commands run from a directory outside
the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not (ROOT / "pyproject.toml").exists(),
                                reason="needs the checkout to build from")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src)
    shutil.copytree(ROOT / "fpd", src / "fpd",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    venv = tmp / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True, timeout=120)
    py = venv / "bin" / "python"
    p = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q",
                        "--no-deps", "--no-build-isolation", "--no-index", str(src)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    deps = Path(click.__file__).resolve().parent.parent
    (site / "zz_test_deps.pth").write_text(f"{deps}\n")
    run_dir = tmp / "elsewhere"
    run_dir.mkdir()
    shutil.rmtree(src)                  # nothing left to load but the installed copy
    return venv, site, run_dir


def _run(venv, run_dir, *argv):
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(run_dir)}
    return subprocess.run([*argv], cwd=run_dir, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_installed_package_is_what_runs(installed):
    venv, site, run_dir = installed
    p = _run(venv, run_dir, str(venv / "bin" / "python"), "-c",
             "import fpd, fpd.cli; print(fpd.__file__)")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().startswith(str(site)), p.stdout


@pytest.mark.parametrize("command, expect", [
    ("bench", ["--quick", "--rounds", "--json FILE", "--variants", "--peer-offloads"]),
    ("demo", ["--quick"]),
])
def test_commands_run_installed(installed, command, expect):
    venv, site, run_dir = installed
    p = _run(venv, run_dir, str(venv / "bin" / "fpd"), command, "--help")
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.startswith(f"Usage: fpd {command} [OPTIONS]"), p.stdout
    for word in expect:
        assert word in p.stdout, (word, p.stdout)
    assert "usage:" not in p.stdout              # no argparse text inside click's help


def test_apps_the_commands_run_are_installed(installed):
    venv, site, run_dir = installed
    code = ("import fpd.bench, fpd.demo, fpd.bench_app, fpd.examples.echo_server, "
            "fpd.examples.http_server, fpd.examples.http_get, os; "
            "print(fpd.bench.APPS); print(fpd.demo.EXAMPLES); "
            "print(all(os.path.isfile(fpd.demo.EXAMPLES / n) for n in "
            "('echo_server.py', 'http_server.py', 'http_get.py')))")
    p = _run(venv, run_dir, str(venv / "bin" / "python"), "-c", code)
    assert p.returncode == 0, p.stderr
    apps, examples, present = p.stdout.split()
    assert apps == str(site / "fpd" / "bench_app.py") and os.path.isfile(apps)
    assert examples == str(site / "fpd" / "examples") and present == "True"
    p = _run(venv, run_dir, str(venv / "bin" / "python"), "-m", "fpd.bench_app", "--help")
    assert p.returncode == 0 and "--module" in p.stdout, p.stderr


@pytest.mark.skipif(not shutil.which("clang"), reason="clang builds the XDP program (make deps)")
def test_the_installed_package_builds_its_xdp_program(installed):
    """No checkout: find_object compiles the package's copy of bpf/steer.c into the cache."""
    venv, site, run_dir = installed
    assert (site / "fpd" / "steer.c").read_bytes() == (ROOT / "bpf" / "steer.c").read_bytes()
    p = _run(venv, run_dir, str(venv / "bin" / "python"), "-c",
             "from fpd import bpf; print(bpf.find_object())")
    assert p.returncode == 0, p.stderr
    obj = Path(p.stdout.strip())
    assert obj.parent == run_dir / ".cache" / "fpd" and obj.name.startswith("steer-")
    assert obj.read_bytes()[:4] == b"\x7fELF"


def test_the_installed_fast_path_says_which_build_runs(installed):
    # this offline build has no build isolation: the compiled fast path is there when the
    # interpreter building it has Cython, else the Python one runs and says why
    venv, site, run_dir = installed
    p = _run(venv, run_dir, str(venv / "bin" / "python"), "-c",
             "from fpd import fastpath; print(fastpath.IMPL); print(fastpath.WHY)")
    assert p.returncode == 0, p.stderr
    impl, why = p.stdout.split("\n")[:2]
    base = getattr(sys, "_base_executable", sys.executable)     # what built it
    have = subprocess.run([base, "-c", "import Cython"], capture_output=True).returncode == 0
    if have:
        assert (impl, why) == ("compiled", ""), p.stdout
    else:
        assert impl == "python" and "not built" in why, p.stdout


def test_the_installed_engine_says_which_build_runs(installed):
    # fpd._tcp_c (fpd/tcp.py compiled) is built beside fpd._fastpath_c when the building
    # interpreter has Cython; without it the Python engine runs and says why
    venv, site, run_dir = installed
    p = _run(venv, run_dir, str(venv / "bin" / "python"), "-c",
             "from fpd import tcp, stack; print(tcp.IMPL); print(tcp.WHY); "
             "print(stack.Connection is tcp.PyConnection)")
    assert p.returncode == 0, p.stderr
    impl, why, py = p.stdout.split("\n")[:3]
    base = getattr(sys, "_base_executable", sys.executable)     # what built it
    have = subprocess.run([base, "-c", "import Cython"], capture_output=True).returncode == 0
    if have:
        assert (impl, why, py) == ("compiled", "", "False"), p.stdout
    else:
        assert (impl, py) == ("python", "True") and "not built" in why, p.stdout
