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
def test_illegal_moves_raise_and_change_nothing(moves, bad):
    s = L.SlotLife()
    for ev in moves:
        s.fire(ev)
    before = s.states()
    with pytest.raises(L.IllegalMove):
        s.fire(bad)
    assert s.states() == before


def test_table_is_well_formed():
    assert set(L.DAEMON) == set(L.INITIAL)
    for track, states in L.DAEMON.items():
        assert L.INITIAL[track] in states
        for state, moves in states.items():
            for ev, nxt in moves.items():
                assert nxt in states and L.EVENTS[ev][0] == track
    # every state of every track can be reached from the initial one
    for track, states in L.DAEMON.items():
        seen, todo = set(), [L.INITIAL[track]]
        while todo:
            x = todo.pop()
            if x not in seen:
                seen.add(x)
                todo += list(states[x].values())
        assert seen == set(states), track


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(ALL_EVENTS), max_size=40))
def test_fuzz_any_event_sequence(events):
    """Random events: each is either a move of the table (exactly the listed next
    state, other tracks untouched) or IllegalMove with nothing changed; CLOSED is
    terminal; the receive direction never goes back."""
    s = L.SlotLife()
    order = {L.RX_OPEN: 0, L.PEER_FIN: 1, L.RX_EOF: 2}
    for ev in events:
        before = s.states()
        entry = L.EVENTS.get(ev)
        allowed = entry is not None and before[entry[0]] in entry[1]
        if allowed:
            assert s.fire(ev) == entry[1][before[entry[0]]]
            after = s.states()
            assert {k: v for k, v in after.items() if k != entry[0]} == \
                {k: v for k, v in before.items() if k != entry[0]}
        else:
            with pytest.raises(L.IllegalMove):
                s.fire(ev)
            assert s.states() == before
        after = s.states()
        if before["conn"] == L.CLOSED:
            assert after["conn"] == L.CLOSED
        assert order[after["rx"]] >= order[before["rx"]]
