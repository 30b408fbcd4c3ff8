"""The optional C accelerator gives the same results as the pure-Python reference."""

import os
import random
import subprocess
import sys

import pytest

from fpd import wire





def test_accel_is_built_by_the_install():
    # the normal install (make / pip install -e) compiles it; a silent fallback would
    # hide a broken build, so the suite insists unless FPD_PURE_PYTHON is set on purpose
    from fpd import _accel  # noqa: F401
    assert wire.ACCEL


@pytest.mark.parametrize("seed", range(20))
def test_wsum_matches_reference(seed):
    from fpd._accel import wsum
    rnd = random.Random(seed)
    for n in list(range(0, 40)) + [rnd.randrange(0, 9000) for _ in range(30)]:
        kind = rnd.randrange(3)
        data = bytes(n) if kind == 0 else b"\xff" * n if kind == 1 else rnd.randbytes(n)
        ref = wire._wsum_py(data)
        got = wsum(data)
        assert 0 <= got <= 0xFFFF
        assert got % 0xFFFF == ref % 0xFFFF and (got == 0) == (ref == 0), (n, got, ref)
        mv = memoryview(bytearray(data))[1:]                 # views, offsets
        assert wsum(mv) % 0xFFFF == wire._wsum_py(mv) % 0xFFFF


def test_frames_identical_with_and_without_accel():
    """Build and parse frames in a pure-Python interpreter and here: same bytes."""
    code = r'''
import os, random, sys
from fpd import wire
rnd = random.Random(7)
out = []
for i in range(300):
    n = rnd.randrange(0, 1461)
    seg = wire.Segment(b"\x0a\x4d\x00\x01", b"\x0a\x4d\x00\x02", rnd.randrange(1, 65536),
                       rnd.randrange(1, 65536), rnd.getrandbits(32), rnd.getrandbits(32),
                       0x18, rnd.randrange(65536), 0, None, None, False,
                       rnd.getrandbits(32) if i % 2 else None, rnd.getrandbits(32), (),
                       rnd.randbytes(n))
    f = wire.build_frame(b"\x02" * 6, b"\x04" * 6, seg)
    fr = wire.parse_frame(f)
    assert fr.csum == wire.CSUM_COMPLETE
    out.append(f.hex())
sys.stdout.write(str(wire.ACCEL) + "\n" + "\n".join(out))
'''
    env = dict(os.environ)
    pure = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**env, "FPD_PURE_PYTHON": "1"}, check=True).stdout
    env.pop("FPD_PURE_PYTHON", None)
    fast = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, check=True).stdout
    assert pure.split("\n", 1)[0] == "False" and fast.split("\n", 1)[0] == "True"
    assert pure.split("\n", 1)[1] == fast.split("\n", 1)[1]


def test_wire_and_fast_path_suites_pass_in_pure_python():
    """The pure-Python reference stays complete: the wire, checksum, burst and fast-path
    suites run again with FPD_PURE_PYTHON=1 (no fpd._accel at all)."""
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    env = dict(os.environ, FPD_PURE_PYTHON="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                        os.path.join(here, "test_wire.py"), os.path.join(here, "test_checksum.py"),
                        os.path.join(here, "test_burst.py"),
                        os.path.join(root, "tests", "engine", "test_fastpath.py")],
                       cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout


def _rand_seg(rnd, ts, plen, opts=False):
    o = {}
    if opts:
        if rnd.random() < 0.5:
            o["mss"] = rnd.randrange(65536)
        if rnd.random() < 0.5:
            o["wscale"] = rnd.randrange(15)
        o["sack_ok"] = rnd.random() < 0.5
        if rnd.random() < 0.5:
            o["sack"] = tuple((rnd.getrandbits(32), rnd.getrandbits(32))
                              for _ in range(rnd.randrange(1, 6)))
            if rnd.random() < 0.3:
                o["sack"] = list(o["sack"])
    return wire.Segment(**o,
        src=rnd.randbytes(4), dst=rnd.randbytes(4), sport=rnd.randrange(65536),
        dport=rnd.randrange(65536), seq=rnd.choice([0, 0xFFFFFFFF, rnd.getrandbits(32)]),
        ack=rnd.getrandbits(32), flags=rnd.randrange(256), wnd=rnd.randrange(65536),
        urp=rnd.choice([0, rnd.randrange(65536)]),
        tsval=rnd.getrandbits(32) if ts else None, tsecr=rnd.getrandbits(32) if ts else 0,
        payload=rnd.choice([bytes, bytearray, lambda b: memoryview(bytearray(b))])(
            rnd.randbytes(plen)))


