"""Operators' interfaces of a real daemon: Prometheus metrics (--metrics), systemd
readiness (NOTIFY_SOCKET), journal-style log lines (JOURNAL_STREAM), --log-level."""

import os
import signal
import socket
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fpdd import fpd_daemon
from test_capture import PORT, _exchange, _stop, _wait_line

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _scrape(bed, port=9477, path="/metrics"):
    s = bed.socket(bed.srv_ns)
    s.settimeout(10)
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode(), body.decode()


def _samples(body):
    out = {}
    for fam in text_string_to_metric_families(body):
        for smp in fam.samples:
            out[(smp.name, tuple(sorted(smp.labels.items())))] = smp.value
    return out


def test_metrics_expose_xdp_worker_listener_and_connection_counters(testbed):
    bed = testbed
    with fpd_daemon(bed, [PORT], extra=("--metrics", "127.0.0.1:9477")) as d:
        srv = bed.popen(bed.srv_ns, [sys.executable, os.path.join(
            ROOT, "fpd", "examples", "echo_server.py"), "--fpd", "--port", str(PORT)],
            env=d.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            _wait_line(srv.stdout, "listening")
            _exchange(bed, b"metrics please" * 100)
            head, body = _scrape(bed)
            assert head.startswith("HTTP/1.0 200") and "text/plain" in head, head
            m = _samples(body)
            assert m[("fpd_up", ())] == 1
            assert m[("fpd_xdp_packets_total", (("counter", "steered"),))] >= 4
            assert m[("fpd_worker_up", (("queue", "0"),))] == 1
            assert m[("fpd_worker_rx_frames", (("queue", "0"),))] >= 4
            assert ("fpd_worker_xdp_rx_dropped", (("queue", "0"),)) in m
            assert ("fpd_worker_stack_retransmits", (("queue", "0"),)) in m
            li = [k for k in m if k[0] == "fpd_listener_info"]
            assert len(li) == 1 and dict(li[0][1])["local"].endswith(f":{PORT}")
            assert dict(li[0][1])["owner_pid"] == str(srv.pid) or dict(li[0][1])["owner_pid"]
            info = [k for k in m if k[0] == "fpd_info"]
            assert dict(info[0][1])["ifname"] == "fpd0"
            # the stats answer the same numbers (steered only grows)
            st = d.stats()
            assert st["xdp"]["steered"] >= m[("fpd_xdp_packets_total", (("counter", "steered"),))]
            head, _ = _scrape(bed, path="/nope")
            assert head.startswith("HTTP/1.0 404")
            assert "metrics on http://127.0.0.1:9477/metrics" in d.log_text()
        finally:
            _stop(srv, signal.SIGTERM)
            srv.stdout.close()
    # the daemon is gone: so is the endpoint
    with pytest.raises(OSError):
        _scrape(bed)


def test_metrics_address_errors_name_the_cause_and_the_fix(testbed):
    bed = testbed
    r = bed.run(bed.srv_ns, [sys.executable, "-m", "fpd", "start", "-i", "fpd0", "-p", "7",
                             "--socket", "/tmp/fpd-ops-unused.sock", "--metrics", "9477"],
                check=False)
    assert r.returncode == 1 and "expected HOST:PORT, e.g. 127.0.0.1:9477" in r.stderr, r.stderr
    from fpdd import DaemonError
    with pytest.raises(DaemonError) as ei:
        with fpd_daemon(bed, [7], extra=("--metrics", "192.0.2.1:9477")):
            pass
    text = str(ei.value)
    assert "cannot serve metrics on 192.0.2.1:9477" in text and "ip -4 addr" in text, text


def _foreground(bed, sock, env, extra=(), stderr=subprocess.PIPE):
    return bed.popen(bed.srv_ns, [sys.executable, "-m", "fpd", "start", "-f", "-i", "fpd0",
                                  "-p", "7", "--socket", sock, *extra],
                     stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd="/",
                     start_new_session=True)


def _cleanup(bed, p, sock):
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if any(os.path.exists(sock + s) for s in ("", ".pid", ".state")):
        bed.run(bed.srv_ns, [sys.executable, "-m", "fpd", "stop", "--force", "-i", "fpd0",
                             "--socket", sock], check=False)


def test_systemd_readiness_only_once_serving_and_journal_log_lines(testbed, tmp_path):
    """Type=notify: READY=1 arrives once fpd serves (status answers, XDP attached at that
    moment), STOPPING=1 on SIGTERM; stderr that is the journal gets <N>-prefixed lines."""
    bed = testbed
    nsock = str(tmp_path / "notify")
    n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    n.bind(nsock)
    n.settimeout(40)
    sock = str(tmp_path / "fpd.sock")
    errf = open(tmp_path / "stderr", "w+b")
    st = os.fstat(errf.fileno())
    env = dict(os.environ, NOTIFY_SOCKET=nsock, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
    p = _foreground(bed, sock, env, stderr=errf)
    try:
        msg = n.recv(4096).decode()
        # at the moment of READY=1: the control socket answers and XDP is attached
        r = bed.run(bed.srv_ns, [sys.executable, "-m", "fpd", "status", "--json", "--socket",
                                 sock], check=False)
        assert r.returncode == 0 and '"ok": true' in r.stdout, r.stderr
        assert msg.startswith("READY=1\n") and f"MAINPID={p.pid}" in msg, msg
        assert "STATUS=serving fpd0 ports 7" in msg
        from fpd.bpf import attached_prog_id
        with bed.inside(bed.srv_ns):
            assert attached_prog_id("fpd0")
        os.killpg(p.pid, signal.SIGTERM)
        assert n.recv(4096) == b"STOPPING=1"
        assert p.wait(20) == 0
    finally:
        _cleanup(bed, p, sock)
        n.close()
    errf.seek(0)
    lines = errf.read().decode().splitlines()
    errf.close()
    assert lines and all(l.startswith(("<6>", "<4>", "<3>", "<7>")) for l in lines), lines
    assert any(l.startswith("<6>fpd.daemon: serving fpd0") for l in lines), lines


def test_failed_start_never_says_ready(testbed, tmp_path):
    bed = testbed
    nsock = str(tmp_path / "notify")
    n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    n.bind(nsock)
    n.settimeout(0.5)
    sock = str(tmp_path / "fpd.sock")
    p = _foreground(bed, sock, dict(os.environ, NOTIFY_SOCKET=nsock), extra=("--queues", "4"))
    try:
        _, err = p.communicate(timeout=30)
        assert p.returncode == 1 and b"--queues 4 asks for more" in err, err
        msgs = []
        try:
            while True:
                msgs.append(n.recv(4096).decode())
        except socket.timeout:
            pass
        assert not any("READY=1" in m for m in msgs), msgs
    finally:
        _cleanup(bed, p, sock)
        n.close()


def test_log_level_and_one_line_per_event(testbed, tmp_path):
    bed = testbed
    sock = str(tmp_path / "fpd.sock")
    nsock = str(tmp_path / "notify")
    n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    n.bind(nsock)
    n.settimeout(60)
    p = _foreground(bed, sock, dict(os.environ, NOTIFY_SOCKET=nsock),
                    extra=("--log-level", "warning"))
    try:
        assert n.recv(4096).startswith(b"READY=1")      # serving: now stop it
        os.killpg(p.pid, signal.SIGTERM)
        _, err = p.communicate(timeout=30)
    finally:
        _cleanup(bed, p, sock)
        n.close()
    assert p.returncode == 0, err
    assert b"INFO" not in err and b"serving" not in err, err     # info is below warning
    with open(sock + ".log") as f:
        log = f.read()
    assert "INFO" not in log
    assert all(l.startswith("20") for l in log.splitlines())    # no continuation lines
