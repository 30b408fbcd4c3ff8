"""One teardown: the steps a start records in PATH.state are what the supervisor's
cleanup and `fpd stop --force` both undo (fpd.daemon.undo). No root: the reserved-ports
file is a temporary file, XDP a fake, the start is driven step by step."""

import json
import os

import pytest

pytest.importorskip("fpd.libbpf", reason="libbpf1 not installed", exc_type=OSError)

from fpd import bpf, daemon  # noqa: E402
from fpd.daemon import DaemonConfig, DaemonError, Supervisor  # noqa: E402

PROG = 4242


class FakeSteering:
    """Stands in for bpf.Steering: 'attaches' by setting the fake kernel's program."""
    kernel = {}                                   # ifname -> (prog id, name)

    def __init__(self, ifname, mode):
        self.ifname, self.mode, self.prog_id = ifname, "native", PROG
        self.fallback_reason = None
        self.ports = []
        FakeSteering.kernel[ifname] = (PROG, bpf.PROG_NAME)

    def add_port(self, port, addr=None):
        self.ports.append(port)

    def close(self):
        FakeSteering.kernel.pop(self.ifname, None)


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A reserved-ports file, a fake kernel XDP table, a socket path in tmp_path."""
    reserved = tmp_path / "ip_local_reserved_ports"
    reserved.write_text("8080\n")
    monkeypatch.setattr(daemon, "RESERVED_PORTS", str(reserved))
    FakeSteering.kernel = {}
    monkeypatch.setattr(bpf, "Steering", FakeSteering)
    monkeypatch.setattr(bpf, "attached_prog_id",
                        lambda ifname, mode=None: FakeSteering.kernel.get(ifname, (0, ""))[0])
    monkeypatch.setattr(daemon, "prog_name",
                        lambda pid: next((n for p, n in FakeSteering.kernel.values()
                                          if p == pid), ""))

    def force_detach(ifname):
        return FakeSteering.kernel.pop(ifname, None) is not None
    monkeypatch.setattr(bpf, "force_detach", force_detach)
    sock = str(tmp_path / "fpd.sock")
    return sock, reserved


def new_sup(sock):
    return Supervisor(DaemonConfig(ifname="fpd0", ports=[80], socket=sock,
                                   local_ports=(61000, 61009)))


def run_steps(s, last):
    """start()'s steps that need no fork, up to and including ``last``."""
    s._lock()
    s.reserved_original = daemon.read_reserved()
    s._write_state()
    for name in ("attach", "reserve", "listen"):
        getattr(s, "_" + name)()
        if name == last:
            break
    return s


def start_until(sock, last):
    return run_steps(new_sup(sock), last)


def files(sock):
    return sorted(os.path.basename(sock + x) for x in ("", ".pid", ".state")
                  if os.path.exists(sock + x))


def test_the_state_file_records_each_step(world):
    sock, reserved = world
    s = start_until(sock, "listen")
    try:
        st = json.load(open(sock + ".state"))
        assert [x["do"] for x in st["steps"]] == ["pid_file", "state_file", "xdp",
                                                  "reserved_ports", "socket"]
        xdp = st["steps"][2]
        assert xdp == {"do": "xdp", "ifname": "fpd0", "mode": "native", "prog_id": PROG}
        assert st["steps"][3] == {"do": "reserved_ports", "lo": 61000, "hi": 61009,
                                  "original": "8080"}
        assert st["steps"][4]["ino"] == os.stat(sock).st_ino
        assert reserved.read_text().strip() == "8080,61000-61009"
    finally:
        s.cleanup()


def test_normal_stop_undoes_everything(world, caplog):
    sock, reserved = world
    s = start_until(sock, "listen")
    assert files(sock) == ["fpd.sock", "fpd.sock.pid", "fpd.sock.state"]
    caplog.set_level("INFO", logger="fpd")
    s.cleanup()
    assert files(sock) == [] and FakeSteering.kernel == {}
    assert reserved.read_text().strip() == "8080"
    assert "gave back reserved ports 61000-61009" in caplog.text
    assert f"detached XDP program id {PROG} (fpd_steer) from fpd0" in caplog.text
    s.cleanup()                                   # idempotent


