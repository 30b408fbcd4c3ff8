"""End to end (issue #4): the fpd daemon in the test bed's server namespace, applications
on fpd's socket API in the root namespace, the Linux kernel (and curl, wrk, socat) as the
peer in the peer namespace.

The applications are the programs of examples/, written for the standard ``socket``
module and moved onto fpd by changing their one ``import socket`` line to
``from fpd import client as socket`` (nothing else), run as processes of their own with
``FPD_SOCKET`` pointing at the daemon. Every process started here is stopped by its PID;
the daemon, XDP, the socket files and the namespaces (with their nftables rules) are
cleaned up by the fixtures even when a test fails.

What is shown (issue #4):
1. echo_server.py moved by its import: 50 MB both ways at once (SHA-256) while 100 idle
   kernel connections stay open and still echo afterwards; a socat pipe (native and
   generic XDP).
2. http_server.py moved by its import serves curl (200, SHA-256 of /bytes/N, keep-alive)
   and a bounded wrk run without errors; http_get.py moved by its import fetches a file
   from the kernel's http.server in the peer namespace (active open through fpd).
3. 5 % loss in the peer's output hook, then also in its prerouting hook: echo transfers
   complete with the right SHA-256 and ``fpd stats`` shows retransmissions.
4. Two queues: 48 kernel connections spread over both workers, all echo correctly.
5. Processes that die or misbehave: a SIGKILLed client's connections are reset at the
   peer and its port is free for a new process; a SIGKILLed daemon fails a client
   blocked in recv() (no hang) and ``fpd stop --force`` leaves fpd0 clean; a peer RST
   reaches the app as ConnectionResetError, as with the kernel's sockets; a client that
   scribbles over its ring headers loses only its own connection(s).

    .venv/bin/python -m pytest -q tests/integration/test_e2e.py      (≈ 25 s)
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import importlib.util
import json
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from e2e_helpers import (BLOCKED_RECV, CORRUPTER, TCP_CLOSE, App, Duplex, alive, apps, diag,
                         echo_roundtrip, EXAMPLES, file_sha, fpd_env, kconnect,
                         moved_to_fpd, nft_drops, nft_loss, python, recv_to_eof, sha,
                         sum_stack, tcp_state, write_script, brief_stats)
from fpdd import RESERVED, fpd_daemon
from kernelpeer import pattern

ECHO_PORT = 7007
HTTP_PORT = 8080
OTHER_PORT = 7100
KERNEL_HTTP_PORT = 8000
MB = 1000 * 1000
LISTENING = r"listening on \S+ \(fpd\.client\)"   # the moved program says it is on fpd


def start_echo(bed, d, tmp, running, name="echo", port=ECHO_PORT) -> App:
    """examples/echo_server.py, moved to fpd by its import line, in the root namespace."""
    path = moved_to_fpd("echo_server.py", tmp)
    app = App(name, [python(), path, "--host", "0.0.0.0", "--port", str(port)], tmp,
              env=fpd_env(d))
    running.append(app)
    app.wait_for(LISTENING, timeout=20)
    return app


def wait_until(pred, timeout: float, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


def http_example():
    spec = importlib.util.spec_from_file_location("e2e_http_example",
                                                  EXAMPLES / "http_server.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ======================================================================== 1: echo ====
@pytest.mark.timeout(150)
@pytest.mark.parametrize("mode", ["native", "generic"])
def test_echo_server_moved_by_import_50mb_duplex_with_100_idle_and_socat(testbed, tmp_path,
                                                                         mode):
    bed, tmp = testbed, str(tmp_path)
    size = 50 * MB
    with fpd_daemon(bed, [ECHO_PORT], mode=mode) as d, apps() as running:
        st = d.status()
        assert st.get("mode") == mode, f"asked for {mode} XDP, status says {st}"
        echo = start_echo(bed, d, tmp, running)
        idle = []
        try:
            for i in range(100):
                idle.append(kconnect(bed, ECHO_PORT, d=d, apps_=[echo]))
            for i, s in enumerate(idle):
                msg = f"idle connection {i} says hello\n".encode()
                back = echo_roundtrip(s, msg)
                assert back == msg, (f"idle connection {i}: echoed {back!r}\n"
                                     f"{diag(d, echo)}")
            listed = d.conns()
            owned = [c for c in listed["conns"] if c.get("owner_pid") == echo.pid]
            cut = listed.get("truncated", 0)          # a list longer than 64 KiB is cut
            assert len(owned) + cut >= 100, (
                f"fpd conns lists {len(owned)} connections of the echo server (pid "
                f"{echo.pid}), {cut} cut\n{diag(d, echo)}")

            # 50 MB both ways at once while the 100 stay open
            out = pattern(size, 21)
            big = kconnect(bed, ECHO_PORT, timeout=120, d=d, apps_=[echo])
            with contextlib.closing(big):
                x = Duplex(big, out, timeout=120).run()
            assert x.n == size and x.digest == sha(out) and x.eof, \
                f"50 MB echo: {x}\n{diag(d, echo)}"
            print(f"50 MB echoed both ways in {x.secs:.1f} s "
                  f"({2 * size / x.secs / 1e6:.1f} MB/s total)")

            # the idle connections are still alive and echo
            for i, s in enumerate(idle):
                msg = f"still here {i}\n".encode() * 10
                try:
                    back = echo_roundtrip(s, msg)
                except OSError as e:
                    back = repr(e)
                assert back == msg, (f"idle connection {i} after the 50 MB: {back!r}\n"
                                     f"{diag(d, echo)}")
        finally:
            for s in idle:
                s.close()

        # socat in the peer namespace: a file through the echo server and back
        data = pattern(4 * MB + 12345, 22)
        src, dst = os.path.join(tmp, "socat.in"), os.path.join(tmp, "socat.out")
        with open(src, "wb") as f:
            f.write(data)
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            r = subprocess.run(bed.cmd(bed.peer_ns, ["socat", "-t", "30", "-T", "30", "-",
                                                     f"TCP:{bed.srv_ip}:{ECHO_PORT}"]),
                               stdin=fin, stdout=fout, stderr=subprocess.PIPE, timeout=60)
        got = os.path.getsize(dst)
        assert r.returncode == 0 and got == len(data) and file_sha(dst) == sha(data), (
            f"socat exited {r.returncode} ({r.stderr.decode(errors='replace').strip()}), "
            f"{got} of {len(data)} bytes came back\n{diag(d, echo)}")
        assert echo.proc.poll() is None, f"the echo server died\n{echo.describe()}"
        stats = d.stats()
        assert sum_stack(stats, "passive_opens") >= 102, brief_stats(stats)


# ======================================================================== 2: HTTP ====
@pytest.mark.timeout(90)
def test_http_server_on_fpd_serves_curl_and_wrk(testbed, tmp_path):
    bed, tmp = testbed, str(tmp_path)
    n = 3 * MB + 7
    want = http_example().pattern_sha256(n)
    path = moved_to_fpd("http_server.py", tmp)
    with fpd_daemon(bed, [HTTP_PORT]) as d, apps() as running:
        srv = App("http", [python(), path, "--port", str(HTTP_PORT), "--idle-timeout", "20"],
                  tmp, env=fpd_env(d))
        running.append(srv)
        srv.wait_for(LISTENING, timeout=20)
        url = f"http://{bed.srv_ip}:{HTTP_PORT}"
        body = os.path.join(tmp, "body.bin")
        r = bed.run(bed.peer_ns, ["curl", "-sS", "--max-time", "30", "-o", body,
                                  "-w", "%{http_code} %{size_download}", f"{url}/bytes/{n}"],
                    check=False, timeout=40)
        assert r.returncode == 0 and r.stdout.split() == ["200", str(n)], (
            f"curl exited {r.returncode}: {r.stdout!r} {r.stderr.strip()!r}\n{diag(d, srv)}")
        assert file_sha(body) == want, \
            f"curl body ({os.path.getsize(body)} bytes) sha differs\n{diag(d, srv)}"
        # keep-alive: two requests on one connection
        r = bed.run(bed.peer_ns, ["curl", "-sS", "-v", "--max-time", "20", "-o", "/dev/null",
                                  "-o", "/dev/null", f"{url}/", f"{url}/bytes/100000"],
                    check=False, timeout=30)
        assert r.returncode == 0, f"curl keep-alive: {r.stderr[-2000:]}\n{diag(d, srv)}"
        assert re.search(r"Re-using existing connection|Reusing existing", r.stderr), \
            f"curl did not reuse the connection:\n{r.stderr[-2000:]}"

        w = bed.run(bed.peer_ns, ["wrk", "-t1", "-c8", "-d2s", "--timeout", "5s",
                                  f"{url}/bytes/1000"], check=False, timeout=30)
        out = w.stdout + w.stderr
        m = re.search(r"(\d+) requests in ([\d.]+)s", out)
        assert w.returncode == 0 and m and int(m.group(1)) > 100, \
            f"wrk exited {w.returncode}:\n{out}\n{diag(d, srv)}"
        assert "Socket errors" not in out and "Non-2xx" not in out, \
            f"wrk saw errors:\n{out}\n{diag(d, srv)}"
        print(f"wrk: {m.group(1)} requests in {m.group(2)} s")
        assert srv.proc.poll() is None, srv.describe()


@pytest.mark.timeout(60)
def test_fpd_client_fetches_from_kernel_http_server(testbed, tmp_path):
    bed, tmp = testbed, str(tmp_path)
    www = tmp_path / "www"
    www.mkdir()
    data = pattern(2 * MB + 333, 31)
    (www / "blob.bin").write_bytes(data)
    getter = moved_to_fpd("http_get.py", tmp)
    with apps() as running:
        k = App("kernel-http", [python(), "-m", "http.server", "--bind", bed.peer_ip,
                                "--directory", str(www), str(KERNEL_HTTP_PORT)],
                tmp, env=dict(os.environ, PYTHONUNBUFFERED="1"), bed=bed, ns=bed.peer_ns)
        running.append(k)
        k.wait_for(r"Serving HTTP", timeout=15)
        with fpd_daemon(bed, [HTTP_PORT]) as d:
            url = f"http://{bed.peer_ip}:{KERNEL_HTTP_PORT}/blob.bin"
            r = subprocess.run([python(), getter, "--json", "--timeout", "20", url],
                               env=fpd_env(d), capture_output=True, text=True, timeout=60)
            try:
                res = json.loads(r.stdout)
            except ValueError:
                res = None
            assert r.returncode == 0 and res, (f"http_get exited {r.returncode}: "
                                               f"{r.stdout!r} {r.stderr!r}\n{diag(d, k)}")
            assert res["status"] == 200 and res["bytes"] == len(data) \
                and res["sha256"] == sha(data) and res["socket_module"] == "fpd.client", \
                f"{res}\n{diag(d, k)}"
            stats = d.stats()
            assert sum_stack(stats, "active_opens") >= 1, brief_stats(stats)


# ======================================================================== 3: loss ====
@pytest.mark.timeout(150)
def test_5_percent_loss_each_way(testbed, tmp_path):
    """5 % of the peer's segments to the server dropped in its output hook (the kernel
    resends them as local congestion), then also 5 % of the server's segments dropped in
    the peer's prerouting hook (real loss on the way in: fpd must retransmit)."""
    bed, tmp = testbed, str(tmp_path)
    size = 3 * MB
    with fpd_daemon(bed, [ECHO_PORT]) as d, apps() as running:
        echo = start_echo(bed, d, tmp, running)
        nft_loss(bed, table="loss_out", hook="output",
                 match=f'oifname "{bed.peer_if}" tcp dport {ECHO_PORT}')
        out = pattern(size, 41)
        s = kconnect(bed, ECHO_PORT, timeout=90, d=d, apps_=[echo])
        with contextlib.closing(s):
            x = Duplex(s, out, timeout=90).run()
        assert x.n == size and x.digest == sha(out), \
            f"echo with loss on the peer's output: {x}\n{diag(d, echo)}"
        drops_out = nft_drops(bed, "loss_out")
        assert drops_out > 0, "the peer's output rule dropped nothing"
        before = d.stats()

        nft_loss(bed, table="loss_in", hook="prerouting",
                 match=f'iifname "{bed.peer_if}" tcp sport {ECHO_PORT}')
        out = pattern(size, 42)
        s = kconnect(bed, ECHO_PORT, timeout=90, d=d, apps_=[echo])
        with contextlib.closing(s):
            y = Duplex(s, out, timeout=90).run()
        assert y.n == size and y.digest == sha(out), \
            f"echo with loss both ways: {y}\n{diag(d, echo)}"
        drops_in = nft_drops(bed, "loss_in")
        assert drops_in > 0, "the peer's prerouting rule dropped nothing"
        after = d.stats()
        retrans = sum_stack(after, "retransmits") - sum_stack(before, "retransmits")
        assert retrans > 0, (f"{drops_in} of fpd's segments were dropped on the way to the "
                             f"peer, yet fpd stats show no retransmission:\n"
                             f"before {brief_stats(before)}\nafter {brief_stats(after)}")
        print(f"loss: peer output drops {drops_out}, peer input drops {drops_in}, "
              f"fpd retransmits {sum_stack(after, 'retransmits')} "
              f"(fast {sum_stack(after, 'fast_retransmits')}), {x.secs:.1f} s + {y.secs:.1f} s")


