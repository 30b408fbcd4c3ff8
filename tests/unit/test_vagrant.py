"""The Vagrant VM provisions with the README's test command, and nothing cleverer."""

import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_provision_runs_the_readme_test_command():
    script = (ROOT / "vagrant" / "provision.sh").read_text()
    subprocess.run(["bash", "-n", str(ROOT / "vagrant" / "provision.sh")], check=True)
    assert "./run.sh test" in (ROOT / "README.md").read_text()
    assert script.strip().splitlines()[-1] == "./run.sh test"
    vf = (ROOT / "vagrant" / "Vagrantfile").read_text()
    assert 'path: "provision.sh"' in vf and '"/fpd"' in vf
