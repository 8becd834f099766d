"""Servers: connection limits, close ordering, listen failures and repeated
listen() calls, address fields on both ends (Node's
test-net-server-*.js, test-net-eaddrinuse.js, test-net-*-address*.js)."""

from __future__ import annotations

import errno
from typing import Any

import pytest
import trio

import trio_netstream as net

from ._support import IPV6, LOOPBACK, code_of, port_of


async def _run(stream: net.Stream) -> None:
    async with stream:
        pass


def _setter(event: trio.Event) -> Any:
    """A ``'data'`` listener that sets *event*."""
    return lambda chunk: event.set()


async def test_max_connections_closes_the_extra_ones(record: Any) -> None:
    """From test-net-server-max-connections.js (6 clients and a limit of 3
    instead of 20 and 10).

    Clients connect one after the other. The first ``max_connections`` get a
    ``'connection'`` and the server's ``"hello"``; the others are closed at
    once, without a ``'connection'`` event (docs/behaviour.md): they see
    ``'end'`` and no data. Once the accepted ones are ended, everything
    closes cleanly; the server had exactly ``max_connections`` open.
    """
    n, limit = 6, 3
    accepted: list[net.Stream] = []

    def handler(conn: net.Stream) -> None:
        conn.write("hello")
        accepted.append(conn)

    recs = []
    open_at_peak: list[int] = []
    with trio.fail_after(10):
        async with net.create_server(handler, max_connections=limit) as server:
            await server.listen(0, LOOPBACK)
            async with trio.open_nursery() as nursery:
                for _ in range(n):
                    client = net.create_connection(port_of(server))
                    settled = trio.Event()
                    client.on("data", _setter(settled))
                    client.on("end", client.end)
                    client.on("end", settled.set)
                    recs.append(record(client))
                    nursery.start_soon(_run, client)
                    await settled.wait()
                open_at_peak.append(server.connections)
                for conn in accepted:
                    conn.end()
            server.close()
    assert open_at_peak == [limit]
    assert len(accepted) == limit
    for rec in recs[:limit]:
        assert rec.events == ["connect", "data", "end", ("close", False)]
        assert rec.data == b"hello"
    for rec in recs[limit:]:
        assert rec.events == ["connect", "end", ("close", False)]


async def test_server_close_comes_after_its_connections_close() -> None:
    """From test-net-server-close.js.

    On the second connection the server is closed and both connections
    destroyed: one ``'close'`` per connection and one for the server, and
    ``connections`` is 0 at the end. Node leaves the order open; our SPEC
    fixes it: the server's ``'close'`` comes once every connection closed.
    """
    events: list[str] = []
    conns: list[net.Stream] = []
    with trio.fail_after(10):
        async with net.create_server() as server:

            def handler(conn: net.Stream) -> None:
                conn.on("close", lambda had_error: events.append(f"client {had_error}"))
                conns.append(conn)
                if len(conns) == 2:
                    server.close()
                    for each in conns:
                        each.destroy()

            server.on("connection", handler)
            server.on("close", lambda: events.append("server"))
            await server.listen(0)
            clients = [net.create_connection(port_of(server)) for _ in range(2)]
            async with trio.open_nursery() as nursery:
                for client in clients:
                    client.on("end", client.end)
                    nursery.start_soon(_run, client)
    assert events == ["client False", "client False", "server"]
    assert server.connections == 0


async def test_listen_on_a_used_port_raises_eaddrinuse(record: Any) -> None:
    """From test-net-eaddrinuse.js.

    Deliberate difference (docs/behaviour.md): Node emits ``'error'``
    (``EADDRINUSE``) from ``listen()``; ours raises the ``OSError`` (with
    ``errno`` and ``code``) from ``await listen()`` and emits no ``'error'``
    and no ``'listening'``; the server still closes with one ``'close'``.
    """
    with trio.fail_after(10):
        async with net.create_server() as first:
            await first.listen(0)
            async with net.create_server() as second:
                rec = record(second, events=("listening", "error", "close"))
                with pytest.raises(OSError) as info:
                    await second.listen(port_of(first))
                second.close()
            first.close()
    assert info.value.errno == errno.EADDRINUSE
    assert code_of(info.value) == "EADDRINUSE"
    assert rec.events == ["close"]


async def test_listen_again_after_failure_but_not_twice(record: Any) -> None:
    """From test-net-server-call-listen-multiple-times.js (first and second
    parts).

    After a failed ``listen()`` (``EADDRINUSE``) the same server can listen
    at once on another port. A second ``listen()`` while listening raises
    (Node: ``ERR_SERVER_ALREADY_LISTEN``; ours: ``StreamStateError``).
    """
    with trio.fail_after(10):
        async with net.create_server() as dummy:
            await dummy.listen(0)
            async with net.create_server() as server:
                rec = record(server, events=("listening", "error", "close"))
                with pytest.raises(OSError):
                    await server.listen(port_of(dummy))
                await server.listen(0)
                assert port_of(server) != port_of(dummy)
                with pytest.raises(net.StreamStateError):
                    await server.listen(0)
                server.close()
            dummy.close()
    assert rec.events == ["listening", "close"]


