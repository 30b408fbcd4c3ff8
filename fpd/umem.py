"""UMEM, the four AF_XDP rings, and a frame allocator that never loses a frame.

Everything here works over *any* writable buffer: the kernel's ring mmaps in production,
a plain ``bytearray`` in unit tests (see :func:`sim_ring`). No syscall is made in this
module except the UMEM ``mmap``; registering it with a socket is done by :mod:`fpd.xsk`.

Ring layout (what ``getsockopt(SOL_XDP, XDP_MMAP_OFFSETS)`` describes)::

    mmap of one ring (MAP_SHARED, at XDP_PGOFF_* of the socket fd)
    +0 .. producer   u32  written by the producer only  (own cache line)
    +? .. consumer   u32  written by the consumer only  (own cache line)
    +? .. flags      u32  XDP_RING_NEED_WAKEUP (bit 0), written by the kernel
    +desc ..         size entries:  u64 addr                    (fill, completion)
                                or  struct xdp_desc {u64 addr;  (rx, tx)
                                                     u32 len; u32 options;}

Indices are free-running u32 counters; slot = index & (size - 1); entries in the ring =
(producer - consumer) mod 2**32. Both sides keep *cached* copies of the other side's index
and read the shared word only when the cached one says there is not enough room/data.

Memory ordering (why plain memoryview stores are enough on x86-64)
------------------------------------------------------------------
The SPSC protocol needs two orderings: the producer's descriptor stores must be visible
before its producer-index store (release), and a consumer must not read descriptors
before it has read the producer index that covers them (acquire); symmetrically for the
consumer index, which hands slots back. From CPython every ring access is a separate C
call (memoryview item get/set) separated by the interpreter's own work, so the C compiler
cannot move one access past another, and they reach the CPU in program order. x86-64 is
TSO: stores are not reordered with stores, loads are not reordered with loads, and a load
is not reordered with a later store. That is exactly acquire on every load and release on
every store, which is what libxdp gets on x86 with compiler-only barriers.

The one reordering TSO does allow is a store followed by a load of a *different* location
(store buffer). It touches the need_wakeup check: we store the producer index, then load
the ring's flags. libxdp has no full fence there either; the kernel closes that window
itself (in copy mode the TX flag is simply always set, and zero-copy drivers re-check the
ring after setting the flag).

On weakly ordered CPUs (arm64, ppc64, riscv) this module is NOT correct as written: it
would need a load-acquire of the producer index before reading descriptors (``dmb ishld``
on arm64), a store-release of producer/consumer indices after writing/reading descriptors
(``dmb ish`` / ``stlr``), and CPython exposes no barrier. A tiny C helper (or cffi) doing
``__atomic_load_n(p, __ATOMIC_ACQUIRE)`` / ``__atomic_store_n(p, v, __ATOMIC_RELEASE)``
would be the fix. We warn once when a kernel-backed ring is made on such a machine.

Frame accounting
----------------
A frame is identified by its chunk base address (``addr & ~(chunk_size - 1)``; aligned
mode). At any moment every frame is in exactly one place:

    FREE   the allocator's free list (a Python list used as a stack)
    APP    held by the application (received and not yet recycled, or allocated for TX)
    KRX    given to the kernel's receive side: in the fill ring, in the kernel's buffer
           pool, or in the RX ring not yet consumed
    KTX    given to the kernel's transmit side: in the TX ring, being sent, or in the
           completion ring not yet reaped

Transitions: alloc FREE->APP, free APP->FREE, fill FREE->KRX, recycle APP->KRX (or FREE
when the fill target is met), rx KRX->APP, tx APP->KTX, complete KTX->FREE. With
``check=True`` each frame's place is recorded in a bytearray and every transition asserts
its source place (a lost or doubled frame raises :class:`FrameError` at the first wrong
move, naming the frame); :meth:`FrameAllocator.audit` recounts everything.
"""

from __future__ import annotations

import mmap
import platform
import struct
import warnings
from array import array

# --- constants from linux/if_xdp.h -----------------------------------------------------
SOL_XDP = 283
AF_XDP = 44

XDP_MMAP_OFFSETS = 1
XDP_RX_RING = 2
XDP_TX_RING = 3
XDP_UMEM_REG = 4
XDP_UMEM_FILL_RING = 5
XDP_UMEM_COMPLETION_RING = 6
XDP_STATISTICS = 7
XDP_OPTIONS = 8

