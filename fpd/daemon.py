"""The fpd supervisor: one process that owns the XDP attachment, the control socket and
the workers (see docs/DAEMON.md, the contract this module implements).

    cfg = DaemonConfig(ifname="eth0", ports=[80], socket="/run/fpd/fpd.sock")
    sys.exit(run(cfg))               # foreground; `fpd start` daemonizes around it

Start-up, in this order. Each step that changes the system is recorded in ``PATH.state``
as it is taken (see :func:`undo`): a failure undoes every earlier step, so a failed start
leaves nothing attached, reserved or created, and after a SIGKILL ``fpd stop --force``
replays the same record.

1. checks: privileges (root, or CAP_NET_ADMIN + CAP_NET_RAW + CAP_BPF), ports, the
   interface exists in this network namespace, enough queues;
2. ``PATH.pid`` created and locked (``flock``): a second daemon on the same socket path
   finds it locked and says "fpd is already running (pid N) on PATH"; a ``PATH.state``
   left by a daemon that died is undone first (:func:`undo`, logged and printed);
3. no XDP program may be attached to the interface yet (another fpd?);
4. ``PATH.state`` (JSON) written: a summary, and the steps so far;
5. ``bpf.Steering`` attached, the listen ports and the local port range steered;
6. the local port range added to ``/proc/sys/net/ipv4/ip_local_reserved_ports`` of the
   network namespace (merged with what is there; given back on exit);
7. the unix socket (SOCK_SEQPACKET, mode 0660, owner/group if asked; its directory is
   created 0755);
8. one worker per queue, forked; each sends ``proto.Ready`` with its XSK fd, which
   goes into ``fpd_xsks[q]``;
9. "ok" written to ``ready_fd`` (the pipe ``fpd start`` waits on), then serving.

Files: the socket ``PATH`` (default ``/run/fpd/fpd.sock``), ``PATH.pid``, ``PATH.state``
and, unless ``--log`` says otherwise, the log ``PATH.log`` (kept after exit).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno as E
import fcntl
import grp
import json
import logging
import os
import pwd
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
import traceback

from fpd import control, proto, sdnotify
from fpd import libc as _libc

log = logging.getLogger("fpd.daemon")

DEFAULT_SOCKET = proto.DEFAULT_SOCKET
DEFAULT_LOCAL_PORTS = (60000, 60255)
RESERVED_PORTS = "/proc/sys/net/ipv4/ip_local_reserved_ports"
MAX_STEER = 1024          # FPD_MAX_STEER in bpf/steer.c
MAX_QUEUES = 64           # FPD_MAX_QUEUES in bpf/steer.c
READY_TIMEOUT = 30.0      # for all workers to report ready
WORKER_TIMEOUT = 2.0      # for a stats/conns answer
STOP_TIMEOUT = 5.0        # for the workers to exit after "stop"
IFACE_CHECK = 1.0          # seconds between checks that the interface still exists
CLIENT_TIMEOUT = 5.0      # for a new connection's first message
RESOLVE_RATE = 100        # proto.Resolve notes taken per worker per second

CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF, CAP_PERFMON, CAP_IPC_LOCK = 12, 13, 39, 38, 14
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

__all__ = ["DaemonConfig", "DaemonError", "run", "preflight", "force_stop",
           "merge_reserved", "restore_reserved", "parse_port_list", "format_port_list",
           "read_state", "DEFAULT_SOCKET", "DEFAULT_LOCAL_PORTS"]


class DaemonError(RuntimeError):
    """Start-up refused or failed; ``str()`` is the one-line message for the user."""


# --- configuration ----------------------------------------------------------------------
@dataclasses.dataclass
class DaemonConfig:
    """Everything ``fpd start`` decides. ``queues`` None = every active queue;
    ``addr`` None = any local address; ``log`` None = ``socket + ".log"``."""
    ifname: str
    ports: list = dataclasses.field(default_factory=list)
    addr: str | None = None
    mode: str = "auto"
    queues: int | None = None
    socket: str = DEFAULT_SOCKET
    local_ports: tuple = DEFAULT_LOCAL_PORTS
    sock_mode: int = 0o660
    owner: str | int | None = None
    group: str | int | None = None
    # the workers' user after set-up ("USER" or "USER:GROUP"; "auto" = fpd if that user
    # exists, else nobody; "root" = keep root): see drop_privileges()
    user: str | None = "auto"
    log: str | None = None
    stack: dict = dataclasses.field(default_factory=dict)    # StackConfig overrides
    worker: dict = dataclasses.field(default_factory=dict)   # fpd.worker.Worker kwargs
    foreground: bool = False
    metrics: str | None = None           # HOST:PORT of the Prometheus endpoint, None = off
    syn_limit: int = 0                   # connection requests/s per CPU let through XDP, 0 = all
    log_level: str = "info"
    # `fpd run`: each worker runs this program ({"argv", "module", "socket"}; fpd/run.py)
    app: dict | None = None

    @property
    def log_path(self) -> str:
        return self.log or self.socket + ".log"

    @property
    def pid_path(self) -> str:
        return self.socket + ".pid"

    @property
    def state_path(self) -> str:
        return self.socket + ".state"


def _check_port(p, what="port") -> int:
    if isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= 65535:
        raise DaemonError(f"{what} must be 1..65535, not {p!r}")
    return p


def validate(cfg: DaemonConfig) -> None:
    """The checks that need no privileges and no system state."""
    from fpd.bpf import MODES
    if not cfg.ifname or not isinstance(cfg.ifname, str):
        raise DaemonError("an interface is required (-i IFACE)")
    if len(cfg.ifname) > 15 or "/" in cfg.ifname:
        raise DaemonError(f"not an interface name: {cfg.ifname!r} (at most 15 characters, "
                          f"no '/': `ip link` lists the interfaces)")
    if not cfg.ports:
        raise DaemonError("at least one port to serve is required (-p PORT)")
    for p in cfg.ports:
        _check_port(p)
    if len(set(cfg.ports)) != len(cfg.ports):
        raise DaemonError(f"a port is given twice: {cfg.ports} (give each -p PORT once)")
    if cfg.mode not in MODES:
        raise DaemonError(f"mode must be one of {', '.join(MODES)}, not {cfg.mode!r}")
    if cfg.addr is not None:
        import ipaddress
        try:
            ipaddress.IPv4Address(cfg.addr)
        except ValueError:
            raise DaemonError(f"--addr must be an IPv4 address, not {cfg.addr!r}") from None
    try:
        lo, hi = cfg.local_ports
    except (TypeError, ValueError):
        raise DaemonError(f"local ports must be a range LO-HI, not {cfg.local_ports!r}") \
            from None
    _check_port(lo, "local port range start")
    _check_port(hi, "local port range end")
    if lo > hi:
        raise DaemonError(f"local port range {lo}-{hi} is empty (LO > HI)")
    clash = sorted(p for p in cfg.ports if lo <= p <= hi)
    if clash:
        raise DaemonError(f"port {clash[0]} is inside the local port range {lo}-{hi} "
                          f"(used for connect): choose another range (--local-ports)")
    if (hi - lo + 1) + len(cfg.ports) > MAX_STEER:
        raise DaemonError(f"{len(cfg.ports)} ports + the local range {lo}-{hi} "
                          f"({hi - lo + 1} ports) exceed the {MAX_STEER} entries of the "
                          f"steer map: use a smaller --local-ports range")
    if cfg.queues is not None:
        if isinstance(cfg.queues, bool) or not isinstance(cfg.queues, int) \
                or not 1 <= cfg.queues <= MAX_QUEUES:
            raise DaemonError(f"--queues must be 1..{MAX_QUEUES}, not {cfg.queues!r}")
    if not cfg.socket or not os.path.isabs(cfg.socket):
        raise DaemonError(f"the socket path must be absolute, not {cfg.socket!r} (e.g. "
                          f"--socket /run/fpd/fpd.sock)")
    if len(os.fsencode(cfg.socket)) > 107:
        raise DaemonError(f"socket path too long for a unix socket (max 107 bytes): "
                          f"{cfg.socket} (choose a shorter --socket, e.g. /run/fpd/NAME.sock)")
    _uid_gid(cfg)
    worker_ids(cfg)
    _validate_ops(cfg)


def _validate_ops(cfg: DaemonConfig) -> None:
    """--metrics and --log-level (fpd.metrics, the logging set-up below)."""
    if cfg.metrics is not None:
        from fpd.metrics import MetricsError, parse_addr
        try:
            parse_addr(cfg.metrics)
        except MetricsError as e:
            raise DaemonError(str(e)) from None
    if str(cfg.log_level).upper() not in LOG_LEVELS:
        raise DaemonError(f"log level must be one of {', '.join(l.lower() for l in LOG_LEVELS)}"
                          f", not {cfg.log_level!r}")


def _uid_gid(cfg: DaemonConfig) -> tuple[int, int]:
    """(uid, gid) for the socket's chown; -1 = unchanged."""
    uid = gid = -1
    if cfg.owner not in (None, ""):
        try:
            uid = int(cfg.owner) if str(cfg.owner).isdigit() else pwd.getpwnam(cfg.owner).pw_uid
        except KeyError:
            raise DaemonError(f"no such user: {cfg.owner}") from None
    if cfg.group not in (None, ""):
        try:
            gid = int(cfg.group) if str(cfg.group).isdigit() else grp.getgrnam(cfg.group).gr_gid
        except KeyError:
            raise DaemonError(f"no such group: {cfg.group}") from None
    return uid, gid


