"""Idle timeouts: argument checks, disabling, re-arming by activity, and
timers that never keep a block alive (Node's test-net-settimeout.js,
test-net-socket-timeout.js, test-net-socket-timeout-unref.js,
test-net-can-reset-timeout.js, test-net-write-slow.js).

Timed behaviour runs over in-memory streams with Trio's ``autojump_clock``
(virtual time, no sleeps in real time); ``set_timeout`` takes milliseconds,
as in Node."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
import trio.testing

import trio_netstream as net

from ._support import LOOPBACK, port_of


async def test_set_timeout_zero_cancels_a_pending_timeout(
    record: Any, autojump_clock: trio.testing.MockClock
) -> None:
    """From test-net-settimeout.js.

    ``set_timeout(100, callback)`` immediately followed by
    ``set_timeout(0)``: no ``'timeout'`` comes, however long the stream
    stays idle afterwards.
    """
    left, right = trio.testing.memory_stream_pair()
    stream = net.Stream.wrap(left)
    rec = record(stream)
    fired: list[str] = []
    stream.set_timeout(100, lambda: fired.append("callback"))
    stream.set_timeout(0)
    async with stream:
        await right.send_all(b"hello")
        await trio.sleep(2)  # twenty of the disabled periods
        stream.destroy()
    await right.aclose()
    assert fired == []
    assert rec.events == ["connect", "data", ("close", False)]
    assert rec.data == b"hello"


@pytest.mark.parametrize("delay", ["100", True, False, None, "", {}, lambda: None, []])
def test_set_timeout_rejects_non_numbers(delay: Any) -> None:
    """From test-net-socket-timeout.js: a non-number delay raises ``TypeError``
    (Node: ``ERR_INVALID_ARG_TYPE``)."""
    with pytest.raises(TypeError):
        net.Stream().set_timeout(delay, lambda: None)


@pytest.mark.parametrize("delay", [-0.001, -1, -math.inf, math.inf, math.nan])
def test_set_timeout_rejects_out_of_range(delay: float) -> None:
    """From test-net-socket-timeout.js: a negative, infinite or NaN delay
    raises ``ValueError`` (Node: ``ERR_OUT_OF_RANGE``, a ``RangeError``)."""
    with pytest.raises(ValueError):
        net.Stream().set_timeout(delay, lambda: None)


@pytest.mark.parametrize("delay", [0, 0.001, 1, 1e6])
def test_set_timeout_accepts_valid_delays(delay: float) -> None:
    """From test-net-socket-timeout.js: 0, fractions and large values are
    valid and are kept, in milliseconds."""
    stream = net.Stream()
    stream.set_timeout(delay, lambda: None)
    assert stream.timeout == pytest.approx(delay)
    assert stream.listener_count("timeout") == 1


@pytest.mark.parametrize("callback", [1, "100", True, False, {}, []])
@pytest.mark.parametrize("delay", [0, 1])
def test_set_timeout_rejects_non_callable_callbacks(callback: Any, delay: int) -> None:
    """From test-net-socket-timeout.js: a callback that is not callable
    raises ``TypeError``. Difference: Node also rejects ``null``; ours takes
    ``None`` as "no callback" (the parameter's default)."""
    stream = net.Stream()
    with pytest.raises(TypeError):
        stream.set_timeout(delay, callback)
    assert stream.listener_count("timeout") == 0


async def test_timeout_callback_destroys_and_no_second_timeout(record: Any) -> None:
    """From test-net-socket-timeout.js (the connection part).

    ``set_timeout(1, callback)`` on a connecting stream: the callback runs
    once; it destroys the stream and sets another 1 ms timeout, which never
    fires. (The period also runs while connecting, so whether ``'connect'``
    came first depends on timing.)
    """
    calls: list[str] = []
    with trio.fail_after(10):
        async with net.create_server(allow_half_open=False) as server:
            await server.listen(0, LOOPBACK)
            client = net.create_connection(port_of(server))
            rec = record(client)

            def first() -> None:
                calls.append("first")
                client.destroy()
                client.set_timeout(1, lambda: calls.append("second"))

            client.set_timeout(1, first)
            async with client:
                pass
            server.close()
    assert calls == ["first"]
    assert [event for event in rec.events if event != "connect"] == ["timeout", ("close", False)]


async def test_pending_timeouts_do_not_keep_blocks_alive(
    record: Any, autojump_clock: trio.testing.MockClock
) -> None:
    """From test-net-socket-timeout-unref.js.

    Node unrefs the sockets and checks that their 2-8 s timeouts do not keep
    the process alive. In Trio terms: a stream with a long idle timeout that
    closes leaves its block at once; the timer goes with it and never fires
    (with the autojump clock, a timer that lingered would fire).
    """
    recs = []
    async with trio.open_nursery() as nursery:
        for seconds in (8, 5, 3, 6, 2, 4):
            left, right = trio.testing.memory_stream_pair()
            stream = net.Stream.wrap(left, allow_half_open=False)
            stream.set_timeout(seconds * 1000, stream.destroy)
            recs.append(record(stream))

            async def run(stream: net.Stream = stream, peer: Any = right) -> None:
                async with stream:
                    await peer.send_all(b"hello")
                    await peer.send_eof()
                await peer.aclose()

            nursery.start_soon(run)
    for rec in recs:
        assert rec.events == ["connect", "data", "end", ("close", False)]


async def test_writing_in_a_timeout_listener_resets_the_timer(
    record: Any, autojump_clock: trio.testing.MockClock
) -> None:
    """From test-net-can-reset-timeout.js.

    A server-side stream with a 100 ms timeout writes in its ``'timeout'``
    listener; the client replies by ending, and the connection closes
    cleanly with exactly one ``'timeout'``: the write started a new idle
    period, the stream was not closed by the timeout.
    """
    left, right = trio.testing.memory_stream_pair()
    server_side = net.Stream.wrap(left)
    client = net.Stream.wrap(right)
    server_side.set_timeout(100)
    server_side.on("data", lambda chunk: None)
    server_side.on("timeout", lambda: server_side.write("WHAT."))
    server_side.on("end", server_side.end)
    client.on("data", lambda chunk: client.end())
    server_rec = record(server_side)
    client_rec = record(client)
    async with trio.open_nursery() as nursery:
        for stream in (server_side, client):

            async def run(stream: net.Stream = stream) -> None:
                async with stream:
                    pass

            nursery.start_soon(run)
    assert server_rec.events == ["connect", "timeout", "end", ("close", False)]
    assert client_rec.events == ["connect", "data", "end", ("close", False)]
    assert client_rec.data == b"WHAT."


async def test_slow_reader_does_not_trigger_writer_timeout(
    record: Any, autojump_clock: trio.testing.MockClock
) -> None:
    """From test-net-write-slow.js (40 writes of 200 kB, 500 ms timeout).

    The writer's idle timeout must not fire while its writes are being
    taken, slowly, by the reader: each completed write is activity. The
    reader takes about 20 ms per chunk (an ``async`` ``'data'`` listener,
    which applies backpressure, instead of Node's pause + resume), so the
    whole transfer takes far longer than the timeout. Runs over
    ``lockstep_stream_pair()``, where a send completes only as the reader
    receives.
    """
    size, count = 200_000, 40
    left, right = trio.testing.lockstep_stream_pair()
    writer = net.Stream.wrap(left)
    reader = net.Stream.wrap(right)
    writer_rec = record(writer, events=("timeout", "end", "error", "close"))
    writer.set_timeout(500)
    writer.on("end", writer.end)
    for _ in range(count):
        writer.write(b"a" * size)
    writer.end()
    received = {"bytes": 0, "chunks": 0}

    async def on_data(chunk: bytes) -> None:
        received["bytes"] += len(chunk)
        received["chunks"] += 1
        await trio.sleep(0.02)

    reader.on("data", on_data)
    reader.on("end", reader.end)
    async with trio.open_nursery() as nursery:
        for stream in (writer, reader):

            async def run(stream: net.Stream = stream) -> None:
                async with stream:
                    pass

            nursery.start_soon(run)
    # The reader's pauses alone add up to more than twice the timeout.
    assert received["chunks"] * 0.02 > 2 * 0.5
    assert received["bytes"] == size * count
    assert writer_rec.events == ["end", ("close", False)]