async def test_remote_address_and_port_on_both_ends() -> None:
    """From test-net-remote-address-port.js.

    A dual-stack server (``listen(0)`` with no host, as Node) sees each
    client's address (``127.0.0.1``, or ``::ffff:127.0.0.1`` with family
    ``"IPv6"``), a real remote port that is not its own; each client sees
    the server's port as ``remote_port``. The fields keep their values
    after ``'close'`` (docs/behaviour.md).
    """
    addresses = {LOOPBACK, "::ffff:127.0.0.1", "::1"}
    families = {"IPv4", "IPv6"}
    checks: list[Any] = []
    with trio.fail_after(10):
        async with net.create_server() as server:

            def handler(conn: net.Stream) -> None:
                checks.append(
                    (
                        "server",
                        conn.remote_address in addresses,
                        conn.remote_family in families,
                        bool(conn.remote_port) and conn.remote_port != port_of(server),
                    )
                )
                conn.on("data", lambda chunk: None)
                conn.on("end", conn.end)

                def on_close(had_error: bool) -> None:
                    checks.append(
                        (
                            "server close",
                            conn.remote_address in addresses,
                            conn.remote_family in families,
                        )
                    )

                conn.on("close", on_close)

            server.on("connection", handler)
            await server.listen(0)
            port = port_of(server)
            clients = [net.create_connection(port, "localhost"), net.create_connection(port)]
            for client in clients:

                def on_connect(client: net.Stream = client) -> None:
                    checks.append(
                        (
                            "client",
                            client.remote_address in addresses,
                            client.remote_family in families,
                            client.remote_port == port,
                        )
                    )
                    client.end()

                def on_close(had_error: bool, client: net.Stream = client) -> None:
                    checks.append(
                        (
                            "client close",
                            client.remote_address in addresses,
                            client.remote_family in families,
                            client.remote_port == port,
                        )
                    )

                client.on("connect", on_connect)
                client.on("close", on_close)
            async with trio.open_nursery() as nursery:
                for client in clients:
                    nursery.start_soon(_run, client)
            server.close()
    assert sorted(checks) == sorted(
        [("server", True, True, True)] * 2
        + [("server close", True, True)] * 2
        + [("client", True, True, True)] * 2
        + [("client close", True, True, True)] * 2
    )


async def test_local_address_and_port_of_accepted_stream() -> None:
    """From test-net-local-address-port.js.

    A server-side stream's ``local_address`` / ``local_port`` are the
    address and port the server listens on.
    """
    seen: list[Any] = []
    with trio.fail_after(10):
        async with net.create_server() as server:

            def handler(conn: net.Stream) -> None:
                seen.append((conn.local_address, conn.local_port))
                conn.on("data", lambda chunk: None)
                conn.on("end", conn.end)

            server.on("connection", handler)
            await server.listen(0, LOOPBACK)
            port = port_of(server)
            client = net.create_connection(port, LOOPBACK)
            client.on("connect", client.end)
            await _run(client)
            server.close()
    assert seen == [(LOOPBACK, port)]


async def test_client_local_port_matches_server_remote_port() -> None:
    """From test-net-socket-local-address.js.

    One stream connects twice in a row (reconnecting from its ``'close'``
    listener); each time its ``local_port`` equals the ``remote_port`` the
    server sees.
    """
    server_ports: list[int | None] = []
    client_ports: list[int | None] = []
    with trio.fail_after(10):
        async with net.create_server() as server:

            def handler(conn: net.Stream) -> None:
                server_ports.append(conn.remote_port)
                conn.end()

            server.on("connection", handler)
            await server.listen(0, LOOPBACK)
            port = port_of(server)
            client = net.Stream()
            client.on("connect", lambda: client_ports.append(client.local_port))
            client.on("end", client.end)

            def on_close(had_error: bool) -> None:
                if len(client_ports) < 2:
                    client.connect(port, LOOPBACK)

            client.on("close", on_close)
            client.connect(port, LOOPBACK)
            await _run(client)
            server.close()
    assert len(client_ports) == 2
    assert client_ports == server_ports


@pytest.mark.skipif(not IPV6, reason="IPv6 loopback (::1) is unavailable")
async def test_remote_family_ipv6(record: Any) -> None:
    """From test-net-remote-address-port.js (the IPv6 candidates).

    Over ``::1`` both ends report ``remote_family == "IPv6"`` and the
    address ``::1``.
    """
    seen: list[Any] = []
    with trio.fail_after(10):
        async with net.create_server() as server:

            def handler(conn: net.Stream) -> None:
                seen.append(("server", conn.remote_address, conn.remote_family))
                conn.end()

            server.on("connection", handler)
            await server.listen(0, "::1")
            client = net.create_connection(port_of(server), "::1")
            client.on(
                "connect",
                lambda: seen.append(("client", client.remote_address, client.remote_family)),
            )
            client.on("end", client.end)
            await _run(client)
            server.close()
    assert sorted(seen) == [("client", "::1", "IPv6"), ("server", "::1", "IPv6")]
