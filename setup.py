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
    print("fpd: Cython not found: fpd._fastpath_c not built (the engine's fast path runs as "
          "pure Python)", file=sys.stderr)
else:
    with open("fpd/fastpath.py", "rb") as f:
        src_hash = hashlib.sha256(f.read()).hexdigest()
    # Cython's own dependency check misses the .pxd of a module named apart from its
    # source: regenerate the C when either is newer than it
    gen = "build/cython/fpd/fastpath.c"
    force = not os.path.exists(gen) or max(os.path.getmtime("fpd/fastpath.py"),
                                           os.path.getmtime("fpd/_fastpath_c.pxd")) \
        > os.path.getmtime(gen)
    for ext in cythonize([Extension("fpd._fastpath_c", ["fpd/fastpath.py"],
                                    extra_compile_args=["-O2"],
                                    define_macros=[("FPD_SRC_HASH", f'"{src_hash}"')])],
                         build_dir="build/cython", language_level=3, quiet=True, force=force,
                         compiler_directives={"boundscheck": False, "wraparound": False,
                                              "binding": False}):
        ext.optional = True
        exts.append(ext)

setup(ext_modules=exts)
