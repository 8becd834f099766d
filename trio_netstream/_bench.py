"""The benchmark suite: trio_netstream against its peers, in one run.

Run it with ``python -m trio_netstream._bench`` (``--help`` lists the
options; ``--quick`` is a smoke run of a few seconds). It is not part of the
library's API and imports nothing of it until a benchmark role runs.

How it works: this process (the *orchestrator*) starts, for every run, a
server process and a client process of the same implementation (the
*peer*) on 127.0.0.1, reads their results from their stdout, and never
measures anything itself except the server's memory (``VmRSS`` from
``/proc/<pid>/status``). Runs are interleaved (A B C A B C ...) and every
figure is the median over the runs; every figure is also given as a ratio
to raw ``trio.SocketStream`` measured in the same invocation.

A role speaks a line protocol on stdout: a server prints ``READY <port>``
once listening (and ``ACCEPTED <n>`` once it holds the idle benchmark's
*n* connections); a client prints ``RESULT <json>``, or ``CONNECTED <n>``
for the idle benchmark, where it then holds its connections until its stdin
is closed. ``benchmarks/node_peer.js`` speaks the same protocol for Node.js.

Benchmarks:

* ``bulk``: the client sends ``bytes`` in ``chunk`` writes (respecting each
  implementation's backpressure); the server counts them and answers one
  byte once all have arrived. Time from connect to that byte: MB/s
  (1 MB = 10**6 bytes).
* ``pingpong``: ``rounds`` round trips of a ``size``-byte request and its
  full echo, ``no_delay`` on both sides; client and server pinned to
  different cores (``pingpong-cross``) or to the same core
  (``pingpong-same``): round trips/s, p50 and p99 in microseconds.
* ``churn``: ``count`` sequential connections, each: connect, send one
  byte, read its echo, end, wait for the peer's end and the close:
  connections/s.
* ``idle``: the server's RSS growth per connection while it holds
  ``connections`` idle echo connections, opened by a client process.
* ``tls``: ``bulk`` over TLS (trustme certificates).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import functools
import importlib
import json
import os
import platform
import resource
import select
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = ["main"]

HOST = "127.0.0.1"
TIMES, GE, LE, NONE = "\u00d7", "\u2265", "\u2264", "\u2013"  # times, >=, <=, en dash
BACKLOG = 4096
#: Connections a client opens at once in the idle benchmark.
IDLE_CONNECT_BATCH = 100

# -- peers and benchmarks ----------------------------------------------------

#: Peer ids (as given to ``--peers``) and their display names, in run order.
PEERS: dict[str, str] = {
    "trio_netstream": "trio_netstream",
    "trio": "raw trio",
    "asyncio-protocol": "asyncio Protocol",
    "asyncio-streams": "asyncio Streams",
    "node": "Node.js net",
}
BASELINE = "trio"

#: Benchmarks as given to ``--only``, and the result rows each one makes.
BENCHMARKS: dict[str, tuple[str, ...]] = {
    "bulk": ("bulk",),
    "pingpong": ("pingpong-cross", "pingpong-same"),
    "churn": ("churn",),
    "idle": ("idle",),
    "tls": ("tls",),
}


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool


@dataclass(frozen=True)
class Row:
    """One result row: a benchmark (or a variant of one) and its metrics."""

    key: str
    title: str
    short: str
    metrics: tuple[Metric, ...]

    @property
    def main(self) -> Metric:
        return self.metrics[0]


_MBPS = Metric("mbps", "throughput", "MB/s", True)
_PINGPONG = (
    Metric("rtps", "round trips/s", "rt/s", True),
    Metric("p50_us", "p50", "µs", False),
    Metric("p99_us", "p99", "µs", False),
)
ROWS: dict[str, Row] = {
    "bulk": Row("bulk", "Bulk transfer (one way)", "bulk", (_MBPS,)),
    "pingpong-cross": Row(
        "pingpong-cross",
        "Ping-pong, client and server on different cores",
        "ping-pong cross-core",
        _PINGPONG,
    ),
    "pingpong-same": Row(
        "pingpong-same",
        "Ping-pong, client and server on the same core",
        "ping-pong same-core",
        _PINGPONG,
    ),
    "churn": Row(
        "churn", "Connection churn", "churn", (Metric("cps", "connections/s", "conn/s", True),)
    ),
    "idle": Row(
        "idle",
        "Idle memory (server RSS per connection)",
        "idle memory",
        (Metric("kib_per_conn", "RSS per connection", "KiB", False),),
    ),
    "tls": Row("tls", "TLS bulk transfer (one way)", "TLS bulk", (_MBPS,)),
}


@dataclass(frozen=True)
class Sizes:
    bulk_bytes: int
    chunk: int
    rounds: int
    message: int
    churn: int
    idle: int
    tls_bytes: int
    runs: int


FULL = Sizes(
    bulk_bytes=1 << 30,
    chunk=64 * 1024,
    rounds=20_000,
    message=64,
    churn=5_000,
    idle=10_000,
    tls_bytes=256 << 20,
    runs=5,
)
QUICK = Sizes(
    bulk_bytes=4 << 20,
    chunk=64 * 1024,
    rounds=200,
    message=64,
    churn=50,
    idle=100,
    tls_bytes=4 << 20,
    runs=1,
)


@dataclass(frozen=True)
class Target:
    what: str
    row: str
    metric: str
    versus: str
    ratio: float
    at_least: bool
    per: str = ""

    @property
    def text(self) -> str:
        sign = GE if self.at_least else LE
        return f"{self.what} {sign} {self.ratio}{TIMES} {PEERS[self.versus]}{self.per}"


TARGETS = (
    Target("bulk", "bulk", "mbps", "trio", 1.0, True),
    Target("bulk", "bulk", "mbps", "node", 1.5, True),
    Target("same-core ping-pong", "pingpong-same", "rtps", "trio", 1.0, True),
    Target("cross-core ping-pong", "pingpong-cross", "rtps", "trio", 0.95, True),
    Target("churn", "churn", "cps", "trio", 1.0, True),
    Target("idle memory", "idle", "kib_per_conn", "trio", 1.5, False, " per connection"),
)


class BenchError(Exception):
    """A run failed: a role exited, timed out or printed something unexpected."""


# ============================================================================
# Roles: what runs in the server and client processes
# ============================================================================


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _result(**values: float) -> None:
    _say("RESULT " + json.dumps(values))


def _raise_nofile() -> None:
    """Raise the soft limit on open files up to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _wait_stdin_closed() -> None:
    """Block (the whole process) until the orchestrator closes our stdin."""
    while sys.stdin.buffer.read(65536):
        pass