XDP_PGOFF_RX_RING = 0
XDP_PGOFF_TX_RING = 0x80000000
XDP_UMEM_PGOFF_FILL_RING = 0x100000000
XDP_UMEM_PGOFF_COMPLETION_RING = 0x180000000

XDP_RING_NEED_WAKEUP = 1 << 0
#: xdp_desc.options: more buffers of this packet follow (multi-buffer, XDP_USE_SG)
XDP_PKT_CONTD = 1 << 0
XDP_PACKET_HEADROOM = 256          # reserved by the kernel in front of received data

U32 = 0xFFFFFFFF

# struct xdp_umem_reg {u64 addr; u64 len; u32 chunk_size; u32 headroom; u32 flags;
#                      u32 tx_metadata_len;}                       (32 bytes, kernel >= 6.8;
# the same size as the older "v2" without tx_metadata_len, whose padding is now that field)
UMEM_REG = struct.Struct("=QQIIII")
# struct xdp_ring_offset {u64 producer; u64 consumer; u64 desc; u64 flags;} x4: rx, tx, fr, cr
RING_OFFSET = struct.Struct("=QQQQ")
MMAP_OFFSETS = struct.Struct("=" + "QQQQ" * 4)

#: chunk sizes the kernel accepts for an aligned UMEM
CHUNK_SIZES = (2048, 4096)
DEFAULT_CHUNK = 2048
DEFAULT_FRAMES = 4096               # 4096 x 2 KiB = 8 MiB, RLIMIT_MEMLOCK's default

FREE, APP, KRX, KTX = 0, 1, 2, 3
PLACE_NAMES = ("FREE", "APP", "KRX", "KTX")

_weak_warned = False


def _warn_weak_ordering() -> None:
    global _weak_warned
    if _weak_warned:
        return
    _weak_warned = True
    if platform.machine() not in ("x86_64", "AMD64", "i686", "i386"):
        warnings.warn(f"fpd.umem: AF_XDP rings driven without memory barriers on "
                      f"{platform.machine()}; correct only on x86 (TSO). See fpd/umem.py.",
                      RuntimeWarning, stacklevel=3)


class RingError(RuntimeError):
    """Misuse of a ring (submitting more than was reserved, releasing more than peeked)."""


class FrameError(AssertionError):
    """A frame was lost, doubled, or moved from a place it was not in (check mode)."""


# --- rings -----------------------------------------------------------------------------
class _Ring:
    """One SPSC ring over a buffer. ``words`` is 1 for u64-address rings (fill,
    completion) and 2 for ``struct xdp_desc`` rings (rx, tx)."""

    __slots__ = ("size", "mask", "words", "_mv", "_p", "_c", "_f", "_d", "__weakref__")

    def __init__(self, buf, size: int, producer: int, consumer: int, flags: int,
                 desc: int, words: int):
        if size <= 0 or size & (size - 1):
            raise ValueError(f"ring size must be a power of two, not {size}")
        if words not in (1, 2):
            raise ValueError("words must be 1 (addr ring) or 2 (desc ring)")
        self.size = size
        self.mask = size - 1
        self.words = words
        mv = memoryview(buf)
        if mv.readonly:
            raise ValueError("ring buffer must be writable")
        if len(mv) < desc + size * 8 * words:
            raise ValueError("ring buffer too small for its descriptors")
        self._mv = mv = mv.cast("B")
        self._p = mv[producer:producer + 4].cast("I")
        self._c = mv[consumer:consumer + 4].cast("I")
        self._f = mv[flags:flags + 4].cast("I")
        self._d = mv[desc:desc + size * 8 * words].cast("Q")

    # raw shared words (for tests and diagnostics)
    @property
    def producer(self) -> int:
        return self._p[0]

    @property
    def consumer(self) -> int:
        return self._c[0]

    @property
    def flags(self) -> int:
        return self._f[0]

    def needs_wakeup(self) -> bool:
        """XDP_RING_NEED_WAKEUP set by the kernel: one u32 load, no syscall."""
        return bool(self._f[0] & XDP_RING_NEED_WAKEUP)

    def close(self) -> None:
        """Release every view of the buffer (so that its mmap can be closed)."""
        for name in ("_d", "_f", "_c", "_p", "_mv"):
            v = getattr(self, name, None)
            if v is not None:
                v.release()

    # -- descriptor access by index (zero-alloc, for callers that want it) --------------
    def addr_at(self, idx: int) -> int:
        return self._d[(idx & self.mask) * self.words]

    def len_at(self, idx: int) -> int:
        return self._d[(idx & self.mask) * 2 + 1] & U32

    def _read_flat(self, start: int, n: int) -> list:
        """``n`` entries from index ``start`` as a flat list of u64 words."""
        w = self.words
        i = start & self.mask
        d = self._d
        if i + n <= self.size:
            return d[i * w:(i + n) * w].tolist()
        first = self.size - i
        return d[i * w:].tolist() + d[:(n - first) * w].tolist()

    def _write_flat(self, start: int, words) -> None:
        """Write u64 ``words`` (an ``array('Q')``) from slot ``start`` on, wrapping."""
        w = self.words
        i = (start & self.mask) * w
        d = self._d
        n = len(words)
        end = i + n
        if end <= len(d):
            d[i:end] = words
        else:
            first = len(d) - i
            d[i:] = words[:first]
            d[:n - first] = words[first:]


