"""Unmodified programs under ``fpd run`` in the test bed, driven by real clients in the
peer namespace: the stdlib asyncio echo server (20 MB, SHA-256, also with 5 % loss),
http.server with curl, an aiohttp app with wrk; exit status, SIGTERM, and nothing left
behind (XDP detached, reserved ports given back, files removed)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from fpd.bpf import attached_prog_id

ECHO = textwrap.dedent("""
    import asyncio, sys

    async def handle(r, w):
        first = True
        while True:
            d = await r.read(65536)
            if not d:
                break
            if first and d.startswith(b"QUIT"):
                loop.call_soon(done.set_result, None)
                break
            first = False
            w.write(d)
            await w.drain()
        w.close()

    async def main():
        global loop, done
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        sys.stdout.write(f"loop: {type(loop).__name__}\\n")    # one write: the copies
        sys.stdout.flush()                                      # of the program share it
        srv = await asyncio.start_server(handle, "0.0.0.0", int(sys.argv[1]))
        async with srv:
            await done

    asyncio.run(main())
    sys.exit(3)
""")

AIOHTTP_APP = textwrap.dedent("""
    import sys
    from aiohttp import web

    async def hello(request):
        return web.Response(text="hello from fpd\\n")

    app = web.Application()
    app.router.add_get("/", hello)
    web.run_app(app, host="0.0.0.0", port=int(sys.argv[1]), print=None, access_log=None)
