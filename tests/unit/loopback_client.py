"""A loopback daemon with fpd.client's default socket pointed at it, for unit tests:
the set-up and the teardown (the client's pump thread and descriptors, the daemon, its
directory) in one place."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time

from fpd import client
from fpd.loopback import LoopbackDaemon


def finish(c) -> None:
    """Wait for a (dead) client's pump thread to end, then close its descriptors."""
    if c is None:
        return
    t = c.pump_thread
    if t is not None:
        t.join(5)
    c._close_workers()


@contextlib.contextmanager
def loopback_client(prefix: str, slots: int, **daemon_kw):
    """Yield a LoopbackDaemon that fpd.client's default socket uses; on the way out kill
    it, let the client see it dead, end its pump and check the daemon saw no error."""
    d = tempfile.mkdtemp(prefix=prefix)
    f = LoopbackDaemon(d, **daemon_kw)
    client.set_default_socket(f.path, slots=slots, rx_size=65536, tx_size=65536)
    try:
        yield f
    finally:
        c = client._client
        f.kill()
        client.set_default_socket(None)
        if c is not None:
            deadline = time.monotonic() + 5
            while c.dead is None and time.monotonic() < deadline:
                c.set_dead("test over")
            finish(c)
        shutil.rmtree(d, ignore_errors=True)
        assert not f.errors, f.errors
