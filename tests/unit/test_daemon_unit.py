"""The supervisor's logic without root: reserved-port arithmetic, validation, the state
and pid files, and the control protocol against real worker services on loopback hosts
(fpd.loopback: no XDP, no fork; a stand-in process per worker for the supervisor to watch)."""

import contextlib
import errno
import fcntl
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from fpd import client, control, daemon, loopback, proto
from fpd.daemon import (DaemonConfig, DaemonError, Supervisor, WorkerProcess, format_port_list,
                        merge_reserved, parse_port_list, restore_reserved)


# --- ip_local_reserved_ports -----------------------------------------------------------
@pytest.mark.parametrize("text, ports", [
    ("", set()),
    ("\n", set()),
    ("8080", {8080}),
    ("1,3-5,7", {1, 3, 4, 5, 7}),
    (" 10-12 , 11 ", {10, 11, 12}),
])
def test_parse_port_list(text, ports):
    assert parse_port_list(text) == ports


@pytest.mark.parametrize("ports, text", [
    (set(), ""),
    ({5}, "5"),
    ({1, 2, 3, 7, 9, 10}, "1-3,7,9-10"),
    (range(60000, 60256), "60000-60255"),
])
def test_format_port_list(ports, text):
    assert format_port_list(ports) == text
    assert parse_port_list(text) == set(ports)


def test_merge_reserved():
    assert merge_reserved("", 60000, 60255) == "60000-60255"
    assert merge_reserved("8080,60100-60300", 60000, 60255) == "8080,60000-60300"
    assert merge_reserved("59999", 60000, 60001) == "59999-60001"


def test_restore_gives_back_only_what_was_added():
    orig = "8080,60100-60110"
    cur = merge_reserved(orig, 60000, 60255)
    assert restore_reserved(cur, orig, 60000, 60255) == orig
    assert restore_reserved(cur, "", 60000, 60255) == "8080"      # state lost: ours go
    # someone reserved 9000 and 60200 meanwhile: 9000 stays, 60200 was in our range
    assert restore_reserved(cur + ",9000", orig, 60000, 60255) == "8080,9000,60100-60110"
    assert restore_reserved("", orig, 60000, 60255) == ""         # nothing to give back


# --- validation ---------------------------------------------------------------------------
def cfg(**kw):
    kw.setdefault("ifname", "fpd0")
    kw.setdefault("ports", [80])
    kw.setdefault("socket", "/run/fpd/fpd.sock")
    return DaemonConfig(**kw)


@pytest.mark.parametrize("kw, words", [
    ({"ports": []}, "at least one port"),
    ({"ports": [0]}, "1..65535"),
    ({"ports": [70000]}, "1..65535"),
    ({"ports": [80, 80]}, "twice"),
    ({"mode": "turbo"}, "mode must be one of auto, native, generic"),
    ({"addr": "nope"}, "--addr must be an IPv4 address"),
    ({"local_ports": (60010, 60000)}, "is empty"),
    ({"local_ports": (2000, 4000)}, "exceed the 1024 entries"),
    ({"ports": [60005]}, "inside the local port range"),
    ({"queues": 0}, "--queues must be 1..64"),
    ({"socket": "rel/fpd.sock"}, "must be absolute"),
    ({"socket": "/" + "x" * 120}, "too long"),
    ({"ifname": ""}, "interface is required"),
    ({"group": "no-such-group-fpd"}, "no such group"),
])
def test_validate(kw, words):
    with pytest.raises(DaemonError, match=None) as ei:
        daemon.validate(cfg(**kw))
    assert words in str(ei.value)


def test_validate_ok():
    daemon.validate(cfg(ports=[7, 80], addr="10.0.0.1", local_ports=(61000, 61999)))


def test_default_paths():
    c = cfg(socket="/run/x/fpd.sock")
    assert (c.pid_path, c.state_path, c.log_path) == (
        "/run/x/fpd.sock.pid", "/run/x/fpd.sock.state", "/run/x/fpd.sock.log")
    assert cfg(log="/var/log/fpd.log").log_path == "/var/log/fpd.log"


