"""Node.js ``net`` streams (events, half-close, backpressure) on Trio's structured concurrency."""

from __future__ import annotations

import os
from typing import Any, overload

from ._errors import StreamStateError as StreamStateError
from ._server import Server as Server
from ._stream import Stream as Stream

__all__ = [
    "Server",
    "Stream",
    "StreamStateError",
    "connect",
    "createConnection",
    "createServer",
    "create_connection",
    "create_server",
]

__version__ = "0.1.0"


@overload
def create_connection(port: int, host: str = "127.0.0.1", **options: Any) -> Stream: ...
@overload
def create_connection(port: str | os.PathLike[str], **options: Any) -> Stream: ...
def create_connection(
    port: int | str | os.PathLike[str], host: str = "127.0.0.1", **options: Any
) -> Stream:
    """A stream that connects to *port* on *host* (TCP), or to a UNIX socket
    path, when its ``async with`` block starts.

    Options are those of :class:`Stream`. Listeners and sync calls
    (``write``, ``set_encoding``...) may be set up before the block.
    """
    stream = Stream(**options)
    if isinstance(port, (str, os.PathLike)):
        return stream.connect(port)
    return stream.connect(port, host)


connect = create_connection


def create_server(connection_listener: Any = None, **options: Any) -> Server:
    """A :class:`Server`; *connection_listener* is added as a ``'connection'`` listener."""
    return Server(connection_listener, **options)


createConnection = create_connection
createServer = create_server
