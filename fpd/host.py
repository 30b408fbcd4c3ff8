"""What the worker service (:class:`fpd.control.Service`) needs from the loop it rides on.

Two implementations: :class:`fpd.worker.Worker` (one NIC queue over AF_XDP, the
daemon's) and :class:`fpd.loopback.LoopbackWorker` (the service's stack and a peer
stack joined by an in-memory link: the real client library, service and engine end to
end, no root, no NIC). Anything else that provides these names can carry the service
(an asyncio loop, a faster data path). The service sets the four hooks when it is
made; the host calls them from its loop's thread, the only thread that touches the
stack:

    stack                      the fpd.stack.Stack whose connections the service owns
    mss                        the MSS the stack uses (told to clients in attach)
    clock() -> float           the loop's monotonic clock (the ``now`` of the hooks)
    add_reader(fd, fn)         call fn(now) in the loop when fd is readable
    remove_reader(fd)
    stats() -> dict            the host's counters (the service adds its own)
    app = fn(host, events, now)    engine events, after input and timers
    iter_hook = fn(now) -> int     once per iteration, after the events (work done)
    sleep_hook = fn(now) -> bool   before sleeping: True = may sleep (rings armed)
    wake_hook = fn()               after a sleep (disarm)

The route towards a destination (the source address of a connect) is not the host's:
the service is given a ``route(dst) -> src`` function of its own.
"""

from __future__ import annotations

from typing import Callable, Protocol

__all__ = ["Host"]


class Host(Protocol):
    stack: object
    mss: int
    app: Callable | None
    iter_hook: Callable | None
    sleep_hook: Callable | None
    wake_hook: Callable | None

    def clock(self) -> float: ...

    def add_reader(self, fd: int, fn: Callable) -> None: ...

    def remove_reader(self, fd: int) -> None: ...

    def stats(self) -> dict: ...