def test_not_root_is_refused(monkeypatch):
    # as a normal user without capabilities (faked, so it runs as root too)
    monkeypatch.setattr(daemon.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(daemon, "_capabilities", lambda: 0)
    with pytest.raises(DaemonError, match="fpd start needs root.*missing CAP_NET_ADMIN"):
        daemon.check_privileges()
    all_caps = (1 << daemon.CAP_NET_ADMIN) | (1 << daemon.CAP_NET_RAW) | (1 << daemon.CAP_BPF)
    monkeypatch.setattr(daemon, "_capabilities", lambda: all_caps)
    with pytest.raises(DaemonError, match="missing CAP_PERFMON.*run it with sudo, or grant"):
        daemon.check_privileges()
    all_caps |= 1 << daemon.CAP_PERFMON
    monkeypatch.setattr(daemon, "_capabilities", lambda: all_caps)
    daemon.check_privileges()                 # capabilities are enough


def test_root_with_a_reduced_capability_set_is_told_what_is_missing(monkeypatch):
    monkeypatch.setattr(daemon.os, "geteuid", lambda: 0)
    monkeypatch.setattr(daemon, "_capabilities", lambda: 1 << daemon.CAP_NET_ADMIN)
    with pytest.raises(DaemonError, match="runs as root but without CAP_NET_RAW, CAP_BPF, "
                                          "CAP_PERFMON .*add the missing ones"):
        daemon.check_privileges()


def test_missing_interface_message():
    with pytest.raises(DaemonError, match="no interface fpd-nope9 in this network namespace"):
        daemon.check_interface("fpd-nope9")


# --- files ------------------------------------------------------------------------------
def test_state_file_round_trip(tmp_path):
    p = str(tmp_path / "fpd.sock.state")
    st = {"pid": 1, "ifname": "fpd0", "reserved_ports": "8080", "local_ports": [1, 2]}
    daemon.write_state(p, st)
    assert daemon.read_state(p) == st
    assert os.listdir(tmp_path) == ["fpd.sock.state"]        # no temporary left
    open(p, "w").write("{not json")
    assert daemon.read_state(p) is None
    open(p, "w").write("[1, 2]")
    assert daemon.read_state(p) is None
    assert daemon.read_state(str(tmp_path / "missing")) is None


def test_pid_file_lock(tmp_path):
    p = str(tmp_path / "x.pid")
    assert not daemon.pid_file_locked(p)                  # missing
    fd = os.open(p, os.O_RDWR | os.O_CREAT)
    try:
        os.write(fd, b"1234\n")
        assert not daemon.pid_file_locked(p)
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert daemon.pid_file_locked(p)
        assert daemon.read_pid(p) == 1234
    finally:
        os.close(fd)
    assert not daemon.pid_file_locked(p)


def test_second_supervisor_on_same_socket_is_refused(tmp_path):
    sock = str(tmp_path / "fpd.sock")
    a = Supervisor(cfg(socket=sock))
    a._lock()
    try:
        assert daemon.read_pid(sock + ".pid") == os.getpid()
        b = Supervisor(cfg(socket=sock))
        with pytest.raises(DaemonError) as ei:
            b._lock()
        assert str(ei.value) == f"fpd is already running (pid {os.getpid()}) on {sock}"
        assert b.steps == [] and b.lock_fd == -1
    finally:
        a.cleanup()
    assert not os.path.exists(sock + ".pid")


def test_stale_state_is_undone_then_the_start_goes_on(tmp_path):
    sock = str(tmp_path / "fpd.sock")
    open(sock, "w").close()                    # the dead daemon's socket file
    daemon.write_state(sock + ".state", {"pid": 4242, "ifname": "eth7", "steps": [
        {"do": "pid_file", "path": sock + ".pid"},
        {"do": "state_file", "path": sock + ".state"},
        {"do": "socket", "path": sock}]})
    open(sock + ".pid", "w").write("4242\n")
    s = Supervisor(cfg(socket=sock))
    try:
        s._lock()
        assert s.cleaned[0] == (f"a previous fpd (pid 4242) on {sock} died without "
                                f"cleaning up: cleaned up")
        assert f"removed {sock}" in s.cleaned and f"removed {sock}.state" in s.cleaned
        assert not os.path.exists(sock) and not os.path.exists(sock + ".state")
        assert daemon.read_pid(sock + ".pid") == os.getpid()   # ours now, still locked
        assert daemon.pid_file_locked(sock + ".pid")
    finally:
        s.cleanup()
    assert not os.path.exists(sock + ".pid")


def test_stale_state_that_cannot_be_undone_refuses_and_keeps_the_file(tmp_path):
    sock = str(tmp_path / "fpd.sock")
    daemon.write_state(sock + ".state", {"pid": 4242, "ifname": "eth7", "steps": [
        {"do": "state_file", "path": sock + ".state"},
        {"do": "reserved_ports", "lo": "x", "hi": 1, "original": ""}]})
    open(sock + ".pid", "w").write("4242\n")
    s = Supervisor(cfg(socket=sock))
    with pytest.raises(DaemonError) as ei:
        s._lock()
    msg = str(ei.value)
    assert "a previous fpd (pid 4242)" in msg and "cannot all be undone" in msg
    assert "fpd stop --force -i eth7" in msg and "cannot restore" in msg
    s.cleanup()
    assert daemon.read_pid(sock + ".pid") == 4242
    left = daemon.read_state(sock + ".state")["steps"]
    assert [st["do"] for st in left] == ["state_file", "reserved_ports"]


def test_looks_like_fpd():
    assert not daemon.looks_like_fpd(os.getpid())           # pytest
    q = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "fpd"])
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "fpd", "start"])
    try:
        time.sleep(0.05)
        assert daemon.looks_like_fpd(p.pid)
        assert not daemon.looks_like_fpd(q.pid)          # `vim fpd` is not the daemon
        assert daemon.pid_alive(p.pid)
    finally:
        for x in (p, q):
            x.kill()
            x.wait()
    assert not daemon.pid_alive(p.pid)


