"""fpd.client and fpd.aio against the real daemon in the test bed (root).

The application (this test process) lives in the root namespace and reaches the daemon
through its unix socket; the daemon serves fpd0 in the server namespace; the Linux
kernel's TCP in the peer namespace (10.77.0.2) is the other end of every connection."""

import asyncio
import errno
import os
import selectors
import signal
import struct
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from fpdd import fpd_daemon  # noqa: E402
from kernelpeer import kernel_duplex, pattern, sha  # noqa: E402

from fpd import aio, client  # noqa: E402
from fpd import client as socket  # noqa: E402
from fpd.testbed import TestBed  # noqa: E402

pytestmark = pytest.mark.timeout(60)
PORTS = [8080, 8081, 8082, 8083]


@pytest.fixture(scope="module")
def daemon():
    """One test bed and one daemon for the module (the kill test makes its own)."""
    with TestBed() as bed:
        with fpd_daemon(bed, PORTS) as d:
            client.set_default_socket(d.socket)
            try:
                yield bed, d
            finally:
                client.set_default_socket(None)


def _thread(fn, *args):
    box = {}

    def run():
        try:
            box["result"] = fn(*args)
        except BaseException as e:  # handed to the test
            box["error"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def _join(t, box, timeout=30):
    t.join(timeout)
    assert not t.is_alive(), "thread did not finish"
    if "error" in box:
        raise box["error"]
    return box.get("result")


def _kernel_listener(bed, port):
    ks = bed.socket(bed.peer_ns)
    ks.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ks.bind((bed.peer_ip, port))
    ks.listen(16)
    ks.settimeout(20)
    return ks


def _kernel_client(bed, port):
    k = bed.socket(bed.peer_ns)
    k.settimeout(20)
    k.connect((bed.srv_ip, port))
    return k


def _recv_all(s) -> bytes:
    out = bytearray()
    while True:
        d = s.recv(1 << 20)
        if not d:
            return bytes(out)
        out += d


# --- server: fpd listens, the kernel connects ----------------------------------------------
def test_server_echo_to_kernel_client(daemon):
    bed, d = daemon
    srv = socket.create_server(("", 8080))
    try:
        def serve():
            conn, addr = srv.accept()
            with conn:
                n = 0
                while True:
                    b = conn.recv(65536)
                    if not b:
                        break
                    conn.sendall(b)
                    n += len(b)
                return addr, conn.getsockname(), n
        t, box = _thread(serve)
        k = _kernel_client(bed, 8080)
        with k:
            data = pattern(2_000_000, 1)
            digest, n = kernel_duplex(k, data, timeout=40)
            kaddr = k.getsockname()
        addr, local, served = _join(t, box)
        assert n == len(data) and digest == sha(data) and served == len(data)
        assert addr == kaddr
        assert local == (bed.srv_ip, 8080)
    finally:
        srv.close()


# --- client: fpd connects to a kernel listener --------------------------------------------
def test_client_to_kernel_server_both_ways(daemon):
    bed, d = daemon
    ks = _kernel_listener(bed, 5001)
    try:
        up, down = pattern(1_500_000, 2), pattern(1_000_000, 3)

        def kserve():
            conn, _ = ks.accept()
            with conn:
                return kernel_duplex(conn, down, timeout=40)
        t, box = _thread(kserve)
        c = socket.create_connection((bed.peer_ip, 5001), timeout=20)
        with c:
            assert c.getpeername() == (bed.peer_ip, 5001)
            lip, lport = c.getsockname()
            assert lip == bed.srv_ip and 60000 <= lport <= 60255
            rt, rbox = _thread(_recv_all, c)
            c.sendall(up)
            c.shutdown(socket.SHUT_WR)
            got = _join(rt, rbox)
        kdigest, kn = _join(t, box)
        assert kn == len(up) and kdigest == sha(up)
        assert got == down
    finally:
        ks.close()


def test_half_close_peer_keeps_sending(daemon):
    bed, d = daemon
    ks = _kernel_listener(bed, 5002)
    try:
        reply = pattern(600_000, 4)

        def kserve():
            conn, _ = ks.accept()
            with conn:
                req = _recv_all(conn)          # until our FIN
                conn.sendall(reply)            # then answer, after our FIN
                return req
        t, box = _thread(kserve)
        with socket.create_connection((bed.peer_ip, 5002), timeout=20) as c:
            c.sendall(b"GET everything\r\n")
            c.shutdown(socket.SHUT_WR)
            got = _recv_all(c)
        assert _join(t, box) == b"GET everything\r\n"
        assert got == reply
    finally:
        ks.close()


def test_reset_by_kernel_peer(daemon):
    bed, d = daemon
    ks = _kernel_listener(bed, 5005)
    try:
        with socket.create_connection((bed.peer_ip, 5005), timeout=20) as c:
            kc, _ = ks.accept()
            kc.sendall(b"last words")
            kc.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            kc.close()                                  # RST
            got = b""
            with pytest.raises(ConnectionResetError):
                while True:
                    b = c.recv(100)
                    assert b, "a reset reported as EOF"
                    got += b
            assert got in (b"", b"last words")         # what came before the RST
            with pytest.raises((BrokenPipeError, ConnectionResetError)):
                c.sendall(b"x" * 300_000)
    finally:
        ks.close()


def test_refused(daemon):
    bed, d = daemon
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((bed.peer_ip, 5999), timeout=10)
    s = socket.socket()
    s.settimeout(10)
    try:
        assert s.connect_ex((bed.peer_ip, 5999)) == errno.ECONNREFUSED
    finally:
        s.close()


# --- readiness descriptors --------------------------------------------------------------
def test_selectors_readiness(daemon):
    bed, d = daemon
    srv = socket.create_server(("", 8081))
    ks = _kernel_listener(bed, 5003)
    sel = selectors.DefaultSelector()
    try:
        sel.register(srv, selectors.EVENT_READ)
        assert sel.select(0.1) == []
        k = _kernel_client(bed, 8081)
        assert [key.fileobj for key, _ in sel.select(5)] == [srv]
        a, _ = srv.accept()
        assert sel.select(0.1) == []
        sel.unregister(srv)
        # a connection: readable exactly when there is data or EOF
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect((bed.peer_ip, 5003))
        except BlockingIOError:
            pass
        sel.register(c, selectors.EVENT_WRITE)
        assert sel.select(10)                          # connected
        assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        kc, _ = ks.accept()
        # both connections are the daemon's, owned by this process
        info = d.conns()
        mine = {(x["local"], x["remote"]) for x in info["conns"]
                if x["owner_pid"] == os.getpid()}
        lip, lport = c.getsockname()
        assert (f"{lip}:{lport}", f"{bed.peer_ip}:5003") in mine, info
        assert (f"{bed.srv_ip}:8081", "%s:%d" % k.getsockname()) in mine, info
        assert any(x["local"].endswith(":8081") and x["owner_pid"] == os.getpid()
                   for x in info["listeners"]), info
        sel.modify(c, selectors.EVENT_READ)
        assert sel.select(0.2) == []
        kc.sendall(b"hello")
        assert sel.select(5)
        got = b""
        while len(got) < 5:
            got += c.recv(10)
        assert got == b"hello"
        assert sel.select(0.2) == []
        kc.close()
        assert sel.select(5)
        assert c.recv(10) == b""
        sel.unregister(c)
        c.close()
        k.close()
        a.close()
    finally:
        sel.close()
        srv.close()
        ks.close()


# --- threads -----------------------------------------------------------------------------------
def test_thread_per_connection_server(daemon):
    bed, d = daemon
    srv = socket.create_server(("", 8082), backlog=64)
    stop = threading.Event()
    served, errors = [], []

    def serve(conn):
        try:
            with conn:
                while True:
                    b = conn.recv(65536)
                    if not b:
                        break
                    conn.sendall(b)
        except Exception as e:
            errors.append(e)

    def acceptor():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            t = threading.Thread(target=serve, args=(conn,), daemon=True)
            t.start()
            served.append(t)

    def talker(i):
        with _kernel_client(bed, 8082) as k:
            for j in range(20):
                msg = pattern(100 + 3000 * j, i * 100 + j)
                k.sendall(msg)
                got = b""
                while len(got) < len(msg):
                    got += k.recv(65536)
                assert got == msg

    at = threading.Thread(target=acceptor, daemon=True)
    at.start()
    try:
        ts = [_thread(talker, i) for i in range(10)]
        for t, box in ts:
            _join(t, box, 45)
    finally:
        stop.set()
        at.join(5)
        for t in served:
            t.join(5)
        srv.close()
    assert not errors, errors
    assert len(served) == 10


# --- asyncio -----------------------------------------------------------------------------------
def test_aio_echo_both_ways(daemon):
    bed, d = daemon
    ks = _kernel_listener(bed, 5004)
    data = pattern(800_000, 5)

    def kecho():
        conn, _ = ks.accept()
        with conn:
            while True:
                b = conn.recv(65536)
                if not b:
                    break
                conn.sendall(b)

    async def handle(r, w):
        while True:
            b = await r.read(65536)
            if not b:
                break
            w.write(b)
            await w.drain()
        w.close()
        await w.wait_closed()

    async def main():
        srv = await aio.start_server(handle, "", 8083)
        async with srv:
            # the kernel connects to the aio server
            t, box = _thread(lambda: kernel_duplex(_kernel_client(bed, 8083), data, 40))
            while t.is_alive():
                await asyncio.sleep(0.02)
            digest, n = _join(t, box)
            assert n == len(data) and digest == sha(data)
        # the aio client connects to a kernel echo server
        t, box = _thread(kecho)
        r, w = await aio.open_connection(bed.peer_ip, 5004)
        assert w.get_extra_info("peername") == (bed.peer_ip, 5004)
        reader = asyncio.ensure_future(r.read())
        w.write(data)
        await w.drain()
        w.write_eof()
        assert await reader == data
        w.close()
        await w.wait_closed()
        _join(t, box)

    try:
        asyncio.run(asyncio.wait_for(main(), 50))
    finally:
        ks.close()


# --- the daemon is SIGKILLed ---------------------------------------------------------------
def test_daemon_sigkilled_no_hang(testbed):
    bed = testbed
    with fpd_daemon(bed, [8080]) as d:
        client.set_default_socket(d.socket)
        try:
            srv = socket.create_server(("", 8080))
            k = _kernel_client(bed, 8080)
            srv.settimeout(10)
            conn, _ = srv.accept()
            rt, rbox = _thread(conn.recv, 100)
            at, abox = _thread(srv.accept)
            time.sleep(0.3)
            t0 = time.monotonic()
            os.kill(d.pid, signal.SIGKILL)
            rt.join(10)
            at.join(10)
            assert not rt.is_alive() and not at.is_alive(), "a blocked call hangs"
            assert time.monotonic() - t0 < 10
            # the worker may still reset its connections on its way out (it sees the
            # supervisor's channel close before PDEATHSIG lands): a reset either way
            assert isinstance(rbox.get("error"), ConnectionResetError), rbox
            assert isinstance(abox.get("error"), OSError), abox
            with pytest.raises(BrokenPipeError, match="fpd daemon"):
                conn.sendall(b"x")
            with pytest.raises(OSError, match="not reachable"):
                socket.create_connection((bed.peer_ip, 80), timeout=5)
            conn.close()
            srv.close()
            k.close()
        finally:
            client.set_default_socket(None)
            # what `fpd stop --force` is for: the SIGKILLed daemon's leftovers (once it
            # is really gone: a SIGKILLed process takes a moment to die)
            deadline = time.monotonic() + 5
            while d.alive() and time.monotonic() < deadline:
                time.sleep(0.02)
            if not d.alive():
                d.cli("stop", "--force", "-i", bed.srv_if, check=False)


# --- two workers (two NIC queues): listen on both, connect round-robin -------------------
def test_two_workers_listen_accept_and_connect():
    with TestBed(queues=2) as bed:
        with fpd_daemon(bed, [8080], queues=2) as d:
            client.set_default_socket(d.socket)
            try:
                assert client.daemon_info()["workers"] == 2
                srv = socket.create_server(("", 8080))
                srv.settimeout(20)
                ks = _kernel_listener(bed, 5006)
                try:
                    # the kernel connects in: each accepted connection, whichever
                    # worker's region it arrived in, echoes
                    ks_clients = [_kernel_client(bed, 8080) for _ in range(8)]
                    accepted = [srv.accept() for _ in ks_clients]
                    conns = [a for a, _ in accepted]
                    by_peer = {peer: a for a, peer in accepted}   # any order
                    for i, k in enumerate(ks_clients):
                        a = by_peer[k.getsockname()]
                        a.settimeout(20)
                        k.sendall(b"in %d" % i)
                        assert a.recv(100) == b"in %d" % i
                        a.sendall(b"out %d" % i)
                        assert k.recv(100) == b"out %d" % i
                    queues_in = {a._w.q for a in conns}
                    # fpd connects out: round-robin over both workers
                    outs = [socket.create_connection((bed.peer_ip, 5006), timeout=20)
                            for _ in range(4)]
                    assert {c._w.q for c in outs} == {0, 1}
                    kouts = [ks.accept()[0] for _ in outs]
                    by_port = {k.getpeername()[1]: k for k in kouts}
                    for i, c in enumerate(outs):
                        k = by_port[c.getsockname()[1]]
                        c.sendall(b"hello %d" % i)
                        assert k.recv(100) == b"hello %d" % i
                        k.sendall(b"back %d" % i)
                        assert c.recv(100) == b"back %d" % i
                    for x in outs + kouts + conns + ks_clients:
                        x.close()
                    print(f"accepted on workers {sorted(queues_in)}")
                finally:
                    srv.close()
                    ks.close()
            finally:
                client.set_default_socket(None)
