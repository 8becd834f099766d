"""Regression tests for defects found in review; each names what went wrong."""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
from typing import Any

import pytest
import trio
import trio.testing
import trustme

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


async def test_async_for_started_as_the_eof_is_read_gets_the_kept_data() -> None:
    """A reply kept for a consumer, then the FIN: an ``async for`` that began
    while the reader was between the EOF and ``'end'`` got nothing."""
    for yields in range(8):
        for _ in range(10):  # Trio shuffles each batch: try both orders
            mine, peer = socket.socketpair()
            with peer:
                peer.sendall(b"hello")
                peer.shutdown(socket.SHUT_WR)
                got: list[bytes] = []
                with trio.fail_after(10):
                    wrapped = trio.SocketStream(trio.socket.from_stdlib_socket(mine))
                    async with net.Stream.wrap(wrapped) as stream:
                        for _ in range(yields):
                            await trio.lowlevel.cancel_shielded_checkpoint()
                        async for chunk in stream:
                            assert isinstance(chunk, bytes)
                            got.append(chunk)
                        stream.end()
            assert b"".join(got) == b"hello", f"after {yields} scheduler steps"


class _Interrupt(BaseException):
    """Stands for KeyboardInterrupt in a listener."""


async def test_a_base_exception_in_a_connection_listener_ends_the_server() -> None:
    """A 'connection' listener raising a BaseException hung the server's
    block: the connection was counted but its task never started."""

    def on_connection(stream: net.Stream) -> None:
        raise _Interrupt

    with socket.socket() as client:
        with pytest.raises(_Interrupt), trio.fail_after(10):
            async with net.create_server(on_connection) as server:
                await server.listen(0, "127.0.0.1")
                address = server.address()
                assert isinstance(address, tuple)
                client.connect(address)
                await trio.sleep_forever()
        assert server.connections == 0
        assert client.recv(1) == b""  # the accepted socket was closed, not leaked


async def test_an_adopted_listeners_socket_options_do_not_reach_the_streams() -> None:
    """Accepted sockets inherit TCP_NODELAY and SO_KEEPALIVE from the listening
    socket; a stream with the default options must still have Nagle on and no
    keep-alive (a socket-activated listener may have both set)."""
    seen: list[tuple[int, int]] = []
    listener = socket.socket()
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    listener.bind(("127.0.0.1", 0))

    def on_connection(stream: net.Stream) -> None:
        sock = stream.socket
        assert sock is not None
        seen.append(
            (
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            )
        )
        stream.destroy()
        server.close()

    with trio.fail_after(10):
        async with net.create_server(on_connection) as server:
            await server.listen(sock=listener)
            address = server.address()
            assert isinstance(address, tuple)
            with trio.socket.socket() as client:
                await client.connect(address)
                await server.wait_closed()
    assert seen == [(0, 0)]


async def test_the_local_address_survives_the_user_closing_the_socket() -> None:
    """The local address, read lazily, was lost when a listener closed
    ``stream.socket`` before anyone asked for it."""
    seen: list[tuple[Any, ...]] = []

    def on_connection(conn: net.Stream) -> None:
        def on_data(_: bytes) -> None:
            sock = conn.socket
            assert sock is not None
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()

        conn.on("data", on_data)
        conn.on("close", lambda _: seen.append((conn.local_address, conn.local_port)))
        conn.on("close", lambda _: server.close())

    with trio.fail_after(10):
        async with net.create_server(on_connection) as server:
            await server.listen(0, "127.0.0.1")
            address = server.address()
            assert isinstance(address, tuple)
            with trio.socket.socket() as client:
                await client.connect(address)
                await client.send(b"x")
                await server.wait_closed()
    assert seen == [address]


async def _write_on_data_then_eof_with_a_split_character() -> list[Any]:
    events: list[Any] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        stream = net.create_connection(listener.getsockname()[1], high_water_mark=1)
        stream.set_encoding("utf8")

        def on_data(text: str) -> None:
            events.append(("data", text))
            if text == "hi":
                events.append(("write", stream.write(b"k")))

        stream.on("data", on_data)
        stream.on("drain", lambda: events.append("drain"))
        stream.on("end", lambda: events.append("end"))
        stream.on("end", stream.end)
        with trio.fail_after(10):
            async with stream:
                peer, _ = await trio.to_thread.run_sync(listener.accept)
                peer.sendall(b"hi\xe2\x82")  # then FIN, before the client reads
                peer.shutdown(socket.SHUT_WR)
        peer.close()  # after the client ended too: closing with unread bytes would reset
    return events


