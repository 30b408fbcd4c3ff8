"""fpd.bpf, fpd.libbpf and fpd.libc without the kernel: layouts, names, messages, find_object."""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

import pytest

libbpf = pytest.importorskip("fpd.libbpf", reason="libbpf1 not installed",
                             exc_type=OSError)
from fpd import bpf  # noqa: E402

SRC = Path(bpf.__file__).resolve().parent.parent / "bpf" / "steer.c"


def test_stat_names_mirror_the_c_enum():
    text = SRC.read_text()
    enum = re.search(r"enum fpd_stat \{(.*?)\};", text, re.S).group(1)
    pairs = re.findall(r"FPD_STAT_(\w+)\s*=\s*(\d+)", enum)
    names = {int(v): k.lower() for k, v in pairs if k != "MAX"}
    assert tuple(names[i] for i in range(len(names))) == bpf.STAT_NAMES
    assert int(dict(pairs)["MAX"]) == len(bpf.STAT_NAMES)


def test_map_and_program_names_in_the_source():
    text = SRC.read_text()
    assert re.search(r'SEC\("xdp"\)\s*int fpd_steer\(struct xdp_md \*ctx\)', text)
    assert re.search(r"\} fpd_steer_map SEC", text) and bpf.STEER_MAP_C == "fpd_steer_map"
    assert re.search(r"\} fpd_xsks SEC", text) and re.search(r"\} fpd_stats SEC", text)
    assert 'SEC("license") = "GPL"' in text


def test_steer_key_layout():
    # struct fpd_steer_key { __be32 addr; __be16 port; __u16 pad; }
    key = bpf.STEER_KEY.pack(bpf._parse_addr("10.77.0.1"), 8080)
    assert key == bytes([10, 77, 0, 1, 0x1F, 0x90, 0, 0])
    assert bpf.STEER_VAL.size == 4


@pytest.mark.parametrize("addr,want", [
    (None, bytes(4)), (0, bytes(4)), ("0.0.0.0", bytes(4)), (b"\0\0\0\0", bytes(4)),
    ("10.77.0.1", bytes([10, 77, 0, 1])), (b"\x0a\x4d\x00\x02", bytes([10, 77, 0, 2])),
])
def test_parse_addr(addr, want):
    assert bpf._parse_addr(addr) == want


@pytest.mark.parametrize("addr,exc", [("::1", ValueError), ("10.0.0", ValueError),
                                      (b"\x01\x02", ValueError), (1.5, TypeError)])
def test_parse_addr_rejects(addr, exc):
    with pytest.raises(exc):
        bpf._parse_addr(addr)


def test_xdp_error_is_oserror_with_words():
    e = bpf._attach_error(errno.ENODEV, "eth9", "native", "attach", [])
    assert isinstance(e, OSError) and e.errno == errno.ENODEV
    assert str(e).startswith("interface eth9 does not exist")
    assert "native mode" in str(e) and "No such device" in str(e)

    e = bpf._attach_error(errno.EPERM, "eth9", "generic", "attach", [])
    assert "not permitted: run as root or with CAP_NET_ADMIN+CAP_BPF" in str(e)
    assert "eth9" in str(e) and "generic mode" in str(e)

    e = bpf._attach_error(errno.ERANGE, "veth0", "native", "attach",
                          ["libbpf: Kernel error message: veth: Peer MTU is too large "
                           "to set XDP\n"])
    assert "MTU of veth0 (or its peer) too large for native XDP (max 3506 on veth" in str(e)
    assert "Peer MTU is too large" in str(e)  # the kernel's extended ack is kept

    e = bpf._attach_error(errno.EBUSY, "eth9", "native", "attach", [])
    assert "another XDP program (id unknown) is already attached to eth9" in str(e)
    assert "Device or resource busy" in str(e)


@pytest.mark.parametrize("module", ["fpd.libbpf", "fpd.libc", "fpd.shm"])
def test_ctypes_declarations_carry_their_prototype(module):
    """Every restype/argtypes pair sits under a comment with the C prototype it mirrors."""
    import importlib
    lines = Path(importlib.import_module(module).__file__).read_text().splitlines()
    declared = 0
    for i, line in enumerate(lines):
        m = re.match(r"(lib|libc|libatomic)\.(\w+)\.restype = ", line)
        if not m:
            continue
        declared += 1
        name = m.group(2)
        assert re.match(rf"{m.group(1)}\.{name}\.argtypes = ", lines[i + 1]), name
        j = i - 1
        comment = []
        while j >= 0 and lines[j].startswith("#"):
            comment.insert(0, lines[j])
            j -= 1
        assert any(f"{name}(" in c for c in comment), f"{name}: no C prototype above it"
    assert declared >= {"fpd.libbpf": 20, "fpd.libc": 4, "fpd.shm": 1}[module]


