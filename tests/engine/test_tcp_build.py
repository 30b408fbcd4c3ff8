"""The engine's compiled build, fpd._tcp_c (fpd/tcp.py by Cython, types in fpd/_tcp_c.pxd):
that it is declared completely, built by the normal install, chosen only when fresh, and
that it sends exactly what the Python build sends."""

import os
import random
import re
import shutil
import subprocess
import sys

import pytest

try:
    from test_engine_b2b import _transfer
except ImportError:  # pragma: no cover - when tests/engine is a package
    from .test_engine_b2b import _transfer
from fpd import stack, tcp

PXD = os.path.join(os.path.dirname(tcp.__file__), "_tcp_c.pxd")


def _declared(cls):
    """Names the .pxd declares as fields of ``cdef class cls``."""
    text = open(PXD).read()
    m = re.search(rf"^cdef class {cls}:\n((?:    .*\n|\n)*)", text, re.M)
    assert m, f"no cdef class {cls} in {PXD}"
    names = set()
    for line in m.group(1).splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("cdef "):
            first, *rest = line.split(",")
            names.update([first.split()[-1]] + [n.strip() for n in rest])
    return names


@pytest.mark.python_engine          # reads the source and the .pxd only
@pytest.mark.parametrize("cls", ["Connection", "Context", "_Rec"])
def test_every_slot_is_declared_in_the_pxd(cls):
    # an attribute added to __slots__ in fpd/tcp.py and not to fpd/_tcp_c.pxd would be
    # "object has no attribute" in the compiled build only: name it here instead
    py = {"Connection": tcp.PyConnection, "Context": tcp.PyContext, "_Rec": tcp.PyRec}[cls]
    slots = set(py.__slots__)
    declared = _declared(cls)
    assert slots - declared == set(), f"declare these in {PXD} (cdef class {cls})"
    assert declared - slots == set(), f"declared in {PXD} but not in {cls}.__slots__"


@pytest.mark.python_engine
def test_the_compiled_engine_is_built_and_runs():
    # the normal install (pip install -e ., make venv) builds fpd._tcp_c; a silent fallback
    # would hide a broken build, so the suite insists unless Python is asked for
    if os.environ.get("FPD_PURE_PYTHON") or os.environ.get("FPD_COMPILED") == "0":
        assert tcp.IMPL == "python"
        return
    assert tcp.IMPL == "compiled", tcp.WHY
    assert tcp._compiled.Connection is not tcp.PyConnection
    assert type(tcp._compiled.Connection.send).__name__ == "method_descriptor"
    # one Event class for both builds: the loops compare events by identity
    assert tcp._compiled.Event is tcp.Event


def test_use_build_switches_what_the_stack_makes(tcp_build):
    s = stack.Stack(b"k", stack.StackConfig())
    c = s.connect(0.0, b"\x0a\x4d\x00\x02", 40000, b"\x0a\x4d\x00\x01", 80)
    want = tcp.PyConnection if tcp_build == "python" else tcp._compiled.Connection
    assert type(c) is want
    assert type(c.rtxq[0]) is (tcp.PyRec if tcp_build == "python" else tcp._compiled._Rec)


def _trace(build, seed, **kw):
    """Every segment two stacks exchange moving 200 KB each way with 3 % loss (SACK
    recovery, RACK, RTOs), as comparable tuples."""
    old = tcp.use_build(build)
    try:
        rng = random.Random(seed)
        log = []

        def drop(s, d):
            log.append((d, s.seq, s.ack, s.flags, s.wnd, s.tsval, s.tsecr, tuple(s.sack),
                        s.mss, s.wscale, s.sack_ok, bytes(s.payload)))
            return rng.random() < 0.03
        a, b, now = _transfer(200_000, drop=drop, **kw)
        return log, now, a.stats.retransmits + b.stats.retransmits
    finally:
        tcp.use_build(old)


@pytest.mark.python_engine          # switches builds itself
@pytest.mark.parametrize("seed,kw", [(1, {}), (2, {"cc": "newreno"}),
                                     (3, {"timestamps": False, "sack": False})])
def test_both_builds_send_the_same_segments(seed, kw):
    if tcp._compiled is None:
        pytest.skip(f"no compiled engine here: {tcp.WHY}")
    py = _trace("python", seed, **kw)
    co = _trace("compiled", seed, **kw)
    assert py[2] > 0                      # the loss did make it recover
    assert len(py[0]) == len(co[0])
    for i, (x, y) in enumerate(zip(py[0], co[0])):
        assert x == y, f"segment {i} differs"
    assert py[1:] == co[1:]


@pytest.mark.python_engine          # runs its own processes
def test_a_stale_or_refused_compiled_engine_is_not_run(tmp_path):
    """fpd._tcp_c built from another tcp.py (edited since the last install) is never run,
    nor with FPD_COMPILED=0: fpd.tcp says so and hands out its Python classes."""
    if tcp._compiled is None:
        pytest.skip(f"no compiled engine here: {tcp.WHY}")
    pkg = os.path.dirname(tcp.__file__)
    shutil.copytree(pkg, tmp_path / "fpd", ignore=shutil.ignore_patterns("__pycache__"))
    code = ("from fpd import tcp, stack; print(tcp.IMPL); print(tcp.WHY); "
            "print(stack.Connection is tcp.PyConnection)")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    env.pop("FPD_PURE_PYTHON", None)
    env.pop("FPD_COMPILED", None)

    def run(**extra):
        return subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                              env=dict(env, **extra), capture_output=True, text=True,
                              check=True).stdout.split("\n")
    assert run()[:3] == ["compiled", "", "False"]          # the copy as built
    assert run(FPD_COMPILED="0")[:3] == ["python", "FPD_COMPILED=0 set", "True"]
    with open(tmp_path / "fpd" / "tcp.py", "a") as f:
        f.write("\n# an edit after the build\n")
    impl, why, py = run()[:3]
    assert (impl, py) == ("python", "True") and "stale" in why


@pytest.mark.python_engine          # runs its own process, which switches builds itself
def test_the_builds_benchmark_runs_and_both_builds_do_the_same_work():
    # bench/engine_builds.py (not timed here): every workload on both builds, and its own
    # check that they sent the same number of segments per unit of work
    if tcp._compiled is None:
        pytest.skip(f"no compiled engine here: {tcp.WHY}")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run([sys.executable, os.path.join(root, "bench", "engine_builds.py"),
                        "--seconds", "0.02", "--rounds", "2"], cwd=root,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    for label in ("bulk receive, µs/segment", "RR 1 B, µs/transaction",
                  "connect-request-close, µs/connection"):
        assert label in r.stdout
