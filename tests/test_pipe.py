"""``stream.pipe(destination)`` and ``unpipe()``: Node's ``readable.pipe``.

Deterministic first, over Trio's in-memory streams (``Stream.wrap``): a
lockstep pair as the destination's wire makes its ``write()`` return
``False`` exactly when the test says, so backpressure is an event sequence.
Then real: a TCP proxy made of two pipes (``a.pipe(b)``, ``b.pipe(a)``)
between a real client and a real server, over TCP, a UNIX socket and TLS.
"""

from __future__ import annotations

import functools
import hashlib
import os
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netstream_testing import KiB, MiB, Tally, bounded, port_of, read_to_eof

import trio_netstream as net
from trio_netstream import Stream, StreamStateError

NETWORK_LIMIT = 60  # seconds, for the bulk transfers


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


async def receive_exactly(peer: trio.abc.ReceiveStream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await peer.receive_some(n - len(data))
        assert chunk, f"EOF after {len(data)} of {n} bytes"
        data += chunk
    return data


# -- over in-memory streams ------------------------------------------------------------


@bounded
async def test_backpressure_pauses_the_source_until_the_destinations_drain() -> None:
    events: list[Any] = []
    src_wire, src_peer = trio.testing.memory_stream_pair()
    dst_wire, dst_peer = trio.testing.lockstep_stream_pair()
    src, dst = Stream.wrap(src_wire), Stream.wrap(dst_wire, high_water_mark=8)
    src.on("data", lambda chunk: events.append(("data", chunk, src.is_paused)))
    src.on("end", lambda: events.append("src end"))
    dst.on("drain", lambda: events.append(("drain", src.is_paused)))
    async with src, dst:
        assert src.pipe(dst) is dst
        await src_peer.send_all(b"0123456789")  # over the high-water mark
        await settle()
        assert src.is_paused and dst.write_queue_size == 10
        assert dst.listener_count("drain") == 2  # ours, and the pipe's while it holds
        await src_peer.send_all(b"abc")
        await settle()
        assert events == [("data", b"0123456789", False)]  # paused: 'abc' waits
        assert await receive_exactly(dst_peer, 10) == b"0123456789"
        await settle()  # 'drain' resumed the source, 'abc' went through
        assert events == [("data", b"0123456789", False), ("drain", True), ("data", b"abc", False)]
        assert not src.is_paused
        assert dst.listener_count("drain") == 1  # the pipe's went with its hold
        assert await receive_exactly(dst_peer, 3) == b"abc"
        await src_peer.send_eof()
        assert await read_to_eof(dst_peer) == b""  # the pipe ended the destination
        assert events[-1] == "src end"
        assert dst.ready_state == "readOnly"
        src.end()
        await dst_peer.aclose()
        await src_peer.aclose()


@bounded
async def test_pipe_resumes_a_paused_source_and_returns_the_destination() -> None:
    src_wire, src_peer = trio.testing.memory_stream_pair()
    dst_wire, dst_peer = trio.testing.memory_stream_pair()
    async with Stream.wrap(src_wire) as src, Stream.wrap(dst_wire) as dst:
        src.pause()
        assert src.pipe(dst, end=False) is dst  # Node's pipe() starts the flow
        assert not src.is_paused
        await src_peer.send_all(b"hello")
        await src_peer.send_eof()
        await settle()
        assert await dst_peer.receive_some() == b"hello"
        assert dst.ready_state == "open"  # end=False: not ended
        dst.end()
        src.end()
        await dst_peer.aclose()
        await src_peer.aclose()


@bounded
async def test_a_source_waits_for_a_destination_already_at_its_high_water_mark() -> None:
    src_wire, src_peer = trio.testing.memory_stream_pair()
    dst_wire, dst_peer = trio.testing.lockstep_stream_pair()
    async with Stream.wrap(src_wire) as src, Stream.wrap(dst_wire, high_water_mark=4) as dst:
        assert dst.write(b"queued") is False
        src.pipe(dst)
        assert src.is_paused  # as Node with dest.writableNeedDrain
        await src_peer.send_all(b"x")
        await settle()
        assert dst.write_queue_size == 6
        assert await receive_exactly(dst_peer, 7) == b"queuedx"
        src.end()
        await src_peer.aclose()
        await read_to_eof(dst_peer)
        await dst_peer.aclose()


@bounded
async def test_several_destinations_each_get_every_chunk_and_all_must_drain() -> None:
    src_wire, src_peer = trio.testing.memory_stream_pair()
    slow_wire, slow_peer = trio.testing.lockstep_stream_pair()
    fast_wire, fast_peer = trio.testing.lockstep_stream_pair()
    events: list[Any] = []
    src = Stream.wrap(src_wire)
    slow = Stream.wrap(slow_wire, high_water_mark=4)
    fast = Stream.wrap(fast_wire, high_water_mark=4)
    slow.on("drain", lambda: events.append(("slow drain", src.is_paused)))
    fast.on("drain", lambda: events.append(("fast drain", src.is_paused)))
    async with src, slow, fast:
        src.pipe(slow)
        src.pipe(fast)
        await src_peer.send_all(b"chunk")
        await settle()
        assert src.is_paused
        assert await receive_exactly(fast_peer, 5) == b"chunk"
        await settle()
        assert events == [("fast drain", True)]  # still waits for slow
        assert src.is_paused
        assert await receive_exactly(slow_peer, 5) == b"chunk"
        await settle()
        assert events == [("fast drain", True), ("slow drain", True)]
        assert not src.is_paused
        src.end()
        await src_peer.aclose()
        assert await read_to_eof(slow_peer) == b""
        assert await read_to_eof(fast_peer) == b""
        await slow_peer.aclose()
        await fast_peer.aclose()


@bounded
async def test_piping_to_the_same_destination_twice_writes_every_chunk_twice() -> None:
    src_wire, src_peer = trio.testing.memory_stream_pair()
    dst_wire, dst_peer = trio.testing.memory_stream_pair()
    async with Stream.wrap(src_wire) as src, Stream.wrap(dst_wire) as dst:
        src.pipe(dst)
        src.pipe(dst)  # as Node: two pipes
        await src_peer.send_all(b"ab")
        await settle()
        assert await dst_peer.receive_some() == b"abab"
        src.unpipe(dst)  # removes one of them
        await src_peer.send_all(b"c")
        await src_peer.send_eof()
        assert await read_to_eof(dst_peer) == b"c"
        src.end()
        await dst_peer.aclose()
        await src_peer.aclose()


@bounded
async def test_a_stream_piped_to_itself_echoes() -> None:
    wire, peer = trio.testing.memory_stream_pair()
    async with Stream.wrap(wire) as stream:
        stream.pipe(stream)
        await peer.send_all(b"ping")
        await peer.send_eof()
        assert await read_to_eof(peer) == b"ping"
        await peer.aclose()


@pytest.mark.parametrize("encoding", ["base64", "hex", "latin1", "utf8", "utf16le"])
@bounded
async def test_a_source_with_an_encoding_pipes_its_bytes_unchanged(encoding: str) -> None:
    payload = "héllo wörld ✓ ".encode() * 50 if encoding == "utf8" else os.urandom(1000)
    if encoding == "utf16le":
        payload = "snowman ☃ and 🐍 ".encode("utf-16-le") * 40
    src_wire, src_peer = trio.testing.memory_stream_pair()
    dst_wire, dst_peer = trio.testing.memory_stream_pair()
    chunks: list[Any] = []
    async with Stream.wrap(src_wire) as src, Stream.wrap(dst_wire) as dst:
        src.set_encoding(encoding)
        src.on("data", chunks.append)
        src.pipe(dst)
        for start in range(0, len(payload), 7):  # chunks that split characters and quanta
            await src_peer.send_all(payload[start : start + 7])
            await settle()
        await src_peer.send_eof()
        assert await read_to_eof(dst_peer) == payload
        src.end()
        await dst_peer.aclose()
        await src_peer.aclose()
    assert chunks and all(isinstance(chunk, str) for chunk in chunks)


@bounded
async def test_unpipe_stops_the_flow_and_leaves_the_source_paused_as_node() -> None:
    src_wire, src_peer = trio.testing.memory_stream_pair()
    dst_wire, dst_peer = trio.testing.memory_stream_pair()
    events: list[Any] = []
    async with Stream.wrap(src_wire) as src, Stream.wrap(dst_wire) as dst:
        src.on("end", lambda: events.append("end"))
        src.pipe(dst)
        await src_peer.send_all(b"before")
        await settle()
        assert src.unpipe(dst) is src
        assert src.is_paused  # Node: a source left without destinations is paused
        assert src.listener_count("data") == 0
        assert dst.listener_count("drain") == dst.listener_count("close") == 0
        await src_peer.send_all(b"after")
        await src_peer.send_eof()
        await settle()
        assert events == []  # paused: nothing read
        src.on("data", lambda chunk: events.append(chunk))
        src.resume()
        await settle()
        assert events == [b"after", "end"]
        assert dst.ready_state == "open"  # not ended: unpiped before 'end'
        dst.end()
        assert await read_to_eof(dst_peer) == b"before"
        src.end()
        await dst_peer.aclose()
        await src_peer.aclose()


@bounded
async def test_unpipe_lets_go_of_a_source_held_for_that_destinations_drain() -> None:
    src_wire, src_peer = trio.testing.memory_stream_pair()
    slow_wire, slow_peer = trio.testing.lockstep_stream_pair()
    other_wire, other_peer = trio.testing.memory_stream_pair()
    async with Stream.wrap(src_wire) as src, Stream.wrap(other_wire) as other:
        slow = Stream.wrap(slow_wire, high_water_mark=2)
        async with slow:
            src.pipe(slow)
            src.pipe(other)
            await src_peer.send_all(b"abc")
            await settle()
            assert src.is_paused  # held for slow's 'drain'
            src.unpipe(slow)
            assert not src.is_paused  # other still pipes, and waits for nothing
            await src_peer.send_all(b"def")
            await settle()
            assert await other_peer.receive_some() == b"abcdef"
            slow.destroy()
        await slow_peer.aclose()
        src.unpipe()  # all
        assert src.is_paused
        await src_peer.aclose()
        await other_peer.aclose()
        src.destroy()
        other.destroy()


@bounded
async def test_the_destinations_close_ends_the_pipe_and_its_error_stays_its_own() -> None:
    src_wire, src_peer = trio.testing.memory_stream_pair()
    dst_wire, dst_peer = trio.testing.memory_stream_pair()
    src_events: list[Any] = []
    dst_events: list[Any] = []
    failure = ConnectionResetError("boom")
    async with Stream.wrap(src_wire) as src, Stream.wrap(dst_wire) as dst:
        for name in ("error", "close", "end"):
            src.on(name, lambda *args, name=name: src_events.append((name, *args)))
            dst.on(name, lambda *args, name=name: dst_events.append((name, *args)))
        src.pipe(dst)
        dst.destroy(failure)
        await settle()
        assert dst_events == [("error", failure), ("close", True)]
        assert src_events == []
        assert src.is_paused and src.ready_state == "open"  # Node: unpiped, not destroyed
        assert src.listener_count("data") == 0
        src.end()
        await src_peer.send_eof()
        await settle()
        assert src_events == []  # paused: the peer's FIN is not read
        src.resume()
        await settle()
        assert src_events == [("end",), ("close", False)]
        await src_peer.aclose()
        await dst_peer.aclose()


@bounded
async def test_a_source_that_fails_does_not_end_nor_destroy_the_destination() -> None:
    src_wire, src_peer = trio.testing.memory_stream_pair()
    dst_wire, dst_peer = trio.testing.memory_stream_pair()
    failure = ConnectionResetError("boom")
    events: list[Any] = []
    async with Stream.wrap(src_wire) as src, Stream.wrap(dst_wire) as dst:
        src.on("error", lambda exc: events.append(("src error", exc)))
        dst.on("close", lambda had_error: events.append(("dst close", had_error)))
        src.pipe(dst)
        await src_peer.send_all(b"partial")
        await settle()
        src.destroy(failure)
        await settle()
        assert events == [("src error", failure)]
        assert dst.ready_state == "open"  # Node does not end the destination
        assert dst.listener_count("drain") == 0  # the pipe went with the source
        dst.write(b" and more")
        dst.end()
        assert await read_to_eof(dst_peer) == b"partial and more"
        await dst_peer.aclose()
        await src_peer.aclose()


@bounded
async def test_a_destination_ended_meanwhile_unpipes_without_failing_the_source() -> None:
    src_wire, src_peer = trio.testing.memory_stream_pair()
    dst_wire, dst_peer = trio.testing.memory_stream_pair()
    async with Stream.wrap(src_wire) as src, Stream.wrap(dst_wire) as dst:
        src.pipe(dst)
        dst.end()
        await src_peer.send_all(b"late")  # dst.write() would raise: the pipe goes
        await settle()
        assert src.listener_count("data") == 0
        assert src.is_paused
        assert await read_to_eof(dst_peer) == b""
        src.destroy()
        await src_peer.aclose()
        await dst_peer.aclose()


@bounded
async def test_pipe_on_an_ended_source_ends_the_destination_at_once() -> None:
    src_wire, src_peer = trio.testing.memory_stream_pair()
    dst_wire, dst_peer = trio.testing.memory_stream_pair()
    other_wire, other_peer = trio.testing.memory_stream_pair()
    async with Stream.wrap(src_wire) as src, Stream.wrap(dst_wire) as dst:
        other = Stream.wrap(other_wire)
        async with other:
            ended = trio.Event()
            src.on("end", ended.set)
            src.resume()
            await src_peer.send_eof()
            await ended.wait()
            src.pipe(dst)
            assert dst.ready_state == "readOnly"
            src.pipe(other, end=False)
            assert other.ready_state == "open"
            assert src.listener_count("data") == 0
            other.end()
            src.end()
            for peer in (src_peer, dst_peer, other_peer):
                await peer.aclose()


@bounded
async def test_bad_arguments_raise_and_change_nothing() -> None:
    src_wire, src_peer = trio.testing.memory_stream_pair()
    dst_wire, dst_peer = trio.testing.memory_stream_pair()
    async with Stream.wrap(src_wire) as src, Stream.wrap(dst_wire) as dst:
        src.pause()
        with pytest.raises(TypeError, match="Stream"):
            src.pipe(dst_wire)  # type: ignore[type-var]
        with pytest.raises(TypeError, match="end"):
            src.pipe(dst, end=1)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="Stream or None"):
            src.unpipe("dst")  # type: ignore[arg-type]
        with pytest.raises(StreamStateError, match="closed"):
            src.pipe(Stream())  # never connected: nothing can be written
        ended = Stream.wrap(trio.testing.memory_stream_pair()[0])
        ended.end()
        with pytest.raises(StreamStateError, match="readOnly"):
            src.pipe(ended)
        assert src.is_paused
        assert src.listener_count("data") == 0 and dst.listener_count("drain") == 0
        assert src.unpipe(dst) is src  # not piped: nothing to do
        assert src.is_paused
        src.resume()
        src.end()
        dst.end()
        await src_peer.aclose()
        await dst_peer.aclose()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payload=st.binary(min_size=0, max_size=20_000),
    sizes=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=8),
    high_water_mark=st.integers(min_value=1, max_value=4096),
)
def test_bytes_arrive_intact_whatever_the_chunks_and_high_water_mark(
    payload: bytes, sizes: list[int], high_water_mark: int
) -> None:
    async def main() -> None:
        src_wire, src_peer = trio.testing.memory_stream_pair()
        dst_wire, dst_peer = trio.testing.lockstep_stream_pair()
        received = b""
        biggest = 0

        async with Stream.wrap(src_wire) as src:
            dst = Stream.wrap(dst_wire, high_water_mark=high_water_mark)
            async with dst, trio.open_nursery() as nursery:

                def watch(chunk: bytes | str) -> None:
                    nonlocal biggest
                    biggest = max(biggest, dst.write_queue_size - len(chunk))

                src.pipe(dst)
                src.on("data", watch)

                async def send() -> None:
                    index = position = 0
                    while position < len(payload):
                        size = sizes[index % len(sizes)]
                        await src_peer.send_all(payload[position : position + size])
                        position += size
                        index += 1
                    await src_peer.send_eof()

                nursery.start_soon(send)
                received = await read_to_eof(dst_peer, 1024)
                src.end()
                await dst_peer.aclose()
            await src_peer.aclose()
        assert received == payload
        assert biggest < high_water_mark  # a write starts below the mark

    async def bounded_main() -> None:
        with trio.fail_after(10):
            await main()

    trio.run(bounded_main)