class ProducerRing(_Ring):
    """Our side produces (fill and TX rings; the kernel's RX and completion in tests).

    Batch protocol::

        k = ring.reserve(n)          # 0..n slots, the shared consumer read only if needed
        ring.write_addrs(addrs[:k])  # or write_descs(addrs, lens); sequential in the span
        ring.submit(k)               # one store of the producer index
    """

    __slots__ = ("cached_prod", "cached_cons", "published", "_w")

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        p = self._p[0]
        self.cached_prod = p        # end of what we reserved
        self.published = p          # what the other side can see
        self.cached_cons = self._c[0]
        self._w = p                 # write cursor inside the reserved span

    def free_slots(self) -> int:
        """Free slots, refreshing the cached consumer index (one shared load)."""
        self.cached_cons = self._c[0]
        return self.size - ((self.cached_prod - self.cached_cons) & U32)

    def reserve(self, n: int) -> int:
        cp = self.cached_prod
        free = self.size - ((cp - self.cached_cons) & U32)
        if free < n:
            self.cached_cons = self._c[0]
            free = self.size - ((cp - self.cached_cons) & U32)
        if n > free:
            n = free
        self.cached_prod = (cp + n) & U32
        return n

    def write_addrs(self, addrs) -> None:
        """Write u64 addresses into the reserved span (fill/completion rings)."""
        n = len(addrs)
        if self.words != 1:
            raise RingError("write_addrs on a descriptor ring")
        if n > ((self.cached_prod - self._w) & U32):
            raise RingError(f"writing {n} entries, fewer were reserved")
        if n == 1:
            self._d[self._w & self.mask] = addrs[0]
        elif n:
            self._write_flat(self._w, addrs if isinstance(addrs, array) else array("Q", addrs))
        self._w = (self._w + n) & U32

    def write_descs(self, addrs, lens) -> None:
        """Write ``struct xdp_desc`` entries (options = 0) into the reserved span."""
        n = len(addrs)
        if self.words != 2:
            raise RingError("write_descs on an address ring")
        if n != len(lens):
            raise ValueError("addrs and lens differ in length")
        if n > ((self.cached_prod - self._w) & U32):
            raise RingError(f"writing {n} entries, fewer were reserved")
        d = self._d
        m = self.mask
        w = self._w
        if n <= 4:
            for a, ln in zip(addrs, lens):
                i = (w & m) * 2
                d[i] = a
                d[i + 1] = ln
                w += 1
        else:
            flat = array("Q", bytes(16 * n))
            flat[0::2] = array("Q", addrs)
            flat[1::2] = array("Q", lens)
            self._write_flat(w, flat)
            w += n
        self._w = w & U32

    def write_desc(self, addr: int, length: int) -> None:
        """One descriptor (zero-alloc path)."""
        if self._w == self.cached_prod:
            raise RingError("writing past the reserved span")
        i = (self._w & self.mask) * self.words
        self._d[i] = addr
        if self.words == 2:
            self._d[i + 1] = length
        self._w = (self._w + 1) & U32

    def submit(self, n: int) -> None:
        """Publish ``n`` reserved-and-written entries (one u32 store)."""
        if n > ((self._w - self.published) & U32):
            raise RingError(f"submit({n}) but only {(self._w - self.published) & U32} written")
        self.published = p = (self.published + n) & U32
        self._p[0] = p

    def pending(self) -> int:
        """Entries published and not yet consumed by the other side (refreshes)."""
        return (self.published - self._c[0]) & U32


