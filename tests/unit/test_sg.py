"""Multi-buffer RX (XDP_USE_SG) over simulated rings: chains of XDP_PKT_CONTD
descriptors become one frame in the UMEM's scratch area, and every chunk goes home."""

import os

from fpd import umem as U
from fpd.umem import Umem, sim_pair
from fpd.xsk import SG_SLOT, SG_TX_SLOTS, XDP_PKT_CONTD, XskRings

CHUNK = 4096
ROOM = CHUNK - U.XDP_PACKET_HEADROOM       # bytes a received buffer holds


def rig(nframes=64, slots=4):
    f_user, fill, _ = sim_pair(64, 1, 0, user_produces=True)
    c_user, comp, _ = sim_pair(64, 1, 0, user_produces=False)
    r_user, rx, _ = sim_pair(64, 2, 0, user_produces=False)
    t_user, tx, _ = sim_pair(64, 2, 0, user_produces=True)
    scratch = (slots + SG_TX_SLOTS) * SG_SLOT
    um = Umem(nframes, CHUNK, buf=bytearray(nframes * CHUNK + scratch), check=True,
              scratch=scratch)
    um.attach_rings(f_user, c_user)
    x = XskRings(um, r_user, t_user)
    x.sg = True
    x.sg_slots = slots
    return x, fill, rx


def deliver(x, fill, rx, frames):
    """The kernel's side: each frame (bytes) cut into buffers taken from the fill ring,
    written to the RX ring as a chain (XDP_PKT_CONTD on all but the last)."""
    addrs, lens = [], []
    for data in frames:
        parts = [data[i:i + ROOM] for i in range(0, len(data), ROOM)]
        k = fill.peek(len(parts))
        assert k == len(parts)
        bufs = fill.read_addrs(k)
        fill.release(k)
        for j, (b, p) in enumerate(zip(bufs, parts)):
            a = b + U.XDP_PACKET_HEADROOM
            x.umem.view[a:a + len(p)] = p
            addrs.append(a)
            lens.append(len(p) | ((XDP_PKT_CONTD << 32) if j + 1 < len(parts) else 0))
    assert rx.reserve(len(addrs)) == len(addrs)
    rx.write_descs(addrs, lens)
    rx.submit(len(addrs))


def test_chains_become_one_frame_and_every_chunk_comes_home():
    x, fill, rx = rig()
    assert x.fill() == 32
    big, small, mid = os.urandom(9014), os.urandom(66), os.urandom(ROOM + 1)
    deliver(x, fill, rx, [big, small, mid])
    addrs, lens = x.rx_burst(64)
    assert lens == [9014, 66, ROOM + 1]
    assert [bytes(x.frame(a, n)) for a, n in zip(addrs, lens)] == [big, small, mid]
    assert addrs[0] >= x.umem.size and addrs[2] >= x.umem.size   # scratch slots
    assert addrs[1] < x.umem.size                                  # one buffer: in place
    assert x.rx_sg_frames == 2 and x.rx_sg_dropped == 0
    x.recycle(addrs)
    assert x.umem.audit()["APP"] == 0 and x.umem.krx == 32       # all back on the fill ring


def test_a_chain_cut_by_the_burst_size_waits_for_its_end():
    x, fill, rx = rig()
    x.fill()
    big = os.urandom(3 * ROOM - 5)
    deliver(x, fill, rx, [big])
    addrs, lens = x.rx_burst(2)                 # two of its three buffers
    assert addrs == [] and lens == []
    x.recycle(addrs)                            # nothing to give back yet
    assert x.umem.audit()["APP"] == 2          # held until the chain ends
    addrs, lens = x.rx_burst(2)
    assert lens == [len(big)] and bytes(x.frame(addrs[0], lens[0])) == big
    x.recycle(addrs)
    assert x.umem.audit()["APP"] == 0


def test_a_frame_beyond_a_scratch_slot_is_dropped_and_its_chunks_recycled():
    x, fill, rx = rig()
    x.fill()
    deliver(x, fill, rx, [os.urandom(SG_SLOT + 1), b"x" * 60])
    addrs, lens = x.rx_burst(64)
    assert lens == [60] and x.rx_sg_dropped == 1
    x.recycle(addrs)
    assert x.umem.audit()["APP"] == 0


def test_without_sg_the_options_word_is_masked():
    x, fill, rx = rig()
    x.sg = False
    x.fill()
    deliver(x, fill, rx, [os.urandom(ROOM + 10)])
    addrs, lens = x.rx_burst(64)
    assert lens == [ROOM, 10]
    x.recycle(addrs)
    assert x.umem.audit()["APP"] == 0


_REAL = os.uname()


def _uname(release):
    r = _REAL
    return os.uname_result((r.sysname, r.nodename, release, r.version, r.machine))


def test_doctor_says_what_a_jumbo_mtu_needs(monkeypatch):
    from fpd import doctor
    monkeypatch.delenv("FPD_SG", raising=False)
    monkeypatch.setattr(doctor.os, "uname", lambda: _uname("6.18.4-amd64"))
    c = doctor._mtu_check("fpd0", 9000)
    assert c["level"] == "ok" and "XDP_USE_SG" in c["detail"]
    monkeypatch.setattr(doctor.os, "uname", lambda: _uname("6.1.0-27-amd64"))
    c = doctor._mtu_check("fpd0", 9000)
    assert c["level"] == "bad" and "Linux >= 6.6" in c["detail"] and "mtu 3498" in c["detail"]
    monkeypatch.setattr(doctor.os, "uname", lambda: _uname("6.18.4-amd64"))
    monkeypatch.setenv("FPD_SG", "0")
    c = doctor._mtu_check("fpd0", 9000)
    assert c["level"] == "bad" and "FPD_SG=0" in c["detail"]


def test_capture_joins_tx_chains_into_frames():
    """fpd capture's TX tap sees descriptors with XDP_PKT_CONTD in the high word: it
    records each chain as one frame of the real length."""
    from fpd.capture import _join_chains
    view = memoryview(bytearray(3 * CHUNK))
    frame = os.urandom(CHUNK + 100)
    view[0:CHUNK] = frame[:CHUNK]
    view[2 * CHUNK:2 * CHUNK + 100] = frame[CHUNK:]
    view[CHUNK:CHUNK + 60] = b"a" * 60
    buf, addrs, lens = _join_chains(view, [0, 2 * CHUNK, CHUNK],
                                    [CHUNK | XDP_PKT_CONTD << 32, 100, 60])
    assert lens == [CHUNK + 100, 60]
    assert bytes(buf[addrs[0]:addrs[0] + lens[0]]) == frame
    assert bytes(buf[addrs[1]:addrs[1] + lens[1]]) == b"a" * 60
