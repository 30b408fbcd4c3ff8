#!/usr/bin/env python3
"""A hostile client against the live daemon, while a good client streams (issue #14 item 3).

    sudo .venv/bin/python bench/hostile.py [--duration 60] [--seed 1] [--json out.json]

Sets up a test bed (fpd.testbed.TestBed) and an fpd daemon in it (with --metrics), then for
``--duration`` seconds runs together:

- the **good client** (this process, fpd.client): connects to a kernel echo server in the
  peer namespace and streams rounds of 2 MiB through it, checking each round's SHA-256;
- the **hostile client** (a separate process, ``--role hostile``; it speaks the protocol
  with raw sockets, not the client library): sessions of hello/attach to every worker,
  a listener on a steered port and connects to a kernel listener (so it owns real
  connections), then random abuse: random bytes over random ranges of its whole memfd
  region, targeted writes into slot control lines, ring headers and the command ring,
  doorbell rings, ``ftruncate`` of the sealed memfd, and malformed, oversized,
  out-of-order and foreign control messages to its worker and to the supervisor (garbage,
  non-objects, deep nesting, > 64 KiB, unknown ops, wrong types, slots not its own, fds
  where none belong, silent connections). A session ends when the daemon drops it or
  after a few rounds; a new one starts;
- **kernel peers** for the hostile's connections (they count how each ended: RST, FIN).

Then it checks (and prints): the good stream intact, the daemon and its workers up, the
hostile's connections reset and none left in ``fpd conns``, its slots, control
connections, memfd mappings and fds freed in the worker (back to the count before it
came), each cause counted in ``fpd stats`` (service and supervisor counters) and in the
Prometheus text. ``run()`` is the harness; tests/integration/test_hostile.py runs it for
~10 s. Not a timed test: no number here is a speed.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import json
import mmap
import os
import random
import select
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

from fpd import proto, shm  # noqa: E402

GOOD_PORT = 5021          # kernel echo server (peer namespace) for the good client
HOSTILE_KPORT = 5022      # kernel listener the hostile client connects to
HOSTILE_PORT = 8090       # steered port the hostile client listens on
PORTS = [8090, 8091]
ROUND = 2 << 20           # bytes per good round


# ==== the hostile client (its own process) ===============================================
def _seqpacket(path: str, timeout: float = 3.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    s.settimeout(timeout)
    s.connect(path)
    return s


def _send_raw(s: socket.socket, data: bytes, fds=()) -> None:
    if fds:
        s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(
            f"{len(fds)}i", *fds))])
    else:
        s.send(data)


def _drain(s: socket.socket) -> bool:
    """Read every pending reply (closing passed fds); False once the peer closed."""
    while True:
        r, _, _ = select.select([s], [], [], 0)
        if not r:
            return True
        try:
            data, anc, _flags, _ = s.recvmsg(proto.MAX_MSG, socket.CMSG_SPACE(16 * 4))
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                for fd in struct.unpack(f"{len(raw) // 4}i", raw[:len(raw) // 4 * 4]):
                    with contextlib.suppress(OSError):
                        os.close(fd)
        if not data:
            return False


def _junk(rng: random.Random) -> tuple[str, bytes]:
    """One malformed control message: (kind, bytes)."""
    k = rng.randrange(11)
    if k == 0:
        return "garbage", rng.randbytes(rng.randrange(1, 2000))
    if k == 1:
        return "not_object", rng.choice([b"[1,2,3]", b"42", b"null", b'"op"', b"true"])
    if k == 2:
        return "deep_nesting", b'{"op":"info","slot":' + b"[" * 50000 + b"]" * 50000 + b"}"
    if k == 3:
        return "oversized", b'{"op":"listen","port":8090,"pad":"' + b"x" * 100_000 + b'"}'
    if k == 4:
        return "unknown_op", json.dumps({"op": rng.choice(["rm", "", "ATTACH", "stop\0",
                                                           "__class__"])}).encode()
    if k == 5:
        return "wrong_type", json.dumps(rng.choice([
            {"op": "listen", "port": "8090"}, {"op": "connect", "addr": 5, "port": 1},
            {"op": "info", "slot": None}, {"op": "setopt", "slot": 0, "name": [],
                                            "value": {}},
            {"op": "unlisten"}, {"op": "bell", "slot": 1.5}, {"op": "attach",
                                                              "queue": "0"}])).encode()
    if k == 6:
        return "foreign_slot", json.dumps(rng.choice([
            {"op": "info", "slot": rng.choice([-1, 2**31, 10**18, 7])},
            {"op": "unlisten", "slot": rng.randrange(-5, 4000)},
            {"op": "setopt", "slot": rng.randrange(0, 64), "name": "nodelay",
             "value": 1}])).encode()
    if k == 7:
        return "out_of_order", json.dumps(rng.choice([
            {"op": "attach", "queue": 0}, {"op": "hello", "version": 1},
            {"op": "stats"}, {"op": "ready", "queue": 0}, {"op": "go"},
            {"op": "client", "attach": {"op": "attach", "queue": 0}}])).encode()
    if k == 8:
        return "not_steered", json.dumps(rng.choice([
            {"op": "listen", "port": 22}, {"op": "listen", "port": 8090,
                                           "addr": "10.99.0.1"},
            {"op": "connect", "addr": "10.77.0.2", "port": 5022, "bind_port": 22},
            {"op": "connect", "addr": "10.77.0.2", "port": 0},
            {"op": "connect", "addr": "999.1.1.1", "port": 80}])).encode()
    if k == 9:
        return "bad_sizes", json.dumps({"op": "setopt", "slot": 0, "name": "rcvbuf",
                                        "value": rng.choice([-1, 2**62, 0])}).encode()
    return "huge_numbers", json.dumps({"op": "connect", "addr": "10.77.0.2",
                                       "port": 2**64, "bind_port": -2**70}).encode()


def _supervisor_abuse(path: str, rng: random.Random, st, keep: list) -> None:
    """Malformed first messages to the supervisor; one connection kept silent."""
    efd = os.eventfd(0)
    try:
        for _ in range(rng.randrange(2, 6)):
            kind, data = _junk(rng)
            if rng.random() < 0.3:
                kind, data = rng.choice([
                    ("attach_bad_queue", json.dumps({"op": "attach", "queue": 99})),
                    ("attach_bad_sizes", json.dumps({"op": "attach", "queue": 0,
                                                     "slots": 10**9, "rx_size": 3})),
                    ("hello_bad_version", json.dumps({"op": "hello", "version": 99})),
                    ("listen_first", json.dumps({"op": "listen", "port": 8090}))])
                data = data.encode()
            try:
                s = _seqpacket(path)
            except OSError:
                st["sup_connect_failed"] += 1
                continue
            try:
                _send_raw(s, data[:200_000], [efd] if rng.random() < 0.2 else ())
                st["sup_" + kind] += 1
                s.settimeout(2.0)
                with contextlib.suppress(OSError):
                    s.recv(proto.MAX_MSG)
            except OSError:
                st["sup_send_failed"] += 1
            finally:
                s.close()
        if len(keep) < 3:
            with contextlib.suppress(OSError):
                keep.append(_seqpacket(path))          # silent: the supervisor drops it
                st["sup_silent"] += 1
    finally:
        os.close(efd)


class _Attached:
    def __init__(self, q, sock, reply, fds):
        self.q = q
        self.sock = sock
        self.memfd, self.app_bell, self.daemon_bell = fds
        self.size = os.fstat(self.memfd).st_size
        self.map = mmap.mmap(self.memfd, self.size)
        self.layout = shm.Layout(nslots=reply["slots"], rx_size=reply["rx_size"],
                                 tx_size=reply["tx_size"])
        self.slots: list[int] = []

    def close(self):
        with contextlib.suppress(Exception):
            self.map.close()
        for fd in (self.memfd, self.app_bell, self.daemon_bell):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.sock.close()


def _attach(path: str, q: int, rng: random.Random) -> _Attached:
    s = _seqpacket(path)
    reply, fds = proto.request(s, proto.Attach(queue=q, slots=rng.choice([4, 8, 16]),
                                               rx_size=16384, tx_size=16384,
                                               pid=os.getpid()), maxfds=3)
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        s.close()
        raise proto.ProtocolError("attach passed no fds")
    return _Attached(q, s, reply, fds)


def _scribble(a: _Attached, rng: random.Random, st) -> None:
    lay = a.layout
    k = rng.randrange(6)
    if k == 0:                                   # anywhere in the region
        off = rng.randrange(a.size)
        n = min(rng.randrange(1, 65536), a.size - off)
        a.map[off:off + n] = rng.randbytes(n)
        st["scribble_anywhere"] += 1
        st["scribbled_bytes"] += n
    elif k == 1:                                 # a slot's control line / ring headers
        slot = rng.choice(a.slots) if a.slots and rng.random() < 0.8 \
            else rng.randrange(lay.nslots)
        off = lay.slot_ctl(slot) + rng.randrange(shm.SLOT_CTL_SIZE)
        n = rng.randrange(1, 64)
        a.map[off:off + n] = rng.randbytes(n)
        st["scribble_slot_ctl"] += 1
    elif k == 2:                                 # ring indices: huge or backwards
        off = rng.choice([lay.ev_hdr_off, lay.cmd_hdr_off]) + rng.choice([0, 8, 64, 72])
        a.map[off:off + 8] = struct.pack("<Q", rng.choice([2**64 - 1, 2**63,
                                                           rng.randrange(2**64), 0]))
        st["scribble_ring_index"] += 1
    elif k == 3:                                 # well-formed commands, hostile values
        off = lay.cmd_off + rng.randrange(lay.cmd_entries) * shm.RECORD.size
        a.map[off:off + 16] = shm.RECORD.pack(
            rng.randrange(2**32), rng.randrange(2**16), rng.randrange(2**16),
            rng.randrange(2**64))
        st["scribble_command"] += 1
    elif k == 4:                                 # a slot's data (RX/TX bytes)
        slot = rng.choice(a.slots) if a.slots else 0
        off = lay.rx_data(slot) + rng.randrange(lay.data_stride)
        n = min(4096, a.size - off)
        a.map[off:off + n] = rng.randbytes(n)
        st["scribble_data"] += 1
    else:                                        # the header
        n = rng.randrange(1, shm.HEADER.size)
        a.map[0:n] = rng.randbytes(n)
        st["scribble_header"] += 1
    with contextlib.suppress(OSError):
        os.eventfd_write(a.daemon_bell, 1)


def _session(path: str, rng: random.Random, st, peer_ip: str, end: float,
             keep: list) -> None:
    _supervisor_abuse(path, rng, st, keep)
    h = _seqpacket(path)
    try:
        hello, _ = proto.request(h, proto.Hello(version=proto.VERSION))
    finally:
        h.close()
    att: list[_Attached] = []
    try:
        for q in range(int(hello["workers"])):
            att.append(_attach(path, q, rng))
            st["attached"] += 1
        a0 = att[0]
        try:
            r, _ = proto.request(a0.sock, proto.Listen(port=HOSTILE_PORT, backlog=16))
            a0.slots.append(r["slot"])
            st["listened"] += 1
        except OSError:
            st["listen_refused"] += 1
        for a in att:
            for _ in range(rng.randrange(1, 3)):
                try:
                    r, _ = proto.request(a.sock, proto.Connect(addr=peer_ip,
                                                               port=HOSTILE_KPORT))
                    a.slots.append(r["slot"])
                    st["connects"] += 1
                except OSError:
                    st["connect_refused"] += 1
        time.sleep(rng.uniform(0.05, 0.3))      # let them establish, data flow
        alive = {id(a): True for a in att}
        n_scribble = rng.randrange(3, 20)       # memory first: a bad message ends it all
        for i in range(n_scribble + rng.randrange(3, 30)):
            if time.monotonic() >= end:
                break
            a = rng.choice(att)
            if not alive[id(a)]:
                continue
            act = rng.random() * 0.45 if i < n_scribble else rng.random()
            try:
                if act < 0.45:
                    _scribble(a, rng, st)
                elif act < 0.8:
                    kind, data = _junk(rng)
                    fds = []
                    if rng.random() < 0.15:
                        fds = [a.app_bell, a.daemon_bell]       # fds where none belong
                    _send_raw(a.sock, data, fds)
                    st["worker_" + kind] += 1
                elif act < 0.88:
                    try:
                        os.ftruncate(a.memfd, rng.choice([0, 4096, a.size * 2]))
                        st["ftruncate_allowed"] += 1             # must not happen: sealed
                    except OSError:
                        st["ftruncate_refused"] += 1
                else:
                    _send_raw(a.sock, json.dumps({"op": "bell", "slot": rng.randrange(
                        -1, a.layout.nslots + 2), "noreply": True}).encode(),
                        [a.app_bell])
                    st["worker_bell_foreign"] += 1
            except OSError:
                st["send_failed"] += 1
            if not _drain(a.sock):
                alive[id(a)] = False
                st["dropped_by_daemon"] += 1
            time.sleep(rng.uniform(0, 0.02))
    finally:
        for a in att:
            a.close()


def hostile_main(path: str, duration: float, seed: int, peer_ip: str) -> dict:
    rng = random.Random(seed)
    st = collections.Counter()
    end = time.monotonic() + duration
    keep: list[socket.socket] = []
    while time.monotonic() < end:
        st["sessions"] += 1
        try:
            _session(path, rng, st, peer_ip, end, keep)
        except (OSError, EOFError, ValueError) as e:
            st["session_ended_" + type(e).__name__] += 1
        while len(keep) > 1:                     # let the supervisor time some out
            keep.pop(0).close()
    for s in keep:
        s.close()
    return dict(st)


# ==== the harness (parent) ================================================================
def _proc_sample(pid: int) -> dict:
    out = {"fds": 0, "memfd_maps": 0, "rss_kib": 0}
    with contextlib.suppress(OSError):
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/maps") as f:
            out["memfd_maps"] = sum(1 for ln in f if "memfd:fpd-" in ln)
    with contextlib.suppress(OSError, ValueError):
        with open(f"/proc/{pid}/status") as f:
            for ln in f:
                if ln.startswith("VmRSS:"):
                    out["rss_kib"] = int(ln.split()[1])
    return out


def _pattern(n: int, seed: int) -> bytes:
    block = hashlib.sha256(seed.to_bytes(4, "big")).digest() * 2048
    return (block * (n // len(block) + 1))[:n]


class _KernelSide:
    """Peer-namespace sockets: an echo server for the good client; a listener for the
    hostile's connects (each accepted one is fed and watched: how did it end?)."""

    def __init__(self, bed):
        self.bed = bed
        self.stop = threading.Event()
        self.ends = collections.Counter()
        self.threads: list[threading.Thread] = []
        self.socks: list[socket.socket] = []
        self.echo = self._listen(GOOD_PORT)
        self.hl = self._listen(HOSTILE_KPORT)
        self._spawn(self._echo_accept)
        self._spawn(self._hostile_accept)

    def _listen(self, port):
        s = self.bed.socket(self.bed.peer_ns)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.bed.peer_ip, port))
        s.listen(128)
        s.settimeout(0.2)
        self.socks.append(s)
        return s

    def _spawn(self, fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept_loop(self, ls, handler):
        while not self.stop.is_set():
            try:
                c, _ = ls.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            self.socks.append(c)
            self._spawn(handler, c)

    def _echo_accept(self):
        self._accept_loop(self.echo, self._echo)

    def _echo(self, c):
        c.settimeout(1.0)
        with c:
            while not self.stop.is_set():
                try:
                    d = c.recv(1 << 18)
                except (TimeoutError, socket.timeout):
                    continue
                except OSError:
                    return
                if not d:
                    with contextlib.suppress(OSError):
                        c.shutdown(socket.SHUT_WR)
                    return
                try:
                    c.sendall(d)
                except OSError:
                    return

    def _hostile_accept(self):
        self._accept_loop(self.hl, self._feed)

    def _feed(self, c):
        c.settimeout(0.05)
        self.ends["accepted"] += 1
        with c:
            while not self.stop.is_set():
                try:
                    c.send(b"k" * 512)
                    d = c.recv(65536)
                    if not d:
                        self.ends["fin"] += 1
                        return
                except (TimeoutError, socket.timeout, BlockingIOError):
                    continue
                except ConnectionResetError:
                    self.ends["rst"] += 1
                    return
                except BrokenPipeError:
                    self.ends["rst"] += 1
                    return
                except OSError as e:
                    self.ends["error_" + (os.strerror(e.errno) if e.errno else "?")] += 1
                    return
                time.sleep(0.02)
            self.ends["open_at_end"] += 1

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join(5)
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.close()


def _good_stream(bed, end: float, box: dict, hold: threading.Event) -> None:
    """The good client: rounds of ROUND bytes through the kernel echo, SHA-256 each;
    after the last round the connection stays open until ``hold`` is set (so the
    resource counts after the hostile left still include it)."""
    from fpd import client
    rounds = bytes_ok = bad = 0
    try:
        c = client.create_connection((bed.peer_ip, GOOD_PORT), timeout=20)
        with c:
            while time.monotonic() < end or rounds == 0:
                data = _pattern(ROUND, rounds)
                err: list = []

                def send():
                    try:
                        c.sendall(data)
                    except OSError as e:
                        err.append(e)
                t = threading.Thread(target=send, daemon=True)
                t.start()
                h = hashlib.sha256()
                got = 0
                while got < ROUND:
                    d = c.recv(min(1 << 18, ROUND - got))
                    if not d:
                        raise ConnectionError(f"EOF after {got} bytes of round {rounds}")
                    h.update(d)
                    got += len(d)
                t.join(20)
                if err:
                    raise err[0]
                if h.hexdigest() != hashlib.sha256(data).hexdigest():
                    bad += 1
                else:
                    bytes_ok += ROUND
                rounds += 1
                box["progress"] = rounds
            box["done"] = True
            hold.wait(120)
    except Exception as e:                       # noqa: BLE001  (reported, asserted)
        box["error"] = f"{type(e).__name__}: {e}"
    box.update(rounds=rounds, bytes=bytes_ok, bad_rounds=bad)


def _scrape(bed, port: int) -> str:
    s = bed.socket(bed.srv_ns)
    s.settimeout(5)
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        out = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    finally:
        s.close()
    return out.decode("utf-8", "replace")


def run(bed, d, duration: float = 60.0, seed: int = 1, metrics_port: int | None = None,
        log=print) -> dict:
    """The hostile client against daemon ``d`` (tests/integration/fpdd.Daemon, serving
    PORTS with local ports for connects) for ``duration`` s while the good client
    streams. Returns the report (the caller asserts)."""
    from fpd import client
    client.set_default_socket(d.socket)
    ks = _KernelSide(bed)
    hostile = None
    hold = threading.Event()
    rep: dict = {"duration": duration, "seed": seed}
    try:
        worker = d.workers[0]
        good: dict = {}
        t0 = time.monotonic()
        gt = threading.Thread(target=_good_stream, args=(bed, t0 + duration, good, hold),
                              daemon=True)
        gt.start()
        # the baseline once the good client has streamed a round (attached, its slot's
        # doorbell registered: it blocked at least once)
        deadline = time.monotonic() + 30
        while not good.get("progress") and "error" not in good and time.monotonic() < deadline:
            time.sleep(0.05)
        before = _proc_sample(worker)
        st0 = d.stats()
        w0 = st0["workers"][0]
        rep["before"] = {**before, "clients": w0.get("clients"),
                         "slots_in_use": w0.get("slots_in_use")}
        argv = [sys.executable, os.path.abspath(__file__), "--role", "hostile",
                "--socket", d.socket, "--duration", str(duration), "--seed", str(seed),
                "--peer", bed.peer_ip]
        hostile = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        rep["hostile_pid"] = hostile.pid
        peak = dict(before)
        seen_hostile_conns = 0
        while hostile.poll() is None:
            time.sleep(0.5)
            s = _proc_sample(worker)
            for k in peak:
                peak[k] = max(peak[k], s[k])
            if time.monotonic() - t0 > duration + 30:
                hostile.kill()
                rep["hostile_hung"] = True
                break
            with contextlib.suppress(Exception):
                cs = d.conns()
                seen_hostile_conns = max(seen_hostile_conns, sum(
                    1 for c in cs["conns"] if c.get("owner_pid") == hostile.pid))
        out, err = hostile.communicate(timeout=30)
        try:
            rep["hostile"] = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            rep["hostile"] = {"error": f"no report: rc {hostile.returncode} {err[-2000:]}"}
        rep["hostile_rc"] = hostile.returncode
        rep["hostile_conns_seen"] = seen_hostile_conns
        deadline = time.monotonic() + 60
        while not good.get("done") and "error" not in good and gt.is_alive() \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        # the hostile is gone: the worker must have let go of everything it had
        deadline = time.monotonic() + 10
        while True:
            st = d.stats()
            w = st["workers"][0]
            after = _proc_sample(worker)
            cs = d.conns()
            mine = [c for c in cs["conns"] if c.get("owner_pid") == hostile.pid]
            mine_l = [x for x in cs["listeners"] if x.get("owner_pid") == hostile.pid]
            done = (w.get("clients") == rep["before"]["clients"]
                    and w.get("slots_in_use") == rep["before"]["slots_in_use"]
                    and after["memfd_maps"] == before["memfd_maps"]
                    and after["fds"] <= before["fds"] and not mine and not mine_l)
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        rep["after"] = {**after, "clients": w.get("clients"),
                        "slots_in_use": w.get("slots_in_use"),
                        "hostile_conns_left": len(mine), "hostile_listeners_left": len(mine_l)}
        rep["peak"] = peak
        rep["service"] = w.get("service") or {}
        rep["supervisor"] = st.get("supervisor") or {}
        rep["status"] = d.status()
        rep["daemon_alive"] = d.alive()
        hold.set()
        gt.join(30)
        rep["good"] = good
        if metrics_port:
            rep["metrics"] = [ln for ln in _scrape(bed, metrics_port).splitlines()
                              if ln.startswith(("fpd_worker_service_", "fpd_supervisor_"))]
    finally:
        hold.set()
        if hostile is not None and hostile.poll() is None:
            hostile.kill()
            hostile.wait()
        ks.close()
        rep["kernel_ends"] = dict(ks.ends)
        rep["log_warnings"] = [ln for ln in d.log_text().splitlines()
                               if " ERROR " in ln or "Traceback" in ln][-20:]
        client.set_default_socket(None)
    log(summary(rep))
    return rep


def summary(rep: dict) -> str:
    g, h = rep.get("good", {}), rep.get("hostile", {})
    svc, sup = rep.get("service", {}), rep.get("supervisor", {})
    b, a, p = rep.get("before", {}), rep.get("after", {}), rep.get("peak", {})
    lines = [
        f"hostile client, {rep['duration']:g} s, seed {rep['seed']}",
        f"  good client: {g.get('rounds')} rounds, {g.get('bytes', 0) / 1e6:.1f} MB intact, "
        f"{g.get('bad_rounds')} bad{', ' + g['error'] if 'error' in g else ''}",
        f"  hostile: {h.get('sessions')} sessions, {h.get('attached')} attaches, "
        f"{h.get('connects')} connects, {h.get('dropped_by_daemon')} dropped by the daemon, "
        f"{h.get('scribbled_bytes', 0) / 1e6:.1f} MB scribbled, ftruncate refused "
        f"{h.get('ftruncate_refused', 0)} / allowed {h.get('ftruncate_allowed', 0)}",
        f"  kernel peers of its connections: {rep.get('kernel_ends')}",
        f"  worker: fds {b.get('fds')} -> peak {p.get('fds')} -> {a.get('fds')}, memfd maps "
        f"{b.get('memfd_maps')} -> peak {p.get('memfd_maps')} -> {a.get('memfd_maps')}, "
        f"RSS {b.get('rss_kib')} -> peak {p.get('rss_kib')} -> {a.get('rss_kib')} KiB, "
        f"clients {b.get('clients')} -> {a.get('clients')}, slots {b.get('slots_in_use')} "
        f"-> {a.get('slots_in_use')}",
        "  service counters: " + ", ".join(f"{k}={v}" for k, v in sorted(svc.items())),
        "  supervisor counters: " + ", ".join(f"{k}={v}" for k, v in sorted(sup.items())),
        f"  daemon alive: {rep.get('daemon_alive')}",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="write the report here")
    ap.add_argument("--role", choices=["harness", "hostile"], default="harness")
    ap.add_argument("--socket", help=argparse.SUPPRESS)
    ap.add_argument("--peer", default="10.77.0.2", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.role == "hostile":
        print(json.dumps(hostile_main(a.socket, a.duration, a.seed, a.peer)), flush=True)
        return 0
    from fpd.testbed import TestBed
    from fpdd import fpd_daemon
    mport = 9479
    with TestBed() as bed:
        with fpd_daemon(bed, PORTS, local_ports=(61100, 61199),
                        extra=["--metrics", f"127.0.0.1:{mport}"]) as d:
            rep = run(bed, d, a.duration, a.seed, metrics_port=mport)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rep, f, indent=1)
    ok = (rep["daemon_alive"] and not rep["good"].get("error")
          and not rep["good"].get("bad_rounds") and not rep["after"]["hostile_conns_left"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
