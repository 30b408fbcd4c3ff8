"""fpd doctor's checks: each failure names the thing, the cause and the fix."""

import resource
import socket

from fpd import daemon, doctor


def test_missing_capabilities_are_named_with_the_fix(monkeypatch):
    monkeypatch.setattr(doctor.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(daemon, "_capabilities", lambda: 1 << daemon.CAP_NET_ADMIN)
    c = doctor.privileges()
    assert c["level"] == "bad"
    assert "missing CAP_NET_RAW, CAP_BPF, CAP_PERFMON" in c["detail"]
    assert "sudo" in c["detail"] and "systemd/fpd.service" in c["detail"]


def test_memlock_too_small_without_cap_ipc_lock(monkeypatch):
    monkeypatch.setattr(daemon, "_capabilities", lambda: 0)
    monkeypatch.setattr(doctor.resource, "getrlimit", lambda r: (8 << 20, 8 << 20))
    c = doctor.memlock(queues=2)
    assert c["level"] == "bad" and "RLIMIT_MEMLOCK is 8 MiB" in c["detail"]
    assert "16 MiB for 2 queues" in c["detail"] and "LimitMEMLOCK=infinity" in c["detail"]
    monkeypatch.setattr(doctor.resource, "getrlimit",
                        lambda r: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert doctor.memlock(queues=2)["level"] == "ok"
    monkeypatch.setattr(daemon, "_capabilities", lambda: 1 << daemon.CAP_IPC_LOCK)
    monkeypatch.setattr(doctor.resource, "getrlimit", lambda r: (1 << 20, 1 << 20))
    assert doctor.memlock(queues=2)["level"] == "ok"


def test_local_port_range_in_use_is_bad_and_says_how_to_choose():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        c = doctor.local_ports(port, port)
        assert c["level"] == "bad" and f"ports {port}" in c["detail"]
        assert "--local-ports LO-HI" in c["detail"]
        w = doctor.listen_ports([port])[0]
        assert w["level"] == "warn" and "no longer get its traffic" in w["detail"]
    finally:
        s.close()


def test_missing_interface_is_bad():
    (c,) = doctor.interface("fpd-nope9")
    assert c["level"] == "bad" and "no interface fpd-nope9" in c["detail"]
    assert "ip link" in c["detail"]


def test_run_checks_never_raises_and_lists_levels():
    checks = doctor.run_checks(None, (61000, 61010), [61001])
    names = [c["check"] for c in checks]
    assert names[:5] == ["kernel", "privileges", "af_xdp", "libbpf", "bpf_object"]
    assert "port_61001" in names


def test_data_path_names_the_stop_19_switches_when_set(monkeypatch):
    for env in ("FPD_ACK_WND", "FPD_RX_DIRECT", "FPD_TX_BUDGET"):
        monkeypatch.delenv(env, raising=False)
    plain = doctor.data_path()["detail"]
    assert "FPD_ACK_WND" not in plain and "FPD_RX_DIRECT" not in plain
    assert "FPD_TX_BUDGET" not in plain
    monkeypatch.setenv("FPD_ACK_WND", "0")
    monkeypatch.setenv("FPD_RX_DIRECT", "1")
    monkeypatch.setenv("FPD_TX_BUDGET", "0")
    d = doctor.data_path()["detail"]
    assert "ACK runs stop at a window change (FPD_ACK_WND=0)" in d
    assert "direct receive delivery into client rings on (FPD_RX_DIRECT=1)" in d
    assert "TX budget 0 frames per sendto" in d
