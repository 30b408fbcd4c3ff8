"""``fpd trace``: live, why frames are dropped or not steered.

Two sources, both read while the daemon serves:

- the kernel's XDP tracepoints ``xdp:xdp_exception`` (the program returned XDP_ABORTED or
  an action the driver refused) and ``xdp:xdp_redirect_err`` (a redirect into an AF_XDP
  socket failed: no socket in ``fpd_xsks`` for that queue, its RX ring full, ...),
  filtered on fpd's program id, through a private tracefs instance
  (``/sys/kernel/tracing/instances/fpd-trace-PID``, removed on exit; the global trace
  buffer is not touched);
- the counters ``fpd stats`` reads, polled every ``--interval`` and printed as deltas
  when they move: the XDP program's ``passed`` (frames left to the kernel: not steered),
  ``malformed``, ``redirect_failed``; each socket's XDP statistics (``rx_dropped``,
  ``rx_ring_full``, ``rx_fill_ring_empty_descs`` = fill-ring starvation, invalid
  descriptors); the worker's own drops.

Why tracefs and not bcc: bcc compiles its programs at run time against the running
kernel's headers (``/lib/modules/$(uname -r)/build``); kernels without a headers package
(a custom or cloud kernel, this project's 6.18) cannot use it at all, while the two
tracepoints carry everything needed in their text form and tracefs needs nothing but
root. ``fpd doctor`` says whether bcc would work here.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import re
import subprocess
import time

TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
EVENTS = ("xdp/xdp_exception", "xdp/xdp_redirect_err")
_LINE = re.compile(r"(?P<event>xdp_exception|xdp_redirect_err):\s+(?P<fields>.*)$")

# why a redirect into an XSKMAP fails (kernel: __xsk_map_redirect / xsk_rcv)
REDIRECT_ERRORS = {
    _errno.ENXIO: "no AF_XDP socket in fpd_xsks for this queue (a worker missing or not "
                  "ready): the frame is dropped",
    _errno.ENOENT: "no AF_XDP socket in fpd_xsks for this queue: the frame is dropped",
    _errno.ENOBUFS: "the socket's RX ring or the fill ring is full: the worker does not "
                    "keep up (see rx_ring_full / rx_fill_ring_empty_descs)",
    _errno.ENOSPC: "the socket's RX ring is full: the worker does not keep up",
    _errno.EINVAL: "the frame does not fit a UMEM chunk (MTU larger than the chunk, or "
                   "TSO/GRO on the peer in generic mode)",
    _errno.EMSGSIZE: "the frame does not fit a UMEM chunk (MTU too large)",
    _errno.ENETDOWN: "the socket is not bound or the interface went down",
}

# counter -> what it means for the operator
COUNTERS = {
    "xdp.passed": "frames left to the kernel (not steered: other ports, ARP, ICMP...)",
    "xdp.malformed": "frames the XDP program could not parse (left to the kernel)",
    "xdp.redirect_failed": "steered frames whose redirect failed (see xdp_redirect_err)",
    "xsk.rx_dropped": "frames the kernel dropped for the socket (no room / bad length)",
    "xsk.rx_ring_full": "frames dropped: the socket's RX ring was full (worker too slow)",
    "xsk.rx_fill_ring_empty_descs": "fill-ring starvation: no free frame to receive into",
    "xsk.rx_invalid_descs": "invalid RX descriptors",
    "xsk.tx_invalid_descs": "invalid TX descriptors (a bug in fpd)",
    "worker.malformed": "frames the engine refused as malformed",
    "worker.not_tcp": "steered frames that were not TCP/IPv4",
    "worker.no_neigh_drops": "segments dropped: no ARP entry for the next hop",
    "worker.no_route_drops": "segments dropped: no route (or it leaves another interface)",
    "worker.tx_backlog_drops": "segments dropped: TX backlog full",
    "worker.tx_errors": "segments that could not be framed (too large for the MTU)",
    "worker.forward_drops": "segments for another queue's worker that could not be passed",
}


class TraceError(RuntimeError):
    """Tracing cannot start; ``str()`` names the cause and the fix."""


def parse_line(line: str) -> dict | None:
    """A trace_pipe line of one of our events -> {"event", "prog_id", ...}; else None."""
    m = _LINE.search(line.strip())
    if not m:
        return None
    out = {"event": m.group("event")}
    for k, v in re.findall(r"(\w+)=(\S+)", m.group("fields")):
        try:
            out[k] = int(v)
        except ValueError:
            out[k] = v
    return out


def explain(ev: dict, ifnames: dict | None = None) -> str:
    """One line an operator can act on for a parsed event."""
    if ev["event"] == "xdp_exception":
        act = ev.get("action", "?")
        why = ("the program aborted (a verifier-safe error path)" if act == "ABORTED" else
               f"the driver refused action {act}")
        return f"xdp_exception: {why} on ifindex {ev.get('ifindex')}: the frame is dropped"
    err = -int(ev.get("err", 0))
    name = _errno.errorcode.get(err, str(err))
    why = REDIRECT_ERRORS.get(err, os.strerror(err) if err else "unknown error")
    return (f"xdp_redirect_err: queue {ev.get('map_index')}: {name}: {why}")


def counter_deltas(prev: dict, cur: dict) -> dict:
    """{"xdp.passed": n, "q0 xsk.rx_ring_full": n, ...} of the counters that grew."""
    def flat(st):
        out = {}
        for k, v in (st.get("xdp") or {}).items():
            if f"xdp.{k}" in COUNTERS and isinstance(v, int):
                out[f"xdp.{k}"] = v
        for w in st.get("workers") or []:
            q = w.get("queue")
            for k, v in (w.get("xdp") or {}).items():
                if f"xsk.{k}" in COUNTERS and isinstance(v, int):
                    out[f"q{q} xsk.{k}"] = v
            for k, v in w.items():
                if f"worker.{k}" in COUNTERS and isinstance(v, int):
                    out[f"q{q} worker.{k}"] = v
        return out
    a, b = flat(prev), flat(cur)
    return {k: b[k] - a.get(k, 0) for k in b if b[k] > a.get(k, 0)}


def meaning(key: str) -> str:
    return COUNTERS.get(key.split(" ", 1)[-1], "")


def find_tracefs(mount: bool = True) -> str:
    """The tracefs root (mounting it at /sys/kernel/tracing if nothing is there)."""
    for d in TRACEFS_DIRS:
        if os.path.isdir(os.path.join(d, "events", "xdp")):
            return d
    if mount and os.geteuid() == 0 and os.path.isdir(TRACEFS_DIRS[0]):
        r = subprocess.run(["mount", "-t", "tracefs", "tracefs", TRACEFS_DIRS[0]],
                           capture_output=True, text=True)
        if r.returncode == 0 and os.path.isdir(os.path.join(TRACEFS_DIRS[0], "events",
                                                            "xdp")):
            return TRACEFS_DIRS[0]
    raise TraceError("no tracefs with XDP events (/sys/kernel/tracing/events/xdp): run as "
                     "root, or mount it: mount -t tracefs tracefs /sys/kernel/tracing "
                     "(kernels need CONFIG_FTRACE); counters are still shown")


class Tracepoints:
    """A private tracefs instance with our two events enabled, filtered on ``prog_id``."""

    def __init__(self, prog_id: int, root: str | None = None):
        self.root = root or find_tracefs()
        self.inst = os.path.join(self.root, "instances", f"fpd-trace-{os.getpid()}")
        try:
            os.mkdir(self.inst)
        except FileExistsError:
            pass
        except OSError as e:
            raise TraceError(f"cannot create the tracefs instance {self.inst}: "
                             f"{e.strerror} (run as root)") from None
        self.fd = -1
        try:
            for ev in EVENTS:
                d = os.path.join(self.inst, "events", ev)
                with open(os.path.join(d, "filter"), "w") as f:
                    f.write(f"prog_id == {int(prog_id)}\n")
                with open(os.path.join(d, "enable"), "w") as f:
                    f.write("1\n")
            self.fd = os.open(os.path.join(self.inst, "trace_pipe"),
                              os.O_RDONLY | os.O_NONBLOCK)
        except OSError as e:
            self.close()
            raise TraceError(f"cannot enable the XDP tracepoints in {self.inst}: "
                             f"{e.strerror}") from None
        self._buf = b""

    def fileno(self) -> int:
        return self.fd

    def read_events(self) -> list[dict]:
        out = []
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == _errno.EINTR:
                    continue
                break
            if not chunk:
                break
            self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            ev = parse_line(line.decode("utf-8", "replace"))
            if ev is not None:
                out.append(ev)
        return out

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        for ev in EVENTS:
            with contextlib.suppress(OSError):
                with open(os.path.join(self.inst, "events", ev, "enable"), "w") as f:
                    f.write("0\n")
        for _ in range(20):                  # rmdir fails while a reader is still open
            try:
                os.rmdir(self.inst)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.05)


def bcc_status() -> tuple[bool, str]:
    """Would bcc work here? (its Python module, and headers of the running kernel)"""
    rel = os.uname().release
    build = f"/lib/modules/{rel}/build"
    try:
        import bcc  # noqa: F401
    except Exception as e:                     # noqa: BLE001
        return False, (f"bcc not importable ({type(e).__name__}): apt-get install "
                       f"python3-bpfcc; fpd trace does not need it (tracefs)")
    if not os.path.isdir(build):
        return False, (f"bcc is installed but there are no headers for kernel {rel} "
                       f"({build} missing; apt-get install linux-headers-{rel} where the "
                       f"distribution has them): bcc cannot compile; fpd trace uses "
                       f"tracefs and does not need them")
    return True, f"bcc with headers at {build}"
