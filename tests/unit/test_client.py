"""fpd.client and fpd.aio against the real service and engine on loopback workers
(fpd.loopback.LoopbackDaemon): no root, no NIC.

A client may connect to its own listeners (the worker's stack answers for ADDR), so the
library talks to itself on two workers (regions) at once; PEER runs echo servers on
port 7; BLACKHOLE answers nothing."""

import asyncio
import errno
import os
import select
import selectors
import socket as std_socket
import struct
import threading
import time

import pytest

from fpd import aio, client, control, proto, shm
from fpd import client as socket
from fpd.control import ControlError, Service
from fpd.loopback import ADDR, BLACKHOLE, PEER
from loopback_client import finish as _finish
from loopback_client import loopback_client

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def daemon():
    with loopback_client("fpdc", 64, workers=2) as f:
        yield f
    left = [t.name for t in threading.enumerate()
            if t.name.startswith(("fpd-loopback", "fpd-pump")) and t.is_alive()]
    assert not left, f"threads left behind: {left}"


def set_delay(daemon, seconds):
    """One-way link delay on every worker (a connect then takes 2 x seconds)."""
    for w in daemon.workers:
        w.delay = seconds


def entry_of(daemon, sock):
    """The service's entry for an fpd socket's slot (call in the loop thread)."""
    return daemon.call(lambda w, svc: next(e for c in svc.clients.values()
                                           for e in c.entries.values()
                                           if e.slot == sock._slot and
                                           c.region.generation == sock._w.region.generation),
                       sock._w.q)


def pair(port=8080, srv=None):
    """A connected (client, server-side) pair through the daemon."""
    own = srv is None
    if own:
        srv = socket.create_server(("", port))
    try:
        c = socket.create_connection((ADDR, port), timeout=5)
        srv.settimeout(5)
        a, peer = srv.accept()
        assert peer == c.getsockname()
        return c, a
    finally:
        if own:
            srv.close()


def fill(sock):
    """Send until the TX ring and the peer's RX ring are full (peer not reading)."""
    sock.setblocking(False)
    n = 0
    quiet = 0
    while quiet < 5:
        try:
            n += sock.send(b"f" * 65536)
            quiet = 0
        except BlockingIOError:
            quiet += 1
            time.sleep(0.02)
    return n


# --- API surface ----------------------------------------------------------------------------
def test_standard_names_reexported():
    assert socket.AF_INET == std_socket.AF_INET and socket.SOCK_STREAM == std_socket.SOCK_STREAM
    assert socket.timeout is TimeoutError and socket.error is OSError
    assert socket.getaddrinfo is std_socket.getaddrinfo
    assert socket.gethostname() == std_socket.gethostname()
    assert socket.inet_aton("1.2.3.4") == b"\x01\x02\x03\x04"
    assert socket.SocketType is socket.socket
    for name in ("TCP_NODELAY", "SO_KEEPALIVE", "SHUT_WR", "MSG_PEEK", "gaierror", "herror",
                 "getdefaulttimeout", "setdefaulttimeout", "htons", "SOMAXCONN"):
        assert hasattr(socket, name), name


def test_other_families_and_types_are_standard_sockets():
    for args in ((socket.AF_UNIX, socket.SOCK_STREAM), (socket.AF_INET, socket.SOCK_DGRAM),
                 (socket.AF_INET6, socket.SOCK_STREAM)):
        s = socket.socket(*args)
        try:
            assert type(s) is std_socket.socket
        finally:
            s.close()
    a, b = socket.socketpair()
    a.close(), b.close()
    s = socket.socket()
    assert isinstance(s, socket.socket) and s.family == socket.AF_INET
    assert s.type == socket.SOCK_STREAM
    s.close()
    s.close()                     # twice is fine
    assert s.fileno() == -1


def test_daemon_not_running_clear_error(tmp_path):
    client.set_default_socket(str(tmp_path / "nope.sock"))
    try:
        with pytest.raises(OSError, match="fpd daemon not reachable at .*nope.sock") as ei:
            socket.create_connection((PEER, 7))
        assert isinstance(ei.value, (FileNotFoundError, ConnectionRefusedError))
        # a socket file nobody listens on
        p = str(tmp_path / "dead.sock")
        s = std_socket.socket(std_socket.AF_UNIX, std_socket.SOCK_SEQPACKET)
        s.bind(p)
        s.close()
        client.set_default_socket(p)
        with pytest.raises(ConnectionRefusedError, match="not reachable"):
            socket.create_server(("", 8080))
    finally:
        client.set_default_socket(None)


def test_env_path(daemon, monkeypatch):
    client.set_default_socket(None)
    monkeypatch.setenv("FPD_SOCKET", daemon.path)
    assert client.daemon_info()["workers"] == 2


