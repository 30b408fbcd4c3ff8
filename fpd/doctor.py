"""``fpd doctor``: everything ``fpd start`` needs, checked before it is tried.

Each check gives a level ("ok", "warn": works but worse or an optional tool is missing,
"bad": ``fpd start`` will fail) and one line naming the thing, the cause and the fix.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import socket

from fpd import daemon

UMEM_FRAMES = 4096                     # fpd.worker.Worker's default nframes
# drivers with native (driver-mode) XDP in mainline Linux; others get generic mode
NATIVE_XDP_DRIVERS = {
    "veth", "virtio_net", "tun", "ixgbe", "ixgbevf", "i40e", "ice", "igb", "igc", "mlx4_en",
    "mlx5_core", "bnxt_en", "nfp", "qede", "ena", "netsec", "stmmac", "mvneta", "mvpp2",
    "sfc", "thunderx", "dpaa2-eth", "enetc", "fec", "cpsw", "lan966x-switch", "gve",
    "hv_netvsc", "bond", "xen-netfront", "octeontx2-nicpf", "idpf",
}


def _c(name: str, level: str, detail: str) -> dict:
    return {"check": name, "ok": level != "bad", "level": level, "detail": detail}


def _run(name: str, fn, *a) -> dict:
    try:
        return fn(*a)
    except Exception as e:                     # noqa: BLE001  (a check never crashes)
        return _c(name, "bad", f"{type(e).__name__}: {e}")


def kernel() -> dict:
    rel = platform.release()
    try:
        major, minor = (int(x) for x in rel.split("-")[0].split(".")[:2])
    except ValueError:
        return _c("kernel", "bad", f"cannot read kernel version {rel!r}")
    if (major, minor) < (5, 10):
        return _c("kernel", "bad", f"Linux {rel}: fpd needs >= 5.10 (AF_XDP need_wakeup, "
                                   f"bpf_xdp_attach): upgrade the kernel")
    btf = os.path.exists("/sys/kernel/btf/vmlinux")
    return _c("kernel", "ok", f"Linux {rel} (>= 5.10){', BTF' if btf else ''}")


def privileges() -> dict:
    missing = daemon.missing_capabilities()
    if not missing:
        return _c("privileges", "ok", "running as root" if os.geteuid() == 0 and
                  daemon._capabilities() == 0 else
                  f"capabilities present ({', '.join(n for n, _ in daemon.REQUIRED_CAPS)})")
    if os.geteuid() == 0 and daemon._capabilities() == 0:
        return _c("privileges", "ok", "running as root")
    return _c("privileges", "bad", f"missing {', '.join(missing)}: fpd start needs root or "
                                   f"{', '.join(n for n, _ in daemon.REQUIRED_CAPS)}: run "
                                   f"it with sudo, or grant them (systemd/fpd.service)")


def worker_user(user: str | None = "auto") -> dict:
    """The user the workers drop to (fpd start --user), and the capabilities to do so."""
    cfg = daemon.DaemonConfig(ifname="lo", ports=[1], user=user)
    try:
        ids = daemon.check_drop(cfg)
    except daemon.DaemonError as e:
        return _c("worker_user", "bad", str(e))
    if ids is None:
        return _c("worker_user", "warn", "the workers keep root (--user root): a bug "
                                         "reachable from a client's shared memory is a "
                                         "root bug; give --user USER")
    return _c("worker_user", "ok", f"the workers drop root for {ids[2]} (uid {ids[0]}) "
                                   f"after set-up, no capabilities kept (--user)")


def memlock(queues: int = 1, mtu: int = 1500) -> dict:
    chunk = 2048 if mtu + 18 + 256 <= 2048 else 4096
    need = queues * UMEM_FRAMES * chunk
    caps = daemon._capabilities()
    if caps >> daemon.CAP_IPC_LOCK & 1:
        return _c("memlock", "ok", f"CAP_IPC_LOCK: the UMEM ({need >> 20} MiB for {queues} "
                                   f"queue{'s' * (queues != 1)}) is not limited")
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft == resource.RLIM_INFINITY or soft >= need + (1 << 20):
        return _c("memlock", "ok", f"RLIMIT_MEMLOCK {'unlimited' if soft < 0 else f'{soft >> 20} MiB'}"
                                   f" covers the UMEM ({need >> 20} MiB)")
    return _c("memlock", "bad", f"RLIMIT_MEMLOCK is {soft >> 20} MiB and there is no "
                                f"CAP_IPC_LOCK, but the UMEM needs {need >> 20} MiB for "
                                f"{queues} queue{'s' * (queues != 1)} (ENOBUFS at start): run "
                                f"as root, grant CAP_IPC_LOCK, or raise the limit (ulimit -l "
                                f"unlimited; systemd LimitMEMLOCK=infinity)")


def af_xdp() -> dict:
    try:
        s = socket.socket(44, socket.SOCK_RAW, 0)
    except OSError as e:
        return _c("af_xdp", "bad", f"cannot create an AF_XDP socket ({e.strerror}): the "
                                   f"kernel needs CONFIG_XDP_SOCKETS=y, and fpd root/CAP_NET_RAW")
    s.close()
    return _c("af_xdp", "ok", "AF_XDP sockets can be created")


def libbpf() -> dict:
    from fpd import libbpf as _l  # noqa: F401  (loading the shared library is the check)
    return _c("libbpf", "ok", "libbpf loaded")


def bpf_object() -> dict:
    from fpd.bpf import find_object
    try:
        return _c("bpf_object", "ok", find_object())
    except Exception as e:                     # noqa: BLE001
        return _c("bpf_object", "bad", f"no steering program: {e}: build it with "
                                       f"`./run.sh bpf` (needs clang) or set FPD_BPF_OBJECT")


def data_path() -> dict:
    """Which data path a worker started from here runs (never a failure: the pure-Python
    path is complete, only slower)."""
    from fpd import wire
    levers = []
    for env, name in (("FPD_BURST_PARSE", "burst parse"), ("FPD_BURST", "burst input"),
                      ("FPD_TSO", "template transmit"), ("FPD_ACK_COLLAPSE", "ACK runs")):
        if os.environ.get(env, "") in ("0", "no", "off", "false"):
            levers.append(f"{name} off ({env}=0)")
    # stop 19's switches whose default is not "on": say when the run differs from it
    if os.environ.get("FPD_ACK_WND", "") in ("0", "no", "off", "false"):
        levers.append("ACK runs stop at a window change (FPD_ACK_WND=0)")
    if os.environ.get("FPD_RX_DIRECT", "0") in ("1", "yes", "on"):
        levers.append("direct receive delivery into client rings on (FPD_RX_DIRECT=1)")
    if os.environ.get("FPD_TX_BUDGET"):
        levers.append(f"TX budget {os.environ['FPD_TX_BUDGET']} frames per sendto "
                      f"(FPD_TX_BUDGET; 0: the kernel's 32)")
    extra = ("; " + ", ".join(levers)) if levers else ""
    from fpd import tcp
    eng = "the engine fpd._tcp_c (fpd/tcp.py compiled, Cython, typed)" \
        if tcp.IMPL == "compiled" else f"the engine as Python ({tcp.WHY})"
    extra = f"; {eng}{extra}"
    if wire.ACCEL:
        from fpd import fastpath
        fp = "fpd._fastpath_c (the engine's per-burst fast path, Cython)" \
            if fastpath.IMPL == "compiled" else \
            f"the per-burst engine path as Python ({fastpath.WHY})"
        return _c("data_path", "ok", f"compiled: fpd._accel (C burst parse, frame stamping, "
                                     f"checksums) and {fp}{extra}")
    why = "FPD_PURE_PYTHON set" if os.environ.get("FPD_PURE_PYTHON") else \
        "fpd._accel not built (pip install -e . needs gcc and python3-dev)"
    return _c("data_path", "ok", f"pure Python ({why}){extra}")


def _driver(ifname: str) -> str:
    try:
        return os.path.basename(os.readlink(f"/sys/class/net/{ifname}/device/driver"))
    except OSError:
        pass
    try:                                       # virtual devices: the kind from netlink
        from pyroute2 import IPRoute
        with IPRoute() as ip:
            idx = ip.link_lookup(ifname=ifname)
            if idx:
                link = ip.get_links(idx[0])[0]
                info = link.get_attr("IFLA_LINKINFO")
                if info is not None:
                    return info.get_attr("IFLA_INFO_KIND") or "?"
    except Exception:                          # noqa: BLE001
        pass
    return "?"


def _kernel_at_least(major: int, minor: int) -> bool:
    try:
        parts = os.uname().release.split("-")[0].split(".")
        return (int(parts[0]), int(parts[1])) >= (major, minor)
    except (ValueError, IndexError):
        return False


def _mtu_check(ifname: str, mtu: int) -> dict:
    """An MTU whose frames exceed a 4096-byte UMEM chunk: AF_XDP multi-buffer."""
    rel = os.uname().release
    if os.environ.get("FPD_SG", "1").strip().lower() in ("0", "no", "off", "false"):
        return _c("mtu", "bad", f"MTU {mtu} of {ifname}: frames exceed a 4096-byte UMEM "
                                f"chunk and multi-buffer AF_XDP is off (FPD_SG=0): unset "
                                f"it, or ip link set {ifname} mtu 3498")
    if not _kernel_at_least(6, 6):
        return _c("mtu", "bad", f"MTU {mtu} of {ifname}: frames exceed a 4096-byte UMEM "
                                f"chunk, which needs AF_XDP multi-buffer (XDP_USE_SG, Linux "
                                f">= 6.6; this is {rel}): ip link set {ifname} mtu 3498")
    return _c("mtu", "ok", f"MTU {mtu} of {ifname}: frames exceed a 4096-byte UMEM chunk; "
                           f"fpd uses AF_XDP multi-buffer (XDP_USE_SG, Linux {rel}) and the "
                           f"xdp.frags program (fpd_steer_frags); a driver without "
                           f"multi-buffer support refuses at fpd start (EOPNOTSUPP)")


def interface(ifname: str) -> list[dict]:
    out = []
    try:
        idx = daemon.check_interface(ifname)
    except daemon.DaemonError as e:
        return [_c("interface", "bad", str(e))]
    from fpd import xsk
    from fpd.neigh import iface_info
    try:
        mtu = int(iface_info(ifname)[2] or 1500)
    except Exception:                          # noqa: BLE001
        mtu = 1500
    drv = _driver(ifname)
    out.append(_c("interface", "ok", f"{ifname} (ifindex {idx}, driver {drv}, MTU {mtu})"))
    if drv in NATIVE_XDP_DRIVERS:
        out.append(_c("xdp_mode", "ok", f"driver {drv} has native XDP (fpd start --mode auto "
                                        f"uses it)"))
    else:
        out.append(_c("xdp_mode", "warn", f"driver {drv} is not known to have native XDP: "
                                          f"fpd start --mode auto falls back to generic "
                                          f"(skb) mode, which is slower"))
    if mtu + 18 + 256 > 4096:
        out.append(_mtu_check(ifname, mtu))
    try:
        n = xsk.queues_of(ifname)
        out.append(_c("queues", "ok", f"{n} active queue{'s' * (n != 1)}: fpd start runs "
                                      f"{n} worker{'s' * (n != 1)} (--queues N for fewer)"))
    except OSError as e:
        n = 1
        out.append(_c("queues", "bad", f"cannot count the queues of {ifname}: {e.strerror} "
                                       f"(ethtool -l {ifname} should answer)"))
    out.append(memlock(n, mtu))
    try:
        from fpd.bpf import PROG_NAMES, attached_prog_id
        prog = attached_prog_id(ifname)
    except Exception as e:                     # noqa: BLE001
        out.append(_c("xdp_free", "bad", f"cannot query XDP on {ifname}: {e}"))
        return out
    if prog:
        name = daemon.prog_name(prog)
        if name in PROG_NAMES:
            out.append(_c("xdp_free", "bad", f"{ifname} already has fpd's program (id {prog}):"
                                             f" an fpd serves it (`fpd status`), or one died "
                                             f"(`fpd stop --force -i {ifname}`)"))
        else:
            out.append(_c("xdp_free", "bad", f"{ifname} has another XDP program (id {prog}, "
                                             f"{name or 'name unknown'}): fpd start refuses; "
                                             f"`fpd xdp detach -i {ifname}` removes it if "
                                             f"nothing needs it"))
    else:
        out.append(_c("xdp_free", "ok", f"no XDP program on {ifname} yet"))
    return out


def _tcp_ports_in_use() -> dict[int, int]:
    """local port -> sockets of the kernel's TCP (IPv4 and IPv6) in this namespace."""
    out: dict[int, int] = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    port = int(parts[1].rsplit(":", 1)[1], 16)
                    out[port] = out.get(port, 0) + 1
        except (OSError, StopIteration, ValueError, IndexError):
            continue
    return out


