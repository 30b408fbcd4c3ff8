"""Loss, reordering, delay and a rate limit on the test bed's peer path, without netem.

This kernel has no ``sch_netem``, so the impairments live in user space: with
``TestBed(impair=True)`` the veth pair is cut in two and a third namespace sits between
the ends::

    fpd-srv-X  fpd0 <──veth──> imps  [fpd-mid-X: bridge]  impp <──veth──> fpd1  fpd-peer-X

The bridge (``python -m fpd.impair imps impp``, run in the middle namespace) reads every
frame from one side with an AF_PACKET socket and writes it to the other, after deciding
by a seeded random schedule, per direction, whether to drop it, how long to hold it
(``delay`` + uniform ``jitter``), whether to hold it back further so that later frames
overtake it (``reorder`` probability, ``reorder_gap`` seconds), and when a ``rate``
(bytes/s) lets it leave; at most ``limit`` frames wait per direction (the rest are
dropped as ``overflow``). It forwards everything, ARP included, so both ends see one
Ethernet segment. Frames must carry complete checksums (the test bed turns checksum
offload off on both ends when impairing).

    with TestBed(impair=True) as bed:
        bed.impair.set(loss=0.02, reorder=0.05, delay=0.005, seed=7)   # both directions
        bed.impair.set(direction="to_srv", loss=0.0)                   # one direction
        bed.impair.stats()   # {"to_srv": {"rx":..,"tx":..,"lost":..,"reordered":..,
                             #             "overflow":..,"held":..}, "to_peer": {...}}
        bed.impair.clear()   # a clean wire again

Directions: ``to_srv`` carries what the peer sends toward fpd, ``to_peer`` the reverse.
What it cannot do: corrupt bytes, duplicate frames, or go faster than one Python
process forwards frames (docs/RELIABILITY.md gives the rate measured here); delays are
as exact as the bridge's wake-ups (~0.1 ms on an idle machine, worse under load).

This module imports nothing of the engine or the daemon (it belongs to the test bed).
"""

from __future__ import annotations

import heapq
import json
import os
import random
import select
import socket
import subprocess
import sys
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
DIRECTIONS = ("to_srv", "to_peer")
PARAMS = ("loss", "reorder", "reorder_gap", "delay", "jitter", "rate", "limit")
DEFAULTS = {"loss": 0.0, "reorder": 0.0, "reorder_gap": 0.002, "delay": 0.0,
            "jitter": 0.0, "rate": 0.0, "limit": 10000}


class ImpairError(RuntimeError):
    pass


# ----------------------------------------------------------------- the bridge itself ----
class _Direction:
    __slots__ = ("name", "rx_sock", "tx_sock", "p", "rng", "link_free", "n_rx", "n_tx",
                 "lost", "reordered", "overflow", "held")

    def __init__(self, name, rx_sock, tx_sock, seed):
        self.name = name
        self.rx_sock = rx_sock
        self.tx_sock = tx_sock
        self.p = dict(DEFAULTS)
        self.rng = random.Random(f"{seed}/{name}")
        self.link_free = 0.0
        self.n_rx = self.n_tx = self.lost = self.reordered = self.overflow = 0
        self.held = 0

    def configure(self, params: dict, seed=None) -> None:
        for k, v in params.items():
            if k not in PARAMS:
                raise ValueError(f"unknown impairment {k!r} (known: {', '.join(PARAMS)})")
            v = float(v)
            if v < 0 or (k in ("loss", "reorder") and v > 1):
                raise ValueError(f"{k}={v}: out of range")
            self.p[k] = int(v) if k == "limit" else v
        if seed is not None:
            self.rng = random.Random(f"{seed}/{self.name}")

    def stats(self) -> dict:
        return {"rx": self.n_rx, "tx": self.n_tx, "lost": self.lost,
                "reordered": self.reordered, "overflow": self.overflow, "held": self.held,
                **{k: self.p[k] for k in PARAMS}}


