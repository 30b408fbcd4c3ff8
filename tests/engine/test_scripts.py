"""Scripted segment exchanges (tests/engine/scripts/*.pkt), one test per file.

A script whose first comment block contains a line ``XFAIL: ENGINE BUG: ...`` is run as
``xfail(strict=True)`` with that reason (see tests/engine/FINDINGS.md).  The rest of this
file self-tests the runner and its format without the engine (a toy stack).
"""

import glob
import os
import re
import types

import pytest

import runner as R

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = sorted(glob.glob(os.path.join(HERE, "scripts", "*.pkt")))


def _params():
    out = []
    for path in SCRIPTS:
        with open(path) as fh:
            head = R.script_header(fh.read())
        marks = []
        m = re.search(r"^XFAIL:\s*(.+)$", head, re.M)
        if m:
            marks.append(pytest.mark.xfail(strict=True, raises=R.ScriptFailure,
                                           reason=m.group(1).strip()))
        out.append(pytest.param(path, id=os.path.basename(path)[:-4], marks=marks))
    return out


@pytest.mark.parametrize("path", _params())
def test_script(path):
    R.run_file(path)


# --------------------------------------------------------------------------------------
# format self-tests (no engine needed)
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: os.path.basename(p)[:-4])
def test_script_parses_and_has_header(path):
    with open(path) as fh:
        text = fh.read()
    lines = R.parse_script(text)
    assert lines, "empty script"
    head = R.script_header(text)
    assert re.search(r"RFC\s*\d+|Linux", head), "header must name the RFC (or Linux) it checks"


def test_script_count():
    assert len(SCRIPTS) >= 50


def test_parse_segments():
    s = R.parse_segment("< S 0:0(0) win 65535 <mss 1460,sackOK,TS val 100 ecr 0,nop,wscale 7>")
    assert s.direction == "<" and s.flags == 0x02 and s.win == 65535
    assert s.opts.mss == 1460 and s.opts.sack_ok and s.opts.ts == (100, 0)
    assert s.opts.wscale == 7 and s.opts.names == {"mss", "sackok", "ts", "wscale"}
    s = R.parse_segment("> S. 0:0(0) ack 1 win * <mss 1460,sackOK,TS val * ecr 100,nop,wscale *>")
    assert s.flags == 0x12 and s.ack(1) and not s.ack(2) and s.win(12345)
    assert s.opts.ts[0](7) and s.opts.ts[1](100) and not s.opts.ts[1](99)
    s = R.parse_segment("< 40001 P. 1:101(100) ack 1 win 502 <nop,nop,TS val 110 ecr *>")
    assert s.rport == 40001 and s.length == 100 and s.ack == 1 and s.opts.ts == (110, "*")
    s = R.parse_segment("> . 1:1(0) ack 101 <sack 201:301 401:501, ...>")
    assert s.opts.open_ended and [(str(a), str(b)) for a, b in s.opts.sack] == \
        [("201", "301"), ("401", "501")]
    s = R.parse_segment("< R 5000:5000(0) win 0")
    assert s.flags == 0x04
    s = R.parse_segment("> R. 0:0(0) ack 101")
    assert s.flags == 0x14
    s = R.parse_segment("> . *:*(1000) ack >=1")
    assert s.start(12345) and s.length(1000) and not s.length(999) and s.ack(5)
    with pytest.raises(R.ScriptError):
        R.parse_segment("< P. 1:101(99) ack 1")         # length mismatch
    with pytest.raises(R.ScriptError):
        R.parse_segment("< . 1:1(0)")                    # ACK without ack number
    with pytest.raises(R.ScriptError):
        R.parse_segment("< S 0:0(0) <mss 1460,bogus 3>")


