"""fpd.loop and fpd run without root: the command line, the loop with no fpd context (a
plain selector loop), FpdSocket options, exit status mapping."""

import asyncio
import errno
import socket

import pytest
from click.testing import CliRunner

from fpd import loop as fpd_loop
from fpd import run as fpd_run
from fpd.cli import main


def cli(*args):
    return CliRunner().invoke(main, list(args))


def test_run_help():
    r = cli("run", "--help")
    assert r.exit_code == 0 and "SCRIPT.py" in r.output and "-m MODULE" in r.output
    assert "FPD_SOCKET" in r.output


def test_run_needs_a_program(tmp_path):
    r = cli("run", "-i", "lo", "-p", "80", "--socket", str(tmp_path / "s"))
    assert r.exit_code == 2 and "give the program to run" in r.output


def test_run_missing_script(tmp_path):
    r = cli("run", "-i", "lo", "-p", "80", "--socket", str(tmp_path / "s"),
            str(tmp_path / "nope.py"))
    assert r.exit_code == 2 and "no such script" in r.output


def test_run_needs_a_port(tmp_path):
    script = tmp_path / "x.py"
    script.write_text("pass\n")
    r = cli("run", "-i", "lo", "--socket", str(tmp_path / "s"), str(script))
    assert r.exit_code == 2 and "--port" in r.output


def test_program_arguments_are_not_fpd_options(tmp_path, monkeypatch):
    """Everything after the script (options included) belongs to the program."""
    seen = {}
    from fpd import daemon

    def fake_run(cfg):
        seen["cfg"] = cfg
        return 7
    monkeypatch.setattr(daemon, "run", fake_run)
    monkeypatch.setattr(daemon, "preflight", lambda cfg: None)
    script = tmp_path / "x.py"
    script.write_text("pass\n")
    r = cli("run", "-i", "lo", "-p", "8080", "--socket", str(tmp_path / "s"), str(script),
            "--port", "9", "-m", "z")
    assert r.exit_code == 7, r.output
    app = seen["cfg"].app
    assert app["argv"] == [str(script), "--port", "9", "-m", "z"] and not app["module"]
    assert seen["cfg"].ports == [8080] and seen["cfg"].foreground
    r = cli("run", "-i", "lo", "-p", "8080", "--socket", str(tmp_path / "s"), "-m",
            "http.server", "--", "8080")
    assert seen["cfg"].app["argv"] == ["http.server", "8080"]
    assert seen["cfg"].app["module"]


def test_exit_code_mapping():
    assert fpd_run._exit_code(None) == 0
    assert fpd_run._exit_code(3) == 3
    assert fpd_run._exit_code(256 + 5) == 5
    assert fpd_run._exit_code("bye") == 1


def test_loop_without_context_is_a_selector_loop():
    async def handle(r, w):
        w.write(await r.read(100))
        await w.drain()
        w.close()

    async def main():
        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        async with srv:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"kernel")
            got = await r.read()
            w.close()
            return got, type(asyncio.get_running_loop()), type(w.transport).__name__
    with asyncio.Runner(loop_factory=lambda: fpd_loop.new_event_loop(None)) as runner:
        got, kind, tname = runner.run(asyncio.wait_for(main(), 10))
    assert got == b"kernel" and kind is fpd_loop.FpdEventLoop
    assert tname == "_SelectorSocketTransport"


class _Conn:
    nodelay = False
    keepalive = False
    local = (b"\x0a\x4d\x00\x01", 80)
    remote = (b"\x0a\x4d\x00\x02", 5555)


def test_fpd_socket_options_reach_the_engine():
    c = _Conn()
    s = fpd_loop.FpdSocket(c)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    assert c.nodelay and c.keepalive
    assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    assert s.getsockname() == ("10.77.0.1", 80) and s.getpeername() == ("10.77.0.2", 5555)
    assert s.fileno() == -1 and s.family == socket.AF_INET
    with pytest.raises(OSError) as e:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 500)
    assert e.value.errno == errno.ENOPROTOOPT


def test_policy_makes_fpd_loops():
    p = fpd_loop.FpdEventLoopPolicy()
    lp = p.new_event_loop()
    try:
        assert isinstance(lp, fpd_loop.FpdEventLoop)
    finally:
        lp.close()


class _FakeStack:
    def next_deadline(self):
        return None


class _FakeWorker:
    """Just what FpdEventLoop touches when it runs without traffic."""
    max_sleep = 0.01
    _closed = False

    def __init__(self, app):
        self.app = app
        self.stack = _FakeStack()
        self.readers = {}

    def clock(self):
        import time
        return time.monotonic()

    def add_reader(self, fd, fn):
        self.readers[fd] = fn

    def remove_reader(self, fd):
        self.readers.pop(fd, None)

    def poll_once(self, timeout=0.0):
        return 0


def test_loop_run_twice_passes_other_events_on_once():
    """A loop that runs more than once (pyroute2 reuses its private loop) keeps the
    previous app as its successor, not itself: another app's events reach it once
    (the second run used to make the loop its own successor: RecursionError)."""
    seen = []
    w = _FakeWorker(lambda worker, evs, now: seen.append(evs))
    loop = fpd_loop.FpdEventLoop(fpd_loop.Context(w))
    try:
        loop.run_until_complete(asyncio.sleep(0))
        loop.run_until_complete(asyncio.sleep(0))
        ev = ("readable", object())
        w.app(w, [ev], 0.0)
        assert seen == [[ev]]
    finally:
        loop.close()
    assert w.readers == {}
