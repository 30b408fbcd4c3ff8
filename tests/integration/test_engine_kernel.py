"""The TCP engine against the Linux kernel's TCP, over a TUN device (no XDP involved).

The TUN device lives in the test bed's peer namespace with a /32 route to the engine's
address 10.77.0.50; the kernel's sockets in that namespace talk to the engine through it.
Each test moves data both ways and checks SHA-256 on both ends.
"""

import hashlib
import os
import socket
import threading
import time

import pytest
from pyroute2 import IPRoute

from fpd import wire
from fpd.stack import Stack, StackConfig
from fpd.tun import EngineOverTun, TunDevice
from kernelpeer import Duplex, kernel_duplex, pattern

ENGINE_IP = "10.77.0.50"
KERNEL_IP = "10.77.0.2"


@pytest.fixture
def tunbed(testbed):
    with testbed.inside(testbed.peer_ns):
        tun = TunDevice("fpdtun0")
    try:
        with IPRoute(netns=testbed.peer_ns) as ip:
            idx = ip.link_lookup(ifname="fpdtun0")[0]
            ip.link("set", index=idx, state="up", mtu=1500)
            ip.route("add", dst=f"{ENGINE_IP}/32", oif=idx)
        yield testbed, tun
    finally:
        tun.close()


def run_engine(tun, stack, app, until):
    """The engine pumping the TUN device in a thread, ``app`` (a Duplex) handling events."""
    runner = EngineOverTun(stack, tun, app)
    t = threading.Thread(target=runner.run, kwargs={"until": until, "max_seconds": 200},
                         daemon=True)
    t.start()
    return runner, t


SIZE = 50 * 1000 * 1000


@pytest.mark.timeout(240)
def test_passive_open_50mb_both_ways_kernel_closes_first(tunbed):
    bed, tun = tunbed
    stack = Stack(isn_key=os.urandom(16), config=StackConfig(time_wait=1.0))
    stack.listen(wire.ip_to_bytes(ENGINE_IP), 5001)
    engine_out = pattern(SIZE, 1)
    kernel_out = pattern(SIZE, 2)
    app = Duplex(engine_out)
    runner, t = run_engine(tun, stack, app, until=lambda: app.done.is_set())
    try:
        s = bed.socket(bed.peer_ns)
        s.settimeout(60)
        s.connect((ENGINE_IP, 5001))
        got, n = kernel_duplex(s, kernel_out)
        s.close()
        assert n == SIZE
        assert got == hashlib.sha256(engine_out).hexdigest()
        assert app.done.wait(60), "engine connection never reached CLOSED"
        assert app.rx_bytes == SIZE
        assert app.rx.hexdigest() == hashlib.sha256(kernel_out).hexdigest()
        assert app.error is None
        # really MTU-sized segments through the TUN device, not some offload shortcut
        assert runner.packets_in > SIZE // 1500 and runner.packets_out > SIZE // 1500
    finally:
        runner.stop()
        t.join(10)


@pytest.mark.timeout(180)
def test_active_open_engine_closes_first(tunbed):
    bed, tun = tunbed
    srv = bed.socket(bed.peer_ns)
    srv.bind((KERNEL_IP, 0))
    srv.listen()
    srv.settimeout(30)
    port = srv.getsockname()[1]
    stack = Stack(isn_key=os.urandom(16), config=StackConfig(time_wait=0.5))
    size = 5 * 1000 * 1000
    engine_out = pattern(size, 3)
    kernel_out = pattern(size, 4)
    app = Duplex(engine_out, close_first=True)
    result = {}

    def kernel_server():
        c, _ = srv.accept()
        c.settimeout(60)
        result["got"] = kernel_duplex(c, kernel_out)
        c.close()

    ks = threading.Thread(target=kernel_server, daemon=True)
    ks.start()
    def until():
        return app.done.is_set()

    conn = stack.connect(time.monotonic(), wire.ip_to_bytes(ENGINE_IP), 40001, wire.ip_to_bytes(KERNEL_IP), port)
    app.conn = conn
    runner, t = run_engine(tun, stack, app, until)
    try:
        ks.join(60)
        assert not ks.is_alive()
        got, n = result["got"]
        assert n == size and got == hashlib.sha256(engine_out).hexdigest()
        assert app.done.wait(60)
        assert app.rx.hexdigest() == hashlib.sha256(kernel_out).hexdigest()
    finally:
        runner.stop()
        t.join(10)
        srv.close()


