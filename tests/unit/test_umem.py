"""Rings and the frame allocator over plain buffers (no root, no kernel).

The "kernel" here is the other side of each simulated ring, driven by the test: it takes
frames from the fill ring, writes them (at the 256-byte headroom the real kernel uses)
into the RX ring, transmits from the TX ring into the completion ring. The allocator's
check mode and an independent recount of every place a frame can be must agree that each
frame is in exactly one place after every step.
"""

import struct
from array import array
from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule)

from fpd import umem as U
from fpd.umem import (FrameAllocator, FrameError, ProducerRing, RingError,
                      Umem, sim_pair, sim_ring)
from fpd.xsk import XskRings

WRAP = 2**32


# --- rings -----------------------------------------------------------------------------
@pytest.mark.parametrize("start", [0, WRAP - 1, WRAP - 5, WRAP - 37])
def test_addr_ring_wraps_index_and_slots(start):
    prod, cons, _ = sim_pair(8, words=1, start=start)
    sent, got = [], []
    nxt = 0
    for rnd in range(40):
        n = prod.reserve(1 + rnd % 7)
        batch = list(range(nxt, nxt + n))
        nxt += n
        prod.write_addrs(batch)
        prod.submit(n)
        sent += batch
        k = cons.peek(1 + (rnd * 3) % 8)
        got += cons.read_addrs(k)
        cons.release(k)
    k = cons.peek(100)
    got += cons.read_addrs(k)
    cons.release(k)
    assert got == sent and len(sent) > 100
    # the shared indices wrapped through 2**32 and stay u32
    assert prod.producer == (start + len(sent)) % WRAP == cons.consumer
    assert prod.producer < WRAP


@pytest.mark.parametrize("start", [0, WRAP - 3])
def test_desc_ring_roundtrip_across_wrap(start):
    prod, cons, _ = sim_pair(16, words=2, start=start)
    sent = []
    for rnd in range(30):
        n = prod.reserve(3 + rnd % 9)
        addrs = [(rnd * 100 + i) * 2048 + 256 for i in range(n)]
        lens = [60 + rnd + i for i in range(n)]
        prod.write_descs(addrs, lens)
        prod.submit(n)
        sent += list(zip(addrs, lens))
        k = cons.peek(5 + rnd % 11)
        a, ln = cons.read_descs(k)
        cons.release(k)
        assert list(zip(a, ln)) == sent[:k]
        del sent[:k]


def test_reserve_is_bounded_and_reads_consumer_only_when_short():
    prod, cons, _ = sim_pair(8, words=1)
    assert prod.reserve(5) == 5
    prod.write_addrs([1, 2, 3, 4, 5])
    prod.submit(5)
    assert prod.reserve(10) == 3          # only 3 free
    prod.write_addrs([6, 7, 8])
    prod.submit(3)
    assert prod.reserve(1) == 0           # full
    k = cons.peek(4)
    assert cons.read_addrs(k) == [1, 2, 3, 4]
    cons.release(4)
    assert cons.peek(0) == 0
    # consumer moved; a reserve the cache cannot satisfy refreshes it
    before = prod.cached_cons
    assert prod.reserve(4) == 4
    assert prod.cached_cons != before
    prod.write_addrs([9, 10, 11, 12])
    prod.submit(4)
    # ring full again (5..12); the consumer frees 2 slots, the producer's cache says 0
    k = cons.peek(2)
    assert cons.read_addrs(k) == [5, 6]
    cons.release(k)
    assert prod.reserve(2) == 2            # cache short: refreshed, sees 2 free
    refreshed = prod.cached_cons
    prod.write_addrs([13, 14])
    prod.submit(2)
    k = cons.peek(3)
    cons.read_addrs(k)
    cons.release(k)                        # 3 more free in reality
    assert prod.reserve(0) == 0
    assert prod.cached_cons == refreshed   # nothing asked beyond the cache: no read
    assert prod.free_slots() == 3          # an explicit refresh sees them


def test_peek_refreshes_producer_only_when_cache_is_short():
    prod, cons, _ = sim_pair(8, words=1)
    prod.reserve(4)
    prod.write_addrs([1, 2, 3, 4])
    prod.submit(4)
    assert cons.peek(2) == 2               # cache was empty: read producer (4)
    assert cons.cached_prod == prod.producer
    prod.reserve(2)
    prod.write_addrs([5, 6])
    prod.submit(2)
    assert cons.peek(2) == 2               # two still cached: no refresh needed
    assert cons.cached_prod == 4
    assert cons.peek(5) == 2               # asks for more than cached: refreshes
    assert cons.read_addrs(6) == [1, 2, 3, 4, 5, 6]
    cons.release(6)


