"""``fpd bench``: fpd against the kernel's TCP, side by side, in one run.

Three *variants* serve the same application (``fpd/bench_app.py``: one function that takes
the socket module as a parameter) to the same load generator (Python, the kernel's
TCP, in the peer namespace of a test bed):

    kernel       the app on the standard ``socket`` module, no XDP program attached
    kernel+xdp   the same, with fpd's XDP program (fpd_steer) attached to the server's
                 interface, no port steered: every frame is XDP_PASSed to the kernel
                 (native XDP on veth costs the kernel TSO/GRO: docs/PERFORMANCE.md)
    fpd          the app on ``fpd.client``; the fpd daemon serves the port

Each variant has a test bed of its own (two namespaces, one veth pair), all three made
alike, so they never disturb one another and each gets the same interface setup. The
measurements are interleaved: for every round, every workload is measured on every
variant (the variants' order rotates each round), and the report gives the median and
min-max over the rounds, and the ratios fpd/kernel and fpd/kernel+xdp.

    fpd bench [--rounds 5] [--duration 2] [--idle 2000] [--quick]
              [--json FILE] [--png FILE] [--cpus APP,LOADGEN,DAEMON | --no-pin]

docs/PERFORMANCE.md says what every number means and how it is counted.
"""

from __future__ import annotations

import array
import contextlib
import dataclasses
import datetime as _dt
import errno
import json
import os
import platform
import resource
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]     # holds the fpd package: the checkout or site-packages
APPS = Path(__file__).resolve().parent / "bench_app.py"
COUNT = struct.Struct("!Q")
CLK_TCK = os.sysconf("SC_CLK_TCK")

VARIANTS = ("kernel", "kernel+xdp", "fpd")

# name -> (load generator command, description)
IDLE_SETTLE = 2.5                  # seconds idle connections are held before measuring
IDLE_CPU_SECONDS = 2.0             # then the server's CPU is counted for this long
IDLE_SRC_NET, IDLE_SRC_BASE = "10.77.0", 10    # idle load generators' source addresses
FD_MARGIN = 1000                   # fds a server or load generator keeps for the rest


def fd_cap() -> int:
    """Connections one process may hold here: RLIMIT_NOFILE's hard limit less a margin."""
    return max(1, resource.getrlimit(resource.RLIMIT_NOFILE)[1] - FD_MARGIN)


