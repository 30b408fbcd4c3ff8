"""The fpd client library: TCP/IPv4 sockets terminated by the fpd daemon.

    from fpd import client as socket          # instead of ``import socket``

    srv = socket.create_server(("", 8080))    # the port must be steered: fpd start -p 8080
    conn, peer = srv.accept()
    conn.sendall(conn.recv(4096))

What is fpd's and what is the kernel's
--------------------------------------
``socket(AF_INET, SOCK_STREAM)`` (the default) makes an fpd socket: its bytes travel
through shared-memory rings to and from the daemon (``docs/DAEMON.md``), which runs the
TCP engine. **Anything else** -- ``AF_UNIX``, ``AF_INET6``, ``SOCK_DGRAM``, a raw socket,
``socket(fileno=...)`` -- returns a **standard** :class:`socket.socket` from the
standard library: fpd terminates TCP over IPv4 only. Every other name of the standard
``socket`` module (constants, ``getaddrinfo``, ``gethostname``, ``inet_aton``, ``error``,
``timeout``, ...) is re-exported unchanged, and host names resolve through the standard
``getaddrinfo``.

The daemon
----------
The library connects lazily, once per process, to the daemon's unix socket: the path
given to :func:`set_default_socket`, else ``$FPD_SOCKET``, else ``/run/fpd/fpd.sock``.
It opens one control connection per daemon worker (NIC queue), each with its own
shared-memory region. If the daemon is not running, the first call that needs it raises
``ConnectionRefusedError``/``FileNotFoundError`` "fpd daemon not reachable at PATH: ...".
If it goes away (stopped, killed), every blocked or later call on its sockets fails with
``ConnectionResetError``/``BrokenPipeError`` naming the daemon -- a blocking wait always
watches the control connections too, so it never hangs; a new socket then tries to
reach a (restarted) daemon again.

Threads, fork, select
---------------------
Sockets are thread-safe like the standard ones (one sender and one receiver at a time
per socket; any number of sockets and threads; ``accept`` in one thread while others
serve connections). Blocked threads take turns at "pumping" the daemon's event rings
(leader/followers): a single-threaded program makes no thread switch at all.

``fileno()`` returns a descriptor for ``select``/``poll``/``selectors``/asyncio that is
readable exactly when the fpd socket is (data, EOF, error, or a pending connection on a
listener) and writable exactly when it is (at least a quarter of the TX ring free, a
finished non-blocking connect, or an error). It is one end of a private unix
socketpair kept true by a library thread started on the first ``fileno()`` call; do
not read, write or close it yourself.

After ``os.fork()`` the child must not use the parent's fpd sockets (every call raises
``OSError(EBADF)``); the child's first new fpd socket connects to the daemon afresh.

Deviations from the standard module (by design)
-----------------------------------------------
* ``bind`` is required before ``listen`` (the daemon listens on the ports it steers);
  port 0 for a listener is refused (EINVAL).
* ``SO_REUSEADDR`` is accepted and ignored (the daemon owns its ports), ``SO_RCVBUF``/
  ``SO_SNDBUF``/``TCP_NODELAY``/``SO_KEEPALIVE`` go to the daemon's engine;
  ``SO_LINGER`` with a zero linger time makes ``close`` send RST. Other options raise
  ``OSError(ENOPROTOOPT)``. ``SO_ERROR``, ``SO_TYPE``, ``SO_ACCEPTCONN`` are answered.
* ``fileno()`` is a readiness descriptor, not a kernel TCP socket: it cannot be passed
  to ``os.read``, ``sendfile`` or another process. ``dup``, ``detach``, ``sendmsg``,
  ``recvmsg``, ``sendto``, ``recvfrom`` (with an address) are not supported.
* Writability means "at least a quarter of the TX ring is free" (the kernel's is a
  similar fraction of its send buffer).
* A non-blocking ``connect`` may succeed at once when the daemon has already finished the
  handshake (no EINPROGRESS). Completion is signalled as usual otherwise (writable,
  ``SO_ERROR``; ``connect_ex`` again gives EALREADY, then 0 or EISCONN).
* ``send`` succeeds while the TX ring has room even if the daemon has just died or the
  peer reset the connection (like a kernel socket's send buffer); the next call that
  waits, or finds the ring full, reports it.
* ``isinstance(s, fpd.client.socket)`` is False for the standard sockets the
  constructor returns for other families. ``socket(fileno=...)``, ``fromfd`` and
  ``socketpair`` are the standard ones.
* When the daemon goes away, the dead connection's descriptors and mapping are kept
  until the process exits (a few fds per daemon restart), so that a thread still
  inside a call can never touch a reused descriptor.
* Extra: ``recv_view(n)`` returns a zero-copy read-only view of the receive ring,
  consumed by ``release(n)`` (or use ``with sock.viewing(n) as v:``);
  ``daemon_info()`` returns the daemon's ``hello``; ``set_default_socket(path,
  slots=, rx_size=, tx_size=)`` picks the daemon and the region geometry.

Resets: the daemon ends the RX ring (EOF) when a connection is reset as well as on the
peer's FIN; the slot's state word (CLOSED + errno) tells them apart, so ``recv`` reports
ConnectionResetError once (after the data that came before the RST), then EOF.
"""

from __future__ import annotations

import builtins
import collections
import errno as _errno
import io
import os
import select as _select
import socket as _std
import threading
import weakref
from time import monotonic as _now

from . import proto as _proto
from . import shm as _shm
from . import slotlife as _life

# --- the standard module's names, re-exported --------------------------------------------
for _name in _std.__all__:
    globals()[_name] = getattr(_std, _name)
_GLOBAL_DEFAULT_TIMEOUT = _std._GLOBAL_DEFAULT_TIMEOUT
error = OSError
timeout = TimeoutError
del _name

__all__ = [n for n in _std.__all__ if n not in ("socket", "create_connection",
                                                "create_server", "SocketType")]
__all__ += ["socket", "SocketType", "create_connection", "create_server",
            "set_default_socket", "daemon_info", "FPD_DEFAULT_SOCKET"]

FPD_DEFAULT_SOCKET = _proto.DEFAULT_SOCKET
CTL_TIMEOUT = 10.0          # seconds a control request may take before we give up

_AF_INET = _std.AF_INET
_SOCK_STREAM = _std.SOCK_STREAM
_TYPE_FLAGS = getattr(_std, "SOCK_NONBLOCK", 0) | getattr(_std, "SOCK_CLOEXEC", 0)
_SOL_SOCKET = int(_std.SOL_SOCKET)
_IPPROTO_TCP = int(_std.IPPROTO_TCP)
_MSG_PEEK = int(_std.MSG_PEEK)            # plain ints: IntFlag arithmetic is slow
_MSG_DONTWAIT = int(_std.MSG_DONTWAIT)

_OP_KICK, _OP_SHUTDOWN, _OP_CLOSE, _OP_ABORT, _OP_SETOPT = (
    _shm.OP_KICK, _shm.OP_SHUTDOWN, _shm.OP_CLOSE, _shm.OP_ABORT, _shm.OP_SETOPT)
_EV_READABLE, _EV_WRITABLE, _EV_CONNECTED, _EV_ACCEPTED, _EV_CLOSED, _EV_SHUTDOWN = (
    _shm.EV_READABLE, _shm.EV_WRITABLE, _shm.EV_CONNECTED, _shm.EV_ACCEPTED,
    _shm.EV_CLOSED, _shm.EV_SHUTDOWN)
_NO_SLOT = _shm.NO_SLOT
_SETOPT_INDEX = {n: i for i, n in enumerate(_shm.SETOPT_NAMES)}
_ShmCorrupt = _shm.ShmCorrupt
_ShmError = _shm.ShmError

# the socket's life: fpd.slotlife.CLIENT (states are strings)
_NEW, _CONNECTING, _CONNECTED, _LISTENING, _FAILED, _CLOSED = (
    _life.NEW, _life.CONNECTING, _life.CONNECTED, _life.LISTENING, _life.FAILED, _life.CLOSED)
_LIVE, _ENDED, _OK, _CORRUPT, _FORKED = (_life.LIVE, _life.ENDED, _life.OK, _life.CORRUPT,
                                         _life.FORKED)
_RD_OPEN, _RD_SHUT, _WR_OPEN, _WR_SHUT = (_life.RD_OPEN, _life.RD_SHUT, _life.WR_OPEN,
                                          _life.WR_SHUT)
_WANT_MAX = 64 * 1024          # low-water mark of a blocking sendall/recv wait
TX_RECLAIM_INTERVAL = 1.0      # seconds a drained TX ring stays unwritten before its pages
                               # go back to the kernel (_DaemonLink.tx_sweep)
# A blocking wait first polls the rings without sleeping for this long (seconds): on a
# machine with a core to spare it saves the wake-up (eventfd + scheduler) per message;
# with cores shared it takes CPU from the daemon or the peer. FPD_SPIN_US sets it.
try:
    _SPIN = max(0.0, float(os.environ.get("FPD_SPIN_US", "0")) / 1e6)
except ValueError:
    _SPIN = 0.0

_default_path: str | None = None
_attach_opts: dict = {}
_client_lock = threading.Lock()
_Condition = threading.Condition
_client: "_DaemonLink | None" = None


def set_default_socket(path: str | None = None, *, slots: int | None = None,
                       rx_size: int | None = None, tx_size: int | None = None) -> None:
    """Use the daemon at ``path`` (default: ``$FPD_SOCKET``, else /run/fpd/fpd.sock)
    from the next connection to a daemon on; optionally ask for ``slots`` connections
    per worker and ring sizes. Sockets made before keep their daemon."""
    global _default_path, _client
    _default_path = path
    _attach_opts.clear()
    for k, v in (("slots", slots), ("rx_size", rx_size), ("tx_size", tx_size)):
        if v is not None:
            _attach_opts[k] = int(v)
    with _client_lock:
        _client = None           # sockets made before keep their own connection


def _socket_path() -> str:
    return _proto.socket_path(_default_path)


def _get_client() -> "_DaemonLink":
    c = _client
    if c is not None and c.dead is None:
        return c
    return _new_client()


def _new_client() -> "_DaemonLink":
    global _client
    with _client_lock:
        c = _client
        if c is not None and c.dead is None:
            return c
        c = _DaemonLink(_socket_path())
        _client = c
        return c