@pytest.mark.parametrize("seed", range(10))
def test_single_frame_build_in_c_is_the_python_frame(seed):
    """_accel.build_frame (build_frame_into with no VLAN and the default IP fields, every
    option shape: MSS, timestamps, SACK-permitted, window scale, SACK blocks, as many as
    fit) writes the reference's bytes, at any offset; the frame parses back to the same
    segment (the SACK blocks that fit)."""
    rnd = random.Random(seed)
    for _ in range(60):
        seg = _rand_seg(rnd, rnd.random() < 0.7, rnd.choice([0, 1, 2, 3, rnd.randrange(1461)]),
                        opts=rnd.random() < 0.5)
        smac, dmac = rnd.randbytes(6), rnd.randbytes(6)
        off = rnd.randrange(0, 300)
        ref = bytearray(rnd.randbytes(2048))
        got = bytearray(ref)
        n_ref = wire._build_frame_into_py(ref, off, smac, dmac, seg)
        n_got = wire._accel.build_frame(got, off, smac, dmac, seg)
        assert n_got == n_ref and got == ref, seg
        assert wire.build_frame_into(memoryview(bytearray(2048))[off:], 0, smac, dmac,
                                     seg) == n_ref
        fr = wire.parse_frame(bytes(got[off:off + n_got]), True)
        fit = (wire.TCP_MAX_OPTLEN - wire.options_len(seg.copy(sack=())) - 4) >> 3
        assert fr.seg.fields() == seg.copy(sack=tuple(seg.sack)[:max(fit, 0)]).fields()


def test_single_frame_build_in_c_leaves_the_rest_to_python():
    """Everything else is None (Python builds it, and raises what it raises): fields out
    of range or of another type, bad addresses, a frame that does not fit;
    build_frame_into's result and errors are the reference's."""
    rnd = random.Random(7)
    base = _rand_seg(rnd, True, 10)
    c = wire._accel.build_frame
    m = bytes(6)
    odd = [base.copy(sack_ok=1), base.copy(sack=[[1, 2]]), base.copy(sack=((1, 2.0),)),
           base.copy(sack=iter(())), base.copy(seq=1 << 32), base.copy(sport=-1),
           base.copy(flags=256), base.copy(wnd=65536), base.copy(tsval=1 << 32),
           base.copy(src=b"\1\2\3"), base.copy(payload=bytes(70000)), base.copy(seq=1.0),
           base.copy(mss=65536), base.copy(wscale=256), base.copy(sack=((1 << 32, 0),))]
    for seg in odd:
        assert c(bytearray(2048), 0, m, m, seg) is None, seg
    assert c(bytearray(2048), 0, "00:00:00:00:00:00", m, base) is None
    assert c(bytearray(60), 0, m, m, base) is None                 # does not fit
    assert c(bytearray(2048), -1, m, m, base) is None
    assert c(bytearray(2048), 0, m, m, object()) is None
    for seg in odd[:2]:                                     # odd types: Python's bytes
        ref, got = bytearray(2048), bytearray(2048)
        assert wire.build_frame_into(got, 0, m, m, seg) == \
            wire._build_frame_into_py(ref, 0, m, m, seg) and got == ref
    for seg in odd[4:]:
        with pytest.raises((ValueError, TypeError)):
            wire.build_frame_into(bytearray(2048), 0, m, m, seg)
    with pytest.raises(ValueError):
        wire.build_frame_into(bytearray(60), 0, m, m, base)
