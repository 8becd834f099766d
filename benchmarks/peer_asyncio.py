"""The asyncio roles: Protocol (callbacks, ``pause_writing``) and Streams
(``StreamReader`` / ``StreamWriter``, ``await drain()``).

asyncio takes no TLS session to resume (``create_connection`` and
``open_connection`` have no such option). The resumption row gives it one
the only way there is: an ``ssl.SSLContext`` subclass whose ``wrap_bio``
(which asyncio's SSL protocol calls to make its ``SSLObject``) passes the
session, as ``wrap_bio``'s own ``session`` parameter allows. Each run
checks that every timed handshake did resume (``session_reused``)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench_spec import BACKLOG, HOST, IDLE_CONNECT_BATCH, TLS_NAME, BenchError
from peer_common import (
    HTTP_CLOSE,
    HTTP_KEEP_ALIVE,
    Announcer,
    check_echoed,
    check_lines,
    check_resumed,
    client_ssl,
    hold_then_exit,
    http_keeps_alive,
    http_replies,
    latency_summary,
    result,
    say,
    server_ssl,
)


def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _SessionContext(ssl.SSLContext):
    """A client context that resumes :attr:`next_session` (if set) in each
    ``SSLObject`` it makes."""

    next_session: ssl.SSLSession | None = None

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        if session is None:
            session = self.next_session
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)


def _handshake_context(cfg: dict[str, Any]) -> ssl.SSLContext:
    """The client context of the handshake rows: one for all the connections
    (a session resumes only in the context it came from)."""
    return client_ssl(cfg["tls"], _SessionContext if cfg["resume"] else ssl.SSLContext)


async def _handshakes(
    cfg: dict[str, Any], one: Callable[[ssl.SSLContext], Awaitable[tuple[bool, ssl.SSLSession]]]
) -> None:
    """Time *one* (a connection: handshake, echo, close; it returns whether
    it resumed and its session) ``count`` times, each resuming the previous
    connection's session in the resumption row."""
    count: int = cfg["count"]
    resume: bool = cfg["resume"]
    context = _handshake_context(cfg)
    resumed = 0
    if resume:
        assert isinstance(context, _SessionContext)
        _, context.next_session = await one(context)  # untimed: the first session to resume
    start = time.perf_counter()
    for _ in range(count):
        reused, session = await one(context)
        resumed += reused
        if isinstance(context, _SessionContext):
            context.next_session = session  # TLS 1.3: its tickets came before the echo
    elapsed = time.perf_counter() - start
    check_resumed(resume, resumed, count)
    result(hps=count / elapsed, resumed=resumed)


def _session_of(ssl_object: object) -> tuple[bool, ssl.SSLSession]:
    assert isinstance(ssl_object, ssl.SSLObject)
    session = ssl_object.session
    assert session is not None
    return ssl_object.session_reused, session


# -- asyncio Protocol ------------------------------------------------------------


