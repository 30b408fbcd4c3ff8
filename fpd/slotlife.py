"""A slot's life as explicit transition tables, one per side (the shape of h11's
``_state.py``).

A slot (one connection or listener of one client, see docs/DAEMON.md) is described on
the daemon's side by four independent tracks, each a small state machine:

    conn   what the engine did:    NEW -> LISTENING | CONNECTING | OPEN -> ENDING -> CLOSED
    rx     the receive direction:  RX_OPEN -> PEER_FIN -> RX_EOF
    tx     the send direction:     TX_OPEN -> TX_SHUT
    hold   who holds the slot:     HELD -> RELEASED

:data:`DAEMON` is the one table: ``{track: {state: {event: next state}}}``; every event
belongs to exactly one track. :meth:`SlotLife.fire` makes a move and raises
:class:`IllegalMove` (state unchanged) for one the table does not list. The service
(:mod:`fpd.control`) reads the states instead of keeping flags: ``conn CLOSED`` = the slot
was announced CLOSED (nothing more happens), ``conn ENDING`` = the engine ended the
connection but received bytes are still being delivered, ``rx RX_EOF`` = the RX ring
carries its EOF, ``tx TX_SHUT`` = a FIN follows the TX ring's last byte, ``hold
RELEASED`` = the client gave the slot back (it is freed once ``conn`` is CLOSED).

On the client's side (:class:`fpd.client.socket`) the socket is five tracks of
:data:`CLIENT`, moved by :meth:`SockLife.fire`:

    use    the socket's own phase: NEW -> CONNECTING -> CONNECTED | FAILED; NEW -> LISTENING;
           any -> CLOSED
    peer   the daemon's word on the connection: LIVE -> ENDED (EV_CLOSED or the slot's
           state word; ``end_errno`` says why) -> REPORTED (its error was raised once:
           from then on recv sees EOF and send EPIPE)
    link   the daemon itself: OK -> GONE (it went away) | CORRUPT (its words for this
           slot broke the rules) | FORKED (the socket belongs to the parent process)
    rd/wr  the directions the application shut down

``renew`` (a new connect on a FAILED socket) moves four tracks at once. Events that
name several tracks move all or none.

Pure: no I/O, no clock, imports nothing of fpd (the tables are fuzzed on their own).
"""

from __future__ import annotations

__all__ = ["IllegalMove", "SlotLife", "SockLife", "DAEMON", "CLIENT", "EVENTS",
           "CLIENT_EVENTS",
           "NEW", "LISTENING", "CONNECTING", "OPEN", "ENDING", "CLOSED",
           "RX_OPEN", "PEER_FIN", "RX_EOF", "TX_OPEN", "TX_SHUT", "HELD", "RELEASED"]

# states (strings: readable in errors and logs)
NEW, LISTENING, CONNECTING, OPEN, ENDING, CLOSED = (
    "NEW", "LISTENING", "CONNECTING", "OPEN", "ENDING", "CLOSED")
RX_OPEN, PEER_FIN, RX_EOF = "RX_OPEN", "PEER_FIN", "RX_EOF"
TX_OPEN, TX_SHUT = "TX_OPEN", "TX_SHUT"
HELD, RELEASED = "HELD", "RELEASED"

DAEMON = {
    "conn": {
        NEW:        {"listen": LISTENING, "connect": CONNECTING, "accept": OPEN},
        LISTENING:  {"finish": CLOSED},
        CONNECTING: {"connected": OPEN, "end": ENDING, "finish": CLOSED},
        OPEN:       {"end": ENDING, "finish": CLOSED},
        ENDING:     {"finish": CLOSED},      # (end is recorded once: the first reason)
        CLOSED:     {},                      # announced: nothing happens to it any more
    },
    "rx": {
        RX_OPEN:    {"peer_fin": PEER_FIN, "rx_eof": RX_EOF},
        PEER_FIN:   {"peer_fin": PEER_FIN, "rx_eof": RX_EOF},
        RX_EOF:     {"peer_fin": RX_EOF},    # the FIN was seen through the engine first
    },
    "tx": {
        TX_OPEN:    {"shut_wr": TX_SHUT},
        TX_SHUT:    {"shut_wr": TX_SHUT},    # OP_SHUTDOWN again, or TX EOF seen again
    },
    "hold": {
        HELD:       {"release": RELEASED},
        RELEASED:   {"release": RELEASED},   # a client may say close twice
    },
}
INITIAL = {"conn": NEW, "rx": RX_OPEN, "tx": TX_OPEN, "hold": HELD}

# the client's side
CONNECTED, FAILED = "CONNECTED", "FAILED"       # (NEW, CONNECTING, LISTENING, CLOSED above)
LIVE, ENDED, REPORTED = "LIVE", "ENDED", "REPORTED"
OK, GONE, CORRUPT, FORKED = "OK", "GONE", "CORRUPT", "FORKED"
RD_OPEN, RD_SHUT, WR_OPEN, WR_SHUT = "RD_OPEN", "RD_SHUT", "WR_OPEN", "WR_SHUT"