async def test_the_owed_drain_comes_before_the_decoders_tail_at_the_eof() -> None:
    """A 'data' listener's write() went out at once; the peer's FIN came with
    a truncated character: the 'drain' came after the decoder's last 'data'
    in about half the runs."""
    for _ in range(20):
        events = await _write_on_data_then_eof_with_a_split_character()
        assert events == [("data", "hi"), ("write", False), "drain", ("data", "\ufffd"), "end"]


@pytest.mark.parametrize("handshake_succeeds", [True, False], ids=["secure", "failed"])
async def test_the_owed_drain_comes_before_a_starttls_handshake(handshake_succeeds: bool) -> None:
    """write() then set_secure() in a 'data' listener (the STARTTLS reply):
    the 'drain' owed to the write waited for the handshake, and never came
    if the handshake failed."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    if handshake_succeeds:
        ca.configure_trust(client_ctx)
    events: list[Any] = []
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    stream = net.create_connection(listeners[0].socket.getsockname()[1], high_water_mark=1)

    def on_data(chunk: bytes) -> None:
        events.append(("data", chunk))
        events.append(("write", stream.write(b"STARTTLS")))
        stream.set_secure(client_ctx)

    stream.on("data", on_data)
    stream.on("drain", lambda: events.append("drain"))
    handshake_over = trio.Event()
    stream.on("secure", lambda: (events.append("secure"), handshake_over.set()))
    stream.on("error", lambda exc: (events.append("error"), handshake_over.set()))
    with trio.fail_after(10):
        async with stream:
            peer = await listeners[0].accept()
            await peer.send_all(b"go")
            received = b""
            while len(received) < len(b"STARTTLS"):
                received += await peer.receive_some(100)
            tls = trio.SSLStream(peer, server_ctx, server_side=True)
            with contextlib.suppress(trio.BrokenResourceError):
                await tls.do_handshake()
            await handshake_over.wait()
            stream.destroy()
        await peer.aclose()
        await listeners[0].aclose()
    assert events[:3] == [("data", b"go"), ("write", False), "drain"]
    assert events[3] == ("secure" if handshake_succeeds else "error")


async def test_a_loop_started_right_after_break_gets_the_next_chunks() -> None:
    """The old loop's refused chunk cleared the new loop's feed: the second
    ``async for`` waited forever."""
    left, right = trio.testing.memory_stream_pair()
    got: list[bytes] = []
    with trio.fail_after(10):
        async with net.Stream.wrap(left) as stream:
            for piece in (b"1", b"2", b"3"):
                await right.send_all(piece)
                await trio.testing.wait_all_tasks_blocked()
            async for chunk in stream:
                got.append(chunk)
                await trio.lowlevel.checkpoint()
                break
            async for chunk in stream:
                got.append(chunk)
                break
            async for chunk in stream:
                got.append(chunk)
                break
            stream.destroy()
    assert got == [b"1", b"2", b"3"]


async def test_no_drain_after_end_called_while_an_async_listener_ran() -> None:
    """The state was checked before waiting for the async 'data' listener
    to finish; the listener called end() meanwhile and still got 'drain'."""
    left, right = trio.testing.memory_stream_pair()
    stream = net.Stream.wrap(left, high_water_mark=1)
    events: list[Any] = []

    async def on_data(chunk: bytes) -> None:
        events.append(("write", stream.write(b"k")))
        await trio.sleep(0.05)
        stream.end()
        events.append("end()")

    stream.on("data", on_data)
    stream.on("drain", lambda: events.append("drain"))
    with trio.fail_after(10):
        async with stream:
            await right.send_all(b"x")
            await trio.sleep(0.2)
            await right.send_eof()
    assert events == [("write", False), "end()"]


def _tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a trustme certificate for ``localhost``, and a
    client context that trusts it."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


class _UpgradeAsTheReaderWakes(trio.abc.Instrument):
    """Calls ``set_secure()`` (as another task would) in the narrow moment
    after the reader was woken by readable bytes and before it runs on."""

    def __init__(self, stream: net.Stream, context: ssl.SSLContext) -> None:
        self.stream = stream
        self.context = context
        self.fired = False

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        conn = self.stream._conn  # pyright: ignore[reportPrivateUsage]  # the race is internal
        # The reader waits in receive_some() (in_receive), or outside any
        # scope in epoll (quiet_wait: a plaintext socket of ours).
        waits = conn is not None and (conn.in_receive or conn.quiet_wait)
        if self.fired or conn is None or not waits or conn.transport is None:
            return
        plain = conn.transport.plain  # type: ignore[attr-defined]  # a SocketTransport
        try:
            waiting = plain.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        if waiting:
            self.fired = True
            self.stream.set_secure(self.context, server_side=True)


async def test_bytes_read_after_set_secure_go_to_tls_even_if_the_reader_was_already_woken() -> None:
    """set_secure() from another task just after the reader was woken by the
    peer's ClientHello: the reader read it anyway, and delivered it as
    plaintext 'data'; the handshake then waited for it until the timeout."""
    server_ctx, client_ctx = _tls_contexts()
    events: list[Any] = []
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    stream = net.create_connection(listeners[0].socket.getsockname()[1])
    stream.on("data", lambda chunk: events.append(("data", chunk)))
    stream.on("secure", lambda: events.append("secure"))
    stream.on("error", lambda exc: events.append(("error", exc)))
    upgrade = _UpgradeAsTheReaderWakes(stream, server_ctx)
    with trio.fail_after(10):
        async with stream:
            peer = await listeners[0].accept()
            tls = trio.SSLStream(peer, client_ctx, server_hostname="localhost")
            await trio.testing.wait_all_tasks_blocked()  # the reader waits in epoll
            trio.lowlevel.add_instrument(upgrade)
            try:
                await tls.do_handshake()  # its ClientHello wakes the reader
            finally:
                trio.lowlevel.remove_instrument(upgrade)
            await tls.send_all(b"secret")
            while not any(event == ("data", b"secret") for event in events):
                await trio.testing.wait_all_tasks_blocked()
            stream.destroy()
        await tls.aclose()
        await listeners[0].aclose()
    assert upgrade.fired
    assert events == ["secure", ("data", b"secret")]


@pytest.mark.parametrize("written_after", [False, True], ids=["nothing_after", "bytes_after"])
async def test_drain_waits_for_the_plaintext_queued_before_set_secure(written_after: bool) -> None:
    """set_secure() while the writer was in the middle of a large send: the
    'drain' came as that send ended, with the plaintext queued behind it
    still unsent. It comes once every byte written before it has gone out:
    before 'secure' when nothing was written after set_secure(), after the
    handshake (which the later bytes wait for) otherwise."""
    server_ctx, client_ctx = _tls_contexts()
    big, tail = b"p" * (8 << 20), b"PLAIN-TAIL"
    events: list[Any] = []
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    stream = net.create_connection(listeners[0].socket.getsockname()[1])
    stream.on("drain", lambda: events.append(("drain", stream.write_queue_size)))
    stream.on("secure", lambda: events.append("secure"))
    stream.on("data", lambda chunk: events.append(("data", chunk)))
    connected = trio.Event()
    stream.on("connect", connected.set)
    with trio.fail_after(20):
        async with stream:
            peer = await listeners[0].accept()
            await connected.wait()
            assert stream.write(big) is False
            stream.write(tail)
            await trio.testing.wait_all_tasks_blocked()  # the writer waits in the big send
            stream.set_secure(client_ctx, server_hostname="localhost")
            if written_after:
                stream.write(b"sealed")
            received = b""
            while len(received) < len(big) + len(tail):  # not into the ClientHello
                received += await peer.receive_some(
                    min(1 << 20, len(big) + len(tail) - len(received))
                )
            assert received == big + tail
            tls = trio.SSLStream(peer, server_ctx, server_side=True)
            await tls.do_handshake()
            if written_after:
                assert await tls.receive_some(100) == b"sealed"
            await tls.send_all(b"bye")
            while ("data", b"bye") not in events:
                await trio.testing.wait_all_tasks_blocked()
            stream.destroy()
        await peer.aclose()
        await listeners[0].aclose()
    if written_after:
        assert events == ["secure", ("drain", 0), ("data", b"bye")]
    else:
        assert events == [("drain", 0), "secure", ("data", b"bye")]


async def test_drain_in_an_async_drain_listener_raises_instead_of_hanging() -> None:
    """An async 'drain' listener that wrote more than went out at once, then
    awaited drain(): the writer was waiting for that listener, so drain()
    never returned. It now raises StreamStateError at once; with nothing to
    wait for, it returns."""
    results: list[Any] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        stream = net.create_connection(listener.getsockname()[1])

        async def on_drain() -> None:
            await stream.drain()  # nothing queued, nothing owed: returns
            results.append("drained at once")
            stream.write(b"y" * (8 << 20))  # more than the kernel takes now
            try:
                await stream.drain()
            except net.StreamStateError as exc:
                results.append(exc)
            stream.destroy()

        stream.once("drain", on_drain)
        stream.on("connect", lambda: stream.write(b"x" * (1 << 20)))
        with trio.fail_after(10):
            async with stream:
                peer, _ = await trio.to_thread.run_sync(listener.accept)
        peer.close()
    assert results[0] == "drained at once"
    assert isinstance(results[1], net.StreamStateError)
    assert "async 'drain' listener" in str(results[1])


async def test_a_reconnect_does_not_decode_the_last_connections_half_character() -> None:
    """destroy() while half a UTF-8 character was received, then connect()
    again from 'close': the new connection's first 'data' began with U+FFFD
    (the old decoder's bytes went on into the new connection)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    chunks: list[Any] = []
    closes: list[bool] = []
    first_closed = trio.Event()
    stream = net.create_connection(port, allow_half_open=False)
    stream.set_encoding("utf8")
    stream.on("data", chunks.append)

    def on_close(had_error: bool) -> None:
        closes.append(had_error)
        if len(closes) == 1:
            first_closed.set()
            stream.connect(port)

    stream.on("close", on_close)
    with trio.fail_after(10):
        async with stream:
            first = await listeners[0].accept()
            await first.send_all(b"\xe2\x82")  # half a euro sign: no 'data' yet
            while stream.bytes_read < 2:  # the reader has the two bytes
                await trio.testing.wait_all_tasks_blocked()
            stream.destroy()
            await first_closed.wait()
            second = await listeners[0].accept()
            await second.send_all(b"A")
            await second.send_eof()
            await first.aclose()
        await second.aclose()
    await listeners[0].aclose()
    assert chunks == ["A"]
    assert closes == [False, False]


async def test_set_secure_while_the_reader_spins_after_a_bulk_read() -> None:
    """A bulk read makes the next read yield and try again (no cancel scope
    around it on a quiet read): set_secure() during those yields must keep
    the peer's ClientHello for the handshake, not deliver it as 'data'."""
    server_ctx, client_ctx = _tls_contexts()
    events: list[Any] = []
    secret_came = trio.Event()

    def on_data(chunk: bytes) -> None:
        events.append(("data", len(chunk)))
        if chunk == b"secret":
            secret_came.set()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    stream = net.create_connection(listeners[0].socket.getsockname()[1])
    stream.on("data", on_data)
    stream.on("secure", lambda: events.append("secure"))
    with trio.fail_after(10):
        async with stream:
            peer = await listeners[0].accept()
            await trio.testing.wait_all_tasks_blocked()
            await peer.send_all(b"B" * 20000)  # a bulk read: the next read spins
            while stream.bytes_read < 20000:
                await trio.lowlevel.checkpoint()
            stream.set_secure(server_ctx, server_side=True)  # the reader is spinning
            tls = trio.SSLStream(peer, client_ctx, server_hostname="localhost")
            await tls.do_handshake()
            await tls.send_all(b"secret")
            await secret_came.wait()
            stream.destroy()
        await trio.aclose_forcefully(tls)
        await listeners[0].aclose()
    assert events == [("data", 20000), "secure", ("data", 6)]


async def test_closing_stream_socket_after_end_ends_the_reading() -> None:
    """end(), then the user closes ``stream.socket``: the read that meets the
    closed socket ends the reading (as it always did), it does not start
    again at once, forever, without a schedule point."""
    events: list[Any] = []
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    stream = net.create_connection(listeners[0].socket.getsockname()[1])
    stream.on("data", lambda chunk: events.append(("data", chunk)))
    stream.on("close", lambda had_error: events.append(("close", had_error)))
    with trio.fail_after(10):
        async with stream:
            peer = await listeners[0].accept()
            await trio.testing.wait_all_tasks_blocked()
            stream.end()
            stream.socket.close()
            await trio.sleep(0.1)  # other tasks still run
            stream.destroy()
        await peer.aclose()
        await listeners[0].aclose()
    assert events == [("close", False)]


@pytest.mark.parametrize("closed", [False, True], ids=["broken", "closed"])
async def test_a_data_listener_raising_trios_resource_errors_is_the_listeners(
    closed: bool,
) -> None:
    """A 'data' listener that raises trio.BrokenResourceError or
    ClosedResourceError (a memory channel whose other end is gone): the
    block raises it, as any listener's exception; the socket did not fail."""
    events: list[Any] = []
    send, receive = trio.open_memory_channel[bytes](10)
    if closed:
        send.close()
    else:
        receive.close()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    stream = net.create_connection(listeners[0].socket.getsockname()[1])
    stream.on("data", send.send_nowait)
    stream.on("error", lambda exc: events.append(("error", exc)))
    stream.on("close", lambda had_error: events.append(("close", had_error)))
    expected = trio.ClosedResourceError if closed else trio.BrokenResourceError
    with trio.fail_after(10), pytest.raises(expected):
        async with stream:
            peer = await listeners[0].accept()
            await trio.testing.wait_all_tasks_blocked()
            await peer.send_all(b"x")
            await trio.sleep_forever()
    await peer.aclose()
    await listeners[0].aclose()
    assert events == [("close", False)]


# -- leaving a client block while it is cancelled (a review of a faster exit) -------------


async def test_a_close_listener_raising_while_the_finished_block_is_cancelled_is_raised() -> None:
    """The body is over, the connection open; the enclosing scope is
    cancelled while the block waits for 'close', and the 'close' listener
    raises: the exception leaves the block (a listener's is never swallowed)."""
    ours, _peer = trio.testing.memory_stream_pair()
    stream = net.Stream.wrap(ours)

    def on_close(had_error: bool) -> None:
        raise ValueError("from 'close'")

    stream.on("close", on_close)
    raised = pytest.RaisesGroup(ValueError, allow_unwrapped=True, flatten_subgroups=True)
    with raised, trio.CancelScope() as outer:

        async def cancel_once_blocked() -> None:
            await trio.testing.wait_all_tasks_blocked()
            outer.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_once_blocked)
            async with stream:
                pass  # the peer never ends: the block waits


