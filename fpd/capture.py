"""``fpd capture``: the steered frames, which never reach the kernel's stack and so are
invisible to tcpdump, written as a pcap file.

Three parts, one per process:

- :class:`Tap` (in each worker): wraps the worker's ``xsk.rx_burst`` and ``xsk.tx_submit``
  while at least one capture runs (nothing is wrapped otherwise: no cost when off). Per
  RX burst and per TX submit it copies the frames that match the filter (truncated to
  the snap length) into one message and sends it with ``MSG_DONTWAIT`` on the capture's
  socket. When the socket's buffer is full the message is dropped and its frames counted
  (``drops``): the data path never waits for the reader. A send that fails otherwise
  (the reader went away) ends that capture in this worker.
- the supervisor (:func:`fpd.daemon.Supervisor._capture`): makes a ``SOCK_SEQPACKET``
  socketpair per capture, gives one end to every worker and the other to the client.
- the client (:func:`run_capture`, ``fpd capture``): reads messages, writes pcap records
  in arrival order, stops at ``-c COUNT``, on Ctrl-C, or at EOF (every worker's end closed:
  the daemon stopped).

A message on the capture socket::

    header  <HBxI   magic 0xFDCA, queue, drops so far in this worker (u32, wraps)
    record  <dIIBxxx timestamp (time.time()), original length, captured length, direction
                    (0 = received, 1 = sent), then the captured bytes
"""

from __future__ import annotations

import contextlib
import errno as _errno
import ipaddress
import socket
import struct
import sys
import time

MAGIC = 0xFDCA
MSG_HDR = struct.Struct("<HBxI")
REC_HDR = struct.Struct("<dIIBxxx")
RX, TX = 0, 1
MAX_MSG = 60000                 # bytes per message (several frames of a burst)
MAX_RECS = 500                  # records per message (2 iovecs each, IOV_MAX is 1024)
SNDBUF = 4 << 20                # the capture socket's buffer: what may queue before drops
DEFAULT_SNAPLEN = 65535
LINKTYPE_ETHERNET = 1
PCAP_HDR = struct.Struct("<IHHiIII")
PCAP_REC = struct.Struct("<IIII")
_ETH_P_IP, _ETH_P_8021Q, _ETH_P_8021AD = 0x0800, 0x8100, 0x88A8


class CaptureError(ValueError):
    """A capture request that cannot be served; ``str()`` says what and how to fix it."""


def parse_request(msg: dict) -> dict:
    """Validate a capture request (``port``, ``host``, ``snaplen``) -> normalized dict."""
    port = msg.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                             or not 1 <= port <= 65535):
        raise CaptureError(f"capture port must be 1..65535, not {port!r}")
    host = msg.get("host")
    if host is not None:
        try:
            host = str(ipaddress.IPv4Address(host))
        except (ipaddress.AddressValueError, ValueError):
            raise CaptureError(f"capture host must be an IPv4 address, not {host!r} "
                               f"(fpd steers IPv4 only)") from None
    snaplen = msg.get("snaplen", DEFAULT_SNAPLEN)
    if isinstance(snaplen, bool) or not isinstance(snaplen, int) or not 1 <= snaplen <= 262144:
        raise CaptureError(f"snap length must be 1..262144, not {snaplen!r}")
    return {"port": port, "host": host, "snaplen": snaplen}


def matcher(port: int | None, host: str | None):
    """A function ``(frame bytes) -> bool`` for the filter, or None when it takes all."""
    if port is None and host is None:
        return None
    hb = socket.inet_aton(host) if host is not None else None
    pb = struct.pack("!H", port) if port is not None else None

    def match(f) -> bool:
        off = 12
        et = f[off] << 8 | f[off + 1] if len(f) >= 14 else 0
        while et in (_ETH_P_8021Q, _ETH_P_8021AD) and len(f) >= off + 6:
            off += 4
            et = f[off] << 8 | f[off + 1]
        ip = off + 2
        if et != _ETH_P_IP or len(f) < ip + 20:
            return False
        if hb is not None and f[ip + 12:ip + 16] != hb and f[ip + 16:ip + 20] != hb:
            return False
        if pb is not None:
            t = ip + (f[ip] & 15) * 4
            if f[ip + 9] != 6 or len(f) < t + 4:
                return False
            if f[t:t + 2] != pb and f[t + 2:t + 4] != pb:
                return False
        return True
    return match


