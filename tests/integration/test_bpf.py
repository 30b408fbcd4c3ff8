"""fpd.bpf + bpf/steer.c against the kernel, in the two-namespace test bed.

What is attached is always checked with the kernel (`ip -d link`, `bpftool net`,
`bpftool prog show id N`), never with fpd's own bookkeeping.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
from pyroute2 import IPRoute

from fpd import bpf
from fpd.bpf import Steering, XdpError

MODES = ["native", "generic"]


# --- kernel-side observations -------------------------------------------------------------
def kernel_xdp(tb, ifname=None):
    """(mode word, prog id) the kernel reports for the srv interface: ('', 0) if none."""
    ifname = ifname or tb.srv_if
    out = tb.run(tb.srv_ns, ["ip", "-d", "link", "show", "dev", ifname]).stdout
    first = out.splitlines()[0].split()
    mode = next((w for w in first if w in ("xdp", "xdpgeneric", "xdpdrv", "xdpoffload",
                                            "xdpmulti")), "")
    pid = 0
    for line in out.splitlines():
        words = line.split()
        if words[:1] == ["prog/xdp"] and "id" in words:
            pid = int(words[words.index("id") + 1])
    return mode, pid


def bpftool_net(tb):
    return tb.run(tb.srv_ns, ["bpftool", "net", "show", "dev", tb.srv_if]).stdout


def prog_exists(prog_id: int) -> bool:
    p = subprocess.run(["bpftool", "prog", "show", "id", str(prog_id)],
                       capture_output=True, text=True)
    return p.returncode == 0


def wait_prog_gone(prog_id: int, timeout: float = 5.0) -> bool:
    """Programs are freed after an RCU grace period: poll a little."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not prog_exists(prog_id):
            return True
        time.sleep(0.05)
    return False


def assert_nothing_attached(tb):
    assert kernel_xdp(tb) == ("", 0)
    assert f"{tb.srv_if}(" not in bpftool_net(tb)


def steer(tb, mode="native", **kw) -> Steering:
    with tb.inside(tb.srv_ns):
        return Steering(tb.srv_if, mode, **kw)


def connect(tb, port, timeout=2.0, addr=None):
    """Kernel connect() from the peer; returns None on success or the errno."""
    c = tb.socket(tb.peer_ns)
    c.settimeout(timeout)
    try:
        c.connect((addr or tb.srv_ip, port))
        return None
    except socket.timeout:
        return errno.ETIMEDOUT
    except OSError as e:
        return e.errno
    finally:
        c.close()


def free_port(tb) -> int:
    s = tb.socket(tb.srv_ns)
    s.bind((tb.srv_ip, 0))
    port = s.getsockname()[1]
    s.close()
    return port


@contextlib.contextmanager
def kernel_server(tb, port=0):
    """A kernel TCP echo-once server in the srv namespace; yields its port."""
    srv = tb.socket(tb.srv_ns)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((tb.srv_ip, port))
    srv.listen()
    srv.settimeout(5)

    def serve():
        with contextlib.suppress(OSError):
            while True:
                c, _ = srv.accept()
                with c:
                    c.sendall(b"pong:" + c.recv(100))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        with contextlib.suppress(OSError):
            srv.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        srv.close()
        t.join(6)


def talk(tb, port) -> bytes:
    c = tb.socket(tb.peer_ns)
    c.settimeout(3)
    with c:
        c.connect((tb.srv_ip, port))
        c.sendall(b"hi")
        return c.recv(100)


def delta(before, after):
    return {k: after[k] - before[k] for k in after}


def settle(st, want=None, timeout=1.0):
    """Counters once they stop moving (frames may still be in flight after a syscall)."""
    deadline = time.monotonic() + timeout
    last = st.stats()
    while time.monotonic() < deadline:
        time.sleep(0.02)
        cur = st.stats()
        if cur == last and (want is None or want(cur)):
            return cur
        last = cur
    return last


def check_invariant(s):
    assert s["seen"] == s["steered"] + s["passed"] + s["malformed"], s
    assert s["redirect_failed"] <= s["steered"], s