def test_batch_misuse_is_refused():
    prod, cons, _ = sim_pair(8, words=2)
    n = prod.reserve(2)
    with pytest.raises(RingError):
        prod.write_descs([1, 2, 3], [1, 2, 3])
    prod.write_descs([0, 2048], [60, 60])
    with pytest.raises(RingError):
        prod.submit(3)
    prod.submit(n)
    k = cons.peek(8)
    assert k == 2
    with pytest.raises(RingError):
        cons.read_descs(3)
    cons.read_descs(1)
    with pytest.raises(RingError):
        cons.release(2)
    cons.release(1)
    with pytest.raises(RingError):
        prod.write_addrs([1])             # address write on a descriptor ring


def test_need_wakeup_flag_and_len_at():
    buf, kw = sim_ring(4, words=2)
    ring = ProducerRing(buf, **kw)
    assert not ring.needs_wakeup()
    struct.pack_into("=I", buf, kw["flags"], U.XDP_RING_NEED_WAKEUP)
    assert ring.needs_wakeup()
    ring.reserve(1)
    ring.write_desc(4096 + 256, 1514)
    ring.submit(1)
    assert ring.addr_at(0) == 4096 + 256 and ring.len_at(0) == 1514


def test_ring_rejects_bad_geometry():
    with pytest.raises(ValueError):
        sim_pair(6, words=1)
    buf, kw = sim_ring(8, words=1)
    with pytest.raises(ValueError):
        ProducerRing(bytes(buf), **kw)
    with pytest.raises(ValueError):
        ProducerRing(buf[:100], **kw)


# --- allocator -------------------------------------------------------------------------
def test_allocator_hands_out_each_frame_once():
    al = FrameAllocator(32, 2048, check=True)
    got = al.alloc(10) + al.alloc(30)
    assert len(got) == 32 and len(set(got)) == 32
    assert al.alloc(1) == [] and al.alloc1() is None
    assert all(a % 2048 == 0 and 0 <= a < 32 * 2048 for a in got)
    al.put(got[:5])
    assert al.audit() == {"FREE": 5, "APP": 27, "KRX": 0, "KTX": 0}


def test_allocator_check_mode_catches_double_free_and_strangers():
    al = FrameAllocator(8, 2048, check=True)
    a, b = al.alloc(2)
    al.put([a])
    with pytest.raises(FrameError, match="FREE"):
        al.put([a])                        # double free
    with pytest.raises(FrameError, match="twice"):
        al.move([b, b], U.APP, U.KTX)
    with pytest.raises(FrameError, match="not a frame base"):
        al.put([b + 1])
    with pytest.raises(FrameError, match="not a frame base"):
        al.put([8 * 2048])
    with pytest.raises(FrameError):
        al.move([b], U.KRX, U.APP)         # b is held by the app, not the kernel


def test_allocator_fast_mode_does_no_bookkeeping():
    al = FrameAllocator(4, 4096)
    x = al.alloc(4)
    al.put(x)
    assert sorted(al.free) == [0, 4096, 8192, 12288]
    with pytest.raises(RuntimeError):
        al.audit()


def test_umem_over_bytearray_rejects_bad_parameters():
    with pytest.raises(ValueError):
        Umem(8, 1024, buf=bytearray(8 * 1024))
    with pytest.raises(ValueError):
        Umem(8, 2048, buf=bytearray(100))
    with pytest.raises(ValueError):
        Umem(8, 2048, headroom=2000, buf=bytearray(8 * 2048))


def test_umem_anonymous_mmap_is_page_aligned_and_closes():
    um = Umem(16, 2048)
    assert um.address() % 4096 == 0
    v = um.frame(2048, 10)
    v[:] = b"x" * 10
    assert bytes(um.view[2048:2058]) == b"x" * 10
    v.release()
    um.close()
    um.close()


def test_umem_close_with_a_frame_view_still_held():
    um = Umem(16, 2048)
    v = um.frame(0, 3)
    v[:] = b"abc"
    um.close()                      # no BufferError: unmapped when the view goes
    assert bytes(v) == b"abc"
    v.release()


