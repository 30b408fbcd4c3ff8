"""asyncio conformance: the same tests on asyncio's default loop (kernel sockets) and on
fpd's loop (fpd.loop: the engine runs inside the loop), against the kernel's TCP in the
peer namespace of the test bed.

The loop runs in the server namespace. The peer's sockets are kernel sockets made in the
peer namespace and driven by the same loop (``sock=``), so one process holds both ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import warnings

import pytest

from fpd import loop as fpd_loop

PORT = 7000
UNSTEERED = 7200
PEER_PORT = 7100
LOCAL_PORTS = range(61000, 61064)
TIMEOUT = 30


class Env:
    """One loop, the test bed, and helpers for the peer's (kernel) side."""

    def __init__(self, bed, kind, loop, worker=None):
        self.bed = bed
        self.kind = kind
        self.loop = loop
        self.worker = worker
        self.host = bed.srv_ip if kind == "kernel" else None   # where servers bind

    def run(self, coro, timeout=TIMEOUT):
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def peer_sock(self):
        s = self.bed.socket(self.bed.peer_ns)
        s.setblocking(False)
        return s

    async def peer_open(self, port=PORT, **kw):
        s = self.peer_sock()
        await self.loop.sock_connect(s, (self.bed.srv_ip, port))
        return await asyncio.open_connection(sock=s, **kw)

    async def peer_connect(self, factory, port=PORT, **kw):
        s = self.peer_sock()
        await self.loop.sock_connect(s, (self.bed.srv_ip, port))
        return await self.loop.create_connection(factory, sock=s, **kw)

    def peer_listener(self, port=PEER_PORT):
        s = self.bed.socket(self.bed.peer_ns)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.bed.peer_ip, port))
        s.listen(128)
        s.setblocking(False)
        return s


@pytest.fixture(params=["kernel", "fpd"])
def env(request, testbed):
    bed = testbed
    kind = request.param
    with bed.inside(bed.srv_ns):
        if kind == "kernel":
            loop = asyncio.SelectorEventLoop()
            try:
                yield Env(bed, kind, loop)
            finally:
                loop.close()
            return
        from fpd.bpf import Steering
        from fpd.worker import Worker
        st = Steering(bed.srv_if, mode="native")
        w = loop = None
        try:
            w = Worker(bed.srv_if, 0)
            st.set_xsk(0, w.fileno())
            st.add_port(PORT)
            for p in LOCAL_PORTS:
                st.add_port(p)
            ctx = fpd_loop.Context(w, ports=[PORT], local_ports=LOCAL_PORTS)
            loop = fpd_loop.FpdEventLoop(ctx)
            yield Env(bed, kind, loop, w)
        finally:
            try:
                if loop is not None:
                    loop.close()
            finally:
                try:
                    st.close()
                finally:
                    if w is not None:
                        w.close()


async def _echo(r, w):
    try:
        while True:
            d = await r.read(65536)
            if not d:
                break
            w.write(d)
            await w.drain()
        w.close()
    except ConnectionError:
        w.close()


def _is_fpd(transport):
    return isinstance(transport, fpd_loop.FpdTransport) or \
        isinstance(getattr(transport, "_ssl_protocol", None) and
                   transport._ssl_protocol._transport, fpd_loop.FpdTransport)


