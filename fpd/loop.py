"""fpd's asyncio event loop: the application and the TCP engine in one thread.

    import asyncio, fpd.loop
    asyncio.run(main(), loop_factory=...)            # Python >= 3.12
    with asyncio.Runner(loop_factory=fpd.loop.new_event_loop) as r:
        r.run(main())
    fpd.loop.install()                               # the policy: asyncio.run() uses it

:class:`FpdEventLoop` is asyncio's selector loop whose TCP is fpd's engine: a
:class:`fpd.worker.Worker` owned by the loop's process (under ``fpd run`` the worker of
this process's queue; otherwise the one given to :func:`new_event_loop`). One iteration
of the loop runs one iteration of the worker (RX burst -> engine -> the protocols'
callbacks -> engine -> TX), so a frame and the app's answer to it leave in the same burst
(run to completion: no queue, no second process, no wake-up in between). Everything else
(kernel sockets, pipes, subprocesses, signals, ``run_in_executor``, UDP) is served by the
selector as usual. When the loop has nothing to do it sleeps in the worker's ``poll()``,
which also watches the selector's own epoll descriptor, so whichever side gets work
first wakes the loop; the time-out is the earliest of asyncio's timers and the engine's
deadlines.

Which connections are fpd's:

- ``create_server(host, port)``: fpd's when ``port`` is steered by this fpd (``fpd run -p
  PORT``) and ``host`` is any/None or an IPv4 address; otherwise (and with ``sock=``) the
  kernel's, with a warning once per port when fpd is active.
- ``create_connection(host, port)``: fpd's when the route to the (IPv4) destination leaves
  through fpd's interface and fpd has local ports for it; otherwise the kernel's.

Transports follow asyncio's contract (``write``/``writelines``/``write_eof``/``close``/
``abort``, ``pause_reading``/``resume_reading``, write-buffer limits with
``pause_writing``/``resume_writing``, ``get_extra_info('peername'|'sockname'|'socket')``).
Reading paused leaves the bytes in the engine, whose advertised window then closes: the
peer is flow-controlled end to end. A :class:`asyncio.BufferedProtocol` gets the bytes
with one copy, from the engine's receive buffer straight into the protocol's buffer. TLS
(``ssl=``) is asyncio's own SSL protocol layered on the fpd transport. An exception in a
protocol callback aborts that connection (RST, logged through the loop's exception
handler); the loop and the worker carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno as _errno
import ipaddress
import logging
import os
import selectors
import socket
import sys
import threading
import time
import warnings

from asyncio import sslproto
from asyncio.transports import _FlowControlMixin

from . import wire
from .stack import ANY
from .tcp import (EV_ACCEPTED, EV_CLOSED, EV_CONNECTED, EV_PEER_CLOSED, EV_READABLE,
                  EV_REFUSED, EV_RESET, EV_TIMED_OUT, EV_WRITABLE)

__all__ = ["FpdEventLoop", "FpdEventLoopPolicy", "new_event_loop", "install", "Context",
           "set_context", "get_context"]

log = logging.getLogger("fpd.loop")

_SENTINEL = object()

#: stay in the busy-poll spin after a pass with work while asyncio has nothing to run
#: (one asyncio ``_run_once`` per burst of work instead of one per pass); read by each new
#: loop. ``FPD_LOOP_STAY=0``: one ``_run_once`` per pass with work, as stop 17 (A/B runs)
STAY = os.environ.get("FPD_LOOP_STAY", "1") != "0"


# --- the process's fpd context (set by `fpd run` in each worker process) ------------------
class Context:
    """What a loop needs to use fpd in this process: the :class:`Worker`, the ports fpd
    steers (listen), the local ports this worker may use for ``connect``, the address fpd
    serves (None = any address of the interface), and optionally an
    :class:`EngineThread` that drives the worker while no fpd loop runs."""

    def __init__(self, worker, ports=(), local_ports=(), addr=None, engine=None):
        self.worker = worker
        self.ports = set(int(p) for p in ports)
        self.local_ports = list(local_ports)
        self.addr = addr
        self.engine = engine
        self.lp_next = 0
        self.owner = None               # the loop driving the worker now
        self.warned: set = set()


_context: Context | None = None
_tls = threading.local()        # .inside: this thread is inside Worker.poll_once


def set_context(ctx: Context | None) -> None:
    """Make ``ctx`` the process's fpd context (new loops use it by default)."""
    global _context
    _context = ctx


def get_context() -> Context | None:
    return _context


def route_src(ctx: Context, dst: bytes):
    """Our source address towards ``dst`` if the route leaves through fpd's interface,
    else None (``ctx``'s worker's namespace)."""
    w = ctx.worker
    if dst[0] == 127:
        return None
    from . import neigh, netns
    inside = getattr(_tls, "inside", False)
    _tls.inside = True          # pyroute2's private event loop: a plain one
    try:
        with netns.inside(w._ns_fd):
            oif, _gw, src = neigh.route_get(dst)
    except (neigh.NeighError, OSError):
        return None
    finally:
        _tls.inside = inside
    if oif != w.ifindex:
        return None
    if ctx.addr:
        return wire.ip_to_bytes(ctx.addr)
    return wire.ip_to_bytes(src) if isinstance(src, str) else src