def _hold_then_exit() -> None:
    """The idle client's end: hold the connections until told, then exit
    at once (the kernel closes every socket; a graceful close of thousands
    of connections is not what is measured)."""
    _wait_stdin_closed()
    sys.stdout.flush()
    os._exit(0)


def _server_ssl(tls: dict[str, str]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls["cert"], tls["key"])
    return context


def _client_ssl(tls: dict[str, str]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=tls["ca"])


def _latency_summary(rounds: int, elapsed: float, latencies_ns: list[int]) -> dict[str, float]:
    ordered = sorted(latencies_ns)

    def percentile(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] / 1000

    return {"rtps": rounds / elapsed, "p50_us": percentile(0.50), "p99_us": percentile(0.99)}


class _Announcer:
    """Counts a server's connections; prints ``ACCEPTED n`` at the idle target."""

    def __init__(self, target: int) -> None:
        self.count = 0
        self.target = target

    def __call__(self) -> None:
        self.count += 1
        if self.count == self.target:
            _say(f"ACCEPTED {self.count}")


# -- trio_netstream (Node-port style: listeners) -------------------------------


def _end_on_data(stream: Any, data: bytes) -> None:
    stream.end()


async def _netstream_server(cfg: dict[str, Any]) -> None:
    import trio

    import trio_netstream as net

    announce = _Announcer(cfg["connections"])
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

    options: dict[str, Any] = {"no_delay": cfg["no_delay"]}
    if cfg["tls"]:
        options["ssl"] = _server_ssl(cfg["tls"])
    async with net.create_server(on_connection, **options) as server:
        await server.listen(0, HOST, backlog=BACKLOG)
        address = server.address()
        assert isinstance(address, tuple)
        _say(f"READY {address[1]}")
        await trio.sleep_forever()


async def _netstream_client(cfg: dict[str, Any]) -> None:
    import trio

    import trio_netstream as net

    port: int = cfg["port"]
    kind: str = cfg["kind"]
    if kind == "bulk":
        chunk = b"x" * cfg["chunk"]
        writes = cfg["bytes"] // cfg["chunk"]
        options: dict[str, Any] = {"no_delay": cfg["no_delay"]}
        if cfg["tls"]:
            options["ssl"] = _client_ssl(cfg["tls"])
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
        _result(seconds=elapsed, mbps=cfg["bytes"] / elapsed / 1e6)
    elif kind == "pingpong":
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
        _result(**_latency_summary(rounds, elapsed, latencies))
    elif kind == "churn":
        count: int = cfg["count"]
        start = time.perf_counter()
        for _ in range(count):
            stream = net.create_connection(port, HOST)
            stream.on("connect", functools.partial(stream.write, b"x"))
            stream.on("data", functools.partial(_end_on_data, stream))
            async with stream:
                pass
        _result(cps=count / (time.perf_counter() - start))
    elif kind == "idle":
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
            _say(f"CONNECTED {connected}")
            _hold_then_exit()
    else:
        raise ValueError(f"unknown client kind {kind!r}")


# -- raw trio (SocketStream / SSLStream) -------------------------------------------