# -- a proxy over real sockets -------------------------------------------------------------


async def test_a_write_the_kernel_took_at_once_does_not_pause_the_source() -> None:
    """write() returns False for every chunk (high-water mark 1), but each
    goes to the kernel at once: nothing is queued, so the pipe neither
    pauses the source nor waits for a 'drain'; the destination's own
    'drain' listener still gets the 'drain' each write owes it."""
    seen: list[tuple[int, bool, int]] = []
    drains: list[None] = []
    lines = [b"%05d\n" % i for i in range(200)]
    with trio.fail_after(NETWORK_LIMIT):
        async with net.create_server(echo_by_pipe) as sink:
            await sink.listen(0, "127.0.0.1")
            dst = net.create_connection(port_of(sink), high_water_mark=1)
            connected, ended = trio.Event(), trio.Event()
            dst.on("connect", connected.set)
            dst.on("data", len)  # reads the echo and the sink's end, to close
            async with dst:
                await connected.wait()
                dst.on("drain", lambda: drains.append(None))
                listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
                port = listeners[0].socket.getsockname()[1]
                src = net.create_connection(port)
                src.on("end", ended.set)
                async with src, await listeners[0].accept() as peer:
                    src.pipe(dst)
                    src.on(
                        "data",
                        lambda _chunk: seen.append(
                            (dst.write_queue_size, src.is_paused, dst.listener_count("drain"))
                        ),
                    )
                    for line in lines:
                        await peer.send_all(line)
                        await settle()
                    await peer.send_eof()
                    await ended.wait()
                    src.end()
                await listeners[0].aclose()
            sink.close()
    assert seen and all(entry == (0, False, 1) for entry in seen), seen
    assert len(drains) == len(seen)


