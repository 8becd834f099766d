"""'close' is the last event of a connection, and nothing waits on a dead writer.

Regression tests for defects found in review:

* a timer that ``destroy()`` should have stopped still emitted ``'timeout'``,
  after ``'close'`` over sockets (and a callback that wrote raised
  ``StreamStateError`` out of the block);
* a ``'drain'`` came after ``'close'`` when the peer reset the connection
  just as the writer's last send went out (a race: 2-6% of runs with 4 MiB
  writes, about a quarter of the rounds below), and ``write_queue_size``
  went negative;
* ``drain()`` hung where the task that flushes the queue waits for the
  caller: in a task spawned by an async ``'drain'`` listener, and after
  ``set_secure()`` in an async ``'connect'`` listener.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
import trustme
from netstream_testing import MiB, port_of, read_to_eof

import trio_netstream as net

#: Synchronous work a listener does: longer than the 1 ms timeout it sets.
BUSY = 0.005


@contextlib.asynccontextmanager
async def _loopback(kind: str, unix_path: str) -> AsyncIterator[net.Stream]:
    """A client stream (not yet running) to a trio_netstream echo server over
    loopback TCP or a UNIX socket; the server ends each connection after its
    peer's ``'end'``, and closes when the caller's block is over."""

    def echo(conn: net.Stream) -> None:
        conn.on("data", conn.write)

    async with net.create_server(echo, allow_half_open=False) as server:
        if kind == "tcp":
            await server.listen(0, "127.0.0.1")
            yield net.create_connection(port_of(server))
        else:
            await server.listen(unix_path)
            yield net.create_connection(unix_path)
        server.close()


def _timeout_callback(kind: str, stream: net.Stream, events: list[Any]) -> Callable[[], object]:
    if kind == "records":
        return lambda: events.append("timeout callback")
    return lambda: stream.write(b"x")  # Node would never call it: the timer was cleared


# -- 'timeout' after 'close' ------------------------------------------------------


@pytest.mark.parametrize("callback", ["records", "writes"])
@pytest.mark.parametrize("kind", ["tcp", "unix"])
async def test_no_timeout_after_destroy_in_the_listener_that_set_it(
    kind: str, callback: str, unix_path: str, record: Any
) -> None:
    """``set_timeout(1, cb)``, more than 1 ms of synchronous work, then
    ``destroy()``, all in one ``'connect'`` listener: the new timer task ran
    after the teardown and emitted ``'timeout'`` after ``'close'`` every time
    (and a callback that wrote raised ``StreamStateError`` out of the block).
    Node clears the timer in ``destroy()``: ``'connect'``, ``'close'``."""
    with trio.fail_after(10):
        async with _loopback(kind, unix_path) as stream:
            events = record(stream).events

            def on_connect() -> None:
                stream.set_timeout(1, _timeout_callback(callback, stream, events))
                time.sleep(BUSY)  # Trio's clock reads the same monotonic time
                stream.destroy()

            stream.on("connect", on_connect)
            async with stream:
                pass
    assert events == ["connect", ("close", False)]


@pytest.mark.parametrize("callback", ["records", "writes"])
async def test_no_timeout_after_destroy_over_a_wrapped_stream(
    callback: str, record: Any, autojump_clock: trio.testing.MockClock
) -> None:
    """The same over ``Stream.wrap(memory_stream_pair())``; the listener's
    synchronous work is a jump of the mock clock. There the 'timeout' came
    just before 'close' (closing the transport yields), still after
    ``destroy()``."""
    left, right = trio.testing.memory_stream_pair()
    stream = net.Stream.wrap(left)
    events = record(stream).events

    def on_connect() -> None:
        stream.set_timeout(1, _timeout_callback(callback, stream, events))
        autojump_clock.jump(BUSY)
        stream.destroy()

    stream.on("connect", on_connect)
    with trio.fail_after(10):
        async with stream:
            pass
    assert events == ["connect", ("close", False)]
    await right.aclose()


@pytest.mark.parametrize("callback", ["records", "writes"])
@pytest.mark.parametrize("event", ["end", "data"])
@pytest.mark.parametrize("kind", ["tcp", "unix"])
async def test_no_timeout_after_destroy_from_a_timer_parked_by_set_timeout_zero(
    kind: str, event: str, callback: str, unix_path: str, record: Any
) -> None:
    """A timer parked by ``set_timeout(0)``, woken by ``set_timeout(1)`` in a
    listener that then works for more than 1 ms and calls ``destroy()``: the
    woken timer emitted ``'timeout'`` anyway, after ``'close'`` when the
    listener was ``'end'``'s (the connection closed without a yield), before
    it when it was ``'data'``'s."""
    with trio.fail_after(10):
        async with _loopback(kind, unix_path) as stream:
            events = record(stream).events

            def in_listener(*_: object) -> None:
                stream.set_timeout(1, _timeout_callback(callback, stream, events))
                time.sleep(BUSY)
                stream.destroy()

            emitter: Any = stream  # 'data' or 'end', chosen at run time
            emitter.on(event, in_listener)
            stream.set_timeout(5000)
            async with stream:
                await trio.testing.wait_all_tasks_blocked()
                stream.set_timeout(0)  # the timer task parks
                await trio.testing.wait_all_tasks_blocked()
                if event == "data":
                    stream.write(b"hello")  # echoed
                else:
                    stream.end()  # the server ends too
    assert events == ["connect", event, ("close", False)]


