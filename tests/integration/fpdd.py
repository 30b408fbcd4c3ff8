"""Run a real fpd daemon in the test bed's server namespace (a helper for integration tests).

    from fpdd import fpd_daemon

    def test_something(testbed):
        with fpd_daemon(testbed, [7, 80]) as d:
            d.stats()["xdp"]["steered"]
            d.cli("conns", "--json")
            # fpd.client finds the daemon through os.environ["FPD_SOCKET"] == d.socket
            # (set for the body of the with block, restored afterwards)

The daemon is started with ``python -m fpd start ... --socket <fresh tmp dir>/fpd.sock``
(daemonized: the command returns once the daemon serves) inside ``bed.srv_ns``. On exit it
is stopped with ``fpd stop``; if it is still alive a few seconds later it is SIGKILLed and
``fpd stop --force -i fpd0`` cleans up. Then the helper checks that no XDP program is left
on fpd0, that the socket, pid and state files are gone and that the reserved ports are
what they were; a violation raises AssertionError (so the test fails) only after
everything was cleaned up.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from fpd.daemon import pid_alive, read_pid

RESERVED = "/proc/sys/net/ipv4/ip_local_reserved_ports"
# subcommands that take --socket (doctor/xdp/demo do not)
_SOCKET_CMDS = {"start", "stop", "status", "stats", "conns"}


class DaemonError(AssertionError):
    """The daemon did not start, or did not clean up after itself."""


_alive = pid_alive     # a zombie is not alive



def _wait_gone(pids, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    left = [p for p in pids if _alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if _alive(p)]
    return left


class Daemon:
    """A running daemon: ``socket`` (path), ``pid``, ``bed``, ``workers`` (pids at start),
    ``log`` (path of its log file), ``env`` (environment with FPD_SOCKET)."""

    def __init__(self, bed, socket_path: str, log: str):
        self.bed = bed
        self.socket = socket_path
        self.log = log
        self.pid = 0
        self.workers: list[int] = []
        self.env = dict(os.environ, FPD_SOCKET=socket_path)

    def argv(self, *args) -> list[str]:
        argv = [sys.executable, "-m", "fpd", *map(str, args)]
        if args and args[0] in _SOCKET_CMDS and "--socket" not in args:
            argv += ["--socket", self.socket]
        return argv

    def cli(self, *args, check: bool = True, timeout: float = 30,
            **kw) -> subprocess.CompletedProcess:
        """``python -m fpd ARGS --socket PATH`` in the server namespace (output captured,
        text). ``check``: raise DaemonError (with stdout/stderr) on a non-zero exit."""
        kw.setdefault("env", self.env)
        p = self.bed.run(self.bed.srv_ns, self.argv(*args), check=False, timeout=timeout,
                         **kw)
        if check and p.returncode != 0:
            raise DaemonError(f"fpd {' '.join(map(str, args))} failed ({p.returncode}):\n"
                              f"stdout: {p.stdout}\nstderr: {p.stderr}")
        return p

    def _json(self, *args) -> dict:
        p = self.cli(*args, "--json")
        try:
            return json.loads(p.stdout)
        except ValueError:
            raise DaemonError(f"fpd {' '.join(args)} --json printed no JSON: {p.stdout!r}"
                              f" (stderr {p.stderr!r})") from None

    def status(self) -> dict:
        return self._json("status")

    def stats(self) -> dict:
        return self._json("stats")

    def conns(self) -> dict:
        return self._json("conns")

    def alive(self) -> bool:
        return bool(self.pid) and _alive(self.pid)

    def log_text(self) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


def _read_reserved(bed) -> str:
    return bed.run(bed.srv_ns, ["cat", RESERVED]).stdout.strip()


def _xdp_prog_on(bed) -> int:
    from fpd.bpf import attached_prog_id
    with bed.inside(bed.srv_ns):
        return attached_prog_id(bed.srv_if)


_pid_from_file = read_pid


@contextlib.contextmanager
def fpd_daemon(bed, ports, *, queues=None, mode="auto", local_ports=None, extra=(),
               timeout=20, set_env=True):
    """Run ``python -m fpd start -i fpd0 -p P... --socket <tmpdir>/fpd.sock`` in
    ``bed.srv_ns`` (daemonized: returns once serving) and yield a :class:`Daemon`.

    ``local_ports``: (lo, hi) or "lo-hi". ``extra``: more ``fpd start`` arguments.
    ``set_env``: set ``FPD_SOCKET`` in this process's environment for the body.
    Always stops the daemon and cleans up (see the module doc)."""
    tmpdir = tempfile.mkdtemp(prefix="fpd-test-")
    os.chmod(tmpdir, 0o755)
    sock = os.path.join(tmpdir, "fpd.sock")
    d = Daemon(bed, sock, os.path.join(tmpdir, "fpd.log"))
    reserved_before = _read_reserved(bed)
    argv = ["start", "-i", bed.srv_if, "--mode", mode, "--log", d.log]
    for p in ([ports] if isinstance(ports, int) else ports):
        argv += ["-p", str(p)]
    if queues is not None:
        argv += ["--queues", str(queues)]
    if local_ports is not None:
        if not isinstance(local_ports, str):
            local_ports = f"{local_ports[0]}-{local_ports[1]}"
        argv += ["--local-ports", local_ports]
    argv += list(extra)
    old_env = os.environ.get("FPD_SOCKET")
    problems: list[str] = []
    body_failed = False
    try:
        p = d.cli(*argv, check=False, timeout=timeout + 10)
        d.pid = _pid_from_file(sock + ".pid")
        if p.returncode != 0:
            left = _teardown(d, reserved_before)     # a failed start must leave nothing
            extra_text = ("\nand it did not clean up:\n  " + "\n  ".join(left)) if left else ""
            raise DaemonError(f"fpd start failed ({p.returncode}):\nstdout: {p.stdout}\n"
                              f"stderr: {p.stderr}\nlog:\n{d.log_text()}{extra_text}")
        if not d.pid:
            raise DaemonError(f"fpd start succeeded but wrote no pid file: {p.stdout}")
        with contextlib.suppress(DaemonError):
            d.workers = [w["pid"] for w in d.status().get("workers", []) if w.get("pid")]
        if set_env:
            os.environ["FPD_SOCKET"] = sock
        try:
            yield d
        except BaseException:
            body_failed = True
            raise
    finally:
        if set_env:
            if old_env is None:
                os.environ.pop("FPD_SOCKET", None)
            else:
                os.environ["FPD_SOCKET"] = old_env
        problems += _teardown(d, reserved_before)
        shutil.rmtree(tmpdir, ignore_errors=True)
    if problems and not body_failed:
        raise DaemonError("fpd did not clean up:\n  " + "\n  ".join(problems))


def _teardown(d: Daemon, reserved_before: str) -> list[str]:
    """Stop the daemon by every means necessary; return what was wrong."""
    problems = []
    bed = d.bed
    if not d.pid:
        d.pid = _pid_from_file(d.socket + ".pid")
    if d.alive():
        try:
            p = d.cli("stop", "--timeout", "8", check=False, timeout=15)
            if p.returncode != 0:
                problems.append(f"fpd stop failed ({p.returncode}): {p.stderr.strip()}")
        except subprocess.TimeoutExpired:
            problems.append("fpd stop hung")
        left = _wait_gone([d.pid], 5)
        if left:
            problems.append(f"daemon pid {d.pid} still alive 5 s after fpd stop: SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.kill(d.pid, signal.SIGKILL)
            _wait_gone([d.pid], 3)
    # workers die with the supervisor (PDEATHSIG); make sure
    left = _wait_gone(d.workers, 3)
    for pid in left:
        problems.append(f"worker pid {pid} outlived the daemon: SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    leftovers = [s for s in ("", ".pid", ".state") if os.path.exists(d.socket + s)]
    try:
        prog = _xdp_prog_on(bed)
    except Exception as e:
        prog = 0
        if "does not exist" not in str(e):    # the interface is gone: nothing attached
            problems.append(f"cannot query XDP on {bed.srv_if}: {e}")
    try:
        reserved_now = _read_reserved(bed)
    except Exception as e:
        reserved_now = reserved_before
        problems.append(f"cannot read {RESERVED}: {e}")
    if prog or leftovers or reserved_now != reserved_before:
        if prog:
            problems.append(f"XDP program id {prog} left on {bed.srv_if}")
        for s in leftovers:
            problems.append(f"{d.socket + s} left behind")
        if reserved_now != reserved_before:
            problems.append(f"reserved ports {reserved_now!r}, were {reserved_before!r}")
        p = d.cli("stop", "--force", "-i", bed.srv_if, check=False, timeout=15)
        if p.returncode != 0:
            problems.append(f"fpd stop --force failed ({p.returncode}): {p.stderr.strip()}")
        # last resort, whatever the CLI managed
        with contextlib.suppress(Exception):
            if _xdp_prog_on(bed):
                from fpd.bpf import force_detach
                with bed.inside(bed.srv_ns):
                    force_detach(bed.srv_if)
        with contextlib.suppress(Exception):
            if _read_reserved(bed) != reserved_before:
                bed.run(bed.srv_ns, ["sh", "-c", f"echo '{reserved_before}' > {RESERVED}"])
        for s in ("", ".pid", ".state"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(d.socket + s)
    if problems:
        log = d.log_text()
        if log:
            problems.append("daemon log (tail):\n" + "\n".join(log.splitlines()[-40:]))
    return problems