def kernel_app_procs(idle: int) -> int:
    """Processes the kernel variants' app needs for ``idle`` connections: each holds an
    fd per connection, and SO_REUSEPORT spreads them by hash, so each is given a
    quarter of room to spare."""
    return max(1, -(-idle // max(1, fd_cap() * 3 // 4)))

WORKLOADS = {
    "bulk_up": ({"op": "bulk_up"}, "bulk peer->app, 1 connection"),
    "bulk_down": ({"op": "bulk_down"}, "bulk app->peer, 1 connection"),
    "rr_1B_1c": ({"op": "rr", "size": 1, "conns": 1}, "request/response 1 B, 1 connection"),
    "rr_1K_1c": ({"op": "rr", "size": 1024, "conns": 1},
                 "request/response 1 KiB, 1 connection"),
    "rr_1B_32c": ({"op": "rr", "size": 1, "conns": 32},
                  "request/response 1 B, 32 connections"),
    "rr_1K_32c": ({"op": "rr", "size": 1024, "conns": 32},
                  "request/response 1 KiB, 32 connections"),
    "crr": ({"op": "crr"}, "connect-request(1 B)-response-close"),
    "idle": ({"op": "idle_open"}, "idle connections held"),
}

# workload -> [(metric, unit, higher_is_better)]
_RR = [("tps", "trans/s", True), ("p50_us", "us", False), ("p99_us", "us", False)]
METRICS = {
    "bulk_up": [("gbps", "Gbit/s", True), ("cpu_s_per_gb", "CPU s/GB", False)],
    "bulk_down": [("gbps", "Gbit/s", True), ("cpu_s_per_gb", "CPU s/GB", False)],
    "rr_1B_1c": _RR, "rr_1K_1c": _RR, "rr_1B_32c": _RR, "rr_1K_32c": _RR,
    "crr": [("cps", "conn/s", True), ("p50_us", "us", False)],
    "idle": [("held", "conns", True), ("bytes_per_conn", "B/conn", False),
             ("bytes_per_conn_open", "B/conn", False), ("rr_answered", "conns", True)],
}


@dataclasses.dataclass
class Config:
    rounds: int = 5
    duration: float = 2.0            # seconds per timed measurement
    idle: int = 2000                 # idle connections asked for
    idle_rr: int = 1000              # of them, request/response on at most this many
    idle_per_loadgen: int = 16000    # connections per load generator process (fd limit)
    idle_window: int = 32            # connects in flight per load generator
    idle_rate: float = 0.0           # new connections per second per load generator (0: any)
    kernel_procs: int = 0            # kernel variants' app processes (0: as the fd limit needs)
    quick: bool = False
    json: str | None = None
    png: str | None = None
    mode: str = "native"             # XDP mode for kernel+xdp and fpd
    port: int = 5001
    pin: bool = True
    cpu_app: int = 0
    cpu_loadgen: int = 0
    cpu_daemon: int = 1
    variants: tuple = VARIANTS
    workloads: tuple = tuple(WORKLOADS)
    crr_max: int = 50000             # connections per crr measurement, at most
    peer_offloads: bool = True       # veth defaults on the peer (TSO, tx checksum)
    mtu: int = 1500                  # MTU of the test bed's veth pair (both variants)
    frags: bool = False              # multi-buffer: the xdp.frags program for kernel+xdp
                                     # and fpd, fpd's sockets with XDP_USE_SG
    verbose: bool = True
    keep_logs: bool = False

    @classmethod
    def quick_config(cls, **kw) -> "Config":
        base = dict(rounds=2, duration=0.25, idle=200, quick=True, crr_max=2000)
        base.update(kw)
        return cls(**base)


class BenchError(RuntimeError):
    pass


class Unavailable(BenchError):
    """A variant cannot run at all (e.g. the fpd daemon does not start)."""


# =========================================================================================
# The load generator (runs in the peer namespace: python -m fpd.bench --loadgen)
# =========================================================================================
_BLOCK = memoryview(bytes(range(256)) * 1024)      # 256 KiB


def _recv_exact(s, view) -> None:
    got, n = 0, len(view)
    while got < n:
        k = s.recv_into(view[got:])
        if not k:
            raise ConnectionError("the server closed the connection")
        got += k


def _pct(sorted_ns, q: float) -> float:
    if not sorted_ns:
        return 0.0
    i = min(len(sorted_ns) - 1, int(len(sorted_ns) * q))
    return sorted_ns[i] / 1000.0


def _nodelay(s) -> None:
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _lg_bulk_up(addr, seconds):
    s = socket.create_connection(addr, timeout=30)
    try:
        s.sendall(b"U")
        n = 0
        t0 = time.perf_counter()
        end = t0 + seconds
        while time.perf_counter() < end:
            s.sendall(_BLOCK)
            n += len(_BLOCK)
        s.shutdown(socket.SHUT_WR)
        got = bytearray(8)
        _recv_exact(s, memoryview(got))
        dt = time.perf_counter() - t0
        counted = COUNT.unpack(got)[0]
        if counted != n:
            return {"ok": False, "error": f"server counted {counted} bytes, sent {n}"}
        return {"ok": True, "bytes": n, "seconds": dt}
    finally:
        s.close()


def _lg_bulk_down(addr, seconds):
    s = socket.create_connection(addr, timeout=30)
    try:
        buf = bytearray(1 << 20)
        s.sendall(b"D")
        total = 0
        t0 = time.perf_counter()
        end = t0 + seconds
        while time.perf_counter() < end:
            k = s.recv_into(buf)
            if not k:
                return {"ok": False, "error": "the server closed the download early"}
            total += k
        dt = time.perf_counter() - t0
        return {"ok": True, "bytes": total, "seconds": dt}
    finally:
        # unread data: close() sends RST, which ends the server's sendall
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()


def _lg_rr(addr, size, conns, seconds):
    msg = b"x" * size
    buf = bytearray(max(size, 1))
    view = memoryview(buf)[:size]
    socks = []
    try:
        for _ in range(conns):
            s = socket.create_connection(addr, timeout=10)
            _nodelay(s)
            socks.append(s)
            s.sendall(b"E" + msg)          # first transaction: picks the service, warms up
            _recv_exact(s, view)
        lat = array.array("q")
        if conns == 1:
            s = socks[0]
            for _ in range(20):
                s.sendall(msg)
                _recv_exact(s, view)
            clock = time.perf_counter_ns
            t0 = clock()
            end = t0 + int(seconds * 1e9)
            now = t0
            while now < end:
                a = clock()
                s.sendall(msg)
                _recv_exact(s, view)
                now = clock()
                lat.append(now - a)
            elapsed = (now - t0) / 1e9
        else:
            elapsed = _rr_many(socks, msg, seconds, lat)
        srt = sorted(lat)
        return {"ok": True, "count": len(lat), "seconds": elapsed,
                "p50_us": _pct(srt, 0.50), "p99_us": _pct(srt, 0.99)}
    finally:
        for s in socks:
            s.close()


def _rr_many(socks, msg, seconds, lat) -> float:
    size = len(msg)
    ep = select.epoll()
    st = {}
    clock = time.perf_counter_ns
    try:
        for s in socks:
            s.setblocking(False)
            ep.register(s.fileno(), select.EPOLLIN)
            st[s.fileno()] = [s, 0, 0]
        t0 = clock()
        end = t0 + int(seconds * 1e9)
        hard = end + int(10e9)
        for e in st.values():
            e[2] = clock()
            _send_all_nb(e[0], msg)
        active = len(st)
        last = t0
        while active:
            evs = ep.poll(0.5)
            if clock() > hard:
                raise TimeoutError(f"{active} connections without an answer for 10 s")
            for fd, _ in evs:
                e = st[fd]
                try:
                    d = e[0].recv(65536)
                except BlockingIOError:
                    continue
                if not d:
                    raise ConnectionError("the server closed a connection")
                e[1] += len(d)
                if e[1] >= size:
                    e[1] -= size
                    now = clock()
                    lat.append(now - e[2])
                    last = now
                    if now < end:
                        e[2] = now
                        _send_all_nb(e[0], msg)
                    else:
                        active -= 1
        return (last - t0) / 1e9
    finally:
        ep.close()


def _send_all_nb(s, msg) -> None:
    try:
        n = s.send(msg)
    except BlockingIOError:
        n = 0
    if n < len(msg):
        s.setblocking(True)
        try:
            s.sendall(msg[n:])
        finally:
            s.setblocking(False)


def _lg_crr(addr, seconds, max_count):
    clock = time.perf_counter_ns
    lat = array.array("q")
    one = bytearray(1)
    view = memoryview(one)
    t0 = clock()
    end = t0 + int(seconds * 1e9)
    now = t0
    while now < end and len(lat) < max_count:
        a = clock()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.settimeout(10)
            _nodelay(s)
            s.connect(addr)
            s.sendall(b"Ex")
            _recv_exact(s, view)
        finally:
            s.close()                 # the client closes first (its TIME_WAIT, tw_reuse)
        now = clock()
        lat.append(now - a)
    srt = sorted(lat)
    return {"ok": True, "count": len(lat), "seconds": (now - t0) / 1e9,
            "p50_us": _pct(srt, 0.5), "p99_us": _pct(srt, 0.99)}


_held: list = []
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
_TCP_INFO = struct.Struct("8B24I")         # tcpi_state ... tcpi_total_retrans (struct tcp_info)
_TCP_ESTABLISHED = 1


def _tcp_info(s) -> tuple:
    """(state, unacked) of a kernel TCP socket (TCP_INFO)."""
    raw = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO.size)
    v = _TCP_INFO.unpack(raw[:_TCP_INFO.size])
    return v[0], v[12]


def _lg_idle_open(addr, n, seconds, src=None, window=32, rate=0.0):
    """Open up to n connections, at most ``window`` at a time (and at most ``rate`` new
    ones per second if set), each from ``src`` (an address of the peer, for the ports:
    each source address has its own ephemeral range) and each answered by the app
    (b"i"); stop at the first failure or after ``seconds``. They stay open until
    idle_close."""
    if _held:                         # left over from a failed measurement
        _lg_idle_close(addr, release=False)
    err = None
    t0 = time.perf_counter()
    end = t0 + seconds
    ep = select.epoll()
    pending: dict = {}                # fd -> [socket, stage (0 connecting, 1 answer), deadline]
    interval = 1.0 / rate if rate else 0.0
    next_at = t0
    window = max(1, int(window))
    try:
        while err is None and (len(_held) + len(pending) < n or pending):
            now = time.perf_counter()
            if now > end:
                err = f"time limit {seconds:g} s with {len(_held)} open"
                break
            while (len(_held) + len(pending) < n and len(pending) < window
                   and (not interval or now >= next_at)):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    s.setblocking(False)
                    if src:
                        s.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
                        s.bind((src, 0))
                    e = s.connect_ex(addr)
                    if e not in (0, errno.EINPROGRESS):
                        raise OSError(e, os.strerror(e))
                except OSError as ex:
                    s.close()
                    err = f"connection {len(_held) + len(pending) + 1}: {type(ex).__name__}: {ex}"
                    break
                pending[s.fileno()] = [s, 0, now + 10.0]
                ep.register(s.fileno(), select.EPOLLOUT)
                next_at = max(next_at + interval, now - 1.0) if interval else now
            if err is not None:
                break
            for fd, _ in ep.poll(0.02):
                p = pending.get(fd)
                if p is None:
                    continue
                s = p[0]
                try:
                    if p[1] == 0:
                        e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if e:
                            raise OSError(e, os.strerror(e))
                        if s.send(b"I") != 1:
                            raise ConnectionError("could not send the first byte")
                        p[1] = 1
                        ep.modify(fd, select.EPOLLIN)
                    else:
                        one = s.recv(1)
                        if one != b"i":
                            raise ConnectionError(f"unexpected answer {one!r}")
                        ep.unregister(fd)
                        del pending[fd]
                        _held.append(s)
                except OSError as ex:
                    err = f"connection {len(_held) + 1}: {type(ex).__name__}: {ex}"
                    break
            if pending and err is None:
                now = time.perf_counter()
                late = [p for p in pending.values() if now > p[2]]
                if late:
                    err = f"{len(late)} connections unanswered for 10 s ({len(_held)} open)"
    finally:
        for p in pending.values():
            p[0].close()
        pending.clear()
        ep.close()
    return {"ok": True, "held": len(_held), "asked": n,
            "seconds": time.perf_counter() - t0, "stopped_by": err}


def _lg_idle_rr(addr, count, rounds=10, size=16, seconds=60.0, ctl_ports=None):
    """Request/response on ``count`` of the held connections, spread evenly over them:
    the app is told their addresses (W), puts an echo thread on each, and every one of
    them answers ``rounds`` messages (distinct per connection and round), all at once
    over epoll. The others stay idle."""
    count = min(count, len(_held))
    if count <= 0:
        return {"ok": True, "asked": 0, "matched": 0, "answered": 0, "transactions": 0,
                "wrong": 0, "seconds": 0.0}
    step = len(_held) / count
    socks = [_held[int(i * step)] for i in range(count)]
    names = "".join("%s %d\n" % s.getsockname()[:2] for s in socks).encode()
    matched = 0
    for port in ctl_ports or [addr[1]]:       # every app process (each its own port)
        c = socket.create_connection((addr[0], port), timeout=30)
        try:
            c.sendall(b"W" + struct.pack("!I", len(names)) + names)
            got = bytearray(8)
            _recv_exact(c, memoryview(got))
            matched += COUNT.unpack(got)[0]
        finally:
            c.close()
    t0 = time.perf_counter()
    ep = select.epoll()
    st = {}
    wrong = trans = 0

    def message(i, r):
        return (b"%08d:%04d:" % (i, r)).ljust(size, b"x")[:max(size, 14)]

    try:
        for i, s in enumerate(socks):
            st[s.fileno()] = [s, i, 0, bytearray()]
            ep.register(s.fileno(), select.EPOLLIN)
            s.send(message(i, 0))
        active = len(st)
        end = t0 + seconds
        while active and time.perf_counter() < end:
            for fd, _ in ep.poll(0.2):
                e = st[fd]
                s, i, r, buf = e
                try:
                    d = s.recv(65536)
                except BlockingIOError:
                    continue
                if not d:
                    raise ConnectionError(f"connection {i} closed by the server")
                buf += d
                want = message(i, r)
                if len(buf) < len(want):
                    continue
                if bytes(buf[:len(want)]) != want:
                    wrong += 1
                del buf[:len(want)]
                trans += 1
                r += 1
                e[2] = r
                if r < rounds:
                    s.send(message(i, r))
                else:
                    ep.unregister(fd)
                    active -= 1
        answered = sum(1 for e in st.values() if e[2] >= rounds)
    finally:
        ep.close()
    return {"ok": True, "asked": count, "matched": matched, "answered": answered,
            "transactions": trans, "wrong": wrong, "seconds": time.perf_counter() - t0}


def _lg_idle_check(seconds=30.0, batch=256):
    """Every held connection: still ESTABLISHED at the peer with nothing from the
    server (no FIN, no RST, no data), then one byte sent on it, which the server's TCP
    must acknowledge (the app does not read it). The bytes go out ``batch`` connections
    at a time, each batch once the one before was acknowledged (or after 2 s): a
    burst of 16,000 one-byte segments at once would overrun the server's RX ring and
    measure retransmission instead."""
    closed = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    out = []
    for s in _held:
        try:
            if _tcp_info(s)[0] != _TCP_ESTABLISHED or s.recv(1, socket.MSG_PEEK) == b"":
                closed += 1
                continue
        except BlockingIOError:
            pass                       # open, nothing to read: as it should be
        except OSError:
            closed += 1
            continue
        out.append(s)

    def unacked(socks):
        left = []
        for s in socks:
            with contextlib.suppress(OSError):
                st, n = _tcp_info(s)
                if st == _TCP_ESTABLISHED and n:
                    left.append(s)
        return left

    waiting: list = []
    for i in range(0, len(out), batch):
        for s in out[i:i + batch]:
            try:
                s.send(b".")
            except OSError:
                closed += 1
                continue
            waiting.append(s)
        stop = min(end, time.perf_counter() + 2.0)
        while waiting and time.perf_counter() < stop:
            waiting = unacked(waiting)
            if waiting:
                time.sleep(0.002)
    while time.perf_counter() < end:
        waiting = unacked(waiting)
        if not waiting:
            break
        time.sleep(0.1)
    acked = 0
    late = []
    for s in _held:
        with contextlib.suppress(OSError):
            st, n = _tcp_info(s)
            acked += st == _TCP_ESTABLISHED and not n
            if (n or st != _TCP_ESTABLISHED) and len(late) < 8:
                v = _TCP_INFO.unpack(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO,
                                                  _TCP_INFO.size))
                late.append({"addr": "%s:%d" % s.getsockname()[:2], "state": st,
                             "unacked": n, "retransmits": v[2], "backoff": v[4],
                             "rto_us": v[8], "total_retrans": v[31]})
    return {"ok": True, "held": len(_held), "closed": closed, "acked": acked,
            "unacked_sample": late, "seconds": time.perf_counter() - t0}