# --- data ---------------------------------------------------------------------------------------
def test_echo_send_recv_into_and_addresses(daemon):
    with socket.create_connection((PEER, 7), timeout=5) as s:
        assert s.getpeername() == (PEER, 7)
        assert s.getsockname()[0] == ADDR
        assert s.send(b"hello") == 5
        assert s.recv(5) == b"hello"
        s.sendall(memoryview(b"abcdef")[1:4])
        buf = bytearray(10)
        n = 0
        while n < 3:
            n += s.recv_into(memoryview(buf)[n:])
        assert buf[:3] == b"bcd"
        big = os.urandom(300_000)          # > both rings: needs the waits on both sides
        got = bytearray()

        def rd():
            while len(got) < len(big):
                got.extend(s.recv(70000))
        t = threading.Thread(target=rd)
        t.start()
        s.sendall(big)
        t.join(10)
        assert bytes(got) == big
        s.sendall(b"peek")
        while len(s.recv(4, socket.MSG_PEEK)) < 4:
            time.sleep(0.005)
        assert s.recv(4) == b"peek"
    assert s.fileno() == -1
    with pytest.raises(OSError) as ei:
        s.send(b"x")
    assert ei.value.errno == errno.EBADF


def test_server_accept_connect_and_workers(daemon):
    srv = socket.create_server(("", 8080))
    try:
        assert srv.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        pairs = [pair(srv=srv) for _ in range(6)]
        # accepted connections arrived on both workers' regions
        assert {a._w.q for c, a in pairs} == {0, 1}
        for i, (c, a) in enumerate(pairs):
            c.sendall(b"ping%d" % i)
            assert a.recv(10) == b"ping%d" % i
            a.sendall(b"pong%d" % i)
            assert c.recv(10) == b"pong%d" % i
            assert a.getpeername() == c.getsockname()
            assert a.getsockname() == ("10.77.0.1", 8080)
            c.close()
            assert a.recv(10) == b""
            a.close()
    finally:
        srv.close()
    # the port is free again
    socket.create_server(("", 8080)).close()


def test_half_close_both_ways(daemon):
    c, a = pair()
    with c, a:
        c.sendall(b"request")
        c.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            d = a.recv(100)
            if not d:
                break
            got += d
        assert got == b"request"
        for i in range(20):                 # the peer keeps sending after our FIN
            a.sendall(b"x" * 1000)
        a.shutdown(socket.SHUT_WR)
        n = 0
        while True:
            d = c.recv(4096)
            if not d:
                break
            n += len(d)
        assert n == 20_000
        with pytest.raises(BrokenPipeError):
            c.send(b"late")


def test_makefile(daemon):
    with socket.create_connection((PEER, 7), timeout=5) as s:
        f = s.makefile("rwb")
        f.write(b"line one\nline two\n")
        f.flush()
        assert f.readline() == b"line one\n"
        assert f.readline() == b"line two\n"
        f.close()
        t = s.makefile("r", encoding="ascii")
        s.sendall(b"text\n")
        assert t.readline() == "text\n"
        t.close()


def test_recv_view_zero_copy(daemon):
    with socket.create_connection((PEER, 7), timeout=5) as s:
        s.sendall(b"0123456789")
        v = s.recv_view(4)
        assert bytes(v) == b"0123" and v.readonly
        del v
        s.release()
        with s.viewing() as v:
            while len(v) < 6:          # the rest may come in two pieces
                break
            rest = bytes(v)
        while len(rest) < 6:
            rest += s.recv(6 - len(rest))
        assert rest == b"456789"
        with pytest.raises(ValueError):
            s.release(1)


# --- errors ---------------------------------------------------------------------------------------
def test_refused_and_connect_ex(daemon):
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((ADDR, 9999), timeout=5)
    s = socket.socket()
    try:
        assert s.connect_ex((ADDR, 9999)) == errno.ECONNREFUSED
        assert s.connect_ex((PEER, 7)) == 0            # the same socket may retry
        s.sendall(b"ok")
        assert s.recv(2) == b"ok"
    finally:
        s.close()
    with pytest.raises(OSError) as ei:
        socket.socket().recv(1)
    assert ei.value.errno == errno.ENOTCONN
    with pytest.raises(OSError) as ei:
        socket.socket().getpeername()
    assert ei.value.errno == errno.ENOTCONN


def test_listen_errors(daemon):
    s = socket.socket()
    with pytest.raises(OSError) as ei:
        s.listen()                        # not bound
    assert ei.value.errno == errno.EINVAL
    s.close()
    srv = socket.create_server(("", 8081))
    try:
        with pytest.raises(OSError) as ei:
            socket.create_server(("", 8081))
        assert ei.value.errno == errno.EADDRINUSE
        with pytest.raises(PermissionError, match="not steered"):
            socket.create_server(("", 4444))
    finally:
        srv.close()


def test_timeouts(daemon):
    t0 = time.monotonic()
    with pytest.raises(socket.timeout):
        socket.create_connection((BLACKHOLE, 80), timeout=0.3)
    assert 0.25 < time.monotonic() - t0 < 3
    s = socket.socket()
    s.settimeout(0.2)
    assert s.gettimeout() == 0.2
    assert s.connect_ex((BLACKHOLE, 80)) == errno.EAGAIN
    s.close()
    with socket.create_connection((PEER, 7), timeout=0.2) as s:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            s.recv(10)
        assert 0.15 < time.monotonic() - t0 < 3
        s.sendall(b"still works")
        assert s.recv(100) == b"still works"
    srv = socket.create_server(("", 8082))
    srv.settimeout(0.1)
    with pytest.raises(TimeoutError):
        srv.accept()
    srv.close()


