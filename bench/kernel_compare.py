#!/usr/bin/env python3
"""fpd against the kernel's TCP on a lossy, delayed path, side by side in one run.

    .venv/bin/python bench/kernel_compare.py [--size 50e6] [--cap 40] [--repeat 1]
        [--cases clean_20ms,loss1_20ms,...] [--directions up,down] [--json FILE]

Two test beds with the impairment bridge (fpd/impair.py), made alike:

    kernel   the server app on the kernel's ``socket`` module, no XDP program
    fpd      the same app on ``fpd.client``; the fpd daemon serves the port

In both the client is the kernel's TCP in the peer namespace (this process, threads).
For every case of the grid (``CASES``: RTT, loss, reordering, rate cap), every direction
(``up``: peer -> server app, ``down``: server app -> peer) and every variant (the order
alternates), one transfer of ``--size`` bytes of seeded pseudo-random data, capped at
``--cap`` seconds (a transfer cut by the cap reports the bytes it moved; the digest is
checked over that prefix). Per transfer:

- intact: SHA-256 of what arrived against SHA-256 of the same prefix of what was sent;
- goodput (bytes / seconds from the first byte sent to the last byte received);
- the sender's and the receiver's counters: for a kernel end, ``ss -tin`` of its socket
  (retrans total, lost, rto, rtt, minrtt, delivery_rate, *_limited) taken just before
  the close, and the deltas of its namespace's ``nstat`` counters (/proc/net/snmp and
  /proc/net/netstat read inside the namespace: the same counters nstat prints) over the
  transfer; for the fpd end, the daemon's stack counters (``fpd stats``) over the
  transfer and its connection's ``fpd conns`` line (delivery rate, min_rtt,
  limited_by) taken during and at the end of the transfer.

The delay (RTT/2 each way) and the rate cap are on before the connection opens; loss and
reordering (both directions, seeded alike for both variants) start once it is
established and stop before it closes, so a lost SYN or FIN (a fixed 1 s timeout on
either stack, saying nothing about data recovery) does not blur the counts. The
kernel's metrics cache is off (net.ipv4.tcp_no_metrics_save=1 in every namespace) so a
lossy transfer does not hand its ssthresh to the next one.

``probe_kernel()`` records what this kernel offers for impairing a path (netem? tbf?
nftables numgen?). docs/ENGINE.md ("Against the kernel on a lossy path") has the table.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.path.insert(0, REPO)

PORT = 5001
HDR = struct.Struct("!cQQ")            # op (U/D), size, seed
REPLY = struct.Struct("!Q32s")         # bytes counted, SHA-256
CHUNK = 256 * 1024
MBIT = 1e6 / 8

# name -> impairment (rtt in seconds; loss/reorder probabilities, both directions;
# rate bytes/s per direction, 0 = the bridge's own speed; limit frames held per direction)
CASES = {
    "clean_20ms": {"rtt": 0.020},
    "loss1_20ms": {"rtt": 0.020, "loss": 0.01},
    "loss3_reo1_20ms": {"rtt": 0.020, "loss": 0.03, "reorder": 0.01},
    "loss1_100ms_50M": {"rtt": 0.100, "loss": 0.01, "rate": 50 * MBIT, "limit": 1000},
    # the same loss by nftables (numgen random, at the peer's ingress: frames toward the
    # peer only, so the data of "down"), delay by the bridge: a cross-check of the bridge
    "nft1_20ms": {"rtt": 0.020, "nft_loss": 0.01, "directions": ("down",)},
    # ENGINE.md's hardest HyStart++ path (the sweep's "100M q300" at 100 ms): 100 Mbit/s,
    # no random loss, a tail-drop queue of ~300 frames. The bridge's limit counts every
    # frame it holds, the ~430 (1514-byte frames) in the 50 ms delay line too: 430 + 300
    "q300_100ms": {"rtt": 0.100, "rate": 100 * MBIT, "limit": 730},
}
VARIANTS = ("kernel", "fpd")
# more variants (--variants): fpd_paced = fpd with StackConfig.pacing on; kernel_paced =
# the kernel server with its internal pacing (SO_MAX_PACING_RATE set to a value that
# never binds turns it on: sk_pacing_status NEEDED; this kernel has no fq qdisc). Pacing
# is a sender's matter: the paced variants run only where the server sends ("down").
PACED = {"fpd_paced": "fpd", "kernel_paced": "kernel"}
SO_MAX_PACING_RATE = 47
PACE_UNBOUND = (1 << 64) - 2             # bytes/s; ~0 would mean "no pacing"
DIRECTIONS = ("up", "down")

# the kernel's counters that say how it recovered (nstat names)
NSTAT_KEYS = ("TcpOutSegs", "TcpRetransSegs", "TcpExtTCPTimeouts", "TcpExtTCPLossProbes",
              "TcpExtTCPLossProbeRecovery", "TcpExtTCPSackRecovery", "TcpExtTCPFastRetrans",
              "TcpExtTCPSlowStartRetrans", "TcpExtTCPLostRetransmit",
              "TcpExtTCPSpuriousRTOs", "TcpExtTCPSpuriousRtxHostQueues",
              "TcpExtTCPDSACKRecv", "TcpExtTCPDSACKOldSent", "TcpExtTCPDSACKOfoSent",
              "TcpExtTCPDSACKUndo", "TcpExtTCPLossUndo", "TcpExtTCPFullUndo",
              "TcpExtTCPPartialUndo", "TcpExtTCPSACKReorder", "TcpExtTCPRenoRecovery",
              "TcpExtTCPOFOQueue", "TcpExtTCPRcvQDrop", "TcpExtTCPOFODrop",
              "TcpExtTCPSackShifted", "TcpExtTCPRcvCoalesce")
# fpd's stack counters reported per transfer
FPD_KEYS = ("segs_out", "segs_in", "retransmits", "fast_retransmits", "rto_timeouts",
            "timeouts", "tlp_probes", "tlp_recoveries", "rack_lost", "rescue_retransmits",
            "dsacks_in", "dsack_undos", "dsacks_sent", "ooo_queued", "ooo_dropped",
            "dup_segs_in", "dupacks_in", "sack_trimmed", "internal_errors", "paced_waits")


def make_data(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


# =========================================================================================
# The server app (runs in the server namespace: kernel_compare.py --app --module M)
# =========================================================================================
def _recv_exact(s, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        b = s.recv(n - len(buf))
        if not b:
            raise ConnectionError("closed")
        buf += b
    return buf


def _serve_one(conn, cache: dict, cc: str, pace: bool = False) -> None:
    try:
        if cc:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
        if pace:
            conn.setsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE,
                            struct.pack("Q", PACE_UNBOUND))
        op, size, seed = HDR.unpack(_recv_exact(conn, HDR.size))
        if op == b"U":                  # sink: count and hash to EOF, answer, wait for EOF
            h = hashlib.sha256()
            n = 0
            while n < size:              # size bytes, or fewer and EOF (a capped transfer)
                b = conn.recv(min(CHUNK, size - n))
                if not b:
                    break
                h.update(b)
                n += len(b)
            conn.sendall(REPLY.pack(n, h.digest()))
        elif op == b"D":                # source: size bytes, then wait for the peer's EOF
            key = (size, seed)
            if key not in cache:
                cache.clear()
                cache[key] = make_data(size, seed)
            view = memoryview(cache[key])
            for i in range(0, size, CHUNK):
                conn.sendall(view[i:i + CHUNK])
        while conn.recv(CHUNK):         # the peer closes once it has taken its snapshot
            pass
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            conn.close()


def app_main(module: str, port: int, cc: str = "", pace: bool = False) -> int:
    import importlib
    sock = importlib.import_module(module)
    lst = sock.socket(sock.AF_INET, sock.SOCK_STREAM)
    lst.setsockopt(sock.SOL_SOCKET, sock.SO_REUSEADDR, 1)
    lst.bind(("0.0.0.0", port))
    if module != "socket":
        cc = ""                         # fpd's own (cubic by default)
    if cc:
        lst.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
    lst.listen(16)
    print(f"ready {port} {module}", flush=True)
    cache: dict = {}
    while True:
        conn, _ = lst.accept()
        threading.Thread(target=_serve_one, args=(conn, cache, cc, pace),
                         daemon=True).start()


# =========================================================================================
# Counters
# =========================================================================================
def read_nstat(bed, ns: str) -> dict:
    """The namespace's SNMP MIB counters under nstat's names (TcpRetransSegs,
    TcpExtTCPTimeouts, ...): /proc/net/snmp and /proc/net/netstat read inside it."""
    out: dict = {}
    p = bed.run(ns, ["cat", "/proc/net/snmp", "/proc/net/netstat"])
    lines = p.stdout.splitlines()
    for head, vals in zip(lines[0::2], lines[1::2]):
        hn, hv = head.split(), vals.split()
        if not hn or hn[0] != hv[0]:
            continue
        pre = {"TcpExt:": "TcpExt", "Tcp:": "Tcp", "IpExt:": "IpExt", "Ip:": "Ip",
               "Udp:": "Udp"}.get(hn[0], hn[0].rstrip(":"))
        for k, v in zip(hn[1:], hv[1:]):
            with contextlib.suppress(ValueError):
                out[pre + k] = int(v)
    return out


def nstat_delta(a: dict, b: dict) -> dict:
    return {k: b.get(k, 0) - a.get(k, 0) for k in NSTAT_KEYS}


_SS_NUM = re.compile(r"^([a-z_]+):([0-9.]+)(?:/([0-9.]+))?$")


def parse_ss(text: str) -> list[dict]:
    """``ss -tin`` output -> one dict per socket: local, peer, and its info fields
    (retrans: the total, of "retrans:cur/total"; rtt: srtt ms; rttvar; others as
    numbers; delivery_rate/send/pacing_rate in bit/s)."""
    socks: list[dict] = []
    cur = None
    for line in text.splitlines():
        if not line.strip() or line.startswith("State") or line.startswith("Recv-Q"):
            continue
        if not line[0].isspace():
            f = line.split()
            if len(f) >= 4 and f[0].isdigit():          # with a state filter: no State
                cur = {"state": "", "local": f[2], "peer": f[3]}
                socks.append(cur)
            elif len(f) >= 5:
                cur = {"state": f[0], "local": f[3], "peer": f[4]}
                socks.append(cur)
            continue
        if cur is None:
            continue
        toks = line.split()
        i = 0
        while i < len(toks):
            t = toks[i]
            if t in ("delivery_rate", "send", "pacing_rate") and i + 1 < len(toks):
                cur[t] = _bps(toks[i + 1])
                i += 2
                continue
            m = _SS_NUM.match(t)
            if m:
                k, a, b = m.groups()
                if k == "retrans":
                    cur["retrans"] = int(float(b)) if b else int(float(a))
                elif k == "rtt":
                    cur["rtt_ms"] = float(a)
                    cur["rttvar_ms"] = float(b) if b else None
                else:
                    cur[k] = float(a) if "." in a else int(a)
            elif t in ("cubic", "reno", "bbr"):
                cur["cc"] = t
            elif t in ("sack", "ts", "ecn"):
                cur.setdefault("opts", []).append(t)
            i += 1
    return socks


def _bps(tok: str) -> float:
    m = re.match(r"^([0-9.]+)([KMG]?)bps$", tok)
    if not m:
        return 0.0
    return float(m.group(1)) * {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}[m.group(2)]


def ss_socket(bed, ns: str, port_filter: str) -> dict | None:
    p = bed.run(ns, ["ss", "-tin", "state", "connected", port_filter], check=False)
    got = parse_ss(p.stdout)
    return got[0] if got else None


def _ctl(sock_path: str, msg) -> dict:
    from fpd import proto
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    s.settimeout(5)
    try:
        s.connect(sock_path)
        r, _ = proto.request(s, msg)
        return r or {}
    except (OSError, ValueError, proto.Closed):
        return {}
    finally:
        s.close()


def fpd_stack(sock_path: str) -> dict:
    from fpd import proto
    out: dict = {}
    for w in _ctl(sock_path, proto.Stats()).get("workers", []):
        for k, v in (w.get("stack") or {}).items():
            if isinstance(v, int):
                out[k] = out.get(k, 0) + v
    return out


def conns_cli(daemon, remote_port: int) -> list[str]:
    """What ``fpd conns`` prints: its header and the line of the connection from the
    peer's ``remote_port``."""
    p = daemon.cli("conns", check=False, timeout=30)
    lines = p.stdout.splitlines()
    return lines[:1] + [ln for ln in lines[1:] if f":{remote_port} " in ln + " "]


