"""Blocking socket programs under ``fpd run`` served in-process (fpd/inproc.py): the
program's sockets are the worker's engine objects, its waiting threads drive the engine.
Real kernel clients in the peer namespace; every run checked clean (see fpd_run)."""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import os
import socket
import struct
import subprocess
import sys
import textwrap
import time

from test_loop_run import SHM_ECHO, _peer_echo, _quit, _write, fpd_run

BLOCKING_ECHO = textwrap.dedent("""
    import socket, sys, threading
    srv = socket.create_server(("0.0.0.0", int(sys.argv[1])), backlog=64)
    sys.stdout.write(f"socket: {type(srv).__module__}.{type(srv).__name__}\\n")
    sys.stdout.flush()
    stop = threading.Event()

    def serve(c):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        first = True
        while True:
            d = c.recv(65536)
            if not d:
                break
            if first and d.startswith(b"QUIT"):
                stop.set()
                break
            first = False
            c.sendall(d)
        c.close()

    def acceptor():
        while True:
            c, peer = srv.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    threading.Thread(target=acceptor, daemon=True).start()
    stop.wait()
    srv.close()
    sys.exit(3)
""")


def test_blocking_echo_in_process(testbed, tmp_path):
    """A threaded blocking echo server: 20 MB intact, 12 concurrent connections intact,
    and its sockets are fpd.inproc's (no shared-memory ring)."""
    bed = testbed
    script = _write(tmp_path, "becho.py", BLOCKING_ECHO)
    data = os.urandom(20 << 20)
    with fpd_run(bed, [7310], [script, "7310"]) as r:
        n, digest = _peer_echo(bed, 7310, data)
        assert n == len(data) and digest == hashlib.sha256(data).hexdigest()
        blobs = [os.urandom(100000 + 7 * i) for i in range(12)]
        with cf.ThreadPoolExecutor(6) as ex:
            res = list(ex.map(lambda b: _peer_echo(bed, 7310, b, timeout=60), blobs))
        for b, (n, digest) in zip(blobs, res):
            assert n == len(b) and digest == hashlib.sha256(b).hexdigest()
        _quit(bed, 7310)
        assert r.wait(30) == 3, r.output()
        assert "socket: fpd.inproc.socket" in r.output()


def test_blocking_two_queues_prefork(testbed_factory, tmp_path):
    """Two queues: both copies of a blocking program listen (each in its own worker's
    engine) and connections landing on either queue are served."""
    bed = testbed_factory(queues=2)
    script = _write(tmp_path, "becho.py", BLOCKING_ECHO)
    with fpd_run(bed, [7311], [script, "7311"]) as r:
        blobs = [os.urandom(50000 + i) for i in range(16)]
        with cf.ThreadPoolExecutor(8) as ex:
            res = list(ex.map(lambda b: _peer_echo(bed, 7311, b, timeout=60), blobs))
        for b, (n, digest) in zip(blobs, res):
            assert n == len(b) and digest == hashlib.sha256(b).hexdigest()
        assert r.output().count("socket: fpd.inproc.socket") == 2, r.output()
        _quit(bed, 7311)
        assert r.wait(30) == 3, r.output()


SEMANTICS = textwrap.dedent("""
    import errno, socket, sys, time
    port = int(sys.argv[1])
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("", port))
    srv.listen(8)
    print("type", type(srv).__module__, flush=True)
    srv.settimeout(0.2)
    t0 = time.monotonic()
    try:
        srv.accept()
        print("accept: no timeout", flush=True)
    except TimeoutError:
        print("accept timeout %.1f" % (time.monotonic() - t0), flush=True)
    srv.settimeout(None)
    print("SERVING", flush=True)
    # 1: peer sends 5 bytes and resets
    c, peer = srv.accept()
    print("peer", peer[0], c.getsockname()[1] == port, flush=True)
    got = b""
    try:
        while True:
            d = c.recv(100)
            if not d:
                print("eof", flush=True)
                break
            got += d
    except ConnectionResetError as e:
        print("reset after", got, e.errno == errno.ECONNRESET, flush=True)
    c.close()
    # 2: non-blocking recv, recv timeout, half-close, makefile
    c, peer = srv.accept()
    c.setblocking(False)
    try:
        c.recv(10)
        print("nonblocking: data?", flush=True)
    except BlockingIOError:
        print("nonblocking EAGAIN", flush=True)
    c.settimeout(0.2)
    try:
        c.recv(10)
    except TimeoutError:
        print("recv timeout", flush=True)
    c.settimeout(10)
    f = c.makefile("rwb")
    line = f.readline()
    f.write(b"got " + line)
    f.flush()
    f.close()
    c.shutdown(socket.SHUT_WR)
    print("rest", c.recv(100), c.recv(100), flush=True)
    c.close()
    # 3: a socket dropped without close() is closed (FIN) as a kernel socket would be
    c, peer = srv.accept()
    c.sendall(b"dropped")
    del c
    import gc; gc.collect()
    print("dropped", flush=True)
    time.sleep(1)
    srv.close()
""")