def local_ports(lo: int, hi: int) -> dict:
    used = {p: n for p, n in _tcp_ports_in_use().items() if lo <= p <= hi}
    if used:
        first = sorted(used)[:5]
        return _c("local_ports", "bad", f"local port range {lo}-{hi}: {sum(used.values())} "
                                        f"kernel socket(s) use ports {', '.join(map(str, first))}"
                                        f"{'...' if len(used) > 5 else ''} (`ss -tanp sport "
                                        f"= :{first[0]}`): choose a free range with "
                                        f"--local-ports LO-HI")
    try:
        reserved = daemon.parse_port_list(daemon.read_reserved())
    except OSError:
        reserved = set()
    taken = sorted(p for p in reserved if lo <= p <= hi)
    if taken:
        return _c("local_ports", "warn", f"local port range {lo}-{hi}: {len(taken)} port(s) "
                                         f"already in {daemon.RESERVED_PORTS} (another fpd, "
                                         f"or a stale one: `fpd stop --force -i IFACE`)")
    return _c("local_ports", "ok", f"local port range {lo}-{hi} is free ({hi - lo + 1} ports "
                                   f"for connections apps open)")


def listen_ports(ports) -> list[dict]:
    used = _tcp_ports_in_use()
    out = []
    for p in ports:
        if used.get(p):
            out.append(_c(f"port_{p}", "warn", f"the kernel has {used[p]} socket(s) on port "
                                               f"{p}: once fpd steers it, they no longer get "
                                               f"its traffic (`ss -tlnp sport = :{p}`)"))
        else:
            out.append(_c(f"port_{p}", "ok", f"port {p}: no kernel socket uses it"))
    return out


