"""fpd.builds: the one loader of fpd's Cython builds (fpd._tcp_c, fpd._fastpath_c)."""

import hashlib
import os

import pytest

from fpd import builds, fastpath, tcp


def test_refused_names_the_switch(monkeypatch):
    monkeypatch.delenv("FPD_COMPILED", raising=False)
    monkeypatch.delenv("FPD_PURE_PYTHON", raising=False)
    assert builds.refused() == ""
    monkeypatch.setenv("FPD_PURE_PYTHON", "1")
    assert builds.refused() == "FPD_PURE_PYTHON set"
    monkeypatch.setenv("FPD_COMPILED", "0")
    assert builds.refused() == "FPD_COMPILED=0 set"
    monkeypatch.delenv("FPD_PURE_PYTHON")
    assert builds.refused() == "FPD_COMPILED=0 set"
    monkeypatch.setenv("FPD_COMPILED", "1")
    assert builds.refused() == ""


def test_digest_covers_every_file_in_order(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    want = hashlib.sha256(hashlib.sha256(b"one").digest() +
                          hashlib.sha256(b"two").digest()).hexdigest()
    assert builds.digest([a, b]) == want
    assert builds.digest([b, a]) != want
    b.write_bytes(b"two!")
    assert builds.digest([a, b]) != want


def test_load_refuses_without_loading(monkeypatch):
    monkeypatch.setenv("FPD_COMPILED", "0")
    assert builds.load("_no_such_module", ("tcp.py",)) == (None, "FPD_COMPILED=0 set")


def test_load_says_what_is_missing(monkeypatch):
    monkeypatch.delenv("FPD_COMPILED", raising=False)
    monkeypatch.delenv("FPD_PURE_PYTHON", raising=False)
    mod, why = builds.load("_no_such_module", ("tcp.py",))
    assert mod is None and "not built" in why
    mod, why = builds.load("_fastpath_c", fastpath.SOURCES,
                           needs=[("_tcp_c", None, "FPD_COMPILED=0 set")])
    assert mod is None and "beside fpd._tcp_c" in why and "FPD_COMPILED=0 set" in why


def test_load_checks_the_sources(monkeypatch):
    if tcp._compiled is None:
        pytest.skip(f"no compiled engine here: {tcp.WHY}")
    monkeypatch.delenv("FPD_COMPILED", raising=False)
    monkeypatch.delenv("FPD_PURE_PYTHON", raising=False)
    assert builds.load("_tcp_c", tcp.SOURCES) == (tcp._compiled, "")
    # the same module against a list of files it was not built from: stale
    mod, why = builds.load("_tcp_c", ("tcp.py",))
    assert mod is None and "stale" in why


def test_the_running_builds_match_their_sources():
    # what fpd.tcp / fpd.fastpath chose agrees with the files on disk
    here = os.path.dirname(tcp.__file__)
    for mod in (tcp, fastpath):
        if mod._compiled is not None:
            assert mod._compiled.BUILT_FROM == \
                builds.digest([os.path.join(here, s) for s in mod.SOURCES])
            assert mod.IMPL == "compiled" and mod.WHY == ""
        else:
            assert mod.IMPL == "python" and mod.WHY
