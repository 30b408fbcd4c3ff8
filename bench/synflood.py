#!/usr/bin/env python3
"""A SYN flood from spoofed sources while established connections stream (not a test).

    .venv/bin/python bench/synflood.py [--streams 50] [--flood 10] [--before 5] [--after 5]
                                       [--pps 0] [--queues 1] [--syn-limit 0] [--ack] [--json]

In a fresh test bed (root), fpd serves fpd.bench_app (echo) on port 5001. A client process
in the peer namespace (the kernel's TCP) opens ``--streams`` connections and echoes a
pseudo-random stream on each, hashing what it sent and what came back (SHA-256). After
``--before`` seconds, bench/synflood.c (built here with gcc) sends SYNs from random
addresses in 198.18.0.0/15 (RFC 2544's benchmark range: nobody owns them) for ``--flood``
seconds, as fast as the peer namespace's AF_PACKET socket takes them (``--pps`` caps it).
fpd's SYN-ACKs to those addresses go through a route via the peer, whose nftables drops
them (so nothing answers them, not even with a RST). During the flood, genuine connections
are opened one after another (connect, echo 1 KiB, close). ``--after`` seconds later the
streams stop and are checked.

Reported: SYNs sent; the streams' goodput (echoed bytes per second) before, during and
after the flood, and during/before as a share; the streams intact (SHA-256 equal, no
reset); genuine connections tried/succeeded during the flood; the worker's RSS before,
peak and after; the workers' syncookies_sent/validated/failed, syn_drops and half_open as
``fpd stats`` shows them, and the same counters on the Prometheus endpoint.

``--ack``: the flood is ACKs from spoofed sources instead (segments that match no
connection: fpd answers each with a RST).

The suite runs a short version (tests/integration/test_flood.py). docs/RELIABILITY.md
quotes this harness's figures.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.path.insert(0, REPO)

FLOOD_NET, FLOOD_BITS = "198.18.0.0", 15
PORT = 5001
BLOCK = 16384
WINDOW = 256 * 1024          # bytes a stream may have in flight (sent, not yet echoed)
COOKIE_COUNTERS = ("syncookies_sent", "syncookies_validated", "syncookies_failed",
                   "syn_drops", "half_open", "connections", "conn_limit_drops")


# ------------------------------------------------------------ the stream client ----
def stream_client(host: str, port: int, n: int, seconds: float, seed: int = 1) -> dict:
    """Run in the peer namespace: ``n`` echo streams for ``seconds``; returns per-stream
    results and the echoed bytes per 0.25 s bucket (monotonic clock)."""
    sel = selectors.DefaultSelector()
    streams = []
    for i in range(n):
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(b"E")
        s.setblocking(False)
        rng = random.Random(seed * 1000 + i)
        st = {"i": i, "sock": s, "sent": 0, "recv": 0, "h_out": hashlib.sha256(),
              "h_in": hashlib.sha256(), "blocks": [rng.randbytes(BLOCK) for _ in range(4)],
              "pending": b"", "k": 0, "error": None, "eof": False, "closed_wr": False}
        streams.append(st)
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, st)
    print(json.dumps({"connected": n, "t": time.monotonic()}), flush=True)
    t0 = time.monotonic()
    end = t0 + seconds
    ctl = sys.stdin.buffer.fileno()
    sel.register(ctl, selectors.EVENT_READ, None)
    buckets: dict[int, int] = {}
    open_ = n
    while open_:
        now = time.monotonic()
        if now >= end:
            for st in streams:
                if not st["closed_wr"] and not st["error"] and not st["pending"]:
                    with contextlib.suppress(OSError):
                        st["sock"].shutdown(socket.SHUT_WR)
                    st["closed_wr"] = True
                    with contextlib.suppress(KeyError, ValueError):
                        sel.modify(st["sock"], selectors.EVENT_READ, st)
            if now > end + 60:
                break
        for key, ev in sel.select(0.25):
            st = key.data
            if st is None:                      # "stop" (or EOF) on stdin: finish now
                os.read(ctl, 4096)
                sel.unregister(ctl)
                end = min(end, time.monotonic())
                continue
            s = st["sock"]
            try:
                if ev & selectors.EVENT_READ:
                    b = s.recv(262144)
                    if not b:
                        st["eof"] = True
                        sel.unregister(s)
                        open_ -= 1
                        continue
                    st["recv"] += len(b)
                    st["h_in"].update(b)
                    k = int(time.monotonic() * 4)
                    buckets[k] = buckets.get(k, 0) + len(b)
                if ev & selectors.EVENT_WRITE and not st["closed_wr"]:
                    if not st["pending"] and st["sent"] - st["recv"] < WINDOW \
                            and time.monotonic() < end:
                        blk = st["blocks"][st["k"] % 4]
                        st["k"] += 1
                        st["pending"] = blk
                        st["h_out"].update(blk)
                    if st["pending"]:
                        m = s.send(st["pending"])
                        st["sent"] += m
                        st["pending"] = st["pending"][m:]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                st["error"] = f"{type(e).__name__}: {e}"
                with contextlib.suppress(KeyError, ValueError):
                    sel.unregister(s)
                open_ -= 1
    res = []
    for st in streams:
        st["sock"].close()
        res.append({"i": st["i"], "sent": st["sent"], "recv": st["recv"],
                    "intact": (st["error"] is None and st["eof"] and st["sent"] == st["recv"]
                               and st["h_out"].digest() == st["h_in"].digest()),
                    "error": st["error"]})
    return {"streams": res, "buckets": {str(k): v for k, v in sorted(buckets.items())}}


# ------------------------------------------------------------------- helpers ----
def build_sender(tmpdir: str) -> str:
    out = os.path.join(tmpdir, "synflood")
    subprocess.run(["gcc", "-O2", "-o", out, os.path.join(HERE, "synflood.c")], check=True,
                   capture_output=True, text=True)
    return out


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def genuine(bed, port: int, timeout: float = 5.0) -> str:
    """One genuine connection from the peer: connect, echo 1 KiB, close. '' or the error."""
    s = bed.socket(bed.peer_ns)
    s.settimeout(timeout)
    try:
        s.connect((bed.srv_ip, port))
        payload = os.urandom(1024)
        s.sendall(b"E" + payload)
        got = b""
        while len(got) < len(payload):
            b = s.recv(4096)
            if not b:
                break
            got += b
        return "" if got == payload else f"echo short ({len(got)} of {len(payload)})"
    except OSError as e:
        return type(e).__name__
    finally:
        s.close()


def stack_counters(stats: dict) -> dict:
    out = {k: 0 for k in COOKIE_COUNTERS}
    for w in stats.get("workers", []):
        for k in COOKIE_COUNTERS:
            out[k] += int((w.get("stack") or {}).get(k, 0))
    return out


def prom_counters(bed, addr: str) -> dict:
    p = bed.run(bed.srv_ns, ["curl", "-s", "--max-time", "5", f"http://{addr}/metrics"],
                check=False)
    out = {}
    for k in COOKIE_COUNTERS:
        vals = re.findall(rf"^fpd_worker_stack_{k}(?:_total)?{{[^}}]*}} ([0-9.e+]+)$",
                          p.stdout, re.M)
        if vals:
            out[k] = int(sum(float(v) for v in vals))
    return out


def rate_in(buckets: dict, a: float, b: float) -> float:
    """Echoed bytes per second in the monotonic interval [a, b)."""
    tot = sum(v for k, v in buckets.items() if a <= int(k) / 4 < b)
    return tot / max(b - a, 1e-9)


# --------------------------------------------------------------------- the run ----
def run(streams: int = 50, before: float = 5.0, flood: float = 10.0, after: float = 5.0,
        pps: float = 0, queues: int = 1, syn_limit: int = 0, ack: bool = False,
        log=None) -> dict:
    from fpd.testbed import TestBed
    from fpdd import fpd_daemon
    import e2e_helpers as H

    tmp = tempfile.mkdtemp(prefix="fpd-synflood-")
    res: dict = {"streams": streams, "flood_s": flood, "pps_cap": pps, "after_s": after,
                 "syn_limit": syn_limit, "kind": "ACK" if ack else "SYN"}
    try:
        sender = build_sender(tmp)
        with TestBed(queues=queues) as bed:
            bed.run(bed.srv_ns, ["ip", "route", "add", f"{FLOOD_NET}/{FLOOD_BITS}",
                                 "via", bed.peer_ip])
            bed.run(bed.peer_ns, ["nft", "-f", "-"], input=f"""
