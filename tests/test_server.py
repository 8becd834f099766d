"""Server over real sockets: listen variants, close, connection limits,
connection listeners, error isolation, options passed to accepted streams."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import stat
import struct
from collections.abc import Callable
from typing import Any

import pytest
import trio
from netstream_testing import IPV6, IPV6_REASON, Tally
from trio.testing import wait_all_tasks_blocked

import trio_netstream as net
from trio_netstream._accepting import ACCEPT_BURST


class Transport:
    """One of the three transports: where to listen and how to connect."""

    def __init__(self, kind: str, path: str) -> None:
        self.kind = kind
        self.path = path
        self.host = {"tcp4": "127.0.0.1", "tcp6": "::1"}.get(kind)
        self.family = {"tcp4": socket.AF_INET, "tcp6": socket.AF_INET6}.get(kind, socket.AF_UNIX)

    async def listen(self, server: net.Server, **kwargs: Any) -> None:
        if self.host is None:
            await server.listen(self.path, **kwargs)
        else:
            await server.listen(0, self.host, **kwargs)

    def target(self, server: net.Server) -> tuple[Any, ...]:
        """Arguments for ``create_connection`` that reach *server*."""
        address = server.address()
        if self.host is None:
            return (address,)
        assert isinstance(address, tuple)
        return (address[1], self.host)


@pytest.fixture(params=["tcp4", "tcp6", "unix"])
def transport(request: pytest.FixtureRequest, unix_path: str) -> Transport:
    if request.param == "tcp6" and not IPV6:
        pytest.skip(IPV6_REASON)
    return Transport(request.param, unix_path)


def echo(conn: net.Stream) -> None:
    conn.on("data", conn.write)
    conn.on("end", conn.end)


async def echo_once(target: tuple[Any, ...], text: str, record: Any) -> Any:
    """Connect, send *text*, end; return the client's recorder."""
    client = net.create_connection(*target)
    rec = record(client)
    client.on("connect", lambda: client.end(text))
    async with client:
        pass
    return rec


# -- listen() ----------------------------------------------------------------------


async def test_listen_tcp_emits_listening_before_returning(record: Any) -> None:
    with trio.fail_after(20):
        async with net.create_server(echo) as server:
            rec = record(server, events=("listening", "close", "error"))
            assert server.address() is None
            await server.listen(0, "127.0.0.1")
            assert rec.events == ["listening"]
            host, port = server.address()
            assert host == "127.0.0.1"
            assert isinstance(port, int) and port > 0
            client = await echo_once((port, "127.0.0.1"), "over IPv4", record)
            server.close()
        assert client.events == ["connect", "data", "end", ("close", False)]
        assert client.data == b"over IPv4"
        assert rec.events == ["listening", "close"]


async def test_listen_ipv6_loopback(record: Any) -> None:
    if not IPV6:
        pytest.skip(IPV6_REASON)
    with trio.fail_after(20):
        async with net.create_server(echo) as server:
            rec = record(server, events=("listening", "close", "error"))
            await server.listen(0, "::1")
            assert rec.events == ["listening"]
            host, port = server.address()
            assert host == "::1"
            client = await echo_once((port, "::1"), "over IPv6", record)
            server.close()
        assert client.events == ["connect", "data", "end", ("close", False)]
        assert client.data == b"over IPv6"
        assert rec.events == ["listening", "close"]


async def test_listen_unix_path_removed_after_close(unix_path: str, record: Any) -> None:
    with trio.fail_after(20):
        async with net.create_server(echo) as server:
            rec = record(server, events=("listening", "close", "error"))
            await server.listen(unix_path)
            assert rec.events == ["listening"]
            assert server.address() == unix_path
            assert stat.S_ISSOCK(os.stat(unix_path).st_mode)
            client = await echo_once((unix_path,), "over UNIX", record)
            server.close()
        assert client.events == ["connect", "data", "end", ("close", False)]
        assert client.data == b"over UNIX"
        assert rec.events == ["listening", "close"]
        assert not os.path.exists(unix_path)  # noqa: ASYNC240  # the run is over


