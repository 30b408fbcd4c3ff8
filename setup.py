"""Builds fpd's optional C accelerator (fpd/_accel.c); everything else is in pyproject.toml.

The extension is optional: if it cannot be compiled the install goes on and fpd uses
its pure-Python reference code (fpd.wire tells which one runs: ``wire.ACCEL``)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("fpd._accel", ["fpd/_accel.c"], optional=True,
                             extra_compile_args=["-O2"])])
