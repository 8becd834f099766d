"""The Server: Node's ``net.Server`` on Trio.

How this works: the server's ``async with`` owns a nursery (a
:class:`~trio_netstream._block.Block`). :meth:`Server.listen` binds a socket
and starts the **accept loop** in it, which emits ``'listening'`` and then
accepts. Every accepted connection gets its own task, which opens a small
nursery for the connection's async ``'connection'`` listeners, emits
``'connection'`` (plain listeners are called, async ones started), then runs
the stream's lifecycle (``'connect'`` ... ``'close'``) and waits for those
listeners. :meth:`Server.close` stops the accept loop at once and starts the
**closer**, which emits the server's ``'close'`` once every connection task
has finished.

A listener's exception ends the server's block (it is re-raised from it); a
network failure on one connection is that connection's ``'error'`` and, if
nobody listens for it, is logged: one bad peer cannot bring a server down.
"""

from __future__ import annotations

import ipaddress
import math
import os
import socket as _stdlib_socket
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast, overload

import attrs
import trio

from ._accepting import Accepting, ConnectionListener, ServerOwner
from ._args import listen_arguments
from ._block import Block
from ._dial import bind_listener, listener_address
from ._errors import StreamStateError, TransportError, transport_errors
from ._options import check_number, check_port, is_path, server_options
from ._proxy import trusted_networks
from ._stream import Stream

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self


__all__ = ["ConnectionListener", "Server"]

ListeningListener = Callable[[], object]


@attrs.frozen
class _Listen:
    """Checked arguments of ``listen()`` (*port* is unused with ``sock``)."""

    port: int | str | os.PathLike[str]
    host: str | None
    backlog: int
    reuse_port: bool
    ipv6_only: bool


