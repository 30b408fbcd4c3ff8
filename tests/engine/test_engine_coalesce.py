"""Stack.output_coalesced: one pure ACK per connection per receive burst, never at the
cost of the signals the peer needs (duplicate ACKs, SACK, data, FIN/SYN/RST)."""

from fpd.stack import Stack, StackConfig
from fpd.wire import ACK, PSH, SYN, Segment

SRV = bytes([10, 77, 0, 1])
PEER = bytes([10, 77, 0, 2])
MSS = 1000


def _established():
    st = Stack(b"k" * 16, StackConfig(quickack=0, delack=0.04))
    st.listen(b"\0\0\0\0", 80)
    st.input(Segment(src=PEER, dst=SRV, sport=40000, dport=80, seq=100, flags=SYN,
                     wnd=65535, mss=MSS, wscale=7, sack_ok=True), 0.0)
    synack = st.output()[0]
    st.input(Segment(src=PEER, dst=SRV, sport=40000, dport=80, seq=101,
                     ack=(synack.seq + 1) & 0xFFFFFFFF, flags=ACK, wnd=512), 0.0)
    assert st.events()
    return st, synack.seq + 1


def _data(seq, iss1, n=MSS):
    return Segment(src=PEER, dst=SRV, sport=40000, dport=80, seq=seq & 0xFFFFFFFF,
                   ack=iss1, flags=ACK | PSH, wnd=512, payload=b"x" * n)


def test_in_order_burst_gives_one_ack_with_the_highest_number():
    st, iss1 = _established()
    out0 = st.stats.segs_out
    for i in range(10):                      # a burst: every 2nd segment wants an ACK
        st.input(_data(101 + i * MSS, iss1), 0.01)
    out = st.output_coalesced()
    acks = [s for s in out if not s.payload]
    assert len(acks) == 1
    assert acks[0].ack == 101 + 10 * MSS
    assert st.stats.segs_out - out0 == 1     # built once (at output), not five times


def test_an_ack_owed_is_not_sent_when_data_carried_it():
    st, iss1 = _established()
    conn = st.connections()[0]
    for i in range(4):
        st.input(_data(101 + i * MSS, iss1), 0.01)
    conn.send(b"reply", 0.01)                # data goes out with the current ACK
    out = st.output()
    assert [s.payload for s in out] == [b"reply"]
    assert out[0].ack == 101 + 4 * MSS


def test_output_coalesced_drops_only_superseded_pure_acks():
    st, _ = _established()
    mk = lambda ack, **kw: Segment(src=SRV, dst=PEER, sport=80, dport=40000, seq=5,
                                   ack=ack, flags=ACK, wnd=100, **kw)
    st._cx.out = [mk(1000), mk(2000), mk(2000), mk(2500, sack=((3000, 4000),)), mk(3000),
               mk(3000, payload=b"d"), mk(3500)]
    out = st.output_coalesced()
    # the cumulative 3500 supersedes 1000, 2000, 2000 and 3000; SACK and data stay
    assert [(s.ack, bool(s.sack), bool(s.payload)) for s in out] == [
        (2500, True, False), (3000, False, True), (3500, False, False)]
    assert st.stats.acks_coalesced == 4
    st._cx.out = [mk(2000), mk(2000), mk(2000)]  # duplicate ACKs: all kept
    assert len(st.output_coalesced()) == 3


def test_duplicate_and_sack_acks_are_all_kept():
    st, iss1 = _established()
    st.input(_data(101, iss1), 0.01)
    for i in range(2, 6):                    # a hole at segment 1: dup ACKs with SACK
        st.input(_data(101 + i * MSS, iss1), 0.01)
    out = st.output_coalesced()
    dups = [s for s in out if s.ack == 101 + MSS]
    assert len(dups) >= 4, [(s.ack, s.sack) for s in out]
    assert all(s.sack for s in dups[1:])


