"""A two-namespace veth test bed, made and torn down with pyroute2.

    fpd-srv-<sfx>  veth "fpd0"  10.77.0.1/24  <──veth──>  "fpd1"  10.77.0.2/24  fpd-peer-<sfx>

fpd (XDP + AF_XDP + daemon) runs on the server side; the Linux kernel's TCP, curl, socat,
iperf3 run on the peer side. Every address stays inside the two namespaces.
``TestBed(impair=True)`` puts a third namespace with a user-space bridge between the two
(loss, reordering, delay, rate: ``bed.impair``, see fpd/impair.py).

Safety rules the class enforces:
- it only ever acts on namespaces it created itself in this process (``_check_ns``);
- it refuses to start if a namespace of the same name already exists (no clobbering);
- ``down()`` is idempotent and is called from ``__exit__`` and the pytest fixture's
  finaliser, so a failing test still leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess

from pyroute2 import IPRoute, netns

from fpd import netns as fpd_netns

SRV_IP = "10.77.0.1"
PEER_IP = "10.77.0.2"
PREFIX = 24
SRV_IF = "fpd0"
PEER_IF = "fpd1"
IMP_SRV_IF = "imps"     # impair=True: the middle namespace's ends of the two veth pairs
IMP_PEER_IF = "impp"

class TestBedError(RuntimeError):
    __test__ = False


class TestBed:
    """Two namespaces joined by a veth pair. Use as a context manager."""

    __test__ = False  # not a pytest class

    def __init__(self, suffix: str | None = None, queues: int = 1,
                 peer_tx_csum: bool = False, peer_tso: bool = False,
                 mtu: int = 1500, impair: bool = False, impair_seed: int = 0):
        self.suffix = suffix or secrets.token_hex(3)
        self.srv_ns = f"fpd-srv-{self.suffix}"
        self.peer_ns = f"fpd-peer-{self.suffix}"
        self.mid_ns = f"fpd-mid-{self.suffix}" if impair else None
        self.impair = None      # an fpd.impair.Impairment when impair=True
        self._impair_seed = impair_seed
        self.srv_if = SRV_IF
        self.peer_if = PEER_IF
        self.srv_ip = SRV_IP
        self.peer_ip = PEER_IP
        self.queues = queues
        # the impairment bridge copies frames as they are: complete checksums, no TSO
        self.peer_tx_csum = peer_tx_csum and not impair
        self.peer_tso = peer_tso and not impair
        self.mtu = mtu
        self.srv_mac = ""
        self.peer_mac = ""
        self.srv_ifindex = 0
        self._created: list[str] = []
        self._owner = os.getpid()      # a forked child (pyroute2 forks) never tears down

    # -- lifecycle ---------------------------------------------------------------------
    def __enter__(self):
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc):
        self.down()
        return False

    def up(self) -> "TestBed":
        if os.geteuid() != 0:
            raise TestBedError("the test bed needs root (network namespaces, veth)")
        existing = set(netns.listnetns())
        names = [self.srv_ns, self.peer_ns] + ([self.mid_ns] if self.mid_ns else [])
        for name in names:
            if name in existing:
                raise TestBedError(f"namespace {name} already exists: refusing to reuse it")
        for name in names:
            netns.create(name)
            self._created.append(name)
        tmp_a = f"fpda{self.suffix}"[:15]
        tmp_b = f"fpdb{self.suffix}"[:15]
        with IPRoute() as ip:
            kw = {}
            if self.queues > 1:
                kw = {"num_tx_queues": self.queues, "num_rx_queues": self.queues}
            if self.mid_ns:
                # two pairs: fpd0 <-> imps (mid), impp (mid) <-> fpd1; the bridge joins them
                for tmp, mid_if, ns in ((tmp_a, IMP_SRV_IF, self.srv_ns),
                                        (tmp_b, IMP_PEER_IF, self.peer_ns)):
                    ip.link("add", ifname=tmp, kind="veth",
                            peer={"ifname": mid_if, "net_ns_fd": self.mid_ns, **kw}, **kw)
                    idx = ip.link_lookup(ifname=tmp)[0]
                    ip.link("set", index=idx, net_ns_fd=ns)
            else:
                ip.link("add", ifname=tmp_a, kind="veth",
                        peer={"ifname": tmp_b, "net_ns_fd": self.peer_ns, **kw}, **kw)
                idx = ip.link_lookup(ifname=tmp_a)[0]
                ip.link("set", index=idx, net_ns_fd=self.srv_ns)
        for ns, tmp, name, addr in ((self.srv_ns, tmp_a, self.srv_if, self.srv_ip),
                                    (self.peer_ns, tmp_b, self.peer_if, self.peer_ip)):
            with IPRoute(netns=ns) as ip:
                idx = ip.link_lookup(ifname=tmp)[0]
                ip.link("set", index=idx, ifname=name, mtu=self.mtu)
                ip.addr("add", index=idx, address=addr, prefixlen=PREFIX)
                ip.link("set", index=idx, state="up")
                lo = ip.link_lookup(ifname="lo")[0]
                ip.link("set", index=lo, state="up")
                link = ip.get_links(idx)[0]
                mac = link.get("address")
                if ns == self.srv_ns:
                    self.srv_mac, self.srv_ifindex = mac, idx
                else:
                    self.peer_mac, self.peer_ifindex = mac, idx
        if self.mid_ns:
            self._mid_up()
        if self.queues > 1 and self.mid_ns:
            ends = ((self.srv_ns, self.srv_if), (self.mid_ns, IMP_SRV_IF),
                    (self.mid_ns, IMP_PEER_IF), (self.peer_ns, self.peer_if))
            for what in ("rx", "tx"):           # all rx first: a veth's tx <= its peer's rx
                for ns, dev in ends:
                    self.run(ns, ["ethtool", "-L", dev, what, str(self.queues)])
        elif self.queues > 1:
            # shrink/grow the peer's tx first, as veth requires tx <= peer's rx
            for ns, dev in ((self.peer_ns, self.peer_if), (self.srv_ns, self.srv_if)):
                self.run(ns, ["ethtool", "-L", dev, "rx", str(self.queues), "tx", str(self.queues)])
        # Offloads on the peer: complete checksums instead of CHECKSUM_PARTIAL, no TSO
        # (generic XDP mode would otherwise see frames larger than a UMEM chunk).
        feats = ["tx", "on" if self.peer_tx_csum else "off"]
        if not self.peer_tso:
            feats += ["tso", "off", "gso", "off"]
        self.run(self.peer_ns, ["ethtool", "-K", self.peer_if, *feats])
        self.run(self.srv_ns, ["ethtool", "-K", self.srv_if, "gro", "off"], check=False)
        if self.mid_ns:
            # the bridge copies frames as they are: partial checksums would arrive broken
            self.run(self.srv_ns, ["ethtool", "-K", self.srv_if, "tx", "off", "tso", "off",
                                   "gso", "off"])
            from fpd.impair import Impairment
            self.impair = Impairment(self.mid_ns, IMP_SRV_IF, IMP_PEER_IF,
                                     seed=self._impair_seed)
        return self

    def _mid_up(self) -> None:
        ns = self.mid_ns
        self.run(ns, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                      "net.ipv6.conf.default.disable_ipv6=1"], check=False)
        with IPRoute(netns=ns) as ip:
            for name in (IMP_SRV_IF, IMP_PEER_IF):
                idx = ip.link_lookup(ifname=name)[0]
                ip.link("set", index=idx, mtu=self.mtu, state="up")
        for name in (IMP_SRV_IF, IMP_PEER_IF):
            self.run(ns, ["ethtool", "-K", name, "tx", "off", "tso", "off", "gso", "off",
                          "gro", "off"], check=False)

    def down(self) -> None:
        if os.getpid() != self._owner:
            return                      # a fork of the process that made the test bed
        if self.impair is not None:
            with contextlib.suppress(Exception):
                self.impair.close()
            self.impair = None
        while self._created:
            name = self._created.pop()
            try:
                netns.remove(name)
            except Exception:  # already gone
                pass

    # -- helpers -----------------------------------------------------------------------
    def _check_ns(self, ns: str) -> None:
        if ns not in (self.srv_ns, self.peer_ns, self.mid_ns) or ns not in self._created:
            raise TestBedError(f"refusing to act on namespace {ns!r}: not created by this test bed")

    def cmd(self, ns: str, argv: list[str]) -> list[str]:
        self._check_ns(ns)
        return ["ip", "netns", "exec", ns, *argv]

    def run(self, ns: str, argv: list[str], check: bool = True, timeout: float = 60,
            **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        p = subprocess.run(self.cmd(ns, argv), timeout=timeout, **kw)
        if check and p.returncode != 0:
            raise TestBedError(f"{' '.join(argv)} in {ns} failed ({p.returncode}): "
                               f"{(p.stderr or '').strip()}")
        return p

    def popen(self, ns: str, argv: list[str], **kw) -> subprocess.Popen:
        return subprocess.Popen(self.cmd(ns, argv), **kw)

    @contextlib.contextmanager
    def inside(self, ns: str):
        """The calling thread runs inside ``ns`` for the body (sockets stay there)."""
        self._check_ns(ns)
        with fpd_netns.inside_named(ns):
            yield

    def socket(self, ns: str, family=socket.AF_INET, type=socket.SOCK_STREAM, proto=0):
        """A socket that lives in namespace ``ns`` (usable from any thread afterwards)."""
        with self.inside(ns):
            return socket.socket(family, type, proto)

    def ns_exists(self, ns: str) -> bool:
        return ns in netns.listnetns()
