"""Jumbo frames (MTU 9000) through AF_XDP multi-buffer (XDP_USE_SG) against the kernel.

A 9014-byte frame does not fit a 4096-byte UMEM chunk: the XDP program is the xdp.frags
one, the socket is bound with XDP_USE_SG, a received frame comes as a chain of
descriptors (XDP_PKT_CONTD) put together in the UMEM's scratch area, and an outgoing one
is built there and sent as a chain. The kernel's TCP at the same MTU is the peer.
"""

import pytest

from fpd.stack import StackConfig
from kernelpeer import Duplex, kernel_duplex, pattern, sha
from test_worker import connect_kernel, fpd_on

SIZE = 20 * 1000 * 1000


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["native", "generic"])
def test_mtu_9000_20mb_both_ways(testbed_factory, mode):
    bed = testbed_factory(mtu=9000)
    fpd_out, k_out = pattern(SIZE, 5), pattern(SIZE, 6)
    app = Duplex(fpd_out)
    with fpd_on(bed, app, port=5001, mode=mode, cfg=StackConfig(time_wait=0.5)) as (st, w):
        assert st.frags and w.sg and w.sg_tx and w.mss == 8960
        assert w.xsk.bind_flags & (1 << 4)                  # XDP_USE_SG
        s = connect_kernel(bed, 5001)
        try:
            got, n = kernel_duplex(s, k_out)
            peer_mss = s.getsockopt(6, 2)                   # TCP_MAXSEG
        finally:
            s.close()
        assert n == SIZE and got == sha(fpd_out)
        assert app.done.wait(30), "the engine's connection never reached CLOSED"
        assert app.rx_bytes == SIZE and app.rx.hexdigest() == sha(k_out)
        assert app.error is None
        stats = w.stats()
    # segments really larger than a chunk, both ways: frames per byte of a 9000 MTU
    assert peer_mss > 4096
    assert stats["rx_sg_frames"] > SIZE // 9000 * 0.9 and stats["rx_sg_dropped"] == 0
    assert stats["tx_sg_frames"] > SIZE // 9000 * 0.9
    assert stats["rx_frames"] < SIZE // 4096 and stats["tx_frames"] < SIZE // 4096 * 2
    assert stats["malformed"] == 0 and stats["xdp"]["rx_dropped"] == 0


@pytest.mark.timeout(120)
def test_daemon_at_mtu_9000_echoes_through_the_client_library(testbed_factory):
    """fpd start on a 9000-MTU interface (multi-buffer chosen by itself), an fpd.client
    echo server, the kernel's TCP sending 5 MB and reading them back intact."""
    import os
    import sys
    import threading
    sys.path.insert(0, os.path.dirname(__file__))
    from fpdd import fpd_daemon

    from fpd import client
    bed = testbed_factory(mtu=9000)
    data = pattern(5_000_000, 7)
    with fpd_daemon(bed, [8080]) as d:
        client.set_default_socket(d.socket)
        srv = client.create_server(("", 8080))
        served = []
        try:
            def serve():
                conn, _ = srv.accept()
                with conn:
                    while True:
                        b = conn.recv(65536)
                        if not b:
                            break
                        conn.sendall(b)
                        served.append(len(b))
            t = threading.Thread(target=serve, daemon=True)
            t.start()
            k = bed.socket(bed.peer_ns)
            k.settimeout(30)
            k.connect((bed.srv_ip, 8080))
            with k:
                digest, n = kernel_duplex(k, data, timeout=60)
                mss = k.getsockopt(6, 2)
            t.join(30)
            assert not t.is_alive()
            stats = d.stats()
        finally:
            srv.close()
            client.set_default_socket(None)
    assert n == len(data) and digest == sha(data) and sum(served) == len(data)
    assert mss > 4096
    w = stats["workers"][0]
    assert w["sg"] is True and w["rx_sg_frames"] > len(data) // 9000 * 0.9
    assert w["tx_sg_frames"] > len(data) // 9000 * 0.9 and w["rx_sg_dropped"] == 0


@pytest.mark.timeout(120)
def test_generic_mode_takes_the_peers_64k_gso_packets_whole(testbed_factory):
    """Generic XDP with the frags program gets the peer's TSO/GSO packets (up to 64 KB)
    unsplit; bound with XDP_USE_SG the worker receives them as chains: at MTU 1500 far
    fewer frames than 1448-byte segments, the bytes intact. (The single-buffer program
    passes them to the kernel, which answers RST: the reason to turn TSO off on the peer
    in generic mode otherwise.)"""
    import threading

    from fpd.bpf import Steering
    from fpd.stack import ANY
    from fpd.worker import Worker
    bed = testbed_factory(mtu=1500, peer_tso=True, peer_tx_csum=True)
    size = 5_000_000
    k_out = pattern(size, 8)
    app = Duplex(pattern(1000, 9))
    st = w = t = None
    try:
        with bed.inside(bed.srv_ns):
            st = Steering(bed.srv_if, mode="generic", frags=True)
            w = Worker(bed.srv_if, 0, StackConfig(time_wait=0.2), app=app, sg=True,
                       check=True)
        st.set_xsk(0, w.fileno())
        w.stack.listen(ANY, 5001)
        st.add_port(5001)
        t = threading.Thread(target=w.run, kwargs=dict(max_seconds=60))
        t.start()
        s = connect_kernel(bed, 5001)
        try:
            got, n = kernel_duplex(s, k_out)
        finally:
            s.close()
        assert app.done.wait(30)
        w.stop()
        t.join(10)
        assert not t.is_alive()
        stats = w.stats()
        counts = w.audit()
        assert counts["FREE"] + counts["KRX"] == w.umem.nframes
    finally:
        if t is not None and t.is_alive():
            w.stop()
            t.join(10)
        if w is not None:
            w.close()
        if st is not None:
            st.close()
    assert n == 1000 and app.rx_bytes == size and app.rx.hexdigest() == sha(k_out)
    assert stats["rx_sg_frames"] > 0 and stats["rx_sg_dropped"] == 0
    assert stats["rx_frames"] < size // 1448 // 4           # GSO packets, not segments