def fpd_conn(sock_path: str, remote_port: int) -> dict | None:
    """The fpd end's ``fpd conns`` line of the connection from the peer's ``remote_port``."""
    from fpd import proto
    for c in _ctl(sock_path, proto.Conns()).get("conns", []):
        rem = c.get("remote")
        rp = rem[1] if isinstance(rem, (list, tuple)) else str(rem).rsplit(":", 1)[-1]
        if str(rp) == str(remote_port):
            return c
    return None


NFT_TABLE = "fpdkc"


def nft_loss_on(bed, p: float) -> None:
    """Loss by nftables instead of the bridge: drop a random ``p`` of the frames from the
    server at the peer's ingress (netdev hook on its interface, before its TCP sees
    them), counted. An output-hook drop would not do: the local TCP sees the send fail
    and sends again at once, which is no loss on the path."""
    n = int(round(p * 100000))
    rules = (f"add table netdev {NFT_TABLE}\n"
             f"add chain netdev {NFT_TABLE} in {{ type filter hook ingress device "
             f"{bed.peer_if} priority 0; }}\n"
             f"add rule netdev {NFT_TABLE} in ip saddr {bed.srv_ip} ip protocol tcp "
             f"numgen random mod 100000 < {n} counter drop\n")
    bed.run(bed.peer_ns, ["nft", "-f", "-"], input=rules)


