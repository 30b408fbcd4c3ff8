"""A slot's life as explicit transition tables (the shape of h11's ``_state.py``).

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

Pure: no I/O, no clock, imports nothing of fpd (the tables are fuzzed on their own).
"""

from __future__ import annotations

__all__ = ["IllegalMove", "SlotLife", "DAEMON", "EVENTS",
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


def _events(table) -> dict:
    """event -> (track, {state: next state}); checks that no event is in two tracks."""
    out: dict = {}
    for track, states in table.items():
        for state, moves in states.items():
            for ev, nxt in moves.items():
                if ev in out and out[ev][0] != track:
                    raise ValueError(f"event {ev!r} in tracks {out[ev][0]} and {track}")
                if nxt not in states:
                    raise ValueError(f"{track}: {state} --{ev}--> unknown state {nxt}")
                out.setdefault(ev, (track, {}))[1][state] = nxt
    return out


EVENTS = _events(DAEMON)


class IllegalMove(RuntimeError):
    """An event the table does not allow in the current state (a bug, not input)."""


class SlotLife:
    """The four tracks of one slot, moved only by :meth:`fire`."""

    __slots__ = ("conn_st", "rx_st", "tx_st", "hold_st")

    def __init__(self):
        self.conn_st = NEW
        self.rx_st = RX_OPEN
        self.tx_st = TX_OPEN
        self.hold_st = HELD

    def fire(self, event: str) -> str:
        """Move the track ``event`` belongs to; returns its new state."""
        try:
            track, moves = EVENTS[event]
        except KeyError:
            raise IllegalMove(f"unknown slot event {event!r}") from None
        attr = _ATTR[track]
        cur = getattr(self, attr)
        nxt = moves.get(cur)
        if nxt is None:
            raise IllegalMove(f"slot {track} {cur}: {event!r} is not allowed "
                              f"(allowed: {sorted(DAEMON[track][cur])})")
        setattr(self, attr, nxt)
        return nxt

    def states(self) -> dict:
        return {t: getattr(self, a) for t, a in _ATTR.items()}

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


_ATTR = {"conn": "conn_st", "rx": "rx_st", "tx": "tx_st", "hold": "hold_st"}