# -- 'drain' after 'close' ----------------------------------------------------------

#: The first write, and each write of the ``'drain'`` listener's pump.
CHUNK = 1 * MiB
PAYLOAD = bytes(CHUNK)
#: What the pump writes in all; the peer reads the first ``CHUNK``, then resets.
TOTAL = 2 * CHUNK
#: Rounds of the race. About a quarter of them failed; 500 rounds take about
#: half a second once it is fixed.
ROUNDS = 500


async def _read_then_reset(listener: socket.socket, count: int) -> None:
    """The peer: accept one connection, read *count* bytes, then close it with
    ``SO_LINGER`` 0 (a reset). It polls rather than waiting in epoll, so it
    is runnable in every scheduler batch: it keeps the scheduler busy, and
    reads and resets right after the writer's send in about half the rounds."""
    await trio.lowlevel.wait_readable(listener)
    conn, _ = listener.accept()
    with conn:
        conn.setblocking(False)
        got = 0
        while got < count:
            await trio.lowlevel.checkpoint()
            with contextlib.suppress(BlockingIOError):
                while got < count:
                    data = conn.recv(min(count - got, MiB))
                    if not data:
                        return
                    got += len(data)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def _write_until_the_peer_resets() -> tuple[list[Any], list[BaseException], Any, int]:
    """One round: write ``CHUNK`` (``write()`` is ``False``) and pump up to
    ``TOTAL`` from ``'drain'``, Node's idiom, while the peer reads ``CHUNK``
    and resets. Returns the events, the errors emitted, what the block raised
    (or ``None``), and ``write_queue_size`` after the block."""
    events: list[Any] = []
    errors: list[BaseException] = []
    raised: Any = None
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        stream = net.create_connection(listener.getsockname()[1])
        sent = CHUNK

        def pump() -> None:
            nonlocal sent
            events.append("drain")
            while sent < TOTAL:
                sent += CHUNK
                if not stream.write(PAYLOAD):
                    break

        def on_error(exc: BaseException) -> None:
            events.append("error")
            errors.append(exc)

        stream.on("drain", pump)
        stream.on("error", on_error)
        stream.on("close", lambda had_error: events.append(("close", had_error)))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read_then_reset, listener, CHUNK)
            try:
                async with stream:
                    events.append(("write", stream.write(PAYLOAD)))
            except Exception as exc:
                raised = exc
    return events, errors, raised, stream.write_queue_size


async def test_no_drain_after_close_when_the_peer_resets_as_the_write_goes_out() -> None:
    """The writer's send took the whole chunk, then yielded; meanwhile the
    peer read it and reset, and the teardown ran (``'error'``, ``'close'``).
    Then the writer took the sent bytes off the emptied queue
    (``write_queue_size`` became ``-CHUNK``) and emitted ``'drain'`` after
    ``'close'``, whose pump's ``write()`` raised ``StreamStateError`` out of
    the block, although the reset had an ``'error'`` listener. A race (about
    a quarter of these rounds). Each round must end with one ``'error'`` (the
    reset), then ``'close'(True)``, nothing after it, nothing raised, nothing
    queued."""
    with trio.fail_after(30):
        for round_ in range(ROUNDS):
            events, errors, raised, queued = await _write_until_the_peer_resets()
            drains = ["drain"] * events.count("drain")
            expected = [("write", False), *drains, "error", ("close", True)]
            outcome = (events, raised, queued)
            assert outcome == (expected, None, 0), f"round {round_}: {outcome}"
            assert len(errors) == 1
            assert isinstance(errors[0], (ConnectionResetError, BrokenPipeError)), errors


# -- drain() where the task that flushes waits for the caller -----------------------

TLS_EVENTS = ("connect", "secure", "data", "end", "drain", "timeout", "error", "close")
#: What a listener writes: more than goes out at once.
FEW_MIB = 4 * MiB