# --- attach / detach ----------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["native", "generic", "auto"])
def test_attach_detach_leaves_nothing(testbed, mode):
    tb = testbed
    assert_nothing_attached(tb)
    st = steer(tb, mode)
    used = "native" if mode == "auto" else mode
    assert st.mode == used and st.fallback_reason is None
    assert st.ifindex == tb.srv_ifindex and st.prog_id > 0
    word, pid = kernel_xdp(tb)
    assert word == {"native": "xdp", "generic": "xdpgeneric"}[used]
    assert pid == st.prog_id
    net = bpftool_net(tb)
    assert f"{tb.srv_if}({tb.srv_ifindex}) {'driver' if used == 'native' else 'generic'} " \
           f"id {st.prog_id}" in net, net
    show = subprocess.run(["bpftool", "prog", "show", "id", str(st.prog_id)],
                          capture_output=True, text=True, check=True).stdout
    assert "xdp" in show and "name fpd_steer" in show
    with tb.inside(tb.srv_ns):
        assert bpf.attached_prog_id(tb.srv_if) == st.prog_id
        assert bpf.attached_prog_id(tb.srv_if, used) == st.prog_id
        other = "generic" if used == "native" else "native"
        assert bpf.attached_prog_id(tb.srv_if, other) == 0
    st.close()
    assert_nothing_attached(tb)
    assert wait_prog_gone(st.prog_id), f"program {st.prog_id} still loaded after close"
    st.close()  # idempotent
    assert st.closed
    with pytest.raises(ValueError):
        st.add_port(80)


def test_close_from_another_namespace_detaches_in_the_right_one(testbed):
    """close() called outside the namespace (main thread) detaches where it attached."""
    tb = testbed
    st = steer(tb, "native")
    assert kernel_xdp(tb)[1] == st.prog_id
    st.close()  # the calling thread is in the root namespace here
    assert_nothing_attached(tb)


def test_context_manager_and_maps_in_kernel(testbed):
    tb = testbed
    with tb.inside(tb.srv_ns):
        with Steering(tb.srv_if, "generic") as st:
            pid = st.prog_id
            show = subprocess.run(["bpftool", "prog", "show", "id", str(pid), "--json"],
                                  capture_output=True, text=True, check=True).stdout
            import json
            map_ids = json.loads(show)["map_ids"]
            names = set()
            for mid in map_ids:
                m = json.loads(subprocess.run(["bpftool", "map", "show", "id", str(mid),
                                               "--json"], capture_output=True, text=True,
                                              check=True).stdout)
                names.add((m["name"], m["type"]))
            assert {("fpd_steer", "hash"), ("fpd_xsks", "xskmap"),
                    ("fpd_stats", "percpu_array")} <= names, names
    assert_nothing_attached(tb)


@pytest.mark.parametrize("first,second", [("native", "native"), ("generic", "generic"),
                                          ("native", "generic"), ("generic", "auto")])
def test_attaching_twice_names_the_existing_program(testbed, first, second):
    tb = testbed
    st = steer(tb, first)
    try:
        with pytest.raises(XdpError) as ei:
            steer(tb, second)
        e = ei.value
        assert e.errno in (errno.EBUSY, errno.EEXIST)
        assert e.prog_id == st.prog_id
        msg = str(e)
        assert f"another XDP program (id {st.prog_id}) is already attached to {tb.srv_if}" \
            in msg, msg
        assert os.strerror(e.errno) in msg
        # the first one was not replaced
        assert kernel_xdp(tb)[1] == st.prog_id
    finally:
        st.close()
    assert_nothing_attached(tb)


def test_missing_interface(testbed):
    tb = testbed
    with tb.inside(tb.srv_ns):
        for mode in ("native", "generic", "auto"):
            with pytest.raises(XdpError) as ei:
                Steering("fpdnope0", mode)
            assert ei.value.errno == errno.ENODEV
            assert "interface fpdnope0 does not exist" in str(ei.value)
        with pytest.raises(XdpError, match="interface fpdnope0 does not exist"):
            bpf.attached_prog_id("fpdnope0")
        with pytest.raises(XdpError, match="interface fpdnope0 does not exist"):
            bpf.force_detach("fpdnope0")
    # the peer's interface is not visible from the srv namespace either
    with tb.inside(tb.srv_ns):
        with pytest.raises(XdpError, match=f"interface {tb.peer_if} does not exist"):
            Steering(tb.peer_if)