def daemon_info() -> dict:
    """The daemon's ``hello`` reply (workers, address, ports, local ports, pid)."""
    return dict(_get_client().hello)


def _oserror(code: int, text: str) -> OSError:
    """OSError(code, text): Python picks the subclass (ConnectionRefusedError, ...)."""
    return OSError(code, text)


def _errtext(code: int) -> str:
    try:
        return os.strerror(code)
    except ValueError:
        return f"error {code}"


# --- the daemon, one per process ----------------------------------------------------------
class _WorkerLink:
    """One control connection (to one daemon worker) and its shared-memory region."""

    __slots__ = ("client", "q", "ctl", "ctl_lock", "region", "events", "commands",
                 "app_bell", "daemon_bell", "cmd_lock", "conns", "listeners", "early",
                 "inflight", "dead", "mss", "local_addr", "reply", "_put", "_cmd_wake",
                 "_ring")

    def __init__(self, client, q, ctl, reply, fds):
        self.client = client
        self.q = q
        self.ctl = ctl
        self.ctl_lock = threading.Lock()
        self.reply = reply
        self.region = None
        self.app_bell = self.daemon_bell = None
        try:
            self.region = _shm.Region.attach(fds[0])
            self.app_bell = _shm.Doorbell(fds[1])
            self.daemon_bell = _shm.Doorbell(fds[2])
        except BaseException:
            for fd in fds[1:]:
                try:
                    os.close(fd)
                except OSError:
                    pass
            raise
        self.events = self.region.events
        self.commands = self.region.commands
        self.cmd_lock = threading.Lock()
        self.conns: dict = {}           # slot -> socket (connections)
        self.listeners: dict = {}       # slot -> socket (listeners)
        self.early: dict = {}           # slot -> [records] that came before the reply
        self.inflight = 0               # listen/connect requests awaiting their reply
        self.dead = None
        self.mss = reply.get("mss")
        self.local_addr = reply.get("local_addr")
        self._put = self.commands.put
        self._cmd_wake = self.commands.wake_needed
        self._ring = self.daemon_bell.ring

    # -- control requests (one at a time per connection) -------------------------------
    def request(self, msg, reply=None) -> dict:
        """One request (a :mod:`fpd.proto` message) and its positive answer; a
        refusal raises its OSError, a daemon gone or broken ConnectionResetError."""
        c = self.client
        if self.dead is not None:
            raise c.gone_error()
        with self.ctl_lock:
            try:
                r, _ = _proto.request(self.ctl, msg, reply=reply)
            except TimeoutError:
                raise TimeoutError(_errno.ETIMEDOUT, f"fpd daemon at {c.path} did not "
                                   f"answer {msg.op!r} within {CTL_TIMEOUT:g} s")
            except _proto.ProtocolError as e:
                raise _oserror(_errno.EPROTO, f"fpd: {e}") from None
            except _proto.Closed:
                c.set_dead("it closed the control connection")
                raise c.gone_error() from None
            except OSError as e:
                if _proto.refused(e):
                    raise
                c.set_dead(f"its control connection failed: {e}")
                raise c.gone_error() from None
        return r

    def notify(self, msg) -> None:
        """A control message that gets no answer (``noreply``): no round trip."""
        c = self.client
        if self.dead is not None:
            raise c.gone_error()
        with self.ctl_lock:
            try:
                _proto.send(self.ctl, msg, noreply=True)
            except (OSError, ValueError) as e:
                c.set_dead(f"its control connection failed: {e}")
                raise c.gone_error() from None

    # -- commands ------------------------------------------------------------------------
    def cmd(self, slot: int, op: int, arg: int = 0, gen: int = 0) -> None:
        """Put one command; ring the daemon if it sleeps. Waits (briefly) if the ring
        is full, failing if the daemon is gone."""
        with self.cmd_lock:
            try:
                if not self._put(slot, op, arg, gen):
                    self._ring()
                    deadline = _now() + 5.0
                    while not self._put(slot, op, arg, gen):
                        if self.dead is not None:
                            raise self.client.gone_error()
                        if _now() > deadline:
                            raise _oserror(_errno.ENOBUFS, "fpd: the daemon's command "
                                                           "ring stays full")
                        self._ring()
                        _select_sleep(0.0005)
                if self._cmd_wake():
                    self._ring()
            except _ShmCorrupt as e:
                self.client.set_dead(f"its shared memory is corrupt: {e}")
                raise self.client.gone_error() from None

    def kick_tx(self, slot: int, gen: int, tx) -> None:
        """After TX bytes were published: OP_KICK, and the bell if the daemon sleeps."""
        with self.cmd_lock:
            if not self._put(slot, _OP_KICK, 0, gen):
                self._ring()          # full: the daemon will see the bytes anyway
                return
            if tx.wake_needed() or self._cmd_wake():
                self._ring()

    def kick_rx(self, slot: int, gen: int) -> None:
        """The daemon waited for RX space and we freed some."""
        with self.cmd_lock:
            self._put(slot, _OP_KICK, 0, gen)
            self._ring()

    # -- events --------------------------------------------------------------------------
    def dispatch(self, rec) -> None:
        """One event record (the client's ``mu`` is held)."""
        slot, kind, gen, arg = rec
        if slot == _NO_SLOT:
            if kind == _EV_SHUTDOWN:
                self.client.set_dead("it is stopping", locked=True)
            return
        if kind == _EV_ACCEPTED:
            lst = self.listeners.get(arg)
            if lst is not None:
                lst._accepted(self, slot, gen)
            elif self.inflight:
                self._keep_early(arg | (1 << 40), rec)
            else:                         # a listener we closed: give the slot back
                self._release_orphan(slot, gen)
            return
        s = self.conns.get(slot)
        if s is not None and s._gen16 == gen:
            s._ev(kind, arg)
        elif self.inflight:
            self._keep_early(slot, rec)

    def _keep_early(self, key, rec) -> None:
        lst = self.early.setdefault(key, [])
        if len(lst) < 64:
            lst.append(rec)

    def take_early(self, key) -> list:
        return self.early.pop(key, [])

    def _release_orphan(self, slot, gen) -> None:
        try:
            self.cmd(slot, _OP_CLOSE, 0, gen)
        except OSError:
            pass


#: ``fpd run`` sets this in the worker process that runs the program: ``fn(poll, ms)`` is
#: called instead of ``poll.poll(ms)`` where a thread sleeps for the daemon, and drives
#: the worker's engine itself meanwhile (OpenOnload's way: no thread switch between the
#: program and its TCP). None: sleep in ``poll()``.
_poll_hook = None


def _sleep_poll(p, ms: int):
    h = _poll_hook
    return p.poll(ms) if h is None else h(p, ms)


def _select_sleep(t: float) -> None:
    _select.select([], [], [], t)