@pytest.mark.parametrize("already_listening", [False, True])
async def test_listen_on_a_bound_stdlib_socket(already_listening: bool, record: Any) -> None:
    with trio.fail_after(20):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", 0))
            if already_listening:
                sock.listen(8)
            port = sock.getsockname()[1]
            async with net.create_server(echo) as server:
                rec = record(server, events=("listening", "close", "error"))
                await server.listen(sock=sock)
                assert rec.events == ["listening"]
                assert server.address() == ("127.0.0.1", port)
                client = await echo_once((port, "127.0.0.1"), "adopted", record)
                server.close()
        finally:
            sock.close()
        assert client.events == ["connect", "data", "end", ("close", False)]
        assert client.data == b"adopted"
        assert rec.events == ["listening", "close"]


async def _listen_backlog(port: int) -> int:
    """The accept-queue length the kernel reports for a listening port (``ss``)."""
    result = await trio.run_process(
        ["ss", "-Hltn", f"sport = :{port}"], capture_stdout=True, capture_stderr=True
    )
    [line] = result.stdout.decode().splitlines()
    return int(line.split()[2])  # Send-Q of a LISTEN socket is its backlog


async def test_backlog_reaches_the_kernel() -> None:
    if shutil.which("ss") is None:
        pytest.skip("the 'ss' tool (iproute2) is needed to read a socket's backlog")
    with trio.fail_after(20):
        async with net.create_server(echo) as server:
            await server.listen(0, "127.0.0.1", backlog=7)
            assert await _listen_backlog(server.address()[1]) == 7
            server.close()

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", 0))
            async with net.create_server(echo) as server:
                await server.listen(sock=sock, backlog=5)
                assert await _listen_backlog(server.address()[1]) == 5
                server.close()
        finally:
            sock.close()


async def test_reuse_port_lets_two_servers_share_a_port(record: Any) -> None:
    if not hasattr(socket, "SO_REUSEPORT"):
        pytest.skip("SO_REUSEPORT is not available on this platform")
    with trio.fail_after(20):
        async with net.create_server(lambda conn: conn.end("1")) as first:
            await first.listen(0, "127.0.0.1", reuse_port=True)
            port = first.address()[1]
            async with net.create_server(lambda conn: conn.end("2")) as second:
                await second.listen(port, "127.0.0.1", reuse_port=True)
                assert second.address() == first.address()
                answers = []
                # The kernel spreads connections over both listeners (by a hash
                # of the client's port): 32 connections all landing on one
                # server has odds of 2 in 2**32.
                for _ in range(32):
                    client = net.create_connection(port, "127.0.0.1")
                    rec = record(client)
                    client.on("end", client.end)
                    async with client:
                        pass
                    assert rec.events == ["connect", "data", "end", ("close", False)]
                    answers.append(rec.data)
                second.close()
            first.close()
        assert sorted(set(answers)) == [b"1", b"2"]
        assert len(answers) == 32


async def test_address_in_use_is_raised_from_listen(transport: Transport, record: Any) -> None:
    with trio.fail_after(20):
        async with net.create_server(echo) as first:
            await transport.listen(first)
            taken = first.address()
            port_or_path: Any = taken if transport.host is None else taken[1]

            # Raised from listen() itself ...
            async with net.create_server(echo) as second:
                with pytest.raises(OSError) as info:
                    if transport.host is None:
                        await second.listen(port_or_path)
                    else:
                        await second.listen(port_or_path, transport.host)
                assert info.value.errno == errno.EADDRINUSE
                assert info.value.code == "EADDRINUSE"
                assert second.address() is None
                second.close()

            # ... and, when not caught, out of the server's block, unwrapped.
            with pytest.raises(OSError) as info:
                async with net.create_server(echo) as third:
                    if transport.host is None:
                        await third.listen(port_or_path)
                    else:
                        await third.listen(port_or_path, transport.host)
            assert type(info.value) is OSError
            assert info.value.errno == errno.EADDRINUSE
            assert info.value.code == "EADDRINUSE"

            # The first server was not disturbed (nor its socket file removed).
            client = await echo_once(transport.target(first), "still here", record)
            first.close()
        assert client.events == ["connect", "data", "end", ("close", False)]
        assert client.data == b"still here"


# -- close() -------------------------------------------------------------------------