async def _drain_in_a_task_of_a_drain_listener(
    stream: net.Stream, peer: Callable[[], Awaitable[bytes]], record: Any
) -> tuple[list[Any], list[str], bytes]:
    """Write until ``write()`` is ``False``; the async ``'drain'`` listener
    writes ``FEW_MIB`` and awaits a nursery whose task awaits ``drain()``.
    Returns the events, how that ``drain()`` ended, and what *peer* read."""
    events = record(stream).events
    outcomes: list[str] = []
    received = b""
    listener_done = trio.Event()

    async def waiter() -> None:
        try:
            await stream.drain()
        except net.StreamStateError:
            outcomes.append("StreamStateError")
        else:
            outcomes.append("drained")

    async def on_drain() -> None:
        stream.write(bytes(FEW_MIB))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
        listener_done.set()

    async def read() -> None:
        nonlocal received
        received = await peer()

    stream.once("drain", on_drain)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        async with stream:
            assert stream.write(bytes(64 * 1024)) is False
            await listener_done.wait()
            await stream.drain()  # from the block's body: waiting is fine here
            stream.end()
    return events, outcomes, received


async def test_drain_in_a_task_of_an_async_drain_listener_does_not_hang(
    record: Any, autojump_clock: trio.testing.MockClock
) -> None:
    """``drain()`` in a task that an async ``'drain'`` listener started and
    awaits hung forever: the writer, which would flush the queue, waits for
    that listener (only ``drain()`` in the listener's own task was refused).
    It must return once the bytes went out, or raise ``StreamStateError`` at
    once; not hang. Over ``Stream.wrap(memory_stream_pair())``."""
    left, right = trio.testing.memory_stream_pair()

    async def peer() -> bytes:
        data = await read_to_eof(right)
        await right.aclose()
        return data

    with trio.fail_after(10):
        events, outcomes, received = await _drain_in_a_task_of_a_drain_listener(
            net.Stream.wrap(left), peer, record
        )
    assert outcomes in (["drained"], ["StreamStateError"])
    assert events == ["connect", "drain", "drain", "end", ("close", False)]
    assert len(received) == 64 * 1024 + FEW_MIB


async def test_drain_in_a_task_of_an_async_drain_listener_does_not_hang_over_tcp(
    record: Any,
) -> None:
    """The same over loopback TCP, against a raw Trio peer that reads
    everything. The listener's ``write()`` returns ``False``, so ``drain()``
    waits (for the bytes, or for the ``'drain'`` owed to them)."""
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")

    async def peer() -> bytes:
        async with listener, await listener.accept() as conn:
            return await read_to_eof(conn)

    stream = net.create_connection(listener.socket.getsockname()[1])
    with trio.fail_after(5):
        events, outcomes, received = await _drain_in_a_task_of_a_drain_listener(
            stream, peer, record
        )
    assert outcomes in (["drained"], ["StreamStateError"])
    assert events == ["connect", "drain", "drain", "end", ("close", False)]
    assert len(received) == 64 * 1024 + FEW_MIB


@pytest.fixture(scope="module")
def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context for 127.0.0.1 and a client context trusting it (``trustme``)."""
    ca = trustme.CA()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


async def test_drain_after_set_secure_in_an_async_connect_listener_does_not_hang(
    record: Any, tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    """``set_secure()``, ``write()``, then ``await drain()`` in an async
    ``'connect'`` listener hung forever: the bytes wait for the handshake,
    which the stream's task runs only after the ``'connect'`` listeners
    returned. ``drain()`` must return once the bytes went out, or raise
    ``StreamStateError`` at once; not hang. The peer is a ``trio.SSLStream``."""
    server_ctx, client_ctx = tls_contexts
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    stream = net.create_connection(listener.socket.getsockname()[1])
    events = record(stream, events=TLS_EVENTS).events
    outcomes: list[str] = []
    received = b""

    async def on_connect() -> None:
        stream.set_secure(client_ctx)
        stream.write(b"hello")
        try:
            await stream.drain()
        except net.StreamStateError:
            outcomes.append("StreamStateError")
        else:
            outcomes.append("drained")
        stream.end()

    async def peer() -> None:
        nonlocal received
        async with listener:
            tls = trio.SSLStream(await listener.accept(), server_ctx, server_side=True)
            async with tls:
                received = await read_to_eof(tls)

    stream.on("connect", on_connect)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer)
            async with stream:
                pass
    assert outcomes in (["drained"], ["StreamStateError"])
    assert events == ["connect", "secure", "end", ("close", False)]
    assert received == b"hello"


@pytest.mark.parametrize("error", [None, ConnectionAbortedError("bye")])
async def test_a_stream_destroyed_by_its_connection_listener_emits_only_close(
    error: BaseException | None,
) -> None:
    """The contract: a server-side stream emits 'connect' after the connection
    listener returned, "unless a listener destroyed the stream: then 'close'
    (after 'error' if one was given) is all it emits". It emitted 'connect'."""
    events: list[Any] = []

    def on_connection(stream: net.Stream) -> None:
        for name in ("connect", "data", "end", "error", "close"):
            stream.on(name, lambda *args, name=name: events.append((name, *args)))
        stream.destroy(error)

    with trio.fail_after(10):
        async with net.create_server(on_connection) as server:
            await server.listen(0, "127.0.0.1")
            address = server.address()
            assert isinstance(address, tuple)
            client = await trio.open_tcp_stream(*address)
            assert await client.receive_some(10) == b""  # closed by the server
            await client.aclose()
            server.close()
    expected: list[Any] = [] if error is None else [("error", error)]
    assert events == [*expected, ("close", error is not None)]