# --- the protocol against worker services on loopback hosts -------------------------------
class FakeSteering:
    mode = "native"
    prog_id = 77
    closed = False

    def stats(self):
        return {"seen": 5, "steered": 3, "passed": 2, "malformed": 0, "redirect_failed": 1}

    def close(self):
        self.closed = True


class Workers:
    """Two real worker services (control.worker_main) on loopback hosts, in threads, each
    with a stand-in process for the supervisor to watch (killed when its worker ends)."""

    def __init__(self, s):
        self.hosts = {}
        self.procs = []
        self.chans = []
        self.threads = []
        for q in range(2):
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            proc = subprocess.Popen(["sleep", "60"])
            a.settimeout(5)
            s.workers.append(WorkerProcess(q, proc.pid, a))
            wcfg = control.WorkerConfig(ifname="fpd0", queue=q, nqueues=2, ports=[7, 80],
                                        local_ports=list(range(60000 + q, 60256, 2)))
            t = threading.Thread(target=self._run, args=(b, wcfg, proc), daemon=True)
            t.start()
            ready, fds = proto.recv(a, maxfds=1)       # as the supervisor's start-up
            assert ready["op"] == "ready" and ready["bind_mode"] == "loopback", ready
            for fd in fds:
                os.close(fd)
            self.procs.append(proc)
            self.chans.append(b)
            self.threads.append(t)

    def _host(self, wcfg):
        h = loopback.loopback_host(wcfg)
        self.hosts[wcfg.queue] = h[0]
        return h

    def _run(self, chan, wcfg, proc):
        try:
            control.worker_main(chan, wcfg, make_host=self._host)
        finally:
            proc.kill()

    def close(self):
        for c in self.chans:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)           # a worker ends at channel EOF
        for t in self.threads:
            t.join(5)
        for c in self.chans:
            c.close()
        for p in self.procs:
            p.kill()
            p.wait()
        assert not any(t.is_alive() for t in self.threads)


@pytest.fixture
def sup(tmp_path):
    """A Supervisor serving in a thread with two real worker services on loopback hosts;
    yields (sup, socket path, Workers)."""
    yield from _sup(tmp_path, serve=True)


@pytest.fixture
def idle_sup(tmp_path):
    """As ``sup``, but not serving (the test drives the supervisor itself)."""
    yield from _sup(tmp_path, serve=False)


def _sup(tmp_path, serve):
    sock = str(tmp_path / "fpd.sock")
    s = Supervisor(cfg(socket=sock, ports=[7, 80]))
    s.steering = FakeSteering()
    s.steps.append({"do": "xdp", "ifname": "fpd0", "mode": "native", "prog_id": 0})
    s.nqueues = 2
    s._sig_r, s._sig_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    ws = Workers(s)
    s.steps.append({"do": "workers", "pids": [w.pid for w in s.workers]})
    s._listen()
    t = threading.Thread(target=lambda: setattr(s, "rc", s.serve()), daemon=True)
    if serve:
        t.start()
    try:
        yield s, sock, ws
    finally:
        if t.is_alive():
            s._request_stop(0)
            os.write(s._sig_w, b"\0")
            t.join(5)
        s.cleanup()
        ws.close()


def ask(sock, msg):
    """The reply to one request (a refusal's reply too)."""
    c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    c.settimeout(5)
    c.connect(sock)
    try:
        return proto.request(c, msg)[0]
    except OSError as e:
        if not proto.refused(e):
            raise
        return e.fpd_reply
    finally:
        c.close()