def test_bad_mode_and_object(testbed, tmp_path):
    tb = testbed
    with tb.inside(tb.srv_ns):
        with pytest.raises(ValueError):
            Steering(tb.srv_if, "turbo")
        junk = tmp_path / "junk.o"
        junk.write_bytes(b"not an ELF file")
        with pytest.raises(XdpError, match="cannot open BPF object"):
            Steering(tb.srv_if, "generic", obj_path=junk)
    assert_nothing_attached(tb)


def test_verifier_log_in_the_error(testbed, tmp_path):
    """A program the verifier rejects: its log is in the exception, nothing is attached."""
    import re
    from pathlib import Path

    src = (Path(bpf.__file__).parent.parent / "bpf" / "steer.c").read_text()
    # drop the Ethernet bounds check
    bad, n = re.subn(r"if \(\(void \*\)\(eth \+ 1\) > data_end\)\s*return [^;]*;", "", src)
    assert n == 1
    (tmp_path / "bad.c").write_text(bad)
    subprocess.run(["clang", *bpf.BPF_CFLAGS, f"-I/usr/include/{os.uname().machine}-linux-gnu",
                    "-c", str(tmp_path / "bad.c"), "-o", str(tmp_path / "bad.o")], check=True)
    with pytest.raises(XdpError) as ei:
        steer(testbed, "native", obj_path=tmp_path / "bad.o")
    e = ei.value
    assert e.errno == errno.EACCES or e.errno == errno.EINVAL
    msg = str(e)
    assert f"verifier rejected {tmp_path / 'bad.o'} for {testbed.srv_if} (native mode)" in msg
    assert "invalid access to packet" in msg, msg  # the verifier's own words
    assert "invalid access to packet" in e.log
    assert_nothing_attached(testbed)


def test_not_permitted_without_capabilities(testbed):
    """Root without capabilities (empty bounding set): a clear 'not permitted'."""
    code = ("import sys\nfrom fpd.bpf import Steering, XdpError\n"
            "try:\n    Steering(sys.argv[1], 'native')\n"
            "except XdpError as e:\n    print(e.errno, e)\n")
    p = testbed.run(testbed.srv_ns, ["setpriv", "--bounding-set=-all", "--inh-caps=-all",
                                     sys.executable, "-c", code, testbed.srv_if],
                    env={**os.environ, "FPD_BPF_OBJECT": bpf.find_object()})
    assert p.stdout.split()[0] in (str(errno.EPERM), str(errno.EACCES)), p.stdout + p.stderr
    assert "not permitted: run as root or with CAP_NET_ADMIN+CAP_BPF" in p.stdout
    assert testbed.srv_if in p.stdout and "native mode" in p.stdout
    assert_nothing_attached(testbed)


def set_mtu(tb, mtu):
    for ns, dev in ((tb.srv_ns, tb.srv_if), (tb.peer_ns, tb.peer_if)):
        with IPRoute(netns=ns) as ip:
            ip.link("set", index=ip.link_lookup(ifname=dev)[0], mtu=mtu)


def test_mtu_too_large_for_native(testbed):
    """The single-buffer program: native mode refuses an MTU above 3506 on veth (ERANGE),
    auto falls back to generic."""
    tb = testbed
    set_mtu(tb, 4000)
    with pytest.raises(XdpError) as ei:
        steer(tb, "native", frags=False)
    e = ei.value
    assert e.errno == errno.ERANGE and e.mode == "native"
    assert f"MTU of {tb.srv_if} (or its peer) too large for native XDP" in str(e)
    assert "fpd_steer_frags" in str(e)
    assert_nothing_attached(tb)
    st = steer(tb, "auto", frags=False)
    try:
        assert st.mode == "generic"
        assert "too large for native XDP" in st.fallback_reason
        assert kernel_xdp(tb) == ("xdpgeneric", st.prog_id)
    finally:
        st.close()
    assert_nothing_attached(tb)


@pytest.mark.parametrize("mtu,frags", [(1500, False), (3506, False), (3507, True),
                                       (9000, True)])