async def test_drain_in_an_async_connection_listener_of_a_tls_server_waits(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """An async 'connection' listener is a task beside the stream's own, not
    one of them: its drain() before the handshake ended must wait (for the
    handshake, then the flush), not raise StreamStateError (found by a
    review of the check that makes drain() raise where it would wait for
    itself)."""
    server_ctx, client_ctx = tls_contexts
    outcome: list[str] = []

    async def handler(stream: net.Stream) -> None:
        await trio.lowlevel.checkpoint()  # the connection's lifecycle is running now
        stream.write(b"hello over tls")
        await stream.drain()
        outcome.append("drained")
        stream.end()

    got: list[bytes] = []
    with trio.fail_after(10):
        async with net.create_server(handler, ssl=server_ctx) as server:
            await server.listen(0, "127.0.0.1")
            address = server.address()
            assert isinstance(address, tuple)
            client = net.create_connection(address[1], ssl=client_ctx, server_hostname="127.0.0.1")
            client.on("data", got.append)
            client.on("end", client.end)
            async with client:
                pass
            server.close()
    assert outcome == ["drained"]
    assert b"".join(got) == b"hello over tls"


async def test_drain_after_set_secure_with_only_plaintext_queued_waits(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """In an async 'connect' listener: a large plaintext write, set_secure(),
    drain(). Only plaintext is queued, which the writer sends without the
    handshake: drain() returns once it went out (as before the check that
    makes drain() raise where it would wait for itself), it does not raise.
    The peer only reads: the handshake never happens, drain() needs none."""
    _, client_ctx = tls_contexts
    size = 8 * MiB
    outcome: list[Any] = []
    received = 0

    def on_connection(stream: net.Stream) -> None:
        def on_data(data: bytes) -> None:
            nonlocal received
            received += len(data)

        stream.on("data", on_data)
        stream.on("end", stream.end)
        stream.on("error", lambda exc: None)  # the client's destroy() may reset

    with trio.fail_after(10):
        async with net.create_server(on_connection) as server:
            await server.listen(0, "127.0.0.1")
            address = server.address()
            assert isinstance(address, tuple)
            client = net.create_connection(address[1])

            async def on_connect() -> None:
                client.write(b"p" * size)
                outcome.append(client.write_queue_size > 0)  # some had to be queued
                client.set_secure(client_ctx, server_hostname="127.0.0.1")
                await client.drain()
                outcome.append("drained")
                client.destroy()

            client.on("connect", on_connect)
            async with client:
                pass
            server.close()
    assert outcome == [True, "drained"]
    assert received >= size  # every plaintext byte went out before drain() returned


async def _drain_in_a_data_listener_after_a_try_write() -> list[Any]:
    outcome: list[Any] = []
    async with net.create_server(lambda s: s.end(b"hi")) as server:
        await server.listen(0, "127.0.0.1")
        address = server.address()
        assert isinstance(address, tuple)
        client = net.create_connection(address[1], high_water_mark=1024)
        client.on("drain", lambda: outcome.append("drain"))

        async def on_data(chunk: bytes) -> None:
            outcome.append(client.write(b"x" * 4096))  # False, yet sent at once
            await client.drain()
            outcome.append("drained")
            client.destroy()

        client.on("data", on_data)
        async with client:
            pass
        server.close()
    return outcome


async def test_drain_in_an_async_data_listener_after_a_try_write_does_not_hang() -> None:
    """drain() in an async 'data' listener, after a write() that answered
    False but went out at once, with a 'drain' listener: the writer cleared
    the owed drain, then waited for this listener to emit it, and woke
    drain() only after: both waited forever (in about a third of the runs;
    found by a review). 20 bounded rounds."""
    for _ in range(20):
        with trio.fail_after(10):
            outcome = await _drain_in_a_data_listener_after_a_try_write()
        assert outcome[:2] == [False, "drained"]
        assert outcome.count("drain") <= 1
