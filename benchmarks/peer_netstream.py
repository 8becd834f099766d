"""The trio_netstream roles, written Node-port style (listeners).

The ``trio_netstream@base`` peer runs these same functions, in processes
whose ``import trio_netstream`` finds the baseline checkout first. Such a
checkout may predate an option a row uses: the client then says
``UNSUPPORTED <reason>`` (the row shows n/a) rather than failing.
"""

from __future__ import annotations

import functools
import ssl
import time
from typing import Any

import trio

import trio_netstream as net
from bench_spec import BACKLOG, HOST, IDLE_CONNECT_BATCH, TLS_NAME, BenchError
from peer_common import (
    Announcer,
    check_echoed,
    check_lines,
    check_resumed,
    client_ssl,
    hold_then_exit,
    http_replies,
    latency_summary,
    result,
    say,
    server_ssl,
)


def _end_on_data(stream: Any, data: bytes) -> None:
    stream.end()


async def netstream_server(cfg: dict[str, Any]) -> None:
    announce = Announcer(cfg["connections"])
    total: int = cfg["bytes"]

    def on_connection(stream: net.Stream) -> None:
        if cfg["mode"] == "sink":
            received = 0

            def on_data(data: bytes) -> None:
                nonlocal received
                before, received = received, received + len(data)
                if before < total <= received:
                    stream.end(b"k")

            stream.on("data", on_data)
        else:
            stream.on("data", stream.write)
        stream.on("end", stream.end)
        announce()

    listener: Any = on_connection
    if cfg["mode"] == "sendfile":
        if cfg["by"] == "api" and not _HAS_SEND_FILE:
            say("UNSUPPORTED this trio_netstream has no send_file()")
            return
        listener = _send_file_by_api if cfg["by"] == "api" else _send_file_by_writes
        listener = functools.partial(listener, cfg)
    if cfg["mode"] == "http":
        listener = _serve_http
    options: dict[str, Any] = {"no_delay": cfg["no_delay"]}
    if cfg["tls"]:
        options["ssl"] = server_ssl(cfg["tls"])
    async with net.create_server(listener, **options) as server:
        await server.listen(0, HOST, backlog=BACKLOG)
        address = server.address()
        assert isinstance(address, tuple)
        say(f"READY {address[1]}")
        await trio.sleep_forever()


#: Whether this trio_netstream has what the newer rows measure (a
#: ``--baseline`` checkout may predate them): then the row shows n/a.
_HAS_SEND_FILE = hasattr(net.Stream, "send_file")
_HAS_PIPE = hasattr(net.Stream, "pipe")
_HAS_READLINE = hasattr(net.Stream, "readline")


async def _send_file_by_api(cfg: dict[str, Any], stream: net.Stream) -> None:
    """The sendfile row: ``await stream.send_file(path)``; the receiver's
    answer (one byte, once every byte came) ends the stream."""
    stream.on("data", functools.partial(_end_on_data, stream))
    await stream.send_file(cfg["file"])


def _send_file_by_writes(cfg: dict[str, Any], stream: net.Stream) -> None:
    """The sendfile-write row: the file in ``chunk`` reads (blocking: it is in
    the page cache), each written, waiting for ``'drain'`` when ``write()``
    returns ``False``; the receiver's answer ends the stream."""
    file = open(cfg["file"], "rb", buffering=0)  # noqa: SIM115 - closed at 'close'
    chunk: int = cfg["chunk"]

    def pump() -> None:
        while data := file.read(chunk):
            if not stream.write(data):
                return  # wait for 'drain'

    stream.on("drain", pump)
    stream.on("data", functools.partial(_end_on_data, stream))
    stream.on("close", lambda had_error: file.close())
    pump()


