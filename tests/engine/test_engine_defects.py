"""Defects found in review (issue #9), each pinned by a test that failed before its fix."""

try:
    from test_engine_helpers import Harness, mkseg, kinds, SYN, ACK, RST, FIN, PSH, MASK, SPORT
except ImportError:  # pragma: no cover
    from .test_engine_helpers import Harness, mkseg, kinds, SYN, ACK, RST, FIN, PSH, MASK, SPORT
from fpd import tcp


def test_syn_cookie_tsval_never_ahead_of_the_clock():
    """#9.1: the option bits in a cookie's TSval must not put it ahead of our clock, or
    the ACK that echoes it at once is refused as 'from the future' (and reset)."""
    h = Harness(syn_cookies="always")
    h.stack.listen(b"\0\0\0\0", SPORT)
    failed = 0
    for i in range(64):
        port = 20000 + i
        h.now = 100.0 + i * 0.001                   # every value of the low 6 bits
        out = h.inp(mkseg(SYN, 1, sport=port, mss=1460, wscale=7, sack_ok=True,
                          tsval=100, tsecr=0))
        sa = out[0]
        tnow = h.stack._ts_off(sa.src, sa.sport, sa.dst, sa.dport) + int(h.now * 1000)
        assert (tnow - sa.tsval) & MASK < 1 << 31, "cookie TSval ahead of our clock"
        out = h.inp(mkseg(ACK, 2, sa.seq + 1, sport=port, tsval=101, tsecr=sa.tsval))
        if out and out[0].flags & RST:
            failed += 1
    assert failed == 0
    assert h.stack.stats.syncookies_validated == 64
    c = h.stack.find((h.stack.connections()[0].local), h.stack.connections()[0].remote)
    assert c.info()["sack"] and c.info()["snd_wscale"] == 7
