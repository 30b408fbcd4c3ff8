"""A worker without a NIC, and a daemon made of them: the real client library, the real
service (:mod:`fpd.control`) and the real engine end to end, no root, no XDP.

    with LoopbackDaemon(tmpdir, workers=2) as d:
        fpd.client.set_default_socket(d.path)
        s = fpd.client.create_connection((PEER, 7))      # an echo server on the peer

:class:`LoopbackWorker` implements :class:`fpd.host.Host`: the service's stack (address
:data:`ADDR`) and a peer stack (:data:`PEER`, echo servers on ``echo_ports``) exchange
segments over an in-memory link, each one built to an IPv4 packet and parsed back
(:func:`fpd.wire.build_packet` / :func:`fpd.wire.parse_packet`), after ``delay``
seconds. A segment to :data:`ADDR` goes back into the service's own stack (a client can
connect to its own listeners, as over ``lo``); one to any other address (such as
:data:`BLACKHOLE`) vanishes. The loop follows :class:`fpd.worker.Worker`'s iteration:
calls, readers, link input, timers, ``app``, ``iter_hook``, output; it sleeps in
``poll()`` only after ``sleep_hook`` agreed.

:class:`LoopbackDaemon` runs one loopback worker per "queue", each with its
:class:`fpd.control.Service`, in threads, and a supervisor thread answering
:data:`fpd.proto.SUPERVISOR_OPS` on a unix socket as :mod:`fpd.daemon` does (hello,
attach handed to the worker, status, stats, conns, stop). :meth:`LoopbackDaemon.kill`
is SIGKILL (everything gone at once, no event), :meth:`LoopbackDaemon.stop` is
``fpd stop`` (EV_SHUTDOWN first).
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import os
import select
import socket
import struct
import threading
import time

from . import fastpath, proto, wire
from . import tcp as _tcp
from .control import Service, WorkerConfig
from .stack import Stack, StackConfig

__all__ = ["LoopbackWorker", "LoopbackDaemon", "loopback_host", "ADDR", "PEER", "BLACKHOLE", "PORTS"]

ADDR = "10.77.0.1"                 # the service's stack (what hello calls addr)
PEER = "10.77.0.2"                 # the peer stack: echo servers
BLACKHOLE = "10.77.0.99"           # nobody: a connect there never completes
PORTS = (7, 8080, 8081, 8082, 8083, 8084, 8085, 9000)     # listen ports "steered"
LOCAL_PORTS = (60000, 60255)
_ECHO_HOLD = 1 << 20               # bytes an echo connection buffers before it stops reading


class LoopbackWorker:
    """The service's stack and a peer stack over an in-memory link (see the module
    documentation). Thread-safe: :meth:`call_soon` and :meth:`stop`; everything else
    belongs to the thread running :meth:`run`."""

    def __init__(self, queue: int = 0, *, addr: str = ADDR, peer: str = PEER,
                 echo_ports=(7,), mss: int = 1448, stack_config: StackConfig | None = None,
                 delay: float = 0.0, clock=time.monotonic, max_sleep: float = 0.05,
                 burst: bool = False):
        self.queue = queue
        self.burst = burst                 # the service's segments through input_burst
        self.addr = wire.ip_to_bytes(addr)
        self.peer_addr = wire.ip_to_bytes(peer)
        self.mss = mss
        self.delay = delay                 # one-way, seconds (may change while running)
        self.clock = clock
        self.max_sleep = max_sleep
        cfg = dataclasses.replace(stack_config or StackConfig(), mss=mss)
        self.stack = Stack(os.urandom(16), cfg)
        self.peer = Stack(os.urandom(16), cfg)
        for p in echo_ports:
            self.peer.listen(self.peer_addr, p)
        self.app = self.iter_hook = self.sleep_hook = self.wake_hook = None
        self._link: list = []              # heap of (deliver at, n, packet bytes)
        self._n = 0
        self._echo: dict = {}              # peer connection -> bytearray to send back
        self._calls: collections.deque = collections.deque()
        self._readers: dict = {}
        self._ready: list = []
        self._poll = select.poll()
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._poll.register(self._wake_fd, select.POLLIN)
        self._stop = False
        self._closed = False
        self.counters = collections.Counter()

    # -- the Host interface (and what control.worker_main needs) ----------------------------
    def fileno(self) -> int:
        """A descriptor standing in for the XSK (what ``Ready`` passes the supervisor)."""
        return self._wake_fd

    def add_reader(self, fd: int, fn) -> None:
        self._readers[fd] = fn
        self._poll.register(fd, select.POLLIN)

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            try:
                self._poll.unregister(fd)
            except (KeyError, ValueError):
                pass

    def stats(self) -> dict:
        d = dict(self.counters)
        d["stack"] = self.stack.counters()
        return d

    # -- thread-safe -----------------------------------------------------------------------
    def call_soon(self, fn) -> None:
        """Run ``fn(worker, now)`` in the loop's thread at its next iteration."""
        self._calls.append(fn)
        self._wake()

    def stop(self) -> None:
        self._stop = True
        self._wake()

    def _wake(self) -> None:
        try:
            os.eventfd_write(self._wake_fd, 1)
        except OSError:
            pass

    # -- the loop --------------------------------------------------------------------------
    def run(self, until=None) -> None:
        """Loop until :meth:`stop` (or ``until()``); sleeps until the next engine
        deadline or link delivery when idle."""
        work = 1
        try:
            while not self._stop and (until is None or not until()):
                timeout = 0.0
                if not work:
                    now = self.clock()
                    timeout = self.max_sleep
                    for dl in (self.stack.next_deadline(), self.peer.next_deadline(),
                               self._link[0][0] if self._link else None):
                        if dl is not None and dl - now < timeout:
                            timeout = max(0.0, dl - now)
                work = self.poll_once(timeout)
        finally:
            self._stop = False

    def poll_once(self, timeout: float = 0.0) -> int:
        self.counters["iterations"] += 1
        slept = False
        if timeout > 0 and not self._calls and not self._ready and not self._due():
            hook = self.sleep_hook
            if hook is None or hook(self.clock()):
                self.counters["sleeps"] += 1
                slept = True
                try:
                    self._poll_fds(int(timeout * 1000 + 0.999))
                finally:
                    if self.wake_hook is not None:
                        self.wake_hook()
        if not slept:
            self._poll_fds(0)
        now = self.clock()
        work = 0
        calls = self._calls
        while calls:
            calls.popleft()(self, now)
            work += 1
        if self._ready:
            ready, self._ready = self._ready, []
            for fd in ready:
                fn = self._readers.get(fd)
                if fn is not None:
                    fn(now)
                    work += 1
        work += self._deliver(now)
        stack = self.stack
        stack.tick(now)
        self.peer.tick(now)
        work += self._app(now)
        if self.iter_hook is not None:
            work += self.iter_hook(now)
            work += self._app(now)
        self._echo_events(now)
        work += self._send(now)
        return work

    def _app(self, now) -> int:
        n = 0
        for _ in range(16):
            evs = self.stack.events()
            if not evs:
                break
            n += len(evs)
            if self.app is not None:
                self.app(self, evs, now)
        return n

    def _poll_fds(self, ms: int) -> None:
        for fd, _ in self._poll.poll(ms):
            if fd == self._wake_fd:
                try:
                    os.eventfd_read(self._wake_fd)
                except BlockingIOError:
                    pass
            elif fd in self._readers:
                self._ready.append(fd)

    # -- the link --------------------------------------------------------------------------
    def _due(self) -> bool:
        return bool(self._link) and self._link[0][0] <= self.clock()

    def _send(self, now) -> int:
        n = 0
        at = now + self.delay
        for st in (self.stack, self.peer):
            for seg in st.output_coalesced():
                self._n += 1
                heapq.heappush(self._link, (at, self._n, wire.build_packet(seg)))
                n += 1
        self.counters["segments"] += n
        return n

    def _deliver(self, now) -> int:
        link = self._link
        n = 0
        burst = [] if self.burst else None
        while link and link[0][0] <= now:
            pkt = heapq.heappop(link)[2]
            fr = wire.parse_packet(pkt)
            seg = fr.seg
            if seg.dst == self.addr:
                if burst is None:
                    self.stack.input(seg, now)
                else:
                    burst.append(seg)
            elif seg.dst == self.peer_addr:
                self.peer.input(seg, now)
            else:
                self.counters["blackholed"] += 1
            n += 1
        if burst:
            fastpath.input_burst(self.stack, burst, now)
        return n

    # -- the peer's applications: echo -----------------------------------------------------
    def _echo_events(self, now) -> None:
        for _ in range(16):
            evs = self.peer.events()
            if not evs:
                return
            for ev in evs:
                kind = ev[0]
                if kind == _tcp.EV_ACCEPTED:
                    self._echo[ev[2]] = bytearray()
                    self._echo_pump(ev[2], now)
                elif kind in (_tcp.EV_READABLE, _tcp.EV_WRITABLE, _tcp.EV_PEER_CLOSED):
                    self._echo_pump(ev[1], now)
                elif kind in (_tcp.EV_RESET, _tcp.EV_TIMED_OUT, _tcp.EV_CLOSED):
                    self._echo.pop(ev[1], None)

    def _echo_pump(self, conn, now) -> None:
        buf = self._echo.get(conn)
        if buf is None:
            return
        try:
            while True:
                room = _ECHO_HOLD - len(buf)
                if conn.readable and room > 0:
                    buf += conn.recv(min(room, conn.readable))
                if not buf:
                    break
                sent = conn.send(bytes(buf), now)
                del buf[:sent]
                if not sent or not conn.readable:
                    break
            if not buf and conn.eof:
                del self._echo[conn]
                conn.close(now)
        except (OSError, ConnectionError):
            self._echo.pop(conn, None)

    def close(self) -> None:
        """Reset what is left (call after the loop stopped)."""
        if self._closed:
            return
        self._closed = True
        now = self.clock()
        for st in (self.stack, self.peer):
            for c in st.connections():
                try:
                    c.abort(now)
                except Exception:
                    pass
            st.events()
        os.close(self._wake_fd)


