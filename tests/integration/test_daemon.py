"""The daemon (fpd/daemon.py) and its CLI, run for real in the test bed's server namespace.

Every test leaves fpd0 without an XDP program, the namespace's reserved ports as they
were, and no socket/pid/state file (``fpdd.fpd_daemon`` checks and cleans up).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from fpd.bpf import STAT_NAMES, Steering, attached_prog_id
from fpd.daemon import pid_alive
from fpdd import RESERVED, fpd_daemon



def fpd_cli(bed, *args, user=None, timeout=30):
    """``python -m fpd ARGS`` in the server namespace (optionally as ``nobody``)."""
    argv = [sys.executable, "-m", "fpd", *map(str, args)]
    if user == "nobody":
        argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]
    return bed.run(bed.srv_ns, argv, check=False, timeout=timeout, cwd="/")


def reserved(bed) -> str:
    return bed.run(bed.srv_ns, ["cat", RESERVED]).stdout.strip()


def xdp_prog(bed) -> int:
    with bed.inside(bed.srv_ns):
        return attached_prog_id(bed.srv_if)


def wait_gone(pid, timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):               # gone, or a zombie
            return True
        time.sleep(0.05)
    return False


def files_of(sock):
    return [sock + s for s in ("", ".pid", ".state") if os.path.exists(sock + s)]


@pytest.fixture
def tmpsock():
    d = tempfile.mkdtemp(prefix="fpd-test-")
    try:
        yield os.path.join(d, "fpd.sock")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_start_status_stats_conns_stop(testbed):
    bed = testbed
    before = reserved(bed)
    with fpd_daemon(bed, [7, 80], local_ports=(61000, 61063)) as d:
        assert os.environ["FPD_SOCKET"] == d.socket
        st = d.status()
        assert st["ok"] and st["pid"] == d.pid and st["ifname"] == "fpd0"
        assert st["ports"] == [7, 80] and st["local_ports"] == [61000, 61063]
        assert st["mode"] in ("native", "generic") and st["prog_id"] == xdp_prog(bed)
        assert [w["alive"] for w in st["workers"]] == [True] * st["queues"]
        assert st["clients"] == 0 and st["connections"] == 0
        # files: socket 0660, pid, state
        mode = os.stat(d.socket).st_mode & 0o777
        assert mode == 0o660
        assert int(open(d.socket + ".pid").read()) == d.pid
        state = json.load(open(d.socket + ".state"))
        assert state["pid"] == d.pid and state["ifname"] == "fpd0"
        assert state["reserved_ports"] == before and state["local_ports"] == [61000, 61063]
        # reserved ports: in the namespace only
        assert "61000-61063" in reserved(bed)
        with open(RESERVED) as f:
            assert "61000-61063" not in f.read()
        stats = d.stats()
        assert set(STAT_NAMES) <= set(stats["xdp"])
        assert len(stats["workers"]) == st["queues"]
        w0 = stats["workers"][0]
        assert w0["queue"] == 0 and "xdp" in w0 and "stack" in w0, w0
        assert "redirect_failed" in stats["drops"] and "xsk_rx_dropped" in stats["drops"]
        conns = d.conns()
        assert conns["ok"] and conns["conns"] == [] and conns["listeners"] == []
        # the text forms
        text = d.cli("status").stdout
        assert "fpd running" in text and "fpd0" in text and "7,80" in text
        assert "xdp: seen=" in d.cli("stats").stdout
        assert d.cli("conns").stdout.split()[:2] == ["Q", "State"]
        p = d.cli("stop")
        assert f"fpd (pid {d.pid}) stopped" in p.stdout
        assert not d.alive()
        assert files_of(d.socket) == []
        assert xdp_prog(bed) == 0
        assert reserved(bed) == before
        log = d.log_text()
        assert "serving fpd0" in log and "gave back reserved ports" in log
    p = fpd_cli(bed, "status", "--socket", d.socket)
    assert p.returncode == 3 and "fpd is not running (no socket at" in p.stderr


def test_start_twice_is_refused_first_keeps_serving(testbed):
    bed = testbed
    with fpd_daemon(bed, [7]) as d:
        prog = xdp_prog(bed)
        res = reserved(bed)
        p = d.cli("start", "-i", "fpd0", "-p", "7", check=False)
        assert p.returncode == 1
        assert f"fpd is already running (pid {d.pid}) on {d.socket}" in p.stderr
        assert d.status()["pid"] == d.pid            # still serving, same files
        assert int(open(d.socket + ".pid").read()) == d.pid
        assert xdp_prog(bed) == prog and reserved(bed) == res


def test_second_daemon_on_same_interface_is_refused(testbed, tmpsock):
    bed = testbed
    with fpd_daemon(bed, [7]) as d:
        prog = xdp_prog(bed)
        res = reserved(bed)
        p = fpd_cli(bed, "start", "-i", "fpd0", "-p", "80", "--socket", tmpsock)
        assert p.returncode == 1
        assert (f"fpd0 already has an XDP program (id {prog}, name fpd_steer): another fpd? "
                f"use `fpd stop --force -i fpd0` if it is stale") in p.stderr
        assert files_of(tmpsock) == []
        assert xdp_prog(bed) == prog and reserved(bed) == res
        assert d.status()["ok"]


def test_foreign_xdp_program_is_left_alone(testbed, tmpsock):
    """An XDP program attached by someone else: start refuses and changes nothing."""
    bed = testbed
    before = reserved(bed)
    with bed.inside(bed.srv_ns):
        st = Steering(bed.srv_if, "generic")
    try:
        st.add_port(7)
        p = fpd_cli(bed, "start", "-i", "fpd0", "-p", "7", "--socket", tmpsock)
        assert p.returncode == 1
        assert f"already has an XDP program (id {st.prog_id}" in p.stderr
        assert xdp_prog(bed) == st.prog_id and st.ports() == [("0.0.0.0", 7)]
        assert files_of(tmpsock) == [] and reserved(bed) == before
    finally:
        st.close()
    assert xdp_prog(bed) == 0


def test_missing_interface(testbed, tmpsock):
    bed = testbed
    p = fpd_cli(bed, "start", "-i", "nosuch0", "-p", "7", "--socket", tmpsock)
    assert p.returncode == 1
    assert "no interface nosuch0 in this network namespace" in p.stderr
    assert files_of(tmpsock) == [] and not os.path.exists(tmpsock + ".log")
    # and in the foreground
    p = fpd_cli(bed, "start", "-i", "nosuch0", "-p", "7", "--socket", tmpsock, "--foreground")
    assert p.returncode == 1 and "no interface nosuch0" in p.stderr
    assert xdp_prog(bed) == 0


def test_too_many_queues(testbed, tmpsock):
    bed = testbed
    before = reserved(bed)
    p = fpd_cli(bed, "start", "-i", "fpd0", "-p", "7", "--queues", "4", "--socket", tmpsock)
    assert p.returncode == 1
    assert "fpd0 has 1 active queue; --queues 4 asks for more" in p.stderr
    assert files_of(tmpsock) == [] and xdp_prog(bed) == 0 and reserved(bed) == before


def test_not_root(testbed, tmpsock):
    bed = testbed
    p = fpd_cli(bed, "start", "-i", "fpd0", "-p", "7", "--socket", tmpsock, user="nobody")
    assert p.returncode != 0
    assert "fpd start needs root" in p.stderr, p.stderr
    assert files_of(tmpsock) == [] and xdp_prog(bed) == 0
    with fpd_daemon(bed, [7]) as d:
        p = fpd_cli(bed, "status", "--socket", d.socket, user="nobody")
        assert p.returncode == 1
        assert f"permission denied on {d.socket} (mode 0660, owner root:root)" in p.stderr
        p = fpd_cli(bed, "stop", "--socket", d.socket, user="nobody")
        assert p.returncode == 1 and "permission denied" in p.stderr
        p = fpd_cli(bed, "stop", "--force", "-i", "fpd0", "--socket", d.socket, user="nobody")
        assert p.returncode == 1 and "needs root" in p.stderr
        assert d.status()["ok"]


def test_group_may_use_the_socket(testbed):
    bed = testbed
    with fpd_daemon(bed, [7], extra=["--group", "nogroup"]) as d:
        st = os.stat(d.socket)
        assert st.st_gid == 65534 and st.st_mode & 0o777 == 0o660
        p = fpd_cli(bed, "status", "--json", "--socket", d.socket, user="nobody")
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["pid"] == d.pid


def test_sigkill_then_stop_force(testbed):
    bed = testbed
    before = reserved(bed)
    with fpd_daemon(bed, [7], local_ports="62000-62009") as d:
        workers = list(d.workers)
        assert workers
        os.kill(d.pid, signal.SIGKILL)
        assert wait_gone(d.pid)
        for w in workers:                       # PR_SET_PDEATHSIG
            assert wait_gone(w, 5), f"worker {w} outlived its supervisor"
        # what a SIGKILL leaves: the program, the files, the reservation
        prog = xdp_prog(bed)
        assert prog
        assert len(files_of(d.socket)) == 3
        assert "62000-62009" in reserved(bed)
        p = d.cli("status", check=False)
        assert p.returncode == 3 and "stale socket" in p.stderr
        p = d.cli("stop", "--force", "-i", "fpd0")
        out = p.stdout
        assert f"detached XDP program id {prog} (fpd_steer) from fpd0" in out
        assert "gave back reserved ports 62000-62009" in out
        assert f"removed {d.socket}" in out
        assert xdp_prog(bed) == 0 and files_of(d.socket) == [] and reserved(bed) == before
        p = d.cli("stop", "--force", "-i", "fpd0")
        assert "nothing to clean up" in p.stdout


def test_worker_killed_stops_everything(testbed):
    bed = testbed
    before = reserved(bed)
    with fpd_daemon(bed, [7]) as d:
        assert d.workers
        os.kill(d.workers[0], signal.SIGKILL)
        assert wait_gone(d.pid, 10), "supervisor did not stop after its worker died"
        assert files_of(d.socket) == []
        assert xdp_prog(bed) == 0 and reserved(bed) == before
        log = d.log_text()
        assert "worker q0" in log and "SIGKILL" in log and "exit code 1" in log


def test_sigterm_is_an_orderly_stop(testbed):
    bed = testbed
    before = reserved(bed)
    with fpd_daemon(bed, [7]) as d:
        workers = list(d.workers)
        os.kill(d.pid, signal.SIGTERM)
        assert wait_gone(d.pid, 10)
        for w in workers:
            assert wait_gone(w, 2)
        assert files_of(d.socket) == [] and xdp_prog(bed) == 0 and reserved(bed) == before
        log = d.log_text()
        assert "SIGTERM received" in log and "exit code 0" in log


def test_foreground_sigint(testbed, tmpsock):
    bed = testbed
    p = bed.popen(bed.srv_ns, [sys.executable, "-m", "fpd", "start", "-i", "fpd0", "-p", "7",
                               "--socket", tmpsock, "--foreground"],
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
                  start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(tmpsock + ".state") or not os.path.exists(tmpsock):
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline, "no socket after 20 s"
            time.sleep(0.05)
        deadline = time.monotonic() + 20
        while "serving fpd0" not in open(tmpsock + ".log").read():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # ^C: SIGINT to the whole process group (`ip netns exec` exec'd the supervisor,
        # the workers are its forks); workers ignore it, the supervisor stops them
        os.killpg(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=15)
        assert p.returncode == 0, err
        assert "serving fpd0" in err and "SIGINT received" in err
        assert "worker q0 (pid" in err and "exited with status 0" in err, err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
            fpd_cli(bed, "stop", "--force", "-i", "fpd0", "--socket", tmpsock)
    assert files_of(tmpsock) == [] and xdp_prog(bed) == 0


def test_worker_failing_at_start_up_leaves_nothing(testbed_factory, tmpsock):
    """MTU 4000: native XDP refuses (veth max 3506), generic attaches, the worker cannot
    fit a frame into a UMEM chunk -> the start fails cleanly."""
    bed = testbed_factory(mtu=4000)
    before = reserved(bed)
    p = fpd_cli(bed, "start", "-i", "fpd0", "-p", "7", "--socket", tmpsock)
    assert p.returncode == 1
    assert "worker q0 failed during start-up" in p.stderr and "MTU" in p.stderr, p.stderr
    assert files_of(tmpsock) == [] and xdp_prog(bed) == 0 and reserved(bed) == before


def test_two_queues(testbed_factory):
    bed = testbed_factory(queues=2)
    with fpd_daemon(bed, [7], local_ports=(60000, 60009)) as d:
        st = d.status()
        assert st["queues"] == 2 and [w["queue"] for w in st["workers"]] == [0, 1]
        assert all(w["alive"] for w in st["workers"])
        assert [w["queue"] for w in d.stats()["workers"]] == [0, 1]
    with fpd_daemon(bed, [7], queues=1) as d:
        assert d.status()["queues"] == 1


def test_client_attach_listen_conns_then_stop_resets(testbed):
    """The supervisor hands an attach to worker 0; conns/status see the client's listener
    and the kernel peer's connection; `fpd stop` resets it and hangs up on the client."""
    import socket

    from fpd import proto
    bed = testbed
    with fpd_daemon(bed, [7]) as d:
        hello = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        hello.settimeout(5)
        hello.connect(d.socket)
        h, _ = proto.request(hello, proto.Hello())
        assert h["ok"] and h["workers"] == 1 and h["pid"] == d.pid and h["ports"] == [7]
        assert hello.recv(10) == b""                     # closed after hello
        hello.close()
        c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        c.settimeout(5)
        c.connect(d.socket)
        fds = []
        peer = None
        try:
            r, fds = proto.request(c, proto.Attach(queue=0, slots=16, pid=os.getpid()),
                                   maxfds=3)
            assert r["ok"] and r["queue"] == 0 and len(fds) == 3, r
            r, _ = proto.request(c, proto.Listen(addr="0.0.0.0", port=7, backlog=8))
            assert r["ok"], r
            with pytest.raises(PermissionError):          # EACCES: not steered
                proto.request(c, proto.Listen(addr="0.0.0.0", port=81, backlog=8))
            peer = bed.socket(bed.peer_ns)
            peer.settimeout(5)
            peer.connect((bed.srv_ip, 7))
            deadline = time.monotonic() + 5
            while True:
                conns = d.conns()
                est = [x for x in conns["conns"] if x["state"] in ("ESTABLISHED", 4)]
                if est or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert len(conns["listeners"]) == 1
            li = conns["listeners"][0]
            assert li["owner_pid"] == os.getpid() and li["local"].endswith(":7")
            assert len(est) == 1 and est[0]["remote"].startswith(bed.peer_ip + ":")
            st = d.status()
            assert st["clients"] == 1 and st["connections"] >= 1
            table = d.cli("conns").stdout
            assert "LISTEN" in table and bed.peer_ip in table
            d.cli("stop")
            with pytest.raises((ConnectionResetError, ConnectionAbortedError)):
                data = peer.recv(10)
                if data == b"":
                    raise ConnectionAbortedError("FIN instead of RST")
            assert c.recv(100) == b""                    # the daemon hung up on the client
        finally:
            for fd in fds:
                os.close(fd)
            c.close()
            if peer is not None:
                peer.close()


def test_stop_force_on_a_live_daemon(testbed):
    bed = testbed
    before = reserved(bed)
    with fpd_daemon(bed, [7]) as d:
        p = d.cli("stop", "--force", "-i", "fpd0")
        assert f"stopped fpd (pid {d.pid}) with SIGTERM" in p.stdout, p.stdout
        assert wait_gone(d.pid, 5)
        assert files_of(d.socket) == [] and xdp_prog(bed) == 0 and reserved(bed) == before


def test_interface_gone_stops_the_daemon_cleanly(testbed):
    """The veth pair is deleted under a running daemon: it stops on its own (exit 1),
    removes its files and gives the reserved ports back."""
    bed = testbed
    before = reserved(bed)
    with fpd_daemon(bed, [7]) as d:
        assert d.status()["ok"]
        bed.run(bed.peer_ns, ["ip", "link", "del", "fpd1"])      # both ends go
        deadline = time.monotonic() + 10
        while pid_alive(d.pid):
            assert time.monotonic() < deadline, "the daemon did not notice"
            time.sleep(0.1)
        assert files_of(d.socket) == []
        assert reserved(bed) == before
        log = d.log_text()
        assert "interface fpd0 disappeared" in log, log[-2000:]