def nft_loss_off(bed) -> int:
    """Remove the rule; the number of frames it dropped."""
    p = bed.run(bed.peer_ns, ["nft", "list", "table", "netdev", NFT_TABLE], check=False)
    m = re.search(r"counter packets (\d+)", p.stdout)
    bed.run(bed.peer_ns, ["nft", "delete", "table", "netdev", NFT_TABLE], check=False)
    return int(m.group(1)) if m else 0


# =========================================================================================
# What the kernel offers
# =========================================================================================
def qdiscs(bed) -> dict:
    """``tc qdisc show`` in both namespaces: whether the kernel ends could pace (Linux's
    CUBIC paces under fq, or by itself when sk_pacing_status says so)."""
    return {ns: bed.run(ns, ["tc", "qdisc", "show"], check=False).stdout.strip()
            for ns in (bed.srv_ns, bed.peer_ns)}


def probe_kernel(bed) -> dict:
    """Try, in the peer namespace: a netem qdisc, a tbf qdisc (rate), an nftables
    ``numgen random`` drop rule. Each is removed again; returns what worked."""
    ns, dev = bed.peer_ns, bed.peer_if
    out = {}

    def tc(args):
        p = bed.run(ns, ["tc", *args], check=False)
        return p.returncode == 0, (p.stderr or p.stdout).strip().splitlines()[:1]

    ok, msg = tc(["qdisc", "add", "dev", dev, "root", "netem", "delay", "10ms", "loss", "1%"])
    out["netem"] = {"ok": ok, "msg": msg}
    if ok:
        tc(["qdisc", "del", "dev", dev, "root"])
    ok, msg = tc(["qdisc", "add", "dev", dev, "root", "tbf", "rate", "50mbit", "burst",
                  "32kb", "latency", "50ms"])
    out["tbf"] = {"ok": ok, "msg": msg}
    if ok:
        tc(["qdisc", "del", "dev", dev, "root"])
    rules = ("add table inet fpdkc\n"
             "add chain inet fpdkc out { type filter hook output priority 0; }\n"
             "add rule inet fpdkc out meta l4proto tcp numgen random mod 1000 < 10 drop\n")
    p = bed.run(ns, ["nft", "-f", "-"], check=False, input=rules)
    out["nft_numgen_drop"] = {"ok": p.returncode == 0,
                              "msg": (p.stderr or "").strip().splitlines()[:1]}
    bed.run(ns, ["nft", "delete", "table", "inet", "fpdkc"], check=False)
    return out