# --- the whole data path against a simulated kernel -------------------------------------
class SimKernel:
    """The kernel's side of the four rings, in the model the real one follows: frames
    taken from the fill ring wait in a pool until the RX ring has room; TX descriptors
    are only consumed when the completion ring has room for them."""

    def __init__(self, nframes, chunk, fill_size, comp_size, rx_size, tx_size, start,
                 check=True, fill_target=None):
        self.chunk = chunk
        f_user, self.fill, _ = sim_pair(fill_size, 1, start, user_produces=True)
        c_user, self.comp, _ = sim_pair(comp_size, 1, start + 3, user_produces=False)
        r_user, self.rx, _ = sim_pair(rx_size, 2, start + 7, user_produces=False)
        t_user, self.tx, _ = sim_pair(tx_size, 2, start + 11, user_produces=True)
        self.umem = Umem(nframes, chunk, buf=bytearray(nframes * chunk), check=check,
                         fill_target=fill_target)
        self.umem.attach_rings(f_user, c_user)
        self.xsk = XskRings(self.umem, r_user, t_user)
        self.pool = []          # taken from the fill ring, not yet in the RX ring
        self.wire = []          # what was "sent"
        self.seq = 0

    def receive(self, n):
        """n frames arrive: fill -> (pool) -> RX ring, with data written at headroom 256."""
        k = self.fill.peek(n)
        self.pool += self.fill.read_addrs(k)
        self.fill.release(k)
        room = self.rx.reserve(min(n, len(self.pool)))
        addrs, lens = [], []
        for a in self.pool[:room]:
            a = (a & ~(self.chunk - 1)) + U.XDP_PACKET_HEADROOM
            self.seq += 1
            payload = struct.pack("=QQ", a, self.seq)
            self.umem.view[a:a + 16] = payload
            addrs.append(a)
            lens.append(16)
        del self.pool[:room]
        self.rx.write_descs(addrs, lens)
        self.rx.submit(room)
        return room

    def transmit(self, n):
        """Send up to n TX descriptors; like the kernel, only as many as the completion
        ring has room for."""
        room = self.comp.free_slots()
        k = self.tx.peek(min(n, room))
        addrs, lens = self.tx.read_descs(k)
        for a, ln in zip(addrs, lens):
            self.wire.append(bytes(self.umem.view[a:a + ln]))
        self.tx.release(k)
        assert self.comp.reserve(k) == k
        self.comp.write_addrs(addrs)
        self.comp.submit(k)
        return k

    def ground_truth(self, held):
        """Every frame's place from the rings' actual contents, the pool and the app."""
        m = ~(self.chunk - 1)
        places = []
        places += self.umem.alloc.free
        r = self.fill
        places += r._read_flat(r.released, (r.producer - r.released) % WRAP)   # fill span
        places += [a & m for a in self.pool]
        r = self.rx
        places += [a & m for a in r._read_flat(r.consumer, (r.published - r.consumer) % WRAP)[0::2]]
        places += [a & m for a in held]
        r = self.tx
        places += [a & m for a in r._read_flat(r.released, (r.producer - r.released) % WRAP)[0::2]]
        r = self.comp
        places += [a & m for a in r._read_flat(r.consumer, (r.published - r.consumer) % WRAP)]
        return places


def _check_exactly_once(k, held, nframes, chunk):
    places = k.ground_truth(held)
    c = Counter(places)
    dup = [hex(a) for a, n in c.items() if n > 1]
    assert not dup, f"frames in two places: {dup}"
    assert sorted(c) == [i * chunk for i in range(nframes)], "a frame was lost"
    k.xsk.audit(app=held)


def test_simple_round_trip_through_sim_kernel():
    k = SimKernel(32, 2048, 16, 16, 8, 8, WRAP - 4)
    xsk = k.xsk
    assert xsk.fill() == 16
    assert k.receive(12) == 8              # RX ring holds 8, 4 wait in the pool
    addrs, lens = xsk.rx_burst(64)
    assert len(addrs) == 8 and all(a % 2048 == 256 for a in addrs)
    for a, ln in zip(addrs, lens):
        assert struct.unpack("=Q", xsk.frame(a, ln)[:8])[0] == a
    _check_exactly_once(k, addrs, 32, 2048)
    # forward 3 received frames out unchanged, recycle the rest
    assert xsk.tx_submit(list(zip(addrs[:3], lens[:3]))) == 3
    xsk.recycle(addrs[3:])
    _check_exactly_once(k, [], 32, 2048)
    assert k.transmit(8) == 3
    assert xsk.complete() == 3
    _check_exactly_once(k, [], 32, 2048)
    assert k.umem.audit()["KTX"] == 0


