"""No counter overflows in a week at full rate (issue #14 item 6).

Every fixed-width counter fpd keeps outside Python's unbounded ints is listed here with
its width, read from where it is declared (the struct formats of fpd/shm.py and
fpd/umem.py, the map declaration in bpf/steer.c), and either

- it cannot reach its limit in a week at *full rate* - a rate no deployment of fpd can
  exceed: 100 Gbit/s of bytes, 148.8 Mpps (minimum-size Ethernet frames at 100 Gbit/s)
  of frames, records or slot openings; or
- it wraps by design and is only ever compared modulo its width (the test that drives
  it across the wrap is named).

The Python counters (worker, stack, service) are ints and cannot overflow; they reach
Prometheus as float64, exact up to 2^53: a byte counter gets there after 8.3 days at
100 Gbit/s (a week stays exact, checked below), and only rounding happens after that.
"""

import os
import re
import struct

from fpd import shm, umem

WEEK = 7 * 24 * 3600
BYTES_PER_S = 100e9 / 8            # 100 Gbit/s
FRAMES_PER_S = 148.8e6             # 64-byte frames + preamble/gap at 100 Gbit/s
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _width(fmt: str, field: int) -> int:
    """Bits of field number ``field`` of a struct format (pad bytes skipped)."""
    codes = [c for c in re.findall(r"\d*[a-zA-Z?]", fmt.lstrip("=<>!@"))
             if not c.endswith("x")]
    code = codes[field]
    return 8 * struct.calcsize("=" + code[-1]) if code[-1] != "s" else 0


def _weeks_to_wrap(bits: int, per_s: float) -> float:
    return (2 ** bits) / per_s / WEEK


def test_shm_ring_indices_are_u64_and_last_decades():
    # struct fpd_ring_hdr: u64 prod ... u64 cons: byte counts (byte rings) or record
    # counts (event/command rings)
    fmt = shm.RING_HDR.format
    assert _width(fmt, 0) == 64 and _width(fmt, 4) == 64          # prod, cons
    assert _weeks_to_wrap(64, BYTES_PER_S) > 52 * 40              # > 40 years of bytes
    assert _weeks_to_wrap(64, FRAMES_PER_S) > 52 * 3000           # records <= frames
    # and even then they wrap modulo 2^64: tests/unit/test_shm.py
    # test_wraparound_partial_writes_and_peek (start just below 2^64)
    assert shm.M64 == 2**64 - 1


def test_shm_ring_a_week_into_full_rate_still_counts():
    """A slot whose rings start where a week at 100 Gbit/s puts them."""
    start = int(BYTES_PER_S * WEEK)
    lay = shm.Layout(nslots=1, rx_size=4096, tx_size=4096, ev_entries=8, cmd_entries=8)
    d = shm.Region.create(lay)
    c = shm.Region.attach(os.dup(d.fd))
    try:
        ds, cs = d.open_slot(0, gen=1, start=start), c.slot(0)
        data = os.urandom(10_000)
        got = b""
        off = 0
        while len(got) < len(data):
            off += ds.rx.write(data[off:off + 3000])
            got += cs.rx.read()
        assert got == data and ds.rx.index == cs.rx.index == start + len(data)
    finally:
        c.close()
        d.close()


def test_record_and_slot_generations_wrap_by_design():
    # struct fpd_record { u32 slot; u16 kind; u16 gen; u64 arg; }: gen is the slot's
    # generation's low 16 bits, only compared for equality (a stale record is ignored)
    assert _width(shm.RECORD.format, 2) == 16
    # struct fpd_slot_ctl: u32 gen; the worker counts a client's slot openings modulo
    # 2^32 and skips 0 (fpd/control.py Service._alloc: (gen + 1) & 0xFFFFFFFF or 1)
    assert _width(shm.SLOT_CTL.format, 1) == 32
    src = open(os.path.join(ROOT, "fpd", "control.py")).read()
    assert "c.next_gen = (gen + 1) & 0xFFFFFFFF or 1" in src
    # a u32 generation does wrap within a week at full rate (one opening per frame), and
    # that is harmless: equal generations 2^32 openings apart never meet in one slot's
    # life (a slot is reused only after the client saw EV_CLOSED for it)
    assert _weeks_to_wrap(32, FRAMES_PER_S) < 1


def test_xsk_ring_indices_are_u32_and_wrap_by_design():
    # the kernel's AF_XDP rings: u32 producer/consumer, wrapping every 2^32 entries
    # (29 s at 148.8 Mpps): fpd/umem.py keeps every difference modulo 2^32
    assert umem.U32 == 2**32 - 1
    assert _weeks_to_wrap(32, FRAMES_PER_S) * WEEK < 60
    src = open(os.path.join(ROOT, "fpd", "umem.py")).read()
    assert src.count("& U32)") >= 6
    # driven across 2^32: tests/unit/test_umem.py test_addr_ring_wraps_index_and_slots,
    # test_desc_ring_roundtrip_across_wrap


def test_bpf_counters_are_u64():
    src = open(os.path.join(ROOT, "bpf", "steer.c")).read()
    m = re.search(r"struct \{[^}]*__type\(value, (__u\d+)\);[^}]*\} fpd_stats", src, re.S)
    assert m and m.group(1) == "__u64", "fpd_stats values are not __u64"
    assert _weeks_to_wrap(64, FRAMES_PER_S) > 52 * 3000           # one count per frame


def test_prometheus_floats_stay_exact_for_a_week():
    assert BYTES_PER_S * WEEK < 2**53
    assert FRAMES_PER_S * WEEK < 2**53
