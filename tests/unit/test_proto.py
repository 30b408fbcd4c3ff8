"""fpd.proto: the declared control protocol (framing, messages, the request helper)."""

import errno
import os
import socket
import subprocess
import sys
import threading

import pytest

from fpd import proto


def test_messages_round_trip_and_defaults():
    m = proto.Listen(port=80, backlog=8)
    assert m.wire() == {"op": "listen", "port": 80, "backlog": 8}     # None is not sent
    back = proto.parse(m.wire(), proto.WORKER_OPS)
    assert back == m and back.addr is None
    assert proto.parse({"op": "hello"}, proto.SUPERVISOR_OPS).version == proto.VERSION
    assert proto.Attach(queue=1, pid=5).wire() == {"op": "attach", "queue": 1, "pid": 5}


@pytest.mark.parametrize("d, table, err, text", [
    ({"op": "frobnicate"}, proto.SUPERVISOR_OPS, errno.EOPNOTSUPP, "unknown op"),
    ({"op": "listen"}, proto.SUPERVISOR_OPS, errno.EOPNOTSUPP, "unknown op"),  # wrong side
    ({"port": 80}, proto.WORKER_OPS, errno.EOPNOTSUPP, "unknown op"),
    ({"op": "listen"}, proto.WORKER_OPS, errno.EINVAL, "needs 'port'"),
    ({"op": "listen", "port": "80"}, proto.WORKER_OPS, errno.EINVAL, "port must be int"),
    ({"op": "listen", "port": True}, proto.WORKER_OPS, errno.EINVAL, "port must be int"),
    ({"op": "connect", "addr": 1, "port": 80}, proto.WORKER_OPS, errno.EINVAL, "addr"),
    ({"op": "client", "attach": []}, proto.CHANNEL_OPS, errno.EINVAL, "attach must be dict"),
])
def test_parse_refuses_what_breaks_the_protocol(d, table, err, text):
    with pytest.raises(proto.ProtocolError) as ei:
        proto.parse(d, table)
    assert ei.value.errno == err and text in str(ei.value)


def test_every_op_has_one_class_and_tables_agree():
    seen = {}
    for table in (proto.SUPERVISOR_OPS, proto.WORKER_OPS, proto.CHANNEL_OPS,
                  proto.WORKER_NOTES):
        for op, cls in table.items():
            assert cls.op == op
            assert seen.setdefault(op, cls) is cls          # one class per op


def test_framing_limits_and_garbage():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        with pytest.raises(ValueError):
            proto.send(a, {"op": "x", "pad": "y" * proto.MAX_MSG})
        a.send(b"[1, 2]")
        with pytest.raises(proto.ProtocolError):
            proto.recv(b)
        r, w = os.pipe()
        a.send(b"not json")
        with pytest.raises(proto.ProtocolError):
            proto.recv(b)
        proto.send(a, proto.Bell(slot=3), [r], noreply=True)
        d, fds = proto.recv(b, maxfds=1)
        assert d == {"op": "bell", "slot": 3, "noreply": True} and len(fds) == 1
        for fd in (r, w, *fds):
            os.close(fd)
        a.shutdown(socket.SHUT_WR)
        assert proto.recv(b) == (None, [])


def _serve_once(sock, reply, fds=()):
    def run():
        d, _ = proto.recv(sock)
        proto.send(sock, dict(reply, echo=d["op"]), fds)
    t = threading.Thread(target=run)
    t.start()
    return t


def test_request_helper_maps_replies():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        a.settimeout(5)
        t = _serve_once(b, proto.ok(slot=1, gen=2))
        r, fds = proto.request(a, proto.Unlisten(slot=1), reply=proto.SlotReply)
        t.join()
        assert r == {"ok": True, "slot": 1, "gen": 2, "echo": "unlisten"} and fds == []
        t = _serve_once(b, proto.fail(errno.EACCES, "port 81 is not steered"))
        with pytest.raises(PermissionError) as ei:
            proto.request(a, proto.Listen(port=81), prefix="fpd at X")
        t.join()
        assert proto.refused(ei.value) and ei.value.strerror == "fpd at X: port 81 is not steered"
        t = _serve_once(b, {"ok": False, "errno": "nonsense", "error": 42})
        with pytest.raises(OSError) as ei:
            proto.request(a, proto.Info(slot=0))
        t.join()
        assert ei.value.errno == errno.EPROTO and proto.refused(ei.value)
        t = _serve_once(b, proto.ok(slot="x", gen=0))
        with pytest.raises(proto.ProtocolError):           # the reply's declared fields
            proto.request(a, proto.Info(slot=0), reply=proto.SlotReply)
        t.join()
        r, w = os.pipe()
        t = _serve_once(b, proto.ok(queue=0), [r])
        with pytest.raises(proto.ProtocolError, match="expected 3"):
            proto.request(a, proto.Attach(queue=0), maxfds=3, reply=proto.AttachReply)
        t.join()
        os.close(r)
        os.close(w)
        b.shutdown(socket.SHUT_WR)
        with pytest.raises(proto.Closed):
            proto.request(a, proto.Hello())


def test_socket_path(monkeypatch):
    monkeypatch.delenv("FPD_SOCKET", raising=False)
    assert proto.socket_path() == proto.DEFAULT_SOCKET == "/run/fpd/fpd.sock"
    monkeypatch.setenv("FPD_SOCKET", "/tmp/x.sock")
    assert proto.socket_path() == "/tmp/x.sock" and proto.socket_path("/a") == "/a"


def test_importing_the_client_loads_no_engine_or_daemon():
    code = ("import sys, fpd.client, fpd.aio; "
            "print(sorted(m for m in sys.modules if m.startswith('fpd')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    loaded = eval(out)
    for m in ("fpd.tcp", "fpd.stack", "fpd.cc", "fpd.control", "fpd.daemon", "fpd.worker",
              "fpd.wire"):
        assert m not in loaded, loaded
    assert "fpd.proto" in loaded


def test_deeply_nested_json_is_a_protocol_error_not_a_crash():
    """json.loads raises RecursionError (not a ValueError) on deep nesting: a hostile
    client's one message used to escape the service's handlers (found by
    bench/hostile.py) and end the worker, or reach the supervisor's loop."""
    for data in (b"[" * 50000 + b"]" * 50000,
                 b'{"op":"info","slot":' + b"[" * 50000 + b"]" * 50000 + b"}",
                 b'{"a":' * 40000 + b"1" + b"}" * 40000):
        with pytest.raises(proto.ProtocolError, match="nested too deeply"):
            proto.decode(data)


def test_with_opt_shares_one_dict_per_option_set_and_never_changes_its_input():
    base = {}
    a = proto.with_opt(base, "nodelay", True)
    b = proto.with_opt({}, "nodelay", True)
    assert a == {"nodelay": True} and a is b and base == {}
    c = proto.with_opt(a, "keepalive", 1)
    assert c == {"nodelay": True, "keepalive": 1} and a == {"nodelay": True}
    assert proto.with_opt(a, "nodelay", False) == {"nodelay": False}
    assert a == {"nodelay": True}
    one, true = proto.with_opt({}, "nodelay", 1), proto.with_opt({}, "nodelay", True)
    assert type(one["nodelay"]) is int and type(true["nodelay"]) is bool   # (1 == True)
    d = proto.with_opt({}, "linger", [1, 0])          # unhashable: a dict of its own
    assert d == {"linger": [1, 0]} and d is not proto.with_opt({}, "linger", [1, 0])
