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
    def compiled(name, src, pxd, **directives):
        """Cython's own dependency check misses the .pxd of a module named apart from its
        source: regenerate the C when either is newer than it."""
        with open(src, "rb") as f:
            src_hash = hashlib.sha256(f.read()).hexdigest()
        gen = os.path.join("build/cython", src[:-3] + ".c")
        force = not os.path.exists(gen) or \
            max(os.path.getmtime(src), os.path.getmtime(pxd)) > os.path.getmtime(gen)
        return cythonize([Extension(name, [src], extra_compile_args=["-O2"],
                                    define_macros=[("FPD_SRC_HASH", f'"{src_hash}"')])],
                         build_dir="build/cython", language_level=3, quiet=True, force=force,
                         compiler_directives=dict({"binding": False}, **directives))

    # fpd._tcp_c keeps Python's indexing rules (tcp.py indexes with -1 and relies on
    # IndexError nowhere, but a bug there must stay an exception, not a stray read)
    for ext in compiled("fpd._tcp_c", "fpd/tcp.py", "fpd/_tcp_c.pxd") + \
            compiled("fpd._fastpath_c", "fpd/fastpath.py", "fpd/_fastpath_c.pxd",
                     boundscheck=False, wraparound=False):
        ext.optional = True
        exts.append(ext)

setup(ext_modules=exts)