# --- streams -----------------------------------------------------------------------------
def test_stream_echo_sha256(env):
    data = os.urandom(4 << 20)
    seen = []

    async def handle(r, w):
        seen.append(w.transport)
        await _echo(r, w)

    async def main():
        srv = await asyncio.start_server(handle, env.host, PORT)
        async with srv:
            r, w = await env.peer_open()

            async def send():
                for i in range(0, len(data), 1 << 16):
                    w.write(data[i:i + (1 << 16)])
                    await w.drain()
                w.write_eof()
            t = asyncio.ensure_future(send())
            h = hashlib.sha256()
            n = 0
            while True:
                d = await r.read(1 << 16)
                if not d:
                    break
                h.update(d)
                n += len(d)
            await t
            w.close()
            return n, h.hexdigest()

    n, digest = env.run(main())
    assert n == len(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert _is_fpd(seen[0]) == (env.kind == "fpd")


def test_active_open_to_kernel_server(env):
    async def main():
        ks = env.peer_listener()
        ksrv = await asyncio.start_server(_echo, sock=ks)
        async with ksrv:
            r, w = await asyncio.open_connection(env.bed.peer_ip, PEER_PORT)
            fpd_side = _is_fpd(w.transport)
            peer = w.get_extra_info("peername")
            name = w.get_extra_info("sockname")
            w.write(b"x" * 100000)
            got = await r.readexactly(100000)
            w.close()
            await w.wait_closed()
            return fpd_side, peer, name, got

    fpd_side, peer, name, got = env.run(main())
    assert fpd_side == (env.kind == "fpd")
    assert peer == (env.bed.peer_ip, PEER_PORT)
    assert name[0] == env.bed.srv_ip
    if env.kind == "fpd":
        assert name[1] in LOCAL_PORTS
    assert got == b"x" * 100000


def test_connect_refused(env):
    async def main():
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(env.bed.peer_ip, PEER_PORT + 1)
    env.run(main())


# --- protocol semantics ------------------------------------------------------------------
class Recorder(asyncio.Protocol):
    def __init__(self):
        self.transport = None
        self.data = bytearray()
        self.events = []
        self.lost = None
        self.paused = 0
        self.resumed = 0
        self.keep_open = False

    def connection_made(self, t):
        self.transport = t
        self.events.append("made")
        self.made = asyncio.get_running_loop().create_future()
        self.made.set_result(None)
        self.done = asyncio.get_running_loop().create_future()
        self.eof = asyncio.get_running_loop().create_future()

    def data_received(self, d):
        self.data += d

    def eof_received(self):
        self.events.append("eof")
        self.eof.set_result(None)
        return self.keep_open

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost = exc
        self.done.set_result(exc)

    def pause_writing(self):
        self.paused += 1

    def resume_writing(self):
        self.resumed += 1


async def _server(env, factory, port=PORT, **kw):
    protos = []
    ready = asyncio.Queue()

    def make():
        p = factory()
        protos.append(p)
        made = p.connection_made

        def connection_made(t):                 # hand the protocol out once it has
            made(t)                             # its transport (asyncio calls this soon
            ready.put_nowait(p)                 # after the factory, fpd at once)
        p.connection_made = connection_made
        return p
    srv = await env.loop.create_server(make, env.host, port, **kw)
    return srv, ready


async def _until(pred, timeout=10.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


def test_half_close_both_ways(env):
    async def main():
        def fac():
            p = Recorder()
            p.keep_open = True
            return p
        srv, ready = await _server(env, fac)
        async with srv:
            r, w = await env.peer_open()
            sp = await ready.get()
            w.write(b"request")
            w.write_eof()
            await sp.eof
            assert bytes(sp.data) == b"request"
            assert sp.transport.can_write_eof()
            # still writable after the peer's FIN; then our own FIN
            sp.transport.write(b"reply after eof")
            sp.transport.write_eof()
            got = await r.read()
            assert got == b"reply after eof"
            assert r.at_eof()
            w.close()
            sp.transport.close()
            exc = await sp.done
            return exc, sp.events
    exc, events = env.run(main())
    assert exc is None
    assert events == ["made", "eof", "lost"]


def test_eof_received_false_closes(env):
    async def main():
        srv, ready = await _server(env, Recorder)
        async with srv:
            r, w = await env.peer_open()
            sp = await ready.get()
            w.write_eof()
            exc = await sp.done
            assert await r.read() == b""
            w.close()
            return exc, sp.events
    exc, events = env.run(main())
    assert exc is None and events == ["made", "eof", "lost"]


def test_abort_resets_peer(env):
    async def main():
        srv, ready = await _server(env, Recorder)
        async with srv:
            r, w = await env.peer_open()
            sp = await ready.get()
            w.write(b"hi")
            await _until(lambda: sp.data)
            sp.transport.abort()
            assert sp.transport.is_closing()
            exc = await sp.done
            # fpd sends RST; asyncio's abort() on a kernel socket just closes it (FIN)
            with pytest.raises((ConnectionResetError, EOFError)):
                while await r.read(100):
                    pass
                raise EOFError
            w.close()
            return exc
    assert env.run(main()) is None


def test_connection_lost_on_peer_rst(env):
    async def main():
        srv, ready = await _server(env, Recorder)
        async with srv:
            s = env.peer_sock()
            await env.loop.sock_connect(s, (env.bed.srv_ip, PORT))
            sp = await ready.get()
            await env.loop.sock_sendall(s, b"before")
            await _until(lambda: sp.data == b"before")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
            exc = await sp.done
            return exc, bytes(sp.data)
    exc, data = env.run(main())
    assert isinstance(exc, ConnectionResetError)
    assert data == b"before"


def test_flow_control_pause_reading(env):
    """Reading paused: the server's protocol gets nothing more, and the peer's writes back
    up (the window closed); resumed: every byte arrives, in order."""
    total = 6 << 20
    data = os.urandom(total)

    async def main():
        srv, ready = await _server(env, Recorder)
        async with srv:
            r, w = await env.peer_open()
            sp = await ready.get()
            sp.transport.pause_reading()
            assert not sp.transport.is_reading()
            w.transport.set_write_buffer_limits(high=0)
            w.write(data)
            await asyncio.sleep(0.5)
            got_paused = len(sp.data)
            backed_up = w.transport.get_write_buffer_size()
            sp.transport.resume_reading()
            await w.drain()
            await _until(lambda: len(sp.data) == total)
            w.close()
            return got_paused, backed_up, bytes(sp.data)
    got_paused, backed_up, got = env.run(main())
    assert got_paused == 0
    assert backed_up > 0
    assert got == data


def test_flow_control_pause_writing(env):
    """The peer does not read: our writes back up, pause_writing() comes at the high-water
    mark, resume_writing() once the buffer drains below the low mark."""
    total = 8 << 20
    data = os.urandom(total)

    async def main():
        srv, ready = await _server(env, Recorder)
        async with srv:
            s = env.peer_sock()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            await env.loop.sock_connect(s, (env.bed.srv_ip, PORT))
            sp = await ready.get()
            t = sp.transport
            t.set_write_buffer_limits(high=65536, low=16384)
            assert t.get_write_buffer_limits() == (16384, 65536)
            for i in range(0, total, 1 << 20):
                t.write(data[i:i + (1 << 20)])
            size = t.get_write_buffer_size()
            paused = sp.paused
            h = hashlib.sha256()
            n = 0
            while n < total:
                d = await env.loop.sock_recv(s, 1 << 16)
                assert d
                h.update(d)
                n += len(d)
            await _until(lambda: t.get_write_buffer_size() == 0)
            s.close()
            return size, paused, sp.resumed, h.hexdigest()
    size, paused, resumed, digest = env.run(main())
    assert size > 65536
    assert paused == 1
    assert resumed == 1
    assert digest == hashlib.sha256(data).hexdigest()


def test_extra_info_and_socket(env):
    async def main():
        srv, ready = await _server(env, Recorder)
        async with srv:
            r, w = await env.peer_open()
            sp = await ready.get()
            t = sp.transport
            sock = t.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            info = (t.get_extra_info("peername"), t.get_extra_info("sockname"),
                    sock.getpeername(), w.get_extra_info("sockname"), srv.sockets[0].getsockname())
            w.close()
            await sp.done
            return info, nodelay
    (peer, name, speer, psock, sname), nodelay = env.run(main())
    assert peer == psock == speer
    assert name == (env.bed.srv_ip, PORT)
    assert sname[1] == PORT
    assert nodelay


class BufRecorder(asyncio.BufferedProtocol):
    def __init__(self):
        self.buf = bytearray(1000)
        self.got = bytearray()
        self.calls = 0

    def connection_made(self, t):
        self.transport = t
        self.done = asyncio.get_running_loop().create_future()

    def get_buffer(self, hint):
        return self.buf

    def buffer_updated(self, n):
        self.calls += 1
        self.got += self.buf[:n]

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        self.done.set_result(exc)


def test_buffered_protocol(env):
    data = os.urandom(300000)

    async def main():
        srv, ready = await _server(env, BufRecorder)
        async with srv:
            r, w = await env.peer_open()
            sp = await ready.get()
            w.write(data)
            w.write_eof()
            await sp.done
            w.close()
            return bytes(sp.got), sp.calls
    got, calls = env.run(main())
    assert got == data
    assert calls >= len(data) // 1000


def test_callback_crash_closes_only_that_connection(env):
    class Bad(Recorder):
        def data_received(self, d):
            if d.startswith(b"boom"):
                raise RuntimeError("app bug")
            self.transport.write(d)

    async def main():
        errors = []
        env.loop.set_exception_handler(lambda loop, ctx: errors.append(ctx))
        srv, ready = await _server(env, Bad)
        async with srv:
            r1, w1 = await env.peer_open()
            await ready.get()
            r2, w2 = await env.peer_open()
            await ready.get()
            w1.write(b"boom")
            with pytest.raises((ConnectionResetError, EOFError)):   # fpd: RST, kernel: FIN
                while await r1.read(100):
                    pass
                raise EOFError
            w2.write(b"still fine")
            got = await r2.readexactly(10)
            w1.close()
            w2.close()
            return got, errors
    got, errors = env.run(main())
    assert got == b"still fine"
    assert errors and isinstance(errors[0].get("exception"), RuntimeError)


def test_many_concurrent_connections(env):
    n = 100

    async def main():
        srv = await asyncio.start_server(_echo, env.host, PORT, backlog=256)
        async with srv:
            async def one(i):
                r, w = await env.peer_open()
                msg = (b"%d-" % i) * 300
                for _ in range(3):
                    w.write(msg)
                    assert await r.readexactly(len(msg)) == msg
                w.close()
                await w.wait_closed()
                return i
            return sorted(await asyncio.gather(*(one(i) for i in range(n))))
    assert env.run(main(), timeout=60) == list(range(n))


def test_loop_sendfile(env, tmp_path):
    blob = os.urandom(3 << 20)
    path = tmp_path / "blob"
    path.write_bytes(blob)

    async def main():
        srv, ready = await _server(env, Recorder)
        async with srv:
            s = env.peer_sock()
            await env.loop.sock_connect(s, (env.bed.srv_ip, PORT))
            sp = await ready.get()

            async def send():
                with open(path, "rb") as f:
                    n = await env.loop.sendfile(sp.transport, f)
                sp.transport.close()
                return n
            t = asyncio.ensure_future(send())
            h = hashlib.sha256()
            while True:
                d = await env.loop.sock_recv(s, 1 << 16)
                if not d:
                    break
                h.update(d)
            s.close()
            return await t, h.hexdigest()
    n, digest = env.run(main())
    assert n == len(blob) and digest == hashlib.sha256(blob).hexdigest()


# --- TLS ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_files():
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed for the TLS tests (apt: openssl)")
    d = tempfile.mkdtemp(prefix="fpd-tls-")
    try:
        key, cert = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=fpd.test",
                        "-addext", "subjectAltName=DNS:fpd.test"],
                       check=True, capture_output=True, timeout=60)
        yield key, cert
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_tls_echo(env, tls_files):
    key, cert = tls_files
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert, key)
    cctx = ssl.create_default_context(cafile=cert)
    data = os.urandom(1 << 20)

    async def main():
        srv = await asyncio.start_server(_echo, env.host, PORT, ssl=sctx)
        async with srv:
            r, w = await env.peer_open(ssl=cctx, server_hostname="fpd.test")
            w.write(data)
            got = await r.readexactly(len(data))
            w.close()
            with pytest.raises(Exception):
                await w.wait_closed()
                raise EOFError
            return got
    assert env.run(main()) == data