async def test_close_stops_accepting_but_open_connections_live_on(
    transport: Transport, record: Any
) -> None:
    with trio.fail_after(20):
        order: list[Any] = []
        accepted = Tally()

        def on_connection(conn: net.Stream) -> None:
            echo(conn)
            conn.on("connect", accepted.add)
            conn.on("close", lambda had_error: order.append(("connection close", had_error)))

        async with net.create_server(on_connection) as server:
            server.on("close", lambda: order.append("server close"))
            await transport.listen(server)
            target = transport.target(server)
            alive = net.create_connection(*target)
            alive_rec = record(alive)
            async with alive:
                await accepted.wait_for(1)
                server.close()
                assert server.connections == 1

                # New connections are refused now.
                refused = net.create_connection(*target)
                refused_rec = record(refused)
                async with refused:
                    pass
                err = refused_rec.events[0][1]
                assert refused_rec.events == [("error", err), ("close", True)]
                if transport.host is None:
                    # the socket file may already be gone, or be left unanswered
                    assert isinstance(err, (ConnectionRefusedError, FileNotFoundError))
                else:
                    assert isinstance(err, ConnectionRefusedError)
                    assert err.code == "ECONNREFUSED"
                order.append("new connection refused")

                # The open connection still works, both ways.
                alive.end("still alive")
            assert accepted.count == 1
        order.append("server block exited")

        assert alive_rec.events == ["connect", "data", "end", ("close", False)]
        assert alive_rec.data == b"still alive"
        assert order == [
            "new connection refused",
            ("connection close", False),
            "server close",
            "server block exited",
        ]
        assert server.connections == 0


# -- 'connection' listeners ------------------------------------------------------------


async def test_connection_listeners_run_in_order_before_connect(
    transport: Transport, record: Any
) -> None:
    with trio.fail_after(20):
        order: list[Any] = []

        def first(conn: net.Stream) -> None:
            order.append("connection listener 1")
            conn.on("connect", lambda: order.append("connect"))
            conn.on("data", lambda chunk: order.append(("data", chunk)))
            conn.on("end", lambda: order.append("end"))
            conn.on("end", conn.end)
            conn.on("close", lambda had_error: order.append(("close", had_error)))

        def second(conn: net.Stream) -> None:
            order.append("connection listener 2")

        async def third(conn: net.Stream) -> None:
            order.append("async connection listener started")
            await trio.lowlevel.checkpoint()
            # Returning does not close the connection.

        async with net.create_server(first) as server:
            server.on("connection", second)
            server.on("connection", third)
            await transport.listen(server)
            client = await echo_once(transport.target(server), "hi", record)
            server.close()

        assert order == [
            "connection listener 1",
            "connection listener 2",
            "async connection listener started",
            "connect",
            ("data", b"hi"),
            "end",
            ("close", False),
        ]
        assert client.events == ["connect", "end", ("close", False)]


async def test_async_connection_listener_iterates_over_the_stream(
    transport: Transport, record: Any
) -> None:
    with trio.fail_after(20):
        handled: list[Any] = []

        async def handler(conn: net.Stream) -> None:
            handled.append(("task", trio.lowlevel.current_task() is not outer_task))
            async for chunk in conn:
                conn.write(chunk.upper())
            handled.append(("after loop", conn.ready_state))
            conn.end()

        outer_task = trio.lowlevel.current_task()
        async with net.create_server(handler) as server:
            await transport.listen(server)
            client = net.create_connection(*transport.target(server))
            rec = record(client)

            def on_connect() -> None:
                client.write("hello ")
                client.write("world")
                client.end()

            client.on("connect", on_connect)
            async with client:
                pass
            server.close()

        assert rec.events == ["connect", "data", "end", ("close", False)]
        assert rec.data == b"HELLO WORLD"
        assert handled == [("task", True), ("after loop", "writeOnly")]


async def test_async_connection_listener_is_cancelled_with_the_server(
    transport: Transport, record: Any
) -> None:
    with trio.fail_after(20):
        handler_state: list[str] = []
        started = trio.Event()
        server_side: list[Any] = []

        async def handler(conn: net.Stream) -> None:
            server_side.append(record(conn))
            handler_state.append("started")
            started.set()
            try:
                await trio.sleep_forever()
            finally:
                handler_state.append("cancelled")

        with trio.CancelScope() as scope:
            async with net.create_server(handler) as server:
                await transport.listen(server)
                client = net.create_connection(*transport.target(server))
                client_rec = record(client)
                async with client:
                    await started.wait()
                    await wait_all_tasks_blocked()
                    scope.cancel()
                    await trio.sleep_forever()
        assert scope.cancelled_caught
        assert handler_state == ["started", "cancelled"]
        assert server_side[0].events == ["connect", ("close", False)]
        assert client_rec.events == ["connect", ("close", False)]


