"""Run the sans-IO TCP engine over a Linux TUN device.

This is the smallest real network the engine can face: the kernel in the TUN device's
namespace routes packets for the engine's address into the TUN file descriptor, and the
engine's segments written back are delivered to the kernel's TCP as if they came off a
wire. It proves the engine against a real TCP before (and independently of) XDP and
AF_XDP, and it is a handy playground: ``EngineOverTun`` needs nothing but root.

TUN carries bare IP packets (IFF_TUN | IFF_NO_PI), handled by ``wire.parse_packet`` and
``wire.build_packet``. The kernel computes complete checksums on a TUN device without
offloads.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import struct
import time

from fpd import wire

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


class TunError(OSError):
    pass


class TunDevice:
    """A TUN device opened in the calling thread's network namespace."""

    def __init__(self, name: str = "fpdtun0"):
        if len(name.encode()) > 15:
            raise TunError(errno.EINVAL, f"TUN name {name!r} longer than 15 bytes")
        try:
            self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise TunError(e.errno, f"cannot open /dev/net/tun: {e.strerror}") from None
        try:
            ifr = struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI)
            fcntl.ioctl(self.fd, TUNSETIFF, ifr)
        except OSError as e:
            os.close(self.fd)
            raise TunError(e.errno, f"cannot create TUN device {name}: {e.strerror}") from None
        self.name = name

    def fileno(self) -> int:
        return self.fd

    def read(self) -> bytes | None:
        try:
            return os.read(self.fd, 65536)
        except BlockingIOError:
            return None

    def write(self, pkt: bytes) -> None:
        os.write(self.fd, pkt)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class EngineOverTun:
    """Pump packets between a TunDevice and a ``fpd.stack.Stack``.

    ``on_events(runner, events, now)`` is called with each batch of application events,
    from the pumping thread (the Stack is single-threaded: touch it only from there).
    """

    def __init__(self, stack, tun: TunDevice, on_events=None, clock=time.monotonic):
        self.stack = stack
        self.tun = tun
        self.on_events = on_events
        self.clock = clock
        self.running = True
        self.packets_in = 0
        self.packets_out = 0
        self.dropped = 0

    def _flush(self) -> None:
        for seg in self.stack.output():
            pkt = wire.build_packet(seg)
            try:
                self.tun.write(pkt)
                self.packets_out += 1
            except OSError:
                self.dropped += 1

    def step(self, timeout: float) -> None:
        r, _, _ = select.select([self.tun.fd], [], [], max(0.0, timeout))
        now = self.clock()
        if r:
            for _ in range(256):
                pkt = self.tun.read()
                if pkt is None:
                    break
                self.packets_in += 1
                try:
                    frame = wire.parse_packet(pkt)
                except wire.MalformedFrame:
                    self.dropped += 1
                    continue
                if frame is None:
                    continue
                self.stack.input(frame.seg, now)
        self.stack.tick(now)
        self._pump_events(now)
        self._flush()

    def _pump_events(self, now: float) -> None:
        for _ in range(8):
            evs = self.stack.events()
            if not evs:
                break
            if self.on_events:
                self.on_events(self, evs, now)

    def run(self, until=None, max_seconds: float = 120.0) -> None:
        """Loop until ``until()`` is true, ``stop()`` is called, or ``max_seconds`` pass."""
        end = self.clock() + max_seconds
        while self.running and (until is None or not until()):
            now = self.clock()
            if now > end:
                raise TimeoutError("EngineOverTun.run: time limit reached")
            dl = self.stack.next_deadline()
            timeout = 0.05 if dl is None else min(0.05, dl - now)
            self.step(timeout)

    def stop(self) -> None:
        self.running = False