# ================================================================== 4: two queues ====
@pytest.mark.timeout(90)
def test_two_queues_share_48_connections(testbed_factory, tmp_path):
    bed, tmp = testbed_factory(queues=2), str(tmp_path)
    nconn = 48
    with fpd_daemon(bed, [ECHO_PORT], queues=2) as d, apps() as running:
        st = d.status()
        assert len(st["workers"]) == 2, f"status: {st}"
        echo = start_echo(bed, d, tmp, running)
        socks = [kconnect(bed, ECHO_PORT, timeout=30, d=d, apps_=[echo])
                 for _ in range(nconn)]
        try:
            conns = d.conns()["conns"]
            queues = sorted(c.get("queue") for c in conns if c.get("owner_pid") == echo.pid)
            datas = [pattern(150_000 + i, 100 + i) for i in range(nconn)]
            with concurrent.futures.ThreadPoolExecutor(nconn) as ex:
                results = list(ex.map(lambda sd: Duplex(sd[0], sd[1], timeout=40).run(),
                                      zip(socks, datas)))
        finally:
            for s in socks:
                s.close()
        bad = [(i, str(x)) for i, (x, data) in enumerate(zip(results, datas))
               if x.n != len(data) or x.digest != sha(data)]
        stats = d.stats()
        assert not bad, f"{len(bad)} of {nconn} connections failed: {bad[:5]}\n{diag(d, echo)}"
        per = [w.get("stack", {}).get("passive_opens", 0) for w in stats["workers"]]
        assert len(per) == 2 and all(per) and sum(per) >= nconn, \
            f"accepts per worker {per} (queues in fpd conns: {queues})\n{brief_stats(stats)}"
        # the one application process is a client of both workers
        clients = [w.get("clients", 0) for w in stats["workers"]]
        assert all(clients), f"clients per worker {clients}\n{brief_stats(stats)}"
        print(f"accepts per worker: {per}, connections per queue in fpd conns: "
              f"{[queues.count(q) for q in (0, 1)]}")


