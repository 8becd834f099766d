"""Stream over in-memory Trio streams: lifecycle, events, state, encodings, flow.

Every test wraps one end of ``trio.testing.memory_stream_pair()`` (or
``lockstep_stream_pair()`` where exact backpressure matters) with
``Stream.wrap`` and drives the other, raw end (the *peer*) by hand.
Timed behaviour runs on the ``autojump_clock``. Each test is bounded by
:func:`bounded`, so a hang fails instead of blocking the run.
"""

from __future__ import annotations

import base64
import itertools
import math
from typing import Any, cast

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from netstream_testing import LIMIT, bounded, read_to_eof
from trio.testing import lockstep_stream_pair, memory_stream_pair, wait_all_tasks_blocked

import trio_netstream as net
from trio_netstream import Stream, StreamStateError

# --- structured lifecycle ------------------------------------------------------


@bounded
async def test_wrapped_stream_is_open_at_once_and_connects_when_block_starts(record: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    assert stream.ready_state == "open"
    stream.write(b"early")  # sync calls before the block are fine
    async with stream:
        assert rec.events == []  # nothing before __aenter__ has returned
        await wait_all_tasks_blocked()
        assert rec.events == ["connect"]
        assert await b.receive_some() == b"early"
        stream.end()
        await b.send_eof()
    assert rec.events == ["connect", "end", ("close", False)]
    assert stream.ready_state == "closed"


@bounded
async def test_normal_exit_waits_for_close(record: Any, autojump_clock: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    peer_got: list[bytes] = []

    async def peer() -> None:
        peer_got.append(await read_to_eof(b))
        await trio.sleep(3)
        await b.send_all(b"late")
        await b.send_eof()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer)
        async with stream:
            stream.end(b"hi")
        # The block only returned once the peer ended and 'close' was emitted.
        assert rec.events == ["connect", "data", "end", ("close", False)]
        assert rec.data == b"late"
    assert peer_got == [b"hi"]


@bounded
async def test_exception_in_body_destroys_and_reraises_same_object(record: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    boom = KeyError("boom")
    with pytest.raises(KeyError) as info:
        async with stream:
            await wait_all_tasks_blocked()
            stream.write(b"dropped")
            raise boom
    assert info.value is boom  # unwrapped: not an ExceptionGroup
    assert rec.events == ["connect", ("close", False)]
    assert stream.ready_state == "closed"
    assert await read_to_eof(b) == b""  # the queued write was dropped


@bounded
async def test_outer_cancellation_destroys_and_scope_catches_it(
    record: Any, autojump_clock: Any
) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    with trio.move_on_after(5) as scope:
        async with stream:
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert rec.events == ["connect", ("close", False)]
    assert stream.ready_state == "closed"
    assert await read_to_eof(b) == b""


async def test_close_listener_reconnecting_keeps_block_open(record: Any) -> None:
    with trio.fail_after(10):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        listener = listeners[0]
        port = listener.socket.getsockname()[1]
        a, _b = memory_stream_pair()
        stream = Stream.wrap(a)
        rec = record(stream)
        server_got: list[bytes] = []
        connects = 0
        closes = 0

        @stream.on("connect")
        def on_connect() -> None:
            nonlocal connects
            connects += 1
            if connects == 2:
                stream.end(b"hello")

        @stream.on("close")
        def on_close(had_error: bool) -> None:
            nonlocal closes
            closes += 1
            if closes == 1:
                stream.connect(port)

        async def server() -> None:
            conn = await listener.accept()
            async with conn:
                server_got.append(await read_to_eof(conn))
                await conn.send_all(b"bye")

        async with listener, trio.open_nursery() as nursery:
            nursery.start_soon(server)
            async with stream:
                await wait_all_tasks_blocked()
                stream.destroy()
            assert rec.events == [
                "connect",
                ("close", False),
                "connect",
                "data",
                "end",
                ("close", False),
            ]
        assert server_got == [b"hello"]
        assert rec.data == b"bye"


# --- events and their order -------------------------------------------------------


@bounded
async def test_peer_writes_then_ends(record: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    async with stream:
        await b.send_all(b"hello")
        await b.send_eof()
        await wait_all_tasks_blocked()
        assert rec.events == ["connect", "data", "end"]
        stream.end()
    assert rec.events == ["connect", "data", "end", ("close", False)]
    assert rec.data == b"hello"
    assert {type(chunk) for chunk in rec.chunks} == {bytes}


@bounded
async def test_allow_half_open_keeps_write_only_until_end(record: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a, allow_half_open=True)
    rec = record(stream)
    async with stream:
        await b.send_eof()
        await wait_all_tasks_blocked()
        assert rec.events == ["connect", "end"]
        assert stream.ready_state == "writeOnly"
        assert stream.write(b"still writable")
        await wait_all_tasks_blocked()
        assert await b.receive_some() == b"still writable"
        assert rec.events == ["connect", "end"]
        stream.end()
        assert stream.ready_state == "closed"
    assert rec.events == ["connect", "end", ("close", False)]
    assert await read_to_eof(b) == b""


@bounded
async def test_allow_half_open_false_ends_after_peer_end(record: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a, allow_half_open=False)
    rec = record(stream)
    async with stream:
        stream.write(b"reply")
        await b.send_all(b"x")
        await b.send_eof()
        assert await read_to_eof(b) == b"reply"  # the peer sees our EOF
    assert rec.events == ["connect", "data", "end", ("close", False)]


@bounded
async def test_end_flushes_every_queued_byte_then_eof(record: Any) -> None:
    a, b = lockstep_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    chunks = [bytes([i]) * (100 + i) for i in range(50)]
    async with stream:
        for chunk in chunks:
            stream.write(chunk)
        stream.end(b"last")
        assert await read_to_eof(b) == b"".join(chunks) + b"last"
        await b.send_eof()
    assert rec.events == ["connect", "end", ("close", False)]


@bounded
async def test_drain_only_after_write_returned_false(record: Any) -> None:
    a, b = lockstep_stream_pair()
    stream = Stream.wrap(a, high_water_mark=4)
    rec = record(stream)
    async with stream:
        await wait_all_tasks_blocked()
        assert stream.write(b"ab") is True
        assert await b.receive_some() == b"ab"
        await wait_all_tasks_blocked()
        assert rec.events == ["connect"]  # write() said True: no 'drain'

        assert stream.write(b"cd") is True
        assert stream.write(b"ef") is False  # 4 bytes queued: high-water mark
        await wait_all_tasks_blocked()
        assert rec.events == ["connect"]  # not flushed yet (lockstep peer not reading)
        received = b""
        while len(received) < 4:
            received += await b.receive_some()
        assert received == b"cdef"
        await wait_all_tasks_blocked()
        assert rec.events == ["connect", "drain"]
        stream.end()
        assert await read_to_eof(b) == b""
        await b.send_eof()
    assert rec.events == ["connect", "drain", "end", ("close", False)]


# --- listeners ----------------------------------------------------------------------


@bounded
async def test_async_listeners_awaited_in_registration_order(autojump_clock: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    calls: list[str] = []

    async def first(chunk: bytes) -> None:
        calls.append("first start")
        await trio.sleep(1)
        calls.append("first done")

    def second(chunk: bytes) -> None:
        calls.append("second")

    async def third(chunk: bytes) -> None:
        calls.append("third start")
        await trio.sleep(1)
        calls.append("third done")

    stream.on("data", first).on("data", second).on("data", third)
    stream.on("end", lambda: calls.append("end"))
    async with stream:
        await b.send_all(b"x")
        await b.send_eof()
        await trio.sleep(5)
        stream.end()
    assert calls == ["first start", "first done", "second", "third start", "third done", "end"]


@bounded
async def test_plain_listener_returning_awaitable_is_awaited(autojump_clock: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    calls: list[str] = []

    async def later() -> None:
        await trio.sleep(1)
        calls.append("awaited")

    stream.on("data", lambda chunk: later())
    stream.on("data", lambda chunk: calls.append("next"))
    async with stream:
        await b.send_all(b"x")
        await trio.sleep(5)
        stream.destroy()
    assert calls == ["awaited", "next"]


@bounded
async def test_slow_async_data_listener_applies_backpressure() -> None:
    a, b = lockstep_stream_pair()
    stream = Stream.wrap(a)
    release = trio.Event()
    got: list[bytes] = []
    sent: list[bytes] = []

    @stream.on("data")
    async def slow(chunk: bytes) -> None:
        got.append(chunk)
        await release.wait()

    async def send(data: bytes) -> None:
        await b.send_all(data)
        sent.append(data)

    async with stream:
        await send(b"one")  # read by the stream, now held by the listener
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, b"two")
            await wait_all_tasks_blocked()
            assert got == [b"one"]
            assert sent == [b"one"]  # the socket is not read while the listener runs
            release.set()
        await wait_all_tasks_blocked()
        assert sent == [b"one", b"two"]
        assert got == [b"one", b"two"]
        stream.destroy()


@pytest.mark.parametrize("kind", ["sync", "async"])
@bounded
async def test_listener_exception_propagates_unwrapped_not_as_error_event(
    kind: str, record: Any
) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    boom = ValueError("listener failed")

    def sync_bad(chunk: bytes) -> None:
        raise boom

    async def async_bad(chunk: bytes) -> None:
        await trio.lowlevel.checkpoint()
        raise boom

    stream.on("data", sync_bad if kind == "sync" else async_bad)
    body_cancelled = False
    with pytest.raises(ValueError) as info:
        async with stream:
            await b.send_all(b"x")
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                body_cancelled = True
                raise
    assert info.value is boom
    assert body_cancelled
    assert rec.events == ["connect", "data", ("close", False)]  # no 'error' event


@bounded
async def test_no_event_emitted_from_inside_user_calls(record: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a, high_water_mark=1)
    rec = record(stream)
    gone = OSError("gone")
    async with stream:
        await b.send_all(b"pending")  # data is waiting to be read
        await wait_all_tasks_blocked()
        seen = list(rec.events)
        assert seen == ["connect", "data"]
        assert stream.write(b"abc") is False
        assert rec.events == seen
        stream.pause()
        assert rec.events == seen
        stream.resume()
        assert rec.events == seen
        stream.set_timeout(1000)
        assert rec.events == seen
        stream.set_encoding("hex")
        assert rec.events == seen
        stream.end()
        assert rec.events == seen
        stream.destroy(gone)
        assert rec.events == seen
        stream.destroy()
        assert rec.events == seen
    assert rec.events == ["connect", "data", ("error", gone), ("close", True)]


# --- ready_state ----------------------------------------------------------------------


@bounded
async def test_ready_state_end_then_peer_end(record: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    async with stream:
        await wait_all_tasks_blocked()
        assert stream.ready_state == "open"
        stream.end()
        assert stream.ready_state == "readOnly"  # at once
        assert await read_to_eof(b) == b""
        assert stream.ready_state == "readOnly"
        await b.send_all(b"more")
        await wait_all_tasks_blocked()
        assert rec.data == b"more"  # still reading after end()
        await b.send_eof()
        await stream.wait_closed()
        assert stream.ready_state == "closed"
    assert rec.events == ["connect", "data", "end", ("close", False)]


@bounded
async def test_ready_state_peer_end_then_end(record: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    async with stream:
        await b.send_eof()
        await wait_all_tasks_blocked()
        assert stream.ready_state == "writeOnly"
        stream.end()
        assert stream.ready_state == "closed"
    assert rec.events == ["connect", "end", ("close", False)]


@bounded
async def test_ready_state_closed_after_destroy(record: Any) -> None:
    a, _b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    async with stream:
        await wait_all_tasks_blocked()
        stream.destroy()
        assert stream.ready_state == "closed"
    assert stream.ready_state == "closed"
    assert rec.events == ["connect", ("close", False)]


@bounded
async def test_write_and_end_with_data_after_end_raise_and_send_nothing(record: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    async with stream:
        stream.write(b"before")
        stream.end()
        written = stream.bytes_written
        with pytest.raises(StreamStateError):
            stream.write(b"after")
        with pytest.raises(StreamStateError):
            stream.end(b"after")
        assert stream.bytes_written == written
        assert stream.ready_state == "readOnly"
        assert await read_to_eof(b) == b"before"
        await b.send_eof()
    assert rec.events == ["connect", "end", ("close", False)]


@bounded
async def test_write_after_destroy_raises_and_sends_nothing(record: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    async with stream:
        await wait_all_tasks_blocked()
        stream.destroy()
        with pytest.raises(StreamStateError):
            stream.write(b"after")
        with pytest.raises(StreamStateError):
            stream.end(b"after")
    assert await read_to_eof(b) == b""
    assert rec.events == ["connect", ("close", False)]


@bounded
async def test_destroy_is_idempotent(record: Any) -> None:
    a, _b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    async with stream:
        await wait_all_tasks_blocked()
        stream.destroy()
        stream.destroy()
        stream.destroy(OSError("late"))
        await stream.wait_closed()
        stream.destroy()
    stream.destroy()
    assert rec.events == ["connect", ("close", False)]


@bounded
async def test_destroy_with_error_emits_error_then_close_true(record: Any) -> None:
    a, _b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    err = ConnectionAbortedError("given up")
    async with stream:
        await wait_all_tasks_blocked()
        stream.destroy(err)
    assert rec.events == ["connect", ("error", err), ("close", True)]
    assert rec.events[1][1] is err


@bounded
async def test_destroy_drops_queued_writes(record: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    async with stream:
        await wait_all_tasks_blocked()
        stream.write(b"queued")
        stream.write(b"too")
        stream.destroy()
    assert rec.events == ["connect", ("close", False)]
    assert await read_to_eof(b) == b""  # the peer never receives them


# --- pause() / resume() ------------------------------------------------------------------


@bounded
async def test_pause_stops_data_until_resume_nothing_lost(record: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    async with stream:
        await b.send_all(b"one")
        await wait_all_tasks_blocked()
        assert rec.chunks == [b"one"]
        stream.pause()
        for part in (b"two", b"three", b"four"):
            await b.send_all(part)
            await wait_all_tasks_blocked()
        assert rec.chunks == [b"one"]
        await b.send_eof()
        await wait_all_tasks_blocked()
        assert rec.events == ["connect", "data"]  # not even 'end' while paused
        stream.resume()
        await wait_all_tasks_blocked()
        assert rec.data == b"onetwothreefour"
        assert rec.events == ["connect", "data", "end"]
        stream.end()
    assert rec.events == ["connect", "data", "end", ("close", False)]


@bounded
async def test_pause_before_data_blocks_lockstep_peer(record: Any) -> None:
    a, b = lockstep_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    stream.pause()  # before the block, before any data
    sent = trio.Event()

    async def peer() -> None:
        await b.send_all(b"held back")
        sent.set()

    async with trio.open_nursery() as nursery, stream:
        nursery.start_soon(peer)
        await wait_all_tasks_blocked()
        assert rec.events == ["connect"]
        assert not sent.is_set()  # the stream does not read while paused
        stream.resume()
        await sent.wait()
        await wait_all_tasks_blocked()
        assert rec.data == b"held back"
        stream.destroy()
    assert rec.events == ["connect", "data", ("close", False)]


# --- set_encoding() ---------------------------------------------------------------------


@bounded
async def test_utf8_character_split_across_peer_writes(record: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    stream.set_encoding("utf8")
    rec = record(stream)
    text = "aあ€😀z"
    async with stream:
        for byte in text.encode("utf-8"):
            await b.send_all(bytes([byte]))
            await wait_all_tasks_blocked()
        await b.send_eof()
        await wait_all_tasks_blocked()
        stream.end()
    assert all(isinstance(chunk, str) for chunk in rec.chunks)
    assert rec.data == text
    assert rec.events == ["connect", "data", "end", ("close", False)]


@settings(max_examples=40, deadline=None)
@given(
    encoding=st.sampled_from(["base64", "hex", "utf8", "latin1"]),
    payload=st.binary(max_size=60),
    cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=8),
)
async def test_decoded_chunks_concatenate_to_encoding_of_whole(
    encoding: str, payload: bytes, cuts: list[int]
) -> None:
    expected = {
        "base64": base64.b64encode(payload).decode("ascii"),
        "hex": payload.hex(),
        "utf8": payload.decode("utf-8", errors="replace"),
        "latin1": payload.decode("latin-1"),
    }[encoding]
    bounds = sorted({0, len(payload), *(cut for cut in cuts if cut <= len(payload))})
    pieces = [payload[start:stop] for start, stop in itertools.pairwise(bounds)]
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    stream.set_encoding(encoding)
    got: list[Any] = []
    events: list[str] = []
    stream.on("data", got.append)
    stream.on("data", lambda chunk: events.append("data"))
    stream.on("end", lambda: events.append("end"))
    with trio.fail_after(LIMIT):
        async with stream:
            for piece in pieces:
                await b.send_all(piece)
                await wait_all_tasks_blocked()
            await b.send_eof()
            await wait_all_tasks_blocked()
            stream.end()
    assert all(isinstance(chunk, str) for chunk in got)
    assert "".join(got) == expected
    assert events[-1:] == ["end"]


@pytest.mark.parametrize(
    ("encoding", "sent", "before", "tail"),
    [
        ("base64", b"a", [], "YQ=="),  # a base64 remainder, with its padding
        ("base64", b"abcd", ["YWJj"], "ZA=="),
        ("hex", b"ab", ["6162"], None),  # hex holds nothing back
        ("utf8", b"ok\xe3\x81", ["ok"], "\ufffd"),  # a truncated UTF-8 tail
    ],
)
@bounded
async def test_decoder_remainder_is_last_data_before_end(
    encoding: str, sent: bytes, before: list[str], tail: str | None, record: Any
) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    stream.set_encoding(encoding)
    rec = record(stream, keep_data=True)
    async with stream:
        await b.send_all(sent)
        await wait_all_tasks_blocked()
        assert rec.chunks == before
        await b.send_eof()
        await wait_all_tasks_blocked()
        stream.end()
    last = [] if tail is None else [tail]
    assert rec.events == [
        "connect",
        *(("data", chunk) for chunk in before + last),
        "end",
        ("close", False),
    ]


@bounded
async def test_unknown_encoding_raises_and_changes_nothing(record: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    with pytest.raises(ValueError):
        stream.set_encoding("klingon")
    async with stream:
        await b.send_all(b"\x01")
        await wait_all_tasks_blocked()
        assert rec.chunks == [b"\x01"]  # still bytes
        stream.set_encoding("hex")
        with pytest.raises(ValueError):
            stream.set_encoding("no-such-codec")
        await b.send_all(b"\xab")
        await wait_all_tasks_blocked()
        assert rec.chunks == [b"\x01", "ab"]  # still hex
        stream.destroy()


@bounded
async def test_switching_encoding_mid_stream_loses_no_bytes(record: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    current: list[str | None] = [None]
    as_bytes: list[bytes] = []

    @stream.on("data")
    def back_to_bytes(chunk: bytes | str) -> None:
        encoding = current[0]
        if encoding is None:
            assert isinstance(chunk, bytes)
            as_bytes.append(chunk)
        else:
            assert isinstance(chunk, str)
            as_bytes.append(bytes.fromhex(chunk) if encoding == "hex" else chunk.encode(encoding))

    def switch(encoding: str | None) -> None:
        stream.set_encoding(encoding)
        current[0] = encoding

    async with stream:
        switch("utf-8")
        await b.send_all(b"abc\xe3")  # ends with the first byte of U+3042
        await wait_all_tasks_blocked()
        switch("hex")
        await b.send_all(b"\x81\x82\x00")
        await wait_all_tasks_blocked()
        switch(None)
        await b.send_all(b"z")
        await wait_all_tasks_blocked()
        switch("latin-1")
        await b.send_all(b"\xe9")
        await b.send_eof()
        await wait_all_tasks_blocked()
        stream.end()
    assert b"".join(as_bytes) == b"abc\xe3\x81\x82\x00z\xe9"
    assert rec.chunks[-1] == "é"
    assert rec.events == ["connect", "data", "end", ("close", False)]
    assert stream.bytes_read == 9


async def test_kept_chunks_come_in_the_encoding_set_before_they_are_taken() -> None:
    """Bytes that arrived while nobody consumed them, then set_encoding():
    they come as str, a character split across them whole (as Node's
    setEncoding() converts its buffer)."""
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    text = "héllo あ!"
    encoded = text.encode()
    async with stream:
        await b.send_all(encoded[:9])  # ends inside あ
        await wait_all_tasks_blocked()
        await b.send_all(encoded[9:10])
        await wait_all_tasks_blocked()
        stream.set_encoding("utf8")
        chunks: list[bytes | str] = []
        stream.on("data", chunks.append)
        await wait_all_tasks_blocked()
        await b.send_all(encoded[10:])
        await b.send_eof()
        await wait_all_tasks_blocked()
        stream.end()
    assert all(isinstance(chunk, str) for chunk in chunks), chunks
    assert "".join(cast("list[str]", chunks)) == text


async def test_kept_text_comes_as_bytes_after_set_encoding_none() -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    stream.set_encoding("hex")
    async with stream:
        await b.send_all(b"\x00\xff")
        await b.send_eof()
        await wait_all_tasks_blocked()  # 'end' came; the chunk is kept
        stream.set_encoding(None)
        chunks = [chunk async for chunk in stream]
        stream.end()
    assert chunks == [b"\x00\xff"]


# --- write() ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "encoding", "expected"),
    [
        (b"bytes", None, b"bytes"),
        (bytearray(b"bytearray"), None, b"bytearray"),
        (memoryview(b"memoryview"), None, b"memoryview"),
        ("héllo あ", None, "héllo あ".encode()),
        ("héllo", "utf8", "héllo".encode()),
        ("68656c6c6f", "hex", b"hello"),
        ("aGVsbG8=", "base64", b"hello"),
        ("é\xff", "latin1", b"\xe9\xff"),
        ("", None, b""),
    ],
)
@bounded
async def test_write_types_and_encodings(data: Any, encoding: str | None, expected: bytes) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    async with stream:
        if encoding is None:
            assert stream.write(data) is True
        else:
            assert stream.write(data, encoding) is True
        assert stream.bytes_written == len(expected)  # counted at the call
        stream.end()
        assert await read_to_eof(b) == expected
        await b.send_eof()


@pytest.mark.parametrize("bad", [42, None, [b"x"], 3.5])
@bounded
async def test_write_wrong_type_raises_type_error_and_queues_nothing(bad: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    async with stream:
        with pytest.raises(TypeError):
            stream.write(bad)
        if bad is not None:  # end(None) is a plain end()
            with pytest.raises(TypeError):
                stream.end(bad)
        assert stream.bytes_written == 0
        assert stream.ready_state == "open"
        stream.end()
        assert await read_to_eof(b) == b""
        await b.send_eof()


@bounded
async def test_end_with_data_and_encoding() -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    async with stream:
        stream.write("ab")
        stream.end("6364", "hex")
        assert stream.bytes_written == 4
        assert await read_to_eof(b) == b"abcd"
        await b.send_eof()


@bounded
async def test_bytes_read_counts_received_bytes(record: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    stream.set_encoding("utf8")
    rec = record(stream)
    async with stream:
        assert stream.bytes_read == 0
        await b.send_all("あい".encode())
        await wait_all_tasks_blocked()
        assert stream.bytes_read == 6
        await b.send_all(b"xyz")
        await wait_all_tasks_blocked()
        assert stream.bytes_read == 9
        stream.destroy()
    assert rec.data == "あいxyz"


# --- set_timeout() ----------------------------------------------------------------------------


@bounded
async def test_timeout_once_per_idle_period_activity_restarts(
    record: Any, autojump_clock: Any
) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    stream.set_timeout(1000)
    async with stream:
        await trio.sleep(0.5)
        assert rec.events == ["connect"]
        await trio.sleep(1)  # idle for 1.5 s
        assert rec.events == ["connect", "timeout"]
        await trio.sleep(3)  # still the same idle period
        assert rec.events == ["connect", "timeout"]
        assert stream.ready_state == "open"  # a timeout does not close

        await b.send_all(b"read activity")
        await trio.sleep(0.5)
        assert rec.events == ["connect", "timeout", "data"]
        await trio.sleep(1)
        assert rec.events == ["connect", "timeout", "data", "timeout"]

        stream.write(b"write activity")
        await trio.sleep(0.5)
        assert rec.events == ["connect", "timeout", "data", "timeout"]
        await trio.sleep(1)
        assert rec.events == ["connect", "timeout", "data", "timeout", "timeout"]
        stream.destroy()
    assert rec.events == ["connect", "timeout", "data", "timeout", "timeout", ("close", False)]
    assert await b.receive_some() == b"write activity"


@bounded
async def test_set_timeout_zero_disables(record: Any, autojump_clock: Any) -> None:
    a, _b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    stream.set_timeout(1000)
    async with stream:
        await trio.sleep(0.5)
        stream.set_timeout(0)
        await trio.sleep(5)
        assert rec.events == ["connect"]
        stream.destroy()
    assert rec.events == ["connect", ("close", False)]


@bounded
async def test_set_timeout_callback_is_a_once_listener(record: Any, autojump_clock: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    calls: list[str] = []

    def callback() -> None:
        calls.append("callback")

    stream.set_timeout(1000, callback)
    assert stream.listeners("timeout")[-1] is callback
    async with stream:
        await trio.sleep(1.5)
        assert calls == ["callback"]
        assert callback not in stream.listeners("timeout")
        await b.send_all(b"x")
        await trio.sleep(1.5)
        assert rec.events == ["connect", "timeout", "data", "timeout"]
        assert calls == ["callback"]
        stream.destroy()


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("10", TypeError),
        (None, TypeError),
        (-1, ValueError),
        (math.inf, ValueError),
        (math.nan, ValueError),
    ],
)
def test_set_timeout_rejects_bad_values(value: Any, error: type[Exception]) -> None:
    stream = Stream.wrap(memory_stream_pair()[0])
    with pytest.raises(error):
        stream.set_timeout(value)
    assert stream.listener_count("timeout") == 0


# --- errors ----------------------------------------------------------------------------------


async def _close_peer_receive_side(peer: trio.StapledStream) -> None:
    await peer.receive_stream.aclose()


@bounded
async def test_peer_gone_while_writing_gives_one_error_then_close(record: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    async with stream:
        await wait_all_tasks_blocked()
        await _close_peer_receive_side(b)
        stream.write(b"into the void")
        await stream.wait_closed()
    assert [event if isinstance(event, str) else event[0] for event in rec.events] == [
        "connect",
        "error",
        "close",
    ]
    err = rec.events[1][1]
    assert isinstance(err, BrokenPipeError)
    assert err.code == "EPIPE"
    assert rec.events[2] == ("close", True)
    assert stream.ready_state == "closed"


@bounded
async def test_unhandled_error_is_raised_from_block_and_cancels_body(record: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream, events=("connect", "data", "end", "close"))
    body_cancelled = False
    with pytest.raises(BrokenPipeError) as info:
        async with stream:
            await wait_all_tasks_blocked()
            await _close_peer_receive_side(b)
            stream.write(b"into the void")
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                body_cancelled = True
                raise
    assert type(info.value) is BrokenPipeError
    assert info.value.code == "EPIPE"  # type: ignore[attr-defined]  # set by the library
    assert body_cancelled
    assert rec.events == ["connect", ("close", True)]


@bounded
async def test_error_with_listener_is_not_raised(record: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    errors: list[BaseException] = []
    stream.on("error", errors.append)
    rec = record(stream, events=("connect", "end", "close"))
    async with stream:
        await wait_all_tasks_blocked()
        await _close_peer_receive_side(b)
        stream.write(b"into the void")
        await stream.wait_closed()
    assert [type(err) for err in errors] == [BrokenPipeError]
    assert rec.events == ["connect", ("close", True)]


# --- async for ------------------------------------------------------------------------------


@bounded
async def test_async_for_yields_data_chunks_and_ends_at_end(record: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    iterated: list[bytes] = []

    async def peer() -> None:
        for part in (b"one", b"two", b"three"):
            await b.send_all(part)
            await wait_all_tasks_blocked()
        await b.send_eof()

    async with trio.open_nursery() as nursery, stream:
        nursery.start_soon(peer)
        async for chunk in stream:
            iterated.append(chunk)
        assert rec.events == ["connect", "data", "end"]
        stream.end()
    assert iterated == rec.chunks
    assert b"".join(iterated) == b"onetwothree"
    assert {type(chunk) for chunk in iterated} == {bytes}
    assert rec.events == ["connect", "data", "end", ("close", False)]


@bounded
async def test_async_for_with_encoding_yields_str() -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    stream.set_encoding("utf8")
    async with stream:
        await b.send_all("あ".encode()[:2])
        await wait_all_tasks_blocked()
        await b.send_all("あ".encode()[2:] + b"!")
        await b.send_eof()
        text = "".join([chunk async for chunk in stream])
        stream.end()
    assert text == "あ!"


@bounded
async def test_async_for_raises_stream_error_once(record: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream, events=("connect", "data", "end", "close"))
    async with stream:
        await wait_all_tasks_blocked()
        await _close_peer_receive_side(b)
        stream.write(b"into the void")
        with pytest.raises(BrokenPipeError) as info:
            async for _chunk in stream:
                pass
        assert info.value.code == "EPIPE"  # type: ignore[attr-defined]  # set by the library
    # ...and the block exits without raising it again.
    assert rec.events == ["connect", ("close", True)]


@bounded
async def test_async_for_reads_only_as_fast_as_consumed() -> None:
    a, b = lockstep_stream_pair()
    stream = Stream.wrap(a)
    sent: list[bytes] = []
    parts = [b"one", b"two", b"three", b"four"]

    async def peer() -> None:
        for part in parts:
            await b.send_all(part)
            sent.append(part)
        await b.send_eof()

    async with trio.open_nursery() as nursery, stream:
        nursery.start_soon(peer)
        chunks = aiter(stream)
        first = await anext(chunks)
        await wait_all_tasks_blocked()
        assert first == b"one"
        assert len(sent) <= 2  # at most one chunk read ahead of the consumer
        rest = [chunk async for chunk in chunks]
        assert [first, *rest] == parts
        assert sent == parts
        stream.end()


@bounded
async def test_breaking_out_of_async_for_does_not_hang(record: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    async with stream:
        await b.send_all(b"first")
        async for chunk in stream:
            assert chunk == b"first"
            break
        await b.send_all(b"second")
        await b.send_eof()
        await wait_all_tasks_blocked()
        assert rec.events == ["connect", "data", "end"]
        stream.end()
    assert rec.data == b"firstsecond"
    assert rec.events == ["connect", "data", "end", ("close", False)]


# --- drain() / wait_closed() --------------------------------------------------------------


@bounded
async def test_drain_returns_when_queue_empty() -> None:
    a, b = lockstep_stream_pair()
    stream = Stream.wrap(a)
    drained = trio.Event()

    async def drain() -> None:
        await stream.drain()
        drained.set()

    async with trio.open_nursery() as nursery, stream:
        await stream.drain()  # nothing queued: returns
        stream.write(b"x" * 1000)
        nursery.start_soon(drain)
        await wait_all_tasks_blocked()
        assert not drained.is_set()
        received = b""
        while len(received) < 1000:
            received += await b.receive_some()
        await drained.wait()
        stream.destroy()


@bounded
async def test_drain_raises_stream_state_error_when_destroyed_with_pending_bytes() -> None:
    a, _b = lockstep_stream_pair()
    stream = Stream.wrap(a)
    async with stream:
        stream.write(b"never read")
        async with trio.open_nursery() as nursery:

            async def destroy_later() -> None:
                await wait_all_tasks_blocked()
                stream.destroy()

            nursery.start_soon(destroy_later)
            with pytest.raises(StreamStateError):
                await stream.drain()


@bounded
async def test_wait_closed_returns_after_close(record: Any) -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    rec = record(stream)
    async with stream:
        stream.end()
        await b.send_eof()
        await stream.wait_closed()
        assert rec.events == ["connect", "end", ("close", False)]
        await stream.wait_closed()  # again: returns at once


# --- Node names and registration ------------------------------------------------------------

ALIASES = [
    ("readyState", "ready_state"),
    ("remoteAddress", "remote_address"),
    ("setEncoding", "set_encoding"),
    ("setTimeout", "set_timeout"),
    ("setNoDelay", "set_no_delay"),
    ("setKeepAlive", "set_keep_alive"),
    ("addListener", "on"),
    ("removeListener", "remove_listener"),
    ("removeAllListeners", "remove_all_listeners"),
    ("listenerCount", "listener_count"),
    ("bytesRead", "bytes_read"),
    ("bytesWritten", "bytes_written"),
    ("remotePort", "remote_port"),
    ("localAddress", "local_address"),
    ("localPort", "local_port"),
]
TLS_ALIASES = [
    ("setSecure", "set_secure"),
    ("verifyPeer", "verify_peer"),
    ("getPeerCertificate", "get_peer_certificate"),
]


@pytest.mark.parametrize(("node", "python"), ALIASES)
def test_node_alias_is_the_same_object(node: str, python: str) -> None:
    assert getattr(Stream, node) is getattr(Stream, python)
    stream = Stream.wrap(memory_stream_pair()[0])
    assert getattr(stream, node) == getattr(stream, python)


@pytest.mark.parametrize(("node", "python"), TLS_ALIASES)
def test_tls_node_alias_matches_python_name(node: str, python: str) -> None:
    # The TLS methods themselves are covered by the TLS tests.
    assert hasattr(Stream, node) == hasattr(Stream, python)
    if hasattr(Stream, python):
        assert getattr(Stream, node) is getattr(Stream, python)


def test_module_level_node_aliases() -> None:
    assert net.createConnection is net.create_connection
    assert net.createServer is net.create_server


@bounded
async def test_on_as_decorator() -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    got: list[bytes] = []

    @stream.on("data")
    def received(chunk: bytes) -> None:
        got.append(chunk)

    assert callable(received)
    assert stream.listeners("data") == [received]
    async with stream:
        await b.send_all(b"decorated")
        await wait_all_tasks_blocked()
        stream.destroy()
    assert got == [b"decorated"]


def test_registration_api_on_a_stream() -> None:
    stream = Stream.wrap(memory_stream_pair()[0])

    def first(chunk: bytes) -> None: ...
    def second(chunk: bytes) -> None: ...
    def on_end() -> None: ...

    assert stream.on("data", first) is stream
    assert stream.once("data", second) is stream
    stream.on("end", on_end)
    assert stream.listeners("data") == [first, second]
    assert stream.listener_count("data") == 2
    assert stream.listener_count("drain") == 0
    stream.off("data", first)
    assert stream.listeners("data") == [second]
    stream.remove_listener("data", second)
    assert stream.listener_count("data") == 0
    stream.on("data", first)
    stream.remove_all_listeners("data")
    assert stream.listeners("data") == []
    assert stream.listeners("end") == [on_end]
    stream.remove_all_listeners()
    assert stream.listener_count("end") == 0


@bounded
async def test_once_listener_runs_once() -> None:
    a, b = memory_stream_pair()
    stream = Stream.wrap(a)
    got: list[bytes] = []
    stream.once("data", got.append)
    async with stream:
        for part in (b"one", b"two"):
            await b.send_all(part)
            await wait_all_tasks_blocked()
        stream.destroy()
    assert got == [b"one"]
    assert stream.listener_count("data") == 0


async def test_sync_calls_return_the_stream_for_chaining() -> None:
    """As Node: setEncoding/setTimeout/setNoDelay/setKeepAlive/pause/resume/end/destroy chain."""
    left, _right = trio.testing.memory_stream_pair()
    stream = net.Stream.wrap(left)
    assert (
        stream.setEncoding("utf8").setTimeout(0).setNoDelay(True).setKeepAlive(True, 1000) is stream
    )
    assert stream.pause().resume() is stream
    assert stream.end() is stream
    assert stream.destroy() is stream
    assert stream.ready_state == "closed"