@pytest.mark.parametrize("fails_at", ["attach", "reserve", "listen"])
def test_a_start_failing_half_way_leaves_nothing(world, monkeypatch, fails_at):
    sock, reserved = world

    def boom(*a, **kw):
        raise DaemonError(f"{fails_at} failed")
    target = {"attach": (bpf, "Steering"), "reserve": (daemon, "write_reserved"),
              "listen": (Supervisor, "_listen")}[fails_at]
    monkeypatch.setattr(*target, boom)
    s = new_sup(sock)
    with pytest.raises(DaemonError, match=f"{fails_at} failed"):
        run_steps(s, "listen")
    assert os.path.exists(sock + ".state")
    s.cleanup()                                  # what run() does on every exit path
    assert files(sock) == [] and FakeSteering.kernel == {}
    assert reserved.read_text().strip() == "8080"


def sigkill(s):
    """What a SIGKILL leaves: the kernel state and the files; the lock goes with the fd."""
    os.close(s.lock_fd)
    s.lock_fd = -1
    s.listener.close()


def test_stop_force_after_sigkill_replays_the_record(world):
    sock, reserved = world
    s = start_until(sock, "listen")
    sigkill(s)
    assert FakeSteering.kernel == {"fpd0": (PROG, "fpd_steer")}
    did = daemon.force_stop("fpd0", sock)
    assert f"detached XDP program id {PROG} (fpd_steer) from fpd0" in did
    assert "gave back reserved ports 61000-61009 (%s: 8080)" % reserved in did
    assert f"removed {sock}" in did and f"removed {sock}.state" in did
    assert files(sock) == [] and FakeSteering.kernel == {}
    assert reserved.read_text().strip() == "8080"
    assert daemon.force_stop("fpd0", sock) == []          # nothing left to do


def test_stop_force_after_sigkill_during_attach(world):
    """Killed between recording the xdp step and learning the program id: a program
    named fpd_steer is ours to remove, someone else's is left alone."""
    sock, reserved = world
    s = start_until(sock, "attach")
    st = json.load(open(sock + ".state"))
    st["steps"][2]["prog_id"] = 0
    daemon.write_state(sock + ".state", st)
    sigkill_lock = s.lock_fd
    os.close(sigkill_lock)
    FakeSteering.kernel["fpd0"] = (99, "other_prog")
    did = daemon.force_stop("fpd0", sock)
    assert any("named other_prog, not fpd_steer: left alone" in x for x in did)
    assert FakeSteering.kernel == {"fpd0": (99, "other_prog")}
    assert files(sock) == []
    FakeSteering.kernel["fpd0"] = (100, "fpd_steer")
    assert "detached XDP program id 100 (fpd_steer) from fpd0" in daemon.force_stop("fpd0", sock)


def test_stop_force_leaves_the_files_of_a_live_lock_holder(world):
    sock, reserved = world
    s = start_until(sock, "listen")
    try:
        s.pid = 0                                         # not a process to kill
        with open(sock + ".pid", "w") as f:
            f.write("0\n")
        did = daemon.force_stop("fpd0", sock)
        assert f"{sock}.pid is locked by a live process: files left in place" in did
        assert files(sock) == ["fpd.sock", "fpd.sock.pid", "fpd.sock.state"]
    finally:
        s.cleanup()


def test_what_cleanup_cannot_undo_stays_for_stop_force(world, monkeypatch, caplog):
    sock, reserved = world
    s = start_until(sock, "listen")
    real = daemon.write_reserved

    def broken(text):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(daemon, "write_reserved", broken)
    s.cleanup()
    assert "cannot restore" in caplog.text and "left " + sock + ".state" in caplog.text
    assert files(sock) == ["fpd.sock.state"] and FakeSteering.kernel == {}
    st = json.load(open(sock + ".state"))
    assert [x["do"] for x in st["steps"]] == ["state_file", "reserved_ports"]
    assert st["ifname"] == "fpd0"
    monkeypatch.setattr(daemon, "write_reserved", real)
    did = daemon.force_stop("fpd0", sock)
    assert "gave back reserved ports 61000-61009 (%s: 8080)" % reserved in did
    assert files(sock) == [] and reserved.read_text().strip() == "8080"
