"""A packetdrill-like script runner for the sans-IO TCP engine (virtual time).

A script is a text file (``tests/engine/scripts/*.pkt``).  It plays the *remote* TCP and
the *local application* against one ``fpd.stack.Stack`` and checks every segment the stack
sends.  Nothing touches a network or a clock: the runner owns ``now``.

The stack under test is 10.77.0.1 ("local", the engine); the scripted peer is 10.77.0.2
("remote").  Sequence numbers are written relative to each side's ISN, as in packetdrill.

Line syntax
-----------
::

    # a comment (also allowed at the end of any line)
    <time> <action> [; <action> ...]          several actions at the same time

``<time>`` is one of

    ``1.5``        absolute virtual seconds
    ``+0.2``       relative to the previous line's time
    ``~0.24``      (outbound lines) 0.24 s give or take ``option tolerance`` (default 0.01)
    ``0.24~0.05``  0.24 s give or take 0.05 s (``+0.2~0.05`` works too)
    ``0.2..0.5``   (outbound lines) any time in the interval
    ``*``          (outbound lines) whenever the segment comes (at most ``option wait`` s);
                   the time it actually came becomes the base of the next ``+`` line

Between two lines the runner advances virtual time the way the daemon's loop would: it
calls ``stack.tick(t)`` exactly at each ``stack.next_deadline()`` up to the next line's
time, and at nothing else.  Every segment the stack emits is queued with the time it was
emitted and must be claimed by a ``>`` line; a segment still unclaimed when a later-timed
line runs (or at the end of the script) fails the script with the line, the segment and
the recent trace.

Segments (``<`` inbound from the remote, ``>`` expected outbound from the engine)::

    < [RPORT] FLAGS START:END(LEN) [ack N] [win W] [urg U] [<OPTIONS>]
    > [RPORT] FLAGS START:END(LEN) [ack N] [win W] [<OPTIONS>]
    >? ...   an optional outbound segment (behaviour the RFCs leave to the
             implementation): claimed when the engine sends it at that time, else skipped

    RPORT    optional remote port selecting the flow (default: ``option remote_port``, or
             the port of the last ``app connect``); one flow per remote port
    FLAGS    S=SYN F=FIN R=RST P=PSH .=ACK U=URG E=ECE W=CWR (``S.`` is SYN+ACK, ``.`` alone
             is a bare ACK).  Outbound flags must match exactly, except PSH, which is
             ignored unless ``option strict_psh=1``, and letters followed by ``?``
             (``F?P.``: FIN may or may not ride on this data segment).
    START    relative sequence number: inbound → relative to the remote ISN
             (``option remote_isn``); outbound → relative to the engine's ISN, which the
             runner learns from the engine's SYN or SYN-ACK (``> S. 0:0(0)`` means "this
             is ISN+0").  Before it is learned the engine's ISN is taken as 0, so
             numbers are absolute (handy for RSTs to unknown flows).
    ack      inbound: relative to the engine's ISN; outbound: relative to the remote ISN
    win      the raw 16-bit window field (not scaled); inbound default 65535
    payload  inbound payload bytes are generated from a fixed pattern indexed by relative
             sequence number, so ``app recv`` can check that the bytes delivered are the
             right ones; outbound payload is checked against what ``app send`` gave.

    OPTIONS  comma separated: ``mss N``, ``wscale N``, ``sackOK``, ``TS val V ecr E``,
             ``sack L:R L:R`` (relative; outbound blocks relative to the remote ISN, inbound
             ones to the engine's), ``nop``, ``eol`` (layout only, ignored).
             Inbound: ``TS ... ecr *`` echoes the engine's latest TSval.
             Outbound: omitted ``<...>`` = options not checked; given = the set of options
             must be exactly the one listed, unless the list ends with ``...``.

In expectations every number may be a *matcher*: ``*`` (anything), ``N``, ``>=N``,
``<=N``, ``>N``, ``<N``, ``!N``, ``A..B`` (inclusive range), ``N~D`` (within D).

Other actions::

    config k=v ...         StackConfig fields (before the stack is created, i.e. before the
                           first line that needs it)
    option k=v ...         runner options: remote_isn, remote_port, local_port,
                           tolerance, wait, strict_psh, isn_key
    listen PORT [backlog=N] [k=v ...]        Stack.listen on 10.77.0.1 (k=v: overrides)
    app [RPORT] connect PORT [k=v ...]       Stack.connect to 10.77.0.2:PORT from
                                             option local_port; the flow's port becomes PORT
    app [RPORT] send N|"text" [== M|*]       Connection.send; returned count must be M
                                             (default: N)
    app [RPORT] recv N [== M|*]              Connection.recv(N); length must be M (default
                                             N); bytes are checked against the stream
    app [RPORT] shutdown | close | abort
    app [RPORT] set nodelay=1 keepalive=1 ...  set Connection attributes
    event [RPORT] KIND     an event of that kind (connected, accepted, readable, writable,
                           peer_closed, reset, timed_out, refused, closed) was reported for
                           the flow since the last ``event`` line; consumes it and all
                           before it
    noevent [RPORT] KIND   no such event is pending for the flow
    expect [RPORT] state NAME          Connection.state (RFC names: ESTABLISHED, ...)
    expect [RPORT] info k=M ...        Connection.info()[k] matches M (sequence-number
                                       keys such as snd_una / rcv_nxt are relative)
    expect [RPORT] readable M | eof | writable M
    expect stat k=M ...                stack-wide counters
    expect none                        only advance time (and so check nothing was sent)
    tick                               additionally call stack.tick(now) once
    drain                              discard every outbound segment sent so far (for
                                       scripts whose point lies elsewhere; use sparingly)

The stack is created with ``raise_errors=True`` (unless a ``config`` line says otherwise)
so that an internal error the stack would swallow and count fails the script.

A script's first comment block says what it checks and which RFC section (or Linux
behaviour) decides it. A line ``# XFAIL: ENGINE BUG: ...`` in that block makes
test_scripts.py run it as a strict xfail (see FINDINGS.md).

Running: ``Runner(text, name).run()`` raises ``ScriptFailure`` (an AssertionError) with a
readable message; ``parse_script(text)`` only parses (used to self-test the format).
From a shell, ``python tests/engine/runner.py FILE.pkt...`` runs scripts and prints the
trace of each (handy when writing one).
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

MOD = 1 << 32
EPS = 1e-9

LOCAL_ADDR = bytes([10, 77, 0, 1])
REMOTE_ADDR = bytes([10, 77, 0, 2])

FLAG_LETTERS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, ".": 0x10, "U": 0x20,
                "E": 0x40, "W": 0x80}
PSH = 0x08

# info() keys holding sequence numbers: shown and matched relative to the ISN of the
# side that owns that sequence space (like every number in a script)
LOCAL_SEQ_KEYS = {"snd_una", "snd_nxt", "snd_max", "iss", "snd_recover", "recover",
                  "snd_wl2", "high_rxt", "rescue_rxt"}
REMOTE_SEQ_KEYS = {"rcv_nxt", "irs", "snd_wl1", "rcv_adv", "rcv_wup"}


class ScriptError(Exception):
    """The script itself is malformed."""


class ScriptFailure(AssertionError):
    """The engine did not behave as the script says."""


# ---------------------------------------------------------------------------------------
# matchers
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Matcher:
    text: str
    fn: Callable[[Any], bool] = field(compare=False, repr=False)
    exact: Optional[float] = None        # the value when the matcher is a plain number

    def __call__(self, value) -> bool:
        try:
            return bool(self.fn(value))
        except TypeError:
            return False

    def __str__(self):
        return self.text


_NUM = r"[-+]?(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)"


def parse_number(tok: str):
    tok = tok.strip()
    if re.fullmatch(r"[-+]?0x[0-9a-fA-F]+", tok):
        return int(tok, 16)
    if re.fullmatch(r"[-+]?\d+", tok):
        return int(tok)
    return float(tok)


def parse_matcher(tok: str) -> Matcher:
    """``*``, ``N``, ``>=N`` ``<=N`` ``>N`` ``<N`` ``!N``, ``A..B``, ``N~D``; or a bare word
    (compared as a string, case-insensitive)."""
    t = tok.strip()
    if t == "*":
        return Matcher(t, lambda v: True)
    m = re.fullmatch(r"(>=|<=|>|<|!)(" + _NUM + ")", t)
    if m:
        op, n = m.group(1), parse_number(m.group(2))
        fn = {">=": lambda v: v >= n, "<=": lambda v: v <= n, ">": lambda v: v > n,
              "<": lambda v: v < n, "!": lambda v: v != n}[op]
        return Matcher(t, fn)
    m = re.fullmatch("(" + _NUM + r")\.\.(" + _NUM + ")", t)
    if m:
        a, b = parse_number(m.group(1)), parse_number(m.group(2))
        return Matcher(t, lambda v: a <= v <= b)
    m = re.fullmatch("(" + _NUM + ")~(" + _NUM + ")", t)
    if m:
        a, d = parse_number(m.group(1)), parse_number(m.group(2))
        return Matcher(t, lambda v: abs(v - a) <= d + EPS)
    if re.fullmatch(_NUM, t):
        n = parse_number(t)
        return Matcher(t, lambda v: v == n, exact=n)
    low = t.lower()
    if low in ("true", "false", "none"):
        val = {"true": True, "false": False, "none": None}[low]
        return Matcher(t, lambda v: v == val if val is not None else v is None)
    return Matcher(t, lambda v: str(v).lower() == low)


def parse_value(tok: str):
    """A config/option value: int, float, bool or string."""
    low = tok.lower()
    if low in ("true", "on", "yes"):
        return True
    if low in ("false", "off", "no"):
        return False
    if low == "none":
        return None
    try:
        return parse_number(tok)
    except ValueError:
        return tok.strip('"')


def parse_kv(tokens, allow_ops=False):
    """``k=v`` tokens into a list of (key, op-text, value-token)."""
    out = []
    for tok in tokens:
        m = re.fullmatch(r"([A-Za-z_][\w.]*)(=|>=|<=|>|<|!=)(.*)", tok)
        if not m:
            raise ScriptError(f"expected key=value, got {tok!r}")
        k, op, v = m.groups()
        if op != "=" and not allow_ops:
            raise ScriptError(f"only '=' is allowed here: {tok!r}")
        out.append((k, op, v))
    return out


def kv_matcher(op, v):
    if op == "=":
        return parse_matcher(v)
    if op == "!=":
        return parse_matcher("!" + v)
    return parse_matcher(op + v)


# ---------------------------------------------------------------------------------------
# parsed lines
# ---------------------------------------------------------------------------------------

@dataclass
class TimeSpec:
    kind: str                 # "abs" | "rel" | "any"
    value: float = 0.0
    tol: Optional[float] = None     # None: exact (or default tolerance when fuzzy)
    fuzzy: bool = False       # "~" given without explicit tolerance
    hi: Optional[float] = None      # interval form a..b (absolute or relative)


@dataclass
class OptSpec:
    """Options of a segment line; values are ints (inbound) or Matchers (outbound)."""
    given: bool = False
    open_ended: bool = False
    mss: Any = None
    wscale: Any = None
    sack_ok: bool = False
    ts: Optional[tuple] = None      # (val, ecr); ecr may be "*" inbound
    sack: Optional[list] = None     # list of (l, r)
    names: set = field(default_factory=set)


@dataclass
class SegSpec:
    direction: str            # "<" or ">"
    rport: Optional[int]
    flags: int
    start: Any                # int (inbound) / Matcher (outbound)
    end: Any
    length: Any
    ack: Any = None
    win: Any = None
    urp: Any = None
    opts: OptSpec = field(default_factory=OptSpec)
    optional: bool = False
    maybe_flags: int = 0      # flags that may or may not be set (outbound "F?")


@dataclass
class Action:
    kind: str                 # "seg", "config", "option", "listen", "app", "event",
                              # "noevent", "expect", "tick"
    args: Any
    text: str


@dataclass
class Line:
    lineno: int
    text: str
    time: TimeSpec
    actions: list


def _split_comment(line: str) -> str:
    # '#' starts a comment unless inside double quotes
    out, q = [], False
    for ch in line:
        if ch == '"':
            q = not q
        if ch == "#" and not q:
            break
        out.append(ch)
    return "".join(out).strip()


def _split_actions(s: str):
    parts, cur, q = [], [], False
    for ch in s:
        if ch == '"':
            q = not q
        if ch == ";" and not q:
            parts.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur).strip())
    return [p for p in parts if p]


def parse_time(tok: str) -> TimeSpec:
    if tok == "*":
        return TimeSpec("any")
    rel = tok.startswith("+")
    body = tok[1:] if rel else tok
    kind = "rel" if rel else "abs"
    if body.startswith("~"):
        return TimeSpec(kind, float(body[1:]), None, fuzzy=True)
    m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\.\.(\d+(?:\.\d*)?|\.\d+)", body)
    if m:
        return TimeSpec(kind, float(m.group(1)), hi=float(m.group(2)))
    m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)(?:~(\d+(?:\.\d*)?|\.\d+))?", body)
    if not m:
        raise ScriptError(f"bad time {tok!r}")
    val = float(m.group(1))
    if m.group(2) is not None:
        return TimeSpec(kind, val, float(m.group(2)))
    return TimeSpec(kind, val)


_SEG_RE = re.compile(
    r"^(?P<dir>[<>]\??)\s+(?:(?P<port>\d+)\s+)?(?P<flags>[SFRP.UEW?]+)\s+"
    r"(?P<start>\S+?):(?P<end>\S+?)\((?P<len>[^)]*)\)\s*(?P<rest>.*)$")


def _parse_seg_options(text: str, outbound: bool) -> OptSpec:
    spec = OptSpec(given=True)
    num = parse_matcher if outbound else (lambda t: parse_number(t))
    items = [i.strip() for i in text.split(",") if i.strip()]
    for item in items:
        words = item.split()
        name = words[0]
        lname = name.lower()
        if item == "...":
            spec.open_ended = True
            continue
        if lname in ("nop", "eol"):
            continue
        if lname == "mss" and len(words) == 2:
            spec.mss = num(words[1])
        elif lname == "wscale" and len(words) == 2:
            spec.wscale = num(words[1])
        elif lname in ("sackok", "sack_ok", "sack_perm"):
            spec.sack_ok = True
        elif lname == "ts" and len(words) == 5 and words[1] == "val" and words[3] == "ecr":
            val = num(words[2])
            ecr = words[4] if (not outbound and words[4] == "*") else num(words[4])
            spec.ts = (val, ecr)
        elif lname == "sack":
            blocks = []
            for b in words[1:]:
                m = re.fullmatch(r"(\S+):(\S+)", b)
                if not m:
                    raise ScriptError(f"bad SACK block {b!r}")
                blocks.append((num(m.group(1)), num(m.group(2))))
            spec.sack = blocks
        else:
            raise ScriptError(f"unknown TCP option {item!r}")
        spec.names.add({"sack_perm": "sackok", "sack_ok": "sackok"}.get(lname, lname))
    return spec


def parse_segment(text: str) -> SegSpec:
    m = _SEG_RE.match(text)
    if not m:
        raise ScriptError(f"cannot parse segment {text!r}")
    direction = m.group("dir")
    if direction == "<?":
        raise ScriptError("only outbound segments can be optional ('>?')")
    outbound = direction.startswith(">")
    flags = 0
    maybe = 0
    prev = 0
    for ch in m.group("flags"):
        if ch == "?":
            if not outbound or not prev:
                raise ScriptError(f"'?' follows an outbound flag letter: {text!r}")
            maybe |= prev
            flags &= ~prev
            continue
        prev = FLAG_LETTERS[ch]
        flags |= prev
    rport = int(m.group("port")) if m.group("port") else None
    conv = parse_matcher if outbound else parse_number
    try:
        start, end, length = (conv(m.group(g)) for g in ("start", "end", "len"))
    except ValueError as e:
        raise ScriptError(f"bad sequence range in {text!r}: {e}")
    if not outbound:
        if (end - start) % MOD != length:
            raise ScriptError(f"{start}:{end}({length}): end - start != length")
    spec = SegSpec(">" if outbound else "<", rport, flags, start, end, length,
                   optional=direction == ">?", maybe_flags=maybe)
    rest = m.group("rest").strip()
    opt_text = None
    om = re.search(r"<(.*)>\s*$", rest)
    if om:
        opt_text = om.group(1)
        rest = rest[:om.start()].strip()
    words = rest.split()
    i = 0
    while i < len(words):
        w = words[i]
        if w in ("ack", "win", "urg") and i + 1 < len(words):
            v = words[i + 1]
            val = parse_matcher(v) if outbound else parse_number(v)
            setattr(spec, {"ack": "ack", "win": "win", "urg": "urp"}[w], val)
            i += 2
        else:
            raise ScriptError(f"unexpected {w!r} in segment {text!r}")
    if opt_text is not None:
        spec.opts = _parse_seg_options(opt_text, outbound)
    if not outbound and spec.ack is None and flags & 0x10:
        raise ScriptError(f"inbound segment with ACK flag needs 'ack N': {text!r}")
    return spec


_EVENT_NAMES = ("connected", "accepted", "readable", "writable", "peer_closed", "reset",
                "timed_out", "refused", "closed")


def _take_port(words):
    if words and re.fullmatch(r"\d+", words[0]):
        return int(words[0]), words[1:]
    return None, words


def parse_action(text: str) -> Action:
    if text[0] in "<>":
        return Action("seg", parse_segment(text), text)
    try:
        words = shlex.split(text, posix=True)
    except ValueError as e:
        raise ScriptError(f"{text!r}: {e}")
    verb, rest = words[0], words[1:]
    if verb in ("config", "option"):
        return Action(verb, [(k, parse_value(v)) for k, _, v in parse_kv(rest)], text)
    if verb == "listen":
        if not rest:
            raise ScriptError("listen needs a port")
        port = int(rest[0])
        kv = dict((k, parse_value(v)) for k, _, v in parse_kv(rest[1:]))
        return Action("listen", (port, kv), text)
    if verb == "app":
        port, rest = _take_port(rest)
        if not rest:
            raise ScriptError("app needs a verb")
        sub, args = rest[0], rest[1:]
        if sub == "connect":
            if not args:
                raise ScriptError("app connect needs a port")
            target = args[0]
            target = target.rsplit(":", 1)[-1]
            kv = dict((k, parse_value(v)) for k, _, v in parse_kv(args[1:]))
            return Action("app", (port, "connect", int(target), kv), text)
        if sub in ("send", "recv"):
            if not args:
                raise ScriptError(f"app {sub} needs an argument")
            arg = args[0]
            want = None
            if len(args) >= 3 and args[1] == "==":
                want = parse_matcher(args[2])
            elif len(args) != 1:
                raise ScriptError(f"bad app {sub}: {text!r}")
            if sub == "send":
                is_text = re.search(r'send\s+"', text) is not None
                if is_text:
                    payload = arg.encode().decode("unicode_escape").encode("latin-1")
                else:
                    payload = int(arg)
            else:
                payload = int(arg)
            return Action("app", (port, sub, payload, want), text)
        if sub in ("close", "shutdown", "abort"):
            if args:
                raise ScriptError(f"app {sub} takes no argument")
            return Action("app", (port, sub), text)
        if sub == "set":
            kv = [(k, parse_value(v)) for k, _, v in parse_kv(args)]
            return Action("app", (port, "set", kv), text)
        raise ScriptError(f"unknown app verb {sub!r}")
    if verb in ("event", "noevent"):
        port, rest = _take_port(rest)
        if len(rest) != 1 or rest[0] not in _EVENT_NAMES:
            raise ScriptError(f"{verb} needs one of {', '.join(_EVENT_NAMES)}")
        return Action(verb, (port, rest[0]), text)
    if verb == "tick":
        return Action("tick", None, text)
    if verb == "drain":
        return Action("drain", None, text)
    if verb == "expect":
        port, rest = _take_port(rest)
        if not rest:
            raise ScriptError("expect needs a subject")
        sub, args = rest[0], rest[1:]
        if sub == "none":
            return Action("expect", (port, "none"), text)
        if sub == "state":
            if len(args) != 1:
                raise ScriptError("expect state NAME")
            return Action("expect", (port, "state", args[0].upper()), text)
        if sub in ("info", "stat"):
            kv = [(k, kv_matcher(op, v)) for k, op, v in parse_kv(args, allow_ops=True)]
            if not kv:
                raise ScriptError(f"expect {sub} needs k=v")
            return Action("expect", (port, sub, kv), text)
        if sub in ("readable", "writable"):
            return Action("expect", (port, sub, parse_matcher(args[0] if args else "true")),
                          text)
        if sub in ("eof", "noeof"):
            return Action("expect", (port, sub), text)
        if sub == "conn":
            return Action("expect", (port, "conn", args[0] if args else "none"), text)
        raise ScriptError(f"unknown expectation {sub!r}")
    raise ScriptError(f"unknown action {verb!r}")


def parse_script(text: str) -> list:
    lines = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        body = _split_comment(raw)
        if not body:
            continue
        tok, _, rest = body.partition(" ")
        rest = rest.strip()
        try:
            ts = parse_time(tok)
            if not rest:
                raise ScriptError("line has a time but no action")
            actions = [parse_action(a) for a in _split_actions(rest)]
        except ScriptError as e:
            raise ScriptError(f"line {lineno}: {raw.strip()!r}: {e}") from None
        if ts.kind == "any" or ts.fuzzy or ts.hi is not None:
            if not (len(actions) == 1 and actions[0].kind == "seg"
                    and actions[0].args.direction == ">"):
                raise ScriptError(f"line {lineno}: '*', '~' and 'a..b' times are only for "
                                  f"a single outbound segment")
        lines.append(Line(lineno, raw.rstrip(), ts, actions))
    return lines


# ---------------------------------------------------------------------------------------
# payload patterns (so that delivered bytes are checked, not just counted)
# ---------------------------------------------------------------------------------------

# The period divides 2^32, so the byte at a relative sequence number is the same
# whichever way that number was reached (across the 2^32 wrap included); the bytes come
# from a hash chain, so no shorter period hides an offset error.
_PERIOD = 1 << 16


def _make_pattern(tag: bytes) -> bytes:
    import hashlib
    out = bytearray()
    h = tag
    while len(out) < _PERIOD:
        h = hashlib.sha256(h).digest()
        out += h
    return bytes(out[:_PERIOD]) * 2


_REMOTE_PAT = _make_pattern(b"fpd remote")
_LOCAL_PAT = _make_pattern(b"fpd local")


def _pattern(pat: bytes, start: int, n: int) -> bytes:
    start %= _PERIOD
    out = bytearray()
    while n > 0:
        take = min(n, _PERIOD)
        out += pat[start:start + take]
        start = (start + take) % _PERIOD
        n -= take
    return bytes(out)


def remote_payload(rel_seq: int, n: int) -> bytes:
    """The bytes the scripted remote sends at relative sequence number ``rel_seq``."""
    return _pattern(_REMOTE_PAT, rel_seq % MOD, n)


# ---------------------------------------------------------------------------------------
# engine glue (kept in one place so API drift is a one-line fix)
# ---------------------------------------------------------------------------------------

def _engine():
    import fpd.stack as stack_mod
    import fpd.tcp as tcp_mod
    import fpd.wire as wire_mod
    return stack_mod, tcp_mod, wire_mod


def event_names(tcp_mod) -> dict:
    """Map the engine's event kind values to the script's lower-case names."""
    names = {}
    for n in _EVENT_NAMES:
        v = getattr(tcp_mod.Event, n.upper(), None)
        if v is not None:
            names[v] = n
    return names


def conn_rport(conn):
    """The remote port of a Connection, whatever the engine calls it."""
    for attr in ("rport", "remote_port", "dport", "peer_port", "raddr_port"):
        v = getattr(conn, attr, None)
        if isinstance(v, int):
            return v
    for attr in ("remote", "raddr", "peer", "key"):
        v = getattr(conn, attr, None)
        if isinstance(v, tuple):
            ints = [x for x in v if isinstance(x, int)]
            if attr == "key" and len(v) == 4:
                return v[3] if isinstance(v[3], int) else None
            if ints:
                return ints[-1]
    try:
        info = conn.info()
    except Exception:           # pragma: no cover - diagnostics only
        return None
    for k in ("rport", "remote_port", "dport", "peer_port"):
        if isinstance(info.get(k), int):
            return info[k]
    return None


def stack_counters(st) -> dict:
    for attr in ("counters", "stats"):
        v = getattr(st, attr, None)
        if callable(v):
            v = v()
        if isinstance(v, dict):
            return v
        if v is not None and hasattr(v, "__dict__"):
            return dict(vars(v))
        if v is not None and hasattr(v, "__slots__"):
            return {k: getattr(v, k) for k in v.__slots__}
    return {}


# ---------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------

@dataclass
class Flow:
    rport: int
    lport: int
    remote_isn: int
    local_isn: Optional[int] = None
    conn: Any = None
    listener_side: bool = True
    sent: bytearray = field(default_factory=bytearray)   # app-sent stream
    send_base: int = 1          # relative seq of sent[0]
    recv_rel: Optional[int] = None   # relative seq of the next byte app should read
    last_tsval: Optional[int] = None
    events: list = field(default_factory=list)          # [(time, name, extra)]

    def lisn(self):
        return self.local_isn if self.local_isn is not None else 0


def render_segment(seg, flow: Optional[Flow], outbound=True) -> str:
    """A segment in script notation (relative numbers) — used in failure messages."""
    fl = ""
    for ch, bit in (("S", 0x02), ("F", 0x01), ("R", 0x04), ("P", 0x08), ("U", 0x20),
                    ("E", 0x40), ("W", 0x80)):
        if seg.flags & bit:
            fl += ch
    if seg.flags & 0x10:
        fl += "."
    if not fl:
        fl = "-"
    if flow is not None:
        my_isn, peer_isn = ((flow.lisn(), flow.remote_isn) if outbound
                            else (flow.remote_isn, flow.lisn()))
    else:
        my_isn = peer_isn = 0
    s = (seg.seq - my_isn) % MOD
    n = len(seg.payload)
    out = f"{'>' if outbound else '<'} {fl} {s}:{(s + n) % MOD}({n})"
    if seg.flags & 0x10:
        out += f" ack {(seg.ack - peer_isn) % MOD}"
    out += f" win {seg.wnd}"
    opts = []
    if seg.mss is not None:
        opts.append(f"mss {seg.mss}")
    if seg.sack_ok:
        opts.append("sackOK")
    if seg.tsval is not None:
        opts.append(f"TS val {seg.tsval} ecr {seg.tsecr}")
    if seg.wscale is not None:
        opts.append(f"wscale {seg.wscale}")
    if seg.sack:
        opts.append("sack " + " ".join(f"{(l - peer_isn) % MOD}:{(r - peer_isn) % MOD}"
                                       for l, r in seg.sack))
    if opts:
        out += " <" + ",".join(opts) + ">"
    out += f"   [{seg.sport}>{seg.dport}]"
    return out


class Runner:
    def __init__(self, text: str, name: str = "<script>", *, engine=None):
        self.name = name
        self.lines = parse_script(text)
        self.stack_mod, self.tcp_mod, self.wire_mod = engine or _engine()
        self.ev_names = event_names(self.tcp_mod)
        self.config: dict = {}
        self.opts = {"remote_isn": 1_000_000_000, "remote_port": 40000, "local_port": 8080,
                     "tolerance": 0.01, "wait": 300.0, "strict_psh": False,
                     "isn_key": "fpd-script-key"}
        self.st = None
        self.now = 0.0
        self.flows: dict = {}
        self.default_rport = None
        self.pending: list = []          # [(time, seg)] emitted and not yet claimed
        self.trace: list = []            # recent history for failure messages
        self.listeners: list = []
        self.line: Optional[Line] = None
        self.prev_time = 0.0
        self.last_syn_flow: Optional[Flow] = None

    # ---- helpers -----------------------------------------------------------------
    def fail(self, msg: str):
        where = f"{os.path.basename(self.name)}:{self.line.lineno}" if self.line else self.name
        text = self.line.text.strip() if self.line else "(end of script)"
        tail = "\n".join(self.trace[-25:])
        pend = "\n".join(f"  {t:.6f} {render_segment(s, self._flow_of_seg(s))}"
                         for t, s in self.pending)
        raise ScriptFailure(f"{where}: {msg}\n  script line: {text}\n  now={self.now:.6f}"
                            + (f"\n  unclaimed outbound:\n{pend}" if pend else "")
                            + f"\n  recent trace:\n{tail}")

    def _log(self, s: str):
        self.trace.append(f"  {self.now:10.6f} {s}")
        if len(self.trace) > 200:
            del self.trace[:100]

    def flow(self, rport=None) -> Flow:
        if rport is None:
            rport = self.default_rport if self.default_rport is not None \
                else self.opts["remote_port"]
        f = self.flows.get(rport)
        if f is None:
            f = Flow(rport, int(self.opts["local_port"]), int(self.opts["remote_isn"]) % MOD)
            self.flows[rport] = f
        return f

    def _opening(self, f: Flow) -> bool:
        if f.conn is None:
            return True
        st = str(f.conn.state).upper().rsplit(".", 1)[-1]
        return st in ("SYN_SENT", "TIME_WAIT", "CLOSED", "LISTEN")

    def _flow_of_seg(self, seg) -> Optional[Flow]:
        return self.flows.get(seg.dport)

    def ensure_stack(self):
        if self.st is not None:
            return
        conf = dict(self.config)
        # internal errors surface as exceptions in tests (the stack would count them)
        fields = getattr(self.stack_mod.StackConfig, "__dataclass_fields__", {})
        if "raise_errors" in fields:
            conf.setdefault("raise_errors", True)
        cfg = self.stack_mod.StackConfig(**conf)
        key = self.opts["isn_key"]
        if isinstance(key, str):
            key = key.encode()
        self.st = self.stack_mod.Stack(isn_key=key, config=cfg)

    def collect(self):
        """Drain the stack's output and events after any call into it."""
        for seg in self.st.output():
            self.pending.append((self.now, seg))
            f = self._flow_of_seg(seg)
            if seg.tsval is not None and f is not None:
                f.last_tsval = seg.tsval
            self._log("sent " + render_segment(seg, f))
        for ev in self.st.events():
            kind, obj, *extra = ev
            name = self.ev_names.get(kind, str(kind))
            conn = extra[0] if name == "accepted" and extra else obj
            f = self._flow_of_conn(conn, name)
            if f is not None:
                if name == "accepted" and f.conn is not conn:
                    f.conn = conn
                    f.sent = bytearray()
                    f.send_base = 1
                f.events.append((self.now, name, extra))
            self._log(f"event {name}" + (f" (flow {f.rport})" if f else " (no flow)"))

    def _flow_of_conn(self, conn, name) -> Optional[Flow]:
        if conn is None:
            return None
        for f in self.flows.values():
            if f.conn is conn:
                return f
        rport = conn_rport(conn)
        if rport is not None:
            if rport in self.flows or name == "accepted":
                return self.flow(rport)
            return None
        return self.last_syn_flow if name == "accepted" else None

    def check_no_pending_before(self, t: float):
        for et, seg in self.pending:
            if et < t - EPS:
                self.fail(f"unexpected outbound segment sent at {et:.6f}:\n    "
                          + render_segment(seg, self._flow_of_seg(seg)))

    def advance(self, t: float, stop: Optional[Callable[[], bool]] = None):
        """Run timers up to time t (inclusive); stop early when stop() is true."""
        if self.st is None:
            self.now = max(self.now, t)
            return
        same, last_d = 0, None
        while True:
            if stop is not None and stop():
                return
            d = self.st.next_deadline()
            if d is None or d > t + EPS:
                break
            if last_d is not None and d <= last_d + EPS:
                same += 1
                if same > 1000:
                    self.fail(f"next_deadline() stays at {d} after tick() — timer never "
                              f"disarmed")
            else:
                same = 0
            last_d = d
            self.now = max(self.now, d)
            self.st.tick(self.now)
            self.collect()
        self.now = max(self.now, t)

    # ---- sequence mapping ------------------------------------------------------------
    @staticmethod
    def _abs(isn, rel):
        return (isn + rel) % MOD

    @staticmethod
    def _rel(isn, v):
        return (v - isn) % MOD

    # ---- segment lines ---------------------------------------------------------------
    def do_inbound(self, spec: SegSpec):
        f = self.flow(spec.rport)
        W = self.wire_mod
        seq = self._abs(f.remote_isn, spec.start)
        payload = remote_payload(spec.start, spec.length) if spec.length else b""
        if spec.flags & 0x02 and self._opening(f):
            # a SYN that opens a connection starts the remote's stream for 'app recv'
            f.recv_rel = (spec.start + 1) % MOD
            self.last_syn_flow = f
        ack = self._abs(f.lisn(), spec.ack) if spec.ack is not None else 0
        o = spec.opts
        tsval, tsecr = None, 0
        if o.ts is not None:
            tsval = o.ts[0] % MOD
            if o.ts[1] == "*":
                if f.last_tsval is None:
                    self.fail("'ecr *' but the engine has not sent a timestamp yet")
                tsecr = f.last_tsval
            else:
                tsecr = o.ts[1] % MOD
        sack = ()
        if o.sack:
            sack = tuple((self._abs(f.lisn(), l), self._abs(f.lisn(), r)) for l, r in o.sack)
        seg = W.Segment(src=REMOTE_ADDR, dst=LOCAL_ADDR, sport=f.rport, dport=f.lport,
                        seq=seq, ack=ack, flags=spec.flags,
                        wnd=65535 if spec.win is None else spec.win,
                        urp=spec.urp or 0, mss=o.mss, wscale=o.wscale, sack_ok=o.sack_ok,
                        tsval=tsval, tsecr=tsecr, sack=sack, payload=payload)
        self._log("recv " + render_segment(seg, f, outbound=False))
        self.st.input(seg, self.now)
        self.collect()

    def match_outbound(self, spec: SegSpec, seg, f: Flow, learn: bool) -> Optional[str]:
        """None when seg matches spec, else a reason."""
        if seg.src != LOCAL_ADDR or seg.dst != REMOTE_ADDR:
            return f"addresses {seg.src!r}>{seg.dst!r}"
        if seg.sport != f.lport:
            return f"source port {seg.sport}, expected {f.lport}"
        mask = 0xFF if self.opts["strict_psh"] else 0xFF & ~PSH
        mask &= ~spec.maybe_flags
        if (seg.flags & mask) != (spec.flags & mask):
            return "flags differ"
        isn = f.lisn()
        if learn and seg.flags & 0x02:
            base = spec.start.exact if spec.start.exact is not None else 0
            isn = (seg.seq - int(base)) % MOD
        rs = self._rel(isn, seg.seq)
        n = len(seg.payload)
        if not spec.start(rs):
            return f"seq {rs}, expected {spec.start}"
        if not spec.end((rs + n) % MOD):
            return f"end {(rs + n) % MOD}, expected {spec.end}"
        if not spec.length(n):
            return f"length {n}, expected {spec.length}"
        if spec.ack is not None:
            if not seg.flags & 0x10:
                return "no ACK flag"
            ra = self._rel(f.remote_isn, seg.ack)
            if not spec.ack(ra):
                return f"ack {ra}, expected {spec.ack}"
        if spec.win is not None and not spec.win(seg.wnd):
            return f"win {seg.wnd}, expected {spec.win}"
        o = spec.opts
        if o.given:
            present = set()
            if seg.mss is not None:
                present.add("mss")
            if seg.wscale is not None:
                present.add("wscale")
            if seg.sack_ok:
                present.add("sackok")
            if seg.tsval is not None:
                present.add("ts")
            if seg.sack:
                present.add("sack")
            if o.open_ended:
                if not o.names <= present:
                    return f"options {sorted(present)} lack {sorted(o.names - present)}"
            elif o.names != present:
                return f"options {sorted(present)}, expected {sorted(o.names)}"
            if o.mss is not None and not o.mss(seg.mss):
                return f"mss {seg.mss}, expected {o.mss}"
            if o.wscale is not None and not o.wscale(seg.wscale):
                return f"wscale {seg.wscale}, expected {o.wscale}"
            if o.ts is not None:
                if not o.ts[0](seg.tsval):
                    return f"TS val {seg.tsval}, expected {o.ts[0]}"
                if not o.ts[1](seg.tsecr):
                    return f"TS ecr {seg.tsecr}, expected {o.ts[1]}"
            if o.sack is not None:
                got = [(self._rel(f.remote_isn, l), self._rel(f.remote_isn, r))
                       for l, r in seg.sack]
                if len(got) != len(o.sack):
                    return f"sack blocks {got}, expected {[(str(a), str(b)) for a, b in o.sack]}"
                for (gl, gr), (ml, mr) in zip(got, o.sack):
                    if not (ml(gl) and mr(gr)):
                        return f"sack blocks {got}, expected " \
                               f"{' '.join(f'{a}:{b}' for a, b in o.sack)}"
        # payload bytes must be what the application wrote at that sequence number
        if n and not seg.flags & 0x02:
            off = (rs - f.send_base) % MOD
            if off + n > len(f.sent):
                return (f"payload {rs}:{rs + n} is beyond what the application sent "
                        f"({len(f.sent)} bytes)")
            if bytes(seg.payload) != bytes(f.sent[off:off + n]):
                return f"payload bytes at {rs} differ from what the application sent"
        if learn and seg.flags & 0x02:
            f.local_isn = isn
        return None

    def do_outbound(self, spec: SegSpec, ts: TimeSpec):
        f = self.flow(spec.rport)
        tol = self.opts["tolerance"]
        if ts.kind == "any":
            lo, hi = self.now, self.now + float(self.opts["wait"])
        else:
            base = self.prev_time if ts.kind == "rel" else 0.0
            t = base + ts.value
            if ts.hi is not None:
                lo, hi = t, base + ts.hi
            elif ts.fuzzy:
                lo, hi = t - tol, t + tol
            elif ts.tol is not None:
                lo, hi = t - ts.tol, t + ts.tol
            else:
                lo = hi = t
        # nothing (for any flow) may have been sent before the window opens
        self.advance(lo)
        self.check_no_pending_before(lo)

        def mine():
            return any(s.dport == f.rport for _, s in self.pending)

        if not mine():
            self.advance(hi, stop=mine)
        idx = next((i for i, (_, s) in enumerate(self.pending) if s.dport == f.rport), None)
        if spec.optional:
            # implementation-defined segment: claimed if it is there and matches
            if idx is not None:
                et, seg = self.pending[idx]
                if lo - EPS <= et <= hi + EPS and \
                        self.match_outbound(spec, seg, f, learn=True) is None:
                    del self.pending[idx]
                    self._log("  ok (optional) " + self.line.text.strip())
                    return None
            self._log("  absent (optional) " + self.line.text.strip())
            return None
        if idx is None:
            if ts.kind == "any":
                self.fail(f"expected outbound segment never came (waited "
                          f"{self.opts['wait']} s)")
            self.fail(f"expected outbound segment was not sent by {hi:.6f}")
        et, seg = self.pending[idx]
        if et < lo - EPS or et > hi + EPS:
            self.fail(f"segment sent at {et:.6f}, expected in [{lo:.6f}, {hi:.6f}]:\n    "
                      + render_segment(seg, f))
        why = self.match_outbound(spec, seg, f, learn=True)
        if why is not None:
            self.fail(f"outbound segment mismatch: {why}\n    actual: "
                      f"{render_segment(seg, f)}\n    at {et:.6f}")
        del self.pending[idx]
        self._log("  ok " + self.line.text.strip())
        if ts.kind == "any":
            self.prev_time = et
            return "actual"

    # ---- application ----------------------------------------------------------------
    def _conn(self, f: Flow):
        if f.conn is None:
            self.fail(f"no connection on flow {f.rport} (no 'accepted'/'connect' yet)")
        return f.conn

    def do_app(self, args):
        port, verb = args[0], args[1]
        if verb == "connect":
            rport, kv = args[2], args[3]
            f = self.flow(rport)
            f.listener_side = False
            f.lport = int(self.opts["local_port"])
            self.default_rport = rport
            conn = self.st.connect(self.now, LOCAL_ADDR, f.lport, REMOTE_ADDR, rport, **kv)
            f.conn = conn
            f.sent = bytearray()
            f.send_base = 1
            f.events = []
            self.collect()
            return
        f = self.flow(port)
        conn = self._conn(f)
        if verb == "send":
            payload, want = args[2], args[3]
            if isinstance(payload, int):
                off = len(f.sent)
                data = _pattern(_LOCAL_PAT, off, payload)
            else:
                data = payload
            r = conn.send(data, self.now)
            self.collect()
            if want is None:
                want = parse_matcher(str(len(data)))
            if not want(r):
                self.fail(f"send returned {r}, expected {want}")
            if isinstance(r, int) and r > 0:
                f.sent += data[:r]
        elif verb == "recv":
            n, want = args[2], args[3]
            data = conn.recv(n)
            self.collect()
            if want is None:
                want = parse_matcher(str(n))
            if not want(len(data)):
                self.fail(f"recv returned {len(data)} bytes, expected {want}")
            if f.recv_rel is None:
                f.recv_rel = 1
            exp = remote_payload(f.recv_rel, len(data))
            if bytes(data) != exp:
                self.fail(f"recv returned the wrong bytes at relative seq {f.recv_rel}")
            f.recv_rel = (f.recv_rel + len(data)) % MOD
        elif verb in ("close", "shutdown", "abort"):
            getattr(conn, verb)(self.now)
            self.collect()
        elif verb == "set":
            for k, v in args[2]:
                setattr(conn, k, v)
            self.collect()

    def do_event(self, kind, args):
        port, name = args
        f = self.flow(port)
        idx = next((i for i, e in enumerate(f.events) if e[1] == name), None)
        if kind == "event":
            if idx is None:
                seen = ", ".join(f"{e[1]}@{e[0]:.3f}" for e in f.events) or "none"
                self.fail(f"no '{name}' event on flow {f.rport}; pending events: {seen}")
            del f.events[:idx + 1]
        else:
            if idx is not None:
                self.fail(f"unexpected '{name}' event on flow {f.rport} at "
                          f"{f.events[idx][0]:.6f}")

    def do_expect(self, args):
        port, sub = args[0], args[1]
        if sub == "none":
            return
        if sub == "stat":
            stats = stack_counters(self.st)
            for k, m in args[2]:
                if k not in stats:
                    self.fail(f"no stack counter {k!r}; have {sorted(stats)}")
                if not m(stats[k]):
                    self.fail(f"stack counter {k} = {stats[k]}, expected {m}")
            return
        f = self.flow(port)
        if sub == "conn":
            if args[2] == "none" and f.conn is not None:
                self.fail(f"flow {f.rport} has a connection")
            return
        conn = self._conn(f)
        if sub == "state":
            st = str(conn.state).upper().replace("-", "_")
            if "." in st:
                st = st.rsplit(".", 1)[-1]
            if st != args[2]:
                self.fail(f"state is {st}, expected {args[2]}")
        elif sub == "info":
            info = conn.info()
            for k, m in args[2]:
                if k not in info:
                    self.fail(f"info() has no {k!r}; keys: {sorted(info)}")
                v = info[k]
                if isinstance(v, int) and not isinstance(v, bool):
                    if k in LOCAL_SEQ_KEYS:
                        v = self._rel(f.lisn(), v)
                    elif k in REMOTE_SEQ_KEYS:
                        v = self._rel(f.remote_isn, v)
                if not m(v):
                    self.fail(f"info {k} = {v!r}, expected {m}")
        elif sub in ("readable", "writable"):
            v = getattr(conn, sub)
            if callable(v):
                v = v()
            if not args[2](v):
                self.fail(f"{sub} = {v!r}, expected {args[2]}")
        elif sub in ("eof", "noeof"):
            v = conn.eof
            if callable(v):
                v = v()
            if bool(v) != (sub == "eof"):
                self.fail(f"eof = {v!r}")

    # ---- main loop ------------------------------------------------------------------
    def line_time(self, ts: TimeSpec) -> float:
        if ts.kind == "abs":
            return ts.value
        return self.prev_time + ts.value

    def run(self):
        for line in self.lines:
            self.line = line
            actions = line.actions
            needs_stack = any(a.kind not in ("config", "option") for a in actions)
            if needs_stack:
                self.ensure_stack()
            first = actions[0]
            if first.kind == "seg" and first.args.direction == ">":
                if self.do_outbound(first.args, line.time) != "actual":
                    self.prev_time = self.line_time(line.time)
                continue
            t = self.line_time(line.time)
            if t < self.now - EPS:
                self.fail(f"time goes backwards ({t} < now {self.now})")
            self.advance(t)
            if actions[0].kind != "drain":
                self.check_no_pending_before(t)
            self.prev_time = t
            for a in actions:
                self.run_action(a, line)
        self.line = None
        if self.st is not None:
            self.check_no_pending_before(self.now + 1.0)
        return self

    def run_action(self, a: Action, line: Line):
        if a.kind == "config":
            if self.st is not None:
                self.fail("config after the stack was created")
            self.config.update(a.args)
        elif a.kind == "option":
            for k, v in a.args:
                if k not in self.opts:
                    self.fail(f"unknown runner option {k!r}")
                self.opts[k] = v
        elif a.kind == "listen":
            port, kv = a.args
            backlog = kv.pop("backlog", 128)
            lst = self.st.listen(LOCAL_ADDR if not kv.pop("any", False) else b"\0\0\0\0",
                                 port, backlog=backlog, **kv)
            self.listeners.append(lst)
            self.opts["local_port"] = port
            self.collect()
        elif a.kind == "seg":
            if a.args.direction == ">":
                self.fail("an outbound segment must be alone on its line")
            self.do_inbound(a.args)
        elif a.kind == "app":
            self.do_app(a.args)
        elif a.kind in ("event", "noevent"):
            self.do_event(a.kind, a.args)
        elif a.kind == "expect":
            self.do_expect(a.args)
        elif a.kind == "tick":
            self.st.tick(self.now)
            self.collect()
        elif a.kind == "drain":
            for et, seg in self.pending:
                self._log("drained " + render_segment(seg, self._flow_of_seg(seg)))
            self.pending.clear()


def run_file(path: str, engine=None) -> Runner:
    with open(path) as fh:
        text = fh.read()
    return Runner(text, path, engine=engine).run()


def script_header(text: str) -> str:
    """The leading comment block of a script (its description)."""
    out = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#"):
            out.append(s.lstrip("#").strip())
        elif s:
            break
    return "\n".join(out)


if __name__ == "__main__":          # pragma: no cover - developer convenience
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    status = 0
    for path in sys.argv[1:]:
        try:
            r = run_file(path)
            print(f"{path}: ok")
            print("\n".join(r.trace))
        except (ScriptFailure, ScriptError) as e:
            status = 1
            print(f"{path}: FAILED\n{e}")
    sys.exit(status)