def test_tls_client_to_kernel_server(env, tls_files):
    key, cert = tls_files
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert, key)
    cctx = ssl.create_default_context(cafile=cert)

    async def main():
        ksrv = await asyncio.start_server(_echo, sock=env.peer_listener(), ssl=sctx)
        async with ksrv:
            r, w = await asyncio.open_connection(env.bed.peer_ip, PEER_PORT, ssl=cctx,
                                                 server_hostname="fpd.test")
            fpd_side = _is_fpd(w.transport)
            w.write(b"secret" * 1000)
            got = await r.readexactly(6000)
            w.close()
            return fpd_side, got
    fpd_side, got = env.run(main())
    assert got == b"secret" * 1000
    assert fpd_side == (env.kind == "fpd")


# --- timers, subprocess, UDP, unsteered ports --------------------------------------------
def test_timers_order_and_merge_with_traffic(env):
    async def main():
        loop = asyncio.get_running_loop()
        order = []
        t0 = loop.time()
        loop.call_later(0.05, order.append, "b")
        loop.call_at(t0 + 0.01, order.append, "a")
        h = loop.call_later(0.02, order.append, "never")
        h.cancel()
        loop.call_soon(order.append, "soon")
        srv = await asyncio.start_server(_echo, env.host, PORT)
        async with srv:
            r, w = await env.peer_open()
            w.write(b"ping")
            assert await r.readexactly(4) == b"ping"
            await asyncio.sleep(0.1)
            elapsed = loop.time() - t0
            w.close()
        return order, elapsed
    order, elapsed = env.run(main())
    assert order == ["soon", "a", "b"]
    assert elapsed >= 0.1


