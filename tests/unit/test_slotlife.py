"""fpd.slotlife: the slot's transition table on its own (and fuzzed with hypothesis)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fpd import slotlife as L

ALL_EVENTS = sorted(L.EVENTS) + ["bogus"]


def test_a_connection_lives_as_the_service_drives_it():
    s = L.SlotLife()
    assert s.states() == L.INITIAL
    for ev in ("connect", "connected", "peer_fin", "rx_eof", "shut_wr", "release", "finish"):
        s.fire(ev)
    assert s.states() == {"conn": L.CLOSED, "rx": L.RX_EOF, "tx": L.TX_SHUT,
                          "hold": L.RELEASED}
    assert s.done and s.released and not s.ending


@pytest.mark.parametrize("moves, bad", [
    (["connect"], "accept"),              # a slot is opened once
    (["listen"], "connected"),            # a listener never connects
    (["accept"], "connected"),            # an accepted connection is already open
    (["connect", "end"], "end"),          # the first reason to end is the one kept
    (["connect", "finish"], "finish"),    # CLOSED is announced once
    (["connect", "finish"], "end"),
    ([], "finish"),                       # nothing to announce before it was opened
    (["connect", "rx_eof"], "rx_eof"),
    ([], "bogus"),
])
def test_illegal_daemon_moves_raise_and_change_nothing(moves, bad):
    s = L.SlotLife()
    for ev in moves:
        s.fire(ev)
    before = s.states()
    with pytest.raises(L.IllegalMove):
        s.fire(bad)
    assert s.states() == before


@pytest.mark.parametrize("moves, bad", [
    (["connect"], "listen"),
    (["listen"], "connected"),
    (["accepted"], "connect"),            # an accepted socket does not connect again
    (["connect", "fail", "close"], "connect"),   # closed for good
    (["fork"], "renew"),                  # the parent's socket stays the parent's
    (["connect", "renew"], "reported"),   # nothing ended: nothing to report
])
def test_illegal_client_moves_raise_and_change_nothing(moves, bad):
    s = L.SockLife()
    for ev in moves:
        s.fire(ev)
    before = s.states()
    with pytest.raises(L.IllegalMove):
        s.fire(bad)
    assert s.states() == before


SIDES = [(L.SlotLife, L.DAEMON, L.INITIAL), (L.SockLife, L.CLIENT, L.CLIENT_INITIAL)]


@pytest.mark.parametrize("cls, table, initial", SIDES, ids=["daemon", "client"])
def test_table_is_well_formed(cls, table, initial):
    assert cls().states() == initial and set(table) == set(initial)
    for track, states in table.items():
        assert initial[track] in states
        for state, moves in states.items():
            for ev, nxt in moves.items():
                assert nxt in states and track in dict(cls._EVENTS[ev])
    # every state of every track can be reached from the initial one
    for track, states in table.items():
        seen, todo = set(), [initial[track]]
        while todo:
            x = todo.pop()
            if x not in seen:
                seen.add(x)
                todo += list(states[x].values())
        assert seen == set(states), track


def _fuzz(cls, events, terminal):
    s = cls()
    for ev in events:
        before = s.states()
        moves = dict(cls._EVENTS.get(ev, []))
        allowed = bool(moves) and all(before[t] in m for t, m in moves.items())
        if allowed:
            s.fire(ev)
            after = s.states()
            for t in before:                  # the listed moves, nothing else
                assert after[t] == (moves[t][before[t]] if t in moves else before[t])
        else:
            with pytest.raises(L.IllegalMove):
                s.fire(ev)
            assert s.states() == before       # all or nothing
        after = s.states()
        for t, st_ in terminal:
            if before[t] == st_:
                assert after[t] == st_, (t, ev)
    return s


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(sorted(L.EVENTS) + ["bogus"]), max_size=40))
def test_fuzz_daemon_table(events):
    """Random events: each is either a move of the table (exactly the listed next
    states, other tracks untouched) or IllegalMove with nothing changed; CLOSED is
    terminal; the receive direction never goes back."""
    s = L.SlotLife()
    order = {L.RX_OPEN: 0, L.PEER_FIN: 1, L.RX_EOF: 2}
    for ev in events:
        before = s.rx_st
        try:
            s.fire(ev)
        except L.IllegalMove:
            pass
        assert order[s.rx_st] >= order[before]
    _fuzz(L.SlotLife, events, [("conn", L.CLOSED)])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(sorted(L.CLIENT_EVENTS) + ["bogus"]), max_size=40))
def test_fuzz_client_table(events):
    """The same for the client's socket; a closed socket stays closed, a forked one
    belongs to the parent for good, and ``fast`` is exactly "nothing in the way"."""
    s = _fuzz(L.SockLife, events, [("use", L.CLOSED), ("link", L.FORKED)])
    assert s.fast == (s.states() == {"use": L.CONNECTED, "peer": L.LIVE, "link": L.OK,
                                     "rd": L.RD_OPEN, "wr": L.WR_OPEN}) or not events
