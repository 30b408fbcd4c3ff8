"""Shared memory between the fpd daemon and one client: layout, SPSC rings, wake-ups.

Pure: the standard library only, no daemon logic. The byte-by-byte layout and the
protocols are in ``docs/SHM.md``; this docstring is the short version.

A **region** is one memfd per client, created and sealed by the daemon
(:meth:`Region.create`), passed to the client with SCM_RIGHTS (:func:`send_fds` /
:func:`recv_fds`) and mapped ``MAP_SHARED`` by both (:meth:`Region.attach`)::

    0x0000  header            128 B   magic, version, sizes, offsets, generation
    0x0080  event ring hdr    128 B   daemon -> app records
    0x0100  command ring hdr  128 B   app -> daemon records
    ev_off  event records     ev_entries  x 16 B   {u32 slot; u16 kind; u16 gen; u64 arg}
    cmd_off command records   cmd_entries x 16 B
    ctl_off per slot, 384 B:  slot control (128) | RX ring hdr (128) | TX ring hdr (128)
    data_off per slot, rx_size + tx_size B:  RX bytes (daemon -> app) | TX bytes (app -> daemon)

Every ring header is two 64-byte cache lines, each written by one side only::

    +0   u64 prod  u32 prod_flags (EOF)     u32 prod_wait  u64 prod_wake_at  -- producer
    +64  u64 cons  u32 cons_flags (CLOSED)  u32 cons_wait  u64 cons_wake_at  -- consumer

Indices are free-running u64 counters (bytes or records ever published/consumed);
position = index & (size - 1); in flight = (prod - cons) mod 2**64, always <= size.

Hostile input
-------------
Everything a client can write is hostile input to the daemon. Rules kept here:

* Each side keeps the authoritative copy of its *own* index and flags privately and only
  ever stores them; it never reads its own words back (the peer may have scribbled on
  them). Geometry comes from the daemon's private :class:`Layout`, never from the
  header after creation.
* The peer's index is loaded once per refresh and checked against the last value seen:
  a consumer index may only advance up to our producer index, a producer index only by
  at most the free space (``0 <= prod - cons <= size``, no going backwards, no data after
  EOF). Peer flag words must hold only known bits; EOF/CLOSED are sticky.
* Records are copied out once (one ``unpack_from``) and the copy is validated (slot in
  range or ``NO_SLOT``, kind known).
* Every offset into ring data is ``private_index & mask`` into a memoryview cut to exactly
  that ring, so no value in shared memory can make us touch anything outside it.
* The memfd is sealed (``F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL``): a client cannot
  shrink it under the daemon's mapping (which would SIGBUS the daemon).

A violation raises :class:`ShmCorrupt` naming the slot (``None`` for region-wide rings)
and the ring; the daemon resets that connection (or drops that client for a region-wide
ring) and carries on. Both sides check: the client does not trust a broken daemon either.

Wake-ups (need-wakeup, no syscall when busy)
--------------------------------------------
Each side has a ``wait`` word in its own line: odd = "I sleep (or am about to), wake me",
and it counts sleep episodes; and a ``wake_at`` word: the peer index at which it wants to
be woken (a low-water mark, like virtio's event index: "wake me when 64 KiB are free",
not at every released byte). Sleeper (:meth:`_End.arm`, then ``poll`` on an eventfd)::

    wake_at = threshold; wait += 1 (odd); FENCE; re-check the ring against the
    threshold; if ready: wait += 1, don't sleep; else poll()

Waker (:meth:`_End.wake_needed`, after publishing an index or a flag)::

    store index; FENCE; load the peer's wait, then its wake_at; if wait is odd, not
    already rung for this episode, and (our index reached wake_at, or we set EOF/CLOSED):
    eventfd_write()

This is the Dekker pattern: each side stores its own word, then loads the other's, so
at least one of them sees the other's store -- either the waker sees the odd ``wait``
and rings, or the sleeper sees the new index and does not sleep. It needs a full
store->load fence on *both* sides, even on x86 (TSO lets a load pass an earlier store
to a different address through the store buffer). Remembering the episode makes it at
most one eventfd write per sleep, however many writes happen before the sleeper runs.

Memory ordering
---------------
The SPSC protocol needs (1) the producer's data stores visible before its index store
(release), (2) the consumer's data loads not satisfied before its index load (acquire),
(3) the consumer's data loads done before its index store hands the space back. From
CPython each shared-memory access is a separate C call (memoryview item get/set, slice
memcpy) separated by interpreter work, so the C compiler cannot move one across another
and they reach the CPU in program order. x86-64 is TSO: stores are not reordered with
stores, loads not with loads, and a load not with a later store -- exactly (1), (2) and
(3). Index words are naturally aligned u64s written with one ``mov`` (memoryview packs
an item with an 8-byte ``memcpy``), so they are never torn.

TSO's one reordering (store then load of another location) only matters to the
need-wakeup handshake, and :func:`fence` closes it with C11's full fence,
``atomic_thread_fence(memory_order_seq_cst)``, which GCC's libatomic exports as a function
(on x86-64 it is ``lock or $0, (%rsp)``: a locked instruction is a full barrier). CPython
has no fence of its own; the call goes through ctypes without releasing the GIL. About
90 ns.

On weakly ordered CPUs (arm64, ppc64, riscv) this is NOT enough: (1) needs a
store-release of the index (``stlr`` / ``dmb ish`` before the store), (2) and (3) a
load-acquire of the peer index (``ldar`` / ``dmb ishld`` after the load); CPython exposes
neither, so a tiny C helper doing ``__atomic_store_n(p, v, __ATOMIC_RELEASE)`` /
``__atomic_load_n(p, __ATOMIC_ACQUIRE)`` would be needed (the fence is already the
portable one). We warn once on such
machines. The endpoints are single-producer/single-consumer and not thread-safe: a
multi-threaded client must serialize use of each ring end.
"""

from __future__ import annotations

import fcntl
import functools
import mmap
import os
import platform
import select
import socket
import ctypes
import ctypes.util
import struct
import sys
import time
import warnings
from array import array
from collections import namedtuple
from dataclasses import dataclass

__all__ = [
    "MAGIC", "VERSION", "ShmError", "ShmCorrupt", "ShmVersionError", "Layout", "Region",
    "Slot", "SlotControl", "ByteProducer", "ByteConsumer", "RecordProducer",
    "RecordConsumer", "Record", "Doorbell", "fence", "wait_ready", "send_fds", "recv_fds",
]

# --- identity ----------------------------------------------------------------------------
MAGIC = b"FPD-SHM\x00"
VERSION = 3                 # 2: slot control carries the connection's addresses;
                            # 3: command OP_SETOPT