def _lg_idle_close(addr, release=True, ctl_ports=None):
    for s in _held:
        s.close()                     # the client closes first: no TIME_WAIT at the app
    n = len(_held)
    _held.clear()
    if not release:
        return {"ok": True, "closed": n, "released": 0}
    released = 0
    for port in ctl_ports or [addr[1]]:       # every app process (each its own port)
        s = socket.create_connection((addr[0], port), timeout=30)
        try:
            s.sendall(b"R")
            got = bytearray(8)
            _recv_exact(s, memoryview(got))
        finally:
            s.close()
        released += COUNT.unpack(got)[0]
    return {"ok": True, "closed": n, "released": released}


def loadgen_main() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    out = sys.stdout
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd.get("op")
        if op == "quit":
            break
        addr = (cmd.get("host", "10.77.0.1"), cmd.get("port", 5001))
        try:
            if op == "ping":
                res = {"ok": True, "pid": os.getpid()}
            elif op == "bulk_up":
                res = _lg_bulk_up(addr, cmd["seconds"])
            elif op == "bulk_down":
                res = _lg_bulk_down(addr, cmd["seconds"])
            elif op == "rr":
                res = _lg_rr(addr, cmd["size"], cmd["conns"], cmd["seconds"])
            elif op == "crr":
                res = _lg_crr(addr, cmd["seconds"], cmd.get("max", 50000))
            elif op == "idle_open":
                res = _lg_idle_open(addr, cmd["n"], cmd["seconds"], cmd.get("src"),
                                    cmd.get("window", 32), cmd.get("rate", 0.0))
            elif op == "idle_rr":
                res = _lg_idle_rr(addr, cmd["count"], cmd.get("rounds", 10),
                                  cmd.get("size", 16), cmd.get("seconds", 60.0),
                                  cmd.get("ctl_ports"))
            elif op == "idle_check":
                res = _lg_idle_check(cmd.get("seconds", 30.0))
            elif op == "idle_close":
                res = _lg_idle_close(addr, cmd.get("release", True), cmd.get("ctl_ports"))
            else:
                res = {"ok": False, "error": f"unknown op {op!r}"}
        except Exception as e:  # reported to the orchestrator, which records it
            res = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(res) + "\n")
        out.flush()
    return 0


# =========================================================================================
# Accounting: CPU and memory from /proc
# =========================================================================================
def proc_cpu(pid: int) -> float:
    """utime + stime of a whole process (all its threads, living and exited), seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def system_cpu() -> dict:
    """/proc/stat's first line, seconds: user nice system idle iowait irq softirq steal."""
    with open("/proc/stat") as f:
        v = f.readline().split()[1:9]
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    return {k: int(x) / CLK_TCK for k, x in zip(names, v)}


def proc_pss(pid: int) -> int:
    """Proportional set size of a process in bytes (shared pages split among sharers)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def proc_mem(pid: int) -> dict:
    """Rss, Pss, Pss_Anon, Pss_Shmem of a process in bytes (/proc/PID/smaps_rollup)."""
    out = dict.fromkeys(("Rss", "Pss", "Pss_Anon", "Pss_Shmem"), 0)
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                k, _, rest = line.partition(":")
                if k in out:
                    out[k] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def shm_rss(pid: int, tag: str = "memfd:fpd-") -> int:
    """Resident bytes of a process's mappings of fpd's shared-memory regions (the
    memfds, /proc/PID/smaps): the ring and control pages present right now, whoever
    touched them (as mincore would say; a page-out would show here)."""
    total, inside = 0, False
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                if line[:1] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                    inside = tag in line
                elif inside and line.startswith("Rss:"):
                    total += int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return total


# The slab caches a TCP socket's memory lives in (a socket: its struct tcp_sock in "TCP",
# inode + socket in "sock_inode_cache", its file in "filp", its dentry; a listener's
# embryos in request_sock_TCP; TIME_WAIT minisockets; epoll items). The general kmalloc-*
# caches are left out: a socket takes little from them and other processes move them a
# lot (the machine-wide total is kept in the raw data as "slab_all").
SOCKET_CACHES = ("TCP", "request_sock_TCP", "tw_sock_TCP", "sock_inode_cache", "filp",
                 "dentry", "eventpoll_epi", "eventpoll_pwq")


def slab_bytes(caches=SOCKET_CACHES) -> int:
    """Bytes in use in the named slab caches (all caches if None): sum of
    active_objs x objsize from /proc/slabinfo."""
    total = 0
    with open("/proc/slabinfo") as f:
        for line in f:
            if line.startswith(("slabinfo", "#")):
                continue
            p = line.split()
            if caches is None or p[0] in caches:
                total += int(p[1]) * int(p[3])
    return total


def children_of(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append(int(d))
    return out


def _alive(pid: int) -> bool:
    from .daemon import pid_alive
    return pid_alive(pid)


def pin_all_tasks(pid: int, cpus: set) -> None:
    """sched_setaffinity for every thread of ``pid`` (new threads inherit it)."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return
    for tid in tids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, cpus)


# =========================================================================================
# The server side of a variant
# =========================================================================================
def _readline(pipe, timeout: float) -> str:
    r, _, _ = select.select([pipe], [], [], timeout)
    if not r:
        return ""
    return pipe.readline()