def pick_port(ctx: Context, src, dst, dport) -> int:
    """A local port of ``ctx``'s share free towards ``dst:dport`` (round robin)."""
    lp = ctx.local_ports
    n = len(lp)
    find = ctx.worker.stack.find
    for i in range(n):
        p = lp[(ctx.lp_next + i) % n]
        if find((src, p), (dst, dport)) is None:
            ctx.lp_next = (ctx.lp_next + i + 1) % n
            return p
    raise OSError(_errno.EADDRNOTAVAIL, f"all {n} fpd local ports are in use towards "
                                        f"{wire.ip_to_str(dst)}:{dport}")


class EngineThread:
    """Drives a worker while no fpd loop runs in the process (``fpd run``).

    A thread of the program that blocks in :mod:`fpd.client` drives the engine itself
    while it waits (:meth:`drive`, installed as ``fpd.client._poll_hook``): one
    ``Worker.poll_once`` after the other until its bell rings, in its own thread, so
    the program and its TCP meet with no thread switch (OpenOnload's way). While no
    program thread waits, the engine thread (``fpd-engine``) drives instead. ``lock``
    is held by whoever is inside ``poll_once``; an fpd loop takes the worker over with
    :meth:`pause` (it then holds ``lock`` until :meth:`resume`)."""

    def __init__(self, worker):
        self.worker = worker
        self.lock = threading.Lock()
        self._cv = threading.Condition()
        self.drivers = 0
        self._thread: threading.Thread | None = None
        self._quit = False
        self._paused = False
        self._last_work = 0.0
        self.want = 0                  # threads waiting for ``lock`` for a short operation
        self.idle_since = 0.0          # when the last waiting program thread left
        self.lazy = 0.001              # the engine thread drives after this much idleness

    def _timeout(self, now, limit):
        w = self.worker
        if now - self._last_work < w.spin or w._txq:
            return 0.0
        t = w.max_sleep if limit is None or limit > w.max_sleep else limit
        dl = w.stack.next_deadline()
        if dl is not None and dl - now < t:
            t = dl - now if dl > now else 0.0
        if w._parked and t > 0.002:
            t = 0.002
        return t

    def _once(self, limit) -> None:
        w = self.worker
        _tls.inside = True
        try:
            n = w.poll_once(self._timeout(w.clock(), limit))
        finally:
            _tls.inside = False
        if n:
            self._last_work = w.clock()
        else:
            w._readers_at = 0.0

    def _main(self):
        # A program thread that waits (fpd.client's drive, fpd.inproc) drives itself; the
        # engine thread steps in only after ``lazy`` seconds (1 ms) without one, so that a
        # program thread between two calls (its answer computed, its send next) does not
        # find the engine thread holding the lock, asleep in poll().
        cv = self._cv
        clock = self.worker.clock
        while not self._quit:
            with cv:
                while not self._quit:
                    if self.drivers or self.want:
                        cv.wait(self.lazy)
                        continue
                    idle = clock() - self.idle_since
                    if idle < self.lazy:
                        cv.wait(self.lazy - idle)
                        continue
                    break
            if self._quit:
                break
            with self.lock:
                if not self.drivers and not self.want and not self._quit:
                    self._once(0.01)

    def drive(self, p, ms):
        """``fpd.client``'s sleep (``p.poll(ms)``), driving the engine meanwhile."""
        w = self.worker
        clock = w.clock
        end = None if ms is None or ms < 0 else clock() + ms / 1000.0
        with self._cv:
            self.drivers += 1
        try:
            w._wake()                      # out of the engine thread's poll(), if there
            while True:
                r = p.poll(0)
                if r:
                    return r
                now = clock()
                if end is not None and now >= end:
                    return []
                if self._paused or self.want or not self.lock.acquire(False):
                    # an fpd loop (or another waiting thread) drives: its work rings
                    # our bells
                    left = 10 if end is None else max(0, min(10, int((end - now) * 1000)))
                    return p.poll(left)
                try:
                    if self._paused:
                        continue
                    self._once(None if end is None else end - now)
                finally:
                    self.lock.release()
        finally:
            with self._cv:
                self.drivers -= 1
                self.idle_since = clock()

    def is_current(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            self.lock.release()
        if self._thread is not None:
            return
        self._quit = False
        self._thread = threading.Thread(target=self._main, name="fpd-engine", daemon=True)
        self._thread.start()

    def pause(self) -> None:
        """Stop the engine thread and hold the worker (until :meth:`resume`)."""
        t = self._thread
        if t is not None:
            self._quit = True
            with self._cv:
                self._cv.notify_all()
            self.worker._wake()
            t.join()
            self._thread = None
        if not self._paused:
            self.lock.acquire()
            self._paused = True


# --- a socket-like object for get_extra_info("socket") -----------------------------------
class FpdSocket:
    """What ``transport.get_extra_info("socket")`` returns for an fpd connection: names,
    and the options that mean something to the engine (TCP_NODELAY, SO_KEEPALIVE,
    SO_RCVBUF, SO_SNDBUF). It is not a kernel socket: ``fileno()`` is -1."""

    family = socket.AF_INET
    type = socket.SOCK_STREAM
    proto = socket.IPPROTO_TCP

    def __init__(self, conn=None, listener=None):
        self._conn = conn
        self._listener = listener

    def fileno(self) -> int:
        return -1

    def getsockname(self):
        if self._listener is not None:
            a, p = self._listener
            return (wire.ip_to_str(a), p)
        a, p = self._conn.local
        return (wire.ip_to_str(a), p)

    def getpeername(self):
        if self._conn is None:
            raise OSError(_errno.ENOTCONN, "not connected")
        a, p = self._conn.remote
        return (wire.ip_to_str(a), p)

    def setsockopt(self, level, optname, value, *a) -> None:
        c = self._conn
        if c is None:
            return
        if level == socket.IPPROTO_TCP and optname == socket.TCP_NODELAY:
            c.nodelay = bool(value)
        elif level == socket.SOL_SOCKET and optname == socket.SO_KEEPALIVE:
            c.keepalive = bool(value)
        elif level == socket.SOL_SOCKET and optname in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            pass                            # fixed at connection set-up in the engine
        elif level == socket.SOL_SOCKET and optname == socket.SO_REUSEADDR:
            pass
        else:
            raise OSError(_errno.ENOPROTOOPT, "option not supported on an fpd socket")

    def getsockopt(self, level, optname, buflen=None):
        c = self._conn
        if level == socket.IPPROTO_TCP and optname == socket.TCP_NODELAY:
            return int(bool(c is not None and c.nodelay))
        if level == socket.SOL_SOCKET and optname == socket.SO_KEEPALIVE:
            return int(bool(c is not None and c.keepalive))
        if level == socket.SOL_SOCKET and optname == socket.SO_ERROR:
            return 0
        if level == socket.SOL_SOCKET and optname == socket.SO_TYPE:
            return socket.SOCK_STREAM
        raise OSError(_errno.ENOPROTOOPT, "option not supported on an fpd socket")

    def __repr__(self):
        try:
            return f"<FpdSocket {self.getsockname()}>"
        except Exception:
            return "<FpdSocket>"


# --- the transport ----------------------------------------------------------------------
class FpdTransport(_FlowControlMixin):
    """One fpd TCP connection as an asyncio transport (see the module docstring). A
    ``_FlowControlMixin`` as asyncio's own socket transports are, so that asyncio's
    helpers that insist on one (``loop.sendfile``'s fallback) accept it."""

    _sendfile_compatible = asyncio.constants._SendfileMode.FALLBACK   # write by write

    def __init__(self, loop, conn, protocol, extra=None):
        super().__init__(extra, loop)
        self._loop = loop
        self._conn = conn
        self._buf = bytearray()          # bytes the engine's send buffer did not take
        self._closing = False            # close() called
        self._lost = False               # connection_lost called or scheduled
        self._paused = False             # reading paused
        self._eof_done = False           # eof_received delivered
        self._eof_pending = False        # FIN arrived while paused / before delivery
        self._write_eof = False          # write_eof() asked (FIN after the buffer)
        self._protocol_paused = False
        self._high = 64 * 1024
        self._low = 16 * 1024
        self._sock = FpdSocket(conn)
        la, lp = conn.local
        ra, rp = conn.remote
        self._extra.setdefault("peername", (wire.ip_to_str(ra), rp))
        self._extra.setdefault("sockname", (wire.ip_to_str(la), lp))
        self._extra.setdefault("socket", self._sock)
        self.set_protocol(protocol)

    def __repr__(self):
        st = "closing" if self._closing else "open"
        return f"<FpdTransport {self._extra.get('peername')} {self._conn.state} {st}>"

    # -- protocol --------------------------------------------------------------------------
    def set_protocol(self, protocol):
        self._protocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)

    def get_protocol(self):
        return self._protocol

    # -- reading ---------------------------------------------------------------------------
    def is_reading(self):
        return not self._paused and not self._closing

    def pause_reading(self):
        if self._closing or self._paused:
            return
        self._paused = True

    def resume_reading(self):
        if self._closing or not self._paused:
            return
        self._paused = False
        if self._conn.readable or self._eof_pending:
            self._loop.call_soon(self._deliver)

    def _deliver(self):
        """Give the protocol what the engine has (unless paused), then a pending EOF."""
        if self._lost or self._closing:
            return
        conn = self._conn
        proto = self._protocol
        try:
            while conn.readable and not self._paused and not self._closing:
                if self._buffered:
                    buf = proto.get_buffer(conn.readable)
                    if not len(buf):
                        raise RuntimeError("get_buffer() returned an empty buffer")
                    n = conn.recv_into(buf)
                    proto.buffer_updated(n)
                else:
                    proto.data_received(conn.recv())
                self._loop._dirty = True     # the window update may owe a segment
            if self._eof_pending and not self._paused and not self._closing \
                    and not self._eof_done and not conn.readable:
                self._eof_done = True
                self._eof_pending = False
                keep = proto.eof_received()
                if not keep:
                    self.close()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal(exc, "Fatal error: protocol callback failed on an fpd connection")

    # -- writing ---------------------------------------------------------------------------
    def get_write_buffer_size(self):
        return len(self._buf)

    def get_write_buffer_limits(self):
        return (self._low, self._high)

    def set_write_buffer_limits(self, high=None, low=None):
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        self._maybe_pause_protocol()

    def write(self, data):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, "
                            f"not {type(data).__name__!r}")
        if self._write_eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data:
            return
        if self._lost or self._conn.error is not None or self._closing:
            return                        # asyncio: writes after loss are ignored (logged)
        if not self._buf:
            try:
                n = self._conn.send(data, self._loop._clock())
            except OSError as exc:
                self._fatal(exc, "Fatal write error on an fpd connection")
                return
            self._loop._dirty = True
            if n == len(data):
                return
            data = memoryview(data)[n:]
        self._buf += data
        self._maybe_pause_protocol()

    def writelines(self, list_of_data):
        self.write(b"".join(list_of_data))

    def _push(self):
        """Move buffered bytes into the engine (after EV_WRITABLE)."""
        buf = self._buf
        if buf and not self._lost:
            try:
                n = self._conn.send(buf, self._loop._clock())
            except OSError as exc:
                self._fatal(exc, "Fatal write error on an fpd connection")
                return
            if n:
                del buf[:n]
                self._loop._dirty = True
        if self._protocol_paused and len(buf) <= self._low:
            self._protocol_paused = False
            try:
                self._protocol.resume_writing()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._loop.call_exception_handler({
                    "message": "protocol.resume_writing() failed", "exception": exc,
                    "transport": self, "protocol": self._protocol})
        if not buf:
            if self._write_eof:
                self._conn.shutdown(self._loop._clock())
                self._loop._dirty = True
            if self._closing and not self._lost:
                self._finish_close()

    def _maybe_pause_protocol(self):
        if len(self._buf) <= self._high or self._protocol_paused:
            return
        self._protocol_paused = True
        try:
            self._protocol.pause_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler({
                "message": "protocol.pause_writing() failed", "exception": exc,
                "transport": self, "protocol": self._protocol})

    def can_write_eof(self):
        return True

    def write_eof(self):
        if self._write_eof or self._closing:
            return
        self._write_eof = True
        if not self._buf:
            self._conn.shutdown(self._loop._clock())
            self._loop._dirty = True

    # -- closing ---------------------------------------------------------------------------
    def is_closing(self):
        return self._closing

    def close(self):
        if self._closing:
            return
        self._closing = True
        if not self._buf:
            self._finish_close()

    def _finish_close(self):
        conn = self._conn
        if conn.state != "CLOSED":
            if conn.readable:
                conn.recv()                   # asyncio drops unread bytes on close: FIN,
            conn.close(self._loop._clock())   # not the RST Linux sends for unread data
            self._loop._dirty = True
        self._lose(None)

    def abort(self):
        self._closing = True
        self._buf.clear()
        conn = self._conn
        if conn.state != "CLOSED":
            conn.abort(self._loop._clock())
            self._loop._dirty = True
        self._lose(None)

    def _fatal(self, exc, message):
        if not isinstance(exc, OSError):
            self._loop.call_exception_handler({
                "message": message, "exception": exc, "transport": self,
                "protocol": self._protocol})
        self._closing = True
        self._buf.clear()
        conn = self._conn
        if conn.state != "CLOSED":
            conn.abort(self._loop._clock())
            self._loop._dirty = True
        self._lose(exc)

    def _lose(self, exc):
        if self._lost:
            return
        self._lost = True
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc):
        try:
            self._protocol.connection_lost(exc)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as e:
            self._loop.call_exception_handler({
                "message": "protocol.connection_lost() failed", "exception": e,
                "transport": self, "protocol": self._protocol})
        finally:
            self._protocol = None
            srv = self._extra.pop("_server", None)
            if srv is not None:
                srv._detach()

    # -- engine events ---------------------------------------------------------------------
    def _on_event(self, kind):
        if kind == EV_READABLE:
            if not self._paused:
                self._deliver()
        elif kind == EV_PEER_CLOSED:
            self._eof_pending = True
            if not self._paused:
                self._deliver()
        elif kind == EV_WRITABLE:
            self._push()
        elif kind in (EV_RESET, EV_TIMED_OUT, EV_REFUSED):
            if self._lost:
                return
            if self._conn.readable and not self._paused:
                self._deliver()               # bytes before the RST first
            err = self._conn.error or ConnectionResetError
            if kind == EV_TIMED_OUT:
                exc = TimeoutError(_errno.ETIMEDOUT, "Connection timed out")
            elif kind == EV_REFUSED:
                exc = ConnectionRefusedError(_errno.ECONNREFUSED, "Connection refused")
            else:
                exc = err(_errno.ECONNRESET, "Connection reset by peer") \
                    if err is ConnectionResetError else err()
            self._closing = True
            self._buf.clear()
            self._lose(exc)
        elif kind == EV_CLOSED:
            if not self._lost:
                if self._conn.readable and not self._paused:
                    self._deliver()
                self._closing = True
                self._lose(None)


