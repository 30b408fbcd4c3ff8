"""The command line: help, version, clear errors on bad arguments."""

import os

import pytest
from click.testing import CliRunner

from fpd import __version__
from fpd.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_help_lists_commands():
    r = run("--help")
    assert r.exit_code == 0
    for word in ("doctor", "xdp"):
        assert word in r.output


def test_version():
    r = run("--version")
    assert r.exit_code == 0 and __version__ in r.output


def test_unknown_command_is_an_error():
    r = run("frobnicate")
    assert r.exit_code == 2 and "No such command" in r.output


def test_xdp_status_requires_iface():
    r = run("xdp", "status")
    assert r.exit_code == 2 and "--iface" in r.output


@pytest.mark.skipif(os.geteuid() != 0, reason="netlink query needs root")
def test_missing_interface_is_a_clear_error():
    r = run("xdp", "status", "-i", "fpd-no-such0")
    assert r.exit_code == 1
    assert "fpd-no-such0" in r.output and "does not exist" in r.output


def test_doctor_json_reports_every_check():
    import json
    r = run("doctor", "--json")
    checks = {c["check"]: c for c in json.loads(r.output)}
    assert {"kernel", "privileges", "memlock", "af_xdp", "libbpf", "bpf_object",
            "local_ports", "clang", "tcpdump", "tracefs", "bcc", "data_path"} <= set(checks)
    assert checks["kernel"]["ok"]
    assert all(c["level"] in ("ok", "warn", "bad") for c in checks.values())


def test_doctor_says_which_data_path_runs():
    import json
    import os
    import subprocess
    import sys
    out = {}
    for pure in (False, True):
        env = {k: v for k, v in os.environ.items() if k != "FPD_PURE_PYTHON"}
        if pure:
            env["FPD_PURE_PYTHON"] = "1"
            env["FPD_TSO"] = "0"
        r = subprocess.run([sys.executable, "-m", "fpd", "doctor", "--json"], env=env,
                           capture_output=True, text=True)
        out[pure] = {c["check"]: c for c in json.loads(r.stdout)}["data_path"]["detail"]
    assert out[False].startswith("compiled: fpd._accel")
    assert out[True].startswith("pure Python (FPD_PURE_PYTHON set)")
    assert "template transmit off" in out[True]


# --- the daemon commands ------------------------------------------------------------------
def test_help_lists_daemon_commands():
    r = run("--help")
    for word in ("start", "stop", "status", "stats", "conns", "demo"):
        assert word in r.output


@pytest.mark.parametrize("cmd", ["start", "stop", "status", "stats", "conns", "demo"])
def test_every_command_has_help(cmd):
    r = run(cmd, "--help")
    assert r.exit_code == 0 and "Usage:" in r.output and cmd in r.output
    if cmd != "demo":
        assert "--socket" in r.output and "FPD_SOCKET" in r.output


def test_python_dash_m_fpd():
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "fpd", "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "Usage: fpd" in p.stdout and "start" in p.stdout


def test_start_requires_iface_and_port(tmp_path):
    r = run("start", "-p", "80", "--socket", str(tmp_path / "s"))
    assert r.exit_code == 2 and "--iface" in r.output
    r = run("start", "-i", "lo", "--socket", str(tmp_path / "s"))
    assert r.exit_code == 2 and "--port" in r.output


@pytest.mark.parametrize("args, words", [
    (["-p", "0"], "0 is not in the range"),
    (["-p", "80", "--mode", "turbo"], "'turbo' is not one of"),
    (["-p", "80", "--local-ports", "6000"], "range LO-HI"),
    (["-p", "80", "--local-ports", "7-5"], "LO <= HI"),
    (["-p", "80", "--queues", "0"], "0 is not in the range"),
])
def test_start_bad_arguments(args, words, tmp_path):
    r = run("start", "-i", "lo", *args, "--socket", str(tmp_path / "s"))
    assert r.exit_code == 2 and words in r.output, r.output


def test_start_semantic_errors(tmp_path):
    r = run("start", "-i", "lo", "-p", "60001", "--socket", str(tmp_path / "s"))
    assert r.exit_code == 1 and "inside the local port range 60000-60255" in r.output