class ConsumerRing(_Ring):
    """Our side consumes (RX and completion rings; the kernel's fill and TX in tests).

    Batch protocol::

        k = ring.peek(max)           # 0..max entries, shared producer read only if needed
        addrs = ring.read_addrs(k)   # or read_descs(k) / read_flat(k)
        ring.release(k)              # one store of the consumer index
    """

    __slots__ = ("cached_prod", "cached_cons", "released", "_r")

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        c = self._c[0]
        self.cached_cons = c        # end of what we peeked
        self.released = c           # what the other side can see
        self.cached_prod = self._p[0]
        self._r = c                 # read cursor inside the peeked span

    def available(self) -> int:
        """Entries ready, refreshing the cached producer index (one shared load)."""
        self.cached_prod = self._p[0]
        return (self.cached_prod - self.cached_cons) & U32

    def peek(self, max_n: int) -> int:
        cc = self.cached_cons
        avail = (self.cached_prod - cc) & U32
        if avail < max_n:
            self.cached_prod = self._p[0]
            avail = (self.cached_prod - cc) & U32
        if max_n > avail:
            max_n = avail
        self.cached_cons = (cc + max_n) & U32
        return max_n

    def _take(self, n: int) -> int:
        if n > ((self.cached_cons - self._r) & U32):
            raise RingError(f"reading {n} entries, fewer were peeked")
        r = self._r
        self._r = (r + n) & U32
        return r

    def read_addrs(self, n: int) -> list:
        """``n`` u64 addresses from the peeked span (fill/completion rings)."""
        if self.words != 1:
            raise RingError("read_addrs on a descriptor ring")
        if not n:
            return []
        return self._read_flat(self._take(n), n)

    def read_flat(self, n: int) -> list:
        """``n`` descriptors as a flat list ``[addr0, lenopt0, addr1, lenopt1, ...]``
        (``lenopt`` = len | options << 32): the cheapest read for desc rings."""
        if not n:
            return []
        return self._read_flat(self._take(n), n)

    def read_descs(self, n: int):
        """``n`` descriptors as two lists (addrs, lens); options must be 0."""
        if self.words != 2:
            raise RingError("read_descs on an address ring")
        flat = self.read_flat(n)
        if not flat:
            return [], []
        lens = flat[1::2]
        if max(lens) > U32:       # options set (multi-buffer): we never ask for that
            lens = [x & U32 for x in lens]
        return flat[0::2], lens

    def release(self, n: int) -> None:
        """Hand ``n`` read entries back to the producer (one u32 store)."""
        if n > ((self._r - self.released) & U32):
            raise RingError(f"release({n}) but only {(self._r - self.released) & U32} read")
        self.released = c = (self.released + n) & U32
        self._c[0] = c


# --- simulated rings (unit tests, no kernel) --------------------------------------------
#: offsets of the simulated layout: those kernel 6.18 reports on x86-64
SIM_PRODUCER, SIM_CONSUMER, SIM_FLAGS, SIM_DESC = 0, 128, 196, 320


def sim_ring(size: int, words: int, start: int = 0):
    """A ring over a ``bytearray``: returns ``(buf, user_view_kwargs)``.

    ``start`` presets both indices (e.g. near 2**32 to test wraparound). Build the two
    sides with ``ProducerRing(buf, **kw)`` / ``ConsumerRing(buf, **kw)``.
    """
    buf = bytearray(SIM_DESC + size * 8 * words)
    struct.pack_into("=I", buf, SIM_PRODUCER, start & U32)
    struct.pack_into("=I", buf, SIM_CONSUMER, start & U32)
    kw = dict(size=size, producer=SIM_PRODUCER, consumer=SIM_CONSUMER, flags=SIM_FLAGS,
              desc=SIM_DESC, words=words)
    return buf, kw


def sim_pair(size: int, words: int, start: int = 0, user_produces: bool = True):
    """Both sides of a simulated ring: ``(user_side, kernel_side, buf)``."""
    buf, kw = sim_ring(size, words, start)
    if user_produces:
        return ProducerRing(buf, **kw), ConsumerRing(buf, **kw), buf
    return ConsumerRing(buf, **kw), ProducerRing(buf, **kw), buf