def test_blocking_semantics(testbed, tmp_path):
    """Time-outs, EAGAIN, a peer's RST after data, half-close and makefile, as the
    kernel's sockets behave."""
    bed = testbed
    script = _write(tmp_path, "sem.py", SEMANTICS)
    with fpd_run(bed, [7312], [script, "7312"], wait_port=False) as r:
        end = time.monotonic() + 30
        while "SERVING" not in r.output():
            assert r.proc.poll() is None and time.monotonic() < end, r.output()
            time.sleep(0.05)
        s = bed.socket(bed.peer_ns)
        s.settimeout(10)
        try:
            s.connect((bed.srv_ip, 7312))
        except OSError as e:
            raise AssertionError(r.output()) from e
        s.sendall(b"hello")
        time.sleep(0.3)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()                                       # RST
        s = bed.socket(bed.peer_ns)
        s.settimeout(10)
        s.connect((bed.srv_ip, 7312))
        time.sleep(0.6)
        s.sendall(b"line one\n")
        f = s.makefile("rb")
        assert f.readline() == b"got line one\n"
        assert f.read() == b""                           # the server's FIN
        s.sendall(b"bye")
        s.shutdown(socket.SHUT_WR)
        s3 = bed.socket(bed.peer_ns)
        s3.settimeout(10)
        s3.connect((bed.srv_ip, 7312))
        got = b""
        while True:
            d = s3.recv(100)
            if not d:
                break
            got += d
        assert got == b"dropped", r.output()
        s3.close()
        assert r.wait(30) == 0, r.output()
        s.close()
        out = r.output()
        assert "type fpd.inproc" in out, out
        assert "accept timeout 0.2" in out, out
        assert "peer 10.77.0.2 True" in out, out
        assert "reset after b'hello' True" in out, out
        assert "nonblocking EAGAIN" in out and "recv timeout" in out, out
        assert "rest b'bye' b''" in out, out


def test_blocking_program_beside_shm_client(testbed, tmp_path):
    """A program started on its own (fpd.client over shared memory) is served by the
    same daemon while the blocking program's threads drive the engine in-process."""
    bed = testbed
    script = _write(tmp_path, "becho.py", BLOCKING_ECHO)
    other = _write(tmp_path, "shm_echo.py", SHM_ECHO)
    with fpd_run(bed, [7313, 7314], [script, "7313"]) as r:
        sock = os.path.join(r.tmp, "fpd.sock")
        out = os.path.join(r.tmp, "shm.txt")
        with open(out, "w") as f:
            p = bed.popen(bed.srv_ns, [sys.executable, other, "7314"], stdout=f,
                          stderr=subprocess.STDOUT, env=dict(os.environ, FPD_SOCKET=sock))
        try:
            end = time.monotonic() + 20
            while "listening" not in open(out).read():
                assert p.poll() is None and time.monotonic() < end, open(out).read()
                time.sleep(0.05)
            data = os.urandom(1 << 20)
            with cf.ThreadPoolExecutor(2) as ex:
                a = ex.submit(_peer_echo, bed, 7314, data)
                b = ex.submit(_peer_echo, bed, 7313, data)
                for fut in (a, b):
                    n, digest = fut.result(120)
                    assert n == len(data) and digest == hashlib.sha256(data).hexdigest()
            assert p.wait(20) == 0
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        _quit(bed, 7313)
        assert r.wait(30) == 3, r.output()


CLIENT = textwrap.dedent("""
    import hashlib, socket, sys
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    s = socket.create_connection((host, port), timeout=20)
    print("client", type(s).__module__, 60000 <= s.getsockname()[1] <= 60255, flush=True)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = bytes(range(256)) * (n // 256)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    h = hashlib.sha256()
    got = 0
    while True:
        d = s.recv(65536)
        if not d:
            break
        h.update(d)
        got += len(d)
    s.close()
    print("echoed", got == len(data), h.hexdigest() == hashlib.sha256(data).hexdigest(),
          flush=True)
    try:
        socket.create_connection((host, port + 1), timeout=10)
        print("refused: connected?", flush=True)
    except ConnectionRefusedError:
        print("refused ok", flush=True)
""")


def test_blocking_client_in_process(testbed, tmp_path):
    """An active open under fpd run: in-process (a local port of fpd's share), 2 MB
    echoed intact by a kernel server in the peer namespace, and a refused port."""
    import threading
    bed = testbed
    lst = bed.socket(bed.peer_ns)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((bed.peer_ip, 7320))
    lst.listen(4)
    lst.settimeout(60)

    def echo():
        try:
            c, _ = lst.accept()
        except OSError:
            return
        with c:
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
    t = threading.Thread(target=echo, daemon=True)
    t.start()
    script = _write(tmp_path, "client.py", CLIENT)
    try:
        with fpd_run(bed, [7322], [script, bed.peer_ip, "7320", str(2 << 20)],
                     wait_port=False) as r:
            try:
                code = r.wait(25)
            except subprocess.TimeoutExpired:
                raise AssertionError("fpd run did not end:\n" + r.output()) from None
            out = r.output()
            assert code == 0, out
            assert "client fpd.inproc True" in out, out
            assert "echoed True True" in out, out
            assert "refused ok" in out, out
    finally:
        lst.close()
        t.join(10)
