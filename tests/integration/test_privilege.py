"""Least privilege (issue #14 item 5, docs/OPERATIONS.md "Least privilege").

- After set-up every worker runs as ``--user`` (default: ``fpd`` if that user exists,
  else ``nobody``) with no capability at all, ``no_new_privs`` set, and the data path
  still works (a stream through it, a connect out through the kernel's route): the
  data path needs no capability once the XSK is bound and the UMEM registered.
- ``--user root`` keeps root (and says so); a numeric uid without a passwd entry works;
  without CAP_SETUID the start refuses and says which capability is missing.
- A client that is neither root nor in the socket's group cannot reach the daemon; one
  in the group (``--group``, tested with numeric ids through setpriv, no user created)
  can listen and connect only on what the operator steered: its ports (EACCES
  otherwise), its address (EADDRNOTAVAIL), its local port range (EADDRNOTAVAIL).
"""

import json
import os
import sys
import textwrap

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from fpdd import fpd_daemon  # noqa: E402

pytestmark = pytest.mark.timeout(120)
UID, GID = 47011, 47012            # no passwd/group entries: numeric ids only


def proc_status(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.split()
    return out


def _stream_through(bed, port: int, n: int = 1_000_000) -> None:
    """A kernel client in the peer namespace, an fpd.client echo server in this process."""
    import threading

    from fpd import client
    srv = client.create_server(("", port))
    try:
        done = {}

        def serve():
            a, _ = srv.accept()
            with a:
                while True:
                    b = a.recv(65536)
                    if not b:
                        break
                    a.sendall(b)
            done["ok"] = True
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        k = bed.socket(bed.peer_ns)
        k.settimeout(20)
        k.connect((bed.srv_ip, port))
        data = os.urandom(n)
        got = bytearray()
        w = threading.Thread(target=lambda: (k.sendall(data), k.shutdown(1)), daemon=True)
        w.start()
        while True:
            b = k.recv(1 << 20)
            if not b:
                break
            got += b
        w.join(10)
        k.close()
        t.join(10)
        assert bytes(got) == data and done.get("ok")
    finally:
        srv.close()


def test_workers_run_as_nobody_without_capabilities_and_serve(testbed):
    from fpd import client
    bed = testbed
    with fpd_daemon(bed, [7], local_ports=(62100, 62109)) as d:
        st = d.status()
        assert st["worker_user"] == "nobody:nogroup"
        for w in st["workers"]:
            s = proc_status(w["pid"])
            assert s["Uid"] == ["65534"] * 4 and s["Gid"] == ["65534"] * 4, s
            assert s["Groups"] == ["65534"], s
            for cap in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
                assert int(s[cap][0], 16) == 0, (cap, s[cap])
            assert s["NoNewPrivs"] == ["1"]
        assert proc_status(d.pid)["Uid"][0] == "0"           # the supervisor keeps root
        assert "worker q0 runs as nobody:nogroup (uid 65534 gid 65534), no capabilities" \
            in d.log_text()
        client.set_default_socket(d.socket)
        try:
            _stream_through(bed, 7)                             # passive open, echo
            # active open to an address nobody has resolved yet: route + ARP
            other = "10.77.0.3"
            bed.run(bed.peer_ns, ["ip", "addr", "add", f"{other}/24", "dev", bed.peer_if])
            ks = bed.socket(bed.peer_ns)
            ks.bind((other, 5031))
            ks.listen(4)
            ks.settimeout(10)
            c = client.create_connection((other, 5031), timeout=10)
            k, _ = ks.accept()
            c.sendall(b"as nobody")
            assert k.recv(100) == b"as nobody"
            for x in (c, k, ks):
                x.close()
            # the one privileged step of the data path (ARP for a next hop it has no
            # entry for) was the supervisor's, on the worker's request (proto.Resolve)
            assert d.stats()["supervisor"].get("resolve_started", 0) >= 1
        finally:
            client.set_default_socket(None)
        # and stopping still works: the supervisor (root) stops its nobody workers
        workers = [w["pid"] for w in st["workers"]]
        d.cli("stop")
        assert not any(os.path.exists(f"/proc/{p}") and proc_status(p).get("State", ["Z"])[0]
                       != "Z" for p in workers)


def test_user_root_keeps_root_and_numeric_uid(testbed):
    bed = testbed
    with fpd_daemon(bed, [7], extra=["--user", "root"]) as d:
        assert d.status()["worker_user"] == "root"
        assert proc_status(d.workers[0])["Uid"][0] == "0"
        assert "runs as root (--user root)" in d.log_text()
    with fpd_daemon(bed, [7], extra=["--user", f"{UID}:{GID}"]) as d:
        assert d.status()["worker_user"] == f"{UID}:{GID}"
        s = proc_status(d.workers[0])
        assert s["Uid"] == [str(UID)] * 4 and s["Gid"] == [str(GID)] * 4
    p = bed.run(bed.srv_ns, [sys.executable, "-m", "fpd", "start", "-i", "fpd0", "-p", "7",
                             "--socket", "/tmp/fpd-priv-none.sock", "--user", "no-such-user"],
                check=False, timeout=30)
    assert p.returncode == 1 and "--user: no such user: no-such-user" in p.stderr, p.stderr


def test_start_without_cap_setuid_says_so(testbed, tmp_path):
    bed = testbed
    sock = str(tmp_path / "fpd.sock")
    r = bed.run(bed.srv_ns, ["setpriv", "--bounding-set=-all,+net_admin,+net_raw,+bpf,"
                             "+perfmon,+ipc_lock,+setgid", "--inh-caps=-all", sys.executable,
                             "-m", "fpd", "start", "-i", "fpd0", "-p", "7", "--socket", sock],
                check=False, timeout=60, cwd="/")
    assert r.returncode == 1, r.stdout
    assert "cannot drop root for nobody:nogroup without CAP_SETUID" in r.stderr, r.stderr
    assert "--user root" in r.stderr and not os.path.exists(sock)


CLIENT = textwrap.dedent('''
    import errno, json, sys
    from fpd import client
    out = {"uid": __import__("os").getuid()}
    def attempt(name, fn):
        try:
            fn()
            out[name] = "ok"
        except OSError as e:
            out[name] = errno.errorcode.get(e.errno, str(e.errno)) if e.errno else repr(e)
    def listen_close(port, addr=""):
        client.create_server((addr, port)).close()
    attempt("listen_steered", lambda: listen_close(7))
    attempt("listen_not_steered", lambda: listen_close(22))
    attempt("listen_other_addr", lambda: listen_close(7, "10.77.0.99"))
    def conn(bind):
        s = client.socket()
        try:
            s.bind(("", bind))
            s.settimeout(5)
            s.connect((sys.argv[1], 5032))
        finally:
            s.close()
    attempt("connect_port_in_range", lambda: conn(62110))
    attempt("connect_port_outside", lambda: conn(40000))
    print(json.dumps(out))
''')


def test_client_needs_the_group_and_stays_inside_what_is_steered(testbed):
    bed = testbed
    ks = bed.socket(bed.peer_ns)
    ks.bind((bed.peer_ip, 5032))
    ks.listen(8)
    try:
        with fpd_daemon(bed, [7], local_ports=(62110, 62119), extra=[
                "--group", str(GID), "--addr", bed.srv_ip]) as d:
            env = {"FPD_SOCKET": d.socket, "PATH": "/usr/bin:/bin",
                   "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.dirname(
                       os.path.abspath(__file__))))}

            def as_user(gid):
                argv = ["setpriv", f"--reuid={UID}", f"--regid={gid}", "--clear-groups",
                        "--inh-caps=-all", "--bounding-set=-all", sys.executable,
                        "-c", CLIENT, bed.peer_ip]
                p = bed.run(bed.srv_ns, argv, check=False, timeout=60, cwd="/", env=env)
                assert p.returncode == 0, p.stderr
                return json.loads(p.stdout.strip().splitlines()[-1])
            outsider = as_user(UID)                  # not in the socket's group
            assert outsider["uid"] == UID
            assert set(v for k, v in outsider.items() if k != "uid") == {"EACCES"}, outsider
            member = as_user(GID)
            assert member == {"uid": UID, "listen_steered": "ok",
                              "listen_not_steered": "EACCES",
                              "listen_other_addr": "EADDRNOTAVAIL",
                              "connect_port_in_range": "ok",
                              "connect_port_outside": "EADDRNOTAVAIL"}, member
            # the daemon saw who asked: conns/log carry the client's uid
            assert f"uid {UID}" in d.log_text()
    finally:
        ks.close()
