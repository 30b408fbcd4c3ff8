"""Blocking sockets served in-process: what ``fpd run`` gives a blocking socket program.

Under ``fpd run`` the program's ``socket`` module is this one. Its :class:`socket` works
on the engine objects of the worker the program runs in (the :class:`fpd.stack.Stack`'s
listeners and :class:`fpd.tcp.Connection` objects): ``accept``/``recv``/``send``/
``close`` call the engine directly, and a call that has to wait drives the worker itself
(``Worker.poll_once`` in the calling thread until the engine's events make it ready),
run to completion as OpenOnload does: a request's frame, the engine, the program's
answer and its TX kick happen in the program's own thread, with no shared-memory ring,
no eventfd and no thread switch.

What is served in-process and what is not:

- ``bind`` + ``listen`` on a port this fpd steers (``fpd run -p PORT``), any address or
  an IPv4 address: an engine listener in this worker (every worker of the program listens,
  as servers created by fpd's event loop do), and the accepted connections.
- Everything else an AF_INET stream socket does -- ``connect``, ``listen`` on a port fpd
  does not steer -- goes to an :class:`fpd.client.socket` (the shared-memory client of
  the same daemon, which gives a kernel socket or a clear error as it does for programs
  started on their own). Other families and types are the standard library's sockets.
- Sockets created while an fpd event loop drives the worker (an asyncio program) are
  :class:`fpd.client.socket`\\ s as well: the loop holds the engine.

One thread touches the engine at a time (the :class:`fpd.loop.EngineThread`'s lock): a
thread that waits takes the lock and drives when it is free, else sleeps on a condition
that the driver's event dispatch notifies. A driver whose pass made another waiting
thread ready (and not itself) hands the driving over, so that the thread whose
connection is busy is the one that drives. A short operation (send, close) that finds
the lock held wakes the driver out of ``poll()`` and takes the lock as soon as it
yields. While no program thread waits, the engine thread drives (after
``EngineThread.lazy`` seconds, so that a program thread between two calls does not
find it in the way).

``fileno()`` gives a descriptor for ``select``/``selectors`` (socketserver's
``serve_forever`` waits on it): one end of a socketpair made readable while the socket
is (a connection to accept, data, EOF, an error); it is always writable. A thread
waiting in ``select`` does not drive; the engine thread does.
"""

from __future__ import annotations

import errno as _errno
import socket as _std
import threading
from time import monotonic as _now
from weakref import ref as _ref

from . import client as _client
from . import loop as _loop
from . import wire as _wire
from .client import *  # noqa: F401,F403   the socket module's names (fpd.client's)
from .client import (_GLOBAL_DEFAULT_TIMEOUT, error, timeout, socketpair, fromfd,  # noqa: F401
                     has_dualstack_ipv6, set_default_socket, daemon_info)
from .stack import ANY as _ANY
from .loop import _tls
from .tcp import (CLOSED as _CLOSED, EV_ACCEPTED as _EV_ACCEPTED, EV_CLOSED as _EV_CLOSED,
                  SYN_SENT as _SYN_SENT)

__all__ = list(_client.__all__) + ["socket", "SocketType", "create_connection",
                                   "create_server"]

_AF_INET = _std.AF_INET
_SOCK_STREAM = _std.SOCK_STREAM
_TYPE_FLAGS = getattr(_std, "SOCK_NONBLOCK", 0) | getattr(_std, "SOCK_CLOEXEC", 0)
_SOL_SOCKET = int(_std.SOL_SOCKET)
_IPPROTO_TCP = int(_std.IPPROTO_TCP)
_TCP_NODELAY = int(_std.TCP_NODELAY)
_SO_KEEPALIVE = int(_std.SO_KEEPALIVE)
_MSG_PEEK = int(_std.MSG_PEEK)
_MSG_DONTWAIT = int(_std.MSG_DONTWAIT)
_FOLLOW = 0.002           # a thread that waits while another drives re-checks this often


