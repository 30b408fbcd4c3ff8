"""Python memory per idle connection, both ends of fpd, by allocation site (no root).

    .venv/bin/python bench/idle_memory.py [N]

A loopback daemon (fpd.loopback: the real client library, service and engine in one
process) and N connection pairs made the way the bench's idle workload makes them: the
app listens, a client connects to it, one byte each way (b"I", b"i"), then all stay
idle. tracemalloc compares the heap before and 2.5 s after (the service's reclaim
sweeps have run); the figure is per *pair* (each pair is two fpd connections, a
connector and an acceptor, both in this process), by source line, largest first.
Allocations that are not Python objects (the shared-memory region's pages) are not in
it: the bench's PSS figures have those."""

from __future__ import annotations

import gc
import os
import sys
import tempfile
import tracemalloc


def main(n: int = 200, top: int = 40) -> int:
    tracemalloc.start(1)
    import fpd.client as fc
    from fpd.loopback import ADDR, LoopbackDaemon
    d = tempfile.mkdtemp(prefix="fpd-idlemem-")
    with LoopbackDaemon(d, workers=1) as dm:
        fc.set_default_socket(dm.path, slots=2 * n + 256)
        lst = fc.socket(fc.AF_INET, fc.SOCK_STREAM)
        lst.bind((ADDR, 8080))
        lst.listen(1024)

        def pair():
            c = fc.create_connection((ADDR, 8080))
            a, _ = lst.accept()
            a.setsockopt(fc.IPPROTO_TCP, fc.TCP_NODELAY, 1)
            c.sendall(b"I")
            assert a.recv(1) == b"I"
            a.sendall(b"i")
            assert c.recv(1) == b"i"
            return c, a

        def idle(seconds):
            # as the bench app's main thread does: blocked in accept(), so the client
            # pumps its event rings (and sweeps idle TX rings) meanwhile
            lst.settimeout(seconds)
            try:
                lst.accept()
            except TimeoutError:
                pass
            lst.settimeout(None)
            gc.collect()

        warm = [pair() for _ in range(20)]
        idle(2.5)
        s0 = tracemalloc.take_snapshot()
        held = [pair() for _ in range(n)]
        idle(2.5)
        s1 = tracemalloc.take_snapshot()
        stats = s1.compare_to(s0, "lineno")
        total = sum(s.size_diff for s in stats)
        print(f"{n} idle pairs: {total / n:,.0f} B per pair of Python objects "
              f"(both ends), {total / n / 2:,.0f} per connection")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        per_file: dict = {}
        for s in stats:
            fr = s.traceback[0]
            f = os.path.relpath(fr.filename, root) if fr.filename.startswith(root) else fr.filename
            per_file[f] = per_file.get(f, 0) + s.size_diff
        print("by file: " + ", ".join(f"{f} {b / n:,.0f}" for f, b in
                                      sorted(per_file.items(), key=lambda x: -x[1])[:10]))
        for s in stats[:top]:
            fr = s.traceback[0]
            f = os.path.relpath(fr.filename, root) if fr.filename.startswith(root) else fr.filename
            print(f"{s.size_diff / n:8,.0f} B {s.count_diff / n:6.1f} blocks  {f}:{fr.lineno}")
        for c, a in held + warm:
            c.close()
            a.close()
        lst.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*(int(x) for x in sys.argv[1:2])))
