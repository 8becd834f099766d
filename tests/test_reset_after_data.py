"""A peer that sends data, then resets: the data is delivered, then one
``'error'`` (``ECONNRESET``), then ``'close'(True)``.

When our send meets the reset first (the kernel reports it once, to
whichever call comes first; later sends get ``EPIPE``), the bytes the peer
sent before it are still in the kernel: the reader delivers them before the
failure. Node loses them and reports the ``EPIPE``-or-``ECONNRESET`` of the
call that met it.

Deterministic: the peer connects, sends and resets before our side accepts,
so the first send of the stream (in its ``'connect'`` listener) meets the
reset.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any

import pytest
import trio

import trio_netstream as net
from trio_netstream._socket import SocketTransport

PAYLOAD = bytes(range(256)) * 12  # 3 KiB: one read


def _reset_before_accept(listener: socket.socket) -> socket.socket:
    """A peer connects, sends ``PAYLOAD`` and resets; then we accept."""
    with socket.create_connection(listener.getsockname()) as peer:
        peer.sendall(PAYLOAD)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    accepted, _ = listener.accept()
    return accepted


def _trio_socket_stream(sock: socket.socket) -> trio.abc.Stream:
    return trio.SocketStream(trio.socket.from_stdlib_socket(sock))


TRANSPORTS: dict[str, Callable[[socket.socket], trio.abc.Stream]] = {
    "trio.SocketStream": _trio_socket_stream,
    "own socket transport (try-write)": SocketTransport,
}


async def _run(
    make: Callable[[socket.socket], trio.abc.Stream], setup: Callable[[net.Stream], None]
) -> list[Any]:
    events: list[Any] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        accepted = _reset_before_accept(listener)
    stream = net.Stream.wrap(make(accepted))

    def on_connect() -> None:
        events.append("connect")
        stream.write(b"hello\r\n")  # meets the reset

    stream.on("connect", on_connect)
    stream.on("end", lambda: events.append("end"))
    stream.on("error", lambda exc: events.append(("error", type(exc), exc.code)))
    stream.on("close", lambda had_error: events.append(("close", had_error)))
    setup(stream)
    with trio.fail_after(10):
        async with stream:
            await stream.wait_closed()
    return events


@pytest.mark.parametrize("make", TRANSPORTS.values(), ids=TRANSPORTS.keys())
async def test_the_data_before_a_reset_is_delivered_then_the_reset(
    make: Callable[[socket.socket], trio.abc.Stream],
) -> None:
    received: list[bytes] = []

    def setup(stream: net.Stream) -> None:
        stream.on("data", received.append)

    events = await _run(make, setup)
    assert b"".join(received) == PAYLOAD
    assert events == [
        "connect",
        ("error", ConnectionResetError, "ECONNRESET"),
        ("close", True),
    ]


@pytest.mark.parametrize("make", TRANSPORTS.values(), ids=TRANSPORTS.keys())
async def test_a_paused_stream_fails_at_once_with_the_reset(
    make: Callable[[socket.socket], trio.abc.Stream],
) -> None:
    # Paused, nobody would take the data: it is dropped (as by destroy()).
    received: list[bytes] = []

    def setup(stream: net.Stream) -> None:
        stream.on("data", received.append)
        stream.pause()

    events = await _run(make, setup)
    assert received == []
    assert events == [
        "connect",
        ("error", ConnectionResetError, "ECONNRESET"),
        ("close", True),
    ]


@pytest.mark.parametrize("make", TRANSPORTS.values(), ids=TRANSPORTS.keys())
async def test_pausing_after_the_send_failed_does_not_hang(
    make: Callable[[socket.socket], trio.abc.Stream],
) -> None:
    # A 'data' listener that pauses (as a proxy does when its other side is
    # full): no 'drain' will ever resume it, so the reader reports the
    # failure instead of waiting.
    received: list[bytes] = []

    def setup(stream: net.Stream) -> None:
        def on_data(chunk: bytes) -> None:
            received.append(chunk)
            stream.pause()

        stream.on("data", on_data)

    events = await _run(make, setup)
    assert b"".join(received) == PAYLOAD[: len(b"".join(received))]
    assert received
    assert events == [
        "connect",
        ("error", ConnectionResetError, "ECONNRESET"),
        ("close", True),
    ]


async def test_an_iterating_consumer_gets_the_data_then_the_reset() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        accepted = _reset_before_accept(listener)
    stream = net.Stream.wrap(SocketTransport(accepted))
    stream.on("connect", lambda: stream.write(b"hello\r\n"))
    received = bytearray()
    with trio.fail_after(10):
        async with stream:
            with pytest.raises(ConnectionResetError):
                async for chunk in stream:
                    received += chunk
    assert received == PAYLOAD


@pytest.mark.parametrize("make", TRANSPORTS.values(), ids=TRANSPORTS.keys())
async def test_a_send_that_meets_a_reset_after_the_peers_end_is_the_error(
    make: Callable[[socket.socket], trio.abc.Stream],
) -> None:
    # The peer ends, then resets; a write after 'end' meets the reset. The
    # reader is over: the failure must be reported, not lost, and the stream
    # must close (a try-write's failure used to leave it waiting forever).
    events: list[Any] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        peer = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
    with peer:
        peer.sendall(b"hi")
        peer.shutdown(socket.SHUT_WR)
        stream = net.Stream.wrap(make(accepted))
        ended = trio.Event()
        stream.on("data", lambda chunk: events.append(("data", chunk)))
        stream.on("end", lambda: (events.append("end"), ended.set()))
        stream.on("error", lambda exc: events.append(("error", type(exc))))
        stream.on("close", lambda had_error: events.append(("close", had_error)))
        with trio.fail_after(10):
            async with stream:
                await ended.wait()
                peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                peer.close()  # a reset
                await trio.sleep(0.05)
                stream.write(b"x" * 100)
                await trio.sleep(0.05)
                stream.end()
    assert events[:2] == [("data", b"hi"), "end"]
    assert len(events) == 4
    assert events[2][0] == "error"
    assert issubclass(events[2][1], (BrokenPipeError, ConnectionResetError))
    assert events[3] == ("close", True)
