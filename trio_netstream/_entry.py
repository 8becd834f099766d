"""The module's entry points: ``create_connection`` (``connect``) and
``create_server``, with Node's names; ``trio_netstream`` re-exports them."""

from __future__ import annotations

import os
from typing import Any, overload

from ._server import ConnectionListener, Server
from ._stream import Stream

__all__ = ["connect", "createConnection", "createServer", "create_connection", "create_server"]


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


def create_server(connection_listener: ConnectionListener | None = None, **options: Any) -> Server:
    """A :class:`Server`; *connection_listener* is added as a ``'connection'`` listener."""
    return Server(connection_listener, **options)


createConnection = create_connection
createServer = create_server