def worker_ids(cfg: DaemonConfig) -> tuple[int, int, str] | None:
    """(uid, gid, "user:group") the workers run as after set-up, None = stay root."""
    spec = "auto" if cfg.user in (None, "") else str(cfg.user)
    name, _, gname = spec.partition(":")
    if name == "auto":
        try:
            pw = pwd.getpwnam("fpd")
        except KeyError:
            try:
                pw = pwd.getpwnam("nobody")
            except KeyError:
                raise DaemonError("--user auto: neither a user fpd nor nobody exists: "
                                  "create one (useradd --system fpd) or give --user") \
                    from None
    elif name.isdigit():
        uid = int(name)
        try:
            pw = pwd.getpwuid(uid)
        except KeyError:
            pw = None
    else:
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            raise DaemonError(f"--user: no such user: {name}") from None
    if pw is not None:
        uid, gid, uname = pw.pw_uid, pw.pw_gid, pw.pw_name
    else:
        uid, gid, uname = int(name), int(name), name
    if gname:
        try:
            gid = int(gname) if gname.isdigit() else grp.getgrnam(gname).gr_gid
        except KeyError:
            raise DaemonError(f"--user: no such group: {gname}") from None
    if uid == 0:
        if gname and gid != 0:
            raise DaemonError("--user root:GROUP: root keeps every capability anyway; "
                              "give a user other than root")
        return None
    try:
        gn = grp.getgrgid(gid).gr_name
    except KeyError:
        gn = str(gid)
    return uid, gid, f"{uname}:{gn}"


CAP_SETUID, CAP_SETGID = 7, 6


def drop_privileges(ids: tuple[int, int, str] | None, parent: int) -> str:
    """In a worker, once its XSK is bound and its UMEM registered (the last steps that
    need privileges): become ``ids`` (uid, gid, name) with no capability left,
    ``no_new_privs`` set (no setuid binary can give any back) and ``PR_SET_PDEATHSIG``
    set again (the kernel clears it when the credentials change). The data path needs
    no capability after set-up (tests/integration/test_privilege.py shows it serving
    as nobody); the process is then also non-dumpable (no ptrace, no core file of the
    clients' memory). Returns a line for the log. ``ids`` None: stay root (``--user
    root``), say so."""
    if ids is None:
        return "runs as root (--user root): a bug in its data path is a root bug"
    uid, gid, name = ids
    os.setgroups([gid])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)          # no PR_SET_KEEPCAPS: every capability is gone
    if _libc.prctl(_libc.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")
    _set_pdeathsig(signal.SIGKILL)
    if os.getppid() != parent:           # the supervisor died while we changed
        os._exit(1)
    caps = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("CapEff:", "CapPrm:", "CapAmb:")):
                caps[line.split(":")[0]] = int(line.split()[1], 16)
    if any(caps.values()) or os.geteuid() != uid:
        raise OSError(E.EPERM, f"privileges not dropped: uid {os.geteuid()}, {caps}")
    return f"runs as {name} (uid {uid} gid {gid}), no capabilities"


def _capabilities() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


# what fpd start needs (CAP_PERFMON: the verifier allows steer.o's packet pointer
# arithmetic only with it); CAP_IPC_LOCK only when the UMEM exceeds RLIMIT_MEMLOCK
REQUIRED_CAPS = (("CAP_NET_ADMIN", CAP_NET_ADMIN), ("CAP_NET_RAW", CAP_NET_RAW),
                 ("CAP_BPF", CAP_BPF), ("CAP_PERFMON", CAP_PERFMON))


def missing_capabilities(caps: int | None = None) -> list[str]:
    caps = _capabilities() if caps is None else caps
    return [n for n, bit in REQUIRED_CAPS if not caps >> bit & 1]


def check_privileges() -> None:
    caps = _capabilities()
    if os.geteuid() == 0 and caps == 0:
        return                                  # root, capabilities unreadable
    missing = missing_capabilities(caps)
    if not missing:
        return
    names = ", ".join(n for n, _ in REQUIRED_CAPS)
    if os.geteuid() == 0:
        raise DaemonError(f"fpd start runs as root but without {', '.join(missing)} (a "
                          f"reduced capability set: systemd CapabilityBoundingSet, setpriv, "
                          f"a container): it needs {names}; add the missing ones")
    raise DaemonError(f"fpd start needs root (or the capabilities {names}; missing "
                      f"{', '.join(missing)}): run it with sudo, or grant them (systemd: "
                      f"AmbientCapabilities, see systemd/fpd.service)")


def check_drop(cfg: DaemonConfig, caps: int | None = None) -> tuple | None:
    """The workers can become ``--user`` (CAP_SETUID and CAP_SETGID, which root has
    unless a bounding set took them away). Returns :func:`worker_ids`."""
    ids = worker_ids(cfg)
    if cfg.app:                          # `fpd run`: the workers run the operator's program
        return None
    caps = _capabilities() if caps is None else caps
    if ids is None or (os.geteuid() == 0 and caps == 0):
        return ids
    missing = [n for n, bit in (("CAP_SETUID", CAP_SETUID), ("CAP_SETGID", CAP_SETGID))
               if not caps >> bit & 1]
    if missing:
        raise DaemonError(f"the workers cannot drop root for {ids[2]} without "
                          f"{' and '.join(missing)} (a reduced capability set: add them, "
                          f"as systemd/fpd.service does, or keep root with --user root)")
    return ids


def check_interface(ifname: str) -> int:
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        raise DaemonError(f"no interface {ifname} in this network namespace (`ip link` "
                          f"lists them; for one in another namespace run fpd there: "
                          f"ip netns exec NS fpd ...)") from None


def preflight(cfg: DaemonConfig) -> None:
    """The quick checks ``fpd start`` makes before it forks (run() makes them again)."""
    validate(cfg)
    check_privileges()
    check_drop(cfg)
    check_interface(cfg.ifname)