class Boom(Exception):
    pass


def _plain_raises(conn: net.Stream) -> None:
    raise Boom("plain connection listener")


async def _async_raises(conn: net.Stream) -> None:
    await trio.lowlevel.checkpoint()
    raise Boom("async connection listener")


def _data_listener_raises(conn: net.Stream) -> None:
    def on_data(chunk: bytes) -> None:
        raise Boom("server-side 'data' listener")

    conn.on("data", on_data)


@pytest.mark.parametrize(
    "listener",
    [_plain_raises, _async_raises, _data_listener_raises],
    ids=["plain", "async", "data"],
)
async def test_listener_exception_propagates_out_of_the_server_block(
    transport: Transport, listener: Any
) -> None:
    with trio.fail_after(20):
        with pytest.raises(Boom) as info:
            async with net.create_server(listener) as server:
                await transport.listen(server)
                client = net.create_connection(*transport.target(server))
                client.on("error", lambda err: None)  # the peer may reset us
                async with client:
                    client.write("x")
                    await trio.sleep_forever()
        assert type(info.value) is Boom


# -- error isolation -------------------------------------------------------------------


async def test_unhandled_network_error_closes_only_that_connection(
    caplog: pytest.LogCaptureFixture, record: Any
) -> None:
    with trio.fail_after(20):
        per_connection: list[Any] = []
        connected = Tally()
        closed = Tally()

        def on_connection(conn: net.Stream) -> None:
            # No 'error' listener on purpose.
            per_connection.append(record(conn, events=("connect", "data", "end", "close")))
            conn.on("connect", connected.add)
            conn.on("close", closed.add)
            echo(conn)

        async with net.create_server(on_connection) as server:
            server_rec = record(server, events=("listening", "error", "close"))
            await server.listen(0, "127.0.0.1")
            port = server.address()[1]

            # A peer that resets the connection (SO_LINGER 0, then close).
            rude = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                await rude.connect(("127.0.0.1", port))
                await connected.wait_for(1)
                rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            finally:
                rude.close()
            await closed.wait_for(1)

            # The server keeps serving.
            polite = await echo_once((port, "127.0.0.1"), "still serving", record)
            server.close()

        assert per_connection[0].events == ["connect", ("close", True)]
        assert per_connection[1].events == ["connect", "data", "end", ("close", False)]
        assert polite.events == ["connect", "data", "end", ("close", False)]
        assert polite.data == b"still serving"
        assert server_rec.events == ["listening", "close"]
        logged = [r for r in caplog.records if r.name == "trio_netstream"]
        assert len(logged) == 1
        assert logged[0].levelno >= logging.ERROR
        assert logged[0].exc_info is not None
        err = logged[0].exc_info[1]
        assert isinstance(err, ConnectionResetError)
        assert err.code == "ECONNRESET"


# -- counting and limits ----------------------------------------------------------------


async def test_connections_counts_open_connections(transport: Transport, record: Any) -> None:
    with trio.fail_after(20):
        connected = Tally()
        server_closed = Tally()

        def on_connection(conn: net.Stream) -> None:
            conn.on("connect", connected.add)
            conn.on("end", conn.end)
            conn.on("close", server_closed.add)

        counts: list[int] = []
        async with net.create_server(on_connection) as server:
            await transport.listen(server)
            target = transport.target(server)
            counts.append(server.connections)
            clients = [net.create_connection(*target) for _ in range(3)]
            async with clients[0], clients[1], clients[2]:
                await connected.wait_for(3)
                counts.append(server.connections)
                for n, client in enumerate(clients, 1):
                    client.end()
                    await server_closed.wait_for(n)
                    await wait_all_tasks_blocked()
                    counts.append(server.connections)
            server.close()
        assert counts == [0, 3, 2, 1, 0]


