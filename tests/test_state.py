"""The ready-state machine: the TRANSITIONS table and StateMachine (pure, no Trio)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

import trio_netstream as net
from trio_netstream._state import (
    TRANSITIONS,
    WRITABLE,
    WRITE_ENDED,
    Input,
    State,
    StateMachine,
)

S, I = State, Input  # noqa: E741  # short names as in _state.py

PUBLIC = {"closed", "opening", "open", "readOnly", "writeOnly"}

# Every legal move, written out from the lifecycle in SPEC.md.
LEGAL = {
    (S.CLOSED, I.CONNECT): S.OPENING,  # connect()
    (S.CLOSED, I.ADOPT): S.OPEN,  # wrap(), or accepted by a server
    (S.OPENING, I.CONNECTED): S.OPEN,  # 'connect'
    (S.OPENING, I.END): S.OPENING_ENDED,  # end() while connecting
    (S.OPENING, I.DESTROY): S.DESTROYED,  # destroy() / connect failure
    (S.OPENING_ENDED, I.CONNECTED): S.READ_ONLY,
    (S.OPENING_ENDED, I.DESTROY): S.DESTROYED,
    (S.OPEN, I.END): S.READ_ONLY,  # end() -> "readOnly"
    (S.OPEN, I.PEER_END): S.WRITE_ONLY,  # 'end' -> "writeOnly"
    (S.OPEN, I.DESTROY): S.DESTROYED,
    (S.READ_ONLY, I.PEER_END): S.ENDED,  # 'end' after end() -> "closed"
    (S.READ_ONLY, I.DESTROY): S.DESTROYED,
    (S.WRITE_ONLY, I.END): S.ENDED,
    (S.WRITE_ONLY, I.DESTROY): S.DESTROYED,
    (S.ENDED, I.DESTROY): S.DESTROYED,
    (S.ENDED, I.CLOSED): S.CLOSED,  # 'close'
    (S.DESTROYED, I.CLOSED): S.CLOSED,
}

ALL_PAIRS = list(itertools.product(State, Input))
ILLEGAL = [pair for pair in ALL_PAIRS if pair not in LEGAL]


def test_transition_table_is_exactly_the_legal_moves() -> None:
    assert TRANSITIONS == LEGAL


def test_states_are_distinct_members() -> None:
    # Several states share a public value but must not be aliases of each other.
    assert len(list(State)) == 8
    assert len({s.name for s in State}) == 8
    assert S.OPENING is not S.OPENING_ENDED
    assert S.CLOSED is not S.ENDED and S.ENDED is not S.DESTROYED


@pytest.mark.parametrize(
    ("state", "public"),
    [
        (S.CLOSED, "closed"),
        (S.OPENING, "opening"),
        (S.OPENING_ENDED, "opening"),
        (S.OPEN, "open"),
        (S.READ_ONLY, "readOnly"),
        (S.WRITE_ONLY, "writeOnly"),
        (S.ENDED, "closed"),
        (S.DESTROYED, "closed"),
    ],
)
def test_ready_state_string(state: State, public: str) -> None:
    assert state.ready_state == public
    assert StateMachine(state).ready_state == public


def test_new_machine_is_closed() -> None:
    machine = StateMachine()
    assert machine.state is S.CLOSED
    assert machine.ready_state == "closed"


@pytest.mark.parametrize(("pair", "target"), list(LEGAL.items()), ids=lambda v: str(v))
def test_legal_move(pair: tuple[State, Input], target: State) -> None:
    state, event = pair
    machine = StateMachine(state)
    assert machine.can(event)
    assert machine.apply(event) is target
    assert machine.state is target
    assert machine.ready_state == target.ready_state


@pytest.mark.parametrize(("state", "event"), ILLEGAL, ids=lambda v: str(v))
def test_illegal_move_raises_and_changes_nothing(state: State, event: Input) -> None:
    machine = StateMachine(state)
    assert not machine.can(event)
    with pytest.raises(net.StreamStateError) as info:
        machine.apply(event, "frobnicate()")
    message = str(info.value)
    assert "frobnicate()" in message
    assert state.ready_state in message
    assert machine.state is state
    assert machine.ready_state == state.ready_state


@pytest.mark.parametrize(("state", "event"), ILLEGAL, ids=lambda v: str(v))
def test_illegal_move_without_call_names_the_input(state: State, event: Input) -> None:
    machine = StateMachine(state)
    with pytest.raises(net.StreamStateError) as info:
        machine.apply(event)
    assert event.value in str(info.value)
    assert state.ready_state in str(info.value)
    assert machine.state is state


def test_write_after_end_message_names_call_and_state() -> None:
    machine = StateMachine()
    for event in (I.CONNECT, I.CONNECTED, I.END):
        machine.apply(event)
    assert machine.ready_state == "readOnly"
    with pytest.raises(net.StreamStateError, match=r"end\(\).*'readOnly'"):
        machine.apply(I.END, "end()")
    assert machine.ready_state == "readOnly"


def test_connect_while_connecting_is_illegal() -> None:
    machine = StateMachine()
    machine.apply(I.CONNECT, "connect()")
    with pytest.raises(net.StreamStateError, match=r"connect\(\).*'opening'"):
        machine.apply(I.CONNECT, "connect()")
    assert machine.state is S.OPENING


@pytest.mark.parametrize(
    ("events", "readies"),
    [
        # connect, peer ends, we end, close
        (
            [I.CONNECT, I.CONNECTED, I.PEER_END, I.END, I.CLOSED],
            ["opening", "open", "writeOnly", "closed", "closed"],
        ),
        # connect, we end, peer ends, close
        (
            [I.CONNECT, I.CONNECTED, I.END, I.PEER_END, I.CLOSED],
            ["opening", "open", "readOnly", "closed", "closed"],
        ),
        # end() before the connection is up
        (
            [I.CONNECT, I.END, I.CONNECTED, I.PEER_END, I.CLOSED],
            ["opening", "opening", "readOnly", "closed", "closed"],
        ),
        # connect failure, then reconnect
        (
            [I.CONNECT, I.DESTROY, I.CLOSED, I.CONNECT, I.CONNECTED],
            ["opening", "closed", "closed", "opening", "open"],
        ),
        # destroy() while both halves are closing
        (
            [I.CONNECT, I.CONNECTED, I.END, I.PEER_END, I.DESTROY, I.CLOSED],
            ["opening", "open", "readOnly", "closed", "closed", "closed"],
        ),
    ],
)
def test_lifecycles(events: list[Input], readies: list[str]) -> None:
    machine = StateMachine()
    seen = []
    for event in events:
        machine.apply(event)
        seen.append(machine.ready_state)
    assert seen == readies


def _reachable(start: State) -> set[State]:
    seen, todo = {start}, [start]
    while todo:
        state = todo.pop()
        for (src, _), dst in TRANSITIONS.items():
            if src is state and dst not in seen:
                seen.add(dst)
                todo.append(dst)
    return seen


def test_every_state_is_reachable_from_closed() -> None:
    assert _reachable(S.CLOSED) == set(State)


@pytest.mark.parametrize("state", list(State))
def test_every_state_can_get_back_to_closed(state: State) -> None:
    # No dead ends: 'close' can always be reached, so a stream can be reconnected.
    assert S.CLOSED in _reachable(state)


@pytest.mark.parametrize("state", [s for s in State if s not in (S.CLOSED, S.DESTROYED)])
def test_destroy_is_legal_in_every_live_state(state: State) -> None:
    assert StateMachine(state).can(I.DESTROY)
    assert TRANSITIONS[state, I.DESTROY] is S.DESTROYED


def test_connect_is_legal_only_when_closed() -> None:
    assert [s for s in State if StateMachine(s).can(I.CONNECT)] == [S.CLOSED]


def test_write_sets_match_the_table() -> None:
    # write() queues while connecting, open, or after the peer ended...
    assert {s.ready_state for s in WRITABLE} <= {"opening", "open", "writeOnly"}
    # ...and never once this side has ended or destroyed.
    assert WRITABLE.isdisjoint(WRITE_ENDED)
    for (_, event), dst in TRANSITIONS.items():
        if event in (I.END, I.DESTROY):
            assert dst in WRITE_ENDED
            assert dst not in WRITABLE


@given(st.lists(st.sampled_from(list(Input)), max_size=60))
def test_random_inputs_only_produce_legal_states(events: list[Input]) -> None:
    machine = StateMachine()
    for event in events:
        before = machine.state
        if machine.can(event):
            after = machine.apply(event)
            assert after is LEGAL[before, event]
            assert machine.state is after
        else:
            with pytest.raises(net.StreamStateError):
                machine.apply(event)
            assert machine.state is before
        assert machine.state in set(State)
        assert machine.ready_state in PUBLIC
        assert machine.ready_state == machine.state.ready_state


@given(st.lists(st.sampled_from(list(Input)), max_size=60))
def test_apply_only_legal_inputs_reaches_closed_again(events: list[Input]) -> None:
    # Apply whatever is legal; then the stream can always be torn down.
    machine = StateMachine()
    for event in events:
        if machine.can(event):
            machine.apply(event)
    if machine.state not in (S.CLOSED, S.DESTROYED):
        machine.apply(I.DESTROY)
    if machine.state is S.DESTROYED:
        machine.apply(I.CLOSED)
    assert machine.state is S.CLOSED
    assert machine.ready_state == "closed"