class _Engine:
    """The in-process side of one worker: which listeners and connections belong to
    in-process sockets, their events, and the waiting threads' turn-taking."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.w = ctx.worker
        self.eng = ctx.engine
        self.lock = ctx.engine.lock
        self.clock = self.w.clock
        self.socks: dict = {}           # engine Listener / Connection -> weakref(socket)
        self.cv = threading.Condition(threading.Lock())
        self.yielded = 0                # drivers that stepped aside (for a short operation,
                                        # or for the thread their pass made ready)
        self.handoff = False
        self.last_pass = 0.0            # when a waiting thread last drove
        self.prev_app = self.w.app
        self.w.app = self._on_events

    def close(self) -> None:
        if self.w.app == self._on_events:
            self.w.app = self.prev_app

    # -- events (inside Worker.poll_once, in the driving thread) ---------------------------
    def _on_events(self, worker, evs, now):
        socks = self.socks
        rest = None
        hit = None
        for ev in evs:
            r = socks.get(ev[1])
            if r is None:
                if rest is None:
                    rest = []
                rest.append(ev)
                continue
            kind = ev[0]
            s = r()
            if s is None:                   # dropped without close (see __del__)
                if kind is _EV_CLOSED:
                    socks.pop(ev[1], None)
                continue
            if kind is _EV_ACCEPTED:
                c = ev[2]
                if s._lst is None or s._closed:
                    c.abort(now)
                    continue
                n = object.__new__(socket)
                n._init_conn(self, c, s._opts)
                socks[c] = _ref(n)
                s._acceptq.append(n)
            elif kind is _EV_CLOSED:
                socks.pop(ev[1], None)
            if hit is None:
                hit = [s]
            else:
                hit.append(s)
        if hit is not None:
            me = threading.get_ident()
            wake = False
            for s in hit:
                t = s._waiter
                if t is not None and t != me:
                    wake = True
                if s._pair is not None:
                    s._signal()
            if wake:
                self.handoff = True
                with self.cv:
                    self.cv.notify_all()
        if rest is not None and self.prev_app is not None:
            self.prev_app(worker, rest, now)

    # -- the engine lock ---------------------------------------------------------------------
    def acquire(self) -> None:
        """Take the engine for a short operation (wake a driver sleeping in poll). The
        thread then counts as inside the worker (``fpd.loop._tls.inside``): a
        neighbour look-up during the flush runs pyroute2's private event loop, which
        must be a plain one and not take the worker over."""
        lock = self.lock
        if lock.acquire(False):
            _tls.inside = True
            return
        eng = self.eng
        if eng._paused:
            raise OSError(_errno.EBUSY, "fpd: an fpd event loop drives this worker; a "
                                        "blocking fpd socket cannot be used meanwhile")
        eng.want += 1
        try:
            while not lock.acquire(True, 0.005):
                if eng._paused:
                    raise OSError(_errno.EBUSY, "fpd: an fpd event loop drives this worker")
                self.w._wake()
        finally:
            eng.want -= 1
        _tls.inside = True

    def release(self) -> None:
        _tls.inside = False
        self.lock.release()
        if self.yielded and self.eng.want == 0:     # a driver stepped aside for us
            with self.cv:
                self.cv.notify_all()

    def wait(self, sock, ready, deadline) -> bool:
        """Wait until ``ready()`` (False: ``deadline`` passed), driving the worker while
        no other thread does."""
        if ready():
            return True
        eng = self.eng
        lock = self.lock
        w = self.w
        clock = self.clock
        me = threading.get_ident()
        sock._waiter = me
        first = True
        follow = False
        with eng._cv:
            eng.drivers += 1
        try:
            while True:
                now = clock()
                if deadline is not None and now >= deadline:
                    return ready()
                yielding = eng.want
                handed = False
                if not yielding and not eng._paused and not follow and lock.acquire(False):
                    try:
                        self.handoff = False
                        if ready():
                            return True
                        eng._once(None if deadline is None else deadline - now)
                        self.last_pass = clock()
                        if ready():
                            return True
                        if not self.handoff:
                            continue
                        handed = True
                    finally:
                        lock.release()
                # another thread drives (or our pass woke another waiting thread): sleep
                # until an event for us, or until the driving is free again; the engine
                # thread, if it is the one in poll(), steps aside when woken
                if first:
                    first = False
                    w._wake()
                with self.cv:
                    if ready():
                        return True
                    if yielding or handed:
                        self.yielded += 1
                    try:
                        t = _FOLLOW if deadline is None else \
                            max(0.0, min(_FOLLOW, deadline - clock()))
                        woken = self.cv.wait(t)
                    finally:
                        if yielding or handed:
                            self.yielded -= 1
                # a time-out while another thread drives busily: leave the driving to it
                # (the thread whose connection is active), go on waiting
                follow = not woken and clock() - self.last_pass < _FOLLOW
        finally:
            sock._waiter = None
            with eng._cv:
                eng.drivers -= 1
                eng.idle_since = clock()
            if self.yielded:                # a driver handed over to us: drive again
                with self.cv:
                    self.cv.notify_all()

    def flush(self, now) -> None:
        """Frame and send what the engine produced (the caller holds the lock)."""
        w = self.w
        if not w._closed:
            w._flush(now)


_state: dict = {"engine": None}


def engine() -> _Engine | None:
    """This process's in-process engine (None when ``fpd run`` has not set one up)."""
    return _state["engine"]