def test_parse_times_and_actions():
    lines = R.parse_script("""
# header
0     config rto_min=0.2 time_wait=1 cc=newreno sack=off
0     option remote_isn=0xfffffff0
0     listen 8080 backlog=2
+0.1  app send 50 ; app recv 100 == * ; app close
~0.24 > . 1:1(0) ack 101         # comment
0.3~0.05 > . 1:1(0) ack 101
0.2..0.5 > . 1:1(0)
*     > F. 1:1(0)
1     event accepted ; noevent 40001 reset ; expect state TIME_WAIT
1     expect info cwnd>=14600 ssthresh=* srtt=0.1~0.01 ; expect stat challenge_acks=1
1     app send "GET / HTTP/1.0\\r\\n\\r\\n" == 18 ; app set nodelay=1 keepalive=true
2     app connect 10.77.0.2:80 wscale=0
""")
    assert [l.time.kind for l in lines] == ["abs", "abs", "abs", "rel", "abs", "abs", "abs",
                                            "any", "abs", "abs", "abs", "abs"]
    assert lines[0].actions[0].args == [("rto_min", 0.2), ("time_wait", 1), ("cc", "newreno"),
                                        ("sack", False)]
    assert lines[1].actions[0].args == [("remote_isn", 0xFFFFFFF0)]
    assert lines[2].actions[0].args == (8080, {"backlog": 2})
    assert len(lines[3].actions) == 3 and lines[3].time.value == 0.1
    assert lines[4].time.fuzzy and lines[4].time.value == 0.24
    assert lines[5].time.tol == 0.05
    assert lines[6].time.hi == 0.5
    kinds = [a.kind for a in lines[8].actions]
    assert kinds == ["event", "noevent", "expect"]
    assert lines[8].actions[1].args == (40001, "reset")
    info = lines[9].actions[0].args[2]
    assert info[0][0] == "cwnd" and info[0][1](14600) and not info[0][1](14599)
    assert info[2][1](0.105) and not info[2][1](0.12)
    send = lines[10].actions[0].args
    assert send[2] == b"GET / HTTP/1.0\r\n\r\n" and send[3](18)
    assert lines[11].actions[0].args == (None, "connect", 80, {"wscale": 0})
    with pytest.raises(R.ScriptError):
        R.parse_script("~1 app close")               # fuzzy time only for outbound
    with pytest.raises(R.ScriptError):
        R.parse_script("1 frobnicate")
    with pytest.raises(R.ScriptError):
        R.parse_script("1 event nonsense")


def test_matchers():
    m = R.parse_matcher
    assert m("*")(None) and m("5")(5) and not m("5")(6)
    assert m(">=3")(3) and not m(">3")(3) and m("<3")(2) and m("!3")(4)
    assert m("2..4")(3) and not m("2..4")(5)
    assert m("ESTABLISHED")("established")
    assert m("true")(True) and not m("true")(False)


# --------------------------------------------------------------------------------------
# runner mechanics against a toy stack (so the runner is trusted before the engine is)
# --------------------------------------------------------------------------------------

class _ToySeg:
    __slots__ = ("src", "dst", "sport", "dport", "seq", "ack", "flags", "wnd", "urp",
                 "mss", "wscale", "sack_ok", "tsval", "tsecr", "sack", "payload")

    def __init__(self, **kw):
        for k in self.__slots__:
            setattr(self, k, kw.get(k, {"sack": (), "payload": b"", "sack_ok": False,
                                        "tsecr": 0}.get(k, 0 if k not in
                                                        ("mss", "wscale", "tsval") else None)))


class _ToyConn:
    def __init__(self, st, seg):
        self.st, self.rport, self.state = st, seg.sport, "SYN_RECEIVED"
        self.iss, self.rcv_nxt, self.snd_nxt = 5000, (seg.seq + 1) % R.MOD, 5001
        self.buf = bytearray()
        self.ack_due = None

    def recv(self, n):
        d, self.buf[:] = bytes(self.buf[:n]), self.buf[n:]
        return d

    def send(self, data, now):
        self.st.emit(self, 0x18, data)
        self.snd_nxt += len(data)
        return len(data)

    def info(self):
        return {"rcv_nxt": self.rcv_nxt}


class _ToyStack:
    """SYN → SYN-ACK; data → delayed ACK after 40 ms; nothing else."""

    def __init__(self, isn_key, config):
        self.out, self.ev, self.conn = [], [], None

    def listen(self, addr, port, backlog=128, **kw):
        self.port = port
        return "L"

    def emit(self, c, flags, payload=b"", seq=None):
        self.out.append(_ToySeg(src=R.LOCAL_ADDR, dst=R.REMOTE_ADDR, sport=self.port,
                                dport=c.rport, seq=c.snd_nxt if seq is None else seq,
                                ack=c.rcv_nxt, flags=flags, wnd=1000, payload=payload))

    def input(self, seg, now):
        if seg.flags & 0x02:
            self.conn = c = _ToyConn(self, seg)
            self.emit(c, 0x12, seq=c.iss)
            return
        c = self.conn
        if c.state == "SYN_RECEIVED":
            c.state = "ESTABLISHED"
            self.ev.append(("acc", "L", c))
        if seg.payload:
            c.buf += seg.payload
            c.rcv_nxt = (c.rcv_nxt + len(seg.payload)) % R.MOD
            c.ack_due = now + 0.04

    def tick(self, now):
        c = self.conn
        if c is not None and c.ack_due is not None and now >= c.ack_due:
            c.ack_due = None
            self.emit(c, 0x10)

    def next_deadline(self):
        return self.conn.ack_due if self.conn is not None else None

    def output(self):
        o, self.out = self.out, []
        return o

    def events(self):
        e, self.ev = self.ev, []
        return e


