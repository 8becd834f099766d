"""``send_file()``: a file's bytes in order with the writes, over loopback
TCP, a UNIX socket, and TLS (``ssl=`` and after ``set_secure()``).

The peer is a raw Trio socket (or a trio_netstream server for TLS), so
what arrives is compared byte for byte (by SHA-256) with the file's slice
framed by the writes made before and after. ``os.sendfile`` is wrapped
(the real one still runs) to check that plaintext sockets use it and TLS
does not.
"""

from __future__ import annotations

import gc
import hashlib
import io
import os
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from conftest import STREAM_EVENTS, Recorder
from netstream_testing import KiB, MiB, open_fds, rss, sha
from trio.testing import wait_all_tasks_blocked

import trio_netstream as net
from trio_netstream import StreamStateError

LIMIT = 30  # seconds: the large files move over real sockets


# -- helpers --------------------------------------------------------------------------


def make_file(path: Path, size: int) -> Path:
    """A file of *size* random bytes (made without holding it in memory)."""
    with open(path, "wb") as out:
        left = size
        while left:
            piece = os.urandom(min(left, MiB))
            out.write(piece)
            left -= len(piece)
    return path


def size_of(path: Path) -> int:
    return path.stat().st_size


def content(path: Path) -> bytes:
    return path.read_bytes()


def opened(path: Path, mode: str) -> Any:
    """``open()``, for the async tests (the files are small and local)."""
    return open(path, mode)


def slice_sha(path: Path, offset: int, count: int | None, before: bytes, after: bytes) -> str:
    """The SHA-256 of *before* + the file's slice + *after*."""
    digest = hashlib.sha256(before)
    with open(path, "rb") as source:
        source.seek(offset)
        left = os.path.getsize(path) - offset if count is None else count
        while left:
            piece = source.read(min(left, MiB))
            assert piece
            digest.update(piece)
            left -= len(piece)
    digest.update(after)
    return digest.hexdigest()