def test_start_not_root(tmp_path, monkeypatch):
    from fpd import daemon
    monkeypatch.setattr(daemon.os, "geteuid", lambda: 1000)     # a normal user, faked
    monkeypatch.setattr(daemon, "_capabilities", lambda: 0)
    r = run("start", "-i", "lo", "-p", "80", "--socket", str(tmp_path / "s"))
    assert r.exit_code == 1 and "fpd start needs root" in r.output


@pytest.mark.skipif(os.geteuid() != 0, reason="the interface check comes after the root check")
def test_start_missing_interface(tmp_path):
    r = run("start", "-i", "fpd-nope0", "-p", "80", "--socket", str(tmp_path / "s"))
    assert r.exit_code == 1 and "no interface fpd-nope0 in this network namespace" in r.output
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("cmd", ["status", "stats", "conns", "stop"])
def test_not_running(cmd, tmp_path):
    sock = str(tmp_path / "fpd.sock")
    r = run(cmd, "--socket", sock)
    assert r.exit_code == 3
    assert f"fpd is not running (no socket at {sock})" in r.output


def test_socket_from_environment(tmp_path):
    sock = str(tmp_path / "env.sock")
    r = CliRunner().invoke(main, ["status"], env={"FPD_SOCKET": sock})
    assert r.exit_code == 3 and sock in r.output