# ========================================================== 5: processes that die ====
@pytest.mark.timeout(90)
def test_client_sigkill_resets_its_connections_and_port_is_reusable(testbed, tmp_path):
    bed, tmp = testbed, str(tmp_path)
    with fpd_daemon(bed, [ECHO_PORT]) as d, apps() as running:
        echo = start_echo(bed, d, tmp, running)
        socks = [kconnect(bed, ECHO_PORT, timeout=30, d=d, apps_=[echo]) for _ in range(3)]
        transfers = [Duplex(s, pattern(40 * MB, 50 + i), timeout=30, shut=False)
                     for i, s in enumerate(socks)]
        threads = [threading.Thread(target=x.run, daemon=True) for x in transfers]
        try:
            for t in threads:
                t.start()
            # mid-transfer: every connection has echoed something, none has finished
            ok = wait_until(lambda: all(x.n > 200_000 for x in transfers), 20)
            assert ok, f"transfers did not get going: {[str(x) for x in transfers]}\n" \
                       f"{diag(d, echo)}"
            t_kill = time.monotonic()
            echo.kill(signal.SIGKILL)
            for t in threads:
                t.join(max(0.1, t_kill + 2.5 - time.monotonic()))
            took = time.monotonic() - t_kill
            states = [tcp_state(s) for s in socks]
            report = (f"{took:.2f} s after SIGKILL: "
                      + "; ".join(f"[{i}] state {st} {x}"
                                  for i, (st, x) in enumerate(zip(states, transfers))))
            assert not any(t.is_alive() for t in threads), \
                f"kernel side still transferring: {report}\n{diag(d, echo)}"
            # an RST (not a FIN) ended them: the kernel socket is CLOSED, not CLOSE_WAIT,
            # and one of its calls saw ECONNRESET
            assert all(st == TCP_CLOSE for st in states), f"not reset: {report}"
            for x in transfers:
                errs = [e for e in (x.error, x.send_error) if e is not None]
                assert any(isinstance(e, ConnectionResetError) or
                           getattr(e, "errno", None) in (errno.ECONNRESET, errno.EPIPE)
                           for e in errs), f"no reset error seen: {report}"
            print(f"reset seen within {took:.2f} s")
        finally:
            for s in socks:
                s.close()

        def leftovers():
            c = d.conns()
            return [x for x in c["conns"] + c["listeners"] if x.get("owner_pid") == echo.pid]
        assert wait_until(lambda: not leftovers(), 5), \
            f"the dead client's connections/listeners are still listed: {leftovers()}"
        # a fresh process gets the same port and works
        echo2 = start_echo(bed, d, tmp, running, name="echo2")
        s = kconnect(bed, ECHO_PORT, d=d, apps_=[echo2])
        with contextlib.closing(s):
            data = pattern(300_000, 59)
            x = Duplex(s, data, timeout=20).run()
        assert x.n == len(data) and x.digest == sha(data), f"new client: {x}\n{diag(d, echo2)}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("victims", ["supervisor", "every_daemon_process"])
