"""AF_XDP sockets from Python: one :class:`XskSocket` per (interface, queue).

Set-up, all plain syscalls (libbpf >= 1.0 has no xsk helpers)::

    socket(AF_XDP, SOCK_RAW)
    setsockopt(SOL_XDP, XDP_UMEM_REG, struct xdp_umem_reg)        UMEM pinned by the kernel
    setsockopt(SOL_XDP, XDP_UMEM_FILL_RING / _COMPLETION_RING / XDP_RX_RING / XDP_TX_RING)
    getsockopt(SOL_XDP, XDP_MMAP_OFFSETS)                          where each ring's words are
    mmap(fd, XDP_PGOFF_RX_RING / TX / UMEM_PGOFF_FILL / COMPLETION)
    bind(struct sockaddr_xdp {family, flags, ifindex, queue_id, shared_umem_fd})
        XDP_ZEROCOPY|XDP_USE_NEED_WAKEUP, else XDP_COPY|XDP_USE_NEED_WAKEUP on EOPNOTSUPP,
        EBUSY retried for a while (a just-closed socket on the queue is released late)

The socket must be created in the network namespace of the interface (the calling
thread's namespace); the fd works from any thread afterwards.

The data path (:class:`XskRings`) is separate from the syscalls so unit tests run it over
simulated rings. need_wakeup policy:

* TX: after publishing descriptors, ``sendto(fd, NULL, 0, MSG_DONTWAIT)`` when the TX
  ring's XDP_RING_NEED_WAKEUP flag is set (always, if bound without need_wakeup). In copy
  mode (veth, generic XDP) the kernel keeps that flag set permanently and transmits
  synchronously inside ``sendto``, at most its TX budget (32 frames by default) per call,
  answering EAGAIN while more remain or while the completion ring is full:
  :meth:`XskSocket.kick` reaps completions and repeats while that makes progress (see
  docs/AFXDP.md for the measurements). In zero-copy mode the flag is only set when the driver sleeps, so most batches
  cost no syscall.
* Fill: after topping the fill ring up, ``recvfrom(fd, NULL, 0, MSG_DONTWAIT)`` when the
  fill ring's flag is set (a zero-copy driver waiting for buffers); copy mode never sets it.
* RX: :meth:`XskSocket.wait` polls for POLLIN when the caller has nothing else to do.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import select
import socket
import struct
import time

from . import libc as _libc
from . import umem as _u
from .umem import (APP, KRX, KTX, SOL_XDP, AF_XDP, ConsumerRing, ProducerRing, Umem,
                   FrameError)

XDP_SHARED_UMEM = 1 << 0
XDP_COPY = 1 << 1
XDP_ZEROCOPY = 1 << 2
XDP_USE_NEED_WAKEUP = 1 << 3
#: bind flag: multi-buffer packets (a frame over several chunks; Linux >= 6.6)
XDP_USE_SG = 1 << 4
XDP_PKT_CONTD = _u.XDP_PKT_CONTD
#: room for one multi-buffer frame put together in the UMEM's scratch area: the largest
#: IPv4 datagram with an Ethernet header and two VLAN tags (generic XDP hands the frags
#: program GSO/GRO packets of up to 64 KB). Slots are touched only when used.
SG_SLOT = 65536 + 2048
#: scratch slots for building outgoing frames larger than a chunk (then split into a chain)
SG_TX_SLOTS = 64
U32 = 0xFFFFFFFF
XDP_OPTIONS_ZEROCOPY = 1 << 0
#: setsockopt: frames one copy-mode sendto() may transmit (kernel >= 6.17; default 32)
XDP_MAX_TX_SKB_BUDGET = 9
#: SOL_SOCKET busy-polling options (asm-generic/socket.h)
SO_BUSY_POLL = 46
SO_PREFER_BUSY_POLL = 69
SO_BUSY_POLL_BUDGET = 70

# struct sockaddr_xdp {u16 family; u16 flags; u32 ifindex; u32 queue_id; u32 shared_umem_fd;}
SOCKADDR_XDP = struct.Struct("=HHIII")
# struct xdp_statistics: six u64 (the first three since 4.18, the rest since 5.9)
STAT_FIELDS = ("rx_dropped", "rx_invalid_descs", "tx_invalid_descs", "rx_ring_full",
               "rx_fill_ring_empty_descs", "tx_ring_empty_descs")

SIOCETHTOOL = 0x8946
SIOCGIFINDEX = 0x8933
ETHTOOL_GCHANNELS = 0x0000003C
# struct ethtool_channels {u32 cmd, max_rx, max_tx, max_other, max_combined,
#                          rx_count, tx_count, other_count, combined_count;}
ETHTOOL_CHANNELS = struct.Struct("=9I")
IFNAMSIZ = 16



class XskError(OSError):
    """An AF_XDP set-up step failed; ``errno`` is the kernel's, the message says why."""