def _serve_http(stream: net.Stream) -> None:
    """The http rows' server: a ``bytearray`` filled by ``'data'``, the
    requests it completed answered in one ``write()``; ``end()`` after a
    ``Connection: close`` (later requests unread), or at the client's end."""
    buffer = bytearray()

    def on_data(data: bytes) -> None:
        buffer.extend(data)
        replies, closing = http_replies(buffer)
        if closing:
            stream.off("data", on_data)
            stream.end(replies)
        elif replies:
            stream.write(replies)

    stream.on("data", on_data)
    stream.on("end", stream.end)
    stream.on("error", _ignore_error)  # wrk resets its connections when it stops


def _ignore_error(error: BaseException) -> None:
    pass


async def netstream_proxy(cfg: dict[str, Any]) -> None:
    """The proxy row's proxy: per connection, one to ``target``, and
    ``client.pipe(upstream)``, ``upstream.pipe(client)``."""
    if not _HAS_PIPE:
        say("UNSUPPORTED this trio_netstream has no pipe()")
        return

    async def on_connection(client: net.Stream) -> None:
        upstream = net.create_connection(cfg["target"], HOST, no_delay=True)
        client.pipe(upstream)
        upstream.pipe(client)
        async with upstream:
            await client.wait_closed()

    async with net.create_server(on_connection, no_delay=True) as server:
        await server.listen(0, HOST, backlog=BACKLOG)
        address = server.address()
        assert isinstance(address, tuple)
        say(f"READY {address[1]}")
        await trio.sleep_forever()


async def netstream_client(cfg: dict[str, Any]) -> None:
    kind: str = cfg["kind"]
    if kind not in _KINDS:
        raise ValueError(f"unknown client kind {kind!r}")
    await _KINDS[kind](cfg["port"], cfg)


async def _bulk(port: int, cfg: dict[str, Any]) -> None:
    chunk = b"x" * cfg["chunk"]
    writes = cfg["bytes"] // cfg["chunk"]
    options: dict[str, Any] = {"no_delay": cfg["no_delay"]}
    if cfg["tls"]:
        options["ssl"] = client_ssl(cfg["tls"])
    start = time.perf_counter()
    stream = net.create_connection(port, HOST, **options)
    sent = 0
    elapsed = 0.0

    def pump() -> None:
        nonlocal sent
        while sent < writes:
            sent += 1
            if not stream.write(chunk):
                return  # wait for 'drain'

    def on_ack(data: bytes) -> None:
        nonlocal elapsed
        elapsed = time.perf_counter() - start
        stream.end()

    stream.on("secure" if cfg["tls"] else "connect", pump)
    stream.on("drain", pump)
    stream.on("data", on_ack)
    async with stream:
        pass
    result(seconds=elapsed, mbps=cfg["bytes"] / elapsed / 1e6)


async def _pingpong(port: int, cfg: dict[str, Any]) -> None:
    message = b"p" * cfg["size"]
    rounds: int = cfg["rounds"]
    latencies: list[int] = []
    stream = net.create_connection(port, HOST, no_delay=True)
    pending = 0
    sent_at = 0
    start = 0.0
    elapsed = 0.0

    def send() -> None:
        nonlocal sent_at
        sent_at = time.perf_counter_ns()
        stream.write(message)

    def on_connect() -> None:
        nonlocal start
        start = time.perf_counter()
        send()

    def on_data(data: bytes) -> None:
        nonlocal pending, elapsed
        pending += len(data)
        if pending < len(message):
            return
        pending -= len(message)
        latencies.append(time.perf_counter_ns() - sent_at)
        if len(latencies) < rounds:
            send()
        else:
            elapsed = time.perf_counter() - start
            stream.end()

    stream.on("connect", on_connect)
    stream.on("data", on_data)
    async with stream:
        pass
    result(**latency_summary(rounds, elapsed, latencies))


async def _churn(port: int, cfg: dict[str, Any]) -> None:
    count: int = cfg["count"]
    if cfg["style"] == "destroy":
        await _churn_destroy(port, count)
        return
    start = time.perf_counter()
    for _ in range(count):
        stream = net.create_connection(port, HOST)
        stream.on("connect", functools.partial(stream.write, b"x"))
        stream.on("data", functools.partial(_end_on_data, stream))
        async with stream:
            pass
    result(cps=count / (time.perf_counter() - start))