def test_daemon_sigkill_fails_blocked_recv_and_stop_force_cleans_up(testbed, tmp_path,
                                                                     victims):
    """SIGKILL of the supervisor (its workers follow: channel EOF / PDEATHSIG), or of
    every daemon process at once (no worker gets to say goodbye: the client has only its
    control connection's hang-up). A client blocked in recv() must get an error within
    ~5 s; ``fpd stop --force -i fpd0`` must leave the interface clean."""
    bed, tmp = testbed, str(tmp_path)
    from fpd.bpf import attached_prog_id
    reserved_before = bed.run(bed.srv_ns, ["cat", RESERVED]).stdout.strip()
    script = write_script(tmp, "blocked_recv.py", BLOCKED_RECV)
    with fpd_daemon(bed, [ECHO_PORT]) as d, apps() as running:
        cl = App("blocked", [python(), script, str(ECHO_PORT)], tmp, env=fpd_env(d))
        running.append(cl)
        cl.wait_for(r"^listening", 20)
        s = kconnect(bed, ECHO_PORT, d=d, apps_=[cl])
        with contextlib.closing(s):
            cl.wait_for(r"^accepted", 10)
            time.sleep(0.5)                       # now it sleeps in recv()
            assert cl.proc.poll() is None, cl.describe()
            workers = [w["pid"] for w in d.status()["workers"]]
            pids = [d.pid] + workers
            log_before = d.log_text()
            t_kill = time.monotonic()
            for pid in (pids if victims != "supervisor" else [d.pid]):
                os.kill(pid, signal.SIGKILL)
            try:
                rc = cl.proc.wait(6)
            except subprocess.TimeoutExpired:
                rc = None
            took = time.monotonic() - t_kill
        gone = wait_until(lambda: not any(alive(p) for p in pids), 3)
        left = [p for p in pids if alive(p)]
        p = d.cli("stop", "--force", "-i", bed.srv_if, check=False)
        with bed.inside(bed.srv_ns):
            prog = attached_prog_id(bed.srv_if)
        files = [x for x in ("", ".pid", ".state") if os.path.exists(d.socket + x)]
        reserved = bed.run(bed.srv_ns, ["cat", RESERVED]).stdout.strip()
        after_kill = d.log_text()[len(log_before):]
        # XDP gone for real: the server namespace's kernel answers the port itself (RST,
        # no listener there) instead of the SYN vanishing into a dead AF_XDP socket
        try:
            kconnect(bed, ECHO_PORT, timeout=3).close()
            port_now = "connected (?)"
        except ConnectionRefusedError:
            port_now = "refused"
        except OSError as e:
            port_now = repr(e)

        problems = []
        if rc is None:
            problems.append(f"the client still blocks in recv() {took:.1f} s after the "
                            f"SIGKILL (a hang)")
        elif rc != 0 or "ERROR" not in cl.output() or took > 5.5:
            problems.append(f"the client's recv() did not fail with an OSError (exit {rc}, "
                            f"{took:.2f} s after the SIGKILL; DAEMON.md: every call fails "
                            f"with ConnectionResetError/OSError naming the daemon)")
        if not gone:
            problems.append(f"daemon processes {left} outlived the SIGKILL")
        if p.returncode != 0:
            problems.append(f"fpd stop --force exited {p.returncode}: {p.stdout} {p.stderr}")
        if port_now != "refused":
            problems.append(f"a kernel connection to port {ECHO_PORT} after stop --force: "
                            f"{port_now} (expected refused by the server's kernel)")
        if prog or files or reserved != reserved_before:
            problems.append(f"after stop --force: XDP prog id {prog}, files left {files}, "
                            f"reserved ports {reserved!r} (were {reserved_before!r})")
        assert not problems, ("\n".join(problems) + f"\n{cl.describe()}\n"
                              f"daemon log after the kill:\n{after_kill[-2000:]}")
        print(f"client: {cl.output().splitlines()[-1]} ({took:.2f} s after SIGKILL)")


