#!/usr/bin/env python3
"""Everything at once for minutes, on a lossy, reordering path (not a test).

    .venv/bin/python bench/soak.py [--seconds 300] [--loss 0.02] [--reorder 0.02]
                                   [--kill-every 3] [--png soak.png] [--json]

In a fresh test bed with the impairment bridge (fpd/impair.py: ``--loss`` and
``--reorder`` in both directions), fpd serves, all at the same time:

- the HTTP example (fpd/examples/http_server.py on fpd) under ``wrk -t1 -c4``;
- fpd.bench_app: 4 bulk echo streams checked end to end with SHA-256 (bench/synflood.py's
  stream client), a connect-request-close loop, and 20 idle connections held throughout;
- a *churn client*: an fpd application (this file, ``--churn``) that listens on its own
  port, is connected to from the peer and itself connects out to a kernel echo server in
  the peer namespace (fpd's --local-ports); it is SIGKILLed every ``--kill-every``
  seconds and a new one started.

Every second: the daemon's RSS and open fds (supervisor + workers), the workers' clients,
slots in use, and local ports in use (fpd's connections whose local port is in
--local-ports), written as a PNG (fpd.pngchart.line_chart) with ``--png``.

At the end the load stops and the harness checks, and reports: bulk streams intact,
idle connections still open (not reset), the daemon alive, and, once the churn client's
last incarnation is killed, every slot and local port back to what it was before any
load (nothing a killed client held is kept). Bytes moved, connections served and errors
by kind are reported for each part. The suite runs a short version
(tests/integration/test_soak.py) and asserts the invariants, never speeds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
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
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)

APP_PORT, HTTP_PORT, CHURN_PORT = 5001, 8080, 5002
PEER_ECHO_PORT = 9000
LOCAL_PORTS = (40000, 40999)
N_STREAMS, N_IDLE, N_CHURN_OUT = 4, 20, 4


# ----------------------------------------------------------- the churn client ----
def churn_main(peer_host: str, peer_port: int) -> int:
    """An fpd application: listens on CHURN_PORT (echo), holds N_CHURN_OUT connections
    out to ``peer_host:peer_port`` and pings over them, until it is killed."""
    from fpd import client as fsock
    lst = fsock.socket(fsock.AF_INET, fsock.SOCK_STREAM)
    lst.setsockopt(fsock.SOL_SOCKET, fsock.SO_REUSEADDR, 1)
    lst.bind(("0.0.0.0", CHURN_PORT))
    lst.listen(64)

    def echo(c):
        with contextlib.suppress(OSError):
            while True:
                b = c.recv(65536)
                if not b:
                    break
                c.sendall(b)
        with contextlib.suppress(OSError):
            c.close()

    def accept():
        while True:
            c, _ = lst.accept()
            threading.Thread(target=echo, args=(c,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    outs = []
    for _ in range(N_CHURN_OUT):
        s = fsock.socket(fsock.AF_INET, fsock.SOCK_STREAM)
        s.settimeout(10)
        s.connect((peer_host, peer_port))
        outs.append(s)
    print("ready", flush=True)
    n = 0
    while True:
        for s in outs:
            msg = b"%08d" % n
            s.sendall(msg)
            got = b""
            while len(got) < len(msg):
                b = s.recv(64)
                if not b:
                    raise SystemExit("peer closed")
                got += b
            n += 1
        time.sleep(0.05)


# ------------------------------------------------------------------ sampling ----
def _proc_rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _proc_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _port_of(addr) -> int:
    if isinstance(addr, (list, tuple)):
        return int(addr[1])
    m = re.search(r":(\d+)$", str(addr))
    return int(m.group(1)) if m else -1


def sample(d) -> dict:
    pids = [d.pid] + list(d.workers)
    st = d.stats()
    ws = st.get("workers", [])
    conns = d.conns().get("conns", [])
    lo, hi = LOCAL_PORTS
    return {
        "t": time.monotonic(),
        "rss_mib": sum(_proc_rss_kib(p) for p in pids) / 1024,
        "fds": sum(_proc_fds(p) for p in pids),
        "clients": sum(int(w.get("clients", 0)) for w in ws),
        "slots": sum(int(w.get("slots_in_use", 0)) for w in ws),
        "ports": sum(1 for c in conns if lo <= _port_of(c.get("local")) <= hi),
        "conns": len(conns),
        "workers_answering": sum(1 for w in ws if "stack" in w),
    }


# ---------------------------------------------------------------- load parts ----
class Counter:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = 0
        self.bytes = 0
        self.errors: dict[str, int] = {}

    def good(self, n=0):
        with self.lock:
            self.ok += 1
            self.bytes += n

    def bad(self, e):
        k = type(e).__name__ if isinstance(e, BaseException) else str(e)
        with self.lock:
            self.errors[k] = self.errors.get(k, 0) + 1

    def as_dict(self):
        return {"ok": self.ok, "bytes": self.bytes, "errors": dict(self.errors)}


def crc_loop(bed, port: int, stop: threading.Event, cnt: Counter, pause: float = 0.05):
    """connect, 'E' + 64 bytes, read them back, close; again."""
    while not stop.is_set():
        s = bed.socket(bed.peer_ns)
        s.settimeout(10)
        try:
            s.connect((bed.srv_ip, port))
            p = os.urandom(64)
            s.sendall(b"E" + p)
            got = b""
            while len(got) < 64:
                b = s.recv(64)
                if not b:
                    raise ConnectionError("eof")
                got += b
            if got != p:
                raise ValueError("echo differs")
            s.shutdown(socket.SHUT_WR)
            s.recv(1)
            cnt.good(64)
        except Exception as e:
            cnt.bad(e)
        finally:
            s.close()
        stop.wait(pause)


def churn_peer_traffic(bed, stop: threading.Event, cnt: Counter):
    """From the peer: connect to the churn client's port, echo a little, close (it may be
    dead or restarting: refused/reset are expected and counted)."""
    while not stop.is_set():
        s = bed.socket(bed.peer_ns)
        s.settimeout(5)
        try:
            s.connect((bed.srv_ip, CHURN_PORT))
            p = os.urandom(256)
            s.sendall(p)
            got = b""
            while len(got) < len(p):
                b = s.recv(4096)
                if not b:
                    raise ConnectionError("eof")
                got += b
            if got != p:
                raise ValueError("echo differs")
            cnt.good(len(p))
        except Exception as e:
            cnt.bad(e)
        finally:
            s.close()
        stop.wait(0.1)


def peer_echo_server(bed, stop: threading.Event):
    """A kernel echo server in the peer namespace (the churn client connects out to it)."""
    srv = bed.socket(bed.peer_ns)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((bed.peer_ip, PEER_ECHO_PORT))
    srv.listen(64)
    srv.settimeout(0.5)

    def echo(c):
        c.settimeout(60)
        with contextlib.suppress(OSError):
            while not stop.is_set():
                b = c.recv(65536)
                if not b:
                    break
                c.sendall(b)
        c.close()

    def loop():
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=echo, args=(c,), daemon=True).start()
        srv.close()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def parse_wrk(text: str) -> dict:
    out = {"requests": 0, "errors": {}}
    m = re.search(r"(\d+) requests in ([0-9.]+)(\w+), ([0-9.]+)(\w+) read", text)
    if m:
        out["requests"] = int(m.group(1))
        unit = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}.get(m.group(5), 1)
        out["bytes"] = int(float(m.group(4)) * unit)
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        for k, v in zip(("connect", "read", "write", "timeout"), m.groups()):
            if int(v):
                out["errors"][k] = int(v)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        out["errors"]["non_2xx"] = int(m.group(1))
    return out


# --------------------------------------------------------------------- the run ----
def run(seconds: float = 300, loss: float = 0.02, reorder: float = 0.02,
        kill_every: float = 3.0, png: str | None = None, seed: int = 1) -> dict:
    from fpd.testbed import TestBed
    from fpdd import fpd_daemon
    import e2e_helpers as H

    tmp = tempfile.mkdtemp(prefix="fpd-soak-")
    res: dict = {"seconds": seconds, "loss": loss, "reorder": reorder,
                 "kill_every": kill_every}
    stop = threading.Event()
    threads: list[threading.Thread] = []
    idle: list = []
    try:
        with TestBed(impair=True, impair_seed=seed) as bed, \
                fpd_daemon(bed, [APP_PORT, HTTP_PORT, CHURN_PORT],
                           local_ports=LOCAL_PORTS) as d, H.apps() as apps:
            env = H.fpd_env(d)
            app = H.App("bench_app", [sys.executable, "-m", "fpd.bench_app", "--module",
                                      "fpd.client", "--host", "0.0.0.0", "--port",
                                      str(APP_PORT)], tmp, env=env)
            apps.append(app)
            http = H.App("http", [sys.executable, str(H.EXAMPLES / "http_server.py"), "--fpd",
                                  "--port", str(HTTP_PORT)], tmp, env=env)
            apps.append(http)
            app.wait_for(r"^ready ")
            http.wait_for(r"listening on")
            samples = [sample(d)]
            base = samples[0]
            threads.append(peer_echo_server(bed, stop))
            bed.impair.set(loss=loss, reorder=reorder, seed=seed)

            for _ in range(N_IDLE):
                s = bed.socket(bed.peer_ns)
                s.settimeout(15)
                s.connect((bed.srv_ip, APP_PORT))
                s.sendall(b"I")
                if s.recv(1) != b"i":
                    raise AssertionError("idle connection not acknowledged")
                idle.append(s)
            streams = H.App("streams", [sys.executable, os.path.join(HERE, "synflood.py"),
                                        "--client", bed.srv_ip, str(APP_PORT),
                                        str(N_STREAMS), str(seconds + 600)], tmp, env=env,
                            bed=bed, ns=bed.peer_ns, stdin=subprocess.PIPE)
            apps.append(streams)
            streams.wait_for(r'^\{"connected"', timeout=60)
            wrk = H.App("wrk", ["wrk", "-t1", "-c4", f"-d{max(1, int(seconds))}s",
                                "--timeout", "10s", f"http://{bed.srv_ip}:{HTTP_PORT}/"],
                        tmp, bed=bed, ns=bed.peer_ns)
            apps.append(wrk)
            crc, churn_in = Counter(), Counter()
            for fn, c in ((crc_loop, crc), (churn_peer_traffic, churn_in)):
                t = threading.Thread(target=fn, args=(bed, APP_PORT, stop, c)
                                     if fn is crc_loop else (bed, stop, c), daemon=True)
                t.start()
                threads.append(t)

            kills = 0
            churn_starts = 0
            churn_failed_starts = 0
            churn = None

            def start_churn():
                nonlocal churn_starts, churn_failed_starts
                a = H.App(f"churn{churn_starts}", [sys.executable, os.path.abspath(__file__),
                                                   "--churn", bed.peer_ip,
                                                   str(PEER_ECHO_PORT)], tmp, env=env)
                apps.append(a)
                churn_starts += 1
                return a

            t0 = time.monotonic()
            end = t0 + seconds
            next_kill = t0 + kill_every
            next_sample = t0 + 1.0
            churn = start_churn()
            while time.monotonic() < end:
                now = time.monotonic()
                if now >= next_kill:
                    if churn.proc.poll() is not None and "ready" not in churn.output():
                        churn_failed_starts += 1
                        res.setdefault("churn_failures", []).append(churn.describe(8))
                    churn.kill()
                    churn.proc.wait(5)
                    kills += 1
                    churn = start_churn()
                    next_kill = now + kill_every
                if now >= next_sample:
                    samples.append(sample(d))
                    next_sample = now + 1.0
                time.sleep(0.05)
            # the end: last churn client killed, load stopped
            churn.kill()
            churn.proc.wait(5)
            kills += 1
            stop.set()
            streams.send_line("stop")
            with contextlib.suppress(subprocess.TimeoutExpired):
                wrk.proc.wait(30)
            streams.proc.wait(120)
            for t in threads:
                t.join(15)
            sout = streams.output().strip().splitlines()
            sres = json.loads(sout[-1]) if sout and sout[-1].startswith('{"streams"') \
                else {"streams": [], "error": streams.describe()}
            # idle connections: still open, nothing received, not reset
            idle_alive = 0
            for s in idle:
                s.setblocking(False)
                try:
                    s.recv(1)
                except BlockingIOError:
                    idle_alive += 1
                except OSError:
                    pass
            bed.impair.clear()
            # release the idle ones (bench_app's R), then wait until the slots and ports
            # are back where they started
            rel = bed.socket(bed.peer_ns)
            rel.settimeout(15)
            with contextlib.suppress(OSError):
                rel.connect((bed.srv_ip, APP_PORT))
                rel.sendall(b"R")
                rel.recv(8)
            rel.close()
            for s in idle:
                s.close()
            idle.clear()
            deadline = time.monotonic() + 40
            final = sample(d)
            while time.monotonic() < deadline and (final["slots"] != base["slots"]
                                                   or final["ports"] != base["ports"]
                                                   or final["clients"] != base["clients"]):
                time.sleep(0.5)
                final = sample(d)
            samples.append(final)
            states: dict = {}
            for c in d.conns().get("conns", []):
                states[str(c.get("state"))] = states.get(str(c.get("state")), 0) + 1
            final = dict(final, states=states)
            res.update({
                "wrk": parse_wrk(wrk.output()),
                "bulk": {"streams": len(sres["streams"]),
                         "intact": sum(s["intact"] for s in sres["streams"]),
                         "bytes": sum(s["recv"] for s in sres["streams"]),
                         "errors": [s for s in sres["streams"] if not s["intact"]]},
                "crc": crc.as_dict(),
                "churn": {"kills": kills, "starts": churn_starts,
                          "failed_starts": churn_failed_starts,
                          "peer_side": churn_in.as_dict()},
                "idle": {"held": N_IDLE, "alive_at_end": idle_alive},
                "impair": bed.impair.stats(),
                "base": base, "final": final,
                "rss_mib": {"start": samples[1]["rss_mib"] if len(samples) > 1 else 0,
                            "max": max(s["rss_mib"] for s in samples),
                            "end": final["rss_mib"]},
                "daemon_alive": d.alive(),
                "samples": samples,
            })
            stats = d.stats()
            res["stack"] = {k: sum(int((w.get("stack") or {}).get(k, 0))
                                   for w in stats["workers"])
                            for k in ("passive_opens", "active_opens", "retransmits",
                                      "rto_timeouts", "rst_in", "rst_out", "aborts_on_close",
                                      "internal_errors", "ooo_queued")}
            res["service"] = {}
            for w in stats["workers"]:
                for k, v in (w.get("service") or {}).items():
                    if isinstance(v, int):
                        res["service"][k] = res["service"].get(k, 0) + v
    finally:
        stop.set()
        for s in idle:
            with contextlib.suppress(OSError):
                s.close()
        shutil.rmtree(tmp, ignore_errors=True)
    if png:
        write_png(res, png)
    return res


def write_png(res: dict, path: str) -> None:
    from fpd.pngchart import line_chart
    ss = res["samples"]
    t0 = ss[0]["t"]
    panels = [(name, [(s["t"] - t0, s[key]) for s in ss])
              for name, key in (("DAEMON RSS MIB", "rss_mib"), ("OPEN FDS", "fds"),
                                ("SLOTS IN USE", "slots"), ("LOCAL PORTS IN USE", "ports"),
                                ("CLIENTS", "clients"))]
    png = line_chart(panels, title=f"FPD SOAK {res['seconds']:g} S, LOSS "
                     f"{res['loss'] * 100:g}% REORDER {res['reorder'] * 100:g}%, "
                     f"CLIENT KILLED EVERY {res['kill_every']:g} S", xlabel="SECONDS")
    with open(path, "wb") as f:
        f.write(png)


def report(r: dict) -> str:
    w, b, c, ch = r["wrk"], r["bulk"], r["crc"], r["churn"]
    return "\n".join([
        f"soak {r['seconds']:g} s, loss {r['loss'] * 100:g} % + reorder "
        f"{r['reorder'] * 100:g} % each way (bridge: {r['impair']['to_srv']['lost']}+"
        f"{r['impair']['to_peer']['lost']} lost, {r['impair']['to_srv']['reordered']}+"
        f"{r['impair']['to_peer']['reordered']} reordered)",
        f"http (wrk -c4): {w['requests']} requests, {w.get('bytes', 0) / 1e6:.1f} MB, "
        f"errors {w['errors'] or 'none'}",
        f"bulk echo: {b['intact']}/{b['streams']} streams intact (SHA-256), "
        f"{b['bytes'] / 1e6:.1f} MB echoed",
        f"connect-request-close: {c['ok']} ok, errors {c['errors'] or 'none'}",
        f"idle: {r['idle']['alive_at_end']}/{r['idle']['held']} still open at the end",
        f"churn client: {ch['kills']} SIGKILLs, {ch['starts']} starts "
        f"({ch['failed_starts']} failed); peer->churn: {ch['peer_side']['ok']} ok, errors "
        f"{ch['peer_side']['errors'] or 'none'}",
        f"daemon RSS MiB: start {r['rss_mib']['start']:.1f}, max {r['rss_mib']['max']:.1f}, "
        f"end {r['rss_mib']['end']:.1f}; alive {r['daemon_alive']}",
        f"before load: {_brief(r['base'])}",
        f"at the end:  {_brief(r['final'])}",
        f"stack: {r['stack']}",
    ])


def _brief(s: dict) -> str:
    return (f"slots {s['slots']}, local ports {s['ports']}, clients {s['clients']}, "
            f"fds {s['fds']}, conns {s['conns']} {s.get('states', '')}")


def main(argv=None):
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--churn"]:
        return churn_main(argv[1], int(argv[2]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--loss", type=float, default=0.02)
    ap.add_argument("--reorder", type=float, default=0.02)
    ap.add_argument("--kill-every", type=float, default=3.0)
    ap.add_argument("--png", default=None)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    r = run(a.seconds, a.loss, a.reorder, a.kill_every, a.png)
    if a.json:
        print(json.dumps(r, indent=1, default=str))
    else:
        print(report(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