_MADV_REMOVE = getattr(mmap, "MADV_REMOVE", 9)
PAGE = 4096                 # layout alignment (fixed, so the layout is machine-independent)
LINE = 64                   # cache line: each shared word group owns one
M64 = (1 << 64) - 1
U32 = 0xFFFFFFFF
NO_SLOT = 0xFFFFFFFF        # record not about one slot (region-wide)

MAX_SLOTS = 1 << 18           # 262,144 connections per region (slot numbers are u32)
MIN_RING, MAX_RING = 64, 1 << 30
MIN_RECORDS, MAX_RECORDS = 2, 1 << 20

# --- C layouts (host byte order, standard sizes, no implicit padding) -------------------
# struct fpd_shm_header {              /* at 0, 128 bytes, written once by the daemon */
#     char magic[8];                   /*   0  "FPD-SHM\0" */
#     u16  version;                    /*   8  VERSION */
#     u16  header_size;                /*  10  128 */
#     u32  flags;                      /*  12  0, reserved */
#     u64  region_size;                /*  16  bytes mapped (== memfd size) */
#     u64  generation;                 /*  24  daemon-chosen id of this region */
#     u32  nslots;                     /*  32  connection slots */
#     u32  rx_size;                    /*  36  RX ring bytes per slot, power of two */
#     u32  tx_size;                    /*  40  TX ring bytes per slot, power of two */
#     u32  ev_entries;                 /*  44  event ring records, power of two */
#     u32  cmd_entries;                /*  48  command ring records, power of two */
#     u16  record_size;                /*  52  16 */
#     u16  slot_ctl_size;              /*  54  384 */
#     u64  ev_hdr_off, cmd_hdr_off;    /*  56, 64 */
#     u64  ev_off, cmd_off;            /*  72, 80 */
#     u64  ctl_off, data_off;          /*  88, 96 */
#     u64  data_stride;                /* 104  rx_size + tx_size */
#     u8   reserved[16];               /* 112  zero */
# };
HEADER = struct.Struct("=8sHHIQQIIIIIHHQQQQQQQ16x")
HeaderFields = namedtuple("HeaderFields", (
    "magic version header_size flags region_size generation nslots rx_size tx_size "
    "ev_entries cmd_entries record_size slot_ctl_size ev_hdr_off cmd_hdr_off ev_off "
    "cmd_off ctl_off data_off data_stride"))

# struct fpd_ring_hdr {                /* 128 bytes */
#     /* +0  producer line */
#     u64 prod; u32 prod_flags; u32 prod_wait; u64 prod_wake_at; u8 pad[40];
#     /* +64 consumer line */
#     u64 cons; u32 cons_flags; u32 cons_wait; u64 cons_wake_at; u8 pad[40];
# };
RING_HDR = struct.Struct("=QIIQ40xQIIQ40x")
RingFields = namedtuple("RingFields", "prod prod_flags prod_wait prod_wake_at "
                                      "cons cons_flags cons_wait cons_wake_at")
PROD_LINE, CONS_LINE = 0, 64            # line offsets inside a ring header
# flags (offset 8) and wait (offset 12) read and written together as one u64 word
_FLAGS_SHIFT, _WAIT_SHIFT = (0, 32) if sys.byteorder == "little" else (32, 0)
W_INDEX, W_FLAGS, W_WAIT, W_WAKE_AT = 0, 8, 12, 16     # word offsets inside a line
HALF64 = 1 << 63

RING_EOF = 1 << 0            # prod_flags: the producer will write nothing after prod
RING_CLOSED = 1 << 0         # cons_flags: the consumer reads no more (data is discarded)
PROD_FLAGS_KNOWN = RING_EOF
CONS_FLAGS_KNOWN = RING_CLOSED

# struct fpd_record { u32 slot; u16 kind; u16 gen; u64 arg; };     /* 16 bytes */
RECORD = struct.Struct("=IHHQ")
Record = namedtuple("Record", "slot kind gen arg")

# struct fpd_slot_ctl {                 /* 128 bytes */
#     u32 state; u32 gen; i32 error; u32 dflags;                  /* +0  daemon line */
#     u8 laddr[4]; u16 lport; u8 raddr[4]; u16 rport; u8 pad[36];  /* +16 (network order
#                                        addresses and ports, set before the slot is announced) */
#     u32 c_flags; u32 c_gen; u8 pad[56];                          /* +64 client line */
# };
SLOT_CTL = struct.Struct("=IIiI4sH4sH36xII56x")
SlotCtlFields = namedtuple("SlotCtlFields", "state gen error dflags laddr lport raddr "
                                            "rport c_flags c_gen")
CTL_DAEMON = struct.Struct("=IIiI")     # +0
CTL_ADDRS = struct.Struct("!4sH4sH")    # +16 (network order)
CTL_ADDRS_OFF = 16
CTL_CLIENT = struct.Struct("=II")       # +64
CTL_CLIENT_OFF = 64

# per slot in the control table: slot control | RX ring header | TX ring header
SLOT_CTL_SIZE = SLOT_CTL.size + 2 * RING_HDR.size
SLOT_RX_HDR = SLOT_CTL.size
SLOT_TX_HDR = SLOT_CTL.size + RING_HDR.size

assert HEADER.size == 128 and RING_HDR.size == 128 and SLOT_CTL.size == 128
assert RECORD.size == 16 and SLOT_CTL_SIZE == 384

# --- vocabulary shared by daemon and client (extend with a VERSION bump) ----------------
# slot states (daemon line)
S_FREE, S_CONNECTING, S_ESTABLISHED, S_CLOSING, S_CLOSED, S_LISTENING = range(6)
STATE_NAMES = ("FREE", "CONNECTING", "ESTABLISHED", "CLOSING", "CLOSED", "LISTENING")
# daemon flags (daemon line, the former "reserved" word)
D_BELL = 1 << 0              # the daemon rings the slot's own doorbell (op "bell")
# client flags (client line)
C_ABORT = 1 << 0             # close with RST (SO_LINGER 0)
C_RELEASED = 1 << 1          # the app will not touch this slot again until re-announced
C_FLAGS_KNOWN = C_ABORT | C_RELEASED
# event kinds (daemon -> app)
EV_READABLE, EV_WRITABLE, EV_CONNECTED, EV_ACCEPTED, EV_CLOSED, EV_SHUTDOWN = range(1, 7)
EVENT_KINDS = frozenset(range(1, 7))
# command ops (app -> daemon)
OP_KICK, OP_SHUTDOWN, OP_CLOSE, OP_ABORT, OP_SETOPT = range(1, 6)
COMMAND_OPS = frozenset(range(1, 6))
# OP_SETOPT's arg: (index in SETOPT_NAMES) << 32 | value (0 or 1)
SETOPT_NAMES = ("nodelay", "keepalive")


# --- errors ------------------------------------------------------------------------------
class ShmError(Exception):
    """Base of this module's errors."""


class ShmVersionError(ShmError):
    """The memory is not an fpd region this library understands (magic, version, layout)."""


