"""The service a worker process runs for its clients (see docs/DAEMON.md).

    chan = the worker's end of the supervisor's SOCK_SEQPACKET socketpair
    sys.exit(worker_main(chan, WorkerConfig(ifname="eth0", queue=0, nqueues=1, ...)))

A worker owns one :class:`fpd.worker.Worker` (XSK + UMEM + Stack of one queue) and serves
the clients the supervisor hands it: each client gets a shared-memory region
(:mod:`fpd.shm`) with one slot per connection, and speaks JSON over its own control
connection. Everything a client writes into its region is hostile input.
"""

from __future__ import annotations

import dataclasses
import json
import socket

__all__ = ["WorkerConfig", "worker_main", "send_msg", "recv_msg", "MAX_MSG"]

MAX_MSG = 65536


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


def send_msg(sock: socket.socket, obj: dict, fds=()) -> None:
    """One JSON object as one SEQPACKET message, ``fds`` attached (SCM_RIGHTS)."""
    from .shm import send_fds
    data = json.dumps(obj, separators=(",", ":")).encode()
    if len(data) > MAX_MSG:
        raise ValueError(f"control message of {len(data)} bytes exceeds {MAX_MSG}")
    if fds:
        send_fds(sock, data, fds)
    else:
        sock.sendall(data)


def recv_msg(sock: socket.socket, maxfds: int = 0):
    """``(obj, fds)``; ``(None, [])`` at EOF. Raises ValueError on a message that is not
    a JSON object (hostile or broken peer)."""
    from .shm import recv_fds
    if maxfds:
        data, fds = recv_fds(sock, maxfds, MAX_MSG)
    else:
        data, fds = sock.recv(MAX_MSG), []
    if not data:
        for fd in fds:
            import os
            os.close(fd)
        return None, []
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"control message is not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ValueError("control message is not a JSON object")
    return obj, fds


def worker_main(chan: socket.socket, cfg: WorkerConfig) -> int:
    """Run one worker until the supervisor says stop or goes away. Returns an exit code.

    Creates the :class:`fpd.worker.Worker` for ``cfg.queue`` in the current network
    namespace, then sends ``{"op":"ready","queue":q,"mss":..,"bind_mode":..}`` with the XSK
    fd attached over ``chan`` (the supervisor puts it into ``fpd_xsks[q]``). If set-up
    fails it sends ``{"op":"error","error":"text"}`` and returns 1. Channel requests, in
    order, each answered on ``chan``:

    - ``{"op":"client","attach":{...},"cred":{"pid":..,"uid":..,"gid":..}}`` with one fd:
      a client control connection to adopt (the worker answers the attach on it);
    - ``{"op":"stats"}`` -> ``{"ok":true,"stats":{...}}``;
    - ``{"op":"conns"}`` -> ``{"ok":true,"conns":[...],"listeners":[...]}``;
    - ``{"op":"stop"}`` -> clients told (EV_SHUTDOWN), connections reset, then
      ``{"ok":true}`` and return 0.
    """
    raise NotImplementedError("written by the lead (in progress)")