""")


class Run:
    def __init__(self, bed, proc, tmp, out):
        self.bed, self.proc, self.tmp, self.out = bed, proc, tmp, out

    def output(self) -> str:
        with open(self.out, errors="replace") as f:
            return f.read()

    def wait(self, timeout=30) -> int:
        return self.proc.wait(timeout)


def _reserved(bed) -> str:
    return bed.run(bed.srv_ns, ["cat", "/proc/sys/net/ipv4/ip_local_reserved_ports"]).stdout


def _wait_port(bed, port, proc, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"fpd run exited early ({proc.returncode})")
        s = bed.socket(bed.peer_ns)
        s.settimeout(1.0)
        try:
            s.connect((bed.srv_ip, port))
            return
        except OSError:
            time.sleep(0.1)
        finally:
            s.close()
    raise AssertionError(f"nothing listens on {port} after {timeout} s")


@contextlib.contextmanager
def fpd_run(bed, ports, program, *, wait_port=True, **popen_kw):
    """``python -m fpd run -i fpd0 -p P... --socket TMP/fpd.sock PROGRAM...`` in the server
    namespace; always stopped (SIGTERM, then SIGKILL + stop --force) and checked clean."""
    tmp = tempfile.mkdtemp(prefix="fpd-run-")
    sock = os.path.join(tmp, "fpd.sock")
    out = os.path.join(tmp, "out.txt")
    before = _reserved(bed)
    argv = [sys.executable, "-m", "fpd", "run", "-i", bed.srv_if, "--socket", sock]
    for p in ports:
        argv += ["-p", str(p)]
    argv += list(program)
    with open(out, "w") as f:
        proc = bed.popen(bed.srv_ns, argv, stdout=f, stderr=subprocess.STDOUT, **popen_kw)
    r = Run(bed, proc, tmp, out)
    try:
        if wait_port:
            _wait_port(bed, ports[0], proc)
        yield r
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                bed.run(bed.srv_ns, [sys.executable, "-m", "fpd", "stop", "--force", "-i",
                                     bed.srv_if, "--socket", sock], check=False)
        text = r.output()
        shutil.rmtree(tmp, ignore_errors=True)
        with bed.inside(bed.srv_ns):
            assert attached_prog_id(bed.srv_if) == 0, "XDP left attached:\n" + text
        assert _reserved(bed) == before, text
        assert not os.path.exists(sock)


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def _peer_echo(bed, port, data, timeout=120):
    s = bed.socket(bed.peer_ns)
    s.settimeout(timeout)
    s.connect((bed.srv_ip, port))
    h = hashlib.sha256()
    n = 0
    import threading

    def send():
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
    t = threading.Thread(target=send, daemon=True)
    t.start()
    while True:
        d = s.recv(1 << 16)
        if not d:
            break
        h.update(d)
        n += len(d)
    t.join(timeout)
    s.close()
    return n, h.hexdigest()


def _quit(bed, port):
    s = bed.socket(bed.peer_ns)
    s.settimeout(10)
    s.connect((bed.srv_ip, port))
    s.sendall(b"QUIT")
    s.close()


def test_asyncio_echo_20mb_and_exit_status(testbed, tmp_path):
    bed = testbed
    script = _write(tmp_path, "echo.py", ECHO)
    data = os.urandom(20 << 20)
    with fpd_run(bed, [7300], [script, "7300"]) as r:
        n, digest = _peer_echo(bed, 7300, data)
        assert n == len(data) and digest == hashlib.sha256(data).hexdigest()
        _quit(bed, 7300)
        assert r.wait(30) == 3, r.output()      # the program's exit status
        assert "loop: FpdEventLoop" in r.output()


def test_asyncio_echo_with_5_percent_loss(testbed, tmp_path):
    bed = testbed
    script = _write(tmp_path, "echo.py", ECHO)
    from test_worker import nft_loss
    data = os.urandom(2 << 20)
    with fpd_run(bed, [7301], [script, "7301"]) as r:
        nft_loss(bed, 5)
        n, digest = _peer_echo(bed, 7301, data)
        assert n == len(data) and digest == hashlib.sha256(data).hexdigest()
        listed = bed.run(bed.peer_ns, ["nft", "list", "table", "inet", "fpdloss"]).stdout
        drops = [int(x) for x in re.findall(r"counter packets (\d+)", listed)]
        assert all(d > 0 for d in drops), listed
        bed.run(bed.peer_ns, ["nft", "delete", "table", "inet", "fpdloss"])
        _quit(bed, 7301)
        assert r.wait(30) == 3


def test_http_server_with_curl_and_sigterm(testbed, tmp_path):
    bed = testbed
    www = tmp_path / "www"
    www.mkdir()
    blob = os.urandom(3 << 20)
    (www / "blob").write_bytes(blob)
    with fpd_run(bed, [8000], ["-m", "http.server", "8000", "--bind", "0.0.0.0",
                              "--directory", str(www)]) as r:
        got = tmp_path / "got"
        for _ in range(3):
            p = bed.run(bed.peer_ns, ["curl", "-s", "-m", "20", "-o", str(got), "-w",
                                      "%{http_code}", f"http://{bed.srv_ip}:8000/blob"],
                        check=False, timeout=40)
            assert p.stdout == "200", (p.returncode, r.output())
            assert got.read_bytes() == blob
        r.proc.send_signal(signal.SIGTERM)
        assert r.wait(20) == 0, r.output()


def test_aiohttp_with_wrk(testbed, tmp_path):
    pytest.importorskip("aiohttp", reason="aiohttp is a test extra: pip install -e .[test]")
    if shutil.which("wrk") is None:
        pytest.fail("wrk is needed (apt: wrk)")
    bed = testbed
    app = _write(tmp_path, "app.py", AIOHTTP_APP)
    with fpd_run(bed, [8080], [app, "8080"]) as r:
        p = bed.run(bed.peer_ns, ["curl", "-s", "-m", "10", f"http://{bed.srv_ip}:8080/"],
                    check=False, timeout=20)
        assert p.stdout == "hello from fpd\n", r.output()
        p = bed.run(bed.peer_ns, ["wrk", "-t1", "-c16", "-d2s",
                                  f"http://{bed.srv_ip}:8080/"], timeout=30)
        m = re.search(r"(\d+) requests in", p.stdout)
        assert m and int(m.group(1)) > 100, p.stdout
        assert "Socket errors" not in p.stdout and "Non-2xx" not in p.stdout, p.stdout


def test_program_that_fails_and_unsteered_port(testbed, tmp_path):
    """A server on a port fpd does not steer gets a kernel socket (warning in the log);
    an uncaught exception ends fpd run with status 1, cleanly."""
    bed = testbed
    script = _write(tmp_path, "bad.py", textwrap.dedent("""
        import asyncio
        async def main():
            srv = await asyncio.start_server(lambda r, w: None, "0.0.0.0", 7399)
            print("kernel socket:", type(srv.sockets[0]).__name__, flush=True)
            raise ValueError("the app failed")
        asyncio.run(main())
    """))
    with fpd_run(bed, [7302], [script], wait_port=False) as r:
        assert r.wait(30) == 1
        out = r.output()
        assert "port 7399 is not steered by fpd" in out
        assert "kernel socket: TransportSocket" in out
        assert "ValueError: the app failed" in out


def test_two_queues_prefork(testbed_factory, tmp_path):
    """Two queues: two workers, each running the program (pre-fork); connections land
    on both, every echo is intact, and the first program to exit ends fpd run."""
    bed = testbed_factory(queues=2)
    script = _write(tmp_path, "echo.py", ECHO)
    import concurrent.futures as cf
    with fpd_run(bed, [7303], [script, "7303"]) as r:
        blobs = [os.urandom(200000 + i) for i in range(16)]
        with cf.ThreadPoolExecutor(8) as ex:
            res = list(ex.map(lambda b: _peer_echo(bed, 7303, b, timeout=60), blobs))
        for b, (n, digest) in zip(blobs, res):
            assert n == len(b) and digest == hashlib.sha256(b).hexdigest()
        assert r.output().count("loop: FpdEventLoop") == 2, r.output()
        _quit(bed, 7303)
        assert r.wait(30) == 3, r.output()


SHM_ECHO = textwrap.dedent("""
    import sys
    from fpd import client as socket
    srv = socket.create_server(("", int(sys.argv[1])))
    print("listening", flush=True)
    c, _ = srv.accept()
    while True:
        d = c.recv(65536)
        if not d:
            break
        c.sendall(d)
    c.close()
    srv.close()