@pytest.mark.timeout(40)
def test_peer_reset_reaches_the_app_as_connection_reset(testbed, tmp_path):
    """The kernel peer closes with SO_LINGER 0 (RST) while the app blocks in recv():
    the standard socket module raises ConnectionResetError; fpd.client, a drop-in for
    it, must too (an EOF would pass a truncated stream off as complete)."""
    bed, tmp = testbed, str(tmp_path)
    script = write_script(tmp, "blocked_recv.py", BLOCKED_RECV)

    def reset_while_blocked(app, port):
        app.wait_for(r"^listening", 20)
        s = kconnect(bed, port)
        app.wait_for(r"^accepted", 10)
        time.sleep(0.3)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            app.proc.wait(5)
        return app.output().splitlines()[-1]

    with apps() as running:
        ref = App("kernel-ref", [python(), script, str(OTHER_PORT), "kernel"], tmp,
                  env=dict(os.environ, PYTHONUNBUFFERED="1"), bed=bed, ns=bed.srv_ns)
        running.append(ref)
        kernel_says = reset_while_blocked(ref, OTHER_PORT)
    assert kernel_says.startswith("ERROR ConnectionResetError"), kernel_says
    with fpd_daemon(bed, [ECHO_PORT]) as d, apps() as running:
        cl = App("blocked", [python(), script, str(ECHO_PORT)], tmp, env=fpd_env(d))
        running.append(cl)
        fpd_says = reset_while_blocked(cl, ECHO_PORT)
        assert fpd_says.startswith("ERROR ConnectionResetError"), (
            f"peer RST while blocked in recv(): the kernel's socket says {kernel_says!r}, "
            f"fpd.client says {fpd_says!r}\n{diag(d, cl)}")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ring", ["tx", "commands"])
