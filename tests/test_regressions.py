"""Regression tests for defects found in review; each names what went wrong."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import trio_netstream as net


async def test_leaving_async_for_loses_no_chunk() -> None:
    """A chunk read after ``break`` was handed to the dead loop and lost."""
    left, right = trio.testing.memory_stream_pair()
    got: list[bytes] = []
    with trio.fail_after(10):
        async with net.Stream.wrap(left) as stream:
            await right.send_all(b"A")
            async for chunk in stream:
                got.append(chunk)
                break
            await right.send_all(b"B")
            await trio.testing.wait_all_tasks_blocked()
            await right.send_all(b"C")
            await right.send_eof()
            async for chunk in stream:
                got.append(chunk)
            stream.end()
    assert b"".join(got) == b"ABC"


async def test_an_error_after_leaving_async_for_is_not_swallowed() -> None:
    """The abandoned loop counted as the error's handler."""
    left, right = trio.testing.memory_stream_pair()
    closes: list[bool] = []
    with pytest.raises(ConnectionResetError), trio.fail_after(10):
        async with net.Stream.wrap(left) as stream:
            stream.on("close", closes.append)
            await right.send_all(b"A")
            async for _chunk in stream:
                break
            stream.destroy(ConnectionResetError(104, "reset"))  # nobody listens for it
            await stream.wait_closed()
    assert closes == [True]


async def test_close_comes_even_when_an_async_error_listener_is_cancelled(
    autojump_clock: Any,
) -> None:
    left, right = trio.testing.memory_stream_pair()
    events: list[Any] = []

    async def slow_error_listener(err: BaseException) -> None:
        events.append("error")
        await trio.sleep(100)

    stream = net.Stream.wrap(left)
    stream.on("error", slow_error_listener)
    stream.on("close", lambda had_error: events.append(("close", had_error)))
    with trio.move_on_after(5):
        async with stream:
            stream.destroy(OSError("boom"))
            await trio.sleep(100)
    assert events == ["error", ("close", True)]
    assert stream.ready_state == "closed"
    await stream.wait_closed()  # does not hang
    await right.aclose()


async def test_a_shorter_timeout_applies_at_once(autojump_clock: Any) -> None:
    left, right = trio.testing.memory_stream_pair()
    fired: list[float] = []
    with trio.fail_after(60):
        async with net.Stream.wrap(left) as stream:
            start = trio.current_time()
            stream.on(
                "timeout", lambda: (fired.append(trio.current_time() - start), stream.destroy())
            )
            stream.set_timeout(5000)
            await trio.sleep(0.1)
            stream.set_timeout(100)
    assert fired == [pytest.approx(0.2)]
    await right.aclose()


async def test_a_server_block_left_by_an_exception_ends_async_listeners() -> None:
    """A handler waiting on something else kept the block open."""

    running = trio.Event()

    async def handler(stream: net.Stream) -> None:
        running.set()
        await trio.sleep_forever()

    with pytest.raises(ValueError), trio.fail_after(10):
        async with net.create_server(handler) as server:
            await server.listen(0, "127.0.0.1")
            address = server.address()
            assert isinstance(address, tuple)
            client = await trio.open_tcp_stream("127.0.0.1", address[1])
            await running.wait()
            await client.aclose()
            raise ValueError("leaving")


async def test_a_close_listener_cannot_reconnect_while_the_block_exits() -> None:
    """Node's reconnect-on-close pattern kept a block open after an exception."""
    async with net.create_server(lambda s: s.on("end", s.end)) as server:
        await server.listen(0, "127.0.0.1")
        address = server.address()
        assert isinstance(address, tuple)
        stream = net.create_connection(address[1])
        stream.on("close", lambda had_error: stream.connect(address[1]))
        with pytest.raises(ValueError), trio.fail_after(10):
            async with stream:
                stream.on("connect", lambda: None)
                await trio.sleep(0.05)
                raise ValueError("leaving")
        server.close()


async def test_a_server_side_stream_cannot_reconnect() -> None:
    """connect() on an accepted stream used to leave it 'opening' forever."""
    errors: list[BaseException] = []

    def on_connection(stream: net.Stream) -> None:
        def on_close(had_error: bool) -> None:
            try:
                stream.connect(1)
            except net.StreamStateError as exc:
                errors.append(exc)

        stream.on("close", on_close)
        stream.on("end", stream.end)

    with trio.fail_after(10):
        async with net.create_server(on_connection) as server:
            await server.listen(0, "127.0.0.1")
            address = server.address()
            assert isinstance(address, tuple)
            async with net.create_connection(address[1]) as client:
                client.end()
            server.close()
    assert len(errors) == 1
    assert "accepted" in str(errors[0])
