#!/usr/bin/env python3
"""fpd's worker (XDP + AF_XDP + the Python TCP engine) next to the kernel's TCP (not a test).

In a test bed of its own, the same three services run twice in the server namespace:

    fpd      a Worker on queue 0 of fpd0 (ports 7001-7003 steered), its loop in a thread
    kernel   a selectors loop over ordinary sockets (ports 8001-8003, not steered)

Both drive the *same* service objects (``Sink``, ``Source``, ``Echo`` below): only the
few lines that move bytes between a service and its connection differ. The client is one
Python process in the peer namespace (the kernel's TCP), taking commands on stdin:

    up     kernel -> server bulk: sendall N bytes, shutdown, wait for the 8-byte count
    down   server -> kernel bulk: ask for N bytes, read to EOF
    rr     1-byte request / 1-byte response round trips for S seconds (TCP_NODELAY)

Rounds interleave the workloads and the two servers (the order flips every round); the
table shows medians and the ratio fpd / kernel. The XDP program stays attached for the
kernel's runs too (they are XDP_PASSed), so both see the same interface.

    .venv/bin/python bench/worker_bench.py [--rounds 5] [--mb 50] [--rr-seconds 2]
                                           [--mode native|generic] [--spin 0.0005]
                                           [--levers ref,parse,burst,tso,all] [--work up,down,rr]
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

BLOCK = bytes(range(256)) * 256          # 64 KiB streamed over and over
COUNT = struct.Struct("!Q")
FPD_PORTS = {"sink": 7001, "source": 7002, "echo": 7003}
KERNEL_PORTS = {"sink": 8001, "source": 8002, "echo": 8003}


# --- the services (shared by both servers) ------------------------------------------------
class Sink:
    """Counts what it receives; at the client's EOF answers with the 8-byte count."""

    def __init__(self):
        self.n = 0
        self.stream_left = 0

    def feed(self, data) -> bytes:
        self.n += len(data)
        return b""

    def eof(self) -> bytes:
        return COUNT.pack(self.n)


class Source:
    """The client asks for N bytes (8-byte request); streams them, then closes."""

    def __init__(self):
        self.req = b""
        self.stream_left = 0

    def feed(self, data) -> bytes:
        if len(self.req) < 8:
            self.req += bytes(data[:8 - len(self.req)])
            if len(self.req) == 8:
                self.stream_left = COUNT.unpack(self.req)[0]
        return b""

    def eof(self) -> bytes:
        return b""


class Echo:
    def __init__(self):
        self.stream_left = 0

    def feed(self, data) -> bytes:
        return bytes(data)

    def eof(self) -> bytes:
        return b""


SERVICES = {"sink": Sink, "source": Source, "echo": Echo}


def stream_chunk(svc, room: int):
    """The next piece of a service's stream (a view of BLOCK), at most ``room`` bytes."""
    n = min(svc.stream_left, room, len(BLOCK))
    return memoryview(BLOCK)[:n]


# --- fpd driver ---------------------------------------------------------------------------
class FpdDriver:
    """The Worker's app callback: services on the engine's connections."""

    def __init__(self):
        self.conns = {}     # conn -> [svc, outbuf, eof_seen]

    def __call__(self, w, evs, now):
        from fpd import tcp
        for ev in evs:
            kind = ev[0]
            if kind == tcp.EV_ACCEPTED:
                c = ev[2]
                name = {v: k for k, v in FPD_PORTS.items()}[c.local[1]]
                c.nodelay = True
                self.conns[c] = [SERVICES[name](), bytearray(), False]
            elif kind == tcp.EV_CLOSED:
                self.conns.pop(ev[1], None)
        for c, st in list(self.conns.items()):
            if c.state == tcp.CLOSED:
                continue
            svc, out, done = st
            if c.readable:
                out += svc.feed(c.recv())
            if c.eof and not done:
                out += svc.eof()
                st[2] = done = True
            if out:
                n = c.send(out, now)
                del out[:n]
            while not out and svc.stream_left:
                # a short send (not a writable check) makes the engine report
                # EV_WRITABLE once room is back
                chunk = stream_chunk(svc, 1 << 20)
                n = c.send(chunk, now)
                svc.stream_left -= n
                if n < len(chunk):
                    break
            if not out and not svc.stream_left and (done or isinstance(svc, Source)
                                                    and len(svc.req) == 8):
                c.close(now)
                self.conns.pop(c, None)