async def test_max_connections_closes_the_extra_ones_at_once(
    transport: Transport, record: Any
) -> None:
    with trio.fail_after(20):
        held: list[net.Stream] = []
        most = 0
        accepted = Tally()
        client_closed = Tally()

        def on_connection(conn: net.Stream) -> None:
            nonlocal most
            most = max(most, server.connections)
            held.append(conn)
            conn.on("end", conn.end)
            accepted.add()

        server = net.create_server(on_connection, max_connections=10)
        assert server.max_connections == 10
        async with server:
            await transport.listen(server)
            target = transport.target(server)
            clients = [net.create_connection(*target) for _ in range(20)]
            recs = [record(client) for client in clients]
            for client in clients:
                client.on("end", client.end)
                client.on("close", client_closed.add)

            async def run(client: net.Stream) -> None:
                async with client:
                    pass

            async with trio.open_nursery() as nursery:
                for client in clients:
                    nursery.start_soon(run, client)
                await accepted.wait_for(10)
                await client_closed.wait_for(10)
                await wait_all_tasks_blocked()

                # Exactly ten held open at the same time; the ten others were
                # closed without the server's 'connection'.
                assert accepted.count == 10
                assert server.connections == 10
                assert [conn.ready_state for conn in held] == ["open"] * 10
                still_open = [rec for rec in recs if rec.events == ["connect"]]
                turned_away = [
                    rec for rec in recs if rec.events == ["connect", "end", ("close", False)]
                ]
                assert len(still_open) == 10
                assert len(turned_away) == 10

                # Closing one held connection makes room for one more.
                held[0].end()
                await client_closed.wait_for(11)
                await wait_all_tasks_blocked()
                assert server.connections == 9
                late = net.create_connection(*target)
                late_rec = record(late)
                late.on("end", late.end)
                nursery.start_soon(run, late)
                await accepted.wait_for(11)
                assert server.connections == 10

                server.close()
                for conn in held[1:]:
                    conn.end()
            assert late_rec.events == ["connect", "end", ("close", False)]
        assert most == 10
        assert server.connections == 0
        assert all(rec.events == ["connect", "end", ("close", False)] for rec in recs)


# -- options given to create_server ------------------------------------------------------


async def test_server_options_apply_to_accepted_streams(record: Any) -> None:
    with trio.fail_after(20):
        seen: dict[str, Any] = {}
        server_recs: list[Any] = []
        drains = Tally()

        def on_connection(conn: net.Stream) -> None:
            sock = conn.socket
            assert sock is not None
            seen["no_delay"] = bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            seen["keep_alive"] = bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))
            seen["high_water_mark"] = conn.high_water_mark
            seen["allow_half_open"] = conn.allow_half_open
            seen["write"] = conn.write(b"xy")  # 2 bytes reach a high-water mark of 1
            conn.on("drain", drains.add)
            # The stream never calls end() itself: allow_half_open=False must.
            server_recs.append(record(conn, events=("connect", "data", "end", "error", "close")))

        options = dict(allow_half_open=False, no_delay=True, keep_alive=True, high_water_mark=1)
        async with net.create_server(on_connection, **options) as server:
            await server.listen(0, "127.0.0.1")
            client = net.create_connection(server.address()[1], "127.0.0.1")
            client_rec = record(client)
            client.on("connect", lambda: client.end("bye"))
            async with client:
                pass
            server.close()

        assert seen == {
            "no_delay": True,
            "keep_alive": True,
            "high_water_mark": 1,
            "allow_half_open": False,
            "write": False,
        }
        assert drains.count == 1
        assert server_recs[0].events == ["connect", "data", "end", ("close", False)]
        assert server_recs[0].data == b"bye"
        assert client_rec.events == ["connect", "data", "end", ("close", False)]
        assert client_rec.data == b"xy"


async def test_default_options_of_accepted_streams(record: Any) -> None:
    with trio.fail_after(20):
        seen: dict[str, Any] = {}

        def on_connection(conn: net.Stream) -> None:
            sock = conn.socket
            assert sock is not None
            seen["no_delay"] = bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            seen["keep_alive"] = bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))
            seen["high_water_mark"] = conn.high_water_mark
            seen["allow_half_open"] = conn.allow_half_open
            echo(conn)

        async with net.create_server(on_connection) as server:
            await server.listen(0, "127.0.0.1")
            await echo_once((server.address()[1], "127.0.0.1"), "x", record)
            server.close()

        assert seen == {
            "no_delay": False,
            "keep_alive": False,
            "high_water_mark": 16 * 1024,
            "allow_half_open": True,
        }


