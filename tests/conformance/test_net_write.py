"""Writing: queued writes before connect, argument checks, writes after the
stream ended, byte counts and large writes (Node's test-net-*write*.js and
friends). Write callbacks are not part of our API; Node tests that only
check them are not translated."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
from trio.testing import wait_all_tasks_blocked

import trio_netstream as net

from ._support import LOOPBACK, echo, port_of

BAD_CHUNKS: list[Any] = [None, True, False, 1, 1.0, math.inf, -math.inf, [], {}]


async def test_write_before_connect_is_queued_and_counted() -> None:
    """From test-net-connect-buffer.js.

    While connecting, ``ready_state`` is ``"opening"``; anything but
    bytes/str raises ``TypeError``; ``write()`` returns ``False`` and
    ``bytes_written`` counts encoded bytes (not characters) at the call;
    ``end(data)`` while connecting keeps ``"opening"``; the peer gets every
    byte in order.
    """
    received: list[str] = []

    def handler(conn: net.Stream) -> None:
        conn.set_encoding("utf8")
        conn.on("data", received.append)
        conn.on("end", conn.end)

    events: list[Any] = []
    with trio.fail_after(10):
        async with net.create_server(handler) as server:
            await server.listen(0, LOOPBACK)
            stream = net.Stream(high_water_mark=0)
            stream.on("connect", lambda: events.append(("connect", stream.bytes_written)))
            stream.on("end", lambda: events.append("end"))
            stream.on("close", lambda had_error: events.append(("close", had_error)))
            stream.connect(port_of(server))
            assert stream.ready_state == "opening"
            for bad in BAD_CHUNKS:
                with pytest.raises(TypeError):
                    stream.write(bad)
            first = "L'État, c'est "
            assert stream.write(first) is False
            assert stream.bytes_written == len(first.encode("utf8")) == 15
            stream.end("moi")
            assert stream.ready_state == "opening"
            async with stream:
                pass
            server.close()
    assert "".join(received) == "L'État, c'est moi"
    assert events == [("connect", 18), "end", ("close", False)]


async def test_write_rejects_non_data_without_error_event(record: Any) -> None:
    """From test-net-write-arguments.js.

    ``write(x)`` for anything but bytes-like or str raises ``TypeError`` at
    the call (Node: ``ERR_STREAM_NULL_VALUES`` / ``ERR_INVALID_ARG_TYPE``,
    both ``TypeError``) and no ``'error'`` event follows.
    """
    stream = net.Stream(high_water_mark=0)
    rec = record(stream)
    for bad in BAD_CHUNKS:
        with pytest.raises(TypeError):
            stream.write(bad)
    async with stream:
        await wait_all_tasks_blocked()
    assert stream.ready_state == "closed"
    assert rec.events == []


async def test_write_of_a_number_on_a_connected_stream_raises(record: Any) -> None:
    """From test-net-socket-write-error.js.

    On a connected stream ``write(1337)`` raises ``TypeError``; the stream is
    unharmed: ``end()`` still works and the peer's ``'end'`` arrives. (The
    Node server ends itself after ``'end'``; ours needs
    ``allow_half_open=False`` for that, since our default is ``True``.)
    """
    raised: list[type[BaseException]] = []
    with trio.fail_after(10):
        async with net.create_server(allow_half_open=False) as server:
            await server.listen(0, LOOPBACK)
            client = net.create_connection(port_of(server))
            rec = record(client)

            def on_connect() -> None:
                with pytest.raises(TypeError) as info:
                    client.write(1337)  # type: ignore[arg-type]  # the point of the test
                raised.append(info.type)
                client.end()

            client.on("connect", on_connect)
            async with client:
                pass
            server.close()
    assert raised == [TypeError]
    assert rec.events == ["connect", "end", ("close", False)]


async def test_write_after_end_raises_at_the_call(record: Any) -> None:
    """From test-net-write-after-end-nt.js.

    Deliberate difference: Node's ``write()`` after ``end()`` returns
    ``False`` and emits an ``EPIPE`` ``'error'`` on the next tick; ours
    raises ``StreamStateError`` at the call (SPEC), sends nothing, and no
    ``'error'`` event follows.
    """
    received: list[bytes] = []

    def handler(conn: net.Stream) -> None:
        conn.on("data", received.append)
        conn.end()

    with trio.fail_after(10):
        async with net.create_server(handler) as server:
            await server.listen(0, LOOPBACK)
            client = net.create_connection(port_of(server))
            rec = record(client)

            def on_end() -> None:
                with pytest.raises(net.StreamStateError):
                    client.write("hello")

            def on_connect() -> None:
                client.on("end", on_end)
                client.end()

            client.on("connect", on_connect)
            async with client:
                pass
            server.close()
    assert rec.events == ["connect", "end", ("close", False)]
    assert received == []


async def test_server_write_after_peer_closed_raises(record: Any) -> None:
    """From test-net-write-after-close.js.

    The server-side stream (``allow_half_open=False``, as Node's default)
    ends itself after the client's ``'end'``; a later ``write()`` fails.
    Deliberate difference: Node reports it as an ``'error'`` event; ours
    raises ``StreamStateError`` at the call and emits no ``'error'``.
    """
    outcome: list[Any] = []
    conns: list[Any] = []

    def handler(conn: net.Stream) -> None:
        conns.append(record(conn, events=("connect", "end", "error", "close")))
        conn.on("data", lambda chunk: None)

        def on_close(had_error: bool) -> None:
            try:
                conn.write("test")
            except net.StreamStateError as exc:
                outcome.append(type(exc))

        conn.on("close", on_close)

    with trio.fail_after(10):
        async with net.create_server(handler, allow_half_open=False) as server:
            await server.listen(0, LOOPBACK)
            client = net.create_connection(port_of(server))
            rec = record(client)
            client.on("connect", client.end)
            async with client:
                pass
            server.close()
    assert outcome == [net.StreamStateError]
    assert [c.events for c in conns] == [["connect", "end", ("close", False)]]
    assert rec.events == ["connect", "end", ("close", False)]


async def test_write_before_and_after_connect_arrive_in_order() -> None:
    """From test-net-write-connect-write.js.

    A write queued before the connection is up and one made in the
    ``'connect'`` listener are echoed back in order.
    """
    received: list[str] = []
    with trio.fail_after(10):
        async with net.create_server(echo) as server:
            await server.listen(0, LOOPBACK)
            conn = net.create_connection(port_of(server))
            conn.set_encoding("utf8")
            conn.write("before")
            conn.on("connect", lambda: conn.write("after"))

            def on_data(chunk: str) -> None:
                received.append(chunk)
                conn.end()

            conn.on("data", on_data)
            async with conn:
                pass
            server.close()
    assert "".join(received) == "beforeafter"


async def test_bytes_written_counts_bytes_not_characters() -> None:
    """From test-net-socket-byteswritten.js.

    Two writes before connecting (``"one"`` and the UTF-8 bytes of
    ``"twø"``) count 3 + 4 bytes at once, and still 7 at ``'connect'`` and
    at ``'end'``. (Node's client ends itself after ``'end'``; ours ends in
    its ``'end'`` listener, since our default is ``allow_half_open=True``.)
    """
    seen: list[Any] = []
    with trio.fail_after(10):
        async with net.create_server(lambda conn: conn.end()) as server:
            await server.listen(0, LOOPBACK)
            client = net.create_connection(port_of(server))
            client.write("one")
            client.write("twø".encode())
            assert client.bytes_written == 3 + 4
            client.on("connect", lambda: seen.append(("connect", client.bytes_written)))

            def on_end() -> None:
                seen.append(("end", client.bytes_written))
                client.end()

            client.on("end", on_end)
            async with client:
                pass
            server.close()
    assert seen == [("connect", 7), ("end", 7)]


LARGE = 10_000_000


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["bytes", "str", "mixed"])
async def test_bytes_written_and_read_for_large_writes(variant: str) -> None:
    """From test-net-bytes-written-large.js (N = 10 MB, as in Node).

    A write larger than any socket buffer counts fully in ``bytes_written``
    at the call and after the flush, and the peer's ``bytes_read`` equals it
    at ``'close'``. Variants: one ``bytes`` write, one ``str`` write, and a
    ``str`` plus ``bytes`` write followed by ``end("")`` (Node's
    cork/writev variant; we have no cork).
    """
    expected = 2 * LARGE if variant == "mixed" else LARGE
    server_counts: list[Any] = []
    client_counts: list[int] = []

    def handler(conn: net.Stream) -> None:
        if variant == "bytes":
            conn.end(bytes(LARGE))
            server_counts.append(conn.bytes_written)
        elif variant == "str":
            conn.end("a" * LARGE)
            server_counts.append(conn.bytes_written)
        else:
            conn.write("a" * LARGE)
            server_counts.append(conn.bytes_written)
            conn.write(bytes(LARGE))
            server_counts.append(conn.bytes_written)
            conn.end("")
            server_counts.append(conn.bytes_written)
        conn.on("close", lambda had_error: server_counts.append(("close", conn.bytes_written)))

    with trio.fail_after(15):
        async with net.create_server(handler) as server:
            await server.listen(0, LOOPBACK)
            client = net.create_connection(port_of(server))
            client.on("data", lambda chunk: None)
            client.on("end", client.end)
            client.on("close", lambda had_error: client_counts.append(client.bytes_read))
            async with client:
                pass
            server.close()
    if variant == "mixed":
        assert server_counts == [LARGE, 2 * LARGE, 2 * LARGE, ("close", 2 * LARGE)]
    else:
        assert server_counts == [LARGE, ("close", LARGE)]
    assert client_counts == [expected]


async def test_throttled_writes_are_not_lost_while_reader_pauses() -> None:
    """From test-net-throttle.js.

    The server writes 1 KiB chunks until ``write()`` returns ``False``, then
    two more, then ends. The client pauses after every ``'data'`` and resumes
    later; while paused no ``'data'`` comes; every character arrives and it
    paused more than once. (Node's high-water mark is 16 KiB like ours; the
    server here uses 64 KiB so that the transfer needs several reads.)
    """
    body = "C" * 1024
    sent: list[int] = []

    def handler(conn: net.Stream) -> None:
        n = 1
        while conn.write(body):
            n += 1
        conn.write(body)
        conn.write(body)
        n += 2
        sent.append(n * len(body))
        conn.end()

    state = {"received": 0, "pauses": 0, "closed": False}
    wake = [trio.Event()]
    with trio.fail_after(10):
        async with net.create_server(handler, high_water_mark=64 * 1024) as server:
            await server.listen(0, LOOPBACK)
            client = net.create_connection(port_of(server))
            client.set_encoding("ascii")

            def on_data(chunk: str) -> None:
                state["received"] += len(chunk)
                client.pause()
                state["pauses"] += 1
                wake[0].set()

            def on_close(had_error: bool) -> None:
                state["closed"] = True
                wake[0].set()

            client.on("data", on_data)
            client.on("end", client.end)
            client.on("close", on_close)
            async with client:
                for _ in range(10_000):
                    await wake[0].wait()
                    if state["closed"]:
                        break
                    snapshot = state["received"]
                    await wait_all_tasks_blocked()
                    assert state["received"] == snapshot  # nothing while paused
                    wake[0] = trio.Event()
                    client.resume()
            server.close()
    assert sent and state["received"] == sent[0]
    assert state["pauses"] > 1
