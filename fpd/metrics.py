"""Prometheus metrics of a running fpd (``fpd start --metrics HOST:PORT``, off by default).

The supervisor listens on a kernel-side TCP address (the kernel's stack, not fpd's: the
metrics port is never steered) and answers ``GET /metrics`` in its own loop with the text
exposition format, made by ``prometheus_client`` from the same answers ``fpd stats`` and
``fpd conns`` print. A scrape asks every worker once, as ``fpd stats`` does (a worker that
does not answer within 2 s shows as ``fpd_worker_up{queue=..} 0``).

Families (label ``queue`` = the worker's NIC queue):

- ``fpd_up`` 1; ``fpd_info{ifname,mode,version}`` 1; ``fpd_uptime_seconds``;
- ``fpd_xdp_packets_total{counter}``: the XDP program's counters (seen, steered, passed,
  malformed, redirect_failed);
- ``fpd_worker_up{queue}``; ``fpd_worker_<name>{queue}`` for every number a worker
  reports (``rx_frames``, ``tx_bytes``, ``xdp_rx_dropped`` (its socket's XDP_STATISTICS),
  ``umem_free``, ``stack_retransmits``, ... nested names joined with ``_``);
  ``fpd_worker_malformed_frames{queue,reason}``;
- ``fpd_listener_info{queue,local,owner_pid}`` 1 per listener;
  ``fpd_connections{queue,state}`` per TCP state.

A scrape is served in the supervisor's loop: a client that connects and sends nothing is
dropped after 1 s.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket

from prometheus_client.core import (CollectorRegistry, CounterMetricFamily,
                                    GaugeMetricFamily, UnknownMetricFamily)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

REQUEST_TIMEOUT = 1.0
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_]")


class MetricsError(ValueError):
    """A --metrics address that cannot be used; ``str()`` says what and how to fix it."""


def parse_addr(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv4 address or ``localhost``) -> (host, port)."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not host:
        raise MetricsError(f"--metrics {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9477")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        host = str(ipaddress.IPv4Address(host))
    except ValueError:
        raise MetricsError(f"--metrics {text!r}: {host!r} is not an IPv4 address "
                           f"(use e.g. 127.0.0.1:9477 or 0.0.0.0:9477)") from None
    try:
        p = int(port)
    except ValueError:
        p = -1
    if not 1 <= p <= 65535:
        raise MetricsError(f"--metrics {text!r}: port must be 1..65535")
    return host, p


def _name(*parts) -> str:
    return _NAME_BAD.sub("_", "_".join(str(p) for p in parts if p != ""))


def _numbers(d: dict, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict):
            if k == "malformed_reasons":
                continue
            yield from _numbers(v, prefix + (k,))
        elif isinstance(v, bool):
            yield prefix + (k,), int(v)
        elif isinstance(v, (int, float)):
            yield prefix + (k,), v


def families(stats: dict, status: dict | None = None, conns: dict | None = None,
             version: str = "") -> list:
    """Metric families from the supervisor's ``stats`` (+ ``status``, ``conns``) answers."""
    out = []
    status = status or {}
    out.append(GaugeMetricFamily("fpd_up", "1 while the daemon answers", value=1))
    info = GaugeMetricFamily("fpd_info", "The daemon's interface, XDP mode and version",
                             labels=["ifname", "mode", "version"])
    info.add_metric([str(status.get("ifname", "")), str(status.get("mode", "")), version], 1)
    out.append(info)
    if "uptime" in status:
        out.append(GaugeMetricFamily("fpd_uptime_seconds", "Seconds since the daemon "
                                     "started", value=float(status["uptime"])))
    xdp = CounterMetricFamily("fpd_xdp_packets", "The XDP program's counters (all queues)",
                              labels=["counter"])
    for k, v in (stats.get("xdp") or {}).items():
        if isinstance(v, int) and not isinstance(v, bool):
            xdp.add_metric([k], v)
    out.append(xdp)
    sup = CounterMetricFamily("fpd_supervisor", "The supervisor's counters (fpd stats: "
                              "supervisor): control connections refused or dropped, by "
                              "cause; resolutions asked by unprivileged workers",
                              labels=["counter"])
    for k, v in (stats.get("supervisor") or {}).items():
        if isinstance(v, int) and not isinstance(v, bool):
            sup.add_metric([k], v)
    out.append(sup)
    up = GaugeMetricFamily("fpd_worker_up", "1 if the worker answered this scrape",
                           labels=["queue"])
    per: dict[str, UnknownMetricFamily] = {}
    reasons = CounterMetricFamily("fpd_worker_malformed_frames", "Malformed frames by "
                                  "reason", labels=["queue", "reason"])
    for w in stats.get("workers") or []:
        q = str(w.get("queue", ""))
        up.add_metric([q], 0 if "error" in w else 1)
        for path, v in _numbers({k: v for k, v in w.items() if k not in ("queue", "pid")}):
            name = _name("fpd_worker", *path)
            fam = per.get(name)
            if fam is None:
                fam = per[name] = UnknownMetricFamily(
                    name, f"worker counter {'.'.join(path)} (fpd stats)", labels=["queue"])
            fam.add_metric([q], v)
        for reason, n in (w.get("malformed_reasons") or {}).items():
            reasons.add_metric([q, str(reason)], n)
    out.append(up)
    out += [per[k] for k in sorted(per)]
    out.append(reasons)
    if conns is not None:
        li = GaugeMetricFamily("fpd_listener_info", "One per listening socket of an "
                               "application", labels=["queue", "local", "owner_pid"])
        for x in conns.get("listeners") or []:
            li.add_metric([str(x.get("queue", "")), str(x.get("local", "")),
                           str(x.get("owner_pid", ""))], 1)
        out.append(li)
        states: dict[tuple, int] = {}
        for c in conns.get("conns") or []:
            key = (str(c.get("queue", "")), str(c.get("state", "?")))
            states[key] = states.get(key, 0) + 1
        cs = GaugeMetricFamily("fpd_connections", "TCP connections by state",
                               labels=["queue", "state"])
        for (q, st), n in sorted(states.items()):
            cs.add_metric([q, st], n)
        out.append(cs)
    return out


