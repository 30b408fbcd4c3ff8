"""One NIC queue's data path: an AF_XDP socket, a TCP engine and a neighbour cache.

    with Steering("eth0") as st, Worker("eth0", 0, app=my_app) as w:
        st.set_xsk(0, w.fileno()); st.add_port(8080)
        w.stack.listen(b"\\0\\0\\0\\0", 8080)
        w.run(until=done.is_set)              # or poll_once() from your own loop

A :class:`Worker` is single-threaded and owns everything it touches: one
:class:`fpd.xsk.XskSocket` (with its UMEM), one :class:`fpd.stack.Stack`, and the MACs of
the peers it talks to. Only :meth:`Worker.call_soon` and :meth:`Worker.stop` may be called
from other threads; the stack and its connections belong to the thread running the loop
(the app callback runs there and may use them freely).

One iteration (:meth:`Worker.poll_once`), everything batched per RX burst::

    thread-safe calls queued with call_soon(fn)      fn(worker, now)
    RX burst (<= batch frames) -> wire.parse_burst (one call; frames it leaves: parse_frame)
        MalformedFrame: dropped and counted by reason; not TCP/IPv4: counted
        -> fastpath.input_burst(stack, segs, now)   (runs of one flow; see fpd.fastpath)
    recycle the whole burst to the fill ring                                   (one submit)
    stack.tick(now); app(worker, stack.events(), now) until no more events
    stack.output_coalesced() (+ what waited) -> next-hop MAC ->
        Segment: wire.build_frame_into a UMEM frame
        fastpath.SegBurst: wire.stamp_frames, N UMEM frames from one header
    one tx_submit (it kicks: copy mode sends inside that sendto) -> reap completions
    top the fill ring up from the free list                                    (one submit)

:meth:`Worker.set_fastpath` (or FPD_BURST_PARSE=0, FPD_BURST=0, FPD_TSO=0,
FPD_ACK_COLLAPSE=0 in the environment) switches each per-burst lever back to the
per-segment reference: ``parse_frame`` per frame, ``stack.input`` per segment, one
Segment and one ``build_frame_into`` per segment. FPD_ACK_WND=0: ACK runs stop at every
window change (stop 18's). FPD_TX_BUDGET=N: frames per copy-mode ``sendto`` (default
``TX_BUDGET``, 256; 0: the kernel's 32).

Received payload.  ``wire.parse_burst`` gives ``seg.payload`` as bytes (C) or a
memoryview into the UMEM frame (pure Python, ``parse_frame``). The engine copies every
accepted byte that is not ``bytes`` during input (``RcvQueue.append`` keeps a ``bytes``
payload, immutable and already a copy of the frame, by reference; out-of-order blocks are
``bytearray`` copies) and keeps no reference into a frame, so the worker recycles the burst's frames only
after the whole burst went through the engine. If the engine ever starts keeping received
payload by reference, pass ``copy_payload=True`` (``bytes`` copies before input).

Transmit back-pressure.  A segment that finds the TX ring full or no free frame stays
queued (in order) for the next iteration, up to ``tx_backlog`` segments; beyond that new
segments are dropped and counted (the engine retransmits them). Segments waiting for a
neighbour (see below) wait in a per-destination queue of ``neigh_queue`` segments
(``NEIGH_QUEUE``, 2048).

Neighbours.  The MAC of a destination's next hop comes from the kernel (``fpd.neigh``:
route, then ARP table) the first time the worker sends to it, and is cached for
``neigh_ttl`` seconds. A lookup is a netlink exchange (~1 ms), done in the network namespace
the worker was created in (whatever thread runs the loop). When the kernel has no usable
entry, the worker asks it to resolve (NTF_USE: the kernel sends the ARP request), parks the
segments, and looks again every few milliseconds without blocking the loop; after
``neigh_timeout`` seconds they are dropped and counted (the engine's retransmissions will
try again). A destination whose route leaves through another interface is dropped at once.
A SYN-ACK goes to the source MAC of the SYN it answers (kept for the last ``SYN_MACS_MAX``
SYNs, not cached as the destination's MAC): a SYN flood from spoofed sources would
otherwise cost a netlink lookup per source and stall the loop (bench/synflood.py). While
that table is full (a flood), a SYN-ACK whose SYN was pushed out is dropped and counted
(``synack_no_mac_drops``) rather than looked up: the peer's own SYN retransmission brings
a new one. A RST to an address whose MAC is not cached (the answer to a segment that
matched nothing: a flood of spoofed ACKs makes one per source) is looked up at most
``RST_LOOKUPS_PER_S`` times a second and the MAC is not cached; beyond that it is dropped
(``rst_no_mac_drops``): a RST is best effort, and the peer retransmits.

Checksums.  ``parse_frame`` verifies them and accepts both complete checksums and the
CHECKSUM_PARTIAL value a veth peer with tx offload leaves (pseudo header only); frames we
build always carry complete checksums.

Adaptive polling (:meth:`Worker.run`): after work, the loop keeps polling the rings without
sleeping for ``spin`` seconds; then it sleeps in ``poll()`` on the XSK fd and a wake-up
eventfd until the engine's next deadline (at most ``max_sleep``).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import select
import socket
import sys
import time

from . import fastpath
from . import neigh as _neigh
from . import netns
from . import wire
from .fastpath import SegBurst
from .stack import Stack, StackConfig
from .wire import MalformedFrame, build_frame_into, parse_burst, parse_frame, stamp_frames
from .xsk import SG_SLOT, SG_TX_SLOTS, XDP_PKT_CONTD, XskSocket

__all__ = ["Worker", "WorkerError"]

#: kernel headroom in front of every received frame (XDP_PACKET_HEADROOM)
RX_HEADROOM = 256
ETH_VLAN_HLEN = 18

_ONE = (1).to_bytes(8, sys.byteorder)       # an eventfd increment


def _env_flag(name: str, default: bool = True) -> bool:
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    return v not in ("0", "no", "off", "false")


TX_BUDGET = 256             # XDP_MAX_TX_SKB_BUDGET the worker asks for (0: the kernel's)
NEIGH_QUEUE = 2048          # segments parked per destination while its MAC is resolved:
#                            a load generator that adds a source address opens many
#                            connections from it at once (32 each in fpd bench --idle);
#                            their SYN-ACKs go to the SYN's source MAC, every answer after
#                            waits here (64 dropped most of them, and the peers waited
#                            for their retransmissions)
SYN_MACS_MAX = 16384       # source MACs of recent SYNs kept (oldest dropped first)
RST_LOOKUPS_PER_S = 50.0   # neighbour lookups a second for RSTs to unknown addresses


class WorkerError(RuntimeError):
    """The worker cannot be set up on this interface (no MAC, MTU too large, ...)."""




# --- the worker --------------------------------------------------------------------------
class Worker:
    """The data path of one queue of ``ifname``; create it in the interface's namespace.

    ``app(worker, events, now)`` is called from the loop with every non-empty list of
    ``stack.events()``. ``isn_key`` seeds ISNs and SYN cookies (share it between the
    workers of one interface); random if None. The MSS given to the stack is the
    interface's MTU - 40 (``mss=`` to choose a smaller one); the rest of ``stack_config``
    is used as given. ``check=True`` runs the UMEM allocator in check mode (every frame
    move verified; see :meth:`audit`).
    """

    def __init__(self, ifname: str, queue: int = 0, stack_config: StackConfig | None = None,
                 isn_key: bytes | None = None, *, app=None, mss: int | None = None,
                 batch: int = 256, nframes: int = 4096, chunk_size: int | None = None,
                 ring_size: int = 2048, check: bool = False, copy_payload: bool = False,
                 verify_checksum: bool = True, tx_budget: int | None = None,
                 tx_backlog: int = 4096, spin: float = 0.0005, max_sleep: float = 0.05,
                 neigh_ttl: float = 60.0, neigh_timeout: float = 3.0,
                 neigh_queue: int = NEIGH_QUEUE, vlan: int | None = None,
                 clock=time.monotonic, xsk_kw: dict | None = None,
                 burst: bool | None = None, tso: bool | None = None,
                 sg: bool | None = None):
        self.ifname = ifname
        self.queue = queue
        self.app = app
        self.batch = batch
        self.copy_payload = copy_payload
        self.verify_checksum = verify_checksum
        self.tx_backlog = tx_backlog
        self.spin = spin
        self.max_sleep = max_sleep
        self.neigh_ttl = neigh_ttl
        self.neigh_timeout = neigh_timeout
        self.neigh_queue = neigh_queue
        self.vlan = vlan
        self.clock = clock
        self.xsk: XskSocket | None = None
        self._closed = False
        self._stop = False
        self._ns_fd = -1
        self._wake_r = self._wake_w = -1
        # counters (plain ints: cheap enough to keep always on)
        self.rx_frames = self.rx_bytes = self.tx_frames = self.tx_bytes = 0
        self.malformed = 0
        self.malformed_reasons: collections.Counter = collections.Counter()
        self.not_tcp = 0
        self.no_neigh_drops = 0
        self.no_route_drops = 0
        self.tx_ring_full = 0          # iterations that left segments queued (ring/frames)
        self.tx_deferred = 0           # segments that had to wait for ring room
        self.tx_backlog_drops = 0
        self.tx_errors = 0             # a segment that could not be framed (engine bug)
        self.sack_trimmed = 0          # SACK blocks removed to keep a frame within the MTU
        self.tx_bursts = 0             # SegBursts (template transmit) stamped
        self.tx_burst_splits = 0       # ... that did not fit the free frames at once
        self.neigh_lookups = 0
        self.neigh_waits = 0           # destinations whose MAC had to be resolved first
        self.synack_src_macs = 0       # SYN-ACKs sent to the MAC their SYN came from
        self.synack_no_mac_drops = 0   # SYN-ACKs whose SYN's MAC was pushed out by a flood
        self.rst_no_mac_drops = 0      # RSTs to an unknown MAC beyond the lookup budget
        self.iterations = self.sleeps = self.batches = 0
        self.max_backlog = 0
        self.rx_csum_partial = 0       # frames whose TCP checksum was CHECKSUM_PARTIAL
        self._calls: collections.deque = collections.deque()
        # hooks for a service riding on the loop (fpd.control): extra fds to poll, a
        # per-iteration step, and a veto on sleeping (it arms its shared-memory rings)
        self._readers: dict = {}                   # fd -> fn(now)
        self._ready: list = []                     # readers poll() reported
        self.iter_hook = None                      # fn(now) -> work done (int)
        self.sleep_hook = None                     # fn(now) -> True: may sleep (armed)
        self.wake_hook = None                      # fn() after a sleep (disarm)
        self.reader_interval = 0.001               # busy loop: look at readers this often
        self._readers_at = 0.0
        self._txq: list = []                       # segments waiting for TX room, in order
        self._syn_macs: dict = {}                  # IP -> source MAC of its last SYN
        self._rst_budget = [RST_LOOKUPS_PER_S, clock()]   # tokens, when last refilled
        self._macs: dict = {}                      # destination IP -> next-hop MAC
        self._mac_until: dict = {}                 # destination IP -> refresh time
        self._parked: dict = {}                    # IP -> [deadline, next_try, delay, segs]
        # fn(ifindex, ip) that starts address resolution for us, when this process may
        # not (fpd start --user: the supervisor does it, proto.Resolve); None = NTF_USE
        self.neigh_resolver = None
        self._neg: dict = {}                       # IP -> until (recently failed)
        self._neigh_sweep = clock() + neigh_ttl
        try:
            self._ns_fd = netns.open_current()
            try:
                ifindex, mac, mtu = _neigh.iface_info(ifname)
            except _neigh.NeighError as e:
                raise WorkerError(f"worker for {ifname} queue {queue}: {e}") from None
            if mac is None:
                raise WorkerError(f"{ifname} has no MAC address: AF_XDP frames need "
                                  f"Ethernet")
            self.ifindex = ifindex
            self.mac = mac
            self.mtu = mtu
            max_mss = mtu - 40
            if mss is None:
                mss = max_mss
            elif not 88 <= mss <= max_mss:
                raise ValueError(f"mss {mss} outside 88..{max_mss} (MTU {mtu} of {ifname})")
            self.mss = mss
            need = mtu + ETH_VLAN_HLEN + RX_HEADROOM       # largest frame + kernel headroom
            if chunk_size is None:
                chunk_size = 2048 if need <= 2048 else 4096
            # multi-buffer (XDP_USE_SG): a frame larger than a chunk comes in, and goes out,
            # as a chain of chunks. Used when the MTU needs it (sg=None; FPD_SG=0 refuses)
            if sg is None:
                sg = need > chunk_size and _env_flag("FPD_SG")
            self.sg = bool(sg)
            if need > chunk_size and not self.sg:
                raise WorkerError(f"MTU {mtu} of {ifname} does not fit a {chunk_size}-byte "
                                  f"UMEM chunk (max MTU {chunk_size - RX_HEADROOM - 18}) and "
                                  f"multi-buffer AF_XDP is off (sg=False or FPD_SG=0)")
            cfg = dataclasses.replace(stack_config or StackConfig(), mss=mss)
            self.stack = Stack(isn_key if isn_key is not None else os.urandom(16), cfg)
            # the per-burst data path (fpd.fastpath); False, or FPD_BURST=0 / FPD_TSO=0
            # / FPD_BURST_PARSE=0 in the environment, selects the per-segment reference
            self.set_fastpath(parse=_env_flag("FPD_BURST_PARSE"),
                              burst=_env_flag("FPD_BURST") if burst is None else burst,
                              tso=_env_flag("FPD_TSO") if tso is None else tso,
                              acks=_env_flag("FPD_ACK_COLLAPSE") and (
                                  _env_flag("FPD_ACK_WND") or fastpath.ACKS_SAME_WND))
            kw = dict(rx_size=ring_size, tx_size=ring_size, fill_size=ring_size,
                      comp_size=ring_size, nframes=nframes, chunk_size=chunk_size,
                      check=check)
            if self.sg:
                kw.update(sg=True, sg_slots=max(batch, 64))
            kw.update(xsk_kw or {})
            bp = os.environ.get("FPD_BUSY_POLL")      # "USECS[,BUDGET]" (see docs/AFXDP.md)
            if bp and "busy_poll" not in kw:
                us, _, budget = bp.partition(",")
                kw["busy_poll"] = int(us)
                if budget:
                    kw["busy_poll_budget"] = int(budget)
            self.xsk = XskSocket(ifname, queue, **kw)
            self.umem = self.xsk.umem
            self.chunk = self.umem.chunk_size
            #: outgoing frames may exceed a chunk: build them in scratch, send as chains
            self.sg_tx = self.sg and mtu + ETH_VLAN_HLEN > self.chunk
            self.tx_sg_frames = 0          # frames sent as a chain of descriptors
            if tx_budget is None:
                # frames one copy-mode sendto may send (kernel >= 6.17; FPD_TX_BUDGET=0:
                # the kernel's 32); 256: a fifth of the kicks (docs/PERFORMANCE.md, stop 19)
                tx_budget = int(os.environ.get("FPD_TX_BUDGET") or TX_BUDGET)
                if tx_budget > self.xsk.tx.size:     # the kernel refuses more (EACCES)
                    tx_budget = self.xsk.tx.size
            if tx_budget:
                self.xsk.set_tx_budget(tx_budget)      # False: the kernel has no option
            if hasattr(os, "eventfd"):
                self._wake_r = self._wake_w = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            else:                                          # pragma: no cover (py < 3.10)
                self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._poll = select.poll()
            self._poll.register(self.xsk.fileno(), select.POLLIN)
            self._poll.register(self._wake_r, select.POLLIN)
        except BaseException:
            self.close()
            raise

    # -- public ----------------------------------------------------------------------------
    def fileno(self) -> int:
        """The XSK fd (readable when frames arrived)."""
        return self.xsk.fileno() if self.xsk is not None else -1

    def set_fastpath(self, parse: bool | None = None, burst: bool | None = None,
                     tso: bool | None = None, acks: bool | None = None) -> None:
        """Choose the data path's levers (None: leave as is); from the loop's thread
        (or :meth:`call_soon`). ``parse``: one ``wire.parse_burst`` per RX burst, else
        ``parse_frame`` frame by frame; ``burst``: ``fastpath.input_burst``, else
        ``stack.input`` per segment; ``tso``: full-sized segments leave the engine as
        one ``SegBurst`` stamped from one header, else one Segment each; ``acks``
        (with ``burst``): a run of advancing pure ACKs gets one transmit decision after
        the last, not one after each (``fastpath.ACKS_SAME_WND``: runs stop at every
        window change, stop 18's; FPD_ACK_WND=0)."""
        if parse is not None:
            self.burst_parse = bool(parse)
        if burst is not None:
            self.burst = bool(burst)
        if acks is not None:
            self.ack_collapse = acks if acks == fastpath.ACKS_SAME_WND else bool(acks)
        if tso is not None:
            self.tso = bool(tso)
            self.stack.tso = fastpath.xmit_burst if tso else None

    def call_soon(self, fn) -> None:
        """Run ``fn(worker, now)`` in the loop's thread at the next iteration (thread-safe;
        wakes a sleeping loop). The way for other threads to touch the stack."""
        self._calls.append(fn)
        self._wake()

    def stop(self) -> None:
        """Make :meth:`run` return after the current iteration, or at once if it has not
        started yet (thread-safe)."""
        self._stop = True
        self._wake()

    def _wake(self) -> None:
        if self._wake_w < 0:
            return
        try:
            os.write(self._wake_w, _ONE)
        except (BlockingIOError, OSError):
            pass

    # -- several queues: segments that reached the wrong worker --------------------------
    def enable_forwarding(self, nqueues: int, rx: socket.socket, tx: dict) -> None:
        """Share one interface's flows between ``nqueues`` workers.

        The NIC (or veth) chooses the queue; it may deliver a connection's segment to a
        worker that does not own it: the SYN-ACK of a connection another worker opened,
        or a segment after the peer re-hashed its flow (Linux changes a socket's TX hash
        after an RTO, which on veth moves the flow to another queue). Such a segment
        matches nothing in this worker's stack; instead of answering RST the worker passes
        it (as an IP packet with a 2-byte header: origin queue, hops) to the next worker
        (``tx[(q+1) % n]``, AF_UNIX datagram sockets); the one that owns it takes it; after
        ``nqueues - 1`` hops the last one answers RST as usual. Costs nothing for
        segments that arrive at their owner."""
        self.nqueues = nqueues
        self._fwd_rx = rx
        self._fwd_tx = tx
        self._fwd_hops = 0
        self.forwarded_out = self.forwarded_in = self.forward_drops = 0
        self.stack.unmatched = self._forward
        rx.setblocking(False)
        self.add_reader(rx.fileno(), self._forwarded)

    def _forward(self, seg) -> bool:
        hops = self._fwd_hops + 1
        if hops >= self.nqueues:
            return False                       # went round: nobody owns it -> RST
        if seg.flags & 0x04:                   # RST for nothing: drop silently
            return False
        try:
            pkt = wire.build_packet(seg)
        except ValueError:
            return False
        nxt = (self.queue + 1) % self.nqueues
        try:
            self._fwd_tx[nxt].send(bytes((self.queue, hops)) + pkt)
            self.forwarded_out += 1
        except OSError:                        # full: the peer will retransmit
            self.forward_drops += 1
        return True

    def _forwarded(self, now: float) -> None:
        rx = self._fwd_rx
        inp = self.stack.input
        for _ in range(256):
            try:
                data = rx.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            if len(data) < 2:
                continue
            try:
                fr = wire.parse_packet(memoryview(data)[2:], False)
            except MalformedFrame:
                continue
            if fr is None:
                continue
            self.forwarded_in += 1
            self._fwd_hops = data[1]
            try:
                inp(fr.seg, now)
            finally:
                self._fwd_hops = 0

    def add_reader(self, fd: int, fn) -> None:
        """Also wait for ``fd`` to become readable; then ``fn(now)`` runs in the loop (at
        the start of the next iteration). While busy, readers are looked at every
        ``reader_interval`` seconds (one poll() without sleeping)."""
        self._readers[fd] = fn
        self._poll.register(fd, select.POLLIN)

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is not None:
            try:
                self._poll.unregister(fd)
            except (KeyError, ValueError):
                pass

    def _poll_fds(self, ms: int) -> None:
        readers = self._readers
        for fd, _ in self._poll.poll(ms):
            if fd == self._wake_r:
                try:
                    os.read(self._wake_r, 8)
                except BlockingIOError:
                    pass
            elif fd in readers:
                self._ready.append(fd)

    def poll_once(self, timeout: float = 0.0) -> int:
        """One loop iteration (see the module docstring). If there is nothing to do it
        first sleeps up to ``timeout`` seconds waiting for frames or a wake-up. Returns
        frames received + frames sent + events delivered (0: idle)."""
        xsk = self.xsk
        if xsk is None:
            raise ValueError("worker is closed")
        self.iterations += 1
        slept = False
        if timeout > 0 and not self._calls and not xsk.rx.available() and not self._txq \
                and not self._ready:
            hook = self.sleep_hook
            if hook is None or hook(self.clock()):
                self.sleeps += 1
                slept = True
                try:
                    self._poll_fds(int(timeout * 1000.0 + 0.999))
                finally:
                    if self.wake_hook is not None:
                        self.wake_hook()
        now = self.clock()
        if not slept and self._readers and now >= self._readers_at:
            self._readers_at = now + self.reader_interval
            self._poll_fds(0)
        stack = self.stack
        calls = self._calls
        while calls:
            calls.popleft()(self, now)
        n_rd = 0
        if self._ready:
            ready, self._ready = self._ready, []
            readers = self._readers
            for fd in ready:
                fn = readers.get(fd)
                if fn is not None:
                    fn(now)
                    n_rd += 1
        # ---- RX: the whole burst into the engine, then the frames back to the kernel
        if xsk.busy_poll and not slept and not xsk.rx.available():
            xsk.busy_poll_rx()                     # the queue's NAPI runs here
        addrs, lens = xsk.rx_burst(self.batch)
        n_rx = len(addrs)
        if n_rx:
            self.batches += 1
            # the clock again, now that the frames are here: a worker preempted (or busy
            # with readers and calls) since the first reading would stamp their ACKs and
            # RTT samples with a stale time (min_rtt read low under load)
            now = self.clock()
            try:
                self._rx(addrs, lens, now)
            finally:                               # even if input raised (raise_errors)
                self.rx_frames += n_rx
                self.rx_bytes += sum(lens)
                xsk.recycle(addrs)
        # ---- timers, application
        stack.tick(now)
        app = self.app
        n_ev = 0
        for _ in range(16):
            evs = stack.events()
            if not evs:
                break
            n_ev += len(evs)
            if app is not None:
                app(self, evs, now)
        hook = self.iter_hook
        if hook is not None:
            n_ev += hook(now)
            evs = stack.events()
            if evs:
                n_ev += len(evs)
                if app is not None:
                    app(self, evs, now)
        # ---- TX
        if self._parked:
            self._retry_parked(now)
        if now >= self._neigh_sweep:
            self._sweep_macs(now)
        n_tx = self._flush(now)
        if self.umem.ktx:
            xsk.complete()
        xsk.fill()
        return n_rx + n_tx + n_ev + n_rd

    def _rx(self, addrs: list, lens: list, now: float) -> None:
        """Parse one RX burst (``wire.parse_burst``; the frames it leaves to
        ``parse_frame`` are parsed one by one, counting what is wrong with them) and feed
        it to the engine: ``fastpath.input_burst``, or ``stack.input`` per segment."""
        view = self.umem.view
        verify = self.verify_checksum
        if self.burst_parse:
            segs, partial = parse_burst(view, addrs, lens, verify)
        else:
            segs, partial = wire._parse_burst_py(view, addrs, lens, verify)
        self.rx_csum_partial += partial
        if None in segs:
            for i, seg in enumerate(segs):
                if seg is not None:
                    continue
                a = addrs[i]
                try:
                    fr = parse_frame(view[a:a + lens[i]], verify)
                except MalformedFrame as e:
                    self.malformed += 1
                    self.malformed_reasons[str(e)] += 1
                    continue
                if fr is None:
                    self.not_tcp += 1
                    continue
                if fr.csum == 2:                   # wire.CSUM_PARTIAL
                    self.rx_csum_partial += 1
                segs[i] = fr.seg
        # the source MAC of every SYN: its SYN-ACK goes back there without a netlink
        # lookup (a flood from spoofed sources would otherwise cost one per source)
        syn_macs = self._syn_macs
        i = 0
        for seg in segs:
            if seg is not None and seg.flags & 0x12 == 0x02:
                a = addrs[i]
                syn_macs[seg.src] = bytes(view[a + 6:a + 12])
                if len(syn_macs) > SYN_MACS_MAX:
                    del syn_macs[next(iter(syn_macs))]
            i += 1
        if self.copy_payload:
            for seg in segs:
                if seg is not None and type(seg.payload) is not bytes:
                    seg.payload = bytes(seg.payload)
        stack = self.stack
        if self.burst:
            fastpath.input_burst(stack, segs, now, self.ack_collapse)
        else:
            inp = stack.input
            for seg in segs:
                if seg is not None:
                    inp(seg, now)

    def run(self, until=None, max_seconds: float | None = None) -> None:
        """Loop until ``until()`` is true, :meth:`stop` is called, or ``max_seconds`` pass
        (then TimeoutError). Adaptive: busy-polls for ``spin`` seconds after work, then
        sleeps in poll() until the engine's next deadline (<= ``max_sleep``)."""
        clock = self.clock
        end = None if max_seconds is None else clock() + max_seconds
        stack = self.stack
        spin = self.spin
        last = clock()
        try:
            while not self._stop:
                if until is not None and until():
                    break
                now = clock()
                if end is not None and now > end:
                    raise TimeoutError(f"Worker.run on {self.ifname} q{self.queue}: "
                                       f"{max_seconds} s limit reached")
                if now - last < spin or self._txq:
                    timeout = 0.0
                else:
                    dl = stack.next_deadline()
                    timeout = self.max_sleep
                    if dl is not None and dl - now < timeout:
                        timeout = dl - now if dl > now else 0.0
                    if self._parked:
                        timeout = min(timeout, 0.002)
                if self.poll_once(timeout):
                    last = clock()
                else:
                    self._readers_at = 0.0     # idle: look at the readers next time
        finally:
            self._stop = False

    def stats(self) -> dict:
        """Worker counters, the socket's XDP_STATISTICS, the UMEM and the stack."""
        um = self.umem
        d = {
            "rx_frames": self.rx_frames, "rx_bytes": self.rx_bytes,
            "tx_frames": self.tx_frames, "tx_bytes": self.tx_bytes,
            "rx_csum_partial": self.rx_csum_partial, "malformed": self.malformed,
            "malformed_reasons": dict(self.malformed_reasons),
            "not_tcp": self.not_tcp, "no_neigh_drops": self.no_neigh_drops,
            "no_route_drops": self.no_route_drops, "tx_ring_full": self.tx_ring_full,
            "tx_deferred": self.tx_deferred, "tx_backlog": len(self._txq),
            "max_backlog": self.max_backlog, "tx_backlog_drops": self.tx_backlog_drops,
            "tx_errors": self.tx_errors, "sack_trimmed": self.sack_trimmed,
            "tx_bursts": self.tx_bursts, "tx_burst_splits": self.tx_burst_splits,
            "neigh_lookups": self.neigh_lookups, "neigh_waits": self.neigh_waits,
            "synack_src_macs": self.synack_src_macs,
            "synack_no_mac_drops": self.synack_no_mac_drops,
            "rst_no_mac_drops": self.rst_no_mac_drops,
            "neigh_parked": sum(len(p[3]) for p in list(self._parked.values())),
            "iterations": self.iterations, "sleeps": self.sleeps, "batches": self.batches,
        }
        if self.stack.unmatched is not None:
            d["forwarded_out"] = self.forwarded_out
            d["forwarded_in"] = self.forwarded_in
            d["forward_drops"] = self.forward_drops
        x = self.xsk
        if x is not None:
            d["kicks"] = x.kicks
            d["fill_wakeups"] = x.fill_wakeups
            d["bind_mode"] = x.bind_mode
            d["sg"] = x.sg
            if x.sg:
                d["rx_sg_frames"] = x.rx_sg_frames
                d["rx_sg_dropped"] = x.rx_sg_dropped
                d["tx_sg_frames"] = self.tx_sg_frames
            d["xdp"] = x.stats()
            d["umem"] = {"frames": um.nframes, "free": um.free_frames, "krx": um.krx,
                         "ktx": um.ktx}
        d["stack"] = self.stack.counters()
        return d

    def audit(self, timeout: float = 2.0) -> dict:
        """Check mode: wait for the kernel to complete every TX frame, then prove that
        every frame of the UMEM is free or with the kernel's RX side, none held by the
        worker, none lost or doubled. Returns the counts per place."""
        xsk = self.xsk
        deadline = time.monotonic() + timeout
        while self.umem.ktx and time.monotonic() < deadline:
            if xsk.tx.pending():
                xsk.kick()
            xsk.complete()
            if self.umem.ktx:
                time.sleep(0.002)
        counts = xsk.audit(app=[])
        if counts["APP"] or counts["KTX"]:
            from .umem import FrameError
            raise FrameError(f"frames not home after the worker's iteration: {counts}")
        return counts

    def close(self, reset: bool = True) -> None:
        """Reset the live connections (``reset=True``: their peers learn at once, as when
        a process holding sockets exits), then close the socket and free the UMEM.
        Idempotent. Call it from the loop's thread or after the loop stopped."""
        if self._closed:
            return
        self._closed = True
        try:
            if reset and self.xsk is not None and getattr(self, "stack", None) is not None:
                now = self.clock()
                for c in self.stack.connections():
                    try:
                        c.abort(now)
                    except Exception:
                        pass
                self.stack.events()
                try:
                    self._flush(now)
                    self.xsk.complete()
                except Exception:
                    pass
        finally:
            if self.xsk is not None:
                self.xsk.close()
                self.xsk = None
            for fd in {self._wake_r, self._wake_w, self._ns_fd}:
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = self._ns_fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        state = "closed" if self._closed else f"fd {self.fileno()}"
        return f"<Worker {self.ifname} q{self.queue} {state}>"

    # -- TX --------------------------------------------------------------------------------
    def _flush(self, now: float) -> int:
        """Frame and submit everything the stack produced (plus what waited)."""
        out = self.stack.output_coalesced()     # one pure ACK per connection per burst
        txq = self._txq
        if txq:
            if out:
                txq.extend(out)
            segs = txq
            self._txq = []
        else:
            segs = out
        n = len(segs)
        if not n:
            return 0
        if self.sg_tx:
            return self._flush_sg(segs, now)
        need = n
        for seg in segs:
            if type(seg) is SegBurst:
                need += seg.count - 1
        xsk = self.xsk
        room = xsk.tx.free_slots()
        if room < need and self.umem.ktx:
            xsk.complete()
        frames = xsk.tx_alloc(need if need < room else room)
        k = len(frames)
        view = self.umem.view
        chunk = self.chunk
        src_mac = self.mac
        macs = self._macs
        vlan = self.vlan
        limit = self.mtu + (14 if vlan is None else 18)
        addrs = []
        lens = []
        i = 0
        for j in range(n):
            seg = segs[j]
            mac = macs.get(seg.dst)
            if mac is None:
                mac = self._neigh_miss(seg, now)
                if mac is None:
                    continue                    # parked or dropped
            if i == k:
                self._defer(segs[j:])
                break
            if type(seg) is SegBurst:
                c = seg.count
                if c > k - i:                   # not enough frames: the rest waits
                    rest = seg.split(k - i)
                    c = seg.count
                    self.tx_burst_splits += 1
                else:
                    rest = None
                if seg.header is None or seg.header[2] is not mac:
                    seg.header = wire.template_header(src_mac, mac, seg.tmpl, vlan) + (mac,)
                hdr_len = len(seg.header[0])
                if hdr_len + seg.mss > limit:
                    self.tx_errors += c
                else:
                    try:
                        bl = stamp_frames(view, frames[i:i + c], src_mac, mac, seg.tmpl,
                                          seg.payload, seg.mss, seg.last_flags, vlan,
                                          seg.header)
                    except ValueError:
                        self.tx_errors += c
                    else:
                        addrs.extend(frames[i:i + c])
                        lens.extend(bl)
                        i += c
                        self.tx_bursts += 1
                if rest is not None:
                    self._defer([rest] + segs[j + 1:])
                    break
                continue
            a = frames[i]
            if seg.sack:
                self._fit_sack(seg, limit)
            try:
                ln = build_frame_into(view[a:a + chunk], 0, src_mac, mac, seg, vlan=vlan)
            except ValueError:
                self.tx_errors += 1
                continue
            if ln > limit:
                self.tx_errors += 1
                continue
            addrs.append(a)
            lens.append(ln)
            i += 1
        if i < k:
            self.umem.free(frames[i:])
        if not addrs:
            return 0
        sent = xsk.tx_submit(addrs, lens)
        if sent < len(addrs):                   # cannot happen: room was reserved above
            self.umem.free(addrs[sent:])
            self.tx_errors += len(addrs) - sent
        self.tx_frames += sent
        self.tx_bytes += sum(lens[:sent])
        return sent

    def _flush_sg(self, segs: list, now: float) -> int:
        """:meth:`_flush` for an MTU above a chunk (multi-buffer): each frame is built in
        the UMEM's scratch area and copied into as many chunks as it needs, sent as one
        chain of descriptors (XDP_PKT_CONTD on all but the last)."""
        xsk = self.xsk
        um = self.umem
        view = um.view
        chunk = self.chunk
        vlan = self.vlan
        src_mac = self.mac
        macs = self._macs
        limit = self.mtu + (14 if vlan is None else 18)
        per = -(-limit // chunk)                # chunks of the largest frame
        tbase = xsk.sg_tx_base
        slot = SG_SLOT
        need = 0
        for seg in segs:
            need += seg.count if type(seg) is SegBurst else 1
        need *= per
        room = xsk.tx.free_slots()
        if room < need and um.ktx:
            xsk.complete()
            room = xsk.tx.free_slots()
        frames = xsk.tx_alloc(need if need < room else room)
        k = len(frames)
        addrs = []
        lens = []
        i = 0
        pkts = 0
        nbytes = 0
        chains = 0
        contd = XDP_PKT_CONTD << 32

        def chain(s, ln):
            nonlocal i, chains
            if ln > chunk:
                chains += 1
            off = 0
            while off < ln:
                m = ln - off
                if m > chunk:
                    m = chunk
                a = frames[i]
                i += 1
                view[a:a + m] = view[s + off:s + off + m]
                addrs.append(a)
                off += m
                lens.append(m if off >= ln else m | contd)

        for j in range(len(segs)):
            seg = segs[j]
            mac = macs.get(seg.dst)
            if mac is None:
                mac = self._neigh_miss(seg, now)
                if mac is None:
                    continue                    # parked or dropped
            if k - i < per:
                self._defer(segs[j:])
                break
            if type(seg) is SegBurst:
                fit = (k - i) // per
                if fit > SG_TX_SLOTS:
                    fit = SG_TX_SLOTS
                rest = None
                if seg.count > fit:
                    rest = seg.split(fit)
                    self.tx_burst_splits += 1
                c = seg.count
                if seg.header is None or seg.header[2] is not mac:
                    seg.header = wire.template_header(src_mac, mac, seg.tmpl, vlan) + (mac,)
                if len(seg.header[0]) + seg.mss > limit:
                    self.tx_errors += c
                else:
                    sa = [tbase + q * slot for q in range(c)]
                    try:
                        bl = stamp_frames(view, sa, src_mac, mac, seg.tmpl, seg.payload,
                                          seg.mss, seg.last_flags, vlan, seg.header)
                    except ValueError:
                        self.tx_errors += c
                    else:
                        for s, ln in zip(sa, bl):
                            chain(s, ln)
                            nbytes += ln
                        pkts += c
                        self.tx_bursts += 1
                if rest is not None:
                    self._defer([rest] + segs[j + 1:])
                    break
                continue
            if seg.sack:
                self._fit_sack(seg, limit)
            try:
                ln = build_frame_into(view[tbase:tbase + slot], 0, src_mac, mac, seg,
                                      vlan=vlan)
            except ValueError:
                self.tx_errors += 1
                continue
            if ln > limit:
                self.tx_errors += 1
                continue
            chain(tbase, ln)
            nbytes += ln
            pkts += 1
        if i < k:
            um.free(frames[i:])
        if not addrs:
            return 0
        sent = xsk.tx_submit(addrs, lens)
        if sent < len(addrs):                   # cannot happen: room was reserved above
            um.free(addrs[sent:])
            self.tx_errors += 1
        self.tx_sg_frames += chains
        self.tx_frames += pkts
        self.tx_bytes += nbytes
        return pkts

    def _defer(self, rest: list) -> None:
        self.tx_ring_full += 1
        self.tx_deferred += len(rest)
        q = self._txq
        room = self.tx_backlog - len(q)
        if len(rest) > room:
            self.tx_backlog_drops += len(rest) - max(room, 0)
            rest = rest[:max(room, 0)]
        if rest:
            rest.extend(q)
            self._txq = rest
        if len(self._txq) > self.max_backlog:
            self.max_backlog = len(self._txq)

    def _fit_sack(self, seg, limit: int) -> None:
        """Drop SACK blocks (from the end) until the frame fits the MTU: the engine may
        add up to 40 option bytes to a full-sized data segment; SACK blocks are advisory
        and Linux trims them the same way (tcp_established_options)."""
        while seg.sack and wire.frame_len(seg, self.vlan) > limit:
            seg.sack = seg.sack[:-1]
            self.sack_trimmed += 1

    # -- neighbours ------------------------------------------------------------------------
    def _lookup_mac(self, ip: bytes, resolve: bool) -> bytes:
        """Next-hop MAC for ``ip`` from the kernel, in the worker's namespace. Raises
        NeighError; a route through another interface is ``_NoRoute``."""
        self.neigh_lookups += 1
        with netns.inside(self._ns_fd):
            try:
                oif, gw, _src = _neigh.route_get(ip)
            except _neigh.NeighError as e:
                raise _NoRoute(str(e)) from None
            if oif != self.ifindex:
                raise _NoRoute(f"route to {wire.ip_to_str(ip)} leaves through ifindex "
                               f"{oif}, not {self.ifname}")
            if resolve and self.neigh_resolver is not None:   # no CAP_NET_ADMIN here
                try:
                    return _neigh.neighbour_mac(oif, gw or ip, resolve=False)
                except _neigh.NeighError:
                    self.neigh_resolver(oif, gw or ip)           # the supervisor starts ARP
                    raise
            return _neigh.neighbour_mac(oif, gw or ip, resolve=resolve, timeout=0.001)

    def _neigh_miss(self, seg, now: float):
        ip = seg.dst
        if type(seg) is not SegBurst and seg.flags & 0x12 == 0x12:
            syn_macs = self._syn_macs
            mac = syn_macs.get(ip)
            if mac is not None:                 # not cached: a cookie may never be answered
                self.synack_src_macs += 1
                return mac
            if len(syn_macs) >= SYN_MACS_MAX:
                # a SYN flood pushed this source out: no netlink lookup (~1 ms each) for a
                # retransmitted SYN-ACK; a genuine peer's own SYN retransmission brings a
                # fresh SYN-ACK
                self.synack_no_mac_drops += 1
                return None
        p = self._parked.get(ip)
        if p is not None:
            if len(p[3]) < self.neigh_queue:
                p[3].append(seg)
            else:
                self.no_neigh_drops += 1
            return None
        if type(seg) is not SegBurst and seg.flags & 0x04:
            # a RST answers a segment that matched nothing (a spoofed source, perhaps):
            # at most RST_LOOKUPS_PER_S lookups a second, the MAC used once, not cached
            b = self._rst_budget
            t = b[0] + (now - b[1]) * RST_LOOKUPS_PER_S
            b[0] = t if t < RST_LOOKUPS_PER_S else RST_LOOKUPS_PER_S
            b[1] = now
            if b[0] < 1.0:
                self.rst_no_mac_drops += 1
                return None
            b[0] -= 1.0
            try:
                return self._lookup_mac(ip, resolve=False)
            except _neigh.NeighError:
                self.rst_no_mac_drops += 1
                return None
        until = self._neg.get(ip)
        if until is not None:
            if now < until:
                self.no_neigh_drops += 1
                return None
            del self._neg[ip]
        try:
            mac = self._lookup_mac(ip, resolve=True)
        except _NoRoute:
            self.no_route_drops += 1
            self._neg[ip] = now + 1.0
            return None
        except _neigh.NeighError:
            # resolution started (NTF_USE); look again soon, without blocking the loop
            self.neigh_waits += 1
            self._parked[ip] = [now + self.neigh_timeout, now + 0.001, 0.001, [seg]]
            return None
        self._macs[ip] = mac
        self._mac_until[ip] = now + self.neigh_ttl
        return mac

    def _retry_parked(self, now: float) -> None:
        for ip, p in list(self._parked.items()):
            if now < p[1]:
                continue
            try:
                mac = self._lookup_mac(ip, resolve=False)
            except _NoRoute:
                mac = None
                p[0] = now                      # give up at once
            except _neigh.NeighError:
                mac = None
            if mac is not None:
                del self._parked[ip]
                self._macs[ip] = mac
                self._mac_until[ip] = now + self.neigh_ttl
                self._txq[:0] = p[3]
                continue
            if now >= p[0]:
                del self._parked[ip]
                self.no_neigh_drops += len(p[3])
                self._neg[ip] = now + 1.0
                continue
            p[2] = min(p[2] * 2, 0.05)
            p[1] = now + p[2]

    def _sweep_macs(self, now: float) -> None:
        """Revalidate cached MACs older than ``neigh_ttl`` (the next send looks up again)."""
        self._neigh_sweep = now + max(self.neigh_ttl / 4, 0.001)
        for ip, t in list(self._mac_until.items()):
            if now >= t:
                try:
                    self._macs[ip] = self._lookup_mac(ip, resolve=False)
                    self._mac_until[ip] = now + self.neigh_ttl
                except _neigh.NeighError:
                    self._macs.pop(ip, None)
                    self._mac_until.pop(ip, None)


class _NoRoute(_neigh.NeighError):
    pass
