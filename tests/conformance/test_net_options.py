"""Socket options: Nagle (``no_delay``) and TCP keep-alive, set by option,
by method before connecting, on a live stream, and for accepted streams
(Node's test-net-socket-setnodelay.js, test-net-connect-nodelay.js,
test-net-persistent-nodelay.js, test-net-keepalive.js,
test-net-connect-keepalive.js, test-net-persistent-keepalive.js,
test-net-server-keepalive.js).

Node checks which calls reach its socket handle; we read the options back
from the real socket with ``getsockopt``."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import trio
from trio.testing import wait_all_tasks_blocked

import trio_netstream as net

from ._support import LOOPBACK, port_of, sockopt

HAS_KEEPIDLE = hasattr(socket, "TCP_KEEPIDLE")


def nodelay(stream: net.Stream) -> bool:
    return bool(sockopt(stream, socket.IPPROTO_TCP, socket.TCP_NODELAY))


def keepalive(stream: net.Stream) -> bool:
    return bool(sockopt(stream, socket.SOL_SOCKET, socket.SO_KEEPALIVE))


def keepidle(stream: net.Stream) -> int | None:
    if not HAS_KEEPIDLE:  # pragma: no cover - Linux has it
        return None
    return int(sockopt(stream, socket.IPPROTO_TCP, socket.TCP_KEEPIDLE))


async def _run(stream: net.Stream) -> None:
    async with stream:
        pass


async def _one_connection(client: net.Stream, look: Any) -> list[Any]:
    """Connect *client* to a server that ends at once; call *look(client)* at
    ``'connect'``; return what it returned, with the client's events."""
    seen: list[Any] = []
    events: list[Any] = []
    with trio.fail_after(10):
        async with net.create_server(lambda conn: conn.end()) as server:
            await server.listen(0, LOOPBACK)
            client.on("connect", lambda: seen.append(look(client)))
            client.on("end", client.end)
            client.on("close", lambda had_error: events.append(("close", had_error)))
            if client.ready_state == "closed":
                client.connect(port_of(server), LOOPBACK)
            await _run(client)
            server.close()
    return [seen, events]


async def test_set_no_delay_defaults_to_true_and_takes_false() -> None:
    """From test-net-socket-setnodelay.js.

    ``set_no_delay()`` with no argument disables Nagle (``TCP_NODELAY`` on);
    ``set_no_delay(False)`` enables it again; calling it on a stream without
    a socket does not raise. (Node also coerces truthy / falsy values; ours
    takes a ``bool``.)
    """
    net.Stream().set_no_delay(True)  # no socket yet: applied on connect

    def look(client: net.Stream) -> list[bool]:
        states = [nodelay(client)]
        client.set_no_delay()
        states.append(nodelay(client))
        client.set_no_delay(False)
        states.append(nodelay(client))
        client.set_no_delay(True)
        states.append(nodelay(client))
        return states

    seen, events = await _one_connection(net.Stream(), look)
    assert seen == [[False, True, False, True]]
    assert events == [("close", False)]


@pytest.mark.parametrize("value", [True, False])
async def test_no_delay_option_on_connect(value: bool) -> None:
    """From test-net-connect-nodelay.js.

    ``create_connection(port, no_delay=True)`` connects with Nagle off;
    ``no_delay=False`` (our default, as Node's) leaves it on.
    """
    client = net.Stream(no_delay=value)
    seen, events = await _one_connection(client, nodelay)
    assert seen == [value]
    assert events == [("close", False)]


async def test_set_no_delay_before_connect_persists() -> None:
    """From test-net-persistent-nodelay.js.

    ``set_no_delay()`` on a stream that has no socket yet is applied when
    it connects.
    """
    client = net.Stream()
    client.set_no_delay()
    seen, events = await _one_connection(client, nodelay)
    assert seen == [True]
    assert events == [("close", False)]


async def test_keep_alive_keeps_both_ends_open() -> None:
    """From test-net-keepalive.js.

    The server side sets ``set_timeout(0)`` and ``set_keep_alive(True, ms)``
    on its accepted stream: keep-alive is on at once, and a while later both
    ends are still ``"open"``; then both end cleanly. (Node's delay is 50 ms;
    keep-alive idle times are whole seconds in the kernel, so we use 2000 ms
    and read back 2 s.)
    """
    seen: list[Any] = []
    accepted: list[net.Stream] = []
    got_connection = trio.Event()
    with trio.fail_after(10):
        async with net.create_server() as server:

            def handler(conn: net.Stream) -> None:
                conn.set_timeout(0)
                conn.set_keep_alive(True, 2000)
                seen.append((keepalive(conn), keepidle(conn)))
                conn.on("end", conn.end)
                accepted.append(conn)
                got_connection.set()

            server.on("connection", handler)
            await server.listen(0, LOOPBACK)
            client = net.create_connection(port_of(server))
            client.set_timeout(0)
            connected = trio.Event()
            client.on("connect", connected.set)
            async with client:
                await connected.wait()
                await got_connection.wait()
                await wait_all_tasks_blocked()
                seen.append((accepted[0].ready_state, client.ready_state))
                accepted[0].end()
                client.end()
            server.close()
    expected_idle = 2 if HAS_KEEPIDLE else None
    assert seen == [(True, expected_idle), ("open", "open")]


@pytest.mark.parametrize(("enable", "delay"), [(True, 2000), (True, 0), (False, 0)])
async def test_keep_alive_options_on_connect(enable: bool, delay: int) -> None:
    """From test-net-connect-keepalive.js.

    ``keep_alive=True`` with ``keep_alive_initial_delay`` (ms) turns
    keep-alive on at connect, with the delay in whole seconds;
    ``keep_alive=False`` leaves it off. (Node's sub-second and negative
    delays are not translated: see the report on rounding.)
    """
    client = net.Stream(keep_alive=enable, keep_alive_initial_delay=delay)

    def look(client: net.Stream) -> Any:
        idle = keepidle(client) if enable and delay else None
        return (keepalive(client), idle)

    seen, events = await _one_connection(client, look)
    if enable and delay and HAS_KEEPIDLE:
        assert seen == [(True, delay // 1000)]
    else:
        assert seen == [(enable, None)]
    assert events == [("close", False)]


async def test_set_keep_alive_before_connect_persists() -> None:
    """From test-net-persistent-keepalive.js.

    ``set_keep_alive(True, 3000)`` on a stream with no socket yet is applied
    when it connects (keep-alive on, 3 s idle time).
    """
    client = net.Stream()
    client.set_keep_alive(True, 3000)
    seen, events = await _one_connection(client, lambda c: (keepalive(c), keepidle(c)))
    assert seen == [(True, 3 if HAS_KEEPIDLE else None)]
    assert events == [("close", False)]


async def test_server_keep_alive_options_apply_to_accepted_streams() -> None:
    """From test-net-server-keepalive.js.

    ``create_server(keep_alive=True, keep_alive_initial_delay=1000)``: every
    accepted stream has keep-alive on with a 1 s idle time.
    """
    seen: list[Any] = []
    with trio.fail_after(10):
        async with net.create_server(keep_alive=True, keep_alive_initial_delay=1000) as server:

            def handler(conn: net.Stream) -> None:
                seen.append((keepalive(conn), keepidle(conn)))
                conn.destroy()
                server.close()

            server.on("connection", handler)
            await server.listen(0, LOOPBACK)
            client = net.create_connection(port_of(server))
            client.on("end", client.end)
            await _run(client)
    assert seen == [(True, 1 if HAS_KEEPIDLE else None)]