def echo_by_pipe(stream: Stream) -> None:
    """The server side: Node's echo server, ``socket.pipe(socket)``."""
    stream.pipe(stream)


@asynccontextmanager
async def proxy(
    listen: Callable[[net.Server], Any],
    connect: Callable[[], Stream],
    peak: list[int],
    **server_options: Any,
) -> AsyncIterator[net.Server]:
    """A proxy made of two pipes: each connection gets an upstream stream,
    ``client.pipe(upstream)`` and ``upstream.pipe(client)``. *peak* gets
    the largest write queue either side had."""

    async def on_connection(client: Stream) -> None:
        async with connect() as upstream:
            client.pipe(upstream)
            upstream.pipe(client)
            for one, other in ((client, upstream), (upstream, client)):
                one.on("data", lambda _chunk, other=other: peak.append(other.write_queue_size))
                one.on("error", lambda _exc: None)
                one.on("close", lambda had_error, other=other: had_error and other.destroy())
            await client.wait_closed()

    async with net.create_server(on_connection, **server_options) as server:
        await listen(server)
        yield server
        server.close()


async def bulk_through(
    connect_client: Callable[[], Any], total: int, *, step: int = 256 * KiB
) -> tuple[str, str]:
    """Send *total* random bytes and EOF from a raw Trio client; read the
    echo until EOF; the two sha256s. (A ``trio.SSLStream`` cannot send an
    EOF: it reads *total* bytes and closes.)"""
    sent = hashlib.sha256()
    stream = await connect_client()
    async with stream, trio.open_nursery() as nursery:

        async def send() -> None:
            remaining = total
            while remaining:
                block = os.urandom(min(step, remaining))
                sent.update(block)
                await stream.send_all(block)
                remaining -= len(block)
            if hasattr(stream, "send_eof"):
                await stream.send_eof()

        nursery.start_soon(send)
        received = hashlib.sha256()
        count = 0
        while chunk := await stream.receive_some(256 * KiB):
            received.update(chunk)
            count += len(chunk)
            if count == total and not hasattr(stream, "send_eof"):
                break
    return sent.hexdigest(), received.hexdigest()


