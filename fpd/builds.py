"""Which build of fpd's Cython-compiled modules runs: the one place that decides.

setup.py compiles some of fpd's Python modules with Cython in pure-Python mode, each typed
by a ``.pxd`` (``fpd/tcp.py`` -> ``fpd._tcp_c``, ``fpd/fastpath.py`` -> ``fpd._fastpath_c``).
The ``.py`` stays the source and the reference; the compiled module is used only when

- the environment does not refuse it (``FPD_COMPILED=0``: every Cython build off;
  ``FPD_PURE_PYTHON=1``: those and the C primitives of ``fpd._accel``),
- it is built (a build without Cython skips it) and imports (a compiled module that
  cimports another one fails to import when that one's binary layout changed),
- it was built from the files as they are now: setup.py stores :func:`digest` of its
  sources (the ``.py`` and every ``.pxd`` its C code depends on) as ``BUILT_FROM``; an
  edit since the last ``pip install -e .`` / ``make venv`` makes it stale,
- the compiled modules it needs run too (``needs``).

Otherwise the Python code runs, and the module's ``IMPL`` / ``WHY`` say why (``fpd doctor``).
This module imports nothing of fpd (the engine layers import it)."""

import hashlib
import importlib
import os

__all__ = ["refused", "digest", "load"]

_HERE = os.path.dirname(os.path.abspath(__file__))


def refused():
    """Why the environment asks for the Python builds ("" when it does not)."""
    if os.environ.get("FPD_COMPILED", "1") == "0":
        return "FPD_COMPILED=0 set"
    if os.environ.get("FPD_PURE_PYTHON"):
        return "FPD_PURE_PYTHON set"
    return ""


def digest(paths):
    """The sha256 (hex) over the sha256 of each file in order; setup.py computes the same
    for the files a compiled module is built from (keep the two in step)."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def load(name, sources, needs=()):
    """``(module, "")``: the compiled module ``fpd.<name>`` may run; ``(None, why)``: the
    Python build runs, ``why`` says why. ``sources``: the file names (in fpd/) it is built
    from, in setup.py's order; ``needs``: ``(name, module or None, why)`` of compiled
    modules it runs beside (None: that one does not run)."""
    why = refused()
    if why:
        return None, why
    for dep, mod, dep_why in needs:
        if mod is None:
            return None, f"fpd.{name} runs only beside fpd.{dep}, which does not ({dep_why})"
    try:
        mod = importlib.import_module(f"fpd.{name}")
    except Exception as e:                 # noqa: BLE001 (also: a cimported type's size changed)
        if isinstance(e, ImportError) and e.name == f"fpd.{name}":
            return None, f"fpd.{name} not built (no Cython when fpd was installed)"
        return None, f"fpd.{name} does not import ({e}): rebuild it with `make venv`"
    try:
        want = digest([os.path.join(_HERE, s) for s in sources])
    except OSError as e:
        return None, f"fpd.{name}: cannot read its sources to check the build ({e})"
    if getattr(mod, "BUILT_FROM", None) != want:
        files = " / ".join(f"fpd/{s}" for s in sources)
        return None, (f"fpd.{name} is stale (built from another {files}): rebuild it with "
                      "`pip install -e .` or `make venv`")
    return mod, ""