def _packet_socket(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    for opt in (33, socket.SO_RCVBUF):          # SO_RCVBUFFORCE (root), else the capped one
        try:
            s.setsockopt(socket.SOL_SOCKET, opt, 8 << 20)
            break
        except OSError:
            continue
    try:
        s.setsockopt(socket.SOL_SOCKET, 32, 8 << 20)   # SO_SNDBUFFORCE
    except OSError:
        pass
    s.bind((ifname, 0))
    s.setblocking(False)
    return s


def bridge(if_srv: str, if_peer: str, ctl_in=None, ctl_out=None, seed: int = 0) -> None:
    """Forward frames between ``if_srv`` and ``if_peer`` until the control stream ends."""
    ctl_in = ctl_in if ctl_in is not None else sys.stdin.buffer
    ctl_out = ctl_out if ctl_out is not None else sys.stdout
    s_srv, s_peer = _packet_socket(if_srv), _packet_socket(if_peer)
    dirs = {"to_srv": _Direction("to_srv", s_peer, s_srv, seed),
            "to_peer": _Direction("to_peer", s_srv, s_peer, seed)}
    by_fd = {s_peer.fileno(): dirs["to_srv"], s_srv.fileno(): dirs["to_peer"]}
    heap: list = []        # (release time, seq, direction, frame)
    seq = 0
    ctl_fd = ctl_in.fileno()
    os.set_blocking(ctl_fd, False)
    ctl_buf = b""
    poller = select.poll()
    for fd in (s_srv.fileno(), s_peer.fileno(), ctl_fd):
        poller.register(fd, select.POLLIN)
    ctl_out.write(json.dumps({"ready": True}) + "\n")
    ctl_out.flush()
    mono = time.monotonic
    running = True
    while running:
        if heap:
            wait = max(0, int((heap[0][0] - mono()) * 1000 + 0.999))
        else:
            wait = 1000
        events = poller.poll(wait)
        for fd, _ev in events:
            if fd == ctl_fd:
                chunk = os.read(ctl_fd, 65536)
                if not chunk:
                    running = False
                    break
                ctl_buf += chunk
                while b"\n" in ctl_buf:
                    line, ctl_buf = ctl_buf.split(b"\n", 1)
                    if line.strip():
                        reply = _command(line, dirs)
                        if reply is None:
                            running = False
                        else:
                            ctl_out.write(json.dumps(reply) + "\n")
                            ctl_out.flush()
                continue
            d = by_fd[fd]
            p = d.p
            rx = d.rx_sock
            rnd = d.rng.random
            loss, reorder, delay, jitter = p["loss"], p["reorder"], p["delay"], p["jitter"]
            rate, limit = p["rate"], p["limit"]
            plain = not (loss or reorder or delay or jitter or rate)
            for _ in range(512):
                try:
                    frame = rx.recv(65536)
                except (BlockingIOError, InterruptedError):
                    break
                d.n_rx += 1
                if plain and not d.held:
                    try:
                        d.tx_sock.send(frame)
                        d.n_tx += 1
                    except OSError:
                        d.overflow += 1
                    continue
                if loss and rnd() < loss:
                    d.lost += 1
                    continue
                if d.held >= limit:
                    d.overflow += 1
                    continue
                now = mono()
                t = now + delay
                if jitter:
                    t += jitter * rnd()
                if reorder and rnd() < reorder:
                    t += p["reorder_gap"]
                    d.reordered += 1
                if rate:
                    start = t if t > d.link_free else d.link_free
                    d.link_free = start + len(frame) / rate
                    t = d.link_free
                d.held += 1
                seq += 1
                heapq.heappush(heap, (t, seq, d, frame))
        if heap:
            now = mono()
            while heap and heap[0][0] <= now:
                _t, _s, d, frame = heapq.heappop(heap)
                d.held -= 1
                try:
                    d.tx_sock.send(frame)
                    d.n_tx += 1
                except OSError:
                    d.overflow += 1
    s_srv.close()
    s_peer.close()


def _command(line: bytes, dirs: dict):
    try:
        msg = json.loads(line)
        op = msg.get("op")
        if op == "quit":
            return None
        if op == "stats":
            return {d: dirs[d].stats() for d in DIRECTIONS}
        if op == "set":
            which = msg.get("direction", "both")
            targets = DIRECTIONS if which == "both" else (which,)
            for t in targets:
                if t not in dirs:
                    raise ValueError(f"direction {t!r}: one of both, {', '.join(DIRECTIONS)}")
            params = {k: v for k, v in msg.items() if k not in ("op", "direction", "seed")}
            for t in targets:
                dirs[t].configure(params, msg.get("seed"))
            return {"ok": True}
        raise ValueError(f"unknown op {op!r}")
    except Exception as e:       # a bad command must not stop the wire
        return {"error": str(e)}


# ------------------------------------------------------------ the controller (tests) ----
class Impairment:
    """Runs the bridge in namespace ``ns`` between ``if_srv`` and ``if_peer`` and steers it.

    ``set(direction="both", seed=None, **params)`` with params among loss, reorder
    (probabilities 0..1), reorder_gap, delay, jitter (seconds), rate (bytes/s, 0 =
    unlimited), limit (frames held per direction); ``stats()``; ``clear()``; ``close()``."""

    def __init__(self, ns: str, if_srv: str, if_peer: str, seed: int = 0):
        self.ns = ns
        self._p = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "fpd.impair",
             "--seed", str(seed), if_srv, if_peer],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        first = self._read()
        if not first.get("ready"):
            self.close()
            raise ImpairError(f"the impairment bridge did not start: {first}")

    @property
    def pid(self) -> int:
        return self._p.pid

    def _read(self) -> dict:
        line = self._p.stdout.readline()
        if not line:
            rc = self._p.poll()
            raise ImpairError(f"the impairment bridge ended (rc={rc})")
        return json.loads(line)

    def _ask(self, msg: dict) -> dict:
        if self._p.poll() is not None:
            raise ImpairError(f"the impairment bridge is gone (rc={self._p.returncode})")
        self._p.stdin.write(json.dumps(msg) + "\n")
        self._p.stdin.flush()
        reply = self._read()
        if "error" in reply:
            raise ImpairError(reply["error"])
        return reply

    def set(self, direction: str = "both", seed: int | None = None, **params) -> None:
        msg = {"op": "set", "direction": direction, **params}
        if seed is not None:
            msg["seed"] = seed
        self._ask(msg)

    def clear(self) -> None:
        self.set(**{k: v for k, v in DEFAULTS.items()})

    def stats(self) -> dict:
        return self._ask({"op": "stats"})

    def close(self) -> None:
        p = self._p
        if p.poll() is None:
            try:
                p.stdin.write(json.dumps({"op": "quit"}) + "\n")
                p.stdin.close()
            except (OSError, ValueError):
                pass
            try:
                p.wait(3)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(3)
        for f in (p.stdin, p.stdout):
            try:
                f.close()
            except (OSError, ValueError):
                pass


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description="fpd test bed impairment bridge (see module doc)")
    ap.add_argument("if_srv")
    ap.add_argument("if_peer")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    bridge(a.if_srv, a.if_peer, seed=a.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