@pytest.mark.timeout(60)
def test_handshake_options_seen_by_kernel(tunbed):
    """The kernel peer negotiates MSS, window scale, SACK and timestamps with the engine."""
    bed, tun = tunbed
    stack = Stack(isn_key=os.urandom(16), config=StackConfig(time_wait=0.5))
    stack.listen(wire.ip_to_bytes(ENGINE_IP), 5003)
    app = Duplex(b"")
    runner, t = run_engine(tun, stack, app, until=lambda: app.done.is_set())
    try:
        s = bed.socket(bed.peer_ns)
        s.settimeout(10)
        s.connect((ENGINE_IP, 5003))
        info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        # struct tcp_info: u8 state, ca_state, retransmits, probes, backoff, options,
        # u8 snd_wscale:4 rcv_wscale:4 ...
        options = info[5]
        TCPI_OPT_TIMESTAMPS, TCPI_OPT_SACK, TCPI_OPT_WSCALE = 1, 2, 4
        assert options & TCPI_OPT_TIMESTAMPS
        assert options & TCPI_OPT_SACK
        assert options & TCPI_OPT_WSCALE
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG) <= 1460
        s.close()
        assert app.done.wait(30)
    finally:
        runner.stop()
        t.join(10)


@pytest.mark.timeout(60)
def test_kernel_connect_to_closed_port_is_refused(tunbed):
    bed, tun = tunbed
    stack = Stack(isn_key=os.urandom(16), config=StackConfig())
    app = Duplex(b"")
    stop = threading.Event()
    runner, t = run_engine(tun, stack, app, until=stop.is_set)
    try:
        s = bed.socket(bed.peer_ns)
        s.settimeout(10)
        with pytest.raises(ConnectionRefusedError):
            s.connect((ENGINE_IP, 5999))
        s.close()
    finally:
        stop.set()
        t.join(10)


def nft_loss(bed, percent: int):
    """Drop ``percent`` % of packets in both directions on the TUN device (peer side)."""
    rules = f"""
table inet fpdloss {{
    chain out {{ type filter hook output priority 0; oifname "fpdtun0" numgen random mod 100 < {percent} drop; }}
    chain in {{ type filter hook input priority 0; iifname "fpdtun0" numgen random mod 100 < {percent} drop; }}
}}
"""
    bed.run(bed.peer_ns, ["nft", "-f", "-"], input=rules)


@pytest.mark.timeout(180)
def test_transfer_with_5_percent_loss_both_ways(tunbed):
    bed, tun = tunbed
    nft_loss(bed, 5)
    stack = Stack(isn_key=os.urandom(16), config=StackConfig(time_wait=0.5))
    stack.listen(wire.ip_to_bytes(ENGINE_IP), 5004)
    size = 4 * 1000 * 1000
    engine_out = pattern(size, 5)
    kernel_out = pattern(size, 6)
    app = Duplex(engine_out)
    runner, t = run_engine(tun, stack, app, until=lambda: app.done.is_set())
    try:
        s = bed.socket(bed.peer_ns)
        s.settimeout(60)
        s.connect((ENGINE_IP, 5004))
        got, n = kernel_duplex(s, kernel_out)
        s.close()
        assert n == size and got == hashlib.sha256(engine_out).hexdigest()
        assert app.done.wait(90), "engine connection never reached CLOSED"
        assert app.rx.hexdigest() == hashlib.sha256(kernel_out).hexdigest()
        assert stack.counters()["retransmits"] > 0
    finally:
        runner.stop()
        t.join(10)