@contextlib.contextmanager
def library(sock, port=80, pairs=2):
    """The real client library on this supervisor: a listener on ``port`` and ``pairs``
    connections to it (round robin over the workers: connect side and accepted side)."""
    client.set_default_socket(sock)
    socks = []
    try:
        srv = client.create_server(("", port))
        socks.append(srv)
        for _ in range(pairs):
            c = client.create_connection((loopback.ADDR, port), timeout=5)
            socks.append(c)
            srv.settimeout(5)
            socks.append(srv.accept()[0])
        yield socks
    finally:
        lib = client._client
        for x in socks:
            x.close()
        client.set_default_socket(None)
        if lib is not None:
            lib.set_dead("test over")
            if lib.pump_thread is not None:
                lib.pump_thread.join(5)
            lib._close_workers()


def test_hello_status_stats_conns(sup):
    s, sock, ws = sup
    h = ask(sock, {"op": "hello", "version": 1})
    assert h == {"ok": True, "version": 1, "workers": 2, "pid": os.getpid(), "ifname": "fpd0",
                 "addr": None, "ports": [7, 80], "local_ports": [60000, 60255]}
    bad = ask(sock, {"op": "hello", "version": 9})
    assert bad["ok"] is False and bad["errno"] == errno.EPROTONOSUPPORT
    st = ask(sock, {"op": "status"})
    assert st["ok"] and st["mode"] == "native" and st["queues"] == 2
    assert st["clients"] == 0 and st["connections"] == 0
    assert [w["alive"] for w in st["workers"]] == [True, True]
    real = ws.hosts[1].stats                          # as if worker 1's XSK had dropped
    ws.hosts[1].stats = lambda: dict(real(), xdp={"rx_dropped": 4, "tx_ring_empty_descs": 9})
    stats = ask(sock, {"op": "stats"})
    assert stats["xdp"]["redirect_failed"] == 1
    assert [w["queue"] for w in stats["workers"]] == [0, 1]
    assert stats["drops"] == {"redirect_failed": 1, "xsk_rx_dropped": 4}
    with library(sock):
        st = ask(sock, {"op": "status"})
        assert st["clients"] == 2 and st["connections"] == 4    # one per worker, 2 ends
        conns = ask(sock, {"op": "conns"})
    assert [c["queue"] for c in conns["conns"]] == [0, 0, 1, 1]
    assert {c["owner_pid"] for c in conns["conns"]} == {os.getpid()}
    assert len(conns["listeners"]) == 2
    from fpd.cli import conns_table
    lines = conns_table(conns)
    assert lines[0].split()[:4] == ["Q", "State", "Local", "Remote"]
    assert "LISTEN" in lines[1] and "ESTABLISHED" in lines[3] and "10.77.0.1:80" in lines[3]


def test_attach_hands_the_connection_to_the_worker(sup):
    s, sock, _ = sup
    c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    c.settimeout(5)
    c.connect(sock)
    proto.send(c, {"op": "attach", "queue": 1, "pid": 123})
    reply, fds = proto.recv(c, maxfds=3)          # answered by worker 1's service
    assert reply["ok"] and reply["queue"] == 1 and reply["workers"] == 2 and len(fds) == 3
    for fd in fds:
        os.close(fd)
    r, _ = proto.request(c, proto.Listen(port=7))   # it serves this connection now
    conns = ask(sock, {"op": "conns"})              # with the credentials passed on
    assert [(x["queue"], x["owner_pid"], x["owner_uid"]) for x in conns["listeners"]] == \
        [(1, os.getpid(), os.getuid())]
    c.close()
    r = ask(sock, {"op": "attach", "queue": 2})
    assert r["ok"] is False and r["errno"] == errno.EINVAL and "queue 2" in r["error"]


def test_bad_requests(sup):
    s, sock, _ = sup
    r = ask(sock, {"op": "frobnicate"})
    assert r["ok"] is False and r["errno"] == errno.EOPNOTSUPP
    c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    c.settimeout(5)
    c.connect(sock)
    c.send(b"not json")
    reply, _ = proto.recv(c)
    assert reply["ok"] is False and reply["errno"] == errno.EINVAL
    c.close()
    assert ask(sock, {"op": "hello"})["ok"]      # still serving


def test_stop_replies_then_closes_after_cleanup(sup):
    s, sock, _ = sup
    c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    c.settimeout(10)
    c.connect(sock)
    proto.send(c, {"op": "stop"})
    reply, _ = proto.recv(c)
    assert reply == {"ok": True, "pid": os.getpid()}
    deadline = time.monotonic() + 5
    while getattr(s, "rc", None) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert s.rc == 0
    s.cleanup()
    assert c.recv(100) == b""                    # EOF once cleaned up
    assert s.steering is None
    assert not os.path.exists(sock) and not os.path.exists(sock + ".pid")
    assert all(not w.alive for w in s.workers)


