"""Lifecycle: pause/resume before connecting, end/close order, half-open
streams, destroy, errors reported once, reconnecting the same object, byte
counters per connection (Node's test-net-end-*.js, test-net-allow-half-open.js,
test-net-pingpong.js, test-net-reconnect.js, test-net-bytes-*.js...)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import wait_all_tasks_blocked

import trio_netstream as net

from ._support import IPV6, LOOPBACK, Tally, code_of, port_of


async def _run(stream: net.Stream) -> None:
    async with stream:
        pass


async def test_pause_and_resume_before_connecting(record: Any) -> None:
    """From test-net-pause-resume-connecting.js.

    ``pause()`` / ``resume()`` are allowed before the connection is up and
    the last call wins: of five clients, the three that end up resumed get
    the server's data, the two that end up paused get no ``'data'`` (and,
    being paused, no ``'end'`` either). When those two drop their ``'data'``
    listeners and resume, ``'end'`` and ``'close'`` follow without any
    ``'data'``. Difference (docs/behaviour.md): Node drops data that flows
    with no listener; ours keeps it for a later consumer — none comes here.
    """
    text = "This was the year he fell to pieces."
    accepted = Tally()
    flowing_closed = Tally()

    def handler(conn: net.Stream) -> None:
        conn.end(text)
        accepted.add()

    plans = [
        ["resume"],
        ["pause", "resume"],
        ["pause"],
        ["resume", "pause", "resume"],
        ["resume", "resume", "pause"],
    ]
    with trio.fail_after(10):
        async with net.create_server(handler) as server:
            await server.listen(0)
            clients = []
            for plan in plans:
                client = net.create_connection(port_of(server), "localhost")
                for call in plan:
                    getattr(client, call)()
                client.on("end", client.end)
                clients.append(client)
            recs = [record(client) for client in clients]
            paused = [clients[2], clients[4]]
            for client in clients:
                if client not in paused:
                    client.on("close", flowing_closed.add)
            async with trio.open_nursery() as nursery:
                for client in clients:
                    nursery.start_soon(_run, client)
                await accepted.wait_for(5)
                await flowing_closed.wait_for(3)
                await wait_all_tasks_blocked()
                assert [recs[2].events, recs[4].events] == [["connect"], ["connect"]]
                for client in paused:
                    client.remove_all_listeners("data")
                    client.resume()
            server.close()
    for i in (0, 1, 3):
        assert recs[i].events == ["connect", "data", "end", ("close", False)]
        assert recs[i].data == text.encode()
    for i in (2, 4):
        assert recs[i].events == ["connect", "end", ("close", False)]
        assert recs[i].chunks == []


async def test_end_then_close_when_the_peer_ends_at_once(record: Any) -> None:
    """From test-net-end-close.js.

    A stream whose peer sends EOF straight away emits ``'end'`` then
    ``'close'``. (Node builds a socket on a fake handle with
    ``writable: false``; we wrap one end of ``memory_stream_pair()`` with
    ``allow_half_open=False`` so that it ends itself after ``'end'``.)
    """
    left, right = trio.testing.memory_stream_pair()
    stream = net.Stream.wrap(left, allow_half_open=False)
    rec = record(stream)
    with trio.fail_after(10):
        async with stream:
            await right.send_eof()
    await right.aclose()
    assert rec.events == ["connect", "end", ("close", False)]


async def test_end_arrives_before_the_stream_is_destroyed(record: Any) -> None:
    """From test-net-end-destroyed.js.

    The client ends first; the server (``allow_half_open=False``, Node's
    default) ends in reply. In the client's ``'end'`` listener the stream
    is not destroyed yet: both sides ended cleanly, so ``ready_state`` is
    ``"closed"`` and ``'close'(False)`` follows.
    """
    states: list[str] = []
    connections = Tally()
    with trio.fail_after(10):
        async with net.create_server(connections.add, allow_half_open=False) as server:
            await server.listen(0)
            client = net.create_connection(port_of(server))
            rec = record(client)
            client.on("connect", client.end)
            client.on("end", lambda: states.append(client.ready_state))
            async with client:
                pass
            server.close()
    assert connections.count == 1
    assert states == ["closed"]
    assert rec.events == ["connect", "end", ("close", False)]


async def test_end_without_connect_does_nothing(record: Any) -> None:
    """From test-net-end-without-connect.js.

    ``end()`` on a stream that never connected does not raise (and, as
    docs/behaviour.md says, does nothing: no event, still ``"closed"``).
    """
    stream = net.Stream()
    rec = record(stream)
    stream.end()
    async with stream:
        await wait_all_tasks_blocked()
    assert stream.ready_state == "closed"
    assert rec.events == []


async def test_end_before_connect_still_closes(record: Any) -> None:
    """From test-net-socket-end-before-connect.js.

    ``end()`` while connecting keeps ``ready_state`` ``"opening"``
    (docs/behaviour.md); the stream connects, sends FIN and, once the
    server (``allow_half_open=False``, Node's default) ends too, emits
    ``'close'``.
    """
    with trio.fail_after(10):
        async with net.create_server(allow_half_open=False) as server:
            await server.listen(0)
            client = net.create_connection(port_of(server))
            rec = record(client)
            client.end()
            assert client.ready_state == "opening"
            async with client:
                pass
            server.close()
    assert rec.events == ["connect", "end", ("close", False)]


async def test_close_comes_after_end_even_with_unread_data(record: Any) -> None:
    """From test-net-socket-close-after-end.js.

    Both sides ``end("foo")`` at once; the server stream does not read its
    data at first (Node delays ``read()``; ours has no consumer, so the
    bytes are kept, docs/behaviour.md). Its ``'end'`` still comes before
    its ``'close'``.
    """
    server_recs: list[Any] = []

    def handler(conn: net.Stream) -> None:
        server_recs.append(record(conn, events=("connect", "end", "error", "close")))
        conn.end("foo")

    with trio.fail_after(10):
        async with net.create_server(handler) as server:
            await server.listen(0)
            client = net.create_connection(port_of(server))
            rec = record(client)
            client.on("connect", lambda: client.end("foo"))
            async with client:
                pass
            server.close()
    assert [r.events for r in server_recs] == [["connect", "end", ("close", False)]]
    assert rec.events == ["connect", "data", "end", ("close", False)]
    assert rec.data == b"foo"


async def test_allow_half_open_default_and_false(record: Any) -> None:
    """From test-net-allow-half-open.js.

    Deliberate difference (SPEC): our default is ``allow_half_open=True``
    (the seed's), Node v20's is ``False``. With the default, after the
    server's ``end()`` the client is ``"writeOnly"`` and can still write;
    the server gets those bytes. With ``allow_half_open=False`` the client
    ends itself after ``'end'`` — properly, not by destroying: its
    ``'close'`` says ``had_error=False``.
    """
    received: list[bytes] = []

    def handler(conn: net.Stream) -> None:
        conn.on("data", received.append)
        conn.end(bytes(1024))

    with trio.fail_after(10):
        async with net.create_server(handler) as server:
            await server.listen(0)
            port = port_of(server)

            default = net.create_connection(port)
            assert default.allow_half_open is True
            rec_default = record(default)
            states: list[str] = []

            def on_end() -> None:
                states.append(default.ready_state)
                assert default.write("still writable") is True
                default.end()

            default.on("end", on_end)
            await _run(default)

            strict = net.create_connection(port, allow_half_open=False)
            assert strict.allow_half_open is False
            rec_strict = record(strict)
            strict.on("end", lambda: states.append(strict.ready_state))
            await _run(strict)
            server.close()
    assert states == ["writeOnly", "writeOnly"]
    assert b"".join(received) == b"still writable"
    for rec in (rec_default, rec_strict):
        assert rec.events == ["connect", "data", "end", ("close", False)]
        assert rec.data == bytes(1024)


async def test_half_open_clients_write_after_server_ends(record: Any) -> None:
    """From test-net-connect-options-allowhalfopen.js.

    Server and clients with ``allow_half_open=True``; the server ends each
    connection at once. Every client, whichever entry point made it, is
    still writable after its ``'end'``: ``write()`` returns ``True``, the
    server receives the bytes, and each server stream emits ``'end'``
    exactly once.
    """
    ids: list[str] = []
    server_recs: list[Any] = []

    def handler(conn: net.Stream) -> None:
        rec = record(conn, events=("end", "error", "close"))
        server_recs.append(rec)
        conn.on("data", lambda chunk: ids.append(chunk.decode()))
        conn.end()

    results: list[Any] = []
    with trio.fail_after(10):
        async with net.create_server(handler, allow_half_open=True) as server:
            await server.listen(0, LOOPBACK)
            port = port_of(server)
            clients = [
                net.connect(port, LOOPBACK, allow_half_open=True),
                net.create_connection(port, LOOPBACK, allow_half_open=True),
                net.Stream(allow_half_open=True).connect(port, LOOPBACK),
            ]
            recs = [record(client) for client in clients]
            for index, client in enumerate(clients, 1):

                def on_end(client: net.Stream = client, index: int = index) -> None:
                    results.append((index, client.ready_state, client.write(str(index))))
                    client.end()

                client.on("end", on_end)
            async with trio.open_nursery() as nursery:
                for client in clients:
                    nursery.start_soon(_run, client)
            server.close()
    assert sorted(results) == [
        (1, "writeOnly", True),
        (2, "writeOnly", True),
        (3, "writeOnly", True),
    ]
    assert sorted(ids) == ["1", "2", "3"]
    assert [r.events for r in server_recs] == [["end", ("close", False)]] * 3
    for rec in recs:
        assert rec.events == ["connect", "end", ("close", False)]


def _pingpong_transports() -> list[Any]:
    return [
        "unix",
        "tcp4",
        pytest.param(
            "tcp6",
            marks=pytest.mark.skipif(not IPV6, reason="IPv6 loopback (::1) is unavailable"),
        ),
    ]


@pytest.mark.parametrize("transport", _pingpong_transports())
async def test_pingpong(transport: str, unix_path: str) -> None:
    """From test-net-pingpong.js (N = 200 instead of 1000).

    A half-open server (``allow_half_open=True``, ``set_no_delay()``,
    ``"utf8"``) answers each ``"PING"`` with ``"PONG"``; the client
    (``"ascii"``) pings N times, then sends a last ``"PING"`` and ends.
    Ready states along the way: ``"open"`` while both write; the client is
    ``"readOnly"`` after its ``end()``; the server is ``"writeOnly"`` at its
    ``'end'`` and ends in turn. The server has one connection while it runs.
    Over a UNIX socket, TCP on 127.0.0.1 and TCP on ::1.
    """
    n = 200
    state = {"count": 0, "pongs": 0, "final": False}
    log: list[str] = []

    async with net.create_server(allow_half_open=True) as server:

        def handler(conn: net.Stream) -> None:
            assert server.connections == 1
            conn.set_no_delay()
            conn.set_encoding("utf8")

            def on_data(data: str) -> None:
                assert conn.ready_state == "open"
                assert data == "PING"
                conn.write("PONG")
                state["pongs"] += 1

            def on_end() -> None:
                log.append(f"server end {conn.ready_state}")
                conn.end()

            def on_close(had_error: bool) -> None:
                log.append(f"server close {had_error} {conn.ready_state}")
                server.close()

            conn.on("data", on_data)
            conn.on("end", on_end)
            conn.on("close", on_close)

        server.on("connection", handler)
        with trio.fail_after(10):
            if transport == "unix":
                await server.listen(unix_path)
                client = net.create_connection(unix_path)
            else:
                host = LOOPBACK if transport == "tcp4" else "::1"
                await server.listen(0, host)
                client = net.create_connection(port_of(server), host)
            client.set_encoding("ascii")

            def on_connect() -> None:
                assert client.ready_state == "open"
                client.write("PING")

            def on_client_data(data: str) -> None:
                assert data == "PONG"
                state["count"] += 1
                if state["final"]:
                    assert client.ready_state == "readOnly"
                    return
                assert client.ready_state == "open"
                if state["count"] < n:
                    client.write("PING")
                else:
                    state["final"] = True
                    client.write("PING")
                    client.end()

            client.on("connect", on_connect)
            client.on("data", on_client_data)
            client.on("close", lambda had_error: log.append(f"client close {had_error}"))
            await _run(client)
    assert state == {"count": n + 1, "pongs": n + 1, "final": True}
    assert sorted(log) == [
        "client close False",
        "server close False closed",
        "server end writeOnly",
    ]


async def test_reconnect_same_object_from_close_listener(record: Any) -> None:
    """From test-net-reconnect.js (N = 20 instead of 50).

    A ``'close'`` listener that calls ``connect()`` reuses the stream with
    its listeners and encoding: every round gets ``"hello\\r\\n"``, an
    ``'end'`` and a clean ``'close'``, on both sides.
    """
    n = 20
    server_closes: list[bool] = []

    def handler(conn: net.Stream) -> None:
        conn.on("data", lambda chunk: None)
        conn.write("hello\r\n")
        conn.on("end", conn.end)
        conn.on("close", server_closes.append)

    with trio.fail_after(10):
        async with net.create_server(handler) as server:
            await server.listen(0)
            port = port_of(server)
            client = net.create_connection(port)
            client.set_encoding("UTF8")
            rec = record(client)
            rounds = {"done": 0}

            def on_data(chunk: str) -> None:
                client.end()

            def on_close(had_error: bool) -> None:
                if rounds["done"] < n:
                    rounds["done"] += 1
                    client.connect(port)
                else:
                    server.close()

            client.on("data", on_data)
            client.on("close", on_close)
            await _run(client)
    assert rec.events == ["connect", "data", "end", ("close", False)] * (n + 1)
    assert rec.chunks == ["hello\r\n"] * (n + 1)
    assert server_closes == [False] * (n + 1)


async def test_bytes_read_and_written_per_connection() -> None:
    """From test-net-bytes-stats.js.

    Over two connections of the same stream, the client writes ``"foo"``
    then ends with ``"bar"``: 6 bytes written and read per connection, 12
    in total. ``bytes_read`` / ``bytes_written`` start again from 0 on
    reconnect (SPEC), which is what Node's totals rely on.
    """
    server_reads: list[int] = []
    client_writes: list[int] = []

    def handler(conn: net.Stream) -> None:
        conn.on("data", lambda chunk: None)

        def on_end() -> None:
            server_reads.append(conn.bytes_read)
            conn.end()

        conn.on("end", on_end)

    with trio.fail_after(10):
        async with net.create_server(handler) as server:
            await server.listen(0)
            port = port_of(server)
            client = net.create_connection(port)

            async def on_connect() -> None:
                client.write("foo")
                await client.drain()
                client.end("bar")

            def on_close(had_error: bool) -> None:
                client_writes.append(client.bytes_written)
                if len(client_writes) < 2:
                    client.connect(port)
                else:
                    server.close()

            client.on("connect", on_connect)
            client.on("close", on_close)
            await _run(client)
    assert server_reads == [6, 6]
    assert client_writes == [6, 6]


async def test_bytes_read_grows_with_each_chunk() -> None:
    """From test-net-bytes-read.js.

    Receiving 1 MiB: ``bytes_read`` grows with every ``'data'`` and equals
    the total at ``'end'`` and at ``'close'``, when ``socket`` is ``None``.
    """
    big = bytes(1024 * 1024)
    seen: list[Any] = []
    with trio.fail_after(10):
        async with net.create_server(lambda conn: conn.end(big)) as server:
            await server.listen(0)
            client = net.create_connection(port_of(server))
            client.end()
            prev = {"value": 0}

            def on_data(chunk: bytes) -> None:
                assert client.bytes_read > prev["value"]
                prev["value"] = client.bytes_read

            def on_connect() -> None:
                client.on("data", on_data)

            client.on("connect", on_connect)
            client.on("end", lambda: seen.append(("end", client.bytes_read, prev["value"])))
            client.on(
                "close", lambda had_error: seen.append(("close", client.bytes_read, client.socket))
            )
            await _run(client)
            server.close()
    assert seen == [("end", len(big), len(big)), ("close", len(big), None)]


async def test_destroy_twice_then_write_raises(record: Any) -> None:
    """From test-net-socket-destroy-send.js.

    ``destroy()`` twice in a row is harmless; a later ``write()`` fails.
    Deliberate difference (SPEC): Node reports ``ERR_SOCKET_CLOSED`` through
    ``'error'`` and the write callback; ours raises ``StreamStateError`` at
    the call and emits no ``'error'``: only ``'close'(False)``. (The server
    uses ``allow_half_open=False``, Node's default, so that it closes too.)
    """
    with trio.fail_after(10):
        async with net.create_server(allow_half_open=False) as server:
            await server.listen(0)
            client = net.create_connection(port_of(server))
            rec = record(client)

            def on_connect() -> None:
                client.destroy()
                client.destroy()
                with pytest.raises(net.StreamStateError):
                    client.write(b"kaboom")

            client.on("connect", on_connect)
            await _run(client)
            server.close()
    assert rec.events == ["connect", ("close", False)]


async def test_error_is_emitted_once(record: Any) -> None:
    """From test-net-error-twice.js.

    The client destroys its stream while the server writes 10 MB to it: the
    server stream gets exactly one ``'error'`` (``EPIPE`` or
    ``ECONNRESET``), then ``'close'(True)``. (Whether it read the client's
    FIN, and so emitted ``'end'``, first depends on timing.)
    """
    buf = b"b" * (10 * 1024 * 1024)
    server_recs: list[Any] = []
    server_conns: list[net.Stream] = []
    ready = Tally()

    def handler(conn: net.Stream) -> None:
        server_recs.append(record(conn, events=("connect", "end", "error", "close")))
        server_conns.append(conn)
        ready.add()

    with trio.fail_after(10):
        async with net.create_server(handler) as server:
            await server.listen(0)
            client = net.create_connection(port_of(server))
            rec = record(client)
            client.on("connect", ready.add)
            async with client:
                await ready.wait_for(2)
                client.destroy()
                server_conns[0].write(buf)
            server.close()
    assert rec.events == ["connect", ("close", False)]
    events = [event for event in server_recs[0].events if event != "end"]
    assert len(events) == 3
    error = events[1][1]
    assert isinstance(error, (BrokenPipeError, ConnectionResetError))
    assert code_of(error) in ("EPIPE", "ECONNRESET")
    assert events == ["connect", ("error", error), ("close", True)]


async def test_calls_after_close_do_not_raise(record: Any) -> None:
    """From test-net-after-close.js.

    After ``'close'`` the socket is gone (``socket`` is ``None``) and
    ``set_no_delay()``, ``set_keep_alive()``, ``pause()``, ``resume()``,
    ``write_queue_size`` (Node's ``bufferSize``) and the address fields
    can still be used without raising.
    """
    seen: list[Any] = []
    with trio.fail_after(10):
        async with net.create_server(lambda conn: conn.end()) as server:
            await server.listen(0, LOOPBACK)
            client = net.create_connection(port_of(server))
            rec = record(client)
            client.on("end", client.end)

            def on_close(had_error: bool) -> None:
                seen.append(client.socket)
                client.set_no_delay()
                client.set_keep_alive()
                seen.append(client.write_queue_size)
                client.pause()
                client.resume()
                seen.append((client.remote_address, client.remote_port is not None))

            client.on("close", on_close)
            await _run(client)
            server.close()
    assert seen == [None, 0, (LOOPBACK, True)]
    assert rec.events == ["connect", "end", ("close", False)]
