"""The service a worker process runs for its clients (see docs/DAEMON.md).

    chan = the worker's end of the supervisor's SOCK_SEQPACKET socketpair
    sys.exit(worker_main(chan, WorkerConfig(ifname="eth0", queue=0, nqueues=1, ...)))

A worker owns one host (in the daemon an :class:`fpd.worker.Worker`: XSK + UMEM + Stack of
one queue; any :class:`fpd.host.Host` will do) and serves the clients the supervisor
hands it: each client gets a shared-memory region
(:mod:`fpd.shm`) with one slot per connection, and speaks JSON over its own control
connection (:mod:`fpd.proto`). Everything a client writes into its region is hostile
input.
"""

from __future__ import annotations

import collections
import dataclasses
import errno as _errno
import logging
import os
import socket
import time

from . import capture as _capture
from . import proto
from . import shm as _shm
from . import tcp as _tcp
from . import wire as _wire
from .proto import SHUT_RDWR, SHUT_WR, SOCKOPTS
from .shm import (NO_SLOT, OP_ABORT, OP_CLOSE, OP_KICK, OP_SETOPT, OP_SHUTDOWN,
                  S_CLOSED, S_CONNECTING, S_ESTABLISHED, S_LISTENING, ShmCorrupt)
from .slotlife import CLOSED, ENDING, PEER_FIN, RELEASED, RX_EOF, TX_SHUT, SlotLife

__all__ = ["WorkerConfig", "Service", "worker_main"]


@dataclasses.dataclass
class WorkerConfig:
    """What the supervisor tells a worker it forks (plain data: it crosses a fork)."""
    ifname: str
    queue: int
    nqueues: int = 1
    ports: list = dataclasses.field(default_factory=list)       # steered listen ports
    addr: str | None = None            # the steered / listening address, None = any
    local_ports: list = dataclasses.field(default_factory=list)  # this worker's connect ports
    isn_key: bytes = b""
    stack: dict = dataclasses.field(default_factory=dict)        # StackConfig overrides
    worker: dict = dataclasses.field(default_factory=dict)       # fpd.worker.Worker kwargs
    # several queues: AF_UNIX datagram socket fds, per queue (rx_fd, tx_fd), made by the
    # supervisor before it forks; worker q reads fwd[q][0] and sends to fwd[k][1]
    fwd: list = dataclasses.field(default_factory=list)


# --- the service ---------------------------------------------------------------------------
log = logging.getLogger("fpd.service")

_ERRNO_OF = {ConnectionResetError: _errno.ECONNRESET, TimeoutError: _errno.ETIMEDOUT,
             ConnectionRefusedError: _errno.ECONNREFUSED}
MAX_SLOTS_PER_CLIENT = _shm.MAX_SLOTS    # 262,144: 100,000 idle connections fit one region
RECLAIM_INTERVAL = 1.0            # seconds an RX ring stays unwritten and empty before its
                                   # pages go back (shm.Region.reclaim)
EVENT_BACKLOG_LIMIT = 5.0          # seconds a client's event ring may stay full


class ControlError(Exception):
    """A request the worker refuses: carries the errno the client raises."""

    def __init__(self, err: int, text: str):
        super().__init__(text)
        self.errno = err


_NO_OPTS: dict = {}


class _Entry(SlotLife):
    """One slot of one client: a connection or a listener. Its life is the
    :mod:`fpd.slotlife` table (``fire``, ``done``, ``ending``, ``released``, the track
    states); ``tx_pending`` and ``rx_blocked`` only schedule work."""

    __slots__ = ("client", "slot", "gen", "conn", "listener", "ends", "tx_pending",
                 "rx_blocked", "opts", "bell", "bell_new", "end_errno")

    def __init__(self, client, slot, gen, ends):
        SlotLife.__init__(self)
        self.client = client
        self.slot = slot
        self.gen = gen
        self.ends = ends               # shm.Slot (daemon side)
        self.conn = None
        self.listener = None
        self.tx_pending = False        # look at the TX ring
        self.rx_blocked = False        # engine holds bytes the RX ring had no room for
        self.opts = _NO_OPTS            # never changed in place (proto.with_opt)
        self.bell = None               # the slot's own doorbell (op "bell"), if any
        self.bell_new = False          # no RX wake-up went to that bell yet (see _deliver)
        self.end_errno = 0             # why the engine ended the connection (conn ENDING)


class _RxSink:
    """``Connection.rx_sink`` of an entry's connection: the engine's fast path writes
    in-order payloads straight into the client's RX ring through it when the ring has
    room (fpd.fastpath._rx_direct), instead of queueing them for :meth:`Service._deliver`
    (which still follows, through the READABLE event, for the wake-up, the EOF and what
    did not fit). A ring the client corrupted takes nothing, and the sink is dropped:
    ``_deliver`` meets the corruption and resets the connection."""

    __slots__ = ("svc", "e")

    def __init__(self, svc, e):
        self.svc = svc
        self.e = e

    def write_parts(self, parts) -> int:
        return self._write(_shm.ByteProducer.write_parts, parts)

    def write_with(self, fill) -> int:
        return self._write(_shm.ByteProducer.write_with, fill)

    def _write(self, op, arg) -> int:
        e = self.e
        if e.conn_st == CLOSED or e.rx_st == RX_EOF:
            return 0
        try:
            n = op(e.ends.rx, arg)
        except ShmCorrupt:
            if e.conn is not None:
                e.conn.rx_sink = None
            return 0
        if n:
            svc = self.svc
            svc._rx_hot.add(e)
            svc.counters["rx_direct_bytes"] += n
        return n


class _Client:
    __slots__ = ("id", "sock", "cred", "region", "app_bell", "daemon_bell", "entries",
                 "free", "next_gen", "pending", "full_since", "touched", "dead", "nslots",
                 "events", "commands")

    def __init__(self, cid, sock, cred, region, app_bell, daemon_bell):
        self.id = cid
        self.sock = sock
        self.cred = cred
        self.region = region
        self.app_bell = app_bell
        self.daemon_bell = daemon_bell
        self.events = region.events
        self.commands = region.commands
        self.nslots = region.layout.nslots
        self.entries: dict[int, _Entry] = {}
        self.free: list[int] = []          # released slot numbers (reused LIFO)
        self.next_gen = 1
        self.pending = collections.deque()     # events that found the ring full
        self.full_since = None
        self.touched = False
        self.dead = False


