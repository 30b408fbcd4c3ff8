#!/usr/bin/env python3
"""Wake-ups per connect-request-close through the loopback daemon (no root, no NIC).

The server is fpd.bench_app's App on fpd.client (a thread in accept() leads the
library's event pump, a thread per connection); the client connects to it through fpd
too, so both ends are in this process. Counted, not timed: the daemon's rings of the
client's app bell and the library's rings of its own pump bell, per connection (the
rate and CPU are printed too, but move with the machine's load).

    .venv/bin/python bench/crr_wakeups.py [N]          # N connections (<= 250)
"""
import os
import sys
import tempfile
import threading
import time

from fpd import bench_app, client, shm
from fpd.loopback import ADDR, LoopbackDaemon

PORT = 8085                        # one of fpd.loopback.PORTS


def main(n: int) -> None:
    d = tempfile.mkdtemp(prefix="crrwake")
    f = LoopbackDaemon(d, workers=1)
    client.set_default_socket(f.path, slots=256, rx_size=65536, tx_size=65536)
    app = bench_app.App(client, "0.0.0.0", PORT)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    svc = f.services[0]

    def rings():
        return sum(c.app_bell.rings for c in svc.clients.values())
    lib = None
    r0 = rings()
    cpu0, t0 = time.process_time(), time.perf_counter()
    for _ in range(n):               # (each leaves a TIME_WAIT on one of 256 ports)
        s = client.socket()
        s.setsockopt(client.IPPROTO_TCP, client.TCP_NODELAY, 1)
        s.connect((ADDR, PORT))
        s.sendall(b"Ex")
        assert s.recv(1) == b"x"
        s.close()
        if lib is None:
            lib = client._client
            wb0 = lib.wake_bell.rings
    dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    print(f"{n} connections: {n / dt:.0f} conn/s, {cpu / n * 1e6:.0f} us CPU each (both "
          f"ends and the daemon); per connection: daemon app-bell rings "
          f"{(rings() - r0) / n:.2f}, library pump-bell rings "
          f"{(lib.wake_bell.rings - wb0) / n:.2f} (shm version {shm.VERSION})", flush=True)
    f.kill()
    os._exit(0)                      # (the app's threads block in accept for ever)


if __name__ == "__main__":
    main(min(250, int(sys.argv[1]) if len(sys.argv) > 1 else 200))