def test_nonblocking(daemon):
    set_delay(daemon, 0.05)              # else the connect may be done before we look
    srv = socket.create_server(("", 8083))
    srv.setblocking(False)
    assert srv.getblocking() is False
    with pytest.raises(BlockingIOError):
        srv.accept()
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    assert c.gettimeout() == 0.0
    with pytest.raises(BlockingIOError) as ei:
        c.connect((ADDR, 8083))
    assert ei.value.errno == errno.EINPROGRESS
    sel = selectors.DefaultSelector()
    sel.register(c, selectors.EVENT_WRITE)
    assert sel.select(5)                          # writable = connected
    assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    with pytest.raises(BlockingIOError):
        c.recv(10)
    srv.setblocking(True)
    a, _ = srv.accept()
    a.sendall(b"x")
    sel.modify(c, selectors.EVENT_READ)
    assert sel.select(5)
    assert c.recv(10) == b"x"
    sel.close()
    # a refused non-blocking connect: writable, and SO_ERROR says why
    r = socket.socket()
    r.setblocking(False)
    assert r.connect_ex((ADDR, 9999)) == errno.EINPROGRESS
    _, w, _ = select.select([], [r], [], 5)
    assert w == [r]
    assert r.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED
    for x in (r, a, c, srv):
        x.close()


def test_reset_by_peer(daemon):
    c, a = pair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    a.close()
    c.settimeout(5)
    with pytest.raises(ConnectionResetError):
        c.recv(10)
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        c.sendall(b"x" * 200_000)
    c.close()


def test_sockopts(daemon):
    s = socket.socket()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, True)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 100000)
    assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM
    with pytest.raises(OSError) as ei:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1000)
    assert ei.value.errno == errno.ENOPROTOOPT
    s.connect((PEER, 7))
    e = entry_of(daemon, s)                      # the engine got the options
    assert e.opts == {"nodelay": True, "keepalive": True, "rcvbuf": 100000}
    assert daemon.call(lambda w, svc: (e.conn.nodelay, e.conn.keepalive,
                                       e.conn.cfg.rcvbuf)) == (True, True, 100000)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    deadline = time.monotonic() + 5              # no round trip: the daemon sees it soon
    while daemon.call(lambda w, svc: e.opts.get("sndbuf"), s._w.q) != 4096:
        assert time.monotonic() < deadline, e.opts
        time.sleep(0.001)
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 4096
    s.close()


def test_sockopts_shared_between_connections_stay_their_own(daemon):
    """Accepted connections with the same options share one options dict on both sides
    (idle memory, stop 17); setting an option on one changes only that one."""
    srv = socket.create_server(("", 8081))
    srv.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        (c1, a1), (c2, a2) = pair(8081, srv), pair(8081, srv)
    finally:
        srv.close()
    try:
        for a in (a1, a2):
            a.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        assert a1._opts is a2._opts                  # one dict for the same options
        e1, e2 = entry_of(daemon, a1), entry_of(daemon, a2)
        deadline = time.monotonic() + 5
        for a, e in ((a1, e1), (a2, e2)):
            while daemon.call(lambda w, svc: e.opts.get("keepalive"), a._w.q) != 1:
                assert time.monotonic() < deadline, e.opts
                time.sleep(0.001)
        a2.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        a2.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 50000)
        assert a1.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert a2.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        assert a1.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) != 50000
        while daemon.call(lambda w, svc: e2.opts.get("rcvbuf"), a2._w.q) != 50000:
            assert time.monotonic() < deadline, e2.opts
            time.sleep(0.001)
        assert daemon.call(lambda w, svc: (dict(e1.opts), e1.conn.nodelay),
                           a1._w.q) == ({"nodelay": True, "keepalive": True}, True)
        assert daemon.call(lambda w, svc: e2.conn.nodelay, a2._w.q) is False
    finally:
        for s in (c1, a1, c2, a2):
            s.close()


# --- readiness descriptors ----------------------------------------------------------------------
def test_fileno_readiness_exact(daemon):
    srv = socket.create_server(("", 8084))
    sel = selectors.DefaultSelector()
    sel.register(srv, selectors.EVENT_READ)
    assert sel.select(0.05) == []                     # nothing pending
    c = socket.create_connection((ADDR, 8084), timeout=5)
    assert len(sel.select(5)) == 1                    # a pending accept
    a, _ = srv.accept()
    assert sel.select(0.05) == []
    sel.register(a, selectors.EVENT_READ)
    assert sel.select(0.05) == []                     # no data
    c.sendall(b"abc")
    ev = sel.select(5)
    assert [k.fileobj for k, _ in ev] == [a]
    assert a.recv(1) == b"a"
    assert sel.select(0.05)                           # still data
    assert a.recv(10) == b"bc"
    assert sel.select(0.05) == []                     # drained
    # writability: the ring's free space
    p = select.poll()
    p.register(a.fileno(), select.POLLOUT)
    assert p.poll(1000) == [(a.fileno(), select.POLLOUT)]
    n = fill(a)
    assert n >= 2 * 65536
    assert p.poll(100) == []                          # full: not writable
    got = 0
    while got < n:
        got += len(c.recv(1 << 20))
    assert p.poll(5000) == [(a.fileno(), select.POLLOUT)]
    # EOF is readable
    c.close()
    assert sel.select(5)
    assert a.recv(10) == b""
    sel.close()
    a.close()
    srv.close()