class ShmCorrupt(ShmError):
    """The peer wrote something impossible into shared memory.

    ``slot`` is the connection slot (``None`` for the region-wide event/command rings or
    the header), ``ring`` the structure (``"rx"``, ``"tx"``, ``"events"``,
    ``"commands"``, ``"ctl"``), ``what`` a description. The daemon resets that slot
    (drops the client when ``slot is None``); nothing outside the region was touched.
    """

    def __init__(self, slot, ring: str, what: str):
        self.slot = slot
        self.ring = ring
        self.what = what
        where = "region" if slot is None else f"slot {slot}"
        super().__init__(f"fpd shm {where} {ring}: {what}")


# --- fence -------------------------------------------------------------------------------
# The ctypes declaration of libatomic lives here (fpd.shm imports nothing of fpd). PyDLL:
# the call keeps the GIL (it is one instruction, releasing the GIL would cost more).
def _open_libatomic():
    for name in ("libatomic.so.1", ctypes.util.find_library("atomic")):
        if name:
            try:
                return ctypes.PyDLL(name)
            except OSError:
                pass
    raise ImportError("fpd.shm needs GCC's libatomic (Debian: apt-get install libatomic1)")


libatomic = _open_libatomic()
MEMORY_ORDER_SEQ_CST = 5    # <stdatomic.h> enum memory_order

# void atomic_thread_fence(memory_order order);
libatomic.atomic_thread_fence.restype = None
libatomic.atomic_thread_fence.argtypes = None   # on purpose: called with a ready c_int
atomic_thread_fence = libatomic.atomic_thread_fence
_SEQ_CST = ctypes.c_int(MEMORY_ORDER_SEQ_CST)   # (converting an int via argtypes: +200 ns)


# fence(): a full memory barrier, atomic_thread_fence(memory_order_seq_cst). Never blocks
# (safe in a signal handler and from any thread). A partial, not a def: no Python frame.
fence = functools.partial(atomic_thread_fence, _SEQ_CST)


_weak_warned = False


def _warn_weak_ordering() -> None:
    global _weak_warned
    if not _weak_warned:
        _weak_warned = True
        if platform.machine() not in ("x86_64", "AMD64", "i686", "i386"):
            warnings.warn(f"fpd.shm: rings without acquire/release barriers on "
                          f"{platform.machine()}; correct only on x86 (TSO). See fpd/shm.py.",
                          RuntimeWarning, stacklevel=3)


# --- layout ------------------------------------------------------------------------------
def _pow2(n) -> bool:
    return isinstance(n, int) and n > 0 and not n & (n - 1)


def _up(n: int, a: int = PAGE) -> int:
    return (n + a - 1) & ~(a - 1)


@dataclass(frozen=True)
class Layout:
    """Geometry of one region; every offset is derived from these five numbers."""

    nslots: int = 64
    rx_size: int = 256 * 1024
    tx_size: int = 256 * 1024
    ev_entries: int = 4096
    cmd_entries: int = 4096

    def __post_init__(self):
        if not (isinstance(self.nslots, int) and 1 <= self.nslots <= MAX_SLOTS):
            raise ValueError(f"nslots must be 1..{MAX_SLOTS}, not {self.nslots!r}")
        for name in ("rx_size", "tx_size"):
            v = getattr(self, name)
            if not (_pow2(v) and MIN_RING <= v <= MAX_RING):
                raise ValueError(f"{name} must be a power of two in "
                                 f"{MIN_RING}..{MAX_RING}, not {v!r}")
        for name in ("ev_entries", "cmd_entries"):
            v = getattr(self, name)
            if not (_pow2(v) and MIN_RECORDS <= v <= MAX_RECORDS):
                raise ValueError(f"{name} must be a power of two in "
                                 f"{MIN_RECORDS}..{MAX_RECORDS}, not {v!r}")

    # offsets (all derived; the header repeats them for tools and for the attach check)
    ev_hdr_off = HEADER.size
    cmd_hdr_off = HEADER.size + RING_HDR.size

    @property
    def ev_off(self) -> int:
        return PAGE

    @property
    def cmd_off(self) -> int:
        return self.ev_off + _up(self.ev_entries * RECORD.size)

    @property
    def ctl_off(self) -> int:
        return self.cmd_off + _up(self.cmd_entries * RECORD.size)

    @property
    def data_off(self) -> int:
        return self.ctl_off + _up(self.nslots * SLOT_CTL_SIZE)

    @property
    def data_stride(self) -> int:
        return self.rx_size + self.tx_size

    @property
    def region_size(self) -> int:
        return _up(self.data_off + self.nslots * self.data_stride)

    def slot_ctl(self, slot: int) -> int:
        return self.ctl_off + slot * SLOT_CTL_SIZE

    def rx_data(self, slot: int) -> int:
        return self.data_off + slot * self.data_stride

    def tx_data(self, slot: int) -> int:
        return self.data_off + slot * self.data_stride + self.rx_size

    def header(self, generation: int) -> HeaderFields:
        return HeaderFields(MAGIC, VERSION, HEADER.size, 0, self.region_size, generation,
                            self.nslots, self.rx_size, self.tx_size, self.ev_entries,
                            self.cmd_entries, RECORD.size, SLOT_CTL_SIZE, self.ev_hdr_off,
                            self.cmd_hdr_off, self.ev_off, self.cmd_off, self.ctl_off,
                            self.data_off, self.data_stride)

    def pack_header(self, generation: int) -> bytes:
        return HEADER.pack(*self.header(generation))

    @classmethod
    def from_header(cls, buf, size: int):
        """Parse and check a header; returns ``(layout, generation)``.

        ``size`` is the real size of the memory (the memfd's). Raises
        :class:`ShmVersionError` with the reason on any mismatch.
        """
        if size < HEADER.size:
            raise ShmVersionError(f"not an fpd shm region: {size} bytes, smaller than "
                                  f"the {HEADER.size}-byte header")
        h = HeaderFields(*HEADER.unpack_from(buf, 0))
        if h.magic != MAGIC:
            raise ShmVersionError(f"not an fpd shm region: magic {h.magic!r}, "
                                  f"expected {MAGIC!r}")
        if h.version != VERSION:
            raise ShmVersionError(f"fpd shm layout version {h.version}, this library "
                                  f"speaks version {VERSION}: daemon and client differ, "
                                  f"upgrade the older one")
        if h.header_size != HEADER.size or h.record_size != RECORD.size \
                or h.slot_ctl_size != SLOT_CTL_SIZE:
            raise ShmVersionError(
                f"fpd shm version {VERSION} with foreign structure sizes (header "
                f"{h.header_size}, record {h.record_size}, slot control {h.slot_ctl_size})")
        try:
            lay = cls(h.nslots, h.rx_size, h.tx_size, h.ev_entries, h.cmd_entries)
        except ValueError as e:
            raise ShmVersionError(f"fpd shm header has an invalid geometry: {e}") from None
        want = lay.header(h.generation)
        if h != want:
            bad = [f"{f}={getattr(h, f)} (expected {getattr(want, f)})"
                   for f in HeaderFields._fields if getattr(h, f) != getattr(want, f)]
            raise ShmVersionError("fpd shm header inconsistent with its geometry: "
                                  + ", ".join(bad))
        if lay.region_size > size:
            raise ShmVersionError(f"fpd shm region is {size} bytes, its header "
                                  f"describes {lay.region_size}")
        return lay, h.generation


