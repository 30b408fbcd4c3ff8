"""fpd.capture without a daemon: the filter, the message format, the tap's drop-and-count
behaviour on a full socket, the pcap writer."""

import io
import socket
import struct

import pytest

from fpd import capture as cap


def _frame(src="10.77.0.2", dst="10.77.0.1", sport=40000, dport=7007, vlan=False,
           proto=6, size=80):
    ip = bytearray(20)
    ip[0] = 0x45
    ip[9] = proto
    ip[12:16] = socket.inet_aton(src)
    ip[16:20] = socket.inet_aton(dst)
    tcp = struct.pack("!HH", sport, dport) + bytes(16)
    eth = bytes(12) + (b"\x81\x00\x00\x05" if vlan else b"") + b"\x08\x00"
    f = eth + bytes(ip) + tcp
    return f + bytes(max(0, size - len(f)))


def test_matcher_port_host_vlan():
    assert cap.matcher(None, None) is None
    m = cap.matcher(7007, None)
    assert m(_frame()) and m(_frame(sport=7007, dport=1)) and not m(_frame(dport=80))
    assert m(_frame(vlan=True)) and not m(_frame(proto=17))
    h = cap.matcher(None, "10.77.0.2")
    assert h(_frame()) and h(_frame(src="1.1.1.1", dst="10.77.0.2"))
    assert not h(_frame(src="1.1.1.1"))
    both = cap.matcher(80, "10.77.0.2")
    assert not both(_frame()) and both(_frame(dport=80))
    assert not m(b"\x00" * 10)


def test_parse_request_errors_say_what_and_how():
    assert cap.parse_request({}) == {"port": None, "host": None, "snaplen": 65535}
    with pytest.raises(cap.CaptureError, match="IPv4"):
        cap.parse_request({"host": "::1"})
    with pytest.raises(cap.CaptureError, match="1..65535"):
        cap.parse_request({"port": 0})
    with pytest.raises(cap.CaptureError, match="snap length"):
        cap.parse_request({"snaplen": True})


class _FakeXsk:
    def __init__(self, frames):
        self.frames = frames

    def rx_burst(self, max_n=64):
        return [a for a, _ in self.frames], [n for _, n in self.frames]

    def tx_submit(self, descs, lens=None):
        return len(descs)


class _FakeWorker:
    def __init__(self, view, frames):
        self.umem = type("U", (), {"view": view})()
        self.xsk = _FakeXsk(frames)
        self.queue = 3


def _setup(nframes=4, size=1500):
    data = bytearray()
    frames = []
    for i in range(nframes):
        f = _frame(sport=1000 + i, size=size)
        frames.append((len(data), len(f)))
        data += f
    return memoryview(data), frames


def test_tap_rx_tx_snaplen_and_uninstall_when_the_reader_goes():
    view, frames = _setup()
    w = _FakeWorker(view, frames)
    r, wr = cap.make_pair()
    cap.attach(w, wr, {"snaplen": 100, "port": 1001})
    assert "rx_burst" in vars(w.xsk)                 # wrapped on the instance
    w.xsk.rx_burst(64)
    w.xsk.tx_submit([a for a, _ in frames], [n for _, n in frames])
    q, drops, recs = cap.parse_message(r.recv(1 << 20))
    assert (q, drops) == (3, 0) and len(recs) == 1
    ts, orig, d, b = recs[0]
    assert orig == 1500 and d == cap.RX and b == bytes(view[frames[1][0]:][:100])
    q, drops, recs = cap.parse_message(r.recv(1 << 20))
    assert [x[2] for x in recs] == [cap.TX]
    r.close()
    w.xsk.rx_burst(64)                               # EPIPE: the capture ends here
    assert "rx_burst" not in vars(w.xsk) and cap.Tap.of(w).ended == 1


def test_tap_drops_and_counts_when_the_reader_is_slow_and_never_blocks():
    view, frames = _setup(nframes=32)
    w = _FakeWorker(view, frames)
    r, wr = cap.make_pair()
    wr.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 200000)   # small: fills soon
    cap.attach(w, wr, {})
    for _ in range(200):
        w.xsk.rx_burst(64)                           # would block forever if it waited
    tap = cap.Tap.of(w)
    st = tap.stats()
    assert st["drops"] > 0 and st["running"] == 1
    r.setblocking(False)
    got = []
    with pytest.raises(BlockingIOError):
        while True:
            got.append(cap.parse_message(r.recv(1 << 20)))
    assert got and sum(len(x[2]) for x in got) + st["drops"] == 200 * 32
    assert got[-1][1] <= st["drops"]                 # the header carries drops so far
    tap.close()
    r.close()


def test_run_capture_writes_pcap_and_stops_at_count():
    view, frames = _setup(nframes=5, size=64)
    w = _FakeWorker(view, frames)
    r, wr = cap.make_pair()
    cap.attach(w, wr, {})
    w.xsk.rx_burst(64)
    out = io.BytesIO()
    res = cap.run_capture(r, out, count=4, snaplen=65535)
    assert res == {"frames": 4, "drops": 0, "by_queue": {3: 4}, "ended": "count"}
    data = out.getvalue()
    magic, vmaj, vmin, _, _, snap, link = cap.PCAP_HDR.unpack_from(data, 0)
    assert (magic, vmaj, vmin, snap, link) == (0xA1B2C3D4, 2, 4, 65535, 1)
    assert len(data) == 24 + 4 * (16 + 64)
    cap.Tap.of(w).close()
    res = cap.run_capture(r, io.BytesIO(), snaplen=100)    # writer closed: EOF
    assert res["ended"] == "eof"
    r.close()


def test_tap_splits_many_small_frames_into_messages_within_iov_max():
    view, frames = _setup(nframes=1200, size=60)
    w = _FakeWorker(view, frames)
    r, wr = cap.make_pair()
    cap.attach(w, wr, {})
    w.xsk.rx_burst(2000)
    r.setblocking(False)
    n = 0
    msgs = 0
    with pytest.raises(BlockingIOError):
        while True:
            n += len(cap.parse_message(r.recv(1 << 20))[2])
            msgs += 1
    assert n == 1200 and msgs == 3 and cap.Tap.of(w).stats()["drops"] == 0
    cap.Tap.of(w).close()
    r.close()
