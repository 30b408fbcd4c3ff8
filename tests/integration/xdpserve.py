"""``serve()``: every queue of one interface served by AF_XDP workers, in threads (a
test helper: the daemon forks a process per queue instead, see fpd/daemon.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading

from fpd import wire
from fpd.stack import ANY, StackConfig
from fpd.worker import Worker
from fpd.xsk import queues_of


@dataclasses.dataclass
class Served:
    """What :func:`serve` yields."""
    steering: object
    workers: list
    threads: list


@contextlib.contextmanager
def serve(ifname: str, ports, *, addr=None, mode: str = "auto", app=None,
          stack_config: StackConfig | None = None, isn_key: bytes | None = None,
          listen: bool = True, threads: bool = False, queues: int | None = None,
          max_seconds: float | None = None, **worker_kw):
    """Attach the steering program to ``ifname`` (calling thread's namespace), make one
    :class:`Worker` per active queue, register their sockets, listen on and steer
    ``ports`` (at ``addr``, None = any local address); tear everything down on exit.

    ``threads=True`` also runs each worker's loop in a thread of its own (stopped and
    joined on exit; a worker that dies re-raises its error at exit). Without threads the
    caller drives ``served.workers[i].run()`` / ``poll_once()`` itself."""
    from fpd.bpf import Steering

    st = Steering(ifname, mode=mode)
    workers: list[Worker] = []
    ths: list[threading.Thread] = []
    errors: list[BaseException] = []
    try:
        nq = queues_of(ifname) if queues is None else queues
        key = isn_key if isn_key is not None else os.urandom(16)
        la = ANY if addr is None else wire.ip_to_bytes(addr) if isinstance(addr, str) \
            else bytes(addr)
        for q in range(nq):
            w = Worker(ifname, q, stack_config, key, app=app, **worker_kw)
            workers.append(w)
            if listen:
                for p in ports:
                    w.stack.listen(la, p)
            st.set_xsk(q, w.fileno())
        for p in ports:
            st.add_port(p, addr)
        if threads:
            for w in workers:
                def body(w=w):
                    try:
                        w.run(max_seconds=max_seconds)
                    except BaseException as e:      # surfaced at exit
                        errors.append(e)
                t = threading.Thread(target=body, name=f"fpd-worker-{ifname}-q{w.queue}",
                                     daemon=True)
                t.start()
                ths.append(t)
        yield Served(st, workers, ths)
    finally:
        for w in workers:
            w.stop()
        for t in ths:
            t.join(10)
        try:
            st.close()                         # detach first: nothing new reaches the XSKs
        finally:
            for w in workers:
                w.close()
    if errors:
        raise errors[0]
