"""The raw trio roles (``trio.SocketStream`` / ``trio.SSLStream``): the
baseline every figure is given as a ratio to.

``trio.SSLStream`` takes no session to resume, but forwards the attributes
of its ``ssl.SSLObject``, reads and writes: ``stream.session = ...`` before
the first I/O (the handshake) resumes one, as ``SSLObject.session`` does."""

from __future__ import annotations

import functools
import ssl
import time
from typing import Any

import trio

from bench_spec import BACKLOG, HOST, IDLE_CONNECT_BATCH, TLS_NAME, BenchError
from peer_common import (
    Announcer,
    check_resumed,
    client_ssl,
    hold_then_exit,
    latency_summary,
    result,
    say,
    server_ssl,
)


async def trio_server(cfg: dict[str, Any]) -> None:
    announce = Announcer(cfg["connections"])
    total: int = cfg["bytes"]

    async def handler(stream: trio.abc.Stream) -> None:
        announce()
        try:
            if cfg["mode"] == "sink":
                received = 0
                while received < total:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    received += len(data)
                await stream.send_all(b"k")
                while await stream.receive_some(65536):
                    pass
            else:
                while data := await stream.receive_some(65536):
                    await stream.send_all(data)
                # Over TLS, a close_notify back (serve_tcp would close
                # the stream without one); over TCP, the same close.
                await stream.aclose()
        except trio.BrokenResourceError:
            pass

    async with trio.open_nursery() as nursery:
        if cfg["tls"]:
            serve_tls = functools.partial(
                trio.serve_ssl_over_tcp,
                handler,
                0,
                server_ssl(cfg["tls"]),
                host=HOST,
                backlog=BACKLOG,
            )
            ssl_listeners: list[trio.SSLListener[trio.SocketStream]] = await nursery.start(
                serve_tls
            )
            transport = ssl_listeners[0].transport_listener
            assert isinstance(transport, trio.SocketListener)
            port = transport.socket.getsockname()[1]
        else:
            serve_tcp = functools.partial(trio.serve_tcp, handler, 0, host=HOST, backlog=BACKLOG)
            listeners: list[trio.SocketListener] = await nursery.start(serve_tcp)
            port = listeners[0].socket.getsockname()[1]
        say(f"READY {port}")


async def trio_client(cfg: dict[str, Any]) -> None:
    kind: str = cfg["kind"]
    if kind not in _KINDS:
        raise ValueError(f"unknown client kind {kind!r}")
    await _KINDS[kind](cfg["port"], cfg)


async def _bulk(port: int, cfg: dict[str, Any]) -> None:
    chunk = b"x" * cfg["chunk"]
    start = time.perf_counter()
    stream: trio.abc.Stream
    if cfg["tls"]:
        stream = await trio.open_ssl_over_tcp_stream(HOST, port, ssl_context=client_ssl(cfg["tls"]))
    else:
        stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        for _ in range(cfg["bytes"] // cfg["chunk"]):
            await stream.send_all(chunk)
        ack = await stream.receive_some(1)
        elapsed = time.perf_counter() - start
        assert ack == b"k", ack
    result(seconds=elapsed, mbps=cfg["bytes"] / elapsed / 1e6)


async def _pingpong(port: int, cfg: dict[str, Any]) -> None:
    message = b"p" * cfg["size"]
    rounds: int = cfg["rounds"]
    latencies: list[int] = []
    async with await trio.open_tcp_stream(HOST, port) as sock:  # TCP_NODELAY by default
        start = time.perf_counter()
        for _ in range(rounds):
            sent_at = time.perf_counter_ns()
            await sock.send_all(message)
            pending = len(message)
            while pending:
                data = await sock.receive_some(pending)
                if not data:
                    raise BenchError("server closed during ping-pong")
                pending -= len(data)
            latencies.append(time.perf_counter_ns() - sent_at)
        elapsed = time.perf_counter() - start
    result(**latency_summary(rounds, elapsed, latencies))


async def _churn(port: int, cfg: dict[str, Any]) -> None:
    count: int = cfg["count"]
    start = time.perf_counter()
    for _ in range(count):
        async with await trio.open_tcp_stream(HOST, port) as sock:
            await sock.send_all(b"x")
            await sock.receive_some(1)
            await sock.send_eof()
            while await sock.receive_some(65536):
                pass
    result(cps=count / (time.perf_counter() - start))


async def _idle(port: int, cfg: dict[str, Any]) -> None:
    connections: int = cfg["connections"]
    held: list[trio.SocketStream] = []

    async def open_one() -> None:
        held.append(await trio.open_tcp_stream(HOST, port))

    for done in range(0, connections, IDLE_CONNECT_BATCH):
        async with trio.open_nursery() as batch:
            for _ in range(min(IDLE_CONNECT_BATCH, connections - done)):
                batch.start_soon(open_one)
    say(f"CONNECTED {len(held)}")
    hold_then_exit()


async def _handshake(port: int, cfg: dict[str, Any]) -> None:
    count: int = cfg["count"]
    resume: bool = cfg["resume"]
    context = client_ssl(cfg["tls"])
    session: ssl.SSLSession | None = None
    resumed = 0

    async def one() -> None:
        nonlocal session, resumed
        tcp = await trio.open_tcp_stream(HOST, port)  # TCP_NODELAY by default
        stream = trio.SSLStream(tcp, context, server_hostname=TLS_NAME)
        if session is not None:
            stream.session = session  # forwarded to the SSLObject, before the handshake
        await stream.send_all(b"x")  # the handshake first
        echo = await stream.receive_some(1)
        if echo != b"x":
            await tcp.aclose()
            raise BenchError(f"echo {echo!r}, not b'x'")
        resumed += stream.session_reused
        if resume:  # TLS 1.3: the tickets came after the handshake, before the echo
            session = stream.session
        # Our close_notify, then the server's (as the other clients wait for
        # the server's end), then the TCP close.
        transport, _ = await stream.unwrap()
        await transport.aclose()

    if resume:
        await one()  # untimed: the first session to resume
        resumed = 0
    start = time.perf_counter()
    for _ in range(count):
        await one()
    elapsed = time.perf_counter() - start
    check_resumed(resume, resumed, count)
    result(hps=count / elapsed, resumed=resumed)


_KINDS = {
    "bulk": _bulk,
    "pingpong": _pingpong,
    "churn": _churn,
    "idle": _idle,
    "handshake": _handshake,
}