def _check_listen_arguments(
    port: object, host: object, keywords: dict[str, object], sock: object
) -> _Listen:
    backlog, reuse_port, ipv6_only = (keywords[k] for k in ("backlog", "reuse_port", "ipv6_only"))
    if isinstance(backlog, bool) or not isinstance(backlog, int):
        raise TypeError(f"backlog must be an int, not {type(backlog).__name__}")
    for name, flag in (("reuse_port", reuse_port), ("ipv6_only", ipv6_only)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, not {type(flag).__name__}")
    flags = (cast(bool, reuse_port), cast(bool, ipv6_only))
    if sock is not None:
        if not isinstance(sock, _stdlib_socket.socket):
            raise TypeError(f"sock must be a socket.socket, not {type(sock).__name__}")
        if sock.type != _stdlib_socket.SOCK_STREAM:
            raise ValueError("sock must be a SOCK_STREAM socket")
        return _Listen(0, None, backlog, *flags)
    if is_path(port):
        return _Listen(cast("str | os.PathLike[str]", port), None, backlog, *flags)
    checked = check_port(port, allow_zero=True)
    if host is not None and not isinstance(host, str):
        raise TypeError(f"host must be a str or None, not {type(host).__name__}")
    return _Listen(checked, host, backlog, *flags)


class Server(Accepting):
    """A TCP or UNIX-socket server; run it with ``async with``.

    Args:
        connection_listener: added as a ``'connection'`` listener.
        max_connections: close new connections at once while this many are
            open (default: no limit); each is a ``'drop'``.
        proxy_protocol: every connection starts with a PROXY protocol header
            (v1 or v2) from a load balancer, read before ``'connection'``.
        proxy_trusted: the networks a header is taken from (default: any);
            a connection from elsewhere is a ``'clientError'``.
        **options: stream options applied to every accepted stream
            (``allow_half_open``, ``no_delay``, ``keep_alive``,
            ``keep_alive_initial_delay``, ``high_water_mark``, ``timeout``,
            and the TLS options with ``ssl``).
    """

    __slots__ = ()

    def __init__(
        self,
        connection_listener: ConnectionListener | None = None,
        *,
        max_connections: int | None = None,
        proxy_protocol: bool = False,
        proxy_trusted: Iterable[str | ipaddress.IPv4Network | ipaddress.IPv6Network] | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        self._options = server_options(options, max_connections, proxy_protocol)
        self._proxy_trusted = trusted_networks(proxy_trusted)
        if self._proxy_trusted is not None and not proxy_protocol:
            raise ValueError(
                "proxy_trusted names who may send PROXY headers: it needs proxy_protocol=True"
            )
        if connection_listener is not None:
            self.on("connection", connection_listener)
        self._block = Block()
        self._owner = ServerOwner(self._listener_failed, self._connection_done, self)
        self._socket: trio.socket.SocketType | None = None
        self._address: tuple[str, int] | str | None = None
        self._unlink_path: str | None = None
        self._accept_scope: trio.CancelScope | None = None
        self._connections: dict[Stream, None] = {}  # in accept order
        self._handler_scopes: set[trio.CancelScope] = set()
        self._header_scopes: set[trio.CancelScope] = set()  # PROXY headers being read
        self._shutdown_scope: trio.CancelScope | None = None
        self._shutdown_destroyed = 0
        self._live_tasks = 0
        self._tasks_done = trio.lowlevel.ParkingLot()
        self._listening = False
        self._closing = False
        self._closed = trio.Event()

    # -- structured lifecycle --------------------------------------------

    async def __aenter__(self) -> Self:
        await self._block.enter("server")
        self._closing = False
        self._closed = trio.Event()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return await self._block.exit(exc, self.wait_closed, self._shut_down)

    def _shut_down(self) -> None:
        self.close()
        for stream in list(self._connections):
            stream.destroy()
        for scope in self._handler_scopes:
            scope.cancel()  # async connection listeners end with the block

    async def wait_closed(self) -> None:
        """Wait until :meth:`close` was called and the server emitted ``'close'``."""
        await self._closed.wait()

    # -- listening ---------------------------------------------------------

    @overload
    async def listen(
        self,
        port: int | str = 0,
        host: str | None = None,
        listener: ListeningListener | None = None,
        *,
        backlog: int = 511,
        reuse_port: bool = False,
        ipv6_only: bool = False,
    ) -> None: ...
    @overload
    async def listen(
        self,
        port: int | str | os.PathLike[str] | Mapping[str, Any] | ListeningListener,
        listener: ListeningListener = ...,
        /,
        *,
        backlog: int = 511,
        reuse_port: bool = False,
        ipv6_only: bool = False,
    ) -> None: ...
    @overload
    async def listen(self, *, sock: _stdlib_socket.socket, backlog: int = 511) -> None: ...
    async def listen(
        self,
        port: int | str | os.PathLike[str] | Mapping[str, Any] | ListeningListener = 0,
        host: str | ListeningListener | None = None,
        listener: ListeningListener | None = None,
        *,
        backlog: int = 511,
        reuse_port: bool = False,
        ipv6_only: bool = False,
        sock: _stdlib_socket.socket | None = None,
    ) -> None:
        """Bind and start accepting; returns once listening (``'listening'``
        has been emitted by then).

        ``listen(port, host)`` listens on TCP (``port=0`` picks a free port;
        ``host=None`` means every address, IPv6 and IPv4 where possible);
        ``listen(path)`` on a UNIX socket (the file is removed again at
        :meth:`close`); ``listen(sock=...)`` adopts a bound stdlib socket,
        listening or not. A string of digits (``"8124"``) is a TCP port,
        any other string a path. Node's forms work too: a *listener* last
        (``listen(port, listener)``, ``listen(port, host, listener)``) is
        added as a ``once('listening')`` listener (removed again if the
        call fails), and ``listen({"port": ..., "host": ..., "backlog": ...})``
        (or ``"path"``; ``reusePort``, ``ipv6Only``) takes the arguments as a
        dict. ``ipv6_only=True`` keeps IPv4 out of ``"::"`` (and of
        ``host=None``). A failure
        to bind is raised here, as an ``OSError`` with its ``errno`` and Node
        ``code`` (``EADDRINUSE``) and a message naming the address.

        Raises:
            TypeError, ValueError: bad arguments.
            StreamStateError: outside the server's ``async with``, or
                already listening.
            OSError: binding or listening failed.
        """
        keywords = {"backlog": backlog, "reuse_port": reuse_port, "ipv6_only": ipv6_only}
        address, given = listen_arguments(port, host, listener, keywords)
        where = _check_listen_arguments(address.port, address.host, given, sock)
        nursery = self._block.nursery
        if nursery is None:
            raise StreamStateError("listen() needs the server's async with block to be running")
        if self._closing:
            raise StreamStateError("listen() is not allowed: the server is closing")
        if self._listening:
            raise StreamStateError("listen() is not allowed: the server is already listening")
        if address.listener is not None:
            self.once("listening", address.listener)
        try:
            await self._bind(nursery, where, sock)
        except BaseException:
            if address.listener is not None:
                self.off("listening", address.listener)  # the call failed: no 'listening'
            raise

    async def _bind(
        self, nursery: trio.Nursery, where: _Listen, sock: _stdlib_socket.socket | None
    ) -> None:
        self._listening = True
        if self._closed.is_set():
            self._closed = trio.Event()  # listening again after an earlier close()
        try:
            with transport_errors():
                plain = await bind_listener(
                    where.port, where.host, where.backlog, where.reuse_port, sock, where.ipv6_only
                )
            if sock is None and is_path(where.port):
                self._unlink_path = os.fspath(cast("str | os.PathLike[str]", where.port))
        except TransportError as failure:
            self._listening = False
            error = failure.error
            raise error from error.__cause__  # not the internal TransportError
        except BaseException:
            self._listening = False
            raise
        self._socket = trio.socket.from_stdlib_socket(plain)
        self._address = listener_address(plain)
        # Sockets accepted from a listener made here have the kernel's
        # default options; an adopted listener's may pass on others.
        await nursery.start(self._accept_loop, plain, sock is None)

    # -- closing -------------------------------------------------------------

    def close(self) -> None:
        """Stop accepting; ``'close'`` follows once every connection has closed.

        Open connections live on. Idempotent.
        """
        if self._closing or (self._closed.is_set() and not self._listening):
            return
        self._closing = True
        if self._accept_scope is not None:
            self._accept_scope.cancel()
        for scope in self._header_scopes:
            scope.cancel()
        if self._socket is not None:
            self._socket.close()
        nursery = self._block.nursery
        if nursery is not None:
            nursery.start_soon(self._finish_close)

    async def shutdown(self, grace: float | None = None) -> int:
        """Stop accepting (as :meth:`close`), wait until every connection has
        closed by itself or *grace* milliseconds have passed (``None``: no
        limit), then destroy the rest. Returns once ``'close'`` was emitted
        (once, after the last connection), with how many were destroyed.

        Calling it again, or after :meth:`close`, is allowed: a shorter
        *grace* brings the deadline of a shutdown in progress forward.

        Raises:
            TypeError, ValueError: *grace* is not a number >= 0.
            StreamStateError: outside the server's ``async with``.
        """
        limit = math.inf if grace is None else check_number("grace", grace) / 1000
        if self._block.nursery is None:
            raise StreamStateError("shutdown() needs the server's async with block to be running")
        deadline = trio.current_time() + limit
        scope = self._shutdown_scope
        if scope is not None:  # a shutdown is in progress: it ends by this deadline too
            scope.deadline = min(scope.deadline, deadline)
            await self.wait_closed()
            return self._shutdown_destroyed
        self._shutdown_destroyed = 0
        scope = self._shutdown_scope = trio.CancelScope(deadline=deadline)
        try:
            self.close()
            with scope:
                while self._connections:
                    await self._tasks_done.park()
            for stream in list(self._connections):
                stream.destroy()
                self._shutdown_destroyed += 1
            for handler in self._handler_scopes:
                handler.cancel()  # async 'connection' listeners end with their streams
            await self.wait_closed()
        finally:
            self._shutdown_scope = None
        return self._shutdown_destroyed

    async def _finish_close(self) -> None:
        # Shielded: under cancellation the connections are being destroyed
        # and finish promptly; the server's 'close' still comes last.
        with trio.CancelScope(shield=True):
            while self._live_tasks:
                await self._tasks_done.park()
        if self._unlink_path is not None:
            try:
                os.unlink(self._unlink_path)
            except OSError:
                pass
            self._unlink_path = None
        self._socket = None
        self._address = None
        self._accept_scope = None
        self._listening = False
        try:
            await self._emit("close")
        finally:
            self._closing = False  # as Node: a closed server may listen() again
            self._closed.set()

    # -- properties -----------------------------------------------------------

    def address(self) -> tuple[str, int] | str | None:
        """The bound address: ``(host, port)``, or the UNIX path; ``None`` if not listening."""
        return self._address

    @property
    def listening(self) -> bool:
        """Whether the server is accepting connections (Node's ``server.listening``)."""
        return self._listening and not self._closing

    @property
    def connections(self) -> int:
        """How many accepted connections are open (``len(server.streams)``)."""
        return len(self._connections)

    @property
    def streams(self) -> tuple[Stream, ...]:
        """The open accepted streams, in accept order (a snapshot)."""
        return tuple(self._connections)

    @property
    def max_connections(self) -> int | None:
        """Open connections at which new ones are closed at once (``None``: no limit).

        Settable, as Node's ``server.maxConnections``; applies to the next accept.
        """
        return self._options.max_connections

    @max_connections.setter
    def max_connections(self, value: int | None) -> None:
        self._options = attrs.evolve(self._options, max_connections=value)

    def __repr__(self) -> str:
        return f"<trio_netstream.Server address={self._address!r} connections={self.connections}>"

    # Node names
    maxConnections = max_connections