def _err(e: int, what: str) -> XskError:
    return XskError(e, f"{what}: {os.strerror(e)}")


# --- interface helpers -----------------------------------------------------------------
def _ifreq_name(ifname: str) -> bytes:
    b = ifname.encode()
    if not b or len(b) >= IFNAMSIZ:
        raise ValueError(f"bad interface name {ifname!r}")
    return b.ljust(IFNAMSIZ, b"\0")


def ifindex_of(ifname: str) -> int:
    """Interface index in the calling thread's network namespace (ENODEV if absent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = bytearray(_ifreq_name(ifname) + bytes(24))
        try:
            fcntl.ioctl(s.fileno(), SIOCGIFINDEX, req)
        except OSError as e:
            if e.errno == errno.ENODEV:
                raise _err(errno.ENODEV, f"no interface {ifname!r} in this network "
                                         f"namespace") from None
            raise
        return struct.unpack_from("=i", req, IFNAMSIZ)[0]


def channels_of(ifname: str) -> dict:
    """ETHTOOL_GCHANNELS for ``ifname`` in the calling thread's namespace."""
    buf = ctypes.create_string_buffer(ETHTOOL_CHANNELS.pack(ETHTOOL_GCHANNELS, *([0] * 8)))
    req = bytearray(_ifreq_name(ifname) + struct.pack("=Q", ctypes.addressof(buf))
                    + bytes(16))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            fcntl.ioctl(s.fileno(), SIOCETHTOOL, req)
        except OSError as e:
            if e.errno == errno.ENODEV:
                raise _err(errno.ENODEV, f"no interface {ifname!r} in this network "
                                         f"namespace") from None
            raise
    vals = ETHTOOL_CHANNELS.unpack_from(buf.raw)
    return dict(zip(("cmd", "max_rx", "max_tx", "max_other", "max_combined", "rx", "tx",
                     "other", "combined"), vals))


def queues_of(ifname: str) -> int:
    """Active RX queues of ``ifname`` (one XSK each), read with the ETHTOOL_GCHANNELS
    ioctl in the calling thread's namespace (``/sys/class/net`` would show the namespace
    /sys was mounted in, not the thread's). Devices without the ethtool op: 1."""
    try:
        ch = channels_of(ifname)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL):
            return 1
        raise
    return max(1, ch["combined"] + ch["rx"])