# =========================================================================================
# One variant: its test bed, app and (fpd) daemon
# =========================================================================================
class Side:
    def __init__(self, name: str, seed: int, tmp: str, stack: contextlib.ExitStack,
                 kernel_cc: str = "cubic", stack_conf: dict | None = None):
        from fpd.testbed import TestBed
        self.name = name
        self.bed = stack.enter_context(TestBed(impair=True, impair_seed=seed))
        for ns in (self.bed.srv_ns, self.bed.peer_ns):
            self.bed.run(ns, ["sysctl", "-qw", "net.ipv4.tcp_no_metrics_save=1"])
        # the congestion control of the kernel ends: per socket (TCP_CONGESTION; a
        # namespace other than the first may not pick cubic as its default)
        self.cc = None if kernel_cc == "default" else kernel_cc
        self.daemon = None
        env = dict(os.environ)
        module = "socket"
        base = PACED.get(name, name)
        if name == "fpd_paced":
            stack_conf = dict(stack_conf or {}, pacing=True)
        if base == "fpd":
            from fpdd import fpd_daemon
            extra = ()
            if stack_conf:            # StackConfig overrides (e.g. pacing) via --config
                path = os.path.join(tmp, f"fpd-{name}-config.json")
                with open(path, "w") as f:
                    json.dump({"stack": stack_conf}, f)
                os.chmod(path, 0o644)
                extra = ("--config", path)
            self.daemon = stack.enter_context(fpd_daemon(self.bed, [PORT], set_env=False,
                                                         extra=extra))
            env["FPD_SOCKET"] = self.daemon.socket
            module = "fpd.client"
        self.log = os.path.join(tmp, f"app-{name}.log")
        with open(self.log, "ab") as err:
            self.app = self.bed.popen(self.bed.srv_ns,
                                      [sys.executable, os.path.abspath(__file__), "--app",
                                       "--module", module, "--port", str(PORT),
                                      "--cc", self.cc or "",
                                      *(("--pace",) if name == "kernel_paced" else ())],
                                      stdout=subprocess.PIPE, stderr=err, text=True,
                                      env=env, cwd=REPO)
        stack.callback(self._stop_app)
        line = self.app.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"{name}: the app did not start: {line!r} "
                               f"{open(self.log).read()[-2000:]}")

    def _stop_app(self):
        if self.app.poll() is None:
            self.app.terminate()
            try:
                self.app.wait(5)
            except subprocess.TimeoutExpired:
                self.app.kill()
                self.app.wait(5)

    # counters of the ends, before/after a transfer
    def counters(self) -> dict:
        c = {"peer": read_nstat(self.bed, self.bed.peer_ns), "bridge": self.bed.impair.stats()}
        if self.daemon is not None:
            c["fpd"] = fpd_stack(self.daemon.socket)
        else:
            c["srv"] = read_nstat(self.bed, self.bed.srv_ns)
        return c

    def snapshot(self, pport: int) -> dict:
        """The connection from the peer's port ``pport`` as each end sees it (ss -tin for
        a kernel end, fpd conns for fpd's)."""
        bed = self.bed
        out = {"peer": ss_socket(bed, bed.peer_ns, f"sport = :{pport}")}
        if self.daemon is not None:
            out["fpd"] = fpd_conn(self.daemon.socket, pport)
        else:
            out["srv"] = ss_socket(bed, bed.srv_ns, f"dport = :{pport}")
        return out


