"""The raw trio roles (``trio.SocketStream`` / ``trio.SSLStream``): the
baseline every figure is given as a ratio to.

``trio.SSLStream`` takes no session to resume, but forwards the attributes
of its ``ssl.SSLObject``, reads and writes: ``stream.session = ...`` before
the first I/O (the handshake) resumes one, as ``SSLObject.session`` does."""

from __future__ import annotations

import functools
import socket
import ssl
import time
from typing import Any

import trio

from bench_spec import BACKLOG, HOST, IDLE_CONNECT_BATCH, TLS_NAME, WRK_THREADS, BenchError
from peer_common import (
    Announcer,
    check_echoed,
    check_lines,
    check_resumed,
    client_ssl,
    hold_then_exit,
    http_replies,
    latency_summary,
    lines_payload,
    result,
    say,
    server_ssl,
)


async def trio_server(cfg: dict[str, Any]) -> None:
    announce = Announcer(cfg["connections"])
    serve = _SERVES[cfg["mode"]]
    if cfg["mode"] == "lines":
        cfg = {**cfg, "payload": lines_payload(cfg["lines"])}  # made before READY: untimed

    async def handler(stream: trio.abc.Stream) -> None:
        announce()
        try:
            await serve(stream, cfg)
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


async def _sink(stream: trio.abc.Stream, cfg: dict[str, Any]) -> None:
    total: int = cfg["bytes"]
    received = 0
    while received < total:
        data = await stream.receive_some(65536)
        if not data:
            return
        received += len(data)
    await stream.send_all(b"k")
    while await stream.receive_some(65536):
        pass


async def _echo(stream: trio.abc.Stream, cfg: dict[str, Any]) -> None:
    while data := await stream.receive_some(65536):
        await stream.send_all(data)
    # Over TLS, a close_notify back (serve_tcp would close
    # the stream without one); over TCP, the same close.
    await stream.aclose()


async def _send_file(stream: trio.abc.Stream, cfg: dict[str, Any]) -> None:
    """The sendfile rows' sender: the file in ``chunk`` reads (a blocking
    read: the file is in the page cache), each sent with ``send_all``."""
    with open(cfg["file"], "rb", buffering=0) as file:  # noqa: ASYNC230 - page cache
        while chunk := file.read(cfg["chunk"]):
            await stream.send_all(chunk)
    await stream.receive_some(1)  # the receiver's answer: every byte came
    await stream.aclose()


async def _send_lines(stream: trio.abc.Stream, cfg: dict[str, Any]) -> None:
    """The readline row's common sender: every line as fast as it can, then EOF."""
    assert isinstance(stream, trio.SocketStream)
    await stream.send_all(cfg["payload"])
    await stream.send_eof()
    while await stream.receive_some(65536):
        pass


async def _http(stream: trio.abc.Stream, cfg: dict[str, Any]) -> None:
    """The http rows' server: a ``bytearray`` filled by ``receive_some``, the
    requests it completed answered in one ``send_all``, until the client's
    end or a ``Connection: close`` (``serve_tcp`` then closes the stream)."""
    buffer = bytearray()
    while data := await stream.receive_some(65536):
        buffer.extend(data)
        replies, closing = http_replies(buffer)
        if replies:
            await stream.send_all(replies)
        if closing:
            return


_SERVES = {
    "sink": _sink,
    "echo": _echo,
    "sendfile": _send_file,
    "lines": _send_lines,
    "http": _http,
}


