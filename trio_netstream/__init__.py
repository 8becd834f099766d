"""Node.js ``net`` streams (events, half-close, backpressure) on Trio's structured concurrency."""

from ._entry import connect as connect
from ._entry import create_connection as create_connection
from ._entry import create_server as create_server
from ._entry import createConnection as createConnection
from ._entry import createServer as createServer
from ._errors import StreamStateError as StreamStateError
from ._server import Server as Server
from ._stream import Stream as Stream

#: Node's ``net.Socket``: the same class as :class:`Stream`.
Socket = Stream

__all__ = [
    "Server",
    "Socket",
    "Stream",
    "StreamStateError",
    "connect",
    "createConnection",
    "createServer",
    "create_connection",
    "create_server",
]

__version__ = "0.1.0"