# --- ip_local_reserved_ports ------------------------------------------------------------
def parse_port_list(text: str) -> set[int]:
    """"8080,9000-9010" -> the set of ports (the format of ip_local_reserved_ports)."""
    out: set[int] = set()
    for part in text.replace("\n", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            a, b = int(a), int(b)
            if a > b:
                a, b = b, a
            out.update(range(a, b + 1))
        else:
            out.add(int(part))
    return out


def format_port_list(ports) -> str:
    """The inverse of :func:`parse_port_list`: sorted, runs as ranges."""
    ps = sorted(set(ports))
    parts = []
    i = 0
    while i < len(ps):
        j = i
        while j + 1 < len(ps) and ps[j + 1] == ps[j] + 1:
            j += 1
        parts.append(str(ps[i]) if i == j else f"{ps[i]}-{ps[j]}")
        i = j + 1
    return ",".join(parts)


def merge_reserved(current: str, lo: int, hi: int) -> str:
    """``current`` with lo..hi added."""
    return format_port_list(parse_port_list(current) | set(range(lo, hi + 1)))


def restore_reserved(current: str, original: str, lo: int, hi: int) -> str:
    """Give back what fpd added: the ports of lo..hi that were not reserved at start
    (``original``) leave ``current``; anything else (reserved by others since) stays."""
    ours = set(range(lo, hi + 1)) - parse_port_list(original)
    return format_port_list(parse_port_list(current) - ours)


def read_reserved() -> str:
    with open(RESERVED_PORTS) as f:
        return f.read().strip()


def write_reserved(text: str) -> None:
    with open(RESERVED_PORTS, "w") as f:
        f.write((text or "") + "\n")


# --- files --------------------------------------------------------------------------------
def read_state(path: str) -> dict | None:
    """The JSON state file, or None if missing or unreadable as such."""
    try:
        with open(path) as f:
            st = json.load(f)
    except (OSError, ValueError):
        return None
    return st if isinstance(st, dict) else None


def write_state(path: str, state: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(state, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_pid(path: str) -> int:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def looks_like_fpd(pid: int) -> bool:
    """Is ``pid`` an fpd daemon or worker (by its command line: ``fpd ... start ...``,
    ``python -m fpd start ...``)?"""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return b"start" in argv and any(a == b"fpd" or a.endswith(b"/fpd")
                                    or a in (b"fpd.cli", b"fpd.daemon") for a in argv)


def pid_file_locked(path: str) -> bool:
    """Does a live process hold the lock on the pid file?"""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def prog_name(prog_id: int) -> str:
    """The name of BPF program ``prog_id`` (via bpftool), or "" if unknown."""
    try:
        p = subprocess.run(["bpftool", "-j", "prog", "show", "id", str(prog_id)],
                           capture_output=True, text=True, timeout=5)
        return json.loads(p.stdout).get("name", "") if p.returncode == 0 else ""
    except (OSError, ValueError, subprocess.SubprocessError, AttributeError):
        return ""


# --- fork helpers -------------------------------------------------------------------------
def _set_pdeathsig(sig: int = signal.SIGKILL) -> None:
    if _libc.prctl(_libc.PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")


def _peercred(conn: socket.socket) -> dict:
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
        return {"pid": pid, "uid": uid, "gid": gid}
    except OSError:
        return {"pid": 0, "uid": -1, "gid": -1}


class WorkerProcess:
    """The supervisor's view of one forked worker process (pid, channel, exit status);
    the data path in that process is :class:`fpd.worker.Worker`."""

    def __init__(self, queue: int, pid: int, chan: socket.socket):
        self.queue = queue
        self.pid = pid
        self.chan = chan
        self.ready = False
        self.alive = True
        self.exit_status = None
        self.info: dict = {}
        self.seq = 0
        self.resolve_window = (0.0, 0)          # proto.Resolve rate limit: (start, n)

    def describe_exit(self) -> str:
        st = self.exit_status
        if st is None:
            return "still running"
        if os.WIFSIGNALED(st):
            sig = os.WTERMSIG(st)
            try:
                name = signal.Signals(sig).name
            except ValueError:
                name = str(sig)
            return f"killed by {name}"
        return f"exited with status {os.WEXITSTATUS(st)}"


# --- the supervisor -----------------------------------------------------------------------
class Supervisor:
    def __init__(self, cfg: DaemonConfig):
        self.cfg = cfg
        self.pid = os.getpid()
        self.workers: list[WorkerProcess] = []
        self.steering = None
        self.listener: socket.socket | None = None
        self.sel: selectors.BaseSelector | None = None
        self.lock_fd = -1
        self.steps: list[dict] = []           # what start() did, in order: see undo()
        self.reserved_original: str | None = None
        self.started = time.time()
        self.nqueues = 0
        self.stopping = False
        self.exit_code = 0
        self.stop_waiters: list[socket.socket] = []
        self.clients: dict[int, tuple[socket.socket, float]] = {}
        self._sig_r = self._sig_w = -1
        self._old_handlers: dict = {}
        self._old_wakeup = -1
        self._cleaned = False
        self.ready_fd = -1                    # the `fpd start` pipe: not for the workers
        self.fwd: list = []                   # socketpairs between workers while forking
        self.metrics = None                   # fpd.metrics.MetricsServer (--metrics)
        self.worker_ids = None                # (uid, gid, name) of the workers; None = root
        self.cleaned: list[str] = []          # what start() undid of a dead daemon's state
        # control connections refused before a worker saw them, by cause (fpd stats)
        self.counters: dict[str, int] = {}

    # -- signals ---------------------------------------------------------------------------
    def _install_signals(self) -> None:
        self._sig_r, self._sig_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old_wakeup = signal.set_wakeup_fd(self._sig_w, warn_on_full_buffer=False)
        sigs = [signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP]
        for s in sigs:
            self._old_handlers[s] = signal.signal(s, self._on_signal)

    def _on_signal(self, signum, frame):  # the work is done in the loop (wake-up fd)
        pass

    def _restore_signals(self) -> None:
        for s, h in self._old_handlers.items():
            with contextlib.suppress(Exception):
                signal.signal(s, h)
        self._old_handlers.clear()
        with contextlib.suppress(Exception):
            signal.set_wakeup_fd(self._old_wakeup)
        for fd in (self._sig_r, self._sig_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._sig_r = self._sig_w = -1

    def _read_signals(self) -> list[int]:
        out = []
        while True:
            try:
                data = os.read(self._sig_r, 256)
            except BlockingIOError:
                break
            except OSError:
                break
            if not data:
                break
            out += list(data)
        return out

    def _handle_signals(self, sigs) -> None:
        for s in sigs:
            if s in (signal.SIGTERM, signal.SIGINT) or (s == signal.SIGHUP
                                                          and self.cfg.foreground):
                if not self.stopping:
                    log.info("%s received: stopping", signal.Signals(s).name)
                self._request_stop(0)
            elif s == signal.SIGHUP:
                log.info("SIGHUP ignored")
        self._reap()      # SIGCHLD, or a signal that may hide one

    def _reap(self) -> None:
        """Collect exited workers (each by its pid: other children are not ours to reap)."""
        for w in self.workers:
            if not w.alive:
                continue
            try:
                pid, status = os.waitpid(w.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = w.pid, 0
            if pid == 0:
                continue
            w.alive = False
            w.exit_status = status
            if not self.stopping and self.cfg.app:
                self._app_exit(w)
            elif not self.stopping:
                log.error("worker q%d (pid %d) %s: shutting down", w.queue, w.pid,
                          w.describe_exit())
                self._request_stop(1)

    def _check_interface(self) -> None:
        """The interface went away (NIC removed, veth peer deleted, namespace torn down
        around us): nothing can reach the workers any more, so stop and clean up."""
        try:
            idx = socket.if_nametoindex(self.cfg.ifname)
        except OSError:
            idx = 0
        if idx != getattr(self, "ifindex", idx):
            log.error("interface %s disappeared (ifindex %s is now %s): stopping",
                      self.cfg.ifname, self.ifindex, idx or "gone")
            self._request_stop(1)

    def _request_stop(self, code: int) -> None:
        if not self.stopping:
            self.stopping = True
            self.exit_code = code
        elif code:
            self.exit_code = self.exit_code or code

    # -- start-up --------------------------------------------------------------------------
    def start(self) -> None:
        cfg = self.cfg
        validate(cfg)
        check_privileges()
        self.worker_ids = check_drop(cfg)
        self.ifindex = check_interface(cfg.ifname)
        self._install_signals()
        from fpd import xsk
        try:
            avail = xsk.queues_of(cfg.ifname)
        except OSError as e:
            raise DaemonError(f"cannot count the queues of {cfg.ifname}: {e}") from None
        n = cfg.queues if cfg.queues is not None else min(avail, MAX_QUEUES)
        if n > avail:
            raise DaemonError(f"{cfg.ifname} has {avail} active queue{'s' * (avail != 1)}; "
                              f"--queues {n} asks for more (use --queues {avail} or leave it "
                              f"out; `ethtool -L {cfg.ifname} combined N` adds queues where "
                              f"the driver allows)")
        self.nqueues = n
        self._make_dir()
        self._lock()
        self._check_xdp_free()
        # the state file first: after a SIGKILL from here on, `stop --force` can clean up
        try:
            self.reserved_original = read_reserved()
        except OSError as e:
            raise DaemonError(f"cannot read {RESERVED_PORTS}: {e.strerror}") from None
        self._write_state()
        self._attach()
        self._reserve()
        self._listen()
        self._fork_workers()
        self._wait_ready()
        if cfg.app:
            self._go()
        self._write_state()
        self._start_metrics()
        log.info("serving %s (%s XDP, prog id %d) queues %d ports %s local ports %d-%d "
                 "on %s (pid %d)", cfg.ifname, self.steering.mode, self.steering.prog_id,
                 self.nqueues, ",".join(map(str, cfg.ports)), *cfg.local_ports,
                 cfg.socket, self.pid)

    def _start_metrics(self) -> None:
        if not self.cfg.metrics:
            return
        from fpd.metrics import MetricsError, MetricsServer
        try:
            self.metrics = MetricsServer(self.cfg.metrics)
        except MetricsError as e:
            raise DaemonError(str(e)) from None
        log.info("metrics on http://%s:%d/metrics", *self.metrics.addr)

    def _scrape(self) -> bytes:
        from fpd import __version__
        from fpd.metrics import render
        status = {"ifname": self.cfg.ifname, "mode": self.steering.mode,
                  "uptime": round(time.time() - self.started, 3)}
        return render(self._stats(), status, self._conns(), __version__)

    def _make_dir(self) -> None:
        d = os.path.dirname(self.cfg.socket)
        if not os.path.isdir(d):
            try:
                os.makedirs(d, mode=0o755, exist_ok=True)
                os.chmod(d, 0o755)
            except OSError as e:
                raise DaemonError(f"cannot create {d}: {e.strerror}") from None
            log.info("created %s", d)

    def _lock(self) -> None:
        path = self.cfg.pid_path
        existed = os.path.exists(path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise DaemonError(f"cannot create {path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            pid = read_pid(path)
            raise DaemonError(f"fpd is already running (pid {pid or '?'}) on "
                              f"{self.cfg.socket}") from None
        try:
            self._check_stale()          # before touching a dead daemon's pid file
        except DaemonError:
            if not existed:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            os.close(fd)
            raise
        self.lock_fd = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{self.pid}\n".encode(), 0)
        self._did({"do": "pid_file", "path": path})

    def _check_stale(self) -> None:
        """A ``PATH.state`` without a live daemon (we hold the pid file's lock, so its
        writer is gone: SIGKILL, OOM, power cut): replay its record (:func:`undo`, as
        ``fpd stop --force`` does: left-over workers killed, XDP detached if the program
        there is the recorded one or an fpd_steer, reserved ports given back, files
        removed) and go on starting. What was done is logged and kept in
        ``self.cleaned`` (``fpd start`` prints it); a step that cannot be undone makes
        the start refuse with the reason."""
        path = self.cfg.state_path
        if not os.path.lexists(path):
            return
        st = read_state(path)
        pid = (st or {}).get("pid", "?")
        ifname = (st or {}).get("ifname") or self.cfg.ifname
        if st is None:
            steps = [{"do": "state_file", "path": path}]     # unreadable: only the file
        else:
            steps = [s for s in st.get("steps") or [] if isinstance(s, dict)
                     and not (s.get("do") == "pid_file"       # ours now: we hold its lock
                              and s.get("path") == self.cfg.pid_path)]
            if not any(s.get("do") == "state_file" for s in steps):
                steps.insert(0, {"do": "state_file", "path": path})
        done: list[str] = []
        failed: list[str] = []

        def report(ok: bool, text: str) -> None:
            (done if ok else failed).append(text)
        head = (f"a previous fpd (pid {pid}) on {self.cfg.socket} died without cleaning "
                f"up")
        log.warning("%s (%s is still there): cleaning up after it", head, path)
        left = undo(steps, live=None, report=report)
        for text in done:
            log.warning("stale state: %s", text)
        for text in failed:
            log.error("stale state: %s", text)
        if left or failed:
            raise DaemonError(f"{head}, and its state cannot all be undone "
                              f"({'; '.join(failed) or 'see the log'}): fix that, then run "
                              f"`fpd stop --force -i {ifname} --socket {self.cfg.socket}`")
        self.cleaned = [f"{head}: cleaned up"] + done

    def _check_xdp_free(self) -> None:
        from fpd.bpf import XdpError, attached_prog_id
        try:
            pid = attached_prog_id(self.cfg.ifname)
        except XdpError as e:
            raise DaemonError(str(e)) from None
        if pid:
            name = prog_name(pid) or "unknown"
            raise DaemonError(f"{self.cfg.ifname} already has an XDP program (id {pid}, name "
                              f"{name}): another fpd? use `fpd stop --force -i "
                              f"{self.cfg.ifname}` if it is stale")

    def state(self) -> dict:
        cfg = self.cfg
        return {"pid": self.pid, "ifname": cfg.ifname, "mode": getattr(self.steering, "mode",
                                                                        None) or cfg.mode,
                "socket": cfg.socket, "reserved_ports": self.reserved_original,
                "local_ports": list(cfg.local_ports), "ports": list(cfg.ports),
                "addr": cfg.addr, "queues": self.nqueues,
                "prog_id": getattr(self.steering, "prog_id", 0),
                "workers": [w.pid for w in self.workers], "started": self.started,
                "log": cfg.log_path}

    def _write_state(self) -> None:
        """Persist the summary and the steps so far (the state file's first write records
        the file itself as a step)."""
        path = self.cfg.state_path
        if not any(st["do"] == "state_file" for st in self.steps):
            self.steps.append({"do": "state_file", "path": path})
        try:
            write_state(path, {**self.state(), "steps": self.steps})
        except OSError as e:
            raise DaemonError(f"cannot write {path}: {e.strerror}") from None

    def _did(self, step: dict) -> dict:
        """Record a step of the start (before the action where a crash could land half
        way: each undo is harmless if the action did not happen)."""
        self.steps.append(step)
        if any(st["do"] == "state_file" for st in self.steps):
            self._write_state()
        return step

    def _attach(self) -> None:
        from fpd.bpf import Steering, XdpError
        cfg = self.cfg
        step = self._did({"do": "xdp", "ifname": cfg.ifname, "mode": cfg.mode, "prog_id": 0})
        try:
            # multi-buffer sockets (worker sg=True) want the frags program: with it generic
            # XDP hands over the peer's GSO packets whole (docs/AFXDP.md)
            kw = {"frags": True} if (cfg.worker or {}).get("sg") else {}
            self.steering = Steering(cfg.ifname, cfg.mode, **kw)
        except XdpError as e:
            raise DaemonError(str(e).splitlines()[0] if e.errno != E.EACCES
                              else str(e)) from None
        except FileNotFoundError as e:
            raise DaemonError(str(e)) from None
        st = self.steering
        step.update(mode=st.mode, prog_id=st.prog_id)
        self._write_state()
        if cfg.syn_limit:
            try:
                st.set_syn_limit(cfg.syn_limit)
            except (XdpError, ValueError) as e:
                raise DaemonError(str(e)) from None
            log.info("SYN limit: %d connection requests/s per CPU (burst %d)",
                     *st.syn_limit)
        if st.fallback_reason:
            log.info("native XDP refused on %s: %s; generic mode", cfg.ifname,
                     st.fallback_reason)
        log.info("attached fpd_steer (prog id %d) to %s in %s mode", st.prog_id, cfg.ifname,
                 st.mode)
        try:
            for p in cfg.ports:
                st.add_port(p, cfg.addr)
            lo, hi = cfg.local_ports
            for p in range(lo, hi + 1):
                st.add_port(p, cfg.addr)
        except XdpError as e:
            raise DaemonError(str(e)) from None

    def _reserve(self) -> None:
        lo, hi = self.cfg.local_ports
        new = merge_reserved(self.reserved_original, lo, hi)
        if new == self.reserved_original:
            log.info("local ports %d-%d were already reserved", lo, hi)
            return
        self._did({"do": "reserved_ports", "lo": lo, "hi": hi,
                   "original": self.reserved_original})
        try:
            write_reserved(new)
        except OSError as e:
            raise DaemonError(f"cannot reserve ports {lo}-{hi} in {RESERVED_PORTS}: "
                              f"{e.strerror}") from None
        log.info("reserved local ports %d-%d (%s was %r)", lo, hi, RESERVED_PORTS,
                 self.reserved_original)

    def _listen(self) -> None:
        cfg = self.cfg
        path = cfg.socket
        if os.path.lexists(path):      # we hold the lock: no live daemon owns it
            log.info("removing stale socket %s", path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            old = os.umask(0o077)
            try:
                s.bind(path)
            finally:
                os.umask(old)
            self._did({"do": "socket", "path": path, "ino": os.stat(path).st_ino})
            uid, gid = _uid_gid(cfg)
            if uid != -1 or gid != -1:
                os.chown(path, uid, gid)
            os.chmod(path, cfg.sock_mode)
            s.listen(64)
            s.setblocking(False)
        except OSError as e:
            s.close()
            raise DaemonError(f"cannot create the socket {path}: {e.strerror or e}") from None
        self.listener = s

    def _fork_workers(self) -> None:
        cfg = self.cfg
        n = self.nqueues
        isn_key = os.urandom(16)
        lo, hi = cfg.local_ports
        local = list(range(lo, hi + 1))
        # several queues: a datagram socketpair per worker, through which the others pass
        # it segments of its connections that the NIC delivered to their queue
        # (control.WorkerConfig.fwd: worker q reads fwd[q][0], sends to fwd[k][1])
        self.fwd = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
                    for _ in range(n)] if n > 1 else []
        fwd_fds = [(r.fileno(), t.fileno()) for r, t in self.fwd]
        try:
            self._fork_each(n, isn_key, local, fwd_fds)
        finally:
            for pair in self.fwd:                  # the workers have theirs
                for sk in pair:
                    sk.close()
            self.fwd = []

    def _fork_each(self, n, isn_key, local, fwd_fds) -> None:
        cfg = self.cfg
        pids = self._did({"do": "workers", "pids": []})["pids"]
        for q in range(n):
            wcfg = control.WorkerConfig(
                ifname=cfg.ifname, queue=q, nqueues=n, ports=list(cfg.ports), addr=cfg.addr,
                local_ports=local[q::n], isn_key=isn_key, stack=dict(cfg.stack),
                worker=dict(cfg.worker), fwd=list(fwd_fds))
            parent_end, child_end = socket.socketpair(
                socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
            for h in logging.getLogger().handlers + logging.getLogger("fpd").handlers:
                with contextlib.suppress(Exception):
                    h.flush()
            pid = os.fork()
            if pid == 0:                            # the worker
                parent_end.close()
                self._child(q, child_end, wcfg)     # never returns
            child_end.close()
            parent_end.settimeout(5.0)
            self.workers.append(WorkerProcess(q, pid, parent_end))
            pids.append(pid)
            log.info("forked worker q%d (pid %d, %d local ports)", q, pid,
                     len(wcfg.local_ports))
        self._write_state()

    def _child(self, q: int, chan: socket.socket, wcfg) -> None:
        rc = 1
        try:
            _set_pdeathsig(signal.SIGKILL)
            if os.getppid() != self.pid:           # the supervisor died before prctl
                os._exit(1)
            with contextlib.suppress(Exception):
                signal.set_wakeup_fd(-1)
            for s in self._old_handlers:
                signal.signal(s, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_IGN)   # ^C: the supervisor stops us
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            for fd in (self._sig_r, self._sig_w, self.lock_fd, self.ready_fd):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            if self.listener is not None:
                self.listener.close()
            for w in self.workers:
                w.chan.close()
            for k, (r, _t) in enumerate(self.fwd):  # other workers' receive ends
                if k != q:
                    r.close()
            for c, _ in self.clients.values():
                c.close()
            chan.settimeout(None)
            if self.cfg.app:                       # `fpd run`: the worker runs the app
                from fpd import run as _run
                rc = _run.app_worker_main(chan, wcfg, self.cfg.app)
            else:
                ids, sup = self.worker_ids, self.pid

                def make_host(c):             # set up as root, then let go of it
                    host = control.xdp_host(c)
                    if ids is not None:
                        host[0].neigh_resolver = lambda ifindex, ip: _ask_resolve(
                            chan, ifindex, ip)
                    log.info("worker q%d %s", q, drop_privileges(ids, sup))
                    return host
                rc = control.worker_main(chan, wcfg, make_host=make_host)
            if not isinstance(rc, int):
                rc = 0 if rc is None else 1
        except BaseException as e:                 # noqa: BLE001  (always os._exit)
            rc = 1
            text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            with contextlib.suppress(BaseException):
                log.error("worker q%d failed: %s\n%s", q, text, traceback.format_exc())
            with contextlib.suppress(BaseException):
                proto.send(chan, proto.Error(queue=q, error=text))
        finally:
            with contextlib.suppress(BaseException):
                for h in logging.getLogger("fpd").handlers:
                    h.flush()
            os._exit(rc)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        waiting = {w.chan.fileno(): w for w in self.workers}
        sel = selectors.DefaultSelector()
        try:
            for fd in waiting:
                sel.register(fd, selectors.EVENT_READ)
            sel.register(self._sig_r, selectors.EVENT_READ)
            while waiting:
                left = deadline - time.monotonic()
                if left <= 0:
                    qs = ", ".join(f"q{w.queue}" for w in waiting.values())
                    raise DaemonError(f"worker {qs} did not report ready within "
                                      f"{READY_TIMEOUT:.0f} s")
                for key, _ in sel.select(left):
                    if key.fd == self._sig_r:
                        self._handle_signals(self._read_signals())
                        if self.stopping and self.exit_code == 0:
                            raise DaemonError("stopped by a signal during start-up")
                        continue
                    w = waiting[key.fd]
                    try:
                        msg, fds = proto.recv(w.chan, maxfds=1)
                    except (OSError, ValueError) as e:
                        raise DaemonError(f"worker q{w.queue} failed during start-up: "
                                          f"{e}") from None
                    try:
                        self._on_ready(w, msg, fds)
                    finally:
                        for fd in fds:
                            with contextlib.suppress(OSError):
                                os.close(fd)
                    if w.ready:
                        sel.unregister(key.fd)
                        del waiting[key.fd]
        finally:
            sel.close()

    def _on_ready(self, w: WorkerProcess, msg, fds) -> None:
        if msg is None:
            deadline = time.monotonic() + 1.0
            while w.alive and time.monotonic() < deadline:
                self._reap()
                time.sleep(0.02)
            how = "" if w.alive else f" ({w.describe_exit()})"
            raise DaemonError(f"worker q{w.queue} failed during start-up: it exited{how}; "
                              f"see {self.cfg.log_path}")
        try:
            note = proto.parse(msg, proto.WORKER_NOTES)
        except proto.ProtocolError:
            note = None
        if isinstance(note, proto.Error) or msg.get("ok") is False:
            raise DaemonError(f"worker q{w.queue} failed during start-up: "
                              f"{msg.get('error', 'unknown error')}")
        if not isinstance(note, proto.Ready):
            log.warning("worker q%d: unexpected message during start-up: %r", w.queue, msg)
            return
        if len(fds) != note.fds:
            raise DaemonError(f"worker q{w.queue} reported ready without its XSK fd")
        from fpd.bpf import XdpError
        try:
            self.steering.set_xsk(w.queue, fds[0])
        except XdpError as e:
            raise DaemonError(f"worker q{w.queue}: {e}") from None
        w.ready = True
        w.info = {k: v for k, v in msg.items() if k != "op"}
        log.info("worker q%d ready (pid %d) %s", w.queue, w.pid, w.info)

    def _go(self) -> None:
        """`fpd run`: every XSK is in the map; the workers may start the program."""
        for w in self.workers:
            try:
                proto.send(w.chan, proto.Go())
            except OSError as e:
                raise DaemonError(f"worker q{w.queue}: cannot start the program: {e}") \
                    from None

    def _app_exit(self, w: "WorkerProcess") -> None:
        """`fpd run`: a worker's program ended; its status becomes the exit code."""
        st = w.exit_status
        code = os.WEXITSTATUS(st) if st is not None and os.WIFEXITED(st) else \
            128 + os.WTERMSIG(st) if st is not None and os.WIFSIGNALED(st) else 1
        log.info("worker q%d (pid %d): the program %s: stopping", w.queue, w.pid,
                 w.describe_exit())
        self._request_stop(code)
        if not code:
            self.exit_code = 0

    # -- serving ---------------------------------------------------------------------------
    def serve(self) -> int:
        sel = self.sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ, ("listen", None))
        sel.register(self._sig_r, selectors.EVENT_READ, ("signal", None))
        for w in self.workers:
            sel.register(w.chan, selectors.EVENT_READ, ("worker", w))
        if self.metrics is not None:
            sel.register(self.metrics.sock, selectors.EVENT_READ, ("metrics", None))
        self._reap()     # a worker that died between ready and here
        next_if_check = time.monotonic() + IFACE_CHECK
        while not self.stopping:
            timeout = max(0.0, next_if_check - time.monotonic())
            if self.clients:
                timeout = min(timeout, max(0.0, min(t for _, t in self.clients.values())
                                           - time.monotonic()))
            for key, _ in sel.select(timeout):
                kind, obj = key.data
                try:
                    if kind == "listen":
                        self._accept()
                    elif kind == "signal":
                        self._handle_signals(self._read_signals())
                    elif kind == "worker":
                        self._on_worker_msg(obj)
                    elif kind == "client":
                        self._on_client(obj)
                    elif kind == "metrics":
                        self.metrics.handle(self._scrape)
                except Exception:
                    log.exception("error handling %s", kind)
                if self.stopping:
                    break
            now = time.monotonic()
            if now >= next_if_check:
                next_if_check = now + IFACE_CHECK
                self._check_interface()
            for fd, (c, t) in list(self.clients.items()):
                if t <= now:
                    log.info("dropping a client that sent nothing for %.0f s", CLIENT_TIMEOUT)
                    self._count("silent")
                    self._drop_client(c)
        return self.exit_code

    def _accept(self) -> None:
        for _ in range(64):
            try:
                c, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("accept: %s", e)
                return
            c.setblocking(False)
            self.clients[c.fileno()] = (c, time.monotonic() + CLIENT_TIMEOUT)
            self.sel.register(c, selectors.EVENT_READ, ("client", c))

    def _count(self, cause: str) -> None:
        """A control connection the supervisor refused or dropped, by cause (``fpd
        stats``: ``supervisor``; Prometheus ``fpd_supervisor_<cause>_total``)."""
        self.counters[cause] = self.counters.get(cause, 0) + 1

    def _drop_client(self, c: socket.socket) -> None:
        self.clients.pop(c.fileno(), None)
        with contextlib.suppress(Exception):
            self.sel.unregister(c)
        c.close()

    def _reply(self, c: socket.socket, obj: dict) -> None:
        c.settimeout(2.0)
        proto.send_fitting(c, obj)               # a list too long for one message is cut

    def _on_client(self, c: socket.socket) -> None:
        try:
            d, _ = proto.recv(c)
        except BlockingIOError:
            return
        except ValueError as e:
            self._count("bad_message")
            with contextlib.suppress(OSError):
                self._reply(c, proto.fail(E.EINVAL, str(e)))
            self._drop_client(c)
            return
        except OSError:
            self._count("gone")
            self._drop_client(c)
            return
        self.clients.pop(c.fileno(), None)
        self.sel.unregister(c)
        if d is None:
            c.close()
            return
        keep = False
        try:
            try:
                msg = proto.parse(d, proto.SUPERVISOR_OPS)
            except proto.ProtocolError as e:
                self._count("refused_" + (E.errorcode.get(e.errno) or str(e.errno)))
                self._reply(c, proto.fail(e.errno, str(e)))
                return
            if isinstance(msg, proto.Hello):
                self._reply(c, self._hello(msg))
            elif isinstance(msg, proto.Attach):
                keep = self._attach_client(c, d, msg)
            elif isinstance(msg, proto.Status):
                self._reply(c, self._status())
            elif isinstance(msg, proto.Stats):
                self._reply(c, self._stats())
            elif isinstance(msg, proto.Conns):
                self._reply(c, self._conns())
            elif isinstance(msg, proto.Capture):
                self._capture(c, msg)
            else:                                # proto.Stop
                cred = _peercred(c)
                log.info("stop requested by pid %s uid %s", cred["pid"], cred["uid"])
                self._reply(c, proto.ok(pid=self.pid))
                self.stop_waiters.append(c)      # closed when everything is cleaned up
                keep = True
                self._request_stop(0)
        except OSError as e:
            log.info("client went away during %s: %s", d.get("op"), e)
        finally:
            if not keep:
                c.close()

    def _capture(self, c: socket.socket, msg: proto.Capture) -> None:
        """``fpd capture``: a socketpair per capture; one end to every live worker (each
        taps its XSK into it: :class:`proto.CaptureTap`), the other to the client with
        the reply (:class:`proto.CaptureReply`)."""
        from fpd import capture
        try:
            req = capture.parse_request(msg.body())
        except capture.CaptureError as e:
            self._reply(c, proto.fail(E.EINVAL, str(e)))
            return
        reader, writer = capture.make_pair()
        try:
            queues = []
            tap = proto.CaptureTap(**{k: v for k, v in req.items() if v is not None})
            for w in self.workers:
                if not w.alive:
                    continue
                try:
                    proto.send(w.chan, tap, fds=[writer.fileno()])
                    queues.append(w.queue)
                except (OSError, ValueError) as e:
                    log.warning("cannot start a capture in worker q%d: %s", w.queue, e)
            if not queues:
                self._reply(c, proto.fail(E.EAGAIN, "no worker is running to capture from"))
                return
            cred = _peercred(c)
            log.info("capture started by pid %s uid %s on queues %s (%s)", cred["pid"],
                     cred["uid"], ",".join(map(str, queues)),
                     ", ".join(f"{k} {v}" for k, v in req.items() if v is not None))
            c.settimeout(2.0)
            reply = proto.CaptureReply(queues=queues, ifname=self.cfg.ifname, pid=self.pid,
                                       **{k: v for k, v in req.items() if v is not None})
            proto.send(c, proto.ok(**reply.body()), fds=[reader.fileno()])
        finally:
            reader.close()
            writer.close()

    def _hello(self, msg: proto.Hello) -> dict:
        v = msg.version
        if v != proto.VERSION:
            return proto.fail(E.EPROTONOSUPPORT, f"protocol version {v!r} not supported "
                                                 f"(this daemon speaks {proto.VERSION})")
        cfg = self.cfg
        body = proto.HelloReply(version=proto.VERSION, workers=len(self.workers),
                                pid=self.pid, ifname=cfg.ifname, ports=list(cfg.ports),
                                local_ports=list(cfg.local_ports)).body()
        return proto.ok(**body, addr=cfg.addr)        # addr null: any local address

    def _attach_client(self, c: socket.socket, d: dict, msg: proto.Attach) -> bool:
        q = msg.queue
        if not 0 <= q < len(self.workers):
            self._count("attach_refused")
            self._reply(c, proto.fail(E.EINVAL, f"no worker for queue {q!r} (this daemon has "
                                          f"{len(self.workers)})"))
            return False
        w = self.workers[q]
        if not w.alive:
            self._reply(c, proto.fail(E.ECONNREFUSED, f"worker q{q} is not running"))
            return False
        cred = _peercred(c)
        try:
            proto.send(w.chan, proto.Client(attach=d, cred=cred), fds=[c.fileno()])
        except (OSError, ValueError) as e:
            log.warning("cannot hand a client to worker q%d: %s", q, e)
            with contextlib.suppress(OSError):
                self._reply(c, proto.fail(E.EAGAIN, f"cannot reach worker q{q}: {e}"))
        return False               # the worker has its own copy: close ours

    def _on_worker_msg(self, w: WorkerProcess) -> None:
        try:
            msg, fds = proto.recv(w.chan, maxfds=4)
        except (BlockingIOError, TimeoutError, socket.timeout):
            return
        except (OSError, ValueError) as e:
            if isinstance(e, ValueError):
                log.warning("worker q%d sent a bad message: %s", w.queue, e)
                return
            msg, fds = None, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        if msg is None:
            self._worker_gone(w)
            return
        self._worker_note(w, msg)

    def _worker_note(self, w: WorkerProcess, msg: dict) -> None:
        """A message from a worker that answers nothing we are waiting for."""
        if msg.get("op") == proto.Resolve.op:
            self._resolve(w, msg)
        elif msg.get("op") == proto.Error.op or msg.get("ok") is False:
            log.warning("worker q%d: %s", w.queue, msg.get("error", msg))
        else:
            log.debug("worker q%d: %r", w.queue, msg)

    def _worker_gone(self, w: WorkerProcess) -> None:
        with contextlib.suppress(Exception):
            self.sel.unregister(w.chan)
        self._reap()
        if self.stopping:
            return
        time.sleep(0.05)
        self._reap()
        if self.cfg.app:                           # the program's process is ending
            deadline = time.monotonic() + STOP_TIMEOUT
            while w.alive and time.monotonic() < deadline:
                time.sleep(0.02)
                self._reap()
            if self.stopping:
                return
        how = w.describe_exit() if not w.alive else "closed its channel"
        log.error("worker q%d (pid %d) %s: shutting down", w.queue, w.pid, how)
        self._request_stop(1)

    def _resolve(self, w: WorkerProcess, msg: dict) -> None:
        """proto.Resolve from an unprivileged worker: start ARP for a next hop on our
        interface (the only thing its data path needed CAP_NET_ADMIN for). The worker is
        not trusted: only IPv4 addresses on fpd's interface, at most RESOLVE_RATE a
        second per worker; the rest is counted and dropped."""
        import ipaddress

        from fpd import neigh
        try:
            note = proto.parse(msg, proto.WORKER_NOTES)
            ip = str(ipaddress.IPv4Address(note.ip))
        except (proto.ProtocolError, ValueError):
            self._count("resolve_refused")
            return
        if note.ifindex != self.ifindex:
            self._count("resolve_refused")
            return
        now = time.monotonic()
        t, n = w.resolve_window
        if now - t >= 1.0:
            t, n = now, 0
        if n >= RESOLVE_RATE:
            self._count("resolve_limited")
            return
        w.resolve_window = (t, n + 1)
        self._count("resolve_started")
        try:
            neigh.neighbour_mac(self.ifindex, ip, resolve=True, timeout=0)
        except neigh.NeighError:
            pass                                   # started: the worker looks it up

    def _ask_workers(self, req: proto.Message, key: str,
                     timeout: float = WORKER_TIMEOUT) -> dict:
        """Send ``req`` to every live worker, collect the replies carrying ``key``
        within ``timeout``. Returns {queue: reply or {"error": text}}."""
        out: dict[int, dict] = {}
        pending: dict[int, WorkerProcess] = {}
        for w in self.workers:
            if not w.alive:
                out[w.queue] = {"error": f"worker q{w.queue} is not running"}
                continue
            w.seq += 1
            try:
                proto.send(w.chan, req, seq=w.seq)
            except (OSError, ValueError) as e:
                out[w.queue] = {"error": f"cannot reach worker q{w.queue}: {e}"}
                continue
            pending[w.chan.fileno()] = w
        deadline = time.monotonic() + timeout
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select_read(list(pending), left)
            for fd in r:
                w = pending[fd]
                try:
                    msg, fds = proto.recv(w.chan, maxfds=4)
                except (BlockingIOError, TimeoutError, socket.timeout):
                    continue
                except ValueError as e:
                    log.warning("worker q%d sent a bad message: %s", w.queue, e)
                    continue
                except OSError:
                    msg, fds = None, []
                for f in fds:
                    with contextlib.suppress(OSError):
                        os.close(f)
                if msg is None:
                    del pending[fd]
                    out[w.queue] = {"error": f"worker q{w.queue} went away"}
                    self._worker_gone(w)
                    continue
                if "seq" in msg and msg["seq"] != w.seq:
                    continue                          # a late answer to an older question
                if key in msg:
                    out[w.queue] = msg
                    del pending[fd]
                elif msg.get("ok") is False and msg.get("seq", w.seq) == w.seq:
                    out[w.queue] = {"error": msg.get("error", "failed")}
                    del pending[fd]
                else:
                    self._worker_note(w, msg)
        for w in pending.values():
            out[w.queue] = {"error": f"worker q{w.queue} did not answer {req.op} within "
                                     f"{timeout:.0f} s"}
        return out

    def _status(self) -> dict:
        cfg = self.cfg
        clients = conns = 0
        answers = self._ask_workers(proto.Stats(), "stats", timeout=1.0)
        for a in answers.values():
            s = a.get("stats") or {}
            clients += int(s.get("clients", 0) or 0)
            conns += int((s.get("stack") or {}).get("connections", 0) or 0)
        return {"ok": True, "pid": self.pid, "ifname": cfg.ifname,
                "mode": self.steering.mode, "prog_id": self.steering.prog_id,
                "addr": cfg.addr, "ports": list(cfg.ports),
                "local_ports": list(cfg.local_ports), "queues": self.nqueues,
                "workers": [{"queue": w.queue, "pid": w.pid, "alive": w.alive,
                             **({"error": answers[w.queue]["error"]}
                                if "error" in answers.get(w.queue, {}) else {})}
                            for w in self.workers],
                "worker_user": self.worker_ids[2] if self.worker_ids else "root",
                "clients": clients, "connections": conns, "started": self.started,
                "uptime": round(time.time() - self.started, 3), "socket": cfg.socket,
                "log": cfg.log_path}

    def _stats(self) -> dict:
        try:
            xdp = self.steering.stats()
        except Exception as e:                    # noqa: BLE001
            xdp = {"error": str(e)}
        answers = self._ask_workers(proto.Stats(), "stats")
        workers = []
        totals = {"redirect_failed": xdp.get("redirect_failed", 0)}
        if "syn_limited" in xdp:
            totals["syn_limited"] = xdp["syn_limited"]
        for w in self.workers:
            a = answers.get(w.queue, {})
            if "stats" in a:
                s = dict(a["stats"]) if isinstance(a["stats"], dict) else {}
                workers.append({"queue": w.queue, "pid": w.pid, **s})
                for k, v in (s.get("xdp") or {}).items():
                    if isinstance(v, int) and k != "tx_ring_empty_descs":  # not a drop
                        totals["xsk_" + k] = totals.get("xsk_" + k, 0) + v
            else:
                workers.append({"queue": w.queue, "pid": w.pid,
                                "error": a.get("error", "no answer")})
        return {"ok": True, "xdp": xdp, "workers": workers, "drops": totals,
                "supervisor": dict(self.counters)}

    def _conns(self) -> dict:
        answers = self._ask_workers(proto.Conns(), "conns")
        conns, listeners, errors = [], [], []
        for w in self.workers:
            a = answers.get(w.queue, {})
            if "conns" in a:
                for c in a.get("conns") or []:
                    if isinstance(c, dict):
                        conns.append({"queue": w.queue, **c})
                for li in a.get("listeners") or []:
                    if isinstance(li, dict):
                        listeners.append({"queue": w.queue, **li})
            else:
                errors.append({"queue": w.queue, "error": a.get("error", "no answer")})
        out = {"ok": True, "conns": conns, "listeners": listeners}
        if errors:
            out["errors"] = errors
        return out

    # -- stopping --------------------------------------------------------------------------
    def cleanup(self) -> None:
        """Undo everything start() did, whatever state it got to. Idempotent.

        The clients and the listening socket are closed, then the recorded steps are
        replayed last first (:func:`undo`): the workers (clients told, connections reset),
        the socket file, the reserved ports, XDP, the state file, the pid file. A step that
        cannot be undone stays in the state file for `fpd stop --force`."""
        if self._cleaned:
            return
        self._cleaned = True
        self.stopping = True
        if self.metrics is not None:                 # --metrics (fpd.metrics)
            self.metrics.close()
        for c, _ in list(self.clients.values()):
            with contextlib.suppress(Exception):
                c.close()
        self.clients.clear()
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        undo(self.steps, live=self, report=_log_report)
        self.steps = []
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1
        if self.sel is not None:
            self.sel.close()
            self.sel = None
        self._restore_signals()
        for c in self.stop_waiters:               # `fpd stop` waits for this EOF
            with contextlib.suppress(Exception):
                c.close()
        self.stop_waiters.clear()

    def _stop_workers(self) -> None:
        live = [w for w in self.workers if w.alive]
        for w in live:
            try:
                w.chan.settimeout(1.0)
                proto.send(w.chan, proto.Stop())
            except (OSError, ValueError) as e:
                log.info("worker q%d: cannot send stop (%s)", w.queue, e)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            self._reap()
            if not any(w.alive for w in self.workers):
                break
            time.sleep(0.02)
        for w in self.workers:
            if w.alive:
                log.warning("worker q%d (pid %d) did not stop within %.0f s: SIGKILL",
                            w.queue, w.pid, STOP_TIMEOUT)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    _, st = os.waitpid(w.pid, 0)
                    w.exit_status = st
                w.alive = False
            else:
                log.info("worker q%d (pid %d) %s", w.queue, w.pid, w.describe_exit())
            with contextlib.suppress(Exception):
                w.chan.close()


def _ask_resolve(chan: socket.socket, ifindex: int, ip) -> None:
    """In an unprivileged worker: proto.Resolve to the supervisor (no answer: the
    worker's parked segments look the neighbour up again, as after NTF_USE)."""
    try:
        if isinstance(ip, (bytes, bytearray)):
            ip = socket.inet_ntoa(bytes(ip))
        proto.send(chan, proto.Resolve(ifindex=int(ifindex), ip=str(ip)))
    except (OSError, ValueError):
        pass                                       # full or gone: the retry times out


def select_read(fds, timeout):
    import select
    try:
        return select.select(fds, [], [], timeout)
    except InterruptedError:
        return [], [], []


# --- logging -----------------------------------------------------------------------------
# One line per event everywhere (a traceback's lines are joined with " | "), with its level.
# The log file: UTC time, pid, level, logger. Stderr in the foreground: pid and level; when
# stderr is the systemd journal (JOURNAL_STREAM names it), a "<N>" syslog priority prefix
# instead, which the journal turns into the entry's priority (it adds time and pid itself).
_SYSLOG_PRIO = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
                logging.CRITICAL: 2}


class _OneLine(logging.Formatter):
    def format(self, record):
        return super().format(record).replace("\r", "").replace("\n", " | ")


class _Fmt(_OneLine):
    def formatTime(self, record, datefmt=None):
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + \
            f".{int(record.msecs):03d}Z"


class _JournalFmt(_OneLine):
    def format(self, record):
        prio = _SYSLOG_PRIO.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        return f"<{prio}>" + super().format(record)


def stderr_is_journal(fd: int = 2) -> bool:
    """True when ``fd`` is the journal stream systemd gave us (sd_journal_stream_fd(3):
    JOURNAL_STREAM is "DEV:INODE" of that stream)."""
    js = os.environ.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(x) for x in js.split(":"))
        st = os.fstat(fd)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def setup_logging(cfg: DaemonConfig) -> list[logging.Handler]:
    """Log file (always, appended) and, in the foreground, stderr (journal-style when it
    is the journal), at ``cfg.log_level``. Returns the handlers added (for
    :func:`teardown_logging`)."""
    root = logging.getLogger("fpd")
    root.setLevel(getattr(logging, str(cfg.log_level).upper(), logging.INFO))
    added = []
    fmt = _Fmt("%(asctime)s fpd[%(process)d] %(levelname)s %(name)s: %(message)s")
    try:
        d = os.path.dirname(cfg.log_path)
        if d:
            os.makedirs(d, mode=0o755, exist_ok=True)
        fh = logging.FileHandler(cfg.log_path)
        fh.setFormatter(fmt)
        root.addHandler(fh)
        added.append(fh)
    except OSError as e:
        if cfg.foreground:
            print(f"fpd: cannot open the log file {cfg.log_path}: {e.strerror}; logging to "
                  f"stderr only", file=sys.stderr)
    if cfg.foreground:
        sh = logging.StreamHandler(sys.stderr)
        try:
            efd = sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):
            efd = 2
        if stderr_is_journal(efd):
            sh.setFormatter(_JournalFmt("%(name)s: %(message)s"))
        else:
            sh.setFormatter(_OneLine("fpd[%(process)d] %(levelname)s: %(message)s"))
        root.addHandler(sh)
        added.append(sh)
    return added


def teardown_logging(handlers) -> None:
    root = logging.getLogger("fpd")
    for h in handlers:
        root.removeHandler(h)
        with contextlib.suppress(Exception):
            h.close()


def _notify(ready_fd, text: str) -> None:
    if ready_fd is None:
        return
    try:
        os.write(ready_fd, (text.replace("\n", " ") + "\n").encode()[:65536])
    except OSError:
        pass
    with contextlib.suppress(OSError):
        os.close(ready_fd)


def run(cfg: DaemonConfig, ready_fd: int | None = None) -> int:
    """Start the supervisor and serve until stopped. Returns the exit code (0 = orderly
    stop, 1 = start-up failed or a worker died).

    ``ready_fd``: a pipe's write end; receives ``ok {json}`` once serving (json: pid, mode,
    queues, prog_id), or ``error: text`` if start-up failed, and is closed either way."""
    try:
        validate(cfg)
        check_privileges()
        check_interface(cfg.ifname)
    except DaemonError as e:
        if ready_fd is None:
            print(f"fpd: {e}", file=sys.stderr)
        _notify(ready_fd, f"error: {e}")
        return 1
    handlers = setup_logging(cfg)
    sup = Supervisor(cfg)
    if ready_fd is not None:
        sup.ready_fd = ready_fd
    try:
        try:
            log.info("starting: %s", {k: v for k, v in dataclasses.asdict(cfg).items()})
            sup.start()
        except DaemonError as e:
            log.error("%s", e)
            _notify(ready_fd, f"error: {e}")
            sdnotify.notify(f"STATUS=start-up failed: {e}")
            return 1
        except Exception as e:                    # noqa: BLE001
            log.exception("start-up failed")
            _notify(ready_fd, f"error: start-up failed: {type(e).__name__}: {e}")
            return 1
        _notify(ready_fd, "ok " + json.dumps({"pid": sup.pid, "mode": sup.steering.mode,
                                              "queues": sup.nqueues,
                                              "prog_id": sup.steering.prog_id,
                                              "cleaned": sup.cleaned}))
        ready_fd = None
        sdnotify.notify(f"READY=1\nMAINPID={sup.pid}\nSTATUS=serving {cfg.ifname} ports "
                        f"{','.join(map(str, cfg.ports))} on {cfg.socket}")
        try:
            rc = sup.serve()
        except Exception:                         # noqa: BLE001
            log.exception("supervisor failed")
            rc = 1
        sdnotify.notify("STOPPING=1")
        log.info("stopping (exit code %d)", rc)
        return rc
    finally:
        try:
            sup.cleanup()
        except Exception:                         # noqa: BLE001
            log.exception("cleanup failed")
        if ready_fd is not None:
            _notify(ready_fd, "error: start-up failed (see the log)")
        log.info("stopped")
        teardown_logging(handlers)


# --- what a start did, undone ---------------------------------------------------------------
# The supervisor records each step of its start-up in Supervisor.steps, persisted in
# PATH.state (the "steps" list) as it goes; the rest of that file is a summary for people.
# Steps, in the order start() takes them:
#   {"do": "pid_file", "path"}                          PATH.pid created and locked
#   {"do": "state_file", "path"}                        PATH.state itself
#   {"do": "xdp", "ifname", "mode", "prog_id"}          fpd_steer attached (prog_id 0: not
#                                                       known yet, recorded before attaching)
#   {"do": "reserved_ports", "lo", "hi", "original"}    lo-hi added to ip_local_reserved_ports
#   {"do": "socket", "path", "ino"}                     the unix socket bound
#   {"do": "workers", "pids"}                           worker processes forked
# undo() replays them last first, for the live supervisor (cleanup) and after a crash
# (force_stop): the same list, one function per kind.

def _log_report(ok: bool, text: str) -> None:
    (log.info if ok else log.error)("%s", text)


def _undo_workers(step, sup, report) -> bool:
    if sup is not None:
        sup._stop_workers()
        return True
    for wpid in step.get("pids") or []:
        if isinstance(wpid, int) and pid_alive(wpid) and looks_like_fpd(wpid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(wpid, signal.SIGKILL)
            report(True, f"killed worker pid {wpid}")
    return True


def _undo_file(step, sup, report) -> bool:
    path = step["path"]
    try:
        if sup is not None and step.get("ino") is not None \
                and os.stat(path).st_ino != step["ino"]:
            report(True, f"{path} was replaced by someone else: left alone")
            return True
        os.unlink(path)
    except FileNotFoundError:
        return True
    except OSError as e:
        report(False, f"cannot remove {path}: {e.strerror}")
        return False
    if sup is None:
        report(True, f"removed {path}")
    return True


def _undo_xdp(step, sup, report) -> bool:
    from fpd.bpf import PROG_NAME, PROG_NAMES, XdpError, attached_prog_id, force_detach
    ifname = step["ifname"]
    if sup is not None:                          # detach through the live attachment
        st, sup.steering = sup.steering, None
        if st is None:                           # never attached (Steering undoes itself)
            return True
        try:
            st.close()
        except Exception as e:                   # noqa: BLE001
            report(False, f"detaching XDP from {ifname} failed: {e}")
            return False
        report(True, f"detached XDP program id {st.prog_id} ({PROG_NAME}) from {ifname}")
        return True
    try:
        prog = attached_prog_id(ifname)
    except XdpError as e:
        report(False, f"cannot query XDP on {ifname}: {e}")
        return False
    if not prog:
        return True
    name = prog_name(prog)
    if prog != step.get("prog_id") and name and name not in PROG_NAMES:
        report(True, f"{ifname} has XDP program id {prog} named {name}, not {PROG_NAME}: "
                     f"left alone (`fpd xdp detach -i {ifname}` removes any program)")
        return True
    try:
        if force_detach(ifname):
            report(True, f"detached XDP program id {prog} ({name or 'name unknown'}) "
                         f"from {ifname}")
    except XdpError as e:
        report(False, f"cannot detach XDP from {ifname}: {e}")
        return False
    return True


def _undo_reserved_ports(step, sup, report) -> bool:
    try:
        lo, hi = int(step["lo"]), int(step["hi"])
        cur = read_reserved()
        new = restore_reserved(cur, step.get("original") or "", lo, hi)
        if new != cur:
            write_reserved(new)
            report(True, f"gave back reserved ports {lo}-{hi} ({RESERVED_PORTS}: "
                         f"{new or 'empty'})")
    except (OSError, ValueError, TypeError, KeyError) as e:
        report(False, f"cannot restore {RESERVED_PORTS}: {e}")
        return False
    return True


_UNDO = {"workers": _undo_workers, "socket": _undo_file, "reserved_ports": _undo_reserved_ports,
         "xdp": _undo_xdp, "state_file": _undo_file, "pid_file": _undo_file}
_FILES = ("socket", "state_file", "pid_file")


def undo(steps: list[dict], live: "Supervisor | None" = None, report=_log_report) -> list[dict]:
    """Undo a start's ``steps``, last first. ``live``: the supervisor that took them (its
    workers are stopped through their channels, XDP detached through its attachment);
    None after a crash (workers killed by pid, XDP detached from the interface unless the
    program there is someone else's; files only if no live process holds the pid file).
    ``report(ok, text)`` hears what was done or failed. Returns the steps that could not
    be undone; if there are any, the state file is kept (rewritten with just those) for
    another `fpd stop --force`."""
    steps = [st for st in steps if isinstance(st, dict) and st.get("do") in _UNDO]
    ifname = next((st["ifname"] for st in steps if st["do"] == "xdp"), "IFACE")
    pid_path = next((st["path"] for st in steps if st["do"] == "pid_file"), None)
    files = live is not None or not (pid_path and pid_file_locked(pid_path))
    if not files:
        report(True, f"{pid_path} is locked by a live process: files left in place")
    left = []
    for st in reversed(steps):
        kind = st["do"]
        if kind in _FILES and not files:
            continue
        if kind == "state_file" and left:
            try:
                write_state(st["path"], {"ifname": ifname, "steps": [st, *reversed(left)]})
                report(False, f"left {st['path']} for what could not be undone: run `fpd "
                              f"stop --force -i {ifname} --socket "
                              f"{st['path'].removesuffix('.state')}`")
            except OSError as e:
                report(False, f"cannot rewrite {st['path']}: {e.strerror}")
            continue
        try:
            ok = _UNDO[kind](st, live, report)
        except Exception as e:                   # noqa: BLE001  (go on with the rest)
            report(False, f"undoing {kind} failed: {type(e).__name__}: {e}")
            ok = False
        if not ok:
            left.append(st)
    return left


# --- fpd stop --force ----------------------------------------------------------------------
def force_stop(ifname: str, socket_path: str = DEFAULT_SOCKET, wait: float = 5.0) -> list[str]:
    """Clean up after a daemon that died (or kill one that hangs): kill the pid of the
    pid file if it is alive and looks like fpd (SIGTERM, then SIGKILL after ``wait``),
    then undo the steps its state file records (:func:`undo`), plus what any start
    leaves on ``ifname`` and at ``socket_path`` should the record be missing or cut
    short: an fpd_steer XDP program (or one of unknown name), the socket, pid and state
    files. Returns what it did (one line each)."""
    did: list[str] = []
    pid_path, state_path = socket_path + ".pid", socket_path + ".state"
    state = read_state(state_path)
    pid = read_pid(pid_path) or int((state or {}).get("pid") or 0)
    if pid and pid != os.getpid() and pid_alive(pid):
        if looks_like_fpd(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + wait
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 2
                while pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                did.append(f"killed fpd (pid {pid}) with SIGKILL")
            else:
                did.append(f"stopped fpd (pid {pid}) with SIGTERM")
            state = read_state(state_path)      # what its own cleanup left, if anything
        else:
            did.append(f"pid {pid} of {pid_path} is alive but is not fpd: left alone")
    if state and state.get("ifname") and state["ifname"] != ifname:
        did.append(f"note: {state_path} is for interface {state['ifname']}, not {ifname}")
    recorded = [st for st in (state or {}).get("steps") or [] if isinstance(st, dict)]
    paths = {st.get("path") for st in recorded}
    head = [{"do": k, "path": p} for k, p in (("pid_file", pid_path),
                                              ("state_file", state_path)) if p not in paths]
    tail = [] if any(st.get("do") == "xdp" and st.get("ifname") == ifname for st in recorded) \
        else [{"do": "xdp", "ifname": ifname, "prog_id": 0}]
    if socket_path not in paths:
        tail.append({"do": "socket", "path": socket_path})
    undo(head + recorded + tail, live=None, report=lambda ok, text: did.append(text))
    return did
