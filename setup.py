"""Builds fpd's compiled parts; everything else is in pyproject.toml.

- fpd._accel (fpd/_accel.c): C primitives (burst parse, frame stamping, checksums).
- fpd._fastpath_c: fpd/fastpath.py (the engine's per-burst fast path) compiled by Cython in
  pure-Python mode, with the C types of fpd/_fastpath_c.pxd. Cython is a build requirement
  (pyproject.toml [build-system]), so the normal install (pip install -e ., make venv)
  builds it; a build without Cython (e.g. --no-build-isolation on an interpreter that has
  none) skips it and says so here and in ``fpd doctor``.

Both are optional: if one cannot be compiled the install goes on and fpd uses the
pure-Python reference code (``fpd.wire.ACCEL``, ``fpd.fastpath.IMPL`` tell what runs)."""

import hashlib
import os
import sys

from setuptools import Extension, setup

exts = [Extension("fpd._accel", ["fpd/_accel.c"], optional=True, extra_compile_args=["-O2"])]
try:
    from Cython.Build import cythonize
except ImportError:
    print("fpd: Cython not found: fpd._tcp_c and fpd._fastpath_c not built (the engine runs "
          "as pure Python)", file=sys.stderr)
else:
    def digest(paths):
        """fpd.builds.digest (keep the two in step): the sha256 over each file's sha256.
        fpd.builds.load runs a compiled module only when its BUILT_FROM matches the files
        as they are now (setup.py cannot import fpd: its requirements may be missing)."""
        h = hashlib.sha256()
        for p in paths:
            with open(p, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
        return h.hexdigest()

    def compiled(name, src, pxds, **directives):
        """Cython's own dependency check misses the .pxd of a module named apart from its
        source: regenerate the C when the source or any .pxd it depends on (its own, and
        those it cimports) is newer than it. ``src`` and ``pxds`` are what fpd.tcp.SOURCES
        / fpd.fastpath.SOURCES list, in that order."""
        files = [src] + list(pxds)
        gen = os.path.join("build/cython", src[:-3] + ".c")
        force = not os.path.exists(gen) or \
            max(os.path.getmtime(f) for f in files) > os.path.getmtime(gen)
        return cythonize([Extension(name, [src], extra_compile_args=["-O2"],
                                    define_macros=[("FPD_SRC_HASH", f'"{digest(files)}"')])],
                         build_dir="build/cython", language_level=3, quiet=True, force=force,
                         compiler_directives=dict({"binding": False}, **directives))

    # fpd._tcp_c keeps Python's indexing rules (tcp.py indexes with -1 and relies on
    # IndexError nowhere, but a bug there must stay an exception, not a stray read).
    # fpd._fastpath_c cimports fpd._tcp_c's Connection (fpd/_tcp_c.pxd): built second.
    for ext in compiled("fpd._tcp_c", "fpd/tcp.py", ["fpd/_tcp_c.pxd"]) + \
            compiled("fpd._fastpath_c", "fpd/fastpath.py",
                     ["fpd/_fastpath_c.pxd", "fpd/_tcp_c.pxd"],
                     boundscheck=False, wraparound=False):
        ext.optional = True
        exts.append(ext)

setup(ext_modules=exts)