""")


def test_shm_client_beside_the_program(testbed, tmp_path):
    """While the program's fpd loop drives the worker, a program started on its own
    (fpd.client over shared memory) is served by the same daemon on another port."""
    bed = testbed
    script = _write(tmp_path, "echo.py", ECHO)
    other = _write(tmp_path, "shm_echo.py", SHM_ECHO)
    with fpd_run(bed, [7304, 7305], [script, "7304"]) as r:
        n, digest = _peer_echo(bed, 7304, b"x" * 1000)     # the loop runs and drives
        assert n == 1000
        sock = os.path.join(r.tmp, "fpd.sock")
        env = dict(os.environ, FPD_SOCKET=sock)
        out = os.path.join(r.tmp, "shm.txt")
        with open(out, "w") as f:
            p = bed.popen(bed.srv_ns, [sys.executable, other, "7305"], stdout=f,
                          stderr=subprocess.STDOUT, env=env)
        try:
            end = time.monotonic() + 20
            while "listening" not in open(out).read():
                assert p.poll() is None and time.monotonic() < end, open(out).read()
                time.sleep(0.05)
            data = os.urandom(1 << 20)
            n, digest = _peer_echo(bed, 7305, data)
            assert n == len(data) and digest == hashlib.sha256(data).hexdigest()
            assert p.wait(20) == 0
            n, digest = _peer_echo(bed, 7304, data)        # and the program still serves
            assert n == len(data) and digest == hashlib.sha256(data).hexdigest()
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        _quit(bed, 7304)
        assert r.wait(30) == 3


def test_ctrl_c_stops_program_and_fpd(testbed, tmp_path):
    """^C in a terminal: SIGINT to the whole process group (supervisor and workers)."""
    bed = testbed
    script = _write(tmp_path, "echo.py", ECHO)
    with fpd_run(bed, [7306], [script, "7306"], start_new_session=True) as r:
        n, _ = _peer_echo(bed, 7306, b"y" * 5000)
        assert n == 5000
        os.killpg(r.proc.pid, signal.SIGINT)
        assert r.wait(30) in (0, 130), r.output()
        assert "stopped" in r.output()
