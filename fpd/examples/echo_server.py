#!/usr/bin/env python3
"""A threaded TCP echo server written for Python's standard ``socket`` module.

    python echo_server.py [--host 0.0.0.0] [--port 7007] [--fpd]

It accepts connections in a loop and gives each one a thread that sends back every byte
it receives; when the client half-closes, the rest is sent and the connection closed.
It prints "listening on HOST:PORT" once it listens and exits cleanly (status 0) on
SIGTERM or SIGINT.

To run it on fpd instead of the kernel's TCP, change the one line

    import socket

to

    from fpd import client as socket

and point it at the daemon (``FPD_SOCKET=/run/fpd/fpd.sock``, the port steered with
``fpd start -p PORT``). ``--fpd`` does the same swap at run time, for demos.
"""

import argparse
import errno
import importlib
import signal
import sys
import threading
import time

import socket

CHUNK = 65536


TRANSIENT = {errno.ECONNABORTED, errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM,
             errno.EINTR}


class Stop(Exception):
    """Raised by the SIGTERM/SIGINT handler to leave the accept loop."""


def _on_signal(signum, frame):
    raise Stop(signal.Signals(signum).name)


class EchoServer:
    def __init__(self, host: str, port: int, backlog: int = 128):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((host, port))
            self.listener.listen(backlog)
        except BaseException:
            self.listener.close()
            raise
        self.address = self.listener.getsockname()[:2]
        self.lock = threading.Lock()
        self.conns = set()
        self.threads = []

    def serve_forever(self):
        while True:
            try:
                conn, _peer = self.listener.accept()
            except OSError as e:
                if e.errno in TRANSIENT:  # out of descriptors/memory, aborted: go on
                    time.sleep(0.1)
                    continue
                raise
            with self.lock:
                self.conns.add(conn)
            t = threading.Thread(target=self.handle, args=(conn,), daemon=True)
            self.threads = [x for x in self.threads if x.is_alive()]
            self.threads.append(t)
            t.start()

    def handle(self, conn):
        try:
            while True:
                data = conn.recv(CHUNK)
                if not data:
                    break
                conn.sendall(data)
        except OSError:
            pass  # reset by the peer, or closed by close() below
        finally:
            with self.lock:  # not while close() below shuts it down
                self.conns.discard(conn)
                conn.close()

    def close(self, timeout: float = 2.0):
        self.listener.close()
        with self.lock:
            for conn in self.conns:  # wakes the threads blocked in recv()
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for t in self.threads:
            t.join(timeout)


def main(argv=None) -> int:
    global socket
    ap = argparse.ArgumentParser(description="threaded TCP echo server")
    ap.add_argument("--host", default="0.0.0.0", help="address to listen on (0.0.0.0)")
    ap.add_argument("--port", type=int, default=7007, help="port to listen on (7007; 0 = any)")
    ap.add_argument("--fpd", action="store_true",
                    help="use fpd's socket module (fpd.client) instead of the kernel's")
    args = ap.parse_args(argv)
    if args.fpd:
        socket = importlib.import_module("fpd.client")
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        server = EchoServer(args.host, args.port)
    except (OSError, Stop) as e:
        print(f"echo_server: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    try:
        host, port = server.address
        print(f"listening on {host}:{port} ({socket.__name__})", flush=True)
        server.serve_forever()
    except Stop:
        pass
    except OSError as e:  # the listener broke (e.g. the fpd daemon went away)
        print(f"echo_server: accept failed: {e}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