# --- ring ends ---------------------------------------------------------------------------
class _End:
    """One side of a ring: its own line (written, never read back) and the peer's
    line (read and checked). Subclasses: byte/record producer/consumer."""

    # One u64 view of the ring header (two memoryviews per end, not nine: an idle
    # connection's slot costs ~0.8 KB of Python objects per side instead of ~4 KB).
    # Words of a line: [i] index, [i+1] flags (low half) | wait (high half), [i+2] wake_at.
    __slots__ = ("size", "mask", "slot", "ring", "_data", "_h", "_o", "_pos",
                 "_seen", "_flags", "_wseq", "_woken", "_peer_sticky", "_mv", "_doff",
                 "__weakref__")

    PRODUCER = True
    _PD = (CONS_LINE - PROD_LINE) // 8     # words from our line to the peer's
    unit = "bytes"

    def __init__(self, mv: memoryview, hdr: int, data: int, size: int, *, slot, ring: str,
                 start: int | None = None, unit_size: int = 1, hview=None):
        self.size = size
        self.mask = _MASKS.get(size) or _MASKS.setdefault(size, size - 1)   # (one int)
        self.slot = slot
        self.ring = ring
        if hview is None:
            self._h, w = mv[hdr:hdr + RING_HDR.size].cast("Q"), 0
        else:
            # (u64 view of the region's control table, word of this header): every
            # slot's ends on one side share the region's one view (a view of their own
            # was ~0.2 KB per slot and side)
            self._h, w = hview
        # our line's first word; the peer's line is _PD words away (no int of its own:
        # with the region's shared view the word numbers are large ints, 32 B each)
        self._o = w + (PROD_LINE if self.PRODUCER else CONS_LINE) // 8
        self._data = mv[data:data + size * unit_size]
        self._mv, self._doff = mv, data         # (byte rings: see drop_data)
        self._woken = None
        self._peer_sticky = 0
        if start is not None:
            # the side that owns the ring's life (the daemon) starts it: both lines
            self._pos = self._seen = start & M64
            self._flags = self._wseq = 0
            mv[hdr:hdr + RING_HDR.size] = RING_HDR.pack(start & M64, 0, 0, 0,
                                                        start & M64, 0, 0, 0)
        else:
            # attaching to a live ring: adopt our line, check the peer's against it
            h, o = self._h, self._o
            self._pos = h[o]
            self._flags = h[o + 1] >> _FLAGS_SHIFT & U32
            self._wseq = h[o + 1] >> _WAIT_SHIFT & U32
            # the peer's index may legally be anywhere within one ring of ours
            self._seen = (self._pos - size) & M64 if self.PRODUCER else self._pos
            self._refresh()
        _warn_weak_ordering()

    def _corrupt(self, what: str) -> ShmCorrupt:
        return ShmCorrupt(self.slot, self.ring, what)

    def release_views(self) -> None:
        """Drop every view into the mapping (the region calls this on close). A header
        view the region lent (``hview``: one view of the whole control table) is the
        region's to release: this end only lets go of it, and from then on uses a
        released view (ValueError, as with one of its own)."""
        v = getattr(self, "_data", None)
        if v is not None:
            v.release()
        h = getattr(self, "_h", None)
        if h is not None and h is not _RELEASED_Q:
            if h.nbytes == RING_HDR.size:     # our own view of our header
                h.release()
            self._h = _RELEASED_Q
        self._mv = None

    def drop_data(self) -> None:
        """Byte rings: forget the view of the ring's data (~0.2 KB) while the ring is
        idle; the next read or write makes it again. (Views handed out by peek_view
        are their own objects and stay valid.)"""
        if self.unit == "bytes":
            self._data = None

    def _dview(self) -> memoryview:
        d = self._data = self._mv[self._doff:self._doff + self.size]
        return d

    # -- raw words, for diagnostics and tests --------------------------------------------
    @property
    def index(self) -> int:
        """Our own index (the private, authoritative copy)."""
        return self._pos

    # -- need-wakeup ---------------------------------------------------------------------
    def ready(self, want: int = 1) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def _wake_at(self, want: int) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def arm(self, want: int = 1) -> bool:
        """Announce that we are about to sleep on the eventfd until ``want`` units are
        readable (consumer) or free (producer), or EOF/CLOSED.

        Returns ``True`` if it is safe to sleep now (the ring was re-checked after the
        announcement and a fence), ``False`` if there is something to do already (the
        announcement was withdrawn). Call :meth:`disarm` after waking up.
        """
        want = min(max(want, 1), self.size)
        self._h[self._o + 2] = self._wake_at(want)     # stored before the wait word
        self._wseq = w = (self._wseq + 1) & U32 if not self._wseq & 1 else self._wseq
        self._h[self._o + 1] = w << _WAIT_SHIFT | self._flags << _FLAGS_SHIFT
        fence()
        if self.ready(want):
            self.disarm()
            return False
        return True

    def disarm(self) -> None:
        """We are awake: the peer need not ring for us any more."""
        if self._wseq & 1:
            self._wseq = w = (self._wseq + 1) & U32
            self._h[self._o + 1] = w << _WAIT_SHIFT | self._flags << _FLAGS_SHIFT

    @property
    def armed(self) -> bool:
        return bool(self._wseq & 1)

    def wake_needed(self) -> bool:
        """Call after publishing (index or flags): True if the peer sleeps, our index
        reached its ``wake_at`` (or we have set EOF/CLOSED), and it has not been rung
        for this sleep yet -- then ring its eventfd (exactly once per sleep)."""
        fence()
        h, p = self._h, self._o + self._PD
        w = h[p + 1] >> _WAIT_SHIFT & U32
        if w & 1 and w != self._woken:
            # the peer's wake_at was stored before its wait word: loaded after it here
            if self._flags or (self._pos - h[p + 2]) & M64 < HALF64:
                self._woken = w
                return True
        return False

    # -- flags ---------------------------------------------------------------------------
    def _peer_flag(self, known: int, bit: int) -> bool:
        if self._peer_sticky & bit:
            return True
        f = self._h[self._o + self._PD + 1] >> _FLAGS_SHIFT & U32
        if f & ~known:
            raise self._corrupt(f"unknown bits in the peer's flag word: {f:#x}")
        self._peer_sticky |= f
        return bool(f & bit)