def test_fileno_readable_from_idle_pump(daemon):
    """The app sleeps in select only: the library's pump thread must flip the fd."""
    c, a = pair(8085)
    fd = a.fileno()
    hits = []

    def later():
        time.sleep(0.2)
        c.sendall(b"wake")
    t = threading.Thread(target=later)
    t.start()
    r, _, _ = select.select([fd], [], [], 5)
    hits.append(r)
    t.join()
    assert r == [fd]
    assert a.recv(10) == b"wake"
    c.close(), a.close()


# --- threads ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("pump_thread", [False, True], ids=["no-fileno", "with-pump-thread"])
def test_threaded_server_under_load(daemon, pump_thread):
    srv = socket.create_server(("", 9000), backlog=64)
    if pump_thread:
        srv.fileno()             # the library's pump thread now takes turns leading too
    stop = threading.Event()
    errors = []
    served = []

    def serve(conn):
        try:
            with conn:
                while True:
                    d = conn.recv(65536)
                    if not d:
                        break
                    conn.sendall(d)
        except Exception as e:
            errors.append(e)

    def acceptor():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            t = threading.Thread(target=serve, args=(conn,))
            t.start()
            served.append(t)

    def talker(i):
        try:
            with socket.create_connection((ADDR, 9000), timeout=10) as s:
                if i % 3 == 0:
                    s.settimeout(None)
                for j in range(30):
                    msg = b"%d-%d;" % (i, j) * (1 + j * 10)
                    s.sendall(msg)
                    got = b""
                    while len(got) < len(msg):
                        got += s.recv(65536)
                    assert got == msg
        except Exception as e:
            errors.append(e)

    at = threading.Thread(target=acceptor)
    at.start()
    ts = [threading.Thread(target=talker, args=(i,)) for i in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(20)
    stop.set()
    at.join(5)
    for t in served:
        t.join(5)
    srv.close()
    assert not errors, errors
    assert len(served) == 16


def test_nonblocking_app_without_fileno_sees_everything(daemon):
    """An app that polls non-blocking calls (no fileno, never blocks) still sees
    pending connections and resets: EAGAIN paths drain the event ring."""
    srv = socket.create_server(("", 8085))
    srv.setblocking(False)
    c = socket.create_connection((ADDR, 8085), timeout=5)
    deadline = time.monotonic() + 5
    while True:
        try:
            a, _ = srv.accept()
            break
        except BlockingIOError:
            assert time.monotonic() < deadline
            time.sleep(0.005)
    a.setblocking(False)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    deadline = time.monotonic() + 5
    with pytest.raises(ConnectionResetError):
        while True:
            try:
                a.recv(10)
            except BlockingIOError:
                assert time.monotonic() < deadline
                time.sleep(0.005)
    a.close()
    srv.close()


def _recv_into_list(sock, res):
    """A reader thread's body: what recv(10) returned or raised, into ``res``."""
    try:
        res.append(sock.recv(10))
    except OSError as e:
        res.append(e)


def test_close_wakes_blocked_reader(daemon):
    c, a = pair()
    res = []
    t = threading.Thread(target=_recv_into_list, args=(a, res))
    t.start()
    time.sleep(0.2)
    a.close()
    t.join(5)
    assert not t.is_alive()
    assert isinstance(res[0], OSError) and res[0].errno == errno.EBADF
    c.close()



def _client_of(svc, sock):
    """The service's _Client of an fpd socket's region (call in the loop thread)."""
    return next(c for c in svc.clients.values()
                if c.region.generation == sock._w.region.generation)


def test_short_connection_close_wakes_no_thread_blocked_elsewhere(daemon, monkeypatch):
    """A thread blocked in accept() leads the event pump (the threaded server's shape).
    A connection served and closed by another thread costs that leader no wake-up:
    close() rings the pump's bell only for a leader waiting on that socket, and the
    daemon posts the EV_CLOSED of a slot the client released without ringing (nobody
    waits for it). The event is still in the ring, read at the next wake-up."""
    monkeypatch.setattr(client, "TX_RECLAIM_INTERVAL", 60.0)   # (no sweep wake-ups)
    srv = socket.create_server(("", 8082))
    got = []
    t = threading.Thread(target=lambda: got.append(srv.accept()))
    t.start()
    try:
        deadline = time.monotonic() + 5
        while not (srv._client is not None and srv._client.leading):
            assert time.monotonic() < deadline, "accept never led the pump"
            time.sleep(0.001)
        c = srv._client
        assert c.lead_for is srv
        s = socket.create_connection((PEER, 7), timeout=5)   # (worker 0 or 1)
        s.sendall(b"x")
        assert s.recv(1) == b"x"
        q = s._w.q
        slot, region = s._slot, s._w.region
        bells = daemon.call(lambda w, svc: _client_of(svc, s).app_bell.rings, q)
        ours = c.wake_bell.rings
        s.close()
        assert c.wake_bell.rings == ours          # close() rang no bell for the leader

        def freed(w, svc):
            cl = next(x for x in svc.clients.values() if x.region is not None and
                      x.region.generation == region.generation)
            return slot not in cl.entries, cl.app_bell.rings
        deadline = time.monotonic() + 5
        while not daemon.call(freed, q)[0]:         # the close went through, slot free
            assert time.monotonic() < deadline
            time.sleep(0.001)
        daemon.call(lambda w, svc: None, q)         # (one more iteration: its _step)
        assert daemon.call(freed, q)[1] == bells    # EV_CLOSED rang nothing
        assert t.is_alive() and c.leading and c.lead_for is srv
    finally:
        with socket.create_connection((ADDR, 8082), timeout=5):
            t.join(5)
        srv.close()
        for a, _ in got:
            a.close()
    assert not t.is_alive() and len(got) == 1


def test_close_wakes_a_reader_that_follows_another_leader(daemon):
    """A reader blocked behind a leader (a thread in accept) is woken by close() through
    its condition, without the leader's bell."""
    srv = socket.create_server(("", 8083))
    acc = []
    at = threading.Thread(target=lambda: acc.append(srv.accept()))
    c, a = pair(8083, srv)
    at.start()
    res = []
    t = threading.Thread(target=_recv_into_list, args=(a, res))
    try:
        deadline = time.monotonic() + 5
        while not (srv._client.leading and srv._client.lead_for is srv):
            assert time.monotonic() < deadline
            time.sleep(0.001)
        t.start()
        while a._cond is None or not a._client.followers:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        a.close()
        t.join(5)
        assert not t.is_alive()
        assert isinstance(res[0], OSError) and res[0].errno == errno.EBADF
    finally:
        with socket.create_connection((ADDR, 8083), timeout=5):
            at.join(5)
        srv.close()
        c.close()
        for x, _ in acc:
            x.close()


def test_nodelay_and_keepalive_go_through_the_command_ring(daemon, monkeypatch):
    """TCP_NODELAY / SO_KEEPALIVE on a connection are OP_SETOPT commands (no control
    message), applied in order with the TX kicks: the send after the call is sent
    with the option."""
    s = socket.create_connection((PEER, 7), timeout=5)
    sent = []
    monkeypatch.setattr(client._WorkerLink, "notify", lambda self, msg: sent.append(msg))
    try:
        e = entry_of(daemon, s)
        assert daemon.call(lambda w, svc: e.conn.nodelay, s._w.q) is False
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        s.sendall(b"y")
        assert s.recv(1) == b"y"
        assert sent == []
        assert daemon.call(lambda w, svc: (e.conn.nodelay, e.conn.keepalive,
                                           dict(e.opts)), s._w.q) == \
            (True, True, {"nodelay": True, "keepalive": True})
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        s.sendall(b"z")
        assert s.recv(1) == b"z"
        assert daemon.call(lambda w, svc: e.conn.nodelay, s._w.q) is False
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
    finally:
        s.close()


def test_hostile_setopt_commands_are_counted_and_ignored(daemon):
    s = socket.create_connection((PEER, 7), timeout=5)
    try:
        e = entry_of(daemon, s)
        q = s._w.q
        before = daemon.call(lambda w, svc: svc.counters["bad_commands"], q)
        for arg in (2 << 32 | 1, 0 << 32 | 2, 2**64 - 1, 1 << 40):
            s._w.cmd(s._slot, shm.OP_SETOPT, arg, s._gen16)
        s.sendall(b"w")                              # (after the commands, in order)
        assert s.recv(1) == b"w"
        assert daemon.call(lambda w, svc: svc.counters["bad_commands"], q) == before + 4
        assert daemon.call(lambda w, svc: (e.conn.nodelay, e.conn.keepalive), q) == \
            (False, False)
    finally:
        s.close()

# --- the daemon goes away, or lies ---------------------------------------------------------------
def test_daemon_killed_no_hang(daemon):
    s = socket.create_connection((PEER, 7), timeout=None)
    srv = socket.create_server(("", 8080))
    res = {}

    def rd():
        try:
            s.recv(10)
        except OSError as e:
            res["recv"] = e

    def acc():
        try:
            srv.accept()
        except OSError as e:
            res["accept"] = e
    ts = [threading.Thread(target=rd), threading.Thread(target=acc)]
    for t in ts:
        t.start()
    time.sleep(0.2)
    daemon.kill()
    for t in ts:
        t.join(5)
        assert not t.is_alive()
    assert isinstance(res["recv"], ConnectionResetError)
    assert "fpd daemon at" in str(res["recv"]) and daemon.path in str(res["recv"])
    assert isinstance(res["accept"], OSError)
    with pytest.raises(BrokenPipeError, match="fpd daemon"):
        s.sendall(b"x")
    with pytest.raises(OSError, match="not reachable"):
        socket.create_connection((PEER, 7))
    s.close()
    srv.close()


def test_daemon_stops_shutdown_event(daemon):
    s = socket.create_connection((PEER, 7), timeout=5)
    daemon.stop()
    with pytest.raises(ConnectionResetError, match="fpd daemon"):
        s.recv(10)
    s.close()


def test_hostile_slot_words_only_break_that_socket(daemon):
    bad = socket.create_connection((PEER, 7), timeout=5)
    good = socket.create_connection((PEER, 7), timeout=5)

    e = entry_of(daemon, bad)

    def scribble(w, svc):
        region = e.client.region
        off = region.layout.slot_ctl(e.slot) + shm.SLOT_RX_HDR
        region.mv[off:off + 8] = (2**63).to_bytes(8, "little")
        svc._deliver(e)                    # the daemon looks at the ring: corrupt
        return True
    assert daemon.call(scribble, bad._w.q)
    with pytest.raises(OSError) as ei:
        bad.recv(10)
    assert ei.value.errno == errno.EPROTO and "corrupt" in str(ei.value)
    good.sendall(b"fine")
    assert good.recv(10) == b"fine"
    bad.close()
    good.close()


def test_hostile_event_ring_drops_client_library_survives(daemon):
    s = socket.create_connection((PEER, 7), timeout=5)
    old = client._client

    def scribble(w, svc):
        cl = next(iter(svc.clients.values()))
        ev = cl.region.events
        # a record naming a slot outside the region
        shm.RECORD.pack_into(ev._data, (ev._pos & ev.mask) * 16, 10**6, shm.EV_READABLE, 0, 0)
        ev._publish((ev._pos + 1) & shm.M64)
        cl.app_bell.ring()
    daemon.call(scribble, s._w.q)
    with pytest.raises(OSError, match="corrupt"):
        s.recv(10)
    s.close()
    # a new socket makes a new connection to the daemon
    with socket.create_connection((PEER, 7), timeout=5) as t:
        t.sendall(b"again")
        assert t.recv(10) == b"again"
    assert client._client is not old
    _finish(old)


def test_fork_child_gets_its_own_connection(daemon):
    s = socket.create_connection((PEER, 7), timeout=5)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            try:
                s.send(b"x")
            except OSError as e:
                assert e.errno == errno.EBADF and "fork" in str(e)
                with socket.create_connection((PEER, 7), timeout=5) as t:
                    t.sendall(b"child")
                    if t.recv(10) == b"child":
                        code = 0
        finally:
            os.write(w, bytes([code]))
            os._exit(code)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    assert os.read(r, 1) == b"\0" and os.waitstatus_to_exitcode(status) == 0
    os.close(r)
    s.sendall(b"parent")
    assert s.recv(10) == b"parent"
    s.close()


# --- asyncio --------------------------------------------------------------------------------------
def test_aio_echo_both_ways(daemon):
    async def handle(r, w):
        assert w.get_extra_info("sockname") == (ADDR, 8080)
        while True:
            d = await r.read(65536)
            if not d:
                break
            w.write(d)
            await w.drain()
        w.close()
        await w.wait_closed()

    async def main():
        srv = await aio.start_server(handle, "", 8080)
        async with srv:
            assert srv.is_serving() and len(srv.sockets) == 1
            r, w = await aio.open_connection(ADDR, 8080)
            assert w.get_extra_info("peername") == (ADDR, 8080)
            w.write(b"line 1\nline 2\nrest")
            await w.drain()
            assert await r.readline() == b"line 1\n"
            assert await r.readuntil(b"2\n") == b"line 2\n"
            assert await r.readexactly(4) == b"rest"
            big = os.urandom(500_000)
            reader = asyncio.ensure_future(r.read())
            w.writelines([big[:1000], big[1000:]])
            await w.drain()
            w.write_eof()
            assert await reader == big
            assert r.at_eof()
            w.close()
            assert w.is_closing()
            await w.wait_closed()
            # the client side of fpd against the echo port
            r2, w2 = await aio.open_connection(PEER, 7)
            w2.write(b"abc")
            with pytest.raises(asyncio.IncompleteReadError):
                w2.write_eof()
                await r2.readexactly(4)
            w2.close()
            await w2.wait_closed()
            with pytest.raises(ConnectionRefusedError):
                await aio.open_connection(ADDR, 9999)
        assert not srv.is_serving()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_aio_serve_forever_and_close(daemon):
    async def main():
        srv = await aio.start_server(lambda r, w: w.close(), "", 8081, start_serving=False)
        assert not srv.is_serving()
        task = asyncio.ensure_future(srv.serve_forever())
        await asyncio.sleep(0.05)
        assert srv.is_serving()
        r, w = await aio.open_connection(ADDR, 8081)
        assert await r.read() == b""
        w.close()
        srv.close()
        with pytest.raises(asyncio.CancelledError):
            await task
        await srv.wait_closed()
    asyncio.run(asyncio.wait_for(main(), 20))


def test_hostile_control_replies_and_event_args(daemon):
    def lying_listen(svc, c, msg, fds, now):
        return {"slot": 10**6, "gen": 0}                             # no such slot

    def lying_connect(svc, c, msg, fds, now):
        if msg.port == 8082:
            raise ControlError("nonsense", 42)        # an errno that is no errno
        return Service._connect(svc, c, msg, fds, now)

    def lie(w, svc):
        svc._handlers = dict(Service._handlers)
        svc._handlers.update({proto.Listen: lying_listen, proto.Connect: lying_connect})
    for q in (0, 1):
        daemon.call(lie, q)
    with pytest.raises(OSError) as ei:
        socket.create_server(("", 8080))
    assert ei.value.errno == errno.EPROTO
    with pytest.raises(OSError) as ei:
        socket.create_connection((ADDR, 8082), timeout=5)
    assert ei.value.errno == errno.EPROTO
    for q in (0, 1):
        daemon.call(lambda w, svc: svc.__dict__.pop("_handlers"), q)
    # an EV_CLOSED whose errno is out of range becomes EPROTO, not a crash
    s = socket.create_connection((PEER, 7), timeout=5)

    e = entry_of(daemon, s)

    def bad_close(w, svc):
        e.client.events.put(e.slot, shm.EV_CLOSED, 2**40, e.gen & 0xFFFF)
        e.client.app_bell.ring()
    daemon.call(bad_close, s._w.q)
    with pytest.raises(OSError) as ei:
        s.recv(10)
    assert ei.value.errno == errno.EPROTO
    s.close()
    # the library still works
    with socket.create_connection((PEER, 7), timeout=5) as t:
        t.sendall(b"ok")
        assert t.recv(2) == b"ok"


def test_send_waits_for_a_connect_in_progress(daemon):
    set_delay(daemon, 0.1)
    s = socket.socket()
    s.setblocking(False)
    assert s.connect_ex((PEER, 7)) == errno.EINPROGRESS
    with pytest.raises(BlockingIOError):
        s.send(b"early")                       # non-blocking: EAGAIN until connected
    s.settimeout(5)
    s.sendall(b"early")                        # blocking: waits for the connection
    assert s.recv(10) == b"early"
    s.close()
    r = socket.socket()
    r.setblocking(False)
    assert r.connect_ex((ADDR, 9999)) == errno.EINPROGRESS
    r.settimeout(5)
    with pytest.raises(ConnectionRefusedError):
        r.sendall(b"lost?")                    # not silently swallowed
    r.close()


def test_a_freed_slot_is_reclaimed_later_and_a_reused_one_never(daemon, monkeypatch):
    """A closed connection's slot keeps its ring pages until a sweep finds it still free
    (shm.Region.reclaim then); a connection that took the slot again (LIFO) in between
    keeps its bytes: unread data in its RX ring survives the sweeps."""
    monkeypatch.setattr(control, "RECLAIM_INTERVAL", 3600.0)   # no sweep yet
    srv = socket.create_server(("", 8080))

    def in_use():
        return sum(daemon.call(lambda w, svc: sum(len(c.entries)
                                                  for c in svc.clients.values()), q)
                   for q in (0, 1))
    try:
        idle = in_use()
        c1, a1 = pair(srv=srv)
        used = {(c1._w.q, c1._slot), (a1._w.q, a1._slot)}
        c1.sendall(b"x" * 5000)
        assert a1.recv(10000)
        c1.close()
        a1.close()
        deadline = time.monotonic() + 5
        while in_use() > idle:                # both slots freed (FIN exchange done)
            assert time.monotonic() < deadline
            time.sleep(0.002)
        pairs = []
        try:
            reused = set()
            while not reused and len(pairs) < 4:  # the workers take turns
                c2, a2 = pair(srv=srv)
                pairs.append((c2, a2))
                reused = used & {(c2._w.q, c2._slot), (a2._w.q, a2._slot)}
            data = bytes(range(256)) * 40
            a2.sendall(data)                  # sits in c2's RX ring, unread
            c2.sendall(data)                  # and in a2's
            monkeypatch.setattr(control, "RECLAIM_INTERVAL", 0.02)

            def sweep_soon(w, svc):
                svc._reclaim_at = 0.0
            for q in (0, 1):
                daemon.call(sweep_soon, q)
            time.sleep(0.2)                   # sweeps, with the reused slot in use
            for s in (c2, a2):
                got = b""
                while len(got) < len(data):
                    chunk = s.recv(len(data))
                    assert chunk, "EOF before the data"
                    got += chunk
                assert got == data
        finally:
            for c2, a2 in pairs:
                c2.close()
                a2.close()
        assert reused, "no slot was reused: the test did not test reuse"

        def reclaimed():
            return sum(daemon.call(lambda w, svc: svc.counters["slot_reclaimed"], q)
                       for q in (0, 1))
        deadline = time.monotonic() + 5
        while reclaimed() < 2:
            assert time.monotonic() < deadline, "the freed slots were never reclaimed"
            time.sleep(0.02)
    finally:
        srv.close()


def _resident_pages(region, off, n):
    """How many pages of region[off:off+n] are resident (mincore through ctypes)."""
    import ctypes
    import mmap as _mmap
    libc = ctypes.CDLL(None, use_errno=True)
    buf = (ctypes.c_char * len(region.mm)).from_buffer(region.mm)
    try:
        vec = (ctypes.c_ubyte * (n // _mmap.PAGESIZE))()
        addr = ctypes.addressof(buf) + off
        assert libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(n), vec) == 0
        return sum(v & 1 for v in vec)
    finally:
        del buf


def test_idle_tx_ring_pages_are_reclaimed_by_the_client(daemon, monkeypatch):
    """The client punches out a TX ring's pages once the daemon took every byte and the
    socket wrote nothing for an interval (the pump's leader does it); a socket that
    keeps writing keeps them, and the connection goes on as before."""
    monkeypatch.setattr(client, "TX_RECLAIM_INTERVAL", 0.02)
    c, a = pair()
    busy_c, busy_a = pair()
    try:
        c.sendall(b"y" * 10000)
        got = 0
        while got < 10000:
            got += len(a.recv(20000))
        lay = c._w.region.layout
        tx_off = lay.tx_data(c._slot)
        assert _resident_pages(c._w.region, tx_off, lay.tx_size) >= 3
        link = c._client
        base = link.tx_reclaimed
        stop = time.monotonic() + 5
        cond = threading.Condition()
        with cond:                            # this thread leads the pump while it waits
            while _resident_pages(c._w.region, tx_off, lay.tx_size):
                assert time.monotonic() < stop, "the idle TX ring kept its pages"
                busy_c.sendall(b"z")          # the busy socket writes every round
                assert busy_a.recv(1) == b"z"
                link.wait(lambda: False, cond, time.monotonic() + 0.01)
        assert link.tx_reclaimed > base
        assert c._tx._data is None and c._rx._data is None     # no data views either
        assert busy_c in link.tx_dirty        # written within every interval
        assert _resident_pages(busy_c._w.region, lay.tx_data(busy_c._slot),
                               lay.tx_size) == 1
        for i in range(3):                    # the ring goes on: zeroed pages fault in
            c.sendall(b"again %d" % i)
            assert a.recv(100) == b"again %d" % i
        assert c in link.tx_dirty
    finally:
        for s in (c, a, busy_c, busy_a):
            s.close()


def test_tx_sweep_runs_while_other_threads_send(daemon, monkeypatch):
    """Sweeps (each one makes every later send join the dirty set again) while another
    thread sends on several sockets: no error on either side, every byte arrives."""
    monkeypatch.setattr(client, "TX_RECLAIM_INTERVAL", 0.0)
    srv = socket.create_server(("", 8080))
    pairs = [pair(srv=srv) for _ in range(6)]
    link = pairs[0][0]._client
    errors = []
    stop = threading.Event()

    def sender():
        try:
            i = 0
            while not stop.is_set():
                c, a = pairs[i % len(pairs)]
                c.sendall(b"%06d" % i)
                got = b""
                while len(got) < 6:
                    got += a.recv(6 - len(got))
                assert got == b"%06d" % i
                i += 1
        except Exception as e:             # (reported below)
            errors.append(e)
    t = threading.Thread(target=sender)
    t.start()
    try:
        end = time.monotonic() + 0.5
        while time.monotonic() < end and not errors:
            link.tx_sweep()
    finally:
        stop.set()
        t.join(10)
        for c, a in pairs:
            c.close()
            a.close()
        srv.close()
    assert not t.is_alive() and not errors, errors


def test_idle_rx_ring_pages_are_reclaimed(daemon, monkeypatch):
    """An RX ring the app has read empty and nobody wrote for an interval goes back to the
    kernel (shm.Region.reclaim); the connection goes on as before."""
    monkeypatch.setattr(control, "RECLAIM_INTERVAL", 0.02)
    c, a = pair()
    try:
        c.sendall(b"hello")
        assert a.recv(10) == b"hello"
        q = a._w.q

        def reclaimed():
            return daemon.call(lambda w, svc: svc.counters["rx_reclaimed"], q)
        deadline = time.monotonic() + 5
        while reclaimed() < 1:
            assert time.monotonic() < deadline, "the idle RX ring was never reclaimed"
            time.sleep(0.02)

        def views(w, svc):
            return [(e.ends.rx._data, e.ends.tx._data) for cl in svc.clients.values()
                    for e in cl.entries.values() if e.conn is not None]
        assert (None, None) in daemon.call(views, q)       # idle: no data views
        for i in range(3):
            c.sendall(b"again %d" % i)
            assert a.recv(100) == b"again %d" % i
            a.sendall(b"back")
            assert c.recv(100) == b"back"
    finally:
        c.close()
        a.close()