# --- frame allocator -------------------------------------------------------------------
class FrameAllocator:
    """Frame addresses of one UMEM: a free stack plus, in check mode, each frame's place.

    The fast path is list ``pop``/``extend``; with ``check=True`` every move is verified
    against a per-frame place byte (O(1) per frame) and :meth:`audit` recounts.
    """

    __slots__ = ("nframes", "chunk_size", "shift", "base_mask", "free", "check", "place",
                 "counts")

    def __init__(self, nframes: int, chunk_size: int = DEFAULT_CHUNK, check: bool = False):
        if chunk_size & (chunk_size - 1):
            raise ValueError("chunk size must be a power of two")
        self.nframes = nframes
        self.chunk_size = chunk_size
        self.shift = chunk_size.bit_length() - 1
        self.base_mask = ~(chunk_size - 1)
        # a stack: pop() hands out low addresses first
        self.free = [i << self.shift for i in range(nframes - 1, -1, -1)]
        self.check = check
        self.place = bytearray(nframes) if check else None
        self.counts = [nframes, 0, 0, 0] if check else None

    def __len__(self) -> int:
        return len(self.free)

    def _pop(self, n: int) -> list:
        free = self.free
        if n <= 0:
            return []
        if n >= len(free):
            out = free[:]
            free.clear()
        else:
            out = free[-n:]
            del free[-n:]
        return out

    def alloc(self, n: int) -> list:
        """Up to ``n`` free frames (FREE -> APP)."""
        out = self._pop(n)
        if self.check:
            self.move(out, FREE, APP)
        return out

    def alloc1(self):
        """One free frame or ``None`` (FREE -> APP)."""
        if not self.free:
            return None
        a = self.free.pop()
        if self.check:
            self.move((a,), FREE, APP)
        return a

    def take(self, n: int, to: int) -> list:
        """Up to ``n`` free frames straight to place ``to`` (e.g. KRX for the fill ring)."""
        out = self._pop(n)
        if self.check:
            self.move(out, FREE, to)
        return out

    def put(self, addrs, frm: int = APP) -> None:
        """Frames back on the free list (APP -> FREE, or KTX -> FREE on completion).
        ``addrs`` must be chunk bases."""
        if self.check:
            self.move(addrs, frm, FREE)
        self.free.extend(addrs)

    def move(self, addrs, frm: int, to: int) -> None:
        """Record that ``addrs`` moved ``frm`` -> ``to`` (check mode only; no-op else).
        Raises :class:`FrameError` when a frame was not where the move says."""
        place = self.place
        if place is None:
            return
        shift = self.shift
        seen = set()
        for a in addrs:
            i = a >> shift
            if a < 0 or i >= self.nframes or a & (self.chunk_size - 1):
                raise FrameError(f"address {a:#x} is not a frame base of this UMEM "
                                 f"({self.nframes} x {self.chunk_size})")
            if i in seen:
                raise FrameError(f"frame {a:#x} appears twice in one batch "
                                 f"({PLACE_NAMES[frm]} -> {PLACE_NAMES[to]})")
            seen.add(i)
            if place[i] != frm:
                raise FrameError(f"frame {a:#x} moved {PLACE_NAMES[frm]} -> "
                                 f"{PLACE_NAMES[to]} but it is in {PLACE_NAMES[place[i]]}")
            place[i] = to
        n = len(seen)
        self.counts[frm] -= n
        self.counts[to] += n

    def where(self, addr: int) -> str:
        """The place of a frame (check mode)."""
        if self.place is None:
            raise RuntimeError("where() needs check mode")
        return PLACE_NAMES[self.place[addr >> self.shift]]

    def audit(self, krx=None, ktx=None, app=None) -> dict:
        """Recount every frame (check mode). Optional iterables give the frames known to
        be in each place from an independent source (ring contents, the app's hands);
        each must be in that place. Returns the counts per place."""
        if self.place is None:
            raise RuntimeError("audit() needs check mode")
        place = self.place
        counts = [place.count(p) for p in (FREE, APP, KRX, KTX)]
        if sum(counts) != self.nframes or counts != self.counts:
            raise FrameError(f"place counts {counts} disagree with bookkeeping {self.counts}")
        if len(self.free) != counts[FREE] or len(set(self.free)) != len(self.free):
            raise FrameError(f"free list has {len(self.free)} entries "
                             f"({len(set(self.free))} distinct), {counts[FREE]} frames FREE")
        for a in self.free:
            if place[a >> self.shift] != FREE:
                raise FrameError(f"frame {a:#x} on the free list but in "
                                 f"{PLACE_NAMES[place[a >> self.shift]]}")
        for label, want, group in (("KRX", KRX, krx), ("KTX", KTX, ktx), ("APP", APP, app)):
            if group is None:
                continue
            group = list(group)
            if len(set(group)) != len(group):
                raise FrameError(f"a frame appears twice among the {label} frames")
            for a in group:
                b = a & self.base_mask
                if place[b >> self.shift] != want:
                    raise FrameError(f"frame {b:#x} expected {label}, is in "
                                     f"{PLACE_NAMES[place[b >> self.shift]]}")
        return dict(zip(PLACE_NAMES, counts))


