"""fpd bench's daemon configuration: FPD_BENCH_CONFIG (an A/B hook) and --frags end up
in the one --config file `fpd start` reads (no root: the test bed is a stand-in)."""
import json
import subprocess

import pytest

from fpd import bench


class FakeBed:
    srv_if, srv_ns = "veth-x", "ns-x"

    def __init__(self):
        self.argv = None

    def run(self, ns, argv, **kw):
        self.argv = argv
        return subprocess.CompletedProcess(argv, 1, "", "refused by the fake")


def _start(tmp_path, frags, monkeypatch, extra=None):
    if extra is None:
        monkeypatch.delenv("FPD_BENCH_CONFIG", raising=False)
    else:
        monkeypatch.setenv("FPD_BENCH_CONFIG", str(extra))
    bed = FakeBed()
    d = bench.FpdDaemon(bed, 5001, "generic", str(tmp_path), None, frags=frags)
    with pytest.raises(bench.Unavailable):
        d.start()
    argv = bed.argv
    if "--config" not in argv:
        return None
    with open(argv[argv.index("--config") + 1]) as f:
        return json.load(f)


def test_no_hook_no_frags_no_config_file(tmp_path, monkeypatch):
    assert _start(tmp_path, False, monkeypatch) is None


def test_frags_asks_the_workers_for_multi_buffer(tmp_path, monkeypatch):
    assert _start(tmp_path, True, monkeypatch) == {"worker": {"sg": True}}


def test_the_hook_file_is_merged_with_frags(tmp_path, monkeypatch):
    f = tmp_path / "cap.toml"
    f.write_text("[stack]\nrcvbuf_max = 262144\n[worker]\nburst = false\n")
    conf = _start(tmp_path, True, monkeypatch, extra=f)
    assert conf == {"stack": {"rcvbuf_max": 262144}, "worker": {"burst": False, "sg": True}}
    assert _start(tmp_path, False, monkeypatch, extra=f) == \
        {"stack": {"rcvbuf_max": 262144}, "worker": {"burst": False}}


def test_make_config_takes_frags():
    assert bench.make_config(frags=True).frags is True
    assert bench.make_config().frags is False