def test_subprocess_and_udp_in_the_same_loop(env):
    class Udp(asyncio.DatagramProtocol):
        def __init__(self):
            self.got = asyncio.get_running_loop().create_future()

        def datagram_received(self, d, addr):
            if not self.got.done():
                self.got.set_result(d)

    async def main():
        loop = asyncio.get_running_loop()
        srv = await asyncio.start_server(_echo, env.host, PORT)
        async with srv:
            r, w = await env.peer_open()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", "import sys; print(sys.stdin.read().upper())",
                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            tr, pr = await loop.create_datagram_endpoint(Udp, local_addr=("127.0.0.1", 0))
            port = tr.get_extra_info("sockname")[1]
            tx, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                         remote_addr=("127.0.0.1", port))
            tx.sendto(b"dgram")
            w.write(b"tcp")
            out, _ = await proc.communicate(b"child")
            dg = await pr.got
            echo = await r.readexactly(3)
            tr.close()
            tx.close()
            w.close()
            return out, dg, echo, proc.returncode
    out, dg, echo, rc = env.run(main())
    assert out.strip() == b"CHILD" and rc == 0
    assert dg == b"dgram"
    assert echo == b"tcp"


def test_unsteered_port_gets_a_kernel_socket(env):
    async def main():
        with warnings.catch_warnings(record=True) as ws:
            warnings.simplefilter("always")
            srv = await asyncio.start_server(_echo, env.host, UNSTEERED)
        async with srv:
            kernel_sock = isinstance(srv.sockets[0], (socket.socket, asyncio.trsock.TransportSocket))
            r, w = await env.peer_open(UNSTEERED)
            w.write(b"k")
            got = await r.readexactly(1)
            w.close()
        return kernel_sock, got, [str(x.message) for x in ws]
    kernel_sock, got, msgs = env.run(main())
    assert kernel_sock and got == b"k"
    if env.kind == "fpd":
        assert any("not steered" in m for m in msgs)


