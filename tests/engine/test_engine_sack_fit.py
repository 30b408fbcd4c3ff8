"""SACK blocks never push a data segment past the peer's MSS (RFC 6691: payload plus
options <= MSS). Found over the real XDP path: the veth peer dropped 1512-byte frames."""

from fpd import wire
from fpd.stack import Stack, StackConfig

A, B = b"\x0a\0\0\x01", b"\x0a\0\0\x02"


def _pair(**cfg):
    srv, cli = Stack(b"k1", StackConfig(**cfg)), Stack(b"k2", StackConfig(**cfg))
    srv.listen(A, 80)
    c = cli.connect(0.0, B, 40000, A, 80)
    for _ in range(3):
        for s in cli.output():
            srv.input(s, 0.0)
        for s in srv.output():
            cli.input(s, 0.0)
    conn = [e[2] for e in srv.events() if e[0] == "accepted"][0]
    return srv, cli, c, conn


def _check(timestamps):
    srv, cli, c, conn = _pair(timestamps=timestamps)
    c.send(b"a" * 3000, 0.0)
    segs = cli.output()
    for s in segs[1:]:              # a hole at the start: the server now has SACK to tell
        srv.input(s, 0.0)
    srv.output()
    conn.send(b"b" * 5000, 0.0)
    out = srv.output()
    data = [s for s in out if s.payload]
    assert data, "server sent no data"
    for s in data:
        assert wire.options_len(s) + len(s.payload) <= 1460, s
    # the short tail segment still has room for SACK information
    assert any(s.sack for s in out)
    return srv


def test_full_segments_with_timestamps_fit_the_mss():
    srv = _check(True)
    assert srv.counters()["sack_trimmed"] > 0


def test_full_segments_without_timestamps_fit_the_mss():
    _check(False)