def test_the_multi_buffer_program_is_chosen_by_the_mtu(testbed, mtu, frags):
    """Above one buffer's MTU the xdp.frags program is loaded, and native mode accepts
    it on veth; below, the single-buffer one (what Linux 6.1 ran before)."""
    tb = testbed
    set_mtu(tb, mtu)
    st = steer(tb, "native")
    try:
        assert st.frags is frags and st.mode == "native"
        with tb.inside(tb.srv_ns):
            assert bpf.attached_prog_id(tb.srv_if) == st.prog_id
        assert kernel_xdp(tb) == ("xdp", st.prog_id)
    finally:
        st.close()
    assert_nothing_attached(tb)


# --- traffic ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_steered_port_without_xsk_is_refused_and_the_rest_untouched(testbed, mode):
    tb = testbed
    port = free_port(tb)
    st = steer(tb, mode)
    try:
        st.add_port(port)
        s0 = settle(st)
        assert connect(tb, port) == errno.ECONNREFUSED
        s1 = settle(st)
        d = delta(s0, s1)
        assert d["steered"] >= 1 and d["redirect_failed"] == d["steered"], d
        assert d["seen"] >= d["steered"]
        check_invariant(s1)

        # unsteered: ICMP and a kernel TCP server on another port
        p = tb.run(tb.peer_ns, ["ping", "-c", "2", "-W", "1", tb.srv_ip], check=False)
        assert p.returncode == 0, p.stdout + p.stderr
        with kernel_server(tb) as other:
            assert talk(tb, other) == b"pong:hi"
        s2 = settle(st)
        d = delta(s1, s2)
        assert d["passed"] >= 2 + 3, d  # 2 echo requests, at least 3 TCP segments
        assert d["steered"] == 0 and d["malformed"] == 0, d
        check_invariant(s2)
    finally:
        st.close()
    assert_nothing_attached(tb)


def test_steer_map_exact_wildcard_and_remove(testbed):
    tb = testbed
    exact, wild, elsewhere = 30001, 30002, 30003
    st = steer(tb, "native")
    try:
        st.add_port(exact, tb.srv_ip)
        st.add_port(wild)                      # any local address
        st.add_port(elsewhere, "10.77.0.99")   # not this address
        st.add_port(exact, tb.srv_ip)          # again: no duplicate
        assert st.ports() == sorted([(tb.srv_ip, exact), ("0.0.0.0", wild),
                                     ("10.77.0.99", elsewhere)])

        def steered(port):
            s0 = settle(st)
            assert connect(tb, port) == errno.ECONNREFUSED
            s1 = settle(st)
            d = delta(s0, s1)
            check_invariant(s1)
            return d["steered"] > 0

        assert steered(exact)
        assert steered(wild)
        assert not steered(elsewhere)
        assert not steered(30004)

        assert st.remove_port(exact, tb.srv_ip) is True
        assert st.remove_port(exact, tb.srv_ip) is False
        assert st.remove_port(wild, "0.0.0.0") is True
        assert not steered(exact)
        assert not steered(wild)
        assert st.ports() == [("10.77.0.99", elsewhere)]

        # bytes and wildcard spellings are the same keys
        st.add_port(wild, bytes(4))
        assert ("0.0.0.0", wild) in st.ports()
        assert steered(wild)
        st.add_port(exact, socket.inet_aton(tb.srv_ip))
        assert steered(exact)
        for bad in (0, 65536, -1, "80"):
            with pytest.raises(ValueError):
                st.add_port(bad)
        with pytest.raises(ValueError):
            st.add_port(80, "not-an-address")
        with pytest.raises(ValueError):
            st.add_port(80, b"\x01\x02")
    finally:
        st.close()


# --- hostile frames -----------------------------------------------------------------------
def mac(s: str) -> bytes:
    return bytes.fromhex(s.replace(":", ""))


def ipv4(src, dst, payload, *, ihl=5, tot_len=None, frag=0, proto=6, version=4):
    opts = b"\x01" * ((ihl - 5) * 4) if ihl > 5 else b""
    tl = tot_len if tot_len is not None else 20 + len(opts) + len(payload)
    hdr = struct.pack("!BBHHHBBH4s4s", (version << 4) | ihl, 0, tl, 1, frag, 64, proto, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    return hdr + opts + payload


def tcp(dport, *, doff=5, sport=40000):
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, doff << 4, 0x02, 65535, 0, 0) \
        + b"\0" * max(0, (doff - 5) * 4)