table inet flood {{
    chain pre {{ type filter hook prerouting priority -300;
        ip daddr {FLOOD_NET}/{FLOOD_BITS} counter drop
    }}
}}
""")
            metrics = "127.0.0.1:9187"
            extra = ["--metrics", metrics]
            if syn_limit:
                extra += ["--syn-limit", str(syn_limit)]
            with fpd_daemon(bed, [PORT], extra=extra) as d, \
                    H.apps() as apps:
                app = H.App("bench_app", [sys.executable, "-m", "fpd.bench_app", "--module",
                                          "fpd.client", "--host", "0.0.0.0", "--port",
                                          str(PORT)], tmp, env=H.fpd_env(d))
                apps.append(app)
                app.wait_for(r"^ready ")
                total = before + flood + after
                cli = H.App("streams", [sys.executable, os.path.abspath(__file__),
                                        "--client", bed.srv_ip, str(PORT), str(streams),
                                        str(total + 120)], tmp, env=H.fpd_env(d), bed=bed,
                            ns=bed.peer_ns, stdin=subprocess.PIPE)
                apps.append(cli)
                m = cli.wait_for(r'^\{"connected".*\}$', timeout=60)
                t_conn = json.loads(m.group(0))["t"]
                workers = d.workers
                rss = {"before": max(rss_kib(p) for p in workers)}
                base = stack_counters(d.stats())
                time.sleep(before)
                cpu0 = sum(cpu_s(p) for p in workers)
                t_f0 = time.monotonic()
                fl = H.App("synflood", [sender, bed.peer_if, bed.srv_mac, bed.srv_ip,
                                        str(PORT), FLOOD_NET, str(FLOOD_BITS), str(flood),
                                        str(pps), "7", "A" if ack else "S"], tmp, bed=bed,
                            ns=bed.peer_ns)
                apps.append(fl)
                gen = {"tried": 0, "ok": 0, "errors": {}}

                def genuine_loop():
                    while fl.proc.poll() is None:
                        err = genuine(bed, PORT, timeout=3.0)
                        if fl.proc.poll() is not None and err:
                            break           # the flood ended while this one waited
                        gen["tried"] += 1
                        if err:
                            gen["errors"][err] = gen["errors"].get(err, 0) + 1
                        else:
                            gen["ok"] += 1
                        time.sleep(0.1)

                gt = threading.Thread(target=genuine_loop, daemon=True)
                gt.start()
                peak = rss["before"]
                while fl.proc.poll() is None and time.monotonic() < t_f0 + flood + 30:
                    time.sleep(0.2)
                    peak = max([peak] + [rss_kib(p) for p in workers])
                t_f1 = time.monotonic()
                res["worker_cpu_share"] = (sum(cpu_s(p) for p in workers) - cpu0) / (t_f1 - t_f0)
                during_stats = d.stats()
                rss["peak"] = peak
                fl.proc.wait(30)
                gt.join(10)
                tried, ok, errors = gen["tried"], gen["ok"], gen["errors"]
                probes = []
                t_end_after = time.monotonic() + after
                while time.monotonic() < t_end_after:
                    st_ = d.stats()
                    w0 = st_["workers"][0]
                    ss = bed.run(bed.peer_ns, ["ss", "-tin", "state", "established",
                                               f"dport = :{PORT}"], check=False).stdout
                    rtos = [float(x) for x in re.findall(r" rto:([0-9.]+)", ss)]
                    backoff = [int(x) for x in re.findall(r" backoff:(\d+)", ss)]
                    probes.append({"t": round(time.monotonic() - t_f0, 1),
                                   "rx": w0.get("rx_frames"), "it": w0.get("iterations"),
                                   "rto_timeouts": (w0.get("stack") or {}).get("rto_timeouts"),
                                   "retrans": (w0.get("stack") or {}).get("retransmits"),
                                   "half_open": (w0.get("stack") or {}).get("half_open"),
                                   "neigh": w0.get("neigh_lookups"),
                                   "k_rto_max": max(rtos, default=0),
                                   "k_backoff_max": max(backoff, default=0),
                                   "k_backoff_n": sum(1 for x in backoff if x)})
                    time.sleep(0.5)
                res["probes"] = probes
                rss["after_flood"] = max(rss_kib(p) for p in workers)
                cli.send_line("stop")
                out = fl.output().strip().splitlines()
                res["sender"] = json.loads(out[-1]) if out else {"error": fl.describe()}
                # the client drains (reads to EOF) for up to 60 s; look at the stragglers
                for _ in range(20):
                    if cli.proc.poll() is not None:
                        break
                    time.sleep(1)
                if cli.proc.poll() is None:
                    res["stragglers_fpd"] = [c for c in d.conns().get("conns", [])
                                             if str(c.get("local", "")).endswith(f":{PORT}")
                                             or c.get("lport") == PORT][:5]
                    res["stragglers_kernel"] = bed.run(
                        bed.peer_ns, ["ss", "-tinoe", f"dport = :{PORT}"], check=False).stdout
                cli.proc.wait(90)
                out = cli.output().strip().splitlines()
                cres = json.loads(out[-1])
                rss["after"] = max(rss_kib(p) for p in workers)
                after_ok = sum(not genuine(bed, PORT) for _ in range(5))
                stats = d.stats()
                prom = prom_counters(bed, metrics)
                b = cres["buckets"]
                g_before = rate_in(b, t_conn + 1.0, t_f0)
                g_during = rate_in(b, t_f0, t_f1)
                g_after = rate_in(b, t_f1 + 1.0, t_f1 + after)
                res["timeline"] = [
                    (round(k / 4 - t_f0, 2), v * 4 / 1e6) for k, v in
                    sorted((int(k), v) for k, v in b.items())]
                res.update({
                    "syn_sent": res["sender"].get("sent", 0),
                    "syn_pps": res["sender"].get("sent", 0) / max(res["sender"].get(
                        "seconds", flood), 1e-9),
                    "goodput_before_MBps": g_before / 1e6,
                    "goodput_during_MBps": g_during / 1e6,
                    "goodput_after_MBps": g_after / 1e6,
                    "share_during": g_during / g_before if g_before else 0.0,
                    "streams_intact": sum(s["intact"] for s in cres["streams"]),
                    "stream_errors": [s for s in cres["streams"] if not s["intact"]],
                    "bytes_echoed": sum(s["recv"] for s in cres["streams"]),
                    "genuine_tried": tried, "genuine_ok": ok, "genuine_errors": errors,
                    "genuine_after_ok": after_ok,
                    "rss_kib": rss,
                    "counters_during": {k: v - base.get(k, 0) if k not in ("half_open",
                                        "connections") else v
                                        for k, v in stack_counters(during_stats).items()},
                    "counters": stack_counters(stats),
                    "prometheus": prom,
                    "xdp": stats.get("xdp"),
                    "drops": stats.get("drops"),
                    "worker_drops": {k: sum(int(w.get(k, 0)) for w in stats["workers"])
                                     for k in ("no_neigh_drops", "no_route_drops",
                                               "tx_backlog_drops", "neigh_lookups",
                                               "synack_src_macs", "synack_no_mac_drops",
                                               "rst_no_mac_drops",
                                               "rx_frames", "tx_frames")},
                    "xsk_rx_dropped": sum(int((w.get("xdp") or {}).get("rx_dropped", 0))
                                          for w in stats["workers"]),
                    "daemon_alive": d.alive(),
                })
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def report(r: dict) -> str:
    lines = [
        f"{r.get('kind', 'SYN')} flood: {r['syn_sent']} segments in {r['flood_s']:g} s ({r['syn_pps'] / 1000:.0f} k/s) "
        f"from {FLOOD_NET}/{FLOOD_BITS} while {r['streams']} streams echo; fpd --syn-limit "
        f"{r['syn_limit']}: {(r['xdp'] or {}).get('syn_limited', 0)} SYNs dropped in XDP",
        f"streams intact (SHA-256): {r['streams_intact']}/{r['streams']}, "
        f"{r['bytes_echoed'] / 1e6:.1f} MB echoed",
        f"goodput MB/s: before {r['goodput_before_MBps']:.2f}, during "
        f"{r['goodput_during_MBps']:.2f} ({r['share_during'] * 100:.0f} %), after "
        f"{r['goodput_after_MBps']:.2f}",
        f"genuine connections during the flood: {r['genuine_ok']}/{r['genuine_tried']} "
        f"{r['genuine_errors'] or ''}; after: {r['genuine_after_ok']}/5",
        f"worker RSS KiB: before {r['rss_kib']['before']}, peak {r['rss_kib']['peak']}, "
        f"{r['after_s']:g} s after {r['rss_kib']['after_flood']}",
        f"worker CPU during the flood: {r['worker_cpu_share'] * 100:.0f} % of a core",
        f"fpd stats: {r['counters']}",
        f"prometheus: {r['prometheus']}",
        f"worker: {r['worker_drops']}, xsk rx_dropped {r['xsk_rx_dropped']}",
    ]
    per_s: dict = {}
    for t, mbps in r.get("timeline", []):
        per_s[int(t // 1)] = per_s.get(int(t // 1), 0) + mbps / 4
    lines.append("goodput per second from the flood's start (MB/s): " + " ".join(
        f"{k}:{v:.1f}" for k, v in sorted(per_s.items())))
    return "\n".join(lines)


def main(argv=None):
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--client"]:
        host, port, n, seconds = argv[1], int(argv[2]), int(argv[3]), float(argv[4])
        print(json.dumps(stream_client(host, port, n, seconds)), flush=True)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=50)
    ap.add_argument("--before", type=float, default=5.0)
    ap.add_argument("--flood", type=float, default=10.0)
    ap.add_argument("--after", type=float, default=5.0)
    ap.add_argument("--pps", type=float, default=0, help="cap the SYN rate (0: none)")
    ap.add_argument("--queues", type=int, default=1)
    ap.add_argument("--syn-limit", type=int, default=0,
                    help="fpd start --syn-limit (SYNs/s per CPU through XDP; 0: off)")
    ap.add_argument("--ack", action="store_true",
                    help="flood with ACKs that match no connection instead of SYNs")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    r = run(a.streams, a.before, a.flood, a.after, a.pps, a.queues, a.syn_limit, a.ack)
    print(json.dumps(r, indent=1, default=str) if a.json else report(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
