"""``fpd demo``: the example apps on fpd next to the same apps on the kernel, driven by real
clients, with a report.

    from fpd import demo
    sys.exit(demo.run(echo=print, quick=False))

What it does (as root; everything lives in a throw-away test bed, see fpd/testbed.py):

1. makes the two-namespace veth test bed (``fpd-srv-*`` 10.77.0.1 on fpd0,
   ``fpd-peer-*`` 10.77.0.2 on fpd1);
2. starts the daemon in the server namespace:
   ``python -m fpd start -i fpd0 -p 7007 -p 8080 --socket TMP/fpd.sock``;
3. runs ``examples/echo_server.py --fpd`` (:7007) and ``examples/http_server.py --fpd``
   (:8080) on fpd — plain processes in the root namespace with ``FPD_SOCKET`` set (the
   unix socket works across network namespaces) — and the same two programs on the
   kernel's TCP in the server namespace (:7107, :8180), plus a kernel HTTP server in the
   peer namespace (:8081) for fpd as a client;
4. drives both from the peer namespace with curl, socat, wrk and a Python kernel-socket
   client; ``examples/http_get.py --fpd`` fetches from the peer's kernel server through
   fpd; prints pass/fail per step and each speed next to the kernel's (fpd/kernel);
5. stops the apps and fpd (``fpd stop``; ``fpd stop --force -i fpd0`` if that fails) and
   removes the test bed — on every path, Ctrl-C and SIGTERM included.

``quick=True`` uses smaller transfers and 1 s wrk runs (about 10 s in all on the
2-core VM). Each speed is measured twice, fpd and kernel interleaved; the best round is
shown.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import daemon as _daemon

EXAMPLES = Path(__file__).resolve().parent / "examples"     # the package fpd.examples

FPD_ECHO, FPD_HTTP = 7007, 8080          # steered to fpd
KERNEL_ECHO, KERNEL_HTTP = 7107, 8180    # same apps on the kernel, server namespace
PEER_HTTP = 8081                         # kernel HTTP server in the peer namespace

REQUIRED_TOOLS = ("ip", "ethtool")
CLIENT_TOOLS = ("curl", "socat", "wrk")

MiB = 1 << 20


@dataclass
class Result:
    """One side (fpd or kernel) of a step."""
    ok: bool
    text: str                  # what the report shows, e.g. "41.2 MB/s"
    speed: float | None = None  # higher is better; the ratio column uses it
    detail: str = ""           # shown under the line when the step fails


@dataclass
class Step:
    name: str
    fpd: Result | None = None
    kernel: Result | None = None
    skipped: str = ""          # reason, when the step could not run
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.skipped and all(r.ok for r in (self.fpd, self.kernel) if r)

    @property
    def status(self) -> str:
        return "SKIP" if self.skipped else "PASS" if self.ok else "FAIL"

    def ratio(self) -> str:
        f, k = self.fpd, self.kernel
        if f and k and f.ok and k.ok and f.speed and k.speed:
            return f"{f.speed / k.speed:.2f}x"
        return ""


class DemoError(Exception):
    """A step that the rest of the demo depends on failed."""


class Demo:
    def __init__(self, echo=print, quick: bool = False, keep_tmp: bool = False):
        self.echo = echo
        self.quick = quick
        self.keep_tmp = keep_tmp
        self.bulk = (8 if quick else 32) * MiB        # curl, http_get
        self.echo_bytes = (4 if quick else 16) * MiB  # socat, Python echo
        self.wrk_secs = 1 if quick else 2
        self.rr_secs = 0.5 if quick else 1.0
        self.rounds = 2                               # per side, interleaved; best shown
        self.steps: list[Step] = []
        self.procs: list[tuple[str, subprocess.Popen, str]] = []
        self.bed = None
        self.tmp = ""
        self.sock = ""
        self.daemon_pid = 0
        self.daemon_log = ""
        self.fpd_argv: list[str] = []
        self.missing: list[str] = []
        self.http_mod = None

    # -- output -----------------------------------------------------------------------
    def say(self, text: str = "") -> None:
        self.echo(text)

    def header(self) -> None:
        self.say(f"  {'step':<36} {'fpd':<24} {'kernel':<24} {'fpd/kernel':>10}  result")

    def report(self, step: Step) -> Step:
        self.steps.append(step)
        if step.skipped:
            self.say(f"  {step.name:<36} {'-':<24} {'-':<24} {'':>10}  SKIP ({step.skipped})")
            return step
        f = step.fpd.text if step.fpd else "-"
        k = step.kernel.text if step.kernel else "-"
        self.say(f"  {step.name:<36} {f:<24} {k:<24} {step.ratio():>10}  {step.status}")
        for side, r in (("fpd", step.fpd), ("kernel", step.kernel)):
            if r and not r.ok and r.detail:
                for line in r.detail.strip().splitlines()[-8:]:
                    self.say(f"      {side}: {line}")
        if step.note:
            self.say(f"      {step.note}")
        return step

    # -- processes ----------------------------------------------------------------------
    def fpd_cmd(self, *args: str) -> list[str]:
        return [*self.fpd_argv, *args]

    def fpd_cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """``fpd ARGS --socket SOCK`` in the server namespace (output captured)."""
        return self.bed.run(self.bed.srv_ns, self.fpd_cmd(*args, "--socket", self.sock),
                            check=False, timeout=timeout)

    def start_app(self, name: str, argv: list[str], ns: str | None, env=None):
        log = os.path.join(self.tmp, name.replace(" ", "_").replace("/", "_") + ".log")
        with open(log, "wb") as out:
            if ns is None:
                p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)
            else:
                p = self.bed.popen(ns, argv, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env)
        self.procs.append((name, p, log))
        return p, log

    @staticmethod
    def tail(path: str, n: int = 12) -> str:
        try:
            with open(path, errors="replace") as f:
                return "\n".join(f.read().splitlines()[-n:])
        except OSError:
            return ""

    def wait_listening(self, name: str, p: subprocess.Popen, log: str,
                       timeout: float = 20) -> Result:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), open(log, errors="replace") as f:
                m = re.search(r"listening on (\S+:\d+) \(([\w.]+)\)", f.read())
                if m:
                    return Result(True, f"{m.group(1)} ({m.group(2)})")
            if p.poll() is not None:
                return Result(False, f"exited ({p.returncode})", detail=self.tail(log))
            time.sleep(0.05)
        return Result(False, "not listening", detail=self.tail(log))

    # -- set-up -------------------------------------------------------------------------
    def check_tools(self) -> None:
        missing_req = [t for t in REQUIRED_TOOLS if not shutil.which(t)]
        self.missing = [t for t in CLIENT_TOOLS if not shutil.which(t)]
        if missing_req:
            raise DemoError(f"missing {', '.join(missing_req)} (make deps installs them)")
        if self.missing:
            self.say(f"  note: {', '.join(self.missing)} not installed: those steps are skipped "
                     f"(`make deps` installs them)")
        spec = importlib.util.spec_from_file_location("fpd_demo_http_server",
                                                      EXAMPLES / "http_server.py")
        self.http_mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.http_mod)

    def start_daemon(self) -> None:
        main_mod = "fpd" if importlib.util.find_spec("fpd.__main__") else "fpd.cli"
        self.fpd_argv = [sys.executable, "-m", main_mod]
        self.daemon_log = os.path.join(self.tmp, "fpd.log")
        argv = ["start", "-i", self.bed.srv_if, "-p", str(FPD_ECHO), "-p", str(FPD_HTTP),
                "--socket", self.sock]
        helptext = self.bed.run(self.bed.srv_ns, self.fpd_cmd("start", "--help"),
                                check=False, timeout=30).stdout
        if "--log" in helptext:
            argv += ["--log", self.daemon_log]
        self.say(f"  daemon     fpd {' '.join(argv)}")
        t0 = time.monotonic()
        out = os.path.join(self.tmp, "fpd-start.out")
        # output to a file, not a pipe: a daemonized child must not hold our pipe open
        try:
            with open(out, "wb") as f:
                rc = self.bed.run(self.bed.srv_ns, self.fpd_cmd(*argv), check=False,
                                  timeout=60, capture_output=False, stdout=f,
                                  stderr=subprocess.STDOUT).returncode
        except subprocess.TimeoutExpired:
            rc = "timed out (60 s)"
        secs = time.monotonic() - t0
        self.daemon_pid = _pid_from_file(self.sock + ".pid")
        if rc != 0 or not self.daemon_pid or not os.path.exists(self.sock):
            detail = self.tail(out) + "\n" + self.tail(self.daemon_log)
            self.report(Step("fpd start", Result(False, f"exit {rc}", detail=detail)))
            raise DemoError("fpd did not start")
        mode = ""
        st = self.fpd_cli("status", "--json", timeout=15)
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            s = json.loads(st.stdout)
            mode = f", {s.get('mode', '?')} XDP, {len(s.get('workers', []))} worker(s)"
        self.report(Step("fpd start", Result(True, f"pid {self.daemon_pid}, {secs:.1f} s"),
                         note=f"serving{mode}" if mode else ""))

    def start_apps(self) -> None:
        py = sys.executable
        env_fpd = dict(os.environ, FPD_SOCKET=self.sock)
        env_k = dict(os.environ)
        env_k.pop("FPD_SOCKET", None)
        echo_py, http_py = str(EXAMPLES / "echo_server.py"), str(EXAMPLES / "http_server.py")
        ns_s, ns_p = self.bed.srv_ns, self.bed.peer_ns
        apps = [
            ("echo on fpd", [py, echo_py, "--fpd", "--port", str(FPD_ECHO)], None, env_fpd),
            ("http on fpd", [py, http_py, "--fpd", "--port", str(FPD_HTTP)], None, env_fpd),
            ("echo on kernel", [py, echo_py, "--port", str(KERNEL_ECHO)], ns_s, env_k),
            ("http on kernel", [py, http_py, "--port", str(KERNEL_HTTP)], ns_s, env_k),
            ("http on peer kernel", [py, http_py, "--port", str(PEER_HTTP)], ns_p, env_k),
        ]
        self.say(f"  on fpd     echo_server.py --fpd :{FPD_ECHO}, http_server.py --fpd "
                 f":{FPD_HTTP} (root namespace, FPD_SOCKET={self.sock})")
        self.say(f"  on kernel  echo_server.py :{KERNEL_ECHO}, http_server.py :{KERNEL_HTTP} "
                 f"(server namespace); http_server.py :{PEER_HTTP} (peer namespace)")
        started = [(name, *self.start_app(name, argv, ns, env)) for name, argv, ns, env in apps]
        res = {name: self.wait_listening(name, p, log) for name, p, log in started}
        for name in ("echo on fpd", "http on fpd"):   # --fpd really swapped the module
            r = res[name]
            if r.ok and "(fpd.client)" not in r.text:
                res[name] = Result(False, r.text, detail=f"{name}: {r.text}, not fpd.client")
        fpd_ok = [res["echo on fpd"], res["http on fpd"]]
        k_ok = [res["echo on kernel"], res["http on kernel"], res["http on peer kernel"]]
        step = Step("apps listening",
                    Result(all(r.ok for r in fpd_ok),
                           f"{sum(r.ok for r in fpd_ok)}/2 on fpd.client",
                           detail="\n".join(r.detail for r in fpd_ok if not r.ok)),
                    Result(all(r.ok for r in k_ok), f"{sum(r.ok for r in k_ok)}/3 on socket",
                           detail="\n".join(r.detail for r in k_ok if not r.ok)))
        self.report(step)
        if not step.ok:
            raise DemoError("the example apps did not start")

    # -- client steps -----------------------------------------------------------------
    def compare(self, name: str, on_fpd, on_kernel, note: str = "") -> Step:
        """Run fpd's and the kernel's side ``rounds`` times, interleaved (so a burst of
        other load on the machine hits both), and report each side's best round; a side
        fails if any of its rounds failed (then no more rounds run)."""
        f_res, k_res = [], []
        for _ in range(self.rounds):
            f_res.append(on_fpd())
            k_res.append(on_kernel())
            if not (f_res[-1].ok and k_res[-1].ok):
                break
        return self.report(Step(name, _best(f_res), _best(k_res), note=note))

    def url(self, port: int, path: str, host: str | None = None) -> str:
        return f"http://{host or self.bed.srv_ip}:{port}{path}"

    def curl(self, port: int, path: str, expect_size: int | None, out: str | None = None,
             expect_sha: str | None = None) -> Result:
        argv = ["curl", "-s", "-o", out or "/dev/null", "-w",
                "%{http_code} %{size_download} %{time_total}", "--max-time", "60",
                self.url(port, path)]
        try:
            p = self.bed.run(self.bed.peer_ns, argv, check=False, timeout=70)
        except subprocess.TimeoutExpired:
            return Result(False, "timed out")
        try:
            code, size, secs = p.stdout.split()
            code, size, secs = int(code), int(size), float(secs)
        except ValueError:
            return Result(False, f"curl exit {p.returncode}", detail=p.stdout + p.stderr)
        ok = p.returncode == 0 and code == 200 and (expect_size is None or size == expect_size)
        detail = f"curl exit {p.returncode}, HTTP {code}, {size} bytes"
        if ok and out and expect_sha:
            got = _sha256_file(out)
            if got != expect_sha:
                ok, detail = False, f"SHA-256 {got} != expected {expect_sha}"
        with contextlib.suppress(OSError):
            if out:
                os.unlink(out)
        if expect_size:
            mbs = size / secs / 1e6 if secs > 0 else 0.0
            return Result(ok, f"{mbs:.1f} MB/s" + (", sha ok" if ok and expect_sha else ""),
                          speed=mbs, detail=detail)
        return Result(ok, f"{code}, {secs * 1000:.1f} ms", speed=1 / secs if secs > 0 else None,
                      detail=detail)

    def step_curl(self) -> None:
        if "curl" in self.missing:
            self.report(Step("curl GET /", skipped="curl not installed"))
            self.report(Step(f"curl GET /bytes/{self.bulk // MiB}MiB",
                             skipped="curl not installed"))
            return
        self.compare("curl GET /", lambda: self.curl(FPD_HTTP, "/", None),
                     lambda: self.curl(KERNEL_HTTP, "/", None))
        n = self.bulk
        sha = self.http_mod.pattern_sha256(n)
        self.compare(f"curl GET /bytes/{n // MiB}MiB",
                     lambda: self.curl(FPD_HTTP, f"/bytes/{n}", n,
                                       os.path.join(self.tmp, "curl-fpd.bin"), sha),
                     lambda: self.curl(KERNEL_HTTP, f"/bytes/{n}", n,
                                       os.path.join(self.tmp, "curl-k.bin"), sha))

    def socat(self, port: int, src: str, sha: str) -> Result:
        dst = src + f".{port}.out"
        argv = ["socat", "-t", "30", "-T", "30", "-b", "65536", "-",
                f"TCP:{self.bed.srv_ip}:{port}"]
        t0 = time.monotonic()
        try:
            with open(src, "rb") as fin, open(dst, "wb") as fout:
                p = self.bed.run(self.bed.peer_ns, argv, check=False, timeout=90,
                                 capture_output=False, stdin=fin, stdout=fout,
                                 stderr=subprocess.PIPE)
        except subprocess.TimeoutExpired:
            return Result(False, "timed out")
        secs = time.monotonic() - t0
        got, size = _sha256_file(dst), os.path.getsize(dst)
        with contextlib.suppress(OSError):
            os.unlink(dst)
        mbs = size / secs / 1e6
        ok = p.returncode == 0 and got == sha
        return Result(ok, f"{mbs:.1f} MB/s, sha {'ok' if got == sha else 'BAD'}", speed=mbs,
                      detail=f"socat exit {p.returncode}, {size} bytes back; {p.stderr}")

    def step_socat(self) -> None:
        name = f"socat echo {self.echo_bytes // MiB}MiB sha256"
        if "socat" in self.missing:
            self.report(Step(name, skipped="socat not installed"))
            return
        src = os.path.join(self.tmp, "socat.in")
        data = os.urandom(self.echo_bytes)
        with open(src, "wb") as f:
            f.write(data)
        sha = hashlib.sha256(data).hexdigest()
        self.compare(name, lambda: self.socat(FPD_ECHO, src, sha),
                     lambda: self.socat(KERNEL_ECHO, src, sha))
        with contextlib.suppress(OSError):
            os.unlink(src)

    def wrk(self, port: int) -> Result:
        argv = ["wrk", "-t1", "-c8", f"-d{self.wrk_secs}s", "--timeout", "5s",
                self.url(port, "/")]
        try:
            p = self.bed.run(self.bed.peer_ns, argv, check=False, timeout=self.wrk_secs + 30)
        except subprocess.TimeoutExpired:
            return Result(False, "timed out")
        m = re.search(r"Requests/sec:\s+([\d.]+)", p.stdout)
        n = re.search(r"(\d+) requests in", p.stdout)
        errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                         r"timeout (\d+)", p.stdout)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", p.stdout)
        nerr = (sum(map(int, errs.groups())) if errs else 0) + \
            (int(non2xx.group(1)) if non2xx else 0)
        if p.returncode != 0 or not m or not n:
            return Result(False, f"wrk exit {p.returncode}", detail=p.stdout + p.stderr)
        rps = float(m.group(1))
        ok = nerr == 0 and int(n.group(1)) > 0
        return Result(ok, f"{rps:,.0f} req/s, {nerr} err", speed=rps, detail=p.stdout)

    def step_wrk(self) -> None:
        name = f"wrk -t1 -c8 -d{self.wrk_secs}s GET /"
        if "wrk" in self.missing:
            self.report(Step(name, skipped="wrk not installed"))
            return
        self.compare(name, lambda: self.wrk(FPD_HTTP), lambda: self.wrk(KERNEL_HTTP))

    def py_bulk(self, port: int) -> Result:
        """Python kernel socket in the peer namespace: N bytes through the echo server."""
        n = self.echo_bytes
        block = os.urandom(MiB)
        sent_h, got_h = hashlib.sha256(), hashlib.sha256()
        got = [0]
        err: list[BaseException] = []
        s = self.bed.socket(self.bed.peer_ns)
        try:
            s.settimeout(30)
            s.connect((self.bed.srv_ip, port))

            def reader():
                try:
                    while True:
                        d = s.recv(MiB)
                        if not d:
                            return
                        got_h.update(d)
                        got[0] += len(d)
                except BaseException as e:  # reported below
                    err.append(e)

            t = threading.Thread(target=reader, daemon=True)
            t0 = time.monotonic()
            t.start()
            left = n
            while left:
                chunk = block[:min(left, len(block))]
                s.sendall(chunk)
                sent_h.update(chunk)
                left -= len(chunk)
            s.shutdown(_sock().SHUT_WR)
            t.join(60)
            secs = time.monotonic() - t0
        except OSError as e:
            return Result(False, type(e).__name__, detail=str(e))
        finally:
            s.close()
        if t.is_alive() or err:
            return Result(False, "no EOF" if not err else type(err[0]).__name__,
                          detail=f"{got[0]} of {n} bytes back; {err[0] if err else ''}")
        ok = got[0] == n and got_h.digest() == sent_h.digest()
        mbs = n / secs / 1e6
        return Result(ok, f"{mbs:.1f} MB/s, sha {'ok' if ok else 'BAD'}", speed=mbs,
                      detail=f"{got[0]} of {n} bytes back")

    def py_rr(self, port: int, size: int = 64) -> Result:
        """Request/response: ``size``-byte messages, one at a time, for rr_secs."""
        msg = bytes(range(size))
        s = self.bed.socket(self.bed.peer_ns)
        count = 0
        try:
            s.settimeout(10)
            s.setsockopt(_sock().IPPROTO_TCP, _sock().TCP_NODELAY, 1)
            s.connect((self.bed.srv_ip, port))
            t0 = time.monotonic()
            end = t0 + self.rr_secs
            while True:
                s.sendall(msg)
                got = 0
                while got < size:
                    d = s.recv(size - got)
                    if not d:
                        raise ConnectionError("EOF from the echo server")
                    got += len(d)
                count += 1
                now = time.monotonic()
                if now >= end:
                    break
            secs = now - t0
        except OSError as e:
            return Result(False, type(e).__name__, detail=f"after {count} round trips: {e}")
        finally:
            s.close()
        rate = count / secs
        return Result(True, f"{rate:,.0f}/s, {1e6 / rate:.0f} us", speed=rate)

    def step_python(self) -> None:
        self.compare(f"python echo {self.echo_bytes // MiB}MiB (kernel client)",
                     lambda: self.py_bulk(FPD_ECHO), lambda: self.py_bulk(KERNEL_ECHO))
        self.compare("python echo 64 B round trips",
                     lambda: self.py_rr(FPD_ECHO), lambda: self.py_rr(KERNEL_ECHO))

    def http_get(self, fpd: bool, url: str, sha: str) -> Result:
        argv = [sys.executable, str(EXAMPLES / "http_get.py"), "--json", url]
        try:
            if fpd:
                env = dict(os.environ, FPD_SOCKET=self.sock)
                p = subprocess.run(argv[:2] + ["--fpd"] + argv[2:], env=env,
                                   capture_output=True, text=True, timeout=90,
                                   stdin=subprocess.DEVNULL)
            else:
                env = dict(os.environ)
                env.pop("FPD_SOCKET", None)
                p = self.bed.run(self.bed.srv_ns, argv, check=False, timeout=90, env=env)
        except subprocess.TimeoutExpired:
            return Result(False, "timed out")
        try:
            res = json.loads(p.stdout)
        except ValueError:
            return Result(False, f"exit {p.returncode}", detail=p.stdout + p.stderr)
        ok = p.returncode == 0 and res.get("sha256") == sha
        mbs = res.get("mb_per_s", 0.0)
        return Result(ok, f"{mbs:.1f} MB/s, sha {'ok' if res.get('sha256') == sha else 'BAD'}",
                      speed=mbs, detail=p.stdout + p.stderr)

    def step_http_get(self) -> None:
        n = self.bulk
        sha = self.http_mod.pattern_sha256(n)
        url = self.url(PEER_HTTP, f"/bytes/{n}", host=self.bed.peer_ip)
        self.compare(f"http_get.py {n // MiB}MiB from peer kernel",
                     lambda: self.http_get(True, url, sha),
                     lambda: self.http_get(False, url, sha),
                     note="fpd as the client: http_get.py --fpd in the root namespace; "
                          "kernel: the same program in the server namespace")

    def show_stats(self) -> None:
        p = self.fpd_cli("stats", "--json", timeout=15)
        try:
            st = json.loads(p.stdout)
        except ValueError:
            return
        parts = []
        xdp = st.get("xdp") or {}
        for k in ("steered", "redirected", "passed"):
            if isinstance(xdp.get(k), int):
                parts.append(f"xdp {k} {xdp[k]:,}")
        for w in st.get("workers") or []:
            vals = [f"{k} {w[k]:,}" for k in ("rx_frames", "tx_frames")
                    if isinstance(w.get(k), int)]
            if vals:
                parts.append(f"q{w.get('queue', '?')}: " + ", ".join(vals))
        if parts:
            self.say(f"  fpd stats  {'; '.join(parts)}")

    # -- tear-down ----------------------------------------------------------------------
    def stop_apps(self) -> Step | None:
        if not self.procs:
            return None
        codes = []
        for _name, p, _log in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for name, p, log in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                p.wait(5)
            codes.append((name, p.returncode, log))
        self.procs = []
        bad = [(n, c, log) for n, c, log in codes if c != 0]
        return Step("apps exit on SIGTERM",
                    Result(True, f"{len(codes) - len(bad)}/{len(codes)} exit 0")
                    if not bad else
                    Result(False, f"{len(codes) - len(bad)}/{len(codes)} exit 0",
                           detail="\n".join(f"{n}: exit {c}\n{self.tail(log, 5)}"
                                            for n, c, log in bad)))

    def stop_daemon(self) -> Step | None:
        if not self.fpd_argv or self.bed is None:
            return None                      # fpd start never ran
        if not self.daemon_pid:
            # interrupted during `fpd start`: the daemon may still be writing its files
            deadline = time.monotonic() + 3
            while not os.path.exists(self.sock + ".pid") and time.monotonic() < deadline:
                time.sleep(0.1)
            self.daemon_pid = _pid_from_file(self.sock + ".pid")
        if not self.daemon_pid and not any(os.path.exists(self.sock + s)
                                           for s in ("", ".pid", ".state")):
            # start failed before serving: make sure nothing is left on the interface
            with contextlib.suppress(Exception):
                self.bed.run(self.bed.srv_ns, self.fpd_cmd(
                    "stop", "--force", "-i", self.bed.srv_if, "--socket", self.sock),
                    check=False, timeout=30)
            return None
        self.daemon_pid = self.daemon_pid or _pid_from_file(self.sock + ".pid")
        problems = []
        t0 = time.monotonic()
        try:
            p = self.fpd_cli("stop", timeout=30)
            if p.returncode != 0:
                problems.append(f"fpd stop: exit {p.returncode}: {(p.stderr or '').strip()}")
        except subprocess.TimeoutExpired:
            problems.append("fpd stop hung (30 s)")
        if self.daemon_pid and not _wait_gone(self.daemon_pid, 8):
            problems.append(f"daemon pid {self.daemon_pid} still alive: SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.daemon_pid, signal.SIGKILL)
            _wait_gone(self.daemon_pid, 3)
        secs = time.monotonic() - t0
        left = [s for s in ("", ".pid", ".state") if os.path.exists(self.sock + s)]
        if problems or left:
            if left:
                problems.append("left behind: " + ", ".join(self.sock + s for s in left))
            with contextlib.suppress(Exception):
                p = self.bed.run(self.bed.srv_ns, self.fpd_cmd(
                    "stop", "--force", "-i", self.bed.srv_if, "--socket", self.sock),
                    check=False, timeout=30)
                problems.append(f"fpd stop --force -i {self.bed.srv_if}: exit {p.returncode}")
            with contextlib.suppress(Exception):  # last resort for the XDP program
                from fpd.bpf import force_detach
                with self.bed.inside(self.bed.srv_ns):
                    force_detach(self.bed.srv_if)
        self.daemon_pid = 0
        if problems:
            return Step("fpd stop", Result(False, "problems", detail="\n".join(problems) + "\n"
                                           + self.tail(self.daemon_log)))
        return Step("fpd stop", Result(True, f"{secs:.1f} s, files removed"))

    def teardown(self) -> list[Step]:
        out = []
        for fn in (self.stop_apps, self.stop_daemon):
            try:
                step = fn()
            except Exception as e:  # keep tearing down
                step = Step(fn.__name__, Result(False, type(e).__name__, detail=str(e)))
            if step:
                out.append(step)
        if self.bed is not None:
            self.bed.down()
            self.bed = None
        if self.tmp and not self.keep_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return out

    # -- the whole demo -----------------------------------------------------------------
    def run(self) -> int:
        from fpd.testbed import TestBed, TestBedError

        t_start = time.monotonic()
        self.say(f"fpd demo{' (quick)' if self.quick else ''}: the example apps on fpd and "
                 f"on the kernel, driven by curl, socat, wrk and Python from a peer namespace")
        if os.geteuid() != 0:
            self.say("fpd demo needs root (network namespaces, XDP, AF_XDP)")
            return 2
        interrupted = False
        failed = ""
        owner = os.getpid()
        try:
            self.check_tools()
            self.tmp = tempfile.mkdtemp(prefix="fpd-demo-")
            os.chmod(self.tmp, 0o755)
            self.sock = os.path.join(self.tmp, "fpd.sock")
            self.bed = TestBed()
            try:
                self.bed.up()
            except (TestBedError, OSError, subprocess.SubprocessError) as e:
                raise DemoError(f"cannot make the test bed: {e}") from None
            b = self.bed
            self.say(f"  test bed   {b.srv_ns} ({b.srv_if} {b.srv_ip}) <-> {b.peer_ns} "
                     f"({b.peer_if} {b.peer_ip})")
            self.say(f"  work dir   {self.tmp}")
            self.start_daemon()
            self.start_apps()
            self.say("")
            self.say(f"  each figure: the best of {self.rounds} rounds, fpd and kernel "
                     f"interleaved; fpd/kernel = fpd's speed / the kernel's")
            self.header()
            for fn in (self.step_curl, self.step_socat, self.step_wrk, self.step_python,
                       self.step_http_get):
                fn()
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self.show_stats()
        except KeyboardInterrupt:
            interrupted = True
        except DemoError as e:
            failed = str(e)
        except Exception as e:  # report, then tear down
            failed = f"{type(e).__name__}: {e}"
        finally:
            if os.getpid() != owner:
                # a forked child of this process (pyroute2 forks to make a namespace)
                # unwinding: it must not tear down the parent's test bed
                os._exit(70)
            with _signals_ignored():
                for step in self.teardown():
                    self.report(step)
        if interrupted:
            self.say("interrupted: everything was stopped and removed")
            return 130
        if failed:
            self.say(f"error: {failed}")
        passed = sum(s.ok for s in self.steps)
        skipped = [s for s in self.steps if s.skipped]
        bad = [s for s in self.steps if not s.ok and not s.skipped]
        ok = not failed and not bad
        secs = time.monotonic() - t_start
        summary = f"{passed} passed, {len(bad)} failed, {len(skipped)} skipped"
        self.say("")
        self.say(f"RESULT: {'PASS' if ok else 'FAIL'} ({summary}; {secs:.0f} s)")
        if bad:
            self.say("  failed: " + ", ".join(s.name for s in bad))
        if ok:
            self.say("  fpd/kernel > 1 would mean fpd was faster; this is a Python TCP engine "
                     "next to the kernel's, on a veth pair")
        return 0 if ok else 1


def _best(results: list[Result]) -> Result:
    """The first failed round, else the fastest."""
    for r in results:
        if not r.ok:
            return r
    return max(results, key=lambda r: r.speed or 0.0)


def _sock():
    import socket
    return socket


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(MiB):
                h.update(chunk)
    except OSError:
        return ""
    return h.hexdigest()


_pid_from_file = _daemon.read_pid
_alive = _daemon.pid_alive


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@contextlib.contextmanager
def _signals_ignored():
    """SIGINT/SIGTERM are ignored while tearing down (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM raises KeyboardInterrupt (like Ctrl-C) for the body (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:
            # a forked child (pyroute2 forks to create a namespace and may SIGTERM it):
            # it must die, not unwind through the demo and tear down the parent's bed
            os._exit(128 + signum)
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run(echo=print, quick: bool = False, keep_tmp: bool = False) -> int:
    """Run the demo; returns the exit code (0: every step passed)."""
    with _sigterm_interrupts():
        return Demo(echo=echo, quick=quick, keep_tmp=keep_tmp).run()


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m fpd.demo", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller transfers, about 30 s")
    args = ap.parse_args(argv)
    return run(echo=lambda s: print(s, flush=True), quick=args.quick)


if __name__ == "__main__":
    sys.exit(main())
