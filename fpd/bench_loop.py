"""``fpd bench asyncio``: one asyncio app on three event loops, driven by C load generators.

    fpd bench asyncio [--rounds 3] [--duration 3] [--variants ...] [--workloads ...]
                      [--json FILE] [--profile] [--cpus 0,1 | --no-pin]

``command`` is the click command (a subcommand of ``fpd bench``, fpd/cli.py); ``main``
takes an :class:`Options`.

The same asyncio ``Protocol`` app (an echo for request/response and connect-request-close,
a 13-byte HTTP response for wrk) runs in the server namespace of one test bed as

    default   asyncio's default loop, kernel sockets
    uvloop    uvloop (libuv), kernel sockets
    fpd       asyncio.run() under ``fpd run``: fpd's loop, the engine in the app's thread

plus, for ``rr_1B_1c`` only, a blocking threaded socket server on the kernel
(``blocking``) and the same program under ``fpd run`` (``blocking-fpd``, fpd.client).

The load generators run in the peer namespace and are C: ``wrk`` for HTTP and a small
client compiled here with gcc (epoll, TCP_NODELAY, one outstanding request per
connection, nanosecond latencies) for request/response and connect-request-close: a
Python client tops out near 15 k round trips/s on this kind of machine, below what the
loops can serve. The server's processes are pinned to one CPU and the load generator
to another (``--cpus``, ``--no-pin``). Rounds are interleaved (every variant once per round, order rotating);
the report gives medians over the rounds and the ratio fpd/uvloop. Never a test: the
numbers are reported, nothing is asserted.

``--profile`` also runs the fpd and blocking-fpd variants once each under cProfile (the
worker's process, every thread) for the 1 B request/response and prints the time per
transaction in parse, engine input, engine send, frame build, TX kick, the app's own
code and the total not asleep (cProfile's own overhead inflates every figure alike).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pstats
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import click

PORT = 7600
PIN: tuple | None = (0, 1)      # (server CPU, load generator CPU); None: no pinning

WORKLOADS = {
    "rr_1B_1c": "request/response 1 B, 1 connection (trans/s, p50/p99 us)",
    "rr_1B_32c": "request/response 1 B, 32 connections (trans/s, p50/p99 us)",
    "http_32c": "HTTP keep-alive, wrk -c32 (req/s, p50/p99 us)",
    "crr": "connect-request-close, 1 at a time (conn/s, p50/p99 us)",
}
VARIANTS = ("default", "uvloop", "fpd", "blocking", "blocking-fpd", "blocking-fpd-shm")
BLOCKING_WORKLOADS = ("rr_1B_1c",)

APP = textwrap.dedent(r'''
    import asyncio, socket, sys, threading
    mode, loop_name, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    RESP = (b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\n"
            b"Hello, World!")

    class Echo(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t
        def data_received(self, d):
            self.t.write(d)

    class Http(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t
            self.buf = b""
        def data_received(self, d):
            b = self.buf + d
            n = b.count(b"\r\n\r\n")
            if n:
                self.t.write(RESP * n)
                b = b[b.rfind(b"\r\n\r\n") + 4:]
            self.buf = b

    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(Echo if mode == "echo" else Http, "0.0.0.0", port,
                                       backlog=1024)
        print("ready", type(loop).__name__, flush=True)
        async with srv:
            await srv.serve_forever()

    def blocking():
        srv = socket.create_server(("0.0.0.0", port), backlog=128)
        print("ready blocking", socket.__name__, flush=True)
        def serve(c):
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
            c.close()
        while True:
            c, _ = srv.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    try:
        if loop_name == "blocking":
            blocking()
        elif loop_name == "uvloop":
            import uvloop
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
                r.run(main())
        else:
            asyncio.run(main())
    except KeyboardInterrupt:
        pass
''')

CLIENT_C = r'''
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + t.tv_nsec;
}
static int cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}
#define MAXS 4000000
static uint64_t lat[MAXS];
static size_t nlat;

static int dial(struct sockaddr_in *sa) {
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (s < 0) { perror("socket"); exit(2); }
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(s, (struct sockaddr *)sa, sizeof *sa) < 0) { perror("connect"); exit(2); }
    return s;
}
static void report(uint64_t count, double secs) {
    qsort(lat, nlat, sizeof lat[0], cmp);
    double p50 = nlat ? lat[nlat / 2] / 1000.0 : 0, p99 = nlat ? lat[(nlat * 99) / 100] / 1000.0 : 0;
    printf("%llu %.3f %.1f %.1f\n", (unsigned long long)count, secs, p50, p99);
}
int main(int argc, char **argv) {
    if (argc < 6) { fprintf(stderr, "usage: rr|crr HOST PORT CONNS SECONDS\n"); return 2; }
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET; sa.sin_port = htons(atoi(argv[3]));
    inet_pton(AF_INET, argv[2], &sa.sin_addr);
    int conns = atoi(argv[4]);
    double secs = atof(argv[5]);
    char b = 'x';
    uint64_t count = 0, t0 = now_ns(), end = t0 + (uint64_t)(secs * 1e9);
    if (!strcmp(argv[1], "crr")) {
        /* per phase too: connect() returned, the answer read, close() returned */
        static uint64_t ph[3][MAXS / 4];
        size_t nph = 0;
        while (now_ns() < end) {
            uint64_t a = now_ns();
            int s = dial(&sa);
            uint64_t c = now_ns();
            if (write(s, &b, 1) != 1) { perror("write"); return 2; }
            if (read(s, &b, 1) != 1) { perror("read"); return 2; }
            uint64_t r = now_ns();
            close(s);
            uint64_t z = now_ns();
            if (nlat < MAXS) lat[nlat++] = z - a;
            if (nph < MAXS / 4) { ph[0][nph] = c - a; ph[1][nph] = r - c; ph[2][nph] = z - r; nph++; }
            count++;
        }
        double secs_ = (now_ns() - t0) / 1e9;
        qsort(lat, nlat, sizeof lat[0], cmp);
        printf("%llu %.3f %.1f %.1f", (unsigned long long)count, secs_,
               nlat ? lat[nlat / 2] / 1000.0 : 0, nlat ? lat[(nlat * 99) / 100] / 1000.0 : 0);
        for (int k = 0; k < 3; k++) {
            qsort(ph[k], nph, sizeof ph[k][0], cmp);
            printf(" %.1f", nph ? ph[k][nph / 2] / 1000.0 : 0);
        }
        printf("\n");
        return 0;
    }
    int ep = epoll_create1(0);
    int *fd = calloc(conns, sizeof *fd);
    uint64_t *sent = calloc(conns, sizeof *sent);
    for (int i = 0; i < conns; i++) {
        fd[i] = dial(&sa);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd[i], &ev);
    }
    t0 = now_ns(); end = t0 + (uint64_t)(secs * 1e9);
    for (int i = 0; i < conns; i++) { sent[i] = now_ns(); if (write(fd[i], &b, 1) != 1) return 2; }
    struct epoll_event evs[64];
    for (;;) {
        int n = epoll_wait(ep, evs, 64, 10000);
        if (n <= 0) { fprintf(stderr, "stalled: no answer on any connection for 10 s\n"); return 3; }
        uint64_t t = now_ns();
        for (int k = 0; k < n; k++) {
            int i = evs[k].data.u32;
            char buf[64];
            ssize_t r = read(fd[i], buf, sizeof buf);
            if (r <= 0) { fprintf(stderr, "connection closed\n"); return 3; }
            for (ssize_t j = 0; j < r; j++) {
                if (nlat < MAXS) lat[nlat++] = t - sent[i];
                count++;
            }
            if (t < end) { sent[i] = now_ns(); if (write(fd[i], &b, 1) != 1) return 2; }
        }
        if (t >= end) break;
    }
    report(count, (now_ns() - t0) / 1e9);
    return 0;
}
'''


class BenchError(RuntimeError):
    pass


def _compile(tmp: str) -> str:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise BenchError("a C compiler (gcc) is needed for the load generator")
    src = os.path.join(tmp, "rrclient.c")
    exe = os.path.join(tmp, "rrclient")
    with open(src, "w") as f:
        f.write(CLIENT_C)
    subprocess.run([gcc, "-O2", "-o", exe, src], check=True, capture_output=True)
    return exe


@contextlib.contextmanager
def _server(bed, variant: str, mode: str, tmp: str, profile: str | None = None):
    app = os.path.join(tmp, "app.py")
    loop = {"default": "default", "uvloop": "uvloop", "fpd": "default",
            "blocking": "blocking", "blocking-fpd": "blocking",
            "blocking-fpd-shm": "blocking"}[variant]
    argv = [app, mode, loop, str(PORT)]
    env = dict(os.environ)
    if variant in ("fpd", "blocking-fpd", "blocking-fpd-shm"):
        sock = os.path.join(tmp, "fpd.sock")
        argv = [sys.executable, "-m", "fpd", "run", "-i", bed.srv_if, "-p", str(PORT),
                "--mode", "native", "--socket", sock, "--log", os.path.join(tmp, "fpd.log"),
                "--"] + argv
        if profile:
            env["FPD_RUN_PROFILE"] = profile
        if variant == "blocking-fpd-shm":
            env["FPD_RUN_SHM"] = "1"         # fpd.client's shared-memory path instead
    else:
        argv = [sys.executable] + argv
    out = open(os.path.join(tmp, f"server-{variant}.txt"), "w+")
    p = bed.popen(bed.srv_ns, argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        end = time.monotonic() + 30
        while True:
            out.seek(0)
            if "ready" in out.read():
                break
            if p.poll() is not None or time.monotonic() > end:
                out.seek(0)
                raise BenchError(f"{variant} server did not start:\n{out.read()[-2000:]}")
            time.sleep(0.05)
        time.sleep(0.2)
        if PIN is not None:
            for pid in _tree(p.pid):
                subprocess.run(["taskset", "-a", "-p", "-c", str(PIN[0]), str(pid)],
                               capture_output=True)
        yield p
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGINT if "fpd" in variant else signal.SIGKILL)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        out.close()


def _tree(pid: int) -> list[int]:
    out = [pid]
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    for k in kids.split():
        out += _tree(int(k))
    return out


def _lg(argv: list) -> list:
    return (["taskset", "-c", str(PIN[1])] if PIN is not None else []) + argv


def _run_client(bed, exe, kind, conns, secs) -> dict:
    p = bed.run(bed.peer_ns, _lg([exe, kind, bed.srv_ip, str(PORT), str(conns), str(secs)]),
                check=False, timeout=secs + 30)
    if p.returncode != 0:
        raise BenchError(f"load generator {kind} failed: {p.stderr.strip()}")
    n, dur, p50, p99, *phases = p.stdout.split()
    r = {"rate": int(n) / float(dur), "p50_us": float(p50), "p99_us": float(p99)}
    if phases:              # crr: p50 of connect(), write+read, close() in us
        r.update(zip(("connect_p50_us", "answer_p50_us", "close_p50_us"),
                     (float(x) for x in phases)))
    return r


def _unit_us(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    v = float(m.group(1))
    return v * {"us": 1, "ms": 1000, "s": 1e6}[m.group(2)]


def _run_wrk(bed, secs) -> dict:
    p = bed.run(bed.peer_ns, _lg(["wrk", "-t1", "-c32", f"-d{secs:g}s", "--latency",
                                  f"http://{bed.srv_ip}:{PORT}/"]), check=False, timeout=secs + 30)
    m = re.search(r"Requests/sec:\s+([\d.]+)", p.stdout)
    if p.returncode != 0 or not m:
        raise BenchError(f"wrk failed: {p.stdout} {p.stderr}")
    errs = re.search(r"Socket errors: (.*)", p.stdout)
    lat = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+(\S+)", p.stdout, re.M))
    return {"rate": float(m.group(1)), "p50_us": _unit_us(lat.get("50", "0us")),
            "p99_us": _unit_us(lat.get("99", "0us")),
            "errors": errs.group(1) if errs else ""}


def _cpu_seconds(pids) -> float:
    """User + system CPU time of ``pids`` (all their threads), in seconds."""
    tot = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                st = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tot += int(st[11]) + int(st[12])
    return tot / os.sysconf("SC_CLK_TCK")


def measure(bed, exe, variant, workload, secs, server=None):
    """One measurement; with ``server`` (the server's Popen) also the server's CPU time
    per operation (``cpu_us``: robust to a neighbour's load, unlike the rate)."""
    pids = _tree(server.pid) if server is not None else []
    c0 = _cpu_seconds(pids)
    if workload == "http_32c":
        r = _run_wrk(bed, secs)
    elif workload == "crr":
        r = _run_client(bed, exe, "crr", 1, secs)
    else:
        conns = 32 if workload.endswith("32c") else 1
        r = _run_client(bed, exe, "rr", conns, secs)
    if pids:
        ops = r["rate"] * secs
        r["cpu_us"] = (_cpu_seconds(pids) - c0) / ops * 1e6 if ops else 0.0
    return r


def _mode(workload):
    return "http" if workload.startswith("http") else "echo"


PROFILE_PARTS = {
    # name: ((file, function), ...) whose inclusive time is summed
    "parse": (("wire.py", "parse_burst"), ("wire.py", "parse_frame")),
    "engine_input": (("stack.py", "input"),),
    "engine_send": (("tcp.py", "send"),),
    "build": (("wire.py", "build_frame_into"), ("wire.py", "stamp_frames")),
    "kick": (("xsk.py", "tx_submit"),),
}
# time asleep, not work: left out of the per-transaction total
_IDLE = {"<method 'poll' of 'select.poll' objects>", "<method 'acquire' of '_thread.lock' "
         "objects>", "<method 'select' of 'select.epoll' objects>",
         "<method 'poll' of 'select.epoll' objects>", "<built-in method time.sleep>"}


def profile_fpd(bed, exe, tmp, secs, variant="fpd") -> dict:
    """One cProfile'd run of ``variant`` (fpd: the asyncio app; blocking-fpd: the
    threaded blocking server, every thread profiled) on rr_1B_1c: us per transaction
    in parse, engine input (the request segment), engine send (the answer), frame
    build, TX kick, the app's own code, and the total not asleep."""
    prof = os.path.join(tmp, f"{variant}.prof")
    with _server(bed, variant, "echo", tmp, profile=prof):
        r = _run_client(bed, exe, "rr", 1, secs)
    n = max(r["rate"] * secs, 1)
    st = pstats.Stats(prof + ".q0")
    out = {"transactions": int(n), "rate_under_profile": r["rate"]}
    for name, funcs in PROFILE_PARTS.items():
        tot = 0.0
        for (f, _line, fn), (_cc, _nc, _tt, ct, _callers) in st.stats.items():
            if any(f.endswith(ff) and fn == func for ff, func in funcs):
                tot += ct
        out[name + "_us"] = round(tot / n * 1e6, 2)
    app = busy = 0.0
    for (f, _line, fn), (_cc, _nc, tt, _ct, _callers) in st.stats.items():
        if f.endswith("app.py"):
            app += tt
        if fn not in _IDLE:
            busy += tt
    out["app_us"] = round(app / n * 1e6, 2)
    out["total_us"] = round(busy / n * 1e6, 2)
    return out


PEER_SYSCTLS = {
    # connect-request-close leaves one TIME_WAIT socket per connection on the client
    # (it closes first). Linux gives connect() the even half of ip_local_port_range
    # first (~14 k ports by default); once TIME_WAIT holds those, every connect() scans
    # for a free port and costs milliseconds: the crr rate then measures the client's
    # port search, and whichever variant runs after the first one pays it. Let connect()
    # reuse a TIME_WAIT port (RFC 7323 timestamps keep that safe, as load generators'
    # hosts do) and give it a wider range. Inside the test bed's peer namespace only.
    "net.ipv4.tcp_tw_reuse": "1",
    "net.ipv4.ip_local_port_range": "10000 65000",
}


def prepare_peer(bed) -> None:
    """The load generator's namespace settings (:data:`PEER_SYSCTLS`)."""
    for k, v in PEER_SYSCTLS.items():
        bed.run(bed.peer_ns, ["sysctl", "-q", "-w", f"{k}={v}"])


def run(args) -> dict:
    from .testbed import TestBed
    variants = [v for v in args.variants.split(",") if v]
    workloads = [w for w in args.workloads.split(",") if w]
    for v in variants:
        if v not in VARIANTS:
            raise BenchError(f"unknown variant {v!r} (one of {', '.join(VARIANTS)})")
    if "uvloop" in variants:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise BenchError("uvloop is not installed (pip install -e .[test])") from None
    if "http_32c" in workloads and shutil.which("wrk") is None:
        raise BenchError("wrk is needed for http_32c (apt: wrk)")
    tmp = tempfile.mkdtemp(prefix="fpd-bench-loop-")
    raw: dict = {w: {v: [] for v in variants} for w in workloads}
    prof = None
    try:
        with open(os.path.join(tmp, "app.py"), "w") as f:
            f.write(APP)
        exe = _compile(tmp)
        with TestBed(peer_tx_csum=True) as bed:
            prepare_peer(bed)
            for rnd in range(args.rounds):
                order = variants[rnd % len(variants):] + variants[:rnd % len(variants)]
                for v in order:
                    for mode in ("echo", "http"):
                        wls = [w for w in workloads if _mode(w) == mode and
                               (not v.startswith("blocking") or w in BLOCKING_WORKLOADS)]
                        if not wls:
                            continue
                        with _server(bed, v, mode, tmp) as srv:
                            for w in wls:
                                r = measure(bed, exe, v, w, args.duration, srv)
                                raw[w][v].append(r)
                                if not args.quiet:
                                    print(f"round {rnd + 1} {v:12} {w:10} {r['rate']:10.0f}/s "
                                          f"p50 {r['p50_us']:8.1f} us p99 {r['p99_us']:8.1f} us"
                                          f" cpu {r.get('cpu_us', 0):6.1f} us/op" +
                                          (f" (p50 connect {r['connect_p50_us']:.0f} answer "
                                           f"{r['answer_p50_us']:.0f} close "
                                           f"{r['close_p50_us']:.0f} us)"
                                           if "connect_p50_us" in r else ""),
                                          file=sys.stderr, flush=True)
            if args.profile:
                prof = {v: profile_fpd(bed, exe, tmp, args.duration, v)
                        for v in ("fpd", "blocking-fpd") if v in variants}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res: dict = {"rounds": args.rounds, "duration": args.duration, "workloads": {}}
    for w, per in raw.items():
        res["workloads"][w] = {}
        for v, rs in per.items():
            if not rs:
                continue
            keys = [k for k, x in rs[0].items() if isinstance(x, float)]
            res["workloads"][w][v] = {
                k: statistics.median(r.get(k, 0.0) for r in rs) for k in keys}
            res["workloads"][w][v]["samples"] = [round(r["rate"]) for r in rs]
    if prof:
        res["profile_rr_1B_1c"] = prof
    return res


def table(res: dict) -> str:
    lines = [f"{'workload':11} {'variant':16} {'rate/s':>10} {'p50 us':>9} {'p99 us':>9}  "
             f"{'vs uvloop':>9} {'vs kernel':>9} {'cpu us/op':>9}"]
    for w, per in res["workloads"].items():
        uv = per.get("uvloop", {}).get("rate")
        for v, r in per.items():
            base = per.get("blocking" if v.startswith("blocking") else "default", {}).get("rate")
            ru = f"{r['rate'] / uv:.2f}x" if uv and not v.startswith("blocking") else ""
            rk = f"{r['rate'] / base:.2f}x" if base else ""
            lines.append(f"{w:11} {v:16} {r['rate']:10.0f} {r['p50_us']:9.1f} "
                         f"{r['p99_us']:9.1f}  {ru:>9} {rk:>9} {r.get('cpu_us', 0):9.1f}")
    for v, p in (res.get("profile_rr_1B_1c") or {}).items():
        lines.append(f"profile ({v}, rr 1 B, cProfile, us per transaction): " +
                     ", ".join(f"{k[:-3]} {x}" for k, x in p.items() if k.endswith("_us")))
    return "\n".join(lines)


@dataclasses.dataclass
class Options:
    """What ``fpd bench asyncio`` is asked to do (the click command fills it)."""
    rounds: int = 3
    duration: float = 3.0
    variants: str = ",".join(VARIANTS)
    workloads: str = ",".join(WORKLOADS)
    json: str | None = None
    profile: bool = False
    cpus: str = "0,1"
    no_pin: bool = False
    quiet: bool = False


def main(opts: Options) -> int:
    """Run the benchmark and print the table; the exit status."""
    if os.geteuid() != 0:
        print("fpd bench asyncio: needs root (test bed, XDP)", file=sys.stderr)
        return 1
    global PIN
    PIN = None if opts.no_pin or shutil.which("taskset") is None else \
        tuple(int(x) for x in opts.cpus.split(","))[:2]
    try:
        res = run(opts)
    except (BenchError, subprocess.SubprocessError, KeyboardInterrupt) as e:
        print(f"fpd bench asyncio: {e}", file=sys.stderr)
        return 1
    print(table(res))
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


@click.command("asyncio", help="One asyncio app on the default loop, uvloop and fpd's "
               "loop (fpd run), C load generators in a test bed (root). See "
               "docs/LOOP.md.")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True,
              help="Interleaved rounds.")
@click.option("--duration", type=float, default=3.0, show_default=True,
              help="Seconds per measurement.")
@click.option("--variants", default=",".join(VARIANTS), show_default=True)
@click.option("--workloads", default=",".join(WORKLOADS), show_default=True)
@click.option("--json", "json_path", metavar="FILE", help="Write the results as JSON.")
@click.option("--profile", is_flag=True,
              help="Also profile fpd's loop and the blocking program under fpd run on "
                   "rr_1B_1c (cProfile).")
@click.option("--cpus", default="0,1", show_default=True, metavar="SERVER,LOADGEN",
              help="Pin the server's process tree and the load generator.")
@click.option("--no-pin", is_flag=True, help="Do not pin anything.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
def command(rounds, duration, variants, workloads, json_path, profile, cpus, no_pin,
            quiet):
    sys.exit(main(Options(rounds, duration, variants, workloads, json_path, profile, cpus,
                          no_pin, quiet)))


if __name__ == "__main__":
    command()
