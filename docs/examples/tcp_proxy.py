"""A TCP proxy: two ``pipe()`` calls per connection.

For each client, the proxy connects to the target and joins the two
streams with ``client.pipe(upstream)`` and ``upstream.pipe(client)``. Bytes
flow both ways with backpressure (a side is paused while the other's write
queue is full, so memory stays bounded whatever the transfer's size), and a
half-close passes through (a side's ``'end'`` ends the other)::

    python docs/examples/tcp_proxy.py --port 8080 example.com 80

The command-line tool has the same thing with logging and a graceful
shutdown: ``python -m trio_netstream proxy 8080 example.com 80``.
"""

from __future__ import annotations

import argparse
import logging
from functools import partial
from typing import Any

import trio

import trio_netstream as net

log = logging.getLogger("tcp_proxy")


def join(client: net.Stream, upstream: net.Stream) -> None:
    """Pipe each stream into the other. A side that fails (a reset, a refused
    target) destroys the other; its error is logged, not raised."""
    client.pipe(upstream)
    upstream.pipe(client)
    follow(client, upstream)
    follow(upstream, client)


def follow(stream: net.Stream, other: net.Stream) -> None:
    """Log *stream*'s error; when it closes because of one, destroy *other*."""

    def on_error(error: BaseException) -> None:
        log.info("%r failed: %r", stream, error)

    def on_close(had_error: bool) -> None:
        if had_error:
            other.destroy()

    stream.on("error", on_error)
    stream.on("close", on_close)


async def serve(
    target_host: str,
    target_port: int,
    port: int = 0,
    host: str = "127.0.0.1",
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Relay every connection to *host*:*port* to *target_host*:*target_port*,
    until the server is closed (``await nursery.start(serve, ...)`` starts
    with the :class:`trio_netstream.Server`)."""

    async def relay(client: net.Stream) -> None:
        async with net.create_connection(target_port, target_host) as upstream:
            join(client, upstream)
        # Here the upstream stream has closed; the client closes once its
        # own output (piped from upstream) is flushed and the FIN sent.

    async with net.create_server(relay) as server:
        await server.listen(port, host)
        log.info("listening on %s", server.address())
        task_status.started(server)


def main(argv: list[str] | None = None) -> None:
    """``python tcp_proxy.py [--port 8080] TARGET_HOST TARGET_PORT``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target_host")
    parser.add_argument("target_port", type=int)
    parser.add_argument("--port", type=int, default=8080, help="TCP port (default: 8080)")
    parser.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        trio.run(partial(serve, args.target_host, args.target_port, args.port, args.host))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