def _stop_proc(p: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """Stop a process started by the bench (by its PID only)."""
    if p is None or p.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            p.kill()
        p.wait(5)


class FpdDaemon:
    """``python -m fpd start`` in the bed's server namespace (daemonized), stopped with
    ``fpd stop``; SIGKILL + ``fpd stop --force`` + force_detach if that fails."""

    def __init__(self, bed, port: int, mode: str, tmpdir: str, cpu: int | None,
                 frags: bool = False):
        self.bed = bed
        self.frags = frags
        self.port = port
        self.mode = mode
        self.socket = os.path.join(tmpdir, "fpd.sock")
        self.log = os.path.join(tmpdir, "fpd.log")
        self.cpu = cpu
        self.pid = 0
        self.workers: list[int] = []

    def _argv(self, *args) -> list[str]:
        return [sys.executable, "-m", "fpd", *map(str, args)]

    def _run(self, *args, timeout=60) -> subprocess.CompletedProcess:
        return self.bed.run(self.bed.srv_ns, self._argv(*args), check=False,
                            timeout=timeout, cwd=str(ROOT),
                            env=dict(os.environ, FPD_SOCKET=self.socket))

    def log_tail(self, n: int = 30) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return "\n".join(f.read().splitlines()[-n:])
        except OSError:
            return ""

    def start(self) -> None:
        args = ["start", "-i", self.bed.srv_if, "-p", self.port, "--mode", self.mode,
                "--socket", self.socket, "--log", self.log]
        extra = os.environ.get("FPD_BENCH_CONFIG")   # an A/B hook: StackConfig overrides
        conf: dict = {}                              # etc. in fpd start's --config file
        if extra:
            with open(extra, "rb") as f:
                raw = f.read()
            if extra.endswith(".json"):
                conf = json.loads(raw)
            else:
                import tomllib
                conf = tomllib.loads(raw.decode())
        if self.frags:
            conf["worker"] = dict(conf.get("worker") or {}, sg=True)
        if conf:
            path = os.path.join(os.path.dirname(self.socket), "bench-config.json")
            with open(path, "w") as f:
                json.dump(conf, f)
            args += ["--config", path]
        argv = self._argv(*args)
        if self.cpu is not None:           # the daemon and its forked workers inherit it
            argv = ["taskset", "-c", str(self.cpu), *argv]
        try:
            p = self.bed.run(self.bed.srv_ns, argv, check=False, timeout=60, cwd=str(ROOT),
                             env=dict(os.environ, FPD_SOCKET=self.socket))
        except subprocess.TimeoutExpired:
            self._read_pid()
            raise Unavailable("fpd start did not return in 60 s")
        self._read_pid()
        if p.returncode != 0:
            raise Unavailable(f"fpd start failed ({p.returncode}): {p.stderr.strip()} "
                              f"{p.stdout.strip()}\nlog:\n{self.log_tail()}")
        if not self.pid:
            raise Unavailable(f"fpd start wrote no pid file next to {self.socket}")
        self.refresh()

    def _read_pid(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(self.socket + ".pid") as f:
                self.pid = int(f.read().split()[0])

    def refresh(self) -> None:
        if self.pid:
            self.workers = children_of(self.pid)

    def pids(self) -> list[int]:
        return ([self.pid] if self.pid else []) + list(self.workers)

    def stats(self) -> dict:
        """Counters of the daemon's workers, summed (the control socket's ``stats``):
        loop iterations, sleeps, frames, retransmits. {} if the daemon does not answer."""
        from fpd import proto
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        s.settimeout(5)
        try:
            s.connect(self.socket)
            r, _ = proto.request(s, proto.Stats())
        except (OSError, ValueError, proto.Closed):
            return {}
        finally:
            s.close()
        out: dict = {}
        for w in (r or {}).get("workers", []):
            st = w.get("stack") or {}
            xdp = w.get("xdp") or {}
            items = [(k, v) for k, v in w.items() if k not in ("stack", "xdp")]
            items += [(k, v) for k, v in st.items() if k not in w]
            items += [("xdp_" + k, v) for k, v in xdp.items()]
            for k, v in items:
                if isinstance(v, int) and not isinstance(v, bool):
                    out[k] = out.get(k, 0) + v
            for pre, d in (("xdp_", w.get("xdp") or {}), ("w_", w), ("stack_", st)):
                for k, v in d.items():
                    if isinstance(v, int) and not isinstance(v, bool):
                        out[pre + k] = out.get(pre + k, 0) + v
        return out

    def pin(self, cpus: set) -> None:
        for pid in self.pids():
            pin_all_tasks(pid, cpus)

    def alive(self) -> bool:
        return bool(self.pid) and _alive(self.pid)

    def stop(self) -> list[str]:
        problems = []
        if not self.pid:
            self._read_pid()
        pids = self.pids()
        if self.alive():
            try:
                p = self._run("stop", "--socket", self.socket, "--timeout", "8", timeout=20)
                if p.returncode != 0:
                    problems.append(f"fpd stop: {p.returncode} {p.stderr.strip()}")
            except subprocess.TimeoutExpired:
                problems.append("fpd stop hung")
        deadline = time.monotonic() + 5
        while any(_alive(q) for q in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [q for q in pids if _alive(q)]
        for q in left:
            problems.append(f"fpd process {q} still alive after fpd stop: SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.kill(q, signal.SIGKILL)
        if left or any(os.path.exists(self.socket + s) for s in ("", ".pid", ".state")):
            with contextlib.suppress(Exception):
                self._run("stop", "--force", "-i", self.bed.srv_if, "--socket", self.socket,
                          timeout=20)
        with contextlib.suppress(Exception):
            from fpd.bpf import attached_prog_id, force_detach
            with self.bed.inside(self.bed.srv_ns):
                if attached_prog_id(self.bed.srv_if):
                    problems.append("XDP program left on the interface: force_detach")
                    force_detach(self.bed.srv_if)
        return problems


class Variant:
    """One variant: its test bed, app process, load generator and (fpd) daemon."""

    def __init__(self, name: str, cfg: Config, tmpdir: str):
        self.name = name
        self.cfg = cfg
        self.tmpdir = os.path.join(tmpdir, name.replace("+", "_"))
        os.makedirs(self.tmpdir, exist_ok=True)
        os.chmod(self.tmpdir, 0o755)
        self.bed = None
        self.steering = None
        self.daemon: FpdDaemon | None = None
        self.app: subprocess.Popen | None = None
        self.loadgen: subprocess.Popen | None = None
        self.app_procs = 1             # kernel variants: app processes on one port
        self.extra_lg: list = []       # more load generators for many idle connections
        self.peer_addrs: list[str] = []    # source addresses added to the peer (idle)
        self.problems: list[str] = []

    # -- life cycle -------------------------------------------------------------------
    def _taskset(self, cpu: int) -> list[str]:
        return ["taskset", "-c", str(cpu)] if self.cfg.pin else []

    def start(self, namespaces: list | None = None) -> None:
        from fpd.testbed import TestBed
        cfg = self.cfg
        self.bed = TestBed(peer_tx_csum=cfg.peer_offloads, peer_tso=cfg.peer_offloads,
                           mtu=cfg.mtu)
        if namespaces is not None:
            namespaces += [self.bed.srv_ns, self.bed.peer_ns]
        self.bed.up()
        # the load generator makes many short connections: reuse its TIME_WAIT ports
        self.bed.run(self.bed.peer_ns, ["sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1",
                                        "net.ipv4.ip_local_port_range=10000 65000"])
        if self.name == "kernel+xdp":
            from fpd.bpf import Steering
            with self.bed.inside(self.bed.srv_ns):
                self.steering = Steering(self.bed.srv_if, mode=cfg.mode,
                                         frags=True if cfg.frags else None)
        elif self.name == "fpd":
            self.daemon = FpdDaemon(self.bed, cfg.port, cfg.mode, self.tmpdir,
                                    cfg.cpu_daemon if cfg.pin else None, frags=cfg.frags)
            self.daemon.start()
            if cfg.pin:
                self.daemon.pin({cfg.cpu_daemon})
        self.start_app()
        self.start_loadgen()

    def affinity(self) -> dict:
        """The CPUs each of the variant's processes (all their threads) may run on."""
        procs = {"app": [self.app.pid], "loadgen": [self.loadgen.pid]}
        if self.daemon is not None:
            self.daemon.refresh()
            procs["daemon"] = self.daemon.pids()
        out = {}
        for role, pids in procs.items():
            cpus = set()
            for pid in pids:
                with contextlib.suppress(OSError):
                    for tid in os.listdir(f"/proc/{pid}/task"):
                        with contextlib.suppress(OSError):
                            cpus |= os.sched_getaffinity(int(tid))
            out[role] = sorted(cpus)
        return out

    def start_app(self) -> None:
        cfg = self.cfg
        module = "fpd.client" if self.name == "fpd" else "socket"
        argv = [*self._taskset(cfg.cpu_app), sys.executable, str(APPS), "--module", module,
                "--host", "0.0.0.0", "--port", str(cfg.port)]
        env = dict(os.environ)
        # the app is started by path, so its own directory heads sys.path: ROOT first,
        # or an editable install elsewhere would give it another tree's fpd.client
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get(
            "PYTHONPATH", "").split(os.pathsep) if p])
        if self.daemon is not None:
            env["FPD_SOCKET"] = self.daemon.socket
            argv += ["--slots", str(max(1024, cfg.idle + 1024))]
        elif "idle" in cfg.workloads:
            self.app_procs = cfg.kernel_procs or kernel_app_procs(cfg.idle)
            if self.app_procs > 1:
                argv += ["--procs", str(self.app_procs)]
        self.app_log = os.path.join(self.tmpdir, "app.log")
        with open(self.app_log, "ab") as err:
            self.app = self.bed.popen(self.bed.srv_ns, argv, stdout=subprocess.PIPE,
                                      stderr=err, stdin=subprocess.DEVNULL, text=True,
                                      cwd=str(ROOT), env=env)
        line = _readline(self.app.stdout, 30)
        if not line.startswith("ready"):
            _stop_proc(self.app)
            raise (Unavailable if self.name == "fpd" else BenchError)(
                f"{self.name}: the app did not start: {line!r} {self._tail(self.app_log)}")

    def _popen_loadgen(self, log: str) -> subprocess.Popen:
        argv = [*self._taskset(self.cfg.cpu_loadgen), sys.executable, "-m", "fpd.bench",
                "--loadgen"]
        with open(log, "ab") as err:
            return self.bed.popen(self.bed.peer_ns, argv, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=err, text=True,
                                  cwd=str(ROOT))

    def app_pids(self) -> list[int]:
        """The app's processes (one, or the kernel variants' --procs)."""
        if self.app is None:
            return []
        return [self.app.pid] + (children_of(self.app.pid) if self.app_procs > 1 else [])

    def ctl_ports(self) -> list[int]:
        """Where I, W and R reach every app process (several: a port of each's own)."""
        if self.app_procs > 1:
            return [self.cfg.port + 1 + i for i in range(self.app_procs)]
        return [self.cfg.port]

    def start_loadgen(self) -> None:
        self.lg_log = os.path.join(self.tmpdir, "loadgen.log")
        self.loadgen = self._popen_loadgen(self.lg_log)
        self.ask({"op": "ping"}, timeout=30)

    def idle_loadgens(self, k: int) -> list:
        """k load generators for the idle workload (the first is the variant's own),
        each with a source address of its own on the peer when k > 1: 10.77.0.10, .11,
        ... (each address has its own ephemeral ports; each process stays under the fd
        limit). Made once, kept until stop()."""
        if k <= 1:
            return [(self.loadgen, None)]
        while len(self.peer_addrs) < k:
            a = f"{IDLE_SRC_NET}.{IDLE_SRC_BASE + len(self.peer_addrs)}"
            self.bed.run(self.bed.peer_ns, ["ip", "addr", "add", f"{a}/24", "dev",
                                            self.bed.peer_if])
            self.peer_addrs.append(a)
        self.extra_lg = [p for p in self.extra_lg if p.poll() is None]
        while len(self.extra_lg) < k - 1:
            p = self._popen_loadgen(os.path.join(self.tmpdir, f"loadgen{len(self.extra_lg) + 1}.log"))
            self.extra_lg.append(p)
            self.ask({"op": "ping"}, timeout=30, lg=p)
        return list(zip([self.loadgen, *self.extra_lg[:k - 1]], self.peer_addrs))

    def ask_all(self, cmds: list, timeout: float) -> list:
        """One command to each of several load generators [(process, cmd)], all sent
        before any answer is read: they run at the same time."""
        for lg, cmd in cmds:
            cmd = dict(cmd, host=self.bed.srv_ip, port=self.cfg.port)
            lg.stdin.write(json.dumps(cmd) + "\n")
            lg.stdin.flush()
        deadline = time.monotonic() + timeout
        return [self._answer(lg, cmd, timeout, max(0.1, deadline - time.monotonic()))
                for lg, cmd in cmds]

    def ensure_running(self) -> None:
        """Restart the app or the load generator if one died (the failed measurement
        was recorded as an error)."""
        if self.daemon is not None and not self.daemon.alive():
            raise Unavailable(f"the fpd daemon died\nlog:\n{self.daemon.log_tail()}")
        if self.app is None or self.app.poll() is not None:
            self.problems.append(f"app restarted (exit {self.app and self.app.returncode})")
            self.start_app()
        if self.loadgen is None or self.loadgen.poll() is not None:
            self.problems.append("load generator restarted")
            self.start_loadgen()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            if self.loadgen is not None and self.loadgen.poll() is None:
                self.loadgen.stdin.write('{"op": "quit"}\n')
                self.loadgen.stdin.flush()
                self.loadgen.wait(5)
        with contextlib.suppress(Exception):
            _stop_proc(self.loadgen)
        for p in self.extra_lg:
            with contextlib.suppress(Exception):
                p.stdin.write('{"op": "quit"}\n')
                p.stdin.flush()
                p.wait(5)
            with contextlib.suppress(Exception):
                _stop_proc(p)
        self.extra_lg = []
        with contextlib.suppress(Exception):
            _stop_proc(self.app)
        if self.daemon is not None:
            try:
                self.problems += self.daemon.stop()
            except Exception as e:
                self.problems.append(f"stopping the daemon: {e}")
        if self.steering is not None:
            try:
                self.steering.close()
            except Exception as e:
                self.problems.append(f"detaching XDP: {e}")
            self.steering = None
        if self.bed is not None:
            self.bed.down()

    @staticmethod
    def _tail(path: str, n: int = 15) -> str:
        try:
            with open(path, errors="replace") as f:
                return "\n".join(f.read().splitlines()[-n:])
        except OSError:
            return ""

    # -- measuring -----------------------------------------------------------------------
    def ask(self, cmd: dict, timeout: float, lg=None) -> dict:
        cmd = dict(cmd, host=self.bed.srv_ip, port=self.cfg.port)
        lg = lg or self.loadgen
        lg.stdin.write(json.dumps(cmd) + "\n")
        lg.stdin.flush()
        return self._answer(lg, cmd, timeout, timeout)

    def _answer(self, lg, cmd: dict, timeout: float, left: float) -> dict:
        """A load generator's answer to ``cmd``, waited for at most ``left`` s (of the
        command's ``timeout``); BenchError if none comes or it is not ok."""
        line = _readline(lg.stdout, left)
        if not line:
            _stop_proc(lg, 2)
            raise BenchError(f"the load generator gave no answer to {cmd['op']} in "
                             f"{timeout:.0f} s {self._tail(self.lg_log)}")
        r = json.loads(line)
        if not r.get("ok"):
            raise BenchError(f"{cmd['op']}: {r.get('error')}")
        return r

    def cpu_snapshot(self) -> dict:
        s = {"app": sum(proc_cpu(p) for p in self.app_pids()),
             "daemon": sum(proc_cpu(p) for p in self.daemon.pids()) if self.daemon else 0.0,
             "loadgen": proc_cpu(self.loadgen.pid),
             "ksoftirqd": sum(proc_cpu(p) for p in ksoftirqd_pids()),
             "t": time.perf_counter()}
        s.update(system_cpu())
        return s

    def mem_snapshot(self) -> dict:
        apps = [proc_mem(p) for p in self.app_pids()]
        dm = [proc_mem(p) for p in self.daemon.pids()] if self.daemon else []
        return {"app": sum(a["Pss"] for a in apps), "daemon": sum(d["Pss"] for d in dm),
                "app_rss": sum(a["Rss"] for a in apps),
                "daemon_rss": sum(d["Rss"] for d in dm),
                "app_shm_rss": shm_rss(self.app.pid) if self.daemon else 0,
                "slab": slab_bytes(), "slab_all": slab_bytes(None)}


def _cpu_delta(a: dict, b: dict) -> dict:
    """CPU seconds used during a measurement.

    ``total``: the app, the fpd daemon (supervisor and workers), the load generator and
    the kernel's ksoftirqd threads, utime + stime each. A task's utime + stime is its
    whole run time, including the softirq work (the network stacks) that ran in its
    context; on veth the receiving side's stack mostly runs in the *sender's* context,
    so the two ends cannot be told apart and only the sum is fair. ``server``: app +
    daemon only. ``busy_all``: /proc/stat, every CPU, every process (incl. unrelated
    ones), for comparison. /proc/stat's softirq column is *not* added to the process
    times: without CONFIG_IRQ_TIME_ACCOUNTING that time is inside them already."""
    d = {k: b[k] - a[k] for k in a}
    d["server"] = d["app"] + d["daemon"]
    d["total"] = d["app"] + d["daemon"] + d["loadgen"] + d["ksoftirqd"]
    d["busy_all"] = sum(d[k] for k in ("user", "nice", "system", "irq", "softirq", "steal"))
    return d


_KSOFTIRQD: list[int] = []


def ksoftirqd_pids() -> list[int]:
    if not _KSOFTIRQD:
        for d in os.listdir("/proc"):
            if d.isdigit():
                with contextlib.suppress(OSError):
                    with open(f"/proc/{d}/comm") as f:
                        if f.read().startswith("ksoftirqd/"):
                            _KSOFTIRQD.append(int(d))
    return _KSOFTIRQD


def measure(v: Variant, workload: str, cfg: Config) -> dict:
    """One measurement of one workload on one variant: a dict of metrics + raw data."""
    cmd, _ = WORKLOADS[workload]
    cmd = dict(cmd)
    dur = cfg.duration
    if workload == "idle":
        return measure_idle(v, cfg)
    if workload == "crr":
        cmd.update(seconds=dur, max=cfg.crr_max)
    else:
        cmd.update(seconds=dur)
    f0 = v.daemon.stats() if v.daemon is not None else None
    c0 = v.cpu_snapshot()
    r = v.ask(cmd, timeout=dur + 60)
    c1 = v.cpu_snapshot()
    cpu = _cpu_delta(c0, c1)
    out = {"cpu": cpu}
    if f0 is not None:
        f1 = v.daemon.stats()
        out["fpd_stats"] = {k: f1[k] - f0[k] for k in f0 if k in f1}
    if workload.startswith("bulk"):
        gb = r["bytes"] / 1e9
        out.update(gbps=r["bytes"] * 8 / r["seconds"] / 1e9, bytes=r["bytes"],
                   seconds=r["seconds"], cpu_s_per_gb=cpu["total"] / gb if gb else 0.0,
                   server_cpu_s_per_gb=cpu["server"] / gb if gb else 0.0)
    elif workload.startswith("rr"):
        out.update(tps=r["count"] / r["seconds"], p50_us=r["p50_us"], p99_us=r["p99_us"],
                   count=r["count"], seconds=r["seconds"],
                   cpu_us_per_trans=cpu["total"] / max(1, r["count"]) * 1e6)
    elif workload == "crr":
        out.update(cps=r["count"] / r["seconds"], p50_us=r["p50_us"], p99_us=r["p99_us"],
                   count=r["count"], seconds=r["seconds"],
                   cpu_us_per_trans=cpu["total"] / max(1, r["count"]) * 1e6)
    return out


def idle_plan(v: Variant, cfg: Config) -> tuple:
    """(connections this variant is asked to hold, connections per load generator,
    why fewer than cfg.idle or None). A kernel variant's app holds one fd per
    connection and this VM caps a process at RLIMIT_NOFILE's hard limit (20,000 here,
    no CAP_SYS_RESOURCE to raise it): it is measured at the most it can hold, and
    says so. An fpd connection is not an fd in the app."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    cap = fd_cap()
    per_lg = max(1, min(cfg.idle_per_loadgen, cap))
    n, why = cfg.idle, None
    procs = getattr(v, "app_procs", 1)
    if v.daemon is None and n > cap * 3 // 4 * procs and n > cap:
        n, why = cap, f"the app's fd limit ({hard} per process)"
    return n, per_lg, why


def measure_idle(v: Variant, cfg: Config) -> dict:
    """Idle connections: open N (several load generators, each with a source address
    of its own, when N needs more than one), look at the server's memory right after
    opening and IDLE_SETTLE s later, count the server's CPU while they stay idle,
    request/response on some of them, check that every one is still open (the peer
    still ESTABLISHED, no FIN or RST, one byte sent on each acknowledged by the
    server's TCP), close them all."""
    n, per_lg, why = idle_plan(v, cfg)
    k = -(-n // per_lg)
    f0 = v.daemon.stats() if v.daemon is not None else None
    lgs = v.idle_loadgens(k)
    shares = [n // k + (i < n % k) for i in range(k)]
    limit = max(10 * cfg.duration, 10.0, n / 100.0)
    time.sleep(0.3)                    # as before m1: the same settling time
    m0 = v.mem_snapshot()
    ok = False
    try:
        opened = v.ask_all([(lg, {"op": "idle_open", "n": share, "seconds": limit,
                                  "src": src, "window": cfg.idle_window,
                                  "rate": cfg.idle_rate})
                            for (lg, src), share in zip(lgs, shares)], timeout=limit + 30)
        m_open = v.mem_snapshot()       # right after opening (before any page-out)
        f_open = v.daemon.stats() if v.daemon is not None else None
        # held idle for IDLE_SETTLE s before the second look (every variant alike): the
        # app's threads finish, and fpd's service returns the pages of RX rings idle for
        # two of its reclaim intervals (control.RECLAIM_INTERVAL)
        time.sleep(IDLE_SETTLE)
        m1 = v.mem_snapshot()
        c0 = v.cpu_snapshot()
        time.sleep(IDLE_CPU_SECONDS)
        c1 = v.cpu_snapshot()
        held = sum(r["held"] for r in opened)
        want = min(cfg.idle_rr, max(1, held // 10)) if held else 0
        rr_cmds, given = [], 0
        for i, ((lg, _), r) in enumerate(zip(lgs, opened)):
            cnt = (want - given if i == len(lgs) - 1 else
                   round(want * r["held"] / held) if held else 0)
            cnt = max(0, min(cnt, r["held"], want - given))
            given += cnt
            rr_cmds.append((lg, {"op": "idle_rr", "count": cnt, "rounds": 10, "size": 16,
                                 "seconds": 60.0, "ctl_ports": v.ctl_ports()}))
        rrs = v.ask_all(rr_cmds, timeout=90)
        checks = v.ask_all([(lg, {"op": "idle_check", "seconds": 30.0}) for lg, _ in lgs],
                           timeout=60 + n / 2000)
        f_check = v.daemon.stats() if v.daemon is not None else None
        ok = True
    finally:
        # the load generators close first (no TIME_WAIT at the app), then the app lets go
        with contextlib.suppress(BenchError, OSError, ValueError):
            v.ask_all([(lg, {"op": "idle_close", "release": False}) for lg, _ in lgs],
                      timeout=60 + n / 2000)
        try:
            rc = v.ask({"op": "idle_close", "ctl_ports": v.ctl_ports()},
                       timeout=60 + n / 2000)
        except (BenchError, OSError, ValueError):
            if ok:
                raise
    cpu = _cpu_delta(c0, c1)
    dt = max(1e-9, c1["t"] - c0["t"])
    errs = [r["stopped_by"] for r in opened if r["stopped_by"]]
    extra = {}
    if f0 is not None:
        # the daemon's counters that moved: while opening, until the check was done
        # (RR and check included), and over the whole measurement (closing included)
        f1 = v.daemon.stats()
        for key, a, b in (("fpd_stats_open", f0, f_open), ("fpd_stats_check", f0, f_check),
                          ("fpd_stats", f0, f1)):
            extra[key] = {k2: b[k2] - a[k2] for k2 in a if k2 in b and b[k2] != a[k2]}
    extra["app_procs"] = getattr(v, "app_procs", 1)
    return {**extra,
            "unacked_sample": [x for r in checks for x in r.get("unacked_sample", [])],
            "held": held, "asked": n, "asked_all": cfg.idle, "capped_by": why,
            "loadgens": k, "stopped_by": "; ".join(errs) or None,
            "open_seconds": max(r["seconds"] for r in opened), "released": rc["released"],
            "d_app": m1["app"] - m0["app"], "d_daemon": m1["daemon"] - m0["daemon"],
            "d_slab": m1["slab"] - m0["slab"],
            "d_slab_all": m1["slab_all"] - m0["slab_all"],
            "d_app_open": m_open["app"] - m0["app"],
            "d_daemon_open": m_open["daemon"] - m0["daemon"],
            "d_slab_open": m_open["slab"] - m0["slab"],
            "d_app_rss": m1["app_rss"] - m0["app_rss"],
            "d_daemon_rss": m1["daemon_rss"] - m0["daemon_rss"],
            "app_pss": m1["app"], "daemon_pss": m1["daemon"],
            "d_app_shm_rss": m1["app_shm_rss"] - m0["app_shm_rss"],
            "d_app_shm_rss_open": m_open["app_shm_rss"] - m0["app_shm_rss"],
            "app_rss": m1["app_rss"], "daemon_rss": m1["daemon_rss"],
            "idle_cpu_pct": {"app": 100 * cpu["app"] / dt, "daemon": 100 * cpu["daemon"] / dt,
                             "seconds": dt},
            "rr_asked": sum(r["asked"] for r in rrs),
            "rr_matched": sum(r["matched"] for r in rrs),
            "rr_answered": sum(r["answered"] for r in rrs),
            "rr_transactions": sum(r["transactions"] for r in rrs),
            "rr_wrong": sum(r["wrong"] for r in rrs),
            "still_open": sum(r["held"] - r["closed"] for r in checks),
            "acked": sum(r["acked"] for r in checks)}


def _finish_idle(samples: dict) -> dict:
    """Bytes per idle connection on the server side, from the raw deltas.

    The slab delta is machine-wide: it holds the load generator's client sockets too (the
    peer namespace shares the kernel). The fpd variant has no kernel socket on the server
    side, so its slab delta per connection is the peer's share; it is subtracted from
    every variant's. Without an fpd measurement, half of the kernel's delta is taken."""
    per_conn = [s["d_slab"] / s["held"] for s in samples.get("fpd", []) if s.get("held")]
    if per_conn:
        peer, method = statistics.median(per_conn), "fpd variant's slab delta"
    else:
        k = [s["d_slab"] / s["held"] for s in samples.get("kernel", []) if s.get("held")]
        peer, method = (statistics.median(k) / 2 if k else 0.0), "half the kernel's"
    for ss in samples.values():
        for s in ss:
            if not s.get("held"):
                s["bytes_per_conn"] = 0.0
                continue
            h = s["held"]
            s["peer_slab_per_conn"] = peer
            s["server_slab_per_conn"] = s["d_slab"] / h - peer
            s["app_per_conn"] = s["d_app"] / h
            s["daemon_per_conn"] = s["d_daemon"] / h
            s["bytes_per_conn"] = (s["d_app"] + s["d_daemon"]) / h + \
                s["server_slab_per_conn"]
            if "d_app_open" in s:       # right after opening
                s["bytes_per_conn_open"] = (s["d_app_open"] + s["d_daemon_open"]) / h + \
                    s.get("d_slab_open", s["d_slab"]) / h - peer
    return {"peer_slab_per_conn": peer, "peer_share_method": method}


# =========================================================================================
# The run
# =========================================================================================
def machine_info() -> dict:
    model = ""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    mem = 0
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    return {"nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "python_executable": sys.executable, "mem_total_bytes": mem,
            "hostname": platform.node()}


def _log(cfg: Config, msg: str) -> None:
    if cfg.verbose:
        print(msg, file=sys.stderr, flush=True)


def _stat(xs: list) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs),
            "samples": xs}


def run(config) -> dict:
    """Run the bench; return the result dict (also written to --json/--png if set)."""
    cfg = config if isinstance(config, Config) else Config(**dict(config))
    if os.geteuid() != 0:
        raise BenchError("fpd bench needs root (network namespaces, XDP)")
    if cfg.pin:
        ncpu = os.cpu_count() or 1
        for c in (cfg.cpu_app, cfg.cpu_loadgen, cfg.cpu_daemon):
            if not 0 <= c < ncpu:
                raise BenchError(f"CPU {c} does not exist (nproc {ncpu})")
    started = time.time()
    tmpdir = tempfile.mkdtemp(prefix="fpd-bench-")
    os.chmod(tmpdir, 0o755)
    variants: dict[str, Variant] = {}
    unavailable: dict[str, str] = {}
    errors: list[dict] = []
    raw: dict = {w: {v: [] for v in cfg.variants} for w in cfg.workloads}
    problems: list[str] = []
    namespaces: list[str] = []
    observed: dict = {}
    own_affinity = os.sched_getaffinity(0)
    try:
        if cfg.pin:
            # the orchestrator itself mostly sleeps; keep it off the daemon's CPU
            os.sched_setaffinity(0, {cfg.cpu_loadgen})
        for name in cfg.variants:
            v = Variant(name, cfg, tmpdir)
            variants[name] = v
            _log(cfg, f"setting up {name} ...")
            try:
                v.start(namespaces)
            except Unavailable as e:
                unavailable[name] = str(e)
                _log(cfg, f"{name} UNAVAILABLE: {e}")
                v.stop()
                problems += [f"{name}: {p}" for p in v.problems]
                del variants[name]
        live = [n for n in cfg.variants if n in variants]
        for name in live:
            with contextlib.suppress(Exception):
                observed[name] = variants[name].affinity()
        for name in live:                  # warm-up: ARP, caches, the engine's code paths
            with contextlib.suppress(BenchError):
                variants[name].ask({"op": "rr", "size": 1, "conns": 1, "seconds": 0.2},
                                   timeout=60)
        for rnd in range(cfg.rounds):
            k = rnd % max(1, len(live))
            order = live[k:] + live[:k]
            for wl in cfg.workloads:
                for name in order:
                    if name not in variants:
                        continue
                    v = variants[name]
                    try:
                        v.ensure_running()
                        res = measure(v, wl, cfg)
                        raw[wl][name].append(res)
                        _log(cfg, f"round {rnd + 1}/{cfg.rounds} {wl:<10} {name:<11} "
                                  + _brief(wl, res))
                    except Unavailable as e:
                        unavailable[name] = str(e)
                        errors.append({"round": rnd + 1, "workload": wl, "variant": name,
                                       "error": str(e)})
                        _log(cfg, f"{name} UNAVAILABLE: {e}")
                        v.stop()
                        problems += [f"{name}: {p}" for p in v.problems]
                        del variants[name]
                    except (BenchError, OSError, ValueError, KeyError) as e:
                        errors.append({"round": rnd + 1, "workload": wl, "variant": name,
                                       "error": f"{type(e).__name__}: {e}"})
                        _log(cfg, f"round {rnd + 1} {wl} {name}: ERROR {e}")
    finally:
        for name, v in list(variants.items()):
            try:
                v.stop()
            except Exception as e:
                problems.append(f"{name}: cleanup: {e}")
            problems += [f"{name}: {p}" for p in v.problems]
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, own_affinity)
        if not cfg.keep_logs:
            shutil.rmtree(tmpdir, ignore_errors=True)
    result = _assemble(cfg, raw, unavailable, errors, problems, started)
    result["namespaces"] = namespaces
    result["pinning"]["observed"] = observed
    if cfg.keep_logs:
        result["logs"] = tmpdir
    with contextlib.suppress(Exception):
        from pyroute2 import netns as _netns
        left = set(namespaces) & set(_netns.listnetns())
        if left:
            result["problems"].append(f"namespaces left behind: {sorted(left)}")
    if cfg.json:
        with open(cfg.json, "w") as f:
            json.dump(result, f, indent=1, sort_keys=False)
    if cfg.png:
        write_chart(result, cfg.png)
    return result


def _brief(wl: str, r: dict) -> str:
    if wl.startswith("bulk"):
        return f"{r['gbps']:.3f} Gbit/s, {r['cpu_s_per_gb']:.2f} CPU s/GB"
    if wl.startswith("rr"):
        return f"{r['tps']:,.0f} trans/s p50 {r['p50_us']:.0f} us p99 {r['p99_us']:.0f} us"
    if wl == "crr":
        return f"{r['cps']:,.0f} conn/s p50 {r['p50_us']:.0f} us"
    if wl == "idle":
        h = max(1, r["held"])
        return (f"held {r['held']}/{r['asked']} in {r['open_seconds']:.1f} s "
                f"({r['loadgens']} load generators) app {r['d_app'] / h:,.0f} "
                f"daemon {r['d_daemon'] / h:,.0f} slab {r['d_slab'] / h:,.0f} B/conn "
                f"(right after opening: app {r['d_app_open'] / h:,.0f} daemon "
                f"{r['d_daemon_open'] / h:,.0f} slab {r['d_slab_open'] / h:,.0f}); idle CPU "
                f"daemon {r['idle_cpu_pct']['daemon']:.1f} % app "
                f"{r['idle_cpu_pct']['app']:.1f} %; RR {r['rr_answered']}/{r['rr_asked']} "
                f"answered ({r['rr_wrong']} wrong); still open {r['still_open']}, "
                f"acked {r['acked']}"
                + (f" [{r['capped_by']}]" if r.get("capped_by") else "")
                + (f" ({r['stopped_by']})" if r["stopped_by"] else ""))
    return ""


def _assemble(cfg, raw, unavailable, errors, problems, started) -> dict:
    workloads = {}
    for wl in cfg.workloads:
        extra = {}
        if wl == "idle":
            extra = _finish_idle(raw[wl])
        results = {}
        for name in cfg.variants:
            samples = raw[wl][name]
            if not samples:
                continue
            results[name] = {m: _stat([s[m] for s in samples]) for m, _, _ in METRICS[wl]}
            if wl == "idle":
                # memory: the first round only. A process's heap (and fpd's shared slot
                # pages) keep their high-water mark, so later rounds re-use memory and
                # show almost no growth, while the kernel frees its sockets each time.
                for m in ("bytes_per_conn", "bytes_per_conn_open"):
                    results[name][m] = _stat([samples[0][m]])
        ratios = {}
        for m, _, _ in METRICS[wl]:
            ratios[m] = {}
            for base in ("kernel", "kernel+xdp"):
                f, b = results.get("fpd", {}).get(m), results.get(base, {}).get(m)
                ratios[m][f"fpd/{base}"] = (f["median"] / b["median"]
                                            if f and b and b["median"] else None)
        workloads[wl] = {
            "description": WORKLOADS[wl][1],
            "metrics": {m: {"unit": u, "higher_is_better": h} for m, u, h in METRICS[wl]},
            "results": results, "ratios": ratios, "raw": raw[wl], **extra}
    pinning = ({"app": cfg.cpu_app, "loadgen": cfg.cpu_loadgen, "daemon": cfg.cpu_daemon,
                "how": "taskset -c (app, load generator, fpd start: the daemon's workers "
                       "inherit it) + sched_setaffinity on every thread of the daemon"}
               if cfg.pin else {"how": "not pinned"})
    return {
        "version": 1,
        "started": _dt.datetime.fromtimestamp(started, _dt.timezone.utc).isoformat(),
        "elapsed_s": round(time.time() - started, 1),
        "machine": machine_info(),
        "config": dataclasses.asdict(cfg),
        "pinning": pinning,
        "variants": list(cfg.variants),
        "unavailable": unavailable,
        "errors": errors,
        "problems": problems,
        "workloads": workloads,
    }


# =========================================================================================
# Output
# =========================================================================================
def _fmt(x: float) -> str:
    if x is None:
        return "-"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def table(result: dict) -> str:
    """The human-readable table: medians (min-max) per variant, ratios."""
    vs = result["variants"]
    head = f"{'workload':<12} {'metric':<13}" + "".join(f"{v:>24}" for v in vs) + \
        f"{'fpd/kernel':>12}{'fpd/k+xdp':>11}"
    lines = [head, "-" * len(head)]
    for wl, w in result["workloads"].items():
        for m, meta in w["metrics"].items():
            cells = []
            for v in vs:
                s = w["results"].get(v, {}).get(m)
                cells.append(f"{_fmt(s['median'])} ({_fmt(s['min'])}-{_fmt(s['max'])})"
                             if s else "n/a")
            r = w["ratios"].get(m, {})
            rk, rx = r.get("fpd/kernel"), r.get("fpd/kernel+xdp")
            label = f"{m} [{meta['unit']}]" + ("" if meta["higher_is_better"] else "*")
            lines.append(f"{wl:<12} {label:<13}" + "".join(f"{c:>24}" for c in cells)
                         + f"{(f'{rk:.3f}' if rk else '-'):>12}"
                         + f"{(f'{rx:.3f}' if rx else '-'):>11}")
    lines.append("* lower is better; everything else: higher is better. "
                 "Median (min-max) over the rounds.")
    idle = result["workloads"].get("idle")
    if idle:
        lines.append("idle, round 1, bytes per connection (PSS deltas; the stack: fpd's "
                     "daemon, the kernel's socket slab) after settling / right after opening:")
        for v in vs:
            raw = idle.get("raw", {}).get(v) or []
            if not raw or "app_per_conn" not in raw[0]:
                continue
            r = raw[0]
            stack = r["daemon_per_conn"] + r["server_slab_per_conn"]
            h = max(1, r["held"])
            stack_open = (r["d_daemon_open"] + r["d_slab_open"]) / h - r["peer_slab_per_conn"]
            lines.append(
                f"  {v:<11} held {r['held']:,} (asked {r['asked']:,}"
                + (f": {r['capped_by']}" if r.get("capped_by") else "") + ") "
                f"opened in {r['open_seconds']:.1f} s; app {_fmt(r['app_per_conn'])} + stack "
                f"{_fmt(stack)} = {_fmt(r['bytes_per_conn'])} / app "
                f"{_fmt(r['d_app_open'] / h)} + stack {_fmt(stack_open)} = "
                f"{_fmt(r.get('bytes_per_conn_open'))}; idle CPU app "
                f"{r['idle_cpu_pct']['app']:.1f} % daemon {r['idle_cpu_pct']['daemon']:.1f} %; "
                f"RR {r['rr_answered']}/{r['rr_asked']} ({r['rr_wrong']} wrong); still open "
                f"{r['still_open']:,}, acked {r['acked']:,}"
                + (f"; shared-memory pages resident in the app {_fmt(r['d_app_shm_rss'] / h)}"
                   f" / {_fmt(r['d_app_shm_rss_open'] / h)} B/conn"
                   if "d_app_shm_rss" in r and v == "fpd" else ""))
    for name, why in result.get("unavailable", {}).items():
        lines.append(f"{name}: UNAVAILABLE: {why.splitlines()[0] if why else ''}")
    for e in result.get("errors", []):
        lines.append(f"error: round {e['round']} {e['workload']} {e['variant']}: {e['error']}")
    for p in result.get("problems", []):
        lines.append(f"cleanup: {p}")
    return "\n".join(lines)


def write_chart(result: dict, path: str) -> None:
    """A PNG of the median ratios fpd/kernel and fpd/kernel+xdp, one row per metric, on a
    log scale around 1.0 (bars to the right: fpd's number is larger)."""
    from fpd.pngchart import bar_chart
    rows = []
    for wl, w in result["workloads"].items():
        for m, meta in w["metrics"].items():
            r = w["ratios"].get(m, {})
            tag = "  (LOWER IS BETTER)" if not meta["higher_is_better"] else ""
            rows.append((f"{wl} {m}{tag}", [r.get("fpd/kernel"), r.get("fpd/kernel+xdp")]))
    mach = result.get("machine", {})
    cfg = result.get("config", {})
    title = (f"FPD BENCH {result['started'][:16]}Z: FPD / KERNEL, MEDIANS OF "
             f"{cfg.get('rounds')} ROUNDS")
    notes = [f"{mach.get('nproc')} CPU {mach.get('cpu_model', '')}, LINUX "
             f"{mach.get('kernel', '')}, {mach.get('python', '')}",
             "RIGHT OF THE RED LINE: FPD'S NUMBER IS THE LARGER ONE"]
    png = bar_chart(rows, ["FPD/KERNEL", "FPD/KERNEL+XDP"], title=title, log=True,
                    notes=notes, width=1100)
    with open(path, "wb") as f:
        f.write(png)


# =========================================================================================
# Command line
# =========================================================================================
def make_config(*, rounds=None, duration=None, idle=None, quick=False, json=None, png=None,
                mode="native", port=5001, cpus="0,0,1", no_pin=False, variants=None,
                workloads=None, peer_offloads="on", keep_logs=False, quiet=False,
                mtu=1500, frags=False, idle_rr=None, idle_per_loadgen=None, idle_window=None,
                kernel_procs=None) -> Config:
    """The Config for ``fpd bench``'s options (fpd/cli.py declares them). ValueError says
    which option is wrong."""
    try:
        cpu = [int(x) for x in cpus.split(",")]
    except ValueError:
        cpu = []
    if len(cpu) != 3:
        raise ValueError("--cpus wants three numbers: APP,LOADGEN,DAEMON")
    variants = tuple(x for x in (variants or ",".join(VARIANTS)).split(",") if x)
    workloads = tuple(x for x in (workloads or ",".join(WORKLOADS)).split(",") if x)
    for x in variants:
        if x not in VARIANTS:
            raise ValueError(f"unknown variant {x!r} (variants: {', '.join(VARIANTS)})")
    for x in workloads:
        if x not in WORKLOADS:
            raise ValueError(f"unknown workload {x!r} (workloads: {', '.join(WORKLOADS)})")
    kw = dict(json=json, png=png, mode=mode, port=port, pin=not no_pin, cpu_app=cpu[0],
              cpu_loadgen=cpu[1], cpu_daemon=cpu[2], variants=variants, workloads=workloads,
              peer_offloads=peer_offloads == "on", verbose=not quiet, keep_logs=keep_logs,
              mtu=mtu, frags=bool(frags))
    for k, v in (("rounds", rounds), ("duration", duration), ("idle", idle),
                 ("idle_rr", idle_rr), ("idle_per_loadgen", idle_per_loadgen),
                 ("idle_window", idle_window), ("kernel_procs", kernel_procs)):
        if v is not None:
            kw[k] = v
    cfg = Config.quick_config(**kw) if quick else Config(**kw)
    if cfg.rounds < 1 or cfg.duration <= 0 or cfg.idle < 1:
        raise ValueError("--rounds, --duration and --idle must be positive")
    if cfg.idle_rr < 0 or cfg.idle_per_loadgen < 1 or cfg.idle_window < 1 \
            or cfg.kernel_procs < 0:
        raise ValueError("--idle-rr and --kernel-procs must be >= 0, --idle-per-loadgen "
                         "and --idle-window positive")
    if not 576 <= cfg.mtu <= 9000:
        raise ValueError("--mtu must be 576..9000 (above 3498: AF_XDP multi-buffer)")
    return cfg


class _Terminated(Exception):
    pass


_MAIN_PID = 0


def _on_term(signum, frame):
    if os.getpid() != _MAIN_PID:
        # a forked helper (pyroute2 forks one per namespace) inherited this handler:
        # die the default way, as it expects
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise _Terminated(signal.Signals(signum).name)


def main(cfg: Config) -> int:
    """Run the bench for ``cfg``, print the table; the exit code (1: something could not
    run)."""
    global _MAIN_PID
    _MAIN_PID = os.getpid()
    old = signal.signal(signal.SIGTERM, _on_term)
    try:
        result = run(cfg)
    except (BenchError, _Terminated, KeyboardInterrupt) as e:
        print(f"fpd bench: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, old)
    m = result["machine"]
    print(f"\nfpd bench: {cfg.rounds} interleaved rounds, {cfg.duration:g} s per "
          f"measurement, idle {cfg.idle}; {m['nproc']} CPUs ({m['cpu_model']}), "
          f"Linux {m['kernel']}, {m['python']}; pinning: "
          + (f"app CPU {cfg.cpu_app}, load generator CPU {cfg.cpu_loadgen}, "
             f"fpd daemon CPU {cfg.cpu_daemon}" if cfg.pin else "none"))
    print(table(result))
    if cfg.json:
        print(f"JSON: {cfg.json}")
    if cfg.png:
        print(f"PNG: {cfg.png}")
    if result.get("logs"):
        print(f"logs: {result['logs']}")
    bad = result["unavailable"] or result["errors"]
    return 1 if bad else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--loadgen"]:       # the load generator, in the peer namespace
        sys.exit(loadgen_main())
    from fpd.cli import bench as _command  # `python -m fpd.bench` = `fpd bench`
    _command(prog_name="fpd bench")