def enable(ctx) -> _Engine:
    """Serve this process's blocking sockets from ``ctx`` (an :class:`fpd.loop.Context`
    with an engine thread); called by ``fpd run``."""
    e = _state["engine"]
    if e is None or e.ctx is not ctx:
        e = _Engine(ctx)
        _state["engine"] = e
    return e


def disable() -> None:
    e = _state["engine"]
    _state["engine"] = None
    if e is not None:
        e.close()


def _closed_error() -> OSError:
    return OSError(_errno.EBADF, "Bad file descriptor")


class socket:
    """A TCP/IPv4 socket whose listening and accepted connections are this process's
    fpd engine objects (see the module documentation). Other families/types: the
    standard library's socket; ``connect`` and unsteered ports: an
    :class:`fpd.client.socket`, to which this object then forwards every call."""

    __slots__ = ("_e", "_d", "_conn", "_lst", "_acceptq", "_bind", "_opts", "_timeout",
                 "_closed", "_waiter", "_pair", "_sig", "_io_refs", "_rd_shut",
                 "_err_told", "_linger0", "_family", "_type", "__weakref__")

    def __new__(cls, family=-1, type=-1, proto=-1, fileno=None):
        fam = _AF_INET if family == -1 else family
        typ = _SOCK_STREAM if type == -1 else type
        if (fileno is not None or fam != _AF_INET or (typ & ~_TYPE_FLAGS) != _SOCK_STREAM
                or proto not in (-1, 0, _IPPROTO_TCP)):
            return _std.socket(family, type, proto, fileno)
        e = _state["engine"]
        if e is None or e.ctx.owner is not None or e.w._closed:
            return _client.socket(family, type, proto)
        return object.__new__(cls)

    def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
        typ = _SOCK_STREAM if type == -1 else type
        self._e = _state["engine"]
        self._d = None
        self._conn = None
        self._lst = None
        self._acceptq = None
        self._bind = None
        self._opts = {}
        self._timeout = 0.0 if typ & getattr(_std, "SOCK_NONBLOCK", 0) else \
            _std.getdefaulttimeout()
        self._closed = False
        self._waiter = None
        self._pair = None
        self._sig = False
        self._io_refs = 0
        self._rd_shut = False
        self._err_told = False
        self._linger0 = False

    def _init_conn(self, e, conn, opts):
        self._e = e
        self._d = None
        self._conn = conn
        self._lst = None
        self._acceptq = None
        self._bind = None
        self._opts = dict(opts)
        self._timeout = _std.getdefaulttimeout()
        self._closed = False
        self._waiter = None
        self._pair = None
        self._sig = False
        self._io_refs = 0
        self._rd_shut = False
        self._err_told = False
        self._linger0 = bool(opts.get("linger0"))
        if "nodelay" in opts:
            conn.nodelay = bool(opts["nodelay"])
        if "keepalive" in opts:
            conn.keepalive = bool(opts["keepalive"])

    # -- the shared-memory client for what is not served in-process -------------------------
    def _delegate(self):
        d = self._d
        if d is None:
            d = _client.socket(_AF_INET, _SOCK_STREAM)
            try:
                d.settimeout(self._timeout)
                for (level, name), value in self._opts.get("raw", {}).items():
                    d.setsockopt(level, name, value)
                if self._bind is not None:
                    d.bind(self._bind)
            except BaseException:
                d.close()
                raise
            self._d = d
        return d

    def __getattr__(self, name):
        d = object.__getattribute__(self, "_d")
        if d is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(d, name)

    # -- names and options -----------------------------------------------------------------
    @property
    def family(self):
        return _std.AF_INET

    @property
    def type(self):
        return _std.SOCK_STREAM

    @property
    def proto(self):
        return _IPPROTO_TCP

    def settimeout(self, value) -> None:
        if value is not None:
            value = float(value)
            if value < 0:
                raise ValueError("Timeout value out of range")
        self._timeout = value
        if self._d is not None:
            self._d.settimeout(value)

    def gettimeout(self):
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self.settimeout(None if flag else 0.0)

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    @property
    def timeout(self):
        return self._timeout

    def getsockname(self):
        if self._d is not None:
            return self._d.getsockname()
        c = self._conn
        if c is not None:
            a, p = c.local
            return (_wire.ip_to_str(a), p)
        lst = self._lst
        if lst is not None:
            return (_wire.ip_to_str(lst.addr), lst.port)
        return self._bind or ("0.0.0.0", 0)

    def getpeername(self):
        if self._d is not None:
            return self._d.getpeername()
        c = self._conn
        if c is None:
            raise OSError(_errno.ENOTCONN, "Transport endpoint is not connected")
        a, p = c.remote
        return (_wire.ip_to_str(a), p)

    def setsockopt(self, level, optname, value, optlen=None) -> None:
        if self._d is not None:
            return self._d.setsockopt(level, optname, value) if optlen is None else \
                self._d.setsockopt(level, optname, value, optlen)
        self._check_open()
        level, optname = int(level), int(optname)
        c = self._conn
        if level == _IPPROTO_TCP and optname == _TCP_NODELAY:
            v = bool(_optint(value))
            self._opts["nodelay"] = v
            if c is not None:
                c.nodelay = v
        elif level == _SOL_SOCKET and optname == _SO_KEEPALIVE:
            v = bool(_optint(value))
            self._opts["keepalive"] = v
            if c is not None:
                e = self._e
                e.acquire()
                try:
                    c.keepalive = v
                finally:
                    e.release()
        elif level == _SOL_SOCKET and optname == _std.SO_LINGER:
            b = bytes(value) if not isinstance(value, int) else b""
            on = int.from_bytes(b[:4], "little") if len(b) >= 8 else 0
            secs = int.from_bytes(b[4:8], "little") if len(b) >= 8 else 1
            self._linger0 = bool(on and secs == 0)
            self._opts["linger0"] = self._linger0
        elif level == _SOL_SOCKET and optname in (_std.SO_REUSEADDR, _std.SO_RCVBUF,
                                                  _std.SO_SNDBUF,
                                                  getattr(_std, "SO_REUSEPORT", -1)):
            pass                   # fpd owns its ports; buffers are the engine's
        else:
            raise OSError(_errno.ENOPROTOOPT, "Protocol not available (fpd sockets: "
                                              "TCP_NODELAY, SO_KEEPALIVE, SO_REUSEADDR, "
                                              "SO_LINGER)")
        self._opts.setdefault("raw", {})[(level, optname)] = value

    def getsockopt(self, level, optname, buflen=None):
        if self._d is not None:
            return self._d.getsockopt(level, optname) if buflen is None else \
                self._d.getsockopt(level, optname, buflen)
        level, optname = int(level), int(optname)
        c = self._conn
        if level == _IPPROTO_TCP and optname == _TCP_NODELAY:
            return int(c.nodelay if c is not None else self._opts.get("nodelay", False))
        if level == _SOL_SOCKET:
            if optname == _SO_KEEPALIVE:
                return int(c.keepalive if c is not None else
                           self._opts.get("keepalive", False))
            if optname == _std.SO_ERROR:
                return 0
            if optname == _std.SO_TYPE:
                return _std.SOCK_STREAM
            if optname == _std.SO_ACCEPTCONN:
                return int(self._lst is not None)
            if optname == _std.SO_REUSEADDR:
                return 1
        raise OSError(_errno.ENOPROTOOPT, "Protocol not available")

    def _check_open(self) -> None:
        if self._closed:
            raise _closed_error()

    # -- set-up ----------------------------------------------------------------------------
    def bind(self, address) -> None:
        if self._d is not None:
            return self._d.bind(address)
        self._check_open()
        if self._bind is not None or self._conn is not None:
            raise OSError(_errno.EINVAL, "Invalid argument (already bound)")
        host, port = address
        if host in ("", None, "0.0.0.0", "*"):
            host = "0.0.0.0"
        else:
            host = _std.gethostbyname(host)
        self._bind = (host, int(port))

    def listen(self, backlog: int = 128) -> None:
        if self._d is not None:
            return self._d.listen(backlog)
        self._check_open()
        if self._lst is not None:
            return
        e = self._e
        b = self._bind
        if b is None or b[1] not in e.ctx.ports:
            self._delegate().listen(backlog)     # not steered: fpd.client says what to do
            return
        host, port = b
        if host == "0.0.0.0":
            addr = _wire.ip_to_bytes(e.ctx.addr) if e.ctx.addr else _ANY
        else:
            addr = _std.inet_aton(host)
        e.acquire()
        try:
            st = e.w.stack
            for lst in st.listeners():
                if lst.port == port and (lst.addr == addr or _ANY in (lst.addr, addr)):
                    raise OSError(_errno.EADDRINUSE, "Address already in use (fpd)")
            lst = st.listen(addr, port, backlog=max(1, min(int(backlog), 65535)))
            self._acceptq = []
            self._lst = lst
            e.socks[lst] = _ref(self)
        finally:
            e.release()

    def accept(self):
        if self._d is not None:
            return self._d.accept()
        self._check_open()
        if self._lst is None:
            raise OSError(_errno.EINVAL, "Invalid argument (not listening)")
        q = self._acceptq
        if not q:
            self._await(lambda: q or self._closed)
        self._check_open()
        n = q.pop(0)
        if self._pair is not None:
            self._signal()
        return n, n.getpeername()

    def _fpd_route(self, address):
        """``(src, dst, port)`` when ``address`` is reached through fpd (blocking
        socket, not bound, IPv4, the route leaves through fpd's interface, local ports
        left); else None."""
        e = self._e
        if self._bind is not None or self._timeout == 0.0 or self._lst is not None \
                or not e.ctx.local_ports:
            return None
        host, port = address
        try:
            dst = _std.inet_aton(_std.gethostbyname(host))
        except OSError:
            return None
        src = _loop.route_src(e.ctx, dst)
        return None if src is None else (src, dst, int(port))

    def connect(self, address) -> None:
        if self._d is not None:
            return self._d.connect(address)
        if self._conn is not None:
            raise OSError(_errno.EISCONN, "Transport endpoint is already connected")
        self._check_open()
        r = self._fpd_route(address)
        if r is None:
            self._delegate().connect(address)   # fpd.client: shared memory
            return
        src, dst, port = r
        e = self._e
        e.acquire()
        try:
            now = e.clock()
            c = e.w.stack.connect(now, src, _loop.pick_port(e.ctx, src, dst, port), dst,
                                  port)
            self._conn = c
            e.socks[c] = _ref(self)
            o = self._opts
            if "nodelay" in o:
                c.nodelay = bool(o["nodelay"])
            if "keepalive" in o:
                c.keepalive = bool(o["keepalive"])
            self._linger0 = bool(o.get("linger0"))
            e.flush(now)
        finally:
            e.release()
        try:
            self._await(lambda: c.state != _SYN_SENT or self._closed)
        except BaseException:
            self._abort_connect()
            raise
        self._check_open()
        if c.state == _CLOSED or c.error is not None:
            err = c.error
            self._abort_connect()
            if err is TimeoutError:
                raise TimeoutError(_errno.ETIMEDOUT, "Connection timed out")
            if err is ConnectionRefusedError or err is None:
                raise ConnectionRefusedError(_errno.ECONNREFUSED, "Connection refused")
            raise ConnectionResetError(_errno.ECONNRESET, "Connection reset by peer")

    def _abort_connect(self) -> None:
        """A connect that failed or was interrupted: the socket is unconnected again."""
        c, self._conn = self._conn, None
        if c is None:
            return
        e = self._e
        e.acquire()
        try:
            e.socks.pop(c, None)
            if c.state != _CLOSED:
                now = e.clock()
                c.abort(now)
                e.flush(now)
        finally:
            e.release()

    def connect_ex(self, address) -> int:
        if self._d is not None:
            return self._d.connect_ex(address)
        if self._conn is not None:
            return _errno.EISCONN
        try:
            self.connect(address)
        except OSError as exc:
            return exc.errno or _errno.EIO
        return 0

    def _await(self, ready) -> None:
        to = self._timeout
        e = self._e
        if to == 0.0:
            if e.lock.acquire(False):            # one pass without sleeping
                try:
                    e.eng._once(0.0)
                finally:
                    e.release()
            if not ready():
                raise BlockingIOError(_errno.EAGAIN, "Resource temporarily unavailable")
            return
        if not e.wait(self, ready, None if to is None else _now() + to):
            raise TimeoutError("timed out")

    # -- data ------------------------------------------------------------------------------
    def _rd_ready(self) -> bool:
        c = self._conn
        return bool(c.rcvq) or c.fin_rcvd or c.error is not None or c.state == _CLOSED \
            or self._closed or self._rd_shut

    def _rd_end(self) -> bytes:
        """Nothing buffered and ready: EOF, or the error that ended the connection once."""
        self._check_open()
        c = self._conn
        if c.error is not None and not self._err_told and not self._rd_shut:
            self._err_told = True
            err = c.error
            if err is TimeoutError:
                raise TimeoutError(_errno.ETIMEDOUT, "Connection timed out")
            if issubclass(err, ConnectionResetError) or err is ConnectionError:
                raise ConnectionResetError(_errno.ECONNRESET, "Connection reset by peer")
            raise err()
        return b""

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if self._d is not None:
            return self._d.recv(bufsize, flags)
        c = self._conn
        if c is None:
            self._check_open()
            raise OSError(_errno.ENOTCONN, "Transport endpoint is not connected")
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        if not c.rcvq:
            if self._closed:
                raise _closed_error()
            if self._rd_shut:
                return b""
            if flags & _MSG_DONTWAIT:
                to, self._timeout = self._timeout, 0.0
                try:
                    self._await(self._rd_ready)
                finally:
                    self._timeout = to
            else:
                self._await(self._rd_ready)
            if not c.rcvq:
                return self._rd_end()
        if not bufsize:
            return b""
        e = self._e
        if flags & _MSG_PEEK:
            e.acquire()             # (the worker thread appends to the queue's chunks)
            try:
                return c.rcvq.peek(bufsize)
            finally:
                e.release()
        e.acquire()
        try:
            data = c.recv(bufsize)
        finally:
            e.release()
        if self._pair is not None:
            self._signal()
        return data

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:
        if self._d is not None:
            return self._d.recv_into(buffer, nbytes, flags)
        mv = memoryview(buffer).cast("B")
        if nbytes:
            mv = mv[:nbytes]
        if flags & _MSG_PEEK:
            d = self.recv(len(mv), flags)
            mv[:len(d)] = d
            return len(d)
        c = self._conn
        if c is None:
            self._check_open()
            raise OSError(_errno.ENOTCONN, "Transport endpoint is not connected")
        if not c.rcvq:
            if self._closed:
                raise _closed_error()
            if self._rd_shut:
                return 0
            self._await(self._rd_ready)
            if not c.rcvq:
                return len(self._rd_end())
        if not len(mv):
            return 0
        e = self._e
        e.acquire()
        try:
            n = c.recv_into(mv)
        finally:
            e.release()
        if self._pair is not None:
            self._signal()
        return n

    def recvfrom(self, bufsize: int, flags: int = 0):
        return self.recv(bufsize, flags), None

    def recvfrom_into(self, buffer, nbytes: int = 0, flags: int = 0):
        return self.recv_into(buffer, nbytes, flags), None

    def _wr_ready(self) -> bool:
        c = self._conn
        return c.writable > 0 or c.error is not None or c.wr_shut or c.state == _CLOSED \
            or self._closed

    def _send_some(self, data) -> int:
        """One engine send (0: the send buffer is full); raises what the engine says."""
        c = self._conn
        e = self._e
        e.acquire()
        try:
            now = e.clock()
            try:
                n = c.send(data, now)
            except BrokenPipeError:
                raise BrokenPipeError(_errno.EPIPE, "Broken pipe") from None
            except ConnectionError as exc:
                if type(exc) is ConnectionError:
                    raise BrokenPipeError(_errno.EPIPE, "Broken pipe") from None
                raise type(exc)(_errno.ECONNRESET if isinstance(exc, ConnectionResetError)
                                else _errno.EPIPE, str(exc)) from None
            if n:
                e.flush(now)
        finally:
            e.release()
        return n

    def send(self, data, flags: int = 0) -> int:
        if self._d is not None:
            return self._d.send(data, flags)
        c = self._conn
        if c is None:
            self._check_open()
            raise OSError(_errno.ENOTCONN, "Transport endpoint is not connected")
        self._check_open()
        if not len(data):
            return 0
        while True:
            n = self._send_some(data)
            if n:
                return n
            if flags & _MSG_DONTWAIT:
                raise BlockingIOError(_errno.EAGAIN, "Resource temporarily unavailable")
            self._await(self._wr_ready)
            self._check_open()

    def sendall(self, data, flags: int = 0) -> None:
        if self._d is not None:
            return self._d.sendall(data, flags)
        c = self._conn
        if c is None:
            self._check_open()
            raise OSError(_errno.ENOTCONN, "Transport endpoint is not connected")
        self._check_open()
        n = self._send_some(data)
        total = len(data)
        if n == total:
            return
        mv = memoryview(data).cast("B")
        while n < total:
            if not self._wr_ready():
                self._await(self._wr_ready)
                self._check_open()
            n += self._send_some(mv[n:])

    def sendto(self, data, flags_or_addr, addr=None) -> int:
        if addr is None:
            return self.send(data)
        return self.send(data, flags_or_addr)

    def sendmsg(self, buffers, ancdata=(), flags=0, address=None) -> int:
        if ancdata or address is not None:
            raise OSError(_errno.EOPNOTSUPP, "fpd sockets: sendmsg without ancillary data "
                                             "or address only")
        return self.send(b"".join(buffers), flags)

    # -- the end ---------------------------------------------------------------------------
    def shutdown(self, how: int) -> None:
        if self._d is not None:
            return self._d.shutdown(how)
        self._check_open()
        c = self._conn
        if c is None:
            raise OSError(_errno.ENOTCONN, "Transport endpoint is not connected")
        if how in (_std.SHUT_RD, _std.SHUT_RDWR):
            self._rd_shut = True
        if how in (_std.SHUT_WR, _std.SHUT_RDWR):
            e = self._e
            e.acquire()
            try:
                now = e.clock()
                c.shutdown(now)
                e.flush(now)
            finally:
                e.release()
        if self._pair is not None:
            self._signal()

    def close(self) -> None:
        if self._io_refs > 0:
            self._io_refs = -self._io_refs          # close when the last file closes
            return
        self._really_close()

    def _really_close(self) -> None:
        if self._closed:
            return
        self._closed = True
        d = self._d
        if d is not None:
            d.close()
            return
        e = self._e
        if e is None or e.w._closed:
            return
        c, lst = self._conn, self._lst
        if c is None and lst is None:
            return
        e.acquire()
        try:
            now = e.clock()
            if lst is not None:
                e.socks.pop(lst, None)
                e.w.stack.unlisten(lst)
                q, self._acceptq = self._acceptq, []
                for s in q:
                    s._closed = True
                    e.socks.pop(s._conn, None)
                    s._conn.abort(now)
            if c is not None:
                if self._linger0:
                    c.abort(now)
                else:
                    c.close(now)
                if c.state == _CLOSED:
                    e.socks.pop(c, None)
            e.flush(now)
        finally:
            e.release()
        with e.cv:
            e.cv.notify_all()                       # threads waiting on this socket
        p = self._pair
        if p is not None:
            self._pair = None
            for s in p:
                s.close()

    def __del__(self):
        # a socket dropped without close(): close it in the engine's own thread (the
        # next pass of whoever drives; never here: the collector may run in a thread
        # that holds the engine lock)
        try:
            if self._closed or self._d is not None or self._e is None:
                return
            c, lst, e = self._conn, self._lst, self._e
        except AttributeError:
            return
        if c is None and lst is None or e.w._closed:
            return
        self._closed = True
        socks = e.socks

        def close(w, now):
            if lst is not None:
                socks.pop(lst, None)
                w.stack.unlisten(lst)
            if c is not None and c.state != _CLOSED:
                c.close(now)
        e.w.call_soon(close)

    def detach(self):
        raise OSError(_errno.EOPNOTSUPP, "fpd sockets cannot be detached")

    def dup(self):
        raise OSError(_errno.EOPNOTSUPP, "fpd sockets cannot be duplicated")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        if self._d is not None:
            return repr(self._d)
        st = "closed" if self._closed else ("listening" if self._lst is not None else
                                             ("connected" if self._conn is not None
                                              else "new"))
        return f"<fpd.inproc.socket {st} laddr={self.getsockname()}>"

    # -- readiness descriptor ----------------------------------------------------------------
    def _ready_now(self) -> bool:
        if self._closed:
            return True
        if self._lst is not None:
            return bool(self._acceptq)
        c = self._conn
        return c is not None and self._rd_ready()

    def _signal(self) -> None:
        """Keep the socketpair's readability equal to the socket's."""
        p = self._pair
        if p is None:
            return
        r = self._ready_now()
        if r and not self._sig:
            self._sig = True
            try:
                p[1].send(b"x")
            except OSError:
                pass
        elif not r and self._sig:
            self._sig = False
            try:
                while p[0].recv(64):
                    pass
            except OSError:
                pass

    def fileno(self) -> int:
        if self._d is not None:
            return self._d.fileno()
        if self._closed:
            return -1
        p = self._pair
        if p is None:
            a, b = _std.socketpair()
            a.setblocking(False)
            b.setblocking(False)
            self._pair = p = (a, b)
            self._sig = False
            self._signal()
        return p[0].fileno()

    # -- file objects (fpd.client's: recv_into / send / fileno / _io_closed) ----------------
    makefile = _client.socket.makefile
    _io_closed = _client.socket._io_closed


