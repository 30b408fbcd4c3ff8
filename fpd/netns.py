"""Network namespaces, entered per thread.

Linux keeps the network namespace per thread, so ``setns()`` moves only the calling
thread. Sockets, AF_XDP sockets, TUN devices, netlink handles and XDP attachments made
while inside stay in that namespace afterwards, whichever thread uses them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os

from fpd import libc as _libc

SELF = "/proc/thread-self/ns/net"
CLONE_NEWNET = 0x40000000


def open_current() -> int:
    """A descriptor of the calling thread's network namespace (close it when done)."""
    return os.open(SELF, os.O_RDONLY | os.O_CLOEXEC)


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace behind ``fd``."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


@contextlib.contextmanager
def inside(ns_fd: int):
    """The body runs in the namespace behind ``ns_fd`` (calling thread only); the thread
    always moves back. Nothing happens if it is already there."""
    if os.fstat(ns_fd).st_ino == os.stat(SELF).st_ino:
        yield
        return
    own = open_current()
    try:
        setns(ns_fd)
        try:
            yield
        finally:
            setns(own)
    finally:
        os.close(own)


@contextlib.contextmanager
def inside_named(name: str):
    """As ``inside``, for a namespace made by ``ip netns add`` (/var/run/netns/NAME)."""
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with inside(fd):
            yield
    finally:
        os.close(fd)
