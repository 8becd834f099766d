"""``Server.shutdown()`` at its edges: cancelled by its caller, called
twice at once, and 'connection' listeners that outlive their stream."""

from __future__ import annotations

import socket

import trio

import trio_netstream as net

LIMIT = 10


async def _connect(server: net.Server, count: int = 1) -> list[socket.socket]:
    """*count* connections, once the server has accepted them all."""
    address = server.address()
    assert isinstance(address, tuple)
    arrived = trio.Event()

    def on_connection(stream: net.Stream) -> None:
        if server.connections == count:
            arrived.set()

    server.on("connection", on_connection)
    socks = [socket.create_connection(address) for _ in range(count)]
    with trio.fail_after(LIMIT):
        await arrived.wait()
    server.off("connection", on_connection)
    return socks


async def test_a_cancelled_shutdown_leaves_the_next_one_working() -> None:
    async with net.create_server(lambda stream: None) as server:
        await server.listen(0, "127.0.0.1")
        (sock,) = await _connect(server)
        with sock:
            with trio.move_on_after(0.1):
                await server.shutdown()  # no grace: its caller gives up
            assert server.connections == 1
            with trio.fail_after(LIMIT):
                assert await server.shutdown(0) == 1
            assert server.connections == 0


async def test_concurrent_shutdowns_end_at_the_shorter_deadline_with_one_count() -> None:
    results: dict[str, int] = {}
    async with net.create_server(lambda stream: None) as server:
        await server.listen(0, "127.0.0.1")
        socks = await _connect(server, 3)
        try:

            async def first() -> None:
                results["first"] = await server.shutdown(60_000)

            async def second() -> None:
                await trio.sleep(0.05)
                results["second"] = await server.shutdown(100)

            with trio.fail_after(LIMIT):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(first)
                    nursery.start_soon(second)
        finally:
            for sock in socks:
                sock.close()
    assert results == {"first": 3, "second": 3}


async def test_shutdown_ends_async_connection_listeners_at_the_deadline() -> None:
    finished: list[str] = []

    async def handler(stream: net.Stream) -> None:
        try:
            await stream.wait_closed()
            await trio.sleep(60)  # clean-up that ignores the server
        finally:
            finished.append("handler")

    async with net.create_server(handler) as server:
        await server.listen(0, "127.0.0.1")
        (sock,) = await _connect(server)
        with sock:
            with trio.fail_after(LIMIT):
                assert await server.shutdown(100) == 1
    assert finished == ["handler"]


async def test_drop_comes_before_the_servers_close() -> None:
    # The drop and close() in one scheduler batch: Trio runs a batch in a
    # random order, so the drop's emission may start after close().
    order: list[str] = []
    for _ in range(50):
        order.clear()
        async with net.create_server(lambda stream: None, max_connections=0) as server:
            server.on("drop", lambda info: order.append("drop"))
            server.on("close", lambda: order.append("close"))
            await server.listen(0, "127.0.0.1")
            address = server.address()
            assert isinstance(address, tuple)
            with socket.create_connection(address):
                for _ in range(3):  # accepted and dropped within a few steps
                    await trio.lowlevel.checkpoint()
                server.close()
                await server.wait_closed()
        assert order in (["close"], ["drop", "close"])
