"""systemd's readiness protocol (sd_notify(3)), without libsystemd: one datagram of
``KEY=VALUE`` lines to the AF_UNIX socket named by ``NOTIFY_SOCKET`` (a path, or
``@name`` for the abstract namespace). Nothing happens when the variable is unset, so the
daemon calls it unconditionally: ``READY=1`` once it serves, ``STOPPING=1`` when it
starts to stop, ``STATUS=...`` for ``systemctl status``."""

from __future__ import annotations

import os
import socket


def notify(state: str, env=None) -> bool:
    """Send ``state``; True if a NOTIFY_SOCKET was there and took it."""
    path = (os.environ if env is None else env).get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]
    elif not path.startswith("/"):
        return False                       # vsock and others: not supported
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(path)
            s.sendall(state.encode())
        return True
    except OSError:
        return False