# --- the data path ---------------------------------------------------------------------
class XskRings:
    """RX/TX data path over a UMEM and two rings; no syscalls except the wake-up hooks
    (:meth:`_kick_tx`, :meth:`_wake_fill`), which a bare instance leaves as no-ops so it
    can run over simulated rings.

    Frame ownership (see :mod:`fpd.umem`): :meth:`rx_batch` hands received frames to the
    application, which gives each back exactly once, with :meth:`recycle` (or
    :meth:`tx_submit` to send the same buffer, or ``umem.free``)."""

    def __init__(self, umem: Umem, rx: ConsumerRing | None, tx: ProducerRing | None,
                 need_wakeup: bool = True):
        self.umem = umem
        self.rx = rx
        self.tx = tx
        self.need_wakeup = need_wakeup
        self.kicks = 0           # TX wake-up syscalls made
        self.fill_wakeups = 0    # fill wake-up syscalls made
        # multi-buffer (XDP_USE_SG): chained RX descriptors are copied into one frame in
        # the UMEM's scratch area (umem.size + i * SG_SLOT); their chunks wait in
        # _rx_held for the next recycle(), an unfinished chain in _rx_part
        self.sg = False
        self.sg_slots = 0
        self._rx_part: list = []
        self._rx_held: list = []
        self.rx_sg_frames = 0    # frames that came in more than one buffer
        self.rx_sg_dropped = 0   # ... too large for a scratch slot (dropped)

    # -- wake-up hooks ------------------------------------------------------------------
    def _kick_tx(self) -> None:
        pass

    def _wake_fill(self) -> None:
        pass

    # -- RX -----------------------------------------------------------------------------
    def rx_burst(self, max_n: int = 64):
        """Up to ``max_n`` received frames as two lists ``(addrs, lens)``; each frame's
        data is ``frame(addr, len)``. The frames are the application's until recycled.
        With multi-buffer on (``sg``), a frame that came in several chained buffers is
        one entry, at an address in the UMEM's scratch area (valid until the next
        burst)."""
        rx = self.rx
        k = rx.peek(max_n)
        if not k:
            return [], []
        flat = rx.read_flat(k)
        rx.release(k)
        um = self.umem
        um.krx -= k
        addrs = flat[0::2]
        lens = flat[1::2]
        if um.check:
            m = um.base_mask
            um.alloc.move([a & m for a in addrs], KRX, APP)
        if max(lens) > U32 or self._rx_part:    # options set: a chained (multi-buffer) frame
            if self.sg:
                return self._rx_chains(addrs, lens)
            lens = [x & U32 for x in lens]
        return addrs, lens

    def _rx_chains(self, addrs: list, lens: list):
        """Put each chain of XDP_PKT_CONTD descriptors together in one scratch slot."""
        um = self.umem
        view = um.view
        base = um.size
        slots = self.sg_slots
        used = 0
        part = self._rx_part
        held = self._rx_held
        out_a = []
        out_l = []
        for a, lo in zip(addrs, lens):
            if lo <= U32 and not part:          # a frame in one buffer
                out_a.append(a)
                out_l.append(lo)
                continue
            part.append((a, lo & U32))
            if (lo >> 32) & XDP_PKT_CONTD:
                continue                        # more of this frame follows
            total = 0
            for _, ln in part:
                total += ln
            if total > SG_SLOT or used >= slots:
                self.rx_sg_dropped += 1
            else:
                dst = o = base + used * SG_SLOT
                used += 1
                for ca, ln in part:
                    view[o:o + ln] = view[ca:ca + ln]
                    o += ln
                out_a.append(dst)
                out_l.append(total)
                self.rx_sg_frames += 1
            held.extend([ca for ca, _ in part])
            part = []
        self._rx_part = part
        return out_a, out_l
    def rx_batch(self, max_n: int = 64) -> list:
        """Up to ``max_n`` received frames as ``[(addr, len), ...]``."""
        addrs, lens = self.rx_burst(max_n)
        return list(zip(addrs, lens))

    def frame(self, addr: int, length: int) -> memoryview:
        """The bytes of a frame in the UMEM (a view: release it before close)."""
        return self.umem.view[addr:addr + length]

    def recycle(self, addrs) -> None:
        """Received frames back to the kernel via the fill ring (the chunks of frames
        put together from several buffers go with them)."""
        if self._rx_held:
            size = self.umem.size
            addrs = [a for a in addrs if a < size] + self._rx_held
            self._rx_held = []
        self.umem.recycle(addrs)
        if self.need_wakeup and self.umem.fill_ring.needs_wakeup():
            self._wake_fill()

    def fill(self, max_n: int | None = None) -> int:
        """Top the fill ring up from the free list (and wake the driver if it asks)."""
        n = self.umem.refill(max_n)
        if self.need_wakeup and self.umem.fill_ring.needs_wakeup():
            self._wake_fill()
        return n

    # -- TX -----------------------------------------------------------------------------
    def tx_alloc(self, n: int = 1) -> list:
        """Up to ``n`` free frames to build outgoing frames in (reaps completions first
        when the free list is short)."""
        um = self.umem
        if len(um.alloc.free) < n and um.ktx:
            um.reap()
        return um.alloc.alloc(n)

    def tx_submit(self, descs, lens=None) -> int:
        """Publish frames on the TX ring and kick per the need_wakeup policy.

        ``descs`` is ``[(addr, len), ...]``, or a list of addrs with ``lens`` beside it.
        Returns how many were queued (a prefix); the rest stay the caller's."""
        if lens is None:
            n = len(descs)
            if not n:
                return 0
            addrs = [d[0] for d in descs]
            lens = [d[1] for d in descs]
        else:
            addrs = descs
            n = len(addrs)
            if not n:
                return 0
        tx = self.tx
        k = tx.reserve(n)
        if k < n and self.umem.ktx:
            # the ring is full of frames the kernel may already have sent
            self._kick_tx()
            self.umem.reap()
            k += tx.reserve(n - k)
        if not k:
            return 0
        if k < n:
            addrs = addrs[:k]
            lens = lens[:k]
        um = self.umem
        if um.check:
            m = um.base_mask
            for a, ln in zip(addrs, lens):
                ln &= U32                       # the high word: options (XDP_PKT_CONTD)
                if (a & (um.chunk_size - 1)) + ln > um.chunk_size or ln <= 0:
                    raise FrameError(f"TX desc {a:#x}+{ln} crosses its chunk")
            um.alloc.move([a & m for a in addrs], APP, KTX)
        tx.write_descs(addrs, lens)
        tx.submit(k)
        um.ktx += k
        if not self.need_wakeup or tx.needs_wakeup():
            self._kick_tx()
        return k

    def complete(self, max_n: int = 1 << 30) -> int:
        """Reap the completion ring: sent frames back to the free list."""
        return self.umem.reap(max_n)

    def audit(self, app=None) -> dict:
        """Check mode: every frame in exactly one place (see :meth:`Umem.audit`), also
        cross-checking the RX/TX rings' visible contents."""
        counts = self.umem.audit(app=app)
        al = self.umem.alloc
        if self.rx is not None:
            r = self.rx
            span = r._read_flat(r.released, (r.producer - r.released) & _u.U32)[0::2]
            al.audit(krx=span)
        if self.tx is not None:
            r = self.tx
            c = r.consumer
            span = r._read_flat(c, (r.published - c) & _u.U32)[0::2]
            al.audit(ktx=span)
        return counts


