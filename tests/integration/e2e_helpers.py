"""Helpers for the end-to-end tests (tests/integration/test_e2e.py): application
processes started from this test (always killed by their PID), the standard-socket
programs of examples/ moved onto fpd by changing their import line, nftables loss in
the peer namespace, kernel-side sockets, and failure messages that say what happened."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "fpd" / "examples"
STD_IMPORT = "import socket"
FPD_IMPORT = "from fpd import client as socket"
TCP_CLOSE, TCP_CLOSE_WAIT = 7, 8          # tcp_info.tcpi_state


# ----------------------------------------------------------------------- programs ----
def moved_to_fpd(example: str, dest_dir: str) -> str:
    """``examples/<example>`` with its one ``import socket`` line replaced by
    ``from fpd import client as socket`` (nothing else changed), written to ``dest_dir``.
    Returns the new path."""
    src = (EXAMPLES / example).read_text()
    lines = src.split("\n")
    hits = [i for i, line in enumerate(lines) if line.rstrip() == STD_IMPORT]  # code, not docs
    assert len(hits) == 1, (f"examples/{example} should have exactly one line "
                            f"{STD_IMPORT!r}, found {len(hits)}")
    lines[hits[0]] = lines[hits[0]].replace(STD_IMPORT, FPD_IMPORT)
    dest = os.path.join(dest_dir, f"fpd_{example}")
    Path(dest).write_text("\n".join(lines))
    return dest


class App:
    """A program started by this test (its own process, output to files).

    ``argv`` runs in the root namespace, or in ``ns`` of ``bed`` (``ip netns exec``
    execs the program, so the PID is the program's). Stopped by PID only."""

    def __init__(self, name: str, argv: list[str], tmpdir: str, env=None, bed=None,
                 ns=None, stdin=subprocess.DEVNULL):
        self.name = name
        self.out_path = os.path.join(tmpdir, f"{name}.out")
        self.err_path = os.path.join(tmpdir, f"{name}.err")
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        kw = dict(stdout=self._out, stderr=self._err, stdin=stdin, env=env,
                  cwd=str(REPO), start_new_session=True)
        if bed is not None and ns is not None:
            self.proc = bed.popen(ns, argv, **kw)
        else:
            self.proc = subprocess.Popen(argv, **kw)
        self.pid = self.proc.pid

    def output(self) -> str:
        self._out.flush()
        try:
            return Path(self.out_path).read_text(errors="replace")
        except OSError:
            return ""

    def errors(self) -> str:
        try:
            return Path(self.err_path).read_text(errors="replace")
        except OSError:
            return ""

    def describe(self, tail: int = 25) -> str:
        rc = self.proc.poll()
        state = "running" if rc is None else f"exited {rc}"
        out = "\n    ".join(self.output().splitlines()[-tail:])
        err = "\n    ".join(self.errors().splitlines()[-tail:])
        return (f"[{self.name} pid {self.pid} {state}]\n  stdout:\n    {out}\n"
                f"  stderr:\n    {err}")

    def wait_for(self, pattern: str, timeout: float = 15.0) -> re.Match:
        """Wait until stdout matches ``pattern`` (regex); fail with the output if the
        program exits first or the time runs out."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern, re.M)
        while True:
            m = rx.search(self.output())
            if m:
                return m
            if self.proc.poll() is not None:
                m = rx.search(self.output())
                if m:
                    return m
                raise AssertionError(f"{self.name} exited before printing {pattern!r}:\n"
                                     f"{self.describe()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not print {pattern!r} within "
                                     f"{timeout:.0f} s:\n{self.describe()}")
            time.sleep(0.02)

    def send_line(self, text: str) -> None:
        self.proc.stdin.write((text + "\n").encode())
        self.proc.stdin.flush()

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def stop(self, timeout: float = 3.0) -> None:
        """SIGTERM, then SIGKILL; reaped. Idempotent."""
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(5)
        for f in (self._out, self._err):
            with contextlib.suppress(Exception):
                f.close()
        if self.proc.stdin:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()


@contextlib.contextmanager
def apps():
    """A list to append :class:`App` objects to; every one is stopped at the end."""
    started: list[App] = []
    try:
        yield started
    finally:
        for a in reversed(started):
            with contextlib.suppress(Exception):
                a.stop()


def fpd_env(d) -> dict:
    env = dict(os.environ, FPD_SOCKET=d.socket, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# ------------------------------------------------------------------ daemon facts ----
def sum_stack(stats: dict, name: str, part: str = "stack") -> int:
    """``name`` summed over the workers' ``part`` (stack: engine counters; service: the
    worker's client service counters)."""
    return sum(int((w.get(part) or {}).get(name, 0)) for w in stats.get("workers", []))


def brief_stats(stats) -> str:
    """The counters that explain an end-to-end failure, compactly."""
    if not isinstance(stats, dict):
        return repr(stats)
    keep = ("rx_frames", "tx_frames", "malformed", "no_neigh_drops", "no_route_drops",
            "tx_backlog_drops", "tx_errors", "clients", "slots_in_use")
    skeep = ("connections", "passive_opens", "active_opens", "retransmits",
             "fast_retransmits", "rto_timeouts", "rst_in", "rst_out", "segs_in",
             "segs_out", "ooo_queued", "syn_drops", "conn_limit_drops", "internal_errors")
    ws = []
    for w in stats.get("workers", []):
        d = {k: w[k] for k in keep if k in w}
        d["q"] = w.get("queue")
        st = w.get("stack", {})
        d["stack"] = {k: st[k] for k in skeep if st.get(k)}
        d["service"] = {k: v for k, v in (w.get("service") or {}).items() if v}
        ws.append(d)
    return json.dumps({"xdp": stats.get("xdp"), "drops": stats.get("drops"), "workers": ws},
                      default=str)


def diag(d, *apps_) -> str:
    """Last stats, connections and logs of the daemon and of the given apps."""
    parts = []
    if d is not None:
        try:
            parts.append("stats: " + brief_stats(d.stats()))
        except Exception as e:
            parts.append(f"stats: unavailable ({e})")
        try:
            c = d.conns()
            parts.append(f"conns: {len(c.get('conns', []))} connections, listeners "
                         f"{c.get('listeners')}")
        except Exception as e:
            parts.append(f"conns: unavailable ({e})")
        log = d.log_text().splitlines()[-20:]
        parts.append("daemon log (tail):\n    " + "\n    ".join(log))
    for a in apps_:
        if a is not None:
            parts.append(a.describe())
    return "\n".join(parts)


# ------------------------------------------------------------------ kernel side ----
def kconnect(bed, port: int, timeout: float = 10.0, host=None, d=None,
             apps_=()) -> socket.socket:
    """A kernel TCP connection from the peer namespace. With ``d`` (a daemon), a failure
    to connect is an AssertionError that carries the daemon's stats and log and the
    output of ``apps_``."""
    s = bed.socket(bed.peer_ns)
    s.settimeout(timeout)
    try:
        s.connect((host or bed.srv_ip, port))
    except OSError as e:
        s.close()
        if d is None:
            raise
        raise AssertionError(f"kernel connect to {host or bed.srv_ip}:{port}: {e!r}\n"
                             f"{diag(d, *apps_)}") from e
    except BaseException:
        s.close()
        raise
    return s


def alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def tcp_state(sock) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def echo_roundtrip(sock, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` (no shutdown) and read exactly as many bytes back."""
    sock.settimeout(timeout)
    out = threading.Thread(target=sock.sendall, args=(data,), daemon=True)
    out.start()
    got = bytearray()
    try:
        while len(got) < len(data):
            d = sock.recv(min(1 << 20, len(data) - len(got)))
            if not d:
                break
            got += d
    finally:
        out.join(timeout)
    return bytes(got)


def recv_to_eof(sock, limit: int = 1 << 30) -> bytes:
    got = bytearray()
    while len(got) < limit:
        d = sock.recv(1 << 20)
        if not d:
            break
        got += d
    return bytes(got)


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def file_sha(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------- nftables -----
def nft_loss(bed, *, table: str, hook: str, match: str, mod: int = 20) -> None:
    """Drop 1 in ``mod`` packets matching ``match`` in ``hook`` of the peer namespace
    (a counter shows how many). The table lives in the namespace: it goes with it."""
    rules = f"""
table inet {table} {{
    chain c {{ type filter hook {hook} priority 0;
        {match} numgen random mod {mod} == 0 counter drop; }}
}}
"""
    bed.run(bed.peer_ns, ["nft", "-f", "-"], input=rules)


def nft_drops(bed, table: str) -> int:
    listed = bed.run(bed.peer_ns, ["nft", "list", "table", "inet", table]).stdout
    return sum(int(x) for x in re.findall(r"counter packets (\d+)", listed))


# ------------------------------------------------- programs run as subprocesses ----
# A server that accepts one connection and blocks in recv() on it; prints how recv()
# ended. argv: PORT [kernel] (kernel: the standard socket module, for reference).
BLOCKED_RECV = r'''
import sys, time
if sys.argv[2:] == ["kernel"]:
    import socket
else:
    from fpd import client as socket
port = int(sys.argv[1])
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.bind(("0.0.0.0", port))
srv.listen(4)
print("listening", flush=True)
c, addr = srv.accept()
print("accepted", addr, flush=True)
t0 = time.monotonic()
try:
    data = c.recv(100)
except OSError as e:
    print(f"ERROR {type(e).__name__} errno={e.errno} after {time.monotonic() - t0:.2f}s: {e}",
          flush=True)
    sys.exit(0)
except BaseException as e:
    print(f"OTHER {type(e).__name__}: {e}", flush=True)
    sys.exit(2)
print(f"RETURNED {data!r} after {time.monotonic() - t0:.2f}s", flush=True)
sys.exit(3)
'''

# A client that scribbles over its shared memory. argv: PORT [tx|commands].
# It finds its regions through /proc/self/fd (memfds with the fpd magic). "tx": finds the
# slot of its first connection by the addresses in the slot control line and writes a TX
# producer index far beyond the ring, then asks for a shutdown (the daemon drains TX: it
# must read that index). "commands": the same to the command ring's producer index (a
# region-wide ring, read by the daemon on every turn). Its second connection is then
# echoed to EOF.
CORRUPTER = r'''
import mmap, os, struct, sys, time
from fpd import client as socket
from fpd import shm
port = int(sys.argv[1])
mode = sys.argv[2] if len(sys.argv) > 2 else "tx"
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.bind(("0.0.0.0", port))
srv.listen(4)
print("listening", flush=True)
conns = []
for i in range(2):
    c, addr = srv.accept()
    line = c.recv(100)
    c.sendall(line)
    conns.append((c, addr))
    print("accepted", i, addr, flush=True)
print("ready", flush=True)
sys.stdin.readline()
victim, vaddr = conns[0]
vport = vaddr[1]

def regions():
    seen = set()        # one region may be open under several fds: map each once
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "memfd:" not in target:
            continue
        fd = int(fd)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        size = st.st_size
        if size < shm.HEADER.size:
            continue
        m = mmap.mmap(fd, size)
        if m[:8] != shm.MAGIC:
            m.close()
            continue
        yield fd, m

hits = []
for fd, m in regions():
    h = shm.HEADER.unpack_from(m, 0)
    nslots, cmd_hdr_off, ctl_off = h[6], h[14], h[17]
    if mode == "commands":          # region-wide: the command ring's producer index
        prod = struct.unpack_from("=Q", m, cmd_hdr_off)[0]
        struct.pack_into("=Q", m, cmd_hdr_off, (prod + (1 << 40)) & (2**64 - 1))
        hits.append((fd, "commands", prod))
        continue
    slot_size = shm.SLOT_CTL_SIZE
    for i in range(nslots):
        off = ctl_off + i * slot_size
        state = struct.unpack_from("=I", m, off)[0]
        laddr, lport, raddr, rport = shm.CTL_ADDRS.unpack_from(m, off + shm.CTL_ADDRS_OFF)
        if state == 2 and rport == vport:
            tx = off + shm.SLOT_TX_HDR
            prod = struct.unpack_from("=Q", m, tx)[0]
            struct.pack_into("=Q", m, tx, (prod + (1 << 40)) & (2**64 - 1))
            hits.append((fd, i, prod))
print("corrupted", hits, flush=True)
if mode == "commands":
    # no more library calls: the next command would overwrite the scribble. The daemon
    # reads the command ring on its next turn (the test sends a segment to wake it).
    sys.stdin.readline()
    sys.exit(0)
if len(hits) != 1:
    print("FAILED to find exactly one slot for port", vport, flush=True)
    sys.exit(4)
t0 = time.monotonic()
try:
    victim.shutdown(socket.SHUT_WR)
    d = victim.recv(100)
    print(f"victim recv returned {d!r} after {time.monotonic() - t0:.2f}s", flush=True)
except OSError as e:
    print(f"victim ERROR {type(e).__name__} errno={e.errno} after "
          f"{time.monotonic() - t0:.2f}s: {e}", flush=True)
other = conns[1][0]
n = 0
try:
    while True:
        d = other.recv(65536)
        if not d:
            break
        other.sendall(d)
        n += len(d)
    other.close()
    print(f"other echoed {n}", flush=True)
except OSError as e:
    print(f"other ERROR {type(e).__name__} errno={e.errno} after {n} bytes: {e}", flush=True)
print("done", flush=True)
'''

# An fpd client fetching a URL from a kernel HTTP server (HTTP/1.0, to EOF): prints the
# status line, the body length and its SHA-256.
HTTP_FETCH = r'''
import hashlib, sys
from fpd import client as socket
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.create_connection((host, port), timeout=20) \
    if hasattr(socket, "create_connection") else None
if s is None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.connect((host, port))
s.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
buf = bytearray()
while True:
    d = s.recv(1 << 20)
    if not d:
        break
    buf += d
s.close()
head, _, body = bytes(buf).partition(b"\r\n\r\n")
print("STATUS", head.split(b"\r\n")[0].decode(errors="replace"), flush=True)
print("BODY", len(body), hashlib.sha256(body).hexdigest(), flush=True)
'''


def write_script(tmpdir: str, name: str, text: str) -> str:
    p = os.path.join(tmpdir, name)
    Path(p).write_text(text)
    return p


def python() -> str:
    return sys.executable


class Duplex:
    """Send ``out`` on a kernel socket while reading what comes back, then half-close
    and read to EOF. ``run()`` returns self; ``n``, ``digest``, ``error``, ``sent`` and
    ``secs`` say what happened (for failure messages)."""

    def __init__(self, sock, out: bytes, timeout: float = 60.0, shut: bool = True):
        self.sock = sock
        self.out = out
        self.timeout = timeout
        self.shut = shut
        self.h = hashlib.sha256()
        self.n = 0
        self.sent = 0
        self.error = None
        self.send_error = None
        self.eof = False
        self.secs = 0.0

    def _reader(self):
        try:
            while True:
                d = self.sock.recv(1 << 20)
                if not d:
                    self.eof = True
                    break
                self.h.update(d)
                self.n += len(d)
        except OSError as e:
            self.error = e

    def run(self) -> "Duplex":
        t0 = time.monotonic()
        self.sock.settimeout(self.timeout)
        r = threading.Thread(target=self._reader, daemon=True)
        r.start()
        mv = memoryview(self.out)
        try:
            while self.sent < len(mv):
                self.sent += self.sock.send(mv[self.sent:self.sent + (1 << 20)])
            if self.shut:
                self.sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            self.send_error = e
        r.join(self.timeout)
        self.secs = time.monotonic() - t0
        if r.is_alive() and self.error is None:
            self.error = TimeoutError(f"no EOF within {self.timeout} s")
        return self

    @property
    def digest(self) -> str:
        return self.h.hexdigest()

    def __str__(self):
        return (f"sent {self.sent}/{len(self.out)} bytes (send error {self.send_error!r}), "
                f"received {self.n} bytes, eof={self.eof}, error {self.error!r}, "
                f"{self.secs:.1f} s")