def loopback_host(cfg: WorkerConfig, **worker_kw):
    """A ``make_host`` for :func:`fpd.control.worker_main`: a loopback worker for
    ``cfg.queue`` at ``cfg.addr`` (default :data:`ADDR`)."""
    w = LoopbackWorker(cfg.queue, addr=cfg.addr or ADDR, **worker_kw)
    return w, (lambda dst: w.addr), "loopback"


class LoopbackDaemon:
    """``workers`` loopback workers, each with a real :class:`fpd.control.Service`, and
    a supervisor answering on the unix socket ``path`` (``DIR/fpd.sock`` when given a
    directory). Starts at once; :meth:`stop` / :meth:`kill` / the context manager end
    it. ``worker_kw`` goes to every :class:`LoopbackWorker`."""

    def __init__(self, path: str, *, workers: int = 2, ports=PORTS, addr: str = ADDR,
                 local_ports=LOCAL_PORTS, **worker_kw):
        if os.path.isdir(path):
            path = os.path.join(path, "fpd.sock")
        self.path = path
        self.addr = addr
        self.ports = list(ports)
        self.local_ports = list(local_ports)
        lo, hi = local_ports
        local = list(range(lo, hi + 1))
        self.workers = [LoopbackWorker(q, addr=addr, **worker_kw) for q in range(workers)]
        self.services = []
        for q, w in enumerate(self.workers):
            cfg = WorkerConfig(ifname="loopback", queue=q, nqueues=workers, ports=self.ports,
                               addr=addr, local_ports=local[q::workers])
            self.services.append(Service(w, cfg, route=lambda dst, w=w: w.addr))
        self.errors: list = []
        self._threads: list = []
        self._srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        self._srv.bind(path)
        self._srv.listen(64)
        self._srv.setblocking(False)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._done = False
        for w in self.workers:
            self._start(f"fpd-loopback-q{w.queue}", w.run)
        self._start("fpd-loopback-sup", self._serve)

    def _start(self, name, fn) -> None:
        def body():
            try:
                fn()
            except BaseException as e:          # surfaced by the tests (self.errors)
                self.errors.append(e)
                raise
        t = threading.Thread(target=body, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    @property
    def alive(self) -> bool:
        return not self._done

    # -- test API --------------------------------------------------------------------------
    def call(self, fn, q: int = 0, timeout: float = 5.0):
        """``fn(worker, service)`` in worker ``q``'s loop thread; its result."""
        box: list = []
        ev = threading.Event()
        svc = self.services[q]

        def run(w, now):
            try:
                box.append((True, fn(w, svc)))
            except BaseException as e:           # handed back to the caller
                box.append((False, e))
            ev.set()
        self.workers[q].call_soon(run)
        if not ev.wait(timeout):
            raise TimeoutError(f"loopback worker q{q} did not run the call")
        ok, v = box[0]
        if not ok:
            raise v
        return v

    def kill(self) -> None:
        """Like SIGKILL: the loops stop, every client's connection and region goes at
        once (their control sockets hang up), no event is posted."""
        if self._done:
            return
        self._done = True
        os.write(self._wake_w, b"x")
        for w in self.workers:
            w.stop()
        for t in self._threads:
            t.join(5)
        for svc, w in zip(self.services, self.workers):
            for c in list(svc.clients.values()):
                svc.drop(c, "killed")
            w.close()
        self._srv.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._wake_r)
        os.close(self._wake_w)

    def stop(self) -> None:
        """Like ``fpd stop``: each worker tells its clients (EV_SHUTDOWN), resets its
        connections, then everything goes."""
        if self._done:
            return
        for q in range(len(self.workers)):
            try:
                self.call(lambda w, svc: svc.shutdown(), q)
            except TimeoutError:
                pass
        self.kill()

    # -- the supervisor --------------------------------------------------------------------
    def _serve(self) -> None:
        sel = select.poll()
        sel.register(self._srv, select.POLLIN)
        sel.register(self._wake_r, select.POLLIN)
        pending: dict = {}
        while not self._done:
            for fd, _ in sel.poll(1000):
                if fd == self._wake_r:
                    return
                if fd == self._srv.fileno():
                    while True:
                        try:
                            c, _ = self._srv.accept()
                        except (BlockingIOError, OSError):
                            break
                        pending[c.fileno()] = c
                        sel.register(c, select.POLLIN)
                    continue
                c = pending.pop(fd, None)
                if c is None:
                    continue
                sel.unregister(fd)
                try:
                    self._on_client(c)
                except OSError:
                    c.close()
        for c in pending.values():
            c.close()

    def _on_client(self, c: socket.socket) -> None:
        c.settimeout(2.0)
        d, _ = proto.recv(c)
        if d is None:
            c.close()
            return
        try:
            msg = proto.parse(d, proto.SUPERVISOR_OPS)
        except proto.ProtocolError as e:
            proto.send(c, proto.fail(e.errno, str(e)))
            c.close()
            return
        if isinstance(msg, proto.Attach):
            if not 0 <= msg.queue < len(self.workers):
                proto.send(c, proto.fail(22, f"no worker for queue {msg.queue}"))
                c.close()
                return
            pid, uid, gid = struct.unpack(
                "3i", c.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            cred = {"pid": pid, "uid": uid, "gid": gid}
            svc = self.services[msg.queue]
            self.workers[msg.queue].call_soon(lambda w, now: svc.adopt(c, d, cred))
            return                               # the service answers it
        if isinstance(msg, proto.Hello):
            body = proto.HelloReply(version=proto.VERSION, workers=len(self.workers),
                                    pid=os.getpid(), ifname="loopback", addr=self.addr,
                                    ports=self.ports, local_ports=self.local_ports).body()
            reply = proto.ok(**body)
        elif isinstance(msg, proto.Stats):
            reply = proto.ok(workers=[self.call(lambda w, svc: svc.stats(), q)
                                      for q in range(len(self.workers))])
        elif isinstance(msg, proto.Conns):
            conns, listeners = [], []
            for q in range(len(self.workers)):
                r = self.call(lambda w, svc: svc.conns(), q)
                conns += r["conns"]
                listeners += r["listeners"]
            reply = proto.ok(conns=conns, listeners=listeners)
        elif isinstance(msg, proto.Status):
            reply = proto.ok(pid=os.getpid(), ifname="loopback", addr=self.addr,
                             ports=self.ports, queues=len(self.workers))
        else:                                    # proto.Stop
            reply = proto.ok(pid=os.getpid())
            threading.Thread(target=self.stop, daemon=True).start()
        try:
            proto.send_fitting(c, reply)
        finally:
            c.close()