@pytest.mark.parametrize("high_water_mark", [16 * KiB, 256 * KiB])
async def test_a_tcp_proxy_of_two_pipes_carries_64_mib_with_bounded_queues(
    high_water_mark: int,
) -> None:
    peak: list[int] = []
    with trio.fail_after(NETWORK_LIMIT):
        async with net.create_server(echo_by_pipe) as echo:
            await echo.listen(0, "127.0.0.1")
            echo_port = port_of(echo)
            async with proxy(
                lambda server: server.listen(0, "127.0.0.1"),
                lambda: net.create_connection(echo_port, high_water_mark=high_water_mark),
                peak,
                high_water_mark=high_water_mark,
            ) as server:
                port = port_of(server)
                sent, received = await bulk_through(
                    functools.partial(trio.open_tcp_stream, "127.0.0.1", port), 64 * MiB
                )
                assert sent == received
            echo.close()
    assert peak  # the queues were sampled
    assert max(peak) <= high_water_mark + 64 * KiB, max(peak)


async def test_a_unix_socket_proxy_to_a_tcp_server(unix_path: str) -> None:
    peak: list[int] = []
    with trio.fail_after(NETWORK_LIMIT):
        async with net.create_server(echo_by_pipe) as echo:
            await echo.listen(0, "127.0.0.1")
            echo_port = port_of(echo)
            async with proxy(
                lambda server: server.listen(unix_path),
                lambda: net.create_connection(echo_port),
                peak,
            ):
                sent, received = await bulk_through(
                    functools.partial(trio.open_unix_socket, unix_path), 8 * MiB
                )
                assert sent == received
            echo.close()
    assert max(peak) <= 16 * KiB + 64 * KiB


