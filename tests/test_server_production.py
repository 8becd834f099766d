"""Servers in production, over real loopback sockets: ``'drop'`` for the
connections ``max_connections`` turns away, ``server.streams``,
``await server.shutdown(grace)`` and ``listen(..., ipv6_only=)``.

Clients are raw Trio sockets (so each test knows both ends of every
connection and decides when it ends); every test runs under
``trio.fail_after``. Shutdown tests use real time with short graces and
assert the order of events rather than durations (bounds are loose).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from netstream_testing import IPV6, IPV6_REASON, Tally, port_of, read_to_eof
from trio.testing import wait_all_tasks_blocked

import trio_netstream as net

LIMIT = 20  # seconds; a hang fails the test
needs_ipv6 = pytest.mark.skipif(not IPV6, reason=IPV6_REASON)


def echo(stream: net.Stream) -> None:
    stream.on("data", stream.write)
    stream.on("end", stream.end)


class Log:
    """One ordered log of the server's and its streams' events: stream
    events as ``(n, event, *args)`` (``n``: accept order from 1, ``'data'``
    left out), server events as ``("server", event)``."""

    def __init__(self, server: net.Server) -> None:
        self.entries: list[tuple[Any, ...]] = []
        self.accepted: list[net.Stream] = []
        self.arrived = Tally()
        self.closed = Tally()
        server.on("connection", self._connection)
        server.on("close", lambda: self.entries.append(("server", "close")))

    def _connection(self, stream: net.Stream) -> None:
        self.accepted.append(stream)
        n = len(self.accepted)
        for event in ("end", "error", "close"):
            stream.on(event, self._listener(n, event))
        self.arrived.add()

    def _listener(self, n: int, event: str) -> Callable[..., None]:
        def listener(*args: Any) -> None:
            self.entries.append((n, event, *args))
            if event == "close":
                self.closed.add()

        return listener

    def of(self, n: int) -> list[tuple[Any, ...]]:
        return [entry[1:] for entry in self.entries if entry[0] == n]


@asynccontextmanager
async def clients() -> AsyncIterator[list[trio.SocketStream]]:
    """Raw client sockets opened by the test, all closed on the way out."""
    opened: list[trio.SocketStream] = []
    try:
        yield opened
    finally:
        for client in opened:
            await client.aclose()


async def connect(port: int, opened: list[trio.SocketStream], host: str = "127.0.0.1") -> Any:
    client = await trio.open_tcp_stream(host, port)
    opened.append(client)
    return client


async def shutdown_started(server: net.Server) -> None:
    """Once a ``shutdown()`` task just started has run up to its wait (it
    stops accepting before its first checkpoint)."""
    await wait_all_tasks_blocked()
    assert not server.listening


async def eof_or_reset(client: trio.SocketStream) -> bytes:
    try:
        return await read_to_eof(client)
    except trio.BrokenResourceError:  # reset: also an end
        return b""


# -- 'drop' ------------------------------------------------------------------------------


async def test_drop_names_both_ends_of_the_connection_over_max_connections() -> None:
    with trio.fail_after(LIMIT):
        drops: list[dict[str, Any]] = []
        dropped = Tally()

        def on_drop(info: dict[str, Any]) -> None:
            drops.append(info)
            dropped.add()

        server = net.create_server(echo, max_connections=2)
        log = Log(server)
        server.on("drop", on_drop)
        async with server, clients() as opened:
            await server.listen(0, "127.0.0.1")
            port = port_of(server)
            for n in (1, 2):
                await connect(port, opened)
                await log.arrived.wait_for(n)
            third = await connect(port, opened)
            await dropped.wait_for(1)
            assert await eof_or_reset(third) == b""  # closed at once
            local, remote = third.socket.getpeername(), third.socket.getsockname()
            assert drops == [
                {
                    "local_address": local[0],
                    "local_port": local[1],
                    "local_family": "IPv4",
                    "remote_address": remote[0],
                    "remote_port": remote[1],
                    "remote_family": "IPv4",
                }
            ]
            assert log.arrived.count == 2  # no 'connection' for it
            assert server.connections == 2
            assert server.streams == tuple(log.accepted)
            # The drop took no slot: once one held connection is gone, the
            # next client is accepted.
            await opened[0].aclose()
            await log.closed.wait_for(1)
            assert server.connections == 1
            await connect(port, opened)
            await log.arrived.wait_for(3)
            assert server.connections == 2
            assert len(drops) == 1
            server.close()
            for client in opened[1:]:
                await client.aclose()
        assert server.connections == 0


async def test_a_connection_reading_its_proxy_header_counts_towards_the_limit() -> None:
    # A connection whose PROXY header is being read holds a socket: it counts
    # towards max_connections, and the one over the limit is dropped before
    # its header is read, so 'drop' names its real peer (the balancer).
    with trio.fail_after(LIMIT):
        drops: list[dict[str, Any]] = []
        dropped = Tally()

        def on_drop(info: dict[str, Any]) -> None:
            drops.append(info)
            dropped.add()

        server = net.create_server(echo, max_connections=1, proxy_protocol=True)
        log = Log(server)
        server.on("drop", on_drop)
        async with server, clients() as opened:
            await server.listen(0, "127.0.0.1")
            port = port_of(server)
            first = await connect(port, opened)  # no header yet
            second = await connect(port, opened)
            await dropped.wait_for(1)
            assert await eof_or_reset(second) == b""
            (info,) = drops
            remote = second.socket.getsockname()
            assert (info["remote_address"], info["remote_port"]) == remote[:2]
            assert info["remote_family"] == "IPv4"
            assert (info["local_address"], info["local_port"]) == ("127.0.0.1", port)
            assert log.arrived.count == 0
            await first.send_all(b"PROXY TCP4 192.0.2.1 192.0.2.9 1111 80\r\n")
            await log.arrived.wait_for(1)
            (stream,) = server.streams
            assert (stream.remote_address, stream.remote_port) == ("192.0.2.1", 1111)
            server.close()
            await first.send_eof()
        assert len(drops) == 1


# -- server.streams ----------------------------------------------------------------------


async def test_streams_is_a_snapshot_in_accept_order() -> None:
    with trio.fail_after(LIMIT):
        server = net.create_server(echo)
        log = Log(server)
        async with server, clients() as opened:
            await server.listen(0, "127.0.0.1")
            assert not server.streams
            port = port_of(server)
            for n in (1, 2, 3):
                await connect(port, opened)
                await log.arrived.wait_for(n)
                assert server.connections == len(server.streams) == n
            snapshot = server.streams
            assert isinstance(snapshot, tuple)
            assert snapshot == tuple(log.accepted)
            # The server side of each is the client's other end, in order.
            ends = [(stream.remote_address, stream.remote_port) for stream in snapshot]
            assert ends == [client.socket.getsockname()[:2] for client in opened]

            await opened[1].send_eof()  # the second one ends
            await log.closed.wait_for(1)
            assert list(server.streams) == [log.accepted[0], log.accepted[2]]
            assert server.connections == 2
            assert snapshot == tuple(log.accepted)  # unchanged
            await connect(port, opened)
            await log.arrived.wait_for(4)
            assert list(server.streams) == [log.accepted[0], log.accepted[2], log.accepted[3]]
            assert snapshot == tuple(log.accepted[:3])
            server.close()
            for client in opened:
                await client.send_eof()
        assert not server.streams
        assert server.connections == 0


# -- shutdown ----------------------------------------------------------------------------


async def test_shutdown_leaves_connections_that_finish_within_the_grace_alone() -> None:
    with trio.fail_after(LIMIT):
        server = net.create_server(echo)
        log = Log(server)
        async with server, clients() as opened:
            await server.listen(0, "127.0.0.1")
            port = port_of(server)
            for n in (1, 2):
                await connect(port, opened)
                await log.arrived.wait_for(n)
            results: list[int] = []

            async def shut_down() -> None:
                results.append(await server.shutdown(5000))
                log.entries.append(("shutdown", "returned"))

            payload = b"x" * 200_000
            answers: list[bytes] = []

            async def transfer(client: trio.SocketStream) -> None:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_send_then_end, client, payload)
                    answers.append(await read_to_eof(client))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(shut_down)
                await shutdown_started(server)
                for client in opened:
                    nursery.start_soon(transfer, client)
        assert results == [0]
        assert answers == [payload, payload]  # every byte echoed
        for n in (1, 2):
            assert log.of(n) == [("end",), ("close", False)]
        closes = [entry for entry in log.entries if entry[1] == "close"]
        assert closes[-1] == ("server", "close")  # once, after the last connection's
        assert len(closes) == 3
        assert log.entries[-1] == ("shutdown", "returned")


async def _send_then_end(client: trio.SocketStream, payload: bytes) -> None:
    for start in range(0, len(payload), 16384):
        await client.send_all(payload[start : start + 16384])
        await trio.sleep(0.001)
    await client.send_eof()


async def test_shutdown_destroys_a_stuck_connection_at_the_deadline() -> None:
    with trio.fail_after(LIMIT):
        server = net.create_server(echo)
        log = Log(server)
        async with server, clients() as opened:
            await server.listen(0, "127.0.0.1")
            port = port_of(server)
            polite = await connect(port, opened)
            await log.arrived.wait_for(1)
            stuck = await connect(port, opened)  # never ends
            await log.arrived.wait_for(2)
            await stuck.send_all(b"still here")
            results: list[int] = []

            async def shut_down() -> None:
                results.append(await server.shutdown(1000))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(shut_down)
                await shutdown_started(server)
                await polite.send_eof()
                assert await read_to_eof(polite) == b""
                await log.closed.wait_for(1)
                assert results == []  # the stuck one holds the shutdown until the deadline
                assert server.streams == (log.accepted[1],)
            # The stuck client sees its echo, then the end of the connection.
            assert await eof_or_reset(stuck) in (b"still here", b"")
            assert not server.streams
        assert results == [1]
        assert log.of(1) == [("end",), ("close", False)]
        assert log.of(2) == [("close", False)]  # destroyed: one 'close', no 'end'
        assert log.accepted[1].ready_state == "closed"
        assert log.entries[-1] == ("server", "close")
        assert [entry for entry in log.entries if entry[0] == "server"] == [("server", "close")]


async def test_no_connection_is_accepted_once_shutdown_started() -> None:
    with trio.fail_after(LIMIT):
        server = net.create_server(echo)
        log = Log(server)
        async with server, clients() as opened:
            await server.listen(0, "127.0.0.1")
            port = port_of(server)
            await connect(port, opened)  # holds the shutdown open
            await log.arrived.wait_for(1)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.shutdown, 2000)
                await shutdown_started(server)
                with pytest.raises(OSError):
                    await trio.open_tcp_stream("127.0.0.1", port)
                assert log.arrived.count == 1
                await opened[0].send_eof()
        assert log.arrived.count == 1
        assert log.of(1) == [("end",), ("close", False)]


@pytest.mark.parametrize(
    ("first", "second"), [(60_000, 200), (200, 60_000)], ids=["shorter-later", "longer-later"]
)
async def test_concurrent_shutdowns_end_together_at_the_shorter_deadline(
    first: int, second: int
) -> None:
    with trio.fail_after(LIMIT):
        server = net.create_server(echo)
        log = Log(server)
        async with server, clients() as opened:
            await server.listen(0, "127.0.0.1")
            await connect(port_of(server), opened)
            await log.arrived.wait_for(1)
            results: dict[str, int] = {}

            async def shut_down(name: str, grace: float) -> None:
                results[name] = await server.shutdown(grace)
                log.entries.append(("shutdown", name))

            # Far below the 60 s grace: the shorter deadline ends both calls
            # (a later, longer grace does not extend it).
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(shut_down, "first", first)
                    await shutdown_started(server)
                    assert results == {}
                    nursery.start_soon(shut_down, "second", second)
        assert results == {"first": 1, "second": 1}
        assert log.of(1) == [("close", False)]
        assert log.entries[:2] == [(1, "close", False), ("server", "close")]
        assert sorted(log.entries[2:]) == [("shutdown", "first"), ("shutdown", "second")]
        assert log.accepted[0].ready_state == "closed"


async def test_shutdown_again_after_it_finished_returns_at_once() -> None:
    with trio.fail_after(LIMIT):
        server = net.create_server(echo)
        log = Log(server)
        async with server, clients() as opened:
            await server.listen(0, "127.0.0.1")
            await connect(port_of(server), opened)
            await log.arrived.wait_for(1)
            assert await server.shutdown(0) == 1
            assert await server.shutdown(1000) == 0
            assert await server.shutdown() == 0
        assert [entry for entry in log.entries if entry[0] == "server"] == [("server", "close")]


async def test_shutdown_after_close() -> None:
    with trio.fail_after(LIMIT):
        server = net.create_server(echo)
        log = Log(server)
        async with server, clients() as opened:
            await server.listen(0, "127.0.0.1")
            await connect(port_of(server), opened)
            await log.arrived.wait_for(1)
            server.close()
            assert not server.listening
            await trio.sleep(0.05)
            assert log.entries == []  # close() leaves the connection alone
            assert await server.shutdown(200) == 1
            assert log.entries[-1] == ("server", "close")
        assert [entry for entry in log.entries if entry[0] == "server"] == [("server", "close")]
        assert log.of(1) == [("close", False)]


async def test_shutdown_without_connections_closes_the_server() -> None:
    with trio.fail_after(LIMIT):
        closed = Tally()
        server = net.create_server(echo)
        server.on("close", closed.add)
        async with server:
            await server.listen(0, "127.0.0.1")
            port = port_of(server)
            assert await server.shutdown() == 0
            assert closed.count == 1
            assert not server.listening
            assert server.address() is None
            with pytest.raises(OSError):
                await trio.open_tcp_stream("127.0.0.1", port)
        assert closed.count == 1


async def test_shutdown_with_grace_0_destroys_every_connection_at_once() -> None:
    with trio.fail_after(LIMIT):
        server = net.create_server(echo)
        log = Log(server)
        async with server, clients() as opened:
            await server.listen(0, "127.0.0.1")
            port = port_of(server)
            for n in (1, 2, 3):
                await connect(port, opened)
                await log.arrived.wait_for(n)
            assert await server.shutdown(0) == 3
            assert not server.streams
            assert server.connections == 0
            for client in opened:
                assert await eof_or_reset(client) == b""
        for n in (1, 2, 3):
            assert log.of(n) == [("close", False)]
            assert log.accepted[n - 1].ready_state == "closed"
        assert log.entries[-1] == ("server", "close")


async def test_shutdown_with_no_grace_waits_for_every_connection() -> None:
    with trio.fail_after(LIMIT):
        server = net.create_server(echo)
        log = Log(server)
        async with server, clients() as opened:
            await server.listen(0, "127.0.0.1")
            await connect(port_of(server), opened)
            await log.arrived.wait_for(1)
            results: list[int] = []

            async def shut_down() -> None:
                results.append(await server.shutdown())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(shut_down)
                await trio.sleep(0.3)
                assert results == []
                assert server.connections == 1
                await opened[0].send_all(b"late")
                await opened[0].send_eof()
                assert await read_to_eof(opened[0]) == b"late"
        assert results == [0]
        assert log.of(1) == [("end",), ("close", False)]


@pytest.mark.parametrize(
    ("grace", "error"),
    [(-1, ValueError), ("1", TypeError), (math.nan, ValueError), (True, TypeError)],
)
async def test_bad_grace_is_refused_at_the_call(grace: Any, error: type[Exception]) -> None:
    with trio.fail_after(LIMIT):
        server = net.create_server(echo)
        async with server:
            await server.listen(0, "127.0.0.1")
            with pytest.raises(error):
                await server.shutdown(grace)
            assert server.listening  # nothing happened
            server.close()


async def test_shutdown_outside_the_block_is_a_state_error() -> None:
    with trio.fail_after(LIMIT):
        server = net.create_server(echo)
        with pytest.raises(net.StreamStateError):
            await server.shutdown()
        async with server:
            await server.listen(0, "127.0.0.1")
            server.close()
        with pytest.raises(net.StreamStateError):
            await server.shutdown(100)


# -- ipv6_only ---------------------------------------------------------------------------


async def _reaches(port: int, host: str) -> bool:
    """Whether a client connecting to *host*:*port* gets the echo back."""
    try:
        client = await trio.open_tcp_stream(host, port)
    except OSError:
        return False
    async with client:
        await client.send_all(b"ping")
        await client.send_eof()
        return await read_to_eof(client) == b"ping"


@asynccontextmanager
async def listening(*args: Any, **kwargs: Any) -> AsyncIterator[net.Server]:
    server = net.create_server(echo)
    async with server:
        await server.listen(*args, **kwargs)
        yield server
        server.close()


@needs_ipv6
async def test_ipv6_only_refuses_ipv4_clients() -> None:
    with trio.fail_after(LIMIT):
        async with listening(0, "::", ipv6_only=True) as server:
            port = port_of(server)
            assert await _reaches(port, "::1")
            assert not await _reaches(port, "127.0.0.1")


@needs_ipv6
async def test_the_ipv6_any_address_takes_ipv4_too_by_default() -> None:
    with trio.fail_after(LIMIT):
        async with listening(0, "::") as server:
            port = port_of(server)
            assert await _reaches(port, "::1")
            assert await _reaches(port, "127.0.0.1")


@needs_ipv6
async def test_no_host_means_both_ip_versions_unless_ipv6_only() -> None:
    with trio.fail_after(LIMIT):
        async with listening(0) as server:
            port = port_of(server)
            assert await _reaches(port, "::1")
            assert await _reaches(port, "127.0.0.1")
        async with listening(0, None, ipv6_only=True) as server:
            port = port_of(server)
            assert await _reaches(port, "::1")
            assert not await _reaches(port, "127.0.0.1")


@needs_ipv6
async def test_ipv6_only_in_the_options_dict() -> None:
    with trio.fail_after(LIMIT):
        async with listening({"port": 0, "host": "::", "ipv6Only": True}) as server:
            port = port_of(server)
            assert await _reaches(port, "::1")
            assert not await _reaches(port, "127.0.0.1")
        async with listening({"port": 0, "host": "::", "ipv6Only": False}) as server:
            assert await _reaches(port_of(server), "127.0.0.1")


@pytest.mark.parametrize(
    "call",
    [
        lambda server: server.listen(0, "::", ipv6_only=1),
        lambda server: server.listen(0, "::", ipv6_only="yes"),
        lambda server: server.listen({"port": 0, "host": "::", "ipv6Only": "true"}),
    ],
)
async def test_a_bad_ipv6_only_is_a_type_error(call: Callable[[net.Server], Any]) -> None:
    with trio.fail_after(LIMIT):
        server = net.create_server(echo)
        async with server:
            with pytest.raises(TypeError, match="ipv6_only"):
                await call(server)
            assert not server.listening
            server.close()
