"""The daemon <-> client control protocol, declared once (docs/DAEMON.md is its prose).

    from fpd import proto
    reply, fds = proto.request(sock, proto.Attach(queue=0, pid=os.getpid()), maxfds=3)

Framing: one JSON object (UTF-8, at most :data:`MAX_MSG` bytes) per ``SOCK_SEQPACKET``
message, file descriptors attached with ``SCM_RIGHTS`` where a message says so. Every
request names its ``op``; a reply is ``{"ok": true, ...}`` or ``{"ok": false, "errno": N,
"error": "text"}`` (N a Linux errno: the requester raises the matching ``OSError``).
Three envelope fields ride on any request: ``noreply`` (no answer is sent), ``id``
(echoed in the reply) and ``seq`` (the supervisor's channel requests; echoed).

Each op is one class below: its fields (types checked by :func:`parse`, defaults filled
in), who sends it to whom, and what the reply carries. Three tables say which ops each
listener accepts: :data:`SUPERVISOR_OPS` (the daemon's unix socket), :data:`WORKER_OPS`
(a client's control connection once a worker adopted it) and :data:`CHANNEL_OPS` (the
supervisor -> worker channel); :data:`WORKER_NOTES` are what a worker sends on its own.

This module imports nothing of the daemon or the engine: the client library, the CLI and
the bench load it without loading the TCP engine.
"""

from __future__ import annotations

import dataclasses
import errno as _errno
import json
import os
import socket as _socket
from typing import ClassVar

from .shm import recv_fds, send_fds

__all__ = ["VERSION", "DEFAULT_SOCKET", "MAX_MSG", "SHUT_RD", "SHUT_WR", "SHUT_RDWR",
           "ProtocolError", "Closed", "Message", "socket_path", "encode", "decode",
           "parse", "send", "recv", "request", "ok", "fail", "reply_error", "refused",
           "send_fitting",
           "send_fds", "recv_fds", "SUPERVISOR_OPS", "WORKER_OPS", "CHANNEL_OPS",
           "WORKER_NOTES"]

VERSION = 1                         # hello's "version"; a daemon speaks exactly one
DEFAULT_SOCKET = "/run/fpd/fpd.sock"
MAX_MSG = 65536
ENVELOPE = ("noreply", "id", "seq")
# the argument of the OP_SHUTDOWN command (shm's command ring): the socket module's values
SHUT_RD, SHUT_WR, SHUT_RDWR = 0, 1, 2


def socket_path(path: str | None = None) -> str:
    """``path``, else ``$FPD_SOCKET``, else :data:`DEFAULT_SOCKET`."""
    return path or os.environ.get("FPD_SOCKET") or DEFAULT_SOCKET


class ProtocolError(ValueError):
    """A message that breaks the protocol: not JSON, not an object, an unknown op, a
    missing or mistyped field. ``errno`` is what the answer to it carries."""

    def __init__(self, text: str, err: int = _errno.EINVAL):
        super().__init__(text)
        self.errno = err


class Closed(EOFError):
    """The other side closed the connection before answering."""


# --- declared messages ---------------------------------------------------------------------
_CHECKS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "dict": lambda v: isinstance(v, dict),
    "list": lambda v: isinstance(v, list),
    "object": lambda v: True,
}


@dataclasses.dataclass
class Message:
    """Base of the declared messages: ``op`` names it on the wire; the dataclass fields
    are its body. Fields typed ``X | None`` may be absent (None is never sent)."""
    op: ClassVar[str] = ""
    fds: ClassVar[int] = 0          # descriptors attached (SCM_RIGHTS)
    _spec: ClassVar[tuple] = ()

    def body(self) -> dict:
        """The fields that are set (not None)."""
        d = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is not None:
                d[f.name] = v
        return d

    def wire(self) -> dict:
        """The message as sent: ``op`` and :meth:`body`."""
        return {"op": self.op, **self.body()} if self.op else self.body()

    @classmethod
    def from_wire(cls, d: dict):
        kw = {}
        for name, kind, optional, required in cls._spec:
            if name not in d or d[name] is None:
                if required:
                    raise ProtocolError(f"bad request: {cls.op} needs {name!r}")
                continue
            v = d[name]
            if not _CHECKS[kind](v):
                raise ProtocolError(f"bad request: {cls.op} {name} must be {kind}, "
                                    f"not {v!r}")
            kw[name] = v
        return cls(**kw)