class Service:
    """Serves the clients of one worker (see docs/DAEMON.md).

    It rides on the worker's loop through the :class:`fpd.host.Host` interface (an
    AF_XDP :class:`fpd.worker.Worker` in the daemon, an :class:`fpd.loopback.
    LoopbackWorker` in tests): ``app`` receives the engine's events, the loop polls the
    clients' control sockets and daemon bells, ``iter_hook`` moves bytes between the
    clients' rings and the engine, ``sleep_hook`` arms the rings' wake-ups. ``route(dst)``
    gives the source address of a connect when the configuration names none.
    """

    def __init__(self, worker, cfg: WorkerConfig, *, route=None):
        self.w = worker                      # an fpd.host.Host
        self.stack = worker.stack
        self.cfg = cfg
        self.ports = set(int(p) for p in cfg.ports)
        self.addr = _wire.ip_to_bytes(cfg.addr) if cfg.addr else None
        self.local_ports = list(cfg.local_ports)
        self._lp_next = 0
        self.clients: dict[int, _Client] = {}
        self._next_cid = 1
        self.by_conn: dict = {}              # engine Connection -> _Entry
        self.by_listener: dict = {}          # engine Listener -> _Entry
        self.listening: dict = {}            # (addr bytes, port) -> _Entry
        self.dirty: set = set()              # entries whose TX ring must be looked at
        self.blocked: set = set()            # entries with rx_blocked
        self._armed: list = []
        self._rx_hot: set = set()            # entries whose RX ring was written lately
        self._rx_cold: set = set()           # ... in the interval before: reclaim if empty
        self._freed_hot: set = set()         # (client, slot) freed lately
        self._freed_cold: set = set()        # ... in the interval before: reclaim if free
        self._reclaim_at = 0.0
        self.counters = collections.Counter()
        self._route = route                  # dst -> source address (or ControlError)
        # received payloads straight from the engine's fast path into the clients' RX
        # rings (_RxSink) with FPD_RX_DIRECT=1; off by default: under load (stop 19,
        # docs/PERFORMANCE.md) it did not beat the engine's queue, A/B pending
        self.rx_direct = os.environ.get("FPD_RX_DIRECT", "0") in ("1", "yes", "on")
        worker.app = self._on_events
        worker.iter_hook = self._step
        worker.sleep_hook = self._may_sleep
        worker.wake_hook = self._woke

    # -- clients ---------------------------------------------------------------------------
    def adopt(self, sock: socket.socket, attach: dict, cred: dict) -> None:
        """A client's control connection (its ``attach`` request, as the supervisor read
        it, answered here)."""
        try:
            a = proto.Attach.from_wire(attach)
            lay = _shm.Layout(nslots=_int(a.slots, "slots", 1024, 1, MAX_SLOTS_PER_CLIENT),
                              rx_size=_int(a.rx_size, "rx_size", 262144, 4096, 1 << 26),
                              tx_size=_int(a.tx_size, "tx_size", 262144, 4096, 1 << 26))
        except (ControlError, ValueError) as e:
            self._reply_err(sock, e)
            sock.close()
            return
        region = app_bell = daemon_bell = None
        try:
            region = _shm.Region.create(lay, name=f"fpd-q{self.cfg.queue}-client")
            app_bell = _shm.Doorbell()
            daemon_bell = _shm.Doorbell()
            cid = self._next_cid
            self._next_cid += 1
            c = _Client(cid, sock, dict(cred or {}), region, app_bell, daemon_bell)
            c.free = list(range(lay.nslots - 1, -1, -1))
            sock.setblocking(False)
            reply = proto.AttachReply(
                queue=self.cfg.queue, mss=self.w.mss, generation=region.generation,
                slots=lay.nslots, rx_size=lay.rx_size, tx_size=lay.tx_size,
                workers=self.cfg.nqueues, local_addr=self.cfg.addr or None)
            proto.send(sock, proto.ok(**reply.body()),
                       [region.fd, app_bell.fd, daemon_bell.fd])
        except OSError as e:
            log.warning("attach from %s failed: %s", cred, e)
            for o in (region, app_bell, daemon_bell):
                if o is not None:
                    o.close()
            sock.close()
            return
        self.clients[cid] = c
        self.w.add_reader(sock.fileno(), lambda now, c=c: self._on_control(c, now))
        self.w.add_reader(daemon_bell.fd, lambda now, c=c: c.daemon_bell.drain())
        self.counters["clients_attached"] += 1
        log.info("client %d attached (pid %s uid %s): %d slots", cid, c.cred.get("pid"),
                 c.cred.get("uid"), lay.nslots)

    def drop(self, c: _Client, why: str, now: float | None = None,
             cause: str = "other") -> None:
        """Forget a client: reset its connections, close its listeners and memory.
        ``cause`` names the counter ``clients_dropped_<cause>`` (``fpd stats``)."""
        if c.dead:
            return
        c.dead = True
        now = self.w.clock() if now is None else now
        log.info("client %d dropped: %s", c.id, why)
        self.counters["clients_dropped"] += 1
        self.counters["clients_dropped_" + cause] += 1
        for e in list(c.entries.values()):
            self._kill_entry(e, now, reset=True)
            if e.bell is not None:
                e.bell.close()
                e.bell = None
        self.clients.pop(c.id, None)
        self.w.remove_reader(c.sock.fileno())
        self.w.remove_reader(c.daemon_bell.fd)
        c.sock.close()
        c.app_bell.close()
        c.daemon_bell.close()
        c.region.close()

    def _kill_entry(self, e: _Entry, now: float, reset: bool) -> None:
        if e.listener is not None:
            self._unlisten(e)
        elif e.conn is not None:
            conn = e.conn
            self._detach(e)
            if reset:
                conn.abort(now)
        self.dirty.discard(e)
        self.blocked.discard(e)
        if not e.done:
            e.fire("finish")

    def _attach(self, e: _Entry, conn) -> None:
        e.conn = conn
        self.by_conn[conn] = e
        if self.rx_direct:
            conn.rx_sink = _RxSink(self, e)

    def _detach(self, e: _Entry) -> None:
        if e.conn is not None:
            self.by_conn.pop(e.conn, None)
            e.conn.rx_sink = None
            e.conn = None

    # -- control messages ------------------------------------------------------------------
    def _on_control(self, c: _Client, now: float) -> None:
        """The client's control socket is readable. Whatever its messages raise stays
        with that client (:meth:`_bug`: dropped, counted), never ends the worker."""
        try:
            self._control_msgs(c, now)
        except Exception:
            self._bug(c, now)

    def _control_msgs(self, c: _Client, now: float) -> None:
        for _ in range(64):
            if c.dead:
                return
            try:
                d, fds = proto.recv(c.sock, maxfds=1)
            except BlockingIOError:
                return
            except (ValueError, OSError) as e:
                self.drop(c, f"bad control message: {e}", now, cause="bad_control")
                return
            if d is None:
                self.drop(c, "control connection closed", now, cause="closed")
                return
            try:
                msg = proto.parse(d, proto.WORKER_OPS)
                if len(fds) > msg.fds:
                    raise ControlError(_errno.EINVAL, f"op {msg.op!r} takes no fd")
                reply = proto.ok(**self._handlers[type(msg)](self, c, msg, fds, now))
            except ControlError as e:
                reply = self._refused(e.errno, str(e))
            except proto.ProtocolError as e:
                reply = self._refused(e.errno, str(e))
            except (KeyError, TypeError, ValueError) as e:
                reply = self._refused(_errno.EINVAL, f"bad request: {e}")
            finally:
                for fd in fds:
                    os.close(fd)
            if d.get("noreply"):
                continue
            if "id" in d:
                reply["id"] = d["id"]
            try:
                proto.send(c.sock, reply)
            except OSError as e:
                self.drop(c, f"cannot answer: {e}", now, cause="unanswerable")
                return

    def _refused(self, err: int, text: str) -> dict:
        """A request refused (unknown op, bad field, a slot not the client's, a port not
        steered...): counted as ``requests_refused`` and ``refused_<ERRNO>``."""
        self.counters["requests_refused"] += 1
        self.counters["refused_" + (_errno.errorcode.get(err) or str(err))] += 1
        return proto.fail(err, text)

    def _reply_err(self, sock, e) -> None:
        err = getattr(e, "errno", None) or _errno.EINVAL
        try:
            proto.send(sock, proto.fail(err, str(e)))
        except OSError:
            pass

    def _unlisten_req(self, c: _Client, msg: proto.Unlisten, fds, now: float) -> dict:
        e = self._entry(c, msg.slot)
        if e.listener is None:
            raise ControlError(_errno.EINVAL, f"slot {e.slot} is not listening")
        self._close_entry(e, now, announce=False)
        return {}

    def _setopt(self, c: _Client, msg: proto.SetOpt, fds, now: float) -> dict:
        e = self._entry(c, msg.slot)
        name = msg.name
        if name not in SOCKOPTS:
            raise ControlError(_errno.ENOPROTOOPT, f"option {name!r} not supported")
        self._set_opt(e, SOCKOPTS[SOCKOPTS.index(name)], msg.value)   # (the one str)
        return {}

    def _set_opt(self, e: _Entry, name: str, value) -> None:
        e.opts = proto.with_opt(e.opts, name, value)       # (shared: never in place)
        if e.conn is not None:
            self._apply_opts(e.conn, {name: value})

    def _info(self, c: _Client, msg: proto.Info, fds, now: float) -> dict:
        e = self._entry(c, msg.slot)
        if e.conn is None:
            return {"info": None}
        return {"info": _jsonable(e.conn.info())}

    def _bell(self, c: _Client, msg: proto.Bell, fds, now: float) -> dict:
        """With an eventfd: from now on the daemon rings it (instead of posting
        EV_READABLE) when the client armed that slot's RX consumer, and also on
        EV_CONNECTED, EV_ACCEPTED (a listener's bell) and EV_CLOSED, which still go to the
        event ring; EV_WRITABLE always goes to the event ring. A thread blocked on one
        socket then sleeps on that socket's bell and is woken directly, not through
        another thread that drains the event ring. Without an fd: back to events."""
        e = self._entry(c, msg.slot)
        if e.bell is not None:
            e.bell.close()
            e.bell = None
        if fds:
            e.bell = _shm.Doorbell(fds.pop())
            e.bell_new = True
            e.ends.ctl.set_dflags(_shm.D_BELL)   # the client may sleep on it from now on
        else:
            e.ends.ctl.set_dflags(0)
        return {}

    def _ring(self, e: _Entry) -> None:
        try:
            e.bell.ring()
        except OSError:
            e.bell.close()
            e.bell = None

    def _entry(self, c: _Client, slot: int) -> _Entry:
        e = c.entries.get(slot)
        if e is None or e.done:
            raise ControlError(_errno.EBADF, f"slot {slot!r} is not in use")
        return e

    def _alloc(self, c: _Client):
        if not c.free:
            return None
        slot = c.free.pop()
        gen = c.next_gen
        c.next_gen = (gen + 1) & 0xFFFFFFFF or 1
        ends = c.region.open_slot(slot, gen)
        e = _Entry(c, slot, gen, ends)
        c.entries[slot] = e
        return e

    def _free(self, e: _Entry) -> None:
        if e.bell is not None:
            e.bell.close()
            e.bell = None
        c = e.client
        if c.entries.get(e.slot) is e:
            del c.entries[e.slot]
            c.region.close_slot(e.slot)
            if not c.dead:
                # released: nobody reads its rings. Their pages go back to the kernel at
                # the next-but-one sweep if the slot is still free then (_reclaim); a
                # connection that takes the slot before (LIFO) finds them mapped
                self._freed_hot.add((c, e.slot))
            c.free.append(e.slot)

    def _listen(self, c: _Client, msg: proto.Listen, fds, now: float) -> dict:
        port = msg.port
        if not 0 < port < 65536:
            raise ControlError(_errno.EINVAL, f"bad port {port!r}")
        if port not in self.ports:
            raise ControlError(_errno.EACCES, f"port {port} is not steered by this fpd "
                               f"(ports: {sorted(self.ports)}); start fpd with -p {port}")
        addr = msg.addr or "0.0.0.0"
        try:
            la = _wire.ip_to_bytes(addr)
        except (OSError, ValueError):
            raise ControlError(_errno.EINVAL, f"bad address {addr!r}") from None
        if la != _tcp_any() and self.addr is not None and la != self.addr:
            raise ControlError(_errno.EADDRNOTAVAIL,
                               f"fpd serves {self.cfg.addr}, not {addr}")
        for (a, p), other in self.listening.items():
            if p == port and (a == la or a == _tcp_any() or la == _tcp_any()):
                raise ControlError(_errno.EADDRINUSE,
                                   f"{addr}:{port} is already listened on (client pid "
                                   f"{other.client.cred.get('pid')})")
        e = self._alloc(c)
        if e is None:
            raise ControlError(_errno.EMFILE, "no free slot in this client's region")
        opts = msg.opts or {}
        try:
            over = {k: int(v) for k, v in opts.items() if k in ("rcvbuf", "sndbuf")}
            _lock_bufs(over)
        except (TypeError, ValueError):
            self._free(e)
            raise ControlError(_errno.EINVAL, f"bad socket options {opts!r}") from None
        try:
            lst = self.stack.listen(la, port, backlog=msg.backlog or 128, **over)
        except Exception as ex:
            self._free(e)
            raise ControlError(_errno.EINVAL, f"listen: {ex}") from None
        e.fire("listen")
        e.listener = lst
        e.opts = {k: v for k, v in opts.items() if k in SOCKOPTS}
        self.by_listener[lst] = e
        self.listening[(la, port)] = e
        e.ends.ctl.set_addrs(la, port, b"\0\0\0\0", 0)
        e.ends.ctl.set_state(S_LISTENING)
        log.info("client %d listens on %s:%d (slot %d)", c.id, addr, port, e.slot)
        return {"slot": e.slot, "gen": e.gen}

    def _unlisten(self, e: _Entry) -> None:
        lst = e.listener
        if lst is None:
            return
        e.listener = None
        self.by_listener.pop(lst, None)
        for k, v in list(self.listening.items()):
            if v is e:
                del self.listening[k]
        self.stack.unlisten(lst)

    def _connect(self, c: _Client, msg: proto.Connect, fds, now: float) -> dict:
        port = msg.port
        if not 0 < port < 65536:
            raise ControlError(_errno.EINVAL, f"bad port {port!r}")
        try:
            dst = _wire.ip_to_bytes(msg.addr)
        except (OSError, ValueError, TypeError):
            raise ControlError(_errno.EINVAL, f"bad address {msg.addr!r}") from None
        if self.addr:
            src = self.addr
        elif self._route is not None:
            src = self._route(dst)
        else:
            src = None
        if not src or src == _tcp_any():
            raise ControlError(_errno.EADDRNOTAVAIL, "no source address for the route")
        sport = msg.bind_port or 0
        if sport:
            if sport not in self.local_ports and sport not in self.ports:
                raise ControlError(_errno.EADDRNOTAVAIL,
                                   f"local port {sport} is not steered by this fpd worker")
            if self.stack.find((src, sport), (dst, port)) is not None:
                raise ControlError(_errno.EADDRINUSE, f"{sport} -> {msg.addr}:{port} in use")
        else:
            sport = self._pick_port(src, dst, port)
        e = self._alloc(c)
        if e is None:
            raise ControlError(_errno.EMFILE, "no free slot in this client's region")
        opts = {k: v for k, v in (msg.opts or {}).items() if k in SOCKOPTS}
        try:
            over = {k: int(v) for k, v in opts.items() if k in ("rcvbuf", "sndbuf")}
            _lock_bufs(over)
        except (TypeError, ValueError):
            self._free(e)
            raise ControlError(_errno.EINVAL, f"bad socket options {opts!r}") from None
        try:
            conn = self.stack.connect(now, src, sport, dst, port, **over)
        except Exception as ex:
            self._free(e)
            raise ControlError(_errno.EAGAIN, f"connect: {ex}") from None
        e.fire("connect")
        self._attach(e, conn)
        e.opts = opts
        self._apply_opts(conn, opts)
        e.ends.ctl.set_addrs(src, sport, dst, port)
        e.ends.ctl.set_state(S_CONNECTING)
        return {"slot": e.slot, "gen": e.gen, "local": [_wire.ip_to_str(src), sport]}

    def _pick_port(self, src, dst, dport) -> int:
        lp = self.local_ports
        n = len(lp)
        if not n:
            raise ControlError(_errno.EADDRNOTAVAIL, "this fpd has no local ports for "
                               "connect (--local-ports)")
        find = self.stack.find
        for i in range(n):
            p = lp[(self._lp_next + i) % n]
            if find((src, p), (dst, dport)) is None:
                self._lp_next = (self._lp_next + i + 1) % n
                return p
        raise ControlError(_errno.EADDRNOTAVAIL, f"all {n} local ports are in use towards "
                           f"{_wire.ip_to_str(dst)}:{dport}")

    _handlers = {proto.Listen: _listen, proto.Unlisten: _unlisten_req,
                 proto.Connect: _connect, proto.SetOpt: _setopt, proto.Info: _info,
                 proto.Bell: _bell}

    @staticmethod
    def _apply_opts(conn, opts: dict) -> None:
        if "nodelay" in opts:
            conn.nodelay = bool(opts["nodelay"])
        if "keepalive" in opts:
            conn.keepalive = bool(opts["keepalive"])

    # -- events: engine -> clients ---------------------------------------------------------
    def _post(self, c: _Client, slot: int, kind: int, arg: int = 0, gen: int = 0,
              wake: bool = True) -> None:
        """An event for the client; ``wake=False``: no wake-up for it (the client reads
        it with its next one)."""
        if c.dead:
            return
        if wake:
            c.touched = True
        if c.pending or not c.events.put(slot, kind, arg, gen):
            c.pending.append((slot, kind, arg, gen))

    def _on_events(self, worker, evs, now) -> None:
        by_conn = self.by_conn
        for ev in evs:
            try:
                self._on_event(ev, by_conn, now)
            except Exception:
                e = by_conn.get(ev[-1])
                if e is None:
                    raise
                self._bug(e.client, now)

    def _on_event(self, ev, by_conn, now) -> None:
        kind = ev[0]
        if kind == _tcp.Event.ACCEPTED:
            self._accepted(ev[1], ev[2], now)
            return
        e = by_conn.get(ev[1])
        if e is None:
            return
        if kind == _tcp.Event.READABLE:
            self._deliver(e)
        elif kind == _tcp.Event.WRITABLE:
            e.tx_pending = True
            self.dirty.add(e)
        elif kind == _tcp.Event.PEER_CLOSED:
            e.fire("peer_fin")
            self._deliver(e)
        elif kind == _tcp.Event.CONNECTED:
            e.fire("connected")
            e.ends.ctl.set_state(S_ESTABLISHED)
            self._post(e.client, e.slot, _shm.EV_CONNECTED, 0, e.gen)
            if e.bell is not None:
                self._ring(e)
            if e.tx_pending:
                self.dirty.add(e)
        elif kind in (_tcp.Event.RESET, _tcp.Event.TIMED_OUT, _tcp.Event.REFUSED, _tcp.Event.CLOSED):
            # the connection is over, but bytes it received stay readable (the engine's
            # buffer outlives it): deliver them all, then the end (see _deliver)
            if not e.ending:
                e.end_errno = 0 if kind == _tcp.Event.CLOSED else \
                    _ERRNO_OF.get(e.conn.error, _errno.ECONNABORTED)
                e.fire("end")
            self._deliver(e)

    def _accepted(self, lst, conn, now) -> None:
        le = self.by_listener.get(lst)
        if le is None or le.client.dead:
            conn.abort(now)
            self.counters["accept_orphaned"] += 1
            return
        c = le.client
        e = self._alloc(c)
        if e is None:
            conn.abort(now)
            self.counters["accept_no_slot"] += 1
            return
        e.fire("accept")
        self._attach(e, conn)
        e.opts = le.opts                # shared, as every opts dict: changed only by
        self._apply_opts(conn, e.opts)  # replacing it (proto.with_opt)
        (la, lp), (ra, rp) = conn.local, conn.remote
        e.ends.ctl.set_addrs(la, lp, ra, rp)
        e.ends.ctl.set_state(S_ESTABLISHED)
        self._post(c, e.slot, _shm.EV_ACCEPTED, le.slot, e.gen)
        if le.bell is not None:
            self._ring(le)
        if conn.readable or conn.eof:
            self._deliver(e)

    def _deliver(self, e: _Entry) -> None:
        """Engine receive buffer -> RX ring (as much as fits), EOF after the last byte."""
        conn = e.conn
        if conn is None or e.conn_st == CLOSED or e.rx_st == RX_EOF:
            return
        rx = e.ends.rx
        try:
            n = conn.readable
            if n:
                room = rx.writable()
                if room:
                    # the engine's queue chunks straight into the ring (one copy)
                    k = conn.recv_to(rx.write_parts, room if room < n else n)
                    self._rx_hot.add(e)
                    n -= k
                if n:
                    if not e.rx_blocked:
                        e.rx_blocked = True
                        self.blocked.add(e)
                elif e.rx_blocked:
                    e.rx_blocked = False
                    self.blocked.discard(e)
            if not n and e.conn_st == ENDING:
                self._detach(e)                   # everything delivered: now the end
                self._finish(e, e.end_errno)
                return
            if not n and (e.rx_st == PEER_FIN or conn.eof):     # (rx_st is not RX_EOF)
                e.fire("rx_eof")
                rx.shutdown()
            if rx.wake_needed():
                if e.bell is None:
                    self._post(e.client, e.slot, _shm.EV_READABLE, 0, e.gen)
                else:
                    self._ring(e)
                    if e.bell_new:
                        # the first RX wake-up after the bell came: the thread it is
                        # for may have armed before it saw D_BELL, waiting on the event
                        # ring (client: wait_settling); it gets the event as well
                        e.bell_new = False
                        self._post(e.client, e.slot, _shm.EV_READABLE, 0, e.gen)
        except ShmCorrupt as ex:
            self._corrupt(e, ex)

    def _finish(self, e: _Entry, err: int) -> None:
        """The connection is gone: tell the client (EV_CLOSED), slot state CLOSED."""
        if e.done:
            return
        e.fire("finish")
        self.dirty.discard(e)
        self.blocked.discard(e)
        try:
            # state (and errno) before the EOF: a client that sees EOF then reads the
            # state knows a reset from a FIN
            e.ends.ctl.set_state(S_CLOSED, err)
            if e.rx_st != RX_EOF:
                e.fire("rx_eof")
                e.ends.rx.shutdown()
        except ShmCorrupt:
            pass
        if e.released:
            # the client released it already: nobody waits for this event (the library
            # forgot the slot at close), so it wakes nobody; the slot is reusable now
            self._post(e.client, e.slot, _shm.EV_CLOSED, err, e.gen, wake=False)
            self._free(e)
            return
        self._post(e.client, e.slot, _shm.EV_CLOSED, err, e.gen)
        if e.bell is not None:
            self._ring(e)

    def _corrupt(self, e: _Entry, ex: ShmCorrupt) -> None:
        log.warning("client %d: %s: connection reset", e.client.id, ex)
        self.counters["shm_corrupt"] += 1
        self.counters["shm_corrupt_" + str(ex.ring)] += 1
        now = self.w.clock()
        if e.conn is not None:
            conn = e.conn
            self._detach(e)
            conn.abort(now)
        if e.listener is not None:
            self._unlisten(e)
        self._finish(e, _errno.EPROTO)

    # -- the per-iteration step: clients -> engine -----------------------------------------
    def _bug(self, c: _Client, now: float) -> None:
        """An unexpected exception while serving ``c``: our bug. Log it, drop that client
        (its connections are reset), keep serving the others."""
        log.exception("worker q%d: internal error serving client %d", self.cfg.queue, c.id)
        self.counters["internal_errors"] += 1
        try:
            self.drop(c, "internal error (see the daemon's log)", now, cause="internal")
        except Exception:
            log.exception("worker q%d: dropping client %d", self.cfg.queue, c.id)

    def _reclaim(self, now: float) -> None:
        """Idle connections' RX ring pages back to the kernel: a ring written in the
        interval before last, not since, and read empty by the client."""
        self._reclaim_at = now + RECLAIM_INTERVAL
        freed = self._freed_hot
        fcold, self._freed_cold, self._freed_hot = self._freed_cold, freed, set()
        for key in fcold:
            c, slot = key
            if key in freed or c.dead or slot in c.entries:
                continue                        # freed again since, gone, or in use
            c.region.reclaim(slot, rx=True, tx=True)
            self.counters["slot_reclaimed"] += 1
        hot = self._rx_hot
        cold, self._rx_cold, self._rx_hot = self._rx_cold, hot, set()
        for e in cold:
            if e in hot:
                continue
            c = e.client
            if c.dead or e.done or c.entries.get(e.slot) is not e:
                continue
            try:
                if e.ends.rx.pending():
                    self._rx_cold.add(e)        # not read yet: look again next time
                    continue
                tx_idle = not e.ends.tx.readable()
            except ShmCorrupt as ex:
                self._corrupt(e, ex)
                continue
            c.region.reclaim(e.slot, rx=True)
            e.ends.rx.drop_data()               # idle: no data views either, until used
            if tx_idle:
                e.ends.tx.drop_data()
            self.counters["rx_reclaimed"] += 1

    def _step(self, now: float) -> int:
        work = 0
        if now >= self._reclaim_at:
            self._reclaim(now)
        for c in list(self.clients.values()):
            try:
                if c.pending:
                    self._flush_pending(c, now)
                try:
                    recs = c.commands.get_many(256)
                except ShmCorrupt as ex:
                    self.drop(c, str(ex), now, cause="ring_corrupt")
                    continue
                if recs:
                    work += len(recs)
                    self._commands(c, recs, now)
            except Exception:
                self._bug(c, now)
        if self.blocked:
            for e in list(self.blocked):
                try:
                    self._deliver(e)
                except Exception:
                    self._bug(e.client, now)
        if self.dirty:
            dirty, self.dirty = self.dirty, set()
            for e in dirty:
                try:
                    self._drain_tx(e, now)
                except Exception:
                    self._bug(e.client, now)
                work += 1
        for c in self.clients.values():        # (ringing a bell drops no client)
            if c.touched:
                c.touched = False
                try:
                    if c.events.wake_needed():
                        c.app_bell.ring()
                except OSError:
                    pass
        return work

    def _flush_pending(self, c: _Client, now: float) -> None:
        p = c.pending
        while p and c.events.put(*p[0]):
            p.popleft()
            c.touched = True
        if p:
            if c.full_since is None:
                c.full_since = now
            elif now - c.full_since > EVENT_BACKLOG_LIMIT:
                self.drop(c, f"event ring full for {EVENT_BACKLOG_LIMIT:g} s", now,
                          cause="event_backlog")
        else:
            c.full_since = None

    def _commands(self, c: _Client, recs, now: float) -> None:
        entries = c.entries
        for r in recs:
            e = entries.get(r.slot)
            if e is None or (e.gen & 0xFFFF) != r.gen:
                self.counters["stale_commands"] += 1
                continue
            op = r.kind
            if op == OP_KICK:
                if e.conn is not None:
                    e.tx_pending = True
                    self.dirty.add(e)
                    if e.rx_blocked:
                        self._deliver(e)
            elif op == OP_SHUTDOWN:
                if r.arg in (SHUT_WR, SHUT_RDWR):
                    e.fire("shut_wr")
                    e.tx_pending = True
                    self.dirty.add(e)
            elif op == OP_CLOSE:
                self._close_entry(e, now, announce=True)
            elif op == OP_SETOPT:
                self._setopt_cmd(e, r.arg)
            elif op == OP_ABORT:
                if e.conn is not None:
                    conn = e.conn
                    self._detach(e)
                    conn.abort(now)
                e.fire("release")
                if e.listener is not None:
                    self._unlisten(e)
                if e.done:
                    self._free(e)
                else:
                    self._finish(e, 0)

    def _setopt_cmd(self, e: _Entry, arg: int) -> None:
        """OP_SETOPT: a boolean option of a connection (hostile arg: anything else is
        counted and ignored)."""
        i, v = arg >> 32, arg & 0xFFFFFFFF
        if i >= len(_shm.SETOPT_NAMES) or v > 1 or e.listener is not None:
            self.counters["bad_commands"] += 1
            return
        self._set_opt(e, _shm.SETOPT_NAMES[i], bool(v))

    def _close_entry(self, e: _Entry, now: float, announce: bool) -> None:
        e.fire("release")
        if e.listener is not None:
            self._unlisten(e)
            e.fire("finish")
            if announce:
                self._post(e.client, e.slot, _shm.EV_CLOSED, 0, e.gen)
            self._free(e)
            return
        if e.ending:                    # ended, bytes still undelivered
            self._detach(e)
            self._finish(e, e.end_errno)
        if e.done:                      # already announced CLOSED (error or peer went)
            self._free(e)
            return
        e.tx_pending = True
        self._drain_tx(e, now)

    def _drain_tx(self, e: _Entry, now: float) -> None:
        """TX ring -> engine send buffer; then the FIN or close the client asked for."""
        conn = e.conn
        if conn is None or e.conn_st == CLOSED or e.conn_st == ENDING:
            return                       # (an ended connection sends nothing more)
        tx = e.ends.tx
        try:
            left = 0
            if e.tx_pending:
                e.tx_pending = False
                first, second = tx.peek_view()
                total = len(first) + len(second)
                if total:
                    try:
                        n = conn.send(first, now) if first else 0
                        if n == len(first) and second:
                            n += conn.send(second, now)
                    except (OSError, ConnectionError):
                        n = total                # connection dead: the bytes are lost
                    finally:
                        first.release()
                        second.release()
                    tx.release(n)
                    left = total - n
                    if tx.wake_needed():
                        self._post(e.client, e.slot, _shm.EV_WRITABLE, 0, e.gen)
                    if left:                     # engine buffer full: EV_WRITABLE resumes
                        return
                if tx.at_eof() and e.tx_st != TX_SHUT:
                    e.fire("shut_wr")
            if e.hold_st == RELEASED:
                if tx.readable():
                    e.tx_pending = True
                    self.dirty.add(e)
                    return
                self._detach(e)
                unread = e.ends.rx.pending()     # bytes in the RX ring the app never read
                if unread or conn.readable:
                    conn.abort(now)              # Linux: close with unread data -> RST
                    self.counters["close_unread_rst"] += 1
                else:
                    conn.close(now)
                self._finish(e, 0)
            elif e.tx_st == TX_SHUT and not tx.readable():
                conn.shutdown(now)
        except ShmCorrupt as ex:
            self._corrupt(e, ex)

    # -- sleeping --------------------------------------------------------------------------
    def _may_sleep(self, now: float) -> bool:
        if self.dirty:
            return False
        armed = self._armed
        for c in self.clients.values():
            if c.pending:
                return self._disarm_false()
            try:
                if not c.commands.arm(1):
                    return self._disarm_false()
            except ShmCorrupt:
                return self._disarm_false()
            armed.append(c.commands)
        for e in self.blocked:
            try:
                if not e.ends.rx.arm(1):
                    return self._disarm_false()
            except ShmCorrupt:
                return self._disarm_false()
            armed.append(e.ends.rx)
        return True

    def _disarm_false(self) -> bool:
        self._woke()
        return False

    def _woke(self) -> None:
        for end in self._armed:
            try:
                end.disarm()
            except Exception:
                pass
        self._armed.clear()

    # -- reporting, stopping ---------------------------------------------------------------
    def stats(self) -> dict:
        d = self.w.stats()
        d["queue"] = self.cfg.queue
        d["clients"] = len(self.clients)
        d["slots_in_use"] = sum(len(c.entries) for c in self.clients.values())
        d["service"] = dict(self.counters)
        return d

    def conns(self) -> dict:
        conns, listeners = [], []
        for c in self.clients.values():
            for e in c.entries.values():
                if e.listener is not None:
                    la, lp = e.listener.addr, e.listener.port
                    listeners.append({"queue": self.cfg.queue, "slot": e.slot,
                                      "local": _addr_str(la, lp),
                                      "owner_pid": c.cred.get("pid"),
                                      "owner_uid": c.cred.get("uid")})
        for conn in self.stack.connections():
            e = self.by_conn.get(conn)
            i = conn.info()
            d = {"queue": self.cfg.queue,
                 "local": _addr_str(*conn.local), "remote": _addr_str(*conn.remote),
                 "state": conn.state, "slot": e.slot if e else None,
                 "owner_pid": e.client.cred.get("pid") if e else None,
                 "owner_uid": e.client.cred.get("uid") if e else None}
            for k in ("cwnd", "ssthresh", "srtt", "rttvar", "rto", "bytes_in", "bytes_out",
                      "retransmits", "snd_wnd", "rcv_wnd", "in_flight", "mss", "unread",
                      "send_queue", "min_rtt", "delivery_rate", "limited_by"):
                d[k] = _jsonable(i.get(k))
            conns.append(d)
        return {"conns": conns, "listeners": listeners}

    def shutdown(self) -> None:
        """The daemon stops: every client is told (EV_SHUTDOWN), connections reset."""
        now = self.w.clock()
        for c in list(self.clients.values()):
            for e in list(c.entries.values()):
                if e.conn is not None:
                    conn = e.conn
                    self._detach(e)
                    conn.abort(now)
                if e.listener is not None:
                    self._unlisten(e)
                if not e.done:
                    e.fire("finish")
                    try:
                        e.ends.ctl.set_state(S_CLOSED, _errno.ECONNRESET)
                        e.ends.rx.shutdown()
                    except ShmCorrupt:
                        pass
                    if e.bell is not None:
                        self._ring(e)
            try:
                c.events.put(NO_SLOT, _shm.EV_SHUTDOWN, 0, 0)
                c.app_bell.ring()
            except (ShmCorrupt, OSError):
                pass
        self.stack.events()
        for c in list(self.clients.values()):
            self.drop(c, "daemon stopping", now, cause="stopping")