def transfer(side: Side, case: dict, direction: str, size: int, seed: int, cap: float,
             data: bytes, sample_every: float = 1.0) -> dict:
    bed = side.bed
    imp = bed.impair
    rtt = case.get("rtt", 0.0)
    imp.set(loss=0, reorder=0, delay=rtt / 2, jitter=case.get("jitter", 0.0),
            rate=case.get("rate", 0.0), limit=case.get("limit", 10000),
            reorder_gap=case.get("reorder_gap", max(0.002, rtt / 4)), seed=seed)
    c0 = side.counters()
    s = bed.socket(bed.peer_ns)
    if side.cc:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, side.cc.encode())
    s.settimeout(30)
    res: dict = {"variant": side.name, "direction": direction, "size": size}
    samples: list = []
    end: dict = {}
    stop = threading.Event()
    try:
        s.connect((bed.srv_ip, PORT))
        pport = s.getsockname()[1]
        s.sendall(HDR.pack(b"U" if direction == "up" else b"D", size, seed))
        imp.set(loss=case.get("loss", 0.0), reorder=case.get("reorder", 0.0), seed=seed)
        if case.get("nft_loss"):
            nft_loss_on(bed, case["nft_loss"])

        def sampler():
            while not stop.wait(sample_every):
                with contextlib.suppress(Exception):
                    samples.append(dict(side.snapshot(pport), t=time.monotonic()))
                if side.daemon is not None and "conns_cli" not in res:
                    # once, during the transfer: what `fpd conns` prints for it
                    with contextlib.suppress(Exception):
                        res["conns_cli"] = conns_cli(side.daemon, pport)
        th = threading.Thread(target=sampler, daemon=True)
        th.start()
        t0 = time.monotonic()
        deadline = t0 + cap
        capped = False
        if direction == "up":
            view = memoryview(data)
            sent = 0
            s.settimeout(1.0)
            while sent < size:
                if time.monotonic() > deadline:
                    capped = True
                    break
                try:
                    sent += s.send(view[sent:sent + CHUNK])
                except socket.timeout:
                    continue
            s.settimeout(cap + 60)
            if capped:                     # tell the app it ends here; the view before
                end = side.snapshot(pport)
                s.shutdown(socket.SHUT_WR)
            n, dig = REPLY.unpack(_recv_exact(s, REPLY.size))
            t1 = time.monotonic()
            got, ok = n, (n == sent and dig == hashlib.sha256(view[:n]).digest())
        else:
            h = hashlib.sha256()
            buf = bytearray(CHUNK)
            mv = memoryview(buf)
            got = 0
            s.settimeout(1.0)
            while got < size:
                if time.monotonic() > deadline:
                    capped = True
                    break
                try:
                    k = s.recv_into(mv)
                except socket.timeout:
                    continue
                if not k:
                    break
                if not got:                # the clock starts at the first byte (the app
                    t0 = time.monotonic()  # made the data first: not transfer time)
                    deadline = t0 + cap
                h.update(mv[:k])
                got += k
            t1 = time.monotonic()
            ok = h.digest() == hashlib.sha256(memoryview(data)[:got]).digest() and \
                (got == size or capped)
        stop.set()
        th.join(10)
        if not capped or direction == "down":
            end = side.snapshot(pport)     # still open: both ends' view of the connection
        res["end"] = end
        if side.daemon is not None and "conns_cli" not in res:
            res["conns_cli"] = conns_cli(side.daemon, pport)
        c1 = side.counters()
        imp.set(loss=0, reorder=0)
        if case.get("nft_loss"):
            res["nft_dropped"] = nft_loss_off(bed)
        res.update(intact=bool(ok), bytes=got, complete=got == size, capped=capped,
                   seconds=t1 - t0, mbps=got * 8 / max(1e-9, t1 - t0) / 1e6)
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            imp.set(loss=0, reorder=0)
        if case.get("nft_loss"):
            with contextlib.suppress(Exception):
                nft_loss_off(bed)
        s.close()
    res["peer_nstat"] = nstat_delta(c0["peer"], c1["peer"])
    if "srv" in c0:
        res["srv_nstat"] = nstat_delta(c0["srv"], c1["srv"])
    if "fpd" in c0:
        res["fpd_stats"] = {k: c1["fpd"].get(k, 0) - c0["fpd"].get(k, 0) for k in FPD_KEYS}
    res["bridge"] = {d: {k: c1["bridge"][d][k] - c0["bridge"][d][k]
                         for k in ("rx", "tx", "lost", "reordered", "overflow")}
                     for d in ("to_srv", "to_peer")}
    res["samples"] = samples
    res.update(summarize(res))
    return res