def test_dead_worker_stops_the_supervisor(sup):
    s, sock, ws = sup
    ws.chans[0].shutdown(socket.SHUT_RDWR)       # worker q0's channel closes (it died)
    ws.procs[0].kill()
    deadline = time.monotonic() + 5
    while getattr(s, "rc", None) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert s.rc == 1


def test_ask_workers_times_out_and_skips_late_answers(idle_sup):
    s, sock, ws = idle_sup
    ws.hosts[1].call_soon(lambda w, now: time.sleep(0.5))      # worker 1 is busy
    out = s._ask_workers(proto.Stats(), "stats", timeout=0.2)
    assert "stats" in out[0] and "did not answer stats" in out[1]["error"]
    time.sleep(0.6)                               # the late answer is now queued
    out = s._ask_workers(proto.Conns(), "conns", timeout=2)
    assert "conns" in out[0] and "conns" in out[1]   # the late stats answer was skipped


def test_conns_reply_too_big_is_truncated(sup):
    s, sock, ws = sup
    with library(sock, pairs=120):          # 120 conns per worker (both ends): 2 x ~43 KB
        r = ask(sock, {"op": "conns"})
    assert r["ok"] and 0 < len(r["conns"]) < 240 and r["truncated"] == 240 - len(r["conns"])


def test_silent_client_is_dropped(sup, monkeypatch):
    s, sock, _ = sup
    monkeypatch.setattr(daemon, "CLIENT_TIMEOUT", 0.2)
    c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    c.settimeout(5)
    c.connect(sock)
    t0 = time.monotonic()
    assert c.recv(100) == b""
    assert 0.1 < time.monotonic() - t0 < 3
    c.close()
    assert ask(sock, {"op": "hello"})["ok"]


@pytest.mark.parametrize("kw, cause, fix", [
    ({"ifname": "x" * 16}, "not an interface name", "`ip link` lists"),
    ({"ports": [80, 80]}, "a port is given twice", "give each -p PORT once"),
    ({"socket": "rel.sock"}, "must be absolute", "--socket /run/fpd/fpd.sock"),
    ({"socket": "/" + "a" * 120}, "too long for a unix socket", "choose a shorter --socket"),
    ({"ports": [60001]}, "inside the local port range", "--local-ports"),
    ({"metrics": "127.0.0.1:0"}, "port must be 1..65535", "--metrics"),
    ({"log_level": "loud"}, "log level must be one of", "debug, info, warning, error"),
])
def test_start_errors_name_the_thing_the_cause_and_the_fix(kw, cause, fix):
    base = {"ifname": "eth0", "ports": [80], "socket": "/run/fpd/fpd.sock"}
    with pytest.raises(DaemonError) as ei:
        daemon.validate(DaemonConfig(**{**base, **kw}))
    assert cause in str(ei.value) and fix in str(ei.value), str(ei.value)


# --- the workers' user (--user) -------------------------------------------------------------
def test_worker_ids():
    auto = daemon.worker_ids(cfg(user="auto"))
    assert auto is not None and auto[2].split(":")[0] in ("fpd", "nobody")
    assert daemon.worker_ids(cfg(user="root")) is None
    assert daemon.worker_ids(cfg(user="0")) is None
    assert daemon.worker_ids(cfg(user="47011:47012")) == (47011, 47012, "47011:47012")
    assert daemon.worker_ids(cfg(user="nobody"))[:2] == (65534, 65534)
    with pytest.raises(DaemonError, match="no such user: no-such-user"):
        daemon.worker_ids(cfg(user="no-such-user"))
    with pytest.raises(DaemonError, match="no such group"):
        daemon.worker_ids(cfg(user="nobody:no-such-group"))
    with pytest.raises(DaemonError, match="give a user other than root"):
        daemon.worker_ids(cfg(user="root:65534"))


def test_check_drop_needs_setuid_and_setgid():
    c = cfg(user="47011")
    full = (1 << daemon.CAP_SETUID) | (1 << daemon.CAP_SETGID)
    assert daemon.check_drop(c, caps=full)[:2] == (47011, 47011)
    with pytest.raises(DaemonError, match="without CAP_SETUID and CAP_SETGID"):
        daemon.check_drop(c, caps=1 << daemon.CAP_NET_ADMIN)
    with pytest.raises(DaemonError, match="without CAP_SETUID .*--user root"):
        daemon.check_drop(c, caps=1 << daemon.CAP_SETGID)
    assert daemon.check_drop(cfg(user="root"), caps=0) is None
    assert daemon.check_drop(cfg(user="47011", app={"argv": ["x"]}), caps=0) is None