# --- kernel driver ------------------------------------------------------------------------
def kernel_server(lsocks: dict, stop: threading.Event):
    """One selectors loop: the same services over non-blocking kernel sockets."""
    sel = selectors.DefaultSelector()
    for name, ls in lsocks.items():
        ls.setblocking(False)
        sel.register(ls, selectors.EVENT_READ, ("listen", name))
    while not stop.is_set():
        for key, _ in sel.select(0.05):
            kind, name = key.data[0], key.data[1]
            if kind == "listen":
                try:
                    c, _ = key.fileobj.accept()
                except BlockingIOError:
                    continue
                c.setblocking(False)
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sel.register(c, selectors.EVENT_READ, ("conn", name,
                                                       [SERVICES[name](), bytearray(), False]))
                continue
            c = key.fileobj
            st = key.data[2]
            svc, out, done = st
            try:
                d = c.recv(65536)
            except BlockingIOError:
                d = None
            if d == b"" and not done:
                out += svc.eof()
                st[2] = done = True
            elif d:
                out += svc.feed(d)
            # write: the reply (non-blocking first: the usual case costs one syscall),
            # then the stream (blocking sends keep the loop simple)
            if out:
                try:
                    del out[:c.send(out)]
                except BlockingIOError:
                    pass
            if out or svc.stream_left:
                c.setblocking(True)
                try:
                    c.sendall(out)
                    out.clear()
                    while svc.stream_left:
                        svc.stream_left -= c.send(stream_chunk(svc, 1 << 20))
                finally:
                    c.setblocking(False)
            if done or isinstance(svc, Source) and len(svc.req) == 8:
                sel.unregister(c)
                c.close()
    for key in list(sel.get_map().values()):
        if key.data[0] == "conn":
            key.fileobj.close()
    sel.close()


