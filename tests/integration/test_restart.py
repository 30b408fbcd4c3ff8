"""Restart after a crash (issue #14 item 4, docs/DAEMON.md "Crashes").

- The supervisor SIGKILLed: a plain ``fpd start`` finds the dead daemon's state (pid
  gone, XDP still attached, ports still reserved, socket/pid/state files), undoes it with
  a message saying what it did, and serves.
- One worker SIGKILLed on a 2-queue test bed: the whole daemon stops cleanly (exit 1,
  XDP detached, ports given back, files removed); the other worker's clients are told
  (EV_SHUTDOWN: their calls fail, never hang) and its connections are reset (the kernel
  peer sees RST), and a new ``fpd start`` serves at once.
"""

import json
import os
import signal
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from fpdd import RESERVED, fpd_daemon  # noqa: E402

from fpd import client  # noqa: E402
from fpd.bpf import attached_prog_id  # noqa: E402
from fpd.daemon import pid_alive, read_pid  # noqa: E402

pytestmark = pytest.mark.timeout(90)


def reserved(bed) -> str:
    return bed.run(bed.srv_ns, ["cat", RESERVED]).stdout.strip()


def xdp_prog(bed) -> int:
    with bed.inside(bed.srv_ns):
        return attached_prog_id(bed.srv_if)