class DataPath(RuleBasedStateMachine):
    """Random interleavings of every app and kernel move; after each step every frame is
    in exactly one place (independent recount) and the allocator's check mode agrees."""

    @initialize(nframes=st.sampled_from([8, 24, 64]),
                chunk=st.sampled_from([2048, 4096]),
                sizes=st.tuples(*[st.sampled_from([4, 8, 16]) for _ in range(4)]),
                start=st.sampled_from([0, WRAP - 2, WRAP - 9, 12345]),
                fill_target=st.sampled_from([None, 2, 6]))
    def setup(self, nframes, chunk, sizes, start, fill_target):
        self.nframes, self.chunk = nframes, chunk
        self.k = SimKernel(nframes, chunk, *sizes, start, fill_target=fill_target)
        self.xsk = self.k.xsk
        self.held_rx = []     # (addr, len) received and not given back
        self.held_tx = []     # frames allocated for TX, not submitted
        self.sent = []        # payloads submitted, in order

    @property
    def held(self):
        return [a for a, _ in self.held_rx] + self.held_tx

    @rule(n=st.integers(0, 20))
    def app_fill(self, n):
        self.xsk.fill(n)

    @rule(n=st.integers(1, 20))
    def kernel_receive(self, n):
        self.k.receive(n)

    @rule(n=st.integers(1, 20))
    def app_rx(self, n):
        batch = self.xsk.rx_batch(n)
        for a, ln in batch:
            assert ln == 16 and struct.unpack("=Q", self.xsk.frame(a, 8))[0] == a
        self.held_rx += batch

    @precondition(lambda self: self.held_rx)
    @rule(data=st.data())
    def app_recycle(self, data):
        n = data.draw(st.integers(1, len(self.held_rx)))
        give, self.held_rx = self.held_rx[:n], self.held_rx[n:]
        self.xsk.recycle([a for a, _ in give])

    @precondition(lambda self: self.held_rx)
    @rule()
    def app_free_one_rx(self):
        a, _ = self.held_rx.pop()
        self.xsk.umem.free([a])

    @rule(n=st.integers(1, 10))
    def app_tx_alloc(self, n):
        got = self.xsk.tx_alloc(n)
        for a in got:
            self.xsk.frame(a, 8)[:] = struct.pack("=Q", a)
        self.held_tx += got

    @precondition(lambda self: self.held_tx or self.held_rx)
    @rule(data=st.data(), forward=st.booleans())
    def app_tx_submit(self, data, forward):
        if forward and self.held_rx:          # send a received buffer back out
            n = data.draw(st.integers(1, len(self.held_rx)))
            descs = self.held_rx[:n]
            k = self.xsk.tx_submit(descs)
            del self.held_rx[:k]
        elif self.held_tx:
            n = data.draw(st.integers(1, len(self.held_tx)))
            descs = [(a, 8) for a in self.held_tx[:n]]
            k = self.xsk.tx_submit(descs)
            del self.held_tx[:k]
        else:
            return
        self.sent += [bytes(self.xsk.frame(a, ln)) for a, ln in descs[:k]]

    @rule(n=st.integers(1, 20))
    def kernel_transmit(self, n):
        self.k.transmit(n)

    @rule(n=st.integers(1, 20))
    def app_complete(self, n):
        self.xsk.complete(n)

    @invariant()
    def every_frame_exactly_once(self):
        if not hasattr(self, "k"):
            return
        _check_exactly_once(self.k, self.held, self.nframes, self.chunk)
        assert self.k.wire == self.sent[:len(self.k.wire)]

    def teardown(self):
        if hasattr(self, "k"):
            # drain everything: all frames must come home
            for a, _ in self.held_rx:
                self.xsk.umem.free([a])
            self.xsk.umem.free(self.held_tx)
            while self.k.transmit(64) or self.xsk.complete():
                pass
            assert self.k.wire == self.sent
            self.k.umem.close()


DataPath.TestCase.settings = settings(max_examples=150, stateful_step_count=60,
                                      deadline=None)
TestDataPath = DataPath.TestCase


@given(st.lists(st.tuples(st.sampled_from(["put", "take"]), st.integers(0, 9)),
                max_size=60))
def test_random_ring_traffic_preserves_order(ops):
    prod, cons, _ = sim_pair(8, words=1, start=WRAP - 6)
    model, nxt = [], 0
    for op, n in ops:
        if op == "put":
            k = prod.reserve(n)
            assert k == min(n, 8 - len(model))
            prod.write_addrs(array("Q", range(nxt, nxt + k)))
            prod.submit(k)
            model += list(range(nxt, nxt + k))
            nxt += k
        else:
            k = cons.peek(n)
            assert k == min(n, len(model))
            assert cons.read_addrs(k) == model[:k]
            cons.release(k)
            del model[:k]