# --- the client (runs in the peer namespace) ----------------------------------------------
def client_main() -> None:
    out = sys.stdout
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        addr = (cmd["host"], cmd["port"])
        s = socket.create_connection(addr, timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        op = cmd["op"]
        res = {"op": op}
        if op == "up":
            n = cmd["bytes"]
            big = memoryview(BLOCK * 16)
            t0 = time.perf_counter()
            left = n
            while left:
                k = min(left, len(big))
                s.sendall(big[:k])
                left -= k
            s.shutdown(socket.SHUT_WR)
            got = b""
            while len(got) < 8:
                d = s.recv(8 - len(got))
                if not d:
                    break
                got += d
            dt = time.perf_counter() - t0
            res.update(ok=len(got) == 8 and COUNT.unpack(got)[0] == n, seconds=dt,
                       rate=n / dt / 1e6)
        elif op == "down":
            n = cmd["bytes"]
            buf = bytearray(1 << 20)
            t0 = time.perf_counter()
            s.sendall(COUNT.pack(n))
            total = 0
            while True:
                k = s.recv_into(buf)
                if not k:
                    break
                total += k
            dt = time.perf_counter() - t0
            res.update(ok=total == n, seconds=dt, rate=n / dt / 1e6)
        elif op == "rr":
            secs = cmd["seconds"]
            count = 0
            t0 = time.perf_counter()
            end = t0 + secs
            ok = True
            while True:
                s.send(b"x")
                if s.recv(1) != b"x":
                    ok = False
                    break
                count += 1
                if not count & 63 and time.perf_counter() >= end:
                    break
            dt = time.perf_counter() - t0
            s.shutdown(socket.SHUT_WR)
            s.recv(1)
            res.update(ok=ok, seconds=dt, rate=count / dt)
        s.close()
        out.write(json.dumps(res) + "\n")
        out.flush()


# --- the bench ----------------------------------------------------------------------------
#: fpd data-path configurations (Worker.set_fastpath), each adding one lever
LEVERS = {
    "ref": dict(parse=False, burst=False, tso=False, acks=False),
    "parse": dict(parse=True, burst=False, tso=False, acks=False),
    "burst": dict(parse=True, burst=True, tso=False, acks=False),
    "tso": dict(parse=True, burst=True, tso=True, acks=False),
    "all": dict(parse=True, burst=True, tso=True, acks=True),
    # AF_XDP knobs on top of "all"
    "busy": dict(parse=True, burst=True, tso=True, acks=True, busy_poll=20),
    "batch64": dict(parse=True, burst=True, tso=True, acks=True, batch=64),
    "batch1k": dict(parse=True, burst=True, tso=True, acks=True, batch=1024),
}


def apply_lever(w, kw: dict) -> None:
    """In the worker's thread: the data-path levers, busy polling, the RX batch."""
    kw = dict(kw)
    bp = kw.pop("busy_poll", 0)
    w.batch = kw.pop("batch", 256)
    w.set_fastpath(**kw)
    if bp:
        w.xsk.set_busy_poll(bp, 64)
    elif w.xsk.busy_poll:
        w.xsk.set_busy_poll(0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mb", type=float, default=50, help="bulk size in MB (1e6 bytes)")
    ap.add_argument("--rr-seconds", type=float, default=2.0)
    ap.add_argument("--mode", default="native", choices=("native", "generic", "auto"))
    ap.add_argument("--spin", type=float, default=0.0005,
                    help="worker busy-poll time after work (s)")
    ap.add_argument("--tx-budget", type=int, default=None,
                    help="XDP_MAX_TX_SKB_BUDGET for the worker's socket (kernel default 32)")
    ap.add_argument("--levers", default="all",
                    help="comma-separated fpd data-path configurations, each measured in "
                         "the same run: ref (per frame, per segment), parse (+ one C "
                         "parse per RX burst), burst (+ batched in-order receive), tso "
                         "(+ template transmit), all (+ ACK runs: one transmit); AF_XDP "
                         "knobs on top of all: busy (busy polling 20 us, budget 64), "
                         "batch64, batch1k (RX burst size; default 256)")
    ap.add_argument("--work", default="up,down,rr", help="subset of up,down,rr")
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        client_main()
        return

    from fpd.bpf import Steering
    from fpd.stack import ANY, StackConfig
    from fpd.testbed import TestBed
    from fpd.worker import Worker

    nbytes = int(args.mb * 1e6)
    with TestBed() as bed:
        st = w = None
        stop = threading.Event()
        threads = []
        lsocks = {}
        client = None
        try:
            with bed.inside(bed.srv_ns):
                st = Steering(bed.srv_if, mode=args.mode)
                w = Worker(bed.srv_if, 0, StackConfig(time_wait=1.0), app=FpdDriver(),
                           spin=args.spin, tx_budget=args.tx_budget)
                for name, port in KERNEL_PORTS.items():
                    ls = socket.socket()
                    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    ls.bind((bed.srv_ip, port))
                    ls.listen(16)
                    lsocks[name] = ls
            st.set_xsk(0, w.fileno())
            for port in FPD_PORTS.values():
                w.stack.listen(ANY, port)
                st.add_port(port)
            threads.append(threading.Thread(target=w.run, kwargs={"until": stop.is_set},
                                            name="fpd-worker"))
            threads.append(threading.Thread(target=kernel_server, args=(lsocks, stop),
                                            name="kernel-server"))
            for t in threads:
                t.start()
            client = bed.popen(bed.peer_ns, [sys.executable, os.path.abspath(__file__),
                                             "--client"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

            def ask(op, server, **kw):
                ports = FPD_PORTS if server == "fpd" else KERNEL_PORTS
                svc = {"up": "sink", "down": "source", "rr": "echo"}[op]
                client.stdin.write(json.dumps({"op": op, "host": bed.srv_ip,
                                               "port": ports[svc], **kw}) + "\n")
                client.stdin.flush()
                line = client.stdout.readline()
                if not line:
                    raise RuntimeError("the client died")
                r = json.loads(line)
                if not r["ok"]:
                    raise RuntimeError(f"{op} on {server}: wrong answer {r}")
                return r["rate"]

            work = tuple(x for x in (("up", {"bytes": nbytes}), ("down", {"bytes": nbytes}),
                                     ("rr", {"seconds": args.rr_seconds}))
                         if x[0] in args.work.split(","))
            levers = args.levers.split(",")
            servers = [f"fpd:{lv}" for lv in levers] + ["kernel"]

            def use(srv):
                if srv == "kernel":
                    return
                kw = LEVERS[srv.split(":", 1)[1]]
                done = threading.Event()
                w.call_soon(lambda w, now: (apply_lever(w, kw), done.set()))
                if not done.wait(5):
                    raise RuntimeError("the worker did not take the lever change")

            def run(op, srv, **kw):
                use(srv)
                return ask(op, "kernel" if srv == "kernel" else "fpd", **kw)

            for srv in servers:                      # warm-up: all paths, ARP, caches
                run("rr", srv, seconds=0.2)
            res = {(op, srv): [] for op, _ in work for srv in servers}
            for r in range(args.rounds):
                order = servers[r % len(servers):] + servers[:r % len(servers)]
                for op, kw in work:
                    for srv in order:
                        res[op, srv].append(run(op, srv, **kw))
                print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                    f"{op}/{srv} {res[op, srv][-1]:,.0f}" for op, _ in work
                    for srv in servers), file=sys.stderr, flush=True)
            stats = w.stats()
        finally:
            stop.set()
            if client is not None:
                try:
                    client.stdin.write(json.dumps({"op": "quit"}) + "\n")
                    client.stdin.close()
                except OSError:
                    pass
                try:
                    client.wait(10)
                except subprocess.TimeoutExpired:
                    client.kill()
                    client.wait()
            for t in threads:
                t.join(10)
            if w is not None:
                w.close()
            if st is not None:
                mode = st.mode
                st.close()
            for ls in lsocks.values():
                ls.close()

    units = {"up": "MB/s", "down": "MB/s", "rr": "round trips/s"}
    names = {"up": "bulk kernel -> server", "down": "bulk server -> kernel",
             "rr": "1-byte request/response"}
    print(f"\nfpd worker ({mode} XDP, AF_XDP {stats.get('bind_mode')} mode) vs kernel TCP, "
          f"{args.rounds} interleaved rounds, medians "
          f"(bulk {args.mb:g} MB, rr {args.rr_seconds:g} s)")
    print(f"{'workload':<26}{'server':<12}{'median':>11}{'(min-max)':>20}"
          f"{'/kernel':>9}{'/ref':>7}  unit")
    for op, _ in work:
        km = statistics.median(res[op, "kernel"])
        ref = res.get((op, "fpd:ref"))
        rm = statistics.median(ref) if ref else None
        for srv in servers:
            f = res[op, srv]
            fm = statistics.median(f)
            vs_ref = f"{fm / rm:>7.2f}" if rm else f"{'':>7}"
            print(f"{names[op]:<26}{srv:<12}{fm:>11,.1f}{f'({min(f):,.0f}-{max(f):,.0f})':>20}"
                  f"{fm / km:>9.3f}{vs_ref}  {units[op]}")
    s = stats["stack"]
    print(f"\nfpd: {stats['rx_frames']:,} frames in, {stats['tx_frames']:,} out, "
          f"{s['retransmits']} retransmits, tx ring full {stats['tx_ring_full']} times, "
          f"XDP drops {stats['xdp']['rx_dropped']}, "
          f"{stats['iterations']:,} iterations, {stats['sleeps']:,} sleeps")


if __name__ == "__main__":
    main()