def _toy_engine():
    st = types.SimpleNamespace(Stack=_ToyStack, StackConfig=lambda **kw: kw)
    tcp = types.SimpleNamespace(Event=types.SimpleNamespace(ACCEPTED="acc"))
    wire = types.SimpleNamespace(Segment=_ToySeg)
    return st, tcp, wire


_TOY_OK = """
# toy
0    listen 8080
0    < S 0:0(0) win 1000
0    > S. 0:0(0) ack 1
0.1  < . 1:1(0) ack 1
0.1  event accepted
0.2  < P. 1:101(100) ack 1
0.24 > . 1:1(0) ack 101
0.3  app recv 100
0.3  app send 10
0.3  > P. 1:11(10) ack 101
"""


def _toy(text):
    return R.Runner(text, "toy.pkt", engine=_toy_engine()).run()


def test_runner_toy_ok():
    r = _toy(_TOY_OK)
    f = r.flow()
    assert f.local_isn == 5000 and r.now == pytest.approx(0.3)


@pytest.mark.parametrize("bad,msg", [
    ("0.25 > . 1:1(0) ack 101", "sent at 0.240000"),           # wrong time
    ("~0.25 > . 1:1(0) ack 101", None),                         # within tolerance: ok
    ("0.2..0.3 > . 1:1(0) ack 101", None),
    ("* > . 1:1(0) ack 101", None),
    ("0.24 > . 1:1(0) ack 100", "ack 101, expected 100"),
    ("0.24 > F. 1:1(0) ack 101", "flags differ"),
    ("0.3 expect none", "unexpected outbound"),                 # ACK not claimed
    ("0.24 > . 1:1(0) ack 101 <mss 1460>", "options"),
])
def test_runner_toy_detects(bad, msg):
    text = _TOY_OK.replace("0.24 > . 1:1(0) ack 101", bad)
    if msg is None:
        _toy(text)
        return
    with pytest.raises(R.ScriptFailure, match=re.escape(msg)):
        _toy(text)


def test_runner_toy_checks_bytes():
    # the runner checks that delivered and transmitted bytes are the right ones
    text = _TOY_OK + "0.4 app recv 1 == 0\n"
    _toy(text)
    with pytest.raises(R.ScriptFailure, match="returned 0 bytes"):
        _toy(_TOY_OK + "0.4 app recv 1\n")
    with pytest.raises(R.ScriptFailure, match="unexpected outbound"):
        _toy(_TOY_OK.replace("0.3  > P. 1:11(10) ack 101\n", "") + "0.5 expect none\n")


def test_runner_toy_optional_and_maybe_flags():
    # '>?' claims the segment when it is there and matches, and is skipped otherwise
    _toy(_TOY_OK.replace("0.24 > . 1:1(0) ack 101", "0.24 >? . 1:1(0) ack 101"))
    with pytest.raises(R.ScriptFailure, match="unexpected outbound"):
        _toy(_TOY_OK.replace("0.24 > . 1:1(0) ack 101", "0.24 >? F. 1:1(0) ack 101"))
    # 'F?' accepts the flag either way, the other flags still have to match
    _toy(_TOY_OK.replace("0.3  > P. 1:11(10) ack 101", "0.3  > F?P. 1:11(10) ack 101"))
    with pytest.raises(R.ScriptFailure, match="flags differ"):
        _toy(_TOY_OK.replace("0.3  > P. 1:11(10) ack 101", "0.3  > F?S. 1:11(10) ack 101"))
    with pytest.raises(R.ScriptError):
        R.parse_segment("< F?. 1:1(0) ack 1")