class _One:
    """One running capture inside a worker."""

    __slots__ = ("sock", "snaplen", "match", "drops", "frames", "queue")

    def __init__(self, sock: socket.socket, queue: int, req: dict):
        self.sock = sock
        self.queue = queue
        self.snaplen = req["snaplen"]
        self.match = matcher(req["port"], req["host"])
        self.drops = 0
        self.frames = 0


def _join_chains(view, addrs, lens):
    """TX descriptors of which some continue (``len | XDP_PKT_CONTD << 32``): each chain
    joined into one frame in a new buffer; returns (buffer, addrs, lens) over it."""
    buf = bytearray()
    out_a, out_l = [], []
    start = 0
    for a, lo in zip(addrs, lens):
        ln = lo & 0xFFFFFFFF
        buf += view[a:a + ln]
        if not (lo >> 32) & 1:
            out_a.append(start)
            out_l.append(len(buf) - start)
            start = len(buf)
    return memoryview(buf), out_a, out_l


class Tap:
    """The captures of one worker (``Tap.of(worker)``); installs its wrappers on the
    worker's XSK while it has at least one capture and removes them after the last."""

    def __init__(self, worker):
        self.worker = worker
        self.caps: list[_One] = []
        self.installed = False
        self.ended = 0                  # captures ended (reader gone)

    @classmethod
    def of(cls, worker) -> "Tap":
        tap = getattr(worker, "_fpd_tap", None)
        if tap is None:
            tap = cls(worker)
            worker._fpd_tap = tap
        return tap

    def add(self, sock: socket.socket, req: dict) -> None:
        sock.setblocking(False)
        self.caps.append(_One(sock, getattr(self.worker, "queue", 0), parse_request(req)))
        if not self.installed:
            self._install()

    def _install(self) -> None:
        xsk = self.worker.xsk
        orig_rx, orig_tx = xsk.rx_burst, xsk.tx_submit
        view = self.worker.umem.view
        take = self._take

        def rx_burst(max_n=64):
            addrs, lens = orig_rx(max_n)
            if addrs:
                take(view, addrs, lens, RX)
            return addrs, lens

        def tx_submit(descs, lens=None):
            k = orig_tx(descs, lens)
            if k:
                if lens is None:
                    a, ls = [d[0] for d in descs[:k]], [d[1] for d in descs[:k]]
                else:
                    a, ls = descs[:k], lens[:k]
                if max(ls) > 0xFFFFFFFF:         # multi-buffer chains (XDP_PKT_CONTD)
                    take(*_join_chains(view, a, ls), TX)
                else:
                    take(view, a, ls, TX)
            return k

        xsk.rx_burst = rx_burst          # instance attributes shadow the class's methods
        xsk.tx_submit = tx_submit
        self.installed = True

    def _uninstall(self) -> None:
        xsk = self.worker.xsk
        if xsk is not None:
            for name in ("rx_burst", "tx_submit"):
                with contextlib.suppress(AttributeError):
                    delattr(xsk, name)
        self.installed = False

    def _take(self, view, addrs, lens, direction: int) -> None:
        now = time.time()
        pack = REC_HDR.pack
        limit = MAX_MSG - MSG_HDR.size
        gone = None
        for c in self.caps:
            match = c.match
            snap = c.snaplen
            parts = [b""]                   # [0]: the message header, packed at send
            size = n = 0
            for a, ln in zip(addrs, lens):
                if match is not None and not match(view[a:a + ln]):
                    continue
                cap = ln if ln < snap else snap
                if n and (size + REC_HDR.size + cap > limit or n >= MAX_RECS):
                    if not self._send(c, parts, n):
                        gone = (gone or []) + [c]
                        break
                    parts = [b""]
                    size = n = 0
                parts.append(pack(now, ln, cap, direction))
                parts.append(view[a:a + cap])
                size += REC_HDR.size + cap
                n += 1
            else:
                if n and not self._send(c, parts, n):
                    gone = (gone or []) + [c]
        if gone:
            for c in gone:
                self._end(c)

    def _send(self, c: _One, parts: list, n: int) -> bool:
        parts[0] = MSG_HDR.pack(MAGIC, c.queue & 0xFF, c.drops & 0xFFFFFFFF)
        try:
            c.sock.sendmsg(parts, (), socket.MSG_DONTWAIT)   # gathers: no copy here
        except BlockingIOError:
            c.drops += n                 # the reader is behind: drop, count, never wait
            return True
        except OSError as e:
            if e.errno in (_errno.EMSGSIZE, _errno.ENOBUFS, _errno.ENOMEM):
                c.drops += n
                return True
            return False                 # the reader went away
        c.frames += n
        return True

    def _end(self, c: _One) -> None:
        with contextlib.suppress(ValueError):
            self.caps.remove(c)
        with contextlib.suppress(OSError):
            c.sock.close()
        self.ended += 1
        if not self.caps:
            self._uninstall()

    def close(self) -> None:
        for c in list(self.caps):
            self._end(c)

    def stats(self) -> dict:
        return {"running": len(self.caps), "frames": sum(c.frames for c in self.caps),
                "drops": sum(c.drops for c in self.caps), "ended": self.ended}