async def protocol_server(cfg: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    announce = Announcer(cfg["connections"])
    total: int = cfg["bytes"]
    sink = cfg["mode"] == "sink"

    class Server(asyncio.Protocol):
        transport: asyncio.Transport
        received = 0

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport
            if cfg["no_delay"]:
                _nodelay(transport)
            announce()

        def data_received(self, data: bytes) -> None:
            if sink:
                before, self.received = self.received, self.received + len(data)
                if before < total <= self.received:
                    self.transport.write(b"k")
            else:
                self.transport.write(data)

        def eof_received(self) -> bool:
            return False  # close the transport

    factory = _protocol_file_sender(cfg) if cfg["mode"] == "sendfile" else Server
    if cfg["mode"] == "http":
        factory = _HttpServer
    server = await loop.create_server(
        factory,
        HOST,
        0,
        backlog=BACKLOG,
        ssl=server_ssl(cfg["tls"]) if cfg["tls"] else None,
    )
    async with server:
        say(f"READY {server.sockets[0].getsockname()[1]}")
        await server.serve_forever()


def _protocol_file_sender(cfg: dict[str, Any]) -> type[asyncio.Protocol]:
    """The sendfile rows' server: ``loop.sendfile(transport, file)`` (by
    ``"api"``), or ``chunk`` reads written while not ``pause_writing``; the
    receiver's answer closes the transport."""
    loop = asyncio.get_running_loop()
    chunk: int = cfg["chunk"]
    by_api = cfg["by"] == "api"

    class FileSender(asyncio.Protocol):
        transport: asyncio.Transport
        paused = False
        sending: asyncio.Task[int] | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport
            self.file = open(cfg["file"], "rb", buffering=0)  # noqa: SIM115 - closed when lost
            if by_api:
                self.sending = loop.create_task(loop.sendfile(transport, self.file))
            else:
                self.pump()

        def pump(self) -> None:
            while not self.paused and (data := self.file.read(chunk)):
                self.transport.write(data)

        def pause_writing(self) -> None:
            self.paused = True

        def resume_writing(self) -> None:
            self.paused = False
            if not by_api:
                self.pump()

        def data_received(self, data: bytes) -> None:
            self.transport.close()  # every byte came

        def connection_lost(self, exc: Exception | None) -> None:
            self.file.close()

    return FileSender


class _HttpServer(asyncio.Protocol):
    """The http rows' server: a ``bytearray`` filled by ``data_received``, the
    requests it completed answered in one ``write()``; ``close()`` after a
    ``Connection: close`` (later requests unread), or at the client's end."""

    transport: asyncio.Transport
    closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = bytearray()
        _nodelay(transport)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.buffer.extend(data)
        replies, self.closing = http_replies(self.buffer)
        if replies:
            self.transport.write(replies)
        if self.closing:
            self.transport.close()  # once the replies are sent

    def eof_received(self) -> bool:
        return False  # close the transport


class _Relay(asyncio.Protocol):
    """One side of the asyncio Protocol proxy: what it receives is written
    to its peer's transport; the peer's write buffer full pauses its reading."""

    transport: asyncio.Transport
    peer: _Relay
    ended = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.peer.transport.write(data)

    def eof_received(self) -> bool:
        self.ended = True
        self.peer.transport.write_eof()
        if self.peer.ended:
            self.transport.close()
            self.peer.transport.close()
        return True  # half-open until the peer's end

    def pause_writing(self) -> None:
        self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if hasattr(self, "peer"):
            self.peer.transport.close()


async def protocol_proxy(cfg: dict[str, Any]) -> None:
    """The proxy row's proxy: per connection, one to ``target``; the client's
    reading waits for it."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    class Accepted(_Relay):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            transport.pause_reading()  # type: ignore[attr-defined]
            task = loop.create_task(self.connect())
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        async def connect(self) -> None:
            _, upstream = await loop.create_connection(_Relay, HOST, cfg["target"])
            upstream.peer, self.peer = self, upstream
            self.transport.resume_reading()

    server = await loop.create_server(Accepted, HOST, 0, backlog=BACKLOG)
    async with server:
        say(f"READY {server.sockets[0].getsockname()[1]}")
        await server.serve_forever()


async def protocol_client(cfg: dict[str, Any]) -> None:
    kind: str = cfg["kind"]
    if kind not in _PROTOCOL_KINDS:
        raise ValueError(f"unknown client kind {kind!r}")
    await _PROTOCOL_KINDS[kind](cfg["port"], cfg)


async def _protocol_bulk(port: int, cfg: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    chunk = b"x" * cfg["chunk"]
    writes = cfg["bytes"] // cfg["chunk"]
    acked: asyncio.Future[float] = loop.create_future()
    closed: asyncio.Future[None] = loop.create_future()

    class Bulk(asyncio.Protocol):
        transport: asyncio.Transport
        sent = 0
        paused = False

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport
            self.pump()

        def pump(self) -> None:
            while not self.paused and self.sent < writes:
                self.sent += 1
                self.transport.write(chunk)

        def pause_writing(self) -> None:
            self.paused = True

        def resume_writing(self) -> None:
            self.paused = False
            self.pump()

        def data_received(self, data: bytes) -> None:
            if not acked.done():
                acked.set_result(time.perf_counter())
            self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            if not closed.done():
                closed.set_result(None)

    start = time.perf_counter()
    await loop.create_connection(
        Bulk, HOST, port, ssl=client_ssl(cfg["tls"]) if cfg["tls"] else None
    )
    elapsed = await acked - start
    await closed
    result(seconds=elapsed, mbps=cfg["bytes"] / elapsed / 1e6)


async def _protocol_pingpong(port: int, cfg: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    message = b"p" * cfg["size"]
    rounds: int = cfg["rounds"]
    latencies: list[int] = []
    finished: asyncio.Future[float] = loop.create_future()

    class PingPong(asyncio.Protocol):
        transport: asyncio.Transport
        pending = 0
        sent_at = 0

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport
            _nodelay(transport)

        def send(self) -> None:
            self.sent_at = time.perf_counter_ns()
            self.transport.write(message)

        def data_received(self, data: bytes) -> None:
            self.pending += len(data)
            if self.pending < len(message):
                return
            self.pending -= len(message)
            latencies.append(time.perf_counter_ns() - self.sent_at)
            if len(latencies) < rounds:
                self.send()
            else:
                finished.set_result(time.perf_counter())
                self.transport.close()

    _, protocol = await loop.create_connection(PingPong, HOST, port)
    start = time.perf_counter()
    protocol.send()
    elapsed = await finished - start
    result(**latency_summary(rounds, elapsed, latencies))


async def _protocol_churn(port: int, cfg: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    count: int = cfg["count"]
    if cfg["style"] == "destroy":
        await _protocol_churn_destroy(port, count)
        return

    class Churn(asyncio.Protocol):
        transport: asyncio.Transport

        def __init__(self) -> None:
            self.closed: asyncio.Future[None] = loop.create_future()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport
            transport.write(b"x")

        def data_received(self, data: bytes) -> None:
            self.transport.write_eof()

        def eof_received(self) -> bool:
            return False

        def connection_lost(self, exc: Exception | None) -> None:
            self.closed.set_result(None)

    start = time.perf_counter()
    for _ in range(count):
        _, churn = await loop.create_connection(Churn, HOST, port)
        await churn.closed
    result(cps=count / (time.perf_counter() - start))


async def _protocol_churn_destroy(port: int, count: int) -> None:
    """The counterpart of the Node-style churn client: write in
    ``connection_made``, ``transport.close()`` on the echo (its write buffer
    is empty: the socket closes at once, as Node's ``destroy()`` does; no
    wait for the server's end), the next connection at ``connection_lost``."""
    loop = asyncio.get_running_loop()
    echoed = 0

    class NodeChurn(asyncio.Protocol):
        transport: asyncio.Transport

        def __init__(self) -> None:
            self.closed: asyncio.Future[None] = loop.create_future()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport
            transport.write(b"x")

        def data_received(self, data: bytes) -> None:
            nonlocal echoed
            echoed += data == b"x"
            self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            self.closed.set_result(None)

    start = time.perf_counter()
    for _ in range(count):
        _, churn = await loop.create_connection(NodeChurn, HOST, port)
        await churn.closed
    elapsed = time.perf_counter() - start
    check_echoed(echoed, count)
    result(cps=count / elapsed)


async def _protocol_idle(port: int, cfg: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    connections: int = cfg["connections"]
    held: list[asyncio.BaseTransport] = []

    async def open_one() -> None:
        transport, _ = await loop.create_connection(asyncio.Protocol, HOST, port)
        held.append(transport)

    for done in range(0, connections, IDLE_CONNECT_BATCH):
        count = min(IDLE_CONNECT_BATCH, connections - done)
        await asyncio.gather(*(open_one() for _ in range(count)))
    say(f"CONNECTED {len(held)}")
    hold_then_exit()


async def _protocol_handshake(port: int, cfg: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()

    class Handshake(asyncio.Protocol):
        transport: asyncio.Transport
        state: tuple[bool, ssl.SSLSession] | None = None

        def __init__(self) -> None:
            self.closed: asyncio.Future[None] = loop.create_future()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport  # after the handshake
            transport.write(b"x")

        def data_received(self, data: bytes) -> None:
            if data == b"x":
                self.state = _session_of(self.transport.get_extra_info("ssl_object"))
            self.transport.close()  # close_notify, the server's, then the TCP close

        def connection_lost(self, exc: Exception | None) -> None:
            if exc is not None:
                self.closed.set_exception(exc)
            else:
                self.closed.set_result(None)

    async def one(context: ssl.SSLContext) -> tuple[bool, ssl.SSLSession]:
        _, handshake = await loop.create_connection(
            Handshake, HOST, port, ssl=context, server_hostname=TLS_NAME
        )
        await handshake.closed
        if handshake.state is None:
            raise BenchError("no echo")
        return handshake.state

    await _handshakes(cfg, one)


async def _protocol_readline(port: int, cfg: dict[str, Any]) -> None:
    """Lines split in ``data_received`` (``bytearray`` + ``find`` + ``del``,
    each line taken as ``bytes``): asyncio Protocol has no line reader."""
    loop = asyncio.get_running_loop()
    count: int = cfg["lines"]
    finished: asyncio.Future[float] = loop.create_future()

    class Lines(asyncio.Protocol):
        transport: asyncio.Transport
        lines = size = 0

        def __init__(self) -> None:
            self.buffer = bytearray()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            buffer = self.buffer
            scanned = len(buffer)
            buffer += data
            start = 0
            while (end := buffer.find(b"\n", scanned)) >= 0:
                line = bytes(buffer[start : end + 1])
                self.lines += 1
                self.size += len(line)
                start = scanned = end + 1
            del buffer[:start]
            if self.lines >= count and not finished.done():
                finished.set_result(time.perf_counter())
                self.transport.close()

    start = time.perf_counter()
    _, lines = await loop.create_connection(Lines, HOST, port)
    elapsed = await finished - start
    check_lines(count, lines.lines, lines.size)
    result(seconds=elapsed, lps=count / elapsed)


_PROTOCOL_KINDS = {
    "bulk": _protocol_bulk,
    "readline": _protocol_readline,
    "pingpong": _protocol_pingpong,
    "churn": _protocol_churn,
    "idle": _protocol_idle,
    "handshake": _protocol_handshake,
}


# -- asyncio Streams -------------------------------------------------------------


async def streams_server(cfg: dict[str, Any]) -> None:
    announce = Announcer(cfg["connections"])
    serve = _STREAMS_SERVES[cfg["mode"]]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        announce()
        if cfg["no_delay"]:
            _nodelay(writer.transport)
        try:
            await serve(reader, writer, cfg)
            writer.close()
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            writer.close()

    server = await asyncio.start_server(
        handler,
        HOST,
        0,
        backlog=BACKLOG,
        ssl=server_ssl(cfg["tls"]) if cfg["tls"] else None,
    )
    async with server:
        say(f"READY {server.sockets[0].getsockname()[1]}")
        await server.serve_forever()


async def _streams_sink(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cfg: dict[str, Any]
) -> None:
    total: int = cfg["bytes"]
    received = 0
    while received < total:
        data = await reader.read(65536)
        if not data:
            return
        received += len(data)
    writer.write(b"k")
    await writer.drain()
    while await reader.read(65536):
        pass


async def _streams_echo(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cfg: dict[str, Any]
) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


async def _streams_send_file(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cfg: dict[str, Any]
) -> None:
    """The sendfile rows' server: ``loop.sendfile(writer.transport, file)``
    (by ``"api"``), or ``chunk`` reads, each written and drained; then the
    receiver's answer."""
    with open(cfg["file"], "rb", buffering=0) as file:  # noqa: ASYNC230 - page cache
        if cfg["by"] == "api":
            await asyncio.get_running_loop().sendfile(writer.transport, file)
        else:
            while data := file.read(cfg["chunk"]):
                writer.write(data)
                await writer.drain()
    await reader.read(1)


async def _streams_http(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cfg: dict[str, Any]
) -> None:
    """The http rows' server: each request read with ``readuntil()`` (its head
    ends in a blank line), answered with ``write()`` and ``await drain()``,
    until the client's end or a ``Connection: close``."""
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return  # the client's end
        if not http_keeps_alive(head[:-4]):
            writer.write(HTTP_CLOSE)
            return  # the handler closes the writer
        writer.write(HTTP_KEEP_ALIVE)
        await writer.drain()


_STREAMS_SERVES = {
    "sink": _streams_sink,
    "echo": _streams_echo,
    "sendfile": _streams_send_file,
    "http": _streams_http,
}


async def streams_proxy(cfg: dict[str, Any]) -> None:
    """The proxy row's proxy: per connection, one to ``target`` and a task
    per direction (``read`` / ``write`` and ``drain``, then ``write_eof``)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(HOST, cfg["target"])
        await asyncio.gather(
            _streams_relay(reader, upstream_writer), _streams_relay(upstream_reader, writer)
        )
        writer.close()
        upstream_writer.close()

    server = await asyncio.start_server(handler, HOST, 0, backlog=BACKLOG)
    async with server:
        say(f"READY {server.sockets[0].getsockname()[1]}")
        await server.serve_forever()


async def _streams_relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()


async def streams_client(cfg: dict[str, Any]) -> None:
    kind: str = cfg["kind"]
    if kind not in _STREAMS_KINDS:
        raise ValueError(f"unknown client kind {kind!r}")
    await _STREAMS_KINDS[kind](cfg["port"], cfg)


async def _streams_bulk(port: int, cfg: dict[str, Any]) -> None:
    chunk = b"x" * cfg["chunk"]
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(
        HOST, port, ssl=client_ssl(cfg["tls"]) if cfg["tls"] else None
    )
    for _ in range(cfg["bytes"] // cfg["chunk"]):
        writer.write(chunk)
        await writer.drain()
    ack = await reader.readexactly(1)
    elapsed = time.perf_counter() - start
    assert ack == b"k", ack
    writer.close()
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        await writer.wait_closed()
    result(seconds=elapsed, mbps=cfg["bytes"] / elapsed / 1e6)


async def _streams_pingpong(port: int, cfg: dict[str, Any]) -> None:
    message = b"p" * cfg["size"]
    rounds: int = cfg["rounds"]
    latencies: list[int] = []
    reader, writer = await asyncio.open_connection(HOST, port)
    _nodelay(writer.transport)
    start = time.perf_counter()
    for _ in range(rounds):
        sent_at = time.perf_counter_ns()
        writer.write(message)
        await writer.drain()
        await reader.readexactly(len(message))
        latencies.append(time.perf_counter_ns() - sent_at)
    elapsed = time.perf_counter() - start
    writer.close()
    await writer.wait_closed()
    result(**latency_summary(rounds, elapsed, latencies))


async def _streams_churn(port: int, cfg: dict[str, Any]) -> None:
    count: int = cfg["count"]
    if cfg["style"] == "destroy":
        await _streams_churn_destroy(port, count)
        return
    start = time.perf_counter()
    for _ in range(count):
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"x")
        await writer.drain()
        await reader.readexactly(1)
        writer.write_eof()
        await reader.read()
        writer.close()
        await writer.wait_closed()
    result(cps=count / (time.perf_counter() - start))


async def _streams_churn_destroy(port: int, count: int) -> None:
    """The counterpart of the Node-style churn client: ``write``, ``drain``,
    ``read(1)``, then ``close()`` and ``wait_closed()`` (which waits for the
    transport's close, not for the server's end)."""
    echoed = 0
    start = time.perf_counter()
    for _ in range(count):
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"x")
        await writer.drain()
        echoed += await reader.read(1) == b"x"
        writer.close()
        await writer.wait_closed()
    elapsed = time.perf_counter() - start
    check_echoed(echoed, count)
    result(cps=count / elapsed)


async def _streams_idle(port: int, cfg: dict[str, Any]) -> None:
    connections: int = cfg["connections"]
    held: list[asyncio.StreamWriter] = []

    async def open_one() -> None:
        _, writer = await asyncio.open_connection(HOST, port)
        held.append(writer)

    for done in range(0, connections, IDLE_CONNECT_BATCH):
        count = min(IDLE_CONNECT_BATCH, connections - done)
        await asyncio.gather(*(open_one() for _ in range(count)))
    say(f"CONNECTED {len(held)}")
    hold_then_exit()


async def _streams_handshake(port: int, cfg: dict[str, Any]) -> None:
    async def one(context: ssl.SSLContext) -> tuple[bool, ssl.SSLSession]:
        reader, writer = await asyncio.open_connection(
            HOST, port, ssl=context, server_hostname=TLS_NAME
        )
        writer.write(b"x")
        await writer.drain()
        echo = await reader.readexactly(1)
        if echo != b"x":
            raise BenchError(f"echo {echo!r}, not b'x'")
        state = _session_of(writer.get_extra_info("ssl_object"))
        writer.close()  # close_notify, the server's, then the TCP close
        await writer.wait_closed()
        return state

    await _handshakes(cfg, one)


async def _streams_readline(port: int, cfg: dict[str, Any]) -> None:
    count: int = cfg["lines"]
    size = 0
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(HOST, port)
    for _ in range(count):
        size += len(await reader.readline())
    elapsed = time.perf_counter() - start
    writer.close()
    await writer.wait_closed()
    check_lines(count, count, size)
    result(seconds=elapsed, lps=count / elapsed)


_STREAMS_KINDS = {
    "bulk": _streams_bulk,
    "readline": _streams_readline,
    "pingpong": _streams_pingpong,
    "churn": _streams_churn,
    "idle": _streams_idle,
    "handshake": _streams_handshake,
}