class Received:
    """What a raw peer read: its SHA-256 and size, without keeping the bytes."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.size = 0
        self.head = b""

    def add(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        if len(self.head) < 64:
            self.head += chunk[: 64 - len(self.head)]
        self.size += len(chunk)

    @property
    def sha(self) -> str:
        return self.digest.hexdigest()


async def read_all(peer: trio.SocketStream, received: Received, size: int = 64 * KiB) -> None:
    """Read to EOF, then close (so that the stream's block may end)."""
    while chunk := await peer.receive_some(size):
        received.add(chunk)
    await peer.aclose()


@pytest.fixture(params=["tcp", "unix"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def raw_peer(kind: str, unix_path: str) -> AsyncIterator[tuple[Any, trio.SocketListener]]:
    """A raw Trio listener on loopback TCP or a UNIX path, and the arguments
    of ``create_connection`` that reach it."""
    family = socket.AF_INET if kind == "tcp" else socket.AF_UNIX
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    if kind == "tcp":
        await sock.bind(("127.0.0.1", 0))
        target: tuple[Any, ...] = (sock.getsockname()[1],)
    else:
        await sock.bind(unix_path)
        target = (unix_path,)
    sock.listen(4)
    listener = trio.SocketListener(sock)
    try:
        yield target, listener
    finally:
        await listener.aclose()


class SendfileCalls:
    """``os.sendfile``, wrapped: the real one runs, the calls are counted."""

    def __init__(self) -> None:
        self.calls = 0
        self.bytes = 0


@pytest.fixture
def sendfile_calls(monkeypatch: pytest.MonkeyPatch) -> SendfileCalls:
    tally = SendfileCalls()
    real = os.sendfile

    def counting(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        tally.calls += 1
        sent = real(out_fd, in_fd, offset, count)
        tally.bytes += sent
        return sent

    monkeypatch.setattr(os, "sendfile", counting)
    return tally


@pytest.fixture
def small_file(tmp_path: Path) -> Path:
    return make_file(tmp_path / "small.bin", 100 * KiB + 7)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = make_file(tmp_path_factory.mktemp("big") / "big.bin", 64 * MiB)
    yield path
    path.unlink()


def descriptors() -> int:
    """The process's open descriptors, once garbage has been collected."""
    gc.collect()
    return open_fds()


# -- plaintext: ranges, ordering, counting ------------------------------------------------


@pytest.mark.parametrize(
    ("size", "offset", "count"),
    [
        (100 * KiB + 7, 0, None),
        (100 * KiB + 7, 50 * KiB + 3, None),
        (100 * KiB + 7, 1000, 12345),
        (100 * KiB + 7, 0, 100 * KiB + 7),  # exactly to the end
        (100 * KiB + 7, 77, 0),  # nothing
        (100 * KiB + 7, 100 * KiB + 7, None),  # from the end: nothing
        (5 * MiB + 1, 0, None),  # several pieces of os.sendfile
        (5 * MiB + 1, 3, 4 * MiB),
    ],
)
async def test_the_slice_arrives_between_the_writes(
    kind: str,
    unix_path: str,
    tmp_path: Path,
    sendfile_calls: SendfileCalls,
    size: int,
    offset: int,
    count: int | None,
) -> None:
    path = make_file(tmp_path / "f.bin", size)
    expected_size = size - offset if count is None else count
    fds = descriptors()
    with trio.fail_after(LIMIT):
        async with raw_peer(kind, unix_path) as (target, listener):
            received = Received()
            client = net.create_connection(*target)
            log = Recorder(client)
            async with client, trio.open_nursery() as nursery:
                peer = await listener.accept()
                nursery.start_soon(read_all, peer, received)
                await client.drain()  # connected: write() returns True
                assert client.write(b"A") is True
                await client.send_file(path, offset, count)
                assert client.bytes_written == 1 + expected_size
                client.write(b"B")
                client.end()
            await peer.aclose()
    assert received.size == expected_size + 2
    assert received.sha == slice_sha(path, offset, count, b"A", b"B")
    assert log.events == ["connect", "end", ("close", False)]
    assert client.bytes_written == expected_size + 2
    # Plaintext goes through the kernel's sendfile, every byte of it.
    assert sendfile_calls.bytes == expected_size
    assert (sendfile_calls.calls > 0) == (expected_size > 0)
    assert descriptors() <= fds  # the file's, the sockets: all closed


async def test_a_path_like_a_str_and_a_file_object(
    kind: str, unix_path: str, small_file: Path, sendfile_calls: SendfileCalls
) -> None:
    with trio.fail_after(LIMIT), opened(small_file, "rb") as source:
        source.seek(5)
        async with raw_peer(kind, unix_path) as (target, listener):
            received = Received()
            async with net.create_connection(*target) as client, trio.open_nursery() as nursery:
                peer = await listener.accept()
                nursery.start_soon(read_all, peer, received)
                await client.send_file(str(small_file), 0, 10)
                await client.send_file(small_file, 10, 10)
                await client.send_file(source, 20)
                client.end()
            await peer.aclose()
        # The file object is neither closed nor moved.
        assert not source.closed
        assert source.tell() == 5
        assert source.read(3) == content(small_file)[5:8]
    assert received.sha == sha(content(small_file))
    assert sendfile_calls.bytes == size_of(small_file)


async def test_a_write_made_during_the_send_goes_after_the_file(
    kind: str, unix_path: str, big_file: Path, sendfile_calls: SendfileCalls
) -> None:
    """The peer does not read at first: the file is under way (the kernel's
    buffers full) when the body writes; that write queues behind the file,
    returns False (the file's bytes count as queued) and 'drain' follows
    once everything went out."""
    size = size_of(big_file)
    with trio.fail_after(LIMIT):
        async with raw_peer(kind, unix_path) as (target, listener):
            received = Received()
            client = net.create_connection(*target, high_water_mark=16 * KiB)
            log = Recorder(client)
            seen: list[Any] = []
            async with client, trio.open_nursery() as nursery:
                peer = await listener.accept()
                await client.drain()  # connected
                assert client.write(b"A") is True

                async def send() -> None:
                    await client.send_file(big_file)
                    seen.append(("sent", client.write_queue_size))

                nursery.start_soon(send)
                await wait_all_tasks_blocked()
                assert sendfile_calls.calls > 0
                assert 0 < client.write_queue_size <= size
                assert client.bytes_written == 1 + size  # counted at the call
                seen.append(("write B", client.write(b"B")))
                assert log.events == ["connect"]  # no 'drain' before the file is out
                nursery.start_soon(read_all, peer, received)
                await client.drain()
                seen.append(("drained", client.write_queue_size))
                client.end()
            await peer.aclose()
    # send_file() and drain() wake together; "B" may be out already when
    # send_file() returns (the writer goes on).
    assert seen[0] == ("write B", False)
    assert sorted(name for name, _ in seen[1:]) == ["drained", "sent"]
    assert dict(seen)["drained"] == 0
    assert received.size == size + 2
    assert received.sha == slice_sha(big_file, 0, None, b"A", b"B")
    assert log.events == ["connect", "drain", "end", ("close", False)]
    assert client.bytes_written == size + 2


async def test_a_large_file_to_a_slow_reader_is_not_buffered(
    big_file: Path, sendfile_calls: SendfileCalls, unix_path: str
) -> None:
    """64 MiB to a peer that reads slowly: the process's memory does not
    grow by the file (the kernel copies it, a piece at a time)."""
    size = size_of(big_file)
    with trio.fail_after(LIMIT):
        async with raw_peer("tcp", unix_path) as (target, listener):
            received = Received()
            peaks: list[int] = []
            async with net.create_connection(*target) as client, trio.open_nursery() as nursery:
                peer = await listener.accept()
                before = rss()

                async def slow_reader() -> None:
                    while chunk := await peer.receive_some(256 * KiB):
                        received.add(chunk)
                        if received.size % (4 * MiB) < 256 * KiB:
                            peaks.append(rss() - before)
                            await trio.sleep(0.001)
                    await peer.aclose()

                nursery.start_soon(slow_reader)
                await client.send_file(big_file)
                client.end()
            await peer.aclose()
    assert received.size == size
    assert received.sha == slice_sha(big_file, 0, None, b"", b"")
    assert peaks
    assert max(peaks) < 16 * MiB
    assert sendfile_calls.bytes == size


async def test_several_files_and_writes_keep_their_order(
    tmp_path: Path, unix_path: str, sendfile_calls: SendfileCalls
) -> None:
    """Concurrent calls are sent in the order they were made, each after the
    bytes written before it."""
    files = [make_file(tmp_path / f"{i}.bin", (i + 1) * 300 * KiB + i) for i in range(3)]
    with trio.fail_after(LIMIT):
        async with raw_peer("tcp", unix_path) as (target, listener):
            received = Received()
            async with net.create_connection(*target) as client, trio.open_nursery() as nursery:
                peer = await listener.accept()
                for i, path in enumerate(files):
                    client.write(b"<%d>" % i)
                    nursery.start_soon(client.send_file, path)
                    await wait_all_tasks_blocked()  # the call is made, then the next write
                client.write(b"<end>")
                await wait_all_tasks_blocked()
                nursery.start_soon(read_all, peer, received)
                await client.drain()
                client.end()
            await peer.aclose()
    expected = hashlib.sha256()
    for i, path in enumerate(files):
        expected.update(b"<%d>" % i + content(path))
    expected.update(b"<end>")
    assert received.sha == expected.hexdigest()


async def test_send_file_while_connecting_waits_for_the_connection(
    small_file: Path, unix_path: str
) -> None:
    with trio.fail_after(LIMIT):
        async with raw_peer("tcp", unix_path) as (target, listener):
            received = Received()
            client = net.create_connection(*target)
            log = Recorder(client)
            async with client:
                client.write(b"A")
                assert client.ready_state == "opening"
                await client.send_file(small_file)
                client.end()
                peer = await listener.accept()
                await read_all(peer, received)
                await peer.aclose()
    assert received.sha == slice_sha(small_file, 0, None, b"A", b"")
    assert log.events == ["connect", "drain", "end", ("close", False)]


async def test_end_during_the_send_sends_fin_after_the_file(big_file: Path, unix_path: str) -> None:
    with trio.fail_after(LIMIT):
        async with raw_peer("tcp", unix_path) as (target, listener):
            received = Received()
            async with net.create_connection(*target) as client, trio.open_nursery() as nursery:
                peer = await listener.accept()
                nursery.start_soon(client.send_file, big_file)
                await wait_all_tasks_blocked()
                client.end(b"Z")
                assert client.ready_state == "readOnly"
                with pytest.raises(StreamStateError, match="readOnly"):
                    await client.send_file(big_file)
                await read_all(peer, received)
                await peer.aclose()
    assert received.sha == slice_sha(big_file, 0, None, b"", b"Z")


# -- TLS ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


class Sink:
    """A trio_netstream server that hashes what each connection sends."""

    def __init__(self) -> None:
        self.received = Received()
        self.events: list[Any] = []
        self.done = trio.Event()

    def handler(self, stream: net.Stream) -> None:
        log = Recorder(stream, events=(*STREAM_EVENTS, "secure"))
        stream.on("data", self.received.add)
        stream.on("end", stream.end)

        def closed(_: bool) -> None:
            self.events = log.events
            self.done.set()

        stream.on("close", closed)


@pytest.mark.parametrize("where", ["tcp", "unix"])
async def test_tls_from_the_first_byte_sends_by_ordinary_writes(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
    tmp_path: Path,
    unix_path: str,
    sendfile_calls: SendfileCalls,
    where: str,
) -> None:
    server_ctx, client_ctx = tls
    path = make_file(tmp_path / "f.bin", 3 * MiB + 5)
    sink = Sink()
    with trio.fail_after(LIMIT):
        async with net.create_server(sink.handler, ssl=server_ctx) as server:
            if where == "tcp":
                await server.listen(0, "127.0.0.1")
                address = server.address()
                assert isinstance(address, tuple)
                target: tuple[Any, ...] = (address[1],)
            else:
                await server.listen(unix_path)
                target = (unix_path,)
            client = net.create_connection(*target, ssl=client_ctx, server_hostname="localhost")
            log = Recorder(client, events=(*STREAM_EVENTS, "secure"))
            async with client:
                client.write(b"A")
                await client.send_file(path, 1, 2 * MiB)  # waits for the handshake
                client.end(b"B")
            await sink.done.wait()
            server.close()
    assert sink.received.sha == slice_sha(path, 1, 2 * MiB, b"A", b"B")
    assert client.bytes_written == 2 * MiB + 2
    # 'drain' (owed to the write made while connecting) once the file is out too.
    assert log.events == ["connect", "secure", "drain", "end", ("close", False)]
    assert sink.events == ["connect", "secure", "data", "end", ("close", False)]
    assert sendfile_calls.calls == 0  # TLS needs the bytes in user space


async def test_after_a_starttls_upgrade_the_file_goes_through_tls(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
    small_file: Path,
    big_file: Path,
    sendfile_calls: SendfileCalls,
) -> None:
    """A plaintext file before ``set_secure()`` (zero-copy), then the same
    stream upgraded: the file after it is encrypted (no sendfile)."""
    server_ctx, client_ctx = tls
    plain = Received()
    secret = Received()
    done = trio.Event()

    def handler(stream: net.Stream) -> None:
        def on_data(chunk: bytes) -> None:
            if stream.secure:
                secret.add(chunk)
                return
            plain.add(chunk)
            if chunk.endswith(b"STARTTLS\n"):
                stream.write(b"OK\n")
                stream.set_secure(server_ctx)

        stream.on("data", on_data)
        stream.on("end", stream.end)
        stream.on("close", lambda _: done.set())

    with trio.fail_after(LIMIT):
        async with net.create_server(handler) as server:
            await server.listen(0, "127.0.0.1")
            address = server.address()
            assert isinstance(address, tuple)
            client = net.create_connection(address[1])
            log = Recorder(client, events=("connect", "data", "secure", "end", "close"))
            replied = trio.Event()
            client.on("data", lambda chunk: replied.set())
            async with client:
                await client.send_file(small_file)
                assert sendfile_calls.bytes == size_of(small_file)
                client.write(b"STARTTLS\n")
                await replied.wait()
                client.set_secure(client_ctx, server_hostname="localhost")
                client.write(b"A")
                await client.send_file(big_file, 7, 9 * MiB)  # waits for the handshake
                client.end(b"B")
            await done.wait()
            server.close()
    assert plain.sha == slice_sha(small_file, 0, None, b"", b"STARTTLS\n")
    assert secret.sha == slice_sha(big_file, 7, 9 * MiB, b"A", b"B")
    assert sendfile_calls.bytes == size_of(small_file)  # not one byte more
    assert log.events == ["connect", "data", "secure", "end", ("close", False)]


async def test_with_ssl_a_listener_the_handshake_waits_for_cannot_wait(
    tls: tuple[ssl.SSLContext, ssl.SSLContext], small_file: Path
) -> None:
    """An async 'connect' listener that awaited send_file() over ``ssl=``
    would wait forever (the handshake runs after it): it raises, as
    ``drain()`` does, and nothing is sent."""
    server_ctx, client_ctx = tls
    sink = Sink()
    raised: list[BaseException] = []
    with trio.fail_after(LIMIT):
        async with net.create_server(sink.handler, ssl=server_ctx) as server:
            await server.listen(0, "127.0.0.1")
            address = server.address()
            assert isinstance(address, tuple)
            client = net.create_connection(address[1], ssl=client_ctx, server_hostname="localhost")

            async def on_connect() -> None:
                try:
                    await client.send_file(small_file)
                except StreamStateError as exc:
                    raised.append(exc)
                client.end(b"ok")

            client.on("connect", on_connect)
            async with client:
                pass
            await sink.done.wait()
            server.close()
    assert len(raised) == 1
    assert "handshake" in str(raised[0])
    assert sink.received.head == b"ok"
    assert client.bytes_written == 2


# -- misuse ---------------------------------------------------------------------------


async def test_bad_arguments_raise_at_the_call_and_change_nothing(
    kind: str, unix_path: str, small_file: Path, tmp_path: Path
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    fds = descriptors()
    with trio.fail_after(LIMIT):
        async with raw_peer(kind, unix_path) as (target, listener):
            received = Received()
            client = net.create_connection(*target)
            log = Recorder(client)
            async with client:
                peer = await listener.accept()
                await client.drain()
                size = size_of(small_file)
                bad: list[tuple[type[BaseException], Any, dict[str, Any]]] = [
                    (TypeError, 3, {}),
                    (TypeError, None, {}),
                    (TypeError, b"/etc/passwd", {}),
                    (TypeError, small_file, {"offset": "0"}),
                    (TypeError, small_file, {"offset": 1.5}),
                    (TypeError, small_file, {"count": True}),
                    (ValueError, small_file, {"offset": -1}),
                    (ValueError, small_file, {"count": -1}),
                    (ValueError, tmp_path, {}),  # a directory
                    (ValueError, fifo, {}),  # never blocks opening it
                    (ValueError, io.BytesIO(b"x"), {}),  # no descriptor
                    (EOFError, small_file, {"count": size + 1}),
                    (EOFError, small_file, {"offset": size + 1}),
                    (EOFError, small_file, {"offset": 10, "count": size - 9}),
                    (FileNotFoundError, tmp_path / "missing", {}),
                ]
                for error, file, kwargs in bad:
                    with pytest.raises(error):
                        await client.send_file(file, **kwargs)
                with opened(small_file, "r") as text, pytest.raises(ValueError, match="binary"):
                    await client.send_file(text)  # type: ignore[arg-type]
                with opened(tmp_path / "w.bin", "wb") as out, pytest.raises(ValueError):
                    await client.send_file(out)
                with opened(small_file, "rb") as closed:
                    pass
                with pytest.raises(ValueError):
                    await client.send_file(closed)
                assert client.bytes_written == 0
                assert client.write_queue_size == 0
                client.end(b"ok")
                await read_all(peer, received)
                await peer.aclose()
    assert received.head == b"ok"
    assert received.size == 2
    assert log.events == ["connect", "end", ("close", False)]
    assert descriptors() <= fds  # the file's, the sockets: all closed


async def test_after_end_destroy_or_before_connect_it_is_a_state_error(
    small_file: Path, unix_path: str
) -> None:
    unconnected = net.Stream()
    with pytest.raises(StreamStateError, match="closed"):
        await unconnected.send_file(small_file)
    idle = net.create_connection(1)  # never run: waiting would never end
    with pytest.raises(StreamStateError, match="async with"):
        await idle.send_file(small_file)
    with trio.fail_after(LIMIT):
        async with raw_peer("tcp", unix_path) as (target, listener):
            async with net.create_connection(*target) as client:
                peer = await listener.accept()
                await client.drain()  # connected
                client.end()
                with pytest.raises(StreamStateError, match="readOnly"):
                    await client.send_file(small_file)
                await peer.aclose()
            client = net.create_connection(*target)
            log = Recorder(client)
            async with client:
                peer = await listener.accept()
                await client.drain()  # connected
                client.destroy()
                with pytest.raises(StreamStateError, match="closing"):
                    await client.send_file(small_file)
            await peer.aclose()
    assert log.events == ["connect", ("close", False)]


# -- failures and cancellation --------------------------------------------------------


async def test_a_peer_reset_fails_the_send_and_the_stream_once(
    kind: str, unix_path: str, big_file: Path
) -> None:
    fds = descriptors()
    with trio.fail_after(LIMIT):
        async with raw_peer(kind, unix_path) as (target, listener):
            client = net.create_connection(*target)
            log = Recorder(client)
            raised: list[BaseException] = []
            async with client, trio.open_nursery() as nursery:
                peer = await listener.accept()

                async def send() -> None:
                    try:
                        await client.send_file(big_file)
                    except OSError as exc:
                        raised.append(exc)

                nursery.start_soon(send)
                await wait_all_tasks_blocked()
                nursery.start_soon(send)  # queued behind the first
                await wait_all_tasks_blocked()
                await peer.receive_some(64 * KiB)
                if kind == "tcp":  # a reset: SO_LINGER 0
                    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                await peer.aclose()
    # Both calls raise the stream's one error.
    assert len(raised) == 2
    error = raised[0]
    assert raised[1] is error
    assert isinstance(error, (ConnectionResetError, BrokenPipeError))
    assert log.events == ["connect", ("error", error), ("close", True)]
    assert client.write_queue_size == 0
    assert descriptors() <= fds  # the file's, the sockets: all closed


async def test_an_unhandled_failure_is_raised_by_send_file_and_by_the_block(
    big_file: Path, unix_path: str
) -> None:
    """As ``drain()``: raising the error from send_file() does not handle it."""
    raised: list[BaseException] = []
    with trio.fail_after(LIMIT):
        async with raw_peer("tcp", unix_path) as (target, listener):
            with pytest.raises((ConnectionResetError, BrokenPipeError)) as block_error:
                async with net.create_connection(*target) as client:
                    peer = await listener.accept()
                    async with trio.open_nursery() as nursery:

                        async def send() -> None:
                            try:
                                await client.send_file(big_file)
                            except OSError as exc:
                                raised.append(exc)

                        nursery.start_soon(send)
                        await wait_all_tasks_blocked()
                        peer.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        await peer.aclose()
    assert raised == [block_error.value]


async def test_destroy_during_the_send(big_file: Path, unix_path: str) -> None:
    with trio.fail_after(LIMIT):
        async with raw_peer("tcp", unix_path) as (target, listener):
            client = net.create_connection(*target)
            log = Recorder(client)
            raised: list[BaseException] = []
            async with client, trio.open_nursery() as nursery:
                peer = await listener.accept()

                async def send() -> None:
                    with pytest.raises(StreamStateError, match="destroyed") as info:
                        await client.send_file(big_file)
                    raised.append(info.value)

                nursery.start_soon(send)
                await wait_all_tasks_blocked()
                client.destroy()
            await peer.aclose()
    assert len(raised) == 1
    assert log.events == ["connect", ("close", False)]


async def test_cancelled_mid_file_destroys_the_stream(big_file: Path, unix_path: str) -> None:
    fds = descriptors()
    with trio.fail_after(LIMIT):
        async with raw_peer("tcp", unix_path) as (target, listener):
            client = net.create_connection(*target)
            log = Recorder(client)
            async with client:
                peer = await listener.accept()
                with trio.move_on_after(0.2) as scope:
                    await client.send_file(big_file)  # the peer does not read
                assert scope.cancelled_caught
                assert client.ready_state == "closed"
                with pytest.raises(StreamStateError):
                    client.write(b"more")
            received = Received()
            await read_all(peer, received)  # the part that went, then EOF
            await peer.aclose()
    assert 0 < received.size < size_of(big_file)
    assert log.events == ["connect", ("close", False)]
    assert descriptors() <= fds  # the file's, the sockets: all closed


async def test_cancelled_while_waiting_its_turn_withdraws_the_file(
    big_file: Path, small_file: Path, unix_path: str
) -> None:
    """A call still queued behind another file is withdrawn: nothing of its
    file is sent or counted, the bytes around it keep their order."""
    size = size_of(big_file)
    with trio.fail_after(LIMIT):
        async with raw_peer("tcp", unix_path) as (target, listener):
            received = Received()
            client = net.create_connection(*target)
            log = Recorder(client)
            async with client, trio.open_nursery() as nursery:
                peer = await listener.accept()
                await client.drain()
                nursery.start_soon(client.send_file, big_file)
                await wait_all_tasks_blocked()
                client.write(b"A")
                with trio.CancelScope() as scope:
                    nursery.start_soon(cancel_soon, scope)
                    await client.send_file(small_file)
                assert scope.cancelled_caught
                assert client.bytes_written == size + 1
                client.write(b"B")
                nursery.start_soon(read_all, peer, received)
                await client.drain()
                client.end()
            await peer.aclose()
    assert received.sha == slice_sha(big_file, 0, None, b"", b"AB")
    assert log.events == ["connect", "drain", "end", ("close", False)]


async def cancel_soon(scope: trio.CancelScope) -> None:
    await wait_all_tasks_blocked()
    scope.cancel()


async def test_a_file_that_shrinks_during_the_send_fails_the_stream(
    tmp_path: Path, unix_path: str
) -> None:
    path = make_file(tmp_path / "shrinking.bin", 16 * MiB)
    with trio.fail_after(LIMIT):
        async with raw_peer("tcp", unix_path) as (target, listener):
            client = net.create_connection(*target)
            log = Recorder(client)
            raised: list[BaseException] = []
            async with client, trio.open_nursery() as nursery:
                peer = await listener.accept()

                async def send() -> None:
                    with pytest.raises(EOFError, match="shrank") as info:
                        await client.send_file(path)
                    raised.append(info.value)

                nursery.start_soon(send)
                await wait_all_tasks_blocked()
                os.truncate(path, 1 * MiB)
                received = Received()
                await read_all(peer, received)
                await peer.aclose()
    assert received.size <= 16 * MiB
    assert log.events == ["connect", ("error", raised[0]), ("close", True)]


async def test_the_idle_timeout_sees_the_file_going_out(big_file: Path, unix_path: str) -> None:
    """A slow but steady transfer is activity: no 'timeout' while it moves."""
    with trio.fail_after(LIMIT):
        async with raw_peer("tcp", unix_path) as (target, listener):
            received = Received()
            client = net.create_connection(*target, timeout=1000)
            log = Recorder(client)
            async with client, trio.open_nursery() as nursery:
                peer = await listener.accept()

                async def steady_reader() -> None:
                    # About 20 MiB/s: the file takes longer than the period.
                    while chunk := await peer.receive_some(512 * KiB):
                        received.add(chunk)
                        await trio.sleep(0.025)

                nursery.start_soon(steady_reader)
                await client.send_file(big_file, 0, 24 * MiB)
                client.destroy()
                nursery.cancel_scope.cancel()
            await peer.aclose()
    assert log.events == ["connect", ("close", False)]


# -- other transports and where a call would wait for itself ------------------------


async def test_a_wrapped_trio_stream_gets_the_file_by_pieces(
    small_file: Path, sendfile_calls: SendfileCalls
) -> None:
    """Over an in-memory stream there is no socket: the file is read and
    written in pieces, in order, with exact accounting."""
    near, far = trio.testing.memory_stream_pair()
    stream = net.Stream.wrap(near)
    log = Recorder(stream)
    received = Received()
    with trio.fail_after(LIMIT):
        async with stream, trio.open_nursery() as nursery:

            async def read_far() -> None:
                while chunk := await far.receive_some():
                    received.add(chunk)
                await far.aclose()

            nursery.start_soon(read_far)
            stream.write(b"A")
            await stream.send_file(small_file, 3)
            assert stream.bytes_written == 1 + size_of(small_file) - 3
            stream.end(b"B")
    assert received.sha == slice_sha(small_file, 3, None, b"A", b"B")
    assert sendfile_calls.calls == 0
    assert log.events == ["connect", "end", ("close", False)]


async def test_in_an_async_drain_listener_it_cannot_wait(small_file: Path, unix_path: str) -> None:
    """The writer awaits its 'drain' listener, and would send the file only
    after it returned: the call raises instead of waiting forever."""
    raised: list[BaseException] = []
    with trio.fail_after(LIMIT):
        async with raw_peer("tcp", unix_path) as (target, listener):
            received = Received()
            client = net.create_connection(*target)

            async def on_drain() -> None:
                with pytest.raises(StreamStateError, match="'drain' listener") as info:
                    await client.send_file(small_file)
                raised.append(info.value)
                client.end(b"!")

            client.on("drain", on_drain)
            async with client:
                assert client.write(b"A") is False  # connecting: 'drain' follows
                peer = await listener.accept()
                await read_all(peer, received)
    assert len(raised) == 1
    assert received.head == b"A!"
    assert client.bytes_written == 2


async def test_set_secure_during_a_plaintext_file_waits_for_it(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
    big_file: Path,
    small_file: Path,
    unix_path: str,
    sendfile_calls: SendfileCalls,
) -> None:
    """``set_secure()`` while a file is going out in plaintext: the file and
    the plaintext written after it go first (zero-copy), then the handshake,
    then what was written and sent after the call, encrypted. The peer is
    raw Trio: it reads exactly the plaintext, then wraps the same socket in
    TLS."""
    server_ctx, client_ctx = tls
    size = size_of(big_file)
    plain = Received()
    secret = Received()
    with trio.fail_after(LIMIT):
        async with raw_peer("tcp", unix_path) as (target, listener):
            client = net.create_connection(*target)
            log = Recorder(client, events=(*STREAM_EVENTS, "secure"))
            async with client, trio.open_nursery() as nursery:
                peer = await listener.accept()
                await client.drain()
                nursery.start_soon(client.send_file, big_file)
                await wait_all_tasks_blocked()  # mid-file: the peer does not read yet
                client.write(b"STARTTLS\n")
                client.set_secure(client_ctx, server_hostname="localhost")
                client.write(b"secret:")
                nursery.start_soon(client.send_file, small_file)
                await wait_all_tasks_blocked()
                client.end(b"!")
                left = size + len(b"STARTTLS\n")
                while left:
                    chunk = await peer.receive_some(min(left, 256 * 1024))
                    plain.add(chunk)
                    left -= len(chunk)
                tls_peer = trio.SSLStream(peer, server_ctx, server_side=True)
                while chunk := await tls_peer.receive_some():
                    secret.add(chunk)
                await tls_peer.aclose()
    assert plain.sha == slice_sha(big_file, 0, None, b"", b"STARTTLS\n")
    assert secret.sha == slice_sha(small_file, 0, None, b"secret:", b"!")
    assert sendfile_calls.bytes == size
    assert log.events == ["connect", "secure", "end", ("close", False)]
