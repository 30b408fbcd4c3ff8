"""Routes, neighbours and interfaces through rtnetlink (pyroute2), for the TX path.

The frames fpd sends carry Ethernet addresses it must find itself: the kernel's route
table gives the outgoing interface, the gateway (if any) and the source address; the
kernel's neighbour (ARP) table gives the next hop's MAC.

Everything goes through a netlink socket opened in the *calling thread's* network
namespace at call time (or the ``ipr`` you pass, which is bound to the namespace it was
made in). Nothing reads /sys or runs ``ip``: after ``setns()`` /sys still shows the old
namespace, and the daemon may run inside a namespace it entered in-process.

    route_get(dst) -> (ifindex, gateway | None, src)         addresses as dotted strings
    iface_info(name_or_index) -> (ifindex, mac bytes | None, mtu)
    neighbour_mac(ifindex, ip, resolve=True, timeout=1.0) -> 6-byte MAC
    resolve(dst, timeout=1.0) -> NextHop                      all of the above in one go

Resolution: when the neighbour entry is missing or unusable, ``neighbour_mac`` sends an
RTM_NEWNEIGH with the NTF_USE flag, which makes the kernel start ARP for the address
exactly as if a packet were waiting for it (no datagram of ours goes out), then polls the
table until the entry is usable, has failed, or ``timeout`` has passed.

Addresses may be given as dotted strings or 4-byte ``bytes`` (fpd.wire's form). Every
failure raises ``NeighError`` naming the address or interface.

pyroute2 (0.9) opens its netlink socket per thread, in the network namespace that thread
is in when it first uses the handle: a handle made in one namespace but used from another
thread answers from that thread's namespace. Create the handle in the thread that uses
it, or switch the thread's namespace around each call as ``fpd.worker`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import time
from typing import NamedTuple

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

# neighbour states (include/uapi/linux/neighbour.h)
NUD_NONE = 0x00
NUD_INCOMPLETE = 0x01
NUD_REACHABLE = 0x02
NUD_STALE = 0x04
NUD_DELAY = 0x08
NUD_PROBE = 0x10
NUD_FAILED = 0x20
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
NUD_USABLE = (NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_NOARP
              | NUD_PERMANENT)  # states whose link-layer address can be used
NTF_USE = 0x01

RTN_UNICAST = 1
_RTN_NAMES = {0: "unspec", 1: "unicast", 2: "local", 3: "broadcast", 4: "anycast",
              5: "multicast", 6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw",
              10: "nat"}
_NUD_NAMES = {NUD_NONE: "none", NUD_INCOMPLETE: "incomplete", NUD_REACHABLE: "reachable",
              NUD_STALE: "stale", NUD_DELAY: "delay", NUD_PROBE: "probe",
              NUD_FAILED: "failed", NUD_NOARP: "noarp", NUD_PERMANENT: "permanent"}


class NeighError(Exception):
    """No route, no such interface, or a neighbour that could not be resolved."""


class NextHop(NamedTuple):
    ifindex: int
    ifname: str
    mtu: int
    src: str               # our source address for this destination
    src_mac: bytes         # our interface's MAC
    gateway: str | None    # None when the destination is on-link
    dst_mac: bytes         # MAC of the gateway, or of the destination itself


def _addr(ip) -> str:
    """Dotted string from a string or 4-byte bytes (strict)."""
    try:
        return str(ipaddress.IPv4Address(bytes(ip) if isinstance(ip, (bytearray, memoryview))
                                         else ip))
    except (ipaddress.AddressValueError, ValueError, TypeError):
        raise NeighError(f"not an IPv4 address: {ip!r}") from None


@contextlib.contextmanager
def _netlink(ipr):
    if ipr is not None:
        yield ipr
        return
    # pyroute2's synchronous IPRoute runs an asyncio loop of its own inside each call; an
    # asyncio loop running in this thread (fpd.loop drives the worker from inside one)
    # would make it fail with "This event loop is already running": hide it meanwhile
    running = asyncio.events._get_running_loop()
    if running is not None:
        asyncio.events._set_running_loop(None)
    try:
        try:
            sock = IPRoute()
        except (NetlinkError, OSError) as e:
            raise NeighError(f"cannot open an rtnetlink socket: {e}") from None
        try:
            yield sock
        finally:
            sock.close()
    finally:
        if running is not None:
            asyncio.events._set_running_loop(running)


def _strerror(e: NetlinkError) -> str:
    return os.strerror(e.code) if isinstance(e.code, int) else str(e)


def route_get(dst, ipr=None) -> tuple[int, str | None, str]:
    """The kernel's route for ``dst``: (output ifindex, gateway or None, source address).

    Raises NeighError when there is no route, or the route does not leave through an
    interface (local, blackhole, unreachable, prohibit, ...).
    """
    dst = _addr(dst)
    with _netlink(ipr) as nl:
        try:
            msgs = list(nl.route("get", dst=dst))
        except NetlinkError as e:
            raise NeighError(f"no route to {dst}: {_strerror(e)}") from None
    if not msgs:
        raise NeighError(f"no route to {dst}: empty answer from the kernel")
    m = msgs[0]
    rtype = m.get("type")
    if rtype != RTN_UNICAST:
        raise NeighError(f"no route to {dst} through an interface: route type "
                         f"{_RTN_NAMES.get(rtype, rtype)}")
    oif = m.get("RTA_OIF")
    src = m.get("RTA_PREFSRC")
    if oif is None:
        raise NeighError(f"route to {dst} has no output interface")
    if src is None:
        raise NeighError(f"route to {dst} has no source address (no IPv4 address on "
                         f"ifindex {oif}?)")
    return oif, m.get("RTA_GATEWAY"), src


def iface_info(name_or_index, ipr=None) -> tuple[int, bytes | None, int]:
    """(ifindex, MAC as 6 bytes, MTU) of an interface given by name or index.

    The MAC is None for a device without a link-layer address (tun, ...)."""
    with _netlink(ipr) as nl:
        link = _get_link(nl, name_or_index)
    mac = link.get("IFLA_ADDRESS")
    return link["index"], _mac_bytes(mac) if mac else None, link.get("IFLA_MTU")


def _get_link(nl, name_or_index):
    if isinstance(name_or_index, str):
        try:
            idx = nl.link_lookup(ifname=name_or_index)
        except NetlinkError as e:
            raise NeighError(f"interface {name_or_index!r}: {_strerror(e)}") from None
        if not idx:
            raise NeighError(f"no such interface: {name_or_index!r}")
        name_or_index = idx[0]
    try:
        links = list(nl.get_links(name_or_index))
    except NetlinkError as e:
        raise NeighError(f"no such interface: ifindex {name_or_index} ({_strerror(e)})") from None
    if not links:
        raise NeighError(f"no such interface: ifindex {name_or_index}")
    return links[0]


def _mac_bytes(s: str) -> bytes:
    return bytes.fromhex(s.replace(":", ""))


def _lookup(nl, ifindex: int, ip: str):
    """(mac or None, state or None) of the neighbour entry for ip on ifindex."""
    for n in nl.get_neighbours(family=socket.AF_INET, ifindex=ifindex, dst=ip):
        if n.get("NDA_DST") != ip or n.get("ifindex") != ifindex:
            continue  # in case the filter was not applied
        state = n.get("state")
        ll = n.get("NDA_LLADDR")
        if state is not None and state & NUD_USABLE and ll:
            mac = _mac_bytes(ll)
            if len(mac) == 6:
                return mac, state
        return None, state
    return None, None


def neighbour_mac(ifindex: int, ip, resolve: bool = True, timeout: float = 1.0,
                  ipr=None) -> bytes:
    """The MAC of neighbour ``ip`` on interface ``ifindex``, from the kernel's table.

    When it is missing or not usable and ``resolve`` is true, ask the kernel to resolve
    it (NTF_USE: ARP, no traffic of ours) and wait up to ``timeout`` seconds.
    """
    ip = _addr(ip)
    with _netlink(ipr) as nl:
        link = _get_link(nl, ifindex)
        where = f"{ip} on {link.get('IFLA_IFNAME', ifindex)}"
        mac, state = _lookup(nl, ifindex, ip)
        if mac is not None:
            return mac
        if not resolve:
            raise NeighError(f"no usable neighbour entry for {where} "
                             f"(state {_state_name(state)})")
        try:
            nl.neigh("replace", dst=ip, ifindex=ifindex, flags=NTF_USE, state=NUD_NONE)
        except NetlinkError as e:
            raise NeighError(f"cannot start resolution of {where}: {_strerror(e)}") from None
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while True:
            mac, state = _lookup(nl, ifindex, ip)
            if mac is not None:
                return mac
            if state is not None and state & NUD_FAILED:
                raise NeighError(f"{where}: address resolution failed (no ARP answer)")
            if state is not None and state & NUD_USABLE:
                raise NeighError(f"{where}: neighbour has no usable link-layer address "
                                 f"(state {_state_name(state)})")
            left = deadline - time.monotonic()
            if left <= 0:
                raise NeighError(f"{where}: unresolved after {timeout:g} s "
                                 f"(state {_state_name(state)})")
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.02)


def _state_name(state) -> str:
    if state is None:
        return "no entry"
    names = [n for bit, n in _NUD_NAMES.items() if bit and state & bit]
    return "|".join(names) or "none"


def resolve(dst, timeout: float = 1.0, ipr=None) -> NextHop:
    """Everything needed to address frames to ``dst``: route, interface, next-hop MAC."""
    dst = _addr(dst)
    with _netlink(ipr) as nl:
        ifindex, gateway, src = route_get(dst, nl)
        link = _get_link(nl, ifindex)
        mac = link.get("IFLA_ADDRESS")
        if not mac:
            raise NeighError(f"interface {link.get('IFLA_IFNAME', ifindex)} (route to {dst}) "
                             f"has no MAC address")
        dst_mac = neighbour_mac(ifindex, gateway or dst, timeout=timeout, ipr=nl)
        return NextHop(ifindex, link.get("IFLA_IFNAME"), link.get("IFLA_MTU"), src,
                       _mac_bytes(mac), gateway, dst_mac)


__all__ = ["NeighError", "NextHop", "route_get", "iface_info", "neighbour_mac", "resolve"]