class _Collector:
    def __init__(self, fams):
        self.fams = fams

    def collect(self):
        return iter(self.fams)


def render(stats: dict, status: dict | None = None, conns: dict | None = None,
           version: str = "") -> bytes:
    """The text exposition of :func:`families`."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Collector(families(stats, status, conns, version)))
    return generate_latest(reg)


class MetricsServer:
    """A listening TCP socket the supervisor polls; :meth:`handle` serves one request
    with ``scrape()`` -> bytes."""

    def __init__(self, addr: str):
        host, port = parse_addr(addr)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            s.listen(16)
        except OSError as e:
            s.close()
            hint = {98: "another program listens there: pick another port",
                    99: "no local interface has that address: use one `ip -4 addr` "
                        "shows, 127.0.0.1 or 0.0.0.0"}.get(e.errno, "check the address")
            raise MetricsError(f"cannot serve metrics on {host}:{port}: {e.strerror} "
                               f"({hint})") from None
        s.setblocking(False)
        self.sock = s
        self.addr = s.getsockname()
        self.scrapes = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def handle(self, scrape) -> None:
        try:
            c, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        with c:
            c.settimeout(REQUEST_TIMEOUT)
            try:
                req = b""
                while b"\r\n\r\n" not in req and b"\n\n" not in req and len(req) < 8192:
                    chunk = c.recv(4096)
                    if not chunk:
                        break
                    req += chunk
                line = req.split(b"\r\n", 1)[0].split(b"\n", 1)[0].decode("latin-1")
                parts = line.split()
                if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
                    self._send(c, 405, b"only GET /metrics\n", "text/plain")
                    return
                path = parts[1].split("?", 1)[0]
                if path not in ("/metrics", "/"):
                    self._send(c, 404, b"see /metrics\n", "text/plain")
                    return
                body = scrape()
                self.scrapes += 1
                self._send(c, 200, body if parts[0] == "GET" else b"", CONTENT_TYPE_LATEST,
                           length=len(body))
            except (OSError, socket.timeout):
                return

    @staticmethod
    def _send(c, code: int, body: bytes, ctype: str, length: int | None = None) -> None:
        reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}[code]
        head = (f"HTTP/1.0 {code} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body) if length is None else length}\r\n"
                f"Connection: close\r\n\r\n").encode()
        c.sendall(head + body)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
