"""Load, attach and drive the XDP steering program (bpf/steer.c) through libbpf.

    with Steering("eth0") as st:           # native XDP, else generic ("auto")
        st.add_port(8080)                  # any local address
        st.set_xsk(0, xsk_fd)              # AF_XDP socket of queue 0
        ...
        st.stats()                         # {"seen": …, "steered": …, …}

Everything here acts in the network namespace of the *calling thread* at the time of the
call: ``Steering`` remembers the namespace it attached in and detaches there, whichever
thread calls ``close()``. ``attached_prog_id`` and ``force_detach`` look at the interface
of that name in the caller's namespace.

The attachment is made through netlink, not a bpf_link: it survives the process. A daemon
killed with SIGKILL leaves the program on the interface (steered ports then fall back to the
kernel, since the XSKMAP slots are emptied when the sockets close); ``force_detach``
removes it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno as E
import hashlib
import ipaddress
import logging
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

from fpd import libbpf as L
from fpd import libc
from fpd import netns

log = logging.getLogger("fpd.bpf")

PROG_NAME = "fpd_steer"
STEER_MAP = "fpd_steer"
STEER_MAP_C = "fpd_steer_map"   # the C variable: see the comment on the map in steer.c
XSKS_MAP = "fpd_xsks"
STATS_MAP = "fpd_stats"

# Mirrors enum fpd_stat in bpf/steer.c (tests/unit/test_bpf_unit.py keeps them equal).
STAT_NAMES = ("seen", "steered", "passed", "malformed", "redirect_failed", "syn_limited")
SYN_CFG_MAP = "fpd_syn_cfg"
# struct fpd_syn_cfg { __u64 rate; __u64 burst; }
SYN_CFG = struct.Struct("=QQ")
SYN_LIMIT_MAX = 10_000_000      # SYNs per second per CPU (and burst): far above any need

MODES = ("auto", "native", "generic")
_MODE_FLAG = {"native": L.XDP_FLAGS_DRV_MODE, "generic": L.XDP_FLAGS_SKB_MODE}

# struct fpd_steer_key { __be32 addr; __be16 port; __u16 pad; }
STEER_KEY = struct.Struct("!4sH2x")
# struct fpd_steer_val { __u32 flags; }
STEER_VAL = struct.Struct("=I")
U32 = struct.Struct("=I")

VETH_NATIVE_MAX_MTU = 3506
SYSTEM_OBJECT = Path("/usr/lib/fpd/steer.o")
BPF_CFLAGS = ["-O2", "-g", "-Wall", "-target", "bpf"]



class XdpError(OSError):
    """An XDP/BPF operation failed. ``str()`` names the interface, the mode and the errno.

    Attributes besides OSError's ``errno``/``strerror``: ``ifname``, ``mode``,
    ``prog_id`` (the program already attached, for EBUSY/EEXIST), ``log`` (libbpf's and the
    kernel's messages, e.g. the verifier log when loading failed).
    """

    def __init__(self, err: int, message: str, *, ifname: str | None = None,
                 mode: str | None = None, prog_id: int = 0, log: str = ""):
        super().__init__(err, message)
        self.ifname = ifname
        self.mode = mode
        self.prog_id = prog_id
        self.log = log

    def __str__(self):
        return self.strerror


# --- libbpf's log ------------------------------------------------------------------------
_tls = threading.local()
_print_lock = threading.Lock()
_print_cb = None
_LOG_BUF = 1 << 18


def _on_libbpf_print(level, fmt, ap):
    try:
        buf = ctypes.create_string_buffer(_LOG_BUF)
        n = libc.vsnprintf(buf, _LOG_BUF, fmt, ap)
        text = buf.value.decode("utf-8", "replace")
        if n >= _LOG_BUF:
            text += "\n[libbpf message truncated]\n"
        sink = getattr(_tls, "capture", None)
        if sink is not None and level <= L.LIBBPF_INFO:
            sink.append(text)
        elif level == L.LIBBPF_DEBUG:
            pass
        else:
            log.debug("libbpf: %s", text.rstrip())
    except Exception:  # never let an exception cross back into C
        pass
    return 0


def _install_print() -> None:
    global _print_cb
    with _print_lock:
        if _print_cb is None:
            _print_cb = L.libbpf_print_fn_t(_on_libbpf_print)
            L.libbpf_set_print(_print_cb)


@contextlib.contextmanager
def _capture():
    """Collect libbpf's warnings emitted by this thread in the body into a list."""
    _install_print()
    old = getattr(_tls, "capture", None)
    lines: list[str] = []
    _tls.capture = lines
    try:
        yield lines
    finally:
        _tls.capture = old


def _kernel_msg(lines: list[str]) -> str:
    """The netlink extended-ack message libbpf logged, if any."""
    for line in lines:
        if "Kernel error message:" in line:
            return line.split("Kernel error message:", 1)[1].strip()
    return ""


def _err_of(ret: int) -> int:
    """errno of a failed libbpf call: ints return -errno; pointers NULL + errno."""
    if ret is not None and ret < 0:
        return -ret
    return ctypes.get_errno() or E.EINVAL


def _word(err: int) -> str:
    return f"{E.errorcode.get(err, err)}: {os.strerror(err)}"


# --- namespaces ----------------------------------------------------------------------------
@contextlib.contextmanager
def _in_ns(ns_fd: int):
    """Run the body in the network namespace behind ``ns_fd`` (calling thread only)."""
    try:
        ctx = netns.inside(ns_fd)
        ctx.__enter__()
    except OSError as e:
        raise XdpError(e.errno, f"cannot enter the network namespace of the attachment: "
                                f"{_word(e.errno)}") from None
    try:
        yield
    finally:
        ctx.__exit__(None, None, None)


def _ifindex(ifname: str, mode: str | None = None) -> int:
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        where = f" ({mode} mode)" if mode else ""
        raise XdpError(E.ENODEV, f"interface {ifname} does not exist in this network "
                                 f"namespace{where}: {_word(E.ENODEV)}",
                       ifname=ifname, mode=mode) from None


# --- finding the object ------------------------------------------------------------------
def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fpd"


def _compile(src: Path, out: Path) -> Path:
    clang = shutil.which("clang")
    if not clang:
        raise FileNotFoundError(f"{out} is missing and clang is not installed to build it "
                                f"from {src} (apt-get install clang libbpf-dev, or `make bpf`)")
    machine = os.uname().machine
    cmd = [clang, *BPF_CFLAGS, f"-I/usr/include/{machine}-linux-gnu", "-c", str(src)]
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".steer-", suffix=".o", dir=out.parent)
    os.close(fd)
    try:
        p = subprocess.run([*cmd, "-o", tmp], capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise OSError(E.EINVAL, f"compiling {src} failed:\n{p.stderr.strip()}")
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    log.info("compiled %s into %s", src, out)
    return out


def _writable(d: Path) -> bool:
    """Can files be created in ``d``? Tried for real: os.access() says yes to root on
    directories whose permission bits say no."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".fpd-probe-", dir=d)
    except OSError:
        return False
    os.close(fd)
    os.unlink(tmp)
    return True


def find_object() -> str:
    """Path of the compiled steering program.

    Order: $FPD_BPF_OBJECT; <source tree>/bpf/steer.o (rebuilt if steer.c is newer, into the
    tree or, if read-only, into ~/.cache/fpd); /usr/lib/fpd/steer.o; and if only steer.c is
    there, it is compiled with clang. An installed package (no source tree) has its own copy
    of steer.c (fpd/steer.c), compiled into ~/.cache/fpd.
    """
    env = os.environ.get("FPD_BPF_OBJECT")
    if env:
        if not os.path.isfile(env):
            raise FileNotFoundError(f"FPD_BPF_OBJECT={env} does not exist")
        return env
    import fpd

    pkg = Path(fpd.__file__).resolve().parent
    bpf_dir = pkg.parent / "bpf"
    obj, src = bpf_dir / "steer.o", bpf_dir / "steer.c"
    fresh = obj.is_file() and (not src.is_file()
                               or obj.stat().st_mtime >= src.stat().st_mtime)
    if fresh:
        return str(obj)
    if not src.is_file() and SYSTEM_OBJECT.is_file():
        return str(SYSTEM_OBJECT)
    if not src.is_file() and not obj.is_file():
        src = pkg / "steer.c"          # installed: the package's copy of bpf/steer.c
    if src.is_file():
        digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
        cached = _cache_dir() / f"steer-{digest}.o"
        if cached.is_file():
            return str(cached)
        try:
            if _writable(bpf_dir):
                return str(_compile(src, obj))
            return str(_compile(src, cached))
        except FileNotFoundError:  # no clang
            if obj.is_file():  # stale but usable
                log.warning("%s is older than %s and clang is missing: using it", obj, src)
                return str(obj)
            if SYSTEM_OBJECT.is_file():
                return str(SYSTEM_OBJECT)
            raise
    if SYSTEM_OBJECT.is_file():
        return str(SYSTEM_OBJECT)
    raise FileNotFoundError(f"no steering program: set FPD_BPF_OBJECT, run `make bpf` "
                            f"(builds {obj}) or install {SYSTEM_OBJECT}")


# --- attachment queries ------------------------------------------------------------------
def _query(ifindex: int, ifname: str) -> L.bpf_xdp_query_opts:
    opts = L.bpf_xdp_query_opts(sz=ctypes.sizeof(L.bpf_xdp_query_opts))
    with _capture():
        ret = L.bpf_xdp_query(ifindex, 0, ctypes.byref(opts))
    if ret < 0:
        err = _err_of(ret)
        raise XdpError(err, f"cannot query XDP on {ifname}: {_word(err)}", ifname=ifname)
    return opts


def _any_id(q: L.bpf_xdp_query_opts) -> int:
    return q.prog_id or q.drv_prog_id or q.skb_prog_id or q.hw_prog_id


def attached_prog_id(ifname: str, mode: str | None = None) -> int:
    """Id of the XDP program the kernel has on ``ifname`` (0 = none).

    ``mode`` None: in any mode; "native" or "generic": in that mode only.
    """
    if mode not in (None, "native", "generic"):
        raise ValueError(f"mode must be None, 'native' or 'generic', not {mode!r}")
    q = _query(_ifindex(ifname, mode), ifname)
    if mode == "native":
        return q.drv_prog_id
    if mode == "generic":
        return q.skb_prog_id
    return _any_id(q)


def force_detach(ifname: str) -> bool:
    """Remove whatever XDP program is attached to ``ifname`` (native, generic, offloaded).

    Returns True if something was removed. For `fpd stop --force` after a crash.
    """
    ifindex = _ifindex(ifname)
    q = _query(ifindex, ifname)
    removed = False
    for pid, flag, mode in ((q.drv_prog_id, L.XDP_FLAGS_DRV_MODE, "native"),
                            (q.skb_prog_id, L.XDP_FLAGS_SKB_MODE, "generic"),
                            (q.hw_prog_id, L.XDP_FLAGS_HW_MODE, "offload")):
        if not pid:
            continue
        with _capture() as lines:
            ret = L.bpf_xdp_detach(ifindex, flag, None)
        if ret < 0:
            raise _attach_error(_err_of(ret), ifname, mode, "detach", lines, ifindex)
        log.info("detached XDP program id %d (%s mode) from %s", pid, mode, ifname)
        removed = True
    return removed


def _attach_error(err: int, ifname: str, mode: str, what: str, lines: list[str],
                  ifindex: int | None = None) -> XdpError:
    kmsg = _kernel_msg(lines)
    tail = f" [kernel: {kmsg}]" if kmsg else ""
    base = f"cannot {what} XDP program on {ifname} in {mode} mode ({_word(err)})"
    existing = 0
    if err == E.ENODEV:
        msg = f"interface {ifname} does not exist ({mode} mode, {_word(err)})"
    elif err in (E.EPERM, E.EACCES):
        msg = (f"not permitted: run as root or with CAP_NET_ADMIN+CAP_BPF to {what} XDP on "
               f"{ifname} ({mode} mode, {_word(err)})")
    elif err == E.ERANGE and mode == "native":
        msg = (f"MTU of {ifname} (or its peer) too large for native XDP (max "
               f"{VETH_NATIVE_MAX_MTU} on veth; lower it or use generic mode) "
               f"({_word(err)})")
    elif err in (E.EBUSY, E.EEXIST) and what == "attach":
        with contextlib.suppress(XdpError):
            if ifindex:
                existing = _any_id(_query(ifindex, ifname))
        ident = f"id {existing}" if existing else "id unknown"
        msg = (f"another XDP program ({ident}) is already attached to {ifname}; "
               f"detach it first (`fpd stop --force`, or `ip link set dev {ifname} xdp "
               f"off`) ({mode} mode, {_word(err)})")
    elif err == E.EOPNOTSUPP and mode == "native":
        msg = f"the driver of {ifname} has no native XDP support ({_word(err)})"
    else:
        msg = base
    return XdpError(err, msg + tail, ifname=ifname, mode=mode, prog_id=existing,
                    log="".join(lines))


def _fd_info(fd: int, field: str) -> int:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _parse_addr(addr) -> bytes:
    if addr is None or addr == 0:
        return bytes(4)
    if isinstance(addr, (bytes, bytearray)):
        if len(addr) != 4:
            raise ValueError(f"an IPv4 address is 4 bytes, not {len(addr)}")
        return bytes(addr)
    if isinstance(addr, (str, ipaddress.IPv4Address)):
        return ipaddress.IPv4Address(addr).packed
    raise TypeError(f"address must be str, 4 bytes or None, not {type(addr).__name__}")


def _check_port(port: int) -> int:
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ValueError(f"TCP port must be 1..65535, not {port!r}")
    return port


# --- the steering object -------------------------------------------------------------------
class Steering:
    """The loaded steering program, its maps and its attachment to one interface.

    Attributes: ``ifname``, ``ifindex``, ``mode`` ("native"|"generic": the mode actually
    used), ``prog_id``, ``obj_path``, ``fallback_reason`` (in auto mode, why native mode
    was refused, else None).
    """

    def __init__(self, ifname: str, mode: str = "auto", obj_path=None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.ifname = ifname
        self.requested_mode = mode
        self.mode: str | None = None
        self.fallback_reason: str | None = None
        self.prog_id = 0
        self._obj = None
        self._attached = False
        self._closed = False
        self._lock = threading.Lock()
        self._ns_fd = netns.open_current()
        try:
            self.ifindex = _ifindex(ifname, None if mode == "auto" else mode)
            self.obj_path = str(obj_path) if obj_path is not None else find_object()
            self._load()
            self._attach(mode)
        except BaseException:
            self._release()
            self._closed = True
            raise

    # -- loading ------------------------------------------------------------------------
    def _load(self) -> None:
        path = self.obj_path
        with _capture() as lines:
            obj = L.bpf_object__open_file(path.encode(), None)
            if not obj:
                err = _err_of(None)
                raise XdpError(err, f"cannot open BPF object {path} for {self.ifname}: "
                                    f"{_word(err)}\n" + "".join(lines),
                               ifname=self.ifname, log="".join(lines))
            self._obj = obj
            steer = self._rename_steer_map()
            ret = L.bpf_object__load(obj)
            if ret < 0:
                err = _err_of(ret)
                text = "".join(lines)
                where = f"for {self.ifname} ({self.requested_mode} mode)"
                if "PROG LOAD LOG" in text:  # the verifier said no (EACCES or EINVAL)
                    head = (f"the kernel's verifier rejected {path} {where} "
                            f"({_word(err)})")
                elif err in (E.EPERM, E.EACCES):
                    head = (f"not permitted: run as root or with CAP_NET_ADMIN+CAP_BPF to "
                            f"load {path} {where} ({_word(err)})")
                else:
                    head = f"loading {path} into the kernel {where} failed ({_word(err)})"
                raise XdpError(err, f"{head}; libbpf and verifier log:\n{text}",
                               ifname=self.ifname, mode=self.requested_mode, log=text)
        prog = L.bpf_object__find_program_by_name(obj, PROG_NAME.encode())
        if not prog:
            raise XdpError(E.ENOENT, f"{path} has no program named {PROG_NAME}")
        self._prog_fd = L.bpf_program__fd(prog)
        self._steer_fd = L.bpf_map__fd(steer)
        self._xsks_fd, self._xsks_max = self._map(XSKS_MAP)
        self._stats_fd, self._stats_max = self._map(STATS_MAP)
        try:
            self._syn_cfg_fd = self._map(SYN_CFG_MAP)[0]
        except XdpError:                 # an object built before the SYN limit existed
            self._syn_cfg_fd = None
        self.syn_limit = (0, 0)
        self.prog_id = _fd_info(self._prog_fd, "prog_id")
        self._ncpus = L.libbpf_num_possible_cpus()
        if self._ncpus <= 0:
            raise XdpError(-self._ncpus, "cannot count the possible CPUs")

    def _map(self, name: str):
        m = L.bpf_object__find_map_by_name(self._obj, name.encode())
        if not m:
            raise XdpError(E.ENOENT, f"{self.obj_path} has no map named {name}")
        return L.bpf_map__fd(m), L.bpf_map__max_entries(m)

    def _rename_steer_map(self):
        """Give the steer map its kernel name "fpd_steer" (see steer.c); returns the map.

        libbpf would name it after its C variable, so the map is created here under the
        right name, with the object's type, sizes and flags, and handed to libbpf with
        bpf_map__reuse_fd() before the object is loaded.
        """
        obj = self._obj
        m = L.bpf_object__find_map_by_name(obj, STEER_MAP.encode())
        if m:  # an object that already names it so
            return m
        m = L.bpf_object__find_map_by_name(obj, STEER_MAP_C.encode())
        if not m:
            raise XdpError(E.ENOENT, f"{self.obj_path} has no map named {STEER_MAP}")
        opts = L.bpf_map_create_opts(sz=ctypes.sizeof(L.bpf_map_create_opts),
                                     map_flags=L.bpf_map__map_flags(m))
        fd = L.bpf_map_create(L.bpf_map__type(m), STEER_MAP.encode(), L.bpf_map__key_size(m),
                              L.bpf_map__value_size(m), L.bpf_map__max_entries(m),
                              ctypes.byref(opts))
        if fd < 0:
            err = _err_of(fd)
            where = f"for {self.ifname} ({self.requested_mode} mode)"
            msg = (f"not permitted: run as root or with CAP_NET_ADMIN+CAP_BPF to create "
                   f"the BPF maps {where} ({_word(err)})" if err in (E.EPERM, E.EACCES)
                   else f"cannot create map {STEER_MAP} {where}: {_word(err)}")
            raise XdpError(err, msg, ifname=self.ifname, mode=self.requested_mode)
        try:
            ret = L.bpf_map__reuse_fd(m, fd)
        finally:
            os.close(fd)  # libbpf keeps its own duplicate
        if ret < 0:
            err = _err_of(ret)
            raise XdpError(err, f"cannot hand map {STEER_MAP} to libbpf: {_word(err)}")
        return m

    # -- attaching ------------------------------------------------------------------------
    def _attach_in(self, mode: str) -> None:
        flags = L.XDP_FLAGS_UPDATE_IF_NOEXIST | _MODE_FLAG[mode]
        with _capture() as lines:
            ret = L.bpf_xdp_attach(self.ifindex, self._prog_fd, flags, None)
        if ret < 0:
            raise _attach_error(_err_of(ret), self.ifname, mode, "attach", lines,
                                self.ifindex)
        self.mode = mode
        self._attached = True

    def _attach(self, mode: str) -> None:
        if mode != "auto":
            self._attach_in(mode)
            return
        try:
            self._attach_in("native")
        except XdpError as e:
            # not a property of the mode: generic would fail the same way, or worse,
            # hide another program
            if e.errno in (E.ENODEV, E.EPERM, E.EACCES, E.EBUSY, E.EEXIST):
                raise
            self.fallback_reason = str(e)
            log.info("native XDP refused on %s (%s); using generic mode", self.ifname, e)
            try:
                self._attach_in("generic")
            except XdpError as e2:
                raise XdpError(e2.errno, f"{e2} — native mode was refused too: {e}",
                               ifname=self.ifname, mode="generic", prog_id=e2.prog_id,
                               log=e.log + e2.log) from e2

    # -- steer map ------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the Steering object is closed")

    def add_port(self, port: int, addr: str | bytes | None = None) -> None:
        """Steer TCP to ``port`` at ``addr`` (None / "0.0.0.0" = any local address)."""
        self._check_open()
        key = STEER_KEY.pack(_parse_addr(addr), _check_port(port))
        val = STEER_VAL.pack(0)
        ret = L.bpf_map_update_elem(self._steer_fd, key, val, L.BPF_ANY)
        if ret < 0:
            err = _err_of(ret)
            extra = " (steer map full)" if err == E.E2BIG else ""
            raise XdpError(err, f"cannot steer port {port} on {self.ifname}{extra}: "
                                f"{_word(err)}", ifname=self.ifname, mode=self.mode)

    def remove_port(self, port: int, addr: str | bytes | None = None) -> bool:
        """Stop steering ``(addr, port)``. Returns False if it was not steered."""
        self._check_open()
        key = STEER_KEY.pack(_parse_addr(addr), _check_port(port))
        ret = L.bpf_map_delete_elem(self._steer_fd, key)
        if ret < 0:
            err = _err_of(ret)
            if err == E.ENOENT:
                return False
            raise XdpError(err, f"cannot unsteer port {port} on {self.ifname}: "
                                f"{_word(err)}", ifname=self.ifname, mode=self.mode)
        return True

    def ports(self) -> list[tuple[str, int]]:
        """The steered (address, port) pairs, "0.0.0.0" meaning any local address."""
        self._check_open()
        out = []
        cur = None
        nxt = ctypes.create_string_buffer(STEER_KEY.size)
        while True:
            ret = L.bpf_map_get_next_key(self._steer_fd, cur, nxt)
            if ret < 0:
                err = _err_of(ret)
                if err == E.ENOENT:
                    break
                raise XdpError(err, f"cannot list the steer map: {_word(err)}")
            addr, port = STEER_KEY.unpack(nxt.raw)
            out.append((socket.inet_ntoa(addr), port))
            cur = ctypes.create_string_buffer(nxt.raw, STEER_KEY.size)
        return sorted(out)

    # -- XSKMAP ---------------------------------------------------------------------------
    def _check_queue(self, queue: int) -> int:
        if not isinstance(queue, int) or not 0 <= queue < self._xsks_max:
            raise ValueError(f"queue must be 0..{self._xsks_max - 1}, not {queue!r}")
        return queue

    def set_xsk(self, queue: int, fd: int) -> None:
        """Put the AF_XDP socket ``fd`` (bound to this interface and queue) in the slot."""
        self._check_open()
        key = U32.pack(self._check_queue(queue))
        ret = L.bpf_map_update_elem(self._xsks_fd, key, U32.pack(fd), L.BPF_ANY)
        if ret < 0:
            err = _err_of(ret)
            what = (f"fd {fd} is not an AF_XDP socket" if err == E.EOPNOTSUPP
                    else f"cannot register AF_XDP socket fd {fd}")
            raise XdpError(err, f"{what} for queue {queue} of {self.ifname}: {_word(err)}",
                           ifname=self.ifname, mode=self.mode)

    def clear_xsk(self, queue: int) -> None:
        """Empty the slot of ``queue`` (its steered frames then go to the kernel)."""
        self._check_open()
        ret = L.bpf_map_delete_elem(self._xsks_fd, U32.pack(self._check_queue(queue)))
        if ret < 0:
            err = _err_of(ret)
            if err != E.ENOENT:
                raise XdpError(err, f"cannot clear queue {queue} of {self.ifname}: "
                                    f"{_word(err)}", ifname=self.ifname, mode=self.mode)

    def set_syn_limit(self, rate: int, burst: int | None = None) -> None:
        """Drop connection requests (SYN without ACK) to steered ports beyond ``rate`` per
        second per CPU, in bursts of up to ``burst`` (default: ``rate // 10``, at least 1),
        in the XDP program, before they reach a worker's ring (counter ``syn_limited``).
        ``rate`` 0 removes the limit."""
        self._check_open()
        rate = int(rate)
        burst = max(1, rate // 10) if burst is None else int(burst)
        if not 0 <= rate <= SYN_LIMIT_MAX or not 1 <= burst <= SYN_LIMIT_MAX:
            raise ValueError(f"SYN limit {rate}/s burst {burst}: rate 0..{SYN_LIMIT_MAX}, "
                             f"burst 1..{SYN_LIMIT_MAX}")
        if self._syn_cfg_fd is None:
            raise XdpError(E.EOPNOTSUPP, f"{self.obj_path} has no SYN limit (map "
                                         f"{SYN_CFG_MAP}): rebuild it from bpf/steer.c")
        ret = L.bpf_map_update_elem(self._syn_cfg_fd, U32.pack(0),
                                    SYN_CFG.pack(rate, burst if rate else 0), L.BPF_ANY)
        if ret < 0:
            err = _err_of(ret)
            raise XdpError(err, f"cannot set the SYN limit on {self.ifname}: {_word(err)}")
        self.syn_limit = (rate, burst if rate else 0)

    # -- counters -------------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """The program's counters, summed over the CPUs."""
        self._check_open()
        out = {}
        buf = (ctypes.c_uint64 * self._ncpus)()
        for i, name in enumerate(STAT_NAMES[: self._stats_max]):
            ret = L.bpf_map_lookup_elem(self._stats_fd, U32.pack(i), buf)
            if ret < 0:
                err = _err_of(ret)
                raise XdpError(err, f"cannot read counter {name}: {_word(err)}")
            out[name] = sum(buf)
        return out

    # -- teardown -------------------------------------------------------------------------
    def _detach(self) -> None:
        opts = L.bpf_xdp_attach_opts(sz=ctypes.sizeof(L.bpf_xdp_attach_opts),
                                     old_prog_fd=self._prog_fd)
        with _in_ns(self._ns_fd):
            with _capture() as lines:
                # old_prog_fd makes libbpf add XDP_FLAGS_REPLACE: the kernel detaches
                # only if the program on the interface is still ours
                ret = L.bpf_xdp_detach(self.ifindex, _MODE_FLAG[self.mode], ctypes.byref(opts))
            if ret < 0:
                err = _err_of(ret)
                if err == E.ENODEV:
                    log.info("%s is gone: nothing to detach", self.ifname)
                    return
                if err == E.EEXIST:
                    log.warning("XDP program on %s is no longer ours (%s): left in place",
                                self.ifname, _kernel_msg(lines) or _word(err))
                    return
                raise _attach_error(err, self.ifname, self.mode, "detach", lines,
                                    self.ifindex)

    def _release(self) -> None:
        if self._obj:
            L.bpf_object__close(self._obj)
            self._obj = None
        if self._ns_fd >= 0:
            os.close(self._ns_fd)
            self._ns_fd = -1

    def close(self) -> None:
        """Detach (only if the program there is still ours) and free everything.

        Idempotent. If detaching fails for a reason other than the interface or the program
        being gone, resources are still freed and XdpError is raised once.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._attached:
                    self._attached = False
                    self._detach()
            finally:
                self._release()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        if getattr(self, "_closed", True):
            return
        try:
            warnings.warn(f"Steering on {self.ifname} was not closed: detaching now",
                          ResourceWarning, source=self)
            self.close()
        except Exception:  # interpreter shutdown, interface gone…
            pass

    def __repr__(self):
        state = "closed" if self._closed else f"{self.mode} prog_id={self.prog_id}"
        return f"<Steering {self.ifname} {state}>"
