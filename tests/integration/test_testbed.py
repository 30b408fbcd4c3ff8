"""The test bed itself: both ends reachable, teardown complete, refuses foreign namespaces."""

import socket
import threading

import pytest

from fpd.testbed import TestBed, TestBedError


def test_peer_reaches_server_with_kernel_tcp(testbed):
    srv = testbed.socket(testbed.srv_ns)
    srv.bind((testbed.srv_ip, 0))
    srv.listen()
    srv.settimeout(10)
    port = srv.getsockname()[1]
    got = []

    def serve():
        c, _ = srv.accept()
        got.append(c.recv(100))
        c.sendall(b"pong")
        c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    cli = testbed.socket(testbed.peer_ns)
    cli.settimeout(5)
    cli.connect((testbed.srv_ip, port))
    cli.sendall(b"ping")
    assert cli.recv(100) == b"pong"
    t.join(5)
    assert got == [b"ping"]
    cli.close()
    srv.close()


def test_sockets_live_in_their_namespace(testbed):
    # the root namespace has no 10.77.0.1: binding there must fail, inside it must work
    s = socket.socket()
    with pytest.raises(OSError):
        s.bind((testbed.srv_ip, 0))
    s.close()
    s = testbed.socket(testbed.srv_ns)
    s.bind((testbed.srv_ip, 0))
    s.close()


def test_teardown_removes_everything():
    bed = TestBed()
    with bed:
        assert bed.ns_exists(bed.srv_ns) and bed.ns_exists(bed.peer_ns)
    assert not bed.ns_exists(bed.srv_ns) and not bed.ns_exists(bed.peer_ns)


def test_teardown_after_failure_inside():
    bed = TestBed()
    with pytest.raises(ZeroDivisionError):
        with bed:
            1 / 0
    assert not bed.ns_exists(bed.srv_ns)


def test_refuses_foreign_namespace(testbed):
    with pytest.raises(TestBedError):
        testbed.run("some-other-ns", ["true"])
    with pytest.raises(TestBedError):
        TestBed(suffix=testbed.suffix).up()
    # the failed second bed must not have removed ours
    assert testbed.ns_exists(testbed.srv_ns)


def test_peer_checksum_offload_off(testbed):
    out = testbed.run(testbed.peer_ns, ["ethtool", "-k", testbed.peer_if]).stdout
    assert "tx-checksumming: off" in out
    assert "tcp-segmentation-offload: off" in out