async def trio_proxy(cfg: dict[str, Any]) -> None:
    """The proxy row's proxy: per connection, one to ``target`` and a task
    per direction (``receive_some`` / ``send_all``, then ``send_eof``)."""

    async def handler(client: trio.SocketStream) -> None:
        async with (
            client,
            await trio.open_tcp_stream(HOST, cfg["target"]) as upstream,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(_relay, client, upstream)
            nursery.start_soon(_relay, upstream, client)

    async with trio.open_nursery() as nursery:
        serve_tcp = functools.partial(trio.serve_tcp, handler, 0, host=HOST, backlog=BACKLOG)
        listeners: list[trio.SocketListener] = await nursery.start(serve_tcp)
        say(f"READY {listeners[0].socket.getsockname()[1]}")


async def _relay(source: trio.SocketStream, destination: trio.SocketStream) -> None:
    try:
        while data := await source.receive_some(65536):
            await destination.send_all(data)
        await destination.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


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
    if cfg["style"] == "destroy":
        await _churn_destroy(port, count)
        return
    start = time.perf_counter()
    for _ in range(count):
        async with await trio.open_tcp_stream(HOST, port) as sock:
            await sock.send_all(b"x")
            await sock.receive_some(1)
            await sock.send_eof()
            while await sock.receive_some(65536):
                pass
    result(cps=count / (time.perf_counter() - start))


async def _churn_destroy(port: int, count: int) -> None:
    """The counterpart of the Node-style churn client: connect, ``send_all``,
    ``receive_some``, ``aclose`` (no wait for the server's end)."""
    echoed = 0
    start = time.perf_counter()
    for _ in range(count):
        async with await trio.open_tcp_stream(HOST, port) as sock:
            await sock.send_all(b"x")
            echoed += await sock.receive_some(1) == b"x"
    elapsed = time.perf_counter() - start
    check_echoed(echoed, count)
    result(cps=count / elapsed)


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


#: The common receiver's buffer: large, so that the sender is what is measured.
_RECEIVE_BUFFER = 256 * 1024


async def _receive(port: int, cfg: dict[str, Any]) -> None:
    """The sendfile rows' common receiver: count the bytes (``recv_into`` one
    buffer), answer one byte, wait for the close; MB/s from connect to the last
    byte. A blocking socket, not trio's: the cheapest receiver there is, so
    that the sender is what is measured (this process does nothing else)."""
    total: int = cfg["bytes"]
    buffer = memoryview(bytearray(_RECEIVE_BUFFER))
    received = 0
    start = time.perf_counter()
    with socket.create_connection((HOST, port)) as sock:
        while received < total:
            size = sock.recv_into(buffer)
            if not size:
                break
            received += size
        elapsed = time.perf_counter() - start
        if received != total:
            raise BenchError(f"received {received} bytes, not {total}")
        sock.sendall(b"k")
        while sock.recv_into(buffer):
            pass
    await trio.lowlevel.checkpoint()
    result(seconds=elapsed, mbps=total / elapsed / 1e6)


class _LineReader:
    """The raw trio counterpart of a line reader: a ``bytearray`` filled by
    ``receive_some``, searched from where the last search stopped."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.scanned = 0

    async def readline(self) -> bytes:
        buffer = self.buffer
        while (end := buffer.find(b"\n", self.scanned)) < 0:
            self.scanned = len(buffer)
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError(f"the stream ended before a line ({len(buffer)} bytes came)")
            buffer += data
        line = bytes(buffer[: end + 1])
        del buffer[: end + 1]
        self.scanned = 0
        return line


async def _readline(port: int, cfg: dict[str, Any]) -> None:
    count: int = cfg["lines"]
    size = 0
    start = time.perf_counter()
    async with await trio.open_tcp_stream(HOST, port) as stream:
        reader = _LineReader(stream)
        for _ in range(count):
            size += len(await reader.readline())
        elapsed = time.perf_counter() - start
    check_lines(count, count, size)
    result(seconds=elapsed, lps=count / elapsed)


async def _run_load(argv: list[str]) -> dict[str, str]:
    """Run a load generator (wrk or ab) to its end; the ``label: value`` lines
    of its report (the first word of each value), and ``"output"``, all of it."""
    done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    output = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        errors = done.stderr.decode(errors="replace").strip()
        raise BenchError(f"{argv[0]} exited with status {done.returncode}: {errors or output}")
    fields = {"output": output}
    for line in output.splitlines():
        label, colon, value = line.partition(":")
        if colon and value.split() and label.strip() not in fields:
            fields[label.strip()] = value.split()[0]
    return fields


async def _wrk(port: int, cfg: dict[str, Any]) -> None:
    """The http-wrk row's load: ``wrk`` for ``seconds`` over ``connections``
    keep-alive connections; a socket error or a reply not 2xx fails the run."""
    seconds: int = cfg["seconds"]
    argv = ["wrk", f"-t{WRK_THREADS}", f"-c{cfg['connections']}", f"-d{seconds}s"]
    fields = await _run_load([*argv, f"http://{HOST}:{port}/"])
    for failure in ("Socket errors", "Non-2xx or 3xx responses"):
        if failure in fields:
            raise BenchError(f"wrk: {failure}: {fields['output']}")
    if "Requests/sec" not in fields:
        raise BenchError(f"wrk said no Requests/sec: {fields['output']}")
    result(rps=float(fields["Requests/sec"]), seconds=seconds)


async def _ab(port: int, cfg: dict[str, Any]) -> None:
    """The http-ab row's load: ``ab -k`` (HTTP/1.0 and ``Connection:
    Keep-Alive``) for ``requests`` over ``connections`` connections; every
    request must succeed with a 2xx reply, on a kept-alive connection."""
    count: int = cfg["requests"]
    argv = ["ab", "-k", "-q", "-c", str(cfg["connections"]), "-n", str(count)]
    fields = await _run_load([*argv, f"http://{HOST}:{port}/"])
    expected = {"Complete requests": count, "Failed requests": 0, "Keep-Alive requests": count}
    for label, value in expected.items():
        if fields.get(label) != str(value):
            raise BenchError(f"ab: {label}: {fields.get(label)}, not {value}: {fields['output']}")
    for failure in ("Non-2xx responses", "Write errors"):
        if failure in fields:
            raise BenchError(f"ab: {failure}: {fields['output']}")
    seconds = float(fields["Time taken for tests"])
    result(rps=float(fields["Requests per second"]), seconds=seconds)


_KINDS = {
    "bulk": _bulk,
    "receive": _receive,
    "readline": _readline,
    "pingpong": _pingpong,
    "churn": _churn,
    "idle": _idle,
    "handshake": _handshake,
    "wrk": _wrk,
    "ab": _ab,
}