# --- UMEM ------------------------------------------------------------------------------
class Umem:
    """The packet memory shared with the kernel, its allocator, and its two rings.

    ``Umem(nframes, chunk_size)`` maps anonymous memory (page aligned, private) and builds
    the allocator; :mod:`fpd.xsk` registers it on a socket and attaches the fill and
    completion rings (:meth:`attach_rings`). Tests pass ``buf=bytearray(...)`` and
    simulated rings instead.

    Default 4096 frames x 2048 bytes = 8 MiB: a 2 KiB chunk holds the 256 bytes of
    kernel headroom plus a full 1514-byte Ethernet frame, two chunks share a page (never
    straddle one), and twice as many frames fit in the same locked memory as with 4 KiB
    chunks. Use 4096 for MTUs above ~1770 (native XDP on veth allows up to 3506).
    """

    def __init__(self, nframes: int = DEFAULT_FRAMES, chunk_size: int = DEFAULT_CHUNK,
                 headroom: int = 0, check: bool = False, buf=None,
                 fill_target: int | None = None, scratch: int = 0):
        if chunk_size not in CHUNK_SIZES:
            raise ValueError(f"chunk_size must be one of {CHUNK_SIZES}, not {chunk_size}")
        if nframes <= 0:
            raise ValueError("nframes must be positive")
        if headroom < 0 or headroom >= chunk_size - XDP_PACKET_HEADROOM:
            # the kernel's own rule (it reserves XDP_PACKET_HEADROOM in every chunk)
            raise ValueError(f"headroom must be 0..{chunk_size - XDP_PACKET_HEADROOM - 1} "
                             f"for {chunk_size}-byte chunks, not {headroom}")
        self.nframes = nframes
        self.chunk_size = chunk_size
        self.headroom = headroom
        self.size = nframes * chunk_size
        #: bytes after the registered frames, in the same mapping but never given to the
        #: kernel: where multi-buffer frames are put together (offsets size..size+scratch
        #: of ``view``, so the parsers and the frame builders work there unchanged)
        self.scratch = scratch
        self._mm = None
        if buf is None:
            self._mm = mmap.mmap(-1, self.size + scratch,
                                 flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                                 prot=mmap.PROT_READ | mmap.PROT_WRITE)
            buf = self._mm
        self.view = memoryview(buf).cast("B")
        if len(self.view) < self.size + scratch:
            raise ValueError("UMEM buffer smaller than nframes * chunk_size + scratch")
        self.alloc = FrameAllocator(nframes, chunk_size, check=check)
        self.base_mask = self.alloc.base_mask
        self.check = check
        self.fill_ring: ProducerRing | None = None
        self.comp_ring: ConsumerRing | None = None
        #: frames the fill ring keeps with the kernel's RX side; the rest serve TX
        self.fill_target = nframes // 2 if fill_target is None else fill_target
        self.krx = 0     # frames with the kernel's RX side (fill ring, pool, RX ring)
        self.ktx = 0     # frames with the kernel's TX side (TX ring, completion ring)
        self.registered_fd = -1
        #: set when the socket this UMEM was registered on closed: the kernel then gave
        #: back every KRX/KTX frame without telling us which, so it cannot be reused
        self.retired = False
        self._closed = False

    # -- kernel registration ------------------------------------------------------------
    def address(self) -> int:
        """Virtual address of the UMEM (for xdp_umem_reg)."""
        import ctypes
        c = ctypes.c_char.from_buffer(self._mm if self._mm is not None else self.view.obj)
        try:
            return ctypes.addressof(c)
        finally:
            del c

    def reg_struct(self, flags: int = 0, tx_metadata_len: int = 0) -> bytes:
        return UMEM_REG.pack(self.address(), self.size, self.chunk_size, self.headroom,
                             flags, tx_metadata_len)

    def attach_rings(self, fill: ProducerRing, comp: ConsumerRing) -> None:
        if fill.words != 1 or comp.words != 1:
            raise RingError("fill/completion rings carry u64 addresses")
        self.fill_ring = fill
        self.comp_ring = comp

    # -- frames -------------------------------------------------------------------------
    def frame(self, addr: int, length: int) -> memoryview:
        """A view of ``length`` bytes at UMEM offset ``addr`` (release it before close)."""
        return self.view[addr:addr + length]

    def base(self, addr: int) -> int:
        return addr & self.base_mask

    @property
    def free_frames(self) -> int:
        return len(self.alloc.free)

    def tx_alloc(self, n: int = 1) -> list:
        """Up to ``n`` frames for the application to write (FREE -> APP)."""
        return self.alloc.alloc(n)

    def free(self, addrs) -> None:
        """Give app-held frames (any address inside each) back to the free list."""
        m = self.base_mask
        self.alloc.put([a & m for a in addrs])

    def refill(self, max_n: int | None = None) -> int:
        """Top the fill ring up from the free list, keeping at most ``fill_target`` frames
        with the kernel's RX side. Returns frames added."""
        want = self.fill_target - self.krx
        if max_n is not None and want > max_n:
            want = max_n
        nfree = len(self.alloc.free)
        if want > nfree:
            want = nfree
        if want <= 0:
            return 0
        ring = self.fill_ring
        k = ring.reserve(want)
        if not k:
            return 0
        addrs = self.alloc.take(k, KRX)
        ring.write_addrs(addrs)
        ring.submit(k)
        self.krx += k
        return k

    def recycle(self, addrs) -> None:
        """Received frames (addresses as they came from the RX ring) go back to the
        kernel through the fill ring; any that do not fit go to the free list."""
        n = len(addrs)
        if not n:
            return
        m = self.base_mask
        bases = array("Q", [a & m for a in addrs])
        room = self.fill_target - self.krx
        k = 0
        if room > 0:
            ring = self.fill_ring
            k = ring.reserve(n if n < room else room)
            if k:
                if self.check:
                    self.alloc.move(bases[:k], APP, KRX)
                ring.write_addrs(bases if k == n else bases[:k])
                ring.submit(k)
                self.krx += k
        if k < n:
            self.alloc.put(bases[k:].tolist())

    def reap(self, max_n: int = 1 << 30) -> int:
        """Completed TX frames (completion ring) back to the free list."""
        ring = self.comp_ring
        k = ring.peek(max_n)
        if not k:
            return 0
        addrs = ring.read_addrs(k)
        ring.release(k)
        m = self.base_mask
        self.alloc.put([a & m for a in addrs], frm=KTX)
        self.ktx -= k
        return k

    def audit(self, app=None) -> dict:
        """Check mode: recount all frames, cross-checking the rings' visible contents.
        (The kernel may also hold KRX frames outside any ring, in its buffer pool.)"""
        fill_span = []
        comp_span = []
        if self.fill_ring is not None:
            r = self.fill_ring
            c = r.consumer
            fill_span = r._read_flat(c, (r.published - c) & U32)
        if self.comp_ring is not None:
            r = self.comp_ring
            p = r.producer
            comp_span = r._read_flat(r.released, (p - r.released) & U32)
        counts = self.alloc.audit(krx=fill_span, ktx=comp_span, app=app)
        if counts["KRX"] != self.krx or counts["KTX"] != self.ktx:
            raise FrameError(f"counters krx={self.krx} ktx={self.ktx} disagree with "
                             f"places {counts}")
        return counts

    # -- teardown -----------------------------------------------------------------------
    def close(self) -> None:
        """Drop the rings' views and unmap the UMEM (idempotent). The rings' own mmaps
        belong to the socket and are closed by it. If the application still holds frame
        views, the memory is unmapped when the last one goes."""
        if self._closed:
            return
        self._closed = True
        for r in (self.fill_ring, self.comp_ring):
            if r is not None:
                r.close()
        self.fill_ring = self.comp_ring = None
        try:
            self.view.release()
        except BufferError:
            pass
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:
                pass  # frame views still alive: munmap happens when they are freed
            self._mm = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