@pytest.mark.parametrize("mode", MODES)
def test_malformed_frames_counted_and_passed(testbed, mode):
    tb = testbed
    port = 30010
    st = steer(tb, mode)
    try:
        st.add_port(port)
        raw = tb.socket(tb.peer_ns, socket.AF_PACKET, socket.SOCK_RAW, 0)
        raw.bind((tb.peer_if, 0))
        eth = mac(tb.srv_mac) + mac(tb.peer_mac)
        src, dst = tb.peer_ip, tb.srv_ip
        good_tcp = tcp(port)
        malformed = [
            eth + b"\x08\x00" + b"\x45\x00\x00",                              # IPv4 cut short
            eth + b"\x81\x00" + b"\x00",                                      # VLAN tag cut
            eth + b"\x81\x00\x00\x05\x08\x00" + b"\x45" * 8,                  # IPv4 in VLAN cut
            eth + b"\x08\x00" + ipv4(src, dst, good_tcp, ihl=4),              # IHL < 5
            eth + b"\x08\x00" + ipv4(src, dst, good_tcp, version=6),          # version != 4
            eth + b"\x08\x00" + ipv4(src, dst, good_tcp[:8], tot_len=40),     # TCP cut short
            eth + b"\x08\x00" + ipv4(src, dst, good_tcp, tot_len=30),         # tot_len < hdrs
            eth + b"\x08\x00" + ipv4(src, dst, good_tcp, tot_len=1400),       # tot_len > frame
            eth + b"\x08\x00" + ipv4(src, dst, tcp(port, doff=2)),            # doff < 5
            eth + b"\x08\x00" + ipv4(src, dst, good_tcp[:20], ihl=15,
                                     tot_len=60 + 20)[:60 + 10],              # options + cut
            eth + b"\x08\x00" + ipv4(src, dst, tcp(port, doff=15)[:20], tot_len=40),  # doff>len
        ]
        steered_ok = [
            eth + b"\x08\x00" + ipv4(src, dst, good_tcp),                     # plain
            eth + b"\x81\x00\x00\x05\x08\x00" + ipv4(src, dst, good_tcp),     # 802.1Q
            eth + b"\x88\xa8\x00\x07\x08\x00" + ipv4(src, dst, good_tcp),     # 802.1ad
            eth + b"\x08\x00" + ipv4(src, dst, tcp(port), ihl=8),             # IPv4 options
            eth + b"\x08\x00" + ipv4(src, dst, tcp(port, doff=8)),            # TCP options
            eth + b"\x08\x00" + ipv4(src, dst, good_tcp) + b"\0" * 20,        # Ethernet padding
        ]
        passed = [
            eth + b"\x08\x00" + ipv4(src, dst, good_tcp, frag=0x2000),        # first fragment
            eth + b"\x08\x00" + ipv4(src, dst, good_tcp, frag=0x0003),        # later fragment
            eth + b"\x08\x00" + ipv4(src, dst, good_tcp, proto=17),           # UDP
            eth + b"\x81\x00\x00\x05\x81\x00\x00\x06\x08\x00"
                + ipv4(src, dst, good_tcp),                                   # QinQ: not ours
            eth + b"\x08\x00" + ipv4(src, dst, tcp(port + 1)),                # other port
            eth + b"\x86\xdd" + b"\x60" + b"\0" * 39,                         # IPv6
        ]
        s0 = settle(st)
        for frames in (malformed, steered_ok, passed):
            for f in frames:
                raw.send(f)
        s1 = settle(st, want=lambda s: s["seen"] - s0["seen"] >= 23)
        raw.close()
        d = delta(s0, s1)
        assert d["malformed"] == len(malformed), d
        assert d["steered"] == len(steered_ok), d
        assert d["redirect_failed"] == len(steered_ok), d
        assert d["passed"] >= len(passed), d
        check_invariant(s1)
        # still attached, and the kernel still serves the peer
        assert kernel_xdp(tb)[1] == st.prog_id
        with kernel_server(tb) as other:
            assert talk(tb, other) == b"pong:hi"
    finally:
        st.close()
    assert_nothing_attached(tb)


# --- an AF_XDP socket in the slot ---------------------------------------------------------
SOL_XDP = 283
XDP_UMEM_REG, XDP_UMEM_FILL_RING, XDP_UMEM_COMPLETION_RING = 4, 5, 6
XDP_RX_RING = 2
XDP_COPY = 1 << 1
_libc = ctypes.CDLL(None, use_errno=True)