# --- the server -------------------------------------------------------------------------
class FpdServer(asyncio.AbstractServer):
    """A listening fpd port (every fpd worker of the program listens on it)."""

    def __init__(self, loop, listener, protocol_factory, ssl, backlog,
                 ssl_handshake_timeout, ssl_shutdown_timeout):
        self._loop = loop
        self._listener = listener
        self._factory = protocol_factory
        self._ssl = ssl
        self._backlog = backlog
        self._hs_timeout = ssl_handshake_timeout
        self._sd_timeout = ssl_shutdown_timeout
        self._serving = False
        self._active = 0
        self._waiters: list = []
        self._serving_forever_fut = None
        self._sock = FpdSocket(listener=(listener.addr, listener.port)) \
            if hasattr(listener, "addr") else FpdSocket()

    def __repr__(self):
        return f"<FpdServer sockets={self.sockets!r}>"

    def get_loop(self):
        return self._loop

    def is_serving(self):
        return self._serving

    @property
    def sockets(self):
        if self._listener is None:
            return ()
        return (self._sock,)

    def _attach(self):
        self._active += 1

    def _detach(self):
        self._active -= 1
        if self._active == 0 and self._listener is None:
            self._wake()

    def _wake(self):
        for w in self._waiters:
            if not w.done():
                w.set_result(None)
        self._waiters = []

    def close(self):
        lst = self._listener
        if lst is None:
            return
        self._listener = None
        self._serving = False
        self._loop._unlisten(lst)
        if self._serving_forever_fut is not None and not self._serving_forever_fut.done():
            self._serving_forever_fut.cancel()
            self._serving_forever_fut = None
        if self._active == 0:
            self._wake()

    async def start_serving(self):
        if self._listener is not None:
            self._serving = True

    async def serve_forever(self):
        if self._serving_forever_fut is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._listener is None:
            raise RuntimeError(f"server {self!r} is closed")
        self._serving = True
        self._serving_forever_fut = self._loop.create_future()
        try:
            await self._serving_forever_fut
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever_fut = None

    async def wait_closed(self):
        if self._listener is None and (self._active == 0 or sys.version_info < (3, 12)):
            return                      # 3.11 returns once closed; 3.12+ waits for the
        w = self._loop.create_future()  # connections as well (as asyncio does)
        self._waiters.append(w)
        await w


