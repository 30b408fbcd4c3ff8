"""The Vagrant VM provisions with the README's test command, and its network stays on
loopback (QEMU user mode, SSH forwarded to 127.0.0.1, no libvirt network or bridge)."""

import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
VF = (ROOT / "vagrant" / "Vagrantfile").read_text()


def test_provision_runs_the_readme_test_command():
    script = (ROOT / "vagrant" / "provision.sh").read_text()
    subprocess.run(["bash", "-n", str(ROOT / "vagrant" / "provision.sh")], check=True)
    assert "./run.sh test" in (ROOT / "README.md").read_text()
    assert script.strip().splitlines()[-1] == "./run.sh test"
    assert 'path: "provision.sh"' in VF and '"/srv/fpd"' in VF and "cd /srv/fpd\n" in script
    # not /fpd: from cwd /, `python -m fpd` would import that directory as the package
    assert '"/fpd"' not in VF


def test_offline_box_network_is_loopback_only():
    code = re.sub(r"(^|\s)#(?!\{).*$", "", VF, flags=re.M)   # comments out (not #{...})
    assert "lv.mgmt_attach = false" in code
    assert "restrict=on" in code
    assert re.search(r"hostfwd=tcp:127\.0\.0\.1:#\{PORT\}-:22", code)
    assert 'config.ssh.host = "127.0.0.1"' in code
    for net in ("private_network", "public_network", "management_network", "bridge"):
        assert net not in code, net


@pytest.mark.skipif(shutil.which("ruby") is None, reason="no ruby (comes with make vm-deps)")
def test_vagrantfile_is_valid_ruby():
    subprocess.run(["ruby", "-c", str(ROOT / "vagrant" / "Vagrantfile")], check=True,
                   capture_output=True)


def test_vm_targets_are_opt_in():
    mk = (ROOT / "Makefile").read_text()
    assert "\nvm-box:\n\tscripts/vm-test.sh --box\n" in mk
    assert re.search(r"\nvm-deps:\n\tapt-get update", mk)
    apt = re.search(r"APT_PKGS\s*:=(.*?)\n[A-Z_]+\s*\??:?=", mk, re.S).group(1)
    for p in ("vagrant", "libvirt", "qemu"):
        assert p not in apt, p   # everyone's `make deps` does not install the VM tools