def test_stale_socket(tmp_path):
    import socket
    sock = str(tmp_path / "fpd.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.bind(sock)
    s.close()                      # bound, never listening: connect is refused
    r = run("status", "--socket", sock)
    assert r.exit_code == 3 and "stale socket" in r.output and "stop --force" in r.output


def test_stop_force_needs_iface(tmp_path):
    r = run("stop", "--force", "--socket", str(tmp_path / "s"))
    assert r.exit_code == 2 and "--force needs -i IFACE" in r.output
    r = run("stop", "-i", "lo", "--socket", str(tmp_path / "s"))
    assert r.exit_code == 2 and "only for --force" in r.output


# --- --config ---------------------------------------------------------------------------
def test_config_toml_and_command_line_wins(tmp_path):
    from fpd.cli import build_config, load_config_file
    f = tmp_path / "fpd.toml"
    f.write_text('iface = "eth1"\nports = [7, 80]\nmode = "generic"\nlocal_ports = "61000-61099"\n'
                 'queues = 2\nsocket = "/run/x/fpd.sock"\n[stack]\ntime_wait = 1.0\n')
    file_values = load_config_file(str(f))
    assert file_values == {"ifname": "eth1", "ports": [7, 80], "mode": "generic",
                           "local_ports": (61000, 61099), "queues": 2,
                           "socket": "/run/x/fpd.sock", "stack": {"time_wait": 1.0}}
    cfg = build_config({"ifname": None, "ports": [443], "mode": None, "queues": None}, file_values)
    assert cfg.ifname == "eth1" and cfg.ports == [443] and cfg.mode == "generic"
    assert cfg.local_ports == (61000, 61099) and cfg.queues == 2 and cfg.socket == "/run/x/fpd.sock"
    assert cfg.stack == {"time_wait": 1.0}


def test_config_json(tmp_path):
    from fpd.cli import load_config_file
    f = tmp_path / "fpd.json"
    f.write_text('{"interface": "eth2", "port": 8080, "local_ports": [62000, 62010]}')
    assert load_config_file(str(f)) == {"ifname": "eth2", "ports": [8080],
                                        "local_ports": (62000, 62010)}


@pytest.mark.parametrize("text, words", [
    ('iface = "x"\nbogus = 1\n', "unknown key bogus"),
    ('ports = "80"\n', "ports must be a port number or a list"),
    ('iface = \n', "not valid TOML"),
    ('{"iface": ', "not valid JSON"),
    ('local_ports = "9-3"\n', "LO <= HI"),
])
def test_config_errors(text, words, tmp_path):
    f = tmp_path / "bad.conf"
    f.write_text(text)
    r = run("start", "--config", str(f), "--socket", str(tmp_path / "s"))
    assert r.exit_code == 1 and words in r.output, r.output


def test_config_file_missing(tmp_path):
    r = run("start", "--config", str(tmp_path / "nope.toml"))
    assert r.exit_code == 1 and "cannot read" in r.output


def test_config_supplies_required_options(tmp_path):
    f = tmp_path / "fpd.toml"
    f.write_text('iface = "fpd-nope0"\nports = [60001]\n')
    r = run("start", "--config", str(f), "--socket", str(tmp_path / "s"))
    # iface and ports came from the file: the error is about their values, not missing
    assert r.exit_code == 1 and "inside the local port range" in r.output


def test_conns_table_formats_rows():
    from fpd.cli import conns_table
    lines = conns_table({"conns": [{"queue": 0, "state": "ESTABLISHED",
                                    "local": "10.77.0.1:7", "remote": "10.77.0.2:40000",
                                    "owner_pid": 42, "cwnd": 14480, "srtt": 0.00025,
                                    "rto": 0.2, "bytes_in": 10, "bytes_out": 20,
                                    "retransmits": 1, "min_rtt": 0.0002,
                                    "delivery_rate": 1.25e6, "limited_by": "cwnd"}],
                         "listeners": [{"queue": 0, "local": "0.0.0.0:7", "owner_pid": 42}],
                         "truncated": 3})
    assert lines[0].split() == ["Q", "State", "Local", "Remote", "Owner", "cwnd", "srtt(ms)",
                                "rto(ms)", "bytes_in", "bytes_out", "retrans", "minrtt(ms)",
                                "rate(Mbit/s)", "limited"]
    assert lines[1].split() == ["0", "LISTEN", "0.0.0.0:7", "*:*", "42"]
    assert lines[2].split() == ["0", "ESTABLISHED", "10.77.0.1:7", "10.77.0.2:40000", "42",
                                "14480", "0.2", "200.0", "10", "20", "1", "0.2", "10.0",
                                "cwnd"]
    assert "3 more connections" in lines[3]


# --- daemonizing (the fork and the start-up pipe; daemon.run replaced) -------------------
def _fake_run(text):
    def run_(cfg, ready_fd=None):
        if text is not None:
            os.write(ready_fd, text.encode())
        return 0 if text and text.startswith("ok") else 1
    return run_


@pytest.mark.parametrize("text, code, words", [
    ('ok {"pid": 4321, "mode": "native", "queues": 2}\n', 0,
     "fpd serving eth9 (native XDP) queues 2 ports 7,80 on /run/t/fpd.sock (pid 4321); "
     "log /run/t/fpd.sock.log"),
    ("error: eth9 already has an XDP program (id 5, name x)\n", 1,
     "eth9 already has an XDP program (id 5, name x)"),
    (None, 1, "fpd died during start-up; see /run/t/fpd.sock.log"),
])
def test_daemonize_reports_the_childs_verdict(monkeypatch, capsys, text, code, words):
    import click

    from fpd import cli, daemon
    monkeypatch.setattr(daemon, "run", _fake_run(text))
    cfg = daemon.DaemonConfig(ifname="eth9", ports=[7, 80], socket="/run/t/fpd.sock")
    if code == 0:
        assert cli._daemonize(cfg, timeout=10) == 0
        assert words in capsys.readouterr().out
    else:
        with pytest.raises(click.ClickException) as ei:
            cli._daemonize(cfg, timeout=10)
        assert ei.value.format_message() == words


def test_config_and_option_syn_limit(tmp_path):
    from fpd.cli import build_config, load_config_file
    f = tmp_path / "fpd.toml"
    f.write_text('iface = "eth1"\nports = [80]\nsyn_limit = 5000\n')
    vals = load_config_file(str(f))
    assert vals["syn_limit"] == 5000
    assert build_config({"syn_limit": None}, vals).syn_limit == 5000
    assert build_config({"syn_limit": 100}, vals).syn_limit == 100
    f.write_text('iface = "eth1"\nports = [80]\nsyn_limit = "fast"\n')
    with pytest.raises(ValueError, match="syn_limit must be a number"):
        load_config_file(str(f))
    r = run("start", "-i", "lo", "-p", "80", "--syn-limit", "-5", "--socket",
            str(tmp_path / "s"))
    assert r.exit_code == 2 and "--syn-limit" in r.output
