"""The flow core (``_flow``): Node's backpressure and ordering rules as
tables, with no event loop at all (this module never imports Trio's
runtime; every test is a plain function)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from trio_netstream._flow import BEFORE, STEP_BYTES, STEP_WRITES, Flow, Step
from trio_netstream._state import WRITABLE, WRITE_ENDED, Input, State

HWM = 16 * 1024


def flow_in(state: State, high_water_mark: int = HWM) -> Flow:
    flow = Flow(high_water_mark)
    flow.sm.state = state
    return flow


# -- the ordering table -------------------------------------------------------


def test_what_comes_before_each_event_is_one_table() -> None:
    assert BEFORE == {
        # 'data' never while paused, and after the 'drain' a try-write owes.
        "data": (Step.RESUMED, Step.OWED_DRAIN),
        # 'end': the owed 'drain', then (not while paused) the kept chunks
        # and the decoder's tail: 'end' comes after every 'data'.
        "end": (Step.OWED_DRAIN, Step.RESUMED, Step.KEPT, Step.TAIL),
        # 'secure': plaintext read before set_secure() is delivered (or
        # dropped) before it: nothing read earlier comes after 'secure'. The
        # kept bytes are raw and come after what the decoder holds, so they
        # go through it before its tail is flushed.
        "secure": (Step.OWED_DRAIN, Step.KEPT, Step.TAIL, Step.PLAINTEXT_OVER),
    }


@pytest.mark.parametrize("event", sorted(BEFORE))
def test_the_owed_drain_comes_before_any_delivery(event: str) -> None:
    steps = BEFORE[event]
    assert Step.OWED_DRAIN in steps
    delivering = [steps.index(s) for s in (Step.KEPT, Step.TAIL) if s in steps]
    assert all(steps.index(Step.OWED_DRAIN) < index for index in delivering)


def test_the_decoder_tail_comes_after_the_kept_chunks_before_end() -> None:
    steps = BEFORE["end"]
    assert steps.index(Step.KEPT) < steps.index(Step.TAIL)
    assert steps.index(Step.RESUMED) < steps.index(Step.KEPT)


# -- the owed drain -----------------------------------------------------------


@pytest.mark.parametrize(
    ("need_drain", "queued", "listened", "due"),
    [
        (True, 0, True, True),
        (True, 0, False, False),  # nobody listens: not emitted, still owed
        (True, 5, True, False),  # bytes still queued: the writer emits it later
        (False, 0, True, False),
        (False, 5, False, False),
    ],
)
def test_drain_due(need_drain: bool, queued: int, listened: bool, due: bool) -> None:
    flow = flow_in(State.OPEN)
    flow.need_drain = need_drain
    flow.queued = queued
    assert flow.drain_due(listened) is due
    # Taking it clears it; what is not due stays owed.
    assert flow.need_drain is (need_drain and not due)


@pytest.mark.parametrize("state", list(State))
def test_no_drain_once_this_side_ended(state: State) -> None:
    flow = flow_in(state)
    assert flow.allows("drain") is (state not in WRITE_ENDED)
    for event in ("data", "end", "connect", "timeout", "secure", "error", "close"):
        assert flow.allows(event)


@pytest.mark.parametrize(
    ("state", "queued", "size", "accepted"),
    [
        (State.OPENING, 0, 1, False),  # connecting: False, 'drain' follows the connect
        (State.OPEN, 0, 1, True),
        (State.OPEN, 0, HWM - 1, True),
        (State.OPEN, 0, HWM, False),  # reaching the mark answers False (as Node)
        (State.OPEN, HWM - 10, 9, True),
        (State.OPEN, HWM - 10, 10, False),
        (State.OPEN, 0, 0, True),  # an empty write never answers False when open
        (State.WRITE_ONLY, 0, HWM * 2, False),
    ],
)
def test_write_answer(state: State, queued: int, size: int, accepted: bool) -> None:
    flow = flow_in(state)
    flow.queued = queued
    assert flow.count_write(size) is accepted
    assert flow.need_drain is (not accepted)
    assert flow.bytes_written == size


def test_a_high_water_mark_of_zero_accepts_only_empty_writes() -> None:
    flow = flow_in(State.OPEN, high_water_mark=0)
    assert flow.count_write(0)
    assert not flow.count_write(1)


def test_dropping_writes_clears_the_owed_drain() -> None:
    flow = flow_in(State.OPEN)
    flow.count_write(HWM)
    flow.enqueue(b"x" * HWM)
    flow.drop_writes()
    assert (flow.queue, flow.queued, flow.need_drain) == ([], 0, False)
    assert flow.sent(0)  # a late send finds nothing to count


@pytest.mark.parametrize(
    ("state", "queued", "need_drain", "flushed"),
    [
        (State.OPEN, 0, False, True),
        (State.OPEN, 1, False, False),
        (State.OPEN, 0, True, False),  # the 'drain' a False write() promised comes first
        (State.READ_ONLY, 0, True, True),  # no 'drain' after end(): nothing to wait for
        (State.OPENING, 0, False, False),  # drain() waits out the connecting
        (State.OPENING_ENDED, 0, False, False),
    ],
)
def test_flushed(state: State, queued: int, need_drain: bool, flushed: bool) -> None:
    flow = flow_in(state)
    flow.queued, flow.need_drain = queued, need_drain
    assert flow.flushed is flushed


# -- the writer's steps -------------------------------------------------------


def test_queued_chunks_are_joined_up_to_a_step() -> None:
    flow = flow_in(State.OPEN)
    for chunk in (b"a" * 100, b"b" * (STEP_BYTES - 100), b"c"):
        flow.enqueue(chunk)
    first = flow.take()
    assert len(first) == STEP_BYTES
    assert flow.take() == b"c"
    assert flow.queue == []


def test_the_writer_yields_after_step_writes_drains_or_step_bytes() -> None:
    flow = flow_in(State.OPEN)
    answers = [flow.step_done() for _ in range(STEP_WRITES * 2)]
    assert answers == ([False] * (STEP_WRITES - 1) + [True]) * 2
    flow.bytes_written += STEP_BYTES
    assert flow.step_done()


# -- reading: decoder tail, kept chunks, encodings -----------------------------


def test_the_tail_is_the_carry_then_what_the_decoder_holds() -> None:
    flow = flow_in(State.OPEN)
    flow.set_encoding("utf8")
    assert flow.decode(b"\xe2\x82") is None  # half a euro sign: nothing yet
    flow.set_encoding("utf8")  # the held bytes become the carry of a new decoder
    assert flow.carry == b"\xe2\x82"
    assert flow.take_tail() == ["\ufffd"]  # a truncated character at the end
    assert flow.take_tail() == []


def test_base64_tail_keeps_its_padding() -> None:
    flow = flow_in(State.OPEN)
    flow.set_encoding("base64")
    assert flow.decode(b"ab") is None  # base64 comes in groups of three bytes
    assert flow.take_tail() == ["YWI="]


def test_kept_bytes_are_bounded_by_the_high_water_mark() -> None:
    flow = flow_in(State.OPEN, high_water_mark=4)
    flow.keep(b"ab")
    assert not flow.kept_full
    flow.keep(b"cd")
    assert flow.kept_full
    assert flow.take_chunk() == b"ab"  # the chunks as they came
    assert flow.take_chunk() == b"cd"
    assert flow.kept == b"" and not flow.kept_full
    flow.keep(b"cd")
    flow.put_back(b"zz")  # a chunk nobody took goes back first in line
    assert flow.kept == b"zzcd"


def test_kept_bytes_stay_raw_and_are_decoded_when_taken() -> None:
    flow = flow_in(State.OPEN)
    flow.keep(b"h\xc3")
    flow.keep(b"\xa9")
    flow.set_encoding("utf8")
    assert flow.kept == b"h\xc3\xa9"  # a pull read would take these bytes
    assert flow.take_chunk() == "h"
    assert flow.take_chunk() == "\u00e9"
    flow.keep(b"\xff")
    flow.set_encoding(None)
    assert flow.take_chunk() == b"\xff"  # lossless: never decoded


def test_kept_bytes_continue_what_the_decoder_holds() -> None:
    flow = flow_in(State.OPEN)
    flow.set_encoding("utf8")
    assert flow.decode(b"\xe2\x82") is None  # half a euro sign, delivered as nothing
    flow.keep(b"\xac!")
    assert flow.take_chunk() == "\u20ac!"


def test_undecoded_bytes_go_back_in_front_of_the_kept_ones() -> None:
    flow = flow_in(State.OPEN)
    flow.set_encoding("utf8")
    assert flow.decode(b"\xe2\x82") is None
    flow.keep(b"\xac")
    flow.unread(flow.undecoded())  # what a pull read does first
    assert flow.kept == "\u20ac".encode()
    assert flow.take_bytes(2) == b"\xe2\x82" and flow.chunk_sizes() == [1]
    assert flow.decode(b"A") == "A"  # the decoder started afresh


def test_a_chunk_put_back_is_encoded_again_before_the_decoder_held_bytes() -> None:
    flow = flow_in(State.OPEN)
    flow.set_encoding("utf8")
    assert flow.decode(b"ok\xe2") == "ok"
    flow.keep(b"\x82\xac")
    flow.put_back("ok")  # async for was left while it was being handed over
    assert flow.kept == b"ok" + "\u20ac".encode()


def test_the_final_chunk_carries_the_decoder_tail() -> None:
    flow = flow_in(State.OPEN)
    flow.set_encoding("base64")
    flow.keep(b"abcd")
    flow.keep(b"e")
    assert flow.take_chunk(final=True) == "YWJj"  # a group of three; "d" is held
    assert flow.take_chunk(final=True) == "ZGU="  # the last chunk, and the tail
    assert flow.take_chunk(final=True) is None


def test_a_bad_encoding_changes_nothing() -> None:
    flow = flow_in(State.OPEN)
    flow.keep(b"x")
    with pytest.raises(ValueError):
        flow.set_encoding("klingon")
    assert (flow.kept, flow.encoding, flow.decoder) == (b"x", None, None)


def test_the_end_of_plaintext_drops_kept_bytes_and_restarts_the_decoder() -> None:
    flow = flow_in(State.OPEN)
    flow.set_encoding("hex")
    flow.keep(b"00")
    decoder = flow.decoder
    flow.end_plaintext()
    assert not flow.kept
    assert flow.decoder is not decoder and flow.encoding == "hex"


def test_reset_starts_a_connection_clean() -> None:
    flow = flow_in(State.OPEN)
    flow.count_write(HWM)
    flow.enqueue(b"x")
    flow.keep(b"y")
    flow.bytes_read += 3  # as the reader counts
    flow.paused = True
    flow.set_encoding("utf8")
    assert flow.decode(b"\xe2\x82") is None  # half a character
    flow.reset()
    assert flow.decode(b"A") == "A"  # the new connection decodes afresh
    assert (flow.queued, flow.queue, flow.need_drain, flow.kept) == (0, [], False, b"")
    assert not flow.pulled
    assert (flow.bytes_read, flow.bytes_written) == (0, 0)
    assert flow.paused and flow.encoding == "utf8"  # these belong to the stream


# -- a state machine driving the core directly --------------------------------


class FlowMachine(RuleBasedStateMachine):
    """Random mixes of the sync API's and the pumps' calls on one Flow, as the
    Stream and its tasks make them; the invariants are Node's rules."""

    def __init__(self) -> None:
        super().__init__()
        self.flow = Flow(64)
        self.flow.sm.apply(Input.CONNECT)
        self.written = 0
        self.in_flight: list[int] = []  # sizes taken by the writer, not yet sent
        self.owed = False  # a write() answered False and no 'drain' came since
        self.ended = False
        self.kept = b""  # what the flow must hold, raw

    @rule(size=st.integers(0, 100))
    def write(self, size: int) -> None:
        flow = self.flow
        if flow.sm.state not in WRITABLE:
            return
        accepted = flow.count_write(size)
        self.owed = self.owed or not accepted
        self.written += size
        if size:
            flow.enqueue(b"x" * size)
        assert accepted is (not flow.sm.connecting and (flow.queued < 64 or flow.queued == 0))

    @rule()
    def connected(self) -> None:
        if self.flow.sm.can(Input.CONNECTED):
            self.flow.sm.apply(Input.CONNECTED)

    @precondition(lambda self: bool(self.flow.queue))
    @rule()
    def writer_takes(self) -> None:
        self.in_flight.append(len(self.flow.take()))

    @precondition(lambda self: bool(self.in_flight))
    @rule()
    def writer_sent(self) -> None:
        size = self.in_flight.pop(0)
        if self.flow.sent(size) and self.flow.drain_due(True) and self.flow.allows("drain"):
            assert self.owed  # a 'drain' only after a write() that answered False
            self.owed = False

    @rule()
    def end(self) -> None:
        if self.flow.sm.can(Input.END):
            self.flow.sm.apply(Input.END)
            self.ended = True

    @rule()
    def destroy(self) -> None:
        if self.flow.sm.can(Input.DESTROY) and not self.flow.sm.destroyed:
            self.flow.sm.apply(Input.DESTROY)
            self.flow.drop_writes()
            self.in_flight.clear()
            self.owed = False

    @rule(data=st.binary(max_size=8), encoding=st.sampled_from([None, "utf8", "base64"]))
    def receive(self, data: bytes, encoding: str | None) -> None:
        flow = self.flow
        if encoding != flow.encoding:
            flow.set_encoding(encoding)
        if data:
            flow.bytes_read += len(data)
            flow.keep(data)
            self.kept += data

    @precondition(lambda self: bool(self.flow.kept))
    @rule()
    def consumer_takes(self) -> None:
        first = self.flow.chunk_sizes()[0]  # one chunk, as the socket gave it
        self.flow.take_chunk()
        self.kept = self.kept[first:]

    @precondition(lambda self: bool(self.flow.kept))
    @rule(size=st.integers(1, 8))
    def pull_read_takes(self, size: int) -> None:
        taken = self.flow.take_bytes(min(size, len(self.flow.kept)))
        assert taken == self.kept[:size]
        self.kept = self.kept[size:]

    @invariant()
    def queue_accounting(self) -> None:
        flow = self.flow
        queued = sum(map(len, flow.queue)) + sum(self.in_flight)
        assert flow.queued == queued
        assert flow.queued >= 0

    @invariant()
    def kept_bytes_are_raw(self) -> None:
        assert self.flow.kept == self.kept  # set_encoding() never touches them
        sizes = self.flow.chunk_sizes()
        assert sum(sizes) == len(self.kept) and all(sizes)

    @invariant()
    def drain_rules(self) -> None:
        flow = self.flow
        assert flow.bytes_written == self.written
        if flow.sm.write_ended:
            assert not flow.allows("drain")
        if flow.sm.destroyed:
            assert not flow.need_drain
            assert flow.queued == 0


TestFlowMachine = FlowMachine.TestCase


@pytest.mark.parametrize("module", ["_flow", "_state", "_encoding", "_emitter"])
def test_the_pure_modules_import_no_trio(module: str) -> None:
    source = (Path(__file__).parent.parent / "trio_netstream" / f"{module}.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    assert "trio" not in imported
