#!/usr/bin/env python3
"""The application that ``fpd bench`` runs on every variant (kernel, kernel+xdp, fpd).

One function, :func:`serve`, takes the socket *module* as a parameter: the kernel
variants pass Python's standard ``socket``, the fpd variant passes ``fpd.client``. That
is the one-import swap an application makes to move to fpd; nothing else differs.

    python -m fpd.bench_app --module socket     --host 10.77.0.1 --port 5001
    python -m fpd.bench_app --module fpd.client --host 0.0.0.0   --port 5001

It is a threaded server (one thread per connection, blocking calls only: the subset of
the socket API every drop-in module must have). The first byte a client sends picks the
service of that connection:

    E   echo: every byte received is sent back; at EOF the connection is closed.
        (request/response with any message size, and connect-request-close)
    U   upload sink: count bytes to EOF, answer with the count (8 bytes, big-endian), close
    D   download source: send a pattern until the peer goes away (or MAX_SOURCE_SECONDS)
    I   idle: answer b"i" and keep the connection open, unread, with no thread on it
    R   release: close every connection held by I; answer their number (8 bytes), close
    W   wake: a u32 length (big-endian) and that many bytes of "ip port" lines, the peer
        addresses of connections held by I; each of those gets an echo thread (as E, on
        the connection already open); answer how many were found (8 bytes), close

It prints ``ready <host>:<port> <module>`` once it listens, and exits on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import importlib
import os
import resource
import signal
import struct
import sys
import threading
import time

COUNT = struct.Struct("!Q")
CHUNK = 65536
SOURCE_BLOCK = bytes(range(256)) * 1024          # 256 KiB per sendall
MAX_SOURCE_SECONDS = 120.0                       # a source never streams longer than this


class _Stop(Exception):
    pass


class App:
    """The service, written against ``sock`` (a socket module)."""

    def __init__(self, sock, host: str, port: int, backlog: int = 1024, *,
                 reuseport: bool = False, ctl_port: int = 0):
        self.sock = sock
        self.held = []
        self.lock = threading.Lock()
        self.listener = self._listen(host, port, backlog, reuseport)
        self.address = self.listener.getsockname()[:2]
        # a port of this process's own (several processes share ``port``): I, W and R
        # sent there reach this process's held connections
        self.ctl = self._listen(host, ctl_port, 64, False) if ctl_port else None

    def _listen(self, host, port, backlog, reuseport):
        sock = self.sock
        lst = sock.socket(sock.AF_INET, sock.SOCK_STREAM)
        try:
            lst.setsockopt(sock.SOL_SOCKET, sock.SO_REUSEADDR, 1)
            if reuseport:
                lst.setsockopt(sock.SOL_SOCKET, sock.SO_REUSEPORT, 1)
            lst.bind((host, port))
            lst.listen(backlog)
        except BaseException:
            lst.close()
            raise
        return lst

    def serve_forever(self) -> None:
        if self.ctl is not None:
            threading.Thread(target=self._accept_loop, args=(self.ctl,), daemon=True).start()
        self._accept_loop(self.listener)

    def _accept_loop(self, lst) -> None:
        while True:
            conn, _ = lst.accept()
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn) -> None:
        sock = self.sock
        keep = False
        try:
            conn.setsockopt(sock.IPPROTO_TCP, sock.TCP_NODELAY, 1)
            first = conn.recv(CHUNK)
            if not first:
                return
            op, rest = first[:1], first[1:]
            if op == b"E":
                data = rest
                while True:
                    if data:
                        conn.sendall(data)
                    data = conn.recv(CHUNK)
                    if not data:
                        break
            elif op == b"U":
                n = len(rest)
                while True:
                    data = conn.recv(CHUNK)
                    if not data:
                        break
                    n += len(data)
                conn.sendall(COUNT.pack(n))
            elif op == b"D":
                end = time.monotonic() + MAX_SOURCE_SECONDS
                block = SOURCE_BLOCK
                while time.monotonic() < end:
                    conn.sendall(block)
            elif op == b"I":
                with self.lock:
                    self.held.append(conn)
                keep = True
                conn.sendall(b"i")
            elif op == b"W":
                n = self.wake(conn, rest)
                conn.sendall(COUNT.pack(n))
            elif op == b"R":
                with self.lock:
                    held, self.held = self.held, []
                for c in held:
                    try:
                        c.close()
                    except OSError:
                        pass
                conn.sendall(COUNT.pack(len(held)))
        except OSError:
            pass                    # the peer went away (the download source ends so)
        finally:
            if not keep:
                try:
                    conn.close()
                except OSError:
                    pass

    def wake(self, conn, data: bytes) -> int:
        """W: an echo thread on each held connection whose peer address is listed."""
        while len(data) < 4 or len(data) < 4 + struct.unpack("!I", data[:4])[0]:
            more = conn.recv(CHUNK)
            if not more:
                return 0
            data += more
        (n,) = struct.unpack("!I", data[:4])
        want = set()
        for line in data[4:4 + n].decode().splitlines():
            ip, port = line.split()
            want.add((ip, int(port)))
        with self.lock:
            held = list(self.held)
        found = []
        for c in held:
            try:
                peer = c.getpeername()[:2]
            except OSError:
                continue
            if peer in want:
                found.append(c)
        for c in found:
            threading.Thread(target=self.echo_held, args=(c,), daemon=True).start()
        return len(found)

    @staticmethod
    def echo_held(conn) -> None:
        """Echo on a held connection until EOF; R (or close) closes it, not this."""
        try:
            while True:
                data = conn.recv(CHUNK)
                if not data:
                    return
                conn.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            held, self.held = self.held, []
        for c in held:
            try:
                c.close()
            except OSError:
                pass
        if self.ctl is not None:
            try:
                self.ctl.close()
            except OSError:
                pass


def serve(sock, host: str = "0.0.0.0", port: int = 5001, ready=None, *,
          reuseport: bool = False, ctl_port: int = 0) -> None:
    """Run the application on socket module ``sock`` until SIGTERM/SIGINT (main thread)
    or an exception. ``ready(address)`` is called once it listens."""
    app = App(sock, host, port, reuseport=reuseport, ctl_port=ctl_port)
    try:
        if ready is not None:
            ready(app.address)
        app.serve_forever()
    finally:
        app.close()


def _on_signal(signum, frame):
    raise _Stop(signum)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="fpd bench application")
    ap.add_argument("--module", default="socket", help="socket module: socket or fpd.client")
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=5001)
    ap.add_argument("--slots", type=int, default=0,
                    help="fpd.client only: connections per worker region (0 = default)")
    ap.add_argument("--procs", type=int, default=1,
                    help="processes serving the port together (SO_REUSEPORT), each with "
                         "its own control port PORT+1+i for I/W/R: more idle connections "
                         "than one process's fd limit allows")
    args = ap.parse_args(argv)
    # Process set-up, not application logic: many idle connections need many fds on the
    # kernel variants.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sock = importlib.import_module(args.module)
    if args.slots and hasattr(sock, "set_default_socket"):
        # fpd's counterpart of the fd limit above: room for that many connections
        sock.set_default_socket(slots=args.slots)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    procs = max(1, args.procs)
    children = []
    index = 0
    if procs > 1:
        # process set-up too: the children fork before any socket or thread exists
        r, w = os.pipe()
        for i in range(1, procs):
            pid = os.fork()
            if pid == 0:
                index, children = i, []
                os.close(r)
                _die_with_parent()
                break
            children.append(pid)
        else:
            os.close(w)
    multi = procs > 1

    def ready(addr):
        if not multi:
            print(f"ready {addr[0]}:{addr[1]} {args.module} pid {os.getpid()}", flush=True)
        elif index:
            os.write(w, b"r")          # this child listens
            os.close(w)
        else:
            got = b""
            while len(got) < procs - 1:
                more = os.read(r, procs)
                if not more:
                    break
                got += more
            os.close(r)
            print(f"ready {addr[0]}:{addr[1]} {args.module} pid {os.getpid()} procs "
                  f"{1 + len(got)}", flush=True)

    try:
        serve(sock, args.host, args.port, ready, reuseport=multi,
              ctl_port=args.port + 1 + index if multi else 0)
    except _Stop:
        pass
    except OSError as e:
        print(f"bench_app: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except (OSError, ChildProcessError):
                pass
    return 0


def _die_with_parent() -> None:
    """A forked server process ends with its parent (PR_SET_PDEATHSIG)."""
    try:
        from fpd import libc
        libc.prctl(libc.PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, ImportError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