def _int(v, key: str, default: int, lo: int, hi: int) -> int:
    if v is None:
        v = default
    if not lo <= v <= hi:
        raise ControlError(_errno.EINVAL, f"{key} must be an integer in {lo}..{hi}")
    return v


def _tcp_any() -> bytes:
    return b"\0\0\0\0"


def _addr_str(a, p) -> str:
    return f"{_wire.ip_to_str(a)}:{p}"


def _jsonable(v):
    if isinstance(v, bytes):
        return _wire.ip_to_str(v) if len(v) == 4 else v.hex()
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, float) and v != v:
        return None
    return v


def _kernel_route(w, dst: bytes) -> bytes:
    """The source address for a connection to ``dst`` through the AF_XDP worker ``w``'s
    interface (the kernel's route, looked up in the worker's namespace)."""
    from . import neigh, netns
    with netns.inside(w._ns_fd):
        try:
            oif, _gw, src = neigh.route_get(dst)
        except neigh.NeighError as e:
            raise ControlError(_errno.ENETUNREACH, str(e)) from None
    if oif != w.ifindex:
        raise ControlError(_errno.EHOSTUNREACH,
                           f"the route to {_wire.ip_to_str(dst)} leaves through "
                           f"another interface, not {w.ifname} (fpd's)")
    return _wire.ip_to_bytes(src) if isinstance(src, str) else src