class _DaemonLink:
    """The process's connection to one daemon: hello, one _WorkerLink per daemon worker,
    the leader/followers pump and the registry of sockets."""

    def __init__(self, path: str):
        self.path = path
        self.pid = os.getpid()
        self.dead = None
        self.mu = threading.RLock()         # registries, states, conditions
        self.leading = False
        self.lead_for = None                # the socket the leader waits for (wait())
        self.followers: list = []
        self.pump_thread = None
        self.sel_socks = weakref.WeakSet()  # sockets with a readiness fd
        # sockets made here that may have no slot yet (made, bound, connecting); an
        # accepted socket is in its worker link's ``conns`` from birth to close and is
        # not added (a WeakSet entry is ~0.15 KB per idle connection): all_socks()
        self.socks = weakref.WeakSet()
        self.tx_dirty = weakref.WeakSet()   # sockets whose TX ring pages may be mapped
        self.tx_gen = 0                     # tx_sweep's count
        self.tx_sweep_at = 0.0
        self.tx_reclaimed = 0
        self.rr = 0
        self.workers: list = []
        self.hello = self._hello()
        n = self.hello.get("workers")
        if not isinstance(n, int) or not 1 <= n <= 1024:
            raise _oserror(_errno.EPROTO, f"fpd daemon at {path}: bad hello reply "
                                          f"{self.hello!r}")
        try:
            for q in range(n):
                self.workers.append(self._attach(q))
        except BaseException:
            self._close_workers()
            raise
        self.poll = _select.poll()
        self.ctl_fds = {}
        for w in self.workers:
            self.poll.register(w.app_bell.fd, _select.POLLIN)
            fd = w.ctl.fileno()
            self.poll.register(fd, 0)              # POLLHUP/POLLERR only
            self.ctl_fds[fd] = w
        self.wake_bell = self.workers[0].app_bell

    # -- set-up --------------------------------------------------------------------------
    def _connect(self):
        s = _std.socket(_std.AF_UNIX, _std.SOCK_SEQPACKET)
        try:
            s.settimeout(CTL_TIMEOUT)
            s.connect(self.path)
        except OSError as e:
            s.close()
            code = e.errno or _errno.ECONNREFUSED
            raise _oserror(code, f"fpd daemon not reachable at {self.path}: "
                                 f"{e.strerror or e}") from None
        return s

    def _ask(self, s, msg, maxfds=0, reply=None):
        where = f"fpd daemon at {self.path}"
        try:
            return _proto.request(s, msg, maxfds=maxfds, reply=reply, prefix=where)
        except _proto.ProtocolError as e:
            raise _oserror(_errno.EPROTO, f"{where}: {e}") from None
        except _proto.Closed:
            raise _oserror(_errno.ECONNREFUSED, f"fpd daemon not reachable at "
                                                f"{self.path}: it closed the connection")
        except OSError as e:
            if _proto.refused(e):
                raise
            raise _oserror(e.errno or _errno.ECONNREFUSED,
                           f"fpd daemon not reachable at {self.path}: {e}") from None

    def _hello(self) -> dict:
        s = self._connect()
        try:
            return self._ask(s, _proto.Hello(), reply=_proto.HelloReply)[0]
        finally:
            s.close()

    def _attach(self, q: int) -> _WorkerLink:
        s = self._connect()
        try:
            req = _proto.Attach(queue=q, pid=self.pid, **_attach_opts)
            reply, fds = self._ask(s, req, maxfds=3, reply=_proto.AttachReply)
            try:
                return _WorkerLink(self, q, s, reply, fds)
            except _ShmError as e:
                raise _oserror(_errno.EPROTO, f"fpd daemon at {self.path}: {e}") from None
        except BaseException:
            s.close()
            raise

    def _close_workers(self) -> None:
        for w in self.workers:
            for x in (w.ctl, w.app_bell, w.daemon_bell):
                try:
                    if x is not None:
                        x.close()
                except OSError:
                    pass
            # the region stays mapped: sockets may still hold views of it

    # -- death ---------------------------------------------------------------------------
    def gone_error(self, pipe: bool = False) -> OSError:
        why = self.dead or "gone"
        cls = BrokenPipeError if pipe else ConnectionResetError
        code = _errno.EPIPE if pipe else _errno.ECONNRESET
        return cls(code, f"fpd daemon at {self.path} went away ({why})")

    def set_dead(self, why: str, locked: bool = False) -> None:
        if not locked:
            with self.mu:
                self._set_dead(why)
        else:
            self._set_dead(why)
        try:
            self.wake_bell.ring()          # a leader sleeping in poll() sees it at once
        except (OSError, AttributeError, TypeError):
            pass

    def _set_dead(self, why: str) -> None:
        if self.dead is not None:
            return
        self.dead = why
        for w in self.workers:
            w.dead = why
            for s in list(w.conns.values()) + list(w.listeners.values()):
                s._daemon_gone()
        for s in self.all_socks():
            if s._client is self and s._cond is not None:
                s._cond.notify_all()

    def all_socks(self) -> list:
        """Every socket of this client: ``socks`` and those in the links' tables."""
        seen = {id(s): s for s in list(self.socks)}
        for w in self.workers:
            for s in list(w.conns.values()) + list(w.listeners.values()):
                seen.setdefault(id(s), s)
        return list(seen.values())

    # -- pumping -------------------------------------------------------------------------
    def wait_direct(self, ready, direct, deadline) -> bool:
        """Like :meth:`wait`, sleeping on one socket's own doorbell (``direct`` =
        ``(bell, ctl_fd)`` from ``socket._direct``) instead of pumping the event rings:
        the daemon wakes this thread itself. ``ready()`` arms the RX ring. Only recv
        waits this way, under the socket's receive lock: one sleeper per bell, so no
        other thread can drain the wake-up meant for it."""
        mu = self.mu
        bell, cfd = direct
        bfd = bell.fd
        p = _select.poll()                 # per wait: poll objects are not thread-safe
        p.register(bfd, _select.POLLIN)
        p.register(cfd, 0)                 # the control connection: hang-up only
        spin_end = _now() + _SPIN if _SPIN else 0.0
        while True:
            with mu:
                if ready():
                    return True
                if self.dead is not None:
                    raise self.gone_error()
            if spin_end:
                if _now() < spin_end:
                    continue
                spin_end = 0.0
            if deadline is None:
                ms = -1
            else:
                left = deadline - _now()
                if left <= 0:
                    return False
                ms = int(left * 1000 + 0.999)
            for fd, ev in _sleep_poll(p, ms):
                if fd != bfd and ev & (_select.POLLHUP | _select.POLLERR | _select.POLLNVAL):
                    self.set_dead("its control connection hung up")
            bell.drain()

    def wait_settling(self, ready, cond, deadline) -> bool:
        """:meth:`wait` in slices of 1 ms (a slot bell is being registered: the daemon
        may ring it instead of posting the event this wait expects). The daemon posts
        the first RX wake-up after the bell came as an event too, so the wait normally
        ends with that event; the slices are the safety net."""
        while True:
            d = _now() + 0.001
            if deadline is not None and deadline < d:
                return self.wait(ready, cond, deadline)
            if self.wait(ready, cond, d):
                return True

    def wait(self, ready, cond, deadline) -> bool:
        """Block until ``ready()`` (evaluated with ``mu`` held) is true; False at the
        deadline. One waiting thread at a time pumps the event rings (the leader); the
        others sleep on their socket's condition until an event for it (or the lead)
        comes their way."""
        mu = self.mu
        followers = self.followers
        mu.acquire()
        try:
            if _SPIN and not self.leading and self.dead is None:
                end = _now() + _SPIN
                while True:
                    if ready():
                        return True
                    if _now() >= end:
                        break
                    mu.release()
                    mu.acquire()
            while True:
                if ready():
                    return True
                if self.dead is not None:      # nothing will ever come: never spin
                    raise self.gone_error()
                if deadline is None:
                    left = None
                else:
                    left = deadline - _now()
                    if left <= 0:
                        return False
                if self.leading:
                    cv = cond if type(cond) is _Condition else cond._wait_cond()
                    followers.append(cv)
                    try:
                        cv.wait(left)
                    finally:
                        followers.remove(cv)
                    continue
                self.leading = True
                self.lead_for = cond
                mu.release()
                try:
                    self.pump(left)
                finally:
                    mu.acquire()
                    self.leading = False
                    self.lead_for = None
        finally:
            if not self.leading and followers:
                followers[0].notify()       # pass the lead on
            mu.release()

    def pump(self, timeout) -> None:
        """Arm the event rings, sleep until a bell rings (or a control connection
        hangs up, or ``timeout``), then drain and dispatch every event."""
        if self.dead is not None:
            return
        if self.tx_dirty and _now() >= self.tx_sweep_at:
            self.tx_sweep()
        pending = timeout == 0
        workers = self.workers
        try:
            if not pending:
                for w in workers:
                    if not w.events.arm(1):
                        pending = True
        except _ShmCorrupt as e:
            self.set_dead(f"its shared memory is corrupt: {e}")
            return
        if timeout == 0:
            for fd, ev in self.poll.poll(0):
                if ev & (_select.POLLHUP | _select.POLLERR | _select.POLLNVAL) \
                        and fd in self.ctl_fds:
                    self.set_dead("its control connection hung up")
                    return
        if not pending:
            ms = -1 if timeout is None else max(0, int(timeout * 1000 + 0.999))
            if self.tx_dirty:                  # wake up for the next sweep
                cap = int(TX_RECLAIM_INTERVAL * 1000 + 0.999)
                if ms < 0 or ms > cap:
                    ms = cap
            for fd, ev in _sleep_poll(self.poll, ms):
                if ev & (_select.POLLHUP | _select.POLLERR | _select.POLLNVAL) \
                        and fd in self.ctl_fds:
                    self.set_dead("its control connection hung up")
                    return
        for w in workers:
            ev = w.events
            ev.disarm()
            w.app_bell.drain()
            try:
                recs = ev.get_many()
            except _ShmCorrupt as e:
                self.set_dead(f"its shared memory is corrupt: {e}")
                return
            if recs:
                with self.mu:
                    d = w.dispatch
                    for r in recs:
                        d(r)

    def tx_sweep(self) -> None:
        """Give idle TX rings' pages back to the kernel (the leader, from pump()).

        The client is its TX rings' only writer, so only it can punch their pages out
        safely (``shm.Region.reclaim``): under the socket's send lock (taken without
        waiting: a socket busy sending is skipped), once the daemon has consumed every
        byte and nothing was written for a whole ``TX_RECLAIM_INTERVAL``. A socket
        enters ``tx_dirty`` at its first write after a sweep; the next write faults a
        zeroed page in again."""
        self.tx_sweep_at = _now() + TX_RECLAIM_INTERVAL
        g = self.tx_gen
        self.tx_gen = g + 1
        dirty = self.tx_dirty
        # (a copy of the weakrefs in one C call: other threads may add while we look,
        # and iterating the WeakSet itself would then raise)
        for r in list(dirty.data):
            s = r()
            if s is None or s._txg == g:      # gone, or written since the last sweep
                continue
            if not s._wlock.acquire(False):
                continue
            try:
                tx, w, slot = s._tx, s._w, s._slot
                if tx is None or w is None or slot < 0 or w.dead is not None:
                    dirty.discard(s)
                elif tx.writable() == tx.size:     # all consumed: nothing to lose
                    w.region.reclaim(slot, rx=False, tx=True)
                    tx.drop_data()                 # and no data views, until used
                    rx = s._rx
                    if rx is not None and not s._view and s._rlock.acquire(False):
                        try:
                            if not rx.readable():
                                rx.drop_data()
                        finally:
                            s._rlock.release()
                    self.tx_reclaimed += 1
                    dirty.discard(s)
            except (_ShmCorrupt, OSError, ValueError):
                dirty.discard(s)              # (its own calls will report it)
            finally:
                s._wlock.release()

    def try_pump(self) -> None:
        """Drain the event rings now if no thread is pumping (non-blocking calls that
        are about to say EAGAIN: pending accepts, resets and shutdowns get seen even
        by an app that never blocks and never uses fileno())."""
        mu = self.mu
        with mu:
            if self.leading or self.dead is not None:
                return
            self.leading = True
        try:
            self.pump(0)
        finally:
            with mu:
                self.leading = False
                if self.followers:
                    self.followers[0].notify()

    def start_pump_thread(self) -> None:
        with self.mu:
            if self.pump_thread is not None:
                return
            t = self.pump_thread = threading.Thread(target=self._pump_main,
                                                    name="fpd-pump", daemon=True)
        t.start()

    def _pump_main(self) -> None:
        cond = threading.Condition(self.mu)
        while self.dead is None and self.pid == os.getpid():
            try:
                self.wait(lambda: self.dead is not None, cond, None)
            except Exception:           # never let the pump die silently
                _select_sleep(0.01)

    def pick_worker(self) -> _WorkerLink:
        ws = self.workers
        self.rr = (self.rr + 1) % len(ws)
        return ws[self.rr]


def _after_fork_in_child() -> None:
    global _client, _client_lock
    _client_lock = threading.Lock()      # another thread may have held it at fork()
    c = _client
    _client = None
    if c is None:
        return
    c.pid = -1
    c.dead = "the process forked: fpd sockets belong to the parent"
    for s in c.all_socks():
        s._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _resolve(address, for_bind=False) -> tuple:
    if not isinstance(address, tuple) or len(address) != 2:
        raise TypeError("AF_INET address must be a pair (host, port)")
    host, port = address
    if not isinstance(port, int):
        raise TypeError(f"'{type(port).__name__}' object cannot be interpreted as an "
                        f"integer")
    if not 0 <= port <= 65535:
        raise OverflowError("port must be 0-65535.")
    if host in ("", None):
        return ("0.0.0.0", port)
    if isinstance(host, (bytes, bytearray)):
        host = host.decode("idna")
    if host == "<broadcast>":
        return ("255.255.255.255", port)
    try:
        _std.inet_aton(host)
        if host.count(".") == 3:
            return (host, port)
    except OSError:
        pass
    info = _std.getaddrinfo(host, port, _AF_INET, _SOCK_STREAM)
    return (info[0][4][0], port)


