"""wire.parse_burst and wire.stamp_frames: the C accelerator and the pure-Python
reference give the same segments and the same frame bytes as the per-frame
parse_frame / build_frame_into."""

import random

import pytest

from fpd import wire
from fpd.wire import ACK, PSH, Segment

A = b"\x0a\x4d\x00\x01"
B = b"\x0a\x4d\x00\x02"
M1 = b"\x02" * 6
M2 = b"\x04" * 6


def _parsers():
    out = [("py", wire._parse_burst_py)]
    if wire._accel is not None:
        out.append(("c", wire._accel.parse_burst))
    return out


def _random_seg(rnd, i):
    n = rnd.choice((0, 1, 2, 3, rnd.randrange(0, 1461), 1448))
    kind = rnd.randrange(6)
    kw = {}
    if kind == 1:
        kw = dict(mss=1460, wscale=7, sack_ok=True)
    elif kind == 2:
        kw = dict(sack=((rnd.getrandbits(32), rnd.getrandbits(32)),))
    elif kind == 3:
        kw = dict(sack_ok=True)
    return Segment(A if i % 3 else B, B, rnd.randrange(1, 65536), rnd.randrange(1, 65536),
                   rnd.getrandbits(32), rnd.getrandbits(32), rnd.randrange(256),
                   rnd.randrange(65536), rnd.randrange(65536), tsval=rnd.getrandbits(32)
                   if rnd.random() < 0.6 else None, tsecr=rnd.getrandbits(32),
                   payload=rnd.randbytes(n), **kw)


def _burst(seed, n=150):
    """Frames of every shape, some broken, some not TCP, some with a partial checksum."""
    rnd = random.Random(seed)
    buf = bytearray(2048 * n)
    addrs, lens = [], []
    for i in range(n):
        a = i * 2048
        seg = _random_seg(rnd, i)
        vlan = 5 if rnd.random() < 0.1 else None
        ln = wire.build_frame_into(buf, a, M1, M2, seg, vlan=vlan, ip_id=rnd.randrange(9))
        r = rnd.random()
        if r < 0.05:
            buf[a + ln - 1] ^= 0x40                       # bad TCP checksum (or payload)
        elif r < 0.08:
            buf[a + 24] ^= 0x01                           # bad IP checksum (ttl)
        elif r < 0.1:
            buf[a + 12:a + 14] = b"\x08\x06"              # ARP: not ours
        elif r < 0.15 and vlan is None:                   # CHECKSUM_PARTIAL value
            tl = ln - 34
            ph = wire.pseudo_header_sum(seg.src, seg.dst, tl)
            buf[a + 50:a + 52] = ph.to_bytes(2, "big")
        elif r < 0.17:
            ln = rnd.randrange(0, ln)                     # truncated
        addrs.append(a)
        lens.append(ln)
    return memoryview(buf), addrs, lens


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("verify", [True, False])
def test_parse_burst_equals_parse_frame(seed, verify):
    view, addrs, lens = _burst(seed)
    for name, fn in _parsers():
        segs, partial = fn(view, addrs, lens, verify)
        assert len(segs) == len(addrs)
        want_partial = 0
        taken = 0
        for seg, a, ln in zip(segs, addrs, lens):
            try:
                fr = wire.parse_frame(view[a:a + ln], verify)
            except wire.MalformedFrame:
                fr = None
            if fr is None:
                assert seg is None, name               # broken or not ours: never a Segment
                continue
            if seg is None:
                assert name == "c"                     # an uncommon shape: Python's job
                continue
            taken += 1
            assert seg.fields() == fr.seg.fields(), name
            want_partial += fr.csum == wire.CSUM_PARTIAL
        assert partial == want_partial, name
        assert taken > len(addrs) // 5


def test_c_parser_takes_the_common_shapes():
    if wire._accel is None:
        pytest.skip("FPD_PURE_PYTHON: no C parser to check")
    buf = bytearray(4096)
    for ts in (None, 123):
        seg = Segment(A, B, 1, 2, 3, 4, ACK | PSH, 5, 0, tsval=ts, tsecr=9, payload=b"abc")
        ln = wire.build_frame_into(buf, 0, M1, M2, seg)
        (got,), _ = wire._accel.parse_burst(memoryview(buf), [0], [ln], True)
        assert got is not None and got.fields() == seg.fields()


def _stampers():
    out = [("py", lambda *a, **k: wire._stamp_frames_py(*a, **{x: y for x, y in k.items()
                                                                if x != "header"}))]
    if wire._accel is not None:
        out.append(("c", wire.stamp_frames))
    return out


@pytest.mark.parametrize("seed", range(10))
def test_stamp_frames_identical_to_per_segment_build(seed):
    rnd = random.Random(seed)
    mss = rnd.choice((536, 1000, 1436, 1448))
    n = rnd.randrange(1, 12)
    payload = rnd.randbytes((n - 1) * mss + rnd.randrange(1, mss + 1))
    vlan = rnd.choice((None, 7))
    tmpl = Segment(A, B, rnd.randrange(1, 65536), rnd.randrange(1, 65536),
                   rnd.choice((rnd.getrandbits(32), 0xFFFFFFFF - 3000)), rnd.getrandbits(32),
                   ACK, rnd.randrange(65536), 0, tsval=rnd.choice((None, rnd.getrandbits(32))),
                   tsecr=rnd.getrandbits(32))
    last = rnd.choice((ACK, ACK | PSH))
    want = bytearray(2048 * n)
    for i in range(n):
        seg = tmpl.copy(seq=(tmpl.seq + i * mss) & 0xFFFFFFFF,
                        payload=payload[i * mss:(i + 1) * mss],
                        flags=last if i == n - 1 else tmpl.flags)
        wire.build_frame_into(want, i * 2048, M1, M2, seg, vlan=vlan)
    for name, fn in _stampers():
        got = bytearray(2048 * n)
        addrs = [i * 2048 for i in range(n)][::-1]       # any order of frames
        lens = fn(got, addrs, M1, M2, tmpl, payload, mss, last, vlan=vlan,
                  header=wire.template_header(M1, M2, tmpl, vlan))
        for i, (a, ln) in enumerate(zip(addrs, lens)):
            w = want[i * 2048:(i + 1) * 2048]
            assert bytes(got[a:a + ln]) == bytes(w[:ln]), (name, i)
            fr = wire.parse_frame(memoryview(got)[a:a + ln])
            assert fr.csum == wire.CSUM_COMPLETE


def test_stamp_frames_rejects_a_payload_that_does_not_fill_the_frames():
    tmpl = Segment(A, B, 1, 2, 3, 4, ACK, 5)
    buf = bytearray(8192)
    with pytest.raises(ValueError):
        wire.stamp_frames(buf, [0, 2048], M1, M2, tmpl, b"x" * 100, 100, ACK)
    with pytest.raises(ValueError):
        wire.stamp_frames(buf, [0, 2048], M1, M2, tmpl, b"x" * 201, 100, ACK)
    with pytest.raises(ValueError):                     # past the buffer
        wire.stamp_frames(buf, [0, 8100], M1, M2, tmpl, b"x" * 200, 100, ACK)
