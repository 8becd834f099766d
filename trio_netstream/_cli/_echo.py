"""``echo``: the echo server of Node's original ``net`` docs, printing a
line per connection event.

With ``--alpn``, the ``secure`` line names the protocol ALPN agreed on:
``secure (ALPN h2)``, or ``secure (ALPN none)``; without it, the line is
just ``secure``.
"""

from __future__ import annotations

import itertools
import os
import ssl
from collections.abc import Callable, Sequence

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
    alpn: Sequence[str] | None = None,
    out: Callable[[str], object] = say,
) -> int:
    """Serve the echo protocol of Node's original docs until cancelled, printing every event.

    Each connection gets ``hello\\r\\n``, its data echoed (with backpressure:
    reading pauses until a slow reader has taken the echo), and
    ``goodbye\\r\\n`` before the server ends it after the client's end.
    *alpn* (with a *context*): the ALPN protocols the server accepts, most
    preferred first.
    """
    pid = os.getpid()
    numbers = itertools.count(1)

    def on_connection(stream: Stream) -> None:
        number = next(numbers)

        def log(text: str) -> None:
            out(f"[pid {pid}] #{number} {text}")

        _echo(stream, log, alpn=alpn is not None)

    protocols = None if alpn is None else list(alpn)
    async with create_server(on_connection, ssl=context, alpn_protocols=protocols) as server:
        if path is not None:
            with listen_errors(path):
                await server.listen(path)
        else:
            with listen_errors(host_port(host, port)):
                await server.listen(port, host, reuse_port=reuse_port)
        out(f"listening on {format_address(server.address())} (pid {pid})")
        await trio.sleep_forever()
    raise AssertionError("unreachable")  # pragma: no cover - sleep_forever() never returns


def _echo(stream: Stream, log: Callable[[str], None], *, alpn: bool = False) -> None:
    """The echo protocol of Node's original docs on one connection, logging
    its events (with *alpn*, ``secure`` names the protocol agreed)."""
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

    def on_secure() -> None:
        log(f"secure (ALPN {stream.alpn_protocol or 'none'})" if alpn else "secure")

    stream.on("connect", on_connect)
    stream.on("secure", on_secure)
    stream.on("data", on_data)
    stream.on("end", on_end)
    stream.on("error", lambda exc: log(f"error {_error_text(exc)}"))
    stream.on("close", lambda had_error: log(f"close({had_error})"))