def bare_xsk(tb, queue=0):
    """A bound AF_XDP socket with a UMEM and empty rings (frames sent to it are dropped).

    Just enough to test the XSKMAP; fpd/xsk.py is the real thing.
    """
    s = tb.socket(tb.srv_ns, 44, socket.SOCK_RAW, 0)
    area = mmap.mmap(-1, 16 * 4096)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(area))
    # struct xdp_umem_reg { __u64 addr, len; __u32 chunk_size, headroom, flags; }
    s.setsockopt(SOL_XDP, XDP_UMEM_REG, struct.pack("=QQIII4x", addr, len(area), 4096, 0, 0))
    for opt in (XDP_UMEM_FILL_RING, XDP_UMEM_COMPLETION_RING, XDP_RX_RING):
        s.setsockopt(SOL_XDP, opt, struct.pack("=I", 64))
    # struct sockaddr_xdp { __u16 family, flags; __u32 ifindex, queue_id, shared_umem_fd; }
    sa = struct.pack("=HHIII", 44, XDP_COPY, tb.srv_ifindex, queue, 0)
    if _libc.bind(s.fileno(), sa, len(sa)) != 0:
        err = ctypes.get_errno()
        s.close()
        raise OSError(err, f"bind AF_XDP: {os.strerror(err)}")
    return s, area


@pytest.mark.parametrize("mode", MODES)
def test_set_xsk_redirects_and_clear_xsk_returns_to_kernel(testbed, mode):
    tb = testbed
    port = 30020
    st = steer(tb, mode)
    xsk = area = None
    try:
        st.add_port(port)
        xsk, area = bare_xsk(tb, 0)
        st.set_xsk(0, xsk.fileno())
        s0 = settle(st)
        # the SYN goes to the socket (whose empty fill ring drops it): no RST, a timeout
        assert connect(tb, port, timeout=0.6) == errno.ETIMEDOUT
        s1 = settle(st)
        d = delta(s0, s1)
        assert d["steered"] >= 1 and d["redirect_failed"] == 0, d
        st.clear_xsk(0)
        st.clear_xsk(0)  # idempotent
        assert connect(tb, port) == errno.ECONNREFUSED
        d = delta(s1, settle(st))
        assert d["redirect_failed"] >= 1, d
        # errors: not an AF_XDP socket, queue out of range
        plain = tb.socket(tb.srv_ns)
        with pytest.raises(XdpError, match="not an AF_XDP socket"):
            st.set_xsk(0, plain.fileno())
        plain.close()
        with pytest.raises(ValueError):
            st.set_xsk(64, xsk.fileno())
        with pytest.raises(ValueError):
            st.clear_xsk(-1)
    finally:
        st.close()
        if xsk is not None:
            xsk.close()
    assert_nothing_attached(tb)


# --- a daemon killed with SIGKILL -----------------------------------------------------------
CHILD = """
import sys, time
from fpd.bpf import Steering
st = Steering(sys.argv[1], sys.argv[2])
st.add_port(30030)
print(st.prog_id, flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("mode", MODES)
def test_force_detach_after_sigkill(testbed, mode):
    tb = testbed
    child = tb.popen(tb.srv_ns, [sys.executable, "-c", CHILD, tb.srv_if, mode],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        assert line.strip().isdigit(), child.stderr.read() if child.poll() is not None else line
        pid = int(line)
    finally:
        child.kill()
        child.wait(5)
        child.stdout.close()
        child.stderr.close()
    # the attachment outlives the process
    assert kernel_xdp(tb)[1] == pid
    assert prog_exists(pid)
    with tb.inside(tb.srv_ns):
        assert bpf.attached_prog_id(tb.srv_if) == pid
        # a new daemon is told clearly
        with pytest.raises(XdpError, match=f"id {pid}"):
            Steering(tb.srv_if, mode)
        assert bpf.force_detach(tb.srv_if) is True
        assert bpf.attached_prog_id(tb.srv_if) == 0
        assert bpf.force_detach(tb.srv_if) is False
    assert_nothing_attached(tb)
    assert wait_prog_gone(pid)

