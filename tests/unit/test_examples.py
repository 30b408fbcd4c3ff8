"""The example apps (fpd/examples/*.py) on the standard socket module over loopback, and the
promise that moving them to fpd is one import line. No root, a few seconds."""

from __future__ import annotations

import ast
import hashlib
import http.client as hc
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "fpd" / "examples"
APPS = ["echo_server.py", "http_server.py", "http_get.py"]
SWAP = "from fpd import client as socket"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name[:-3]}", EXAMPLES / name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class App:
    """An example server in a subprocess on 127.0.0.1 and a free port; always stopped."""

    def __init__(self, script: str, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / script), "--host", "127.0.0.1", "--port", "0",
             *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self._readline(10)
        m = re.match(r"listening on 127\.0\.0\.1:(\d+) \(socket\)$", line.strip())
        if not m:
            self.stop()
            raise AssertionError(f"{script} printed {line!r}; stderr: {self.proc.stderr.read()}")
        self.port = int(m.group(1))
        self.addr = ("127.0.0.1", self.port)

    def _readline(self, timeout: float) -> str:
        out = []
        t = threading.Thread(target=lambda: out.append(self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(timeout)
        return out[0] if out else ""

    def stop(self, sig=signal.SIGTERM, timeout: float = 5.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"no exit within {timeout} s of {sig.name}")
        for f in (self.proc.stdout, self.proc.stderr):
            f.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


@pytest.fixture
def echo():
    with App("echo_server.py") as app:
        yield app


@pytest.fixture
def web():
    with App("http_server.py", "--idle-timeout", "10") as app:
        yield app


def _recv_exact(s, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        d = s.recv(n - len(buf))
        if not d:
            break
        buf += d
    return bytes(buf)


def _recv_all(s) -> bytes:
    buf = bytearray()
    while True:
        d = s.recv(65536)
        if not d:
            return bytes(buf)
        buf += d


# --- the one-line swap -----------------------------------------------------------------

@pytest.mark.parametrize("name", APPS)
def test_fpd_swap_is_one_import_line(name):
    src = (EXAMPLES / name).read_text()
    tree = ast.parse(src)
    # exactly one top-level "import socket", on a line of its own
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    imports = [n for n in top if isinstance(n, ast.Import)
               and any(a.name == "socket" for a in n.names)]
    assert len(imports) == 1
    node = imports[0]
    assert [(a.name, a.asname) for a in node.names] == [("socket", None)]
    lines = src.splitlines()
    assert lines[node.lineno - 1] == "import socket"
    # nothing else reaches the socket module behind the name's back
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom):
            assert n.module != "socket", f"line {n.lineno}: from socket import ..."
        if isinstance(n, ast.Import) and n is not node:
            assert all(a.name != "socket" for a in n.names), f"line {n.lineno}"
    # the swapped program is valid Python and differs in that one line only
    swapped = lines[:]
    swapped[node.lineno - 1] = SWAP
    ast.parse("\n".join(swapped))
    assert sum(a != b for a, b in zip(lines, swapped)) == 1
    # --fpd does the same swap at run time
    assert 'socket = importlib.import_module("fpd.client")' in src
    assert "global socket" in src


def _socket_names(name: str) -> set[str]:
    tree = ast.parse((EXAMPLES / name).read_text())
    return {n.attr for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
            and n.value.id == "socket"}


@pytest.mark.parametrize("name", APPS)
def test_fpd_client_offers_what_the_example_uses(name):
    client = importlib.import_module("fpd.client")      # an import error fails the test
    used = _socket_names(name) - {"__name__"}
    assert used, "the parser found no socket.X uses"
    missing = sorted(a for a in used if not hasattr(client, a))
    assert not missing, f"fpd.client lacks {missing} that {name} uses"


# --- echo ------------------------------------------------------------------------------

def test_echo_roundtrip_and_half_close(echo):
    with socket.create_connection(echo.addr, timeout=5) as s:
        s.sendall(b"hello")
        assert _recv_exact(s, 5) == b"hello"
        data = os.urandom(1 << 20)
        got = []
        t = threading.Thread(target=lambda: got.append(_recv_all(s)), daemon=True)
        t.start()
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        t.join(10)
        assert got and hashlib.sha256(got[0]).digest() == hashlib.sha256(data).digest()


def test_echo_many_clients_at_once(echo):
    errors = []

    def client(i):
        try:
            with socket.create_connection(echo.addr, timeout=5) as s:
                for k in range(20):
                    msg = f"client {i} message {k}\n".encode()
                    s.sendall(msg)
                    assert _recv_exact(s, len(msg)) == msg
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert not errors


def test_echo_survives_a_reset_client(echo):
    s = socket.create_connection(echo.addr, timeout=5)
    s.sendall(b"x" * 1000)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()  # RST
    with socket.create_connection(echo.addr, timeout=5) as s:
        s.sendall(b"still here")
        assert _recv_exact(s, 10) == b"still here"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_servers_exit_cleanly_on_signal_with_clients_connected(sig):
    for script in ("echo_server.py", "http_server.py"):
        app = App(script)
        try:
            s = socket.create_connection(app.addr, timeout=5)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" if script == "http_server.py"
                      else b"ping")
            time.sleep(0.2)  # the answer is in our receive buffer
            t0 = time.monotonic()
            rc = app.stop(sig)
            assert rc == 0, f"{script}: exit status {rc}"
            assert time.monotonic() - t0 < 3
            s.settimeout(5)
            assert _recv_all(s)  # the answer, then EOF: the server closed it on its way out
            s.close()
        finally:
            app.stop(signal.SIGKILL)


def test_port_in_use_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = subprocess.run([sys.executable, str(EXAMPLES / "echo_server.py"), "--host",
                            "127.0.0.1", "--port", str(port)],
                           capture_output=True, text=True, timeout=10)
    assert p.returncode == 1 and "cannot listen" in p.stderr


# --- HTTP ------------------------------------------------------------------------------

def test_http_keep_alive_get_head_404_bytes(web):
    mod = _load("http_server.py")
    c = hc.HTTPConnection(*web.addr, timeout=5)
    try:
        c.request("GET", "/")
        r = c.getresponse()
        page = r.read()
        assert r.status == 200 and b"Hello" in page
        assert int(r.getheader("Content-Length")) == len(page)
        sock = c.sock
        c.request("HEAD", "/bytes/1000")  # same connection: keep-alive
        r = c.getresponse()
        assert r.status == 200 and r.getheader("Content-Length") == "1000"
        assert r.read() == b""
        c.request("GET", "/nowhere")
        r = c.getresponse()
        assert r.status == 404
        r.read()
        c.request("GET", "/bytes/100000")
        r = c.getresponse()
        body = r.read()
        assert r.status == 200 and len(body) == 100000
        assert body == mod.pattern_bytes(100000)
        c.request("GET", "/sha256/100000")
        r = c.getresponse()
        assert r.read().decode().strip() == hashlib.sha256(body).hexdigest()
        assert c.sock is sock, "the connection was not kept alive"
    finally:
        c.close()


def test_http_405_400_and_bad_n(web):
    c = hc.HTTPConnection(*web.addr, timeout=5)
    c.request("POST", "/", body=b"data=1")
    r = c.getresponse()
    assert r.status == 405 and r.getheader("Allow") == "GET, HEAD"
    r.read()
    c.request("GET", "/bytes/x")
    r = c.getresponse()
    assert r.status == 400
    r.read()
    c.close()
    for garbage in (b"NONSENSE\r\n\r\n", b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
                    b"GET / HTTP/1.1\r\n\r\n", b"GET / SPDY/9\r\nHost: x\r\n\r\n"):
        with socket.create_connection(web.addr, timeout=5) as s:
            s.sendall(garbage)
            resp = _recv_all(s)  # answered, then closed
            assert resp.startswith(b"HTTP/1.1 400 "), (garbage, resp[:40])


def test_http_pipelining_and_http10(web):
    with socket.create_connection(web.addr, timeout=5) as s:
        s.sendall(b"GET /bytes/3 HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /bytes/4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        resp = _recv_all(s)
    assert resp.count(b"HTTP/1.1 200 OK") == 2
    assert b"Connection: close" in resp
    with socket.create_connection(web.addr, timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")  # 1.0 without keep-alive: closed after
        resp = _recv_all(s)
    assert resp.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in resp


def test_http_client_closing_mid_request_costs_nothing(web):
    for partial in (b"GET /bytes/10 HTT", b"GET / HTTP/1.1\r\nHost: x\r\n",
                    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc"):
        s = socket.create_connection(web.addr, timeout=5)
        s.sendall(partial)
        s.close()
    # a reader that goes away in the middle of a big response
    s = socket.create_connection(web.addr, timeout=5)
    s.sendall(b"GET /bytes/50000000 HTTP/1.1\r\nHost: x\r\n\r\n")
    s.recv(1000)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    c = hc.HTTPConnection(*web.addr, timeout=5)
    c.request("GET", "/")
    assert c.getresponse().status == 200
    c.close()
    assert web.proc.poll() is None


def test_pattern_is_deterministic_and_not_short_periodic():
    mod = _load("http_server.py")
    a = mod.pattern_bytes(300000)
    assert a == mod.pattern_bytes(300000) and len(a) == 300000
    assert a[:1448] != a[1448:2896]  # a lost or repeated segment changes the hash
    assert mod.pattern_sha256(300000) == hashlib.sha256(a).hexdigest()
    assert [len(c) for c in mod.pattern_chunks(200000, 65536)][-1] > 0


def test_http_get_example(web):
    mod = _load("http_server.py")
    p = subprocess.run([sys.executable, str(EXAMPLES / "http_get.py"), "--json",
                        f"http://127.0.0.1:{web.port}/bytes/777777"],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["status"] == 200 and res["bytes"] == 777777
    assert res["sha256"] == mod.pattern_sha256(777777)
    assert res["socket_module"] == "socket"
    p = subprocess.run([sys.executable, str(EXAMPLES / "http_get.py"),
                        f"http://127.0.0.1:{web.port}/missing"],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 1 and p.stdout.startswith("404 Not Found")


def test_wrk_zero_errors(web):
    if not shutil.which("wrk"):
        pytest.skip("wrk not installed (make deps installs it)")
    p = subprocess.run(["wrk", "-t1", "-c8", "-d1s", f"http://127.0.0.1:{web.port}/"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert "Socket errors" not in p.stdout and "Non-2xx" not in p.stdout, p.stdout
    assert float(re.search(r"Requests/sec:\s+([\d.]+)", p.stdout).group(1)) > 100


# --- fpd demo: the parts that need no root -------------------------------------------------

def test_demo_report_lines_and_ratio():
    from fpd import demo
    lines = []
    d = demo.Demo(echo=lines.append, quick=True)
    d.report(demo.Step("thing", demo.Result(True, "50.0 MB/s", speed=50.0),
                       demo.Result(True, "200.0 MB/s", speed=200.0)))
    d.report(demo.Step("broken", demo.Result(False, "exit 1", detail="why it broke"),
                       demo.Result(True, "ok")))
    d.report(demo.Step("tool", skipped="wrk not installed"))
    assert re.search(r"^  thing +50\.0 MB/s +200\.0 MB/s +0\.25x  PASS$", lines[0])
    assert lines[1].endswith("FAIL") and "fpd: why it broke" in lines[2]
    assert lines[3].endswith("SKIP (wrk not installed)")
    assert [s.status for s in d.steps] == ["PASS", "FAIL", "SKIP"]


def test_demo_without_root_says_so(monkeypatch):
    from fpd import demo
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    lines = []
    assert demo.run(echo=lines.append, quick=True) == 2
    assert any("needs root" in line for line in lines)


@pytest.mark.parametrize("name", ["echo_server.py", "http_server.py"])
def test_fpd_switch_without_a_daemon_is_a_clear_error(name, tmp_path):
    importlib.import_module("fpd.client")               # an import error fails the test
    env = dict(os.environ, FPD_SOCKET=str(tmp_path / "no-daemon.sock"))
    p = subprocess.run([sys.executable, str(EXAMPLES / name), "--fpd", "--port", "7007"],
                       capture_output=True, text=True, timeout=20, env=env)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "cannot listen" in p.stderr and "no-daemon.sock" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_http_get_fpd_without_a_daemon_is_a_clear_error(tmp_path):
    importlib.import_module("fpd.client")               # an import error fails the test
    env = dict(os.environ, FPD_SOCKET=str(tmp_path / "no-daemon.sock"))
    p = subprocess.run([sys.executable, str(EXAMPLES / "http_get.py"), "--fpd",
                        "http://127.0.0.1:9/"], capture_output=True, text=True, timeout=20,
                       env=env)
    assert p.returncode == 2 and "no-daemon.sock" in p.stderr and "Traceback" not in p.stderr


def test_demo_compare_interleaves_and_keeps_the_best_round():
    from fpd import demo
    calls = []
    d = demo.Demo(echo=lambda s: None)

    def side(name, speeds):
        it = iter(speeds)

        def run():
            calls.append(name)
            v = next(it)
            return demo.Result(v is not None, f"{v}", speed=v)
        return run

    step = d.compare("x", side("fpd", [10.0, 30.0]), side("kernel", [100.0, 60.0]))
    assert calls == ["fpd", "kernel", "fpd", "kernel"]
    assert step.fpd.speed == 30.0 and step.kernel.speed == 100.0 and step.ratio() == "0.30x"
    calls.clear()
    step = d.compare("y", side("fpd", [None, 5.0]), side("kernel", [1.0, 1.0]))
    assert calls == ["fpd", "kernel"] and step.status == "FAIL"   # no second round