async def _trio_server(cfg: dict[str, Any]) -> None:
    import trio

    announce = _Announcer(cfg["connections"])
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
        except trio.BrokenResourceError:
            pass

    async with trio.open_nursery() as nursery:
        if cfg["tls"]:
            serve_tls = functools.partial(
                trio.serve_ssl_over_tcp,
                handler,
                0,
                _server_ssl(cfg["tls"]),
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
        _say(f"READY {port}")


async def _trio_client(cfg: dict[str, Any]) -> None:
    import trio

    port: int = cfg["port"]
    kind: str = cfg["kind"]
    if kind == "bulk":
        chunk = b"x" * cfg["chunk"]
        start = time.perf_counter()
        stream: trio.abc.Stream
        if cfg["tls"]:
            stream = await trio.open_ssl_over_tcp_stream(
                HOST, port, ssl_context=_client_ssl(cfg["tls"])
            )
        else:
            stream = await trio.open_tcp_stream(HOST, port)
        async with stream:
            for _ in range(cfg["bytes"] // cfg["chunk"]):
                await stream.send_all(chunk)
            ack = await stream.receive_some(1)
            elapsed = time.perf_counter() - start
            assert ack == b"k", ack
        _result(seconds=elapsed, mbps=cfg["bytes"] / elapsed / 1e6)
    elif kind == "pingpong":
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
        _result(**_latency_summary(rounds, elapsed, latencies))
    elif kind == "churn":
        count: int = cfg["count"]
        start = time.perf_counter()
        for _ in range(count):
            async with await trio.open_tcp_stream(HOST, port) as sock:
                await sock.send_all(b"x")
                await sock.receive_some(1)
                await sock.send_eof()
                while await sock.receive_some(65536):
                    pass
        _result(cps=count / (time.perf_counter() - start))
    elif kind == "idle":
        connections: int = cfg["connections"]
        held: list[trio.SocketStream] = []

        async def open_one() -> None:
            held.append(await trio.open_tcp_stream(HOST, port))

        for done in range(0, connections, IDLE_CONNECT_BATCH):
            async with trio.open_nursery() as batch:
                for _ in range(min(IDLE_CONNECT_BATCH, connections - done)):
                    batch.start_soon(open_one)
        _say(f"CONNECTED {len(held)}")
        _hold_then_exit()
    else:
        raise ValueError(f"unknown client kind {kind!r}")


# -- asyncio Protocol ------------------------------------------------------------


def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _protocol_server(cfg: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    announce = _Announcer(cfg["connections"])
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

    server = await loop.create_server(
        Server,
        HOST,
        0,
        backlog=BACKLOG,
        ssl=_server_ssl(cfg["tls"]) if cfg["tls"] else None,
    )
    async with server:
        _say(f"READY {server.sockets[0].getsockname()[1]}")
        await server.serve_forever()


async def _protocol_client(cfg: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    port: int = cfg["port"]
    kind: str = cfg["kind"]
    if kind == "bulk":
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
            Bulk, HOST, port, ssl=_client_ssl(cfg["tls"]) if cfg["tls"] else None
        )
        elapsed = await acked - start
        await closed
        _result(seconds=elapsed, mbps=cfg["bytes"] / elapsed / 1e6)
    elif kind == "pingpong":
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
        _result(**_latency_summary(rounds, elapsed, latencies))
    elif kind == "churn":
        count: int = cfg["count"]

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
        _result(cps=count / (time.perf_counter() - start))
    elif kind == "idle":
        connections: int = cfg["connections"]
        held: list[asyncio.BaseTransport] = []

        async def open_one() -> None:
            transport, _ = await loop.create_connection(asyncio.Protocol, HOST, port)
            held.append(transport)

        for done in range(0, connections, IDLE_CONNECT_BATCH):
            count = min(IDLE_CONNECT_BATCH, connections - done)
            await asyncio.gather(*(open_one() for _ in range(count)))
        _say(f"CONNECTED {len(held)}")
        _hold_then_exit()
    else:
        raise ValueError(f"unknown client kind {kind!r}")


# -- asyncio Streams -------------------------------------------------------------


async def _streams_server(cfg: dict[str, Any]) -> None:
    announce = _Announcer(cfg["connections"])
    total: int = cfg["bytes"]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        announce()
        if cfg["no_delay"]:
            _nodelay(writer.transport)
        try:
            if cfg["mode"] == "sink":
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
            else:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.close()
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            writer.close()

    server = await asyncio.start_server(
        handler,
        HOST,
        0,
        backlog=BACKLOG,
        ssl=_server_ssl(cfg["tls"]) if cfg["tls"] else None,
    )
    async with server:
        _say(f"READY {server.sockets[0].getsockname()[1]}")
        await server.serve_forever()


async def _streams_client(cfg: dict[str, Any]) -> None:
    port: int = cfg["port"]
    kind: str = cfg["kind"]
    if kind == "bulk":
        chunk = b"x" * cfg["chunk"]
        start = time.perf_counter()
        reader, writer = await asyncio.open_connection(
            HOST, port, ssl=_client_ssl(cfg["tls"]) if cfg["tls"] else None
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
        _result(seconds=elapsed, mbps=cfg["bytes"] / elapsed / 1e6)
    elif kind == "pingpong":
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
        _result(**_latency_summary(rounds, elapsed, latencies))
    elif kind == "churn":
        count: int = cfg["count"]
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
        _result(cps=count / (time.perf_counter() - start))
    elif kind == "idle":
        connections: int = cfg["connections"]
        held: list[asyncio.StreamWriter] = []

        async def open_one() -> None:
            _, writer = await asyncio.open_connection(HOST, port)
            held.append(writer)

        for done in range(0, connections, IDLE_CONNECT_BATCH):
            count = min(IDLE_CONNECT_BATCH, connections - done)
            await asyncio.gather(*(open_one() for _ in range(count)))
        _say(f"CONNECTED {len(held)}")
        _hold_then_exit()
    else:
        raise ValueError(f"unknown client kind {kind!r}")


def _run_role(role: str, peer: str, cfg: dict[str, Any]) -> int:
    """Run one server or client role in this process (a child of the orchestrator)."""
    _raise_nofile()
    if cfg.get("cpus"):
        os.sched_setaffinity(0, cfg["cpus"])
    server = role == "server"
    if not server:
        line = sys.stdin.readline()  # the orchestrator sends the port once the server listens
        if not line.strip():
            return 1
        cfg["port"] = int(line)
    if peer in ("trio_netstream", "trio"):
        import trio

        if peer == "trio_netstream":
            trio.run(_netstream_server if server else _netstream_client, cfg)
        else:
            trio.run(_trio_server if server else _trio_client, cfg)
    elif peer == "asyncio-protocol":
        asyncio.run(_protocol_server(cfg) if server else _protocol_client(cfg))
    elif peer == "asyncio-streams":
        asyncio.run(_streams_server(cfg) if server else _streams_client(cfg))
    else:
        raise ValueError(f"no Python role for peer {peer!r}")
    return 0


# ============================================================================
# The orchestrator
# ============================================================================


#: Starts a program (Node.js) the way a Python role starts itself: the file
#: limit raised to the hard limit, pinned to the CPUs given as JSON (if any).
_EXEC_PINNED = """\
import json, os, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
cpus = json.loads(sys.argv[1])
if cpus:
    os.sched_setaffinity(0, cpus)
os.execvp(sys.argv[2], sys.argv[2:])
"""


class _Lines:
    """Lines of a child's stdout, read with a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes], name: str, errors: IO[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.name = name
        self.buffer = b""
        self.errors = errors

    def expect(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\n", 1)
                line = raw.decode(errors="replace").strip()
                if line.startswith(prefix + " ") or line == prefix:
                    return line[len(prefix) :].strip()
                if line:
                    _progress(f"    ({self.name}) {line}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"{self.name}: no {prefix} within {timeout:.0f} s{self.tail()}")
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    raise BenchError(f"{self.name} exited before {prefix}{self.tail()}")
                self.buffer += chunk

    def tail(self) -> str:
        self.errors.flush()
        self.errors.seek(0)
        text = self.errors.read().decode(errors="replace").strip()
        return ("\n" + "\n".join(text.splitlines()[-15:])) if text else ""


@dataclass
class Suite:
    """What one invocation measures, and where it writes."""

    sizes: Sizes
    benchmarks: list[str]
    peers: list[str]
    output_dir: Path
    quick: bool
    json_path: Path | None
    node_peer: Path
    timeout: float
    notes: list[str] = field(default_factory=list[str])
    results: dict[str, dict[str, list[dict[str, float]]]] = field(
        default_factory=dict[str, dict[str, list[dict[str, float]]]]
    )
    failures: dict[str, dict[str, str]] = field(default_factory=dict[str, dict[str, str]])
    cpus: list[int] = field(default_factory=list[int])
    load: list[float] = field(default_factory=list[float])


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _role_argv(suite: Suite, peer: str, role: str, cfg: dict[str, Any]) -> list[str]:
    blob = json.dumps(cfg)
    if peer == "node":
        pinned = [sys.executable, "-c", _EXEC_PINNED, json.dumps(cfg["cpus"])]
        return [*pinned, "node", str(suite.node_peer), role, blob]
    return [
        sys.executable,
        "-m",
        "trio_netstream._bench",
        "--role",
        role,
        "--peer",
        peer,
        "--config",
        blob,
    ]


@contextlib.contextmanager
def _spawn(
    suite: Suite, peer: str, role: str, cfg: dict[str, Any]
) -> Generator[tuple[subprocess.Popen[bytes], _Lines], None, None]:
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(
        [package_root, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    )
    env.pop("COVERAGE_PROCESS_START", None)
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            _role_argv(suite, peer, role, cfg),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            env=env,
        )
        try:
            yield proc, _Lines(proc, f"{PEERS[peer]} {role}", errors)
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()


def _vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def _settled_rss_kib(pid: int, quick: bool) -> int:
    """VmRSS once it stops moving (two readings 0.2 s apart within 0.5 %);
    a single reading in a smoke run."""
    previous = _vm_rss_kib(pid)
    if quick:
        return previous
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        time.sleep(0.2)
        current = _vm_rss_kib(pid)
        if abs(current - previous) <= previous * 0.005:
            return current
        previous = current
    return previous


def _pinning(suite: Suite, row: str) -> tuple[list[int] | None, list[int] | None]:
    if row == "pingpong-cross":
        return [suite.cpus[0]], [suite.cpus[1]]
    if row == "pingpong-same":
        return [suite.cpus[0]], [suite.cpus[0]]
    return None, None


def _configs(
    suite: Suite, row: str, tls: dict[str, str] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    s = suite.sizes
    bench = row.split("-")[0]
    server: dict[str, Any] = {
        "mode": "sink" if bench in ("bulk", "tls") else "echo",
        "bytes": s.tls_bytes if bench == "tls" else s.bulk_bytes,
        "connections": s.idle if bench == "idle" else 0,
        "no_delay": bench == "pingpong",
        "tls": tls if bench == "tls" else None,
    }
    client: dict[str, Any] = {
        "kind": "bulk" if bench == "tls" else bench,
        # Every bulk sender has TCP_NODELAY, raw trio's and asyncio's default:
        # the rows compare the libraries, not Nagle against no Nagle.
        "no_delay": bench in ("bulk", "tls"),
        "bytes": server["bytes"],
        "chunk": s.chunk,
        "rounds": s.rounds,
        "size": s.message,
        "count": s.churn,
        "connections": s.idle,
        "tls": server["tls"],
    }
    return server, client


def _measure(suite: Suite, row: str, peer: str, tls: dict[str, str] | None) -> dict[str, float]:
    server_cfg, client_cfg = _configs(suite, row, tls)
    server_cfg["cpus"], client_cfg["cpus"] = _pinning(suite, row)
    # Both processes start at once; the client waits for the port on its stdin.
    with (
        _spawn(suite, peer, "server", server_cfg) as (server, server_out),
        _spawn(suite, peer, "client", client_cfg) as (client, client_out),
    ):
        port = int(server_out.expect("READY", 60))
        before = 0  # only read by the idle row, which measures it here
        if row == "idle":
            before = _settled_rss_kib(server.pid, suite.quick)
        assert client.stdin is not None
        client.stdin.write(f"{port}\n".encode())
        client.stdin.flush()
        if row == "idle":
            connected = int(client_out.expect("CONNECTED", suite.timeout))
            server_out.expect("ACCEPTED", suite.timeout)
            after = _settled_rss_kib(server.pid, suite.quick)
            values = {
                "kib_per_conn": (after - before) / connected,
                "rss_before_kib": before,
                "rss_after_kib": after,
            }
        else:
            values = json.loads(client_out.expect("RESULT", suite.timeout))
            if server.poll() is not None:
                raise BenchError(f"{PEERS[peer]} server exited during the run{server_out.tail()}")
        client.stdin.close()  # the client's cue to exit
        client.wait(30)
    return {key: float(value) for key, value in values.items()}


def _describe(row: str, values: dict[str, float]) -> str:
    if row in ("bulk", "tls"):
        return f"{values['mbps']:,.0f} MB/s"
    if row.startswith("pingpong"):
        return (
            f"{values['rtps']:,.0f} rt/s, p50 {values['p50_us']:,.1f} µs, "
            f"p99 {values['p99_us']:,.1f} µs"
        )
    if row == "churn":
        return f"{values['cps']:,.0f} conn/s"
    return f"{values['kib_per_conn']:,.2f} KiB/conn"


@contextlib.contextmanager
def _certificates(suite: Suite) -> Generator[dict[str, str] | None, None, None]:
    if "tls" not in suite.benchmarks:
        yield None
        return
    try:
        trustme: Any = importlib.import_module("trustme")
    except ImportError:
        suite.notes.append("TLS bulk skipped: trustme is not installed (pip install trustme).")
        _progress("note: " + suite.notes[-1])
        suite.benchmarks.remove("tls")
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="trio-netstream-bench-") as folder:
        ca = trustme.CA()
        cert = ca.issue_cert("localhost", HOST)
        paths = {name: str(Path(folder) / f"{name}.pem") for name in ("ca", "cert", "key")}
        ca.cert_pem.write_to_path(paths["ca"])
        cert.private_key_pem.write_to_path(paths["key"])
        with open(paths["cert"], "wb") as chain:
            for pem in cert.cert_chain_pems:
                chain.write(pem.bytes())
        yield paths


def _run_suite(suite: Suite) -> None:
    rows = [row for bench in suite.benchmarks for row in BENCHMARKS[bench]]
    if "pingpong" in suite.benchmarks and len(suite.cpus) < 2:
        suite.notes.append(
            f"Cross-core ping-pong skipped: this process may use only one CPU ({suite.cpus})."
        )
        _progress("note: " + suite.notes[-1])
        rows.remove("pingpong-cross")
    with _certificates(suite) as tls:
        if "tls" not in suite.benchmarks and "tls" in rows:
            rows.remove("tls")
        for row in rows:
            total = suite.sizes.runs * len(suite.peers)
            done = 0
            results = suite.results.setdefault(row, {})
            for run in range(1, suite.sizes.runs + 1):
                for peer in suite.peers:  # interleaved: A B C ... A B C ...
                    done += 1
                    label = f"[{row} {done}/{total}] {PEERS[peer]} run {run}"
                    if peer in suite.failures.get(row, {}):
                        continue
                    try:
                        values = _measure(suite, row, peer, tls)
                    except (BenchError, OSError, ValueError, subprocess.SubprocessError) as exc:
                        suite.failures.setdefault(row, {})[peer] = str(exc).splitlines()[0]
                        _progress(f"{label}: FAILED: {exc}")
                        continue
                    results.setdefault(peer, []).append(values)
                    _progress(f"{label}: {_describe(row, values)}")


# -- results -----------------------------------------------------------------------


def _median(suite: Suite, row: str, peer: str, metric: str) -> float | None:
    runs = suite.results.get(row, {}).get(peer)
    if not runs:
        return None
    return statistics.median(run[metric] for run in runs)


def _ratio(suite: Suite, row: str, peer: str, metric: str, versus: str = BASELINE) -> float | None:
    value = _median(suite, row, peer, metric)
    base = _median(suite, row, versus, metric)
    if value is None or not base:
        return None
    return value / base


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return NONE
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:,.1f}"
    else:
        text = f"{value:,.2f}"
    return f"{text} {unit}".strip()


def _fmt_ratio(ratio: float | None) -> str:
    return NONE if ratio is None else f"{ratio:.2f}{TIMES}"


def _machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0))
    return {
        "CPU": model,
        "cores": f"{os.cpu_count()} ({usable} usable by this process)",
        "kernel": f"{platform.system()} {platform.release()}",
        "RLIMIT_NOFILE (soft/hard)": "/".join(
            str(limit) for limit in resource.getrlimit(resource.RLIMIT_NOFILE)
        ),
    }


def _node_versions() -> tuple[str, str] | None:
    if shutil.which("node") is None:
        return None
    try:
        out = subprocess.run(
            ["node", "-p", "process.version + ' ' + process.versions.openssl"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0], out[1]


def _versions() -> dict[str, str]:
    import trio

    import trio_netstream

    versions = {
        "Python": f"{platform.python_version()} ({platform.python_implementation()})",
        "trio": trio.__version__,
        "trio_netstream": trio_netstream.__version__,
        "OpenSSL (Python)": ssl.OPENSSL_VERSION,
    }
    node = _node_versions()
    versions["Node.js"] = node[0] if node else "not found"
    if node:
        versions["OpenSSL (Node.js)"] = node[1]
    return versions


def _targets(suite: Suite) -> list[tuple[str, str, str]]:
    lines: list[tuple[str, str, str]] = []
    for target in TARGETS:
        ratio = _ratio(suite, target.row, "trio_netstream", target.metric, target.versus)
        if ratio is None:
            verdict = "not measured"
        else:
            met = ratio >= target.ratio if target.at_least else ratio <= target.ratio
            verdict = "met" if met else "**not met**"
        lines.append((target.text, _fmt_ratio(ratio), verdict))
    return lines


def _markdown(suite: Suite, chart: str | None) -> str:
    s = suite.sizes
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out: list[str] = ["# Performance", ""]
    if suite.quick:
        out += [
            "> **Smoke run (`--quick`)**: tiny sizes and one run each. These figures only show "
            "that the harness works; they are not a measurement.",
            "",
        ]
    out += [
        "trio_netstream against its peers, all measured in the same run by "
        "`python -m trio_netstream._bench`. Client and server are separate processes on "
        f"127.0.0.1; runs are interleaved (A B C … A B C …) and every figure is the median of "
        f"{s.runs} run{'s' if s.runs != 1 else ''}. **Ratios are to raw `trio.SocketStream` "
        "measured in the same invocation** (for latency and memory, lower is better).",
        "",
        f"Generated {now}.",
        "",
        "## Machine and versions",
        "",
        "| | |",
        "|---|---|",
    ]
    machine = _machine()
    if suite.load:
        machine["load average (1 min), start / end"] = " / ".join(f"{x:.2f}" for x in suite.load)
    for key, value in {**machine, **_versions()}.items():
        out.append(f"| {key} | {value} |")
    out += [
        "",
        "## Targets (trio_netstream)",
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
    ]
    out += [f"| {text} | {ratio} | {verdict} |" for text, ratio, verdict in _targets(suite)]
    out += ["", "## Summary: ratio to raw trio", ""]
    rows = [row for row in ROWS if row in suite.results]
    header = " | ".join(f"{ROWS[row].short} ({ROWS[row].main.label})" for row in rows)
    out += [f"| implementation | {header} |", "|---" * (len(rows) + 1) + "|"]
    for peer in suite.peers:
        cells: list[str] = [
            _fmt_ratio(_ratio(suite, row, peer, ROWS[row].main.key)) for row in rows
        ]
        out.append(f"| {PEERS[peer]} | " + " | ".join(cells) + " |")
    out += ["", "Higher is better, except for idle memory."]
    if chart:
        out += ["", f"![ratios to raw trio]({chart})"]
    out += ["", "## Results", ""]
    for row_key in rows:
        row = ROWS[row_key]
        out += [f"### {row.title}", "", _row_setup(suite, row_key), ""]
        head = " | ".join(f"{m.label} ({m.unit}) | ratio" for m in row.metrics)
        out += [
            f"| implementation | {head} | {row.main.label}, each run |",
            "|---" * (2 * len(row.metrics) + 2) + "|",
        ]
        for peer in suite.peers:
            failure = suite.failures.get(row_key, {}).get(peer)
            runs = suite.results[row_key].get(peer, [])
            cells = []
            for metric in row.metrics:
                cells.append(_fmt(_median(suite, row_key, peer, metric.key), metric.unit))
                cells.append(_fmt_ratio(_ratio(suite, row_key, peer, metric.key)))
            per_run = ", ".join(_fmt(run[row.main.key]) for run in runs)
            if failure:
                per_run += f" failed: {failure}"
            out.append(f"| {PEERS[peer]} | " + " | ".join(cells) + f" | {per_run} |")
        out.append("")
    out += ["## How it was measured", ""]
    out += [
        "- **bulk**: the client writes the whole payload in "
        f"{s.chunk // 1024} KiB writes, respecting each implementation's backpressure "
        "(trio_netstream and Node.js: `write()` → `False` then `'drain'`; asyncio Protocol: "
        "`pause_writing`/`resume_writing`; asyncio Streams: `await drain()`; raw trio: "
        "`await send_all()`). The server counts the bytes and answers one byte once all have "
        "arrived; the time runs from connect to that byte. 1 MB = 10⁶ bytes. Every sender "
        "has `TCP_NODELAY` set, as raw trio and asyncio do by default (trio_netstream and "
        "Node.js default to Nagle on, as Node does: the bench passes `no_delay=True` and "
        "calls `setNoDelay(true)`). With Nagle on, each 64 KiB write leaves a tail shorter "
        "than a segment waiting for an ACK; on the 2-core VM where this was developed, that "
        "alone cost trio_netstream about 30% of its loopback throughput in some runs.",
        "- **ping-pong**: a 64-byte request, the full 64-byte echo, then the next; `no_delay` on "
        "both sides; each process pinned with `sched_setaffinity` to its own core "
        "(cross-core) or both to the same core (same-core).",
        "- **churn**: sequential connections, each: connect, send 1 byte, read the echo, end, "
        "wait for the server's end and the close.",
        "- **idle memory**: the server's `VmRSS` (`/proc/<pid>/status`) once listening, and "
        "again once it holds every connection (opened by a client process, both with "
        "`RLIMIT_NOFILE` raised to the hard limit); the difference divided by the count.",
        "- **TLS bulk**: bulk over TLS with `trustme` certificates; `ssl=` for "
        "trio_netstream, `trio.SSLStream` for raw trio, `ssl=` for asyncio, `tls` for Node.js.",
        "- **servers**: trio_netstream uses Node-port style listeners (`on('data', "
        "stream.write)` echo, a counting `'data'` listener as the sink); raw trio uses "
        "`serve_tcp` handlers; Node.js runs `benchmarks/node_peer.js`.",
        "",
    ]
    if suite.notes:
        out += ["## Notes", ""] + [f"- {note}" for note in suite.notes] + [""]
    return "\n".join(out)


def _row_setup(suite: Suite, row: str) -> str:
    s = suite.sizes
    return {
        "bulk": f"{s.bulk_bytes / 2**20:,.0f} MiB one way in {s.chunk // 1024} KiB writes.",
        "pingpong-cross": f"{s.rounds:,} round trips of {s.message} bytes; server on CPU "
        f"{suite.cpus[0] if suite.cpus else '?'}, client on CPU "
        f"{suite.cpus[1] if len(suite.cpus) > 1 else '?'}.",
        "pingpong-same": f"{s.rounds:,} round trips of {s.message} bytes; server and client "
        f"both on CPU {suite.cpus[0] if suite.cpus else '?'}.",
        "churn": f"{s.churn:,} sequential connections.",
        "idle": f"{s.idle:,} concurrent idle connections.",
        "tls": f"{s.tls_bytes / 2**20:,.0f} MiB one way over TLS in {s.chunk // 1024} KiB writes.",
    }[row]


def _chart(suite: Suite, path: Path) -> bool:
    """The bar chart of ratios to raw trio; ``False`` (and a note) without matplotlib."""
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
    except ImportError:
        suite.notes.append("Chart skipped: matplotlib is not installed (pip install matplotlib).")
        _progress("note: " + suite.notes[-1])
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a plotting library's deprecations are not ours
        matplotlib.use("Agg")
        plt: Any = importlib.import_module("matplotlib.pyplot")
        peers = [peer for peer in suite.peers if peer != BASELINE]
        speed_rows = [r for r in ROWS if r in suite.results and ROWS[r].main.higher_is_better]
        has_idle = "idle" in suite.results
        fig, axes = plt.subplots(
            1,
            2 if has_idle else 1,
            figsize=(12 if has_idle else 9, 4.8),
            gridspec_kw={"width_ratios": [3, 1]} if has_idle else None,
            squeeze=False,
        )
        colours = plt.get_cmap("tab10").colors
        ax = axes[0][0]
        width = 0.8 / max(1, len(speed_rows))
        for i, row in enumerate(speed_rows):
            values = [_ratio(suite, row, peer, ROWS[row].main.key) or 0.0 for peer in peers]
            xs = [p + (i - (len(speed_rows) - 1) / 2) * width for p in range(len(peers))]
            label = ROWS[row].short
            bars = ax.bar(xs, values, width, label=label, color=colours[i % 10])
            ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(peers)))
        ax.set_xticklabels([PEERS[p] for p in peers])
        ax.set_ylabel("ratio to raw trio (higher is better)")
        ax.set_title("Throughput: ratio to raw trio (dashed line = raw trio)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0, -0.1), ncol=3, frameon=False)
        if has_idle:
            ax2 = axes[0][1]
            values = [_ratio(suite, "idle", peer, "kib_per_conn") or 0.0 for peer in peers]
            bars = ax2.bar(range(len(peers)), values, 0.6, color=colours[len(speed_rows) % 10])
            ax2.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
            ax2.axhline(1.0, color="black", linestyle="--", linewidth=1)
            ax2.set_xticks(range(len(peers)))
            ax2.set_xticklabels([PEERS[p] for p in peers], rotation=30, ha="right")
            ax2.set_ylabel("ratio to raw trio (lower is better)")
            ax2.set_title("Idle memory per connection")
        title = "trio_netstream and peers vs raw trio.SocketStream"
        if suite.quick:
            title += " (smoke run: not a measurement)"
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return True


# -- command line --------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trio_netstream._bench",
        description="Benchmark trio_netstream against raw trio, asyncio and Node.js "
        "(client and server in separate processes on 127.0.0.1).",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke mode: tiny sizes, 1 run each (a few seconds)"
    )
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated benchmarks (default: all of {','.join(BENCHMARKS)})",
    )
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help=f"comma-separated implementations (default: all of {','.join(PEERS)}); "
        "raw trio is always added, as the baseline",
    )
    parser.add_argument("--runs", type=int, help="runs per implementation (default 5, quick 1)")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path("docs"),
        help="where performance.md and performance.png go (default: ./docs)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw results as JSON here")
    parser.add_argument("--bulk-mib", type=int, help="bulk payload in MiB (default 1024)")
    parser.add_argument("--tls-mib", type=int, help="TLS bulk payload in MiB (default 256)")
    parser.add_argument("--rounds", type=int, help="ping-pong round trips (default 20000)")
    parser.add_argument("--churn", type=int, help="churn connections (default 5000)")
    parser.add_argument("--idle", type=int, help="idle connections (default 10000)")
    parser.add_argument(
        "--node-peer",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "benchmarks" / "node_peer.js",
        help="the Node.js peer script (default: benchmarks/node_peer.js)",
    )
    parser.add_argument(
        "--timeout", type=float, default=600, help="seconds allowed for one client run"
    )
    # The roles, as this module starts them in child processes.
    parser.add_argument("--role", choices=("server", "client"), help=argparse.SUPPRESS)
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    return parser


def _split(value: str, known: Sequence[str], what: str) -> list[str]:
    chosen = [item.strip() for item in value.split(",") if item.strip()]
    unknown = [item for item in chosen if item not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return [item for item in known if item in chosen]  # canonical order


def _suite(args: argparse.Namespace) -> Suite:
    base = QUICK if args.quick else FULL
    overrides: dict[str, int] = {}
    if args.runs is not None:
        overrides["runs"] = args.runs
    if args.bulk_mib is not None:
        overrides["bulk_bytes"] = args.bulk_mib << 20
    if args.tls_mib is not None:
        overrides["tls_bytes"] = args.tls_mib << 20
    for name in ("rounds", "churn", "idle"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    sizes = Sizes(**{**base.__dict__, **overrides})
    if (
        sizes.runs < 1
        or min(sizes.bulk_bytes, sizes.tls_bytes, sizes.rounds, sizes.churn, sizes.idle) < 1
    ):
        raise SystemExit("sizes and --runs must be at least 1")
    peers = _split(args.peers, list(PEERS), "peer")
    suite = Suite(
        sizes=sizes,
        benchmarks=_split(args.only, list(BENCHMARKS), "benchmark"),
        peers=peers,
        output_dir=args.output_dir,
        quick=args.quick,
        json_path=args.json,
        node_peer=args.node_peer,
        timeout=args.timeout,
        cpus=sorted(os.sched_getaffinity(0)),
    )
    if BASELINE not in peers:
        suite.peers = [peer for peer in PEERS if peer in (*peers, BASELINE)]
        suite.notes.append("raw trio was added to --peers: every ratio is to it.")
    if "node" in suite.peers:
        if shutil.which("node") is None:
            suite.peers.remove("node")
            suite.notes.append("Node.js skipped: `node` was not found on PATH.")
        elif not suite.node_peer.is_file():
            suite.peers.remove("node")
            suite.notes.append(f"Node.js skipped: {suite.node_peer} does not exist.")
    if not args.quick and sizes.runs < 3:
        suite.notes.append(f"Only {sizes.runs} run(s) per figure: medians of fewer than 3 runs.")
    return suite


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark suite (or, with the hidden ``--role``, one of its roles).

    Returns the process exit status: 0 when every selected benchmark produced
    a figure for every selected implementation, 1 otherwise.
    """
    args = _parser().parse_args(argv)
    if args.role:
        return _run_role(args.role, args.peer, json.loads(args.config))
    _raise_nofile()
    suite = _suite(args)
    for note in suite.notes:
        _progress("note: " + note)
    started = time.monotonic()
    _progress(
        f"benchmarks: {', '.join(suite.benchmarks)}; peers: "
        f"{', '.join(PEERS[p] for p in suite.peers)}; {suite.sizes.runs} run(s) each"
        + (" (quick)" if suite.quick else "")
    )
    suite.load.append(os.getloadavg()[0])
    _run_suite(suite)
    suite.load.append(os.getloadavg()[0])
    suite.output_dir.mkdir(parents=True, exist_ok=True)
    chart_path = suite.output_dir / "performance.png"
    chart = chart_path.name if suite.results and _chart(suite, chart_path) else None
    report = _markdown(suite, chart)
    (suite.output_dir / "performance.md").write_text(report, encoding="utf-8")
    if suite.json_path is not None:
        suite.json_path.parent.mkdir(parents=True, exist_ok=True)
        suite.json_path.write_text(
            json.dumps(
                {
                    "quick": suite.quick,
                    "sizes": suite.sizes.__dict__,
                    "peers": suite.peers,
                    "rows": list(suite.results),
                    "results": suite.results,
                    "failures": suite.failures,
                    "notes": suite.notes,
                    "targets": [list(t) for t in _targets(suite)],
                },
                indent=2,
            ),
            encoding="utf-8",
        )
    print(report)
    _progress(
        f"wrote {suite.output_dir / 'performance.md'}"
        + (f" and {chart_path}" if chart else "")
        + f" in {time.monotonic() - started:.0f} s"
    )
    return 1 if suite.failures else 0


if __name__ == "__main__":
    sys.exit(main())
