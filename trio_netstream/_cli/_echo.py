"""``echo``: the echo server of Node's original ``net`` docs, printing a
line per connection event.

With ``--alpn``, the ``secure`` line names the protocol ALPN agreed on:
``secure (ALPN h2)``, or ``secure (ALPN none)``; without it, the line is
just ``secure``.

With ``--proxy-protocol`` (a server behind a load balancer), the
``connection`` line names the client of the PROXY header and the balancer it
came through: ``connection from 1.2.3.4:1111 (via 127.0.0.1:40000)``; a
connection refused for its header (or its source, ``--proxy-trusted``) is
one ``client error from 127.0.0.1:40000: PROXY protocol: ...
(ERR_PROXY_PROTOCOL)`` line.

When *stop* is set (SIGTERM), the server shuts down gracefully: it stops
accepting, lets the open connections finish for up to *grace* ms, then
destroys the rest (``shutting down (grace 5000 ms)``, then ``shut down: 1
connection destroyed``).
"""

from __future__ import annotations

import itertools
import os
import ssl
from collections.abc import Callable, Sequence
from typing import Any

import trio

from .. import Server, Stream, create_server
from .._errors import node_code
from ._output import EXIT_OK, format_address, host_port, listen_errors, say

#: ``--grace``: how long a SIGTERM lets open connections finish, in ms.
DEFAULT_GRACE = 5000.0


def _chunk_text(chunk: bytes) -> str:
    if len(chunk) <= 64:
        return repr(chunk)
    return f"{chunk[:64]!r}... ({len(chunk)} bytes)"


def error_text(exc: BaseException) -> str:
    code = getattr(exc, "code", None) or node_code(exc)
    return f"{type(exc).__name__}: {exc}" + (f" ({code})" if code else "")


def _client_error_text(exc: BaseException, info: dict[str, Any]) -> str:
    """A ``'clientError'`` (a PROXY header refused) as one line:
    ``client error from 127.0.0.1:40000: PROXY protocol: ... (ERR_PROXY_PROTOCOL)``."""
    address, port = info.get("remote_address"), info.get("remote_port")
    peer = "unix socket" if address is None or port is None else host_port(str(address), port)
    code = getattr(exc, "code", None) or node_code(exc)
    # An OSError's own text, without str()'s "[Errno 13] " in front.
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"client error from {peer}: {reason}" + (f" ({code})" if code else "")


async def echo_server(
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    path: str | None = None,
    context: ssl.SSLContext | None = None,
    reuse_port: bool = False,
    alpn: Sequence[str] | None = None,
    proxy_protocol: bool = False,
    proxy_trusted: Sequence[str] | None = None,
    stop: trio.Event | None = None,
    grace: float = DEFAULT_GRACE,
    out: Callable[[str], object] = say,
) -> int:
    """Serve the echo protocol of Node's original docs until cancelled (or,
    gracefully, until *stop* is set), printing every event.

    Each connection gets ``hello\\r\\n``, its data echoed (with backpressure:
    reading pauses until a slow reader has taken the echo), and
    ``goodbye\\r\\n`` before the server ends it after the client's end.
    *alpn* (with a *context*): the ALPN protocols the server accepts, most
    preferred first. *proxy_protocol* and *proxy_trusted*: every connection
    starts with a PROXY header (from a balancer in *proxy_trusted*, if
    given). Once *stop* is set, ``await server.shutdown(grace)`` and return 0.
    """
    pid = os.getpid()
    numbers = itertools.count(1)

    def on_connection(stream: Stream) -> None:
        number = next(numbers)

        def log(text: str) -> None:
            out(f"[pid {pid}] #{number} {text}")

        _echo(stream, log, alpn=alpn is not None)

    server = create_server(
        on_connection,
        ssl=context,
        alpn_protocols=None if alpn is None else list(alpn),
        proxy_protocol=proxy_protocol,
        proxy_trusted=None if proxy_trusted is None else list(proxy_trusted),
    )
    server.on("clientError", lambda exc, info: out(f"[pid {pid}] {_client_error_text(exc, info)}"))
    async with server:
        if path is not None:
            with listen_errors(path):
                await server.listen(path)
        else:
            with listen_errors(host_port(host, port)):
                await server.listen(port, host, reuse_port=reuse_port)
        out(f"listening on {format_address(server.address())} (pid {pid})")
        if stop is None:
            await trio.sleep_forever()
        await stop.wait()
        await shut_down(server, grace, lambda text: out(f"[pid {pid}] {text}"))
    return EXIT_OK


async def shut_down(server: Server, grace: float, log: Callable[[str], object]) -> None:
    """The graceful end: stop accepting, let the connections finish within
    *grace* ms, destroy the rest; say so before and after."""
    server.close()  # first: once the line is out, no connection is accepted
    log(f"shutting down (grace {grace:g} ms)")
    destroyed = await server.shutdown(grace)
    log(f"shut down: {destroyed} connection{'' if destroyed == 1 else 's'} destroyed")


def peer_text(stream: Stream) -> str:
    """Who connected: ``1.2.3.4:1111``, ``unix socket``; behind a PROXY
    header also the balancer, ``1.2.3.4:1111 (via 127.0.0.1:40000)``."""
    if stream.remote_port is not None:
        peer = host_port(str(stream.remote_address), stream.remote_port)
    else:
        peer = "unix socket"
    proxy = stream.proxy
    if proxy is None:
        return peer
    if proxy.source is None:  # LOCAL (a health check), UNKNOWN, UNSPEC: the real peer
        return f"{peer} (PROXY {proxy.command}, no client address)"
    balancer = "unix socket" if proxy.peer is None else host_port(*proxy.peer)
    return f"{peer} (via {balancer})"


def _echo(stream: Stream, log: Callable[[str], None], *, alpn: bool = False) -> None:
    """The echo protocol of Node's original docs on one connection, logging
    its events (with *alpn*, ``secure`` names the protocol agreed)."""
    log(f"connection from {peer_text(stream)}")

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
    stream.on("error", lambda exc: log(f"error {error_text(exc)}"))
    stream.on("close", lambda had_error: log(f"close({had_error})"))
