"""``echo``: the echo server of Node's original ``net`` docs, printing a
line per connection event."""

from __future__ import annotations

import itertools
import os
import ssl
from collections.abc import Callable

import trio

from .. import Stream, create_server
from .._errors import node_code
from ._output import format_address, host_port, listen_errors, say


def _chunk_text(chunk: bytes) -> str:
    if len(chunk) <= 64:
        return repr(chunk)
    return f"{chunk[:64]!r}... ({len(chunk)} bytes)"


def _error_text(exc: BaseException) -> str:
    code = getattr(exc, "code", None) or node_code(exc)
    return f"{type(exc).__name__}: {exc}" + (f" ({code})" if code else "")


async def echo_server(
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    path: str | None = None,
    context: ssl.SSLContext | None = None,
    reuse_port: bool = False,
    out: Callable[[str], object] = say,
) -> int:
    """Serve the echo protocol of Node's original docs until cancelled, printing every event.

    Each connection gets ``hello\\r\\n``, its data echoed (with backpressure:
    reading pauses until a slow reader has taken the echo), and
    ``goodbye\\r\\n`` before the server ends it after the client's end.
    """
    pid = os.getpid()
    numbers = itertools.count(1)

    def on_connection(stream: Stream) -> None:
        number = next(numbers)

        def log(text: str) -> None:
            out(f"[pid {pid}] #{number} {text}")

        _echo(stream, log)

    async with create_server(on_connection, ssl=context) as server:
        if path is not None:
            with listen_errors(path):
                await server.listen(path)
        else:
            with listen_errors(host_port(host, port)):
                await server.listen(port, host, reuse_port=reuse_port)
        out(f"listening on {format_address(server.address())} (pid {pid})")
        await trio.sleep_forever()
    raise AssertionError("unreachable")  # pragma: no cover - sleep_forever() never returns


def _echo(stream: Stream, log: Callable[[str], None]) -> None:
    """The echo protocol of Node's original docs on one connection, logging its events."""
    if stream.remote_port is not None:
        peer = host_port(str(stream.remote_address), stream.remote_port)
    else:
        peer = "unix socket"
    log(f"connection from {peer}")

    def on_connect() -> None:
        log("connect")
        stream.write("hello\r\n")

    def on_data(chunk: bytes) -> None:
        log(f"data {_chunk_text(chunk)}")
        if not stream.write(chunk):
            stream.pause()
            stream.once("drain", stream.resume)

    def on_end() -> None:
        log("end")
        stream.write("goodbye\r\n")
        stream.end()

    stream.on("connect", on_connect)
    stream.on("secure", lambda: log("secure"))
    stream.on("data", on_data)
    stream.on("end", on_end)
    stream.on("error", lambda exc: log(f"error {_error_text(exc)}"))
    stream.on("close", lambda had_error: log(f"close({had_error})"))