def wait_gone(pid, timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def files_of(sock):
    return [sock + s for s in ("", ".pid", ".state") if os.path.exists(sock + s)]


def test_start_after_sigkill_cleans_up_and_serves(testbed):
    bed = testbed
    before = reserved(bed)
    with fpd_daemon(bed, [7], local_ports="62010-62019") as d:
        old_pid, workers = d.pid, list(d.workers)
        os.kill(d.pid, signal.SIGKILL)
        assert wait_gone(d.pid)
        for w in workers:
            assert wait_gone(w, 5), f"worker {w} outlived its supervisor"
        prog = xdp_prog(bed)
        assert prog and len(files_of(d.socket)) == 3 and "62010-62019" in reserved(bed)
        p = d.cli("start", "-i", "fpd0", "-p", "7", "--local-ports", "62010-62019",
                  "--log", d.log, check=False)
        assert p.returncode == 0, (p.stdout, p.stderr, d.log_text())
        d.pid = read_pid(d.socket + ".pid")
        d.workers = [w["pid"] for w in d.status()["workers"]]
        err = p.stderr
        assert f"a previous fpd (pid {old_pid}) on {d.socket} died without cleaning up: " \
               f"cleaned up" in err, err
        assert f"detached XDP program id {prog} (fpd_steer) from fpd0" in err, err
        assert "gave back reserved ports 62010-62019" in err, err
        assert "fpd serving fpd0" in p.stdout
        assert d.pid != old_pid and d.alive()
        st = d.status()
        assert st["prog_id"] == xdp_prog(bed) != 0 and all(w["alive"] for w in st["workers"])
        assert "62010-62019" in reserved(bed)
        log = d.log_text()
        assert "cleaning up after it" in log and "stale state: removed" in log
        # it serves: a connection through it
        client.set_default_socket(d.socket)
        try:
            srv = client.create_server(("", 7))
            try:
                k = bed.socket(bed.peer_ns)
                k.settimeout(10)
                k.connect((bed.srv_ip, 7))
                a, _ = srv.accept()
                k.sendall(b"after the crash")
                assert a.recv(100) == b"after the crash"
                a.close()
                k.close()
            finally:
                srv.close()
        finally:
            client.set_default_socket(None)
    assert reserved(bed) == before and xdp_prog(bed) == 0


def test_start_after_sigkill_with_a_cut_record(testbed):
    """A state file whose XDP step is cut short (prog id 0: the crash came while attaching)
    and a reservation already given back by hand: start cleans what is left and serves."""
    bed = testbed
    with fpd_daemon(bed, [7], local_ports="62020-62029") as d:
        os.kill(d.pid, signal.SIGKILL)
        assert wait_gone(d.pid)
        for w in d.workers:
            assert wait_gone(w, 5)
        st = json.load(open(d.socket + ".state"))
        for step in st["steps"]:
            if step["do"] == "xdp":
                step["prog_id"] = 0
        with open(d.socket + ".state", "w") as f:
            json.dump(st, f)
        orig = next(s["original"] for s in st["steps"] if s["do"] == "reserved_ports")
        bed.run(bed.srv_ns, ["sh", "-c", f"echo '{orig}' > {RESERVED}"])
        p = d.cli("start", "-i", "fpd0", "-p", "7", "--local-ports", "62020-62029",
                  "--log", d.log, check=False)
        assert p.returncode == 0, (p.stdout, p.stderr, d.log_text())
        d.pid = read_pid(d.socket + ".pid")
        d.workers = [w["pid"] for w in d.status()["workers"]]
        assert "died without cleaning up: cleaned up" in p.stderr
        assert "detached XDP program id" in p.stderr
        assert "gave back reserved ports" not in p.stderr      # nothing to give back
        assert d.status()["ok"]


def test_worker_sigkill_stops_the_daemon_cleanly_two_queues(testbed_factory):
    bed = testbed_factory(queues=2)
    before = reserved(bed)
    ks = bed.socket(bed.peer_ns)
    ks.bind((bed.peer_ip, 5011))
    ks.listen(16)
    ks.settimeout(20)
    try:
        with fpd_daemon(bed, [7], queues=2, local_ports=(62030, 62039)) as d:
            assert len(d.workers) == 2
            client.set_default_socket(d.socket)
            try:
                outs = [client.create_connection((bed.peer_ip, 5011), timeout=20)
                        for _ in range(4)]          # round-robin: two on each worker
                kouts = [ks.accept()[0] for _ in outs]
                by_port = {k.getpeername()[1]: k for k in kouts}
                peer_of = {id(c): by_port[c.getsockname()[1]] for c in outs}
                for c in outs:
                    c.sendall(b"x")
                    assert peer_of[id(c)].recv(10) == b"x"
                q0 = [c for c in outs if c._w.q == 0]
                q1 = [c for c in outs if c._w.q == 1]
                assert q0 and q1
                # a thread blocked in recv on a q0 connection must be woken, not hang
                box = {}

                def blocked():
                    try:
                        box["got"] = q0[0].recv(10)
                    except OSError as e:
                        box["err"] = e
                t = threading.Thread(target=blocked, daemon=True)
                t.start()
                time.sleep(0.2)
                victim = d.workers[1]
                os.kill(victim, signal.SIGKILL)
                assert wait_gone(d.pid, 15), "supervisor did not stop after a worker died"
                assert wait_gone(d.workers[0], 5)
                t.join(10)
                assert not t.is_alive(), "recv hung after the daemon stopped"
                assert "err" in box or box.get("got") == b"", box
                # the other worker's connections were reset: the kernel peer sees RST
                for c in q0:
                    k = peer_of[id(c)]
                    k.settimeout(5)
                    with pytest.raises(ConnectionResetError):
                        while k.recv(100):
                            pass
                for c in outs:
                    with pytest.raises(OSError):
                        c.sendall(b"more")
                    c.close()
                assert files_of(d.socket) == []
                assert xdp_prog(bed) == 0 and reserved(bed) == before
                log = d.log_text()
                assert f"worker q1 (pid {victim}) killed by SIGKILL: shutting down" in log
                assert "exit code 1" in log
                # and a new start serves at once (nothing stale)
                p = d.cli("start", "-i", "fpd0", "-p", "7", "--queues", "2",
                          "--local-ports", "62030-62039", "--log", d.log, check=False)
                assert p.returncode == 0, (p.stdout, p.stderr)
                assert "died without cleaning up" not in p.stderr
                d.pid = read_pid(d.socket + ".pid")
                d.workers = [w["pid"] for w in d.status()["workers"]]
                assert len(d.workers) == 2
            finally:
                client.set_default_socket(None)
                for k in list(locals().get("kouts", [])):
                    k.close()
    finally:
        ks.close()


def test_start_after_sigkill_without_a_state_file(testbed):
    """The state file lost (deleted by hand): the stale socket and pid file are taken
    over silently, but an fpd_steer program with no record behind it may be another
    fpd's, so the start refuses and points at `fpd stop --force`; after it, start serves."""
    bed = testbed
    with fpd_daemon(bed, [7], local_ports="62040-62049") as d:
        os.kill(d.pid, signal.SIGKILL)
        assert wait_gone(d.pid)
        for w in d.workers:
            assert wait_gone(w, 5)
        state = open(d.socket + ".state").read()
        os.unlink(d.socket + ".state")
        prog = xdp_prog(bed)
        argv = ["start", "-i", "fpd0", "-p", "7", "--local-ports", "62040-62049",
                "--log", d.log]
        p = d.cli(*argv, check=False)
        assert p.returncode == 1
        assert f"fpd0 already has an XDP program (id {prog}, name fpd_steer)" in p.stderr
        assert "fpd stop --force -i fpd0" in p.stderr
        assert xdp_prog(bed) == prog                       # left alone
        before = json.loads(state)["reserved_ports"]
        d.cli("stop", "--force", "-i", "fpd0")
        # without the record nobody knows what ip_local_reserved_ports held before: the
        # range stays reserved (docs/DAEMON.md "Crashes"); the operator gives it back
        assert "62040-62049" in reserved(bed)
        bed.run(bed.srv_ns, ["sh", "-c", f"echo '{before}' > {RESERVED}"])
        p = d.cli(*argv, check=False)
        assert p.returncode == 0, p.stderr
        assert "died without cleaning up" not in p.stderr
        d.pid = read_pid(d.socket + ".pid")
        d.workers = [w["pid"] for w in d.status()["workers"]]