class _Producer(_End):
    __slots__ = ()
    PRODUCER = True

    def _refresh(self) -> int:
        """Load and check the consumer's index; returns free space."""
        c = self._h[self._o + self._PD]
        seen = self._seen
        if c != seen:
            # the consumer may only move forward, and not past what we produced
            if (c - seen) & M64 > (self._pos - seen) & M64:
                raise self._corrupt(
                    f"consumer index {c} outside [{seen}, {self._pos}] "
                    f"(moved backwards or past the producer)")
            self._seen = c
        return self.size - ((self._pos - c) & M64)

    def writable(self) -> int:
        """Free space (in units), with a fresh look at the consumer index."""
        return self._refresh()

    def pending(self) -> int:
        """Published and not yet consumed (fresh)."""
        return self.size - self._refresh()

    def peer_closed(self) -> bool:
        """The consumer said it reads no more (sticky)."""
        return self._peer_flag(CONS_FLAGS_KNOWN, RING_CLOSED)

    def ready(self, want: int = 1) -> bool:
        return self._refresh() >= want or self.peer_closed()

    def _wake_at(self, want: int) -> int:
        # ``want`` free <=> the consumer index reached prod + want - size
        return (self._pos + want - self.size) & M64

    def _publish(self, pos: int) -> None:
        self._pos = pos
        self._h[self._o] = pos

    def shutdown(self) -> None:
        """No more data after what was published (the ring's EOF). Then check
        :meth:`wake_needed`."""
        self._flags |= RING_EOF
        self._h[self._o + 1] = self._wseq << _WAIT_SHIFT | self._flags << _FLAGS_SHIFT

    @property
    def is_shut(self) -> bool:
        return bool(self._flags & RING_EOF)


class _Consumer(_End):
    __slots__ = ()
    PRODUCER = False
    _PD = (PROD_LINE - CONS_LINE) // 8

    def _refresh(self) -> int:
        """Load and check the producer's index; returns what is readable."""
        p = self._h[self._o + self._PD]
        seen = self._seen
        if p != seen:
            # the producer may only move forward, by at most the free space
            if (p - seen) & M64 > self.size - ((seen - self._pos) & M64):
                raise self._corrupt(
                    f"producer index {p} moved from {seen} beyond the ring "
                    f"(consumer at {self._pos}, capacity {self.size} {self.unit})")
            if self._peer_sticky & RING_EOF:
                raise self._corrupt(f"producer index moved from {seen} to {p} after EOF")
            self._seen = p
        return (p - self._pos) & M64

    def readable(self) -> int:
        """Published and not yet consumed (fresh)."""
        return self._refresh()

    def _peer_eof(self) -> bool:
        if self._peer_sticky & RING_EOF:
            return True
        f = self._h[self._o + self._PD + 1] >> _FLAGS_SHIFT & U32
        if f & ~PROD_FLAGS_KNOWN:
            raise self._corrupt(f"unknown bits in the producer's flag word: {f:#x}")
        if f & RING_EOF:
            # the producer stored its index before the flag (TSO keeps that order, and
            # our loads stay in order): this refresh sees the final index
            self._refresh()
            self._peer_sticky |= RING_EOF
            return True
        return False

    def at_eof(self) -> bool:
        """The producer shut down and everything it wrote has been consumed."""
        return self._peer_eof() and self._pos == self._seen

    def ready(self, want: int = 1) -> bool:
        return self._refresh() >= want or self._peer_eof()

    def _wake_at(self, want: int) -> int:
        # ``want`` readable <=> the producer index reached cons + want
        return (self._pos + want) & M64

    def close(self) -> None:
        """We read no more (sets CLOSED); then check :meth:`wake_needed`."""
        self._flags |= RING_CLOSED
        self._h[self._o + 1] = self._wseq << _WAIT_SHIFT | self._flags << _FLAGS_SHIFT

    def _release(self, pos: int) -> None:
        self._pos = pos
        self._h[self._o] = pos


class ByteProducer(_Producer):
    """Writing end of a byte ring (daemon: RX; client: TX)."""

    __slots__ = ()

    def write(self, data) -> int:
        """Copy as much of ``data`` as fits; returns the byte count (0 when full)."""
        if type(data) is not bytes:
            data = memoryview(data).cast("B")
        n = len(data)
        if not n:
            return 0
        pos = self._pos
        free = self.size - ((pos - self._seen) & M64)
        if free < n:
            free = self._refresh()
            if free < n:
                if not free:
                    return 0
                n = free
                data = memoryview(data)[:n]
        i = pos & self.mask
        e = i + n
        d = self._data
        if d is None:
            d = self._dview()
        if e <= self.size:
            d[i:e] = data
        else:
            f = self.size - i
            mv = memoryview(data)
            d[i:] = mv[:f]
            d[:n - f] = mv[f:]
        self._publish((pos + n) & M64)
        return n

    def write_parts(self, parts) -> int:
        """Write buffers in order (writev); stops at the first that does not fit
        whole, writing its head. One index store for all. Returns bytes written."""
        pos = start = self._pos
        free = self._refresh()
        d = self._data
        if d is None:
            d = self._dview()
        size = self.size
        mask = self.mask
        for data in parts:
            if not free:
                break
            mv = memoryview(data).cast("B")
            n = len(mv)
            if n > free:
                n = free
                mv = mv[:n]
            i = pos & mask
            e = i + n
            if e <= size:
                d[i:e] = mv
            else:
                f = size - i
                d[i:] = mv[:f]
                d[:n - f] = mv[f:]
            pos = (pos + n) & M64
            free -= n
        if pos != start:
            self._publish(pos)
        return (pos - start) & M64

    def write_with(self, fill) -> int:
        """Let ``fill(data, at, free)`` write up to ``free`` bytes into the ring's data
        (``data``, a writable view of all of it) from index ``at``, wrapping at its end,
        and return how many it wrote; those are published. Returns that count (0 with
        no room: ``fill`` is not called). The daemon's direct delivery of received
        payloads (fpd.fastpath._rx_direct), one copy from the segments into the ring."""
        free = self._refresh()
        if not free:
            return 0
        d = self._data
        if d is None:
            d = self._dview()
        n = fill(d, self._pos & self.mask, free)
        if n < 0 or n > free:
            raise ValueError(f"write_with: fill wrote {n} bytes, {free} were free")
        if n:
            self._publish((self._pos + n) & M64)
        return n