# --- the selector: one loop iteration = one worker iteration -----------------------------
class _FpdSelector(selectors.BaseSelector):
    def __init__(self, loop, inner):
        self._loop = loop
        self._inner = inner

    def register(self, fileobj, events, data=None):
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj):
        return self._inner.unregister(fileobj)

    def modify(self, fileobj, events, data=None):
        return self._inner.modify(fileobj, events, data)

    def get_key(self, fileobj):
        return self._inner.get_key(fileobj)

    def get_map(self):
        return self._inner.get_map()

    def fileno(self):
        return self._inner.fileno()

    def close(self):
        self._inner.close()

    def select(self, timeout=None):
        return self._loop._fpd_select(self._inner, timeout)


class FpdEventLoop(asyncio.SelectorEventLoop):
    """asyncio's selector loop with fpd's TCP (see the module docstring).

    ``context``: the :class:`Context` to use (default: the process's, from
    :func:`set_context`; None there = a plain selector loop, everything on the kernel)."""

    def __init__(self, context=_SENTINEL, *, spin: float = 0.0005):
        inner = selectors.DefaultSelector()
        super().__init__(_FpdSelector(self, inner))
        ctx = _context if context is _SENTINEL else context
        self._fpd = ctx
        self._spin = spin
        self._stay = STAY
        self._last_work = 0.0
        self._dirty = False
        self._conns: dict = {}            # engine Connection -> FpdTransport / _Pending
        self._listeners: dict = {}        # engine Listener -> FpdServer
        self._deferred: list = []         # events that arrived while another thread drove
        self._driving = False
        self._ep_ready = True             # the selector's epoll fd may be readable
        self._took_over = False           # this loop has driven the worker
        self._prev_app = None
        self._clock = time.monotonic
        if ctx is not None:
            w = ctx.worker
            self._worker = w
            self._clock = w.clock
            self._epfd = inner.fileno()
        else:
            self._worker = None

    # -- time: the engine's clock ----------------------------------------------------------
    def time(self):
        return self._clock()

    # -- taking the worker over while running -----------------------------------------------
    def run_forever(self):
        ctx = self._fpd
        if ctx is None:
            return super().run_forever()
        if (ctx.owner is not None and ctx.owner is not self) or \
                getattr(_tls, "inside", False):
            # a second loop while one drives the worker (a library running a private
            # loop inside a call, as pyroute2 does): a plain selector loop
            return super().run_forever()
        self._took_over = True
        if ctx.engine is not None:
            ctx.engine.pause()
        w = self._worker
        ctx.owner = self
        # (bound methods compare with ==: each attribute access makes a new one)
        self._prev_app = w.app if w.app != self._on_events else self._prev_app
        w.app = self._on_events
        self._ep_ready = True
        w.add_reader(self._epfd, self._ep_readable)
        self._driving = True
        try:
            if self._deferred:
                evs, self._deferred = self._deferred, []
                self.call_soon(self._dispatch, evs)
            return super().run_forever()
        finally:
            self._driving = False
            w.remove_reader(self._epfd)
            # keep receiving engine events for our connections while not running: they
            # are queued and handled by the next run
            ctx.owner = None
            if ctx.engine is not None and not w._closed:
                ctx.engine.resume()

    def close(self):
        ctx = self._fpd
        if ctx is not None and not self.is_running() and self._took_over:
            # the engine thread (or a waiting program thread) may be driving the worker
            # by now: touch the stack under the engine lock
            lock = ctx.engine.lock if ctx.engine is not None and not ctx.engine._paused \
                else contextlib.nullcontext()
            with lock:
                now = self._clock()
                for conn, t in list(self._conns.items()):
                    try:
                        conn.abort(now)
                    except Exception:
                        pass
                self._conns.clear()
                for lst in list(self._listeners):
                    self._unlisten(lst)
                w = self._worker
                if w.app == self._on_events:
                    w.app = self._prev_app
                if self._dirty and not w._closed and ctx.engine is None:
                    try:
                        w.poll_once(0)
                    except Exception:
                        pass
            self._fpd = None
        super().close()

    def _fpd_select(self, inner, timeout):
        if not self._driving:
            return inner.select(timeout)
        w = self._worker
        _tls.inside = True
        try:
            return self._fpd_pass(w, inner, timeout)
        finally:
            _tls.inside = False

    def _fpd_pass(self, w, inner, timeout):
        if self._dirty:
            # what callbacks run by asyncio (coroutines, call_soon) wrote: out now, in
            # this pass's one poll_once (which also takes the next RX burst); asyncio's
            # ready callbacks run right after, and the next pass may sleep
            self._dirty = False
            if w.poll_once(0):
                self._last_work = self._clock()
            self._dirty = False
            return self._kernel_events(inner)
        now = self._clock()
        if timeout is not None and timeout <= 0:
            t = 0.0
        elif now - self._last_work < self._spin:
            # busy polling with nothing ready in asyncio: spin here, on poll_once alone,
            # until work comes, the spin window ends, asyncio's next timer is due, or
            # the worker saw the selector's fd readable (not once per _run_once)
            end = self._last_work + self._spin
            if timeout is not None and now + timeout < end:
                end = now + timeout
            clock = self._clock
            stay = self._stay
            while True:
                if w.poll_once(0):
                    now = self._last_work = clock()
                    if not stay:
                        break
                    # the pass's callbacks answered inside it (their bytes left with
                    # its TX burst): unless they gave asyncio something to do (a ready
                    # callback, a stop, a timer now due, a kernel fd), asyncio's own
                    # pass would find nothing, so keep polling here
                    if self._ready or self._stopping or self._ep_ready:
                        break
                    sched = self._scheduled
                    end = now + self._spin
                    if sched:
                        when = sched[0]._when
                        if when <= now:
                            break
                        if when < end:
                            end = when
                    continue
                if self._ep_ready or self._ready or clock() >= end:
                    break
            self._dirty = False
            return self._kernel_events(inner)
        else:
            t = w.max_sleep if timeout is None else min(timeout, w.max_sleep)
            dl = w.stack.next_deadline()
            if dl is not None and dl - now < t:
                t = dl - now if dl > now else 0.0
        if w.poll_once(t):
            self._last_work = self._clock()
        # what the callbacks run inside poll_once wrote went out with its TX burst
        self._dirty = False
        return self._kernel_events(inner)

    def _kernel_events(self, inner):
        """The selector's events (kernel sockets, pipes, the self-pipe) when its epoll
        fd is readable: the worker's poll() watches that fd (while sleeping, and every
        ``reader_interval`` while busy) and tells us through ``_ep_readable``."""
        if not self._ep_ready:
            return []
        self._ep_ready = False
        evs = inner.select(0)
        if len(evs) >= 64:
            self._ep_ready = True            # maybe more than one select's worth
        return evs

    def _ep_readable(self, now):
        self._ep_ready = True

    # -- engine events ---------------------------------------------------------------------
    def _on_events(self, worker, evs, now):
        if self._driving and threading.get_ident() == self._thread_id:
            # the usual case: in order, straight to the transports (no lists built
            # unless some events are another app's)
            conns = self._conns
            lsts = self._listeners
            rest = None
            for ev in evs:
                kind = ev[0]
                obj = ev[1]
                if kind is EV_ACCEPTED:
                    srv = lsts.get(obj)
                    if srv is not None:
                        self._accepted(srv, ev[2])
                        continue
                else:
                    t = conns.get(obj)
                    if t is not None:
                        if kind is EV_CLOSED:
                            del conns[obj]
                        t._on_event(kind)
                        continue
                if rest is None:
                    rest = [ev]
                else:
                    rest.append(ev)
            if rest is not None and self._prev_app is not None:
                self._prev_app(worker, rest, now)
            return
        conns = self._conns
        lsts = self._listeners
        mine = []
        rest = []
        new = None
        for ev in evs:
            if ev[0] == EV_ACCEPTED:
                if ev[1] in lsts:
                    mine.append(ev)
                    if new is None:
                        new = set()
                    new.add(ev[2])
                else:
                    rest.append(ev)
            elif ev[1] in conns or (new is not None and ev[1] in new):
                mine.append(ev)
            else:
                rest.append(ev)
        if rest and self._prev_app is not None:
            self._prev_app(worker, rest, now)
        if not mine:
            return
        if not self._driving or threading.get_ident() != self._thread_id:
            self._deferred.extend(mine)
            return
        self._dispatch(mine)

    def _dispatch(self, evs):
        conns = self._conns
        for ev in evs:
            kind = ev[0]
            if kind == EV_ACCEPTED:
                srv = self._listeners.get(ev[1])
                if srv is None:
                    ev[2].abort(self._clock())
                    continue
                self._accepted(srv, ev[2])
                continue
            t = conns.get(ev[1])
            if t is None:
                continue
            if kind == EV_CLOSED:
                del conns[ev[1]]
            t._on_event(kind)

    def _accepted(self, srv, conn):
        if not srv._serving:
            conn.abort(self._clock())
            return
        try:
            protocol = srv._factory()
            if srv._ssl:
                waiter = self.create_future()
                waiter.add_done_callback(_log_ssl_failure)
                proto = sslproto.SSLProtocol(
                    self, protocol, srv._ssl, waiter, server_side=True,
                    ssl_handshake_timeout=srv._hs_timeout,
                    ssl_shutdown_timeout=srv._sd_timeout)
            else:
                proto = protocol
            t = FpdTransport(self, conn, proto, {"_server": srv})
            srv._attach()
            self._conns[conn] = t
            proto.connection_made(t)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self.call_exception_handler({
                "message": "Error on an accepted fpd connection "
                           "(protocol factory or connection_made)", "exception": exc})
            conn.abort(self._clock())
            t = self._conns.pop(conn, None)
            if t is not None and not t._lost:
                t._lost = True
                srv._detach()
            return

    def _unlisten(self, lst):
        self._listeners.pop(lst, None)
        if self._fpd is not None and not self._worker._closed:
            self._worker.stack.unlisten(lst)
            self._dirty = True

    # -- which connections are fpd's --------------------------------------------------------
    def _fpd_port(self, host, port):
        ctx = self._fpd
        if ctx is None or port is None:
            return None
        try:
            port = int(port)
        except (TypeError, ValueError):
            return None
        if port not in ctx.ports:
            if port not in ctx.warned:
                ctx.warned.add(port)
                log.warning("port %d is not steered by fpd (fpd run -p %d): the server "
                            "gets a kernel socket", port, port)
                warnings.warn(f"fpd: port {port} is not steered by fpd: kernel socket",
                              RuntimeWarning, stacklevel=4)
            return None
        if host in (None, "", "0.0.0.0", "*"):
            addr = ctx.addr
            return wire.ip_to_bytes(addr) if addr else ANY
        if isinstance(host, (list, tuple)):
            hosts = [h for h in host if h not in ("::",)]
            if len(hosts) != 1:
                return None
            host = hosts[0]
            if host in ("", "0.0.0.0"):
                return ANY
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return None
        if ip.version != 4:
            return None
        return ip.packed

    def _route(self, dst: bytes):
        return route_src(self._fpd, dst)

    def _pick_port(self, src, dst, dport):
        return pick_port(self._fpd, src, dst, dport)

    # -- asyncio API -----------------------------------------------------------------------
    async def create_server(self, protocol_factory, host=None, port=None, *,
                            family=socket.AF_UNSPEC, flags=socket.AI_PASSIVE, sock=None,
                            backlog=100, ssl=None, reuse_address=None, reuse_port=None,
                            ssl_handshake_timeout=None, ssl_shutdown_timeout=None,
                            start_serving=True):
        la = None
        if sock is None and family in (socket.AF_UNSPEC, socket.AF_INET):
            la = self._fpd_port(host, port)
        if la is None:
            return await super().create_server(
                protocol_factory, host, port, family=family, flags=flags, sock=sock,
                backlog=backlog, ssl=ssl, reuse_address=reuse_address,
                reuse_port=reuse_port, ssl_handshake_timeout=ssl_handshake_timeout,
                ssl_shutdown_timeout=ssl_shutdown_timeout, start_serving=start_serving)
        if ssl is not None and not hasattr(ssl, "wrap_bio"):
            raise TypeError("ssl argument must be an SSLContext or None")
        if ssl is None and ssl_handshake_timeout is not None:
            raise ValueError("ssl_handshake_timeout is only meaningful with ssl")
        port = int(port)
        st = self._worker.stack
        for lst in st.listeners():
            if lst.port == port and (lst.addr == la or ANY in (lst.addr, la)):
                raise OSError(_errno.EADDRINUSE,
                              f"[Errno 98] error while attempting to bind on address "
                              f"{(host, port)!r}: address already in use (fpd)")
        lst = st.listen(la, port, backlog=backlog)
        srv = FpdServer(self, lst, protocol_factory, ssl, backlog,
                        ssl_handshake_timeout, ssl_shutdown_timeout)
        srv._sock = FpdSocket(listener=(la, port))
        self._listeners[lst] = srv
        if start_serving:
            srv._serving = True
            await asyncio.sleep(0)
        return srv

    async def create_connection(self, protocol_factory, host=None, port=None, *, ssl=None,
                                family=0, proto=0, flags=0, sock=None, local_addr=None,
                                server_hostname=None, ssl_handshake_timeout=None,
                                ssl_shutdown_timeout=None, happy_eyeballs_delay=None,
                                interleave=None, **kw):
        dst = src = None
        if self._fpd is not None and sock is None and local_addr is None \
                and family in (0, socket.AF_INET) and host is not None and port is not None:
            try:
                dst = ipaddress.IPv4Address(host).packed
            except ValueError:
                try:
                    infos = await self.getaddrinfo(host, port, family=socket.AF_INET,
                                                   type=socket.SOCK_STREAM)
                    dst = socket.inet_aton(infos[0][4][0]) if infos else None
                except OSError:
                    dst = None
            if dst is not None and self._fpd.local_ports:
                src = self._route(dst)
        if src is None:
            return await super().create_connection(
                protocol_factory, host, port, ssl=ssl, family=family, proto=proto,
                flags=flags, sock=sock, local_addr=local_addr,
                server_hostname=server_hostname, ssl_handshake_timeout=ssl_handshake_timeout,
                ssl_shutdown_timeout=ssl_shutdown_timeout,
                happy_eyeballs_delay=happy_eyeballs_delay, interleave=interleave, **kw)
        if server_hostname is not None and not ssl:
            raise ValueError("server_hostname is only meaningful with ssl")
        if server_hostname is None and ssl:
            server_hostname = host
        if ssl is True:
            import ssl as _ssl
            ssl = _ssl.create_default_context()
        port = int(port)
        now = self._clock()
        sport = self._pick_port(src, dst, port)
        conn = self._worker.stack.connect(now, src, sport, dst, port)
        pend = _Pending(self.create_future())
        self._conns[conn] = pend
        self._dirty = True
        try:
            await pend.fut
        except BaseException:
            if self._conns.get(conn) is pend:
                del self._conns[conn]
            if conn.state != "CLOSED":
                conn.abort(self._clock())
                self._dirty = True
            raise
        protocol = protocol_factory()
        if ssl:
            waiter = self.create_future()
            sp = sslproto.SSLProtocol(self, protocol, ssl, waiter, server_side=False,
                                      server_hostname=server_hostname,
                                      ssl_handshake_timeout=ssl_handshake_timeout,
                                      ssl_shutdown_timeout=ssl_shutdown_timeout)
            t = FpdTransport(self, conn, sp)
            self._conns[conn] = t
            sp.connection_made(t)
            if conn.readable or conn.fin_rcvd:
                t._eof_pending = conn.fin_rcvd
                t._deliver()
            try:
                await waiter
            except BaseException:
                t.close()
                raise
            return sp._app_transport, protocol
        t = FpdTransport(self, conn, protocol)
        self._conns[conn] = t
        protocol.connection_made(t)
        if conn.readable or conn.fin_rcvd:
            t._eof_pending = conn.fin_rcvd
            t._deliver()
        return t, protocol


