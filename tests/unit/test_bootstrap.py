"""The README's two commands start from a bare Debian 12: `./run.sh` brings make itself,
and CI runs exactly the README's test command."""

import os
import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    block = text.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.strip().splitlines()]


def test_readme_quick_start_is_run_sh_demo_and_test():
    assert _readme_commands() == ["./run.sh demo", "./run.sh test"]


def test_ci_runs_exactly_the_readme_test_command():
    lines = [l for l in (ROOT / ".ci" / "run").read_text().splitlines()
             if l.strip() and not l.startswith("#")]
    assert lines[-1] == _readme_commands()[1]


def test_run_sh_is_executable_and_valid_bash():
    p = ROOT / "run.sh"
    assert os.access(p, os.X_OK)
    subprocess.run(["bash", "-n", str(p)], check=True)
    subprocess.run(["bash", "-n", str(ROOT / "scripts" / "bare-check.sh")], check=True)


def _fake_path(tmp_path, with_make: bool):
    """A PATH holding only bash, env, id, dirname and (maybe) a fake make and apt-get
    that record how they were called."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("bash", "env", "id", "dirname", "sh", "chmod"):
        os.symlink(shutil.which(tool), bindir / tool)
    log = tmp_path / "calls"
    if with_make:
        (bindir / "make").write_text(f'#!/bin/bash\necho "make $*" >> {log}\n')
        (bindir / "make").chmod(0o755)
    (bindir / "apt-get").write_text(
        f'#!/bin/bash\necho "apt-get $*" >> {log}\n'
        f'if [ "$1" = install ]; then printf "#!/bin/bash\\necho \\"make \\$*\\" >> {log}\\n"'
        f' > {bindir}/make; chmod +x {bindir}/make; fi\n')
    (bindir / "apt-get").chmod(0o755)
    return str(bindir), log


@pytest.mark.skipif(os.geteuid() != 0, reason="run.sh installs make only as root")
def test_run_sh_installs_make_when_missing_then_runs_the_target(tmp_path):
    path, log = _fake_path(tmp_path, with_make=False)
    r = subprocess.run([str(ROOT / "run.sh"), "test-fast"], env={"PATH": path},
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == "apt-get update -q"
    assert re.fullmatch(r"apt-get install -y -q .*\bmake", calls[1])
    assert calls[2] == "make test-fast"


def test_run_sh_uses_an_installed_make_without_apt(tmp_path):
    path, log = _fake_path(tmp_path, with_make=True)
    r = subprocess.run([str(ROOT / "run.sh"), "demo"], env={"PATH": path},
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert log.read_text().splitlines() == ["make demo"]


@pytest.mark.bare
@pytest.mark.root
@pytest.mark.timeout(3600)
def test_bare_debian_chroot_runs_the_readme_test_command():
    """Opt-in (--run-bare, ~10 min): scripts/bare-check.sh in a debootstrap chroot."""
    r = subprocess.run([str(ROOT / "scripts" / "bare-check.sh"), "test"],
                       capture_output=True, text=True, timeout=3600)
    tail = "\n".join(r.stdout.splitlines()[-30:])
    assert r.returncode == 0, tail + r.stderr[-2000:]
    assert re.search(r"\d+ passed", r.stdout), tail


def test_vm_test_script_and_target_exist():
    subprocess.run(["bash", "-n", str(ROOT / "scripts" / "vm-test.sh")], check=True)
    mk = (ROOT / "Makefile").read_text()
    assert "\nvm-test:\n\tscripts/vm-test.sh\n" in mk
    assert "\nbare-check:\n\tscripts/bare-check.sh test\n" in mk
    text = (ROOT / "scripts" / "vm-test.sh").read_text()
    assert "restrict=on" in text and "hostfwd=tcp:127.0.0.1:" in text   # loopback only


@pytest.mark.bare
@pytest.mark.root
@pytest.mark.timeout(7200)
def test_vm_runs_the_integration_suite():
    """Opt-in (--run-bare, root): scripts/vm-test.sh builds or reuses the image, boots the
    VM (FPD_VM_DRIVER=qemu or vagrant from the environment), runs the integration suite
    inside and destroys it. Minutes under KVM; about an hour under TCG (a PVM host)."""
    r = subprocess.run([str(ROOT / "scripts" / "vm-test.sh")], capture_output=True,
                       text=True, timeout=7000)
    tail = "\n".join(r.stdout.splitlines()[-30:])
    assert r.returncode == 0, tail + r.stderr[-2000:]
    assert re.search(r"\d+ passed", r.stdout) and "vm-test: exit 0" in r.stdout, tail