class ByteConsumer(_Consumer):
    """Reading end of a byte ring (daemon: TX; client: RX)."""

    __slots__ = ()

    def _take(self, n: int) -> int:
        avail = (self._seen - self._pos) & M64
        if n < 0 or n > avail:
            avail = self._refresh()
            if n < 0 or n > avail:
                n = avail
        return n

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all readable if ``n < 0``); ``b""`` when empty."""
        n = self._take(n)
        if not n:
            return b""
        pos = self._pos
        i = pos & self.mask
        e = i + n
        d = self._data
        if d is None:
            d = self._dview()
        if e <= self.size:
            out = d[i:e].tobytes()
        else:
            f = self.size - i
            out = d[i:].tobytes() + d[:n - f].tobytes()
        self._release((pos + n) & M64)
        return out

    def read_into(self, buf) -> int:
        """Copy up to ``len(buf)`` bytes into ``buf``; returns the count."""
        b = memoryview(buf).cast("B")
        n = self._take(len(b))
        if not n:
            return 0
        pos = self._pos
        i = pos & self.mask
        e = i + n
        d = self._data
        if d is None:
            d = self._dview()
        if e <= self.size:
            b[:n] = d[i:e]
        else:
            f = self.size - i
            b[:f] = d[i:]
            b[f:n] = d[:n - f]
        self._release((pos + n) & M64)
        return n

    def peek_view(self, n: int = -1):
        """Zero-copy: read-only views of up to ``n`` readable bytes, ``(first, second)``;
        ``second`` is non-empty only when the data wraps. Nothing is consumed until
        :meth:`release`; after that the producer may overwrite what the views show."""
        n = self._take(n)
        i = self._pos & self.mask
        e = i + n
        d = self._data
        if d is None:
            d = self._dview()
        if e <= self.size:
            return d[i:e].toreadonly(), d[0:0].toreadonly()
        return d[i:].toreadonly(), d[:e - self.size].toreadonly()

    def release(self, n: int) -> None:
        """Consume ``n`` bytes already seen as readable (after :meth:`peek_view`)."""
        if n < 0 or n > (self._seen - self._pos) & M64:
            raise ValueError(f"release({n}) beyond the {(self._seen - self._pos) & M64} "
                             f"bytes known readable")
        if n:
            self._release((self._pos + n) & M64)

    def skip(self, n: int = -1) -> int:
        """Consume up to ``n`` bytes without copying them; returns the count."""
        n = self._take(n)
        if n:
            self._release((self._pos + n) & M64)
        return n


class RecordProducer(_Producer):
    """Writing end of a record ring (daemon: events; client: commands)."""

    __slots__ = ()
    unit = "records"

    def __init__(self, mv, hdr, data, size, **kw):
        super().__init__(mv, hdr, data, size, unit_size=RECORD.size, **kw)

    def put(self, slot: int, kind: int, arg: int = 0, gen: int = 0) -> bool:
        """Append one record; False if the ring is full."""
        pos = self._pos
        if (pos - self._seen) & M64 >= self.size and not self._refresh():
            return False
        RECORD.pack_into(self._data, (pos & self.mask) * RECORD.size,
                         slot, kind, gen & 0xFFFF, arg & M64)
        self._publish((pos + 1) & M64)
        return True

    def put_many(self, records) -> int:
        """Append ``(slot, kind, arg, gen)`` tuples (``gen``/``arg`` optional) while
        they fit; one index store. Returns how many were written."""
        pos = start = self._pos
        free = self._refresh()
        d = self._data
        mask = self.mask
        pack = RECORD.pack_into
        for r in records:
            if not free:
                break
            slot, kind, *rest = r
            arg = rest[0] if rest else 0
            gen = rest[1] if len(rest) > 1 else 0
            pack(d, (pos & mask) * RECORD.size, slot, kind, gen & 0xFFFF, arg & M64)
            pos = (pos + 1) & M64
            free -= 1
        if pos != start:
            self._publish(pos)
        return (pos - start) & M64


class RecordConsumer(_Consumer):
    """Reading end of a record ring (daemon: commands; client: events).

    Each record is copied once and the copy validated: ``slot < nslots`` or
    ``NO_SLOT``, ``kind`` in ``kinds``; otherwise :class:`ShmCorrupt`."""

    __slots__ = ("nslots", "kinds")
    unit = "records"

    def __init__(self, mv, hdr, data, size, *, nslots: int, kinds, **kw):
        self.nslots = nslots
        self.kinds = frozenset(kinds)
        super().__init__(mv, hdr, data, size, unit_size=RECORD.size, **kw)

    def _check(self, rec: tuple, idx: int) -> Record:
        slot, kind, gen, arg = rec
        if slot >= self.nslots and slot != NO_SLOT:
            raise self._corrupt(f"record {idx}: slot {slot} out of range "
                                f"(region has {self.nslots})")
        if kind not in self.kinds:
            raise self._corrupt(f"record {idx}: unknown kind {kind}")
        return Record(slot, kind, gen, arg)

    def get(self):
        """The next record, or ``None`` when empty."""
        pos = self._pos
        if pos == self._seen and not self._refresh():
            return None
        rec = self._check(RECORD.unpack_from(self._data, (pos & self.mask) * RECORD.size),
                          pos)
        self._release((pos + 1) & M64)
        return rec

    def get_many(self, max_records: int = -1) -> list:
        """Up to ``max_records`` records (all available if negative). Validates all of
        them before consuming any: on :class:`ShmCorrupt` nothing is consumed."""
        avail = self._refresh()
        n = avail if max_records < 0 else min(avail, max_records)
        if not n:
            return []
        pos = self._pos
        i = pos & self.mask
        d = self._data
        rs = RECORD.size
        e = i + n
        if e <= self.size:
            raw = d[i * rs:e * rs].tobytes()
        else:
            raw = d[i * rs:].tobytes() + d[:(e - self.size) * rs].tobytes()
        check = self._check
        out = [check(r, (pos + k) & M64) for k, r in enumerate(RECORD.iter_unpack(raw))]
        self._release((pos + n) & M64)
        return out


# --- slot control ------------------------------------------------------------------------
class SlotControl:
    """The control block of one slot: the daemon line (state, gen, error) and the client
    line (flags, gen). Each side writes its own line and checks the other's."""

    __slots__ = ("slot", "daemon", "_mv", "_off", "_state", "_gen", "_error", "_dflags")

    def __init__(self, mv: memoryview, off: int, slot: int, *, daemon: bool,
                 gen: int | None = None):
        self.slot = slot
        self.daemon = daemon
        self._mv = mv
        self._off = off
        self._dflags = 0
        if daemon:
            self._gen = (gen or 0) & U32
            self._state, self._error = S_FREE, 0
            mv[off:off + SLOT_CTL.size] = SLOT_CTL.pack(S_FREE, self._gen, 0, 0, b"\0" * 4, 0,
                                                         b"\0" * 4, 0, 0, 0)
        else:
            self._state = self._gen = self._error = None

    def release_views(self) -> None:
        self._mv = None

    # daemon side
    def set_state(self, state: int, error: int = 0) -> None:
        if not self.daemon:
            raise ShmError("only the daemon sets a slot's state")
        self._state, self._error = state, error
        CTL_DAEMON.pack_into(self._mv, self._off, state, self._gen, error, self._dflags)

    def set_dflags(self, flags: int) -> None:
        """The daemon's flag word (``D_BELL``: the slot's own doorbell is in use)."""
        if not self.daemon:
            raise ShmError("only the daemon sets a slot's flags")
        self._dflags = flags & U32
        CTL_DAEMON.pack_into(self._mv, self._off, self._state, self._gen, self._error,
                             self._dflags)

    def dflags(self) -> int:
        """The daemon's flag word as last written (client side; unknown bits ignored)."""
        return CTL_DAEMON.unpack_from(self._mv, self._off)[3]

    def set_addrs(self, laddr: bytes, lport: int, raddr: bytes, rport: int) -> None:
        """The connection's addresses (4-byte network-order addresses, int ports)."""
        if not self.daemon:
            raise ShmError("only the daemon sets a slot's addresses")
        CTL_ADDRS.pack_into(self._mv, self._off + CTL_ADDRS_OFF, laddr, lport, raddr, rport)

    def addrs(self) -> tuple:
        """``(laddr, lport, raddr, rport)`` as the daemon wrote them (any value is
        well-formed: 4 bytes and a port)."""
        return CTL_ADDRS.unpack_from(self._mv, self._off + CTL_ADDRS_OFF)

    def client(self) -> tuple:
        """``(c_flags, c_gen)`` from the client line, checked (daemon side)."""
        flags, gen = CTL_CLIENT.unpack_from(self._mv, self._off + CTL_CLIENT_OFF)
        if flags & ~C_FLAGS_KNOWN:
            raise ShmCorrupt(self.slot, "ctl", f"unknown client flag bits {flags:#x}")
        return flags, gen

    # client side
    def read(self) -> tuple:
        """``(state, gen, error)`` from the daemon line, checked (client side)."""
        state, gen, error, _ = CTL_DAEMON.unpack_from(self._mv, self._off)
        if state >= len(STATE_NAMES):
            raise ShmCorrupt(self.slot, "ctl", f"unknown slot state {state}")
        return state, gen, error

    def set_client(self, flags: int, gen: int = 0) -> None:
        if self.daemon:
            raise ShmError("the daemon does not write the client line")
        CTL_CLIENT.pack_into(self._mv, self._off + CTL_CLIENT_OFF, flags, gen & U32)

    @property
    def gen(self) -> int:
        return self._gen if self.daemon else self.read()[1]