def tools() -> list[dict]:
    out = []
    for tool, why in (("clang", "only to rebuild bpf/steer.c"),
                      ("tcpdump", "to read `fpd capture` output (-w - | tcpdump -r -)")):
        path = shutil.which(tool)
        out.append(_c(tool, "ok" if path else "warn",
                      path or f"{tool} not found ({why}): apt-get install {tool}"))
    from fpd import trace
    try:
        trace.find_tracefs(mount=False)
        out.append(_c("tracefs", "ok", "tracefs with XDP events (fpd trace)"))
    except trace.TraceError as e:
        out.append(_c("tracefs", "warn", str(e).replace("counters are still shown",
                                                        "fpd trace mounts it when root")))
    ok, text = trace.bcc_status()
    out.append(_c("bcc", "ok" if ok else "warn", text))
    return out


def run_checks(ifname: str | None = None, local: tuple | None = None, ports=()) -> list[dict]:
    checks = [_run("kernel", kernel), _run("privileges", privileges),
              _run("af_xdp", af_xdp), _run("libbpf", libbpf), _run("bpf_object", bpf_object),
              _run("data_path", data_path), _run("worker_user", worker_user)]
    if ifname:
        try:
            checks += interface(ifname)
        except Exception as e:                 # noqa: BLE001
            checks.append(_c("interface", "bad", f"{type(e).__name__}: {e}"))
    else:
        checks.append(_run("memlock", memlock))
    lo, hi = local or daemon.DEFAULT_LOCAL_PORTS
    checks.append(_run("local_ports", local_ports, lo, hi))
    checks += listen_ports(ports)
    checks += tools()
    return checks