def test_client_corrupting_its_ring_loses_only_its_own_connection(testbed, tmp_path, ring):
    """A client scribbles over its own region: a slot's TX ring header ("tx": DAEMON.md
    says that connection is reset, the client's others live on) or its command ring
    header ("commands": the client is dropped, all its connections reset). Either way
    another client's connection keeps working."""
    bed, tmp = testbed, str(tmp_path)
    script = write_script(tmp, "corrupter.py", CORRUPTER)
    with fpd_daemon(bed, [ECHO_PORT, OTHER_PORT]) as d, apps() as running:
        echo = start_echo(bed, d, tmp, running)
        bad = App("corrupter", [python(), script, str(OTHER_PORT), ring], tmp,
                  env=fpd_env(d), stdin=subprocess.PIPE)
        running.append(bad)
        bad.wait_for(r"^listening", 20)
        good = kconnect(bed, ECHO_PORT, timeout=20, d=d, apps_=[echo])
        v1 = kconnect(bed, OTHER_PORT, d=d, apps_=[bad])      # the victim slot
        v2 = kconnect(bed, OTHER_PORT, d=d, apps_=[bad])      # the corrupter's other one
        with contextlib.closing(good), contextlib.closing(v1), contextlib.closing(v2):
            assert echo_roundtrip(good, b"before\n") == b"before\n", diag(d, echo)
            for v in (v1, v2):
                assert echo_roundtrip(v, b"hello\n") == b"hello\n", diag(d, bad)
            bad.wait_for(r"^ready", 10)
            bad.send_line("corrupt")
            bad.wait_for(r"^corrupted", 10)
            time.sleep(0.1)
            assert "FAILED" not in bad.output(), \
                f"the corrupter could not find its slot\n{bad.describe()}"
            if ring == "commands":
                with contextlib.suppress(OSError):   # (it may have been reset already)
                    v1.sendall(b"wake up\n")        # any segment makes the worker turn
            # the victim connection is reset by the daemon (EPROTO for the app, RST out)
            v1.settimeout(5)
            t0 = time.monotonic()
            try:
                got = v1.recv(100)
                outcome = f"recv returned {got!r}"
            except OSError as e:
                outcome = repr(e)
            took = time.monotonic() - t0
            state = tcp_state(v1)
            assert state == TCP_CLOSE, (f"victim connection at the kernel: {outcome} after "
                                        f"{took:.1f} s, state {state}\n{diag(d, bad)}")
            # the other client's connection, opened before, keeps working
            data = pattern(1 * MB, 61)
            back = echo_roundtrip(good, data, timeout=20)
            assert back == data, (f"the well-behaved client's connection after the "
                                  f"corruption: {len(back)} of {len(data)} bytes echoed\n"
                                  f"{diag(d, echo, bad)}")
            s = kconnect(bed, ECHO_PORT, d=d, apps_=[echo])
            with contextlib.closing(s):
                assert echo_roundtrip(s, b"new\n") == b"new\n", diag(d, echo)
            v2.settimeout(10)
            try:
                v2.sendall(b"still there\n")
                v2.shutdown(socket.SHUT_WR)
                back2 = recv_to_eof(v2)
            except OSError as e:
                back2 = repr(e)
            if ring == "tx":
                with contextlib.suppress(AssertionError):
                    bad.wait_for(r"^done", 10)
                # the corrupter's own call on that socket fails (slot CLOSED, EPROTO)
                assert re.search(r"^victim ERROR \w+ errno=71 ", bad.output(), re.M), (
                    f"the corrupter's recv() on the reset slot should fail with EPROTO\n"
                    f"{bad.describe()}")
                # DAEMON.md: a corrupt slot costs that connection only -- the
                # corrupter's other connection still echoes
                assert back2 == b"still there\n", (f"the corrupter's other connection: "
                                                   f"{back2!r}\n{diag(d, bad)}")
            else:
                # a corrupt command ring: the client is dropped, all its connections reset
                assert tcp_state(v2) == TCP_CLOSE and back2 != b"still there\n", (
                    f"the corrupter's other connection after a corrupt command ring: "
                    f"{back2!r}, state {tcp_state(v2)}\n{diag(d, bad)}")
            assert echo.proc.poll() is None, echo.describe()
            stats = d.stats()
            if ring == "tx":
                assert sum_stack(stats, "shm_corrupt", "service") >= 1, brief_stats(stats)
            else:
                assert sum_stack(stats, "clients_dropped", "service") >= 1, \
                    brief_stats(stats)
                assert not [c for c in d.conns()["conns"] if c.get("owner_pid") == bad.pid]
            print(f"victim: {outcome} after {took:.2f} s; corrupter: "
                  f"{[l for l in bad.output().splitlines() if 'victim' in l]}")