class Slot:
    """One connection's slot as seen by one side: ``rx``, ``tx`` ring ends and ``ctl``.

    Daemon: ``rx`` is a :class:`ByteProducer`, ``tx`` a :class:`ByteConsumer`.
    Client: ``rx`` is a :class:`ByteConsumer`, ``tx`` a :class:`ByteProducer`."""

    __slots__ = ("index", "rx", "tx", "ctl")

    def __init__(self, index, rx, tx, ctl):
        self.index, self.rx, self.tx, self.ctl = index, rx, tx, ctl

    def release_views(self) -> None:
        self.rx.release_views()
        self.tx.release_views()
        self.ctl.release_views()


_MASKS: dict = {}                                   # ring size -> size - 1, shared
_RELEASED_Q = memoryview(b"\0" * 8).cast("Q")     # what a closed ring end indexes
_RELEASED_Q.release()


# --- the region --------------------------------------------------------------------------
class Region:
    """One client's shared memory, as the daemon (:meth:`create`) or the client
    (:meth:`attach`) sees it. Owns its fd and mapping; :meth:`close` releases both."""

    def __init__(self, fd: int, layout: Layout, generation: int, side: str):
        self.fd = fd
        self.layout = layout
        self.generation = generation
        self.side = side
        self.size = layout.region_size
        self.mm = mmap.mmap(fd, self.size, flags=mmap.MAP_SHARED,
                            prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self.mv = memoryview(self.mm)
        # one u64 view of the whole slot control table, lent to every slot's ring ends
        self.ctlq = self.mv[layout.ctl_off:layout.data_off].cast("Q")
        self._slots: dict[int, Slot] = {}
        self.events = self.commands = None

    # -- construction --------------------------------------------------------------------
    @classmethod
    def create(cls, layout: Layout | None = None, *, generation: int | None = None,
               name: str = "fpd-client") -> "Region":
        """Daemon side: a new sealed memfd holding a fresh region."""
        layout = layout or Layout()
        if generation is None:
            generation = int.from_bytes(os.urandom(8), "little")
        fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, layout.region_size)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                        fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
            self = cls(fd, layout, generation, "daemon")
        except BaseException:
            os.close(fd)
            raise
        lay = layout
        self.mv[0:HEADER.size] = lay.pack_header(generation)
        self.events = RecordProducer(self.mv, lay.ev_hdr_off, lay.ev_off, lay.ev_entries,
                                     slot=None, ring="events", start=0)
        self.commands = RecordConsumer(self.mv, lay.cmd_hdr_off, lay.cmd_off,
                                       lay.cmd_entries, slot=None, ring="commands",
                                       start=0, nslots=lay.nslots, kinds=COMMAND_OPS)
        return self

    @classmethod
    def attach(cls, fd: int, *, require_seals: bool = True) -> "Region":
        """Client side: map a region received from the daemon (takes ownership of
        ``fd``). Raises :class:`ShmVersionError` on a foreign or mismatched region."""
        try:
            size = os.fstat(fd).st_size
            if require_seals:
                seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
                if not seals & fcntl.F_SEAL_SHRINK:
                    raise ShmError("fpd shm region is not sealed against shrinking")
            hdr = os.pread(fd, HEADER.size, 0)
            layout, generation = Layout.from_header(hdr, size)
            self = cls(fd, layout, generation, "client")
        except BaseException:
            os.close(fd)
            raise
        try:
            lay = layout
            self.events = RecordConsumer(self.mv, lay.ev_hdr_off, lay.ev_off,
                                         lay.ev_entries, slot=None, ring="events",
                                         nslots=lay.nslots, kinds=EVENT_KINDS)
            self.commands = RecordProducer(self.mv, lay.cmd_hdr_off, lay.cmd_off,
                                           lay.cmd_entries, slot=None, ring="commands")
        except BaseException:
            self.close()
            raise
        return self

    # -- slots ---------------------------------------------------------------------------
    def _check_slot(self, slot: int) -> None:
        if not (isinstance(slot, int) and 0 <= slot < self.layout.nslots):
            raise ValueError(f"slot {slot!r} out of range 0..{self.layout.nslots - 1}")

    def open_slot(self, slot: int, gen: int = 0, start: int = 0) -> Slot:
        """Daemon side: (re)initialize a slot for a new connection -- control words and
        both ring headers -- and return its ends. Only for a slot the client released
        (or never had): the indices of both sides are reset to ``start``."""
        if self.side != "daemon":
            raise ShmError("open_slot is the daemon's; the client uses slot()")
        self._check_slot(slot)
        self.close_slot(slot)
        lay = self.layout
        base = lay.slot_ctl(slot)
        ctl = SlotControl(self.mv, base, slot, daemon=True, gen=gen)
        hv, w = self.ctlq, (base - lay.ctl_off) // 8
        rx = ByteProducer(self.mv, base + SLOT_RX_HDR, lay.rx_data(slot), lay.rx_size,
                          slot=slot, ring="rx", start=start, hview=(hv, w + SLOT_RX_HDR // 8))
        tx = ByteConsumer(self.mv, base + SLOT_TX_HDR, lay.tx_data(slot), lay.tx_size,
                          slot=slot, ring="tx", start=start, hview=(hv, w + SLOT_TX_HDR // 8))
        s = self._slots[slot] = Slot(slot, rx, tx, ctl)
        return s

    def slot(self, slot: int) -> Slot:
        """Client side: the ends of a slot the daemon announced (cached per slot; call
        :meth:`close_slot` when the connection is gone)."""
        if self.side != "client":
            raise ShmError("slot() is the client's; the daemon uses open_slot()")
        self._check_slot(slot)
        s = self._slots.get(slot)
        if s is None:
            lay = self.layout
            base = lay.slot_ctl(slot)
            ctl = SlotControl(self.mv, base, slot, daemon=False)
            hv, w = self.ctlq, (base - lay.ctl_off) // 8
            rx = ByteConsumer(self.mv, base + SLOT_RX_HDR, lay.rx_data(slot), lay.rx_size,
                              slot=slot, ring="rx", hview=(hv, w + SLOT_RX_HDR // 8))
            tx = ByteProducer(self.mv, base + SLOT_TX_HDR, lay.tx_data(slot), lay.tx_size,
                              slot=slot, ring="tx", hview=(hv, w + SLOT_TX_HDR // 8))
            s = self._slots[slot] = Slot(slot, rx, tx, ctl)
        return s

    def reclaim(self, slot: int, rx: bool = True, tx: bool = False) -> None:
        """Give a slot's ring data pages back to the kernel (``MADV_REMOVE`` punches
        them out of the memfd, for both mappings); the next write faults in a zeroed
        page. Only for data nobody will read: a ring the caller produces and whose
        consumer has taken everything (the daemon's RX ring), or a released slot."""
        self._check_slot(slot)
        lay = self.layout
        if rx and tx:
            off, n = lay.rx_data(slot), lay.data_stride
        elif rx:
            off, n = lay.rx_data(slot), lay.rx_size
        elif tx:
            off, n = lay.tx_data(slot), lay.tx_size
        else:
            return
        try:
            self.mm.madvise(_MADV_REMOVE, off, n)
        except (OSError, ValueError):
            pass                       # (a kernel without it: the pages just stay)

    def close_slot(self, slot: int) -> None:
        """Forget our ends of a slot (their views are released)."""
        s = self._slots.pop(slot, None)
        if s is not None:
            s.release_views()

    # -- teardown ------------------------------------------------------------------------
    def close(self) -> None:
        """Release every view, unmap, close the fd. Views handed out by
        :meth:`ByteConsumer.peek_view` must be released first (else BufferError)."""
        for slot in list(self._slots):
            self.close_slot(slot)
        for end in (self.events, self.commands):
            if end is not None:
                end.release_views()
        self.events = self.commands = None
        if self.ctlq is not None:
            self.ctlq.release()
            self.ctlq = None
        if self.mv is not None:
            self.mv.release()
            self.mv = None
            self.mm.close()
        if self.fd is not None and self.fd >= 0:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --- eventfd doorbell --------------------------------------------------------------------
class Doorbell:
    """An eventfd used as a wake-up line (one per direction per region, typically).

    ``ring()`` costs one ``write`` syscall -- call it only when :meth:`_End.wake_needed`
    says so. ``rings`` and ``waits`` count the syscalls made through this object."""

    __slots__ = ("fd", "rings", "waits", "_poll")

    def __init__(self, fd: int | None = None):
        if fd is None:
            fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        else:
            os.set_blocking(fd, False)
        self.fd = fd
        self.rings = 0
        self.waits = 0
        self._poll = None              # made by the first wait (a bell only rung has none)

    def fileno(self) -> int:
        return self.fd

    def ring(self) -> None:
        self.rings += 1
        os.eventfd_write(self.fd, 1)

    def drain(self) -> bool:
        """Consume pending rings without blocking; True if there were any."""
        try:
            os.eventfd_read(self.fd)
            return True
        except BlockingIOError:
            return False

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until rung (or ``timeout`` seconds); consumes the ring."""
        self.waits += 1
        ms = -1 if timeout is None else max(0, int(timeout * 1000 + 0.999))
        p = self._poll
        if p is None:
            p = self._poll = select.poll()
            p.register(self.fd, select.POLLIN)
        if p.poll(ms):
            return self.drain()
        return False

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def wait_ready(end: _End, bell: Doorbell, timeout: float | None = None,
               spin: int = 0, want: int = 1) -> bool:
    """Reference sleep sequence: block until ``end.ready(want)`` -- ``want`` units
    readable/free (clamped to the ring size), or EOF/CLOSED.

    Spins ``spin`` re-checks first (no syscall), then arms need-wakeup with ``want`` as
    the low-water mark, re-checks, sleeps on ``bell``. Several ends may share one bell;
    a wake-up meant for another just loops. Returns False on timeout."""
    want = min(max(want, 1), end.size)
    for _ in range(spin):
        if end.ready(want):
            return True
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if not end.arm(want):
            return True
        try:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return end.ready(want)
            bell.wait(left)
        finally:
            end.disarm()
        if end.ready(want):
            return True


# --- fd passing --------------------------------------------------------------------------
def send_fds(sock: socket.socket, msg: bytes, fds) -> int:
    """Send ``msg`` (at least one byte) with ``fds`` attached (SCM_RIGHTS)."""
    if not msg:
        raise ValueError("send_fds needs at least one byte of message")
    fds = list(fds)
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array("i", fds))] if fds else []
    return sock.sendmsg([msg], anc)


_MSG_CTRUNC = int(socket.MSG_CTRUNC)       # (an int: & on the enum member costs ~1 µs)


def recv_fds(sock: socket.socket, maxfds: int, bufsize: int = 4096):
    """Receive ``(msg, fds)``; fds are close-on-exec. If more than ``maxfds`` were sent
    (control data truncated) every received fd is closed and OSError raised -- never a
    silent leak or a silently missing fd."""
    msg, anc, flags, _ = sock.recvmsg(bufsize, socket.CMSG_SPACE(maxfds * 4),
                                      socket.MSG_CMSG_CLOEXEC)
    fds = array("i")
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    if flags & _MSG_CTRUNC or len(fds) > maxfds:
        for fd in fds:
            os.close(fd)
        raise OSError(f"recv_fds: control data truncated (more than {maxfds} fds sent)")
    return msg, list(fds)