def _declare(cls):
    cls = dataclasses.dataclass(cls)
    spec = []
    for f in dataclasses.fields(cls):
        t = str(f.type).replace(" ", "")
        optional = t.endswith("|None")
        kind = t[:-5] if optional else t
        if kind not in _CHECKS:
            raise TypeError(f"{cls.__name__}.{f.name}: type {f.type!r} not declarable")
        required = (f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING)
        spec.append((f.name, kind, optional, required))
    cls._spec = tuple(spec)
    return cls


# client -> supervisor: the first (and only) request on a new connection, except attach
@_declare
class Hello(Message):
    """Reply :class:`HelloReply`; EPROTONOSUPPORT for another version."""
    op = "hello"
    version: object = VERSION


@_declare
class HelloReply(Message):
    version: int
    workers: int
    pid: int | None = None
    ifname: str | None = None
    addr: str | None = None          # None: fpd serves any local address
    ports: list | None = None
    local_ports: list | None = None


@_declare
class Attach(Message):
    """The supervisor hands the connection to worker ``queue``, which answers it
    (:class:`AttachReply` + 3 fds: region memfd, app bell, daemon bell) and serves
    :data:`WORKER_OPS` on it from then on. Sizes default to 1024 slots, 256 KiB rings."""
    op = "attach"
    queue: int
    slots: int | None = None
    rx_size: int | None = None
    tx_size: int | None = None
    pid: int | None = None


@_declare
class AttachReply(Message):
    fds = 3
    queue: int
    mss: int | None = None
    generation: int | None = None
    slots: int | None = None
    rx_size: int | None = None
    tx_size: int | None = None
    workers: int | None = None
    local_addr: str | None = None


@_declare
class Status(Message):
    """Reply: pid, ifname, mode, addr, ports, local_ports, queues, workers, clients..."""
    op = "status"


@_declare
class Stats(Message):
    """Supervisor reply: ``xdp``, ``drops``, ``workers``; a worker's: ``stats``."""
    op = "stats"


@_declare
class Conns(Message):
    """Reply: ``conns`` and ``listeners`` lists (cut to fit: ``truncated``: N)."""
    op = "conns"


@_declare
class Capture(Message):
    """``fpd capture``: record the steered frames matching the filter (each end of the
    flow: ``port``, ``host``), ``snaplen`` bytes of each. Reply :class:`CaptureReply`."""
    op = "capture"
    port: int | None = None
    host: str | None = None
    snaplen: int | None = None


@_declare
class CaptureReply(Message):
    """With the reading end of the capture's SOCK_SEQPACKET pair (1 fd): the queues whose
    workers capture; messages on it are :mod:`fpd.capture`'s."""
    fds = 1
    queues: list
    ifname: str | None = None
    pid: int | None = None
    port: int | None = None
    host: str | None = None
    snaplen: int | None = None


@_declare
class Stop(Message):
    """Supervisor: replies ``{ok, pid}``, closes the connection once it cleaned up.
    Channel: the worker shuts its clients down and exits (then :class:`Stopped`)."""
    op = "stop"


# client -> worker (on an attached control connection)
@_declare
class Listen(Message):
    """Reply :class:`SlotReply`. EADDRINUSE, EACCES (port not steered), EADDRNOTAVAIL."""
    op = "listen"
    port: int
    addr: str | None = None          # None / "0.0.0.0": any local address
    backlog: int | None = None       # default 128
    opts: dict | None = None         # socket options the accepted connections inherit


@_declare
class Unlisten(Message):
    op = "unlisten"
    slot: int


@_declare
class Connect(Message):
    """Reply :class:`SlotReply` (with ``local``) at once; the outcome is EV_CONNECTED or
    EV_CLOSED with an errno on the slot."""
    op = "connect"
    addr: str
    port: int
    bind_port: int | None = None     # None / 0: the worker picks a local port
    opts: dict | None = None


@_declare
class SlotReply(Message):
    slot: int
    gen: int
    local: list | None = None        # connect: [addr, port]


@_declare
class SetOpt(Message):
    op = "setopt"
    slot: int
    name: str                        # one of SOCKOPTS
    value: object


@_declare
class Info(Message):
    """Reply ``{info: conn.info()}`` (None for a slot without a connection)."""
    op = "info"
    slot: int


