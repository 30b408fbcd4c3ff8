"""The import contracts in pyproject.toml hold, and they do catch an import across a layer."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not (ROOT / "pyproject.toml").exists(),
                                reason="needs the checkout (pyproject.toml holds the contracts)")


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    # PYTHONPATH first so that grimp finds the tree under test, not the installed fpd.
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_contracts_are_kept():
    assert LINT.exists(), "lint-imports missing: install the test extra (pip install -e '.[test]')"
    p = _lint(ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "0 broken" in p.stdout


@pytest.mark.parametrize("victim, line", [
    ("wire.py", "from fpd import netns"),                  # wire -> io
    ("tcp.py", "from fpd import client"),                  # engine -> client (indirect too)
    ("cc.py", "def _late():\n    from fpd import daemon\n"),  # engine -> daemon, in a function
    ("shm.py", "from fpd import wire"),                    # shm -> anything of fpd
])
def test_a_crossing_import_breaks_the_run(tmp_path, victim, line):
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copytree(ROOT / "fpd", tmp_path / "fpd",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    f = tmp_path / "fpd" / victim
    f.write_text(f.read_text() + "\n" + line + "\n")
    p = _lint(tmp_path)
    assert p.returncode != 0, p.stdout
    assert "BROKEN" in p.stdout