def test_runner_loop_factory_and_policy(testbed):
    """new_event_loop() works as a Runner loop factory and install() sets the policy; with
    no fpd context the loop is a plain selector loop on the kernel."""
    async def main():
        return type(asyncio.get_running_loop())
    with asyncio.Runner(loop_factory=lambda: fpd_loop.new_event_loop(None)) as r:
        assert r.run(main()) is fpd_loop.FpdEventLoop
    old = asyncio.get_event_loop_policy()
    try:
        fpd_loop.install()
        assert isinstance(asyncio.get_event_loop_policy(), fpd_loop.FpdEventLoopPolicy)
    finally:
        asyncio.set_event_loop_policy(old)


@pytest.mark.parametrize("env", ["fpd"], indirect=True)
def test_answer_leaves_in_the_same_burst(env):
    """Run to completion: a Protocol that answers in data_received sends the answer with
    the ACK of the request in one frame, in the same pass (one TX frame per round trip;
    an answer in a later pass would follow a separate ACK during quick-ACK mode)."""
    class Echo(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t

        def data_received(self, d):
            self.t.write(d)

    async def main():
        srv = await env.loop.create_server(Echo, None, PORT)
        async with srv:
            s = env.peer_sock()
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await env.loop.sock_connect(s, (env.bed.srv_ip, PORT))
            await env.loop.sock_sendall(s, b"w")
            assert await env.loop.sock_recv(s, 1) == b"w"
            before = env.worker.tx_frames
            for _ in range(100):
                await env.loop.sock_sendall(s, b"x")
                assert await env.loop.sock_recv(s, 1) == b"x"
            sent = env.worker.tx_frames - before
            s.close()
            return sent
    sent = env.run(main())
    assert 100 <= sent <= 102, sent