@_declare
class Bell(Message):
    """With one eventfd attached: the slot's own doorbell (docs/DAEMON.md); without:
    back to event-ring wake-ups."""
    op = "bell"
    fds = 1
    slot: int


# supervisor -> worker (the channel; every request but client carries seq)
@_declare
class Client(Message):
    """A client's control connection (1 fd) with its ``attach`` request and its
    credentials (pid, uid, gid): the worker answers the attach on that connection."""
    op = "client"
    fds = 1
    attach: dict
    cred: dict | None = None


@_declare
class CaptureTap(Message):
    """``fpd capture``, supervisor -> worker, with the writing end of the capture's
    SOCK_SEQPACKET pair (1 fd): tap the XSK into it (:mod:`fpd.capture`); no reply."""
    op = "capture_tap"
    fds = 1
    port: int | None = None
    host: str | None = None
    snaplen: int | None = None


# worker -> supervisor, unasked
@_declare
class Ready(Message):
    """The worker is set up; its XSK fd is attached (it goes into fpd_xsks[queue])."""
    op = "ready"
    fds = 1
    queue: int
    mss: int | None = None
    bind_mode: str | None = None
    pid: int | None = None


@_declare
class Error(Message):
    """The worker failed (set-up or later); it exits."""
    op = "error"
    error: str
    queue: int | None = None


@_declare
class Stopped(Message):
    """Last words of a worker that was told to stop."""
    op = "stopped"
    queue: int | None = None
    ok: bool = True


@_declare
class Resolve(Message):
    """A worker that runs without privileges (``fpd start --user``) asks the supervisor
    to start address resolution (RTM_NEWNEIGH with NTF_USE needs CAP_NET_ADMIN) for a
    next hop it has no neighbour entry for; it reads the answer from the kernel's table
    itself. No reply."""
    op = "resolve"
    ifindex: int
    ip: str


@_declare
class Go(Message):
    """``fpd run``: every XSK is in fpd_xsks and the supervisor serves; the worker may
    start the program (docs/LOOP.md)."""
    op = "go"


def _table(*classes) -> dict:
    return {c.op: c for c in classes}


SUPERVISOR_OPS = _table(Hello, Attach, Status, Stats, Conns, Capture, Stop)
WORKER_OPS = _table(Listen, Unlisten, Connect, SetOpt, Info, Bell)
CHANNEL_OPS = _table(Client, Stats, Conns, CaptureTap, Stop)
RUN_OPS = _table(Go)                # `fpd run` workers: the first message after Ready
WORKER_NOTES = _table(Ready, Error, Stopped, Resolve)
SOCKOPTS = ("nodelay", "keepalive", "rcvbuf", "sndbuf")
_OPT_SETS: dict = {}


def with_opt(opts: dict, name: str, value) -> dict:
    """``opts`` with ``name`` set to ``value``: one shared dict per distinct set of
    options (100,000 connections with TCP_NODELAY hold one dict, not 100,000 of
    ~0.2 KB). Such a dict is never changed in place: set options through here again."""
    d = dict(opts)
    d[name] = value
    try:
        # (the type too: 1 and True are equal keys, and each side keeps its own type)
        key = tuple(sorted((k, type(v).__name__, v) for k, v in d.items()))
        got = _OPT_SETS.get(key)
    except TypeError:                  # an unhashable value: a dict of its own
        return d
    if got is None:
        if len(_OPT_SETS) >= 1024:
            _OPT_SETS.clear()
        got = _OPT_SETS[key] = d
    return got


def parse(d: dict, ops: dict) -> Message:
    """The declared message ``d`` (a decoded request) is, per the table ``ops``.
    Raises :class:`ProtocolError` (EOPNOTSUPP for an op the table lacks)."""
    op = d.get("op")
    cls = ops.get(op) if isinstance(op, str) else None
    if cls is None:
        raise ProtocolError(f"unknown op {op!r}", _errno.EOPNOTSUPP)
    return cls.from_wire(d)


# --- framing -------------------------------------------------------------------------------
def encode(msg) -> bytes:
    d = msg.wire() if isinstance(msg, Message) else msg
    data = json.dumps(d, separators=(",", ":")).encode()
    if len(data) > MAX_MSG:
        raise ValueError(f"control message of {len(data)} bytes exceeds {MAX_MSG}")
    return data