class _Pending:
    """A connect in progress (the engine's events complete the future)."""

    def __init__(self, fut):
        self.fut = fut

    def _on_event(self, kind):
        f = self.fut
        if f.done():
            return
        if kind == EV_CONNECTED:
            f.set_result(None)
        elif kind == EV_REFUSED:
            f.set_exception(ConnectionRefusedError(_errno.ECONNREFUSED, "Connection refused"))
        elif kind == EV_TIMED_OUT:
            f.set_exception(TimeoutError(_errno.ETIMEDOUT, "Connection timed out"))
        elif kind in (EV_RESET, EV_CLOSED):
            f.set_exception(ConnectionResetError(_errno.ECONNRESET, "Connection reset"))


def _log_ssl_failure(fut):
    if not fut.cancelled() and fut.exception() is not None:
        log.debug("TLS handshake failed: %s", fut.exception())


# --- policy ------------------------------------------------------------------------------
class FpdEventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """asyncio's default policy, making :class:`FpdEventLoop` loops."""

    def new_event_loop(self):
        return FpdEventLoop()


def new_event_loop(context=_SENTINEL) -> FpdEventLoop:
    """A new fpd loop (for ``asyncio.Runner(loop_factory=fpd.loop.new_event_loop)``)."""
    return FpdEventLoop(context)


def install() -> None:
    """Make fpd's loop asyncio's default (``asyncio.run`` and ``new_event_loop`` use it)."""
    asyncio.set_event_loop_policy(FpdEventLoopPolicy())
