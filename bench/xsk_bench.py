#!/usr/bin/env python3
"""AF_XDP from Python vs the kernel's socket paths, in a test bed of its own (root).

Not a test: it prints rates and ratios (medians of --trials runs of --seconds each).

RX  A blaster process in the peer namespace pushes one prebuilt frame over and over
    through an AF_PACKET TX ring (PACKET_TX_RING: one send() per 256 frames) onto fpd1;
    on fpd0, in the server namespace, the XDP program (native mode) is attached for every
    variant, and the receiver in this process counts what reaches Python:
      xsk        TCP frames to a steered port -> AF_XDP RX ring -> rx_burst + recycle
      af_packet  TCP frames to an unsteered port -> XDP_PASS -> AF_PACKET recv_into
                 (nftables drops them after the tap, so the kernel sends no RSTs)
      udp        UDP frames of the same size -> XDP_PASS -> UDP socket recv_into
TX  This process sends frames to the peer, counted by the peer interface's rx_packets
    (nftables in the peer drops them in prerouting, so the peer answers nothing):
      xsk        prebuilt frames in UMEM, tx_alloc + tx_submit (kick) + complete, batch 64
      xsk-b256   the same with XDP_MAX_TX_SKB_BUDGET 256 (fewer sendto() per batch)
      af_packet  the same frame, one send() each
      udp        a connected UDP socket, one send() each (the kernel builds the frame)

Receiver CPU is this process's user+system time over the window, per frame. Two cores:
the blaster (and the kernel's softirq work for veth, which runs on the sending CPU) on
one, the Python side on the other; other load on the machine shows up as noise.

    .venv/bin/python bench/xsk_bench.py [--seconds 1] [--trials 3] [--size 66]
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import resource
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time

# --- the blaster (runs in the peer namespace as a child process) ----------------------
SOL_PACKET = 263
PACKET_VERSION = 10
PACKET_TX_RING = 13
PACKET_QDISC_BYPASS = 20
TPACKET_V2 = 1
TP_STATUS_SEND_REQUEST = 1
TX_FRAME = 2048
TX_BLOCK = 1 << 16
TX_BLOCKS = 32            # 1024 frames
TPACKET2_DATA = 32        # TPACKET_ALIGN(sizeof(struct tpacket2_hdr)): TX data offset
SO_RCVBUFFORCE = 33       # not exported by the socket module


def blast(ifname: str, frame_hex: str, seconds: float) -> None:
    frame = bytes.fromhex(frame_hex)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    s.bind((ifname, 0))
    s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
    s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
    nframes = TX_BLOCK * TX_BLOCKS // TX_FRAME
    s.setsockopt(SOL_PACKET, PACKET_TX_RING,
                 struct.pack("=IIII", TX_BLOCK, TX_BLOCKS, TX_FRAME, nframes))
    ring = mmap.mmap(s.fileno(), TX_BLOCK * TX_BLOCKS, mmap.MAP_SHARED,
                     mmap.PROT_READ | mmap.PROT_WRITE)
    for i in range(nframes):
        o = i * TX_FRAME + TPACKET2_DATA
        ring[o:o + len(frame)] = frame
    words = memoryview(ring).cast("I")
    step = TX_FRAME // 4
    batch = 256
    sent = 0
    slot = 0
    t0 = time.monotonic()
    end = t0 + seconds
    while not stop and time.monotonic() < end:
        for i in range(slot, slot + batch):
            w = i * step
            words[w + 1] = len(frame)                # tp_len
            words[w] = TP_STATUS_SEND_REQUEST        # tp_status
        try:
            s.send(b"")                              # blocks until the batch is sent
        except InterruptedError:
            pass
        sent += batch
        slot = (slot + batch) % nframes
    dt = time.monotonic() - t0
    words.release()
    ring.close()
    s.close()
    print(json.dumps({"sent": sent, "seconds": dt}), flush=True)


# --- the bench -------------------------------------------------------------------------
def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def build_frames(bed, size: int, tcp_port: int, udp_port: int, dst_mac, src_mac,
                 src_ip, dst_ip):
    """(tcp_frame, udp_frame, udp_payload) of ``size`` bytes each (TCP with TS option)."""
    from fpd import wire
    tcp_hdr = 14 + 20 + 32
    pay = max(0, size - tcp_hdr)
    seg = wire.Segment(src=socket.inet_aton(src_ip), dst=socket.inet_aton(dst_ip),
                       sport=40000, dport=tcp_port, seq=1, ack=1, flags=wire.ACK,
                       wnd=1000, tsval=1, tsecr=1, payload=b"x" * pay)
    tcp = wire.build_frame(src_mac, dst_mac, seg)
    udp_pay = b"y" * max(0, len(tcp) - 42)
    ulen = 8 + len(udp_pay)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 0, 0x4000, 64, 17, 0,
                     socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    ip = ip[:10] + struct.pack("!H", wire.checksum(ip)) + ip[12:]
    udp = (wire.mac_to_bytes(dst_mac) + wire.mac_to_bytes(src_mac) + b"\x08\x00" + ip
           + struct.pack("!HHHH", 40000, udp_port, ulen, 0) + udp_pay)
    return tcp, udp, udp_pay


def start_blaster(bed, frame: bytes, seconds: float):
    return bed.popen(bed.peer_ns, [sys.executable, os.path.abspath(__file__), "--blast",
                                   bed.peer_if, frame.hex(), str(seconds)],
                     stdout=subprocess.PIPE, text=True)


def stop_blaster(p) -> dict:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        out, _ = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"sent": 0, "seconds": 1}


def measure_rx(bed, frame, seconds, recv_some):
    """Start the blaster, wait for the first frame, warm up, count for ``seconds``."""
    p = start_blaster(bed, frame, seconds + 6)
    try:
        deadline = time.monotonic() + 5
        while recv_some() == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("no frames arrived from the blaster")
        t_end = time.monotonic() + 0.2
        while time.monotonic() < t_end:
            recv_some()
        n = 0
        c0 = _cpu()
        t0 = time.monotonic()
        t_end = t0 + seconds
        while True:
            n += recv_some()
            t = time.monotonic()
            if t >= t_end:
                break
        dt = t - t0
        cpu = _cpu() - c0
        # keep reading until the blaster is gone, so the tail is not dropped unread
        p.send_signal(signal.SIGTERM)
        stop = time.monotonic() + 5
        while p.poll() is None and time.monotonic() < stop:
            recv_some()
        recv_some()
    finally:
        b = stop_blaster(p)
    return {"rate": n / dt, "cpu_ns": cpu * 1e9 / max(n, 1),
            "offered": b["sent"] / max(b["seconds"], 1e-9)}


def measure_drain(bed, frame, seconds, drain_all, backlog_s=0.012):
    """Python's receive capacity: let a backlog build while we sleep, then time emptying
    it (arrivals during the drain are few next to the backlog and are counted too)."""
    p = start_blaster(bed, frame, seconds + 6)
    try:
        deadline = time.monotonic() + 5
        while drain_all() == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("no frames arrived from the blaster")
            time.sleep(0.001)
        n = 0
        busy = 0.0
        cycles = 0
        c0 = _cpu()
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            time.sleep(backlog_s)
            t0 = time.perf_counter()
            k = drain_all()
            busy += time.perf_counter() - t0
            n += k
            cycles += 1
        cpu = _cpu() - c0
    finally:
        stop_blaster(p)
    return {"rate": n / busy, "cpu_ns": busy * 1e9 / max(n, 1), "per_drain": n / cycles,
            "cpu_total": cpu}


def peer_rx_packets(bed) -> int:
    out = bed.run(bed.peer_ns, ["ip", "-s", "-j", "link", "show", bed.peer_if]).stdout
    return json.loads(out)[0]["stats64"]["rx"]["packets"]


def measure_tx(bed, seconds, send_some, drain=lambda: None, kicks=lambda: 0):
    t_end = time.monotonic() + 0.2
    while time.monotonic() < t_end:
        send_some()
    drain()
    time.sleep(0.05)
    before = peer_rx_packets(bed)
    k0 = kicks()
    c0 = _cpu()
    t0 = time.monotonic()
    t_end = t0 + seconds
    n = 0
    while time.monotonic() < t_end:
        n += send_some()
    drain()
    dt = time.monotonic() - t0
    cpu = _cpu() - c0
    time.sleep(0.05)
    got = peer_rx_packets(bed) - before
    return {"rate": got / dt, "cpu_ns": cpu * 1e9 / max(got, 1), "submitted": n / dt,
            "kicks_per_64": (kicks() - k0) * 64 / max(n, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="window per trial")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--size", type=int, default=66, help="frame size in bytes (>= 66)")
    ap.add_argument("--mode", default="auto", choices=("auto", "native", "generic"))
    ap.add_argument("--only", default="", help="comma list of rx,tx")
    ap.add_argument("--blast", nargs=3, metavar=("IF", "FRAME_HEX", "SECONDS"),
                    help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.blast:
        blast(a.blast[0], a.blast[1], float(a.blast[2]))
        return 0
    if os.geteuid() != 0:
        print("the bench needs root (namespaces, XDP, AF_XDP)", file=sys.stderr)
        return 2

    from fpd.bpf import Steering
    from fpd.testbed import TestBed
    from fpd.xsk import XskSocket

    XPORT, KPORT, UPORT, TXPORT = 7001, 7002, 7003, 9
    only = set(a.only.split(",")) if a.only else {"rx", "tx"}
    results = {}
    t_start = time.monotonic()
    with TestBed() as bed:
        nft = ("table inet bench {{\n chain pre {{\n"
               "  type filter hook prerouting priority -300;\n{rules} }}\n}}\n")
        bed.run(bed.srv_ns, ["nft", "-f", "-"],
                input=nft.format(rules=f"  tcp dport {KPORT} drop\n"))
        bed.run(bed.peer_ns, ["nft", "-f", "-"],
                input=nft.format(rules=f"  tcp dport {TXPORT} drop\n  udp dport {TXPORT} drop\n"))
        st = x = None
        socks = []
        try:
            with bed.inside(bed.srv_ns):
                st = Steering(bed.srv_if, mode=a.mode)
                x = XskSocket(bed.srv_if, 0)
            st.add_port(XPORT)
            st.set_xsk(0, x.fileno())
            print(f"XDP attach mode: {st.mode}; AF_XDP bind mode: {x.bind_mode}; "
                  f"frame {a.size} B; {a.trials} x {a.seconds:g} s per figure")

            if "rx" in only:
                tcp_x, _, _ = build_frames(bed, a.size, XPORT, UPORT, bed.srv_mac,
                                           bed.peer_mac, bed.peer_ip, bed.srv_ip)
                tcp_k, udp_k, _ = build_frames(bed, a.size, KPORT, UPORT, bed.srv_mac,
                                               bed.peer_mac, bed.peer_ip, bed.srv_ip)

                def xsk_rx():
                    addrs, _ = x.rx_burst(64)
                    if addrs:
                        x.recycle(addrs)
                        return len(addrs)
                    x.wait(0.002)
                    return 0

                def xsk_drain_rx():
                    n = 0
                    while True:
                        addrs, _ = x.rx_burst(64)
                        if not addrs:
                            return n
                        x.recycle(addrs)
                        n += len(addrs)

                def sock_drain(recv):
                    n = 0
                    try:
                        while True:
                            recv(buf)
                            n += 1
                    except (BlockingIOError, TimeoutError, socket.timeout):
                        return n

                buf = bytearray(2048)

                def packet_open():
                    nonlocal pk_recv
                    pk = bed.socket(bed.srv_ns, socket.AF_PACKET, socket.SOCK_RAW,
                                    socket.htons(3))
                    socks.append(pk)
                    pk.bind((bed.srv_if, 3))   # host order here; socket() wants htons
                    pk.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
                    pk.settimeout(0.002)
                    pk_recv = pk.recv_into

                pk_recv = None

                def packet_rx():
                    n = 0
                    try:
                        for _ in range(64):
                            pk_recv(buf)
                            n += 1
                    except (TimeoutError, socket.timeout):
                        pass
                    return n

                def udp_open():
                    nonlocal us_recv
                    us = bed.socket(bed.srv_ns, socket.AF_INET, socket.SOCK_DGRAM)
                    socks.append(us)
                    us.bind((bed.srv_ip, UPORT))
                    us.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
                    us.settimeout(0.002)
                    us_recv = us.recv_into

                us_recv = None

                def udp_rx():
                    n = 0
                    try:
                        for _ in range(64):
                            us_recv(buf)
                            n += 1
                    except (TimeoutError, socket.timeout):
                        pass
                    return n

                for name, frame, fn, opener in (("xsk", tcp_x, xsk_rx, None),
                                                ("af_packet", tcp_k, packet_rx, packet_open),
                                                ("udp", udp_k, udp_rx, udp_open)):
                    if opener is not None:
                        opener()
                    d0 = x.stats()
                    runs = [measure_rx(bed, frame, a.seconds, fn) for _ in range(a.trials)]
                    results[("rx", name)] = runs
                    d1 = x.stats()
                    lost = ""
                    if name == "xsk":
                        lost = ("; AF_XDP drops " + str(sum(d1[k] - d0[k] for k in (
                            "rx_dropped", "rx_ring_full", "rx_fill_ring_empty_descs"))))
                    print(f"  rx {name:10s} delivered " + "  ".join(f"{r['rate']/1e3:6.0f}k" for r in runs)
                          + f"   (blaster offered ~{statistics.median(r['offered'] for r in runs)/1e3:.0f}k/s{lost})",
                          flush=True)
                    if name == "xsk":
                        dfn = xsk_drain_rx
                    else:
                        sk = socks[-1]
                        sk.setblocking(False)
                        dfn = (lambda r=sk.recv_into: sock_drain(r))
                    runs = [measure_drain(bed, frame, a.seconds, dfn) for _ in range(a.trials)]
                    results[("rx-drain", name)] = runs
                    print(f"  rx {name:10s} drain     " + "  ".join(f"{r['rate']/1e3:6.0f}k" for r in runs)
                          + f"   (~{statistics.median(r['per_drain'] for r in runs):.0f} frames per drain)",
                          flush=True)
                    for s_ in socks:      # a receive socket lives only for its phase
                        s_.close()
                    socks.clear()
                print(f"  xsk stats after RX (drain phases overflow on purpose): {x.stats()}")

            if "tx" in only:
                tcp_t, udp_t, udp_pay = build_frames(bed, a.size, TXPORT, TXPORT,
                                                     bed.peer_mac, bed.srv_mac,
                                                     bed.srv_ip, bed.peer_ip)
                um = x.umem
                # the frame template in every chunk: TX then only writes descriptors
                for i in range(um.nframes):
                    um.view[i * um.chunk_size:i * um.chunk_size + len(tcp_t)] = tcp_t
                flen = len(tcp_t)
                lens64 = [flen] * 64

                def xsk_tx():
                    if um.ktx:
                        x.complete()
                    addrs = x.tx_alloc(64)
                    if not addrs:
                        return 0
                    k = x.tx_submit(addrs, lens64[:len(addrs)])
                    if k < len(addrs):
                        um.free(addrs[k:])
                    return k

                def xsk_drain():
                    for _ in range(1000):
                        if x.tx.pending():
                            x.kick()
                        x.complete()
                        if not um.ktx:
                            break
                        time.sleep(0.001)

                pkt = bed.socket(bed.srv_ns, socket.AF_PACKET, socket.SOCK_RAW, 0)
                ut = bed.socket(bed.srv_ns, socket.AF_INET, socket.SOCK_DGRAM)
                socks += [pkt, ut]
                pkt.bind((bed.srv_if, 0))
                pkt_send = pkt.send

                def packet_tx():
                    for _ in range(64):
                        pkt_send(tcp_t)
                    return 64

                ut.connect((bed.peer_ip, TXPORT))
                ut_send = ut.send

                def udp_tx():
                    n = 0
                    for _ in range(64):
                        try:
                            ut_send(udp_pay)
                            n += 1
                        except OSError:   # ENOBUFS / ECONNREFUSED: not counted
                            pass
                    return n

                variants = [("xsk", xsk_tx, xsk_drain, None),
                            ("xsk-b256", xsk_tx, xsk_drain, 256),
                            ("af_packet", packet_tx, lambda: None, None),
                            ("udp", udp_tx, lambda: None, None)]
                for name, fn, drain, budget in variants:
                    if budget is not None and not x.set_tx_budget(budget):
                        print(f"  tx {name}: kernel has no XDP_MAX_TX_SKB_BUDGET, skipped")
                        continue
                    runs = [measure_tx(bed, a.seconds, fn, drain, kicks=lambda: x.kicks)
                            for _ in range(a.trials)]
                    results[("tx", name)] = runs
                    extra = ""
                    if name.startswith("xsk"):
                        extra = (f"   ({statistics.median(r['kicks_per_64'] for r in runs):.1f}"
                                 f" sendto per 64 frames)")
                    print(f"  tx {name:10s} " + "  ".join(f"{r['rate']/1e3:7.0f}k" for r in runs)
                          + extra, flush=True)
                print(f"  xsk stats after TX: {x.stats()}")
        finally:
            for s in socks:
                s.close()
            if x is not None:
                x.close()
            if st is not None:
                st.close()

    print()
    print(f"{'':19s}{'frames/s':>14s}{'CPU ns/frame':>16s}{'xsk/this':>9s}   (medians)")
    for kind in ("rx", "rx-drain", "tx"):
        base = results.get((kind, "xsk"))
        if not base:
            continue
        xr = statistics.median(r["rate"] for r in base)
        for (k, name), runs in results.items():
            if k != kind:
                continue
            rate = statistics.median(r["rate"] for r in runs)
            cpu = statistics.median(r["cpu_ns"] for r in runs)
            print(f"{kind:8s} {name:10s}{rate:14,.0f}{cpu:16,.0f}{xr / rate if rate else 0:9.2f}x")
    print(f"\n(total {time.monotonic() - t_start:.0f} s; xsk/this = the AF_XDP rate over this row's rate)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