# --- the worker process --------------------------------------------------------------------
def xdp_host(cfg: WorkerConfig):
    """The daemon's host: the AF_XDP :class:`fpd.worker.Worker` of ``cfg.queue`` in the
    current network namespace. Returns ``(host, route, bind_mode)``."""
    from .stack import StackConfig
    from .worker import Worker
    sc = StackConfig(**cfg.stack) if cfg.stack else None
    w = Worker(cfg.ifname, cfg.queue, sc, cfg.isn_key or None, **(cfg.worker or {}))
    return w, (lambda dst: _kernel_route(w, dst)), w.xsk.bind_mode


def channel_handler(chan: socket.socket, cfg: WorkerConfig, w, svc: "Service", on_end):
    """The reader of the supervisor's channel for one worker (``w``'s ``add_reader``
    callback): up to 16 messages of :data:`fpd.proto.CHANNEL_OPS` per call - a control
    connection to adopt, a capture tap, stats, conns - answered with their ``seq``;
    ``stop``, a broken channel or the supervisor's EOF call ``on_end()``. Shared by
    :func:`worker_main` and ``fpd run``'s workers (:mod:`fpd.run`)."""

    def on_chan(now):
        for _ in range(16):
            try:
                d, fds = proto.recv(chan, maxfds=4)
            except BlockingIOError:
                return
            except (OSError, ValueError) as e:
                log.error("worker q%d: channel: %s", cfg.queue, e)
                on_end()
                return
            if d is None:                      # the supervisor is gone
                on_end()
                return
            try:
                msg = proto.parse(d, proto.CHANNEL_OPS)
                if len(fds) != msg.fds:
                    raise proto.ProtocolError(f"{msg.op} with {len(fds)} fds, expected "
                                              f"{msg.fds}")
                if isinstance(msg, proto.Client):
                    s = socket.socket(fileno=fds.pop())
                    svc.adopt(s, msg.attach, msg.cred or {})
                    continue                   # no reply: the client got its answer
                elif isinstance(msg, proto.CaptureTap):   # fpd capture (fpd.capture)
                    _capture.attach(w, socket.socket(fileno=fds.pop()), msg.body())
                    continue                   # no reply: the supervisor does not wait
                elif isinstance(msg, proto.Stats):
                    reply = proto.ok(stats=_jsonable(svc.stats()))
                elif isinstance(msg, proto.Conns):
                    reply = proto.ok(**svc.conns())
                else:                          # proto.Stop
                    on_end()
                    return
            except proto.ProtocolError as e:
                reply = proto.fail(e.errno, str(e))
            except Exception as e:
                reply = proto.fail(_errno.EIO, str(e))
            finally:
                for fd in fds:
                    os.close(fd)
            if "seq" in d:
                reply["seq"] = d["seq"]
            proto.send_fitting(chan, reply)

    return on_chan