# --- the socket ------------------------------------------------------------------------
class XskSocket(XskRings):
    """An AF_XDP socket bound to ``ifname`` queue ``queue``, with its own UMEM unless one
    (not yet registered) is passed. Create it in the interface's namespace; drive it from
    one thread at a time (the rings are single-producer/single-consumer).

    ``bind_mode`` is ``"zerocopy"`` or ``"copy"``; ``zerocopy`` is the bool."""

    def __init__(self, ifname: str, queue: int = 0, umem: Umem | None = None, *,
                 rx_size: int = 2048, tx_size: int = 2048, fill_size: int = 2048,
                 comp_size: int = 2048, bind_flags: int | None = None,
                 need_wakeup: bool = True, busy_timeout: float = 1.0,
                 tx_budget: int | None = None, check: bool = False,
                 nframes: int = _u.DEFAULT_FRAMES, chunk_size: int = _u.DEFAULT_CHUNK,
                 prefill: bool = True, busy_poll: int | None = None,
                 busy_poll_budget: int | None = None, sg: bool = False,
                 sg_slots: int = 256):
        self.ifname = ifname
        self.queue = queue
        self.sock: socket.socket | None = None
        self._maps: list[mmap.mmap] = []
        self._owns_umem = umem is None
        self._closed = False
        self.bind_mode = None
        self.zerocopy = False
        self.tx_budget = None
        self.busy_poll = None          # SO_BUSY_POLL microseconds in force, or None
        self.ebusy_retries = 0
        rx = tx = None
        try:
            if umem is None:
                umem = Umem(nframes, chunk_size, check=check,
                            scratch=(sg_slots + SG_TX_SLOTS) * SG_SLOT if sg else 0)
            elif sg and umem.scratch < (sg_slots + SG_TX_SLOTS) * SG_SLOT:
                raise ValueError(f"multi-buffer (sg) needs a Umem with scratch >= "
                                 f"{(sg_slots + SG_TX_SLOTS) * SG_SLOT} bytes")
            elif umem.registered_fd >= 0:
                raise ValueError("this UMEM is already registered on another socket "
                                 "(XDP_SHARED_UMEM is not supported)")
            elif umem.retired:
                raise ValueError("this UMEM belonged to a socket that was closed; make a "
                                 "new Umem (the kernel dropped its frames unaccounted)")
            super().__init__(umem, None, None, need_wakeup=need_wakeup)
            self.sg = sg
            self.sg_slots = sg_slots if sg else 0
            #: where outgoing multi-buffer frames are built (SG_TX_SLOTS slots)
            self.sg_tx_base = umem.size + self.sg_slots * SG_SLOT
            _u._warn_weak_ordering()
            self.ifindex = ifindex_of(ifname)
            try:
                self.sock = socket.socket(AF_XDP, socket.SOCK_RAW, 0)
            except OSError as e:
                if e.errno == errno.EPERM or e.errno == errno.EACCES:
                    raise _err(e.errno, "creating an AF_XDP socket needs root or "
                                        "CAP_NET_RAW") from None
                if e.errno == errno.EAFNOSUPPORT:
                    raise _err(e.errno, "this kernel has no AF_XDP (CONFIG_XDP_SOCKETS)") \
                        from None
                raise
            fd = self.sock.fileno()
            self._register_umem(umem)
            for opt, n, what in ((_u.XDP_UMEM_FILL_RING, fill_size, "fill"),
                                 (_u.XDP_UMEM_COMPLETION_RING, comp_size, "completion"),
                                 (_u.XDP_RX_RING, rx_size, "rx"),
                                 (_u.XDP_TX_RING, tx_size, "tx")):
                if n <= 0 or n & (n - 1):
                    raise ValueError(f"{what} ring size must be a power of two, not {n}")
                self._setopt(opt, struct.pack("=I", n), f"{what} ring size {n}")
            off = self.mmap_offsets()
            fill = ProducerRing(self._map(_u.XDP_UMEM_PGOFF_FILL_RING, off["fr"], fill_size, 1),
                                fill_size, *self._ro(off["fr"]), words=1)
            comp = ConsumerRing(self._map(_u.XDP_UMEM_PGOFF_COMPLETION_RING, off["cr"],
                                          comp_size, 1), comp_size, *self._ro(off["cr"]),
                                words=1)
            umem.attach_rings(fill, comp)
            rx = ConsumerRing(self._map(_u.XDP_PGOFF_RX_RING, off["rx"], rx_size, 2),
                              rx_size, *self._ro(off["rx"]), words=2)
            self.rx = rx
            tx = ProducerRing(self._map(_u.XDP_PGOFF_TX_RING, off["tx"], tx_size, 2),
                              tx_size, *self._ro(off["tx"]), words=2)
            self.tx = tx
            if tx_budget is not None:
                self.set_tx_budget(tx_budget)
            self._bind(bind_flags, need_wakeup, busy_timeout)
            if busy_poll:
                self.set_busy_poll(busy_poll, busy_poll_budget)
            self._poll = select.poll()
            self._poll.register(fd, select.POLLIN)
            if prefill:
                self.fill()
        except BaseException:
            self.close()
            raise

    # -- set-up helpers -----------------------------------------------------------------
    def _setopt(self, opt: int, val: bytes, what: str) -> None:
        try:
            self.sock.setsockopt(SOL_XDP, opt, val)
        except OSError as e:
            raise _err(e.errno, f"AF_XDP {what} on {self.ifname}") from None

    def _register_umem(self, umem: Umem) -> None:
        try:
            self.sock.setsockopt(SOL_XDP, _u.XDP_UMEM_REG, umem.reg_struct())
        except OSError as e:
            e_ = e.errno
            if e_ == errno.ENOBUFS or e_ == errno.ENOMEM:
                raise _err(e_, f"registering a {umem.size >> 20} MiB UMEM: locked memory "
                               f"exceeds RLIMIT_MEMLOCK (raise it, or run with "
                               f"CAP_IPC_LOCK, or use fewer frames)") from None
            if e_ == errno.EPERM:
                raise _err(e_, "registering a UMEM needs root or CAP_NET_RAW") from None
            if e_ == errno.EINVAL:
                raise _err(e_, f"UMEM rejected ({umem.nframes} frames x "
                               f"{umem.chunk_size} B, headroom {umem.headroom})") from None
            raise _err(e_, "registering the UMEM") from None
        umem.registered_fd = self.sock.fileno()

    def mmap_offsets(self) -> dict:
        raw = self.sock.getsockopt(SOL_XDP, _u.XDP_MMAP_OFFSETS, _u.MMAP_OFFSETS.size)
        if len(raw) < _u.MMAP_OFFSETS.size:
            raise XskError(errno.EPROTO, "kernel too old: XDP_MMAP_OFFSETS without ring "
                                         "flags (need Linux >= 5.4)")
        v = _u.MMAP_OFFSETS.unpack(raw)
        return {name: dict(zip(("producer", "consumer", "desc", "flags"), v[i * 4:i * 4 + 4]))
                for i, name in enumerate(("rx", "tx", "fr", "cr"))}

    @staticmethod
    def _ro(o: dict):
        return o["producer"], o["consumer"], o["flags"], o["desc"]

    def _map(self, pgoff: int, o: dict, size: int, words: int) -> mmap.mmap:
        length = o["desc"] + size * 8 * words
        try:
            m = mmap.mmap(self.sock.fileno(), length,
                          flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0x8000),
                          prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=pgoff)
        except OSError as e:
            raise _err(e.errno, f"mapping AF_XDP ring at {pgoff:#x}") from None
        self._maps.append(m)
        return m

    def set_tx_budget(self, n: int) -> bool:
        """Frames one copy-mode ``sendto`` may send (XDP_MAX_TX_SKB_BUDGET). Returns
        False on kernels without the option."""
        try:
            self.sock.setsockopt(SOL_XDP, XDP_MAX_TX_SKB_BUDGET, n)
        except OSError as e:
            if e.errno in (errno.ENOPROTOOPT, errno.EOPNOTSUPP):
                return False
            raise _err(e.errno, f"XDP_MAX_TX_SKB_BUDGET {n}") from None
        self.tx_budget = n
        return True

    def set_busy_poll(self, usecs: int, budget: int | None = None,
                      prefer: bool = True) -> bool:
        """Busy polling for this socket: SO_PREFER_BUSY_POLL (``prefer``), SO_BUSY_POLL
        ``usecs`` and SO_BUSY_POLL_BUDGET ``budget`` (packets per busy-poll round; None:
        the kernel's 8). Then :meth:`busy_poll_rx` (a ``recvfrom``) runs the device's
        NAPI in the caller's context; ``usecs`` 0 turns it all off again. Returns False
        where the kernel refuses (an option it does not know); nothing is left half
        set."""
        sock = self.sock
        done = []
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_PREFER_BUSY_POLL,
                            1 if prefer and usecs else 0)
            done.append(SO_PREFER_BUSY_POLL)
            sock.setsockopt(socket.SOL_SOCKET, SO_BUSY_POLL, int(usecs))
            done.append(SO_BUSY_POLL)
            if budget is not None:
                sock.setsockopt(socket.SOL_SOCKET, SO_BUSY_POLL_BUDGET, int(budget))
        except OSError as e:
            if e.errno not in (errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.EINVAL,
                               errno.EPERM):
                raise _err(e.errno, f"busy polling {usecs} us") from None
            for opt in done:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, 0)
                except OSError:
                    pass
            return False
        self.busy_poll = int(usecs) or None
        return True

    def busy_poll_rx(self) -> None:
        """``recvfrom(fd, NULL, 0, MSG_DONTWAIT)``: with busy polling on, the kernel runs
        the queue's NAPI here (RX and the fill ring) instead of in softirq."""
        try:
            self.sock.recv(0, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            if e.errno not in (errno.ENOBUFS, errno.EBUSY, errno.ENETDOWN):
                raise

    def _bind(self, bind_flags: int | None, need_wakeup: bool, busy_timeout: float) -> None:
        nw = XDP_USE_NEED_WAKEUP if need_wakeup else 0
        if self.sg:
            nw |= XDP_USE_SG
        if bind_flags is None:
            tries = [XDP_ZEROCOPY | nw, XDP_COPY | nw]
        else:
            tries = [bind_flags]
        fd = self.sock.fileno()
        deadline = time.monotonic() + busy_timeout
        delay = 0.002
        i = 0
        while True:
            flags = tries[i]
            sa = SOCKADDR_XDP.pack(AF_XDP, flags, self.ifindex, self.queue, 0)
            if _libc.bind(fd, sa, len(sa)) == 0:
                break
            e = ctypes.get_errno()
            if e == errno.EOPNOTSUPP and i + 1 < len(tries):
                i += 1
                continue
            if e == errno.EBUSY and time.monotonic() < deadline:
                self.ebusy_retries += 1
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
                continue
            where = f"binding AF_XDP to {self.ifname} queue {self.queue}"
            if flags & XDP_USE_SG and e in (errno.EINVAL, errno.EOPNOTSUPP):
                raise _err(e, f"{where} with multi-buffer (XDP_USE_SG, flags {flags:#x}): "
                              f"refused by the kernel or the driver (needs Linux >= 6.6 "
                              f"and a driver with AF_XDP multi-buffer); lower the MTU to "
                              f"fit one UMEM chunk (<= 3498 with 4096-byte chunks)")
            if e == errno.EBUSY:
                raise _err(e, f"{where}: the queue is still taken (another AF_XDP socket "
                              f"is bound to it, or one closed less than "
                              f"{busy_timeout:g} s ago with its rings still mapped)")
            if e == errno.EINVAL:
                try:
                    nq = queues_of(self.ifname)
                except OSError:
                    nq = "?"
                raise _err(e, f"{where} (flags {flags:#x}; the interface has {nq} "
                              f"active queue(s))")
            if e == errno.ENODEV or e == errno.ENXIO:
                raise _err(e, f"{where}: interface gone or down")
            if e == errno.EOPNOTSUPP:
                raise _err(e, f"{where}: mode {flags:#x} not supported by the driver")
            raise _err(e, where)
        try:
            opts = self.sock.getsockopt(SOL_XDP, _u.XDP_OPTIONS, 4)
            self.zerocopy = bool(struct.unpack("=I", opts)[0] & XDP_OPTIONS_ZEROCOPY)
        except OSError:
            self.zerocopy = bool(flags & XDP_ZEROCOPY)
        self.bind_mode = "zerocopy" if self.zerocopy else "copy"
        self.bind_flags = flags

    # -- wake-ups -----------------------------------------------------------------------
    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else -1

    def kick(self) -> None:
        """``sendto(fd, NULL, 0, MSG_DONTWAIT)``: let the kernel transmit. In copy mode
        each call sends at most the TX budget and stops early when the completion ring
        is full; on EAGAIN we reap completions and repeat while that makes progress."""
        s = self.sock
        tx = self.tx
        last = -1
        while True:
            self.kicks += 1
            try:
                s.send(b"", socket.MSG_DONTWAIT)
                return
            except BlockingIOError:
                # EAGAIN: the budget ran out with frames left, or the completion ring
                # is full (the kernel's TX back-pressure): reap, and stop when a kick
                # made no progress and there was nothing to reap
                c = tx.consumer
                if c == tx.published:
                    return
                if not self.umem.reap() and c == last:
                    return
                last = c
            except OSError as e:
                # ENOBUFS (no skb/completion room yet), EBUSY (another sender),
                # ENETDOWN: the frames stay queued, the next kick retries
                if e.errno in (errno.ENOBUFS, errno.EBUSY, errno.ENETDOWN):
                    return
                raise

    _kick_tx = kick

    def _wake_fill(self) -> None:
        self.fill_wakeups += 1
        try:
            self.sock.recv(0, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            if e.errno not in (errno.ENOBUFS, errno.EBUSY, errno.ENETDOWN):
                raise

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the RX ring has frames (or ``timeout`` seconds). True if ready."""
        if self.rx.available():
            return True
        ms = -1 if timeout is None else max(0, int(timeout * 1000))
        return bool(self._poll.poll(ms))

    # -- statistics ---------------------------------------------------------------------
    def stats(self) -> dict:
        """getsockopt(XDP_STATISTICS) as a dict (fields the kernel returned)."""
        raw = self.sock.getsockopt(SOL_XDP, _u.XDP_STATISTICS, 8 * len(STAT_FIELDS))
        vals = struct.unpack(f"={len(raw) // 8}Q", raw[:len(raw) // 8 * 8])
        return dict(zip(STAT_FIELDS, vals))

    # -- teardown -----------------------------------------------------------------------
    def close(self) -> None:
        """Unmap the rings, close the socket, unmap the UMEM if ours (idempotent).
        Ring mmaps go first: a mapped ring keeps the socket bound to its queue."""
        if self._closed:
            return
        self._closed = True
        for r in (getattr(self, "rx", None), getattr(self, "tx", None)):
            if r is not None:
                r.close()
        self.rx = self.tx = None
        um = getattr(self, "umem", None)
        if um is not None:
            for r in (um.fill_ring, um.comp_ring):
                if r is not None:
                    r.close()
            um.fill_ring = um.comp_ring = None
        for m in self._maps:
            m.close()
        self._maps.clear()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if um is not None:
            if um.registered_fd >= 0:
                um.retired = True
            um.registered_fd = -1
            if self._owns_umem:
                um.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self):
        state = "closed" if self._closed else f"fd {self.fileno()} {self.bind_mode}"
        return f"<XskSocket {self.ifname} q{self.queue} {state}>"
