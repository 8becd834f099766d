"""``proxy``: a TCP proxy made of two pipes per connection.

For each connection accepted on the listening port, the proxy connects to
the target and joins the two streams with ``client.pipe(upstream)`` and
``upstream.pipe(client)``: bytes flow both ways with backpressure (a side
is paused while the other's write queue is full), and a half-close passes
through (a side's ``'end'`` ends the other). A side that closes without
its peer's ``'end'`` (an error, a reset, a refused target, a shutdown)
destroys the other side; one that closes normally ends it.

It prints ``listening on HOST:PORT (pid N)``, then per connection ``[pid N]
#K connection from HOST:PORT``, ``upstream connected to HOST:PORT``,
``client error ...`` / ``upstream error ...``, and ``close``. SIGTERM
shuts it down gracefully within *grace* ms, as ``echo``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable

import trio

from .. import Stream, create_connection, create_server
from ._echo import DEFAULT_GRACE, error_text, peer_text, shut_down
from ._output import EXIT_OK, format_address, host_port, listen_errors, say


async def proxy_server(
    *,
    port: int,
    target_host: str,
    target_port: int,
    host: str = "127.0.0.1",
    stop: trio.Event | None = None,
    grace: float = DEFAULT_GRACE,
    out: Callable[[str], object] = say,
) -> int:
    """Listen on *host*:*port* and relay every connection to
    *target_host*:*target_port* until cancelled (or, gracefully, until
    *stop* is set: then ``await server.shutdown(grace)`` and return 0)."""
    pid = os.getpid()
    numbers = itertools.count(1)
    target = host_port(target_host, target_port)

    async def on_connection(client: Stream) -> None:
        number = next(numbers)

        def log(text: str) -> None:
            out(f"[pid {pid}] #{number} {text}")

        log(f"connection from {peer_text(client)}")
        upstream = create_connection(target_port, target_host)
        upstream.on("connect", lambda: log(f"upstream connected to {target}"))
        join(client, upstream, log)
        try:
            async with upstream:
                await client.wait_closed()
        finally:
            # Also when a shutdown cancels this listener once the client
            # has closed, with the upstream's close still under way.
            log("close")

    async with create_server(on_connection) as server:
        with listen_errors(host_port(host, port)):
            await server.listen(port, host)
        out(f"listening on {format_address(server.address())} (pid {pid})")
        if stop is None:
            await trio.sleep_forever()
        await stop.wait()
        await shut_down(server, grace, lambda text: out(f"[pid {pid}] {text}"))
    return EXIT_OK


def join(client: Stream, upstream: Stream, log: Callable[[str], object]) -> None:
    """Pipe *client* and *upstream* into each other; when one closes, end
    the other (destroy it, if the one closed without its peer's ``'end'``).
    Errors are logged, never raised."""
    client.pipe(upstream)
    upstream.pipe(client)
    _follow("client", client, upstream, log)
    _follow("upstream", upstream, client, log)


def _follow(side: str, stream: Stream, other: Stream, log: Callable[[str], object]) -> None:
    """Log *stream*'s error; at its ``'close'``, end *other*, or destroy it
    if *stream* closed without its peer's ``'end'``."""
    ended = False

    def on_end() -> None:
        nonlocal ended
        ended = True

    def on_error(exc: BaseException) -> None:
        log(f"{side} error {error_text(exc)}")

    def on_close(had_error: bool) -> None:
        if had_error or not ended:
            other.destroy()
        else:
            other.end()

    stream.on("end", on_end)
    stream.on("error", on_error)
    stream.on("close", on_close)