def worker_main(chan: socket.socket, cfg: WorkerConfig, make_host=xdp_host) -> int:
    """Run one worker until the supervisor says stop or goes away. Returns an exit code.

    Makes its host with ``make_host(cfg)`` -> ``(host, route, bind_mode)`` (default
    :func:`xdp_host`; a host is an :class:`fpd.host.Host` that also has ``run()``,
    ``stop()``, ``close()`` and ``fileno()``), then sends :class:`fpd.proto.Ready` with
    ``host.fileno()`` (the XSK fd) attached over ``chan`` (the supervisor puts it into
    ``fpd_xsks[q]``). If set-up fails it sends
    :class:`fpd.proto.Error` and returns 1. Then it answers the channel requests
    (:data:`fpd.proto.CHANNEL_OPS`) in order: ``client`` (a control connection to adopt:
    the client gets the answer), ``stats``, ``conns``, and ``stop`` (clients told with
    EV_SHUTDOWN, connections reset, :class:`fpd.proto.Stopped` sent, return 0).
    """
    try:
        w, route, bind_mode = make_host(cfg)
    except Exception as e:
        try:
            proto.send(chan, proto.Error(queue=cfg.queue, error=f"worker q{cfg.queue}: {e}"))
        except OSError:
            pass
        return 1
    svc = Service(w, cfg, route=route)
    if cfg.nqueues > 1 and cfg.fwd:
        rx = socket.socket(fileno=cfg.fwd[cfg.queue][0])
        tx = {k: socket.socket(fileno=t) for k, (_r, t) in enumerate(cfg.fwd)}
        w.enable_forwarding(cfg.nqueues, rx, tx)
    state = {"stop": False}

    def end():
        state["stop"] = True
        w.stop()

    on_chan = channel_handler(chan, cfg, w, svc, end)

    code = 0
    try:
        proto.send(chan, proto.Ready(queue=cfg.queue, mss=w.mss, bind_mode=bind_mode,
                                     pid=os.getpid()), [w.fileno()])
        chan.setblocking(False)
        w.add_reader(chan.fileno(), on_chan)
        prof = None
        out = os.environ.get("FPD_PROFILE")      # developers: cProfile a worker's loop
        if out:
            import cProfile
            # the thread's CPU clock: on a loaded machine wall time counts preemption
            prof = cProfile.Profile(time.thread_time)
            prof.enable()
        try:
            while not state["stop"]:
                w.run()
        finally:
            if prof is not None:
                prof.disable()
                prof.dump_stats(f"{out}.q{cfg.queue}")
    except Exception:
        log.exception("worker q%d crashed", cfg.queue)
        code = 1
    finally:
        try:
            svc.shutdown()
        except Exception:
            log.exception("worker q%d: shutdown", cfg.queue)
        w.close()
        try:
            chan.setblocking(True)
            proto.send(chan, proto.Stopped(queue=cfg.queue))
        except OSError:
            pass
    return code


def _lock_bufs(over):
    """SO_RCVBUF / SO_SNDBUF fix the buffer, as on Linux (SOCK_RCVBUF_LOCK): the engine's
    autotuning (fpd.tcp) leaves a buffer the application sized alone."""
    if "rcvbuf" in over:
        over["rcvbuf_max"] = 0
    if "sndbuf" in over:
        over["sndbuf_max"] = 0