SocketType = socket


def _optint(value) -> int:
    if isinstance(value, (bytes, bytearray)):
        return int.from_bytes(bytes(value[:4]).ljust(4, b"\0"), "little", signed=True)
    return int(value)


def create_connection(address, timeout=_GLOBAL_DEFAULT_TIMEOUT, source_address=None, *,
                      all_errors=False):
    """As the standard module's: in-process when the destination is reached through
    fpd (see :meth:`socket.connect`), else :mod:`fpd.client`'s."""
    host, port = address
    if source_address is None and _state["engine"] is not None:
        try:
            addrs = [r[4][0] for r in _std.getaddrinfo(host or "0.0.0.0", port, _AF_INET,
                                                       _SOCK_STREAM)]
        except OSError:
            addrs = []
        errors = []
        for a in addrs:
            s = socket(_AF_INET, _SOCK_STREAM)
            try:
                if timeout is not _GLOBAL_DEFAULT_TIMEOUT:
                    s.settimeout(timeout)
                s.connect((a, port))
                return s
            except OSError as exc:
                errors.append(exc)
                s.close()
        if errors:
            raise errors[0]
    return _client.create_connection(address, timeout, source_address,
                                     all_errors=all_errors)


def create_server(address, *, family=_AF_INET, backlog=None, reuse_port=False,
                  dualstack_ipv6=False):
    """A listening socket bound to ``address``: in-process for a port fpd steers."""
    return _client._create_server(socket, address, family, backlog, reuse_port,
                                  dualstack_ipv6)