_NO_OPTS: dict = {}
_LADDRS: dict = {}              # (4 address bytes, port) -> one (str, int) tuple


def _local_addr(a: bytes, port: int) -> tuple:
    """The local address tuple of a connection: one tuple for all the connections a
    listener accepts (~0.07 KB each otherwise)."""
    key = (a, port)
    t = _LADDRS.get(key)
    if t is None:
        if len(_LADDRS) >= 4096:
            _LADDRS.clear()
        t = _LADDRS[(bytes(a), port)] = (_ip(a), port)
    return t


_IPS: dict = {}                 # 4 address bytes -> the str: one str per peer address


def _ip(b: bytes) -> str:
    """Dotted quad of a 4-byte address; the same str object for the same address
    (an idle connection's two address strings are ~0.1 KB otherwise)."""
    s = _IPS.get(b)
    if s is None:
        if len(_IPS) >= 4096:
            _IPS.clear()
        s = _IPS[bytes(b)] = _std.inet_ntoa(b)
    return s


# --- the socket ---------------------------------------------------------------------------
class socket(_life.SockLife):
    """An fpd TCP/IPv4 socket (for other families/types the constructor returns a
    standard :class:`socket.socket`). See the module documentation.

    Its life is the :data:`fpd.slotlife.CLIENT` table (tracks ``use_st``, ``peer_st``,
    ``link_st``, ``rd_st``, ``wr_st``, moved only by ``fire``); ``_end_errno`` says why the
    daemon ended the connection, ``_why`` why the daemon link is not OK, ``_so_error``
    is SO_ERROR's pending value."""

    __slots__ = ("_client", "_w", "_slot", "_gen16", "_rx", "_tx", "_ctl", "_rlock",
                 "_wlock", "_cond", "_timeout", "_end_errno", "_so_error", "_why", "_bind",
                 "_laddr", "_raddr", "_opts", "_listen",
                 "_acceptq", "_pair", "_fd_r", "_fd_w", "_dirty_r", "_dirty_w",
                 "_linger0", "_view", "_type", "_io_refs", "_wlowat", "_sbell", "_sbpoll",
                 "_txg", "_rwaits", "__weakref__")

    def __new__(cls, family=-1, type=-1, proto=-1, fileno=None):
        fam = _AF_INET if family == -1 else family
        typ = _SOCK_STREAM if type == -1 else type
        if (fileno is not None or fam != _AF_INET or (typ & ~_TYPE_FLAGS) != _SOCK_STREAM
                or proto not in (-1, 0, _IPPROTO_TCP)):
            return _std.socket(family, type, proto, fileno)
        return object.__new__(cls)

    def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
        typ = _SOCK_STREAM if type == -1 else type
        self._type = _SOCK_STREAM
        self._client = None
        self._w = None
        self._slot = -1
        self._gen16 = -1
        self._rx = self._tx = self._ctl = None
        self._rlock = threading.Lock()
        self._wlock = threading.Lock()
        self._cond = None
        self._timeout = None if typ & getattr(_std, "SOCK_NONBLOCK", 0) == 0 else 0.0
        if self._timeout is None:
            self._timeout = _std.getdefaulttimeout()
        _life.SockLife.__init__(self)
        self._end_errno = 0
        self._so_error = 0
        self._why = None
        self._bind = None
        self._laddr = ("0.0.0.0", 0)
        self._raddr = None
        self._opts = _NO_OPTS           # never changed in place (_proto.with_opt)
        self._listen = ()               # listeners: a list of their slots
        self._acceptq = None           # listeners only (a deque costs ~0.7 KB)
        self._pair = None
        self._fd_r = self._fd_w = False
        self._dirty_r = self._dirty_w = False
        self._linger0 = False
        self._view = 0
        self._io_refs = 0
        self._sbell = None             # this socket's own doorbell (see _direct)
        self._sbpoll = None
        self._wlowat = 1
        self._txg = -1                 # the client's tx_gen at our last TX write
        self._rwaits = 0               # blocking receive waits before the bell (_direct)

    # -- plumbing ------------------------------------------------------------------------
    def _attach_client(self) -> "_DaemonLink":
        c = self._client
        if c is None:
            c = _get_client()
            self._client = c
            c.socks.add(self)
        return c

    def _adopt(self, w: _WorkerLink, slot: int, gen16: int) -> None:
        """Take slot ``slot`` of ``w``'s region (``mu`` held)."""
        region = w.region
        region.close_slot(slot)
        s = region.slot(slot)
        self._w = w
        self._slot = slot
        self._gen16 = gen16
        self._rx, self._tx, self._ctl = s.rx, s.tx, s.ctl
        self._wlowat = max(1, s.tx.size // 4)
        state, gen, _ = s.ctl.read()
        s.ctl.set_client(0, gen)
        w.conns[slot] = self

    def _wait_cond(self) -> threading.Condition:
        """The condition a thread waiting for this socket sleeps on (``mu`` held): made
        by the first thread that waits, so a socket nobody waits on costs none."""
        cv = self._cond
        if cv is None:
            cv = self._cond = _Condition(self._client.mu)
        return cv

    def _addrs(self) -> None:
        try:
            la, lp, ra, rp = self._ctl.addrs()
            self._laddr = _local_addr(la, lp)
            self._raddr = (_ip(ra), rp)
        except (AttributeError, TypeError, ValueError):
            pass

    def _ev(self, kind: int, arg: int) -> None:
        """An event for this socket (``mu`` held)."""
        if kind == _EV_READABLE:
            if self._cond is not None:
                self._cond.notify_all()
            if self._pair is not None:
                self._kick_r()
            return
        if kind == _EV_WRITABLE:
            if self._cond is not None:
                self._cond.notify_all()
            if self._pair is not None:
                self._kick_w()
            return
        if kind == _EV_CONNECTED:
            if self.use_st == _CONNECTING:
                self.fire("connected")
                self._addrs()
        elif kind == _EV_CLOSED:
            code = arg if 0 <= arg < 4096 else _errno.EPROTO
            if self.peer_st == _LIVE:
                self._end_errno = code            # (the first end is the one kept)
            self.fire("ended")
            if self.use_st == _CONNECTING:
                self.fire("fail")
                self._so_error = code or _errno.ECONNABORTED
        if self._cond is not None:
            self._cond.notify_all()
        if self._pair is not None:
            self._kick_r()
            self._kick_w()

    def _daemon_gone(self) -> None:
        """``mu`` held."""
        self._why = self._client.dead
        self.fire("daemon_gone")
        if self.use_st == _CONNECTING:
            self.fire("fail")
            self._so_error = _errno.ECONNRESET
        if self._cond is not None:
            self._cond.notify_all()
        if self._pair is not None:
            self._kick_r()
            self._kick_w()

    def _broken(self, e: Exception) -> OSError:
        """The daemon's words for this slot are corrupt: this socket is unusable."""
        self._why = f"corrupt shared memory: {e}"
        self.fire("corrupt")
        return _oserror(_errno.EPROTO, f"fpd: {self._why}")

    def _check_ctl(self) -> None:
        """Look at the slot's state word directly: a reset is seen even when no
        thread has drained the event ring yet."""
        ctl = self._ctl
        if ctl is None or self.peer_st != _LIVE or self.link_st != _OK:
            return
        try:
            st, _, err = ctl.read()
        except _ShmCorrupt as e:
            self._broken(e)
            return
        if st == _shm.S_CLOSED:
            with self._client.mu:
                if self.peer_st == _LIVE:
                    self._ev(_EV_CLOSED, err if err > 0 else 0)

    def _ctl_error(self) -> int:
        """The errno in the slot's state word if it says CLOSED, else 0."""
        try:
            st, _, err = self._ctl.read()
        except (_ShmCorrupt, AttributeError):
            return _errno.EPROTO
        return (err or _errno.ECONNABORTED) if st == _shm.S_CLOSED else 0

    def _direct(self):
        """``(bell, ctl_fd)`` when a blocking receive on this connection may
        sleep on the socket's own doorbell (the daemon rings it directly: no other thread
        between the daemon and this one); None: wait the usual way. The first blocking
        receive waits the usual way (a short connection, such as one request and its
        answer, never pays for a bell: an eventfd, a control message, a close on both
        sides). The second registers the bell (one control message, no round trip) and
        returns False: until
        the daemon confirms it (``D_BELL`` in the slot's flags) it may ring the bell
        instead of posting events, so the usual wait then looks at the ring every
        millisecond. Sockets whose fileno() is in use keep the event-ring path."""
        if self._pair is not None or self._ctl is None or self._w is None:
            return None
        b = self._sbell
        if b is None:
            w = self._w
            if w.dead is not None:
                return None
            if not self._rwaits:
                self._rwaits = 1
                return None
            b = _shm.Doorbell()
            try:
                with w.ctl_lock:
                    _proto.send(w.ctl, _proto.Bell(slot=self._slot), [b.fd], noreply=True)
            except OSError:
                b.close()
                return None
            self._sbell, self._sbpoll = b, w.ctl.fileno()
            return False
        try:
            if not self._ctl.dflags() & _shm.D_BELL:
                return False
        except (_ShmCorrupt, AttributeError, TypeError):
            return None
        return b, self._sbpoll

    def _undirect(self) -> None:
        """Back to event-ring wake-ups (fileno() is being used): synchronous, so no
        wake-up falls between the two ways."""
        b, self._sbell = self._sbell, None
        self._sbpoll = None
        if b is None:
            return
        try:
            self._w.request(_proto.Bell(slot=self._slot))
        except OSError:
            pass
        b.close()

    def _forked(self) -> None:
        self._sbell = self._sbpoll = None
        self._rlock = threading.Lock()
        self._wlock = threading.Lock()
        self._rx = self._tx = self._ctl = None
        self.fire("close")
        self.fire("fork")
        self._pair = None

    def _closed_error(self) -> OSError:
        if self.link_st == _FORKED:
            return _oserror(_errno.EBADF, "fpd socket belongs to the parent process "
                                          "(os.fork): make a new one in the child")
        return _oserror(_errno.EBADF, "Bad file descriptor")

    def _dead_error(self, pipe: bool = False) -> OSError:
        if self.link_st == _CORRUPT:
            return _oserror(_errno.EPROTO, f"fpd: {self._why}")
        return self._client.gone_error(pipe)

    # -- readiness descriptor ------------------------------------------------------------
    def fileno(self) -> int:
        """A descriptor that select/poll/epoll report readable/writable exactly when
        this socket is (see the module documentation); -1 after close."""
        if self.use_st == _CLOSED:
            return -1
        p = self._pair
        if p is None:
            if self._sbell is not None:
                self._undirect()         # readiness needs the daemon's events again
            a, b = _std.socketpair(_std.AF_UNIX, _std.SOCK_STREAM)
            a.setsockopt(_SOL_SOCKET, _std.SO_SNDBUF, 1)     # the kernel's minimum
            a.setblocking(False)
            b.setblocking(False)
            self._fd_r, self._fd_w = False, True        # a fresh pair: writable only
            p = self._pair = (a, b, a.send, a.recv, b.send, b.recv)
            c = self._client
            if c is None and self.use_st != _NEW:
                c = self._attach_client()
            self._kick_r()
            self._kick_w()
            if c is not None:
                c.sel_socks.add(self)
                c.start_pump_thread()
        return p[0].fileno()

    def _set_fd_r(self, on: bool) -> None:
        if on != self._fd_r:
            self._fd_r = on
            p = self._pair
            if on:
                p[4](b"r")
            else:
                try:
                    p[3](64)
                except BlockingIOError:
                    pass

    def _set_fd_w(self, on: bool) -> None:
        if on != self._fd_w:
            self._fd_w = on
            p = self._pair
            if on:
                rv = p[5]
                try:
                    while rv(65536):
                        pass
                except BlockingIOError:
                    pass
            else:
                sd = p[2]
                chunk = b"\0" * 4096
                try:
                    while True:
                        sd(chunk)
                except BlockingIOError:
                    pass

    def _readable_now(self) -> bool:
        """Readiness for reading (rlock held); arms the RX ring when not readable."""
        st = self.use_st
        if st == _LISTENING:
            return bool(self._acceptq)
        if self.link_st != _OK or self.peer_st != _LIVE or st == _FAILED or st == _CLOSED:
            return True
        if st != _CONNECTED:
            return False
        if self.rd_st == _RD_SHUT:
            return True
        rx = self._rx
        try:
            if rx.ready(1):
                return True
            rx.disarm()
            return not rx.arm(1)
        except _ShmCorrupt as e:
            self._broken(e)
            return True

    def _writable_now(self) -> bool:
        st = self.use_st
        if self.link_st != _OK or self.peer_st != _LIVE or st == _FAILED or st == _CLOSED:
            return st != _LISTENING or self.link_st != _OK
        if st != _CONNECTED:
            return False
        if self.wr_st == _WR_SHUT:
            return True
        tx = self._tx
        try:
            want = self._wlowat
            if tx.ready(want):
                return True
            tx.disarm()
            return not tx.arm(want)
        except _ShmCorrupt as e:
            self._broken(e)
            return True

    def _kick_r(self) -> None:
        """Bring the readiness fd's readable state up to date, now if nobody holds the
        receive lock, else when its holder lets go."""
        self._dirty_r = True
        while self._dirty_r and self._pair is not None and self._rlock.acquire(False):
            try:
                self._dirty_r = False
                self._set_fd_r(self._readable_now())
            finally:
                self._rlock.release()

    def _kick_w(self) -> None:
        self._dirty_w = True
        while self._dirty_w and self._pair is not None and self._wlock.acquire(False):
            try:
                self._dirty_w = False
                self._set_fd_w(self._writable_now())
            finally:
                self._wlock.release()

    # -- options and simple accessors ----------------------------------------------------
    @property
    def family(self):
        return _std.AddressFamily.AF_INET

    @property
    def type(self):
        return _std.SocketKind.SOCK_STREAM

    @property
    def proto(self):
        return 0

    @property
    def timeout(self):
        return self._timeout

    def settimeout(self, value) -> None:
        if value is not None:
            value = float(value)
            if value < 0:
                raise ValueError("Timeout value out of range")
        self._timeout = value

    def gettimeout(self):
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    def getsockname(self) -> tuple:
        self._check_open()
        return self._laddr

    def getpeername(self) -> tuple:
        self._check_open()
        if self.use_st != _CONNECTED or self._raddr is None:
            raise _oserror(_errno.ENOTCONN, "Transport endpoint is not connected")
        return self._raddr

    _OPTNAMES = {(_IPPROTO_TCP, _std.TCP_NODELAY): "nodelay",
                 (_SOL_SOCKET, _std.SO_KEEPALIVE): "keepalive",
                 (_SOL_SOCKET, _std.SO_RCVBUF): "rcvbuf",
                 (_SOL_SOCKET, _std.SO_SNDBUF): "sndbuf"}

    def setsockopt(self, level, optname, value, optlen=None) -> None:
        self._check_open()
        if level == _SOL_SOCKET and optname == _std.SO_REUSEADDR:
            self._opts = _proto.with_opt(self._opts, "reuseaddr", 1 if _optint(value) else 0)
            return
        if level == _SOL_SOCKET and optname == _std.SO_LINGER:
            if isinstance(value, (bytes, bytearray)) and len(value) >= 8:
                onoff, linger = int.from_bytes(value[:4], "little"), \
                    int.from_bytes(value[4:8], "little")
            else:
                raise OSError(_errno.EINVAL, "SO_LINGER needs struct linger bytes")
            self._linger0 = bool(onoff) and linger == 0
            self._opts = _proto.with_opt(self._opts, "linger", (onoff, linger))
            return
        name = self._OPTNAMES.get((level, optname))
        if name is None:
            raise _oserror(_errno.ENOPROTOOPT, "Protocol not available (fpd supports "
                           "TCP_NODELAY, SO_KEEPALIVE, SO_RCVBUF, SO_SNDBUF, "
                           "SO_REUSEADDR, SO_LINGER)")
        v = _optint(value)
        if name in ("nodelay", "keepalive"):
            v = 1 if v else 0
        self._opts = _proto.with_opt(self._opts, name, v)   # (shared: never in place)
        val = bool(v) if name in ("nodelay", "keepalive") else v
        # no round trip: the option was checked here. A connection's TCP_NODELAY and
        # SO_KEEPALIVE go through the command ring (no syscall; the daemon reads it in
        # order with the TX kicks, so a send after this call is sent with the option),
        # the buffer sizes as a control message
        if self.use_st in (_CONNECTING, _CONNECTED) and self._w is not None \
                and self.link_st == _OK:
            if name in _SETOPT_INDEX:
                self._w.cmd(self._slot, _OP_SETOPT, _SETOPT_INDEX[name] << 32 | v,
                            self._gen16)
            else:
                self._w.notify(_proto.SetOpt(slot=self._slot, name=name, value=val))
        elif self.use_st == _LISTENING and self.link_st == _OK:
            for w, slot, _gen in list(self._listen):   # future accepts inherit it
                w.notify(_proto.SetOpt(slot=slot, name=name, value=val))

    def _sockopts(self) -> dict:
        return {k: (bool(v) if k in ("nodelay", "keepalive") else v)
                for k, v in self._opts.items()
                if k in ("nodelay", "keepalive", "rcvbuf", "sndbuf")}

    def getsockopt(self, level, optname, buflen=None):
        self._check_open()
        if level == _SOL_SOCKET:
            if optname == _std.SO_ERROR:
                e, self._so_error = self._so_error, 0
                return e
            if optname == _std.SO_TYPE:
                return _SOCK_STREAM
            if optname == _std.SO_ACCEPTCONN:
                return int(self.use_st == _LISTENING)
            if optname == _std.SO_REUSEADDR:
                return self._opts.get("reuseaddr", 0)
            if optname == _std.SO_LINGER:
                onoff, linger = self._opts.get("linger", (0, 0))
                raw = onoff.to_bytes(4, "little") + linger.to_bytes(4, "little")
                return raw[:buflen] if buflen else int.from_bytes(raw[:4], "little")
        name = self._OPTNAMES.get((level, optname))
        if name is None:
            raise _oserror(_errno.ENOPROTOOPT, "Protocol not available")
        if name in self._opts:
            v = self._opts[name]
        elif name == "rcvbuf":
            v = self._rx.size if self._rx is not None else 262144
        elif name == "sndbuf":
            v = self._tx.size if self._tx is not None else 262144
        else:
            v = 0
        if buflen:
            return int(v).to_bytes(4, "little")[:buflen]
        return int(v)

    def _check_open(self) -> None:
        if self.use_st == _CLOSED:
            raise self._closed_error()

    # -- connection set-up ---------------------------------------------------------------
    def bind(self, address) -> None:
        self._check_open()
        if self.use_st != _NEW or self._bind is not None:
            raise _oserror(_errno.EINVAL, "Invalid argument (already bound)")
        self._bind = _resolve(address, True)
        self._laddr = self._bind

    def listen(self, backlog: int = 128) -> None:
        self._check_open()
        if self.use_st == _LISTENING:
            return
        if self.use_st != _NEW:
            raise _oserror(_errno.EINVAL, "Invalid argument")
        if self._acceptq is None:
            self._acceptq = collections.deque()
        if self._bind is None or self._bind[1] == 0:
            raise _oserror(_errno.EINVAL, "fpd: bind() to a port the daemon steers "
                                          "(fpd start -p PORT) before listen()")
        c = self._attach_client()
        host, port = self._bind
        backlog = max(1, min(int(backlog), 65535))
        done = []
        try:
            for w in c.workers:        # worker 0 first: it arbitrates the port
                with c.mu:
                    w.inflight += 1
                try:
                    r = w.request(_proto.Listen(addr=host, port=port, backlog=backlog,
                                                opts=self._sockopts()),
                                  _proto.SlotReply)
                    slot, gen = int(r["slot"]), int(r["gen"])
                    if not 0 <= slot < w.region.layout.nslots:
                        raise _oserror(_errno.EPROTO, f"fpd: listen reply names slot "
                                                      f"{slot}")
                    with c.mu:
                        w.listeners[slot] = self
                        done.append((w, slot, gen))
                        self._listen = done
                        if self.use_st == _NEW:
                            self.fire("listen")
                        for rec in w.take_early(slot | (1 << 40)):
                            self._accepted(w, rec.slot, rec.gen)
                finally:
                    with c.mu:
                        w.inflight -= 1
        except BaseException:
            self._unlisten()
            if self.use_st == _LISTENING:
                self.fire("unlisten")
            raise
        if self._pair is not None:
            c.sel_socks.add(self)
            c.start_pump_thread()
            self._kick_r()
            self._kick_w()

    def _accepted(self, w: _WorkerLink, slot: int, gen16: int) -> None:
        """EV_ACCEPTED for this listener (``mu`` held): make the socket now."""
        s = socket.__new__(socket)
        socket.__init__(s)
        s._client = self._client        # (in w.conns from here to close: all_socks)
        try:
            s._adopt(w, slot, gen16)
        except (_ShmError, ValueError):
            w.conns.pop(slot, None)
            w._release_orphan(slot, gen16)
            return
        s.fire("accepted")
        s._addrs()
        for rec in w.take_early(slot):
            if rec.gen == gen16:
                s._ev(rec.kind, rec.arg)
        self._acceptq.append(s)
        if self._cond is not None:
            self._cond.notify_all()
        if self._pair is not None:
            self._kick_r()

    def _unlisten(self) -> None:
        c = self._client
        lst, self._listen = self._listen, ()
        for w, slot, gen in reversed(lst):
            with c.mu:
                if w.listeners.get(slot) is self:
                    del w.listeners[slot]
            if w.dead is None:
                try:
                    w.request(_proto.Unlisten(slot=slot))
                except OSError:
                    pass
        with c.mu:
            q, self._acceptq = list(self._acceptq or ()), collections.deque()
        for s in q:
            s.close()

    def accept(self):
        """``(conn, (ip, port))``; conn is blocking unless a default timeout is set."""
        self._check_open()
        if self.use_st != _LISTENING:
            raise _oserror(_errno.EINVAL, "Invalid argument (not listening)")
        c = self._client
        to = self._timeout
        with self._rlock:
            q = self._acceptq
            if not q and to == 0.0:
                c.try_pump()
            if not q:
                if to == 0.0:
                    raise BlockingIOError(_errno.EAGAIN, "Resource temporarily unavailable")
                deadline = None if to is None else _now() + to
                if not c.wait(lambda: q or self.use_st != _LISTENING
                              or self.link_st != _OK, self, deadline):
                    raise TimeoutError("timed out")
            with c.mu:
                if self.use_st != _LISTENING:
                    raise self._closed_error()
                if self.link_st != _OK and not q:
                    raise self._dead_error()
                conn = q.popleft()
            if self._pair is not None:
                self._set_fd_r(bool(q))
        if self._dirty_r:
            self._kick_r()
        conn._timeout = _std.getdefaulttimeout()
        o = self._opts
        for name in ("nodelay", "keepalive", "rcvbuf", "sndbuf"):
            if name in o:                 # the daemon applied the listener's options
                conn._opts = _proto.with_opt(conn._opts, name, o[name])
        return conn, conn._raddr

    def _start_connect(self, address) -> None:
        self._check_open()
        st = self.use_st
        if st == _CONNECTED:
            raise _oserror(_errno.EISCONN, "Transport endpoint is already connected")
        if st == _CONNECTING:
            raise _oserror(_errno.EALREADY, "Operation already in progress")
        if st == _LISTENING:
            raise _oserror(_errno.EINVAL, "Invalid argument")
        if st == _FAILED:
            self._release_slot(False)
        host, port = _resolve(address)
        c = self._attach_client()
        w = c.pick_worker()
        opts = {k: v for k, v in self._opts.items() if k in _proto.SOCKOPTS}
        req = _proto.Connect(addr=host, port=port,
                             bind_port=self._bind[1] if self._bind is not None
                             and self._bind[1] else None, opts=opts or None)
        with c.mu:
            w.inflight += 1
        try:
            r = w.request(req, _proto.SlotReply)
            slot, gen = int(r["slot"]), int(r["gen"])
            with c.mu:
                self.fire("renew")                # a new connection: nothing ended yet
                self._end_errno = self._so_error = 0
                self._why = None
                try:
                    self._adopt(w, slot, gen & 0xFFFF)
                except (_ShmError, ValueError) as e:
                    w.conns.pop(slot, None)
                    w._release_orphan(slot, gen)
                    raise _oserror(_errno.EPROTO, f"fpd: connect: {e}") from None
                self.fire("connect")
                self._raddr = (host, port)
                loc = r.get("local")
                if isinstance(loc, list) and len(loc) == 2:
                    self._laddr = (str(loc[0]), int(loc[1]))
                for rec in w.take_early(slot):
                    if rec.gen == self._gen16:
                        self._ev(rec.kind, rec.arg)
        finally:
            with c.mu:
                w.inflight -= 1
        if self._pair is not None:
            c.sel_socks.add(self)
            c.start_pump_thread()

    def _connect_ready(self) -> bool:
        if self.use_st != _CONNECTING or self.link_st != _OK:
            return True
        try:
            st = self._ctl.read()[0]
        except _ShmCorrupt:
            return True
        if st == _shm.S_ESTABLISHED:
            self.fire("connected")
            self._addrs()
            return True
        if st == _shm.S_CLOSED:
            self._check_ctl()
            return True
        return False

    def _finish_connect(self, deadline) -> int:
        """Wait for the outcome; returns 0 or an errno."""
        c = self._client
        if self.use_st == _CONNECTING:
            if not c.wait(self._connect_ready, self, deadline):
                return _errno.ETIMEDOUT if deadline is not None else _errno.EINPROGRESS
        if self.use_st == _CONNECTED:
            if self._pair is not None:
                self._kick_r()
                self._kick_w()
            return 0
        if self.link_st != _OK and self.use_st != _FAILED:
            return _errno.ECONNRESET
        code = self._so_error or self._end_errno or _errno.ECONNREFUSED
        self._so_error = 0
        self._release_slot(False)
        if self.use_st in (_CONNECTING, _FAILED):      # (not if it was closed meanwhile)
            self.fire("fail")
        return code

    def connect(self, address) -> None:
        if self.use_st == _CONNECTING and self._timeout == 0.0:
            if not self._connect_ready():
                raise BlockingIOError(_errno.EALREADY, "Operation already in progress")
        else:
            self._start_connect(address)
        if self._timeout == 0.0:
            if not self._connect_ready():
                raise BlockingIOError(_errno.EINPROGRESS, "Operation now in progress")
        deadline = None if self._timeout is None else _now() + self._timeout
        code = self._finish_connect(deadline)
        if code:
            if code == _errno.ETIMEDOUT and self._timeout:
                self._abort_connect()
                raise TimeoutError("timed out")
            if code == _errno.ECONNRESET and self.link_st != _OK:
                raise self._dead_error()
            raise _oserror(code, _errtext(code))

    def connect_ex(self, address) -> int:
        try:
            self.connect(address)
        except BlockingIOError as e:
            return e.errno
        except TimeoutError:
            return _errno.EAGAIN             # what the standard module returns
        except OSError as e:
            if e.errno is None:
                raise
            return e.errno
        return 0

    def _abort_connect(self) -> None:
        self._release_slot(True)
        if self.use_st in (_CONNECTING, _FAILED):
            self.fire("fail")

    def _release_slot(self, abort: bool) -> None:
        """Give the slot back to the daemon (OP_CLOSE/ABORT) and forget it."""
        w, slot = self._w, self._slot
        if w is None or slot < 0:
            return
        c = self._client
        with c.mu:
            if w.conns.get(slot) is self:
                del w.conns[slot]
            self._w = None
            self._slot = -1
            self._rx = self._tx = self._ctl = None
            if self._view == 0:
                try:
                    w.region.close_slot(slot)
                except BufferError:
                    pass
        if w.dead is None:
            try:
                w.cmd(slot, _OP_ABORT if abort else _OP_CLOSE, 0, self._gen16)
            except OSError:
                pass

    # -- data: send ----------------------------------------------------------------------
    def _send_error(self) -> OSError:
        """Why we cannot send now (wlock held), or None. A connect in progress is
        waited for (EAGAIN when non-blocking), as Linux does."""
        if self.use_st == _CLOSED:
            return self._closed_error()
        if self.link_st != _OK:
            return self._dead_error(pipe=True)
        if self.use_st == _CONNECTING:
            if self._timeout == 0.0:
                if not self._connect_ready():
                    return BlockingIOError(_errno.EAGAIN,
                                           "Resource temporarily unavailable")
            else:
                code = self._finish_connect(None if self._timeout is None
                                            else _now() + self._timeout)
                if code:
                    return _oserror(code, _errtext(code))
            if self.use_st == _CONNECTED:
                return None
        st = self.use_st
        if st != _CONNECTED:
            if st == _FAILED and self._so_error:
                return _oserror(self._so_error, _errtext(self._so_error))
            return _oserror(_errno.ENOTCONN if st != _CONNECTING else _errno.EAGAIN,
                            "Transport endpoint is not connected")
        if self.wr_st == _WR_SHUT:
            return BrokenPipeError(_errno.EPIPE, "Broken pipe")
        if self.peer_st == _ENDED:
            code = self._end_errno
            if code == _errno.ECONNRESET:
                self.fire("reported")            # once; then EPIPE (and EOF for recv)
                return ConnectionResetError(code, "Connection reset by peer")
            if code:
                return _oserror(code, _errtext(code))
        if self.peer_st != _LIVE:
            return BrokenPipeError(_errno.EPIPE, "Broken pipe")
        return None

    def _wait_tx(self, tx, want, deadline) -> None:
        """Block (wlock held) until ``want`` bytes are free in TX, or an error."""
        c = self._client

        def ready():
            if self.use_st != _CONNECTED or self.link_st != _OK or self.peer_st != _LIVE \
                    or self.wr_st == _WR_SHUT:
                return True
            tx.disarm()
            return not tx.arm(want)
        try:
            ok = c.wait(ready, self, deadline)      # EV_WRITABLE: the event ring
        except _ShmCorrupt as e:
            raise self._broken(e) from None
        finally:
            if self._tx is tx:
                tx.disarm()
        if not ok:
            raise TimeoutError("timed out")

    def send(self, data, flags: int = 0) -> int:
        tx = self._tx
        with self._wlock:
            while True:
                if tx is None or not self.fast:
                    e = self._send_error()
                    if e is not None:
                        raise e
                    tx = self._tx
                try:
                    n = tx.write(data)
                    if n:
                        self._w.kick_tx(self._slot, self._gen16, tx)
                        c = self._client
                        if self._txg != c.tx_gen:        # (see _DaemonLink.tx_sweep)
                            self._txg = c.tx_gen
                            c.tx_dirty.add(self)
                        break
                    if not len(data):
                        return 0
                    if tx.peer_closed():
                        raise BrokenPipeError(_errno.EPIPE, "Broken pipe")
                except _ShmCorrupt as e:
                    raise self._broken(e) from None
                to = self._timeout
                if to == 0.0 or flags & _MSG_DONTWAIT:
                    self._check_ctl()
                    if self.peer_st != _LIVE:
                        continue
                    raise BlockingIOError(_errno.EAGAIN, "Resource temporarily unavailable")
                self._wait_tx(tx, 1, None if to is None else _now() + to)
            if self._pair is not None:
                self._set_fd_w(self._writable_now())
        if self._dirty_w:
            self._kick_w()
        return n

    def sendall(self, data, flags: int = 0) -> None:
        tx = self._tx
        to = self._timeout
        deadline = None if not to else _now() + to
        mv = None
        with self._wlock:
            total = len(data) if type(data) is bytes else memoryview(data).nbytes
            off = 0
            while True:
                if tx is None or not self.fast:
                    e = self._send_error()
                    if e is not None:
                        raise e
                    tx = self._tx
                try:
                    if off == 0:
                        n = tx.write(data)
                    else:
                        n = tx.write(mv[off:])
                    if n:
                        self._w.kick_tx(self._slot, self._gen16, tx)
                        c = self._client
                        if self._txg != c.tx_gen:        # (see _DaemonLink.tx_sweep)
                            self._txg = c.tx_gen
                            c.tx_dirty.add(self)
                        off += n
                        if off >= total:
                            break
                        if mv is None:
                            mv = memoryview(data).cast("B")
                        continue
                    if not total:
                        break
                    if tx.peer_closed():
                        raise BrokenPipeError(_errno.EPIPE, "Broken pipe")
                except _ShmCorrupt as e:
                    raise self._broken(e) from None
                if to == 0.0 or flags & _MSG_DONTWAIT:
                    self._check_ctl()
                    if self.peer_st != _LIVE:
                        continue
                    raise BlockingIOError(_errno.EAGAIN, "Resource temporarily unavailable")
                self._wait_tx(tx, min(total - off, _WANT_MAX, tx.size), deadline)
            if self._pair is not None:
                self._set_fd_w(self._writable_now())
        if self._dirty_w:
            self._kick_w()

    def sendmsg(self, buffers, ancdata=(), flags=0, address=None) -> int:
        if ancdata or address is not None:
            raise _oserror(_errno.EOPNOTSUPP, "fpd sockets carry no ancillary data")
        return self.send(b"".join(buffers), flags)

    def sendto(self, data, flags_or_addr, addr=None) -> int:
        if addr is None and not isinstance(flags_or_addr, int):
            raise _oserror(_errno.EISCONN, "Transport endpoint is already connected")
        return self.send(data, flags_or_addr if addr is None else 0)

    # -- data: receive -------------------------------------------------------------------
    def _recv_slow(self, rx, flags):
        """Nothing readable right now (rlock held): EOF -> True, error -> raise,
        else wait (or raise BlockingIOError/TimeoutError). Returns False to retry."""
        st = self.use_st
        if st == _CLOSED:
            raise self._closed_error()
        if rx is None or st != _CONNECTED:
            return self._recv_unconnected(st)
        try:
            if rx.readable():
                return False
            eof = rx.at_eof()
        except _ShmCorrupt as e:
            raise self._broken(e) from None
        if eof or self.rd_st == _RD_SHUT:
            return self._recv_end(True)
        if self.link_st != _OK:
            raise self._dead_error()
        if self.peer_st != _LIVE:
            return self._recv_end(False)
        to = self._timeout
        if to == 0.0 or flags & _MSG_DONTWAIT:
            self._client.try_pump()
            self._check_ctl()
            if self.peer_st != _LIVE or self.link_st != _OK:
                return False                 # look again: EOF or the error
            raise BlockingIOError(_errno.EAGAIN, "Resource temporarily unavailable")
        return self._recv_wait(rx, None if to is None else _now() + to)

    def _recv_unconnected(self, st):
        """recv on a socket that is not connected (yet, or any more)."""
        if st == _FAILED and self._so_error:
            code, self._so_error = self._so_error, 0
            raise _oserror(code, _errtext(code))
        if self.link_st != _OK:
            raise self._dead_error()
        if st == _CONNECTING:
            if self._timeout == 0.0:
                raise BlockingIOError(_errno.EAGAIN, "Resource temporarily unavailable")
            code = self._finish_connect(None if self._timeout is None
                                        else _now() + self._timeout)
            if code:
                raise _oserror(code, _errtext(code))
            return False
        raise _oserror(_errno.ENOTCONN, "Transport endpoint is not connected")

    def _recv_end(self, eof: bool) -> bool:
        """The RX ring ended (``eof``) or the daemon ended the connection: EOF (True),
        or the error that ended it, raised once (then EOF)."""
        if eof and self.peer_st == _LIVE and self.rd_st == _RD_OPEN:
            # the daemon also ends the RX ring when the connection is reset (or it
            # stops): the slot's state word tells a reset from the peer's FIN
            if self.link_st == _OK:
                self._check_ctl()
                if self.peer_st == _LIVE:
                    self._client.try_pump()      # a daemon dying mid-shutdown?
            if self.link_st != _OK and self._ctl_error():
                raise self._dead_error()
        code = self._end_errno
        if self.peer_st != _ENDED or not code or self.rd_st == _RD_SHUT:
            return True
        self.fire("reported")
        if code == _errno.ECONNRESET:
            if eof:
                self._client.try_pump()          # EV_SHUTDOWN / hangup explain it?
                if self.link_st != _OK:
                    raise self._dead_error()
            raise ConnectionResetError(code, "Connection reset by peer")
        raise _oserror(code, _errtext(code))

    def _recv_wait(self, rx, deadline) -> bool:
        """Block until RX has a byte, EOF or an error (or raise TimeoutError)."""
        c = self._client

        def ready():
            if self.use_st != _CONNECTED or self.link_st != _OK or self.peer_st != _LIVE \
                    or self.rd_st == _RD_SHUT:
                return True
            rx.disarm()
            return not rx.arm(1)
        direct = self._direct()
        try:
            if direct:
                ok = c.wait_direct(ready, direct, deadline)
            elif direct is False:
                ok = c.wait_settling(ready, self, deadline)
            else:
                ok = c.wait(ready, self, deadline)
        except _ShmCorrupt as e:
            raise self._broken(e) from None
        finally:
            if self._rx is rx:
                rx.disarm()
        if not ok:
            raise TimeoutError("timed out")
        return False

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        with self._rlock:
            rx = self._rx
            if rx is not None and not flags and bufsize > 0:
                try:
                    data = rx.read(bufsize)          # the fast path: data is there
                    if data:
                        if rx.wake_needed():
                            self._w.kick_rx(self._slot, self._gen16)
                        if self._pair is None:
                            return data
                        self._set_fd_r(self._readable_now())
                except _ShmCorrupt as e:
                    raise self._broken(e) from None
            else:
                data = None
            if not data:
                data = self._recv_loop(bufsize, flags)
        if self._dirty_r:
            self._kick_r()
        return data

    def _recv_loop(self, bufsize, flags) -> bytes:
        """recv's slow path (rlock held)."""
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        while True:
            rx = self._rx
            if rx is not None:
                try:
                    if flags & _MSG_PEEK:
                        a, b = rx.peek_view(bufsize)
                        data = bytes(a) + bytes(b)
                    else:
                        data = rx.read(bufsize)
                    if data:
                        if rx.wake_needed():
                            self._w.kick_rx(self._slot, self._gen16)
                        break
                except _ShmCorrupt as e:
                    raise self._broken(e) from None
            if not bufsize or self._recv_slow(rx, flags):
                data = b""
                break
        if self._pair is not None:
            self._set_fd_r(self._readable_now())
        return data

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:
        with self._rlock:
            rx = self._rx
            if rx is not None and not flags and not nbytes:
                try:
                    n = rx.read_into(buffer)         # the fast path: data is there
                    if n:
                        if rx.wake_needed():
                            self._w.kick_rx(self._slot, self._gen16)
                        if self._pair is None:
                            return n
                        self._set_fd_r(self._readable_now())
                except _ShmCorrupt as e:
                    raise self._broken(e) from None
            else:
                n = 0
            if not n:
                n = self._recv_into_loop(buffer, nbytes, flags)
        if self._dirty_r:
            self._kick_r()
        return n

    def _recv_into_loop(self, buffer, nbytes, flags) -> int:
        """recv_into's slow path (rlock held)."""
        if nbytes < 0:
            raise ValueError("negative buffersize in recv_into")
        if nbytes:
            buffer = memoryview(buffer).cast("B")[:nbytes]
        while True:
            rx = self._rx
            if rx is not None:
                try:
                    if flags & _MSG_PEEK:
                        a, b = rx.peek_view(len(memoryview(buffer).cast("B")))
                        mv = memoryview(buffer).cast("B")
                        mv[:len(a)] = a
                        mv[len(a):len(a) + len(b)] = b
                        n = len(a) + len(b)
                    else:
                        n = rx.read_into(buffer)
                    if n:
                        if rx.wake_needed():
                            self._w.kick_rx(self._slot, self._gen16)
                        break
                except _ShmCorrupt as e:
                    raise self._broken(e) from None
            if not memoryview(buffer).nbytes or self._recv_slow(rx, flags):
                n = 0
                break
        if self._pair is not None:
            self._set_fd_r(self._readable_now())
        return n

    def recvfrom(self, bufsize: int, flags: int = 0):
        return self.recv(bufsize, flags), None

    def recvfrom_into(self, buffer, nbytes: int = 0, flags: int = 0):
        return self.recv_into(buffer, nbytes, flags), None

    # -- zero-copy receive ---------------------------------------------------------------
    def recv_view(self, n: int = -1) -> memoryview:
        """Zero-copy: a read-only view of up to ``n`` received bytes (all that is
        contiguous in the ring if ``n < 0``), waiting like :meth:`recv`; empty at EOF.
        Nothing is consumed until :meth:`release`; the view is valid until then."""
        with self._rlock:
            while True:
                rx = self._rx
                if rx is not None:
                    try:
                        a, _ = rx.peek_view(n)
                    except _ShmCorrupt as e:
                        raise self._broken(e) from None
                    if len(a):
                        self._view = len(a)
                        return a
                if self._recv_slow(rx, 0):
                    self._view = 0
                    return memoryview(b"")

    def release(self, n: int | None = None) -> None:
        """Consume ``n`` bytes (default: all) of the view :meth:`recv_view` returned."""
        with self._rlock:
            if n is None:
                n = self._view
            if n < 0 or n > self._view:
                raise ValueError(f"release({n}) beyond the {self._view}-byte view")
            rx = self._rx
            self._view = 0
            if rx is None or not n:
                return
            rx.release(n)
            if rx.wake_needed():
                self._w.kick_rx(self._slot, self._gen16)
            if self._pair is not None:
                self._set_fd_r(self._readable_now())
        if self._dirty_r:
            self._kick_r()

    def viewing(self, n: int = -1):
        """``with sock.viewing(n) as view:`` -- :meth:`recv_view`, then release it all."""
        return _Viewing(self, n)

    # -- shutdown, close -----------------------------------------------------------------
    def shutdown(self, how: int) -> None:
        self._check_open()
        if how not in (_std.SHUT_RD, _std.SHUT_WR, _std.SHUT_RDWR):
            raise _oserror(_errno.EINVAL, "Invalid argument")
        if self.use_st != _CONNECTED:
            raise _oserror(_errno.ENOTCONN, "Transport endpoint is not connected")
        if self.link_st != _OK:
            raise self._dead_error()
        rd = how != _std.SHUT_WR and self.rd_st == _RD_OPEN
        wr = how != _std.SHUT_RD and self.wr_st == _WR_OPEN
        if not (rd or wr):
            return
        if wr:
            self.fire("shut_wr")
        if rd:
            self.fire("shut_rd")
        if wr:
            with self._wlock:
                tx = self._tx
                if tx is not None:
                    tx.shutdown()
        if rd:
            with self._rlock:
                rx = self._rx
                if rx is not None:
                    rx.close()
        code = _proto.SHUT_RDWR if rd and wr else _proto.SHUT_RD if rd else _proto.SHUT_WR
        if self.peer_st == _LIVE:
            self._w.cmd(self._slot, _OP_SHUTDOWN, code, self._gen16)
        with self._client.mu:
            if self._cond is not None:
                self._cond.notify_all()
        if self._pair is not None:
            self._kick_r()
            self._kick_w()

    def close(self) -> None:
        if self._io_refs > 0:
            self._io_refs = -self._io_refs          # close when the last file closes
            return
        self._really_close()

    def _really_close(self) -> None:
        st = self.use_st
        if st == _CLOSED:
            return
        c = self._client
        if c is not None and self.link_st != _FORKED:
            with c.mu:
                self.fire("close")
                if self._cond is not None:
                    self._cond.notify_all()
                # a leader sleeping in poll() for this socket must wake up; one that
                # sleeps for another socket (a thread blocked in accept) need not:
                # ringing it would cost every short connection an app wake-up
                lead = c.leading and c.lead_for is self
            if lead:
                try:
                    c.wake_bell.ring()
                except (OSError, AttributeError, TypeError):
                    pass
            b = self._sbell
            if b is not None and self._rlock.locked():
                try:
                    b.ring()             # a thread sleeping on its own bell (recv holds
                except (OSError, TypeError):     # the receive lock while it waits)
                    pass
        self.fire("close")
        with self._rlock, self._wlock:
            if st == _LISTENING:
                self._unlisten()
            elif self._w is not None:
                self._release_slot(self._linger0)
            b, self._sbell = self._sbell, None
            self._sbpoll = None
            if b is not None:
                b.close()
        p, self._pair = self._pair, None
        if p is not None:
            p[0].close()
            p[1].close()

    def detach(self):
        raise _oserror(_errno.EOPNOTSUPP, "fpd sockets cannot be detached")

    def dup(self):
        raise _oserror(_errno.EOPNOTSUPP, "fpd sockets cannot be duplicated")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            if self.use_st != _CLOSED and self.link_st != _FORKED:
                self._really_close()
        except Exception:
            pass

    def __repr__(self):
        st = self.use_st.lower()
        extra = f" laddr={self._laddr}"
        if self._raddr and self.use_st == _CONNECTED:
            extra += f" raddr={self._raddr}"
        return f"<fpd.client.socket {st}{extra} slot={self._slot}>"

    # -- file objects --------------------------------------------------------------------
    def makefile(self, mode="r", buffering=None, *, encoding=None, errors=None,
                 newline=None):
        if not set(mode) <= {"r", "w", "b"}:
            raise ValueError(f"invalid mode {mode!r} (only r, w, b allowed)")
        reading = "r" in mode
        writing = "w" in mode
        binary = "b" in mode
        raw = _SockIO(self, reading, writing)
        self._io_refs = abs(self._io_refs) + 1
        if buffering is None:
            buffering = -1
        if buffering < 0:
            buffering = io.DEFAULT_BUFFER_SIZE
        if buffering == 0:
            if not binary:
                raise ValueError("unbuffered streams must be binary")
            return raw
        if reading and writing:
            buf = io.BufferedRWPair(raw, raw, buffering)
        elif reading:
            buf = io.BufferedReader(raw, buffering)
        else:
            buf = io.BufferedWriter(raw, buffering)
        if binary:
            return buf
        t = io.TextIOWrapper(buf, encoding, errors, newline)
        t.mode = mode
        return t

    def _io_closed(self) -> None:
        if self._io_refs > 0:
            self._io_refs -= 1
        elif self._io_refs < 0:
            self._io_refs += 1
            if self._io_refs == 0:
                self._really_close()


SocketType = socket


class _Viewing:
    __slots__ = ("sock", "n", "view")

    def __init__(self, sock, n):
        self.sock, self.n, self.view = sock, n, None

    def __enter__(self):
        self.view = self.sock.recv_view(self.n)
        return self.view

    def __exit__(self, *exc):
        n = len(self.view)
        self.view.release()
        self.sock.release(n)


class _SockIO(io.RawIOBase):
    """Raw file over an fpd socket (what makefile() buffers)."""

    def __init__(self, sock, reading, writing):
        super().__init__()
        self._sock = sock
        self._r, self._w = reading, writing

    def readinto(self, b):
        try:
            return self._sock.recv_into(b)
        except BlockingIOError:
            return None              # RawIOBase: "no data right now"

    def write(self, b):
        try:
            return self._sock.send(b)
        except BlockingIOError:
            return None

    def readable(self):
        return self._r

    def writable(self):
        return self._w

    def fileno(self):
        return self._sock.fileno()

    def close(self):
        if not self.closed:
            super().close()
            self._sock._io_closed()


def _optint(value) -> int:
    if isinstance(value, (bytes, bytearray)):
        return int.from_bytes(bytes(value[:4]).ljust(4, b"\0"), "little", signed=True)
    return int(value)


# --- helpers like the standard module's ---------------------------------------------------
def create_connection(address, timeout=_GLOBAL_DEFAULT_TIMEOUT, source_address=None, *,
                      all_errors=False):
    """Connect to ``(host, port)`` (IPv4 addresses of ``host`` in order) and return the
    socket. ``timeout`` as in the standard module."""
    host, port = address
    if host in ("", None):
        host = "0.0.0.0"
    errors = []
    for res in _std.getaddrinfo(host, port, _AF_INET, _SOCK_STREAM):
        sa = res[4]
        s = socket(_AF_INET, _SOCK_STREAM)
        try:
            if timeout is not _GLOBAL_DEFAULT_TIMEOUT:
                s.settimeout(timeout)
            if source_address:
                s.bind(source_address)
            s.connect(sa)
            return s
        except OSError as e:
            errors.append(e)
            s.close()
    if not errors:
        raise OSError("getaddrinfo returns an empty list")
    group = getattr(builtins, "ExceptionGroup", None)          # Python 3.11+
    if all_errors and len(errors) > 1 and group is not None:
        raise group("create_connection failed", errors)
    raise errors[0]


def create_server(address, *, family=_AF_INET, backlog=None, reuse_port=False,
                  dualstack_ipv6=False):
    """A listening socket bound to ``address``: fpd for AF_INET, the standard module
    for anything else."""
    return _create_server(socket, address, family, backlog, reuse_port, dualstack_ipv6)


def _create_server(sock_type, address, family, backlog, reuse_port, dualstack_ipv6):
    """create_server's body for a socket class of fpd's (this module's or fpd.inproc's):
    anything but plain AF_INET goes to the standard module."""
    if family != _AF_INET or dualstack_ipv6:
        return _std.create_server(address, family=family, backlog=backlog,
                                  reuse_port=reuse_port, dualstack_ipv6=dualstack_ipv6)
    s = sock_type(_AF_INET, _SOCK_STREAM)
    try:
        s.setsockopt(_SOL_SOCKET, _std.SO_REUSEADDR, 1)
        s.bind(address)
        if backlog is None:
            s.listen()
        else:
            s.listen(backlog)
        return s
    except BaseException:
        s.close()
        raise


def has_dualstack_ipv6() -> bool:
    return False


def socketpair(family=None, type=_SOCK_STREAM, proto=0):
    """The standard socketpair (fpd has no socketpair of its own)."""
    if family is None:
        family = _std.AF_UNIX
    return _std.socketpair(family, type, proto)


def fromfd(fd, family, type, proto=0):
    """The standard fromfd (a kernel descriptor is never an fpd socket)."""
    return _std.fromfd(fd, family, type, proto)
