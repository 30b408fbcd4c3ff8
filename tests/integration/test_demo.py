"""``fpd demo --quick`` end to end (root): it passes, prints its report, and leaves nothing
behind — no namespace, no daemon, no socket file, no example app."""

import os
import re
import shutil
import signal
import subprocess
import sys
import threading

import pytest

from fpd import demo

STEPS = ["fpd start", "apps listening", "curl GET /", "curl GET /bytes/",
         "socat echo", "wrk -t1 -c8", "python echo", "python echo 64 B round trips",
         "http_get.py", "apps exit on SIGTERM", "fpd stop"]


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append(f"{pid}: {cmd}")
    return found


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                         check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.mark.timeout(180)
def test_demo_quick_passes_and_cleans_up():
    lines: list[str] = []
    rc = demo.run(echo=lines.append, quick=True)
    out = "\n".join(lines)
    print(out)
    assert rc == 0, out
    # the report
    assert re.search(r"^RESULT: PASS \(\d+ passed, 0 failed, 0 skipped", out, re.M), out
    for step in STEPS:
        assert re.search(rf"^  {re.escape(step)}.*\b(PASS)\s*$", out, re.M), \
            f"no PASS line for {step!r}"
    assert re.search(r"curl GET /bytes/\S+\s+[\d.]+ MB/s, sha ok\s+[\d.]+ MB/s, sha ok\s+"
                     r"[\d.]+x\s+PASS", out), out
    _assert_gone(out)


def _assert_gone(out: str) -> None:
    """The test bed, work dir, socket file and processes the demo reported are gone."""
    m = re.search(r"test bed\s+(fpd-srv-\w+) .* <-> (fpd-peer-\w+)", out)
    assert m, out
    after = _netns()
    assert m.group(1) not in after and m.group(2) not in after
    # (other fpd- namespaces may come and go meanwhile: other test runs on this machine)
    work = re.search(r"work dir\s+(\S+)", out).group(1)
    assert not os.path.exists(work), f"{work} left behind"
    assert not os.path.exists(os.path.join(work, "fpd.sock"))
    left = _processes_mentioning(work)
    for port in (demo.FPD_ECHO, demo.FPD_HTTP, demo.KERNEL_ECHO, demo.KERNEL_HTTP,
                 demo.PEER_HTTP):
        left += [p for p in _processes_mentioning(f"--port {port}")
                 if str(demo.EXAMPLES) in p]           # ours, not another checkout's demo
    assert not left, left


@pytest.mark.timeout(150)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_demo_interrupted_mid_run_cleans_up(sig):
    """Ctrl-C (or SIGTERM) while clients run: exit 130, everything stopped and removed."""
    p = subprocess.Popen([sys.executable, "-m", "fpd.demo", "--quick"], text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[str] = []
    running = threading.Event()

    def reader():
        for line in p.stdout:
            lines.append(line.rstrip("\n"))
            if "curl GET /bytes/" in line:    # daemon and apps up, clients running
                running.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        assert running.wait(90), "\n".join(lines)
        p.send_signal(sig)
        p.wait(90)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    t.join(10)
    out = "\n".join(lines)
    print(out)
    assert p.returncode == 130, out
    assert "interrupted: everything was stopped and removed" in out
    assert re.search(r"^  fpd stop .*PASS\s*$", out, re.M), out
    _assert_gone(out)


@pytest.mark.timeout(120)
def test_demo_names_a_missing_tool_and_skips_its_step(monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **kw:
                        None if name == "wrk" else real_which(name, *a, **kw))
    lines: list[str] = []
    rc = demo.run(echo=lines.append, quick=True)
    out = "\n".join(lines)
    print(out)
    assert rc == 0, out
    assert "wrk not installed" in out and "make deps" in out
    assert re.search(r"^  wrk .*SKIP \(wrk not installed\)$", out, re.M), out
    assert re.search(r"^RESULT: PASS \(\d+ passed, 0 failed, 1 skipped", out, re.M), out
    _assert_gone(out)