async def _listening() -> trio.socket.SocketType:
    """A raw listening socket on 127.0.0.1 that accepts nothing by itself."""
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(100)
    return listener


def _reconnecting_stream(port: int, closes: list[bool]) -> net.Stream:
    """A stream whose 'close' listener reconnects (Node's idiom), at most 50 times."""
    stream = net.create_connection(port)

    def on_close(had_error: bool) -> None:
        closes.append(had_error)
        if len(closes) < 50:  # bounded: a test that fails still ends
            stream.connect(port)

    stream.on("close", on_close)
    return stream


async def test_a_reconnecting_close_listener_ends_when_the_finished_block_is_cancelled() -> None:
    listener = await _listening()
    closes: list[bool] = []
    stream = _reconnecting_stream(listener.getsockname()[1], closes)
    stream.on("data", lambda data: None)
    # connect() from 'close' once the block exits: refused, and that leaves the block
    refused = pytest.RaisesGroup(net.StreamStateError, allow_unwrapped=True, flatten_subgroups=True)
    try:
        with trio.fail_after(10), trio.CancelScope() as outer, refused:

            async def cancel_soon() -> None:
                await trio.sleep(0.2)
                outer.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_soon)
                async with stream:
                    pass
    finally:
        listener.close()
    assert len(closes) <= 2


async def test_a_reconnecting_close_listener_ends_when_a_listener_fails_after_the_body() -> None:
    listener = await _listening()
    closes: list[bool] = []
    stream = _reconnecting_stream(listener.getsockname()[1], closes)

    def on_data(data: bytes) -> None:
        raise KeyError("from 'data'")

    stream.on("data", on_data)

    async def peer() -> None:
        sock, _ = await listener.accept()
        with sock:
            await sock.send(b"x")
            await trio.sleep_forever()

    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer)
                with pytest.raises(KeyError):
                    async with stream:
                        pass
                nursery.cancel_scope.cancel()
    finally:
        listener.close()
    assert len(closes) <= 2
