"""The shipped unit file (systemd/fpd.service): it verifies, it is Type=notify with
`fpd stop` and a RuntimeDirectory, and fpd serves with only its CapabilityBoundingSet
(the readiness itself: tests/integration/test_ops.py)."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "fpd.service"


def _unit() -> dict:
    out = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_unit_file_is_notify_with_fpd_stop_and_a_runtime_directory():
    u = _unit()
    assert u["Type"] == ["notify"] and u["NotifyAccess"] == ["main"]
    assert "start --foreground" in u["ExecStart"][0]
    assert "--socket /run/fpd/fpd.sock" in u["ExecStart"][0]
    assert u["ExecStop"][0].endswith("fpd stop --socket /run/fpd/fpd.sock")
    assert u["RuntimeDirectory"] == ["fpd"]
    caps = set(u["CapabilityBoundingSet"][0].split())
    readme = (ROOT / "README.md").read_text()
    for c in ("CAP_NET_ADMIN", "CAP_BPF", "CAP_PERFMON", "CAP_NET_RAW", "CAP_IPC_LOCK"):
        assert c in caps and c in readme
    assert "CAP_SYS_ADMIN" not in caps


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_unit_file_verifies(tmp_path):
    fpd = pathlib.Path(sys.executable).parent / "fpd"
    text = UNIT.read_text().replace("/usr/local/bin/fpd", str(fpd))
    unit = tmp_path / "fpd.service"
    unit.write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                       text=True, timeout=60)
    problems = [l for l in (r.stdout + r.stderr).splitlines()
                if "fpd.service" in l and "Failed to" not in l]   # no systemd running here
    assert problems == [], r.stdout + r.stderr


@pytest.mark.root
def test_fpd_serves_with_only_the_units_capabilities(testbed, tmp_path):
    bed = testbed
    caps = _unit()["CapabilityBoundingSet"][0].split()
    spec = "-all," + ",".join("+" + c[4:].lower() for c in caps)
    sock = str(tmp_path / "fpd.sock")
    os.chmod(tmp_path, 0o755)
    setpriv = ["setpriv", f"--bounding-set={spec}", f"--inh-caps=-all"]
    fpd = [sys.executable, "-m", "fpd"]
    r = bed.run(bed.srv_ns, [*setpriv, *fpd, "start", "-i", "fpd0", "-p", "7", "--socket",
                             sock], check=False, timeout=60, cwd="/")
    try:
        assert r.returncode == 0, r.stderr + r.stdout
        pid = int(open(sock + ".pid").read().split()[0])
        with open(f"/proc/{pid}/status") as f:
            bnd = int(next(l for l in f if l.startswith("CapBnd:")).split()[1], 16)
        assert not bnd >> 21 & 1                          # CAP_SYS_ADMIN really dropped
        st = bed.run(bed.srv_ns, [*fpd, "status", "--socket", sock], check=False)
        assert st.returncode == 0 and "worker q0" in st.stdout and "alive" in st.stdout, st
        peer = bed.socket(bed.peer_ns)
        peer.settimeout(5)
        try:                                       # steered: nobody listens, fpd resets
            with pytest.raises(ConnectionRefusedError):
                peer.connect((bed.srv_ip, 7))
        finally:
            peer.close()
    finally:
        bed.run(bed.srv_ns, [*fpd, "stop", "--socket", sock], check=False, timeout=30)
        bed.run(bed.srv_ns, [*fpd, "stop", "--force", "-i", "fpd0", "--socket", sock],
                check=False, timeout=30)


@pytest.mark.root
def test_start_without_cap_perfmon_says_which_capability_is_missing(testbed, tmp_path):
    bed = testbed
    sock = str(tmp_path / "fpd.sock")
    r = bed.run(bed.srv_ns, ["setpriv", "--bounding-set=-all,+net_admin,+net_raw,+bpf,"
                             "+ipc_lock", "--inh-caps=-all", sys.executable, "-m", "fpd",
                             "start", "-i", "fpd0", "-p", "7", "--socket", sock],
                check=False, timeout=60, cwd="/")
    assert r.returncode == 1, r.stdout
    assert "runs as root but without CAP_PERFMON" in r.stderr and "add the missing" in \
        r.stderr, r.stderr
    assert not os.path.exists(sock)