async def test_a_tls_terminating_proxy_to_a_tls_server() -> None:
    """TLS on both sides of the proxy: the client talks TLS to the proxy,
    the proxy talks TLS to the echo server."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client_ctx)
    peak: list[int] = []

    async def tls_client(port: int) -> trio.SSLStream[trio.SocketStream]:
        raw = await trio.open_tcp_stream("127.0.0.1", port)
        return trio.SSLStream(raw, client_ctx, server_hostname="localhost")

    with trio.fail_after(NETWORK_LIMIT):
        async with net.create_server(echo_by_pipe, ssl=server_ctx) as echo:
            await echo.listen(0, "127.0.0.1")
            echo_port = port_of(echo)
            async with proxy(
                lambda server: server.listen(0, "127.0.0.1"),
                lambda: net.create_connection(
                    echo_port, ssl=client_ctx, server_hostname="localhost"
                ),
                peak,
                ssl=server_ctx,
            ) as server:
                port = port_of(server)
                sent, received = await bulk_through(functools.partial(tls_client, port), 8 * MiB)
                assert sent == received
            echo.close()
    assert max(peak) <= 16 * KiB + 64 * KiB


async def test_half_close_passes_through_the_proxy() -> None:
    """client end() -> server sees 'end' -> the server replies and ends ->
    the client gets the reply, then 'end'."""
    server_events: list[Any] = []

    def replier(stream: Stream) -> None:
        received = bytearray()
        stream.on("data", received.extend)

        def on_end() -> None:
            server_events.append(("end", bytes(received)))
            stream.end(b"reply to " + bytes(received))

        stream.on("end", on_end)

    with trio.fail_after(NETWORK_LIMIT):
        async with net.create_server(replier) as backend:
            await backend.listen(0, "127.0.0.1")
            backend_port = port_of(backend)
            async with proxy(
                lambda server: server.listen(0, "127.0.0.1"),
                lambda: net.create_connection(backend_port),
                [],
            ) as server:
                events: list[Any] = []
                async with net.create_connection(port_of(server)) as client:
                    client.on("data", lambda chunk: events.append(("data", chunk)))
                    client.on("end", lambda: events.append("end"))
                    client.on("close", lambda had_error: events.append(("close", had_error)))
                    client.end(b"question")
                joined = b"".join(e[1] for e in events if isinstance(e, tuple) and e[0] == "data")
                assert joined == b"reply to question"
                assert [e for e in events if not (isinstance(e, tuple) and e[0] == "data")] == [
                    "end",
                    ("close", False),
                ]
            backend.close()
    assert server_events == [("end", b"question")]


async def test_an_error_on_one_side_does_not_destroy_the_other() -> None:
    """Over TCP: the upstream is reset; the client side of the pipe pair gets
    nothing but is unpiped and paused, still open, and can be used."""
    with trio.fail_after(NETWORK_LIMIT):
        accepted: list[Stream] = []
        both = Tally()

        def on_connection(stream: Stream) -> None:
            accepted.append(stream)
            both.add()

        async with net.create_server(on_connection) as server:
            await server.listen(0, "127.0.0.1")
            async with (
                net.create_connection(port_of(server)) as a,
                net.create_connection(port_of(server)) as b,
            ):
                events: list[Any] = []
                a.on("close", lambda had_error: events.append(("a close", had_error)))
                b.on("error", lambda exc: events.append(("b error", type(exc).__name__)))
                b.on("close", lambda had_error: events.append(("b close", had_error)))
                a.pipe(b)
                b.pipe(a)
                await both.wait_for(2)
                b_peer = next(s for s in accepted if s.remote_port == b.local_port)
                a_peer = next(s for s in accepted if s is not b_peer)
                b_peer.reset_and_destroy()
                await b.wait_closed()
                assert events == [("b error", "ConnectionResetError"), ("b close", True)]
                assert a.ready_state == "open" and a.is_paused  # unpiped, as Node
                a.resume()
                got = bytearray()
                a_peer.on("data", got.extend)
                a_peer.on("end", a_peer.end)
                a.write(b"still here")
                a.end()
                await a.wait_closed()
                assert got == b"still here"
            server.close()
        assert events[-1] == ("a close", False)
