"""The module's entry points: ``create_connection`` (``connect``) and
``create_server``, with Node's names; ``trio_netstream`` re-exports them."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, cast, overload

from ._args import DEFAULT_HOST, merge_options, split_options
from ._options import STREAM_OPTION_NAMES, check_option_names
from ._server import ConnectionListener, Server
from ._stream import Stream

__all__ = ["connect", "createConnection", "createServer", "create_connection", "create_server"]

ConnectListener = Callable[[], object]


@overload
def create_connection(
    port: int | str,
    host: str = ...,
    listener: ConnectListener | None = ...,
    **options: Any,
) -> Stream: ...
@overload
def create_connection(
    port: int | str | os.PathLike[str] | Mapping[str, Any],
    host: ConnectListener = ...,  # Node's (port, listener): the listener in the host's place
    **options: Any,
) -> Stream: ...
def create_connection(
    port: int | str | os.PathLike[str] | Mapping[str, Any],
    host: str | ConnectListener = DEFAULT_HOST,
    listener: ConnectListener | None = None,
    **options: Any,
) -> Stream:
    """A stream that connects to *port* on *host* (TCP), or to a UNIX socket
    path, when its ``async with`` block starts.

    Node's forms work: ``(port[, host][, listener])``, ``(path[, listener])``
    and ``(options[, listener])``. A string of digits (``"8124"``) is a TCP
    port, any other string a path. *listener* is added as a ``once('connect')``
    listener. *options* is a dict with ``port`` and ``host``, or ``path``, and
    stream options by their Node names (``allowHalfOpen``, ``noDelay``...) or
    Python names.

    Options are those of :class:`Stream`. Listeners and sync calls
    (``write``, ``set_encoding``...) may be set up before the block.

    Raises:
        TypeError, ValueError: a bad address, listener or option.
    """
    if isinstance(port, Mapping):
        where, given = split_options(cast("Mapping[object, object]", port))
        check_option_names(given, STREAM_OPTION_NAMES, "stream")
        stream = Stream(**merge_options(given, options))
        port = where
    else:
        stream = Stream(**options)
    # connect() checks the address; its overloads are for users, this passes
    # on whichever form create_connection() was given.
    dial: Callable[..., Stream] = stream.connect
    return dial(port, host, listener)


connect = create_connection


def create_server(connection_listener: ConnectionListener | None = None, **options: Any) -> Server:
    """A :class:`Server`; *connection_listener* is added as a ``'connection'`` listener."""
    return Server(connection_listener, **options)


createConnection = create_connection
createServer = create_server