async def _churn_destroy(port: int, count: int) -> None:
    """The Node-style churn client: write in ``'connect'``, ``destroy()`` in
    ``'data'`` (no wait for the server's end), the block left at ``'close'``."""
    echoed = 0

    def on_echo(stream: net.Stream, data: bytes) -> None:
        nonlocal echoed
        echoed += data == b"x"
        stream.destroy()

    start = time.perf_counter()
    for _ in range(count):
        stream = net.create_connection(port, HOST)
        stream.on("connect", functools.partial(stream.write, b"x"))
        stream.on("data", functools.partial(on_echo, stream))
        async with stream:
            pass
    elapsed = time.perf_counter() - start
    check_echoed(echoed, count)
    result(cps=count / elapsed)


async def _idle(port: int, cfg: dict[str, Any]) -> None:
    connections: int = cfg["connections"]

    connected = 0
    target = 0
    batch_done = trio.Event()

    def on_connect() -> None:
        nonlocal connected
        connected += 1
        if connected == target:
            batch_done.set()

    async def hold() -> None:
        stream = net.create_connection(port, HOST)
        stream.once("connect", on_connect)
        async with stream:
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        for done in range(0, connections, IDLE_CONNECT_BATCH):
            size = min(IDLE_CONNECT_BATCH, connections - done)
            target, batch_done = done + size, trio.Event()
            for _ in range(size):
                nursery.start_soon(hold)
            await batch_done.wait()
        say(f"CONNECTED {connected}")
        hold_then_exit()


#: Whether this trio_netstream has the ``session`` option (and ``get_session()``,
#: ``is_session_reused()``): a ``--baseline`` checkout may predate them.
_HAS_SESSION = hasattr(net.Stream, "get_session")


async def _handshake(port: int, cfg: dict[str, Any]) -> None:
    count: int = cfg["count"]
    resume: bool = cfg["resume"]
    if resume and not _HAS_SESSION:
        say("UNSUPPORTED this trio_netstream has no session option (Stream.get_session)")
        return
    context = client_ssl(cfg["tls"])
    session: ssl.SSLSession | None = None
    resumed = echoed = 0

    async def one() -> None:
        options: dict[str, Any] = {"ssl": context, "server_hostname": TLS_NAME, "no_delay": True}
        if session is not None:
            options["session"] = session
        stream = net.create_connection(port, HOST, **options)

        def on_echo(data: bytes) -> None:
            nonlocal session, resumed, echoed
            echoed += data == b"x"
            if _HAS_SESSION:
                resumed += stream.is_session_reused()
                if resume:  # TLS 1.3: the tickets came after the handshake, before the echo
                    session = stream.get_session()
            stream.end()

        stream.on("secure", functools.partial(stream.write, b"x"))
        stream.once("data", on_echo)
        async with stream:
            pass

    if resume:
        await one()  # untimed: the first session to resume
        resumed = echoed = 0
    start = time.perf_counter()
    for _ in range(count):
        await one()
    elapsed = time.perf_counter() - start
    if echoed != count:
        raise BenchError(f"{echoed} of {count} connections echoed the byte")
    if _HAS_SESSION:
        check_resumed(resume, resumed, count)
    result(hps=count / elapsed, resumed=resumed)


async def _readline(port: int, cfg: dict[str, Any]) -> None:
    if not _HAS_READLINE:
        say("UNSUPPORTED this trio_netstream has no readline()")
        return
    count: int = cfg["lines"]
    size = 0
    start = time.perf_counter()
    async with net.create_connection(port, HOST) as stream:
        for _ in range(count):
            size += len(await stream.readline())
        elapsed = time.perf_counter() - start
        stream.end()
    check_lines(count, count, size)
    result(seconds=elapsed, lps=count / elapsed)


_KINDS = {
    "bulk": _bulk,
    "readline": _readline,
    "pingpong": _pingpong,
    "churn": _churn,
    "idle": _idle,
    "handshake": _handshake,
}