def attach(worker, sock: socket.socket, req: dict) -> None:
    """Worker side of ``{"op": "capture"}``: start capturing into ``sock``."""
    Tap.of(worker).add(sock, req)


def make_pair() -> tuple[socket.socket, socket.socket]:
    """(reader end for the client, writer end for the workers) of one capture."""
    r, w = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    for opt in (32, socket.SO_SNDBUF):       # SO_SNDBUFFORCE (root) beats wmem_max
        try:
            w.setsockopt(socket.SOL_SOCKET, opt, SNDBUF)
            break
        except OSError:
            continue
    return r, w


# --- the client -----------------------------------------------------------------------------
def pcap_header(snaplen: int) -> bytes:
    return PCAP_HDR.pack(0xA1B2C3D4, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET)


def parse_message(data: bytes):
    """``(queue, drops, [(ts, origlen, direction, bytes), ...])`` of one message."""
    if len(data) < MSG_HDR.size:
        raise ValueError("capture message too short")
    magic, queue, drops = MSG_HDR.unpack_from(data, 0)
    if magic != MAGIC:
        raise ValueError(f"bad capture message magic {magic:#x}")
    recs = []
    data = memoryview(data)
    off = MSG_HDR.size
    while off < len(data):
        ts, orig, cap, d = REC_HDR.unpack_from(data, off)
        off += REC_HDR.size
        recs.append((ts, orig, d, data[off:off + cap]))
        off += cap
    return queue, drops, recs


def run_capture(sock: socket.socket, out, *, count: int | None = None, snaplen: int,
                echo=None, stop=None) -> dict:
    """Read ``sock`` until EOF, ``count`` frames or ``stop()``; write pcap to ``out`` (a
    binary file). Returns ``{"frames", "drops", "by_queue", "ended"}`` where ended is
    "count", "eof" (the daemon stopped), "interrupted" or "output closed"."""
    import select
    out.write(pcap_header(snaplen))
    out.flush()
    frames = 0
    drops: dict[int, int] = {}
    by_queue: dict[int, int] = {}
    ended = "eof"
    try:
        while True:
            if count is not None and frames >= count:
                ended = "count"
                break
            if stop is not None and stop():
                ended = "interrupted"
                break
            r, _, _ = select.select([sock], [], [], 0.2)
            if not r:
                continue
            try:
                data = sock.recv(MAX_MSG + 4096)
            except BlockingIOError:
                continue
            except OSError as e:
                if e.errno in (_errno.ECONNRESET, _errno.EPIPE):
                    break
                raise
            if not data:
                break
            q, d, recs = parse_message(data)
            drops[q] = d
            if count is not None and frames + len(recs) > count:
                recs = recs[:count - frames]
            chunks = []
            for ts, orig, _dir, b in recs:
                sec = int(ts)
                chunks.append(PCAP_REC.pack(sec, int((ts - sec) * 1e6), len(b), orig))
                chunks.append(b)
            out.write(b"".join(chunks))
            frames += len(recs)
            by_queue[q] = by_queue.get(q, 0) + len(recs)
            try:
                out.flush()
            except BrokenPipeError:
                ended = "output closed"
                break
    except KeyboardInterrupt:
        ended = "interrupted"
    except BrokenPipeError:
        ended = "output closed"
    with contextlib.suppress(OSError):
        out.flush()
    return {"frames": frames, "drops": sum(drops.values()), "by_queue": by_queue,
            "ended": ended}


def open_output(path: str):
    if path == "-":
        return sys.stdout.buffer, False
    try:
        return open(path, "wb"), True
    except OSError as e:
        raise CaptureError(f"cannot write the capture file {path}: {e.strerror} "
                           f"(pick a writable path with -w, or -w - for stdout)") from None