CLIENT = {
    "use": {
        NEW:        {"connect": CONNECTING, "listen": LISTENING, "accepted": CONNECTED,
                     "close": CLOSED},
        CONNECTING: {"connected": CONNECTED, "fail": FAILED, "close": CLOSED},
        CONNECTED:  {"close": CLOSED},
        LISTENING:  {"unlisten": NEW, "close": CLOSED},     # (a listen that failed)
        FAILED:     {"connect": CONNECTING, "fail": FAILED, "close": CLOSED},
        CLOSED:     {"close": CLOSED},
    },
    "peer": {
        LIVE:       {"ended": ENDED, "renew": LIVE},
        ENDED:      {"ended": ENDED, "reported": REPORTED, "renew": LIVE},
        REPORTED:   {"ended": REPORTED, "renew": LIVE},     # (the first end is kept)
    },
    "link": {
        OK:         {"daemon_gone": GONE, "corrupt": CORRUPT, "fork": FORKED, "renew": OK},
        GONE:       {"daemon_gone": GONE, "corrupt": CORRUPT, "fork": FORKED, "renew": OK},
        CORRUPT:    {"daemon_gone": GONE, "corrupt": CORRUPT, "fork": FORKED, "renew": OK},
        FORKED:     {"daemon_gone": FORKED, "corrupt": FORKED, "fork": FORKED},
    },
    "rd": {
        RD_OPEN:    {"shut_rd": RD_SHUT, "renew": RD_OPEN},
        RD_SHUT:    {"renew": RD_OPEN},
    },
    "wr": {
        WR_OPEN:    {"shut_wr": WR_SHUT, "renew": WR_OPEN},
        WR_SHUT:    {"renew": WR_OPEN},
    },
}
CLIENT_INITIAL = {"use": NEW, "peer": LIVE, "link": OK, "rd": RD_OPEN, "wr": WR_OPEN}


def _events(table) -> dict:
    """event -> [(track, {state: next state}), ...] (the tracks it moves)."""
    out: dict = {}
    for track, states in table.items():
        for state, moves in states.items():
            for ev, nxt in moves.items():
                if nxt not in states:
                    raise ValueError(f"{track}: {state} --{ev}--> unknown state {nxt}")
                per = out.setdefault(ev, {})
                per.setdefault(track, {})[state] = nxt
    return {ev: [(t, m) for t, m in per.items()] for ev, per in out.items()}


EVENTS = _events(DAEMON)
CLIENT_EVENTS = _events(CLIENT)


class IllegalMove(RuntimeError):
    """An event the table does not allow in the current state (a bug, not input)."""


class _Life:
    """Tracks held as ``<track>_st`` attributes, moved by :meth:`fire` per ``_TABLE``."""

    __slots__ = ()
    _TABLE: dict = {}
    _EVENTS: dict = {}

    def fire(self, event: str) -> None:
        """Move every track ``event`` names (all or none)."""
        moves = self._EVENTS.get(event)
        if moves is None:
            raise IllegalMove(f"unknown event {event!r}")
        nxt = []
        for track, m in moves:
            attr = track + "_st"
            cur = getattr(self, attr)
            n = m.get(cur)
            if n is None:
                raise IllegalMove(f"{track} {cur}: {event!r} is not allowed (allowed: "
                                  f"{sorted(self._TABLE[track][cur])})")
            nxt.append((attr, n))
        for attr, n in nxt:
            setattr(self, attr, n)

    def states(self) -> dict:
        return {t: getattr(self, t + "_st") for t in self._TABLE}


class SlotLife(_Life):
    """The daemon's four tracks of one slot (:data:`DAEMON`)."""

    __slots__ = ("conn_st", "rx_st", "tx_st", "hold_st")
    _TABLE = DAEMON
    _EVENTS = EVENTS

    def __init__(self):
        self.conn_st = NEW
        self.rx_st = RX_OPEN
        self.tx_st = TX_OPEN
        self.hold_st = HELD

    # the questions the service asks
    @property
    def done(self) -> bool:
        """Announced CLOSED: nothing more happens to this slot."""
        return self.conn_st == CLOSED

    @property
    def ending(self) -> bool:
        """The engine ended the connection; received bytes are still being delivered."""
        return self.conn_st == ENDING

    @property
    def released(self) -> bool:
        return self.hold_st == RELEASED


class SockLife(_Life):
    """The client's five tracks of one socket (:data:`CLIENT`). ``fast`` is true when
    nothing stands in the way of sending and receiving (connected, live, the daemon
    there, nothing shut down): the one test a socket's fast paths make."""

    __slots__ = ("use_st", "peer_st", "link_st", "rd_st", "wr_st", "fast")
    _TABLE = CLIENT
    _EVENTS = CLIENT_EVENTS

    def __init__(self):
        self.use_st = NEW
        self.peer_st = LIVE
        self.link_st = OK
        self.rd_st = RD_OPEN
        self.wr_st = WR_OPEN
        self.fast = False

    def fire(self, event: str) -> None:
        _Life.fire(self, event)
        self.fast = (self.use_st == CONNECTED and self.peer_st == LIVE and
                     self.link_st == OK and self.rd_st == RD_OPEN and self.wr_st == WR_OPEN)