def _is_fpd(r: dict) -> bool:
    return PACED.get(r["variant"], r["variant"]) == "fpd"


def summarize(r: dict) -> dict:
    """The sender's retransmissions and timeouts, and the receiver's view, per transfer.
    up: the sender is the kernel peer; down: the server end (kernel or fpd)."""
    out: dict = {}
    pn = r["peer_nstat"]
    end = r.get("end") or {}
    if r["direction"] == "up":
        out["snd_retrans"] = pn["TcpRetransSegs"]
        out["snd_rtos"] = pn["TcpExtTCPTimeouts"]
        out["snd_tlp"] = pn["TcpExtTCPLossProbes"]
        out["snd_segs"] = pn["TcpOutSegs"]
        out["snd_ss"] = _ss_brief(end.get("peer"))
        out["rcv_view"] = _fpd_brief(end.get("fpd")) if _is_fpd(r) \
            else _ss_brief(end.get("srv"))
    elif _is_fpd(r):
        fs = r["fpd_stats"]
        out["snd_retrans"] = fs["retransmits"]
        out["snd_rtos"] = fs["rto_timeouts"]
        out["snd_tlp"] = fs["tlp_probes"]
        out["snd_segs"] = fs["segs_out"]
        out["snd_ss"] = _fpd_brief(end.get("fpd"))
        out["rcv_view"] = _ss_brief(end.get("peer"))
    else:
        sn = r["srv_nstat"]
        out["snd_retrans"] = sn["TcpRetransSegs"]
        out["snd_rtos"] = sn["TcpExtTCPTimeouts"]
        out["snd_tlp"] = sn["TcpExtTCPLossProbes"]
        out["snd_segs"] = sn["TcpOutSegs"]
        out["snd_ss"] = _ss_brief(end.get("srv"))
        out["rcv_view"] = _ss_brief(end.get("peer"))
    br = r["bridge"]["to_peer" if r["direction"] == "down" else "to_srv"]
    lost = br["lost"] + br["overflow"]      # random loss + the bridge's full queue
    if r["direction"] == "down":
        lost += r.get("nft_dropped", 0)
    out["wire_lost"] = lost
    # the ends' view half-way through (fpd conns / ss -tin): delivery rate, min RTT, ...
    ss = r.get("samples") or []
    if ss:
        mid = ss[len(ss) // 2]
        snd = "peer" if r["direction"] == "up" else ("fpd" if _is_fpd(r) else "srv")
        out["snd_mid"] = (_fpd_brief if snd == "fpd" else _ss_brief)(mid.get(snd))
    return out


def _ss_brief(s: dict | None) -> dict:
    if not s:
        return {}
    return {k: s.get(k) for k in ("retrans", "lost", "rto", "rtt_ms", "minrtt",
                                  "delivery_rate", "cwnd", "ssthresh", "rwnd_limited",
                                  "sndbuf_limited", "busy", "reordering", "dsack_dups")
            if s.get(k) is not None}


def _fpd_brief(c: dict | None) -> dict:
    if not c:
        return {}
    out = {k: c.get(k) for k in ("retransmits", "rto", "srtt", "min_rtt", "delivery_rate",
                                 "limited_by", "cwnd", "ssthresh", "ca_state", "rcvbuf",
                                 "sndbuf")
           if c.get(k) is not None}
    return out


# =========================================================================================
# The run
# =========================================================================================
def run(cases=tuple(CASES), directions=DIRECTIONS, variants=VARIANTS, size=50_000_000,
        cap=40.0, repeat=1, seed=11, verbose=True, probe=True, kernel_cc="cubic",
        stack_conf=None) -> dict:
    if os.geteuid() != 0:
        raise SystemExit("kernel_compare needs root (namespaces, XDP)")
    tmp = tempfile.mkdtemp(prefix="fpd-kcmp-")
    os.chmod(tmp, 0o755)
    started = time.time()
    grid = dict(cases) if isinstance(cases, dict) else {c: CASES[c] for c in cases}
    out: dict = {"size": size, "cap": cap, "cases": grid,
                 "results": [], "kernel": os.uname().release, "kernel_cc": kernel_cc,
                 "stack_conf": stack_conf or {}}
    with contextlib.suppress(OSError):
        with open("/proc/sys/net/ipv4/tcp_congestion_control") as f:
            out["kernel_default_cc"] = f.read().strip()
    data_cache: dict = {}
    try:
        with contextlib.ExitStack() as st:
            sides = {v: Side(v, seed, tmp, st, kernel_cc, stack_conf) for v in variants}
            any_side = next(iter(sides.values()))
            if probe:
                out["offers"] = probe_kernel(any_side.bed)
            out["qdisc"] = {v: qdiscs(s.bed) for v, s in sides.items()}
            k = 0
            for rep in range(repeat):
                for ci, (cname, case) in enumerate(grid.items()):
                    for d in directions:
                        if d not in case.get("directions", DIRECTIONS):
                            continue
                        order = list(variants) if k % 2 == 0 else list(variants)[::-1]
                        k += 1
                        tseed = seed * 1000 + rep * 100 + ci * 10 \
                            + DIRECTIONS.index(d)
                        if (size, tseed) not in data_cache:
                            data_cache.clear()
                            data_cache[(size, tseed)] = make_data(size, tseed)
                        data = data_cache[(size, tseed)]
                        for v in order:
                            if v in PACED and d != "down":
                                continue
                            try:
                                r = transfer(sides[v], case, d, size, tseed, cap, data)
                            except Exception as e:
                                r = {"variant": v, "direction": d, "error":
                                     f"{type(e).__name__}: {e}", "intact": False}
                            r.update(case=cname, rep=rep)
                            out["results"].append(r)
                            if verbose:
                                print(line(r), file=sys.stderr, flush=True)
            out["daemon_alive"] = all(s.daemon.alive() for s in sides.values()
                                      if s.daemon is not None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["elapsed_s"] = round(time.time() - started, 1)
    return out


def line(r: dict) -> str:
    if "error" in r:
        return f"{r.get('case', '?'):<17} {r['direction']:<4} {r['variant']:<6} ERROR {r['error']}"
    v = r.get("snd_ss") or {}
    rv = r.get("rcv_view") or {}
    return (f"{r['case']:<17} {r['direction']:<4} {r['variant']:<6} "
            f"{'ok' if r['intact'] else 'CORRUPT'} {r['bytes'] / 1e6:6.1f} MB"
            f"{' (cap)' if r['capped'] else '      '} {r['mbps']:7.1f} Mbit/s  "
            f"retrans {r['snd_retrans']:5d} ({r['snd_retrans'] / max(1, r['snd_segs']) * 100:.2f} %)"
            f" rto {r['snd_rtos']:3d} tlp {r['snd_tlp']:4d} wire-lost {r['wire_lost']:5d}"
            f"  snd {_short(v)}  rcv {_short(rv)}")


def _short(d: dict) -> str:
    keys = ("rtt_ms", "srtt", "minrtt", "min_rtt", "delivery_rate", "limited_by", "cwnd")
    parts = []
    for k in keys:
        if k in d and d[k] is not None:
            x = d[k]
            if k == "delivery_rate":
                # kernel: bit/s; fpd: bytes/s
                x = f"{(x / 1e6 if 'rtt_ms' in d else x * 8 / 1e6):.1f}Mb"
            elif k in ("srtt", "min_rtt"):
                x = f"{x * 1000:.1f}ms"
            parts.append(f"{k}={x}")
    return ",".join(parts)


def table(res: dict) -> str:
    rows = ["| case | dir | variant | intact | MB | Mbit/s | sender retrans (% of segs) "
            "| sender RTOs | TLPs | lost on wire |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["results"]:
        if "error" in r:
            rows.append(f"| {r.get('case')} | {r['direction']} | {r['variant']} | error: "
                        f"{r['error'][:60]} | | | | | | |")
            continue
        rows.append(
            f"| {r['case']} | {r['direction']} | {r['variant']} | "
            f"{'yes' if r['intact'] else 'NO'} | {r['bytes'] / 1e6:.1f}"
            f"{' (cap)' if r['capped'] else ''} | {r['mbps']:.1f} | {r['snd_retrans']} "
            f"({r['snd_retrans'] / max(1, r['snd_segs']) * 100:.2f} %) | {r['snd_rtos']} | "
            f"{r['snd_tlp']} | {r['wire_lost']} |")
    return "\n".join(rows)


def paired_table(runs: list[dict]) -> str:
    """Markdown: one row per run, case and direction, the kernel and fpd side by side
    (the sender's retransmissions / frames the path dropped in the data's direction,
    its RTOs and TLPs; MB moved and goodput; intact)."""
    rows = ["| run | case | dir | sender | kernel: MB (Mbit/s) | retrans / lost | RTO | TLP "
            "| fpd: MB (Mbit/s) | retrans / lost | RTO | TLP | intact |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, res in enumerate(runs, 1):
        seen: dict = {}
        for r in res["results"]:
            seen.setdefault((r["case"], r["direction"]), {})[r["variant"]] = r
        for (case, d), pair in seen.items():
            cells = []
            ok = True
            for v in ("kernel", "fpd"):
                r = pair.get(v)
                if r is None or "error" in r:
                    cells += ["error", "", "", ""]
                    ok = False
                    continue
                ok = ok and r["intact"]
                cells += [f"{r['bytes'] / 1e6:.1f}{'*' if r['capped'] else ''} "
                          f"({r['mbps']:.1f})", f"{r['snd_retrans']} / {r['wire_lost']}",
                          str(r["snd_rtos"]), str(r["snd_tlp"])]
            sender = "kernel" if d == "up" else "kernel / fpd"
            rows.append(f"| {i} | {case} | {d} | {sender} | " + " | ".join(cells)
                        + f" | {'yes' if ok else 'NO'} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--table-from"]:
        runs = []
        for path in argv[1:]:
            with open(path) as f:
                runs.append(json.load(f))
        print(paired_table(runs))
        return 0
    if argv[:1] == ["--app"]:
        ap = argparse.ArgumentParser()
        ap.add_argument("--app", action="store_true")
        ap.add_argument("--module", default="socket")
        ap.add_argument("--port", type=int, default=PORT)
        ap.add_argument("--cc", default="")
        ap.add_argument("--pace", action="store_true")
        a = ap.parse_args(argv)
        return app_main(a.module, a.port, a.cc, a.pace)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=float, default=50e6)
    ap.add_argument("--cap", type=float, default=40.0, help="seconds per transfer, at most")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--directions", default=",".join(DIRECTIONS))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--kernel-cc", default="cubic",
                    help="the kernel ends' congestion control (fpd's default is cubic; "
                         "'default' keeps the kernel's own, bbr here)")
    ap.add_argument("--pacing", action="store_true",
                    help="fpd's end with StackConfig.pacing on (the kernel ends keep "
                         "their qdisc: see docs/ENGINE.md, Pacing)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    res = run(cases=tuple(a.cases.split(",")), directions=tuple(a.directions.split(",")),
              variants=tuple(a.variants.split(",")), size=int(a.size), cap=a.cap,
              repeat=a.repeat, seed=a.seed, kernel_cc=a.kernel_cc,
              stack_conf={"pacing": True} if a.pacing else None)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1, default=str)
    for v, q in res.get("qdisc", {}).items():
        print(f"qdisc {v}: " + "; ".join(f"{ns}: {t}".replace("\n", " | ")
                                           for ns, t in q.items()))
    print(f"kernel {res['kernel']}, kernel ends' cc {res['kernel_cc']} (default "
          f"{res.get('kernel_default_cc')}), offers "
          f"{json.dumps({k: v['ok'] for k, v in res.get('offers', {}).items()})}, "
          f"{res['elapsed_s']} s")
    print(table(res))
    bad = [r for r in res["results"] if not r.get("intact")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