def test_ctypes_declarations_only_in_their_library_module():
    """No other module of fpd declares a C function (restype/argtypes) or opens a library
    (fpd.shm declares libatomic's fence itself: it imports nothing of fpd)."""
    pkg = Path(bpf.__file__).resolve().parent
    for f in sorted(pkg.glob("*.py")):
        if f.name in ("libbpf.py", "libc.py", "shm.py"):
            continue
        text = f.read_text()
        assert not re.search(r"\.(restype|argtypes)\s*=", text), f.name
        assert "CDLL(" not in text, f.name


def test_entering_a_namespace_does_not_load_libbpf():
    import subprocess
    import sys
    code = ("import sys, fpd.netns, fpd.xsk; "
            "print(sorted(m for m in sys.modules if m.startswith('fpd.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "'fpd.libc'" in out and "'fpd.netns'" in out
    assert "fpd.libbpf" not in out


def test_libbpf_struct_sizes():
    import ctypes
    # sizes of the C structs on LP64 (size_t :0 pads to 8)
    assert ctypes.sizeof(libbpf.bpf_xdp_attach_opts) == 16
    assert ctypes.sizeof(libbpf.bpf_xdp_query_opts) == 32
    assert ctypes.sizeof(libbpf.bpf_map_create_opts) == 48


def test_find_object_env(monkeypatch, tmp_path):
    obj = tmp_path / "x.o"
    obj.write_bytes(b"")
    monkeypatch.setenv("FPD_BPF_OBJECT", str(obj))
    assert bpf.find_object() == str(obj)
    monkeypatch.setenv("FPD_BPF_OBJECT", str(tmp_path / "missing.o"))
    with pytest.raises(FileNotFoundError, match="FPD_BPF_OBJECT"):
        bpf.find_object()


def _fake_tree(monkeypatch, tmp_path, with_src=True, with_obj=False):
    import fpd

    pkg = tmp_path / "tree" / "fpd"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (tmp_path / "tree" / "bpf").mkdir()
    if with_src:
        shutil.copy(SRC, tmp_path / "tree" / "bpf" / "steer.c")
    if with_obj:
        (tmp_path / "tree" / "bpf" / "steer.o").write_bytes(b"obj")
    monkeypatch.setattr(fpd, "__file__", str(pkg / "__init__.py"))
    monkeypatch.delenv("FPD_BPF_OBJECT", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "tree" / "bpf"


def test_find_object_prefers_a_fresh_tree_object(monkeypatch, tmp_path):
    d = _fake_tree(monkeypatch, tmp_path, with_obj=True)
    os.utime(d / "steer.c", (1, 1))
    assert bpf.find_object() == str(d / "steer.o")


needs_clang = pytest.mark.skipif(not shutil.which("clang"), reason="clang not installed")


@needs_clang
def test_find_object_compiles_into_the_tree(monkeypatch, tmp_path):
    d = _fake_tree(monkeypatch, tmp_path)
    got = bpf.find_object()
    assert got == str(d / "steer.o")
    assert (d / "steer.o").read_bytes()[:4] == b"\x7fELF"


@needs_clang
def test_find_object_compiles_into_the_cache_if_the_tree_is_read_only(monkeypatch, tmp_path):
    d = _fake_tree(monkeypatch, tmp_path)
    monkeypatch.setattr(bpf, "_writable", lambda _d: False)
    got = Path(bpf.find_object())
    assert got.parent == tmp_path / "cache" / "fpd" and got.name.startswith("steer-")
    assert got.read_bytes()[:4] == b"\x7fELF"
    assert not (d / "steer.o").exists()
    assert bpf.find_object() == str(got)  # cached


def test_find_object_without_clang_says_what_to_do(monkeypatch, tmp_path):
    _fake_tree(monkeypatch, tmp_path)
    monkeypatch.setattr(bpf.shutil, "which", lambda _n: None)
    monkeypatch.setattr(bpf, "SYSTEM_OBJECT", tmp_path / "nowhere" / "steer.o")
    with pytest.raises(FileNotFoundError, match="clang is not installed"):
        bpf.find_object()


def test_find_object_nothing_at_all(monkeypatch, tmp_path):
    _fake_tree(monkeypatch, tmp_path, with_src=False)
    monkeypatch.setattr(bpf, "SYSTEM_OBJECT", tmp_path / "nowhere" / "steer.o")
    with pytest.raises(FileNotFoundError, match="make bpf"):
        bpf.find_object()