# -- Node names --------------------------------------------------------------------------


async def test_node_aliases(record: Any) -> None:
    assert net.createServer is net.create_server
    assert net.createConnection is net.create_connection
    with trio.fail_after(20):
        server = net.createServer(echo, max_connections=3)
        assert server.maxConnections == server.max_connections == 3
        async with server:
            await server.listen(0, "127.0.0.1")
            client = net.createConnection(server.address()[1], "127.0.0.1")
            rec = record(client)
            client.on("connect", lambda: client.end("node names"))
            async with client:
                pass
            server.close()
        assert rec.events == ["connect", "data", "end", ("close", False)]
        assert rec.data == b"node names"


async def test_a_closed_server_can_listen_again() -> None:
    """As Node: after 'close', listen() works again, and a second 'close' follows."""
    events: list[str] = []
    with trio.fail_after(10):
        async with net.create_server(lambda s: s.on("data", s.write).on("end", s.end)) as server:
            server.on("listening", lambda: events.append("listening"))
            server.on("close", lambda: events.append("close"))
            await server.listen(0, "127.0.0.1")
            server.close()
            await server.wait_closed()
            server.close()  # closed already: nothing more
            await server.listen(0, "127.0.0.1")
            address = server.address()
            assert isinstance(address, tuple)
            async with net.create_connection(address[1]) as client:
                client.on("data", lambda chunk: client.end())
                client.write(b"again")
            server.close()
    assert events == ["listening", "close", "listening", "close"]


async def test_a_backlog_of_connections_does_not_starve_other_tasks() -> None:
    """Connections already waiting in the backlog are accepted in bursts:
    other tasks run between them, and every one is accepted."""
    waiting = 3 * ACCEPT_BURST
    accepted: list[net.Stream] = []
    seen: list[int] = []  # what another task saw each time it ran

    def on_connection(stream: net.Stream) -> None:
        accepted.append(stream)
        stream.resume()  # reads: it sees its client's end, and ends too
        stream.on("end", stream.end)

    async with net.create_server(on_connection) as server:
        await server.listen(0, "127.0.0.1", backlog=waiting)
        port = server.address()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(waiting)]
        try:
            with trio.fail_after(10):
                while len(accepted) < waiting:
                    await trio.lowlevel.checkpoint()
                    seen.append(len(accepted))
        finally:
            for client in clients:
                client.close()
        server.close()
    assert len(accepted) == waiting
    steps = [after - before for before, after in zip([0, *seen[:-1]], seen, strict=True)]
    # Each scheduler batch runs each task once, in either order: between two
    # looks of ours, the accept loop ran at most twice.
    assert max(steps) <= 2 * ACCEPT_BURST
    assert any(0 < count < waiting for count in seen)


async def _serve_a_backlog(on_connection: Callable[[net.Stream], None]) -> None:
    """A server with 10 connections waiting in its backlog as it starts
    accepting; it serves until its block ends (the clients close then)."""
    clients: list[socket.socket] = []
    try:
        async with net.create_server(on_connection) as server:
            await server.listen(0, "127.0.0.1", backlog=64)
            port = server.address()[1]
            clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
            await trio.sleep_forever()
    finally:
        for client in clients:
            client.close()


async def test_no_connection_is_accepted_once_a_connection_listener_failed() -> None:
    """A 'connection' listener that raises ends the server's block: the
    accept loop takes none of the connections waiting in the backlog."""
    calls: list[net.Stream] = []

    def on_connection(stream: net.Stream) -> None:
        calls.append(stream)
        raise KeyError("listener")

    with trio.fail_after(10), pytest.raises(KeyError):
        await _serve_a_backlog(on_connection)
    assert len(calls) == 1


async def test_no_connection_is_accepted_once_a_listener_cancelled_the_server() -> None:
    calls: list[net.Stream] = []
    with trio.fail_after(10), trio.CancelScope() as outer:

        def on_connection(stream: net.Stream) -> None:
            calls.append(stream)
            outer.cancel()

        await _serve_a_backlog(on_connection)
    assert len(calls) == 1