def decode(data: bytes) -> dict:
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(f"control message is not JSON: {e}") from None
    except RecursionError:          # deep nesting: json.loads recurses per level
        raise ProtocolError("control message is nested too deeply") from None
    if not isinstance(obj, dict):
        raise ProtocolError("control message is not a JSON object")
    return obj


def send(sock: _socket.socket, msg, fds=(), **envelope) -> None:
    """One message (a :class:`Message` or a reply dict) as one SEQPACKET message,
    ``fds`` attached; ``envelope`` adds ``noreply``/``id``/``seq``."""
    if envelope:
        msg = dict(msg.wire() if isinstance(msg, Message) else msg, **envelope)
    data = encode(msg)
    if fds:
        send_fds(sock, data, fds)
    else:
        sock.sendall(data)


def recv(sock: _socket.socket, maxfds: int = 0):
    """``(dict, fds)``; ``(None, [])`` at EOF. Raises :class:`ProtocolError` (a
    ValueError) on a message that is not a JSON object (its fds are closed)."""
    if maxfds:
        data, fds = recv_fds(sock, maxfds, MAX_MSG)
    else:
        data, fds = sock.recv(MAX_MSG), []
    if not data:
        _close_all(fds)
        return None, []
    try:
        return decode(data), fds
    except ProtocolError:
        _close_all(fds)
        raise


def _close_all(fds) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def ok(**fields) -> dict:
    """A positive reply."""
    return {"ok": True, **fields}


def fail(err: int, text: str) -> dict:
    """A negative reply: the requester raises ``OSError(err, ...)``."""
    return {"ok": False, "errno": err, "error": text}


def reply_error(reply: dict, prefix: str = "fpd") -> OSError:
    """The OSError a negative reply stands for (EPROTO if its errno is nonsense); the
    reply rides along as its ``fpd_reply`` (see :func:`refused`)."""
    code = reply.get("errno")
    if isinstance(code, bool) or not isinstance(code, int) or not 0 < code < 4096:
        code = _errno.EPROTO
    text = reply.get("error")
    if not isinstance(text, str) or not text:
        try:
            text = os.strerror(code)
        except ValueError:
            text = f"error {code}"
    e = OSError(code, f"{prefix}: {text}")
    e.fpd_reply = reply
    return e


def refused(e: BaseException) -> bool:
    """Whether ``e`` is a negative reply (not an error of the connection itself)."""
    return getattr(e, "fpd_reply", None) is not None


def request(sock: _socket.socket, msg, *, fds=(), maxfds: int = 0, reply=None,
            prefix: str = "fpd"):
    """The one way to ask: send ``msg``, wait for its answer. Returns ``(reply dict,
    fds)`` for a positive reply. Raises the reply's ``OSError`` for a negative one (its
    message starts with ``prefix``), :class:`Closed` if the connection ended first,
    :class:`ProtocolError` if the answer is not a message or (``reply`` = a reply class)
    lacks its declared fields, and OSError/TimeoutError from the socket itself."""
    send(sock, msg, fds)
    d, got = recv(sock, maxfds)
    if d is None:
        raise Closed("the connection closed before an answer came")
    if not d.get("ok"):
        _close_all(got)
        raise reply_error(d, prefix)
    if reply is not None:
        try:
            reply.from_wire(d)
        except ProtocolError:
            _close_all(got)
            raise
        if reply.fds and len(got) != reply.fds:
            _close_all(got)
            raise ProtocolError(f"{getattr(msg, 'op', '?')} reply passed {len(got)} fds, "
                                f"expected {reply.fds}")
    return d, got


def send_fitting(sock: _socket.socket, reply: dict) -> None:
    """Send a reply; a list too long for one message is cut (``truncated`` says how
    many entries were left out) instead of failing."""
    try:
        send(sock, reply)
        return
    except ValueError:
        pass
    cut = 0
    for key in ("conns", "listeners"):
        lst = reply.get(key)
        while isinstance(lst, list) and lst:
            drop = max(1, len(lst) // 2)
            cut += drop
            del lst[len(lst) - drop:]
            reply["truncated"] = cut
            try:
                send(sock, reply)
                return
            except ValueError:
                continue
    err = fail(_errno.EMSGSIZE, "reply too large for one control message")
    if "seq" in reply:
        err["seq"] = reply["seq"]
    send(sock, err)
