"""fpd.neigh against the kernel, called in-process from inside the test bed's server
namespace (the calling thread has setns()'d; no `ip netns exec`).

Every address used is in 10.77.0.0/24 inside the test bed; the only ARP requests sent
go out of the server's veth into the peer namespace.
"""

import threading

import pytest
from pyroute2 import IPRoute

from fpd import neigh
from fpd.neigh import NeighError, iface_info, neighbour_mac, resolve, route_get
from fpd.wire import ip_to_bytes, mac_to_bytes


def test_route_get_on_link(testbed):
    with testbed.inside(testbed.srv_ns):
        assert route_get(testbed.peer_ip) == (testbed.srv_ifindex, None, testbed.srv_ip)
        # bytes in fpd.wire's form are accepted too
        assert route_get(ip_to_bytes(testbed.peer_ip))[0] == testbed.srv_ifindex


def test_route_get_via_gateway(testbed):
    with testbed.inside(testbed.srv_ns):
        with IPRoute() as ip:
            # a more specific route inside the test bed's /24, through the peer
            ip.route("add", dst="10.77.0.128", dst_len=25, gateway=testbed.peer_ip)
        ifindex, gw, src = route_get("10.77.0.200")
        assert (ifindex, gw, src) == (testbed.srv_ifindex, testbed.peer_ip, testbed.srv_ip)
        hop = resolve("10.77.0.200")           # ARPs for the gateway only
        assert hop.gateway == testbed.peer_ip
        assert hop.dst_mac == mac_to_bytes(testbed.peer_mac)


def test_route_errors_name_the_address(testbed):
    with testbed.inside(testbed.srv_ns):
        with pytest.raises(NeighError, match=r"192\.0\.2\.1"):
            route_get("192.0.2.1")             # a lookup only: nothing is sent
        with pytest.raises(NeighError, match=r"10\.77\.0\.1.*local"):
            route_get(testbed.srv_ip)
        with IPRoute() as ip:
            ip.route("add", dst="10.77.0.64", dst_len=26, type="unreachable")
        with pytest.raises(NeighError, match=r"10\.77\.0\.70"):
            route_get("10.77.0.70")
        with pytest.raises(NeighError, match="not an IPv4 address"):
            route_get("10.77.0")


def test_iface_info(testbed):
    with testbed.inside(testbed.srv_ns):
        want = (testbed.srv_ifindex, mac_to_bytes(testbed.srv_mac), 1500)
        assert iface_info(testbed.srv_if) == want
        assert iface_info(testbed.srv_ifindex) == want
        with pytest.raises(NeighError, match="no-such-if"):
            iface_info("no-such-if")
        with pytest.raises(NeighError, match="ifindex 999999"):
            iface_info(999999)


def test_iface_info_sees_the_callers_namespace(testbed):
    # the peer's interface is visible from the peer namespace only
    with testbed.inside(testbed.peer_ns):
        idx, mac, _ = iface_info(testbed.peer_if)
        assert mac == mac_to_bytes(testbed.peer_mac)
    with testbed.inside(testbed.srv_ns):
        with pytest.raises(NeighError):
            iface_info(testbed.peer_if)


def test_neighbour_resolution(testbed):
    with testbed.inside(testbed.srv_ns):
        idx = testbed.srv_ifindex
        # a fresh bed has no entry: without resolve it is an error, and nothing is sent
        with pytest.raises(NeighError, match=r"10\.77\.0\.2 on fpd0.*no entry"):
            neighbour_mac(idx, testbed.peer_ip, resolve=False)
        mac = neighbour_mac(idx, testbed.peer_ip, timeout=2.0)
        assert mac == mac_to_bytes(testbed.peer_mac)
        # now cached
        assert neighbour_mac(idx, ip_to_bytes(testbed.peer_ip), resolve=False) == mac


def test_unresolvable_neighbour(testbed):
    with testbed.inside(testbed.srv_ns):
        with pytest.raises(NeighError, match=r"10\.77\.0\.99 on fpd0.*unresolved"):
            neighbour_mac(testbed.srv_ifindex, "10.77.0.99", timeout=0.3)
        with pytest.raises(NeighError, match="no such interface"):
            neighbour_mac(999999, testbed.peer_ip)


def test_resolve_whole_next_hop(testbed):
    with testbed.inside(testbed.srv_ns):
        with IPRoute() as ip:
            hop = resolve(testbed.peer_ip, ipr=ip)    # a caller-supplied netlink socket
    assert hop == neigh.NextHop(testbed.srv_ifindex, testbed.srv_if, 1500, testbed.srv_ip,
                                mac_to_bytes(testbed.srv_mac), None,
                                mac_to_bytes(testbed.peer_mac))


def test_works_from_a_thread_inside_the_namespace(testbed):
    out = []

    def worker():
        with testbed.inside(testbed.srv_ns):
            out.append(resolve(testbed.peer_ip).dst_mac)

    t = threading.Thread(target=worker)
    t.start()
    t.join(10)
    assert out == [mac_to_bytes(testbed.peer_mac)]
